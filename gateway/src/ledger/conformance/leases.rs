//! Scenarios of leases: one holder per dossier, expiry and renewal, the fenced writes, and what
//! leases carry beyond dossiers (the sweeper's quiet period, the singletons of the replicas).

use std::sync::Arc;
use std::time::Duration;

use passerelle_adapters::canonical::State;
use passerelle_adapters::planner::{Delivered, Operation};

use crate::ledger::{
    DeadReason, DeliveryStatus, Lease, Ledger, LedgerError, OperationRecord, AGORA,
};

use super::*;

pub async fn concurrent_leases_have_one_winner(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                let holder = format!("worker-{round}-{i}");
                let won = l
                    .try_lease("d1", &holder, Duration::from_secs(60))
                    .await
                    .expect("lease answered")
                    .is_held();
                (holder, won)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (holder, won) = t.await.expect("task");
            if won {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
        l.release("d1", &winners[0]).await.expect("released");
    }
    // A lease on a dossier the ledger does not know yet works too (one worker per dossier).
    assert!(l
        .try_lease("unknown", "w", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
}

pub async fn lease_expiry_renewal_and_release(l: Arc<dyn Ledger>) {
    assert!(l
        .try_lease("d1", "a", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    assert!(!l
        .try_lease("d1", "b", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    // The holder renews.
    assert!(l
        .try_lease("d1", "a", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    // Only the holder releases.
    l.release("d1", "b").await.expect("release");
    assert!(!l
        .try_lease("d1", "b", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    l.release("d1", "a").await.expect("release");
    assert!(l
        .try_lease("d1", "b", Duration::from_millis(200))
        .await
        .expect("lease")
        .is_held());
    assert!(!l
        .try_lease("d1", "c", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    // An expired lease is taken over, and the taker is told: the holder died mid-dossier.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::TakenOver
    );
    // A renewal says so: its holder kept the lease throughout. A lease nobody held is acquired.
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Renewed
    );
    l.release("d1", "c").await.expect("release");
    assert_eq!(
        l.try_lease("d1", "a", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Acquired
    );
    l.release("d1", "a").await.expect("release");
    // Not a renewal for `c`: another held the lease in between (a lot runner that overran its
    // lease learns so, and stops).
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Acquired
    );
    // A holder interrupted mid-dossier expires its own lease instead of releasing it: the next
    // holder is told the state is in doubt.
    assert!(l
        .try_lease("d1", "c", Duration::ZERO)
        .await
        .expect("lease")
        .is_held());
    assert_eq!(
        l.try_lease("d1", "a", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::TakenOver
    );
    l.release("d1", "a").await.expect("release");
    assert!(l
        .try_lease("d1", "c", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    assert!(!l
        .try_lease("d1", "b", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
}

/// Within a fenced run, a write succeeds only while its holder holds an unexpired lease; past it,
/// or once another runner took the lease, it fails with `LeaseLost` and writes nothing.
pub async fn fenced_writes_need_the_lease_held_and_unexpired(l: Arc<dyn Ledger>) {
    use crate::ledger::fence::{scope, Fence};
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let call = OperationRecord {
        operation: Operation::Search,
        status: Some(404),
        outcome: "not found".into(),
        numero_agora: None,
        at: crate::ledger::stored::now(),
        replay_id: None,
    };
    let fence = || Fence {
        key: "d1".into(),
        holder: "run-a".into(),
    };
    assert!(l
        .try_lease("d1", "run-a", Duration::from_millis(400))
        .await
        .unwrap()
        .is_held());
    scope(
        fence(),
        l.record_operation("d1", AGORA, &call, &Delivered::Absent, None),
    )
    .await
    .expect("held: written");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Expired, even though nobody took it yet.
    let lost = scope(
        fence(),
        l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[]),
    )
    .await;
    assert!(
        matches!(lost, Err(LedgerError::LeaseLost { .. })),
        "{lost:?}"
    );
    assert_eq!(
        l.try_lease("d1", "run-b", Duration::from_secs(30))
            .await
            .unwrap(),
        Lease::TakenOver
    );
    for lost in [
        scope(
            fence(),
            l.record_operation("d1", AGORA, &call, &Delivered::Absent, None),
        )
        .await
        .map(|_| ()),
        scope(fence(), l.record_failure("d1", AGORA, "503"))
            .await
            .map(|_| ()),
        scope(
            fence(),
            l.dead_letter(
                "d1",
                AGORA,
                &DeadReason::Irreconcilable { detail: "x".into() },
            ),
        )
        .await
        .map(|_| ()),
    ] {
        assert!(
            matches!(lost, Err(LedgerError::LeaseLost { .. })),
            "{lost:?}"
        );
    }
    assert_eq!(
        l.operations("d1", AGORA).await.unwrap().len(),
        1,
        "nothing more written"
    );
    let row = l.dossier("d1").await.unwrap().expect("d1");
    assert_eq!(row.delivery.status, DeliveryStatus::Pending);
    assert_eq!(row.delivery.attempts, 0);
    // The new holder writes.
    scope(
        Fence {
            key: "d1".into(),
            holder: "run-b".into(),
        },
        l.record_failure("d1", AGORA, "503"),
    )
    .await
    .expect("run-b holds it");
}

/// The sweeper republishes a pending dossier whose task was lost, then not again until its quiet
/// period has passed (a backlog is not multiplied every round).
pub async fn the_sweeper_republishes_a_lost_task_once_per_quiet_period(l: Arc<dyn Ledger>) {
    use crate::startup::{sweep_round, SweepStamps};
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = crate::queue::connect("embedded", dir.path())
        .await
        .expect("queue");
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let quiet = Duration::from_millis(300);
    tokio::time::sleep(quiet).await;
    let mut stamps = SweepStamps::default();
    assert_eq!(sweep_round(&*l, &*queue, quiet, &mut stamps).await, 1);
    assert_eq!(
        sweep_round(&*l, &*queue, quiet, &mut stamps).await,
        0,
        "stamped: not again within the quiet period"
    );
    tokio::time::sleep(quiet).await;
    assert_eq!(
        sweep_round(&*l, &*queue, quiet, &mut stamps).await,
        1,
        "still pending after the quiet period: republished"
    );
}

/// A singleton (the sweeper, the poller, the purge) runs in one replica at a time; when that one
/// stops, another takes it over. The retention purge runs at once, then periodically.
pub async fn one_replica_runs_a_singleton_and_the_retention_purge_repeats(l: Arc<dyn Ledger>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let replica = |holder: &str| {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let single = crate::singleton::Singleton {
            ledger: l.clone(),
            name: "test",
            holder: holder.to_string(),
            lease: Duration::from_millis(900),
        };
        let (running, most, started) = (running.clone(), most.clone(), started.clone());
        let task = tokio::spawn(single.run(rx, move |mut rx| {
            let (running, most, started) = (running.clone(), most.clone(), started.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = rx.changed().await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        (stop, task)
    };
    let (stop_a, a) = replica("replica-a");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "nobody started it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (stop_b, b) = replica("replica-b");
    // Several lease periods: renewed by its holder, never taken by the other.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "one replica runs it");
    assert_eq!(running.load(Ordering::SeqCst), 1);
    // Whichever runs it stops: the other takes over.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    stop_a.send(true).expect("a");
    a.await.expect("a ends");
    while started.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.load(Ordering::SeqCst), 1, "b runs it");
    stop_b.send(true).expect("b");
    b.await.expect("b ends");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");

    // The purge: at once, then every period.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let purge = tokio::spawn(crate::singleton::retention_purge(
        l.clone(),
        Duration::from_millis(200),
        Duration::from_millis(100),
        rx,
    ));
    accept(&*l, "old", record("d1", atexo(State::Validated, Some(1)))).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        l.purge_payloads(Duration::from_millis(200))
            .await
            .expect("p"),
        0,
        "the periodic purge already purged the payload past its retention"
    );
    accept(&*l, "new", record("d2", ouiform(State::Registered))).await;
    assert_eq!(
        l.purge_payloads(Duration::from_secs(3_600))
            .await
            .expect("p"),
        0
    );
    stop.send(true).expect("stop");
    purge.await.expect("ends");
}
