//! Crash: `passerelle serve` runs as a child process while 2,000 dossiers are posted; in the middle
//! of it the process is killed with SIGKILL (no shutdown, nothing flushed), then started again on
//! the same ledger and queue. The poster behaves like a real client: what was not answered `202`
//! is posted again. In the end every dossier is in its final state in AGORA (a sandbox outside the
//! gateway, so it survives the kill), created once, and no operation AGORA applied was sent again.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use passerelle_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use passerelle_tests::generate::SingleExport;

use crate::support::{
    agora_journal, assert_created_once, expected_etat, generated, wait_for_agora, Production,
};

const DOSSIERS: usize = 2_000;
const ATEXO_TOKEN: &str = "crash-test-atexo-token";

struct Serve {
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
    child: Option<Child>,
    url: String,
}

impl Serve {
    fn new(dir: &Path, sandbox: &RunningSandbox, production: Option<&Production>) -> Serve {
        // A fixed port, so the client finds the restarted process where it left the first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.display().to_string();
        let (ledger, queue) = production.map_or_else(
            || {
                (
                    format!("sqlite://{d}/passerelle.db"),
                    format!("embedded:{d}/queue.db"),
                )
            },
            |p| (p.ledger_url.clone(), p.queue_url.clone()),
        );
        let env = [
            ("SERVER__BIND", format!("127.0.0.1:{port}")),
            ("DATA__DIR", d.clone()),
            ("LEDGER__URL", ledger),
            ("QUEUE__URL", queue),
            ("AGORA__BASE_URL", sandbox.agora_url()),
            ("AGORA__TOKEN", sandbox.agora_token().to_string()),
            ("AUTH__TOKENS__ATEXO_SEM", ATEXO_TOKEN.to_string()),
            ("RETRY__BASE_MS", "50".to_string()),
            ("RETRY__MAX_MS", "500".to_string()),
            // The killed process's leases must expire soon for the test to end soon.
            ("WORKER__LEASE_TTL_S", "5".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("PASSERELLE__{k}"), v))
        .collect();
        Serve {
            env,
            log: dir.join("serve.log"),
            child: None,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gateway_process"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("passerelle serve starts");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("passerelle serve exited ({status}): {}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "passerelle serve never got ready: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, nothing flushed.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

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
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::new(dir.path(), &sandbox, production.as_ref());
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
        assert!(Instant::now() < deadline, "the gateway made no progress");
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
