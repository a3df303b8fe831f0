//! TLS on the listeners (`server.tls_*`, contract §1): the rustls server configuration, and the
//! mapping of a verified client certificate to the system it stands for (mutual TLS).
//!
//! Client certificates are optional: a partner without one still authenticates with its bearer
//! token. One it presents must chain to `server.tls_client_ca_file` (rustls refuses the handshake
//! otherwise); it then stands for the system whose `server.tls_client_names` its subjectAltName
//! matches (checked by webpki, the same code that checks a server's name), and for nobody when
//! none does. The mapping is computed once per connection, at the handshake, and kept in the
//! connection's data for [`crate::routes::authenticate`].

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::Extensions;
use passerelle_adapters::canonical::System;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::routes::CertifiedSystem;
use crate::settings::{posting_system, ServerSettings, SettingsError};

fn invalid(key: &str, problem: String) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_string(),
        problem,
    }
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// Which system each name of `server.tls_client_names` stands for.
#[derive(Debug, Clone, Default)]
pub struct ClientNames(Vec<(ServerName<'static>, System)>);

impl ClientNames {
    pub fn from_settings(server: &ServerSettings) -> Result<Self, SettingsError> {
        let mut names = Vec::new();
        for (system, list) in &server.tls_client_names {
            let key = format!("server.tls_client_names.{system}");
            let system = posting_system(system)
                .ok_or_else(|| invalid(&key, "is not a system that posts to passerelle".into()))?;
            for name in list {
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| invalid(&key, format!("{name:?} is not a DNS name")))?;
                names.push((name, system));
            }
        }
        Ok(Self(names))
    }

    /// The system an end-entity certificate (already verified against the CAs) stands for: the
    /// first whose name it is valid for.
    pub fn system_of(&self, cert: &CertificateDer<'_>) -> Option<System> {
        let cert = webpki::EndEntityCert::try_from(cert).ok()?;
        self.0
            .iter()
            .find(|(name, _)| cert.verify_is_valid_for_subject_name(name).is_ok())
            .map(|(_, system)| *system)
    }
}

/// The listeners' rustls configuration, when `server.tls_cert_file` is set. Errors name the key.
pub fn server_config(
    server: &ServerSettings,
) -> Result<Option<rustls::ServerConfig>, SettingsError> {
    let (Some(cert_file), Some(key_file)) = (&server.tls_cert_file, &server.tls_key_file) else {
        return Ok(None);
    };
    let chain = certificates("server.tls_cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        invalid(
            "server.tls_key_file",
            format!("{}: no usable PEM private key ({e})", key_file.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("server.tls_cert_file", e.to_string()))?;
    let builder = match &server.tls_client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates("server.tls_client_ca_file", ca_file)? {
                roots.add(ca).map_err(|e| {
                    invalid(
                        "server.tls_client_ca_file",
                        format!("{}: {e}", ca_file.display()),
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            // A partner may keep using its bearer token alone.
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid("server.tls_client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        invalid(
            "server.tls_key_file",
            format!("does not fit the certificate: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// `HttpServer::on_connect`: on a TLS connection whose client presented a (verified)
/// certificate mapped to a system, records that system in the connection's data.
pub fn on_connect(names: &ClientNames, connection: &dyn Any, data: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(stream) = connection.downcast_ref::<Tls>() else {
        return;
    };
    let (_, session) = stream.get_ref();
    let leaf = session.peer_certificates().and_then(|certs| certs.first());
    if let Some(system) = leaf.and_then(|cert| names.system_of(cert)) {
        data.insert(CertifiedSystem(system));
    }
}
