#![no_main]
//! Any bytes as an AGORA answer (client side) or body (simulator side): every input gives an
//! outcome or violations, never a panic.
use libfuzzer_sys::fuzz_target;
use passerelle_adapters::agora;
use passerelle_adapters::planner::Operation;

fuzz_target!(|data: &[u8]| {
    let (status, rest) = match data.split_first() {
        Some((s, rest)) => (200 + u16::from(*s) % 400, rest),
        None => (200, data),
    };
    let retry_after = std::str::from_utf8(rest).ok().and_then(|s| s.lines().next());
    for op in Operation::ALL {
        let _ = agora::decode_answer(op, status, retry_after, rest);
        let _ = agora::decode_transition(op, rest);
    }
    let _ = agora::decode_failure("reprises", status, retry_after, rest);
    let _ = agora::decode_lot_accepted(rest);
    let _ = agora::decode_reprise_report(rest);
    let _ = agora::decode_dossier_body(rest);
    let _ = agora::decode_reprise_lot(rest);
});
