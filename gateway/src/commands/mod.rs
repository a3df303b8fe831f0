//! One module per command.

pub mod backfill;
pub mod dead_letters;
pub mod mapping;
pub mod rules;
pub mod serve;
pub mod validate;
