//! The synchronous flow end to end, over real HTTP: the gateway (embedded, or over RabbitMQ and
//! PostgreSQL) with AGORA played by the sandbox it starts.

use crate::support::PostingCredentials as _;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use passerelle_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use secrecy::ExposeSecret;

use crate::support::{
    agora_journal, assert_created_once, atexo_returns, embedded_gateway, fixture, gateway_on,
    return_key, states, wait_for_agora, Gateway, Production,
};

async fn sandbox() -> RunningSandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orientation_then_the_atexo_dossier_reach_agora_as_one_dossier() {
    let sb = sandbox().await;
    one_dossier_from_two_sources(&sb, gateway_on(&sb, None, &[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_rabbitmq_and_postgresql() {
    let sb = sandbox().await;
    let gw = gateway_on(&sb, Some(Production::new("two_sources")), &[]).await;
    one_dossier_from_two_sources(&sb, gw).await;
}

/// `/readyz` reports each posting system's posts since start, never gating: idle, then what
/// the latest post came to (an unsigned orientation is a `401`, an invalid export a `422`), and
/// ATEXO SEM's returns once AGORA's answer was posted back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_each_posting_systems_posts_and_the_returns() {
    let sb = sandbox().await;
    let gw = gateway_on(&sb, None, &[]).await;
    let ready = || async {
        // An answer is served again for up to a second: ask past it.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let r = gw
            .http
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 200, "reported, never gating");
        r.json::<serde_json::Value>().await.expect("json")["systems"].clone()
    };
    let systems = ready().await;
    assert_eq!(systems["atexo_sem"]["status"], "idle", "{systems}");
    assert_eq!(systems["ouiform"]["status"], "idle", "{systems}");
    assert_eq!(
        systems["atexo_sem"]["returns"]["status"], "idle",
        "{systems}"
    );

    // An anonymous post is nobody's news: it cannot make a system look as if it were failing.
    let r = gw
        .http
        .post(format!("{}/v1/inbound/atexo-sem/dossiers", gw.url))
        .header("Content-Type", "application/xml")
        .body(fixture("atexo_sem/valid/entre.xml"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    let systems = ready().await;
    assert_eq!(systems["atexo_sem"]["status"], "idle", "{systems}");
    // An orientation with OUIFORM's token but no signature is OUIFORM's.
    let r = gw
        .post_ouiform(fixture("ouiform/valid/acceptee.json"), false)
        .await;
    assert_eq!(r.status(), 401);
    let r = gw.post_atexo(fixture("atexo_sem/valid/entre.xml")).await;
    assert_eq!(r.status(), 202);
    let systems = ready().await;
    assert_refusing(&systems["ouiform"], (0, 1), 401, "unauthorized");
    let atexo = &systems["atexo_sem"];
    assert_eq!(atexo["status"], "ok", "{systems}");
    assert_eq!(atexo["accepted"], 1);
    assert!(atexo["last_accepted_at"].is_string(), "{systems}");

    // AGORA's answer is posted back to ATEXO SEM: the sender's part says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let systems = ready().await;
        let returns = &systems["atexo_sem"]["returns"];
        if returns["status"] == "ok" && returns["sent"].as_u64() >= Some(1) {
            assert_eq!(returns["failed"], 0, "{systems}");
            break;
        }
        assert!(Instant::now() < deadline, "no return reported: {systems}");
    }

    let r = gw
        .post_atexo(fixture("atexo_sem/invalid/nir_checksum.xml"))
        .await;
    assert_eq!(r.status(), 422);
    let systems = ready().await;
    assert_refusing(&systems["atexo_sem"], (1, 1), 422, "invalid");
    // Nothing personal in it: the NIR of the fixture is not there, masked or not.
    assert!(!systems.to_string().contains("1850775"), "{systems}");
    gw.stop().await;
}

/// A posting system's part of `/readyz` once its latest post was refused.
fn assert_refusing(
    part: &serde_json::Value,
    (accepted, refused): (u64, u64),
    status: u16,
    kind: &str,
) {
    assert_eq!(part["status"], "refusing", "{part}");
    assert_eq!(part["accepted"], accepted, "{part}");
    assert_eq!(part["refused"], refused, "{part}");
    assert_eq!(part["last_refusal"]["status"], status, "{part}");
    assert_eq!(
        part["last_refusal"]["type"],
        format!("urn:passerelle:problem:{kind}"),
        "{part}"
    );
}

/// The ATEXO SEM dossier of the OUIFORM fixture's trainee, without the job seeker's Pôle emploi
/// ids (optional in ATEXO SEM): AGORA's `id_national_de` can then come from OUIFORM alone.
fn solde_without_pole_emploi_ids() -> Vec<u8> {
    let xml = String::from_utf8(fixture("atexo_sem/valid/solde.xml")).expect("UTF-8");
    let start = xml.find("<identifiantPE ").expect("identifiantPE");
    let end = start + xml[start..].find("/>").expect("its end") + 2;
    format!("{}{}", &xml[..start], &xml[end..]).into_bytes()
}

async fn one_dossier_from_two_sources(sb: &RunningSandbox, gw: Gateway) {
    let r = gw
        .post_ouiform(fixture("ouiform/valid/acceptee.json"), true)
        .await;
    assert_eq!(r.status(), 202);
    let first: serde_json::Value = r.json().await.expect("json");
    let r = gw.post_atexo(solde_without_pole_emploi_ids()).await;
    assert_eq!(r.status(), 202);
    let second: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        second["dossiers"][0]["dossier_id"], first["dossier_id"],
        "one dossier for both sources"
    );

    // A repeated POST: same dossier, no second delivery.
    let again = gw.post_atexo(solde_without_pole_emploi_ids()).await;
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["message_id"], second["message_id"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agora = gw.agora().await;
        if states(&agora) == vec!["SOLDE".to_string()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "AGORA never reached SOLDE: {agora}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let creations: serde_json::Value = gw
        .http
        .get(format!("{}/_sandbox/agora/creations", gw.sandbox_url))
        .send()
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json");
    let created: u64 = creations
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["created"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(created, 1, "created exactly once: {creations}");

    // What AGORA stores: ATEXO SEM's fields, and OUIFORM's where ATEXO SEM has none.
    let dossier_id = first["dossier_id"].as_str().expect("dossier_id");
    let held = sb.agora_dossier("2", dossier_id).expect("AGORA holds it");
    let body = serde_json::to_value(&held.body).expect("json");
    let expected = [
        ("/reference", serde_json::json!(dossier_id)),
        ("/financeur/code", "2".into()),
        ("/dispositif", "PRF-QUALIF".into()),
        ("/stagiaire/nir13", "1850775123456".into()),
        ("/stagiaire/nom_naissance", "DUPONT".into()),
        ("/stagiaire/prenoms", "Jean Pierre".into()),
        ("/stagiaire/date_naissance", "1985-07-12".into()),
        ("/stagiaire/code_postal", "44000".into()),
        // OUIFORM's idNationalDE: ATEXO SEM's dossier has no identifiantPE.
        (
            "/stagiaire/id_national_de",
            "a3f9c2e1-0b7d-4c6e-9f10-2d5e8b7a6c41".into(),
        ),
        ("/formation/numero_session", "1330305".into()),
        // ATEXO SEM's title wins over OUIFORM's ("Soudeur TIG").
        ("/formation/intitule", "Soudeur & tuyauteur".into()),
        ("/formation/certification", "RNCP34567".into()),
        ("/formation/date_debut", "2019-09-02".into()),
        ("/financements/0/montant_engage_cents", 452_000.into()),
    ];
    for (pointer, value) in expected {
        assert_eq!(body.pointer(pointer), Some(&value), "{pointer} in AGORA");
    }

    // ATEXO SEM heard of each step once: the number, then each accepted transition.
    let deadline = Instant::now() + Duration::from_secs(30);
    let returns = loop {
        let returns = atexo_returns(&gw.http, &gw.sandbox_url).await;
        if returns.len() >= 4 || Instant::now() > deadline {
            break returns;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut keys: Vec<String> = returns.iter().map(return_key).collect();
    keys.sort();
    let numero = &held.numero_agora;
    let mut want: Vec<String> = ["CREE", "ENTRE", "SOLDE", "SORTI"]
        .iter()
        .map(|e| format!("PDL-2019-000105 {numero} {e} []"))
        .collect();
    want.sort();
    assert_eq!(keys, want, "one return per AGORA number and transition");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_status_and_rule() {
    let gw = embedded_gateway().await;
    let url = format!("{}/v1/inbound/atexo-sem/dossiers", gw.url);
    // Unauthenticated.
    let r = gw
        .http
        .post(&url)
        .header("Content-Type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Another system's token.
    let r = gw
        .http
        .post(&url)
        .bearer_auth(gw.creds.ouiform().expose_secret())
        .header("Content-Type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    // Wrong content type.
    let r = gw
        .http
        .post(&url)
        .bearer_auth(gw.creds.atexo_sem().expose_secret())
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 415);
    // Invalid: 422 listing the rule at the XML path.
    let r = gw
        .post_atexo(fixture("atexo_sem/invalid/nir_checksum.xml"))
        .await;
    assert_eq!(r.status(), 422);
    let p: serde_json::Value = r.json().await.expect("problem");
    let rules: Vec<&str> = p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["rule"].as_str())
        .collect();
    assert!(rules.contains(&"nir.checksum"), "{p}");
    assert!(
        !p.to_string().contains("185077512345609"),
        "no NIR in errors"
    );
    // Unparseable: 400.
    let r = gw.post_atexo(b"<exportSEM><dossier>".to_vec()).await;
    assert_eq!(r.status(), 400);
    // OUIFORM without its signature, or with a wrong one: 401.
    let r = gw
        .post_ouiform(fixture("ouiform/valid/acceptee.json"), false)
        .await;
    assert_eq!(r.status(), 401);
    // Oversized: 413.
    let big = vec![b' '; 10 * 1024 * 1024 + 1];
    let r = gw.post_atexo(big).await;
    assert_eq!(r.status(), 413);
    // Nothing of it reached AGORA.
    assert_eq!(gw.agora().await.as_array().map(Vec::len), Some(0));
    // Health and the OpenAPI document answer.
    let r = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let r = gw
        .http
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .expect("openapi");
    let doc: serde_json::Value = r.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    gw.stop().await;
}

/// One source's notification, as posted.
#[derive(Debug, Clone)]
enum Post {
    Atexo { id: String, xml: Vec<u8> },
    Ouiform(Vec<u8>),
}

/// Three trainees (one session each), each with an OUIFORM orientation and four successive
/// versions of its ATEXO SEM dossier (registered, entered, exited, settled).
fn lifecycles() -> Vec<Post> {
    let mut posts = Vec::new();
    for k in 0..3u32 {
        let session = format!("numeroSession=\"{}\"", 1_330_305 + k);
        let orientation = String::from_utf8(fixture("ouiform/valid/acceptee.json"))
            .expect("utf-8")
            .replace(
                "\"numeroSession\": \"1330305\"",
                &format!("\"numeroSession\": \"{}\"", 1_330_305 + k),
            )
            .replace("OF-2019-000042", &format!("OF-2019-00090{k}"));
        posts.push(Post::Ouiform(orientation.into_bytes()));
        let id = format!("PDL-2019-00090{k}");
        for (version, file) in ["inscrit", "entre", "sorti", "solde"].iter().enumerate() {
            let xml = String::from_utf8(fixture(&format!("atexo_sem/valid/{file}.xml")))
                .expect("utf-8")
                .replace("numeroSession=\"1330305\"", &session);
            // Every fixture is one dossier at version 4: give them one id and successive versions.
            let open = xml.find("<dossier id=\"").expect("a dossier");
            let close = open + xml[open..].find("dateMaj").expect("dateMaj");
            let xml = format!(
                "{}<dossier id=\"{id}\" version=\"{}\" {}",
                &xml[..open],
                version + 1,
                &xml[close..]
            );
            posts.push(Post::Atexo {
                id: id.clone(),
                xml: xml.into_bytes(),
            });
        }
    }
    posts
}

/// Posts one notification; returns (ATEXO id or orientation, dossier_id).
async fn post(gw: &Gateway, p: &Post) -> Option<(String, String)> {
    match p {
        Post::Atexo { id, xml } => {
            let r = gw.post_atexo(xml.clone()).await;
            assert_eq!(r.status(), 202, "{id}");
            let body: serde_json::Value = r.json().await.expect("json");
            let dossier = body["dossiers"][0]["dossier_id"].as_str().expect("id");
            Some((id.clone(), dossier.to_string()))
        }
        Post::Ouiform(body) => {
            let r = gw.post_ouiform(body.clone(), true).await;
            assert_eq!(r.status(), 202);
            None
        }
    }
}

/// What AGORA applied, per ATEXO dossier id (references differ between installations: each has
/// its own salt).
async fn applied_by_atexo_id(
    gw: &Gateway,
    ids: &HashMap<String, String>,
) -> (
    BTreeMap<String, Vec<String>>,
    Vec<serde_json::Value>,
    BTreeMap<String, Vec<String>>,
) {
    let journal = agora_journal(&gw.sandbox_get("/_sandbox/journal").await);
    let by_reference: HashMap<&String, &String> = ids.iter().map(|(a, d)| (d, a)).collect();
    let applied = journal
        .applied
        .into_iter()
        .map(|(reference, ops)| {
            let atexo = by_reference
                .get(&reference)
                .unwrap_or_else(|| panic!("AGORA got an unknown reference {reference}"));
            ((*atexo).clone(), ops)
        })
        .collect();
    (applied, journal.conflicts, journal.trace)
}

async fn journal_of(
    production: Option<Production>,
    posts: &[Post],
    concurrently: usize,
) -> BTreeMap<String, Vec<String>> {
    let sb = sandbox().await;
    let gw = gateway_on(&sb, production, &[]).await;
    let mut ids = HashMap::new();
    for chunk in posts.chunks(concurrently) {
        let answers = futures_util::future::join_all(chunk.iter().map(|p| post(&gw, p))).await;
        ids.extend(answers.into_iter().flatten());
    }
    assert_eq!(ids.len(), 3, "one dossier per trainee: {ids:?}");
    let expected = ids.values().map(|d| (d.clone(), Some("SOLDE"))).collect();
    wait_for_agora(
        &gw.http,
        &gw.sandbox_url,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    let (applied, conflicts, trace) = applied_by_atexo_id(&gw, &ids).await;
    assert!(
        conflicts.is_empty(),
        "a call was sent twice: {conflicts:#?}\n{trace:#?}"
    );
    assert_created_once(&gw.sandbox_get("/_sandbox/agora/creations").await);
    // Returns: exactly one per AGORA number and accepted transition of each dossier, none twice
    // however the notifications were duplicated or shuffled.
    let mut want: Vec<String> = Vec::new();
    for (atexo, dossier) in &ids {
        let numero = sb
            .agora_dossier("2", dossier)
            .expect("in AGORA")
            .numero_agora;
        for etat in ["CREE", "ENTRE", "SORTI", "SOLDE"] {
            want.push(format!("{atexo} {numero} {etat} []"));
        }
    }
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got: Vec<String> = atexo_returns(&gw.http, &gw.sandbox_url)
            .await
            .iter()
            .map(return_key)
            .collect();
        got.sort();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline && got.len() < want.len(),
            "returns to ATEXO SEM: {got:#?}, expected {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
    sb.shutdown().await;
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_shuffled_notifications_give_the_same_agora_journal() {
    let posts = lifecycles();
    let in_order = journal_of(None, &posts, 1).await;
    for ops in in_order.values() {
        assert_eq!(
            ops,
            &["agora_create", "agora_enter", "agora_exit", "agora_settle"],
            "{in_order:?}"
        );
    }
    let mut shuffled: Vec<Post> = posts.iter().chain(posts.iter()).cloned().collect();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let embedded = journal_of(None, &shuffled, 6).await;
    assert_eq!(embedded, in_order, "embedded, shuffled and duplicated");
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(8));
    let production = journal_of(Some(Production::new("shuffled")), &shuffled, 6).await;
    assert_eq!(
        production, in_order,
        "RabbitMQ and PostgreSQL, shuffled and duplicated"
    );
}

/// An ATEXO SEM fixture (one dossier at version 4) as dossier `id` at `version`.
fn atexo_version(file: &str, id: &str, version: u32) -> Vec<u8> {
    let xml = String::from_utf8(fixture(&format!("atexo_sem/valid/{file}.xml"))).expect("utf-8");
    let open = xml.find("<dossier id=\"").expect("a dossier");
    let close = open + xml[open..].find("dateMaj").expect("dateMaj");
    format!(
        "{}<dossier id=\"{id}\" version=\"{version}\" {}",
        &xml[..open],
        &xml[close..]
    )
    .into_bytes()
}

/// `annulation` end to end: a dossier AGORA created (`CREE`), then cancelled in ATEXO SEM, is
/// cancelled in AGORA once, and ATEXO SEM hears of both steps once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_cancelled_after_its_creation_is_cancelled_in_agora() {
    let sb = sandbox().await;
    let gw = gateway_on(&sb, None, &[]).await;
    let atexo = "PDL-2019-000777";
    let id = gw
        .post_atexo_accepted(atexo, &atexo_version("inscrit", atexo, 1))
        .await;
    let created = HashMap::from([(id.clone(), Some("CREE"))]);
    wait_for_agora(&gw.http, &gw.sandbox_url, &created, Duration::from_secs(30)).await;
    let again = gw
        .post_atexo_accepted(atexo, &atexo_version("annule", atexo, 2))
        .await;
    assert_eq!(again, id);
    let cancelled = HashMap::from([(id.clone(), Some("ANNULE"))]);
    wait_for_agora(
        &gw.http,
        &gw.sandbox_url,
        &cancelled,
        Duration::from_secs(30),
    )
    .await;

    let journal = agora_journal(&gw.sandbox_get("/_sandbox/journal").await);
    journal.assert_nothing_sent_twice();
    assert_eq!(
        journal.applied.get(&id).map(Vec::as_slice),
        Some(&["agora_create".to_string(), "agora_cancel".to_string()][..]),
        "{:?}",
        journal.trace
    );
    let numero = sb.agora_dossier("2", &id).expect("in AGORA").numero_agora;
    let want = [
        format!("{atexo} {numero} ANNULE []"),
        format!("{atexo} {numero} CREE []"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got: Vec<String> = atexo_returns(&gw.http, &gw.sandbox_url)
            .await
            .iter()
            .map(return_key)
            .collect();
        got.sort();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline && got.len() < want.len(),
            "returns: {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
    sb.shutdown().await;
}
