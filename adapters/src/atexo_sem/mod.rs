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

// The adapter along its own steps: perimeter, XML source, decoding (shape, then values),
// encoding, returns.
mod decode;
mod encode;
mod perimeter;
mod returns;
mod source;
mod values;
use decode::*;
pub use encode::*;
pub use perimeter::*;
pub use returns::*;
pub use source::*;
pub use values::*;
