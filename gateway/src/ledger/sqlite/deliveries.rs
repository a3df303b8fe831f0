//! Deliveries toward a destination on SQLite: leases, the AGORA operations recorded and what they
//! delivered, how an attempt settles or fails, and the reads of delivery state (pending dossiers,
//! deliveries, sessions).

use std::time::Duration;

use passerelle_adapters::canonical::State;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use sqlx::sqlite::SqliteRow;

use super::{commit, get, outbox, parse_ts, ts, SqliteLedger, IDS_PER_STATEMENT, MAX_ERROR_CHARS};
use crate::ledger::planning;
use crate::ledger::rows::DeliveryColumns;
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{clip, corrupt, db_error, now, to_json};
use crate::ledger::{DeliveryRow, DeliveryStatus, Lease, LedgerError, OperationRecord};

impl SqliteLedger {
    pub(super) fn delivery_from_row(what: &str, r: &SqliteRow) -> Result<DeliveryRow, LedgerError> {
        DeliveryColumns::read(what, r, &|what, t: String| parse_ts(what, &t))
    }
}

pub(super) async fn try_lease(
    l: &SqliteLedger,
    dossier_id: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Lease, LedgerError> {
    let at = now();
    let expires = at + stored::capped(ttl);
    let mut tx = l.begin_unfenced().await?;
    let prev: Option<(String,)> = sqlx::query_as("SELECT holder FROM leases WHERE dossier_id = $1")
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
    Ok(planning::lease(
        (taken == 1).then(|| prev.map(|(h,)| h)),
        holder,
    ))
}

pub(super) async fn release(
    l: &SqliteLedger,
    dossier_id: &str,
    holder: &str,
) -> Result<(), LedgerError> {
    let mut tx = l.begin_unfenced().await?;
    sqlx::query(sql::RELEASE_LEASE)
        .bind(dossier_id)
        .bind(holder)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("lease", e))?;
    commit(tx, "lease").await
}

pub(super) async fn record_operation(
    l: &SqliteLedger,
    dossier_id: &str,
    destination: &str,
    op: &OperationRecord,
    delivered: &Delivered,
    ret: Option<&crate::ledger::outbox::PendingReturn>,
) -> Result<(), LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut tx = l.begin_write().await?;
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

pub(super) async fn settle_delivery(
    l: &SqliteLedger,
    dossier_id: &str,
    destination: &str,
    status: DeliveryStatus,
    desired_version: i64,
    waiting_for: &[Violation],
) -> Result<(), LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut tx = l.begin_write().await?;
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

pub(super) async fn record_failure(
    l: &SqliteLedger,
    dossier_id: &str,
    destination: &str,
    error: &str,
) -> Result<i32, LedgerError> {
    let what = format!("dossier {dossier_id}");
    let at = ts(now());
    let mut tx = l.begin_write().await?;
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

pub(super) async fn operations(
    l: &SqliteLedger,
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
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error(&what, e))?
    .iter()
    .map(|r| {
        let operation: String = get(r, &what, "operation")?;
        let status: Option<i32> = get(r, &what, "http_status")?;
        let at: String = get(r, &what, "at")?;
        Ok(OperationRecord {
            operation: stored::parse_operation(&what, &operation)?,
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

pub(super) async fn pending(
    l: &SqliteLedger,
    destination: &str,
    quiet_for: Duration,
    limit: i64,
) -> Result<Vec<String>, LedgerError> {
    let cutoff = now() - stored::capped(quiet_for);
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
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("pending", e))
}

pub(super) async fn sessions(
    l: &SqliteLedger,
    states: &[State],
) -> Result<Vec<SessionRef>, LedgerError> {
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
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("sessions", e))?;
    Ok(planning::sessions(rows))
}

pub(super) async fn deliveries(
    l: &SqliteLedger,
    destination: &str,
    dossier_ids: &[String],
) -> Result<Vec<(String, DeliveryRow)>, LedgerError> {
    let mut conn = l
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
            found.push((dossier_id, SqliteLedger::delivery_from_row(&what, &r)?));
        }
    }
    conn.rollback()
        .await
        .map_err(|e| db_error("deliveries", e))?;
    Ok(found)
}
