//! Check keys and formats of the identifiers domain.md lists: NIR, SIRET, Intercarif, Formacode,
//! certification, postal and INSEE codes, LHEO funder codes. Each check answers the rule it broke and
//! a sentence that does not quote the value.

use crate::violation::Rule;

/// A failed check: the rule, and what is wrong (never the value itself).
pub type Check = Result<(), (Rule, &'static str)>;

/// NIR (*numéro d'inscription au répertoire*): 13 characters, or 15 with the key checked.
pub fn nir(value: &str) -> Check {
    let b = value.as_bytes();
    if b.len() != 13 && b.len() != 15 {
        return Err((
            Rule::NirLength,
            "must have 13 characters, or 15 with the key",
        ));
    }
    if !matches!(b[0], b'1' | b'2' | b'7' | b'8') {
        return Err((Rule::NirFormat, "the sex position must be 1, 2, 7 or 8"));
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !digits(1..5) || !digits(7..b.len()) {
        return Err((
            Rule::NirFormat,
            "must be digits but for a Corsican department 2A or 2B",
        ));
    }
    let month = (b[3] - b'0') * 10 + (b[4] - b'0');
    // INSEE also issues months 20-42 and 50-99 when the birth month is unknown.
    if !(matches!(month, 1..=12 | 20..=42 | 50..=99)) {
        return Err((Rule::NirFormat, "the month position is not a valid month"));
    }
    // Department: two digits, or 2A / 2B for Corsica, read as 19 / 18 in the key.
    let dept: u64 = match (b[5], b[6]) {
        (b'2', b'A') => 19,
        (b'2', b'B') => 18,
        (x, y) if x.is_ascii_digit() && y.is_ascii_digit() => ((x - b'0') * 10 + (y - b'0')) as u64,
        _ => {
            return Err((
                Rule::NirFormat,
                "the department position must be two digits, 2A or 2B",
            ))
        }
    };
    if b.len() == 15 {
        let num = |r: std::ops::Range<usize>| {
            b[r].iter()
                .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
        };
        let n13 = num(0..5) * 100_000_000 + dept * 1_000_000 + num(7..13);
        let key = num(13..15);
        if key != 97 - n13 % 97 {
            return Err((
                Rule::NirChecksum,
                "the key does not match the first 13 characters",
            ));
        }
    }
    Ok(())
}

/// SIREN of La Poste, whose establishments are numbered outside the Luhn scheme.
const LA_POSTE_SIREN: &[u8] = b"356000000";

/// SIRET: 14 digits and a Luhn check; La Poste's establishments instead have a digit sum that is a
/// multiple of 5.
pub fn siret(value: &str) -> Check {
    let b = value.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return Err((Rule::SiretFormat, "must be exactly 14 digits"));
    }
    if &b[..9] == LA_POSTE_SIREN {
        let sum: u32 = b.iter().map(|d| u32::from(d - b'0')).sum();
        if sum.is_multiple_of(5) || luhn(b) {
            return Ok(());
        }
        return Err((
            Rule::SiretLuhn,
            "La Poste's digit sum is not a multiple of 5",
        ));
    }
    if luhn(b) {
        Ok(())
    } else {
        Err((Rule::SiretLuhn, "the Luhn check digit does not match"))
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Intercarif numbers (`numeroFormation`, `numeroAction`, `numeroSession`).
pub fn intercarif(value: &str) -> Check {
    let ok = !value.is_empty()
        && value.len() <= 25
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err((
            Rule::IntercarifFormat,
            "must be 1 to 25 letters, digits, '_' or '-'",
        ))
    }
}

/// Formacode: five digits.
pub fn formacode(code: &str) -> Check {
    if code.len() == 5 && code.bytes().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err((Rule::FormacodeFormat, "must be 5 digits"))
    }
}

/// Formacode version: `V` and digits (V12, V13).
pub fn formacode_version(version: &str) -> Check {
    let b = version.as_bytes();
    if b.len() >= 2 && b.len() <= 4 && b[0] == b'V' && b[1..].iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err((
            Rule::FormacodeVersion,
            "must be V followed by digits, such as V12",
        ))
    }
}

/// Certification: `RNCP` or `RS` and digits.
pub fn certification(value: &str) -> Check {
    let digits = value
        .strip_prefix("RNCP")
        .or_else(|| value.strip_prefix("RS"));
    match digits {
        Some(d) if !d.is_empty() && d.len() <= 8 && d.bytes().all(|c| c.is_ascii_digit()) => Ok(()),
        _ => Err((
            Rule::CertificationFormat,
            "must be RNCP or RS followed by digits, such as RNCP34567",
        )),
    }
}

pub fn postal_code(value: &str) -> Check {
    if value.len() == 5 && value.bytes().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err((Rule::PostalCodeFormat, "must be 5 digits"))
    }
}

pub fn insee_commune(value: &str) -> Check {
    let b = value.as_bytes();
    let ok = b.len() == 5
        && (b[..2].iter().all(u8::is_ascii_digit) || &b[..2] == b"2A" || &b[..2] == b"2B")
        && b[2..].iter().all(u8::is_ascii_digit);
    if ok {
        Ok(())
    } else {
        Err((
            Rule::InseeFormat,
            "must be 5 characters: digits, or 2A/2B then digits",
        ))
    }
}

/// LHEO `dict-financeurs` 2.3 (domain.md): codes 1 and 6 do not exist.
pub const FUNDER_CODES: &[(u8, &str)] = &[
    (0, "autre"),
    (2, "conseil régional"),
    (3, "fonds européens - FSE"),
    (4, "Pôle emploi"),
    (5, "entreprise"),
    (7, "AGEFIPH"),
    (8, "conseil départemental"),
    (9, "commune"),
    (10, "bénéficiaire"),
    (11, "État - ministère chargé de l'emploi"),
    (12, "État - ministère de l'éducation nationale"),
    (13, "État - autre"),
    (14, "fonds européens - autre"),
    (15, "collectivité territoriale - autre"),
    (16, "OPCO"),
    (17, "Transitions Pro"),
    (18, "LADOM"),
    (19, "État - ministère de l'intérieur"),
    (20, "OFII"),
];

pub fn funder_code(code: u8) -> Check {
    if FUNDER_CODES.iter().any(|(c, _)| *c == code) {
        Ok(())
    } else {
        Err((Rule::FunderCode, "is not a code of LHEO dict-financeurs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nir_known_good_public_examples() {
        // The specimen printed on INSEE's and Wikipedia's pages, and the contract's example.
        for ok in [
            "255081416802538",
            "269054958815780",
            "185077512345608",
            "2550814168025",
        ] {
            assert_eq!(nir(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn nir_corsica_reads_2a_as_19_and_2b_as_18() {
        // 2 84 12 2A 345 678: 2841219345678 mod 97 gives the key; with 2B, 18.
        let key_a = 97 - 2_841_219_345_678u64 % 97;
        let key_b = 97 - 2_841_218_345_678u64 % 97;
        assert_eq!(nir(&format!("284122A345678{key_a:02}")), Ok(()));
        assert_eq!(nir(&format!("284122B345678{key_b:02}")), Ok(()));
        assert_eq!(
            nir(&format!("284122A345678{key_b:02}")).map_err(|e| e.0),
            Err(Rule::NirChecksum)
        );
    }

    #[test]
    fn nir_rejections_name_their_rule() {
        let rule = |v: &str| nir(v).err().map(|e| e.0);
        assert_eq!(rule("255081416802539"), Some(Rule::NirChecksum));
        assert_eq!(rule("25508141680"), Some(Rule::NirLength));
        assert_eq!(rule("25508141680253"), Some(Rule::NirLength));
        assert_eq!(rule("355081416802538"), Some(Rule::NirFormat));
        assert_eq!(rule("255131416802538"), Some(Rule::NirFormat), "month 13");
        assert_eq!(rule("25508X416802538"), Some(Rule::NirFormat));
        assert_eq!(rule("2550814168é25"), Some(Rule::NirLength), "14 bytes");
    }

    #[test]
    fn siret_known_good_public_examples() {
        // INSEE's own head office, and a La Poste establishment (digit sum 40, Luhn fails).
        for ok in ["12002701600357", "73282932000074", "35600000049837"] {
            assert_eq!(siret(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            siret("12002701600358").map_err(|e| e.0),
            Err(Rule::SiretLuhn)
        );
        assert_eq!(
            siret("35600000049838").map_err(|e| e.0),
            Err(Rule::SiretLuhn)
        );
        assert_eq!(
            siret("1200270160035").map_err(|e| e.0),
            Err(Rule::SiretFormat)
        );
        assert_eq!(
            siret("1200270160035A").map_err(|e| e.0),
            Err(Rule::SiretFormat)
        );
    }

    #[test]
    fn other_identifiers() {
        assert!(intercarif("20_1262663").is_ok());
        assert!(intercarif("").is_err());
        assert!(intercarif(&"1".repeat(26)).is_err());
        assert!(intercarif("20 126").is_err());
        assert!(formacode("31795").is_ok() && formacode("3179").is_err());
        assert!(formacode_version("V12").is_ok() && formacode_version("12").is_err());
        assert!(certification("RNCP34567").is_ok() && certification("RS5678").is_ok());
        assert!(certification("RNCP").is_err() && certification("34567").is_err());
        assert!(insee_commune("2A004").is_ok() && insee_commune("44109").is_ok());
        assert!(funder_code(2).is_ok() && funder_code(1).is_err() && funder_code(6).is_err());
        assert!(funder_code(21).is_err());
    }
}
