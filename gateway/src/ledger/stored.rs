//! How both backends store and read values, with no I/O of their own: time and ids as the ledger
//! keeps them, stored texts parsed back into their enums, and database and JSON errors mapped to
//! [`LedgerError`] without quoting any stored value.

use chrono::{DateTime, SubsecRound, Utc};
use passerelle_adapters::canonical::System;
use passerelle_adapters::planner::Operation;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{DeliveryStatus, Flow, LedgerError, LotState};

/// Now, in UTC, truncated to the microsecond: what PostgreSQL keeps, so values read back compare
/// equal to the ones written, whatever the backend.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new time-ordered id (UUID v7).
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The inverse of [`System::as_str`].
pub(crate) fn parse_system(s: &str) -> Option<System> {
    s.parse().ok()
}

pub(crate) fn parse_status(what: &str, s: &str) -> Result<DeliveryStatus, LedgerError> {
    DeliveryStatus::parse(s).ok_or_else(|| corrupt(what, format!("unknown delivery status {s:?}")))
}

pub(crate) fn parse_flow(what: &str, s: &str) -> Result<Flow, LedgerError> {
    Flow::parse(s).ok_or_else(|| corrupt(what, format!("unknown flow {s:?}")))
}

pub(crate) fn parse_system_col(what: &str, s: &str) -> Result<System, LedgerError> {
    parse_system(s).ok_or_else(|| corrupt(what, format!("unknown system {s:?}")))
}

pub(crate) fn parse_operation(what: &str, s: &str) -> Result<Operation, LedgerError> {
    Operation::ALL
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| corrupt(what, format!("unknown operation {s:?}")))
}

/// A `std` duration as a chrono one, capped at a century (a TTL or a retention longer than that
/// is "forever" for a ledger, and keeps timestamps in range).
pub(crate) fn capped(d: std::time::Duration) -> chrono::Duration {
    let century = chrono::Duration::days(36_525);
    chrono::Duration::from_std(d).map_or(century, |d| d.min(century))
}

pub(crate) fn corrupt(what: &str, detail: impl Into<String>) -> LedgerError {
    LedgerError::Corrupt {
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// Serialises a value of ours; failing is a bug (maps with non-string keys), reported as corrupt.
pub(crate) fn to_json<T: Serialize>(what: &str, value: &T) -> Result<String, LedgerError> {
    serde_json::to_string(value).map_err(|e| corrupt(what, json_error_detail(&e)))
}

pub(crate) fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, LedgerError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, json_error_detail(&e)))
}

/// serde_json's messages may quote the offending value (a name in the wrong place): keep only its
/// category and position.
fn json_error_detail(e: &serde_json::Error) -> String {
    format!(
        "invalid JSON ({:?} error at line {}, column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Maps a database error: a value that cannot be decoded is a corrupt row, anything else (I/O,
/// timeouts, pool, refused statements) makes the ledger unavailable. sqlx's messages name columns
/// and constraints, not values nor connection strings.
pub(crate) fn db_error(context: &str, e: sqlx::Error) -> LedgerError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => corrupt(context, e.to_string()),
        other => LedgerError::Unavailable(format!("{context}: {other}")),
    }
}

/// Keeps an error text to a sane size (on a character boundary).
pub(crate) fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

pub(crate) fn parse_lot_state(what: &str, s: &str) -> Result<LotState, LedgerError> {
    LotState::parse(s).ok_or_else(|| corrupt(what, format!("unknown lot state {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_on_a_char_boundary() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("éééé", 2), "éé…");
    }

    #[test]
    fn systems_parse_back() {
        for s in System::ALL.iter().copied() {
            assert_eq!(parse_system(s.as_str()), Some(s));
        }
        assert_eq!(parse_system("nope"), None);
    }
}
