//! ATEXO SEM ↔ canonical field table.
//!
//! System paths are relative to the `<dossier>` element, XPath-like, 1-based for the repeated
//! `financement[*]`. The same rows name violations (a canonical pointer from the rules becomes
//! `/exportSEM/dossier[3]/` + the path here) and generate the published correspondence document, so
//! the notes say how each value is written on ATEXO's side.

use crate::canonical::System;
use crate::mapping::{FieldMap, MappingTable};

pub const TABLE: MappingTable = MappingTable {
    system: System::AtexoSem,
    one_based: true,
    rows: ROWS,
};

const fn row(canonical: &'static str, system: &'static str, note: &'static str) -> FieldMap {
    FieldMap {
        canonical,
        system,
        note,
    }
}

const DATE: &str = "JJ/MM/AAAA → ISO date";
const AMOUNT: &str = "euros, decimal comma (1234,56) → integer cents; empty = not yet known";

const ROWS: &[FieldMap] = &[
    row("/sources/*/id", "@id", "ATEXO dossier reference, kept as the source id"),
    row("/sources/*/version", "@version", "whole number, increased by ATEXO at every change"),
    row("/sources/*/updated_on", "@dateMaj", DATE),
    row("/dispositif/code", "dispositif/@code", ""),
    row("/dispositif/label", "dispositif/@libelle", ""),
    row(
        "/dispositif/agora",
        "dispositif/@agora",
        "O → true, N → false; N puts the dossier out of AGORA's perimeter",
    ),
    row("/dispositif", "dispositif", ""),
    row(
        "/category",
        "categorie",
        "any code; SANITAIRE_SOCIAL, PSAD, DETENUS, CRP, AIDE_INDIVIDUELLE, VAE are out of perimeter by default",
    ),
    row("/programme", "programme/@code", ""),
    row("/consultation/number", "consultation/@numero", ""),
    row("/consultation/lot", "consultation/@lot", ""),
    row("/consultation", "consultation", ""),
    row("/trainee/nir", "stagiaire/nir", "13 or 15 characters, as given"),
    row("/trainee/birth_name", "stagiaire/nomNaissance", ""),
    row("/trainee/usage_name", "stagiaire/nomUsage", "empty element = none"),
    row("/trainee/first_names", "stagiaire/prenoms", ""),
    row("/trainee/sex", "stagiaire/sexe", "1 → male, 2 → female"),
    row("/trainee/birth_date", "stagiaire/dateNaissance", DATE),
    row("/trainee/pole_emploi_id/national", "stagiaire/identifiantPE/@national", ""),
    row("/trainee/pole_emploi_id/regional", "stagiaire/identifiantPE/@regional", ""),
    row("/trainee/pole_emploi_id/geo_code", "stagiaire/identifiantPE/@codeGeo", ""),
    row("/trainee/pole_emploi_id", "stagiaire/identifiantPE", "optional"),
    row("/trainee/postal_code", "stagiaire/adresse/@codePostal", ""),
    row("/trainee/commune_insee", "stagiaire/adresse/@communeInsee", ""),
    row("/trainee", "stagiaire", ""),
    row("/training/numero_formation", "action/@numeroFormation", "Intercarif"),
    row("/training/numero_action", "action/@numeroAction", "Intercarif"),
    row(
        "/training/numero_session",
        "action/@numeroSession",
        "Intercarif; with the NIR's first 13 characters, the dossier's key",
    ),
    row("/training/title", "action/@intitule", ""),
    row("/training/formacode/code", "action/@formacode", "5 digits"),
    row("/training/formacode/version", "action/@formacodeVersion", "V and digits, such as V12"),
    row("/training/certification", "action/@certification", "RNCP… or RS…"),
    row("/training", "action", ""),
    row("/provider/siret", "organisme/@siret", "14 digits, Luhn"),
    row("/provider/nda", "organisme/@nda", ""),
    row("/provider/name", "organisme/@raisonSociale", ""),
    row("/provider", "organisme", ""),
    row("/session/start", "session/@dateDebut", DATE),
    row("/session/end", "session/@dateFin", DATE),
    row("/session/hours_centre", "session/@heuresCentre", "whole hours"),
    row("/session/hours_company", "session/@heuresEntreprise", "whole hours"),
    row("/session", "session", ""),
    row(
        "/state",
        "etat",
        "INSCRIT → registered, VALIDE → validated, ENTRE → entered, SORTI → exited, \
         SERVICE_FAIT → service_done, SOLDE → settled, REFUSE → refused, ANNULE → cancelled",
    ),
    row("/entry/date", "entree/@date", DATE),
    row("/entry", "entree", "present from ENTRE on"),
    row("/exit/date", "sortie/@date", DATE),
    row(
        "/exit/reason",
        "sortie/@motif",
        "FIN, EMPLOI, AUTRE_FORMATION, ABANDON, EXCLUSION, MALADIE, FORCE_MAJEURE, DECES, AUTRE",
    ),
    row(
        "/exit/result",
        "sortie/@resultat",
        "OBTENUE, PARTIELLE, NON_OBTENUE, NON_PRESENTE, INCONNU",
    ),
    row("/exit/hours_done", "sortie/@heuresRealisees", "whole hours"),
    row("/exit", "sortie", "present from SORTI on"),
    row("/fundings/*/funder", "financement[*]/@financeur", "LHEO dict-financeurs code"),
    row("/fundings/*/committed_cents", "financement[*]/@montantEngage", AMOUNT),
    row("/fundings/*/realised_cents", "financement[*]/@montantRealise", AMOUNT),
    row("/fundings/*/settled_cents", "financement[*]/@montantSolde", AMOUNT),
    row("/fundings/*", "financement[*]", "in document order; the first is the main funder"),
    row("/fundings", "financement", "1..n"),
    row("/cancellation/date", "annulation/@date", DATE),
    row(
        "/cancellation/initiator",
        "annulation/@initiateur",
        "STAGIAIRE, ORGANISME, FINANCEUR, PRESCRIPTEUR",
    ),
    row("/cancellation/reason", "annulation/@motif", "free text"),
    row("/cancellation", "annulation", "present when ANNULE"),
];
