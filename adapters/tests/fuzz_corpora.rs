//! The fuzz targets, run by every `cargo test` (no nightly compiler, no libFuzzer):
//! - every corpus file of every target (`adapters/fuzz/corpus/<target>/`) is replayed through the
//!   function the target calls (`passerelle_adapters::fuzzing`), so a seed that once crashed stays
//!   a regression test, and the hostile seeds (a tag of thousands of attributes, deep nesting,
//!   huge text…, written by `cargo run -p passerelle-tests --bin gen_hostile`) run here too;
//! - each target gets generated inputs: arbitrary bytes, and structured ones that reach past the
//!   first parse (XML trees of the export's vocabulary in both encodings, JSON of each system's
//!   keys). A panic anywhere fails the test with the input that caused it.
//!
//! `cargo fuzz` (see the README) explores further; this is the bounded part CI runs every time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use passerelle_adapters::fuzzing::{self, source_decode, source_target, targets};
use passerelle_adapters::{System, SOURCES};
use proptest::prelude::*;
use serde_json::Value;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// The targets, by their files under `fuzz_targets/`.
fn target_names() -> Vec<String> {
    sorted_entries(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_fuzz_target_calls_its_function_here_and_has_a_corpus() {
    let names = target_names();
    let registered: Vec<String> = targets().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names, registered,
        "fuzz_targets/*.rs and fuzzing::targets() differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("Cargo.toml");
    for name in &names {
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .expect("target");
        // A source's target calls the registry's body for its system; the others their own.
        let call = SOURCES
            .iter()
            .find(|s| source_target(s.system()) == *name)
            .map_or(format!("fuzzing::{name}(data)"), |s| {
                format!(
                    "fuzzing::source_decode(passerelle_adapters::System::{:?}, data)",
                    s.system()
                )
            });
        assert!(
            source.contains(&call),
            "{name}.rs must call {call}, the function the tests replay"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not a [[bin]] of adapters/fuzz/Cargo.toml"
        );
        let corpus = fuzz_dir().join("corpus").join(name);
        assert!(!sorted_entries(&corpus).is_empty(), "{name} has no corpus");
    }
}

#[test]
fn every_corpus_file_replays_through_its_target_without_panic() {
    let mut failures = Vec::new();
    let mut replayed = 0usize;
    let all = targets();
    for (name, run) in &all {
        for file in sorted_entries(&fuzz_dir().join("corpus").join(name)) {
            let bytes = std::fs::read(&file).expect("corpus file");
            if catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
                failures.push(file.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(failures.is_empty(), "panicked on: {failures:#?}");
    assert!(replayed > 100, "only {replayed} corpus files");
    // Every file under corpus/ was replayed: no corpus of a target the list forgot, no nested
    // directory left out.
    let mut on_disk = 0usize;
    for dir in sorted_entries(&fuzz_dir().join("corpus")) {
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            all.iter().any(|(n, _)| *n == name),
            "corpus/{name} belongs to no target of fuzzing::targets()"
        );
        for file in sorted_entries(&dir) {
            assert!(file.is_file(), "{}: not a file", file.display());
            on_disk += 1;
        }
    }
    assert_eq!(replayed, on_disk, "corpus files replayed / on disk");
}

// ---------------------------------------------------------------------------------------------
// Generated inputs
// ---------------------------------------------------------------------------------------------

/// An XML node of an ATEXO SEM-like document.
#[derive(Debug, Clone)]
enum Node {
    Element {
        name: String,
        attributes: Vec<(String, String)>,
        children: Vec<Node>,
    },
    Text(String),
    CData(String),
    Comment,
}

const ELEMENTS: &[&str] = &[
    "dossier",
    "dossier",
    "dossier",
    "dispositif",
    "categorie",
    "programme",
    "consultation",
    "stagiaire",
    "nir",
    "nomNaissance",
    "nomUsage",
    "prenoms",
    "sexe",
    "dateNaissance",
    "identifiantPE",
    "adresse",
    "action",
    "organisme",
    "session",
    "etat",
    "entree",
    "sortie",
    "financement",
    "annulation",
    "inconnu",
];

const ATTRIBUTES: &[&str] = &[
    "id",
    "version",
    "dateMaj",
    "code",
    "libelle",
    "agora",
    "numero",
    "lot",
    "national",
    "regional",
    "codeGeo",
    "codePostal",
    "communeInsee",
    "numeroFormation",
    "numeroAction",
    "numeroSession",
    "intitule",
    "formacode",
    "formacodeVersion",
    "certification",
    "siret",
    "nda",
    "dateDebut",
    "dateFin",
    "heuresCentre",
    "date",
    "motif",
    "resultat",
    "financeur",
    "montantEngage",
    "montantRealise",
    "montantSolde",
    "initiateur",
    "inconnu",
];

/// Values that parse, values that almost do, markup and encodings.
fn xml_value() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "O",
            "N",
            "1",
            "2",
            "PDL-2019-000123",
            "4",
            "02/09/2019",
            "31/02/2019",
            "2019-09-02",
            "4520,00",
            "12.50",
            "-3",
            "185077512345608",
            "1850775123456",
            "12002701600357",
            "ENTRE",
            "SORTI",
            "SOLDE",
            "ANNULE",
            "FIN",
            "OBTENUE",
            "STAGIAIRE",
            "RNCP34567",
            "31795",
            "V12",
            "44000",
            "2A004",
            "É",
            "Ã‰LODIE",
            "Élodie",
            "Cœur €",
            "&amp;",
            "&lt;&gt;",
            "&lol;",
            "&#233;",
            "&#x0;",
            "&#xD800;",
            "&",
            "a<b",
        ])
        .prop_map(String::from),
        "\\PC{0,16}",
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let name = prop::sample::select(ELEMENTS).prop_map(String::from);
    let attributes = prop::collection::vec(
        (
            prop::sample::select(ATTRIBUTES).prop_map(String::from),
            xml_value(),
        ),
        0..5,
    );
    let leaf = prop_oneof![
        xml_value().prop_map(Node::Text),
        xml_value().prop_map(Node::CData),
        Just(Node::Comment),
        (name.clone(), attributes.clone()).prop_map(|(name, attributes)| Node::Element {
            name,
            attributes,
            children: Vec::new(),
        }),
    ];
    leaf.prop_recursive(5, 80, 10, move |inner| {
        (
            name.clone(),
            attributes.clone(),
            prop::collection::vec(inner, 0..10),
        )
            .prop_map(|(name, attributes, children)| Node::Element {
                name,
                attributes,
                children,
            })
    })
}

fn render(node: &Node, out: &mut String) {
    match node {
        Node::Element {
            name,
            attributes,
            children,
        } => {
            out.push('<');
            out.push_str(name);
            for (k, v) in attributes {
                out.push_str(&format!(" {k}=\"{}\"", v.replace('"', "&quot;")));
            }
            if children.is_empty() {
                out.push_str("/>");
            } else {
                out.push('>');
                for c in children {
                    render(c, out);
                }
                out.push_str(&format!("</{name}>"));
            }
        }
        Node::Text(t) => out.push_str(t),
        Node::CData(t) => out.push_str(&format!("<![CDATA[{}]]>", t.replace("]]>", ""))),
        Node::Comment => out.push_str("<!-- note -->"),
    }
}

/// A whole export: a prolog (declaring UTF-8, ISO-8859-1, something else or nothing), the root
/// and its content, written as UTF-8 or windows-1252 bytes whatever the prolog says.
fn export() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["UTF-8", "ISO-8859-1", "UTF-16", ""]),
        any::<bool>(),
        prop::collection::vec(node(), 0..6),
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    )
        .prop_map(|(declared, as_latin1, content, cuts)| {
            let mut doc = if declared.is_empty() {
                String::new()
            } else {
                format!("<?xml version=\"1.0\" encoding=\"{declared}\"?>\n")
            };
            doc.push_str("<exportSEM version=\"1.0\" region=\"PDL\">");
            for n in &content {
                render(n, &mut doc);
            }
            doc.push_str("</exportSEM>");
            let mut bytes = if as_latin1 {
                encoding_rs::WINDOWS_1252.encode(&doc).0.into_owned()
            } else {
                doc.into_bytes()
            };
            // Now and then a document cut short.
            for cut in cuts {
                let at = cut.index(bytes.len() + 1);
                bytes.truncate(at);
            }
            bytes
        })
}

/// JSON built from a system's keys and values that look like its own.
fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e12f64..1.0e12).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "ENTRE",
            "CREE",
            "SORTI",
            "SOLDE",
            "ANNULE",
            "ICR",
            "ICA",
            "PFR",
            "PROPOSEE",
            "ACCEPTEE",
            "REFUSEE",
            "POLE_EMPLOI",
            "2019-09-02",
            "2019-09-02T10:15:00+02:00",
            "12/07/1985",
            "185077512345608",
            "1850775123456",
            "12002701600357",
            "PRF-QUALIF",
            "20_1262663",
            "1330305",
            "AG-ETAT",
            "EN_COURS",
            "TERMINE",
            "Bearer",
            "2",
            "044",
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 10, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys), inner), 0..12).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

const OUIFORM_KEYS: &[&str] = &[
    "idOrientation",
    "dateOrientation",
    "statut",
    "prescripteur",
    "type",
    "siretStructure",
    "beneficiaire",
    "nir",
    "nomNaissance",
    "prenom",
    "dateNaissance",
    "idNationalDE",
    "idRegionalDE",
    "codeGeoDE",
    "codePostal",
    "offre",
    "numeroFormation",
    "numeroAction",
    "numeroSession",
    "siretOrganisme",
    "intitule",
    "financeur",
    "dispositif",
    "motifRefus",
    "dateEntree",
    "inconnu",
];

const POLE_EMPLOI_KEYS: &[&str] = &[
    "idInscription",
    "codeStatutInscription",
    "idNationalDE",
    "idRegionalDE",
    "codeGeoDE",
    "nirCertifie",
    "idProjetAction",
    "aesRecue",
    "dateEntree",
    "listeModuleFormation",
    "dateDebut",
    "dateFin",
    "access_token",
    "token_type",
    "expires_in",
    "codeErreur",
    "codeHttp",
    "message",
];

const AGORA_KEYS: &[&str] = &[
    "numero_agora",
    "etat",
    "anomalies",
    "code",
    "champ",
    "libelle",
    "lot",
    "lignes",
    "acceptees",
    "rejetees",
    "compte_rendu",
    "ligne",
    "reference",
    "financeur",
    "siret",
    "dispositif",
    "stagiaire",
    "nir13",
    "nom_naissance",
    "nom_usage",
    "prenoms",
    "sexe",
    "date_naissance",
    "id_national_de",
    "code_postal",
    "formation",
    "numero_formation",
    "numero_action",
    "numero_session",
    "intitule",
    "formacode",
    "certification",
    "siret_organisme",
    "date_debut",
    "date_fin",
    "heures_prevues",
    "financements",
    "code_financeur",
    "montant_engage_cents",
    "entree",
    "date_entree",
    "sortie",
    "date_sortie",
    "motif_sortie",
    "resultat_certification",
    "heures_realisees",
    "solde",
    "montant_realise_cents",
    "montant_solde_cents",
    "annulation",
    "date_annulation",
    "initiateur",
    "motif",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_target_takes_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        for (_, run) in targets() {
            run(&bytes);
        }
    }

    #[test]
    fn atexo_sem_takes_generated_exports(bytes in export()) {
        source_decode(System::AtexoSem, &bytes);
    }

    #[test]
    fn ouiform_takes_generated_orientations(v in json(OUIFORM_KEYS)) {
        source_decode(System::Ouiform, &serde_json::to_vec(&v).expect("json"));
    }

    #[test]
    fn pole_emploi_takes_generated_answers(v in json(POLE_EMPLOI_KEYS)) {
        source_decode(System::PoleEmploi, &serde_json::to_vec(&v).expect("json"));
    }

    #[test]
    fn agora_takes_generated_answers_and_lots(
        status in any::<u8>(),
        lines in prop::collection::vec(json(AGORA_KEYS), 1..4),
    ) {
        // The first byte is the status; one line is an answer, several an NDJSON lot.
        let mut bytes = vec![status];
        for (i, v) in lines.iter().enumerate() {
            if i > 0 {
                bytes.push(b'\n');
            }
            bytes.extend(serde_json::to_vec(v).expect("json"));
        }
        fuzzing::agora_decode(&bytes);
    }

    #[test]
    fn identifiers_take_generated_strings(s in "[0-9A-Za-z _/-]{0,20}|\\PC{0,20}") {
        fuzzing::identifiers(s.as_bytes());
    }
}
