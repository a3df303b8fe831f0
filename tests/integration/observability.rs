//! Observability: every line `passerelle serve` prints during an end-to-end run over RabbitMQ and
//! PostgreSQL, at `debug` for every crate, holds no NIR, name or birth date of any trainee it
//! handled (valid, invalid or refused), and one request id follows a dossier from the HTTP request
//! to the worker that delivers it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_sandbox::{Call, Faults, Refusal, Sandbox, SandboxConfig};
use passerelle_tests::generate::{single_dossier_exports, GenOptions, SingleExport};

use crate::support::{
    expected_etat, fixture, generated, signature, wait_for_agora, Production, ServeProcess,
    ATEXO_TOKEN,
};

const ADMIN_TOKEN: &str = "observability-admin-token";
const OUIFORM_TOKEN: &str = "observability-ouiform-token";
const OUIFORM_SECRET: &str = "observability-ouiform-secret";

/// The text of every `<tag>…</tag>` of `xml`.
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut values = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        values.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    values
}

/// A name as XML escapes it, unescaped.
fn unescape(v: &str) -> String {
    v.replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Each word's first letter upper case, the rest lower case: "Jean Pierre", "Dupont".
fn title_case(v: &str) -> String {
    v.split(' ')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A NIR's digits grouped as people write them: `1 85 07 75 123 456 08` (and with dashes, and
/// the 13 characters alone grouped the same way).
fn grouped_nir(nir: &str, sep: &str) -> Vec<String> {
    let chars: Vec<char> = nir.chars().collect();
    if chars.len() < 13 {
        return Vec::new();
    }
    let group = |bounds: &[usize]| {
        bounds
            .windows(2)
            .map(|w| {
                chars[w[0]..w[1].min(chars.len())]
                    .iter()
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(sep)
    };
    let mut out = vec![group(&[0, 1, 3, 5, 7, 10, 13])];
    if chars.len() >= 15 {
        out.push(group(&[0, 1, 3, 5, 7, 10, 13, 15]));
    }
    out
}

/// Whether `v` is a NIR grouped as people write it, `sep` between the groups.
fn nir_grouped_by(v: &str, sep: char) -> bool {
    v.matches(sep).count() >= 5
        && v.chars().all(|c| c == sep || c.is_ascii_alphanumeric())
        && v.chars().filter(char::is_ascii_alphanumeric).count() >= 13
}

/// Every form a personal value might leak in: a NIR as 13 and 15 characters, spaced and dashed;
/// a name as written, unescaped, in upper, lower and title case; a birth date in each source's
/// format (ATEXO SEM's JJ/MM/AAAA, OUIFORM's and AGORA's ISO 8601) and the other common ones.
fn add_forms(values: &mut HashSet<String>, kind: &str, value: &str) {
    match kind {
        "nir" => {
            values.insert(value.to_string());
            values.insert(value.chars().take(13).collect());
            for sep in [" ", "-", "."] {
                values.extend(grouped_nir(value, sep));
            }
        }
        "name" => {
            for v in [value.to_string(), unescape(value)] {
                values.insert(v.to_uppercase());
                values.insert(v.to_lowercase());
                values.insert(title_case(&v));
                values.insert(v);
            }
        }
        "date" => {
            let parts: Vec<&str> = value.split(['/', '-']).collect();
            let (d, m, y) = match parts[..] {
                [y, m, d] if y.len() == 4 => (d, m, y),
                [d, m, y] => (d, m, y),
                _ => return,
            };
            for f in [
                format!("{d}/{m}/{y}"),
                format!("{y}-{m}-{d}"),
                format!("{d}-{m}-{y}"),
                format!("{d}.{m}.{y}"),
                format!("{y}/{m}/{d}"),
            ] {
                values.insert(f);
            }
        }
        _ => {
            values.insert(value.to_string());
        }
    }
}

/// The personal values of an ATEXO SEM document in every form they might leak in (see
/// [`add_forms`]), with the job seekers' Pôle emploi ids.
fn personal_values_of_xml(xml: &str, values: &mut HashSet<String>) {
    for nir in tag_values(xml, "nir") {
        add_forms(values, "nir", &nir);
    }
    for tag in ["nomNaissance", "nomUsage", "prenoms"] {
        for name in tag_values(xml, tag) {
            add_forms(values, "name", &name);
        }
    }
    // The Pôle emploi ids of `<identifiantPE national="…" regional="…"/>`.
    for attr in ["national", "regional"] {
        let open = format!(" {attr}=\"");
        let mut rest: &str = xml;
        while let Some(start) = rest.find(&open) {
            rest = &rest[start + open.len()..];
            let Some(end) = rest.find('"') else { break };
            values.insert(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    for date in tag_values(xml, "dateNaissance") {
        add_forms(values, "date", &date);
    }
}

/// The personal values of these exports, in every form (see [`personal_values_of_xml`]). Values
/// too short to be told from other text (a three-letter first name in lower case) are left out.
fn personal_values(exports: &[SingleExport]) -> HashSet<String> {
    let mut values = HashSet::new();
    for x in exports {
        personal_values_of_xml(&String::from_utf8_lossy(&x.xml), &mut values);
    }
    values.retain(|v| v.trim().chars().count() >= 3);
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_value_in_the_logs_and_one_request_id_from_http_to_worker() {
    let _heavy = crate::support::heavy().await;
    let production = Production::new("logs");
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    // Failures too, so that retries, backoffs and in-doubt searches log what they log.
    sandbox
        .set_faults(Faults {
            seed: 3,
            error_503: 0.1,
            rate_limited: 0.05,
            drop: 0.05,
            applied_share: 0.5,
            retry_after_s: 1,
            ..Faults::default()
        })
        .expect("faults");
    let dir = tempfile::tempdir().expect("tempdir");
    let pe_url = sandbox.pole_emploi_url();
    let (pe_id, pe_secret) = sandbox.pole_emploi_credentials();
    let (pe_id, pe_secret) = (pe_id.to_string(), pe_secret.to_string());
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        Some(&production),
        &[
            ("RUST_LOG", "debug"),
            ("AUTH__TOKENS__ADMIN", ADMIN_TOKEN),
            ("AUTH__TOKENS__OUIFORM", OUIFORM_TOKEN),
            ("OUIFORM__HMAC_SECRET", OUIFORM_SECRET),
            ("RETRY__BASE_MS", "50"),
            ("RETRY__MAX_MS", "500"),
            // The poller too: its tokens, polls and merges log what they log.
            ("POLE_EMPLOI__AUTH_URL", pe_url.as_str()),
            ("POLE_EMPLOI__API_URL", pe_url.as_str()),
            ("POLE_EMPLOI__CLIENT_ID", pe_id.as_str()),
            ("POLE_EMPLOI__CLIENT_SECRET", pe_secret.as_str()),
            ("POLE_EMPLOI__SCOPE", "api_inscriptionsv1"),
            ("POLE_EMPLOI__POLL_INTERVAL_S", "1"),
        ],
    );
    serve.start().await;
    let http = reqwest::Client::new();

    let mut valid = generated(41, 40);
    // Corsican NIRs (2A, 2B), which the generator draws about once in forty: one of each, sure to
    // be in the sample.
    let more = generated(45, 600);
    for department in ["2A", "2B"] {
        let corsican = more
            .iter()
            .find(|x| {
                !valid.iter().any(|v| v.id == x.id)
                    && tag_values(&String::from_utf8_lossy(&x.xml), "nir")
                        .iter()
                        .any(|n| n.get(5..7) == Some(department))
            })
            .unwrap_or_else(|| panic!("no {department} NIR among 600 generated dossiers"));
        valid.push(corsican.clone());
    }
    let invalid = single_dossier_exports(&GenOptions {
        seed: 42,
        count: 20,
        flow: passerelle_adapters::atexo_sem::Flow::Sync,
        invalid_share: 1.0,
        out_of_perimeter_share: 0.0,
        before_2017_share: 0.0,
    })
    .expect("generates");

    let post = |body: Vec<u8>, request_id: String| {
        let http = http.clone();
        let url = format!("{}/v1/inbound/atexo-sem/dossiers", serve.url);
        async move {
            let deadline = std::time::Instant::now() + crate::support::POST_PATIENCE;
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{request_id}: still 429 after {:?}",
                    crate::support::POST_PATIENCE
                );
                let r = http
                    .post(&url)
                    .bearer_auth(ATEXO_TOKEN)
                    .header("Content-Type", "application/xml")
                    .header("X-Request-Id", &request_id)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("answer");
                if r.status() != 429 {
                    let echoed = r.headers().get("x-request-id").cloned();
                    assert_eq!(
                        echoed.as_ref().and_then(|v| v.to_str().ok()),
                        Some(request_id.as_str()),
                        "the request id is echoed"
                    );
                    let status = r.status().as_u16();
                    return (status, r.text().await.expect("body"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // One dossier AGORA refuses with a 422 whose libelle quotes its NIR (as a real AGORA may):
    // dead-lettered, then replayed once AGORA lifts its rule.
    let victim = generated(44, 20)
        .into_iter()
        .find(|x| expected_etat(x).is_some())
        .expect("an owed dossier");
    let victim_nir = tag_values(&String::from_utf8_lossy(&victim.xml), "nir")
        .pop()
        .expect("a NIR");
    sandbox.refuse(Refusal {
        champ: "/stagiaire/nir13".to_string(),
        valeur: serde_json::json!(victim_nir.chars().take(13).collect::<String>()),
        code: "AG-RNIPP".to_string(),
        libelle: format!("le NIR {victim_nir} est inconnu du RNIPP"),
    });
    // Pôle emploi's registrations for a few of the dossiers' sessions, with ids of their own.
    let mut pe_ids = Vec::new();
    for x in valid.iter().filter(|x| expected_etat(x).is_some()).take(4) {
        let xml = String::from_utf8_lossy(&x.xml).to_string();
        let attr = |name: &str| {
            let open = format!(" {name}=\"");
            let start = xml.find(&open).expect(name) + open.len();
            xml[start..start + xml[start..].find('"').expect("closed")].to_string()
        };
        let nir = tag_values(&xml, "nir").pop().expect("a NIR");
        let national = uuid::Uuid::new_v4().to_string();
        let session = SessionRef {
            numero_formation: attr("numeroFormation"),
            numero_action: attr("numeroAction"),
            numero_session: attr("numeroSession"),
        };
        sandbox.set_registrations_json(
            &session,
            serde_json::json!([{
                "idInscription": 4_100_000_000u64 + pe_ids.len() as u64,
                "codeStatutInscription": "ICR",
                "idNationalDE": national,
                "idRegionalDE": "0676932W",
                "codeGeoDE": "044",
                "nirCertifie": nir.chars().take(13).collect::<String>(),
                "idProjetAction": "PA0000123456",
                "aesRecue": false,
                "dateEntree": null,
                "listeModuleFormation": [
                    {"dateDebut": "2019-09-02 00:00:00", "dateFin": "2019-12-20 00:00:00"}
                ],
            }]),
        );
        pe_ids.push(national);
    }

    let mut ids = HashMap::new();
    for (i, x) in valid.iter().enumerate() {
        let (status, body) = post(x.xml.clone(), format!("obs-req-{i}")).await;
        assert_eq!(status, 202, "{}: {body}", x.id);
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        let id = body["dossiers"][0]["dossier_id"].as_str().expect("id");
        ids.insert(x.id.clone(), id.to_string());
    }
    let (status, body) = post(victim.xml.clone(), "obs-victim".to_string()).await;
    assert_eq!(status, 202, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    let victim_id = body["dossiers"][0]["dossier_id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut personal = personal_values(
        &valid
            .iter()
            .chain(&invalid)
            .chain(std::iter::once(&victim))
            .cloned()
            .collect::<Vec<_>>(),
    );
    personal.extend(pe_ids.iter().cloned());
    // The OUIFORM fixture's trainee, with the job seeker's Pôle emploi ids.
    personal.extend(
        [
            "185077512345",
            "DUPONT",
            "Jean Pierre",
            "1985-07-12",
            "12/07/1985",
            "a3f9c2e1-0b7d-4c6e-9f10-2d5e8b7a6c41",
            "0676932W",
        ]
        .map(String::from),
    );
    assert!(
        personal.len() > 60,
        "the values looked for: {}",
        personal.len()
    );
    // The forms the capture looks for are really among them: Corsican NIRs (`2A`, `2B`), whose
    // letters a digits-only pattern would miss, and NIRs spaced and dashed.
    for (what, found) in [
        (
            "a Corsican 2A NIR",
            personal
                .iter()
                .any(|v| v.len() >= 13 && v.get(5..7) == Some("2A")),
        ),
        (
            "a Corsican 2B NIR",
            personal
                .iter()
                .any(|v| v.len() >= 13 && v.get(5..7) == Some("2B")),
        ),
        (
            "a spaced NIR",
            personal.iter().any(|v| nir_grouped_by(v, ' ')),
        ),
        (
            "a dashed NIR",
            personal.iter().any(|v| nir_grouped_by(v, '-')),
        ),
    ] {
        assert!(found, "the values looked for hold {what}");
    }
    for (i, x) in invalid.iter().enumerate() {
        let (status, body) = post(x.xml.clone(), format!("obs-bad-{i}")).await;
        assert_eq!(status, 422, "{}: {body}", x.id);
        for v in &personal {
            assert!(!body.contains(v.as_str()), "a 422 quotes a personal value");
        }
    }
    // The refused dossier's dead letter, replayed once AGORA lifts its rule.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let letter = loop {
        let list: serde_json::Value = http
            .get(format!(
                "{}/v1/dead-letters?dossier_id={victim_id}",
                serve.url
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        if let Some(id) = list[0]["id"].as_str() {
            assert_eq!(list[0]["reason"], "AG-RNIPP");
            break id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter for the refused dossier: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    sandbox.clear_refusals();
    let r = http
        .post(format!("{}/v1/dead-letters/{letter}/replay", serve.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 202);
    let expected: HashMap<String, Option<&'static str>> = valid
        .iter()
        .map(|x| (ids[&x.id].clone(), expected_etat(x)))
        .chain(std::iter::once((victim_id.clone(), expected_etat(&victim))))
        .collect();
    wait_for_agora(
        &http,
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(120),
    )
    .await;
    // The poller polled the sessions it was given (and merged what it read).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sandbox.calls(Call::PeRegistrations).len() < pe_ids.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the poller polled {} sessions",
            sandbox.calls(Call::PeRegistrations).len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // OUIFORM: one signed orientation (a dossier of its own, registered), one with a wrong
    // signature.
    let orientation = fixture("ouiform/valid/acceptee.json");
    let mut oriented = None;
    for (sig, expected) in [
        (signature(OUIFORM_SECRET, &orientation), 202),
        (signature("not-the-secret", &orientation), 401),
    ] {
        let r = http
            .post(format!("{}/v1/inbound/ouiform/orientations", serve.url))
            .bearer_auth(OUIFORM_TOKEN)
            .header("Content-Type", "application/json")
            .header("X-Ouiform-Signature", sig)
            .body(orientation.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), expected);
        if expected == 202 {
            let body: serde_json::Value = r.json().await.expect("json");
            oriented = body["dossier_id"].as_str().map(str::to_string);
        }
    }
    // Whatever its delivery (an orientation alone may wait for the funder's dossier), the worker
    // has handled it once the trace shows an attempt or a wait.
    let oriented = oriented.expect("the orientation's dossier");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let trace: serde_json::Value = http
            .get(format!("{}/v1/dossiers/{oriented}", serve.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        let agora = &trace["delivery"]["agora"];
        if agora["status"] != "pending" || !agora["waiting_for"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the orientation was never handled: {agora}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One identifier, one mask (issue 18): the OUIFORM trainee's NIR and Pôle emploi ids read the
    // same in the journal (the masked payload the ledger keeps) and in the admin trace. They read
    // `***` in the journal and `1**************` in the trace before.
    let journal = crate::support::psql_on(
        &production.ledger_url,
        "SELECT convert_from(masked_payload, 'UTF8') FROM journal \
         WHERE system = 'ouiform' AND masked_payload IS NOT NULL",
    );
    let journal: serde_json::Value =
        serde_json::from_str(&journal).expect("one masked orientation");
    let trace: serde_json::Value = http
        .get(format!("{}/v1/dossiers/{oriented}", serve.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let shown_nir = passerelle_adapters::canonical::Identifier::Nir.mask("185077512345608");
    let (b, t) = (&journal["beneficiaire"], &trace["dossier"]["trainee"]);
    assert_eq!(b["nir"], shown_nir, "journal: {b}");
    assert_eq!(t["nir"], shown_nir, "trace: {t}");
    for (journal_field, trace_field) in [("idNationalDE", "national"), ("idRegionalDE", "regional")]
    {
        assert_eq!(
            b[journal_field], t["pole_emploi_id"][trace_field],
            "{b} {t}"
        );
        assert_eq!(b[journal_field], passerelle_adapters::canonical::MASK);
    }
    for (journal_field, trace_field) in [
        ("nomNaissance", "birth_name"),
        ("prenom", "first_names"),
        ("dateNaissance", "birth_date"),
    ] {
        assert_eq!(b[journal_field], t[trace_field], "{b} {t}");
    }

    // The admin views, which show (masked) personal fields: none in clear, the OUIFORM trainee's
    // Pôle emploi ids included.
    let some = ids.values().next().expect("a dossier");
    for path in [
        format!("/v1/dossiers/{some}"),
        format!("/v1/dossiers/{oriented}"),
        "/v1/dead-letters".into(),
    ] {
        let r = http
            .get(format!("{}{path}", serve.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.expect("body");
        let shown: Vec<&String> = personal
            .iter()
            .filter(|v| body.contains(v.as_str()))
            .collect();
        assert!(
            shown.is_empty(),
            "{path} shows {} personal values",
            shown.len()
        );
    }
    serve.kill();

    // A backfill at debug level, beside it on the same ledger, queue and AGORA: its output too.
    let export = dir.path().join("backfill-export.xml");
    let backfilled = std::fs::File::create(&export).expect("export");
    passerelle_tests::generate::write_atexo_export(
        std::io::BufWriter::new(backfilled),
        &GenOptions {
            seed: 45,
            count: 30,
            flow: passerelle_adapters::atexo_sem::Flow::Backfill,
            invalid_share: 0.2,
            out_of_perimeter_share: 0.1,
            before_2017_share: 0.1,
        },
    )
    .expect("generates");
    let backfill_xml = std::fs::read_to_string(&export).expect("export");
    let mut backfill_personal = HashSet::new();
    personal_values_of_xml(&backfill_xml, &mut backfill_personal);
    backfill_personal.retain(|v| v.trim().chars().count() >= 3);
    let output = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway_process"))
        .arg("backfill")
        .arg("--input")
        .arg(&export)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("PASSERELLE__DATA__DIR", dir.path())
        .env("PASSERELLE__LEDGER__URL", &production.ledger_url)
        .env("PASSERELLE__QUEUE__URL", &production.queue_url)
        .env("PASSERELLE__AGORA__BASE_URL", sandbox.agora_url())
        .env("PASSERELLE__AGORA__TOKEN", sandbox.agora_token())
        .env("PASSERELLE__BACKFILL__POLL_INTERVAL_MS", "100")
        .stdout(output("backfill.out"))
        .stderr(output("backfill.err"))
        .spawn()
        .expect("passerelle backfill runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the backfill did not end within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let backfill_log = format!(
        "{}{}",
        std::fs::read_to_string(dir.path().join("backfill.out")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("backfill.err")).unwrap_or_default()
    );
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "the backfill ran to its end: {status:?}\n{}",
        &backfill_log[backfill_log.len().saturating_sub(3000)..]
    );
    assert!(
        backfill_log.lines().count() > 50 && backfill_personal.len() > 50,
        "a debug backfill logs plenty ({} lines) of dossiers with personal values ({})",
        backfill_log.lines().count(),
        backfill_personal.len()
    );
    let leaks = backfill_personal
        .iter()
        .filter(|v| backfill_log.contains(v.as_str()))
        .count();
    assert_eq!(leaks, 0, "personal values in the backfill's output");

    let log = std::fs::read_to_string(&serve.log).expect("the log");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.len() > 200,
        "a debug run logs plenty: {} lines",
        lines.len()
    );
    let leaks: Vec<&String> = personal
        .iter()
        .filter(|v| log.contains(v.as_str()))
        .collect();
    // Where a log line shows a NIR at all, it is in the one mask the journal and the trace show:
    // a first character followed by stars only, as many as the NIR has after it.
    let masked_nirs = masked_nirs_in(&log);
    assert!(
        masked_nirs.iter().all(|m| {
            let stars = m.chars().skip(1).count();
            m.chars().skip(1).all(|c| c == '*') && (stars == 12 || stars == 14)
        }),
        "a NIR masked another way in the logs: {masked_nirs:?}"
    );
    assert!(
        leaks.is_empty(),
        "{} personal values appear in the logs (e.g. a value of {} characters)",
        leaks.len(),
        leaks.first().map_or(0, |v| v.chars().count())
    );

    // One request id, from the HTTP request to the worker's span.
    let spans_of = |request_id: &str| -> HashSet<String> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["span"]["request_id"] == request_id)
            .filter_map(|l| l["span"]["name"].as_str().map(str::to_string))
            .collect()
    };
    for i in [0, 7, 39] {
        let spans = spans_of(&format!("obs-req-{i}"));
        assert!(
            spans.contains("request") && spans.contains("reconcile"),
            "obs-req-{i} is seen in the spans {spans:?}, not in both the request's and the worker's"
        );
    }
}

/// What a log shows of NIRs after a `"nir` key (a JSON field or a `Debug` one): each value of
/// 13 or 15 characters that follows such a key, as written.
fn masked_nirs_in(log: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in log.match_indices("nir") {
        let rest = &log[at + 3..];
        // `nir": "…"`, `nir: "…"`, `nir=…`, `nir_certifie: "…"`, `nirCertifie": "…"`.
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '_');
        let rest = rest.trim_start_matches(['"', '\\', ':', '=', ' ']);
        let value: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '*')
            .collect();
        if (value.len() == 13 || value.len() == 15) && value.contains('*') {
            found.push(value);
        }
    }
    found
}

/// One request to the OTLP receiver: its request line, content type and body.
type Export = (String, String, Vec<u8>);

/// What the OTLP receiver below got, in order.
#[derive(Clone, Default)]
struct Received(std::sync::Arc<std::sync::Mutex<Vec<Export>>>);

/// A minimal OTLP/HTTP receiver (an OpenTelemetry Collector's role): records every request and
/// answers 200 with an empty protobuf body, which is a valid empty `ExportTraceServiceResponse`.
async fn otlp_receiver() -> (String, Received) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    let received = Received::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // Keep-alive: several requests may come on one connection.
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim()
                                    .eq_ignore_ascii_case(name)
                                    .then(|| v.trim().to_string())
                            })
                            .unwrap_or_default()
                    };
                    let length: usize = header("content-length").parse().unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + length].to_vec();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    store
                        .0
                        .lock()
                        .expect("lock")
                        .push((line, header("content-type"), body));
                    buf.drain(..head_end + length);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_with_the_request_id_and_no_personal_value() {
    let (endpoint, received) = otlp_receiver().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        None,
        &[
            ("TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("TELEMETRY__SERVICE_NAME", "passerelle-otlp-test"),
        ],
    );
    serve.start().await;
    let http = reqwest::Client::new();
    let exports = generated(43, 5);
    let mut expected = HashMap::new();
    for (i, x) in exports.iter().enumerate() {
        let r = http
            .post(format!("{}/v1/inbound/atexo-sem/dossiers", serve.url))
            .bearer_auth(ATEXO_TOKEN)
            .header("Content-Type", "application/xml")
            .header("X-Request-Id", format!("otlp-req-{i}"))
            .body(x.xml.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 202, "{}", x.id);
        let body: serde_json::Value = r.json().await.expect("json");
        let id = body["dossiers"][0]["dossier_id"].as_str().expect("id");
        expected.insert(id.to_string(), expected_etat(x));
    }
    wait_for_agora(
        &http,
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(60),
    )
    .await;

    // The batch exporter sends every few seconds: wait for both kinds of span of the last request.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let bodies = loop {
        let got = received.0.lock().expect("lock").clone();
        let all: Vec<u8> = got.iter().flat_map(|(_, _, b)| b.clone()).collect();
        if contains(&all, b"otlp-req-4") && contains(&all, b"reconcile") {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no complete export within 30 s: {} requests received",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    serve.kill();

    for (line, content_type, _) in &bodies {
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        assert_eq!(content_type, "application/x-protobuf");
    }
    let all: Vec<u8> = bodies.iter().flat_map(|(_, _, b)| b.clone()).collect();
    // Protobuf keeps strings as they are: the resource's service name, the span names and the
    // request id attribute are found as bytes.
    for needle in [
        "passerelle-otlp-test",
        "service.name",
        "request",
        "reconcile",
        "request_id",
        "otlp-req-0",
    ] {
        assert!(
            contains(&all, needle.as_bytes()),
            "{needle} is not exported"
        );
    }
    let personal = personal_values(&exports);
    assert!(
        personal.len() >= 10,
        "values looked for: {}",
        personal.len()
    );
    let leaks = personal
        .iter()
        .filter(|v| contains(&all, v.as_bytes()))
        .count();
    assert_eq!(leaks, 0, "personal values in the exported spans");
}
