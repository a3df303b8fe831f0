//! The synchronous flow end to end, over real HTTP: the gateway (embedded ledger and queue) with
//! AGORA played by the sandbox it starts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use passerelle::settings::Settings;
use passerelle::startup::{Application, RunningApp};
use secrecy::ExposeSecret;
use sha2::Sha256;

struct Gateway {
    url: String,
    app: Option<RunningApp>,
    creds: passerelle::routes::Credentials,
    sandbox_url: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn fixture(p: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(p);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn embedded_gateway() -> Gateway {
    gateway(None).await
}

/// A fresh PostgreSQL database and RabbitMQ vhost for this run (the real services, as in
/// production). Fails, never skips, when either is missing: `bash tests/services.sh` starts them.
fn production_urls() -> (String, String) {
    let name = format!("passerelle_e2e_{}", std::process::id());
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{cmd} is not runnable ({e}); run `bash tests/services.sh`")
            });
        assert!(
            out.status.success(),
            "{cmd} {args:?} failed: {}; run `bash tests/services.sh`",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let psql = |sql: String| {
        run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                &sql,
            ],
        )
    };
    psql(format!("DROP DATABASE IF EXISTS {name}"));
    psql(format!("CREATE DATABASE {name}"));
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_vhost", &name])
        .output();
    run("rabbitmqctl", &["add_vhost", &name]);
    run(
        "rabbitmqctl",
        &["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"],
    );
    (
        format!("postgres://postgres@127.0.0.1:5432/{name}"),
        format!("amqp://guest:guest@127.0.0.1:5672/{name}"),
    )
}

async fn gateway(production: Option<(String, String)>) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let (ledger, queue) = production.unwrap_or_else(|| {
        (
            format!("sqlite://{d}/passerelle.db"),
            format!("embedded:{d}/queue.db"),
        )
    });
    let settings = Settings::load(
        None,
        vec![
            (
                "PASSERELLE__SERVER__BIND".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            ("PASSERELLE__DATA__DIR".to_string(), d.clone()),
            ("PASSERELLE__LEDGER__URL".to_string(), ledger),
            ("PASSERELLE__QUEUE__URL".to_string(), queue),
            ("PASSERELLE__RETRY__BASE_MS".to_string(), "50".to_string()),
            ("PASSERELLE__RETRY__MAX_MS".to_string(), "500".to_string()),
        ],
    )
    .expect("settings");
    let app = Application::build(settings)
        .await
        .expect("the gateway starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let creds = app.credentials.clone();
    let sandbox_url = app
        .sandbox()
        .map(|s| s.base_url())
        .expect("embedded mode runs the sandbox");
    Gateway {
        url,
        creds,
        sandbox_url,
        app: Some(app.spawn()),
        _dir: dir,
        http: reqwest::Client::new(),
    }
}

impl Gateway {
    async fn post_atexo(&self, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/inbound/atexo-sem/dossiers", self.url))
            .bearer_auth(self.creds.atexo_sem.expose_secret())
            .header("Content-Type", "application/xml")
            .body(body)
            .send()
            .await
            .expect("answer")
    }

    async fn post_ouiform(&self, body: Vec<u8>, sign: bool) -> reqwest::Response {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.creds.ouiform_hmac.expose_secret().as_bytes())
                .expect("hmac");
        mac.update(&body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut req = self
            .http
            .post(format!("{}/v1/inbound/ouiform/orientations", self.url))
            .bearer_auth(self.creds.ouiform.expose_secret())
            .header("Content-Type", "application/json");
        if sign {
            req = req.header("X-Ouiform-Signature", sig);
        }
        req.body(body).send().await.expect("answer")
    }

    /// AGORA's dossiers as the sandbox shows them over HTTP.
    async fn agora(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/_sandbox/agora/dossiers", self.sandbox_url))
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("json")
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

fn states(agora: &serde_json::Value) -> Vec<String> {
    agora
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["etat"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orientation_then_the_atexo_dossier_reach_agora_as_one_dossier() {
    one_dossier_from_two_sources(embedded_gateway().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_rabbitmq_and_postgresql() {
    let urls = production_urls();
    one_dossier_from_two_sources(gateway(Some(urls)).await).await;
    let name = format!("passerelle_e2e_{}", std::process::id());
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["delete_vhost", &name])
        .output();
    let _ = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .output();
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
