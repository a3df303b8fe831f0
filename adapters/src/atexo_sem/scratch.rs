//! The decoder's working memory for one dossier (or one piece of the document outside any
//! dossier): the path being read and the violations found so far, with the two limits that keep a
//! hostile document cheap to refuse.
//!
//! - A cap: at most [`MAX_PER_DOSSIER`] violations are kept; the others are counted, and the list
//!   given back ends with one `xml.truncated` entry saying how many more there were. A million
//!   unknown attributes then cost a counter, not a million formatted paths.
//! - An optional deadline, looked at every [`CLOCK_EVERY`] events or attributes: once it has
//!   passed, every reading step fails at once and the stream ends (see
//!   [`super::DossierStream::over_budget`]).
//!
//! It also knows whether the document declared ISO-8859-1, so values can be checked for the
//! UTF-8 bytes of a mislabelled document (see [`super::mojibake`]).

use std::time::Instant;

use super::mojibake;
use crate::violation::{Rule, Violation};

pub use crate::violation::{truncated, MAX_PER_DOSSIER};
/// Events or attributes read between two looks at the clock: a look costs about 20 ns, reading
/// this many events well under a millisecond.
const CLOCK_EVERY: u32 = 1024;

#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// The path of the element being read (`/exportSEM/dossier[3]/stagiaire`).
    pub path: String,
    /// Length of `path` up to the current dossier (`/exportSEM/dossier[3]`).
    pub dossier_len: usize,
    /// Violations found in the current dossier, at most [`MAX_PER_DOSSIER`]: only
    /// [`Scratch::push`] and the `issue` methods add to it.
    pub issues: Vec<Violation>,
    /// Violations found in the current dossier past the cap: counted, not kept.
    pub unlisted: usize,
    /// Text being gathered from an element's content.
    pub text: String,
    /// The prolog declared ISO-8859-1: values are checked for UTF-8 bytes.
    pub latin1: bool,
    /// When decoding must stop.
    pub deadline: Option<Instant>,
    ticks: u32,
    /// The deadline passed: every reading step now fails and the stream ends.
    pub over_budget: bool,
}

impl Scratch {
    pub fn enter(&mut self, name: &str) -> usize {
        let mark = self.path.len();
        self.path.push('/');
        self.path.push_str(name);
        mark
    }

    /// Whether one more violation may be kept; counts it when it may not.
    fn room(&mut self) -> bool {
        if self.issues.len() < MAX_PER_DOSSIER {
            true
        } else {
            self.unlisted += 1;
            false
        }
    }

    /// How many violations the current dossier has so far, listed or not.
    pub fn found(&self) -> usize {
        self.issues.len() + self.unlisted
    }

    pub fn push(&mut self, v: Violation) {
        if self.room() {
            self.issues.push(v);
        }
    }

    pub fn issue(&mut self, rule: Rule, detail: impl Into<String>) {
        if self.room() {
            self.issues
                .push(Violation::new(self.path.as_str(), rule, detail));
        }
    }

    pub fn issue_attr(&mut self, attr: &[u8], rule: Rule, detail: impl Into<String>) {
        if self.room() {
            let pointer = format!("{}/@{}", self.path, shown_name(attr));
            self.issues.push(Violation::new(pointer, rule, detail));
        }
    }

    /// A violation on a field of the current dossier, `rel` being its path from the dossier.
    pub fn issue_in_dossier(&mut self, rel: &str, rule: Rule, detail: impl Into<String>) {
        let pointer = format!("{}/{rel}", &self.path[..self.dossier_len]);
        // A value refused while reading (bad UTF-8, unknown entity) is not "missing" as well.
        if rule == Rule::FieldRequired && self.issues.iter().any(|i| i.pointer == pointer) {
            return;
        }
        self.push(Violation::new(pointer, rule, detail));
    }

    /// Forgets the violations of the last dossier.
    pub fn clear(&mut self) {
        self.issues.clear();
        self.unlisted = 0;
    }

    /// The violations of the current dossier (or piece of document), `unit` being its path; when
    /// some were only counted, the list ends with an `xml.truncated` entry saying how many more
    /// were found `where_` ("in this dossier").
    /// Returns the count not listed as well.
    pub fn take(&mut self, unit: &str, where_: &str) -> (Vec<Violation>, usize) {
        let mut out = std::mem::take(&mut self.issues);
        let unlisted = std::mem::take(&mut self.unlisted);
        if unlisted > 0 {
            out.push(truncated(unit, unlisted, where_));
        }
        (out, unlisted)
    }

    pub fn fatal(&self, rule: Rule, detail: impl Into<String>) -> Violation {
        let pointer = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        Violation::new(pointer, rule, detail)
    }

    pub fn syntax(&self, e: &quick_xml::Error, position: u64) -> Violation {
        // A fixed description, never quick-xml's message: it quotes tag and attribute names,
        // which a malformed document may have filled with anything (a name, a NIR).
        self.fatal(
            Rule::XmlSyntax,
            format!(
                "is not well-formed XML near byte {position}: {}",
                syntax_kind(e)
            ),
        )
    }

    /// Counts one reading step; past the deadline, fails (and keeps failing). The violation is a
    /// placeholder the stream drops: running out of time says nothing about the document.
    pub fn tick(&mut self) -> Result<(), Violation> {
        if self.over_budget {
            return Err(self.fatal(Rule::XmlTruncated, "decoding stopped at its time budget"));
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(CLOCK_EVERY) {
            if let Some(deadline) = self.deadline {
                if Instant::now() >= deadline {
                    self.over_budget = true;
                    return self.tick();
                }
            }
        }
        Ok(())
    }

    /// In a document declared ISO-8859-1, reports a value whose bytes are UTF-8 (`attr`: the
    /// attribute it comes from, else the current element's text). Returns whether it did.
    pub fn mislabelled(&mut self, value: &str, attr: Option<&[u8]>) -> bool {
        if !self.latin1 || value.is_ascii() || !mojibake::is_utf8_read_as_latin1(value) {
            return false;
        }
        const DETAIL: &str = "holds UTF-8 bytes in a document declared ISO-8859-1: read as \
            declared it would be garbled; declare encoding=\"UTF-8\" or send ISO-8859-1 bytes";
        match attr {
            Some(k) => self.issue_attr(k, Rule::XmlEncodingMismatch, DETAIL),
            None => self.issue(Rule::XmlEncodingMismatch, DETAIL),
        }
        true
    }
}

/// Longest element or attribute name written whole in a path: the format's longest is 16 bytes.
const NAME_SHOWN: usize = 64;

/// An unknown element's or attribute's name as a path shows it: cut (and marked `…`) past
/// [`NAME_SHOWN`] bytes, so a name of megabytes does not come back in every answer.
pub fn shown_name(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if name.len() <= NAME_SHOWN {
        return name.into_owned();
    }
    let mut cut = NAME_SHOWN;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &name[..cut])
}

/// What is wrong, in words of our own: nothing of the document (see [`Scratch::syntax`]).
fn syntax_kind(e: &quick_xml::Error) -> &'static str {
    use quick_xml::errors::{IllFormedError, SyntaxError};
    match e {
        quick_xml::Error::Syntax(SyntaxError::UnclosedTag) => "a tag is not closed",
        quick_xml::Error::Syntax(SyntaxError::UnclosedCData) => "a CDATA section is not closed",
        quick_xml::Error::Syntax(SyntaxError::UnclosedComment) => "a comment is not closed",
        quick_xml::Error::Syntax(_) => "malformed markup",
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { .. }) => {
            "an end tag does not match the open element"
        }
        quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(_)) => {
            "an end tag closes no open element"
        }
        quick_xml::Error::IllFormed(IllFormedError::MissingEndTag(_)) => "an element is not closed",
        quick_xml::Error::IllFormed(_) => "ill-formed markup",
        quick_xml::Error::InvalidAttr(_) => "a malformed attribute",
        quick_xml::Error::NonDecodable(_) => "bytes that are not text in the declared encoding",
        quick_xml::Error::EscapeError(_) => "a malformed character or entity reference",
        _ => "the document could not be read",
    }
}
