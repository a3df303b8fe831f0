//! The one integration test binary: every end-to-end test of the workspace, one module per area.

mod agora_auth;
mod atexo_sem;
mod backfill;
mod cli;
mod console;
mod crash;
mod dead_letters;
mod deployment;
mod faults;
mod hardening;
mod hostile;
mod observability;
mod openapi;
mod pole_emploi;
mod registry;
mod replicas;
mod support;
mod sync_flow;
