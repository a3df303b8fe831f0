//! The `[auth.tokens]` settings (contract §6): the bearer token of each posting system of the
//! registry, by its name, and the operators' tokens.

use std::collections::BTreeMap;
use std::path::PathBuf;

use passerelle_adapters::canonical::System;
use secrecy::SecretString;
use serde::Deserialize;

/// Bearer tokens accepted per caller; missing ones are generated into `data.dir/credentials`.
///
/// Each posting system of the registry ([`crate::systems::POSTING`]) has its key,
/// `auth.tokens.<system>` (or `<system>_file`): read by name from the registry, so that a new
/// system adds no field here. Any other key is refused, naming it.
#[derive(Debug, Clone, Default)]
pub struct TokenSettings {
    /// Each posting system's token: inline, and as a file.
    pub systems: BTreeMap<System, (Option<SecretString>, Option<PathBuf>)>,
    /// The operators' token (admin routes).
    pub admin: Option<SecretString>,
    pub admin_file: Option<PathBuf>,
    /// A second operators' token whose holder also sees a dossier's personal fields unmasked in
    /// `GET /v1/dossiers/{id}`. Never generated: unset, nobody can unmask.
    pub admin_personal_data: Option<SecretString>,
    pub admin_personal_data_file: Option<PathBuf>,
}

/// The operators' keys of `auth.tokens`, with their meaning (the configuration reference's).
const ADMIN_TOKENS: [(&str, &str); 2] = [
    ("admin", "The operators' token (admin routes)."),
    (
        "admin_personal_data",
        "A second operators' token whose holder also sees a dossier's personal fields unmasked \
         in `GET /v1/dossiers/{id}`. Never generated: unset, nobody can unmask.",
    ),
];

impl TokenSettings {
    /// A posting system's token, inline and as a file (`auth.tokens.<system>`).
    pub fn of(&self, system: System) -> (&Option<SecretString>, &Option<PathBuf>) {
        self.systems
            .get(&system)
            .map_or((&None, &None), |(inline, file)| (inline, file))
    }

    /// The keys `auth.tokens` takes, without their `_file` form: each posting system's, then the
    /// operators'.
    fn names() -> Vec<String> {
        crate::systems::POSTING
            .iter()
            .map(|p| snake(p.system()))
            .chain(ADMIN_TOKENS.iter().map(|(name, _)| (*name).to_string()))
            .collect()
    }
}

/// A system's name as the settings' keys spell it (`atexo_sem`).
fn snake(system: System) -> String {
    system.as_str().replace('-', "_")
}

impl<'de> Deserialize<'de> for TokenSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut t = TokenSettings::default();
        for (key, value) in raw {
            let (name, is_file) = match key.strip_suffix("_file") {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let (inline, file) = match name {
                "admin" => (&mut t.admin, &mut t.admin_file),
                "admin_personal_data" => {
                    (&mut t.admin_personal_data, &mut t.admin_personal_data_file)
                }
                other => match crate::systems::POSTING
                    .iter()
                    .find(|p| snake(p.system()) == other)
                {
                    Some(p) => {
                        let (inline, file) = t.systems.entry(p.system()).or_default();
                        (inline, file)
                    }
                    None => {
                        let expected: Vec<String> = TokenSettings::names()
                            .into_iter()
                            .flat_map(|n| [format!("`{n}`"), format!("`{n}_file`")])
                            .collect();
                        return Err(serde::de::Error::custom(format!(
                            "unknown field `{key}`, expected one of {}",
                            expected.join(", ")
                        )));
                    }
                },
            };
            if is_file {
                *file = Some(PathBuf::from(value));
            } else {
                *inline = Some(SecretString::from(value));
            }
        }
        Ok(t)
    }
}

/// Its schema lists each posting system's key from the registry, as the derive would have.
impl schemars::JsonSchema for TokenSettings {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TokenSettings".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let secret = g.subschema_for::<Option<crate::config_reference::Secret>>();
        let file = g.subschema_for::<Option<crate::config_reference::FilePath>>();
        let described = |meaning: String| {
            let mut s = secret.clone();
            s.insert("description".into(), meaning.into());
            s
        };
        let mut properties = serde_json::Map::new();
        for p in crate::systems::POSTING {
            let label = passerelle_adapters::sources::source(p.system())
                .map_or(p.system().as_str(), |s| s.label());
            let name = snake(p.system());
            properties.insert(name.clone(), described(format!("{label}'s token.")).into());
            properties.insert(format!("{name}_file"), file.clone().into());
        }
        for (name, meaning) in ADMIN_TOKENS {
            properties.insert(name.into(), described(meaning.into()).into());
            properties.insert(format!("{name}_file"), file.clone().into());
        }
        schemars::json_schema!({
            "type": "object",
            "description": "Bearer tokens accepted per caller; missing ones are generated into `data.dir/credentials`.",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The key of a posting system's token: `auth.tokens.<system in snake_case>`.
pub fn token_key(system: System) -> String {
    format!("auth.tokens.{}", snake(system))
}
