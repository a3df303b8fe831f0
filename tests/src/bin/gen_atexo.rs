//! Writes a synthetic ATEXO SEM export for backfill rehearsals and tests:
//! `gen_atexo --count N --seed S --out FILE [--flow backfill|sync] [--truth FILE]`.
//! With `--truth`, one line per dossier: `index<TAB>id<TAB>expected outcome`.
//! `gen_atexo --count N --seed S --verify FILE [--flow …]` instead decodes FILE as a stream and
//! checks each dossier against what the generator meant (a rehearsal of the backfill's reading,
//! and a way to measure its memory with `/usr/bin/time -v`).

use std::io::{BufWriter, Write};

use passerelle_adapters::atexo_sem::{decode_stream, DecodeSettings, Flow, Perimeter};
use passerelle_tests::generate::{dossier_id, write_atexo_export_with, GenOptions, Outcome};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = GenOptions::default();
    let mut out = None;
    let mut truth_path = None;
    let mut verify = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--count" => opts.count = value()?.parse()?,
            "--seed" => opts.seed = value()?.parse()?,
            "--out" => out = Some(value()?),
            "--truth" => truth_path = Some(value()?),
            "--verify" => verify = Some(value()?),
            "--flow" => {
                opts.flow = match value()?.as_str() {
                    "sync" => Flow::Sync,
                    "backfill" => Flow::Backfill,
                    other => return Err(format!("unknown flow {other}").into()),
                }
            }
            "-h" | "--help" => {
                println!(
                    "gen_atexo --count N --seed S --out FILE [--flow backfill|sync] [--truth FILE]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if let Some(path) = verify {
        return verify_file(&path, &opts);
    }
    let out = out.ok_or("--out FILE is required")?;
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let mut truth = match &truth_path {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let (mut valid, mut invalid, mut out_of_perimeter) = (0usize, 0usize, 0usize);
    let mut truth_error = None;
    write_atexo_export_with(file, &opts, |t| {
        match t.outcome {
            Outcome::Valid(_) => valid += 1,
            Outcome::Invalid(_) => invalid += 1,
            Outcome::OutOfPerimeter(_) => out_of_perimeter += 1,
        }
        if let Some(w) = truth.as_mut() {
            if let Err(e) = writeln!(
                w,
                "{}\t{}\t{:?}",
                t.index,
                dossier_id(opts.seed, t.index),
                t.outcome
            ) {
                truth_error.get_or_insert(e);
            }
        }
    })?;
    if let Some(e) = truth_error {
        return Err(e.into());
    }
    if let Some(mut w) = truth {
        w.flush()?;
    }
    eprintln!(
        "{out}: {} dossiers (valid {valid}, invalid {invalid}, out of perimeter {out_of_perimeter}; flow {:?})",
        opts.count, opts.flow
    );
    Ok(())
}

/// Decodes `path` as a stream and compares each dossier with the generator's truth.
fn verify_file(path: &str, opts: &GenOptions) -> Result<(), Box<dyn std::error::Error>> {
    let mut truth: Vec<Outcome> = Vec::with_capacity(opts.count);
    write_atexo_export_with(std::io::sink(), opts, |t| truth.push(t.outcome))?;
    let reader = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let started = std::time::Instant::now();
    let (mut n, mut mismatches) = (0usize, 0usize);
    for item in decode_stream(reader, opts.flow, &DecodeSettings::default()) {
        n += 1;
        let expected = truth.get(n - 1).copied();
        let ok = match (&item, expected) {
            (Ok(d), Some(Outcome::Valid(s))) => {
                d.dossier.state == s && d.perimeter == Perimeter::In
            }
            (Ok(d), Some(Outcome::OutOfPerimeter(r))) => {
                matches!(&d.perimeter, Perimeter::Out(o) if r.matches(o))
            }
            (Err(e), Some(Outcome::Invalid(rule))) => e.violations.iter().all(|v| v.rule == rule),
            _ => false,
        };
        if !ok {
            mismatches += 1;
            if mismatches <= 10 {
                eprintln!(
                    "#{n}: expected {expected:?}, got {:?}",
                    item.map(|d| d.perimeter)
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{path}: {n} dossiers decoded in {secs:.1} s ({:.0} dossiers/s), {mismatches} mismatches",
        n as f64 / secs
    );
    if mismatches > 0 || n != opts.count {
        return Err(format!("{mismatches} mismatches, {n} of {} dossiers", opts.count).into());
    }
    Ok(())
}
