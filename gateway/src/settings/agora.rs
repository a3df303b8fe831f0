//! The `[agora]` settings (contract §6): the relay, how calls prove who sends them
//! (`agora.auth.*`), and mutual TLS (`agora.tls_*`); their start-up checks, and the AGORA client's
//! configuration built from them.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{invalid, resolve_secret, SettingsError};
use crate::clients::agora::auth::{AuthConfig, Placement, SigningConfig};
use crate::clients::agora::AgoraClientConfig;
use crate::clients::ClientIdentity;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgoraSettings {
    /// The AGORA relay (INTEROPS-A), or `sandbox` for the built-in simulator.
    pub base_url: String,
    /// Bearer token sent to the relay (`agora.auth.mode = "bearer"`).
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::Secret>")]
    pub token: Option<SecretString>,
    /// File holding the token, instead of `token`.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub token_file: Option<PathBuf>,
    /// Time allowed to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// Time allowed for a whole call, ms.
    pub request_timeout_ms: u64,
    /// How calls to AGORA prove who sends them.
    pub auth: AgoraAuthSettings,
    /// Mutual TLS: the client certificate (then its chain) shown to the relay, PEM.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// Mutual TLS: the client certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::Secret>")]
    pub tls_client_key: Option<SecretString>,
    /// File holding the client key, instead of `tls_client_key`.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub tls_client_key_file: Option<PathBuf>,
    /// PEM certificates trusted besides the bundled web roots (a relay signed by an internal CA).
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub tls_ca_file: Option<PathBuf>,
}

/// `agora.auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgoraAuthMode {
    /// `agora.token` on every call.
    Bearer,
    /// A token printed by `agora.auth.command`.
    Command,
    /// A JWS signed by passerelle with `agora.auth.signing_key`.
    Signed,
}

/// `agora.auth.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum SigningAlgorithm {
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgoraAuthSettings {
    /// `bearer` (`agora.token`), `command` (a program prints the token) or `signed` (passerelle
    /// signs a JWS).
    pub mode: AgoraAuthMode,
    /// The header that carries the token.
    pub header: String,
    /// Written before the token in the header, with a space; empty: the token alone.
    pub scheme: String,
    /// `command`: the program, then its arguments (a list; no shell). It prints the token on the
    /// first line of its stdout and, optionally, the token's lifetime in seconds on the second;
    /// it is run again shortly before that lifetime ends, and once on a `401`. In the environment,
    /// comma-separated.
    pub command: Vec<String>,
    /// `command`: the longest the program may run, ms; past it, it is killed and the call is
    /// retried later.
    pub command_timeout_ms: u64,
    /// `signed`: the partner's private key, PEM (PKCS#8 for ES256; PKCS#8 or PKCS#1 for RS256).
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::Secret>")]
    pub signing_key: Option<SecretString>,
    /// File holding the signing key, instead of `signing_key`.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub signing_key_file: Option<PathBuf>,
    /// `signed`: the partner's certificate chain, PEM, leaf first; it goes in the JWS `x5c` header.
    #[serde(default)]
    #[schemars(with = "Option<crate::config_reference::FilePath>")]
    pub certificate_file: Option<PathBuf>,
    /// `signed`: `RS256` or `ES256`.
    pub algorithm: SigningAlgorithm,
    /// `signed`: the `iss` claim.
    pub issuer: String,
    /// `signed`: the `sub` claim.
    pub subject: String,
    /// `signed`: the `aud` claim.
    pub audience: String,
    /// `signed`: seconds between `iat` and `exp`.
    pub lifetime_s: u64,
    /// `signed`: seconds a token is reused for; 0: a new token every call. Less than `lifetime_s`.
    pub reuse_s: u64,
}

impl AgoraSettings {
    /// What can be checked without reading a file; the files are read when the client is built.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let auth = &self.auth;
        let sandbox = self.base_url == "sandbox";
        if sandbox && auth.mode != AgoraAuthMode::Bearer {
            return Err(invalid(
                "agora.auth.mode",
                "the built-in sandbox (agora.base_url = \"sandbox\") takes only \"bearer\"",
            ));
        }
        if reqwest::header::HeaderName::from_bytes(auth.header.trim().as_bytes()).is_err() {
            return Err(invalid("agora.auth.header", "must be an HTTP header name"));
        }
        if auth
            .scheme
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "agora.auth.scheme",
                "must be one word, such as Bearer",
            ));
        }
        match auth.mode {
            AgoraAuthMode::Bearer if !sandbox => {
                let given = self
                    .token
                    .as_ref()
                    .map(|t| !t.expose_secret().trim().is_empty());
                match (given, &self.token_file) {
                    (Some(false), _) => return Err(invalid("agora.token", "is empty")),
                    (None, None) => {
                        return Err(invalid(
                            "agora.token",
                            "is required (or agora.token_file) when agora.auth.mode = \"bearer\"",
                        ))
                    }
                    _ => {}
                }
            }
            AgoraAuthMode::Bearer => {}
            AgoraAuthMode::Command => {
                if auth.command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(invalid(
                        "agora.auth.command",
                        "is empty: with agora.auth.mode = \"command\", give the program and its arguments, as a list",
                    ));
                }
                if auth.command_timeout_ms == 0 {
                    return Err(invalid(
                        "agora.auth.command_timeout_ms",
                        "must be more than 0",
                    ));
                }
            }
            AgoraAuthMode::Signed => {
                if auth.signing_key.is_none() && auth.signing_key_file.is_none() {
                    return Err(invalid(
                        "agora.auth.signing_key_file",
                        "is required (or agora.auth.signing_key) when agora.auth.mode = \"signed\"",
                    ));
                }
                if auth.certificate_file.is_none() {
                    return Err(invalid(
                        "agora.auth.certificate_file",
                        "is required when agora.auth.mode = \"signed\" (its chain goes in the x5c header)",
                    ));
                }
                for (key, value) in [
                    ("agora.auth.issuer", &auth.issuer),
                    ("agora.auth.subject", &auth.subject),
                    ("agora.auth.audience", &auth.audience),
                ] {
                    if value.trim().is_empty() {
                        return Err(invalid(
                            key,
                            "is required when agora.auth.mode = \"signed\"",
                        ));
                    }
                }
                if auth.lifetime_s == 0 {
                    return Err(invalid("agora.auth.lifetime_s", "must be at least 1"));
                }
                if auth.reuse_s >= auth.lifetime_s {
                    return Err(invalid(
                        "agora.auth.reuse_s",
                        "must be less than agora.auth.lifetime_s (a token is not reused past its life)",
                    ));
                }
            }
        }
        let key_given = self.tls_client_key.is_some() || self.tls_client_key_file.is_some();
        match (&self.tls_client_cert_file, key_given) {
            (Some(_), false) => {
                return Err(invalid(
                    "agora.tls_client_key_file",
                    "is required (or agora.tls_client_key) with agora.tls_client_cert_file",
                ))
            }
            (None, true) => {
                return Err(invalid(
                    "agora.tls_client_cert_file",
                    "is required with agora.tls_client_key_file",
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Its secrets, each given inline or as `<key>_file`, for the settings' checks.
    pub(super) fn secrets(&self) -> [(&'static str, &Option<SecretString>, &Option<PathBuf>); 3] {
        [
            ("agora.token", &self.token, &self.token_file),
            (
                "agora.auth.signing_key",
                &self.auth.signing_key,
                &self.auth.signing_key_file,
            ),
            (
                "agora.tls_client_key",
                &self.tls_client_key,
                &self.tls_client_key_file,
            ),
        ]
    }

    /// The AGORA client's configuration for the relay at `base_url` (the settings' own, or the
    /// built-in sandbox's with its token), secrets read from their files.
    pub fn client_config(
        &self,
        base_url: String,
        sandbox_token: Option<SecretString>,
    ) -> Result<AgoraClientConfig, SettingsError> {
        let auth = match (sandbox_token, self.auth.mode) {
            (Some(token), _) => AuthConfig::Bearer { token },
            (None, AgoraAuthMode::Bearer) => AuthConfig::Bearer {
                token: resolve_secret("agora.token", &self.token, &self.token_file)?
                    .unwrap_or_else(|| SecretString::from(String::new())),
            },
            (None, AgoraAuthMode::Command) => AuthConfig::Command {
                argv: self.auth.command.clone(),
                timeout: Duration::from_millis(self.auth.command_timeout_ms),
            },
            (None, AgoraAuthMode::Signed) => AuthConfig::Signed(SigningConfig {
                signing_key: resolve_secret(
                    "agora.auth.signing_key",
                    &self.auth.signing_key,
                    &self.auth.signing_key_file,
                )?
                .ok_or_else(|| invalid("agora.auth.signing_key_file", "is required"))?,
                certificate_file: self
                    .auth
                    .certificate_file
                    .clone()
                    .ok_or_else(|| invalid("agora.auth.certificate_file", "is required"))?,
                algorithm: match self.auth.algorithm {
                    SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
                    SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
                },
                issuer: self.auth.issuer.clone(),
                subject: self.auth.subject.clone(),
                audience: self.auth.audience.clone(),
                lifetime: Duration::from_secs(self.auth.lifetime_s),
                reuse: Duration::from_secs(self.auth.reuse_s),
            }),
        };
        let client_identity = match &self.tls_client_cert_file {
            None => None,
            Some(certificate_file) => Some(ClientIdentity {
                certificate_file: certificate_file.clone(),
                key: resolve_secret(
                    "agora.tls_client_key",
                    &self.tls_client_key,
                    &self.tls_client_key_file,
                )?
                .ok_or_else(|| invalid("agora.tls_client_key_file", "is required"))?,
            }),
        };
        let mut config = AgoraClientConfig::new(base_url, SecretString::from(String::new()));
        config.auth = auth;
        config.placement = Placement {
            header: self.auth.header.clone(),
            scheme: self.auth.scheme.clone(),
        };
        config.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.ca_file = self.tls_ca_file.clone();
        config.client_identity = client_identity;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
