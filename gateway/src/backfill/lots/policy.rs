//! How lots are sized, throttled and polled (`backfill.*`), shared by every lot of a process.

#[allow(unused_imports)]
use super::*;

/// How lots are sized, throttled and polled (`backfill.*`), shared by every lot of a process.
#[derive(Debug)]
pub struct LotPolicy {
    lot_size: AtomicUsize,
    /// How often a report is polled.
    pub poll_every: Duration,
    pub(super) throttle: Throttle,
}

impl LotPolicy {
    pub fn new(lot_size: usize, lines_per_second: u32, poll_every: Duration) -> Self {
        LotPolicy {
            lot_size: AtomicUsize::new(
                lot_size.clamp(1, passerelle_adapters::agora::MAX_LOT_LINES),
            ),
            poll_every,
            throttle: Throttle::new(
                lines_per_second,
                lot_size.clamp(1, passerelle_adapters::agora::MAX_LOT_LINES),
            ),
        }
    }

    /// Lines per lot now (halved by each `413`).
    pub fn lot_size(&self) -> usize {
        self.lot_size.load(Ordering::Relaxed)
    }

    pub(super) fn halve(&self, from: usize) -> usize {
        let half = (from / 2).max(1);
        self.lot_size.fetch_min(half, Ordering::Relaxed);
        self.lot_size()
    }
}

/// Lines per second toward AGORA, all lots of the process together: a GCRA limiter (`governor`)
/// whose burst is one lot, so a lot goes when the lines of the lots before it have been paid for,
/// and no window of `T` seconds carries more than one lot plus `T × lines_per_second` lines.
#[derive(Debug)]
pub(super) struct Throttle {
    limiter: Option<LineLimiter>,
    burst: NonZeroU32,
}

pub(super) type LineLimiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// governor's time source read from tokio's clock, so a paused test runtime drives the limiter.
#[derive(Debug, Clone)]
pub(super) struct TokioClock(tokio::time::Instant);

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

impl Throttle {
    /// `per_second` lines a second (0: no limit), in bursts of at most `burst` lines (a lot).
    pub(super) fn new(per_second: u32, burst: usize) -> Self {
        let burst = NonZeroU32::new(u32::try_from(burst.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let quota = governor::Quota::per_second(rate).allow_burst(burst);
            governor::RateLimiter::direct_with_clock(quota, TokioClock(tokio::time::Instant::now()))
        });
        Throttle { limiter, burst }
    }

    /// How long `lines` must wait for their turn, taking the turn when it is now (`None`).
    pub(super) fn try_take(&self, lines: usize) -> Option<Duration> {
        use governor::clock::Clock as _;
        let limiter = self.limiter.as_ref()?;
        // A lot never exceeds the burst (it is the largest lot); clamping keeps `check_n` from
        // refusing one for good if it did.
        let n = u32::try_from(lines.max(1))
            .ok()
            .and_then(NonZeroU32::new)
            .map_or(self.burst, |n| n.min(self.burst));
        match limiter.check_n(n) {
            Ok(Ok(())) | Err(_) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(limiter.clock().now())),
        }
    }
}
