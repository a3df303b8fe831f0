//! A minimal system that exists only in this crate's tests (`#[cfg(test)]`): the walkthrough of
//! `docs/adding-a-system.md`, done. Its records are a canonical dossier under an id,
//! `{"id": "EX-0001", "dossier": {…}}`, one a file. It was added as the walkthrough says: this
//! module with its `impl Source`, a variant of `System` and a line in `SOURCES`; the tests below
//! check that everything that iterates over the registry took it up with no other edit.

use std::io::BufRead;

use serde_json::Value;

use crate::canonical::{Dossier, SourceRef, State, System};
use crate::mapping::{FieldMap, MappingTable};
use crate::merge::FieldGroup;
use crate::rules::Block;
use crate::sources::{Checked, DocumentError, Reading, Record, Source};
use crate::violation::{rules_in_source_terms, Rule, Violation, Violations};

/// The example system.
#[derive(Debug, Clone, Copy)]
pub struct Example;

/// Its fields are the canonical ones under `/dossier`.
pub const TABLE: MappingTable = MappingTable {
    system: System::Example,
    one_based: false,
    rows: &[
        FieldMap {
            canonical: "/sources/0/id",
            system: "/id",
            note: "source system example",
        },
        FieldMap {
            canonical: "/trainee/nir",
            system: "/dossier/trainee/nir",
            note: "",
        },
        FieldMap {
            canonical: "/session",
            system: "/dossier/session",
            note: "",
        },
    ],
};

/// Reads one record: its id and its dossier, or what is wrong with it.
fn read(body: &[u8], reading: &Reading<'_>) -> Result<Record, Vec<Violation>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| vec![Violation::new("", Rule::JsonSyntax, "not JSON")])?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| vec![Violation::new("/id", Rule::FieldRequired, "is required")])?
        .to_string();
    let mut dossier: Dossier = value
        .get("dossier")
        .filter(|d| d.is_object())
        .cloned()
        .and_then(|mut d| {
            // Its sources are its own record: set below.
            d["sources"] = Value::Array(Vec::new());
            serde_json::from_value(d).ok()
        })
        .ok_or_else(|| {
            vec![Violation::new(
                "/dossier",
                Rule::SchemaOther,
                "is not a canonical dossier",
            )]
        })?;
    dossier.sources = vec![SourceRef {
        system: System::Example,
        id: id.clone(),
        version: None,
        updated_on: None,
    }];
    let violations = rules_in_source_terms(&dossier, &TABLE, "/", &reading.settings.rules);
    if violations.is_empty() {
        Ok(Record::of(dossier))
    } else {
        Err(violations)
    }
}

impl Source for Example {
    fn system(&self) -> System {
        System::Example
    }

    fn label(&self) -> &'static str {
        "Example"
    }

    fn record_id(&self) -> &'static str {
        "id"
    }

    fn mapping(&self) -> &'static MappingTable {
        &TABLE
    }

    fn required_blocks(&self, state: State) -> &'static [Block] {
        crate::rules::blocks_of_state(state)
    }

    fn mask_payload(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(body).ok()?;
        if let Some(trainee) = v
            .pointer_mut("/dossier/trainee")
            .and_then(Value::as_object_mut)
        {
            for value in trainee.values_mut() {
                *value = Value::String("***".into());
            }
        }
        serde_json::to_vec(&v).ok()
    }

    fn decode(&self, body: &[u8], reading: &Reading<'_>) -> Result<Vec<Record>, DocumentError> {
        read(body, reading)
            .map(|r| vec![r])
            .map_err(|v| DocumentError::Invalid(Violations(v)))
    }

    fn decode_file<'a>(
        &self,
        mut input: Box<dyn BufRead + Send + 'a>,
        reading: &Reading<'_>,
    ) -> Option<Box<dyn Iterator<Item = Checked> + 'a>> {
        let mut body = Vec::new();
        // A file that cannot be read to its end is the document's fault, not the record's.
        let fatal = input.read_to_end(&mut body).is_err();
        let outcome = if fatal {
            Err(vec![Violation::new("", Rule::JsonSyntax, "unreadable")])
        } else {
            read(&body, reading)
        };
        Some(Box::new(std::iter::once(Checked {
            id: outcome.as_ref().ok().map(|r| r.id.clone()),
            index: None,
            out_of_perimeter: None,
            outcome: outcome.map(|r| r.dossier),
            fatal,
        })))
    }

    fn encode(&self, dossier: &Dossier) -> Vec<u8> {
        let mut d = dossier.clone();
        let id = d.sources.first().map(|s| s.id.clone()).unwrap_or_default();
        d.sources.clear();
        serde_json::to_vec(&serde_json::json!({"id": id, "dossier": d})).unwrap_or_default()
    }

    /// Last on everything: it knows nothing better than the others.
    fn default_rank(&self, _group: FieldGroup) -> u8 {
        9
    }

    fn fuzz(&self, data: &[u8]) {
        let settings = crate::sources::DecodeSettings::default();
        if let Err(DocumentError::Invalid(v)) = self.decode(data, &Reading::sync(&settings)) {
            assert!(!v.0.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{file_source, source, SOURCES};

    /// What iterates over the registry takes the example up from its registry line alone.
    #[test]
    fn the_example_is_a_source_by_its_registry_lines_alone() {
        // Names: derived from the variant.
        assert!(System::ALL.contains(&System::Example));
        assert_eq!(System::Example.as_str(), "example");
        assert_eq!("example".parse::<System>().ok(), Some(System::Example));
        // The registry and its readers.
        assert_eq!(SOURCES.last().map(|s| s.system()), Some(System::Example));
        assert_eq!(source(System::Example).map(|s| s.label()), Some("Example"));
        assert!(
            file_source(System::Example).is_some(),
            "validate and the backfill read its files"
        );
        // The correspondence document has its column and rows.
        let doc = crate::mapping::render(crate::mapping::Format::Markdown);
        assert!(doc.contains("| example |"), "{doc}");
        assert!(doc.contains("/dossier/trainee/nir"), "{doc}");
        // The merge's default precedence ranks it, last.
        let precedence = crate::merge::Precedence::default();
        for group in FieldGroup::ALL {
            assert_eq!(
                precedence.order(group).last(),
                Some(&System::Example),
                "{group:?}"
            );
        }
        // The rules ask it for what it says it carries.
        assert_eq!(
            crate::rules::required_blocks(System::Example, State::Settled),
            crate::rules::blocks_of_state(State::Settled)
        );
        // Its fuzz target is listed with the others.
        assert!(crate::fuzzing::targets()
            .iter()
            .any(|(name, _)| name == "example_decode"));
    }

    /// A violation names the system's own field, through its mapping table.
    #[test]
    fn its_violations_name_its_own_fields() {
        let body = std::fs::read(
            crate::ouiform::tests::fixtures_dir("example/invalid")
                .join("nir.checksum--wrong-key.json"),
        )
        .expect("fixture");
        let settings = crate::sources::DecodeSettings::default();
        match Example.decode(&body, &Reading::sync(&settings)) {
            Err(DocumentError::Invalid(v)) => {
                assert!(
                    v.0.iter().any(|x| x.pointer == "/dossier/trainee/nir" && x.rule == Rule::NirChecksum),
                    "{v:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let masked = Example.mask_payload(&body).expect("masked");
        let masked = String::from_utf8(masked).expect("UTF-8");
        assert!(!masked.contains("\"nir\":\"1"), "{masked}");
    }
}
