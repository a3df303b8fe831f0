//! Step 2 of decoding: raw strings → canonical values (dates `JJ/MM/AAAA`, amounts with a decimal
//! comma, `O`/`N` flags, codes, required fields), then the domain rules.

#[allow(unused_imports)]
use super::*;

/// `JJ/MM/AAAA`, a real calendar date.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[2] != b'/' || b[5] != b'/' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (d, m, y) = (num(0..2)?, num(3..5)?, num(6..10)?);
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
}

/// Euros with a decimal comma (`1234,56`, `4520,00`, `12`, `0,5`) to integer cents, without floats.
pub fn parse_cents(s: &str) -> Result<i64, &'static str> {
    const GARBAGE: &str = "must be euros with a decimal comma, such as 1234,56";
    if s.starts_with('-') {
        return Err("must not be negative");
    }
    let (int, frac) = match s.split_once(',') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !digits(int) {
        return Err(GARBAGE);
    }
    let cents_part = match frac {
        None => 0,
        Some(f) if !digits(f) => return Err(GARBAGE),
        Some(f) if f.len() > 2 => return Err("has more than two decimals"),
        Some(f) => {
            let v: i64 = f.parse().map_err(|_| GARBAGE)?;
            if f.len() == 1 {
                v * 10
            } else {
                v
            }
        }
    };
    // 15 digits of euros is far beyond any funding and far below i64's range in cents.
    if int.len() > 15 {
        return Err("is out of range");
    }
    let euros: i64 = int.parse().map_err(|_| GARBAGE)?;
    euros
        .checked_mul(100)
        .and_then(|c| c.checked_add(cents_part))
        .ok_or("is out of range")
}

/// A whole number without sign, within `T`'s range.
pub(super) fn parse_whole<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `O`/`N` to a flag.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s {
        "O" => Some(true),
        "N" => Some(false),
        _ => None,
    }
}

/// ATEXO's `etat` to the canonical state.
pub fn state_from_etat(s: &str) -> Option<State> {
    Some(match s {
        "INSCRIT" => State::Registered,
        "VALIDE" => State::Validated,
        "ENTRE" => State::Entered,
        "SORTI" => State::Exited,
        "SERVICE_FAIT" => State::ServiceDone,
        "SOLDE" => State::Settled,
        "REFUSE" => State::Refused,
        "ANNULE" => State::Cancelled,
        _ => return None,
    })
}

/// The canonical state as ATEXO writes it; `None` for `prescribed`, which ATEXO has no word for
/// (an orientation alone lives on the orientation platform).
pub fn etat_of(state: State) -> Option<&'static str> {
    Some(match state {
        State::Prescribed => return None,
        State::Registered => "INSCRIT",
        State::Validated => "VALIDE",
        State::Entered => "ENTRE",
        State::Exited => "SORTI",
        State::ServiceDone => "SERVICE_FAIT",
        State::Settled => "SOLDE",
        State::Refused => "REFUSE",
        State::Cancelled => "ANNULE",
    })
}

pub(super) const DATE_DETAIL: &str = "must be a real date written JJ/MM/AAAA";
pub(super) const REQUIRED: &str = "is required";

/// Turns raw values into canonical ones, reporting each one that does not parse.
pub(super) struct Values<'s> {
    sc: &'s mut Scratch,
}

impl Values<'_> {
    fn required(&mut self, v: Option<String>, rel: &str) -> Option<String> {
        if v.is_none() {
            self.sc.issue_in_dossier(rel, Rule::FieldRequired, REQUIRED);
        }
        v
    }
    fn date(&mut self, v: Option<&str>, rel: &str) -> Option<NaiveDate> {
        let d = parse_date(v?);
        if d.is_none() {
            self.sc.issue_in_dossier(rel, Rule::DateFormat, DATE_DETAIL);
        }
        d
    }
    fn required_date(&mut self, v: Option<&str>, rel: &str) -> Option<NaiveDate> {
        if v.is_none() {
            self.sc.issue_in_dossier(rel, Rule::FieldRequired, REQUIRED);
        }
        self.date(v, rel)
    }
    fn whole<T: std::str::FromStr>(&mut self, v: Option<&str>, rel: &str) -> Option<T> {
        let n = parse_whole(v?);
        if n.is_none() {
            self.sc
                .issue_in_dossier(rel, Rule::NumberFormat, "must be a whole number in range");
        }
        n
    }
    fn cents(&mut self, v: Option<&str>, rel: impl FnOnce() -> String) -> Option<i64> {
        match parse_cents(v?) {
            Ok(c) => Some(c),
            Err(detail) => {
                self.sc.issue_in_dossier(&rel(), Rule::AmountFormat, detail);
                None
            }
        }
    }
    fn code<T>(
        &mut self,
        v: Option<&str>,
        rel: &str,
        parse: fn(&str) -> Option<T>,
        allowed: &str,
    ) -> Option<T> {
        let c = parse(v?);
        if c.is_none() {
            self.sc
                .issue_in_dossier(rel, Rule::EnumValue, format!("must be one of {allowed}"));
        }
        c
    }
}

/// The canonical dossier of a raw one, with the values that did not parse left out (or, for the
/// few fields the canonical model cannot leave out, a placeholder: the dossier is invalid then, and
/// never leaves this module).
pub(super) fn to_canonical(raw: &mut RawDossier, sc: &mut Scratch) -> (Dossier, bool) {
    let mut v = Values { sc };
    let id = v.required(raw.id.take(), "@id").unwrap_or_default();
    let version = match raw.version.as_deref() {
        None => {
            v.sc.issue_in_dossier("@version", Rule::FieldRequired, REQUIRED);
            None
        }
        s => v.whole::<u64>(s, "@version"),
    };
    let updated_on = v.date(raw.date_maj.as_deref(), "@dateMaj");

    let state = match raw.etat.as_deref() {
        None => {
            v.sc.issue_in_dossier("etat", Rule::FieldRequired, REQUIRED);
            None
        }
        s => v.code(
            s,
            "etat",
            state_from_etat,
            "INSCRIT, VALIDE, ENTRE, SORTI, SERVICE_FAIT, SOLDE, REFUSE, ANNULE",
        ),
    };

    let dispositif = match raw.dispositif.take() {
        None => {
            v.sc.issue_in_dossier("dispositif", Rule::FieldRequired, REQUIRED);
            None
        }
        Some(d) => {
            let agora = v.code(d.agora.as_deref(), "dispositif/@agora", parse_flag, "O, N");
            if agora.is_none() && d.agora.is_some() {
                // The enum check above already reported it (unless over the cap, or refused
                // while reading); the rule of flags is boolean.format.
                if let Some(last) = v.sc.issues.last_mut().filter(|l| {
                    l.rule == Rule::EnumValue && l.pointer.ends_with("/dispositif/@agora")
                }) {
                    last.rule = Rule::BooleanFormat;
                    last.detail = "must be O or N".into();
                }
            }
            let code = v.required(d.code, "dispositif/@code");
            code.map(|code| Dispositif {
                code,
                label: d.libelle,
                agora,
            })
        }
    };

    let consultation = raw.consultation.take().and_then(|c| {
        let number = v.required(c.numero, "consultation/@numero")?;
        Some(Consultation { number, lot: c.lot })
    });

    let stagiaire = match raw.stagiaire.take() {
        Some(s) => s,
        None => {
            v.sc.issue_in_dossier("stagiaire", Rule::FieldRequired, REQUIRED);
            RawStagiaire::default()
        }
    };
    let trainee_present =
        v.sc.issues
            .iter()
            .all(|i| !i.pointer.ends_with("/stagiaire"));
    // With no <stagiaire> at all, one violation says so rather than one per field.
    let (nir, birth_name, first_names) = if trainee_present {
        (
            v.required(stagiaire.nir, "stagiaire/nir"),
            v.required(stagiaire.nom_naissance, "stagiaire/nomNaissance"),
            v.required(stagiaire.prenoms, "stagiaire/prenoms"),
        )
    } else {
        (None, None, None)
    };
    let nir = nir.unwrap_or_default();
    let sex = match stagiaire.sexe.as_deref() {
        None if trainee_present => {
            v.sc.issue_in_dossier("stagiaire/sexe", Rule::FieldRequired, REQUIRED);
            None
        }
        s => v.code(s, "stagiaire/sexe", Sex::from_code, "1, 2"),
    };
    let birth_date = if trainee_present {
        v.required_date(
            stagiaire.date_naissance.as_deref(),
            "stagiaire/dateNaissance",
        )
    } else {
        None
    };
    let pole_emploi_id = stagiaire.identifiant_pe.and_then(|p| {
        let id = PoleEmploiId {
            national: p.national,
            regional: p.regional,
            geo_code: p.code_geo,
        };
        (id != PoleEmploiId::default()).then_some(id)
    });
    let (postal_code, commune_insee) = stagiaire
        .adresse
        .map(|a| (a.code_postal, a.commune_insee))
        .unwrap_or_default();
    let trainee = Trainee {
        nir: Nir::new(nir),
        birth_name: birth_name.map(Personal::new),
        usage_name: stagiaire.nom_usage.map(Personal::new),
        first_names: first_names.map(Personal::new),
        sex,
        birth_date: birth_date.map(Personal::new),
        pole_emploi_id,
        postal_code,
        commune_insee,
    };

    let action = match raw.action.take() {
        Some(a) => a,
        None => {
            v.sc.issue_in_dossier("action", Rule::FieldRequired, REQUIRED);
            RawAction::default()
        }
    };
    let numero_session = if raw_action_missing(v.sc) {
        action.numero_session
    } else {
        v.required(action.numero_session, "action/@numeroSession")
    };
    let formacode = match (action.formacode, action.formacode_version) {
        (Some(code), Some(version)) => Some(Formacode { code, version }),
        (Some(code), None) => {
            v.sc.issue_in_dossier(
                "action/@formacodeVersion",
                Rule::FormacodeVersion,
                "a Formacode needs its version (such as V12)",
            );
            Some(Formacode {
                code,
                version: String::new(),
            })
        }
        (None, Some(_)) => {
            v.sc.issue_in_dossier(
                "action/@formacode",
                Rule::FieldRequired,
                "is required with formacodeVersion",
            );
            None
        }
        (None, None) => None,
    };
    let training = Training {
        numero_formation: action.numero_formation,
        numero_action: action.numero_action,
        numero_session: numero_session.unwrap_or_default(),
        title: action.intitule,
        formacode,
        certification: action.certification,
    };

    let provider = raw.organisme.take().and_then(|o| {
        let p = Provider {
            siret: o.siret,
            nda: o.nda,
            name: o.raison_sociale,
        };
        (p != Provider::default()).then_some(p)
    });

    let session = raw.session.take().and_then(|s| {
        let start = v.required_date(s.date_debut.as_deref(), "session/@dateDebut");
        let end = v.required_date(s.date_fin.as_deref(), "session/@dateFin");
        let hours_centre = v.whole(s.heures_centre.as_deref(), "session/@heuresCentre");
        let hours_company = v.whole(s.heures_entreprise.as_deref(), "session/@heuresEntreprise");
        Some(Session {
            start: start?,
            end: end?,
            hours_centre,
            hours_company,
        })
    });

    let entry = raw.entree.take().and_then(|e| {
        Some(Entry {
            date: v.required_date(e.date.as_deref(), "entree/@date")?,
        })
    });

    let exit = raw.sortie.take().and_then(|x| {
        let date = v.required_date(x.date.as_deref(), "sortie/@date");
        let reason = match x.motif.as_deref() {
            None => {
                v.sc.issue_in_dossier("sortie/@motif", Rule::FieldRequired, REQUIRED);
                None
            }
            s => v.code(
                s,
                "sortie/@motif",
                ExitReason::from_external,
                "FIN, EMPLOI, AUTRE_FORMATION, ABANDON, EXCLUSION, MALADIE, FORCE_MAJEURE, DECES, AUTRE",
            ),
        };
        let result = v.code(
            x.resultat.as_deref(),
            "sortie/@resultat",
            CertificationResult::from_external,
            "OBTENUE, PARTIELLE, NON_OBTENUE, NON_PRESENTE, INCONNU",
        );
        let hours_done = v.whole(x.heures_realisees.as_deref(), "sortie/@heuresRealisees");
        Some(Exit {
            date: date?,
            reason: reason?,
            result,
            hours_done,
        })
    });

    let mut fundings = Vec::with_capacity(raw.financements.len());
    for (i, f) in raw.financements.drain(..).enumerate() {
        let n = i + 1;
        let funder = match f.financeur.as_deref() {
            None => {
                v.sc.issue_in_dossier(
                    &format!("financement[{n}]/@financeur"),
                    Rule::FieldRequired,
                    REQUIRED,
                );
                None
            }
            s => v.whole::<u8>(s, &format!("financement[{n}]/@financeur")),
        };
        let committed_cents = v.cents(f.montant_engage.as_deref(), || {
            format!("financement[{n}]/@montantEngage")
        });
        let realised_cents = v.cents(f.montant_realise.as_deref(), || {
            format!("financement[{n}]/@montantRealise")
        });
        let settled_cents = v.cents(f.montant_solde.as_deref(), || {
            format!("financement[{n}]/@montantSolde")
        });
        // Keep the funding even when its code is bad, so later indexes still match the XML's.
        // Code 1 does not exist in dict-financeurs; the rules' echo of it is dropped (see finish).
        fundings.push(Funding {
            funder: funder.unwrap_or(1),
            committed_cents,
            realised_cents,
            settled_cents,
        });
    }

    let cancellation = raw.annulation.take().and_then(|a| {
        let date = v.required_date(a.date.as_deref(), "annulation/@date");
        let initiator = match a.initiateur.as_deref() {
            None => {
                v.sc.issue_in_dossier("annulation/@initiateur", Rule::FieldRequired, REQUIRED);
                None
            }
            s => v.code(
                s,
                "annulation/@initiateur",
                Initiator::from_external,
                "STAGIAIRE, ORGANISME, FINANCEUR, PRESCRIPTEUR",
            ),
        };
        Some(crate::canonical::Cancellation {
            date: date?,
            initiator: initiator?,
            reason: a.motif,
        })
    });

    let dossier = Dossier {
        sources: vec![SourceRef {
            system: System::AtexoSem,
            id,
            version,
            updated_on,
        }],
        state: state.unwrap_or(State::Registered),
        dispositif,
        category: raw.categorie.take(),
        programme: raw.programme.take(),
        consultation,
        trainee,
        training,
        provider,
        session,
        entry,
        exit,
        fundings,
        cancellation,
        refusal: None,
        orientation: None,
        registration: None,
    };
    (dossier, state.is_some())
}

pub(super) fn raw_action_missing(sc: &Scratch) -> bool {
    sc.issues
        .iter()
        .any(|i| i.pointer.ends_with("/action") && i.rule == Rule::FieldRequired)
}

/// Whether one path is the other or an ancestor of it: the same fault seen twice.
pub(super) fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| {
        x.strip_prefix(y)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Steps 2 and 3 on the dossier just read: canonical values, then the domain rules.
pub(super) fn finish(
    index: usize,
    raw: &mut RawDossier,
    sc: &mut Scratch,
    flow: Flow,
    settings: &DecodeSettings,
) -> Result<SemDossier, DossierError> {
    sc.path.truncate(sc.dossier_len);
    let (dossier, state_known) = to_canonical(raw, sc);
    let decoded = sc.issues.len();
    sc.path.push('/');
    let rules = crate::violation::rules_in_source_terms(
        &dossier,
        &mapping::TABLE,
        &sc.path,
        &settings.rules,
    );
    sc.path.pop();
    for r in rules {
        // A value already refused while decoding is not reported again through its placeholder,
        // and blocks required by an unknown state are not judged.
        let echo = sc.issues[..decoded]
            .iter()
            .any(|d| related(&d.pointer, &r.pointer));
        if echo || (!state_known && r.rule == Rule::StatusRequired) {
            continue;
        }
        sc.push(r);
    }
    let source = dossier.sources.first();
    let id = source.map(|s| s.id.clone()).filter(|s| !s.is_empty());
    if !sc.issues.is_empty() {
        let unit = sc.path[..sc.dossier_len].to_string();
        let (violations, unlisted) = sc.take(&unit, "in this dossier");
        return Err(DossierError {
            index,
            id,
            violations,
            unlisted,
            fatal: false,
        });
    }
    let version = source.and_then(|s| s.version).unwrap_or_default();
    let perimeter = classify(&dossier, flow, &settings.perimeter);
    Ok(SemDossier {
        index,
        id: id.unwrap_or_default(),
        version,
        dossier,
        perimeter,
    })
}
