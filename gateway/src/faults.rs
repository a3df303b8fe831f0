//! Fault hooks for the end-to-end tests, which run `passerelle serve` as a child process and
//! need some failures no outside action can cause (a task that panics every time, a lane that
//! ends). Read from `PASSERELLE_TEST_FAULTS` (`name=value,…`) in debug builds only: a release
//! build has none, whatever its environment.

use std::sync::OnceLock;

/// The value of hook `name`, when the test set it.
pub fn hook(name: &str) -> Option<&'static str> {
    static HOOKS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    HOOKS
        .get_or_init(|| {
            if !cfg!(debug_assertions) {
                return Vec::new();
            }
            std::env::var("PASSERELLE_TEST_FAULTS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
