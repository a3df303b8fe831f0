//! ATEXO SEM in the registry of sources ([`crate::sources`]).

use std::io::BufRead;

use super::{
    decode_document, decode_document_within, decode_stream, encode_export, mapping, mask_export,
    DecodeSettings, Flow, Perimeter, SemDossier,
};
use crate::canonical::{Dossier, State, System};
use crate::mapping::MappingTable;
use crate::merge::FieldGroup;
use crate::rules::Block;
use crate::sources::{Checked, DocumentError, Reading, Record, Source};

/// The Region's training management software, which posts `exportSEM` documents.
#[derive(Debug, Clone, Copy)]
pub struct AtexoSem;

impl Source for AtexoSem {
    fn system(&self) -> System {
        System::AtexoSem
    }

    fn label(&self) -> &'static str {
        "ATEXO SEM"
    }

    fn record_id(&self) -> &'static str {
        "dossier/@id"
    }

    fn mapping(&self) -> &'static MappingTable {
        &mapping::TABLE
    }

    /// The export carries every block its state reached ("elements not yet reached by the
    /// dossier's state are absent"), so every block of the state is required.
    fn required_blocks(&self, state: State) -> &'static [Block] {
        crate::rules::blocks_of_state(state)
    }

    fn mask_payload(&self, body: &[u8]) -> Option<Vec<u8>> {
        mask_export(body).ok()
    }

    /// A posted export is accepted whole or refused whole (contract §1).
    fn decode(&self, body: &[u8], reading: &Reading<'_>) -> Result<Vec<Record>, DocumentError> {
        let dossiers = match reading.deadline {
            Some(deadline) => {
                decode_document_within(body, reading.flow, reading.settings, deadline)?
            }
            None => decode_document(body, reading.flow, reading.settings)
                .map_err(DocumentError::Invalid)?,
        };
        Ok(dossiers.into_iter().map(record).collect())
    }

    fn decode_file<'a>(
        &self,
        input: Box<dyn BufRead + Send + 'a>,
        reading: &Reading<'_>,
    ) -> Option<Box<dyn Iterator<Item = Checked> + 'a>> {
        Some(Box::new(
            decode_stream(input, reading.flow, reading.settings).map(|item| match item {
                Ok(d) => {
                    let index = d.index;
                    let r = record(d);
                    Checked {
                        id: Some(r.id),
                        index: Some(index),
                        out_of_perimeter: r.out_of_perimeter,
                        outcome: Ok(r.dossier),
                        fatal: false,
                    }
                }
                Err(e) => Checked {
                    id: e.id,
                    index: Some(e.index),
                    outcome: Err(e.violations),
                    out_of_perimeter: None,
                    fatal: e.fatal,
                },
            }),
        ))
    }

    fn encode(&self, dossier: &Dossier) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec fails only on a dossier ATEXO's format cannot represent (no ATEXO
        // id): the export is then the empty document, visibly so.
        if encode_export([dossier], &mut out).is_err() {
            out = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\">\n</exportSEM>\n".to_vec();
        }
        out
    }

    /// The Region's system of record: its values win for every group of fields.
    fn default_rank(&self, _group: FieldGroup) -> u8 {
        0
    }

    /// Any bytes as an export: the stream decoder ends cleanly with every error non-empty and
    /// every list within its caps, and the journal's masking either refuses the bytes or gives
    /// UTF-8 back.
    fn fuzz(&self, data: &[u8]) {
        let settings = DecodeSettings::default();
        for item in decode_stream(data, Flow::Backfill, &settings).take(10_000) {
            if let Err(e) = item {
                assert!(!e.violations.is_empty());
                // At most the cap, its `xml.truncated` entry, and a fatal fault's own entry.
                assert!(e.violations.len() <= super::MAX_PER_DOSSIER + 2);
            }
        }
        if let Err(v) = super::decode_document(data, Flow::Sync, &settings) {
            assert!(!v.0.is_empty() && v.0.len() <= super::MAX_PER_DOCUMENT + 1);
        }
        if let Ok(masked) = mask_export(data) {
            assert!(std::str::from_utf8(&masked).is_ok());
        }
    }
}

/// A decoded dossier as the registry's record: its perimeter as a stable code.
fn record(d: SemDossier) -> Record {
    Record {
        id: d.id,
        out_of_perimeter: match &d.perimeter {
            Perimeter::In => None,
            Perimeter::Out(why) => Some(why.code()),
        },
        dossier: d.dossier,
    }
}
