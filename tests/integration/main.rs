//! The one integration test binary: every end-to-end test of the workspace, one module per area.

mod atexo_sem;
mod cli;
mod crash;
mod faults;
mod support;
mod sync_flow;
