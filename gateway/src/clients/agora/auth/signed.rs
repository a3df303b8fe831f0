//! `agora.auth.mode = "signed"`: passerelle signs its own short-lived token, a JWS (`RS256` or
//! `ES256`, `agora.auth.algorithm`) with the partner's private key, the partner's certificate chain
//! in the `x5c` header (base64 DER, leaf first, as the PEM file lists it). Claims: `iss`, `sub`,
//! `aud` (`agora.auth.issuer`, `subject`, `audience`), `iat`, `exp` = `iat` + `lifetime_s`, and a
//! random `jti`.
//!
//! With `agora.auth.reuse_s = 0` every call carries a new token; otherwise a token serves for
//! `reuse_s` seconds (never past [`super::renew_after`] its lifetime), the cache behind a `tokio`
//! mutex like the command's.
//!
//! The key is checked against the chain's first certificate at start-up (a test token signed and
//! verified), so a key and certificate that do not belong together stop the start rather than
//! every call.

use super::{
    pem_certificates, read_setting_file, renew_after, AuthError, AuthStatus, Authenticator, Cached,
    Credential, ExpiryCell, Placement,
};
use crate::clients::ClientBuildError;
use async_trait::async_trait;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::HeaderName;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What `signed` needs, as the settings give it.
#[derive(Clone)]
pub struct SigningConfig {
    /// The private key, PEM (PKCS#8 `PRIVATE KEY`; for RS256 also PKCS#1 `RSA PRIVATE KEY`).
    pub signing_key: SecretString,
    /// `agora.auth.certificate_file`: the certificate chain, PEM, leaf first.
    pub certificate_file: PathBuf,
    /// `RS256` or `ES256`.
    pub algorithm: Algorithm,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub lifetime: Duration,
    /// Zero: a new token every call.
    pub reuse: Duration,
}

impl fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signing_key", &"[redacted]")
            .field("certificate_file", &self.certificate_file)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("reuse", &self.reuse)
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

/// See the module's documentation.
pub struct SignedToken {
    key: EncodingKey,
    header: Header,
    issuer: String,
    subject: String,
    audience: String,
    lifetime: Duration,
    reuse: Duration,
    name: HeaderName,
    placement: Placement,
    cache: Mutex<Option<Cached>>,
    serial: AtomicU64,
    expires: ExpiryCell,
}

impl fmt::Debug for SignedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedToken")
            .field("algorithm", &self.header.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn auth_error(setting: &'static str, problem: impl Into<String>) -> ClientBuildError {
    ClientBuildError::Auth {
        setting,
        problem: problem.into(),
    }
}

impl SignedToken {
    pub fn new(config: &SigningConfig, placement: &Placement) -> Result<Self, ClientBuildError> {
        let pem = config.signing_key.expose_secret().as_bytes();
        let key = match config.algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem).map_err(|_| {
                auth_error(
                    "agora.auth.signing_key",
                    "not a PEM PKCS#8 EC private key (`BEGIN PRIVATE KEY`), as ES256 needs",
                )
            })?,
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).map_err(|_| {
                auth_error(
                    "agora.auth.signing_key",
                    "not a PEM RSA private key (PKCS#8 or PKCS#1), as RS256 needs",
                )
            })?,
            _ => return Err(auth_error("agora.auth.algorithm", "must be RS256 or ES256")),
        };
        let chain = pem_certificates("agora.auth.certificate_file", &config.certificate_file)?;
        let x5c = chain
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect();
        let mut header = Header::new(config.algorithm);
        header.x5c = Some(x5c);
        for (setting, value) in [
            ("agora.auth.issuer", &config.issuer),
            ("agora.auth.subject", &config.subject),
            ("agora.auth.audience", &config.audience),
        ] {
            if value.trim().is_empty() {
                return Err(auth_error(
                    setting,
                    "is required when agora.auth.mode = \"signed\"",
                ));
            }
        }
        if config.lifetime.is_zero() {
            return Err(auth_error("agora.auth.lifetime_s", "must be at least 1"));
        }
        let signer = SignedToken {
            key,
            header,
            issuer: config.issuer.clone(),
            subject: config.subject.clone(),
            audience: config.audience.clone(),
            lifetime: config.lifetime,
            reuse: config.reuse,
            name: placement.header_name()?,
            placement: placement.clone(),
            cache: Mutex::new(None),
            serial: AtomicU64::new(0),
            expires: ExpiryCell::default(),
        };
        signer.check_against(&config.certificate_file)?;
        Ok(signer)
    }

    /// Signs a token and verifies it with the chain's first certificate.
    fn check_against(&self, certificate_file: &Path) -> Result<(), ClientBuildError> {
        let (token, _) = self
            .sign()
            .map_err(|e| auth_error("agora.auth.signing_key", e.to_string()))?;
        let pem = read_setting_file("agora.auth.certificate_file", certificate_file)?;
        let decoding = match self.header.alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|_| {
            auth_error(
                "agora.auth.certificate_file",
                "its first certificate's key is not of the kind agora.auth.algorithm names",
            )
        })?;
        let mut validation = Validation::new(self.header.alg);
        validation.set_audience(&[&self.audience]);
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).map_err(
            |_| {
                auth_error(
                    "agora.auth.signing_key",
                    "does not match the first certificate of agora.auth.certificate_file",
                )
            },
        )?;
        Ok(())
    }

    /// A new token and its expiry.
    fn sign(&self) -> Result<(String, chrono::DateTime<chrono::Utc>), AuthError> {
        let now = chrono::Utc::now();
        let lifetime = chrono::Duration::from_std(self.lifetime)
            .map_err(|_| AuthError::Signing("lifetime out of range".to_string()))?;
        let expires = now + lifetime;
        let claims = Claims {
            iss: &self.issuer,
            sub: &self.subject,
            aud: &self.audience,
            iat: now.timestamp(),
            exp: expires.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        Ok((token, expires))
    }

    fn credential_of(&self, token: &str) -> Result<Credential, AuthError> {
        Ok(Credential {
            name: self.name.clone(),
            value: self.placement.value(token).ok_or_else(|| {
                AuthError::Signing("the token is not a valid header value".to_string())
            })?,
            serial: self.serial.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

#[async_trait]
impl Authenticator for SignedToken {
    async fn credential(&self) -> Result<Credential, AuthError> {
        if self.reuse.is_zero() {
            let (token, expires) = self.sign()?;
            self.expires.set(Some(expires));
            return self.credential_of(&token);
        }
        let mut cache = self.cache.lock().await;
        if let Some(held) = cache.as_ref().filter(|c| c.fresh(Instant::now())) {
            return Ok(held.credential.clone());
        }
        let (token, expires) = self.sign()?;
        let credential = self.credential_of(&token)?;
        self.expires.set(Some(expires));
        *cache = Some(Cached {
            credential: credential.clone(),
            renew_at: Some(Instant::now() + self.reuse.min(renew_after(self.lifetime))),
        });
        Ok(credential)
    }

    /// A new token may pass where a reused one did not (AGORA may refuse a token it saw before);
    /// with a new token every call, the `401` stands.
    async fn refused(&self, used: &Credential) -> bool {
        if self.reuse.is_zero() {
            return false;
        }
        let mut cache = self.cache.lock().await;
        if cache
            .as_ref()
            .is_some_and(|c| c.credential.serial == used.serial)
        {
            *cache = None;
        }
        true
    }

    fn status(&self) -> AuthStatus {
        AuthStatus {
            mode: "signed",
            expires_at: self.expires.get(),
        }
    }
}
