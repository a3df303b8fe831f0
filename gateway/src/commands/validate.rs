//! `passerelle validate`: decodes and validates a file, sends nothing (contract §5).
//!
//! An ATEXO SEM export is streamed dossier by dossier, so a file of hundreds of MB is checked in
//! constant memory; each dossier is reported as soon as it is read.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use passerelle_adapters::{Dossier, System, Violation};
use serde::Serialize;

use crate::cli::ValidateFormat;

/// One line of `--format json` (contract §5).
#[derive(Debug, Serialize)]
struct Line<'a> {
    id: Option<&'a str>,
    valid: bool,
    errors: &'a [Violation],
    #[serde(skip_serializing_if = "Option::is_none")]
    dossier: Option<&'a Dossier>,
}

#[derive(Debug, Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    out_of_perimeter: usize,
}

struct Report<'w, W: Write> {
    out: &'w mut W,
    format: ValidateFormat,
    tally: Tally,
}

impl<W: Write> Report<'_, W> {
    fn valid(
        &mut self,
        id: &str,
        index: Option<usize>,
        d: &Dossier,
        note: Option<&str>,
    ) -> std::io::Result<()> {
        self.tally.valid += 1;
        match self.format {
            ValidateFormat::Json => self.json(Line {
                id: Some(id),
                valid: true,
                errors: &[],
                dossier: Some(d),
            }),
            ValidateFormat::Text => {
                let at = index.map(|i| format!(" (dossier {i})")).unwrap_or_default();
                let note = note.map(|n| format!(", {n}")).unwrap_or_default();
                writeln!(self.out, "ok    {id}{at}: {}{note}", d.state.as_str())
            }
        }
    }

    fn invalid(
        &mut self,
        id: Option<&str>,
        index: Option<usize>,
        errors: &[Violation],
    ) -> std::io::Result<()> {
        self.tally.invalid += 1;
        match self.format {
            ValidateFormat::Json => self.json(Line {
                id,
                valid: false,
                errors,
                dossier: None,
            }),
            ValidateFormat::Text => {
                let at = match index {
                    Some(0) => " (document)".to_string(),
                    Some(i) => format!(" (dossier {i})"),
                    None => String::new(),
                };
                writeln!(
                    self.out,
                    "FAIL  {}{at}: {} violation(s)",
                    id.unwrap_or("?"),
                    errors.len()
                )?;
                for v in errors {
                    writeln!(self.out, "      {}  [{}]  {}", v.pointer, v.rule, v.detail)?;
                }
                Ok(())
            }
        }
    }

    fn json(&mut self, line: Line<'_>) -> std::io::Result<()> {
        serde_json::to_writer(&mut *self.out, &line)?;
        self.out.write_all(b"\n")
    }

    fn finish(self) -> std::io::Result<ExitCode> {
        let t = &self.tally;
        if self.format == ValidateFormat::Text {
            writeln!(
                self.out,
                "{} dossier(s): {} valid ({} out of AGORA's perimeter), {} invalid",
                t.valid + t.invalid,
                t.valid,
                t.out_of_perimeter,
                t.invalid
            )?;
        }
        Ok(if t.invalid == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

pub fn run(
    system: System,
    file: &Path,
    format: ValidateFormat,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut report = Report {
        out,
        format,
        tally: Tally::default(),
    };
    let source = passerelle_adapters::sources::source(system)
        .with_context(|| format!("{system} is not a source system"))?;
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let settings = passerelle_adapters::sources::DecodeSettings::default();
    let records = source
        .decode_file(
            Box::new(BufReader::with_capacity(1 << 16, f)),
            &passerelle_adapters::sources::Reading::sync(&settings),
        )
        .with_context(|| format!("{} records do not come as files", source.label()))?;
    for record in records {
        match &record.outcome {
            Ok(d) => {
                let note = record.out_of_perimeter.map(|why| {
                    report.tally.out_of_perimeter += 1;
                    format!("out of AGORA's perimeter ({why})")
                });
                let id = record.id.as_deref().unwrap_or_default();
                report.valid(id, record.index, d, note.as_deref())?;
            }
            Err(errors) => report.invalid(record.id.as_deref(), record.index, errors)?,
        }
    }
    Ok(report.finish()?)
}
