//! The passerelle gateway.
//!
//! - [`cli`]: the command line of contract §5; [`commands`]: one module per command;
//! - [`settings`]: layered configuration (contract §6), its generated reference in
//!   [`config_reference`]; [`telemetry`]: JSON logs, optional OTLP traces;
//! - [`startup`]: builds and runs the application (HTTP API, workers, sweeper, pollers); [`tls`]:
//!   HTTPS on its listeners and client certificates mapped to systems;
//! - [`routes`]: the HTTP API of contract §1; [`pollers`]: the Pôle emploi partner API, polled;
//! - [`intake`]: the one way records enter the ledger (accept, then publish the tasks owed);
//! - [`ledger`]: desired and delivered states (SQLite, PostgreSQL);
//! - [`queue`]: "reconcile this dossier" tasks (embedded, RabbitMQ);
//! - [`worker`]: the reconcile worker; [`clients`]: outbound HTTP to AGORA, ATEXO SEM and Pôle
//!   emploi; [`retry`]: the backoff all of them share;
//! - [`metrics`]: Prometheus metrics; [`console`]: the operator console under `/console/`.

pub mod backfill;
pub mod cli;
pub mod clients;
pub mod commands;
pub mod config_reference;
pub mod console;
pub mod faults;
pub mod intake;
pub mod ledger;
pub mod metrics;
pub mod pollers;
pub mod queue;
pub mod retry;
pub mod returns;
pub mod routes;
pub mod sandbox;
pub mod settings;
pub mod singleton;
pub mod startup;
pub mod supervision;
pub mod systems;
pub mod telemetry;
pub mod tls;
pub mod worker;
