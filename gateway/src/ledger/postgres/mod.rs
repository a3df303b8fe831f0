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
//! 4. Every record is planned in memory (`planning::plan`), in order, each against the dossier as
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
//!
//! This module holds what every role uses: the connection and its migrations, the transactions, the SQL
//! fragments (macros, defined before the role modules so that they see them) and the
//! ledger's role traits, implemented by `impl_roles!` (`ledger/roles.rs`, shared by both
//! backends), each operation delegating to the function of the same name in its role's file:
//!
//! - `intake`: what came in: the identity salt, `accept`, the journal, the dossier reads
//!   (`dossier`, `dossiers`) and the unreadable messages;
//! - `deliveries`: the way out: leases, `record_operation`, `settle_delivery`,
//!   `record_failure`, and the reads of delivery state (`operations`, `pending`, `sessions`,
//!   `deliveries`);
//! - `dead_letters`: `dead_letter`, `dead_letters`, `replay`, `replay_counted`;
//! - `lots`: the backfill's lots (`claim_lot`, `lot`, `open_lots`, `lot_submitted`,
//!   `settle_lot`) and `backfill_progress`;
//! - `checkpoints`: `checkpoint`, `set_checkpoint` and `purge_payloads` (housekeeping that
//!   belongs to no flow);
//! - `outbox` (the returns and the backfill reports) and `progress` (the console's lots and
//!   inputs), which predate this split.
//!
//! Borderline choices: `identity_salt` is intake (it names the dossiers that come in);
//! `operations` and `sessions` are deliveries (they read what was, or is to be, delivered);
//! `backfill_progress` is lots (it counts the lots' flow); `purge_payloads` is checkpoints (the
//! journal's retention, run by a singleton like the checkpoints' writers). The few operations
//! that only delegate elsewhere (`health`, the returns, the reports, the progress reads and the
//! operators' search) are delegated the same way, by `impl_roles!`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use passerelle_adapters::canonical::State;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::Violation;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::stored::db_error;
use super::{
    mask_url, Accepted, BackfillProgress, DeadLetter, DeadLetterFilter, DeadReason, DeliveryRow,
    DeliveryStatus, DossierRow, Inbound, JournalEntry, Lease, Ledger, LedgerError, LotLine, LotRow,
    OperationRecord, Replayed, Unreadable, UnreadableRow,
};
use crate::ledger::sql;
use crate::ledger::{
    CheckpointLedger, DeadLetterLedger, DeliveryLedger, IntakeLedger, LotLedger, OutboxLedger,
    ProgressLedger, SearchLedger,
};

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
/// The texts are `planning::DELIVERED_NOT_PRESENT`, as serde writes them (a test checks).
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

mod checkpoints;
mod dead_letters;
mod deliveries;
mod intake;
mod lots;
mod outbox;
mod progress;

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
}

async fn commit(tx: Tx, what: &str) -> Result<(), LedgerError> {
    tx.commit().await.map_err(|e| db_error(what, e))
}

impl_roles!(PostgresLedger, search: (postgres_ids, postgres_sessions, postgres_activity));

#[cfg(test)]
mod tests {
    use crate::ledger::planning::DELIVERED_NOT_PRESENT;

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
