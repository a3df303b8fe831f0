//! ATEXO SEM in the gateway: its settings section (`atexo_sem.*`) and its inbound route (an
//! export of dossiers per post, contract §1). AGORA's returns to it are posted by
//! [`crate::returns`]; what an export is and how it maps to the canonical dossier is the adapters'
//! [`passerelle_adapters::atexo_sem`].

use actix_web::{web, HttpRequest, HttpResponse};
use passerelle_adapters::canonical::System;
use passerelle_adapters::Rule;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{PostingSystem, SecretSetting};
use crate::ledger::{Flow, Inbound, InboundRecord};
use crate::routes::inbound::{
    commit, decode_post, noted, read_body, require_caller, require_content_type, DecodedPost,
};
use crate::routes::problem::ApiError;
use crate::routes::{request_id, AppState, Routes};
use crate::settings::Settings;

/// The `atexo_sem` section of the settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AtexoSemSettings {
    /// Where AGORA's returns are posted; off when empty.
    pub returns_url: String,
}

/// ATEXO SEM, which posts exports of dossiers.
#[derive(Debug, Clone, Copy)]
pub struct AtexoSem;

impl PostingSystem for AtexoSem {
    fn system(&self) -> System {
        System::AtexoSem
    }

    /// Its posts, and the sender of its returns (`off` without `atexo_sem.returns_url`).
    fn health(&self, state: &AppState) -> serde_json::Value {
        let mut health = state.posts.report(System::AtexoSem);
        health["returns"] = state
            .returns
            .as_ref()
            .map_or_else(|| json!({"status": "off"}), |r| r.report());
        health
    }

    fn routes(&self, routes: &mut Routes<'_>) {
        routes.post("/v1/inbound/atexo-sem/dossiers", dossiers);
    }

    fn secrets<'a>(&self, _settings: &'a Settings) -> Vec<SecretSetting<'a>> {
        Vec::new()
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        <Api as utoipa::OpenApi>::openapi()
    }
}

/// ATEXO SEM's part of the OpenAPI document: its route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(dossiers))]
struct Api;

/// `POST /v1/inbound/atexo-sem/dossiers`
#[utoipa::path(
    post,
    operation_id = "atexo_sem_dossiers",
    tag = "inbound",
    path = "/v1/inbound/atexo-sem/dossiers",
    summary = "ATEXO SEM pushes an exportSEM document with 1..n dossiers (contract §2.1), accepted or rejected whole",
    security(("bearer" = [])),
    request_body(content = String, content_type = "application/xml"),
    responses(
        (status = 202, description = "Accepted, durable", body = crate::routes::openapi::bodies::DossiersAccepted),
        (status = 400, response = inline(crate::routes::openapi::bodies::Unparseable)),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 413, description = "Not accepted, nothing enqueued; do not retry the same body. `type` `urn:passerelle:problem:too-large`: the body is over `server.body_limit_bytes`. `type` `urn:passerelle:problem:too-costly`: decoding it did not finish within `server.decode_budget_ms` (e.g. millions of attributes); split the export.", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 415, response = inline(crate::routes::openapi::bodies::WrongContentType)),
        (status = 422, description = "Parsed but invalid: every violation listed (with `truncated` when the list is cut short), nothing enqueued", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 429, response = inline(crate::routes::openapi::bodies::RateLimited)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn dossiers(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A post that is not this system's (no token, another's, over its rate) is not its news.
    require_caller(&req, &state, System::AtexoSem)?;
    let outcome = accept(req, payload, state.clone()).await;
    noted(&state, System::AtexoSem, outcome)
}

async fn accept(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    require_content_type(&req, &["application/xml", "text/xml"], "application/xml")?;
    let body = read_body(payload, state.body_limit, Rule::XmlSyntax).await?;
    let DecodedPost {
        dossiers: decoded,
        payload_hash,
        masked_payload,
    } = decode_post(&state, System::AtexoSem, true, body).await?;
    let salt = state
        .credentials
        .dossier_salt
        .expose_secret()
        .as_bytes()
        .to_vec();
    let records: Vec<InboundRecord> = decoded
        .into_iter()
        .map(|d| InboundRecord {
            dossier_id: d.dossier.key().dossier_id(&salt),
            in_perimeter: d.out_of_perimeter.is_none(),
            record: d.dossier,
        })
        .collect();
    let statuses: Vec<_> = records
        .iter()
        .map(|r| {
            json!({
                "dossier_id": r.dossier_id,
                "status": if r.in_perimeter { "accepted" } else { "out_of_perimeter" },
            })
        })
        .collect();
    let inbound = Inbound {
        system: System::AtexoSem,
        flow: Flow::Sync,
        payload_hash,
        masked_payload,
        request_id: Some(request_id(&req)),
        records,
    };
    let accepted = commit(&state, inbound).await?;
    state
        .metrics
        .ingress_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Accepted().json(json!({
        "message_id": accepted.message_id,
        "dossiers": statuses,
    })))
}
