//! `docs/adding-a-system.md` against the code: a system is named, outside its own modules, only in
//! the registries the walkthrough lists, so that what it says a new system takes is what it takes.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The registries the walkthrough's table lists (its first column's paths).
fn registries() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/adding-a-system.md"))
        .expect("docs/adding-a-system.md");
    let table = doc
        .split("## The registries")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a section `The registries`");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The crate sources (not their tests) under `dir`, with their text up to their test module.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            // Snapshots and test-only suites (the ledger's conformance suite) are not sources.
            if name != "snapshots" && name != "conformance" {
                sources(&path, out);
            }
            continue;
        }
        let test_file =
            name == "tests.rs" || name.starts_with("tests_") || name.contains("conformance");
        if !name.ends_with(".rs") || test_file {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or("")
            .to_string();
        let rel = path
            .strip_prefix(root())
            .expect("under the workspace")
            .to_string_lossy()
            .replace("/../", "/");
        out.push((rel, code));
    }
}

#[test]
fn a_system_is_named_outside_its_own_modules_only_in_the_registries_the_walkthrough_lists() {
    let registries = registries();
    assert!(
        registries.len() >= 4,
        "the walkthrough's table: {registries:?}"
    );
    for r in &registries {
        assert!(
            root().join(r).is_file(),
            "the walkthrough lists {r}, which is not there"
        );
    }
    let mut files = Vec::new();
    for dir in ["adapters/src", "gateway/src", "schemas/src"] {
        sources(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "the sources were read: {}", files.len());
    // OUIFORM, whose modules are `adapters/src/ouiform/` and `gateway/src/systems/ouiform.rs`.
    let own = |path: &str| path.contains("/ouiform/") || path.ends_with("/ouiform.rs");
    let naming: Vec<&str> = files
        .iter()
        .filter(|(path, code)| !own(path) && code.to_lowercase().contains("ouiform"))
        .map(|(path, _)| path.as_str())
        .collect();
    let elsewhere: Vec<&&str> = naming
        .iter()
        .filter(|p| !registries.iter().any(|r| r == **p))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "OUIFORM is named outside its modules and the registries of docs/adding-a-system.md: \
         {elsewhere:?} (make the code iterate over the registry, or list the file there)"
    );
    assert!(
        naming.len() <= 4,
        "OUIFORM named in {} files outside its modules: {naming:?}",
        naming.len()
    );
}

/// Issue 19's "files that fit in one's head": no source file but a test file is over 800 lines.
#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    for dir in [
        "adapters/src",
        "gateway/src",
        "schemas/src",
        "tests/sandbox/src",
        "tests/benches",
    ] {
        sources(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "the sources were read: {}", files.len());
    let long: Vec<(usize, &str)> = files
        .iter()
        .map(|(path, _)| {
            let text = std::fs::read_to_string(root().join(path)).expect("a source file");
            (text.lines().count(), path.as_str())
        })
        .filter(|(n, _)| *n > 800)
        .collect();
    assert!(long.is_empty(), "over 800 lines: {long:?}");
}
