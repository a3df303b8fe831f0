//! A registration with the job seeker's identifiers masked: the one masking of Pôle emploi's
//! answers, for the message journal and anything else that shows one.
//!
//! Masked: `nirCertifie`, `idNationalDE` and `idRegionalDE`, when present and not null, each by
//! its [`Identifier`]'s one mask (the NIR keeps its first character and length, as the admin
//! trace shows it; the ids become `***`). `idInscription`, `codeGeoDE` and the rest are kept.
//!
//! [`mask_unreadable`] is the stricter view of a registration that could not be read, kept for an
//! operator: fields Pôle emploi does not define are shown only by their type.

use serde_json::Value;

use crate::canonical::Identifier;

/// The personal fields of a registration, and what each is.
pub const PERSONAL_FIELDS: [(&str, Identifier); 3] = [
    ("nirCertifie", Identifier::Nir),
    ("idNationalDE", Identifier::PoleEmploiId),
    ("idRegionalDE", Identifier::PoleEmploiId),
];

/// What a registration's field is, when it is personal.
fn personal(field: &str) -> Option<Identifier> {
    PERSONAL_FIELDS
        .iter()
        .find(|(k, _)| *k == field)
        .map(|(_, identifier)| *identifier)
}

/// Masks a registration in place.
pub fn mask_registration(registration: &mut Value) {
    if let Some(fields) = registration.as_object_mut() {
        for (k, identifier) in PERSONAL_FIELDS {
            if let Some(v) = fields.get_mut(k) {
                *v = identifier.mask_json(v);
            }
        }
    }
}
/// The registration fields that say nothing of who the job seeker is, kept as sent.
const PLAIN_FIELDS: [&str; 6] = [
    "idInscription",
    "codeStatutInscription",
    "codeGeoDE",
    "idProjetAction",
    "aesRecue",
    "dateEntree",
];

/// One registration as it may be shown or kept (*inscription masquée*): the job seeker's
/// identifiers masked as everywhere else, the other fields Pôle emploi defines as sent, and any field it does not
/// define (or a registration that is not even an object) only by its JSON type, since nobody
/// knows what it holds. What an operator needs to see why it could not be read (a wrong type, a
/// missing field) survives; no personal value does.
pub fn mask_unreadable(item: &Value) -> Value {
    let Value::Object(fields) = item else {
        return Value::String(format!("<{}>", json_type(item)));
    };
    let masked = fields
        .iter()
        .map(|(k, v)| {
            let v = if let Some(identifier) = personal(k) {
                identifier.mask_json(v)
            } else if PLAIN_FIELDS.contains(&k.as_str()) && !v.is_object() && !v.is_array() {
                v.clone()
            } else if k == "listeModuleFormation" {
                mask_modules(v)
            } else {
                Value::String(format!("<{}>", json_type(v)))
            };
            (k.clone(), v)
        })
        .collect();
    Value::Object(masked)
}

fn mask_modules(v: &Value) -> Value {
    match v {
        Value::Array(modules) => Value::Array(
            modules
                .iter()
                .map(|m| match m {
                    Value::Object(fields) => Value::Object(
                        fields
                            .iter()
                            .map(|(k, v)| {
                                let dated = matches!(k.as_str(), "dateDebut" | "dateFin")
                                    && (v.is_string() || v.is_null());
                                let v = if dated {
                                    v.clone()
                                } else {
                                    Value::String(format!("<{}>", json_type(v)))
                                };
                                (k.clone(), v)
                            })
                            .collect(),
                    ),
                    other => Value::String(format!("<{}>", json_type(other))),
                })
                .collect(),
        ),
        Value::Null => Value::Null,
        other => Value::String(format!("<{}>", json_type(other))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
