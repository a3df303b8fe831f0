//! The registry of source systems (*systèmes sources*): one [`Source`] per system whose records
//! passerelle reads, so that what the rest of the workspace does for "every source" (validating a
//! file, the correspondence document, the fuzz targets, the rules each state requires, the labels
//! an operator reads) iterates over [`SOURCES`] instead of naming each system.
//!
//! Adding a system is one module beside the others with its `Source`, and one line in
//! [`SOURCES`] (`docs/adding-a-system.md`). AGORA is no source: it is the destination, with its
//! own client and planner.

use std::io::BufRead;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use crate::atexo_sem::DecodeSettings;
use crate::canonical::{Dossier, Flow, State};
use crate::mapping::MappingTable;
use crate::merge::FieldGroup;
pub use crate::pole_emploi::SessionRef;
use crate::rules::Block;
pub use crate::violation::DocumentError;
use crate::violation::Violation;

/// The systems passerelle speaks with (*systèmes d'information*): a closed registry.
///
/// Its names are derived: [`System::as_str`] and [`Display`](std::fmt::Display) give the stable
/// kebab-case name used in routes, CLI flags, metrics labels and the ledger's columns, and
/// [`FromStr`](std::str::FromStr) parses it back; serde uses the snake_case form of the canonical
/// schema. What each source system does (decode, encode, mask, mapping, rules) is its
/// [`crate::sources::Source`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "kebab-case")]
pub enum System {
    /// ATEXO SEM, the Region's training management software.
    AtexoSem,
    /// The orientation platform.
    Ouiform,
    /// Pôle emploi (France Travail) partner API.
    PoleEmploi,
    /// AGORA, the national hub of the Caisse des Dépôts.
    Agora,
    /// A minimal system that exists only in this crate's tests: `docs/adding-a-system.md`'s
    /// walkthrough, registered through the same path as the others ([`crate::example`]).
    #[cfg(test)]
    Example,
}

impl System {
    /// Every system, in declaration order.
    pub const ALL: &'static [System] = <System as strum::VariantArray>::VARIANTS;

    /// The stable kebab-case name used in routes, CLI flags and metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One record of a checked file (`passerelle validate`): its id when it has one, its position in
/// the file when the file holds several, and the canonical dossier or everything wrong with it.
#[derive(Debug)]
pub struct Checked {
    /// The record's id in its system, when the input is readable enough to have one.
    pub id: Option<String>,
    /// 1-based position in a document of several records.
    pub index: Option<usize>,
    pub outcome: Result<Dossier, Vec<Violation>>,
    /// Why a valid record is outside AGORA's perimeter (a stable code), when it is.
    pub out_of_perimeter: Option<&'static str>,
    /// The fault is the document's, not this record's (an unreadable prolog, a broken element):
    /// nothing after it could be read, and this is the last item.
    pub fatal: bool,
}

/// What a payload is read with besides its bytes (*contexte de lecture*): the same for every
/// system, each taking what concerns it.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// The flow it arrives by: in a backfill, a session before `perimeter.backfill_since` is out
    /// of perimeter.
    pub flow: Flow,
    /// The perimeter and the domain rules' settings, built once at start-up.
    pub settings: &'a DecodeSettings,
    /// A post's decode budget: past it, [`Source::decode`] stops with
    /// [`DocumentError::OverBudget`] (a costly body delays nobody else).
    pub deadline: Option<Instant>,
    /// The session a polled answer is about (Pôle emploi's registrations are a session's).
    pub session: Option<&'a SessionRef>,
}

impl<'a> Reading<'a> {
    /// The synchronous flow with `settings`, no deadline and no session.
    pub fn sync(settings: &'a DecodeSettings) -> Self {
        Self {
            flow: Flow::Sync,
            settings,
            deadline: None,
            session: None,
        }
    }
}

/// One record of a payload once decoded and valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id in its system ([`Source::record_id`]).
    pub id: String,
    pub dossier: Dossier,
    /// Why it is outside AGORA's perimeter (a stable code), when it is: recorded, never sent.
    pub out_of_perimeter: Option<&'static str>,
}

impl Record {
    /// A dossier of one source, in perimeter, under its source's id.
    pub fn of(dossier: Dossier) -> Self {
        Self {
            id: dossier
                .sources
                .first()
                .map(|s| s.id.clone())
                .unwrap_or_default(),
            dossier,
            out_of_perimeter: None,
        }
    }
}

/// Everything passerelle knows of one source system's records, behind one trait.
pub trait Source: Send + Sync + 'static {
    /// Which system this is.
    fn system(&self) -> System;

    /// The system's name as its users write it, for people (console, CLI, documents).
    fn label(&self) -> &'static str;

    /// The field that holds a record's id in the system's own terms (`idOrientation`): what an
    /// operator searches by.
    fn record_id(&self) -> &'static str;

    /// Its field correspondence table (`passerelle mapping`, and violation pointers).
    fn mapping(&self) -> &'static MappingTable;

    /// The blocks a dossier in `state` must carry when this system sends it: a block the system
    /// cannot carry is not required of it (the merged dossier waits as incomplete instead).
    fn required_blocks(&self, state: State) -> &'static [Block];

    /// A payload with every personal value masked, as the journal keeps it; `None` when it cannot
    /// be read enough to mask (then nothing of it is kept).
    fn mask_payload(&self, body: &[u8]) -> Option<Vec<u8>>;

    /// Decodes and validates one payload whole, as the system sends it (a post, a poll's
    /// answer): every record when all are valid, or every violation of every record (where the
    /// system's decoder caps them, an `xml.truncated` entry says how many more). Nothing of an
    /// invalid payload is usable.
    fn decode(&self, body: &[u8], reading: &Reading<'_>) -> Result<Vec<Record>, DocumentError>;

    /// Decodes and validates a file of this system's records, record by record, reading it as a
    /// stream where the format allows (`passerelle validate`, the backfill). `None` when the
    /// system's records do not come as files (a polled API needs the context of its poll).
    fn decode_file<'a>(
        &self,
        input: Box<dyn BufRead + Send + 'a>,
        reading: &Reading<'_>,
    ) -> Option<Box<dyn Iterator<Item = Checked> + 'a>>;

    /// A canonical dossier as this system would have sent it, as one payload of its own (for the
    /// simulators and the round-trip tests). What the system cannot carry is left out.
    fn encode(&self, dossier: &Dossier) -> Vec<u8>;

    /// Its default rank in the merge's precedence for `group` (0 first): the lower, the more its
    /// values win over another source's for that group of fields ([`crate::merge::Precedence`]'s
    /// default sorts the sources by it; `merge.precedence.*` overrides it). Ties keep the order of
    /// [`SOURCES`].
    fn default_rank(&self, group: FieldGroup) -> u8;

    /// The fuzz target of its decoder (`adapters/fuzz/fuzz_targets/<system>_decode.rs`): any
    /// bytes in, a panic on failure.
    fn fuzz(&self, data: &[u8]);
}

/// Every source system, in the order of the documents' columns.
pub static SOURCES: &[&dyn Source] = &[
    &crate::atexo_sem::adapter::AtexoSem,
    &crate::ouiform::adapter::Ouiform,
    &crate::pole_emploi::adapter::PoleEmploi,
    // `docs/adding-a-system.md`'s walkthrough, in this crate's tests only.
    #[cfg(test)]
    &crate::example::Example,
];

/// The source behind a system; `None` for AGORA, the destination.
pub fn source(system: System) -> Option<&'static dyn Source> {
    SOURCES.iter().copied().find(|s| s.system() == system)
}

/// The systems whose records come as files (`passerelle validate`, the backfill), as named on
/// the command line.
pub fn file_sources() -> impl Iterator<Item = &'static dyn Source> {
    let settings = DecodeSettings::default();
    SOURCES.iter().copied().filter(move |s| {
        s.decode_file(Box::new(std::io::empty()), &Reading::sync(&settings))
            .is_some()
    })
}

/// The source behind `system` when its records come as files.
pub fn file_source(system: System) -> Option<&'static dyn Source> {
    file_sources().find(|s| s.system() == system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_but_the_destination_is_a_source_once() {
        for system in System::ALL {
            let n = SOURCES.iter().filter(|s| s.system() == *system).count();
            let expected = usize::from(*system != System::Agora);
            assert_eq!(n, expected, "{system} in the registry");
        }
        for s in SOURCES {
            assert_eq!(s.mapping().system, s.system(), "{}'s table", s.label());
        }
    }

    #[test]
    fn names_are_derived_and_parse_back() {
        for system in System::ALL {
            let name = system.to_string();
            assert_eq!(name, system.as_str());
            assert_eq!(name.parse::<System>().ok(), Some(*system));
        }
        assert_eq!(System::AtexoSem.as_str(), "atexo-sem");
        assert_eq!(System::PoleEmploi.as_str(), "pole-emploi");
        assert!("atexo_sem".parse::<System>().is_err());
    }

    /// Each source's fixtures, through the trait alone: the valid payloads decode whole, and what
    /// `encode` writes of each record decodes back to the same dossier; the invalid ones are
    /// refused whole, with their violations.
    #[test]
    fn every_source_decodes_its_payloads_and_what_it_encodes() {
        let settings = DecodeSettings::default();
        let session = SessionRef {
            numero_formation: "20_1262663".into(),
            numero_action: "20_1330305".into(),
            numero_session: "1330305".into(),
        };
        let reading = Reading {
            session: Some(&session),
            ..Reading::sync(&settings)
        };
        for s in SOURCES {
            let dir = match s.system() {
                System::PoleEmploi => "pole_emploi/registrations",
                other => other.into(),
            };
            let dir = dir.replace('-', "_");
            let mut records = 0;
            for (name, bytes) in crate::ouiform::tests::fixtures(&format!("{dir}/valid")) {
                let decoded = s
                    .decode(&bytes, &reading)
                    .unwrap_or_else(|e| panic!("{} {name}: {e}", s.label()));
                for r in decoded {
                    records += 1;
                    assert!(
                        !r.id.is_empty(),
                        "{} {name}: a record without its id",
                        s.label()
                    );
                    let again = s
                        .decode(&s.encode(&r.dossier), &reading)
                        .unwrap_or_else(|e| panic!("{} {name}, encoded: {e}", s.label()));
                    assert_eq!(again.len(), 1, "{} {name}", s.label());
                    assert_eq!(again[0].dossier, r.dossier, "{} {name}", s.label());
                    assert_eq!(again[0].id, r.id, "{} {name}", s.label());
                }
            }
            assert!(records > 0, "{}: no valid fixture decoded", s.label());
            let mut refused = 0;
            for (name, bytes) in crate::ouiform::tests::fixtures(&format!("{dir}/invalid")) {
                match s.decode(&bytes, &reading) {
                    Err(DocumentError::Invalid(v)) => {
                        assert!(!v.0.is_empty(), "{} {name}", s.label());
                        refused += 1;
                    }
                    other => panic!("{} {name}: {other:?}", s.label()),
                }
            }
            assert!(refused > 0, "{}: no invalid fixture", s.label());
        }
    }

    /// A polled answer read without its session is refused, naming what is missing.
    #[test]
    fn a_polled_answer_needs_its_session() {
        let settings = DecodeSettings::default();
        let pe = source(System::PoleEmploi).expect("registered");
        match pe.decode(b"[]", &Reading::sync(&settings)) {
            Err(DocumentError::Invalid(v)) => assert_eq!(v.0[0].pointer, "?numeroSession"),
            other => panic!("{other:?}"),
        }
    }

    /// The files `validate` and the backfill read are those whose source says so; a polled one
    /// is not among them.
    #[test]
    fn file_sources_are_those_that_read_files() {
        let files: Vec<System> = file_sources().map(|s| s.system()).collect();
        assert_eq!(files, [System::AtexoSem, System::Ouiform, System::Example]);
        assert!(file_source(System::PoleEmploi).is_none());
        assert!(file_source(System::Agora).is_none());
    }
}
