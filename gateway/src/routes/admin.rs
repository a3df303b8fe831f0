//! Admin routes: a dossier's state and history, the dead letters and their replay.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::problem::ApiError;
use super::{authenticate, AppState, Caller};
use crate::ledger::{DeadLetterFilter, LedgerError, AGORA};
use crate::queue::{Lane, Task};

fn require_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match authenticate(req, &state.credentials)? {
        Caller::Admin => Ok(()),
        Caller::System(_) => Err(ApiError::Forbidden),
    }
}

fn unavailable(e: LedgerError) -> ApiError {
    match e {
        LedgerError::NotFound { what } => ApiError::NotFound(what),
        other => ApiError::Unavailable(format!("the ledger is unavailable ({other})")),
    }
}

/// `GET /v1/dossiers/{id}`: the merged dossier (personal fields masked), its delivery state and
/// history.
pub async fn dossier(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let id = path.into_inner();
    let row = state
        .ledger
        .dossier(&id)
        .await
        .map_err(unavailable)?
        .ok_or(ApiError::NotFound("dossier"))?;
    let journal = state.ledger.journal(&id).await.map_err(unavailable)?;
    let operations = state
        .ledger
        .operations(&id, AGORA)
        .await
        .map_err(unavailable)?;
    let mut desired = serde_json::to_value(&row.desired).unwrap_or_default();
    mask_trainee(&mut desired);
    Ok(HttpResponse::Ok().json(json!({
        "dossier_id": row.dossier_id,
        "dossier": desired,
        "desired_version": row.desired_version,
        "flow": row.flow,
        "in_perimeter": row.in_perimeter,
        "delivery": {
            "agora": {
                "status": row.delivery.status,
                "delivered": row.delivery.delivered,
                "delivered_version": row.delivery.delivered_version,
                "attempts": row.delivery.attempts,
                "last_error": row.delivery.last_error,
                "waiting_for": row.delivery.waiting_for,
            }
        },
        "history": { "messages": journal, "operations": operations },
    })))
}

fn mask_trainee(v: &mut serde_json::Value) {
    if let Some(t) = v.get_mut("trainee").and_then(|t| t.as_object_mut()) {
        if let Some(nir) = t
            .get("nir")
            .and_then(|n| n.as_str())
            .map(passerelle_adapters::canonical::mask_nir)
        {
            t.insert("nir".into(), json!(nir));
        }
        for k in ["birth_name", "usage_name", "first_names", "birth_date"] {
            if t.contains_key(k) {
                t.insert(k.into(), json!("***"));
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterQuery {
    destination: Option<String>,
    code: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    include_replayed: bool,
}

/// `GET /v1/dead-letters`
pub async fn dead_letters(
    req: HttpRequest,
    q: web::Query<DeadLetterQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let q = q.into_inner();
    let filter = DeadLetterFilter {
        destination: q.destination,
        code: q.code,
        since: q.since,
        until: q.until,
        include_replayed: q.include_replayed,
    };
    let list = state
        .ledger
        .dead_letters(&filter)
        .await
        .map_err(unavailable)?;
    let items: Vec<_> = list
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "dossier_id": d.dossier_id, "destination": d.destination,
                "reason": d.reason.code(), "detail": d.reason, "attempts": d.attempts,
                "first_failure": d.first_failure, "last_failure": d.last_failure,
                "replayed_at": d.replayed_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

/// `POST /v1/dead-letters/{id}/replay`: the dossier is reconciled again.
pub async fn replay(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let dossier_id = state
        .ledger
        .replay(&path.into_inner())
        .await
        .map_err(unavailable)?;
    let task = Task {
        dossier_id: dossier_id.clone(),
        request_id: Some(super::request_id(&req)),
        attempt: 0,
    };
    state
        .queue
        .publish(Lane::Sync, &task)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the queue did not confirm ({e})")))?;
    Ok(HttpResponse::Accepted().json(json!({"dossier_id": dossier_id, "status": "replaying"})))
}
