//! The bodies of the fuzz targets (`adapters/fuzz/fuzz_targets/`), kept here so the workspace's
//! own tests run them too: `adapters/tests/fuzz_corpora.rs` replays every corpus file of every
//! target through [`TARGETS`] and feeds each target generated inputs, on every `cargo test`,
//! without a nightly compiler. A fuzz target is one line calling its function here.
//!
//! Each function takes any bytes and must return: a panic (an assertion below, or a bug) is the
//! failure the fuzzer looks for.

use crate::agora;
use crate::atexo_sem::{decode_stream, mask_export, DecodeSettings, Flow};
use crate::planner::Operation;
use crate::pole_emploi::{self, SessionRef};
use crate::rules::{identifiers, RuleSettings};

/// A fuzz target's body: any bytes in, a panic on failure.
pub type Target = fn(&[u8]);

/// Every fuzz target, by the name of its file under `adapters/fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("agora_decode", agora_decode),
    ("atexo_sem_decode", atexo_sem_decode),
    ("identifiers", identifiers),
    ("ouiform_decode", ouiform_decode),
    ("pole_emploi_decode", pole_emploi_decode),
];

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

/// Any bytes as an ATEXO SEM export: the stream decoder ends cleanly with every error non-empty
/// and every list within its caps, and the journal's masking either refuses the bytes or gives
/// UTF-8 back.
pub fn atexo_sem_decode(data: &[u8]) {
    let settings = DecodeSettings::default();
    for item in decode_stream(data, Flow::Backfill, &settings).take(10_000) {
        if let Err(e) = item {
            assert!(!e.violations.is_empty());
            // At most the cap, its `xml.truncated` entry, and a fatal fault's own entry.
            assert!(e.violations.len() <= crate::atexo_sem::MAX_PER_DOSSIER + 2);
        }
    }
    if let Err(v) = crate::atexo_sem::decode_document(data, Flow::Sync, &settings) {
        assert!(!v.0.is_empty() && v.0.len() <= crate::atexo_sem::MAX_PER_DOCUMENT + 1);
    }
    if let Ok(masked) = mask_export(data) {
        assert!(std::str::from_utf8(&masked).is_ok());
    }
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

/// Any bytes as an OUIFORM orientation: a dossier, or violations that are never empty.
pub fn ouiform_decode(data: &[u8]) {
    if let Err(v) = crate::ouiform::decode(data, &RuleSettings::default()) {
        assert!(!v.is_empty());
    }
}

/// Any bytes as a Pôle emploi answer: registrations, token, error body.
pub fn pole_emploi_decode(data: &[u8]) {
    let session = SessionRef {
        numero_formation: "20_1262663".into(),
        numero_action: "20_1330305".into(),
        numero_session: "1330305".into(),
    };
    let _ = pole_emploi::decode_registrations(data, &session, &RuleSettings::default());
    let _ = pole_emploi::decode_token(data);
    let _ = pole_emploi::decode_error(data);
}
