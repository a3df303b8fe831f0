//! The bodies of the fuzz targets (`adapters/fuzz/fuzz_targets/`), kept here so the workspace's
//! own tests run them too: `adapters/tests/fuzz_corpora.rs` replays every corpus file of every
//! target through [`targets`] and feeds each target generated inputs, on every `cargo test`,
//! without a nightly compiler. A fuzz target is one line calling its function here.
//!
//! Each function takes any bytes and must return: a panic (an assertion below, or a bug) is the
//! failure the fuzzer looks for.

use crate::agora;
use crate::canonical::System;
use crate::planner::Operation;
use crate::rules::identifiers;
use crate::sources::{source, SOURCES};

/// A fuzz target's body: any bytes in, a panic on failure.
pub type Target = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Every fuzz target, by the name of its file under `adapters/fuzz/fuzz_targets/`: AGORA's
/// answers, the identifier checks, and each source's decoder (`<system>_decode`, its body being
/// the source's [`crate::sources::Source::fuzz`]), sorted by name.
pub fn targets() -> Vec<(String, Target)> {
    let mut all: Vec<(String, Target)> = vec![
        ("agora_decode".into(), Box::new(agora_decode)),
        ("identifiers".into(), Box::new(identifiers)),
    ];
    for s in SOURCES {
        all.push((
            source_target(s.system()),
            Box::new(move |data| s.fuzz(data)),
        ));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The fuzz target of a source's decoder: `atexo_sem_decode` for ATEXO SEM.
pub fn source_target(system: System) -> String {
    format!("{}_decode", system.as_str().replace('-', "_"))
}

/// The body of a source's fuzz target (`fuzz_targets/<system>_decode.rs` is this one call).
pub fn source_decode(system: System, data: &[u8]) {
    if let Some(s) = source(system) {
        s.fuzz(data);
    }
}

/// Any bytes as an AGORA answer (client side) or body (simulator side): every input gives an
/// outcome or violations. The first byte picks the HTTP status, the first line is also tried as a
/// `Retry-After`.
pub fn agora_decode(data: &[u8]) {
    let (status, rest) = match data.split_first() {
        Some((s, rest)) => (200 + u16::from(*s) % 400, rest),
        None => (200, data),
    };
    let retry_after = std::str::from_utf8(rest)
        .ok()
        .and_then(|s| s.lines().next());
    for op in Operation::ALL {
        let _ = agora::decode_answer(op, status, retry_after, rest);
        let _ = agora::decode_transition(op, rest);
    }
    let _ = agora::decode_failure("reprises", status, retry_after, rest);
    let _ = agora::decode_lot_accepted(rest);
    let _ = agora::decode_reprise_report(rest);
    let _ = agora::decode_dossier_body(rest);
    let _ = agora::decode_reprise_lot(rest);
}

/// The identifier checks take any string from any payload (bytes that are not UTF-8 are no
/// string: skipped, as libFuzzer's `&str` targets skip them).
pub fn identifiers(data: &[u8]) {
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let _ = identifiers::nir(data);
    let _ = identifiers::siret(data);
    let _ = identifiers::intercarif(data);
    let _ = identifiers::formacode(data);
    let _ = identifiers::formacode_version(data);
    let _ = identifiers::certification(data);
    let _ = identifiers::insee_commune(data);
    let _ = identifiers::postal_code(data);
}
