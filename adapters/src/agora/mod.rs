//! Adapter stub, being written.
pub mod mapping;
pub mod model;
