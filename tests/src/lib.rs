//! Test support for passerelle: generators of realistic inputs (with the truth of what each
//! generated record should become) and of hostile ones, and, with the synchronous flow, the
//! simulators of the external systems.

pub mod generate;
pub mod hostile;
