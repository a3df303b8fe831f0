//! Fenced writes. A worker runs a dossier (or a lot) under a lease; a worker that overran its
//! lease (a pause, a slow database) may find that another runner has taken it over since. Its
//! writes must then fail rather than overwrite what the new holder records. Within
//! [`scope`], every write transaction of the ledger first checks, in that transaction, that the
//! scope's holder still holds an unexpired lease (judged by the database's clock, so a replica
//! whose clock runs late cannot write past its lease), and fails with
//! [`LedgerError::LeaseLost`](super::LedgerError::LeaseLost) otherwise.
//!
//! A task-local value rather than a parameter: every write a run makes is fenced, including
//! writes added later, without threading the holder through each method of the ledger.

use std::future::Future;

/// The lease a run's writes require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's key: a dossier id, or `lot:<key>`.
    pub key: String,
    pub holder: String,
}

tokio::task_local! {
    static FENCE: Fence;
}

/// Runs `f` with every ledger write it makes (in this task) fenced by `fence`.
pub async fn scope<F: Future>(fence: Fence, f: F) -> F::Output {
    FENCE.scope(fence, f).await
}

/// The fence of the running task, if any.
pub(crate) fn current() -> Option<Fence> {
    FENCE.try_with(Clone::clone).ok()
}
