//! `/healthz`, `/readyz`, `/metrics`.
//!
//! Probes are cheap whatever their rate: `/readyz` answers from a result at most
//! [`READY_FOR`] old (one probe at a time refreshes it, the others wait for it), and AGORA is
//! reported from what a background check last saw ([`watch_agora`]), never called per probe. Only
//! the ledger and the queue gate readiness; AGORA is reported, not gating (contract §1: ingress
//! keeps queuing while AGORA is down). No driver's error text reaches the body: it is logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::AppState;
use crate::clients::agora::{AgoraClient, Health};
use crate::queue::Flow;

/// How long a `/readyz` result is served again.
pub const READY_FOR: Duration = Duration::from_secs(1);

/// How often the background check asks AGORA's relay whether it answers.
pub const AGORA_CHECK_EVERY: Duration = Duration::from_secs(15);

/// The last `/readyz` answer, and what AGORA's relay last looked like.
#[derive(Debug, Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, bool, Value)>>,
    agora: std::sync::Mutex<Option<Health>>,
    /// The long-running tasks' beats: a stopped one gates readiness.
    pub heartbeats: Arc<crate::supervision::Heartbeats>,
}

impl Readiness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn with_heartbeats(heartbeats: Arc<crate::supervision::Heartbeats>) -> Arc<Self> {
        Arc::new(Self {
            heartbeats,
            ..Self::default()
        })
    }

    /// AGORA's last check, as `/readyz` reports it (`status`, and `detail` when failing).
    pub fn agora_status(&self) -> Value {
        self.agora()
    }

    fn agora(&self) -> Value {
        match &*self
            .agora
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            None => json!({"status": "unknown", "detail": "not checked yet"}),
            Some(Health::Up { .. }) => json!({"status": "ok"}),
            Some(Health::Down { reason }) => json!({"status": "failing", "detail": reason}),
        }
    }
}

/// Checks AGORA's relay every [`AGORA_CHECK_EVERY`] for `/readyz`, until shutdown.
pub async fn watch_agora(
    agora: Arc<AgoraClient>,
    readiness: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let health = agora.health().await;
        *readiness
            .agora
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(health);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(AGORA_CHECK_EVERY) => {}
        }
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    summary = "200 when the process runs",
    responses(
        (status = 200, description = "Running"),
    ),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the ledger and the queue answer and every long-running task runs; 503 naming the
/// failing part. AGORA is reported, with
/// the authenticator in use and when its current token expires (never the token), and so are Pôle
/// emploi and each posting system's posts since start: none gates.
#[utoipa::path(
    get,
    path = "/readyz",
    summary = "200 when the ledger and the queue answer and every long-running task runs; 503 naming the failing part. AGORA, Pôle emploi and the posting systems are reported, not gating.",
    responses(
        (status = 200, description = "Ready", body = crate::routes::openapi::bodies::Readiness),
        (status = 503, description = "Not ready: `status` is `not_ready`, the failing part says so", body = crate::routes::openapi::bodies::Readiness),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut last = state.readiness.last.lock().await;
    let fresh = last
        .as_ref()
        .filter(|(at, _, _)| at.elapsed() < READY_FOR)
        .map(|(_, ok, body)| (*ok, body.clone()));
    let (ok, body) = match fresh {
        Some(answer) => answer,
        None => {
            let (ledger, queue) = tokio::join!(state.ledger.health(), state.queue.health());
            let part = |name: &str, r: Result<(), String>| match r {
                Ok(()) => json!({"status": "ok"}),
                Err(e) => {
                    tracing::warn!(part = name, error = %e, "not ready");
                    json!({"status": "failing", "detail": format!("the {name} does not answer")})
                }
            };
            let (tasks_alive, tasks) = state.readiness.heartbeats.report();
            let ok = ledger.is_ok() && queue.is_ok() && tasks_alive;
            let mut agora = state.readiness.agora();
            agora["authenticator"] = json!(state.agora.auth_status());
            let body = json!({
                "status": if ok { "ready" } else { "not_ready" },
                // Served again for up to a second: when this check was made.
                "checked_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "ledger": part("ledger", ledger.map_err(|e| e.to_string())),
                "queue": part("queue", queue.map_err(|e| e.to_string())),
                // Each worker lane's, the sweeper's and the poller's last beat; a stopped one
                // gates (the process exits to be restarted).
                "tasks": tasks,
                "agora": agora,
                // Reported, never gating: an unreadable answer is Pôle emploi's news, not this
                // replica's inability to accept.
                "pole_emploi": state
                    .pole_emploi
                    .as_ref()
                    .map_or_else(|| json!({"status": "off"}), |h| h.report()),
                // Each posting system's posts since start (and ATEXO SEM's returns): reported,
                // never gating.
                "systems": crate::systems::health(&state),
            });
            *last = Some((Instant::now(), ok, body.clone()));
            (ok, body)
        }
    };
    drop(last);
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus text",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain", body = String),
    ),
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    for lane in Flow::ALL {
        if let Ok(depth) = state.queue.depth(lane).await {
            state
                .metrics
                .queue_depth
                .get_or_create(&crate::metrics::LaneLabel {
                    lane: lane.as_str().into(),
                })
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}
