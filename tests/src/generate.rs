//! Synthetic ATEXO SEM exports for streaming and backfill tests.
//!
//! [`write_atexo_export_with`] writes an `exportSEM` document straight to a writer, one dossier at a
//! time, so a million dossiers cost no more memory than one. A seeded RNG picks each dossier's
//! kind: valid (all eight ATEXO states, one to three funders), invalid (one known rule each), out of
//! perimeter (`agora="N"` or an excluded category), or with a session before 2017 (out of perimeter
//! in a backfill only). For each dossier a [`Truth`] says what decoding it must give; it goes to a
//! callback, so the caller keeps only what it needs (counts, or one small value per dossier).
//!
//! Every NIR, name and SIRET is made up; NIR keys and SIRET Luhn digits are computed so that valid
//! dossiers are valid.

use std::io::{self, Write};

use chrono::{Datelike, Duration, NaiveDate};
use passerelle_adapters::atexo_sem::{Flow, OutOfPerimeter};
use passerelle_adapters::{Rule, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub seed: u64,
    pub count: usize,
    /// The flow the truth is computed for: pre-2017 sessions are out of perimeter in a backfill.
    pub flow: Flow,
    /// Share of dossiers made invalid (one known rule each).
    pub invalid_share: f64,
    /// Share of dossiers out of perimeter by their `agora` flag or category.
    pub out_of_perimeter_share: f64,
    /// Share of otherwise valid dossiers whose session starts before 2017.
    pub before_2017_share: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            count: 1000,
            flow: Flow::Backfill,
            invalid_share: 0.05,
            out_of_perimeter_share: 0.05,
            before_2017_share: 0.03,
        }
    }
}

/// Why a generated dossier is out of perimeter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    AgoraFlag,
    Category(&'static str),
    SessionBeforeBackfillStart,
}

impl Reason {
    /// Whether the adapter's classification is this one.
    pub fn matches(self, o: &OutOfPerimeter) -> bool {
        match (self, o) {
            (Reason::AgoraFlag, OutOfPerimeter::AgoraFlag) => true,
            (Reason::Category(c), OutOfPerimeter::Category(d)) => c == d,
            (Reason::SessionBeforeBackfillStart, OutOfPerimeter::SessionBeforeBackfillStart) => {
                true
            }
            _ => false,
        }
    }
}

/// The outcome decoding a generated dossier must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Valid and in perimeter, in this state.
    Valid(State),
    /// Invalid: every violation has this rule.
    Invalid(Rule),
    /// Valid, but out of perimeter for this reason.
    OutOfPerimeter(Reason),
}

/// One dossier's expected outcome; its ATEXO id is [`dossier_id`]`(seed, index)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    /// 1-based position in the export.
    pub index: usize,
    pub outcome: Outcome,
}

/// The ATEXO id of the `index`-th generated dossier.
pub fn dossier_id(seed: u64, index: usize) -> String {
    format!("GEN-{seed}-{index:09}")
}

/// Categories out of perimeter by default (contract §2.1).
const EXCLUDED: [&str; 6] = [
    "SANITAIRE_SOCIAL",
    "PSAD",
    "DETENUS",
    "CRP",
    "AIDE_INDIVIDUELLE",
    "VAE",
];

/// The rules the generator knows how to break, one mutation each.
pub const INVALID_RULES: [Rule; 14] = [
    Rule::NirChecksum,
    Rule::NirLength,
    Rule::SiretLuhn,
    Rule::DateFormat,
    Rule::AmountFormat,
    Rule::BooleanFormat,
    Rule::EnumValue,
    Rule::FieldRequired,
    Rule::DateExit,
    Rule::DateBirth,
    Rule::StatusRequired,
    Rule::FunderCode,
    Rule::FormacodeVersion,
    Rule::IntercarifFormat,
];

const ETATS: [(State, &str); 8] = [
    (State::Registered, "INSCRIT"),
    (State::Validated, "VALIDE"),
    (State::Entered, "ENTRE"),
    (State::Exited, "SORTI"),
    (State::ServiceDone, "SERVICE_FAIT"),
    (State::Settled, "SOLDE"),
    (State::Refused, "REFUSE"),
    (State::Cancelled, "ANNULE"),
];

const BIRTH_NAMES: [&str; 8] = [
    "DUPONT",
    "LEFÈVRE",
    "MARTIN",
    "NOËL",
    "GARÇON",
    "BERNARD",
    "D'ALMEIDA",
    "FAURE",
];
const FIRST_NAMES: [&str; 8] = [
    "Jean Pierre",
    "Hélène",
    "François",
    "Zoë",
    "Léa",
    "Mohamed",
    "Anaïs",
    "Joël",
];
const FUNDERS: [u8; 6] = [2, 3, 4, 5, 16, 8];
const MOTIFS: [&str; 5] = ["FIN", "EMPLOI", "ABANDON", "AUTRE_FORMATION", "MALADIE"];
const RESULTATS: [&str; 4] = ["OBTENUE", "PARTIELLE", "NON_OBTENUE", "INCONNU"];
const INITIATEURS: [&str; 4] = ["STAGIAIRE", "ORGANISME", "FINANCEUR", "PRESCRIPTEUR"];

/// Writes a whole export, handing each dossier's truth to `truth` as it goes. Give it a buffered
/// writer.
pub fn write_atexo_export_with(
    mut w: impl Write,
    opts: &GenOptions,
    mut truth: impl FnMut(Truth),
) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    w.write_all(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\" region=\"PDL\" dateExport=\"30/06/2024\">\n",
    )?;
    for index in 1..=opts.count {
        let outcome = write_dossier(&mut w, &mut rng, opts, index)?;
        truth(Truth { index, outcome });
    }
    w.write_all(b"</exportSEM>\n")?;
    w.flush()
}

/// Writes a whole export and returns every truth (for small counts; see
/// [`write_atexo_export_with`] for large ones).
pub fn write_atexo_export(w: impl Write, opts: &GenOptions) -> io::Result<Vec<Truth>> {
    let mut all = Vec::with_capacity(opts.count);
    write_atexo_export_with(w, opts, |t| all.push(t))?;
    Ok(all)
}

fn d(date: NaiveDate) -> String {
    format!("{:02}/{:02}/{:04}", date.day(), date.month(), date.year())
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.gen_range(0..xs.len())]
}

/// A NIR (15 characters with its key, or the 13 alone) and its key. Departments 21 and 22 are
/// written as Corsica's 2A and 2B (read as 19 and 18 in the key), so that about one NIR in forty
/// is Corsican, with no extra draw: a seed gives the same dossiers as before but for those.
fn nir(rng: &mut StdRng) -> (String, u64) {
    let (sex, year, month, department, commune, order) = (
        rng.gen_range(1..=2),
        rng.gen_range(0..100),
        rng.gen_range(1..=12),
        rng.gen_range(21..=95),
        rng.gen_range(1..1000),
        rng.gen_range(1..1000),
    );
    let (written, read) = match department {
        21 => ("2A".to_string(), 19),
        22 => ("2B".to_string(), 18),
        d => (format!("{d:02}"), d),
    };
    let n13 = format!("{sex}{year:02}{month:02}{written}{commune:03}{order:03}");
    let value: u64 = format!("{sex}{year:02}{month:02}{read:02}{commune:03}{order:03}")
        .parse()
        .unwrap_or(0);
    let key = 97 - value % 97;
    (n13, key)
}

/// A SIRET with its Luhn digit; `wrong` makes that digit wrong.
fn siret(rng: &mut StdRng, wrong: bool) -> String {
    let mut s = String::with_capacity(14);
    let mut sum = 0u32;
    for j in 0..13 {
        let digit: u32 = rng.gen_range(0..10);
        s.push(char::from(b'0' + digit as u8));
        // Positions from the right, the check digit being 0: odd positions are doubled.
        let d = if (13 - j) % 2 == 1 { digit * 2 } else { digit };
        sum += if d > 9 { d - 9 } else { d };
    }
    let mut check = (10 - sum % 10) % 10;
    if wrong {
        check = (check + 1) % 10;
    }
    s.push(char::from(b'0' + check as u8));
    s
}

fn write_dossier(
    w: &mut impl Write,
    rng: &mut StdRng,
    opts: &GenOptions,
    index: usize,
) -> io::Result<Outcome> {
    let roll: f64 = rng.gen();
    let invalid = (roll < opts.invalid_share).then(|| pick(rng, &INVALID_RULES));
    let out =
        (invalid.is_none() && roll < opts.invalid_share + opts.out_of_perimeter_share).then(|| {
            if rng.gen_bool(0.5) {
                Reason::AgoraFlag
            } else {
                Reason::Category(pick(rng, &EXCLUDED))
            }
        });
    let before_2017 =
        invalid.is_none() && out.is_none() && rng.gen_bool(opts.before_2017_share.clamp(0.0, 1.0));

    // The state: some mutations need one with an exit.
    let (mut state, mut etat) = pick(rng, &ETATS);
    if matches!(invalid, Some(Rule::DateExit | Rule::StatusRequired)) {
        (state, etat) = (State::Exited, "SORTI");
    }
    let has_entry = matches!(
        state,
        State::Entered | State::Exited | State::ServiceDone | State::Settled
    );
    let has_exit = matches!(state, State::Exited | State::ServiceDone | State::Settled);

    let base = if before_2017 {
        NaiveDate::from_ymd_opt(2014, 1, 6).unwrap_or_default()
    } else {
        NaiveDate::from_ymd_opt(2017, 1, 2).unwrap_or_default()
    };
    let span = if before_2017 { 1000 } else { 2700 };
    let start = base + Duration::days(rng.gen_range(0..span));
    let end = start + Duration::days(rng.gen_range(20..400));
    let age_years = if invalid == Some(Rule::DateBirth) {
        5
    } else {
        rng.gen_range(17..62)
    };
    let birth = start - Duration::days(age_years * 365 + rng.gen_range(10..300));
    let entry = start + Duration::days(rng.gen_range(0..5));
    let exit = if invalid == Some(Rule::DateExit) {
        entry - Duration::days(rng.gen_range(1..20))
    } else {
        entry + Duration::days(rng.gen_range(0..300))
    };

    let id = dossier_id(opts.seed, index);
    let version = rng.gen_range(1..40);
    let updated = end + Duration::days(rng.gen_range(0..30));
    writeln!(
        w,
        "  <dossier id=\"{id}\" version=\"{version}\" dateMaj=\"{}\">",
        d(updated)
    )?;
    let agora = match (out, invalid) {
        (Some(Reason::AgoraFlag), _) => "N",
        (_, Some(Rule::BooleanFormat)) => "X",
        _ => "O",
    };
    writeln!(
        w,
        "    <dispositif code=\"PRF-QUALIF\" libelle=\"Visa métiers &amp; qualification\" agora=\"{agora}\"/>"
    )?;
    let category = match out {
        Some(Reason::Category(c)) => c,
        _ => "QUALIFIANT",
    };
    writeln!(w, "    <categorie>{category}</categorie>")?;
    writeln!(w, "    <programme code=\"PRF{}\"/>", start.year())?;
    writeln!(
        w,
        "    <consultation numero=\"{}-{:03}\" lot=\"{}\"/>",
        start.year() - 1,
        rng.gen_range(1..200),
        rng.gen_range(1..40)
    )?;

    w.write_all(b"    <stagiaire>\n      ")?;
    let (n13, key) = nir(rng);
    match invalid {
        Some(Rule::FieldRequired) => {}
        Some(Rule::NirChecksum) => write!(w, "<nir>{n13}{:02}</nir>", key % 97 + 1)?,
        Some(Rule::NirLength) => write!(w, "<nir>{n13}{}</nir>", key / 10)?,
        _ if rng.gen_bool(0.1) => write!(w, "<nir>{n13}</nir>")?,
        _ => write!(w, "<nir>{n13}{key:02}</nir>")?,
    }
    let sexe = if invalid == Some(Rule::EnumValue) {
        "3"
    } else if n13.starts_with('1') {
        "1"
    } else {
        "2"
    };
    writeln!(
        w,
        "<nomNaissance>{}</nomNaissance><nomUsage/><prenoms>{}</prenoms><sexe>{sexe}</sexe><dateNaissance>{}</dateNaissance>",
        pick(rng, &BIRTH_NAMES),
        pick(rng, &FIRST_NAMES),
        d(birth)
    )?;
    if rng.gen_bool(0.6) {
        writeln!(
            w,
            "      <identifiantPE national=\"PE{:010}\" regional=\"{:07}W\" codeGeo=\"044\"/>",
            rng.gen_range(0..10_000_000_000u64),
            rng.gen_range(0..10_000_000)
        )?;
    }
    writeln!(
        w,
        "      <adresse codePostal=\"44{:03}\" communeInsee=\"44{:03}\"/>\n    </stagiaire>",
        rng.gen_range(0..1000),
        rng.gen_range(1..400)
    )?;

    let session_no = rng.gen_range(100_000..10_000_000);
    let numero_session = if invalid == Some(Rule::IntercarifFormat) {
        format!("{session_no} 01")
    } else {
        session_no.to_string()
    };
    let version_fc = if invalid == Some(Rule::FormacodeVersion) {
        "12"
    } else {
        "V12"
    };
    writeln!(
        w,
        "    <action numeroFormation=\"20_{}\" numeroAction=\"20_{}\" numeroSession=\"{numero_session}\" intitule=\"Soudeur &#8211; tuyauteur\" formacode=\"{:05}\" formacodeVersion=\"{version_fc}\" certification=\"RNCP{}\"/>",
        rng.gen_range(1_000_000..2_000_000),
        rng.gen_range(1_000_000..2_000_000),
        rng.gen_range(10_000..99_999),
        rng.gen_range(1000..40000),
    )?;
    writeln!(
        w,
        "    <organisme siret=\"{}\" nda=\"52{:09}\" raisonSociale=\"Organisme n°{}\"/>",
        siret(rng, invalid == Some(Rule::SiretLuhn)),
        rng.gen_range(0..1_000_000_000),
        rng.gen_range(1..500)
    )?;
    let date_fin = if invalid == Some(Rule::DateFormat) {
        end.format("%Y-%m-%d").to_string()
    } else {
        d(end)
    };
    writeln!(
        w,
        "    <session dateDebut=\"{}\" dateFin=\"{date_fin}\" heuresCentre=\"{}\" heuresEntreprise=\"{}\"/>",
        d(start),
        rng.gen_range(50..1200),
        rng.gen_range(0..400)
    )?;
    writeln!(w, "    <etat>{etat}</etat>")?;
    if has_entry {
        writeln!(w, "    <entree date=\"{}\"/>", d(entry))?;
    }
    if has_exit && invalid != Some(Rule::StatusRequired) {
        writeln!(
            w,
            "    <sortie date=\"{}\" motif=\"{}\" resultat=\"{}\" heuresRealisees=\"{}\"/>",
            d(exit),
            pick(rng, &MOTIFS),
            pick(rng, &RESULTATS),
            rng.gen_range(0..1500)
        )?;
    }
    let funders = rng.gen_range(1..=3);
    for i in 0..funders {
        let funder = if i == 0 {
            2
        } else if invalid == Some(Rule::FunderCode) && i == funders - 1 {
            6
        } else {
            pick(rng, &FUNDERS)
        };
        let committed = rng.gen_range(10_000..2_000_000i64);
        let engage = if invalid == Some(Rule::AmountFormat) && i == 0 {
            "12,345".to_string()
        } else {
            format!("{},{:02}", committed / 100, committed % 100)
        };
        if state == State::Settled {
            let realised = committed - rng.gen_range(0..committed / 4);
            writeln!(
                w,
                "    <financement financeur=\"{funder}\" montantEngage=\"{engage}\" montantRealise=\"{},{:02}\" montantSolde=\"{},{:02}\"/>",
                realised / 100, realised % 100, realised / 100, realised % 100
            )?;
        } else {
            writeln!(
                w,
                "    <financement financeur=\"{funder}\" montantEngage=\"{engage}\" montantRealise=\"\" montantSolde=\"\"/>"
            )?;
        }
    }
    // A funder-code mutation needs a second funding to break.
    if invalid == Some(Rule::FunderCode) && funders == 1 {
        writeln!(
            w,
            "    <financement financeur=\"6\" montantEngage=\"10,00\"/>"
        )?;
    }
    if state == State::Cancelled {
        writeln!(
            w,
            "    <annulation date=\"{}\" initiateur=\"{}\" motif=\"Désistement avant l’entrée\"/>",
            d(start - Duration::days(rng.gen_range(1..30))),
            pick(rng, &INITIATEURS)
        )?;
    }
    w.write_all(b"  </dossier>\n")?;

    Ok(match (invalid, out) {
        (Some(rule), _) => Outcome::Invalid(rule),
        (None, Some(reason)) => Outcome::OutOfPerimeter(reason),
        (None, None) if before_2017 && opts.flow == Flow::Backfill => {
            Outcome::OutOfPerimeter(Reason::SessionBeforeBackfillStart)
        }
        (None, None) => Outcome::Valid(state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_adapters::atexo_sem::{decode_stream, DecodeSettings, Perimeter};

    /// Every generated dossier decodes to exactly its truth, in both flows.
    #[test]
    fn generated_dossiers_decode_to_their_truth() {
        for flow in [Flow::Backfill, Flow::Sync] {
            let opts = GenOptions {
                seed: 7,
                count: 3000,
                flow,
                invalid_share: 0.2,
                out_of_perimeter_share: 0.1,
                before_2017_share: 0.1,
            };
            let mut xml = Vec::new();
            let truths = write_atexo_export(&mut xml, &opts).expect("generates");
            let items: Vec<_> =
                decode_stream(xml.as_slice(), flow, &DecodeSettings::default()).collect();
            assert_eq!(items.len(), truths.len());
            let mut seen_rules = std::collections::HashSet::new();
            for (item, t) in items.iter().zip(&truths) {
                match (item, t.outcome) {
                    (Ok(d), Outcome::Valid(state)) => {
                        assert_eq!((d.dossier.state, &d.perimeter), (state, &Perimeter::In));
                        assert_eq!(d.id, dossier_id(7, t.index));
                    }
                    (Ok(d), Outcome::OutOfPerimeter(r)) => match &d.perimeter {
                        Perimeter::Out(o) => assert!(r.matches(o), "{r:?} / {o:?}"),
                        Perimeter::In => panic!("#{} should be out: {r:?}", t.index),
                    },
                    (Err(e), Outcome::Invalid(rule)) => {
                        assert!(
                            e.violations.iter().all(|v| v.rule == rule),
                            "#{}: {rule:?} expected, got {:?}",
                            t.index,
                            e.violations
                        );
                        seen_rules.insert(rule);
                    }
                    (item, outcome) => panic!("#{}: {outcome:?} expected, got {item:?}", t.index),
                }
            }
            assert_eq!(seen_rules.len(), INVALID_RULES.len());
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_export() {
        let opts = GenOptions {
            count: 50,
            ..GenOptions::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_atexo_export(&mut a, &opts).expect("a");
        write_atexo_export(&mut b, &opts).expect("b");
        assert_eq!(a, b);
    }

    /// Corsican NIRs (department 2A or 2B) come out too, valid ones decoding as valid dossiers.
    #[test]
    fn some_nirs_are_corsican_and_valid() {
        let opts = GenOptions {
            count: 400,
            invalid_share: 0.0,
            out_of_perimeter_share: 0.0,
            before_2017_share: 0.0,
            ..GenOptions::default()
        };
        let exports = single_dossier_exports(&opts).expect("generates");
        let corsican = |department: &str| {
            exports
                .iter()
                .filter(|x| {
                    let xml = String::from_utf8_lossy(&x.xml);
                    let nir = xml.split("<nir>").nth(1).unwrap_or_default();
                    nir.get(5..7) == Some(department)
                })
                .inspect(|x| {
                    let decoded: Vec<_> =
                        decode_stream(x.xml.as_slice(), opts.flow, &DecodeSettings::default())
                            .collect();
                    assert!(
                        matches!(decoded.as_slice(), [Ok(_)]),
                        "{}: {:?}",
                        x.id,
                        decoded.first().map(|d| d.as_ref().err())
                    );
                })
                .count()
        };
        assert!(corsican("2A") > 0 && corsican("2B") > 0);
    }
}

/// One generated dossier as its own `exportSEM` document, as ATEXO SEM posts it to the gateway.
#[derive(Debug, Clone)]
pub struct SingleExport {
    /// ATEXO's dossier id ([`dossier_id`]).
    pub id: String,
    pub truth: Truth,
    /// The whole document (UTF-8 prolog, one `dossier`).
    pub xml: Vec<u8>,
}

/// `opts.count` generated dossiers, each in its own document (for the synchronous flow, which takes
/// small posts). Holds them all in memory: meant for thousands, not millions.
pub fn single_dossier_exports(opts: &GenOptions) -> io::Result<Vec<SingleExport>> {
    let mut whole = Vec::new();
    let truths = write_atexo_export(&mut whole, opts)?;
    const HEAD: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\" region=\"PDL\" dateExport=\"30/06/2024\">\n";
    const OPEN: &[u8] = b"<dossier ";
    const CLOSE: &[u8] = b"</dossier>";
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut out = Vec::with_capacity(truths.len());
    let mut at = 0;
    for truth in truths {
        let (Some(start), Some(end)) = (
            find(&whole, OPEN, at),
            find(&whole, CLOSE, at).map(|e| e + CLOSE.len()),
        ) else {
            return Err(io::Error::other(
                "the generated export has fewer dossiers than its truths",
            ));
        };
        let mut xml = HEAD.to_vec();
        xml.extend_from_slice(&whole[start..end]);
        xml.extend_from_slice(b"\n</exportSEM>\n");
        out.push(SingleExport {
            id: dossier_id(opts.seed, truth.index),
            truth,
            xml,
        });
        at = end;
    }
    Ok(out)
}
