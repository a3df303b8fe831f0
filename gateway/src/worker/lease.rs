//! The lease guard of a run: one for dossier runs and lot runs. A run holds its lease in the
//! ledger; the guard renews it before each external call, for that call's timeout plus a margin,
//! so a slow call never outlives it, and its writes are fenced by it ([`crate::ledger::fence`]):
//! a run that lost its lease (it overran it, and another runner may have taken over) stops without
//! writing or sending anything more.

use std::time::Duration;

use crate::ledger::fence::Fence;
use crate::ledger::{Lease, Ledger, LedgerError};

use super::WorkerError;

/// Beyond a call's timeout, what a renewal covers: the call's record, and scheduling delays.
pub const MARGIN: Duration = Duration::from_secs(10);

/// A run's lease: its key (a dossier id, or `lot:<key>`), its holder and its period.
pub struct LeaseGuard<'a> {
    pub ledger: &'a dyn Ledger,
    pub key: &'a str,
    pub holder: &'a str,
    pub ttl: Duration,
}

impl std::fmt::Debug for LeaseGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LeaseGuard<'_> {
    /// What the run's writes require.
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.key.to_string(),
            holder: self.holder.to_string(),
        }
    }

    /// Renews the lease for the period plus `extra`; `LeaseLost` unless this run held it
    /// throughout. A run that overran its lease may have been taken over by one that found the
    /// dossier (or lot) in doubt and sent what it had to: it must not send it too.
    pub async fn renew_for(&self, extra: Duration) -> Result<(), WorkerError> {
        let lease = self
            .ledger
            .try_lease(self.key, self.holder, self.ttl + extra)
            .await?;
        if lease != Lease::Renewed {
            if lease.is_held() {
                // Taken again after another runner held it: give it up at once (the next runner
                // is told the dossier is in doubt), rather than hold it unused.
                self.ledger
                    .try_lease(self.key, self.holder, Duration::ZERO)
                    .await?;
            }
            return Err(WorkerError::LeaseLost(self.key.to_string()));
        }
        Ok(())
    }

    /// Renews the lease for an external call that may last `call`.
    pub async fn before_call(&self, call: Duration) -> Result<(), WorkerError> {
        self.renew_for(call + MARGIN).await
    }
}

/// Whether `e` says the run lost its lease (a renewal or a fenced write found it gone).
pub fn is_lease_lost(e: &WorkerError) -> bool {
    matches!(
        e,
        WorkerError::LeaseLost(_) | WorkerError::Ledger(LedgerError::LeaseLost { .. })
    )
}
