//! The sender of returns to ATEXO SEM (contract §4). The worker writes each return into the
//! ledger's outbox with the AGORA answer it reports ([`crate::ledger::outbox`]); this task posts
//! them. Every replica runs one: a claim keeps a return to one sender at a time, judged by the
//! database's clock, and a return whose sender died is claimed again once its claim lapses.
//!
//! So a return is never lost (it is in the ledger before AGORA's answer is acknowledged), and is
//! posted once per AGORA answer; a crash between a post and its record posts it again with the
//! same `Idempotency-Key`, which ATEXO SEM can deduplicate on.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::clients::atexo_sem::{AtexoReturnsClient, ReturnError};
use crate::ledger::outbox::{DueReturn, ReturnAttempt};
use crate::ledger::{Ledger, LedgerError};
use crate::retry::RetryPolicy;

/// Returns claimed at once.
const BATCH: u32 = 32;
/// Posts in flight at once.
pub const IN_FLIGHT: usize = 8;
/// How often the outbox is read when nothing wakes the sender.
const IDLE: Duration = Duration::from_secs(1);

/// Posts the outbox's returns; clone freely.
#[derive(Clone)]
pub struct ReturnsSender {
    pub ledger: Arc<dyn Ledger>,
    pub client: Arc<AtexoReturnsClient>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub retry: RetryPolicy,
    /// How long a claim keeps other senders off a return: longer than a post can last.
    pub claim: Duration,
    /// Woken by the worker when it wrote a return, so that returns go out at once.
    pub wake: Arc<Notify>,
    /// What its posts have looked like since start (`/readyz`, ATEXO SEM's part).
    pub health: Arc<ReturnsHealth>,
}

/// How this replica's posts of returns to ATEXO SEM have ended since start: reported by
/// `/readyz`, never gating (a return not taken waits in the outbox).
#[derive(Debug, Default)]
pub struct ReturnsHealth {
    seen: std::sync::Mutex<ReturnsSeen>,
}

#[derive(Debug, Default, Clone)]
struct ReturnsSeen {
    sent: u64,
    failed: u64,
    last_sent_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When, and why (`HTTP 409`, or the transport's reason without its text).
    last_failure: Option<(chrono::DateTime<chrono::Utc>, String)>,
    /// Whether the latest post failed.
    failing: bool,
}

impl ReturnsHealth {
    fn record(&self, failure: Option<String>) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = chrono::Utc::now();
        seen.failing = failure.is_some();
        match failure {
            None => {
                seen.sent += 1;
                seen.last_sent_at = Some(now);
            }
            Some(why) => {
                seen.failed += 1;
                seen.last_failure = Some((now, why));
            }
        }
    }

    /// `idle` before the first post, `failing` while the latest post failed, `ok` otherwise.
    pub fn report(&self) -> serde_json::Value {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let status = if seen.sent + seen.failed == 0 {
            "idle"
        } else if seen.failing {
            "failing"
        } else {
            "ok"
        };
        let at = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        serde_json::json!({
            "status": status,
            "sent": seen.sent,
            "failed": seen.failed,
            "last_sent_at": seen.last_sent_at.map(at),
            "last_failure": seen.last_failure.map(|(t, why)| serde_json::json!({"at": at(t), "detail": why})),
        })
    }
}

impl std::fmt::Debug for ReturnsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReturnsSender")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl ReturnsSender {
    /// Posts returns until `shutdown`; a ledger that fails is tried again a second later.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let full = match self.send_due().await {
                Ok(n) => n == BATCH as usize,
                Err(e) => {
                    warn!(error = %e, "cannot read the returns outbox; will try again");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
        }
    }

    /// Claims the returns that are due and posts them; how many it claimed.
    pub async fn send_due(&self) -> Result<usize, LedgerError> {
        let due = self.ledger.claim_returns(BATCH, self.claim).await?;
        let n = due.len();
        // Once a post's record failed (the ledger went away), the rest of the batch is not
        // posted: each post whose record fails is posted again once its claim lapses, so only
        // the posts already in flight are.
        let ledger_failed = std::sync::atomic::AtomicBool::new(false);
        let ledger_failed = &ledger_failed;
        let settled: Vec<Result<(), LedgerError>> = futures_util::stream::iter(due)
            .map(|r| async move {
                if ledger_failed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(());
                }
                let settled = self.send(r).await;
                if settled.is_err() {
                    ledger_failed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                settled
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        settled.into_iter().collect::<Result<(), _>>()?;
        Ok(n)
    }

    async fn send(&self, r: DueReturn) -> Result<(), LedgerError> {
        let attempt = match self.client.post(&r.return_id, &r.body).await {
            Ok(()) => {
                info!(dossier_id = %r.dossier_id, return_id = %r.return_id, "return taken by ATEXO SEM");
                self.health.record(None);
                ReturnAttempt::Sent
            }
            Err(ReturnError::Refused { status }) => {
                self.metrics.return_failed();
                self.health.record(Some(format!("HTTP {status}")));
                warn!(dossier_id = %r.dossier_id, return_id = %r.return_id, status, "ATEXO SEM refused a return; it is kept, refused, in the dossier's trace");
                ReturnAttempt::Refused(format!("HTTP {status}"))
            }
            Err(ReturnError::Transient {
                retry_after,
                reason,
                ..
            }) => {
                self.metrics.return_failed();
                self.health.record(Some(reason.clone()));
                let attempts = u32::try_from(r.attempts).unwrap_or(0);
                let delay = self.retry.delay(attempts, retry_after);
                warn!(dossier_id = %r.dossier_id, return_id = %r.return_id, reason = %reason, delay_ms = delay.as_millis() as u64, "return not taken; posting it again later");
                ReturnAttempt::Retry {
                    error: reason,
                    next: chrono::Utc::now()
                        + chrono::Duration::from_std(delay)
                            .unwrap_or_else(|_| chrono::Duration::days(1)),
                }
            }
        };
        self.ledger.settle_return(&r.return_id, &attempt).await
    }
}
