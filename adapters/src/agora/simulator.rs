//! The other side of the wire, for the AGORA simulator: request bodies decoded, answers encoded.

#[allow(unused_imports)]
use super::*;

/// Reads a `POST /dossiers` body.
pub fn decode_dossier_body(bytes: &[u8]) -> Result<DossierBody, Vec<Violation>> {
    decode_json(SchemaId::AgoraDossier, bytes)
}

/// Reads the body of a transition call.
pub fn decode_transition(op: Operation, bytes: &[u8]) -> Result<TransitionBody, Vec<Violation>> {
    match op {
        Operation::Enter => decode_json(SchemaId::AgoraEntree, bytes).map(TransitionBody::Entree),
        Operation::Exit => decode_json(SchemaId::AgoraSortie, bytes).map(TransitionBody::Sortie),
        Operation::Settle => decode_json(SchemaId::AgoraSolde, bytes).map(TransitionBody::Solde),
        Operation::Cancel => {
            decode_json(SchemaId::AgoraAnnulation, bytes).map(TransitionBody::Annulation)
        }
        Operation::Search | Operation::Create => Err(vec![Violation::new(
            "",
            Rule::LifecycleTransition,
            "search and create are not transitions and have no transition body",
        )]),
    }
}

/// Reads one backfill line.
pub fn decode_reprise_line(bytes: &[u8]) -> Result<RepriseLine, Vec<Violation>> {
    decode_json(SchemaId::AgoraRepriseLine, bytes)
}

/// Reads a whole lot: each line with its 1-based number, as AGORA's report counts them. A final
/// `\n` ends the last line rather than starting an empty one. The caller refuses a lot of more than
/// [`MAX_LOT_LINES`] lines with `413`.
pub fn decode_reprise_lot(bytes: &[u8]) -> Vec<(u32, Result<RepriseLine, Vec<Violation>>)> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            (n, decode_reprise_line(line))
        })
        .collect()
}

impl TransitionBody {
    /// The operation this body is for.
    pub fn operation(&self) -> Operation {
        match self {
            TransitionBody::Entree(_) => Operation::Enter,
            TransitionBody::Sortie(_) => Operation::Exit,
            TransitionBody::Solde(_) => Operation::Settle,
            TransitionBody::Annulation(_) => Operation::Cancel,
        }
    }

    /// The last path segment of the call: `POST /dossiers/{numero_agora}/{path}`.
    pub fn path(&self) -> &'static str {
        match self {
            TransitionBody::Entree(_) => "entree",
            TransitionBody::Sortie(_) => "sortie",
            TransitionBody::Solde(_) => "solde",
            TransitionBody::Annulation(_) => "annulation",
        }
    }
}

/// An HTTP answer as AGORA writes it: what the simulator sends, what [`decode_answer`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAnswer {
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<String>,
    /// Empty when the answer has no body.
    pub body: Vec<u8>,
}

impl WireAnswer {
    fn json<T: Serialize>(status: u16, body: &T) -> Self {
        WireAnswer {
            status,
            retry_after: None,
            // These types always serialise; an empty body would be read as Unexpected anyway.
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    fn empty(status: u16) -> Self {
        WireAnswer {
            status,
            retry_after: None,
            body: Vec::new(),
        }
    }
}

/// The HTTP answer that means `outcome`. `None` for a transport failure, which has no answer. The
/// simulator picks outcomes that fit the call (`Found` answers a search, `Created` a creation…);
/// `Unexpected` is written as its status with no body. A `retry_after` is rounded up to seconds.
pub fn encode_answer(outcome: &Outcome) -> Option<WireAnswer> {
    Some(match outcome {
        Outcome::Found { numero_agora, etat } => WireAnswer::json(
            200,
            &SearchAnswer {
                numero_agora: numero_agora.clone(),
                etat: *etat,
            },
        ),
        Outcome::NotFound => WireAnswer::empty(404),
        Outcome::Created { numero_agora } => WireAnswer::json(
            201,
            &NumberAnswer {
                numero_agora: numero_agora.clone(),
            },
        ),
        Outcome::AlreadyExists { numero_agora } => WireAnswer::json(
            409,
            &NumberAnswer {
                numero_agora: numero_agora.clone(),
            },
        ),
        Outcome::Accepted => WireAnswer::empty(200),
        Outcome::Rejected { anomalies } => WireAnswer::json(
            422,
            &AnomaliesAnswer {
                anomalies: anomalies.clone(),
            },
        ),
        Outcome::StateConflict => WireAnswer::json(
            409,
            &CodeAnswer {
                code: AG_ETAT.to_string(),
            },
        ),
        Outcome::Transient {
            retry_after,
            reason,
        } => {
            let status = match reason {
                TransientReason::RateLimited => 429,
                TransientReason::RequestTimeout => 408,
                TransientReason::ServerError(s) => *s,
                TransientReason::Transport(_) => return None,
            };
            WireAnswer {
                retry_after: retry_after.map(|d| {
                    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                    secs.to_string()
                }),
                ..WireAnswer::empty(status)
            }
        }
        Outcome::Unexpected { status, .. } => WireAnswer::empty(*status),
    })
}

/// `202 {"lot"}`.
pub fn encode_lot_accepted(lot: &str) -> WireAnswer {
    WireAnswer::json(
        202,
        &LotAnswer {
            lot: lot.to_string(),
        },
    )
}

/// `200` and the report.
pub fn encode_reprise_report(report: &RepriseReport) -> WireAnswer {
    WireAnswer::json(200, report)
}
