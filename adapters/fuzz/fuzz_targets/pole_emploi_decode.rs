#![no_main]
//! Any bytes as a Pôle emploi answer: registrations, token, error body.
//! The body is the source's `fuzz` in the registry (`passerelle_adapters::fuzzing::source_decode`),
//! which `cargo test` also runs over this target's corpus and generated inputs
//! (adapters/tests/fuzz_corpora.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    passerelle_adapters::fuzzing::source_decode(passerelle_adapters::System::PoleEmploi, data)
});
