//! The statements whose text is the same in both dialects, written once. Each backend binds its
//! own values (SQLite stores times as text, PostgreSQL as `timestamptz`); the text is shared only
//! where it means the same in both.

// The connection.

pub(super) const HEALTH: &str = "SELECT 1";

// Intake.

pub(super) const IDENTITY_OFFER: &str =
    "INSERT INTO identity (name, value) SELECT 'dossier_salt', $1 \
     WHERE $2 OR NOT EXISTS (SELECT 1 FROM dossiers) ON CONFLICT (name) DO NOTHING";

pub(super) const IDENTITY_SALT: &str = "SELECT value FROM identity WHERE name = 'dossier_salt'";

pub(super) const JOURNAL_ENTRY_OF_PAYLOAD: &str =
    "SELECT message_id FROM journal WHERE system = $1 AND payload_hash = $2";

pub(super) const LINKED_DOSSIERS: &str =
    "SELECT d.dossier_id, d.in_perimeter, d.desired_version FROM journal_dossiers jd \
     JOIN dossiers d ON d.dossier_id = jd.dossier_id \
     WHERE jd.message_id = $1 ORDER BY jd.position";

pub(super) const RECORD_UNREADABLE: &str =
    "INSERT INTO unreadable (id, system, digest, context, masked_item, violations, \
     first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
     ON CONFLICT (system, digest) DO UPDATE SET last_seen = excluded.last_seen, \
     seen = unreadable.seen + 1";

// Deliveries.

pub(super) const RELEASE_LEASE: &str = "DELETE FROM leases WHERE dossier_id = $1 AND holder = $2";

// The backfill's lots.

pub(super) const OPEN_LOT: &str =
    "INSERT INTO lots (lot_key, destination, state, agora_lot, created_at, updated_at) \
     VALUES ($1, $2, 'claimed', NULL, $3, $3)";

pub(super) const LOT_SUBMITTED: &str =
    "UPDATE lots SET state = 'submitted', agora_lot = $2, updated_at = $3 \
     WHERE lot_key = $1";

pub(super) const LOT_SETTLED: &str =
    "UPDATE lots SET state = CASE WHEN $2 THEN 'done' ELSE state END, updated_at = $3 \
     WHERE lot_key = $1";

// Checkpoints and housekeeping.

pub(super) const CHECKPOINT: &str = "SELECT value FROM checkpoints WHERE key = $1";

pub(super) const SET_CHECKPOINT: &str =
    "INSERT INTO checkpoints (key, value, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
     updated_at = excluded.updated_at";

pub(super) const PURGE_PAYLOADS: &str = "UPDATE journal SET masked_payload = NULL \
     WHERE masked_payload IS NOT NULL AND received_at < $1";

// The returns outbox and the backfill reports.

pub(super) const RETURNS_OF: &str =
    "SELECT return_id, atexo_dossier, numero_agora, etat, anomaly_codes, status, attempts, \
     created_at, sent_at, last_error FROM returns_outbox WHERE dossier_id = $1 \
     ORDER BY created_at, return_id";

pub(super) const BACKFILL_REPORT: &str =
    "SELECT gzip_json FROM backfill_reports WHERE report_id = $1";
