//! The production ledger: PostgreSQL, shared by several gateway replicas.
//!
//! `accept` runs at READ COMMITTED and serialises the messages of one dossier with a row lock:
//! each dossier row is first inserted if missing (`INSERT … ON CONFLICT DO NOTHING`, a placeholder
//! with no desired state, visible to nobody before commit), then locked (`SELECT … FOR NO KEY
//! UPDATE`: the lock an `UPDATE` takes. `FOR UPDATE` would also block the foreign-key checks of
//! a worker inserting an operation of that dossier while it holds the dossier's delivery row,
//! which waits for the same delivery row: a deadlock).
//! Two first messages of a new dossier thus queue on the unique index, and the second sees the
//! first's committed row. The dossiers of one message are locked in id order, so two messages
//! naming the same dossiers in another order cannot deadlock. The journal entry is inserted first,
//! with `ON CONFLICT DO NOTHING` on (system, payload hash): a concurrent identical payload waits for
//! the first and then answers as a duplicate.
//!
//! JSON is stored as JSONB (bound and read as text, decoded with serde). Every session has a
//! statement timeout, so a stuck lock makes the ledger unavailable instead of hanging the caller.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::Dossier;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::Violation;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::logic::{
    self, clip, corrupt, db_error, from_json, now, parse_flow, parse_status, parse_system_col,
    to_json, Loaded, Plan, PlanError, StoredSource,
};
use super::{
    mask_url, Accepted, AcceptedDossier, DeadLetter, DeadLetterFilter, DeadReason, DeliveryRow,
    DeliveryStatus, DossierRow, Inbound, JournalEntry, Lease, Ledger, LedgerError, OperationRecord,
    AGORA,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const MAX_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Any statement (a lock wait included) longer than this fails: the caller answers 503 and retries.
const STATEMENT_TIMEOUT: &str = "30s";
const MAX_ERROR_CHARS: usize = 2000;

/// The PostgreSQL ledger (production mode).
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

fn get<'r, T>(row: &'r PgRow, what: &str, col: &str) -> Result<T, LedgerError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(col).map_err(|e| db_error(what, e))
}

impl PostgresLedger {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and migrates the schema (sqlx takes
    /// an advisory lock, so replicas starting together migrate once).
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        let masked = mask_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| LedgerError::Unavailable(format!("ledger.url {masked}: {e}")))?
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: migration: {e}")))?;
        Ok(Self { pool })
    }

    /// Closes the pool (tests drop their database after it).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self, what: &str) -> Result<Tx, LedgerError> {
        self.pool.begin().await.map_err(|e| db_error(what, e))
    }

    /// Loads a dossier locked by this transaction; `None` for the placeholder of a new one.
    async fn load_locked(tx: &mut Tx, dossier_id: &str) -> Result<Option<Loaded>, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let row = sqlx::query(
            "SELECT desired::text AS desired, desired_version, flow, in_perimeter \
             FROM dossiers WHERE dossier_id = $1 FOR NO KEY UPDATE",
        )
        .bind(dossier_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        let desired: Option<String> = get(&row, &what, "desired")?;
        let Some(desired) = desired else {
            return Ok(None);
        };
        let flow: String = get(&row, &what, "flow")?;
        let sources = sqlx::query(
            "SELECT record::text AS record, in_perimeter FROM dossier_sources \
             WHERE dossier_id = $1 ORDER BY system",
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
        // The row exists (placeholder or not) and is locked by this transaction.
        sqlx::query(
            "UPDATE dossiers SET desired = $2::text::jsonb, desired_version = $3, flow = $4, \
             in_perimeter = $5, updated_at = $6, \
             created_at = CASE WHEN desired IS NULL THEN $6 ELSE created_at END \
             WHERE dossier_id = $1",
        )
        .bind(dossier_id)
        .bind(&plan.desired_json)
        .bind(plan.desired_version)
        .bind(plan.flow.as_str())
        .bind(plan.in_perimeter)
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        if plan.is_new {
            sqlx::query(
                "INSERT INTO deliveries (dossier_id, destination, delivered, delivered_version, \
                 status, attempts, waiting_for, updated_at) \
                 VALUES ($1, $2, $3::text::jsonb, 0, $4, 0, '[]'::jsonb, $5)",
            )
            .bind(dossier_id)
            .bind(AGORA)
            .bind(to_json(&what, &Delivered::Unknown)?)
            .bind(plan.status.unwrap_or(DeliveryStatus::Pending).as_str())
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        } else if let Some(status) = plan.status {
            // Owed again: what it waited for is moot, and a dead dossier revived by a new
            // version starts a fresh series of attempts.
            sqlx::query(
                "UPDATE deliveries SET \
                 attempts = CASE WHEN status = 'dead' THEN 0 ELSE attempts END, \
                 first_failure_at = CASE WHEN status = 'dead' THEN NULL ELSE first_failure_at END, \
                 status = $3, waiting_for = '[]'::jsonb, updated_at = $4 \
                 WHERE dossier_id = $1 AND destination = $2",
            )
            .bind(dossier_id)
            .bind(AGORA)
            .bind(status.as_str())
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        }
        if let Some(source) = &plan.source {
            sqlx::query(
                "INSERT INTO dossier_sources (dossier_id, system, source_version, in_perimeter, \
                 record, received_at) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6) \
                 ON CONFLICT (dossier_id, system) DO UPDATE SET \
                 source_version = excluded.source_version, in_perimeter = excluded.in_perimeter, \
                 record = excluded.record, received_at = excluded.received_at",
            )
            .bind(dossier_id)
            .bind(source.system.as_str())
            .bind(source.version)
            .bind(source.in_perimeter)
            .bind(&source.record_json)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        }
        Ok(())
    }

    async fn linked_dossiers(&self, message_id: &str) -> Result<Vec<AcceptedDossier>, LedgerError> {
        let what = format!("journal entry {message_id}");
        sqlx::query(
            "SELECT d.dossier_id, d.in_perimeter, d.desired_version FROM journal_dossiers jd \
             JOIN dossiers d ON d.dossier_id = jd.dossier_id \
             WHERE jd.message_id = $1 ORDER BY jd.position",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
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

    fn delivery_from_row(what: &str, r: &PgRow) -> Result<DeliveryRow, LedgerError> {
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
            last_attempt_at: get(r, what, "last_attempt_at")?,
        })
    }

    fn dead_letter_from_row(r: &PgRow) -> Result<DeadLetter, LedgerError> {
        let id: String = get(r, "dead letter", "id")?;
        let what = format!("dead letter {id}");
        let reason: String = get(r, &what, "reason")?;
        Ok(DeadLetter {
            dossier_id: get(r, &what, "dossier_id")?,
            destination: get(r, &what, "destination")?,
            reason: from_json(&what, &reason)?,
            attempts: get(r, &what, "attempts")?,
            first_failure: get(r, &what, "first_failure")?,
            last_failure: get(r, &what, "last_failure")?,
            replayed_at: get(r, &what, "replayed_at")?,
            id,
        })
    }
}

async fn commit(tx: Tx, what: &str) -> Result<(), LedgerError> {
    tx.commit().await.map_err(|e| db_error(what, e))
}

#[async_trait]
impl Ledger for PostgresLedger {
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
        let message_id = logic::new_id();
        let at = now();
        let mut tx = self.begin("accept").await?;
        let inserted = sqlx::query(
            "INSERT INTO journal (message_id, system, flow, payload_hash, received_at, request_id, \
             masked_payload) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (system, payload_hash) DO NOTHING",
        )
        .bind(&message_id)
        .bind(inbound.system.as_str())
        .bind(inbound.flow.as_str())
        .bind(&inbound.payload_hash)
        .bind(at)
        .bind(&inbound.request_id)
        .bind(&inbound.masked_payload)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("journal", e))?
        .rows_affected();
        if inserted == 0 {
            // Already accepted (possibly by a concurrent request that just committed).
            tx.rollback().await.map_err(|e| db_error("journal", e))?;
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT message_id FROM journal WHERE system = $1 AND payload_hash = $2",
            )
            .bind(inbound.system.as_str())
            .bind(&inbound.payload_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("journal", e))?;
            let message_id = existing.ok_or_else(|| {
                LedgerError::Unavailable("journal: a concurrent entry vanished; retry".into())
            })?;
            let dossiers = self.linked_dossiers(&message_id).await?;
            return Ok(Accepted {
                message_id,
                duplicate: true,
                dossiers,
            });
        }

        // Lock every dossier of the message, in id order (no deadlock between two messages).
        let mut ids: Vec<(&str, bool)> = inbound
            .records
            .iter()
            .map(|r| (r.dossier_id.as_str(), r.in_perimeter))
            .collect();
        ids.sort_unstable();
        ids.dedup_by(|a, b| a.0 == b.0);
        for (dossier_id, in_perimeter) in &ids {
            sqlx::query(
                "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
                 created_at, updated_at) VALUES ($1, NULL, 0, $2, $3, $4, $4) \
                 ON CONFLICT (dossier_id) DO NOTHING",
            )
            .bind(dossier_id)
            .bind(inbound.flow.as_str())
            .bind(in_perimeter)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("accept", e))?;
            sqlx::query("SELECT 1 FROM dossiers WHERE dossier_id = $1 FOR NO KEY UPDATE")
                .bind(dossier_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("accept", e))?;
        }

        let mut dossiers = Vec::with_capacity(inbound.records.len());
        let mut refused = Vec::new();
        for (position, rec) in inbound.records.iter().enumerate() {
            let loaded = Self::load_locked(&mut tx, &rec.dossier_id).await?;
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
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
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
        // One statement, so one snapshot and one round trip: the worker reads this at every task.
        // A placeholder (desired NULL) only exists inside an uncommitted accept: never seen here.
        let row = sqlx::query(
            "SELECT d.desired::text AS desired, d.desired_version, d.flow, d.in_perimeter, \
             d.created_at, d.updated_at, \
             (SELECT coalesce(json_agg(s.record ORDER BY s.system), '[]'::json)::text \
              FROM dossier_sources s WHERE s.dossier_id = d.dossier_id) AS sources, \
             v.destination, v.delivered::text AS delivered, v.delivered_version, v.status, \
             v.attempts, v.last_error, v.waiting_for::text AS waiting_for, v.last_attempt_at \
             FROM dossiers d LEFT JOIN deliveries v \
             ON v.dossier_id = d.dossier_id AND v.destination = $2 \
             WHERE d.dossier_id = $1 AND d.desired IS NOT NULL",
        )
        .bind(dossier_id)
        .bind(AGORA)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?;
        let Some(row) = row else { return Ok(None) };
        let desired: String = get(&row, &what, "desired")?;
        let desired: Dossier = from_json(&what, &desired)?;
        let flow: String = get(&row, &what, "flow")?;
        let sources: String = get(&row, &what, "sources")?;
        let sources: Vec<Dossier> = from_json(&what, &sources)?;
        let destination: Option<String> = get(&row, &what, "destination")?;
        if destination.is_none() {
            return Err(corrupt(&what, "no delivery row"));
        }
        Ok(Some(DossierRow {
            dossier_id: dossier_id.to_string(),
            desired,
            desired_version: get(&row, &what, "desired_version")?,
            flow: parse_flow(&what, &flow)?,
            in_perimeter: get(&row, &what, "in_perimeter")?,
            sources,
            delivery: Self::delivery_from_row(&what, &row)?,
            created_at: get(&row, &what, "created_at")?,
            updated_at: get(&row, &what, "updated_at")?,
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
        // `prev` reads the row as it was before the upsert: whose lease this one replaces.
        let taken: Option<(Option<String>,)> = sqlx::query_as(
            "WITH prev AS (SELECT holder FROM leases WHERE dossier_id = $1) \
             INSERT INTO leases (dossier_id, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (dossier_id) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 \
             RETURNING (SELECT holder FROM prev)",
        )
        .bind(dossier_id)
        .bind(holder)
        .bind(expires)
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("lease", e))?;
        Ok(logic::lease(taken.map(|(prev,)| prev), holder))
    }

    async fn release(&self, dossier_id: &str, holder: &str) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM leases WHERE dossier_id = $1 AND holder = $2")
            .bind(dossier_id)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("lease", e))
    }

    async fn record_operation(
        &self,
        dossier_id: &str,
        destination: &str,
        op: &OperationRecord,
        delivered: &Delivered,
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        // One statement (atomic by itself): the worker records every AGORA call.
        let recorded = sqlx::query(
            "WITH delivery AS ( \
               UPDATE deliveries SET delivered = $3::text::jsonb, updated_at = $4 \
               WHERE dossier_id = $1 AND destination = $2 RETURNING 1) \
             INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
             numero_agora, at) SELECT $1, $2, $5, $6, $7, $8, $9 FROM delivery",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(to_json(&what, delivered)?)
        .bind(now())
        .bind(op.operation.name())
        .bind(op.status.map(i32::from))
        .bind(&op.outcome)
        .bind(&op.numero_agora)
        .bind(op.at)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if recorded == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        Ok(())
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
        // A newer desired version arrived while the worker reconciled an older one: what was
        // reached is recorded, but the dossier stays owed.
        let updated = sqlx::query(
            "UPDATE deliveries dl SET \
             status = CASE WHEN $4 < d.desired_version THEN 'pending' ELSE $3 END, \
             delivered_version = CASE WHEN $3 = 'delivered' \
                                 THEN GREATEST(dl.delivered_version, $4) \
                                 ELSE dl.delivered_version END, \
             waiting_for = $5::text::jsonb, attempts = 0, last_error = NULL, \
             first_failure_at = NULL, updated_at = $6 \
             FROM dossiers d \
             WHERE d.dossier_id = dl.dossier_id AND dl.dossier_id = $1 AND dl.destination = $2",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(status.as_str())
        .bind(desired_version)
        .bind(to_json(&what, &waiting_for)?)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if updated == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        dossier_id: &str,
        destination: &str,
        error: &str,
    ) -> Result<i32, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $3, \
             last_attempt_at = $4, first_failure_at = COALESCE(first_failure_at, $4), updated_at = $4 \
             WHERE dossier_id = $1 AND destination = $2 RETURNING attempts",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(clip(error, MAX_ERROR_CHARS))
        .bind(now())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?;
        attempts.ok_or(LedgerError::NotFound { what: "delivery" })
    }

    async fn dead_letter(
        &self,
        dossier_id: &str,
        destination: &str,
        reason: &DeadReason,
    ) -> Result<String, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let at = now();
        let id = logic::new_id();
        let mut tx = self.begin(&what).await?;
        let inserted = sqlx::query(
            "INSERT INTO dead_letters (id, dossier_id, destination, code, reason, attempts, \
             first_failure, last_failure) \
             SELECT $1, dossier_id, destination, $3, $4::text::jsonb, attempts, \
                    COALESCE(first_failure_at, $5), $5 \
             FROM deliveries WHERE dossier_id = $2 AND destination = $6",
        )
        .bind(&id)
        .bind(dossier_id)
        .bind(reason.code())
        .bind(to_json(&what, reason)?)
        .bind(at)
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
        .bind(at)
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
            "SELECT id, dossier_id, destination, reason::text AS reason, attempts, first_failure, \
             last_failure, replayed_at FROM dead_letters WHERE \
             ($1::text IS NULL OR destination = $1) AND ($2::text IS NULL OR code = $2) AND \
             ($3::timestamptz IS NULL OR last_failure >= $3) AND \
             ($4::timestamptz IS NULL OR last_failure < $4) AND \
             ($5 OR replayed_at IS NULL) \
             ORDER BY last_failure, id",
        )
        .bind(&filter.destination)
        .bind(&filter.code)
        .bind(filter.since)
        .bind(filter.until)
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
        let at = now();
        let mut tx = self.begin(&what).await?;
        let row = sqlx::query(
            "UPDATE dead_letters SET replayed_at = COALESCE(replayed_at, $2) WHERE id = $1 \
             RETURNING dossier_id, destination",
        )
        .bind(dead_letter_id)
        .bind(at)
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
             first_failure_at = NULL, waiting_for = '[]'::jsonb, updated_at = $3 \
             WHERE dossier_id = $1 AND destination = $2",
        )
        .bind(&dossier_id)
        .bind(&destination)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await?;
        Ok(dossier_id)
    }

    async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        let what = format!("journal of {dossier_id}");
        let rows = sqlx::query(
            "SELECT j.message_id, j.system, j.flow, j.payload_hash, j.received_at, j.request_id, \
             ARRAY(SELECT o.dossier_id FROM journal_dossiers o \
                   WHERE o.message_id = j.message_id ORDER BY o.position) AS dossier_ids \
             FROM journal_dossiers jd JOIN journal j ON j.message_id = jd.message_id \
             WHERE jd.dossier_id = $1 ORDER BY j.received_at, j.message_id",
        )
        .bind(dossier_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?;
        rows.iter()
            .map(|r| {
                let system: String = get(r, &what, "system")?;
                let flow: String = get(r, &what, "flow")?;
                Ok(JournalEntry {
                    message_id: get(r, &what, "message_id")?,
                    system: parse_system_col(&what, &system)?,
                    flow: parse_flow(&what, &flow)?,
                    payload_hash: get(r, &what, "payload_hash")?,
                    received_at: get(r, &what, "received_at")?,
                    dossier_ids: get(r, &what, "dossier_ids")?,
                    request_id: get(r, &what, "request_id")?,
                })
            })
            .collect()
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
            Ok(OperationRecord {
                operation: logic::parse_operation(&what, &operation)?,
                status: status
                    .map(|s| u16::try_from(s).map_err(|_| corrupt(&what, "bad HTTP status")))
                    .transpose()?,
                outcome: get(r, &what, "outcome")?,
                numero_agora: get(r, &what, "numero_agora")?,
                at: get(r, &what, "at")?,
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
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("pending", e))
    }

    async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError> {
        let cutoff = now() - logic::capped(retention);
        sqlx::query(
            "UPDATE journal SET masked_payload = NULL \
             WHERE masked_payload IS NOT NULL AND received_at < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error("purge", e))
    }
}
