//! The synchronous flow end to end, over real HTTP: the gateway (embedded, or over RabbitMQ and
//! PostgreSQL) with AGORA played by the sandbox it starts.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use secrecy::ExposeSecret;

use crate::support::{
    agora_journal, assert_created_once, embedded_gateway, fixture, gateway, states, wait_for_agora,
    Gateway, Production,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orientation_then_the_atexo_dossier_reach_agora_as_one_dossier() {
    one_dossier_from_two_sources(embedded_gateway().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_rabbitmq_and_postgresql() {
    one_dossier_from_two_sources(gateway(Some(Production::new("two_sources")), &[]).await).await;
}

async fn one_dossier_from_two_sources(gw: Gateway) {
    let r = gw
        .post_ouiform(fixture("ouiform/valid/acceptee.json"), true)
        .await;
    assert_eq!(r.status(), 202);
    let first: serde_json::Value = r.json().await.expect("json");
    let r = gw.post_atexo(fixture("atexo_sem/valid/solde.xml")).await;
    assert_eq!(r.status(), 202);
    let second: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        second["dossiers"][0]["dossier_id"], first["dossier_id"],
        "one dossier for both sources"
    );

    // A repeated POST: same dossier, no second delivery.
    let again = gw.post_atexo(fixture("atexo_sem/valid/solde.xml")).await;
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
        .bearer_auth(gw.creds.ouiform.expose_secret())
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
        .bearer_auth(gw.creds.atexo_sem.expose_secret())
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
    gw: Gateway,
    posts: &[Post],
    concurrently: usize,
) -> BTreeMap<String, Vec<String>> {
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
    gw.stop().await;
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_shuffled_notifications_give_the_same_agora_journal() {
    let posts = lifecycles();
    let in_order = journal_of(embedded_gateway().await, &posts, 1).await;
    for ops in in_order.values() {
        assert_eq!(
            ops,
            &["agora_create", "agora_enter", "agora_exit", "agora_settle"],
            "{in_order:?}"
        );
    }
    let mut shuffled: Vec<Post> = posts.iter().chain(posts.iter()).cloned().collect();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let embedded = journal_of(embedded_gateway().await, &shuffled, 6).await;
    assert_eq!(embedded, in_order, "embedded, shuffled and duplicated");
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(8));
    let production = journal_of(
        gateway(Some(Production::new("shuffled")), &[]).await,
        &shuffled,
        6,
    )
    .await;
    assert_eq!(
        production, in_order,
        "RabbitMQ and PostgreSQL, shuffled and duplicated"
    );
}
