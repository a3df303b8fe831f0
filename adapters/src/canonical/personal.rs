//! Wrappers that keep personal data out of logs: `Debug` and `Display` print a mask, serde sees the value.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What replaces a personal value in full: names, birth dates, Pôle emploi ids ([`Identifier`]),
/// [`Personal`]'s `Display`, AGORA's free-text `libelle`. A NIR is shown by [`mask_nir`] instead.
pub const MASK: &str = "***";

/// The personal identifiers passerelle handles, each with the one mask every view shows it with:
/// the journal's copies of the payloads (each system's `mask` module), the admin trace and the
/// console ([`mask_dossier_json`]), the CLI, and `Debug` (what a log line would print). An
/// operator who compares the journal with the trace sees the same string for the same person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identifier {
    /// The NIR: [`mask_nir`].
    Nir,
    /// A birth name, usage name or first names.
    Name,
    BirthDate,
    /// A Pôle emploi job-seeker id, national or regional: it identifies a person as surely as a
    /// NIR.
    PoleEmploiId,
}

impl Identifier {
    /// `value` as every view shows it.
    pub fn mask(self, value: &str) -> String {
        match self {
            Identifier::Nir => mask_nir(value),
            Identifier::Name | Identifier::BirthDate | Identifier::PoleEmploiId => MASK.to_string(),
        }
    }

    /// A JSON value as every view shows it: `null` stays `null` (an absent value is not hidden),
    /// a string is [`Identifier::mask`]ed, any other value (a number where a string belongs)
    /// becomes [`MASK`].
    pub fn mask_json(self, value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Null => serde_json::Value::Null,
            serde_json::Value::String(s) => serde_json::Value::String(self.mask(s)),
            _ => serde_json::Value::String(MASK.into()),
        }
    }
}

/// A personal value (name, birth date). Read it with [`Personal::expose`], on purpose.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Personal<T>(T);

impl<T> Personal<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personal(***)")
    }
}

impl<T> fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// The social security number (*NIR*) exactly as received (13 or 15 characters).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nir(String);

impl Nir {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The full value, for the one place allowed to see it: the payload sent to AGORA.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The first 13 characters, which AGORA takes and which correlate sources.
    pub fn nir13(&self) -> &str {
        match self.0.char_indices().nth(13) {
            Some((i, _)) => &self.0[..i],
            None => &self.0,
        }
    }
    pub fn masked(&self) -> String {
        mask_nir(&self.0)
    }
}

/// Masks a NIR, in every view ([`Identifier::Nir`]): only its first character (the sex digit)
/// survives, and its length, which tells a 13-character number from a 15-character one.
pub fn mask_nir(nir: &str) -> String {
    let mut out = String::with_capacity(nir.len());
    for (i, c) in nir.chars().enumerate() {
        out.push(if i == 0 { c } else { '*' });
    }
    out
}

/// Masks a canonical dossier shown as JSON to someone without the personal-data right (the
/// admin trace): the one masking of the canonical trainee. The NIR keeps its sex digit and length
/// ([`mask_nir`]); names, birth date and the Pôle emploi ids (national, regional: they identify a
/// person as surely as a NIR) become [`MASK`]. The Pôle emploi geographic code and the postal code
/// are kept.
pub fn mask_dossier_json(dossier: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(t) = dossier.get_mut("trainee").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, identifier) in [
        ("nir", Identifier::Nir),
        ("birth_name", Identifier::Name),
        ("usage_name", Identifier::Name),
        ("first_names", Identifier::Name),
        ("birth_date", Identifier::BirthDate),
    ] {
        if let Some(v) = t.get_mut(k) {
            *v = identifier.mask_json(v);
        }
    }
    if let Some(ids) = t.get_mut("pole_emploi_id").and_then(Value::as_object_mut) {
        for k in ["national", "regional"] {
            if let Some(v) = ids.get_mut(k) {
                *v = Identifier::PoleEmploiId.mask_json(v);
            }
        }
    }
}

impl fmt::Debug for Nir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nir({})", self.masked())
    }
}

impl fmt::Display for Nir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dossier_mask_covers_the_pole_emploi_ids() {
        let mut d = serde_json::json!({"trainee": {
            "nir": "185077512345608", "birth_name": "DUPONT", "first_names": "Jean",
            "birth_date": "1985-07-12", "sex": "1", "postal_code": "44000",
            "pole_emploi_id": {"national": "1234567A", "regional": "0676932W", "geo_code": "044"}
        }});
        mask_dossier_json(&mut d);
        let text = d.to_string();
        for personal in [
            "85077512345608",
            "DUPONT",
            "Jean",
            "1985-07-12",
            "1234567A",
            "0676932W",
        ] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
        assert_eq!(d["trainee"]["nir"], "1**************");
        assert_eq!(d["trainee"]["pole_emploi_id"]["geo_code"], "044");
        assert_eq!(d["trainee"]["postal_code"], "44000");
    }

    fn fixture(path: &str) -> Vec<u8> {
        let at = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(path);
        std::fs::read(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()))
    }

    /// The admin trace of a decoded dossier: its JSON, masked.
    fn trace_of(d: &crate::canonical::Dossier) -> serde_json::Value {
        let mut v = serde_json::to_value(d).expect("a dossier serializes");
        mask_dossier_json(&mut v);
        v
    }

    /// Issue 18: one identifier, one mask, in every view. The journal keeps each system's payload
    /// masked by its `mask` module, the trace shows the canonical dossier masked, and a log line
    /// would print a raw record's `Debug`: the same NIR must read the same in all three (it read
    /// `***` in the journal and `1**************` in the trace), and the same Pôle emploi id too.
    #[test]
    fn each_identifier_is_masked_alike_in_the_journal_the_trace_and_the_logs() {
        let nir = "185077512345608";
        let shown_nir = Identifier::Nir.mask(nir);
        assert_eq!(shown_nir, "1**************");

        // OUIFORM.
        let body = fixture("ouiform/valid/acceptee.json");
        let journal: serde_json::Value =
            serde_json::from_slice(&crate::ouiform::mask::mask_payload(&body).expect("masked"))
                .expect("json");
        let dossier = crate::ouiform::decode(&body, &Default::default()).expect("valid");
        let trace = trace_of(&dossier);
        let read: crate::ouiform::model::Orientation =
            serde_json::from_slice(&body).expect("an orientation");
        let log = format!("{:?}", read.beneficiaire);
        let b = &journal["beneficiaire"];
        assert_eq!(b["nir"], shown_nir);
        assert_eq!(trace["trainee"]["nir"], shown_nir);
        assert!(log.contains(&format!("nir: {shown_nir:?}")), "{log}");
        for (field, canonical) in [("idNationalDE", "national"), ("idRegionalDE", "regional")] {
            assert_eq!(b[field], MASK, "{field}");
            assert_eq!(
                trace["trainee"]["pole_emploi_id"][canonical], MASK,
                "{field}"
            );
        }
        assert!(
            log.contains(&format!("id_national_de: Some({MASK:?})")),
            "{log}"
        );
        assert!(
            log.contains(&format!("id_regional_de: Some({MASK:?})")),
            "{log}"
        );
        for clear in [
            "a3f9c2e1-0b7d-4c6e-9f10-2d5e8b7a6c41",
            "0676932W",
            nir,
            "DUPONT",
        ] {
            assert!(!log.contains(clear), "{log}");
        }

        // ATEXO SEM.
        let xml = fixture("atexo_sem/valid/entre.xml");
        let journal =
            String::from_utf8(crate::atexo_sem::mask_export(&xml).expect("masked")).expect("UTF-8");
        let decoded = crate::atexo_sem::decode_document(
            &xml,
            crate::atexo_sem::Flow::Sync,
            &Default::default(),
        )
        .expect("valid");
        let trace = trace_of(&decoded[0].dossier);
        assert!(
            journal.contains(&format!("<nir>{shown_nir}</nir>")),
            "{journal}"
        );
        assert_eq!(trace["trainee"]["nir"], shown_nir);
        assert!(journal.contains(&format!("national=\"{MASK}\" regional=\"{MASK}\"")));
        assert_eq!(trace["trainee"]["pole_emploi_id"]["national"], MASK);

        // Pôle emploi: its journal copy and its record's `Debug`.
        let registration = serde_json::json!({
            "idInscription": 4100000001u64, "codeStatutInscription": "ICR",
            "idNationalDE": "A1B2C3D4", "idRegionalDE": "0676932W", "codeGeoDE": "044",
            "nirCertifie": "1850775123456", "idProjetAction": "PA0000123456", "aesRecue": false,
            "dateEntree": null, "listeModuleFormation": [],
        });
        let mut journal = registration.clone();
        crate::pole_emploi::mask::mask_registration(&mut journal);
        let read: crate::pole_emploi::model::Inscription =
            serde_json::from_value(registration).expect("a registration");
        let log = format!("{read:?}");
        let shown_nir13 = Identifier::Nir.mask("1850775123456");
        assert_eq!(journal["nirCertifie"], shown_nir13);
        assert!(
            log.contains(&format!("nir_certifie: {shown_nir13:?}")),
            "{log}"
        );
        assert_eq!(journal["idNationalDE"], MASK);
        assert!(
            log.contains(&format!("id_national_de: Some({MASK:?})")),
            "{log}"
        );
        assert!(
            !log.contains("A1B2C3D4") && !log.contains("0676932W"),
            "{log}"
        );
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let nir = Nir::new("185077512345608");
        assert_eq!(format!("{nir:?}"), "Nir(1**************)");
        assert_eq!(nir.to_string(), "1**************");
        let name = Personal::new("DUPONT".to_string());
        assert!(!format!("{name:?}{name}").contains("DUPONT"));
        assert_eq!(nir.nir13(), "1850775123456");
    }
}
