//! The `exportSEM` document with the trainee's personal values masked, for the message journal.
//!
//! The journal keeps what was received for a retention period, but never a NIR, a name, a birth
//! date or a Pôle emploi id: [`mask_export`] rewrites the document event by event (quick-xml reader
//! to writer, constant memory whatever its size) and replaces each value with its
//! [`Identifier`]'s one mask: the NIR keeps its first character and its length, as the admin
//! trace shows it, the others become [`MASK`].
//!
//! What is masked: the content of `nir`, `nomNaissance`, `nomUsage`, `prenoms` and
//! `dateNaissance`, and the `national` and `regional` attributes of `identifiantPE`, wherever they
//! are inside a `stagiaire` element, at any depth. The same names outside a `stagiaire` are not
//! personal data in the contract and are copied as they are. Names are matched without their
//! namespace prefix, so `<x:nir>` under a trainee is masked too: over-masking a malformed document
//! costs nothing, under-masking leaks.
//!
//! Everything else keeps its meaning: elements, attributes and their order, text, CDATA and
//! character references are copied as read. The few changes are those a journal needs: the output
//! is always UTF-8 behind its own declaration (an ISO-8859-1 input is decoded exactly as
//! [`super::decode_stream`] decodes it, by the same code), and comments and processing instructions
//! are dropped, since the format gives them no meaning and nothing bounds what they may quote.
//!
//! Like the decoder, a DOCTYPE is refused before anything is expanded. Errors name a byte position
//! at most, never a piece of the document: quick-xml's own messages can quote tag and entity names,
//! so they are not passed on.

use std::io::{self, BufRead, Write};

use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::{is_xml_space, open, Source};
use crate::canonical::{Identifier, MASK};
use crate::violation::Violation;

/// Why an export could not be masked. No variant carries a value of the document.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// Refused at its prolog, as the decoder refuses it (encoding neither UTF-8 nor ISO-8859-1,
    /// byte order mark contradicting the declaration, unreadable input).
    #[error("the export cannot be read: {}", .0.detail)]
    Encoding(Violation),
    /// Not well-formed XML. The position counts UTF-8 bytes after transcoding.
    #[error("the export is not well-formed XML near byte {position}")]
    Syntax { position: u64 },
    /// A document declared UTF-8 holding other bytes: copied, they would make the output invalid.
    #[error("the export holds bytes that are not UTF-8 near byte {position}")]
    NotUtf8 { position: u64 },
    #[error("a DOCTYPE is not accepted: entities are never expanded")]
    Doctype,
    #[error("the root element must be exportSEM")]
    NotAnExport,
    #[error("writing the masked export failed")]
    Write(#[source] io::Error),
}

/// Which element a start tag opens, as far as masking is concerned.
enum Kind {
    /// A trainee field whose text is personal, and what it holds.
    PersonalText(Identifier),
    /// `identifiantPE`, whose ids are personal.
    PoleEmploiId,
    /// `stagiaire`: what it contains is the trainee's.
    Trainee,
    Other,
}

fn kind(e: &BytesStart<'_>, in_trainee: bool) -> Kind {
    match e.local_name().as_ref() {
        b"stagiaire" => Kind::Trainee,
        b"nir" if in_trainee => Kind::PersonalText(Identifier::Nir),
        b"nomNaissance" | b"nomUsage" | b"prenoms" if in_trainee => {
            Kind::PersonalText(Identifier::Name)
        }
        b"dateNaissance" if in_trainee => Kind::PersonalText(Identifier::BirthDate),
        b"identifiantPE" if in_trainee => Kind::PoleEmploiId,
        _ => Kind::Other,
    }
}

/// [`mask_stream`] over a document in memory.
pub fn mask_export(xml: &[u8]) -> Result<Vec<u8>, MaskError> {
    let mut out = Vec::with_capacity(xml.len() + 64);
    mask_stream(xml, &mut out)?;
    Ok(out)
}

/// Writes `input`, an `exportSEM` document in UTF-8 or ISO-8859-1, to `output` as UTF-8 with the
/// trainee's personal values masked (see the module's documentation). Give it a buffered writer.
/// On error, `output` may hold a partial document: write to a buffer if that matters.
pub fn mask_stream(input: impl BufRead + Send, output: impl Write) -> Result<(), MaskError> {
    let (source, _) = open(input).map_err(MaskError::Encoding)?;
    let mut reader = Reader::from_reader(source);
    let config = reader.config_mut();
    // The layout is copied too: only the masked values change.
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut w = Writer::new(output);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(write_failed)?;
    let mut buf = Vec::with_capacity(4096);
    // Open elements, and how many of them were open when the outermost `stagiaire` was entered.
    let mut depth = 0usize;
    let mut trainee_at: Option<usize> = None;
    let mut root_seen = false;
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|_| syntax_at(reader.error_position()))?;
        let position = reader.buffer_position();
        match event {
            Event::DocType(_) => return Err(MaskError::Doctype),
            // Our own declaration replaces the input's, whose encoding no longer holds.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof if depth == 0 && root_seen => break,
            Event::Eof => return Err(syntax_at(position)),
            Event::Text(t) => {
                if depth == 0 && !t.iter().all(|&b| is_xml_space(char::from(b))) {
                    return Err(syntax_at(position));
                }
                utf8(&t, position)?;
                w.write_event(Event::Text(t)).map_err(write_failed)?;
            }
            Event::CData(c) => {
                if depth == 0 {
                    return Err(syntax_at(position));
                }
                utf8(&c, position)?;
                w.write_event(Event::CData(c)).map_err(write_failed)?;
            }
            Event::End(e) => {
                utf8(&e, position)?;
                w.write_event(Event::End(e)).map_err(write_failed)?;
                if trainee_at == Some(depth) {
                    trainee_at = None;
                }
                depth = depth.saturating_sub(1);
            }
            // A second root, as the decoder refuses it.
            Event::Start(_) | Event::Empty(_) if depth == 0 && root_seen => {
                return Err(syntax_at(position));
            }
            Event::Start(e) | Event::Empty(e)
                if depth == 0 && e.name().as_ref() != b"exportSEM" =>
            {
                return Err(MaskError::NotAnExport);
            }
            Event::Start(e) => {
                root_seen = true;
                utf8(&e, position)?;
                match kind(&e, trainee_at.is_some()) {
                    Kind::PersonalText(identifier) => {
                        w.write_event(Event::Start(e)).map_err(write_failed)?;
                        mask_text(&mut reader, &mut buf, &mut w, identifier)?;
                        continue;
                    }
                    Kind::PoleEmploiId => {
                        let masked = mask_ids(&e, position)?;
                        w.write_event(Event::Start(masked)).map_err(write_failed)?;
                    }
                    Kind::Trainee => {
                        w.write_event(Event::Start(e)).map_err(write_failed)?;
                        trainee_at.get_or_insert(depth + 1);
                    }
                    Kind::Other => w.write_event(Event::Start(e)).map_err(write_failed)?,
                }
                depth += 1;
            }
            Event::Empty(e) => {
                root_seen = true;
                utf8(&e, position)?;
                // An empty personal element stays empty: ATEXO writes `<nomUsage/>` for "none".
                let e = match kind(&e, trainee_at.is_some()) {
                    Kind::PoleEmploiId => mask_ids(&e, position)?,
                    _ => e,
                };
                w.write_event(Event::Empty(e)).map_err(write_failed)?;
            }
        }
    }
    w.into_inner().flush().map_err(MaskError::Write)
}

/// Longest value kept while masking, to give its mask the value's shape (a NIR's first character
/// and length): a NIR has 15 characters; a longer value is no NIR, and becomes [`MASK`].
const VALUE_READ: usize = 64;

/// Reads a personal element's content up to its end tag and writes its mask instead, then the end
/// tag. Content that the decoder would read as no value (nothing, whitespace) is not masked, so an
/// absent value stays absent; anything else becomes one mask: the value's, as [`Identifier::mask`]
/// makes it from the text the decoder would read (trimmed), or [`MASK`] when the content is not
/// plain text (child elements) or is longer than any such value.
fn mask_text<W: Write>(
    reader: &mut Reader<Source<'_>>,
    buf: &mut Vec<u8>,
    w: &mut Writer<W>,
    identifier: Identifier,
) -> Result<(), MaskError> {
    let mut depth = 0usize;
    let mut filled = false;
    // The text as the decoder reads it, while it is plain and short.
    let mut value = Some(String::new());
    let keep = |value: &mut Option<String>, text: Option<&str>| {
        if let (Some(v), Some(t)) = (value.as_mut(), text) {
            if v.len() + t.len() <= VALUE_READ {
                v.push_str(t);
                return;
            }
        }
        *value = None;
    };
    loop {
        buf.clear();
        let event = reader
            .read_event_into(buf)
            .map_err(|_| syntax_at(reader.error_position()))?;
        let position = reader.buffer_position();
        match event {
            Event::Text(t) => {
                filled |= !blank_text(&t);
                let text = std::str::from_utf8(&t).ok();
                let text = text.and_then(|t| quick_xml::escape::unescape(t).ok());
                keep(&mut value, text.as_deref());
            }
            Event::CData(c) => {
                filled |= !c.iter().all(|&b| is_xml_space(char::from(b)));
                keep(&mut value, std::str::from_utf8(&c).ok());
            }
            Event::Start(_) => {
                filled = true;
                value = None;
                depth += 1;
            }
            Event::Empty(_) => {
                filled = true;
                value = None;
            }
            Event::End(e) if depth == 0 => {
                if filled {
                    let shown = value.map_or_else(
                        || MASK.to_string(),
                        |v| identifier.mask(v.trim_matches(is_xml_space)),
                    );
                    w.write_event(Event::Text(BytesText::new(&shown)))
                        .map_err(write_failed)?;
                }
                utf8(&e, position)?;
                return w.write_event(Event::End(e)).map_err(write_failed);
            }
            Event::End(_) => depth -= 1,
            Event::DocType(_) => return Err(MaskError::Doctype),
            Event::Eof => return Err(syntax_at(position)),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
}

/// Whether a text event holds no value once references are resolved, as the decoder trims it.
fn blank_text(raw: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(raw) else {
        return false;
    };
    if !s.contains('&') {
        return s.chars().all(is_xml_space);
    }
    quick_xml::escape::unescape(s).is_ok_and(|s| s.chars().all(is_xml_space))
}

/// `identifiantPE`'s tag with its ids masked; other attributes are copied as written.
fn mask_ids(e: &BytesStart<'_>, position: u64) -> Result<BytesStart<'static>, MaskError> {
    let name = utf8(e.name().into_inner(), position)?;
    let mut content = String::with_capacity(e.len() + 8);
    content.push_str(name);
    // Without quick-xml's duplicate check, which is quadratic in the number of attributes: the
    // attributes are copied as written, duplicates included (the decoder refuses those).
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    for a in attributes {
        let a = a.map_err(|_| syntax_at(position))?;
        let key = utf8(a.key.as_ref(), position)?;
        let raw = utf8(&a.value, position)?;
        let personal = matches!(a.key.local_name().as_ref(), b"national" | b"regional");
        let masked;
        let value = if personal && !blank_text(raw.as_bytes()) {
            masked = Identifier::PoleEmploiId.mask(raw);
            masked.as_str()
        } else {
            raw
        };
        // A value read between single quotes may hold a double one.
        let quote = if value.contains('"') { '\'' } else { '"' };
        content.push(' ');
        content.push_str(key);
        content.push('=');
        content.push(quote);
        content.push_str(value);
        content.push(quote);
    }
    Ok(BytesStart::from_content(content, name.len()))
}

/// Bytes about to be copied, checked to be UTF-8 as the output declares.
fn utf8(bytes: &[u8], position: u64) -> Result<&str, MaskError> {
    std::str::from_utf8(bytes).map_err(|_| MaskError::NotUtf8 { position })
}

fn syntax_at(position: u64) -> MaskError {
    MaskError::Syntax { position }
}

/// The writer's errors are I/O errors; any other would not be ours to describe.
fn write_failed(e: quick_xml::Error) -> MaskError {
    match e {
        quick_xml::Error::Io(shared) => MaskError::Write(
            std::sync::Arc::try_unwrap(shared)
                .unwrap_or_else(|shared| io::Error::new(shared.kind(), "writing failed")),
        ),
        _ => MaskError::Write(io::Error::other("the XML writer failed")),
    }
}
