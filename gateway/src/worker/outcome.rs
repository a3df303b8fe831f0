//! How a run ends: a [`TaskEnd`] (the task is settled with the queue, and counted under its
//! [label](TaskEnd::label) in `passerelle_task_ends_total`), or a [`WorkerError`] (the ledger or
//! the queue failed, or the run lost its lease: the task goes back to the queue).

use std::time::Duration;

use crate::ledger::LedgerError;
use crate::queue::QueueError;

/// How one task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    Delivered,
    NothingOwed,
    Incomplete,
    OutOfPerimeter,
    Retrying(Duration),
    DeadLettered(String),
    /// Already in the dead letters: nothing to do until a replay or a corrected source.
    AwaitingOperator,
    LeaseBusy,
    Unknown,
    /// A member of an open backfill lot: the lot delivers it.
    InLot,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The lease on `{0}` lapsed while the task ran, and another runner may have held it since:
    /// the task stops before it sends anything more (that runner, or the next, finishes it).
    #[error("the lease on {0} lapsed while working on it")]
    LeaseLost(String),
}

impl TaskEnd {
    /// The end's label in the metrics: a fixed code, never a dossier's value.
    pub fn label(&self) -> &'static str {
        match self {
            TaskEnd::Delivered => "delivered",
            TaskEnd::NothingOwed => "nothing_owed",
            TaskEnd::Incomplete => "incomplete",
            TaskEnd::OutOfPerimeter => "out_of_perimeter",
            TaskEnd::Retrying(_) => "retrying",
            TaskEnd::DeadLettered(_) => "dead_lettered",
            TaskEnd::AwaitingOperator => "awaiting_operator",
            TaskEnd::LeaseBusy => "lease_busy",
            TaskEnd::Unknown => "unknown_dossier",
            TaskEnd::InLot => "in_lot",
        }
    }
}
