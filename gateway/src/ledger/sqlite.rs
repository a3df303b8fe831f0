//! The embedded ledger: one SQLite file (`sqlite://./data/passerelle.db` by default).
//!
//! WAL journal (readers never wait for the writer), `synchronous = FULL` (a committed message
//! survives a power cut: 202 means durable), foreign keys on, and a busy timeout. Every writing
//! transaction starts with `BEGIN IMMEDIATE`: it takes the write lock up front, so writers queue
//! behind one another (waiting up to the busy timeout) instead of failing when a read transaction
//! tries to upgrade. This serialisation is what makes `accept` and `try_lease` atomic here.
//!
//! Timestamps are stored as fixed-width UTC text (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), so that text
//! order is time order in comparisons and indexes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::Dossier;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::Violation;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::logic::{
    self, clip, corrupt, db_error, from_json, now, parse_flow, parse_status, parse_system_col,
    to_json, Loaded, Plan, PlanError, StoredSource,
};
use super::{
    mask_url, Accepted, AcceptedDossier, DeadLetter, DeadLetterFilter, DeadReason, DeliveryRow,
    DeliveryStatus, DossierRow, Inbound, JournalEntry, Lease, Ledger, LedgerError, OperationRecord,
    AGORA,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for the write lock before the ledger is reported unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections in the pool: readers run in parallel under WAL; writers queue on the lock.
const MAX_CONNECTIONS: u32 = 8;
/// The longest error text kept with a delivery.
const MAX_ERROR_CHARS: usize = 2000;

/// The SQLite ledger (embedded mode).
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

type Tx = Transaction<'static, Sqlite>;

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
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: migration: {e}")))?;
        Ok(Self { pool })
    }

    /// A writing transaction: the write lock is taken at `BEGIN`.
    async fn begin_write(&self) -> Result<Tx, LedgerError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("begin", e))
    }

    async fn load(tx: &mut Tx, dossier_id: &str) -> Result<Option<Loaded>, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let row = sqlx::query(
            "SELECT desired, desired_version, flow, in_perimeter FROM dossiers WHERE dossier_id = $1",
        )
        .bind(dossier_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        let Some(row) = row else { return Ok(None) };
        let desired: Option<String> = get(&row, &what, "desired")?;
        let desired = desired.ok_or_else(|| corrupt(&what, "no desired state"))?;
        let flow: String = get(&row, &what, "flow")?;
        let sources = sqlx::query(
            "SELECT record, in_perimeter FROM dossier_sources WHERE dossier_id = $1 ORDER BY system",
        )
        .bind(dossier_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .iter()
        .map(|r| {
            let record: String = get(r, &what, "record")?;
            Ok(StoredSource {
                record: from_json(&what, &record)?,
                in_perimeter: get(r, &what, "in_perimeter")?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
        Ok(Some(Loaded {
            desired: from_json(&what, &desired)?,
            desired_version: get(&row, &what, "desired_version")?,
            flow: parse_flow(&what, &flow)?,
            in_perimeter: get(&row, &what, "in_perimeter")?,
            sources,
        }))
    }

    async fn write(
        tx: &mut Tx,
        dossier_id: &str,
        plan: &Plan,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        let at = ts(at);
        if plan.is_new {
            sqlx::query(
                "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(dossier_id)
            .bind(&plan.desired_json)
            .bind(plan.desired_version)
            .bind(plan.flow.as_str())
            .bind(plan.in_perimeter)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            sqlx::query(
                "INSERT INTO deliveries (dossier_id, destination, delivered, delivered_version, \
                 status, attempts, waiting_for, updated_at) VALUES ($1, $2, $3, 0, $4, 0, '[]', $5)",
            )
            .bind(dossier_id)
            .bind(AGORA)
            .bind(to_json(&what, &Delivered::Unknown)?)
            .bind(
                plan.status
                    .unwrap_or(DeliveryStatus::Pending)
                    .as_str(),
            )
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        } else {
            sqlx::query(
                "UPDATE dossiers SET desired = $2, desired_version = $3, flow = $4, \
                 in_perimeter = $5, updated_at = $6 WHERE dossier_id = $1",
            )
            .bind(dossier_id)
            .bind(&plan.desired_json)
            .bind(plan.desired_version)
            .bind(plan.flow.as_str())
            .bind(plan.in_perimeter)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            if let Some(status) = plan.status {
                // Owed again: what it waited for is moot, and a dead dossier revived by a new
                // version starts a fresh series of attempts.
                sqlx::query(
                    "UPDATE deliveries SET \
                     attempts = CASE WHEN status = 'dead' THEN 0 ELSE attempts END, \
                     first_failure_at = CASE WHEN status = 'dead' THEN NULL ELSE first_failure_at END, \
                     status = $3, waiting_for = '[]', updated_at = $4 \
                     WHERE dossier_id = $1 AND destination = $2",
                )
                .bind(dossier_id)
                .bind(AGORA)
                .bind(status.as_str())
                .bind(&at)
                .execute(&mut **tx)
                .await
                .map_err(|e| db_error(&what, e))?;
            }
        }
        if let Some(source) = &plan.source {
            sqlx::query(
                "INSERT INTO dossier_sources (dossier_id, system, source_version, in_perimeter, \
                 record, received_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (dossier_id, system) DO UPDATE SET \
                 source_version = excluded.source_version, in_perimeter = excluded.in_perimeter, \
                 record = excluded.record, received_at = excluded.received_at",
            )
            .bind(dossier_id)
            .bind(source.system.as_str())
            .bind(source.version)
            .bind(source.in_perimeter)
            .bind(&source.record_json)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
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
            id,
        })
    }
}

async fn commit(tx: Tx, what: &str) -> Result<(), LedgerError> {
    tx.commit().await.map_err(|e| db_error(what, e))
}

#[async_trait]
impl Ledger for SqliteLedger {
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
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT message_id FROM journal WHERE system = $1 AND payload_hash = $2",
        )
        .bind(inbound.system.as_str())
        .bind(&inbound.payload_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error("journal", e))?;
        if let Some(message_id) = existing {
            let dossiers = Self::linked_dossiers(&mut tx, &message_id).await?;
            tx.rollback().await.map_err(|e| db_error("journal", e))?;
            return Ok(Accepted {
                message_id,
                duplicate: true,
                dossiers,
            });
        }

        let message_id = logic::new_id();
        let at = now();
        sqlx::query(
            "INSERT INTO journal (message_id, system, flow, payload_hash, received_at, request_id, \
             masked_payload) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&message_id)
        .bind(inbound.system.as_str())
        .bind(inbound.flow.as_str())
        .bind(&inbound.payload_hash)
        .bind(ts(at))
        .bind(&inbound.request_id)
        .bind(&inbound.masked_payload)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("journal", e))?;

        let mut dossiers = Vec::with_capacity(inbound.records.len());
        let mut refused = Vec::new();
        for (position, rec) in inbound.records.iter().enumerate() {
            let loaded = Self::load(&mut tx, &rec.dossier_id).await?;
            let plan = match logic::plan(
                &rec.dossier_id,
                loaded.as_ref(),
                rec,
                inbound.flow,
                precedence,
            ) {
                Ok(plan) => plan,
                Err(PlanError::Refused(v)) => {
                    refused.push(v);
                    continue;
                }
                Err(PlanError::Corrupt(e)) => return Err(e),
            };
            Self::write(&mut tx, &rec.dossier_id, &plan, at).await?;
            sqlx::query(
                "INSERT INTO journal_dossiers (message_id, dossier_id, position) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&message_id)
            .bind(&rec.dossier_id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("journal", e))?;
            dossiers.push(AcceptedDossier {
                dossier_id: rec.dossier_id.clone(),
                in_perimeter: plan.in_perimeter,
                changed: plan.changed,
                desired_version: plan.desired_version,
            });
        }
        if !refused.is_empty() {
            tx.rollback().await.map_err(|e| db_error("accept", e))?;
            return Err(LedgerError::Rejected(refused));
        }
        commit(tx, "accept").await?;
        Ok(Accepted {
            message_id,
            duplicate: false,
            dossiers,
        })
    }

    async fn dossier(&self, dossier_id: &str) -> Result<Option<DossierRow>, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut conn = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        let row = sqlx::query(
            "SELECT desired, desired_version, flow, in_perimeter, created_at, updated_at \
             FROM dossiers WHERE dossier_id = $1",
        )
        .bind(dossier_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error(&what, e))?;
        let Some(row) = row else { return Ok(None) };
        let desired: Option<String> = get(&row, &what, "desired")?;
        let desired: Dossier = from_json(
            &what,
            &desired.ok_or_else(|| corrupt(&what, "no desired state"))?,
        )?;
        let flow: String = get(&row, &what, "flow")?;
        let created_at: String = get(&row, &what, "created_at")?;
        let updated_at: String = get(&row, &what, "updated_at")?;
        let sources =
            sqlx::query("SELECT record FROM dossier_sources WHERE dossier_id = $1 ORDER BY system")
                .bind(dossier_id)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| db_error(&what, e))?
                .iter()
                .map(|r| {
                    let record: String = get(r, &what, "record")?;
                    from_json::<Dossier>(&what, &record)
                })
                .collect::<Result<Vec<_>, _>>()?;
        let delivery =
            sqlx::query("SELECT * FROM deliveries WHERE dossier_id = $1 AND destination = $2")
                .bind(dossier_id)
                .bind(AGORA)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| db_error(&what, e))?
                .ok_or_else(|| corrupt(&what, "no delivery row"))?;
        conn.rollback().await.map_err(|e| db_error(&what, e))?;
        Ok(Some(DossierRow {
            dossier_id: dossier_id.to_string(),
            desired,
            desired_version: get(&row, &what, "desired_version")?,
            flow: parse_flow(&what, &flow)?,
            in_perimeter: get(&row, &what, "in_perimeter")?,
            sources,
            delivery: Self::delivery_from_row(&what, &delivery)?,
            created_at: parse_ts(&what, &created_at)?,
            updated_at: parse_ts(&what, &updated_at)?,
        }))
    }

    async fn try_lease(
        &self,
        dossier_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LedgerError> {
        let at = now();
        let expires = at + logic::capped(ttl);
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
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
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE deliveries SET delivered = $3, updated_at = $4 \
             WHERE dossier_id = $1 AND destination = $2",
        )
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
        sqlx::query(
            "INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
             numero_agora, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(op.operation.name())
        .bind(op.status.map(i32::from))
        .bind(&op.outcome)
        .bind(&op.numero_agora)
        .bind(ts(op.at))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await
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
        let updated = sqlx::query(
            "UPDATE deliveries SET \
             status = CASE WHEN $4 < (SELECT desired_version FROM dossiers d \
                                      WHERE d.dossier_id = deliveries.dossier_id) \
                      THEN 'pending' ELSE $3 END, \
             delivered_version = CASE WHEN $3 = 'delivered' THEN max(delivered_version, $4) \
                                 ELSE delivered_version END, \
             waiting_for = $5, attempts = 0, last_error = NULL, first_failure_at = NULL, \
             updated_at = $6 \
             WHERE dossier_id = $1 AND destination = $2",
        )
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
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $3, \
             last_attempt_at = $4, first_failure_at = COALESCE(first_failure_at, $4), updated_at = $4 \
             WHERE dossier_id = $1 AND destination = $2 RETURNING attempts",
        )
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
        let at = ts(now());
        let id = logic::new_id();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO dead_letters (id, dossier_id, destination, code, reason, attempts, \
             first_failure, last_failure) \
             SELECT $1, dossier_id, destination, $3, $4, attempts, COALESCE(first_failure_at, $5), $5 \
             FROM deliveries WHERE dossier_id = $2 AND destination = $6",
        )
        .bind(&id)
        .bind(dossier_id)
        .bind(reason.code())
        .bind(to_json(&what, reason)?)
        .bind(&at)
        .bind(destination)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if inserted == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', updated_at = $3 \
             WHERE dossier_id = $1 AND destination = $2",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await?;
        Ok(id)
    }

    async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, LedgerError> {
        sqlx::query(
            "SELECT * FROM dead_letters WHERE \
             ($1 IS NULL OR destination = $1) AND ($2 IS NULL OR code = $2) AND \
             ($3 IS NULL OR last_failure >= $3) AND ($4 IS NULL OR last_failure < $4) AND \
             ($5 OR replayed_at IS NULL) \
             ORDER BY last_failure, id",
        )
        .bind(&filter.destination)
        .bind(&filter.code)
        .bind(filter.since.map(ts))
        .bind(filter.until.map(ts))
        .bind(filter.include_replayed)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("dead letters", e))?
        .iter()
        .map(Self::dead_letter_from_row)
        .collect()
    }

    async fn replay(&self, dead_letter_id: &str) -> Result<String, LedgerError> {
        let what = format!("dead letter {dead_letter_id}");
        let at = ts(now());
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE dead_letters SET replayed_at = COALESCE(replayed_at, $2) WHERE id = $1 \
             RETURNING dossier_id, destination",
        )
        .bind(dead_letter_id)
        .bind(&at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .ok_or(LedgerError::NotFound {
            what: "dead letter",
        })?;
        let dossier_id: String = get(&row, &what, "dossier_id")?;
        let destination: String = get(&row, &what, "destination")?;
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL, \
             first_failure_at = NULL, waiting_for = '[]', updated_at = $3 \
             WHERE dossier_id = $1 AND destination = $2",
        )
        .bind(&dossier_id)
        .bind(&destination)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await?;
        Ok(dossier_id)
    }

    async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        let what = format!("journal of {dossier_id}");
        let mut conn = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        let rows = sqlx::query(
            "SELECT j.message_id, j.system, j.flow, j.payload_hash, j.received_at, j.request_id \
             FROM journal_dossiers jd JOIN journal j ON j.message_id = jd.message_id \
             WHERE jd.dossier_id = $1 ORDER BY j.received_at, j.message_id",
        )
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
        sqlx::query(
            "SELECT operation, http_status, outcome, numero_agora, at FROM operations \
             WHERE dossier_id = $1 AND destination = $2 ORDER BY id",
        )
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
        sqlx::query_scalar(
            "SELECT dossier_id FROM deliveries WHERE destination = $1 AND status = 'pending' \
             AND updated_at <= $3 ORDER BY updated_at, dossier_id LIMIT $2",
        )
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
}
