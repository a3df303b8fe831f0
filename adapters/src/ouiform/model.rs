//! OUIFORM's orientation (*orientation*) as OUIFORM spells it (contract §2.2).
//!
//! The schema `ouiform/orientation.schema.json` is the gate (types, patterns, unknown fields); these
//! structs only read. They tolerate unknown fields on purpose: when the schema already refused a
//! payload, the adapter still reads what it can so the domain rules can add their violations to the
//! same answer (every violation at once, contract §1). A test decodes every valid fixture through
//! both, so the two cannot drift apart silently.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

/// One orientation, the body of `POST /v1/inbound/ouiform/orientations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Orientation {
    pub id_orientation: String,
    pub date_orientation: DateTime<FixedOffset>,
    pub statut: Statut,
    pub prescripteur: Prescripteur,
    pub beneficiaire: Beneficiaire,
    pub offre: Offre,
    /// LHEO funder code as a string of digits (*code financeur*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub financeur: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispositif: Option<String>,
    /// Why the orientation was refused (*motif de refus*); required when `statut` is `REFUSEE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motif_refus: Option<String>,
    /// Entry date (*date d'entrée*); required when `statut` is `ENTREE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_entree: Option<NaiveDate>,
}

/// The orientation's status (*statut*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Statut {
    Proposee,
    Acceptee,
    Refusee,
    Entree,
    Annulee,
}

/// Who prescribed (*prescripteur*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prescripteur {
    /// `POLE_EMPLOI`, `MISSION_LOCALE`, `CAP_EMPLOI`, `REGION` or `AUTRE`; the schema's enum has
    /// already checked it, and the canonical [`crate::canonical::PrescriberKind`] parses it.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siret_structure: Option<String>,
}

/// The job seeker oriented (*bénéficiaire*). Field names are OUIFORM's, `DE` for *demandeur
/// d'emploi*.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Beneficiaire {
    pub nir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nom_naissance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prenom: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_naissance: Option<NaiveDate>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_postal: Option<String>,
}

/// Personal data: `Debug` shows each personal field as every view masks it, never its value.
impl std::fmt::Debug for Beneficiaire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::canonical::Identifier;
        let masked =
            |v: &Option<String>, identifier: Identifier| v.as_deref().map(|v| identifier.mask(v));
        f.debug_struct("Beneficiaire")
            .field("nir", &Identifier::Nir.mask(&self.nir))
            .field(
                "nom_naissance",
                &masked(&self.nom_naissance, Identifier::Name),
            )
            .field("prenom", &masked(&self.prenom, Identifier::Name))
            .field(
                "date_naissance",
                &self
                    .date_naissance
                    .map(|d| Identifier::BirthDate.mask(&d.to_string())),
            )
            .field(
                "id_national_de",
                &masked(&self.id_national_de, Identifier::PoleEmploiId),
            )
            .field(
                "id_regional_de",
                &masked(&self.id_regional_de, Identifier::PoleEmploiId),
            )
            .field("code_geo_de", &self.code_geo_de)
            .field("code_postal", &self.code_postal)
            .finish()
    }
}

/// The training offer (*offre*), by its Intercarif numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offre {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_formation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_action: Option<String>,
    pub numero_session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siret_organisme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intitule: Option<String>,
}
