//! Outbound HTTP: the calls passerelle makes to other systems (contract §3 and §4).
//!
//! - [`agora`]: [`AgoraClient`], the AGORA v2 relay (search, create, transitions, backfill lots);
//! - [`atexo_sem`]: [`AtexoReturnsClient`], AGORA's answers posted back to ATEXO SEM;
//! - [`pole_emploi`]: [`PoleEmploiClient`], the Pôle emploi partner API (OAuth2 token, a session's
//!   registrations), polled by [`crate::pollers::pole_emploi`].
//!
//! The clients do the I/O and nothing else: what to send and what an answer means is the adapters'
//! business (`passerelle_adapters::agora`, `passerelle_adapters::atexo_sem`,
//! `passerelle_adapters::pole_emploi`). Each client is built
//! once from settings and keeps one connection pool; it is cheap to clone (`reqwest::Client` is an
//! `Arc` inside) and safe to share between workers.
//!
//! Transport failures (timeouts, refused or dropped connections, a body cut short) never surface as
//! `reqwest::Error`s: they become the adapter's transient outcome with a short, fixed reason, because
//! reqwest's own messages carry the URL, and a URL may one day carry something we must not log.

pub mod agora;
pub mod atexo_sem;
pub mod pole_emploi;
#[cfg(test)]
mod tests;

pub use agora::auth::{AuthConfig, AuthStatus, Placement, SigningConfig};
pub use agora::{AgoraClient, AgoraClientConfig, Health, LotFailure};
pub use atexo_sem::{AtexoReturnsClient, AtexoReturnsConfig, ReturnError};
pub use pole_emploi::{PoleEmploiClient, PoleEmploiClientConfig, PoleEmploiError};

use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default `User-Agent`: the relay's operators see which passerelle called.
pub const DEFAULT_USER_AGENT: &str = concat!("passerelle/", env!("CARGO_PKG_VERSION"));

/// The most bytes read from an answer. AGORA's largest answer is a backfill report of
/// [`passerelle_adapters::agora::MAX_LOT_LINES`] lines (a few MB); anything far beyond that is a
/// misbehaving peer, and reading it whole would let it exhaust our memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a client could not be built: a start-up error, so it names the setting at fault (never a
/// secret's value).
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("{setting}: not a usable base URL ({why})")]
    Url {
        setting: &'static str,
        why: &'static str,
    },
    #[error("{setting}: the token is not a valid HTTP header value")]
    Token { setting: &'static str },
    #[error("{setting}: cannot read the CA file {path}")]
    CaFileRead {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting}: the CA file {path} holds no usable PEM certificate")]
    CaFileContent {
        setting: &'static str,
        path: PathBuf,
    },
    #[error("{setting}: {problem}")]
    Auth {
        setting: &'static str,
        problem: String,
    },
    #[error("the HTTP client could not be built")]
    Build(#[source] reqwest::Error),
}

/// The certificate and key a client shows for mutual TLS. `Debug` prints the certificate's path
/// only.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate, then its chain, PEM.
    pub certificate_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: SecretString,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificate_file", &self.certificate_file)
            .finish_non_exhaustive()
    }
}

/// What every outbound client shares: the transport settings.
#[derive(Debug, Clone)]
pub(crate) struct Transport<'a> {
    /// The settings' section, named in build errors (`agora`, `atexo_sem`, `pole_emploi`).
    pub section: &'static str,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub user_agent: &'a str,
    pub ca_file: Option<&'a Path>,
    /// Mutual TLS: what the client shows the server.
    pub identity: Option<&'a ClientIdentity>,
}

impl Transport<'_> {
    /// One pooled client. rustls verifies the peer's certificate against the Mozilla roots bundled
    /// in `webpki-roots` (so the check does not depend on the host's CA store, which a container
    /// image may lack) plus, when given, the certificates of `ca_file` (a relay signed by an
    /// internal CA). With an identity, the client presents that certificate when the server asks.
    pub(crate) fn client(
        &self,
        headers: reqwest::header::HeaderMap,
    ) -> Result<reqwest::Client, ClientBuildError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .user_agent(self.user_agent)
            .default_headers(headers)
            // These endpoints are fixed by configuration: a redirect is a misconfiguration to see,
            // not to follow (and following one would resend a POST elsewhere).
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = self.ca_file {
            let setting = ca_setting(self.section);
            let pem = std::fs::read(path).map_err(|source| ClientBuildError::CaFileRead {
                setting,
                path: path.to_path_buf(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| ClientBuildError::CaFileContent {
                    setting,
                    path: path.to_path_buf(),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = self.identity {
            builder = builder.identity(load_identity(identity)?);
        }
        builder.build().map_err(ClientBuildError::Build)
    }
}

/// The client certificate's PEM and the key's, as one bundle (what rustls's identity reads).
fn load_identity(identity: &ClientIdentity) -> Result<reqwest::Identity, ClientBuildError> {
    const CERT: &str = "agora.tls_client_cert_file";
    let path = &identity.certificate_file;
    let mut pem = std::fs::read(path).map_err(|e| ClientBuildError::Auth {
        setting: CERT,
        problem: format!("cannot read {}: {}", path.display(), e.kind()),
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ClientBuildError::Auth {
            setting: CERT,
            problem: format!("{} holds no PEM certificate", path.display()),
        });
    }
    pem.push(b'\n');
    pem.extend_from_slice(identity.key.expose_secret().as_bytes());
    pem.push(b'\n');
    reqwest::Identity::from_pem(&pem).map_err(|_| ClientBuildError::Auth {
        setting: "agora.tls_client_key_file",
        problem: "not a PEM private key (PKCS#8, PKCS#1 or SEC1) for the client certificate"
            .to_string(),
    })
}

fn ca_setting(section: &'static str) -> &'static str {
    match section {
        "agora" => "agora.tls_ca_file",
        "atexo_sem" => "atexo_sem.ca_file",
        "pole_emploi" => "pole_emploi.ca_file",
        _ => "ca_file",
    }
}

/// Checks a configured base URL: absolute http(s), able to take path segments.
pub(crate) fn parse_base(setting: &'static str, raw: &str) -> Result<url::Url, ClientBuildError> {
    let url = url::Url::parse(raw.trim()).map_err(|_| ClientBuildError::Url {
        setting,
        why: "not an absolute URL",
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientBuildError::Url {
            setting,
            why: "the scheme is neither http nor https",
        });
    }
    if url.cannot_be_a_base() {
        return Err(ClientBuildError::Url {
            setting,
            why: "it cannot take a path",
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientBuildError::Url {
            setting,
            why: "it has a query or a fragment",
        });
    }
    Ok(url)
}

/// A transport failure in a few fixed words. reqwest's `Display` is not used: it quotes the URL.
/// The innermost I/O error, when there is one, says what the socket saw (`connection refused`,
/// `connection reset by peer`…): its kind is a fixed phrase, never data.
pub(crate) fn transport_reason(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "answer body could not be read"
    } else if e.is_request() {
        "request failed (no answer)"
    } else {
        "transport error"
    };
    match io_kind(e) {
        Some(kind) if !e.is_timeout() => format!("{what}: {kind}"),
        _ => what.to_string(),
    }
}

fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// Reads an answer's body up to [`MAX_ANSWER_BYTES`]. `Err(None)` when the peer sent more (the
/// caller reports it as unexpected); `Err(Some(reason))` when the transport failed mid-body.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
) -> Result<Vec<u8>, Option<String>> {
    let mut body = Vec::with_capacity(
        response
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(MAX_ANSWER_BYTES),
    );
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(None);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(Some(transport_reason(&e))),
        }
    }
}

/// The `Retry-After` header as text, when it is readable.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A duration in whole milliseconds, for telemetry fields.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
