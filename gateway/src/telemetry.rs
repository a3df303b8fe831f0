//! Logs: JSON lines on stderr, one span per request and per reconciliation, level from
//! `RUST_LOG` (default `info`). Personal data never reach a log line: the canonical types mask
//! them in `Debug`, and log calls carry ids and codes only.
//!
//! Traces: the same spans, exported with OTLP over HTTP (protobuf) when `telemetry.otlp_endpoint`
//! is set; off by default. They carry the same fields as the logs, so the same rule holds.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::settings::TelemetrySettings;

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configuration key `telemetry.otlp_endpoint`: cannot build the OTLP exporter ({0})")]
    Exporter(String),
}

/// Flushes the spans not yet exported when dropped. Create and drop it outside any async runtime:
/// the exporter's HTTP client is a blocking one, run by the SDK's own batch thread.
#[must_use = "traces are flushed when the guard is dropped"]
#[derive(Debug, Default)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("passerelle: traces not all exported: {e}");
            }
        }
    }
}

/// Installs the global subscriber once (later calls do nothing): JSON logs only.
pub fn init() {
    let _ = subscriber(None).try_init();
}

/// Installs the global subscriber once: JSON logs, and OTLP traces when the settings ask for them.
pub fn init_with(settings: &TelemetrySettings) -> Result<Guard, TelemetryError> {
    if settings.otlp_endpoint.is_empty() {
        init();
        return Ok(Guard::default());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.otlp_endpoint.clone())
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("passerelle");
    let _ = subscriber(Some(tracing_opentelemetry::layer().with_tracer(tracer))).try_init();
    Ok(Guard {
        provider: Some(provider),
    })
}

type Traces = tracing_opentelemetry::OpenTelemetryLayer<
    tracing_subscriber::Registry,
    opentelemetry_sdk::trace::Tracer,
>;

fn subscriber(traces: Option<Traces>) -> impl tracing::Subscriber + Send + Sync {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(traces)
        .with(
            fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr),
        )
        .with(filter)
}
