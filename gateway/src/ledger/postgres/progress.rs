//! The backfill's progress on PostgreSQL ([`crate::ledger::progress`]): the shared queries.

use chrono::{DateTime, Utc};

use super::get;
use super::PostgresLedger;
use crate::ledger::progress::{count, InputProgress, LotProgress, INPUTS, LOTS};
use crate::ledger::stored::{db_error, parse_lot_state};
use crate::ledger::LedgerError;

const WHAT: &str = "backfill progress";

pub(super) async fn lots(
    l: &PostgresLedger,
    destination: &str,
    limit: u32,
) -> Result<Vec<LotProgress>, LedgerError> {
    let pool = &l.pool;
    let rows = sqlx::query(LOTS)
        .bind(destination)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(WHAT, e))?;
    rows.iter()
        .map(|r| {
            let state: String = get(r, WHAT, "state")?;
            let created_at: DateTime<Utc> = get(r, WHAT, "created_at")?;
            let updated_at: DateTime<Utc> = get(r, WHAT, "updated_at")?;
            Ok(LotProgress {
                lot_key: get(r, WHAT, "lot_key")?,
                state: parse_lot_state(WHAT, &state)?,
                agora_lot: get(r, WHAT, "agora_lot")?,
                members: count(get(r, WHAT, "members")?),
                waiting: count(get(r, WHAT, "waiting")?),
                delivered: count(get(r, WHAT, "delivered")?),
                dead: count(get(r, WHAT, "dead")?),
                created_at,
                updated_at,
            })
        })
        .collect()
}

pub(super) async fn inputs(
    l: &PostgresLedger,
    limit: u32,
) -> Result<Vec<InputProgress>, LedgerError> {
    let pool = &l.pool;
    let rows = sqlx::query(INPUTS)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(WHAT, e))?;
    rows.iter()
        .map(|r| {
            let updated_at: DateTime<Utc> = get(r, WHAT, "updated_at")?;
            Ok(InputProgress {
                key: get(r, WHAT, "key")?,
                read: count(get(r, WHAT, "value")?),
                updated_at,
            })
        })
        .collect()
}
