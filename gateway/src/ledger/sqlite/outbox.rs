//! The returns outbox on SQLite ([`crate::ledger::outbox`]). One process writes an embedded
//! ledger, and every write holds SQLite's write lock: a claim is one transaction.

use std::time::Duration;

use super::{commit, get, parse_opt_ts, parse_ts, ts, SqliteLedger, Tx};
use crate::ledger::outbox::{
    DueReturn, PendingReturn, ReportMeta, ReturnAttempt, ReturnRow, ReturnStatus,
};
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{db_error, now, to_json};
use crate::ledger::LedgerError;

const WHAT: &str = "returns outbox";

/// Writes `ret` within the transaction that records AGORA's answer.
pub(super) async fn write(
    tx: &mut Tx,
    dossier_id: &str,
    ret: &PendingReturn,
) -> Result<(), LedgerError> {
    let at = ts(now());
    sqlx::query(
        "INSERT INTO returns_outbox (return_id, dossier_id, atexo_dossier, numero_agora, etat, \
         anomaly_codes, body, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (return_id) DO NOTHING",
    )
    .bind(&ret.return_id)
    .bind(dossier_id)
    .bind(&ret.atexo_dossier)
    .bind(&ret.numero_agora)
    .bind(&ret.etat)
    .bind(to_json(WHAT, &ret.anomaly_codes)?)
    .bind(&ret.body)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(|e| db_error(WHAT, e))
}

pub(super) async fn claim(
    l: &SqliteLedger,
    limit: u32,
    claim: Duration,
) -> Result<Vec<DueReturn>, LedgerError> {
    let at = now();
    let mut tx = l.begin_write().await?;
    let rows = sqlx::query(
        "SELECT return_id, dossier_id, body, attempts FROM returns_outbox \
         WHERE status = 'pending' AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at, return_id LIMIT $2",
    )
    .bind(ts(at))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| db_error(WHAT, e))?;
    let due: Vec<DueReturn> = rows
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
    let until = ts(at + stored::capped(claim));
    for d in &due {
        sqlx::query("UPDATE returns_outbox SET next_attempt_at = $2 WHERE return_id = $1")
            .bind(&d.return_id)
            .bind(&until)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(WHAT, e))?;
    }
    commit(tx, WHAT).await?;
    Ok(due)
}

pub(super) async fn settle(
    l: &SqliteLedger,
    return_id: &str,
    attempt: &ReturnAttempt,
) -> Result<(), LedgerError> {
    let (status, error, next) = match attempt {
        ReturnAttempt::Sent => (ReturnStatus::Sent, None, None),
        ReturnAttempt::Refused(e) => (ReturnStatus::Refused, Some(e.as_str()), None),
        ReturnAttempt::Retry { error, next } => {
            (ReturnStatus::Pending, Some(error.as_str()), Some(ts(*next)))
        }
    };
    let mut tx = l.begin_write().await?;
    sqlx::query(
        "UPDATE returns_outbox SET status = $2, attempts = attempts + 1, last_error = $3, \
         next_attempt_at = COALESCE($4, next_attempt_at), \
         sent_at = CASE WHEN $2 = 'sent' THEN $5 END \
         WHERE return_id = $1 AND status = 'pending'",
    )
    .bind(return_id)
    .bind(status.as_str())
    .bind(error)
    .bind(next)
    .bind(ts(now()))
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(WHAT, e))?;
    commit(tx, WHAT).await
}

pub(super) async fn of_dossier(
    l: &SqliteLedger,
    dossier_id: &str,
) -> Result<Vec<ReturnRow>, LedgerError> {
    let rows = sqlx::query(sql::RETURNS_OF)
        .bind(dossier_id)
        .fetch_all(&l.pool)
        .await
        .map_err(|e| db_error(WHAT, e))?;
    rows.iter()
        .map(|r| {
            let codes: String = get(r, WHAT, "anomaly_codes")?;
            let status: String = get(r, WHAT, "status")?;
            let created: String = get(r, WHAT, "created_at")?;
            Ok(ReturnRow {
                return_id: get(r, WHAT, "return_id")?,
                atexo_dossier: get(r, WHAT, "atexo_dossier")?,
                numero_agora: get(r, WHAT, "numero_agora")?,
                etat: get(r, WHAT, "etat")?,
                anomaly_codes: stored::from_json(WHAT, &codes)?,
                status: ReturnStatus::parse(&status)
                    .ok_or_else(|| stored::corrupt(WHAT, "status"))?,
                attempts: get(r, WHAT, "attempts")?,
                created_at: parse_ts(WHAT, &created)?,
                sent_at: parse_opt_ts(WHAT, get(r, WHAT, "sent_at")?)?,
                last_error: get(r, WHAT, "last_error")?,
            })
        })
        .collect()
}

const REPORTS: &str = "backfill reports";

pub(super) async fn store_report(
    l: &SqliteLedger,
    counts: &serde_json::Value,
    gzip_json: &[u8],
) -> Result<String, LedgerError> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = l.begin_write().await?;
    sqlx::query(
        "INSERT INTO backfill_reports (report_id, finished_at, counts, gzip_json) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(ts(now()))
    .bind(counts.to_string())
    .bind(gzip_json)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(REPORTS, e))?;
    commit(tx, REPORTS).await?;
    Ok(id)
}

pub(super) async fn reports(l: &SqliteLedger, limit: u32) -> Result<Vec<ReportMeta>, LedgerError> {
    let rows = sqlx::query(
        "SELECT report_id, finished_at, counts, length(gzip_json) AS gzip_bytes \
         FROM backfill_reports ORDER BY finished_at DESC, report_id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error(REPORTS, e))?;
    rows.iter()
        .map(|r| {
            let counts: String = get(r, REPORTS, "counts")?;
            let finished: String = get(r, REPORTS, "finished_at")?;
            Ok(ReportMeta {
                report_id: get(r, REPORTS, "report_id")?,
                finished_at: parse_ts(REPORTS, &finished)?,
                counts: stored::from_json(REPORTS, &counts)?,
                gzip_bytes: get(r, REPORTS, "gzip_bytes")?,
            })
        })
        .collect()
}

pub(super) async fn report(
    l: &SqliteLedger,
    report_id: &str,
) -> Result<Option<Vec<u8>>, LedgerError> {
    sqlx::query_scalar(sql::BACKFILL_REPORT)
        .bind(report_id)
        .fetch_optional(&l.pool)
        .await
        .map_err(|e| db_error(REPORTS, e))
}
