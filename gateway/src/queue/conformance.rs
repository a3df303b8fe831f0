//! One conformance suite for both queues.
//!
//! Each check is a generic async function over a [`Harness`] (the queue under test, plus what a
//! check needs to see behind the trait: the dead letters, raw messages, a reopening); the
//! `suite!` macro instantiates every check as a `#[tokio::test]` for each implementation.
//!
//! RabbitMQ runs each test in a fresh vhost (made and deleted with `rabbitmqctl`) so runs never see
//! each other's messages; the tests FAIL when RabbitMQ is not reachable. The embedded queue runs on
//! a file in a fresh temporary directory. Timing assertions are lower bounds only.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::amqp::{self, AmqpOptions, AmqpQueue};
use super::embedded::{EmbeddedOptions, EmbeddedQueue};
use super::{Consumer, Delivery, Flow, Queue, QueueError, Task};

/// How long a check waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long a check waits to be confident something does not happen.
const QUIET: Duration = Duration::from_millis(700);

#[async_trait]
pub(crate) trait Harness: Send + Sync + Sized + 'static {
    async fn start() -> Self;
    fn queue(&self) -> Arc<dyn Queue>;
    /// Writes bytes that are not a task to a lane.
    async fn inject_raw(&self, lane: Flow, body: &[u8]);
    /// How many tasks were dead-lettered.
    async fn dead_count(&self) -> u64;
    /// Closes the queue and opens it again on the same storage (a restart).
    async fn reopen(&mut self);
}

// ---------------------------------------------------------------------------------------------
// Harnesses

pub(crate) struct Embedded {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    queue: Arc<EmbeddedQueue>,
}

fn embedded_options() -> EmbeddedOptions {
    EmbeddedOptions {
        visibility_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        ..EmbeddedOptions::default()
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("queue.db");
        let queue = EmbeddedQueue::open(&path, embedded_options())
            .await
            .expect("the embedded queue opens");
        Self {
            _dir: dir,
            path,
            queue: Arc::new(queue),
        }
    }

    fn queue(&self) -> Arc<dyn Queue> {
        self.queue.clone()
    }

    async fn inject_raw(&self, lane: Flow, body: &[u8]) {
        self.queue
            .publish_raw(lane, body)
            .await
            .expect("raw publish");
    }

    async fn dead_count(&self) -> u64 {
        self.queue.dead_tasks().await.expect("dead tasks").len() as u64
    }

    async fn reopen(&mut self) {
        self.queue.close().await;
        let queue = EmbeddedQueue::open(&self.path, embedded_options())
            .await
            .expect("the embedded queue reopens");
        self.queue = Arc::new(queue);
    }
}

/// A RabbitMQ vhost that lives as long as the test.
pub(crate) struct Vhost {
    name: String,
}

const START_HINT: &str = "start it with `bash tests/services.sh`";

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "rabbitmqctl cannot run ({err}): RabbitMQ is needed by these tests; {START_HINT}"
            )
        });
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}; {START_HINT}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Vhost {
    pub(crate) fn create() -> Self {
        let address = std::env::var("PASSERELLE_TEST_AMQP_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:5672".to_owned());
        if let Err(err) = std::net::TcpStream::connect(&address) {
            panic!("RabbitMQ is not reachable at {address} ({err}); {START_HINT}");
        }
        let name = format!("passerelle-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self { name }
    }

    pub(crate) fn url(&self) -> String {
        let address = std::env::var("PASSERELLE_TEST_AMQP_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:5672".to_owned());
        format!("amqp://guest:guest@{address}/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

pub(crate) struct Rabbit {
    queue: Arc<AmqpQueue>,
    vhost: Vhost,
}

#[async_trait]
impl Harness for Rabbit {
    async fn start() -> Self {
        let vhost = tokio::task::spawn_blocking(Vhost::create)
            .await
            .expect("the vhost is created");
        let queue = AmqpQueue::connect(&vhost.url(), AmqpOptions::default())
            .await
            .expect("RabbitMQ connects");
        Self {
            queue: Arc::new(queue),
            vhost,
        }
    }

    fn queue(&self) -> Arc<dyn Queue> {
        self.queue.clone()
    }

    async fn inject_raw(&self, lane: Flow, body: &[u8]) {
        self.queue
            .publish_raw(lane, body)
            .await
            .expect("raw publish");
    }

    async fn dead_count(&self) -> u64 {
        self.queue
            .queue_depth(amqp::DEAD_QUEUE)
            .await
            .expect("the dead queue's depth")
    }

    async fn reopen(&mut self) {
        self.queue.close().await;
        let queue = AmqpQueue::connect(&self.vhost.url(), AmqpOptions::default())
            .await
            .expect("RabbitMQ reconnects");
        self.queue = Arc::new(queue);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn task(id: &str) -> Task {
    Task::dossier(id, Some(format!("req-{id}")))
}

/// The dossier a delivered task names (every task of this suite names one).
fn dossier_of(delivery: &Delivery) -> String {
    delivery
        .task
        .dossier_id()
        .expect("a dossier task")
        .to_owned()
}

async fn recv(consumer: &mut Box<dyn Consumer>) -> Delivery {
    match tokio::time::timeout(PATIENCE, consumer.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(err))) => panic!("the consumer failed: {err}"),
        Ok(None) => panic!("the consumer closed"),
        Err(_) => panic!("no delivery within {PATIENCE:?}"),
    }
}

async fn assert_quiet(consumer: &mut Box<dyn Consumer>) {
    if let Ok(next) = tokio::time::timeout(QUIET, consumer.next()).await {
        match next {
            Some(Ok(delivery)) => panic!("unexpected delivery of {:?}", delivery.task),
            Some(Err(err)) => panic!("unexpected error: {err}"),
            None => panic!("the consumer closed"),
        }
    }
}

/// Polls `probe` until it returns `want` (brokers settle asynchronously).
async fn eventually<F, Fut>(what: &str, want: u64, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let start = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: {got}, expected {want} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn depth(queue: &Arc<dyn Queue>, lane: Flow) -> u64 {
    queue.depth(lane).await.expect("depth")
}

// ---------------------------------------------------------------------------------------------
// The checks

pub(crate) async fn publish_consume_ack<H: Harness>(h: H) {
    let queue = h.queue();
    queue.health().await.expect("healthy");
    let sent = task("D-1");
    queue.publish(Flow::Sync, &sent).await.expect("publish");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut consumer).await;
    assert_eq!(delivery.task, sent);
    assert!(!delivery.redelivered);
    delivery.acker.ack().await.expect("ack");
    drop(consumer);
    let mut again = queue.consume(Flow::Sync, 10).await.expect("consume");
    assert_quiet(&mut again).await;
    assert_eq!(depth(&queue, Flow::Sync).await, 0);
}

pub(crate) async fn unacked_is_redelivered_after_consumer_drop<H: Harness>(h: H) {
    let queue = h.queue();
    queue
        .publish(Flow::Sync, &task("D-2"))
        .await
        .expect("publish");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut consumer).await;
    assert!(!delivery.redelivered);
    // The consumer goes away first, as when a worker dies holding the task.
    drop(consumer);
    drop(delivery);
    let mut next = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut next).await;
    assert_eq!(delivery.task, task("D-2"));
    assert!(delivery.redelivered, "redelivered must be true");
    delivery.acker.ack().await.expect("ack");
    assert_quiet(&mut next).await;
}

pub(crate) async fn requeue_delivers_again<H: Harness>(h: H) {
    let queue = h.queue();
    queue
        .publish(Flow::Sync, &task("D-3"))
        .await
        .expect("publish");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let first = recv(&mut consumer).await;
    first.acker.requeue().await.expect("requeue");
    let second = recv(&mut consumer).await;
    assert_eq!(second.task, task("D-3"));
    assert!(second.redelivered);
    second.acker.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;
}

/// A task given back at every delivery is delivered `DELIVERY_LIMIT + 1` times, then set aside
/// by the queue itself (RabbitMQ's `x-delivery-limit`, the embedded queue's same count): a worker
/// that dies on it every time cannot loop on it forever.
pub(crate) async fn past_its_delivery_limit_a_task_is_set_aside<H: Harness>(h: H) {
    let queue = h.queue();
    assert_eq!(h.dead_count().await, 0);
    queue
        .publish(Flow::Sync, &task("D-LIMIT"))
        .await
        .expect("publish");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let mut deliveries = 0u32;
    loop {
        match tokio::time::timeout(QUIET, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                assert_eq!(delivery.task, task("D-LIMIT"));
                deliveries += 1;
                assert_eq!(delivery.deliveries, deliveries, "the queue's own count");
                assert!(
                    deliveries <= super::DELIVERY_LIMIT + 1,
                    "delivered {deliveries} times, past its limit of {}",
                    super::DELIVERY_LIMIT
                );
                delivery.acker.requeue().await.expect("requeue");
            }
            // The embedded queue says so as it sets the task aside; RabbitMQ does it silently.
            Ok(Some(Err(QueueError::Poison(_)))) => {}
            Ok(Some(Err(err))) => panic!("the consumer failed: {err}"),
            Ok(None) => panic!("the consumer closed"),
            Err(_) => break,
        }
    }
    assert_eq!(
        deliveries,
        super::DELIVERY_LIMIT + 1,
        "delivered up to its limit"
    );
    eventually("dead letters", 1, || h.dead_count()).await;
    assert_eq!(depth(&queue, Flow::Sync).await, 0);
}

pub(crate) async fn dead_letter_is_not_redelivered<H: Harness>(h: H) {
    let queue = h.queue();
    assert_eq!(h.dead_count().await, 0);
    queue
        .publish(Flow::Sync, &task("D-4"))
        .await
        .expect("publish");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut consumer).await;
    delivery.acker.dead_letter().await.expect("dead-letter");
    eventually("dead letters", 1, || h.dead_count()).await;
    assert_quiet(&mut consumer).await;
    assert_eq!(depth(&queue, Flow::Sync).await, 0);
}

pub(crate) async fn delayed_publish_arrives_after_its_delay_in_its_lane<H: Harness>(h: H) {
    let queue = h.queue();
    let delay = Duration::from_millis(1_000);
    let mut backfill = queue.consume(Flow::Backfill, 10).await.expect("consume");
    let mut sync = queue.consume(Flow::Sync, 10).await.expect("consume");
    let start = Instant::now();
    queue
        .publish_delayed(Flow::Backfill, &task("D-late"), delay)
        .await
        .expect("publish delayed");
    queue
        .publish(Flow::Backfill, &task("D-now"))
        .await
        .expect("publish");
    let first = recv(&mut backfill).await;
    assert_eq!(first.task, task("D-now"), "the undelayed task comes first");
    first.acker.ack().await.expect("ack");
    let second = recv(&mut backfill).await;
    let waited = start.elapsed();
    assert_eq!(second.task, task("D-late"));
    // RabbitMQ expires a message's TTL on its own millisecond clock, from the time it stamped
    // the message: a few ms before our monotonic clock says the delay is over (CI saw 998 ms).
    let broker_clock = Duration::from_millis(20);
    assert!(
        waited + broker_clock >= delay,
        "a task delayed {delay:?} arrived after {waited:?}"
    );
    second.acker.ack().await.expect("ack");
    assert_quiet(&mut sync).await;
}

pub(crate) async fn prefetch_bounds_deliveries_in_flight<H: Harness>(h: H) {
    let queue = h.queue();
    for id in ["P-1", "P-2", "P-3"] {
        queue.publish(Flow::Sync, &task(id)).await.expect("publish");
    }
    let mut consumer = queue.consume(Flow::Sync, 2).await.expect("consume");
    let first = recv(&mut consumer).await;
    let second = recv(&mut consumer).await;
    assert_quiet(&mut consumer).await;
    let mut ids = vec![dossier_of(&first), dossier_of(&second)];
    first.acker.ack().await.expect("ack");
    let third = recv(&mut consumer).await;
    ids.push(dossier_of(&third));
    ids.sort();
    assert_eq!(ids, ["P-1", "P-2", "P-3"]);
    second.acker.ack().await.expect("ack");
    third.acker.ack().await.expect("ack");
}

pub(crate) async fn lanes_are_separate<H: Harness>(h: H) {
    let queue = h.queue();
    queue
        .publish(Flow::Sync, &task("S-1"))
        .await
        .expect("publish");
    queue
        .publish(Flow::Backfill, &task("B-1"))
        .await
        .expect("publish");
    let mut sync = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut sync).await;
    assert_eq!(delivery.task, task("S-1"));
    delivery.acker.ack().await.expect("ack");
    assert_quiet(&mut sync).await;
    let mut backfill = queue.consume(Flow::Backfill, 10).await.expect("consume");
    let delivery = recv(&mut backfill).await;
    assert_eq!(delivery.task, task("B-1"));
    delivery.acker.ack().await.expect("ack");
}

pub(crate) async fn malformed_message_is_dead_lettered<H: Harness>(h: H) {
    let queue = h.queue();
    h.inject_raw(Flow::Sync, b"{\"nir\": \"185077512345608\"")
        .await;
    queue
        .publish(Flow::Sync, &task("M-1"))
        .await
        .expect("publish");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    match tokio::time::timeout(PATIENCE, consumer.next()).await {
        Ok(Some(Err(QueueError::Malformed(reason)))) => {
            assert!(
                !reason.contains("185077512345608"),
                "the reason must not echo the payload: {reason}"
            );
        }
        Ok(Some(Ok(delivery))) => panic!("a malformed message was delivered: {delivery:?}"),
        Ok(Some(Err(err))) => panic!("expected Malformed, got {err}"),
        Ok(None) => panic!("the consumer closed"),
        Err(_) => panic!("no Malformed within {PATIENCE:?}"),
    }
    let delivery = recv(&mut consumer).await;
    assert_eq!(delivery.task, task("M-1"));
    delivery.acker.ack().await.expect("ack");
    eventually("dead letters", 1, || h.dead_count()).await;
    assert_quiet(&mut consumer).await;
}

pub(crate) async fn confirmed_task_survives_a_restart<H: Harness>(mut h: H) {
    h.queue()
        .publish(Flow::Sync, &task("R-1"))
        .await
        .expect("publish");
    h.reopen().await;
    let queue = h.queue();
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut consumer).await;
    assert_eq!(delivery.task, task("R-1"));
    delivery.acker.ack().await.expect("ack");
}

pub(crate) async fn depth_counts_ready_tasks_per_lane<H: Harness>(h: H) {
    let queue = h.queue();
    for id in ["Q-1", "Q-2", "Q-3"] {
        queue.publish(Flow::Sync, &task(id)).await.expect("publish");
    }
    eventually("sync depth", 3, || depth(&queue, Flow::Sync)).await;
    assert_eq!(depth(&queue, Flow::Backfill).await, 0);
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    for _ in 0..3 {
        recv(&mut consumer).await.acker.ack().await.expect("ack");
    }
    eventually("sync depth", 0, || depth(&queue, Flow::Sync)).await;
}

pub(crate) async fn concurrent_publishers_lose_nothing<H: Harness>(h: H) {
    let queue = h.queue();
    let publishers: Vec<_> = (0..200)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.publish(Flow::Sync, &task(&format!("C-{i}"))).await })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("joined").expect("publish");
    }
    let mut consumer = queue.consume(Flow::Sync, 50).await.expect("consume");
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 200 {
        let delivery = recv(&mut consumer).await;
        seen.insert(dossier_of(&delivery));
        delivery.acker.ack().await.expect("ack");
    }
    assert_quiet(&mut consumer).await;
}

macro_rules! suite {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn publish_consume_ack() {
                super::publish_consume_ack(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unacked_is_redelivered_after_consumer_drop() {
                super::unacked_is_redelivered_after_consumer_drop(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn requeue_delivers_again() {
                super::requeue_delivers_again(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn past_its_delivery_limit_a_task_is_set_aside() {
                super::past_its_delivery_limit_a_task_is_set_aside(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letter_is_not_redelivered() {
                super::dead_letter_is_not_redelivered(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delayed_publish_arrives_after_its_delay_in_its_lane() {
                super::delayed_publish_arrives_after_its_delay_in_its_lane(
                    <$harness>::start().await,
                )
                .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn prefetch_bounds_deliveries_in_flight() {
                super::prefetch_bounds_deliveries_in_flight(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lanes_are_separate() {
                super::lanes_are_separate(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn malformed_message_is_dead_lettered() {
                super::malformed_message_is_dead_lettered(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn confirmed_task_survives_a_restart() {
                super::confirmed_task_survives_a_restart(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn depth_counts_ready_tasks_per_lane() {
                super::depth_counts_ready_tasks_per_lane(<$harness>::start().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_publishers_lose_nothing() {
                super::concurrent_publishers_lose_nothing(<$harness>::start().await).await;
            }
        }
    };
}

suite!(embedded, Embedded);
suite!(rabbitmq, Rabbit);

// ---------------------------------------------------------------------------------------------
// What only one implementation has

/// A process that died holding a task (no consumer left to give it back) loses it after the
/// visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lease_of_a_dead_process_expires() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("queue.db");
    let queue = EmbeddedQueue::open(&path, embedded_options())
        .await
        .expect("opens");
    queue
        .publish(Flow::Sync, &task("L-1"))
        .await
        .expect("publish");
    // Another process claims it, then dies without releasing it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("a second connection");
    let lease_ms = 1_000;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("millis");
    sqlx::query("UPDATE tasks SET locked_by = 'dead', locked_until = ?1, deliveries = 1")
        .bind(now_ms + lease_ms)
        .execute(&pool)
        .await
        .expect("claim");
    let start = Instant::now();
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let delivery = recv(&mut consumer).await;
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(delivery.redelivered);
    delivery.acker.ack().await.expect("ack");
}

/// A lease is renewed while its consumer lives: a slow task is not delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_live_consumer_keeps_its_lease() {
    let h = Embedded::start().await;
    let queue = h.queue();
    queue
        .publish(Flow::Sync, &task("K-1"))
        .await
        .expect("publish");
    let mut slow = queue.consume(Flow::Sync, 1).await.expect("consume");
    let held = recv(&mut slow).await;
    let mut other = queue.consume(Flow::Sync, 1).await.expect("consume");
    // Longer than the visibility timeout (2 s).
    if let Ok(next) = tokio::time::timeout(Duration::from_secs(3), other.next()).await {
        panic!(
            "the task was delivered twice: {:?}",
            next.map(|d| d.map(|d| d.task))
        );
    }
    held.acker.ack().await.expect("ack");
}

/// An unroutable publish (its queue deleted behind the gateway's back) is refused, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unroutable_publish_is_refused() {
    let h = Rabbit::start().await;
    let connection =
        lapin::Connection::connect(&h.vhost.url(), lapin::ConnectionProperties::default())
            .await
            .expect("connects");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(
            amqp::queue_name(Flow::Backfill).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("queue deleted");
    match h.queue().publish(Flow::Backfill, &task("U-1")).await {
        Err(QueueError::Refused(_)) => {}
        other => panic!("expected Refused, got {other:?}"),
    }
}

/// After the broker drops the connections, the next calls reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_reconnects_after_the_connection_drops() {
    let h = Rabbit::start().await;
    let queue = h.queue();
    queue
        .publish(Flow::Sync, &task("X-1"))
        .await
        .expect("publish");
    let vhost = h.vhost.name.clone();
    tokio::task::spawn_blocking(move || {
        rabbitmqctl(&["close_all_connections", "--vhost", &vhost, "test"]);
    })
    .await
    .expect("joined");
    let start = Instant::now();
    loop {
        match queue.publish(Flow::Sync, &task("X-2")).await {
            Ok(()) => break,
            Err(QueueError::Unavailable(_)) if start.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no reconnection: {err}"),
        }
    }
    queue.health().await.expect("healthy again");
    let mut consumer = queue.consume(Flow::Sync, 10).await.expect("consume");
    let mut ids = vec![];
    for _ in 0..2 {
        let delivery = recv(&mut consumer).await;
        ids.push(dossier_of(&delivery));
        delivery.acker.ack().await.expect("ack");
    }
    ids.sort();
    assert_eq!(ids, ["X-1", "X-2"]);
}

/// The request id travels in the `x-request-id` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_message_carries_its_properties() {
    use futures_util::StreamExt;
    let h = Rabbit::start().await;
    h.queue()
        .publish(Flow::Sync, &task("H-1"))
        .await
        .expect("publish");
    let connection =
        lapin::Connection::connect(&h.vhost.url(), lapin::ConnectionProperties::default())
            .await
            .expect("connects");
    let channel = connection.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            amqp::queue_name(Flow::Sync).as_str().into(),
            "probe".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(PATIENCE, consumer.next())
        .await
        .expect("in time")
        .expect("a delivery")
        .expect("no error");
    let properties = &delivery.properties;
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert!(properties.message_id().is_some());
    let headers = properties.headers().as_ref().expect("headers");
    let request_id = headers
        .inner()
        .get(amqp::REQUEST_ID_HEADER)
        .expect("x-request-id");
    assert_eq!(
        request_id,
        &lapin::types::AMQPValue::LongString("req-H-1".into())
    );
}

/// `docker/rabbitmq/definitions.json`, loaded into a broker, is what the gateway declares: the
/// gateway's declarations over it succeed (an argument of another value or type would be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_definitions_file_loads_and_agrees_with_the_code() {
    let vhost = tokio::task::spawn_blocking(Vhost::create)
        .await
        .expect("the vhost is created");
    let mut definitions: serde_json::Value =
        serde_json::from_str(include_str!("../../../docker/rabbitmq/definitions.json"))
            .expect("definitions.json is JSON");
    definitions["vhosts"] = serde_json::json!([{ "name": vhost.name }]);
    for section in ["exchanges", "queues", "bindings"] {
        for item in definitions[section]
            .as_array_mut()
            .expect("a section")
            .iter_mut()
        {
            item["vhost"] = serde_json::json!(vhost.name);
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("definitions.json");
    std::fs::write(&file, definitions.to_string()).expect("written");
    let path = file.display().to_string();
    tokio::task::spawn_blocking(move || rabbitmqctl(&["import_definitions", &path]))
        .await
        .expect("imported");
    let queue = AmqpQueue::connect(&vhost.url(), AmqpOptions::default())
        .await
        .expect("the gateway declares its topology over the definitions");
    queue
        .publish_delayed(Flow::Sync, &task("Z-1"), Duration::from_millis(250))
        .await
        .expect("publish delayed");
    let mut consumer = queue.consume(Flow::Sync, 1).await.expect("consume");
    recv(&mut consumer).await.acker.ack().await.expect("ack");
}
