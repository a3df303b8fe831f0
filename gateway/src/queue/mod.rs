//! The queue (*file de messages*): carries "reconcile this dossier" tasks from ingress to workers.
//!
//! A task names a dossier, not a change: the worker reads the ledger for what is owed
//! (level-triggered), so a duplicate task is harmless and a lost one is repaired by the next.
//! Two lanes: `sync` and `backfill`, the backfill consumed at a lower priority so it never starves
//! the synchronous flow. Transient failures are retried by **delayed redelivery** (a task published
//! again with a delay), never by sleeping in the worker, so other dossiers are not blocked.
//!
//! Two implementations behind one trait: RabbitMQ (durable quorum queues, publisher confirms with
//! `mandatory`, manual acks, prefetch, a dead-letter exchange, per-delay TTL queues that
//! dead-letter back) and an embedded durable queue in SQLite (a table with a visibility time). One
//! conformance suite (`conformance.rs`, test builds only) runs against both.
//!
//! Layout:
//! - this file: the traits, the task, the errors, and [`connect`] choosing an implementation from
//!   `queue.url`;
//! - [`amqp`]: RabbitMQ through lapin;
//! - [`embedded`]: the SQLite table used in embedded mode.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The two lanes: one per flow, the sync flow's at the higher priority.
pub use passerelle_adapters::canonical::Flow;

/// A task: reconcile this dossier, or deliver this backfill lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireTask", into = "WireTask")]
pub struct Task {
    /// What the task is about.
    pub target: Target,
    /// The request id of the HTTP call that caused it, for the worker's span (travels in an AMQP
    /// header with RabbitMQ).
    pub request_id: Option<String>,
    /// How many times this task was retried after a transient failure.
    pub attempt: u32,
    /// When the first of the `429`s in a row that this task met was answered: they do not count
    /// as attempts, but stop being waited out `retry.rate_limited_deadline_s` after it.
    pub rate_limited_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Unsettled returns of the deliveries this task replaces: a task republished (its dossier
    /// leased elsewhere, e.g. by a run that panicked) keeps its count toward [`DELIVERY_LIMIT`].
    pub returns: u32,
    /// How many times in a row this task met the ledger or the queue down: each copy waits twice
    /// as long as the last before its next try (up to 5 s), so an outage is never a hot loop;
    /// not counted toward [`DELIVERY_LIMIT`] (the task is not at fault).
    pub outages: u32,
}

/// What a task is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One dossier to reconcile.
    Dossier { dossier_id: String },
    /// A backfill lot to deliver: an open lot of the ledger to resume, or, when the ledger has no
    /// such lot, a new one to form from the claimable backfill dossiers.
    Lot { key: String },
}

impl Task {
    /// Reconcile this dossier.
    pub fn dossier(dossier_id: impl Into<String>, request_id: Option<String>) -> Task {
        Task::new(
            Target::Dossier {
                dossier_id: dossier_id.into(),
            },
            request_id,
        )
    }

    /// Deliver (or form) backfill lot `lot_key`.
    pub fn lot(lot_key: impl Into<String>) -> Task {
        Task::new(
            Target::Lot {
                key: lot_key.into(),
            },
            None,
        )
    }

    fn new(target: Target, request_id: Option<String>) -> Task {
        Task {
            target,
            request_id,
            attempt: 0,
            rate_limited_since: None,
            returns: 0,
            outages: 0,
        }
    }

    /// The dossier this task reconciles, if it is a dossier's.
    pub fn dossier_id(&self) -> Option<&str> {
        match &self.target {
            Target::Dossier { dossier_id } => Some(dossier_id),
            Target::Lot { .. } => None,
        }
    }
}

/// A task as it travels, byte for byte what the queue has always carried (tasks already waiting
/// in a queue outlive an upgrade): a lot task is one whose `lot` is set, its `dossier_id` empty.
#[derive(Serialize, Deserialize)]
struct WireTask {
    dossier_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(default)]
    attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limited_since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    returns: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    outages: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl From<WireTask> for Task {
    fn from(w: WireTask) -> Task {
        // A lot wins over a dossier id, as it always did.
        let target = match w.lot {
            Some(key) => Target::Lot { key },
            None => Target::Dossier {
                dossier_id: w.dossier_id,
            },
        };
        Task {
            target,
            request_id: w.request_id,
            attempt: w.attempt,
            rate_limited_since: w.rate_limited_since,
            returns: w.returns,
            outages: w.outages,
        }
    }
}

impl From<Task> for WireTask {
    fn from(t: Task) -> WireTask {
        let (dossier_id, lot) = match t.target {
            Target::Dossier { dossier_id } => (dossier_id, None),
            Target::Lot { key } => (String::new(), Some(key)),
        };
        WireTask {
            dossier_id,
            request_id: t.request_id,
            attempt: t.attempt,
            lot,
            rate_limited_since: t.rate_limited_since,
            returns: t.returns,
            outages: t.outages,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker does not answer, or did not confirm: the caller answers 503 and retries.
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (nack, or unroutable with `mandatory`).
    #[error("the queue refused the message: {0}")]
    Refused(String),
    /// A message on the queue could not be read as a task.
    #[error("malformed task: {0}")]
    Malformed(String),
    /// A task came back more than [`DELIVERY_LIMIT`] times: set aside, never delivered again.
    #[error("poison task: {0}")]
    Poison(String),
}

/// Publishing and consuming tasks.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Answers when the broker answers (for `/readyz`).
    async fn health(&self) -> Result<(), QueueError>;

    /// Publishes a task and returns once the broker confirmed it durable.
    async fn publish(&self, lane: Flow, task: &Task) -> Result<(), QueueError>;

    /// Publishes a task to become visible after `delay` (retry with backoff).
    async fn publish_delayed(
        &self,
        lane: Flow,
        task: &Task,
        delay: Duration,
    ) -> Result<(), QueueError>;

    /// Starts consuming a lane with at most `prefetch` unacknowledged tasks in flight.
    async fn consume(&self, lane: Flow, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError>;

    /// Tasks waiting in a lane (ready ones; for metrics).
    async fn depth(&self, lane: Flow) -> Result<u64, QueueError>;
}

/// A stream of deliveries from one lane.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` when the consumer was closed.
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>>;
}

/// How many times a task may come back unsettled (a worker that failed on it, panicked, or died
/// holding it) before it is a poison: RabbitMQ's `x-delivery-limit` on the lanes' quorum queues,
/// and the same count in the embedded queue. A task is delivered at most `DELIVERY_LIMIT + 1`
/// times; the worker dead-letters it in the ledger (reason `poison`) at that last delivery, and
/// the queue itself sets it aside (RabbitMQ's dead-letter queue, the embedded `dead_tasks`) if
/// even that fails.
pub const DELIVERY_LIMIT: u32 = 5;

/// One task delivered, to be acknowledged once the destination acknowledged, or rejected.
#[derive(Debug)]
pub struct Delivery {
    pub task: Task,
    /// Whether the broker delivered it before (a worker died holding it).
    pub redelivered: bool,
    /// Which delivery of the task this is, from 1 (RabbitMQ's `x-delivery-count` + 1).
    pub deliveries: u32,
    pub acker: Box<dyn Acker>,
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync + std::fmt::Debug {
    /// Done: the broker forgets the task.
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    /// Give the task back for another worker now (e.g. the dossier's lease is held elsewhere).
    async fn requeue(self: Box<Self>) -> Result<(), QueueError>;
    /// The task itself is unusable: to the queue's dead-letter exchange/table.
    async fn dead_letter(self: Box<Self>) -> Result<(), QueueError>;
}

pub mod amqp;
pub mod embedded;

#[cfg(test)]
mod conformance;

/// The file of the embedded queue inside the data directory (`queue.url = "embedded"`).
pub const EMBEDDED_FILE: &str = "queue.db";

/// Opens the queue named by `queue.url` (contract §6).
///
/// - `embedded`: the SQLite queue in `data_dir/queue.db`;
/// - `embedded:<path>` or `sqlite://<path>`: the SQLite queue in that file;
/// - `amqp://…` or `amqps://…`: RabbitMQ; the topology is declared at once (idempotent).
///
/// Anything else is refused. A password in the URL never appears in an error.
pub async fn connect(url: &str, data_dir: &Path) -> Result<Arc<dyn Queue>, QueueError> {
    let url = url.trim();
    if url == "embedded" {
        let queue = embedded::EmbeddedQueue::open(
            &data_dir.join(EMBEDDED_FILE),
            embedded::EmbeddedOptions::default(),
        )
        .await?;
        return Ok(Arc::new(queue));
    }
    if let Some(path) = url
        .strip_prefix("embedded:")
        .or_else(|| url.strip_prefix("sqlite://"))
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err(QueueError::Unavailable(format!(
                "queue.url {url:?} names no file"
            )));
        }
        let queue =
            embedded::EmbeddedQueue::open(Path::new(path), embedded::EmbeddedOptions::default())
                .await?;
        return Ok(Arc::new(queue));
    }
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        let queue = amqp::AmqpQueue::connect(url, amqp::AmqpOptions::default()).await?;
        return Ok(Arc::new(queue));
    }
    Err(QueueError::Unavailable(format!(
        "queue.url {} is neither `embedded`, `embedded:<file>`, `sqlite://<file>`, `amqp://…` nor `amqps://…`",
        mask_url(url)
    )))
}

/// The URL with its password (if any) replaced by `***`, for logs and errors.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_url_hides_the_password_only() {
        assert_eq!(
            mask_url("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(mask_url("amqp://rabbit:5672"), "amqp://rabbit:5672");
        assert_eq!(mask_url("amqp://user@rabbit"), "amqp://user@rabbit");
        assert_eq!(mask_url("amqps://u:p@h/v?x=y@z"), "amqps://u:***@h/v?x=y@z");
        assert_eq!(mask_url("embedded"), "embedded");
    }

    /// Tasks as the queue carried them before [`Task`] had a [`Target`]: each line must still
    /// decode, and encode back to the same bytes (messages already waiting in RabbitMQ, or in an
    /// embedded queue, outlive an upgrade).
    const WIRE: [&str; 6] = [
        r#"{"dossier_id":"PDL-1","attempt":0}"#,
        r#"{"dossier_id":"PDL-1","request_id":"req-1","attempt":0}"#,
        r#"{"dossier_id":"","attempt":0,"lot":"lot-7"}"#,
        r#"{"dossier_id":"PDL-2","request_id":"req-2","attempt":3,"rate_limited_since":"2024-05-01T10:00:00Z","returns":2,"outages":1}"#,
        r#"{"dossier_id":"","attempt":1,"lot":"lot-8","returns":4,"outages":2}"#,
        r#"{"dossier_id":"","attempt":0}"#,
    ];

    #[test]
    fn tasks_already_on_the_wire_decode_and_encode_back_byte_for_byte() {
        for line in WIRE {
            let task: Task = serde_json::from_str(line).expect(line);
            assert_eq!(serde_json::to_string(&task).expect("encodes"), line);
        }
    }

    #[test]
    fn tasks_already_on_the_wire_decode_to_their_target() {
        let decode = |line: &str| serde_json::from_str::<Task>(line).expect(line);
        assert_eq!(decode(WIRE[0]), Task::dossier("PDL-1", None));
        assert_eq!(
            decode(WIRE[1]),
            Task::dossier("PDL-1", Some("req-1".into()))
        );
        assert_eq!(decode(WIRE[2]), Task::lot("lot-7"));
        let retried = decode(WIRE[3]);
        assert_eq!(
            retried.target,
            Target::Dossier {
                dossier_id: "PDL-2".into()
            }
        );
        assert_eq!(retried.request_id.as_deref(), Some("req-2"));
        assert_eq!(
            (retried.attempt, retried.returns, retried.outages),
            (3, 2, 1)
        );
        assert_eq!(
            retried.rate_limited_since.map(|t| t.to_rfc3339()),
            Some("2024-05-01T10:00:00+00:00".to_string())
        );
        let lot = decode(WIRE[4]);
        assert_eq!(
            lot.target,
            Target::Lot {
                key: "lot-8".into()
            }
        );
        assert_eq!((lot.attempt, lot.returns, lot.outages), (1, 4, 2));
        assert_eq!(lot.dossier_id(), None);
        // Never published, but decodable: a dossier task without an id (the worker finds no
        // such dossier, and sets the task aside at its delivery limit).
        assert_eq!(decode(WIRE[5]).dossier_id(), Some(""));
        // A lot named beside a dossier id was always a lot task.
        assert_eq!(
            decode(r#"{"dossier_id":"PDL-3","lot":"lot-9"}"#).target,
            Target::Lot {
                key: "lot-9".into()
            }
        );
    }

    #[test]
    fn new_tasks_encode_as_they_always_did() {
        assert_eq!(
            serde_json::to_string(&Task::dossier("PDL-1", None)).expect("encodes"),
            WIRE[0]
        );
        assert_eq!(
            serde_json::to_string(&Task::dossier("PDL-1", Some("req-1".into()))).expect("encodes"),
            WIRE[1]
        );
        assert_eq!(
            serde_json::to_string(&Task::lot("lot-7")).expect("encodes"),
            WIRE[2]
        );
    }

    #[tokio::test]
    async fn connect_refuses_an_unknown_scheme_without_leaking_the_password() {
        let dir = std::env::temp_dir();
        let err = match connect("redis://me:hunter2@host", &dir).await {
            Ok(_) => panic!("a redis URL was accepted"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains("redis://me:***@host"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
