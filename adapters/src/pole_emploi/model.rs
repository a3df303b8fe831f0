//! The Pôle emploi partner API's bodies as Pôle emploi spells them (contract §2.3): a session's
//! registrations (*inscriptions*), the OAuth2 token answer, the error body.
//!
//! The schemas under `schemas/json/pole_emploi/` are the gate; these structs only read, and ignore
//! the fields Pôle emploi may add (a partner API we poll grows without asking us).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// One registration of a job seeker to the session (*inscription*: AIS, and AES once received).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inscription {
    pub id_inscription: String,
    /// `ICR`, `ICA`, `ICN` or `PFR` (*code statut inscription*).
    pub code_statut_inscription: String,
    #[serde(
        default,
        rename = "idNationalDE",
        skip_serializing_if = "Option::is_none"
    )]
    pub id_national_de: Option<String>,
    #[serde(
        default,
        rename = "idRegionalDE",
        skip_serializing_if = "Option::is_none"
    )]
    pub id_regional_de: Option<String>,
    #[serde(default, rename = "codeGeoDE", skip_serializing_if = "Option::is_none")]
    pub code_geo_de: Option<String>,
    /// The NIR Pôle emploi certified, 13 characters without the key (*NIR certifié*).
    pub nir_certifie: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_projet_action: Option<String>,
    /// Whether the entry certificate was received (*AES reçue*).
    pub aes_recue: bool,
    /// Entry date (*date d'entrée*); `null` until known, and written as `null` as the API does.
    #[serde(default)]
    pub date_entree: Option<NaiveDate>,
    #[serde(default)]
    pub liste_module_formation: Option<Vec<Module>>,
}

/// Personal data: the NIR is masked.
impl std::fmt::Debug for Inscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inscription")
            .field("id_inscription", &self.id_inscription)
            .field("code_statut_inscription", &self.code_statut_inscription)
            .field("id_national_de", &self.id_national_de)
            .field("id_regional_de", &self.id_regional_de)
            .field("code_geo_de", &self.code_geo_de)
            .field(
                "nir_certifie",
                &crate::canonical::mask_nir(&self.nir_certifie),
            )
            .field("id_projet_action", &self.id_projet_action)
            .field("aes_recue", &self.aes_recue)
            .field("date_entree", &self.date_entree)
            .field("liste_module_formation", &self.liste_module_formation)
            .finish()
    }
}

/// A training module of the registration (*module de formation*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub date_debut: NaiveDate,
    pub date_fin: NaiveDate,
}

/// The OAuth2 client-credentials answer (*jeton d'accès*).
///
/// The access token is a secret: `Debug` masks it, and the type is not `Serialize`, so it cannot
/// end up in a log line or a stored message by accident. Read it with [`Token::access_token`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Token {
    access_token: String,
    /// Token type, `Bearer` in practice.
    pub token_type: String,
    /// Lifetime in seconds from the answer.
    pub expires_in: u64,
}

impl Token {
    pub fn new(
        access_token: impl Into<String>,
        token_type: impl Into<String>,
        expires_in: u64,
    ) -> Self {
        Self {
            access_token: access_token.into(),
            token_type: token_type.into(),
            expires_in,
        }
    }

    /// The secret itself, for the one place that needs it: the `Authorization` header.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"***")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The API's error body (*corps d'erreur*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Pôle emploi's own error code.
    pub code_erreur: String,
    /// The HTTP status the API answered with.
    pub code_http: u16,
    pub message: String,
}
