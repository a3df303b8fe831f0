//! Logs: JSON lines on stderr, one span per request and per reconciliation, level from
//! `RUST_LOG` (default `info`). Personal data never reach a log line: the canonical types mask
//! them in `Debug`, and log calls carry ids and codes only.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once (later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_writer(std::io::stderr)
        .try_init();
}
