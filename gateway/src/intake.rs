//! The one way a source's records enter the ledger, whoever brings them (an inbound route, the
//! Pôle emploi poller): merge them into their dossiers (`IntakeLedger::accept`), then publish a
//! "reconcile this dossier" task for each dossier owed something, and return only once the broker
//! confirmed them (design.md principle 3).
//!
//! A failure after the ledger commit loses nothing: the caller tries again (an HTTP client after
//! its `503`, the poller at its next poll), and the sweeper re-enqueues whatever stays pending.

use passerelle_adapters::merge::Precedence;
use passerelle_adapters::Violation;

use crate::ledger::{Accepted, Inbound, Ledger, LedgerError};
use crate::queue::{Flow, Queue, QueueError, Task};

/// Which accepted dossiers get a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Every in-perimeter dossier the message names, changed or not: a client posting again after
    /// a `503` may be the only one left to publish the task its first post committed.
    InPerimeter,
    /// Only the in-perimeter dossiers whose desired state changed: a poller that sees nothing new
    /// must not cause any work.
    Changed,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The records contradict what the ledger holds: nothing was stored.
    #[error("the message is refused: {} violation(s)", .0.len())]
    Rejected(Vec<Violation>),
    #[error("the ledger is unavailable ({0})")]
    Ledger(LedgerError),
    /// The ledger committed, but a task was not confirmed.
    #[error("the queue did not confirm ({0})")]
    Queue(QueueError),
}

/// Accepts `inbound` into the ledger and publishes the tasks `publish` asks for on the sync lane.
pub async fn accept_and_publish(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    precedence: &Precedence,
    inbound: Inbound,
    publish: Publish,
) -> Result<Accepted, IntakeError> {
    let request_id = inbound.request_id.clone();
    let accepted = match ledger.accept(inbound, precedence).await {
        Ok(a) => a,
        Err(LedgerError::Rejected(v)) => return Err(IntakeError::Rejected(v)),
        Err(e) => return Err(IntakeError::Ledger(e)),
    };
    let publishes = accepted
        .dossiers
        .iter()
        .filter(|d| d.in_perimeter && (publish == Publish::InPerimeter || d.changed))
        .map(|d| {
            let task = Task::dossier(d.dossier_id.clone(), request_id.clone());
            async move { queue.publish(Flow::Sync, &task).await }
        });
    for r in futures_util::future::join_all(publishes).await {
        r.map_err(IntakeError::Queue)?;
    }
    Ok(accepted)
}
