//! The registry of source systems (*systèmes sources*): one [`Source`] per system whose records
//! passerelle reads, so that what the rest of the workspace does for "every source" (validating a
//! file, the correspondence document, the fuzz targets, the rules each state requires, the labels
//! an operator reads) iterates over [`SOURCES`] instead of naming each system.
//!
//! Adding a system is one module beside the others with its `Source`, and one line in
//! [`SOURCES`] (`docs/adding-a-system.md`). AGORA is no source: it is the destination, with its
//! own client and planner.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::canonical::{Dossier, State};
use crate::mapping::MappingTable;
use crate::merge::FieldGroup;
use crate::rules::Block;
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

    /// Decodes and validates a file of this system's records, record by record, reading it as a
    /// stream where the format allows (`passerelle validate`). `None` when the system's records do
    /// not come as files (a polled API needs the context of its poll).
    fn check_file<'a>(
        &self,
        input: Box<dyn BufRead + Send + 'a>,
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
pub static SOURCES: [&dyn Source; 3] = [
    &crate::atexo_sem::adapter::AtexoSem,
    &crate::ouiform::adapter::Ouiform,
    &crate::pole_emploi::adapter::PoleEmploi,
];

/// The source behind a system; `None` for AGORA, the destination.
pub fn source(system: System) -> Option<&'static dyn Source> {
    SOURCES.iter().copied().find(|s| s.system() == system)
}

/// The systems that give `passerelle validate` files, as named on its command line.
pub fn file_sources() -> impl Iterator<Item = &'static dyn Source> {
    SOURCES
        .iter()
        .copied()
        .filter(|s| s.check_file(Box::new(std::io::empty())).is_some())
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
}
