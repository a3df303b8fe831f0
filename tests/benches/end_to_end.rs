//! End-to-end benchmark of the synchronous flow in production mode, against a raw lapin baseline on
//! the same RabbitMQ broker.
//!
//! `cargo bench -p passerelle-tests --bench end_to_end`
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, `rabbitmqctl` on the PATH) and the suite's
//! PostgreSQL, `PASSERELLE_TEST_POSTGRES_URL` (default: tests/services.sh's own cluster,
//! `postgres://postgres@127.0.0.1:5433/postgres`, trust on loopback; `psql` on the PATH).
//! Every measurement gets its own fresh vhost (and database), dropped at the end.
//!
//! It measures, in one run:
//! 1. **baseline**: raw lapin, N messages published with publisher confirms (mandatory, up to
//!    [`HTTP_IN_FLIGHT`] confirms outstanding, as many as the posts of step 2) to a durable quorum
//!    queue, consumed with manual acks at the gateway's prefetch (`worker.sync_concurrency`):
//!    N / (first publish → last ack).
//! 2. **gateway end to end**: the real gateway booted in-process (PostgreSQL ledger, RabbitMQ queue,
//!    AGORA played by its built-in sandbox). N distinct generated dossiers, each its own ATEXO SEM
//!    document, are posted over HTTP with [`HTTP_IN_FLIGHT`] in flight: N / (first POST → every
//!    dossier in its target state in AGORA). The end is seen on the ledger (nothing left pending, a
//!    cheap query polled every few ms) and confirmed on the sandbox: every dossier in the AGORA state
//!    its ATEXO state maps to (`planner::target`), none that should not be there, each created
//!    exactly once. A lost or duplicated dossier fails the benchmark.
//! 3. **ingress latency at a fixed rate**: a fresh gateway, an open-loop load of `E2E_BENCH_RATE`
//!    posts/s for `E2E_BENCH_SECONDS` s (request i is sent at t0 + i/rate whatever the previous ones
//!    do), each latency taken from its scheduled time to its `202`; then the backlog is drained and
//!    checked as in step 2.
//!
//! To explain the ratio it also prints, for step 2: AGORA calls per dossier (the sandbox journal)
//! against the fewest the plans need, the time spent in AGORA calls as the worker saw it (the
//! gateway's `/metrics`), PostgreSQL transactions per dossier (`pg_stat_database`), and, for every
//! step, the CPU used by this process (lapin, or gateway + sandbox + load generator), PostgreSQL
//! and RabbitMQ, in cores and in milliseconds per message or dossier. Everything shares the
//! machine: the `others` figure says how much CPU other processes took meanwhile, and a run where
//! it is high is not worth quoting.
//!
//! Sizes: `E2E_BENCH_N` (2,000), `E2E_BENCH_RATE` (500), `E2E_BENCH_SECONDS` (10; 0 skips step 3).
//! Any `PASSERELLE__*` variable is passed on to both gateways, e.g.
//! `PASSERELLE__WORKER__SYNC_CONCURRENCY=64`. The gateway's rate limit is lifted (its default,
//! 200/s per system, would answer 429 to the fixed-rate load): this measures capacity, not policy.
//!
//! It prints figures and asserts nothing about them.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::StreamExt;
use passerelle::ledger::{Ledger, AGORA};
use passerelle::settings::Settings;
use passerelle::startup::{Application, RunningApp};
use passerelle_adapters::atexo_sem::Flow;
use passerelle_adapters::planner::{target, Target};
use passerelle_tests::generate::{single_dossier_exports, GenOptions, Outcome};
use secrecy::ExposeSecret;

#[path = "support/raw_lapin.rs"]
mod raw_lapin;
use raw_lapin::raw_lapin;

/// Posts in flight in step 2, and confirms outstanding in the baseline.
const HTTP_IN_FLIGHT: usize = 64;
const AMQP_ADDR: &str = "127.0.0.1:5672";
/// The suite's PostgreSQL when `PASSERELLE_TEST_POSTGRES_URL` does not say (tests/services.sh's).
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5433/postgres";
const SEED_THROUGHPUT: u64 = 20_240_601;
const SEED_LATENCY: u64 = 20_240_602;
/// How often the ledger is asked whether anything is still pending: the end's resolution.
const POLL: Duration = Duration::from_millis(10);

fn env_usize(key: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{key}={v} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn run_tool(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!("{cmd} cannot run: start the services with `bash tests/services.sh`")
    })?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `PASSERELLE_TEST_POSTGRES_URL`, as the tests read it: a superuser's URL on `postgres`.
fn postgres_admin_url() -> String {
    std::env::var("PASSERELLE_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_string())
}

/// The same server, another database.
fn postgres_url(database: &str) -> String {
    let admin = postgres_admin_url();
    let head = admin.split('?').next().unwrap_or_default();
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let base = head[after_scheme..]
        .find('/')
        .map_or(head, |i| &head[..after_scheme + i]);
    format!("{base}/{database}")
}

fn psql(sql: &str) -> anyhow::Result<String> {
    run_tool(
        "psql",
        &[
            "-d",
            &postgres_admin_url(),
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
    )
}

/// A vhost (and, for a gateway, a database) of one measurement; dropped with it, error or not.
struct Scratch {
    name: String,
    database: bool,
}

impl Scratch {
    fn create(tag: &str, database: bool) -> anyhow::Result<Scratch> {
        let name = format!("passerelle_bench_{}_{tag}", std::process::id());
        let scratch = Scratch {
            name: name.clone(),
            database,
        };
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &name])
            .output();
        run_tool("rabbitmqctl", &["add_vhost", &name])?;
        run_tool(
            "rabbitmqctl",
            &["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"],
        )?;
        if database {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
            psql(&format!("CREATE DATABASE {name}"))?;
        }
        Ok(scratch)
    }

    fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{AMQP_ADDR}/{}", self.name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
        if self.database {
            let _ = psql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Baseline
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

struct Gateway {
    running: RunningApp,
    url: String,
    token: String,
    sandbox_url: String,
    ledger: Arc<dyn Ledger>,
    http: reqwest::Client,
    sync_concurrency: u16,
    _sandbox: passerelle_sandbox::RunningSandbox,
    _dir: tempfile::TempDir,
}

/// The settings of both gateways: production services, rate limit lifted, then whatever
/// `PASSERELLE__*` the caller set.
fn gateway_vars(scratch: &str, dir: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("PASSERELLE__SERVER__BIND", "127.0.0.1:0".to_string()),
        ("PASSERELLE__DATA__DIR", dir.to_string()),
        ("PASSERELLE__LEDGER__URL", postgres_url(scratch)),
        (
            "PASSERELLE__QUEUE__URL",
            format!("amqp://guest:guest@{AMQP_ADDR}/{scratch}"),
        ),
        ("PASSERELLE__SERVER__RATE_PER_SECOND", "1000000".to_string()),
        ("PASSERELLE__SERVER__RATE_BURST", "1000000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("PASSERELLE__")));
    vars
}

impl Gateway {
    async fn boot(scratch: &Scratch) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let mut vars = gateway_vars(&scratch.name, &dir.path().display().to_string());
        // A production configuration refuses the built-in sandbox: AGORA is one run here, in
        // this process as before.
        let sandbox =
            passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig::default())
                .await
                .context("the sandbox did not start")?;
        ensure!(
            !vars.iter().any(|(k, _)| k == "PASSERELLE__AGORA__BASE_URL"),
            "PASSERELLE__AGORA__BASE_URL must stay unset: the benchmark reads AGORA's state from its own sandbox"
        );
        vars.push(("PASSERELLE__AGORA__BASE_URL".into(), sandbox.agora_url()));
        vars.push((
            "PASSERELLE__AGORA__TOKEN".into(),
            sandbox.agora_token().into(),
        ));
        let settings = Settings::load(None, vars)?;
        let sync_concurrency = settings.worker.sync_concurrency;
        let app = Application::build(settings).await?;
        let url = format!("http://127.0.0.1:{}", app.port());
        let token = app
            .credentials
            .token(passerelle_adapters::System::AtexoSem)
            .expect("ATEXO SEM posts: it has a token")
            .expose_secret()
            .to_string();
        let sandbox_url = sandbox.base_url();
        let ledger = app.ledger.clone();
        Ok(Gateway {
            running: app.spawn(),
            url,
            token,
            sandbox_url,
            ledger,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(4 * HTTP_IN_FLIGHT)
                .build()?,
            sync_concurrency,
            _sandbox: sandbox,
            _dir: dir,
        })
    }

    /// Posts one ATEXO SEM document: the status, and the dossier id when it is a `202`.
    async fn post(&self, xml: Vec<u8>) -> anyhow::Result<(u16, Option<String>)> {
        let r = self
            .http
            .post(format!("{}/v1/inbound/atexo-sem/dossiers", self.url))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/xml")
            .body(xml)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
        if status != 202 {
            return Ok((status, None));
        }
        let dossiers = body["dossiers"]
            .as_array()
            .context("202 without dossiers")?;
        ensure!(
            dossiers.len() == 1 && dossiers[0]["status"] == "accepted",
            "one dossier accepted in perimeter expected: {body}"
        );
        let id = dossiers[0]["dossier_id"]
            .as_str()
            .context("202 without dossier_id")?;
        Ok((status, Some(id.to_string())))
    }

    async fn sandbox_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/_sandbox/{path}", self.sandbox_url))
            .send()
            .await?;
        ensure!(r.status() == 200, "sandbox {path}: {}", r.status());
        Ok(r.json().await?)
    }

    async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?;
        // Only unlabelled samples (histogram sums and counts): the rest is not needed here.
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Waits until every dossier is delivered: nothing pending in the ledger, then every target
    /// confirmed in the sandbox. Fails on a timeout, or when the ledger has nothing pending but the
    /// sandbox still disagrees (a dossier lost, dead-lettered, duplicated).
    async fn wait_delivered(
        &self,
        expected: &HashMap<String, Target>,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut settled_since: Option<Instant> = None;
        loop {
            let pending = self.ledger.pending(AGORA, Duration::ZERO, 1).await?;
            if pending.is_empty() {
                let seen = Instant::now();
                let since = *settled_since.get_or_insert(seen);
                match self.check(expected).await? {
                    Ok(()) => return Ok(seen),
                    Err(problems) if since.elapsed() > Duration::from_secs(5) => {
                        bail!(
                            "the ledger has nothing pending but AGORA disagrees:\n{}",
                            self.explain(problems).await
                        )
                    }
                    Err(_) => {}
                }
            } else {
                settled_since = None;
            }
            if Instant::now() > deadline {
                let left = self
                    .ledger
                    .pending(AGORA, Duration::ZERO, 1_000_000)
                    .await?;
                bail!(
                    "not delivered after {timeout:?}: {} dossiers still pending (e.g. {:?})",
                    left.len(),
                    left.iter().take(3).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether AGORA holds exactly what the dossiers must give: the problems, per dossier id.
    async fn check(
        &self,
        expected: &HashMap<String, Target>,
    ) -> anyhow::Result<Result<(), Vec<(String, String)>>> {
        let dossiers = self.sandbox_get("agora/dossiers").await?;
        let creations = self.sandbox_get("agora/creations").await?;
        let mut problems = Vec::new();
        let mut held: HashMap<String, Vec<String>> = HashMap::new();
        for d in dossiers.as_array().context("dossiers: not a list")? {
            let reference = d["reference"].as_str().unwrap_or("?").to_string();
            let etat = d["etat"].as_str().unwrap_or("?").to_string();
            held.entry(reference).or_default().push(etat);
        }
        for (id, t) in expected {
            let got = held.get(id).map(Vec::as_slice).unwrap_or_default();
            let ok = match t {
                Target::State(s) => got == [s.as_str()],
                // Brand-new dossiers: AGORA never had them, so it must not have them now.
                Target::CancelIfPresent | Target::Nothing => got.is_empty(),
            };
            if !ok {
                problems.push((id.clone(), format!("expected {t:?}, AGORA holds {got:?}")));
            }
        }
        for (reference, etats) in &held {
            if !expected.contains_key(reference) {
                problems.push((
                    reference.clone(),
                    format!("not posted, AGORA holds {etats:?}"),
                ));
            }
        }
        let owed = expected
            .values()
            .filter(|t| matches!(t, Target::State(_)))
            .count() as u64;
        let mut created = 0;
        for c in creations.as_array().context("creations: not a list")? {
            let n = c["created"].as_u64().unwrap_or(0);
            created += n;
            if n != 1 {
                problems.push((
                    c["identity"].as_str().unwrap_or("?").to_string(),
                    format!("identity created {n} times: {c}"),
                ));
            }
        }
        if created != owed {
            problems.push((
                "*".into(),
                format!("{created} dossiers created in AGORA for {owed} owed"),
            ));
        }
        Ok(if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        })
    }

    async fn explain(&self, problems: Vec<(String, String)>) -> String {
        let mut out = format!("{} problems; the first ones:\n", problems.len());
        for (id, what) in problems.iter().take(5) {
            out.push_str(&format!("  {id}: {what}"));
            if let Ok(Some(row)) = self.ledger.dossier(id).await {
                out.push_str(&format!(
                    " (ledger: {:?}, attempts {}, last error {:?}, waiting for {:?})",
                    row.delivery.status,
                    row.delivery.attempts,
                    row.delivery.last_error,
                    row.delivery.waiting_for
                ));
            }
            out.push('\n');
        }
        out
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

/// N generated dossiers, one document each, with the AGORA target of each.
fn generated(seed: u64, count: usize) -> anyhow::Result<Vec<(Vec<u8>, Target)>> {
    let exports = single_dossier_exports(&GenOptions {
        seed,
        count,
        flow: Flow::Sync,
        invalid_share: 0.0,
        out_of_perimeter_share: 0.0,
        before_2017_share: 0.0,
    })?;
    exports
        .into_iter()
        .map(|e| match e.truth.outcome {
            Outcome::Valid(state) => Ok((e.xml, target(state))),
            other => bail!("{}: generated as {other:?}, not valid", e.id),
        })
        .collect()
}

/// The expected target of each dossier id the gateway answered; two documents giving the same
/// dossier would make the counts meaningless.
fn expectations(
    answered: impl IntoIterator<Item = (String, Target)>,
) -> anyhow::Result<HashMap<String, Target>> {
    let mut expected = HashMap::new();
    for (id, t) in answered {
        ensure!(
            expected.insert(id.clone(), t).is_none(),
            "two generated documents are the same dossier {id}: change the seed"
        );
    }
    Ok(expected)
}

/// The fewest AGORA calls a brand-new dossier needs to reach its target.
fn fewest_calls(t: Target) -> usize {
    use passerelle_adapters::planner::AgoraState::*;
    match t {
        Target::Nothing => 0,
        Target::CancelIfPresent => 1,
        Target::State(Cree | Annule) => 2,
        Target::State(Entre) => 3,
        Target::State(Sorti) => 4,
        Target::State(Solde) => 5,
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting: who uses the two cores during a measurement
// ---------------------------------------------------------------------------------------------

/// CPU seconds used by this process, PostgreSQL, RabbitMQ and the whole machine between two
/// [`CpuSnapshot`]s.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    this: f64,
    postgres: f64,
    rabbitmq: f64,
    machine_busy: f64,
    machine_total: f64,
}

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every usual build.
const TICKS: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    This,
    Postgres,
    RabbitMq,
    Other,
}

/// Per-process CPU times, so that processes ending or starting in between (other people's tests
/// share these services) neither subtract nor add what they used before.
#[derive(Debug, Default)]
struct CpuSnapshot {
    processes: HashMap<u32, (Owner, f64)>,
    machine_busy: f64,
    machine_total: f64,
}

/// Whose a process is: PostgreSQL's shared processes and this benchmark's own backends count as
/// PostgreSQL; a backend of another database is someone else's.
fn owner(pid: u32, comm: &str) -> Owner {
    if pid == std::process::id() {
        return Owner::This;
    }
    if comm == "postgres" {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let backend = cmdline.contains('(') || cmdline.contains("[local]");
        let ours = cmdline.contains(&format!("passerelle_bench_{}_", std::process::id()));
        return if ours || !backend {
            Owner::Postgres
        } else {
            Owner::Other
        };
    }
    if comm.starts_with("beam") || comm == "erl_child_setup" {
        return Owner::RabbitMq;
    }
    Owner::Other
}

impl CpuSnapshot {
    fn take() -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces: the fields start after its closing parenthesis.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) {
                let owner = owner(pid, &stat[open + 1..close]);
                snap.processes.insert(pid, (owner, (utime + stime) / TICKS));
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(line) = stat.lines().next() {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: f64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            snap.machine_total = total / TICKS;
            snap.machine_busy = (total - idle) / TICKS;
        }
        snap
    }

    fn since(&self, before: &CpuSnapshot) -> Cpu {
        let mut cpu = Cpu {
            machine_busy: self.machine_busy - before.machine_busy,
            machine_total: self.machine_total - before.machine_total,
            ..Cpu::default()
        };
        for (pid, (owner, secs)) in &self.processes {
            let used = secs - before.processes.get(pid).map_or(0.0, |p| p.1);
            match owner {
                Owner::This => cpu.this += used,
                Owner::Postgres => cpu.postgres += used,
                Owner::RabbitMq => cpu.rabbitmq += used,
                Owner::Other => {}
            }
        }
        cpu
    }
}

impl Cpu {
    /// Cores used on average over `wall` seconds; `this` says what this process runs.
    fn describe(&self, wall: f64, this: &str) -> String {
        let cores = |s: f64| s / wall;
        format!(
            "this process ({this}) {:.2} cores, PostgreSQL {:.2}, RabbitMQ {:.2}, others {:.2}; \
             machine {:.0}% busy",
            cores(self.this),
            cores(self.postgres),
            cores(self.rabbitmq),
            cores((self.machine_busy - self.this - self.postgres - self.rabbitmq).max(0.0)),
            100.0 * self.machine_busy / self.machine_total.max(f64::EPSILON),
        )
    }

    /// CPU milliseconds per item (message or dossier), the services of the measurement only.
    fn per_item(&self, n: usize) -> String {
        let ms = |s: f64| 1000.0 * s / n as f64;
        format!(
            "{:.2} ms of CPU (PostgreSQL {:.2}, this process {:.2}, RabbitMQ {:.2})",
            ms(self.this + self.postgres + self.rabbitmq),
            ms(self.postgres),
            ms(self.this),
            ms(self.rabbitmq)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Gateway end to end
// ---------------------------------------------------------------------------------------------

struct EndToEnd {
    rate: f64,
    wall: f64,
    ingress_wall: f64,
    sync_concurrency: u16,
    agora_calls: usize,
    agora_by_kind: Vec<(String, usize)>,
    agora_by_status: Vec<(String, usize)>,
    fewest: usize,
    agora_seconds: f64,
    agora_count: f64,
    ingress_mean_ms: f64,
    pg_transactions: Option<f64>,
    cpu: Cpu,
}

async fn gateway_throughput(n: usize) -> anyhow::Result<EndToEnd> {
    let scratch = Scratch::create("e2e", true)?;
    let gw = Gateway::boot(&scratch).await?;
    let work = generated(SEED_THROUGHPUT, n)?;
    let fewest = work.iter().map(|(_, t)| fewest_calls(*t)).sum();
    let cpu_before = CpuSnapshot::take();
    let start = Instant::now();
    let answers: Vec<anyhow::Result<(u16, Option<String>, Target)>> =
        futures_util::stream::iter(work)
            .map(|(xml, t)| {
                let gw = &gw;
                async move {
                    let (status, id) = gw.post(xml).await?;
                    Ok((status, id, t))
                }
            })
            .buffer_unordered(HTTP_IN_FLIGHT)
            .collect()
            .await;
    let ingress_wall = start.elapsed().as_secs_f64();
    let mut answered = Vec::with_capacity(n);
    for a in answers {
        match a? {
            (202, Some(id), t) => answered.push((id, t)),
            (status, ..) => bail!("a post was answered {status}, not 202"),
        }
    }
    let expected = expectations(answered)?;
    let timeout = Duration::from_secs(120) + Duration::from_millis(100) * n as u32;
    let end = gw.wait_delivered(&expected, timeout).await?;
    let wall = (end - start).as_secs_f64();
    let cpu = CpuSnapshot::take().since(&cpu_before);

    let journal = gw.sandbox_get("journal").await?;
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for call in journal.as_array().context("journal: not a list")? {
        let kind = call["call"].as_str().unwrap_or("?");
        if let Some(op) = kind.strip_prefix("agora_") {
            *by_kind.entry(op.to_string()).or_default() += 1;
            *by_status.entry(call["status"].to_string()).or_default() += 1;
        }
    }
    let sorted = |m: HashMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    let agora_by_kind = sorted(by_kind);
    let agora_by_status = sorted(by_status);
    let metrics = gw.metrics().await?;
    let metric = |k: &str| metrics.get(k).copied().unwrap_or(f64::NAN);
    let sync_concurrency = gw.sync_concurrency;
    gw.stop().await;
    // Backends flush their statistics when they end: after the stop, the database's counters are
    // whole (the poll of this benchmark included, a few hundred read-only transactions).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg_transactions = psql(&format!(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{}'",
        scratch.name
    ))
    .ok()
    .and_then(|s| s.parse().ok());

    Ok(EndToEnd {
        rate: n as f64 / wall,
        wall,
        ingress_wall,
        sync_concurrency,
        agora_calls: agora_by_kind.iter().map(|(_, c)| c).sum(),
        agora_by_kind,
        agora_by_status,
        fewest,
        agora_seconds: metric("passerelle_agora_call_seconds_sum"),
        agora_count: metric("passerelle_agora_call_seconds_count"),
        ingress_mean_ms: 1000.0 * metric("passerelle_ingress_seconds_sum")
            / metric("passerelle_ingress_seconds_count"),
        pg_transactions,
        cpu,
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Ingress latency at a fixed rate
// ---------------------------------------------------------------------------------------------

struct Latency {
    count: usize,
    rate: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    non_202: usize,
    send_wall: f64,
    drained_after: f64,
    cpu: Cpu,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn ingress_latency(rate: usize, seconds: usize) -> anyhow::Result<Latency> {
    let count = rate * seconds;
    let scratch = Scratch::create("latency", true)?;
    let gw = Arc::new(Gateway::boot(&scratch).await?);
    let work = generated(SEED_LATENCY, count)?;
    // Warm the connection pool so the first requests do not pay for the TCP handshakes alone.
    gw.http.get(format!("{}/healthz", gw.url)).send().await?;

    let period = Duration::from_secs(1) / rate as u32;
    let cpu_before = CpuSnapshot::take();
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(count);
    for (i, (xml, t)) in work.into_iter().enumerate() {
        let scheduled = t0 + period * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let answer = gw.post(xml).await;
            (scheduled.elapsed(), answer, t)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut non_202 = 0;
    let mut answered = Vec::with_capacity(count);
    for task in tasks {
        let (latency, answer, t) = task.await?;
        latencies.push(latency);
        match answer {
            Ok((202, Some(id))) => answered.push((id, t)),
            Ok((status, _)) => {
                non_202 += 1;
                if non_202 <= 3 {
                    eprintln!("  a post answered {status}");
                }
            }
            Err(e) => {
                non_202 += 1;
                if non_202 <= 3 {
                    eprintln!("  a post failed: {e:#}");
                }
            }
        }
    }
    let send_wall = t0.elapsed().as_secs_f64();
    latencies.sort_unstable();

    let expected = expectations(answered)?;
    let timeout = Duration::from_secs(120) + Duration::from_millis(100) * count as u32;
    let end = gw.wait_delivered(&expected, timeout).await?;
    let drained_after = (end - t0.into_std()).as_secs_f64();
    let cpu = CpuSnapshot::take().since(&cpu_before);
    let gw = Arc::into_inner(gw).context("a request still holds the gateway")?;
    gw.stop().await;
    Ok(Latency {
        count,
        rate,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        non_202,
        send_wall,
        drained_after,
        cpu,
    })
}

// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() -> anyhow::Result<()> {
    let n = env_usize("E2E_BENCH_N", 2_000)?;
    let rate = env_usize("E2E_BENCH_RATE", 500)?;
    let seconds = env_usize("E2E_BENCH_SECONDS", 10)?;
    ensure!(n > 0, "E2E_BENCH_N must be at least 1");
    std::net::TcpStream::connect(AMQP_ADDR).with_context(|| {
        format!("RabbitMQ is not reachable at {AMQP_ADDR}: start it with `bash tests/services.sh`")
    })?;
    psql("select 1")
        .context("PostgreSQL does not answer: start it with `bash tests/services.sh`")?;
    let overrides: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PASSERELLE__"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    // The gateway's consumer prefetches `worker.sync_concurrency` tasks: the baseline does the same.
    let prefetch = Settings::load(
        None,
        gateway_vars("probe", &std::env::temp_dir().display().to_string()),
    )?
    .worker
    .sync_concurrency;
    println!(
        "end-to-end benchmark: N = {n}, {HTTP_IN_FLIGHT} posts in flight, prefetch {prefetch}, \
         {} cores, overrides: {}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        if overrides.is_empty() {
            "none".to_string()
        } else {
            overrides.join(" ")
        }
    );

    let (baseline, baseline_cpu) = {
        let scratch = Scratch::create("baseline", false)?;
        let before = CpuSnapshot::take();
        let rate = raw_lapin(&scratch.amqp_url(), n, HTTP_IN_FLIGHT, prefetch).await?;
        (rate, CpuSnapshot::take().since(&before))
    };
    println!("1. baseline, raw lapin (confirms + consume + ack): {baseline:>8.0} msg/s");
    println!(
        "   CPU: {}; per message {}",
        baseline_cpu.describe(n as f64 / baseline, "lapin"),
        baseline_cpu.per_item(n)
    );

    let e2e = gateway_throughput(n).await?;
    println!(
        "2. gateway end to end (POST → AGORA in target state): {:>8.1} dossiers/s \
         ({n} in {:.2} s; all 202 after {:.2} s = {:.0} posts/s)",
        e2e.rate,
        e2e.wall,
        e2e.ingress_wall,
        n as f64 / e2e.ingress_wall
    );
    println!(
        "   ratio gateway / baseline: {:.3} (goal ≥ 0.5)",
        e2e.rate / baseline
    );
    let list = |v: &[(String, usize)]| {
        v.iter()
            .map(|(k, c)| format!("{k} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "   AGORA calls: {} = {:.2} per dossier ({}; statuses {}); the plans need at least {:.2}",
        e2e.agora_calls,
        e2e.agora_calls as f64 / n as f64,
        list(&e2e.agora_by_kind),
        list(&e2e.agora_by_status),
        e2e.fewest as f64 / n as f64
    );
    let slot_seconds = f64::from(e2e.sync_concurrency) * e2e.wall;
    println!(
        "   worker: {} slots × {:.2} s = {:.1} ms of a slot per dossier, of which AGORA calls \
         {:.1} ms ({:.0}%, {:.2} ms per call as the worker saw it) and the rest ledger, lease, \
         queue and waiting for a core",
        e2e.sync_concurrency,
        e2e.wall,
        1000.0 * slot_seconds / n as f64,
        1000.0 * e2e.agora_seconds / n as f64,
        100.0 * e2e.agora_seconds / slot_seconds,
        1000.0 * e2e.agora_seconds / e2e.agora_count
    );
    println!(
        "   ingress: {:.2} ms per post inside the gateway (mean); PostgreSQL: {} transactions per \
         dossier",
        e2e.ingress_mean_ms,
        e2e.pg_transactions
            .map_or("?".to_string(), |t| format!("{:.1}", t / n as f64))
    );
    println!(
        "   CPU: {}; per dossier {}",
        e2e.cpu.describe(e2e.wall, "gateway + sandbox + load"),
        e2e.cpu.per_item(n)
    );

    if rate * seconds > 0 {
        let l = ingress_latency(rate, seconds).await?;
        println!(
            "3. ingress latency, open loop at {} posts/s for {:.1} s ({} dossiers): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, non-202 {} (goal p99 < 20 ms, 0 non-202)",
            l.rate,
            l.send_wall,
            l.count,
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            l.non_202
        );
        println!(
            "   backlog: all delivered {:.1} s after the first post ({:.1} dossiers/s sustained)",
            l.drained_after,
            l.count as f64 / l.drained_after
        );
        println!(
            "   CPU: {}; per dossier {}",
            l.cpu.describe(l.drained_after, "gateway + sandbox + load"),
            l.cpu.per_item(l.count)
        );
        ensure!(l.non_202 == 0, "{} posts were not answered 202", l.non_202);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
