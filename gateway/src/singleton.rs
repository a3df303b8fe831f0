//! One of each singleton across replicas: the sweeper, the Pôle emploi poller and the retention
//! purge run in one replica at a time, the one holding the singleton's lease in the ledger (the
//! same leases as dossiers', under the key `singleton:<name>`). The others wait, and take over
//! within a lease period when the holder dies or stops; a holder that cannot renew in time stops
//! its task before another replica may start it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::ledger::{Lease, Ledger};

/// How long a singleton's lease lasts; it is renewed three times per period.
pub const LEASE: Duration = Duration::from_secs(30);

/// A singleton task of this replica.
#[derive(Clone)]
pub struct Singleton {
    pub ledger: Arc<dyn Ledger>,
    /// `sweeper`, `pole_emploi_poller`, `retention_purge`.
    pub name: &'static str,
    /// This replica's name in the leases.
    pub holder: String,
    pub lease: Duration,
}

impl std::fmt::Debug for Singleton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singleton")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Singleton {
    fn key(&self) -> String {
        format!("singleton:{}", self.name)
    }

    /// Runs the task `make` builds while this replica holds the singleton, until `shutdown` or
    /// until the task ends by itself (returned, for the supervisor to see). A lost lease stops the
    /// task (it is dropped at its next await) and the replica waits to take it again.
    pub async fn run<F, Fut>(self, mut shutdown: watch::Receiver<bool>, make: F)
    where
        F: Fn(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let key = self.key();
        loop {
            // Wait for the lease.
            loop {
                if *shutdown.borrow() {
                    return;
                }
                match self.ledger.try_lease(&key, &self.holder, self.lease).await {
                    Ok(lease) if lease.is_held() => break,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(singleton = self.name, error = %e, "cannot read the singleton's lease; will try again")
                    }
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(self.lease / 3) => {}
                }
            }
            info!(singleton = self.name, "this replica runs the singleton");
            let ended = tokio::select! {
                () = make(shutdown.clone()) => true,
                () = self.keep(&key) => false,
            };
            if ended {
                // Shut down, or failed by itself: either way let another replica take it now.
                if let Err(e) = self.ledger.release(&key, &self.holder).await {
                    warn!(singleton = self.name, error = %e, "cannot release the singleton's lease; it expires by itself");
                }
                return;
            }
            warn!(
                singleton = self.name,
                "the singleton's lease was lost; its task stopped here"
            );
        }
    }

    /// Renews the lease three times per period; returns when it is lost (another replica holds
    /// it, or it could not be renewed before it expired).
    async fn keep(&self, key: &str) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.ledger.try_lease(key, &self.holder, self.lease).await {
                Ok(Lease::Busy) => return,
                Ok(_) => renewed = Instant::now(),
                Err(e) => {
                    // Stop before the lease may have lapsed: past it, another replica may run it.
                    if renewed.elapsed() + self.lease / 3 >= self.lease {
                        warn!(singleton = self.name, error = %e, "cannot renew the singleton's lease in time");
                        return;
                    }
                }
            }
        }
    }
}

/// The retention purge (`ledger.payload_retention_days`): masked payloads older than the
/// retention are purged at start, then every `every`.
pub async fn retention_purge(
    ledger: Arc<dyn Ledger>,
    retention: Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match ledger.purge_payloads(retention).await {
            Ok(n) => info!(
                purged = n,
                retention_days = retention.as_secs() / 86_400,
                "payloads past their retention purged"
            ),
            Err(e) => warn!(error = %e, "cannot purge payloads; will try again"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
