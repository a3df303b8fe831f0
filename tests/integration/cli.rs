//! The commands of contract §5 that exist so far, driven through the gateway's library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use passerelle::cli::{MappingFormat, ValidateFormat};
use passerelle::commands;
use passerelle_adapters::System;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validate(system: System, file: &Path, format: ValidateFormat) -> (ExitCode, String) {
    let mut out = Vec::new();
    let code = commands::validate::run(system, file, format, &mut out).expect("the command runs");
    (code, String::from_utf8(out).expect("UTF-8 output"))
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixture in {dir}");
    v
}

#[test]
fn docs_mapping_md_is_the_generated_document() {
    let mut out = Vec::new();
    commands::mapping::run(MappingFormat::Markdown, &mut out).expect("renders");
    let generated = String::from_utf8(out).expect("UTF-8");
    let committed = std::fs::read_to_string(root().join("docs/mapping.md")).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/mapping.md is stale: run `cargo run -- mapping > docs/mapping.md`"
    );
}

#[test]
fn docs_configuration_md_is_the_generated_reference() {
    let committed =
        std::fs::read_to_string(root().join("docs/configuration.md")).unwrap_or_default();
    assert!(
        committed == passerelle::config_reference::markdown(),
        "docs/configuration.md is stale: run `cargo run -- config-reference > docs/configuration.md`"
    );
}

#[test]
fn schemas_openapi_json_is_the_generated_document() {
    let committed =
        std::fs::read_to_string(root().join("schemas/openapi.json")).unwrap_or_default();
    let generated = passerelle::routes::openapi::json().expect("the document assembles");
    assert!(
        committed == generated,
        "schemas/openapi.json is stale: run `cargo run -- openapi > schemas/openapi.json`"
    );
}

#[test]
fn docs_rules_md_is_the_generated_list() {
    let committed = std::fs::read_to_string(root().join("docs/rules.md")).unwrap_or_default();
    assert!(
        committed == commands::rules::render(),
        "docs/rules.md is stale: run `cargo run -- rules > docs/rules.md`"
    );
}

#[test]
fn mapping_csv_has_a_row_per_canonical_field_and_every_trigger() {
    let mut out = Vec::new();
    commands::mapping::run(MappingFormat::Csv, &mut out).expect("renders");
    let csv = String::from_utf8(out).expect("UTF-8");
    for pointer in [
        "/trainee/nir",
        "/training/numero_session",
        "/fundings/*/committed_cents",
        "/exit/reason",
    ] {
        assert!(
            csv.lines()
                .any(|l| l.starts_with(&format!("field,{pointer},"))),
            "{pointer} missing"
        );
    }
    let triggers = csv.lines().filter(|l| l.starts_with("trigger,")).count();
    assert_eq!(triggers, passerelle_adapters::State::ALL.len());
    // Each row of every adapter's own table appears in the document.
    for table in passerelle_adapters::mapping::tables() {
        for row in table.rows {
            assert!(
                csv.contains(row.system),
                "{:?} {} missing",
                table.system,
                row.system
            );
        }
    }
}

#[test]
fn validate_accepts_every_valid_fixture_and_exits_zero() {
    for (system, dir) in [
        (System::AtexoSem, "tests/fixtures/atexo_sem/valid"),
        (System::Ouiform, "tests/fixtures/ouiform/valid"),
    ] {
        for file in files(dir) {
            let (code, out) = validate(system, &file, ValidateFormat::Json);
            assert_eq!(code, ExitCode::SUCCESS, "{}: {out}", file.display());
            for line in out.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).expect("one JSON object per line");
                assert_eq!(v["valid"], true, "{}", file.display());
                assert!(v["id"].is_string());
                // The canonical dossier printed is valid against the published schema.
                let errors =
                    passerelle_schemas::check(passerelle_schemas::SchemaId::Dossier, &v["dossier"]);
                assert!(errors.is_empty(), "{}: {errors:?}", file.display());
            }
        }
    }
}

#[test]
fn validate_rejects_every_invalid_fixture_naming_field_and_rule() {
    for (system, dir) in [
        (System::AtexoSem, "tests/fixtures/atexo_sem/invalid"),
        (System::Ouiform, "tests/fixtures/ouiform/invalid"),
    ] {
        for file in files(dir) {
            let (code, out) = validate(system, &file, ValidateFormat::Json);
            assert_eq!(code, ExitCode::from(1), "{}: {out}", file.display());
            let invalid: Vec<serde_json::Value> = out
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
                .filter(|v| v["valid"] == false)
                .collect();
            assert!(!invalid.is_empty(), "{}", file.display());
            for v in invalid {
                for e in v["errors"].as_array().expect("errors") {
                    let rule = e["rule"].as_str().expect("rule");
                    assert!(
                        passerelle_adapters::Rule::from_code(rule).is_some(),
                        "{rule}"
                    );
                    assert!(
                        e["pointer"]
                            .as_str()
                            .is_some_and(|p| p.is_empty() || p.starts_with('/')),
                        "{e}"
                    );
                    assert!(!e["detail"].as_str().unwrap_or_default().is_empty());
                }
            }
        }
    }
}

#[test]
fn validate_text_output_summarises() {
    let file = files("tests/fixtures/atexo_sem/valid").remove(0);
    let (code, out) = validate(System::AtexoSem, &file, ValidateFormat::Text);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.contains("dossier(s):") && l.contains("0 invalid")),
        "{out}"
    );
}

#[test]
fn validate_an_unreadable_file_is_an_error_not_a_verdict() {
    let mut out = Vec::new();
    let r = commands::validate::run(
        System::AtexoSem,
        Path::new("/nonexistent/export.xml"),
        ValidateFormat::Text,
        &mut out,
    );
    assert!(r.is_err());
}

/// Issue 18: AGORA's `libelle` is free text that may quote a NIR or a name. `passerelle
/// dead-letters list` runs with the ledger's rights, never the personal-data token's: in either
/// format it shows the anomaly's code and field, and the `libelle` only masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_masks_agoras_libelle() {
    use passerelle::ledger::{self, DeadReason, Flow, Inbound, InboundRecord};
    use passerelle_adapters::agora::model::Anomaly;

    const NIR: &str = "185077512345608";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let ledger_url = format!("sqlite://{d}/passerelle.db");
    let l = ledger::connect(&ledger_url)
        .await
        .expect("the ledger opens");
    let record = passerelle_adapters::ouiform::decode(
        &std::fs::read(root().join("tests/fixtures/ouiform/valid/acceptee.json")).expect("fixture"),
        &Default::default(),
    )
    .expect("a valid orientation");
    l.accept(
        Inbound {
            system: System::Ouiform,
            flow: Flow::Sync,
            payload_hash: "cli-libelle".into(),
            masked_payload: None,
            request_id: None,
            records: vec![InboundRecord {
                dossier_id: "d-libelle".into(),
                record,
                in_perimeter: true,
            }],
        },
        &Default::default(),
    )
    .await
    .expect("accepted");
    let libelle = format!("le NIR {NIR} de DUPONT Jean Pierre est inconnu du RNIPP");
    l.dead_letter(
        "d-libelle",
        "agora",
        &DeadReason::Rejected {
            anomalies: vec![Anomaly {
                code: "AG-RNIPP".into(),
                champ: Some("stagiaire.nir13".into()),
                libelle: Some(libelle.clone()),
            }],
        },
    )
    .await
    .expect("dead-lettered");
    drop(l);

    for format in ["text", "json"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway_process"))
            .args(["dead-letters", "list", "--format", format])
            .env("PASSERELLE__DATA__DIR", &d)
            .env("PASSERELLE__LEDGER__URL", &ledger_url)
            .env("PASSERELLE__QUEUE__URL", format!("embedded:{d}/queue.db"))
            .env("RUST_LOG", "debug")
            .output()
            .expect("passerelle dead-letters list runs");
        assert!(out.status.success(), "{format}: {out:?}");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(printed.contains("AG-RNIPP"), "{format}: {printed}");
        for clear in [
            NIR,
            &NIR[..13],
            "DUPONT",
            "Jean Pierre",
            "inconnu",
            libelle.as_str(),
        ] {
            assert!(
                !printed.contains(clear),
                "{format} prints {clear:?}: {printed}"
            );
        }
        if format == "json" {
            let line: serde_json::Value = serde_json::from_str(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .expect("one dead letter"),
            )
            .expect("a JSON line");
            let anomaly = &line["detail"]["anomalies"][0];
            assert_eq!(anomaly["code"], "AG-RNIPP");
            assert_eq!(anomaly["libelle"], passerelle_adapters::canonical::MASK);
        }
    }
}
