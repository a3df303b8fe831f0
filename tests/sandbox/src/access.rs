//! How the AGORA simulator decides who may call ([`AgoraAuth`]), and its TLS listener
//! ([`SandboxTls`]): the access controls of the INTEROPS-A relay, rehearsed.
//!
//! - [`AgoraAuth::Bearer`]: `Authorization: Bearer {AgoraConfig::token}`, the sandbox's default;
//! - [`AgoraAuth::Issued`]: any of a set of tokens, as a token suite would issue them (the token
//!   command of a test prints one of them); one can be revoked on demand
//!   ([`crate::RunningSandbox::revoke_agora_token`]) so that the next call with it gets a `401`;
//! - [`AgoraAuth::Signed`]: a JWS, `RS256` or `ES256`, whose `x5c` chain starts with the trusted
//!   certificate and whose signature that certificate's key verifies, with the expected `aud`, an
//!   `exp` not past, and `iss`, `sub`, `iat`, `jti` present. An unsigned token (`alg: none`), an
//!   expired one, a wrong audience or another key: `401`.
//!
//! With [`SandboxTls`], the sandbox serves HTTPS, and, when `client_ca_pem` is given, completes no
//! handshake without a client certificate signed by that CA.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashSet;
use std::sync::Arc;

/// How AGORA checks the caller. See the module's documentation.
#[derive(Debug, Clone, Default)]
pub enum AgoraAuth {
    #[default]
    Bearer,
    Issued {
        tokens: Vec<String>,
    },
    Signed {
        /// The partner's certificate (PEM) whose key signs the tokens.
        certificate_pem: String,
        /// The `aud` expected.
        audience: String,
    },
}

/// Why a signed token was refused (all are `401`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignedRefusal {
    #[error("no token, or not a JWS with a supported algorithm (RS256, ES256)")]
    Malformed,
    #[error("the x5c header is missing or does not start with the trusted certificate")]
    UnknownCertificate,
    #[error("expired")]
    Expired,
    #[error("wrong audience")]
    WrongAudience,
    #[error("the signature does not verify, or a claim is missing")]
    Invalid,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read for their presence only
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// Checks a signed token as [`AgoraAuth::Signed`] does.
pub fn verify_signed(
    token: &str,
    certificate_pem: &str,
    audience: &str,
) -> Result<(), SignedRefusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| SignedRefusal::Malformed)?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(SignedRefusal::Malformed);
    }
    let trusted = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|_| SignedRefusal::UnknownCertificate)?;
    let first = header
        .x5c
        .as_ref()
        .and_then(|chain| chain.first())
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .ok_or(SignedRefusal::UnknownCertificate)?;
    if first != trusted.as_ref() {
        return Err(SignedRefusal::UnknownCertificate);
    }
    let key = match header.alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(certificate_pem.as_bytes()),
        _ => DecodingKey::from_ec_pem(certificate_pem.as_bytes()),
    }
    .map_err(|_| SignedRefusal::UnknownCertificate)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = 5;
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => SignedRefusal::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidAudience => SignedRefusal::WrongAudience,
            _ => SignedRefusal::Invalid,
        }),
    }
}

impl AgoraAuth {
    /// Whether a call bearing `token` (`Authorization: Bearer …`) may pass.
    pub(crate) fn admits(
        &self,
        bearer: &str,
        revoked: &HashSet<String>,
        token: Option<&str>,
    ) -> bool {
        let Some(token) = token.filter(|t| !revoked.contains(*t)) else {
            return false;
        };
        match self {
            AgoraAuth::Bearer => token == bearer,
            AgoraAuth::Issued { tokens } => tokens.iter().any(|t| t == token),
            AgoraAuth::Signed {
                certificate_pem,
                audience,
            } => match verify_signed(token, certificate_pem, audience) {
                Ok(()) => true,
                Err(why) => {
                    tracing::info!(why = %why, "the sandbox refused a signed token");
                    false
                }
            },
        }
    }
}

/// The sandbox's TLS listener.
#[derive(Clone)]
pub struct SandboxTls {
    /// The server's certificate (then its chain), PEM.
    pub certificate_pem: String,
    /// The server's private key, PEM.
    pub key_pem: String,
    /// When given: mutual TLS, a client certificate signed by this CA (PEM) is required.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for SandboxTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

impl SandboxTls {
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let err = |what: &str| {
            let what = what.to_string();
            move |e: &dyn std::fmt::Display| TlsError(format!("{what}: {e}"))
        };
        let certs = CertificateDer::pem_slice_iter(self.certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("the server certificate")(&e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| err("the server key")(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("protocol versions")(&e))?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| err("the client CA")(&e))?;
                    roots.add(cert).map_err(|e| err("the client CA")(&e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| err("the client verifier")(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder
            .with_single_cert(certs, key)
            .map_err(|e| err("the server certificate")(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::TestPki;

    fn token(pki: &TestPki, aud: &str, exp_in: i64, x5c: Option<Vec<String>>) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.x5c = x5c.or_else(|| {
            let der = CertificateDer::from_pem_slice(pki.signer.certificate_pem.as_bytes())
                .expect("certificate");
            Some(vec![base64::engine::general_purpose::STANDARD.encode(der)])
        });
        let claims = serde_json::json!({
            "iss": "passerelle", "sub": "region", "aud": aud,
            "iat": now, "exp": now + exp_in, "jti": "1",
        });
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(pki.signer.key_pem.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, &claims, &key).expect("signs")
    }

    #[test]
    fn a_signed_token_is_checked_against_the_certificate() {
        let pki = TestPki::generate().expect("pki");
        let cert = &pki.signer.certificate_pem;
        assert_eq!(
            verify_signed(&token(&pki, "agora", 300, None), cert, "agora"),
            Ok(())
        );
        assert_eq!(
            verify_signed(&token(&pki, "agora", -120, None), cert, "agora"),
            Err(SignedRefusal::Expired)
        );
        assert_eq!(
            verify_signed(&token(&pki, "elsewhere", 300, None), cert, "agora"),
            Err(SignedRefusal::WrongAudience)
        );
        assert_eq!(
            verify_signed(&token(&pki, "agora", 300, Some(vec![])), cert, "agora"),
            Err(SignedRefusal::UnknownCertificate)
        );
        // Another partner's key, presenting the trusted certificate: the signature fails.
        let other = TestPki::generate().expect("pki");
        let mut forged = token(&other, "agora", 300, None);
        let good = token(&pki, "agora", 300, None);
        let header = good.split('.').next().expect("header");
        let rest = forged.split_once('.').expect("parts").1.to_string();
        forged = format!("{header}.{rest}");
        assert_eq!(
            verify_signed(&forged, cert, "agora"),
            Err(SignedRefusal::Invalid)
        );
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let pki = TestPki::generate().expect("pki");
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let now = chrono::Utc::now().timestamp();
        let unsigned = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(serde_json::json!({
                "iss": "passerelle", "sub": "region", "aud": "agora",
                "iat": now, "exp": now + 300, "jti": "1"
            }))
        );
        assert_eq!(
            verify_signed(&unsigned, &pki.signer.certificate_pem, "agora"),
            Err(SignedRefusal::Malformed)
        );
        assert_eq!(
            verify_signed("", &pki.signer.certificate_pem, "agora"),
            Err(SignedRefusal::Malformed)
        );
    }

    #[test]
    fn issued_tokens_pass_until_revoked() {
        let auth = AgoraAuth::Issued {
            tokens: vec!["tok-1".into(), "tok-2".into()],
        };
        let mut revoked = HashSet::new();
        assert!(auth.admits("", &revoked, Some("tok-1")));
        assert!(!auth.admits("", &revoked, Some("tok-3")));
        assert!(!auth.admits("", &revoked, None));
        revoked.insert("tok-1".to_string());
        assert!(!auth.admits("", &revoked, Some("tok-1")));
        assert!(auth.admits("", &revoked, Some("tok-2")));
    }
}
