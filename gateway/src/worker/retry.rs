//! How a dossier's task comes back after a transient failure: published again with a delay
//! ([`crate::retry::RetryPolicy`]), never slept on, until its attempts run out and the dossier
//! goes to the dead letters; AGORA's `429`s are waited out without counting; and the delay of a
//! task put back after an outage of the ledger or the queue.

use std::time::Duration;

use passerelle_adapters::agora::TransientReason;
use tracing::{info, warn};

use super::{TaskEnd, Worker, WorkerError};
use crate::ledger::{DeadReason, AGORA};
use crate::queue::{Flow, Task};

impl Worker {
    /// A `429` is AGORA's pacing, not a failure: the task comes back after the `Retry-After`
    /// (or the backoff) without consuming an attempt, for up to `retry.rate_limited_deadline_s`
    /// after the first `429` in a row; past it, a `429` is a failure like any other.
    pub(super) async fn rate_limited(
        &self,
        lane: Flow,
        task: &Task,
        retry_after: Option<Duration>,
    ) -> Result<TaskEnd, WorkerError> {
        let now = chrono::Utc::now();
        let since = task.rate_limited_since.unwrap_or(now);
        let waited = (now - since).to_std().unwrap_or(Duration::ZERO);
        let reason = TransientReason::RateLimited.to_string();
        if waited >= self.retry.rate_limited_deadline {
            // Still the same row of 429s: each one now counts, until the attempts run out.
            let task = Task {
                rate_limited_since: Some(since),
                ..task.clone()
            };
            return self
                .retry_later(
                    lane,
                    &task,
                    format!("{reason}, for longer than retry.rate_limited_deadline_s"),
                    Some(429),
                    retry_after,
                )
                .await;
        }
        let delay = self.retry.delay(task.attempt, retry_after);
        let next = Task {
            attempt: task.attempt.saturating_add(1),
            rate_limited_since: Some(since),
            ..task.clone()
        };
        self.queue.publish_delayed(lane, &next, delay).await?;
        info!(
            delay_ms = delay.as_millis() as u64,
            waited_s = waited.as_secs(),
            "AGORA asks to slow down (429); not counted as an attempt"
        );
        Ok(TaskEnd::Retrying(delay))
    }

    pub(super) async fn retry_later(
        &self,
        lane: Flow,
        task: &Task,
        error: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Result<TaskEnd, WorkerError> {
        let id = task.dossier_id().unwrap_or_default();
        let attempts = self.ledger.record_failure(id, AGORA, &error).await?;
        if attempts >= self.retry.max_attempts as i32 {
            let reason = DeadReason::Exhausted {
                last_error: error,
                status,
            };
            let dl = self.ledger.dead_letter(id, AGORA, &reason).await?;
            warn!(dead_letter = %dl, attempts, reason = %reason.code(), "retries exhausted");
            return Ok(TaskEnd::DeadLettered(reason.code()));
        }
        let delay = self.retry.delay(attempts.max(1) as u32 - 1, retry_after);
        let next = Task {
            attempt: task.attempt.saturating_add(1),
            // A failure other than a 429 ends a row of 429s.
            rate_limited_since: task.rate_limited_since.filter(|_| status == Some(429)),
            ..task.clone()
        };
        self.queue.publish_delayed(lane, &next, delay).await?;
        info!(attempts, delay_ms = delay.as_millis() as u64, error = %error, "transient failure; retrying later");
        Ok(TaskEnd::Retrying(delay))
    }
}

/// How long a task waits before it goes back after a failure of the ledger or the queue:
/// doubling with its deliveries, from 100 ms to 5 s.
pub(super) fn requeue_delay(deliveries: u32) -> Duration {
    let n = deliveries.saturating_sub(1).min(6);
    (Duration::from_millis(100) * (1u32 << n)).min(Duration::from_secs(5))
}
