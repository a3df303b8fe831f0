//! Pôle emploi (France Travail) in the registry of sources ([`crate::sources`]).

use std::io::BufRead;

use serde_json::Value;

use super::{decode_registrations, encode_registrations, mapping, mask};
use crate::canonical::{Dossier, State, System};
use crate::mapping::MappingTable;
use crate::merge::FieldGroup;
use crate::rules::Block;
use crate::sources::{Checked, DocumentError, Reading, Record, Source};
use crate::violation::{Rule, Violation, Violations};

/// The partner API passerelle polls for a session's registrations.
#[derive(Debug, Clone, Copy)]
pub struct PoleEmploi;

impl Source for PoleEmploi {
    fn system(&self) -> System {
        System::PoleEmploi
    }

    fn label(&self) -> &'static str {
        "Pôle emploi"
    }

    fn record_id(&self) -> &'static str {
        "idInscription"
    }

    fn mapping(&self) -> &'static MappingTable {
        &mapping::TABLE
    }

    /// A registration carries only the entry date.
    fn required_blocks(&self, state: State) -> &'static [Block] {
        match state {
            State::Entered => &[Block::Entry],
            _ => &[],
        }
    }

    /// A registrations answer with each registration's personal values masked.
    fn mask_payload(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(body).ok()?;
        match &mut v {
            Value::Array(items) => items.iter_mut().for_each(mask::mask_registration),
            other => mask::mask_registration(other),
        }
        serde_json::to_vec(&v).ok()
    }

    /// A registrations answer is a session's: read without one, it is refused. Whole, as the
    /// trait says: one invalid registration refuses the answer (the poller reads each
    /// registration on its own with [`super::decode_registrations`]).
    fn decode(&self, body: &[u8], reading: &Reading<'_>) -> Result<Vec<Record>, DocumentError> {
        let invalid = |v: Vec<Violation>| DocumentError::Invalid(Violations(v));
        let Some(session) = reading.session else {
            return Err(invalid(vec![Violation::new(
                "?numeroSession",
                Rule::FieldRequired,
                "registrations are read for the session they were polled for; none was given",
            )]));
        };
        let decoded =
            decode_registrations(body, session, &reading.settings.rules).map_err(invalid)?;
        let mut records = Vec::with_capacity(decoded.len());
        let mut violations = Vec::new();
        for d in decoded {
            match d {
                Ok(dossier) => records.push(Record::of(dossier)),
                Err(v) => violations.extend(v),
            }
        }
        if violations.is_empty() {
            Ok(records)
        } else {
            Err(invalid(violations))
        }
    }

    /// Registrations are polled for one session, whose numbers are the poll's query: a file of
    /// them alone cannot be checked.
    fn decode_file<'a>(
        &self,
        _input: Box<dyn BufRead + Send + 'a>,
        _reading: &Reading<'_>,
    ) -> Option<Box<dyn Iterator<Item = Checked> + 'a>> {
        None
    }

    fn encode(&self, dossier: &Dossier) -> Vec<u8> {
        serde_json::to_vec(&encode_registrations(std::slice::from_ref(dossier))).unwrap_or_default()
    }

    /// France Travail is the authority on the trainee, the session and the entry (AIS, AES) when
    /// ATEXO SEM has none yet; last on the offer, its funding and a cancellation.
    fn default_rank(&self, group: FieldGroup) -> u8 {
        match group {
            FieldGroup::Offer | FieldGroup::Funding | FieldGroup::Cancellation => 2,
            _ => 1,
        }
    }

    /// Any bytes as a Pôle emploi answer: registrations, token, error body.
    fn fuzz(&self, data: &[u8]) {
        let session = super::SessionRef {
            numero_formation: "20_1262663".into(),
            numero_action: "20_1330305".into(),
            numero_session: "1330305".into(),
        };
        let _ = super::decode_registrations(data, &session, &crate::rules::RuleSettings::default());
        let _ = super::decode_token(data);
        let _ = super::decode_error(data);
    }
}
