//! AGORA's wire types.
use serde::{Deserialize, Serialize};

/// One anomaly of an AGORA business rejection (`422 {"anomalies": [...]}`) or backfill report line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// AGORA's code (`AG-…`).
    pub code: String,
    /// The AGORA field concerned, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champ: Option<String>,
    /// AGORA's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libelle: Option<String>,
}
