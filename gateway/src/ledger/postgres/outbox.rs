//! The returns outbox on PostgreSQL ([`crate::ledger::outbox`]). Claims are judged by the
//! database's clock, so replicas whose clocks differ never take the same return at once.

use std::time::Duration;

use super::PostgresLedger;
use super::{get, Tx};
use crate::ledger::outbox::{
    DueReturn, PendingReturn, ReportMeta, ReturnAttempt, ReturnRow, ReturnStatus,
};
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::db_error;
use crate::ledger::LedgerError;

const WHAT: &str = "returns outbox";

/// Writes `ret` within the transaction that records AGORA's answer.
pub(super) async fn write(
    tx: &mut Tx,
    dossier_id: &str,
    ret: &PendingReturn,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO returns_outbox (return_id, dossier_id, atexo_dossier, numero_agora, etat, \
         anomaly_codes, body, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp(), clock_timestamp()) \
         ON CONFLICT (return_id) DO NOTHING",
    )
    .bind(&ret.return_id)
    .bind(dossier_id)
    .bind(&ret.atexo_dossier)
    .bind(&ret.numero_agora)
    .bind(&ret.etat)
    .bind(sqlx::types::Json(&ret.anomaly_codes))
    .bind(&ret.body)
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(|e| db_error(WHAT, e))
}

pub(super) async fn claim(
    l: &PostgresLedger,
    limit: u32,
    claim: Duration,
) -> Result<Vec<DueReturn>, LedgerError> {
    let pool = &l.pool;
    // SKIP LOCKED: two senders claiming at once take different returns, neither waits.
    let rows = sqlx::query(
        "UPDATE returns_outbox SET next_attempt_at = clock_timestamp() + make_interval(secs => $2) \
         WHERE return_id IN (SELECT return_id FROM returns_outbox \
           WHERE status = 'pending' AND next_attempt_at <= clock_timestamp() \
           ORDER BY next_attempt_at, return_id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING return_id, dossier_id, body, attempts",
    )
    .bind(i64::from(limit))
    .bind(stored::capped(claim).num_milliseconds() as f64 / 1000.0)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(WHAT, e))?;
    let mut due: Vec<DueReturn> = rows
        .iter()
        .map(|r| {
            Ok(DueReturn {
                return_id: get(r, WHAT, "return_id")?,
                dossier_id: get(r, WHAT, "dossier_id")?,
                body: get(r, WHAT, "body")?,
                attempts: get(r, WHAT, "attempts")?,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    // RETURNING does not keep the subquery's order; ids are v7 uuids, in creation order.
    due.sort_by(|a, b| a.return_id.cmp(&b.return_id));
    Ok(due)
}

pub(super) async fn settle(
    l: &PostgresLedger,
    return_id: &str,
    attempt: &ReturnAttempt,
) -> Result<(), LedgerError> {
    let pool = &l.pool;
    let (status, error, next) = match attempt {
        ReturnAttempt::Sent => (ReturnStatus::Sent, None, None),
        ReturnAttempt::Refused(e) => (ReturnStatus::Refused, Some(e.as_str()), None),
        ReturnAttempt::Retry { error, next } => {
            (ReturnStatus::Pending, Some(error.as_str()), Some(*next))
        }
    };
    sqlx::query(
        "UPDATE returns_outbox SET status = $2, attempts = attempts + 1, last_error = $3, \
         next_attempt_at = COALESCE($4, next_attempt_at), \
         sent_at = CASE WHEN $2 = 'sent' THEN clock_timestamp() END \
         WHERE return_id = $1 AND status = 'pending'",
    )
    .bind(return_id)
    .bind(status.as_str())
    .bind(error)
    .bind(next)
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(|e| db_error(WHAT, e))
}

pub(super) async fn of_dossier(
    l: &PostgresLedger,
    dossier_id: &str,
) -> Result<Vec<ReturnRow>, LedgerError> {
    let pool = &l.pool;
    let rows = sqlx::query(sql::RETURNS_OF)
        .bind(dossier_id)
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(WHAT, e))?;
    rows.iter()
        .map(|r| {
            let codes: sqlx::types::Json<Vec<String>> = get(r, WHAT, "anomaly_codes")?;
            let status: String = get(r, WHAT, "status")?;
            Ok(ReturnRow {
                return_id: get(r, WHAT, "return_id")?,
                atexo_dossier: get(r, WHAT, "atexo_dossier")?,
                numero_agora: get(r, WHAT, "numero_agora")?,
                etat: get(r, WHAT, "etat")?,
                anomaly_codes: codes.0,
                status: ReturnStatus::parse(&status)
                    .ok_or_else(|| stored::corrupt(WHAT, "status"))?,
                attempts: get(r, WHAT, "attempts")?,
                created_at: get(r, WHAT, "created_at")?,
                sent_at: get(r, WHAT, "sent_at")?,
                last_error: get(r, WHAT, "last_error")?,
            })
        })
        .collect()
}

const REPORTS: &str = "backfill reports";

pub(super) async fn store_report(
    l: &PostgresLedger,
    counts: &serde_json::Value,
    gzip_json: &[u8],
) -> Result<String, LedgerError> {
    let pool = &l.pool;
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO backfill_reports (report_id, finished_at, counts, gzip_json) \
         VALUES ($1, clock_timestamp(), $2, $3)",
    )
    .bind(&id)
    .bind(sqlx::types::Json(counts))
    .bind(gzip_json)
    .execute(pool)
    .await
    .map_err(|e| db_error(REPORTS, e))?;
    Ok(id)
}

pub(super) async fn reports(
    l: &PostgresLedger,
    limit: u32,
) -> Result<Vec<ReportMeta>, LedgerError> {
    let pool = &l.pool;
    let rows = sqlx::query(
        "SELECT report_id, finished_at, counts, length(gzip_json)::bigint AS gzip_bytes \
         FROM backfill_reports ORDER BY finished_at DESC, report_id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(|e| db_error(REPORTS, e))?;
    rows.iter()
        .map(|r| {
            let counts: sqlx::types::Json<serde_json::Value> = get(r, REPORTS, "counts")?;
            Ok(ReportMeta {
                report_id: get(r, REPORTS, "report_id")?,
                finished_at: get(r, REPORTS, "finished_at")?,
                counts: counts.0,
                gzip_bytes: get(r, REPORTS, "gzip_bytes")?,
            })
        })
        .collect()
}

pub(super) async fn report(
    l: &PostgresLedger,
    report_id: &str,
) -> Result<Option<Vec<u8>>, LedgerError> {
    let pool = &l.pool;
    sqlx::query_scalar(sql::BACKFILL_REPORT)
        .bind(report_id)
        .fetch_optional(pool)
        .await
        .map_err(|e| db_error(REPORTS, e))
}
