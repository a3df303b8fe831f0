//! Inbound routes: OUIFORM orientations and ATEXO SEM dossiers.
//!
//! A post is decoded and validated whole before anything is stored; then it is committed to the
//! ledger, a task is published for each dossier with the broker's confirm, and only then does the
//! caller get `202` (design.md principle 3). A failure after the ledger commit answers `503`: the
//! caller retries, the ledger recognises the payload, and the tasks are published again (a task is
//! harmless twice).
//!
//! Every post (an ATEXO SEM export, an OUIFORM orientation) is decoded on the blocking pool, within
//! `server.decode_budget_ms`: decoding is CPU work, and a costly body on an HTTP worker would hold
//! up every request queued behind it on that worker, `/healthz` included.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use passerelle_adapters::atexo_sem::{self, Flow as SemFlow, Perimeter};
use passerelle_adapters::canonical::System;
use passerelle_adapters::violation::DocumentError;
use passerelle_adapters::{ouiform, Rule, Violation};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use super::{authenticate, request_id, AppState, Caller};
use crate::intake::{self, IntakeError, Publish};
use crate::ledger::{Accepted, Flow, Inbound, InboundRecord};

fn require_caller(req: &HttpRequest, state: &AppState, system: System) -> Result<(), ApiError> {
    match authenticate(req, &state.credentials)? {
        Caller::System(s) if s == system => {}
        _ => return Err(ApiError::Forbidden),
    }
    if !state.limiter.allow(system) {
        return Err(ApiError::RateLimited);
    }
    Ok(())
}

pub(super) fn require_content_type(
    req: &HttpRequest,
    accepted: &[&str],
    expected: &'static str,
) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if accepted.contains(&ct.as_str()) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(expected))
    }
}

/// Reads the body up to the configured limit (413 past it, before reading the rest).
pub(super) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    syntax: Rule,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::Unparseable(vec![Violation::new(
                "",
                syntax,
                "the body could not be read to its end",
            )])
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn rejected(state: &AppState, system: System, violations: Vec<Violation>) -> ApiError {
    for v in &violations {
        state
            .metrics
            .rejected
            .get_or_create(&crate::metrics::RuleLabel {
                system: system.as_str().into(),
                rule: v.rule.code().into(),
            })
            .inc();
    }
    // A cut-short list's last entry is no fault of its own: it does not make a list of syntax
    // faults a 422.
    if violations
        .iter()
        .filter(|v| v.rule != Rule::XmlTruncated)
        .all(|v| v.rule.is_syntax())
    {
        ApiError::Unparseable(violations)
    } else {
        ApiError::Invalid(violations)
    }
}

/// Commits to the ledger, then publishes a task per in-perimeter dossier and waits for confirms.
async fn commit(state: &AppState, inbound: Inbound) -> Result<Accepted, ApiError> {
    let system = inbound.system;
    let accepted = intake::accept_and_publish(
        &*state.ledger,
        &*state.queue,
        &state.precedence,
        inbound,
        Publish::InPerimeter,
    )
    .await
    .map_err(|e| match e {
        IntakeError::Rejected(v) => rejected(state, system, v),
        IntakeError::Ledger(e) => {
            tracing::warn!(error = %e, "an inbound message was not accepted: the ledger is unavailable");
            ApiError::Unavailable("the ledger is unavailable")
        }
        IntakeError::Queue(e) => {
            tracing::warn!(error = %e, "an inbound message was committed but a task was not confirmed");
            ApiError::Unavailable("the queue did not confirm")
        }
    })?;
    state
        .metrics
        .received
        .get_or_create(&crate::metrics::SystemLabel {
            system: system.as_str().into(),
        })
        .inc();
    Ok(accepted)
}

/// `POST /v1/inbound/ouiform/orientations`
#[utoipa::path(
    post,
    path = "/v1/inbound/ouiform/orientations",
    summary = "OUIFORM pushes one orientation (contract §2.2)",
    security(("bearer" = [], "ouiformSignature" = [])),
    request_body(content = crate::routes::openapi::bodies::OuiformOrientation, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted, durable", body = crate::routes::openapi::bodies::OrientationAccepted),
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
pub async fn ouiform_orientation(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    require_caller(&req, &state, System::Ouiform)?;
    require_content_type(&req, &["application/json"], "application/json")?;
    let body = read_body(payload, state.body_limit, Rule::JsonSyntax).await?;
    verify_signature(&req, &body, state.credentials.ouiform_hmac.expose_secret())?;
    let DecodedPost {
        dossiers: dossier,
        payload_hash,
        masked_payload,
    } = decode_on_pool(&state, System::Ouiform, move |shared, deadline| {
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

/// `POST /v1/inbound/atexo-sem/dossiers`
#[utoipa::path(
    post,
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
pub async fn atexo_sem_dossiers(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    require_caller(&req, &state, System::AtexoSem)?;
    require_content_type(&req, &["application/xml", "text/xml"], "application/xml")?;
    let body = read_body(payload, state.body_limit, Rule::XmlSyntax).await?;
    let DecodedPost {
        dossiers: decoded,
        payload_hash,
        masked_payload,
    } = decode_on_pool(&state, System::AtexoSem, move |shared, deadline| {
        atexo_sem::decode_document_within(&body, SemFlow::Sync, &shared.decode, deadline).map(
            |dossiers| DecodedPost {
                dossiers,
                payload_hash: hash(&body),
                masked_payload: shared
                    .keep_payloads
                    .then(|| mask_atexo_sem(&body))
                    .flatten(),
            },
        )
    })
    .await?;
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
            in_perimeter: d.perimeter == Perimeter::In,
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

/// A post once decoded (its dossiers: an export's `Vec<SemDossier>`, or an orientation's one
/// `Dossier`), with what the journal keeps of its body.
struct DecodedPost<T> {
    dossiers: T,
    payload_hash: String,
    masked_payload: Option<Vec<u8>>,
}

/// Runs `decode` on the blocking pool with the deadline `server.decode_budget_ms` from now (time
/// waiting for a blocking thread counts), and turns what stops it into the answer: the violations
/// found (400 or 422), or `413 too-costly` when the budget ran out before anything was found
/// wrong. The body's hash and masked copy are made there too: both read the whole body.
async fn decode_on_pool<T: Send + 'static>(
    state: &web::Data<AppState>,
    system: System,
    decode: impl FnOnce(&AppState, std::time::Instant) -> Result<DecodedPost<T>, DocumentError>
        + Send
        + 'static,
) -> Result<DecodedPost<T>, ApiError> {
    let budget = state.decode_budget;
    let deadline = std::time::Instant::now() + budget;
    let shared = state.clone();
    let outcome = web::block(move || decode(&shared, deadline))
        .await
        .map_err(|_| {
            tracing::error!(
                system = system.as_str(),
                "the decoder stopped before its end; the post was not accepted"
            );
            ApiError::Unavailable("the decoder stopped unexpectedly")
        })?;
    outcome.map_err(|e| match e {
        DocumentError::Invalid(v) => rejected(state, system, v.0),
        DocumentError::OverBudget { dossiers_read } => {
            tracing::warn!(
                system = system.as_str(),
                budget_ms = budget.as_millis(),
                dossiers_read,
                "a post could not be decoded within its budget; it was refused (413)"
            );
            ApiError::TooCostly {
                budget_ms: budget.as_millis(),
                // An orientation is one dossier: how far into it decoding got says nothing.
                dossiers_read: (system != System::Ouiform).then_some(dossiers_read),
            }
        }
    })
}

/// `X-Ouiform-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; 401 when missing or wrong.
pub fn verify_signature(req: &HttpRequest, body: &[u8], secret: &str) -> Result<(), ApiError> {
    let header = super::single_header(req, "x-ouiform-signature")?
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

/// The export with the trainees' personal values masked, for the journal. Masking refuses nothing
/// the decoder just accepted; should that ever change, the message is journalled without its
/// payload rather than refused, and the warning says why.
fn mask_atexo_sem(body: &[u8]) -> Option<Vec<u8>> {
    atexo_sem::mask_export(body)
        .map_err(|e| {
            // MaskError's messages quote nothing of the document.
            tracing::warn!(error = %e, "the ATEXO SEM payload could not be masked; none is kept");
        })
        .ok()
}
