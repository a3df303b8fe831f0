//! What every inbound route shares: the caller's check, the body's reading, decoding on the
//! blocking pool within its budget, the commit and its answers. The routes themselves are each
//! system's, in [`crate::systems`].
//!
//! A post is decoded and validated whole before anything is stored; then it is committed to the
//! ledger, a task is published for each dossier with the broker's confirm, and only then does the
//! caller get `202` (design.md principle 3). A failure after the ledger commit answers `503`: the
//! caller retries, the ledger recognises the payload, and the tasks are published again (a task is
//! harmless twice).
//!
//! Every post (an export, an orientation) is decoded on the blocking pool, within
//! `server.decode_budget_ms`: decoding is CPU work, and a costly body on an HTTP worker would hold
//! up every request queued behind it on that worker, `/healthz` included.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use passerelle_adapters::canonical::{Flow, System};
use passerelle_adapters::sources::{self, Reading, Record, Source};
use passerelle_adapters::violation::DocumentError;
use passerelle_adapters::{Rule, Violation};
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use super::{authenticate, AppState, Caller};
use crate::intake::{self, IntakeError, Publish};
use crate::ledger::{Accepted, Inbound};

/// Records how a post of `system` (its caller checked) ended, for `/readyz`
/// ([`crate::systems::health`]). A `503` is left out: this replica could not accept, which says
/// nothing of the system's post.
pub(crate) fn noted(
    state: &AppState,
    system: System,
    outcome: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    match outcome.as_ref().err().map(ApiError::kind) {
        Some((503, _)) => {}
        refusal => state.posts.record(system, refusal),
    }
    outcome
}

pub(crate) fn require_caller(
    req: &HttpRequest,
    state: &AppState,
    system: System,
) -> Result<(), ApiError> {
    match authenticate(req, &state.credentials)? {
        Caller::System(s) if s == system => {}
        _ => return Err(ApiError::Forbidden),
    }
    if !state.limiter.allow(system) {
        return Err(ApiError::RateLimited);
    }
    Ok(())
}

pub(crate) fn require_content_type(
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
pub(crate) async fn read_body(
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

pub(crate) fn hash(body: &[u8]) -> String {
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
pub(crate) async fn commit(state: &AppState, inbound: Inbound) -> Result<Accepted, ApiError> {
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

/// A post once decoded (its dossiers: an export's several, or an orientation's one), with what the journal keeps of its body.
pub(crate) struct DecodedPost<T> {
    pub(crate) dossiers: T,
    pub(crate) payload_hash: String,
    pub(crate) masked_payload: Option<Vec<u8>>,
}

/// Decodes a post of `system` through its source in the registry
/// ([`passerelle_adapters::sources::Source::decode`]), on the blocking pool within its budget
/// ([`decode_on_pool`]): its records when all are valid, its hash, and its masked copy when the
/// journal keeps payloads. `counts_dossiers`: the system posts several dossiers at once, so how
/// far decoding got is worth saying in a `413 too-costly`.
pub(crate) async fn decode_post(
    state: &web::Data<AppState>,
    system: System,
    counts_dossiers: bool,
    body: Vec<u8>,
) -> Result<DecodedPost<Vec<Record>>, ApiError> {
    let source = sources::source(system).ok_or(ApiError::Unavailable(
        "this system has no decoder of its own",
    ))?;
    decode_on_pool(state, system, counts_dossiers, move |shared, deadline| {
        let reading = Reading {
            flow: Flow::Sync,
            settings: &shared.decode,
            deadline: Some(deadline),
            session: None,
        };
        source.decode(&body, &reading).map(|records| DecodedPost {
            dossiers: records,
            payload_hash: hash(&body),
            masked_payload: shared
                .keep_payloads
                .then(|| masked(source, &body))
                .flatten(),
        })
    })
    .await
}

/// The body with its personal values masked, for the journal. Masking refuses nothing the decoder
/// just accepted; should that ever change, the message is journalled without its payload rather
/// than refused, and the warning says so.
fn masked(source: &dyn Source, body: &[u8]) -> Option<Vec<u8>> {
    let masked = source.mask_payload(body);
    if masked.is_none() {
        tracing::warn!(
            system = source.system().as_str(),
            "a payload could not be masked; none is kept"
        );
    }
    masked
}

/// Runs `decode` on the blocking pool with the deadline `server.decode_budget_ms` from now (time
/// waiting for a blocking thread counts), and turns what stops it into the answer: the violations
/// found (400 or 422), or `413 too-costly` when the budget ran out before anything was found
/// wrong. The body's hash and masked copy are made there too: both read the whole body.
pub(crate) async fn decode_on_pool<T: Send + 'static>(
    state: &web::Data<AppState>,
    system: System,
    counts_dossiers: bool,
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
                // A post of one dossier: how far into it decoding got says nothing.
                dossiers_read: counts_dossiers.then_some(dossiers_read),
            }
        }
    })
}
