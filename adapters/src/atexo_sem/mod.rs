//! ATEXO SEM adapter: the Region's `exportSEM` XML (contract §2.1) to canonical dossiers and back,
//! and the `retourAgora` XML that carries AGORA's answers back to ATEXO (contract §4).
//!
//! Decoding streams: [`decode_stream`] reads one `<dossier>` at a time with quick-xml, reusing its
//! buffers, so a backfill export of hundreds of MB decodes in constant memory. Each dossier goes
//! through three steps, each collecting every violation rather than stopping at the first:
//! 1. XML → [`model::RawDossier`] (shape: unknown or repeated elements, bad UTF-8, entities);
//! 2. raw strings → canonical [`Dossier`] (values: dates `JJ/MM/AAAA`, amounts with a decimal comma,
//!    `O`/`N` flags, codes, required fields);
//! 3. the domain rules of [`crate::rules`], their pointers translated into XML paths with
//!    [`mapping::TABLE`].
//!
//! A bad dossier yields a [`DossierError`] and the stream goes on with the next one; only a document
//! that stops being readable XML (well-formedness, encoding, a DTD) ends the stream, after one fatal
//! error. No DTD is ever read and no entity but the five predefined ones is expanded, so a "billion
//! laughs" file is refused at its `<!DOCTYPE`.
//!
//! Encoding: [`encode_export`] writes canonical dossiers as an `exportSEM` document such that
//! decoding it gives them back; [`encode_return`] writes a `retourAgora`.
//!
//! Masking: [`mask_export`] rewrites an export with the trainee's personal values masked, for the
//! message journal (see [`mask`]).

pub mod adapter;
mod document;
pub mod mapping;
pub mod mask;
pub mod model;
mod mojibake;
mod scratch;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::agora::model::Anomaly;
use crate::canonical::{
    CertificationResult, Consultation, Dispositif, Dossier, Entry, Exit, ExitReason, Formacode,
    Funding, Initiator, Nir, Personal, PoleEmploiId, Provider, Session, Sex, SourceRef, State,
    System, Trainee, Training,
};
use crate::planner::AgoraState;
use crate::rules::RuleSettings;
use crate::violation::{Rule, Violation, Violations};
pub use document::{decode_document, decode_document_within, DocumentError, MAX_PER_DOCUMENT};
pub use mask::{mask_export, mask_stream, MaskError};
use model::*;
use scratch::Scratch;
pub use scratch::MAX_PER_DOSSIER;

// ---------------------------------------------------------------------------------------------
// Settings and results
// ---------------------------------------------------------------------------------------------

/// Which flow a dossier arrives by: the perimeter differs (pre-2017 sessions only matter in a
/// backfill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The synchronous flow (*flux au fil de l'eau*): HTTP posts from ATEXO SEM.
    Sync,
    /// The one-off load of existing dossiers (*reprise d'antériorité*).
    Backfill,
}

/// AGORA's perimeter rules (configuration `perimeter.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerimeterSettings {
    /// `categorie` codes outside the perimeter (health and social training, PSAD, detainees, CRP,
    /// individual aids, regional VAE).
    pub excluded_categories: Vec<String>,
    /// In a backfill, sessions starting before this date are out of perimeter.
    pub backfill_since: NaiveDate,
}

impl Default for PerimeterSettings {
    fn default() -> Self {
        Self {
            excluded_categories: [
                "SANITAIRE_SOCIAL",
                "PSAD",
                "DETENUS",
                "CRP",
                "AIDE_INDIVIDUELLE",
                "VAE",
            ]
            .map(String::from)
            .to_vec(),
            backfill_since: NaiveDate::from_ymd_opt(2017, 1, 1).unwrap_or_default(),
        }
    }
}

/// Everything a decode needs, built once (at start-up) and shared by every dossier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeSettings {
    pub perimeter: PerimeterSettings,
    pub rules: RuleSettings,
}

/// Whether AGORA should hear of a dossier (*périmètre AGORA*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Perimeter {
    In,
    /// Recorded and reported, never sent.
    Out(OutOfPerimeter),
}

/// Why a dossier is out of AGORA's perimeter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfPerimeter {
    /// `dispositif/@agora="N"`.
    AgoraFlag,
    /// `categorie` is one of the excluded codes (the code).
    Category(String),
    /// Backfill only: the session starts before `backfill_since`.
    SessionBeforeBackfillStart,
}

impl OutOfPerimeter {
    /// A stable code for reports and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            OutOfPerimeter::AgoraFlag => "agora_flag",
            OutOfPerimeter::Category(_) => "category",
            OutOfPerimeter::SessionBeforeBackfillStart => "session_before_backfill_start",
        }
    }
}

/// The perimeter of a decoded dossier: the `agora` flag first, then the category, then (backfill
/// only) the session start.
pub fn classify(d: &Dossier, flow: Flow, settings: &PerimeterSettings) -> Perimeter {
    if d.dispositif.as_ref().and_then(|x| x.agora) == Some(false) {
        return Perimeter::Out(OutOfPerimeter::AgoraFlag);
    }
    if let Some(c) = &d.category {
        if settings.excluded_categories.iter().any(|x| x == c) {
            return Perimeter::Out(OutOfPerimeter::Category(c.clone()));
        }
    }
    if flow == Flow::Backfill
        && d.session
            .as_ref()
            .is_some_and(|s| s.start < settings.backfill_since)
    {
        return Perimeter::Out(OutOfPerimeter::SessionBeforeBackfillStart);
    }
    Perimeter::In
}

/// A dossier decoded and valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemDossier {
    /// 1-based position of the `<dossier>` in the export.
    pub index: usize,
    /// ATEXO's `dossier/@id`.
    pub id: String,
    /// ATEXO's `dossier/@version`.
    pub version: u64,
    pub dossier: Dossier,
    pub perimeter: Perimeter,
}

/// A dossier that could not be accepted, with every violation found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DossierError {
    /// 1-based position of the `<dossier>`; 0 for a fault of the document outside any dossier
    /// (prolog, root element, stray content between dossiers).
    pub index: usize,
    /// ATEXO's `dossier/@id`, when it could be read.
    pub id: Option<String>,
    /// Never empty. At most [`MAX_PER_DOSSIER`] violations, then, when more were found, an
    /// `xml.truncated` entry saying how many.
    pub violations: Vec<Violation>,
    /// How many violations were found and not listed (the count the `xml.truncated` entry gives).
    pub unlisted: usize,
    /// Whether the document cannot be read further (XML syntax, encoding, DTD): the stream ends.
    pub fatal: bool,
}

impl std::fmt::Display for DossierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dossier #{}", self.index)?;
        if let Some(id) = &self.id {
            write!(f, " ({id})")?;
        }
        write!(f, ": {}", Violations(self.violations.clone()))
    }
}

impl std::error::Error for DossierError {}

// ---------------------------------------------------------------------------------------------
// Opening: encoding sniffing
// ---------------------------------------------------------------------------------------------

type Source<'a> = Box<dyn BufRead + Send + 'a>;

/// The root element's path.
const ROOT: &str = "/exportSEM";
/// Buffer of the transcoder's output: large enough that quick-xml rarely refills mid-event.
const TRANSCODE_BUFFER: usize = 64 * 1024;
/// How far the XML declaration is looked for.
const PROLOG_MAX: usize = 1024;

/// Reads the prolog, decides the encoding and returns a reader of UTF-8 bytes, and whether the
/// document declared ISO-8859-1.
///
/// ISO-8859-1 is decoded as windows-1252, as WHATWG (and so encoding_rs) maps the label: ATEXO's
/// legacy exports labelled ISO-8859-1 carry windows-1252 characters (œ ’ €) in the C1 range, which
/// true ISO-8859-1 would turn into control characters.
fn open<'a>(mut r: impl BufRead + Send + 'a) -> Result<(Source<'a>, bool), Violation> {
    let fail = |rule, detail: &str| Violation::new("/", rule, detail);
    let mut head = Vec::with_capacity(128);
    loop {
        let chunk = r
            .fill_buf()
            .map_err(|_| fail(Rule::XmlSyntax, "the document could not be read"))?;
        if chunk.is_empty() {
            break;
        }
        let end = chunk
            .iter()
            .position(|&b| b == b'>')
            .map_or(chunk.len(), |p| p + 1);
        let take = end.min(PROLOG_MAX - head.len());
        head.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if head.last() == Some(&b'>') || head.len() >= PROLOG_MAX {
            break;
        }
    }
    let (bom, decl) = match head.strip_prefix(b"\xEF\xBB\xBF".as_slice()) {
        Some(rest) => (true, rest),
        None => (false, head.as_slice()),
    };
    if decl.starts_with(b"\xFE\xFF") || decl.starts_with(b"\xFF\xFE") || decl.starts_with(b"\0") {
        return Err(fail(
            Rule::XmlEncoding,
            "UTF-16 and UTF-32 are not accepted: use UTF-8 or ISO-8859-1",
        ));
    }
    let label = if decl.starts_with(b"<?xml") {
        declared_encoding(decl)
    } else {
        None
    };
    let encoding = match label {
        None => encoding_rs::UTF_8,
        Some(l) => match encoding_rs::Encoding::for_label(l) {
            Some(e) if e == encoding_rs::UTF_8 || e == encoding_rs::WINDOWS_1252 => e,
            _ => {
                return Err(fail(
                    Rule::XmlEncoding,
                    "the declared encoding is not accepted: use UTF-8 or ISO-8859-1",
                ))
            }
        },
    };
    let prefix = io::Cursor::new(head);
    if encoding == encoding_rs::UTF_8 {
        // quick-xml skips the UTF-8 BOM itself; values are checked as UTF-8 one by one.
        return Ok((Box::new(prefix.chain(r)), false));
    }
    if bom {
        return Err(fail(
            Rule::XmlEncoding,
            "the byte order mark says UTF-8 but the declaration says otherwise",
        ));
    }
    let transcoder = encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding_rs::WINDOWS_1252))
        .build(prefix.chain(r));
    let source = BufReader::with_capacity(TRANSCODE_BUFFER, transcoder);
    Ok((Box::new(source), true))
}

/// The `encoding="…"` label of an XML declaration.
fn declared_encoding(decl: &[u8]) -> Option<&[u8]> {
    let end = decl
        .windows(2)
        .position(|w| w == b"?>")
        .unwrap_or(decl.len());
    let decl = &decl[..end];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let rest = decl[at + 8..].trim_ascii_start();
    let rest = rest.strip_prefix(b"=")?.trim_ascii_start();
    let quote = *rest.first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let rest = &rest[1..];
    let close = rest.iter().position(|&b| b == quote)?;
    Some(&rest[..close])
}

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    BeforeRoot,
    InRoot,
    AfterRoot,
    Done,
}

/// A lazy sequence of decoded dossiers, read from an `exportSEM` document as it is iterated.
///
/// Memory stays flat whatever the document's size: one event buffer and one dossier at a time.
pub struct DossierStream<'a> {
    reader: Option<Reader<Source<'a>>>,
    pending: Option<Violation>,
    buf: Vec<u8>,
    sc: Scratch,
    raw: RawDossier,
    header: RawExport,
    stage: Stage,
    index: usize,
    flow: Flow,
    settings: DecodeSettings,
    /// Faults outside any dossier reported so far, and those past the cap, only counted.
    stray: usize,
    stray_unlisted: usize,
}

impl std::fmt::Debug for DossierStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DossierStream")
            .field("stage", &self.stage)
            .field("index", &self.index)
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}

/// Decodes an `exportSEM` document dossier by dossier (UTF-8 or ISO-8859-1, as its prolog says).
///
/// The settings are cloned once into the stream. Each item is a valid dossier or all the
/// violations of an invalid one; after a fatal error (`DossierError::fatal`) the stream ends.
pub fn decode_stream<'a>(
    reader: impl BufRead + Send + 'a,
    flow: Flow,
    settings: &DecodeSettings,
) -> DossierStream<'a> {
    let mut sc = Scratch::default();
    let (reader, pending) = match open(reader) {
        Ok((source, latin1)) => {
            sc.latin1 = latin1;
            let mut reader = Reader::from_reader(source);
            let config = reader.config_mut();
            // Whitespace between elements is layout; trimming it here saves an event per line.
            config.trim_text(true);
            config.check_end_names = true;
            config.expand_empty_elements = false;
            (Some(reader), None)
        }
        Err(v) => (None, Some(v)),
    };
    DossierStream {
        reader,
        pending,
        buf: Vec::with_capacity(4096),
        sc,
        raw: RawDossier::default(),
        header: RawExport::default(),
        stage: Stage::BeforeRoot,
        index: 0,
        flow,
        settings: settings.clone(),
        stray: 0,
        stray_unlisted: 0,
    }
}

impl DossierStream<'_> {
    /// Stops decoding at `deadline`: the stream then ends early, and [`Self::over_budget`] says
    /// so. Without one, a document is read to its end however long that takes.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.sc.deadline = Some(deadline);
        self
    }

    /// Whether the stream ended at its deadline rather than at the end of the document.
    pub fn over_budget(&self) -> bool {
        self.sc.over_budget
    }

    /// The root element's attributes, once the root has been read.
    pub fn header(&self) -> &RawExport {
        &self.header
    }

    /// How many `<dossier>` elements were met so far.
    pub fn dossiers_read(&self) -> usize {
        self.index
    }

    fn step(&mut self) -> Option<Result<SemDossier, DossierError>> {
        // Disjoint borrows: the event borrows `buf` while the other fields are updated.
        let DossierStream {
            reader,
            pending,
            buf,
            sc,
            raw,
            header,
            stage,
            index,
            flow,
            settings,
            stray,
            stray_unlisted,
        } = self;
        // A fatal error: the stream ends after it.
        let end = |stage: &mut Stage, index: usize, id: Option<String>, v: Violation| {
            *stage = Stage::Done;
            Some(Err(DossierError {
                index,
                id,
                violations: vec![v],
                unlisted: 0,
                fatal: true,
            }))
        };
        let document_error = |(violations, unlisted): (Vec<Violation>, usize)| {
            Some(Err(DossierError {
                index: 0,
                id: None,
                violations,
                unlisted,
                fatal: false,
            }))
        };
        if let Some(v) = pending.take() {
            return end(stage, 0, None, v);
        }
        let Some(reader) = reader.as_mut() else {
            *stage = Stage::Done;
            return None;
        };
        loop {
            let event = match next_event(reader, buf, sc) {
                Ok(e) => e,
                Err(v) => return end(stage, 0, None, v),
            };
            let (start, e) = match (*stage, event) {
                (_, Event::DocType(_)) => {
                    let v = sc.fatal(
                        Rule::XmlDoctype,
                        "a DOCTYPE is not accepted: entities are never expanded",
                    );
                    return end(stage, 0, None, v);
                }
                (_, Event::Decl(_) | Event::Comment(_) | Event::PI(_)) => continue,
                (Stage::BeforeRoot | Stage::InRoot, Event::Start(e)) => (true, e),
                (Stage::BeforeRoot | Stage::InRoot, Event::Empty(e)) => (false, e),
                (Stage::InRoot, Event::End(_)) => {
                    *stage = Stage::AfterRoot;
                    if *stray_unlisted > 0 {
                        let n = std::mem::take(stray_unlisted);
                        let marker = scratch::truncated(ROOT, n, "outside the dossiers");
                        return document_error((vec![marker], n));
                    }
                    continue;
                }
                (Stage::InRoot, Event::Text(_) | Event::CData(_)) => {
                    if *stray >= MAX_PER_DOSSIER {
                        *stray_unlisted += 1;
                        continue;
                    }
                    *stray += 1;
                    let v = Violation::new(
                        ROOT,
                        Rule::XmlUnexpected,
                        "holds text where only dossier elements are expected",
                    );
                    return document_error((vec![v], 0));
                }
                (Stage::BeforeRoot | Stage::AfterRoot, Event::Text(_) | Event::CData(_)) => {
                    let v = Violation::new("/", Rule::XmlSyntax, "text outside the root element");
                    return end(stage, 0, None, v);
                }
                (Stage::AfterRoot, Event::Start(_) | Event::Empty(_)) => {
                    let v = Violation::new(
                        "/",
                        Rule::XmlSyntax,
                        "a second root element after </exportSEM>",
                    );
                    return end(stage, 0, None, v);
                }
                (Stage::BeforeRoot, Event::Eof) => {
                    let v =
                        Violation::new("/", Rule::XmlSyntax, "the document has no root element");
                    return end(stage, 0, None, v);
                }
                (Stage::InRoot, Event::Eof) => {
                    let v = Violation::new(
                        "/exportSEM",
                        Rule::XmlSyntax,
                        "the document ends before </exportSEM>",
                    );
                    return end(stage, 0, None, v);
                }
                (Stage::AfterRoot | Stage::Done, Event::Eof) => {
                    *stage = Stage::Done;
                    return None;
                }
                // quick-xml reports unmatched end tags itself; nothing else can arrive here.
                (_, Event::End(_)) | (Stage::Done, _) => {
                    let v = Violation::new("/", Rule::XmlSyntax, "unexpected end tag");
                    return end(stage, 0, None, v);
                }
            };
            if *stage == Stage::BeforeRoot {
                if e.name().as_ref() != b"exportSEM" {
                    let v =
                        Violation::new("/", Rule::XmlRoot, "the root element must be exportSEM");
                    return end(stage, 0, None, v);
                }
                sc.path.clear();
                sc.path.push_str(ROOT);
                sc.clear();
                if let Err(v) = attrs(&e, sc, header, export_slot) {
                    return end(stage, 0, None, v);
                }
                *stage = if start {
                    Stage::InRoot
                } else {
                    Stage::AfterRoot
                };
                if !sc.issues.is_empty() {
                    return document_error(sc.take(ROOT, "on the root element"));
                }
                continue;
            }
            sc.path.truncate(ROOT.len());
            sc.clear();
            if e.name().as_ref() != b"dossier" {
                // Past the cap, a stray element is only counted: no path is built for it.
                let listed = *stray < MAX_PER_DOSSIER;
                if listed {
                    let name = scratch::shown_name(e.name().as_ref());
                    sc.enter(&name);
                    sc.issue(
                        Rule::XmlUnexpected,
                        "is not an element of an ATEXO SEM export",
                    );
                }
                drop(e);
                if start {
                    if let Err(v) = skip(reader, buf, sc, false) {
                        return end(stage, 0, None, v);
                    }
                }
                sc.path.truncate(ROOT.len());
                if !listed {
                    *stray_unlisted += 1;
                    continue;
                }
                *stray += 1;
                return document_error(sc.take(ROOT, "outside the dossiers"));
            }
            *index += 1;
            let n = *index;
            let _ = write!(sc.path, "/dossier[{n}]");
            sc.dossier_len = sc.path.len();
            raw.clear();
            let attributes = attrs(&e, sc, raw, dossier_slot);
            drop(e);
            let read = attributes.and_then(|()| {
                if start {
                    read_dossier(reader, buf, sc, raw)
                } else {
                    Ok(())
                }
            });
            if let Err(v) = read {
                let id = raw.id.clone();
                return end(stage, n, id, v);
            }
            return Some(finish(n, raw, sc, *flow, settings));
        }
    }
}

impl Iterator for DossierStream<'_> {
    type Item = Result<SemDossier, DossierError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stage == Stage::Done {
            return None;
        }
        let item = self.step();
        // The faults outside dossiers that were only counted are said before the stream ends.
        let counted = |n: usize| scratch::truncated(ROOT, n, "outside the dossiers");
        if self.sc.over_budget {
            // What `step` returned is the deadline's placeholder, not a fault of the document.
            self.stage = Stage::Done;
            let n = std::mem::take(&mut self.stray_unlisted);
            return (n > 0).then(|| {
                Err(DossierError {
                    index: 0,
                    id: None,
                    violations: vec![counted(n)],
                    unlisted: n,
                    fatal: false,
                })
            });
        }
        match item {
            Some(Err(mut e)) if e.fatal && self.stray_unlisted > 0 => {
                let n = std::mem::take(&mut self.stray_unlisted);
                e.violations.push(counted(n));
                e.unlisted += n;
                Some(Err(e))
            }
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1: XML → RawDossier
// ---------------------------------------------------------------------------------------------

type Rd<'a> = Reader<Source<'a>>;
type Slot<T> = for<'t> fn(&'t mut T, &[u8]) -> Option<&'t mut Option<String>>;

/// Reads the attributes of `e` into `target` through `slot`; an attribute `slot` does not know is
/// reported as unexpected, one given twice as a syntax fault (the first one is kept). A malformed
/// attribute (no quotes, no `=`) is fatal: the rest of the tag cannot be read.
///
/// quick-xml's own duplicate check compares each name with every name before it: quadratic, so a
/// tag of a million attributes would take minutes. It is off; a duplicate is found instead by its
/// slot having been filled already, which costs nothing for the attributes the format defines
/// (a handful per element) and leaves unknown ones to the violation cap.
fn attrs<T>(
    e: &BytesStart<'_>,
    sc: &mut Scratch,
    target: &mut T,
    slot: Slot<T>,
) -> Result<(), Violation> {
    // The slots filled so far, by address: a slot is a field of `target`.
    let mut filled: Vec<*const Option<String>> = Vec::new();
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    for a in attributes {
        sc.tick()?;
        // Not quick-xml's message, which quotes the document (see `Scratch::syntax`).
        let a = a.map_err(|_| sc.fatal(Rule::XmlSyntax, "has a malformed attribute list"))?;
        let key = a.key.as_ref();
        match slot(target, key) {
            Some(place) if filled.contains(&std::ptr::from_ref(place)) => sc.issue_attr(
                key,
                Rule::XmlSyntax,
                "appears more than once in this element: XML allows each attribute once",
            ),
            Some(place) => {
                filled.push(std::ptr::from_ref(place));
                *place = value(&a.value, sc, Some(key));
            }
            None => sc.issue_attr(
                key,
                Rule::XmlUnexpected,
                "is not an attribute the ATEXO SEM export defines here",
            ),
        }
    }
    Ok(())
}

/// The next event, once the deadline has been looked at.
fn next_event<'b>(
    rd: &mut Rd<'_>,
    buf: &'b mut Vec<u8>,
    sc: &mut Scratch,
) -> Result<Event<'b>, Violation> {
    sc.tick()?;
    buf.clear();
    rd.read_event_into(buf)
        .map_err(|e| sc.syntax(&e, rd.error_position()))
}

/// An attribute's or a text's raw bytes as a value: UTF-8 checked, the predefined entities and
/// character references resolved, whitespace trimmed, empty meaning absent.
fn value(raw: &[u8], sc: &mut Scratch, attr: Option<&[u8]>) -> Option<String> {
    let report = |sc: &mut Scratch, rule, detail: &str| match attr {
        Some(k) => sc.issue_attr(k, rule, detail),
        None => sc.issue(rule, detail),
    };
    let Ok(s) = std::str::from_utf8(raw) else {
        report(
            sc,
            Rule::XmlEncoding,
            "is not valid UTF-8, as the document declares",
        );
        return None;
    };
    if sc.mislabelled(s, attr) {
        return None;
    }
    let s = if s.contains('&') {
        match quick_xml::escape::unescape(s) {
            Ok(s) => s,
            Err(quick_xml::escape::EscapeError::UnrecognizedEntity(..)) => {
                report(
                    sc,
                    Rule::XmlSyntax,
                    "refers to an undeclared entity: only &lt; &gt; &amp; &apos; &quot; and character references are allowed",
                );
                return None;
            }
            Err(_) => {
                report(
                    sc,
                    Rule::XmlSyntax,
                    "holds a malformed character or entity reference",
                );
                return None;
            }
        }
    } else {
        Cow::Borrowed(s)
    };
    let t = s.trim_matches(is_xml_space);
    (!t.is_empty()).then(|| t.to_owned())
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Reads the content of a text-only element up to its end tag.
fn text(rd: &mut Rd<'_>, buf: &mut Vec<u8>, sc: &mut Scratch) -> Result<Option<String>, Violation> {
    sc.text.clear();
    let mut bad = false;
    let mut depth = 0usize;
    loop {
        let ev = next_event(rd, buf, sc)?;
        match ev {
            Event::Text(t) if depth == 0 => {
                let before = sc.found();
                let v = value_untrimmed(&t[..], sc);
                bad |= sc.found() > before;
                sc.text.push_str(&v);
            }
            Event::CData(t) if depth == 0 => match std::str::from_utf8(&t) {
                Ok(s) if sc.mislabelled(s, None) => bad = true,
                Ok(s) => sc.text.push_str(s),
                Err(_) => {
                    bad = true;
                    sc.issue(
                        Rule::XmlEncoding,
                        "is not valid UTF-8, as the document declares",
                    );
                }
            },
            Event::Start(_) | Event::Empty(_) if depth == 0 => {
                bad = true;
                sc.issue(
                    Rule::XmlUnexpected,
                    "holds an element where text is expected",
                );
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::Start(_) => depth += 1,
            Event::End(_) if depth == 0 => break,
            Event::End(_) => depth -= 1,
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this element"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            _ => {}
        }
    }
    if bad {
        return Ok(None);
    }
    let t = sc.text.trim_matches(is_xml_space);
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

/// A text event as a string, without trimming (a text may be split around a CDATA section).
fn value_untrimmed<'t>(raw: &'t [u8], sc: &mut Scratch) -> Cow<'t, str> {
    let Ok(s) = std::str::from_utf8(raw) else {
        sc.issue(
            Rule::XmlEncoding,
            "is not valid UTF-8, as the document declares",
        );
        return Cow::Borrowed("");
    };
    if sc.mislabelled(s, None) {
        return Cow::Borrowed("");
    }
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    match quick_xml::escape::unescape(s) {
        Ok(s) => s,
        Err(quick_xml::escape::EscapeError::UnrecognizedEntity(..)) => {
            sc.issue(
                Rule::XmlSyntax,
                "refers to an undeclared entity: only &lt; &gt; &amp; &apos; &quot; and character references are allowed",
            );
            Cow::Borrowed("")
        }
        Err(_) => {
            sc.issue(
                Rule::XmlSyntax,
                "holds a malformed character or entity reference",
            );
            Cow::Borrowed("")
        }
    }
}

/// Skips the content of an element that should have none (or that is unknown), up to its end tag.
/// `report` says whether content found there is a violation.
fn skip(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
    report: bool,
) -> Result<(), Violation> {
    let mut depth = 0usize;
    let mut reported = !report;
    loop {
        let ev = next_event(rd, buf, sc)?;
        match ev {
            Event::Start(_) | Event::Empty(_) | Event::Text(_) | Event::CData(_) if !reported => {
                reported = true;
                sc.issue(
                    Rule::XmlUnexpected,
                    "must be empty: its data are in its attributes",
                );
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::Start(_) => depth += 1,
            Event::End(_) if depth == 0 => return Ok(()),
            Event::End(_) => depth -= 1,
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this element"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            _ => {}
        }
    }
}

/// Elements whose data are their text: no attribute is expected.
fn no_attrs<'t>(_: &'t mut (), _: &[u8]) -> Option<&'t mut Option<String>> {
    None
}

fn export_slot<'t>(t: &'t mut RawExport, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"version" => Some(&mut t.version),
        b"region" => Some(&mut t.region),
        b"dateExport" => Some(&mut t.date_export),
        _ => None,
    }
}

fn dossier_slot<'t>(t: &'t mut RawDossier, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"id" => Some(&mut t.id),
        b"version" => Some(&mut t.version),
        b"dateMaj" => Some(&mut t.date_maj),
        _ => None,
    }
}

fn dispositif_slot<'t>(t: &'t mut RawDispositif, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"code" => Some(&mut t.code),
        b"libelle" => Some(&mut t.libelle),
        b"agora" => Some(&mut t.agora),
        _ => None,
    }
}

fn programme_slot<'t>(t: &'t mut Option<String>, k: &[u8]) -> Option<&'t mut Option<String>> {
    (k == b"code").then_some(t)
}

fn consultation_slot<'t>(t: &'t mut RawConsultation, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"numero" => Some(&mut t.numero),
        b"lot" => Some(&mut t.lot),
        _ => None,
    }
}

fn action_slot<'t>(t: &'t mut RawAction, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"numeroFormation" => Some(&mut t.numero_formation),
        b"numeroAction" => Some(&mut t.numero_action),
        b"numeroSession" => Some(&mut t.numero_session),
        b"intitule" => Some(&mut t.intitule),
        b"formacode" => Some(&mut t.formacode),
        b"formacodeVersion" => Some(&mut t.formacode_version),
        b"certification" => Some(&mut t.certification),
        _ => None,
    }
}

fn organisme_slot<'t>(t: &'t mut RawOrganisme, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"siret" => Some(&mut t.siret),
        b"nda" => Some(&mut t.nda),
        b"raisonSociale" => Some(&mut t.raison_sociale),
        _ => None,
    }
}

fn session_slot<'t>(t: &'t mut RawSession, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"dateDebut" => Some(&mut t.date_debut),
        b"dateFin" => Some(&mut t.date_fin),
        b"heuresCentre" => Some(&mut t.heures_centre),
        b"heuresEntreprise" => Some(&mut t.heures_entreprise),
        _ => None,
    }
}

fn entree_slot<'t>(t: &'t mut RawEntree, k: &[u8]) -> Option<&'t mut Option<String>> {
    (k == b"date").then_some(&mut t.date)
}

fn sortie_slot<'t>(t: &'t mut RawSortie, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"date" => Some(&mut t.date),
        b"motif" => Some(&mut t.motif),
        b"resultat" => Some(&mut t.resultat),
        b"heuresRealisees" => Some(&mut t.heures_realisees),
        _ => None,
    }
}

fn financement_slot<'t>(t: &'t mut RawFinancement, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"financeur" => Some(&mut t.financeur),
        b"montantEngage" => Some(&mut t.montant_engage),
        b"montantRealise" => Some(&mut t.montant_realise),
        b"montantSolde" => Some(&mut t.montant_solde),
        _ => None,
    }
}

fn annulation_slot<'t>(t: &'t mut RawAnnulation, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"date" => Some(&mut t.date),
        b"initiateur" => Some(&mut t.initiateur),
        b"motif" => Some(&mut t.motif),
        _ => None,
    }
}

fn identifiant_pe_slot<'t>(
    t: &'t mut RawIdentifiantPe,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"national" => Some(&mut t.national),
        b"regional" => Some(&mut t.regional),
        b"codeGeo" => Some(&mut t.code_geo),
        _ => None,
    }
}

fn adresse_slot<'t>(t: &'t mut RawAdresse, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"codePostal" => Some(&mut t.code_postal),
        b"communeInsee" => Some(&mut t.commune_insee),
        _ => None,
    }
}

/// A block that may appear once: reports a repetition (the later one wins).
fn once<'t, T: Default>(slot: &'t mut Option<T>, sc: &mut Scratch) -> &'t mut T {
    if slot.is_some() {
        sc.issue(Rule::XmlUnexpected, "appears more than once");
    }
    slot.insert(T::default())
}

/// What an element of a dossier holds once its start tag is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Attributes only: any content is unexpected.
    Empty,
    /// Text (`categorie`, `etat`, the trainee's fields).
    Text,
    /// `<stagiaire>`: elements.
    Trainee,
    /// An unknown element: skipped, already reported.
    Unknown,
}

/// Reads the children of a `<dossier>` up to its end tag.
fn read_dossier(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
    raw: &mut RawDossier,
) -> Result<(), Violation> {
    loop {
        let ev = next_event(rd, buf, sc)?;
        let (start, e) = match ev {
            Event::Start(e) => (true, e),
            Event::Empty(e) => (false, e),
            Event::End(_) => return Ok(()),
            Event::Text(_) | Event::CData(_) => {
                sc.issue(
                    Rule::XmlUnexpected,
                    "holds text where only elements are expected",
                );
                continue;
            }
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this dossier"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
        };
        let name = e.name();
        let name = name.as_ref();
        let mark = sc.path.len();
        let content = match name {
            b"dispositif" => {
                sc.enter("dispositif");
                let t = once(&mut raw.dispositif, sc);
                attrs(&e, sc, t, dispositif_slot)?;
                Content::Empty
            }
            b"programme" => {
                sc.enter("programme");
                if raw.programme.is_some() {
                    sc.issue(Rule::XmlUnexpected, "appears more than once");
                }
                attrs(&e, sc, &mut raw.programme, programme_slot)?;
                Content::Empty
            }
            b"consultation" => {
                sc.enter("consultation");
                let t = once(&mut raw.consultation, sc);
                attrs(&e, sc, t, consultation_slot)?;
                Content::Empty
            }
            b"action" => {
                sc.enter("action");
                let t = once(&mut raw.action, sc);
                attrs(&e, sc, t, action_slot)?;
                Content::Empty
            }
            b"organisme" => {
                sc.enter("organisme");
                let t = once(&mut raw.organisme, sc);
                attrs(&e, sc, t, organisme_slot)?;
                Content::Empty
            }
            b"session" => {
                sc.enter("session");
                let t = once(&mut raw.session, sc);
                attrs(&e, sc, t, session_slot)?;
                Content::Empty
            }
            b"entree" => {
                sc.enter("entree");
                let t = once(&mut raw.entree, sc);
                attrs(&e, sc, t, entree_slot)?;
                Content::Empty
            }
            b"sortie" => {
                sc.enter("sortie");
                let t = once(&mut raw.sortie, sc);
                attrs(&e, sc, t, sortie_slot)?;
                Content::Empty
            }
            b"annulation" => {
                sc.enter("annulation");
                let t = once(&mut raw.annulation, sc);
                attrs(&e, sc, t, annulation_slot)?;
                Content::Empty
            }
            b"financement" => {
                raw.financements.push(RawFinancement::default());
                let n = raw.financements.len();
                let _ = write!(sc.path, "/financement[{n}]");
                if let Some(t) = raw.financements.last_mut() {
                    attrs(&e, sc, t, financement_slot)?;
                }
                Content::Empty
            }
            b"categorie" | b"etat" | b"stagiaire" => {
                let (tag, content) = match name {
                    b"categorie" => ("categorie", Content::Text),
                    b"etat" => ("etat", Content::Text),
                    _ => ("stagiaire", Content::Trainee),
                };
                sc.enter(tag);
                attrs(&e, sc, &mut (), no_attrs)?;
                let seen = match tag {
                    "categorie" => raw.categorie.is_some(),
                    "etat" => raw.etat.is_some(),
                    _ => raw.stagiaire.is_some(),
                };
                if seen {
                    sc.issue(Rule::XmlUnexpected, "appears more than once");
                }
                content
            }
            other => {
                let other = scratch::shown_name(other);
                sc.enter(&other);
                sc.issue(
                    Rule::XmlUnexpected,
                    "is not an element of an ATEXO SEM dossier",
                );
                Content::Unknown
            }
        };
        let tag_is_etat = name == b"etat";
        drop(e);
        match (content, start) {
            (Content::Text, true) => {
                let v = text(rd, buf, sc)?;
                if tag_is_etat {
                    raw.etat = v;
                } else {
                    raw.categorie = v;
                }
            }
            (Content::Text, false) => {
                // `<nomUsage/>`: present but empty, which ATEXO writes for "none".
                if tag_is_etat {
                    raw.etat = None;
                } else {
                    raw.categorie = None;
                }
            }
            (Content::Trainee, true) => {
                let t = raw.stagiaire.insert(RawStagiaire::default());
                read_trainee(rd, buf, sc, t)?;
            }
            (Content::Trainee, false) => {
                raw.stagiaire = Some(RawStagiaire::default());
            }
            (Content::Empty, true) => skip(rd, buf, sc, true)?,
            (Content::Unknown, true) => skip(rd, buf, sc, false)?,
            (_, false) => {}
        }
        sc.path.truncate(mark);
    }
}

/// Reads the children of `<stagiaire>`.
fn read_trainee(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
    t: &mut RawStagiaire,
) -> Result<(), Violation> {
    loop {
        let ev = next_event(rd, buf, sc)?;
        let (start, e) = match ev {
            Event::Start(e) => (true, e),
            Event::Empty(e) => (false, e),
            Event::End(_) => return Ok(()),
            Event::Text(_) | Event::CData(_) => {
                sc.issue(
                    Rule::XmlUnexpected,
                    "holds text where only elements are expected",
                );
                continue;
            }
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this dossier"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
        };
        let mark = sc.path.len();
        // Which text field, if the element is one.
        let field: Option<fn(&mut RawStagiaire) -> &mut Option<String>> = match e.name().as_ref() {
            b"nir" => Some(|t| &mut t.nir),
            b"nomNaissance" => Some(|t| &mut t.nom_naissance),
            b"nomUsage" => Some(|t| &mut t.nom_usage),
            b"prenoms" => Some(|t| &mut t.prenoms),
            b"sexe" => Some(|t| &mut t.sexe),
            b"dateNaissance" => Some(|t| &mut t.date_naissance),
            _ => None,
        };
        let mut unknown = false;
        if let Some(f) = field {
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            sc.enter(&name);
            attrs(&e, sc, &mut (), no_attrs)?;
            if f(t).is_some() {
                sc.issue(Rule::XmlUnexpected, "appears more than once");
            }
        } else {
            match e.name().as_ref() {
                b"identifiantPE" => {
                    sc.enter("identifiantPE");
                    let x = once(&mut t.identifiant_pe, sc);
                    attrs(&e, sc, x, identifiant_pe_slot)?;
                }
                b"adresse" => {
                    sc.enter("adresse");
                    let x = once(&mut t.adresse, sc);
                    attrs(&e, sc, x, adresse_slot)?;
                }
                other => {
                    let other = scratch::shown_name(other);
                    sc.enter(&other);
                    sc.issue(
                        Rule::XmlUnexpected,
                        "is not an element of an ATEXO SEM trainee",
                    );
                    unknown = true;
                }
            }
        }
        drop(e);
        match (field, start) {
            (Some(f), true) => *f(t) = text(rd, buf, sc)?,
            (Some(f), false) => *f(t) = None,
            (None, true) => skip(rd, buf, sc, !unknown)?,
            (None, false) => {}
        }
        sc.path.truncate(mark);
    }
}

// ---------------------------------------------------------------------------------------------
// Step 2: raw strings → canonical values
// ---------------------------------------------------------------------------------------------

/// `JJ/MM/AAAA`, a real calendar date.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[2] != b'/' || b[5] != b'/' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (d, m, y) = (num(0..2)?, num(3..5)?, num(6..10)?);
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
}

/// Euros with a decimal comma (`1234,56`, `4520,00`, `12`, `0,5`) to integer cents, without floats.
pub fn parse_cents(s: &str) -> Result<i64, &'static str> {
    const GARBAGE: &str = "must be euros with a decimal comma, such as 1234,56";
    if s.starts_with('-') {
        return Err("must not be negative");
    }
    let (int, frac) = match s.split_once(',') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !digits(int) {
        return Err(GARBAGE);
    }
    let cents_part = match frac {
        None => 0,
        Some(f) if !digits(f) => return Err(GARBAGE),
        Some(f) if f.len() > 2 => return Err("has more than two decimals"),
        Some(f) => {
            let v: i64 = f.parse().map_err(|_| GARBAGE)?;
            if f.len() == 1 {
                v * 10
            } else {
                v
            }
        }
    };
    // 15 digits of euros is far beyond any funding and far below i64's range in cents.
    if int.len() > 15 {
        return Err("is out of range");
    }
    let euros: i64 = int.parse().map_err(|_| GARBAGE)?;
    euros
        .checked_mul(100)
        .and_then(|c| c.checked_add(cents_part))
        .ok_or("is out of range")
}

/// A whole number without sign, within `T`'s range.
fn parse_whole<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `O`/`N` to a flag.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s {
        "O" => Some(true),
        "N" => Some(false),
        _ => None,
    }
}

/// ATEXO's `etat` to the canonical state.
pub fn state_from_etat(s: &str) -> Option<State> {
    Some(match s {
        "INSCRIT" => State::Registered,
        "VALIDE" => State::Validated,
        "ENTRE" => State::Entered,
        "SORTI" => State::Exited,
        "SERVICE_FAIT" => State::ServiceDone,
        "SOLDE" => State::Settled,
        "REFUSE" => State::Refused,
        "ANNULE" => State::Cancelled,
        _ => return None,
    })
}

/// The canonical state as ATEXO writes it; `None` for `prescribed`, which ATEXO has no word for
/// (an orientation alone lives in OUIFORM).
pub fn etat_of(state: State) -> Option<&'static str> {
    Some(match state {
        State::Prescribed => return None,
        State::Registered => "INSCRIT",
        State::Validated => "VALIDE",
        State::Entered => "ENTRE",
        State::Exited => "SORTI",
        State::ServiceDone => "SERVICE_FAIT",
        State::Settled => "SOLDE",
        State::Refused => "REFUSE",
        State::Cancelled => "ANNULE",
    })
}

const DATE_DETAIL: &str = "must be a real date written JJ/MM/AAAA";
const REQUIRED: &str = "is required";

/// Turns raw values into canonical ones, reporting each one that does not parse.
struct Values<'s> {
    sc: &'s mut Scratch,
}

impl Values<'_> {
    fn required(&mut self, v: Option<String>, rel: &str) -> Option<String> {
        if v.is_none() {
            self.sc.issue_in_dossier(rel, Rule::FieldRequired, REQUIRED);
        }
        v
    }
    fn date(&mut self, v: Option<&str>, rel: &str) -> Option<NaiveDate> {
        let d = parse_date(v?);
        if d.is_none() {
            self.sc.issue_in_dossier(rel, Rule::DateFormat, DATE_DETAIL);
        }
        d
    }
    fn required_date(&mut self, v: Option<&str>, rel: &str) -> Option<NaiveDate> {
        if v.is_none() {
            self.sc.issue_in_dossier(rel, Rule::FieldRequired, REQUIRED);
        }
        self.date(v, rel)
    }
    fn whole<T: std::str::FromStr>(&mut self, v: Option<&str>, rel: &str) -> Option<T> {
        let n = parse_whole(v?);
        if n.is_none() {
            self.sc
                .issue_in_dossier(rel, Rule::NumberFormat, "must be a whole number in range");
        }
        n
    }
    fn cents(&mut self, v: Option<&str>, rel: impl FnOnce() -> String) -> Option<i64> {
        match parse_cents(v?) {
            Ok(c) => Some(c),
            Err(detail) => {
                self.sc.issue_in_dossier(&rel(), Rule::AmountFormat, detail);
                None
            }
        }
    }
    fn code<T>(
        &mut self,
        v: Option<&str>,
        rel: &str,
        parse: fn(&str) -> Option<T>,
        allowed: &str,
    ) -> Option<T> {
        let c = parse(v?);
        if c.is_none() {
            self.sc
                .issue_in_dossier(rel, Rule::EnumValue, format!("must be one of {allowed}"));
        }
        c
    }
}

/// The canonical dossier of a raw one, with the values that did not parse left out (or, for the
/// few fields the canonical model cannot leave out, a placeholder: the dossier is invalid then, and
/// never leaves this module).
fn to_canonical(raw: &mut RawDossier, sc: &mut Scratch) -> (Dossier, bool) {
    let mut v = Values { sc };
    let id = v.required(raw.id.take(), "@id").unwrap_or_default();
    let version = match raw.version.as_deref() {
        None => {
            v.sc.issue_in_dossier("@version", Rule::FieldRequired, REQUIRED);
            None
        }
        s => v.whole::<u64>(s, "@version"),
    };
    let updated_on = v.date(raw.date_maj.as_deref(), "@dateMaj");

    let state = match raw.etat.as_deref() {
        None => {
            v.sc.issue_in_dossier("etat", Rule::FieldRequired, REQUIRED);
            None
        }
        s => v.code(
            s,
            "etat",
            state_from_etat,
            "INSCRIT, VALIDE, ENTRE, SORTI, SERVICE_FAIT, SOLDE, REFUSE, ANNULE",
        ),
    };

    let dispositif = match raw.dispositif.take() {
        None => {
            v.sc.issue_in_dossier("dispositif", Rule::FieldRequired, REQUIRED);
            None
        }
        Some(d) => {
            let agora = v.code(d.agora.as_deref(), "dispositif/@agora", parse_flag, "O, N");
            if agora.is_none() && d.agora.is_some() {
                // The enum check above already reported it (unless over the cap, or refused
                // while reading); the rule of flags is boolean.format.
                if let Some(last) = v.sc.issues.last_mut().filter(|l| {
                    l.rule == Rule::EnumValue && l.pointer.ends_with("/dispositif/@agora")
                }) {
                    last.rule = Rule::BooleanFormat;
                    last.detail = "must be O or N".into();
                }
            }
            let code = v.required(d.code, "dispositif/@code");
            code.map(|code| Dispositif {
                code,
                label: d.libelle,
                agora,
            })
        }
    };

    let consultation = raw.consultation.take().and_then(|c| {
        let number = v.required(c.numero, "consultation/@numero")?;
        Some(Consultation { number, lot: c.lot })
    });

    let stagiaire = match raw.stagiaire.take() {
        Some(s) => s,
        None => {
            v.sc.issue_in_dossier("stagiaire", Rule::FieldRequired, REQUIRED);
            RawStagiaire::default()
        }
    };
    let trainee_present =
        v.sc.issues
            .iter()
            .all(|i| !i.pointer.ends_with("/stagiaire"));
    // With no <stagiaire> at all, one violation says so rather than one per field.
    let (nir, birth_name, first_names) = if trainee_present {
        (
            v.required(stagiaire.nir, "stagiaire/nir"),
            v.required(stagiaire.nom_naissance, "stagiaire/nomNaissance"),
            v.required(stagiaire.prenoms, "stagiaire/prenoms"),
        )
    } else {
        (None, None, None)
    };
    let nir = nir.unwrap_or_default();
    let sex = match stagiaire.sexe.as_deref() {
        None if trainee_present => {
            v.sc.issue_in_dossier("stagiaire/sexe", Rule::FieldRequired, REQUIRED);
            None
        }
        s => v.code(s, "stagiaire/sexe", Sex::from_code, "1, 2"),
    };
    let birth_date = if trainee_present {
        v.required_date(
            stagiaire.date_naissance.as_deref(),
            "stagiaire/dateNaissance",
        )
    } else {
        None
    };
    let pole_emploi_id = stagiaire.identifiant_pe.and_then(|p| {
        let id = PoleEmploiId {
            national: p.national,
            regional: p.regional,
            geo_code: p.code_geo,
        };
        (id != PoleEmploiId::default()).then_some(id)
    });
    let (postal_code, commune_insee) = stagiaire
        .adresse
        .map(|a| (a.code_postal, a.commune_insee))
        .unwrap_or_default();
    let trainee = Trainee {
        nir: Nir::new(nir),
        birth_name: birth_name.map(Personal::new),
        usage_name: stagiaire.nom_usage.map(Personal::new),
        first_names: first_names.map(Personal::new),
        sex,
        birth_date: birth_date.map(Personal::new),
        pole_emploi_id,
        postal_code,
        commune_insee,
    };

    let action = match raw.action.take() {
        Some(a) => a,
        None => {
            v.sc.issue_in_dossier("action", Rule::FieldRequired, REQUIRED);
            RawAction::default()
        }
    };
    let numero_session = if raw_action_missing(v.sc) {
        action.numero_session
    } else {
        v.required(action.numero_session, "action/@numeroSession")
    };
    let formacode = match (action.formacode, action.formacode_version) {
        (Some(code), Some(version)) => Some(Formacode { code, version }),
        (Some(code), None) => {
            v.sc.issue_in_dossier(
                "action/@formacodeVersion",
                Rule::FormacodeVersion,
                "a Formacode needs its version (such as V12)",
            );
            Some(Formacode {
                code,
                version: String::new(),
            })
        }
        (None, Some(_)) => {
            v.sc.issue_in_dossier(
                "action/@formacode",
                Rule::FieldRequired,
                "is required with formacodeVersion",
            );
            None
        }
        (None, None) => None,
    };
    let training = Training {
        numero_formation: action.numero_formation,
        numero_action: action.numero_action,
        numero_session: numero_session.unwrap_or_default(),
        title: action.intitule,
        formacode,
        certification: action.certification,
    };

    let provider = raw.organisme.take().and_then(|o| {
        let p = Provider {
            siret: o.siret,
            nda: o.nda,
            name: o.raison_sociale,
        };
        (p != Provider::default()).then_some(p)
    });

    let session = raw.session.take().and_then(|s| {
        let start = v.required_date(s.date_debut.as_deref(), "session/@dateDebut");
        let end = v.required_date(s.date_fin.as_deref(), "session/@dateFin");
        let hours_centre = v.whole(s.heures_centre.as_deref(), "session/@heuresCentre");
        let hours_company = v.whole(s.heures_entreprise.as_deref(), "session/@heuresEntreprise");
        Some(Session {
            start: start?,
            end: end?,
            hours_centre,
            hours_company,
        })
    });

    let entry = raw.entree.take().and_then(|e| {
        Some(Entry {
            date: v.required_date(e.date.as_deref(), "entree/@date")?,
        })
    });

    let exit = raw.sortie.take().and_then(|x| {
        let date = v.required_date(x.date.as_deref(), "sortie/@date");
        let reason = match x.motif.as_deref() {
            None => {
                v.sc.issue_in_dossier("sortie/@motif", Rule::FieldRequired, REQUIRED);
                None
            }
            s => v.code(
                s,
                "sortie/@motif",
                ExitReason::from_external,
                "FIN, EMPLOI, AUTRE_FORMATION, ABANDON, EXCLUSION, MALADIE, FORCE_MAJEURE, DECES, AUTRE",
            ),
        };
        let result = v.code(
            x.resultat.as_deref(),
            "sortie/@resultat",
            CertificationResult::from_external,
            "OBTENUE, PARTIELLE, NON_OBTENUE, NON_PRESENTE, INCONNU",
        );
        let hours_done = v.whole(x.heures_realisees.as_deref(), "sortie/@heuresRealisees");
        Some(Exit {
            date: date?,
            reason: reason?,
            result,
            hours_done,
        })
    });

    let mut fundings = Vec::with_capacity(raw.financements.len());
    for (i, f) in raw.financements.drain(..).enumerate() {
        let n = i + 1;
        let funder = match f.financeur.as_deref() {
            None => {
                v.sc.issue_in_dossier(
                    &format!("financement[{n}]/@financeur"),
                    Rule::FieldRequired,
                    REQUIRED,
                );
                None
            }
            s => v.whole::<u8>(s, &format!("financement[{n}]/@financeur")),
        };
        let committed_cents = v.cents(f.montant_engage.as_deref(), || {
            format!("financement[{n}]/@montantEngage")
        });
        let realised_cents = v.cents(f.montant_realise.as_deref(), || {
            format!("financement[{n}]/@montantRealise")
        });
        let settled_cents = v.cents(f.montant_solde.as_deref(), || {
            format!("financement[{n}]/@montantSolde")
        });
        // Keep the funding even when its code is bad, so later indexes still match the XML's.
        // Code 1 does not exist in dict-financeurs; the rules' echo of it is dropped (see finish).
        fundings.push(Funding {
            funder: funder.unwrap_or(1),
            committed_cents,
            realised_cents,
            settled_cents,
        });
    }

    let cancellation = raw.annulation.take().and_then(|a| {
        let date = v.required_date(a.date.as_deref(), "annulation/@date");
        let initiator = match a.initiateur.as_deref() {
            None => {
                v.sc.issue_in_dossier("annulation/@initiateur", Rule::FieldRequired, REQUIRED);
                None
            }
            s => v.code(
                s,
                "annulation/@initiateur",
                Initiator::from_external,
                "STAGIAIRE, ORGANISME, FINANCEUR, PRESCRIPTEUR",
            ),
        };
        Some(crate::canonical::Cancellation {
            date: date?,
            initiator: initiator?,
            reason: a.motif,
        })
    });

    let dossier = Dossier {
        sources: vec![SourceRef {
            system: System::AtexoSem,
            id,
            version,
            updated_on,
        }],
        state: state.unwrap_or(State::Registered),
        dispositif,
        category: raw.categorie.take(),
        programme: raw.programme.take(),
        consultation,
        trainee,
        training,
        provider,
        session,
        entry,
        exit,
        fundings,
        cancellation,
        refusal: None,
        orientation: None,
        registration: None,
    };
    (dossier, state.is_some())
}

fn raw_action_missing(sc: &Scratch) -> bool {
    sc.issues
        .iter()
        .any(|i| i.pointer.ends_with("/action") && i.rule == Rule::FieldRequired)
}

/// Whether one path is the other or an ancestor of it: the same fault seen twice.
fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| {
        x.strip_prefix(y)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Steps 2 and 3 on the dossier just read: canonical values, then the domain rules.
fn finish(
    index: usize,
    raw: &mut RawDossier,
    sc: &mut Scratch,
    flow: Flow,
    settings: &DecodeSettings,
) -> Result<SemDossier, DossierError> {
    sc.path.truncate(sc.dossier_len);
    let (dossier, state_known) = to_canonical(raw, sc);
    let decoded = sc.issues.len();
    sc.path.push('/');
    let rules = crate::violation::rules_in_source_terms(
        &dossier,
        &mapping::TABLE,
        &sc.path,
        &settings.rules,
    );
    sc.path.pop();
    for r in rules {
        // A value already refused while decoding is not reported again through its placeholder,
        // and blocks required by an unknown state are not judged.
        let echo = sc.issues[..decoded]
            .iter()
            .any(|d| related(&d.pointer, &r.pointer));
        if echo || (!state_known && r.rule == Rule::StatusRequired) {
            continue;
        }
        sc.push(r);
    }
    let source = dossier.sources.first();
    let id = source.map(|s| s.id.clone()).filter(|s| !s.is_empty());
    if !sc.issues.is_empty() {
        let unit = sc.path[..sc.dossier_len].to_string();
        let (violations, unlisted) = sc.take(&unit, "in this dossier");
        return Err(DossierError {
            index,
            id,
            violations,
            unlisted,
            fatal: false,
        });
    }
    let version = source.and_then(|s| s.version).unwrap_or_default();
    let perimeter = classify(&dossier, flow, &settings.perimeter);
    Ok(SemDossier {
        index,
        id: id.unwrap_or_default(),
        version,
        dossier,
        perimeter,
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Why a canonical dossier cannot be written as ATEXO SEM XML.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("writing the export failed: {0}")]
    Io(#[from] io::Error),
    /// The dossier holds something ATEXO's format cannot say (index is 1-based).
    #[error("dossier #{index} cannot be written as ATEXO SEM XML: {reason}")]
    Unrepresentable { index: usize, reason: &'static str },
}

/// Writes `s` escaped for XML text or an attribute value. Tabs and line ends become character
/// references so attribute-value normalisation cannot turn them into spaces. Other C0 control
/// characters cannot appear in XML 1.0 at all: with `lossy` they become U+FFFD, else an error.
fn escape_into(out: &mut String, s: &str, lossy: bool) -> Result<(), &'static str> {
    let mut rest = 0;
    for (i, c) in s.char_indices() {
        let rep: Cow<'static, str> = match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            '\t' => "&#9;".into(),
            '\n' => "&#10;".into(),
            '\r' => "&#13;".into(),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                if lossy {
                    "\u{FFFD}".into()
                } else {
                    return Err("a value holds a control character XML cannot carry");
                }
            }
            _ => continue,
        };
        out.push_str(&s[rest..i]);
        out.push_str(&rep);
        rest = i + c.len_utf8();
    }
    out.push_str(&s[rest..]);
    Ok(())
}

/// A small XML writer over a reused `String`.
struct Xml {
    out: String,
    error: Option<&'static str>,
}

impl Xml {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }
    fn esc(&mut self, s: &str) {
        if let Err(e) = escape_into(&mut self.out, s, false) {
            self.error.get_or_insert(e);
        }
    }
    fn attr(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            self.esc(v);
            self.out.push('"');
        }
    }
    fn date_attr(&mut self, name: &str, d: Option<NaiveDate>) {
        if let Some(d) = d {
            let _ = write!(self.out, " {name}=\"{}\"", fmt_date(d));
        }
    }
    fn num_attr(&mut self, name: &str, n: Option<impl std::fmt::Display>) {
        if let Some(n) = n {
            let _ = write!(self.out, " {name}=\"{n}\"");
        }
    }
    fn text_elem(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => {
                let _ = write!(self.out, "<{name}>");
                self.esc(v);
                let _ = write!(self.out, "</{name}>");
            }
            None => {
                let _ = write!(self.out, "<{name}/>");
            }
        }
    }
}

/// A date as ATEXO writes it, `JJ/MM/AAAA`.
pub fn fmt_date(d: NaiveDate) -> String {
    format!("{:02}/{:02}/{:04}", d.day(), d.month(), d.year())
}

/// Cents as ATEXO writes euros: `4520,00`.
pub fn fmt_cents(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let a = c.unsigned_abs();
    format!("{sign}{},{:02}", a / 100, a % 100)
}

fn write_dossier(x: &mut Xml, d: &Dossier) -> Result<(), &'static str> {
    let src = d
        .source(System::AtexoSem)
        .ok_or("the dossier has no ATEXO SEM source (id and version)")?;
    let etat = etat_of(d.state).ok_or("ATEXO SEM has no state for a prescribed dossier")?;
    x.raw("  <dossier");
    x.attr("id", Some(&src.id));
    x.num_attr("version", src.version);
    x.date_attr("dateMaj", src.updated_on);
    x.raw(">\n");
    if let Some(disp) = &d.dispositif {
        x.raw("    <dispositif");
        x.attr("code", Some(&disp.code));
        x.attr("libelle", disp.label.as_deref());
        x.attr("agora", disp.agora.map(|a| if a { "O" } else { "N" }));
        x.raw("/>\n");
    }
    if let Some(c) = &d.category {
        x.raw("    ");
        x.text_elem("categorie", Some(c));
        x.raw("\n");
    }
    if let Some(p) = &d.programme {
        x.raw("    <programme");
        x.attr("code", Some(p));
        x.raw("/>\n");
    }
    if let Some(c) = &d.consultation {
        x.raw("    <consultation");
        x.attr("numero", Some(&c.number));
        x.attr("lot", c.lot.as_deref());
        x.raw("/>\n");
    }
    let t = &d.trainee;
    x.raw("    <stagiaire>\n      ");
    x.text_elem("nir", Some(t.nir.expose()));
    if let Some(v) = &t.birth_name {
        x.text_elem("nomNaissance", Some(v.expose()));
    }
    x.text_elem(
        "nomUsage",
        t.usage_name.as_ref().map(|v| v.expose().as_str()),
    );
    if let Some(v) = &t.first_names {
        x.text_elem("prenoms", Some(v.expose()));
    }
    if let Some(s) = t.sex {
        x.text_elem("sexe", Some(s.code()));
    }
    if let Some(b) = &t.birth_date {
        x.text_elem("dateNaissance", Some(&fmt_date(*b.expose())));
    }
    x.raw("\n");
    if let Some(p) = &t.pole_emploi_id {
        x.raw("      <identifiantPE");
        x.attr("national", p.national.as_deref());
        x.attr("regional", p.regional.as_deref());
        x.attr("codeGeo", p.geo_code.as_deref());
        x.raw("/>\n");
    }
    if t.postal_code.is_some() || t.commune_insee.is_some() {
        x.raw("      <adresse");
        x.attr("codePostal", t.postal_code.as_deref());
        x.attr("communeInsee", t.commune_insee.as_deref());
        x.raw("/>\n");
    }
    x.raw("    </stagiaire>\n");
    let tr = &d.training;
    x.raw("    <action");
    x.attr("numeroFormation", tr.numero_formation.as_deref());
    x.attr("numeroAction", tr.numero_action.as_deref());
    x.attr("numeroSession", Some(&tr.numero_session));
    x.attr("intitule", tr.title.as_deref());
    if let Some(f) = &tr.formacode {
        x.attr("formacode", Some(&f.code));
        x.attr("formacodeVersion", Some(&f.version));
    }
    x.attr("certification", tr.certification.as_deref());
    x.raw("/>\n");
    if let Some(p) = &d.provider {
        x.raw("    <organisme");
        x.attr("siret", p.siret.as_deref());
        x.attr("nda", p.nda.as_deref());
        x.attr("raisonSociale", p.name.as_deref());
        x.raw("/>\n");
    }
    if let Some(s) = &d.session {
        x.raw("    <session");
        x.date_attr("dateDebut", Some(s.start));
        x.date_attr("dateFin", Some(s.end));
        x.num_attr("heuresCentre", s.hours_centre);
        x.num_attr("heuresEntreprise", s.hours_company);
        x.raw("/>\n");
    }
    x.raw("    ");
    x.text_elem("etat", Some(etat));
    x.raw("\n");
    if let Some(e) = &d.entry {
        x.raw("    <entree");
        x.date_attr("date", Some(e.date));
        x.raw("/>\n");
    }
    if let Some(e) = &d.exit {
        x.raw("    <sortie");
        x.date_attr("date", Some(e.date));
        x.attr("motif", Some(e.reason.external()));
        x.attr("resultat", e.result.map(|r| r.external()));
        x.num_attr("heuresRealisees", e.hours_done);
        x.raw("/>\n");
    }
    for f in &d.fundings {
        x.raw("    <financement");
        x.num_attr("financeur", Some(f.funder));
        for (name, v) in [
            ("montantEngage", f.committed_cents),
            ("montantRealise", f.realised_cents),
            ("montantSolde", f.settled_cents),
        ] {
            // ATEXO writes "not yet" as an empty attribute.
            let text = v.map(fmt_cents).unwrap_or_default();
            x.attr(name, Some(&text));
        }
        x.raw("/>\n");
    }
    if let Some(c) = &d.cancellation {
        x.raw("    <annulation");
        x.date_attr("date", Some(c.date));
        x.attr("initiateur", Some(c.initiator.external()));
        x.attr("motif", c.reason.as_deref());
        x.raw("/>\n");
    }
    x.raw("  </dossier>\n");
    match x.error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes canonical dossiers as an `exportSEM` document (UTF-8), one dossier at a time; give it a
/// buffered writer. What ATEXO's format does not carry (orientation, registration, refusal) is
/// left out; the dossiers need an ATEXO SEM source for their id and version.
pub fn encode_export<'d>(
    dossiers: impl IntoIterator<Item = &'d Dossier>,
    mut w: impl Write,
) -> Result<(), EncodeError> {
    w.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\">\n")?;
    let mut x = Xml {
        out: String::with_capacity(2048),
        error: None,
    };
    for (i, d) in dossiers.into_iter().enumerate() {
        x.out.clear();
        write_dossier(&mut x, d).map_err(|reason| EncodeError::Unrepresentable {
            index: i + 1,
            reason,
        })?;
        w.write_all(x.out.as_bytes())?;
    }
    w.write_all(b"</exportSEM>\n")?;
    w.flush()?;
    Ok(())
}

/// AGORA's answer on one dossier, returned to ATEXO SEM (contract §4, `retourAgora`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgoraReturn {
    /// ATEXO's dossier id.
    pub dossier: String,
    /// The AGORA number, once assigned (*numéro AGORA*).
    pub numero_agora: Option<String>,
    /// AGORA's state after the operation, when it accepted one.
    pub etat: Option<AgoraState>,
    pub date: NaiveDate,
    /// AGORA's anomalies, when it rejected an operation.
    pub anomalies: Vec<Anomaly>,
}

/// The `retourAgora` XML of a return. Texts coming from AGORA are escaped; characters XML cannot
/// carry become U+FFFD rather than failing the return.
pub fn encode_return(r: &AgoraReturn) -> String {
    let mut out = String::with_capacity(256);
    let esc = |out: &mut String, s: &str| {
        let _ = escape_into(out, s, true);
    };
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<retourAgora dossier=\"");
    esc(&mut out, &r.dossier);
    out.push('"');
    if let Some(n) = &r.numero_agora {
        out.push_str(" numeroAgora=\"");
        esc(&mut out, n);
        out.push('"');
    }
    if let Some(e) = r.etat {
        let _ = write!(out, " etat=\"{}\"", e.as_str());
    }
    let _ = write!(out, " date=\"{}\"", fmt_date(r.date));
    if r.anomalies.is_empty() {
        out.push_str("/>\n");
        return out;
    }
    out.push('>');
    for a in &r.anomalies {
        out.push_str("<anomalie code=\"");
        esc(&mut out, &a.code);
        out.push('"');
        if let Some(c) = &a.champ {
            out.push_str(" champ=\"");
            esc(&mut out, c);
            out.push('"');
        }
        out.push('>');
        if let Some(l) = &a.libelle {
            esc(&mut out, l);
        }
        out.push_str("</anomalie>");
    }
    out.push_str("</retourAgora>\n");
    out
}
