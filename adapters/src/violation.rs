//! Violations: what is wrong with a payload, where, and under which rule.
//!
//! Every rejection passerelle makes is a list of [`Violation`]s. The `rule` is a stable dotted code
//! (metrics count by it, operators filter dead letters by it); the `pointer` names the field in the
//! payload as submitted (a JSON pointer, or an XPath-like path into XML); the `detail` says what is
//! wrong with the value *without quoting it*, since it may be personal data.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! rules {
    ($($variant:ident = $code:literal : $doc:literal),+ $(,)?) => {
        /// A stable rule code. The dotted spelling is part of the contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $(#[doc = $doc] $variant),+
        }
        impl Rule {
            /// Every rule, in declaration order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),+];
            pub fn code(self) -> &'static str {
                match self { $(Rule::$variant => $code),+ }
            }
            /// One sentence on what the rule checks.
            pub fn description(self) -> &'static str {
                match self { $(Rule::$variant => $doc),+ }
            }
            pub fn from_code(code: &str) -> Option<Rule> {
                match code { $($code => Some(Rule::$variant),)+ _ => None }
            }
        }
    };
}

rules! {
    XmlSyntax = "xml.syntax": "The XML document is not well-formed.",
    XmlDoctype = "xml.doctype": "DTDs and entity declarations are refused (no entity expansion).",
    XmlEncoding = "xml.encoding": "The declared encoding is neither UTF-8 nor ISO-8859-1, or the bytes do not match it.",
    XmlEncodingMismatch = "xml.encoding.mismatch": "The document declares ISO-8859-1 but a value's bytes are UTF-8 (read as declared, it would be mojibake such as \"Ã‰LODIE\").",
    XmlRoot = "xml.root": "The root element is not the one expected.",
    XmlUnexpected = "xml.unexpected": "An element or attribute the format does not define.",
    XmlTruncated = "xml.truncated": "Not a fault in itself: the list of violations stops here (at most 100 per dossier, 1,000 per document, or decoding stopped at its time budget); its detail says how many more were found.",
    JsonSyntax = "json.syntax": "The body is not valid JSON.",
    SchemaRequired = "schema.required": "A required property is missing.",
    SchemaType = "schema.type": "The value has the wrong JSON type.",
    SchemaEnum = "schema.enum": "The value is not one of the allowed values.",
    SchemaPattern = "schema.pattern": "The value does not have the expected format.",
    SchemaFormat = "schema.format": "The value does not match its declared format (date, date-time).",
    SchemaLength = "schema.length": "The value is too short or too long.",
    SchemaRange = "schema.range": "The number is out of its allowed range.",
    SchemaAdditional = "schema.additional_property": "A property the schema does not define.",
    SchemaItems = "schema.items": "The array has too few or too many items.",
    SchemaOther = "schema.other": "Another JSON Schema constraint failed.",
    FieldRequired = "field.required": "A required field is missing or empty.",
    FieldLength = "field.length": "The value is longer than the field allows.",
    DateFormat = "date.format": "The date is not a real date in the expected format (JJ/MM/AAAA or YYYY-MM-DD).",
    NumberFormat = "number.format": "The value is not a whole number in range.",
    AmountFormat = "amount.format": "The amount is not euros with at most two decimals (decimal comma), or is negative.",
    BooleanFormat = "boolean.format": "The flag is not O or N.",
    EnumValue = "enum.value": "The code is not one of the values the format defines.",
    NirLength = "nir.length": "The NIR has neither 13 nor 15 characters.",
    NirFormat = "nir.format": "The NIR's sex, month or department positions are not valid.",
    NirChecksum = "nir.checksum": "The NIR's key is not 97 minus the first 13 characters modulo 97.",
    SiretFormat = "siret.format": "The SIRET is not 14 digits.",
    SiretLuhn = "siret.luhn": "The SIRET fails its Luhn check (La Poste: its digit sum is not a multiple of 5).",
    IntercarifFormat = "intercarif.format": "The Intercarif number is not 1 to 25 letters, digits, '_' or '-'.",
    FormacodeFormat = "formacode.format": "The Formacode is not 5 digits.",
    FormacodeVersion = "formacode.version": "The Formacode has no version (such as V12).",
    CertificationFormat = "certification.format": "The certification is not RNCP or RS followed by digits.",
    PostalCodeFormat = "postal_code.format": "The postal code is not 5 digits.",
    InseeFormat = "insee.format": "The INSEE commune code is not 5 characters (2A/2B for Corsica).",
    FunderCode = "funder.code": "The funder code is not in LHEO's dict-financeurs.",
    FundingRequired = "funding.required": "The dossier has no funding.",
    DateSession = "date.session": "The session ends before it starts.",
    DateEntry = "date.entry": "The entry date is before the session start (beyond the tolerance).",
    DateExit = "date.exit": "The exit date is before the entry date.",
    DateBirth = "date.birth": "The birth date is not plausible for a trainee.",
    DateCancellation = "date.cancellation": "The cancellation date is after the entry it should have preceded.",
    StatusRequired = "status.required": "The dossier's state requires a block or field that is missing.",
    LifecycleTransition = "lifecycle.transition": "The new state cannot follow the dossier's current state.",
}

impl Rule {
    /// Whether a violation of this rule is about the payload's shape rather than its meaning.
    pub fn is_syntax(self) -> bool {
        matches!(self, Rule::XmlSyntax | Rule::JsonSyntax | Rule::XmlEncoding)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Rule::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown rule code {code:?}")))
    }
}

/// One thing wrong with a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Where: JSON pointer into submitted JSON, XPath-like path into submitted XML.
    pub pointer: String,
    pub rule: Rule,
    /// What is wrong, in a sentence that never quotes a personal value.
    pub detail: String,
}

impl Violation {
    pub fn new(pointer: impl Into<String>, rule: Rule, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            rule,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.pointer, self.detail, self.rule)
    }
}

// ---------------------------------------------------------------------------------------------
// The limits of a hostile post, shared by every inbound format
// ---------------------------------------------------------------------------------------------

/// Violations listed per dossier (an orientation is one; so is each piece of an ATEXO SEM
/// export outside its dossiers); the others are counted, and the list ends with one
/// `xml.truncated` entry saying how many. A million unknown fields then cost a counter, not a
/// million formatted pointers in the answer.
pub const MAX_PER_DOSSIER: usize = 100;
/// Violations listed per posted document; the others are counted.
pub const MAX_PER_DOCUMENT: usize = 1000;

/// The `xml.truncated` entry that ends a list of violations cut short: `count` more were found
/// `where_` ("in this dossier", "in this document"). The rule's name is older than the JSON
/// routes; it is one marker for every format, which callers (and the `truncated` flag of a
/// problem body) look for.
pub fn truncated(pointer: &str, count: usize, where_: &str) -> Violation {
    Violation::new(
        pointer,
        Rule::XmlTruncated,
        format!(
            "{count} more violation(s) {where_} were found and are not listed (at most \
             {MAX_PER_DOSSIER} are listed per dossier and {MAX_PER_DOCUMENT} per document)"
        ),
    )
}

/// Why a posted document is not accepted, once decoded within a deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Every violation found (within the caps above, then an `xml.truncated` entry).
    #[error("{0}")]
    Invalid(Violations),
    /// The deadline passed before the document could be judged: nothing wrong was found in the
    /// `dossiers_read` dossiers read so far, and the rest was not read.
    #[error("decoding stopped at its time budget after {dossiers_read} dossier(s)")]
    OverBudget { dossiers_read: usize },
}

/// A non-empty list of violations, as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violation(s)", self.0.len())?;
        for v in &self.0 {
            write!(f, "; {v}")?;
        }
        Ok(())
    }
}

/// The rule a failed JSON Schema keyword stands for.
pub fn schema_rule(keyword: &str) -> Rule {
    match keyword {
        "required" => Rule::SchemaRequired,
        "type" => Rule::SchemaType,
        "enum" | "const" => Rule::SchemaEnum,
        "pattern" => Rule::SchemaPattern,
        "format" => Rule::SchemaFormat,
        "minLength" | "maxLength" => Rule::SchemaLength,
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
            Rule::SchemaRange
        }
        "additionalProperties" | "unevaluatedProperties" => Rule::SchemaAdditional,
        "minItems" | "maxItems" => Rule::SchemaItems,
        _ => Rule::SchemaOther,
    }
}

/// Validates a JSON payload against one of the embedded schemas, as violations.
pub fn check_schema(id: passerelle_schemas::SchemaId, value: &serde_json::Value) -> Vec<Violation> {
    passerelle_schemas::check(id, value)
        .into_iter()
        .map(|v| Violation::new(v.pointer, schema_rule(v.keyword), v.detail))
        .collect()
}

/// [`check_schema`] within the caps of a hostile post: at most [`MAX_PER_DOSSIER`] violations
/// listed, the others counted; stops at `deadline`. Gives the listed violations, how many more
/// were found, and whether the deadline stopped it.
pub fn check_schema_within(
    id: passerelle_schemas::SchemaId,
    value: &serde_json::Value,
    deadline: Option<std::time::Instant>,
) -> (Vec<Violation>, usize, bool) {
    let found = passerelle_schemas::check_within(id, value, MAX_PER_DOSSIER, deadline);
    let listed = found
        .listed
        .into_iter()
        .map(|v| Violation::new(v.pointer, schema_rule(v.keyword), v.detail))
        .collect();
    (listed, found.unlisted, found.over_budget)
}

/// Runs the domain rules on a decoded dossier and names each violation by the path of the payload
/// it came from: `prefix` (such as `/exportSEM/dossier[3]/`) and the system's mapping table.
pub fn rules_in_source_terms(
    dossier: &crate::canonical::Dossier,
    table: &crate::mapping::MappingTable,
    prefix: &str,
    settings: &crate::rules::RuleSettings,
) -> Vec<Violation> {
    crate::rules::validate(dossier, table.system, settings)
        .into_iter()
        .map(|mut v| {
            v.pointer = match table.locate(&v.pointer) {
                Some(path) => format!("{prefix}{}", path.trim_start_matches('/')),
                // A canonical field the system does not carry: say so rather than invent a path.
                None => format!("{prefix}(canonical {})", v.pointer),
            };
            v
        })
        .collect()
}

/// Parses a JSON body, or says where it stops being JSON: one `json.syntax` violation at the root
/// pointer, with line and column. serde_json's own message is not used, as a future version could
/// quote the input (which may hold a NIR).
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, Violation> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Eof => "ends before the JSON value is complete",
            Category::Syntax => "is not valid JSON",
            // Only I/O and data errors remain; from bytes into a `Value` neither names a field.
            Category::Io | Category::Data => "cannot be read as JSON",
        };
        Violation::new(
            "",
            Rule::JsonSyntax,
            format!("the body {what} (line {}, column {})", e.line(), e.column()),
        )
    })
}

/// Appends the rule violations on fields the schema has not already reported: a field whose shape
/// is wrong does not need a second line saying its key is wrong too.
///
/// A reported field covers itself, its parts and the objects it sits in. An unknown property
/// reported on an object is about a sibling, not the object's own fields, so it covers nothing.
pub fn add_uncovered(out: &mut Vec<Violation>, more: Vec<Violation>) {
    let covers = |reported: &Violation, p: &str| {
        let q = reported.pointer.as_str();
        reported.rule != Rule::SchemaAdditional
            && !q.is_empty()
            && (p == q
                || p.strip_prefix(q).is_some_and(|r| r.starts_with('/'))
                || q.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
    };
    for v in more {
        if !out.iter().any(|o| covers(o, &v.pointer)) {
            out.push(v);
        }
    }
}
