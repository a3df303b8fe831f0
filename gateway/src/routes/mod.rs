//! The HTTP API of contract §1: inbound routes, admin routes, health, metrics, OpenAPI.

pub mod admin;
pub mod health;
pub mod inbound;
pub mod problem;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::HttpRequest;
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
    Admin,
}

/// The secrets the API checks, resolved at start-up.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ouiform: SecretString,
    pub atexo_sem: SecretString,
    pub admin: SecretString,
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
            (&self.ouiform, Caller::System(System::Ouiform)),
            (&self.atexo_sem, Caller::System(System::AtexoSem)),
            (&self.admin, Caller::Admin),
        ]
        .into_iter()
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
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub keep_payloads: bool,
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

/// The request id: the caller's `X-Request-Id` when sane, else a new one.
pub fn request_id(req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}
