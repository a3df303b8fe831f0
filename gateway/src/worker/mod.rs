//! The reconcile worker (design.md, "reconcile worker"): consumes the queue's tasks, compares the
//! ledger's desired and delivered states, performs the AGORA operations still owed, records each
//! answer, and acknowledges the task only then.
//!
//! A dossier's journey through it:
//!
//! 1. [`consume`]: a lane is consumed with a bounded number of tasks in flight; each delivery is
//!    a [`Task`](crate::queue::Task) naming its [`Target`](crate::queue::Target), a dossier or a
//!    backfill lot. A task back too many times is a poison: its dossier goes to the dead letters
//!    (reason `poison`) and the lane goes on.
//! 2. [`lease`]: one runner per dossier (or lot) at a time, whatever the number of processes: the
//!    ledger's lease, renewed before each call to AGORA for as long as that call may take, and
//!    fencing every write. A task whose dossier is leased elsewhere is published again with a
//!    short delay, so it never blocks a worker slot; a run that lost its lease stops without
//!    writing or sending anything more.
//! 3. [`dossier`]: the run of one dossier: the planner gives the operations owed, each is sent to
//!    AGORA, and its answer recorded with the return owed to ATEXO SEM before the next is sent. A
//!    crash at any line loses nothing: the task is redelivered, the plan is recomputed from what
//!    the ledger recorded (searching AGORA first when the last run died mid-dossier), and AGORA's
//!    `409` on a repeated creation gives the existing number.
//! 4. [`lot`]: a backfill dossier travels in a lot instead (`POST /reprises`); the lot settles it,
//!    then hands what is still owed to a task of its own. What a lot is and how lots are cut is
//!    the backfill's ([`crate::backfill::lots`]).
//! 5. [`retry`]: transient failures (timeouts, dropped connections, 5xx, 429) publish the task
//!    again with an exponential backoff and jitter (or AGORA's `Retry-After`), never by sleeping;
//!    after `retry.max_attempts`, or at once on a business rejection (422), the dossier goes to
//!    the dead letters with its reason.
//! 6. [`outcome`]: the run ends in a [`TaskEnd`], counted under its label, and the task is
//!    acknowledged; or in a [`WorkerError`], and the task goes back to the queue.

use std::sync::Arc;
use std::time::Duration;

use crate::clients::agora::AgoraClient;
use crate::ledger::Ledger;
use crate::queue::Queue;
use crate::retry::RetryPolicy;

mod consume;
mod dossier;
pub mod lease;
mod lot;
mod outcome;
mod retry;

pub use outcome::{TaskEnd, WorkerError};

/// What the worker needs, shared by every task.
#[derive(Clone)]
pub struct Worker {
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn Queue>,
    pub agora: Arc<AgoraClient>,
    /// When returns to ATEXO SEM are on (`atexo_sem.returns_url`): wakes their sender
    /// ([`crate::returns`]) after a return was written into the outbox.
    pub returns: Option<Arc<tokio::sync::Notify>>,
    pub retry: RetryPolicy,
    pub lease_ttl: Duration,
    /// This process's name in the leases.
    pub id: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How backfill lots are sized, throttled and polled.
    pub lots: Arc<crate::backfill::lots::LotPolicy>,
    /// Where each lane beats while it runs (reported by `/readyz`).
    pub heartbeats: Arc<crate::supervision::Heartbeats>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
