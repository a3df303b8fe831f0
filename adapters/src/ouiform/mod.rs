//! Adapter stub, being written.
pub mod mapping;
