//! The backoff of transient failures (`retry.*`), shared by everything that calls out and tries
//! again: the reconcile worker toward AGORA ([`crate::worker`]), the Pôle emploi poller
//! ([`crate::clients::pole_emploi`]) and the returns to ATEXO SEM ([`crate::returns`]).

use std::time::Duration;

use rand::Rng;

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
