//! Field table: canonical pointer ↔ AGORA JSON pointer, one row per field.
//!
//! AGORA pointers are those of a backfill line (`/entree/date_entree`); a transition call sends the
//! same block as its whole body (`POST …/entree` with `{"date_entree"}`). The table generates the
//! published correspondence (`passerelle mapping`) and turns AGORA-side violations back into
//! canonical pointers ([`canonical_of`]).
//!
//! What AGORA requires is decided here, in the notes, and enforced by `super::missing_for_agora`:
//! every row is required unless its note says "optional".
use crate::canonical::System;
use crate::mapping::{FieldMap, MappingTable};

pub const TABLE: MappingTable = MappingTable {
    system: System::Agora,
    one_based: false,
    rows: ROWS,
};

/// Not a canonical field: the ledger's id, `DossierKey::dossier_id`.
pub const DOSSIER_ID: &str = "(dossier_id)";

const fn row(canonical: &'static str, system: &'static str, note: &'static str) -> FieldMap {
    FieldMap {
        canonical,
        system,
        note,
    }
}

const ROWS: &[FieldMap] = &[
    row(
        DOSSIER_ID,
        "/reference",
        "passerelle's dossier id (a salted hash of NIR-13 and numero_session); also the search key",
    ),
    // The main funder's row comes before the generic one so that `locate` picks it for index 0.
    row(
        "/fundings/0/funder",
        "/financeur/code",
        "main funder = first funding; LHEO code as a string; financeur.siret is never sent",
    ),
    row("/dispositif/code", "/dispositif", ""),
    row("/trainee/nir", "/stagiaire/nir13", "first 13 characters"),
    row("/trainee/birth_name", "/stagiaire/nom_naissance", ""),
    row(
        "/trainee/usage_name",
        "/stagiaire/nom_usage",
        "the birth name when there is no usage name",
    ),
    row("/trainee/first_names", "/stagiaire/prenoms", ""),
    row("/trainee/sex", "/stagiaire/sexe", "1 or 2"),
    row("/trainee/birth_date", "/stagiaire/date_naissance", "YYYY-MM-DD"),
    row(
        "/trainee/pole_emploi_id/national",
        "/stagiaire/id_national_de",
        "optional",
    ),
    row("/trainee/postal_code", "/stagiaire/code_postal", ""),
    row("/training/numero_formation", "/formation/numero_formation", ""),
    row("/training/numero_action", "/formation/numero_action", ""),
    row("/training/numero_session", "/formation/numero_session", ""),
    row("/training/title", "/formation/intitule", ""),
    row(
        "/training/formacode",
        "/formation/formacode",
        "the 5-digit code only (\"31795\"); the thesaurus version (V12) is not sent",
    ),
    row(
        "/training/certification",
        "/formation/certification",
        "optional",
    ),
    row("/provider/siret", "/formation/siret_organisme", ""),
    row("/session/start", "/formation/date_debut", "YYYY-MM-DD"),
    row("/session/end", "/formation/date_fin", "YYYY-MM-DD"),
    row(
        "/session/hours_centre",
        "/formation/heures_prevues",
        "hours_centre + hours_company; one of them is required",
    ),
    row(
        "/session/hours_company",
        "/formation/heures_prevues",
        "hours_centre + hours_company",
    ),
    row("/session", "/formation", "session dates and hours"),
    row("/fundings/*/funder", "/financements/*/code_financeur", ""),
    row(
        "/fundings/*/committed_cents",
        "/financements/*/montant_engage_cents",
        "cents",
    ),
    row("/fundings", "/financements", "at least one funding"),
    row("/state", "/etat", "backfill lines only: the trigger table's AGORA state"),
    row("/entry", "/entree", "the entry block: POST …/entree"),
    row(
        "/entry/date",
        "/entree/date_entree",
        "YYYY-MM-DD",
    ),
    row("/exit", "/sortie", "the exit block: POST …/sortie"),
    row("/exit/date", "/sortie/date_sortie", ""),
    row(
        "/exit/reason",
        "/sortie/motif_sortie",
        "ATEXO SEM spelling (ABANDON)",
    ),
    row(
        "/exit/result",
        "/sortie/resultat_certification",
        "ATEXO SEM spelling; INCONNU when absent",
    ),
    row("/exit/hours_done", "/sortie/heures_realisees", ""),
    row(
        "/fundings/0/realised_cents",
        "/solde/montant_realise_cents",
        "main funder, cents; POST …/solde",
    ),
    row(
        "/fundings/0/settled_cents",
        "/solde/montant_solde_cents",
        "main funder, cents",
    ),
    row(
        "/cancellation",
        "/annulation",
        "the cancellation block: POST …/annulation",
    ),
    row(
        "/cancellation/date",
        "/annulation/date_annulation",
        "a refused dossier: its latest source update, else its orientation date",
    ),
    row(
        "/cancellation/initiator",
        "/annulation/initiateur",
        "ATEXO SEM spelling; a refused dossier: STAGIAIRE when Pôle emploi says ICA, ORGANISME otherwise",
    ),
    row(
        "/cancellation/reason",
        "/annulation/motif",
        "\"Motif non communiqué\" when absent",
    ),
    row(
        "/refusal/reason",
        "/annulation/motif",
        "a refused dossier is cancelled with its refusal reason",
    ),
];

/// The canonical pointer an AGORA pointer comes from: the first row whose AGORA path matches
/// (indexes carried over), else the nearest mapped ancestor, else the AGORA pointer itself marked
/// as such. A transition body's pointers are relative to its block: prefix the block (`/sortie`) first.
pub fn canonical_of(agora_pointer: &str) -> String {
    let mut pointer = agora_pointer;
    loop {
        for r in ROWS {
            if let Some(indexes) = match_template(r.system, pointer) {
                return fill(r.canonical, &indexes);
            }
        }
        match pointer.rfind('/') {
            Some(0) | None => return format!("(agora {agora_pointer})"),
            Some(i) => pointer = &pointer[..i],
        }
    }
}

fn match_template(template: &str, pointer: &str) -> Option<Vec<String>> {
    let mut t = template.split('/');
    let mut p = pointer.split('/');
    let mut indexes = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(indexes),
            (Some("*"), Some(seg)) if seg.bytes().all(|b| b.is_ascii_digit()) => {
                indexes.push(seg.to_string())
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

fn fill(template: &str, indexes: &[String]) -> String {
    let mut idx = indexes.iter();
    template
        .split('/')
        .map(|seg| match seg {
            "*" => idx.next().map(String::as_str).unwrap_or("0"),
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}
