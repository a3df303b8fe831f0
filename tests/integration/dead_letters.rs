//! Dead letters end to end, over real HTTP: AGORA (the sandbox) refuses a dossier with a business
//! `422`, the gateway dead-letters it; the dossier is corrected at the source or on AGORA's side
//! and replayed (one by one, by anomaly code, or with `passerelle dead-letters`), and reaches
//! AGORA; the dossier's trace shows the lineage from each dead letter to the attempt its replay
//! opened, and shows personal fields only to the personal-data token.

use crate::support::PostingCredentials as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use passerelle_sandbox::{Faults, Sandbox, SandboxConfig};

use crate::support::{
    agora_journal, assert_created_once, assert_no_return_twice, atexo_returns, embedded_gateway,
    fixture, gateway, gateway_on, return_key, Gateway, Production,
};

/// Nothing AGORA applied was sent again, and no dossier was created twice.
async fn assert_nothing_sent_twice(gw: &Gateway) {
    agora_journal(&gw.sandbox_get("/_sandbox/journal").await).assert_nothing_sent_twice();
    assert_created_once(&gw.sandbox_get("/_sandbox/agora/creations").await);
}

/// The certification AGORA's rule refuses in these tests (valid for passerelle's own rules).
const REFUSED_CERTIFICATION: &str = "RNCP11111";
const PERSONAL_DATA_TOKEN: &str = "pd-token-4f1c2a9e0b7d";
const NIR: &str = "185077512345608";

/// The entered ATEXO SEM fixture as dossier `id` at `version`, on session `session` (one dossier
/// per session: the correlation key is NIR-13 and session), with this certification.
fn atexo(id: &str, version: u32, session: &str, certification: &str) -> Vec<u8> {
    let xml = String::from_utf8(fixture("atexo_sem/valid/entre.xml")).expect("UTF-8");
    let xml = xml
        .replace(
            "<dossier id=\"PDL-2019-000102\" version=\"4\"",
            &format!("<dossier id=\"{id}\" version=\"{version}\""),
        )
        .replace(
            "numeroSession=\"1330305\"",
            &format!("numeroSession=\"{session}\""),
        )
        .replace(
            "certification=\"RNCP34567\"",
            &format!("certification=\"{certification}\""),
        );
    assert!(
        xml.contains(id) && xml.contains(certification),
        "fixture changed"
    );
    xml.into_bytes()
}

/// An AGORA business rule (see `passerelle_sandbox::Refusal`), set over HTTP.
async fn refuse(gw: &Gateway, champ: &str, valeur: &str, code: &str) {
    let r = gw
        .http
        .post(format!("{}/_sandbox/agora/refusals", gw.sandbox_url))
        .json(&json!({"champ": champ, "valeur": valeur, "code": code}))
        .send()
        .await
        .expect("sandbox");
    assert_eq!(r.status(), 204);
}

/// AGORA lifts its rules: the correction made on its side.
async fn lift_refusals(gw: &Gateway) {
    let r = gw
        .http
        .delete(format!("{}/_sandbox/agora/refusals", gw.sandbox_url))
        .send()
        .await
        .expect("sandbox");
    assert_eq!(r.status(), 204);
}

async fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    gw.http
        .get(format!("{}{path}", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("answer")
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let r = get(gw, path, gw.creds.admin.expose_secret()).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("json")
}

async fn admin_post(gw: &Gateway, path: &str, body: Option<Value>) -> (u16, String, Value) {
    let mut req = gw
        .http
        .post(format!("{}{path}", gw.url))
        .bearer_auth(gw.creds.admin.expose_secret());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("answer");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.json().await.unwrap_or(Value::Null))
}

/// Polls `probe` until it gives a value.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The dead letters `GET /v1/dead-letters?{query}` lists, once there are `n`.
async fn dead_letters(gw: &Gateway, query: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} dead letter(s) for ?{query}"), || async {
        let list = admin_get(gw, &format!("/v1/dead-letters?{query}")).await;
        let list = list.as_array().cloned().unwrap_or_default();
        (list.len() == n).then_some(list)
    })
    .await
}

/// AGORA's state of the dossier passerelle calls `reference`, once it is `etat`.
async fn agora_reaches(gw: &Gateway, reference: &str, etat: &str) {
    eventually(&format!("{reference} in AGORA as {etat}"), || async {
        let agora = gw.agora().await;
        agora
            .as_array()
            .expect("dossiers")
            .iter()
            .any(|d| d["reference"] == reference && d["etat"] == etat)
            .then_some(())
    })
    .await
}

async fn in_agora(gw: &Gateway, reference: &str) -> bool {
    gw.agora()
        .await
        .as_array()
        .expect("dossiers")
        .iter()
        .any(|d| d["reference"] == reference)
}

/// The dossier's trace once its delivery toward AGORA is `status` with no attempt under way.
async fn settled_trace(gw: &Gateway, dossier_id: &str, status: &str) -> Value {
    eventually(&format!("{dossier_id} {status}"), || async {
        let t = admin_get(gw, &format!("/v1/dossiers/{dossier_id}")).await;
        let agora = &t["delivery"]["agora"];
        (agora["status"] == status && agora["replay_id"].is_null()).then_some(t)
    })
    .await
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_after_agora_corrects_itself_reaches_agora_with_its_lineage() {
    let gw = gateway(
        None,
        &[(
            "PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA",
            PERSONAL_DATA_TOKEN,
        )],
    )
    .await;
    replayed_after_agora_corrects_itself(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_rabbitmq_and_postgresql() {
    let gw = gateway(
        Some(Production::new("dead_letters")),
        &[(
            "PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA",
            PERSONAL_DATA_TOKEN,
        )],
    )
    .await;
    replayed_after_agora_corrects_itself(gw).await;
}

async fn replayed_after_agora_corrects_itself(gw: Gateway) {
    refuse(
        &gw,
        "/formation/certification",
        REFUSED_CERTIFICATION,
        "AG-CERTIF",
    )
    .await;
    let dossier = gw
        .post_atexo_accepted(
            "PDL-2019-000700",
            &atexo("PDL-2019-000700", 4, "1330305", REFUSED_CERTIFICATION),
        )
        .await;

    // AGORA's 422 dead-letters it at once, under AGORA's anomaly code.
    let first = dead_letters(&gw, "code=AG-CERTIF", 1).await.remove(0);
    assert_eq!(first["dossier_id"], dossier.as_str());
    assert_eq!(first["destination"], "agora");
    assert_eq!(first["reason"], "AG-CERTIF");
    assert!(first["replayed_at"].is_null() && first["after_replay"].is_null());
    let first_id = str_of(&first, "id").to_string();
    assert!(!in_agora(&gw, &dossier).await);

    // Replayed while AGORA still refuses: the attempt fails into a new dead letter naming it.
    let (status, _, replay) =
        admin_post(&gw, &format!("/v1/dead-letters/{first_id}/replay"), None).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["id"], first_id.as_str());
    assert_eq!(replay["dossier_id"], dossier.as_str());
    assert_eq!(replay["queued"], true);
    let first_replay = str_of(&replay, "replay_id").to_string();
    let second = dead_letters(&gw, &format!("dossier_id={dossier}"), 1)
        .await
        .remove(0);
    let second_id = str_of(&second, "id").to_string();
    assert_ne!(second_id, first_id);
    assert_eq!(second["after_replay"], first_replay.as_str());
    let both = admin_get(
        &gw,
        &format!("/v1/dead-letters?dossier_id={dossier}&include_replayed=true"),
    )
    .await;
    assert_eq!(both.as_array().map(Vec::len), Some(2), "{both}");

    // A dead letter is replayed once (409, saying where the newer one is); unknown ids are 404.
    let (status, ct, problem) =
        admin_post(&gw, &format!("/v1/dead-letters/{first_id}/replay"), None).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(problem["type"], "urn:passerelle:problem:already-replayed");
    assert!(str_of(&problem, "detail").contains(&dossier), "{problem}");
    let (status, ct, _) = admin_post(&gw, "/v1/dead-letters/no-such-id/replay", None).await;
    assert_eq!((status, ct.as_str()), (404, "application/problem+json"));

    // AGORA corrects itself; the newer dead letter is replayed and the dossier reaches AGORA.
    lift_refusals(&gw).await;
    let (status, _, replay) =
        admin_post(&gw, &format!("/v1/dead-letters/{second_id}/replay"), None).await;
    assert_eq!(status, 202, "{replay}");
    let second_replay = str_of(&replay, "replay_id").to_string();
    agora_reaches(&gw, &dossier, "ENTRE").await;

    // The trace: the source message, every AGORA call with its answer and attempt, and both
    // dead letters linked to the attempts.
    let trace = settled_trace(&gw, &dossier, "delivered").await;
    let messages = trace["history"]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["system"], "atexo_sem");
    let calls: Vec<(String, Value, Value)> = trace["history"]["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| {
            (
                str_of(o, "operation").to_string(),
                o["status"].clone(),
                o.get("replay_id").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    let create = |status: u16, replay: &Value| {
        calls.contains(&("create".to_string(), json!(status), replay.clone()))
    };
    assert!(create(422, &Value::Null), "the first refusal: {calls:?}");
    assert!(create(422, &json!(first_replay)), "{calls:?}");
    assert!(create(201, &json!(second_replay)), "{calls:?}");
    assert!(
        calls.contains(&("enter".to_string(), json!(200), json!(second_replay))),
        "{calls:?}"
    );
    let letters = trace["history"]["dead_letters"]
        .as_array()
        .expect("dead letters");
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["id"], first_id.as_str());
    assert_eq!(letters[0]["replay_id"], first_replay.as_str());
    assert!(letters[0]["replayed_at"].is_string());
    assert_eq!(letters[1]["id"], second_id.as_str());
    assert_eq!(letters[1]["after_replay"], first_replay.as_str());
    assert_eq!(letters[1]["replay_id"], second_replay.as_str());
    assert!(admin_get(&gw, "/v1/dead-letters")
        .await
        .as_array()
        .is_some_and(Vec::is_empty));

    // Personal fields: masked for the admin token, shown to the personal-data token only.
    assert_eq!(trace["personal_data"], "masked");
    let masked = trace["dossier"]["trainee"].to_string();
    assert!(
        !masked.contains(NIR) && !masked.contains("DUPONT"),
        "{masked}"
    );
    assert_eq!(trace["dossier"]["trainee"]["birth_name"], "***");
    let r = get(&gw, &format!("/v1/dossiers/{dossier}"), PERSONAL_DATA_TOKEN).await;
    assert_eq!(r.status(), 200);
    let shown: Value = r.json().await.expect("json");
    assert_eq!(shown["personal_data"], "shown");
    assert_eq!(shown["dossier"]["trainee"]["nir"], NIR);
    assert_eq!(shown["dossier"]["trainee"]["birth_name"], "DUPONT");
    assert_eq!(shown["history"]["messages"], trace["history"]["messages"]);
    assert_eq!(
        shown["history"]["operations"],
        trace["history"]["operations"]
    );
    // AGORA's libelles (which may quote a NIR or a name) only for the personal-data token.
    let libelles = |v: &Value| {
        v["history"]["dead_letters"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| {
                d["detail"]["anomalies"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|a| a["libelle"].clone())
            .collect::<Vec<_>>()
    };
    assert!(libelles(&trace).iter().all(|l| l == "***" || l.is_null()));
    assert_eq!(libelles(&shown).len(), libelles(&trace).len());
    let r = get(
        &gw,
        &format!("/v1/dossiers/{dossier}"),
        gw.creds.atexo_sem().expose_secret(),
    )
    .await;
    assert_eq!(r.status(), 403);

    // Filters are checked, each violation named with its field and rule.
    let (status, ct, problem) = admin_post(&gw, "/v1/dead-letters/replay", Some(json!({}))).await;
    assert_eq!((status, ct.as_str()), (422, "application/problem+json"));
    assert_eq!(problem["errors"][0]["pointer"], "/all");
    assert_eq!(problem["errors"][0]["rule"], "field.required");
    let (status, _, problem) = admin_post(
        &gw,
        "/v1/dead-letters/replay",
        Some(json!({"anomaly": "AG-CERTIF"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/anomaly");
    let r = get(
        &gw,
        "/v1/dead-letters?since=yesterday",
        gw.creds.admin.expose_secret(),
    )
    .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["pointer"], "/since");
    assert_eq!(problem["errors"][0]["rule"], "schema.format");
    assert_nothing_sent_twice(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_corrected_at_the_source_then_replayed_reaches_agora_once() {
    let gw = embedded_gateway().await;
    refuse(
        &gw,
        "/formation/certification",
        REFUSED_CERTIFICATION,
        "AG-CERTIF",
    )
    .await;
    let id = "PDL-2019-000710";
    let dossier = gw
        .post_atexo_accepted(id, &atexo(id, 4, "1330305", REFUSED_CERTIFICATION))
        .await;
    let letter = dead_letters(&gw, &format!("dossier_id={dossier}"), 1)
        .await
        .remove(0);

    // ATEXO SEM sends the corrected dossier: its new version revives it, and it reaches AGORA.
    let corrected = gw
        .post_atexo_accepted(id, &atexo(id, 5, "1330305", "RNCP34567"))
        .await;
    assert_eq!(corrected, dossier);
    agora_reaches(&gw, &dossier, "ENTRE").await;
    // The dead letter waits for the operator (only an operator replays), who replays it: the
    // dossier is reconciled again, and nothing more is owed.
    let still = dead_letters(&gw, &format!("dossier_id={dossier}"), 1).await;
    assert_eq!(still[0]["id"], letter["id"]);
    let (status, _, replay) = admin_post(
        &gw,
        &format!("/v1/dead-letters/{}/replay", str_of(&letter, "id")),
        None,
    )
    .await;
    assert_eq!(status, 202, "{replay}");
    let trace = settled_trace(&gw, &dossier, "delivered").await;
    assert_eq!(
        trace["history"]["messages"].as_array().map(Vec::len),
        Some(2)
    );
    let letters = trace["history"]["dead_letters"]
        .as_array()
        .expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["replay_id"], replay["replay_id"]);
    let creations = gw.sandbox_get("/_sandbox/agora/creations").await;
    assert_eq!(creations[0]["created"], 1, "{creations}");
    assert_eq!(gw.agora().await.as_array().map(Vec::len), Some(1));
    assert_nothing_sent_twice(&gw).await;
    gw.stop().await;
}

/// `passerelle dead-letters …` as a child process, on the gateway's ledger and queue.
fn cli(gw: &Gateway, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway_process"))
        .arg("dead-letters")
        .args(args)
        .env("PASSERELLE__DATA__DIR", &gw.data_dir)
        .env("PASSERELLE__LEDGER__URL", &gw.ledger_url)
        .env("PASSERELLE__QUEUE__URL", &gw.queue_url)
        .env("RUST_LOG", "warn")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("passerelle dead-letters runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_by_anomaly_code_and_the_command_line() {
    let gw = embedded_gateway().await;
    refuse(
        &gw,
        "/formation/certification",
        REFUSED_CERTIFICATION,
        "AG-CERTIF",
    )
    .await;
    refuse(&gw, "/formation/numero_session", "1330399", "AG-SESSION").await;
    let mut ids = Vec::new();
    for (id, session, certification) in [
        ("PDL-2019-000721", "1330321", REFUSED_CERTIFICATION),
        ("PDL-2019-000722", "1330322", REFUSED_CERTIFICATION),
        ("PDL-2019-000723", "1330399", "RNCP34567"),
    ] {
        ids.push(
            gw.post_atexo_accepted(id, &atexo(id, 4, session, certification))
                .await,
        );
    }
    let all = dead_letters(&gw, "", 3).await;
    let letter_of = |dossier: &str| {
        all.iter()
            .find(|d| d["dossier_id"] == dossier)
            .map(|d| str_of(d, "id").to_string())
            .expect("a dead letter")
    };
    let (l1, l2, l3) = (letter_of(&ids[0]), letter_of(&ids[1]), letter_of(&ids[2]));

    // The command line lists them, straight from the ledger, with the same filters.
    let list = cli(&gw, &["list", "--format", "json"]);
    assert_eq!(list.status.code(), Some(0), "{list:?}");
    assert_eq!(json_lines(&list).len(), 3);
    let list = cli(&gw, &["list", "--format", "json", "--code", "AG-SESSION"]);
    let lines = json_lines(&list);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], l3.as_str());
    let text = cli(&gw, &["list", "--destination", "agora"]);
    assert!(stdout(&text).contains("3 dead letter(s)"), "{text:?}");

    // AGORA corrects itself; a bulk replay by code replays only that code's dead letters.
    lift_refusals(&gw).await;
    let (status, _, bulk) = admin_post(
        &gw,
        "/v1/dead-letters/replay",
        Some(json!({"code": "AG-CERTIF"})),
    )
    .await;
    assert_eq!(status, 202, "{bulk}");
    assert_eq!(bulk["count"], 2);
    assert_eq!(bulk["ids"], json!([l1, l2]));
    assert!(bulk["replayed"]
        .as_array()
        .expect("replayed")
        .iter()
        .all(|r| r["queued"] == true && r["replay_id"].is_string()));
    agora_reaches(&gw, &ids[0], "ENTRE").await;
    agora_reaches(&gw, &ids[1], "ENTRE").await;
    let open = admin_get(&gw, "/v1/dead-letters").await;
    assert_eq!(open.as_array().map(Vec::len), Some(1));
    assert_eq!(open[0]["id"], l3.as_str());
    assert!(!in_agora(&gw, &ids[2]).await);

    // The command line's replay: what cannot be replayed is exit 1, a usage error exit 2.
    let again = cli(&gw, &["replay", &l1]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already replayed"));
    let unknown = cli(&gw, &["replay", "no-such-id"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    for usage in [
        &["replay"][..],
        &["replay", l3.as_str(), "--all"],
        &["replay", l3.as_str(), "--code", "X"],
    ] {
        assert_eq!(cli(&gw, usage).status.code(), Some(2), "{usage:?}");
    }
    // Replayed by the command line, delivered by the running gateway's workers.
    let replayed = cli(&gw, &["replay", "--all", "--code", "AG-SESSION"]);
    assert_eq!(replayed.status.code(), Some(0), "{replayed:?}");
    let out = stdout(&replayed);
    assert!(out.contains(&format!("replayed dead letter {l3}")), "{out}");
    assert!(
        out.contains("1 dead letter(s) replayed, 0 task(s) not queued"),
        "{out}"
    );
    agora_reaches(&gw, &ids[2], "ENTRE").await;
    let nothing = cli(&gw, &["replay", "--all"]);
    assert_eq!(nothing.status.code(), Some(0));
    assert!(stdout(&nothing).contains("0 dead letter(s) replayed"));
    let history = cli(&gw, &["list", "--include-replayed", "--format", "json"]);
    let lines = json_lines(&history);
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|d| d["replayed_at"].is_string() && d["replay_id"].is_string()));
    assert!(cli(&gw, &["list", "--format", "json"]).stdout.is_empty());
    assert_nothing_sent_twice(&gw).await;
    gw.stop().await;
}

/// The returns ATEXO SEM received, once there are `n`.
async fn returns_once(gw: &Gateway, n: usize) -> Vec<String> {
    let got = eventually(&format!("{n} return(s) to ATEXO SEM"), || async {
        let r = atexo_returns(&gw.http, &gw.sandbox_url).await;
        (r.len() >= n).then_some(r)
    })
    .await;
    assert_no_return_twice(&got);
    let mut keys: Vec<String> = got.iter().map(return_key).collect();
    keys.sort();
    keys
}

/// AGORA's `422` goes back to ATEXO SEM as a rejection return (its anomaly, no number, no state),
/// once; the dossier replayed once AGORA corrects itself gets its number and its entry returned,
/// once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_is_returned_to_atexo_sem_once() {
    let sb = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let gw = gateway_on(&sb, None, &[]).await;
    refuse(
        &gw,
        "/formation/certification",
        REFUSED_CERTIFICATION,
        "AG-CERTIF",
    )
    .await;
    let id = "PDL-2019-000730";
    let dossier = gw
        .post_atexo_accepted(id, &atexo(id, 4, "1330305", REFUSED_CERTIFICATION))
        .await;
    let letter = dead_letters(&gw, &format!("dossier_id={dossier}"), 1)
        .await
        .remove(0);
    assert_eq!(
        returns_once(&gw, 1).await,
        [format!("{id} - - [AG-CERTIF]")]
    );
    let rejection = &atexo_returns(&gw.http, &gw.sandbox_url).await[0];
    assert_eq!(
        rejection["anomalies"][0]["champ"],
        "/formation/certification"
    );

    lift_refusals(&gw).await;
    let (status, _, _) = admin_post(
        &gw,
        &format!("/v1/dead-letters/{}/replay", str_of(&letter, "id")),
        None,
    )
    .await;
    assert_eq!(status, 202);
    agora_reaches(&gw, &dossier, "ENTRE").await;
    let numero = sb
        .agora_dossier("2", &dossier)
        .expect("in AGORA")
        .numero_agora;
    let mut want = vec![
        format!("{id} - - [AG-CERTIF]"),
        format!("{id} {numero} CREE []"),
        format!("{id} {numero} ENTRE []"),
    ];
    want.sort();
    assert_eq!(returns_once(&gw, 3).await, want);
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(returns_once(&gw, 3).await, want);
    // The dossier's trace lists its returns from the outbox, each taken by ATEXO SEM under the
    // key it was posted with.
    let trace = admin_get(&gw, &format!("/v1/dossiers/{dossier}")).await;
    let returns = trace["history"]["returns"].as_array().expect("returns");
    let mut listed: Vec<String> = returns
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "sent", "{r}");
            let codes: Vec<&str> = r["anomaly_codes"]
                .as_array()
                .expect("codes")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{} {} {} [{}]",
                str_of(r, "atexo_dossier"),
                r["numero_agora"].as_str().unwrap_or("-"),
                r["etat"].as_str().unwrap_or("-"),
                codes.join(",")
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, want);
    let keys: std::collections::HashSet<String> = atexo_returns(&gw.http, &gw.sandbox_url)
        .await
        .iter()
        .filter_map(|r| r["key"].as_str().map(str::to_owned))
        .collect();
    assert!(
        returns
            .iter()
            .all(|r| keys.contains(str_of(r, "return_id"))),
        "each return posted with its outbox key as Idempotency-Key"
    );
    assert_nothing_sent_twice(&gw).await;
    gw.stop().await;
    sb.shutdown().await;
}

/// A dossier whose transient failures exhaust `retry.max_attempts` (AGORA answers every call
/// `500`) becomes a dead letter after exactly that many attempts, with nothing applied; replayed
/// once AGORA recovers, it reaches AGORA, created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_make_a_dead_letter_that_a_replay_delivers() {
    let sb = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    sb.set_faults(Faults {
        error_500: 1.0,
        ..Faults::none()
    })
    .expect("faults");
    let gw = gateway_on(
        &sb,
        None,
        &[
            ("PASSERELLE__RETRY__MAX_ATTEMPTS", "3"),
            ("PASSERELLE__RETRY__BASE_MS", "20"),
            ("PASSERELLE__RETRY__MAX_MS", "50"),
        ],
    )
    .await;
    let id = "PDL-2019-000740";
    let dossier = gw
        .post_atexo_accepted(id, &atexo(id, 4, "1330305", "RNCP34567"))
        .await;
    let letter = dead_letters(&gw, &format!("dossier_id={dossier}"), 1)
        .await
        .remove(0);
    assert_eq!(letter["destination"], "agora");
    let reason = str_of(&letter, "reason");
    assert!(
        reason == "http.500" || reason == "transport",
        "an exhausted dead letter's code: {letter}"
    );
    let calls: Vec<_> = sb
        .journal()
        .into_iter()
        .filter(|c| c.reference.as_deref() == Some(dossier.as_str()))
        .collect();
    assert_eq!(
        calls.len(),
        3,
        "one call per attempt, then nothing: {calls:?}"
    );
    assert!(calls.iter().all(|c| c.status == Some(500) && !c.applied));
    assert!(!in_agora(&gw, &dossier).await);

    sb.set_faults(Faults::none()).expect("faults");
    let (status, _, _) = admin_post(
        &gw,
        &format!("/v1/dead-letters/{}/replay", str_of(&letter, "id")),
        None,
    )
    .await;
    assert_eq!(status, 202);
    agora_reaches(&gw, &dossier, "ENTRE").await;
    settled_trace(&gw, &dossier, "delivered").await;
    assert_nothing_sent_twice(&gw).await;
    gw.stop().await;
    sb.shutdown().await;
}
