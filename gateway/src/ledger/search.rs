//! The operators' reads: the dossier search (`GET /v1/dossiers`, the console's search box) and
//! the hourly activity the console's dashboard draws.
//!
//! Both dialects pick the ids of one page in SQL (their only difference: how JSON is read), then
//! the rows are read with [`IntakeLedger::dossiers`](super::IntakeLedger::dossiers), the same reading as everywhere else. The
//! identifiers a search matches (a source's id, an AGORA number) are kept in `search_keys` by
//! triggers (migration 20250101000020), so no write path of the ledger knows about the search.
//!
//! Pages are keyset pages: most recently changed first, `(updated_at, dossier_id)` descending,
//! the cursor the last row's pair. A dossier changed while an operator pages moves to the front
//! and is not shown twice.

use base64::Engine;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::State;
use sqlx::{PgPool, Row, SqlitePool};

use super::stored::db_error;
use super::{DeliveryStatus, DossierRow, Ledger, LedgerError, AGORA};

/// The most a page holds.
pub const MAX_LIMIT: u32 = 500;

/// What a search selects. Every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchFilter {
    /// A source record's id in its system (an ATEXO SEM reference, an orientation id, a Pôle
    /// emploi `idInscription`), an AGORA number or a dossier id, matched exactly.
    pub q: Option<String>,
    /// More dossier ids `q` stands for (a NIR's dossiers, see `routes::search`).
    pub q_ids: Vec<String>,
    pub state: Option<State>,
    /// The delivery status toward AGORA.
    pub delivery: Option<DeliveryStatus>,
    /// A funder (LHEO code) among the dossier's fundings.
    pub funder: Option<u8>,
    /// The Intercarif session number.
    pub session: Option<String>,
    /// The code of one of the dossier's dead letters (replayed or not).
    pub code: Option<String>,
    /// Last change at or after `since`, before `until`.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Where the previous page stopped.
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

/// Where a page stopped: the last row's last change and id. Opaque to callers (base64url).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub updated_at: DateTime<Utc>,
    pub dossier_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}|{}",
            self.updated_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            self.dossier_id
        ))
    }

    /// `None` for anything [`Cursor::encode`] did not write.
    pub fn decode(s: &str) -> Option<Cursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (at, id) = text.split_once('|')?;
        let updated_at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        (!id.is_empty()).then(|| Cursor {
            updated_at,
            dossier_id: id.to_string(),
        })
    }
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub dossiers: Vec<DossierRow>,
    /// The cursor of the next page; `None` on the last one.
    pub next: Option<Cursor>,
}

/// Dossiers received, delivered and dead-lettered in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourActivity {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// Journal entries (inbound messages) received.
    pub intake: u64,
    /// AGORA calls answered with a success (2xx).
    pub deliveries: u64,
    /// Dead letters written.
    pub dead_letters: u64,
}

fn limit(filter: &SearchFilter) -> i64 {
    i64::from(filter.limit.clamp(1, MAX_LIMIT)) + 1
}

/// Reads the rows of the ids a dialect picked (one more than the page, to know whether another
/// follows), in the pick's order.
pub(super) async fn page(
    ledger: &dyn Ledger,
    filter: &SearchFilter,
    mut picked: Vec<(String, DateTime<Utc>)>,
) -> Result<SearchPage, LedgerError> {
    let size = usize::try_from(filter.limit.clamp(1, MAX_LIMIT)).unwrap_or(usize::MAX);
    let more = picked.len() > size;
    picked.truncate(size);
    let next = more
        .then(|| picked.last())
        .flatten()
        .map(|(id, at)| Cursor {
            updated_at: *at,
            dossier_id: id.clone(),
        });
    let ids: Vec<String> = picked.iter().map(|(id, _)| id.clone()).collect();
    let mut rows = ledger.dossiers(&ids).await?;
    rows.sort_by_key(|r| ids.iter().position(|id| *id == r.dossier_id));
    Ok(SearchPage {
        dossiers: rows,
        next,
    })
}

fn state_text(filter: &SearchFilter) -> Option<String> {
    filter.state.and_then(|s| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    })
}

/// Fixed-width UTC text, as the SQLite ledger stores time.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(super) async fn sqlite_ids(
    pool: &SqlitePool,
    filter: &SearchFilter,
) -> Result<Vec<(String, DateTime<Utc>)>, LedgerError> {
    let rows = sqlx::query(
        "SELECT d.dossier_id, d.updated_at FROM dossiers d \
         LEFT JOIN deliveries v ON v.dossier_seq = d.seq AND v.destination = $13 \
         WHERE d.desired IS NOT NULL \
         AND ($1 IS NULL OR d.dossier_id = $1 \
              OR d.dossier_id IN (SELECT k.dossier_id FROM search_keys k WHERE k.value = $1) \
              OR d.dossier_id IN (SELECT value FROM json_each($2))) \
         AND ($3 IS NULL OR d.desired ->> '$.state' = $3) \
         AND ($4 IS NULL OR v.status = $4) \
         AND ($5 IS NULL OR EXISTS (SELECT 1 FROM json_each(d.desired, '$.fundings') f \
                                    WHERE f.value ->> '$.funder' = $5)) \
         AND ($6 IS NULL OR d.desired ->> '$.training.numero_session' = $6) \
         AND ($7 IS NULL OR EXISTS (SELECT 1 FROM dead_letters l \
                                    WHERE l.dossier_id = d.dossier_id AND l.code = $7)) \
         AND ($8 IS NULL OR d.updated_at >= $8) AND ($9 IS NULL OR d.updated_at < $9) \
         AND ($10 IS NULL OR d.updated_at < $10 OR (d.updated_at = $10 AND d.dossier_id < $11)) \
         ORDER BY d.updated_at DESC, d.dossier_id DESC LIMIT $12",
    )
    .bind(filter.q.as_deref())
    .bind(serde_json::to_string(&filter.q_ids).unwrap_or_else(|_| "[]".into()))
    .bind(state_text(filter))
    .bind(filter.delivery.map(DeliveryStatus::as_str))
    .bind(filter.funder.map(i64::from))
    .bind(filter.session.as_deref())
    .bind(filter.code.as_deref())
    .bind(filter.since.map(ts))
    .bind(filter.until.map(ts))
    .bind(filter.cursor.as_ref().map(|c| ts(c.updated_at)))
    .bind(filter.cursor.as_ref().map(|c| c.dossier_id.as_str()))
    .bind(limit(filter))
    .bind(AGORA)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("search", e))?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0).map_err(|e| db_error("search", e))?;
            let at: String = r.try_get(1).map_err(|e| db_error("search", e))?;
            let at = DateTime::parse_from_rfc3339(&at)
                .map_err(|e| super::stored::corrupt("search", format!("bad timestamp: {e}")))?
                .with_timezone(&Utc);
            Ok((id, at))
        })
        .collect()
}

pub(super) async fn postgres_ids(
    pool: &PgPool,
    filter: &SearchFilter,
) -> Result<Vec<(String, DateTime<Utc>)>, LedgerError> {
    let rows = sqlx::query(
        "SELECT d.dossier_id, d.updated_at FROM dossiers d \
         LEFT JOIN deliveries v ON v.dossier_id = d.dossier_id AND v.destination = $13 \
         WHERE d.desired IS NOT NULL \
         AND ($1::text IS NULL OR d.dossier_id = $1 \
              OR d.dossier_id IN (SELECT k.dossier_id FROM search_keys k WHERE k.value = $1) \
              OR d.dossier_id = ANY($2::text[])) \
         AND ($3::text IS NULL OR d.desired ->> 'state' = $3) \
         AND ($4::text IS NULL OR v.status = $4) \
         AND ($5::int IS NULL OR d.desired -> 'fundings' \
              @> jsonb_build_array(jsonb_build_object('funder', $5::int))) \
         AND ($6::text IS NULL OR d.desired -> 'training' ->> 'numero_session' = $6) \
         AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM dead_letters l \
                                          WHERE l.dossier_id = d.dossier_id AND l.code = $7)) \
         AND ($8::timestamptz IS NULL OR d.updated_at >= $8) \
         AND ($9::timestamptz IS NULL OR d.updated_at < $9) \
         AND ($10::timestamptz IS NULL OR (d.updated_at, d.dossier_id) < ($10, $11::text)) \
         ORDER BY d.updated_at DESC, d.dossier_id DESC LIMIT $12",
    )
    .bind(filter.q.as_deref())
    .bind(&filter.q_ids)
    .bind(state_text(filter))
    .bind(filter.delivery.map(DeliveryStatus::as_str))
    .bind(filter.funder.map(i32::from))
    .bind(filter.session.as_deref())
    .bind(filter.code.as_deref())
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.cursor.as_ref().map(|c| c.updated_at))
    .bind(filter.cursor.as_ref().map(|c| c.dossier_id.as_str()))
    .bind(limit(filter))
    .bind(AGORA)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("search", e))?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get(0).map_err(|e| db_error("search", e))?;
            let at: DateTime<Utc> = r.try_get(1).map_err(|e| db_error("search", e))?;
            Ok((id, at))
        })
        .collect()
}

/// The distinct session numbers of the ledger's dossiers (a NIR's dossier ids are derived from
/// them, see `routes::search`).
pub(super) async fn sqlite_sessions(pool: &SqlitePool) -> Result<Vec<String>, LedgerError> {
    sqlx::query_scalar(
        "SELECT DISTINCT desired ->> '$.training.numero_session' FROM dossiers \
         WHERE desired IS NOT NULL AND desired ->> '$.training.numero_session' IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("session numbers", e))
}

pub(super) async fn postgres_sessions(pool: &PgPool) -> Result<Vec<String>, LedgerError> {
    sqlx::query_scalar(
        "SELECT DISTINCT desired -> 'training' ->> 'numero_session' FROM dossiers \
         WHERE desired IS NOT NULL AND desired -> 'training' ->> 'numero_session' IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("session numbers", e))
}

/// The hours from `since` (truncated to its hour) to now, each with its counts, oldest first.
fn hours(
    since: DateTime<Utc>,
    counts: impl IntoIterator<Item = (String, i64, i64, i64)>,
) -> Vec<HourActivity> {
    use chrono::{DurationRound, TimeDelta};
    let hour = TimeDelta::hours(1);
    let start = since.duration_trunc(hour).unwrap_or(since);
    let end = Utc::now();
    let mut out = Vec::new();
    let mut at = start;
    while at <= end && out.len() < 24 * 31 {
        out.push(HourActivity {
            hour: at,
            ..HourActivity::default()
        });
        at += hour;
    }
    for (key, intake, deliveries, dead) in counts {
        let Some(slot) = out
            .iter_mut()
            .find(|h| h.hour.format("%Y-%m-%dT%H").to_string() == key)
        else {
            continue;
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        slot.intake += n(intake);
        slot.deliveries += n(deliveries);
        slot.dead_letters += n(dead);
    }
    out
}

pub(super) async fn sqlite_activity(
    pool: &SqlitePool,
    since: DateTime<Utc>,
) -> Result<Vec<HourActivity>, LedgerError> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT substr(received_at, 1, 13), count(*), 0, 0 FROM journal \
         WHERE received_at >= $1 GROUP BY 1 \
         UNION ALL SELECT substr(at, 1, 13), 0, count(*), 0 FROM operations \
         WHERE at >= $1 AND http_status BETWEEN 200 AND 299 GROUP BY 1 \
         UNION ALL SELECT substr(last_failure, 1, 13), 0, 0, count(*) FROM dead_letters \
         WHERE last_failure >= $1 GROUP BY 1",
    )
    .bind(ts(since))
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("activity", e))?;
    Ok(hours(since, rows))
}

pub(super) async fn postgres_activity(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<HourActivity>, LedgerError> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24'), count(*), \
                0::bigint, 0::bigint FROM journal WHERE received_at >= $1 GROUP BY 1 \
         UNION ALL SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24'), 0, count(*), 0 \
         FROM operations WHERE at >= $1 AND http_status BETWEEN 200 AND 299 GROUP BY 1 \
         UNION ALL SELECT to_char(last_failure AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24'), 0, 0, \
                count(*) FROM dead_letters WHERE last_failure >= $1 GROUP BY 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(|e| db_error("activity", e))?;
    Ok(hours(since, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_nothing_else_does() {
        let c = Cursor {
            updated_at: DateTime::parse_from_rfc3339("2019-09-02T10:15:00.123456Z")
                .expect("time")
                .with_timezone(&Utc),
            dossier_id: "psl-0123".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "nope", "!!!", "MjAxOQ"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
