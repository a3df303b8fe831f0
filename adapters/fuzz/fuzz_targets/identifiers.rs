#![no_main]
//! The identifier checks take any string from any payload: none may panic.
//! The body is `passerelle_adapters::fuzzing::identifiers`, which `cargo test` also
//! runs over this target's corpus and generated inputs (adapters/tests/fuzz_corpora.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| passerelle_adapters::fuzzing::identifiers(data));
