//! The run of one backfill lot (*lot de reprise*) through AGORA's `POST /reprises`.
//!
//! A lot task names a lot key. If the ledger has no such lot, the task forms one from the
//! claimable backfill dossiers ([`LotLedger::claim_lot`](crate::ledger::LotLedger::claim_lot));
//! otherwise it resumes it where its checkpoint says:
//!
//! - `Claimed`, freshly: each member's line is built and the lot submitted;
//! - `Claimed`, found so after a crash or an ambiguous failure (5xx, timeout, dropped connection):
//!   whether AGORA took the lot is unknown, so each member is **searched** first; those AGORA
//!   holds are settled from the search, only the others are submitted — nothing is sent twice;
//! - `Submitted`: AGORA's lot id is known, so its report is polled, never the lot resent;
//! - `Done`: nothing left.
//!
//! One runner per lot, whatever the number of processes: a lease on `lot:{key}` in the ledger,
//! renewed before each call to AGORA (each search, each report poll, each submission) for as long
//! as that call may take, plus a margin ([`LeaseGuard::before_call`]). A runner that finds its lease lapsed (another may have taken the
//! lot over since) stops at once: two runners searching the same lot would both send it.
//!
//! A `413` halves the lot size for the rest of the run; a `429` waits its `Retry-After`; a `422`
//! on the lot as a whole dead-letters its members with AGORA's anomalies. Once a lot is done,
//! another lot task is published if dossiers are still claimable, so a run drains without anyone
//! watching. What a lot's member is, and how lots are sized and paced, is the backfill's lot
//! policy ([`crate::backfill::lots`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use passerelle_adapters::agora::{Outcome, RepriseLot, TransientReason};
use passerelle_adapters::planner::{target, Operation, Target};
use tracing::{info, warn};

use super::lease::{is_lease_lost, LeaseGuard};
use super::{TaskEnd, Worker, WorkerError};
use crate::backfill::lots::{prepare, Candidate, Prepared};
use crate::clients::agora::{outcome_kind, LotFailure};
use crate::ledger::{DeadReason, DeliveryStatus, DossierRow, LotLine, LotRow, LotState, AGORA};
use crate::queue::{Flow, Task};

/// Searches AGORA runs at once when a lot is in doubt.
const SEARCH_CONCURRENCY: usize = 16;

/// The version of an [`LotLine::Accepted`] that only records what AGORA was found holding: no
/// desired version equals it, so the delivery stays pending for what is still owed.
const REACHED_ONLY: i64 = -1;

/// Dossiers read from the ledger at once while a lot is prepared, searched or settled: a lot's
/// memory stays that of its NDJSON body, whatever its size.
const CHUNK: usize = 500;

impl Worker {
    /// Delivers (or forms) lot `key`; one runner at a time per lot.
    pub(crate) async fn deliver_lot(&self, key: &str) -> Result<TaskEnd, WorkerError> {
        let holder = format!("{}/{}", self.id, uuid::Uuid::now_v7());
        let lease_key = format!("lot:{key}");
        let lease = self
            .ledger
            .try_lease(&lease_key, &holder, self.lease_ttl)
            .await?;
        if !lease.is_held() {
            // Its runner is alive and finishes it; `passerelle backfill` re-drives stalled lots.
            return Ok(TaskEnd::LeaseBusy);
        }
        let runner = LotRunner {
            w: self,
            key,
            guard: LeaseGuard {
                ledger: self.ledger.as_ref(),
                key: &lease_key,
                holder: &holder,
                ttl: self.lease_ttl,
            },
        };
        let end = match crate::ledger::fence::scope(runner.guard.fence(), runner.run()).await {
            // Not ours any more: nothing to release, and no failure to retry.
            Err(e) if is_lease_lost(&e) => {
                warn!(
                    lot = key,
                    "the lot's lease lapsed while running it: left to its next runner"
                );
                return Ok(TaskEnd::LeaseBusy);
            }
            end => end,
        };
        let released = if end.is_ok() {
            self.ledger.release(&lease_key, &holder).await
        } else {
            self.ledger
                .try_lease(&lease_key, &holder, Duration::ZERO)
                .await
                .map(|_| ())
        };
        if let Err(e) = released {
            warn!(error = %e, "cannot release a lot's lease; it expires by itself");
        }
        end
    }
}

struct LotRunner<'a> {
    w: &'a Worker,
    key: &'a str,
    guard: LeaseGuard<'a>,
}

impl LotRunner<'_> {
    async fn run(&self) -> Result<TaskEnd, WorkerError> {
        let (lot, fresh) = match self.w.ledger.lot(self.key).await? {
            Some(lot) => (lot, false),
            None => {
                let size = i64::try_from(self.w.lots.lot_size()).unwrap_or(i64::MAX);
                match self.w.ledger.claim_lot(AGORA, self.key, size).await? {
                    Some(lot) => (lot, true),
                    None => return Ok(TaskEnd::NothingOwed),
                }
            }
        };
        let end = match lot.state {
            LotState::Done => return Ok(TaskEnd::Delivered),
            LotState::Submitted => {
                let agora_lot = lot.agora_lot.clone().unwrap_or_default();
                info!(lot = self.key, agora_lot = %agora_lot, "resuming a submitted lot: polling its report");
                self.poll_and_settle(&lot, &agora_lot).await?
            }
            LotState::Claimed => self.submit(&lot, !fresh).await?,
        };
        // Keep the backfill draining: another lot after this one. Counting what is claimable
        // first would scan the ledger after every lot (seconds at a million dossiers); the next
        // lot's claim finds out as well, and the chain ends there (`NothingOwed`).
        let next = Task::lot(uuid::Uuid::now_v7().to_string());
        self.w.queue.publish(Flow::Backfill, &next).await?;
        Ok(end)
    }

    async fn renew_for(&self, extra: Duration) -> Result<(), WorkerError> {
        self.guard.renew_for(extra).await
    }

    /// Renews the lease for one call to AGORA (its timeout, plus the guard's margin).
    async fn before_call(&self) -> Result<(), WorkerError> {
        self.guard.before_call(self.w.agora.request_timeout()).await
    }

    /// Settles `lines` (the lot stays open unless `done`) and gives each member still owed a task
    /// of its own.
    async fn settle(&self, lines: &[LotLine], done: bool) -> Result<(), WorkerError> {
        if lines.is_empty() && !done {
            return Ok(());
        }
        self.renew_for(Duration::ZERO).await?;
        let pending = self.w.ledger.settle_lot(self.key, lines, done).await?;
        for (i, id) in pending.into_iter().enumerate() {
            // Thousands of confirmed publishes may outlast the lease: keep it.
            if i > 0 && i % CHUNK == 0 {
                self.renew_for(Duration::ZERO).await?;
            }
            self.w
                .queue
                .publish(Flow::Backfill, &Task::dossier(id, None))
                .await?;
        }
        Ok(())
    }

    /// Reads `ids` from the ledger a chunk at a time, in their order.
    async fn rows_in_chunks(
        &self,
        ids: &[String],
        mut each: impl FnMut(DossierRow),
    ) -> Result<(), WorkerError> {
        for chunk in ids.chunks(CHUNK) {
            // Reading and encoding a lot of ten thousand takes longer than a short lease when the
            // ledger is busy (a backfill importing beside it): renewed a chunk at a time, the
            // lease still holds when the lot is submitted, and a lapse is found before the work.
            self.renew_for(Duration::ZERO).await?;
            let mut rows: HashMap<String, DossierRow> = self
                .w
                .ledger
                .dossiers(chunk)
                .await?
                .into_iter()
                .map(|r| (r.dossier_id.clone(), r))
                .collect();
            for id in chunk {
                if let Some(row) = rows.remove(id) {
                    each(row);
                }
            }
        }
        Ok(())
    }

    /// Encodes the lines of `candidates` (at most the lot size) into a lot body; those beyond it,
    /// or changed meanwhile, are returned to be released.
    async fn build(
        &self,
        candidates: &mut Vec<Candidate>,
    ) -> Result<(RepriseLot, Vec<LotLine>), WorkerError> {
        let size = self.w.lots.lot_size();
        let mut released = Vec::new();
        if candidates.len() > size {
            released.extend(
                candidates
                    .split_off(size)
                    .into_iter()
                    .map(|c| LotLine::Released {
                        dossier_id: c.dossier_id,
                    }),
            );
        }
        let versions: HashMap<String, i64> = candidates
            .iter()
            .map(|c| (c.dossier_id.clone(), c.version))
            .collect();
        let ids: Vec<String> = candidates.iter().map(|c| c.dossier_id.clone()).collect();
        let mut reprise = RepriseLot::new();
        let mut kept = Vec::with_capacity(candidates.len());
        self.rows_in_chunks(&ids, |row| {
            let version = versions.get(&row.dossier_id).copied().unwrap_or(-1);
            let id = row.dossier_id.clone();
            match prepare(row, version, Some(&mut reprise)) {
                Prepared::Line(c) => kept.push(c),
                _ => released.push(LotLine::Released { dossier_id: id }),
            }
        })
        .await?;
        *candidates = kept;
        Ok((reprise, released))
    }

    /// Builds the members' lines and submits them; `in_doubt`: AGORA may already hold them.
    async fn submit(&self, lot: &LotRow, mut in_doubt: bool) -> Result<TaskEnd, WorkerError> {
        let ids: Vec<String> = lot.members.iter().map(|m| m.dossier_id.clone()).collect();
        let versions: HashMap<&str, i64> = lot
            .members
            .iter()
            .map(|m| (m.dossier_id.as_str(), m.desired_version))
            .collect();
        let mut settled = Vec::new();
        let mut candidates = Vec::new();
        let mut incomplete = Vec::new();
        // A lot sure not to have reached AGORA is encoded as its rows are read: one read, not
        // two. One in doubt is searched first and encoded afterwards by `build`.
        let size = self.w.lots.lot_size();
        let mut prebuilt = (!in_doubt).then(RepriseLot::new);
        self.rows_in_chunks(&ids, |row| {
            if row.lot.as_deref() != Some(self.key) {
                return;
            }
            let version = versions.get(row.dossier_id.as_str()).copied().unwrap_or(-1);
            let id = row.dossier_id.clone();
            let full = prebuilt.as_ref().is_some_and(|l| l.len() >= size);
            let into = prebuilt.as_mut().filter(|_| !full);
            match prepare(row, version, into) {
                // Beyond the lot size (halved since the claim): back for a later lot.
                Prepared::Line(_) if full => settled.push(LotLine::Released { dossier_id: id }),
                Prepared::Line(c) => candidates.push(c),
                Prepared::Settled(line) => settled.push(line),
                Prepared::Incomplete(id, version, missing) => {
                    incomplete.push((id, version, missing))
                }
            }
        })
        .await?;
        for (id, version, missing) in incomplete {
            self.w
                .ledger
                .settle_delivery(&id, AGORA, DeliveryStatus::Incomplete, version, &missing)
                .await?;
            settled.push(LotLine::Released { dossier_id: id });
        }
        self.settle(&settled, false).await?;
        let mut attempts = 0u32;
        loop {
            if in_doubt {
                candidates = self.search_first(candidates).await?;
                in_doubt = false;
            }
            let (reprise, released) = match prebuilt.take() {
                Some(reprise) => (reprise, Vec::new()),
                None => self.build(&mut candidates).await?,
            };
            self.settle(&released, false).await?;
            if candidates.is_empty() {
                self.settle(&[], true).await?;
                return Ok(TaskEnd::Delivered);
            }
            let lines = reprise.len();
            let bytes = Bytes::from(reprise.into_bytes());
            // The lease outlasts each wait for the lot's turn and then the submission, however
            // long AGORA takes to answer: no other runner finds the lot in doubt meanwhile.
            while let Some(wait) = self.w.lots.throttle.try_take(lines) {
                self.renew_for(wait + self.w.agora.request_timeout())
                    .await?;
                tokio::time::sleep(wait).await;
            }
            self.before_call().await?;
            let started = Instant::now();
            match self.w.agora.submit_lot(bytes).await {
                Ok(agora_lot) => {
                    self.w.ledger.lot_submitted(self.key, &agora_lot).await?;
                    info!(lot = self.key, agora_lot = %agora_lot, lines, ms = started.elapsed().as_millis() as u64, "lot submitted");
                    let lot = self
                        .w
                        .ledger
                        .lot(self.key)
                        .await?
                        .unwrap_or_else(|| lot.clone());
                    return self.poll_and_settle(&lot, &agora_lot).await;
                }
                Err(LotFailure::TooLarge) => {
                    let size = self.w.lots.halve(lines);
                    warn!(
                        lot = self.key,
                        lines,
                        now = size,
                        "AGORA refused the lot as too large (413); lots are halved"
                    );
                }
                Err(LotFailure::Failed(Outcome::Rejected { anomalies })) => {
                    warn!(lot = self.key, codes = ?anomalies.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(), "AGORA rejected the lot as a whole");
                    let dead: Vec<LotLine> = candidates
                        .iter()
                        .map(|c| LotLine::Dead {
                            dossier_id: c.dossier_id.clone(),
                            reason: DeadReason::Rejected {
                                anomalies: anomalies.clone(),
                            },
                        })
                        .collect();
                    self.settle(&dead, true).await?;
                    return Ok(TaskEnd::DeadLettered("agora.lot_rejected".into()));
                }
                Err(LotFailure::Failed(outcome)) => {
                    attempts += 1;
                    let (retry_after, refused_at_door) = match &outcome {
                        Outcome::Transient {
                            retry_after,
                            reason,
                        } => (*retry_after, matches!(reason, TransientReason::RateLimited)),
                        _ => (None, false),
                    };
                    // A 429 refused the lot at the door; anything else may have taken effect.
                    in_doubt = !refused_at_door;
                    if attempts >= self.w.retry.max_attempts {
                        let (last_error, status) = failure_of(&outcome);
                        warn!(lot = self.key, attempts, error = %last_error, "the lot could not be submitted; its members go to the dead letters");
                        let dead: Vec<LotLine> = candidates
                            .iter()
                            .map(|c| LotLine::Dead {
                                dossier_id: c.dossier_id.clone(),
                                reason: DeadReason::Exhausted {
                                    last_error: last_error.clone(),
                                    status,
                                },
                            })
                            .collect();
                        // In doubt still: search once more, so what AGORA took is not dead.
                        let remaining = self.search_first(candidates).await?;
                        let remaining: std::collections::HashSet<String> =
                            remaining.into_iter().map(|c| c.dossier_id).collect();
                        let dead: Vec<LotLine> = dead
                            .into_iter()
                            .filter(|l| remaining.contains(l.dossier_id()))
                            .collect();
                        self.settle(&dead, true).await?;
                        return Ok(TaskEnd::DeadLettered(
                            DeadReason::Exhausted { last_error, status }.code(),
                        ));
                    }
                    let delay = self.w.retry.delay(attempts - 1, retry_after);
                    info!(
                        lot = self.key,
                        attempts,
                        delay_ms = delay.as_millis() as u64,
                        outcome = outcome_kind(&outcome),
                        "lot submission failed; retrying"
                    );
                    // Held through the wait: a lapse would make another runner search it all.
                    self.renew_for(delay).await?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Searches each candidate: those AGORA holds in the state they are owed are settled as
    /// accepted; those it holds in another state are recorded as reached there and handed to a
    /// per-dossier task (which sends only what is still owed); the others are returned, to be
    /// sent. A search that fails transiently is tried again: a member AGORA may hold is never
    /// put back among the claimable dossiers, where a later lot would send it a second time.
    async fn search_first(
        &self,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, WorkerError> {
        if candidates.is_empty() {
            return Ok(candidates);
        }
        info!(
            lot = self.key,
            members = candidates.len(),
            "the lot may have reached AGORA: searching its members first"
        );
        let mut answers: Vec<(Candidate, Option<Outcome>)> = Vec::with_capacity(candidates.len());
        for chunk in candidates.chunks(CHUNK) {
            let ids: Vec<String> = chunk.iter().map(|c| c.dossier_id.clone()).collect();
            let rows: HashMap<String, DossierRow> = self
                .w
                .ledger
                .dossiers(&ids)
                .await?
                .into_iter()
                .map(|r| (r.dossier_id.clone(), r))
                .collect();
            let agora = &self.w.agora;
            let rows = &rows;
            let mut outcomes: Vec<Option<Outcome>> = vec![None; chunk.len()];
            let mut todo: Vec<usize> = (0..chunk.len()).collect();
            let mut attempts = 0u32;
            while !todo.is_empty() {
                // Searches send nothing: the lease is renewed once per round of the chunk, for
                // as long as that round may take at this concurrency.
                let rounds =
                    u32::try_from(todo.len().div_ceil(SEARCH_CONCURRENCY)).unwrap_or(u32::MAX);
                self.guard
                    .before_call(self.w.agora.request_timeout().saturating_mul(rounds))
                    .await?;
                let found: Vec<(usize, Option<Outcome>)> = stream::iter(todo.iter().copied())
                    .map(|i| async move {
                        let c = &chunk[i];
                        let outcome = match rows.get(&c.dossier_id) {
                            Some(row) => agora
                                .perform(Operation::Search, &c.dossier_id, &row.desired, None)
                                .await
                                .ok(),
                            None => None,
                        };
                        (i, outcome)
                    })
                    .buffer_unordered(SEARCH_CONCURRENCY)
                    .collect()
                    .await;
                todo.clear();
                let mut wait = None;
                for (i, outcome) in found {
                    if let Some(Outcome::Transient { retry_after, .. }) = &outcome {
                        todo.push(i);
                        wait = wait.max(*retry_after);
                    }
                    outcomes[i] = outcome;
                }
                attempts += 1;
                if todo.is_empty() || attempts >= self.w.retry.max_attempts {
                    break;
                }
                let delay = self.w.retry.delay(attempts - 1, wait);
                self.renew_for(delay).await?;
                tokio::time::sleep(delay).await;
            }
            answers.extend(chunk.iter().cloned().zip(outcomes));
        }
        let mut keep = Vec::new();
        let mut settled = Vec::new();
        for (c, outcome) in answers {
            match outcome {
                Some(Outcome::NotFound) => keep.push(c),
                Some(Outcome::Found { numero_agora, etat }) => {
                    // In another state than this line's: what AGORA holds is recorded, and the
                    // status stays pending (no version matches `REACHED_ONLY`), so the
                    // per-dossier task sends what is still owed.
                    let version = if etat == c.etat {
                        c.version
                    } else {
                        REACHED_ONLY
                    };
                    settled.push(LotLine::Accepted {
                        dossier_id: c.dossier_id,
                        numero_agora,
                        state: etat,
                        version,
                    });
                }
                // Still failing after every attempt, or not searchable at all: an operator looks
                // (a replay searches again).
                Some(other) => {
                    let (last_error, status) = failure_of(&other);
                    settled.push(LotLine::Dead {
                        dossier_id: c.dossier_id,
                        reason: DeadReason::Exhausted { last_error, status },
                    });
                }
                None => settled.push(LotLine::Dead {
                    dossier_id: c.dossier_id,
                    reason: DeadReason::Irreconcilable {
                        detail: "the dossier cannot be searched in AGORA".to_string(),
                    },
                }),
            }
        }
        self.settle(&settled, false).await?;
        Ok(keep)
    }

    /// Polls the report until `TERMINE`, then settles every member from it.
    async fn poll_and_settle(&self, lot: &LotRow, agora_lot: &str) -> Result<TaskEnd, WorkerError> {
        let patience = (self.w.lease_ttl / 3).max(Duration::from_secs(1));
        let report = loop {
            // One wait for the report polls it for up to `patience`, each poll within its timeout.
            self.guard
                .before_call(patience + self.w.agora.request_timeout())
                .await?;
            match self
                .w
                .agora
                .wait_for_report(agora_lot, self.w.lots.poll_every, patience)
                .await
            {
                Ok(report) => break report,
                Err(e) if e.is_transient() => continue,
                Err(e) => {
                    // AGORA does not know the lot (or answers nonsense): what it holds is found
                    // by searching, and the rest goes into a later lot.
                    warn!(lot = self.key, agora_lot, error = ?e, "the lot's report cannot be read; its members are searched");
                    let ids: Vec<String> =
                        lot.members.iter().map(|m| m.dossier_id.clone()).collect();
                    let versions: HashMap<&str, i64> = lot
                        .members
                        .iter()
                        .map(|m| (m.dossier_id.as_str(), m.desired_version))
                        .collect();
                    let mut candidates = Vec::new();
                    self.rows_in_chunks(&ids, |r| {
                        if r.lot.as_deref() != Some(self.key) {
                            return;
                        }
                        let v = versions.get(r.dossier_id.as_str()).copied().unwrap_or(-1);
                        if let Prepared::Line(c) = prepare(r, v, None) {
                            candidates.push(c);
                        }
                    })
                    .await?;
                    self.search_first(candidates).await?;
                    self.settle(&[], true).await?;
                    return Ok(TaskEnd::Delivered);
                }
            }
        };
        let versions: HashMap<&str, i64> = lot
            .members
            .iter()
            .map(|m| (m.dossier_id.as_str(), m.desired_version))
            .collect();
        let mut lines = Vec::with_capacity(report.compte_rendu.len());
        let (mut accepted, mut rejected) = (0usize, 0usize);
        for chunk in report.compte_rendu.chunks(CHUNK) {
            let ids: Vec<String> = chunk
                .iter()
                .filter(|l| versions.contains_key(l.reference.as_str()))
                .map(|l| l.reference.clone())
                .collect();
            // What each member's desired state is now: only its version and target matter.
            let now: HashMap<String, (i64, Target)> = self
                .w
                .ledger
                .dossiers(&ids)
                .await?
                .into_iter()
                .map(|r| (r.dossier_id, (r.desired_version, target(r.desired.state))))
                .collect();
            for l in chunk {
                let Some(&version) = versions.get(l.reference.as_str()) else {
                    continue;
                };
                let line = match (&l.numero_agora, now.get(&l.reference)) {
                    (Some(numero_agora), Some(&(v, Target::State(state)))) if v == version => {
                        accepted += 1;
                        LotLine::Accepted {
                            dossier_id: l.reference.clone(),
                            numero_agora: numero_agora.clone(),
                            state,
                            version,
                        }
                    }
                    // Changed since it was sent: a per-dossier task searches and finishes it.
                    (Some(_), _) => LotLine::Released {
                        dossier_id: l.reference.clone(),
                    },
                    (None, _) => {
                        rejected += 1;
                        LotLine::Dead {
                            dossier_id: l.reference.clone(),
                            reason: DeadReason::Rejected {
                                anomalies: l.anomalies.clone(),
                            },
                        }
                    }
                };
                lines.push(line);
            }
        }
        self.settle(&lines, true).await?;
        info!(lot = self.key, agora_lot, accepted, rejected, "lot settled");
        Ok(TaskEnd::Delivered)
    }
}

fn failure_of(outcome: &Outcome) -> (String, Option<u16>) {
    match outcome {
        Outcome::Transient { reason, .. } => (
            reason.to_string(),
            match reason {
                TransientReason::RateLimited => Some(429),
                TransientReason::RequestTimeout => Some(408),
                TransientReason::ServerError(s) => Some(*s),
                TransientReason::Transport(_) => None,
            },
        ),
        Outcome::Unexpected { status, detail } => (detail.clone(), Some(*status)),
        other => (format!("{other:?}"), None),
    }
}
