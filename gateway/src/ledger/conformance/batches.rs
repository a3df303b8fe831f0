//! Scenarios of messages carrying several records: each record applies in order as if it came
//! alone, a refused record refuses the whole message, and concurrent messages on one dossier
//! serialise.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use passerelle_adapters::canonical::{Dossier, Entry, State, System};
use passerelle_adapters::violation::Rule;

use crate::ledger::{
    BackfillProgress, DeadLetterFilter, DeadReason, DeliveryStatus, Flow, InboundRecord, Ledger,
    LedgerError, AGORA,
};

use super::*;

pub async fn one_message_many_dossiers(l: Arc<dyn Ledger>) {
    let mut msg = inbound("export", record("d1", atexo(State::Validated, Some(1))));
    let mut other = atexo(State::Registered, Some(1));
    other.training.numero_session = "999".into();
    let mut out = record("d2", other);
    out.in_perimeter = false;
    msg.records.push(out);
    msg.flow = Flow::Backfill;
    let a = l.accept(msg.clone(), &p()).await.expect("accepted");
    assert_eq!(
        a.dossiers
            .iter()
            .map(|d| (d.dossier_id.as_str(), d.in_perimeter))
            .collect::<Vec<_>>(),
        vec![("d1", true), ("d2", false)]
    );
    let j = l.journal("d2").await.expect("journal");
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].dossier_ids, vec!["d1".to_string(), "d2".to_string()]);
    assert_eq!(j[0].flow, Flow::Backfill);
    assert_eq!(row(&*l, "d1").await.flow, Flow::Backfill);
    let dup = l.accept(msg, &p()).await.expect("accepted");
    assert!(dup.duplicate);
    assert_eq!(
        dup.dossiers
            .iter()
            .map(|d| (d.dossier_id.as_str(), d.in_perimeter, d.desired_version))
            .collect::<Vec<_>>(),
        vec![("d1", true, 1), ("d2", false, 1)]
    );
    // A sync message puts the dossier on the sync lane for good.
    accept(&*l, "sync", record("d1", ouiform(State::Registered))).await;
    assert_eq!(row(&*l, "d1").await.flow, Flow::Sync);
}

/// One message naming dossiers several times ends as the same records accepted one message at a
/// time: a later record sees what an earlier one did (new dossier, second source, stale record,
/// perimeter flip, a dead dossier revived), and the journal links each dossier once, at its first
/// record's position.
pub async fn a_dossier_named_twice_in_one_message(l: Arc<dyn Ledger>) {
    // The dossiers as they stand before: x2 out of perimeter, x3 dead.
    for prefix in ["a", "b"] {
        let mut out = record(&format!("{prefix}2"), atexo(State::Validated, Some(1)));
        out.in_perimeter = false;
        backfill(&*l, &format!("{prefix}-before-2"), out).await;
        backfill(
            &*l,
            &format!("{prefix}-before-3"),
            record(&format!("{prefix}3"), atexo(State::Validated, Some(1))),
        )
        .await;
        l.record_failure(&format!("{prefix}3"), AGORA, "503")
            .await
            .expect("failure");
        l.dead_letter(
            &format!("{prefix}3"),
            AGORA,
            &DeadReason::Rejected { anomalies: vec![] },
        )
        .await
        .expect("dead");
    }
    let mut corrected = atexo(State::Validated, Some(2));
    corrected.training.title = Some("corrigé".into());
    let mut still_out = record("2", ouiform(State::Registered));
    still_out.in_perimeter = false;
    // (dossier suffix, record, in perimeter)
    let records = vec![
        ("1", atexo(State::Validated, Some(1)), true),
        ("2", ouiform(State::Registered), true),
        ("1", atexo(State::Entered, Some(2)), true),
        ("3", atexo(State::Validated, Some(1)), true),
        ("1", pole_emploi_entered(), true),
        ("2", atexo(State::Validated, Some(2)), true),
        ("1", atexo(State::Validated, Some(1)), true),
        ("3", corrected, true),
        ("2", still_out.record, false),
    ];
    let rec = |prefix: &str, (suffix, r, in_perimeter): &(&str, Dossier, bool)| InboundRecord {
        dossier_id: format!("{prefix}{suffix}"),
        record: r.clone(),
        in_perimeter: *in_perimeter,
    };

    let mut msg = inbound("batch", rec("a", &records[0]));
    msg.flow = Flow::Backfill;
    msg.records = records.iter().map(|r| rec("a", r)).collect();
    let batch = l.accept(msg, &p()).await.expect("accepted");
    let mut one_by_one = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut msg = inbound(&format!("one-{i}"), rec("b", r));
        msg.flow = Flow::Backfill;
        let a = l.accept(msg, &p()).await.expect("accepted");
        one_by_one.extend(a.dossiers);
    }
    let strip = |dossiers: Vec<crate::ledger::AcceptedDossier>| {
        dossiers
            .into_iter()
            .map(|d| {
                (
                    d.dossier_id[1..].to_string(),
                    d.in_perimeter,
                    d.changed,
                    d.desired_version,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(batch.dossiers), strip(one_by_one));

    for suffix in ["1", "2", "3"] {
        let a = row(&*l, &format!("a{suffix}")).await;
        let b = row(&*l, &format!("b{suffix}")).await;
        assert_eq!(a.desired, b.desired, "{suffix}");
        assert_eq!(a.desired_version, b.desired_version, "{suffix}");
        assert_eq!(a.flow, b.flow, "{suffix}");
        assert_eq!(a.in_perimeter, b.in_perimeter, "{suffix}");
        assert_eq!(a.sources, b.sources, "{suffix}");
        let (mut da, mut db) = (a.delivery, b.delivery);
        da.last_attempt_at = None;
        db.last_attempt_at = None;
        assert_eq!(da, db, "{suffix}");
    }
    let a1 = row(&*l, "a1").await;
    assert_eq!(
        a1.desired_version, 3,
        "new, entered, second source; stale ignored"
    );
    assert_eq!(a1.desired.state, State::Entered);
    assert_eq!(a1.sources.len(), 2);
    assert_eq!(a1.delivery.status, DeliveryStatus::Pending);
    let a2 = row(&*l, "a2").await;
    assert!(!a2.in_perimeter, "OUIFORM's last verdict excludes it again");
    assert_eq!(a2.delivery.status, DeliveryStatus::OutOfPerimeter);
    let a3 = row(&*l, "a3").await;
    assert_eq!(a3.delivery.status, DeliveryStatus::Pending, "revived");
    assert_eq!(a3.delivery.attempts, 0);

    let journal = l.journal("a1").await.expect("journal");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].dossier_ids, vec!["a1", "a2", "a3"]);
    // The duplicate answers as the batch left them.
    let mut msg = inbound("batch", rec("a", &records[0]));
    msg.flow = Flow::Backfill;
    msg.records = records.iter().map(|r| rec("a", r)).collect();
    let dup = l.accept(msg, &p()).await.expect("accepted");
    assert!(dup.duplicate);
    assert_eq!(
        dup.dossiers
            .iter()
            .map(|d| (d.dossier_id.as_str(), d.desired_version))
            .collect::<Vec<_>>(),
        vec![
            ("a1", 3),
            ("a2", a2.desired_version),
            ("a3", a3.desired_version)
        ]
    );
}

/// Refused records in the middle of a large message: every violation is reported and nothing of
/// the message is stored, not even the valid records before and after them.
pub async fn refused_records_in_a_batch_store_nothing(l: Arc<dyn Ledger>) {
    accept(&*l, "e1", record("e1", atexo(State::Entered, Some(1)))).await;
    accept(&*l, "e2", record("e2", atexo(State::Entered, Some(1)))).await;
    let before = [row(&*l, "e1").await, row(&*l, "e2").await];
    let mut msg = inbound("batch", record("n0", atexo(State::Validated, Some(1))));
    msg.flow = Flow::Backfill;
    msg.records = (0..40)
        .map(|i| match i {
            10 => record("e1", atexo(State::Cancelled, Some(2))),
            25 => record("e2", atexo(State::Cancelled, Some(2))),
            // Named again after its refused record: valid on its own, stored neither.
            30 => record("e1", atexo(State::Exited, Some(3))),
            i => record(&format!("n{i}"), atexo(State::Validated, Some(1))),
        })
        .collect();
    match l.accept(msg.clone(), &p()).await.expect_err("refused") {
        LedgerError::Rejected(v) => {
            assert_eq!(v.len(), 2);
            assert!(v.iter().all(|v| v.rule == Rule::LifecycleTransition));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!([row(&*l, "e1").await, row(&*l, "e2").await], before);
    for i in [0, 9, 11, 39] {
        assert!(l.dossier(&format!("n{i}")).await.expect("read").is_none());
    }
    assert_eq!(l.journal("e1").await.expect("journal").len(), 1);
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("progress"),
        BackfillProgress::default()
    );
    // Without its refused records the message is accepted, whole.
    msg.records.retain(|r| r.record.state != State::Cancelled);
    let a = l.accept(msg, &p()).await.expect("accepted");
    assert!(!a.duplicate);
    assert_eq!(a.dossiers.len(), 38);
    assert_eq!(row(&*l, "e1").await.desired.state, State::Exited);
    assert_eq!(row(&*l, "n39").await.desired_version, 1);
}

pub async fn concurrent_accepts_on_a_new_dossier(l: Arc<dyn Ledger>) {
    const N: u64 = 20;
    let mut tasks = Vec::new();
    for i in 0..N {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let rec = match i % 3 {
                0 => {
                    let mut d = atexo(State::Validated, Some(i));
                    d.training.title = Some(format!("ATEXO v{i}"));
                    d
                }
                1 => {
                    let mut d = ouiform(State::Registered);
                    d.training.title = Some(format!("OUIFORM {i}"));
                    d
                }
                _ => {
                    let mut d = pole_emploi_entered();
                    d.entry = Some(Entry {
                        date: date(2019, 9, 1 + u32::try_from(i).unwrap_or(0) % 20),
                    });
                    d
                }
            };
            l.accept(inbound(&format!("payload-{i}"), record("d1", rec)), &p())
                .await
        }));
    }
    let mut versions = Vec::new();
    let mut unchanged = 0;
    for t in tasks {
        let a = t.await.expect("task").expect("accepted");
        assert!(!a.duplicate);
        assert_eq!(a.dossiers.len(), 1);
        if a.dossiers[0].changed {
            versions.push(a.dossiers[0].desired_version);
        } else {
            unchanged += 1;
        }
    }
    let r = row(&*l, "d1").await;
    let mut systems: Vec<System> = r.sources.iter().map(|s| s.sources[0].system).collect();
    systems.sort();
    assert_eq!(
        systems,
        vec![System::AtexoSem, System::Ouiform, System::PoleEmploi],
        "all sources present"
    );
    let distinct: BTreeSet<i64> = versions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "each change got its own version"
    );
    assert_eq!(
        distinct,
        (1..=r.desired_version).collect::<BTreeSet<_>>(),
        "versions 1..=n, one per change ({unchanged} unchanged)"
    );
    assert_eq!(r.desired.state, State::Entered);
    assert_eq!(
        r.sources
            .iter()
            .find(|s| s.sources[0].system == System::AtexoSem)
            .and_then(|s| s.sources[0].version),
        Some(18),
        "the highest ATEXO version wins, whatever the arrival order"
    );
    assert_eq!(l.journal("d1").await.expect("journal").len(), 20);
    assert_eq!(
        l.pending(AGORA, Duration::ZERO, 10).await.expect("p"),
        vec!["d1"]
    );
}

pub async fn concurrent_identical_payloads(l: Arc<dyn Ledger>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            l.accept(
                inbound("same", record("d1", atexo(State::Validated, Some(1)))),
                &p(),
            )
            .await
        }));
    }
    let mut ids = BTreeSet::new();
    let mut firsts = 0;
    for t in tasks {
        let a = t.await.expect("task").expect("accepted");
        ids.insert(a.message_id);
        if !a.duplicate {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1, "one accepted, the others duplicates");
    assert_eq!(ids.len(), 1);
    assert_eq!(l.journal("d1").await.expect("j").len(), 1);
}

/// The records of one message apply in order, as if each were a message of its own: a dossier
/// named twice sees its first record's outcome (stale, behind, revived, perimeter flips alike).
pub async fn one_message_naming_a_dossier_twice_equals_its_records_one_by_one(l: Arc<dyn Ledger>) {
    // `m…` dossiers get one message of seven records; `s…` the same records one by one.
    let mut first_dead = Vec::new();
    for prefix in ["m", "s"] {
        let id = format!("{prefix}1");
        accept(
            &*l,
            &format!("{prefix}-seed"),
            record(&id, atexo(State::Validated, Some(1))),
        )
        .await;
        l.record_failure(&id, AGORA, "503").await.expect("failure");
        tokio::time::sleep(Duration::from_millis(2)).await;
        let reason = DeadReason::Irreconcilable { detail: "x".into() };
        first_dead.push(l.dead_letter(&id, AGORA, &reason).await.expect("dead"));
    }
    let records = |prefix: &str| {
        let (one, two) = (format!("{prefix}1"), format!("{prefix}2"));
        let mut titled = atexo(State::Entered, Some(3));
        titled.training.title = Some("v3".into());
        let mut out = record(&two, atexo(State::Entered, Some(4)));
        out.in_perimeter = false;
        let mut last = atexo(State::Entered, Some(5));
        last.training.title = Some("v5".into());
        vec![
            record(&two, atexo(State::Validated, Some(1))),
            record(&one, atexo(State::Entered, Some(2))),
            record(&two, titled),
            record(&one, atexo(State::Validated, Some(1))),
            out,
            record(&one, ouiform(State::Registered)),
            record(&one, last),
        ]
    };
    let mut msg = inbound("batch", records("m").remove(0));
    msg.records = records("m");
    let batch = l.accept(msg.clone(), &p()).await.expect("accepted");
    let mut one_by_one = Vec::new();
    for (i, rec) in records("s").into_iter().enumerate() {
        one_by_one.extend(accept(&*l, &format!("s-{i}"), rec).await.dossiers);
    }
    let outcome = |dossiers: &[crate::ledger::AcceptedDossier]| {
        dossiers
            .iter()
            .map(|d| {
                (
                    d.dossier_id[1..].to_string(),
                    d.changed,
                    d.desired_version,
                    d.in_perimeter,
                )
            })
            .collect::<Vec<_>>()
    };
    let expected: Vec<(String, bool, i64, bool)> = vec![
        ("2".into(), true, 1, true),
        ("1".into(), true, 2, true),
        ("2".into(), true, 2, true),
        ("1".into(), false, 2, true),
        ("2".into(), true, 3, false),
        ("1".into(), true, 3, true),
        ("1".into(), true, 4, true),
    ];
    assert_eq!(outcome(&batch.dossiers), expected);
    assert_eq!(outcome(&one_by_one), expected);

    for n in ["1", "2"] {
        let (m, s) = (
            row(&*l, &format!("m{n}")).await,
            row(&*l, &format!("s{n}")).await,
        );
        assert_eq!(m.desired, s.desired, "dossier {n}");
        assert_eq!(m.desired_version, s.desired_version, "dossier {n}");
        assert_eq!(m.flow, s.flow, "dossier {n}");
        assert_eq!(m.in_perimeter, s.in_perimeter, "dossier {n}");
        assert_eq!(m.sources, s.sources, "dossier {n}");
        assert_eq!(m.delivery.status, s.delivery.status, "dossier {n}");
        assert_eq!(m.delivery.attempts, s.delivery.attempts, "dossier {n}");
        assert_eq!(m.delivery.delivered, s.delivery.delivered, "dossier {n}");
        assert_eq!(
            m.delivery.waiting_for, s.delivery.waiting_for,
            "dossier {n}"
        );
    }
    let m1 = row(&*l, "m1").await;
    assert_eq!(m1.desired_version, 4);
    assert_eq!(m1.desired.training.title.as_deref(), Some("v5"));
    assert_eq!(m1.sources.len(), 2, "one record per source");
    assert_eq!(m1.sources[0].sources[0].version, Some(5));
    assert_eq!(m1.delivery.status, DeliveryStatus::Pending, "revived");
    assert_eq!(m1.delivery.attempts, 0);
    let m2 = row(&*l, "m2").await;
    assert_eq!(m2.delivery.status, DeliveryStatus::OutOfPerimeter);
    assert_eq!(m2.created_at, m2.updated_at);

    // A revived dossier starts a fresh series of failures.
    tokio::time::sleep(Duration::from_millis(2)).await;
    l.record_failure("m1", AGORA, "503").await.expect("failure");
    let reason = DeadReason::Irreconcilable { detail: "y".into() };
    let again = l.dead_letter("m1", AGORA, &reason).await.expect("dead");
    let all = l
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("dead letters");
    let find = |id: &str| all.iter().find(|d| d.id == id).expect("listed");
    assert!(find(&again).first_failure > find(&first_dead[0]).last_failure);

    // The journal links each dossier once, at its first record.
    let j = l.journal("m1").await.expect("journal");
    assert_eq!(j.len(), 2);
    assert_eq!(j[1].dossier_ids, vec!["m2".to_string(), "m1".to_string()]);
    let dup = l.accept(msg, &p()).await.expect("accepted");
    assert!(dup.duplicate);
    assert_eq!(dup.message_id, batch.message_id);
    assert_eq!(
        dup.dossiers
            .iter()
            .map(|d| (d.dossier_id.as_str(), d.desired_version, d.in_perimeter))
            .collect::<Vec<_>>(),
        vec![("m2", 3, false), ("m1", 4, true)]
    );
}

/// A refused message reports every refused record; a later record of the same dossier is judged
/// against the dossier as stored (the refused one changed nothing).
pub async fn every_refused_record_is_reported(l: Arc<dyn Ledger>) {
    accept(&*l, "r1", record("r1", atexo(State::Entered, Some(1)))).await;
    accept(&*l, "r2", record("r2", atexo(State::Entered, Some(1)))).await;
    let before = [row(&*l, "r1").await, row(&*l, "r2").await];
    let mut msg = inbound("bad", record("r3", atexo(State::Validated, Some(1))));
    msg.records.extend([
        record("r1", atexo(State::Cancelled, Some(2))),
        record("r2", atexo(State::Cancelled, Some(2))),
        record("r1", atexo(State::Exited, Some(3))),
    ]);
    match l.accept(msg, &p()).await.expect_err("refused") {
        LedgerError::Rejected(v) => {
            assert_eq!(
                v.iter().map(|v| v.rule).collect::<Vec<_>>(),
                vec![Rule::LifecycleTransition; 2]
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!([row(&*l, "r1").await, row(&*l, "r2").await], before);
    assert!(l.dossier("r3").await.expect("readable").is_none());
    assert_eq!(l.journal("r1").await.expect("journal").len(), 1);
}
