//! Perimeter and results: what the adapter is told (flow, perimeter dates) and what it yields
//! per dossier (in or out of perimeter, or its errors).

#[allow(unused_imports)]
use super::*;

/// Which flow a dossier arrives by: the perimeter differs (pre-2017 sessions only matter in a
/// backfill).
pub use crate::canonical::Flow;

/// AGORA's perimeter rules (configuration `perimeter.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerimeterSettings {
    /// `categorie` codes outside the perimeter (health and social training, PSAD, detainees, CRP,
    /// individual aids, regional VAE).
    pub excluded_categories: Vec<String>,
    /// In a backfill, sessions starting before this date are out of perimeter.
    pub backfill_since: NaiveDate,
}

impl Default for PerimeterSettings {
    fn default() -> Self {
        Self {
            excluded_categories: [
                "SANITAIRE_SOCIAL",
                "PSAD",
                "DETENUS",
                "CRP",
                "AIDE_INDIVIDUELLE",
                "VAE",
            ]
            .map(String::from)
            .to_vec(),
            backfill_since: NaiveDate::from_ymd_opt(2017, 1, 1).unwrap_or_default(),
        }
    }
}

/// Everything a decode needs, built once (at start-up) and shared by every dossier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeSettings {
    pub perimeter: PerimeterSettings,
    pub rules: RuleSettings,
}

/// Whether AGORA should hear of a dossier (*périmètre AGORA*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Perimeter {
    In,
    /// Recorded and reported, never sent.
    Out(OutOfPerimeter),
}

/// Why a dossier is out of AGORA's perimeter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfPerimeter {
    /// `dispositif/@agora="N"`.
    AgoraFlag,
    /// `categorie` is one of the excluded codes (the code).
    Category(String),
    /// Backfill only: the session starts before `backfill_since`.
    SessionBeforeBackfillStart,
}

impl OutOfPerimeter {
    /// A stable code for reports and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            OutOfPerimeter::AgoraFlag => "agora_flag",
            OutOfPerimeter::Category(_) => "category",
            OutOfPerimeter::SessionBeforeBackfillStart => "session_before_backfill_start",
        }
    }
}

/// The perimeter of a decoded dossier: the `agora` flag first, then the category, then (backfill
/// only) the session start.
pub fn classify(d: &Dossier, flow: Flow, settings: &PerimeterSettings) -> Perimeter {
    if d.dispositif.as_ref().and_then(|x| x.agora) == Some(false) {
        return Perimeter::Out(OutOfPerimeter::AgoraFlag);
    }
    if let Some(c) = &d.category {
        if settings.excluded_categories.iter().any(|x| x == c) {
            return Perimeter::Out(OutOfPerimeter::Category(c.clone()));
        }
    }
    if flow == Flow::Backfill
        && d.session
            .as_ref()
            .is_some_and(|s| s.start < settings.backfill_since)
    {
        return Perimeter::Out(OutOfPerimeter::SessionBeforeBackfillStart);
    }
    Perimeter::In
}

/// A dossier decoded and valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemDossier {
    /// 1-based position of the `<dossier>` in the export.
    pub index: usize,
    /// ATEXO's `dossier/@id`.
    pub id: String,
    /// ATEXO's `dossier/@version`.
    pub version: u64,
    pub dossier: Dossier,
    pub perimeter: Perimeter,
}

/// A dossier that could not be accepted, with every violation found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DossierError {
    /// 1-based position of the `<dossier>`; 0 for a fault of the document outside any dossier
    /// (prolog, root element, stray content between dossiers).
    pub index: usize,
    /// ATEXO's `dossier/@id`, when it could be read.
    pub id: Option<String>,
    /// Never empty. At most [`MAX_PER_DOSSIER`] violations, then, when more were found, an
    /// `xml.truncated` entry saying how many.
    pub violations: Vec<Violation>,
    /// How many violations were found and not listed (the count the `xml.truncated` entry gives).
    pub unlisted: usize,
    /// Whether the document cannot be read further (XML syntax, encoding, DTD): the stream ends.
    pub fatal: bool,
}

impl std::fmt::Display for DossierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dossier #{}", self.index)?;
        if let Some(id) = &self.id {
            write!(f, " ({id})")?;
        }
        write!(f, ": {}", Violations(self.violations.clone()))
    }
}

impl std::error::Error for DossierError {}
