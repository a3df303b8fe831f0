//! Checkpoints and housekeeping on PostgreSQL: the named checkpoints of the backfill's inputs and
//! the purge of masked payloads past their retention.

use std::time::Duration;

use super::PostgresLedger;
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{db_error, now};
use crate::ledger::LedgerError;

pub(super) async fn checkpoint(l: &PostgresLedger, key: &str) -> Result<Option<i64>, LedgerError> {
    sqlx::query_scalar(sql::CHECKPOINT)
        .bind(key)
        .fetch_optional(&l.pool)
        .await
        .map_err(|e| db_error("checkpoint", e))
}

pub(super) async fn set_checkpoint(
    l: &PostgresLedger,
    key: &str,
    value: i64,
) -> Result<(), LedgerError> {
    sqlx::query(sql::SET_CHECKPOINT)
        .bind(key)
        .bind(value)
        .bind(now())
        .execute(&l.pool)
        .await
        .map(|_| ())
        .map_err(|e| db_error("checkpoint", e))
}

pub(super) async fn purge_payloads(
    l: &PostgresLedger,
    retention: Duration,
) -> Result<u64, LedgerError> {
    let cutoff = now() - stored::capped(retention);
    sqlx::query(sql::PURGE_PAYLOADS)
        .bind(cutoff)
        .execute(&l.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error("purge", e))
}
