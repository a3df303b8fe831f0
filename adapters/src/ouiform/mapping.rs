//! OUIFORM ↔ canonical field table (contract §2.2).
//!
//! One row per field. The rows serve both to name OUIFORM's field in a rule violation (the domain
//! rules speak canonical pointers) and to generate the published correspondence document, so the
//! notes are written for a reader of that document.

use crate::canonical::System;
use crate::mapping::{FieldMap, MappingTable};

pub const TABLE: MappingTable = MappingTable {
    system: System::Ouiform,
    one_based: false,
    rows: ROWS,
};

const ROWS: &[FieldMap] = &[
    FieldMap {
        canonical: "/sources/0/id",
        system: "/idOrientation",
        note: "source system ouiform",
    },
    FieldMap {
        canonical: "/state",
        system: "/statut",
        note: "PROPOSEE→prescribed, ACCEPTEE→registered, REFUSEE→refused, ENTREE→entered, ANNULEE→cancelled",
    },
    FieldMap {
        canonical: "/orientation/date",
        system: "/dateOrientation",
        note: "RFC 3339 date-time, offset kept",
    },
    FieldMap {
        canonical: "/orientation/prescriber_kind",
        system: "/prescripteur/type",
        note: "POLE_EMPLOI→pole_emploi, MISSION_LOCALE→mission_locale, CAP_EMPLOI→cap_emploi, REGION→region, AUTRE→other",
    },
    FieldMap {
        canonical: "/orientation/prescriber_siret",
        system: "/prescripteur/siretStructure",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/nir",
        system: "/beneficiaire/nir",
        note: "13 or 15 characters, kept as given",
    },
    FieldMap {
        canonical: "/trainee/birth_name",
        system: "/beneficiaire/nomNaissance",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/first_names",
        system: "/beneficiaire/prenom",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/birth_date",
        system: "/beneficiaire/dateNaissance",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/pole_emploi_id/national",
        system: "/beneficiaire/idNationalDE",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/pole_emploi_id/regional",
        system: "/beneficiaire/idRegionalDE",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/pole_emploi_id/geo_code",
        system: "/beneficiaire/codeGeoDE",
        note: "",
    },
    FieldMap {
        canonical: "/trainee/postal_code",
        system: "/beneficiaire/codePostal",
        note: "",
    },
    FieldMap {
        canonical: "/training/numero_formation",
        system: "/offre/numeroFormation",
        note: "",
    },
    FieldMap {
        canonical: "/training/numero_action",
        system: "/offre/numeroAction",
        note: "",
    },
    FieldMap {
        canonical: "/training/numero_session",
        system: "/offre/numeroSession",
        note: "with the NIR's first 13 characters, the correlation key",
    },
    FieldMap {
        canonical: "/training/title",
        system: "/offre/intitule",
        note: "",
    },
    FieldMap {
        canonical: "/provider/siret",
        system: "/offre/siretOrganisme",
        note: "",
    },
    FieldMap {
        canonical: "/fundings/0/funder",
        system: "/financeur",
        note: "digits to LHEO code, the only funding, no amounts (OUIFORM carries none)",
    },
    FieldMap {
        canonical: "/fundings",
        system: "/financeur",
        note: "absent when financeur is absent",
    },
    FieldMap {
        canonical: "/dispositif/code",
        system: "/dispositif",
        note: "label and AGORA flag unknown to OUIFORM",
    },
    FieldMap {
        canonical: "/refusal/reason",
        system: "/motifRefus",
        note: "required when statut is REFUSEE",
    },
    FieldMap {
        canonical: "/entry/date",
        system: "/dateEntree",
        note: "required when statut is ENTREE",
    },
    FieldMap {
        canonical: "/entry",
        system: "/dateEntree",
        note: "present when dateEntree is",
    },
];
