//! Crash: `passerelle serve` runs as a child process while 2,000 dossiers are posted; in the middle
//! of it the process is killed with SIGKILL (no shutdown, nothing flushed), then started again on
//! the same ledger and queue. The poster behaves like a real client: what was not answered `202`
//! is posted again. In the end every dossier is in its final state in AGORA (a sandbox outside the
//! gateway, so it survives the kill), created once, and no operation AGORA applied was sent again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use passerelle_sandbox::{Sandbox, SandboxConfig};
use passerelle_tests::generate::SingleExport;

use crate::support::{
    agora_journal, assert_created_once, expected_etat, generated, wait_for_agora, Production,
    ServeProcess, ATEXO_TOKEN,
};

const DOSSIERS: usize = 2_000;

/// Posts every dossier until each is answered `202`, as a client that retries what failed.
async fn post_until_accepted(
    url: String,
    dossiers: Arc<Vec<SingleExport>>,
    accepted: Arc<AtomicUsize>,
) -> HashMap<String, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    futures_util::stream::iter(0..dossiers.len())
        .map(|i| {
            let (http, url, dossiers, accepted) = (
                http.clone(),
                url.clone(),
                dossiers.clone(),
                accepted.clone(),
            );
            async move {
                let x = &dossiers[i];
                loop {
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
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

async fn killed_in_the_middle_of_two_thousand_dossiers(production: Option<Production>, seed: u64) {
    let _heavy = crate::support::heavy().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeProcess::new(dir.path(), &sandbox, production.as_ref(), &[]);
    serve.start().await;

    let dossiers = Arc::new(generated(seed, DOSSIERS));
    let accepted = Arc::new(AtomicUsize::new(0));
    let poster = tokio::spawn(post_until_accepted(
        serve.url.clone(),
        dossiers.clone(),
        accepted.clone(),
    ));
    // Kill it while dossiers are both coming in and going out to AGORA.
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted.load(Ordering::Relaxed) < DOSSIERS / 2 || sandbox.creations().len() < 100 {
        assert!(
            Instant::now() < deadline,
            "the gateway made no progress ({} accepted, {} created): {}",
            accepted.load(Ordering::Relaxed),
            sandbox.creations().len(),
            serve.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.kill();
    let at_kill = (accepted.load(Ordering::Relaxed), sandbox.creations().len());
    assert!(
        at_kill.0 < DOSSIERS,
        "killed too late to prove anything: {at_kill:?}"
    );
    eprintln!(
        "killed with {} of {DOSSIERS} dossiers accepted and {} created in AGORA",
        at_kill.0, at_kill.1
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    serve.start().await;

    let ids = poster.await.expect("every dossier accepted");
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

    let get = |path: &'static str| {
        let url = format!("{}{path}", sandbox.base_url());
        async move {
            reqwest::get(url)
                .await
                .expect("sandbox")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let journal = agora_journal(&get("/_sandbox/journal").await);
    journal.assert_nothing_sent_twice();
    assert_created_once(&get("/_sandbox/agora/creations").await);
    serve.kill();
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_gateway_killed_in_the_middle_of_two_thousand_dossiers() {
    killed_in_the_middle_of_two_thousand_dossiers(None, 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_gateway_killed_in_the_middle_of_two_thousand_dossiers() {
    killed_in_the_middle_of_two_thousand_dossiers(Some(Production::new("crash")), 22).await;
}
