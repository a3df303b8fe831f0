//! A registration with the job seeker's identifiers masked: the one masking of Pôle emploi's
//! answers, for the message journal and anything else that shows one.
//!
//! Masked: `nirCertifie`, `idNationalDE` and `idRegionalDE`, each replaced with [`MASK`] when
//! present and not null. `idInscription`, `codeGeoDE` and the rest are kept.

use serde_json::Value;

use crate::canonical::MASK;

/// The personal fields of a registration.
pub const PERSONAL_FIELDS: [&str; 3] = ["nirCertifie", "idNationalDE", "idRegionalDE"];

/// Masks a registration in place.
pub fn mask_registration(registration: &mut Value) {
    if let Some(fields) = registration.as_object_mut() {
        for k in PERSONAL_FIELDS {
            if let Some(v) = fields.get_mut(k).filter(|v| !v.is_null()) {
                *v = Value::String(MASK.into());
            }
        }
    }
}
