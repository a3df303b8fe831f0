//! The consume loop of a lane, and the settling of each delivery with the queue: a task that
//! ended is acknowledged; one interrupted by an outage of the ledger or the queue goes back after
//! a delay; one past the queue's delivery limit is a poison, dead-lettered with its dossier.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tracing::{warn, Instrument};

use super::retry::requeue_delay;
use super::{TaskEnd, Worker, WorkerError};
use crate::ledger::{DeadReason, AGORA};
use crate::queue::{Delivery, Flow, Target, Task, DELIVERY_LIMIT};

impl Worker {
    /// Consumes a lane until `shutdown` is signalled, with at most `concurrency` tasks in flight;
    /// waits for those in flight before returning.
    pub async fn run(
        self,
        lane: Flow,
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
    pub async fn handle(&self, lane: Flow, delivery: Delivery) {
        let Delivery {
            task,
            acker,
            deliveries,
            ..
        } = delivery;
        let span = tracing::info_span!(
            "reconcile",
            dossier_id = %task.dossier_id().unwrap_or_default(),
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
        let result = match &task.target {
            Target::Lot { key } => self.deliver_lot(key).instrument(span.clone()).await,
            Target::Dossier { .. } => {
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
                    self.metrics.task_end(end.label());
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
        lane: Flow,
        task: &Task,
        returns: u32,
        acker: Box<dyn crate::queue::Acker>,
    ) {
        let Some(id) = task.dossier_id().filter(|id| !id.is_empty()) else {
            // No dossier to dead-letter: the queue's own dead letters keep it.
            warn!(
                returns,
                "a lot task keeps failing; set aside in the queue's dead letters"
            );
            if let Err(e) = acker.dead_letter().await {
                warn!(error = %e, "cannot set a poison task aside; the queue's limit will");
            }
            return;
        };
        let reason = DeadReason::Poison { returns };
        // Under the dossier's lease, fenced like every worker write: a run of the same dossier
        // still under way elsewhere (a newer task) is not overwritten by this copy's verdict.
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
                self.metrics.task_end(TaskEnd::LeaseBusy.label());
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
        let dead =
            crate::ledger::fence::scope(fence, self.ledger.dead_letter(id, AGORA, &reason)).await;
        if let Err(e) = self.ledger.release(id, &holder).await {
            warn!(error = %e, "cannot release a lease; it expires by itself");
        }
        match dead {
            Ok(dl) => {
                warn!(dead_letter = %dl, returns, "a task that keeps failing was dead-lettered (poison)");
                self.metrics
                    .task_end(TaskEnd::DeadLettered(reason.code()).label());
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
}
