//! The backfill's final report (contract §5): every input dossier once, with its outcome, and the
//! counts. Written as text for the terminal and, with `--report FILE`, as JSON:
//! `{"counts": {…}, "dossiers": [{"id", "outcome", "numero_agora"?, "reason"?, "errors"?}]}`.
//!
//! No personal value ever appears: ids are ATEXO's dossier ids, errors carry a pointer or AGORA
//! field, a rule or anomaly code, and a detail that never quotes a value (AGORA's free-text
//! `libelle` may quote one, so it is left out).
//!
//! The JSON is streamed: entries go to a temporary file beside the report while the inputs are
//! read again, then the counts and the entries are written to the report, so a million dossiers
//! cost no memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What became of one input dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// AGORA holds it (its number is given).
    Accepted,
    /// AGORA rejected it: a dead letter, to correct at the source and replay.
    Rejected,
    /// Out of AGORA's perimeter: recorded, never sent.
    OutOfPerimeter,
    /// Nothing is owed to AGORA (refused or cancelled before AGORA ever had it).
    NothingOwed,
    /// Failed validation before sending (or lacks what AGORA requires).
    Invalid,
    /// `--dry-run` only: would be sent.
    WouldSend,
    /// Still being delivered by the synchronous flow, which took it over (a newer version).
    Pending,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::OutOfPerimeter => "out_of_perimeter",
            Outcome::NothingOwed => "nothing_owed",
            Outcome::Invalid => "invalid",
            Outcome::WouldSend => "would_send",
            Outcome::Pending => "pending",
        }
    }
}

/// One error of a dossier: a validation violation (`pointer`, `rule`) or an AGORA anomaly
/// (`champ`, `code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champ: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub detail: String,
}

impl ReportError {
    pub fn violation(v: &passerelle_adapters::Violation) -> Self {
        ReportError {
            pointer: Some(v.pointer.clone()),
            champ: None,
            rule: Some(v.rule.code().to_string()),
            code: None,
            detail: v.detail.clone(),
        }
    }

    pub fn anomaly(a: &passerelle_adapters::agora::model::Anomaly) -> Self {
        ReportError {
            pointer: None,
            champ: a.champ.clone(),
            rule: None,
            code: Some(a.code.clone()),
            detail: "rejected by AGORA".to_string(),
        }
    }

    pub fn other(code: &str, detail: impl Into<String>) -> Self {
        ReportError {
            pointer: None,
            champ: None,
            rule: None,
            code: Some(code.to_string()),
            detail: detail.into(),
        }
    }
}

/// One input dossier's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The record's id in its source (ATEXO SEM's `dossier/@id`, an orientation's
    /// `idOrientation`), or `#<position>` in its file when it could not be read.
    pub id: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numero_agora: Option<String>,
    /// Why it is out of perimeter (or a rejection's kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ReportError>,
}

/// The counts by outcome, always with the contract's five keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub by_outcome: BTreeMap<Outcome, u64>,
    /// Out-of-perimeter dossiers by reason.
    pub out_of_perimeter_by_reason: BTreeMap<String, u64>,
}

impl Counts {
    pub fn get(&self, o: Outcome) -> u64 {
        self.by_outcome.get(&o).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.by_outcome.values().sum()
    }

    fn add(&mut self, e: &Entry) {
        *self.by_outcome.entry(e.outcome).or_default() += 1;
        if e.outcome == Outcome::OutOfPerimeter {
            let reason = e.reason.clone().unwrap_or_else(|| "unknown".into());
            *self.out_of_perimeter_by_reason.entry(reason).or_default() += 1;
        }
    }

    /// The JSON `counts` object: the five outcomes of the contract, plus `would_send` (dry run)
    /// and `pending` when any.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for o in [
            Outcome::Accepted,
            Outcome::Rejected,
            Outcome::OutOfPerimeter,
            Outcome::NothingOwed,
            Outcome::Invalid,
        ] {
            m.insert(o.as_str().into(), self.get(o).into());
        }
        for o in [Outcome::WouldSend, Outcome::Pending] {
            if self.get(o) > 0 {
                m.insert(o.as_str().into(), self.get(o).into());
            }
        }
        serde_json::Value::Object(m)
    }
}

/// Collects the entries: counts in memory, the rejections and invalid ones for the text report
/// (capped), every entry to the JSON report's spool file when there is one.
#[derive(Debug)]
pub struct ReportWriter {
    pub counts: Counts,
    /// Rejected and invalid entries for the text report, at most `TEXT_LIMIT`.
    pub problems: Vec<Entry>,
    spool: Option<(PathBuf, BufWriter<File>, bool)>,
}

/// Problem lines kept for the text report (the JSON report has them all).
pub const TEXT_LIMIT: usize = 10_000;

impl ReportWriter {
    /// `json`: where the JSON report goes (entries are spooled beside it until [`Self::finish`]).
    pub fn new(json: Option<&Path>) -> io::Result<Self> {
        let spool = match json {
            Some(path) => {
                let spool = spool_path(path);
                let f = File::create(&spool)?;
                Some((spool, BufWriter::with_capacity(1 << 20, f), true))
            }
            None => None,
        };
        Ok(ReportWriter {
            counts: Counts::default(),
            problems: Vec::new(),
            spool,
        })
    }

    pub fn push(&mut self, e: Entry) -> io::Result<()> {
        self.counts.add(&e);
        if let Some((_, w, first)) = &mut self.spool {
            if !*first {
                w.write_all(b",\n")?;
            }
            *first = false;
            serde_json::to_writer(&mut *w, &e)?;
        }
        if matches!(e.outcome, Outcome::Rejected | Outcome::Invalid)
            && self.problems.len() < TEXT_LIMIT
        {
            self.problems.push(e);
        }
        Ok(())
    }

    /// Writes the JSON report (counts first, then every entry) and removes the spool.
    pub fn finish(mut self, json: Option<&Path>) -> io::Result<(Counts, Vec<Entry>)> {
        if let (Some(path), Some((spool, w, _))) = (json, self.spool.take()) {
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
            write!(
                out,
                "{{\"counts\": {},\n\"out_of_perimeter_by_reason\": {},\n\"dossiers\": [\n",
                self.counts.to_json(),
                serde_json::to_string(&self.counts.out_of_perimeter_by_reason)?
            )?;
            io::copy(&mut File::open(&spool)?, &mut out)?;
            out.write_all(b"\n]}\n")?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::remove_file(&spool)?;
        }
        Ok((self.counts, self.problems))
    }
}

/// Keeps the JSON report at `path` in the ledger, gzipped, for the console's Reprises page. A
/// report that cannot be kept is a warning, not a failed backfill: its file (with `--report`) and
/// the text report remain.
pub async fn keep(ledger: &dyn crate::ledger::Ledger, path: &Path, counts: &Counts) {
    let file = path.to_path_buf();
    let gzipped = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::copy(&mut File::open(&file)?, &mut gz)?;
        gz.finish()
    })
    .await
    .map_err(io::Error::other)
    .and_then(|r| r);
    let stored = match gzipped {
        Ok(bytes) => ledger
            .store_backfill_report(&counts.to_json(), &bytes)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(id) => tracing::info!(report_id = %id, "backfill report kept in the ledger"),
        Err(e) => tracing::warn!(error = %e, "cannot keep the backfill report in the ledger"),
    }
}

fn spool_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// The text report: counts, out-of-perimeter reasons, and each rejection and invalid dossier.
pub fn write_text(
    w: &mut impl Write,
    counts: &Counts,
    problems: &[Entry],
    dry_run: bool,
) -> io::Result<()> {
    writeln!(
        w,
        "backfill report{}: {} dossier(s)",
        if dry_run {
            " (dry run: nothing sent)"
        } else {
            ""
        },
        counts.total()
    )?;
    for o in [
        Outcome::Accepted,
        Outcome::Rejected,
        Outcome::OutOfPerimeter,
        Outcome::NothingOwed,
        Outcome::Invalid,
        Outcome::WouldSend,
        Outcome::Pending,
    ] {
        let n = counts.get(o);
        if n > 0 || o < Outcome::WouldSend {
            writeln!(w, "  {:<17} {n}", o.as_str())?;
        }
    }
    for (reason, n) in &counts.out_of_perimeter_by_reason {
        writeln!(w, "    out of perimeter, {reason}: {n}")?;
    }
    if !problems.is_empty() {
        writeln!(w, "rejected and invalid dossiers:")?;
        for e in problems {
            let errors: Vec<String> = e
                .errors
                .iter()
                .map(|x| {
                    let at = x.pointer.as_deref().or(x.champ.as_deref()).unwrap_or("-");
                    let what = x.rule.as_deref().or(x.code.as_deref()).unwrap_or("-");
                    format!("{what} at {at}: {}", x.detail)
                })
                .collect();
            writeln!(
                w,
                "  {} {}: {}",
                e.id,
                e.outcome.as_str(),
                errors.join("; ")
            )?;
        }
        let shown = problems.len() as u64;
        let all = counts.get(Outcome::Rejected) + counts.get(Outcome::Invalid);
        if all > shown {
            writeln!(w, "  … and {} more (see the JSON report)", all - shown)?;
        }
    }
    Ok(())
}
