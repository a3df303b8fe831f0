//! The chaos test (issue 17): three `passerelle serve` replicas, each a child process in its own
//! empty directory, on one fresh PostgreSQL database and RabbitMQ vhost, behind no balancer: the
//! test posts the sync flow of 2,000 trainees round-robin, so that a trainee's OUIFORM orientation
//! and ATEXO SEM dossier reach different replicas. Meanwhile AGORA fails 10 % of its calls, a
//! replica is SIGKILLed and restarted (the test is its supervisor), every AMQP connection of the
//! vhost is closed, and PostgreSQL is restarted. AGORA must end holding each dossier once, in its
//! state, with no operation applied twice and each state returned to ATEXO SEM once; then each
//! replica, left alone, must still deliver.
//!
//! A binary of its own: restarting PostgreSQL and closing connections would disturb the tests
//! the integration binary runs in parallel; cargo runs test binaries one after the other.

#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use passerelle_adapters::atexo_sem::{decode_stream, DecodeSettings, Flow};
use passerelle_sandbox::{Call, Faults, Sandbox, SandboxConfig};
use rand::{Rng, SeedableRng};
use serde_json::json;

use support::{
    agora_journal, assert_created_once, assert_every_state_returned_once, expected_etat, generated,
    signature, test_seed, wait_for_agora, Production, ServeProcess, ATEXO_TOKEN,
};

const TRAINEES: usize = 2_000;
const OUIFORM_TOKEN: &str = "chaos-ouiform-token";
const OUIFORM_SECRET: &str = "chaos-ouiform-hmac-secret";
const ADMIN_TOKEN: &str = "chaos-admin-token";

/// AGORA, and ATEXO SEM's returns endpoint, failing 10 % of their calls, half of the failures
/// after applying.
fn faults(seed: u64) -> Faults {
    Faults {
        seed,
        error_503: 0.04,
        drop: 0.02,
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

/// A message of the sync flow, and the replica it goes to.
struct Message {
    trainee: usize,
    replica: usize,
    kind: Kind,
}

enum Kind {
    Ouiform(Vec<u8>),
    Atexo(Vec<u8>),
}

/// The OUIFORM orientation of a generated trainee's ATEXO SEM dossier: same NIR, names, birth
/// date and session (one dossier, whichever replica derives its id).
fn orientation(i: usize, xml: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let sem = decode_stream(xml, Flow::Sync, &DecodeSettings::default())
        .next()
        .expect("one dossier")
        .expect("a valid dossier");
    let d = serde_json::to_value(&sem.dossier).expect("json");
    let t = &d["trainee"];
    let tr = &d["training"];
    let start = d["session"]["start"].as_str().unwrap_or("2019-09-02");
    json!({
        "idOrientation": format!("OF-CHAOS-{i:06}"),
        "dateOrientation": format!("{start}T09:00:00+02:00"),
        "statut": "ACCEPTEE",
        "prescripteur": {"type": "MISSION_LOCALE", "siretStructure": "44229377500031"},
        "beneficiaire": {
            "nir": t["nir"],
            "nomNaissance": t["birth_name"],
            "prenom": t["first_names"],
            "dateNaissance": t["birth_date"],
            "idNationalDE": uuid::Uuid::from_u128(rng.gen()).to_string(),
            "codePostal": t["postal_code"].as_str().unwrap_or("44000"),
        },
        "offre": {
            "numeroFormation": tr["numero_formation"],
            "numeroAction": tr["numero_action"],
            "numeroSession": tr["numero_session"],
            "siretOrganisme": d["provider"]["siret"],
            "intitule": tr["title"],
        },
        "financeur": d["fundings"][0]["funder"].to_string(),
        "dispositif": d["dispositif"]["code"],
    })
    .to_string()
    .into_bytes()
}

/// Posts one message to its replica until it is answered `202` (a client that retries what
/// failed, following the replica across restarts); the dossier id it names.
async fn post(
    http: &reqwest::Client,
    endpoint: &RwLock<String>,
    m: &Message,
    patience: Duration,
) -> String {
    let deadline = Instant::now() + patience;
    loop {
        let url = endpoint.read().expect("endpoint").clone();
        let req = match &m.kind {
            Kind::Atexo(xml) => http
                .post(format!("{url}/v1/inbound/atexo-sem/dossiers"))
                .bearer_auth(ATEXO_TOKEN)
                .header("Content-Type", "application/xml")
                .body(xml.clone()),
            Kind::Ouiform(body) => http
                .post(format!("{url}/v1/inbound/ouiform/orientations"))
                .bearer_auth(OUIFORM_TOKEN)
                .header("Content-Type", "application/json")
                .header("X-Ouiform-Signature", signature(OUIFORM_SECRET, body))
                .body(body.clone()),
        };
        match req.send().await {
            Ok(r) if r.status() == 202 => {
                let body: serde_json::Value = r.json().await.expect("json");
                // OUIFORM: `{"dossier_id"}`; ATEXO SEM: `{"dossiers": [{"dossier_id"}]}`.
                let id = match &m.kind {
                    Kind::Ouiform(_) => &body["dossier_id"],
                    Kind::Atexo(_) => &body["dossiers"][0]["dossier_id"],
                };
                return id.as_str().expect("a dossier id").to_string();
            }
            // Down, not ready or unable to commit (503), over the rate (429): again later.
            Ok(r) if r.status() == 503 || r.status() == 429 => {}
            Err(_) => {}
            Ok(r) => {
                let status = r.status();
                panic!(
                    "trainee {} on replica {}: unexpected {status}: {}",
                    m.trainee,
                    m.replica,
                    r.text().await.unwrap_or_default()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "trainee {} not accepted by replica {} within {patience:?}",
            m.trainee,
            m.replica
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The suite's PostgreSQL cluster (`tests/services.sh`): its version, for `pg_ctlcluster`.
fn pg_version() -> String {
    let out = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .expect("pg_lsclusters (tests/services.sh installs PostgreSQL)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("passerelle_test"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .expect("the passerelle_test cluster (run tests/services.sh)")
}

/// Leaves the suite's PostgreSQL running whatever happens to the test.
struct PostgresBackUp(String);

impl Drop for PostgresBackUp {
    fn drop(&mut self) {
        // `output`: its "already running" goes nowhere.
        let _ = Command::new("pg_ctlcluster")
            .args([self.0.as_str(), "passerelle_test", "start"])
            .output();
    }
}

/// Waits until `accepted` reaches `n` (the flow is that far along), restarting meanwhile any
/// replica that exited by itself, as its supervisor would (a replica may choose to exit rather
/// than reconnect).
async fn until(accepted: &AtomicUsize, n: usize, replicas: &mut [ServeProcess]) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while accepted.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the flow stalled below {n}");
        supervise(replicas).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times a replica exited by itself (and was restarted): each may have died between a
/// post and its record, as a SIGKILLed one may.
static EXITS: AtomicUsize = AtomicUsize::new(0);

/// Restarts the replicas that exited by themselves.
async fn supervise(replicas: &mut [ServeProcess]) {
    for (i, r) in replicas.iter_mut().enumerate() {
        if let Some(status) = r.exited() {
            EXITS.fetch_add(1, Ordering::SeqCst);
            eprintln!("chaos: replica {i} exited ({status}); restarting it");
            r.start().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_under_infrastructure_faults_deliver_each_dossier_once() {
    let seed = test_seed("three_replicas_under_infrastructure_faults");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let version = pg_version();
    let _postgres = PostgresBackUp(version.clone());
    let production = Production::new("chaos");
    let vhost = production
        .queue_url
        .rsplit('/')
        .next()
        .expect("a vhost")
        .to_string();
    let sandbox = Sandbox::start(SandboxConfig {
        faults: faults(seed),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let returns_url = sandbox.atexo_sem_returns_url();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut replicas: Vec<ServeProcess> = dirs
        .iter()
        .map(|d| {
            ServeProcess::new(
                d.path(),
                &sandbox,
                Some(&production),
                &[
                    ("ATEXO_SEM__RETURNS_URL", returns_url.as_str()),
                    ("AUTH__TOKENS__OUIFORM", OUIFORM_TOKEN),
                    ("OUIFORM__HMAC_SECRET", OUIFORM_SECRET),
                    ("AUTH__TOKENS__ADMIN", ADMIN_TOKEN),
                    ("AGORA__REQUEST_TIMEOUT_MS", "1000"),
                    ("RETRY__BASE_MS", "20"),
                    ("RETRY__MAX_MS", "500"),
                    ("RETRY__MAX_ATTEMPTS", "80"),
                    ("SERVER__RATE_PER_SECOND", "100000"),
                    ("SERVER__RATE_BURST", "100000"),
                ],
            )
        })
        .collect();
    for r in &mut replicas {
        r.start().await;
    }

    let exports = generated(seed, TRAINEES);
    let mut messages = Vec::with_capacity(2 * TRAINEES);
    for (i, x) in exports.iter().enumerate() {
        let body = orientation(i, &x.xml, &mut rng);
        // Message k goes to replica k % 3: a trainee's two messages reach two replicas.
        messages.push(Message {
            trainee: i,
            replica: (2 * i) % 3,
            kind: Kind::Ouiform(body),
        });
        messages.push(Message {
            trainee: i,
            replica: (2 * i + 1) % 3,
            kind: Kind::Atexo(x.xml.clone()),
        });
    }
    let messages = Arc::new(messages);
    let endpoints: Vec<Arc<RwLock<String>>> = replicas.iter().map(|r| r.endpoint.clone()).collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (messages, endpoints, accepted) =
            (messages.clone(), endpoints.clone(), accepted.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            futures_util::stream::iter(0..messages.len())
                .map(|k| {
                    let (http, messages, endpoints, accepted) = (
                        http.clone(),
                        messages.clone(),
                        endpoints.clone(),
                        accepted.clone(),
                    );
                    async move {
                        let m = &messages[k];
                        let id =
                            post(&http, &endpoints[m.replica], m, Duration::from_secs(300)).await;
                        accepted.fetch_add(1, Ordering::Relaxed);
                        (k, id)
                    }
                })
                .buffer_unordered(24)
                .collect::<Vec<_>>()
                .await
        })
    };

    // The chaos, at points of the flow drawn from the seed.
    let total = 2 * TRAINEES;
    let victim = rng.gen_range(0..3);
    until(
        &accepted,
        total * rng.gen_range(10..25) / 100,
        &mut replicas,
    )
    .await;
    eprintln!("chaos: SIGKILL replica {victim}");
    replicas[victim].kill();
    tokio::time::sleep(Duration::from_millis(rng.gen_range(200..2_000))).await;
    replicas[victim].start().await;
    until(
        &accepted,
        total * rng.gen_range(35..50) / 100,
        &mut replicas,
    )
    .await;
    eprintln!("chaos: every AMQP connection of vhost {vhost} closed");
    run(
        "rabbitmqctl",
        &[
            "close_all_connections",
            "--vhost",
            &vhost,
            "--limit",
            "1000",
            "chaos test",
        ],
    );
    until(
        &accepted,
        total * rng.gen_range(60..75) / 100,
        &mut replicas,
    )
    .await;
    eprintln!("chaos: PostgreSQL restarted");
    run("pg_ctlcluster", &[&version, "passerelle_test", "restart"]);

    until(&accepted, total, &mut replicas).await;
    let ids = tokio::time::timeout(Duration::from_secs(60), poster)
        .await
        .expect("every message posted")
        .expect("every message accepted");
    supervise(&mut replicas).await;
    // One dossier per trainee: both replicas derived the same id from the ledger's salt.
    let ids: HashMap<usize, String> = ids.into_iter().collect();
    let mut expected: HashMap<String, Option<&'static str>> = HashMap::new();
    for (i, x) in exports.iter().enumerate() {
        let (of, sem) = (&ids[&(2 * i)], &ids[&(2 * i + 1)]);
        assert_eq!(
            of, sem,
            "trainee {i}: OUIFORM and ATEXO SEM made two dossiers"
        );
        expected.insert(sem.clone(), expected_etat(x));
    }
    wait_for_agora(
        &reqwest::Client::new(),
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(600),
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
    agora_journal(&get("/_sandbox/journal").await).assert_nothing_sent_twice();
    assert_created_once(&get("/_sandbox/agora/creations").await);
    let atexo_of: HashMap<&str, &str> = exports
        .iter()
        .enumerate()
        .map(|(i, x)| (ids[&(2 * i + 1)].as_str(), x.id.as_str()))
        .collect();
    assert_every_state_returned_once(
        &sandbox,
        |reference| atexo_of.get(reference).map(|id| (*id).to_string()),
        Duration::from_secs(120),
        // The SIGKILL, every exit of a replica that chose to exit rather than reconnect, and the
        // PostgreSQL restart, which may fail the record of each replica's posts in flight.
        1 + EXITS.load(Ordering::SeqCst) + replicas.len(),
    )
    .await;

    // Left alone, each replica still delivers.
    let extra: Vec<_> = generated(seed ^ 0x5eed, 12)
        .into_iter()
        .filter(|x| expected_etat(x).is_some())
        .take(3)
        .collect();
    assert_eq!(extra.len(), 3, "three dossiers AGORA must hold");
    for (alone, x) in extra.iter().enumerate() {
        let m = Message {
            trainee: TRAINEES + alone,
            replica: alone,
            kind: Kind::Atexo(x.xml.clone()),
        };
        for (i, r) in replicas.iter_mut().enumerate() {
            if i != alone {
                r.kill();
            }
        }
        let id = post(
            &reqwest::Client::new(),
            &endpoints[alone],
            &m,
            Duration::from_secs(60),
        )
        .await;
        let etat = expected_etat(x).expect("a state");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !sandbox
            .agora_dossiers()
            .iter()
            .any(|d| d.reference == id && d.etat.as_str() == etat)
        {
            assert!(
                Instant::now() < deadline,
                "replica {alone}, alone, did not deliver {id} as {etat}: {}",
                replicas[alone].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (i, r) in replicas.iter_mut().enumerate() {
            if i != alone {
                r.start().await;
            }
        }
    }
    for r in &mut replicas {
        r.kill();
    }
    sandbox.shutdown().await;
}
