//! The ledger (*registre*): passerelle's durable memory.
//!
//! Per dossier it keeps the latest record of each source, the merged **desired** canonical state
//! with a monotonic version, and per destination the state already **delivered** (with AGORA's
//! number), the attempts and the last error; plus the message journal (payload hash, source, time,
//! outcome; masked payloads for the configured retention), the AGORA operations performed, and the
//! dead letters. Design.md principle 2: the worker compares desired and delivered and sends what is
//! owed, so duplicates are harmless and order does not matter.
//!
//! Two implementations behind one trait: SQLite (embedded mode) and PostgreSQL (production). One
//! conformance suite (`conformance.rs`, test-only) runs against both.
//!
//! - [`connect`] opens the ledger a `ledger.url` names and runs its migrations;
//! - [`sqlite::SqliteLedger`]: one file, WAL, writers serialised by `BEGIN IMMEDIATE`;
//! - [`postgres::PostgresLedger`]: concurrent replicas, a dossier's messages serialised by a row lock.
//!
//! Choices the rest of the system relies on (both backends):
//!
//! - **Perimeter.** Each source record keeps the verdict the ingress gave it; the dossier is in
//!   AGORA's perimeter only if every latest source record is (an exclusion by any source wins, and
//!   a corrected source lifts it, since only its latest record counts).
//! - **Flow.** A dossier's flow is `sync` once any sync message touched it (the higher priority
//!   lane), `backfill` otherwise.
//! - **Delivery status on accept.** A new dossier is `Pending` (`OutOfPerimeter` out of the
//!   perimeter). When the desired version changes or the perimeter verdict flips, the status becomes
//!   `Pending` (or `OutOfPerimeter`), **including from `Dead`**: a corrected source is what an
//!   operator waits for, so a new desired version revives a dead dossier, with its attempts reset.
//!   The dead letter itself stays as it was (not marked replayed: only an operator replays).
//! - **Settling a stale version.** `settle_delivery` for a version older than the current desired
//!   version records what was reached but leaves the status `Pending`: a newer state is owed.
//! - **Time.** Timestamps are taken by the gateway (UTC, truncated to microseconds, the precision
//!   both databases keep), leases included: replicas are expected to run NTP.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::agora::model::Anomaly;
use passerelle_adapters::canonical::{Dossier, System};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::{Delivered, Operation};
use passerelle_adapters::Violation;
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod conformance;
mod logic;
pub mod postgres;
pub mod sqlite;

/// The destination a dossier is delivered to. Only AGORA for now; the type leaves room for more.
pub const AGORA: &str = "agora";

/// Which flow brought a record: the backfill runs on its own queue at a lower priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    Sync,
    Backfill,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Sync => "sync",
            Flow::Backfill => "backfill",
        }
    }

    /// The inverse of [`Flow::as_str`].
    pub fn parse(s: &str) -> Option<Flow> {
        match s {
            "sync" => Some(Flow::Sync),
            "backfill" => Some(Flow::Backfill),
            _ => None,
        }
    }
}

/// One single-source canonical record of an inbound message, already decoded and validated.
#[derive(Debug, Clone)]
pub struct InboundRecord {
    /// passerelle's stable id of the dossier (derived from the correlation key).
    pub dossier_id: String,
    /// The record as its source sent it (one entry in `sources`).
    pub record: Dossier,
    /// Whether AGORA should hear of it (an out-of-perimeter dossier is recorded, never sent).
    pub in_perimeter: bool,
}

/// An inbound message: accepted whole or not at all.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub system: System,
    pub flow: Flow,
    /// SHA-256 of the raw body, hex: a repeated identical POST is recognised by it.
    pub payload_hash: String,
    /// The body with personal fields masked, kept for the configured retention; `None` to keep
    /// nothing.
    pub masked_payload: Option<Vec<u8>>,
    /// The request id of the HTTP call, carried to the worker's logs.
    pub request_id: Option<String>,
    pub records: Vec<InboundRecord>,
}

/// What the ledger made of an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The journal entry's id; the same for a repeated identical payload.
    pub message_id: String,
    /// Whether this exact payload had already been accepted.
    pub duplicate: bool,
    pub dossiers: Vec<AcceptedDossier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedDossier {
    pub dossier_id: String,
    pub in_perimeter: bool,
    /// Whether the desired state changed (a new version): only then is anything owed.
    pub changed: bool,
    pub desired_version: i64,
}

/// Where a dossier stands toward a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Operations are owed and not yet done (or being retried).
    Pending,
    /// Everything owed was delivered for the current desired version.
    Delivered,
    /// The merged dossier lacks what AGORA requires; it waits for another source.
    Incomplete,
    /// Out of AGORA's perimeter: recorded, never sent.
    OutOfPerimeter,
    /// In the dead letters, waiting for an operator.
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Incomplete,
        DeliveryStatus::OutOfPerimeter,
        DeliveryStatus::Dead,
    ];

    /// The stored spelling (the serde one).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Incomplete => "incomplete",
            DeliveryStatus::OutOfPerimeter => "out_of_perimeter",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// The inverse of [`DeliveryStatus::as_str`].
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A dossier as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DossierRow {
    pub dossier_id: String,
    pub desired: Dossier,
    pub desired_version: i64,
    pub flow: Flow,
    pub in_perimeter: bool,
    /// The latest record of each source, as received.
    pub sources: Vec<Dossier>,
    pub delivery: DeliveryRow,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The delivery state toward one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub destination: String,
    pub delivered: Delivered,
    /// The desired version the last successful reconciliation reached.
    pub delivered_version: i64,
    pub status: DeliveryStatus,
    /// Consecutive failed attempts since the last success.
    pub attempts: i32,
    pub last_error: Option<String>,
    /// What the dossier waits for when `Incomplete` (canonical pointers and rules).
    pub waiting_for: Vec<Violation>,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

/// What [`Ledger::try_lease`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Held: nobody held it, or the same holder renewed it.
    Acquired,
    /// Held, replacing another holder's expired lease: that worker died (or overran) in the middle
    /// of the dossier, so whether its last AGORA call took effect is unknown.
    TakenOver,
    /// Another holder has it.
    Busy,
}

impl Lease {
    pub fn is_held(self) -> bool {
        !matches!(self, Lease::Busy)
    }
}

/// One AGORA call performed for a dossier, for the trace and the "no operation twice" checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub operation: Operation,
    /// HTTP status answered, or `None` for a transport failure.
    pub status: Option<u16>,
    /// A short description of the outcome, with no personal value.
    pub outcome: String,
    pub numero_agora: Option<String>,
    pub at: DateTime<Utc>,
}

/// One entry of the message journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub message_id: String,
    pub system: System,
    pub flow: Flow,
    pub payload_hash: String,
    pub received_at: DateTime<Utc>,
    pub dossier_ids: Vec<String>,
    pub request_id: Option<String>,
}

/// Why a dossier was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeadReason {
    /// AGORA rejected it (422): its anomalies.
    Rejected { anomalies: Vec<Anomaly> },
    /// Transient failures exhausted the configured attempts: the last one.
    Exhausted {
        last_error: String,
        status: Option<u16>,
    },
    /// A state pair no AGORA operation can reconcile (planner error), or AGORA's state conflicts.
    Irreconcilable { detail: String },
}

impl DeadReason {
    /// The code operators filter on: an AGORA anomaly code, `http.<status>`, or a planner code.
    pub fn code(&self) -> String {
        match self {
            DeadReason::Rejected { anomalies } => anomalies
                .first()
                .map_or_else(|| "agora.rejected".to_string(), |a| a.code.clone()),
            DeadReason::Exhausted {
                status: Some(s), ..
            } => format!("http.{s}"),
            DeadReason::Exhausted { status: None, .. } => "transport".to_string(),
            DeadReason::Irreconcilable { .. } => "lifecycle.irreconcilable".to_string(),
        }
    }
}

/// A dead letter (*lettre morte*): a dossier an operator must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub dossier_id: String,
    pub destination: String,
    pub reason: DeadReason,
    pub attempts: i32,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
    /// When it was replayed, if it was: the dead letter stays, marked, for the lineage.
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Filters of the dead-letter list. `since` (inclusive) and `until` (exclusive) bound the last
/// failure, i.e. when the dossier was dead-lettered. Replayed dead letters are left out unless
/// `include_replayed`. The list is ordered by last failure, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub destination: Option<String>,
    pub code: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub include_replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database does not answer or refused the statement: the caller answers 503 and retries.
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// The message contradicts what the ledger holds (e.g. a lifecycle transition not allowed):
    /// nothing was stored.
    #[error("the message is refused: {} violation(s)", .0.len())]
    Rejected(Vec<Violation>),
    /// A stored row could not be read back (a bug or a manual edit).
    #[error("corrupt ledger row for {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("no such {what}")]
    NotFound { what: &'static str },
}

/// The ledger's operations. Each is one transaction.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Answers when the database answers (for `/readyz`).
    async fn health(&self) -> Result<(), LedgerError>;

    /// Records an inbound message: one journal entry (deduplicated on system + payload hash) and
    /// each record merged into its dossier with `precedence`. A record whose source version is
    /// older than the one held is kept out (stale); a merged state behind the previous desired
    /// state keeps the previous state; a merged state that cannot follow it is refused
    /// (`lifecycle.transition`) and nothing of the message is stored.
    async fn accept(
        &self,
        inbound: Inbound,
        precedence: &Precedence,
    ) -> Result<Accepted, LedgerError>;

    /// A dossier with its sources and delivery state.
    async fn dossier(&self, dossier_id: &str) -> Result<Option<DossierRow>, LedgerError>;

    /// Takes the dossier's lease for `ttl` if nobody holds it (or the holder's lease expired):
    /// one worker at a time per dossier, whatever the queue. The holder names one task, not a
    /// process: two tasks of the same dossier in one process must not both hold it.
    async fn try_lease(
        &self,
        dossier_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LedgerError>;

    /// Gives the lease back (only if `holder` holds it).
    async fn release(&self, dossier_id: &str, holder: &str) -> Result<(), LedgerError>;

    /// Records an AGORA call and the delivered state it leads to (in one transaction).
    async fn record_operation(
        &self,
        dossier_id: &str,
        destination: &str,
        op: &OperationRecord,
        delivered: &Delivered,
    ) -> Result<(), LedgerError>;

    /// Sets the delivery status once a reconciliation ends: `Delivered` at `desired_version`,
    /// `Incomplete` with what is missing, or `OutOfPerimeter`; resets the attempts on success.
    async fn settle_delivery(
        &self,
        dossier_id: &str,
        destination: &str,
        status: DeliveryStatus,
        desired_version: i64,
        waiting_for: &[Violation],
    ) -> Result<(), LedgerError>;

    /// Counts a failed attempt (transient); returns the attempts so far.
    async fn record_failure(
        &self,
        dossier_id: &str,
        destination: &str,
        error: &str,
    ) -> Result<i32, LedgerError>;

    /// Puts the dossier in the dead letters (status `Dead`); returns the dead letter's id.
    async fn dead_letter(
        &self,
        dossier_id: &str,
        destination: &str,
        reason: &DeadReason,
    ) -> Result<String, LedgerError>;

    async fn dead_letters(&self, filter: &DeadLetterFilter)
        -> Result<Vec<DeadLetter>, LedgerError>;

    /// Marks a dead letter replayed (it stays, for the lineage), sets the dossier back to
    /// `Pending` with its attempts reset, and returns the dossier id to reconcile again.
    async fn replay(&self, dead_letter_id: &str) -> Result<String, LedgerError>;

    /// The journal entries that shaped a dossier, oldest first.
    async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError>;

    /// The AGORA calls performed for a dossier, oldest first.
    async fn operations(
        &self,
        dossier_id: &str,
        destination: &str,
    ) -> Result<Vec<OperationRecord>, LedgerError>;

    /// Dossiers whose delivery is `Pending` and untouched for `quiet_for` (to re-enqueue a task
    /// lost after a crash; a dossier in its retry backoff was touched by its last failure and is
    /// left to its delayed task).
    async fn pending(
        &self,
        destination: &str,
        quiet_for: Duration,
        limit: i64,
    ) -> Result<Vec<String>, LedgerError>;

    /// Deletes masked payloads older than `retention` and returns how many were deleted.
    async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError>;
}

/// Opens the ledger `url` names and brings its schema up to date:
///
/// - `sqlite://path` (e.g. `sqlite://./data/passerelle.db`): the file and its directory are created
///   if missing;
/// - `postgres://…` or `postgresql://…`.
///
/// Errors never quote a password: the URL is shown through [`mask_url`].
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Ledger>, LedgerError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(std::sync::Arc::new(sqlite::SqliteLedger::connect(url).await?)),
        Some("postgres" | "postgresql") => {
            Ok(std::sync::Arc::new(postgres::PostgresLedger::connect(url).await?))
        }
        Some(other) => Err(LedgerError::Unavailable(format!(
            "ledger.url {}: unsupported scheme {other:?} (expected sqlite://, postgres:// or postgresql://)",
            mask_url(url)
        ))),
        None => Err(LedgerError::Unavailable(format!(
            "ledger.url {}: no scheme (expected sqlite://, postgres:// or postgresql://)",
            mask_url(url)
        ))),
    }
}

/// A URL fit for logs and errors: the password of its user-info part, if any, is replaced by `***`,
/// and so is a `password=` query parameter.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}
