//! The passerelle gateway.
//!
//! - [`cli`]: the command line of contract §5; [`commands`]: one module per command;
//! - [`settings`]: layered configuration (contract §6); [`telemetry`]: JSON logs;
//! - [`startup`]: builds and runs the application (HTTP API, workers, sweeper);
//! - [`routes`]: the HTTP API of contract §1;
//! - [`ledger`]: desired and delivered states (SQLite, PostgreSQL);
//! - [`queue`]: "reconcile this dossier" tasks (embedded, RabbitMQ);
//! - [`worker`]: the reconcile worker; [`clients`]: outbound HTTP to AGORA and ATEXO SEM;
//! - [`metrics`]: Prometheus metrics.

pub mod cli;
pub mod clients;
pub mod commands;
pub mod ledger;
pub mod metrics;
pub mod queue;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod worker;
