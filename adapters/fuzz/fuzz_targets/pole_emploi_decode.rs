#![no_main]
//! Any bytes as a Pôle emploi answer: registrations, token, error body.
use libfuzzer_sys::fuzz_target;
use passerelle_adapters::pole_emploi::{self, SessionRef};
use passerelle_adapters::rules::RuleSettings;

fuzz_target!(|data: &[u8]| {
    let session = SessionRef {
        numero_formation: "20_1262663".into(),
        numero_action: "20_1330305".into(),
        numero_session: "1330305".into(),
    };
    let _ = pole_emploi::decode_registrations(data, &session, &RuleSettings::default());
    let _ = pole_emploi::decode_token(data);
    let _ = pole_emploi::decode_error(data);
});
