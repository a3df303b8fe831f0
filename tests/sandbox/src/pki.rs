//! A throw-away PKI for rehearsing AGORA's access controls, made at run time (no private key is
//! committed): a test CA, the relay's server certificate (for `127.0.0.1` and `localhost`) and a
//! partner's client certificate, both signed by it, and a partner's signing key with its
//! certificate (ES256) for `signed` tokens.
//!
//! [`TestPki::write_to`] writes them as the PEM files passerelle's settings name
//! (`agora.tls_ca_file`, `agora.tls_client_cert_file`, `agora.tls_client_key_file`,
//! `agora.auth.signing_key_file`, `agora.auth.certificate_file`).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Why the PKI could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// See the module's documentation.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA's certificate, PEM: the relay's and the partner's certificates chain to it.
    pub ca_pem: String,
    /// The relay's certificate and key (`127.0.0.1`, `localhost`).
    pub server: CertifiedKey,
    /// The partner's client certificate and key (mutual TLS).
    pub client: CertifiedKey,
    /// The partner's signing key (PKCS#8, P-256) and its certificate, for ES256 tokens.
    pub signer: CertifiedKey,
}

/// The files [`TestPki::write_to`] wrote.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub signing_key: PathBuf,
    pub signing_cert: PathBuf,
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "passerelle sandbox");
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf(
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<CertifiedKey, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = named(cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertifiedKey {
        certificate_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl TestPki {
    /// A new CA and the certificates signed by it (ECDSA P-256, valid from now on for years).
    pub fn generate() -> Result<TestPki, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = named("passerelle sandbox test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        Ok(TestPki {
            ca_pem: ca_cert.pem(),
            server: leaf(
                "AGORA relay (sandbox)",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
                &issuer,
            )?,
            client: leaf(
                "passerelle (partner)",
                vec!["passerelle.partner.invalid".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            )?,
            signer: leaf(
                "passerelle token signer",
                vec!["passerelle.partner.invalid".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            )?,
        })
    }

    /// Writes the partner's side (and the CA) into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<PkiFiles, PkiError> {
        let write = |name: &str, text: &str| -> Result<PathBuf, PkiError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| PkiError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        Ok(PkiFiles {
            ca: write("ca.pem", &self.ca_pem)?,
            client_cert: write("client.pem", &self.client.certificate_pem)?,
            client_key: write("client-key.pem", &self.client.key_pem)?,
            signing_key: write("signing-key.pem", &self.signer.key_pem)?,
            // The chain, leaf first: the signer's certificate, then the CA's.
            signing_cert: write(
                "signing-chain.pem",
                &format!("{}{}", self.signer.certificate_pem, self.ca_pem),
            )?,
        })
    }
}
