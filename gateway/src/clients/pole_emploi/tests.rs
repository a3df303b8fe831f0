//! The token cache on tokio's paused clock, and the client over real HTTP against the Pôle emploi
//! simulator (the sandbox, in-process on port 0), counting the calls it receives.

#![allow(clippy::unwrap_used)]

use super::*;
use passerelle_sandbox::{
    Call as SandboxCall, FaultKind, Faults, ForcedFault, RunningSandbox, Sandbox, SandboxConfig,
};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// The token cache

/// A token endpoint that counts its calls; `failures` first calls fail (transient).
#[derive(Clone)]
struct Fake {
    fetches: Arc<AtomicUsize>,
    expires_in: u64,
    delay: Duration,
    failures: usize,
}

impl Fake {
    fn new(expires_in: u64) -> Self {
        Fake {
            fetches: Arc::default(),
            expires_in,
            delay: Duration::ZERO,
            failures: 0,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenEndpoint for Fake {
    async fn fetch(&self) -> Result<Token, PoleEmploiError> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        if n <= self.failures {
            return Err(PoleEmploiError::Transient {
                call: Call::Token,
                status: Some(503),
                retry_after: None,
                reason: "HTTP 503".into(),
            });
        }
        Ok(Token::new(format!("token-{n}"), "Bearer", self.expires_in))
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_is_kept_until_a_minute_before_it_expires() {
    let fake = Fake::new(1_500);
    let cache = TokenCache::new(fake.clone());
    let first = cache.get().await.unwrap();
    assert_eq!(cache.get().await.unwrap().generation(), first.generation());
    assert_eq!(fake.fetches(), 1);

    tokio::time::advance(Duration::from_secs(1_439)).await;
    assert_eq!(cache.get().await.unwrap().generation(), first.generation());
    assert_eq!(fake.fetches(), 1, "still a minute and more to live");

    tokio::time::advance(Duration::from_secs(1)).await;
    let second = cache.get().await.unwrap();
    assert_ne!(second.generation(), first.generation());
    assert_eq!(fake.fetches(), 2, "refreshed a minute ahead");
    assert_eq!(
        second.header().to_str().unwrap(),
        "Bearer token-2",
        "the header carries the new token"
    );
    assert!(second.header().is_sensitive());
}

#[tokio::test(start_paused = true)]
async fn a_short_lived_token_is_refreshed_a_tenth_of_its_life_ahead() {
    let fake = Fake::new(10);
    let cache = TokenCache::new(fake.clone());
    cache.get().await.unwrap();
    tokio::time::advance(Duration::from_millis(8_999)).await;
    cache.get().await.unwrap();
    assert_eq!(fake.fetches(), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    cache.get().await.unwrap();
    assert_eq!(fake.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_lifetime_is_capped_at_a_day() {
    let fake = Fake::new(u64::MAX);
    let cache = TokenCache::new(fake.clone());
    cache.get().await.unwrap();
    tokio::time::advance(Duration::from_secs(24 * 3600 - 61)).await;
    cache.get().await.unwrap();
    assert_eq!(fake.fetches(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    cache.get().await.unwrap();
    assert_eq!(fake.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_refresh() {
    let fake = Fake {
        delay: Duration::from_millis(300),
        ..Fake::new(1_500)
    };
    let cache = Arc::new(TokenCache::new(fake.clone()));
    let gets = (0..8).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get().await.unwrap().generation() })
    });
    let generations: Vec<u64> = futures_util::future::join_all(gets)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        fake.fetches(),
        1,
        "one refresh in flight, the others waited for it"
    );
    assert!(generations.iter().all(|g| *g == generations[0]));
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_replaced_once_whoever_reports_it() {
    let fake = Fake::new(1_500);
    let cache = TokenCache::new(fake.clone());
    let old = cache.get().await.unwrap();
    // Two polls got a 401 with the same token: the first report throws it away...
    cache.invalidate(&old).await;
    let new = cache.get().await.unwrap();
    assert_eq!(fake.fetches(), 2);
    // ...the second, late, must not throw away the new one.
    cache.invalidate(&old).await;
    assert_eq!(cache.get().await.unwrap().generation(), new.generation());
    assert_eq!(fake.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_not_cached() {
    let fake = Fake {
        failures: 1,
        ..Fake::new(1_500)
    };
    let cache = TokenCache::new(fake.clone());
    assert!(cache.get().await.unwrap_err().is_transient());
    cache.get().await.unwrap();
    assert_eq!(fake.fetches(), 2);
}

// ---------------------------------------------------------------------------------------------
// The client against the simulator

const ATTEMPTS: u32 = 4;

fn session() -> SessionRef {
    SessionRef {
        numero_formation: "20_1262663".into(),
        numero_action: "20_1330305".into(),
        numero_session: "1330305".into(),
    }
}

async fn sandbox() -> RunningSandbox {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    sb.set_registrations_json(&session(), serde_json::json!([]));
    sb
}

fn client_with(sb: &RunningSandbox, secret: &str) -> PoleEmploiClient {
    client_paced(sb, secret, Duration::from_secs(3600))
}

fn client_paced(sb: &RunningSandbox, secret: &str, deadline: Duration) -> PoleEmploiClient {
    let (id, _) = sb.pole_emploi_credentials();
    let mut cfg = PoleEmploiClientConfig::new(
        sb.pole_emploi_url(),
        sb.pole_emploi_url(),
        id,
        SecretString::from(secret.to_string()),
        "api_inscriptionsv1",
    );
    cfg.retry = RetryPolicy {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
        max_attempts: ATTEMPTS,
        rate_limited_deadline: deadline,
    };
    cfg.request_timeout = Duration::from_secs(2);
    PoleEmploiClient::new(&cfg).unwrap()
}

fn client(sb: &RunningSandbox) -> PoleEmploiClient {
    let secret = sb.pole_emploi_credentials().1.to_string();
    client_with(sb, &secret)
}

fn count(sb: &RunningSandbox, call: SandboxCall) -> usize {
    sb.calls(call).len()
}

fn force(sb: &RunningSandbox, call: SandboxCall, fault: FaultKind) {
    sb.fail_next(ForcedFault {
        call: Some(call),
        fault,
        applied: false,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_share_one_token() {
    let sb = sandbox().await;
    let c = client(&sb);
    for _ in 0..3 {
        assert_eq!(c.registrations(&session()).await.unwrap(), b"[]");
    }
    assert_eq!(count(&sb, SandboxCall::PeToken), 1);
    assert_eq!(count(&sb, SandboxCall::PeRegistrations), 3);
    // The query names the session; the token call used the realm and the form (else 400).
    let call = &sb.calls(SandboxCall::PeRegistrations)[0];
    assert_eq!(call.path, "/pole-emploi/inscriptions/statut/session");
    assert_eq!(call.status, Some(200));
    assert_eq!(call.reference.as_deref(), Some("1330305"));
    assert_eq!(sb.calls(SandboxCall::PeToken)[0].status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_once() {
    let sb = sandbox().await;
    let c = client(&sb);
    c.registrations(&session()).await.unwrap();
    sb.expire_pe_tokens();
    c.registrations(&session()).await.unwrap();
    assert_eq!(count(&sb, SandboxCall::PeToken), 2);
    let statuses: Vec<_> = sb
        .calls(SandboxCall::PeRegistrations)
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![Some(200), Some(401), Some(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_401_is_an_error_not_a_loop() {
    let sb = sandbox().await;
    sb.refuse_registrations(&session(), 401, "JETON_INVALIDE");
    let c = client(&sb);
    let e = c.registrations(&session()).await.unwrap_err();
    assert_eq!(
        e,
        PoleEmploiError::Unauthorized {
            call: Call::Registrations,
            code: Some("JETON_INVALIDE".into())
        }
    );
    assert_eq!(count(&sb, SandboxCall::PeToken), 2, "one refresh");
    assert_eq!(count(&sb, SandboxCall::PeRegistrations), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_forbidden_sessions_are_not_retried() {
    let sb = sandbox().await;
    let c = client(&sb);
    for (status, code) in [
        (403, "HABILITATION_INSUFFISANTE"),
        (400, "PARAMETRE_INVALIDE"),
    ] {
        sb.refuse_registrations(&session(), status, code);
        let before = count(&sb, SandboxCall::PeRegistrations);
        let e = c.registrations(&session()).await.unwrap_err();
        assert_eq!(
            e,
            PoleEmploiError::Refused {
                call: Call::Registrations,
                status,
                code: Some(code.into())
            }
        );
        assert_eq!(e.code(), Some(code));
        assert!(e.to_string().contains(code), "{e}");
        assert_eq!(count(&sb, SandboxCall::PeRegistrations), before + 1);
    }
    assert_eq!(
        count(&sb, SandboxCall::PeToken),
        1,
        "no refresh for a 400 or 403"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_dropped_connections_are_retried() {
    let sb = sandbox().await;
    force(&sb, SandboxCall::PeToken, FaultKind::Error503);
    force(&sb, SandboxCall::PeRegistrations, FaultKind::Error500);
    force(&sb, SandboxCall::PeRegistrations, FaultKind::Drop);
    let c = client(&sb);
    assert_eq!(c.registrations(&session()).await.unwrap(), b"[]");
    assert_eq!(count(&sb, SandboxCall::PeToken), 2);
    let statuses: Vec<_> = sb
        .calls(SandboxCall::PeRegistrations)
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![Some(500), None, Some(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out() {
    let sb = sandbox().await;
    sb.set_faults(Faults {
        retry_after_s: 1,
        ..Faults::none()
    })
    .unwrap();
    force(&sb, SandboxCall::PeRegistrations, FaultKind::RateLimited);
    let c = client(&sb);
    let started = std::time::Instant::now();
    c.registrations(&session()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
    let calls = sb.calls(SandboxCall::PeRegistrations);
    assert_eq!(calls.len(), 2);
    assert!(calls[1].at - calls[0].at >= chrono::Duration::milliseconds(1_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_consume_no_attempt_but_stop_at_the_deadline() {
    let sb = sandbox().await;
    sb.set_faults(Faults {
        rate_limited: 1.0,
        retry_after_s: 0,
        only: vec![SandboxCall::PeRegistrations],
        ..Faults::none()
    })
    .unwrap();
    let secret = sb.pole_emploi_credentials().1.to_string();
    let c = client_paced(&sb, &secret, Duration::from_millis(1_500));
    let started = std::time::Instant::now();
    let e = c.registrations(&session()).await.unwrap_err();
    assert!(
        matches!(
            e,
            PoleEmploiError::Transient {
                status: Some(429),
                ..
            }
        ),
        "{e:?}"
    );
    // Backoff 20 to 200 ms: more than ATTEMPTS calls fit in the deadline, and the attempts are
    // counted only after it.
    let calls = count(&sb, SandboxCall::PeRegistrations);
    assert!(calls > ATTEMPTS as usize + 2, "{calls} calls");
    assert!(started.elapsed() >= Duration::from_millis(1_500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_give_up_after_the_configured_attempts() {
    let sb = sandbox().await;
    sb.set_faults(Faults {
        error_503: 1.0,
        only: vec![SandboxCall::PeRegistrations],
        ..Faults::none()
    })
    .unwrap();
    let c = client(&sb);
    let e = c.registrations(&session()).await.unwrap_err();
    assert!(
        matches!(
            e,
            PoleEmploiError::Transient {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(count(&sb, SandboxCall::PeRegistrations), ATTEMPTS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_not_retried() {
    let sb = sandbox().await;
    let c = client_with(&sb, "not-the-secret");
    let e = c.registrations(&session()).await.unwrap_err();
    assert_eq!(
        e,
        PoleEmploiError::Unauthorized {
            call: Call::Token,
            code: Some("CLIENT_INVALIDE".into())
        }
    );
    assert!(!e.to_string().contains("not-the-secret"));
    assert_eq!(count(&sb, SandboxCall::PeToken), 1);
    assert_eq!(count(&sb, SandboxCall::PeRegistrations), 0);
}

#[test]
fn urls_follow_the_contract() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let cfg = PoleEmploiClientConfig::new(
        "https://entreprise.example.invalid/",
        "https://api.example.invalid/partenaire",
        "id",
        SecretString::from("s".to_string()),
        "scope",
    );
    let c = PoleEmploiClient::new(&cfg).unwrap();
    assert_eq!(
        c.tokens.endpoint.url.as_str(),
        "https://entreprise.example.invalid/connexion/oauth2/access_token?realm=/partenaire"
    );
    assert_eq!(
        c.registrations_url.as_str(),
        "https://api.example.invalid/partenaire/inscriptions/statut/session"
    );
    assert!(!format!("{c:?}").contains("\"s\""));
}

#[test]
fn error_codes_are_kept_plain() {
    assert_eq!(safe_code("JETON_INVALIDE"), "JETON_INVALIDE");
    assert_eq!(safe_code("A B\n<c>"), "ABc");
    assert_eq!(safe_code(&"X".repeat(100)).len(), 64);
}
