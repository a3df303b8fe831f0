//! OUIFORM in the gateway: its settings section (`ouiform.*`), its inbound route (one signed
//! orientation per post, contract §1) and the signature it is checked by. What an orientation
//! is and how it maps to the canonical dossier is the adapters' [`passerelle_adapters::ouiform`].

use std::path::PathBuf;

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use passerelle_adapters::canonical::System;
use passerelle_adapters::Rule;
use passerelle_schemas::SchemaId;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::{PostingSystem, SecretSetting};
use crate::ledger::{Flow, Inbound, InboundRecord};
use crate::routes::inbound::{
    commit, decode_post, noted, read_body, require_caller, require_content_type, DecodedPost,
};
use crate::routes::problem::ApiError;
use crate::routes::{request_id, AppState, Routes};
use crate::settings::Settings;

/// The key of the orientations' signing secret, as settings and the credentials file name it.
pub const HMAC_SECRET: &str = "ouiform.hmac_secret";

/// The `ouiform` section of the settings.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OuiformSettings {
    /// Shared secret of `X-Ouiform-Signature` (HMAC-SHA256 of the raw body).
    #[schemars(with = "Option<crate::config_reference::Secret>")]
    pub hmac_secret: Option<SecretString>,
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub hmac_secret_file: Option<PathBuf>,
}

/// OUIFORM, which posts orientations.
#[derive(Debug, Clone, Copy)]
pub struct Ouiform;

impl PostingSystem for Ouiform {
    fn system(&self) -> System {
        System::Ouiform
    }

    fn routes(&self, routes: &mut Routes<'_>) {
        routes.post("/v1/inbound/ouiform/orientations", orientation);
    }

    fn secrets<'a>(&self, settings: &'a Settings) -> Vec<SecretSetting<'a>> {
        vec![SecretSetting {
            key: HMAC_SECRET,
            inline: &settings.ouiform.hmac_secret,
            file: &settings.ouiform.hmac_secret_file,
        }]
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        <Api as utoipa::OpenApi>::openapi()
    }

    fn schema_files(&self) -> Vec<(&'static str, SchemaId)> {
        vec![("OuiformOrientation", SchemaId::OuiformOrientation)]
    }
}

/// OUIFORM's part of the OpenAPI document: its route, its bodies, its signature.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(orientation),
    components(schemas(OuiformOrientation, OrientationAccepted)),
    modifiers(&Signature)
)]
struct Api;

/// The orientation's schema: a placeholder, replaced by `schemas/json/ouiform/orientation.schema.json`
/// when the document is assembled, so that the file stays the one source of it.
#[derive(Debug)]
pub struct OuiformOrientation;

impl utoipa::PartialSchema for OuiformOrientation {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .description(Some(SchemaId::OuiformOrientation.file()))
            .into()
    }
}

impl utoipa::ToSchema for OuiformOrientation {}

/// `202` to OUIFORM.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrientationAccepted {
    pub message_id: String,
    pub dossier_id: String,
    #[schema(inline)]
    pub status: crate::routes::openapi::bodies::Accepted,
}

/// `X-Ouiform-Signature`, beside the bearer token (contract §1, *Authentication*).
struct Signature;

impl utoipa::Modify for Signature {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "ouiformSignature",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-Ouiform-Signature",
                    "sha256=<hex HMAC-SHA256 of the raw body with the shared secret>",
                ))),
            );
    }
}

/// `POST /v1/inbound/ouiform/orientations`
#[utoipa::path(
    post,
    operation_id = "ouiform_orientation",
    tag = "inbound",
    path = "/v1/inbound/ouiform/orientations",
    summary = "OUIFORM pushes one orientation (contract §2.2)",
    security(("bearer" = [], "ouiformSignature" = [])),
    request_body(content = OuiformOrientation, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted, durable", body = OrientationAccepted),
        (status = 400, response = inline(crate::routes::openapi::bodies::Unparseable)),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 413, description = "Not accepted, nothing enqueued; do not retry the same body. `type` `urn:passerelle:problem:too-large`: the body is over `server.body_limit_bytes`. `type` `urn:passerelle:problem:too-costly`: decoding it (on the blocking pool) did not finish within `server.decode_budget_ms` and nothing wrong was found before (e.g. millions of properties).", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 415, response = inline(crate::routes::openapi::bodies::WrongContentType)),
        (status = 422, description = "Parsed but invalid: every violation listed, nothing enqueued. Each property the schema does not define is a violation at its own pointer; past 100 violations the list is cut short (`truncated`, and a last entry of rule `xml.truncated` saying how many more, or that decoding stopped at `server.decode_budget_ms`)", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 429, response = inline(crate::routes::openapi::bodies::RateLimited)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn orientation(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A post that is not this system's (no token, another's, over its rate) is not its news.
    require_caller(&req, &state, System::Ouiform)?;
    let outcome = accept(req, payload, state.clone()).await;
    noted(&state, System::Ouiform, outcome)
}

async fn accept(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    require_content_type(&req, &["application/json"], "application/json")?;
    let body = read_body(payload, state.body_limit, Rule::JsonSyntax).await?;
    verify_signature(
        &req,
        &body,
        state.credentials.secret(HMAC_SECRET).expose_secret(),
    )?;
    let DecodedPost {
        dossiers: records,
        payload_hash,
        masked_payload,
    } = decode_post(&state, System::Ouiform, false, body).await?;
    // An orientation is one dossier: its source gives exactly one record once valid.
    let Some(dossier) = records.into_iter().next().map(|r| r.dossier) else {
        return Err(ApiError::Unavailable("the orientation gave no dossier"));
    };
    let dossier_id = dossier
        .key()
        .dossier_id(state.credentials.dossier_salt.expose_secret().as_bytes());
    let inbound = Inbound {
        system: System::Ouiform,
        flow: Flow::Sync,
        payload_hash,
        masked_payload,
        request_id: Some(request_id(&req)),
        records: vec![InboundRecord {
            dossier_id: dossier_id.clone(),
            record: dossier,
            in_perimeter: true,
        }],
    };
    let accepted = commit(&state, inbound).await?;
    state
        .metrics
        .ingress_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Accepted().json(json!({
        "message_id": accepted.message_id,
        "dossier_id": dossier_id,
        "status": "accepted",
    })))
}

/// `X-Ouiform-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; 401 when missing or wrong.
pub fn verify_signature(req: &HttpRequest, body: &[u8], secret: &str) -> Result<(), ApiError> {
    let header = crate::routes::single_header(req, "x-ouiform-signature")?
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "the X-Ouiform-Signature header is required",
        ))?;
    let sig = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(ApiError::Unauthorized(
            "X-Ouiform-Signature must be sha256=<hex>",
        ))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| ApiError::Unauthorized("the signature cannot be checked"))?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| ApiError::Unauthorized("the X-Ouiform-Signature does not match the body"))
}
