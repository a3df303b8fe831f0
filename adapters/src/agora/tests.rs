//! AGORA adapter tests: fixtures under `tests/fixtures/agora/`, snapshots under `snapshots/`, and
//! property tests on generated dossiers.

use super::*;
use crate::canonical::{
    Cancellation, Consultation, Dispositif, Entry, Exit, ExitReason, Formacode, Funding, Nir,
    Provider, Refusal, Session, Sex, SourceRef, System, Trainee, Training,
};
use crate::rules::{self, identifiers, RuleSettings};
use proptest::prelude::*;
use serde_json::{json, Value};

const ID: &str = "psl-0123456789abcdef0123";

fn fixture(path: &str) -> Vec<u8> {
    let full = format!(
        "{}/../tests/fixtures/agora/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture is JSON")
}

fn canonical(name: &str) -> Dossier {
    serde_json::from_slice(&fixture(&format!("canonical/{name}.json"))).expect("canonical fixture")
}

fn op(name: &str) -> Operation {
    Operation::ALL
        .into_iter()
        .find(|o| o.name() == name)
        .expect("an operation name")
}

/// Every personal value of the fixtures, which must never show in a violation or a `Debug`.
const PERSONAL: &[&str] = &[
    "185077512345608",
    "1850775123456",
    "2550814168025",
    "DUPONT",
    "MARTIN",
    "DURAND",
    "Jean",
    "Claire",
    "1985-07-12",
    "1955-08-14",
];

fn assert_no_personal(text: &str) {
    for p in PERSONAL {
        assert!(!text.contains(p), "personal value {p:?} leaked in: {text}");
    }
}

// ------------------------------------------------------------------ schemas and fixtures

#[test]
fn valid_fixtures_decode() {
    let dossier = decode_dossier_body(&fixture("valid/dossier.json")).expect("dossier");
    assert_eq!(dossier.stagiaire.nir13.expose(), "1850775123456");
    for (o, file) in [
        ("enter", "entree"),
        ("exit", "sortie"),
        ("settle", "solde"),
        ("cancel", "annulation"),
    ] {
        let body = decode_transition(op(o), &fixture(&format!("valid/{file}.json")))
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert_eq!(body.operation(), op(o));
        assert_eq!(body.path(), file);
    }
    let line = decode_reprise_line(&fixture("valid/reprise_line_solde.json")).expect("line");
    assert_eq!(line.etat, AgoraState::Solde);
    assert!(line.entree.is_some() && line.sortie.is_some() && line.solde.is_some());
    let lot = decode_reprise_lot(&fixture("valid/lot.ndjson"));
    assert_eq!(lot.len(), 3);
    for (n, (ligne, line)) in lot.iter().enumerate() {
        assert_eq!(*ligne as usize, n + 1);
        assert!(line.is_ok(), "line {ligne}: {line:?}");
    }
    let report = decode_reprise_report(&fixture("valid/reprise_report.json")).expect("report");
    assert_eq!(report.compte_rendu[1].numero_agora, None);
}

/// Each invalid fixture, the schema it breaks, and a violation it must give (pointer, rule).
const INVALID: &[(&str, SchemaId, &str, Rule)] = &[
    (
        "dossier_nir15",
        SchemaId::AgoraDossier,
        "/stagiaire/nir13",
        Rule::SchemaLength,
    ),
    (
        "dossier_float_amount",
        SchemaId::AgoraDossier,
        "/financements/0/montant_engage_cents",
        Rule::SchemaType,
    ),
    (
        "dossier_amount_in_euros_string",
        SchemaId::AgoraDossier,
        "/financements/0/montant_engage_cents",
        Rule::SchemaType,
    ),
    (
        "dossier_french_date",
        SchemaId::AgoraDossier,
        "/formation/date_debut",
        Rule::SchemaPattern,
    ),
    (
        "dossier_impossible_date",
        SchemaId::AgoraDossier,
        "/formation/date_fin",
        Rule::SchemaFormat,
    ),
    (
        "dossier_missing_field",
        SchemaId::AgoraDossier,
        "/stagiaire/date_naissance",
        Rule::SchemaRequired,
    ),
    (
        "dossier_extra_field",
        SchemaId::AgoraDossier,
        "/commentaire",
        Rule::SchemaAdditional,
    ),
    (
        "dossier_unknown_funder",
        SchemaId::AgoraDossier,
        "/financeur/code",
        Rule::SchemaEnum,
    ),
    (
        "dossier_formacode_with_version",
        SchemaId::AgoraDossier,
        "/formation/formacode",
        Rule::SchemaPattern,
    ),
    (
        "sortie_bad_enum",
        SchemaId::AgoraSortie,
        "/motif_sortie",
        Rule::SchemaEnum,
    ),
    (
        "sortie_float_hours",
        SchemaId::AgoraSortie,
        "/heures_realisees",
        Rule::SchemaType,
    ),
    (
        "annulation_bad_initiator",
        SchemaId::AgoraAnnulation,
        "/initiateur",
        Rule::SchemaEnum,
    ),
    (
        "solde_missing_field",
        SchemaId::AgoraSolde,
        "/montant_solde_cents",
        Rule::SchemaRequired,
    ),
    (
        "reprise_line_sorti_without_sortie",
        SchemaId::AgoraRepriseLine,
        "/sortie",
        Rule::SchemaRequired,
    ),
    (
        "reprise_line_cree_with_entree",
        SchemaId::AgoraRepriseLine,
        "/entree",
        Rule::SchemaOther,
    ),
    (
        "reprise_line_bad_etat",
        SchemaId::AgoraRepriseLine,
        "/etat",
        Rule::SchemaEnum,
    ),
];

fn decode_with(schema: SchemaId, bytes: &[u8]) -> Vec<Violation> {
    let result = match schema {
        SchemaId::AgoraDossier => decode_dossier_body(bytes).map(|_| ()),
        SchemaId::AgoraSortie => decode_transition(Operation::Exit, bytes).map(|_| ()),
        SchemaId::AgoraSolde => decode_transition(Operation::Settle, bytes).map(|_| ()),
        SchemaId::AgoraAnnulation => decode_transition(Operation::Cancel, bytes).map(|_| ()),
        SchemaId::AgoraRepriseLine => decode_reprise_line(bytes).map(|_| ()),
        other => panic!("no decoder for {other:?}"),
    };
    result.err().unwrap_or_default()
}

#[test]
fn invalid_fixtures_are_rejected_with_pointer_and_rule() {
    let mut all = String::new();
    for (name, schema, pointer, rule) in INVALID {
        let violations = decode_with(*schema, &fixture(&format!("invalid/{name}.json")));
        assert!(
            violations
                .iter()
                .any(|v| v.pointer == *pointer && v.rule == *rule),
            "{name}: expected {rule} at {pointer:?}, got {violations:#?}"
        );
        for v in &violations {
            all.push_str(&format!("{name}: {v}\n"));
        }
    }
    assert_no_personal(&all);
    insta::assert_snapshot!("invalid_fixtures", all);
}

#[test]
fn schemas_reject_the_classic_mistakes_inline() {
    let base = fixture_json("valid/dossier.json");
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        check_schema(SchemaId::AgoraDossier, &v)
    };
    assert!(broken(&|_| {}).is_empty());
    // A 2A/2B department is a valid NIR-13; a 12-char one is not.
    assert!(broken(&|v| v["stagiaire"]["nir13"] = json!("185072A123456")).is_empty());
    assert!(!broken(&|v| v["stagiaire"]["nir13"] = json!("185077512345")).is_empty());
    assert!(!broken(&|v| v["stagiaire"]["nir13"] = json!("3850775123456")).is_empty());
    assert!(!broken(&|v| v["financements"][0]["montant_engage_cents"] = json!(-1)).is_empty());
    // JSON Schema counts 560.0 as an integer; serde does not, so the decode still refuses it.
    let mut float_hours = base.clone();
    float_hours["formation"]["heures_prevues"] = json!(560.0);
    assert!(check_schema(SchemaId::AgoraDossier, &float_hours).is_empty());
    assert!(decode_dossier_body(float_hours.to_string().as_bytes()).is_err());
    assert!(!broken(&|v| v["stagiaire"]["sexe"] = json!(1)).is_empty());
    assert!(!broken(&|v| v["financements"] = json!([])).is_empty());
    assert!(!broken(&|v| v["stagiaire"]["extra"] = json!("x")).is_empty());
    for (schema, body) in [
        (SchemaId::AgoraEntree, json!({"date_entree": "2019-9-2"})),
        (
            SchemaId::AgoraSolde,
            json!({"montant_realise_cents": 1.5, "montant_solde_cents": 1}),
        ),
        (
            SchemaId::AgoraSortie,
            json!({"date_sortie": "2019-12-20", "motif_sortie": "FIN", "resultat_certification": "obtained", "heures_realisees": 1}),
        ),
        (SchemaId::AgoraAnswer, json!({"code": "AG-AUTRE"})),
        (SchemaId::AgoraAnswer, json!({"anomalies": []})),
        (
            SchemaId::AgoraAnswer,
            json!({"numero_agora": "AG-1", "etat": "ENTREE"}),
        ),
        (
            SchemaId::AgoraRepriseReport,
            json!({"etat": "FINI", "lignes": 0, "acceptees": 0, "rejetees": 0, "compte_rendu": []}),
        ),
    ] {
        assert!(!check_schema(schema, &body).is_empty(), "{schema:?} {body}");
    }
}

/// The reprise line repeats the dossier's and the blocks' definitions (no cross-file `$ref`, so
/// each file stands alone for partners): they must not drift apart.
#[test]
fn schema_files_agree_with_each_other() {
    let parse = |id: SchemaId| -> Value { serde_json::from_str(id.source()).expect("schema") };
    let dossier = parse(SchemaId::AgoraDossier);
    let line = parse(SchemaId::AgoraRepriseLine);
    for (k, v) in dossier["$defs"].as_object().expect("defs") {
        assert_eq!(&line["$defs"][k], v, "$defs/{k}");
    }
    for (k, v) in dossier["properties"].as_object().expect("properties") {
        assert_eq!(&line["properties"][k], v, "properties/{k}");
    }
    for (id, block) in [
        (SchemaId::AgoraEntree, "entree"),
        (SchemaId::AgoraSortie, "sortie"),
        (SchemaId::AgoraSolde, "solde"),
        (SchemaId::AgoraAnnulation, "annulation"),
    ] {
        let schema = parse(id);
        for key in ["properties", "required", "additionalProperties"] {
            assert_eq!(line["$defs"][block][key], schema[key], "{block} {key}");
        }
        for (k, v) in schema["$defs"].as_object().expect("defs") {
            assert_eq!(&dossier["$defs"][k], v, "{block} $defs/{k}");
        }
    }
    // Every schema describes itself in French.
    for id in SchemaId::ALL
        .iter()
        .filter(|id| id.file().starts_with("agora/"))
    {
        let s = parse(*id);
        assert!(s["title"].is_string(), "{id:?}");
        assert!(s["description"].is_string() || s["properties"].is_object());
    }
}

// ------------------------------------------------------------------ encode

#[test]
fn encoded_dossier_is_the_valid_fixture() {
    let body = encode_dossier(ID, &canonical("settled")).expect("complete dossier");
    let encoded = serde_json::to_value(&body).expect("json");
    assert_eq!(encoded, fixture_json("valid/dossier.json"));
    insta::assert_json_snapshot!("dossier_body", body);
    assert_no_personal(&format!("{body:?}"));
}

#[test]
fn encoded_transitions() {
    let d = canonical("settled");
    let mut bodies = serde_json::Map::new();
    for o in [Operation::Enter, Operation::Exit, Operation::Settle] {
        let body = encode_transition(o, &d).expect("transition");
        let bytes = serde_json::to_vec(&body).expect("json");
        assert_eq!(
            decode_transition(o, &bytes).expect("decodes"),
            body,
            "{o:?}"
        );
        bodies.insert(
            body.path().to_string(),
            serde_json::to_value(&body).expect("json"),
        );
    }
    assert_eq!(bodies["entree"], fixture_json("valid/entree.json"));
    assert_eq!(bodies["sortie"], fixture_json("valid/sortie.json"));
    assert_eq!(bodies["solde"], fixture_json("valid/solde.json"));
    // A refused dossier has no cancellation block: it is cancelled with its refusal.
    let refused = encode_transition(Operation::Cancel, &canonical("refused")).expect("cancel");
    bodies.insert(
        "annulation (refused)".into(),
        serde_json::to_value(&refused).expect("json"),
    );
    insta::assert_json_snapshot!("transition_bodies", bodies);
}

#[test]
fn refusal_and_cancellation_choices() {
    let mut d = canonical("refused");
    let TransitionBody::Annulation(a) = encode_transition(Operation::Cancel, &d).expect("ok")
    else {
        panic!("not an annulation")
    };
    assert_eq!(
        a.date_annulation.to_string(),
        "2019-08-20",
        "latest source update"
    );
    assert_eq!(a.initiateur, Initiator::Provider);
    // Pôle emploi's "absent from the information meeting": the trainee's doing.
    d.registration = Some(crate::canonical::Registration {
        id: "I-1".into(),
        status: RegistrationStatus::Absent,
        project_id: None,
        aes_received: false,
    });
    d.refusal = Some(Refusal { reason: None });
    d.sources.retain(|s| s.updated_on.is_none());
    let TransitionBody::Annulation(a) = encode_transition(Operation::Cancel, &d).expect("ok")
    else {
        panic!("not an annulation")
    };
    assert_eq!(a.initiateur, Initiator::Trainee);
    assert_eq!(a.motif, REFUS_SANS_MOTIF);
    assert_eq!(
        a.date_annulation.to_string(),
        "2019-07-01",
        "orientation date"
    );
    // With no date at all, it waits, and says for what.
    d.orientation = None;
    let err = encode_transition(Operation::Cancel, &d).expect_err("no date");
    assert_eq!(err[0].pointer, "/cancellation/date");
    // A cancelled dossier uses its own block; without a reason, the default motif.
    let mut c = canonical("refused");
    c.state = State::Cancelled;
    c.cancellation = Some(Cancellation {
        date: NaiveDate::from_ymd_opt(2019, 9, 1).expect("date"),
        initiator: Initiator::Funder,
        reason: None,
    });
    let TransitionBody::Annulation(a) = encode_transition(Operation::Cancel, &c).expect("ok")
    else {
        panic!("not an annulation")
    };
    assert_eq!(
        (a.initiateur, a.motif.as_str()),
        (Initiator::Funder, MOTIF_NON_COMMUNIQUE)
    );
    c.cancellation = None;
    let err = encode_transition(Operation::Cancel, &c).expect_err("no block");
    assert_eq!(
        (err[0].pointer.as_str(), err[0].rule),
        ("/cancellation", Rule::StatusRequired)
    );
    // Search and create have no transition body.
    assert!(encode_transition(Operation::Search, &c).is_err());
    assert!(encode_transition(Operation::Create, &c).is_err());
}

#[test]
fn an_orientation_alone_is_incomplete_and_says_what_it_waits_for() {
    let d = canonical("orientation_only");
    let missing = missing_for_agora(&d);
    let err = encode_dossier(ID, &d).expect_err("incomplete");
    assert_eq!(missing, err, "a registered dossier owes only its creation");
    for v in &missing {
        assert!(matches!(v.rule, Rule::FieldRequired | Rule::StatusRequired));
        assert!(
            mapping::TABLE.locate(&v.pointer).is_some(),
            "{} is not in the mapping table",
            v.pointer
        );
    }
    insta::assert_json_snapshot!("orientation_only_missing", missing);
    // The same orientation, entered: it now waits for the entry date too.
    let mut entered = d.clone();
    entered.state = State::Entered;
    let more = missing_for_agora(&entered);
    assert!(more
        .iter()
        .any(|v| v.pointer == "/entry" && v.rule == Rule::StatusRequired));
    // Refused without funding: the search needs the funder, the cancellation needs nothing more.
    let mut refused = d;
    refused.state = State::Refused;
    let r = missing_for_agora(&refused);
    assert_eq!(
        r.iter().map(|v| v.pointer.as_str()).collect::<Vec<_>>(),
        ["/fundings"]
    );
    // A complete dossier misses nothing, whatever state it is in.
    assert!(missing_for_agora(&canonical("settled")).is_empty());
}

#[test]
fn the_last_guard_names_invalid_values_by_canonical_pointer_without_quoting_them() {
    let mut d = canonical("settled");
    d.trainee.nir = Nir::new("3850775123456");
    d.provider = Some(Provider {
        siret: Some("4424".into()),
        ..Provider::default()
    });
    d.fundings[1].funder = 1;
    let err = encode_dossier(ID, &d).expect_err("invalid values");
    let pointers: Vec<&str> = err.iter().map(|v| v.pointer.as_str()).collect();
    assert!(pointers.contains(&"/trainee/nir"), "{pointers:?}");
    assert!(pointers.contains(&"/provider/siret"), "{pointers:?}");
    assert!(pointers.contains(&"/fundings/1/funder"), "{pointers:?}");
    assert_no_personal(&format!("{err:?}"));
    assert!(!format!("{err:?}").contains("3850775123456"));
}

#[test]
fn usage_name_defaults_to_birth_name_and_hours_add_up() {
    let body = encode_dossier(ID, &canonical("settled")).expect("ok");
    assert_eq!(body.stagiaire.nom_usage, body.stagiaire.nom_naissance);
    assert_eq!(body.formation.heures_prevues, 560);
    let refused = encode_dossier(ID, &canonical("refused")).expect("ok");
    assert_eq!(refused.stagiaire.nom_usage.expose(), "DURAND");
    assert_eq!(refused.formation.heures_prevues, 400);
}

#[test]
fn reprise_lines_and_lot() {
    let settled = canonical("settled");
    let refused = canonical("refused");
    let lines = [
        encode_reprise_line(ID, &settled, AgoraState::Solde).expect("solde"),
        encode_reprise_line("psl-aaaaaaaaaaaaaaaaaaaa", &settled, AgoraState::Cree).expect("cree"),
        encode_reprise_line("psl-bbbbbbbbbbbbbbbbbbbb", &refused, AgoraState::Annule)
            .expect("annule"),
    ];
    assert_eq!(
        serde_json::to_value(&lines[0]).expect("json"),
        fixture_json("valid/reprise_line_solde.json")
    );
    let mut lot = RepriseLot::new();
    for line in &lines {
        assert_eq!(lot.push(line), Ok(Fill::Room));
    }
    assert_eq!(lot.references()[2], "psl-bbbbbbbbbbbbbbbbbbbb");
    assert_no_personal(&format!("{lot:?}"));
    let bytes = lot.into_bytes();
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    assert_eq!(text.lines().count(), 3);
    assert!(text.ends_with('\n'));
    let decoded = decode_reprise_lot(&bytes);
    for ((_, got), sent) in decoded.into_iter().zip(&lines) {
        assert_eq!(&got.expect("decodes"), sent);
    }
    insta::assert_snapshot!("reprise_lot_ndjson", text);
    // A state the dossier has not reached cannot be backfilled: the missing blocks are named.
    let mut d = settled;
    d.exit = None;
    let err = encode_reprise_line(ID, &d, AgoraState::Sorti).expect_err("no exit");
    assert!(err.iter().any(|v| v.pointer == "/exit"));
}

#[test]
fn a_lot_is_full_at_ten_thousand_lines() {
    let line = encode_reprise_line(ID, &canonical("settled"), AgoraState::Cree).expect("line");
    let mut lot = RepriseLot::new();
    for i in 1..MAX_LOT_LINES {
        assert_eq!(lot.push(&line), Ok(Fill::Room), "line {i}");
    }
    assert_eq!(lot.push(&line), Ok(Fill::Full));
    assert!(lot.is_full());
    assert_eq!(lot.push(&line), Err(LotError::Full));
    assert_eq!(lot.len(), MAX_LOT_LINES);
    let bytes = lot.into_bytes();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), MAX_LOT_LINES);
}

#[test]
fn mapping_rows_point_both_ways() {
    for r in mapping::TABLE.rows {
        assert!(r.system.starts_with('/'), "{}", r.system);
        // Each AGORA path leads back to a canonical field of the same table.
        let back = mapping::canonical_of(&r.system.replace('*', "0"));
        assert!(
            mapping::TABLE
                .rows
                .iter()
                .any(|x| x.canonical == back.replace("/0/", "/*/") || x.canonical == back),
            "{} → {back}",
            r.system
        );
    }
    assert_eq!(mapping::canonical_of("/stagiaire/nir13"), "/trainee/nir");
    assert_eq!(
        mapping::canonical_of("/financements/3/montant_engage_cents"),
        "/fundings/3/committed_cents"
    );
    assert_eq!(
        mapping::canonical_of("/financeur/code"),
        "/fundings/0/funder"
    );
    assert_eq!(mapping::canonical_of("/nowhere"), "(agora /nowhere)");
    assert_eq!(
        mapping::TABLE
            .locate("/fundings/2/committed_cents")
            .as_deref(),
        Some("/financements/2/montant_engage_cents")
    );
    let doc = crate::mapping::render(crate::mapping::Format::Markdown);
    assert!(doc.contains("/stagiaire/nir13 (first 13 characters)"));
}

// ------------------------------------------------------------------ decode answers

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("1994-11-06T08:49:37Z")
        .expect("date")
        .with_timezone(&Utc)
}

#[test]
fn answer_fixtures_decode_to_typed_outcomes() {
    let cases = fixture_json("answers.json");
    let mut out = String::new();
    for case in cases.as_array().expect("array") {
        let name = case["name"].as_str().expect("name");
        let outcome = decode_answer_at(
            op(case["op"].as_str().expect("op")),
            u16::try_from(case["status"].as_u64().expect("status")).expect("u16"),
            case["retry_after"].as_str(),
            case["body"].as_str().expect("body").as_bytes(),
            now(),
        );
        out.push_str(&format!("{name}: {outcome:?}\n"));
    }
    assert_no_personal(&out);
    insta::assert_snapshot!("answer_outcomes", out);
}

#[test]
fn retry_after_in_seconds_or_http_date() {
    assert_eq!(
        parse_retry_after("120", now()),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now()),
        Some(Duration::from_secs(30))
    );
    // A date in the past means "now".
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now()),
        Some(Duration::ZERO)
    );
    for bad in ["", "soon", "-5", "1.5"] {
        assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
    }
}

#[test]
fn retry_after_is_capped_at_an_hour_before_any_arithmetic() {
    let hour = Some(MAX_RETRY_AFTER);
    assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(3600));
    for huge in [
        "3601",
        "10000000000000000000",
        "18446744073709551615",
        "99999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let wait = parse_retry_after(huge, now());
        assert_eq!(wait, hour, "{huge:?}");
        // What the callers then do with it must not overflow.
        let _ = std::time::Instant::now() + wait.unwrap_or_default();
        let _ = now() + chrono::TimeDelta::from_std(wait.unwrap_or_default()).unwrap_or_default();
    }
    assert_eq!(
        parse_retry_after("3600", now()),
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn every_outcome_round_trips_through_its_wire_answer() {
    use Operation::*;
    let anomalies = vec![
        Anomaly {
            code: "AG-NIR".into(),
            champ: Some("stagiaire.nir13".into()),
            libelle: Some("NIR inconnu".into()),
        },
        Anomaly {
            code: "AG-DATES".into(),
            champ: None,
            libelle: None,
        },
    ];
    let cases = [
        (
            Search,
            Outcome::Found {
                numero_agora: "AG-2019-1".into(),
                etat: AgoraState::Sorti,
            },
        ),
        (Search, Outcome::NotFound),
        (
            Create,
            Outcome::Created {
                numero_agora: "AG-2019-1".into(),
            },
        ),
        (
            Create,
            Outcome::AlreadyExists {
                numero_agora: "AG-2019-1".into(),
            },
        ),
        (Enter, Outcome::Accepted),
        (Cancel, Outcome::Rejected { anomalies }),
        (Settle, Outcome::StateConflict),
        (
            Exit,
            Outcome::Transient {
                retry_after: Some(Duration::from_secs(7)),
                reason: TransientReason::RateLimited,
            },
        ),
        (
            Create,
            Outcome::Transient {
                retry_after: None,
                reason: TransientReason::ServerError(503),
            },
        ),
        (
            Search,
            Outcome::Transient {
                retry_after: None,
                reason: TransientReason::RequestTimeout,
            },
        ),
        (
            Enter,
            Outcome::Unexpected {
                status: 418,
                detail: "HTTP 418 is not an answer AGORA gives to enter".into(),
            },
        ),
    ];
    for (o, outcome) in cases {
        let wire = encode_answer(&outcome).expect("an HTTP answer");
        let back = decode_answer_at(
            o,
            wire.status,
            wire.retry_after.as_deref(),
            &wire.body,
            now(),
        );
        assert_eq!(back, outcome, "{o:?}");
    }
    assert_eq!(encode_answer(&Outcome::transient("connection reset")), None);
    assert!(Outcome::transient("timeout").is_transient());
    // The lot and the report, too.
    let lot = encode_lot_accepted("LOT-42");
    assert_eq!(
        (lot.status, decode_lot_accepted(&lot.body)),
        (202, Ok("LOT-42".to_string()))
    );
    let report = decode_reprise_report(&fixture("valid/reprise_report.json")).expect("report");
    let wire = encode_reprise_report(&report);
    assert_eq!(decode_reprise_report(&wire.body), Ok(report));
}

#[test]
fn a_report_whose_counts_do_not_add_up_is_refused() {
    let mut r = fixture_json("valid/reprise_report.json");
    r["acceptees"] = json!(3);
    let err = decode_reprise_report(r.to_string().as_bytes()).expect_err("counts");
    assert!(err.iter().any(|v| v.pointer == "/acceptees"));
    let mut r = fixture_json("valid/reprise_report.json");
    r["etat"] = json!("EN_COURS");
    r["compte_rendu"].as_array_mut().expect("array").pop();
    r["acceptees"] = json!(1);
    assert!(
        decode_reprise_report(r.to_string().as_bytes()).is_ok(),
        "in progress"
    );
    assert!(decode_lot_accepted(b"{\"lot\": 42}").is_err());
    assert!(decode_reprise_report(b"").is_err());
}

// ------------------------------------------------------------------ generated dossiers

fn nir_key(n13: &str) -> u64 {
    let digits = n13.replace("2A", "19").replace("2B", "18");
    97 - digits.parse::<u64>().expect("digits") % 97
}

fn nir() -> impl Strategy<Value = String> {
    let dept = prop_oneof![
        (1u32..96).prop_map(|d| format!("{d:02}")),
        Just("2A".to_string()),
        Just("2B".to_string()),
    ];
    (
        prop_oneof![Just(1u8), Just(2u8)],
        0u32..100,
        1u32..13,
        dept,
        1u32..1000,
        1u32..1000,
        any::<bool>(),
    )
        .prop_map(|(s, yy, mm, dept, com, ord, key)| {
            let n13 = format!("{s}{yy:02}{mm:02}{dept}{com:03}{ord:03}");
            if key {
                format!("{n13}{:02}", nir_key(&n13))
            } else {
                n13
            }
        })
}

fn siret() -> impl Strategy<Value = String> {
    "[0-9]{13}".prop_map(|s| {
        (0..10)
            .map(|k| format!("{s}{k}"))
            .find(|c| identifiers::siret(c).is_ok())
            .expect("one check digit fits")
    })
}

fn date(from: (i32, u32, u32), days: u32) -> impl Strategy<Value = NaiveDate> {
    let base = NaiveDate::from_ymd_opt(from.0, from.1, from.2).expect("date");
    (0..days).prop_map(move |d| base + chrono::Duration::days(i64::from(d)))
}

fn name() -> impl Strategy<Value = Personal<String>> {
    "[A-ZÉ][a-zàéèç' -]{0,30}".prop_map(Personal::new)
}

fn intercarif() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,25}"
}

prop_compose! {
    fn funding()(
        funder in proptest::sample::select(identifiers::FUNDER_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>()),
        committed in 0i64..1_000_000_000,
        realised in 0i64..1_000_000_000,
        settled in 0i64..1_000_000_000,
    ) -> Funding {
        Funding { funder, committed_cents: Some(committed), realised_cents: Some(realised), settled_cents: Some(settled) }
    }
}

prop_compose! {
    /// A dossier complete for AGORA, in any state, with the blocks its state implies.
    fn complete_dossier()(
        state in proptest::sample::select(State::ALL.to_vec()),
        (nir, birth_name, usage_name, first_names, sex, birth, national, postal) in (
            nir(),
            name(),
            proptest::option::of(name()),
            name(),
            prop_oneof![Just(Sex::Male), Just(Sex::Female)],
            date((1950, 1, 1), 18_000),
            proptest::option::of("[A-Za-z0-9]{1,40}"),
            "[0-9]{5}",
        ),
        (numbers, title, formacode, certification, siret) in (
            (intercarif(), intercarif(), intercarif()),
            "[A-Za-z0-9][A-Za-z0-9 éèàç'()-]{0,120}",
            "[0-9]{5}",
            proptest::option::of(prop_oneof!["RNCP[0-9]{1,6}", "RS[0-9]{1,6}"]),
            siret(),
        ),
        (start, lengths, hours, updated) in (
            date((2017, 1, 1), 2_500),
            (0u32..400, 0u32..15, 0u32..400),
            (proptest::option::of(0u32..2000), 0u32..2000),
            date((2017, 1, 1), 3_000),
        ),
        fundings in proptest::collection::vec(funding(), 1..4),
        exit in (proptest::sample::select(ExitReason::ALL.to_vec()),
                 proptest::option::of(proptest::sample::select(CertificationResult::ALL.to_vec())),
                 0u32..3000),
        (initiator, reason) in (
            proptest::sample::select(Initiator::ALL.to_vec()),
            proptest::option::of("[A-Za-z][A-Za-z ]{0,60}"),
        ),
    ) -> Dossier {
        let (len, entry_after, exit_after) = lengths;
        let end = start + chrono::Duration::days(i64::from(len));
        let entry_date = start + chrono::Duration::days(i64::from(entry_after));
        let entered = matches!(state, State::Entered | State::Exited | State::ServiceDone | State::Settled);
        let exited = matches!(state, State::Exited | State::ServiceDone | State::Settled);
        Dossier {
            sources: vec![SourceRef { system: System::AtexoSem, id: "PDL-1".into(), version: Some(1), updated_on: Some(updated) }],
            state,
            dispositif: Some(Dispositif { code: "PRF-QUALIF".into(), label: None, agora: Some(true) }),
            category: None,
            programme: None,
            consultation: Some(Consultation { number: "2018-045".into(), lot: None }),
            trainee: Trainee {
                nir: Nir::new(nir),
                birth_name: Some(birth_name),
                usage_name,
                first_names: Some(first_names),
                sex: Some(sex),
                birth_date: Some(Personal::new(birth)),
                pole_emploi_id: national.map(|n| crate::canonical::PoleEmploiId { national: Some(n), ..Default::default() }),
                postal_code: Some(postal),
                commune_insee: None,
            },
            training: Training {
                numero_formation: Some(numbers.0),
                numero_action: Some(numbers.1),
                numero_session: numbers.2,
                title: Some(title),
                formacode: Some(Formacode { code: formacode, version: "V12".into() }),
                certification,
            },
            provider: Some(Provider { siret: Some(siret), nda: None, name: None }),
            session: Some(Session { start, end, hours_centre: hours.0, hours_company: Some(hours.1) }),
            entry: entered.then_some(Entry { date: entry_date }),
            exit: exited.then(|| Exit {
                date: entry_date + chrono::Duration::days(i64::from(exit_after)),
                reason: exit.0,
                result: exit.1,
                hours_done: Some(exit.2),
            }),
            fundings,
            cancellation: (state == State::Cancelled).then(|| Cancellation { date: start, initiator, reason: reason.clone() }),
            refusal: (state == State::Refused).then_some(Refusal { reason }),
            orientation: None,
            registration: None,
        }
    }
}

/// The operations that bring a new AGORA dossier to the dossier's target.
fn owed(state: State) -> Vec<Operation> {
    match planner::target(state) {
        Target::CancelIfPresent => vec![Operation::Cancel],
        _ => planner::plan(
            &Delivered::Present {
                numero_agora: "AG-1".into(),
                state: AgoraState::Cree,
            },
            state,
        )
        .unwrap_or_default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A dossier the rules accept encodes to bodies AGORA's schemas accept, and back.
    #[test]
    fn complete_dossiers_encode_to_valid_bodies_and_round_trip(d in complete_dossier()) {
        prop_assert_eq!(rules::validate(&d, System::Agora, &RuleSettings::default())
            .into_iter().filter(|v| v.rule != Rule::DateBirth).collect::<Vec<_>>(), vec![]);
        prop_assert_eq!(missing_for_agora(&d), vec![]);

        let body = encode_dossier(ID, &d).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let json = serde_json::to_value(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(check_schema(SchemaId::AgoraDossier, &json), vec![]);
        prop_assert_eq!(body.stagiaire.nir13.expose().len(), 13);
        let bytes = serde_json::to_vec(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_dossier_body(&bytes), Ok(body));

        for o in owed(d.state) {
            let t = encode_transition(o, &d).map_err(|e| TestCaseError::fail(format!("{o:?} {e:?}")))?;
            let bytes = serde_json::to_vec(&t).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode_transition(o, &bytes), Ok(t));
        }

        let etat = match planner::target(d.state) {
            Target::State(s) => Some(s),
            Target::CancelIfPresent => Some(AgoraState::Annule),
            Target::Nothing => None,
        };
        if let Some(etat) = etat {
            let line = encode_reprise_line(ID, &d, etat).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let mut lot = RepriseLot::new();
            prop_assert_eq!(lot.push(&line), Ok(Fill::Room));
            let bytes = lot.into_bytes();
            let decoded = decode_reprise_lot(&bytes);
            prop_assert_eq!(decoded.len(), 1);
            prop_assert_eq!(decoded[0].1.as_ref().ok(), Some(&line));
        }
    }

    /// Dropping fields never panics: either the body is complete and valid, or every violation is
    /// a missing field or block, named by a canonical pointer of the mapping table.
    #[test]
    fn incomplete_dossiers_say_what_they_lack(d in complete_dossier(), mask in any::<u16>()) {
        let mut d = d;
        let drop = |bit: u32| mask & (1 << bit) != 0;
        if drop(0) { d.fundings.clear(); }
        if drop(1) { d.session = None; }
        if drop(2) { d.trainee.birth_name = None; }
        if drop(3) { d.trainee.sex = None; }
        if drop(4) { d.training.formacode = None; }
        if drop(5) { d.provider = None; }
        if drop(6) { d.dispositif = None; }
        if drop(7) { d.entry = None; }
        if drop(8) { d.exit = None; }
        if drop(9) { d.cancellation = None; }
        if drop(10) { d.trainee.postal_code = Some(String::new()); }
        if drop(11) { if let Some(f) = d.fundings.first_mut() { f.settled_cents = None; } }
        if drop(12) { if let Some(s) = d.session.as_mut() { s.hours_centre = None; s.hours_company = None; } }
        for v in missing_for_agora(&d) {
            prop_assert!(matches!(v.rule, Rule::FieldRequired | Rule::StatusRequired), "{v:?}");
            prop_assert!(mapping::TABLE.locate(&v.pointer).is_some(), "{v:?}");
        }
        match encode_dossier(ID, &d) {
            Ok(body) => {
                let json = serde_json::to_value(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(check_schema(SchemaId::AgoraDossier, &json), vec![]);
            }
            Err(e) => prop_assert!(e.iter().all(|v| matches!(v.rule, Rule::FieldRequired | Rule::StatusRequired)), "{e:?}"),
        }
        let missing = missing_for_agora(&d);
        if missing.is_empty() {
            for o in owed(d.state) {
                prop_assert!(encode_transition(o, &d).is_ok(), "{o:?}");
            }
        }
    }

    /// Garbage in, a typed answer out: never a panic, never a quoted value.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), status in 100u16..600, ra in proptest::option::of(".{0,30}")) {
        for o in Operation::ALL {
            let outcome = decode_answer_at(o, status, ra.as_deref(), &bytes, now());
            if let Outcome::Unexpected { detail, .. } = &outcome {
                prop_assert!(detail.len() < 200);
            }
            let _ = decode_transition(o, &bytes);
        }
        let _ = decode_dossier_body(&bytes);
        let _ = decode_reprise_line(&bytes);
        let _ = decode_reprise_lot(&bytes);
        let _ = decode_reprise_report(&bytes);
        let _ = decode_lot_accepted(&bytes);
    }

    /// Near-miss JSON: a valid body with one value replaced by an arbitrary JSON scalar.
    #[test]
    fn near_miss_bodies_are_refused_without_quoting(field in 0usize..8, value in prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(|s| json!(format!("SECRET{s}"))),
        Just(Value::Null),
        Just(json!([])),
    ]) {
        let mut v = fixture_json("valid/dossier.json");
        let targets = [
            "/stagiaire/nir13", "/stagiaire/date_naissance", "/financements/0/montant_engage_cents",
            "/formation/heures_prevues", "/stagiaire/sexe", "/financeur/code", "/formation/formacode",
            "/formation/date_debut",
        ];
        if let Some(slot) = v.pointer_mut(targets[field]) { *slot = value; }
        if let Err(violations) = decode_dossier_body(v.to_string().as_bytes()) {
            for x in &violations {
                prop_assert!(!x.detail.contains("SECRET"), "{x:?}");
            }
        }
    }
}
