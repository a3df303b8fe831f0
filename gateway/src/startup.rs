//! Building and running the gateway (`passerelle serve`): connects the ledger and the queue, builds
//! the AGORA client (or starts the built-in sandbox), binds the HTTP API on the configured address
//! (port 0 picks one: tests read [`Application::port`]), starts the reconcile workers, the
//! sweeper that re-enqueues dossiers left pending by a crash and, when `pole_emploi.api_url` is
//! set, the Pôle emploi poller, and stops gracefully.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::sandbox::RunningSandbox;
use actix_web::{web, App, HttpServer};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backfill::lots::LotPolicy;
use crate::clients::agora::AgoraClient;
use crate::clients::atexo_sem::{AtexoReturnsClient, AtexoReturnsConfig};
use crate::clients::pole_emploi::{PoleEmploiClient, PoleEmploiClientConfig};
use crate::ledger::{self, Ledger, AGORA};
use crate::metrics::Metrics;
use crate::pollers::pole_emploi::{PoleEmploiPoller, PollSettings};
use crate::queue::{self, Flow, Queue, Task};
use crate::retry::RetryPolicy;
use crate::returns::ReturnsSender;
use crate::routes::{self, AppState, Credentials, RateLimiter};
use crate::settings::{resolve_secret, Settings};
use crate::singleton::Singleton;
use crate::worker::Worker;
mod credentials;
use credentials::*;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::LedgerError),
    #[error("queue: {0}")]
    Queue(#[from] queue::QueueError),
    #[error("cannot bind the HTTP API on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("AGORA client: {0}")]
    Client(String),
    #[error("Pôle emploi client: {0}")]
    PoleEmploi(String),
    #[error("embedded JSON Schemas: {0}")]
    Schemas(String),
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("credentials file {path}: {detail}")]
    Credentials { path: String, detail: String },
}

/// A running gateway.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    /// The admin listener (`server.admin_bind`) and its port, when set.
    admin: Option<(actix_web::dev::Server, u16)>,
    shutdown: watch::Sender<bool>,
    /// The long-running tasks, by name: one ending unbidden stops `serve` with an error.
    workers: Vec<Supervised>,
    heartbeats: Arc<crate::supervision::Heartbeats>,
    /// `server.shutdown_grace_s`: how long the tasks in flight may take to finish on SIGTERM.
    grace: Duration,
    sandbox: Option<RunningSandbox>,
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn Queue>,
    /// Where the credentials were generated, when they were.
    pub credentials_file: Option<std::path::PathBuf>,
    pub credentials: Credentials,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What every command that delivers needs: the ledger, the queue, the AGORA client (or the
/// built-in sandbox), the API's credentials, and a reconcile worker over them.
pub struct Services {
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn Queue>,
    pub agora: Arc<AgoraClient>,
    pub sandbox: Option<RunningSandbox>,
    pub credentials: Credentials,
    /// Where the credentials were generated, when they were.
    pub credentials_file: Option<std::path::PathBuf>,
    pub metrics: Arc<Metrics>,
    pub worker: Worker,
    /// The sender of the returns outbox, when `atexo_sem.returns_url` is set.
    pub returns: Option<ReturnsSender>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    pub async fn connect(settings: &Settings) -> Result<Services, StartError> {
        settings.check_production_agora()?;
        passerelle_schemas::compile_all().map_err(|e| StartError::Schemas(e.to_string()))?;
        let (credentials, credentials_file) = load_credentials(settings)?;

        let ledger = ledger::connect(settings.ledger.url.expose_secret()).await?;
        let mut credentials = credentials;
        credentials.dossier_salt =
            SecretString::from(ledger.identity_salt(&salt_offer(settings)?).await?);
        let queue = queue::connect(settings.queue.url.expose_secret(), &settings.data.dir).await?;

        // `agora.base_url = "sandbox"`: the simulators run in this process (embedded mode).
        let (sandbox, agora_url, sandbox_token) = if settings.agora.base_url == "sandbox" {
            let (sb, url, token) = crate::sandbox::start_embedded()
                .await
                .map_err(StartError::Sandbox)?;
            info!(agora = %url, "AGORA is the built-in sandbox");
            (Some(sb), url, Some(token))
        } else {
            (None, settings.agora.base_url.clone(), None)
        };
        let cfg = settings.agora.client_config(agora_url, sandbox_token)?;
        let agora =
            Arc::new(AgoraClient::new(&cfg).map_err(|e| StartError::Client(e.to_string()))?);
        info!(
            authenticator = agora.auth_status().mode,
            mutual_tls = cfg.client_identity.is_some(),
            "AGORA client ready"
        );
        let returns = AtexoReturnsClient::new(&AtexoReturnsConfig::new(
            settings.atexo_sem.returns_url.clone(),
        ))
        .map_err(|e| StartError::Client(e.to_string()))?
        .map(Arc::new);
        let metrics = Arc::new(Metrics::new());
        let retry = RetryPolicy {
            base: Duration::from_millis(settings.retry.base_ms),
            max: Duration::from_millis(settings.retry.max_ms),
            max_attempts: settings.retry.max_attempts,
            rate_limited_deadline: Duration::from_secs(settings.retry.rate_limited_deadline_s),
        };
        let returns = returns.map(|client| ReturnsSender {
            ledger: ledger.clone(),
            client,
            metrics: metrics.clone(),
            retry,
            // Longer than a post can last (the client's whole-call timeout is 30 s).
            claim: Duration::from_secs(60),
            wake: Arc::default(),
            health: Arc::default(),
        });
        let worker = Worker {
            heartbeats: Arc::default(),
            ledger: ledger.clone(),
            queue: queue.clone(),
            agora: agora.clone(),
            returns: returns.as_ref().map(|r| r.wake.clone()),
            retry,
            lease_ttl: Duration::from_secs(settings.worker.lease_ttl_s),
            id: format!("{}-{}", hostname(), uuid::Uuid::now_v7()),
            metrics: metrics.clone(),
            lots: Arc::new(LotPolicy::new(
                settings.backfill.lot_size as usize,
                settings.backfill.lines_per_second,
                Duration::from_millis(settings.backfill.poll_interval_ms),
            )),
        };
        Ok(Services {
            ledger,
            queue,
            agora,
            sandbox,
            credentials,
            credentials_file,
            metrics,
            worker,
            returns,
        })
    }
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let Services {
            ledger,
            queue,
            agora,
            sandbox,
            credentials,
            credentials_file,
            metrics,
            worker,
            returns,
        } = Services::connect(&settings).await?;
        let pole_emploi = pole_emploi_poller(
            &settings,
            &ledger,
            &queue,
            &credentials,
            &metrics,
            worker.retry,
        )?;
        let heartbeats = worker.heartbeats.clone();
        let readiness = routes::health::Readiness::with_heartbeats(heartbeats.clone());
        let state = web::Data::new(AppState {
            ledger: ledger.clone(),
            queue: queue.clone(),
            agora: agora.clone(),
            credentials: credentials.clone(),
            decode: settings.atexo_decode_settings()?,
            precedence: settings.merge.precedence.clone(),
            body_limit: settings.server.body_limit_bytes,
            decode_budget: std::time::Duration::from_millis(settings.server.decode_budget_ms),
            limiter: RateLimiter::new(settings.server.rate_per_second, settings.server.rate_burst),
            metrics: metrics.clone(),
            keep_payloads: settings.payload_retention_days() > 0,
            pole_emploi: pole_emploi.as_ref().map(PoleEmploiPoller::health),
            posts: crate::systems::health::Posts::default(),
            returns: returns.as_ref().map(|r| r.health.clone()),
            readiness: readiness.clone(),
            console: crate::console::Sessions::default(),
        });

        let tls = crate::tls::server_config(&settings.server)?;
        let names = Arc::new(crate::tls::ClientNames::from_settings(&settings.server)?);
        let limit = settings.server.body_limit_bytes;
        let admin_apart = settings.admin_bind_addr()?;
        let app = {
            let state = state.clone();
            move |admin: bool| {
                App::new()
                    .wrap(actix_web::middleware::from_fn(routes::request_span))
                    .app_data(state.clone())
                    .app_data(web::PayloadConfig::new(limit))
                    .configure(|cfg| {
                        if admin {
                            routes::admin_listener(cfg);
                        } else if admin_apart.is_some() {
                            routes::main_listener(cfg);
                        } else {
                            routes::main_listener(cfg);
                            routes::admin_scope(cfg);
                        }
                    })
            }
        };
        let (server, port) = serve(
            settings.bind_addr()?,
            settings.server.shutdown_grace_s,
            tls.clone(),
            &names,
            {
                let app = app.clone();
                move || app(false)
            },
        )?;
        let admin = match admin_apart {
            Some(addr) => Some(serve(
                addr,
                settings.server.shutdown_grace_s,
                tls,
                &names,
                move || app(true),
            )?),
            None => None,
        };

        let (shutdown, rx) = watch::channel(false);
        let mut workers = Vec::new();
        for (lane, n) in [
            (Flow::Sync, settings.worker.sync_concurrency),
            (Flow::Backfill, settings.worker.backfill_concurrency),
        ] {
            if n == 0 {
                continue;
            }
            let w = worker.clone();
            let rx = rx.clone();
            workers.push(supervise(lane.as_str(), &heartbeats, async move {
                if let Err(e) = w.run(lane, n, rx).await {
                    warn!(lane = lane.as_str(), error = %e, "a worker stopped");
                }
            }));
        }
        if let Some(sender) = returns {
            workers.push(supervise(
                "returns_sender",
                &heartbeats,
                sender.run(rx.clone()),
            ));
        }
        // The sweeper, the poller and the purge run in one replica at a time (see `singleton`).
        let singleton = |name| Singleton {
            ledger: ledger.clone(),
            name,
            holder: worker.id.clone(),
            lease: crate::singleton::LEASE,
        };
        if let Some(poller) = pole_emploi {
            workers.push(supervise(
                "pole_emploi_poller",
                &heartbeats,
                singleton("pole_emploi_poller").run(rx.clone(), move |rx| poller.clone().run(rx)),
            ));
        }
        let retention =
            Duration::from_secs(settings.payload_retention_days().saturating_mul(86_400));
        {
            let ledger = ledger.clone();
            workers.push(supervise(
                "retention_purge",
                &heartbeats,
                singleton("retention_purge").run(rx.clone(), move |rx| {
                    crate::singleton::retention_purge(
                        ledger.clone(),
                        retention,
                        Duration::from_secs(3_600),
                        rx,
                    )
                }),
            ));
        }
        workers.push(supervise(
            "agora_check",
            &heartbeats,
            routes::health::watch_agora(agora.clone(), readiness, rx.clone()),
        ));
        // Longer than any backoff: a pending dossier quiet for that long has lost its task.
        let quiet_for = Duration::from_millis(settings.retry.max_ms) + Duration::from_secs(30);
        {
            let (ledger, queue) = (ledger.clone(), queue.clone());
            workers.push(supervise(
                "sweeper",
                &heartbeats,
                singleton("sweeper").run(rx, move |rx| {
                    sweeper(ledger.clone(), queue.clone(), quiet_for, rx)
                }),
            ));
        }
        let grace = Duration::from_secs(settings.server.shutdown_grace_s);

        Ok(Application {
            port,
            server,
            admin,
            shutdown,
            workers,
            heartbeats,
            grace,
            sandbox,
            ledger,
            queue,
            credentials_file,
            credentials,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port, when `server.admin_bind` is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, port)| *port)
    }

    pub fn sandbox(&self) -> Option<&RunningSandbox> {
        self.sandbox.as_ref()
    }

    /// Serves until SIGINT/SIGTERM (or `stop`), then stops accepting, lets the workers finish the
    /// tasks in flight, and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handles: Vec<_> = std::iter::once(self.server.handle())
            .chain(self.admin.as_ref().map(|(s, _)| s.handle()))
            .collect();
        let stop_handles = handles.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("stopping: finishing the requests and tasks in flight");
            let _ = shutdown.send(true);
            for handle in handles {
                handle.stop(true).await;
            }
        });
        let Application {
            server,
            admin,
            shutdown,
            workers,
            heartbeats,
            grace,
            sandbox,
            ..
        } = self;
        let serving = async {
            match admin {
                Some((admin, _)) => {
                    // Either listener stopping stops the other: one gateway, one lifetime.
                    let main = server.handle();
                    let other = admin.handle();
                    let (a, b) = tokio::join!(
                        async {
                            let r = server.await;
                            other.stop(true).await;
                            r
                        },
                        async {
                            let r = admin.await;
                            main.stop(true).await;
                            r
                        }
                    );
                    a.and(b)
                }
                None => server.await,
            }
        };
        tokio::pin!(serving);
        let mut tasks: futures_util::stream::FuturesUnordered<_> = workers
            .into_iter()
            .map(|Supervised { name, handle }| async move {
                let _ = handle.await;
                name
            })
            .collect();
        let mut failed = None;
        let served = loop {
            tokio::select! {
                served = &mut serving => break served,
                Some(name) = futures_util::StreamExt::next(&mut tasks), if failed.is_none() => {
                    if *shutdown.borrow() {
                        continue;
                    }
                    // A lane, the sweeper or the poller ended by itself: this replica would go
                    // on answering while delivering nothing. Stop, and exit non-zero so that the
                    // supervisor starts it again.
                    tracing::error!(task = name, "a long-running task ended when it was not told to; stopping");
                    heartbeats.ended(name);
                    failed = Some(name);
                    let _ = shutdown.send(true);
                    // Stopped from another task: a server's stop is carried out by its own
                    // future, `serving`, which this loop polls next.
                    let handles = stop_handles.clone();
                    tokio::spawn(async move {
                        for handle in handles {
                            handle.stop(true).await;
                        }
                    });
                }
            }
        };
        let _ = shutdown.send(true);
        // The tasks in flight finish within the grace period; past it, what they hold goes back
        // to the queue when the process exits (unacknowledged deliveries are redelivered).
        let drained = tokio::time::timeout(grace, async {
            while futures_util::StreamExt::next(&mut tasks).await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                grace_s = grace.as_secs(),
                "tasks still in flight after server.shutdown_grace_s; they go back to the queue"
            );
        }
        if let Some(sb) = sandbox {
            sb.shutdown().await;
        }
        if let Some(name) = failed {
            return Err(std::io::Error::other(format!(
                "the long-running task `{name}` ended when it was not told to"
            )));
        }
        served
    }

    /// Runs in the background (for tests); the handle stops it.
    pub fn spawn(self) -> RunningApp {
        let handles: Vec<_> = std::iter::once(self.server.handle())
            .chain(self.admin.as_ref().map(|(s, _)| s.handle()))
            .collect();
        let shutdown = self.shutdown.clone();
        let port = self.port;
        let admin_port = self.admin_port();
        let task = tokio::spawn(self.run_until_stopped());
        RunningApp {
            port,
            admin_port,
            handles,
            shutdown,
            task,
        }
    }
}

/// A named long-running task of `serve`.
struct Supervised {
    name: &'static str,
    handle: tokio::task::JoinHandle<()>,
}

/// Spawns `task` under `name`: it beats in `heartbeats` while it runs (`/readyz` reports it).
fn supervise(
    name: &'static str,
    heartbeats: &Arc<crate::supervision::Heartbeats>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> Supervised {
    let beats = heartbeats.clone();
    let handle = tokio::spawn(async move {
        let beating = async {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticker.tick().await;
                beats.beat(name);
            }
        };
        tokio::select! {
            () = task => {}
            () = beating => {}
        }
    });
    Supervised { name, handle }
}

/// Binds `addr` (HTTPS when `tls` is given, mapping client certificates with `names`) and
/// serves `app` there; returns the server and the bound port (`addr` may ask for port 0).
fn serve<F, A, B>(
    addr: std::net::SocketAddr,
    grace_s: u64,
    tls: Option<rustls::ServerConfig>,
    names: &Arc<crate::tls::ClientNames>,
    app: F,
) -> Result<(actix_web::dev::Server, u16), StartError>
where
    F: Fn() -> App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let bind = |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind)?;
    let port = listener.local_addr().map_err(bind)?.port();
    let names = names.clone();
    let server = HttpServer::new(app)
        .on_connect(move |conn, data| crate::tls::on_connect(&names, conn, data))
        .shutdown_timeout(grace_s)
        .disable_signals();
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config),
        None => server.listen(listener),
    }
    .map_err(bind)?
    .run();
    Ok((server, port))
}

/// A gateway running in the background.
#[derive(Debug)]
pub struct RunningApp {
    pub port: u16,
    /// The admin listener's port, when `server.admin_bind` is set.
    pub admin_port: Option<u16>,
    handles: Vec<actix_web::dev::ServerHandle>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningApp {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for handle in self.handles {
            handle.stop(true).await;
        }
        let _ = self.task.await;
    }
}

/// Returns on SIGINT or SIGTERM (what `docker stop` sends).
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Re-enqueues dossiers the ledger holds as pending: after a crash between the ledger commit and
/// the publish, or a lost task. A task twice is harmless (the lease and the plan see to it).
async fn sweeper(
    ledger: Arc<dyn Ledger>,
    queue: Arc<dyn Queue>,
    quiet_for: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stamps = SweepStamps::default();
    loop {
        sweep_round(ledger.as_ref(), queue.as_ref(), quiet_for, &mut stamps).await;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// What the sweeper republished, and when: a dossier republished is not republished again within
/// the quiet period, so a backlog longer than the queue drains in is not multiplied every round.
#[derive(Debug, Default)]
pub struct SweepStamps(std::collections::HashMap<String, std::time::Instant>);

/// One round of the sweeper; returns how many tasks it published.
pub async fn sweep_round(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    quiet_for: Duration,
    stamps: &mut SweepStamps,
) -> usize {
    stamps.0.retain(|_, at| at.elapsed() < quiet_for);
    let ids = match ledger.pending(AGORA, quiet_for, 10_000).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "sweeper cannot read the ledger; will try again");
            return 0;
        }
    };
    let mut published = 0;
    for id in ids {
        if stamps.0.contains_key(&id) {
            continue;
        }
        let task = Task::dossier(id.clone(), None);
        if let Err(e) = queue.publish(Flow::Sync, &task).await {
            warn!(error = %e, "sweeper cannot publish; will try again");
            break;
        }
        stamps.0.insert(id, std::time::Instant::now());
        published += 1;
    }
    if published > 0 {
        info!(
            published,
            "sweeper republished dossiers whose task was lost"
        );
    }
    published
}

/// The Pôle emploi poller, when `pole_emploi.api_url` is set (settings checked the rest).
fn pole_emploi_poller(
    settings: &Settings,
    ledger: &Arc<dyn Ledger>,
    queue: &Arc<dyn Queue>,
    credentials: &Credentials,
    metrics: &Arc<Metrics>,
    retry: RetryPolicy,
) -> Result<Option<PoleEmploiPoller>, StartError> {
    let pe = &settings.pole_emploi;
    if pe.api_url.trim().is_empty() {
        return Ok(None);
    }
    let secret = resolve_secret(
        "pole_emploi.client_secret",
        &pe.client_secret,
        &pe.client_secret_file,
    )?
    .unwrap_or_else(|| SecretString::from(String::new()));
    let mut cfg = PoleEmploiClientConfig::new(
        pe.auth_url.clone(),
        pe.api_url.clone(),
        pe.client_id.clone(),
        secret,
        pe.scope.clone(),
    );
    cfg.retry = retry;
    cfg.connect_timeout = Duration::from_millis(pe.connect_timeout_ms);
    cfg.request_timeout = Duration::from_millis(pe.request_timeout_ms);
    cfg.pool_max_idle_per_host = usize::from(pe.concurrency);
    let client = PoleEmploiClient::new(&cfg).map_err(|e| StartError::PoleEmploi(e.to_string()))?;
    info!(api = %pe.api_url, "Pôle emploi is polled");
    Ok(Some(PoleEmploiPoller::new(
        ledger.clone(),
        queue.clone(),
        Arc::new(client),
        PollSettings {
            interval: Duration::from_secs(pe.poll_interval_s),
            concurrency: usize::from(pe.concurrency),
            precedence: settings.merge.precedence.clone(),
            rules: settings.rule_settings(),
            dossier_salt: credentials.dossier_salt.clone(),
            keep_payloads: settings.payload_retention_days() > 0,
        },
        metrics.clone(),
    )))
}

/// What `serve` prints at start: where it listens and how to post a sample.
pub fn sample_hint(port: u16, data_dir: &Path) -> String {
    let creds = data_dir.join("credentials");
    format!(
        "passerelle listens on http://127.0.0.1:{port} (AGORA: see /readyz)\n\
         post a sample ATEXO SEM export:\n  \
         TOKEN=$(sed -n 's/^auth.tokens.atexo_sem = \"\\(.*\\)\"/\\1/p' {creds})\n  \
         curl -i -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/xml' \\\n    \
         --data-binary @tests/fixtures/atexo_sem/valid/entre.xml http://127.0.0.1:{port}/v1/inbound/atexo-sem/dossiers",
        creds = creds.display()
    )
}
