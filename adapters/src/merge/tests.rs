use super::*;
use crate::canonical::*;
use chrono::NaiveDate;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn base(system: System, id: &str, state: State) -> Dossier {
    Dossier {
        sources: vec![SourceRef {
            system,
            id: id.into(),
            version: None,
            updated_on: None,
        }],
        state,
        dispositif: None,
        category: None,
        programme: None,
        consultation: None,
        trainee: Trainee {
            nir: Nir::new("1850775123456"),
            birth_name: None,
            usage_name: None,
            first_names: None,
            sex: None,
            birth_date: None,
            pole_emploi_id: None,
            postal_code: None,
            commune_insee: None,
        },
        training: Training {
            numero_formation: None,
            numero_action: None,
            numero_session: "1330305".into(),
            title: None,
            formacode: None,
            certification: None,
        },
        provider: None,
        session: None,
        entry: None,
        exit: None,
        fundings: vec![],
        cancellation: None,
        refusal: None,
        orientation: None,
        registration: None,
    }
}

fn atexo(state: State) -> Dossier {
    let mut d = base(System::AtexoSem, "PDL-2019-000123", state);
    d.trainee.nir = Nir::new("185077512345608");
    d.trainee.birth_name = Some(Personal::new("DUPONT".into()));
    d.training.title = Some("Visa métiers".into());
    d.session = Some(Session {
        start: date(2019, 9, 2),
        end: date(2019, 12, 20),
        hours_centre: Some(420),
        hours_company: Some(140),
    });
    d.fundings = vec![Funding {
        funder: 2,
        committed_cents: Some(452_000),
        realised_cents: None,
        settled_cents: None,
    }];
    d
}

fn pole_emploi_entered() -> Dossier {
    let mut d = base(System::PoleEmploi, "INS-1", State::Entered);
    d.entry = Some(Entry {
        date: date(2019, 9, 3),
    });
    d.session = Some(Session {
        start: date(2019, 9, 1),
        end: date(2019, 12, 1),
        hours_centre: None,
        hours_company: None,
    });
    d.trainee.birth_name = Some(Personal::new("DUPOND".into()));
    d
}

fn ouiform(state: State) -> Dossier {
    let mut d = base(System::Ouiform, "OF-2019-000042", state);
    d.training.title = Some("Titre OUIFORM".into());
    d.fundings = vec![Funding {
        funder: 4,
        committed_cents: None,
        realised_cents: None,
        settled_cents: None,
    }];
    d
}

#[test]
fn three_sources_make_one_dossier_with_each_group_from_its_owner() {
    let records = [
        ouiform(State::Registered),
        atexo(State::Validated),
        pole_emploi_entered(),
    ];
    let m = merge(&records, &Precedence::default()).expect("merges");
    let d = m.dossier;
    assert_eq!(d.state, State::Entered, "the most advanced state wins");
    assert_eq!(
        d.entry.as_ref().map(|e| e.date),
        Some(date(2019, 9, 3)),
        "PE owns the AES entry when ATEXO SEM has none"
    );
    assert_eq!(
        d.session.as_ref().map(|s| s.start),
        Some(date(2019, 9, 2)),
        "ATEXO SEM owns the session"
    );
    assert_eq!(d.fundings[0].funder, 2, "ATEXO SEM owns funding");
    assert_eq!(d.fundings.len(), 1, "fundings are not mixed across sources");
    assert_eq!(
        d.trainee.nir.expose(),
        "185077512345608",
        "the NIR with its key is kept"
    );
    assert_eq!(
        d.trainee.birth_name.as_ref().map(|n| n.expose().as_str()),
        Some("DUPONT")
    );
    assert_eq!(d.training.title.as_deref(), Some("Visa métiers"));
    assert_eq!(d.sources.len(), 3);
    assert!(m.conflicts.is_empty());
}

#[test]
fn the_result_does_not_depend_on_arrival_order() {
    let records = vec![
        ouiform(State::Registered),
        atexo(State::Validated),
        pole_emploi_entered(),
    ];
    let expected = merge(&records, &Precedence::default()).expect("merges");
    for perm in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
        let shuffled: Vec<Dossier> = perm.iter().map(|&i| records[i].clone()).collect();
        assert_eq!(
            merge(&shuffled, &Precedence::default()).expect("merges"),
            expected
        );
    }
}

#[test]
fn atexo_sem_entry_wins_when_it_has_one_and_precedence_is_configurable() {
    let mut a = atexo(State::Entered);
    a.entry = Some(Entry {
        date: date(2019, 9, 2),
    });
    let records = [a, pole_emploi_entered()];
    let d = merge(&records, &Precedence::default())
        .expect("merges")
        .dossier;
    assert_eq!(d.entry.map(|e| e.date), Some(date(2019, 9, 2)));

    let precedence = Precedence {
        entry: vec![System::PoleEmploi, System::AtexoSem],
        ..Precedence::default()
    };
    let d = merge(&records, &precedence).expect("merges").dossier;
    assert_eq!(d.entry.map(|e| e.date), Some(date(2019, 9, 3)));
}

#[test]
fn contradictory_states_are_settled_by_precedence_and_reported() {
    let records = [ouiform(State::Cancelled), atexo(State::Entered)];
    let m = merge(&records, &Precedence::default()).expect("merges");
    assert_eq!(m.dossier.state, State::Entered);
    assert_eq!(
        m.conflicts,
        vec![Conflict {
            group: FieldGroup::State,
            kept: System::AtexoSem,
            kept_state: State::Entered,
            ignored: System::Ouiform,
            ignored_state: State::Cancelled,
        }]
    );
    // A cancellation of the orientation before anything was funded is simply news.
    let records = [ouiform(State::Cancelled), atexo(State::Registered)];
    assert_eq!(
        merge(&records, &Precedence::default())
            .expect("merges")
            .dossier
            .state,
        State::Cancelled
    );
}

#[test]
fn records_of_other_dossiers_or_twice_the_same_source_are_refused() {
    let mut other = ouiform(State::Registered);
    other.training.numero_session = "999".into();
    assert_eq!(
        merge(&[atexo(State::Validated), other], &Precedence::default()),
        Err(MergeError::KeyMismatch { index: 1 })
    );
    assert!(matches!(
        merge(
            &[atexo(State::Validated), atexo(State::Entered)],
            &Precedence::default()
        ),
        Err(MergeError::DuplicateSource { index: 1, .. })
    ));
    assert_eq!(merge(&[], &Precedence::default()), Err(MergeError::Empty));
}

#[test]
fn transitions_between_merged_states() {
    assert_eq!(
        check_transition(State::Registered, State::Exited),
        Ok(Advance::Forward)
    );
    assert_eq!(
        check_transition(State::Exited, State::Entered),
        Ok(Advance::Behind)
    );
    let v = check_transition(State::Settled, State::Cancelled).expect_err("terminal");
    assert_eq!(v.rule, Rule::LifecycleTransition);
    assert_eq!(v.pointer, "/state");
}

#[test]
fn precedence_rejects_agora_and_duplicates() {
    assert!(Precedence::default().validate().is_ok());
    let p = Precedence {
        entry: vec![System::Agora],
        ..Precedence::default()
    };
    assert!(p.validate().is_err());
    let p = Precedence {
        exit: vec![System::AtexoSem, System::AtexoSem],
        ..Precedence::default()
    };
    assert!(p.validate().is_err());
}

/// The default precedence, now derived from each source's rank, is the list it always was.
#[test]
fn default_precedence_is_derived_from_the_sources_ranks_unchanged() {
    use System::*;
    // The walkthrough's example system (tests only) ranks last everywhere: the real sources'
    // order is what comes before it.
    let mut p = Precedence::default();
    for group in crate::merge::FieldGroup::ALL {
        let list = match group {
            crate::merge::FieldGroup::Trainee => &mut p.trainee,
            crate::merge::FieldGroup::Offer => &mut p.offer,
            crate::merge::FieldGroup::Session => &mut p.session,
            crate::merge::FieldGroup::Funding => &mut p.funding,
            crate::merge::FieldGroup::Entry => &mut p.entry,
            crate::merge::FieldGroup::Exit => &mut p.exit,
            crate::merge::FieldGroup::Cancellation => &mut p.cancellation,
            crate::merge::FieldGroup::State => &mut p.state,
        };
        assert_eq!(list.pop(), Some(Example), "{group:?}");
    }
    let (a, o, pe) = (AtexoSem, Ouiform, PoleEmploi);
    assert_eq!(p.trainee, [a, pe, o]);
    assert_eq!(p.offer, [a, o, pe]);
    assert_eq!(p.session, [a, pe, o]);
    assert_eq!(p.funding, [a, o, pe]);
    assert_eq!(p.entry, [a, pe, o]);
    assert_eq!(p.exit, [a, pe, o]);
    assert_eq!(p.cancellation, [a, o, pe]);
    assert_eq!(p.state, [a, pe, o]);
    assert_eq!(p.validate(), Ok(()));
}
