#![no_main]
//! Any bytes as a Pôle emploi answer: registrations, token, error body.
//! The body is `passerelle_adapters::fuzzing::pole_emploi_decode`, which `cargo test` also
//! runs over this target's corpus and generated inputs (adapters/tests/fuzz_corpora.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| passerelle_adapters::fuzzing::pole_emploi_decode(data));
