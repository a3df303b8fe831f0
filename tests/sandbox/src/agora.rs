//! The AGORA v2 simulator (contract §3), strict: bodies decoded with the AGORA adapter's own
//! decoders (so its JSON Schemas decide what is a `422`), answers written with its encoders (so
//! the simulator writes exactly what passerelle decodes), and AGORA's invariant enforced: at most
//! one dossier per (financeur, NIR-13, numero_session), and per (financeur, reference).

use crate::faults::Call;
use crate::server::{bearer, media_type, serve, Reply, Shared, Tags};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use passerelle_adapters::agora::{
    self, encode_answer, encode_lot_accepted, encode_reprise_report, Anomaly, DossierBody, Outcome,
    ReportLine, ReportState, RepriseLine, RepriseReport, TransitionBody, MAX_LOT_LINES, NDJSON,
};
use passerelle_adapters::canonical::Personal;
use passerelle_adapters::planner::{AgoraState, Operation};
use passerelle_adapters::Violation;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// One change of state of an AGORA dossier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateChange {
    pub etat: AgoraState,
    pub at: DateTime<Utc>,
    /// The call that made it: a creation, a transition, or a backfill lot.
    pub via: Call,
    /// The lot, when `via` is a lot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
}

/// A dossier as AGORA holds it (inspection). `Debug` masks the NIR and the names.
#[derive(Debug, Clone)]
pub struct AgoraDossier {
    pub numero_agora: String,
    pub reference: String,
    /// The main funder's code.
    pub financeur: String,
    pub nir13: Personal<String>,
    pub numero_session: String,
    pub etat: AgoraState,
    /// Every state it went through, `CREE` first.
    pub history: Vec<StateChange>,
    /// Transitions refused with `409 AG-ETAT` on this dossier.
    pub state_conflicts: u32,
    /// The body it was created with.
    pub body: DossierBody,
}

/// A business rule AGORA applies (rehearsals and tests: AGORA's own rules are not published): a
/// dossier body whose field `champ` (a JSON pointer into the body, such as
/// `/formation/certification`) equals `valeur` is refused, `422` with one anomaly `code` on
/// `champ`, whether it comes by `POST /dossiers` or as a backfill line. Lifting the rule stands
/// for the correction made on AGORA's side (e.g. the certification added to its repository).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub champ: String,
    pub valeur: serde_json::Value,
    /// AGORA's anomaly code, e.g. `AG-CERTIF`.
    pub code: String,
    #[serde(default = "Refusal::default_libelle")]
    pub libelle: String,
}

impl Refusal {
    fn default_libelle() -> String {
        "refusé par une règle de gestion AGORA".to_string()
    }

    /// The anomaly this rule gives `body`, if it applies.
    fn check(&self, body: &serde_json::Value) -> Option<Anomaly> {
        (body.pointer(&self.champ) == Some(&self.valeur)).then(|| Anomaly {
            code: self.code.clone(),
            champ: Some(self.champ.clone()),
            libelle: Some(self.libelle.clone()),
        })
    }
}

/// AGORA's identity of a trainee on a session for a funder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub financeur: String,
    pub nir13: String,
    pub numero_session: String,
}

/// The creation counters of one (financeur, NIR-13, numero_session) (inspection).
#[derive(Debug, Clone)]
pub struct Creations {
    pub financeur: String,
    pub nir13: Personal<String>,
    pub numero_session: String,
    /// Valid `POST /dossiers` received for this identity.
    pub create_calls: u32,
    /// Dossiers created for it, by a call or a lot (AGORA's invariant keeps it at most 1).
    pub created: u32,
    /// `POST /dossiers` answered `409 {"numero_agora"}` (it already existed).
    pub duplicates_refused: u32,
    /// Backfill lines that found it already there.
    pub lot_lines_existing: u32,
}

#[derive(Debug, Default, Clone)]
struct Counters {
    create_calls: u32,
    created: u32,
    duplicates_refused: u32,
    lot_lines_existing: u32,
}

#[derive(Debug)]
struct Lot {
    submitted: Instant,
    polls: u32,
    report: RepriseReport,
}

/// AGORA's data.
#[derive(Debug, Default)]
pub(crate) struct AgoraStore {
    dossiers: Vec<AgoraDossier>,
    by_number: HashMap<String, usize>,
    by_reference: HashMap<(String, String), usize>,
    by_identity: HashMap<Identity, usize>,
    counters: HashMap<Identity, Counters>,
    lots: HashMap<String, Lot>,
    lots_made: u64,
    refusals: Vec<Refusal>,
    /// The (financeur, reference) pairs a search asked for: a creation no search preceded is
    /// refused (contract §3: "always before a creation").
    searched: HashSet<(String, String)>,
}

fn identity(b: &DossierBody) -> Identity {
    Identity {
        financeur: b.financeur.code.clone(),
        nir13: b.stagiaire.nir13.expose().clone(),
        numero_session: b.formation.numero_session.clone(),
    }
}

/// The states after `from` up to `to` (`to` included), when AGORA can get there; `None` when it
/// cannot (backwards, or a cancellation after entry).
fn path(from: AgoraState, to: AgoraState) -> Option<Vec<AgoraState>> {
    use AgoraState::*;
    const LINE: [AgoraState; 4] = [Cree, Entre, Sorti, Solde];
    if from == to {
        return Some(Vec::new());
    }
    if to == Annule {
        return (from == Cree).then(|| vec![Annule]);
    }
    let a = LINE.iter().position(|s| *s == from)?;
    let b = LINE.iter().position(|s| *s == to)?;
    (b > a).then(|| LINE[a + 1..=b].to_vec())
}

/// The state a transition needs and the one it leads to.
fn transition_states(op: Operation) -> Option<(AgoraState, AgoraState)> {
    use AgoraState::*;
    match op {
        Operation::Enter => Some((Cree, Entre)),
        Operation::Exit => Some((Entre, Sorti)),
        Operation::Settle => Some((Sorti, Solde)),
        Operation::Cancel => Some((Cree, Annule)),
        Operation::Search | Operation::Create => None,
    }
}

enum Created {
    New(String),
    Existing(usize),
}

impl AgoraStore {
    pub fn dossiers(&self) -> Vec<AgoraDossier> {
        self.dossiers.clone()
    }

    pub fn refusals(&self) -> Vec<Refusal> {
        self.refusals.clone()
    }

    pub fn refuse(&mut self, r: Refusal) {
        self.refusals.push(r);
    }

    pub fn clear_refusals(&mut self) {
        self.refusals.clear();
    }

    /// The first business rule that refuses this body.
    fn refused(&self, body: &DossierBody) -> Option<Anomaly> {
        if self.refusals.is_empty() {
            return None;
        }
        let value = serde_json::to_value(body).ok()?;
        self.refusals.iter().find_map(|r| r.check(&value))
    }

    pub fn creations(&self) -> Vec<Creations> {
        let mut out: Vec<Creations> = self
            .counters
            .iter()
            .map(|(id, c)| Creations {
                financeur: id.financeur.clone(),
                nir13: Personal::new(id.nir13.clone()),
                numero_session: id.numero_session.clone(),
                create_calls: c.create_calls,
                created: c.created,
                duplicates_refused: c.duplicates_refused,
                lot_lines_existing: c.lot_lines_existing,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.financeur, &a.numero_session, a.nir13.expose()).cmp(&(
                &b.financeur,
                &b.numero_session,
                b.nir13.expose(),
            ))
        });
        out
    }

    fn find(&self, financeur: &str, reference: &str) -> Option<&AgoraDossier> {
        self.by_reference
            .get(&(financeur.to_string(), reference.to_string()))
            .and_then(|&i| self.dossiers.get(i))
    }

    /// The existing dossier this body is, by reference or by identity.
    fn existing(&self, body: &DossierBody) -> Option<usize> {
        self.by_reference
            .get(&(body.financeur.code.clone(), body.reference.clone()))
            .or_else(|| self.by_identity.get(&identity(body)))
            .copied()
    }

    fn create(&mut self, body: DossierBody, via: Call, lot: Option<&str>) -> Created {
        if let Some(i) = self.existing(&body) {
            return Created::Existing(i);
        }
        let numero = format!("AG{:010}", self.dossiers.len() + 1);
        let id = identity(&body);
        let i = self.dossiers.len();
        self.by_number.insert(numero.clone(), i);
        self.by_reference
            .insert((body.financeur.code.clone(), body.reference.clone()), i);
        self.by_identity.insert(id.clone(), i);
        self.counters.entry(id.clone()).or_default().created += 1;
        self.dossiers.push(AgoraDossier {
            numero_agora: numero.clone(),
            reference: body.reference.clone(),
            financeur: id.financeur,
            nir13: Personal::new(id.nir13),
            numero_session: id.numero_session,
            etat: AgoraState::Cree,
            history: vec![StateChange {
                etat: AgoraState::Cree,
                at: Utc::now(),
                via,
                lot: lot.map(str::to_string),
            }],
            state_conflicts: 0,
            body,
        });
        Created::New(numero)
    }

    fn advance(&mut self, i: usize, to: AgoraState, via: Call, lot: Option<&str>) {
        if let Some(d) = self.dossiers.get_mut(i) {
            d.etat = to;
            d.history.push(StateChange {
                etat: to,
                at: Utc::now(),
                via,
                lot: lot.map(str::to_string),
            });
        }
    }

    /// One backfill line: created directly in its state, or, when it already exists, brought
    /// forward to it (accepted with the existing number) or refused when AGORA cannot get there.
    fn apply_line(&mut self, ligne: u32, line: RepriseLine, lot: &str) -> ReportLine {
        let reference = line.dossier.reference.clone();
        if let Some(a) = self.refused(&line.dossier) {
            return ReportLine {
                ligne,
                reference,
                numero_agora: None,
                anomalies: vec![a],
            };
        }
        let id = identity(&line.dossier);
        let (i, from) = match self.create(line.dossier, Call::AgoraLotSubmit, Some(lot)) {
            Created::New(numero) => match self.by_number.get(&numero) {
                Some(&i) => (i, AgoraState::Cree),
                None => return rejected(ligne, reference, "AG-INTERNE", None, "dossier perdu"),
            },
            Created::Existing(i) => {
                self.counters.entry(id).or_default().lot_lines_existing += 1;
                match self.dossiers.get(i) {
                    Some(d) => (i, d.etat),
                    None => return rejected(ligne, reference, "AG-INTERNE", None, "dossier perdu"),
                }
            }
        };
        let Some(steps) = path(from, line.etat) else {
            return rejected(
                ligne,
                reference,
                "AG-ETAT",
                Some("etat"),
                &format!(
                    "le dossier existe déjà à l'état {}, qui ne mène pas à {}",
                    from.as_str(),
                    line.etat.as_str()
                ),
            );
        };
        for s in steps {
            self.advance(i, s, Call::AgoraLotSubmit, Some(lot));
        }
        ReportLine {
            ligne,
            reference,
            numero_agora: self.dossiers.get(i).map(|d| d.numero_agora.clone()),
            anomalies: Vec::new(),
        }
    }
}

fn rejected(
    ligne: u32,
    reference: String,
    code: &str,
    champ: Option<&str>,
    libelle: &str,
) -> ReportLine {
    ReportLine {
        ligne,
        reference,
        numero_agora: None,
        anomalies: vec![Anomaly {
            code: code.to_string(),
            champ: champ.map(str::to_string),
            libelle: Some(libelle.to_string()),
        }],
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Schema violations as AGORA's anomalies (`AG-SCHEMA`, the pointer as `champ`). Violation details
/// never quote a value.
pub(crate) fn anomalies(violations: &[Violation]) -> Vec<Anomaly> {
    violations
        .iter()
        .map(|v| Anomaly {
            code: "AG-SCHEMA".to_string(),
            champ: (!v.pointer.is_empty()).then(|| truncate(&v.pointer, 200)),
            libelle: Some(truncate(&format!("{} ({})", v.detail, v.rule.code()), 1000)),
        })
        .collect()
}

fn answer(outcome: &Outcome) -> Reply {
    encode_answer(outcome).map_or_else(|| Reply::empty(500), Reply::wire)
}

fn authorised(shared: &Shared, req: &HttpRequest) -> bool {
    shared.settings.agora_auth.admits(
        &shared.settings.agora_token,
        &shared.revoked.lock(),
        bearer(req),
    )
}

/// `GET /dossiers?financeur=&reference=`.
pub(crate) async fn search(
    req: HttpRequest,
    shared: web::Data<Shared>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let financeur = query.get("financeur").cloned().unwrap_or_default();
    let reference = query.get("reference").cloned().unwrap_or_default();
    let hint = Tags {
        reference: (!reference.is_empty()).then(|| reference.clone()),
        ..Tags::default()
    };
    serve(&shared, &req, Call::AgoraSearch, hint, |s| {
        if !authorised(s, &req) {
            return Reply::empty(401);
        }
        if financeur.is_empty() || reference.is_empty() {
            return Reply::empty(400);
        }
        let mut store = s.agora.lock();
        store
            .searched
            .insert((financeur.clone(), reference.clone()));
        match store.find(&financeur, &reference) {
            Some(d) => answer(&Outcome::Found {
                numero_agora: d.numero_agora.clone(),
                etat: d.etat,
            })
            .tagged(Tags {
                reference: Some(reference.clone()),
                numero_agora: Some(d.numero_agora.clone()),
                lot: None,
            }),
            None => answer(&Outcome::NotFound),
        }
    })
    .await
}

/// The `reference` of a JSON body, for the journal of a call that did not run.
fn reference_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("reference")?
        .as_str()
        .map(str::to_string)
}

/// Whether a reference fits the report's pattern `^[A-Za-z0-9_.-]{1,64}$`.
fn is_reference(r: &str) -> bool {
    (1..=64).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// The anomaly of a creation that no search for the same (financeur, reference) preceded.
pub const NO_SEARCH: &str = "AG-SANS-RECHERCHE";

/// `POST /dossiers`.
pub(crate) async fn create(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    let hint = Tags {
        reference: reference_of(&body),
        ..Tags::default()
    };
    serve(&shared, &req, Call::AgoraCreate, hint, |s| {
        if !authorised(s, &req) {
            return Reply::empty(401);
        }
        if media_type(&req) != "application/json" {
            return Reply::empty(415);
        }
        let dossier = match agora::decode_dossier_body(&body) {
            Ok(d) => d,
            Err(v) => {
                return answer(&Outcome::Rejected {
                    anomalies: anomalies(&v),
                })
            }
        };
        let reference = dossier.reference.clone();
        let id = identity(&dossier);
        let mut store = s.agora.lock();
        let searched = (dossier.financeur.code.clone(), reference.clone());
        if !store.searched.contains(&searched) {
            return answer(&Outcome::Rejected {
                anomalies: vec![Anomaly {
                    code: NO_SEARCH.to_string(),
                    champ: Some("/reference".to_string()),
                    libelle: Some(
                        "aucune recherche de ce dossier (financeur, reference) n'a précédé sa création"
                            .to_string(),
                    ),
                }],
            })
            .tagged(Tags {
                reference: Some(reference),
                ..Tags::default()
            });
        }
        // A business refusal creates nothing, and is not counted as a creation call.
        if let Some(a) = store.refused(&dossier) {
            return answer(&Outcome::Rejected { anomalies: vec![a] }).tagged(Tags {
                reference: Some(reference),
                ..Tags::default()
            });
        }
        store.counters.entry(id.clone()).or_default().create_calls += 1;
        let (outcome, numero) = match store.create(dossier, Call::AgoraCreate, None) {
            Created::New(n) => (
                Outcome::Created {
                    numero_agora: n.clone(),
                },
                n,
            ),
            Created::Existing(i) => {
                store.counters.entry(id).or_default().duplicates_refused += 1;
                let n = store
                    .dossiers
                    .get(i)
                    .map(|d| d.numero_agora.clone())
                    .unwrap_or_default();
                (
                    Outcome::AlreadyExists {
                        numero_agora: n.clone(),
                    },
                    n,
                )
            }
        };
        answer(&outcome).tagged(Tags {
            reference: Some(reference),
            numero_agora: Some(numero),
            lot: None,
        })
    })
    .await
}

fn operation_of(segment: &str) -> Option<Operation> {
    match segment {
        "entree" => Some(Operation::Enter),
        "sortie" => Some(Operation::Exit),
        "solde" => Some(Operation::Settle),
        "annulation" => Some(Operation::Cancel),
        _ => None,
    }
}

/// `POST /dossiers/{numero}/{entree|sortie|solde|annulation}`.
pub(crate) async fn transition(
    req: HttpRequest,
    shared: web::Data<Shared>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (numero, segment) = path.into_inner();
    let Some(op) = operation_of(&segment) else {
        return crate::not_found(req, shared).await;
    };
    let reference = {
        let store = shared.agora.lock();
        store
            .by_number
            .get(&numero)
            .and_then(|&i| store.dossiers.get(i))
            .map(|d| d.reference.clone())
    };
    let tags = Tags {
        reference,
        numero_agora: Some(numero.clone()),
        lot: None,
    };
    serve(&shared, &req, Call::of(op), tags.clone(), |s| {
        if !authorised(s, &req) {
            return Reply::empty(401);
        }
        if media_type(&req) != "application/json" {
            return Reply::empty(415);
        }
        let mut store = s.agora.lock();
        let Some(&i) = store.by_number.get(&numero) else {
            return Reply::empty(404).tagged(tags);
        };
        let _body: TransitionBody = match agora::decode_transition(op, &body) {
            Ok(b) => b,
            Err(v) => {
                return answer(&Outcome::Rejected {
                    anomalies: anomalies(&v),
                })
                .tagged(tags)
            }
        };
        let Some((from, to)) = transition_states(op) else {
            return Reply::empty(404).tagged(tags);
        };
        let current = store.dossiers.get(i).map(|d| d.etat);
        if current != Some(from) {
            if let Some(d) = store.dossiers.get_mut(i) {
                d.state_conflicts += 1;
            }
            return answer(&Outcome::StateConflict).tagged(tags);
        }
        store.advance(i, to, Call::of(op), None);
        answer(&Outcome::Accepted).tagged(tags)
    })
    .await
}

/// The number of lines of a lot as [`agora::decode_reprise_lot`] counts them.
fn count_lines(bytes: &[u8]) -> usize {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        0
    } else {
        bytes.iter().filter(|&&b| b == b'\n').count() + 1
    }
}

/// `POST /reprises`. An unreadable line is reported rejected under its `reference` when one can
/// be read from it, else under `ligne-{n}` (the report requires a reference).
pub(crate) async fn submit_lot(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    serve(&shared, &req, Call::AgoraLotSubmit, Tags::default(), |s| {
        if !authorised(s, &req) {
            return Reply::empty(401);
        }
        if media_type(&req) != NDJSON {
            return Reply::empty(415);
        }
        let lines = count_lines(&body);
        if lines > s.settings.max_lot_lines.min(MAX_LOT_LINES) {
            return Reply::empty(413);
        }
        if lines == 0 {
            return answer(&Outcome::Rejected {
                anomalies: vec![Anomaly {
                    code: "AG-LOT-VIDE".to_string(),
                    champ: None,
                    libelle: Some("le lot ne contient aucune ligne".to_string()),
                }],
            });
        }
        let raw: Vec<&[u8]> = body
            .strip_suffix(b"\n")
            .unwrap_or(&body)
            .split(|&b| b == b'\n')
            .collect();
        let decoded = agora::decode_reprise_lot(&body);
        let mut store = s.agora.lock();
        store.lots_made += 1;
        let lot = format!("LOT{:06}", store.lots_made);
        let compte_rendu: Vec<ReportLine> = decoded
            .into_iter()
            .map(|(ligne, line)| match line {
                Ok(line) => store.apply_line(ligne, line, &lot),
                Err(v) => ReportLine {
                    ligne,
                    reference: (ligne as usize)
                        .checked_sub(1)
                        .and_then(|i| raw.get(i))
                        .and_then(|l| reference_of(l))
                        .filter(|r| is_reference(r))
                        .unwrap_or_else(|| format!("ligne-{ligne}")),
                    numero_agora: None,
                    anomalies: anomalies(&v),
                },
            })
            .collect();
        let acceptees = compte_rendu
            .iter()
            .filter(|l| l.numero_agora.is_some())
            .count();
        let lignes = compte_rendu.len();
        let report = RepriseReport {
            etat: ReportState::Termine,
            lignes: u32::try_from(lignes).unwrap_or(u32::MAX),
            acceptees: u32::try_from(acceptees).unwrap_or(u32::MAX),
            rejetees: u32::try_from(lignes - acceptees).unwrap_or(u32::MAX),
            compte_rendu,
        };
        store.lots.insert(
            lot.clone(),
            Lot {
                submitted: Instant::now(),
                polls: 0,
                report,
            },
        );
        Reply::wire(encode_lot_accepted(&lot)).tagged(Tags {
            lot: Some(lot),
            ..Tags::default()
        })
    })
    .await
}

/// `GET /reprises/{lot}`: `EN_COURS` for the first polls (and the configured time), then
/// `TERMINE` with the report.
pub(crate) async fn lot_report(
    req: HttpRequest,
    shared: web::Data<Shared>,
    path: web::Path<String>,
) -> HttpResponse {
    let lot_id = path.into_inner();
    let tags = Tags {
        lot: Some(lot_id.clone()),
        ..Tags::default()
    };
    serve(&shared, &req, Call::AgoraLotReport, tags.clone(), |s| {
        if !authorised(s, &req) {
            return Reply::empty(401);
        }
        let mut store = s.agora.lock();
        let Some(lot) = store.lots.get_mut(&lot_id) else {
            return Reply::empty(404).tagged(tags);
        };
        lot.polls += 1;
        let running = lot.polls <= s.settings.lot_polls_en_cours
            || lot.submitted.elapsed() < s.settings.lot_min_duration;
        let report = if running {
            RepriseReport {
                etat: ReportState::EnCours,
                lignes: lot.report.lignes,
                acceptees: 0,
                rejetees: 0,
                compte_rendu: Vec::new(),
            }
        } else {
            lot.report.clone()
        };
        Reply::wire(encode_reprise_report(&report)).tagged(tags)
    })
    .await
}

#[cfg(test)]
mod unit {
    use super::*;
    use AgoraState::*;

    #[test]
    fn paths_follow_agora_states() {
        assert_eq!(path(Cree, Cree), Some(vec![]));
        assert_eq!(path(Cree, Solde), Some(vec![Entre, Sorti, Solde]));
        assert_eq!(path(Entre, Sorti), Some(vec![Sorti]));
        assert_eq!(path(Cree, Annule), Some(vec![Annule]));
        assert_eq!(path(Entre, Annule), None);
        assert_eq!(path(Sorti, Entre), None);
        assert_eq!(path(Annule, Entre), None);
    }

    #[test]
    fn lines_are_counted_as_the_decoder_does() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"{}\n"), 1);
        assert_eq!(count_lines(b"{}\n{}"), 2);
        assert_eq!(count_lines(b"{}\n\n"), 2);
    }
}
