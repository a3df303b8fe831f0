//! The Pôle emploi partner API client (contract §2.3): OAuth2 client credentials on the
//! `/partenaire` realm, and the registrations of a session.
//!
//! Two roles, one trait each, so the poller and the tests can stand in for either:
//!
//! - [`TokenEndpoint`]: gives a fresh access token ([`OAuthEndpoint`] over HTTP). [`TokenCache`]
//!   keeps the last one until shortly before it expires, and lets one caller at a time refresh it:
//!   the session polls in flight share one token and one refresh.
//! - [`RegistrationSource`]: a session's registrations, as the raw answer the adapter decodes
//!   ([`PoleEmploiClient`] over HTTP).
//!
//! [`PoleEmploiClient::registrations`] rides out what the contract calls transient within one
//! poll: `429` (every call waits out its `Retry-After`, not only the one that got it), `408`,
//! `5xx` and transport failures, with the exponential backoff and jitter of `retry.*`, for at most
//! `retry.max_attempts` failed calls. A `429` is pacing, not a failure: it counts only once 429s in
//! a row have lasted `retry.rate_limited_deadline_s`. A `401` refreshes the token once; a second `401` is an error, as are
//! `400` and `403`, which asking again would not change. Errors carry Pôle emploi's `codeErreur`,
//! never its `message` (free text, which may quote what was asked), nor the token.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use passerelle_adapters::agora::parse_retry_after;
use passerelle_adapters::pole_emploi::{decode_error, decode_token, SessionRef, Token};
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use url::Url;

use super::{
    millis, parse_base, read_capped, retry_after, transport_reason, ClientBuildError, Transport,
    DEFAULT_USER_AGENT,
};
use crate::retry::RetryPolicy;

/// The most a token is refreshed ahead of its expiry (at most a tenth of its lifetime): a token
/// checked valid must still be valid when Pôle emploi reads it.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// The longest a token is kept, whatever its `expires_in` says: a day is already far beyond what
/// Pôle emploi grants, and a lifetime read from the wire must not overflow the clock.
const LONGEST_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The longest pause a `Retry-After` imposes.
const LONGEST_PAUSE: Duration = passerelle_adapters::agora::MAX_RETRY_AFTER;

/// How passerelle reaches Pôle emploi (settings section `pole_emploi`).
#[derive(Debug, Clone)]
pub struct PoleEmploiClientConfig {
    /// `pole_emploi.auth_url`: the token is asked at
    /// `{auth_url}/connexion/oauth2/access_token?realm=/partenaire`.
    pub auth_url: String,
    /// `pole_emploi.api_url`: registrations are read at `{api_url}/inscriptions/statut/session`.
    pub api_url: String,
    pub client_id: String,
    /// `Debug` prints it redacted.
    pub client_secret: SecretString,
    /// OAuth2 scopes, space-separated.
    pub scope: String,
    /// Backoff of transient failures within one call ([`PoleEmploiClient::registrations`]).
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub user_agent: String,
    /// PEM certificates trusted besides the bundled web roots.
    pub ca_file: Option<PathBuf>,
}

impl PoleEmploiClientConfig {
    /// The given endpoints and credentials, with transport defaults: connect 5 s, whole call 30 s,
    /// 4 idle connections, and the backoff of `retry.*`'s defaults.
    pub fn new(
        auth_url: impl Into<String>,
        api_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        scope: impl Into<String>,
    ) -> Self {
        Self {
            auth_url: auth_url.into(),
            api_url: api_url.into(),
            client_id: client_id.into(),
            client_secret,
            scope: scope.into(),
            retry: RetryPolicy {
                base: Duration::from_millis(500),
                max: Duration::from_secs(60),
                max_attempts: 12,
                rate_limited_deadline: Duration::from_secs(3600),
            },
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 4,
            user_agent: DEFAULT_USER_AGENT.to_string(),
            ca_file: None,
        }
    }
}

/// The two calls of the partner API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST {auth_url}/connexion/oauth2/access_token`.
    Token,
    /// `GET {api_url}/inscriptions/statut/session`.
    Registrations,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Token => "pe_token",
            Call::Registrations => "pe_registrations",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call gave nothing usable. `Display` names the call, the status and Pôle emploi's
/// `codeErreur`; nothing of what was asked or answered beyond that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoleEmploiError {
    /// `408`, `429`, `5xx` or no answer: the same call may succeed later.
    #[error("{call}: {reason}; to be retried")]
    Transient {
        call: Call,
        /// `None` when the transport failed.
        status: Option<u16>,
        retry_after: Option<Duration>,
        reason: String,
    },
    /// `401`: the credentials (token call) or a freshly refreshed token (registrations) were
    /// refused.
    #[error("{call}: HTTP 401 ({}): Pôle emploi refuses passerelle's credentials", code_or_none(.code))]
    Unauthorized { call: Call, code: Option<String> },
    /// `400`, `403` or any other answer that asking again will not change.
    #[error("{call}: HTTP {status} ({})", code_or_none(.code))]
    Refused {
        call: Call,
        status: u16,
        code: Option<String>,
    },
    /// A success whose body is not what the contract says (the token answer).
    #[error("{call}: the answer is unreadable ({detail})")]
    Unreadable { call: Call, detail: String },
}

fn code_or_none(code: &Option<String>) -> &str {
    code.as_deref().unwrap_or("no codeErreur")
}

impl PoleEmploiError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PoleEmploiError::Transient { .. })
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            PoleEmploiError::Transient { status, .. } => *status,
            PoleEmploiError::Unauthorized { .. } => Some(401),
            PoleEmploiError::Refused { status, .. } => Some(*status),
            PoleEmploiError::Unreadable { .. } => None,
        }
    }

    /// Pôle emploi's `codeErreur`, when its error body said one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PoleEmploiError::Unauthorized { code, .. } | PoleEmploiError::Refused { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// Gives a fresh access token (one OAuth2 call, no caching, no retry).
#[async_trait]
pub trait TokenEndpoint: Send + Sync + 'static {
    async fn fetch(&self) -> Result<Token, PoleEmploiError>;
}

/// A cached token, ready for the `Authorization` header. `generation` tells tokens apart, so that
/// a `401` to an old token does not throw away the new one a concurrent caller already fetched.
#[derive(Clone)]
pub struct Bearer {
    header: HeaderValue,
    generation: u64,
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Bearer {
    /// `Bearer …`, marked sensitive (hyper's and reqwest's `Debug` print it as such).
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[derive(Debug)]
struct Cached {
    bearer: Bearer,
    refresh_at: Instant,
}

/// The token shared by every poll of one process.
///
/// The lock is held across the refresh on purpose: callers arriving meanwhile wait for that one
/// refresh instead of starting their own.
#[derive(Debug)]
pub struct TokenCache<E> {
    endpoint: E,
    slot: tokio::sync::Mutex<Option<Cached>>,
    generations: AtomicU64,
}

impl<E: TokenEndpoint> TokenCache<E> {
    pub fn new(endpoint: E) -> Self {
        Self {
            endpoint,
            slot: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
        }
    }

    /// The cached token, or a new one when there is none or it is about to expire.
    pub async fn get(&self) -> Result<Bearer, PoleEmploiError> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.bearer.clone());
            }
        }
        // The lifetime runs from the moment it was asked for: the answer's travel time is spent.
        let asked = Instant::now();
        let token = self.endpoint.fetch().await?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.access_token()))
            .map_err(|_| PoleEmploiError::Unreadable {
                call: Call::Token,
                detail: "the access token is not a valid HTTP header value".into(),
            })?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(token.expires_in).min(LONGEST_LIFETIME);
        let bearer = Bearer {
            header,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
        };
        *slot = Some(Cached {
            bearer: bearer.clone(),
            refresh_at: asked + lifetime - REFRESH_AHEAD.min(lifetime / 10),
        });
        Ok(bearer)
    }

    /// Forgets `used` after Pôle emploi refused it; a no-op when the cache already holds a newer
    /// token (another caller refreshed meanwhile).
    pub async fn invalidate(&self, used: &Bearer) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|c| c.bearer.generation == used.generation)
        {
            *slot = None;
        }
    }
}

/// The OAuth2 client-credentials call over HTTP.
pub struct OAuthEndpoint {
    http: reqwest::Client,
    url: Url,
    client_id: String,
    client_secret: SecretString,
    scope: String,
}

impl fmt::Debug for OAuthEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthEndpoint")
            .field("url", &self.url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenEndpoint for OAuthEndpoint {
    async fn fetch(&self) -> Result<Token, PoleEmploiError> {
        let started = std::time::Instant::now();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("scope", self.scope.as_str()),
        ];
        let request = self.http.post(self.url.clone()).form(&form);
        let result = match send(Call::Token, request).await {
            Ok((200, _, body)) => decode_token(&body).map_err(|_| PoleEmploiError::Unreadable {
                call: Call::Token,
                detail: "not the token answer of the contract".into(),
            }),
            Ok((status, wait, body)) => Err(classify(Call::Token, status, wait, &body)),
            Err(e) => Err(e),
        };
        emit(Call::Token, started, &result.as_ref().map(|_| ()));
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Registrations

/// Where a session's registrations come from: the answer's bytes, for the adapter to decode.
#[async_trait]
pub trait RegistrationSource: Send + Sync + 'static {
    async fn registrations(&self, session: &SessionRef) -> Result<Vec<u8>, PoleEmploiError>;
}

/// Every call waits until this instant: a `429`'s `Retry-After` is Pôle emploi's word for the
/// client as a whole, not for one session.
#[derive(Debug, Default)]
struct Gate(Mutex<Option<Instant>>);

impl Gate {
    async fn pass(&self) {
        let until = self.0.lock().ok().and_then(|g| *g);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    fn close_for(&self, wait: Duration) {
        // A garbled header (a year, or beyond what the clock can add) must not stop polling for
        // longer than the hour Pôle emploi would plausibly ask for.
        let until = Instant::now() + wait.min(LONGEST_PAUSE);
        if let Ok(mut g) = self.0.lock() {
            if g.is_none_or(|u| u < until) {
                *g = Some(until);
            }
        }
    }
}

/// The partner API client: build it once, share it (`Arc`) between the session polls.
pub struct PoleEmploiClient {
    http: reqwest::Client,
    registrations_url: Url,
    tokens: TokenCache<OAuthEndpoint>,
    gate: Gate,
    retry: RetryPolicy,
}

impl fmt::Debug for PoleEmploiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoleEmploiClient")
            .field("registrations_url", &self.registrations_url.as_str())
            .finish_non_exhaustive()
    }
}

impl PoleEmploiClient {
    /// Builds the client: checks both URLs and the CA file, sets up one pool for both endpoints.
    /// Nothing is sent.
    pub fn new(config: &PoleEmploiClientConfig) -> Result<Self, ClientBuildError> {
        let mut token_url = parse_base("pole_emploi.auth_url", &config.auth_url)?;
        if let Ok(mut path) = token_url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["connexion", "oauth2", "access_token"]);
        }
        // Written as the contract spells it; `/` needs no escaping in a query.
        token_url.set_query(Some("realm=/partenaire"));
        let mut registrations_url = parse_base("pole_emploi.api_url", &config.api_url)?;
        if let Ok(mut path) = registrations_url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["inscriptions", "statut", "session"]);
        }
        let http = Transport {
            section: "pole_emploi",
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            user_agent: &config.user_agent,
            ca_file: config.ca_file.as_deref(),
            identity: None,
        }
        .client(HeaderMap::new())?;
        Ok(Self {
            tokens: TokenCache::new(OAuthEndpoint {
                http: http.clone(),
                url: token_url,
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                scope: config.scope.clone(),
            }),
            http,
            registrations_url,
            gate: Gate::default(),
            retry: config.retry,
        })
    }

    /// One `GET` with the given token, no retry.
    async fn get_registrations(
        &self,
        session: &SessionRef,
        bearer: &Bearer,
    ) -> Result<Vec<u8>, PoleEmploiError> {
        let started = std::time::Instant::now();
        let mut url = self.registrations_url.clone();
        url.query_pairs_mut()
            .append_pair("numeroFormation", &session.numero_formation)
            .append_pair("numeroAction", &session.numero_action)
            .append_pair("numeroSession", &session.numero_session);
        let request = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, bearer.header().clone());
        let result = match send(Call::Registrations, request).await {
            Ok((200, _, body)) => Ok(body),
            Ok((status, wait, body)) => Err(classify(Call::Registrations, status, wait, &body)),
            Err(e) => Err(e),
        };
        emit(Call::Registrations, started, &result.as_ref().map(|_| ()));
        result
    }
}

#[async_trait]
impl RegistrationSource for PoleEmploiClient {
    async fn registrations(&self, session: &SessionRef) -> Result<Vec<u8>, PoleEmploiError> {
        let mut failures = 0u32;
        let mut refreshed = false;
        let mut rate_limited_since: Option<Instant> = None;
        loop {
            self.gate.pass().await;
            let result = match self.tokens.get().await {
                Ok(bearer) => match self.get_registrations(session, &bearer).await {
                    // The token may have been revoked or expired early: one new token, once.
                    Err(PoleEmploiError::Unauthorized { .. }) if !refreshed => {
                        refreshed = true;
                        self.tokens.invalidate(&bearer).await;
                        tracing::info!(
                            call = %Call::Registrations,
                            "Pôle emploi refused the token; asking for a new one"
                        );
                        continue;
                    }
                    other => other,
                },
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(body) => return Ok(body),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            let (asked, paced) = match &e {
                PoleEmploiError::Transient {
                    retry_after,
                    status,
                    ..
                } => (*retry_after, *status == Some(429)),
                _ => (None, false),
            };
            if let Some(wait) = asked {
                self.gate.close_for(wait);
            }
            // A 429 is Pôle emploi's pacing, not a failure: it consumes no attempt, but 429s in
            // a row are waited out only until `retry.rate_limited_deadline_s`.
            let since = *rate_limited_since.get_or_insert_with(Instant::now);
            if !paced || since.elapsed() >= self.retry.rate_limited_deadline {
                failures += 1;
            }
            if !paced {
                rate_limited_since = None;
            }
            if failures >= self.retry.max_attempts {
                return Err(e);
            }
            let delay = self.retry.delay(failures.saturating_sub(1), asked);
            tracing::info!(
                numero_session = %session.numero_session,
                failures,
                delay_ms = millis(delay),
                error = %e,
                "Pôle emploi call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Sends and reads the whole answer: `(status, Retry-After, body)`, or the transient error of a
/// failed transport.
async fn send(
    call: Call,
    request: reqwest::RequestBuilder,
) -> Result<(u16, Option<String>, Vec<u8>), PoleEmploiError> {
    let transient = |reason: String| PoleEmploiError::Transient {
        call,
        status: None,
        retry_after: None,
        reason,
    };
    let response = request
        .send()
        .await
        .map_err(|e| transient(transport_reason(&e)))?;
    let status = response.status().as_u16();
    let wait = retry_after(&response);
    match read_capped(response).await {
        Ok(body) => Ok((status, wait, body)),
        Err(Some(reason)) => Err(transient(reason)),
        Err(None) => Err(PoleEmploiError::Unreadable {
            call,
            detail: format!("HTTP {status}: the answer is too large"),
        }),
    }
}

/// What a status other than `200` means (contract §2.3).
fn classify(call: Call, status: u16, wait: Option<String>, body: &[u8]) -> PoleEmploiError {
    // Only the code: the message is free text.
    let code = decode_error(body).ok().map(|b| safe_code(&b.code_erreur));
    match status {
        401 => PoleEmploiError::Unauthorized { call, code },
        408 | 429 | 500..=599 => PoleEmploiError::Transient {
            call,
            status: Some(status),
            retry_after: wait.and_then(|w| parse_retry_after(&w, chrono::Utc::now())),
            reason: match code {
                Some(c) => format!("HTTP {status} ({c})"),
                None => format!("HTTP {status}"),
            },
        },
        _ => PoleEmploiError::Refused { call, status, code },
    }
}

/// Pôle emploi's `codeErreur` fit for a log line: a code is short and plain (`JETON_INVALIDE`);
/// anything else in it is dropped rather than written out.
fn safe_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect()
}

/// One event per call. A `401`, `400` or `403` is a WARN with the `codeErreur` (an operator fixes
/// the credentials or the habilitation); a success or a transient failure is DEBUG (every session,
/// every poll; the retry loop reports a transient failure with its delay, and a poll that gives up
/// says so itself).
fn emit(call: Call, started: std::time::Instant, result: &Result<(), &PoleEmploiError>) {
    let duration_ms = millis(started.elapsed());
    match result {
        Ok(()) => {
            tracing::debug!(operation = %call, status = 200u16, duration_ms, "Pôle emploi answered")
        }
        Err(e) if e.is_transient() => tracing::debug!(
            operation = %call,
            status = e.status(),
            duration_ms,
            error = %e,
            "Pôle emploi call failed"
        ),
        Err(e) => tracing::warn!(
            operation = %call,
            status = e.status(),
            code_erreur = e.code().unwrap_or(""),
            duration_ms,
            error = %e,
            "Pôle emploi refused the call"
        ),
    }
}

#[cfg(test)]
mod tests;
