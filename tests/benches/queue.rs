//! Queue throughput: raw lapin against passerelle's `Queue` trait, on a fresh RabbitMQ vhost.
//!
//! `cargo bench -p passerelle-tests --bench queue` (`QUEUE_BENCH_N` messages, 20,000 by default).
//!
//! Each run publishes N small tasks with publisher confirms while one consumer (prefetch
//! [`IN_FLIGHT`]) acknowledges them one by one; the figure is N divided by the time from the
//! first publish to the last ack.
//! - **raw lapin**: one confirm-mode channel, up to [`IN_FLIGHT`] confirms outstanding (pipelined),
//!   the same payload, properties and durable quorum queue as passerelle;
//! - **Queue trait (RabbitMQ)**: [`IN_FLIGHT`] concurrent tasks each calling `publish` (which
//!   awaits its own confirm, as an HTTP request does) and a `consume` loop acking each delivery;
//! - **Queue trait (embedded)**: the same on the SQLite queue, for reference.
//!
//! It prints figures; it asserts nothing about them.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use passerelle::queue::amqp::{AmqpOptions, AmqpQueue};
use passerelle::queue::embedded::{EmbeddedOptions, EmbeddedQueue};
use passerelle::queue::{Flow, Queue};

#[path = "support/raw_lapin.rs"]
mod raw_lapin;
use raw_lapin::{raw_lapin, task};

/// Publishes awaiting their confirm at once, and the consumer's prefetch.
const IN_FLIGHT: usize = 256;

struct Vhost(String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("rabbitmqctl cannot run: start RabbitMQ with `bash tests/services.sh`")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn through_trait(queue: Arc<dyn Queue>, n: usize) -> anyhow::Result<f64> {
    let mut consumer = queue.consume(Flow::Sync, IN_FLIGHT as u16).await?;
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut seen = 0;
        while seen < n {
            let delivery = consumer.next().await.context("consumer ended")??;
            delivery.acker.ack().await?;
            seen += 1;
        }
        anyhow::Ok(())
    });
    let publishers: Vec<_> = (0..IN_FLIGHT)
        .map(|p| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut i = p;
                while i < n {
                    queue.publish(Flow::Sync, &task(i)).await?;
                    i += IN_FLIGHT;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await??;
    }
    tokio::time::timeout(Duration::from_secs(600), consume).await???;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn run() -> anyhow::Result<()> {
    let n: usize = std::env::var("QUEUE_BENCH_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let address =
        std::env::var("PASSERELLE_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".to_owned());
    std::net::TcpStream::connect(&address).with_context(|| {
        format!("RabbitMQ is not reachable at {address}: start it with `bash tests/services.sh`")
    })?;
    let vhost = Vhost(format!(
        "passerelle-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    rabbitmqctl(&["add_vhost", &vhost.0])?;
    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"])?;
    let url = format!("amqp://guest:guest@{address}/{}", vhost.0);

    println!("queue benchmark: N = {n} messages, {IN_FLIGHT} in flight");
    let raw = raw_lapin(&url, n, IN_FLIGHT, IN_FLIGHT as u16).await?;
    println!("raw lapin (confirms + consume + ack): {raw:>9.0} msg/s");

    let queue: Arc<dyn Queue> = Arc::new(AmqpQueue::connect(&url, AmqpOptions::default()).await?);
    let ours = through_trait(queue, n).await?;
    println!("Queue trait, RabbitMQ:                {ours:>9.0} msg/s");
    println!("ratio Queue trait / raw lapin:        {:>9.2}", ours / raw);

    let dir = tempfile::tempdir()?;
    let embedded =
        EmbeddedQueue::open(&dir.path().join("queue.db"), EmbeddedOptions::default()).await?;
    let embedded_rate = through_trait(Arc::new(embedded), n).await?;
    println!("Queue trait, embedded (SQLite):       {embedded_rate:>9.0} msg/s");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
