//! OUIFORM adapter tests: fixtures (one per status, one per rule), snapshots of the canonical
//! dossiers and of the error lists, the canonical schema against serde, and the round trip.
//!
//! Also home of the canonical dossier schema's tests, since decoded fixtures are what it must accept.
//! The helpers are `pub(crate)` for the Pôle emploi tests.

use super::*;
use crate::canonical::{PrescriberKind, State};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub(crate) fn fixtures_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(sub)
}

/// The fixture files of a folder, sorted, as (file stem, bytes): JSON and XML documents.
pub(crate) fn fixtures(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir(sub);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "xml"))
        .map(|p| {
            let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (stem, std::fs::read(&p).expect("readable fixture"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixture in {}", dir.display());
    out
}

/// The rule an invalid fixture is about: its name up to `--`.
pub(crate) fn expected_rule(stem: &str) -> Option<crate::violation::Rule> {
    stem.split_once("--")
        .and_then(|(code, _)| crate::violation::Rule::from_code(code))
}

/// Asserts that no violation quotes any of `secrets` (personal values of the payload), in its
/// detail or its pointer.
pub(crate) fn assert_no_personal_value(name: &str, violations: &[Violation], secrets: &[String]) {
    let text = serde_json::to_string(violations).expect("violations serialize");
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        assert!(
            !text.contains(s.as_str()),
            "{name}: a violation quotes {s:?}: {text}"
        );
    }
}

/// Asserts that a violation's pointer names a place of the submitted JSON: the value itself, or for
/// a missing property, its parent object.
pub(crate) fn assert_pointer_resolves(name: &str, input: &Value, v: &Violation) {
    let target = match v.rule {
        crate::violation::Rule::SchemaRequired | crate::violation::Rule::StatusRequired => {
            v.pointer.rsplit_once('/').map_or("", |(parent, _)| parent)
        }
        _ => v.pointer.as_str(),
    };
    assert!(
        input.pointer(target).is_some(),
        "{name}: pointer {} of {} is not in the payload",
        v.pointer,
        v.rule
    );
}

fn settings() -> RuleSettings {
    RuleSettings::default()
}

fn personal_values(input: &Value) -> Vec<String> {
    [
        "nir",
        "nomNaissance",
        "prenom",
        "dateNaissance",
        "idNationalDE",
        "idRegionalDE",
    ]
    .iter()
    .filter_map(|k| input["beneficiaire"][k].as_str().map(str::to_string))
    .collect()
}

pub(crate) fn assert_canonical_schema(name: &str, d: &Dossier) {
    let json = serde_json::to_value(d).expect("dossier serializes");
    let errors = passerelle_schemas::check(passerelle_schemas::SchemaId::Dossier, &json);
    assert!(errors.is_empty(), "{name}: {errors:#?}");
}

#[test]
fn valid_fixtures_decode_to_schema_valid_canonical_dossiers() {
    for (name, bytes) in fixtures("ouiform/valid") {
        let dossier = decode(&bytes, &settings()).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        assert_canonical_schema(&name, &dossier);
        // The strict model reads exactly what the schema allows: no field is lost on the way.
        let input: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(encode(&dossier), input, "{name}: encode(decode(x)) != x");
        insta::assert_json_snapshot!(format!("valid__{name}"), dossier);
    }
}

#[test]
fn each_status_maps_to_its_canonical_state() {
    let state = |file: &str| {
        let bytes = std::fs::read(fixtures_dir("ouiform/valid").join(file)).expect("fixture");
        decode(&bytes, &settings()).map(|d| d.state)
    };
    assert_eq!(state("proposee.json"), Ok(State::Prescribed));
    assert_eq!(state("acceptee.json"), Ok(State::Registered));
    assert_eq!(state("refusee.json"), Ok(State::Refused));
    assert_eq!(state("entree.json"), Ok(State::Entered));
    assert_eq!(state("annulee.json"), Ok(State::Cancelled));
}

#[test]
fn invalid_fixtures_report_their_rule_at_ouiform_pointers_without_personal_values() {
    for (name, bytes) in fixtures("ouiform/invalid") {
        let errors = match decode(&bytes, &settings()) {
            Ok(_) => panic!("{name}: decoded although invalid"),
            Err(e) => e,
        };
        assert!(!errors.is_empty(), "{name}");
        if let Some(rule) = expected_rule(&name) {
            assert!(
                errors.iter().any(|v| v.rule == rule),
                "{name}: no {rule} in {errors:#?}"
            );
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(input) => {
                for v in &errors {
                    assert_pointer_resolves(&name, &input, v);
                }
                assert_no_personal_value(&name, &errors, &personal_values(&input));
            }
            Err(_) => assert_eq!(errors.len(), 1, "{name}: one json.syntax violation"),
        }
        insta::assert_json_snapshot!(format!("errors__{name}"), errors);
    }
}

#[test]
fn every_violation_is_listed_not_just_the_first() {
    let bytes = std::fs::read(fixtures_dir(
        "ouiform/invalid/many--every-violation-at-once.json",
    ))
    .expect("fixture");
    let errors = decode(&bytes, &settings()).expect_err("invalid");
    let mut found: Vec<(&str, &str)> = errors
        .iter()
        .map(|v| (v.pointer.as_str(), v.rule.code()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("/beneficiaire/codePostal", "schema.pattern"),
            ("/beneficiaire/nir", "nir.checksum"),
            ("/commentaire", "schema.additional_property"),
            ("/financeur", "funder.code"),
            ("/motifRefus", "schema.required"),
            ("/offre/siretOrganisme", "siret.luhn"),
        ]
    );
}

/// The valid `acceptee` orientation with `n` properties OUIFORM does not define in its
/// beneficiary.
fn with_unknown_fields(n: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir("ouiform/valid/acceptee.json")).expect("fixture"),
    )
    .expect("json");
    let b = v["beneficiaire"].as_object_mut().expect("beneficiaire");
    for i in 0..n {
        b.insert(format!("champ{i}"), json!(i));
    }
    serde_json::to_vec(&v).expect("json")
}

/// Issue 18: as an ATEXO SEM dossier, an orientation lists at most 100 violations, then one
/// `xml.truncated` entry saying how many more; each unknown property is its own violation.
#[test]
fn a_list_of_violations_is_cut_at_the_cap_and_says_so() {
    let errors = decode(&with_unknown_fields(5_000), &settings()).expect_err("invalid");
    assert_eq!(errors.len(), crate::violation::MAX_PER_DOSSIER + 1);
    assert!(errors[..crate::violation::MAX_PER_DOSSIER]
        .iter()
        .all(|v| v.rule == Rule::SchemaAdditional && v.pointer.starts_with("/beneficiaire/champ")));
    let last = errors.last().expect("entries");
    assert_eq!(last.rule, Rule::XmlTruncated);
    assert_eq!(last.pointer, "");
    assert!(last.detail.starts_with("4900 more"), "{}", last.detail);
    // Under the cap, nothing is cut.
    let errors = decode(&with_unknown_fields(3), &settings()).expect_err("invalid");
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|v| v.rule == Rule::SchemaAdditional));
}

/// A name of any length comes back cut in its pointer.
#[test]
fn an_unknown_property_of_megabytes_is_named_cut_short() {
    let mut v: Value = serde_json::from_slice(&with_unknown_fields(0)).expect("json");
    v["beneficiaire"]["x".repeat(1 << 20)] = json!(1);
    let errors = decode(&serde_json::to_vec(&v).expect("json"), &settings()).expect_err("invalid");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].pointer.len() < 100, "{}", errors[0].pointer);
    assert!(errors[0].pointer.ends_with('…'));
}

/// Past its deadline, an orientation with nothing wrong found yet cannot be judged; one already
/// known invalid is refused with what was found and a last entry saying where checking stopped.
#[test]
fn decoding_stops_at_its_deadline() {
    let past = std::time::Instant::now();
    let valid = std::fs::read(fixtures_dir("ouiform/valid/acceptee.json")).expect("fixture");
    assert_eq!(
        decode_within(&valid, &settings(), Some(past)).map(|_| ()),
        Err(DocumentError::OverBudget { dossiers_read: 0 })
    );
    let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    assert!(decode_within(&valid, &settings(), Some(far)).is_ok());
    // Malformed JSON is refused whatever the time: it needs no more than the parse.
    let r = decode_within(b"{", &settings(), Some(past));
    assert!(matches!(r, Err(DocumentError::Invalid(_))), "{r:?}");
}

#[test]
fn a_syntax_error_says_where_but_never_what() {
    let body = br#"{"beneficiaire": {"nir": "185077512345608", "nomNaissance": "DUPONT"#;
    let errors = decode(body, &settings()).expect_err("truncated");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].rule, crate::violation::Rule::JsonSyntax);
    assert_eq!(errors[0].pointer, "");
    assert!(errors[0].detail.contains("line 1"), "{}", errors[0].detail);
    assert_no_personal_value(
        "truncated",
        &errors,
        &["185077512345608".into(), "DUPONT".into()],
    );
    // Whatever the bytes, decode answers: never a panic.
    for junk in [
        &b""[..],
        b"null",
        b"[]",
        b"42",
        b"\"x\"",
        b"{}",
        &[0xff, 0xfe, 0x00],
    ] {
        assert!(decode(junk, &settings()).is_err());
    }
}

#[test]
fn rule_violations_are_named_by_ouiform_pointers() {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir("ouiform/valid/entree.json")).expect("fixture"),
    )
    .expect("json");
    v["beneficiaire"]["nir"] = json!("185077512345609");
    let errors = decode(v.to_string().as_bytes(), &settings()).expect_err("bad key");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].pointer, "/beneficiaire/nir");
    assert_eq!(errors[0].rule.code(), "nir.checksum");
}

#[test]
fn mapping_rows_name_real_fields_on_both_sides() {
    let orientation: Value =
        serde_json::from_str(SchemaId::OuiformOrientation.source()).expect("schema json");
    for row in mapping::TABLE.rows {
        assert!(
            schema_has(&orientation, row.system),
            "OUIFORM field {} is not in its schema",
            row.system
        );
        assert!(
            canonical_schema_has(row.canonical),
            "canonical field {} is not in the dossier schema",
            row.canonical
        );
    }
}

/// Whether a JSON pointer of an instance names a property a schema declares (following `$ref`s
/// into `$defs` and `items` for array indexes).
pub(crate) fn schema_has(root: &Value, pointer: &str) -> bool {
    let mut node = root;
    for seg in pointer.split('/').skip(1) {
        node = resolve(root, node);
        node = if seg == "*" || seg.parse::<usize>().is_ok() {
            &node["items"]
        } else {
            &node["properties"][seg]
        };
        if node.is_null() {
            return false;
        }
    }
    true
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(p) => root.pointer(p).unwrap_or(&Value::Null),
        None => node,
    }
}

pub(crate) fn canonical_schema_has(pointer: &str) -> bool {
    let dossier: Value = serde_json::from_str(SchemaId::Dossier.source()).expect("schema json");
    schema_has(&dossier, pointer)
}

// --- The canonical dossier schema -------------------------------------------------------------

fn full_dossier_json() -> Value {
    let path = fixtures_dir("canonical/dossier-full.json");
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

#[test]
fn canonical_full_fixture_validates_and_deserializes_exactly() {
    let json = full_dossier_json();
    let errors = passerelle_schemas::check(passerelle_schemas::SchemaId::Dossier, &json);
    assert!(errors.is_empty(), "{errors:#?}");
    let dossier: Dossier = serde_json::from_value(json.clone()).expect("a Dossier");
    assert_eq!(serde_json::to_value(&dossier).expect("serializes"), json);
}

#[test]
fn canonical_schema_declares_every_field_serde_writes_and_no_other() {
    // The full fixture sets every field (so serde writes all of them); the schema refuses unknown
    // properties, so it declares at least these; and here, every property it declares is used by
    // the fixture, so it declares no field serde would not write.
    let schema: Value = serde_json::from_str(SchemaId::Dossier.source()).expect("schema json");
    let json = full_dossier_json();
    let mut missing = Vec::new();
    walk_declared(&schema, &schema, "", &mut |pointer| {
        if json.pointer(pointer).is_none() {
            missing.push(pointer.to_string());
        }
    });
    assert!(missing.is_empty(), "not in dossier-full.json: {missing:?}");
}

#[test]
fn every_property_of_these_schemas_has_a_description() {
    for id in [
        SchemaId::Dossier,
        SchemaId::OuiformOrientation,
        SchemaId::PoleEmploiRegistrations,
        SchemaId::PoleEmploiToken,
        SchemaId::PoleEmploiError,
    ] {
        let schema: Value = serde_json::from_str(id.source()).expect("schema json");
        assert!(
            schema["$id"].is_string() && schema["title"].is_string(),
            "{}",
            id.file()
        );
        let mut undocumented = Vec::new();
        check_descriptions(&schema, &schema, "", &mut undocumented);
        assert!(undocumented.is_empty(), "{}: {undocumented:?}", id.file());
    }
}

fn check_descriptions(root: &Value, node: &Value, at: &str, out: &mut Vec<String>) {
    let node = resolve(root, node);
    if let Some(props) = node["properties"].as_object() {
        for (k, sub) in props {
            let p = format!("{at}/{k}");
            if sub["description"].as_str().is_none_or(str::is_empty) {
                out.push(p.clone());
            }
            check_descriptions(root, sub, &p, out);
        }
    }
    if !node["items"].is_null() {
        check_descriptions(root, &node["items"], &format!("{at}/0"), out);
    }
}

fn walk_declared(root: &Value, node: &Value, at: &str, f: &mut dyn FnMut(&str)) {
    let node = resolve(root, node);
    if let Some(props) = node["properties"].as_object() {
        for (k, sub) in props {
            let p = format!("{at}/{k}");
            f(&p);
            walk_declared(root, sub, &p, f);
        }
    }
    if !node["items"].is_null() {
        walk_declared(root, &node["items"], &format!("{at}/0"), f);
    }
}

#[test]
fn canonical_schema_rejects_wrong_dossiers() {
    let full = full_dossier_json();
    let rules = |mutate: &dyn Fn(&mut Value)| -> Vec<(String, &'static str)> {
        let mut v = full.clone();
        mutate(&mut v);
        passerelle_schemas::check(passerelle_schemas::SchemaId::Dossier, &v)
            .into_iter()
            .map(|e| (e.pointer, e.keyword))
            .collect()
    };
    assert_eq!(
        rules(&|v| v["state"] = json!("ENTRE")),
        vec![("/state".into(), "enum")]
    );
    assert_eq!(
        rules(&|v| v["trainee"]["nom"] = json!("x")),
        vec![("/trainee/nom".into(), "additionalProperties")]
    );
    assert_eq!(
        rules(&|v| v["fundings"][0]["funder"] = json!(21)),
        vec![("/fundings/0/funder".into(), "maximum")]
    );
    assert_eq!(
        rules(&|v| v["fundings"][0]["committed_cents"] = json!(4520.5)),
        vec![("/fundings/0/committed_cents".into(), "type")]
    );
    assert_eq!(
        rules(&|v| v["session"]["start"] = json!("02/09/2019")),
        vec![("/session/start".into(), "format")]
    );
    assert_eq!(
        rules(&|v| {
            v["training"]
                .as_object_mut()
                .expect("object")
                .remove("numero_session");
        }),
        vec![("/training/numero_session".into(), "required")]
    );
    assert_eq!(
        rules(&|v| v["orientation"]["date"] = json!("2019-09-02")),
        vec![("/orientation/date".into(), "format")]
    );
    // The wrong shapes serde itself would refuse are refused by the schema too.
    for bad in [
        json!({}),
        json!({"state": "entered"}),
        json!([]),
        json!({"sources": [], "state": "entered", "trainee": {"nir": "1850775123456"},
               "training": {"numero_session": "1"}, "extra": 1}),
    ] {
        assert!(!passerelle_schemas::check(passerelle_schemas::SchemaId::Dossier, &bad).is_empty());
        assert!(serde_json::from_value::<Dossier>(bad).is_err());
    }
}

// --- Round trip: decode(encode(x)) == x over what OUIFORM can carry ---------------------------

/// A NIR with a correct key (13 characters, or 15 with the key) and a plausible shape.
pub(crate) fn arb_nir(with_key: bool) -> impl Strategy<Value = String> {
    (
        prop_oneof![Just('1'), Just('2'), Just('7'), Just('8')],
        0u8..100,
        1u8..=12,
        prop_oneof![
            (1u8..=95).prop_map(|d| format!("{d:02}")),
            Just("2A".to_string()),
            Just("2B".to_string())
        ],
        0u16..1000,
        1u16..1000,
    )
        .prop_map(move |(sex, yy, mm, dept, commune, order)| {
            // Departments 20 does not exist (Corsica is 2A/2B) but the rules accept any two digits.
            let n13 = format!("{sex}{yy:02}{mm:02}{dept}{commune:03}{order:03}");
            if !with_key {
                return n13;
            }
            let numeric: u64 = n13
                .replace("2A", "19")
                .replace("2B", "18")
                .parse()
                .expect("digits");
            format!("{n13}{:02}", 97 - numeric % 97)
        })
}

/// A SIRET whose last digit makes the Luhn check pass.
pub(crate) fn arb_siret() -> impl Strategy<Value = String> {
    proptest::collection::vec(0u32..10, 13).prop_map(|digits| {
        let body: String = digits.iter().map(|d| char::from(b'0' + *d as u8)).collect();
        (0..10)
            .map(|last| format!("{body}{last}"))
            .find(|s| crate::rules::identifiers::siret(s).is_ok())
            .expect("one check digit fits")
    })
}

pub(crate) fn arb_intercarif() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,25}"
}

fn arb_text() -> impl Strategy<Value = String> {
    "[A-Za-zÀ-ÿ' -]{0,20}[A-Za-z]"
}

fn arb_date(from_year: i32, to_year: i32) -> impl Strategy<Value = chrono::NaiveDate> {
    (from_year..=to_year, 1u32..=12, 1u32..=28)
        .prop_map(|(y, m, d)| chrono::NaiveDate::from_ymd_opt(y, m, d).expect("a real day"))
}

prop_compose! {
    fn arb_orientation()(
        day in arb_date(2017, 2030),
        secs in 0u32..86_400,
        offset_quarters in -48i32..=56,
        kind in proptest::sample::select(PrescriberKind::ALL),
        siret in proptest::option::of(arb_siret()),
    ) -> Orientation {
        let offset = chrono::FixedOffset::east_opt(offset_quarters * 900).expect("in range");
        let naive = day.and_hms_opt(secs / 3600, secs / 60 % 60, secs % 60).expect("a real time");
        Orientation {
            date: naive.and_local_timezone(offset).single().expect("fixed offset"),
            prescriber_kind: kind,
            prescriber_siret: siret,
        }
    }
}

prop_compose! {
    fn arb_ouiform_dossier()(
        orientation in arb_orientation(),
        id in "[A-Z0-9-]{1,30}",
        state in proptest::sample::select(vec![
            State::Prescribed, State::Registered, State::Refused, State::Entered, State::Cancelled,
        ]),
        nir in prop_oneof![arb_nir(true), arb_nir(false)],
        birth_name in proptest::option::of(arb_text()),
        first_names in proptest::option::of(arb_text()),
        age in proptest::option::of((16i32..90, 0u32..365)),
        pe in proptest::option::of((
            proptest::option::of("[a-z0-9-]{1,40}"),
            proptest::option::of("[0-9A-Z]{1,25}"),
            proptest::option::of("[0-9]{3}"),
        )),
        postal_code in proptest::option::of("[0-9]{5}"),
        numero_formation in proptest::option::of(arb_intercarif()),
        numero_action in proptest::option::of(arb_intercarif()),
        numero_session in arb_intercarif(),
        title in proptest::option::of(arb_text()),
        provider_siret in proptest::option::of(arb_siret()),
        funder in proptest::option::of(proptest::sample::select(
            crate::rules::identifiers::FUNDER_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        )),
        dispositif in proptest::option::of("[A-Z0-9-]{1,20}"),
        reason in arb_text(),
        entry_days in 0i64..400,
    ) -> Dossier {
        let at = orientation.date.date_naive();
        let birth_date = age.map(|(years, days)| {
            at - chrono::Duration::days(i64::from(years) * 366 + i64::from(days))
        });
        let pole_emploi_id = pe
            .map(|(national, regional, geo_code)| PoleEmploiId { national, regional, geo_code })
            .filter(|p| *p != PoleEmploiId::default());
        Dossier {
            sources: vec![SourceRef { system: System::Ouiform, id, version: None, updated_on: None }],
            state,
            dispositif: dispositif.map(|code| Dispositif { code, label: None, agora: None }),
            category: None,
            programme: None,
            consultation: None,
            trainee: Trainee {
                nir: Nir::new(nir),
                birth_name: birth_name.map(Personal::new),
                usage_name: None,
                first_names: first_names.map(Personal::new),
                sex: None,
                birth_date: birth_date.map(Personal::new),
                pole_emploi_id,
                postal_code,
                commune_insee: None,
            },
            training: Training {
                numero_formation,
                numero_action,
                numero_session,
                title,
                formacode: None,
                certification: None,
            },
            provider: provider_siret.map(|s| Provider { siret: Some(s), nda: None, name: None }),
            session: None,
            entry: (state == State::Entered)
                .then(|| Entry { date: at + chrono::Duration::days(entry_days) }),
            exit: None,
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
            refusal: (state == State::Refused).then_some(Refusal { reason: Some(reason) }),
            orientation: Some(orientation),
            registration: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_decode_of_encode_is_identity(d in arb_ouiform_dossier()) {
        let body = serde_json::to_vec(&encode(&d)).expect("serializes");
        let back = decode(&body, &RuleSettings::default());
        prop_assert_eq!(back.as_ref().map_err(|e| e.clone()), Ok(&d));
        // And what it gives is a canonical dossier by the schema.
        let json = serde_json::to_value(&d).expect("serializes");
        let errors = passerelle_schemas::check(passerelle_schemas::SchemaId::Dossier, &json);
        prop_assert!(errors.is_empty(), "{:?}", errors);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes, &RuleSettings::default());
    }

    #[test]
    fn decode_never_panics_on_mutated_orientations(
        d in arb_ouiform_dossier(),
        field in proptest::sample::select(vec![
            "/idOrientation", "/dateOrientation", "/statut", "/beneficiaire/nir",
            "/beneficiaire/dateNaissance", "/financeur", "/offre/numeroSession", "/prescripteur/type",
        ]),
        replacement in prop_oneof![
            Just(Value::Null), Just(json!(12)), Just(json!("")), Just(json!([])),
            Just(json!({})), "[ -~]{0,30}".prop_map(Value::String),
        ],
    ) {
        let mut v = encode(&d);
        if let Some(slot) = v.pointer_mut(field) {
            *slot = replacement;
        }
        let _ = decode(v.to_string().as_bytes(), &RuleSettings::default());
    }
}
