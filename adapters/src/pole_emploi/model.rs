//! The Pôle emploi partner API's bodies as Pôle emploi spells them (contract §2.3): a session's
//! registrations (*inscriptions*), the OAuth2 token answer, the error body.
//!
//! The schemas under `schemas/json/pole_emploi/` are the gate; these structs only read, and ignore
//! the fields Pôle emploi may add (a partner API we poll grows without asking us).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// One registration of a job seeker to the session (*inscription*: AIS, and AES once received).
///
/// France Travail documents `idInscription` as an integer of up to 10 digits, `codeGeoDE` as
/// 3 digits, `idProjetAction` as 12 characters and the module dates as `YYYY-MM-DD hh:mm:ss`; in
/// practice ids also come as strings and dates without their time. Both forms are read (see
/// [`lenient`]) and normalised, so that the same registration compares equal whichever form it
/// came in; the schema has already checked each form's range.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inscription {
    /// Normalised to its decimal digits, without leading zeros (`"0042"` and `42` are one id).
    /// Written as a JSON integer, as the API does.
    #[serde(
        deserialize_with = "lenient::id_inscription",
        serialize_with = "lenient::as_integer"
    )]
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
    /// 3 digits; an integer is zero-padded (`44` → `"044"`).
    #[serde(
        default,
        rename = "codeGeoDE",
        deserialize_with = "lenient::code_geo",
        skip_serializing_if = "Option::is_none"
    )]
    pub code_geo_de: Option<String>,
    /// The NIR Pôle emploi certified, 13 characters without the key (*NIR certifié*).
    pub nir_certifie: String,
    /// 12 characters; an integer is zero-padded to 12 digits.
    #[serde(
        default,
        deserialize_with = "lenient::project_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id_projet_action: Option<String>,
    /// Whether the entry certificate was received (*AES reçue*).
    pub aes_recue: bool,
    /// Entry date (*date d'entrée*); `null` until known, and written as `null` as the API does.
    /// `YYYY-MM-DD`, or with a time of day, which is dropped.
    #[serde(default, deserialize_with = "lenient::optional_date")]
    pub date_entree: Option<NaiveDate>,
    #[serde(default)]
    pub liste_module_formation: Option<Vec<Module>>,
}

/// Personal data: the NIR and the job seeker's ids are shown as every view masks them.
impl std::fmt::Debug for Inscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::canonical::Identifier;
        let id = |v: &Option<String>| v.as_deref().map(|v| Identifier::PoleEmploiId.mask(v));
        f.debug_struct("Inscription")
            .field("id_inscription", &self.id_inscription)
            .field("code_statut_inscription", &self.code_statut_inscription)
            .field("id_national_de", &id(&self.id_national_de))
            .field("id_regional_de", &id(&self.id_regional_de))
            .field("code_geo_de", &self.code_geo_de)
            .field("nir_certifie", &Identifier::Nir.mask(&self.nir_certifie))
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
    /// Planned start (*date de début*), `YYYY-MM-DD hh:mm:ss` as documented, or `YYYY-MM-DD`.
    #[serde(
        deserialize_with = "lenient::date",
        serialize_with = "lenient::as_plan_date"
    )]
    pub date_debut: NaiveDate,
    #[serde(
        deserialize_with = "lenient::date",
        serialize_with = "lenient::as_plan_date"
    )]
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

/// The documented forms and the forms seen in practice, read into one normalised value.
pub mod lenient {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer};

    /// A JSON value that is a string or an integer.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrInt {
        Int(u64),
        Str(String),
    }

    /// Digits without leading zeros (`"0"` stays `"0"`); anything else as it is.
    pub fn normalise_digits(s: &str) -> String {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let trimmed = s.trim_start_matches('0');
            if trimmed.is_empty() {
                "0".to_string()
            } else {
                trimmed.to_string()
            }
        } else {
            s.to_string()
        }
    }

    pub fn id_inscription<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match StrOrInt::deserialize(d)? {
            StrOrInt::Int(n) => n.to_string(),
            StrOrInt::Str(s) => normalise_digits(&s),
        })
    }

    fn padded<'de, D: Deserializer<'de>>(d: D, width: usize) -> Result<Option<String>, D::Error> {
        Ok(match Option::<StrOrInt>::deserialize(d)? {
            None => None,
            Some(StrOrInt::Int(n)) => Some(format!("{n:0width$}")),
            Some(StrOrInt::Str(s)) => Some(s),
        })
    }

    pub fn code_geo<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        padded(d, 3)
    }

    pub fn project_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        padded(d, 12)
    }

    /// `YYYY-MM-DD`, optionally followed by a time of day (` hh:mm:ss` or `Thh:mm:ss`).
    pub fn parse_date(s: &str) -> Option<NaiveDate> {
        let day = s.get(..10)?;
        let rest = &s[10..];
        let time_ok = rest.is_empty()
            || ((rest.starts_with(' ') || rest.starts_with('T'))
                && chrono::NaiveTime::parse_from_str(&rest[1..], "%H:%M:%S%.f").is_ok());
        if !time_ok || day.len() != 10 {
            return None;
        }
        NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
    }

    pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        let s = String::deserialize(d)?;
        parse_date(&s).ok_or_else(|| serde::de::Error::custom("not a date"))
    }

    pub fn optional_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_date(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not a date")),
        }
    }

    /// An id of up to 10 digits as the integer the API writes; any other id as a string.
    pub fn as_integer<S: Serializer>(id: &str, s: S) -> Result<S::Ok, S::Error> {
        match id.parse::<u64>() {
            Ok(n) if id.len() <= 10 && id.bytes().all(|b| b.is_ascii_digit()) => s.serialize_u64(n),
            _ => s.serialize_str(id),
        }
    }

    /// A plan date as documented: `YYYY-MM-DD 00:00:00`.
    pub fn as_plan_date<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{} 00:00:00", date.format("%Y-%m-%d")))
    }
}
