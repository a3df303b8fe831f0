//! ATEXO SEM exports as a stream: a 200,000-dossier export (~300 MB) decodes dossier by dossier to
//! exactly the generator's truth, and the decoder's memory stays flat.
//!
//! Memory is measured in a child process running only [`stream_child`], so tests running in
//! parallel in this binary cannot disturb the figures.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use passerelle_adapters::atexo_sem::{decode_stream, DecodeSettings, Flow, Perimeter};
use passerelle_tests::generate::{dossier_id, write_atexo_export_with, GenOptions, Outcome};

const CHILD_ENV: &str = "PASSERELLE_ATEXO_STREAM_FILE";
const COUNT: usize = 200_000;
const SEED: u64 = 2024;
/// The most the resident set may grow while decoding, whatever the file size.
const MAX_GROWTH_KB: u64 = 64 * 1024;

fn options() -> GenOptions {
    GenOptions {
        seed: SEED,
        count: COUNT,
        flow: Flow::Backfill,
        ..GenOptions::default()
    }
}

/// A field of /proc/self/status, in kB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

#[test]
fn a_200k_dossier_export_decodes_as_a_stream_in_flat_memory() {
    let _heavy = crate::support::heavy_blocking();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("export-200k.xml");
    let file = BufWriter::with_capacity(1 << 20, File::create(&path).expect("create"));
    write_atexo_export_with(file, &options(), |_| {}).expect("generate");
    let size = std::fs::metadata(&path).expect("size").len();
    assert!(size > 200 * 1024 * 1024, "the export is only {size} bytes");

    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "atexo_sem::stream_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .output()
        .expect("child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("export: {} MB\n{stderr}", size / (1024 * 1024));
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("decoded 200000 dossiers"),
        "the child did not run:\n{stdout}\n{stderr}"
    );
}

/// The measured part; does nothing unless started by the test above.
#[test]
fn stream_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    decode_and_measure(Path::new(&path));
}

fn decode_and_measure(path: &Path) {
    // The truth, regenerated into a sink: one small value per dossier.
    let mut truth: Vec<Outcome> = Vec::with_capacity(COUNT);
    write_atexo_export_with(std::io::sink(), &options(), |t| truth.push(t.outcome)).expect("truth");

    let settings = DecodeSettings::default();
    let rss_before = status_kb("VmRSS");
    let mut rss_max = rss_before;
    let reader = BufReader::with_capacity(256 * 1024, File::open(path).expect("open"));
    let (mut valid, mut invalid, mut out) = (0usize, 0usize, 0usize);
    let mut n = 0usize;
    for item in decode_stream(reader, Flow::Backfill, &settings) {
        n += 1;
        let index = match &item {
            Ok(d) => d.index,
            Err(e) => {
                assert!(!e.fatal, "fatal error: {e}");
                e.index
            }
        };
        assert_eq!(index, n, "dossiers come in document order");
        match (&item, truth[index - 1]) {
            (Ok(d), Outcome::Valid(state)) => {
                assert_eq!(d.id, dossier_id(SEED, index));
                assert_eq!((d.dossier.state, &d.perimeter), (state, &Perimeter::In));
                valid += 1;
            }
            (Ok(d), Outcome::OutOfPerimeter(reason)) => {
                match &d.perimeter {
                    Perimeter::Out(o) => assert!(reason.matches(o), "#{index}: {reason:?} / {o:?}"),
                    Perimeter::In => panic!("#{index} should be out of perimeter ({reason:?})"),
                }
                out += 1;
            }
            (Err(e), Outcome::Invalid(rule)) => {
                assert!(e.violations.iter().all(|v| v.rule == rule), "#{index}: {e}");
                invalid += 1;
            }
            (item, expected) => panic!("#{index}: expected {expected:?}, got {item:?}"),
        }
        if n.is_multiple_of(5000) {
            rss_max = rss_max.max(status_kb("VmRSS"));
        }
    }
    let hwm = status_kb("VmHWM");
    rss_max = rss_max.max(status_kb("VmRSS"));

    let expected = |f: fn(&Outcome) -> bool| truth.iter().filter(|o| f(o)).count();
    assert_eq!(n, COUNT);
    assert_eq!(valid, expected(|o| matches!(o, Outcome::Valid(_))));
    assert_eq!(invalid, expected(|o| matches!(o, Outcome::Invalid(_))));
    assert_eq!(out, expected(|o| matches!(o, Outcome::OutOfPerimeter(_))));
    let growth = rss_max - rss_before;
    eprintln!(
        "decoded {n} dossiers: {valid} valid, {invalid} invalid, {out} out of perimeter; \
         VmRSS before {rss_before} kB, max during {rss_max} kB (growth {growth} kB), VmHWM {hwm} kB"
    );
    assert!(
        growth < MAX_GROWTH_KB,
        "memory grew by {growth} kB while decoding (limit {MAX_GROWTH_KB} kB)"
    );
    // The peak of the whole process, generation of the truth included, stays modest too.
    assert!(hwm < rss_before + MAX_GROWTH_KB, "VmHWM {hwm} kB");
}
