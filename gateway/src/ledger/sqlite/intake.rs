//! What came in, on SQLite: the identity salt, `accept` (the journal entry and each record
//! planned and written into its dossier), the journal and dossier reads, and the unreadable
//! messages.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::Dossier;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Delivered;
use sqlx::sqlite::SqliteRow;
use sqlx::SqliteConnection;

use super::{commit, get, parse_ts, ts, SqliteLedger, Tx, IDS_PER_STATEMENT};
use crate::ledger::planning::{self, Loaded, Plan, StoredSource};
use crate::ledger::rows::DossierColumns;
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{
    corrupt, db_error, from_json, now, parse_flow, parse_system_col, to_json,
};
use crate::ledger::{
    Accepted, AcceptedDossier, DossierRow, Inbound, InboundRecord, JournalEntry, LedgerError,
    Unreadable, UnreadableRow, AGORA,
};

/// The rows an inbound writes, one per dossier (or per dossier and source), as JSON arrays of
/// objects the statements read with `json_each`; a later plan of the same dossier overwrites an
/// earlier one, as its statements would have.
#[derive(Debug, Default)]
struct Rows<'a> {
    dossiers: Vec<DossierJson<'a>>,
    /// Only the dossiers whose delivery status is (re)set.
    deliveries: Vec<DeliveryJson<'a>>,
    sources: Vec<SourceJson<'a>>,
    /// Where each dossier's rows are.
    at: HashMap<&'a str, (usize, Option<usize>)>,
    source_at: HashMap<(&'a str, &'static str), usize>,
}

#[derive(Debug, serde::Serialize)]
struct DossierJson<'a> {
    id: &'a str,
    desired: &'a str,
    version: i64,
    flow: &'static str,
    in_perimeter: bool,
}

#[derive(Debug, serde::Serialize)]
struct DeliveryJson<'a> {
    id: &'a str,
    status: &'static str,
}

#[derive(Debug, serde::Serialize)]
struct SourceJson<'a> {
    id: &'a str,
    system: &'static str,
    version: Option<i64>,
    in_perimeter: bool,
    record: &'a str,
}

impl<'a> Rows<'a> {
    fn add(&mut self, dossier_id: &'a str, plan: &'a Plan) {
        let dossier = DossierJson {
            id: dossier_id,
            desired: &plan.desired_json,
            version: plan.desired_version,
            flow: plan.flow.as_str(),
            in_perimeter: plan.in_perimeter,
        };
        let status = plan.status.map(|status| DeliveryJson {
            id: dossier_id,
            status: status.as_str(),
        });
        match self.at.get_mut(dossier_id) {
            Some((d, v)) => {
                self.dossiers[*d] = dossier;
                if let Some(status) = status {
                    match v {
                        Some(v) => self.deliveries[*v] = status,
                        None => {
                            *v = Some(self.deliveries.len());
                            self.deliveries.push(status);
                        }
                    }
                }
            }
            None => {
                let v = status.map(|status| {
                    self.deliveries.push(status);
                    self.deliveries.len() - 1
                });
                self.at.insert(dossier_id, (self.dossiers.len(), v));
                self.dossiers.push(dossier);
            }
        }
        if let Some(source) = &plan.source {
            let row = SourceJson {
                id: dossier_id,
                system: source.system.as_str(),
                version: source.version,
                in_perimeter: source.in_perimeter,
                record: &source.record_json,
            };
            match self.source_at.get(&(dossier_id, row.system)) {
                Some(&i) => self.sources[i] = row,
                None => {
                    self.source_at
                        .insert((dossier_id, row.system), self.sources.len());
                    self.sources.push(row);
                }
            }
        }
    }
}

impl SqliteLedger {
    /// The dossiers `ids_json` (a JSON array of ids) names, as they stand, by id: one query for
    /// the dossiers, one for their sources (none when all are new).
    pub(super) async fn load_many(
        tx: &mut Tx,
        ids_json: &str,
    ) -> Result<HashMap<String, Loaded>, LedgerError> {
        let rows = sqlx::query(
            "SELECT dossier_id, desired, desired_version, flow, in_perimeter FROM dossiers \
             WHERE dossier_id IN (SELECT value FROM json_each($1))",
        )
        .bind(ids_json)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dossiers", e))?;
        let mut held = HashMap::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(held);
        }
        let mut sources: HashMap<String, Vec<StoredSource>> = HashMap::with_capacity(rows.len());
        for r in sqlx::query(
            "SELECT s.dossier_id, s.record, s.in_perimeter FROM dossiers d \
             JOIN dossier_sources s ON s.dossier_seq = d.seq \
             WHERE d.dossier_id IN (SELECT value FROM json_each($1)) \
             ORDER BY s.dossier_id, s.system",
        )
        .bind(ids_json)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("dossiers", e))?
        {
            let dossier_id: String = get(&r, "dossiers", "dossier_id")?;
            let what = format!("dossier {dossier_id}");
            let record: String = get(&r, &what, "record")?;
            let source = StoredSource {
                record: from_json(&what, &record)?,
                in_perimeter: get(&r, &what, "in_perimeter")?,
            };
            sources.entry(dossier_id).or_default().push(source);
        }
        for row in &rows {
            let dossier_id: String = get(row, "dossiers", "dossier_id")?;
            let what = format!("dossier {dossier_id}");
            let desired: Option<String> = get(row, &what, "desired")?;
            let desired = desired.ok_or_else(|| corrupt(&what, "no desired state"))?;
            let flow: String = get(row, &what, "flow")?;
            let loaded = Loaded {
                desired: from_json(&what, &desired)?,
                desired_version: get(row, &what, "desired_version")?,
                flow: parse_flow(&what, &flow)?,
                in_perimeter: get(row, &what, "in_perimeter")?,
                sources: sources.remove(&dossier_id).unwrap_or_default(),
            };
            held.insert(dossier_id, loaded);
        }
        Ok(held)
    }

    /// Writes the plans of an inbound's records (in record order; a dossier named twice ends as
    /// its last plan leaves it) with one statement per table, each reading a JSON array of rows.
    pub(super) async fn write_many(
        tx: &mut Tx,
        records: &[InboundRecord],
        plans: &[Plan],
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let at = ts(at);
        let mut rows = Rows::default();
        for (rec, plan) in records.iter().zip(plans) {
            rows.add(&rec.dossier_id, plan);
        }
        // Dossiers first: the other tables refer to them. A new dossier is created at `at`, with
        // the next sequence numbers (the uncorrelated max is read once, before any row goes in;
        // a row that updates an existing dossier leaves a gap); an existing one keeps its
        // creation time and number.
        sqlx::query(
            "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
             created_at, updated_at, seq) \
             SELECT value ->> '$.id', value ->> '$.desired', value ->> '$.version', \
             value ->> '$.flow', value ->> '$.in_perimeter', $2, $2, \
             (SELECT ifnull(max(seq), 0) FROM dossiers) + 1 + key FROM json_each($1) WHERE true \
             ON CONFLICT (dossier_id) DO UPDATE SET desired = excluded.desired, \
             desired_version = excluded.desired_version, flow = excluded.flow, \
             in_perimeter = excluded.in_perimeter, updated_at = excluded.updated_at",
        )
        .bind(to_json("dossiers", &rows.dossiers)?)
        .bind(&at)
        .execute(&mut **tx)
        .await
        .map_err(|e| db_error("dossiers", e))?;
        if !rows.deliveries.is_empty() {
            // A new dossier's delivery starts from nothing known. An existing one is owed again:
            // what it waited for is moot, and a dead dossier revived by a new version starts a
            // fresh series of attempts.
            sqlx::query(concat!(
                "INSERT INTO deliveries (dossier_seq, dossier_id, destination, delivered, \
                 delivered_version, status, attempts, waiting_for, updated_at) \
                 SELECT ",
                seq_of!("value ->> '$.id'"),
                ", value ->> '$.id', $2, $3, 0, value ->> '$.status', 0, '[]', $4 \
                 FROM json_each($1) WHERE true \
                 ON CONFLICT (dossier_seq, destination) DO UPDATE SET \
                 attempts = CASE WHEN deliveries.status = 'dead' THEN 0 \
                            ELSE deliveries.attempts END, \
                 first_failure_at = CASE WHEN deliveries.status = 'dead' THEN NULL \
                                    ELSE deliveries.first_failure_at END, \
                 status = excluded.status, waiting_for = '[]', updated_at = excluded.updated_at"
            ))
            .bind(to_json("deliveries", &rows.deliveries)?)
            .bind(AGORA)
            .bind(to_json("deliveries", &Delivered::Unknown)?)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error("deliveries", e))?;
        }
        if !rows.sources.is_empty() {
            sqlx::query(concat!(
                "INSERT INTO dossier_sources (dossier_seq, dossier_id, system, source_version, \
                 in_perimeter, record, received_at) \
                 SELECT ",
                seq_of!("value ->> '$.id'"),
                ", value ->> '$.id', value ->> '$.system', value ->> '$.version', \
                 value ->> '$.in_perimeter', value ->> '$.record', $2 FROM json_each($1) WHERE true \
                 ON CONFLICT (dossier_seq, system) DO UPDATE SET \
                 source_version = excluded.source_version, in_perimeter = excluded.in_perimeter, \
                 record = excluded.record, received_at = excluded.received_at"
            ))
            .bind(to_json("dossier sources", &rows.sources)?)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| db_error("dossier sources", e))?;
        }
        Ok(())
    }

    /// The dossiers a journal entry shaped, in its records' order, as they stand now.
    pub(super) async fn linked_dossiers(
        tx: &mut Tx,
        message_id: &str,
    ) -> Result<Vec<AcceptedDossier>, LedgerError> {
        let what = format!("journal entry {message_id}");
        sqlx::query(sql::LINKED_DOSSIERS)
            .bind(message_id)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| db_error(&what, e))?
            .iter()
            .map(|r| {
                Ok(AcceptedDossier {
                    dossier_id: get(r, &what, "dossier_id")?,
                    in_perimeter: get(r, &what, "in_perimeter")?,
                    changed: false,
                    desired_version: get(r, &what, "desired_version")?,
                })
            })
            .collect()
    }

    /// Dossiers with their sources and delivery toward AGORA (those found, in no given order).
    pub(super) async fn read_dossiers(
        conn: &mut SqliteConnection,
        dossier_ids: &[String],
    ) -> Result<Vec<DossierRow>, LedgerError> {
        let mut found = Vec::with_capacity(dossier_ids.len());
        for chunk in dossier_ids.chunks(IDS_PER_STATEMENT) {
            let ids = to_json("dossier ids", &chunk)?;
            let mut sources: HashMap<String, Vec<Dossier>> = HashMap::new();
            for r in sqlx::query(
                "SELECT s.dossier_id, s.record FROM dossiers d \
                 JOIN dossier_sources s ON s.dossier_seq = d.seq \
                 WHERE d.dossier_id IN (SELECT value FROM json_each($1)) \
                 ORDER BY s.dossier_id, s.system",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("dossiers", e))?
            {
                let dossier_id: String = get(&r, "dossiers", "dossier_id")?;
                let what = format!("dossier {dossier_id}");
                let record: String = get(&r, &what, "record")?;
                sources
                    .entry(dossier_id)
                    .or_default()
                    .push(from_json(&what, &record)?);
            }
            let rows = sqlx::query(concat!(
                select_dossiers!(),
                "WHERE d.dossier_id IN (SELECT value FROM json_each($2))"
            ))
            .bind(AGORA)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("dossiers", e))?;
            for r in &rows {
                found.push(Self::dossier_from_row(r, &mut sources)?);
            }
        }
        Ok(found)
    }

    /// Decodes a row of `select_dossiers!()`, taking its sources out of `sources`.
    pub(super) fn dossier_from_row(
        r: &SqliteRow,
        sources: &mut HashMap<String, Vec<Dossier>>,
    ) -> Result<DossierRow, LedgerError> {
        DossierColumns::read(
            r,
            &|what, t: String| parse_ts(what, &t),
            |_, dossier_id| Ok(sources.remove(dossier_id).unwrap_or_default()),
            |what| Self::delivery_from_row(what, r),
        )
    }
}

pub(super) async fn identity_salt(
    l: &SqliteLedger,
    offer: &crate::ledger::SaltOffer,
) -> Result<String, LedgerError> {
    let what = "identity salt";
    let (value, configured) = match offer {
        crate::ledger::SaltOffer::Configured(v) => (v.as_str(), true),
        crate::ledger::SaltOffer::Generated(v) => (v.as_str(), false),
    };
    let mut tx = l.begin_write().await?;
    // Concurrent first starts: the second waits on the key, then inserts nothing.
    sqlx::query(sql::IDENTITY_OFFER)
        .bind(value)
        .bind(configured)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
    let stored: Option<String> = sqlx::query_scalar(sql::IDENTITY_SALT)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
    commit(tx, what).await?;
    offer.settle(stored)
}

pub(super) async fn accept(
    l: &SqliteLedger,
    inbound: Inbound,
    precedence: &Precedence,
) -> Result<Accepted, LedgerError> {
    let mut tx = l.begin_write().await?;
    // The journal entry first, unless this payload was accepted before: one statement for
    // the common case.
    let message_id = stored::new_id();
    let at = now();
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO journal (message_id, system, flow, payload_hash, received_at, request_id, \
             masked_payload) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (system, payload_hash) DO NOTHING RETURNING message_id",
    )
    .bind(&message_id)
    .bind(inbound.system.as_str())
    .bind(inbound.flow.as_str())
    .bind(&inbound.payload_hash)
    .bind(ts(at))
    .bind(&inbound.request_id)
    .bind(&inbound.masked_payload)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error("journal", e))?;
    if inserted.is_none() {
        let message_id: String = sqlx::query_scalar(sql::JOURNAL_ENTRY_OF_PAYLOAD)
            .bind(inbound.system.as_str())
            .bind(&inbound.payload_hash)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error("journal", e))?;
        let dossiers = SqliteLedger::linked_dossiers(&mut tx, &message_id).await?;
        tx.rollback().await.map_err(|e| db_error("journal", e))?;
        return Ok(Accepted {
            message_id,
            duplicate: true,
            dossiers,
        });
    }

    // Every record in order, against its dossier as loaded (or as an earlier record of this
    // message left it); a refused record refuses the message (the rollback drops the journal
    // entry too).
    let named: Vec<&str> = inbound
        .records
        .iter()
        .map(|r| r.dossier_id.as_str())
        .collect();
    let mut distinct = named.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let held = SqliteLedger::load_many(&mut tx, &to_json("dossier ids", &distinct)?).await?;
    let plans = match planning::plan_inbound(&inbound, precedence, held) {
        Ok(plans) => plans,
        Err(e) => {
            tx.rollback().await.map_err(|e| db_error("accept", e))?;
            return Err(e);
        }
    };
    SqliteLedger::write_many(&mut tx, &inbound.records, &plans, at).await?;
    // A dossier named twice keeps the position of its first record.
    sqlx::query(concat!(
        "INSERT INTO journal_dossiers (message_id, dossier_id, position, dossier_seq) \
             SELECT $1, value, key, ",
        seq_of!("value"),
        " FROM json_each($2) WHERE true ORDER BY key ON CONFLICT DO NOTHING"
    ))
    .bind(&message_id)
    .bind(to_json("journal", &named)?)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("journal", e))?;
    commit(tx, "accept").await?;
    Ok(Accepted {
        message_id,
        duplicate: false,
        dossiers: inbound
            .records
            .iter()
            .zip(&plans)
            .map(|(rec, plan)| AcceptedDossier {
                dossier_id: rec.dossier_id.clone(),
                in_perimeter: plan.in_perimeter,
                changed: plan.changed,
                desired_version: plan.desired_version,
            })
            .collect(),
    })
}

pub(super) async fn dossier(
    l: &SqliteLedger,
    dossier_id: &str,
) -> Result<Option<DossierRow>, LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut conn = l.pool.begin().await.map_err(|e| db_error(&what, e))?;
    let rows = SqliteLedger::read_dossiers(&mut conn, &[dossier_id.to_string()]).await?;
    conn.rollback().await.map_err(|e| db_error(&what, e))?;
    Ok(rows.into_iter().next())
}

pub(super) async fn journal(
    l: &SqliteLedger,
    dossier_id: &str,
) -> Result<Vec<JournalEntry>, LedgerError> {
    let what = format!("journal of {dossier_id}");
    let mut conn = l.pool.begin().await.map_err(|e| db_error(&what, e))?;
    let rows = sqlx::query(concat!(
        "SELECT j.message_id, j.system, j.flow, j.payload_hash, j.received_at, j.request_id \
             FROM journal_dossiers jd JOIN journal j ON j.message_id = jd.message_id \
             WHERE jd.dossier_seq = ",
        seq_of!("$1"),
        " ORDER BY j.received_at, j.message_id"
    ))
    .bind(dossier_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error(&what, e))?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in &rows {
        let message_id: String = get(r, &what, "message_id")?;
        let dossier_ids: Vec<String> = sqlx::query_scalar(
            "SELECT dossier_id FROM journal_dossiers WHERE message_id = $1 ORDER BY position",
        )
        .bind(&message_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error(&what, e))?;
        let system: String = get(r, &what, "system")?;
        let flow: String = get(r, &what, "flow")?;
        let received_at: String = get(r, &what, "received_at")?;
        entries.push(JournalEntry {
            message_id,
            system: parse_system_col(&what, &system)?,
            flow: parse_flow(&what, &flow)?,
            payload_hash: get(r, &what, "payload_hash")?,
            received_at: parse_ts(&what, &received_at)?,
            dossier_ids,
            request_id: get(r, &what, "request_id")?,
        });
    }
    conn.rollback().await.map_err(|e| db_error(&what, e))?;
    Ok(entries)
}

pub(super) async fn dossiers(
    l: &SqliteLedger,
    dossier_ids: &[String],
) -> Result<Vec<DossierRow>, LedgerError> {
    let mut conn = l.pool.begin().await.map_err(|e| db_error("dossiers", e))?;
    let rows = SqliteLedger::read_dossiers(&mut conn, dossier_ids).await?;
    conn.rollback().await.map_err(|e| db_error("dossiers", e))?;
    Ok(rows)
}

pub(super) async fn record_unreadable(l: &SqliteLedger, u: &Unreadable) -> Result<(), LedgerError> {
    let what = "unreadable message";
    let at = ts(now());
    let mut tx = l.begin_write().await?;
    sqlx::query(sql::RECORD_UNREADABLE)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(u.system.as_str())
        .bind(u.digest())
        .bind(u.context.to_string())
        .bind(u.masked_item.as_ref().map(serde_json::Value::to_string))
        .bind(to_json(what, &u.violations)?)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
    commit(tx, what).await
}

pub(super) async fn unreadable(
    l: &SqliteLedger,
    system: Option<passerelle_adapters::canonical::System>,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<UnreadableRow>, LedgerError> {
    let what = "unreadable messages";
    let rows = sqlx::query(
        "SELECT id, system, context, masked_item, violations, first_seen, last_seen, seen \
             FROM unreadable WHERE ($1 IS NULL OR system = $1) AND ($2 IS NULL OR last_seen >= $2) \
             ORDER BY last_seen DESC, id DESC LIMIT $3",
    )
    .bind(system.map(|s| s.as_str()))
    .bind(since.map(ts))
    .bind(i64::from(limit))
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error(what, e))?;
    rows.iter()
        .map(|r| {
            let system: String = get(r, what, "system")?;
            let context: String = get(r, what, "context")?;
            let item: Option<String> = get(r, what, "masked_item")?;
            let violations: String = get(r, what, "violations")?;
            let first: String = get(r, what, "first_seen")?;
            let last: String = get(r, what, "last_seen")?;
            Ok(UnreadableRow {
                id: get(r, what, "id")?,
                system: parse_system_col(what, &system)?,
                context: from_json(what, &context)?,
                masked_item: item.map(|i| from_json(what, &i)).transpose()?,
                violations: from_json(what, &violations)?,
                first_seen: parse_ts(what, &first)?,
                last_seen: parse_ts(what, &last)?,
                seen: get(r, what, "seen")?,
            })
        })
        .collect()
}
