//! Encoding, passerelle → AGORA: the request bodies of each operation (creation, transitions,
//! search, backfill lot lines), checked against AGORA's JSON Schemas before anything is sent.

#[allow(unused_imports)]
use super::*;

/// Collects what AGORA requires and the dossier lacks, with canonical pointers.
#[derive(Default)]
pub(super) struct Needs(Vec<Violation>);

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

pub(super) fn text(s: &Option<Personal<String>>) -> Option<&str> {
    s.as_ref()
        .map(|p| p.expose().as_str())
        .filter(|s| !s.trim().is_empty())
}

pub(super) fn plain(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// Builds the dossier body, or says every field AGORA requires that the dossier lacks. No schema
/// check here: [`encode_dossier`] adds it.
pub(super) fn build_dossier(dossier_id: &str, d: &Dossier) -> Result<DossierBody, Vec<Violation>> {
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
pub(super) fn net<T: Serialize>(
    schema: SchemaId,
    root: &str,
    value: &T,
) -> Result<(), Vec<Violation>> {
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
///   refusal is the provider's positioning decision: `ICN`, the orientation's `REFUSEE`); and as date the
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

pub(super) fn build_transition(
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

pub(super) fn refusal_as_cancellation(d: &Dossier) -> Option<AnnulationBody> {
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
pub(super) fn transitions_to(etat: AgoraState) -> &'static [Operation] {
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
pub(super) fn placeholder() -> DossierBody {
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

pub(super) fn dedup(mut v: Vec<Violation>) -> Vec<Violation> {
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
