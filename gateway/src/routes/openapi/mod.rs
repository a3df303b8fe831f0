//! The OpenAPI 3.1 document of contract §1, generated from the handlers' `#[utoipa::path]`
//! annotations and the bodies' schemas ([`bodies`]): served at `/openapi.json`, printed by
//! `passerelle openapi`, committed as `schemas/openapi.json` (a test fails when it is stale).
//!
//! Every route a listener registers goes through [`super::Routes`], and a test compares that list
//! with the document's operations both ways: a route added without its annotation, or an
//! annotation without its route, fails it.

pub mod bodies;

use std::sync::LazyLock;

use actix_web::HttpResponse;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, health, search};

/// The API's own version, that of contract §1 (not the crate's).
pub const VERSION: &str = "1.0.0";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "passerelle",
        version = VERSION,
        description = "Interoperability gateway between the systems that fund vocational training (the Regions' ATEXO SEM, the orientation platform, France Travail) and AGORA (contract §1). 202 means durable: committed to the ledger and confirmed by the queue.",
    ),
    servers((url = "/")),
    paths(
        search::dossiers,
        admin::dossier,
        admin::dead_letters,
        admin::replay_matching,
        admin::replay,
        admin::unreadable,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi,
    ),
    components(schemas(
        bodies::Violation,
        super::problem::Problem,
        bodies::DossiersAccepted,
        bodies::DeadLetter,
        bodies::Replayed,
        bodies::ReplayFilter,
        bodies::ReplayedMany,
        bodies::DossierTrace,
        bodies::Unreadable,
        bodies::DossierSummary,
        bodies::DossierPage,
        bodies::Readiness,
        bodies::Dossier,
    )),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// The bearer token every caller proves who it is with (contract §1, *Authentication*); a system
/// may add its own scheme (`crate::systems`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "One token per caller (`auth.tokens.*`). Admin routes take `auth.tokens.admin`, or `auth.tokens.admin_personal_data`, whose holder also sees personal fields unmasked in a dossier's trace.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Why the document could not be assembled: a bug in the build, caught by the tests.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the OpenAPI document does not serialise: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("schema {0} is not JSON: {1}")]
    SchemaFile(&'static str, serde_json::Error),
    #[error("the OpenAPI document has no components.schemas")]
    NoComponents,
}

/// Assembles the document: utoipa's, with the components of [`bodies::FILE_SCHEMAS`] replaced by
/// their files' text (JSON Schema 2020-12, which OpenAPI 3.1 takes as it is, `$defs` and all).
fn assemble() -> Result<Value, DocumentError> {
    let mut openapi = ApiDoc::openapi();
    openapi.merge(crate::console::openapi());
    // Each posting system's routes, bodies and security schemes (`crate::systems`).
    for system in crate::systems::POSTING {
        openapi.merge(system.openapi());
    }
    let mut doc = serde_json::to_value(openapi)?;
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or(DocumentError::NoComponents)?;
    for (name, id) in file_schemas() {
        let schema: Value = serde_json::from_str(id.source())
            .map_err(|e| DocumentError::SchemaFile(id.file(), e))?;
        schemas.insert((*name).to_string(), schema);
    }
    Ok(doc)
}

/// The components whose schema is a file of `passerelle-schemas`: the API's own, then each
/// posting system's.
fn file_schemas() -> Vec<(&'static str, passerelle_schemas::SchemaId)> {
    let mut files = bodies::FILE_SCHEMAS.to_vec();
    for system in crate::systems::POSTING {
        files.extend(system.schema_files());
    }
    files
}

static DOCUMENT: LazyLock<Result<String, DocumentError>> =
    LazyLock::new(|| Ok(serde_json::to_string_pretty(&assemble()?)? + "\n"));

/// The document as served and committed (pretty JSON, one trailing newline); computed once.
pub fn json() -> Result<&'static str, &'static DocumentError> {
    DOCUMENT.as_deref()
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)),
)]
pub async fn openapi() -> HttpResponse {
    match json() {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/json")
            .body(text),
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document could not be assembled");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn document() -> Value {
        serde_json::from_str(json().expect("the document assembles")).expect("JSON")
    }

    /// (method, path) of every operation of the document.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if method != "parameters" {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_operation_routed() {
        let mut served = BTreeSet::new();
        for listener in [
            super::super::main_routes,
            super::super::admin_routes,
            super::super::admin_listener_routes,
        ] {
            served.extend(
                super::super::listed(listener)
                    .into_iter()
                    .map(|(m, p)| (m.to_string(), p.to_string())),
            );
        }
        let documented = operations(&document());
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes without a #[utoipa::path] in the document: {undocumented:?}; \
             operations of the document no listener serves: {unrouted:?}"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(
                    seen.insert(id.clone()),
                    "{method} {path}: operationId {id:?} twice"
                );
            }
        }
    }

    #[test]
    fn the_payload_schemas_are_the_files_of_passerelle_schemas() {
        let doc = document();
        for (name, id) in file_schemas() {
            let file: Value = serde_json::from_str(id.source()).expect("JSON");
            assert_eq!(doc["components"]["schemas"][name], file, "{name}");
        }
        assert_eq!(
            doc["paths"]["/v1/inbound/ouiform/orientations"]["post"]["requestBody"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/OuiformOrientation"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        fn walk(v: &Value, doc: &Value, at: &str) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        // Inside a file's schema, `#/$defs/…` is relative to that schema's `$id`.
                        if let Some(pointer) = r.strip_prefix("#/components/") {
                            assert!(
                                doc.pointer(&format!("/components/{pointer}")).is_some(),
                                "{at}: {r} resolves to nothing"
                            );
                        }
                    }
                    for (k, v) in map {
                        walk(v, doc, &format!("{at}/{k}"));
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, doc, &format!("{at}/{i}"));
                    }
                }
                _ => {}
            }
        }
        walk(&doc, &doc, "");
    }

    #[test]
    fn the_api_version_is_the_contracts() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], VERSION);
        assert_eq!(doc["info"]["title"], "passerelle");
    }
}
