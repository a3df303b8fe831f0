//! `passerelle dead-letters list|replay ID|replay --all`: the operators' dead letters, straight
//! on the configured ledger and queue (no running `serve` needed, and safe while one runs).
//!
//! A replay is committed to the ledger first, then its dossier's task is published and awaited
//! until the broker confirms it (the same order as `POST /v1/dead-letters/{id}/replay`). Exit
//! codes: 0 when everything asked was done, 1 when something could not be replayed (unknown id,
//! already replayed, task not confirmed), 2 for a usage or configuration error.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::cli::{DeadLetterFilterArgs, DeadLettersCommand, ListFormat};
use crate::ledger::{self, DeadLetter, DeadLetterFilter, Ledger, LedgerError, Replayed};
use crate::queue::{self, Flow, Queue, Task};
use crate::settings::Settings;

pub fn run(command: DeadLettersCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        DeadLettersCommand::List {
            filter,
            include_replayed,
            format,
            config,
        } => {
            let settings = load(config.as_deref())?;
            runtime.block_on(async {
                let ledger = connect_ledger(&settings).await?;
                let mut filter = filter_of(filter);
                filter.include_replayed = include_replayed;
                let list = ledger
                    .dead_letters(&filter)
                    .await
                    .context("cannot read the dead letters")?;
                print_list(out, &list, format)?;
                Ok(ExitCode::SUCCESS)
            })
        }
        // clap sees to it that `--all` is given exactly when no id is.
        DeadLettersCommand::Replay {
            id,
            all: _,
            filter,
            config,
        } => {
            let settings = load(config.as_deref())?;
            runtime.block_on(async {
                let ledger = connect_ledger(&settings).await?;
                let queue = queue::connect(settings.queue.url.expose_secret(), &settings.data.dir)
                    .await
                    .context("cannot open the queue (queue.url)")?;
                let replayed = match &id {
                    Some(id) => ledger.replay(id).await.map(|r| vec![r]),
                    None => ledger.replay_matching(&filter_of(filter)).await,
                };
                let replayed = match replayed {
                    Ok(r) => r,
                    Err(e) => {
                        let what = id.map_or_else(
                            || "the dead letters were".to_string(),
                            |id| format!("dead letter {id} was"),
                        );
                        eprintln!("passerelle: {what} not replayed: {}", why(&e));
                        return Ok(ExitCode::from(1));
                    }
                };
                let unqueued = publish(&*queue, &replayed).await;
                for r in &replayed {
                    let queued = if unqueued.contains(&r.dossier_id) {
                        "task NOT queued: a running `passerelle serve` re-enqueues it"
                    } else {
                        "task queued"
                    };
                    writeln!(
                        out,
                        "replayed dead letter {} (dossier {}, destination {}): replay {}, {queued}",
                        r.dead_letter_id, r.dossier_id, r.destination, r.replay_id
                    )?;
                }
                writeln!(
                    out,
                    "{} dead letter(s) replayed, {} task(s) not queued",
                    replayed.len(),
                    unqueued.len()
                )?;
                Ok(if unqueued.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            })
        }
    }
}

fn load(config: Option<&Path>) -> anyhow::Result<Settings> {
    let settings = Settings::load(config, std::env::vars())?;
    crate::telemetry::init();
    Ok(settings)
}

async fn connect_ledger(settings: &Settings) -> anyhow::Result<Arc<dyn Ledger>> {
    ledger::connect(settings.ledger.url.expose_secret())
        .await
        .context("cannot open the ledger (ledger.url)")
}

fn filter_of(args: DeadLetterFilterArgs) -> DeadLetterFilter {
    DeadLetterFilter {
        dossier_id: args.dossier,
        destination: args.destination,
        code: args.code,
        since: args.since,
        until: args.until,
        include_replayed: false,
    }
}

/// Why a replay was refused, in words an operator can act on.
fn why(e: &LedgerError) -> String {
    match e {
        LedgerError::NotFound { .. } => "no such dead letter".into(),
        LedgerError::AlreadyReplayed {
            dossier_id,
            replayed_at,
            ..
        } => format!(
            "already replayed at {} (a dead letter is replayed once; if dossier {dossier_id} \
             failed again, see `passerelle dead-letters list --dossier {dossier_id}`)",
            replayed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        other => other.to_string(),
    }
}

/// Publishes one task per replayed dossier, each confirmed by the broker; returns the dossiers
/// whose task was not.
async fn publish(queue: &dyn Queue, replayed: &[Replayed]) -> HashSet<String> {
    let mut failed = HashSet::new();
    let mut done = HashSet::new();
    for r in replayed {
        if !done.insert(r.dossier_id.as_str()) {
            continue;
        }
        // The replay id as request id: the worker's logs of this attempt carry it.
        let task = Task::dossier(r.dossier_id.clone(), Some(r.replay_id.clone()));
        if let Err(e) = queue.publish(Flow::Sync, &task).await {
            eprintln!(
                "passerelle: dossier {} is replayed in the ledger but its task was not confirmed: {e}",
                r.dossier_id
            );
            failed.insert(r.dossier_id.clone());
        }
    }
    failed
}

fn print_list(out: &mut impl Write, list: &[DeadLetter], format: ListFormat) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => {
            for d in list {
                // Masked: the CLI runs with the ledger's rights, not a personal-data token.
                writeln!(out, "{}", crate::routes::admin::dead_letter_json(d, false))?;
            }
        }
        ListFormat::Text => {
            let time = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            for d in list {
                write!(
                    out,
                    "{}  dossier {}  {}  {}  attempts {}  failed {}",
                    d.id,
                    d.dossier_id,
                    d.destination,
                    d.reason.code(),
                    d.attempts,
                    time(d.last_failure)
                )?;
                if let Some(at) = d.replayed_at {
                    write!(
                        out,
                        "  replayed {} (replay {})",
                        time(at),
                        d.replay_id.as_deref().unwrap_or("?")
                    )?;
                }
                if let Some(r) = &d.after_replay {
                    write!(out, "  after replay {r}")?;
                }
                writeln!(out)?;
            }
            writeln!(out, "{} dead letter(s)", list.len())?;
        }
    }
    Ok(())
}
