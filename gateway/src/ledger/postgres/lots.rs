//! Backfill lots on PostgreSQL: claiming (`FOR UPDATE SKIP LOCKED`), reading, submitting and
//! settling a lot (under the lot row's lock), and the backfill flow's counts.

use chrono::{DateTime, Utc};
use passerelle_adapters::planner::Operation;
use sqlx::postgres::PgRow;

use super::{commit, get, PostgresLedger};
use crate::ledger::planning;
use crate::ledger::rows::LotColumns;
use crate::ledger::sql;
use crate::ledger::stored::{db_error, now};
use crate::ledger::{
    BackfillProgress, DeliveryStatus, LedgerError, LotLine, LotMember, LotRow, LotState,
};

impl PostgresLedger {
    /// Decodes a row of `select_lots!()`.
    pub(super) fn lot_from_row(r: &PgRow) -> Result<LotRow, LedgerError> {
        LotColumns::read(r, &|_, t| Ok(t), |what| {
            let ids: Vec<String> = get(r, what, "member_ids")?;
            let versions: Vec<i64> = get(r, what, "member_versions")?;
            Ok(ids
                .into_iter()
                .zip(versions)
                .map(|(dossier_id, desired_version)| LotMember {
                    dossier_id,
                    desired_version,
                })
                .collect())
        })
    }
}

pub(super) async fn claim_lot(
    l: &PostgresLedger,
    destination: &str,
    lot_key: &str,
    limit: i64,
) -> Result<Option<LotRow>, LedgerError> {
    let what = format!("lot {lot_key}");
    let at = now();
    let mut tx = l.begin(&what).await?;
    // The lot first: deliveries.lot refers to it.
    sqlx::query(sql::OPEN_LOT)
        .bind(lot_key)
        .bind(destination)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
    // SKIP LOCKED: a concurrent claim takes other dossiers instead of waiting for these.
    let mut claimed: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(concat!(
            "WITH picked AS MATERIALIZED ( \
               SELECT v.dossier_id FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
               WHERE v.destination = $2 AND ",
            claimable!(),
            " AND NOT EXISTS (SELECT 1 FROM leases l \
                                WHERE l.dossier_id = v.dossier_id AND l.expires_at > $3) \
               ORDER BY v.updated_at, v.dossier_id LIMIT $4 \
               FOR UPDATE OF v SKIP LOCKED) \
             UPDATE deliveries v SET lot = $1 FROM picked p, dossiers d \
             WHERE v.dossier_id = p.dossier_id AND v.destination = $2 \
             AND d.dossier_id = v.dossier_id \
             RETURNING v.dossier_id, d.desired_version, d.created_at"
        ))
        .bind(lot_key)
        .bind(destination)
        .bind(at)
        .bind(limit.max(0))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
    if claimed.is_empty() {
        tx.rollback().await.map_err(|e| db_error(&what, e))?;
        return Ok(None);
    }
    claimed.sort_unstable_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    let positions: Vec<i32> = (0..).take(claimed.len()).collect();
    let ids: Vec<&str> = claimed.iter().map(|c| c.0.as_str()).collect();
    let versions: Vec<i64> = claimed.iter().map(|c| c.1).collect();
    sqlx::query(
        "INSERT INTO lot_members (lot_key, position, dossier_id, desired_version) \
             SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[])",
    )
    .bind(lot_key)
    .bind(&positions)
    .bind(&ids)
    .bind(&versions)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(&what, e))?;
    commit(tx, &what).await?;
    Ok(Some(LotRow {
        lot_key: lot_key.to_string(),
        destination: destination.to_string(),
        state: LotState::Claimed,
        agora_lot: None,
        members: claimed
            .into_iter()
            .map(|(dossier_id, desired_version, _)| LotMember {
                dossier_id,
                desired_version,
            })
            .collect(),
        created_at: at,
        updated_at: at,
    }))
}

pub(super) async fn lot(l: &PostgresLedger, lot_key: &str) -> Result<Option<LotRow>, LedgerError> {
    sqlx::query(concat!(select_lots!(), "WHERE l.lot_key = $1"))
        .bind(lot_key)
        .fetch_optional(&l.pool)
        .await
        .map_err(|e| db_error(&format!("lot {lot_key}"), e))?
        .as_ref()
        .map(PostgresLedger::lot_from_row)
        .transpose()
}

pub(super) async fn open_lots(
    l: &PostgresLedger,
    destination: &str,
) -> Result<Vec<LotRow>, LedgerError> {
    sqlx::query(concat!(
        select_lots!(),
        "WHERE l.destination = $1 AND l.state <> 'done' ORDER BY l.created_at, l.lot_key"
    ))
    .bind(destination)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("lots", e))?
    .iter()
    .map(PostgresLedger::lot_from_row)
    .collect()
}

pub(super) async fn lot_submitted(
    l: &PostgresLedger,
    lot_key: &str,
    agora_lot: &str,
) -> Result<(), LedgerError> {
    let what = format!("lot {lot_key}");
    let mut tx = l.begin(&what).await?;
    let updated = sqlx::query(sql::LOT_SUBMITTED)
        .bind(lot_key)
        .bind(agora_lot)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
    if updated == 0 {
        return Err(LedgerError::NotFound { what: "lot" });
    }
    commit(tx, &what).await
}

pub(super) async fn settle_lot(
    l: &PostgresLedger,
    lot_key: &str,
    lines: &[LotLine],
    done: bool,
) -> Result<Vec<String>, LedgerError> {
    let what = format!("lot {lot_key}");
    let at = now();
    let mut tx = l.begin(&what).await?;
    // The lot's row lock serialises the settlements of one lot.
    let row = sqlx::query("SELECT destination, agora_lot FROM lots WHERE lot_key = $1 FOR UPDATE")
        .bind(lot_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .ok_or(LedgerError::NotFound { what: "lot" })?;
    let destination: String = get(&row, &what, "destination")?;
    let agora_lot: Option<String> = get(&row, &what, "agora_lot")?;
    let lines = planning::lot_lines(agora_lot.as_deref().unwrap_or(lot_key), lines)?;
    // (dossier id, status afterwards) of every member settled or released.
    let mut left: Vec<(String, String)> = Vec::new();

    // Each kind of line is one statement, whatever the lot's size. Only current members are
    // touched (`v.lot = $1`).
    if !lines.accepted.is_empty() {
        let ids: Vec<&str> = lines.accepted.iter().map(|l| l.dossier_id).collect();
        let delivered: Vec<&str> = lines
            .accepted
            .iter()
            .map(|l| l.delivered_json.as_str())
            .collect();
        let versions: Vec<i64> = lines.accepted.iter().map(|l| l.version).collect();
        let numeros: Vec<&str> = lines.accepted.iter().map(|l| l.numero_agora).collect();
        let outcomes: Vec<&str> = lines.accepted.iter().map(|l| l.outcome.as_str()).collect();
        left.extend(
            sqlx::query_as::<_, (String, String)>(
                "WITH line AS ( \
                       SELECT * FROM UNNEST($4::text[], $5::text[], $6::bigint[], $7::text[], \
                                            $8::text[]) \
                       AS t(dossier_id, delivered, version, numero_agora, outcome)), \
                     settled AS ( \
                       UPDATE deliveries v SET delivered = line.delivered::jsonb, \
                       delivered_version = GREATEST(v.delivered_version, line.version), \
                       status = CASE WHEN d.desired_version = line.version \
                                THEN 'delivered' ELSE 'pending' END, \
                       replay_id = CASE WHEN d.desired_version = line.version \
                                   THEN NULL ELSE v.replay_id END, \
                       attempts = 0, last_error = NULL, first_failure_at = NULL, \
                       waiting_for = '[]'::jsonb, lot = NULL, updated_at = $3 \
                       FROM line, dossiers d \
                       WHERE v.dossier_id = line.dossier_id AND v.destination = $2 \
                       AND v.lot = $1 AND d.dossier_id = v.dossier_id \
                       RETURNING v.dossier_id, v.status, line.numero_agora, line.outcome), \
                     recorded AS ( \
                       INSERT INTO operations (dossier_id, destination, operation, http_status, \
                       outcome, numero_agora, at) \
                       SELECT dossier_id, $2, $9, 202, outcome, numero_agora, $3 FROM settled) \
                     SELECT dossier_id, status FROM settled",
            )
            .bind(lot_key)
            .bind(&destination)
            .bind(at)
            .bind(&ids)
            .bind(&delivered)
            .bind(&versions)
            .bind(&numeros)
            .bind(&outcomes)
            .bind(Operation::Create.name())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?,
        );
    }
    if !lines.nothing_owed.is_empty() {
        let ids: Vec<&str> = lines.nothing_owed.iter().map(|l| l.0).collect();
        let versions: Vec<i64> = lines.nothing_owed.iter().map(|l| l.1).collect();
        left.extend(
                sqlx::query_as::<_, (String, String)>(
                    "UPDATE deliveries v SET \
                     delivered_version = GREATEST(v.delivered_version, line.version), \
                     status = CASE WHEN d.desired_version = line.version \
                              THEN 'delivered' ELSE 'pending' END, \
                     replay_id = CASE WHEN d.desired_version = line.version \
                                 THEN NULL ELSE v.replay_id END, \
                     attempts = 0, last_error = NULL, first_failure_at = NULL, \
                     waiting_for = '[]'::jsonb, lot = NULL, updated_at = $3 \
                     FROM UNNEST($4::text[], $5::bigint[]) AS line(dossier_id, version), dossiers d \
                     WHERE v.dossier_id = line.dossier_id AND v.destination = $2 \
                     AND v.lot = $1 AND d.dossier_id = v.dossier_id \
                     RETURNING v.dossier_id, v.status",
                )
                .bind(lot_key)
                .bind(&destination)
                .bind(at)
                .bind(&ids)
                .bind(&versions)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?,
            );
    }
    if !lines.dead.is_empty() {
        PostgresLedger::dead_letters_in(&mut *tx, &destination, &lines.dead, at, Some(lot_key))
            .await?;
    }
    if !lines.released.is_empty() {
        left.extend(
            sqlx::query_as::<_, (String, String)>(
                "UPDATE deliveries v SET lot = NULL \
                     WHERE v.dossier_id = ANY($3) AND v.destination = $2 AND v.lot = $1 \
                     RETURNING v.dossier_id, v.status",
            )
            .bind(lot_key)
            .bind(&destination)
            .bind(&lines.released)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?,
        );
    }
    if done {
        // The members the report did not name leave the lot too.
        left.extend(
            sqlx::query_as::<_, (String, String)>(
                "UPDATE deliveries SET lot = NULL WHERE lot = $1 RETURNING dossier_id, status",
            )
            .bind(lot_key)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?,
        );
    }
    sqlx::query(sql::LOT_SETTLED)
        .bind(lot_key)
        .bind(done)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
    commit(tx, &what).await?;
    let mut pending: Vec<String> = left
        .into_iter()
        .filter(|(_, status)| status == DeliveryStatus::Pending.as_str())
        .map(|(id, _)| id)
        .collect();
    pending.sort_unstable();
    Ok(pending)
}

pub(super) async fn backfill_progress(
    l: &PostgresLedger,
    destination: &str,
) -> Result<BackfillProgress, LedgerError> {
    let (claimable, in_lots, open_lots, pending_other): (i64, i64, i64, i64) =
        sqlx::query_as(concat!(
            "SELECT \
                 (SELECT count(*) FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
                  WHERE v.destination = $1 AND ",
            claimable!(),
            "), \
                 (SELECT count(*) FROM deliveries WHERE destination = $1 AND lot IS NOT NULL), \
                 (SELECT count(*) FROM lots WHERE destination = $1 AND state <> 'done'), \
                 (SELECT count(*) FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
                  WHERE v.destination = $1 AND d.flow = 'backfill' AND v.status = 'pending' \
                  AND v.lot IS NULL AND NOT (d.in_perimeter AND ",
            not_present!(),
            "))"
        ))
        .bind(destination)
        .fetch_one(&l.pool)
        .await
        .map_err(|e| db_error("backfill progress", e))?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(BackfillProgress {
        claimable: count(claimable),
        in_lots: count(in_lots),
        open_lots: count(open_lots),
        pending_other: count(pending_other),
    })
}
