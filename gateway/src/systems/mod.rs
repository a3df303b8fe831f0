//! The systems that post to passerelle, one module each (*systèmes émetteurs*): its settings
//! section as a documented struct, its inbound routes built from it, the secrets it adds to the
//! bearer token every posting system has (`auth.tokens.<system>`). The registry is closed:
//! [`POSTING`] lists them, and the listener, the credentials, the settings' checks and the
//! client-certificate names iterate over it (`docs/adding-a-system.md`).
//!
//! Pôle emploi is polled, not posting: its client and poller are [`crate::clients::pole_emploi`]
//! and [`crate::pollers`]; AGORA, the destination, is [`crate::clients::agora`].

pub mod atexo_sem;
pub mod health;
pub mod ouiform;

use std::path::PathBuf;

use passerelle_adapters::canonical::System;
use secrecy::SecretString;

use crate::routes::{AppState, Routes};
use crate::settings::Settings;

/// A secret of a system's settings section, given inline or as `<key>_file`; generated into
/// `data.dir/credentials` on first start when neither is given.
#[derive(Debug, Clone, Copy)]
pub struct SecretSetting<'a> {
    /// Its full key (`ouiform.hmac_secret`), which the credentials file uses too.
    pub key: &'static str,
    pub inline: &'a Option<SecretString>,
    pub file: &'a Option<PathBuf>,
}

/// A system that posts to passerelle's inbound routes.
pub trait PostingSystem: Send + Sync + 'static {
    /// Which system this is: its bearer token is `auth.tokens.<system>`, its rate limit its own.
    fn system(&self) -> System;

    /// Its inbound routes, on the main listener.
    fn routes(&self, routes: &mut Routes<'_>);

    /// The secrets of its settings section besides its bearer token.
    fn secrets<'a>(&self, settings: &'a Settings) -> Vec<SecretSetting<'a>>;

    /// Its part of the OpenAPI document: its routes' operations, their bodies, its security
    /// schemes (merged into [`crate::routes::openapi`]'s).
    fn openapi(&self) -> utoipa::openapi::OpenApi;

    /// Its part of `/readyz`, reported and never gating: its posts since this replica started
    /// ([`health::Posts`]), and whatever else it adds.
    fn health(&self, state: &AppState) -> serde_json::Value {
        state.posts.report(self.system())
    }

    /// The components of its part whose schema is a file of `passerelle-schemas`, by name: the
    /// file's text replaces the placeholder.
    fn schema_files(&self) -> Vec<(&'static str, passerelle_schemas::SchemaId)> {
        Vec::new()
    }
}

/// Every posting system.
pub static POSTING: [&dyn PostingSystem; 2] = [&atexo_sem::AtexoSem, &ouiform::Ouiform];

/// The posting system behind `system`, if it posts.
pub fn posting(system: System) -> Option<&'static dyn PostingSystem> {
    POSTING.iter().copied().find(|p| p.system() == system)
}

/// Every posting system's routes.
pub fn routes(routes: &mut Routes<'_>) {
    for system in POSTING {
        system.routes(routes);
    }
}

/// Every posting system's part of `/readyz`, by its snake_case name (`atexo_sem`).
pub fn health(state: &AppState) -> serde_json::Map<String, serde_json::Value> {
    POSTING
        .iter()
        .map(|p| (p.system().as_str().replace('-', "_"), p.health(state)))
        .collect()
}

/// Every posting system's secrets besides the bearer tokens.
pub fn secrets(settings: &Settings) -> Vec<SecretSetting<'_>> {
    POSTING.iter().flat_map(|p| p.secrets(settings)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_posting_system_is_registered_once_and_is_a_source() {
        for p in POSTING {
            let n = POSTING.iter().filter(|q| q.system() == p.system()).count();
            assert_eq!(n, 1, "{} twice", p.system());
            assert!(
                passerelle_adapters::sources::source(p.system()).is_some(),
                "{} posts but has no adapter",
                p.system()
            );
            assert_eq!(posting(p.system()).map(|q| q.system()), Some(p.system()));
        }
        assert!(posting(System::Agora).is_none());
    }
}
