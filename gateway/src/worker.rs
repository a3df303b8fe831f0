//! The reconcile worker (design.md, "reconcile worker"): consumes "reconcile this dossier" tasks,
//! compares the ledger's desired and delivered states, performs the AGORA operations still owed,
//! records each answer, and acknowledges the task only then.
//!
//! - One worker per dossier at a time: the ledger's lease. A task whose dossier is leased elsewhere
//!   is published again with a short delay, so it never blocks a worker slot.
//! - Transient failures (timeouts, dropped connections, 5xx, 429) are retried by publishing the
//!   task again with an exponential backoff and jitter (or AGORA's `Retry-After`), never by
//!   sleeping; after `retry.max_attempts`, or at once on a business rejection (422), the dossier goes
//!   to the dead letters with its reason.
//! - A crash at any line loses nothing: the task is redelivered, the plan is recomputed from what
//!   the ledger recorded, and AGORA's `409` on a repeated creation gives the existing number.

use std::sync::Arc;
use std::time::Duration;

use passerelle_adapters::agora::{self, Outcome, TransientReason};
use passerelle_adapters::atexo_sem::{encode_return, AgoraReturn};
use passerelle_adapters::canonical::System;
use passerelle_adapters::planner::{self, AgoraState, Delivered, Operation};
use rand::Rng;
use tokio::sync::Semaphore;
use tracing::{info, warn, Instrument};

use crate::clients::agora::AgoraClient;
use crate::ledger::outbox::PendingReturn;
use crate::ledger::{
    DeadReason, DeliveryStatus, Lease, Ledger, LedgerError, OperationRecord, AGORA,
};
use crate::queue::{Delivery, Lane, Queue, QueueError, Task, DELIVERY_LIMIT};
mod retry;
pub use retry::*;

/// What the worker needs, shared by every task.
#[derive(Clone)]
pub struct Worker {
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn Queue>,
    pub agora: Arc<AgoraClient>,
    /// When returns to ATEXO SEM are on (`atexo_sem.returns_url`): wakes their sender
    /// ([`crate::returns`]) after a return was written into the outbox.
    pub returns: Option<Arc<tokio::sync::Notify>>,
    pub retry: RetryPolicy,
    pub lease_ttl: Duration,
    /// This process's name in the leases.
    pub id: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How backfill lots are sized, throttled and polled.
    pub lots: Arc<crate::backfill::lots::LotPolicy>,
    /// Where each lane beats while it runs (reported by `/readyz`).
    pub heartbeats: Arc<crate::supervision::Heartbeats>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How one task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    Delivered,
    NothingOwed,
    Incomplete,
    OutOfPerimeter,
    Retrying(Duration),
    DeadLettered(String),
    /// Already in the dead letters: nothing to do until a replay or a corrected source.
    AwaitingOperator,
    LeaseBusy,
    Unknown,
    /// A member of an open backfill lot: the lot delivers it.
    InLot,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The lease on `{0}` lapsed while the task ran, and another runner may have held it since:
    /// the task stops before it sends anything more (that runner, or the next, finishes it).
    #[error("the lease on {0} lapsed while working on it")]
    LeaseLost(String),
}

pub mod lease;

/// The most operations one task performs before it yields (a guard against ping-pong with AGORA).
const MAX_STEPS: usize = 16;

impl Worker {
    /// Consumes a lane until `shutdown` is signalled, with at most `concurrency` tasks in flight;
    /// waits for those in flight before returning.
    pub async fn run(
        self,
        lane: Lane,
        concurrency: u16,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let concurrency = concurrency.max(1);
        let slots = Arc::new(Semaphore::new(usize::from(concurrency)));
        let mut pause = Duration::from_millis(200);
        let beat = || self.heartbeats.beat(lane.as_str());
        // Test hook: a lane that ends unbidden after its first task (see `crate::faults`).
        let ends_early = crate::faults::hook("end_lane") == Some(lane.as_str());
        'consume: loop {
            // A broker restart or a lost connection ends the consumer: consume again (the queue
            // reconnects), with a growing pause so a broker that stays down is not hammered.
            let mut consumer = loop {
                match self.queue.consume(lane, concurrency).await {
                    Ok(c) => break c,
                    Err(e) => {
                        warn!(lane = lane.as_str(), error = %e, "cannot consume; trying again");
                        tokio::select! {
                            _ = shutdown.changed() => break 'consume,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(10));
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.changed() => {
                        // The consumer stays open until the tasks in flight are acknowledged (a
                        // closed consumer can no longer settle its deliveries).
                        let _ = slots.acquire_many(u32::from(concurrency)).await;
                        drop(consumer);
                        break 'consume;
                    }
                    next = consumer.next() => next,
                };
                let delivery = match next {
                    None => {
                        warn!(
                            lane = lane.as_str(),
                            "the queue ended the consumer; consuming again"
                        );
                        tokio::select! {
                            _ = shutdown.changed() => break 'consume,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(10));
                        continue 'consume;
                    }
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        warn!(lane = lane.as_str(), error = %e, "the queue gave an unusable delivery");
                        continue;
                    }
                };
                pause = Duration::from_millis(200);
                beat();
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break 'consume;
                };
                let worker = self.clone();
                tokio::spawn(async move {
                    worker.handle(lane, delivery).await;
                    drop(permit);
                });
                if ends_early {
                    warn!(lane = lane.as_str(), "test fault: the lane ends");
                    return Ok(());
                }
            }
        }
        // Graceful: let the tasks in flight finish (their acks are what makes them durable).
        let _ = slots.acquire_many(u32::from(concurrency)).await;
        Ok(())
    }

    /// Handles one delivery and settles it with the queue.
    pub async fn handle(&self, lane: Lane, delivery: Delivery) {
        let Delivery {
            task,
            acker,
            deliveries,
            ..
        } = delivery;
        let span = tracing::info_span!(
            "reconcile",
            dossier_id = %task.dossier_id,
            request_id = task.request_id.as_deref().unwrap_or(""),
            lane = lane.as_str(),
            attempt = task.attempt
        );
        let returns = task.returns.saturating_add(deliveries.saturating_sub(1));
        if returns >= DELIVERY_LIMIT {
            self.poison(lane, &task, returns, acker)
                .instrument(span)
                .await;
            return;
        }
        let result = match &task.lot {
            Some(lot) => self.deliver_lot(lot).instrument(span.clone()).await,
            None => {
                let task = Task {
                    returns,
                    ..task.clone()
                };
                self.reconcile(lane, &task).instrument(span.clone()).await
            }
        };
        // Instrumented, not entered: a span entered across the acknowledgement's `.await` stays on
        // the thread's span stack while other tasks run there (their log lines nest under it),
        // and tracing-subscriber 0.3.21+ panics when it later clones it (tokio-rs/tracing#3514).
        async {
            match result {
                Ok(end) => {
                    self.metrics.task_end(&end);
                    if let Err(e) = acker.ack().await {
                        warn!(error = %e, "cannot acknowledge a task; it will be redelivered (harmless)");
                    }
                }
                Err(e) => {
                    // The ledger or the queue failed: give the task back rather than lose it,
                    // after a delay (never a hot loop against a database that is down).
                    let infrastructure_down = self.ledger.health().await.is_err()
                        || self.queue.health().await.is_err();
                    let delay = if infrastructure_down {
                        requeue_delay(deliveries.max(task.outages.saturating_add(1)))
                    } else {
                        requeue_delay(deliveries)
                    };
                    warn!(error = %e, delay_ms = delay.as_millis() as u64, infrastructure_down, "reconciliation interrupted; the task goes back to the queue");
                    if infrastructure_down {
                        // Not the task's fault: a fresh copy, so an outage never counts toward
                        // its delivery limit; it carries the outage's length, so each try waits
                        // longer than the last.
                        let again = Task {
                            outages: task.outages.saturating_add(1),
                            ..task.clone()
                        };
                        if self.queue.publish_delayed(lane, &again, delay).await.is_ok() {
                            if let Err(e) = acker.ack().await {
                                warn!(error = %e, "cannot acknowledge a task; it will be redelivered (harmless)");
                            }
                            return;
                        }
                    }
                    tokio::time::sleep(delay).await;
                    if let Err(e) = acker.requeue().await {
                        warn!(error = %e, "cannot requeue a task; the broker will redeliver it");
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// A task past the queue's delivery limit: its dossier goes to the dead letters (reason
    /// `poison`, listed by the dead-letter API) and the task is dropped, so the lane goes on.
    async fn poison(
        &self,
        lane: Lane,
        task: &Task,
        returns: u32,
        acker: Box<dyn crate::queue::Acker>,
    ) {
        if task.lot.is_some() || task.dossier_id.is_empty() {
            // No dossier to dead-letter: the queue's own dead letters keep it.
            warn!(
                returns,
                "a lot task keeps failing; set aside in the queue's dead letters"
            );
            if let Err(e) = acker.dead_letter().await {
                warn!(error = %e, "cannot set a poison task aside; the queue's limit will");
            }
            return;
        }
        let reason = DeadReason::Poison { returns };
        // Under the dossier's lease, fenced like every worker write: a run of the same dossier
        // still under way elsewhere (a newer task) is not overwritten by this copy's verdict.
        let id = task.dossier_id.as_str();
        let holder = format!("{}/{}", self.id, uuid::Uuid::now_v7());
        match self.ledger.try_lease(id, &holder, self.lease_ttl).await {
            Ok(lease) if lease.is_held() => {}
            Ok(_) => {
                // Another run holds the dossier (perhaps the last delivery, dead with its lease
                // unreleased): this copy comes back, its count kept, once that lease may have
                // lapsed, and is dead-lettered then.
                let delay = Duration::from_millis(rand::thread_rng().gen_range(500..1_500));
                let again = Task {
                    returns,
                    ..task.clone()
                };
                self.metrics.task_end(&TaskEnd::LeaseBusy);
                let settled = match self.queue.publish_delayed(lane, &again, delay).await {
                    Ok(()) => acker.ack().await,
                    Err(_) => acker.requeue().await,
                };
                if let Err(e) = settled {
                    warn!(error = %e, "cannot settle a poison task; the queue's limit sets it aside");
                }
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot lease a poison task's dossier; the queue's limit sets it aside");
                let _ = acker.dead_letter().await;
                return;
            }
        }
        let fence = crate::ledger::fence::Fence {
            key: id.to_string(),
            holder: holder.clone(),
        };
        let dead = crate::ledger::fence::scope(
            fence,
            self.ledger.dead_letter(&task.dossier_id, AGORA, &reason),
        )
        .await;
        if let Err(e) = self.ledger.release(id, &holder).await {
            warn!(error = %e, "cannot release a lease; it expires by itself");
        }
        match dead {
            Ok(dl) => {
                warn!(dead_letter = %dl, returns, "a task that keeps failing was dead-lettered (poison)");
                self.metrics.task_end(&TaskEnd::DeadLettered(reason.code()));
                if let Err(e) = acker.ack().await {
                    warn!(error = %e, "cannot acknowledge a poison task; the queue's limit sets it aside");
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot dead-letter a poison task; the queue's limit sets it aside");
                let _ = acker.dead_letter().await;
            }
        }
    }

    /// Reconciles one dossier: the heart of the relay.
    pub async fn reconcile(&self, lane: Lane, task: &Task) -> Result<TaskEnd, WorkerError> {
        let id = task.dossier_id.as_str();
        // One holder per task, not per process: two tasks of one dossier in this process must not
        // both hold its lease.
        let holder = format!("{}/{}", self.id, uuid::Uuid::now_v7());
        let lease = self.ledger.try_lease(id, &holder, self.lease_ttl).await?;
        if !lease.is_held() {
            let delay = Duration::from_millis(rand::thread_rng().gen_range(100..400));
            self.queue.publish_delayed(lane, task, delay).await?;
            return Ok(TaskEnd::LeaseBusy);
        }
        let in_doubt = lease == Lease::TakenOver;
        if in_doubt {
            info!("the previous worker died mid-dossier; AGORA is searched before anything else");
        }
        tracing::debug!(holder = %holder, lease = ?lease, "lease taken");
        let guard = lease::LeaseGuard {
            ledger: self.ledger.as_ref(),
            key: id,
            holder: &holder,
            ttl: self.lease_ttl,
        };
        let end = crate::ledger::fence::scope(
            guard.fence(),
            self.reconcile_leased(lane, task, in_doubt, &guard),
        )
        .await;
        if end.as_ref().is_err_and(lease::is_lease_lost) {
            // Another runner may hold the dossier now: nothing more is written or sent here, and
            // the lease is theirs to release. The task comes back later, in case nobody does.
            warn!("the dossier's lease was lost during its run; it stopped without writing");
            let delay = Duration::from_millis(rand::thread_rng().gen_range(500..1_500));
            self.queue.publish_delayed(lane, task, delay).await?;
            return Ok(TaskEnd::LeaseBusy);
        }
        let released = if end.is_ok() {
            self.ledger.release(id, &holder).await
        } else {
            // Interrupted, perhaps between an AGORA call and its record: leave the lease expired
            // rather than released, so that whoever takes the dossier next searches AGORA first.
            self.ledger
                .try_lease(id, &holder, Duration::ZERO)
                .await
                .map(|_| ())
        };
        if let Err(e) = released {
            warn!(error = %e, "cannot release a lease; it expires by itself");
        }
        end
    }

    /// `in_doubt`: what AGORA holds may differ from what the ledger recorded (a worker died between
    /// a call and its record), so the first step searches instead of trusting the ledger.
    async fn reconcile_leased(
        &self,
        lane: Lane,
        task: &Task,
        in_doubt: bool,
        guard: &lease::LeaseGuard<'_>,
    ) -> Result<TaskEnd, WorkerError> {
        let id = task.dossier_id.as_str();
        // Read once: the lease keeps every other worker off this dossier, so what changes
        // meanwhile is only a newer desired version, which `settle_delivery` leaves owed and whose
        // own task reconciles it next.
        let Some(row) = self.ledger.dossier(id).await? else {
            warn!("a task names a dossier the ledger does not know");
            return Ok(TaskEnd::Unknown);
        };
        if let Some(source) = crate::faults::hook("panic_on_source") {
            // Test hook: a task that fails the same way at every delivery (a poison).
            if row.desired.sources.iter().any(|s| s.id == source) {
                panic!("test fault: panic_on_source");
            }
        }
        if !row.in_perimeter {
            self.ledger
                .settle_delivery(
                    id,
                    AGORA,
                    DeliveryStatus::OutOfPerimeter,
                    row.desired_version,
                    &[],
                )
                .await?;
            return Ok(TaskEnd::OutOfPerimeter);
        }
        if row.lot.is_some() {
            // The lot settles it, then gives it a task of its own if anything is still owed.
            return Ok(TaskEnd::InLot);
        }
        if row.delivery.status == DeliveryStatus::Dead {
            // Waits for an operator's replay (or a corrected source, which resets it).
            return Ok(TaskEnd::AwaitingOperator);
        }
        let mut delivered = if in_doubt {
            Delivered::Unknown
        } else {
            row.delivery.delivered.clone()
        };
        for _ in 0..MAX_STEPS {
            let ops = match planner::plan(&delivered, row.desired.state) {
                Ok(ops) => ops,
                Err(e) => {
                    let reason = DeadReason::Irreconcilable {
                        detail: e.to_string(),
                    };
                    let dl = self.ledger.dead_letter(id, AGORA, &reason).await?;
                    warn!(dead_letter = %dl, reason = %reason.code(), "dossier dead-lettered");
                    return Ok(TaskEnd::DeadLettered(reason.code()));
                }
            };
            let Some(&op) = ops.first() else {
                let first_time = row.delivery.delivered_version == 0
                    && matches!(delivered, Delivered::Unknown | Delivered::Absent);
                self.ledger
                    .settle_delivery(
                        id,
                        AGORA,
                        DeliveryStatus::Delivered,
                        row.desired_version,
                        &[],
                    )
                    .await?;
                return Ok(if first_time {
                    TaskEnd::NothingOwed
                } else {
                    TaskEnd::Delivered
                });
            };
            let numero = match &delivered {
                Delivered::Present { numero_agora, .. } => Some(numero_agora.as_str()),
                _ => None,
            };
            // The call must end within the lease, whatever it costs.
            guard.before_call(self.agora.request_timeout()).await?;
            let started = std::time::Instant::now();
            // The client encodes the body first: a dossier lacking what AGORA requires is
            // refused there with what it waits for, and nothing is sent.
            let outcome = match self.agora.perform(op, id, &row.desired, numero).await {
                Ok(o) => o,
                Err(missing) => {
                    info!(
                        missing = missing.len(),
                        "dossier incomplete for AGORA; it waits for another source"
                    );
                    self.ledger
                        .settle_delivery(
                            id,
                            AGORA,
                            DeliveryStatus::Incomplete,
                            row.desired_version,
                            &missing,
                        )
                        .await?;
                    return Ok(TaskEnd::Incomplete);
                }
            };
            self.metrics.agora_call(op, &outcome, started.elapsed());
            tracing::debug!(operation = op.name(), delivered = ?delivered, outcome = %describe(&outcome), "AGORA answered");
            let (next, numero_after, status) = match &outcome {
                Outcome::Found { numero_agora, etat } => (
                    Some(present(numero_agora, *etat)),
                    Some(numero_agora.clone()),
                    Some(200),
                ),
                Outcome::NotFound => (Some(Delivered::Absent), None, Some(404)),
                Outcome::Created { numero_agora } => (
                    Some(present(numero_agora, AgoraState::Cree)),
                    Some(numero_agora.clone()),
                    Some(201),
                ),
                // It existed (a creation whose answer was lost, or another path): search to learn
                // its state before doing anything else.
                Outcome::AlreadyExists { numero_agora } => (
                    Some(Delivered::Unknown),
                    Some(numero_agora.clone()),
                    Some(409),
                ),
                Outcome::Accepted => {
                    let after = match &delivered {
                        Delivered::Present {
                            numero_agora,
                            state,
                        } => state.after(op).map(|s| present(numero_agora, s)),
                        _ => None,
                    };
                    (
                        Some(after.unwrap_or(Delivered::Unknown)),
                        numero.map(str::to_owned),
                        Some(200),
                    )
                }
                Outcome::StateConflict => (
                    Some(Delivered::Unknown),
                    numero.map(str::to_owned),
                    Some(409),
                ),
                Outcome::Rejected { .. } => (None, numero.map(str::to_owned), Some(422)),
                // A call that failed without a word may still have taken effect (AGORA applied it,
                // then the answer was lost): search before sending it again, so that nothing is
                // sent twice. A 429 refuses at the door: nothing happened.
                Outcome::Transient { reason, .. }
                    if op != Operation::Search && *reason != TransientReason::RateLimited =>
                {
                    (Some(Delivered::Unknown), numero.map(str::to_owned), None)
                }
                Outcome::Transient { .. } => (None, numero.map(str::to_owned), None),
                Outcome::Unexpected { status, .. } => {
                    (None, numero.map(str::to_owned), Some(*status))
                }
            };
            let record = OperationRecord {
                operation: op,
                status,
                outcome: describe(&outcome),
                numero_agora: numero_after.clone(),
                at: chrono::Utc::now(),
                replay_id: row.delivery.replay_id.clone(),
            };
            let delivered_now = next.clone().unwrap_or(delivered.clone());
            // What AGORA's answer tells ATEXO SEM (contract §4) is written with the answer: a
            // crash after this record loses no return.
            let ret = match &outcome {
                Outcome::Rejected { anomalies } => {
                    self.return_for(&row.desired, numero_after.clone(), None, anomalies)
                }
                Outcome::Created { numero_agora } => self.return_for(
                    &row.desired,
                    Some(numero_agora.clone()),
                    Some(AgoraState::Cree),
                    &[],
                ),
                // AGORA holds a state passerelle did not hear it reach (an answer lost with a
                // crashed worker, or a dossier AGORA had before): ATEXO SEM is told, unless it
                // already was.
                Outcome::Found { numero_agora, etat }
                    if matches!(delivered, Delivered::Unknown) && self.returns.is_some() =>
                {
                    let told = self.ledger.returns_of(id).await?.iter().any(|r| {
                        r.numero_agora.as_deref() == Some(numero_agora.as_str())
                            && r.etat.as_deref() == Some(etat.as_str())
                    });
                    if told {
                        None
                    } else {
                        self.return_for(&row.desired, Some(numero_agora.clone()), Some(*etat), &[])
                    }
                }
                Outcome::Accepted => match &next {
                    Some(Delivered::Present {
                        numero_agora,
                        state,
                    }) => {
                        self.return_for(&row.desired, Some(numero_agora.clone()), Some(*state), &[])
                    }
                    _ => None,
                },
                _ => None,
            };
            self.ledger
                .record_operation(id, AGORA, &record, &delivered_now, ret.as_ref())
                .await?;
            if let (Some(_), Some(wake)) = (&ret, &self.returns) {
                wake.notify_one();
            }
            delivered = delivered_now;

            match outcome {
                Outcome::Rejected { anomalies } => {
                    let reason = DeadReason::Rejected { anomalies };
                    let dl = self.ledger.dead_letter(id, AGORA, &reason).await?;
                    warn!(dead_letter = %dl, reason = %reason.code(), "AGORA rejected the dossier");
                    return Ok(TaskEnd::DeadLettered(reason.code()));
                }
                Outcome::Transient {
                    retry_after,
                    reason: TransientReason::RateLimited,
                } => return self.rate_limited(lane, task, retry_after).await,
                Outcome::Transient {
                    retry_after,
                    reason,
                } => {
                    return self
                        .retry_later(lane, task, reason.to_string(), None, retry_after)
                        .await;
                }
                Outcome::Unexpected { status, detail } => {
                    return self
                        .retry_later(
                            lane,
                            task,
                            format!("unexpected answer: {detail}"),
                            Some(status),
                            None,
                        )
                        .await;
                }
                _ => {}
            }
        }
        // Too many steps: something ping-pongs with AGORA; try again later rather than spin.
        self.retry_later(
            lane,
            task,
            "too many steps in one reconciliation".into(),
            None,
            None,
        )
        .await
    }

    /// A `429` is AGORA's pacing, not a failure: the task comes back after the `Retry-After`
    /// (or the backoff) without consuming an attempt, for up to `retry.rate_limited_deadline_s`
    /// after the first `429` in a row; past it, a `429` is a failure like any other.
    async fn rate_limited(
        &self,
        lane: Lane,
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

    async fn retry_later(
        &self,
        lane: Lane,
        task: &Task,
        error: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Result<TaskEnd, WorkerError> {
        let id = task.dossier_id.as_str();
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

    /// The return to ATEXO SEM of an AGORA answer (contract §4), when returns are on and the
    /// dossier came from ATEXO SEM.
    fn return_for(
        &self,
        d: &passerelle_adapters::Dossier,
        numero_agora: Option<String>,
        etat: Option<AgoraState>,
        anomalies: &[agora::model::Anomaly],
    ) -> Option<PendingReturn> {
        self.returns.as_ref()?;
        let src = d.source(System::AtexoSem)?;
        let ret = AgoraReturn {
            dossier: src.id.clone(),
            numero_agora,
            etat,
            date: chrono::Utc::now().date_naive(),
            anomalies: anomalies.to_vec(),
        };
        Some(PendingReturn {
            return_id: uuid::Uuid::now_v7().to_string(),
            atexo_dossier: ret.dossier.clone(),
            numero_agora: ret.numero_agora.clone(),
            etat: etat.map(|e| e.as_str().to_string()),
            anomaly_codes: anomalies.iter().map(|a| a.code.clone()).collect(),
            body: encode_return(&ret),
        })
    }
}

fn present(numero: &str, state: AgoraState) -> Delivered {
    Delivered::Present {
        numero_agora: numero.to_string(),
        state,
    }
}

/// A short outcome for the operations journal, with no personal value (anomaly codes only).
fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Found { etat, .. } => format!("found {}", etat.as_str()),
        Outcome::NotFound => "not found".into(),
        Outcome::Created { .. } => "created".into(),
        Outcome::AlreadyExists { .. } => "already exists".into(),
        Outcome::Accepted => "accepted".into(),
        Outcome::Rejected { anomalies } => format!(
            "rejected: {}",
            anomalies
                .iter()
                .map(|a| a.code.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Outcome::StateConflict => "state conflict (AG-ETAT)".into(),
        Outcome::Transient { reason, .. } => format!("transient: {reason}"),
        Outcome::Unexpected { status, .. } => format!("unexpected status {status}"),
    }
}
