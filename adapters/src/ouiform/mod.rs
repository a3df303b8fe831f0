//! OUIFORM adapter: an orientation (*orientation*, contract §2.2) ↔ a canonical dossier.
//!
//! - `decode`: JSON syntax, then `ouiform/orientation.schema.json`, then the mapping to the
//!   canonical dossier, then the domain rules, whose violations are renamed to OUIFORM's JSON
//!   pointers through [`mapping::TABLE`]. Every violation is returned at once, within the caps
//!   an ATEXO SEM export has ([`crate::violation::MAX_PER_DOSSIER`], then an `xml.truncated`
//!   entry); [`decode_within`] also stops at a deadline.
//! - `encode`: a canonical dossier as the orientation OUIFORM would have sent, for the simulators and
//!   the round-trip test.
//!
//! [`model`] holds OUIFORM's own spelling of the record; [`mapping`] the field table.

pub mod adapter;
pub mod mapping;
pub mod mask;
pub mod model;
#[cfg(test)]
pub(crate) mod tests;

use crate::canonical::{
    Dispositif, Dossier, Entry, Funding, Nir, Orientation, Personal, PoleEmploiId, PrescriberKind,
    Provider, Refusal, SourceRef, State, System, Trainee, Training,
};
use crate::rules::RuleSettings;
use crate::violation::{
    add_uncovered, check_schema_within, parse_json, rules_in_source_terms, truncated,
    DocumentError, Rule, Violation, Violations, MAX_PER_DOSSIER,
};
use model::Statut;
use passerelle_schemas::SchemaId;

/// Decodes one orientation into a canonical dossier, or lists everything wrong with it (at most
/// [`MAX_PER_DOSSIER`], then an `xml.truncated` entry saying how many more).
///
/// Violations name OUIFORM's fields by JSON pointer (`/beneficiaire/nir`) and never quote a value.
pub fn decode(bytes: &[u8], settings: &RuleSettings) -> Result<Dossier, Vec<Violation>> {
    decode_within(bytes, settings, None).map_err(|e| match e {
        DocumentError::Invalid(v) => v.0,
        // Without a deadline nothing stops early; should it ever, say so.
        DocumentError::OverBudget { .. } => vec![Violation::new(
            "",
            Rule::XmlTruncated,
            "decoding stopped before the end of the orientation",
        )],
    })
}

/// [`decode`], stopping once `deadline` has passed: between its stages, and between schema
/// violations. Decoding is blocking: run it off the async workers (a blocking pool), so that a
/// costly post delays nobody else.
pub fn decode_within(
    bytes: &[u8],
    settings: &RuleSettings,
    deadline: Option<std::time::Instant>,
) -> Result<Dossier, DocumentError> {
    let late = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
    let invalid = |v: Vec<Violation>| DocumentError::Invalid(Violations(v));
    let value = parse_json(bytes).map_err(|v| invalid(vec![v]))?;
    if late() {
        return Err(DocumentError::OverBudget { dossiers_read: 0 });
    }
    let (mut violations, mut unlisted, over_budget) =
        check_schema_within(SchemaId::OuiformOrientation, &value, deadline);
    if over_budget || late() {
        return Err(stopped(violations, unlisted));
    }

    // Read what can be read even when the schema refused the payload, so that the rules can add
    // their own findings (a bad NIR key next to a missing field): one answer lists them all.
    let orientation: model::Orientation = match serde_json::from_value(value) {
        Ok(o) => o,
        Err(_) => {
            if violations.is_empty() {
                // The schema accepted what the model cannot read: a drift between the two, which a
                // test guards against. Say so without serde's message, which may quote the value.
                violations.push(Violation::new(
                    "",
                    Rule::SchemaOther,
                    "does not match the orientation model",
                ));
            }
            return Err(invalid(capped(violations, unlisted)));
        }
    };
    if late() {
        return Err(stopped(violations, unlisted));
    }
    let dossier = to_canonical(&orientation, &mut violations);
    let found_by_rules = rules_in_source_terms(&dossier, &mapping::TABLE, "/", settings);
    add_uncovered(&mut violations, found_by_rules);

    if violations.is_empty() && unlisted == 0 {
        Ok(dossier)
    } else {
        // The mapping and the rules add a few at most; past the cap they are counted too.
        unlisted += violations.len().saturating_sub(MAX_PER_DOSSIER);
        Err(invalid(capped(violations, unlisted)))
    }
}

/// At most [`MAX_PER_DOSSIER`] of `violations`, then, when `unlisted` more were found, the
/// `xml.truncated` entry saying so.
fn capped(mut violations: Vec<Violation>, unlisted: usize) -> Vec<Violation> {
    violations.truncate(MAX_PER_DOSSIER);
    if unlisted > 0 {
        violations.push(truncated("", unlisted, "in this orientation"));
    }
    violations
}

/// The deadline passed: with nothing wrong found yet, the orientation cannot be judged; else it
/// is refused with what was found, the last entry saying where checking stopped.
fn stopped(violations: Vec<Violation>, unlisted: usize) -> DocumentError {
    if violations.is_empty() {
        return DocumentError::OverBudget { dossiers_read: 0 };
    }
    let mut detail =
        "decoding stopped at its time budget: the rest of the orientation was not checked"
            .to_string();
    if unlisted > 0 {
        detail.push_str(&format!(
            ", and {unlisted} more violation(s) found before were not listed"
        ));
    }
    let mut listed = violations;
    listed.push(Violation::new("", Rule::XmlTruncated, detail));
    DocumentError::Invalid(Violations(listed))
}

/// The canonical state an orientation status stands for (contract §2.2).
pub fn state_of(statut: Statut) -> State {
    match statut {
        Statut::Proposee => State::Prescribed,
        Statut::Acceptee => State::Registered,
        Statut::Refusee => State::Refused,
        Statut::Entree => State::Entered,
        Statut::Annulee => State::Cancelled,
    }
}

/// The status OUIFORM would show for a canonical state. OUIFORM's orientation ends at the entry, so
/// every later state is still `ENTREE`, and a funder's validation is still `ACCEPTEE`.
pub fn statut_of(state: State) -> Statut {
    match state {
        State::Prescribed => Statut::Proposee,
        State::Registered | State::Validated => Statut::Acceptee,
        State::Refused => Statut::Refusee,
        State::Entered | State::Exited | State::ServiceDone | State::Settled => Statut::Entree,
        State::Cancelled => Statut::Annulee,
    }
}

/// Maps a read orientation to the canonical dossier. Values the schema should already have refused
/// (an unknown prescriber kind, a funder code that is not a number) are reported here too, in case
/// the schema let them through; the dossier is then built without them.
fn to_canonical(o: &model::Orientation, violations: &mut Vec<Violation>) -> Dossier {
    let b = &o.beneficiaire;
    let prescriber_kind =
        PrescriberKind::from_external(&o.prescripteur.kind).unwrap_or_else(|| {
            add_uncovered(
                violations,
                vec![Violation::new(
                    "/prescripteur/type",
                    Rule::SchemaEnum,
                    "is not a prescriber type OUIFORM defines",
                )],
            );
            PrescriberKind::Other
        });
    let funder = o.financeur.as_deref().and_then(|f| match f.parse::<u8>() {
        Ok(code) => Some(code),
        Err(_) => {
            add_uncovered(
                violations,
                vec![Violation::new(
                    "/financeur",
                    Rule::FunderCode,
                    "is not a number of LHEO dict-financeurs",
                )],
            );
            None
        }
    });
    let pole_emploi_id = PoleEmploiId {
        national: b.id_national_de.clone(),
        regional: b.id_regional_de.clone(),
        geo_code: b.code_geo_de.clone(),
    };
    Dossier {
        sources: vec![SourceRef {
            system: System::Ouiform,
            id: o.id_orientation.clone(),
            version: None,
            updated_on: None,
        }],
        state: state_of(o.statut),
        dispositif: o.dispositif.as_ref().map(|code| Dispositif {
            code: code.clone(),
            label: None,
            agora: None,
        }),
        category: None,
        programme: None,
        consultation: None,
        trainee: Trainee {
            nir: Nir::new(b.nir.clone()),
            birth_name: b.nom_naissance.clone().map(Personal::new),
            usage_name: None,
            first_names: b.prenom.clone().map(Personal::new),
            // The NIR's first digit is not the trainee's declared sex (7 and 8 are temporary
            // numbers), so the sex is left to the sources that state it.
            sex: None,
            birth_date: b.date_naissance.map(Personal::new),
            pole_emploi_id: (pole_emploi_id != PoleEmploiId::default()).then_some(pole_emploi_id),
            postal_code: b.code_postal.clone(),
            commune_insee: None,
        },
        training: Training {
            numero_formation: o.offre.numero_formation.clone(),
            numero_action: o.offre.numero_action.clone(),
            numero_session: o.offre.numero_session.clone(),
            title: o.offre.intitule.clone(),
            formacode: None,
            certification: None,
        },
        provider: o.offre.siret_organisme.as_ref().map(|siret| Provider {
            siret: Some(siret.clone()),
            nda: None,
            name: None,
        }),
        // An orientation has no session dates: the dossier waits for ATEXO SEM or Pôle emploi.
        session: None,
        entry: o.date_entree.map(|date| Entry { date }),
        exit: None,
        // A funder without amounts: OUIFORM names who pays, the Region's system says how much.
        fundings: funder
            .map(|funder| Funding {
                funder,
                committed_cents: None,
                realised_cents: None,
                settled_cents: None,
            })
            .into_iter()
            .collect(),
        cancellation: None,
        refusal: o.motif_refus.as_ref().map(|reason| Refusal {
            reason: Some(reason.clone()),
        }),
        orientation: Some(Orientation {
            date: o.date_orientation,
            prescriber_kind,
            prescriber_siret: o.prescripteur.siret_structure.clone(),
        }),
        registration: None,
    }
}

/// The orientation OUIFORM would send for a canonical dossier (simulators, round-trip tests).
///
/// What OUIFORM cannot carry is dropped (session, exit, amounts, later fundings). A dossier that
/// never went through OUIFORM has no orientation: its date is then the Unix epoch and its
/// prescriber `AUTRE`, visibly made up.
pub fn encode(d: &Dossier) -> serde_json::Value {
    let orientation = to_model(d);
    // Serializing plain strings, dates and options into a `Value` cannot fail; `Null` is never
    // produced in practice but keeps this function total.
    serde_json::to_value(orientation).unwrap_or(serde_json::Value::Null)
}

fn to_model(d: &Dossier) -> model::Orientation {
    let id = d
        .source(System::Ouiform)
        .or_else(|| d.sources.first())
        .map_or_else(|| "unknown".to_string(), |s| s.id.clone());
    let (date_orientation, kind, siret_structure) = match &d.orientation {
        Some(o) => (o.date, o.prescriber_kind, o.prescriber_siret.clone()),
        None => (
            chrono::DateTime::UNIX_EPOCH.fixed_offset(),
            PrescriberKind::Other,
            None,
        ),
    };
    let t = &d.trainee;
    let pe = t.pole_emploi_id.clone().unwrap_or_default();
    model::Orientation {
        id_orientation: id,
        date_orientation,
        statut: statut_of(d.state),
        prescripteur: model::Prescripteur {
            kind: kind.external().to_string(),
            siret_structure,
        },
        beneficiaire: model::Beneficiaire {
            nir: t.nir.expose().to_string(),
            nom_naissance: t.birth_name.as_ref().map(|n| n.expose().clone()),
            prenom: t.first_names.as_ref().map(|n| n.expose().clone()),
            date_naissance: t.birth_date.as_ref().map(|b| *b.expose()),
            id_national_de: pe.national,
            id_regional_de: pe.regional,
            code_geo_de: pe.geo_code,
            code_postal: t.postal_code.clone(),
        },
        offre: model::Offre {
            numero_formation: d.training.numero_formation.clone(),
            numero_action: d.training.numero_action.clone(),
            numero_session: d.training.numero_session.clone(),
            siret_organisme: d.provider.as_ref().and_then(|p| p.siret.clone()),
            intitule: d.training.title.clone(),
        },
        financeur: d.main_funding().map(|f| f.funder.to_string()),
        dispositif: d.dispositif.as_ref().map(|x| x.code.clone()),
        motif_refus: d.refusal.as_ref().and_then(|r| r.reason.clone()),
        date_entree: d.entry.as_ref().map(|e| e.date),
    }
}
