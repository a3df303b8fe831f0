//! The French words the console shows for the codes the gateway keeps in English.

use passerelle_adapters::canonical::{State, System};

use crate::ledger::DeliveryStatus;

pub fn state(s: State) -> &'static str {
    match s {
        State::Prescribed => "Prescrit",
        State::Registered => "Inscrit",
        State::Validated => "Validé",
        State::Entered => "Entré en formation",
        State::Exited => "Sorti de formation",
        State::ServiceDone => "Service fait",
        State::Settled => "Soldé",
        State::Refused => "Refusé",
        State::Cancelled => "Annulé",
    }
}

pub fn delivery(d: DeliveryStatus) -> &'static str {
    match d {
        DeliveryStatus::Pending => "En attente",
        DeliveryStatus::Delivered => "Livré",
        DeliveryStatus::Incomplete => "Incomplet",
        DeliveryStatus::OutOfPerimeter => "Hors périmètre",
        DeliveryStatus::Dead => "Lettre morte",
    }
}

/// AGORA's state codes (`CREE`…) in words.
pub fn agora_state(code: &str) -> &'static str {
    match code {
        "CREE" => "Créé",
        "ENTRE" => "Entré en formation",
        "SORTI" => "Sorti de formation",
        "SOLDE" => "Soldé",
        "ANNULE" => "Annulé",
        _ => "Inconnu",
    }
}

/// A system as its users write it: a source's own label, or AGORA.
pub fn system(s: System) -> &'static str {
    passerelle_adapters::sources::source(s).map_or("AGORA", |src| src.label())
}

/// LHEO `dict-financeurs` (2.3).
pub fn funder(code: u8) -> &'static str {
    match code {
        0 => "Autre",
        2 => "Conseil régional",
        3 => "Fonds social européen",
        4 => "Pôle emploi",
        5 => "Entreprise",
        7 => "AGEFIPH",
        8 => "Conseil départemental",
        9 => "Commune",
        10 => "Bénéficiaire",
        11 => "État – emploi",
        12 => "État – éducation",
        13 => "État – autre",
        14 => "Autres fonds européens",
        15 => "Autre collectivité",
        16 => "OPCO",
        17 => "Transitions Pro",
        18 => "LADOM",
        19 => "État – intérieur",
        20 => "OFII",
        _ => "Code inconnu",
    }
}

pub const FUNDERS: [u8; 19] = [
    0, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
];

pub fn flow(f: crate::ledger::Flow) -> &'static str {
    match f {
        crate::ledger::Flow::Sync => "Flux synchrone",
        crate::ledger::Flow::Backfill => "Reprise d'antériorité",
    }
}

pub fn operation(op: passerelle_adapters::planner::Operation) -> &'static str {
    use passerelle_adapters::planner::Operation;
    match op {
        Operation::Search => "Recherche",
        Operation::Create => "Création",
        Operation::Enter => "Entrée",
        Operation::Exit => "Sortie",
        Operation::Settle => "Solde",
        Operation::Cancel => "Annulation",
    }
}

/// A time as operators read it: UTC, to the second.
pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%d/%m/%Y %H:%M:%S UTC").to_string()
}

/// Where a return to ATEXO SEM stands.
pub fn return_status(s: crate::ledger::outbox::ReturnStatus) -> &'static str {
    use crate::ledger::outbox::ReturnStatus;
    match s {
        ReturnStatus::Pending => "en attente d'envoi",
        ReturnStatus::Sent => "reçu par ATEXO SEM",
        ReturnStatus::Refused => "refusé par ATEXO SEM",
    }
}
