//! `GET /v1/dossiers?q=&state=&delivery=&funder=&session=&code=&since=&until=&cursor=&limit=`:
//! the operators' search, as JSON or CSV (`Accept: text/csv` or `format=csv`). The console's
//! search box reads the same parameters with [`parse`] and shows the same [`summary`].
//!
//! Results hold no personal value whatever the token: a dossier's identifiers, states, funders
//! and session, never the trainee. With the personal-data token, `q` may also be a NIR: it is
//! matched on the dossier ids it stands for (each a salted hash of NIR-13 and session, derived
//! here for every session the ledger knows), never compared or stored in clear.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use passerelle_adapters::canonical::{DossierKey, State};
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::{Rule, Violation};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::admin::{keep, query_pairs, require_admin, unavailable};
use super::problem::ApiError;
use super::AppState;
use crate::ledger::search::{Cursor, SearchFilter, SearchPage, MAX_LIMIT};
use crate::ledger::{DeliveryStatus, DossierRow, Ledger, LedgerError};

/// The page size when none is asked.
pub const DEFAULT_LIMIT: u32 = 50;

/// A search as asked: the filter, and whether the answer is CSV.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: SearchFilter,
    pub csv: bool,
}

/// A date-time (RFC 3339), or a date (`YYYY-MM-DD`, midnight UTC: what a date field sends).
fn instant(pointer: &str, value: &str) -> Result<DateTime<Utc>, Violation> {
    if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    super::admin::date_time(pointer, value)
}

/// Reads the search's parameters. An empty value is a filter left out (a form sends its empty
/// fields); an unknown parameter is refused, so that a misspelt filter does not list everything.
pub fn parse(pairs: Vec<(String, String)>) -> Result<Query, Vec<Violation>> {
    let mut query = Query {
        filter: SearchFilter {
            limit: DEFAULT_LIMIT,
            ..SearchFilter::default()
        },
        csv: false,
    };
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let value = value.trim().to_string();
        let p = format!("/{key}");
        let f = &mut query.filter;
        let e = &mut errors;
        if value.is_empty() {
            if !KEYS.contains(&key.as_str()) {
                e.push(unknown(&p));
            }
            continue;
        }
        match key.as_str() {
            "q" => f.q = Some(value),
            "session" => f.session = Some(value),
            "code" => f.code = Some(value),
            "state" => {
                let parsed = serde_json::from_value::<State>(json!(value)).map_err(|_| {
                    Violation::new(
                        &p,
                        Rule::SchemaEnum,
                        "must be a canonical state (prescribed, registered, validated, entered, \
                         exited, service_done, settled, refused, cancelled)",
                    )
                });
                keep(&mut f.state, parsed.map(Some), e);
            }
            "delivery" => {
                let parsed = DeliveryStatus::parse(&value).ok_or_else(|| {
                    Violation::new(
                        &p,
                        Rule::SchemaEnum,
                        "must be pending, delivered, incomplete, out_of_perimeter or dead",
                    )
                });
                keep(&mut f.delivery, parsed.map(Some), e);
            }
            "funder" => {
                let parsed = value
                    .parse::<u8>()
                    .ok()
                    .filter(|n| *n <= 20)
                    .ok_or_else(|| {
                        Violation::new(&p, Rule::SchemaRange, "must be a LHEO funder code, 0 to 20")
                    });
                keep(&mut f.funder, parsed.map(Some), e);
            }
            "since" => keep(&mut f.since, instant(&p, &value).map(Some), e),
            "until" => keep(&mut f.until, instant(&p, &value).map(Some), e),
            "cursor" => {
                let parsed = Cursor::decode(&value).ok_or_else(|| {
                    Violation::new(
                        &p,
                        Rule::SchemaFormat,
                        "must be the next_cursor of a previous page",
                    )
                });
                keep(&mut f.cursor, parsed.map(Some), e);
            }
            "limit" => {
                let parsed = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Violation::new(
                            &p,
                            Rule::SchemaRange,
                            format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    });
                keep(&mut f.limit, parsed, e);
            }
            "format" => match value.as_str() {
                "csv" => query.csv = true,
                "json" => query.csv = false,
                _ => e.push(Violation::new(&p, Rule::SchemaEnum, "must be json or csv")),
            },
            _ => e.push(unknown(&p)),
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(errors)
    }
}

const KEYS: [&str; 11] = [
    "q", "state", "delivery", "funder", "session", "code", "since", "until", "cursor", "limit",
    "format",
];

fn unknown(pointer: &str) -> Violation {
    Violation::new(
        pointer,
        Rule::SchemaAdditional,
        "is not a parameter of the search (q, state, delivery, funder, session, code, since, \
         until, cursor, limit, format)",
    )
}

/// NIR-13 of `q` when it reads as a NIR (13 characters, or 15 with the key; Corsica's `2A`/`2B`).
fn nir13(q: &str) -> Option<String> {
    let q: String = q.chars().filter(|c| !c.is_whitespace()).collect();
    let q = q.to_ascii_uppercase();
    let ok = (q.len() == 13 || q.len() == 15)
        && q.char_indices().all(|(i, c)| {
            c.is_ascii_digit() || (i == 6 && matches!(c, 'A' | 'B') && q.as_bytes()[5] == b'2')
        });
    ok.then(|| q[..13].to_string())
}

/// Runs a search. With `personal_data`, a `q` that reads as a NIR also stands for the ids of its
/// dossiers on every session the ledger knows.
pub async fn run(
    ledger: &dyn Ledger,
    salt: &secrecy::SecretString,
    mut filter: SearchFilter,
    personal_data: bool,
) -> Result<SearchPage, LedgerError> {
    if personal_data {
        if let Some(nir13) = filter.q.as_deref().and_then(nir13) {
            let salt = salt.expose_secret().as_bytes();
            filter.q_ids = ledger
                .session_numbers()
                .await?
                .iter()
                .map(|session| DossierKey::new(&nir13, session).dossier_id(salt))
                .collect();
        }
    }
    ledger.search(&filter).await
}

/// AGORA's number and state of a dossier, when AGORA holds it.
pub fn agora_of(row: &DossierRow) -> Option<(&str, String)> {
    match &row.delivery.delivered {
        Delivered::Present {
            numero_agora,
            state,
        } => Some((
            numero_agora.as_str(),
            serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        )),
        _ => None,
    }
}

/// A search result: identifiers and states, no personal value.
pub fn summary(row: &DossierRow) -> Value {
    let agora = agora_of(row);
    json!({
        "dossier_id": row.dossier_id,
        "state": row.desired.state,
        "delivery": row.delivery.status,
        "numero_agora": agora.as_ref().map(|a| a.0),
        "agora_state": agora.as_ref().map(|a| a.1.clone()),
        "funders": row.desired.fundings.iter().map(|f| f.funder).collect::<Vec<_>>(),
        "session": row.desired.training.numero_session,
        "sources": row.sources.iter().flat_map(|s| s.sources.first()).map(|s| json!({
            "system": s.system.as_str(), "id": s.id, "version": s.version,
        })).collect::<Vec<_>>(),
        "flow": row.flow,
        "in_perimeter": row.in_perimeter,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// One CSV field, quoted when it must be (RFC 4180), and defused when a spreadsheet would read it
/// as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The first line of the CSV of a search.
pub const CSV_HEADER: &str =
    "dossier_id,state,delivery,numero_agora,agora_state,funders,session,sources,updated_at\r\n";

/// The page as CSV, one line per dossier, after the header.
pub fn csv(rows: &[DossierRow]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str(&csv_lines(rows));
    out
}

/// The CSV lines of `rows`, without the header (an export written page after page).
pub fn csv_lines(rows: &[DossierRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let agora = agora_of(row);
        let text = |v: Value| v.as_str().map(str::to_string).unwrap_or_default();
        let fields = [
            row.dossier_id.clone(),
            text(json!(row.desired.state)),
            row.delivery.status.as_str().to_string(),
            agora.as_ref().map(|a| a.0.to_string()).unwrap_or_default(),
            agora.map(|a| a.1).unwrap_or_default(),
            row.desired
                .fundings
                .iter()
                .map(|f| f.funder.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            row.desired.training.numero_session.clone(),
            row.sources
                .iter()
                .flat_map(|s| s.sources.first())
                .map(|s| format!("{}:{}", s.system.as_str(), s.id))
                .collect::<Vec<_>>()
                .join(" "),
            row.updated_at.to_rfc3339(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("accept")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().starts_with("text/csv")))
}

/// `GET /v1/dossiers`.
#[utoipa::path(
    get,
    path = "/v1/dossiers",
    summary = "Search the dossiers: by an identifier a system gave them, by state, delivery, funder, session, dead-letter code and dates; keyset pages, most recently changed first; JSON or CSV",
    security(("bearer" = [])),
    params(crate::routes::openapi::bodies::SearchQuery),
    responses(
        (status = 200, description = "A page of matching dossiers, with no personal value whatever the token", content((crate::routes::openapi::bodies::DossierPage = "application/json"), (crate::routes::openapi::bodies::DossiersCsv = "text/csv")), headers(("X-Next-Cursor" = String, description = "With CSV: the next page's `cursor`, absent on the last page"))),
        (status = 422, description = "A parameter is invalid or unknown: each one named with its rule", body = crate::routes::problem::Problem, content_type = "application/problem+json"),
        (status = 401, response = inline(crate::routes::openapi::bodies::Unauthorized)),
        (status = 403, response = inline(crate::routes::openapi::bodies::Forbidden)),
        (status = 503, response = inline(crate::routes::openapi::bodies::Unavailable)),
    ),
)]
pub async fn dossiers(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let personal_data = require_admin(&req, &state)?;
    let query = parse(query_pairs(&req)?).map_err(ApiError::Invalid)?;
    let csv_out = query.csv || wants_csv(&req);
    let page = run(
        &*state.ledger,
        &state.credentials.dossier_salt,
        query.filter,
        personal_data,
    )
    .await
    .map_err(unavailable)?;
    let next = page.next.as_ref().map(Cursor::encode);
    if csv_out {
        let mut res = HttpResponse::Ok();
        res.content_type("text/csv; charset=utf-8");
        if let Some(next) = &next {
            res.insert_header(("x-next-cursor", next.as_str()));
        }
        return Ok(res.body(csv(&page.dossiers)));
    }
    Ok(HttpResponse::Ok().json(json!({
        "dossiers": page.dossiers.iter().map(summary).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_parameter_is_read_and_checked() {
        let q = parse(pairs(&[
            ("q", " PDL-2019-000123 "),
            ("state", "entered"),
            ("delivery", "dead"),
            ("funder", "2"),
            ("session", "1330305"),
            ("code", "AG-CERTIF"),
            ("since", "2019-09-02"),
            ("until", "2019-09-03T00:00:00Z"),
            ("limit", "10"),
            ("format", "csv"),
            ("cursor", ""),
        ]))
        .expect("valid");
        assert!(q.csv);
        let f = q.filter;
        assert_eq!(f.q.as_deref(), Some("PDL-2019-000123"));
        assert_eq!(f.state, Some(State::Entered));
        assert_eq!(f.delivery, Some(DeliveryStatus::Dead));
        assert_eq!((f.funder, f.limit), (Some(2), 10));
        assert_eq!(
            f.since.map(|t| t.to_rfc3339()),
            Some("2019-09-02T00:00:00+00:00".into())
        );
        let mut bad = parse(pairs(&[
            ("state", "gone"),
            ("funder", "99"),
            ("limit", "0"),
            ("cursor", "x"),
            ("nir", "1"),
        ]))
        .expect_err("refused")
        .into_iter()
        .map(|v| v.pointer)
        .collect::<Vec<_>>();
        bad.sort();
        assert_eq!(bad, ["/cursor", "/funder", "/limit", "/nir", "/state"]);
    }

    #[test]
    fn a_nir_is_recognised_in_either_length() {
        assert_eq!(nir13("185077512345608").as_deref(), Some("1850775123456"));
        assert_eq!(
            nir13("1 85 07 75 123 456").as_deref(),
            Some("1850775123456")
        );
        assert_eq!(nir13("185072a12345608").as_deref(), Some("185072A123456"));
        assert_eq!(nir13("PDL-2019-000123"), None);
        assert_eq!(nir13("18507"), None);
    }

    #[test]
    fn csv_quotes_and_defuses() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("plain"), "plain");
    }
}
