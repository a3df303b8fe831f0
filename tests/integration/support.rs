//! What the end-to-end tests share: a gateway booted in-process on a random port (embedded, or
//! over a fresh PostgreSQL database and RabbitMQ vhost), fixtures, and views of AGORA as the
//! sandbox journals it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use passerelle::settings::Settings;
use passerelle::startup::{Application, RunningApp};
use passerelle_adapters::planner::{self, Target};
use passerelle_sandbox::RunningSandbox;
use passerelle_tests::generate::{GenOptions, Outcome, SingleExport};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub fn fixture(p: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(p);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is not runnable ({e}); run `bash tests/services.sh`"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}; run `bash tests/services.sh`",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The suite's PostgreSQL when `PASSERELLE_TEST_POSTGRES_URL` does not say: tests/services.sh's
/// own cluster, which trusts loopback.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5433/postgres";

/// The one place every test finds PostgreSQL: `PASSERELLE_TEST_POSTGRES_URL` (tests/run.sh sets
/// it), a URL whose user may create databases, on its `postgres` database.
pub fn postgres_admin_url() -> String {
    std::env::var("PASSERELLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_string())
}

/// The suite's PostgreSQL URL with another database (and no query).
pub fn postgres_url(database: &str) -> String {
    let admin = postgres_admin_url();
    let head = admin.split('?').next().unwrap_or_default();
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let base = head[after_scheme..]
        .find('/')
        .map_or(head, |i| &head[..after_scheme + i]);
    format!("{base}/{database}")
}

/// `psql` on the suite's PostgreSQL as its superuser: unaligned tuples, the output as text.
pub fn psql(sql: &str) -> String {
    psql_on(&postgres_admin_url(), sql)
}

/// `psql` on the database at `url` (a test's own ledger, say): unaligned tuples, no command tags,
/// the output as text; fails the test when the statement fails.
pub fn psql_on(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-d", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql is not runnable ({e}); run `bash tests/services.sh`"));
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}; run `bash tests/services.sh`",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh PostgreSQL database and RabbitMQ vhost, dropped with the value. Fails, never skips, when
/// either service is missing: `bash tests/services.sh` starts them.
pub struct Production {
    name: String,
    pub ledger_url: String,
    pub queue_url: String,
}

impl Production {
    /// `tag` keeps concurrent tests of one run apart.
    pub fn new(tag: &str) -> Production {
        let name = format!("passerelle_e2e_{}_{tag}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&format!("CREATE DATABASE {name}"));
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &name])
            .output();
        run("rabbitmqctl", &["add_vhost", &name]);
        run(
            "rabbitmqctl",
            &["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"],
        );
        Production {
            ledger_url: postgres_url(&name),
            queue_url: format!("amqp://guest:guest@127.0.0.1:5672/{name}"),
            name,
        }
    }
}

impl Drop for Production {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
        let _ = std::process::Command::new("psql")
            .args(["-d", &postgres_admin_url(), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// The longest a test client keeps posting one message that is not yet accepted (`429`, or a
/// gateway restarting): past it the test fails instead of hanging.
pub const POST_PATIENCE: Duration = Duration::from_secs(120);

/// The seed of a test that draws faults or kill points at random: `PASSERELLE_TEST_SEED` when
/// set (tests/run.sh sets and prints one; set it to replay a failure), else one drawn now. Printed
/// with the test's name either way.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("PASSERELLE_TEST_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: PASSERELLE_TEST_SEED={seed}");
    seed
}

/// The returns ATEXO SEM received (the sandbox's `/_sandbox/atexo-sem/retours`).
pub async fn atexo_returns(http: &reqwest::Client, sandbox_url: &str) -> Vec<serde_json::Value> {
    let r = http
        .get(format!("{sandbox_url}/_sandbox/atexo-sem/retours"))
        .send()
        .await
        .expect("sandbox");
    assert!(r.status().is_success(), "returns: {}", r.status());
    r.json().await.expect("json")
}

/// What identifies a return: ATEXO's dossier, AGORA's number, the state, the anomaly codes.
pub fn return_key(r: &serde_json::Value) -> String {
    let codes: Vec<&str> = r["anomalies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["code"].as_str())
        .collect();
    format!(
        "{} {} {} [{}]",
        r["dossier"].as_str().unwrap_or("?"),
        r["numero_agora"].as_str().unwrap_or("-"),
        r["etat"].as_str().unwrap_or("-"),
        codes.join(",")
    )
}

/// The state an AGORA write puts a dossier in, when it applies.
fn state_after(call: passerelle_sandbox::Call) -> Option<&'static str> {
    use passerelle_sandbox::Call;
    Some(match call {
        Call::AgoraCreate => "CREE",
        Call::AgoraEnter => "ENTRE",
        Call::AgoraExit => "SORTI",
        Call::AgoraSettle => "SOLDE",
        Call::AgoraCancel => "ANNULE",
        _ => return None,
    })
}

/// ATEXO SEM was told of everything AGORA did to its dossiers (contract §4), once:
/// - one return per state AGORA put a dossier in (each write it applied, whether or not its
///   answer reached the gateway: the creation with its number, then each transition), waiting up
///   to `within` for the outbox's sender;
/// - no return posted twice under two keys (the sandbox stores one per `Idempotency-Key`, so two
///   stored alike would be two returns);
/// - a post ATEXO SEM had acknowledged posted again only because a kill lost its record: at most
///   `kills` × the sender's posts in flight, and none at all without a kill.
///
/// `atexo_id` names the ATEXO SEM dossier of an AGORA reference (`None`: not one of the test's
/// ATEXO SEM dossiers).
pub async fn assert_every_state_returned_once(
    sandbox: &RunningSandbox,
    atexo_id: impl Fn(&str) -> Option<String>,
    within: Duration,
    kills: usize,
) {
    use passerelle_sandbox::Call;
    // (ATEXO dossier, state) of every write AGORA applied, with the number when the call names it.
    let mut want: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut numbers: HashMap<String, String> = HashMap::new();
    for d in sandbox.agora_dossiers() {
        numbers.insert(d.reference.clone(), d.numero_agora.clone());
    }
    for c in sandbox.journal() {
        let Some(state) = state_after(c.call) else {
            continue;
        };
        if !(c.applied && c.effect_status.is_some_and(|s| (200..300).contains(&s))) {
            continue;
        }
        let Some(reference) = c.reference.as_deref() else {
            continue;
        };
        if let Some(atexo) = atexo_id(reference) {
            let numero = numbers.get(reference).map_or("-", String::as_str);
            want.insert(format!("{atexo} {numero} {state}"));
        }
    }
    assert!(
        !want.is_empty(),
        "AGORA applied no write of the test's dossiers"
    );
    let deadline = Instant::now() + within;
    let returns = loop {
        let returns = atexo_returns(&reqwest::Client::new(), &sandbox.base_url()).await;
        let got: std::collections::HashSet<String> = returns
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["dossier"].as_str().unwrap_or("?"),
                    r["numero_agora"].as_str().unwrap_or("-"),
                    r["etat"].as_str().unwrap_or("-")
                )
            })
            .collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        if missing.is_empty() {
            break returns;
        }
        assert!(
            Instant::now() < deadline,
            "{} of the {} states AGORA put dossiers in were never returned to ATEXO SEM, e.g. {:?}",
            missing.len(),
            want.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_no_return_twice(&returns);
    // Posts answered 200 (no fault hid the answer), per key: beyond the first, a resend of a
    // return ATEXO SEM had acknowledged.
    let mut acknowledged: HashMap<String, usize> = HashMap::new();
    for c in sandbox
        .journal()
        .iter()
        .filter(|c| c.call == Call::AtexoReturn)
    {
        let key = c
            .idempotency_key
            .clone()
            .unwrap_or_else(|| panic!("a return posted without an Idempotency-Key: {c:?}"));
        if c.status == Some(200) && c.fault.is_none() {
            *acknowledged.entry(key).or_default() += 1;
        }
    }
    let resent: usize = acknowledged.values().map(|n| n - 1).sum();
    let bound = kills * passerelle::returns::IN_FLIGHT;
    assert!(
        resent <= bound,
        "{resent} returns ATEXO SEM had acknowledged were posted again ({kills} kills allow {bound})"
    );
    eprintln!(
        "returns: {} states returned, {} posts acknowledged, {resent} acknowledged posts resent after {kills} kills",
        want.len(),
        acknowledged.values().sum::<usize>()
    );
}

/// No return was sent twice: each (dossier, number, state, anomalies) at most once.
pub fn assert_no_return_twice(returns: &[serde_json::Value]) {
    let mut seen = std::collections::HashSet::new();
    for r in returns {
        let key = return_key(r);
        assert!(seen.insert(key.clone()), "a return sent twice: {key}");
    }
}

pub struct Gateway {
    pub url: String,
    /// The admin listener, when `server.admin_bind` is set.
    pub admin_url: Option<String>,
    /// The ledger, queue and data directory it runs on, for a command run beside it.
    pub ledger_url: String,
    pub queue_url: String,
    pub data_dir: PathBuf,
    app: Option<RunningApp>,
    pub creds: passerelle::routes::Credentials,
    pub sandbox_url: String,
    _dir: tempfile::TempDir,
    _production: Option<Production>,
    /// AGORA for a production gateway, which refuses the built-in sandbox.
    _sandbox: Option<RunningSandbox>,
    pub http: reqwest::Client,
}

pub async fn embedded_gateway() -> Gateway {
    gateway(None, &[]).await
}

/// A gateway with its built-in sandbox as AGORA; `extra` settings as `PASSERELLE__…` pairs.
pub async fn gateway(production: Option<Production>, extra: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let (ledger, queue) = production.as_ref().map_or_else(
        || {
            (
                format!("sqlite://{d}/passerelle.db"),
                format!("embedded:{d}/queue.db"),
            )
        },
        |p| (p.ledger_url.clone(), p.queue_url.clone()),
    );
    let mut env = vec![
        (
            "PASSERELLE__SERVER__BIND".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("PASSERELLE__DATA__DIR".to_string(), d.clone()),
        ("PASSERELLE__LEDGER__URL".to_string(), ledger.clone()),
        ("PASSERELLE__QUEUE__URL".to_string(), queue.clone()),
        ("PASSERELLE__RETRY__BASE_MS".to_string(), "50".to_string()),
        ("PASSERELLE__RETRY__MAX_MS".to_string(), "500".to_string()),
    ];
    // A production gateway refuses `agora.base_url = "sandbox"`: it gets a sandbox of its own
    // unless the test gives one.
    let mut own_sandbox = None;
    if production.is_some()
        && !extra
            .iter()
            .any(|(k, _)| *k == "PASSERELLE__AGORA__BASE_URL")
    {
        let sb = passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig::default())
            .await
            .expect("sandbox");
        env.push(("PASSERELLE__AGORA__BASE_URL".to_string(), sb.agora_url()));
        env.push((
            "PASSERELLE__AGORA__TOKEN".to_string(),
            sb.agora_token().to_string(),
        ));
        own_sandbox = Some(sb);
    }
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let settings = Settings::load(None, env).expect("settings");
    let app = Application::build(settings)
        .await
        .expect("the gateway starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let admin_url = app
        .admin_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let creds = app.credentials.clone();
    // Empty when AGORA is a sandbox the test runs itself (`PASSERELLE__AGORA__BASE_URL`).
    let sandbox_url = app
        .sandbox()
        .or(own_sandbox.as_ref())
        .map(|s| s.base_url())
        .unwrap_or_default();
    Gateway {
        url,
        admin_url,
        ledger_url: ledger,
        queue_url: queue,
        data_dir: dir.path().to_path_buf(),
        creds,
        sandbox_url,
        app: Some(app.spawn()),
        _dir: dir,
        _production: production,
        _sandbox: own_sandbox,
        http: reqwest::Client::new(),
    }
}

/// A gateway delivering to a sandbox the test runs itself (so that it can hold answers and read
/// what AGORA stores in-process), with ATEXO SEM's returns on: `atexo_sem.returns_url` is the
/// sandbox's returns endpoint.
pub async fn gateway_on(
    sandbox: &RunningSandbox,
    production: Option<Production>,
    extra: &[(&str, &str)],
) -> Gateway {
    let (agora, returns) = (sandbox.agora_url(), sandbox.atexo_sem_returns_url());
    let mut env: Vec<(&str, &str)> = vec![
        ("PASSERELLE__AGORA__BASE_URL", agora.as_str()),
        ("PASSERELLE__AGORA__TOKEN", sandbox.agora_token()),
        ("PASSERELLE__ATEXO_SEM__RETURNS_URL", returns.as_str()),
    ];
    env.extend_from_slice(extra);
    let mut gw = gateway(production, &env).await;
    gw.sandbox_url = sandbox.base_url();
    gw
}

impl Gateway {
    pub async fn post_atexo(&self, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/inbound/atexo-sem/dossiers", self.url))
            .bearer_auth(self.creds.atexo_sem().expose_secret())
            .header("Content-Type", "application/xml")
            .body(body)
            .send()
            .await
            .expect("answer")
    }

    /// Posts until accepted, honouring `429 Retry-After` as a well-behaved client does, for at
    /// most [`POST_PATIENCE`]; returns the `dossier_id` of the document's only dossier.
    pub async fn post_atexo_accepted(&self, id: &str, body: &[u8]) -> String {
        let deadline = Instant::now() + POST_PATIENCE;
        loop {
            let r = self.post_atexo(body.to_vec()).await;
            if r.status() == 429 {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                assert!(
                    Instant::now() + Duration::from_secs(wait) < deadline,
                    "{id}: still 429 after {} s",
                    POST_PATIENCE.as_secs()
                );
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            assert_eq!(r.status(), 202, "{id}");
            let body: serde_json::Value = r.json().await.expect("json");
            return body["dossiers"][0]["dossier_id"]
                .as_str()
                .expect("dossier_id")
                .to_string();
        }
    }

    pub async fn post_ouiform(&self, body: Vec<u8>, sign: bool) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/inbound/ouiform/orientations", self.url))
            .bearer_auth(self.creds.ouiform().expose_secret())
            .header("Content-Type", "application/json");
        if sign {
            req = req.header(
                "X-Ouiform-Signature",
                signature(self.creds.ouiform_hmac().expose_secret(), &body),
            );
        }
        req.body(body).send().await.expect("answer")
    }

    /// AGORA's dossiers as the sandbox shows them over HTTP.
    pub async fn agora(&self) -> serde_json::Value {
        self.sandbox_get("/_sandbox/agora/dossiers").await
    }

    pub async fn sandbox_get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.sandbox_url))
            .send()
            .await
            .expect("sandbox");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }

    pub async fn set_faults(&self, faults: &passerelle_sandbox::Faults) {
        let r = self
            .http
            .post(format!("{}/_sandbox/faults", self.sandbox_url))
            .json(faults)
            .send()
            .await
            .expect("sandbox");
        assert!(r.status().is_success(), "faults refused: {}", r.status());
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn states(agora: &serde_json::Value) -> Vec<String> {
    agora
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["etat"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `n` valid, in-perimeter generated dossiers, each its own document.
pub fn generated(seed: u64, n: usize) -> Vec<SingleExport> {
    passerelle_tests::generate::single_dossier_exports(&GenOptions {
        seed,
        count: n,
        flow: passerelle_adapters::atexo_sem::Flow::Sync,
        invalid_share: 0.0,
        out_of_perimeter_share: 0.0,
        before_2017_share: 0.0,
    })
    .expect("generated")
}

/// The AGORA state a generated dossier must end in (`None`: AGORA must not have it).
pub fn expected_etat(x: &SingleExport) -> Option<&'static str> {
    let Outcome::Valid(state) = x.truth.outcome else {
        panic!("{} is not a valid dossier", x.id);
    };
    match planner::target(state) {
        Target::State(s) => Some(s.as_str()),
        Target::Nothing | Target::CancelIfPresent => None,
    }
}

/// Waits until AGORA (the sandbox at `sandbox_url`) holds exactly what `expected` says
/// (reference → state; `None`: absent).
pub async fn wait_for_agora(
    http: &reqwest::Client,
    sandbox_url: &str,
    expected: &HashMap<String, Option<&'static str>>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let agora: serde_json::Value = http
            .get(format!("{sandbox_url}/_sandbox/agora/dossiers"))
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("json");
        let held: HashMap<String, String> = agora
            .as_array()
            .expect("dossiers")
            .iter()
            .map(|d| {
                (
                    d["reference"].as_str().unwrap_or("?").to_string(),
                    d["etat"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(r, e)| held.get(*r).map(String::as_str) != **e)
            .collect();
        let unknown = held.keys().filter(|r| !expected.contains_key(*r)).count();
        if wrong.is_empty() && unknown == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "AGORA did not converge: {} dossiers not in their state (e.g. {:?}), {unknown} unexpected",
            wrong.len(),
            wrong.iter().take(3).collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The sandbox's journal, per dossier reference: the operations whose effect AGORA applied, in
/// order (`create`, `enter`, …), and every call's status.
#[derive(Debug, Default)]
pub struct AgoraJournal {
    pub applied: BTreeMap<String, Vec<String>>,
    /// Calls answered `409` (a creation that existed, a transition from the wrong state).
    pub conflicts: Vec<serde_json::Value>,
    pub calls: usize,
    /// Every AGORA call, for diagnostics: reference → (seq, call, status, applied).
    pub trace: BTreeMap<String, Vec<String>>,
}

impl AgoraJournal {
    /// Nothing sent twice: no operation applied twice for a dossier, and no call AGORA refused
    /// because it had already been applied (`409`).
    pub fn assert_nothing_sent_twice(&self) {
        for (reference, ops) in &self.applied {
            let mut seen = ops.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(
                seen.len(),
                ops.len(),
                "{reference}: an operation applied twice: {ops:?}"
            );
        }
        assert!(
            self.conflicts.is_empty(),
            "an applied operation was sent again ({} times), e.g. {:?}",
            self.conflicts.len(),
            self.conflicts.first()
        );
    }
}

pub fn agora_journal(journal: &serde_json::Value) -> AgoraJournal {
    let mut j = AgoraJournal::default();
    for call in journal.as_array().expect("journal") {
        let kind = call["call"].as_str().unwrap_or("?");
        if !kind.starts_with("agora") {
            continue;
        }
        if kind.ends_with("search") {
            j.trace
                .entry(call["reference"].as_str().unwrap_or("?").to_string())
                .or_default()
                .push(format!("{} {kind} {}", call["seq"], call["status"]));
            continue;
        }
        j.calls += 1;
        j.trace
            .entry(call["reference"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(format!(
                "{} {kind} {} {} {}",
                call["seq"], call["status"], call["effect_status"], call["applied"]
            ));
        if call["effect_status"] == 409 || call["status"] == 409 {
            j.conflicts.push(call.clone());
        }
        let succeeded = call["effect_status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s));
        if call["applied"] == true && succeeded {
            let reference = call["reference"].as_str().unwrap_or("?").to_string();
            j.applied
                .entry(reference)
                .or_default()
                .push(kind.to_string());
        }
    }
    j
}

/// Checks AGORA's invariants over the sandbox's creations: at most one dossier per identity, and
/// every creation call beyond the first refused.
pub fn assert_created_once(creations: &serde_json::Value) {
    for c in creations.as_array().expect("creations") {
        assert_eq!(c["created"], 1, "created more than once: {c}");
    }
}

/// The heavy end-to-end tests (thousands of dossiers, kills, fault storms) take turns. Side by
/// side they compete for the two cores and for the disk's fsyncs (every `202` and every delivery
/// record is a durable commit), and their time limits then measure the neighbour instead of the
/// gateway: that made the embedded crash test time out in CI.
///
/// Also taken by the tests whose timings or memory readings a neighbour would disturb: the
/// poller's rounds, the log capture, the 300 MB stream.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// [`heavy`] for a test outside any runtime.
pub fn heavy_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.blocking_lock()
}

static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The ATEXO SEM token of [`ServeProcess`].
pub const ATEXO_TOKEN: &str = "serve-process-atexo-token";

/// `passerelle serve` as a child process (the binary built in this crate), on a port of the
/// system's choosing (port 0: a restarted process can never find its port taken by another) and a
/// data directory of its own, its whole output (stdout and stderr) appended to `serve.log` there.
/// Killed (SIGKILL) on drop; its last log lines are printed when a test fails.
pub struct ServeProcess {
    env: Vec<(String, String)>,
    pub log: PathBuf,
    child: Option<Child>,
    /// Where it listens since its last start (empty before the first).
    pub url: String,
    /// The same, shared with clients that must follow it across restarts.
    pub endpoint: std::sync::Arc<std::sync::RwLock<String>>,
}

impl ServeProcess {
    /// `extra`: more settings as `(SECTION__KEY, value)` pairs, or raw variables such as `RUST_LOG`.
    pub fn new(
        dir: &Path,
        sandbox: &RunningSandbox,
        production: Option<&Production>,
        extra: &[(&str, &str)],
    ) -> ServeProcess {
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
            ("SERVER__BIND", "127.0.0.1:0".to_string()),
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
        .chain(extra.iter().map(|(k, v)| {
            let key = if k.contains("__") {
                format!("PASSERELLE__{k}")
            } else {
                (*k).to_string()
            };
            (key, (*v).to_string())
        }))
        .collect();
        ServeProcess {
            env,
            log: dir.join("serve.log"),
            child: None,
            url: String::new(),
            endpoint: Default::default(),
        }
    }

    /// Starts it, reads the port it reports (`passerelle listens on http://127.0.0.1:…`), and
    /// waits until `/readyz` answers 200.
    pub async fn start(&mut self) {
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len());
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut url = None;
        loop {
            if url.is_none() {
                url = self.reported_url(from);
                if let Some(u) = &url {
                    self.url.clone_from(u);
                    *self.endpoint.write().expect("endpoint") = u.clone();
                }
            }
            if let Some(u) = &url {
                if let Ok(r) = http.get(format!("{u}/readyz")).send().await {
                    if r.status() == 200 {
                        return;
                    }
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

    /// Its exit status once it has exited by itself (`None` while it runs, or when not started).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The URL the process started at `from` (an offset in the log) says it listens on.
    fn reported_url(&self, from: u64) -> Option<String> {
        let log = std::fs::read(&self.log).ok()?;
        let text = String::from_utf8_lossy(log.get(usize::try_from(from).ok()?..)?);
        let rest = text.split("passerelle listens on ").nth(1)?;
        let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        url.starts_with("http://127.0.0.1:").then_some(url)
    }

    /// SIGKILL: no graceful shutdown, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    /// SIGTERM, as a supervisor stops it; then waits up to `within` for it to exit, and gives
    /// its exit status (`None`: still running after `within`, then SIGKILLed).
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("passerelle serve's last lines:\n{}", self.log_tail());
        }
        self.kill();
    }
}

/// The posting systems' secrets by name, as the tests use them.
pub trait PostingCredentials {
    fn ouiform(&self) -> &SecretString;
    fn atexo_sem(&self) -> &SecretString;
    fn ouiform_hmac(&self) -> SecretString;
}

impl PostingCredentials for passerelle::routes::Credentials {
    fn ouiform(&self) -> &SecretString {
        self.token(passerelle_adapters::System::Ouiform)
            .expect("OUIFORM posts: it has a token")
    }

    fn atexo_sem(&self) -> &SecretString {
        self.token(passerelle_adapters::System::AtexoSem)
            .expect("ATEXO SEM posts: it has a token")
    }

    fn ouiform_hmac(&self) -> SecretString {
        self.secret(passerelle::systems::ouiform::HMAC_SECRET)
    }
}
