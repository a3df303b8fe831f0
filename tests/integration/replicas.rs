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

/// A run that lost its lease stops without writing. The dossier's creation is applied by AGORA
/// but its answer held; meanwhile another holder takes the dossier's lease (as a replica would
/// that found it lapsed). When the answer comes, the first run must not record it (its write is
/// fenced) nor send anything more. Once the other holder lets go, the next run finds the dossier
/// in doubt, learns the creation by a search and carries on: created once, nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_stops_without_writing() {
    use passerelle_sandbox::Call;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let production = Production::new("lease_lost");
    let gw = crate::support::gateway_on(&sandbox, Some(production), &[]).await;
    let ledger = gw.ledger_url.clone();
    let mut hold = sandbox.hold_answer_of_write(1);
    let fixture = crate::support::fixture("atexo_sem/valid/entre.xml");
    let id = gw.post_atexo_accepted("PDL-2019-000102", &fixture).await;
    let created = tokio::time::timeout(Duration::from_secs(60), hold.applied())
        .await
        .expect("the creation within 60 s")
        .expect("the held creation");
    assert_eq!(created.call, Call::AgoraCreate);
    let stolen = crate::support::psql_on(
        &ledger,
        &format!(
            "UPDATE leases SET holder = 'another-replica', \
             expires_at = now() + interval '1 hour' WHERE dossier_id = '{id}' RETURNING holder"
        ),
    );
    assert_eq!(
        stolen, "another-replica",
        "the run held the dossier's lease"
    );
    hold.release();

    let trace = |gw: &crate::support::Gateway| {
        let (http, url, token) = (
            gw.http.clone(),
            format!("{}/v1/dossiers/{id}", gw.url),
            secrecy::ExposeSecret::expose_secret(&gw.creds.admin).to_string(),
        );
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("trace")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    // The answer reached the run (its call ended), and it wrote nothing: the creation not
    // recorded (only the search that preceded it), still pending, no further call to AGORA.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox
        .calls(Call::AgoraCreate)
        .iter()
        .any(|c| c.status == Some(201))
    {
        assert!(Instant::now() < deadline, "the creation was never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = trace(&gw).await;
    let ops = t["history"]["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        ops.iter().all(|o| o["operation"] == "search"),
        "a run that lost its lease recorded its creation: {ops:?}"
    );
    let searched_before = ops.len();
    assert_eq!(t["delivery"]["agora"]["status"], "pending", "{t}");
    let after: Vec<_> = sandbox
        .journal()
        .into_iter()
        .filter(|c| c.seq > created.seq && c.call != Call::AgoraCreate)
        .filter(|c| c.call != Call::AtexoReturn)
        .collect();
    assert!(
        after.is_empty(),
        "calls after the lease was lost: {after:?}"
    );
    assert_eq!(
        crate::support::psql_on(
            &ledger,
            &format!("SELECT holder FROM leases WHERE dossier_id = '{id}'")
        ),
        "another-replica",
        "the lease is left to its holder"
    );

    // The other holder goes away: the next run searches first, then goes on.
    crate::support::psql_on(
        &ledger,
        &format!(
            "UPDATE leases SET expires_at = now() - interval '1 second' WHERE dossier_id = '{id}'"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = trace(&gw).await;
        if t["delivery"]["agora"]["status"] == "delivered" {
            let ops = t["history"]["operations"].as_array().expect("ops");
            assert!(
                ops.iter().filter(|o| o["operation"] == "search").count() > searched_before,
                "the next run did not search first: {ops:?}"
            );
            assert!(
                !ops.iter().any(|o| o["operation"] == "create"),
                "the lost run's creation was recorded: {ops:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not delivered within 60 s: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::support::agora_journal(&gw.sandbox_get("/_sandbox/journal").await)
        .assert_nothing_sent_twice();
    crate::support::assert_created_once(&gw.sandbox_get("/_sandbox/agora/creations").await);
    gw.stop().await;
    sandbox.shutdown().await;
}

/// While the ledger cannot be reached (PostgreSQL refusing every connection to its database), a
/// task whose run it interrupted goes back to the queue after a delay that grows with each try,
/// never in a hot loop; once the ledger is back, the dossier is delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_outage_delays_the_tasks_it_interrupts_instead_of_looping() {
    let _heavy = crate::support::heavy().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let production = Production::new("outage");
    let database = production
        .ledger_url
        .rsplit('/')
        .next()
        .expect("a database")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    // A short lease: the interrupted run's lease, which the outage kept it from giving back,
    // lapses soon after.
    let mut serve = ServeProcess::new(
        dir.path(),
        &sandbox,
        Some(&production),
        &[("WORKER__LEASE_TTL_S", "5")],
    );
    serve.start().await;
    let x = generated(181, 12)
        .into_iter()
        .find(|x| expected_etat(x).is_some())
        .expect("an owed dossier");
    let mut hold = sandbox.hold_answer_of_write(1);
    let http = reqwest::Client::new();
    let id = post(&http, &serve.url, &x.xml).await;
    tokio::time::timeout(Duration::from_secs(60), hold.applied())
        .await
        .expect("the creation within 60 s")
        .expect("the held creation");
    let interrupted = |serve: &ServeProcess| {
        std::fs::read_to_string(&serve.log)
            .unwrap_or_default()
            .matches("reconciliation interrupted")
            .count()
    };
    let before = interrupted(&serve);
    // The ledger goes away while the creation's answer is on its way: its record fails.
    crate::support::psql(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ));
    crate::support::psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}'"
    ));
    hold.release();
    let outage = Duration::from_secs(8);
    tokio::time::sleep(outage).await;
    let tries = interrupted(&serve) - before;
    crate::support::psql(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"));
    eprintln!("{tries} interrupted tries in {outage:?} of outage");
    assert!(
        tries >= 1,
        "the outage interrupted nothing: {}",
        serve.log_tail()
    );
    // Doubling from 100 ms: 100 + 200 + 400 + 800 + 1,600 + 3,200 ms, then every 5 s. A task sent
    // back at once, or always after the same short delay, would come back dozens of times.
    assert!(
        tries <= 10,
        "{tries} tries of one task in {outage:?}: a hot loop\n{}",
        serve.log_tail()
    );
    if serve.exited().is_some() {
        // It may choose to exit rather than wait: its supervisor restarts it.
        serve.start().await;
    }
    let expected: HashMap<String, Option<&'static str>> =
        [(id, expected_etat(&x))].into_iter().collect();
    wait_for_agora(
        &http,
        &sandbox.base_url(),
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let journal = reqwest::get(format!("{}/_sandbox/journal", sandbox.base_url()))
        .await
        .expect("sandbox")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    crate::support::agora_journal(&journal).assert_nothing_sent_twice();
    serve.kill();
    sandbox.shutdown().await;
}

/// The replicas' lines saying they run the singleton `name`: (replica index, count).
fn runs_singleton(replicas: &[&ServeProcess], name: &str) -> Vec<usize> {
    replicas
        .iter()
        .map(|r| {
            std::fs::read_to_string(&r.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("this replica runs the singleton") && l.contains(name))
                .count()
        })
        .collect()
}

/// One of each singleton across replicas, as `serve` wires them: two replicas on one ledger run
/// one sweeper, one Pôle emploi poller and one retention purge between them (not one each), and
/// when the replica that runs the sweeper stops, the other takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_one_of_each_singleton_between_them() {
    let _heavy = crate::support::heavy().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let production = Production::new("singletons");
    let pe_url = sandbox.pole_emploi_url();
    let (pe_id, pe_secret) = sandbox.pole_emploi_credentials();
    let (pe_id, pe_secret) = (pe_id.to_string(), pe_secret.to_string());
    let env = [
        ("POLE_EMPLOI__AUTH_URL", pe_url.as_str()),
        ("POLE_EMPLOI__API_URL", pe_url.as_str()),
        ("POLE_EMPLOI__CLIENT_ID", pe_id.as_str()),
        ("POLE_EMPLOI__CLIENT_SECRET", pe_secret.as_str()),
        ("POLE_EMPLOI__SCOPE", "api_inscriptionsv1"),
    ];
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut a = ServeProcess::new(dir_a.path(), &sandbox, Some(&production), &env);
    let mut b = ServeProcess::new(dir_b.path(), &sandbox, Some(&production), &env);
    a.start().await;
    b.start().await;
    let names = ["sweeper", "pole_emploi_poller", "retention_purge"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held: Vec<usize> = names
            .iter()
            .map(|n| runs_singleton(&[&a, &b], n).iter().sum())
            .collect();
        if held.iter().all(|&n| n >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every singleton runs within 30 s: {names:?} {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past a renewal or two: still one runner each.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for name in names {
        let counts = runs_singleton(&[&a, &b], name);
        assert_eq!(
            counts.iter().sum::<usize>(),
            1,
            "{name} runs in {counts:?} replicas (a: {}, b: {})",
            a.log_tail(),
            b.log_tail()
        );
    }
    let holders = crate::support::psql_on(
        &production.ledger_url,
        "SELECT count(DISTINCT dossier_id) FROM leases \
         WHERE dossier_id LIKE 'singleton:%' AND expires_at > now()",
    );
    assert_eq!(holders, "3", "one live lease per singleton");

    // The replica that runs the sweeper stops: the other takes it over.
    let a_runs_it = runs_singleton(&[&a], "sweeper")[0] == 1;
    let (stopping, other) = if a_runs_it {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let status = stopping.terminate(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_singleton(&[&*other], "sweeper")[0] == 0 {
        assert!(
            Instant::now() < deadline,
            "nobody took the sweeper over: {}",
            other.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.kill();
    b.kill();
    sandbox.shutdown().await;
}
