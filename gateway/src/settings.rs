//! Settings (contract §6): `config/default.toml` (embedded in the binary), then the file given
//! with `--config`, then `PASSERELLE__SECTION__KEY` environment variables. Unknown keys are refused
//! with their name; secrets are `SecretString`s, given inline or as `<key>_file`; everything is
//! checked at start-up ([`Settings::load`]) with messages an operator can act on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use passerelle_adapters::canonical::System;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::rules::RuleSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod agora;
mod tokens;
pub use agora::{AgoraAuthMode, AgoraAuthSettings, AgoraSettings, SigningAlgorithm};
pub use tokens::{token_key, TokenSettings};

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Why the settings cannot be used. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// All of passerelle's settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub ledger: LedgerSettings,
    pub queue: QueueSettings,
    pub agora: AgoraSettings,
    pub auth: AuthSettings,
    pub ouiform: crate::systems::ouiform::OuiformSettings,
    pub pole_emploi: crate::pollers::pole_emploi::PoleEmploiSettings,
    pub atexo_sem: crate::systems::atexo_sem::AtexoSemSettings,
    pub perimeter: PerimeterSettings,
    pub retry: RetrySettings,
    pub rules: RulesSettings,
    #[serde(default)]
    pub merge: MergeSettings,
    pub worker: WorkerSettings,
    pub backfill: BackfillSettings,
    #[serde(default)]
    pub journal: JournalSettings,
    #[serde(default)]
    pub identity: IdentitySettings,
    pub telemetry: TelemetrySettings,
    pub data: DataSettings,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the HTTP API (`server.bind`).
    pub bind: String,
    /// Largest accepted request body, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// Longest an inbound post (an ATEXO SEM export, an OUIFORM orientation) may take to decode,
    /// in milliseconds from the end of its body; past it decoding stops and nothing is stored: 422
    /// when violations were already found, else 413 (split the export, or load it with
    /// `passerelle backfill`).
    pub decode_budget_ms: u64,
    /// Requests per second allowed per calling system (429 above).
    pub rate_per_second: u32,
    /// Burst allowed above the rate.
    pub rate_burst: u32,
    /// Address of a second listener for the admin routes (`/v1/dossiers…`, `/v1/dead-letters…`),
    /// `/metrics` and the console, which then answer only there (404 on `server.bind`); empty: one
    /// listener for everything.
    #[serde(default)]
    pub admin_bind: String,
    /// On SIGTERM (or SIGINT): stop accepting, then finish the tasks in flight, for at most this
    /// many seconds; what is still in flight then goes back to the queue.
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u64,
    /// PEM certificate chain of the listeners: with `server.tls_key_file`, both listeners speak
    /// HTTPS only (rustls); unset: plain HTTP (behind a TLS-terminating proxy).
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `server.tls_cert_file`.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificates of the CAs whose client certificates are accepted (mutual TLS). A client
    /// may still come without a certificate (and use its bearer token); one it presents must chain
    /// to these CAs. Needs `server.tls_cert_file`.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Which system a verified client certificate stands for: a table from a system (`ouiform`,
    /// `atexo_sem`) to the DNS names of its certificates' subjectAltName, e.g.
    /// `{ ouiform = ["ouiform.partenaire.example"] }`. Such a certificate authenticates its system
    /// without a bearer token (OUIFORM still signs its bodies); with one, both must agree.
    #[serde(default)]
    pub tls_client_names: BTreeMap<String, Vec<String>>,
}

fn default_shutdown_grace_s() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// `sqlite://…` (embedded) or `postgres://…` (production). A PostgreSQL server that is not on
    /// this host must be reached with `?sslmode=require` or stronger (`verify-ca`, `verify-full`;
    /// `sslrootcert=` names a private CA), unless `ledger.allow_plaintext`.
    #[schemars(with = "crate::config_reference::Secret")]
    pub url: SecretString,
    /// Allow a PostgreSQL ledger on another host without `sslmode=require` or stronger: NIRs and
    /// names then cross the network in clear. For a private network only (docker/compose.yml).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Days the masked payloads of inbound messages are kept in the ledger's journal; a periodic
    /// job (one replica at a time) purges older ones. 0: payloads are not kept at all.
    pub payload_retention_days: u64,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `embedded` or `amqp://…` (RabbitMQ).
    #[schemars(with = "crate::config_reference::Secret")]
    pub url: SecretString,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub tokens: TokenSettings,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerimeterSettings {
    /// ATEXO SEM `categorie` codes outside AGORA's perimeter.
    pub excluded_categories: Vec<String>,
    /// In a backfill, sessions starting before this date (YYYY-MM-DD) are out of perimeter.
    pub backfill_since: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First backoff delay of a transient failure, ms (doubled at each attempt, with jitter).
    pub base_ms: u64,
    /// Longest backoff delay, ms.
    pub max_ms: u64,
    /// Attempts before a dossier goes to the dead letters.
    pub max_attempts: u32,
    /// How long `429`s (AGORA's or Pôle emploi's pacing, not failures: they do not count toward
    /// `retry.max_attempts`) may hold up a dossier or a poll, counted from the first `429` in a
    /// row, s. Past it the next `429` counts as a failure. Each `Retry-After` is capped at an hour.
    pub rate_limited_deadline_s: u64,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    /// Days an entry may precede the session start.
    pub entry_tolerance_days: i64,
    /// Youngest plausible trainee, years.
    pub min_age_years: i32,
    /// Oldest plausible trainee, years.
    pub max_age_years: i32,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeSettings {
    /// Which source wins, per field group (`merge.precedence.entry = ["pole_emploi", "atexo_sem"]`).
    #[serde(default)]
    #[schemars(with = "crate::config_reference::PrecedenceTable")]
    pub precedence: Precedence,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Dossiers of the synchronous flow reconciled at once.
    pub sync_concurrency: u16,
    /// Dossiers of the backfill reconciled at once (lower: the sync flow has priority).
    pub backfill_concurrency: u16,
    /// How long a worker holds a dossier's lease before another may take it, s.
    pub lease_ttl_s: u64,
}

/// `passerelle backfill` (*reprise d'antériorité*): lots toward AGORA's `POST /reprises`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillSettings {
    /// Lines per lot, 1 to 10,000 (AGORA's limit); halved for the run after a `413`.
    pub lot_size: u32,
    /// Lots submitted or awaited at once (the backfill lane's workers in `passerelle backfill`).
    pub lots_in_flight: u16,
    /// Lines sent to AGORA per second, all lots together; 0: no limit.
    pub lines_per_second: u32,
    /// How often a lot's report is polled, ms.
    pub poll_interval_ms: u64,
    /// Dossiers committed to the ledger per transaction while the input is read.
    pub commit_batch: u32,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// The older name of `ledger.payload_retention_days`, still read: when given, it wins.
    #[serde(default)]
    pub payload_retention_days: Option<u64>,
}

/// The installation's identity, shared by every replica.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// A file holding the salt of dossier ids (a trainee and a session give one id per
    /// installation). Empty: the ledger's salt, created by the first start and shared by every
    /// replica. Given, it must agree with the ledger's (the start is refused otherwise); on a
    /// ledger that already holds dossiers but no salt, it must be the salt they were made with.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub salt_file: Option<PathBuf>,
}

/// Traces (logs are JSON on stderr, their level from `RUST_LOG`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP traces endpoint (e.g. `http://otel-collector:4318/v1/traces`); off when empty.
    pub otlp_endpoint: String,
    /// `service.name` of the exported traces.
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// Directory of the embedded ledger, queue and generated credentials.
    #[schemars(with = "crate::config_reference::FilePath")]
    pub dir: PathBuf,
}

impl Settings {
    /// Loads defaults, then `file`, then the environment (`vars`, usually `std::env::vars()`),
    /// and validates the result.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(f) = file {
            if !f.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", f.display()),
                ));
            }
            builder = builder.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("PASSERELLE__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("PASSERELLE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("perimeter.excluded_categories")
                .with_list_parse_key("agora.auth.command")
                .try_parsing(true)
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The integer keys whose value 0 is refused at start-up (by `validate`, some only when their
    /// section is in use): the configuration reference says "integer > 0" for them, where the
    /// type alone would say "≥ 0". A test loads each with 0 and expects it refused by name.
    pub const MORE_THAN_ZERO: [&'static str; 12] = [
        "server.body_limit_bytes",
        "server.decode_budget_ms",
        "pole_emploi.poll_interval_s",
        "pole_emploi.concurrency",
        "retry.max_attempts",
        "retry.base_ms",
        "backfill.lots_in_flight",
        "backfill.commit_batch",
        "backfill.poll_interval_ms",
        "worker.sync_concurrency",
        "agora.auth.command_timeout_ms",
        "agora.auth.lifetime_s",
    ];

    fn validate(&self) -> Result<(), SettingsError> {
        self.bind_addr()?;
        if self.server.body_limit_bytes == 0 {
            return Err(invalid(
                "server.body_limit_bytes",
                "must be more than 0: a limit of 0 bytes would refuse every post",
            ));
        }
        if self.server.decode_budget_ms == 0 {
            return Err(invalid(
                "server.decode_budget_ms",
                "must be more than 0: a budget of 0 ms would refuse every post",
            ));
        }
        let ledger = self.ledger.url.expose_secret();
        if !(ledger.starts_with("sqlite:")
            || ledger.starts_with("postgres://")
            || ledger.starts_with("postgresql://"))
        {
            return Err(invalid(
                "ledger.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if !ledger.starts_with("sqlite:") && !self.ledger.allow_plaintext {
            check_ledger_tls(ledger)?;
        }
        self.check_listeners()?;
        let queue = self.queue.url.expose_secret();
        if !(queue == "embedded"
            || queue.starts_with("embedded:")
            || queue.starts_with("sqlite:")
            || queue.starts_with("amqp://")
            || queue.starts_with("amqps://"))
        {
            return Err(invalid(
                "queue.url",
                "must be `embedded` (or embedded:<file>) or start with amqp:// or amqps://",
            ));
        }
        if self.agora.base_url != "sandbox" {
            check_url("agora.base_url", &self.agora.base_url)?;
        }
        self.agora.validate()?;
        if !self.atexo_sem.returns_url.is_empty() {
            check_url("atexo_sem.returns_url", &self.atexo_sem.returns_url)?;
        }
        if !self.telemetry.otlp_endpoint.is_empty() {
            check_url("telemetry.otlp_endpoint", &self.telemetry.otlp_endpoint)?;
        }
        if !self.pole_emploi.api_url.is_empty() {
            let pe = &self.pole_emploi;
            check_url("pole_emploi.api_url", &pe.api_url)?;
            check_url("pole_emploi.auth_url", &pe.auth_url)?;
            // Polling on but unable to authenticate would fail at every poll: say it now.
            for (key, value) in [
                ("pole_emploi.client_id", &pe.client_id),
                ("pole_emploi.scope", &pe.scope),
            ] {
                if value.trim().is_empty() {
                    return Err(invalid(key, "is required when pole_emploi.api_url is set"));
                }
            }
            if pe.client_secret.is_none() && pe.client_secret_file.is_none() {
                return Err(invalid(
                    "pole_emploi.client_secret",
                    "is required (or pole_emploi.client_secret_file) when pole_emploi.api_url is set",
                ));
            }
            if pe.poll_interval_s == 0 {
                return Err(invalid("pole_emploi.poll_interval_s", "must be at least 1"));
            }
            if pe.concurrency == 0 {
                return Err(invalid("pole_emploi.concurrency", "must be at least 1"));
            }
        }
        self.backfill_since()?;
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.retry.base_ms == 0 || self.retry.base_ms > self.retry.max_ms {
            return Err(invalid(
                "retry.base_ms",
                "must be more than 0 and at most retry.max_ms",
            ));
        }
        if !(1..=10_000).contains(&self.backfill.lot_size) {
            return Err(invalid(
                "backfill.lot_size",
                "must be between 1 and 10000 (AGORA refuses larger lots)",
            ));
        }
        if self.backfill.lots_in_flight == 0 {
            return Err(invalid("backfill.lots_in_flight", "must be at least 1"));
        }
        if self.backfill.commit_batch == 0 {
            return Err(invalid("backfill.commit_batch", "must be at least 1"));
        }
        if self.backfill.poll_interval_ms == 0 {
            return Err(invalid("backfill.poll_interval_ms", "must be at least 1"));
        }
        if self.worker.sync_concurrency == 0 {
            return Err(invalid("worker.sync_concurrency", "must be at least 1"));
        }
        if self.rules.min_age_years >= self.rules.max_age_years {
            return Err(invalid(
                "rules.min_age_years",
                "must be less than rules.max_age_years",
            ));
        }
        self.merge
            .precedence
            .validate()
            .map_err(|e| invalid("merge.precedence", e))?;
        let secrets = self.secrets();
        // Secrets given twice are ambiguous: refuse rather than guess.
        for (key, inline, file) in &secrets {
            if inline.is_some() && file.is_some() {
                return Err(invalid(
                    key,
                    format!("give either {key} or {key}_file, not both"),
                ));
            }
        }
        // An empty token would let a request with an empty `Bearer` in; an empty secret signs
        // nothing. (A `_file` that is empty is refused when it is read.)
        for (key, inline, _) in &secrets {
            if inline
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().is_empty())
            {
                return Err(invalid(key, "is empty: give a value, or leave the key out"));
            }
        }
        Ok(())
    }

    /// Every secret of the settings with its key, each given inline or as `<key>_file`: AGORA's,
    /// each posting system's token and other secrets ([`crate::systems::POSTING`]), the
    /// operators' tokens, Pôle emploi's client secret.
    fn secrets(&self) -> Vec<(String, &Option<SecretString>, &Option<PathBuf>)> {
        let t = &self.auth.tokens;
        let mut all: Vec<_> = self
            .agora
            .secrets()
            .into_iter()
            .map(|(key, inline, file)| (key.to_string(), inline, file))
            .collect();
        for p in crate::systems::POSTING {
            let (inline, file) = t.of(p.system());
            all.push((token_key(p.system()), inline, file));
        }
        for s in crate::systems::secrets(self) {
            all.push((s.key.to_string(), s.inline, s.file));
        }
        all.extend([
            ("auth.tokens.admin".to_string(), &t.admin, &t.admin_file),
            (
                "auth.tokens.admin_personal_data".to_string(),
                &t.admin_personal_data,
                &t.admin_personal_data_file,
            ),
            (
                "pole_emploi.client_secret".to_string(),
                &self.pole_emploi.client_secret,
                &self.pole_emploi.client_secret_file,
            ),
        ]);
        all
    }

    /// `server.admin_bind` and the TLS files: each given file must exist, the key and the
    /// certificate go together, client certificates need TLS, and the names map known systems.
    fn check_listeners(&self) -> Result<(), SettingsError> {
        let s = &self.server;
        if let Some(admin) = self.admin_bind_addr()? {
            if admin == self.bind_addr()? && admin.port() != 0 {
                return Err(invalid(
                    "server.admin_bind",
                    "must differ from server.bind (leave it empty for a single listener)",
                ));
            }
        }
        match (&s.tls_cert_file, &s.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key_file",
                    "is required with server.tls_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert_file",
                    "is required with server.tls_key_file",
                ))
            }
            _ => {}
        }
        if s.tls_client_ca_file.is_some() && s.tls_cert_file.is_none() {
            return Err(invalid(
                "server.tls_client_ca_file",
                "needs server.tls_cert_file and server.tls_key_file (client certificates come \
                 with TLS)",
            ));
        }
        for (key, file) in [
            ("server.tls_cert_file", &s.tls_cert_file),
            ("server.tls_key_file", &s.tls_key_file),
            ("server.tls_client_ca_file", &s.tls_client_ca_file),
        ] {
            if let Some(path) = file {
                if !path.is_file() {
                    return Err(invalid(key, format!("{} is not a file", path.display())));
                }
            }
        }
        if !s.tls_client_names.is_empty() && s.tls_client_ca_file.is_none() {
            return Err(invalid(
                "server.tls_client_names",
                "needs server.tls_client_ca_file (only verified certificates are mapped)",
            ));
        }
        for (system, names) in &s.tls_client_names {
            let key = format!("server.tls_client_names.{system}");
            if posting_system(system).is_none() {
                return Err(invalid(&key, "is not a system that posts to passerelle"));
            }
            for name in names {
                if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                    return Err(invalid(&key, format!("{name:?} is not a DNS name")));
                }
            }
        }
        Ok(())
    }

    /// A production configuration (a PostgreSQL ledger or a RabbitMQ queue) must name AGORA's
    /// relay: the built-in sandbox there would take every dossier and deliver nothing, silently.
    /// Checked when a command that delivers starts (`serve`, `backfill`), not by the commands
    /// that only read the ledger.
    /// Days masked payloads are kept: `ledger.payload_retention_days`, or its older name
    /// `journal.payload_retention_days` when a configuration still gives it.
    pub fn payload_retention_days(&self) -> u64 {
        self.journal
            .payload_retention_days
            .unwrap_or(self.ledger.payload_retention_days)
    }

    pub fn check_production_agora(&self) -> Result<(), SettingsError> {
        let ledger = self.ledger.url.expose_secret();
        let queue = self.queue.url.expose_secret();
        let production = ledger.starts_with("postgres://")
            || ledger.starts_with("postgresql://")
            || queue.starts_with("amqp://")
            || queue.starts_with("amqps://");
        let base = self.agora.base_url.trim();
        if production && (base.is_empty() || base == "sandbox") {
            return Err(invalid(
                "agora.base_url",
                "must be AGORA's relay (https://…) with a PostgreSQL ledger or a RabbitMQ queue: \
                 `sandbox` (the default) is the built-in simulator, which delivers nothing",
            ));
        }
        Ok(())
    }

    /// `server.admin_bind`, when set.
    pub fn admin_bind_addr(&self) -> Result<Option<SocketAddr>, SettingsError> {
        let text = self.server.admin_bind.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            invalid(
                "server.admin_bind",
                "must be empty or an address and port such as 127.0.0.1:9090",
            )
        })
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.server.bind.parse().map_err(|_| {
            invalid(
                "server.bind",
                "must be an address and port such as 127.0.0.1:8080",
            )
        })
    }

    pub fn backfill_since(&self) -> Result<NaiveDate, SettingsError> {
        NaiveDate::parse_from_str(&self.perimeter.backfill_since, "%Y-%m-%d")
            .map_err(|_| invalid("perimeter.backfill_since", "must be a date YYYY-MM-DD"))
    }

    pub fn rule_settings(&self) -> RuleSettings {
        RuleSettings {
            entry_tolerance_days: self.rules.entry_tolerance_days,
            min_age_years: self.rules.min_age_years,
            max_age_years: self.rules.max_age_years,
        }
    }

    /// The ATEXO SEM decoder's settings (perimeter and rules), built once.
    pub fn atexo_decode_settings(
        &self,
    ) -> Result<passerelle_adapters::atexo_sem::DecodeSettings, SettingsError> {
        Ok(passerelle_adapters::atexo_sem::DecodeSettings {
            perimeter: passerelle_adapters::atexo_sem::PerimeterSettings {
                excluded_categories: self.perimeter.excluded_categories.clone(),
                backfill_since: self.backfill_since()?,
            },
            rules: self.rule_settings(),
        })
    }
}

/// The system a `server.tls_client_names` key names (its snake_case name): one that posts to
/// passerelle's inbound routes ([`crate::systems::POSTING`]).
pub fn posting_system(name: &str) -> Option<System> {
    serde_json::from_value::<System>(serde_json::Value::String(name.to_string()))
        .ok()
        .and_then(crate::systems::posting)
        .map(|p| p.system())
}

/// A PostgreSQL URL whose host is not this machine must ask for TLS (`sslmode=require`,
/// `verify-ca` or `verify-full`): `prefer` falls back to plaintext without a word. A Unix socket
/// (`host=/…` or no host) and loopback addresses are this machine. Only the URL is read:
/// `PGSSLMODE` in the environment does not count.
fn check_ledger_tls(url: &str) -> Result<(), SettingsError> {
    // Read by hand: `postgres://user@/db?host=/run/postgresql` is valid for PostgreSQL, not for
    // the `url` crate.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let query = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let authority = base
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_in_url = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host = query("host").unwrap_or_else(|| host_in_url.to_string());
    let local = host.is_empty()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mode = query("sslmode").unwrap_or_default().to_ascii_lowercase();
    if local || matches!(mode.as_str(), "require" | "verify-ca" | "verify-full") {
        return Ok(());
    }
    Err(invalid(
        "ledger.url",
        format!(
            "PostgreSQL on {host} must be reached over TLS: add ?sslmode=require (or verify-full), \
             or set ledger.allow_plaintext = true for a private network"
        ),
    ))
}

fn check_url(key: &str, value: &str) -> Result<(), SettingsError> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        _ => Err(invalid(key, "must be an http:// or https:// URL")),
    }
}

/// Reads a secret given inline or as a file (trailing newline trimmed).
pub fn resolve_secret(
    key: &str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, SettingsError> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    match file {
        None => Ok(None),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                return Err(invalid(
                    &format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(SecretString::from(text)))
        }
    }
}

#[cfg(test)]
mod tests;
