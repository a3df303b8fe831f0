//! `passerelle backfill` (*reprise d'antériorité*): the one-off mass load of a Region's existing
//! dossiers into AGORA through its asynchronous channel (`POST /reprises`, contract §3, §5).
//!
//! Design.md principle 5, "the sync flow in bulk": the same adapters, validation, ledger and
//! delivery state; only the transport to AGORA differs (lots instead of one call per transition).
//!
//! 1. **Read** ([`ingest`]): each input streams through its source's decoder (ATEXO SEM's by
//!    default, `--system` names another source of the registry whose records come as files;
//!    constant memory);
//!    each dossier is classified (perimeter, with `--since`), validated, and merged into the
//!    ledger as desired state (flow `backfill`), `backfill.commit_batch` dossiers a transaction.
//!    A checkpoint per input file (dossiers committed) lets `--resume` skip what is done.
//! 2. **Deliver** (the reconcile worker's lot run, [`crate::worker`], cut by the lot policy of
//!    [`lots`]): lot tasks on the `backfill` queue — a lane of its own with fewer workers, so the
//!    synchronous flow is never behind it — claim up to `backfill.lot_size` pending dossiers, send
//!    them as one NDJSON lot, poll the report, and settle each line (AGORA's number, or a dead
//!    letter with its anomalies). The lot is the second checkpoint.
//! 3. **Report** ([`report`]): once nothing is left in flight, each dossier's outcome is taken
//!    from the ledger, in input order, so a resumed run reports exactly what a straight one
//!    would. What decoding said of each dossier (invalid, out of perimeter, or its dossier id)
//!    was spilled to a temporary file while reading ([`spill`]): the inputs are not decoded twice.
//!
//! Killed anywhere and run again with `--resume`, nothing is sent twice and nothing is lost: what
//! was committed is skipped, open lots are resumed from their checkpoint, and merging a dossier
//! again is a no-op (same source version). A dossier later changed by ATEXO SEM's synchronous
//! flow leaves the backfill (its flow becomes `sync`) and is reconciled from the delivered state
//! the backfill recorded: only the operations still owed, never a second creation.

pub mod lots;
pub mod report;
mod spill;

use std::collections::HashMap;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use passerelle_adapters::agora::encode_reprise_line;
use passerelle_adapters::canonical::System;
use passerelle_adapters::planner::{target, Delivered, Target};
use passerelle_adapters::sources::{self, Checked, DecodeSettings, Reading, Source};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::ledger::{
    DeadLetterFilter, DeadReason, DeliveryRow, DeliveryStatus, Flow, Inbound, InboundRecord,
    Ledger, LedgerError, AGORA,
};
use crate::queue::{QueueError, Task};
use crate::settings::Settings;
use crate::startup::{Services, StartError};
use report::{Entry, Outcome, ReportError, ReportWriter};
use spill::{SpillReader, SpillWriter};
mod outcomes;
use outcomes::*;

/// The command line of `passerelle backfill`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source system the inputs come from (`--system`, ATEXO SEM by default): a source of the
    /// registry whose records come as files.
    pub system: System,
    pub inputs: Vec<PathBuf>,
    /// Sessions starting before this date are out of perimeter (default `perimeter.backfill_since`).
    pub since: Option<NaiveDate>,
    /// Everything but sending (and nothing is written to the ledger either).
    pub dry_run: bool,
    /// Skip what a previous run committed (its checkpoints).
    pub resume: bool,
    /// Where the JSON report goes.
    pub report: Option<PathBuf>,
    /// Progress display.
    pub progress: ProgressMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// No progress at all (tests).
    Quiet,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("{path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error("the report {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the temporary file of decoded dossiers, in {} (TMPDIR): {source}; it needs to be \
         writable with room for about 100 MB per million dossiers",
        std::env::temp_dir().display()
    )]
    Spill { source: std::io::Error },
    #[error("interrupted: run again with --resume to go on where it stopped")]
    Interrupted,
    #[error(
        "the backfill workers stopped before the lots were delivered: {0}; nothing was lost, \
         run again with --resume to go on where it stopped"
    )]
    Workers(String),
    #[error("{0}'s records do not come as files: the backfill reads those of {files}", files = sources::file_sources().map(|s| s.system().as_str()).collect::<Vec<_>>().join(", "))]
    NotFiles(System),
}

/// How a run ended.
#[derive(Debug)]
pub struct Summary {
    pub counts: report::Counts,
    /// Rejected and invalid entries (at most [`report::TEXT_LIMIT`]), for the text report.
    pub problems: Vec<Entry>,
    pub dry_run: bool,
    pub elapsed: Duration,
}

impl Summary {
    /// Contract §5: 0 only when every owed in-perimeter dossier was accepted by AGORA. An invalid
    /// dossier was owed and not sent, so it fails the run too (dry run: only invalid ones do).
    pub fn success(&self) -> bool {
        use Outcome::*;
        self.counts.get(Rejected) == 0
            && self.counts.get(Invalid) == 0
            && self.counts.get(Pending) == 0
    }
}

/// Runs a backfill with `settings` (the ledger, queue and AGORA of `serve`).
pub async fn run(settings: Settings, opts: Options) -> Result<Summary, BackfillError> {
    let started = Instant::now();
    let mut decode = settings.atexo_decode_settings()?;
    if let Some(since) = opts.since {
        decode.perimeter.backfill_since = since;
    }
    let inputs = Inputs {
        source: sources::file_source(opts.system).ok_or(BackfillError::NotFiles(opts.system))?,
        decode,
    };
    for path in &opts.inputs {
        std::fs::metadata(path).map_err(|source| BackfillError::Input {
            path: path.display().to_string(),
            source,
        })?;
    }
    if opts.dry_run {
        let (counts, problems) = dry_run(&opts, &inputs)?;
        return Ok(Summary {
            counts,
            problems,
            dry_run: true,
            elapsed: started.elapsed(),
        });
    }
    let services = Services::connect(&settings).await?;
    let salt = services
        .credentials
        .dossier_salt
        .expose_secret()
        .as_bytes()
        .to_vec();
    let ledger = services.ledger.clone();
    let queue = services.queue.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let lots_in_flight = settings.backfill.lots_in_flight;
    let worker = services.worker.clone();
    // How the workers ended, if they end before they are told to: the run then stops with their
    // reason instead of waiting forever for lots nobody delivers. A panic drops the sender.
    let (ended, mut workers_ended) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let workers = tokio::spawn(async move {
        let run = worker.run(Flow::Backfill, lots_in_flight, stopped).await;
        let _ = ended.send(run.map_err(|e| e.to_string()));
    });
    let workers_stopped = |ended: Result<Result<(), String>, _>| {
        BackfillError::Workers(match ended {
            Ok(Ok(())) => "they ended on their own".to_string(),
            Ok(Err(e)) => e,
            Err(_) => "they panicked (see the log above)".to_string(),
        })
    };
    let progress = Progress::new(opts.progress);

    // Open lots of an earlier run first: their members are not claimable until settled.
    for lot in ledger.open_lots(AGORA).await? {
        queue
            .publish(Flow::Backfill, &Task::lot(lot.lot_key))
            .await?;
    }
    let ingest = Ingest {
        ledger: ledger.as_ref(),
        queue: queue.as_ref(),
        precedence: &settings.merge.precedence,
        inputs: &inputs,
        salt: &salt,
        batch: settings.backfill.commit_batch as usize,
        lot_size: settings.backfill.lot_size as usize,
        resume: opts.resume,
        progress: &progress,
    };
    let result = async {
        let mut spills = Vec::with_capacity(opts.inputs.len());
        for path in &opts.inputs {
            tokio::select! {
                r = ingest.file(path) => spills.push(r?),
                _ = tokio::signal::ctrl_c() => return Err(BackfillError::Interrupted),
                e = &mut workers_ended => return Err(workers_stopped(e)),
            }
        }
        tokio::select! {
            r = drain(ledger.as_ref(), queue.as_ref(), lots_in_flight, settings.worker.lease_ttl_s, &progress) => r?,
            _ = tokio::signal::ctrl_c() => return Err(BackfillError::Interrupted),
            e = &mut workers_ended => return Err(workers_stopped(e)),
        }
        Ok(spills)
    }
    .await;
    let _ = stop.send(true);
    let _ = workers.await;
    let spills = result?;
    progress.finish("delivered; writing the report");
    let (counts, problems) = report_pass(ledger.as_ref(), &opts, spills).await?;
    if let Some(sb) = services.sandbox {
        sb.shutdown().await;
    }
    Ok(Summary {
        counts,
        problems,
        dry_run: false,
        elapsed: started.elapsed(),
    })
}

/// A stable name for an input file's checkpoint: its canonical path, size and modification time
/// (a file replaced by another is not skipped on its predecessor's checkpoint).
fn file_key(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let canonical = std::fs::canonicalize(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(canonical.as_os_str().as_encoded_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.to_le_bytes());
    Ok(format!(
        "{}{}",
        crate::ledger::progress::FILE_CHECKPOINT_PREFIX,
        &hex::encode(h.finalize())[..32]
    ))
}

/// The inputs' source and how they are read: the backfill flow, the perimeter with `--since`.
#[derive(Clone)]
struct Inputs {
    source: &'static dyn Source,
    decode: DecodeSettings,
}

impl Inputs {
    /// Each record of an input with its 1-based position: its dossier once valid, or its report
    /// line (invalid, or the input unreadable from there on).
    fn records<'a>(
        &self,
        input: impl std::io::BufRead + Send + 'a,
    ) -> impl Iterator<Item = (usize, Result<sources::Record, Entry>)> + 'a {
        let reading = Reading {
            flow: Flow::Backfill,
            settings: &self.decode,
            deadline: None,
            session: None,
        };
        let records = self
            .source
            .decode_file(Box::new(input), &reading)
            // `run` took the source from `file_source`, which gives files by definition.
            .unwrap_or_else(|| Box::new(std::iter::empty()));
        records.enumerate().map(|(n, c)| {
            let index = c.index.unwrap_or(n + 1);
            (index, decoded(c, index))
        })
    }
}

/// A checked record as the backfill reads it.
fn decoded(c: Checked, index: usize) -> Result<sources::Record, Entry> {
    match c.outcome {
        Ok(dossier) => Ok(sources::Record {
            id: c.id.unwrap_or_else(|| format!("#{index}")),
            dossier,
            out_of_perimeter: c.out_of_perimeter,
        }),
        Err(violations) => Err(invalid_entry(c.id, index, c.fatal, &violations)),
    }
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, BackfillError> {
    std::fs::File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|source| BackfillError::Input {
            path: path.display().to_string(),
            source,
        })
}

struct Ingest<'a> {
    ledger: &'a dyn Ledger,
    queue: &'a dyn crate::queue::Queue,
    precedence: &'a passerelle_adapters::merge::Precedence,
    inputs: &'a Inputs,
    salt: &'a [u8],
    batch: usize,
    lot_size: usize,
    resume: bool,
    progress: &'a Progress,
}

impl Ingest<'_> {
    /// Reads one input into the ledger, publishing a lot task every `lot_size` dossiers in
    /// perimeter (and at the end). Returns what decoding said of each dossier, for the report.
    async fn file(&self, path: &Path) -> Result<SpillReader, BackfillError> {
        let key = file_key(path).map_err(|source| BackfillError::Input {
            path: path.display().to_string(),
            source,
        })?;
        let done = self.ledger.checkpoint(&key).await?.unwrap_or(0);
        let skip = if self.resume { done } else { 0 };
        if skip > 0 {
            info!(file = %path.display(), skip, "resuming: dossiers already committed are skipped");
        } else if done > 0 {
            warn!(file = %path.display(), done, "an earlier run committed part of this file; without --resume it is read again (harmless, slower)");
        }
        // The decoder is blocking: it runs on a blocking thread and hands over batches.
        // About 2,000 decoded dossiers wait ahead of the ledger: enough to keep it busy, few enough
        // that a large `commit_batch` does not multiply the memory it takes.
        let ahead = (2_000 / self.batch.max(1)).max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(usize, InboundRecord)>>(ahead);
        let reader = open(path)?;
        let inputs = self.inputs.clone();
        let salt = self.salt.to_vec();
        let batch = self.batch;
        let counters = self.progress.counters.clone();
        let mut spill = SpillWriter::new().map_err(|source| BackfillError::Spill { source })?;
        // The spill is written whole, skipped dossiers included: the report needs every one.
        let decoder = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut pending = Vec::with_capacity(batch);
            for (index, item) in inputs.records(reader) {
                counters
                    .read
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let d = match item {
                    Ok(d) => d,
                    Err(entry) => {
                        spill.push(&Item::Done(entry))?;
                        continue;
                    }
                };
                let dossier_id = d.dossier.key().dossier_id(&salt);
                spill.push(&Item::decoded(&d, &dossier_id))?;
                if (index as i64) <= skip {
                    continue;
                }
                let in_perimeter = d.out_of_perimeter.is_none();
                if in_perimeter {
                    counters
                        .in_perimeter
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                pending.push((
                    index,
                    InboundRecord {
                        dossier_id,
                        record: d.dossier,
                        in_perimeter,
                    },
                ));
                if pending.len() >= batch
                    && tx
                        .blocking_send(std::mem::replace(&mut pending, Vec::with_capacity(batch)))
                        .is_err()
                {
                    return Ok(None);
                }
            }
            if !pending.is_empty() && tx.blocking_send(pending).is_err() {
                return Ok(None);
            }
            spill.finish().map(Some)
        });
        let mut since_hint = 0usize;
        while let Some(records) = rx.recv().await {
            let last = records.last().map_or(0, |(i, _)| *i);
            let owed = records.iter().filter(|(_, r)| r.in_perimeter).count();
            self.commit(&key, records).await?;
            self.ledger
                .set_checkpoint(&key, i64::try_from(last).unwrap_or(i64::MAX))
                .await?;
            since_hint += owed;
            if since_hint >= self.lot_size {
                since_hint = 0;
                self.queue
                    .publish(Flow::Backfill, &Task::lot(uuid::Uuid::now_v7().to_string()))
                    .await?;
            }
            self.progress.tick(self.ledger).await;
        }
        // The receiver only stops early on an error, returned above: the decoder ran to the end.
        let spill = decoder
            .await
            .map_err(|e| BackfillError::Spill {
                source: std::io::Error::other(e),
            })?
            .map_err(|source| BackfillError::Spill { source })?
            .ok_or_else(|| BackfillError::Spill {
                source: std::io::Error::other("the decoder stopped before the end of the input"),
            })?;
        self.queue
            .publish(Flow::Backfill, &Task::lot(uuid::Uuid::now_v7().to_string()))
            .await?;
        info!(file = %path.display(), "input read and committed");
        Ok(spill)
    }

    /// Merges a batch into the ledger in one transaction; when the ledger refuses a record (its
    /// state cannot follow what the ledger holds), the batch is merged record by record so the
    /// others go in.
    async fn commit(
        &self,
        key: &str,
        records: Vec<(usize, InboundRecord)>,
    ) -> Result<(), BackfillError> {
        let first = records.first().map_or(0, |(i, _)| *i);
        let last = records.last().map_or(0, |(i, _)| *i);
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        for (i, r) in &records {
            h.update(i.to_le_bytes());
            h.update(r.dossier_id.as_bytes());
            h.update(source_version(&r.record).to_le_bytes());
        }
        let inbound = Inbound {
            system: self.inputs.source.system(),
            flow: Flow::Backfill,
            payload_hash: hex::encode(h.finalize()),
            masked_payload: None,
            request_id: Some(format!("{key}#{first}-{last}")),
            records: records.iter().map(|(_, r)| r.clone()).collect(),
        };
        match self.ledger.accept(inbound, self.precedence).await {
            Ok(_) => Ok(()),
            Err(LedgerError::Rejected(_)) => {
                for (i, r) in records {
                    let inbound = Inbound {
                        system: self.inputs.source.system(),
                        flow: Flow::Backfill,
                        payload_hash: format!("{key}#{i}:{}", source_version(&r.record)),
                        masked_payload: None,
                        request_id: Some(format!("{key}#{i}")),
                        records: vec![r],
                    };
                    match self.ledger.accept(inbound, self.precedence).await {
                        Ok(_) => {}
                        // What the ledger holds stays; the report says what it is.
                        Err(LedgerError::Rejected(v)) => {
                            info!(index = i, rules = ?v.iter().map(|x| x.rule.code()).collect::<Vec<_>>(), "a backfill record cannot follow the ledger's state; kept out");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The source's version of a single-source record (0 when it has none).
fn source_version(d: &passerelle_adapters::Dossier) -> u64 {
    d.sources.first().and_then(|s| s.version).unwrap_or(0)
}

/// Waits until the backfill has nothing left in flight, keeping lots going: a lot task when
/// dossiers are claimable and fewer lots than allowed are open, and the open lots re-driven
/// every lease period (a lot whose runner died is taken over; a live one ignores the task).
async fn drain(
    ledger: &dyn Ledger,
    queue: &dyn crate::queue::Queue,
    lots_in_flight: u16,
    lease_ttl_s: u64,
    progress: &Progress,
) -> Result<(), BackfillError> {
    let mut last_hint = Instant::now();
    let mut last_redrive = Instant::now();
    let redrive_every = Duration::from_secs(lease_ttl_s.max(1));
    loop {
        let p = progress.count(ledger).await?;
        progress.show(&p);
        if p.is_idle() {
            return Ok(());
        }
        if p.claimable > 0
            && p.open_lots < u64::from(lots_in_flight)
            && last_hint.elapsed() > Duration::from_secs(2)
        {
            queue
                .publish(Flow::Backfill, &Task::lot(uuid::Uuid::now_v7().to_string()))
                .await?;
            last_hint = Instant::now();
        }
        if last_redrive.elapsed() > redrive_every {
            for lot in ledger.open_lots(AGORA).await? {
                queue
                    .publish(Flow::Backfill, &Task::lot(lot.lot_key))
                    .await?;
            }
            last_redrive = Instant::now();
        }
        tokio::time::sleep(progress.spacing(Duration::from_secs(1), 4)).await;
    }
}

/// `--dry-run`: decode, classify, validate and build each AGORA line; write nothing, send nothing.
fn dry_run(opts: &Options, inputs: &Inputs) -> Result<(report::Counts, Vec<Entry>), BackfillError> {
    let report_err = report_error(opts);
    let mut out = ReportWriter::new(opts.report.as_deref()).map_err(&report_err)?;
    for path in &opts.inputs {
        for (_, item) in inputs.records(open(path)?) {
            let d = match item {
                Ok(d) => d,
                Err(entry) => {
                    out.push(entry).map_err(&report_err)?;
                    continue;
                }
            };
            let entry = match Item::decoded(&d, &d.dossier.key().dossier_id(b"")) {
                Item::Done(e) => e,
                Item::Owed { id, dossier_id } => match target(d.dossier.state) {
                    Target::State(etat) => {
                        match encode_reprise_line(&dossier_id, &d.dossier, etat) {
                            Ok(_) => Entry {
                                id,
                                outcome: Outcome::WouldSend,
                                numero_agora: None,
                                reason: Some(etat.as_str().to_string()),
                                errors: Vec::new(),
                            },
                            Err(missing) => Entry {
                                id,
                                outcome: Outcome::Invalid,
                                numero_agora: None,
                                reason: Some("incomplete_for_agora".into()),
                                errors: missing.iter().map(ReportError::violation).collect(),
                            },
                        }
                    }
                    Target::Nothing | Target::CancelIfPresent => Entry {
                        id,
                        outcome: Outcome::NothingOwed,
                        numero_agora: None,
                        reason: None,
                        errors: Vec::new(),
                    },
                },
            };
            out.push(entry).map_err(&report_err)?;
        }
    }
    out.finish(opts.report.as_deref()).map_err(&report_err)
}

/// Progress on a terminal (indicatif) or as plain log lines every few seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    counters: std::sync::Arc<Counters>,
    started: Instant,
    last_line: std::sync::Mutex<Instant>,
    last_tick: std::sync::Mutex<Instant>,
    /// How long the last progress count took: at a million dossiers it scans for seconds, so it
    /// is asked for less often the more it costs, lest it take a core from the load itself.
    cost: std::sync::Mutex<Duration>,
}

#[derive(Debug, Default)]
struct Counters {
    read: std::sync::atomic::AtomicU64,
    in_perimeter: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new(mode: ProgressMode) -> Self {
        let quiet = mode == ProgressMode::Quiet;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            quiet,
            counters: Default::default(),
            started: Instant::now(),
            last_line: std::sync::Mutex::new(Instant::now()),
            last_tick: std::sync::Mutex::new(Instant::now()),
            cost: std::sync::Mutex::new(Duration::ZERO),
        }
    }

    /// The ledger's counts, timed.
    async fn count(
        &self,
        ledger: &dyn Ledger,
    ) -> Result<crate::ledger::BackfillProgress, crate::ledger::LedgerError> {
        let started = Instant::now();
        let p = ledger.backfill_progress(AGORA).await;
        if let Ok(mut cost) = self.cost.lock() {
            *cost = started.elapsed();
        }
        p
    }

    /// `floor`, or `share`× the last count's cost when that is longer: the counts then take at
    /// most 1/`share` of the time.
    fn spacing(&self, floor: Duration, share: u32) -> Duration {
        let cost = self.cost.lock().map(|c| *c).unwrap_or_default();
        floor.max(cost * share)
    }

    /// During the read: refreshes from the ledger every few seconds (the counts are not free).
    async fn tick(&self, ledger: &dyn Ledger) {
        if self.quiet {
            return;
        }
        {
            let Ok(mut last) = self.last_tick.lock() else {
                return;
            };
            if last.elapsed() < self.spacing(Duration::from_secs(5), 10) {
                return;
            }
            *last = Instant::now();
        }
        if let Ok(p) = self.count(ledger).await {
            self.show(&p);
        }
    }

    fn show(&self, p: &crate::ledger::BackfillProgress) {
        if self.quiet {
            return;
        }
        use std::sync::atomic::Ordering::Relaxed;
        let read = self.counters.read.load(Relaxed);
        let owed = self.counters.in_perimeter.load(Relaxed);
        let waiting = p.claimable + p.in_lots + p.pending_other;
        let settled = owed.saturating_sub(waiting);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = settled as f64 / secs;
        let eta = if rate > 0.0 && waiting > 0 {
            format!("{:.0}s", waiting as f64 / rate)
        } else {
            "-".into()
        };
        let msg = format!(
            "read {read}, in perimeter {owed}, settled {settled}, waiting {} (in {} lot(s): {}), {rate:.0} dossiers/s, ETA {eta}",
            p.claimable + p.pending_other,
            p.open_lots,
            p.in_lots
        );
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None => {
                let Ok(mut last) = self.last_line.lock() else {
                    return;
                };
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    eprintln!("passerelle backfill: {msg}");
                }
            }
        }
    }

    fn finish(&self, msg: &'static str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(msg),
            None if !self.quiet => eprintln!("passerelle backfill: {msg}"),
            None => {}
        }
    }
}
