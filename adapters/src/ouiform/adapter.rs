//! OUIFORM in the registry of sources ([`crate::sources`]).

use std::io::BufRead;

use super::{decode, decode_within, encode, mapping, mask};
use crate::canonical::{Dossier, State, System};
use crate::mapping::MappingTable;
use crate::merge::FieldGroup;
use crate::rules::{Block, RuleSettings};
use crate::sources::{Checked, DocumentError, Reading, Record, Source};

/// The orientation platform, which posts one signed orientation at a time.
#[derive(Debug, Clone, Copy)]
pub struct Ouiform;

impl Source for Ouiform {
    fn system(&self) -> System {
        System::Ouiform
    }

    fn label(&self) -> &'static str {
        "OUIFORM"
    }

    fn record_id(&self) -> &'static str {
        "idOrientation"
    }

    fn mapping(&self) -> &'static MappingTable {
        &mapping::TABLE
    }

    /// An orientation carries only the entry date and a refusal reason.
    fn required_blocks(&self, state: State) -> &'static [Block] {
        match state {
            State::Entered => &[Block::Entry],
            State::Refused => &[Block::RefusalReason],
            _ => &[],
        }
    }

    fn mask_payload(&self, body: &[u8]) -> Option<Vec<u8>> {
        mask::mask_payload(body)
    }

    /// One orientation a post, on the synchronous flow whatever `reading.flow` says.
    fn decode(&self, body: &[u8], reading: &Reading<'_>) -> Result<Vec<Record>, DocumentError> {
        let dossier = decode_within(body, &reading.settings.rules, reading.deadline)?;
        Ok(vec![Record::of(dossier)])
    }

    fn decode_file<'a>(
        &self,
        mut input: Box<dyn BufRead + Send + 'a>,
        reading: &Reading<'_>,
    ) -> Option<Box<dyn Iterator<Item = Checked> + 'a>> {
        let rules = reading.settings.rules.clone();
        // One orientation per file: read it lazily, when the caller asks for its record.
        Some(Box::new(std::iter::once_with(move || {
            let mut bytes = Vec::new();
            if let Err(e) = input.read_to_end(&mut bytes) {
                return Checked {
                    id: None,
                    index: None,
                    outcome: Err(vec![crate::Violation::new(
                        "",
                        crate::Rule::JsonSyntax,
                        format!("the file could not be read to its end ({})", e.kind()),
                    )]),
                    out_of_perimeter: None,
                    fatal: true,
                };
            }
            match decode(&bytes, &rules) {
                Ok(d) => Checked {
                    id: d.sources.first().map(|s| s.id.clone()),
                    index: None,
                    outcome: Ok(d),
                    out_of_perimeter: None,
                    fatal: false,
                },
                Err(errors) => Checked {
                    // The id, when the body is JSON enough to have one, helps find the orientation.
                    id: serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| {
                            v.get("idOrientation")
                                .and_then(|i| i.as_str())
                                .map(str::to_owned)
                        }),
                    index: None,
                    outcome: Err(errors),
                    out_of_perimeter: None,
                    fatal: false,
                },
            }
        })))
    }

    fn encode(&self, dossier: &Dossier) -> Vec<u8> {
        serde_json::to_vec(&encode(dossier)).unwrap_or_default()
    }

    /// An orientation, not a funded dossier: after ATEXO SEM on what the orientation decided (the
    /// offer, its funding, a cancellation), last on the rest.
    fn default_rank(&self, group: FieldGroup) -> u8 {
        match group {
            FieldGroup::Offer | FieldGroup::Funding | FieldGroup::Cancellation => 1,
            _ => 2,
        }
    }

    /// Any bytes as an orientation: a dossier, or violations that are never empty.
    fn fuzz(&self, data: &[u8]) {
        if let Err(v) = decode(data, &RuleSettings::default()) {
            assert!(!v.is_empty());
        }
    }
}
