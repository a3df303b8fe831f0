//! Fault injection: which call fails, how, and whether its effect was applied first.
//!
//! Every call the simulators receive is one [`Call`]. Before answering, the simulator asks the
//! [`FaultState`] for a [`Decision`]: first the queue of forced faults ([`ForcedFault`], for
//! deterministic tests), then one draw of the seeded RNG against the probabilities of [`Faults`].
//! A fault that is not a rate limit may have been **applied before failing** (the creation was
//! recorded, then the answer was lost): a second draw against [`Faults::applied_share`] says so.

use passerelle_adapters::planner::Operation;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;

/// One kind of call the simulators answer: the unit faults are scoped to and the journal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// AGORA `GET /dossiers?financeur=&reference=`.
    AgoraSearch,
    /// AGORA `POST /dossiers`.
    AgoraCreate,
    /// AGORA `POST /dossiers/{n}/entree`.
    AgoraEnter,
    /// AGORA `POST /dossiers/{n}/sortie`.
    AgoraExit,
    /// AGORA `POST /dossiers/{n}/solde`.
    AgoraSettle,
    /// AGORA `POST /dossiers/{n}/annulation`.
    AgoraCancel,
    /// AGORA `POST /reprises`.
    AgoraLotSubmit,
    /// AGORA `GET /reprises/{lot}`.
    AgoraLotReport,
    /// Pôle emploi `POST /connexion/oauth2/access_token`.
    PeToken,
    /// Pôle emploi `GET /inscriptions/statut/session`.
    PeRegistrations,
    /// ATEXO SEM `POST /retours`.
    AtexoReturn,
    /// Anything else under a simulator's prefix (an unknown route): never faulted.
    Other,
}

impl Call {
    /// The call of an AGORA operation.
    pub fn of(op: Operation) -> Call {
        match op {
            Operation::Search => Call::AgoraSearch,
            Operation::Create => Call::AgoraCreate,
            Operation::Enter => Call::AgoraEnter,
            Operation::Exit => Call::AgoraExit,
            Operation::Settle => Call::AgoraSettle,
            Operation::Cancel => Call::AgoraCancel,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Call::AgoraSearch => "agora_search",
            Call::AgoraCreate => "agora_create",
            Call::AgoraEnter => "agora_enter",
            Call::AgoraExit => "agora_exit",
            Call::AgoraSettle => "agora_settle",
            Call::AgoraCancel => "agora_cancel",
            Call::AgoraLotSubmit => "agora_lot_submit",
            Call::AgoraLotReport => "agora_lot_report",
            Call::PeToken => "pe_token",
            Call::PeRegistrations => "pe_registrations",
            Call::AtexoReturn => "atexo_return",
            Call::Other => "other",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `500`, no body (Pôle emploi: its error body).
    Error500,
    /// `503`, no body (Pôle emploi: its error body).
    Error503,
    /// `429` with `Retry-After: {retry_after_s}`. Never applied: a rate limit refuses at the door.
    RateLimited,
    /// The answer comes `slow_ms` late: the real answer when applied, else `504` (the relay gave up).
    Slow,
    /// The TCP connection is closed with no answer at all.
    Drop,
}

/// The random faults. Each probability is in `[0, 1]`, and together at most 1: one draw per call
/// picks at most one fault. Defaults: no fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed of the RNG; setting faults reseeds it, so a run is reproducible from that point.
    pub seed: u64,
    /// Probability of a `500`.
    pub error_500: f64,
    /// Probability of a `503`.
    pub error_503: f64,
    /// Probability of a `429`.
    pub rate_limited: f64,
    /// Probability of a slow answer.
    pub slow: f64,
    /// Probability of a dropped connection.
    pub drop: f64,
    /// Share of the `500`, `503`, slow and dropped calls whose effect is applied before they fail.
    pub applied_share: f64,
    /// The `Retry-After` of a `429`, in seconds.
    pub retry_after_s: u64,
    /// The delay of a slow answer, in milliseconds: set it beyond the client's timeout.
    pub slow_ms: u64,
    /// The calls that may fail; empty: every call but [`Call::Other`].
    pub only: Vec<Call>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 0,
            error_500: 0.0,
            error_503: 0.0,
            rate_limited: 0.0,
            slow: 0.0,
            drop: 0.0,
            applied_share: 0.0,
            retry_after_s: 1,
            slow_ms: 3_000,
            only: Vec::new(),
        }
    }
}

/// Why a [`Faults`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid faults: {0}")]
pub struct FaultError(pub String);

impl Faults {
    /// No fault at all.
    pub fn none() -> Self {
        Faults::default()
    }

    pub fn validate(&self) -> Result<(), FaultError> {
        let shares = [
            ("error_500", self.error_500),
            ("error_503", self.error_503),
            ("rate_limited", self.rate_limited),
            ("slow", self.slow),
            ("drop", self.drop),
            ("applied_share", self.applied_share),
        ];
        for (name, p) in shares {
            if !(0.0..=1.0).contains(&p) {
                return Err(FaultError(format!("{name} must be between 0 and 1")));
            }
        }
        let total = self.error_500 + self.error_503 + self.rate_limited + self.slow + self.drop;
        if total > 1.0 + 1e-9 {
            return Err(FaultError(
                "the fault probabilities add up to more than 1".to_string(),
            ));
        }
        Ok(())
    }

    fn covers(&self, call: Call) -> bool {
        call != Call::Other && (self.only.is_empty() || self.only.contains(&call))
    }
}

/// One fault forced on the next matching call, before any random one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForcedFault {
    /// The call it waits for; `None`: the next call of any kind (but [`Call::Other`]).
    #[serde(default)]
    pub call: Option<Call>,
    pub fault: FaultKind,
    /// Whether the call's effect is applied before it fails (ignored for `rate_limited`).
    #[serde(default)]
    pub applied: bool,
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub fault: FaultKind,
    /// The effect is applied before the failure.
    pub applied: bool,
    pub retry_after_s: u64,
    pub slow_ms: u64,
}

/// The faults in force, their RNG and the forced queue.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    rng: StdRng,
    forced: VecDeque<ForcedFault>,
}

impl FaultState {
    pub fn new(faults: Faults) -> Result<Self, FaultError> {
        faults.validate()?;
        Ok(FaultState {
            rng: StdRng::seed_from_u64(faults.seed),
            faults,
            forced: VecDeque::new(),
        })
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Replaces the random faults and reseeds; the forced queue is kept.
    pub fn set(&mut self, faults: Faults) -> Result<(), FaultError> {
        faults.validate()?;
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.faults = faults;
        Ok(())
    }

    pub fn force(&mut self, f: ForcedFault) {
        self.forced.push_back(f);
    }

    pub fn clear_forced(&mut self) {
        self.forced.clear();
    }

    /// The fault for this call, if any.
    pub fn decide(&mut self, call: Call) -> Option<Decision> {
        if call == Call::Other {
            return None;
        }
        let retry_after_s = self.faults.retry_after_s;
        let slow_ms = self.faults.slow_ms;
        if let Some(i) = self
            .forced
            .iter()
            .position(|f| f.call.is_none_or(|c| c == call))
        {
            let f = self.forced.remove(i)?;
            return Some(Decision {
                fault: f.fault,
                applied: f.applied && f.fault != FaultKind::RateLimited,
                retry_after_s,
                slow_ms,
            });
        }
        if !self.faults.covers(call) {
            return None;
        }
        let f = &self.faults;
        let draw: f64 = self.rng.gen();
        let table = [
            (FaultKind::Error500, f.error_500),
            (FaultKind::Error503, f.error_503),
            (FaultKind::RateLimited, f.rate_limited),
            (FaultKind::Slow, f.slow),
            (FaultKind::Drop, f.drop),
        ];
        let mut edge = 0.0;
        let mut chosen = None;
        for (kind, p) in table {
            edge += p;
            if draw < edge {
                chosen = Some(kind);
                break;
            }
        }
        let fault = chosen?;
        let applied_share = f.applied_share;
        let applied = fault != FaultKind::RateLimited && self.rng.gen::<f64>() < applied_share;
        Some(Decision {
            fault,
            applied,
            retry_after_s,
            slow_ms,
        })
    }
}
