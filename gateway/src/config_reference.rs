//! The configuration reference (`passerelle config-reference`, `docs/configuration.md`), generated
//! from the settings types themselves: their JSON Schema (`schemars`, derived on every settings
//! struct, so a doc comment is a key's meaning) gives every key, its type and its description, and
//! `config/default.toml` gives the default. A key added to a struct therefore appears in the
//! reference with no copy to keep in step, and a test fails when the committed document is stale or
//! a key has no description.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::settings::{Settings, DEFAULT_TOML};

/// A secret in the settings' schema: text that is never logged (`SecretString`).
#[derive(Debug)]
pub struct Secret;

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "x-kind": "secret text" })
    }
}

/// A path in the settings' schema (`PathBuf`).
#[derive(Debug)]
pub struct FilePath;

impl JsonSchema for FilePath {
    fn schema_name() -> Cow<'static, str> {
        "FilePath".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "x-kind": "path" })
    }
}

/// The merge's precedence in the settings' schema: a table from a group of fields to systems.
#[derive(Debug)]
pub struct PrecedenceTable;

impl JsonSchema for PrecedenceTable {
    fn schema_name() -> Cow<'static, str> {
        "PrecedenceTable".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": { "type": "array", "items": { "type": "string" } },
            "x-kind": "table: field group → list of systems"
        })
    }
}

/// One configuration key, as an operator sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Dotted path (`agora.base_url`), the environment variable being
    /// `PASSERELLE__AGORA__BASE_URL`.
    pub key: String,
    /// The type in an operator's words.
    pub kind: String,
    /// The embedded default, as TOML, or empty when there is none.
    pub default: String,
    /// The doc comment of the field.
    pub meaning: String,
    /// A secret: never logged.
    pub secret: bool,
    /// May be given as a file instead, with `<key>_file`.
    pub file_form: bool,
}

/// The JSON Schema of the settings (draft 2020-12), every struct's doc comments as descriptions.
pub fn schema() -> Value {
    schemars::schema_for!(Settings).to_value()
}

/// A property's own schema: `$ref`s followed, an `Option`'s `null` alternative left out.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> (&'a Value, bool) {
    let mut optional = false;
    let mut s = schema;
    loop {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(def) => s = def,
                None => return (s, optional),
            }
            continue;
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            let not_null: Vec<&Value> = any
                .iter()
                .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if not_null.len() == 1 && any.len() == 2 {
                optional = true;
                s = not_null[0];
                continue;
            }
        }
        return (s, optional);
    }
}

/// A property's description: on the property, else on its type.
fn meaning(property: &Value, resolved: &Value) -> String {
    property
        .get("description")
        .or_else(|| resolved.get("description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The values an enumeration allows (`enum`, or `oneOf` of `const`s when its variants are
/// documented).
fn allowed(s: &Value) -> Option<Vec<String>> {
    let text = |v: &Value| v.as_str().map(|s| format!("`{s}`"));
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return Some(values.iter().filter_map(text).collect());
    }
    let one_of = s.get("oneOf").and_then(Value::as_array)?;
    one_of
        .iter()
        .map(|v| v.get("const").and_then(text))
        .collect()
}

/// The type in an operator's words.
fn kind(s: &Value, optional: bool) -> String {
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let optional = optional || types.contains(&"null");
    let main = types.iter().copied().find(|t| *t != "null").unwrap_or("");
    let base = if let Some(k) = s.get("x-kind").and_then(Value::as_str) {
        k.to_string()
    } else if let Some(values) = allowed(s) {
        match values.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    } else {
        match main {
            "string" => "text".to_string(),
            "boolean" => "boolean".to_string(),
            "integer" => {
                let unsigned = s.get("minimum").and_then(Value::as_f64) == Some(0.0)
                    || s.get("format")
                        .and_then(Value::as_str)
                        .is_some_and(|f| f.starts_with("uint"));
                if unsigned { "integer ≥ 0" } else { "integer" }.to_string()
            }
            "array" => format!("list of {}", kind(&s["items"], false)),
            "object" => format!(
                "table: system → {}",
                kind(&s["additionalProperties"], false)
            ),
            other => other.to_string(),
        }
    };
    if optional {
        format!("{base}, optional")
    } else {
        base
    }
}

fn default_of(defaults: &toml::Table, key: &str) -> String {
    let mut value: Option<&toml::Value> = None;
    let mut table = Some(defaults);
    for part in key.split('.') {
        value = table.and_then(|t| t.get(part));
        table = value.and_then(toml::Value::as_table);
    }
    match value {
        None => String::new(),
        Some(toml::Value::Table(t)) if t.is_empty() => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Every key, section by section, from [`Settings`] down.
pub fn keys() -> Vec<Key> {
    let root = schema();
    let defaults: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
    let mut keys = Vec::new();
    walk(&root, &root, &defaults, "", &mut keys);
    keys
}

fn walk(root: &Value, schema: &Value, defaults: &toml::Table, prefix: &str, keys: &mut Vec<Key>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        let key = format!("{prefix}{name}");
        let (resolved, optional) = resolve(root, property);
        if resolved.get("properties").is_some() {
            walk(root, resolved, defaults, &format!("{key}."), keys);
            continue;
        }
        // `<secret>_file` is the secret's other form: it goes with the secret's row.
        if let Some(secret) = name.strip_suffix("_file") {
            if properties.contains_key(secret) {
                continue;
            }
        }
        // The type says ≥ 0; the start-up check says more.
        let kind = if Settings::MORE_THAN_ZERO.contains(&key.as_str()) {
            "integer > 0".to_string()
        } else {
            kind(resolved, optional)
        };
        keys.push(Key {
            default: default_of(defaults, &key),
            kind,
            meaning: meaning(property, resolved),
            secret: resolved.get("x-kind").and_then(Value::as_str) == Some("secret text"),
            file_form: properties.contains_key(&format!("{name}_file")),
            key,
        });
    }
}

/// The reference as Markdown: a table per section.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the settings structs by `passerelle config-reference`: do not edit.\n\n\
         Layers, each overriding the previous one: `config/default.toml` (embedded in the binary), \
         the file given with `--config`, then environment variables `PASSERELLE__SECTION__KEY` \
         (double underscore between levels, e.g. `PASSERELLE__AGORA__BASE_URL`; lists are \
         comma-separated). Unknown keys are refused at start-up with their name. A secret may \
         instead be given as a file with the key's `_file` form (e.g. `agora.token_file`); \
         secrets are never logged.\n",
    );
    let mut section = String::new();
    for k in keys() {
        let top = k.key.split('.').next().unwrap_or_default().to_string();
        if top != section {
            out.push_str(&format!(
                "\n## `[{top}]`\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
            ));
            section = top;
        }
        let default = if k.default.is_empty() {
            "—".to_string()
        } else {
            format!("`{}`", k.default.replace('|', "\\|"))
        };
        let mut meaning = k.meaning.replace('|', "\\|");
        match (k.secret, k.file_form) {
            (true, true) => meaning.push_str(&format!(" Secret; or `{}_file`.", k.key)),
            (true, false) => meaning.push_str(" Secret (never logged)."),
            (false, true) => meaning.push_str(&format!(" Or `{}_file`.", k.key)),
            (false, false) => {}
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.key,
            k.kind,
            default,
            meaning.trim()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_defaults_is_in_the_reference_and_described() {
        let keys = keys();
        let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        for must in [
            "server.bind",
            "ledger.url",
            "queue.url",
            "agora.base_url",
            "agora.token",
            "auth.tokens.admin",
            "ouiform.hmac_secret",
            "pole_emploi.client_secret",
            "perimeter.backfill_since",
            "retry.max_attempts",
            "backfill.lot_size",
            "data.dir",
        ] {
            assert!(names.contains(&must), "{must} missing from {names:?}");
        }
        let undescribed: Vec<&str> = keys
            .iter()
            .filter(|k| k.meaning.is_empty())
            .map(|k| k.key.as_str())
            .collect();
        assert!(
            undescribed.is_empty(),
            "keys without a doc comment: {undescribed:?}"
        );
        // Every leaf of config/default.toml is a key of the reference.
        let defaults: toml::Table = DEFAULT_TOML.parse().expect("defaults");
        let mut leaves = Vec::new();
        fn leaves_of(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(inner) if !inner.is_empty() => {
                        leaves_of(inner, &format!("{prefix}{k}."), out);
                    }
                    toml::Value::Table(_) => {}
                    _ => out.push(format!("{prefix}{k}")),
                }
            }
        }
        leaves_of(&defaults, "", &mut leaves);
        for leaf in leaves {
            assert!(
                names.contains(&leaf.as_str()),
                "{leaf} is not in the reference"
            );
        }
    }

    #[test]
    fn secrets_are_marked_and_their_file_form_folded() {
        let keys = keys();
        let token = keys.iter().find(|k| k.key == "agora.token").expect("token");
        assert!(token.secret && token.file_form);
        let ledger = keys.iter().find(|k| k.key == "ledger.url").expect("ledger");
        assert!(ledger.secret && !ledger.file_form);
        assert!(!keys.iter().any(|k| k.key == "agora.token_file"));
        assert!(markdown().contains("Secret; or `agora.token_file`."));
        let bind = keys.iter().find(|k| k.key == "server.bind").expect("bind");
        assert_eq!(bind.default, "\"127.0.0.1:8080\"");
        assert!(!bind.secret);
    }
}
