//! The JSON Schemas (draft 2020-12) of the canonical dossier and of each system's JSON payloads,
//! embedded in the binary and compiled once per process.
//!
//! The `.json` files under `schemas/json/` are the reference: operators and partner systems can read
//! them as they are. [`check`] validates a value and returns every violation with its JSON pointer,
//! the failed keyword and a sentence that never quotes the value (it may be personal data).

use std::sync::OnceLock;

use serde_json::Value;

macro_rules! schemas {
    ($($variant:ident => $file:literal : $doc:literal),+ $(,)?) => {
        /// One schema of the set.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SchemaId {
            $(#[doc = $doc] $variant),+
        }
        impl SchemaId {
            pub const ALL: &'static [SchemaId] = &[$(SchemaId::$variant),+];
            /// The file name under `schemas/json/`.
            pub fn file(self) -> &'static str {
                match self { $(SchemaId::$variant => $file),+ }
            }
            /// The schema's text.
            pub fn source(self) -> &'static str {
                match self { $(SchemaId::$variant => include_str!(concat!("../json/", $file))),+ }
            }
            fn index(self) -> usize {
                SchemaId::ALL.iter().position(|s| *s == self).unwrap_or(0)
            }
        }
    };
}

schemas! {
    Dossier => "dossier.schema.json": "The canonical dossier.",
    OuiformOrientation => "ouiform/orientation.schema.json": "An OUIFORM orientation (contract §2.2).",
    PoleEmploiRegistrations => "pole_emploi/registrations.schema.json": "A Pôle emploi list of registrations of a session (§2.3).",
    PoleEmploiToken => "pole_emploi/token.schema.json": "A Pôle emploi OAuth2 token answer (§2.3).",
    PoleEmploiError => "pole_emploi/error.schema.json": "A Pôle emploi error body (§2.3).",
    AgoraDossier => "agora/dossier.schema.json": "An AGORA dossier body, `POST /dossiers` (§3).",
    AgoraEntree => "agora/entree.schema.json": "An AGORA entry body (§3).",
    AgoraSortie => "agora/sortie.schema.json": "An AGORA exit body (§3).",
    AgoraSolde => "agora/solde.schema.json": "An AGORA settlement body (§3).",
    AgoraAnnulation => "agora/annulation.schema.json": "An AGORA cancellation body (§3).",
    AgoraRepriseLine => "agora/reprise_line.schema.json": "One NDJSON line of an AGORA backfill lot (§3).",
    AgoraAnswer => "agora/answer.schema.json": "AGORA's answer bodies: number, search result, anomalies, state conflict (§3).",
    AgoraRepriseReport => "agora/reprise_report.schema.json": "AGORA's report on a backfill lot (§3).",
}

/// A failed JSON Schema constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// JSON pointer to the offending value (for `required`, to the missing property).
    pub pointer: String,
    /// The JSON Schema keyword that failed (`required`, `type`, `pattern`, …).
    pub keyword: &'static str,
    /// What is wrong, without the value.
    pub detail: String,
}

/// Why a schema of the set could not be compiled: a bug in the build, caught by a test.
#[derive(Debug)]
pub struct CompileError {
    pub schema: &'static str,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema {} does not compile: {}",
            self.schema, self.message
        )
    }
}

impl std::error::Error for CompileError {}

fn compile(id: SchemaId) -> Result<jsonschema::Validator, CompileError> {
    let err = |message: String| CompileError {
        schema: id.file(),
        message,
    };
    let schema: Value = serde_json::from_str(id.source()).map_err(|e| err(e.to_string()))?;
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| err(e.to_string()))
}

static VALIDATORS: OnceLock<Vec<Result<jsonschema::Validator, CompileError>>> = OnceLock::new();

fn validators() -> &'static [Result<jsonschema::Validator, CompileError>] {
    VALIDATORS.get_or_init(|| SchemaId::ALL.iter().map(|&id| compile(id)).collect())
}

/// Compiles every schema now (at start-up), so a broken schema stops the process before the first
/// message rather than at it.
pub fn compile_all() -> Result<(), &'static CompileError> {
    for v in validators() {
        if let Err(e) = v {
            return Err(e);
        }
    }
    Ok(())
}

/// Validates `value` against schema `id`; every violation, in document order.
///
/// # Panics
/// Never at run time for the embedded schemas: `compile_all` is tested, and the gateway calls it at
/// start-up. Should one not compile anyway, the value is reported as one violation of that schema.
pub fn check(id: SchemaId, value: &Value) -> Vec<SchemaViolation> {
    check_within(id, value, usize::MAX, None).listed
}

/// What [`check_within`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// The first violations found, at most the cap asked for, in document order.
    pub listed: Vec<SchemaViolation>,
    /// Violations found past the cap: counted, never described.
    pub unlisted: usize,
    /// The deadline passed before every constraint was checked: the value was not judged whole.
    pub over_budget: bool,
}

/// [`check`] for a value a hostile caller may have built: at most `cap` violations are described
/// (the rest only counted), and checking stops once `deadline` has passed.
///
/// Each property a closed object does not define is a violation of its own, at its own pointer,
/// as each unknown XML element or attribute is: so a body of a million unknown properties is cut
/// at the cap like any other long list, instead of giving one detail that quotes a million names.
pub fn check_within(
    id: SchemaId,
    value: &Value,
    cap: usize,
    deadline: Option<std::time::Instant>,
) -> Checked {
    let mut found = Checked::default();
    let validator = match &validators()[id.index()] {
        Ok(v) => v,
        Err(e) => {
            found.listed.push(SchemaViolation {
                pointer: String::new(),
                keyword: "schema",
                detail: e.to_string(),
            });
            return found;
        }
    };
    for e in validator.iter_errors(value) {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            found.over_budget = true;
            break;
        }
        use jsonschema::error::ValidationErrorKind as K;
        let unexpected = match e.kind() {
            K::AdditionalProperties { unexpected } => Some(("additionalProperties", unexpected)),
            K::UnevaluatedProperties { unexpected } => Some(("unevaluatedProperties", unexpected)),
            _ => None,
        };
        let Some((keyword, names)) = unexpected else {
            if found.listed.len() < cap {
                found.listed.push(describe(e));
            } else {
                found.unlisted += 1;
            }
            continue;
        };
        let object = e.instance_path().to_string();
        let room = cap.saturating_sub(found.listed.len());
        found.unlisted += names.len().saturating_sub(room);
        found
            .listed
            .extend(names.iter().take(room).map(|name| SchemaViolation {
                pointer: format!("{object}/{}", escape(&shown_name(name))),
                keyword,
                detail: "is a property the schema does not define".to_string(),
            }));
    }
    found
}

/// Longest property name written whole in a pointer: the schemas' longest is under 32 bytes.
const NAME_SHOWN: usize = 64;

/// An unknown property's name as a pointer shows it: cut (and marked `…`) past [`NAME_SHOWN`]
/// bytes, so that a name of megabytes does not come back in the answer.
fn shown_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= NAME_SHOWN {
        return name.into();
    }
    let mut cut = NAME_SHOWN;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &name[..cut]).into()
}

/// A property name as a JSON pointer token (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn describe(e: jsonschema::ValidationError<'_>) -> SchemaViolation {
    use jsonschema::error::ValidationErrorKind as K;
    let pointer = e.instance_path().to_string();
    let (keyword, pointer, detail) = match e.kind() {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            (
                "required",
                format!("{pointer}/{}", escape(name)),
                "is required".to_string(),
            )
        }
        K::Type { kind } => ("type", pointer, format!("must be {}", type_name(kind))),
        K::Enum { options } => ("enum", pointer, format!("must be one of {options}")),
        K::Constant { expected_value } => ("const", pointer, format!("must be {expected_value}")),
        K::Pattern { pattern } => (
            "pattern",
            pointer,
            format!("must match the pattern {pattern}"),
        ),
        K::Format { format } => ("format", pointer, format!("must be a valid {format}")),
        K::MinLength { limit } => (
            "minLength",
            pointer,
            format!("must have at least {limit} character(s)"),
        ),
        K::MaxLength { limit } => (
            "maxLength",
            pointer,
            format!("must have at most {limit} character(s)"),
        ),
        K::Minimum { limit } => ("minimum", pointer, format!("must be at least {limit}")),
        K::Maximum { limit } => ("maximum", pointer, format!("must be at most {limit}")),
        K::ExclusiveMinimum { limit } => (
            "exclusiveMinimum",
            pointer,
            format!("must be more than {limit}"),
        ),
        K::ExclusiveMaximum { limit } => (
            "exclusiveMaximum",
            pointer,
            format!("must be less than {limit}"),
        ),
        K::MultipleOf { .. } => ("multipleOf", pointer, "must be a whole number".to_string()),
        // One violation per property: see `check_within`, which never comes here with these.
        K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } => (
            "additionalProperties",
            pointer,
            "has properties the schema does not define".to_string(),
        ),
        K::MinItems { limit } => (
            "minItems",
            pointer,
            format!("must have at least {limit} item(s)"),
        ),
        K::MaxItems { limit } => (
            "maxItems",
            pointer,
            format!("must have at most {limit} item(s)"),
        ),
        K::OneOfNotValid { .. } | K::AnyOf { .. } => (
            "oneOf",
            pointer,
            "matches none of the allowed shapes".to_string(),
        ),
        K::OneOfMultipleValid { .. } => {
            ("oneOf", pointer, "matches more than one shape".to_string())
        }
        K::FalseSchema => ("false", pointer, "is not allowed here".to_string()),
        _ => ("other", pointer, "does not satisfy the schema".to_string()),
    };
    SchemaViolation {
        pointer,
        keyword,
        detail,
    }
}

/// "a string", "an integer or null": the JSON types a value may have, in words.
fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    use jsonschema::error::TypeKind;
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "array" => "an array".to_string(),
        "integer" => "an integer".to_string(),
        "object" => "an object".to_string(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(ts) => ts.iter().map(|t| one(&t)).collect::<Vec<_>>().join(" or "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_compiles() {
        for id in SchemaId::ALL {
            let v = compile(*id);
            assert!(
                v.is_ok(),
                "{}",
                v.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
        assert!(compile_all().is_ok());
    }

    #[test]
    fn every_schema_is_2020_12_and_describes_its_properties() {
        for id in SchemaId::ALL {
            let v: Value = serde_json::from_str(id.source()).expect("valid JSON");
            assert_eq!(
                v["$schema"],
                "https://json-schema.org/draft/2020-12/schema",
                "{}",
                id.file()
            );
        }
    }

    #[test]
    fn violations_never_quote_the_value() {
        let orientation = serde_json::json!({"beneficiaire": {"nir": "SECRET-NIR-VALUE"}});
        let errors = check(SchemaId::OuiformOrientation, &orientation);
        assert!(!errors.is_empty());
        for e in errors {
            assert!(!e.detail.contains("SECRET"), "{e:?}");
        }
    }
}
