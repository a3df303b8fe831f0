//! Settings (contract §6): `config/default.toml` (embedded in the binary), then the file given
//! with `--config`, then `PASSERELLE__SECTION__KEY` environment variables. Unknown keys are refused
//! with their name; secrets are `SecretString`s, given inline or as `<key>_file`; everything is
//! checked at start-up ([`Settings::load`]) with messages an operator can act on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::rules::RuleSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod agora;
pub use agora::{AgoraAuthMode, AgoraAuthSettings, AgoraSettings, SigningAlgorithm};

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub ledger: LedgerSettings,
    pub queue: QueueSettings,
    pub agora: AgoraSettings,
    pub auth: AuthSettings,
    pub ouiform: OuiformSettings,
    pub pole_emploi: PoleEmploiSettings,
    pub atexo_sem: AtexoSemSettings,
    pub perimeter: PerimeterSettings,
    pub retry: RetrySettings,
    pub rules: RulesSettings,
    #[serde(default)]
    pub merge: MergeSettings,
    pub worker: WorkerSettings,
    pub backfill: BackfillSettings,
    pub journal: JournalSettings,
    pub telemetry: TelemetrySettings,
    pub data: DataSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the HTTP API (`server.bind`).
    pub bind: String,
    /// Largest accepted request body, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// Longest an ATEXO SEM post may take to decode, in milliseconds from the end of its body;
    /// past it decoding stops and nothing is stored: 422 when violations were already found, else
    /// 413 (split the export, or load it with `passerelle backfill`).
    pub decode_budget_ms: u64,
    /// Requests per second allowed per calling system (429 above).
    pub rate_per_second: u32,
    /// Burst allowed above the rate.
    pub rate_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// `sqlite://…` (embedded) or `postgres://…` (production).
    pub url: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `embedded` or `amqp://…` (RabbitMQ).
    pub url: SecretString,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub tokens: TokenSettings,
}

/// Bearer tokens accepted per caller; missing ones are generated into `data.dir/credentials`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// OUIFORM's token.
    pub ouiform: Option<SecretString>,
    pub ouiform_file: Option<PathBuf>,
    /// ATEXO SEM's token.
    pub atexo_sem: Option<SecretString>,
    pub atexo_sem_file: Option<PathBuf>,
    /// The operators' token (admin routes).
    pub admin: Option<SecretString>,
    pub admin_file: Option<PathBuf>,
    /// A second operators' token whose holder also sees a dossier's personal fields unmasked in
    /// `GET /v1/dossiers/{id}`. Never generated: unset, nobody can unmask.
    pub admin_personal_data: Option<SecretString>,
    pub admin_personal_data_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuiformSettings {
    /// Shared secret of `X-Ouiform-Signature` (HMAC-SHA256 of the raw body).
    pub hmac_secret: Option<SecretString>,
    pub hmac_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoleEmploiSettings {
    /// OAuth2 server; polling is off when `api_url` is empty.
    pub auth_url: String,
    /// Partner API base URL.
    pub api_url: String,
    /// OAuth2 client id (client credentials grant, `realm=/partenaire`).
    pub client_id: String,
    /// OAuth2 client secret.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// OAuth2 scopes asked for, space-separated.
    pub scope: String,
    /// Seconds between two polls of the same session.
    pub poll_interval_s: u64,
    /// Sessions polled at once.
    pub concurrency: u16,
    /// Time allowed to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// Time allowed for a whole call, ms.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtexoSemSettings {
    /// Where AGORA's returns are posted; off when empty.
    pub returns_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerimeterSettings {
    /// ATEXO SEM `categorie` codes outside AGORA's perimeter.
    pub excluded_categories: Vec<String>,
    /// In a backfill, sessions starting before this date (YYYY-MM-DD) are out of perimeter.
    pub backfill_since: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First backoff delay of a transient failure, ms (doubled at each attempt, with jitter).
    pub base_ms: u64,
    /// Longest backoff delay, ms.
    pub max_ms: u64,
    /// Attempts before a dossier goes to the dead letters.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    /// Days an entry may precede the session start.
    pub entry_tolerance_days: i64,
    /// Youngest plausible trainee, years.
    pub min_age_years: i32,
    /// Oldest plausible trainee, years.
    pub max_age_years: i32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSettings {
    /// Which source wins, per field group (`merge.precedence.entry = ["pole_emploi", "atexo_sem"]`).
    #[serde(default)]
    pub precedence: Precedence,
}

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// Days the masked payloads of inbound messages are kept.
    pub payload_retention_days: u64,
}

/// Traces (logs are JSON on stderr, their level from `RUST_LOG`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP traces endpoint (e.g. `http://otel-collector:4318/v1/traces`); off when empty.
    pub otlp_endpoint: String,
    /// `service.name` of the exported traces.
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// Directory of the embedded ledger, queue and generated credentials.
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

    fn validate(&self) -> Result<(), SettingsError> {
        self.bind_addr()?;
        if self.server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes", "must be more than 0"));
        }
        if self.server.decode_budget_ms == 0 {
            return Err(invalid("server.decode_budget_ms", "must be more than 0"));
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
        // Secrets given twice are ambiguous: refuse rather than guess.
        for (key, inline, file) in self.agora.secret_pairs().into_iter().chain([
            (
                "auth.tokens.ouiform",
                self.auth.tokens.ouiform.is_some(),
                self.auth.tokens.ouiform_file.is_some(),
            ),
            (
                "auth.tokens.atexo_sem",
                self.auth.tokens.atexo_sem.is_some(),
                self.auth.tokens.atexo_sem_file.is_some(),
            ),
            (
                "auth.tokens.admin",
                self.auth.tokens.admin.is_some(),
                self.auth.tokens.admin_file.is_some(),
            ),
            (
                "auth.tokens.admin_personal_data",
                self.auth.tokens.admin_personal_data.is_some(),
                self.auth.tokens.admin_personal_data_file.is_some(),
            ),
            (
                "ouiform.hmac_secret",
                self.ouiform.hmac_secret.is_some(),
                self.ouiform.hmac_secret_file.is_some(),
            ),
            (
                "pole_emploi.client_secret",
                self.pole_emploi.client_secret.is_some(),
                self.pole_emploi.client_secret_file.is_some(),
            ),
        ]) {
            if inline && file {
                return Err(invalid(
                    key,
                    format!("give either {key} or {key}_file, not both"),
                ));
            }
        }
        Ok(())
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_defaults_are_valid() {
        let s = Settings::load(None, env(&[])).expect("defaults load");
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.queue.url.expose_secret(), "embedded");
        assert_eq!(s.retry.max_attempts, 12);
        assert_eq!(s.perimeter.excluded_categories.len(), 6);
        assert_eq!(s.merge.precedence, Precedence::default());
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "[agora]\nbase_url = \"https://relay.example:8443\"\ntoken = \"t\"\n[retry]\nmax_attempts = 3\n",
        )
        .expect("write");
        let s = Settings::load(
            Some(&file),
            env(&[
                ("PASSERELLE__RETRY__MAX_ATTEMPTS", "5"),
                ("PASSERELLE__PERIMETER__EXCLUDED_CATEGORIES", "PSAD,VAE"),
                ("OTHER__RETRY__MAX_ATTEMPTS", "9"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.agora.base_url, "https://relay.example:8443");
        assert_eq!(s.retry.max_attempts, 5);
        assert_eq!(s.perimeter.excluded_categories, vec!["PSAD", "VAE"]);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = Settings::load(None, env(&[("PASSERELLE__SERVER__BINDD", "x")]))
            .expect_err("unknown key");
        assert!(e.to_string().contains("bindd"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[agoar]\nbase_url = \"x\"\n").expect("write");
        let e = Settings::load(Some(&file), env(&[])).expect_err("unknown section");
        assert!(e.to_string().contains("agoar"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (k, v, key) in [
            ("PASSERELLE__SERVER__BIND", "nowhere", "server.bind"),
            ("PASSERELLE__QUEUE__URL", "kafka://x", "queue.url"),
            ("PASSERELLE__LEDGER__URL", "mysql://x", "ledger.url"),
            ("PASSERELLE__AGORA__BASE_URL", "relay", "agora.base_url"),
            ("PASSERELLE__RETRY__MAX_ATTEMPTS", "0", "retry.max_attempts"),
            (
                "PASSERELLE__PERIMETER__BACKFILL_SINCE",
                "01/01/2017",
                "perimeter.backfill_since",
            ),
        ] {
            let e = Settings::load(None, env(&[(k, v)])).expect_err(k);
            assert!(e.to_string().contains(key), "{k}: {e}");
        }
    }

    #[test]
    fn the_production_example_loads_and_points_at_postgresql_and_rabbitmq() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/production.example.toml");
        let s = Settings::load(Some(&file), env(&[])).expect("the production example loads");
        assert!(s.ledger.url.expose_secret().starts_with("postgres://"));
        assert!(s.queue.url.expose_secret().starts_with("amqp://"));
        assert!(
            s.agora.base_url.starts_with("https://"),
            "{}",
            s.agora.base_url
        );
        assert!(s.atexo_sem.returns_url.starts_with("https://"));
        assert!(s.bind_addr().expect("bind").ip().is_unspecified());
        assert_eq!(s.data.dir, Path::new("/var/lib/passerelle"));
        // Secrets only as files, none inline.
        let t = &s.auth.tokens;
        assert!(s.agora.token.is_none() && s.agora.token_file.is_some());
        assert!(t.ouiform.is_none() && t.atexo_sem.is_none() && t.admin.is_none());
        assert!(t.ouiform_file.is_some() && t.atexo_sem_file.is_some() && t.admin_file.is_some());
        assert!(s.ouiform.hmac_secret.is_none() && s.ouiform.hmac_secret_file.is_some());

        // The URLs with their passwords come from the environment, over the file's.
        let s = Settings::load(
            Some(&file),
            env(&[
                (
                    "PASSERELLE__LEDGER__URL",
                    "postgres://passerelle:pw@postgres:5432/passerelle",
                ),
                (
                    "PASSERELLE__QUEUE__URL",
                    "amqp://passerelle:pw@rabbitmq:5672/%2f",
                ),
            ]),
        )
        .expect("loads with the environment");
        assert_eq!(
            s.ledger.url.expose_secret(),
            "postgres://passerelle:pw@postgres:5432/passerelle"
        );
        assert_eq!(
            s.queue.url.expose_secret(),
            "amqp://passerelle:pw@rabbitmq:5672/%2f"
        );
    }

    #[test]
    fn pole_emploi_polling_needs_its_credentials() {
        let on = [
            (
                "PASSERELLE__POLE_EMPLOI__API_URL",
                "https://api.example.invalid/partenaire",
            ),
            (
                "PASSERELLE__POLE_EMPLOI__AUTH_URL",
                "https://entreprise.example.invalid",
            ),
            ("PASSERELLE__POLE_EMPLOI__CLIENT_ID", "PAR_passerelle"),
            ("PASSERELLE__POLE_EMPLOI__CLIENT_SECRET", "s3cret"),
            ("PASSERELLE__POLE_EMPLOI__SCOPE", "api_inscriptionsv1"),
        ];
        let s = Settings::load(None, env(&on)).expect("polling on");
        assert_eq!(s.pole_emploi.concurrency, 4);
        assert_eq!(s.pole_emploi.poll_interval_s, 300);
        for (missing, key) in [
            (2, "pole_emploi.client_id"),
            (3, "pole_emploi.client_secret"),
            (4, "pole_emploi.scope"),
        ] {
            let mut pairs = on.to_vec();
            pairs.remove(missing);
            let e = Settings::load(None, env(&pairs)).expect_err(key);
            assert!(e.to_string().contains(key), "{e}");
        }
        for (k, key) in [
            (
                "PASSERELLE__POLE_EMPLOI__CONCURRENCY",
                "pole_emploi.concurrency",
            ),
            (
                "PASSERELLE__POLE_EMPLOI__POLL_INTERVAL_S",
                "pole_emploi.poll_interval_s",
            ),
        ] {
            let mut pairs = on.to_vec();
            pairs.push((k, "0"));
            let e = Settings::load(None, env(&pairs)).expect_err(key);
            assert!(e.to_string().contains(key), "{e}");
        }
        // Off (the default), nothing else is asked for.
        Settings::load(None, env(&[])).expect("polling off");
    }

    #[test]
    fn secrets_come_inline_or_from_a_file_never_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").expect("write");
        let path = f.to_string_lossy().to_string();
        let s =
            Settings::load(None, env(&[("PASSERELLE__AGORA__TOKEN_FILE", &path)])).expect("loads");
        let t = resolve_secret("agora.token", &s.agora.token, &s.agora.token_file).expect("reads");
        assert_eq!(
            t.map(|t| t.expose_secret().to_string()).as_deref(),
            Some("s3cret")
        );
        assert!(!format!("{s:?}").contains("s3cret"));
        let e = Settings::load(
            None,
            env(&[
                ("PASSERELLE__AGORA__TOKEN_FILE", &path),
                ("PASSERELLE__AGORA__TOKEN", "x"),
            ]),
        )
        .expect_err("both");
        assert!(e.to_string().contains("agora.token"), "{e}");
    }

    #[test]
    fn the_personal_data_token_is_optional_and_given_once() {
        let s = Settings::load(None, env(&[])).expect("loads");
        let t = &s.auth.tokens;
        assert!(t.admin_personal_data.is_none() && t.admin_personal_data_file.is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pd");
        std::fs::write(&f, "pd-s3cret\n").expect("write");
        let path = f.to_string_lossy().to_string();
        let s = Settings::load(
            None,
            env(&[("PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA_FILE", &path)]),
        )
        .expect("loads");
        let t = &s.auth.tokens;
        let token = resolve_secret(
            "auth.tokens.admin_personal_data",
            &t.admin_personal_data,
            &t.admin_personal_data_file,
        )
        .expect("reads");
        assert_eq!(
            token.map(|t| t.expose_secret().to_string()).as_deref(),
            Some("pd-s3cret")
        );
        let e = Settings::load(
            None,
            env(&[
                ("PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA_FILE", &path),
                ("PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA", "x"),
            ]),
        )
        .expect_err("both");
        assert!(
            e.to_string().contains("auth.tokens.admin_personal_data"),
            "{e}"
        );
        assert!(!e.to_string().contains("pd-s3cret"));
    }
}
