//! The HTTP API of contract §1: inbound routes, admin routes, health, metrics, OpenAPI.

pub mod admin;
pub mod health;
pub mod inbound;
pub mod openapi;
pub mod problem;
pub mod search;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpMessage, HttpRequest, Responder};
use passerelle_adapters::atexo_sem::DecodeSettings;
use passerelle_adapters::canonical::System;
use passerelle_adapters::merge::Precedence;
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
    /// Each posting system's bearer token (`auth.tokens.<system>`), in the order of
    /// [`crate::systems::POSTING`].
    pub tokens: Vec<(System, SecretString)>,
    pub admin: SecretString,
    /// The operators' token that may see personal data; `None`: nobody may.
    pub admin_personal_data: Option<SecretString>,
    /// The posting systems' other secrets, by key (`<system>.<key>`).
    pub secrets: std::collections::BTreeMap<&'static str, SecretString>,
    /// Salt of the dossier ids: stable for an installation, never shown.
    pub dossier_salt: SecretString,
}

impl Credentials {
    /// A posting system's bearer token.
    pub fn token(&self, system: System) -> Option<&SecretString> {
        self.tokens
            .iter()
            .find(|(s, _)| *s == system)
            .map(|(_, t)| t)
    }

    /// A posting system's other secret, by its key; an empty one (which authenticates nothing)
    /// when it was not resolved at start-up.
    pub fn secret(&self, key: &str) -> SecretString {
        self.secrets
            .get(key)
            .cloned()
            .unwrap_or_else(|| SecretString::from(String::new()))
    }

    /// The caller a bearer token belongs to. Tokens are compared by digest with `subtle`, every
    /// one of them each time: neither how much of a token matches nor which one does shows in
    /// the time taken.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        use subtle::{ConditionallySelectable, ConstantTimeEq};
        let d = |s: &str| Sha256::digest(s.as_bytes());
        let t = d(token);
        // Index 0 is nobody; then each posting system, the operators, the personal-data scope.
        let candidates = self
            .tokens
            .iter()
            .map(|(_, secret)| Some(secret))
            .chain([Some(&self.admin), self.admin_personal_data.as_ref()]);
        let mut found = 0u32;
        for (index, secret) in (1u32..).zip(candidates) {
            let Some(secret) = secret else { continue };
            // An empty token is nobody's (settings refuse one; this is the belt to those braces).
            let usable = subtle::Choice::from(u8::from(!secret.expose_secret().is_empty()));
            let equal = d(secret.expose_secret()).as_slice().ct_eq(t.as_slice()) & usable;
            found.conditional_assign(&index, equal);
        }
        let systems = self.tokens.len();
        match usize::try_from(found).unwrap_or(0) {
            0 => None,
            i if i <= systems => self.tokens.get(i - 1).map(|(s, _)| Caller::System(*s)),
            i if i == systems + 1 => Some(Caller::Admin {
                personal_data: false,
            }),
            _ => Some(Caller::Admin {
                personal_data: true,
            }),
        }
    }
}

/// A request rate per calling system (429 past it): `server.rate_per_second`, with a burst of
/// `server.rate_burst` (GCRA, `governor`).
#[derive(Debug)]
pub struct RateLimiter(governor::DefaultKeyedRateLimiter<System>);

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        let at_least_one =
            |n: u32| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::per_second(at_least_one(rate_per_second))
            .allow_burst(at_least_one(burst));
        Self(governor::RateLimiter::keyed(quota))
    }

    pub fn allow(&self, system: System) -> bool {
        self.0.check_key(&system).is_ok()
    }
}

/// The system a verified client certificate stands for (mutual TLS), put in the connection's
/// data by the listener (see [`crate::tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertifiedSystem(pub System);

/// Where every route is registered. It lists each one too, so that a test can compare what the
/// listeners serve with the OpenAPI document (see [`openapi`]): the listeners below register
/// nothing on the `ServiceConfig` but through here.
pub struct Routes<'c> {
    /// `None`: only listing.
    cfg: Option<&'c mut web::ServiceConfig>,
    listed: Vec<(Method, &'static str)>,
}

impl std::fmt::Debug for Routes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("listed", &self.listed)
            .finish_non_exhaustive()
    }
}

impl<'c> Routes<'c> {
    fn on(cfg: &'c mut web::ServiceConfig) -> Self {
        Self {
            cfg: Some(cfg),
            listed: Vec::new(),
        }
    }

    /// `handler` answers `method` on `path`.
    pub fn route<F, Args>(&mut self, method: Method, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        if let Some(cfg) = self.cfg.as_deref_mut() {
            cfg.route(path, web::method(method.clone()).to(handler));
        }
        self.listed.push((method, path));
        self
    }

    pub fn get<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, path, handler)
    }

    pub fn post<F, Args>(&mut self, path: &'static str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, path, handler)
    }
}

/// The (method, path) of every route `listener` registers (one of the `*_routes` below), in order.
pub fn listed(listener: fn(&mut Routes<'_>)) -> Vec<(Method, &'static str)> {
    let mut routes = Routes {
        cfg: None,
        listed: Vec::new(),
    };
    listener(&mut routes);
    routes.listed
}

/// What the main listener (`server.bind`) serves: see [`main_routes`].
pub fn main_listener(cfg: &mut web::ServiceConfig) {
    main_routes(&mut Routes::on(cfg));
}

/// The operators' surface: see [`admin_routes`].
pub fn admin_scope(cfg: &mut web::ServiceConfig) {
    admin_routes(&mut Routes::on(cfg));
}

/// What the admin listener (`server.admin_bind`) serves: see [`admin_listener_routes`].
pub fn admin_listener(cfg: &mut web::ServiceConfig) {
    admin_listener_routes(&mut Routes::on(cfg));
}

/// The probes, the OpenAPI document and the inbound routes. The admin routes join them only when
/// `server.admin_bind` is empty.
pub fn main_routes(routes: &mut Routes<'_>) {
    routes
        .get("/healthz", health::healthz)
        .get("/readyz", health::readyz)
        .get("/openapi.json", openapi::openapi);
    crate::systems::routes(routes);
}

/// `/metrics`, the admin routes and the console. On the admin listener when `server.admin_bind`
/// is set, so that it answers only there (404 on the main listener); beside the rest otherwise.
/// Full paths, no `/v1` scope: actix does not fall through from one scope to another of the same
/// prefix.
pub fn admin_routes(routes: &mut Routes<'_>) {
    routes
        .get("/metrics", health::metrics)
        .get("/v1/dossiers", search::dossiers)
        .get("/v1/dossiers/{dossier_id}", admin::dossier)
        .get("/v1/dead-letters", admin::dead_letters)
        .get("/v1/unreadable", admin::unreadable)
        .post("/v1/dead-letters/replay", admin::replay_matching)
        .post("/v1/dead-letters/{id}/replay", admin::replay);
    crate::console::routes(routes);
}

/// The operators' surface and the liveness probe.
pub fn admin_listener_routes(routes: &mut Routes<'_>) {
    routes.get("/healthz", health::healthz);
    admin_routes(routes);
}

/// Everything the handlers share, built once by [`crate::startup`].
pub struct AppState {
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn Queue>,
    pub agora: Arc<AgoraClient>,
    pub credentials: Credentials,
    /// The perimeter and the rules every post is decoded with.
    pub decode: DecodeSettings,
    pub precedence: Precedence,
    pub body_limit: usize,
    /// How long a post may take to decode (`server.decode_budget_ms`).
    pub decode_budget: std::time::Duration,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub keep_payloads: bool,
    /// Each posting system's posts since start (`/readyz`).
    pub posts: crate::systems::health::Posts,
    /// What the sender of ATEXO SEM's returns last saw, when it runs (`/readyz`).
    pub returns: Option<Arc<crate::returns::ReturnsHealth>>,
    /// What the Pôle emploi poller's rounds read, when it polls (`/readyz` reports it).
    pub pole_emploi: Option<Arc<crate::pollers::pole_emploi::PollHealth>>,
    /// The last `/readyz` answer and AGORA's last check.
    pub readiness: Arc<health::Readiness>,
    /// The operator console's sessions.
    pub console: crate::console::Sessions,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// The one value of header `name`: `Ok(None)` when absent, `400` when given more than once (two
/// credentials or two signatures: which one counts is not a guess to make).
pub fn single_header<'a>(
    req: &'a HttpRequest,
    name: &'static str,
) -> Result<Option<&'a actix_web::http::header::HeaderValue>, ApiError> {
    let mut values = req.headers().get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::DuplicateHeader(name));
    }
    Ok(first)
}

/// Names the caller: from `Authorization: Bearer …` (the scheme in any case, RFC 9110 §11.1),
/// or from a verified client certificate mapped to a system (`server.tls_client_names`). When
/// both are given they must name the same caller.
pub fn authenticate(req: &HttpRequest, creds: &Credentials) -> Result<Caller, ApiError> {
    let certified = req
        .conn_data::<CertifiedSystem>()
        .map(|c| Caller::System(c.0));
    let Some(header) = single_header(req, "authorization")? else {
        return certified.ok_or(ApiError::Unauthorized(
            "an Authorization: Bearer header is required",
        ));
    };
    let token = header
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))?;
    let caller = creds
        .caller(token)
        .ok_or(ApiError::Unauthorized("the bearer token is not valid"))?;
    match certified {
        Some(c) if c != caller => Err(ApiError::Unauthorized(
            "the bearer token and the client certificate name different callers",
        )),
        _ => Ok(caller),
    }
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
            tokens: vec![
                (System::AtexoSem, secret("a")),
                (System::Ouiform, secret("o")),
            ],
            admin: secret("admin"),
            admin_personal_data: personal_data.map(secret),
            secrets: [("ouiform.hmac_secret", secret("h"))].into(),
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
        assert_eq!(c.caller("a"), Some(Caller::System(System::AtexoSem)));
        assert_eq!(c.caller("nope"), None);
        // Unset: nobody can unmask, and an empty token is nobody's.
        let c = creds(None);
        assert_eq!(c.caller("admin-pd"), None);
        assert_eq!(c.caller(""), None);
    }
}
