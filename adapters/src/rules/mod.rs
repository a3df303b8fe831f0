//! Domain rules on a canonical dossier: identifier keys, date coherence, funder codes and the blocks
//! a state requires. [`validate`] returns **every** violation, with canonical JSON pointers; each
//! adapter turns them into paths of its own payload with its mapping table.

pub mod identifiers;

use crate::canonical::{Dossier, State, System};
use crate::violation::{Rule, Violation};
use chrono::{Datelike, NaiveDate};

/// Tunables of the rules (configuration `rules.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSettings {
    /// How many days before the session start an entry may still be dated (late paperwork, early
    /// positioning days).
    pub entry_tolerance_days: i64,
    /// Youngest plausible trainee, in years at the session start (or entry).
    pub min_age_years: i32,
    /// Oldest plausible trainee, in years.
    pub max_age_years: i32,
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            entry_tolerance_days: 30,
            min_age_years: 14,
            max_age_years: 100,
        }
    }
}

/// The blocks a state requires, depending on what the source system is able to carry
/// ([`crate::sources::Source::required_blocks`]).
///
/// A block a source cannot carry is not required of it: the merged dossier waits as *incomplete*
/// until another source brings it. AGORA, the destination, requires every block of the state.
pub fn required_blocks(system: System, state: State) -> &'static [Block] {
    match crate::sources::source(system) {
        Some(source) => source.required_blocks(state),
        None => blocks_of_state(state),
    }
}

/// Every block a dossier in `state` has reached: what a system that carries them all must send.
pub fn blocks_of_state(state: State) -> &'static [Block] {
    use Block::*;
    use State::*;
    match state {
        Prescribed | Registered | Validated | Refused => &[Session, Funding],
        Entered => &[Session, Funding, Entry],
        Exited | ServiceDone => &[Session, Funding, Entry, Exit],
        Settled => &[Session, Funding, Entry, Exit, Settlement],
        Cancelled => &[Session, Funding, Cancellation],
    }
}

/// A part of the dossier a state may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Session,
    Funding,
    Entry,
    Exit,
    Settlement,
    Cancellation,
    RefusalReason,
}

impl Block {
    /// Whether the dossier has the block; when not, the pointer to name in the violation.
    fn missing(self, d: &Dossier) -> Option<&'static str> {
        match self {
            Block::Session => d.session.is_none().then_some("/session"),
            Block::Funding => d.fundings.is_empty().then_some("/fundings"),
            Block::Entry => d.entry.is_none().then_some("/entry"),
            Block::Exit => d.exit.is_none().then_some("/exit"),
            Block::Settlement => {
                let f = d.main_funding()?;
                if f.realised_cents.is_none() {
                    Some("/fundings/0/realised_cents")
                } else if f.settled_cents.is_none() {
                    Some("/fundings/0/settled_cents")
                } else {
                    None
                }
            }
            Block::Cancellation => d.cancellation.is_none().then_some("/cancellation"),
            Block::RefusalReason => {
                let has = d.refusal.as_ref().and_then(|r| r.reason.as_deref());
                has.is_none_or(str::is_empty).then_some("/refusal/reason")
            }
        }
    }
}

/// Checks a canonical dossier decoded from `system`. Returns every violation (empty when valid).
pub fn validate(d: &Dossier, system: System, settings: &RuleSettings) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut check = |pointer: &str, result: identifiers::Check| {
        if let Err((rule, detail)) = result {
            out.push(Violation::new(pointer, rule, detail));
        }
    };

    check("/trainee/nir", identifiers::nir(d.trainee.nir.expose()));
    check(
        "/training/numero_session",
        identifiers::intercarif(&d.training.numero_session),
    );
    if let Some(v) = &d.training.numero_formation {
        check("/training/numero_formation", identifiers::intercarif(v));
    }
    if let Some(v) = &d.training.numero_action {
        check("/training/numero_action", identifiers::intercarif(v));
    }
    if let Some(f) = &d.training.formacode {
        check("/training/formacode/code", identifiers::formacode(&f.code));
        check(
            "/training/formacode/version",
            identifiers::formacode_version(&f.version),
        );
    }
    if let Some(c) = &d.training.certification {
        check("/training/certification", identifiers::certification(c));
    }
    if let Some(s) = d.provider.as_ref().and_then(|p| p.siret.as_deref()) {
        check("/provider/siret", identifiers::siret(s));
    }
    if let Some(s) = d
        .orientation
        .as_ref()
        .and_then(|o| o.prescriber_siret.as_deref())
    {
        check("/orientation/prescriber_siret", identifiers::siret(s));
    }
    if let Some(p) = &d.trainee.postal_code {
        check("/trainee/postal_code", identifiers::postal_code(p));
    }
    if let Some(c) = &d.trainee.commune_insee {
        check("/trainee/commune_insee", identifiers::insee_commune(c));
    }
    for (i, f) in d.fundings.iter().enumerate() {
        if let Err((rule, detail)) = identifiers::funder_code(f.funder) {
            out.push(Violation::new(
                format!("/fundings/{i}/funder"),
                rule,
                detail,
            ));
        }
        for (name, amount) in [
            ("committed_cents", f.committed_cents),
            ("realised_cents", f.realised_cents),
            ("settled_cents", f.settled_cents),
        ] {
            if amount.is_some_and(|a| a < 0) {
                out.push(Violation::new(
                    format!("/fundings/{i}/{name}"),
                    Rule::AmountFormat,
                    "must not be negative",
                ));
            }
        }
    }

    dates(d, settings, &mut out);

    for block in required_blocks(system, d.state) {
        if let Some(pointer) = block.missing(d) {
            out.push(Violation::new(
                pointer,
                Rule::StatusRequired,
                format!("is required when the dossier is {}", d.state.as_str()),
            ));
        }
    }
    out
}

fn dates(d: &Dossier, settings: &RuleSettings, out: &mut Vec<Violation>) {
    if let Some(s) = &d.session {
        if s.end < s.start {
            out.push(Violation::new(
                "/session/end",
                Rule::DateSession,
                "is before the session start",
            ));
        }
        if let Some(e) = &d.entry {
            if e.date < s.start - chrono::Duration::days(settings.entry_tolerance_days) {
                out.push(Violation::new(
                    "/entry/date",
                    Rule::DateEntry,
                    format!(
                        "is more than {} days before the session start",
                        settings.entry_tolerance_days
                    ),
                ));
            }
        }
    }
    if let (Some(e), Some(x)) = (&d.entry, &d.exit) {
        if x.date < e.date {
            out.push(Violation::new(
                "/exit/date",
                Rule::DateExit,
                "is before the entry date",
            ));
        }
    }
    if let (Some(e), Some(c)) = (&d.entry, &d.cancellation) {
        if c.date > e.date {
            out.push(Violation::new(
                "/cancellation/date",
                Rule::DateCancellation,
                "is after the entry: after entry, record an early exit instead",
            ));
        }
    }
    if let Some(birth) = &d.trainee.birth_date {
        let birth = *birth.expose();
        // Age is judged when the training starts; with no dates yet, when the record was made.
        let at = d
            .session
            .as_ref()
            .map(|s| s.start)
            .or_else(|| d.entry.as_ref().map(|e| e.date))
            .or_else(|| d.orientation.as_ref().map(|o| o.date.date_naive()));
        if let Some(at) = at {
            let age = years_between(birth, at);
            if age < settings.min_age_years || age > settings.max_age_years {
                out.push(Violation::new(
                    "/trainee/birth_date",
                    Rule::DateBirth,
                    format!(
                        "gives an age outside {}-{} years at the start of training",
                        settings.min_age_years, settings.max_age_years
                    ),
                ));
            }
        }
    }
}

fn years_between(from: NaiveDate, to: NaiveDate) -> i32 {
    let mut years = to.year() - from.year();
    if (to.month(), to.day()) < (from.month(), from.day()) {
        years -= 1;
    }
    years
}
