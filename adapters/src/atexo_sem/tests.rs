//! Tests of the ATEXO SEM adapter: fixtures (snapshots of the canonical output and of the error
//! lists), encodings, perimeter, the round trip `decode(encode(x)) == x` as a property, and inputs
//! that must not panic.
//!
//! The fixtures are written by `tests/fixtures/atexo_sem/make_fixtures.py`; snapshots live in
//! `snapshots/` next to this file (`INSTA_UPDATE=always` to rewrite, then read them).

use super::*;
use crate::canonical::{Cancellation, Nir};
use crate::rules::identifiers::FUNDER_CODES;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/atexo_sem")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn stem(p: &Path) -> String {
    p.file_stem().expect("stem").to_string_lossy().into_owned()
}

fn decode_file(p: &Path, flow: Flow) -> Vec<Result<SemDossier, DossierError>> {
    let bytes = std::fs::read(p).expect("fixture");
    decode_stream(bytes.as_slice(), flow, &DecodeSettings::default()).collect()
}

fn perimeter_json(p: &Perimeter) -> Value {
    match p {
        Perimeter::In => json!("in"),
        Perimeter::Out(OutOfPerimeter::Category(c)) => json!({"out": "category", "category": c}),
        Perimeter::Out(o) => json!({"out": o.code()}),
    }
}

fn item_json(item: &Result<SemDossier, DossierError>) -> Value {
    match item {
        Ok(d) => json!({
            "index": d.index, "id": d.id, "version": d.version,
            "perimeter": perimeter_json(&d.perimeter), "dossier": d.dossier,
        }),
        Err(e) => json!({
            "index": e.index, "id": e.id, "fatal": e.fatal, "violations": e.violations,
        }),
    }
}

#[test]
fn valid_fixtures_decode_to_their_snapshots() {
    for path in fixtures("valid") {
        let items = decode_file(&path, Flow::Sync);
        for item in &items {
            assert!(item.is_ok(), "{}: {item:?}", path.display());
        }
        let value: Vec<Value> = items.iter().map(item_json).collect();
        insta::assert_json_snapshot!(format!("valid__{}", stem(&path)), value);
    }
}

#[test]
fn every_state_has_a_valid_fixture() {
    let mut seen = Vec::new();
    for path in fixtures("valid") {
        for item in decode_file(&path, Flow::Sync) {
            seen.push(item.expect("valid").dossier.state);
        }
    }
    for state in State::ALL {
        if state != State::Prescribed {
            assert!(seen.contains(&state), "no valid fixture in state {state:?}");
        }
    }
}

#[test]
fn invalid_fixtures_give_their_snapshot_errors() {
    for path in fixtures("invalid") {
        let items = decode_file(&path, Flow::Sync);
        assert!(
            items.iter().any(Result::is_err),
            "{} decoded without error",
            path.display()
        );
        let value: Vec<Value> = items
            .iter()
            .map(|i| match i {
                // A good dossier beside a bad one: its id says enough.
                Ok(d) => json!({"index": d.index, "id": d.id, "valid": true}),
                Err(_) => item_json(i),
            })
            .collect();
        insta::assert_json_snapshot!(format!("invalid__{}", stem(&path)), value);
    }
}

/// The rule each invalid fixture exists for (its file name, up to a variant suffix).
#[test]
fn each_invalid_fixture_raises_its_rule() {
    let expected: &[(&str, Rule)] = &[
        ("nir_checksum", Rule::NirChecksum),
        ("nir_length", Rule::NirLength),
        ("nir_format", Rule::NirFormat),
        ("siret_luhn", Rule::SiretLuhn),
        ("siret_format", Rule::SiretFormat),
        ("date_format", Rule::DateFormat),
        ("amount_format", Rule::AmountFormat),
        ("boolean_format", Rule::BooleanFormat),
        ("enum_value", Rule::EnumValue),
        ("enum_value_etat", Rule::EnumValue),
        ("enum_value_sexe", Rule::EnumValue),
        ("number_format", Rule::NumberFormat),
        ("field_required", Rule::FieldRequired),
        ("field_required_blocks", Rule::FieldRequired),
        ("date_exit", Rule::DateExit),
        ("date_entry", Rule::DateEntry),
        ("date_birth", Rule::DateBirth),
        ("date_session", Rule::DateSession),
        ("date_cancellation", Rule::DateCancellation),
        ("status_required", Rule::StatusRequired),
        ("status_required_solde", Rule::StatusRequired),
        ("funder_code", Rule::FunderCode),
        ("formacode_version", Rule::FormacodeVersion),
        ("formacode_format", Rule::FormacodeFormat),
        ("certification_format", Rule::CertificationFormat),
        ("intercarif_format", Rule::IntercarifFormat),
        ("postal_insee_format", Rule::PostalCodeFormat),
        ("postal_insee_format", Rule::InseeFormat),
        ("xml_unexpected", Rule::XmlUnexpected),
        ("entity_unknown", Rule::XmlSyntax),
        ("one_bad_among_good", Rule::NirChecksum),
        ("xml_syntax", Rule::XmlSyntax),
        ("xml_syntax_truncated", Rule::XmlSyntax),
        ("xml_root", Rule::XmlRoot),
        ("xml_encoding_declared", Rule::XmlEncoding),
        ("xml_encoding_ebcdic", Rule::XmlEncoding),
        ("xml_encoding_bytes", Rule::XmlEncoding),
        ("xml_encoding_mismatch", Rule::XmlEncodingMismatch),
        ("xml_doctype", Rule::XmlDoctype),
        ("entity_bomb", Rule::XmlDoctype),
    ];
    let files = fixtures("invalid");
    for path in &files {
        let name = stem(path);
        assert!(
            expected.iter().any(|(n, _)| *n == name),
            "{name} has no expected rule"
        );
    }
    for (name, rule) in expected {
        let path = files
            .iter()
            .find(|p| stem(p) == *name)
            .unwrap_or_else(|| panic!("no fixture {name}"));
        let rules: Vec<Rule> = decode_file(path, Flow::Sync)
            .into_iter()
            .filter_map(Result::err)
            .flat_map(|e| e.violations)
            .map(|v| v.rule)
            .collect();
        assert!(rules.contains(rule), "{name}: {rules:?} lacks {rule:?}");
    }
}

/// Personal values of the fixtures (NIRs, names, birth dates) never appear in an error.
#[test]
fn errors_never_quote_personal_values() {
    let personal = [
        "1850775123456",
        "18507751234",
        "3850775123456",
        "DUPONT",
        "Jean",
        "Pierre",
        "LEF",
        "12/07/1985",
        "12/07/2012",
        "1985",
    ];
    for path in fixtures("invalid") {
        for e in decode_file(&path, Flow::Sync)
            .into_iter()
            .filter_map(Result::err)
        {
            for v in &e.violations {
                for p in personal {
                    assert!(
                        !v.detail.contains(p) && !v.pointer.contains(p),
                        "{}: {v}",
                        path.display()
                    );
                }
            }
        }
    }
}

/// Every path a violation names is one of the mapping table's (or an element the format refuses):
/// the table and the decoder speak of the same fields.
#[test]
fn violation_paths_are_those_of_the_mapping_table() {
    let known: Vec<&str> = mapping::TABLE.rows.iter().map(|r| r.system).collect();
    for path in fixtures("invalid") {
        for e in decode_file(&path, Flow::Sync)
            .into_iter()
            .filter_map(Result::err)
        {
            for v in &e.violations {
                if e.index == 0 || e.fatal || v.rule == Rule::XmlUnexpected {
                    continue;
                }
                let prefix = format!("/exportSEM/dossier[{}]/", e.index);
                let rel = v
                    .pointer
                    .strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{v} lacks {prefix}"));
                let generic: String = {
                    // financement[2] → financement[*]
                    let mut out = String::new();
                    let mut in_index = false;
                    for c in rel.chars() {
                        match c {
                            '[' => {
                                in_index = true;
                                out.push_str("[*");
                            }
                            ']' => {
                                in_index = false;
                                out.push(']');
                            }
                            _ if in_index => {}
                            c => out.push(c),
                        }
                    }
                    out
                };
                assert!(
                    known.contains(&generic.as_str()),
                    "{}: {rel} is not in the mapping table",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn one_bad_dossier_leaves_the_others_decoded() {
    let path = fixtures("invalid")
        .into_iter()
        .find(|p| stem(p) == "one_bad_among_good")
        .expect("fixture");
    let items = decode_file(&path, Flow::Sync);
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().expect("first").id, "PDL-2019-000401");
    let bad = items[1].as_ref().expect_err("second");
    assert_eq!(
        (bad.index, bad.id.as_deref(), bad.fatal),
        (2, Some("PDL-2019-000402"), false)
    );
    assert_eq!(
        bad.violations[0].pointer,
        "/exportSEM/dossier[2]/stagiaire/nir"
    );
    assert_eq!(items[2].as_ref().expect("third").id, "PDL-2019-000403");

    // The same document posted: rejected whole, every violation listed.
    let bytes = std::fs::read(&path).expect("fixture");
    let err = decode_document(&bytes, Flow::Sync, &DecodeSettings::default())
        .expect_err("rejected whole");
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].rule, Rule::NirChecksum);
}

#[test]
fn latin1_with_windows_1252_characters_decodes_to_unicode() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| stem(p) == "latin1")
        .expect("fixture");
    let raw = std::fs::read(&path).expect("fixture");
    assert!(raw.contains(&0x9C) && raw.contains(&0x80) && raw.contains(&0xC8));
    let items = decode_file(&path, Flow::Sync);
    let d = &items[0].as_ref().expect("valid").dossier;
    let t = &d.trainee;
    assert_eq!(
        t.birth_name.as_ref().map(|n| n.expose().as_str()),
        Some("LEFÈVRE")
    );
    assert_eq!(
        t.usage_name.as_ref().map(|n| n.expose().as_str()),
        Some("NOËL")
    );
    assert_eq!(
        t.first_names.as_ref().map(|n| n.expose().as_str()),
        Some("Hélène François")
    );
    assert_eq!(
        d.dispositif.as_ref().and_then(|x| x.label.as_deref()),
        Some("Cœur de métier’s 100 €")
    );
}

#[test]
fn encodings_of_the_prolog() {
    let settings = DecodeSettings::default();
    let utf8 = std::fs::read(&fixtures("valid")[0]).expect("fixture");
    let body = String::from_utf8(utf8).expect("utf-8");
    let with = |decl: &str| body.replacen("encoding=\"UTF-8\"", decl, 1);
    for ok in [
        "encoding=\"utf-8\"",
        "encoding='UTF-8'",
        "encoding = \"utf8\"",
        "encoding=\"iso-8859-1\"",
        "encoding=\"latin1\"",
        "standalone=\"yes\"",
    ] {
        let doc = with(ok);
        // A document declared ISO-8859-1 must carry ISO-8859-1 bytes (see `mojibake`).
        let bytes = if ok.contains("iso") || ok.contains("latin") {
            encoding_rs::WINDOWS_1252.encode(&doc).0.into_owned()
        } else {
            doc.into_bytes()
        };
        let items: Vec<_> = decode_stream(bytes.as_slice(), Flow::Sync, &settings).collect();
        assert!(items.iter().all(Result::is_ok), "{ok}: {items:?}");
    }
    // A UTF-8 byte order mark.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(body.as_bytes());
    assert!(decode_stream(bom.as_slice(), Flow::Sync, &settings).all(|i| i.is_ok()));
    // UTF-16 by its byte order mark.
    let items: Vec<_> = decode_stream(&b"\xFF\xFE<\0?\0"[..], Flow::Sync, &settings).collect();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().expect_err("utf-16").violations[0].rule,
        Rule::XmlEncoding
    );
}

#[test]
fn an_entity_bomb_is_refused_at_once() {
    // A larger bomb than the fixture's: nothing is expanded, so size does not matter.
    let mut doc =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE exportSEM [<!ENTITY a \"aaaaaaaaaa\">");
    for i in 0..50 {
        doc.push_str(&format!(
            "<!ENTITY b{i} \"{}\">",
            if i == 0 {
                "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;".to_string()
            } else {
                format!("&b{};", i - 1).repeat(10)
            }
        ));
    }
    doc.push_str("]>\n<exportSEM><dossier id=\"x\">&b49;</dossier></exportSEM>");
    let start = std::time::Instant::now();
    let items: Vec<_> =
        decode_stream(doc.as_bytes(), Flow::Sync, &DecodeSettings::default()).collect();
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(items.len(), 1);
    let e = items[0].as_ref().expect_err("refused");
    assert!(e.fatal);
    assert_eq!(e.violations[0].rule, Rule::XmlDoctype);
}

#[test]
fn perimeter_depends_on_flag_category_and_flow() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| stem(p) == "mixed")
        .expect("fixture");
    let perimeters = |flow| -> Vec<Perimeter> {
        decode_file(&path, flow)
            .into_iter()
            .map(|i| i.expect("valid").perimeter)
            .collect()
    };
    use OutOfPerimeter as O;
    assert_eq!(
        perimeters(Flow::Sync),
        vec![
            Perimeter::In,
            Perimeter::Out(O::AgoraFlag),
            Perimeter::Out(O::Category("SANITAIRE_SOCIAL".into())),
            Perimeter::In,
            Perimeter::In,
        ]
    );
    assert_eq!(
        perimeters(Flow::Backfill)[3],
        Perimeter::Out(O::SessionBeforeBackfillStart)
    );
}

#[test]
fn fundings_keep_document_order_and_cents() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| stem(p) == "mixed")
        .expect("fixture");
    let items = decode_file(&path, Flow::Sync);
    let d = &items[0].as_ref().expect("valid").dossier;
    let f: Vec<(u8, Option<i64>)> = d
        .fundings
        .iter()
        .map(|f| (f.funder, f.committed_cents))
        .collect();
    assert_eq!(
        f,
        vec![(2, Some(300_000)), (4, Some(123_450)), (16, Some(1_200))]
    );
    assert_eq!(d.main_funding().map(|f| f.funder), Some(2));
}

#[test]
fn amounts_dates_and_flags() {
    for (s, c) in [
        ("1234,56", 123_456),
        ("4520,00", 452_000),
        ("12", 1_200),
        ("0,5", 50),
        ("0", 0),
        ("007,01", 701),
    ] {
        assert_eq!(parse_cents(s), Ok(c), "{s}");
    }
    for bad in [
        "1234,567",
        "-12,00",
        "12.50",
        "1 200",
        "",
        ",5",
        "12,",
        "1e3",
        "١٢",
        "99999999999999999",
        "+1",
    ] {
        assert!(parse_cents(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_date("29/02/2020"),
        NaiveDate::from_ymd_opt(2020, 2, 29)
    );
    for bad in [
        "29/02/2019",
        "2019-12-20",
        "1/2/2019",
        "ab/cd/efgh",
        "31/04/2019",
        "é1/02/2019",
    ] {
        assert_eq!(parse_date(bad), None, "{bad}");
    }
    assert_eq!(fmt_cents(123_456), "1234,56");
    assert_eq!(fmt_cents(5), "0,05");
    assert_eq!(parse_flag("O"), Some(true));
    assert_eq!(parse_flag("o"), None);
    for s in State::ALL {
        assert_eq!(
            etat_of(s).and_then(state_from_etat),
            (s != State::Prescribed).then_some(s)
        );
    }
}

#[test]
fn the_return_to_atexo_is_escaped() {
    let r = AgoraReturn {
        dossier: "PDL-2019-000123".into(),
        numero_agora: Some("AG<1>".into()),
        etat: Some(AgoraState::Entre),
        date: NaiveDate::from_ymd_opt(2019, 9, 3).expect("date"),
        anomalies: vec![
            Anomaly {
                code: "AG-042".into(),
                champ: Some("stagiaire.nir13".into()),
                libelle: Some("NIR \"inconnu\" & <refusé>\u{1}".into()),
            },
            Anomaly {
                code: "AG-1".into(),
                champ: None,
                libelle: None,
            },
        ],
    };
    let xml = encode_return(&r);
    insta::assert_snapshot!("return_with_anomalies", xml);
    // It is well-formed and says what it should.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut texts = Vec::new();
    loop {
        match reader.read_event().expect("well-formed") {
            quick_xml::events::Event::Text(t) => {
                let t = t.unescape().expect("text");
                if !t.trim().is_empty() {
                    texts.push(t.into_owned());
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(
        texts,
        vec!["NIR \"inconnu\" & <refusé>\u{FFFD}".to_string()]
    );
    let bare = AgoraReturn {
        numero_agora: None,
        etat: None,
        anomalies: vec![],
        ..r
    };
    assert_eq!(
        encode_return(&bare),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<retourAgora dossier=\"PDL-2019-000123\" date=\"03/09/2019\"/>\n"
    );
}

#[test]
fn encode_refuses_what_atexo_cannot_say() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| stem(p) == "entre")
        .expect("fixture");
    let mut d = decode_file(&path, Flow::Sync)
        .remove(0)
        .expect("valid")
        .dossier;
    d.state = State::Prescribed;
    let err = encode_export([&d], Vec::new()).expect_err("prescribed");
    assert!(matches!(err, EncodeError::Unrepresentable { index: 1, .. }));
    d.state = State::Entered;
    d.sources[0].system = System::Ouiform;
    assert!(encode_export([&d], Vec::new()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Inputs that must not panic
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes: an error or dossiers, never a panic, and the stream ends.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let n = decode_stream(bytes.as_slice(), Flow::Backfill, &DecodeSettings::default()).take(1000).count();
        prop_assert!(n < 1000);
    }

    /// A valid export with bytes overwritten or cut: never a panic.
    #[test]
    fn mutated_exports_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        latin1 in any::<bool>(),
    ) {
        let mut doc = std::fs::read(&fixtures("valid")[if latin1 { 3 } else { 5 }]).expect("fixture");
        for (at, b) in edits {
            let i = at.index(doc.len());
            doc[i] = b;
        }
        doc.truncate(cut.index(doc.len() + 1));
        let _ = decode_document(&doc, Flow::Sync, &DecodeSettings::default());
    }
}

// ---------------------------------------------------------------------------------------------
// Round trip: decode(encode(x)) == x over valid canonical dossiers
// ---------------------------------------------------------------------------------------------

/// Text as ATEXO can carry it: no leading or trailing whitespace (values are trimmed), markup
/// characters and non-ASCII inside to exercise escaping and UTF-8.
fn text() -> impl Strategy<Value = String> {
    "[A-Za-zéèçëœ’€&<>\"'0-9][A-Za-zéèçëœ’€&<>\"' \t\n0-9-]{0,20}[A-Za-zé&<>\"'0-9]"
}

fn code() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9_-]{0,14}"
}

fn intercarif() -> impl Strategy<Value = String> {
    "[0-9A-Za-z_-]{1,25}"
}

fn date_between(from: (i32, u32, u32), days: i64) -> impl Strategy<Value = NaiveDate> {
    let base = NaiveDate::from_ymd_opt(from.0, from.1, from.2).expect("date");
    (0..days).prop_map(move |d| base + chrono::Duration::days(d))
}

/// A NIR with a valid structure, 13 characters or 15 with its key.
fn nir() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!['1', '2']),
        0u32..100,
        1u32..13,
        prop::sample::select(vec!["01", "44", "75", "2A", "2B", "95", "976"]),
        0u32..1000,
        0u32..1000,
        any::<bool>(),
    )
        .prop_map(|(sex, year, month, dept, commune, order, key)| {
            // Overseas departments take three digits and a two-digit commune.
            let place = if dept.len() == 3 {
                format!("{dept}{:02}", commune % 100)
            } else {
                format!("{dept}{commune:03}")
            };
            let n13 = format!("{sex}{year:02}{month:02}{place}{order:03}");
            if !key {
                return n13;
            }
            let numeric = n13.replace("2A", "19").replace("2B", "18");
            let value: u64 = numeric.parse().expect("digits");
            format!("{n13}{:02}", 97 - value % 97)
        })
}

/// A SIRET with its Luhn digit.
fn siret() -> impl Strategy<Value = String> {
    "[0-9]{13}".prop_map(|s| {
        for last in 0..10 {
            let candidate = format!("{s}{last}");
            if crate::rules::identifiers::siret(&candidate).is_ok() {
                return candidate;
            }
        }
        unreachable!("one Luhn digit always fits")
    })
}

fn amount() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(0i64..10_000_000_000_000)
}

fn funding() -> impl Strategy<Value = Funding> {
    (
        prop::sample::select(FUNDER_CODES.iter().map(|(c, _)| *c).collect::<Vec<u8>>()),
        amount(),
        amount(),
        amount(),
    )
        .prop_map(|(funder, c, r, s)| Funding {
            funder,
            committed_cents: c,
            realised_cents: r,
            settled_cents: s,
        })
}

const ATEXO_STATES: [State; 8] = [
    State::Registered,
    State::Validated,
    State::Entered,
    State::Exited,
    State::ServiceDone,
    State::Settled,
    State::Refused,
    State::Cancelled,
];

prop_compose! {
    fn trainee()(
        nir in nir(),
        birth_name in text(),
        usage_name in prop::option::of(text()),
        first_names in text(),
        sex in prop::sample::select(vec![Sex::Male, Sex::Female]),
        pe in prop::option::of((text(), prop::option::of("[0-9]{7}[A-Z]"), prop::option::of("[0-9]{3}"))),
        postal_code in prop::option::of("[0-9]{5}"),
        commune_insee in prop::option::of("(2A|2B|[0-9]{2})[0-9]{3}"),
    ) -> Trainee {
        Trainee {
            nir: Nir::new(nir),
            birth_name: Some(Personal::new(birth_name)),
            usage_name: usage_name.map(Personal::new),
            first_names: Some(Personal::new(first_names)),
            sex: Some(sex),
            birth_date: None,
            pole_emploi_id: pe.map(|(national, regional, geo_code)| PoleEmploiId {
                national: Some(national),
                regional,
                geo_code,
            }),
            postal_code,
            commune_insee,
        }
    }
}

prop_compose! {
    fn training()(
        numero_formation in prop::option::of(intercarif()),
        numero_action in prop::option::of(intercarif()),
        numero_session in intercarif(),
        title in prop::option::of(text()),
        formacode in prop::option::of(("[0-9]{5}", "V[0-9]{1,3}")),
        certification in prop::option::of("(RNCP|RS)[0-9]{1,8}"),
    ) -> Training {
        Training {
            numero_formation,
            numero_action,
            numero_session,
            title,
            formacode: formacode.map(|(code, version)| Formacode { code, version }),
            certification,
        }
    }
}

prop_compose! {
    fn dossier()(
        id in "[A-Z]{3}-[0-9]{4}-[0-9]{6}",
        version in any::<u64>(),
        updated_on in prop::option::of(date_between((2015, 1, 1), 4000)),
        state in prop::sample::select(ATEXO_STATES.to_vec()),
        dispositif in (code(), prop::option::of(text()), prop::option::of(any::<bool>())),
        category in prop::option::of(code()),
        programme in prop::option::of(code()),
        consultation in prop::option::of((code(), prop::option::of("[0-9]{1,3}"))),
        trainee in trainee(),
        training in training(),
        provider in prop::option::of((siret(), prop::option::of("[0-9]{11}"), prop::option::of(text()))),
        start in date_between((2012, 1, 1), 5000),
        length in 0i64..400,
        hours in (prop::option::of(0u32..2000), prop::option::of(any::<u32>())),
        age_days in (15 * 366i64)..(90 * 365),
        entry_offset in -30i64..30,
        exit_offset in 0i64..400,
        exit in (prop::sample::select(ExitReason::ALL.to_vec()),
                 prop::option::of(prop::sample::select(CertificationResult::ALL.to_vec())),
                 prop::option::of(any::<u32>())),
        fundings in proptest::collection::vec(funding(), 1..4),
        cancel in (0i64..60, prop::sample::select(Initiator::ALL.to_vec()), prop::option::of(text())),
        settled in (0i64..1_000_000, 0i64..1_000_000),
    ) -> Dossier {
        let (mut trainee, mut fundings) = (trainee, fundings);
        trainee.birth_date = Some(Personal::new(start - chrono::Duration::days(age_days)));
        let entered = matches!(state, State::Entered | State::Exited | State::ServiceDone | State::Settled);
        let exited = matches!(state, State::Exited | State::ServiceDone | State::Settled);
        let entry_date = start + chrono::Duration::days(entry_offset);
        if state == State::Settled {
            fundings[0].realised_cents = Some(settled.0);
            fundings[0].settled_cents = Some(settled.1);
        }
        Dossier {
            sources: vec![SourceRef { system: System::AtexoSem, id, version: Some(version), updated_on }],
            state,
            dispositif: Some(Dispositif { code: dispositif.0, label: dispositif.1, agora: dispositif.2 }),
            category,
            programme,
            consultation: consultation.map(|(number, lot)| Consultation { number, lot }),
            trainee,
            training,
            provider: provider.map(|(siret, nda, name)| Provider { siret: Some(siret), nda, name }),
            session: Some(Session {
                start,
                end: start + chrono::Duration::days(length),
                hours_centre: hours.0,
                hours_company: hours.1,
            }),
            entry: entered.then_some(Entry { date: entry_date }),
            exit: exited.then(|| Exit {
                date: entry_date + chrono::Duration::days(exit_offset),
                reason: exit.0,
                result: exit.1,
                hours_done: exit.2,
            }),
            fundings,
            cancellation: (state == State::Cancelled).then(|| Cancellation {
                date: start - chrono::Duration::days(cancel.0),
                initiator: cancel.1,
                reason: cancel.2,
            }),
            refusal: None,
            orientation: None,
            registration: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity(dossiers in proptest::collection::vec(dossier(), 1..4)) {
        let mut xml = Vec::new();
        encode_export(&dossiers, &mut xml).expect("encodes");
        let back = decode_document(&xml, Flow::Sync, &DecodeSettings::default());
        let back = match back {
            Ok(b) => b,
            Err(e) => {
                return Err(TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&xml))));
            }
        };
        let back: Vec<Dossier> = back.into_iter().map(|d| d.dossier).collect();
        prop_assert_eq!(back, dossiers);
    }
}

// ---------------------------------------------------------------------------------------------
// Masking for the journal
// ---------------------------------------------------------------------------------------------

const UTF8_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// Step 1 alone (XML → raw strings) over a whole export: the masked export is compared on it,
/// since a masked NIR or birth date never passes step 2.
fn raw_export(bytes: &[u8]) -> (RawExport, Vec<RawDossier>) {
    let (source, latin1) = open(bytes).expect("an accepted prolog");
    let mut rd = Reader::from_reader(source);
    let config = rd.config_mut();
    config.trim_text(true);
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut buf = Vec::new();
    let mut sc = Scratch::default();
    sc.latin1 = latin1;
    let mut header = RawExport::default();
    let mut dossiers = Vec::new();
    loop {
        buf.clear();
        let (start, e) = match rd.read_event_into(&mut buf).expect("well-formed") {
            Event::Start(e) => (true, e),
            Event::Empty(e) => (false, e),
            Event::Eof => break,
            _ => continue,
        };
        if e.name().as_ref() == b"exportSEM" {
            attrs(&e, &mut sc, &mut header, export_slot).expect("attributes");
            continue;
        }
        assert_eq!(e.name().as_ref(), b"dossier");
        let mut raw = RawDossier::default();
        attrs(&e, &mut sc, &mut raw, dossier_slot).expect("attributes");
        drop(e);
        if start {
            read_dossier(&mut rd, &mut buf, &mut sc, &mut raw).expect("a dossier");
        }
        dossiers.push(raw);
    }
    // Violations name paths only, never values.
    assert!(sc.issues.is_empty(), "{:?}", sc.issues);
    (header, dossiers)
}

/// The personal values of a raw dossier, as read.
fn personal_values(d: &RawDossier) -> Vec<String> {
    let Some(t) = &d.stagiaire else {
        return Vec::new();
    };
    let pe = t.identifiant_pe.clone().unwrap_or_default();
    [
        &t.nir,
        &t.nom_naissance,
        &t.nom_usage,
        &t.prenoms,
        &t.date_naissance,
        &pe.national,
        &pe.regional,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

/// What masking should make of a raw dossier: each personal value present becomes its
/// identifier's mask, an absent one stays absent, nothing else changes.
fn masked_raw(mut d: RawDossier) -> RawDossier {
    use crate::canonical::Identifier;
    let mask = |v: &mut Option<String>, identifier: Identifier| {
        if let Some(value) = v.as_mut() {
            *value = identifier.mask(value);
        }
    };
    if let Some(t) = d.stagiaire.as_mut() {
        mask(&mut t.nir, Identifier::Nir);
        for v in [&mut t.nom_naissance, &mut t.nom_usage, &mut t.prenoms] {
            mask(v, Identifier::Name);
        }
        mask(&mut t.date_naissance, Identifier::BirthDate);
        if let Some(p) = t.identifiant_pe.as_mut() {
            mask(&mut p.national, Identifier::PoleEmploiId);
            mask(&mut p.regional, Identifier::PoleEmploiId);
        }
    }
    d
}

/// The masked fields, as the decoder's violation pointers name them.
const MASKED_PATHS: [&str; 7] = [
    "stagiaire/nir",
    "stagiaire/nomNaissance",
    "stagiaire/nomUsage",
    "stagiaire/prenoms",
    "stagiaire/dateNaissance",
    "stagiaire/identifiantPE/@national",
    "stagiaire/identifiantPE/@regional",
];

#[test]
fn masked_fixtures_keep_everything_but_the_personal_values() {
    for path in fixtures("valid") {
        let input = std::fs::read(&path).expect("fixture");
        let name = path.display();
        let out = mask_export(&input).unwrap_or_else(|e| panic!("{name}: {e}"));

        // (c) UTF-8, declared so, whatever the input's encoding.
        let text = std::str::from_utf8(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.starts_with(UTF8_DECL), "{name}");
        assert_eq!(text.matches("<?xml").count(), 1, "{name}");

        // (a) No personal value of the input survives, raw or escaped.
        let (header, dossiers) = raw_export(&input);
        let mut personal: Vec<String> = dossiers.iter().flat_map(personal_values).collect();
        assert!(
            personal.len() >= 4 * dossiers.len(),
            "{name}: too few values to check"
        );
        personal.sort();
        personal.dedup();
        for v in &personal {
            assert_ne!(v, crate::canonical::MASK);
            let escaped = quick_xml::escape::escape(v.as_str());
            assert!(
                !text.contains(v.as_str()) && !text.contains(escaped.as_ref()),
                "{name}: a personal value survived masking"
            );
        }

        // (b) Read back: the same root, the same dossiers, field for field, the masked ones being
        // exactly the mask where a value was and absent where none was.
        let (masked_header, masked_dossiers) = raw_export(&out);
        assert_eq!(masked_header, header, "{name}");
        let expected: Vec<RawDossier> = dossiers.into_iter().map(masked_raw).collect();
        assert_eq!(masked_dossiers, expected, "{name}");

        // And through the whole decoder: the same dossiers in the same order, refused only where
        // a masked value cannot pass a rule (a NIR, a date).
        let before = decode_file(&path, Flow::Sync);
        let after: Vec<_> =
            decode_stream(out.as_slice(), Flow::Sync, &DecodeSettings::default()).collect();
        assert_eq!(after.len(), before.len(), "{name}");
        for (b, a) in before.iter().zip(&after) {
            let b = b.as_ref().expect("a valid fixture");
            let (index, id, violations) = match a {
                Ok(d) => (d.index, Some(d.id.clone()), Vec::new()),
                Err(e) => {
                    assert!(!e.fatal, "{name}: {e}");
                    (e.index, e.id.clone(), e.violations.clone())
                }
            };
            assert_eq!((index, id.as_deref()), (b.index, Some(b.id.as_str())));
            let prefix = format!("/exportSEM/dossier[{index}]/");
            for v in &violations {
                let rel = v.pointer.strip_prefix(&prefix).unwrap_or_default();
                assert!(MASKED_PATHS.contains(&rel), "{name}: {v}");
            }
        }
    }
}

#[test]
fn masking_twice_changes_nothing_more() {
    for path in fixtures("valid") {
        let once = mask_export(&std::fs::read(&path).expect("fixture")).expect("masked");
        let twice = mask_export(&once).expect("masked again");
        assert_eq!(
            String::from_utf8_lossy(&twice),
            String::from_utf8_lossy(&once),
            "{}",
            path.display()
        );
    }
}

#[test]
fn only_the_trainee_is_masked_and_empty_values_stay_empty() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!-- SECRET-0 -->
<exportSEM version="1.0">
  <dossier id="X" version="1">
    <autre a="b"><nir>KEPT-1</nir><prenoms>KEPT-2</prenoms><identifiantPE national="KEPT-3"/></autre>
    <stagiaire>
      <nir><![CDATA[SECRET-1]]></nir><nomNaissance>SECRET&amp;2</nomNaissance><nomUsage/><prenoms> &#10; </prenoms><dateNaissance></dateNaissance>
      <x:prenoms xmlns:x="urn:x">SECRET-3</x:prenoms>
      <adresse codePostal="44000"><nir>SECRET-4</nir></adresse>
      <nomUsage><b>SECRET-5</b><!-- x --></nomUsage>
      <identifiantPE codeGeo='0"44'   national='SECRET-6' regional=""/>
      <identifiantPE national="SECRET-7" regional="&#x20;">text &amp; more</identifiantPE>
      <?pi SECRET-8?>
    </stagiaire>
    <categorie>Soudeur &amp; &lt;tuyauteur&gt;</categorie>
  </dossier>
</exportSEM>
"#;
    let out = mask_export(doc.as_bytes()).expect("masked");
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?>

<exportSEM version="1.0">
  <dossier id="X" version="1">
    <autre a="b"><nir>KEPT-1</nir><prenoms>KEPT-2</prenoms><identifiantPE national="KEPT-3"/></autre>
    <stagiaire>
      <nir>S*******</nir><nomNaissance>***</nomNaissance><nomUsage/><prenoms></prenoms><dateNaissance></dateNaissance>
      <x:prenoms xmlns:x="urn:x">***</x:prenoms>
      <adresse codePostal="44000"><nir>S*******</nir></adresse>
      <nomUsage>***</nomUsage>
      <identifiantPE codeGeo='0"44' national="***" regional=""/>
      <identifiantPE national="***" regional="&#x20;">text &amp; more</identifiantPE>
      
    </stagiaire>
    <categorie>Soudeur &amp; &lt;tuyauteur&gt;</categorie>
  </dossier>
</exportSEM>
"#;
    assert_eq!(String::from_utf8_lossy(&out), expected);
}

#[test]
fn latin1_is_masked_to_utf8_as_the_decoder_reads_it() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| stem(p) == "latin1")
        .expect("fixture");
    let out = mask_export(&std::fs::read(&path).expect("fixture")).expect("masked");
    let text = String::from_utf8(out).expect("utf-8");
    // windows-1252's C1 characters, as the decoder reads them, not ISO-8859-1's control codes.
    assert!(text.contains("libelle=\"Cœur de métier’s 100 €\""));
    assert!(!text.contains("LEFÈVRE") && !text.contains("Hélène"));
    assert!(!text.contains("ISO-8859-1"));
}

#[test]
fn mask_refusals() {
    let refused = |doc: &[u8]| mask_export(doc).expect_err("refused");
    let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE exportSEM [<!ENTITY a \"DUPONT\">]>\n\
                <exportSEM><dossier id=\"x\"><stagiaire><nir>&a;</nir></stagiaire></dossier></exportSEM>";
    assert!(matches!(refused(bomb.as_bytes()), MaskError::Doctype));
    assert!(matches!(
        refused(b"\xFF\xFE<\0?\0"),
        MaskError::Encoding(Violation {
            rule: Rule::XmlEncoding,
            ..
        })
    ));
    assert!(matches!(
        refused(b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><exportSEM/>"),
        MaskError::Encoding(_)
    ));
    assert!(matches!(
        refused(b"<retourAgora dossier=\"x\"/>"),
        MaskError::NotAnExport
    ));
    assert!(matches!(
        refused(b"<exportSEM/><exportSEM/>"),
        MaskError::Syntax { .. }
    ));
    assert!(matches!(
        refused(b"<exportSEM/>DUPONT"),
        MaskError::Syntax { .. }
    ));
    assert!(matches!(refused(b""), MaskError::Syntax { .. }));
    assert!(matches!(
        refused(b"<exportSEM><categorie>\xE9</categorie></exportSEM>"),
        MaskError::NotUtf8 { .. }
    ));
    // Inside a masked value the bytes are not copied, so they do not matter.
    assert!(mask_export(b"<exportSEM><stagiaire><nir>\xE9</nir></stagiaire></exportSEM>").is_ok());
}

/// Whatever stops the masking, its message and the messages of its sources quote nothing of the
/// document: tag names, entity names and values alike.
#[test]
fn mask_errors_never_quote_the_document() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| stem(p) == "mixed")
        .expect("fixture");
    let doc = std::fs::read(&path).expect("fixture");
    let mut quoted = vec![
        "DUPONT",
        "Jean",
        "1850775123456",
        "12/07/1985",
        "A1B2C3D4",
        "nir",
        "stagiaire",
        "nomNaissance",
        "PDL",
    ];
    let mut broken: Vec<Vec<u8>> = (0..doc.len())
        .step_by(7)
        .map(|i| doc[..i].to_vec())
        .collect();
    let swap = |from: &str, to: &str| {
        String::from_utf8_lossy(&doc)
            .replacen(from, to, 1)
            .into_bytes()
    };
    broken.push(swap("</nomNaissance>", "</DUPONTX>"));
    broken.push(swap("DUPONT", "&DUPONTY;"));
    broken.push(swap("DUPONT", "&#xDUPONTZ;"));
    broken.push(swap(
        "national=\"A1B2C3D4\"",
        "national=\"A1B2C3D4\" national=\"A1B2C3D4\"",
    ));
    broken.push(swap("national=\"A1B2C3D4\"", "national=A1B2C3D4"));
    broken.push(swap("<dossier ", "<!DOCTYPE DUPONTW><dossier "));
    quoted.extend(["DUPONTX", "DUPONTY", "DUPONTZ", "DUPONTW"]);
    let mut refusals = 0;
    for doc in &broken {
        let Err(e) = mask_export(doc) else {
            continue;
        };
        refusals += 1;
        let mut messages = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            messages.push_str(&s.to_string());
            source = s.source();
        }
        for q in &quoted {
            assert!(!messages.contains(q), "{messages}");
        }
    }
    assert!(refusals > broken.len() / 2, "{refusals} refusals");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes: masked or refused, never a panic; what comes out is UTF-8 behind its declaration.
    #[test]
    fn mask_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(out) = mask_export(&bytes) {
            let text = std::str::from_utf8(&out);
            prop_assert!(text.is_ok_and(|t| t.starts_with(UTF8_DECL)));
        }
    }

    /// A valid export with bytes overwritten or cut: never a panic, and UTF-8 out.
    #[test]
    fn mask_never_panics_on_mutated_exports(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        which in any::<prop::sample::Index>(),
    ) {
        let files = fixtures("valid");
        let mut doc = std::fs::read(which.get(&files)).expect("fixture");
        for (at, b) in edits {
            let i = at.index(doc.len());
            doc[i] = b;
        }
        doc.truncate(cut.index(doc.len() + 1));
        if let Ok(out) = mask_export(&doc) {
            prop_assert!(std::str::from_utf8(&out).is_ok());
        }
    }

    /// Over generated exports (markup characters, tabs and line ends, non-ASCII in the values):
    /// masking changes the personal values and nothing else.
    #[test]
    fn mask_of_encode_changes_only_the_personal_values(
        dossiers in proptest::collection::vec(dossier(), 1..4),
    ) {
        let mut xml = Vec::new();
        encode_export(&dossiers, &mut xml).expect("encodes");
        let out = mask_export(&xml).expect("masked");
        let (header, raw) = raw_export(&xml);
        let (masked_header, masked) = raw_export(&out);
        prop_assert_eq!(masked_header, header);
        let expected: Vec<RawDossier> = raw.into_iter().map(masked_raw).collect();
        prop_assert_eq!(masked, expected);
    }
}
