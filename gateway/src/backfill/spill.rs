//! What decoding alone says of each input dossier, written while the input is read for the
//! ledger, so the report does not decode (and validate) the whole export a second time.
//!
//! One anonymous temporary file per input, one JSON line per dossier in input order: an
//! [`Item`]. Every run reads each input whole (dossiers committed by an earlier run are skipped
//! only after decoding), so the spill of a run that got to its report is always complete. It
//! holds ATEXO ids, salted dossier ids, rule codes and pointers: no personal value. The file has
//! no name and disappears with the process.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};

use super::Item;

/// Where the decoder thread writes its items.
#[derive(Debug)]
pub(super) struct SpillWriter {
    w: BufWriter<File>,
}

impl SpillWriter {
    pub(super) fn new() -> io::Result<Self> {
        Ok(SpillWriter {
            w: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
        })
    }

    pub(super) fn push(&mut self, item: &Item) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, item)?;
        self.w.write_all(b"\n")
    }

    /// Flushes and rewinds: the items, in the order they were written.
    pub(super) fn finish(self) -> io::Result<SpillReader> {
        let mut f = self.w.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        Ok(SpillReader {
            r: BufReader::with_capacity(1 << 20, f),
            line: String::new(),
        })
    }
}

/// The items of one input, read back.
#[derive(Debug)]
pub(super) struct SpillReader {
    r: BufReader<File>,
    line: String,
}

impl Iterator for SpillReader {
    type Item = io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        self.line.clear();
        match self.r.read_line(&mut self.line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&self.line).map_err(io::Error::from)),
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::report::{Entry, Outcome, ReportError};

    #[test]
    fn items_come_back_in_order_and_whole() {
        let items = vec![
            Item::Owed {
                id: "D-1".into(),
                dossier_id: "abc".into(),
            },
            Item::Done(Entry {
                id: "#2".into(),
                outcome: Outcome::Invalid,
                numero_agora: None,
                reason: Some("unreadable_document".into()),
                errors: vec![ReportError::other("xml.syntax", "line 3: \"quoted\"\n")],
            }),
            Item::Done(Entry {
                id: "D-3".into(),
                outcome: Outcome::OutOfPerimeter,
                numero_agora: None,
                reason: Some("before_since".into()),
                errors: Vec::new(),
            }),
        ];
        let mut w = SpillWriter::new().expect("a temporary file");
        for i in &items {
            w.push(i).expect("written");
        }
        let back: Vec<Item> = w
            .finish()
            .expect("rewound")
            .map(|i| i.expect("read back"))
            .collect();
        assert_eq!(back, items);
    }
}
