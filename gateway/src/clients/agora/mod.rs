//! The AGORA v2 client (contract §3): one pooled HTTPS client to the local INTEROPS-A relay.
//!
//! Every method answers in the adapter's terms ([`Outcome`]): the worker never sees HTTP. What is
//! sent is built by `passerelle_adapters::agora` (which refuses to build a half-filled body) and what
//! comes back is read by it; this module only moves bytes, puts on each call the credential its
//! [`auth::Authenticator`] gives (renewing it once on a `401`), and turns transport failures — and a
//! credential that could not be had — into [`Outcome::Transient`] with [`TransientReason::Transport`].
//!
//! Each call emits one `tracing` event (`operation`, `status`, `duration_ms`, `outcome`) and
//! nothing of the bodies: AGORA's bodies carry NIRs and names.

pub mod auth;

use super::{
    millis, parse_base, read_capped, retry_after, transport_reason, ClientBuildError, Transport,
    DEFAULT_USER_AGENT,
};
use auth::{AuthConfig, AuthStatus, Authenticator, Placement};
use bytes::Bytes;
pub use passerelle_adapters::agora::Outcome;
use passerelle_adapters::agora::{
    decode_answer, decode_failure, decode_lot_accepted, decode_reprise_report, encode_dossier,
    encode_transition, search_query, DossierBody, ReportState, RepriseReport, SearchQuery,
    TransientReason, TransitionBody, NDJSON,
};
use passerelle_adapters::planner::Operation;
use passerelle_adapters::{Dossier, Rule, Violation};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::RequestBuilder;
use secrecy::SecretString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// How passerelle reaches the AGORA relay (settings section `agora`).
#[derive(Debug, Clone)]
pub struct AgoraClientConfig {
    /// `agora.base_url`: the relay's base URL; calls are made below it (`{base_url}/dossiers`…).
    pub base_url: String,
    /// `agora.auth.mode` and what it needs (`agora.token` for `bearer`). `Debug` prints no secret.
    pub auth: AuthConfig,
    /// `agora.auth.header`, `agora.auth.scheme`: where the token goes.
    pub placement: Placement,
    /// Longest wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole call, from sending to the last byte of the answer.
    pub request_timeout: Duration,
    /// Idle connections kept open to the relay, for the workers to reuse.
    pub pool_max_idle_per_host: usize,
    /// `User-Agent` of every call.
    pub user_agent: String,
    /// `agora.tls_ca_file`: PEM certificates trusted besides the bundled web roots, for a relay
    /// signed by an internal CA.
    pub ca_file: Option<PathBuf>,
    /// `agora.tls_client_cert_file` and `agora.tls_client_key_file`: the certificate (chain, PEM)
    /// and key passerelle shows the relay for mutual TLS.
    pub client_identity: Option<super::ClientIdentity>,
}

impl AgoraClientConfig {
    /// The given relay and bearer token, with transport defaults: connect 5 s, whole call 30 s, 16
    /// idle connections, passerelle's user agent, `Authorization: Bearer`, no extra CA, no client
    /// certificate.
    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            auth: AuthConfig::Bearer { token },
            placement: Placement::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 16,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            ca_file: None,
            client_identity: None,
        }
    }
}

/// Why a backfill lot call did not give what was asked.
#[derive(Clone, PartialEq, Eq)]
pub enum LotFailure {
    /// `413`: the lot is over AGORA's limit; split it.
    TooLarge,
    /// Any other answer, read by the adapter: transient (`429`, `5xx`, transport), `422`
    /// anomalies, or unexpected (including a success whose body does not parse).
    Failed(Outcome),
}

impl LotFailure {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, LotFailure::Failed(o) if o.is_transient())
    }
}

// `Outcome`'s own `Debug` already keeps anomaly labels out; this only forwards to it.
impl fmt::Debug for LotFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LotFailure::TooLarge => f.write_str("TooLarge"),
            LotFailure::Failed(o) => f.debug_tuple("Failed").field(o).finish(),
        }
    }
}

/// Whether the relay answers ([`AgoraClient::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The relay answered with this status (below 500).
    Up { status: u16 },
    /// The relay answered `5xx`, or not at all; the reason is a fixed phrase or the status.
    Down { reason: String },
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up { .. })
    }
}

/// The AGORA client: build it once, clone it freely (the pool is shared).
#[derive(Clone)]
pub struct AgoraClient {
    http: reqwest::Client,
    base: Url,
    /// The longest one call may last (reqwest's timeout covers connecting too).
    request_timeout: Duration,
    auth: Arc<dyn Authenticator>,
}

impl fmt::Debug for AgoraClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgoraClient")
            .field("base_url", &self.base.as_str())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl AgoraClient {
    /// Builds the client: checks the base URL, builds the authenticator (reading its key files),
    /// reads the CA and client certificate files, and sets up the pool. Nothing is sent: use
    /// [`AgoraClient::health`] for that.
    pub fn new(config: &AgoraClientConfig) -> Result<Self, ClientBuildError> {
        let base = parse_base("agora.base_url", &config.base_url)?;
        let auth = config.auth.build(&config.placement)?;
        let http = Transport {
            section: "agora",
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            user_agent: &config.user_agent,
            ca_file: config.ca_file.as_deref(),
            identity: config.client_identity.as_ref(),
        }
        .client(HeaderMap::new())?;
        Ok(Self {
            http,
            base,
            request_timeout: config.request_timeout,
            auth,
        })
    }

    /// The authenticator in use and when its token expires (for `/readyz`).
    pub fn auth_status(&self) -> AuthStatus {
        self.auth.status()
    }

    /// The longest one call may last: past it, the client has given up on its answer.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The relay's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Performs one planned operation on a dossier: encodes it with the adapter, sends it, reads
    /// AGORA's answer.
    ///
    /// `Err` when the dossier lacks what AGORA requires for `op` (canonical pointers, as the adapter
    /// gives them), or when a transition is asked without `numero_agora`: nothing is sent then.
    pub async fn perform(
        &self,
        op: Operation,
        dossier_id: &str,
        dossier: &Dossier,
        numero_agora: Option<&str>,
    ) -> Result<Outcome, Vec<Violation>> {
        match op {
            Operation::Search => {
                let query = search_query(dossier_id, dossier)?;
                Ok(self.search(&query).await)
            }
            Operation::Create => {
                let body = encode_dossier(dossier_id, dossier)?;
                Ok(self.create(&body).await)
            }
            Operation::Enter | Operation::Exit | Operation::Settle | Operation::Cancel => {
                let body = encode_transition(op, dossier)?;
                let numero = numero_agora
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| {
                        vec![Violation::new(
                            "",
                            Rule::LifecycleTransition,
                            "a transition needs the dossier's AGORA number: search or create first",
                        )]
                    })?;
                Ok(self.transition(numero, &body).await)
            }
        }
    }

    /// `GET /dossiers?financeur=&reference=`: [`Outcome::Found`], [`Outcome::NotFound`], or a failure.
    pub async fn search(&self, query: &SearchQuery) -> Outcome {
        let mut url = self.url(&["dossiers"]);
        url.query_pairs_mut()
            .append_pair("financeur", &query.financeur)
            .append_pair("reference", &query.reference);
        self.call(Operation::Search, self.http.get(url)).await
    }

    /// `POST /dossiers`: [`Outcome::Created`], [`Outcome::AlreadyExists`], or a failure.
    pub async fn create(&self, body: &DossierBody) -> Outcome {
        let request = self.http.post(self.url(&["dossiers"])).json(body);
        self.call(Operation::Create, request).await
    }

    /// `POST /dossiers/{numero_agora}/entree|sortie|solde|annulation`, the path chosen by the body:
    /// [`Outcome::Accepted`], [`Outcome::StateConflict`], or a failure.
    pub async fn transition(&self, numero_agora: &str, body: &TransitionBody) -> Outcome {
        let url = self.url(&["dossiers", numero_agora, body.path()]);
        self.call(body.operation(), self.http.post(url).json(body))
            .await
    }

    /// `POST /reprises` with an NDJSON lot (`RepriseLot::into_bytes`; keep its `references()` to
    /// read the report). `Bytes` so a retry resends the same lot without copying it.
    /// `Ok(lot id)` on `202`.
    pub async fn submit_lot(&self, lot: Bytes) -> Result<String, LotFailure> {
        const CALL: &str = "reprise_submit";
        let request = self
            .http
            .post(self.url(&["reprises"]))
            .header(CONTENT_TYPE, NDJSON)
            .body(lot);
        let start = Instant::now();
        let result = match self.send(CALL, request).await {
            Ok((202, _, body)) => decode_lot_accepted(&body).map_err(|_| {
                LotFailure::Failed(Outcome::Unexpected {
                    status: 202,
                    detail: format!("HTTP 202 to {CALL}: the body is not AGORA's lot answer"),
                })
            }),
            Ok((413, ..)) => Err(LotFailure::TooLarge),
            Ok((status, wait, body)) => Err(LotFailure::Failed(decode_failure(
                CALL,
                status,
                wait.as_deref(),
                &body,
            ))),
            Err(outcome) => Err(LotFailure::Failed(outcome)),
        };
        emit_lot(CALL, start, &result);
        result
    }

    /// `GET /reprises/{lot}`: the report as it stands (`EN_COURS` or `TERMINE`).
    pub async fn lot_report(&self, lot: &str) -> Result<RepriseReport, LotFailure> {
        const CALL: &str = "reprise_report";
        let request = self.http.get(self.url(&["reprises", lot]));
        let start = Instant::now();
        let result = match self.send(CALL, request).await {
            Ok((200, _, body)) => decode_reprise_report(&body).map_err(|_| {
                LotFailure::Failed(Outcome::Unexpected {
                    status: 200,
                    detail: format!("HTTP 200 to {CALL}: the body is not a valid AGORA report"),
                })
            }),
            Ok((status, wait, body)) => Err(LotFailure::Failed(decode_failure(
                CALL,
                status,
                wait.as_deref(),
                &body,
            ))),
            Err(outcome) => Err(LotFailure::Failed(outcome)),
        };
        emit_lot(CALL, start, &result);
        result
    }

    /// Polls [`AgoraClient::lot_report`] every `every` until the lot is `TERMINE`, riding out
    /// transient failures (waiting at least their `Retry-After`), for at most `patience`.
    ///
    /// Past `patience`, the last transient failure, or a transient transport outcome saying the lot
    /// is still in progress: the caller keeps the lot id and polls again later.
    pub async fn wait_for_report(
        &self,
        lot: &str,
        every: Duration,
        patience: Duration,
    ) -> Result<RepriseReport, LotFailure> {
        let deadline = Instant::now() + patience;
        loop {
            let (wait, last) = match self.lot_report(lot).await {
                Ok(report) if report.etat == ReportState::Termine => return Ok(report),
                Ok(_) => (every, None),
                Err(e) if e.is_transient() => {
                    let asked = match &e {
                        LotFailure::Failed(Outcome::Transient { retry_after, .. }) => *retry_after,
                        _ => None,
                    };
                    (asked.map_or(every, |a| a.max(every)), Some(e))
                }
                Err(e) => return Err(e),
            };
            if Instant::now() + wait > deadline {
                return Err(last.unwrap_or_else(|| {
                    LotFailure::Failed(Outcome::transient("the lot is still being processed"))
                }));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether the relay answers: `GET {base_url}` (no business call, nothing looked up, no token:
    /// a probe must not run the token command), and any status below 500 counts as up — a `404` or
    /// `401` still proves the relay is there. A `5xx` (typically `502`/`503` when AGORA behind the
    /// relay is down) or no answer — a TLS handshake refused included — is down.
    pub async fn health(&self) -> Health {
        let start = Instant::now();
        let result = self.http.get(self.base.clone()).send().await;
        let health = match result {
            Ok(r) if r.status().as_u16() < 500 => Health::Up {
                status: r.status().as_u16(),
            },
            Ok(r) => Health::Down {
                reason: format!("HTTP {}", r.status().as_u16()),
            },
            Err(e) => Health::Down {
                reason: transport_reason(&e),
            },
        };
        match &health {
            Health::Up { status } => tracing::debug!(
                operation = "health",
                status = *status,
                duration_ms = millis(start.elapsed()),
                outcome = "up",
                "AGORA relay answered"
            ),
            Health::Down { reason } => tracing::warn!(
                operation = "health",
                duration_ms = millis(start.elapsed()),
                outcome = "down",
                reason = %reason,
                "AGORA relay is down"
            ),
        }
        health
    }

    /// `{base}/seg/seg…`, each segment percent-encoded (an AGORA number or a lot id is data, and a
    /// `/` or `?` in it must not change the call).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `parse_base` refused cannot-be-a-base URLs, so this branch always runs.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends an [`Operation`]'s request, reads the answer with the adapter, reports the call.
    async fn call(&self, op: Operation, request: RequestBuilder) -> Outcome {
        let start = Instant::now();
        let outcome = match self.send(op.name(), request).await {
            Ok((status, wait, body)) => decode_answer(op, status, wait.as_deref(), &body),
            Err(outcome) => outcome,
        };
        emit(op.name(), start, &outcome);
        outcome
    }

    /// The credential for a call, or the transient outcome that stands for its absence.
    async fn credential(&self, call: &str) -> Result<auth::Credential, Outcome> {
        self.auth.credential().await.map_err(|e| {
            tracing::warn!(operation = call, error = %e, "no AGORA credential for the call");
            Outcome::transient(format!("authentication: {e}"))
        })
    }

    /// Sends with a credential and reads the whole answer: `(status, Retry-After, body)`, or the
    /// outcome that stands for a failed transport or a missing credential (transient) or an
    /// oversized answer (unexpected). On a `401`, when the authenticator says a new credential may
    /// pass, the call is made once more with it (every request here has a body held in memory,
    /// so it can be cloned).
    async fn send(
        &self,
        call: &str,
        request: RequestBuilder,
    ) -> Result<(u16, Option<String>, Vec<u8>), Outcome> {
        let again = request.try_clone();
        let credential = self.credential(call).await?;
        let mut response = request
            .header(credential.name.clone(), credential.value.clone())
            .send()
            .await
            .map_err(|e| Outcome::transient(transport_reason(&e)))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            if let Some(again) = again {
                if self.auth.refused(&credential).await {
                    tracing::info!(
                        operation = call,
                        "AGORA refused the token (401): renewing it and calling once more"
                    );
                    let credential = self.credential(call).await?;
                    response = again
                        .header(credential.name.clone(), credential.value.clone())
                        .send()
                        .await
                        .map_err(|e| Outcome::transient(transport_reason(&e)))?;
                }
            }
        }
        let status = response.status().as_u16();
        let wait = retry_after(&response);
        match read_capped(response).await {
            Ok(body) => Ok((status, wait, body)),
            Err(Some(reason)) => Err(Outcome::transient(reason)),
            Err(None) => Err(Outcome::Unexpected {
                status,
                detail: format!("HTTP {status} to {call}: the answer is too large"),
            }),
        }
    }
}

/// A short, fixed name of an outcome, for telemetry.
pub fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Found { .. } => "found",
        Outcome::NotFound => "not_found",
        Outcome::Created { .. } => "created",
        Outcome::AlreadyExists { .. } => "already_exists",
        Outcome::Accepted => "accepted",
        Outcome::Rejected { .. } => "rejected",
        Outcome::StateConflict => "state_conflict",
        Outcome::Transient { .. } => "transient",
        Outcome::Unexpected { .. } => "unexpected",
    }
}

/// The HTTP status an outcome came from, when there was an answer (0 for a transport failure).
fn status_of(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Found { .. } | Outcome::Accepted => 200,
        Outcome::NotFound => 404,
        Outcome::Created { .. } => 201,
        Outcome::AlreadyExists { .. } | Outcome::StateConflict => 409,
        Outcome::Rejected { .. } => 422,
        Outcome::Transient { reason, .. } => match reason {
            TransientReason::RateLimited => 429,
            TransientReason::RequestTimeout => 408,
            TransientReason::ServerError(s) => *s,
            TransientReason::Transport(_) => 0,
        },
        Outcome::Unexpected { status, .. } => *status,
    }
}

/// One event per call: an answer at INFO, a transient failure or an unexpected answer at WARN (not
/// ERROR: nothing is lost, the worker retries or dead-letters, and the dead letter is what an
/// operator acts on).
fn emit(call: &str, start: Instant, outcome: &Outcome) {
    let duration_ms = millis(start.elapsed());
    let status = status_of(outcome);
    let kind = outcome_kind(outcome);
    match outcome {
        Outcome::Transient { reason, .. } => tracing::warn!(
            operation = call,
            status,
            duration_ms,
            outcome = kind,
            reason = %reason,
            "AGORA call failed, to be retried"
        ),
        Outcome::Unexpected { detail, .. } => tracing::warn!(
            operation = call,
            status,
            duration_ms,
            outcome = kind,
            // The adapter's details name the call and the status, never a body's content.
            detail = %detail,
            "AGORA answered unexpectedly"
        ),
        Outcome::Rejected { anomalies } => tracing::info!(
            operation = call,
            status,
            duration_ms,
            outcome = kind,
            anomalies = anomalies.len(),
            "AGORA rejected the call"
        ),
        _ => tracing::info!(
            operation = call,
            status,
            duration_ms,
            outcome = kind,
            "AGORA answered"
        ),
    }
}

fn emit_lot<T>(call: &str, start: Instant, result: &Result<T, LotFailure>) {
    match result {
        Ok(_) => tracing::info!(
            operation = call,
            duration_ms = millis(start.elapsed()),
            outcome = "ok",
            "AGORA answered"
        ),
        Err(LotFailure::TooLarge) => tracing::warn!(
            operation = call,
            status = 413u16,
            duration_ms = millis(start.elapsed()),
            outcome = "too_large",
            "AGORA refused the lot as too large"
        ),
        Err(LotFailure::Failed(o)) => emit(call, start, o),
    }
}
