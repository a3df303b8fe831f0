//! Pôle emploi adapter: the partner API's answers (contract §2.3) ↔ canonical dossiers.
//!
//! - [`decode_registrations`]: the registrations of one session, polled by the gateway, each as a
//!   canonical dossier or the violations of that one registration; the whole answer fails only when
//!   it is not a list at all.
//! - [`decode_token`], [`decode_error`]: the OAuth2 token answer and the error body.
//! - `encode_*`: the same bodies from canonical data, for the simulator and the round-trip tests.
//!
//! [`model`] holds Pôle emploi's spelling; [`mapping`] the field table.

pub mod adapter;
pub mod mapping;
pub mod mask;
pub mod model;
#[cfg(test)]
mod tests;

pub use model::{ErrorBody, Token};

use crate::canonical::{
    Dossier, Entry, Nir, PoleEmploiId, Registration, RegistrationStatus, Session, SourceRef, State,
    System, Trainee, Training,
};
use crate::rules::{identifiers, RuleSettings};
use crate::violation::{
    add_uncovered, check_schema, parse_json, rules_in_source_terms, Rule, Violation,
};
use passerelle_schemas::SchemaId;
use serde_json::Value;

/// The session polled (*session*, by its Intercarif numbers): the query parameters of
/// `GET /inscriptions/statut/session`, which the answer does not repeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionRef {
    pub numero_formation: String,
    pub numero_action: String,
    pub numero_session: String,
}

/// One registration's outcome: its canonical dossier, or what is wrong with it.
pub type Decoded = Result<Dossier, Vec<Violation>>;

/// Decodes a session's registrations.
///
/// The outer error means the answer cannot be read as a list of registrations (syntax, not an
/// array, or the session's own numbers are not Intercarif numbers); then nothing of it is usable.
/// Otherwise each registration stands alone: pointers are into the answer (`/3/nirCertifie`), so a
/// bad registration is reported without holding back the good ones.
pub fn decode_registrations(
    bytes: &[u8],
    session: &SessionRef,
    settings: &RuleSettings,
) -> Result<Vec<Decoded>, Vec<Violation>> {
    let bad_session = session_violations(session);
    if !bad_session.is_empty() {
        return Err(bad_session);
    }
    let value = parse_json(bytes).map_err(|v| vec![v])?;
    let mut per_item: Vec<Vec<Violation>> = match &value {
        Value::Array(items) => vec![Vec::new(); items.len()],
        _ => Vec::new(),
    };
    let mut outer = Vec::new();
    for v in check_schema(SchemaId::PoleEmploiRegistrations, &value) {
        match item_index(&v.pointer).and_then(|i| per_item.get_mut(i)) {
            Some(list) => list.push(v),
            None => outer.push(v),
        }
    }
    let items = match value {
        Value::Array(items) if outer.is_empty() => items,
        _ => {
            if outer.is_empty() {
                outer.push(Violation::new("", Rule::SchemaType, "must be an array"));
            }
            return Err(outer);
        }
    };
    Ok(items
        .into_iter()
        .zip(per_item)
        .enumerate()
        .map(|(i, (item, violations))| decode_one(i, item, violations, session, settings))
        .collect())
}

/// The index of the registration a pointer is in (`/3/nirCertifie` → 3).
fn item_index(pointer: &str) -> Option<usize> {
    pointer.strip_prefix('/')?.split('/').next()?.parse().ok()
}

/// The session's numbers come from the ledger, not from Pôle emploi; a bad one is a bad poll,
/// reported once rather than on every registration.
fn session_violations(s: &SessionRef) -> Vec<Violation> {
    [
        ("?numeroFormation", &s.numero_formation),
        ("?numeroAction", &s.numero_action),
        ("?numeroSession", &s.numero_session),
    ]
    .into_iter()
    .filter_map(|(pointer, value)| {
        identifiers::intercarif(value)
            .err()
            .map(|(rule, detail)| Violation::new(pointer, rule, detail))
    })
    .collect()
}

fn decode_one(
    index: usize,
    item: Value,
    mut violations: Vec<Violation>,
    session: &SessionRef,
    settings: &RuleSettings,
) -> Decoded {
    // The schema checks a date's shape; whether it is a day of the calendar is checked here, so
    // that the violation names the field rather than the whole registration.
    add_uncovered(&mut violations, date_violations(index, &item));
    // As for orientations: read what can be read even after a schema violation, so the rules' findings
    // join the same list.
    let inscription: model::Inscription = match serde_json::from_value(item) {
        Ok(i) => i,
        Err(_) => {
            if violations.is_empty() {
                violations.push(Violation::new(
                    format!("/{index}"),
                    Rule::SchemaOther,
                    "does not match the registration model",
                ));
            }
            return Err(violations);
        }
    };
    let prefix = format!("/{index}/");
    let dossier = match to_canonical(&inscription, session) {
        Some(d) => d,
        None => {
            add_uncovered(
                &mut violations,
                vec![Violation::new(
                    format!("{prefix}codeStatutInscription"),
                    Rule::SchemaEnum,
                    "is not a registration status Pôle emploi defines",
                )],
            );
            return Err(violations);
        }
    };
    add_uncovered(
        &mut violations,
        rules_in_source_terms(&dossier, &mapping::TABLE, &prefix, settings),
    );
    if violations.is_empty() {
        Ok(dossier)
    } else {
        Err(violations)
    }
}

/// The registration's dates that have the documented shape but are not days of the calendar
/// (`2019-02-30`, `2019-09-02 25:00:00`).
fn date_violations(index: usize, item: &Value) -> Vec<Violation> {
    let mut dates: Vec<(String, &Value)> = Vec::new();
    if let Some(v) = item.get("dateEntree") {
        dates.push((format!("/{index}/dateEntree"), v));
    }
    if let Some(Value::Array(modules)) = item.get("listeModuleFormation") {
        for (m, module) in modules.iter().enumerate() {
            for field in ["dateDebut", "dateFin"] {
                if let Some(v) = module.get(field) {
                    dates.push((format!("/{index}/listeModuleFormation/{m}/{field}"), v));
                }
            }
        }
    }
    dates
        .into_iter()
        .filter_map(|(pointer, v)| {
            let s = v.as_str()?;
            model::lenient::parse_date(s).is_none().then(|| {
                Violation::new(
                    pointer,
                    Rule::DateFormat,
                    "is not a real date in the form YYYY-MM-DD, optionally followed by hh:mm:ss",
                )
            })
        })
        .collect()
}

/// The canonical state of a registration (contract §2.3). An AES received means the trainee
/// entered, whatever the registration code says: the certificate is the later, stronger fact.
pub fn state_of(status: RegistrationStatus, aes_received: bool) -> State {
    if aes_received {
        return State::Entered;
    }
    match status {
        RegistrationStatus::Retained => State::Registered,
        RegistrationStatus::Absent | RegistrationStatus::NotRetained => State::Refused,
        RegistrationStatus::AwaitingDecision => State::Prescribed,
    }
}

/// The registration code Pôle emploi would show for a canonical state with no registration of its
/// own (simulator). A cancellation is shown as not retained, the nearest code Pôle emploi has.
fn status_for(state: State) -> RegistrationStatus {
    match state {
        State::Prescribed => RegistrationStatus::AwaitingDecision,
        State::Refused | State::Cancelled => RegistrationStatus::NotRetained,
        State::Registered
        | State::Validated
        | State::Entered
        | State::Exited
        | State::ServiceDone
        | State::Settled => RegistrationStatus::Retained,
    }
}

/// `None` when the status code is unknown (the schema's enum should have caught it first).
fn to_canonical(i: &model::Inscription, session: &SessionRef) -> Option<Dossier> {
    let status = RegistrationStatus::from_external(&i.code_statut_inscription)?;
    let pole_emploi_id = PoleEmploiId {
        national: i.id_national_de.clone(),
        regional: i.id_regional_de.clone(),
        geo_code: i.code_geo_de.clone(),
    };
    let modules = i.liste_module_formation.as_deref().unwrap_or_default();
    let start = modules.iter().map(|m| m.date_debut).min();
    let end = modules.iter().map(|m| m.date_fin).max();
    Some(Dossier {
        sources: vec![SourceRef {
            system: System::PoleEmploi,
            id: i.id_inscription.clone(),
            version: None,
            updated_on: None,
        }],
        state: state_of(status, i.aes_recue),
        dispositif: None,
        category: None,
        programme: None,
        consultation: None,
        trainee: Trainee {
            nir: Nir::new(i.nir_certifie.clone()),
            birth_name: None,
            usage_name: None,
            first_names: None,
            sex: None,
            birth_date: None,
            pole_emploi_id: (pole_emploi_id != PoleEmploiId::default()).then_some(pole_emploi_id),
            postal_code: None,
            commune_insee: None,
        },
        training: Training {
            numero_formation: Some(session.numero_formation.clone()),
            numero_action: Some(session.numero_action.clone()),
            numero_session: session.numero_session.clone(),
            title: None,
            formacode: None,
            certification: None,
        },
        provider: None,
        // The registration's modules span the trainee's own session: first start to last end.
        session: start.zip(end).map(|(start, end)| Session {
            start,
            end,
            hours_centre: None,
            hours_company: None,
        }),
        // Without the AES, `dateEntree` is a planned date, not an entry.
        entry: if i.aes_recue {
            i.date_entree.map(|date| Entry { date })
        } else {
            None
        },
        exit: None,
        fundings: Vec::new(),
        cancellation: None,
        refusal: None,
        orientation: None,
        registration: Some(Registration {
            id: i.id_inscription.clone(),
            status,
            project_id: i.id_projet_action.clone(),
            aes_received: i.aes_recue,
        }),
    })
}

/// The registrations answer Pôle emploi would give for these dossiers (simulator, round trip).
/// The session's numbers are not in it: they are the query of the call.
pub fn encode_registrations(dossiers: &[Dossier]) -> Value {
    Value::Array(
        dossiers
            .iter()
            .map(|d| serde_json::to_value(to_model(d)).unwrap_or(Value::Null))
            .collect(),
    )
}

fn to_model(d: &Dossier) -> model::Inscription {
    let id = d
        .registration
        .as_ref()
        .map(|r| r.id.clone())
        .or_else(|| d.source(System::PoleEmploi).map(|s| s.id.clone()))
        .or_else(|| d.sources.first().map(|s| s.id.clone()))
        .unwrap_or_else(|| "unknown".to_string());
    // Pôle emploi numbers its registrations (up to 10 digits): a dossier known only by another
    // system's id gets a number derived from it, the same at every call.
    let id = if id.len() <= 10 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        id
    } else {
        use sha2::Digest;
        let h = sha2::Sha256::digest(id.as_bytes());
        let n = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        (n % 10_000_000_000).to_string()
    };
    let status = d
        .registration
        .as_ref()
        .map_or_else(|| status_for(d.state), |r| r.status);
    let entered = matches!(
        d.state,
        State::Entered | State::Exited | State::ServiceDone | State::Settled
    );
    let pe = d.trainee.pole_emploi_id.clone().unwrap_or_default();
    model::Inscription {
        id_inscription: id,
        code_statut_inscription: status.external().to_string(),
        id_national_de: pe.national,
        id_regional_de: pe.regional,
        code_geo_de: pe.geo_code,
        nir_certifie: d.trainee.nir.nir13().to_string(),
        id_projet_action: d.registration.as_ref().and_then(|r| r.project_id.clone()),
        aes_recue: entered || d.registration.as_ref().is_some_and(|r| r.aes_received),
        date_entree: d.entry.as_ref().map(|e| e.date),
        liste_module_formation: Some(
            d.session
                .iter()
                .map(|s| model::Module {
                    date_debut: s.start,
                    date_fin: s.end,
                })
                .collect(),
        ),
    }
}

/// Decodes the OAuth2 token answer.
pub fn decode_token(bytes: &[u8]) -> Result<Token, Vec<Violation>> {
    decode_with_schema(bytes, SchemaId::PoleEmploiToken, "the token answer")
}

/// Decodes an error body of the API.
pub fn decode_error(bytes: &[u8]) -> Result<ErrorBody, Vec<Violation>> {
    decode_with_schema(bytes, SchemaId::PoleEmploiError, "the error body")
}

fn decode_with_schema<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    schema: SchemaId,
    what: &str,
) -> Result<T, Vec<Violation>> {
    let value = parse_json(bytes).map_err(|v| vec![v])?;
    let violations = check_schema(schema, &value);
    if !violations.is_empty() {
        return Err(violations);
    }
    serde_json::from_value(value).map_err(|_| {
        vec![Violation::new(
            "",
            Rule::SchemaOther,
            format!("does not match the model of {what}"),
        )]
    })
}

/// The token answer of the simulator. Exposes the secret on purpose: it is the answer's content.
pub fn encode_token(token: &Token) -> Value {
    serde_json::json!({
        "access_token": token.access_token(),
        "token_type": token.token_type,
        "expires_in": token.expires_in,
    })
}

/// An error body of the simulator.
pub fn encode_error(body: &ErrorBody) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}
