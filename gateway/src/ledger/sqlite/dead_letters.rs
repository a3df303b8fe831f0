//! Dead letters on SQLite: dead-lettering a dossier, listing dead letters, and replaying them.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;

use super::{commit, get, parse_opt_ts, parse_ts, ts, SqliteLedger, Tx};
use crate::ledger::rows::DeadLetterColumns;
use crate::ledger::stored;
use crate::ledger::stored::{db_error, now, to_json};
use crate::ledger::{DeadLetter, DeadLetterFilter, DeadReason, LedgerError, Replayed};

impl SqliteLedger {
    pub(super) fn dead_letter_from_row(r: &SqliteRow) -> Result<DeadLetter, LedgerError> {
        DeadLetterColumns::read(r, &|what, t: String| parse_ts(what, &t))
    }

    /// Dead-letters dossiers toward `destination` (status `Dead`), each with its reason, in two
    /// statements whatever their number; returns the dead letters written, as (dossier, id) (none
    /// for a dossier with no such delivery). With `lot`, only members of that lot, which leave it.
    /// Shared by `dead_letter` and `settle_lot`.
    pub(super) async fn dead_letter_in(
        tx: &mut Tx,
        dossiers: &[(&str, &DeadReason)],
        destination: &str,
        at: &str,
        lot: Option<&str>,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        #[derive(serde::Serialize)]
        struct Letter<'a> {
            dossier: &'a str,
            id: String,
            code: String,
            reason: String,
        }
        if dossiers.is_empty() {
            return Ok(Vec::new());
        }
        let letters = dossiers
            .iter()
            .map(|(dossier_id, reason)| {
                Ok(Letter {
                    dossier: dossier_id,
                    id: stored::new_id(),
                    code: reason.code(),
                    reason: to_json(&format!("dossier {dossier_id}"), reason)?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        // CROSS JOIN keeps the JSON rows outside: each finds its delivery by primary key.
        let written: Vec<(String, String)> = sqlx::query_as(concat!(
            "INSERT INTO dead_letters (id, dossier_id, destination, code, reason, attempts, \
             first_failure, last_failure, after_replay) \
             SELECT r.value ->> '$.id', v.dossier_id, v.destination, r.value ->> '$.code', \
             r.value ->> '$.reason', v.attempts, COALESCE(v.first_failure_at, $2), $2, \
             v.replay_id \
             FROM json_each($1) AS r CROSS JOIN deliveries AS v \
             WHERE v.dossier_seq = ",
            seq_of!("r.value ->> '$.dossier'"),
            " AND v.destination = $3 \
             AND ($4 IS NULL OR v.lot = $4) \
             RETURNING dossier_id, id"
        ))
        .bind(to_json("dead letters", &letters)?)
        .bind(at)
        .bind(destination)
        .bind(lot)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dead letters", e))?;
        if written.is_empty() {
            return Ok(written);
        }
        let ids: Vec<&str> = written.iter().map(|(d, _)| d.as_str()).collect();
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', updated_at = $2, replay_id = NULL, \
             lot = CASE WHEN $4 IS NULL THEN lot ELSE NULL END \
             WHERE destination = $3 AND dossier_seq IN (SELECT d.seq FROM dossiers d \
             WHERE d.dossier_id IN (SELECT value FROM json_each($1)))",
        )
        .bind(to_json("dead letters", &ids)?)
        .bind(at)
        .bind(destination)
        .bind(lot)
        .execute(&mut **tx)
        .await
        .map_err(|e| db_error("dead letters", e))?;
        Ok(written)
    }

    /// Replays dead letters (rows with `id`, `dossier_id`, `destination`, none replayed yet):
    /// each is marked with a new replay id, which its delivery takes with a fresh run of attempts.
    /// Shared by `replay` and `replay_matching`.
    pub(super) async fn replay_in(
        tx: &mut Tx,
        letters: &[SqliteRow],
        at: DateTime<Utc>,
    ) -> Result<Vec<Replayed>, LedgerError> {
        let at_text = ts(at);
        let mut replayed = Vec::with_capacity(letters.len());
        for r in letters {
            let id: String = get(r, "dead letter", "id")?;
            let what = format!("dead letter {id}");
            let dossier_id: String = get(r, &what, "dossier_id")?;
            let destination: String = get(r, &what, "destination")?;
            let replay_id = stored::new_id();
            sqlx::query(
                "UPDATE dead_letters SET replayed_at = $2, replay_id = $3 \
                 WHERE id = $1 AND replayed_at IS NULL",
            )
            .bind(&id)
            .bind(&at_text)
            .bind(&replay_id)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            sqlx::query(concat!(
                "UPDATE deliveries SET status = 'pending', attempts = 0, last_error = NULL, \
                 first_failure_at = NULL, waiting_for = '[]', replay_id = $3, updated_at = $4 \
                 WHERE dossier_seq = ",
                seq_of!("$1"),
                " AND destination = $2"
            ))
            .bind(&dossier_id)
            .bind(&destination)
            .bind(&replay_id)
            .bind(&at_text)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?;
            replayed.push(Replayed {
                dead_letter_id: id,
                dossier_id,
                destination,
                replay_id,
                replayed_at: at,
            });
        }
        Ok(replayed)
    }
}

pub(super) async fn dead_letter(
    l: &SqliteLedger,
    dossier_id: &str,
    destination: &str,
    reason: &DeadReason,
) -> Result<String, LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut tx = l.begin_write().await?;
    let (_, id) = SqliteLedger::dead_letter_in(
        &mut tx,
        &[(dossier_id, reason)],
        destination,
        &ts(now()),
        None,
    )
    .await?
    .pop()
    .ok_or(LedgerError::NotFound { what: "delivery" })?;
    commit(tx, &what).await?;
    Ok(id)
}

pub(super) async fn dead_letters(
    l: &SqliteLedger,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>, LedgerError> {
    sqlx::query(concat!(
        "SELECT * FROM dead_letters WHERE ",
        dead_letter_filter!()
    ))
    .bind(&filter.destination)
    .bind(&filter.code)
    .bind(filter.since.map(ts))
    .bind(filter.until.map(ts))
    .bind(filter.include_replayed)
    .bind(&filter.dossier_id)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("dead letters", e))?
    .iter()
    .map(SqliteLedger::dead_letter_from_row)
    .collect()
}

pub(super) async fn replay(
    l: &SqliteLedger,
    dead_letter_id: &str,
) -> Result<Replayed, LedgerError> {
    let what = format!("dead letter {dead_letter_id}");
    let at = now();
    let mut tx = l.begin_write().await?;
    let row = sqlx::query(
        "SELECT id, dossier_id, destination, replayed_at FROM dead_letters WHERE id = $1",
    )
    .bind(dead_letter_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error(&what, e))?
    .ok_or(LedgerError::NotFound {
        what: "dead letter",
    })?;
    if let Some(replayed_at) = parse_opt_ts(&what, get(&row, &what, "replayed_at")?)? {
        return Err(LedgerError::AlreadyReplayed {
            id: dead_letter_id.to_string(),
            dossier_id: get(&row, &what, "dossier_id")?,
            replayed_at,
        });
    }
    let replayed = SqliteLedger::replay_in(&mut tx, &[row], at).await?;
    commit(tx, &what).await?;
    replayed.into_iter().next().ok_or(LedgerError::NotFound {
        what: "dead letter",
    })
}

pub(super) async fn replay_counted(
    l: &SqliteLedger,
    filter: &DeadLetterFilter,
    expected: Option<usize>,
) -> Result<Vec<Replayed>, LedgerError> {
    let at = now();
    let mut tx = l.begin_write().await?;
    let rows = sqlx::query(concat!(
        "SELECT id, dossier_id, destination FROM dead_letters WHERE replayed_at IS NULL AND ",
        dead_letter_filter!()
    ))
    .bind(&filter.destination)
    .bind(&filter.code)
    .bind(filter.since.map(ts))
    .bind(filter.until.map(ts))
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
    let replayed = SqliteLedger::replay_in(&mut tx, &rows, at).await?;
    commit(tx, "dead letters").await?;
    Ok(replayed)
}
