//! Crash: `passerelle serve` runs as a child process while dossiers are posted and AGORA (a
//! sandbox outside the gateway, so it survives) fails some of its calls; three times, at a moment
//! drawn from the test's seed, the sandbox applies a write and holds its answer, and the process
//! is killed with SIGKILL (no shutdown, nothing flushed) before hearing it, then started again on
//! the same ledger and queue. The poster behaves like a real client: what was not answered `202`
//! is posted again. In the end every dossier is in its final state in AGORA with the body it was
//! created with, created once; each write applied but unanswered was settled by a search and never
//! sent again; no operation AGORA applied was sent again; no return to ATEXO SEM was sent twice.
//!
//! The seed is `PASSERELLE_TEST_SEED` (printed): set it to replay a failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use passerelle_adapters::agora::encode_dossier;
use passerelle_adapters::atexo_sem::{decode_stream, DecodeSettings, Flow};
use passerelle_sandbox::{Call, CallRecord, Faults, RunningSandbox, Sandbox, SandboxConfig};
use passerelle_tests::generate::SingleExport;
use rand::{Rng, SeedableRng};

use crate::support::{
    agora_journal, assert_created_once, assert_every_state_returned_once, expected_etat, generated,
    test_seed, wait_for_agora, Production, ServeProcess, ATEXO_TOKEN, POST_PATIENCE,
};

const DOSSIERS: usize = 400;
const KILLS: usize = 3;

/// Posts every dossier until each is answered `202`, as a client that retries what failed, to
/// wherever the gateway listens now; gives up on a dossier after [`POST_PATIENCE`].
async fn post_until_accepted(
    endpoint: Arc<RwLock<String>>,
    dossiers: Arc<Vec<SingleExport>>,
    accepted: Arc<AtomicUsize>,
) -> HashMap<String, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    futures_util::stream::iter(0..dossiers.len())
        .map(|i| {
            let (http, endpoint, dossiers, accepted) = (
                http.clone(),
                endpoint.clone(),
                dossiers.clone(),
                accepted.clone(),
            );
            async move {
                let x = &dossiers[i];
                let deadline = Instant::now() + POST_PATIENCE;
                loop {
                    let url = endpoint.read().expect("endpoint").clone();
                    let answer = http
                        .post(format!("{url}/v1/inbound/atexo-sem/dossiers"))
                        .bearer_auth(ATEXO_TOKEN)
                        .header("Content-Type", "application/xml")
                        .body(x.xml.clone())
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status() == 202 => {
                            let body: serde_json::Value = r.json().await.expect("json");
                            let id = body["dossiers"][0]["dossier_id"].as_str().expect("id");
                            accepted.fetch_add(1, Ordering::Relaxed);
                            return (x.id.clone(), id.to_string());
                        }
                        // Down (refused, reset), not ready (503) or over the rate (429): post
                        // it again later.
                        Ok(r) if r.status() == 503 || r.status() == 429 => {}
                        Err(_) => {}
                        Ok(r) => panic!("{}: unexpected {}", x.id, r.status()),
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: not accepted within {POST_PATIENCE:?}",
                        x.id
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// AGORA, and ATEXO SEM's returns endpoint, failing some of their calls, half of the failures
/// after applying: a return whose post failed is posted again from the outbox, under its key.
fn faults(seed: u64) -> Faults {
    Faults {
        seed,
        error_503: 0.04,
        drop: 0.03,
        slow: 0.02,
        rate_limited: 0.02,
        applied_share: 0.5,
        retry_after_s: 1,
        slow_ms: 800,
        only: vec![
            Call::AgoraSearch,
            Call::AgoraCreate,
            Call::AgoraEnter,
            Call::AgoraExit,
            Call::AgoraSettle,
            Call::AgoraCancel,
            Call::AtexoReturn,
        ],
        ..Faults::none()
    }
}

async fn get(sandbox: &RunningSandbox, path: &str) -> serde_json::Value {
    reqwest::get(format!("{}{path}", sandbox.base_url()))
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json")
}

async fn killed_three_times_under_faults(production: Option<Production>, test: &str) {
    let _heavy = crate::support::heavy().await;
    let seed = test_seed(test);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sandbox = Sandbox::start(SandboxConfig {
        faults: faults(seed),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let returns_url = sandbox.atexo_sem_returns_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        production.as_ref(),
        &[
            ("ATEXO_SEM__RETURNS_URL", returns_url.as_str()),
            ("AGORA__REQUEST_TIMEOUT_MS", "400"),
            ("RETRY__BASE_MS", "20"),
            ("RETRY__MAX_MS", "300"),
            ("RETRY__MAX_ATTEMPTS", "60"),
        ],
    );
    serve.start().await;

    let dossiers = Arc::new(generated(seed, DOSSIERS));
    let accepted = Arc::new(AtomicUsize::new(0));
    let poster = tokio::spawn(post_until_accepted(
        serve.endpoint.clone(),
        dossiers.clone(),
        accepted.clone(),
    ));
    let mut held: Vec<CallRecord> = Vec::new();
    for kill in 1..=KILLS {
        // The k-th write from now, applied by AGORA: its answer is held, the gateway killed.
        let k = rng.gen_range(1..=40);
        let mut hold = sandbox.hold_answer_of_write(k);
        let record = tokio::time::timeout(Duration::from_secs(120), hold.applied())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {k}th write within 120 s ({} accepted): {}",
                    accepted.load(Ordering::Relaxed),
                    serve.log_tail()
                )
            })
            .expect("the held write");
        serve.kill();
        hold.release();
        eprintln!(
            "kill {kill}: after write #{k} ({} {}), {} of {DOSSIERS} dossiers accepted",
            record.call,
            record.reference.as_deref().unwrap_or("?"),
            accepted.load(Ordering::Relaxed)
        );
        held.push(record);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await;
        serve.start().await;
    }
    let ids = tokio::time::timeout(Duration::from_secs(300), poster)
        .await
        .expect("every dossier posted within 300 s")
        .expect("every dossier accepted");
    let expected: HashMap<String, Option<&'static str>> = dossiers
        .iter()
        .map(|x| (ids[&x.id].clone(), expected_etat(x)))
        .collect();
    wait_for_agora(
        &reqwest::Client::new(),
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(300),
    )
    .await;

    let raw = get(&sandbox, "/_sandbox/journal").await;
    let journal = agora_journal(&raw);
    journal.assert_nothing_sent_twice();
    assert_created_once(&get(&sandbox, "/_sandbox/agora/creations").await);
    // Each held write: applied once, settled by a later search, never sent again.
    let all = sandbox.journal();
    for h in &held {
        let reference = h.reference.as_deref().expect("a write names its dossier");
        let later: Vec<&CallRecord> = all
            .iter()
            .filter(|c| c.seq > h.seq && c.reference.as_deref() == Some(reference))
            .collect();
        assert!(
            later
                .iter()
                .any(|c| c.call == Call::AgoraSearch && c.status == Some(200)),
            "{} of {reference}, applied but unanswered, was not settled by a search: {:?}",
            h.call,
            journal.trace.get(reference)
        );
        assert!(
            !later.iter().any(|c| c.call == h.call),
            "{} of {reference}, applied but unanswered, was sent again: {:?}",
            h.call,
            journal.trace.get(reference)
        );
    }
    // What AGORA stores is the dossier as posted.
    let by_reference: HashMap<&str, &SingleExport> =
        dossiers.iter().map(|x| (ids[&x.id].as_str(), x)).collect();
    let mut compared = 0;
    for d in sandbox.agora_dossiers() {
        let x = by_reference[d.reference.as_str()];
        let sem = decode_stream(x.xml.as_slice(), Flow::Sync, &DecodeSettings::default())
            .next()
            .expect("one dossier")
            .expect("a valid dossier");
        let want = encode_dossier(&d.reference, &sem.dossier).expect("encodable");
        assert_eq!(
            serde_json::to_value(&d.body).expect("json"),
            serde_json::to_value(&want).expect("json"),
            "AGORA's body of {}",
            x.id
        );
        compared += 1;
    }
    assert!(compared > DOSSIERS / 2, "{compared} bodies compared");
    // Returns: every state AGORA holds was returned to ATEXO SEM, none twice: nothing lost to a
    // kill between AGORA's answer and the return (the outbox), and the writes whose answer died
    // with the process returned once their search told the gateway.
    assert_every_state_returned_once(
        &sandbox,
        |reference| by_reference.get(reference).map(|x| x.id.clone()),
        Duration::from_secs(60),
        KILLS,
    )
    .await;
    serve.kill();
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_gateway_killed_three_times_under_faults() {
    killed_three_times_under_faults(None, "embedded_gateway_killed_three_times_under_faults").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_gateway_killed_three_times_under_faults() {
    killed_three_times_under_faults(
        Some(Production::new("crash")),
        "rabbitmq_gateway_killed_three_times_under_faults",
    )
    .await;
}
