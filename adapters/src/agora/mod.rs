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

// ---------------------------------------------------------------------------------------------
// Encode (passerelle → AGORA)
// ---------------------------------------------------------------------------------------------

/// Collects what AGORA requires and the dossier lacks, with canonical pointers.
#[derive(Default)]
struct Needs(Vec<Violation>);

impl Needs {
    /// A field AGORA requires (empty strings count as missing: AGORA requires `minLength: 1`).
    fn field<T>(&mut self, value: Option<T>, pointer: &str) -> Option<T> {
        if value.is_none() {
            self.0.push(Violation::new(
                pointer,
                Rule::FieldRequired,
                "is required by AGORA",
            ));
        }
        value
    }

    /// A block the operation needs, given the dossier's state.
    fn block<T>(&mut self, value: Option<T>, pointer: &str, d: &Dossier) -> Option<T> {
        if value.is_none() {
            self.0.push(Violation::new(
                pointer,
                Rule::StatusRequired,
                format!(
                    "is required to bring AGORA to the dossier's state ({})",
                    d.state.as_str()
                ),
            ));
        }
        value
    }
}

fn text(s: &Option<Personal<String>>) -> Option<&str> {
    s.as_ref()
        .map(|p| p.expose().as_str())
        .filter(|s| !s.trim().is_empty())
}

fn plain(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// Builds the dossier body, or says every field AGORA requires that the dossier lacks. No schema
/// check here: [`encode_dossier`] adds it.
fn build_dossier(dossier_id: &str, d: &Dossier) -> Result<DossierBody, Vec<Violation>> {
    let mut n = Needs::default();
    let t = &d.trainee;
    let main = n.field(d.main_funding(), "/fundings");
    let dispositif = n.field(
        d.dispositif
            .as_ref()
            .map(|x| x.code.as_str())
            .filter(|s| !s.is_empty()),
        "/dispositif/code",
    );
    let birth_name = n.field(text(&t.birth_name), "/trainee/birth_name");
    let first_names = n.field(text(&t.first_names), "/trainee/first_names");
    let sex = n.field(t.sex, "/trainee/sex");
    let birth_date = n.field(t.birth_date.as_ref(), "/trainee/birth_date");
    let postal_code = n.field(plain(&t.postal_code), "/trainee/postal_code");
    let tr = &d.training;
    let numero_formation = n.field(plain(&tr.numero_formation), "/training/numero_formation");
    let numero_action = n.field(plain(&tr.numero_action), "/training/numero_action");
    let title = n.field(plain(&tr.title), "/training/title");
    let formacode = n.field(tr.formacode.as_ref(), "/training/formacode");
    let siret = n.field(
        d.provider.as_ref().and_then(|p| plain(&p.siret)),
        "/provider/siret",
    );
    let session = n.field(d.session.as_ref(), "/session");
    // Only worth saying when the session is there: otherwise `/session` already covers it.
    let hours = match session {
        Some(s) => n.field(s.hours_planned(), "/session/hours_centre"),
        None => None,
    };
    let mut financements = Vec::with_capacity(d.fundings.len());
    for (i, f) in d.fundings.iter().enumerate() {
        if let Some(cents) = n.field(f.committed_cents, &format!("/fundings/{i}/committed_cents")) {
            financements.push(Financement {
                code_financeur: f.funder.to_string(),
                montant_engage_cents: cents,
            });
        }
    }
    let (
        Some(main),
        Some(dispositif),
        Some(birth_name),
        Some(first_names),
        Some(sex),
        Some(birth_date),
        Some(postal_code),
        Some(numero_formation),
        Some(numero_action),
        Some(title),
        Some(formacode),
        Some(siret),
        Some(session),
        Some(hours),
    ) = (
        main,
        dispositif,
        birth_name,
        first_names,
        sex,
        birth_date,
        postal_code,
        numero_formation,
        numero_action,
        title,
        formacode,
        siret,
        session,
        hours,
    )
    else {
        return Err(n.0);
    };
    if !n.0.is_empty() {
        return Err(n.0);
    }
    Ok(DossierBody {
        financeur: model::Financeur {
            code: main.funder.to_string(),
            siret: None,
        },
        reference: dossier_id.to_string(),
        dispositif: dispositif.to_string(),
        stagiaire: Stagiaire {
            nir13: Personal::new(t.nir.nir13().to_string()),
            nom_naissance: Personal::new(birth_name.to_string()),
            // In French civil law the usage name defaults to the birth name; AGORA requires one.
            nom_usage: Personal::new(text(&t.usage_name).unwrap_or(birth_name).to_string()),
            prenoms: Personal::new(first_names.to_string()),
            sexe: sex,
            date_naissance: Personal::new(*birth_date.expose()),
            id_national_de: t
                .pole_emploi_id
                .as_ref()
                .and_then(|p| plain(&p.national))
                .map(str::to_string),
            code_postal: postal_code.to_string(),
        },
        formation: Formation {
            numero_formation: numero_formation.to_string(),
            numero_action: numero_action.to_string(),
            numero_session: tr.numero_session.clone(),
            intitule: title.to_string(),
            formacode: formacode.code.clone(),
            certification: plain(&tr.certification).map(str::to_string),
            siret_organisme: siret.to_string(),
            date_debut: session.start,
            date_fin: session.end,
            heures_prevues: hours,
        },
        financements,
    })
}

/// Checks an encoded value against its schema; violations come back with canonical pointers.
/// `root` is where the value sits in a backfill line (`/sortie` for a transition body), since the
/// mapping table speaks in backfill-line pointers.
fn net<T: Serialize>(schema: SchemaId, root: &str, value: &T) -> Result<(), Vec<Violation>> {
    let json = serde_json::to_value(value).map_err(|_| {
        vec![Violation::new(
            "",
            Rule::SchemaOther,
            "could not be serialised",
        )]
    })?;
    let violations: Vec<Violation> = check_schema(schema, &json)
        .into_iter()
        .map(|mut v| {
            v.pointer = mapping::canonical_of(&format!("{root}{}", v.pointer));
            v
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// The body of `POST /dossiers`: NIR cut to 13, amounts in cents, ISO dates, `reference` =
/// `dossier_id`, `financeur.code` = the main funder (first funding), `heures_prevues` =
/// [`crate::canonical::Session::hours_planned`].
///
/// Errors: every field AGORA requires that the dossier lacks (canonical pointers, `field.required`),
/// or, when all are there, every value AGORA's schema would refuse (canonical pointers, `schema.*`).
pub fn encode_dossier(dossier_id: &str, d: &Dossier) -> Result<DossierBody, Vec<Violation>> {
    let body = build_dossier(dossier_id, d)?;
    net(SchemaId::AgoraDossier, "", &body)?;
    Ok(body)
}

/// The query of `GET /dossiers?financeur={code}&reference={dossier_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub financeur: String,
    pub reference: String,
}

/// The search's parameters: the main funder's code and passerelle's id.
pub fn search_query(dossier_id: &str, d: &Dossier) -> Result<SearchQuery, Vec<Violation>> {
    let mut n = Needs::default();
    let main = n.field(d.main_funding(), "/fundings");
    match main {
        Some(f) if !dossier_id.is_empty() => Ok(SearchQuery {
            financeur: f.funder.to_string(),
            reference: dossier_id.to_string(),
        }),
        Some(_) => Err(vec![Violation::new(
            mapping::DOSSIER_ID,
            Rule::FieldRequired,
            "is required by AGORA",
        )]),
        None => Err(n.0),
    }
}

/// The body of a transition call (`Enter`, `Exit`, `Settle`, `Cancel`).
///
/// - exit: `resultat_certification` is `INCONNU` when the source gave no result (AGORA requires
///   the field, and INCONNU is its spelling of "not known"); `heures_realisees` is required.
/// - settle: the main funder's realised and settled cents.
/// - cancel: the `cancellation` block. A **refused** dossier has none, so it is cancelled with:
///   its refusal reason (or [`REFUS_SANS_MOTIF`]); as initiator `STAGIAIRE` when Pôle emploi
///   registered the trainee as absent from the information meeting (`ICA`), else `ORGANISME` (a
///   refusal is the provider's positioning decision: `ICN`, OUIFORM's `REFUSEE`); and as date the
///   latest update date its sources give, else the orientation date — the closest known dates to
///   the refusal, never a date invented from the clock.
///
/// `Search` and `Create` carry no transition body: they are a `lifecycle.transition` violation here
/// (use [`search_query`] and [`encode_dossier`]).
pub fn encode_transition(op: Operation, d: &Dossier) -> Result<TransitionBody, Vec<Violation>> {
    let (body, root, schema) = build_transition(op, d)?;
    net(schema, root, &body)?;
    Ok(body)
}

fn build_transition(
    op: Operation,
    d: &Dossier,
) -> Result<(TransitionBody, &'static str, SchemaId), Vec<Violation>> {
    let mut n = Needs::default();
    match op {
        Operation::Search | Operation::Create => Err(vec![Violation::new(
            "/state",
            Rule::LifecycleTransition,
            "search and create are not transitions and have no transition body",
        )]),
        Operation::Enter => {
            let Some(entry) = n.block(d.entry.as_ref(), "/entry", d) else {
                return Err(n.0);
            };
            Ok((
                TransitionBody::Entree(EntreeBody {
                    date_entree: entry.date,
                }),
                "/entree",
                SchemaId::AgoraEntree,
            ))
        }
        Operation::Exit => {
            let Some(exit) = n.block(d.exit.as_ref(), "/exit", d) else {
                return Err(n.0);
            };
            let Some(hours) = n.field(exit.hours_done, "/exit/hours_done") else {
                return Err(n.0);
            };
            Ok((
                TransitionBody::Sortie(SortieBody {
                    date_sortie: exit.date,
                    motif_sortie: exit.reason,
                    resultat_certification: exit.result.unwrap_or(CertificationResult::Unknown),
                    heures_realisees: hours,
                }),
                "/sortie",
                SchemaId::AgoraSortie,
            ))
        }
        Operation::Settle => {
            let Some(main) = n.block(d.main_funding(), "/fundings", d) else {
                return Err(n.0);
            };
            let realised = n.field(main.realised_cents, "/fundings/0/realised_cents");
            let settled = n.field(main.settled_cents, "/fundings/0/settled_cents");
            let (Some(realised), Some(settled)) = (realised, settled) else {
                return Err(n.0);
            };
            Ok((
                TransitionBody::Solde(SoldeBody {
                    montant_realise_cents: realised,
                    montant_solde_cents: settled,
                }),
                "/solde",
                SchemaId::AgoraSolde,
            ))
        }
        Operation::Cancel => {
            let body = match (&d.cancellation, d.state) {
                (Some(c), _) => AnnulationBody {
                    date_annulation: c.date,
                    initiateur: c.initiator,
                    motif: plain(&c.reason).unwrap_or(MOTIF_NON_COMMUNIQUE).to_string(),
                },
                (None, State::Refused) => refusal_as_cancellation(d).ok_or_else(|| {
                    vec![Violation::new(
                        "/cancellation/date",
                        Rule::FieldRequired,
                        "is required by AGORA: a refused dossier is cancelled at its sources' \
                         latest update or its orientation date, and it has neither",
                    )]
                })?,
                (None, _) => {
                    n.block(None::<()>, "/cancellation", d);
                    return Err(n.0);
                }
            };
            Ok((
                TransitionBody::Annulation(body),
                "/annulation",
                SchemaId::AgoraAnnulation,
            ))
        }
    }
}

fn refusal_as_cancellation(d: &Dossier) -> Option<AnnulationBody> {
    let date: NaiveDate = d
        .sources
        .iter()
        .filter_map(|s| s.updated_on)
        .max()
        .or_else(|| d.orientation.as_ref().map(|o| o.date.date_naive()))?;
    let initiateur = match d.registration.as_ref().map(|r| r.status) {
        Some(RegistrationStatus::Absent) => Initiator::Trainee,
        _ => Initiator::Provider,
    };
    let motif = d
        .refusal
        .as_ref()
        .and_then(|r| plain(&r.reason))
        .unwrap_or(REFUS_SANS_MOTIF);
    Some(AnnulationBody {
        date_annulation: date,
        initiateur,
        motif: motif.to_string(),
    })
}

/// The transitions that lead AGORA from `CREE` to `etat` (`ANNULE`: the cancellation).
fn transitions_to(etat: AgoraState) -> &'static [Operation] {
    use Operation::*;
    match etat {
        AgoraState::Cree => &[],
        AgoraState::Entre => &[Enter],
        AgoraState::Sorti => &[Enter, Exit],
        AgoraState::Solde => &[Enter, Exit, Settle],
        AgoraState::Annule => &[Cancel],
    }
}

/// One backfill line: the dossier body, `etat`, and exactly the blocks `etat` implies.
pub fn encode_reprise_line(
    dossier_id: &str,
    d: &Dossier,
    etat: AgoraState,
) -> Result<RepriseLine, Vec<Violation>> {
    let mut errors = Vec::new();
    let dossier = build_dossier(dossier_id, d)
        .map_err(|e| errors.extend(e))
        .ok();
    let mut line = RepriseLine {
        dossier: dossier.unwrap_or_else(placeholder),
        etat,
        entree: None,
        sortie: None,
        solde: None,
        annulation: None,
    };
    for &op in transitions_to(etat) {
        match build_transition(op, d) {
            Ok((TransitionBody::Entree(b), ..)) => line.entree = Some(b),
            Ok((TransitionBody::Sortie(b), ..)) => line.sortie = Some(b),
            Ok((TransitionBody::Solde(b), ..)) => line.solde = Some(b),
            Ok((TransitionBody::Annulation(b), ..)) => line.annulation = Some(b),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(dedup(errors));
    }
    net(SchemaId::AgoraRepriseLine, "", &line)?;
    Ok(line)
}

/// Stands in for a body that could not be built, only so the line's blocks can still be checked
/// and every missing field reported at once; a line holding it is never returned.
fn placeholder() -> DossierBody {
    let epoch = NaiveDate::MIN;
    DossierBody {
        financeur: model::Financeur {
            code: String::new(),
            siret: None,
        },
        reference: String::new(),
        dispositif: String::new(),
        stagiaire: Stagiaire {
            nir13: Personal::new(String::new()),
            nom_naissance: Personal::new(String::new()),
            nom_usage: Personal::new(String::new()),
            prenoms: Personal::new(String::new()),
            sexe: crate::canonical::Sex::Male,
            date_naissance: Personal::new(epoch),
            id_national_de: None,
            code_postal: String::new(),
        },
        formation: Formation {
            numero_formation: String::new(),
            numero_action: String::new(),
            numero_session: String::new(),
            intitule: String::new(),
            formacode: String::new(),
            certification: None,
            siret_organisme: String::new(),
            date_debut: epoch,
            date_fin: epoch,
            heures_prevues: 0,
        },
        financements: Vec::new(),
    }
}

fn dedup(mut v: Vec<Violation>) -> Vec<Violation> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert((x.pointer.clone(), x.rule)));
    v
}

/// What AGORA needs and the dossier lacks to bring AGORA to the target of the dossier's state
/// (contract §3, trigger rules): the fields of the dossier body, plus the blocks of the transitions
/// the state implies. For `refused` and `cancelled`, which never create a dossier, only what the
/// search and the cancellation need. Empty: the dossier is complete for AGORA.
///
/// Only *missing* data is reported; invalid values are the domain rules' business, checked at
/// ingress (and by [`encode_dossier`]'s schema check, as a last guard).
pub fn missing_for_agora(d: &Dossier) -> Vec<Violation> {
    let mut out = Vec::new();
    match planner::target(d.state) {
        Target::Nothing | Target::State(_) => {
            if let Err(e) = build_dossier("-", d) {
                out.extend(e);
            }
            let from = Delivered::Present {
                numero_agora: String::new(),
                state: AgoraState::Cree,
            };
            for op in planner::plan(&from, d.state).unwrap_or_default() {
                if let Err(e) = build_transition(op, d) {
                    out.extend(e);
                }
            }
        }
        Target::CancelIfPresent => {
            if let Err(e) = search_query("-", d) {
                out.extend(e);
            }
            if let Err(e) = build_transition(Operation::Cancel, d) {
                out.extend(e);
            }
        }
    }
    dedup(out)
}

/// Whether a lot can take more lines after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// There is room for more lines.
    Room,
    /// The lot holds [`MAX_LOT_LINES`]: send it, start another.
    Full,
}

/// Why a line was not added to a lot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LotError {
    #[error("the lot already holds {MAX_LOT_LINES} lines")]
    Full,
    #[error("the line could not be serialised")]
    Encode,
}

/// A backfill lot being filled: NDJSON, one JSON object and `\n` per line, at most
/// [`MAX_LOT_LINES`]. It remembers each line's reference, since AGORA's report numbers lines.
#[derive(Default)]
pub struct RepriseLot {
    bytes: Vec<u8>,
    references: Vec<String>,
}

// The bytes hold NIRs and names: never print them.
impl fmt::Debug for RepriseLot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepriseLot")
            .field("lines", &self.references.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl RepriseLot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a line. `Ok(Fill::Full)` when this line filled the lot; `Err(LotError::Full)` (line
    /// not added) when it was already full.
    pub fn push(&mut self, line: &RepriseLine) -> Result<Fill, LotError> {
        if self.is_full() {
            return Err(LotError::Full);
        }
        // serde_json writes a compact object with no raw newline (strings escape theirs), so one
        // line is one object.
        let json = serde_json::to_vec(line).map_err(|_| LotError::Encode)?;
        self.bytes.extend_from_slice(&json);
        self.bytes.push(b'\n');
        self.references.push(line.dossier.reference.clone());
        Ok(if self.is_full() {
            Fill::Full
        } else {
            Fill::Room
        })
    }

    pub fn len(&self) -> usize {
        self.references.len()
    }

    pub fn is_empty(&self) -> bool {
        self.references.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.references.len() >= MAX_LOT_LINES
    }

    /// The reference of each line, in order: line `ligne` of AGORA's report is `references()[ligne - 1]`.
    pub fn references(&self) -> &[String] {
        &self.references
    }

    /// The body of `POST /reprises`.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

// ---------------------------------------------------------------------------------------------
// Decode answers (passerelle's side)
// ---------------------------------------------------------------------------------------------

/// Why a call may succeed if tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransientReason {
    /// `429`: over AGORA's rate.
    RateLimited,
    /// `408`.
    RequestTimeout,
    /// A `5xx`, with its status.
    ServerError(u16),
    /// The gateway's transport failed (timeout, dropped connection): no HTTP answer at all.
    Transport(String),
}

impl fmt::Display for TransientReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransientReason::RateLimited => f.write_str("HTTP 429, over AGORA's rate"),
            TransientReason::RequestTimeout => f.write_str("HTTP 408, request timeout"),
            TransientReason::ServerError(s) => write!(f, "HTTP {s}, AGORA unavailable"),
            TransientReason::Transport(r) => write!(f, "transport: {r}"),
        }
    }
}

/// What an AGORA answer means for the reconcile worker.
///
/// `Debug` is written by hand: AGORA's anomaly labels may quote a refused value (a name, a NIR),
/// so only their codes and fields are printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Search: AGORA has the dossier.
    Found {
        numero_agora: String,
        etat: AgoraState,
    },
    /// Search: AGORA has no such dossier (`404`).
    NotFound,
    /// Create: `201`.
    Created { numero_agora: String },
    /// Create: `409`, it already existed under this number: use it.
    AlreadyExists { numero_agora: String },
    /// A transition: `200`.
    Accepted,
    /// `422`: a business rejection, never retried; the dossier goes to the dead letters.
    Rejected { anomalies: Vec<Anomaly> },
    /// A transition: `409 AG-ETAT`, AGORA's state is not what passerelle believed: search again.
    StateConflict,
    /// Try again later (`429`, `408`, `5xx`, transport), after `retry_after` when AGORA said.
    Transient {
        retry_after: Option<Duration>,
        reason: TransientReason,
    },
    /// Anything else, including a success whose body does not parse: an operator looks.
    Unexpected { status: u16, detail: String },
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Found { numero_agora, etat } => f
                .debug_struct("Found")
                .field("numero_agora", numero_agora)
                .field("etat", etat)
                .finish(),
            Outcome::NotFound => f.write_str("NotFound"),
            Outcome::Created { numero_agora } => f
                .debug_struct("Created")
                .field("numero_agora", numero_agora)
                .finish(),
            Outcome::AlreadyExists { numero_agora } => f
                .debug_struct("AlreadyExists")
                .field("numero_agora", numero_agora)
                .finish(),
            Outcome::Accepted => f.write_str("Accepted"),
            Outcome::Rejected { anomalies } => {
                let codes: Vec<String> = anomalies
                    .iter()
                    .map(|a| match &a.champ {
                        Some(c) => format!("{} on {c}", a.code),
                        None => a.code.clone(),
                    })
                    .collect();
                f.debug_struct("Rejected")
                    .field("anomalies", &codes)
                    .finish()
            }
            Outcome::StateConflict => f.write_str("StateConflict"),
            Outcome::Transient {
                retry_after,
                reason,
            } => f
                .debug_struct("Transient")
                .field("retry_after", retry_after)
                .field("reason", reason)
                .finish(),
            Outcome::Unexpected { status, detail } => f
                .debug_struct("Unexpected")
                .field("status", status)
                .field("detail", detail)
                .finish(),
        }
    }
}

impl Outcome {
    /// A transport failure (timeout, dropped connection), for the gateway to report in the same terms.
    pub fn transient(reason: impl Into<String>) -> Self {
        Outcome::Transient {
            retry_after: None,
            reason: TransientReason::Transport(reason.into()),
        }
    }

    /// Whether the worker should try the same call again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Outcome::Transient { .. })
    }
}

/// Reads AGORA's answer to `op`. Total: every input gives an outcome, garbage gives `Unexpected`.
/// `retry_after` is the `Retry-After` header, in seconds or as an HTTP-date.
pub fn decode_answer(
    op: Operation,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Outcome {
    decode_answer_at(op, status, retry_after, body, Utc::now())
}

/// [`decode_answer`] with the clock given, so an HTTP-date `Retry-After` is testable.
pub fn decode_answer_at(
    op: Operation,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Outcome {
    use Operation::*;
    let transition = matches!(op, Enter | Exit | Settle | Cancel);
    let result = match (op, status) {
        (Search, 200) => answer::<SearchAnswer>(body).map(|a| Outcome::Found {
            numero_agora: a.numero_agora,
            etat: a.etat,
        }),
        (Search, 404) => Ok(Outcome::NotFound),
        (Create, 201) => answer::<NumberAnswer>(body).map(|a| Outcome::Created {
            numero_agora: a.numero_agora,
        }),
        (Create, 409) => answer::<NumberAnswer>(body).map(|a| Outcome::AlreadyExists {
            numero_agora: a.numero_agora,
        }),
        // The contract gives a transition's 200 no body; accept none, or any well-formed answer.
        (_, 200) if transition => {
            if body.iter().all(u8::is_ascii_whitespace) {
                Ok(Outcome::Accepted)
            } else {
                answer::<serde_json::Value>(body).map(|_| Outcome::Accepted)
            }
        }
        (_, 409) if transition => answer::<CodeAnswer>(body).and_then(|a| {
            if a.code == AG_ETAT {
                Ok(Outcome::StateConflict)
            } else {
                Err("is a conflict with a code other than AG-ETAT")
            }
        }),
        _ => return decode_failure_at(op.name(), status, retry_after, body, now),
    };
    result.unwrap_or_else(|why| Outcome::Unexpected {
        status,
        detail: format!("HTTP {status} to {}: the body {why}", op.name()),
    })
}

/// Reads an answer that is not the call's success: `422` anomalies, transient statuses, or
/// unexpected. Public for the calls outside [`Operation`] (`POST /reprises`, `GET /reprises/{lot}`);
/// `call` names the call in details.
pub fn decode_failure(call: &str, status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    decode_failure_at(call, status, retry_after, body, Utc::now())
}

fn decode_failure_at(
    call: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Outcome {
    let wait = retry_after.and_then(|h| parse_retry_after(h, now));
    let transient = |reason| Outcome::Transient {
        retry_after: wait,
        reason,
    };
    match status {
        422 => match answer::<AnomaliesAnswer>(body) {
            Ok(a) => Outcome::Rejected {
                anomalies: a.anomalies,
            },
            // A rejection we cannot read is not dead-lettered blind: an operator looks.
            Err(why) => Outcome::Unexpected {
                status,
                detail: format!("HTTP 422 to {call}: the body {why}"),
            },
        },
        429 => transient(TransientReason::RateLimited),
        408 => transient(TransientReason::RequestTimeout),
        500..=599 => transient(TransientReason::ServerError(status)),
        _ => Outcome::Unexpected {
            status,
            detail: format!("HTTP {status} is not an answer AGORA gives to {call}"),
        },
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date (IMF-fixdate, read as RFC 2822)
/// turned into the time left from `now` (zero when past). `None` when unreadable: the worker then
/// uses its own backoff.
///
/// Capped at [`MAX_RETRY_AFTER`] before anything else is done with it: a garbled or hostile value
/// (`10000000000000000000`, a date in year 9999) must neither overflow the clock arithmetic
/// downstream nor stop deliveries for longer than a plausible pause. A number of seconds too large
/// for `u64` is such a value too, and reads as the cap.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs())));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let left = at.with_timezone(&Utc).signed_duration_since(now);
    let cap = chrono::TimeDelta::seconds(MAX_RETRY_AFTER.as_secs() as i64);
    Some(left.min(cap).to_std().unwrap_or(Duration::ZERO))
}

/// The longest pause a `Retry-After` imposes (an hour).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses an answer body: JSON, valid against `answer.schema.json`, and of the shape `T`. The error
/// completes "the body …" and never quotes the body.
fn answer<T: DeserializeOwned>(body: &[u8]) -> Result<T, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "is not JSON")?;
    if !check_schema(SchemaId::AgoraAnswer, &value).is_empty() {
        return Err("does not match AGORA's answer schema");
    }
    serde_json::from_value(value).map_err(|_| "is not the answer this call expects")
}

/// Reads the `202 {"lot"}` of `POST /reprises`.
pub fn decode_lot_accepted(body: &[u8]) -> Result<String, Vec<Violation>> {
    decode_json::<LotAnswer>(SchemaId::AgoraAnswer, body).map(|a| a.lot)
}

/// Reads `GET /reprises/{lot}`: schema first, then the counts must add up.
pub fn decode_reprise_report(body: &[u8]) -> Result<RepriseReport, Vec<Violation>> {
    let report = decode_json::<RepriseReport>(SchemaId::AgoraRepriseReport, body)?;
    let mut v = Vec::new();
    let done = u64::from(report.acceptees) + u64::from(report.rejetees);
    if done > u64::from(report.lignes) {
        v.push(Violation::new(
            "/acceptees",
            Rule::SchemaRange,
            "accepted and rejected lines outnumber the lot's lines",
        ));
    }
    if report.etat == ReportState::Termine && done != u64::from(report.lignes) {
        v.push(Violation::new(
            "/etat",
            Rule::SchemaOther,
            "the lot is finished but not every line is accepted or rejected",
        ));
    }
    if report.compte_rendu.len() as u64 != done {
        v.push(Violation::new(
            "/compte_rendu",
            Rule::SchemaItems,
            "does not have one entry per accepted or rejected line",
        ));
    }
    if v.is_empty() {
        Ok(report)
    } else {
        Err(v)
    }
}

/// JSON, then the schema, then serde; every violation with its JSON pointer, none quoting a value.
fn decode_json<T: DeserializeOwned>(schema: SchemaId, bytes: &[u8]) -> Result<T, Vec<Violation>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's syntax errors name a position, never a value.
        vec![Violation::new(
            "",
            Rule::JsonSyntax,
            format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )]
    })?;
    let violations = check_schema(schema, &value);
    if !violations.is_empty() {
        return Err(violations);
    }
    // The schema is stricter than the types, so this fails only if the two drift apart; serde's
    // message is dropped because it may quote the value.
    serde_json::from_value(value).map_err(|_| {
        vec![Violation::new(
            "",
            Rule::SchemaOther,
            "does not have the shape of this body",
        )]
    })
}

// ---------------------------------------------------------------------------------------------
// Decode bodies, encode answers (the AGORA simulator's side)
// ---------------------------------------------------------------------------------------------

/// Reads a `POST /dossiers` body.
pub fn decode_dossier_body(bytes: &[u8]) -> Result<DossierBody, Vec<Violation>> {
    decode_json(SchemaId::AgoraDossier, bytes)
}

/// Reads the body of a transition call.
pub fn decode_transition(op: Operation, bytes: &[u8]) -> Result<TransitionBody, Vec<Violation>> {
    match op {
        Operation::Enter => decode_json(SchemaId::AgoraEntree, bytes).map(TransitionBody::Entree),
        Operation::Exit => decode_json(SchemaId::AgoraSortie, bytes).map(TransitionBody::Sortie),
        Operation::Settle => decode_json(SchemaId::AgoraSolde, bytes).map(TransitionBody::Solde),
        Operation::Cancel => {
            decode_json(SchemaId::AgoraAnnulation, bytes).map(TransitionBody::Annulation)
        }
        Operation::Search | Operation::Create => Err(vec![Violation::new(
            "",
            Rule::LifecycleTransition,
            "search and create are not transitions and have no transition body",
        )]),
    }
}

/// Reads one backfill line.
pub fn decode_reprise_line(bytes: &[u8]) -> Result<RepriseLine, Vec<Violation>> {
    decode_json(SchemaId::AgoraRepriseLine, bytes)
}

/// Reads a whole lot: each line with its 1-based number, as AGORA's report counts them. A final
/// `\n` ends the last line rather than starting an empty one. The caller refuses a lot of more than
/// [`MAX_LOT_LINES`] lines with `413`.
pub fn decode_reprise_lot(bytes: &[u8]) -> Vec<(u32, Result<RepriseLine, Vec<Violation>>)> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            (n, decode_reprise_line(line))
        })
        .collect()
}

impl TransitionBody {
    /// The operation this body is for.
    pub fn operation(&self) -> Operation {
        match self {
            TransitionBody::Entree(_) => Operation::Enter,
            TransitionBody::Sortie(_) => Operation::Exit,
            TransitionBody::Solde(_) => Operation::Settle,
            TransitionBody::Annulation(_) => Operation::Cancel,
        }
    }

    /// The last path segment of the call: `POST /dossiers/{numero_agora}/{path}`.
    pub fn path(&self) -> &'static str {
        match self {
            TransitionBody::Entree(_) => "entree",
            TransitionBody::Sortie(_) => "sortie",
            TransitionBody::Solde(_) => "solde",
            TransitionBody::Annulation(_) => "annulation",
        }
    }
}

/// An HTTP answer as AGORA writes it: what the simulator sends, what [`decode_answer`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAnswer {
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<String>,
    /// Empty when the answer has no body.
    pub body: Vec<u8>,
}

impl WireAnswer {
    fn json<T: Serialize>(status: u16, body: &T) -> Self {
        WireAnswer {
            status,
            retry_after: None,
            // These types always serialise; an empty body would be read as Unexpected anyway.
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    fn empty(status: u16) -> Self {
        WireAnswer {
            status,
            retry_after: None,
            body: Vec::new(),
        }
    }
}

/// The HTTP answer that means `outcome`. `None` for a transport failure, which has no answer. The
/// simulator picks outcomes that fit the call (`Found` answers a search, `Created` a creation…);
/// `Unexpected` is written as its status with no body. A `retry_after` is rounded up to seconds.
pub fn encode_answer(outcome: &Outcome) -> Option<WireAnswer> {
    Some(match outcome {
        Outcome::Found { numero_agora, etat } => WireAnswer::json(
            200,
            &SearchAnswer {
                numero_agora: numero_agora.clone(),
                etat: *etat,
            },
        ),
        Outcome::NotFound => WireAnswer::empty(404),
        Outcome::Created { numero_agora } => WireAnswer::json(
            201,
            &NumberAnswer {
                numero_agora: numero_agora.clone(),
            },
        ),
        Outcome::AlreadyExists { numero_agora } => WireAnswer::json(
            409,
            &NumberAnswer {
                numero_agora: numero_agora.clone(),
            },
        ),
        Outcome::Accepted => WireAnswer::empty(200),
        Outcome::Rejected { anomalies } => WireAnswer::json(
            422,
            &AnomaliesAnswer {
                anomalies: anomalies.clone(),
            },
        ),
        Outcome::StateConflict => WireAnswer::json(
            409,
            &CodeAnswer {
                code: AG_ETAT.to_string(),
            },
        ),
        Outcome::Transient {
            retry_after,
            reason,
        } => {
            let status = match reason {
                TransientReason::RateLimited => 429,
                TransientReason::RequestTimeout => 408,
                TransientReason::ServerError(s) => *s,
                TransientReason::Transport(_) => return None,
            };
            WireAnswer {
                retry_after: retry_after.map(|d| {
                    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                    secs.to_string()
                }),
                ..WireAnswer::empty(status)
            }
        }
        Outcome::Unexpected { status, .. } => WireAnswer::empty(*status),
    })
}

/// `202 {"lot"}`.
pub fn encode_lot_accepted(lot: &str) -> WireAnswer {
    WireAnswer::json(
        202,
        &LotAnswer {
            lot: lot.to_string(),
        },
    )
}

/// `200` and the report.
pub fn encode_reprise_report(report: &RepriseReport) -> WireAnswer {
    WireAnswer::json(200, report)
}
