//! Step 2, the gateway end to end: N dossiers posted with [`HTTP_IN_FLIGHT`] in flight, timed
//! until every one is in its target state in AGORA.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use passerelle_adapters::planner::Target;

use super::cpu::{Cpu, CpuSnapshot};
use super::gateway::{expectations, fewest_calls, generated, Gateway};
use super::{psql, Scratch, HTTP_IN_FLIGHT, SEED_THROUGHPUT};

pub(crate) struct EndToEnd {
    pub(crate) rate: f64,
    pub(crate) wall: f64,
    pub(crate) ingress_wall: f64,
    pub(crate) sync_concurrency: u16,
    pub(crate) agora_calls: usize,
    pub(crate) agora_by_kind: Vec<(String, usize)>,
    pub(crate) agora_by_status: Vec<(String, usize)>,
    pub(crate) fewest: usize,
    pub(crate) agora_seconds: f64,
    pub(crate) agora_count: f64,
    pub(crate) ingress_mean_ms: f64,
    pub(crate) pg_transactions: Option<f64>,
    pub(crate) cpu: Cpu,
}

pub(crate) async fn gateway_throughput(n: usize) -> anyhow::Result<EndToEnd> {
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
