//! Hostile and mislabelled ATEXO SEM posts (issue 18, points 2 and 3), over HTTP against an
//! embedded gateway:
//! - every shape of `passerelle_tests::hostile`, just under the 10 MiB body limit, is posted four
//!   at a time (more than the HTTP workers), and `/healthz` is probed once the bodies are sent:
//!   each post is answered with a problem+json body (400, 413 or 422, its list of violations
//!   within the caps and marked when cut short), and `/healthz` answers while they are decoded;
//! - a list cut short says so in the body (`truncated` and a last `xml.truncated` entry);
//! - a post past its decoding budget is a `413` naming the budget, or a `422` when violations
//!   were already found;
//! - a document declared ISO-8859-1 that carries UTF-8 is refused with its rule and path, and a
//!   genuine ISO-8859-1 one is accepted;
//! - an OUIFORM orientation of thousands of unknown properties gets the same treatment: a list cut
//!   at 100 with its `xml.truncated` entry, decoded on the blocking pool within the same budget,
//!   `/healthz` answering meanwhile.
//!
//! Nothing here asserts a duration: what hostile bodies cost is measured by
//! `cargo bench -p passerelle-tests --bench hostile`.

use crate::support::PostingCredentials as _;
use std::time::Duration;

use passerelle_tests::hostile::{self, SHAPES};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{self, fixture, gateway, Gateway};

/// Just under the default body limit (10 MiB).
const SIZE: usize = 10 * 1024 * 1024 - 4096;
/// Posts at once: more than the HTTP workers (one per core), so that decoding on them would
/// leave none free for `/healthz`.
const AT_ONCE: usize = 4;

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

/// The head of an ATEXO SEM post of `len` bytes.
fn atexo_head(token: &str, len: usize) -> String {
    format!(
        "POST /v1/inbound/atexo-sem/dossiers HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/xml\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// The head of an OUIFORM post of `body`, signed.
fn ouiform_head(gw: &Gateway, body: &[u8]) -> String {
    format!(
        "POST /v1/inbound/ouiform/orientations HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         X-Ouiform-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        gw.creds.ouiform().expose_secret(),
        support::signature(gw.creds.ouiform_hmac().expose_secret(), body),
        body.len()
    )
}

/// Posts `body` after `head` on a connection of its own and reports on `sent` once the whole body
/// is written (the gateway has then read nearly all of it: the socket buffers are far smaller
/// than the body).
async fn post_raw(
    port: u16,
    head: String,
    body: Vec<u8>,
    sent: tokio::sync::mpsc::Sender<()>,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&body).await.expect("body");
    s.flush().await.expect("flush");
    let _ = sent.send(()).await;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}

/// What a refusal of a hostile body must look like.
fn check_refusal(shape: &str, a: &Answer) {
    // No rule bounds the length of a name: a first name of 10 MB of letters is a valid dossier
    // (a gap noted for the issue, not this test's subject, which is that it is answered). Nor are
    // comments wrong: a valid dossier among them is accepted when it is read within the budget,
    // and refused as too costly (413) when it is not, which depends on the machine's load.
    if matches!(shape, "huge_text" | "huge_entities" | "comments") && a.status == 202 {
        return;
    }
    assert!(
        matches!(a.status, 400 | 413 | 422),
        "{shape}: status {} {}",
        a.status,
        a.body
    );
    assert_eq!(a.content_type, "application/problem+json", "{shape}");
    assert_eq!(a.body["status"], a.status, "{shape}");
    if a.status == 413 {
        // Under the size limit: only the decoding budget can refuse it so.
        assert_eq!(
            a.body["type"], "urn:passerelle:problem:too-costly",
            "{shape}"
        );
        return;
    }
    let errors = a.body["errors"].as_array().expect("errors");
    assert!(!errors.is_empty(), "{shape}");
    assert!(
        errors.len() <= passerelle_adapters::atexo_sem::MAX_PER_DOCUMENT + 1,
        "{shape}: {} entries",
        errors.len()
    );
    for e in errors {
        let rule = e["rule"].as_str().expect("rule");
        assert!(
            passerelle_adapters::Rule::from_code(rule).is_some(),
            "{shape}: {rule}"
        );
        assert!(
            e["pointer"].as_str().is_some_and(|p| p.starts_with('/')),
            "{e}"
        );
        // No path comes back carrying megabytes of the body.
        assert!(
            e["pointer"].as_str().is_some_and(|p| p.len() < 1024),
            "{shape}"
        );
    }
    let cut = errors.last().and_then(|e| e["rule"].as_str()) == Some("xml.truncated");
    assert_eq!(
        a.body["truncated"] == true,
        cut,
        "{shape}: {}",
        a.body["detail"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_posts_are_answered_while_healthz_keeps_answering() {
    let _heavy = support::heavy().await;
    let gw = support::embedded_gateway().await;
    let port: u16 = gw
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let token = gw.creds.atexo_sem().expose_secret().to_string();
    for shape in SHAPES {
        let body = shape.export(SIZE);
        let (sent_tx, mut sent) = tokio::sync::mpsc::channel(AT_ONCE);
        let head = atexo_head(&token, body.len());
        let posts: Vec<_> = (0..AT_ONCE)
            .map(|_| tokio::spawn(post_raw(port, head.clone(), body.clone(), sent_tx.clone())))
            .collect();
        for _ in 0..AT_ONCE {
            sent.recv().await.expect("a post was sent");
        }
        // The bodies are in: the gateway is decoding them. Probe until every post is answered.
        let mut answered_during = 0usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while posts.iter().any(|p| !p.is_finished()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: posts unanswered after 300 s",
                shape.name
            );
            let probe = gw
                .http
                .get(format!("{}/healthz", gw.url))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{}: /healthz did not answer: {e}", shape.name));
            assert_eq!(probe.status(), 200, "{}", shape.name);
            if posts.iter().any(|p| !p.is_finished()) {
                answered_during += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            answered_during > 0,
            "{}: /healthz did not answer while the posts were decoded",
            shape.name
        );
        for p in posts {
            check_refusal(shape.name, &p.await.expect("post task"));
        }
        eprintln!(
            "{}: refused; /healthz answered {answered_during} time(s) meanwhile",
            shape.name
        );
    }
    // The gateway still accepts a valid post.
    let ok = gw.post_atexo(fixture("atexo_sem/valid/entre.xml")).await;
    assert_eq!(ok.status(), 202);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_cut_short_says_so_in_the_problem_body() {
    let gw = support::embedded_gateway().await;
    // 30 dossiers of 50 unknown elements: 1,500 violations, 1,000 listed.
    let dossier =
        hostile::valid_dossier().replacen("<etat>", &format!("{}<etat>", "<x/>".repeat(50)), 1);
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\">\n{}</exportSEM>\n",
        dossier.repeat(30)
    );
    let r = gw.post_atexo(doc.into_bytes()).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["truncated"], true, "{}", body["detail"]);
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(
        errors.len(),
        passerelle_adapters::atexo_sem::MAX_PER_DOCUMENT + 1
    );
    let last = errors.last().expect("entries");
    assert_eq!(last["rule"], "xml.truncated");
    assert_eq!(last["pointer"], "/exportSEM");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("500 more")),
        "{last}"
    );
    // A list not cut short has no such field.
    let r = gw
        .post_atexo(fixture("atexo_sem/invalid/nir_checksum.xml"))
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert!(body.get("truncated").is_none(), "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_past_its_decoding_budget_is_refused() {
    // A budget of 1 ms: any export of megabytes outlasts it, in any build.
    let gw = gateway(None, &[("PASSERELLE__SERVER__DECODE_BUDGET_MS", "1")]).await;
    let r = gw.post_atexo(hostile::valid_export(4 * 1024 * 1024)).await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["type"], "urn:passerelle:problem:too-costly");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("1 ms")),
        "{body}"
    );
    // Invalid from its first dossier: refused with what was found, and where reading stopped.
    let mut doc = String::from_utf8(hostile::valid_export(4 * 1024 * 1024)).expect("utf-8");
    doc = doc.replacen("185077512345608", "185077512345609", 1);
    let r = gw.post_atexo(doc.into_bytes()).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["errors"][0]["rule"], "nir.checksum", "{body}");
    assert_eq!(body["truncated"], true);
    let last = body["errors"]
        .as_array()
        .and_then(|e| e.last())
        .expect("entries");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains("time budget")),
        "{last}"
    );
    gw.stop().await;
}

/// The valid OUIFORM fixture with `fields` properties OUIFORM does not define in its
/// beneficiary: each is a violation of its own.
fn orientation_with_unknown_fields(fields: usize) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&fixture("ouiform/valid/acceptee.json")).expect("json");
    let b = v["beneficiaire"].as_object_mut().expect("beneficiaire");
    for i in 0..fields {
        b.insert(format!("champ{i:07}"), Value::from(i));
    }
    serde_json::to_vec(&v).expect("json")
}

/// Issue 18 for OUIFORM: its JSON is decoded on the blocking pool within `server.decode_budget_ms`
/// and its violations are capped as an ATEXO SEM export's are. Before, every unknown property was
/// one violation quoting all the names, decoded on the HTTP worker with no budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_orientations_are_capped_and_answered_while_healthz_keeps_answering() {
    let _heavy = support::heavy().await;
    let gw = support::embedded_gateway().await;
    // Thousands of unknown properties: 100 listed, then one entry counting the rest.
    // Every wait has a deadline: a gateway that decodes on its HTTP workers may stall instead of
    // answering, and the test must then fail, not hang.
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        gw.post_ouiform(orientation_with_unknown_fields(5_000), true),
    )
    .await
    .expect("an orientation of 5,000 unknown properties answered within 60 s");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["truncated"], true, "{}", body["detail"]);
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(
        errors.len(),
        passerelle_adapters::violation::MAX_PER_DOSSIER + 1
    );
    for e in &errors[..errors.len() - 1] {
        assert_eq!(e["rule"], "schema.additional_property", "{e}");
        assert!(
            e["pointer"]
                .as_str()
                .is_some_and(|p| p.starts_with("/beneficiaire/champ")),
            "{e}"
        );
    }
    let last = errors.last().expect("entries");
    assert_eq!(last["rule"], "xml.truncated");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("4900 more")),
        "{last}"
    );

    // Bodies just under the size limit, more at once than there are HTTP workers.
    let port: u16 = gw
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let body = orientation_with_unknown_fields(SIZE / 22);
    assert!(body.len() < SIZE + 4096, "{} bytes", body.len());
    let head = ouiform_head(&gw, &body);
    let (sent_tx, mut sent) = tokio::sync::mpsc::channel(AT_ONCE);
    let posts: Vec<_> = (0..AT_ONCE)
        .map(|_| tokio::spawn(post_raw(port, head.clone(), body.clone(), sent_tx.clone())))
        .collect();
    for _ in 0..AT_ONCE {
        tokio::time::timeout(Duration::from_secs(120), sent.recv())
            .await
            .expect("the gateway read the bodies within 120 s")
            .expect("a post was sent");
    }
    let mut answered_during = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while posts.iter().any(|p| !p.is_finished()) {
        assert!(
            std::time::Instant::now() < deadline,
            "orientations unanswered after 120 s"
        );
        let probe = gw
            .http
            .get(format!("{}/healthz", gw.url))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/healthz did not answer: {e}"));
        assert_eq!(probe.status(), 200);
        if posts.iter().any(|p| !p.is_finished()) {
            answered_during += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        answered_during > 0,
        "/healthz did not answer while the orientations were decoded"
    );
    for p in posts {
        let a = p.await.expect("post task");
        assert_eq!(a.content_type, "application/problem+json");
        match a.status {
            // Decoding outlasted the budget before anything was found wrong.
            413 => assert_eq!(
                a.body["type"], "urn:passerelle:problem:too-costly",
                "{}",
                a.body
            ),
            422 => {
                let errors = a.body["errors"].as_array().expect("errors");
                assert!(
                    errors.len() <= passerelle_adapters::violation::MAX_PER_DOSSIER + 1,
                    "{} entries",
                    errors.len()
                );
                assert_eq!(a.body["truncated"], true, "{}", a.body["detail"]);
                assert!(a.body.to_string().len() < 64 * 1024, "a short answer");
            }
            other => panic!("status {other}: {}", a.body),
        }
    }
    eprintln!("orientations refused; /healthz answered {answered_during} time(s) meanwhile");
    // The gateway still accepts a valid orientation.
    let ok = gw
        .post_ouiform(fixture("ouiform/valid/acceptee.json"), true)
        .await;
    assert_eq!(ok.status(), 202);
    gw.stop().await;
}

/// A gateway's answer to `body`.
async fn post(gw: &Gateway, body: Vec<u8>) -> (u16, Value) {
    let r = gw.post_atexo(body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_declared_iso_8859_1_is_refused_and_genuine_iso_8859_1_accepted() {
    let gw = support::embedded_gateway().await;
    let (status, body) = post(&gw, fixture("atexo_sem/invalid/xml_encoding_mismatch.xml")).await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["rule"], "xml.encoding.mismatch");
    assert_eq!(
        errors[0]["pointer"],
        "/exportSEM/dossier[1]/stagiaire/prenoms"
    );
    // Its detail names no value.
    assert!(!body.to_string().contains("LODIE"), "{body}");

    let (status, body) = post(&gw, fixture("atexo_sem/valid/latin1_accents.xml")).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(&gw, fixture("atexo_sem/valid/latin1.xml")).await;
    assert_eq!(status, 202, "{body}");
    gw.stop().await;
}

#[test]
fn the_hostile_shapes_are_seeds_of_the_fuzz_corpus() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/fuzz/corpus/atexo_sem_decode");
    for shape in SHAPES {
        let path = corpus.join(format!("hostile_{}.xml", shape.name));
        assert!(
            path.is_file(),
            "{} is missing: run `cargo run -p passerelle-tests --bin gen_hostile -- --size 32768 \
             --out adapters/fuzz/corpus/atexo_sem_decode`",
            path.display()
        );
    }
}
