//! The planning both backends share, with no I/O: how one inbound record changes its dossier
//! (source versions, merge, lifecycle check, version bump, delivery status), how a whole inbound
//! is planned against the dossiers it names, and how a backfill lot's lines are sorted for
//! settling. Each backend reads the dossiers, asks for the plan, and writes it in its own SQL.
//!
//! The helpers both backends need to store and read values are [`super::stored`]'s.

use std::collections::HashMap;

use passerelle_adapters::canonical::{Dossier, System};
use passerelle_adapters::merge::{check_transition, merge, Precedence};
use passerelle_adapters::planner::{AgoraState, Delivered};
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_adapters::violation::Rule;
use passerelle_adapters::Violation;

use super::stored::{corrupt, from_json, to_json};
use super::{DeadReason, DeliveryStatus, Flow, Inbound, InboundRecord, LedgerError, LotLine};
use passerelle_adapters::canonical::Advance;

/// A latest source record of a dossier, as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredSource {
    pub record: Dossier,
    pub in_perimeter: bool,
}

/// A dossier as loaded (under lock) before a record is merged into it.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub desired: Dossier,
    pub desired_version: i64,
    pub flow: Flow,
    pub in_perimeter: bool,
    pub sources: Vec<StoredSource>,
}

/// The source row to write (insert or replace the record of that system).
#[derive(Debug, Clone)]
pub(crate) struct SourceWrite {
    pub system: System,
    pub version: Option<i64>,
    pub record_json: String,
    pub in_perimeter: bool,
}

/// What to write for one inbound record.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub is_new: bool,
    /// `None` when the record is older than the one held (stale): it is kept out.
    pub source: Option<SourceWrite>,
    pub desired_json: String,
    pub desired_version: i64,
    pub changed: bool,
    pub in_perimeter: bool,
    pub flow: Flow,
    /// The delivery status to set, `None` to leave it as it is.
    pub status: Option<DeliveryStatus>,
    /// The dossier once this plan is written, as a reload would give it (sources by system): what
    /// a later record of the same message merges into, without reading the database again.
    pub after: Loaded,
}

#[derive(Debug)]
pub(crate) enum PlanError {
    /// The record contradicts the dossier: the whole message is refused.
    Refused(Violation),
    /// The stored rows or the record are inconsistent (a bug, or a manual edit).
    Corrupt(LedgerError),
}

fn system_of(d: &Dossier) -> Option<System> {
    d.sources.first().map(|s| s.system)
}

/// Decides what one record does to its dossier (`loaded` is `None` for a new dossier).
pub(crate) fn plan(
    dossier_id: &str,
    loaded: Option<&Loaded>,
    inbound: &InboundRecord,
    flow: Flow,
    precedence: &Precedence,
) -> Result<Plan, PlanError> {
    let what = format!("dossier {dossier_id}");
    let record = &inbound.record;
    let Some(system) = system_of(record) else {
        return Err(PlanError::Refused(Violation::new(
            "/sources",
            Rule::FieldRequired,
            "the record names no source",
        )));
    };
    let incoming_version = record.sources.first().and_then(|s| s.version);

    let mut sources: Vec<StoredSource> = loaded.map(|l| l.sources.clone()).unwrap_or_default();
    let held = sources
        .iter()
        .position(|s| system_of(&s.record) == Some(system));
    if let (Some(i), Some(l)) = (held, loaded) {
        let held_version = sources[i].record.sources.first().and_then(|s| s.version);
        if let (Some(old), Some(new)) = (held_version, incoming_version) {
            if old > new {
                // Stale: an older version of a record we already hold. Nothing changes.
                return Ok(Plan {
                    is_new: false,
                    source: None,
                    desired_json: to_json(&what, &l.desired).map_err(PlanError::Corrupt)?,
                    desired_version: l.desired_version,
                    changed: false,
                    in_perimeter: l.in_perimeter,
                    flow: merge_flow(l.flow, flow),
                    status: None,
                    after: Loaded {
                        flow: merge_flow(l.flow, flow),
                        ..l.clone()
                    },
                });
            }
        }
    }
    let stored = StoredSource {
        record: record.clone(),
        in_perimeter: inbound.in_perimeter,
    };
    match held {
        Some(i) => sources[i] = stored,
        None => sources.push(stored),
    }

    let records: Vec<Dossier> = sources.iter().map(|s| s.record.clone()).collect();
    let merged = merge(&records, precedence)
        .map_err(|e| PlanError::Corrupt(corrupt(&what, format!("merge: {e}"))))?;
    for c in &merged.conflicts {
        tracing::info!(
            dossier_id,
            kept = c.kept.as_str(),
            kept_state = c.kept_state.as_str(),
            ignored = c.ignored.as_str(),
            ignored_state = c.ignored_state.as_str(),
            "Sources disagree on the dossier's state; the one with precedence was kept."
        );
    }
    let mut desired = merged.dossier;
    if let Some(l) = loaded {
        match check_transition(l.desired.state, desired.state) {
            Ok(Advance::Forward | Advance::Same) => {}
            // Stale state news: the rest of the merge is taken, the state is not.
            Ok(Advance::Behind) => desired.state = l.desired.state,
            Err(violation) => return Err(PlanError::Refused(violation)),
        }
    }
    let desired_json = to_json(&what, &desired).map_err(PlanError::Corrupt)?;
    let in_perimeter = sources.iter().all(|s| s.in_perimeter);
    let source = SourceWrite {
        system,
        version: incoming_version.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        record_json: to_json(&what, record).map_err(PlanError::Corrupt)?,
        in_perimeter: inbound.in_perimeter,
    };
    let target_status = if in_perimeter {
        DeliveryStatus::Pending
    } else {
        DeliveryStatus::OutOfPerimeter
    };
    // Both backends load the sources ordered by system.
    sources.sort_by_key(|s| system_of(&s.record).map(System::as_str));
    Ok(match loaded {
        None => Plan {
            is_new: true,
            source: Some(source),
            desired_json,
            desired_version: 1,
            changed: true,
            in_perimeter,
            flow,
            status: Some(target_status),
            after: Loaded {
                desired,
                desired_version: 1,
                flow,
                in_perimeter,
                sources,
            },
        },
        Some(l) => {
            let previous_json = to_json(&what, &l.desired).map_err(PlanError::Corrupt)?;
            let changed = previous_json != desired_json;
            let perimeter_flipped = in_perimeter != l.in_perimeter;
            let desired_version = l.desired_version + i64::from(changed);
            let flow = merge_flow(l.flow, flow);
            Plan {
                is_new: false,
                source: Some(source),
                desired_json,
                desired_version,
                changed,
                in_perimeter,
                flow,
                // A new desired version (or perimeter verdict) is owed again, even by a dead
                // dossier: a corrected source is what its dead letter waited for.
                status: (changed || perimeter_flipped).then_some(target_status),
                after: Loaded {
                    desired,
                    desired_version,
                    flow,
                    in_perimeter,
                    sources,
                },
            }
        }
    })
}

/// Plans every record of `inbound` against `held` (the dossiers it names as they stand, by id),
/// in order: a dossier named twice sees the first record's result, as it would read it back from
/// the ledger. All or nothing: the refused records make the whole message `Rejected`, with every
/// violation.
pub(crate) fn plan_inbound(
    inbound: &Inbound,
    precedence: &Precedence,
    mut held: HashMap<String, Loaded>,
) -> Result<Vec<Plan>, LedgerError> {
    // Only a dossier named again needs its state carried forward (it costs a parse).
    let mut named: HashMap<&str, usize> = HashMap::with_capacity(inbound.records.len());
    for rec in &inbound.records {
        *named.entry(rec.dossier_id.as_str()).or_default() += 1;
    }
    let mut plans = Vec::with_capacity(inbound.records.len());
    let mut refused = Vec::new();
    for rec in &inbound.records {
        let id = rec.dossier_id.as_str();
        let loaded = held.get(id);
        match plan(id, loaded, rec, inbound.flow, precedence) {
            Ok(p) => {
                let left = named.get_mut(id).map_or(0, |n| {
                    *n -= 1;
                    *n
                });
                if left > 0 {
                    let next = planned(id, loaded, &p)?;
                    held.insert(rec.dossier_id.clone(), next);
                }
                plans.push(p);
            }
            Err(PlanError::Refused(v)) => {
                if let Some(n) = named.get_mut(id) {
                    *n -= 1;
                }
                refused.push(v);
            }
            Err(PlanError::Corrupt(e)) => return Err(e),
        }
    }
    if refused.is_empty() {
        Ok(plans)
    } else {
        Err(LedgerError::Rejected(refused))
    }
}

/// The dossier as `plan` leaves it: what loading it again after the plan's writes would give
/// (sources in the order of their system, as both backends read them).
pub(crate) fn planned(
    dossier_id: &str,
    loaded: Option<&Loaded>,
    plan: &Plan,
) -> Result<Loaded, LedgerError> {
    let what = format!("dossier {dossier_id}");
    let mut sources = loaded.map(|l| l.sources.clone()).unwrap_or_default();
    if let Some(source) = &plan.source {
        let stored = StoredSource {
            record: from_json(&what, &source.record_json)?,
            in_perimeter: source.in_perimeter,
        };
        match sources
            .iter()
            .position(|s| system_of(&s.record) == Some(source.system))
        {
            Some(i) => sources[i] = stored,
            None => sources.push(stored),
        }
        sources.sort_by_key(|s| system_of(&s.record).map(System::as_str));
    }
    Ok(Loaded {
        desired: from_json(&what, &plan.desired_json)?,
        desired_version: plan.desired_version,
        flow: plan.flow,
        in_perimeter: plan.in_perimeter,
        sources,
    })
}

/// A dossier any sync message touched is on the sync lane (the higher priority).
fn merge_flow(stored: Flow, incoming: Flow) -> Flow {
    if stored == Flow::Sync || incoming == Flow::Sync {
        Flow::Sync
    } else {
        Flow::Backfill
    }
}

/// The sessions as both backends list them: in byte order of the three numbers (a database's
/// collation would order `_` and letters differently), each once.
pub(crate) fn sessions(mut rows: Vec<(String, String, String)>) -> Vec<SessionRef> {
    rows.sort_unstable();
    rows.dedup();
    rows.into_iter()
        .map(
            |(numero_formation, numero_action, numero_session)| SessionRef {
                numero_formation,
                numero_action,
                numero_session,
            },
        )
        .collect()
}

/// The lease an upsert gave: `None` when it took nothing, else the holder it replaced (if any).
pub(crate) fn lease(taken: Option<Option<String>>, holder: &str) -> super::Lease {
    match taken {
        None => super::Lease::Busy,
        Some(Some(prev)) if prev != holder => super::Lease::TakenOver,
        Some(Some(_)) => super::Lease::Renewed,
        Some(None) => super::Lease::Acquired,
    }
}

/// The stored JSON (`deliveries.delivered`) of the two delivered states that are not `Present`:
/// AGORA never confirmed the dossier, so a backfill lot may send it. The backends' SQL spells
/// these exact texts (tests check they are what serde writes).
#[cfg(test)]
pub(crate) const DELIVERED_NOT_PRESENT: [&str; 2] =
    [r#"{"kind":"unknown"}"#, r#"{"kind":"absent"}"#];

/// The outcome an `Accepted` lot line records with its operation (no personal value).
pub(crate) fn lot_outcome(lot: &str, state: AgoraState) -> String {
    format!("backfill lot {lot}: {}", state.as_str())
}

/// An `Accepted` lot line, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct AcceptedLine<'a> {
    pub dossier_id: &'a str,
    pub numero_agora: &'a str,
    /// `Delivered::Present` as stored.
    pub delivered_json: String,
    pub version: i64,
    pub outcome: String,
}

/// A lot's lines sorted by kind, each dossier once (its first line wins: a report naming a
/// member twice settles it once).
#[derive(Debug, Clone, Default)]
pub(crate) struct LotLines<'a> {
    pub accepted: Vec<AcceptedLine<'a>>,
    pub nothing_owed: Vec<(&'a str, i64)>,
    pub dead: Vec<(&'a str, &'a DeadReason)>,
    pub released: Vec<&'a str>,
}

/// Sorts `lines` by kind; `lot` names the lot in the operations' outcome (AGORA's id when known).
pub(crate) fn lot_lines<'a>(lot: &str, lines: &'a [LotLine]) -> Result<LotLines<'a>, LedgerError> {
    let mut seen = std::collections::HashSet::with_capacity(lines.len());
    let mut sorted = LotLines::default();
    for line in lines {
        if !seen.insert(line.dossier_id()) {
            continue;
        }
        match line {
            LotLine::Accepted {
                dossier_id,
                numero_agora,
                state,
                version,
            } => sorted.accepted.push(AcceptedLine {
                dossier_id,
                numero_agora,
                delivered_json: to_json(
                    &format!("dossier {dossier_id}"),
                    &Delivered::Present {
                        numero_agora: numero_agora.clone(),
                        state: *state,
                    },
                )?,
                version: *version,
                outcome: lot_outcome(lot, *state),
            }),
            LotLine::NothingOwed {
                dossier_id,
                version,
            } => sorted.nothing_owed.push((dossier_id, *version)),
            LotLine::Dead { dossier_id, reason } => sorted.dead.push((dossier_id, reason)),
            LotLine::Released { dossier_id } => sorted.released.push(dossier_id),
        }
    }
    Ok(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_masked() {
        use super::super::mask_url;
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/passerelle"),
            "postgres://app:***@db:5432/passerelle"
        );
        assert_eq!(
            mask_url("postgres://app@db/passerelle?password=s3cret&sslmode=require"),
            "postgres://app@db/passerelle?password=***&sslmode=require"
        );
        assert_eq!(
            mask_url("sqlite://./data/passerelle.db"),
            "sqlite://./data/passerelle.db"
        );
        assert_eq!(mask_url("mysql://u:p@h/x"), "mysql://u:***@h/x");
        assert_eq!(mask_url("u:p@h"), "u:***@h");
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_without_secrets() {
        let err = match super::super::connect("mysql://app:s3cret@db/x").await {
            Ok(_) => panic!("a MySQL URL must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("\"mysql\""), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = match super::super::connect("nothing").await {
            Ok(_) => panic!("a URL without scheme must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no scheme"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_postgres_is_unavailable_without_secrets() {
        // Port 1 refuses connections; the password must not leak into the error.
        let err = match super::super::connect("postgres://app:s3cret@127.0.0.1:1/x").await {
            Ok(_) => panic!("nothing listens on port 1"),
            Err(e) => e,
        };
        assert!(matches!(err, LedgerError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn not_present_texts_are_what_serde_writes() {
        assert_eq!(
            [
                to_json("t", &Delivered::Unknown).expect("ok"),
                to_json("t", &Delivered::Absent).expect("ok")
            ],
            DELIVERED_NOT_PRESENT.map(String::from)
        );
    }

    #[test]
    fn lot_lines_keep_the_first_line_of_a_dossier() {
        let lines = vec![
            LotLine::Released {
                dossier_id: "d1".into(),
            },
            LotLine::Accepted {
                dossier_id: "d2".into(),
                numero_agora: "AG-1".into(),
                state: AgoraState::Solde,
                version: 3,
            },
            LotLine::NothingOwed {
                dossier_id: "d1".into(),
                version: 1,
            },
        ];
        let sorted = lot_lines("L-1", &lines).expect("ok");
        assert_eq!(sorted.released, vec!["d1"]);
        assert!(sorted.nothing_owed.is_empty());
        assert_eq!(sorted.accepted.len(), 1);
        assert_eq!(sorted.accepted[0].outcome, "backfill lot L-1: SOLDE");
        assert_eq!(
            from_json::<Delivered>("t", &sorted.accepted[0].delivered_json).expect("ok"),
            Delivered::Present {
                numero_agora: "AG-1".into(),
                state: AgoraState::Solde
            }
        );
    }
}
