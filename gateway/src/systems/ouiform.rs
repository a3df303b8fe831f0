//! OUIFORM in the gateway: its settings section (`ouiform.*`), its inbound route (one signed
//! orientation per post, contract §1) and the signature it is checked by. What an orientation
//! is and how it maps to the canonical dossier is the adapters' [`passerelle_adapters::ouiform`].

use std::path::PathBuf;

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use passerelle_adapters::canonical::System;
use passerelle_adapters::{ouiform, Rule};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::{PostingSystem, SecretSetting};
use crate::ledger::{Flow, Inbound, InboundRecord};
use crate::routes::inbound::{
    commit, decode_on_pool, hash, read_body, require_caller, require_content_type, DecodedPost,
};
use crate::routes::problem::ApiError;
use crate::routes::{request_id, AppState};
use crate::settings::Settings;

/// The key of the orientations' signing secret, as settings and the credentials file name it.
pub const HMAC_SECRET: &str = "ouiform.hmac_secret";

/// The `ouiform` section of the settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuiformSettings {
    /// Shared secret of `X-Ouiform-Signature` (HMAC-SHA256 of the raw body).
    pub hmac_secret: Option<SecretString>,
    pub hmac_secret_file: Option<PathBuf>,
}

/// OUIFORM, which posts orientations.
#[derive(Debug, Clone, Copy)]
pub struct Ouiform;

impl PostingSystem for Ouiform {
    fn system(&self) -> System {
        System::Ouiform
    }

    fn routes(&self, cfg: &mut web::ServiceConfig) {
        cfg.route(
            "/v1/inbound/ouiform/orientations",
            web::post().to(orientation),
        );
    }

    fn secrets<'a>(&self, settings: &'a Settings) -> Vec<SecretSetting<'a>> {
        vec![SecretSetting {
            key: HMAC_SECRET,
            inline: &settings.ouiform.hmac_secret,
            file: &settings.ouiform.hmac_secret_file,
        }]
    }
}

/// `POST /v1/inbound/ouiform/orientations`
pub async fn orientation(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    require_caller(&req, &state, System::Ouiform)?;
    require_content_type(&req, &["application/json"], "application/json")?;
    let body = read_body(payload, state.body_limit, Rule::JsonSyntax).await?;
    verify_signature(
        &req,
        &body,
        state.credentials.secret(HMAC_SECRET).expose_secret(),
    )?;
    let DecodedPost {
        dossiers: dossier,
        payload_hash,
        masked_payload,
    } = decode_on_pool(&state, System::Ouiform, false, move |shared, deadline| {
        ouiform::decode_within(&body, &shared.rules, Some(deadline)).map(|dossier| DecodedPost {
            dossiers: dossier,
            payload_hash: hash(&body),
            masked_payload: shared
                .keep_payloads
                .then(|| ouiform::mask::mask_payload(&body))
                .flatten(),
        })
    })
    .await?;
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
