//! A posted document, decoded whole (contract §1: accepted or rejected whole), within limits a
//! hostile post cannot stretch: at most [`MAX_PER_DOCUMENT`] violations listed, and, with
//! [`decode_document_within`], a deadline.
//!
//! Over the cap, decoding goes on (only counting) so the final `xml.truncated` entry can say how
//! many more violations there were. At the deadline it stops: a document already known invalid is
//! refused with what was found and a final entry saying where reading stopped; a document with
//! nothing wrong so far cannot be judged, which is [`DocumentError::OverBudget`].

use std::time::Instant;

use super::{decode_stream, DecodeSettings, DossierStream, Flow, SemDossier};
use crate::violation::{truncated, Rule, Violation, Violations};
pub use crate::violation::{DocumentError, MAX_PER_DOCUMENT};

/// Decodes a whole posted document: every dossier when all are valid, or every violation of every
/// dossier (at most [`MAX_PER_DOCUMENT`] listed).
pub fn decode_document(
    bytes: &[u8],
    flow: Flow,
    settings: &DecodeSettings,
) -> Result<Vec<SemDossier>, Violations> {
    match gather(decode_stream(bytes, flow, settings)) {
        Ok(d) => Ok(d),
        Err(DocumentError::Invalid(v)) => Err(v),
        // Without a deadline the stream never stops early; should it ever, say so.
        Err(DocumentError::OverBudget { .. }) => Err(Violations(vec![Violation::new(
            "/exportSEM",
            Rule::XmlTruncated,
            "decoding stopped before the end of the document",
        )])),
    }
}

/// [`decode_document`], stopping at `deadline`. Decoding is blocking: run it off the async
/// workers (a blocking pool), so a costly post delays nobody else.
pub fn decode_document_within(
    bytes: &[u8],
    flow: Flow,
    settings: &DecodeSettings,
    deadline: Instant,
) -> Result<Vec<SemDossier>, DocumentError> {
    gather(decode_stream(bytes, flow, settings).with_deadline(deadline))
}

fn gather(mut stream: DossierStream<'_>) -> Result<Vec<SemDossier>, DocumentError> {
    let mut ok = Vec::new();
    let mut listed: Vec<Violation> = Vec::new();
    // Violations found and not listed.
    let mut unlisted = 0usize;
    for item in stream.by_ref() {
        let e = match item {
            // Once the document is refused, its valid dossiers are of no use: not kept.
            Ok(d) if listed.is_empty() => {
                ok.push(d);
                continue;
            }
            Ok(_) => continue,
            Err(e) => e,
        };
        for v in e.violations {
            if listed.len() < MAX_PER_DOCUMENT {
                listed.push(v);
            } else if v.rule == Rule::XmlTruncated {
                // A dossier's own "n more" entry, itself left out: its n are left out too.
                unlisted += e.unlisted;
            } else {
                unlisted += 1;
            }
        }
    }
    if stream.over_budget() {
        if listed.is_empty() {
            return Err(DocumentError::OverBudget {
                dossiers_read: stream.dossiers_read(),
            });
        }
        let mut detail = format!(
            "decoding stopped at its time budget in dossier {}: the rest of the document was \
             not checked",
            stream.dossiers_read()
        );
        if unlisted > 0 {
            detail.push_str(&format!(
                ", and {unlisted} more violation(s) found before were not listed"
            ));
        }
        listed.push(Violation::new("/exportSEM", Rule::XmlTruncated, detail));
        return Err(DocumentError::Invalid(Violations(listed)));
    }
    if unlisted > 0 {
        listed.push(truncated("/exportSEM", unlisted, "in this document"));
    }
    if listed.is_empty() && ok.is_empty() {
        listed.push(Violation::new(
            "/exportSEM/dossier",
            Rule::FieldRequired,
            "an export must hold at least one dossier",
        ));
    }
    if listed.is_empty() {
        Ok(ok)
    } else {
        Err(DocumentError::Invalid(Violations(listed)))
    }
}
