//! What every simulator shares: the state behind one lock per system, the journal, and [`serve`],
//! the one path every call takes (fault decision, effect, journal, answer).

use crate::agora::AgoraStore;
use crate::atexo_sem::StoredReturn;
use crate::faults::{Call, Decision, FaultKind, FaultState};
use crate::pole_emploi::PeStore;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// One call received, as the journal keeps it. No body is kept: bodies carry NIRs and names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// 1, 2, 3… in the order the calls were decided.
    pub seq: u64,
    /// The wall clock, for people; intervals are measured on `since_start_us`.
    pub at: DateTime<Utc>,
    /// Microseconds since the sandbox started, on a monotonic clock (a wall clock may step).
    pub since_start_us: u64,
    pub call: Call,
    pub method: String,
    /// The path, without the query (the query of a search is in `reference`).
    pub path: String,
    /// The status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
    /// Whether the call's effect took place (for a faulted call: applied before failing).
    pub applied: bool,
    /// The status the call itself gave when it ran (equal to `status` when no fault hid it).
    pub effect_status: Option<u16>,
    /// The dossier's `reference` (passerelle's id) or, for a return, ATEXO's dossier id.
    pub reference: Option<String>,
    pub numero_agora: Option<String>,
    /// The backfill lot concerned.
    pub lot: Option<String>,
    /// The request's `Idempotency-Key`, if any: a return posted again after a crash carries the
    /// key of its first post, which is how a test tells a resend from a second return.
    pub idempotency_key: Option<String>,
}

/// What a call answers when it runs, and what the journal should say of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: Option<&'static str>,
    pub retry_after: Option<String>,
    pub tags: Tags,
}

/// The identifiers a journal line carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tags {
    pub reference: Option<String>,
    pub numero_agora: Option<String>,
    pub lot: Option<String>,
}

impl Reply {
    pub fn empty(status: u16) -> Self {
        Reply {
            status,
            ..Reply::default()
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
            content_type: Some("application/json"),
            ..Reply::default()
        }
    }

    pub fn wire(w: passerelle_adapters::agora::WireAnswer) -> Self {
        Reply {
            status: w.status,
            content_type: (!w.body.is_empty()).then_some("application/json"),
            body: w.body,
            retry_after: w.retry_after,
            tags: Tags::default(),
        }
    }

    pub fn tagged(mut self, tags: Tags) -> Self {
        self.tags = tags;
        self
    }

    fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = HttpResponse::build(status);
        if let Some(ct) = self.content_type {
            r.content_type(ct);
        }
        if let Some(ra) = self.retry_after {
            r.insert_header(("Retry-After", ra));
        }
        r.body(self.body)
    }
}

/// Configuration the handlers read.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub agora_token: String,
    pub agora_auth: crate::access::AgoraAuth,
    pub lot_polls_en_cours: u32,
    pub lot_min_duration: Duration,
    pub max_lot_lines: usize,
    pub pe_client_id: String,
    pub pe_client_secret: String,
    pub pe_token_ttl: Duration,
}

/// Everything the simulators hold. One lock per system; no lock is held across an `.await`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    pub faults: Mutex<FaultState>,
    pub journal: Mutex<Vec<CallRecord>>,
    pub agora: Mutex<AgoraStore>,
    pub pe: Mutex<PeStore>,
    pub returns: Mutex<Vec<StoredReturn>>,
    /// AGORA tokens revoked on demand (`401` from then on).
    pub revoked: Mutex<std::collections::HashSet<String>>,
    /// Salt of the identity hashes the HTTP inspection API shows instead of NIRs.
    pub salt: [u8; 16],
    seq: AtomicU64,
    /// The origin of [`CallRecord::since_start_us`].
    started: Instant,
    /// AGORA writes (creations and transitions) applied and answered 2xx without a fault.
    writes: AtomicU64,
    /// The write whose answer is to be held, if any ([`crate::RunningSandbox::hold_answer_of_write`]).
    pub hold: Mutex<Option<Hold>>,
}

/// An armed hold: the `after`-th write's record goes to `applied`, and its answer waits for
/// `release`.
#[derive(Debug)]
pub(crate) struct Hold {
    pub after: u64,
    pub applied: oneshot::Sender<CallRecord>,
    pub release: Arc<Notify>,
}

/// The longest an answer is held: past it, it goes out (a test that forgot to release it, or
/// that failed, does not leave a handler waiting forever).
const HOLD_AT_MOST: Duration = Duration::from_secs(120);

fn is_write(call: Call) -> bool {
    matches!(
        call,
        Call::AgoraCreate
            | Call::AgoraEnter
            | Call::AgoraExit
            | Call::AgoraSettle
            | Call::AgoraCancel
    )
}

impl Shared {
    pub fn new(settings: Settings, faults: FaultState, salt: [u8; 16]) -> Self {
        Shared {
            settings,
            faults: Mutex::new(faults),
            journal: Mutex::new(Vec::new()),
            agora: Mutex::new(AgoraStore::default()),
            pe: Mutex::new(PeStore::default()),
            returns: Mutex::new(Vec::new()),
            revoked: Mutex::new(std::collections::HashSet::new()),
            salt,
            seq: AtomicU64::new(0),
            started: Instant::now(),
            writes: AtomicU64::new(0),
            hold: Mutex::new(None),
        }
    }

    /// How many writes were applied and answered so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// After a write applied and answered 2xx: when it is the held one, its record goes to the
    /// test, and this waits until the test releases it (having killed the caller meanwhile).
    async fn after_write(&self, rec: CallRecord) {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let release = {
            let mut hold = self.hold.lock();
            match hold.take() {
                Some(h) if h.after == n => {
                    let _ = h.applied.send(rec);
                    Some(h.release)
                }
                other => {
                    *hold = other;
                    None
                }
            }
        };
        if let Some(release) = release {
            let _ = tokio::time::timeout(HOLD_AT_MOST, release.notified()).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        req: &HttpRequest,
        call: Call,
        status: Option<u16>,
        fault: Option<FaultKind>,
        effect: Option<&Reply>,
        hint: &Tags,
    ) -> CallRecord {
        let tags = effect.map(|r| &r.tags);
        let pick = |f: fn(&Tags) -> &Option<String>| {
            tags.and_then(|t| f(t).clone()).or_else(|| f(hint).clone())
        };
        let rec = CallRecord {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at: Utc::now(),
            since_start_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            call,
            method: req.method().to_string(),
            path: req.path().to_string(),
            status,
            fault,
            applied: effect.is_some(),
            effect_status: effect.map(|r| r.status),
            reference: pick(|t| &t.reference),
            numero_agora: pick(|t| &t.numero_agora),
            lot: pick(|t| &t.lot),
            idempotency_key: req
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        // Identifiers only: references, AGORA numbers and lots are not personal data.
        tracing::info!(
            call = %call,
            status = ?status,
            fault = ?fault,
            applied = rec.applied,
            reference = ?rec.reference,
            numero_agora = ?rec.numero_agora,
            "the sandbox answered a call"
        );
        self.journal.lock().push(rec.clone());
        rec
    }

    pub fn reset(&self) {
        self.journal.lock().clear();
        *self.agora.lock() = AgoraStore::default();
        self.pe.lock().reset();
        self.returns.lock().clear();
        self.faults.lock().clear_forced();
    }
}

/// The way of every call: decide the fault, run the effect (`op`) unless the fault forbids it,
/// record the call, answer. `hint` names the dossier when `op` does not run.
pub(crate) async fn serve(
    shared: &Shared,
    req: &HttpRequest,
    call: Call,
    hint: Tags,
    op: impl FnOnce(&Shared) -> Reply,
) -> HttpResponse {
    let decision = shared.faults.lock().decide(call);
    let Some(Decision {
        fault,
        applied,
        retry_after_s,
        slow_ms,
    }) = decision
    else {
        let reply = op(shared);
        let rec = shared.record(req, call, Some(reply.status), None, Some(&reply), &hint);
        if is_write(call) && (200..300).contains(&reply.status) {
            shared.after_write(rec).await;
        }
        return reply.into_response();
    };
    let effect = applied.then(|| op(shared));
    match fault {
        FaultKind::Error500 | FaultKind::Error503 => {
            let status = if fault == FaultKind::Error500 {
                500
            } else {
                503
            };
            shared.record(req, call, Some(status), Some(fault), effect.as_ref(), &hint);
            fault_reply(call, status, None).into_response()
        }
        FaultKind::RateLimited => {
            shared.record(req, call, Some(429), Some(fault), None, &hint);
            fault_reply(call, 429, Some(retry_after_s.to_string())).into_response()
        }
        FaultKind::Slow => {
            // Recorded before the wait: a client that gives up may get the handler cancelled.
            let status = effect.as_ref().map_or(504, |r| r.status);
            shared.record(req, call, Some(status), Some(fault), effect.as_ref(), &hint);
            tokio::time::sleep(Duration::from_millis(slow_ms)).await;
            match effect {
                Some(reply) => reply.into_response(),
                None => fault_reply(call, 504, None).into_response(),
            }
        }
        FaultKind::Drop => {
            shared.record(req, call, None, Some(fault), effect.as_ref(), &hint);
            drop_connection(req);
            // Whatever reaches the wire after the shutdown, its body is broken: no client can
            // take it for an answer.
            HttpResponse::Ok().body(Broken)
        }
    }
}

/// The answer of an injected fault: no body for AGORA and ATEXO SEM, the error body for Pôle emploi.
fn fault_reply(call: Call, status: u16, retry_after: Option<String>) -> Reply {
    let mut reply = match call {
        Call::PeToken | Call::PeRegistrations => crate::pole_emploi::error_reply(
            status,
            if status == 429 {
                "TROP_DE_REQUETES"
            } else {
                "ERREUR_TECHNIQUE"
            },
            "sandbox: injected fault",
        ),
        _ => Reply::empty(status),
    };
    reply.retry_after = retry_after;
    reply
}

/// A duplicate of the connection's socket, taken when the connection opens, so a handler can shut
/// the connection down with no answer: a real dropped connection, as a client sees it.
#[derive(Debug)]
pub(crate) struct ConnHandle(#[cfg(unix)] std::net::TcpStream);

/// For `HttpServer::on_connect`.
pub(crate) fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    #[cfg(unix)]
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsFd;
        // A dup of the descriptor: `shutdown` acts on the socket, which both share. It is dropped
        // with the connection's data, when the connection ends.
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            ext.insert(ConnHandle(std::net::TcpStream::from(fd)));
        }
    }
    #[cfg(not(unix))]
    let _ = (conn, ext);
}

fn drop_connection(req: &HttpRequest) {
    #[cfg(unix)]
    if let Some(ConnHandle(stream)) = req.conn_data::<ConnHandle>() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    #[cfg(not(unix))]
    let _ = req;
}

/// A body whose first chunk is an error: actix aborts the connection mid-answer.
struct Broken;

impl MessageBody for Broken {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other(
            "sandbox: connection dropped on purpose",
        ))))
    }
}

/// `Authorization: Bearer <token>` exactly.
pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The media type of the request, lower-cased, without parameters.
pub(crate) fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}
