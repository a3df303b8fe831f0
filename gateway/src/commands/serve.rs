//! `passerelle serve` and `passerelle sandbox`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::settings::Settings;
use crate::startup::{sample_hint, Application};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, std::env::vars())?;
    // Outside the runtime: the OTLP exporter's client is a blocking one (see telemetry::Guard).
    let _traces = crate::telemetry::init_with(&settings.telemetry)?;
    runtime()?.block_on(async move {
        let data_dir = settings.data.dir.clone();
        let app = Application::build(settings)
            .await
            .context("cannot start the gateway")?;
        eprintln!("{}", sample_hint(app.port(), &data_dir));
        app.run_until_stopped()
            .await
            .context("the HTTP server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(feature = "sandbox")]
/// `passerelle sandbox`: the simulators alone, on `bind:port`, until SIGINT or SIGTERM (`docker
/// stop`).
pub fn sandbox(bind: std::net::IpAddr, port: u16) -> anyhow::Result<ExitCode> {
    crate::telemetry::init();
    runtime()?.block_on(async move {
        let config = passerelle_sandbox::SandboxConfig {
            bind: std::net::SocketAddr::from((bind, port)),
            ..Default::default()
        };
        let sb = passerelle_sandbox::Sandbox::start(config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the sandbox: {e}"))?;
        eprintln!(
            "sandbox listening on {}\n  AGORA: {} (token {})\n  Pôle emploi: {}\n  ATEXO SEM returns: {}",
            sb.base_url(),
            sb.agora_url(),
            sb.agora_token(),
            sb.pole_emploi_url(),
            sb.atexo_sem_returns_url()
        );
        crate::startup::wait_for_signal().await;
        sb.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
