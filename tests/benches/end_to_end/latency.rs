//! Step 3, ingress latency at a fixed rate: an open-loop load, each latency taken from its
//! scheduled time to its `202`, then the backlog drained and checked.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::cpu::{Cpu, CpuSnapshot};
use super::gateway::{expectations, generated, Gateway};
use super::{Scratch, SEED_LATENCY};

pub(crate) struct Latency {
    pub(crate) count: usize,
    pub(crate) rate: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) non_202: usize,
    pub(crate) send_wall: f64,
    pub(crate) drained_after: f64,
    pub(crate) cpu: Cpu,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) async fn ingress_latency(rate: usize, seconds: usize) -> anyhow::Result<Latency> {
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
