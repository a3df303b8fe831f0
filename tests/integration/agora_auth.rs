//! AGORA access as the Caisse des Dépôts grants it (`agora.auth.*`, `agora.tls_*`): the real
//! gateway, booted in-process, delivering to a sandbox that checks each mode — a static bearer, the
//! tokens a token command issues (one revoked on demand), a JWS signed with a test certificate's
//! key, and a TLS listener that requires a client certificate. Keys and certificates are made at
//! run time by the sandbox's test PKI.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use passerelle_sandbox::{
    AgoraAuth, AgoraConfig, Call, RunningSandbox, Sandbox, SandboxConfig, SandboxTls, TestPki,
};
use secrecy::ExposeSecret;

use crate::support::{expected_etat, gateway, generated, Gateway};

/// Settings every test here shares: AGORA is `agora_url`, retries are quick.
fn with_agora<'a>(agora_url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![
        ("PASSERELLE__AGORA__BASE_URL", agora_url),
        ("PASSERELLE__RETRY__BASE_MS", "50"),
        ("PASSERELLE__RETRY__MAX_MS", "300"),
        ("PASSERELLE__RETRY__MAX_ATTEMPTS", "40"),
    ];
    pairs.extend_from_slice(extra);
    pairs
}

/// Posts `n` generated dossiers and adds what AGORA must end up holding to `expected`.
async fn post(
    gw: &Gateway,
    seed: u64,
    n: usize,
    expected: &mut HashMap<String, Option<&'static str>>,
) {
    for x in generated(seed, n) {
        let id = gw.post_atexo_accepted(&x.id, &x.xml).await;
        expected.insert(id, expected_etat(&x));
    }
}

/// Waits until the sandbox (read in-process: it may speak TLS) holds exactly `expected`.
async fn wait_delivered(
    sandbox: &RunningSandbox,
    expected: &HashMap<String, Option<&'static str>>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let held: HashMap<String, &'static str> = sandbox
            .agora_dossiers()
            .into_iter()
            .map(|d| (d.reference, d.etat.as_str()))
            .collect();
        let wrong = expected
            .iter()
            .filter(|(r, e)| held.get(*r).copied() != **e)
            .count();
        if wrong == 0 && held.keys().all(|r| expected.contains_key(r)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "AGORA did not converge: {wrong} dossiers not in their state; journal: {:?}",
            sandbox.journal().iter().rev().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz` once the background check of AGORA has run (its status is no longer `unknown`).
async fn agora_checked(gw: &Gateway) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(gw).await;
        if body["agora"]["status"] != "unknown" {
            return (status, body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "AGORA never checked: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn readyz(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .expect("readyz");
    (r.status().as_u16(), r.json().await.expect("json"))
}

async fn dead_letters(gw: &Gateway) -> usize {
    let r = gw
        .http
        .get(format!("{}/v1/dead-letters", gw.url))
        .bearer_auth(gw.creds.admin.expose_secret())
        .send()
        .await
        .expect("dead letters");
    let body: serde_json::Value = r.json().await.expect("json");
    body.as_array().map_or(usize::MAX, Vec::len)
}

/// AGORA calls answered `401` so far.
fn refusals(sandbox: &RunningSandbox) -> usize {
    sandbox
        .journal()
        .iter()
        .filter(|c| c.call != Call::Other && c.status == Some(401))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_mode_delivers_and_readyz_names_it() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let url = sandbox.agora_url();
    let gw = gateway(
        None,
        &with_agora(&url, &[("PASSERELLE__AGORA__TOKEN", sandbox.agora_token())]),
    )
    .await;
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agora"]["authenticator"]["mode"], "bearer", "{body}");
    assert!(body["agora"]["authenticator"]["expires_at"].is_null());
    assert!(
        !body.to_string().contains(sandbox.agora_token()),
        "no secret in /readyz"
    );
    let mut expected = HashMap::new();
    post(&gw, 2201, 3, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    assert_eq!(refusals(&sandbox), 0);
    gw.stop().await;
}

/// A token command in `dir` (see `clients::agora::auth::tests` for its twin): counts its runs in
/// `count`, prints `tok-N`, then the content of `lifetime` when that file exists; fails (exit 3)
/// while `fail` exists.
fn token_command(dir: &Path) -> String {
    let script = dir.join("token.sh");
    std::fs::write(
        &script,
        r#"d=$(dirname "$0")
n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/count"
[ -f "$d/fail" ] && { echo "token suite: relay unreachable" >&2; exit 3; }
echo "tok-$n"
[ -f "$d/lifetime" ] && cat "$d/lifetime"
exit 0
"#,
    )
    .expect("script");
    format!("sh,{}", script.display())
}

fn runs(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

async fn command_sandbox() -> RunningSandbox {
    Sandbox::start(SandboxConfig {
        agora: AgoraConfig {
            auth: AgoraAuth::Issued {
                tokens: (1..=50).map(|n| format!("tok-{n}")).collect(),
            },
            ..AgoraConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_tokens_are_shared_and_renewed_on_a_401_and_on_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let command = token_command(dir.path());
    let sandbox = command_sandbox().await;
    let url = sandbox.agora_url();
    let gw = gateway(
        None,
        &with_agora(
            &url,
            &[
                ("PASSERELLE__AGORA__AUTH__MODE", "command"),
                ("PASSERELLE__AGORA__AUTH__COMMAND", &command),
            ],
        ),
    )
    .await;
    let (_, body) = readyz(&gw).await;
    assert_eq!(body["agora"]["authenticator"]["mode"], "command", "{body}");

    // Several dossiers, many calls, workers in parallel: one run of the command (no lifetime:
    // the token serves until AGORA refuses it).
    let mut expected = HashMap::new();
    post(&gw, 2202, 6, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    assert_eq!(runs(dir.path()), 1, "one token for every call");
    assert_eq!(refusals(&sandbox), 0);

    // AGORA revokes it: the next call gets a 401, the gateway renews once and calls again.
    sandbox.revoke_agora_token("tok-1");
    post(&gw, 2203, 1, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    assert_eq!(runs(dir.path()), 2, "renewed once on the 401");
    assert_eq!(refusals(&sandbox), 1, "one 401, then the call went through");
    assert_eq!(dead_letters(&gw).await, 0);

    // A token that says its lifetime (1 s) is renewed when it runs out, without any 401.
    std::fs::write(dir.path().join("lifetime"), "1\n").expect("lifetime");
    sandbox.revoke_agora_token("tok-2");
    post(&gw, 2204, 1, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    // `/readyz` serves an answer up to a second old: ask until one made after the renewal.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = readyz(&gw).await;
        if body["agora"]["authenticator"]["expires_at"].is_string() || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body["agora"]["authenticator"]["expires_at"].is_string(),
        "the expiry is shown: {body}"
    );
    assert!(
        !body.to_string().contains("tok-"),
        "no token in /readyz: {body}"
    );
    let before = (runs(dir.path()), refusals(&sandbox));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    post(&gw, 2205, 1, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    assert!(runs(dir.path()) > before.0, "renewed on expiry");
    assert_eq!(refusals(&sandbox), before.1, "without being refused first");
    assert_eq!(dead_letters(&gw).await, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let command = token_command(dir.path());
    std::fs::write(dir.path().join("fail"), "").expect("fail");
    let sandbox = command_sandbox().await;
    let url = sandbox.agora_url();
    let gw = gateway(
        None,
        &with_agora(
            &url,
            &[
                ("PASSERELLE__AGORA__AUTH__MODE", "command"),
                ("PASSERELLE__AGORA__AUTH__COMMAND", &command),
            ],
        ),
    )
    .await;
    let mut expected = HashMap::new();
    post(&gw, 2206, 2, &mut expected).await;
    // The worker tries, fails for want of a token, and tries again with its backoff.
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(dir.path()) < 4 {
        assert!(Instant::now() < deadline, "the command was not run again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sandbox.agora_dossiers().is_empty(),
        "nothing sent without a token"
    );
    assert!(
        sandbox.journal().iter().all(|c| c.call == Call::Other),
        "no AGORA call was made without a token"
    );
    assert_eq!(
        dead_letters(&gw).await,
        0,
        "a failing command is not a dead letter"
    );
    // The token suite is back: everything is delivered.
    std::fs::remove_file(dir.path().join("fail")).expect("unfail");
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    assert_eq!(dead_letters(&gw).await, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tokens_are_accepted_and_a_wrong_audience_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate().expect("pki");
    let files = pki.write_to(dir.path()).expect("files");
    let sandbox = Sandbox::start(SandboxConfig {
        agora: AgoraConfig {
            auth: AgoraAuth::Signed {
                certificate_pem: pki.signer.certificate_pem.clone(),
                audience: "agora-v2".to_string(),
            },
            ..AgoraConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let url = sandbox.agora_url();
    let key = files.signing_key.display().to_string();
    let chain = files.signing_cert.display().to_string();
    let signed = |audience: &'static str| {
        [
            ("PASSERELLE__AGORA__AUTH__MODE", "signed"),
            ("PASSERELLE__AGORA__AUTH__SIGNING_KEY_FILE", key.as_str()),
            ("PASSERELLE__AGORA__AUTH__CERTIFICATE_FILE", chain.as_str()),
            ("PASSERELLE__AGORA__AUTH__ISSUER", "passerelle-pdl"),
            (
                "PASSERELLE__AGORA__AUTH__SUBJECT",
                "region-pays-de-la-loire",
            ),
            ("PASSERELLE__AGORA__AUTH__AUDIENCE", audience),
        ]
    };
    let gw = gateway(None, &with_agora(&url, &signed("agora-v2"))).await;
    let (_, body) = readyz(&gw).await;
    assert_eq!(body["agora"]["authenticator"]["mode"], "signed", "{body}");
    let mut expected = HashMap::new();
    post(&gw, 2207, 3, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    assert_eq!(refusals(&sandbox), 0);
    let held = sandbox.agora_dossiers().len();
    gw.stop().await;

    // The same key and certificate, for another audience: AGORA refuses every call.
    let gw = gateway(None, &with_agora(&url, &signed("someone-else"))).await;
    let mut more = HashMap::new();
    post(&gw, 2208, 1, &mut more).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusals(&sandbox) == 0 {
        assert!(
            Instant::now() < deadline,
            "the wrong audience was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sandbox.agora_dossiers().len(), held, "nothing more created");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_is_refused_without_the_client_certificate_and_accepted_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate().expect("pki");
    let files = pki.write_to(dir.path()).expect("files");
    let sandbox = Sandbox::start(SandboxConfig {
        tls: Some(SandboxTls {
            certificate_pem: pki.server.certificate_pem.clone(),
            key_pem: pki.server.key_pem.clone(),
            client_ca_pem: Some(pki.ca_pem.clone()),
        }),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let url = sandbox.agora_url();
    assert!(url.starts_with("https://"), "{url}");

    // Straight to the relay: the handshake fails without a certificate, passes with one.
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca");
    let bare = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .expect("client");
    assert!(
        bare.get(&url).send().await.is_err(),
        "no client certificate, no answer"
    );
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", pki.client.certificate_pem, pki.client.key_pem).as_bytes(),
    )
    .expect("identity");
    let mutual = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(identity)
        .build()
        .expect("client");
    let answered = mutual.get(&url).send().await.expect("an answer");
    assert_eq!(answered.status(), 404);

    let ca_file = files.ca.display().to_string();
    let token = sandbox.agora_token().to_string();
    let base = [
        ("PASSERELLE__AGORA__TOKEN", token.as_str()),
        ("PASSERELLE__AGORA__TLS_CA_FILE", ca_file.as_str()),
    ];
    // The gateway without its certificate: AGORA is down for it, nothing reaches AGORA.
    let gw = gateway(None, &with_agora(&url, &base)).await;
    // AGORA is checked in the background and reported, never gating: the replica stays ready
    // (it queues durably) while AGORA refuses it.
    let (status, body) = agora_checked(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agora"]["status"], "failing", "{body}");
    let mut expected = HashMap::new();
    post(&gw, 2209, 1, &mut expected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sandbox.agora_dossiers().is_empty());
    gw.stop().await;

    // With it: ready, and dossiers go through.
    let cert = files.client_cert.display().to_string();
    let key = files.client_key.display().to_string();
    let mut with_cert = base.to_vec();
    with_cert.push(("PASSERELLE__AGORA__TLS_CLIENT_CERT_FILE", cert.as_str()));
    with_cert.push(("PASSERELLE__AGORA__TLS_CLIENT_KEY_FILE", key.as_str()));
    let gw = gateway(None, &with_agora(&url, &with_cert)).await;
    let (status, body) = agora_checked(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agora"]["status"], "ok", "{body}");
    let mut expected = HashMap::new();
    post(&gw, 2210, 2, &mut expected).await;
    wait_delivered(&sandbox, &expected, Duration::from_secs(30)).await;
    gw.stop().await;
}
