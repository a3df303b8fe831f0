//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::queue::Lane;

/// The OpenAPI 3.1 description of contract §1.
pub const OPENAPI: &str = include_str!("../../../schemas/openapi.json");

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the ledger, the queue and AGORA answer; 503 naming the failing part. AGORA's part also
/// says which authenticator is in use and when its current token expires (never the token).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (ledger, queue, agora) = tokio::join!(
        state.ledger.health(),
        state.queue.health(),
        state.agora.health()
    );
    let agora: Result<(), String> = match agora {
        crate::clients::agora::Health::Up { .. } => Ok(()),
        crate::clients::agora::Health::Down { reason } => Err(reason),
    };
    let part = |r: Result<(), String>| match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "failing", "detail": e}),
    };
    let ok = ledger.is_ok() && queue.is_ok() && agora.is_ok();
    let mut agora = part(agora);
    agora["authenticator"] = json!(state.agora.auth_status());
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "ledger": part(ledger.map_err(|e| e.to_string())),
        "queue": part(queue.map_err(|e| e.to_string())),
        "agora": agora,
        // Reported, never gating: an unreadable answer is Pôle emploi's news, not this replica's
        // inability to accept.
        "pole_emploi": state
            .pole_emploi
            .as_ref()
            .map_or_else(|| json!({"status": "off"}), |h| h.report()),
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    for lane in Lane::ALL {
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

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}
