//! AGORA v2 (contract §3): the one destination. Encode and decode side by side, for both ends of the
//! wire, because the AGORA simulator reuses this module:
//!
//! | passerelle (client) | AGORA simulator (server) |
//! |---|---|
//! | [`encode_dossier`], [`encode_transition`], [`encode_reprise_line`], [`RepriseLot`] | [`decode_dossier_body`], [`decode_transition`], [`decode_reprise_line`], [`decode_reprise_lot`] |
//! | [`decode_answer`], [`decode_lot_accepted`], [`decode_reprise_report`] | [`encode_answer`], [`encode_lot_accepted`], [`encode_reprise_report`] |
//!
//! **Encoding** refuses to build a half-filled body: what AGORA requires and the dossier lacks comes
//! back as violations with *canonical* pointers (rule `field.required` or `status.required`), which
//! is how the gateway keeps a dossier `incomplete` and says what it waits for
//! ([`missing_for_agora`]). Every body is then checked against its schema before it leaves, so a
//! value the rules let through but AGORA would refuse is caught here, named by its canonical
//! pointer, rather than bounced by AGORA as a `422`.
//!
//! **Decoding** never panics and never trusts: each body is validated against its schema before serde
//! sees it, an answer that is not what the operation expects is [`Outcome::Unexpected`], and no
//! violation detail or `Debug` output quotes a value (AGORA's bodies carry NIRs and names).
//!
//! No I/O: the gateway does the HTTP, this module only reads and writes bytes.

pub mod mapping;
pub mod model;
#[cfg(test)]
mod tests;

pub use model::{
    AnnulationBody, Anomaly, DossierBody, EntreeBody, Financement, Financeur, Formation,
    ReportLine, ReportState, RepriseLine, RepriseReport, SoldeBody, SortieBody, Stagiaire,
    TransitionBody,
};

use crate::canonical::{
    CertificationResult, Dossier, Initiator, Personal, RegistrationStatus, State,
};
use crate::planner::{self, AgoraState, Delivered, Operation, Target};
use crate::violation::{check_schema, Rule, Violation};
use chrono::{DateTime, NaiveDate, Utc};
use model::{AnomaliesAnswer, CodeAnswer, LotAnswer, NumberAnswer, SearchAnswer, AG_ETAT};
use passerelle_schemas::SchemaId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The most lines AGORA takes in one backfill lot.
pub const MAX_LOT_LINES: usize = 10_000;

/// Content type of a backfill lot.
pub const NDJSON: &str = "application/x-ndjson";

/// The cancellation reason sent when the source gave none: AGORA requires a non-empty `motif`, and
/// a cancellation must not wait forever for a free-text field no source is obliged to fill.
pub const MOTIF_NON_COMMUNIQUE: &str = "Motif non communiqué";

/// The refusal reason sent when a refused dossier has none.
pub const REFUS_SANS_MOTIF: &str = "Refus, motif non communiqué";

// The two sides of the wire: passerelle encodes requests and decodes answers; the simulator
// decodes requests and encodes answers.
mod answers;
mod encode;
mod simulator;
pub use answers::*;
pub use encode::*;
pub use simulator::*;
