//! `passerelle validate`: decodes and validates a file, sends nothing (contract §5).
//!
//! An ATEXO SEM export is streamed dossier by dossier, so a file of hundreds of MB is checked in
//! constant memory; each dossier is reported as soon as it is read.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use passerelle_adapters::atexo_sem::{self, DecodeSettings, Flow, Perimeter};
use passerelle_adapters::rules::RuleSettings;
use passerelle_adapters::{ouiform, Dossier, Violation};
use serde::Serialize;

use crate::cli::{InputSystem, ValidateFormat};

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
    system: InputSystem,
    file: &Path,
    format: ValidateFormat,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut report = Report {
        out,
        format,
        tally: Tally::default(),
    };
    match system {
        InputSystem::AtexoSem => {
            let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let settings = DecodeSettings::default();
            for item in atexo_sem::decode_stream(
                BufReader::with_capacity(1 << 16, f),
                Flow::Sync,
                &settings,
            ) {
                match item {
                    Ok(d) => {
                        let note = match &d.perimeter {
                            Perimeter::In => None,
                            Perimeter::Out(why) => {
                                report.tally.out_of_perimeter += 1;
                                Some(format!("out of AGORA's perimeter ({})", why.code()))
                            }
                        };
                        report.valid(&d.id, Some(d.index), &d.dossier, note.as_deref())?;
                    }
                    Err(e) => report.invalid(e.id.as_deref(), Some(e.index), &e.violations)?,
                }
            }
        }
        InputSystem::Ouiform => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            match ouiform::decode(&bytes, &RuleSettings::default()) {
                Ok(d) => {
                    let id = d.sources.first().map(|s| s.id.clone()).unwrap_or_default();
                    report.valid(&id, None, &d, None)?;
                }
                Err(errors) => {
                    // The id, when the body is JSON enough to have one, helps find the orientation.
                    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| {
                            v.get("idOrientation")
                                .and_then(|i| i.as_str())
                                .map(str::to_owned)
                        });
                    report.invalid(id.as_deref(), None, &errors)?;
                }
            }
        }
    }
    Ok(report.finish()?)
}
