#![no_main]
//! Any bytes as an OUIFORM orientation.
use libfuzzer_sys::fuzz_target;
use passerelle_adapters::{ouiform, rules::RuleSettings};

fuzz_target!(|data: &[u8]| {
    if let Err(v) = ouiform::decode(data, &RuleSettings::default()) {
        assert!(!v.is_empty());
    }
});
