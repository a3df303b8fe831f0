//! What came in, on PostgreSQL: the identity salt, `accept` (the journal entry, the dossiers
//! locked, each record planned and everything written over `UNNEST`ed arrays), the journal and
//! dossier reads, and the unreadable messages.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::Dossier;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::Violation;
use sqlx::postgres::PgRow;

use super::{commit, get, PostgresLedger, Tx};
use crate::ledger::planning::{self, Loaded, Plan, PlanError, SourceWrite, StoredSource};
use crate::ledger::rows::DossierColumns;
use crate::ledger::sql;
use crate::ledger::stored;
use crate::ledger::stored::{
    corrupt, db_error, from_json, now, parse_flow, parse_system_col, to_json,
};
use crate::ledger::{
    Accepted, AcceptedDossier, DeliveryStatus, DossierRow, Flow, Inbound, JournalEntry,
    LedgerError, Unreadable, UnreadableRow, AGORA,
};

/// What one message does to one dossier: its records' plans folded in order. The last plan gives
/// the dossier's state, the last status set is the delivery's, the last record of a source is
/// the one kept; the journal links the dossier at its first position.
#[derive(Debug)]
struct DossierWrite {
    position: i32,
    /// Whether the message creates the dossier (its first record found a placeholder).
    is_new: bool,
    desired_json: String,
    desired_version: i64,
    flow: Flow,
    in_perimeter: bool,
    status: Option<DeliveryStatus>,
    /// At most one per system.
    sources: Vec<SourceWrite>,
}

impl DossierWrite {
    /// Empty until its first plan is applied.
    fn new(position: i32, is_new: bool) -> Self {
        Self {
            position,
            is_new,
            desired_json: String::new(),
            desired_version: 0,
            flow: Flow::Backfill,
            in_perimeter: false,
            status: None,
            sources: Vec::new(),
        }
    }

    /// Folds in the plan of the dossier's next record; returns the dossier as it then stands.
    fn apply(&mut self, plan: Plan) -> Loaded {
        self.desired_json = plan.desired_json;
        self.desired_version = plan.desired_version;
        self.flow = plan.flow;
        self.in_perimeter = plan.in_perimeter;
        self.status = plan.status.or(self.status);
        if let Some(source) = plan.source {
            match self.sources.iter_mut().find(|s| s.system == source.system) {
                Some(held) => *held = source,
                None => self.sources.push(source),
            }
        }
        plan.after
    }
}

impl PostgresLedger {
    /// Locks the dossiers `ids` (sorted, distinct) for this transaction, in that order, and
    /// returns those it created: a placeholder (no desired state, visible to nobody before
    /// commit) for each id not yet known.
    ///
    /// One statement: `ON CONFLICT DO UPDATE … WHERE false` updates nothing but locks each
    /// existing row, with the lock an `UPDATE` of a non-key column takes (`FOR NO KEY UPDATE`),
    /// even a row committed after this statement's snapshot. An id another transaction is
    /// creating waits for it on the unique index, then is locked as an existing row.
    pub(super) async fn lock_dossiers(
        tx: &mut Tx,
        ids: &[&str],
        perimeters: &[bool],
        flow: Flow,
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        sqlx::query_scalar(
            "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
             created_at, updated_at) \
             SELECT u.dossier_id, NULL, 0, $3, u.in_perimeter, $4, $4 \
             FROM UNNEST($1::text[], $2::bool[]) AS u(dossier_id, in_perimeter) \
             ON CONFLICT (dossier_id) DO UPDATE SET updated_at = excluded.updated_at WHERE false \
             RETURNING dossier_id",
        )
        .bind(ids)
        .bind(perimeters)
        .bind(flow.as_str())
        .bind(at)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("accept", e))
    }

    /// Loads dossiers this transaction locked (every id exists), with their sources, in one
    /// statement. Run after [`Self::lock_dossiers`], so its snapshot shows what the previous
    /// holders of the locks committed. `None` for a placeholder. (`LIMIT`: see [`Self::write`].)
    pub(super) async fn load_locked(
        tx: &mut Tx,
        ids: &[&str],
    ) -> Result<Vec<(String, Option<Loaded>)>, LedgerError> {
        sqlx::query(
            "SELECT d.dossier_id, d.desired::text AS desired, d.desired_version, d.flow, \
             d.in_perimeter, \
             (SELECT coalesce(json_agg(json_build_array(s.record, s.in_perimeter) \
                                       ORDER BY s.system), '[]'::json)::text \
              FROM dossier_sources s WHERE s.dossier_id = d.dossier_id) AS sources \
             FROM (SELECT * FROM UNNEST($1::text[]) LIMIT $2) AS u(dossier_id) \
             JOIN dossiers d ON d.dossier_id = u.dossier_id",
        )
        .bind(ids)
        .bind(i64::try_from(ids.len()).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db_error("accept", e))?
        .iter()
        .map(|row| {
            let dossier_id: String = get(row, "dossier", "dossier_id")?;
            let what = format!("dossier {dossier_id}");
            let desired: Option<String> = get(row, &what, "desired")?;
            let Some(desired) = desired else {
                return Ok((dossier_id, None));
            };
            let flow: String = get(row, &what, "flow")?;
            let sources: String = get(row, &what, "sources")?;
            let loaded = Loaded {
                desired: from_json(&what, &desired)?,
                desired_version: get(row, &what, "desired_version")?,
                flow: parse_flow(&what, &flow)?,
                in_perimeter: get(row, &what, "in_perimeter")?,
                sources: from_json::<Vec<(Dossier, bool)>>(&what, &sources)?
                    .into_iter()
                    .map(|(record, in_perimeter)| StoredSource {
                        record,
                        in_perimeter,
                    })
                    .collect(),
            };
            Ok((dossier_id, Some(loaded)))
        })
        .collect()
    }

    /// Writes what the records of one message did to their dossiers (locked by this
    /// transaction), in one statement whatever their number: the dossiers, their sources, their
    /// delivery toward AGORA, and the journal's links.
    async fn write(
        tx: &mut Tx,
        message_id: &str,
        writes: &BTreeMap<&str, DossierWrite>,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let n = writes.len();
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut desired = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut flows = Vec::with_capacity(n);
        let mut perimeters = Vec::with_capacity(n);
        let mut delivery_ids = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        let mut source_ids = Vec::with_capacity(n);
        let mut systems = Vec::with_capacity(n);
        let mut source_versions = Vec::with_capacity(n);
        let mut source_perimeters = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        for (&id, w) in writes {
            ids.push(id);
            positions.push(w.position);
            desired.push(w.desired_json.as_str());
            versions.push(w.desired_version);
            flows.push(w.flow.as_str());
            perimeters.push(w.in_perimeter);
            if let Some(status) = w.status {
                delivery_ids.push(id);
                statuses.push(status.as_str());
                created.push(w.is_new);
            }
            for s in &w.sources {
                source_ids.push(id);
                systems.push(s.system.as_str());
                source_versions.push(s.version);
                source_perimeters.push(s.in_perimeter);
                records.push(s.record_json.as_str());
            }
        }
        // The CTEs touch disjoint rows; the foreign keys are checked at the end of the statement.
        // A new dossier gets its delivery row; an existing one owed again (a status to set)
        // forgets what it waited for, and a dead one revived by a new version starts a fresh
        // series of attempts (read at write time: workers update deliveries without the dossier
        // lock).
        //
        // `LIMIT $19`, the number of dossiers (it drops nothing), is for the planner: it counts
        // an `UNNEST` of a parameter as 10 rows, so it would plan this statement anew at every
        // one-record call, or cache a plan that scans whole tables while they are small. Told
        // "few rows", it caches one plan of index lookups, right for one record as for 500. For
        // the same reason deliveries are matched on their whole key from `delivery`: a filter on
        // the destination alone would invite a scan of every delivery toward it.
        sqlx::query(
            "WITH dossier AS ( \
               UPDATE dossiers d SET desired = u.desired::jsonb, desired_version = u.version, \
               flow = u.flow, in_perimeter = u.in_perimeter, updated_at = $2, \
               created_at = CASE WHEN d.desired IS NULL THEN $2 ELSE d.created_at END \
               FROM (SELECT * FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::text[], \
                                          $7::bool[]) LIMIT $19) \
               AS u(dossier_id, desired, version, flow, in_perimeter) \
               WHERE d.dossier_id = u.dossier_id), \
             linked AS ( \
               INSERT INTO journal_dossiers (message_id, dossier_id, position) \
               SELECT $1, * FROM UNNEST($3::text[], $8::int[]) ON CONFLICT DO NOTHING), \
             delivery AS MATERIALIZED ( \
               SELECT *, $9::text AS destination \
               FROM UNNEST($10::text[], $11::text[], $12::bool[]) \
               AS u(dossier_id, status, is_new) LIMIT $19), \
             created AS ( \
               INSERT INTO deliveries (dossier_id, destination, delivered, delivered_version, \
               status, attempts, waiting_for, updated_at) \
               SELECT u.dossier_id, u.destination, $13::jsonb, 0, u.status, 0, '[]'::jsonb, $2 \
               FROM delivery u WHERE u.is_new), \
             owed AS ( \
               UPDATE deliveries v SET \
               attempts = CASE WHEN v.status = 'dead' THEN 0 ELSE v.attempts END, \
               first_failure_at = CASE WHEN v.status = 'dead' THEN NULL \
                                  ELSE v.first_failure_at END, \
               status = u.status, waiting_for = '[]'::jsonb, updated_at = $2 \
               FROM delivery u \
               WHERE NOT u.is_new AND v.dossier_id = u.dossier_id \
               AND v.destination = u.destination), \
             sourced AS ( \
               INSERT INTO dossier_sources (dossier_id, system, source_version, in_perimeter, \
               record, received_at) \
               SELECT u.dossier_id, u.system, u.version, u.in_perimeter, u.record::jsonb, $2 \
               FROM UNNEST($14::text[], $15::text[], $16::bigint[], $17::bool[], $18::text[]) \
               AS u(dossier_id, system, version, in_perimeter, record) \
               ON CONFLICT (dossier_id, system) DO UPDATE SET \
               source_version = excluded.source_version, in_perimeter = excluded.in_perimeter, \
               record = excluded.record, received_at = excluded.received_at) \
             SELECT 1",
        )
        .bind(message_id)
        .bind(at)
        .bind(&ids)
        .bind(&desired)
        .bind(&versions)
        .bind(&flows)
        .bind(&perimeters)
        .bind(&positions)
        .bind(AGORA)
        .bind(&delivery_ids)
        .bind(&statuses)
        .bind(&created)
        .bind(to_json("delivery", &Delivered::Unknown)?)
        .bind(&source_ids)
        .bind(&systems)
        .bind(&source_versions)
        .bind(&source_perimeters)
        .bind(&records)
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| db_error("accept", e))
    }

    pub(super) async fn linked_dossiers(
        &self,
        message_id: &str,
    ) -> Result<Vec<AcceptedDossier>, LedgerError> {
        let what = format!("journal entry {message_id}");
        sqlx::query(sql::LINKED_DOSSIERS)
            .bind(message_id)
            .fetch_all(&self.pool)
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

    /// Decodes a row of `select_dossiers!()`.
    pub(super) fn dossier_from_row(r: &PgRow) -> Result<DossierRow, LedgerError> {
        DossierColumns::read(
            r,
            &|_, t| Ok(t),
            |what, _| {
                let sources: String = get(r, what, "sources")?;
                from_json(what, &sources)
            },
            |what| Self::delivery_from_row(what, r),
        )
    }
}

pub(super) async fn identity_salt(
    l: &PostgresLedger,
    offer: &crate::ledger::SaltOffer,
) -> Result<String, LedgerError> {
    let what = "identity salt";
    let (value, configured) = match offer {
        crate::ledger::SaltOffer::Configured(v) => (v.as_str(), true),
        crate::ledger::SaltOffer::Generated(v) => (v.as_str(), false),
    };
    let mut tx = l.pool.begin().await.map_err(|e| db_error(what, e))?;
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
    tx.commit().await.map_err(|e| db_error(what, e))?;
    offer.settle(stored)
}

pub(super) async fn accept(
    l: &PostgresLedger,
    inbound: Inbound,
    precedence: &Precedence,
) -> Result<Accepted, LedgerError> {
    let message_id = stored::new_id();
    let at = now();
    let mut tx = l.begin("accept").await?;
    let inserted = sqlx::query(
        "INSERT INTO journal (message_id, system, flow, payload_hash, received_at, request_id, \
             masked_payload) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (system, payload_hash) DO NOTHING",
    )
    .bind(&message_id)
    .bind(inbound.system.as_str())
    .bind(inbound.flow.as_str())
    .bind(&inbound.payload_hash)
    .bind(at)
    .bind(&inbound.request_id)
    .bind(&inbound.masked_payload)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("journal", e))?
    .rows_affected();
    if inserted == 0 {
        // Already accepted (possibly by a concurrent request that just committed).
        tx.rollback().await.map_err(|e| db_error("journal", e))?;
        let existing: Option<String> = sqlx::query_scalar(sql::JOURNAL_ENTRY_OF_PAYLOAD)
            .bind(inbound.system.as_str())
            .bind(&inbound.payload_hash)
            .fetch_optional(&l.pool)
            .await
            .map_err(|e| db_error("journal", e))?;
        let message_id = existing.ok_or_else(|| {
            LedgerError::Unavailable("journal: a concurrent entry vanished; retry".into())
        })?;
        let dossiers = l.linked_dossiers(&message_id).await?;
        return Ok(Accepted {
            message_id,
            duplicate: true,
            dossiers,
        });
    }

    // Lock every dossier of the message, in id order (no deadlock between two messages), then
    // load those that existed. A message of new dossiers (a backfill's first pass) reads
    // nothing back.
    let mut ids: Vec<(&str, bool)> = inbound
        .records
        .iter()
        .map(|r| (r.dossier_id.as_str(), r.in_perimeter))
        .collect();
    ids.sort_unstable();
    ids.dedup_by(|a, b| a.0 == b.0);
    let (ids, perimeters): (Vec<&str>, Vec<bool>) = ids.into_iter().unzip();
    let created =
        PostgresLedger::lock_dossiers(&mut tx, &ids, &perimeters, inbound.flow, at).await?;
    // What the next record of each dossier merges into (`None`: a new dossier).
    let mut current: HashMap<&str, Option<Loaded>> = HashMap::with_capacity(ids.len());
    if created.len() < ids.len() {
        let created: HashSet<&str> = created.iter().map(String::as_str).collect();
        let existing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !created.contains(id))
            .collect();
        let mut loaded: HashMap<String, Option<Loaded>> =
            PostgresLedger::load_locked(&mut tx, &existing)
                .await?
                .into_iter()
                .collect();
        for id in existing {
            let dossier = loaded
                .remove(id)
                .ok_or_else(|| corrupt(&format!("dossier {id}"), "locked but not found"))?;
            current.insert(id, dossier);
        }
    }

    // Plan every record in order, a dossier named twice seeing its first record's outcome;
    // nothing is written unless every record is accepted.
    let mut writes: BTreeMap<&str, DossierWrite> = BTreeMap::new();
    let mut dossiers = Vec::with_capacity(inbound.records.len());
    let mut refused = Vec::new();
    for (position, rec) in inbound.records.iter().enumerate() {
        let id = rec.dossier_id.as_str();
        let slot = current.entry(id).or_default();
        let plan = match planning::plan(id, slot.as_ref(), rec, inbound.flow, precedence) {
            Ok(plan) => plan,
            Err(PlanError::Refused(v)) => {
                refused.push(v);
                continue;
            }
            Err(PlanError::Corrupt(e)) => return Err(e),
        };
        dossiers.push(AcceptedDossier {
            dossier_id: rec.dossier_id.clone(),
            in_perimeter: plan.in_perimeter,
            changed: plan.changed,
            desired_version: plan.desired_version,
        });
        let position = i32::try_from(position).unwrap_or(i32::MAX);
        *slot = Some(
            writes
                .entry(id)
                .or_insert_with(|| DossierWrite::new(position, plan.is_new))
                .apply(plan),
        );
    }
    if !refused.is_empty() {
        tx.rollback().await.map_err(|e| db_error("accept", e))?;
        return Err(LedgerError::Rejected(refused));
    }
    if !writes.is_empty() {
        PostgresLedger::write(&mut tx, &message_id, &writes, at).await?;
    }
    commit(tx, "accept").await?;
    Ok(Accepted {
        message_id,
        duplicate: false,
        dossiers,
    })
}

pub(super) async fn dossier(
    l: &PostgresLedger,
    dossier_id: &str,
) -> Result<Option<DossierRow>, LedgerError> {
    let what = format!("dossier {dossier_id}");
    // The worker reads this at every task: one statement.
    sqlx::query(concat!(
        select_dossiers!(),
        "WHERE d.dossier_id = $2 AND d.desired IS NOT NULL"
    ))
    .bind(AGORA)
    .bind(dossier_id)
    .fetch_optional(&l.pool)
    .await
    .map_err(|e| db_error(&what, e))?
    .as_ref()
    .map(PostgresLedger::dossier_from_row)
    .transpose()
}

pub(super) async fn journal(
    l: &PostgresLedger,
    dossier_id: &str,
) -> Result<Vec<JournalEntry>, LedgerError> {
    let what = format!("journal of {dossier_id}");
    let rows = sqlx::query(
        "SELECT j.message_id, j.system, j.flow, j.payload_hash, j.received_at, j.request_id, \
             ARRAY(SELECT o.dossier_id FROM journal_dossiers o \
                   WHERE o.message_id = j.message_id ORDER BY o.position) AS dossier_ids \
             FROM journal_dossiers jd JOIN journal j ON j.message_id = jd.message_id \
             WHERE jd.dossier_id = $1 ORDER BY j.received_at, j.message_id",
    )
    .bind(dossier_id)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error(&what, e))?;
    rows.iter()
        .map(|r| {
            let system: String = get(r, &what, "system")?;
            let flow: String = get(r, &what, "flow")?;
            Ok(JournalEntry {
                message_id: get(r, &what, "message_id")?,
                system: parse_system_col(&what, &system)?,
                flow: parse_flow(&what, &flow)?,
                payload_hash: get(r, &what, "payload_hash")?,
                received_at: get(r, &what, "received_at")?,
                dossier_ids: get(r, &what, "dossier_ids")?,
                request_id: get(r, &what, "request_id")?,
            })
        })
        .collect()
}

pub(super) async fn dossiers(
    l: &PostgresLedger,
    dossier_ids: &[String],
) -> Result<Vec<DossierRow>, LedgerError> {
    sqlx::query(concat!(
        select_dossiers!(),
        "WHERE d.dossier_id = ANY($2) AND d.desired IS NOT NULL"
    ))
    .bind(AGORA)
    .bind(dossier_ids)
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error("dossiers", e))?
    .iter()
    .map(PostgresLedger::dossier_from_row)
    .collect()
}

pub(super) async fn record_unreadable(
    l: &PostgresLedger,
    u: &Unreadable,
) -> Result<(), LedgerError> {
    let what = "unreadable message";
    sqlx::query(sql::RECORD_UNREADABLE)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(u.system.as_str())
        .bind(u.digest())
        .bind(sqlx::types::Json(&u.context))
        .bind(u.masked_item.as_ref().map(sqlx::types::Json))
        .bind(sqlx::types::Json(&u.violations))
        .bind(now())
        .execute(&l.pool)
        .await
        .map(|_| ())
        .map_err(|e| db_error(what, e))
}

pub(super) async fn unreadable(
    l: &PostgresLedger,
    system: Option<passerelle_adapters::canonical::System>,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<UnreadableRow>, LedgerError> {
    let what = "unreadable messages";
    let rows = sqlx::query(
        "SELECT id, system, context, masked_item, violations, first_seen, last_seen, seen \
             FROM unreadable WHERE ($1::text IS NULL OR system = $1) \
             AND ($2::timestamptz IS NULL OR last_seen >= $2) \
             ORDER BY last_seen DESC, id DESC LIMIT $3",
    )
    .bind(system.map(|s| s.as_str()))
    .bind(since)
    .bind(i64::from(limit))
    .fetch_all(&l.pool)
    .await
    .map_err(|e| db_error(what, e))?;
    rows.iter()
        .map(|r| {
            let system: String = get(r, what, "system")?;
            let context: sqlx::types::Json<serde_json::Value> = get(r, what, "context")?;
            let item: Option<sqlx::types::Json<serde_json::Value>> = get(r, what, "masked_item")?;
            let violations: sqlx::types::Json<Vec<Violation>> = get(r, what, "violations")?;
            Ok(UnreadableRow {
                id: get(r, what, "id")?,
                system: parse_system_col(what, &system)?,
                context: context.0,
                masked_item: item.map(|i| i.0),
                violations: violations.0,
                first_seen: get(r, what, "first_seen")?,
                last_seen: get(r, what, "last_seen")?,
                seen: get(r, what, "seen")?,
            })
        })
        .collect()
}
