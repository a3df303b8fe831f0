//! Hardening (issue 18): the ledger's PostgreSQL over TLS, the admin listener, cheap probes, no
//! driver's text in answers, the details of authentication, HTTPS and client certificates on the
//! listeners, AGORA's 429s, and what a 400 may quote.

use crate::support::PostingCredentials as _;
use std::time::Duration;

use passerelle_sandbox::{Faults, Sandbox, SandboxConfig};
use secrecy::ExposeSecret;

use crate::support::{fixture, gateway, signature, Gateway, Production};

fn psql_out(sql: &str) -> String {
    crate::support::psql(sql)
}

fn database_of(url: &str) -> String {
    url.rsplit('/').next().expect("a database").to_string()
}

/// With `sslmode=require`, every connection of the ledger's pool is encrypted, as PostgreSQL
/// itself reports it (`pg_stat_ssl`). The suite's cluster has its own certificate (tests/services.sh)
/// (self-signed, `DNS:localhost`): `verify-full` is checked against it as its own CA, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_ledger_speaks_tls_when_asked() {
    assert_eq!(
        psql_out("SHOW ssl"),
        "on",
        "the local PostgreSQL has ssl on"
    );
    let production = Production::new("tls");
    let db = database_of(&production.ledger_url);
    let url = format!("{}?sslmode=require", production.ledger_url);
    let ledger = passerelle::ledger::connect(&url)
        .await
        .expect("sslmode=require connects");
    ledger.health().await.expect("the ledger answers");
    let counts = psql_out(&format!(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{db}'"
    ));
    let (all, encrypted) = counts.split_once('|').expect("two counts");
    assert!(all.parse::<u32>().expect("count") >= 1, "{counts}");
    assert_eq!(all, encrypted, "every connection is encrypted: {counts}");
    drop(ledger);

    let cert = psql_out("SHOW ssl_cert_file");
    let on_loopback = crate::support::postgres_url(&db);
    assert!(on_loopback.contains("@127.0.0.1:"), "{on_loopback}");
    let by_name = format!(
        "{}?sslmode=verify-full&sslrootcert={cert}",
        on_loopback.replacen("@127.0.0.1:", "@localhost:", 1)
    );
    let ledger = passerelle::ledger::connect(&by_name)
        .await
        .expect("verify-full against the server's own certificate");
    ledger.health().await.expect("the ledger answers");
    drop(ledger);
    // The certificate names localhost, not 127.0.0.1: verify-full refuses the address.
    let by_address = format!("{on_loopback}?sslmode=verify-full&sslrootcert={cert}");
    assert!(passerelle::ledger::connect(&by_address).await.is_err());
}

async fn status(http: &reqwest::Client, req: reqwest::RequestBuilder) -> u16 {
    let _ = http;
    req.send().await.expect("answer").status().as_u16()
}

/// With `server.admin_bind`, `/metrics` and the admin routes answer only on the admin listener;
/// the inbound routes only on the main one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_surface_answers_only_on_the_admin_listener() {
    let gw = gateway(None, &[("PASSERELLE__SERVER__ADMIN_BIND", "127.0.0.1:0")]).await;
    let admin = gw.admin_url.clone().expect("an admin listener");
    let token = gw.creds.admin.expose_secret().to_string();
    let h = &gw.http;
    for path in ["/metrics", "/v1/dead-letters"] {
        let on_main = status(h, h.get(format!("{}{path}", gw.url)).bearer_auth(&token)).await;
        assert_eq!(on_main, 404, "{path} on the main listener");
        let on_admin = status(h, h.get(format!("{admin}{path}")).bearer_auth(&token)).await;
        assert_eq!(on_admin, 200, "{path} on the admin listener");
    }
    // An unknown dossier: the admin route's own 404 (a problem) there, no route at all here.
    let kind = |url: String| {
        let req = h.get(url).bearer_auth(&token);
        async move {
            let r = req.send().await.expect("answer");
            let json: serde_json::Value = r.json().await.unwrap_or_default();
            json["type"].as_str().unwrap_or("").to_string()
        }
    };
    assert_eq!(
        kind(format!("{admin}/v1/dossiers/x")).await,
        "urn:passerelle:problem:not-found"
    );
    assert_eq!(kind(format!("{}/v1/dossiers/x", gw.url)).await, "");
    let replay = format!("{}/v1/dead-letters/replay", gw.url);
    assert_eq!(status(h, h.post(replay).bearer_auth(&token)).await, 404);
    // The inbound routes and the probes stay on the main listener.
    let inbound = "/v1/inbound/atexo-sem/dossiers";
    assert_eq!(status(h, h.post(format!("{}{inbound}", gw.url))).await, 401);
    assert_eq!(status(h, h.post(format!("{admin}{inbound}"))).await, 404);
    assert_eq!(status(h, h.get(format!("{}/readyz", gw.url))).await, 200);
    assert_eq!(status(h, h.get(format!("{admin}/healthz"))).await, 200);
    gw.stop().await;

    // Without it, one listener serves everything, as before.
    let gw = gateway(None, &[]).await;
    assert!(gw.admin_url.is_none());
    assert_eq!(
        status(&gw.http, gw.http.get(format!("{}/metrics", gw.url))).await,
        200
    );
    gw.stop().await;
}

/// `/readyz` answers from a result at most a second old and never calls AGORA itself: thirty
/// probes cost AGORA's relay at most the background check's one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_cached_and_never_call_agora() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let gw = gateway(
        None,
        &[
            ("PASSERELLE__AGORA__BASE_URL", &sandbox.agora_url()),
            ("PASSERELLE__AGORA__TOKEN", sandbox.agora_token()),
        ],
    )
    .await;
    // The background check's first call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sandbox.journal().len();
    let mut bodies = Vec::new();
    for _ in 0..30 {
        let r = gw
            .http
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 200);
        bodies.push(r.json::<serde_json::Value>().await.expect("json"));
    }
    assert_eq!(sandbox.journal().len(), before, "no AGORA call per probe");
    assert_eq!(bodies[0]["agora"]["status"], "ok", "{}", bodies[0]);
    // Within a second, the same check is served: its time does not move.
    let checked: std::collections::HashSet<String> = bodies
        .iter()
        .map(|b| b["checked_at"].as_str().expect("checked_at").to_string())
        .collect();
    assert!(
        checked.len() <= 2,
        "{} distinct checks in 30 probes",
        checked.len()
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later: serde_json::Value = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert!(!checked.contains(later["checked_at"].as_str().expect("checked_at")));
    gw.stop().await;
}

/// A ledger that fails shows in the answers as a part that fails, never as the driver's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_driver_error_text_in_answers() {
    let production = Production::new("errtext");
    let db = database_of(&production.ledger_url);
    let gw = gateway(Some(production), &[]).await;
    psql_out(&format!("DROP DATABASE {db} WITH (FORCE)"));
    let r = gw.post_atexo(fixture("atexo_sem/valid/entre.xml")).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("problem+json");
    assert_eq!(
        body["detail"],
        "the ledger is unavailable; nothing was accepted, retry later"
    );
    let token = gw.creds.admin.expose_secret().to_string();
    let r = gw
        .http
        .get(format!("{}/v1/dead-letters", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 503);
    let text = r.text().await.expect("body");
    let r = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    let ready = r.text().await.expect("body");
    for answer in [body.to_string(), text, ready] {
        for driver in [
            "database",
            "sqlx",
            "pool",
            "error returned",
            db.as_str(),
            "FATAL",
        ] {
            assert!(!answer.contains(driver), "{driver:?} in {answer}");
        }
    }
    gw.stop().await;
}

/// The words of lapin's and RabbitMQ's errors (and of our own queue module's messages, which
/// quote them), none of which may reach an answer.
const BROKER_WORDS: [&str; 12] = [
    "lapin",
    "amqp",
    "AMQP",
    "RabbitMQ",
    "vhost",
    "NOT_ALLOWED",
    "ACCESS_REFUSED",
    "CONNECTION_FORCED",
    "IOError",
    "Connection refused",
    "channel",
    "5672",
];

/// A broker that fails shows in the answers as a part that fails, never as lapin's text: with
/// the gateway's RabbitMQ vhost deleted under it, a post is `503` with our own sentence, and so
/// is `/readyz`, naming the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_error_text_in_answers() {
    let production = Production::new("amqptext");
    let vhost = database_of(&production.queue_url);
    let gw = gateway(Some(production), &[]).await;
    // Accepted while the broker is there.
    let r = gw.post_atexo(fixture("atexo_sem/valid/entre.xml")).await;
    assert_eq!(r.status(), 202);
    let out = std::process::Command::new("rabbitmqctl")
        .args(["delete_vhost", &vhost])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "{out:?}");
    // Another dossier: committed to the ledger, then its task cannot be published.
    let other = String::from_utf8(fixture("atexo_sem/valid/entre.xml"))
        .expect("UTF-8")
        .replace("PDL-2019-000102", "PDL-2019-000999")
        .replace("numeroSession=\"1330305\"", "numeroSession=\"1330399\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (post, ready) = loop {
        let r = gw.post_atexo(other.clone().into_bytes()).await;
        let status = r.status();
        let post = r.text().await.expect("body");
        let r = gw
            .http
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .expect("readyz");
        let ready_status = r.status();
        let ready = r.text().await.expect("body");
        if status == 503 && ready_status == 503 {
            break (post, ready);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} {post} / {ready_status} {ready} a minute after the vhost went"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let problem: serde_json::Value = serde_json::from_str(&post).expect("problem+json");
    assert_eq!(
        problem["detail"],
        "the queue did not confirm; nothing was accepted, retry later"
    );
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("json");
    assert_eq!(
        ready["queue"]["detail"], "the queue does not answer",
        "{ready}"
    );
    let mut words = BROKER_WORDS.to_vec();
    words.push(&vhost);
    for answer in [post, ready.to_string()] {
        for word in &words {
            assert!(!answer.contains(word), "{word:?} in {answer}");
        }
    }
    gw.stop().await;
}

/// The `Bearer` scheme in any case; an empty token, two `Authorization` headers or two signatures
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_is_case_insensitive_and_duplicates_are_refused() {
    let gw = gateway(None, &[]).await;
    let token = gw.creds.admin.expose_secret().to_string();
    let url = format!("{}/v1/dead-letters", gw.url);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {token}");
        let r = gw
            .http
            .get(&url)
            .header("Authorization", auth)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200, "{scheme}");
    }
    for bad in ["Bearer ", "Bearer", "Basic abc", &token] {
        let r = gw
            .http
            .get(&url)
            .header("Authorization", bad)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 401, "{bad:?}");
    }
    let mut twice = reqwest::header::HeaderMap::new();
    for t in [token.as_str(), token.as_str()] {
        twice.append(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    let r = gw
        .http
        .get(&url)
        .headers(twice)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("problem+json");
    assert_eq!(body["type"], "urn:passerelle:problem:duplicate-header");

    let orientation = fixture("ouiform/valid/acceptee.json");
    let sig = signature(gw.creds.ouiform_hmac().expose_secret(), &orientation);
    let mut two = reqwest::header::HeaderMap::new();
    two.append("x-ouiform-signature", sig.parse().expect("header"));
    two.append("x-ouiform-signature", "sha256=00".parse().expect("header"));
    let r = gw
        .http
        .post(format!("{}/v1/inbound/ouiform/orientations", gw.url))
        .bearer_auth(gw.creds.ouiform().expose_secret())
        .header("Content-Type", "application/json")
        .headers(two)
        .body(orientation)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    gw.stop().await;
}

/// A 400 for malformed XML names the position and what is wrong in words of ours, never
/// quick-xml's message, which quotes the tag names of the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_does_not_quote_the_document() {
    let gw = gateway(None, &[]).await;
    let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM><DUPONT185077512345>\
                </JEAN1985></exportSEM>"
        .to_vec();
    let r = gw.post_atexo(xml).await;
    assert_eq!(r.status(), 400);
    // The pointer is the element path (the contract's XPath-like pointer); the detail is ours.
    let body: serde_json::Value = r.json().await.expect("problem+json");
    let detail = body["errors"][0]["detail"].as_str().expect("a detail");
    assert!(detail.contains("near byte"), "{body}");
    for quoted in ["DUPONT", "185077512345", "JEAN", "1985"] {
        assert!(!detail.contains(quoted), "{quoted} in {body}");
    }
    gw.stop().await;
}

/// A `429` from AGORA is pacing: it consumes no attempt (two are allowed here), and only past
/// `retry.rate_limited_deadline_s` does the dossier become a dead letter, with reason `http.429`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_429s_do_not_consume_attempts_but_end_at_the_deadline() {
    let gw = gateway(
        None,
        &[
            ("PASSERELLE__RETRY__MAX_ATTEMPTS", "2"),
            ("PASSERELLE__RETRY__BASE_MS", "20"),
            ("PASSERELLE__RETRY__MAX_MS", "100"),
            ("PASSERELLE__RETRY__RATE_LIMITED_DEADLINE_S", "2"),
        ],
    )
    .await;
    gw.set_faults(&Faults {
        rate_limited: 1.0,
        retry_after_s: 0,
        ..Faults::none()
    })
    .await;
    let id = gw
        .post_atexo_accepted("entre", &fixture("atexo_sem/valid/entre.xml"))
        .await;
    let token = gw.creds.admin.expose_secret().to_string();
    let dead = |gw: &Gateway| {
        let url = format!("{}/v1/dead-letters?dossier_id={id}", gw.url);
        let req = gw.http.get(url).bearer_auth(token.clone());
        async move {
            let list: serde_json::Value = req
                .send()
                .await
                .expect("answer")
                .json()
                .await
                .expect("json");
            list.as_array().cloned().unwrap_or_default()
        }
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let calls = gw.sandbox_get("/_sandbox/journal").await;
    let refused = calls
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["status"] == 429).count());
    assert!(
        refused > 3,
        "AGORA was asked {refused} times within a second"
    );
    assert!(dead(&gw).await.is_empty(), "429s consumed the two attempts");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let letters = loop {
        let letters = dead(&gw).await;
        if !letters.is_empty() {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letters[0]["reason"], "http.429", "{letters:?}");
    gw.stop().await;
}

/// A certificate authority made for one test, and certificates it signs (nothing is committed).
pub(crate) struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pub(crate) pem: String,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let pem = params.self_signed(&key).expect("self-signed").pem();
        TestCa { params, key, pem }
    }

    /// A certificate for `dns_name`, with its key, as PEM.
    pub(crate) fn issue(
        &self,
        dns_name: &str,
        purpose: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![dns_name.to_string()]).expect("params");
        params.extended_key_usages = vec![purpose];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// HTTPS on the listeners (`server.tls_*`), and a client certificate standing for its system:
/// OUIFORM posts with its certificate and no bearer token; a certificate of another system, or of
/// an unknown CA, does not get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_client_certificates_mapped_to_systems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().to_string()
    };
    let server_ca = TestCa::new("passerelle test server CA");
    let partners = TestCa::new("passerelle test partners CA");
    let (cert, key) = server_ca.issue("localhost", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let cert_file = write("server.pem", &cert);
    let key_file = write("server.key", &key);
    let clients_file = write("partners.pem", &partners.pem);
    let names = "{ ouiform = [\"ouiform.partner.test\"], atexo_sem = [\"atexo.partner.test\"] }";
    let config = write(
        "tls.toml",
        &format!(
            "[server]\ntls_cert_file = {cert_file:?}\ntls_key_file = {key_file:?}\n\
             tls_client_ca_file = {clients_file:?}\ntls_client_names = {names}\n\
             admin_bind = \"127.0.0.1:0\"\n"
        ),
    );
    let data = tempfile::tempdir().expect("tempdir");
    let d = data.path().display().to_string();
    let settings = passerelle::settings::Settings::load(
        Some(std::path::Path::new(&config)),
        [
            ("PASSERELLE__SERVER__BIND", "127.0.0.1:0".to_string()),
            ("PASSERELLE__DATA__DIR", d.clone()),
            ("PASSERELLE__LEDGER__URL", format!("sqlite://{d}/p.db")),
            ("PASSERELLE__QUEUE__URL", format!("embedded:{d}/q.db")),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("settings");
    let app = passerelle::startup::Application::build(settings)
        .await
        .expect("the gateway starts with TLS");
    let creds = app.credentials.clone();
    let (port, admin_port) = (app.port(), app.admin_port().expect("admin"));
    let running = app.spawn();
    let url = format!("https://localhost:{port}");
    let trust = reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).expect("ca");
    let client = |identity: Option<(String, String)>| {
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(trust.clone());
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}{key}");
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        b.build().expect("client")
    };
    // HTTPS on both listeners; plain HTTP gets no answer.
    let anonymous = client(None);
    for u in [&url, &format!("https://localhost:{admin_port}")] {
        let r = anonymous
            .get(format!("{u}/healthz"))
            .send()
            .await
            .expect("https");
        assert_eq!(r.status(), 200, "{u}");
    }
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));

    let orientation = fixture("ouiform/valid/acceptee.json");
    let sig = signature(creds.ouiform_hmac().expose_secret(), &orientation);
    let post = |c: reqwest::Client, bearer: Option<String>| {
        let req = c
            .post(format!("{url}/v1/inbound/ouiform/orientations"))
            .header("Content-Type", "application/json")
            .header("X-Ouiform-Signature", sig.clone())
            .body(orientation.clone());
        let req = match bearer {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    // No certificate, no token: 401; the token alone still works.
    assert_eq!(post(anonymous.clone(), None).await.expect("answer"), 401);
    let ouiform_token = creds.ouiform().expose_secret().to_string();
    assert_eq!(
        post(anonymous.clone(), Some(ouiform_token.clone()))
            .await
            .expect("answer"),
        202
    );
    // OUIFORM's certificate alone authenticates OUIFORM.
    let purpose = rcgen::ExtendedKeyUsagePurpose::ClientAuth;
    let ouiform = client(Some(
        partners.issue("ouiform.partner.test", purpose.clone()),
    ));
    assert_eq!(post(ouiform.clone(), None).await.expect("answer"), 202);
    // With a token of another caller, the two disagree: 401.
    let atexo_token = creds.atexo_sem().expose_secret().to_string();
    assert_eq!(post(ouiform, Some(atexo_token)).await.expect("answer"), 401);
    // ATEXO SEM's certificate on OUIFORM's route: 403.
    let atexo = client(Some(partners.issue("atexo.partner.test", purpose.clone())));
    assert_eq!(post(atexo, None).await.expect("answer"), 403);
    // A certificate the partners' CA did not sign: no TLS session at all.
    let stranger = TestCa::new("a stranger");
    let intruder = client(Some(
        stranger.issue("ouiform.partner.test", purpose.clone()),
    ));
    assert!(
        post(intruder, None).await.is_err(),
        "the handshake is refused"
    );
    // A partners' certificate with a name nobody maps to stands for nobody.
    let unknown = client(Some(partners.issue("unknown.partner.test", purpose)));
    assert_eq!(post(unknown, None).await.expect("answer"), 401);
    running.stop().await;
}

/// The API's rate per calling system (`server.rate_per_second`, burst `server.rate_burst`, on
/// `governor`): past the burst a system gets `429` with `Retry-After`, another system does not,
/// and once the rate has refilled the first one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_burst_a_system_gets_429_then_is_served_again() {
    let gw = gateway(
        None,
        &[
            ("PASSERELLE__SERVER__RATE_PER_SECOND", "1"),
            ("PASSERELLE__SERVER__RATE_BURST", "3"),
        ],
    )
    .await;
    let orientation = fixture("ouiform/valid/acceptee.json");
    // Unsigned: the limiter counts the request, then the missing signature refuses it (401),
    // quickly enough that the burst is spent well within a second.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = gw.post_ouiform(orientation.clone(), false).await;
        let status = r.status().as_u16();
        if status == 429 {
            assert_eq!(
                r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                Some("1")
            );
            let body: serde_json::Value = r.json().await.expect("problem+json");
            assert_eq!(body["type"], "urn:passerelle:problem:rate-limited");
            assert_eq!(body["status"], 429);
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..3], [401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another system has a rate of its own.
    let r = gw.post_atexo(fixture("atexo_sem/valid/entre.xml")).await;
    assert_eq!(r.status(), 202);
    // A second later a cell has come back: OUIFORM is served.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = gw.post_ouiform(orientation, true).await;
    assert_eq!(r.status(), 202);
    gw.stop().await;
}
