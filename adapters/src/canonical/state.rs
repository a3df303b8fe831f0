//! The dossier lifecycle of domain.md: which state follows which.

use serde::{Deserialize, Serialize};

/// Lifecycle state of a canonical dossier (*état du dossier*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// An orientation exists (*prescrit*).
    Prescribed,
    /// Registered to a session (*inscrit*).
    Registered,
    /// Validated by the funder (*validé*).
    Validated,
    /// Entered training (*entré*).
    Entered,
    /// Left training (*sorti*).
    Exited,
    /// Service declared done by the provider (*service fait*).
    ServiceDone,
    /// Settled, costs computed (*soldé*).
    Settled,
    /// Refused (*refusé*).
    Refused,
    /// Cancelled before entry (*annulé*).
    Cancelled,
}

/// Why a move between two states is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a dossier cannot go from {from:?} to {to:?}")]
pub struct TransitionError {
    pub from: State,
    pub to: State,
}

/// What a new desired state means against the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The same state: nothing changes.
    Same,
    /// A later state, reachable through allowed transitions (the steps between are implied).
    Forward,
    /// An earlier state the dossier already went through: stale news, to be ignored.
    Behind,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Prescribed,
        State::Registered,
        State::Validated,
        State::Entered,
        State::Exited,
        State::ServiceDone,
        State::Settled,
        State::Refused,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Prescribed => "prescribed",
            State::Registered => "registered",
            State::Validated => "validated",
            State::Entered => "entered",
            State::Exited => "exited",
            State::ServiceDone => "service_done",
            State::Settled => "settled",
            State::Refused => "refused",
            State::Cancelled => "cancelled",
        }
    }

    /// The states this one may be reached from directly (domain.md, "reached from").
    /// `None` in the table ("—") means a dossier may start in this state.
    pub fn predecessors(self) -> &'static [State] {
        use State::*;
        match self {
            Prescribed => &[],
            Registered => &[Prescribed],
            Validated => &[Prescribed, Registered],
            Entered => &[Registered, Validated],
            Exited => &[Entered],
            ServiceDone => &[Exited],
            Settled => &[Exited, ServiceDone],
            Refused => &[Prescribed, Registered],
            Cancelled => &[Prescribed, Registered, Validated],
        }
    }

    /// Whether a dossier may start its life in this state (outside a backfill).
    pub fn can_start(self) -> bool {
        use State::*;
        matches!(self, Prescribed | Registered | Validated | Entered)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Refused | State::Cancelled | State::Settled)
    }

    /// Whether `self → to` is one allowed transition.
    pub fn can_move_to(self, to: State) -> bool {
        to.predecessors().contains(&self)
    }

    /// Whether `to` can be reached from `self` through zero or more allowed transitions.
    pub fn reaches(self, to: State) -> bool {
        if self == to {
            return true;
        }
        // The graph is a small DAG: walk back from `to`.
        to.predecessors().iter().any(|&p| self.reaches(p))
    }

    /// Classifies a new desired state against this one: forward, same, stale, or not allowed.
    pub fn advance(self, to: State) -> Result<Advance, TransitionError> {
        if self == to {
            Ok(Advance::Same)
        } else if self.reaches(to) {
            Ok(Advance::Forward)
        } else if to.reaches(self) {
            Ok(Advance::Behind)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_domain_md() {
        use State::*;
        assert!(Prescribed.can_move_to(Registered));
        assert!(Registered.can_move_to(Entered));
        assert!(
            !Prescribed.can_move_to(Entered),
            "entry needs a registration or validation"
        );
        assert!(Exited.can_move_to(Settled));
        assert!(
            !Entered.can_move_to(Cancelled),
            "after entry it is an early exit"
        );
        for t in [Refused, Cancelled, Settled] {
            assert!(t.is_terminal());
            for s in State::ALL {
                assert!(!t.can_move_to(s), "{t:?} is terminal but moves to {s:?}");
            }
        }
    }

    #[test]
    fn advance_classifies_every_pair() {
        use State::*;
        assert_eq!(Registered.advance(Exited), Ok(Advance::Forward));
        assert_eq!(Exited.advance(Registered), Ok(Advance::Behind));
        assert_eq!(Entered.advance(Entered), Ok(Advance::Same));
        assert!(Entered.advance(Cancelled).is_err());
        assert!(Refused.advance(Entered).is_err());
        assert!(Cancelled.advance(Settled).is_err());
        // Forward and Behind are mirror images, and errors are symmetric.
        for a in State::ALL {
            for b in State::ALL {
                match (a.advance(b), b.advance(a)) {
                    (Ok(Advance::Same), Ok(Advance::Same)) => assert_eq!(a, b),
                    (Ok(Advance::Forward), Ok(Advance::Behind)) => {}
                    (Ok(Advance::Behind), Ok(Advance::Forward)) => {}
                    (Err(_), Err(_)) => {}
                    other => panic!("{a:?}/{b:?}: {other:?}"),
                }
            }
        }
    }
}
