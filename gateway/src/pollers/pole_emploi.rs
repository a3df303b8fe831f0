//! The Pôle emploi poller (contract §2.3): every `pole_emploi.poll_interval_s`, the registrations
//! (AIS, and AES once received) of every session the ledger's dossiers are on, merged into those
//! dossiers.
//!
//! - **Which sessions.** Those of in-perimeter dossiers whose desired state Pôle emploi's news can
//!   still move ([`OPEN_STATES`]: prescribed to entered; past entry, or refused or cancelled, a
//!   registration changes nothing AGORA is owed), polled `pole_emploi.concurrency` at a time.
//! - **Which dossier.** A registration is decoded by the adapter (ICR→registered, ICA/ICN→refused,
//!   PFR→prescribed, an AES→entered on `dateEntree`) into a single-source record whose key (NIR-13,
//!   `numeroSession`) gives the dossier id, as for every source. Only dossiers the ledger knows are
//!   fed: the other trainees of a session are not the Region's to report, and should the Region's
//!   dossier arrive later, the next poll finds it. A trainee with several registrations on the
//!   session is represented by one: the AES first, then the most advanced status.
//! - **Only changes.** A registration equal to the Pôle emploi record the ledger holds for that
//!   dossier is left alone: a poll that sees nothing new writes nothing and publishes nothing.
//!   Otherwise it goes through [`intake::accept_and_publish`] (the inbound routes' own path), the
//!   translation core's merge precedence decides, and a task is published only when the merged
//!   dossier changed. Each accepted change is one journal entry of source `pole_emploi`, with the
//!   registration masked (NIR and job-seeker ids) when payloads are kept.
//! - **Replicas.** Each replica polls every session on its own: a change two of them see is
//!   merged once; the second merge changes nothing and publishes nothing (one more journal entry).
//! - **Unreadable registrations.** A registration the adapter cannot read is left out of the
//!   merge but does not vanish: it is counted (`pole_emploi_registrations{outcome="invalid",
//!   rule}`), kept masked in the ledger with its violations for an operator
//!   (`GET /v1/unreadable`), and when many of a round's registrations were unreadable `/readyz`
//!   reports Pôle emploi as degraded ([`PollHealth`]), without gating readiness.
//! - **Failures.** The client retries what is transient within the poll; a poll that still fails
//!   is logged and counted, and the session is polled again at the next interval. A registration
//!   the ledger refuses (a lifecycle move it does not allow) is remembered and not offered again
//!   until the dossier changes, so that one warning is written, not one per poll.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use futures_util::StreamExt;
use passerelle_adapters::canonical::{Dossier, RegistrationStatus, State, System};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::pole_emploi::mask::mask_unreadable;
use passerelle_adapters::pole_emploi::{decode_registrations, SessionRef};
use passerelle_adapters::rules::RuleSettings;
use passerelle_adapters::Violation;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::clients::pole_emploi::{PoleEmploiError, RegistrationSource};
use crate::intake::{self, IntakeError, Publish};
use crate::ledger::{Flow, Inbound, InboundRecord, Ledger, Unreadable};
use crate::metrics::Metrics;
use crate::queue::Queue;

/// The `pole_emploi` section of the settings: the partner API's client and this poller are built
/// from it ([`crate::startup`]).
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoleEmploiSettings {
    /// OAuth2 server; polling is off when `api_url` is empty.
    pub auth_url: String,
    /// Partner API base URL.
    pub api_url: String,
    /// OAuth2 client id (client credentials grant, `realm=/partenaire`).
    pub client_id: String,
    /// OAuth2 client secret.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::Secret>")]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub client_secret_file: Option<PathBuf>,
    /// OAuth2 scopes asked for, space-separated.
    pub scope: String,
    /// Seconds between two polls of the same session.
    pub poll_interval_s: u64,
    /// Sessions polled at once.
    pub concurrency: u16,
    /// Time allowed to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// Time allowed for a whole call, ms.
    pub request_timeout_ms: u64,
}

/// The desired states whose sessions are polled.
pub const OPEN_STATES: [State; 4] = [
    State::Prescribed,
    State::Registered,
    State::Validated,
    State::Entered,
];

/// The share of a round's registrations past which Pôle emploi is reported degraded: one in
/// ten unreadable is no longer a stray record but a change on Pôle emploi's side (a type, a
/// field) that leaves trainees out of AGORA.
pub const DEGRADED_SHARE: f64 = 0.1;

/// What the rounds of polls read, for `/readyz` (reported, never gating).
#[derive(Debug, Default)]
pub struct PollHealth {
    current: RoundCounts,
    last: Mutex<Option<(DateTime<Utc>, RoundSnapshot)>>,
}

#[derive(Debug, Default)]
struct RoundCounts {
    sessions: AtomicU64,
    failed_polls: AtomicU64,
    unreadable_answers: AtomicU64,
    registrations: AtomicU64,
    unreadable: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RoundSnapshot {
    sessions: u64,
    failed_polls: u64,
    unreadable_answers: u64,
    registrations: u64,
    unreadable: u64,
}

impl RoundCounts {
    fn take(&self) -> RoundSnapshot {
        let t = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        RoundSnapshot {
            sessions: t(&self.sessions),
            failed_polls: t(&self.failed_polls),
            unreadable_answers: t(&self.unreadable_answers),
            registrations: t(&self.registrations),
            unreadable: t(&self.unreadable),
        }
    }
}

impl PollHealth {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Closes the round: what it read becomes what `/readyz` reports.
    fn end_round(&self) {
        let snapshot = self.current.take();
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Utc::now(), snapshot));
        }
    }

    /// Pôle emploi's part of the `/readyz` body: `waiting` before the first round, `degraded`
    /// when an answer, or at least [`DEGRADED_SHARE`] of the registrations, could not be read.
    pub fn report(&self) -> Value {
        let last = self.last.lock().ok().and_then(|l| *l);
        let Some((at, r)) = last else {
            return serde_json::json!({"status": "waiting", "detail": "no round of polls has ended yet"});
        };
        let share = if r.registrations == 0 {
            0.0
        } else {
            r.unreadable as f64 / r.registrations as f64
        };
        let degraded = r.unreadable_answers > 0 || (r.unreadable > 0 && share >= DEGRADED_SHARE);
        let mut body = serde_json::json!({
            "status": if degraded { "degraded" } else { "ok" },
            "last_round": {
                "ended_at": at,
                "sessions": r.sessions,
                "failed_polls": r.failed_polls,
                "unreadable_answers": r.unreadable_answers,
                "registrations": r.registrations,
                "unreadable_registrations": r.unreadable,
            },
        });
        if degraded {
            body["detail"] = Value::String(format!(
                "{} of {} registrations and {} answers of the last round could not be read; \
                 they are listed by GET /v1/unreadable",
                r.unreadable, r.registrations, r.unreadable_answers
            ));
        }
        body
    }
}

/// How the poller works (settings section `pole_emploi`, and what it shares with the API).
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    /// Sessions polled at once.
    pub concurrency: usize,
    pub precedence: Precedence,
    pub rules: RuleSettings,
    /// The installation's salt of dossier ids (`Credentials::dossier_salt`).
    pub dossier_salt: SecretString,
    /// Whether masked registrations are kept in the journal (`ledger.payload_retention_days`).
    pub keep_payloads: bool,
}

/// How one poll of one session ended (the `outcome` label of `pole_emploi_polls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Read and merged; `changed` dossiers got a new version (and a task).
    Ok { changed: usize },
    /// `400`, `403` or another answer asking again would not change.
    Refused,
    /// `401` from the token call, or again after a fresh token.
    Unauthorized,
    /// Transient failures outlasted `retry.max_attempts`.
    Exhausted,
    /// The answer (or the token answer) is not what the contract says.
    Unreadable,
    /// The ledger or the queue failed: what was committed stays, the rest waits for the next poll.
    Unavailable,
}

impl PollOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PollOutcome::Ok { .. } => "ok",
            PollOutcome::Refused => "refused",
            PollOutcome::Unauthorized => "unauthorized",
            PollOutcome::Exhausted => "exhausted",
            PollOutcome::Unreadable => "unreadable",
            PollOutcome::Unavailable => "unavailable",
        }
    }
}

/// What offering one registration to the ledger gave.
enum Offered {
    Changed,
    MergedUnchanged,
    Refused,
    Unavailable,
}

/// The poller: cheap to clone, one per process.
#[derive(Clone)]
pub struct PoleEmploiPoller {
    ledger: Arc<dyn Ledger>,
    queue: Arc<dyn Queue>,
    source: Arc<dyn RegistrationSource>,
    settings: Arc<PollSettings>,
    metrics: Arc<Metrics>,
    /// Digests of (dossier, its desired version, registration) the ledger refused.
    refused: Arc<Mutex<HashSet<[u8; 32]>>>,
    health: Arc<PollHealth>,
}

impl std::fmt::Debug for PoleEmploiPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoleEmploiPoller")
            .field("interval", &self.settings.interval)
            .field("concurrency", &self.settings.concurrency)
            .finish_non_exhaustive()
    }
}

impl PoleEmploiPoller {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        queue: Arc<dyn Queue>,
        source: Arc<dyn RegistrationSource>,
        settings: PollSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            ledger,
            queue,
            source,
            settings: Arc::new(settings),
            metrics,
            refused: Arc::default(),
            health: Arc::default(),
        }
    }

    /// What the rounds read, for `/readyz`.
    pub fn health(&self) -> Arc<PollHealth> {
        self.health.clone()
    }

    /// Polls every interval until `shutdown`; a poll in flight is abandoned then (what it
    /// committed stays committed; the sweeper publishes what it had not).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!(
            interval_s = self.settings.interval.as_secs_f64(),
            concurrency = self.settings.concurrency,
            "polling Pôle emploi"
        );
        let mut ticker = tokio::time::interval(self.settings.interval);
        // A round longer than the interval delays the next one rather than bunching them.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.poll_all() => {}
            }
        }
    }

    /// One round: every open session once, `concurrency` at a time.
    pub async fn poll_all(&self) -> Vec<PollOutcome> {
        let sessions = match self.ledger.sessions(&OPEN_STATES).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot list the sessions to poll; trying again next round");
                self.metrics.pe_poll(PollOutcome::Unavailable.as_str());
                return vec![PollOutcome::Unavailable];
            }
        };
        // Owned sessions: a closure over borrowed ones is too general a future for `tokio::spawn`.
        let outcomes = futures_util::stream::iter(sessions)
            .map(|s| async move { self.poll_session(&s).await })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        self.health.end_round();
        outcomes
    }

    /// Polls one session and merges what changed.
    pub async fn poll_session(&self, session: &SessionRef) -> PollOutcome {
        let poll_id = uuid::Uuid::now_v7().to_string();
        let span = tracing::info_span!(
            "pole_emploi_poll",
            poll_id = %poll_id,
            numero_session = %session.numero_session
        );
        let outcome = self.poll(session, &poll_id).instrument(span).await;
        self.metrics.pe_poll(outcome.as_str());
        let h = &self.health.current;
        PollHealth::add(&h.sessions, 1);
        match outcome {
            PollOutcome::Ok { .. } => {}
            PollOutcome::Unreadable => PollHealth::add(&h.unreadable_answers, 1),
            _ => PollHealth::add(&h.failed_polls, 1),
        }
        outcome
    }

    async fn poll(&self, session: &SessionRef, poll_id: &str) -> PollOutcome {
        let body = match self.source.registrations(session).await {
            Ok(body) => body,
            Err(e) => {
                let outcome = match &e {
                    PoleEmploiError::Transient { .. } => PollOutcome::Exhausted,
                    PoleEmploiError::Unauthorized { .. } => PollOutcome::Unauthorized,
                    PoleEmploiError::Refused { .. } => PollOutcome::Refused,
                    PoleEmploiError::Unreadable { .. } => PollOutcome::Unreadable,
                };
                warn!(
                    status = e.status(),
                    code_erreur = e.code().unwrap_or(""),
                    error = %e,
                    "the session could not be polled; it is polled again next round"
                );
                return outcome;
            }
        };
        let decoded = match decode_registrations(&body, session, &self.settings.rules) {
            Ok(d) => d,
            Err(violations) => {
                warn!(
                    rules = %rules_of(&violations),
                    pointers = %pointers_of(&violations),
                    "Pôle emploi's answer is not a list of registrations; it is kept for an operator"
                );
                self.keep_unreadable(session, None, violations).await;
                return PollOutcome::Unreadable;
            }
        };
        // The answer's items as sent, for the journal's masked copy.
        let items = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        PollHealth::add(&self.health.current.registrations, decoded.len() as u64);

        let salt = self.settings.dossier_salt.expose_secret().as_bytes();
        let mut chosen: HashMap<String, (usize, Dossier)> = HashMap::new();
        for (index, d) in decoded.into_iter().enumerate() {
            let record = match d {
                Ok(record) => record,
                Err(violations) => {
                    let rule = violations.first().map_or("schema.other", |v| v.rule.code());
                    self.metrics.pe_invalid_registration(rule);
                    PollHealth::add(&self.health.current.unreadable, 1);
                    warn!(
                        index,
                        rules = %rules_of(&violations),
                        pointers = %pointers_of(&violations),
                        "a registration cannot be read; it is left out of the merge and kept for an operator"
                    );
                    let item = items.get(index).map(mask_unreadable);
                    self.keep_unreadable(session, Some(item.unwrap_or(Value::Null)), violations)
                        .await;
                    continue;
                }
            };
            let id = record.key().dossier_id(salt);
            match chosen.get(&id) {
                Some((_, held)) => {
                    self.metrics.pe_registration("duplicate");
                    if rank(&record) > rank(held) {
                        chosen.insert(id, (index, record));
                    }
                }
                None => {
                    chosen.insert(id, (index, record));
                }
            }
        }
        if chosen.is_empty() {
            return PollOutcome::Ok { changed: 0 };
        }
        let ids: Vec<String> = chosen.keys().cloned().collect();
        let rows = match self.ledger.dossiers(&ids).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "cannot read the session's dossiers; trying again next round");
                return PollOutcome::Unavailable;
            }
        };
        let rows: HashMap<&str, _> = rows.iter().map(|r| (r.dossier_id.as_str(), r)).collect();
        let mut chosen: Vec<(String, usize, Dossier)> = chosen
            .into_iter()
            .map(|(id, (index, record))| (id, index, record))
            .collect();
        chosen.sort_by_key(|(_, index, _)| *index);

        let mut changed = 0;
        for (dossier_id, index, record) in chosen {
            let Some(row) = rows.get(dossier_id.as_str()) else {
                self.metrics.pe_registration("unmatched");
                continue;
            };
            if !row.in_perimeter || !OPEN_STATES.contains(&row.desired.state) {
                self.metrics.pe_registration("skipped");
                continue;
            }
            let held = row
                .sources
                .iter()
                .find(|s| s.sources.first().map(|r| r.system) == Some(System::PoleEmploi));
            if held == Some(&record) {
                self.metrics.pe_registration("unchanged");
                continue;
            }
            let refusal = refusal_key(&dossier_id, row.desired_version, &record);
            if self.refused.lock().is_ok_and(|r| r.contains(&refusal)) {
                self.metrics.pe_registration("refused");
                tracing::debug!(dossier_id, "a registration the ledger refused; left out");
                continue;
            }
            match self
                .offer(poll_id, &dossier_id, items.get(index), record)
                .await
            {
                Offered::Changed => changed += 1,
                Offered::MergedUnchanged => {}
                Offered::Refused => {
                    if let Ok(mut r) = self.refused.lock() {
                        r.insert(refusal);
                    }
                }
                Offered::Unavailable => return PollOutcome::Unavailable,
            }
        }
        PollOutcome::Ok { changed }
    }

    /// Keeps what could not be read in the ledger, masked, for an operator. Failing to keep it
    /// costs only the listing: the count and the log line are already written.
    async fn keep_unreadable(
        &self,
        session: &SessionRef,
        masked_item: Option<Value>,
        violations: Vec<Violation>,
    ) {
        let unreadable = Unreadable {
            system: System::PoleEmploi,
            context: serde_json::json!({
                "numeroFormation": session.numero_formation,
                "numeroAction": session.numero_action,
                "numeroSession": session.numero_session,
            }),
            masked_item,
            violations,
        };
        if let Err(e) = self.ledger.record_unreadable(&unreadable).await {
            warn!(error = %e, "an unreadable registration could not be kept in the ledger");
        }
    }

    /// Offers one changed registration to the ledger, alone: a registration the ledger refuses
    /// must not hold back the others of the session.
    async fn offer(
        &self,
        poll_id: &str,
        dossier_id: &str,
        item: Option<&Value>,
        record: Dossier,
    ) -> Offered {
        // Not a digest of the answer: a registration that goes back to an earlier shape is news
        // again, and must not be taken for a replay of the message that first brought it.
        let payload_hash = {
            let mut h = Sha256::new();
            h.update(poll_id.as_bytes());
            h.update([0]);
            h.update(dossier_id.as_bytes());
            hex::encode(h.finalize())
        };
        let inbound = Inbound {
            system: System::PoleEmploi,
            flow: Flow::Sync,
            payload_hash,
            masked_payload: self
                .settings
                .keep_payloads
                .then(|| item.map(mask))
                .flatten(),
            request_id: Some(poll_id.to_string()),
            records: vec![InboundRecord {
                dossier_id: dossier_id.to_string(),
                record,
                in_perimeter: true,
            }],
        };
        match intake::accept_and_publish(
            &*self.ledger,
            &*self.queue,
            &self.settings.precedence,
            inbound,
            Publish::Changed,
        )
        .await
        {
            Ok(a) => match a.dossiers.iter().find(|d| d.changed) {
                Some(d) => {
                    self.metrics.pe_registration("changed");
                    info!(
                        dossier_id,
                        desired_version = d.desired_version,
                        message_id = %a.message_id,
                        "a Pôle emploi registration changed the dossier"
                    );
                    Offered::Changed
                }
                None => {
                    self.metrics.pe_registration("merged_unchanged");
                    Offered::MergedUnchanged
                }
            },
            Err(IntakeError::Rejected(violations)) => {
                self.metrics.pe_registration("refused");
                warn!(
                    dossier_id,
                    rules = %rules_of(&violations),
                    "the ledger refused a Pôle emploi registration; it is not offered again until the dossier changes"
                );
                Offered::Refused
            }
            Err(e) => {
                warn!(
                    dossier_id,
                    error = %e,
                    "a Pôle emploi registration could not be merged or its task published; the next round or the sweeper takes it up"
                );
                Offered::Unavailable
            }
        }
    }
}

/// Which of two registrations of one trainee on one session stands for them: the one with an AES
/// (the strongest fact), then the most advanced status, then the larger id (any fixed order does:
/// it only has to be the same at every poll).
fn rank(d: &Dossier) -> (bool, u8, &str) {
    let r = d.registration.as_ref();
    let status = match r.map(|r| r.status) {
        Some(RegistrationStatus::Retained) => 3,
        Some(RegistrationStatus::AwaitingDecision) => 2,
        Some(RegistrationStatus::NotRetained) => 1,
        Some(RegistrationStatus::Absent) | None => 0,
    };
    (
        r.is_some_and(|r| r.aes_received),
        status,
        r.map_or("", |r| r.id.as_str()),
    )
}

fn refusal_key(dossier_id: &str, version: i64, record: &Dossier) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(dossier_id.as_bytes());
    h.update(version.to_be_bytes());
    h.update(serde_json::to_vec(record).unwrap_or_default());
    h.finalize().into()
}

/// A registration with the job seeker's identifiers masked (the adapter's one masking).
fn mask(item: &Value) -> Vec<u8> {
    let mut item = item.clone();
    passerelle_adapters::pole_emploi::mask::mask_registration(&mut item);
    serde_json::to_vec(&item).unwrap_or_default()
}

/// The rule codes of some violations, for a log line (their details stay out: short of personal
/// values by contract, but not needed there).
fn rules_of(violations: &[Violation]) -> String {
    let codes: BTreeSet<&str> = violations.iter().map(|v| v.rule.code()).collect();
    codes.into_iter().collect::<Vec<_>>().join(",")
}

fn pointers_of(violations: &[Violation]) -> String {
    let pointers: BTreeSet<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
    pointers.into_iter().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_copy_masks_the_job_seeker() {
        let item = serde_json::json!({
            "idInscription": "INS-1",
            "nirCertifie": "1850775123456",
            "idNationalDE": "A1B2",
            "idRegionalDE": null,
            "codeGeoDE": "044",
        });
        let masked: Value = serde_json::from_slice(&mask(&item)).expect("json");
        assert_eq!(masked["nirCertifie"], "1************");
        assert_eq!(masked["idNationalDE"], "***");
        assert_eq!(masked["idRegionalDE"], Value::Null);
        assert_eq!(masked["idInscription"], "INS-1");
        assert_eq!(masked["codeGeoDE"], "044");
    }
}
