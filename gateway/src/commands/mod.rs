//! One module per command.

pub mod mapping;
pub mod rules;
pub mod serve;
pub mod validate;
