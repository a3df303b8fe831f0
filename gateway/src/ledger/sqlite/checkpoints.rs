//! Checkpoints and housekeeping on SQLite: the named checkpoints of the backfill's inputs and
//! the purge of masked payloads past their retention.

use std::time::Duration;

use super::{commit, ts, SqliteLedger};
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{db_error, now};
use crate::ledger::LedgerError;

pub(super) async fn checkpoint(l: &SqliteLedger, key: &str) -> Result<Option<i64>, LedgerError> {
    sqlx::query_scalar(sql::CHECKPOINT)
        .bind(key)
        .fetch_optional(&l.pool)
        .await
        .map_err(|e| db_error("checkpoint", e))
}

pub(super) async fn set_checkpoint(
    l: &SqliteLedger,
    key: &str,
    value: i64,
) -> Result<(), LedgerError> {
    let mut tx = l.begin_write().await?;
    sqlx::query(sql::SET_CHECKPOINT)
        .bind(key)
        .bind(value)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("checkpoint", e))?;
    commit(tx, "checkpoint").await
}

pub(super) async fn purge_payloads(
    l: &SqliteLedger,
    retention: Duration,
) -> Result<u64, LedgerError> {
    let cutoff = now() - stored::capped(retention);
    let mut tx = l.begin_write().await?;
    let purged = sqlx::query(sql::PURGE_PAYLOADS)
        .bind(ts(cutoff))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("purge", e))?
        .rows_affected();
    commit(tx, "purge").await?;
    Ok(purged)
}
