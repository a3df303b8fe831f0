#![no_main]
//! Any bytes as an ATEXO SEM export: the stream decoder must end cleanly, never panic or loop, and
//! the journal's masking must either refuse the bytes or give UTF-8 back.
//! The body is the source's `fuzz` in the registry (`passerelle_adapters::fuzzing::source_decode`),
//! which `cargo test` also runs over this target's corpus and generated inputs
//! (adapters/tests/fuzz_corpora.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    passerelle_adapters::fuzzing::source_decode(passerelle_adapters::System::AtexoSem, data)
});
