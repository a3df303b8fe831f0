//! The configuration reference (`passerelle config-reference`, `docs/configuration.md`), generated
//! from the settings structs themselves: their source (`settings.rs` and `settings/*.rs`, embedded
//! at build time) gives
//! every key, its type and its doc comment, and `config/default.toml` gives the default. A key
//! added to a struct therefore appears in the reference with no copy to keep in step, and a test
//! fails when the committed document is stale or a key has no description.

use std::collections::HashMap;

use crate::settings::DEFAULT_TOML;

/// The files that hold settings structs: the settings' own, then each posting system's section.
const SETTINGS_RS: [&str; 2] = [
    include_str!("settings.rs"),
    include_str!("settings/agora.rs"),
];

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

#[derive(Debug)]
struct Field {
    name: String,
    ty: String,
    doc: String,
}

/// The fields of every `pub struct` of `source`, with their doc comments.
fn structs(source: &str) -> HashMap<String, Vec<Field>> {
    let mut out = HashMap::new();
    let mut current: Option<(String, Vec<Field>)> = None;
    let mut doc: Vec<String> = Vec::new();
    for line in source.lines() {
        let t = line.trim();
        if let Some((name, fields)) = current.as_mut() {
            if t == "}" {
                out.insert(std::mem::take(name), std::mem::take(fields));
                current = None;
            } else if let Some(d) = t.strip_prefix("///") {
                doc.push(d.trim().to_string());
            } else if let Some(f) = t.strip_prefix("pub ") {
                if let Some((n, ty)) = f.split_once(':') {
                    fields.push(Field {
                        name: n.trim().to_string(),
                        ty: ty.trim().trim_end_matches(',').to_string(),
                        doc: doc.join(" "),
                    });
                }
                doc.clear();
            } else if !t.starts_with("#[") {
                doc.clear();
            }
        } else if let Some(rest) = t.strip_prefix("pub struct ") {
            if let Some(name) = rest.strip_suffix('{') {
                current = Some((name.trim().to_string(), Vec::new()));
                doc.clear();
            }
        }
    }
    out
}

fn unwrap_option(ty: &str) -> (&str, bool) {
    match ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
        Some(inner) => (inner, true),
        None => (ty, false),
    }
}

fn kind(ty: &str) -> String {
    let (inner, optional) = unwrap_option(ty);
    let base = match inner {
        "String" => "text".to_string(),
        "SecretString" => "secret text".to_string(),
        "PathBuf" => "path".to_string(),
        "bool" => "boolean".to_string(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "integer ≥ 0".to_string(),
        "i32" | "i64" => "integer".to_string(),
        "Vec<String>" => "list of text".to_string(),
        "Precedence" => "table: field group → list of systems".to_string(),
        "AgoraAuthMode" => "`bearer`, `command` or `signed`".to_string(),
        "SigningAlgorithm" => "`RS256` or `ES256`".to_string(),
        "BTreeMap<String, Vec<String>>" => "table: system → list of text".to_string(),
        other => other.to_string(),
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

/// Every key, in the order of the structs, from [`crate::settings::Settings`] down.
pub fn keys() -> Vec<Key> {
    let structs: HashMap<String, Vec<Field>> = SETTINGS_RS
        .iter()
        .chain(crate::systems::SETTINGS_RS.iter())
        .flat_map(|source| structs(source))
        .collect();
    let defaults: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
    let mut keys = Vec::new();
    walk(&structs, &defaults, "Settings", "", &mut keys);
    keys
}

fn walk(
    structs: &HashMap<String, Vec<Field>>,
    defaults: &toml::Table,
    name: &str,
    prefix: &str,
    keys: &mut Vec<Key>,
) {
    let Some(fields) = structs.get(name) else {
        return;
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    for f in fields {
        let key = format!("{prefix}{}", f.name);
        let (inner, _) = unwrap_option(&f.ty);
        // A section typed by its path (`crate::systems::<system>::<Section>`).
        let inner = inner.rsplit("::").next().unwrap_or(inner);
        if structs.contains_key(inner) {
            walk(structs, defaults, inner, &format!("{key}."), keys);
            continue;
        }
        // `<secret>_file` is the secret's other form: it goes with the secret's row.
        if let Some(secret) = f.name.strip_suffix("_file") {
            if names.contains(&secret) {
                continue;
            }
        }
        // The type says ≥ 0; the start-up check says more.
        let kind = if crate::settings::Settings::MORE_THAN_ZERO.contains(&key.as_str()) {
            "integer > 0".to_string()
        } else {
            kind(&f.ty)
        };
        keys.push(Key {
            default: default_of(defaults, &key),
            kind,
            meaning: f.doc.clone(),
            secret: inner == "SecretString",
            file_form: names.contains(&format!("{}_file", f.name).as_str()),
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
