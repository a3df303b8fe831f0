//! The canonical dossier (*dossier de formation*): the one shape every adapter maps to and from.
//!
//! Its JSON form is `schemas/dossier.schema.json`; the serde attributes here and that schema are kept
//! in step by a test that validates every decoded fixture against the schema.
//!
//! Personal data (NIR, names, birth date) sit in [`Personal`] wrappers whose `Debug` and `Display`
//! never print the value, so a stray `{:?}` in a log line cannot leak them.

mod personal;
mod state;

pub use personal::{mask_dossier_json, mask_nir, Identifier, Nir, Personal, MASK};
pub use state::{Advance, State, TransitionError};

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

pub use crate::sources::System;

/// Which flow brings a record (*flux*): the synchronous one, or the one-off load of existing
/// dossiers. One enum for everything that differs by flow: the adapters' perimeter (pre-2017
/// sessions only matter in a backfill), the ledger's column, the queue's lane and its metrics label.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Flow {
    /// The synchronous flow (*flux au fil de l'eau*): what the systems push or are polled for.
    Sync,
    /// The one-off load of existing dossiers (*reprise d'antériorité*), on its own lane at a lower
    /// priority.
    Backfill,
}

impl Flow {
    /// Every flow, in priority order (the queue's lanes).
    pub const ALL: [Flow; 2] = [Flow::Sync, Flow::Backfill];

    /// The stable name of the ledger's column, the queue's names and the metrics labels.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The inverse of [`Flow::as_str`].
    pub fn parse(s: &str) -> Option<Flow> {
        s.parse().ok()
    }
}

/// Where one canonical record came from (*source*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    pub system: System,
    /// The record's id in its system (ATEXO `dossier/@id`, an orientation's `idOrientation`, PE `idInscription`).
    pub id: String,
    /// The source's own version counter, when it has one (ATEXO `dossier/@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The source's last-modified date, when it has one (ATEXO `dossier/@dateMaj`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_on: Option<NaiveDate>,
}

/// A canonical dossier: one trainee on one session, funded by one or more funders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dossier {
    /// The source records merged into this dossier (one after a decode, several after a merge).
    pub sources: Vec<SourceRef>,
    /// Lifecycle state (*état du dossier*).
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispositif: Option<Dispositif>,
    /// Training category (*catégorie*), used by the perimeter rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Programme code (*programme*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consultation: Option<Consultation>,
    pub trainee: Trainee,
    pub training: Training,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    /// Fundings (*financements*); the first is the main funder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fundings: Vec<Funding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<Orientation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
}

/// The funding scheme (*dispositif*) and whether it is in AGORA's perimeter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispositif {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// ATEXO SEM's `agora` flag (*dans le périmètre AGORA*); `None` when the source does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agora: Option<bool>,
}

/// The procurement lot (*consultation*, *lot*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consultation {
    pub number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
}

/// Sex as coded in the NIR (*sexe*): 1 male, 2 female.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "1",
            Sex::Female => "2",
        }
    }
    pub fn from_code(code: &str) -> Option<Sex> {
        match code {
            "1" => Some(Sex::Male),
            "2" => Some(Sex::Female),
            _ => None,
        }
    }
}

/// The trainee (*stagiaire*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainee {
    /// Social security number (*NIR*), 13 or 15 characters as the source gave it.
    pub nir: Nir,
    /// Birth name (*nom de naissance*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_name: Option<Personal<String>>,
    /// Usage name (*nom d'usage*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_name: Option<Personal<String>>,
    /// First names (*prénoms*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_names: Option<Personal<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Birth date (*date de naissance*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Personal<NaiveDate>>,
    /// Pôle emploi job-seeker identifiers (*identifiant demandeur d'emploi*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pole_emploi_id: Option<PoleEmploiId>,
    /// Postal code (*code postal*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// INSEE code of the commune (*code commune INSEE*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commune_insee: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoleEmploiId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regional: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_code: Option<String>,
}

/// The training offer (*action de formation*) with its Intercarif numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_formation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_action: Option<String>,
    /// Intercarif session number (*numéro de session*); with the NIR it identifies the dossier.
    pub numero_session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formacode: Option<Formacode>,
    /// RNCP or RS certification (*certification visée*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certification: Option<String>,
}

/// A Formacode with the thesaurus version it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formacode {
    pub code: String,
    pub version: String,
}

/// The training provider (*organisme de formation*).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siret: Option<String>,
    /// Declaration number (*numéro de déclaration d'activité*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nda: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Session dates and planned hours (*session*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Planned hours in the training centre (*heures en centre*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_centre: Option<u32>,
    /// Planned hours in a company (*heures en entreprise*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_company: Option<u32>,
}

impl Session {
    /// Planned hours in all, as AGORA's `heures_prevues` wants them.
    pub fn hours_planned(&self) -> Option<u32> {
        match (self.hours_centre, self.hours_company) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        }
    }
}

/// Entry into training (*entrée en formation*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub date: NaiveDate,
}

/// Exit from training (*sortie de formation*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    pub date: NaiveDate,
    pub reason: ExitReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CertificationResult>,
    /// Hours actually done (*heures réalisées*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_done: Option<u32>,
}

impl Exit {
    /// An exit before the planned end is an early exit; a cancellation after entry is one too.
    pub fn is_early(&self) -> bool {
        self.reason != ExitReason::End
    }
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $canon:literal / $ext:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $canon)] $variant),+
        }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The canonical snake_case spelling.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $canon),+ } }
            /// The spelling of ATEXO SEM, which AGORA keeps too.
            pub fn external(self) -> &'static str { match self { $($name::$variant => $ext),+ } }
            /// Parse the ATEXO SEM / AGORA spelling.
            pub fn from_external(s: &str) -> Option<Self> {
                match s { $($ext => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

code_enum!(
    /// Why the trainee left (*motif de sortie*).
    ExitReason {
        End = "end" / "FIN",
        Employment = "employment" / "EMPLOI",
        OtherTraining = "other_training" / "AUTRE_FORMATION",
        Dropout = "dropout" / "ABANDON",
        Exclusion = "exclusion" / "EXCLUSION",
        Illness = "illness" / "MALADIE",
        ForceMajeure = "force_majeure" / "FORCE_MAJEURE",
        Death = "death" / "DECES",
        Other = "other" / "AUTRE",
    }
);

code_enum!(
    /// Certification outcome (*résultat de la certification*).
    CertificationResult {
        Obtained = "obtained" / "OBTENUE",
        Partial = "partial" / "PARTIELLE",
        NotObtained = "not_obtained" / "NON_OBTENUE",
        NotPresented = "not_presented" / "NON_PRESENTE",
        Unknown = "unknown" / "INCONNU",
    }
);

code_enum!(
    /// Who cancelled (*initiateur de l'annulation*).
    Initiator {
        Trainee = "trainee" / "STAGIAIRE",
        Provider = "provider" / "ORGANISME",
        Funder = "funder" / "FINANCEUR",
        Prescriber = "prescriber" / "PRESCRIPTEUR",
    }
);

code_enum!(
    /// Prescriber kind (*type de prescripteur*), the orientation platform's spelling.
    PrescriberKind {
        PoleEmploi = "pole_emploi" / "POLE_EMPLOI",
        MissionLocale = "mission_locale" / "MISSION_LOCALE",
        CapEmploi = "cap_emploi" / "CAP_EMPLOI",
        Region = "region" / "REGION",
        Other = "other" / "AUTRE",
    }
);

code_enum!(
    /// Pôle emploi registration status (*statut d'inscription*).
    RegistrationStatus {
        Retained = "retained" / "ICR",
        Absent = "absent" / "ICA",
        NotRetained = "not_retained" / "ICN",
        AwaitingDecision = "awaiting_decision" / "PFR",
    }
);

/// One funder's share (*financement*). Amounts are integer cents, never floats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Funding {
    /// LHEO `dict-financeurs` code (*code financeur*).
    pub funder: u8,
    /// Amount committed (*montant engagé*), cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_cents: Option<i64>,
    /// Amount realised (*montant réalisé*), cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realised_cents: Option<i64>,
    /// Amount settled (*montant soldé*), cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_cents: Option<i64>,
}

/// Cancellation before entry (*annulation*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    pub date: NaiveDate,
    pub initiator: Initiator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Refusal by the provider, the trainee or the funder (*refus*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The orientation that started the dossier (*orientation*), from the orientation platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orientation {
    pub date: DateTime<FixedOffset>,
    pub prescriber_kind: PrescriberKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prescriber_siret: Option<String>,
}

/// Pôle emploi registration (*inscription*, AIS) and entry certificate (AES).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub id: String,
    pub status: RegistrationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Whether the entry certificate was received (*AES reçue*).
    pub aes_received: bool,
}

impl Dossier {
    /// The main funder (*financeur principal*): the first funding listed.
    pub fn main_funding(&self) -> Option<&Funding> {
        self.fundings.first()
    }

    /// The correlation key of the dossier: NIR's first 13 characters and the session number.
    pub fn key(&self) -> DossierKey {
        DossierKey::new(self.trainee.nir.nir13(), &self.training.numero_session)
    }

    /// The source record of one system, if it took part.
    pub fn source(&self, system: System) -> Option<&SourceRef> {
        self.sources.iter().find(|s| s.system == system)
    }
}

/// What makes two records the same dossier (*clé de rapprochement*): NIR-13 and `numeroSession`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DossierKey {
    nir13: String,
    numero_session: String,
}

impl std::fmt::Debug for DossierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DossierKey({}, {})",
            mask_nir(&self.nir13),
            self.numero_session
        )
    }
}

impl DossierKey {
    pub fn new(nir13: &str, numero_session: &str) -> Self {
        Self {
            nir13: nir13.to_owned(),
            numero_session: numero_session.to_owned(),
        }
    }

    /// A stable dossier id (*identifiant passerelle*) derived from the key and an installation salt,
    /// so the same trainee on the same session always gets the same id, and the id reveals no NIR.
    pub fn dossier_id(&self, salt: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(salt);
        h.update([0]);
        h.update(self.nir13.as_bytes());
        h.update([0]);
        h.update(self.numero_session.as_bytes());
        let digest = h.finalize();
        format!("psl-{}", hex::encode(&digest[..10]))
    }
}
