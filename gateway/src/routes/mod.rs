//! The HTTP API of contract §1: inbound routes, admin routes, health, metrics, OpenAPI.

pub mod admin;
pub mod health;
pub mod inbound;
pub mod problem;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{HttpMessage, HttpRequest};
use passerelle_adapters::atexo_sem::DecodeSettings;
use passerelle_adapters::canonical::System;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::rules::RuleSettings;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::clients::agora::AgoraClient;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::queue::Queue;
use problem::ApiError;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    System(System),
    /// An operator. `personal_data`: the token is `auth.tokens.admin_personal_data`, whose holder
    /// may see a dossier's personal fields unmasked.
    Admin {
        personal_data: bool,
    },
}

/// The secrets the API checks, resolved at start-up.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ouiform: SecretString,
    pub atexo_sem: SecretString,
    pub admin: SecretString,
    /// The operators' token that may see personal data; `None`: nobody may.
    pub admin_personal_data: Option<SecretString>,
    pub ouiform_hmac: SecretString,
    /// Salt of the dossier ids: stable for an installation, never shown.
    pub dossier_salt: SecretString,
}

impl Credentials {
    /// The caller a bearer token belongs to. Tokens are compared by digest, so the comparison
    /// time does not depend on how much of a token matches.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let d = |s: &str| Sha256::digest(s.as_bytes());
        let t = d(token);
        [
            (Some(&self.ouiform), Caller::System(System::Ouiform)),
            (Some(&self.atexo_sem), Caller::System(System::AtexoSem)),
            (
                Some(&self.admin),
                Caller::Admin {
                    personal_data: false,
                },
            ),
            (
                self.admin_personal_data.as_ref(),
                Caller::Admin {
                    personal_data: true,
                },
            ),
        ]
        .into_iter()
        .filter_map(|(secret, c)| secret.map(|s| (s, c)))
        .find(|(secret, _)| d(secret.expose_secret()) == t)
        .map(|(_, c)| c)
    }
}

/// A token bucket per calling system (429 past it).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<System, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, system: System) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let now = Instant::now();
        let (tokens, at) = buckets.entry(system).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything the handlers share, built once by [`crate::startup`].
pub struct AppState {
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn Queue>,
    pub agora: Arc<AgoraClient>,
    pub credentials: Credentials,
    pub decode: DecodeSettings,
    pub rules: RuleSettings,
    pub precedence: Precedence,
    pub body_limit: usize,
    /// How long an ATEXO SEM post may take to decode (`server.decode_budget_ms`).
    pub decode_budget: std::time::Duration,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub keep_payloads: bool,
    /// What the Pôle emploi poller's rounds read, when it polls (`/readyz` reports it).
    pub pole_emploi: Option<Arc<crate::pollers::pole_emploi::PollHealth>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// Reads `Authorization: Bearer …` and names the caller.
pub fn authenticate(req: &HttpRequest, creds: &Credentials) -> Result<Caller, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "an Authorization: Bearer header is required",
        ))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))?;
    creds
        .caller(token.trim())
        .ok_or(ApiError::Unauthorized("the bearer token is not valid"))
}

/// A request's id, chosen once by [`request_span`] and kept in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The request id: the caller's `X-Request-Id` when sane, else a new one. The same for every
/// call within one request (the middleware picks it; this only reads it back).
pub fn request_id(req: &HttpRequest) -> String {
    if let Some(id) = req.extensions().get::<RequestId>() {
        return id.0.clone();
    }
    pick_request_id(req.headers())
}

fn pick_request_id(headers: &actix_web::http::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Middleware: one `request` span per HTTP request carrying its request id, which the queue then
/// carries to the worker's span (task and AMQP header), so one id follows a message from the
/// caller to AGORA. The id is echoed in the response's `X-Request-Id`. Only the method, the route
/// pattern, the status and the duration are logged: never a body, a query or a header value.
pub async fn request_span(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let id = pick_request_id(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    // The pattern (`/v1/dead-letters/{id}/replay`), not the path: ids stay out of the logs.
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = %route
    );
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request served"
        );
    });
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(personal_data: Option<&str>) -> Credentials {
        let secret = |s: &str| SecretString::from(s.to_string());
        Credentials {
            ouiform: secret("o"),
            atexo_sem: secret("a"),
            admin: secret("admin"),
            admin_personal_data: personal_data.map(secret),
            ouiform_hmac: secret("h"),
            dossier_salt: secret("s"),
        }
    }

    #[test]
    fn only_the_personal_data_token_may_see_personal_data() {
        let c = creds(Some("admin-pd"));
        assert_eq!(
            c.caller("admin"),
            Some(Caller::Admin {
                personal_data: false
            })
        );
        assert_eq!(
            c.caller("admin-pd"),
            Some(Caller::Admin {
                personal_data: true
            })
        );
        assert_eq!(c.caller("o"), Some(Caller::System(System::Ouiform)));
        assert_eq!(c.caller("nope"), None);
        // Unset: nobody can unmask, and an empty token is nobody's.
        let c = creds(None);
        assert_eq!(c.caller("admin-pd"), None);
        assert_eq!(c.caller(""), None);
    }
}
