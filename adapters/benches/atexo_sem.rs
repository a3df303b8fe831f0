//! Throughput of the ATEXO SEM decoder, in dossiers per second:
//! (a) quick-xml's bare event loop over the export, the floor any decoder pays;
//! (b) `decode_stream`: events → raw record → canonical dossier → domain rules → perimeter.
//!
//! `cargo bench -p passerelle-adapters --bench atexo_sem`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use passerelle_adapters::atexo_sem::{decode_stream, encode_export, DecodeSettings, Flow};
use passerelle_adapters::Dossier;
use quick_xml::events::Event;

const N: usize = 10_000;

/// The valid fixtures (every state, co-funding, out-of-perimeter cases), decoded once.
fn templates() -> Vec<Dossier> {
    let files: [&[u8]; 9] = [
        include_bytes!("../../tests/fixtures/atexo_sem/valid/inscrit.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/valide.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/entre.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/sorti.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/service_fait.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/solde.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/refuse.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/annule.xml"),
        include_bytes!("../../tests/fixtures/atexo_sem/valid/mixed.xml"),
    ];
    let settings = DecodeSettings::default();
    files
        .iter()
        .flat_map(|f| decode_stream(*f, Flow::Sync, &settings))
        .map(|d| d.expect("valid fixture").dossier)
        .collect()
}

/// An export of `n` dossiers, each with its own id and session number.
fn export(n: usize) -> Vec<u8> {
    let templates = templates();
    let dossiers: Vec<Dossier> = (0..n)
        .map(|i| {
            let mut d = templates[i % templates.len()].clone();
            d.sources[0].id = format!("BENCH-{i:08}");
            d.training.numero_session = format!("{}", 1_000_000 + i);
            d
        })
        .collect();
    let mut out = Vec::with_capacity(n * 1600);
    encode_export(&dossiers, &mut out).expect("encode");
    out
}

fn bench(c: &mut Criterion) {
    let xml = export(N);
    let settings = DecodeSettings::default();
    let mut g = c.benchmark_group("atexo_sem");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);

    g.bench_function(BenchmarkId::new("quick_xml_events", N), |b| {
        let mut buf = Vec::with_capacity(4096);
        b.iter(|| {
            let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
            reader.config_mut().trim_text(true);
            let mut events = 0usize;
            loop {
                buf.clear();
                match reader.read_event_into(&mut buf).expect("well-formed") {
                    Event::Eof => break,
                    _ => events += 1,
                }
            }
            events
        })
    });

    g.bench_function(BenchmarkId::new("decode_stream", N), |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for item in decode_stream(xml.as_slice(), Flow::Backfill, &settings) {
                ok += usize::from(item.is_ok());
            }
            assert_eq!(ok, N);
            ok
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
