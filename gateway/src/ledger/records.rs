//! What the ledger keeps and answers: its rows and records (inbound messages, dossiers, deliveries,
//! leases, operations, journal entries, dead letters, lots, backfill progress, unreadable
//! records), its errors, and the identity salt's offer.

#[allow(unused_imports)]
use super::*;

/// The destination a dossier is delivered to. Only AGORA for now; the type leaves room for more.
pub const AGORA: &str = "agora";

/// Which flow brought a record: the backfill runs on its own queue at a lower priority.
pub use passerelle_adapters::canonical::Flow;

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

/// What [`DeliveryLedger::try_lease`] gave.
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
    /// The installation's identity salt cannot be settled (see [`IntakeLedger::identity_salt`]):
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

/// The salt of dossier ids a starting process brings to [`IntakeLedger::identity_salt`].
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
