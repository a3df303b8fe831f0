//! The reconcile planner: from what AGORA already holds to what the canonical state says it should
//! hold, the AGORA operations still owed, in order.
//!
//! It is pure and total: every (delivered, desired) pair gets either a plan or a typed error, never a
//! panic. This is what makes the relay level-triggered (design.md, principle 2): a duplicate message
//! plans nothing, a lost one is repaired by the next, and the order of messages does not matter.
//!
//! The worker's loop is: plan, perform the first operation, record what AGORA answered as the new
//! delivered state, plan again, until the plan is empty. `Search` is planned first whenever passerelle
//! does not know whether AGORA has the dossier; what follows it assumes AGORA had nothing, and is
//! re-planned once the search has answered.

use crate::canonical::State;
use serde::{Deserialize, Serialize};

/// A dossier's state in AGORA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgoraState {
    #[serde(rename = "CREE")]
    Cree,
    #[serde(rename = "ENTRE")]
    Entre,
    #[serde(rename = "SORTI")]
    Sorti,
    #[serde(rename = "SOLDE")]
    Solde,
    #[serde(rename = "ANNULE")]
    Annule,
}

impl AgoraState {
    pub const ALL: [AgoraState; 5] = [
        AgoraState::Cree,
        AgoraState::Entre,
        AgoraState::Sorti,
        AgoraState::Solde,
        AgoraState::Annule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgoraState::Cree => "CREE",
            AgoraState::Entre => "ENTRE",
            AgoraState::Sorti => "SORTI",
            AgoraState::Solde => "SOLDE",
            AgoraState::Annule => "ANNULE",
        }
    }

    pub fn parse(s: &str) -> Option<AgoraState> {
        AgoraState::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Position on the main line CREE → ENTRE → SORTI → SOLDE; `None` for ANNULE.
    fn rank(self) -> Option<u8> {
        match self {
            AgoraState::Cree => Some(0),
            AgoraState::Entre => Some(1),
            AgoraState::Sorti => Some(2),
            AgoraState::Solde => Some(3),
            AgoraState::Annule => None,
        }
    }

    /// The state an operation leads to from this one, as AGORA's rules allow; `None` when AGORA
    /// would answer `409 AG-ETAT`.
    pub fn after(self, op: Operation) -> Option<AgoraState> {
        use AgoraState::*;
        match (self, op) {
            (Cree, Operation::Enter) => Some(Entre),
            (Entre, Operation::Exit) => Some(Sorti),
            (Sorti, Operation::Settle) => Some(Solde),
            (Cree, Operation::Cancel) => Some(Annule),
            _ => None,
        }
    }
}

/// What passerelle knows of the dossier in AGORA, per destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delivered {
    /// Never asked: AGORA may hold it (another path, an earlier backfill), so search first.
    Unknown,
    /// Searched, and AGORA has no such dossier.
    Absent,
    /// AGORA holds it under this number, in this state.
    Present {
        numero_agora: String,
        state: AgoraState,
    },
}

/// What AGORA should hold for a canonical state (contract §3, trigger rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nothing is owed (an orientation alone is not a funded dossier).
    Nothing,
    /// The dossier exists in AGORA in this state.
    State(AgoraState),
    /// Cancelled if AGORA already has the dossier, nothing otherwise.
    CancelIfPresent,
}

pub fn target(desired: State) -> Target {
    use State::*;
    match desired {
        Prescribed => Target::Nothing,
        Registered | Validated => Target::State(AgoraState::Cree),
        Entered => Target::State(AgoraState::Entre),
        Exited | ServiceDone => Target::State(AgoraState::Sorti),
        Settled => Target::State(AgoraState::Solde),
        Refused | Cancelled => Target::CancelIfPresent,
    }
}

/// One AGORA call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET /dossiers?financeur=&reference=`
    Search,
    /// `POST /dossiers`
    Create,
    /// `POST /dossiers/{n}/entree`
    Enter,
    /// `POST /dossiers/{n}/sortie`
    Exit,
    /// `POST /dossiers/{n}/solde`
    Settle,
    /// `POST /dossiers/{n}/annulation`
    Cancel,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Search,
        Operation::Create,
        Operation::Enter,
        Operation::Exit,
        Operation::Settle,
        Operation::Cancel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Search => "search",
            Operation::Create => "create",
            Operation::Enter => "enter",
            Operation::Exit => "exit",
            Operation::Settle => "settle",
            Operation::Cancel => "cancel",
        }
    }
}

/// A pair of states no sequence of AGORA operations can reconcile: it needs an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlanError {
    /// AGORA is further along its lifecycle than the canonical state (AGORA cannot go back).
    #[error("AGORA holds the dossier as {delivered:?}, beyond the desired state {desired:?}; AGORA cannot go back")]
    Regression {
        delivered: AgoraState,
        desired: State,
    },
    /// AGORA cancelled the dossier but the canonical state wants it alive.
    #[error("AGORA holds the dossier as cancelled, but the desired state is {desired:?}")]
    CancelledInAgora { desired: State },
    /// A cancellation or refusal is desired after AGORA recorded the entry: that is an early exit.
    #[error("the desired state is {desired:?} but AGORA recorded an entry ({delivered:?}); record an early exit instead")]
    CancelAfterEntry {
        delivered: AgoraState,
        desired: State,
    },
}

/// The AGORA operations owed, in order, to bring AGORA from `delivered` to the target of `desired`.
pub fn plan(delivered: &Delivered, desired: State) -> Result<Vec<Operation>, PlanError> {
    let present = match delivered {
        Delivered::Present { state, .. } => Some(*state),
        Delivered::Absent | Delivered::Unknown => None,
    };
    let mut ops = Vec::new();
    match (target(desired), present) {
        (Target::Nothing, None) => {}
        (Target::Nothing, Some(AgoraState::Annule)) => {}
        (Target::Nothing, Some(s)) => {
            return Err(PlanError::Regression {
                delivered: s,
                desired,
            })
        }
        (Target::CancelIfPresent, None) => {
            if *delivered == Delivered::Unknown {
                ops.push(Operation::Search);
            }
        }
        (Target::CancelIfPresent, Some(AgoraState::Cree)) => ops.push(Operation::Cancel),
        (Target::CancelIfPresent, Some(AgoraState::Annule)) => {}
        (Target::CancelIfPresent, Some(s)) => {
            return Err(PlanError::CancelAfterEntry {
                delivered: s,
                desired,
            })
        }
        (Target::State(_), Some(AgoraState::Annule)) => {
            return Err(PlanError::CancelledInAgora { desired })
        }
        (Target::State(t), from) => {
            let from_rank = match from {
                None => {
                    if *delivered == Delivered::Unknown {
                        ops.push(Operation::Search);
                    }
                    ops.push(Operation::Create);
                    0
                }
                Some(s) => s.rank().unwrap_or(0),
            };
            let to_rank = t.rank().unwrap_or(0);
            if from_rank > to_rank {
                return Err(PlanError::Regression {
                    delivered: from.unwrap_or(AgoraState::Cree),
                    desired,
                });
            }
            const STEPS: [Operation; 3] = [Operation::Enter, Operation::Exit, Operation::Settle];
            ops.extend_from_slice(&STEPS[from_rank as usize..to_rank as usize]);
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_delivered() -> Vec<Delivered> {
        let mut v = vec![Delivered::Unknown, Delivered::Absent];
        for s in AgoraState::ALL {
            v.push(Delivered::Present {
                numero_agora: "AG-1".into(),
                state: s,
            });
        }
        v
    }

    /// Plays a plan against a model of AGORA, re-planning after each operation as the worker does.
    /// `hidden` is what a search finds when passerelle knew nothing.
    fn run(
        mut delivered: Delivered,
        hidden: Option<AgoraState>,
        desired: State,
    ) -> Result<(Option<AgoraState>, Vec<Operation>), PlanError> {
        let mut agora = match &delivered {
            Delivered::Present { state, .. } => Some(*state),
            Delivered::Absent => None,
            Delivered::Unknown => hidden,
        };
        let mut done = Vec::new();
        for _ in 0..10 {
            let ops = plan(&delivered, desired)?;
            let Some(&op) = ops.first() else {
                return Ok((agora, done));
            };
            done.push(op);
            agora = match (op, agora) {
                (Operation::Search, a) => a,
                (Operation::Create, None) => Some(AgoraState::Cree),
                (Operation::Create, Some(_)) => {
                    panic!("created twice ({delivered:?} → {desired:?})")
                }
                (op, Some(a)) => Some(a.after(op).unwrap_or_else(|| {
                    panic!("{op:?} refused by AGORA from {a:?} ({delivered:?} → {desired:?})")
                })),
                (op, None) => panic!("{op:?} on a dossier AGORA does not have"),
            };
            delivered = match agora {
                None => Delivered::Absent,
                Some(state) => Delivered::Present {
                    numero_agora: "AG-1".into(),
                    state,
                },
            };
        }
        panic!("the plan does not converge for {desired:?}");
    }

    #[test]
    fn every_pair_converges_to_the_trigger_table_or_is_a_typed_error() {
        let mut planned = 0;
        let mut refused = 0;
        for delivered in all_delivered() {
            let hiddens: Vec<Option<AgoraState>> = if delivered == Delivered::Unknown {
                std::iter::once(None)
                    .chain(AgoraState::ALL.map(Some))
                    .collect()
            } else {
                vec![None]
            };
            for hidden in hiddens {
                for desired in State::ALL {
                    match run(delivered.clone(), hidden, desired) {
                        Ok((end, ops)) => {
                            planned += 1;
                            let start = match &delivered {
                                Delivered::Present { state, .. } => Some(*state),
                                _ => hidden,
                            };
                            match target(desired) {
                                Target::Nothing => assert_eq!(end, start),
                                Target::State(t) => assert_eq!(end, Some(t)),
                                Target::CancelIfPresent => assert_eq!(
                                    end,
                                    start.map(|_| AgoraState::Annule),
                                    "{delivered:?}/{hidden:?} → {desired:?}"
                                ),
                            }
                            // Each operation at most once: nothing is sent twice.
                            for op in Operation::ALL {
                                assert!(ops.iter().filter(|&&o| o == op).count() <= 1);
                            }
                            if delivered == Delivered::Unknown && !ops.is_empty() {
                                assert_eq!(ops[0], Operation::Search, "search before create");
                            }
                        }
                        Err(e) => {
                            refused += 1;
                            // An error only where AGORA truly cannot get there.
                            let from = match &delivered {
                                Delivered::Present { state, .. } => *state,
                                _ => hidden.expect("an unseen dossier is always reachable"),
                            };
                            match e {
                                PlanError::CancelledInAgora { .. } => {
                                    assert_eq!(from, AgoraState::Annule)
                                }
                                PlanError::Regression { delivered: d, .. } => {
                                    assert_ne!(d, AgoraState::Annule)
                                }
                                PlanError::CancelAfterEntry { delivered: d, .. } => {
                                    assert!(matches!(
                                        d,
                                        AgoraState::Entre | AgoraState::Sorti | AgoraState::Solde
                                    ))
                                }
                            }
                        }
                    }
                }
            }
        }
        // 7 delivered states (+5 hidden variants of Unknown) × 9 desired states.
        assert_eq!(planned + refused, (7 + 5) * 9);
        assert!(refused > 0 && planned > refused);
    }

    #[test]
    fn plans_read_like_the_contract() {
        use Operation::*;
        let present = |s| Delivered::Present {
            numero_agora: "AG-1".into(),
            state: s,
        };
        assert_eq!(
            plan(&Delivered::Unknown, State::Exited),
            Ok(vec![Search, Create, Enter, Exit])
        );
        assert_eq!(plan(&Delivered::Absent, State::Validated), Ok(vec![Create]));
        assert_eq!(
            plan(&present(AgoraState::Cree), State::Exited),
            Ok(vec![Enter, Exit])
        );
        assert_eq!(
            plan(&present(AgoraState::Sorti), State::ServiceDone),
            Ok(vec![])
        );
        assert_eq!(plan(&Delivered::Unknown, State::Prescribed), Ok(vec![]));
        assert_eq!(
            plan(&Delivered::Unknown, State::Cancelled),
            Ok(vec![Search])
        );
        assert_eq!(plan(&Delivered::Absent, State::Refused), Ok(vec![]));
        assert_eq!(
            plan(&present(AgoraState::Cree), State::Refused),
            Ok(vec![Cancel])
        );
        assert!(matches!(
            plan(&present(AgoraState::Entre), State::Cancelled),
            Err(PlanError::CancelAfterEntry { .. })
        ));
        assert!(matches!(
            plan(&present(AgoraState::Solde), State::Entered),
            Err(PlanError::Regression { .. })
        ));
    }
}
