//! Returns to ATEXO SEM (contract §4): AGORA's answer on a dossier, posted as `retourAgora` XML to
//! `atexo_sem.returns_url` when AGORA assigns a number, accepts a transition or rejects one.
//!
//! The XML is the adapter's ([`encode_return`]); this module posts it and says whether to try
//! again. Off when `returns_url` is empty: [`AtexoReturnsClient::new`] gives `None`.

use super::{
    millis, parse_base, read_capped, retry_after, transport_reason, ClientBuildError, Transport,
    DEFAULT_USER_AGENT,
};
use passerelle_adapters::agora::parse_retry_after;
#[cfg(doc)]
use passerelle_adapters::atexo_sem::encode_return;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use url::Url;

/// Where and how returns are posted (settings section `atexo_sem`).
#[derive(Debug, Clone)]
pub struct AtexoReturnsConfig {
    /// `atexo_sem.returns_url`: the endpoint returns are posted to; empty turns returns off.
    pub returns_url: String,
    /// Longest wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole call.
    pub request_timeout: Duration,
    /// Idle connections kept open to ATEXO SEM.
    pub pool_max_idle_per_host: usize,
    /// `User-Agent` of every call.
    pub user_agent: String,
    /// `atexo_sem.ca_file`: PEM certificates trusted besides the bundled web roots.
    pub ca_file: Option<PathBuf>,
}

impl AtexoReturnsConfig {
    /// The given endpoint with transport defaults: connect 5 s, whole call 30 s, 4 idle connections.
    pub fn new(returns_url: impl Into<String>) -> Self {
        Self {
            returns_url: returns_url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 4,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            ca_file: None,
        }
    }
}

/// Why a return was not taken. The `Display` names the status or a fixed transport phrase, never
/// the return's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnError {
    /// `408`, `429`, `5xx` or no answer: post the same return again later (after `retry_after`
    /// when ATEXO SEM said).
    #[error("ATEXO SEM did not take the return ({reason}); to be retried")]
    Transient {
        /// The HTTP status, `None` when the transport failed.
        status: Option<u16>,
        retry_after: Option<Duration>,
        reason: String,
    },
    /// Any other status (a `4xx`, a `3xx` we do not follow): posting it again will not help.
    #[error("ATEXO SEM refused the return with HTTP {status}")]
    Refused { status: u16 },
}

impl ReturnError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ReturnError::Transient { .. })
    }
}

/// The returns client: build it once, clone it freely.
#[derive(Clone)]
pub struct AtexoReturnsClient {
    http: reqwest::Client,
    url: Url,
}

impl fmt::Debug for AtexoReturnsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtexoReturnsClient")
            .field("returns_url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl AtexoReturnsClient {
    /// `Ok(None)` when `returns_url` is empty (returns are off); an error when it is set but unusable.
    pub fn new(config: &AtexoReturnsConfig) -> Result<Option<Self>, ClientBuildError> {
        if config.returns_url.trim().is_empty() {
            return Ok(None);
        }
        let url = parse_base("atexo_sem.returns_url", &config.returns_url)?;
        let http = Transport {
            section: "atexo_sem",
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            user_agent: &config.user_agent,
            ca_file: config.ca_file.as_deref(),
            identity: None,
        }
        .client(HeaderMap::new())?;
        Ok(Some(Self { http, url }))
    }

    /// Posts one return, its XML `body` ([`encode_return`]) under `key`, sent as the
    /// `Idempotency-Key` header: the same return posted again (after a crash between its post and
    /// its record) carries the same key. Any `2xx` is taken.
    pub async fn post(&self, key: &str, body: &str) -> Result<(), ReturnError> {
        let start = Instant::now();
        let request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/xml")
            .header("Idempotency-Key", key)
            .body(body.to_owned());
        let result = match request.send().await {
            Err(e) => Err(ReturnError::Transient {
                status: None,
                retry_after: None,
                reason: transport_reason(&e),
            }),
            Ok(response) => {
                let status = response.status().as_u16();
                let wait =
                    retry_after(&response).and_then(|h| parse_retry_after(&h, chrono::Utc::now()));
                // Drain the body so the connection goes back to the pool; its content is unused.
                let drained = read_capped(response).await;
                classify(status, wait, drained.err().flatten())
            }
        };
        let duration_ms = millis(start.elapsed());
        match &result {
            Ok(()) => tracing::info!(
                operation = "atexo_sem_return",
                duration_ms,
                outcome = "ok",
                "ATEXO SEM took the return"
            ),
            Err(e) => tracing::warn!(
                operation = "atexo_sem_return",
                duration_ms,
                outcome = if e.is_transient() { "transient" } else { "refused" },
                error = %e,
                "ATEXO SEM did not take the return"
            ),
        }
        result
    }
}

/// What a status means for a return. `body_failure`: the transport failed while reading a `2xx`'s
/// body; the return may or may not have been taken, and ATEXO SEM takes a return twice harmlessly
/// (it is a state, not an event), so it is retried.
fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body_failure: Option<String>,
) -> Result<(), ReturnError> {
    match status {
        200..=299 => match body_failure {
            None => Ok(()),
            Some(reason) => Err(ReturnError::Transient {
                status: Some(status),
                retry_after: None,
                reason,
            }),
        },
        408 | 429 | 500..=599 => Err(ReturnError::Transient {
            status: Some(status),
            retry_after,
            reason: format!("HTTP {status}"),
        }),
        _ => Err(ReturnError::Refused { status }),
    }
}
