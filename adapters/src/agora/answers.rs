//! Decoding AGORA's answers, on passerelle's side: each status and body to an outcome.

#[allow(unused_imports)]
use super::*;

/// Why a call may succeed if tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransientReason {
    /// `429`: over AGORA's rate.
    RateLimited,
    /// `408`.
    RequestTimeout,
    /// A `5xx`, with its status.
    ServerError(u16),
    /// The gateway's transport failed (timeout, dropped connection): no HTTP answer at all.
    Transport(String),
}

impl fmt::Display for TransientReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransientReason::RateLimited => f.write_str("HTTP 429, over AGORA's rate"),
            TransientReason::RequestTimeout => f.write_str("HTTP 408, request timeout"),
            TransientReason::ServerError(s) => write!(f, "HTTP {s}, AGORA unavailable"),
            TransientReason::Transport(r) => write!(f, "transport: {r}"),
        }
    }
}

/// What an AGORA answer means for the reconcile worker.
///
/// `Debug` is written by hand: AGORA's anomaly labels may quote a refused value (a name, a NIR),
/// so only their codes and fields are printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Search: AGORA has the dossier.
    Found {
        numero_agora: String,
        etat: AgoraState,
    },
    /// Search: AGORA has no such dossier (`404`).
    NotFound,
    /// Create: `201`.
    Created { numero_agora: String },
    /// Create: `409`, it already existed under this number: use it.
    AlreadyExists { numero_agora: String },
    /// A transition: `200`.
    Accepted,
    /// `422`: a business rejection, never retried; the dossier goes to the dead letters.
    Rejected { anomalies: Vec<Anomaly> },
    /// A transition: `409 AG-ETAT`, AGORA's state is not what passerelle believed: search again.
    StateConflict,
    /// Try again later (`429`, `408`, `5xx`, transport), after `retry_after` when AGORA said.
    Transient {
        retry_after: Option<Duration>,
        reason: TransientReason,
    },
    /// Anything else, including a success whose body does not parse: an operator looks.
    Unexpected { status: u16, detail: String },
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Found { numero_agora, etat } => f
                .debug_struct("Found")
                .field("numero_agora", numero_agora)
                .field("etat", etat)
                .finish(),
            Outcome::NotFound => f.write_str("NotFound"),
            Outcome::Created { numero_agora } => f
                .debug_struct("Created")
                .field("numero_agora", numero_agora)
                .finish(),
            Outcome::AlreadyExists { numero_agora } => f
                .debug_struct("AlreadyExists")
                .field("numero_agora", numero_agora)
                .finish(),
            Outcome::Accepted => f.write_str("Accepted"),
            Outcome::Rejected { anomalies } => {
                let codes: Vec<String> = anomalies
                    .iter()
                    .map(|a| match &a.champ {
                        Some(c) => format!("{} on {c}", a.code),
                        None => a.code.clone(),
                    })
                    .collect();
                f.debug_struct("Rejected")
                    .field("anomalies", &codes)
                    .finish()
            }
            Outcome::StateConflict => f.write_str("StateConflict"),
            Outcome::Transient {
                retry_after,
                reason,
            } => f
                .debug_struct("Transient")
                .field("retry_after", retry_after)
                .field("reason", reason)
                .finish(),
            Outcome::Unexpected { status, detail } => f
                .debug_struct("Unexpected")
                .field("status", status)
                .field("detail", detail)
                .finish(),
        }
    }
}

impl Outcome {
    /// A transport failure (timeout, dropped connection), for the gateway to report in the same terms.
    pub fn transient(reason: impl Into<String>) -> Self {
        Outcome::Transient {
            retry_after: None,
            reason: TransientReason::Transport(reason.into()),
        }
    }

    /// Whether the worker should try the same call again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Outcome::Transient { .. })
    }
}

/// Reads AGORA's answer to `op`. Total: every input gives an outcome, garbage gives `Unexpected`.
/// `retry_after` is the `Retry-After` header, in seconds or as an HTTP-date.
pub fn decode_answer(
    op: Operation,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Outcome {
    decode_answer_at(op, status, retry_after, body, Utc::now())
}

/// [`decode_answer`] with the clock given, so an HTTP-date `Retry-After` is testable.
pub fn decode_answer_at(
    op: Operation,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Outcome {
    use Operation::*;
    let transition = matches!(op, Enter | Exit | Settle | Cancel);
    let result = match (op, status) {
        (Search, 200) => answer::<SearchAnswer>(body).map(|a| Outcome::Found {
            numero_agora: a.numero_agora,
            etat: a.etat,
        }),
        (Search, 404) => Ok(Outcome::NotFound),
        (Create, 201) => answer::<NumberAnswer>(body).map(|a| Outcome::Created {
            numero_agora: a.numero_agora,
        }),
        (Create, 409) => answer::<NumberAnswer>(body).map(|a| Outcome::AlreadyExists {
            numero_agora: a.numero_agora,
        }),
        // The contract gives a transition's 200 no body; accept none, or any well-formed answer.
        (_, 200) if transition => {
            if body.iter().all(u8::is_ascii_whitespace) {
                Ok(Outcome::Accepted)
            } else {
                answer::<serde_json::Value>(body).map(|_| Outcome::Accepted)
            }
        }
        (_, 409) if transition => answer::<CodeAnswer>(body).and_then(|a| {
            if a.code == AG_ETAT {
                Ok(Outcome::StateConflict)
            } else {
                Err("is a conflict with a code other than AG-ETAT")
            }
        }),
        _ => return decode_failure_at(op.name(), status, retry_after, body, now),
    };
    result.unwrap_or_else(|why| Outcome::Unexpected {
        status,
        detail: format!("HTTP {status} to {}: the body {why}", op.name()),
    })
}

/// Reads an answer that is not the call's success: `422` anomalies, transient statuses, or
/// unexpected. Public for the calls outside [`Operation`] (`POST /reprises`, `GET /reprises/{lot}`);
/// `call` names the call in details.
pub fn decode_failure(call: &str, status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    decode_failure_at(call, status, retry_after, body, Utc::now())
}

pub(super) fn decode_failure_at(
    call: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Outcome {
    let wait = retry_after.and_then(|h| parse_retry_after(h, now));
    let transient = |reason| Outcome::Transient {
        retry_after: wait,
        reason,
    };
    match status {
        422 => match answer::<AnomaliesAnswer>(body) {
            Ok(a) => Outcome::Rejected {
                anomalies: a.anomalies,
            },
            // A rejection we cannot read is not dead-lettered blind: an operator looks.
            Err(why) => Outcome::Unexpected {
                status,
                detail: format!("HTTP 422 to {call}: the body {why}"),
            },
        },
        429 => transient(TransientReason::RateLimited),
        408 => transient(TransientReason::RequestTimeout),
        500..=599 => transient(TransientReason::ServerError(status)),
        _ => Outcome::Unexpected {
            status,
            detail: format!("HTTP {status} is not an answer AGORA gives to {call}"),
        },
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date (IMF-fixdate, read as RFC 2822)
/// turned into the time left from `now` (zero when past). `None` when unreadable: the worker then
/// uses its own backoff.
///
/// Capped at [`MAX_RETRY_AFTER`] before anything else is done with it: a garbled or hostile value
/// (`10000000000000000000`, a date in year 9999) must neither overflow the clock arithmetic
/// downstream nor stop deliveries for longer than a plausible pause. A number of seconds too large
/// for `u64` is such a value too, and reads as the cap.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs())));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let left = at.with_timezone(&Utc).signed_duration_since(now);
    let cap = chrono::TimeDelta::seconds(MAX_RETRY_AFTER.as_secs() as i64);
    Some(left.min(cap).to_std().unwrap_or(Duration::ZERO))
}

/// The longest pause a `Retry-After` imposes (an hour).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses an answer body: JSON, valid against `answer.schema.json`, and of the shape `T`. The error
/// completes "the body …" and never quotes the body.
pub(super) fn answer<T: DeserializeOwned>(body: &[u8]) -> Result<T, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "is not JSON")?;
    if !check_schema(SchemaId::AgoraAnswer, &value).is_empty() {
        return Err("does not match AGORA's answer schema");
    }
    serde_json::from_value(value).map_err(|_| "is not the answer this call expects")
}

/// Reads the `202 {"lot"}` of `POST /reprises`.
pub fn decode_lot_accepted(body: &[u8]) -> Result<String, Vec<Violation>> {
    decode_json::<LotAnswer>(SchemaId::AgoraAnswer, body).map(|a| a.lot)
}

/// Reads `GET /reprises/{lot}`: schema first, then the counts must add up.
pub fn decode_reprise_report(body: &[u8]) -> Result<RepriseReport, Vec<Violation>> {
    let report = decode_json::<RepriseReport>(SchemaId::AgoraRepriseReport, body)?;
    let mut v = Vec::new();
    let done = u64::from(report.acceptees) + u64::from(report.rejetees);
    if done > u64::from(report.lignes) {
        v.push(Violation::new(
            "/acceptees",
            Rule::SchemaRange,
            "accepted and rejected lines outnumber the lot's lines",
        ));
    }
    if report.etat == ReportState::Termine && done != u64::from(report.lignes) {
        v.push(Violation::new(
            "/etat",
            Rule::SchemaOther,
            "the lot is finished but not every line is accepted or rejected",
        ));
    }
    if report.compte_rendu.len() as u64 != done {
        v.push(Violation::new(
            "/compte_rendu",
            Rule::SchemaItems,
            "does not have one entry per accepted or rejected line",
        ));
    }
    if v.is_empty() {
        Ok(report)
    } else {
        Err(v)
    }
}

/// JSON, then the schema, then serde; every violation with its JSON pointer, none quoting a value.
pub(super) fn decode_json<T: DeserializeOwned>(
    schema: SchemaId,
    bytes: &[u8],
) -> Result<T, Vec<Violation>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's syntax errors name a position, never a value.
        vec![Violation::new(
            "",
            Rule::JsonSyntax,
            format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )]
    })?;
    let violations = check_schema(schema, &value);
    if !violations.is_empty() {
        return Err(violations);
    }
    // The schema is stricter than the types, so this fails only if the two drift apart; serde's
    // message is dropped because it may quote the value.
    serde_json::from_value(value).map_err(|_| {
        vec![Violation::new(
            "",
            Rule::SchemaOther,
            "does not have the shape of this body",
        )]
    })
}
