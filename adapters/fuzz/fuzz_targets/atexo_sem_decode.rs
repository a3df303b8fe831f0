#![no_main]
//! Any bytes as an ATEXO SEM export: the stream decoder must end cleanly, never panic or loop, and
//! the journal's masking must either refuse the bytes or give UTF-8 back.
use libfuzzer_sys::fuzz_target;
use passerelle_adapters::atexo_sem::{decode_stream, mask_export, DecodeSettings, Flow};

fuzz_target!(|data: &[u8]| {
    let settings = DecodeSettings::default();
    for item in decode_stream(data, Flow::Backfill, &settings).take(10_000) {
        if let Err(e) = item {
            assert!(!e.violations.is_empty());
        }
    }
    if let Ok(masked) = mask_export(data) {
        assert!(std::str::from_utf8(&masked).is_ok());
    }
});
