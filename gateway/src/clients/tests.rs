//! The clients over real HTTP on loopback: an actix-web server started on `127.0.0.1:0` inside
//! each test records every request and answers as the test scripts it, reading the bodies with the
//! AGORA adapter's server-side decoders (what the AGORA simulator will do). Transport failures are
//! real too: a server that sleeps past the timeout, a raw socket that hangs up, a port nobody
//! listens on.

use super::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use passerelle_adapters::agora::{
    decode_dossier_body, decode_reprise_lot, decode_transition, encode_answer, encode_lot_accepted,
    encode_reprise_line, encode_reprise_report, Anomaly, Outcome, ReportLine, ReportState,
    RepriseLot, RepriseReport, SearchQuery, TransientReason, WireAnswer,
};
use passerelle_adapters::atexo_sem::{encode_return, AgoraReturn};
use passerelle_adapters::planner::{AgoraState, Operation};
use passerelle_adapters::{Dossier, Rule};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ID: &str = "psl-0123456789abcdef0123";
const TOKEN: &str = "test-token-9f8e7d";

// ---------------------------------------------------------------------------------------------
// A recording HTTP server
// ---------------------------------------------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }
}

/// How the server answers one request.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Reply {
            status,
            retry_after: None,
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    fn json(status: u16, body: serde_json::Value) -> Self {
        Reply {
            body: body.to_string().into_bytes(),
            ..Reply::status(status)
        }
    }

    fn wire(w: WireAnswer) -> Self {
        Reply {
            status: w.status,
            retry_after: w.retry_after,
            body: w.body,
            delay: Duration::ZERO,
        }
    }

    /// What AGORA writes for `outcome`.
    fn outcome(o: &Outcome) -> Self {
        Reply::wire(encode_answer(o).expect("an outcome with an HTTP answer"))
    }
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

struct State {
    seen: Mutex<Vec<Seen>>,
    script: Box<Script>,
}

struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    /// Starts a server answering each request with `script(request, its index)`.
    fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let state = Arc::new(State {
            seen: Mutex::new(Vec::new()),
            script: Box::new(script),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .expect("bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        TestServer {
            addr,
            state,
            handle,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    fn agora(&self) -> AgoraClient {
        agora_client(&self.url())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // `stop` sends its command at once; the returned future only waits for the workers.
        drop(self.handle.stop(false));
    }
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = Seen {
        method: req.method().to_string(),
        // The raw path, still percent-encoded, as the client put it on the wire.
        path: req.uri().path().to_string(),
        query: req.query_string().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        idempotency_key: header("idempotency-key"),
        body: body.to_vec(),
    };
    let reply = {
        let mut all = state.seen.lock().expect("lock");
        let reply = (state.script)(&seen, all.len());
        all.push(seen);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = actix_web::http::StatusCode::from_u16(reply.status).expect("a valid test status");
    let mut response = HttpResponse::build(status);
    if let Some(r) = &reply.retry_after {
        response.insert_header(("Retry-After", r.as_str()));
    }
    if reply.body.is_empty() {
        response.finish()
    } else {
        response.content_type("application/json").body(reply.body)
    }
}

fn agora_config(base: &str) -> AgoraClientConfig {
    let mut c = AgoraClientConfig::new(base, SecretString::from(TOKEN));
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn agora_client(base: &str) -> AgoraClient {
    AgoraClient::new(&agora_config(base)).expect("client builds")
}

fn canonical(name: &str) -> Dossier {
    let path = format!(
        "{}/../tests/fixtures/agora/canonical/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&bytes).expect("a canonical dossier")
}

fn transport_reason_of(o: &Outcome) -> &str {
    match o {
        Outcome::Transient {
            reason: TransientReason::Transport(r),
            retry_after: None,
        } => r,
        other => panic!("expected a transport failure, got {other:?}"),
    }
}

/// The personal values of the fixtures used here: none may show in an outcome or a log.
const PERSONAL: &[&str] = &[
    "185077512345608",
    "1850775123456",
    "DUPONT",
    "Jean Pierre",
    "1985-07-12",
    "2550814168025",
    "MARTIN",
    "DURAND",
    "Claire",
    "1955-08-14",
];

// ---------------------------------------------------------------------------------------------
// AGORA: request shapes and answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn search_sends_get_with_encoded_query_and_bearer_and_reads_404() {
    let server = TestServer::start(|_, _| Reply::status(404));
    // A base with a path prefix and a trailing slash: calls go below it, with one slash.
    let client = agora_client(&format!("{}/relay/v2/", server.url()));
    let query = SearchQuery {
        financeur: "2".into(),
        reference: "PDL 2019/0001&x=é+".into(),
    };
    let outcome = client.search(&query).await;
    assert_eq!(outcome, Outcome::NotFound);

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.path, "/relay/v2/dossiers");
    assert_eq!(s.authorization.as_deref(), Some("Bearer test-token-9f8e7d"));
    // Reserved characters are escaped on the wire and come back intact.
    assert!(!s.query.contains('/') && !s.query.contains(' ') && !s.query.contains('é'));
    assert_eq!(
        s.query_pairs(),
        vec![
            ("financeur".to_string(), "2".to_string()),
            ("reference".to_string(), "PDL 2019/0001&x=é+".to_string()),
        ]
    );
}

#[tokio::test]
async fn perform_search_uses_main_funder_and_reads_found() {
    let server = TestServer::start(|_, _| {
        Reply::outcome(&Outcome::Found {
            numero_agora: "AG-2019-0042".into(),
            etat: AgoraState::Entre,
        })
    });
    let outcome = server
        .agora()
        .perform(Operation::Search, ID, &canonical("settled"), None)
        .await
        .expect("the dossier has what a search needs");
    assert_eq!(
        outcome,
        Outcome::Found {
            numero_agora: "AG-2019-0042".into(),
            etat: AgoraState::Entre,
        }
    );
    let seen = server.seen();
    assert_eq!(
        seen[0].query_pairs(),
        vec![
            ("financeur".to_string(), "2".to_string()),
            ("reference".to_string(), ID.to_string()),
        ]
    );
}

/// AGORA's server side of a creation: the body must pass AGORA's schema, as the simulator checks.
fn create_script(answer: Outcome) -> impl Fn(&Seen, usize) -> Reply + Send + Sync {
    move |s, _| {
        if s.method != "POST" || s.path != "/dossiers" {
            return Reply::status(405);
        }
        match decode_dossier_body(&s.body) {
            Ok(_) => Reply::outcome(&answer),
            Err(_) => Reply::status(400),
        }
    }
}

#[tokio::test]
async fn create_posts_a_schema_valid_json_body_and_reads_201() {
    let server = TestServer::start(create_script(Outcome::Created {
        numero_agora: "AG-1".into(),
    }));
    let outcome = server
        .agora()
        .perform(Operation::Create, ID, &canonical("settled"), None)
        .await
        .expect("the settled dossier is complete");
    assert_eq!(
        outcome,
        Outcome::Created {
            numero_agora: "AG-1".into()
        }
    );
    let s = &server.seen()[0];
    assert_eq!(s.authorization.as_deref(), Some("Bearer test-token-9f8e7d"));
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    let body = decode_dossier_body(&s.body).expect("AGORA's schema accepts the body");
    assert_eq!(body.reference, ID);
    assert_eq!(body.financeur.code, "2");
    // The NIR travels cut to 13 characters, never whole.
    assert_eq!(body.stagiaire.nir13.expose(), "1850775123456");
    assert!(!String::from_utf8_lossy(&s.body).contains("185077512345608"));
}

#[tokio::test]
async fn create_reads_409_with_number_as_already_exists() {
    let server = TestServer::start(create_script(Outcome::AlreadyExists {
        numero_agora: "AG-7".into(),
    }));
    let outcome = server
        .agora()
        .perform(Operation::Create, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        Outcome::AlreadyExists {
            numero_agora: "AG-7".into()
        }
    );
}

#[tokio::test]
async fn create_reads_422_anomalies_as_rejected() {
    let anomalies = vec![Anomaly {
        code: "AG-0107".into(),
        champ: Some("formation.formacode".into()),
        libelle: Some("Formacode inconnu".into()),
    }];
    let server = TestServer::start(create_script(Outcome::Rejected {
        anomalies: anomalies.clone(),
    }));
    let outcome = server
        .agora()
        .perform(Operation::Create, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert_eq!(outcome, Outcome::Rejected { anomalies });
}

/// AGORA's server side of a transition: the path names the operation, the body passes its schema.
fn transition_script(answer: Outcome) -> impl Fn(&Seen, usize) -> Reply + Send + Sync {
    move |s, _| {
        let op = match s.path.rsplit('/').next() {
            Some("entree") => Operation::Enter,
            Some("sortie") => Operation::Exit,
            Some("solde") => Operation::Settle,
            Some("annulation") => Operation::Cancel,
            _ => return Reply::status(404),
        };
        match decode_transition(op, &s.body) {
            Ok(_) if s.method == "POST" => Reply::outcome(&answer),
            _ => Reply::status(400),
        }
    }
}

#[tokio::test]
async fn transitions_post_to_the_numbered_path_with_valid_bodies() {
    let server = TestServer::start(transition_script(Outcome::Accepted));
    let client = server.agora();
    let settled = canonical("settled");
    let refused = canonical("refused");
    // A number with a slash stays one path segment.
    let numero = "AG/2019 1";
    for (op, dossier, leaf) in [
        (Operation::Enter, &settled, "entree"),
        (Operation::Exit, &settled, "sortie"),
        (Operation::Settle, &settled, "solde"),
        (Operation::Cancel, &refused, "annulation"),
    ] {
        let outcome = client
            .perform(op, ID, dossier, Some(numero))
            .await
            .unwrap_or_else(|v| panic!("{op:?}: {v:?}"));
        assert_eq!(outcome, Outcome::Accepted, "{op:?}");
        let seen = server.seen();
        let s = seen.last().expect("a request");
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, format!("/dossiers/AG%2F2019%201/{leaf}"));
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
        decode_transition(op, &s.body).expect("AGORA's schema accepts the body");
    }
    assert_eq!(server.seen().len(), 4);
}

#[tokio::test]
async fn transition_reads_409_ag_etat_as_state_conflict() {
    let server = TestServer::start(transition_script(Outcome::StateConflict));
    let outcome = server
        .agora()
        .perform(Operation::Enter, ID, &canonical("settled"), Some("AG-1"))
        .await
        .expect("complete");
    assert_eq!(outcome, Outcome::StateConflict);
}

#[tokio::test]
async fn status_429_is_transient_with_retry_after_seconds() {
    let server = TestServer::start(|_, _| Reply {
        retry_after: Some("7".into()),
        ..Reply::status(429)
    });
    let outcome = server
        .agora()
        .perform(Operation::Create, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        Outcome::Transient {
            retry_after: Some(Duration::from_secs(7)),
            reason: TransientReason::RateLimited,
        }
    );
}

#[tokio::test]
async fn status_503_is_transient() {
    let server = TestServer::start(|_, _| Reply::status(503));
    let outcome = server
        .agora()
        .perform(Operation::Search, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert_eq!(
        outcome,
        Outcome::Transient {
            retry_after: None,
            reason: TransientReason::ServerError(503),
        }
    );
}

#[tokio::test]
async fn a_success_with_garbage_is_unexpected_and_quotes_nothing() {
    let server = TestServer::start(|_, _| Reply::json(201, serde_json::json!({"nom": "DUPONT"})));
    let outcome = server
        .agora()
        .perform(Operation::Create, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert!(matches!(outcome, Outcome::Unexpected { status: 201, .. }));
    let printed = format!("{outcome:?}");
    assert!(PERSONAL.iter().all(|p| !printed.contains(p)), "{printed}");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = TestServer::start(|s, _| {
        if s.path == "/dossiers" {
            Reply {
                retry_after: None,
                ..Reply::status(307)
            }
        } else {
            Reply::status(500)
        }
    });
    let outcome = server
        .agora()
        .perform(Operation::Search, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert!(matches!(outcome, Outcome::Unexpected { status: 307, .. }));
    assert_eq!(server.seen().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// AGORA: transport failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_server_slower_than_the_request_timeout_is_transient() {
    let server = TestServer::start(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..Reply::status(404)
    });
    let mut config = agora_config(&server.url());
    config.request_timeout = Duration::from_millis(300);
    let client = AgoraClient::new(&config).expect("builds");
    let started = std::time::Instant::now();
    let outcome = client
        .perform(Operation::Search, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(transport_reason_of(&outcome), "timed out");
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = tokio::spawn(async move {
        // Serve every connection the same way (hyper may retry a request on a fresh connection
        // when the pooled one was closed): read the request, hang up without a word.
        let mut n = 0usize;
        while let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
        {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut buf).await;
            drop(socket);
            n += 1;
        }
        n
    });
    let client = agora_client(&format!("http://{addr}"));
    let outcome = client
        .perform(Operation::Create, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    let reason = transport_reason_of(&outcome).to_string();
    assert!(reason.starts_with("request failed"), "{reason}");
    assert!(accepted.await.expect("listener task") >= 1);
}

#[tokio::test]
async fn an_answer_cut_short_is_transient() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut buf).await;
            // Headers promise 100 bytes; one comes, then the connection closes.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
                .await;
        }
    });
    let outcome = agora_client(&format!("http://{addr}"))
        .perform(Operation::Search, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    let reason = transport_reason_of(&outcome);
    assert!(
        reason.starts_with("answer body could not be read"),
        "{reason}"
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind then drop: the port was free a moment ago and nobody listens on it now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let client = agora_client(&format!("http://{addr}"));
    let outcome = client
        .perform(Operation::Search, ID, &canonical("settled"), None)
        .await
        .expect("complete");
    let reason = transport_reason_of(&outcome);
    assert!(reason.starts_with("connection failed"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// AGORA: nothing is sent for an incomplete dossier
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_incomplete_dossier_is_violations_and_no_request() {
    let server = TestServer::start(|_, _| Reply::status(500));
    let client = server.agora();
    let orientation = canonical("orientation_only");

    let violations = client
        .perform(Operation::Create, ID, &orientation, None)
        .await
        .expect_err("an orientation alone lacks session and funding");
    let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
    assert!(pointers.contains(&"/fundings"), "{pointers:?}");
    assert!(pointers.contains(&"/session"), "{pointers:?}");
    assert!(violations.iter().all(|v| v.rule == Rule::FieldRequired));

    let violations = client
        .perform(Operation::Search, ID, &orientation, None)
        .await
        .expect_err("no funder to search with");
    assert!(!violations.is_empty());

    // A transition with no AGORA number is the caller's mistake: refused before sending too.
    let violations = client
        .perform(Operation::Enter, ID, &canonical("settled"), None)
        .await
        .expect_err("no number");
    assert_eq!(violations[0].rule, Rule::LifecycleTransition);

    let all: String = violations.iter().map(|v| v.to_string()).collect();
    assert!(PERSONAL.iter().all(|p| !all.contains(p)));
    assert!(server.seen().is_empty(), "nothing may be sent");
}

// ---------------------------------------------------------------------------------------------
// AGORA: backfill lots
// ---------------------------------------------------------------------------------------------

fn a_lot() -> (RepriseLot, Vec<String>) {
    let mut lot = RepriseLot::new();
    let settled = canonical("settled");
    for (id, etat) in [
        ("psl-lot-0001", AgoraState::Solde),
        ("psl-lot-0002", AgoraState::Entre),
    ] {
        let line = encode_reprise_line(id, &settled, etat).expect("a complete line");
        lot.push(&line).expect("room");
    }
    let refs = lot.references().to_vec();
    (lot, refs)
}

fn report(etat: ReportState, refs: &[String]) -> RepriseReport {
    let done = etat == ReportState::Termine;
    let compte_rendu: Vec<ReportLine> = if done {
        refs.iter()
            .enumerate()
            .map(|(i, r)| ReportLine {
                ligne: u32::try_from(i + 1).expect("few lines"),
                reference: r.clone(),
                numero_agora: Some(format!("AG-{}", i + 1)),
                anomalies: Vec::new(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let n = u32::try_from(refs.len()).expect("few lines");
    RepriseReport {
        etat,
        lignes: n,
        acceptees: if done { n } else { 0 },
        rejetees: 0,
        compte_rendu,
    }
}

#[tokio::test]
async fn a_lot_is_posted_as_ndjson_and_its_report_polled_until_done() {
    let (lot, refs) = a_lot();
    let server_refs = refs.clone();
    let server = TestServer::start(move |s, i| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/reprises") => {
            let lines = decode_reprise_lot(&s.body);
            if s.content_type.as_deref() == Some("application/x-ndjson")
                && lines.len() == 2
                && lines.iter().all(|(_, l)| l.is_ok())
            {
                Reply::wire(encode_lot_accepted("LOT-1.a"))
            } else {
                Reply::status(400)
            }
        }
        // The first poll finds the lot in progress, the next ones finished.
        ("GET", "/reprises/LOT-1.a") if i == 1 => Reply::wire(encode_reprise_report(&report(
            ReportState::EnCours,
            &server_refs,
        ))),
        ("GET", "/reprises/LOT-1.a") => Reply::wire(encode_reprise_report(&report(
            ReportState::Termine,
            &server_refs,
        ))),
        _ => Reply::status(404),
    });
    let client = server.agora();
    let id = client
        .submit_lot(Bytes::from(lot.into_bytes()))
        .await
        .expect("202");
    assert_eq!(id, "LOT-1.a");

    let first = client.lot_report(&id).await.expect("a report");
    assert_eq!(first.etat, ReportState::EnCours);
    let done = client
        .wait_for_report(&id, Duration::from_millis(10), Duration::from_secs(5))
        .await
        .expect("finished");
    assert_eq!(done.etat, ReportState::Termine);
    assert_eq!(done.acceptees, 2);
    for line in &done.compte_rendu {
        assert_eq!(refs[line.ligne as usize - 1], line.reference);
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer test-token-9f8e7d")
    );
}

#[tokio::test]
async fn a_lot_refused_as_too_large_or_unavailable() {
    let server = TestServer::start(|_, i| {
        if i == 0 {
            Reply::status(413)
        } else {
            Reply {
                retry_after: Some("2".into()),
                ..Reply::status(503)
            }
        }
    });
    let client = server.agora();
    let (lot, _) = a_lot();
    let bytes = Bytes::from(lot.into_bytes());
    assert_eq!(
        client.submit_lot(bytes.clone()).await,
        Err(LotFailure::TooLarge)
    );
    let failure = client.submit_lot(bytes).await.expect_err("503");
    assert!(failure.is_transient());
    assert_eq!(
        failure,
        LotFailure::Failed(Outcome::Transient {
            retry_after: Some(Duration::from_secs(2)),
            reason: TransientReason::ServerError(503),
        })
    );
}

#[tokio::test]
async fn waiting_for_a_report_gives_up_after_its_patience() {
    let server = TestServer::start(|_, _| {
        Reply::wire(encode_reprise_report(&report(ReportState::EnCours, &[])))
    });
    let failure = server
        .agora()
        .wait_for_report("L1", Duration::from_millis(20), Duration::from_millis(100))
        .await
        .expect_err("never finished");
    assert!(failure.is_transient());
    assert!(server.seen().len() >= 2);
}

#[tokio::test]
async fn a_report_that_does_not_add_up_is_unexpected() {
    let server = TestServer::start(|_, _| {
        let mut r = report(ReportState::Termine, &["a".to_string()]);
        r.acceptees = 5;
        Reply::wire(encode_reprise_report(&r))
    });
    let failure = server.agora().lot_report("L1").await.expect_err("invalid");
    assert!(matches!(
        failure,
        LotFailure::Failed(Outcome::Unexpected { status: 200, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// AGORA: health, construction, telemetry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_counts_any_answer_below_500_as_up() {
    let server = TestServer::start(|_, i| Reply::status(if i == 0 { 404 } else { 503 }));
    let client = server.agora();
    assert_eq!(client.health().await, Health::Up { status: 404 });
    assert_eq!(
        client.health().await,
        Health::Down {
            reason: "HTTP 503".into()
        }
    );
    assert_eq!(server.seen()[0].path, "/");

    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    assert!(!agora_client(&format!("http://{addr}"))
        .health()
        .await
        .is_up());
}

#[test]
fn build_errors_name_the_setting_and_never_the_token() {
    for bad in ["", "relay.local/agora", "ftp://relay", "https://relay?x=1"] {
        let e = AgoraClient::new(&agora_config(bad)).expect_err(bad);
        assert!(e.to_string().starts_with("agora.base_url"), "{e}");
    }

    let bad_token = AgoraClientConfig::new("https://relay", SecretString::from("a\nb"));
    let e = AgoraClient::new(&bad_token).expect_err("newline in a header");
    assert!(!e.to_string().contains("a\nb"));

    let dir = std::env::temp_dir().join(format!("passerelle-clients-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, b"hello").expect("write");
    let mut c = agora_config("https://relay");
    c.ca_file = Some(not_pem);
    let e = AgoraClient::new(&c).expect_err("no certificate");
    assert!(matches!(e, ClientBuildError::CaFileContent { .. }), "{e}");
    c.ca_file = Some(dir.join("missing.pem"));
    let e = AgoraClient::new(&c).expect_err("missing file");
    assert!(matches!(e, ClientBuildError::CaFileRead { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);

    let client = agora_client("https://relay.example/agora");
    let printed = format!("{client:?} {:?}", agora_config("https://relay"));
    assert!(!printed.contains(TOKEN), "{printed}");
}

/// Collects formatted log lines into a buffer shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn every_call_emits_one_event_without_personal_data() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // The test runs on one thread (current-thread runtime), so a thread-local default sees it.
    let _guard = tracing::subscriber::set_default(subscriber);

    let anomalies = vec![Anomaly {
        code: "AG-0001".into(),
        champ: Some("stagiaire.nom_naissance".into()),
        libelle: Some("Nom DUPONT refusé".into()),
    }];
    let server = TestServer::start(move |s, _| match s.path.as_str() {
        "/dossiers" if s.method == "POST" => Reply::outcome(&Outcome::Rejected {
            anomalies: anomalies.clone(),
        }),
        _ => Reply::status(404),
    });
    let client = server.agora();
    let settled = canonical("settled");
    client
        .perform(Operation::Search, ID, &settled, None)
        .await
        .expect("complete");
    client
        .perform(Operation::Create, ID, &settled, None)
        .await
        .expect("complete");

    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("passerelle::clients"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("operation=\"search\""), "{}", lines[0]);
    assert!(lines[0].contains("status=404"), "{}", lines[0]);
    assert!(lines[0].contains("outcome=\"not_found\""), "{}", lines[0]);
    assert!(lines[1].contains("status=422"), "{}", lines[1]);
    assert!(lines.iter().all(|l| l.contains("duration_ms=")));
    assert!(PERSONAL.iter().all(|p| !text.contains(p)), "{text}");
    assert!(!text.contains(TOKEN));
}

// ---------------------------------------------------------------------------------------------
// ATEXO SEM returns
// ---------------------------------------------------------------------------------------------

fn a_return() -> AgoraReturn {
    AgoraReturn {
        dossier: "PDL-2019-000123".into(),
        numero_agora: Some("AG-1".into()),
        etat: Some(AgoraState::Entre),
        date: chrono::NaiveDate::from_ymd_opt(2019, 9, 2).expect("a date"),
        anomalies: Vec::new(),
    }
}

fn returns_client(url: &str) -> AtexoReturnsClient {
    AtexoReturnsClient::new(&AtexoReturnsConfig::new(url))
        .expect("builds")
        .expect("on")
}

#[tokio::test]
async fn a_return_is_posted_as_xml() {
    let server = TestServer::start(|_, _| Reply::status(204));
    let client = returns_client(&format!("{}/sem/retours", server.url()));
    let body = encode_return(&a_return());
    client.post("r-1", &body).await.expect("taken");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/sem/retours");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/xml"));
    assert_eq!(seen[0].idempotency_key.as_deref(), Some("r-1"));
    assert_eq!(seen[0].body, body.into_bytes());
}

#[tokio::test]
async fn a_return_refused_or_unavailable_is_typed() {
    let server = TestServer::start(|_, i| match i {
        0 => Reply {
            retry_after: Some("3".into()),
            ..Reply::status(503)
        },
        1 => Reply::status(429),
        _ => Reply::status(400),
    });
    let client = returns_client(&server.url());
    assert_eq!(
        client.post("r-1", &encode_return(&a_return())).await,
        Err(ReturnError::Transient {
            status: Some(503),
            retry_after: Some(Duration::from_secs(3)),
            reason: "HTTP 503".into(),
        })
    );
    assert!(client
        .post("r-1", &encode_return(&a_return()))
        .await
        .expect_err("429")
        .is_transient());
    assert_eq!(
        client.post("r-1", &encode_return(&a_return())).await,
        Err(ReturnError::Refused { status: 400 })
    );

    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let e = returns_client(&format!("http://{addr}/r"))
        .post("r-1", &encode_return(&a_return()))
        .await
        .expect_err("nobody listens");
    assert!(matches!(e, ReturnError::Transient { status: None, .. }));
}

#[test]
fn returns_are_off_when_the_url_is_empty() {
    assert!(AtexoReturnsClient::new(&AtexoReturnsConfig::new(""))
        .expect("no error")
        .is_none());
    assert!(AtexoReturnsClient::new(&AtexoReturnsConfig::new("  "))
        .expect("no error")
        .is_none());
    assert!(AtexoReturnsClient::new(&AtexoReturnsConfig::new("not a url")).is_err());
}
