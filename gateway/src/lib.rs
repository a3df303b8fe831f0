//! The passerelle gateway.
//!
//! - [`cli`]: the command line of contract §5;
//! - [`commands`]: one module per command (`validate`, `mapping`, `rules`).
//!
//! The synchronous flow (`serve`), the backfill and the operators' commands come in later issues.

pub mod cli;
pub mod commands;
