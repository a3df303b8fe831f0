//! Wrappers that keep personal data out of logs: `Debug` and `Display` print a mask, serde sees the value.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What replaces a personal value in full: [`Personal`]'s `Display`, the journal's masked payloads.
/// Logs show a NIR through [`mask_nir`] instead, which keeps its sex digit and length.
pub const MASK: &str = "***";

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

/// Masks a NIR for logs and errors: only the sex digit survives, and the length.
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
    if let Some(nir) = t.get("nir").and_then(Value::as_str).map(mask_nir) {
        t.insert("nir".into(), Value::String(nir));
    }
    for k in ["birth_name", "usage_name", "first_names", "birth_date"] {
        if let Some(v) = t.get_mut(k).filter(|v| !v.is_null()) {
            *v = Value::String(MASK.into());
        }
    }
    if let Some(ids) = t.get_mut("pole_emploi_id").and_then(Value::as_object_mut) {
        for k in ["national", "regional"] {
            if let Some(v) = ids.get_mut(k).filter(|v| !v.is_null()) {
                *v = Value::String(MASK.into());
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
