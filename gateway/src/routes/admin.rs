//! Admin routes: a dossier's trace, the dead letters and their replay, one by one or by filter.
//!
//! A replay is committed to the ledger first (the dead letter marked, the dossier owed again under
//! a new replay id), then its task is published with the broker's confirm. The other order would
//! let a worker find the dossier still dead and drop the task. When the publish fails after the
//! commit, the answer still says `202` with `"queued": false`: the replay is durable, and the
//! sweeper of a running gateway re-enqueues a pending dossier left without a task.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use passerelle_adapters::{Rule, Violation};
use serde_json::{json, Value};
use tracing::{info, warn};

use super::inbound::{read_body, require_content_type};
use super::problem::ApiError;
use super::{authenticate, AppState, Caller};
use crate::ledger::{DeadLetter, DeadLetterFilter, DeadReason, LedgerError, Replayed, AGORA};
use crate::queue::{Flow, Task};
use passerelle_adapters::agora::model::Anomaly;

/// The caller must be an operator; `Ok(true)` when its token may see personal data.
pub(crate) fn require_admin(req: &HttpRequest, state: &AppState) -> Result<bool, ApiError> {
    match authenticate(req, &state.credentials)? {
        Caller::Admin { personal_data } => Ok(personal_data),
        Caller::System(_) => Err(ApiError::Forbidden),
    }
}

pub(crate) fn unavailable(e: LedgerError) -> ApiError {
    match e {
        LedgerError::NotFound { what } => ApiError::NotFound(what),
        LedgerError::AlreadyReplayed {
            id,
            dossier_id,
            replayed_at,
        } => ApiError::AlreadyReplayed {
            id,
            dossier_id,
            replayed_at,
        },
        other => {
            warn!(error = %other, "an admin request found the ledger unavailable");
            ApiError::Unavailable("the ledger is unavailable")
        }
    }
}

/// `GET /v1/dossiers/{id}`: the merged dossier (personal fields masked unless the token may see
/// them), its delivery state, and its trace: the source messages that shaped it, each AGORA call
/// with its answer, and its dead letters with their replay lineage.
#[utoipa::path(
    get,
    path = "/v1/dossiers/{dossier_id}",
    summary = "A dossier's trace: canonical state, delivery state, source messages, AGORA calls, dead letters and their replay lineage",
    description = "The merged canonical dossier with its trainee's personal fields (NIR, names, birth date) masked, unless the bearer token is `auth.tokens.admin_personal_data` (`personal_data` says which). The history lists each source message that shaped the dossier (the journal), each AGORA call with its answer, and the dossier's dead letters: a replayed one has `replayed_at` and the `replay_id` of the attempt it opened; the AGORA calls of that attempt carry the same `replay_id`, and a dead letter that ended it names it in `after_replay`.",
    security(("bearer" = [])),
    params(("dossier_id" = String, Path)),
    responses(
        (status = 200, description = "The dossier", body = crate::routes::openapi::bodies::DossierTrace),
        (status = 404, description = "No such dossier", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn dossier(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let personal_data = require_admin(&req, &state)?;
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
    let dead_letters = state
        .ledger
        .dead_letters(&DeadLetterFilter {
            dossier_id: Some(id.clone()),
            include_replayed: true,
            ..DeadLetterFilter::default()
        })
        .await
        .map_err(unavailable)?;
    let returns = state.ledger.returns_of(&id).await.map_err(unavailable)?;
    let mut desired = serde_json::to_value(&row.desired).unwrap_or_default();
    if personal_data {
        // An audit line: who saw personal data is a question operators get asked.
        info!(
            dossier_id = %id,
            request_id = %super::request_id(&req),
            "a dossier's personal fields were shown to the personal-data admin token"
        );
    } else {
        passerelle_adapters::canonical::mask_dossier_json(&mut desired);
    }
    Ok(HttpResponse::Ok().json(json!({
        "dossier_id": row.dossier_id,
        "dossier": desired,
        "personal_data": if personal_data { "shown" } else { "masked" },
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
                "replay_id": row.delivery.replay_id,
            }
        },
        "history": {
            "messages": journal,
            "operations": operations,
            "dead_letters": dead_letters
                .iter()
                .map(|d| dead_letter_json(d, personal_data))
                .collect::<Vec<_>>(),
            // Returns to ATEXO SEM from the outbox: codes and numbers only, no `libelle`.
            "returns": returns,
        },
    })))
}

/// A dead letter as the API and `passerelle dead-letters list --format json` show it. AGORA's
/// `libelle`s (free text that may quote a NIR or a name) are masked unless `personal_data` (the
/// personal-data admin token; the CLI never asks for them).
pub fn dead_letter_json(d: &DeadLetter, personal_data: bool) -> Value {
    let detail = match &d.reason {
        DeadReason::Rejected { anomalies } if !personal_data => DeadReason::Rejected {
            anomalies: anomalies.iter().map(Anomaly::masked).collect(),
        },
        other => other.clone(),
    };
    json!({
        "id": d.id, "dossier_id": d.dossier_id, "destination": d.destination,
        "reason": d.reason.code(), "detail": detail, "attempts": d.attempts,
        "first_failure": d.first_failure, "last_failure": d.last_failure,
        "replayed_at": d.replayed_at, "replay_id": d.replay_id, "after_replay": d.after_replay,
    })
}

/// Stores a checked value, or keeps its violation: every field is checked, all violations listed.
pub(super) fn keep<T>(slot: &mut T, checked: Result<T, Violation>, errors: &mut Vec<Violation>) {
    match checked {
        Ok(v) => *slot = v,
        Err(v) => errors.push(v),
    }
}

pub(super) fn not_empty(pointer: &str, value: String) -> Result<String, Violation> {
    if value.trim().is_empty() {
        Err(Violation::new(
            pointer,
            Rule::FieldRequired,
            "must not be empty",
        ))
    } else {
        Ok(value)
    }
}

pub(super) fn date_time(pointer: &str, value: &str) -> Result<DateTime<Utc>, Violation> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Violation::new(
                pointer,
                Rule::SchemaFormat,
                "must be an RFC 3339 date-time such as 2019-09-02T10:15:00Z",
            )
        })
}

/// The query string as (key, value) pairs, in order, for routes that refuse unknown keys.
pub(super) fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| {
            ApiError::Unparseable(vec![Violation::new(
                "",
                Rule::SchemaOther,
                "the query string cannot be read",
            )])
        })
}

/// `GET /v1/dead-letters?destination=&code=&since=&until=&dossier_id=&include_replayed=`: the
/// dead letters, oldest failure first. An unknown parameter is refused rather than ignored: a
/// misspelt filter would otherwise list everything.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    summary = "Dead letters, oldest failure first: id, dossier_id, destination, reason, attempts, first/last failure, replay lineage",
    description = "Every filter given must match; an unknown parameter is refused (422) rather than ignored. Replayed dead letters are left out unless `include_replayed=true`.",
    security(("bearer" = [])),
    params(crate::routes::openapi::bodies::DeadLetterQuery),
    responses(
        (status = 200, description = "The list", body = Vec<crate::routes::openapi::bodies::DeadLetter>),
        (status = 422, description = "A filter is invalid or unknown: each one named with its rule", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn dead_letters(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let personal_data = require_admin(&req, &state)?;
    let pairs = query_pairs(&req)?;
    let mut filter = DeadLetterFilter::default();
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let p = format!("/{key}");
        let e = &mut errors;
        match key.as_str() {
            "destination" => keep(&mut filter.destination, not_empty(&p, value).map(Some), e),
            "code" => keep(&mut filter.code, not_empty(&p, value).map(Some), e),
            "dossier_id" => keep(&mut filter.dossier_id, not_empty(&p, value).map(Some), e),
            "since" => keep(&mut filter.since, date_time(&p, &value).map(Some), e),
            "until" => keep(&mut filter.until, date_time(&p, &value).map(Some), e),
            "include_replayed" => {
                let flag = match value.as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(Violation::new(
                        &p,
                        Rule::SchemaEnum,
                        "must be true or false",
                    )),
                };
                keep(&mut filter.include_replayed, flag, e);
            }
            _ => e.push(Violation::new(
                &p,
                Rule::SchemaAdditional,
                "is not a filter of the dead letters (destination, code, since, until, \
                 dossier_id, include_replayed)",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let list = state
        .ledger
        .dead_letters(&filter)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(
        list.iter()
            .map(|d| dead_letter_json(d, personal_data))
            .collect::<Vec<_>>(),
    ))
}

/// Publishes one task per dossier replayed (with the broker's confirm); returns the dossiers whose
/// task the queue did not confirm.
pub(crate) async fn publish(
    state: &AppState,
    replayed: &[Replayed],
    request_id: &str,
) -> std::collections::HashSet<String> {
    let mut failed = std::collections::HashSet::new();
    let mut done = std::collections::HashSet::new();
    for r in replayed {
        if !done.insert(r.dossier_id.as_str()) {
            continue;
        }
        let task = Task::dossier(r.dossier_id.clone(), Some(request_id.to_string()));
        if let Err(e) = state.queue.publish(Flow::Sync, &task).await {
            warn!(
                dossier_id = %r.dossier_id,
                replay_id = %r.replay_id,
                error = %e,
                "a replay is recorded but its task was not confirmed; the sweeper will enqueue it"
            );
            failed.insert(r.dossier_id.clone());
        }
    }
    failed
}

fn replayed_json(r: &Replayed, failed: &std::collections::HashSet<String>) -> Value {
    json!({
        "id": r.dead_letter_id,
        "dossier_id": r.dossier_id,
        "destination": r.destination,
        "replay_id": r.replay_id,
        "replayed_at": r.replayed_at,
        "queued": !failed.contains(&r.dossier_id),
    })
}

/// `POST /v1/dead-letters/{id}/replay`: the dossier is reconciled again under a new replay id.
/// `409` when this dead letter was already replayed, `404` when there is no such dead letter.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    summary = "Reconcile the dossier again under a new replay id; the dead letter stays, marked replayed",
    description = "Committed to the ledger, then the dossier's task is published with the broker's confirm. `queued: false` means the broker did not confirm: the replay is recorded all the same and the gateway's sweeper enqueues the dossier later. A dead letter is replayed once: if the dossier fails again, that is a new dead letter, to replay in turn.",
    security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 202, description = "Replaying", body = crate::routes::openapi::bodies::Replayed),
        (status = 404, description = "No such dead letter", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "This dead letter was already replayed (the detail says when, and where to find a newer one)", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn replay(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let request_id = super::request_id(&req);
    let replayed = state
        .ledger
        .replay(&path.into_inner())
        .await
        .map_err(unavailable)?;
    info!(
        dead_letter = %replayed.dead_letter_id,
        dossier_id = %replayed.dossier_id,
        replay_id = %replayed.replay_id,
        request_id = %request_id,
        "dead letter replayed"
    );
    let failed = publish(&state, std::slice::from_ref(&replayed), &request_id).await;
    let mut body = replayed_json(&replayed, &failed);
    body["status"] = json!("replaying");
    Ok(HttpResponse::Accepted().json(body))
}

/// The filter of a bulk replay, from its JSON body: the list's filters (no `include_replayed`: a
/// replayed dead letter is not replayed again) and `all`. An empty filter is refused unless `all`
/// is `true`, so that nobody replays every dead letter by leaving the filter out.
fn bulk_filter(body: &[u8]) -> Result<DeadLetterFilter, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::Unparseable(vec![Violation::new(
                "",
                Rule::JsonSyntax,
                format!(
                    "the body is not JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )])
        })?
    };
    let Some(fields) = value.as_object() else {
        return Err(ApiError::Invalid(vec![Violation::new(
            "",
            Rule::SchemaType,
            "must be a JSON object",
        )]));
    };
    let mut filter = DeadLetterFilter::default();
    let mut all = false;
    let mut errors = Vec::new();
    let text = |pointer: &str, v: &Value| -> Result<String, Violation> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| Violation::new(pointer, Rule::SchemaType, "must be a string"))
            .and_then(|s| not_empty(pointer, s))
    };
    for (key, v) in fields {
        let p = format!("/{key}");
        let e = &mut errors;
        let time = |s: String| date_time(&p, &s).map(Some);
        match key.as_str() {
            "destination" => keep(&mut filter.destination, text(&p, v).map(Some), e),
            "code" => keep(&mut filter.code, text(&p, v).map(Some), e),
            "dossier_id" => keep(&mut filter.dossier_id, text(&p, v).map(Some), e),
            "since" => keep(&mut filter.since, text(&p, v).and_then(time), e),
            "until" => keep(&mut filter.until, text(&p, v).and_then(time), e),
            "all" => {
                let flag = v
                    .as_bool()
                    .ok_or_else(|| Violation::new(&p, Rule::SchemaType, "must be a boolean"));
                keep(&mut all, flag, e);
            }
            _ => e.push(Violation::new(
                &p,
                Rule::SchemaAdditional,
                "is not a filter of a bulk replay (destination, code, since, until, dossier_id, \
                 all)",
            )),
        }
    }
    if errors.is_empty() && filter.is_empty() && !all {
        errors.push(Violation::new(
            "/all",
            Rule::FieldRequired,
            "an empty filter would replay every dead letter: give destination, code, since, \
             until or dossier_id, or set all to true",
        ));
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// `POST /v1/dead-letters/replay` with a filter (see [`bulk_filter`]): replays every dead letter
/// not yet replayed that it selects; `202` with how many and which.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/replay",
    summary = "Replay every dead letter not yet replayed that a filter selects",
    description = "The body names the filter (the list's filters, all of which must match) or says `{\"all\": true}`: an empty filter is refused (422 on `/all`), so that nobody replays every dead letter by accident. Each dead letter is replayed as `POST /v1/dead-letters/{id}/replay` does, in one ledger transaction, oldest first.",
    security(("bearer" = [])),
    request_body(content = crate::routes::openapi::bodies::ReplayFilter, content_type = "application/json"),
    responses(
        (status = 202, description = "Replaying: how many and which", body = crate::routes::openapi::bodies::ReplayedMany),
        (status = 400, response = inline(crate::routes::openapi::bodies::Unparseable)),
        (status = 413, description = "Body too large", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The content type must be application/json", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid or unknown filter field, or an empty filter without `all: true`", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn replay_matching(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let body = read_body(payload, state.body_limit, Rule::JsonSyntax).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        require_content_type(&req, &["application/json"], "application/json")?;
    }
    let filter = bulk_filter(&body)?;
    let request_id = super::request_id(&req);
    let replayed = state
        .ledger
        .replay_matching(&filter)
        .await
        .map_err(unavailable)?;
    info!(
        count = replayed.len(),
        destination = filter.destination.as_deref().unwrap_or(""),
        code = filter.code.as_deref().unwrap_or(""),
        request_id = %request_id,
        "dead letters replayed by filter"
    );
    let failed = publish(&state, &replayed, &request_id).await;
    Ok(HttpResponse::Accepted().json(json!({
        "count": replayed.len(),
        "ids": replayed.iter().map(|r| r.dead_letter_id.as_str()).collect::<Vec<_>>(),
        "replayed": replayed.iter().map(|r| replayed_json(r, &failed)).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/unreadable?system=&since=&limit=`: what polled sources sent that could not be read
/// (a Pôle emploi registration with a field of the wrong type, say), most recently seen first,
/// each with its violations and its item masked (no personal value, whatever the token). The same
/// item seen at every poll is one entry with its count.
#[utoipa::path(
    get,
    path = "/v1/unreadable",
    summary = "What polled sources sent that could not be read (e.g. a Pôle emploi registration with a field of the wrong type), masked, with its violations; the same item seen at every poll is one entry",
    security(("bearer" = [])),
    params(crate::routes::openapi::bodies::UnreadableQuery),
    responses(
        (status = 200, description = "The unreadable messages, most recently seen first", body = Vec<crate::routes::openapi::bodies::Unreadable>),
        (status = 422, description = "A filter is invalid or unknown: each one named with its rule", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn unreadable(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let pairs = query_pairs(&req)?;
    let (mut system, mut since, mut limit) = (None, None, 100u32);
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let p = format!("/{key}");
        let e = &mut errors;
        match key.as_str() {
            "system" => {
                let parsed = passerelle_adapters::canonical::System::ALL
                    .iter()
                    .copied()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| {
                        Violation::new(
                            &p,
                            Rule::SchemaEnum,
                            format!(
                                "must be one of {}",
                                passerelle_adapters::canonical::System::ALL
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    });
                keep(&mut system, parsed.map(Some), e);
            }
            "since" => keep(&mut since, date_time(&p, &value).map(Some), e),
            "limit" => {
                let parsed = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        Violation::new(
                            &p,
                            Rule::SchemaRange,
                            "must be a whole number from 1 to 1000",
                        )
                    });
                keep(&mut limit, parsed, e);
            }
            _ => e.push(Violation::new(
                &p,
                Rule::SchemaAdditional,
                "is not a filter of the unreadable messages (system, since, limit)",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let rows = state
        .ledger
        .unreadable(system, since, limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(e: ApiError) -> Vec<(String, &'static str)> {
        match e {
            ApiError::Invalid(v) | ApiError::Unparseable(v) => {
                v.into_iter().map(|v| (v.pointer, v.rule.code())).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bulk_replay_names_what_it_replays_or_says_all() {
        for empty in [&b""[..], b"  ", b"{}", b"{\"all\": false}"] {
            let e = bulk_filter(empty).expect_err("refused");
            assert_eq!(
                violations(e),
                vec![("/all".to_string(), "field.required")],
                "{}",
                String::from_utf8_lossy(empty)
            );
        }
        assert!(bulk_filter(b"{\"all\": true}").expect("all").is_empty());
        let f = bulk_filter(
            br#"{"code": "AG-CERTIF", "destination": "agora", "since": "2019-09-02T10:15:00+02:00"}"#,
        )
        .expect("a filter");
        assert_eq!(f.code.as_deref(), Some("AG-CERTIF"));
        assert_eq!(f.destination.as_deref(), Some("agora"));
        assert_eq!(
            f.since.map(|t| t.to_rfc3339()),
            Some("2019-09-02T08:15:00+00:00".to_string())
        );
    }

    #[test]
    fn a_bad_bulk_filter_names_each_field_and_rule() {
        let e = bulk_filter(
            br#"{"code": 3, "since": "yesterday", "include_replayed": true, "all": "yes", "until": ""}"#,
        )
        .expect_err("refused");
        let mut got = violations(e);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("/all".to_string(), "schema.type"),
                ("/code".to_string(), "schema.type"),
                (
                    "/include_replayed".to_string(),
                    "schema.additional_property"
                ),
                ("/since".to_string(), "schema.format"),
                ("/until".to_string(), "field.required"),
            ]
        );
        assert_eq!(
            violations(bulk_filter(b"{\"code\": ").expect_err("syntax")),
            vec![(String::new(), "json.syntax")]
        );
        assert_eq!(
            violations(bulk_filter(b"[]").expect_err("not an object")),
            vec![(String::new(), "schema.type")]
        );
    }
}
