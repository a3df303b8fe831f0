//! Generates [`SchemaId`]'s variants from the files under `json/`: adding a system's schema is
//! adding its file (`json/<system>/<name>.schema.json`), not editing a list. A variant is named
//! after its folder and file (`ouiform/orientation.schema.json` is `OuiformOrientation`), and
//! documented by the schema's own `title`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    // The canonical dossier first, then each system's schemas by path: a stable order.
    files.sort_by_key(|f| (f.components().count() > 1, f.clone()));
    let mut out = String::from("schemas! {\n");
    for file in files {
        let rel = file.to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|e| panic!("schemas/json/{rel}: {e}"));
        let schema: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("schemas/json/{rel}: {e}"));
        let title = schema["title"]
            .as_str()
            .unwrap_or_else(|| panic!("schemas/json/{rel} has no `title`"));
        let variant: String = rel
            .trim_end_matches(".schema.json")
            .split(['/', '_'])
            .map(camel)
            .collect();
        writeln!(out, "    {variant} => {rel:?}: {title:?},").expect("writing to a String");
    }
    out.push_str("}\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(dest.join("schema_ids.rs"), out).expect("writing OUT_DIR/schema_ids.rs");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.to_string_lossy().ends_with(".schema.json") {
            let rel = path.strip_prefix(root).expect("under json/").to_path_buf();
            files.push(rel);
        }
    }
}

fn camel(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
