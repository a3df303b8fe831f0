//! The production ledger: PostgreSQL, shared by several gateway replicas.
//!
//! `accept` runs at READ COMMITTED and serialises the messages of one dossier with a row lock.
//! It is set-based: a handful of statements whatever the number of records (a backfill message
//! carries hundreds).
//!
//! 1. The journal entry is inserted first, with `ON CONFLICT DO NOTHING` on (system, payload
//!    hash): a concurrent identical payload waits for the first and then answers as a duplicate.
//! 2. One statement inserts a placeholder row for each new dossier (no desired state, visible to
//!    nobody before commit) and locks each existing one: `INSERT … ON CONFLICT DO UPDATE … WHERE
//!    false` updates nothing but locks the conflicting row, with the lock an `UPDATE` of a
//!    non-key column takes (`FOR NO KEY UPDATE`; `FOR UPDATE` would also block the foreign-key
//!    checks of a worker inserting an operation of that dossier while it holds the dossier's
//!    delivery row, which waits for the same delivery row: a deadlock). Two first messages of a
//!    new dossier thus queue on the unique index, and the second locks the first's committed row.
//!    The ids go in sorted order, so two messages naming the same dossiers cannot deadlock.
//! 3. The dossiers that existed are read with their sources, by a new statement: its snapshot
//!    shows what the previous holders of the locks committed.
//! 4. Every record is planned in memory (`logic::plan`), in order, each against the dossier as
//!    the previous records of the message left it.
//! 5. One statement writes it all over `UNNEST`ed arrays: dossiers, sources, deliveries and the
//!    journal's links. The delivery's revival from `dead` is decided there, at write time, since
//!    workers update deliveries without the dossier's lock.
//!
//! Backfill lots are set-based, a few statements whatever their size: `claim_lot` picks its
//! members with `FOR UPDATE SKIP LOCKED` (concurrent claims take other dossiers instead of
//! waiting) and `settle_lot` settles each kind of line with one statement over `UNNEST`ed arrays,
//! under the lot row's lock.
//!
//! JSON is stored as JSONB (bound and read as text, decoded with serde). Every session has a
//! statement timeout, so a stuck lock makes the ledger unavailable instead of hanging the caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::{Dossier, State};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::{Delivered, Operation};
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::logic::{
    self, clip, corrupt, db_error, from_json, now, parse_flow, parse_status, parse_system_col,
    to_json, Loaded, Plan, PlanError, SourceWrite, StoredSource,
};
use super::{
    mask_url, Accepted, AcceptedDossier, BackfillProgress, DeadLetter, DeadLetterFilter,
    DeadReason, DeliveryRow, DeliveryStatus, DossierRow, Flow, Inbound, JournalEntry, Lease,
    Ledger, LedgerError, LotLine, LotMember, LotRow, LotState, OperationRecord, Replayed,
    Unreadable, UnreadableRow, AGORA,
};

mod outbox;
mod progress;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const MAX_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Any statement (a lock wait included) longer than this fails: the caller answers 503 and retries.
const STATEMENT_TIMEOUT: &str = "30s";
const MAX_ERROR_CHARS: usize = 2000;

/// The PostgreSQL ledger (production mode).
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

/// A delivery (`deliveries v`) whose delivered state is not `Present`: AGORA never confirmed it.
/// The texts are `logic::DELIVERED_NOT_PRESENT`, as serde writes them (a test checks).
macro_rules! not_present {
    () => {
        r#"v.delivered IN ('{"kind":"unknown"}'::jsonb, '{"kind":"absent"}'::jsonb)"#
    };
}

/// A delivery a backfill lot may take (`deliveries v` joined with its `dossiers d`), leases aside.
macro_rules! claimable {
    () => {
        concat!(
            "d.flow = 'backfill' AND d.in_perimeter AND v.status = 'pending' AND v.lot IS NULL AND ",
            not_present!()
        )
    };
}

/// The columns [`PostgresLedger::dossier_from_row`] reads: dossiers with their sources and their
/// delivery toward `$1`, in one statement (one snapshot, one round trip); the caller appends the
/// `WHERE`. A placeholder (desired NULL) only exists inside an uncommitted accept: never seen.
/// The columns of `deliveries v` that [`PostgresLedger::delivery_from_row`] reads.
macro_rules! delivery_columns {
    () => {
        "v.destination, v.delivered::text AS delivered, v.delivered_version, v.status, \
         v.attempts, v.last_error, v.waiting_for::text AS waiting_for, v.last_attempt_at, v.lot, \
         v.replay_id "
    };
}

macro_rules! select_dossiers {
    () => {
        concat!(
            "SELECT d.dossier_id, d.desired::text AS desired, d.desired_version, d.flow, \
             d.in_perimeter, d.created_at, d.updated_at, \
             (SELECT coalesce(json_agg(s.record ORDER BY s.system), '[]'::json)::text \
              FROM dossier_sources s WHERE s.dossier_id = d.dossier_id) AS sources, ",
            delivery_columns!(),
            "FROM dossiers d LEFT JOIN deliveries v \
             ON v.dossier_id = d.dossier_id AND v.destination = $1 "
        )
    };
}

/// The `WHERE` conditions of a dead-letter filter: `$1` destination, `$2` code, `$3` since, `$4`
/// until, `$5` include replayed, `$6` dossier (each `NULL` for "any"), then the order.
macro_rules! dead_letter_filter {
    () => {
        "($1::text IS NULL OR destination = $1) AND ($2::text IS NULL OR code = $2) AND \
         ($3::timestamptz IS NULL OR last_failure >= $3) AND \
         ($4::timestamptz IS NULL OR last_failure < $4) AND \
         ($5 OR replayed_at IS NULL) AND ($6::text IS NULL OR dossier_id = $6) \
         ORDER BY last_failure, id"
    };
}

/// A lot with its members in line order, in one statement; the caller appends the `WHERE`.
macro_rules! select_lots {
    () => {
        "SELECT l.lot_key, l.destination, l.state, l.agora_lot, l.created_at, l.updated_at, \
         ARRAY(SELECT m.dossier_id FROM lot_members m WHERE m.lot_key = l.lot_key \
               ORDER BY m.position) AS member_ids, \
         ARRAY(SELECT m.desired_version FROM lot_members m WHERE m.lot_key = l.lot_key \
               ORDER BY m.position) AS member_versions \
         FROM lots l "
    };
}

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

fn get<'r, T>(row: &'r PgRow, what: &str, col: &str) -> Result<T, LedgerError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(col).map_err(|e| db_error(what, e))
}

impl PostgresLedger {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and migrates the schema (sqlx takes
    /// an advisory lock, so replicas starting together migrate once).
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        let masked = mask_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| LedgerError::Unavailable(format!("ledger.url {masked}: {e}")))?
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("ledger {masked}: migration: {e}")))?;
        Ok(Self { pool })
    }

    /// Closes the pool (tests drop their database after it).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction. Within a fenced run ([`super::fence`]), it first checks that the run still
    /// holds its lease, by the database's clock, and keeps the lease's row share-locked until it
    /// ends: a takeover waits for this transaction, never overlaps it.
    async fn begin(&self, what: &str) -> Result<Tx, LedgerError> {
        let mut tx = self.pool.begin().await.map_err(|e| db_error(what, e))?;
        if let Some(f) = super::fence::current() {
            let held: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM leases WHERE dossier_id = $1 AND holder = $2 \
                 AND expires_at > clock_timestamp() FOR SHARE",
            )
            .bind(&f.key)
            .bind(&f.holder)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error("lease", e))?;
            if held.is_none() {
                return Err(LedgerError::LeaseLost { key: f.key });
            }
        }
        Ok(tx)
    }

    /// Locks the dossiers `ids` (sorted, distinct) for this transaction, in that order, and
    /// returns those it created: a placeholder (no desired state, visible to nobody before
    /// commit) for each id not yet known.
    ///
    /// One statement: `ON CONFLICT DO UPDATE … WHERE false` updates nothing but locks each
    /// existing row, with the lock an `UPDATE` of a non-key column takes (`FOR NO KEY UPDATE`),
    /// even a row committed after this statement's snapshot. An id another transaction is
    /// creating waits for it on the unique index, then is locked as an existing row.
    async fn lock_dossiers(
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
    async fn load_locked(
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

    async fn linked_dossiers(&self, message_id: &str) -> Result<Vec<AcceptedDossier>, LedgerError> {
        let what = format!("journal entry {message_id}");
        sqlx::query(
            "SELECT d.dossier_id, d.in_perimeter, d.desired_version FROM journal_dossiers jd \
             JOIN dossiers d ON d.dossier_id = jd.dossier_id \
             WHERE jd.message_id = $1 ORDER BY jd.position",
        )
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

    fn delivery_from_row(what: &str, r: &PgRow) -> Result<DeliveryRow, LedgerError> {
        let delivered: String = get(r, what, "delivered")?;
        let status: String = get(r, what, "status")?;
        let waiting_for: String = get(r, what, "waiting_for")?;
        Ok(DeliveryRow {
            destination: get(r, what, "destination")?,
            delivered: from_json(what, &delivered)?,
            delivered_version: get(r, what, "delivered_version")?,
            status: parse_status(what, &status)?,
            attempts: get(r, what, "attempts")?,
            last_error: get(r, what, "last_error")?,
            waiting_for: from_json::<Vec<Violation>>(what, &waiting_for)?,
            last_attempt_at: get(r, what, "last_attempt_at")?,
            replay_id: get(r, what, "replay_id")?,
        })
    }

    fn dead_letter_from_row(r: &PgRow) -> Result<DeadLetter, LedgerError> {
        let id: String = get(r, "dead letter", "id")?;
        let what = format!("dead letter {id}");
        let reason: String = get(r, &what, "reason")?;
        Ok(DeadLetter {
            dossier_id: get(r, &what, "dossier_id")?,
            destination: get(r, &what, "destination")?,
            reason: from_json(&what, &reason)?,
            attempts: get(r, &what, "attempts")?,
            first_failure: get(r, &what, "first_failure")?,
            last_failure: get(r, &what, "last_failure")?,
            replayed_at: get(r, &what, "replayed_at")?,
            replay_id: get(r, &what, "replay_id")?,
            after_replay: get(r, &what, "after_replay")?,
            id,
        })
    }

    /// Decodes a row of `select_dossiers!()`.
    fn dossier_from_row(r: &PgRow) -> Result<DossierRow, LedgerError> {
        let dossier_id: String = get(r, "dossier", "dossier_id")?;
        let what = format!("dossier {dossier_id}");
        let desired: String = get(r, &what, "desired")?;
        let flow: String = get(r, &what, "flow")?;
        let sources: String = get(r, &what, "sources")?;
        let destination: Option<String> = get(r, &what, "destination")?;
        if destination.is_none() {
            return Err(corrupt(&what, "no delivery row"));
        }
        Ok(DossierRow {
            desired: from_json(&what, &desired)?,
            desired_version: get(r, &what, "desired_version")?,
            flow: parse_flow(&what, &flow)?,
            in_perimeter: get(r, &what, "in_perimeter")?,
            sources: from_json(&what, &sources)?,
            delivery: Self::delivery_from_row(&what, r)?,
            lot: get(r, &what, "lot")?,
            created_at: get(r, &what, "created_at")?,
            updated_at: get(r, &what, "updated_at")?,
            dossier_id,
        })
    }

    /// Decodes a row of `select_lots!()`.
    fn lot_from_row(r: &PgRow) -> Result<LotRow, LedgerError> {
        let lot_key: String = get(r, "lot", "lot_key")?;
        let what = format!("lot {lot_key}");
        let state: String = get(r, &what, "state")?;
        let ids: Vec<String> = get(r, &what, "member_ids")?;
        let versions: Vec<i64> = get(r, &what, "member_versions")?;
        Ok(LotRow {
            destination: get(r, &what, "destination")?,
            state: logic::parse_lot_state(&what, &state)?,
            agora_lot: get(r, &what, "agora_lot")?,
            members: ids
                .into_iter()
                .zip(versions)
                .map(|(dossier_id, desired_version)| LotMember {
                    dossier_id,
                    desired_version,
                })
                .collect(),
            created_at: get(r, &what, "created_at")?,
            updated_at: get(r, &what, "updated_at")?,
            lot_key,
        })
    }

    /// Dead-letters dossiers toward `destination` (status `Dead`) in one statement, and returns
    /// (dossier id, dead letter id) of those that have such a delivery. With `lot`, only members
    /// of that lot, which leave it. Shared by `dead_letter` and `settle_lot`.
    async fn dead_letters_in<'e, E: sqlx::PgExecutor<'e>>(
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
            ids.push(logic::new_id());
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
    async fn replay_in(
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
                replay_id: logic::new_id(),
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

async fn commit(tx: Tx, what: &str) -> Result<(), LedgerError> {
    tx.commit().await.map_err(|e| db_error(what, e))
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn identity_salt(&self, offer: &super::SaltOffer) -> Result<String, LedgerError> {
        let what = "identity salt";
        let (value, configured) = match offer {
            super::SaltOffer::Configured(v) => (v.as_str(), true),
            super::SaltOffer::Generated(v) => (v.as_str(), false),
        };
        let mut tx = self.pool.begin().await.map_err(|e| db_error(what, e))?;
        // Concurrent first starts: the second waits on the key, then inserts nothing.
        sqlx::query(
            "INSERT INTO identity (name, value) SELECT 'dossier_salt', $1 \
             WHERE $2 OR NOT EXISTS (SELECT 1 FROM dossiers) ON CONFLICT (name) DO NOTHING",
        )
        .bind(value)
        .bind(configured)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM identity WHERE name = 'dossier_salt'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
        tx.commit().await.map_err(|e| db_error(what, e))?;
        offer.settle(stored)
    }

    async fn health(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("health", e))
    }

    async fn accept(
        &self,
        inbound: Inbound,
        precedence: &Precedence,
    ) -> Result<Accepted, LedgerError> {
        let message_id = logic::new_id();
        let at = now();
        let mut tx = self.begin("accept").await?;
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
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT message_id FROM journal WHERE system = $1 AND payload_hash = $2",
            )
            .bind(inbound.system.as_str())
            .bind(&inbound.payload_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("journal", e))?;
            let message_id = existing.ok_or_else(|| {
                LedgerError::Unavailable("journal: a concurrent entry vanished; retry".into())
            })?;
            let dossiers = self.linked_dossiers(&message_id).await?;
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
        let created = Self::lock_dossiers(&mut tx, &ids, &perimeters, inbound.flow, at).await?;
        // What the next record of each dossier merges into (`None`: a new dossier).
        let mut current: HashMap<&str, Option<Loaded>> = HashMap::with_capacity(ids.len());
        if created.len() < ids.len() {
            let created: HashSet<&str> = created.iter().map(String::as_str).collect();
            let existing: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !created.contains(id))
                .collect();
            let mut loaded: HashMap<String, Option<Loaded>> = Self::load_locked(&mut tx, &existing)
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
            let plan = match logic::plan(id, slot.as_ref(), rec, inbound.flow, precedence) {
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
            Self::write(&mut tx, &message_id, &writes, at).await?;
        }
        commit(tx, "accept").await?;
        Ok(Accepted {
            message_id,
            duplicate: false,
            dossiers,
        })
    }

    async fn dossier(&self, dossier_id: &str) -> Result<Option<DossierRow>, LedgerError> {
        let what = format!("dossier {dossier_id}");
        // The worker reads this at every task: one statement.
        sqlx::query(concat!(
            select_dossiers!(),
            "WHERE d.dossier_id = $2 AND d.desired IS NOT NULL"
        ))
        .bind(AGORA)
        .bind(dossier_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?
        .as_ref()
        .map(Self::dossier_from_row)
        .transpose()
    }

    async fn try_lease(
        &self,
        dossier_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LedgerError> {
        // The database's clock, not this process's: replicas whose clocks differ agree on when a
        // lease expires (and fenced writes judge it the same way).
        // `prev` reads the row as it was before the upsert: whose lease this one replaces.
        let taken: Option<(Option<String>,)> = sqlx::query_as(
            "WITH prev AS (SELECT holder FROM leases WHERE dossier_id = $1) \
             INSERT INTO leases (dossier_id, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (dossier_id) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp() \
             RETURNING (SELECT holder FROM prev)",
        )
        .bind(dossier_id)
        .bind(holder)
        .bind(logic::capped(ttl).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("lease", e))?;
        Ok(logic::lease(taken.map(|(prev,)| prev), holder))
    }

    async fn release(&self, dossier_id: &str, holder: &str) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM leases WHERE dossier_id = $1 AND holder = $2")
            .bind(dossier_id)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("lease", e))
    }

    async fn record_operation(
        &self,
        dossier_id: &str,
        destination: &str,
        op: &OperationRecord,
        delivered: &Delivered,
        ret: Option<&super::outbox::PendingReturn>,
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        // One statement (atomic by itself) records the call; the return AGORA's answer makes
        // joins it in one transaction.
        let mut tx = self.begin(&what).await?;
        let recorded = sqlx::query(
            "WITH delivery AS ( \
               UPDATE deliveries SET delivered = $3::text::jsonb, updated_at = $4 \
               WHERE dossier_id = $1 AND destination = $2 RETURNING 1) \
             INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
             numero_agora, at, replay_id) SELECT $1, $2, $5, $6, $7, $8, $9, $10 FROM delivery",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(to_json(&what, delivered)?)
        .bind(now())
        .bind(op.operation.name())
        .bind(op.status.map(i32::from))
        .bind(&op.outcome)
        .bind(&op.numero_agora)
        .bind(op.at)
        .bind(&op.replay_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if recorded == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        if let Some(ret) = ret {
            outbox::write(&mut tx, dossier_id, ret).await?;
        }
        commit(tx, &what).await
    }

    async fn claim_returns(
        &self,
        limit: u32,
        claim: Duration,
    ) -> Result<Vec<super::outbox::DueReturn>, LedgerError> {
        outbox::claim(&self.pool, limit, claim).await
    }

    async fn settle_return(
        &self,
        return_id: &str,
        attempt: &super::outbox::ReturnAttempt,
    ) -> Result<(), LedgerError> {
        outbox::settle(&self.pool, return_id, attempt).await
    }

    async fn returns_of(
        &self,
        dossier_id: &str,
    ) -> Result<Vec<super::outbox::ReturnRow>, LedgerError> {
        outbox::of_dossier(&self.pool, dossier_id).await
    }

    async fn store_backfill_report(
        &self,
        counts: &serde_json::Value,
        gzip_json: &[u8],
    ) -> Result<String, LedgerError> {
        outbox::store_report(&self.pool, counts, gzip_json).await
    }

    async fn backfill_reports(
        &self,
        limit: u32,
    ) -> Result<Vec<super::outbox::ReportMeta>, LedgerError> {
        outbox::reports(&self.pool, limit).await
    }

    async fn backfill_report(&self, report_id: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        outbox::report(&self.pool, report_id).await
    }

    async fn settle_delivery(
        &self,
        dossier_id: &str,
        destination: &str,
        status: DeliveryStatus,
        desired_version: i64,
        waiting_for: &[Violation],
    ) -> Result<(), LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin(&what).await?;
        // A newer desired version arrived while the worker reconciled an older one: what was
        // reached is recorded, but the dossier stays owed.
        let updated = sqlx::query(
            "UPDATE deliveries dl SET \
             status = CASE WHEN $4 < d.desired_version THEN 'pending' ELSE $3 END, \
             replay_id = CASE WHEN $4 < d.desired_version OR $3 = 'pending' THEN dl.replay_id \
                         END, \
             delivered_version = CASE WHEN $3 = 'delivered' \
                                 THEN GREATEST(dl.delivered_version, $4) \
                                 ELSE dl.delivered_version END, \
             waiting_for = $5::text::jsonb, attempts = 0, last_error = NULL, \
             first_failure_at = NULL, updated_at = $6 \
             FROM dossiers d \
             WHERE d.dossier_id = dl.dossier_id AND dl.dossier_id = $1 AND dl.destination = $2",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(status.as_str())
        .bind(desired_version)
        .bind(to_json(&what, &waiting_for)?)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if updated == 0 {
            return Err(LedgerError::NotFound { what: "delivery" });
        }
        commit(tx, &what).await
    }

    async fn record_failure(
        &self,
        dossier_id: &str,
        destination: &str,
        error: &str,
    ) -> Result<i32, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin(&what).await?;
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $3, \
             last_attempt_at = $4, first_failure_at = COALESCE(first_failure_at, $4), updated_at = $4 \
             WHERE dossier_id = $1 AND destination = $2 RETURNING attempts",
        )
        .bind(dossier_id)
        .bind(destination)
        .bind(clip(error, MAX_ERROR_CHARS))
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        let attempts = attempts.ok_or(LedgerError::NotFound { what: "delivery" })?;
        commit(tx, &what).await?;
        Ok(attempts)
    }

    async fn dead_letter(
        &self,
        dossier_id: &str,
        destination: &str,
        reason: &DeadReason,
    ) -> Result<String, LedgerError> {
        let what = format!("dossier {dossier_id}");
        let mut tx = self.begin(&what).await?;
        let id = Self::dead_letters_in(&mut *tx, destination, &[(dossier_id, reason)], now(), None)
            .await?
            .pop()
            .map(|(_, id)| id)
            .ok_or(LedgerError::NotFound { what: "delivery" })?;
        commit(tx, &what).await?;
        Ok(id)
    }

    async fn dead_letters(
        &self,
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
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("dead letters", e))?
        .iter()
        .map(Self::dead_letter_from_row)
        .collect()
    }

    async fn replay(&self, dead_letter_id: &str) -> Result<Replayed, LedgerError> {
        let what = format!("dead letter {dead_letter_id}");
        let mut tx = self.begin(&what).await?;
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
        let replayed = Self::replay_in(&mut tx, &[row], now()).await?;
        commit(tx, &what).await?;
        replayed.into_iter().next().ok_or(LedgerError::NotFound {
            what: "dead letter",
        })
    }

    async fn replay_counted(
        &self,
        filter: &DeadLetterFilter,
        expected: Option<usize>,
    ) -> Result<Vec<Replayed>, LedgerError> {
        let mut tx = self.begin("dead letters").await?;
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
        let replayed = Self::replay_in(&mut tx, &rows, now()).await?;
        commit(tx, "dead letters").await?;
        Ok(replayed)
    }

    async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
        let what = format!("journal of {dossier_id}");
        let rows = sqlx::query(
            "SELECT j.message_id, j.system, j.flow, j.payload_hash, j.received_at, j.request_id, \
             ARRAY(SELECT o.dossier_id FROM journal_dossiers o \
                   WHERE o.message_id = j.message_id ORDER BY o.position) AS dossier_ids \
             FROM journal_dossiers jd JOIN journal j ON j.message_id = jd.message_id \
             WHERE jd.dossier_id = $1 ORDER BY j.received_at, j.message_id",
        )
        .bind(dossier_id)
        .fetch_all(&self.pool)
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

    async fn operations(
        &self,
        dossier_id: &str,
        destination: &str,
    ) -> Result<Vec<OperationRecord>, LedgerError> {
        let what = format!("operations of {dossier_id}");
        sqlx::query(
            "SELECT operation, http_status, outcome, numero_agora, at, replay_id FROM operations \
             WHERE dossier_id = $1 AND destination = $2 ORDER BY id",
        )
        .bind(dossier_id)
        .bind(destination)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?
        .iter()
        .map(|r| {
            let operation: String = get(r, &what, "operation")?;
            let status: Option<i32> = get(r, &what, "http_status")?;
            Ok(OperationRecord {
                operation: logic::parse_operation(&what, &operation)?,
                status: status
                    .map(|s| u16::try_from(s).map_err(|_| corrupt(&what, "bad HTTP status")))
                    .transpose()?,
                outcome: get(r, &what, "outcome")?,
                numero_agora: get(r, &what, "numero_agora")?,
                at: get(r, &what, "at")?,
                replay_id: get(r, &what, "replay_id")?,
            })
        })
        .collect()
    }

    async fn pending(
        &self,
        destination: &str,
        quiet_for: Duration,
        limit: i64,
    ) -> Result<Vec<String>, LedgerError> {
        let cutoff = now() - logic::capped(quiet_for);
        // Lot members and claimable backfill dossiers are the lots' to deliver.
        sqlx::query_scalar(concat!(
            "SELECT v.dossier_id FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
             WHERE v.destination = $1 AND v.status = 'pending' AND v.updated_at <= $3 \
             AND v.lot IS NULL AND NOT (d.flow = 'backfill' AND d.in_perimeter AND ",
            not_present!(),
            ") ORDER BY v.updated_at, v.dossier_id LIMIT $2"
        ))
        .bind(destination)
        .bind(limit.max(0))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("pending", e))
    }

    async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError> {
        let cutoff = now() - logic::capped(retention);
        sqlx::query(
            "UPDATE journal SET masked_payload = NULL \
             WHERE masked_payload IS NOT NULL AND received_at < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error("purge", e))
    }

    async fn sessions(&self, states: &[State]) -> Result<Vec<SessionRef>, LedgerError> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT DISTINCT f, a, s FROM ( \
               SELECT desired -> 'training' ->> 'numero_formation' AS f, \
                      desired -> 'training' ->> 'numero_action' AS a, \
                      desired -> 'training' ->> 'numero_session' AS s \
               FROM dossiers WHERE in_perimeter AND desired IS NOT NULL \
               AND desired ->> 'state' = ANY($1)) AS open \
             WHERE f IS NOT NULL AND a IS NOT NULL AND s IS NOT NULL",
        )
        .bind(&states)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("sessions", e))?;
        Ok(logic::sessions(rows))
    }

    async fn dossiers(&self, dossier_ids: &[String]) -> Result<Vec<DossierRow>, LedgerError> {
        sqlx::query(concat!(
            select_dossiers!(),
            "WHERE d.dossier_id = ANY($2) AND d.desired IS NOT NULL"
        ))
        .bind(AGORA)
        .bind(dossier_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("dossiers", e))?
        .iter()
        .map(Self::dossier_from_row)
        .collect()
    }

    async fn deliveries(
        &self,
        destination: &str,
        dossier_ids: &[String],
    ) -> Result<Vec<(String, DeliveryRow)>, LedgerError> {
        sqlx::query(concat!(
            "SELECT v.dossier_id, ",
            delivery_columns!(),
            "FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
             WHERE v.destination = $1 AND v.dossier_id = ANY($2) AND d.desired IS NOT NULL"
        ))
        .bind(destination)
        .bind(dossier_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("deliveries", e))?
        .iter()
        .map(|r| {
            let dossier_id: String = get(r, "deliveries", "dossier_id")?;
            let what = format!("dossier {dossier_id}");
            Ok((dossier_id, Self::delivery_from_row(&what, r)?))
        })
        .collect()
    }

    async fn claim_lot(
        &self,
        destination: &str,
        lot_key: &str,
        limit: i64,
    ) -> Result<Option<LotRow>, LedgerError> {
        let what = format!("lot {lot_key}");
        let at = now();
        let mut tx = self.begin(&what).await?;
        // The lot first: deliveries.lot refers to it.
        sqlx::query(
            "INSERT INTO lots (lot_key, destination, state, agora_lot, created_at, updated_at) \
             VALUES ($1, $2, 'claimed', NULL, $3, $3)",
        )
        .bind(lot_key)
        .bind(destination)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        // SKIP LOCKED: a concurrent claim takes other dossiers instead of waiting for these.
        let mut claimed: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(concat!(
            "WITH picked AS MATERIALIZED ( \
               SELECT v.dossier_id FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
               WHERE v.destination = $2 AND ",
            claimable!(),
            " AND NOT EXISTS (SELECT 1 FROM leases l \
                                WHERE l.dossier_id = v.dossier_id AND l.expires_at > $3) \
               ORDER BY v.updated_at, v.dossier_id LIMIT $4 \
               FOR UPDATE OF v SKIP LOCKED) \
             UPDATE deliveries v SET lot = $1 FROM picked p, dossiers d \
             WHERE v.dossier_id = p.dossier_id AND v.destination = $2 \
             AND d.dossier_id = v.dossier_id \
             RETURNING v.dossier_id, d.desired_version, d.created_at"
        ))
        .bind(lot_key)
        .bind(destination)
        .bind(at)
        .bind(limit.max(0))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        if claimed.is_empty() {
            tx.rollback().await.map_err(|e| db_error(&what, e))?;
            return Ok(None);
        }
        claimed.sort_unstable_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
        let positions: Vec<i32> = (0..).take(claimed.len()).collect();
        let ids: Vec<&str> = claimed.iter().map(|c| c.0.as_str()).collect();
        let versions: Vec<i64> = claimed.iter().map(|c| c.1).collect();
        sqlx::query(
            "INSERT INTO lot_members (lot_key, position, dossier_id, desired_version) \
             SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[])",
        )
        .bind(lot_key)
        .bind(&positions)
        .bind(&ids)
        .bind(&versions)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await?;
        Ok(Some(LotRow {
            lot_key: lot_key.to_string(),
            destination: destination.to_string(),
            state: LotState::Claimed,
            agora_lot: None,
            members: claimed
                .into_iter()
                .map(|(dossier_id, desired_version, _)| LotMember {
                    dossier_id,
                    desired_version,
                })
                .collect(),
            created_at: at,
            updated_at: at,
        }))
    }

    async fn lot(&self, lot_key: &str) -> Result<Option<LotRow>, LedgerError> {
        sqlx::query(concat!(select_lots!(), "WHERE l.lot_key = $1"))
            .bind(lot_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(&format!("lot {lot_key}"), e))?
            .as_ref()
            .map(Self::lot_from_row)
            .transpose()
    }

    async fn open_lots(&self, destination: &str) -> Result<Vec<LotRow>, LedgerError> {
        sqlx::query(concat!(
            select_lots!(),
            "WHERE l.destination = $1 AND l.state <> 'done' ORDER BY l.created_at, l.lot_key"
        ))
        .bind(destination)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("lots", e))?
        .iter()
        .map(Self::lot_from_row)
        .collect()
    }

    async fn lot_submitted(&self, lot_key: &str, agora_lot: &str) -> Result<(), LedgerError> {
        let what = format!("lot {lot_key}");
        let mut tx = self.begin(&what).await?;
        let updated = sqlx::query(
            "UPDATE lots SET state = 'submitted', agora_lot = $2, updated_at = $3 \
             WHERE lot_key = $1",
        )
        .bind(lot_key)
        .bind(agora_lot)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?
        .rows_affected();
        if updated == 0 {
            return Err(LedgerError::NotFound { what: "lot" });
        }
        commit(tx, &what).await
    }

    async fn settle_lot(
        &self,
        lot_key: &str,
        lines: &[LotLine],
        done: bool,
    ) -> Result<Vec<String>, LedgerError> {
        let what = format!("lot {lot_key}");
        let at = now();
        let mut tx = self.begin(&what).await?;
        // The lot's row lock serialises the settlements of one lot.
        let row =
            sqlx::query("SELECT destination, agora_lot FROM lots WHERE lot_key = $1 FOR UPDATE")
                .bind(lot_key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?
                .ok_or(LedgerError::NotFound { what: "lot" })?;
        let destination: String = get(&row, &what, "destination")?;
        let agora_lot: Option<String> = get(&row, &what, "agora_lot")?;
        let lines = logic::lot_lines(agora_lot.as_deref().unwrap_or(lot_key), lines)?;
        // (dossier id, status afterwards) of every member settled or released.
        let mut left: Vec<(String, String)> = Vec::new();

        // Each kind of line is one statement, whatever the lot's size. Only current members are
        // touched (`v.lot = $1`).
        if !lines.accepted.is_empty() {
            let ids: Vec<&str> = lines.accepted.iter().map(|l| l.dossier_id).collect();
            let delivered: Vec<&str> = lines
                .accepted
                .iter()
                .map(|l| l.delivered_json.as_str())
                .collect();
            let versions: Vec<i64> = lines.accepted.iter().map(|l| l.version).collect();
            let numeros: Vec<&str> = lines.accepted.iter().map(|l| l.numero_agora).collect();
            let outcomes: Vec<&str> = lines.accepted.iter().map(|l| l.outcome.as_str()).collect();
            left.extend(
                sqlx::query_as::<_, (String, String)>(
                    "WITH line AS ( \
                       SELECT * FROM UNNEST($4::text[], $5::text[], $6::bigint[], $7::text[], \
                                            $8::text[]) \
                       AS t(dossier_id, delivered, version, numero_agora, outcome)), \
                     settled AS ( \
                       UPDATE deliveries v SET delivered = line.delivered::jsonb, \
                       delivered_version = GREATEST(v.delivered_version, line.version), \
                       status = CASE WHEN d.desired_version = line.version \
                                THEN 'delivered' ELSE 'pending' END, \
                       replay_id = CASE WHEN d.desired_version = line.version \
                                   THEN NULL ELSE v.replay_id END, \
                       attempts = 0, last_error = NULL, first_failure_at = NULL, \
                       waiting_for = '[]'::jsonb, lot = NULL, updated_at = $3 \
                       FROM line, dossiers d \
                       WHERE v.dossier_id = line.dossier_id AND v.destination = $2 \
                       AND v.lot = $1 AND d.dossier_id = v.dossier_id \
                       RETURNING v.dossier_id, v.status, line.numero_agora, line.outcome), \
                     recorded AS ( \
                       INSERT INTO operations (dossier_id, destination, operation, http_status, \
                       outcome, numero_agora, at) \
                       SELECT dossier_id, $2, $9, 202, outcome, numero_agora, $3 FROM settled) \
                     SELECT dossier_id, status FROM settled",
                )
                .bind(lot_key)
                .bind(&destination)
                .bind(at)
                .bind(&ids)
                .bind(&delivered)
                .bind(&versions)
                .bind(&numeros)
                .bind(&outcomes)
                .bind(Operation::Create.name())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?,
            );
        }
        if !lines.nothing_owed.is_empty() {
            let ids: Vec<&str> = lines.nothing_owed.iter().map(|l| l.0).collect();
            let versions: Vec<i64> = lines.nothing_owed.iter().map(|l| l.1).collect();
            left.extend(
                sqlx::query_as::<_, (String, String)>(
                    "UPDATE deliveries v SET \
                     delivered_version = GREATEST(v.delivered_version, line.version), \
                     status = CASE WHEN d.desired_version = line.version \
                              THEN 'delivered' ELSE 'pending' END, \
                     replay_id = CASE WHEN d.desired_version = line.version \
                                 THEN NULL ELSE v.replay_id END, \
                     attempts = 0, last_error = NULL, first_failure_at = NULL, \
                     waiting_for = '[]'::jsonb, lot = NULL, updated_at = $3 \
                     FROM UNNEST($4::text[], $5::bigint[]) AS line(dossier_id, version), dossiers d \
                     WHERE v.dossier_id = line.dossier_id AND v.destination = $2 \
                     AND v.lot = $1 AND d.dossier_id = v.dossier_id \
                     RETURNING v.dossier_id, v.status",
                )
                .bind(lot_key)
                .bind(&destination)
                .bind(at)
                .bind(&ids)
                .bind(&versions)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?,
            );
        }
        if !lines.dead.is_empty() {
            Self::dead_letters_in(&mut *tx, &destination, &lines.dead, at, Some(lot_key)).await?;
        }
        if !lines.released.is_empty() {
            left.extend(
                sqlx::query_as::<_, (String, String)>(
                    "UPDATE deliveries v SET lot = NULL \
                     WHERE v.dossier_id = ANY($3) AND v.destination = $2 AND v.lot = $1 \
                     RETURNING v.dossier_id, v.status",
                )
                .bind(lot_key)
                .bind(&destination)
                .bind(&lines.released)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?,
            );
        }
        if done {
            // The members the report did not name leave the lot too.
            left.extend(
                sqlx::query_as::<_, (String, String)>(
                    "UPDATE deliveries SET lot = NULL WHERE lot = $1 RETURNING dossier_id, status",
                )
                .bind(lot_key)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?,
            );
        }
        sqlx::query(
            "UPDATE lots SET state = CASE WHEN $2 THEN 'done' ELSE state END, updated_at = $3 \
             WHERE lot_key = $1",
        )
        .bind(lot_key)
        .bind(done)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        commit(tx, &what).await?;
        let mut pending: Vec<String> = left
            .into_iter()
            .filter(|(_, status)| status == DeliveryStatus::Pending.as_str())
            .map(|(id, _)| id)
            .collect();
        pending.sort_unstable();
        Ok(pending)
    }

    async fn backfill_progress(&self, destination: &str) -> Result<BackfillProgress, LedgerError> {
        let (claimable, in_lots, open_lots, pending_other): (i64, i64, i64, i64) =
            sqlx::query_as(concat!(
                "SELECT \
                 (SELECT count(*) FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
                  WHERE v.destination = $1 AND ",
                claimable!(),
                "), \
                 (SELECT count(*) FROM deliveries WHERE destination = $1 AND lot IS NOT NULL), \
                 (SELECT count(*) FROM lots WHERE destination = $1 AND state <> 'done'), \
                 (SELECT count(*) FROM deliveries v JOIN dossiers d ON d.dossier_id = v.dossier_id \
                  WHERE v.destination = $1 AND d.flow = 'backfill' AND v.status = 'pending' \
                  AND v.lot IS NULL AND NOT (d.in_perimeter AND ",
                not_present!(),
                "))"
            ))
            .bind(destination)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("backfill progress", e))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(BackfillProgress {
            claimable: count(claimable),
            in_lots: count(in_lots),
            open_lots: count(open_lots),
            pending_other: count(pending_other),
        })
    }

    async fn lot_progress(
        &self,
        destination: &str,
        limit: u32,
    ) -> Result<Vec<super::progress::LotProgress>, LedgerError> {
        progress::lots(&self.pool, destination, limit).await
    }

    async fn input_progress(
        &self,
        limit: u32,
    ) -> Result<Vec<super::progress::InputProgress>, LedgerError> {
        progress::inputs(&self.pool, limit).await
    }

    async fn checkpoint(&self, key: &str) -> Result<Option<i64>, LedgerError> {
        sqlx::query_scalar("SELECT value FROM checkpoints WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("checkpoint", e))
    }

    async fn set_checkpoint(&self, key: &str, value: i64) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO checkpoints (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(|e| db_error("checkpoint", e))
    }

    async fn search(
        &self,
        filter: &super::search::SearchFilter,
    ) -> Result<super::search::SearchPage, LedgerError> {
        let ids = super::search::postgres_ids(&self.pool, filter).await?;
        super::search::page(self, filter, ids).await
    }

    async fn session_numbers(&self) -> Result<Vec<String>, LedgerError> {
        super::search::postgres_sessions(&self.pool).await
    }

    async fn activity(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<super::search::HourActivity>, LedgerError> {
        super::search::postgres_activity(&self.pool, since).await
    }

    async fn record_unreadable(&self, u: &Unreadable) -> Result<(), LedgerError> {
        let what = "unreadable message";
        sqlx::query(
            "INSERT INTO unreadable (id, system, digest, context, masked_item, violations, \
             first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (system, digest) DO UPDATE SET last_seen = excluded.last_seen, \
             seen = unreadable.seen + 1",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(u.system.as_str())
        .bind(u.digest())
        .bind(sqlx::types::Json(&u.context))
        .bind(u.masked_item.as_ref().map(sqlx::types::Json))
        .bind(sqlx::types::Json(&u.violations))
        .bind(now())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(|e| db_error(what, e))
    }

    async fn unreadable(
        &self,
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
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(what, e))?;
        rows.iter()
            .map(|r| {
                let system: String = get(r, what, "system")?;
                let context: sqlx::types::Json<serde_json::Value> = get(r, what, "context")?;
                let item: Option<sqlx::types::Json<serde_json::Value>> =
                    get(r, what, "masked_item")?;
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
}

#[cfg(test)]
mod tests {
    use super::logic::DELIVERED_NOT_PRESENT;

    #[test]
    fn not_present_spells_the_stored_texts() {
        for text in DELIVERED_NOT_PRESENT {
            assert!(
                not_present!().contains(&format!("'{text}'::jsonb")),
                "{text}"
            );
        }
    }
}
