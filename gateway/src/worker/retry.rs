//! The retry policy of transient failures (`retry.*`), and the delay of tasks put back after an
//! outage of the ledger or the queue.

#[allow(unused_imports)]
use super::*;

/// Backoff of transient failures (`retry.*`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    /// How long `429`s in a row are waited out without counting as attempts
    /// (`retry.rate_limited_deadline_s`).
    pub rate_limited_deadline: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter in [d/2, d], at least what AGORA asked for.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64);
        let d = half + Duration::from_millis(jitter);
        retry_after.map_or(d, |r| d.max(r.min(self.max)))
    }
}

/// How long a task waits before it goes back after a failure of the ledger or the queue:
/// doubling with its deliveries, from 100 ms to 5 s.
pub(super) fn requeue_delay(deliveries: u32) -> Duration {
    let n = deliveries.saturating_sub(1).min(6);
    (Duration::from_millis(100) * (1u32 << n)).min(Duration::from_secs(5))
}
