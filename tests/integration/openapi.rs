//! The OpenAPI document against the running gateway: what `/openapi.json` serves is the generated
//! document, and every operation it describes is routed by a listener (the main one or, with
//! `server.admin_bind`, the admin one). The other direction, every registered route documented, is
//! the gateway's unit test `routes::openapi::tests::every_route_is_documented_and_every_operation_routed`.

use serde_json::Value;

use crate::support::gateway;

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
