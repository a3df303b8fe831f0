//! Pôle emploi adapter tests: fixtures of the three bodies (valid, and one per rule), snapshots of
//! the canonical dossiers and error lists, the secret kept out of `Debug`, and the round trip.

use super::*;
use crate::canonical::RegistrationStatus;
use crate::ouiform::tests::{
    arb_intercarif, arb_nir, assert_canonical_schema, assert_no_personal_value,
    assert_pointer_resolves, canonical_schema_has, expected_rule, fixtures, fixtures_dir,
    schema_has,
};
use proptest::prelude::*;
use serde_json::json;

fn session() -> SessionRef {
    SessionRef {
        numero_formation: "20_1262663".into(),
        numero_action: "20_1330305".into(),
        numero_session: "1330305".into(),
    }
}

fn settings() -> RuleSettings {
    RuleSettings::default()
}

/// The personal values of an answer: every NIR and Pôle emploi identifier in it.
fn personal_values(input: &Value) -> Vec<String> {
    input
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|item| {
            ["nirCertifie", "idNationalDE", "idRegionalDE"]
                .into_iter()
                .filter_map(|k| item[k].as_str().map(str::to_string))
        })
        .collect()
}

#[test]
fn valid_registrations_decode_to_schema_valid_canonical_dossiers() {
    for (name, bytes) in fixtures("pole_emploi/registrations/valid") {
        let decoded = decode_registrations(&bytes, &session(), &settings())
            .unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        let dossiers: Vec<Dossier> = decoded
            .into_iter()
            .map(|d| d.unwrap_or_else(|e| panic!("{name}: {e:#?}")))
            .collect();
        for d in &dossiers {
            assert_canonical_schema(&name, d);
        }
        insta::assert_json_snapshot!(format!("valid__{name}"), dossiers);
    }
}

#[test]
fn statuses_map_to_canonical_states() {
    let bytes = std::fs::read(fixtures_dir(
        "pole_emploi/registrations/valid/every-status.json",
    ))
    .expect("fixture");
    let states: Vec<(State, RegistrationStatus, bool)> =
        decode_registrations(&bytes, &session(), &settings())
            .expect("a list")
            .into_iter()
            .map(|d| {
                let d = d.expect("valid");
                let r = d.registration.expect("registration");
                (d.state, r.status, r.aes_received)
            })
            .collect();
    assert_eq!(
        states,
        vec![
            (State::Registered, RegistrationStatus::Retained, false),
            (State::Entered, RegistrationStatus::Retained, true),
            (State::Refused, RegistrationStatus::Absent, false),
            (State::Refused, RegistrationStatus::NotRetained, false),
            (
                State::Prescribed,
                RegistrationStatus::AwaitingDecision,
                false
            ),
        ]
    );
}

#[test]
fn modules_give_the_session_and_aes_gives_the_entry() {
    let bytes = std::fs::read(fixtures_dir(
        "pole_emploi/registrations/valid/every-status.json",
    ))
    .expect("fixture");
    let decoded = decode_registrations(&bytes, &session(), &settings()).expect("a list");
    let entered = decoded[1].as_ref().expect("valid");
    let s = entered.session.as_ref().expect("session from modules");
    assert_eq!(
        (s.start.to_string(), s.end.to_string()),
        ("2019-09-02".into(), "2019-12-20".into())
    );
    assert_eq!(
        entered
            .entry
            .as_ref()
            .map(|e| e.date.to_string())
            .as_deref(),
        Some("2019-09-02")
    );
    let pfr = decoded[4].as_ref().expect("valid");
    assert_eq!(pfr.session, None, "no module, no session");
    assert_eq!(pfr.training.numero_session, "1330305");
    assert_eq!(pfr.sources[0].system, System::PoleEmploi);
}

#[test]
fn invalid_registrations_report_their_rule_per_registration() {
    for (name, bytes) in fixtures("pole_emploi/registrations/invalid") {
        let (outer, inner): (Vec<Violation>, Vec<Violation>) =
            match decode_registrations(&bytes, &session(), &settings()) {
                Err(outer) => (outer, Vec::new()),
                Ok(items) => (
                    Vec::new(),
                    items
                        .into_iter()
                        .filter_map(Result::err)
                        .flatten()
                        .collect(),
                ),
            };
        let all: Vec<Violation> = outer.iter().chain(&inner).cloned().collect();
        assert!(!all.is_empty(), "{name}: nothing reported");
        if let Some(rule) = expected_rule(&name) {
            assert!(
                all.iter().any(|v| v.rule == rule),
                "{name}: no {rule} in {all:#?}"
            );
        }
        if let Ok(input) = serde_json::from_slice::<Value>(&bytes) {
            for v in &all {
                assert_pointer_resolves(&name, &input, v);
            }
            assert_no_personal_value(&name, &all, &personal_values(&input));
        }
        insta::assert_json_snapshot!(
            format!("errors__{name}"),
            json!({"outer": outer, "registrations": inner})
        );
    }
}

#[test]
fn one_bad_registration_does_not_hold_back_the_others() {
    let bytes = std::fs::read(fixtures_dir(
        "pole_emploi/registrations/invalid/status.required--aes-without-date.json",
    ))
    .expect("fixture");
    let items = decode_registrations(&bytes, &session(), &settings()).expect("a list");
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    let errors = items[1].as_ref().expect_err("no entry date");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].pointer, "/1/dateEntree");
    assert_eq!(errors[0].rule, Rule::StatusRequired);
}

#[test]
fn a_bad_session_reference_fails_the_poll_once() {
    let mut s = session();
    s.numero_session = "13 30305".into();
    let errors = decode_registrations(b"[]", &s, &settings()).expect_err("bad session number");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].pointer, "?numeroSession");
    assert_eq!(errors[0].rule, Rule::IntercarifFormat);
}

#[test]
fn token_and_error_bodies() {
    for (name, bytes) in fixtures("pole_emploi/token/valid") {
        let token = decode_token(&bytes).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        assert!(token.access_token().contains("fixture-secret-token"));
        assert_eq!(token.token_type, "Bearer");
        assert_eq!(token.expires_in, 1499);
        // The secret never reaches a log line through `{:?}`.
        assert!(!format!("{token:?}").contains("secret"), "{token:?}");
    }
    for (name, bytes) in fixtures("pole_emploi/error/valid") {
        let e = decode_error(&bytes).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        assert!(e.code_http == 400 || e.code_http == 401);
    }
    for (kind, decode) in [
        (
            "token",
            (|b: &[u8]| decode_token(b).map(|_| ())) as fn(&[u8]) -> Result<(), Vec<Violation>>,
        ),
        ("error", |b: &[u8]| decode_error(b).map(|_| ())),
    ] {
        for (name, bytes) in fixtures(&format!("pole_emploi/{kind}/invalid")) {
            let errors = decode(&bytes).expect_err(&name);
            let rule = expected_rule(&name).expect("named after its rule");
            assert!(errors.iter().any(|v| v.rule == rule), "{name}: {errors:#?}");
            assert_no_personal_value(&name, &errors, &["fixture-secret-token".to_string()]);
            insta::assert_json_snapshot!(format!("errors__{kind}__{name}"), errors);
        }
    }
}

#[test]
fn token_round_trip_and_error_round_trip() {
    let t = Token::new("s3cr3t-value", "Bearer", 60);
    let back = decode_token(encode_token(&t).to_string().as_bytes()).expect("valid");
    assert_eq!(back, t);
    assert!(!format!("{back:?}").contains("s3cr3t"));
    let e = ErrorBody {
        code_erreur: "ERR".into(),
        code_http: 503,
        message: "indisponible".into(),
    };
    assert_eq!(decode_error(encode_error(&e).to_string().as_bytes()), Ok(e));
}

#[test]
fn mapping_rows_name_real_fields_on_both_sides() {
    let schema: Value =
        serde_json::from_str(SchemaId::PoleEmploiRegistrations.source()).expect("schema json");
    for row in mapping::TABLE.rows {
        // Query parameters of the poll are not in the body.
        if !row.system.starts_with('?') {
            assert!(
                schema_has(&schema, &format!("/0{}", row.system)),
                "Pôle emploi field {} is not in its schema",
                row.system
            );
        }
        assert!(canonical_schema_has(row.canonical), "{}", row.canonical);
    }
}

#[test]
fn never_panics_on_junk() {
    for junk in [
        &b""[..],
        b"null",
        b"{}",
        b"[1, null, {}]",
        b"[[]]",
        &[0xff, 0x00],
    ] {
        let _ = decode_registrations(junk, &session(), &settings());
        assert!(decode_token(junk).is_err());
        assert!(decode_error(junk).is_err());
    }
}

// --- Round trip --------------------------------------------------------------------------------

prop_compose! {
    fn arb_session_ref()(
        numero_formation in arb_intercarif(),
        numero_action in arb_intercarif(),
        numero_session in arb_intercarif(),
    ) -> SessionRef {
        SessionRef { numero_formation, numero_action, numero_session }
    }
}

fn arb_day() -> impl Strategy<Value = chrono::NaiveDate> {
    (0i64..5000).prop_map(|d| {
        chrono::NaiveDate::from_ymd_opt(2017, 1, 1).expect("a day") + chrono::Duration::days(d)
    })
}

/// A dossier as Pôle emploi can carry it, on the session `s`.
fn arb_pe_dossier(s: SessionRef) -> impl Strategy<Value = Dossier> {
    (
        // An id as the API documents it: up to 10 digits, normalised without leading zeros.
        (0u64..=9_999_999_999).prop_map(|n| n.to_string()),
        proptest::sample::select(RegistrationStatus::ALL),
        any::<bool>(),
        arb_nir(false),
        proptest::option::of((
            proptest::option::of("[a-z0-9-]{1,60}"),
            proptest::option::of("[0-9A-Z]{1,25}"),
            proptest::option::of("[0-9]{3}"),
        )),
        proptest::option::of("[A-Z0-9]{12}"),
        proptest::option::of((arb_day(), 0i64..400)),
        0i64..30,
        arb_day(),
    )
        .prop_map(
            move |(id, status, aes, nir, pe, project_id, session, entry_offset, day)| {
                let session = session.map(|(start, len)| Session {
                    start,
                    end: start + chrono::Duration::days(len),
                    hours_centre: None,
                    hours_company: None,
                });
                let entry_day = session
                    .as_ref()
                    .map_or(day, |s| s.start + chrono::Duration::days(entry_offset));
                Dossier {
                    sources: vec![SourceRef {
                        system: System::PoleEmploi,
                        id: id.clone(),
                        version: None,
                        updated_on: None,
                    }],
                    state: state_of(status, aes),
                    dispositif: None,
                    category: None,
                    programme: None,
                    consultation: None,
                    trainee: Trainee {
                        nir: Nir::new(nir),
                        birth_name: None,
                        usage_name: None,
                        first_names: None,
                        sex: None,
                        birth_date: None,
                        pole_emploi_id: pe
                            .map(|(national, regional, geo_code)| PoleEmploiId {
                                national,
                                regional,
                                geo_code,
                            })
                            .filter(|p| *p != PoleEmploiId::default()),
                        postal_code: None,
                        commune_insee: None,
                    },
                    training: Training {
                        numero_formation: Some(s.numero_formation.clone()),
                        numero_action: Some(s.numero_action.clone()),
                        numero_session: s.numero_session.clone(),
                        title: None,
                        formacode: None,
                        certification: None,
                    },
                    provider: None,
                    session,
                    entry: aes.then_some(Entry { date: entry_day }),
                    exit: None,
                    fundings: Vec::new(),
                    cancellation: None,
                    refusal: None,
                    orientation: None,
                    registration: Some(Registration {
                        id,
                        status,
                        project_id,
                        aes_received: aes,
                    }),
                }
            },
        )
}

fn arb_session_and_dossiers() -> impl Strategy<Value = (SessionRef, Vec<Dossier>)> {
    arb_session_ref().prop_flat_map(|s| {
        let dossiers = proptest::collection::vec(arb_pe_dossier(s.clone()), 0..6);
        (Just(s), dossiers)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_decode_of_encode_is_identity((s, dossiers) in arb_session_and_dossiers()) {
        let body = serde_json::to_vec(&encode_registrations(&dossiers)).expect("serializes");
        let back = decode_registrations(&body, &s, &RuleSettings::default());
        let expected: Vec<Decoded> = dossiers.iter().cloned().map(Ok).collect();
        prop_assert_eq!(back, Ok(expected));
        for d in &dossiers {
            let json = serde_json::to_value(d).expect("serializes");
            let errors = passerelle_schemas::check(SchemaId::Dossier, &json);
            prop_assert!(errors.is_empty(), "{:?}", errors);
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_registrations(&bytes, &session(), &RuleSettings::default());
        let _ = decode_token(&bytes);
        let _ = decode_error(&bytes);
    }
}

/// The documented types (France Travail's partner documentation: an integer `idInscription`,
/// `YYYY-MM-DD hh:mm:ss` plan dates, integer codes) and the forms seen in practice (ids as strings
/// of digits, dates without their time) decode to the same canonical dossier.
#[test]
fn documented_and_practised_forms_decode_alike() {
    let documented = json!([{
        "idInscription": 1234567890u64,
        "codeStatutInscription": "ICR",
        "idNationalDE": "a3f9c2e1",
        "idRegionalDE": "0676932W",
        "codeGeoDE": 44,
        "nirCertifie": "1850775123456",
        "idProjetAction": 123456,
        "aesRecue": true,
        "dateEntree": "2019-09-02 00:00:00",
        "listeModuleFormation": [{"dateDebut": "2019-09-02 00:00:00", "dateFin": "2019-12-20 17:30:00"}],
    }]);
    let practised = json!([{
        "idInscription": "1234567890",
        "codeStatutInscription": "ICR",
        "idNationalDE": "a3f9c2e1",
        "idRegionalDE": "0676932W",
        "codeGeoDE": "044",
        "nirCertifie": "1850775123456",
        "idProjetAction": "000000123456",
        "aesRecue": true,
        "dateEntree": "2019-09-02",
        "listeModuleFormation": [{"dateDebut": "2019-09-02", "dateFin": "2019-12-20"}],
    }]);
    let decode = |v: &Value| {
        decode_registrations(v.to_string().as_bytes(), &session(), &settings())
            .expect("a list")
            .remove(0)
            .unwrap_or_else(|e| panic!("{e:#?}"))
    };
    let (a, b) = (decode(&documented), decode(&practised));
    assert_eq!(a, b);
    let r = a.registration.as_ref().expect("registration");
    assert_eq!(r.id, "1234567890");
    assert_eq!(r.project_id.as_deref(), Some("000000123456"));
    let pe = a.trainee.pole_emploi_id.as_ref().expect("job seeker ids");
    assert_eq!(pe.geo_code.as_deref(), Some("044"));
    assert_eq!(
        a.entry.as_ref().map(|e| e.date.to_string()).as_deref(),
        Some("2019-09-02")
    );

    // A string id with leading zeros is the same registration as the integer.
    let mut zeros = practised.clone();
    zeros[0]["idInscription"] = json!("0001234567890");
    let decoded = decode_registrations(zeros.to_string().as_bytes(), &session(), &settings())
        .expect("a list");
    let errors = decoded[0]
        .as_ref()
        .expect_err("13 characters is over 10 digits");
    assert!(
        errors.iter().any(|v| v.pointer == "/0/idInscription"),
        "{errors:#?}"
    );
    zeros[0]["idInscription"] = json!("0034567890");
    assert_eq!(
        decode(&zeros).registration.expect("registration").id,
        "34567890"
    );
}

/// What the simulator and the round trip write follows the documentation: an integer id and
/// `YYYY-MM-DD hh:mm:ss` plan dates.
#[test]
fn encoding_writes_the_documented_types() {
    let bytes = std::fs::read(fixtures_dir(
        "pole_emploi/registrations/valid/every-status.json",
    ))
    .expect("fixture");
    let dossiers: Vec<Dossier> = decode_registrations(&bytes, &session(), &settings())
        .expect("a list")
        .into_iter()
        .map(|d| d.expect("valid"))
        .collect();
    let encoded = encode_registrations(&dossiers);
    assert_eq!(encoded[0]["idInscription"], json!(987654));
    assert!(encoded[0]["idInscription"].is_u64());
    assert_eq!(
        encoded[0]["listeModuleFormation"][0]["dateDebut"],
        json!("2019-09-02 00:00:00")
    );
    assert!(passerelle_schemas::check(
        passerelle_schemas::SchemaId::PoleEmploiRegistrations,
        &encoded
    )
    .is_empty());
}

/// What an operator is shown of a registration keeps its shape and its non-personal fields, and
/// no personal value, whatever the item holds.
#[test]
fn a_masked_registration_keeps_its_shape_and_no_personal_value() {
    let item = json!({
        "idInscription": "INS-1",
        "codeStatutInscription": "ICR",
        "nirCertifie": "1850775123456",
        "idNationalDE": "a3f9c2e1",
        "idRegionalDE": null,
        "codeGeoDE": 44,
        "aesRecue": "oui",
        "nom": "DUPONT",
        "listeModuleFormation": [{"dateDebut": "2019-09-02 00:00:00", "dateFin": 20191220, "lieu": "NANTES"}],
    });
    let masked = mask::mask_unreadable(&item);
    assert_eq!(masked["idInscription"], "INS-1");
    assert_eq!(masked["codeGeoDE"], 44);
    assert_eq!(masked["aesRecue"], "oui");
    // The NIR as every view masks it: its first character and its length.
    assert_eq!(masked["nirCertifie"], "1************");
    assert_eq!(masked["idNationalDE"], "***");
    assert_eq!(masked["idRegionalDE"], Value::Null);
    assert_eq!(masked["nom"], "<string>");
    assert_eq!(
        masked["listeModuleFormation"][0]["dateDebut"],
        "2019-09-02 00:00:00"
    );
    assert_eq!(masked["listeModuleFormation"][0]["dateFin"], "<integer>");
    assert_eq!(masked["listeModuleFormation"][0]["lieu"], "<string>");
    let text = masked.to_string();
    for personal in ["1850775123456", "a3f9c2e1", "DUPONT", "NANTES"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    assert_eq!(
        mask::mask_unreadable(&json!("1850775123456")),
        json!("<string>")
    );
}
