//! AGORA v2's wire types (contract §3), keys exactly as AGORA spells them (French snake_case).
//!
//! These types are what passerelle sends and what the AGORA simulator reads, so both sides share
//! them. Their JSON Schemas under `schemas/json/agora/` are the stricter truth: every decode
//! validates against the schema *before* serde sees the bytes, which is why the structs below do
//! not repeat the schema's patterns and lengths.
//!
//! Personal values (NIR-13, names, birth date) sit in [`Personal`] so that a `{:?}` of a body, in
//! passerelle or in the simulator, never prints them.

use crate::canonical::{CertificationResult, ExitReason, Initiator, Personal, Sex};
use crate::planner::AgoraState;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Serde for the canonical code enums in their ATEXO SEM spelling, which AGORA keeps
/// (`"ABANDON"`, not the canonical `"dropout"`).
macro_rules! external_code {
    ($module:ident, $ty:ty) => {
        pub(crate) mod $module {
            use serde::{Deserialize, Deserializer, Serializer};
            pub fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(v.external())
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                // The message does not quote the value: these codes are not personal, but the
                // rule is simpler to keep everywhere.
                <$ty>::from_external(&s)
                    .ok_or_else(|| serde::de::Error::custom("unknown code for this field"))
            }
        }
    };
}
external_code!(motif_sortie, crate::canonical::ExitReason);
external_code!(
    resultat_certification,
    crate::canonical::CertificationResult
);
external_code!(initiateur, crate::canonical::Initiator);

/// `sexe` is the NIR's sex digit as a string: `"1"` or `"2"`.
pub(crate) mod sexe {
    use crate::canonical::Sex;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Sex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.code())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sex, D::Error> {
        let s = String::deserialize(d)?;
        Sex::from_code(&s).ok_or_else(|| serde::de::Error::custom("sexe must be 1 or 2"))
    }
}

/// The body of `POST /dossiers`.
///
/// Not `deny_unknown_fields`: a [`RepriseLine`] flattens it, and the schema already refuses
/// unknown properties before serde runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DossierBody {
    /// The main funder (*financeur principal*).
    pub financeur: Financeur,
    /// passerelle's `dossier_id`: what a search asks for.
    pub reference: String,
    /// The funding scheme's code (*dispositif*).
    pub dispositif: String,
    pub stagiaire: Stagiaire,
    pub formation: Formation,
    /// Every funder's share; the first is the main funder's.
    pub financements: Vec<Financement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Financeur {
    /// LHEO `dict-financeurs` code, as a string (`"2"`).
    pub code: String,
    /// The funder's SIRET. passerelle's canonical dossier does not carry it, so it never sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stagiaire {
    /// The NIR's first 13 characters: the only place passerelle lets a NIR out.
    pub nir13: Personal<String>,
    pub nom_naissance: Personal<String>,
    pub nom_usage: Personal<String>,
    pub prenoms: Personal<String>,
    #[serde(with = "sexe")]
    pub sexe: Sex,
    pub date_naissance: Personal<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_national_de: Option<String>,
    pub code_postal: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formation {
    pub numero_formation: String,
    pub numero_action: String,
    pub numero_session: String,
    pub intitule: String,
    /// Five digits, without the thesaurus version (see the mapping table).
    pub formacode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certification: Option<String>,
    pub siret_organisme: String,
    pub date_debut: NaiveDate,
    pub date_fin: NaiveDate,
    pub heures_prevues: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Financement {
    pub code_financeur: String,
    pub montant_engage_cents: i64,
}

/// `POST /dossiers/{n}/entree`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntreeBody {
    pub date_entree: NaiveDate,
}

/// `POST /dossiers/{n}/sortie`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortieBody {
    pub date_sortie: NaiveDate,
    #[serde(with = "motif_sortie")]
    pub motif_sortie: ExitReason,
    #[serde(with = "resultat_certification")]
    pub resultat_certification: CertificationResult,
    pub heures_realisees: u32,
}

/// `POST /dossiers/{n}/solde`: the main funder's amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoldeBody {
    pub montant_realise_cents: i64,
    pub montant_solde_cents: i64,
}

/// `POST /dossiers/{n}/annulation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnulationBody {
    pub date_annulation: NaiveDate,
    #[serde(with = "initiateur")]
    pub initiateur: Initiator,
    pub motif: String,
}

/// The body of one transition call; which one is which call (see [`TransitionBody::path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TransitionBody {
    Entree(EntreeBody),
    Sortie(SortieBody),
    Solde(SoldeBody),
    Annulation(AnnulationBody),
}

/// One line of a backfill lot: a whole dossier, its AGORA state and the blocks that state implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepriseLine {
    #[serde(flatten)]
    pub dossier: DossierBody,
    pub etat: AgoraState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entree: Option<EntreeBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sortie: Option<SortieBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solde: Option<SoldeBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annulation: Option<AnnulationBody>,
}

/// One anomaly of an AGORA business rejection (`422 {"anomalies": [...]}`) or backfill report line.
///
/// `libelle` is AGORA's free text and may quote the value it refuses (a name, a NIR): passerelle
/// stores it with the dead letter but never logs it ([`super::Outcome`]'s `Debug` leaves it out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// AGORA's code (`AG-…`).
    pub code: String,
    /// The AGORA field concerned, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champ: Option<String>,
    /// AGORA's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libelle: Option<String>,
}

impl Anomaly {
    /// The anomaly as shown to someone without the personal-data right (the admin token, the
    /// CLI) and in logs: code and field kept, `libelle` replaced with [`crate::canonical::MASK`].
    /// The one masking of AGORA's answers.
    pub fn masked(&self) -> Anomaly {
        Anomaly {
            code: self.code.clone(),
            champ: self.champ.clone(),
            libelle: self
                .libelle
                .as_ref()
                .map(|_| crate::canonical::MASK.to_string()),
        }
    }
}

/// `200 {"numero_agora", "etat"}` of a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchAnswer {
    pub numero_agora: String,
    pub etat: AgoraState,
}

/// `201 {"numero_agora"}` of a creation, or `409 {"numero_agora"}` when it already existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberAnswer {
    pub numero_agora: String,
}

/// `422 {"anomalies": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomaliesAnswer {
    pub anomalies: Vec<Anomaly>,
}

/// `409 {"code": "AG-ETAT"}` of a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeAnswer {
    pub code: String,
}

/// The code of a state conflict.
pub const AG_ETAT: &str = "AG-ETAT";

/// `202 {"lot"}` of `POST /reprises`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotAnswer {
    pub lot: String,
}

/// Progress of a backfill lot (`GET /reprises/{lot}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportState {
    /// Still being processed: poll again.
    EnCours,
    /// Done: `compte_rendu` has every line.
    Termine,
}

/// AGORA's report on a backfill lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepriseReport {
    pub etat: ReportState,
    pub lignes: u32,
    pub acceptees: u32,
    pub rejetees: u32,
    pub compte_rendu: Vec<ReportLine>,
}

/// The fate of one line of a lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportLine {
    /// 1-based line number in the lot, as [`super::RepriseLot::references`] counts from 0.
    pub ligne: u32,
    pub reference: String,
    /// Always written, `null` when the line was rejected.
    pub numero_agora: Option<String>,
    pub anomalies: Vec<Anomaly>,
}
