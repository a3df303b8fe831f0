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
//!
//! Layout: this file holds the run and what every step shares (sizes, services, scratch vhosts
//! and databases); step 1 is `support/raw_lapin.rs`, step 2 `end_to_end/throughput.rs`, step 3
//! `end_to_end/latency.rs`, both on the gateway of `end_to_end/gateway.rs`, measured with the
//! CPU accounting of `end_to_end/cpu.rs`.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use passerelle::settings::Settings;

#[path = "support/raw_lapin.rs"]
mod raw_lapin;
use raw_lapin::raw_lapin;

#[path = "end_to_end/cpu.rs"]
mod cpu;
#[path = "end_to_end/gateway.rs"]
mod gateway;
#[path = "end_to_end/latency.rs"]
mod latency;
#[path = "end_to_end/throughput.rs"]
mod throughput;
use cpu::CpuSnapshot;
use gateway::gateway_vars;
use latency::ingress_latency;
use throughput::gateway_throughput;

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
