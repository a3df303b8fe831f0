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
//! conformance suite ([`conformance`]) runs against both.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The two lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Sync,
    Backfill,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Sync, Lane::Backfill];
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Sync => "sync",
            Lane::Backfill => "backfill",
        }
    }
}

/// A task: reconcile this dossier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub dossier_id: String,
    /// The request id of the HTTP call that caused it, for the worker's span (travels in an AMQP
    /// header with RabbitMQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How many times this task was retried after a transient failure.
    #[serde(default)]
    pub attempt: u32,
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
}

/// Publishing and consuming tasks.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Answers when the broker answers (for `/readyz`).
    async fn health(&self) -> Result<(), QueueError>;

    /// Publishes a task and returns once the broker confirmed it durable.
    async fn publish(&self, lane: Lane, task: &Task) -> Result<(), QueueError>;

    /// Publishes a task to become visible after `delay` (retry with backoff).
    async fn publish_delayed(
        &self,
        lane: Lane,
        task: &Task,
        delay: Duration,
    ) -> Result<(), QueueError>;

    /// Starts consuming a lane with at most `prefetch` unacknowledged tasks in flight.
    async fn consume(&self, lane: Lane, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError>;

    /// Tasks waiting in a lane (ready ones; for metrics).
    async fn depth(&self, lane: Lane) -> Result<u64, QueueError>;
}

/// A stream of deliveries from one lane.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` when the consumer was closed.
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>>;
}

/// One task delivered, to be acknowledged once the destination acknowledged, or rejected.
#[derive(Debug)]
pub struct Delivery {
    pub task: Task,
    /// Whether the broker delivered it before (a worker died holding it).
    pub redelivered: bool,
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
