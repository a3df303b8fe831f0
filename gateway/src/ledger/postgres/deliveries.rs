//! Deliveries toward a destination on PostgreSQL: leases, the AGORA operations recorded and what
//! they delivered, how an attempt settles or fails, and the reads of delivery state (pending
//! dossiers, deliveries, sessions).

use std::time::Duration;

use passerelle_adapters::canonical::State;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use sqlx::postgres::PgRow;

use super::{commit, get, outbox, PostgresLedger, MAX_ERROR_CHARS};
use crate::ledger::planning;
use crate::ledger::rows::DeliveryColumns;
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{clip, corrupt, db_error, now, to_json};
use crate::ledger::{DeliveryRow, DeliveryStatus, Lease, LedgerError, OperationRecord};

impl PostgresLedger {
    pub(super) fn delivery_from_row(what: &str, r: &PgRow) -> Result<DeliveryRow, LedgerError> {
        DeliveryColumns::read(what, r, &|_, t| Ok(t))
    }
}

pub(super) async fn try_lease(
    l: &PostgresLedger,
    dossier_id: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Lease, LedgerError> {
    // The database's clock, not this process's: replicas whose clocks differ agree on when a
    // lease expires (and fenced writes judge it the same way).
    // `prev` reads the row as it was before the upsert: whose lease this one replaces.
    let taken: Option<(Option<String>,)> = sqlx::query_as(
        "WITH prev AS (SELECT holder FROM leases WHERE dossier_id = $1) \
             INSERT INTO leases (dossier_id, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (dossier_id) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp() \
             RETURNING (SELECT holder FROM prev)",
    )
    .bind(dossier_id)
    .bind(holder)
    .bind(stored::capped(ttl).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6)
    .fetch_optional(&l.pool)
    .await
    .map_err(|e| db_error("lease", e))?;
    Ok(planning::lease(taken.map(|(prev,)| prev), holder))
}

pub(super) async fn release(
    l: &PostgresLedger,
    dossier_id: &str,
    holder: &str,
) -> Result<(), LedgerError> {
    sqlx::query(sql::RELEASE_LEASE)
        .bind(dossier_id)
        .bind(holder)
        .execute(&l.pool)
        .await
        .map(|_| ())
        .map_err(|e| db_error("lease", e))
}

pub(super) async fn record_operation(
    l: &PostgresLedger,
    dossier_id: &str,
    destination: &str,
    op: &OperationRecord,
    delivered: &Delivered,
    ret: Option<&crate::ledger::outbox::PendingReturn>,
) -> Result<(), LedgerError> {
    let what = format!("dossier {dossier_id}");
    // One statement (atomic by itself) records the call; the return AGORA's answer makes
    // joins it in one transaction.
    let mut tx = l.begin(&what).await?;
    let recorded = sqlx::query(
        "WITH delivery AS ( \
               UPDATE deliveries SET delivered = $3::text::jsonb, updated_at = $4 \
               WHERE dossier_id = $1 AND destination = $2 RETURNING 1) \
             INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
             numero_agora, at, replay_id) SELECT $1, $2, $5, $6, $7, $8, $9, $10 FROM delivery",
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
    .bind(&op.replay_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(&what, e))?
    .rows_affected();
    if recorded == 0 {
        return Err(LedgerError::NotFound { what: "delivery" });
    }
    if let Some(ret) = ret {
        outbox::write(&mut tx, dossier_id, ret).await?;
    }
    commit(tx, &what).await
}

pub(super) async fn settle_delivery(
    l: &PostgresLedger,
    dossier_id: &str,
    destination: &str,
    status: DeliveryStatus,
    desired_version: i64,
    waiting_for: &[Violation],
) -> Result<(), LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut tx = l.begin(&what).await?;
    // A newer desired version arrived while the worker reconciled an older one: what was
    // reached is recorded, but the dossier stays owed.
    let updated = sqlx::query(
        "UPDATE deliveries dl SET \
             status = CASE WHEN $4 < d.desired_version THEN 'pending' ELSE $3 END, \
             replay_id = CASE WHEN $4 < d.desired_version OR $3 = 'pending' THEN dl.replay_id \
                         END, \
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
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(&what, e))?
    .rows_affected();
    if updated == 0 {
        return Err(LedgerError::NotFound { what: "delivery" });
    }
    commit(tx, &what).await
}

pub(super) async fn record_failure(
    l: &PostgresLedger,
    dossier_id: &str,
    destination: &str,
    error: &str,
) -> Result<i32, LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut tx = l.begin(&what).await?;
    let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $3, \
             last_attempt_at = $4, first_failure_at = COALESCE(first_failure_at, $4), updated_at = $4 \
             WHERE dossier_id = $1 AND destination = $2 RETURNING attempts",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(clip(error, MAX_ERROR_CHARS))
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
    let attempts = attempts.ok_or(LedgerError::NotFound { what: "delivery" })?;
    commit(tx, &what).await?;
    Ok(attempts)
}

pub(super) async fn operations(
    l: &PostgresLedger,
    dossier_id: &str,
    destination: &str,
) -> Result<Vec<OperationRecord>, LedgerError> {
    let what = format!("operations of {dossier_id}");
    sqlx::query(
        "SELECT operation, http_status, outcome, numero_agora, at, replay_id FROM operations \
             WHERE dossier_id = $1 AND destination = $2 ORDER BY id",
    )
    .bind(dossier_id)
    .bind(destination)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error(&what, e))?
    .iter()
    .map(|r| {
        let operation: String = get(r, &what, "operation")?;
        let status: Option<i32> = get(r, &what, "http_status")?;
        Ok(OperationRecord {
            operation: stored::parse_operation(&what, &operation)?,
            status: status
                .map(|s| u16::try_from(s).map_err(|_| corrupt(&what, "bad HTTP status")))
                .transpose()?,
            outcome: get(r, &what, "outcome")?,
            numero_agora: get(r, &what, "numero_agora")?,
            at: get(r, &what, "at")?,
            replay_id: get(r, &what, "replay_id")?,
        })
    })
    .collect()
}

pub(super) async fn pending(
    l: &PostgresLedger,
    destination: &str,
    quiet_for: Duration,
    limit: i64,
) -> Result<Vec<String>, LedgerError> {
    let cutoff = now() - stored::capped(quiet_for);
    // Lot members and claimable backfill dossiers are the lots' to deliver.
    sqlx::query_scalar(concat!(
        "SELECT v.dossier_id FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
             WHERE v.destination = $1 AND v.status = 'pending' AND v.updated_at <= $3 \
             AND v.lot IS NULL AND NOT (d.flow = 'backfill' AND d.in_perimeter AND ",
        not_present!(),
        ") ORDER BY v.updated_at, v.dossier_id LIMIT $2"
    ))
    .bind(destination)
    .bind(limit.max(0))
    .bind(cutoff)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("pending", e))
}

pub(super) async fn sessions(
    l: &PostgresLedger,
    states: &[State],
) -> Result<Vec<SessionRef>, LedgerError> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT DISTINCT f, a, s FROM ( \
               SELECT desired -> 'training' ->> 'numero_formation' AS f, \
                      desired -> 'training' ->> 'numero_action' AS a, \
                      desired -> 'training' ->> 'numero_session' AS s \
               FROM dossiers WHERE in_perimeter AND desired IS NOT NULL \
               AND desired ->> 'state' = ANY($1)) AS open \
             WHERE f IS NOT NULL AND a IS NOT NULL AND s IS NOT NULL",
    )
    .bind(&states)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("sessions", e))?;
    Ok(planning::sessions(rows))
}

pub(super) async fn deliveries(
    l: &PostgresLedger,
    destination: &str,
    dossier_ids: &[String],
) -> Result<Vec<(String, DeliveryRow)>, LedgerError> {
    sqlx::query(concat!(
        "SELECT v.dossier_id, ",
        delivery_columns!(),
        "FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
             WHERE v.destination = $1 AND v.dossier_id = ANY($2) AND d.desired IS NOT NULL"
    ))
    .bind(destination)
    .bind(dossier_ids)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("deliveries", e))?
    .iter()
    .map(|r| {
        let dossier_id: String = get(r, "deliveries", "dossier_id")?;
        let what = format!("dossier {dossier_id}");
        Ok((dossier_id, PostgresLedger::delivery_from_row(&what, r)?))
    })
    .collect()
}
