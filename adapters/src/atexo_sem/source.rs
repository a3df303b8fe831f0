//! The XML source: the encoding sniffed and transcoded at opening, then the stream of dossiers
//! ([`DossierStream`]), one `<dossier>` at a time.

#[allow(unused_imports)]
use super::*;

pub(super) type Source<'a> = Box<dyn BufRead + Send + 'a>;

/// The root element's path.
pub(super) const ROOT: &str = "/exportSEM";
/// Buffer of the transcoder's output: large enough that quick-xml rarely refills mid-event.
pub(super) const TRANSCODE_BUFFER: usize = 64 * 1024;
/// How far the XML declaration is looked for.
pub(super) const PROLOG_MAX: usize = 1024;

/// Reads the prolog, decides the encoding and returns a reader of UTF-8 bytes, and whether the
/// document declared ISO-8859-1.
///
/// ISO-8859-1 is decoded as windows-1252, as WHATWG (and so encoding_rs) maps the label: ATEXO's
/// legacy exports labelled ISO-8859-1 carry windows-1252 characters (œ ’ €) in the C1 range, which
/// true ISO-8859-1 would turn into control characters.
pub(super) fn open<'a>(mut r: impl BufRead + Send + 'a) -> Result<(Source<'a>, bool), Violation> {
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
pub(super) fn declared_encoding(decl: &[u8]) -> Option<&[u8]> {
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
pub(super) enum Stage {
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
