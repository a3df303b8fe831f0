//! Errors of the HTTP API as RFC 9457 problem details (`application/problem+json`): one enum, one
//! table from each variant to its status, type and title.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use passerelle_adapters::{Rule, Violation};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body cannot be parsed")]
    Unparseable(Vec<Violation>),
    #[error("missing or invalid credentials")]
    Unauthorized(&'static str),
    #[error("this route belongs to another system")]
    Forbidden,
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    /// The body could not be judged within the decoding budget (`server.decode_budget_ms`).
    /// `dossiers_read`: how many dossiers of an export were read (`None` for an orientation).
    #[error("the body could not be decoded within {budget_ms} ms")]
    TooCostly {
        budget_ms: u128,
        dossiers_read: Option<usize>,
    },
    #[error("wrong content type")]
    UnsupportedMediaType(&'static str),
    #[error("the payload is invalid")]
    Invalid(Vec<Violation>),
    #[error("over the rate allowed to this system")]
    RateLimited,
    /// A part (the ledger, the queue) does not answer. Its error is logged where it occurs; the
    /// caller sees which part only, never a driver's message.
    #[error("not ready: {0}")]
    Unavailable(&'static str),
    /// A header that must be given once was given several times.
    #[error("header {0} given more than once")]
    DuplicateHeader(&'static str),
    #[error("not found")]
    NotFound(&'static str),
    #[error("dead letter {id} was already replayed")]
    AlreadyReplayed {
        id: String,
        dossier_id: String,
        replayed_at: chrono::DateTime<chrono::Utc>,
    },
}

/// The body of every error (RFC 9457), `application/problem+json`.
// Its docs are the OpenAPI document's descriptions (`routes::openapi`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// A URN naming the problem, `urn:passerelle:problem:<name>`: `unparseable` and `duplicate-header` (400), `unauthorized` (401), `forbidden` (403), `not-found` (404), `already-replayed` (409), `too-large` (413, over `server.body_limit_bytes`), `too-costly` (413, decoding did not finish within `server.decode_budget_ms`), `unsupported-media-type` (415), `invalid` (422), `rate-limited` (429), `unavailable` (503).
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    #[schema(value_type = i64)]
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "<[Violation]>::is_empty")]
    #[schema(value_type = Vec<super::openapi::bodies::Violation>)]
    errors: &'a [Violation],
    // The list of `errors` is cut short: its last entry (rule `xml.truncated`) says how many more
    // violations were found, or where decoding stopped. Absent otherwise. Documented by the
    // schema it is given.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(schema_with = super::openapi::bodies::truncated)]
    truncated: bool,
}

impl ApiError {
    /// Its status and problem type, as a post's refusal is reported (`/readyz`).
    pub fn kind(&self) -> (u16, &'static str) {
        let (status, kind, _) = self.table();
        (status.as_u16(), kind)
    }

    fn table(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unparseable(_) => (
                StatusCode::BAD_REQUEST,
                "urn:passerelle:problem:unparseable",
                "Unparseable body",
            ),
            ApiError::DuplicateHeader(_) => (
                StatusCode::BAD_REQUEST,
                "urn:passerelle:problem:duplicate-header",
                "Duplicate header",
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "urn:passerelle:problem:unauthorized",
                "Unauthorized",
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "urn:passerelle:problem:forbidden",
                "Forbidden",
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:passerelle:problem:too-large",
                "Body too large",
            ),
            // 413, as the size limit: the caller should not retry the same body but split it.
            ApiError::TooCostly { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:passerelle:problem:too-costly",
                "Body too costly to decode",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:passerelle:problem:unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:passerelle:problem:invalid",
                "Invalid payload",
            ),
            ApiError::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "urn:passerelle:problem:rate-limited",
                "Too many requests",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:passerelle:problem:unavailable",
                "Not ready",
            ),
            ApiError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "urn:passerelle:problem:not-found",
                "Not found",
            ),
            ApiError::AlreadyReplayed { .. } => (
                StatusCode::CONFLICT,
                "urn:passerelle:problem:already-replayed",
                "Dead letter already replayed",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Unparseable(v) | ApiError::Invalid(v) => {
                let listed = v.iter().filter(|v| v.rule != Rule::XmlTruncated).count();
                if listed == v.len() {
                    format!("{listed} violation(s); nothing was stored")
                } else {
                    format!(
                        "{listed} violation(s) listed, and the list is cut short (see its last \
                         entry); nothing was stored"
                    )
                }
            }
            ApiError::Unauthorized(why) => (*why).to_string(),
            ApiError::DuplicateHeader(name) => {
                format!("the {name} header must be given once; nothing was read")
            }
            ApiError::Forbidden => "the credentials are those of another system".into(),
            ApiError::TooLarge(limit) => format!("the body is over the limit of {limit} bytes"),
            ApiError::TooCostly {
                budget_ms,
                dossiers_read: Some(dossiers_read),
            } => format!(
                "decoding stopped at its budget of {budget_ms} ms, in dossier {dossiers_read}, \
                 with nothing wrong found so far; nothing was stored. Post the export in smaller \
                 parts, or load it with `passerelle backfill`"
            ),
            // An orientation is small: one too costly to decode is malformed, not too big.
            ApiError::TooCostly {
                budget_ms,
                dossiers_read: None,
            } => format!(
                "decoding stopped at its budget of {budget_ms} ms with nothing wrong found so \
                 far; nothing was stored. Do not post the same body again"
            ),
            ApiError::UnsupportedMediaType(expected) => {
                format!("the content type must be {expected}")
            }
            ApiError::RateLimited => "retry after a second".into(),
            ApiError::Unavailable(part) => format!("{part}; nothing was accepted, retry later"),
            ApiError::NotFound(what) => format!("no such {what}"),
            ApiError::AlreadyReplayed {
                id,
                dossier_id,
                replayed_at,
            } => format!(
                "dead letter {id} was replayed at {}; a dead letter is replayed once. If dossier \
                 {dossier_id} failed again, that failure is a new dead letter: see \
                 GET /v1/dead-letters?dossier_id={dossier_id}",
                replayed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.table().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, kind, title) = self.table();
        let errors: &[Violation] = match self {
            ApiError::Unparseable(v) | ApiError::Invalid(v) => v,
            _ => &[],
        };
        let body = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: self.detail(),
            errors,
            truncated: errors.iter().any(|v| v.rule == Rule::XmlTruncated),
        };
        let mut r = HttpResponse::build(status);
        r.content_type("application/problem+json");
        if matches!(self, ApiError::RateLimited | ApiError::Unavailable(_)) {
            r.insert_header(("Retry-After", "1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        r.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    /// One of each kind: a new variant fails to compile here until it is listed, and so until the
    /// OpenAPI document is checked to describe it.
    fn every_kind() -> Vec<ApiError> {
        let all = vec![
            ApiError::Unparseable(vec![]),
            ApiError::Unauthorized("no token"),
            ApiError::Forbidden,
            ApiError::TooLarge(1),
            ApiError::TooCostly {
                budget_ms: 1,
                dossiers_read: Some(0),
            },
            ApiError::UnsupportedMediaType("application/xml"),
            ApiError::Invalid(vec![]),
            ApiError::RateLimited,
            ApiError::Unavailable("the ledger"),
            ApiError::DuplicateHeader("Authorization"),
            ApiError::NotFound("dossier"),
            ApiError::AlreadyReplayed {
                id: "dl".into(),
                dossier_id: "d".into(),
                replayed_at: chrono::Utc::now(),
            },
        ];
        for e in &all {
            match e {
                ApiError::Unparseable(_)
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden
                | ApiError::TooLarge(_)
                | ApiError::TooCostly { .. }
                | ApiError::UnsupportedMediaType(_)
                | ApiError::Invalid(_)
                | ApiError::RateLimited
                | ApiError::Unavailable(_)
                | ApiError::DuplicateHeader(_)
                | ApiError::NotFound(_)
                | ApiError::AlreadyReplayed { .. } => {}
            }
        }
        all
    }

    fn openapi() -> serde_json::Value {
        serde_json::from_str(document()).expect("the OpenAPI document is JSON")
    }

    fn document() -> &'static str {
        super::super::openapi::json().expect("the OpenAPI document assembles")
    }

    #[test]
    fn the_openapi_document_names_every_problem_type() {
        let doc = document();
        for e in every_kind() {
            let (_, kind, _) = e.table();
            let name = kind.rsplit(':').next().unwrap_or(kind);
            let (status, _, _) = e.table();
            assert!(
                doc.contains(&format!("`{name}` ({})", status.as_u16()))
                    || doc.contains(&format!("`{name}` and"))
                    || doc.contains(&format!("`{name}` (413")),
                "the OpenAPI document's Problem.type does not describe {kind} with its status"
            );
        }
    }

    #[test]
    fn too_costly_is_a_413_documented_on_both_inbound_routes() {
        let doc = openapi();
        assert_eq!(
            ApiError::TooCostly {
                budget_ms: 1,
                dossiers_read: Some(0)
            }
            .status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        for route in [
            "/v1/inbound/ouiform/orientations",
            "/v1/inbound/atexo-sem/dossiers",
        ] {
            let description = doc["paths"][route]["post"]["responses"]["413"]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                description.contains("too-costly") && description.contains("too-large"),
                "{route}'s 413 does not say both causes: {description:?}"
            );
        }
    }

    #[test]
    fn a_cut_short_list_says_truncated_as_the_schema_documents_it() {
        let doc = openapi();
        let property = &doc["components"]["schemas"]["Problem"]["properties"]["truncated"];
        assert_eq!(
            property["type"], "boolean",
            "Problem.truncated is documented"
        );

        let cut = ApiError::Invalid(vec![
            Violation::new("/exportSEM/dossier[1]/nir", Rule::NirChecksum, "bad key"),
            Violation::new("/exportSEM", Rule::XmlTruncated, "1,000 more"),
        ]);
        let body = cut.error_response().into_body().try_into_bytes().ok();
        let body: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).expect("a JSON problem");
        assert_eq!(body["truncated"], true);

        let whole = ApiError::Invalid(vec![Violation::new(
            "/exportSEM/dossier[1]/nir",
            Rule::NirChecksum,
            "bad key",
        )]);
        let body = whole.error_response().into_body().try_into_bytes().ok();
        let body: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).expect("a JSON problem");
        assert!(
            body.get("truncated").is_none(),
            "absent when nothing is cut"
        );
    }

    /// Every problem+json body the API answers, one snapshot per kind: its status, the headers
    /// that go with it and the body clients parse. A change of wording or shape shows in review.
    #[test]
    fn every_problem_body_is_as_snapshotted() {
        let violations = || {
            vec![
                Violation::new(
                    "/exportSEM/dossier[1]/stagiaire/@nir",
                    Rule::NirChecksum,
                    "the check key does not match",
                ),
                Violation::new(
                    "/exportSEM/dossier[1]/session/@dateDebut",
                    Rule::DateFormat,
                    "must be a real date written JJ/MM/AAAA",
                ),
            ]
        };
        for e in every_kind() {
            let e = match e {
                ApiError::Unparseable(_) => ApiError::Unparseable(violations()),
                ApiError::Invalid(_) => ApiError::Invalid(violations()),
                ApiError::AlreadyReplayed { .. } => ApiError::AlreadyReplayed {
                    id: "dl-01".into(),
                    dossier_id: "psl-0fd60dcd2e824f09e941".into(),
                    replayed_at: chrono::DateTime::from_timestamp(1_780_000_000, 0)
                        .expect("a date"),
                },
                e => e,
            };
            let (_, kind, _) = e.table();
            let name = kind.rsplit(':').next().unwrap_or(kind).to_string();
            let r = e.error_response();
            let header = |h: &str| {
                r.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let answer = serde_json::json!({
                "status": r.status().as_u16(),
                "content_type": header("content-type"),
                "retry_after": header("retry-after"),
                "www_authenticate": header("www-authenticate"),
            });
            let body = r.into_body().try_into_bytes().ok().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON problem");
            insta::assert_json_snapshot!(
                format!("problem_{name}"),
                serde_json::json!({ "answer": answer, "body": body })
            );
        }
    }
}
