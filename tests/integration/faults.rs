//! Faults: AGORA (the sandbox) fails 30 % of the calls — 503s, 429s with `Retry-After`, answers
//! slower than the gateway's timeout, half of them after taking effect — while 2,000 dossiers go
//! through. Every dossier must reach its final state, be created once, and no operation AGORA
//! applied may be sent again.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use passerelle_sandbox::Faults;

use crate::support::{
    agora_journal, assert_created_once, expected_etat, gateway, generated, wait_for_agora, Gateway,
    Production,
};

const DOSSIERS: usize = 2_000;

/// Settings that make a faulty AGORA bearable in a test: a short timeout (the slow answers exceed
/// it), short backoffs, and enough attempts that 30 % failures never exhaust them.
const SETTINGS: [(&str, &str); 4] = [
    ("PASSERELLE__AGORA__REQUEST_TIMEOUT_MS", "400"),
    ("PASSERELLE__RETRY__BASE_MS", "20"),
    ("PASSERELLE__RETRY__MAX_MS", "300"),
    ("PASSERELLE__RETRY__MAX_ATTEMPTS", "60"),
];

pub fn faults(seed: u64) -> Faults {
    Faults {
        seed,
        error_503: 0.10,
        rate_limited: 0.10,
        slow: 0.10,
        applied_share: 0.5,
        retry_after_s: 1,
        slow_ms: 800,
        ..Faults::none()
    }
}

/// Posts every dossier (a few at a time, as ATEXO SEM would) and returns ATEXO id → dossier_id.
pub async fn post_all(
    gw: &Gateway,
    dossiers: &[passerelle_tests::generate::SingleExport],
) -> HashMap<String, String> {
    futures_util::stream::iter(dossiers)
        .map(|x| async move { (x.id.clone(), gw.post_atexo_accepted(&x.id, &x.xml).await) })
        .buffer_unordered(16)
        .collect()
        .await
}

async fn two_thousand_dossiers_through_a_faulty_agora(gw: Gateway, seed: u64) {
    gw.set_faults(&faults(seed)).await;
    let dossiers = generated(seed, DOSSIERS);
    let ids = post_all(&gw, &dossiers).await;
    let expected: HashMap<String, Option<&'static str>> = dossiers
        .iter()
        .map(|x| (ids[&x.id].clone(), expected_etat(x)))
        .collect();
    wait_for_agora(
        &gw.http,
        &gw.sandbox_url,
        &expected,
        Duration::from_secs(600),
    )
    .await;

    let raw = gw.sandbox_get("/_sandbox/journal").await;
    let faulted = raw
        .as_array()
        .expect("journal")
        .iter()
        .filter(|c| !c["fault"].is_null())
        .count();
    let journal = agora_journal(&raw);
    assert!(
        faulted > DOSSIERS / 2,
        "the faults were injected: {faulted}"
    );
    journal.assert_nothing_sent_twice();
    assert_created_once(&gw.sandbox_get("/_sandbox/agora/creations").await);
    let dead = gw
        .http
        .get(format!("{}/v1/dead-letters", gw.url))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&gw.creds.admin))
        .send()
        .await
        .expect("dead letters");
    let dead: serde_json::Value = dead.json().await.expect("json");
    assert_eq!(dead.as_array().map(Vec::len), Some(0), "{dead}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_two_thousand_dossiers_through_a_faulty_agora() {
    let _heavy = crate::support::heavy().await;
    two_thousand_dossiers_through_a_faulty_agora(gateway(None, &SETTINGS).await, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_two_thousand_dossiers_through_a_faulty_agora() {
    let _heavy = crate::support::heavy().await;
    let production = Production::new("faults");
    two_thousand_dossiers_through_a_faulty_agora(gateway(Some(production), &SETTINGS).await, 12)
        .await;
}

/// `Retry-After` is honoured: after AGORA's `429` with `Retry-After: 2`, the dossier's next call
/// comes at least two seconds later (the sandbox's monotonic clock), though the backoff alone
/// (tens of milliseconds here) would have sent it far sooner. Nothing caps the wait below the
/// header: `retry.max_ms`, which caps a `Retry-After`, is above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    const RETRY_AFTER_S: u64 = 2;
    let sb = passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig {
        faults: Faults {
            retry_after_s: RETRY_AFTER_S,
            ..Faults::none()
        },
        ..Default::default()
    })
    .await
    .expect("sandbox");
    for call in [
        passerelle_sandbox::Call::AgoraSearch,
        passerelle_sandbox::Call::AgoraCreate,
    ] {
        sb.fail_next(passerelle_sandbox::ForcedFault {
            call: Some(call),
            fault: passerelle_sandbox::FaultKind::RateLimited,
            applied: false,
        });
    }
    // The backoff alone: 10 to 40 ms for the first attempts. Its ceiling, which also caps a
    // Retry-After (issue 18), is set above the header's value.
    let gw = crate::support::gateway_on(
        &sb,
        None,
        &[
            ("PASSERELLE__RETRY__BASE_MS", "20"),
            ("PASSERELLE__RETRY__MAX_MS", "5000"),
        ],
    )
    .await;
    let x = generated(31, 10)
        .into_iter()
        .find(|x| expected_etat(x).is_some())
        .expect("a dossier AGORA must hold");
    let x = &x;
    let id = gw.post_atexo_accepted(&x.id, &x.xml).await;
    let expected = HashMap::from([(id.clone(), expected_etat(x))]);
    wait_for_agora(
        &gw.http,
        &gw.sandbox_url,
        &expected,
        Duration::from_secs(60),
    )
    .await;

    let calls: Vec<_> = sb
        .journal()
        .into_iter()
        .filter(|c| c.reference.as_deref() == Some(id.as_str()))
        .collect();
    let mut limited = 0;
    for pair in calls.windows(2) {
        if pair[0].status != Some(429) {
            continue;
        }
        limited += 1;
        let gap = Duration::from_micros(pair[1].since_start_us - pair[0].since_start_us);
        assert!(
            gap >= Duration::from_secs(RETRY_AFTER_S),
            "{} answered 429 with Retry-After: {RETRY_AFTER_S}, yet the next call came {gap:?} later",
            pair[0].call
        );
    }
    assert_eq!(
        limited, 2,
        "a 429 on the search and on the creation: {calls:?}"
    );
    journal_of(&gw).await.assert_nothing_sent_twice();
    gw.stop().await;
    sb.shutdown().await;
}

async fn journal_of(gw: &Gateway) -> crate::support::AgoraJournal {
    agora_journal(&gw.sandbox_get("/_sandbox/journal").await)
}
