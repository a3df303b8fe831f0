//! Merging sources (*rapprochement*): the orientation, the Pôle emploi registration and the
//! ATEXO SEM dossier of one trainee on one session are one canonical dossier.
//!
//! Records correlate on (NIR-13, `numeroSession`) ([`Dossier::key`]). The ledger keeps the latest
//! record of each source and calls [`merge`] on all of them whenever one changes, so the result does
//! not depend on the order in which messages arrived: it is a function of the set of latest records.
//!
//! Each group of fields has an ordered list of sources ([`Precedence`]): the first source that
//! carries the group wins. The lifecycle state is merged differently: the most advanced state any
//! source reports wins (progress is news, whoever brings it), and two states that cannot follow one
//! another are a [`Conflict`] settled in favour of the source with precedence for the state.

use crate::canonical::{Advance, Dossier, State, System, Trainee, Training};
use crate::violation::{Rule, Violation};
use serde::{Deserialize, Serialize};

/// A group of fields owned together by one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldGroup {
    /// The trainee's identity and contact (*stagiaire*).
    Trainee,
    /// The training offer, provider and funding scheme (*offre*, *organisme*, *dispositif*).
    Offer,
    /// Session dates and hours (*session*).
    Session,
    /// Fundings and amounts (*financements*).
    Funding,
    /// Entry into training (*entrée*).
    Entry,
    /// Exit from training (*sortie*).
    Exit,
    /// Cancellation and refusal (*annulation*, *refus*).
    Cancellation,
    /// The lifecycle state, when two sources contradict each other (*état*).
    State,
}

impl FieldGroup {
    pub const ALL: [FieldGroup; 8] = [
        FieldGroup::Trainee,
        FieldGroup::Offer,
        FieldGroup::Session,
        FieldGroup::Funding,
        FieldGroup::Entry,
        FieldGroup::Exit,
        FieldGroup::Cancellation,
        FieldGroup::State,
    ];
}

/// Which source wins, per field group (configuration `merge.precedence.<group>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Precedence {
    pub trainee: Vec<System>,
    pub offer: Vec<System>,
    pub session: Vec<System>,
    pub funding: Vec<System>,
    pub entry: Vec<System>,
    pub exit: Vec<System>,
    pub cancellation: Vec<System>,
    pub state: Vec<System>,
}

impl Default for Precedence {
    /// Each source says how much it is to be believed per group of fields
    /// ([`crate::Source::default_rank`]): ATEXO SEM is the Region's system of record and comes
    /// first everywhere; the others rank by what they are the authority on.
    fn default() -> Self {
        let order = |group: FieldGroup| {
            let mut sources: Vec<_> = crate::SOURCES.to_vec();
            sources.sort_by_key(|s| s.default_rank(group));
            sources.iter().map(|s| s.system()).collect::<Vec<System>>()
        };
        Self {
            trainee: order(FieldGroup::Trainee),
            offer: order(FieldGroup::Offer),
            session: order(FieldGroup::Session),
            funding: order(FieldGroup::Funding),
            entry: order(FieldGroup::Entry),
            exit: order(FieldGroup::Exit),
            cancellation: order(FieldGroup::Cancellation),
            state: order(FieldGroup::State),
        }
    }
}

impl Precedence {
    pub fn order(&self, group: FieldGroup) -> &[System] {
        match group {
            FieldGroup::Trainee => &self.trainee,
            FieldGroup::Offer => &self.offer,
            FieldGroup::Session => &self.session,
            FieldGroup::Funding => &self.funding,
            FieldGroup::Entry => &self.entry,
            FieldGroup::Exit => &self.exit,
            FieldGroup::Cancellation => &self.cancellation,
            FieldGroup::State => &self.state,
        }
    }

    /// Checks that each group lists each system at most once and names no AGORA (a destination).
    pub fn validate(&self) -> Result<(), String> {
        for g in FieldGroup::ALL {
            let order = self.order(g);
            for (i, s) in order.iter().enumerate() {
                if *s == System::Agora {
                    return Err(format!(
                        "merge.precedence.{g:?}: AGORA is a destination, not a source"
                    )
                    .to_lowercase());
                }
                if order[..i].contains(s) {
                    return Err(format!(
                        "merge.precedence.{g:?}: {} is listed twice",
                        s.as_str()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Two sources whose states cannot both be true; the one with precedence was kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub group: FieldGroup,
    pub kept: System,
    pub kept_state: State,
    pub ignored: System,
    pub ignored_state: State,
}

/// The merged dossier and what had to be arbitrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub dossier: Dossier,
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("record {index} is not the same trainee on the same session as the first one")]
    KeyMismatch { index: usize },
    #[error("record {index} comes from {system:?}, which already gave record {first}")]
    DuplicateSource {
        index: usize,
        first: usize,
        system: System,
    },
}

/// Merges the latest record of each source (one per system, all of the same key).
pub fn merge(records: &[Dossier], precedence: &Precedence) -> Result<Merged, MergeError> {
    let first = records.first().ok_or(MergeError::Empty)?;
    let key = first.key();
    let mut systems: Vec<System> = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if r.key() != key {
            return Err(MergeError::KeyMismatch { index: i });
        }
        let system = r.sources.first().map_or(System::Agora, |s| s.system);
        if let Some(first) = systems.iter().position(|s| *s == system) {
            return Err(MergeError::DuplicateSource {
                index: i,
                first,
                system,
            });
        }
        systems.push(system);
    }
    // Records in the order of a group's precedence; systems not listed come last, in input order.
    let ordered = |group: FieldGroup| -> Vec<&Dossier> {
        let order = precedence.order(group);
        let rank = |s: &System| order.iter().position(|o| o == s).unwrap_or(order.len());
        let mut idx: Vec<usize> = (0..records.len()).collect();
        idx.sort_by_key(|&i| rank(&systems[i]));
        idx.into_iter().map(|i| &records[i]).collect()
    };
    let pick = |group: FieldGroup, f: &dyn Fn(&Dossier) -> bool| -> Option<&Dossier> {
        ordered(group).into_iter().find(|d| f(d))
    };

    let (state, conflicts) = merge_state(&ordered(FieldGroup::State), &systems, records);

    let offer = ordered(FieldGroup::Offer);
    let trainee_order = ordered(FieldGroup::Trainee);
    let mut sources: Vec<_> = records
        .iter()
        .flat_map(|r| r.sources.iter().cloned())
        .collect();
    sources.sort_by_key(|s| s.system);

    let dossier = Dossier {
        sources,
        state,
        dispositif: first_some(&offer, |d| d.dispositif.clone()),
        category: first_some(&offer, |d| d.category.clone()),
        programme: first_some(&offer, |d| d.programme.clone()),
        consultation: first_some(&offer, |d| d.consultation.clone()),
        trainee: merge_trainee(&trainee_order),
        training: merge_training(&offer),
        provider: first_some(&offer, |d| d.provider.clone()),
        session: pick(FieldGroup::Session, &|d| d.session.is_some())
            .and_then(|d| d.session.clone()),
        entry: pick(FieldGroup::Entry, &|d| d.entry.is_some()).and_then(|d| d.entry.clone()),
        exit: pick(FieldGroup::Exit, &|d| d.exit.is_some()).and_then(|d| d.exit.clone()),
        // Fundings are taken whole from one source: mixing shares of two lists would count twice.
        fundings: pick(FieldGroup::Funding, &|d| !d.fundings.is_empty())
            .map(|d| d.fundings.clone())
            .unwrap_or_default(),
        cancellation: pick(FieldGroup::Cancellation, &|d| d.cancellation.is_some())
            .and_then(|d| d.cancellation.clone()),
        refusal: pick(FieldGroup::Cancellation, &|d| d.refusal.is_some())
            .and_then(|d| d.refusal.clone()),
        orientation: records.iter().find_map(|d| d.orientation.clone()),
        registration: records.iter().find_map(|d| d.registration.clone()),
    };
    Ok(Merged { dossier, conflicts })
}

fn first_some<T>(ordered: &[&Dossier], f: impl Fn(&Dossier) -> Option<T>) -> Option<T> {
    ordered.iter().find_map(|d| f(d))
}

fn merge_trainee(ordered: &[&Dossier]) -> Trainee {
    let t = |f: &dyn Fn(&Trainee) -> bool| ordered.iter().map(|d| &d.trainee).find(|t| f(t));
    let base = &ordered[0].trainee;
    Trainee {
        // The NIR with its key, when a source has it, says more than the 13 characters alone.
        nir: t(&|t| t.nir.expose().len() == 15).map_or(base.nir.clone(), |t| t.nir.clone()),
        birth_name: first_some(ordered, |d| d.trainee.birth_name.clone()),
        usage_name: first_some(ordered, |d| d.trainee.usage_name.clone()),
        first_names: first_some(ordered, |d| d.trainee.first_names.clone()),
        sex: first_some(ordered, |d| d.trainee.sex),
        birth_date: first_some(ordered, |d| d.trainee.birth_date.clone()),
        pole_emploi_id: first_some(ordered, |d| d.trainee.pole_emploi_id.clone()),
        postal_code: first_some(ordered, |d| d.trainee.postal_code.clone()),
        commune_insee: first_some(ordered, |d| d.trainee.commune_insee.clone()),
    }
}

fn merge_training(ordered: &[&Dossier]) -> Training {
    Training {
        numero_formation: first_some(ordered, |d| d.training.numero_formation.clone()),
        numero_action: first_some(ordered, |d| d.training.numero_action.clone()),
        numero_session: ordered[0].training.numero_session.clone(),
        title: first_some(ordered, |d| d.training.title.clone()),
        formacode: first_some(ordered, |d| d.training.formacode.clone()),
        certification: first_some(ordered, |d| d.training.certification.clone()),
    }
}

fn merge_state(
    ordered: &[&Dossier],
    systems: &[System],
    records: &[Dossier],
) -> (State, Vec<Conflict>) {
    let system_of = |d: &Dossier| {
        let i = records.iter().position(|r| std::ptr::eq(r, d)).unwrap_or(0);
        systems[i]
    };
    let mut conflicts = Vec::new();
    let mut state = ordered[0].state;
    let mut owner = system_of(ordered[0]);
    for d in &ordered[1..] {
        match state.advance(d.state) {
            Ok(Advance::Forward) => {
                state = d.state;
                owner = system_of(d);
            }
            Ok(Advance::Same | Advance::Behind) => {}
            Err(_) => conflicts.push(Conflict {
                group: FieldGroup::State,
                kept: owner,
                kept_state: state,
                ignored: system_of(d),
                ignored_state: d.state,
            }),
        }
    }
    (state, conflicts)
}

/// Checks that a dossier may go from its previous merged state to the new one. A state behind the
/// previous one is stale news and is not an error: the caller keeps the previous state.
pub fn check_transition(previous: State, next: State) -> Result<Advance, Violation> {
    previous.advance(next).map_err(|e| {
        Violation::new(
            "/state",
            Rule::LifecycleTransition,
            format!(
                "a dossier that is {} cannot become {}",
                e.from.as_str(),
                e.to.as_str()
            ),
        )
    })
}

#[cfg(test)]
mod tests;
