//! The backfill's lot policy: what a lot (*lot de reprise*) is, and how lots are cut. A member
//! makes a line when it is still owed as claimed ([`prepare`]); lots are sized by
//! `backfill.lot_size`, halved by each `413`, and paced in lines per second, all lots of the
//! process together ([`LotPolicy`]). The run of a lot is the reconcile worker's
//! ([`crate::worker`]).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use passerelle_adapters::agora::{encode_reprise_line, RepriseLot};
use passerelle_adapters::planner::{target, AgoraState, Delivered, Target};

use crate::ledger::{DeliveryStatus, DossierRow, LotLine};

/// How lots are sized, throttled and polled (`backfill.*`), shared by every lot of a process.
#[derive(Debug)]
pub struct LotPolicy {
    lot_size: AtomicUsize,
    /// How often a report is polled.
    pub poll_every: Duration,
    pub(crate) throttle: Throttle,
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

    pub(crate) fn halve(&self, from: usize) -> usize {
        let half = (from / 2).max(1);
        self.lot_size.fetch_min(half, Ordering::Relaxed);
        self.lot_size()
    }
}

/// Lines per second toward AGORA, all lots of the process together: a GCRA limiter (`governor`)
/// whose burst is one lot, so a lot goes when the lines of the lots before it have been paid for,
/// and no window of `T` seconds carries more than one lot plus `T × lines_per_second` lines.
#[derive(Debug)]
pub(crate) struct Throttle {
    limiter: Option<LineLimiter>,
    burst: NonZeroU32,
}

type LineLimiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// governor's time source read from tokio's clock, so a paused test runtime drives the limiter.
#[derive(Debug, Clone)]
struct TokioClock(tokio::time::Instant);

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

impl Throttle {
    /// `per_second` lines a second (0: no limit), in bursts of at most `burst` lines (a lot).
    pub(crate) fn new(per_second: u32, burst: usize) -> Self {
        let burst = NonZeroU32::new(u32::try_from(burst.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let quota = governor::Quota::per_second(rate).allow_burst(burst);
            governor::RateLimiter::direct_with_clock(quota, TokioClock(tokio::time::Instant::now()))
        });
        Throttle { limiter, burst }
    }

    /// How long `lines` must wait for their turn, taking the turn when it is now (`None`).
    pub(crate) fn try_take(&self, lines: usize) -> Option<Duration> {
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

/// A member to be sent: the state its line carries and the version it was built from (the line
/// itself goes straight into the lot's body).
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) dossier_id: String,
    pub(crate) version: i64,
    pub(crate) etat: AgoraState,
}

/// What becomes of a member of a lot, from its row.
pub(crate) enum Prepared {
    /// Owed as claimed: it goes into the lot.
    Line(Candidate),
    /// Changed, taken over, or owing nothing: settled without AGORA.
    Settled(LotLine),
    /// Lacking what AGORA requires: its id, version, and what it lacks.
    Incomplete(String, i64, Vec<passerelle_adapters::Violation>),
}

/// What a member of a lot needs, from its row. With `lot`, an owed member's line is encoded
/// into it (a member that does not fit is released).
pub(crate) fn prepare(
    row: DossierRow,
    claimed_version: i64,
    lot: Option<&mut RepriseLot>,
) -> Prepared {
    let id = row.dossier_id.clone();
    if row.desired_version != claimed_version
        || !row.in_perimeter
        || row.delivery.status != DeliveryStatus::Pending
        || matches!(row.delivery.delivered, Delivered::Present { .. })
    {
        // Changed or taken over since the claim: the per-dossier path handles it.
        return Prepared::Settled(LotLine::Released { dossier_id: id });
    }
    match target(row.desired.state) {
        // A backfill dossier AGORA never had: refused or cancelled means nothing is owed.
        Target::Nothing | Target::CancelIfPresent => Prepared::Settled(LotLine::NothingOwed {
            dossier_id: id,
            version: row.desired_version,
        }),
        Target::State(etat) => match encode_reprise_line(&id, &row.desired, etat) {
            Ok(line) => {
                if let Some(lot) = lot {
                    if lot.push(&line).is_err() {
                        return Prepared::Settled(LotLine::Released { dossier_id: id });
                    }
                }
                Prepared::Line(Candidate {
                    dossier_id: id,
                    version: row.desired_version,
                    etat,
                })
            }
            Err(missing) => Prepared::Incomplete(id, row.desired_version, missing),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn acquire(t: &Throttle, lines: usize) {
        while let Some(wait) = t.try_take(lines) {
            tokio::time::sleep(wait).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_holds_the_rate_over_many_lots() {
        let t = Throttle::new(1_000, 1_000);
        let start = tokio::time::Instant::now();
        acquire(&t, 1_000).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first lot goes at once"
        );
        for _ in 0..9 {
            acquire(&t, 1_000).await;
        }
        // 10,000 lines at 1,000 a second: the tenth lot waits for the nine before it.
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_lot_waits_only_for_its_own_lines() {
        let t = Throttle::new(1_000, 2_000);
        let start = tokio::time::Instant::now();
        acquire(&t, 2_000).await;
        acquire(&t, 500).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // Idle time earns at most one lot of credit, never more.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let idle = tokio::time::Instant::now();
        acquire(&t, 2_000).await;
        acquire(&t, 2_000).await;
        assert_eq!(idle.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lot_larger_than_the_burst_is_not_refused_for_good() {
        let t = Throttle::new(10, 100);
        let start = tokio::time::Instant::now();
        acquire(&t, 1_000_000).await;
        acquire(&t, 1_000_000).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(10),
            "taken as one burst each"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_wait() {
        let t = Throttle::new(0, 10_000);
        let start = tokio::time::Instant::now();
        acquire(&t, 1_000_000).await;
        acquire(&t, 1_000_000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn lots_are_halved_after_a_413_and_stay_within_agora_s_limit() {
        let p = LotPolicy::new(50_000, 0, Duration::from_millis(10));
        assert_eq!(p.lot_size(), 10_000, "capped at AGORA's limit");
        assert_eq!(p.halve(3_000), 1_500, "half of the lot that was refused");
        assert_eq!(p.halve(8_000), 1_500, "never grows back");
        assert_eq!(p.halve(1), 1);
    }
}
