//! Tests of the decoder against hostile and mislabelled input (issue 18, points 2 and 3): duplicate
//! attributes found by their slot, violations capped per dossier and per document with an explicit
//! `xml.truncated` entry, the deadline, and documents declared ISO-8859-1 that carry UTF-8.
//!
//! No test here measures time: the cost of hostile shapes is measured by
//! `cargo bench -p passerelle-tests --bench hostile`.

use super::*;
use std::time::Duration;

const PROLOG_UTF8: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const PROLOG_LATIN1: &str = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n";

/// The one dossier of the `entre.xml` fixture, as text.
fn dossier() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/atexo_sem/valid/entre.xml"
    );
    let doc = std::fs::read_to_string(path).expect("fixture");
    let start = doc.find("  <dossier").expect("a dossier");
    let end = doc.find("</dossier>").expect("its end") + "</dossier>\n".len();
    doc[start..end].to_string()
}

/// `dossier()` with `from` replaced by `to` (which must be there).
fn dossier_with(from: &str, to: &str) -> String {
    let d = dossier();
    assert!(d.contains(from), "{from}");
    d.replacen(from, to, 1)
}

fn export(prolog: &str, dossiers: &[String]) -> String {
    format!(
        "{prolog}<exportSEM version=\"1.0\" region=\"PDL\" dateExport=\"30/06/2019\">\n{}</exportSEM>\n",
        dossiers.concat()
    )
}

fn decode(bytes: &[u8]) -> Vec<Result<SemDossier, DossierError>> {
    decode_stream(bytes, Flow::Sync, &DecodeSettings::default()).collect()
}

fn errors(items: &[Result<SemDossier, DossierError>]) -> Vec<&DossierError> {
    items.iter().filter_map(|i| i.as_ref().err()).collect()
}

// ---------------------------------------------------------------------------------------------
// Duplicate attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_duplicate_attribute_is_named_by_its_path_and_the_stream_goes_on() {
    let twice = dossier_with(
        "<session dateDebut=\"02/09/2019\"",
        "<session dateDebut=\"02/09/2019\" dateDebut=\"03/09/2019\"",
    );
    // An empty value leaves its slot empty: a duplicate of it is still found.
    let twice_empty = dossier_with(
        "montantRealise=\"\"",
        "montantRealise=\"\" montantRealise=\"\"",
    );
    let doc = export(PROLOG_UTF8, &[twice, twice_empty, dossier()]);
    let items = decode(doc.as_bytes());
    assert_eq!(items.len(), 3, "{items:?}");
    let expect = |i: usize, pointer: &str| {
        let e = items[i].as_ref().expect_err("refused");
        assert!(!e.fatal, "{e:?}");
        assert_eq!(e.violations.len(), 1, "{e:?}");
        assert_eq!(e.violations[0].pointer, pointer);
        assert_eq!(e.violations[0].rule, Rule::XmlSyntax);
    };
    expect(0, "/exportSEM/dossier[1]/session/@dateDebut");
    expect(1, "/exportSEM/dossier[2]/financement[1]/@montantRealise");
    assert!(items[2].is_ok(), "{:?}", items[2]);
}

#[test]
fn a_duplicate_attribute_of_the_root_is_named_too() {
    let doc = export(PROLOG_UTF8, &[dossier()]).replacen(
        "region=\"PDL\"",
        "region=\"PDL\" region=\"PDL\"",
        1,
    );
    let err = decode_document(doc.as_bytes(), Flow::Sync, &DecodeSettings::default())
        .expect_err("refused");
    assert_eq!(err.0.len(), 1, "{err:?}");
    assert_eq!(err.0[0].pointer, "/exportSEM/@region");
    assert_eq!(err.0[0].rule, Rule::XmlSyntax);
}

// ---------------------------------------------------------------------------------------------
// Caps
// ---------------------------------------------------------------------------------------------

/// A dossier with `n` unknown attributes on `<session>`.
fn with_unknown_attributes(n: usize) -> String {
    let mut attrs = String::with_capacity(n * 12);
    for i in 0..n {
        attrs.push_str(&format!(" a{i}=\"\""));
    }
    dossier_with("<session ", &format!("<session{attrs} "))
}

#[test]
fn violations_are_capped_per_dossier_and_the_rest_counted() {
    let doc = export(PROLOG_UTF8, &[with_unknown_attributes(250_000), dossier()]);
    let items = decode(doc.as_bytes());
    assert_eq!(items.len(), 2);
    let e = items[0].as_ref().expect_err("refused");
    assert_eq!(e.violations.len(), MAX_PER_DOSSIER + 1);
    assert_eq!(e.unlisted, 250_000 - MAX_PER_DOSSIER);
    assert!(e.violations[..MAX_PER_DOSSIER]
        .iter()
        .all(|v| v.rule == Rule::XmlUnexpected
            && v.pointer.starts_with("/exportSEM/dossier[1]/session/@a")));
    let last = e.violations.last().expect("a marker");
    assert_eq!(last.rule, Rule::XmlTruncated);
    assert_eq!(last.pointer, "/exportSEM/dossier[1]");
    assert!(last.detail.starts_with("249900 more"), "{}", last.detail);
    assert!(items[1].is_ok(), "the next dossier is read as usual");
}

#[test]
fn unknown_elements_are_capped_per_dossier() {
    let unknown = "<x/>".repeat(500);
    let doc = export(
        PROLOG_UTF8,
        &[dossier_with("<etat>", &format!("{unknown}<etat>"))],
    );
    let items = decode(doc.as_bytes());
    let e = items[0].as_ref().expect_err("refused");
    assert_eq!(e.violations.len(), MAX_PER_DOSSIER + 1);
    assert_eq!(e.unlisted, 400);
}

#[test]
fn violations_are_capped_per_document_with_a_final_count() {
    // 30 dossiers of 50 violations each: 1,500 in all, 1,000 listed.
    let unknown = "<x/>".repeat(50);
    let bad = dossier_with("<etat>", &format!("{unknown}<etat>"));
    let doc = export(PROLOG_UTF8, &vec![bad; 30]);
    let err = decode_document(doc.as_bytes(), Flow::Sync, &DecodeSettings::default())
        .expect_err("refused");
    assert_eq!(err.0.len(), MAX_PER_DOCUMENT + 1);
    let last = err.0.last().expect("a marker");
    assert_eq!(last.rule, Rule::XmlTruncated);
    assert_eq!(last.pointer, "/exportSEM");
    assert!(last.detail.starts_with("500 more"), "{}", last.detail);
    assert_eq!(
        err.0
            .iter()
            .filter(|v| v.rule == Rule::XmlTruncated)
            .count(),
        1
    );
}

#[test]
fn a_dossier_marker_left_out_of_the_document_list_counts_in_the_final_one() {
    // 10 dossiers of 150 violations: each lists 100 and a marker for 50; the document lists
    // 1,000 entries (the first 9 dossiers' 101, and 91 of the tenth), then one marker for
    // 9 + 50 more.
    let unknown = "<x/>".repeat(150);
    let bad = dossier_with("<etat>", &format!("{unknown}<etat>"));
    let doc = export(PROLOG_UTF8, &vec![bad; 10]);
    let err = decode_document(doc.as_bytes(), Flow::Sync, &DecodeSettings::default())
        .expect_err("refused");
    assert_eq!(err.0.len(), MAX_PER_DOCUMENT + 1);
    let last = err.0.last().expect("a marker");
    assert!(last.detail.starts_with("59 more"), "{}", last.detail);
}

#[test]
fn stray_elements_outside_dossiers_are_capped_and_counted() {
    let stray = "<x><y/></x>".repeat(300);
    let doc = export(PROLOG_UTF8, &[stray, dossier()]);
    let items = decode(doc.as_bytes());
    let strays: Vec<&DossierError> = errors(&items);
    assert_eq!(strays.len(), MAX_PER_DOSSIER + 1, "{strays:?}");
    assert!(strays.iter().all(|e| e.index == 0 && !e.fatal));
    let last = strays.last().expect("a marker");
    assert_eq!(last.violations[0].rule, Rule::XmlTruncated);
    assert_eq!(last.unlisted, 200);
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
}

#[test]
fn counted_strays_are_said_even_when_the_document_then_breaks() {
    let doc = format!(
        "{PROLOG_UTF8}<exportSEM>{}<dossier id=\"x\"><etat></exportSEM>",
        "<x/>".repeat(150)
    );
    let items = decode(doc.as_bytes());
    let fatal = items.last().expect("items").as_ref().expect_err("fatal");
    assert!(fatal.fatal);
    assert_eq!(fatal.unlisted, 50);
    assert_eq!(
        fatal.violations.last().map(|v| v.rule),
        Some(Rule::XmlTruncated)
    );
}

// ---------------------------------------------------------------------------------------------
// Deadline
// ---------------------------------------------------------------------------------------------

#[test]
fn past_the_deadline_a_clean_document_cannot_be_judged() {
    let doc = export(PROLOG_UTF8, &vec![dossier(); 100]);
    let settings = DecodeSettings::default();
    // A deadline already passed: the first look at the clock stops the stream.
    let r = decode_document_within(doc.as_bytes(), Flow::Sync, &settings, Instant::now());
    match r {
        Err(DocumentError::OverBudget { dossiers_read }) => assert!(dossiers_read < 100),
        other => panic!("{other:?}"),
    }
    // With time enough, the same document is accepted.
    let later = Instant::now() + Duration::from_secs(3600);
    let ok = decode_document_within(doc.as_bytes(), Flow::Sync, &settings, later).expect("valid");
    assert_eq!(ok.len(), 100);
}

#[test]
fn past_the_deadline_a_document_already_invalid_is_refused_with_what_was_found() {
    let bad = dossier_with("<nir>185077512345608</nir>", "<nir>185077512345609</nir>");
    let mut dossiers = vec![bad];
    dossiers.extend(vec![dossier(); 100]);
    let doc = export(PROLOG_UTF8, &dossiers);
    let r = decode_document_within(
        doc.as_bytes(),
        Flow::Sync,
        &DecodeSettings::default(),
        Instant::now(),
    );
    let Err(DocumentError::Invalid(v)) = r else {
        panic!("{r:?}");
    };
    assert_eq!(v.0[0].rule, Rule::NirChecksum);
    let last = v.0.last().expect("a marker");
    assert_eq!(last.rule, Rule::XmlTruncated);
    assert!(last.detail.contains("time budget"), "{}", last.detail);
}

// ---------------------------------------------------------------------------------------------
// Encoding lies: declared ISO-8859-1, bytes UTF-8
// ---------------------------------------------------------------------------------------------

/// A document declared ISO-8859-1: `utf8` dossiers written as UTF-8 bytes (the lie), then
/// `latin1` ones as genuine windows-1252 bytes.
fn mixed_latin1(utf8: &[String], latin1: &[String]) -> Vec<u8> {
    let mut out = export(PROLOG_LATIN1, &[]).replace("</exportSEM>\n", "");
    out.push_str(&utf8.concat());
    let mut bytes = out.into_bytes();
    let genuine = encoding_rs::WINDOWS_1252
        .encode(&latin1.concat())
        .0
        .into_owned();
    bytes.extend_from_slice(&genuine);
    bytes.extend_from_slice(b"</exportSEM>\n");
    bytes
}

fn ascii_dossier() -> String {
    // The fixture's only non-ASCII value is the dispositif's label.
    dossier_with("Visa métiers", "Visa metiers")
}

#[test]
fn utf8_bytes_in_a_latin1_document_are_refused_with_their_path() {
    let lie = ascii_dossier().replacen(
        "<prenoms>Jean Pierre</prenoms>",
        "<prenoms>ÉLODIE</prenoms>",
        1,
    );
    let lie_in_attribute = ascii_dossier().replacen("Visa metiers", "Visa métiers", 1);
    let genuine = dossier_with(
        "<prenoms>Jean Pierre</prenoms>",
        "<prenoms>Élodie</prenoms>",
    );
    let bytes = mixed_latin1(&[lie, lie_in_attribute], &[genuine]);
    assert!(String::from_utf8_lossy(&bytes).contains("ÉLODIE"));
    let items = decode(&bytes);
    assert_eq!(items.len(), 3, "{items:?}");
    let refused = |i: usize, pointer: &str| {
        let e = items[i].as_ref().expect_err("refused");
        assert!(!e.fatal);
        assert_eq!(e.violations.len(), 1, "{e:?}");
        assert_eq!(e.violations[0].rule, Rule::XmlEncodingMismatch);
        assert_eq!(e.violations[0].pointer, pointer);
    };
    refused(0, "/exportSEM/dossier[1]/stagiaire/prenoms");
    refused(1, "/exportSEM/dossier[2]/dispositif/@libelle");
    let ok = items[2].as_ref().expect("the genuine ISO-8859-1 dossier");
    assert_eq!(
        ok.dossier
            .trainee
            .first_names
            .as_ref()
            .map(|n| n.expose().as_str()),
        Some("Élodie")
    );
}

#[test]
fn a_backfill_counts_mislabelled_dossiers_as_invalid_and_goes_on() {
    let lie = ascii_dossier().replacen("DUPONT", "LEFÈVRE", 1);
    let bytes = mixed_latin1(&[lie], &[dossier()]);
    let items: Vec<_> =
        decode_stream(bytes.as_slice(), Flow::Backfill, &DecodeSettings::default()).collect();
    assert_eq!(items.len(), 2);
    let e = items[0].as_ref().expect_err("invalid");
    assert!(!e.fatal);
    assert_eq!(e.violations[0].rule, Rule::XmlEncodingMismatch);
    assert_eq!(
        e.violations[0].pointer,
        "/exportSEM/dossier[1]/stagiaire/nomNaissance"
    );
    assert!(items[1].is_ok());
}

#[test]
fn genuine_latin1_accents_are_accepted() {
    let names = [
        ("ÉLODIE", "Élise Françoise", "LEFÈVRE"),
        ("CAFÉ\u{A0}", "Hélène", "GARÇON"),
        ("NOËL", "Chloé Anaïs", "ÉTÉ\u{A0}»"),
        ("À L’ÉCOLE", "Œdipe", "CŒUR 100 €"),
    ];
    let dossiers: Vec<String> = names
        .iter()
        .map(|(birth, first, usage)| {
            ascii_dossier().replacen(
                "<nomNaissance>DUPONT</nomNaissance><nomUsage/><prenoms>Jean Pierre</prenoms>",
                &format!(
                    "<nomNaissance>{birth}</nomNaissance><nomUsage>{usage}</nomUsage><prenoms>{first}</prenoms>"
                ),
                1,
            )
        })
        .collect();
    let bytes = mixed_latin1(&[], &dossiers);
    let items = decode(&bytes);
    assert_eq!(items.len(), names.len());
    for (item, (birth, first, usage)) in items.iter().zip(names) {
        let d = &item.as_ref().expect("accepted").dossier.trainee;
        let read = |n: &Option<Personal<String>>| n.as_ref().map(|n| n.expose().clone());
        assert_eq!(read(&d.birth_name).as_deref(), Some(birth));
        assert_eq!(read(&d.first_names).as_deref(), Some(first));
        assert_eq!(read(&d.usage_name).as_deref(), Some(usage));
    }
}

#[test]
fn utf8_declared_as_utf8_is_not_questioned() {
    let doc = export(
        PROLOG_UTF8,
        &[dossier_with(
            "<prenoms>Jean Pierre</prenoms>",
            "<prenoms>Ã‰LODIE</prenoms>",
        )],
    );
    assert!(decode(doc.as_bytes()).iter().all(Result::is_ok));
}

#[test]
fn a_huge_unknown_name_is_cut_in_its_path() {
    let name = "é".repeat(100_000);
    let doc = export(
        PROLOG_UTF8,
        &[dossier_with(
            "<etat>",
            &format!("<{name} {name}=\"\"/><etat>"),
        )],
    );
    let items = decode(doc.as_bytes());
    let e = items[0].as_ref().expect_err("refused");
    assert_eq!(e.violations.len(), 1, "{e:?}");
    let p = &e.violations[0].pointer;
    assert!(p.len() < 200 && p.ends_with('…'), "{} bytes", p.len());
    assert!(p.starts_with("/exportSEM/dossier[1]/éé"));
}
