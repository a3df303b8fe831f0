//! Backfill lots on SQLite: claiming, reading, submitting and settling a lot, and the backfill
//! flow's counts.

use passerelle_adapters::planner::Operation;
use sqlx::SqliteConnection;

use super::{commit, get, parse_ts, ts, SqliteLedger, Tx};
use crate::ledger::planning;
use crate::ledger::rows::LotColumns;
use crate::ledger::sql;
use crate::ledger::stored::{db_error, now, to_json};
use crate::ledger::{BackfillProgress, DeliveryStatus, LedgerError, LotLine, LotMember, LotRow};

/// A lot member to settle (see [`SqliteLedger::settle_members`]).
#[derive(Debug, serde::Serialize)]
struct SettleJson<'a> {
    id: &'a str,
    delivered: Option<&'a str>,
    version: i64,
}

impl SqliteLedger {
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

    pub(super) async fn lot_in(
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
        .map_err(|e| db_error(&what, e))?;
        LotColumns::read(&row, &|what, t: String| parse_ts(what, &t), |what| {
            members
                .iter()
                .map(|r| {
                    Ok(LotMember {
                        dossier_id: get(r, what, "dossier_id")?,
                        desired_version: get(r, what, "desired_version")?,
                    })
                })
                .collect()
        })
        .map(Some)
    }
}

pub(super) async fn claim_lot(
    l: &SqliteLedger,
    destination: &str,
    lot_key: &str,
    limit: i64,
) -> Result<Option<LotRow>, LedgerError> {
    let what = format!("lot {lot_key}");
    let at = ts(now());
    let mut tx = l.begin_write().await?;
    // The lot first: deliveries.lot refers to it.
    sqlx::query(sql::OPEN_LOT)
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
    let lot = SqliteLedger::lot_in(&mut tx, lot_key).await?;
    commit(tx, &what).await?;
    Ok(lot)
}

pub(super) async fn lot(l: &SqliteLedger, lot_key: &str) -> Result<Option<LotRow>, LedgerError> {
    let what = format!("lot {lot_key}");
    let mut conn = l.pool.begin().await.map_err(|e| db_error(&what, e))?;
    let lot = SqliteLedger::lot_in(&mut conn, lot_key).await?;
    conn.rollback().await.map_err(|e| db_error(&what, e))?;
    Ok(lot)
}

pub(super) async fn open_lots(
    l: &SqliteLedger,
    destination: &str,
) -> Result<Vec<LotRow>, LedgerError> {
    let mut conn = l.pool.begin().await.map_err(|e| db_error("lots", e))?;
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
        lots.extend(SqliteLedger::lot_in(&mut conn, key).await?);
    }
    conn.rollback().await.map_err(|e| db_error("lots", e))?;
    Ok(lots)
}

pub(super) async fn lot_submitted(
    l: &SqliteLedger,
    lot_key: &str,
    agora_lot: &str,
) -> Result<(), LedgerError> {
    let what = format!("lot {lot_key}");
    let mut tx = l.begin_write().await?;
    let updated = sqlx::query(sql::LOT_SUBMITTED)
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

pub(super) async fn settle_lot(
    l: &SqliteLedger,
    lot_key: &str,
    lines: &[LotLine],
    done: bool,
) -> Result<Vec<String>, LedgerError> {
    let what = format!("lot {lot_key}");
    let at = ts(now());
    let mut tx = l.begin_write().await?;
    let row = sqlx::query("SELECT destination, agora_lot FROM lots WHERE lot_key = $1")
        .bind(lot_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .ok_or(LedgerError::NotFound { what: "lot" })?;
    let destination: String = get(&row, &what, "destination")?;
    let agora_lot: Option<String> = get(&row, &what, "agora_lot")?;
    let lines = planning::lot_lines(agora_lot.as_deref().unwrap_or(lot_key), lines)?;
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
    let settled =
        SqliteLedger::settle_members(&mut tx, &members, &destination, lot_key, &at).await?;
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
    SqliteLedger::dead_letter_in(&mut tx, &lines.dead, &destination, &at, Some(lot_key)).await?;
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
    sqlx::query(sql::LOT_SETTLED)
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

pub(super) async fn backfill_progress(
    l: &SqliteLedger,
    destination: &str,
) -> Result<BackfillProgress, LedgerError> {
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
    .fetch_one(&l.pool)
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
