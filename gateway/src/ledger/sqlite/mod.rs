//! The embedded ledger: one SQLite file (`sqlite://./data/passerelle.db` by default).
//!
//! WAL journal (readers never wait for the writer), `synchronous = FULL` (a committed message
//! survives a power cut: 202 means durable), foreign keys on, and a busy timeout. All writes go
//! through one connection (writers queue on the pool) and every writing transaction starts with
//! `BEGIN IMMEDIATE`: it takes the write lock up front, so a writer in another process (an
//! operator's command on the same file) waits up to the busy timeout instead of failing when a
//! read transaction tries to upgrade. This serialisation is what makes `accept` and `try_lease`
//! atomic here.
//!
//! Timestamps are stored as fixed-width UTC text (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), so that text
//! order is time order in comparisons and indexes.
//!
//! This module holds what every role uses: the connection (one writer, a pool of readers) and its migrations, the transactions, the SQL
//! fragments (macros, defined before the role modules so that they see them) and the
//! ledger's role traits, implemented by `impl_roles!` (`ledger/roles.rs`, shared by both
//! backends), each operation delegating to the function of the same name in its role's file:
//!
//! - `intake`: what came in: the identity salt, `accept`, the journal, the dossier reads
//!   (`dossier`, `dossiers`) and the unreadable messages;
//! - `deliveries`: the way out: leases, `record_operation`, `settle_delivery`,
//!   `record_failure`, and the reads of delivery state (`operations`, `pending`, `sessions`,
//!   `deliveries`);
//! - `dead_letters`: `dead_letter`, `dead_letters`, `replay`, `replay_counted`;
//! - `lots`: the backfill's lots (`claim_lot`, `lot`, `open_lots`, `lot_submitted`,
//!   `settle_lot`) and `backfill_progress`;
//! - `checkpoints`: `checkpoint`, `set_checkpoint` and `purge_payloads` (housekeeping that
//!   belongs to no flow);
//! - `outbox` (the returns and the backfill reports) and `progress` (the console's lots and
//!   inputs), which predate this split.
//!
//! Borderline choices: `identity_salt` is intake (it names the dossiers that come in);
//! `operations` and `sessions` are deliveries (they read what was, or is to be, delivered);
//! `backfill_progress` is lots (it counts the lots' flow); `purge_payloads` is checkpoints (the
//! journal's retention, run by a singleton like the checkpoints' writers). The few operations
//! that only delegate elsewhere (`health`, the returns, the reports, the progress reads and the
//! operators' search) are delegated the same way, by `impl_roles!`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::State;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::stored::{corrupt, db_error, now};
use super::{
    mask_url, Accepted, BackfillProgress, DeadLetter, DeadLetterFilter, DeadReason, DeliveryRow,
    DeliveryStatus, DossierRow, Inbound, JournalEntry, Lease, Ledger, LedgerError, LotLine, LotRow,
    OperationRecord, Replayed, Unreadable, UnreadableRow,
};
use crate::ledger::sql;
use crate::ledger::{
    CheckpointLedger, DeadLetterLedger, DeliveryLedger, IntakeLedger, LotLedger, OutboxLedger,
    ProgressLedger, SearchLedger,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for the write lock before the ledger is reported unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Reading connections: readers run in parallel under WAL, beside the one writer.
const MAX_READERS: u32 = 8;
/// The writer's page cache, in KiB (SQLite's `cache_size` takes a negative KiB count). With the
/// default 2 MiB, every random dossier-keyed index leaf misses once the ledger outgrows it and
/// each miss is a `pread` copy; the writer is the connection that walks those indexes all day.
/// Readers keep the default: there are several of them and they read little.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// WAL pages between automatic checkpoints (SQLite's default is 1,000, 4 MiB). Dossier-keyed
/// indexes take random page writes; the longer a page stays in the WAL, the more commits it
/// absorbs before the checkpoint copies it once into the database file.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 8_000;
/// The longest error text kept with a delivery.
const MAX_ERROR_CHARS: usize = 2000;

/// The SQLite ledger (embedded mode).
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    /// Read-only work.
    pool: SqlitePool,
    /// The one writing connection. SQLite admits one writer at a time anyway; queueing writers
    /// on the pool (first come, first served) rather than on SQLite's busy handler (which sleeps
    /// and polls) keeps commits back to back, and lets that one connection keep a large cache.
    writer: SqlitePool,
}

type Tx = Transaction<'static, Sqlite>;

/// How many ids one statement binds (as a JSON array read with `json_each`).
const IDS_PER_STATEMENT: usize = 500;

/// A delivery (`deliveries v`) whose delivered state is not `Present`: AGORA never confirmed it.
/// The texts are `planning::DELIVERED_NOT_PRESENT`, as serde writes them (a test checks).
macro_rules! not_present {
    () => {
        r#"v.delivered IN ('{"kind":"unknown"}', '{"kind":"absent"}')"#
    };
}

/// A delivery a backfill lot may take (`deliveries v` joined with its `dossiers d`), leases aside.
macro_rules! claimable {
    () => {
        concat!(
            "d.flow = 'backfill' AND d.in_perimeter AND v.status = 'pending' AND v.lot IS NULL AND ",
            not_present!()
        )
    };
}

/// The columns of `deliveries v` that [`SqliteLedger::delivery_from_row`] reads.
macro_rules! delivery_columns {
    () => {
        "v.destination, v.delivered, v.delivered_version, v.status, v.attempts, v.last_error, \
         v.waiting_for, v.last_attempt_at, v.lot, v.replay_id "
    };
}

/// The sequence number of the dossier whose id is the SQL expression `$id`: what
/// `journal_dossiers`, `lot_members` and `operations` are indexed by (migration 4), and
/// `deliveries` and `dossier_sources` keyed by (migration 5).
macro_rules! seq_of {
    ($id:literal) => {
        concat!("(SELECT seq FROM dossiers WHERE dossier_id = ", $id, ")")
    };
}

/// The columns [`SqliteLedger::dossier_from_row`] reads: dossiers with their delivery toward
/// `$1`; the caller appends the `WHERE`.
macro_rules! select_dossiers {
    () => {
        concat!(
            "SELECT d.dossier_id, d.desired, d.desired_version, d.flow, d.in_perimeter, \
             d.created_at, d.updated_at, ",
            delivery_columns!(),
            "FROM dossiers d LEFT JOIN deliveries v \
             ON v.dossier_seq = d.seq AND v.destination = $1 "
        )
    };
}

/// The `WHERE` conditions of a dead-letter filter: `$1` destination, `$2` code, `$3` since, `$4`
/// until, `$5` include replayed, `$6` dossier (each `NULL` for "any"), then the order.
macro_rules! dead_letter_filter {
    () => {
        "($1 IS NULL OR destination = $1) AND ($2 IS NULL OR code = $2) AND \
         ($3 IS NULL OR last_failure >= $3) AND ($4 IS NULL OR last_failure < $4) AND \
         ($5 OR replayed_at IS NULL) AND ($6 IS NULL OR dossier_id = $6) \
         ORDER BY last_failure, id"
    };
}

mod checkpoints;
mod dead_letters;
mod deliveries;
mod intake;
mod lots;
mod outbox;
mod progress;

/// Fixed-width UTC text: text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(what: &str, s: &str) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(what, format!("bad timestamp: {e}")))
}

fn parse_opt_ts(what: &str, s: Option<String>) -> Result<Option<DateTime<Utc>>, LedgerError> {
    s.map(|s| parse_ts(what, &s)).transpose()
}

fn get<'r, T>(row: &'r SqliteRow, what: &str, col: &str) -> Result<T, LedgerError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(col).map_err(|e| db_error(what, e))
}

impl SqliteLedger {
    /// Opens (creating the file and its directory if missing) and migrates the ledger at `url`
    /// (`sqlite://path`). An in-memory database is refused: each pooled connection would see its own.
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        let masked = mask_url(url);
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path.contains(":memory:") || path.starts_with("file::memory") {
            return Err(LedgerError::Unavailable(format!(
                "ledger.url {masked}: the SQLite ledger needs a file, not an in-memory database"
            )));
        }
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    LedgerError::Unavailable(format!(
                        "ledger.url {masked}: cannot create the directory {}: {e}",
                        dir.display()
                    ))
                })?;
            }
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| LedgerError::Unavailable(format!("ledger.url {masked}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                    // A statement that writes a batch's rows keeps the pages it changes in a
                    // statement journal, to undo itself alone if it fails. Past 64 KiB SQLite
                    // spills that journal to a temporary file: one more write of every page a
                    // batch touches. In memory it costs at most a batch's pages, for a statement.
                    .pragma("temp_store", "MEMORY"),
            )
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: {e}")))?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: migration: {e}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: {e}")))?;
        Ok(Self { pool, writer })
    }

    /// A writing transaction: the write lock is taken at `BEGIN`. Within a fenced run
    /// ([`super::fence`]), it first checks that the run still holds its lease.
    async fn begin_write(&self) -> Result<Tx, LedgerError> {
        let mut tx = self.begin_unfenced().await?;
        if let Some(f) = super::fence::current() {
            // SQLite is in this process: its clock is the process's.
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM leases WHERE dossier_id = $1 AND holder = $2 AND expires_at > $3",
            )
            .bind(&f.key)
            .bind(&f.holder)
            .bind(ts(now()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error("lease", e))?;
            if held.is_none() {
                return Err(LedgerError::LeaseLost { key: f.key });
            }
        }
        Ok(tx)
    }

    /// A writing transaction that no lease fences: the leases' own writes.
    async fn begin_unfenced(&self) -> Result<Tx, LedgerError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("begin", e))
    }
}

async fn commit(tx: Tx, what: &str) -> Result<(), LedgerError> {
    tx.commit().await.map_err(|e| db_error(what, e))
}

impl_roles!(SqliteLedger, search: (sqlite_ids, sqlite_sessions, sqlite_activity));

#[cfg(test)]
mod tests;
