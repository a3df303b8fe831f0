//! ATEXO SEM's own records, as its `exportSEM` XML carries them (contract §2.1).
//!
//! Values stay strings here, exactly as read (unescaped, trimmed): dates `JJ/MM/AAAA`, amounts with
//! a decimal comma, flags `O`/`N`. An empty attribute or element is `None`, as ATEXO writes
//! `montantRealise=""` for "not yet". Turning them into canonical values, with a violation per bad
//! value, is [`super::mapping`]'s and [`super`]'s job; this layer only knows the shape.

use std::fmt;

/// The root element's attributes (`<exportSEM version region dateExport>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawExport {
    pub version: Option<String>,
    /// Region code (*région*), such as `PDL`.
    pub region: Option<String>,
    /// Export date (*date d'export*), `JJ/MM/AAAA`.
    pub date_export: Option<String>,
}

/// One `<dossier>`: a trainee on a session (*dossier stagiaire*).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawDossier {
    /// `@id`, ATEXO's dossier reference (`PDL-2019-000123`).
    pub id: Option<String>,
    /// `@version`, increased by ATEXO at every change.
    pub version: Option<String>,
    /// `@dateMaj`, last change (*date de mise à jour*).
    pub date_maj: Option<String>,
    pub dispositif: Option<RawDispositif>,
    /// `<categorie>`, used by the perimeter rules.
    pub categorie: Option<String>,
    /// `<programme code>`.
    pub programme: Option<String>,
    pub consultation: Option<RawConsultation>,
    pub stagiaire: Option<RawStagiaire>,
    pub action: Option<RawAction>,
    pub organisme: Option<RawOrganisme>,
    pub session: Option<RawSession>,
    /// `<etat>`: INSCRIT VALIDE ENTRE SORTI SERVICE_FAIT SOLDE REFUSE ANNULE.
    pub etat: Option<String>,
    /// `<entree date>`.
    pub entree: Option<RawEntree>,
    pub sortie: Option<RawSortie>,
    /// `<financement>` elements, in document order (the first is the main funder).
    pub financements: Vec<RawFinancement>,
    pub annulation: Option<RawAnnulation>,
}

impl RawDossier {
    /// Empties the record for the next dossier while keeping the funding vector's capacity.
    pub fn clear(&mut self) {
        let mut financements = std::mem::take(&mut self.financements);
        financements.clear();
        *self = RawDossier {
            financements,
            ..RawDossier::default()
        };
    }
}

/// `<dispositif code libelle agora>`: the funding scheme and its AGORA perimeter flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawDispositif {
    pub code: Option<String>,
    pub libelle: Option<String>,
    /// `O` or `N`.
    pub agora: Option<String>,
}

/// `<consultation numero lot>`: the procurement lot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConsultation {
    pub numero: Option<String>,
    pub lot: Option<String>,
}

/// `<stagiaire>`: the trainee. Its `Debug` masks every value, personal data all.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawStagiaire {
    pub nir: Option<String>,
    pub nom_naissance: Option<String>,
    pub nom_usage: Option<String>,
    pub prenoms: Option<String>,
    /// `1` or `2`.
    pub sexe: Option<String>,
    pub date_naissance: Option<String>,
    pub identifiant_pe: Option<RawIdentifiantPe>,
    pub adresse: Option<RawAdresse>,
}

impl fmt::Debug for RawStagiaire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each personal field as every view masks it: a stray `{:?}` must not leak a NIR or a
        // name, and shows what the journal and the trace show.
        use crate::canonical::Identifier;
        let seen =
            |o: &Option<String>, identifier: Identifier| o.as_deref().map(|v| identifier.mask(v));
        f.debug_struct("RawStagiaire")
            .field("nir", &seen(&self.nir, Identifier::Nir))
            .field(
                "nom_naissance",
                &seen(&self.nom_naissance, Identifier::Name),
            )
            .field("nom_usage", &seen(&self.nom_usage, Identifier::Name))
            .field("prenoms", &seen(&self.prenoms, Identifier::Name))
            .field("sexe", &self.sexe)
            .field(
                "date_naissance",
                &seen(&self.date_naissance, Identifier::BirthDate),
            )
            .field("identifiant_pe", &self.identifiant_pe)
            .field("adresse", &self.adresse)
            .finish()
    }
}

/// `<identifiantPE national regional codeGeo>`: Pôle emploi job-seeker ids.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawIdentifiantPe {
    pub national: Option<String>,
    pub regional: Option<String>,
    pub code_geo: Option<String>,
}

impl fmt::Debug for RawIdentifiantPe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ids identify a person as surely as a NIR: masked as every view masks them.
        use crate::canonical::Identifier;
        let id = |o: &Option<String>| o.as_deref().map(|v| Identifier::PoleEmploiId.mask(v));
        f.debug_struct("RawIdentifiantPe")
            .field("national", &id(&self.national))
            .field("regional", &id(&self.regional))
            .field("code_geo", &self.code_geo)
            .finish()
    }
}

/// `<adresse codePostal communeInsee>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawAdresse {
    pub code_postal: Option<String>,
    pub commune_insee: Option<String>,
}

/// `<action …>`: the offer and its Intercarif numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawAction {
    pub numero_formation: Option<String>,
    pub numero_action: Option<String>,
    pub numero_session: Option<String>,
    pub intitule: Option<String>,
    pub formacode: Option<String>,
    pub formacode_version: Option<String>,
    pub certification: Option<String>,
}

/// `<organisme siret nda raisonSociale>`: the training provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOrganisme {
    pub siret: Option<String>,
    pub nda: Option<String>,
    pub raison_sociale: Option<String>,
}

/// `<session dateDebut dateFin heuresCentre heuresEntreprise>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSession {
    pub date_debut: Option<String>,
    pub date_fin: Option<String>,
    pub heures_centre: Option<String>,
    pub heures_entreprise: Option<String>,
}

/// `<entree date>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntree {
    pub date: Option<String>,
}

/// `<sortie date motif resultat heuresRealisees>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSortie {
    pub date: Option<String>,
    pub motif: Option<String>,
    pub resultat: Option<String>,
    pub heures_realisees: Option<String>,
}

/// `<financement financeur montantEngage montantRealise montantSolde>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawFinancement {
    pub financeur: Option<String>,
    pub montant_engage: Option<String>,
    pub montant_realise: Option<String>,
    pub montant_solde: Option<String>,
}

/// `<annulation date initiateur motif>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawAnnulation {
    pub date: Option<String>,
    pub initiateur: Option<String>,
    pub motif: Option<String>,
}
