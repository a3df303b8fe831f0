//! How calls to AGORA prove who sends them (contract §6, `agora.auth.*`): one role, one trait,
//! [`Authenticator`], with one implementation per `agora.auth.mode`:
//!
//! - [`StaticBearer`] (`bearer`): `agora.token`, the same on every call;
//! - [`CommandToken`] (`command`): a token printed by an external program (a wrapper around the GIP
//!   MDS token suite), cached until shortly before it expires, renewed once on a `401`;
//! - [`SignedToken`] (`signed`): a short-lived JWS passerelle signs itself with the partner's key,
//!   its certificate chain in the `x5c` header.
//!
//! The AGORA client asks for a [`Credential`] before each call, and tells the authenticator when
//! AGORA answered `401` to it ([`Authenticator::refused`]); nothing else in passerelle knows how the
//! token is made. A credential that cannot be had (the command fails or times out) is an
//! [`AuthError`], which the client turns into a transient failure of the call: the worker retries
//! it with its backoff, nothing is dead-lettered for it before the retries run out.
//!
//! No token is ever logged: [`Credential`]'s `Debug` is masked, the header value is marked
//! sensitive, and a command's stderr is logged with every occurrence of its token replaced.

mod command;
mod signed;

pub use command::CommandToken;
pub use signed::{SignedToken, SigningConfig};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::clients::ClientBuildError;

/// Proves who passerelle is to AGORA. Shared by every worker (sync and backfill lanes) through the
/// AGORA client.
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The credential for the next call: the cached one while it is fresh, else a new one. Callers
    /// that arrive during a renewal wait for it and share its result.
    async fn credential(&self) -> Result<Credential, AuthError>;

    /// AGORA answered `401` to a call made with `used`. The authenticator forgets `used` (unless
    /// another caller already replaced it) and says whether a new credential may succeed, in which
    /// case the client renews and calls once more.
    async fn refused(&self, used: &Credential) -> bool;

    /// What `/readyz` shows: the mode, and when the current token expires (never the token).
    fn status(&self) -> AuthStatus;
}

/// The header a call carries. `Debug` shows the header's name only.
#[derive(Clone)]
pub struct Credential {
    pub(crate) name: HeaderName,
    pub(crate) value: HeaderValue,
    /// Which issuance this is, so that a `401` to an old token does not discard a newer one.
    pub(crate) serial: u64,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.name.as_str())
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// The authenticator in use and the expiry of its current token (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthStatus {
    /// `bearer`, `command` or `signed`.
    pub mode: &'static str,
    /// When the current token expires; `None` when it has none (a static token, a command that did
    /// not say) or when no token is held yet.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why no credential could be had. Transient for the call (retried); never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("agora.auth.command: `{program}` could not be started ({kind})")]
    CommandSpawn {
        program: String,
        kind: std::io::ErrorKind,
    },
    #[error("agora.auth.command: `{program}` did not finish within {timeout_ms} ms (agora.auth.command_timeout_ms); it was killed")]
    CommandTimedOut { program: String, timeout_ms: u64 },
    #[error("agora.auth.command: `{program}` failed ({status}){}", stderr_suffix(.stderr))]
    CommandFailed {
        program: String,
        status: String,
        /// Its stderr, the token redacted, cut to a few hundred characters.
        stderr: String,
    },
    #[error("agora.auth.command: `{program}` {problem}")]
    CommandOutput {
        program: String,
        problem: &'static str,
    },
    #[error("agora.auth: the token could not be signed ({0})")]
    Signing(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Where the token goes: `agora.auth.header` and `agora.auth.scheme` (`Authorization: Bearer …`).
#[derive(Debug, Clone)]
pub struct Placement {
    pub header: String,
    /// Written before the token with one space; empty: the token alone.
    pub scheme: String,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            header: "Authorization".to_string(),
            scheme: "Bearer".to_string(),
        }
    }
}

impl Placement {
    fn header_name(&self) -> Result<HeaderName, ClientBuildError> {
        HeaderName::from_bytes(self.header.trim().as_bytes()).map_err(|_| ClientBuildError::Auth {
            setting: "agora.auth.header",
            problem: "not a valid HTTP header name".to_string(),
        })
    }

    /// The header value for `token`, marked sensitive (hyper's and reqwest's `Debug` hide it).
    fn value(&self, token: &str) -> Option<HeaderValue> {
        let text = if self.scheme.trim().is_empty() {
            token.trim().to_string()
        } else {
            format!("{} {}", self.scheme.trim(), token.trim())
        };
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// `agora.auth.mode` and what it needs, as the AGORA client is given it.
#[derive(Clone)]
pub enum AuthConfig {
    /// `bearer`: `agora.token`.
    Bearer { token: SecretString },
    /// `command`: `agora.auth.command` (program first), `agora.auth.command_timeout_ms`.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// `signed`.
    Signed(SigningConfig),
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthConfig::Bearer { .. } => f.write_str("Bearer { token: [redacted] }"),
            AuthConfig::Command { argv, timeout } => f
                .debug_struct("Command")
                // The arguments may carry a password: the program alone.
                .field("program", &argv.first())
                .field("timeout", timeout)
                .finish_non_exhaustive(),
            AuthConfig::Signed(s) => s.fmt(f),
        }
    }
}

impl AuthConfig {
    /// The authenticator this configuration asks for; key files are read now, so a missing or
    /// unusable one stops the start with the key's name.
    pub fn build(
        &self,
        placement: &Placement,
    ) -> Result<std::sync::Arc<dyn Authenticator>, ClientBuildError> {
        Ok(match self {
            AuthConfig::Bearer { token } => {
                std::sync::Arc::new(StaticBearer::new(token, placement)?)
            }
            AuthConfig::Command { argv, timeout } => {
                std::sync::Arc::new(CommandToken::new(argv, *timeout, placement)?)
            }
            AuthConfig::Signed(config) => std::sync::Arc::new(SignedToken::new(config, placement)?),
        })
    }
}

/// `bearer`: the configured token on every call.
pub struct StaticBearer {
    credential: Credential,
}

impl fmt::Debug for StaticBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticBearer").finish_non_exhaustive()
    }
}

impl StaticBearer {
    pub fn new(token: &SecretString, placement: &Placement) -> Result<Self, ClientBuildError> {
        let token = token.expose_secret().trim();
        if token.is_empty() {
            return Err(ClientBuildError::Token {
                setting: "agora.token",
            });
        }
        let value = placement.value(token).ok_or(ClientBuildError::Token {
            setting: "agora.token",
        })?;
        Ok(StaticBearer {
            credential: Credential {
                name: placement.header_name()?,
                value,
                serial: 0,
            },
        })
    }
}

#[async_trait]
impl Authenticator for StaticBearer {
    async fn credential(&self) -> Result<Credential, AuthError> {
        Ok(self.credential.clone())
    }

    /// The same token again would be refused again: the `401` stands.
    async fn refused(&self, _used: &Credential) -> bool {
        false
    }

    fn status(&self) -> AuthStatus {
        AuthStatus {
            mode: "bearer",
            expires_at: None,
        }
    }
}

/// A token held for reuse, with when to stop using it.
pub(crate) struct Cached {
    pub credential: Credential,
    /// `None`: until AGORA refuses it.
    pub renew_at: Option<Instant>,
}

impl Cached {
    pub fn fresh(&self, now: Instant) -> bool {
        self.renew_at.is_none_or(|at| now < at)
    }
}

/// When a token of this lifetime should be renewed: shortly before it expires, so that a call
/// started just before never carries an expired token (a tenth of its lifetime early, at most
/// 30 s).
pub(crate) fn renew_after(lifetime: Duration) -> Duration {
    lifetime - (lifetime / 10).min(Duration::from_secs(30))
}

/// The expiry `/readyz` shows, shared between the refreshing task and the readers without a lock
/// (Unix milliseconds; 0: none).
#[derive(Debug, Default)]
pub(crate) struct ExpiryCell(AtomicI64);

impl ExpiryCell {
    pub fn set(&self, at: Option<DateTime<Utc>>) {
        self.0
            .store(at.map_or(0, |t| t.timestamp_millis()), Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<DateTime<Utc>> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }
}

/// Reads a file named by a setting, for a start-up error that names the setting.
pub(crate) fn read_setting_file(
    setting: &'static str,
    path: &std::path::Path,
) -> Result<Vec<u8>, ClientBuildError> {
    std::fs::read(path).map_err(|e| ClientBuildError::Auth {
        setting,
        problem: format!("cannot read {}: {}", path.display(), e.kind()),
    })
}

/// A PEM bundle's certificates, DER, in order.
pub(crate) fn pem_certificates(
    setting: &'static str,
    path: &std::path::Path,
) -> Result<Vec<Vec<u8>>, ClientBuildError> {
    let pem = read_setting_file(setting, path)?;
    let certs: Vec<Vec<u8>> = pem::parse_many(&pem)
        .map_err(|_| ClientBuildError::Auth {
            setting,
            problem: format!("{} is not PEM", path.display()),
        })?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(ClientBuildError::Auth {
            setting,
            problem: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;
