//! The authenticators on their own: real programs run by `sh`, real keys and certificates made by
//! the sandbox's test PKI, tokens checked the way the sandbox checks them.

use super::*;
use passerelle_sandbox::{verify_signed, TestPki};
use std::path::Path;
use std::sync::Arc;

/// A token command in `dir`: counts its runs in `dir/count`, prints `tok-N` and, when
/// `dir/lifetime` exists, that lifetime; fails with a message quoting its token when `dir/fail`
/// exists; sleeps when `dir/sleep` exists.
fn command(dir: &Path) -> Vec<String> {
    let script = dir.join("token.sh");
    std::fs::write(
        &script,
        r#"d=$(dirname "$0")
n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/count"
[ -f "$d/sleep" ] && sleep "$(cat "$d/sleep")"
echo "tok-$n"
[ -f "$d/lifetime" ] && cat "$d/lifetime"
echo "suite: issued tok-$n" >&2
[ -f "$d/fail" ] && { echo "suite: relay unreachable while renewing tok-$n" >&2; exit 3; }
exit 0
"#,
    )
    .expect("script");
    vec!["sh".to_string(), script.display().to_string()]
}

fn runs(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

fn value(c: &Credential) -> String {
    c.value.to_str().expect("ascii").to_string()
}

fn command_token(dir: &Path) -> CommandToken {
    CommandToken::new(&command(dir), Duration::from_secs(5), &Placement::default()).expect("builds")
}

#[tokio::test]
async fn a_command_token_is_cached_and_shared_by_concurrent_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = Arc::new(command_token(dir.path()));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.credential().await })
        })
        .collect();
    for call in calls {
        let c = call.await.expect("joins").expect("a token");
        assert_eq!(value(&c), "Bearer tok-1");
        assert_eq!(c.name, "authorization");
    }
    assert_eq!(runs(dir.path()), 1, "one renewal for eight callers");
    // No lifetime given: the token is kept until refused.
    assert_eq!(auth.status().expires_at, None);
    let c = auth.credential().await.expect("token");
    assert!(auth.refused(&c).await, "a command token is worth renewing");
    // A second refusal of the same, already replaced, token does not discard the new one.
    let renewed = auth.credential().await.expect("token");
    assert_eq!(value(&renewed), "Bearer tok-2");
    assert!(auth.refused(&c).await);
    assert_eq!(
        value(&auth.credential().await.expect("token")),
        "Bearer tok-2"
    );
    assert_eq!(runs(dir.path()), 2);
    assert!(!format!("{renewed:?}").contains("tok-2"));
}

#[tokio::test]
async fn a_command_token_is_renewed_shortly_before_its_lifetime_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lifetime"), "1\n").expect("lifetime");
    let auth = command_token(dir.path());
    let first = auth.credential().await.expect("token");
    let expires = auth.status().expires_at.expect("an expiry");
    let ahead = expires - chrono::Utc::now();
    assert!(ahead <= chrono::Duration::seconds(1) && ahead > chrono::Duration::zero());
    assert_eq!(
        value(&auth.credential().await.expect("token")),
        value(&first)
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        value(&auth.credential().await.expect("token")),
        "Bearer tok-2"
    );
    assert_eq!(runs(dir.path()), 2);
    assert_eq!(auth.status().mode, "command");
}

#[tokio::test]
async fn a_failing_command_is_a_clear_error_without_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fail"), "").expect("fail");
    let auth = command_token(dir.path());
    let e = auth.credential().await.expect_err("fails");
    let text = e.to_string();
    assert!(text.contains("agora.auth.command"), "{text}");
    assert!(text.contains("exit status 3"), "{text}");
    assert!(text.contains("relay unreachable"), "{text}");
    assert!(!text.contains("tok-1"), "the token is redacted: {text}");
    assert!(text.contains("[redacted]"), "{text}");
    // Nothing cached: the next call runs the program again, and succeeds once it works.
    std::fs::remove_file(dir.path().join("fail")).expect("unfail");
    assert_eq!(
        value(&auth.credential().await.expect("token")),
        "Bearer tok-2"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("sleep"), "5").expect("sleep");
    let auth = CommandToken::new(
        &command(dir.path()),
        Duration::from_millis(300),
        &Placement::default(),
    )
    .expect("builds");
    let started = std::time::Instant::now();
    let e = auth.credential().await.expect_err("times out");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(
            e,
            AuthError::CommandTimedOut {
                timeout_ms: 300,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("agora.auth.command_timeout_ms"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_command_output_and_settings_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lifetime"), "soon\n").expect("lifetime");
    let e = command_token(dir.path())
        .credential()
        .await
        .expect_err("bad lifetime");
    assert!(e.to_string().contains("lifetime in whole seconds"), "{e}");
    let e =
        CommandToken::new(&[], Duration::from_secs(1), &Placement::default()).expect_err("empty");
    assert!(e.to_string().contains("agora.auth.command"), "{e}");
    let e = CommandToken::new(
        &["/nonexistent/token-suite".to_string()],
        Duration::from_secs(1),
        &Placement::default(),
    )
    .expect("builds")
    .credential()
    .await
    .expect_err("no such program");
    assert!(e.to_string().contains("could not be started"), "{e}");
}

#[tokio::test]
async fn the_header_and_scheme_are_configurable() {
    let placement = Placement {
        header: "X-Interops-Token".to_string(),
        scheme: String::new(),
    };
    let bearer = StaticBearer::new(&SecretString::from("abc123"), &placement).expect("builds");
    let c = bearer.credential().await.expect("token");
    assert_eq!(c.name, "x-interops-token");
    assert_eq!(value(&c), "abc123");
    assert!(c.value.is_sensitive());
    assert!(!bearer.refused(&c).await, "a static token is not renewed");
    assert_eq!(
        bearer.status(),
        AuthStatus {
            mode: "bearer",
            expires_at: None
        }
    );
    let e = StaticBearer::new(&SecretString::from("  "), &Placement::default()).expect_err("empty");
    assert!(e.to_string().contains("agora.token"), "{e}");
}

fn signing(dir: &Path, pki: &TestPki, reuse: Duration) -> SigningConfig {
    let files = pki.write_to(dir).expect("files");
    SigningConfig {
        signing_key: SecretString::from(pki.signer.key_pem.clone()),
        certificate_file: files.signing_cert,
        algorithm: jsonwebtoken::Algorithm::ES256,
        issuer: "passerelle-pdl".to_string(),
        subject: "region-pays-de-la-loire".to_string(),
        audience: "agora".to_string(),
        lifetime: Duration::from_secs(120),
        reuse,
    }
}

fn token_of(c: &Credential) -> String {
    value(c)
        .strip_prefix("Bearer ")
        .expect("scheme")
        .to_string()
}

#[tokio::test]
async fn a_signed_token_carries_the_claims_and_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate().expect("pki");
    let auth = SignedToken::new(
        &signing(dir.path(), &pki, Duration::ZERO),
        &Placement::default(),
    )
    .expect("builds");
    let a = token_of(&auth.credential().await.expect("token"));
    let b = token_of(&auth.credential().await.expect("token"));
    assert_ne!(a, b, "a new token every call");
    assert_eq!(
        verify_signed(&a, &pki.signer.certificate_pem, "agora"),
        Ok(())
    );
    let header = jsonwebtoken::decode_header(&a).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.x5c.as_ref().map(Vec::len), Some(2), "leaf and CA");
    let payload = a.split('.').nth(1).expect("payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(claims["iss"], "passerelle-pdl");
    assert_eq!(claims["sub"], "region-pays-de-la-loire");
    assert_eq!(claims["aud"], "agora");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        120
    );
    assert_eq!(claims["jti"].as_str().map(str::len), Some(36), "a uuid");
    assert!(!auth.refused(&auth.credential().await.expect("token")).await);
    assert_eq!(auth.status().mode, "signed");
    assert!(auth.status().expires_at.is_some());
}

#[tokio::test]
async fn a_signed_token_is_reused_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate().expect("pki");
    let auth = SignedToken::new(
        &signing(dir.path(), &pki, Duration::from_secs(60)),
        &Placement::default(),
    )
    .expect("builds");
    let a = auth.credential().await.expect("token");
    let b = auth.credential().await.expect("token");
    assert_eq!(token_of(&a), token_of(&b));
    assert!(auth.refused(&b).await, "a reused token is worth renewing");
    assert_ne!(
        token_of(&auth.credential().await.expect("token")),
        token_of(&a)
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate().expect("pki");
    let other = TestPki::generate().expect("pki");
    let mut config = signing(dir.path(), &pki, Duration::ZERO);
    config.signing_key = SecretString::from(other.signer.key_pem.clone());
    let e = SignedToken::new(&config, &Placement::default()).expect_err("mismatch");
    assert!(e.to_string().contains("agora.auth.signing_key"), "{e}");
    assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    config.signing_key = SecretString::from("not a key".to_string());
    let e = SignedToken::new(&config, &Placement::default()).expect_err("not a key");
    assert!(e.to_string().contains("agora.auth.signing_key"), "{e}");
    let mut config = signing(dir.path(), &pki, Duration::ZERO);
    config.certificate_file = dir.path().join("missing.pem");
    let e = SignedToken::new(&config, &Placement::default()).expect_err("no chain");
    assert!(e.to_string().contains("agora.auth.certificate_file"), "{e}");
    assert!(
        !format!("{config:?}").contains("PRIVATE"),
        "Debug masks the key"
    );
}

/// A relay that accepts one token: `401` to any other, `404` to a search, `202` to a lot.
async fn relay(
    accepted: &'static str,
) -> (
    String,
    Arc<std::sync::Mutex<Vec<String>>>,
    actix_web::dev::ServerHandle,
) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let data = web::Data::from(seen.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(
            move |req: HttpRequest, seen: web::Data<std::sync::Mutex<Vec<String>>>| async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().expect("lock").push(auth.clone());
                if auth != format!("Bearer {accepted}") {
                    return HttpResponse::Unauthorized().finish();
                }
                if req.method() != "POST" {
                    return HttpResponse::NotFound().finish();
                }
                let answer = passerelle_adapters::agora::encode_lot_accepted("L-1");
                HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(answer.status).expect("status"),
                )
                .content_type("application/json")
                .body(answer.body)
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(0)
    .bind(("127.0.0.1", 0))
    .expect("bind");
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (url, seen, handle)
}

#[tokio::test]
async fn a_401_renews_the_command_token_once_for_sync_and_lot_calls() {
    use crate::clients::agora::{AgoraClient, AgoraClientConfig, LotFailure, Outcome};
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, seen, handle) = relay("tok-2").await;
    let mut config = AgoraClientConfig::new(url, SecretString::from("unused"));
    config.auth = AuthConfig::Command {
        argv: command(dir.path()),
        timeout: Duration::from_secs(5),
    };
    let client = AgoraClient::new(&config).expect("builds");
    let query = passerelle_adapters::agora::SearchQuery {
        financeur: "2".into(),
        reference: "psl-1".into(),
    };
    // tok-1 refused, renewed once, tok-2 accepted.
    assert_eq!(client.search(&query).await, Outcome::NotFound);
    assert_eq!(
        *seen.lock().expect("lock"),
        ["Bearer tok-1", "Bearer tok-2"]
    );
    assert_eq!(runs(dir.path()), 2);
    // A backfill lot carries the same token, and so does the next sync call.
    let lot = client
        .submit_lot(bytes::Bytes::from_static(b"{}\n"))
        .await
        .expect("accepted");
    assert_eq!(lot, "L-1");
    assert_eq!(client.search(&query).await, Outcome::NotFound);
    assert_eq!(runs(dir.path()), 2);
    // A relay that refuses every token: one renewal, one more call, then the 401 stands.
    drop(handle.stop(false));
    let (url, seen, _handle) = relay("never").await;
    let mut config = AgoraClientConfig::new(url, SecretString::from("unused"));
    config.auth = AuthConfig::Command {
        argv: command(dir.path()),
        timeout: Duration::from_secs(5),
    };
    let client = AgoraClient::new(&config).expect("builds");
    let refused = client.submit_lot(bytes::Bytes::from_static(b"{}\n")).await;
    assert!(matches!(refused, Err(LotFailure::Failed(_))), "{refused:?}");
    assert_eq!(
        seen.lock().expect("lock").len(),
        2,
        "called once more, not in a loop"
    );
    assert_eq!(client.auth_status().mode, "command");
}
