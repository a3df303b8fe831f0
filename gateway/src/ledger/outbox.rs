//! The outbox of returns to ATEXO SEM (contract §4). A return is written by
//! [`DeliveryLedger::record_operation`](super::DeliveryLedger::record_operation) in the same transaction as the
//! AGORA answer it reports, and posted later by [`crate::returns`], which retries: a crash between
//! AGORA's answer and the post loses no return, and each answer makes one return, whose id goes out
//! as the `Idempotency-Key` header.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A return to write with an AGORA answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReturn {
    /// Its id: the key ATEXO SEM can deduplicate on.
    pub return_id: String,
    /// ATEXO's dossier id (the `dossier` attribute).
    pub atexo_dossier: String,
    pub numero_agora: Option<String>,
    /// AGORA's state code after the answer (`CREE`, `ENTRE`…), when it accepted one.
    pub etat: Option<String>,
    /// The codes of AGORA's anomalies, when it rejected one.
    pub anomaly_codes: Vec<String>,
    /// The `retourAgora` XML, as it will be posted.
    pub body: String,
}

/// A return a sender has claimed: post `body` with `return_id` as its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReturn {
    pub return_id: String,
    pub dossier_id: String,
    pub body: String,
    /// Posts tried before this one.
    pub attempts: i32,
}

/// Where a return stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnStatus {
    /// Not taken yet: a sender posts it when due.
    Pending,
    /// ATEXO SEM took it.
    Sent,
    /// ATEXO SEM refused it (a `4xx`): posting it again would not help.
    Refused,
}

impl ReturnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnStatus::Pending => "pending",
            ReturnStatus::Sent => "sent",
            ReturnStatus::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ReturnStatus::Pending),
            "sent" => Some(ReturnStatus::Sent),
            "refused" => Some(ReturnStatus::Refused),
            _ => None,
        }
    }
}

/// How a post of a return ended, for [`OutboxLedger::settle_return`](super::OutboxLedger::settle_return).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnAttempt {
    Sent,
    /// Refused for good, with the status.
    Refused(String),
    /// To be posted again at `next` (the reason has no personal value).
    Retry {
        error: String,
        next: DateTime<Utc>,
    },
}

/// One return of a dossier, for its trace and the console's timeline (no personal value: AGORA's
/// `libelle` stays in the body, which is not shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnRow {
    pub return_id: String,
    pub atexo_dossier: String,
    pub numero_agora: Option<String>,
    pub etat: Option<String>,
    pub anomaly_codes: Vec<String>,
    pub status: ReturnStatus,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A backfill report kept in the ledger (the JSON of contract §5, gzipped), for the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeta {
    pub report_id: String,
    pub finished_at: DateTime<Utc>,
    /// The report's `counts`.
    pub counts: serde_json::Value,
    /// Size of the gzipped JSON, in bytes.
    pub gzip_bytes: i64,
}
