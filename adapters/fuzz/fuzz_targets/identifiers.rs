#![no_main]
//! The identifier checks take any string from any payload: none may panic.
use libfuzzer_sys::fuzz_target;
use passerelle_adapters::rules::identifiers;

fuzz_target!(|data: &str| {
    let _ = identifiers::nir(data);
    let _ = identifiers::siret(data);
    let _ = identifiers::intercarif(data);
    let _ = identifiers::formacode(data);
    let _ = identifiers::formacode_version(data);
    let _ = identifiers::certification(data);
    let _ = identifiers::insee_commune(data);
    let _ = identifiers::postal_code(data);
});
