//! Simulators of the systems passerelle talks to: **AGORA v2** (contract §3), the **Pôle emploi**
//! partner API (§2.3) and **ATEXO SEM**'s receiver of AGORA's returns (§4). They serve real HTTP
//! on loopback, enforce the contract strictly, can fail on demand, and say afterwards what they
//! received. The integration tests boot them in-process on port 0; `passerelle sandbox [--port]`
//! runs them for an IS team's rehearsals.
//!
//! # Layout
//!
//! One HTTP server (actix-web, on the caller's tokio runtime), one path prefix per system:
//!
//! | prefix | system | routes |
//! |---|---|---|
//! | `/agora` | AGORA ([`RunningSandbox::agora_url`]) | `GET /dossiers?financeur=&reference=`, `POST /dossiers`, `POST /dossiers/{n}/entree\|sortie\|solde\|annulation`, `POST /reprises`, `GET /reprises/{lot}` |
//! | `/pole-emploi` | Pôle emploi: both its `auth_url` and `api_url` ([`RunningSandbox::pole_emploi_url`]) | `POST /connexion/oauth2/access_token?realm=/partenaire`, `GET /inscriptions/statut/session?numeroFormation=&numeroAction=&numeroSession=` |
//! | `/atexo-sem` | ATEXO SEM's returns ([`RunningSandbox::atexo_sem_returns_url`]) | `POST /retours` |
//! | `/_sandbox` | inspection and control (not part of the contract) | see below |
//!
//! # What each simulator enforces
//!
//! **AGORA** ([`agora`]): `Authorization: Bearer {agora_token}` on every call, else `401`; or, as
//! [`AgoraConfig::auth`] says ([`access`]), a token from a set issued by a test's token command
//! (revocable on demand), or a JWS signed by a trusted certificate's key. With
//! [`SandboxConfig::tls`] it serves HTTPS and may require a client certificate. Bodies
//! are read with the AGORA adapter's decoders, so its JSON Schemas decide: any violation (a
//! 15-character NIR, an amount in euros with decimals, an unknown field…) is `422
//! {"anomalies": [{"code": "AG-SCHEMA", "champ": <JSON pointer>, "libelle"}]}`. JSON calls need
//! `Content-Type: application/json`, a lot `application/x-ndjson` (else `415`). A creation is
//! `201 {"numero_agora"}` — but only after a search for the same (financeur, reference), as the
//! contract wants it ("always before a creation"), else `422` with the anomaly
//! `AG-SANS-RECHERCHE` ([`agora::NO_SEARCH`]) —, or `409 {"numero_agora"}` of the existing dossier when the same
//! (financeur, reference) or the same (financeur, NIR-13, numero_session) exists: AGORA's
//! uniqueness invariant. A transition is accepted only from its state (`CREE→ENTRE`,
//! `ENTRE→SORTI`, `SORTI→SOLDE`, `CREE→ANNULE`), else `409 {"code": "AG-ETAT"}`; an unknown number
//! is `404`. A lot of more than 10,000 lines is `413`, an empty one `422 AG-LOT-VIDE`; otherwise
//! it is processed at once and answered `202 {"lot"}`, but its report says `EN_COURS` for the
//! first [`AgoraConfig::lot_polls_en_cours`] polls and at least [`AgoraConfig::lot_min_duration`],
//! then `TERMINE` with the `compte_rendu`. A line creates its dossier directly in its `etat`; a
//! line whose dossier already exists (by reference or identity) is **accepted with the existing
//! number** when that dossier is in the line's state or can be brought forward to it (the missing
//! transitions are applied), and rejected with `AG-ETAT` otherwise: a lot sent twice is harmless.
//! Answers are written with the adapter's encoders (`encode_answer`…), so the simulator writes
//! exactly what the client decodes. Business rejections are rehearsed with [`Refusal`]s
//! ([`RunningSandbox::refuse`], `POST /_sandbox/agora/refusals`): a creation or backfill line whose
//! field equals a refused value is `422` with the rule's anomaly (e.g. `AG-CERTIF`), until the rules
//! are lifted ([`RunningSandbox::clear_refusals`], `DELETE /_sandbox/agora/refusals`).
//!
//! **Pôle emploi** ([`pole_emploi`]): the token call wants `realm=/partenaire` and a form with
//! `grant_type=client_credentials`, a non-empty `scope` and the configured credentials (`400` or
//! `401` with `{"codeErreur", "codeHttp", "message"}`); tokens live
//! [`PoleEmploiConfig::token_ttl`]. Registrations want a live token (`401` otherwise) and the three
//! numbers (`400`); a session nobody seeded answers `200 []`. Seed with
//! [`RunningSandbox::set_registrations`]; make a session answer an error of your choosing (`400`,
//! `403`, even `401` with a live token) with [`RunningSandbox::refuse_registrations`].
//!
//! **ATEXO SEM** ([`atexo_sem`]): `POST /retours` takes `application/xml` (or `text/xml`, else
//! `415`) holding one `retourAgora` (`dossier`, `date` JJ/MM/AAAA, optional `numeroAgora` and
//! `etat`, `anomalie` children); anything else is `400`. Accepted returns are stored: `200`.
//!
//! # Faults
//!
//! [`Faults`] (at start in [`SandboxConfig::faults`], then [`RunningSandbox::set_faults`] or
//! `POST /_sandbox/faults`): a seeded probability of each [`FaultKind`] — `500`, `503`, `429` with
//! `Retry-After`, a slow answer (`slow_ms` late: set it beyond the client's timeout), a dropped
//! connection (the socket is shut down with no answer; the client sees a transport error) —
//! optionally only for some [`Call`]s (e.g. only lot submissions and report polls), and the share
//! of failing calls whose effect was **applied before failing** (the creation recorded, then the
//! answer lost: what makes search-before-create and `409` handling necessary). A `429` is never
//! applied. For deterministic tests, [`RunningSandbox::fail_next`] (`POST /_sandbox/faults/next`)
//! queues a [`ForcedFault`] taken by the next matching call before any random one.
//!
//! # Inspection
//!
//! In-process, [`RunningSandbox`]'s methods: [`journal`](RunningSandbox::journal) (every call:
//! kind, method, path, status, fault, whether applied, reference, AGORA number, lot),
//! [`agora_dossiers`](RunningSandbox::agora_dossiers) (numbers, states and their history, the body),
//! [`creations`](RunningSandbox::creations) (per (financeur, NIR-13, session): creation calls,
//! dossiers created, duplicates refused), [`returns`](RunningSandbox::returns),
//! [`pe_token_requests`](RunningSandbox::pe_token_requests). Over HTTP, under `/_sandbox`:
//! `GET /journal`, `GET /agora/dossiers`, `GET /agora/creations`,
//! `GET|POST|DELETE /agora/refusals`, `POST /agora/revoked-tokens` (`{"token"}`), `GET|POST /faults`,
//! `POST /faults/next`, `PUT /pole-emploi/registrations?numeroFormation=&numeroAction=&numeroSession=`
//! (a list in Pôle emploi's shape), `PUT|DELETE /pole-emploi/refusals?numeroFormation=&numeroAction=&numeroSession=`
//! (`{"status", "codeErreur"}`), `POST /pole-emploi/expire-tokens`, `GET /atexo-sem/retours`,
//! `POST /reset`. Over HTTP a NIR is shown masked, with a salted hash of the identity instead.
//!
//! **Personal data**: the journal keeps no body, logs carry identifiers only (references, AGORA
//! numbers, lots), and the in-process views wrap NIRs and names in `Personal` (masked by `Debug`).

pub mod access;
pub mod agora;
pub mod atexo_sem;
pub mod faults;
mod inspect;
pub mod pki;
pub mod pole_emploi;
mod server;

pub use access::{verify_signed, AgoraAuth, SandboxTls, SignedRefusal};
pub use agora::{AgoraDossier, Creations, Refusal, StateChange};
pub use atexo_sem::StoredReturn;
pub use faults::{Call, FaultError, FaultKind, Faults, ForcedFault};
pub use pki::{PkiFiles, TestPki};
pub use server::CallRecord;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use passerelle_adapters::agora::MAX_LOT_LINES;
use passerelle_adapters::pole_emploi::{encode_registrations, SessionRef};
use passerelle_adapters::Dossier;
use rand::RngCore;
use server::{serve, Reply, Settings, Shared, Tags};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The AGORA simulator's settings.
#[derive(Debug, Clone)]
pub struct AgoraConfig {
    /// The bearer token AGORA accepts (with [`AgoraAuth::Bearer`]).
    pub token: String,
    /// How AGORA checks who calls ([`access`]).
    pub auth: AgoraAuth,
    /// How many polls of a lot's report answer `EN_COURS` before `TERMINE`.
    pub lot_polls_en_cours: u32,
    /// The least time a lot stays `EN_COURS`, however often polled.
    pub lot_min_duration: Duration,
    /// The most lines a lot may hold before `413` (AGORA's is 10,000; lower it to rehearse the
    /// client's reaction).
    pub max_lot_lines: usize,
}

impl Default for AgoraConfig {
    fn default() -> Self {
        AgoraConfig {
            token: "sandbox-agora-token".to_string(),
            auth: AgoraAuth::Bearer,
            lot_polls_en_cours: 1,
            lot_min_duration: Duration::ZERO,
            max_lot_lines: MAX_LOT_LINES,
        }
    }
}

/// The Pôle emploi simulator's settings.
#[derive(Debug, Clone)]
pub struct PoleEmploiConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of a token; `expires_in` says it in whole seconds, rounded up.
    pub token_ttl: Duration,
}

impl Default for PoleEmploiConfig {
    fn default() -> Self {
        PoleEmploiConfig {
            client_id: "sandbox-client".to_string(),
            client_secret: "sandbox-secret".to_string(),
            token_ttl: Duration::from_secs(1_500),
        }
    }
}

/// Everything [`Sandbox::start`] needs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free port (see [`RunningSandbox::address`]).
    pub bind: SocketAddr,
    /// actix-web worker threads.
    pub workers: usize,
    pub agora: AgoraConfig,
    pub pole_emploi: PoleEmploiConfig,
    /// The faults in force from the start.
    pub faults: Faults,
    /// The largest body accepted (a full lot of 10,000 dossiers is ~10 MB).
    pub max_body_bytes: usize,
    /// HTTPS, and optionally mutual TLS; plain HTTP when `None`. (Over TLS, an injected dropped
    /// connection answers a broken body instead of shutting the socket.)
    pub tls: Option<SandboxTls>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 2,
            agora: AgoraConfig::default(),
            pole_emploi: PoleEmploiConfig::default(),
            faults: Faults::none(),
            max_body_bytes: 64 << 20,
            tls: None,
        }
    }
}

/// Why the sandbox did not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox must be started from within a tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Faults(#[from] FaultError),
    #[error(transparent)]
    Tls(#[from] access::TlsError),
}

/// The entry point.
#[derive(Debug)]
pub struct Sandbox;

impl Sandbox {
    /// Binds, then serves on the current tokio runtime until [`RunningSandbox::shutdown`].
    pub async fn start(config: SandboxConfig) -> Result<RunningSandbox, SandboxError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SandboxError::NoRuntime)?;
        let faults = faults::FaultState::new(config.faults.clone())?;
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let shared = Arc::new(Shared::new(
            Settings {
                agora_token: config.agora.token.clone(),
                agora_auth: config.agora.auth.clone(),
                lot_polls_en_cours: config.agora.lot_polls_en_cours,
                lot_min_duration: config.agora.lot_min_duration,
                max_lot_lines: config.agora.max_lot_lines,
                pe_client_id: config.pole_emploi.client_id.clone(),
                pe_client_secret: config.pole_emploi.client_secret.clone(),
                pe_token_ttl: config.pole_emploi.token_ttl,
            },
            faults,
            salt,
        ));
        let bind_error = |source| SandboxError::Bind {
            addr: config.bind,
            source,
        };
        let listener = TcpListener::bind(config.bind).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let data = web::Data::from(shared.clone());
        let limit = config.max_body_bytes;
        let tls = config
            .tls
            .as_ref()
            .map(SandboxTls::server_config)
            .transpose()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(limit))
                .service(web::scope("/agora").configure(agora_routes))
                .service(web::scope("/pole-emploi").configure(pole_emploi_routes))
                .service(
                    web::scope("/atexo-sem").route("/retours", web::post().to(atexo_sem::receive)),
                )
                .service(web::scope("/_sandbox").configure(inspect::routes))
                .default_service(web::to(not_found))
        })
        .on_connect(server::on_connect)
        .workers(config.workers.max(1))
        .shutdown_timeout(1)
        .disable_signals();
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls),
            None => server.listen(listener),
        }
        .map_err(bind_error)?
        .run();
        let handle = server.handle();
        let task = runtime.spawn(server);
        tracing::info!(%address, "the sandbox listens");
        Ok(RunningSandbox {
            scheme: if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
            address,
            handle,
            task,
            shared,
            agora_token: config.agora.token,
            pole_emploi: config.pole_emploi,
        })
    }
}

fn agora_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dossiers", web::get().to(agora::search))
        .route("/dossiers", web::post().to(agora::create))
        .route("/dossiers/{numero}/{op}", web::post().to(agora::transition))
        .route("/reprises", web::post().to(agora::submit_lot))
        .route("/reprises/{lot}", web::get().to(agora::lot_report));
}

fn pole_emploi_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/connexion/oauth2/access_token",
        web::post().to(pole_emploi::token),
    )
    .route(
        "/inscriptions/statut/session",
        web::get().to(pole_emploi::registrations),
    );
}

/// Any other route: `404`, journaled.
pub(crate) async fn not_found(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    serve(&shared, &req, Call::Other, Tags::default(), |_| {
        Reply::empty(404)
    })
    .await
}

/// The sandbox, serving. Dropping it tells the server to stop without waiting;
/// [`RunningSandbox::shutdown`] stops it gracefully and waits.
#[derive(Debug)]
pub struct RunningSandbox {
    scheme: &'static str,
    address: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
    shared: Arc<Shared>,
    agora_token: String,
    pole_emploi: PoleEmploiConfig,
}

impl RunningSandbox {
    /// The address bound (with the port picked when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// `http://{address}` (`https://` with [`SandboxConfig::tls`]), no trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// passerelle's `agora.base_url`.
    pub fn agora_url(&self) -> String {
        format!("{}/agora", self.base_url())
    }

    /// passerelle's `pole_emploi.auth_url` and `pole_emploi.api_url`.
    pub fn pole_emploi_url(&self) -> String {
        format!("{}/pole-emploi", self.base_url())
    }

    /// passerelle's `atexo_sem.returns_url`.
    pub fn atexo_sem_returns_url(&self) -> String {
        format!("{}/atexo-sem/retours", self.base_url())
    }

    /// The bearer token AGORA accepts (passerelle's `agora.token`).
    pub fn agora_token(&self) -> &str {
        &self.agora_token
    }

    /// The Pôle emploi client id and secret accepted.
    pub fn pole_emploi_credentials(&self) -> (&str, &str) {
        (&self.pole_emploi.client_id, &self.pole_emploi.client_secret)
    }

    /// Every call received, in order.
    pub fn journal(&self) -> Vec<CallRecord> {
        self.shared.journal.lock().clone()
    }

    /// The calls of one kind.
    pub fn calls(&self, call: Call) -> Vec<CallRecord> {
        self.shared
            .journal
            .lock()
            .iter()
            .filter(|r| r.call == call)
            .cloned()
            .collect()
    }

    /// AGORA's dossiers, in creation order.
    pub fn agora_dossiers(&self) -> Vec<AgoraDossier> {
        self.shared.agora.lock().dossiers()
    }

    /// The AGORA dossier of passerelle's `reference` for this funder.
    pub fn agora_dossier(&self, financeur: &str, reference: &str) -> Option<AgoraDossier> {
        self.agora_dossiers()
            .into_iter()
            .find(|d| d.financeur == financeur && d.reference == reference)
    }

    /// The creation counters of each (financeur, NIR-13, numero_session) seen.
    pub fn creations(&self) -> Vec<Creations> {
        self.shared.agora.lock().creations()
    }

    /// The returns ATEXO SEM received.
    pub fn returns(&self) -> Vec<StoredReturn> {
        self.shared.returns.lock().clone()
    }

    /// How many token calls Pôle emploi received (faulted ones included).
    pub fn pe_token_requests(&self) -> usize {
        self.calls(Call::PeToken).len()
    }

    /// The registrations Pôle emploi answers for this session, from canonical dossiers.
    pub fn set_registrations(&self, session: &SessionRef, dossiers: &[Dossier]) {
        self.set_registrations_json(session, encode_registrations(dossiers));
    }

    /// The registrations answer for this session, as given (to serve malformed answers too).
    pub fn set_registrations_json(&self, session: &SessionRef, answer: serde_json::Value) {
        self.shared
            .pe
            .lock()
            .sessions
            .insert(pole_emploi::key_of(session), answer);
    }

    /// From now on, this session's registrations are answered with `status` and Pôle emploi's
    /// error body carrying `code_erreur` (e.g. `403` for a session the partner may not see, `400`,
    /// or `401` to refuse even a fresh token), until [`RunningSandbox::allow_registrations`].
    pub fn refuse_registrations(&self, session: &SessionRef, status: u16, code_erreur: &str) {
        self.shared.pe.lock().refusals.insert(
            pole_emploi::key_of(session),
            (status, code_erreur.to_string()),
        );
    }

    /// Lifts [`RunningSandbox::refuse_registrations`].
    pub fn allow_registrations(&self, session: &SessionRef) {
        self.shared
            .pe
            .lock()
            .refusals
            .remove(&pole_emploi::key_of(session));
    }

    /// Every Pôle emploi token issued so far expires now.
    pub fn expire_pe_tokens(&self) {
        self.shared.pe.lock().expire_tokens();
    }

    /// The random faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().faults().clone()
    }

    /// Replaces the random faults (and reseeds their RNG).
    pub fn set_faults(&self, faults: Faults) -> Result<(), FaultError> {
        self.shared.faults.lock().set(faults)
    }

    /// AGORA refuses, from now on, the dossiers this rule matches (a business `422`).
    pub fn refuse(&self, refusal: Refusal) {
        self.shared.agora.lock().refuse(refusal);
    }

    /// Lifts every business rule set by [`RunningSandbox::refuse`].
    pub fn clear_refusals(&self) {
        self.shared.agora.lock().clear_refusals();
    }

    /// From now on, AGORA refuses this token with `401` (as a relay does a token revoked or
    /// expired on its side), whatever [`AgoraAuth`] is in force.
    pub fn revoke_agora_token(&self, token: &str) {
        self.shared.revoked.lock().insert(token.to_string());
    }

    /// Holds the answer of the `k`-th AGORA write (a creation or a transition, `k` = 1 for the
    /// next one) applied and answered 2xx without a fault from now on: AGORA has applied it, and
    /// its caller does not hear so until [`HeldWrite::release`] (or two minutes). Meanwhile
    /// [`HeldWrite::applied`] gives its journal record: the moment for a test to kill the caller,
    /// leaving a call applied but unanswered. One hold at a time: a new one replaces the last.
    pub fn hold_answer_of_write(&self, k: u64) -> HeldWrite {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let release = Arc::new(tokio::sync::Notify::new());
        *self.shared.hold.lock() = Some(server::Hold {
            after: self.shared.writes() + k.max(1),
            applied: tx,
            release: release.clone(),
        });
        HeldWrite {
            applied: rx,
            release,
        }
    }

    /// AGORA writes applied and answered 2xx without a fault since the start.
    pub fn writes_applied(&self) -> u64 {
        self.shared.writes()
    }

    /// Forces a fault on the next matching call.
    pub fn fail_next(&self, fault: ForcedFault) {
        self.shared.faults.lock().force(fault);
    }

    /// Forgets every dossier, lot, refusal, token, registration, return, forced fault and journal line;
    /// the random faults stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops serving (in-flight calls get a second) and waits for the server to end.
    pub async fn shutdown(mut self) {
        self.handle.stop(true).await;
        let _ = (&mut self.task).await;
    }

    /// Serves until the server stops (for `passerelle sandbox`: stop it with
    /// [`RunningSandbox::stop_handle`], e.g. on Ctrl-C).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// A handle that stops the server from elsewhere (e.g. on Ctrl-C).
    pub fn stop_handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}

/// An answer held by [`RunningSandbox::hold_answer_of_write`]. Dropping it releases the answer.
#[derive(Debug)]
pub struct HeldWrite {
    applied: tokio::sync::oneshot::Receiver<CallRecord>,
    release: Arc<tokio::sync::Notify>,
}

impl HeldWrite {
    /// The held write's journal record, once AGORA has applied it (`None` when the sandbox
    /// stopped, or a newer hold replaced this one, first).
    pub async fn applied(&mut self) -> Option<CallRecord> {
        (&mut self.applied).await.ok()
    }

    /// Lets the held answer go (to a caller that, in the tests, is dead by then).
    pub fn release(&self) {
        self.release.notify_one();
    }
}

impl Drop for HeldWrite {
    fn drop(&mut self) {
        self.release();
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        // The command is sent at once; the returned future would only wait for the end.
        drop(self.handle.stop(false));
    }
}
