//! Production at scale (issue 17): poison tasks, lanes that die, several replicas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use passerelle_sandbox::{Sandbox, SandboxConfig};

use crate::support::{
    expected_etat, generated, wait_for_agora, Production, ServeProcess, ATEXO_TOKEN,
};

const ADMIN_TOKEN: &str = "replicas-admin-token";

async fn post(http: &reqwest::Client, url: &str, xml: &[u8]) -> String {
    let r = http
        .post(format!("{url}/v1/inbound/atexo-sem/dossiers"))
        .bearer_auth(ATEXO_TOKEN)
        .header("Content-Type", "application/xml")
        .body(xml.to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.expect("json");
    body["dossiers"][0]["dossier_id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// A task that fails at every delivery (the worker panics on it: a test hook of debug builds)
/// becomes a dead letter with reason `poison` after the queue's delivery limit, and the lane goes
/// on delivering the next dossier.
async fn a_poison_task_is_dead_lettered_and_its_lane_goes_on(production: Option<Production>) {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let dossiers = generated(171, 2);
    let (poison, healthy) = (&dossiers[0], &dossiers[1]);
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = format!("panic_on_source={}", poison.id);
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        production.as_ref(),
        &[
            ("PASSERELLE_TEST_FAULTS", fault.as_str()),
            ("AUTH__TOKENS__ADMIN", ADMIN_TOKEN),
            ("WORKER__SYNC_CONCURRENCY", "2"),
        ],
    );
    serve.start().await;
    let http = reqwest::Client::new();
    let poisoned = post(&http, &serve.url, &poison.xml).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    let dead = loop {
        let r = http
            .get(format!(
                "{}/v1/dead-letters?dossier_id={poisoned}",
                serve.url
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("dead letters");
        assert_eq!(r.status(), 200);
        let list: serde_json::Value = r.json().await.expect("json");
        if let Some(first) = list.as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter for the poison task: {}",
            serve.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead["reason"], "poison", "{dead}");
    assert_eq!(
        dead["detail"]["returns"],
        passerelle::queue::DELIVERY_LIMIT,
        "{dead}"
    );

    // The lane goes on: the next dossier reaches AGORA, the poison one never did.
    let delivered = post(&http, &serve.url, &healthy.xml).await;
    let expected: HashMap<String, Option<&'static str>> = [
        (delivered, expected_etat(healthy)),
        (poisoned.clone(), None),
    ]
    .into_iter()
    .collect();
    wait_for_agora(
        &http,
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(60),
    )
    .await;
    let ready = http
        .get(format!("{}/readyz", serve.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "{}", serve.log_tail());
    serve.kill();
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_poison_task_is_dead_lettered_and_its_lane_goes_on() {
    a_poison_task_is_dead_lettered_and_its_lane_goes_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_poison_task_is_dead_lettered_and_its_lane_goes_on() {
    a_poison_task_is_dead_lettered_and_its_lane_goes_on(Some(Production::new("poison"))).await;
}

/// A worker lane that ends when it was not told to (a test hook of debug builds ends the sync
/// lane after its first task) makes `serve` exit non-zero, so that its supervisor restarts it;
/// until then `/readyz` names the stopped lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_that_dies_makes_serve_exit_non_zero() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        None,
        &[
            ("PASSERELLE_TEST_FAULTS", "end_lane=sync"),
            ("SERVER__SHUTDOWN_GRACE_S", "5"),
        ],
    );
    serve.start().await;
    let http = reqwest::Client::new();
    let ready: serde_json::Value = http
        .get(format!("{}/readyz", serve.url))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["tasks"]["sync"]["status"], "running", "{ready}");
    assert!(
        ready["tasks"]["sweeper"]["heartbeat_at"].is_string(),
        "{ready}"
    );
    let x = &generated(172, 1)[0];
    post(&http, &serve.url, &x.xml).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = serve.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve goes on without its sync lane: {}",
            serve.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status}: {}", serve.log_tail());
    let log = std::fs::read_to_string(&serve.log).unwrap_or_default();
    assert!(
        log.contains("`sync` ended when it was not told to"),
        "{}",
        serve.log_tail()
    );
    sandbox.shutdown().await;
}

fn settings(
    dir: &std::path::Path,
    ledger: &str,
    extra: &[(&str, String)],
) -> passerelle::settings::Settings {
    let d = dir.display().to_string();
    let mut env = vec![
        (
            "PASSERELLE__SERVER__BIND".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("PASSERELLE__DATA__DIR".to_string(), d.clone()),
        ("PASSERELLE__LEDGER__URL".to_string(), ledger.to_string()),
        (
            "PASSERELLE__QUEUE__URL".to_string(),
            format!("embedded:{d}/queue.db"),
        ),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (format!("PASSERELLE__{k}"), v.clone())),
    );
    passerelle::settings::Settings::load(None, env).expect("settings")
}

/// Two replicas in their own empty directories on one ledger share its salt (one dossier id for
/// one trainee and session); a replica configured with another salt refuses to start, naming
/// `identity.salt_file`. A PostgreSQL ledger with AGORA left to the sandbox refuses to start,
/// naming `agora.base_url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_ledgers_salt_and_production_refuses_the_sandbox() {
    use passerelle::startup::Application;
    let shared = tempfile::tempdir().expect("tempdir");
    let ledger = format!("sqlite://{}/passerelle.db", shared.path().display());
    let (one, two, three) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = Application::build(settings(one.path(), &ledger, &[]))
        .await
        .expect("first replica");
    let b = Application::build(settings(two.path(), &ledger, &[]))
        .await
        .expect("second replica");
    use secrecy::ExposeSecret;
    assert_eq!(
        a.credentials.dossier_salt.expose_secret(),
        b.credentials.dossier_salt.expose_secret()
    );
    assert!(!a.credentials.dossier_salt.expose_secret().is_empty());
    a.spawn().stop().await;
    b.spawn().stop().await;
    let salt = three.path().join("salt");
    std::fs::write(&salt, "another-salt").expect("salt file");
    let refused = Application::build(settings(
        three.path(),
        &ledger,
        &[("IDENTITY__SALT_FILE", salt.display().to_string())],
    ))
    .await
    .expect_err("a disagreeing salt is refused");
    assert!(
        refused.to_string().contains("identity.salt_file"),
        "{refused}"
    );

    let production = Production::new("guard");
    let refused = Application::build(settings(three.path(), &production.ledger_url, &[]))
        .await
        .expect_err("the sandbox is refused in production");
    assert!(refused.to_string().contains("agora.base_url"), "{refused}");
}

/// A dossier run slower than its lease is never delivered twice: AGORA takes 3 s to answer the
/// creation (applied at once), the lease lasts 1 s, and a second task of the same dossier (a newer
/// version) keeps asking for it. The run renews its lease before the call for the call's timeout,
/// so the second task waits its turn; without that, it would take the dossier over mid-call and
/// both would send the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_slower_than_its_lease_is_not_delivered_twice() {
    use passerelle_sandbox::{Call, FaultKind, ForcedFault};
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    sandbox.fail_next(ForcedFault {
        call: Some(Call::AgoraCreate),
        fault: FaultKind::Slow,
        applied: true,
    });
    let gw = crate::support::gateway_on(
        &sandbox,
        None,
        &[
            ("PASSERELLE__WORKER__LEASE_TTL_S", "1"),
            ("PASSERELLE__AGORA__REQUEST_TIMEOUT_MS", "6000"),
        ],
    )
    .await;
    let fixture = crate::support::fixture("atexo_sem/valid/entre.xml");
    let first = gw.post_atexo_accepted("PDL-2019-000102", &fixture).await;
    // The creation is under way (and slow) when the newer version arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.calls(Call::AgoraCreate).is_empty() {
        assert!(Instant::now() < deadline, "no creation within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newer = String::from_utf8(fixture)
        .expect("UTF-8")
        .replace("version=\"4\"", "version=\"5\"")
        .replace("certification=\"RNCP34567\"", "certification=\"RNCP34568\"");
    let second = gw
        .post_atexo_accepted("PDL-2019-000102", newer.as_bytes())
        .await;
    assert_eq!(first, second, "one dossier");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agora = gw.agora().await;
        let entered = agora
            .as_array()
            .expect("dossiers")
            .iter()
            .any(|d| d["reference"] == first.as_str() && d["etat"] == "ENTRE");
        let trace: serde_json::Value = gw
            .http
            .get(format!("{}/v1/dossiers/{first}", gw.url))
            .bearer_auth(secrecy::ExposeSecret::expose_secret(&gw.creds.admin))
            .send()
            .await
            .expect("trace")
            .json()
            .await
            .expect("json");
        if entered && trace["delivery"]["agora"]["status"] == "delivered" {
            // The run kept its lease through the slow call: it recorded the creation's answer
            // itself, rather than losing the dossier to the second task, which would have found
            // the creation by a search.
            let ops = trace["history"]["operations"].as_array().expect("ops");
            assert!(
                ops.iter()
                    .any(|o| o["operation"] == "create" && o["status"] == 201),
                "the slow creation's answer was not recorded by its run: {ops:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within 60 s: {trace}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = sandbox.calls(Call::AgoraCreate);
    assert!(
        slow.iter().any(|c| c.fault == Some(FaultKind::Slow)),
        "the creation was slow: {slow:?}"
    );
    crate::support::agora_journal(&gw.sandbox_get("/_sandbox/journal").await)
        .assert_nothing_sent_twice();
    crate::support::assert_created_once(&gw.sandbox_get("/_sandbox/agora/creations").await);
    gw.stop().await;
    sandbox.shutdown().await;
}

/// SIGTERM drains `serve`: it stops accepting at once, lets the task in flight finish (its AGORA
/// answer, held by the sandbox, comes back within `server.shutdown_grace_s`) and exits `0`; the
/// call it made is recorded, so a restarted gateway does not send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_tasks_in_flight_within_the_grace_period() {
    let _heavy = crate::support::heavy().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        None,
        &[
            ("SERVER__SHUTDOWN_GRACE_S", "10"),
            ("AUTH__TOKENS__ADMIN", ADMIN_TOKEN),
        ],
    );
    serve.start().await;
    let http = reqwest::Client::new();
    // The next AGORA write is applied and its answer held: a task in flight.
    let mut hold = sandbox.hold_answer_of_write(1);
    let fixture = crate::support::fixture("atexo_sem/valid/entre.xml");
    let id = post(&http, &serve.url, &fixture).await;
    let held = tokio::time::timeout(Duration::from_secs(30), hold.applied())
        .await
        .expect("a write within 30 s")
        .expect("the held write");
    let url = serve.url.clone();
    let release = tokio::spawn(async move {
        // Long enough for the listener to have stopped, well within the grace period.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        hold.release();
        hold
    });
    let terminating = serve.terminate(Duration::from_secs(10));
    let refused = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // A fresh client: no pooled connection from before the signal.
        reqwest::Client::new()
            .get(format!("{url}/healthz"))
            .send()
            .await
    };
    let (status, refused) = tokio::join!(terminating, refused);
    let _hold = release.await.expect("released");
    assert!(
        refused.is_err(),
        "still accepting after SIGTERM: {:?}",
        refused.map(|r| r.status())
    );
    let status = status
        .unwrap_or_else(|| panic!("not drained within the grace period: {}", serve.log_tail()));
    assert!(status.success(), "exit {status}: {}", serve.log_tail());

    // Restarted: the dossier is delivered, and the drained call was not sent again.
    serve.start().await;
    let expected = HashMap::from([(id.clone(), Some("ENTRE"))]);
    wait_for_agora(
        &http,
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(60),
    )
    .await;
    let again: Vec<_> = sandbox
        .journal()
        .into_iter()
        .filter(|c| {
            c.seq > held.seq && c.reference.as_deref() == Some(id.as_str()) && c.call == held.call
        })
        .collect();
    assert!(
        again.is_empty(),
        "{} sent again after the drain: {again:?}",
        held.call
    );
    // The drained run itself recorded AGORA's answer to the held call: it finished its task
    // rather than leaving it to the next start (which would have found the dossier by a search).
    let trace: serde_json::Value = http
        .get(format!("{}/v1/dossiers/{id}", serve.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("trace")
        .json()
        .await
        .expect("json");
    let ops = trace["history"]["operations"]
        .as_array()
        .expect("operations");
    let call = held.call.to_string();
    let operation = call.trim_start_matches("agora_");
    assert!(
        ops.iter()
            .any(|o| o["operation"] == operation && o["status"].is_number()),
        "the held {call}'s answer was not recorded by the drained run: {ops:?}"
    );
    serve.kill();
    sandbox.shutdown().await;
}
