//! The passerelle gateway.
//!
//! - [`cli`]: the command line of contract §5;
//! - [`commands`]: one module per command (`validate`, `mapping`, `rules`);
//! - [`ledger`]: the durable memory of desired and delivered states (SQLite, PostgreSQL);
//! - [`queue`]: the "reconcile this dossier" tasks (embedded, RabbitMQ).

pub mod cli;
pub mod clients;
pub mod commands;
pub mod ledger;
pub mod queue;
pub mod settings;
