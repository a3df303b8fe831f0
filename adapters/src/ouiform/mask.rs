//! The orientation with the beneficiary's personal values masked: the one masking of OUIFORM's
//! payload, for the message journal and anything else that shows one (logs, traces).
//!
//! Masked, each by its [`Identifier`]'s one mask (the NIR keeps its first character and length,
//! as the admin trace shows it; the others become `***`): `nir`, `nomNaissance`, `prenom`,
//! `dateNaissance`, and the job seeker's Pôle emploi ids `idNationalDE` and `idRegionalDE`, when
//! present and not null. Everything else (the offer, the prescriber, `codeGeoDE`, `codePostal`)
//! is kept.

use serde_json::Value;

use crate::canonical::Identifier;

/// The personal fields of `beneficiaire`, and what each is.
pub const PERSONAL_FIELDS: [(&str, Identifier); 6] = [
    ("nir", Identifier::Nir),
    ("nomNaissance", Identifier::Name),
    ("prenom", Identifier::Name),
    ("dateNaissance", Identifier::BirthDate),
    ("idNationalDE", Identifier::PoleEmploiId),
    ("idRegionalDE", Identifier::PoleEmploiId),
];

/// Masks an orientation in place.
pub fn mask_orientation(orientation: &mut Value) {
    if let Some(b) = orientation
        .get_mut("beneficiaire")
        .and_then(Value::as_object_mut)
    {
        for (k, identifier) in PERSONAL_FIELDS {
            if let Some(v) = b.get_mut(k) {
                *v = identifier.mask_json(v);
            }
        }
    }
}

/// An orientation's bytes, masked; `None` when they are not JSON.
pub fn mask_payload(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    mask_orientation(&mut v);
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_personal_field_of_the_beneficiary_is_masked() {
        let body = serde_json::json!({
            "idOrientation": "OF-2019-000042",
            "beneficiaire": {"nir": "185077512345608", "nomNaissance": "DUPONT", "prenom": "Jean",
                "dateNaissance": "1985-07-12", "idNationalDE": "1234567A", "idRegionalDE": "0676932W",
                "codeGeoDE": "044", "codePostal": "44000"},
        });
        let masked: Value = serde_json::from_slice(
            &mask_payload(&serde_json::to_vec(&body).unwrap_or_default()).unwrap_or_default(),
        )
        .unwrap_or_default();
        let text = masked.to_string();
        for personal in [
            "185077512345608",
            "DUPONT",
            "Jean",
            "1985-07-12",
            "1234567A",
            "0676932W",
        ] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
        assert_eq!(
            masked["beneficiaire"]["idRegionalDE"],
            crate::canonical::MASK
        );
        assert_eq!(masked["beneficiaire"]["nir"], "1**************");
        assert_eq!(masked["beneficiaire"]["codeGeoDE"], "044");
        assert_eq!(masked["idOrientation"], "OF-2019-000042");
    }
}
