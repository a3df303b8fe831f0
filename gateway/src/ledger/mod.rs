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

#[cfg(test)]
mod conformance;
pub mod fence;
mod logic;
pub mod outbox;
pub mod postgres;
pub mod progress;
pub mod search;
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
    /// The open backfill lot the dossier belongs to, if any: the lot, not a per-dossier task,
    /// delivers it until the lot is settled.
    pub lot: Option<String>,
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
    /// The replay whose attempt is under way, if the current attempt started from a replay.
    pub replay_id: Option<String>,
}

/// What [`Ledger::try_lease`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Held: nobody held it.
    Acquired,
    /// Held: the same holder renewed it, and nobody held it in between.
    Renewed,
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
    /// The replay whose attempt made this call (the delivery's `replay_id` when it was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_id: Option<String>,
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
    /// Its task came back unsettled `returns` times (the worker failed on it, panicked, or died
    /// holding it): the queue's delivery limit.
    Poison { returns: u32 },
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
            DeadReason::Poison { .. } => "poison".to_string(),
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
    /// The attempt its replay opened (set with `replayed_at`): the AGORA calls of that attempt
    /// and the dead letter that may end it carry the same id.
    pub replay_id: Option<String>,
    /// The replay whose attempt ended in this dead letter; `None` when the attempt did not start
    /// from a replay.
    pub after_replay: Option<String>,
}

/// What a replay did: the dead letter marked, its dossier owed again under a new attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    pub dead_letter_id: String,
    pub dossier_id: String,
    pub destination: String,
    /// The new attempt's id (see [`DeadLetter::replay_id`]).
    pub replay_id: String,
    pub replayed_at: DateTime<Utc>,
}

/// Where a backfill lot (*lot de reprise*) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LotState {
    /// Members chosen; `POST /reprises` not answered yet. After a crash in this state whether
    /// AGORA received the lot is unknown: its members are searched before anything is resent.
    Claimed,
    /// AGORA answered `202` with its lot id: the report is polled, the lot never resent.
    Submitted,
    /// The report was read and every member settled.
    Done,
}

impl LotState {
    pub fn as_str(self) -> &'static str {
        match self {
            LotState::Claimed => "claimed",
            LotState::Submitted => "submitted",
            LotState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<LotState> {
        [LotState::Claimed, LotState::Submitted, LotState::Done]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// A backfill lot as the ledger tracks it (the checkpoint of one `POST /reprises`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotRow {
    /// passerelle's id of the lot.
    pub lot_key: String,
    pub destination: String,
    pub state: LotState,
    /// AGORA's id of the lot, once `POST /reprises` answered `202`.
    pub agora_lot: Option<String>,
    /// The members, in line order, with the desired version each was claimed at.
    pub members: Vec<LotMember>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotMember {
    pub dossier_id: String,
    pub desired_version: i64,
}

/// What became of one member of a lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LotLine {
    /// AGORA holds the dossier under this number in this state (a report line accepted, or a
    /// search after an interrupted submission). Delivered if the dossier's desired version is
    /// still `version`; otherwise what was reached is recorded and the status stays `Pending`.
    Accepted {
        dossier_id: String,
        numero_agora: String,
        state: AgoraState,
        version: i64,
    },
    /// Nothing is owed to AGORA (e.g. refused or cancelled before AGORA ever had it):
    /// `Delivered` with the delivered state unchanged, like the worker's "nothing owed".
    NothingOwed { dossier_id: String, version: i64 },
    /// AGORA rejected the line, or the lot failed for good: a dead letter with this reason.
    Dead {
        dossier_id: String,
        reason: DeadReason,
    },
    /// Not sent after all (e.g. incomplete, or another flow took it over): back out of the lot,
    /// its status untouched, for a per-dossier task or a later lot.
    Released { dossier_id: String },
}

impl LotLine {
    pub fn dossier_id(&self) -> &str {
        match self {
            LotLine::Accepted { dossier_id, .. }
            | LotLine::NothingOwed { dossier_id, .. }
            | LotLine::Dead { dossier_id, .. }
            | LotLine::Released { dossier_id } => dossier_id,
        }
    }
}

/// Where the backfill flow stands toward a destination (dossiers whose flow is `backfill`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillProgress {
    /// Pending, never delivered, in no lot: what the next lots will take.
    pub claimable: u64,
    /// Members of lots not yet `Done`.
    pub in_lots: u64,
    /// Lots not yet `Done`.
    pub open_lots: u64,
    /// Any other pending backfill dossier (being reconciled one by one).
    pub pending_other: u64,
}

impl BackfillProgress {
    /// Nothing left for the backfill to do.
    pub fn is_idle(&self) -> bool {
        self.claimable == 0 && self.in_lots == 0 && self.open_lots == 0 && self.pending_other == 0
    }
}

/// Filters of the dead-letter list. `since` (inclusive) and `until` (exclusive) bound the last
/// failure, i.e. when the dossier was dead-lettered. Replayed dead letters are left out unless
/// `include_replayed`. The list is ordered by last failure, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub dossier_id: Option<String>,
    pub destination: Option<String>,
    /// [`DeadReason::code`]: an AGORA anomaly code, `http.<status>`, `transport`, or a planner code.
    pub code: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub include_replayed: bool,
}

impl DeadLetterFilter {
    /// Whether it names nothing to narrow on: it selects every dead letter.
    pub fn is_empty(&self) -> bool {
        self.dossier_id.is_none()
            && self.destination.is_none()
            && self.code.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// A message a polled source sent that the gateway could not read (*message illisible*), e.g. a
/// Pôle emploi registration: kept for an operator instead of vanishing into a log line. It holds
/// no personal value: the item is masked by its system's adapter before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub system: System,
    /// Where it was read, e.g. the session polled (`{"numeroFormation", …}`).
    pub context: serde_json::Value,
    /// The item, masked; `None` when the whole answer could not be read as a list of items.
    pub masked_item: Option<serde_json::Value>,
    pub violations: Vec<Violation>,
}

impl Unreadable {
    /// The same item read the same way at every poll is one row: its identity.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.system.as_str());
        h.update([0]);
        h.update(self.context.to_string());
        h.update([0]);
        h.update(
            self.masked_item
                .as_ref()
                .map(serde_json::Value::to_string)
                .unwrap_or_default(),
        );
        h.update([0]);
        h.update(serde_json::to_string(&self.violations).unwrap_or_default());
        hex::encode(h.finalize())
    }
}

/// An [`Unreadable`] as the ledger keeps it: seen `seen` times, first and last at these instants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnreadableRow {
    pub id: String,
    pub system: System,
    pub context: serde_json::Value,
    pub masked_item: Option<serde_json::Value>,
    pub violations: Vec<Violation>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub seen: i64,
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
    /// The installation's identity salt cannot be settled (see [`Ledger::identity_salt`]):
    /// starting would derive dossier ids that disagree with the ledger's.
    #[error("identity salt: {0}")]
    Identity(String),
    /// A fenced write ([`fence`]) whose holder no longer holds the lease: nothing was written.
    #[error("the lease on {key} is no longer held by this run; nothing was written")]
    LeaseLost { key: String },
    /// A replay by filter confirmed for `expected` dead letters found `found`: nothing was
    /// replayed.
    #[error("the filter selects {found} dead letter(s), not the {expected} confirmed; nothing was replayed")]
    CountChanged { expected: usize, found: usize },
    /// A dead letter is replayed once; this one already was.
    #[error("dead letter {id} was already replayed at {replayed_at}")]
    AlreadyReplayed {
        id: String,
        dossier_id: String,
        replayed_at: DateTime<Utc>,
    },
}

/// The salt of dossier ids a starting process brings to [`Ledger::identity_salt`].
#[derive(Clone)]
pub enum SaltOffer {
    /// Given by the operator (`identity.salt_file`, or an older installation's credentials
    /// file): it must agree with the ledger's, and may be the first on a ledger holding dossiers
    /// (they were made with it).
    Configured(String),
    /// Drawn at random by this start: used only when the ledger has none and holds no dossier.
    Generated(String),
}

impl std::fmt::Debug for SaltOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SaltOffer::Configured(_) => "Configured(***)",
            SaltOffer::Generated(_) => "Generated(***)",
        })
    }
}

impl SaltOffer {
    fn parts(&self) -> (&str, bool) {
        match self {
            SaltOffer::Configured(v) => (v, true),
            SaltOffer::Generated(v) => (v, false),
        }
    }

    /// What the ledger held after the offer (`None`: nothing, since it holds dossiers and the
    /// offer was generated) decides: the salt to use, or why this process must not start.
    pub(crate) fn settle(&self, stored: Option<String>) -> Result<String, LedgerError> {
        let (offered, configured) = self.parts();
        match stored {
            None => Err(LedgerError::Identity(
                "the ledger holds dossiers but no salt: give the one they were made with \
                 (identity.salt_file, or the identity.salt line of the first installation's \
                 credentials file)"
                    .into(),
            )),
            Some(stored) if configured && stored != offered => Err(LedgerError::Identity(
                "the configured salt (identity.salt_file, or the identity.salt line of the \
                 credentials file) differs from the one the ledger holds: dossier ids would not \
                 match the other replicas'"
                    .into(),
            )),
            Some(stored) => Ok(stored),
        }
    }
}

/// The ledger's operations. Each is one transaction.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Answers when the database answers (for `/readyz`).
    async fn health(&self) -> Result<(), LedgerError>;

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

    /// [`Ledger::replay_matching`], only if `filter` selects exactly `expected` dead letters (the
    /// number an operator confirmed); otherwise `CountChanged` and nothing is replayed.
    async fn replay_counted(
        &self,
        filter: &DeadLetterFilter,
        expected: Option<usize>,
    ) -> Result<Vec<Replayed>, LedgerError>;

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
    /// left to its delayed task). Members of an open lot and claimable backfill dossiers are left
    /// out: the backfill's lots deliver them.
    async fn pending(
        &self,
        destination: &str,
        quiet_for: Duration,
        limit: i64,
    ) -> Result<Vec<String>, LedgerError>;

    /// Deletes masked payloads older than `retention` and returns how many were deleted.
    async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError>;

    /// The sessions the Pôle emploi poller asks about: the distinct (`numero_formation`,
    /// `numero_action`, `numero_session`) of the in-perimeter dossiers whose desired state is one
    /// of `states`, leaving out those that lack one of the three numbers (the partner API wants
    /// all three). Sorted by the three numbers, byte order, whatever the database's collation.
    async fn sessions(&self, states: &[State]) -> Result<Vec<SessionRef>, LedgerError>;

    // --- The backfill (*reprise d'antériorité*) ------------------------------------------------

    /// Several dossiers at once (those found; any order), for the backfill's lots and report.
    async fn dossiers(&self, dossier_ids: &[String]) -> Result<Vec<DossierRow>, LedgerError>;

    /// The delivery toward `destination` of each named dossier that has one (those found, any
    /// order): what [`Ledger::dossiers`] gives as `delivery`, without the desired state and the
    /// sources. The backfill's report reads a million of them; decoding every dossier's JSON to
    /// read its status doubled the report's time.
    async fn deliveries(
        &self,
        destination: &str,
        dossier_ids: &[String],
    ) -> Result<Vec<(String, DeliveryRow)>, LedgerError>;

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

    /// A named checkpoint (e.g. how many dossiers of an input file were committed).
    async fn checkpoint(&self, key: &str) -> Result<Option<i64>, LedgerError>;

    async fn set_checkpoint(&self, key: &str, value: i64) -> Result<(), LedgerError>;

    // --- The operators' reads (see [`search`]) -------------------------------------------------

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
