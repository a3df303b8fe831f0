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

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::{Dossier, State};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::{Delivered, Operation};
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use super::logic::{
    self, clip, corrupt, db_error, from_json, now, parse_flow, parse_status, parse_system_col,
    to_json, Loaded, Plan, StoredSource,
};
use super::{
    mask_url, Accepted, AcceptedDossier, BackfillProgress, DeadLetter, DeadLetterFilter,
    DeadReason, DeliveryRow, DeliveryStatus, DossierRow, Inbound, InboundRecord, JournalEntry,
    Lease, Ledger, LedgerError, LotLine, LotMember, LotRow, OperationRecord, Replayed, Unreadable,
    UnreadableRow, AGORA,
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

mod outbox;
mod progress;

type Tx = Transaction<'static, Sqlite>;

/// How many ids one statement binds (as a JSON array read with `json_each`).
const IDS_PER_STATEMENT: usize = 500;

/// A delivery (`deliveries v`) whose delivered state is not `Present`: AGORA never confirmed it.
/// The texts are `logic::DELIVERED_NOT_PRESENT`, as serde writes them (a test checks).
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

    /// The dossiers `ids_json` (a JSON array of ids) names, as they stand, by id: one query for
    /// the dossiers, one for their sources (none when all are new).
    async fn load_many(
        tx: &mut Tx,
        ids_json: &str,
    ) -> Result<HashMap<String, Loaded>, LedgerError> {
        let rows = sqlx::query(
            "SELECT dossier_id, desired, desired_version, flow, in_perimeter FROM dossiers \
             WHERE dossier_id IN (SELECT value FROM json_each($1))",
        )
        .bind(ids_json)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dossiers", e))?;
        let mut held = HashMap::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(held);
        }
        let mut sources: HashMap<String, Vec<StoredSource>> = HashMap::with_capacity(rows.len());
        for r in sqlx::query(
            "SELECT s.dossier_id, s.record, s.in_perimeter FROM dossiers d \
             JOIN dossier_sources s ON s.dossier_seq = d.seq \
             WHERE d.dossier_id IN (SELECT value FROM json_each($1)) \
             ORDER BY s.dossier_id, s.system",
        )
        .bind(ids_json)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dossiers", e))?
        {
            let dossier_id: String = get(&r, "dossiers", "dossier_id")?;
            let what = format!("dossier {dossier_id}");
            let record: String = get(&r, &what, "record")?;
            let source = StoredSource {
                record: from_json(&what, &record)?,
                in_perimeter: get(&r, &what, "in_perimeter")?,
            };
            sources.entry(dossier_id).or_default().push(source);
        }
        for row in &rows {
            let dossier_id: String = get(row, "dossiers", "dossier_id")?;
            let what = format!("dossier {dossier_id}");
            let desired: Option<String> = get(row, &what, "desired")?;
            let desired = desired.ok_or_else(|| corrupt(&what, "no desired state"))?;
            let flow: String = get(row, &what, "flow")?;
            let loaded = Loaded {
                desired: from_json(&what, &desired)?,
                desired_version: get(row, &what, "desired_version")?,
                flow: parse_flow(&what, &flow)?,
                in_perimeter: get(row, &what, "in_perimeter")?,
                sources: sources.remove(&dossier_id).unwrap_or_default(),
            };
            held.insert(dossier_id, loaded);
        }
        Ok(held)
    }

    /// Writes the plans of an inbound's records (in record order; a dossier named twice ends as
    /// its last plan leaves it) with one statement per table, each reading a JSON array of rows.
    async fn write_many(
        tx: &mut Tx,
        records: &[InboundRecord],
        plans: &[Plan],
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let at = ts(at);
        let mut rows = Rows::default();
        for (rec, plan) in records.iter().zip(plans) {
            rows.add(&rec.dossier_id, plan);
        }
        // Dossiers first: the other tables refer to them. A new dossier is created at `at`, with
        // the next sequence numbers (the uncorrelated max is read once, before any row goes in;
        // a row that updates an existing dossier leaves a gap); an existing one keeps its
        // creation time and number.
        sqlx::query(
            "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
             created_at, updated_at, seq) \
             SELECT value ->> '$.id', value ->> '$.desired', value ->> '$.version', \
             value ->> '$.flow', value ->> '$.in_perimeter', $2, $2, \
             (SELECT ifnull(max(seq), 0) FROM dossiers) + 1 + key FROM json_each($1) WHERE true \
             ON CONFLICT (dossier_id) DO UPDATE SET desired = excluded.desired, \
             desired_version = excluded.desired_version, flow = excluded.flow, \
             in_perimeter = excluded.in_perimeter, updated_at = excluded.updated_at",
        )
        .bind(to_json("dossiers", &rows.dossiers)?)
        .bind(&at)
        .execute(&mut **tx)
        .await
        .map_err(|e| db_error("dossiers", e))?;
        if !rows.deliveries.is_empty() {
            // A new dossier's delivery starts from nothing known. An existing one is owed again:
            // what it waited for is moot, and a dead dossier revived by a new version starts a
            // fresh series of attempts.
            sqlx::query(concat!(
                "INSERT INTO deliveries (dossier_seq, dossier_id, destination, delivered, \
                 delivered_version, status, attempts, waiting_for, updated_at) \
                 SELECT ",
                seq_of!("value ->> '$.id'"),
                ", value ->> '$.id', $2, $3, 0, value ->> '$.status', 0, '[]', $4 \
                 FROM json_each($1) WHERE true \
                 ON CONFLICT (dossier_seq, destination) DO UPDATE SET \
                 attempts = CASE WHEN deliveries.status = 'dead' THEN 0 \
                            ELSE deliveries.attempts END, \
                 first_failure_at = CASE WHEN deliveries.status = 'dead' THEN NULL \
                                    ELSE deliveries.first_failure_at END, \
                 status = excluded.status, waiting_for = '[]', updated_at = excluded.updated_at"
            ))
            .bind(to_json("deliveries", &rows.deliveries)?)
            .bind(AGORA)
            .bind(to_json("deliveries", &Delivered::Unknown)?)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error("deliveries", e))?;
        }
        if !rows.sources.is_empty() {
            sqlx::query(concat!(
                "INSERT INTO dossier_sources (dossier_seq, dossier_id, system, source_version, \
                 in_perimeter, record, received_at) \
                 SELECT ",
                seq_of!("value ->> '$.id'"),
                ", value ->> '$.id', value ->> '$.system', value ->> '$.version', \
                 value ->> '$.in_perimeter', value ->> '$.record', $2 FROM json_each($1) WHERE true \
                 ON CONFLICT (dossier_seq, system) DO UPDATE SET \
                 source_version = excluded.source_version, in_perimeter = excluded.in_perimeter, \
                 record = excluded.record, received_at = excluded.received_at"
            ))
            .bind(to_json("dossier sources", &rows.sources)?)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error("dossier sources", e))?;
        }
        Ok(())
    }

    /// The dossiers a journal entry shaped, in its records' order, as they stand now.
    async fn linked_dossiers(
        tx: &mut Tx,
        message_id: &str,
    ) -> Result<Vec<AcceptedDossier>, LedgerError> {
        let what = format!("journal entry {message_id}");
        sqlx::query(
            "SELECT d.dossier_id, d.in_perimeter, d.desired_version FROM journal_dossiers jd \
             JOIN dossiers d ON d.dossier_id = jd.dossier_id \
             WHERE jd.message_id = $1 ORDER BY jd.position",
        )
        .bind(message_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .iter()
        .map(|r| {
            Ok(AcceptedDossier {
                dossier_id: get(r, &what, "dossier_id")?,
                in_perimeter: get(r, &what, "in_perimeter")?,
                changed: false,
                desired_version: get(r, &what, "desired_version")?,
            })
        })
        .collect()
    }

    fn delivery_from_row(what: &str, r: &SqliteRow) -> Result<DeliveryRow, LedgerError> {
        let delivered: String = get(r, what, "delivered")?;
        let status: String = get(r, what, "status")?;
        let waiting_for: String = get(r, what, "waiting_for")?;
        Ok(DeliveryRow {
            destination: get(r, what, "destination")?,
            delivered: from_json(what, &delivered)?,
            delivered_version: get(r, what, "delivered_version")?,
            status: parse_status(what, &status)?,
            attempts: get(r, what, "attempts")?,
            last_error: get(r, what, "last_error")?,
            waiting_for: from_json::<Vec<Violation>>(what, &waiting_for)?,
            last_attempt_at: parse_opt_ts(what, get(r, what, "last_attempt_at")?)?,
            replay_id: get(r, what, "replay_id")?,
        })
    }

    fn dead_letter_from_row(r: &SqliteRow) -> Result<DeadLetter, LedgerError> {
        let id: String = get(r, "dead letter", "id")?;
        let what = format!("dead letter {id}");
        let reason: String = get(r, &what, "reason")?;
        let first: String = get(r, &what, "first_failure")?;
        let last: String = get(r, &what, "last_failure")?;
        Ok(DeadLetter {
            dossier_id: get(r, &what, "dossier_id")?,
            destination: get(r, &what, "destination")?,
            reason: from_json(&what, &reason)?,
            attempts: get(r, &what, "attempts")?,
            first_failure: parse_ts(&what, &first)?,
            last_failure: parse_ts(&what, &last)?,
            replayed_at: parse_opt_ts(&what, get(r, &what, "replayed_at")?)?,
            replay_id: get(r, &what, "replay_id")?,
            after_replay: get(r, &what, "after_replay")?,
            id,
        })
    }

    /// Dossiers with their sources and delivery toward AGORA (those found, in no given order).
    async fn read_dossiers(
        conn: &mut SqliteConnection,
        dossier_ids: &[String],
    ) -> Result<Vec<DossierRow>, LedgerError> {
        let mut found = Vec::with_capacity(dossier_ids.len());
        for chunk in dossier_ids.chunks(IDS_PER_STATEMENT) {
            let ids = to_json("dossier ids", &chunk)?;
            let mut sources: HashMap<String, Vec<Dossier>> = HashMap::new();
            for r in sqlx::query(
                "SELECT s.dossier_id, s.record FROM dossiers d \
                 JOIN dossier_sources s ON s.dossier_seq = d.seq \
                 WHERE d.dossier_id IN (SELECT value FROM json_each($1)) \
                 ORDER BY s.dossier_id, s.system",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("dossiers", e))?
            {
                let dossier_id: String = get(&r, "dossiers", "dossier_id")?;
                let what = format!("dossier {dossier_id}");
                let record: String = get(&r, &what, "record")?;
                sources
                    .entry(dossier_id)
                    .or_default()
                    .push(from_json(&what, &record)?);
            }
            let rows = sqlx::query(concat!(
                select_dossiers!(),
                "WHERE d.dossier_id IN (SELECT value FROM json_each($2))"
            ))
            .bind(AGORA)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("dossiers", e))?;
            for r in &rows {
                found.push(Self::dossier_from_row(r, &mut sources)?);
            }
        }
        Ok(found)
    }

    /// Decodes a row of `select_dossiers!()`, taking its sources out of `sources`.
    fn dossier_from_row(
        r: &SqliteRow,
        sources: &mut HashMap<String, Vec<Dossier>>,
    ) -> Result<DossierRow, LedgerError> {
        let dossier_id: String = get(r, "dossier", "dossier_id")?;
        let what = format!("dossier {dossier_id}");
        let desired: Option<String> = get(r, &what, "desired")?;
        let desired: Dossier = from_json(
            &what,
            &desired.ok_or_else(|| corrupt(&what, "no desired state"))?,
        )?;
        let destination: Option<String> = get(r, &what, "destination")?;
        if destination.is_none() {
            return Err(corrupt(&what, "no delivery row"));
        }
        let flow: String = get(r, &what, "flow")?;
        let created_at: String = get(r, &what, "created_at")?;
        let updated_at: String = get(r, &what, "updated_at")?;
        Ok(DossierRow {
            sources: sources.remove(&dossier_id).unwrap_or_default(),
            desired,
            desired_version: get(r, &what, "desired_version")?,
            flow: parse_flow(&what, &flow)?,
            in_perimeter: get(r, &what, "in_perimeter")?,
            delivery: Self::delivery_from_row(&what, r)?,
            lot: get(r, &what, "lot")?,
            created_at: parse_ts(&what, &created_at)?,
            updated_at: parse_ts(&what, &updated_at)?,
            dossier_id,
        })
    }

    /// Dead-letters dossiers toward `destination` (status `Dead`), each with its reason, in two
    /// statements whatever their number; returns the dead letters written, as (dossier, id) (none
    /// for a dossier with no such delivery). With `lot`, only members of that lot, which leave it.
    /// Shared by `dead_letter` and `settle_lot`.
    async fn dead_letter_in(
        tx: &mut Tx,
        dossiers: &[(&str, &DeadReason)],
        destination: &str,
        at: &str,
        lot: Option<&str>,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        #[derive(serde::Serialize)]
        struct Letter<'a> {
            dossier: &'a str,
            id: String,
            code: String,
            reason: String,
        }
        if dossiers.is_empty() {
            return Ok(Vec::new());
        }
        let letters = dossiers
            .iter()
            .map(|(dossier_id, reason)| {
                Ok(Letter {
                    dossier: dossier_id,
                    id: logic::new_id(),
                    code: reason.code(),
                    reason: to_json(&format!("dossier {dossier_id}"), reason)?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        // CROSS JOIN keeps the JSON rows outside: each finds its delivery by primary key.
        let written: Vec<(String, String)> = sqlx::query_as(concat!(
            "INSERT INTO dead_letters (id, dossier_id, destination, code, reason, attempts, \
             first_failure, last_failure, after_replay) \
             SELECT r.value ->> '$.id', v.dossier_id, v.destination, r.value ->> '$.code', \
             r.value ->> '$.reason', v.attempts, COALESCE(v.first_failure_at, $2), $2, \
             v.replay_id \
             FROM json_each($1) AS r CROSS JOIN deliveries AS v \
             WHERE v.dossier_seq = ",
            seq_of!("r.value ->> '$.dossier'"),
            " AND v.destination = $3 \
             AND ($4 IS NULL OR v.lot = $4) \
             RETURNING dossier_id, id"
        ))
        .bind(to_json("dead letters", &letters)?)
        .bind(at)
        .bind(destination)
        .bind(lot)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dead letters", e))?;
        if written.is_empty() {
            return Ok(written);
        }
        let ids: Vec<&str> = written.iter().map(|(d, _)| d.as_str()).collect();
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', updated_at = $2, replay_id = NULL, \
             lot = CASE WHEN $4 IS NULL THEN lot ELSE NULL END \
             WHERE destination = $3 AND dossier_seq IN (SELECT d.seq FROM dossiers d \
             WHERE d.dossier_id IN (SELECT value FROM json_each($1)))",
        )
        .bind(to_json("dead letters", &ids)?)
        .bind(at)
        .bind(destination)
        .bind(lot)
        .execute(&mut **tx)
        .await
        .map_err(|e| db_error("dead letters", e))?;
        Ok(written)
    }

    /// Replays dead letters (rows with `id`, `dossier_id`, `destination`, none replayed yet):
    /// each is marked with a new replay id, which its delivery takes with a fresh run of attempts.
    /// Shared by `replay` and `replay_matching`.
    async fn replay_in(
        tx: &mut Tx,
        letters: &[SqliteRow],
        at: DateTime<Utc>,
    ) -> Result<Vec<Replayed>, LedgerError> {
        let at_text = ts(at);
        let mut replayed = Vec::with_capacity(letters.len());
        for r in letters {
            let id: String = get(r, "dead letter", "id")?;
            let what = format!("dead letter {id}");
            let dossier_id: String = get(r, &what, "dossier_id")?;
            let destination: String = get(r, &what, "destination")?;
            let replay_id = logic::new_id();
            sqlx::query(
                "UPDATE dead_letters SET replayed_at = $2, replay_id = $3 \
                 WHERE id = $1 AND replayed_at IS NULL",
            )
            .bind(&id)
            .bind(&at_text)
            .bind(&replay_id)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            sqlx::query(concat!(
                "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL, \
                 first_failure_at = NULL, waiting_for = '[]', replay_id = $3, updated_at = $4 \
                 WHERE dossier_seq = ",
                seq_of!("$1"),
                " AND destination = $2"
            ))
            .bind(&dossier_id)
            .bind(&destination)
            .bind(&replay_id)
            .bind(&at_text)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            replayed.push(Replayed {
                dead_letter_id: id,
                dossier_id,
                destination,
                replay_id,
                replayed_at: at,
            });
        }
        Ok(replayed)
    }

    /// Settles members of `lot`, each reached at its `version` (`delivered`: what AGORA now
    /// holds, `None` to leave it): delivered if still the desired version, else pending. One
    /// statement; returns (dossier, status afterwards) of the members settled (a line naming a
    /// dossier not in the lot settles nothing).
    async fn settle_members(
        tx: &mut Tx,
        members: &[SettleJson<'_>],
        destination: &str,
        lot: &str,
        at: &str,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        // `+`: neither the lot's index nor the destination's may drive the join (it would scan
        // the JSON rows once per delivery); each JSON row finds its delivery by primary key.
        sqlx::query_as(concat!(
            "UPDATE deliveries SET delivered = COALESCE(r.delivered, deliveries.delivered), \
             delivered_version = max(deliveries.delivered_version, r.version), \
             status = CASE WHEN r.version = (SELECT desired_version FROM dossiers d \
                                             WHERE d.seq = deliveries.dossier_seq) \
                      THEN 'delivered' ELSE 'pending' END, \
             replay_id = CASE WHEN r.version = (SELECT desired_version FROM dossiers d \
                                                WHERE d.seq = deliveries.dossier_seq) \
                         THEN NULL ELSE deliveries.replay_id END, \
             attempts = 0, last_error = NULL, first_failure_at = NULL, waiting_for = '[]', \
             lot = NULL, updated_at = $4 \
             FROM (SELECT ",
            seq_of!("value ->> '$.id'"),
            " AS seq, value ->> '$.delivered' AS delivered, \
                   value ->> '$.version' AS version FROM json_each($1)) AS r \
             WHERE deliveries.dossier_seq = r.seq AND +deliveries.destination = $2 \
             AND +deliveries.lot = $3 \
             RETURNING dossier_id, status"
        ))
        .bind(to_json(&format!("lot {lot}"), &members)?)
        .bind(destination)
        .bind(lot)
        .bind(at)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error(&format!("lot {lot}"), e))
    }

    async fn lot_in(
        conn: &mut SqliteConnection,
        lot_key: &str,
    ) -> Result<Option<LotRow>, LedgerError> {
        let what = format!("lot {lot_key}");
        let Some(row) = sqlx::query("SELECT * FROM lots WHERE lot_key = $1")
            .bind(lot_key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| db_error(&what, e))?
        else {
            return Ok(None);
        };
        let members = sqlx::query(
            "SELECT dossier_id, desired_version FROM lot_members WHERE lot_key = $1 \
             ORDER BY position",
        )
        .bind(lot_key)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error(&what, e))?
        .iter()
        .map(|r| {
            Ok(LotMember {
                dossier_id: get(r, &what, "dossier_id")?,
                desired_version: get(r, &what, "desired_version")?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
        let state: String = get(&row, &what, "state")?;
        let created_at: String = get(&row, &what, "created_at")?;
        let updated_at: String = get(&row, &what, "updated_at")?;
        Ok(Some(LotRow {
            lot_key: lot_key.to_string(),
            destination: get(&row, &what, "destination")?,
            state: logic::parse_lot_state(&what, &state)?,
            agora_lot: get(&row, &what, "agora_lot")?,
            members,
            created_at: parse_ts(&what, &created_at)?,
            updated_at: parse_ts(&what, &updated_at)?,
        }))
    }
}

/// The rows an inbound writes, one per dossier (or per dossier and source), as JSON arrays of
/// objects the statements read with `json_each`; a later plan of the same dossier overwrites an
/// earlier one, as its statements would have.
#[derive(Debug, Default)]
struct Rows<'a> {
    dossiers: Vec<DossierJson<'a>>,
    /// Only the dossiers whose delivery status is (re)set.
    deliveries: Vec<DeliveryJson<'a>>,
    sources: Vec<SourceJson<'a>>,
    /// Where each dossier's rows are.
    at: HashMap<&'a str, (usize, Option<usize>)>,
    source_at: HashMap<(&'a str, &'static str), usize>,
}

/// A lot member to settle (see [`SqliteLedger::settle_members`]).
#[derive(Debug, serde::Serialize)]
struct SettleJson<'a> {
    id: &'a str,
    delivered: Option<&'a str>,
    version: i64,
}

#[derive(Debug, serde::Serialize)]
struct DossierJson<'a> {
    id: &'a str,
    desired: &'a str,
    version: i64,
    flow: &'static str,
    in_perimeter: bool,
}

#[derive(Debug, serde::Serialize)]
struct DeliveryJson<'a> {
    id: &'a str,
    status: &'static str,
}

#[derive(Debug, serde::Serialize)]
struct SourceJson<'a> {
    id: &'a str,
    system: &'static str,
    version: Option<i64>,
    in_perimeter: bool,
    record: &'a str,
}

impl<'a> Rows<'a> {
    fn add(&mut self, dossier_id: &'a str, plan: &'a Plan) {
        let dossier = DossierJson {
            id: dossier_id,
            desired: &plan.desired_json,
            version: plan.desired_version,
            flow: plan.flow.as_str(),
            in_perimeter: plan.in_perimeter,
        };
        let status = plan.status.map(|status| DeliveryJson {
            id: dossier_id,
            status: status.as_str(),
        });
        match self.at.get_mut(dossier_id) {
            Some((d, v)) => {
                self.dossiers[*d] = dossier;
                if let Some(status) = status {
                    match v {
                        Some(v) => self.deliveries[*v] = status,
                        None => {
                            *v = Some(self.deliveries.len());
                            self.deliveries.push(status);
                        }
                    }
                }
            }
            None => {
                let v = status.map(|status| {
                    self.deliveries.push(status);
                    self.deliveries.len() - 1
                });
                self.at.insert(dossier_id, (self.dossiers.len(), v));
                self.dossiers.push(dossier);
            }
        }
        if let Some(source) = &plan.source {
            let row = SourceJson {
                id: dossier_id,
                system: source.system.as_str(),
                version: source.version,
                in_perimeter: source.in_perimeter,
                record: &source.record_json,
            };
            match self.source_at.get(&(dossier_id, row.system)) {
                Some(&i) => self.sources[i] = row,
                None => {
                    self.source_at
                        .insert((dossier_id, row.system), self.sources.len());
                    self.sources.push(row);
                }
            }
        }
    }
}

async fn commit(tx: Tx, what: &str) -> Result<(), LedgerError> {
    tx.commit().await.map_err(|e| db_error(what, e))
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn identity_salt(&self, offer: &super::SaltOffer) -> Result<String, LedgerError> {
        let what = "identity salt";
        let (value, configured) = match offer {
            super::SaltOffer::Configured(v) => (v.as_str(), true),
            super::SaltOffer::Generated(v) => (v.as_str(), false),
        };
        let mut tx = self.begin_write().await?;
        // Concurrent first starts: the second waits on the key, then inserts nothing.
        sqlx::query(
            "INSERT INTO identity (name, value) SELECT 'dossier_salt', $1 \
             WHERE $2 OR NOT EXISTS (SELECT 1 FROM dossiers) ON CONFLICT (name) DO NOTHING",
        )
        .bind(value)
        .bind(configured)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM identity WHERE name = 'dossier_salt'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
        commit(tx, what).await?;
        offer.settle(stored)
    }

    async fn health(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("health", e))
    }

    async fn accept(
        &self,
        inbound: Inbound,
        precedence: &Precedence,
    ) -> Result<Accepted, LedgerError> {
        let mut tx = self.begin_write().await?;
        // The journal entry first, unless this payload was accepted before: one statement for
        // the common case.
        let message_id = logic::new_id();
        let at = now();
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO journal (message_id, system, flow, payload_hash, received_at, request_id, \
             masked_payload) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (system, payload_hash) DO NOTHING RETURNING message_id",
        )
        .bind(&message_id)
        .bind(inbound.system.as_str())
        .bind(inbound.flow.as_str())
        .bind(&inbound.payload_hash)
        .bind(ts(at))
        .bind(&inbound.request_id)
        .bind(&inbound.masked_payload)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error("journal", e))?;
        if inserted.is_none() {
            let message_id: String = sqlx::query_scalar(
                "SELECT message_id FROM journal WHERE system = $1 AND payload_hash = $2",
            )
            .bind(inbound.system.as_str())
            .bind(&inbound.payload_hash)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("journal", e))?;
            let dossiers = Self::linked_dossiers(&mut tx, &message_id).await?;
            tx.rollback().await.map_err(|e| db_error("journal", e))?;
            return Ok(Accepted {
                message_id,
                duplicate: true,
                dossiers,
            });
        }

        // Every record in order, against its dossier as loaded (or as an earlier record of this
        // message left it); a refused record refuses the message (the rollback drops the journal
        // entry too).
        let named: Vec<&str> = inbound
            .records
            .iter()
            .map(|r| r.dossier_id.as_str())
            .collect();
        let mut distinct = named.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let held = Self::load_many(&mut tx, &to_json("dossier ids", &distinct)?).await?;
        let plans = match logic::plan_inbound(&inbound, precedence, held) {
            Ok(plans) => plans,
            Err(e) => {
                tx.rollback().await.map_err(|e| db_error("accept", e))?;
                return Err(e);
            }
        };
        Self::write_many(&mut tx, &inbound.records, &plans, at).await?;
        // A dossier named twice keeps the position of its first record.
        sqlx::query(concat!(
            "INSERT INTO journal_dossiers (message_id, dossier_id, position, dossier_seq) \
             SELECT $1, value, key, ",
            seq_of!("value"),
            " FROM json_each($2) WHERE true ORDER BY key ON CONFLICT DO NOTHING"
        ))
        .bind(&message_id)
        .bind(to_json("journal", &named)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("journal", e))?;
        commit(tx, "accept").await?;
        Ok(Accepted {
            message_id,
            duplicate: false,
            dossiers: inbound
                .records
                .iter()
                .zip(&plans)
                .map(|(rec, plan)| AcceptedDossier {
                    dossier_id: rec.dossier_id.clone(),
                    in_perimeter: plan.in_perimeter,
                    changed: plan.changed,
                    desired_version: plan.desired_version,
                })
                .collect(),
        })
    }

    async fn dossier(&self, dossier_id: &str) -> Result<Option<DossierRow>, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut conn = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        let rows = Self::read_dossiers(&mut conn, &[dossier_id.to_string()]).await?;
        conn.rollback().await.map_err(|e| db_error(&what, e))?;
        Ok(rows.into_iter().next())
    }

    async fn try_lease(
        &self,
        dossier_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LedgerError> {
        let at = now();
        let expires = at + logic::capped(ttl);
        let mut tx = self.begin_unfenced().await?;
        let prev: Option<(String,)> =
            sqlx::query_as("SELECT holder FROM leases WHERE dossier_id = $1")
                .bind(dossier_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error("lease", e))?;
        let taken = sqlx::query(
            "INSERT INTO leases (dossier_id, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (dossier_id) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(dossier_id)
        .bind(holder)
        .bind(ts(expires))
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("lease", e))?
        .rows_affected();
        commit(tx, "lease").await?;
        Ok(logic::lease(
            (taken == 1).then(|| prev.map(|(h,)| h)),
            holder,
        ))
    }

    async fn release(&self, dossier_id: &str, holder: &str) -> Result<(), LedgerError> {
        let mut tx = self.begin_unfenced().await?;
        sqlx::query("DELETE FROM leases WHERE dossier_id = $1 AND holder = $2")
            .bind(dossier_id)
            .bind(holder)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("lease", e))?;
        commit(tx, "lease").await
    }

    async fn record_operation(
        &self,
        dossier_id: &str,
        destination: &str,
        op: &OperationRecord,
        delivered: &Delivered,
        ret: Option<&super::outbox::PendingReturn>,
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(concat!(
            "UPDATE deliveries SET delivered = $3, updated_at = $4 WHERE dossier_seq = ",
            seq_of!("$1"),
            " AND destination = $2"
        ))
        .bind(dossier_id)
        .bind(destination)
        .bind(to_json(&what, delivered)?)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if updated == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        sqlx::query(concat!(
            "INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
             numero_agora, at, replay_id, dossier_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ",
            seq_of!("$1"),
            ")"
        ))
        .bind(dossier_id)
        .bind(destination)
        .bind(op.operation.name())
        .bind(op.status.map(i32::from))
        .bind(&op.outcome)
        .bind(&op.numero_agora)
        .bind(ts(op.at))
        .bind(&op.replay_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        if let Some(ret) = ret {
            outbox::write(&mut tx, dossier_id, ret).await?;
        }
        commit(tx, &what).await
    }

    async fn claim_returns(
        &self,
        limit: u32,
        claim: Duration,
    ) -> Result<Vec<super::outbox::DueReturn>, LedgerError> {
        outbox::claim(self, limit, claim).await
    }

    async fn settle_return(
        &self,
        return_id: &str,
        attempt: &super::outbox::ReturnAttempt,
    ) -> Result<(), LedgerError> {
        outbox::settle(self, return_id, attempt).await
    }

    async fn returns_of(
        &self,
        dossier_id: &str,
    ) -> Result<Vec<super::outbox::ReturnRow>, LedgerError> {
        outbox::of_dossier(self, dossier_id).await
    }

    async fn store_backfill_report(
        &self,
        counts: &serde_json::Value,
        gzip_json: &[u8],
    ) -> Result<String, LedgerError> {
        outbox::store_report(self, counts, gzip_json).await
    }

    async fn backfill_reports(
        &self,
        limit: u32,
    ) -> Result<Vec<super::outbox::ReportMeta>, LedgerError> {
        outbox::reports(self, limit).await
    }

    async fn backfill_report(&self, report_id: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        outbox::report(self, report_id).await
    }

    async fn settle_delivery(
        &self,
        dossier_id: &str,
        destination: &str,
        status: DeliveryStatus,
        desired_version: i64,
        waiting_for: &[Violation],
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin_write().await?;
        // A newer desired version arrived while the worker reconciled an older one: what was
        // reached is recorded, but the dossier stays owed.
        let updated = sqlx::query(concat!(
            "UPDATE deliveries SET \
             status = CASE WHEN $4 < (SELECT desired_version FROM dossiers d \
                                      WHERE d.seq = deliveries.dossier_seq) \
                      THEN 'pending' ELSE $3 END, \
             replay_id = CASE WHEN $4 < (SELECT desired_version FROM dossiers d \
                                         WHERE d.seq = deliveries.dossier_seq) \
                         OR $3 = 'pending' THEN replay_id ELSE NULL END, \
             delivered_version = CASE WHEN $3 = 'delivered' THEN max(delivered_version, $4) \
                                 ELSE delivered_version END, \
             waiting_for = $5, attempts = 0, last_error = NULL, first_failure_at = NULL, \
             updated_at = $6 \
             WHERE dossier_seq = ",
            seq_of!("$1"),
            " AND destination = $2"
        ))
        .bind(dossier_id)
        .bind(destination)
        .bind(status.as_str())
        .bind(desired_version)
        .bind(to_json(&what, &waiting_for)?)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if updated == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        commit(tx, &what).await
    }

    async fn record_failure(
        &self,
        dossier_id: &str,
        destination: &str,
        error: &str,
    ) -> Result<i32, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let at = ts(now());
        let mut tx = self.begin_write().await?;
        let attempts: Option<i32> = sqlx::query_scalar(concat!(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $3, \
             last_attempt_at = $4, first_failure_at = COALESCE(first_failure_at, $4), updated_at = $4 \
             WHERE dossier_seq = ",
            seq_of!("$1"),
            " AND destination = $2 RETURNING attempts"
        ))
        .bind(dossier_id)
        .bind(destination)
        .bind(clip(error, MAX_ERROR_CHARS))
        .bind(&at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        let attempts = attempts.ok_or(LedgerError::NotFound { what: "delivery" })?;
        commit(tx, &what).await?;
        Ok(attempts)
    }

    async fn dead_letter(
        &self,
        dossier_id: &str,
        destination: &str,
        reason: &DeadReason,
    ) -> Result<String, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin_write().await?;
        let (_, id) = Self::dead_letter_in(
            &mut tx,
            &[(dossier_id, reason)],
            destination,
            &ts(now()),
            None,
        )
        .await?
        .pop()
        .ok_or(LedgerError::NotFound { what: "delivery" })?;
        commit(tx, &what).await?;
        Ok(id)
    }

    async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, LedgerError> {
        sqlx::query(concat!(
            "SELECT * FROM dead_letters WHERE ",
            dead_letter_filter!()
        ))
        .bind(&filter.destination)
        .bind(&filter.code)
        .bind(filter.since.map(ts))
        .bind(filter.until.map(ts))
        .bind(filter.include_replayed)
        .bind(&filter.dossier_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("dead letters", e))?
        .iter()
        .map(Self::dead_letter_from_row)
        .collect()
    }

    async fn replay(&self, dead_letter_id: &str) -> Result<Replayed, LedgerError> {
        let what = format!("dead letter {dead_letter_id}");
        let at = now();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT id, dossier_id, destination, replayed_at FROM dead_letters WHERE id = $1",
        )
        .bind(dead_letter_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .ok_or(LedgerError::NotFound {
            what: "dead letter",
        })?;
        if let Some(replayed_at) = parse_opt_ts(&what, get(&row, &what, "replayed_at")?)? {
            return Err(LedgerError::AlreadyReplayed {
                id: dead_letter_id.to_string(),
                dossier_id: get(&row, &what, "dossier_id")?,
                replayed_at,
            });
        }
        let replayed = Self::replay_in(&mut tx, &[row], at).await?;
        commit(tx, &what).await?;
        replayed.into_iter().next().ok_or(LedgerError::NotFound {
            what: "dead letter",
        })
    }

    async fn replay_counted(
        &self,
        filter: &DeadLetterFilter,
        expected: Option<usize>,
    ) -> Result<Vec<Replayed>, LedgerError> {
        let at = now();
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            "SELECT id, dossier_id, destination FROM dead_letters WHERE replayed_at IS NULL AND ",
            dead_letter_filter!()
        ))
        .bind(&filter.destination)
        .bind(&filter.code)
        .bind(filter.since.map(ts))
        .bind(filter.until.map(ts))
        .bind(false)
        .bind(&filter.dossier_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("dead letters", e))?;
        if let Some(expected) = expected.filter(|n| *n != rows.len()) {
            // Dropping the transaction rolls it back (and releases the rows it locked).
            return Err(LedgerError::CountChanged {
                expected,
                found: rows.len(),
            });
        }
        let replayed = Self::replay_in(&mut tx, &rows, at).await?;
        commit(tx, "dead letters").await?;
        Ok(replayed)
    }

    async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        let what = format!("journal of {dossier_id}");
        let mut conn = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        let rows = sqlx::query(concat!(
            "SELECT j.message_id, j.system, j.flow, j.payload_hash, j.received_at, j.request_id \
             FROM journal_dossiers jd JOIN journal j ON j.message_id = jd.message_id \
             WHERE jd.dossier_seq = ",
            seq_of!("$1"),
            " ORDER BY j.received_at, j.message_id"
        ))
        .bind(dossier_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error(&what, e))?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let message_id: String = get(r, &what, "message_id")?;
            let dossier_ids: Vec<String> = sqlx::query_scalar(
                "SELECT dossier_id FROM journal_dossiers WHERE message_id = $1 ORDER BY position",
            )
            .bind(&message_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error(&what, e))?;
            let system: String = get(r, &what, "system")?;
            let flow: String = get(r, &what, "flow")?;
            let received_at: String = get(r, &what, "received_at")?;
            entries.push(JournalEntry {
                message_id,
                system: parse_system_col(&what, &system)?,
                flow: parse_flow(&what, &flow)?,
                payload_hash: get(r, &what, "payload_hash")?,
                received_at: parse_ts(&what, &received_at)?,
                dossier_ids,
                request_id: get(r, &what, "request_id")?,
            });
        }
        conn.rollback().await.map_err(|e| db_error(&what, e))?;
        Ok(entries)
    }

    async fn operations(
        &self,
        dossier_id: &str,
        destination: &str,
    ) -> Result<Vec<OperationRecord>, LedgerError> {
        let what = format!("operations of {dossier_id}");
        sqlx::query(concat!(
            "SELECT operation, http_status, outcome, numero_agora, at, replay_id FROM operations \
             WHERE dossier_seq = ",
            seq_of!("$1"),
            " AND destination = $2 ORDER BY id"
        ))
        .bind(dossier_id)
        .bind(destination)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?
        .iter()
        .map(|r| {
            let operation: String = get(r, &what, "operation")?;
            let status: Option<i32> = get(r, &what, "http_status")?;
            let at: String = get(r, &what, "at")?;
            Ok(OperationRecord {
                operation: logic::parse_operation(&what, &operation)?,
                status: status
                    .map(|s| u16::try_from(s).map_err(|_| corrupt(&what, "bad HTTP status")))
                    .transpose()?,
                outcome: get(r, &what, "outcome")?,
                numero_agora: get(r, &what, "numero_agora")?,
                at: parse_ts(&what, &at)?,
                replay_id: get(r, &what, "replay_id")?,
            })
        })
        .collect()
    }

    async fn pending(
        &self,
        destination: &str,
        quiet_for: Duration,
        limit: i64,
    ) -> Result<Vec<String>, LedgerError> {
        let cutoff = now() - logic::capped(quiet_for);
        // Lot members and claimable backfill dossiers are the lots' to deliver.
        sqlx::query_scalar(concat!(
            "SELECT v.dossier_id FROM deliveries v JOIN dossiers d ON d.seq = v.dossier_seq \
             WHERE v.destination = $1 AND v.status = 'pending' AND v.updated_at <= $3 \
             AND v.lot IS NULL AND NOT (d.flow = 'backfill' AND d.in_perimeter AND ",
            not_present!(),
            ") ORDER BY v.updated_at, v.dossier_id LIMIT $2"
        ))
        .bind(destination)
        .bind(limit.max(0))
        .bind(ts(cutoff))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("pending", e))
    }

    async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError> {
        let cutoff = now() - logic::capped(retention);
        let mut tx = self.begin_write().await?;
        let purged = sqlx::query(
            "UPDATE journal SET masked_payload = NULL \
             WHERE masked_payload IS NOT NULL AND received_at < $1",
        )
        .bind(ts(cutoff))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("purge", e))?
        .rows_affected();
        commit(tx, "purge").await?;
        Ok(purged)
    }

    async fn sessions(&self, states: &[State]) -> Result<Vec<SessionRef>, LedgerError> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT DISTINCT f, a, s FROM ( \
               SELECT json_extract(desired, '$.training.numero_formation') AS f, \
                      json_extract(desired, '$.training.numero_action') AS a, \
                      json_extract(desired, '$.training.numero_session') AS s \
               FROM dossiers WHERE in_perimeter = 1 AND desired IS NOT NULL \
               AND json_extract(desired, '$.state') IN (SELECT value FROM json_each($1))) \
             WHERE f IS NOT NULL AND a IS NOT NULL AND s IS NOT NULL",
        )
        .bind(to_json("states", &states)?)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("sessions", e))?;
        Ok(logic::sessions(rows))
    }

    async fn dossiers(&self, dossier_ids: &[String]) -> Result<Vec<DossierRow>, LedgerError> {
        let mut conn = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error("dossiers", e))?;
        let rows = Self::read_dossiers(&mut conn, dossier_ids).await?;
        conn.rollback().await.map_err(|e| db_error("dossiers", e))?;
        Ok(rows)
    }

    async fn deliveries(
        &self,
        destination: &str,
        dossier_ids: &[String],
    ) -> Result<Vec<(String, DeliveryRow)>, LedgerError> {
        let mut conn = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error("deliveries", e))?;
        let mut found = Vec::with_capacity(dossier_ids.len());
        for chunk in dossier_ids.chunks(IDS_PER_STATEMENT) {
            for r in sqlx::query(concat!(
                "SELECT v.dossier_id, ",
                delivery_columns!(),
                // CROSS JOIN: the named dossiers drive; left to itself, SQLite may walk every
                // delivery of the destination instead.
                "FROM dossiers d CROSS JOIN deliveries v ON v.dossier_seq = d.seq \
                 WHERE v.destination = $1 AND d.desired IS NOT NULL \
                 AND d.dossier_id IN (SELECT value FROM json_each($2))"
            ))
            .bind(destination)
            .bind(to_json("dossier ids", &chunk)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("deliveries", e))?
            {
                let dossier_id: String = get(&r, "deliveries", "dossier_id")?;
                let what = format!("dossier {dossier_id}");
                found.push((dossier_id, Self::delivery_from_row(&what, &r)?));
            }
        }
        conn.rollback()
            .await
            .map_err(|e| db_error("deliveries", e))?;
        Ok(found)
    }

    async fn claim_lot(
        &self,
        destination: &str,
        lot_key: &str,
        limit: i64,
    ) -> Result<Option<LotRow>, LedgerError> {
        let what = format!("lot {lot_key}");
        let at = ts(now());
        let mut tx = self.begin_write().await?;
        // The lot first: deliveries.lot refers to it.
        sqlx::query(
            "INSERT INTO lots (lot_key, destination, state, agora_lot, created_at, updated_at) \
             VALUES ($1, $2, 'claimed', NULL, $3, $3)",
        )
        .bind(lot_key)
        .bind(destination)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        let claimed = sqlx::query(concat!(
            "UPDATE deliveries SET lot = $1 WHERE destination = $2 AND dossier_seq IN ( \
             SELECT v.dossier_seq FROM deliveries v JOIN dossiers d ON d.seq = v.dossier_seq \
             WHERE v.destination = $2 AND ",
            claimable!(),
            " AND NOT EXISTS (SELECT 1 FROM leases l \
                              WHERE l.dossier_id = v.dossier_id AND l.expires_at > $3) \
             ORDER BY v.updated_at, v.dossier_id LIMIT $4)"
        ))
        .bind(lot_key)
        .bind(destination)
        .bind(&at)
        .bind(limit.max(0))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await.map_err(|e| db_error(&what, e))?;
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO lot_members (lot_key, position, dossier_id, desired_version, \
             dossier_seq) \
             SELECT $1, row_number() OVER (ORDER BY v.updated_at, v.dossier_id) - 1, \
                    d.dossier_id, d.desired_version, d.seq \
             FROM deliveries v JOIN dossiers d ON d.seq = v.dossier_seq \
             WHERE v.lot = $1 AND v.destination = $2",
        )
        .bind(lot_key)
        .bind(destination)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        let lot = Self::lot_in(&mut tx, lot_key).await?;
        commit(tx, &what).await?;
        Ok(lot)
    }

    async fn lot(&self, lot_key: &str) -> Result<Option<LotRow>, LedgerError> {
        let what = format!("lot {lot_key}");
        let mut conn = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        let lot = Self::lot_in(&mut conn, lot_key).await?;
        conn.rollback().await.map_err(|e| db_error(&what, e))?;
        Ok(lot)
    }

    async fn open_lots(&self, destination: &str) -> Result<Vec<LotRow>, LedgerError> {
        let mut conn = self.pool.begin().await.map_err(|e| db_error("lots", e))?;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT lot_key FROM lots WHERE destination = $1 AND state <> 'done' \
             ORDER BY created_at, lot_key",
        )
        .bind(destination)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error("lots", e))?;
        let mut lots = Vec::with_capacity(keys.len());
        for key in &keys {
            lots.extend(Self::lot_in(&mut conn, key).await?);
        }
        conn.rollback().await.map_err(|e| db_error("lots", e))?;
        Ok(lots)
    }

    async fn lot_submitted(&self, lot_key: &str, agora_lot: &str) -> Result<(), LedgerError> {
        let what = format!("lot {lot_key}");
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE lots SET state = 'submitted', agora_lot = $2, updated_at = $3 \
             WHERE lot_key = $1",
        )
        .bind(lot_key)
        .bind(agora_lot)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if updated == 0 {
            return Err(LedgerError::NotFound { what: "lot" });
        }
        commit(tx, &what).await
    }

    async fn settle_lot(
        &self,
        lot_key: &str,
        lines: &[LotLine],
        done: bool,
    ) -> Result<Vec<String>, LedgerError> {
        let what = format!("lot {lot_key}");
        let at = ts(now());
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT destination, agora_lot FROM lots WHERE lot_key = $1")
            .bind(lot_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?
            .ok_or(LedgerError::NotFound { what: "lot" })?;
        let destination: String = get(&row, &what, "destination")?;
        let agora_lot: Option<String> = get(&row, &what, "agora_lot")?;
        let lines = logic::lot_lines(agora_lot.as_deref().unwrap_or(lot_key), lines)?;
        let mut pending = Vec::new();

        // Accepted and nothing-owed lines: one statement settles them all.
        let members: Vec<SettleJson<'_>> = lines
            .accepted
            .iter()
            .map(|line| SettleJson {
                id: line.dossier_id,
                delivered: Some(&line.delivered_json),
                version: line.version,
            })
            .chain(lines.nothing_owed.iter().map(|&(id, version)| SettleJson {
                id,
                delivered: None,
                version,
            }))
            .collect();
        let settled = Self::settle_members(&mut tx, &members, &destination, lot_key, &at).await?;
        let mut in_lot = std::collections::HashSet::with_capacity(settled.len());
        for (dossier_id, status) in settled {
            if status == DeliveryStatus::Pending.as_str() {
                pending.push(dossier_id.clone());
            }
            in_lot.insert(dossier_id);
        }
        // The trace of each accepted line that settled a member, in line order.
        #[derive(serde::Serialize)]
        struct OperationJson<'a> {
            id: &'a str,
            outcome: &'a str,
            numero: &'a str,
        }
        let operations: Vec<OperationJson<'_>> = lines
            .accepted
            .iter()
            .filter(|line| in_lot.contains(line.dossier_id))
            .map(|line| OperationJson {
                id: line.dossier_id,
                outcome: &line.outcome,
                numero: line.numero_agora,
            })
            .collect();
        if !operations.is_empty() {
            sqlx::query(concat!(
                "INSERT INTO operations (dossier_id, destination, operation, http_status, \
                 outcome, numero_agora, at, dossier_seq) \
                 SELECT value ->> '$.id', $2, $3, 202, value ->> '$.outcome', \
                 value ->> '$.numero', $4, ",
                seq_of!("value ->> '$.id'"),
                " FROM json_each($1) ORDER BY key"
            ))
            .bind(to_json(&what, &operations)?)
            .bind(&destination)
            .bind(Operation::Create.name())
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        }
        Self::dead_letter_in(&mut tx, &lines.dead, &destination, &at, Some(lot_key)).await?;
        if !lines.released.is_empty() {
            // `+lot`: each released member is found by key, instead of walking the whole lot.
            let released: Vec<(String, String)> = sqlx::query_as(
                "UPDATE deliveries SET lot = NULL \
                 WHERE destination = $2 AND +lot = $3 AND dossier_seq IN (SELECT d.seq \
                 FROM dossiers d WHERE d.dossier_id IN (SELECT value FROM json_each($1))) \
                 RETURNING dossier_id, status",
            )
            .bind(to_json(&what, &lines.released)?)
            .bind(&destination)
            .bind(lot_key)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            pending.extend(
                released
                    .into_iter()
                    .filter(|(_, status)| status == DeliveryStatus::Pending.as_str())
                    .map(|(dossier_id, _)| dossier_id),
            );
        }
        if done {
            // The members the report did not name leave the lot too.
            let left: Vec<String> = sqlx::query_scalar::<_, Option<String>>(
                "UPDATE deliveries SET lot = NULL WHERE lot = $1 RETURNING \
                 CASE WHEN status = 'pending' THEN dossier_id END",
            )
            .bind(lot_key)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?
            .into_iter()
            .flatten()
            .collect();
            pending.extend(left);
        }
        sqlx::query(
            "UPDATE lots SET state = CASE WHEN $2 THEN 'done' ELSE state END, updated_at = $3 \
             WHERE lot_key = $1",
        )
        .bind(lot_key)
        .bind(done)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await?;
        pending.sort_unstable();
        Ok(pending)
    }

    async fn backfill_progress(&self, destination: &str) -> Result<BackfillProgress, LedgerError> {
        // CROSS JOIN keeps SQLite on the pending deliveries (deliveries_by_status) as the outer
        // loop; left to itself it may scan every dossier of the flow (seconds at a million).
        // `+destination`: lot members are counted on deliveries_by_lot, not among every delivery.
        let row = sqlx::query(concat!(
            "SELECT \
             (SELECT count(*) FROM deliveries v CROSS JOIN dossiers d ON d.seq = v.dossier_seq \
              WHERE v.destination = $1 AND ",
            claimable!(),
            ") AS claimable, \
             (SELECT count(*) FROM deliveries WHERE +destination = $1 AND lot IS NOT NULL) \
              AS in_lots, \
             (SELECT count(*) FROM lots WHERE destination = $1 AND state <> 'done') AS open_lots, \
             (SELECT count(*) FROM deliveries v CROSS JOIN dossiers d ON d.seq = v.dossier_seq \
              WHERE v.destination = $1 AND d.flow = 'backfill' AND v.status = 'pending' \
              AND v.lot IS NULL AND NOT (d.in_perimeter AND ",
            not_present!(),
            ")) AS pending_other"
        ))
        .bind(destination)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_error("backfill progress", e))?;
        let count = |col: &str| -> Result<u64, LedgerError> {
            let n: i64 = get(&row, "backfill progress", col)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(BackfillProgress {
            claimable: count("claimable")?,
            in_lots: count("in_lots")?,
            open_lots: count("open_lots")?,
            pending_other: count("pending_other")?,
        })
    }

    async fn lot_progress(
        &self,
        destination: &str,
        limit: u32,
    ) -> Result<Vec<super::progress::LotProgress>, LedgerError> {
        progress::lots(self, destination, limit).await
    }

    async fn input_progress(
        &self,
        limit: u32,
    ) -> Result<Vec<super::progress::InputProgress>, LedgerError> {
        progress::inputs(self, limit).await
    }

    async fn checkpoint(&self, key: &str) -> Result<Option<i64>, LedgerError> {
        sqlx::query_scalar("SELECT value FROM checkpoints WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("checkpoint", e))
    }

    async fn set_checkpoint(&self, key: &str, value: i64) -> Result<(), LedgerError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO checkpoints (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("checkpoint", e))?;
        commit(tx, "checkpoint").await
    }

    async fn search(
        &self,
        filter: &super::search::SearchFilter,
    ) -> Result<super::search::SearchPage, LedgerError> {
        let ids = super::search::sqlite_ids(&self.pool, filter).await?;
        super::search::page(self, filter, ids).await
    }

    async fn session_numbers(&self) -> Result<Vec<String>, LedgerError> {
        super::search::sqlite_sessions(&self.pool).await
    }

    async fn activity(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<super::search::HourActivity>, LedgerError> {
        super::search::sqlite_activity(&self.pool, since).await
    }

    async fn record_unreadable(&self, u: &Unreadable) -> Result<(), LedgerError> {
        let what = "unreadable message";
        let at = ts(now());
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO unreadable (id, system, digest, context, masked_item, violations, \
             first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (system, digest) DO UPDATE SET last_seen = excluded.last_seen, \
             seen = unreadable.seen + 1",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(u.system.as_str())
        .bind(u.digest())
        .bind(u.context.to_string())
        .bind(u.masked_item.as_ref().map(serde_json::Value::to_string))
        .bind(to_json(what, &u.violations)?)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
        commit(tx, what).await
    }

    async fn unreadable(
        &self,
        system: Option<passerelle_adapters::canonical::System>,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<UnreadableRow>, LedgerError> {
        let what = "unreadable messages";
        let rows = sqlx::query(
            "SELECT id, system, context, masked_item, violations, first_seen, last_seen, seen \
             FROM unreadable WHERE ($1 IS NULL OR system = $1) AND ($2 IS NULL OR last_seen >= $2) \
             ORDER BY last_seen DESC, id DESC LIMIT $3",
        )
        .bind(system.map(|s| s.as_str()))
        .bind(since.map(ts))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(what, e))?;
        rows.iter()
            .map(|r| {
                let system: String = get(r, what, "system")?;
                let context: String = get(r, what, "context")?;
                let item: Option<String> = get(r, what, "masked_item")?;
                let violations: String = get(r, what, "violations")?;
                let first: String = get(r, what, "first_seen")?;
                let last: String = get(r, what, "last_seen")?;
                Ok(UnreadableRow {
                    id: get(r, what, "id")?,
                    system: parse_system_col(what, &system)?,
                    context: from_json(what, &context)?,
                    masked_item: item.map(|i| from_json(what, &i)).transpose()?,
                    violations: from_json(what, &violations)?,
                    first_seen: parse_ts(what, &first)?,
                    last_seen: parse_ts(what, &last)?,
                    seen: get(r, what, "seen")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::str::FromStr;

    use passerelle_adapters::canonical::State;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::super::conformance::{inbound, ouiform, p, record};
    use super::logic::DELIVERED_NOT_PRESENT;
    use super::{Ledger, SqliteLedger};

    /// A ledger written before the dossier sequence numbers keeps its journal, its operations, its
    /// lots, its sources and its deliveries readable by dossier after the migrations (4 and 5),
    /// and new dossiers number after the old.
    #[tokio::test]
    async fn the_sequence_migration_keeps_what_an_older_ledger_holds() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/ledger.db", dir.path().display());
        let older = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::from_str(&url)
                    .expect("url")
                    .create_if_missing(true),
            )
            .await
            .expect("older ledger");
        let mut before = sqlx::migrate!("./migrations/sqlite");
        let seq = before
            .migrations
            .iter()
            .position(|m| m.description.contains("dossier seq"))
            .expect("the sequence migration");
        before.migrations = Cow::Owned(before.migrations[..seq].to_vec());
        before.run(&older).await.expect("older migrations");
        let t = "2025-01-01T00:00:00.000000Z";
        let source = serde_json::to_string(&record("d1", ouiform(State::Registered)).record)
            .expect("a source record");
        sqlx::raw_sql(&format!(
            "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
             created_at, updated_at) VALUES ('d1', '{source}', 1, 'sync', 1, '{t}', '{t}'), \
             ('d2', '{source}', 1, 'backfill', 1, '{t}', '{t}'); \
             INSERT INTO journal (message_id, system, flow, payload_hash, received_at) \
             VALUES ('m1', 'atexo-sem', 'backfill', 'h1', '{t}'); \
             INSERT INTO journal_dossiers (message_id, dossier_id, position) \
             VALUES ('m1', 'd2', 0), ('m1', 'd1', 1); \
             INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
             numero_agora, at) VALUES ('d2', 'agora', 'search', 200, 'absent', NULL, '{t}'), \
             ('d1', 'agora', 'create', 201, 'created', 'A1', '{t}'), \
             ('d2', 'agora', 'create', 201, 'created', 'A2', '{t}'); \
             INSERT INTO lots (lot_key, destination, state, agora_lot, created_at, updated_at) \
             VALUES ('L1', 'agora', 'done', 'LOT1', '{t}', '{t}'); \
             INSERT INTO lot_members (lot_key, position, dossier_id, desired_version) \
             VALUES ('L1', 0, 'd2', 1), ('L1', 1, 'd1', 1); \
             INSERT INTO dossier_sources (dossier_id, system, source_version, in_perimeter, \
             record, received_at) VALUES ('d1', 'ouiform', 3, 1, '{source}', '{t}'), \
             ('d2', 'ouiform', 4, 1, '{source}', '{t}'); \
             INSERT INTO deliveries (dossier_id, destination, delivered, delivered_version, \
             status, attempts, waiting_for, updated_at, lot) \
             VALUES ('d1', 'agora', '{{\"kind\":\"unknown\"}}', 0, 'pending', 2, '[]', '{t}', NULL), \
             ('d2', 'agora', '{{\"kind\":\"unknown\"}}', 0, 'pending', 0, '[]', '{t}', 'L1');"
        ))
        .execute(&older)
        .await
        .expect("older rows");
        older.close().await;

        let ledger = SqliteLedger::connect(&url).await.expect("migrated ledger");
        let journal = ledger.journal("d1").await.expect("journal");
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].dossier_ids, ["d2", "d1"]);
        let operations = ledger.operations("d2", "agora").await.expect("operations");
        let outcomes: Vec<&str> = operations.iter().map(|o| o.outcome.as_str()).collect();
        assert_eq!(outcomes, ["absent", "created"]);
        assert_eq!(operations[1].numero_agora.as_deref(), Some("A2"));
        let lot = ledger.lot("L1").await.expect("lot").expect("the lot");
        let members: Vec<&str> = lot.members.iter().map(|m| m.dossier_id.as_str()).collect();
        assert_eq!(members, ["d2", "d1"]);
        let rows = ledger
            .dossiers(&["d1".to_string(), "d2".to_string()])
            .await
            .expect("dossiers");
        assert_eq!(rows.len(), 2);
        for row in &rows {
            assert_eq!(row.sources.len(), 1, "{}: its source", row.dossier_id);
            assert_eq!(row.delivery.status, super::DeliveryStatus::Pending);
            let lot = (row.dossier_id == "d2").then_some("L1");
            assert_eq!(row.lot.as_deref(), lot, "{}", row.dossier_id);
        }
        let d1 = rows.iter().find(|r| r.dossier_id == "d1").expect("d1");
        assert_eq!(d1.delivery.attempts, 2);
        for table in [
            "dossiers",
            "journal_dossiers",
            "lot_members",
            "operations",
            "dossier_sources",
            "deliveries",
        ] {
            let column = if table == "dossiers" {
                "seq"
            } else {
                "dossier_seq"
            };
            let unnumbered: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} WHERE {column} IS NULL"
            ))
            .fetch_one(&ledger.pool)
            .await
            .expect("count");
            assert_eq!(unnumbered, 0, "{table}");
        }
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
                .fetch_all(&ledger.pool)
                .await
                .expect("indexes");
        for gone in [
            "journal_dossiers_by_dossier",
            "lot_members_by_dossier",
            "operations_by_dossier",
        ] {
            assert!(!indexes.iter().any(|i| i == gone), "{gone} is still there");
        }
        // Nothing but the dossiers themselves is keyed by the (random) dossier id any more.
        for table in ["deliveries", "dossier_sources"] {
            let leading: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT (SELECT name FROM pragma_index_info(l.name) WHERE seqno = 0) \
                 FROM pragma_index_list('{table}') l"
            ))
            .fetch_all(&ledger.pool)
            .await
            .expect("index columns");
            assert!(!leading.is_empty(), "{table} has its keys");
            assert!(
                !leading.iter().any(|c| c == "dossier_id"),
                "{table} is still indexed by dossier id: {leading:?}"
            );
        }
        for kept in [
            "dossiers_by_seq",
            "journal_dossiers_by_seq",
            "lot_members_by_seq",
            "operations_by_seq",
        ] {
            assert!(indexes.iter().any(|i| i == kept), "{kept} is missing");
        }
        ledger
            .accept(
                inbound("h-new", record("d3", ouiform(State::Registered))),
                &p(),
            )
            .await
            .expect("a new dossier");
        let numbers: Vec<(String, i64)> =
            sqlx::query_as("SELECT dossier_id, seq FROM dossiers ORDER BY dossier_id")
                .fetch_all(&ledger.pool)
                .await
                .expect("numbers");
        assert_eq!(numbers[2].0, "d3");
        assert!(
            numbers[2].1 > numbers[0].1.max(numbers[1].1),
            "the new dossier numbers after the old: {numbers:?}"
        );
        assert_eq!(ledger.journal("d3").await.expect("journal").len(), 1);
    }

    #[test]
    fn not_present_spells_the_stored_texts() {
        for text in DELIVERED_NOT_PRESENT {
            assert!(not_present!().contains(&format!("'{text}'")), "{text}");
        }
    }
}
