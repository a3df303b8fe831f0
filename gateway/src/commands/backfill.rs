//! `passerelle backfill`: runs [`crate::backfill::run`] and prints its report.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::backfill::{self, report, Options};
use crate::settings::Settings;

pub fn run(config: Option<&Path>, opts: Options, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config, std::env::vars())?;
    crate::telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(backfill::run(settings, opts))?;
    report::write_text(out, &summary.counts, &summary.problems, summary.dry_run)?;
    writeln!(
        out,
        "took {:.1}s ({:.0} dossiers/s)",
        summary.elapsed.as_secs_f64(),
        summary.counts.total() as f64 / summary.elapsed.as_secs_f64().max(0.001)
    )?;
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
