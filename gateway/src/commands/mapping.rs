//! `passerelle mapping`: the correspondence document, generated from the adapters' tables.

use std::io::Write;
use std::process::ExitCode;

use passerelle_adapters::mapping::{render, Format};

use crate::cli::MappingFormat;

pub fn run(format: MappingFormat, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let format = match format {
        MappingFormat::Markdown => Format::Markdown,
        MappingFormat::Csv => Format::Csv,
    };
    out.write_all(render(format).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
