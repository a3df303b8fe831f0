//! Pôle emploi registration ↔ canonical field table (contract §2.3).
//!
//! System paths are JSON pointers relative to one registration of the answer's array; the decoder
//! prefixes them with the registration's index (`/3/nirCertifie`). The Intercarif numbers are not in
//! the body: they are the query parameters of the poll (`?numeroSession`), the same for every
//! registration of the answer.

use crate::canonical::System;
use crate::mapping::{FieldMap, MappingTable};

pub const TABLE: MappingTable = MappingTable {
    system: System::PoleEmploi,
    one_based: false,
    rows: ROWS,
};

const ROWS: &[FieldMap] = &[
    FieldMap {
        canonical: "/sources/0/id",
        system: "/idInscription",
        note: "source system pole_emploi",
    },
    FieldMap {
        canonical: "/state",
        system: "/codeStatutInscription",
        note: "ICR→registered, ICA and ICN→refused, PFR→prescribed; aesRecue true→entered whatever the code",
    },
    FieldMap {
        canonical: "/registration/id",
        system: "/idInscription",
        note: "",
    },
    FieldMap {
        canonical: "/registration/status",
        system: "/codeStatutInscription",
        note: "ICR→retained, ICA→absent, ICN→not_retained, PFR→awaiting_decision",
    },
    FieldMap {
        canonical: "/registration/project_id",
        system: "/idProjetAction",
        note: "",
    },
    FieldMap {
        canonical: "/registration/aes_received",
        system: "/aesRecue",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/nir",
        system: "/nirCertifie",
        note: "13 characters, no key",
    },
    FieldMap {
        canonical: "/trainee/pole_emploi_id/national",
        system: "/idNationalDE",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/pole_emploi_id/regional",
        system: "/idRegionalDE",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/pole_emploi_id/geo_code",
        system: "/codeGeoDE",
        note: "",
    },
    FieldMap {
        canonical: "/entry/date",
        system: "/dateEntree",
        note: "only when aesRecue is true: without the AES it is not an entry",
    },
    FieldMap {
        canonical: "/entry",
        system: "/dateEntree",
        note: "present when aesRecue is true",
    },
    FieldMap {
        canonical: "/session/start",
        system: "/listeModuleFormation",
        note: "earliest dateDebut of the modules",
    },
    FieldMap {
        canonical: "/session/end",
        system: "/listeModuleFormation",
        note: "latest dateFin of the modules",
    },
    FieldMap {
        canonical: "/session",
        system: "/listeModuleFormation",
        note: "absent when there is no module; no planned hours",
    },
    FieldMap {
        canonical: "/training/numero_formation",
        system: "?numeroFormation",
        note: "query parameter of the poll",
    },
    FieldMap {
        canonical: "/training/numero_action",
        system: "?numeroAction",
        note: "query parameter of the poll",
    },
    FieldMap {
        canonical: "/training/numero_session",
        system: "?numeroSession",
        note: "query parameter of the poll",
    },
];
