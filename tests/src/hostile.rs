//! Hostile ATEXO SEM exports (issue 18): bodies under the size limit shaped to make decoding
//! expensive, or to lie about their encoding. Used by the integration test that posts them while
//! probing `/healthz`, by the benchmark that measures their cost against a valid export of the
//! same size, and by `gen_hostile`, which writes small ones into the fuzz corpus.

/// One shape of hostile export.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// A file-name-friendly name (`hostile_<name>.xml` in the fuzz corpus).
    pub name: &'static str,
    /// What it does, in a phrase.
    pub what: &'static str,
    make: fn(usize) -> Vec<u8>,
}

impl Shape {
    /// The export, at most `size` bytes long (and close to it).
    pub fn export(&self, size: usize) -> Vec<u8> {
        let out = (self.make)(size);
        debug_assert!(out.len() <= size, "{}: {} > {size}", self.name, out.len());
        out
    }
}

/// Every shape.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "attributes",
        what: "one tag with a million distinct unknown attributes",
        make: attributes,
    },
    Shape {
        name: "duplicate_attributes",
        what: "one tag repeating a known attribute",
        make: duplicate_attributes,
    },
    Shape {
        name: "unknown_elements",
        what: "millions of unknown elements in one dossier",
        make: unknown_elements,
    },
    Shape {
        name: "stray_elements",
        what: "millions of unknown elements outside the dossiers",
        make: stray_elements,
    },
    Shape {
        name: "deep_nesting",
        what: "elements nested a million deep in a dossier",
        make: deep_nesting,
    },
    Shape {
        name: "deep_nesting_in_text",
        what: "elements nested a million deep where text is expected",
        make: deep_nesting_in_text,
    },
    Shape {
        name: "huge_text",
        what: "one text value of the whole size",
        make: huge_text,
    },
    Shape {
        name: "huge_entities",
        what: "one text value of entity references",
        make: huge_entities,
    },
    Shape {
        name: "huge_name",
        what: "an element and an attribute with names of the whole size",
        make: huge_name,
    },
    Shape {
        name: "empty_dossiers",
        what: "a million empty dossiers, each missing everything",
        make: empty_dossiers,
    },
    Shape {
        name: "invalid_dossiers",
        what: "thousands of full dossiers, each with a bad NIR",
        make: invalid_dossiers,
    },
    Shape {
        name: "comments",
        what: "millions of comments between dossiers",
        make: comments,
    },
    Shape {
        name: "mislabelled_latin1",
        what: "declared ISO-8859-1, one value of UTF-8 letters",
        make: mislabelled_latin1,
    },
];

const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\">\n";
const END: &str = "</exportSEM>\n";

/// A valid dossier (the `entre.xml` fixture's, in ASCII).
pub fn valid_dossier() -> String {
    let doc = include_str!("../fixtures/atexo_sem/valid/entre.xml");
    let start = doc.find("  <dossier").unwrap_or(0);
    let end = doc
        .find("</dossier>")
        .map_or(doc.len(), |e| e + "</dossier>\n".len());
    doc[start..end].replace("Visa métiers", "Visa metiers")
}

/// A valid export of about `size` bytes: the baseline the hostile ones are measured against.
pub fn valid_export(size: usize) -> Vec<u8> {
    let d = valid_dossier();
    let n = size.saturating_sub(PROLOG.len() + END.len()) / d.len();
    let mut out = String::with_capacity(size);
    out.push_str(PROLOG);
    for i in 0..n.max(1) {
        // Each its own id, as a real export.
        out.push_str(&d.replacen("PDL-2019-000102", &format!("PDL-2019-{i:06}"), 1));
    }
    out.push_str(END);
    out.into_bytes()
}

/// The valid dossier with `piece` put in its `<session>` tag (`at_tag`) or before `<etat>`.
fn in_dossier(size: usize, at_tag: bool, piece: impl Fn(usize) -> String) -> Vec<u8> {
    let d = valid_dossier();
    let room = size.saturating_sub(PROLOG.len() + END.len() + d.len() + 2);
    let filler = piece(room);
    let dossier = if at_tag {
        d.replacen("<session ", &format!("<session{filler} "), 1)
    } else {
        d.replacen("<etat>", &format!("{filler}<etat>"), 1)
    };
    [PROLOG, &dossier, END].concat().into_bytes()
}

/// Repeats `unit(i)` while it fits in `room` bytes.
fn fill(room: usize, unit: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(room);
    for i in 0.. {
        let u = unit(i);
        if out.len() + u.len() > room {
            break;
        }
        out.push_str(&u);
    }
    out
}

fn attributes(size: usize) -> Vec<u8> {
    in_dossier(size, true, |room| fill(room, |i| format!(" a{i:x}=\"\"")))
}

fn duplicate_attributes(size: usize) -> Vec<u8> {
    in_dossier(size, true, |room| {
        fill(room, |_| " heuresCentre=\"1\"".into())
    })
}

fn unknown_elements(size: usize) -> Vec<u8> {
    in_dossier(size, false, |room| fill(room, |_| "<x/>".into()))
}

fn stray_elements(size: usize) -> Vec<u8> {
    let d = valid_dossier();
    let room = size.saturating_sub(PROLOG.len() + END.len() + d.len());
    [PROLOG, &fill(room, |_| "<x/>".into()), &d, END]
        .concat()
        .into_bytes()
}

/// `<x>` `depth` times, then as many `</x>`.
fn nested(room: usize) -> String {
    let depth = room / "<x></x>".len();
    ["<x>".repeat(depth), "</x>".repeat(depth)].concat()
}

fn deep_nesting(size: usize) -> Vec<u8> {
    in_dossier(size, false, nested)
}

fn deep_nesting_in_text(size: usize) -> Vec<u8> {
    let d = valid_dossier();
    let room = size.saturating_sub(PROLOG.len() + END.len() + d.len() + 2);
    let dossier = d.replacen(
        "<prenoms>Jean Pierre</prenoms>",
        &format!("<prenoms>{}</prenoms>", nested(room)),
        1,
    );
    [PROLOG, &dossier, END].concat().into_bytes()
}

fn text_of(size: usize, unit: &str) -> Vec<u8> {
    let d = valid_dossier();
    let room = size.saturating_sub(PROLOG.len() + END.len() + d.len() + 2);
    let dossier = d.replacen(
        "<prenoms>Jean Pierre</prenoms>",
        &format!("<prenoms>{}</prenoms>", unit.repeat(room / unit.len())),
        1,
    );
    [PROLOG, &dossier, END].concat().into_bytes()
}

fn huge_text(size: usize) -> Vec<u8> {
    text_of(size, "A")
}

fn huge_entities(size: usize) -> Vec<u8> {
    text_of(size, "&amp;")
}

fn huge_name(size: usize) -> Vec<u8> {
    in_dossier(size, false, |room| {
        let half = room.saturating_sub(16) / 2;
        format!("<{} {}=\"\"/>", "n".repeat(half), "a".repeat(half))
    })
}

fn empty_dossiers(size: usize) -> Vec<u8> {
    let room = size.saturating_sub(PROLOG.len() + END.len());
    [PROLOG, &fill(room, |_| "<dossier/>".into()), END]
        .concat()
        .into_bytes()
}

fn invalid_dossiers(size: usize) -> Vec<u8> {
    let bad = valid_dossier().replacen("185077512345608", "185077512345609", 1);
    let room = size.saturating_sub(PROLOG.len() + END.len());
    [PROLOG, &fill(room, |_| bad.clone()), END]
        .concat()
        .into_bytes()
}

fn comments(size: usize) -> Vec<u8> {
    let d = valid_dossier();
    let room = size.saturating_sub(PROLOG.len() + END.len() + d.len());
    [PROLOG, &fill(room, |_| "<!---->".into()), &d, END]
        .concat()
        .into_bytes()
}

fn mislabelled_latin1(size: usize) -> Vec<u8> {
    let latin1 = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<exportSEM version=\"1.0\">\n";
    let d = valid_dossier();
    let room = size.saturating_sub(latin1.len() + END.len() + d.len() + 2);
    let dossier = d.replacen(
        "<prenoms>Jean Pierre</prenoms>",
        &format!("<prenoms>{}</prenoms>", "É".repeat(room / 2)),
        1,
    );
    [latin1, &dossier, END].concat().into_bytes()
}
