//! The rows both backends decode alike, each one `FromRow` struct instead of two hand mappings.
//! Their columns have the same types in both dialects but for times: SQLite keeps them as
//! fixed-width text, PostgreSQL as `timestamptz`, so a row takes the stored time's type as `T`
//! and the backend says how to read it (`time`).
//!
//! Each row's id is read first, to name it in any error; then its columns, decoded (JSON,
//! statuses, times) with the same error contexts as the hand mappings they replace.

use chrono::{DateTime, Utc};
use passerelle_adapters::{Dossier, Violation};
use sqlx::{FromRow, Row};

use super::stored::{corrupt, db_error, from_json, parse_flow, parse_lot_state, parse_status};
use super::{DeadLetter, DeliveryRow, DossierRow, LedgerError, LotMember, LotRow};

/// How a backend reads a stored time (`what` names the row, for the error).
pub(super) type Time<'a, T> = &'a dyn Fn(&str, T) -> Result<DateTime<Utc>, LedgerError>;

/// The columns of a delivery (each backend's `delivery_columns!()`).
#[derive(Debug, FromRow)]
pub(super) struct DeliveryColumns<T> {
    delivered: String,
    status: String,
    waiting_for: String,
    destination: String,
    delivered_version: i64,
    attempts: i32,
    last_error: Option<String>,
    last_attempt_at: Option<T>,
    replay_id: Option<String>,
}

impl<T> DeliveryColumns<T> {
    /// Reads and decodes a delivery from `r`.
    pub(super) fn read<'r, R: Row>(
        what: &str,
        r: &'r R,
        time: Time<'_, T>,
    ) -> Result<DeliveryRow, LedgerError>
    where
        Self: FromRow<'r, R>,
    {
        let c = Self::from_row(r).map_err(|e| db_error(what, e))?;
        Ok(DeliveryRow {
            destination: c.destination,
            delivered: from_json(what, &c.delivered)?,
            delivered_version: c.delivered_version,
            status: parse_status(what, &c.status)?,
            attempts: c.attempts,
            last_error: c.last_error,
            waiting_for: from_json::<Vec<Violation>>(what, &c.waiting_for)?,
            last_attempt_at: c.last_attempt_at.map(|t| time(what, t)).transpose()?,
            replay_id: c.replay_id,
        })
    }
}

/// The columns of a dead letter.
#[derive(Debug, FromRow)]
pub(super) struct DeadLetterColumns<T> {
    reason: String,
    first_failure: T,
    last_failure: T,
    dossier_id: String,
    destination: String,
    attempts: i32,
    replayed_at: Option<T>,
    replay_id: Option<String>,
    after_replay: Option<String>,
}

impl<T> DeadLetterColumns<T> {
    /// Reads and decodes a dead letter from `r`; its id first, which names it in any error.
    pub(super) fn read<'r, R: Row>(r: &'r R, time: Time<'_, T>) -> Result<DeadLetter, LedgerError>
    where
        Self: FromRow<'r, R>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'r str: sqlx::ColumnIndex<R>,
    {
        let id: String = r.try_get("id").map_err(|e| db_error("dead letter", e))?;
        let what = format!("dead letter {id}");
        let c = Self::from_row(r).map_err(|e| db_error(&what, e))?;
        Ok(DeadLetter {
            dossier_id: c.dossier_id,
            destination: c.destination,
            reason: from_json(&what, &c.reason)?,
            attempts: c.attempts,
            first_failure: time(&what, c.first_failure)?,
            last_failure: time(&what, c.last_failure)?,
            replayed_at: c.replayed_at.map(|t| time(&what, t)).transpose()?,
            replay_id: c.replay_id,
            after_replay: c.after_replay,
            id,
        })
    }
}

/// The columns of a dossier (each backend's `select_dossiers!()`), with its delivery's; its
/// sources are the backend's to give (PostgreSQL aggregates them into the row, SQLite reads them
/// apart).
#[derive(Debug, FromRow)]
pub(super) struct DossierColumns<T> {
    /// `None` only in a corrupt row (a left join found no desired state).
    desired: Option<String>,
    destination: Option<String>,
    flow: String,
    desired_version: i64,
    in_perimeter: bool,
    lot: Option<String>,
    created_at: T,
    updated_at: T,
}

impl<T> DossierColumns<T> {
    /// Reads and decodes a dossier from `r`; its id first, which names it in any error.
    /// `sources` gives its sources' records, `delivery` decodes its delivery's columns.
    pub(super) fn read<'r, R: Row>(
        r: &'r R,
        time: Time<'_, T>,
        sources: impl FnOnce(&str, &str) -> Result<Vec<Dossier>, LedgerError>,
        delivery: impl FnOnce(&str) -> Result<DeliveryRow, LedgerError>,
    ) -> Result<DossierRow, LedgerError>
    where
        Self: FromRow<'r, R>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'r str: sqlx::ColumnIndex<R>,
    {
        let dossier_id: String = r
            .try_get("dossier_id")
            .map_err(|e| db_error("dossier", e))?;
        let what = format!("dossier {dossier_id}");
        let c = Self::from_row(r).map_err(|e| db_error(&what, e))?;
        let desired: Dossier = from_json(
            &what,
            &c.desired
                .ok_or_else(|| corrupt(&what, "no desired state"))?,
        )?;
        if c.destination.is_none() {
            return Err(corrupt(&what, "no delivery row"));
        }
        Ok(DossierRow {
            sources: sources(&what, &dossier_id)?,
            desired,
            desired_version: c.desired_version,
            flow: parse_flow(&what, &c.flow)?,
            in_perimeter: c.in_perimeter,
            delivery: delivery(&what)?,
            lot: c.lot,
            created_at: time(&what, c.created_at)?,
            updated_at: time(&what, c.updated_at)?,
            dossier_id,
        })
    }
}

/// The columns of a lot; its members are the backend's to give (PostgreSQL aggregates them into
/// the row, SQLite reads them apart).
#[derive(Debug, FromRow)]
pub(super) struct LotColumns<T> {
    destination: String,
    state: String,
    agora_lot: Option<String>,
    created_at: T,
    updated_at: T,
}

impl<T> LotColumns<T> {
    /// Reads and decodes a lot from `r`; its key first, which names it in any error.
    pub(super) fn read<'r, R: Row>(
        r: &'r R,
        time: Time<'_, T>,
        members: impl FnOnce(&str) -> Result<Vec<LotMember>, LedgerError>,
    ) -> Result<LotRow, LedgerError>
    where
        Self: FromRow<'r, R>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'r str: sqlx::ColumnIndex<R>,
    {
        let lot_key: String = r.try_get("lot_key").map_err(|e| db_error("lot", e))?;
        let what = format!("lot {lot_key}");
        let c = Self::from_row(r).map_err(|e| db_error(&what, e))?;
        Ok(LotRow {
            destination: c.destination,
            state: parse_lot_state(&what, &c.state)?,
            agora_lot: c.agora_lot,
            members: members(&what)?,
            created_at: time(&what, c.created_at)?,
            updated_at: time(&what, c.updated_at)?,
            lot_key,
        })
    }
}
