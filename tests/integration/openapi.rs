//! The OpenAPI document against the running gateway: what `/openapi.json` serves is the generated
//! document, every operation it describes is routed by a listener (the main one or, with
//! `server.admin_bind`, the admin one), and the answers have the shapes it documents (the
//! handlers build them with `json!`: their documentation could drift from them). The other direction, every registered route documented, is
//! the gateway's unit test `routes::openapi::tests::every_route_is_documented_and_every_operation_routed`.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::support::{embedded_gateway, fixture, gateway};

/// The document's operations, path parameters filled in.
fn operations(doc: &Value) -> Vec<(reqwest::Method, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().expect("a path item").keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .expect("an HTTP method");
            out.push((method, concrete.clone()));
        }
    }
    out
}

/// Whether a listener routed the request: actix answers a request no route takes with an empty
/// `404`; a handler's `404` is a problem (or a page) with a body.
async fn routed(http: &reqwest::Client, method: &reqwest::Method, url: &str) -> (bool, u16) {
    let r = http
        .request(method.clone(), url)
        .send()
        .await
        .expect("an answer");
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    (status != 405 && !(status == 404 && body.is_empty()), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let gw = gateway(None, &[("PASSERELLE__SERVER__ADMIN_BIND", "127.0.0.1:0")]).await;
    let admin = gw.admin_url.clone().expect("an admin listener");
    // No credentials and no redirect followed: each route answers for itself (401, 303, …) and
    // nothing is changed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let served = http
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .expect("openapi");
    assert_eq!(served.status(), 200);
    assert_eq!(
        served
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let text = served.text().await.expect("a body");
    assert_eq!(
        text,
        passerelle::routes::openapi::json().expect("the document assembles"),
        "/openapi.json serves the generated document"
    );
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let ops = operations(&doc);
    assert!(ops.len() >= 30, "{} operations", ops.len());
    let mut unrouted = Vec::new();
    for (method, path) in &ops {
        let (on_main, main_status) = routed(&http, method, &format!("{}{path}", gw.url)).await;
        let (on_admin, admin_status) = routed(&http, method, &format!("{admin}{path}")).await;
        if !on_main && !on_admin {
            unrouted.push(format!("{method} {path} ({main_status}, {admin_status})"));
        }
    }
    assert!(
        unrouted.is_empty(),
        "documented but served by no listener: {unrouted:?}"
    );
    // A path no route takes is told apart: the check above would see a missing route.
    let (r, status) = routed(
        &http,
        &reqwest::Method::GET,
        &format!("{}/v1/nowhere", gw.url),
    )
    .await;
    assert!(!r, "{status}");
    gw.stop().await;
}

/// The schema `doc` gives the answer `status` of `method path` in JSON.
fn documented<'d>(doc: &'d Value, method: &str, path: &str, status: u16) -> &'d Value {
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"];
    let schema = if content["application/json"].is_null() {
        &content["application/problem+json"]["schema"]
    } else {
        &content["application/json"]["schema"]
    };
    assert!(
        !schema.is_null(),
        "{method} {path} documents no JSON {status}"
    );
    schema
}

/// Where `value` strays from `schema`: its type, a required property missing, a property the
/// schema does not name, an enum value it does not list; and the same for what it holds. Not a
/// JSON Schema validator: the names and the nesting, where an answer and its documentation drift.
fn strays(doc: &Value, schema: &Value, value: &Value, at: &str, faults: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = r
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or_else(|| panic!("{at}: {r} resolves to nothing"));
        return strays(doc, target, value, at, faults);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.is_empty()
        && !types
            .iter()
            .any(|t| *t == kind || (*t == "number" && kind == "integer"))
    {
        faults.push(format!("{at}: a {kind}, documented as {types:?}"));
        return;
    }
    if let Some(listed) = schema["enum"].as_array() {
        if !listed.contains(value) {
            faults.push(format!("{at}: {value} is not among {listed:?}"));
        }
    }
    match value {
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    faults.push(format!("{at}: no `{name}`, documented as required"));
                }
            }
            let properties = schema["properties"].as_object();
            let others = &schema["additionalProperties"];
            for (name, v) in fields {
                let at = format!("{at}/{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(s) => strays(doc, s, v, &at, faults),
                    None if others.is_object() => strays(doc, others, v, &at, faults),
                    None if properties.is_some() => faults.push(format!("{at}: not documented")),
                    None => {}
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                strays(doc, &schema["items"], item, &format!("{at}/{i}"), faults);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_are_as_documented() {
    let gw = embedded_gateway().await;
    let doc: Value =
        serde_json::from_str(passerelle::routes::openapi::json().expect("the document assembles"))
            .expect("JSON");
    let admin = gw.creds.admin.expose_secret().to_string();
    let mut faults = Vec::new();
    let mut check = |method: &str, path: &str, status: u16, got: u16, body: &Value| {
        assert_eq!(got, status, "{method} {path}: {body}");
        strays(
            &doc,
            documented(&doc, method, path, status),
            body,
            &format!("{method} {path} {status}"),
            &mut faults,
        );
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("a JSON answer"))
    };

    let orientations = "/v1/inbound/ouiform/orientations";
    let (s, body) = answer(
        gw.post_ouiform(fixture("ouiform/valid/acceptee.json"), true)
            .await,
    )
    .await;
    check("post", orientations, 202, s, &body);
    let dossier_id = body["dossier_id"]
        .as_str()
        .expect("a dossier id")
        .to_string();
    let (s, body) = answer(
        gw.post_ouiform(fixture("ouiform/valid/acceptee.json"), false)
            .await,
    )
    .await;
    check("post", orientations, 401, s, &body);

    let dossiers = "/v1/inbound/atexo-sem/dossiers";
    let (s, body) = answer(gw.post_atexo(fixture("atexo_sem/valid/solde.xml")).await).await;
    check("post", dossiers, 202, s, &body);
    let (s, body) = answer(
        gw.post_atexo(fixture("atexo_sem/invalid/nir_checksum.xml"))
            .await,
    )
    .await;
    check("post", dossiers, 422, s, &body);

    let get = |path: String| {
        let req = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(&admin);
        async move { answer(req.send().await.expect("an answer")).await }
    };
    // Once AGORA has it, the trace holds calls as well as messages.
    let started = Instant::now();
    let (s, trace) = loop {
        let (s, trace) = get(format!("/v1/dossiers/{dossier_id}")).await;
        if trace["delivery"]["agora"]["status"] == "delivered"
            || started.elapsed() > Duration::from_secs(20)
        {
            break (s, trace);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    check("get", "/v1/dossiers/{dossier_id}", 200, s, &trace);
    let (s, body) = get("/v1/dossiers/nowhere".to_string()).await;
    check("get", "/v1/dossiers/{dossier_id}", 404, s, &body);
    let (s, body) = get("/v1/dossiers?limit=1".to_string()).await;
    check("get", "/v1/dossiers", 200, s, &body);
    assert_eq!(body["dossiers"].as_array().map(Vec::len), Some(1), "{body}");
    let (s, body) = get("/v1/dossiers?limit=0".to_string()).await;
    check("get", "/v1/dossiers", 422, s, &body);
    let (s, body) = get("/v1/dead-letters?include_replayed=true".to_string()).await;
    check("get", "/v1/dead-letters", 200, s, &body);
    let (s, body) = get("/v1/unreadable".to_string()).await;
    check("get", "/v1/unreadable", 200, s, &body);
    let (s, body) = get("/readyz".to_string()).await;
    check("get", "/readyz", 200, s, &body);

    let post = |path: &str, body: Value| {
        let req = gw
            .http
            .post(format!("{}{path}", gw.url))
            .bearer_auth(&admin)
            .json(&body);
        async move { answer(req.send().await.expect("an answer")).await }
    };
    let (s, body) = post("/v1/dead-letters/replay", json!({"all": true})).await;
    check("post", "/v1/dead-letters/replay", 202, s, &body);
    let (s, body) = post("/v1/dead-letters/replay", json!({})).await;
    check("post", "/v1/dead-letters/replay", 422, s, &body);
    let (s, body) = post("/v1/dead-letters/nowhere/replay", json!({})).await;
    check("post", "/v1/dead-letters/{id}/replay", 404, s, &body);

    assert!(
        faults.is_empty(),
        "answers that stray from the document: {faults:#?}"
    );
    // The check sees a stray: a field missing (`dossier_id`), one undocumented, a wrong value.
    let mut seen = Vec::new();
    strays(
        &doc,
        documented(&doc, "post", orientations, 202),
        &json!({"message_id": "m", "status": "queued", "extra": 1}),
        "",
        &mut seen,
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        trace["delivery"]["agora"]["status"], "delivered",
        "the trace checked was a delivered dossier's"
    );
    gw.stop().await;
}
