//! The run of one dossier: under its lease, the ledger's desired state is compared with what
//! AGORA was last seen holding, and the operations still owed are performed one at a time, each
//! answer recorded (with the return it owes ATEXO SEM) before the next call.

use std::time::Duration;

use passerelle_adapters::agora::{self, Outcome, TransientReason};
use passerelle_adapters::atexo_sem::{encode_return, AgoraReturn};
use passerelle_adapters::canonical::System;
use passerelle_adapters::planner::{self, AgoraState, Delivered, Operation};
use rand::Rng;
use tracing::{info, warn};

use super::lease::{self, LeaseGuard};
use super::{TaskEnd, Worker, WorkerError};
use crate::ledger::outbox::PendingReturn;
use crate::ledger::{DeadReason, DeliveryStatus, Lease, OperationRecord, AGORA};
use crate::queue::{Flow, Task};

/// The most operations one task performs before it yields (a guard against ping-pong with AGORA).
const MAX_STEPS: usize = 16;

impl Worker {
    /// Reconciles one dossier: the heart of the relay.
    pub async fn reconcile(&self, lane: Flow, task: &Task) -> Result<TaskEnd, WorkerError> {
        // A lot's task never comes here (it has no dossier): its id reads as the empty one.
        let id = task.dossier_id().unwrap_or_default();
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
        let guard = LeaseGuard {
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
        lane: Flow,
        task: &Task,
        in_doubt: bool,
        guard: &LeaseGuard<'_>,
    ) -> Result<TaskEnd, WorkerError> {
        let id = task.dossier_id().unwrap_or_default();
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
