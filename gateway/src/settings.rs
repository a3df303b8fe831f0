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

fn invalid(key: &str, problem: impl Into<String>) -> SettingsError {
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
    pub journal: JournalSettings,
    pub data: DataSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the HTTP API (`server.bind`).
    pub bind: String,
    /// Largest accepted request body, in bytes (413 above).
    pub body_limit_bytes: usize,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgoraSettings {
    /// The AGORA relay (INTEROPS-A), or `sandbox` for the built-in simulator.
    pub base_url: String,
    /// Bearer token sent to the relay.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// File holding the token, instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Time allowed to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// Time allowed for a whole call, ms.
    pub request_timeout_ms: u64,
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
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    pub scope: String,
    /// Seconds between two polls of the same session.
    pub poll_interval_s: u64,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// Days the masked payloads of inbound messages are kept.
    pub payload_retention_days: u64,
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
        if !self.atexo_sem.returns_url.is_empty() {
            check_url("atexo_sem.returns_url", &self.atexo_sem.returns_url)?;
        }
        if !self.pole_emploi.api_url.is_empty() {
            check_url("pole_emploi.api_url", &self.pole_emploi.api_url)?;
            check_url("pole_emploi.auth_url", &self.pole_emploi.auth_url)?;
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
        for (key, inline, file) in [
            (
                "agora.token",
                self.agora.token.is_some(),
                self.agora.token_file.is_some(),
            ),
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
                "ouiform.hmac_secret",
                self.ouiform.hmac_secret.is_some(),
                self.ouiform.hmac_secret_file.is_some(),
            ),
            (
                "pole_emploi.client_secret",
                self.pole_emploi.client_secret.is_some(),
                self.pole_emploi.client_secret_file.is_some(),
            ),
        ] {
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
            "[agora]\nbase_url = \"https://relay.example:8443\"\n[retry]\nmax_attempts = 3\n",
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
}
