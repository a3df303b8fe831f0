//! Encoding lies: a document that declares ISO-8859-1 but carries UTF-8 bytes.
//!
//! Read as declared, the UTF-8 of "ÉLODIE" (`C3 89 4C …`) becomes "Ã‰LODIE": every byte is a
//! valid ISO-8859-1 (windows-1252) character, so nothing fails, and the garbled name would reach
//! AGORA. The decoder reads ISO-8859-1 through a windows-1252 transcoder, which maps each of the
//! 256 bytes to one character and back; so a value's original bytes are recovered exactly by
//! encoding it to windows-1252 again, and can be tested as UTF-8.
//!
//! False positives. Genuine Latin-1 text almost never forms valid UTF-8: a UTF-8 sequence is a
//! lead byte (`Â`–`ô`) followed by exactly the right number of bytes in `0x80`–`0xBF` (windows-1252
//! punctuation `€ ’ “ …`, the no-break space, `¡`–`¿`), while French text puts a letter or a space
//! after an accented letter ("é" then "t": `E9 74`, not UTF-8). So a value is judged mislabelled
//! when *all* its non-ASCII bytes form valid UTF-8 and:
//! - it holds two UTF-8 characters or more: two such accidents in one value do not happen; or
//! - its one UTF-8 character is one that French mojibake produces: a Latin letter or sign
//!   (U+00A0–U+017F, which covers `é`, `À`, `œ`, `Ÿ`), general punctuation (U+2000–U+206F: `’`,
//!   `–`, `…`), `€` or `™`.
//!
//! The second condition leaves alone the accidents genuine text does make: a capital `É`, `È`,
//! `Ç` or `Æ` right before a no-break space or a `…` (`C9 A0` is U+0260, `C9 85` U+0245: IPA and
//! Latin Extended-B letters nobody writes in a French name or address).

/// Whether `value`, read from a document declared ISO-8859-1, is in fact UTF-8 bytes read as
/// windows-1252.
pub fn is_utf8_read_as_latin1(value: &str) -> bool {
    if value.is_ascii() {
        return false;
    }
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(value);
    // A character windows-1252 cannot hold came from a character reference (`&#x4E2D;`), not from
    // the document's bytes; such a value was not read through the transcoder alone.
    if unmappable {
        return false;
    }
    let Ok(original) = std::str::from_utf8(&bytes) else {
        return false;
    };
    let mut wide = original.chars().filter(|c| !c.is_ascii());
    match (wide.next(), wide.next()) {
        (None, _) => false,
        (Some(c), None) => french_mojibake(c),
        (Some(_), Some(_)) => true,
    }
}

/// A character that French text sent as UTF-8 and read as Latin-1 turns into mojibake.
fn french_mojibake(c: char) -> bool {
    matches!(c, '\u{A0}'..='\u{17F}' | '\u{2000}'..='\u{206F}' | '€' | '™')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a UTF-8 text looks like once read as windows-1252.
    fn garble(s: &str) -> String {
        encoding_rs::WINDOWS_1252
            .decode(s.as_bytes())
            .0
            .into_owned()
    }

    #[test]
    fn utf8_read_as_latin1_is_recognised() {
        for s in [
            "ÉLODIE",
            "Hélène",
            "voilà",
            "François",
            "Cœur",
            "l’avenir",
            "100 €",
            "Łukasz",
            "Иван",
            "ß",
            "naïve café",
        ] {
            let g = garble(s);
            assert_ne!(g, s);
            assert!(is_utf8_read_as_latin1(&g), "{s:?} read as {g:?}");
        }
        assert_eq!(garble("ÉLODIE"), "Ã‰LODIE");
    }

    #[test]
    fn genuine_latin1_is_left_alone() {
        for s in [
            "ÉLODIE",
            "Élodie",
            "LEFÈVRE",
            "NOËL",
            "Hélène François",
            "garçon",
            "Cœur de métier’s 100 €",
            "à",
            "é",
            "CAFÉ\u{A0}",
            "ÉTÉ\u{A0}»",
            "FRANÇOIS…",
            "CAFÉ…",
            "Æ’",
            "ASCII only",
            "",
        ] {
            assert!(!is_utf8_read_as_latin1(s), "{s:?}");
        }
    }

    #[test]
    fn every_byte_survives_the_round_trip() {
        // The check relies on windows-1252 mapping each byte to one character and back.
        let all: Vec<u8> = (0u8..=255).collect();
        let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&all);
        let (back, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
        assert!(!unmappable);
        assert_eq!(&back[..], &all[..]);
    }
}
