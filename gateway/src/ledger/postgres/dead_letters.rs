//! Dead letters on PostgreSQL: dead-lettering a dossier, listing dead letters, and replaying them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;

use super::{commit, get, PostgresLedger, Tx};
use crate::ledger::rows::DeadLetterColumns;
use crate::ledger::stored;
use crate::ledger::stored::{db_error, now, to_json};
use crate::ledger::{DeadLetter, DeadLetterFilter, DeadReason, LedgerError, Replayed};

impl PostgresLedger {
    pub(super) fn dead_letter_from_row(r: &PgRow) -> Result<DeadLetter, LedgerError> {
        DeadLetterColumns::read(r, &|_, t| Ok(t))
    }

    /// Dead-letters dossiers toward `destination` (status `Dead`) in one statement, and returns
    /// (dossier id, dead letter id) of those that have such a delivery. With `lot`, only members
    /// of that lot, which leave it. Shared by `dead_letter` and `settle_lot`.
    pub(super) async fn dead_letters_in<'e, E: sqlx::PgExecutor<'e>>(
        executor: E,
        destination: &str,
        dead: &[(&str, &DeadReason)],
        at: DateTime<Utc>,
        lot: Option<&str>,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        let mut ids = Vec::with_capacity(dead.len());
        let mut dossier_ids = Vec::with_capacity(dead.len());
        let mut codes = Vec::with_capacity(dead.len());
        let mut reasons = Vec::with_capacity(dead.len());
        for (dossier_id, reason) in dead {
            ids.push(stored::new_id());
            dossier_ids.push(*dossier_id);
            codes.push(reason.code());
            reasons.push(to_json(&format!("dossier {dossier_id}"), reason)?);
        }
        sqlx::query_as(
            "WITH line AS ( \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
               AS t(id, dossier_id, code, reason)), \
             dead AS ( \
               INSERT INTO dead_letters (id, dossier_id, destination, code, reason, attempts, \
               first_failure, last_failure, after_replay) \
               SELECT line.id, v.dossier_id, v.destination, line.code, line.reason::jsonb, \
                      v.attempts, COALESCE(v.first_failure_at, $6), $6, v.replay_id \
               FROM line JOIN deliveries v \
               ON v.dossier_id = line.dossier_id AND v.destination = $5 \
               WHERE $7::text IS NULL OR v.lot = $7 \
               RETURNING id, dossier_id) \
             UPDATE deliveries v SET status = 'dead', updated_at = $6, replay_id = NULL, \
             lot = CASE WHEN $7::text IS NULL THEN v.lot END \
             FROM dead WHERE v.dossier_id = dead.dossier_id AND v.destination = $5 \
             RETURNING dead.dossier_id, dead.id",
        )
        .bind(&ids)
        .bind(&dossier_ids)
        .bind(&codes)
        .bind(&reasons)
        .bind(destination)
        .bind(at)
        .bind(lot)
        .fetch_all(executor)
        .await
        .map_err(|e| db_error("dead letter", e))
    }

    /// Replays dead letters (locked rows with `id`, `dossier_id`, `destination`, none replayed
    /// yet) in one statement: each is marked with a new replay id, which its delivery takes with
    /// a fresh run of attempts. Shared by `replay` and `replay_matching`.
    pub(super) async fn replay_in(
        tx: &mut Tx,
        letters: &[PgRow],
        at: DateTime<Utc>,
    ) -> Result<Vec<Replayed>, LedgerError> {
        if letters.is_empty() {
            return Ok(Vec::new());
        }
        let mut replayed = Vec::with_capacity(letters.len());
        for r in letters {
            let id: String = get(r, "dead letter", "id")?;
            let what = format!("dead letter {id}");
            replayed.push(Replayed {
                dossier_id: get(r, &what, "dossier_id")?,
                destination: get(r, &what, "destination")?,
                replay_id: stored::new_id(),
                replayed_at: at,
                dead_letter_id: id,
            });
        }
        let ids: Vec<&str> = replayed.iter().map(|r| r.dead_letter_id.as_str()).collect();
        let replay_ids: Vec<&str> = replayed.iter().map(|r| r.replay_id.as_str()).collect();
        // Data-modifying CTEs run to completion whether or not the outer query reads them.
        let marked: Vec<String> = sqlx::query_scalar(
            "WITH line AS ( \
               SELECT * FROM UNNEST($1::text[], $2::text[]) AS t(id, replay_id)), \
             marked AS ( \
               UPDATE dead_letters l SET replayed_at = $3, replay_id = line.replay_id \
               FROM line WHERE l.id = line.id AND l.replayed_at IS NULL \
               RETURNING l.id, l.dossier_id, l.destination, l.replay_id), \
             owed AS ( \
               UPDATE deliveries v SET status = 'pending', attempts = 0, last_error = NULL, \
               first_failure_at = NULL, waiting_for = '[]'::jsonb, \
               replay_id = marked.replay_id, updated_at = $3 \
               FROM marked \
               WHERE v.dossier_id = marked.dossier_id AND v.destination = marked.destination \
               RETURNING 1) \
             SELECT id FROM marked",
        )
        .bind(&ids)
        .bind(&replay_ids)
        .bind(at)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dead letters", e))?;
        let marked: HashSet<String> = marked.into_iter().collect();
        replayed.retain(|r| marked.contains(&r.dead_letter_id));
        Ok(replayed)
    }
}

pub(super) async fn dead_letter(
    l: &PostgresLedger,
    dossier_id: &str,
    destination: &str,
    reason: &DeadReason,
) -> Result<String, LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut tx = l.begin(&what).await?;
    let id = PostgresLedger::dead_letters_in(
        &mut *tx,
        destination,
        &[(dossier_id, reason)],
        now(),
        None,
    )
    .await?
    .pop()
    .map(|(_, id)| id)
    .ok_or(LedgerError::NotFound { what: "delivery" })?;
    commit(tx, &what).await?;
    Ok(id)
}

pub(super) async fn dead_letters(
    l: &PostgresLedger,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>, LedgerError> {
    sqlx::query(concat!(
        "SELECT id, dossier_id, destination, reason::text AS reason, attempts, \
                 first_failure, last_failure, replayed_at, replay_id, after_replay \
                 FROM dead_letters WHERE ",
        dead_letter_filter!()
    ))
    .bind(&filter.destination)
    .bind(&filter.code)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.include_replayed)
    .bind(&filter.dossier_id)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("dead letters", e))?
    .iter()
    .map(PostgresLedger::dead_letter_from_row)
    .collect()
}

pub(super) async fn replay(
    l: &PostgresLedger,
    dead_letter_id: &str,
) -> Result<Replayed, LedgerError> {
    let what = format!("dead letter {dead_letter_id}");
    let mut tx = l.begin(&what).await?;
    // The row lock makes two concurrent replays of one dead letter take turns: the second
    // sees the first's mark.
    let row = sqlx::query(
        "SELECT id, dossier_id, destination, replayed_at FROM dead_letters WHERE id = $1 \
             FOR UPDATE",
    )
    .bind(dead_letter_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error(&what, e))?
    .ok_or(LedgerError::NotFound {
        what: "dead letter",
    })?;
    let replayed_at: Option<DateTime<Utc>> = get(&row, &what, "replayed_at")?;
    if let Some(replayed_at) = replayed_at {
        return Err(LedgerError::AlreadyReplayed {
            id: dead_letter_id.to_string(),
            dossier_id: get(&row, &what, "dossier_id")?,
            replayed_at,
        });
    }
    let replayed = PostgresLedger::replay_in(&mut tx, &[row], now()).await?;
    commit(tx, &what).await?;
    replayed.into_iter().next().ok_or(LedgerError::NotFound {
        what: "dead letter",
    })
}

pub(super) async fn replay_counted(
    l: &PostgresLedger,
    filter: &DeadLetterFilter,
    expected: Option<usize>,
) -> Result<Vec<Replayed>, LedgerError> {
    let mut tx = l.begin("dead letters").await?;
    // Locked, so that a concurrent replay waits and then finds them replayed (READ COMMITTED
    // re-checks `replayed_at IS NULL` on the row it waited for).
    let rows = sqlx::query(concat!(
        "SELECT id, dossier_id, destination FROM dead_letters WHERE replayed_at IS NULL AND ",
        dead_letter_filter!(),
        " FOR UPDATE"
    ))
    .bind(&filter.destination)
    .bind(&filter.code)
    .bind(filter.since)
    .bind(filter.until)
    .bind(false)
    .bind(&filter.dossier_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| db_error("dead letters", e))?;
    if let Some(expected) = expected.filter(|n| *n != rows.len()) {
        // Dropping the transaction rolls it back (and releases the rows it locked).
        return Err(LedgerError::CountChanged {
            expected,
            found: rows.len(),
        });
    }
    let replayed = PostgresLedger::replay_in(&mut tx, &rows, now()).await?;
    commit(tx, "dead letters").await?;
    Ok(replayed)
}
