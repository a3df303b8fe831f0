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
//! conformance suite (`conformance/`, test-only) runs against both.
//!
//! - [`connect`] opens the ledger a `ledger.url` names and runs its migrations;
//! - [`sqlite::SqliteLedger`]: one file, WAL, writers serialised by `BEGIN IMMEDIATE`;
//! - [`postgres::PostgresLedger`]: concurrent replicas, a dossier's messages serialised by a row lock.
//!
//! Layout:
//!
//! - this file: the [`Ledger`] trait, one trait per role under it ([`IntakeLedger`],
//!   [`DeliveryLedger`], [`DeadLetterLedger`], [`LotLedger`], [`CheckpointLedger`],
//!   [`OutboxLedger`], [`ProgressLedger`], [`SearchLedger`]), [`connect`] and [`mask_url`];
//!   `records.rs`: the rows,
//!   records and errors the trait speaks in;
//! - `sqlite/` and `postgres/`, split alike by role: `mod.rs` (connection, transactions, SQL
//!   fragments, and `impl_roles!`, from `roles.rs`, which implements the role traits by delegating), `intake.rs` (accept, journal, dossier
//!   reads, identity, unreadable messages), `deliveries.rs` (leases, operations, settling,
//!   failures, pending, sessions), `dead_letters.rs` (dead letters and replays), `lots.rs` (the
//!   backfill's lots), `checkpoints.rs` (checkpoints and the payload purge), `outbox.rs` and
//!   `progress.rs` (each backend's side of the modules below); each backend's `mod.rs` says
//!   where the borderline operations went;
//! - `planning.rs`: what both backends compute without I/O (how a message plans its changes to its
//!   dossiers, how a lot's lines are sorted);
//! - `stored.rs`: how both store and read values (time, ids, stored texts back into their enums,
//!   database and JSON errors without quoting a value);
//! - `sql.rs`: the statements whose text is the same in both dialects, written once;
//! - `rows.rs`: the rows both backends decode alike (dossiers, deliveries, dead letters, lots), one `FromRow`
//!   struct each, generic over how a backend stores a time (a dossier's sources and a lot's members
//!   are read the backend's way: aggregated into the row, or apart);
//! - [`outbox`] (the returns to ATEXO SEM and the backfill reports), [`progress`] (the console's
//!   view of the backfill), [`search`] (the operators' reads, both dialects in one file),
//!   [`fence`] (writes fenced by a lease): concerns across the roles, with their own types;
//! - `conformance/` (test-only): the scenarios, by the same roles (plus `batches.rs`, messages of
//!   several records, `leases.rs`, and `search.rs`), and the harness that runs each against both
//!   backends.
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
//! - **Replay lineage.** A replay marks its dead letter replayed (it stays, for the trace), sets
//!   the dossier back to `Pending` and opens a new attempt named by a replay id, recorded on the
//!   dead letter (`replay_id`) and on the delivery. The worker copies the delivery's replay id
//!   onto each AGORA call it records; a dead letter ending that attempt names it (`after_replay`).
//!   The attempt ends, and the delivery forgets its replay id, when the dossier is dead-lettered
//!   again or settled at its desired version (delivered, incomplete, out of perimeter). A dead
//!   letter is replayed once: a second replay is [`LedgerError::AlreadyReplayed`].
//! - **Settling a stale version.** `settle_delivery` for a version older than the current desired
//!   version records what was reached but leaves the status `Pending`: a newer state is owed.
//! - **Time.** Timestamps are taken by the gateway (UTC, truncated to microseconds, the precision
//!   both databases keep), leases included: replicas are expected to run NTP.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::agora::model::Anomaly;
use passerelle_adapters::canonical::{Dossier, State, System};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::{AgoraState, Delivered, Operation};
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use serde::{Deserialize, Serialize};
mod records;
pub use records::*;

#[cfg(test)]
mod conformance;
pub mod fence;
pub mod outbox;
mod planning;
#[macro_use]
mod roles;
pub mod postgres;
pub mod progress;
mod rows;
pub mod search;
mod sql;
pub mod sqlite;
mod stored;

/// The ledger (*registre*): every role, one transaction per operation. The rest of the system
/// holds an `Arc<dyn Ledger>` and calls each role's operations on it (bring the role's trait into
/// scope, e.g. `use crate::ledger::IntakeLedger`).
#[async_trait]
pub trait Ledger:
    IntakeLedger
    + DeliveryLedger
    + DeadLetterLedger
    + LotLedger
    + CheckpointLedger
    + OutboxLedger
    + ProgressLedger
    + SearchLedger
    + Send
    + Sync
    + 'static
{
    /// Answers when the database answers (for `/readyz`).
    async fn health(&self) -> Result<(), LedgerError>;
}

/// Intake (*réception*): what a message brings in, and the dossiers and journal it shapes.
#[async_trait]
pub trait IntakeLedger: Send + Sync {
    /// The salt of dossier ids every replica shares: the ledger's, created from `offer` by the
    /// first start (atomically: concurrent first starts agree on one). A configured offer that
    /// differs from the ledger's is refused, and a ledger that holds dossiers never takes a
    /// generated one (`LedgerError::Identity`).
    async fn identity_salt(&self, offer: &SaltOffer) -> Result<String, LedgerError>;

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

    /// The journal entries that shaped a dossier, oldest first.
    async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError>;

    /// Several dossiers at once (those found; any order), for the backfill's lots and report.
    async fn dossiers(&self, dossier_ids: &[String]) -> Result<Vec<DossierRow>, LedgerError>;

    /// Keeps an unreadable message (a new row, or one more sighting of the same one).
    async fn record_unreadable(&self, u: &Unreadable) -> Result<(), LedgerError>;

    /// The unreadable messages last seen at or after `since`, the most recently seen first, at
    /// most `limit`.
    async fn unreadable(
        &self,
        system: Option<System>,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<UnreadableRow>, LedgerError>;
}

/// Deliveries (*livraisons*): the leases, AGORA calls and delivery states of the reconcile worker.
#[async_trait]
pub trait DeliveryLedger: Send + Sync {
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

    /// Records an AGORA call and the delivered state it leads to, and the return to ATEXO SEM
    /// that AGORA's answer makes, if any, in one transaction (the outbox, [`outbox`]).
    async fn record_operation(
        &self,
        dossier_id: &str,
        destination: &str,
        op: &OperationRecord,
        delivered: &Delivered,
        ret: Option<&outbox::PendingReturn>,
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

    /// The AGORA calls performed for a dossier, oldest first.
    async fn operations(
        &self,
        dossier_id: &str,
        destination: &str,
    ) -> Result<Vec<OperationRecord>, LedgerError>;

    /// Dossiers whose delivery is `Pending` and untouched for `quiet_for` (to re-enqueue a task
    /// lost after a crash; a dossier in its retry backoff was touched by its last failure and is
    /// left to its delayed task). Members of an open lot and claimable backfill dossiers are left
    /// out: the backfill's lots deliver them.
    async fn pending(
        &self,
        destination: &str,
        quiet_for: Duration,
        limit: i64,
    ) -> Result<Vec<String>, LedgerError>;

    /// The sessions the Pôle emploi poller asks about: the distinct (`numero_formation`,
    /// `numero_action`, `numero_session`) of the in-perimeter dossiers whose desired state is one
    /// of `states`, leaving out those that lack one of the three numbers (the partner API wants
    /// all three). Sorted by the three numbers, byte order, whatever the database's collation.
    async fn sessions(&self, states: &[State]) -> Result<Vec<SessionRef>, LedgerError>;

    /// The delivery toward `destination` of each named dossier that has one (those found, any
    /// order): what [`IntakeLedger::dossiers`] gives as `delivery`, without the desired state and the
    /// sources. The backfill's report reads a million of them; decoding every dossier's JSON to
    /// read its status doubled the report's time.
    async fn deliveries(
        &self,
        destination: &str,
        dossier_ids: &[String],
    ) -> Result<Vec<(String, DeliveryRow)>, LedgerError>;
}

/// Dead letters (*lettres mortes*) and their replays.
#[async_trait]
pub trait DeadLetterLedger: Send + Sync {
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
    /// `Pending` with its attempts reset under a new replay id (see the module's "Replay
    /// lineage"), and says what to reconcile again. `NotFound` for an unknown id,
    /// `AlreadyReplayed` for a dead letter replayed before (nothing changes then).
    async fn replay(&self, dead_letter_id: &str) -> Result<Replayed, LedgerError>;

    /// Replays, in one transaction and oldest first, every dead letter not yet replayed that
    /// `filter` selects (its `include_replayed` is ignored). An empty filter selects them all:
    /// callers facing an operator ask for an explicit "all" first.
    async fn replay_matching(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<Replayed>, LedgerError> {
        self.replay_counted(filter, None).await
    }

    /// [`DeadLetterLedger::replay_matching`], only if `filter` selects exactly `expected` dead letters (the
    /// number an operator confirmed); otherwise `CountChanged` and nothing is replayed.
    async fn replay_counted(
        &self,
        filter: &DeadLetterFilter,
        expected: Option<usize>,
    ) -> Result<Vec<Replayed>, LedgerError>;
}

/// The backfill's lots (*lots de reprise*): claimed, submitted to AGORA, settled line by line;
/// and the counts of the backfill's flow they draw from.
#[async_trait]
pub trait LotLedger: Send + Sync {
    /// Opens lot `lot_key` with up to `limit` **claimable** dossiers: flow `backfill`, in
    /// perimeter, status `Pending` toward `destination`, delivered state not `Present` (AGORA
    /// never confirmed them), in no lot, and not leased by a worker. Oldest pending first (by the
    /// delivery's last change). Returns `None` (and creates nothing) when none is claimable; the
    /// lot is `Claimed`.
    async fn claim_lot(
        &self,
        destination: &str,
        lot_key: &str,
        limit: i64,
    ) -> Result<Option<LotRow>, LedgerError>;

    async fn lot(&self, lot_key: &str) -> Result<Option<LotRow>, LedgerError>;

    /// Lots not `Done`, oldest first (to resume them).
    async fn open_lots(&self, destination: &str) -> Result<Vec<LotRow>, LedgerError>;

    /// Checkpoint: AGORA accepted the lot under `agora_lot` (state `Submitted`).
    async fn lot_submitted(&self, lot_key: &str, agora_lot: &str) -> Result<(), LedgerError>;

    /// Settles lot members (one transaction): each line as [`LotLine`] says, each member leaving
    /// the lot (lines naming a dossier not in the lot are ignored). For the trace, an `Accepted`
    /// line also records an operation: `Create`, status `Some(202)`, outcome
    /// `"backfill lot {agora_lot}: {STATE}"`, with its number. When `done`, the lot becomes
    /// `Done` and any member not named leaves it too. Returns the ids of the settled or released
    /// members still `Pending` afterwards (a newer desired version, or released): the caller gives
    /// them a per-dossier task.
    async fn settle_lot(
        &self,
        lot_key: &str,
        lines: &[LotLine],
        done: bool,
    ) -> Result<Vec<String>, LedgerError>;

    /// Counts of the backfill flow toward `destination`.
    async fn backfill_progress(&self, destination: &str) -> Result<BackfillProgress, LedgerError>;
}

/// Checkpoints of the backfill's inputs, and the purge of masked payloads.
#[async_trait]
pub trait CheckpointLedger: Send + Sync {
    /// Deletes masked payloads older than `retention` and returns how many were deleted.
    async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError>;

    /// A named checkpoint (e.g. how many dossiers of an input file were committed).
    async fn checkpoint(&self, key: &str) -> Result<Option<i64>, LedgerError>;

    async fn set_checkpoint(&self, key: &str, value: i64) -> Result<(), LedgerError>;
}

/// The outbox ([`outbox`]): the returns to ATEXO SEM, and the backfill's reports.
#[async_trait]
pub trait OutboxLedger: Send + Sync {
    /// Claims up to `limit` pending returns that are due, oldest first, for `claim` (no other
    /// sender takes them meanwhile, whichever replica it runs in).
    async fn claim_returns(
        &self,
        limit: u32,
        claim: Duration,
    ) -> Result<Vec<outbox::DueReturn>, LedgerError>;

    /// Records how the post of a claimed return ended.
    async fn settle_return(
        &self,
        return_id: &str,
        attempt: &outbox::ReturnAttempt,
    ) -> Result<(), LedgerError>;

    /// A dossier's returns, oldest first.
    async fn returns_of(&self, dossier_id: &str) -> Result<Vec<outbox::ReturnRow>, LedgerError>;

    /// Keeps a backfill run's report (its JSON, gzipped); returns its id.
    async fn store_backfill_report(
        &self,
        counts: &serde_json::Value,
        gzip_json: &[u8],
    ) -> Result<String, LedgerError>;

    /// The latest `limit` backfill reports, newest first (without their content).
    async fn backfill_reports(&self, limit: u32) -> Result<Vec<outbox::ReportMeta>, LedgerError>;

    /// One backfill report's gzipped JSON.
    async fn backfill_report(&self, report_id: &str) -> Result<Option<Vec<u8>>, LedgerError>;
}

/// The backfill's progress ([`progress`]), as the console shows it.
#[async_trait]
pub trait ProgressLedger: Send + Sync {
    /// The latest `limit` backfill lots toward `destination`, newest first (done ones included),
    /// each with what became of its members.
    async fn lot_progress(
        &self,
        destination: &str,
        limit: u32,
    ) -> Result<Vec<progress::LotProgress>, LedgerError>;

    /// The checkpoints of the backfill's input files, the most recently advanced first.
    async fn input_progress(&self, limit: u32)
        -> Result<Vec<progress::InputProgress>, LedgerError>;
}

/// The operators' reads ([`search`]).
#[async_trait]
pub trait SearchLedger: Send + Sync {
    /// One page of the dossiers `filter` selects, most recently changed first.
    async fn search(
        &self,
        filter: &search::SearchFilter,
    ) -> Result<search::SearchPage, LedgerError>;

    /// The distinct session numbers of the ledger's dossiers.
    async fn session_numbers(&self) -> Result<Vec<String>, LedgerError>;

    /// Intake, successful AGORA calls and dead letters per hour since `since`, oldest first.
    async fn activity(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<search::HourActivity>, LedgerError>;
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
