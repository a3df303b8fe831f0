//! Scenarios of the backfill's lots: claiming, round trips, settling each kind of line, the
//! progress the console shows, and the backfill reports.

use std::sync::Arc;
use std::time::Duration;

use passerelle_adapters::agora::model::Anomaly;
use passerelle_adapters::canonical::State;
use passerelle_adapters::planner::{AgoraState, Delivered, Operation};

use crate::ledger::{
    BackfillProgress, DeadLetterFilter, DeadReason, DeliveryStatus, Ledger, LedgerError, LotLine,
    LotMember, LotState, AGORA,
};

use super::*;

fn progress(claimable: u64, in_lots: u64, open_lots: u64, pending_other: u64) -> BackfillProgress {
    BackfillProgress {
        claimable,
        in_lots,
        open_lots,
        pending_other,
    }
}

fn members(ids: &[&str]) -> Vec<LotMember> {
    ids.iter()
        .map(|id| LotMember {
            dossier_id: (*id).into(),
            desired_version: 1,
        })
        .collect()
}

fn present(numero: &str, state: AgoraState) -> Delivered {
    Delivered::Present {
        numero_agora: numero.into(),
        state,
    }
}

/// Backfill dossiers, in perimeter, accepted in this order (created a little apart).
async fn backfill_dossiers(l: &dyn Ledger, ids: &[&str]) {
    for id in ids {
        backfill(
            l,
            &format!("bf-{id}"),
            record(id, atexo(State::Validated, Some(1))),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn claim_lot_takes_claimable_dossiers_oldest_first(l: Arc<dyn Ledger>) {
    assert!(l.claim_lot(AGORA, "L0", 10).await.expect("claim").is_none());
    assert!(l.lot("L0").await.expect("lot").is_none(), "nothing created");
    assert!(l.backfill_progress(AGORA).await.expect("p").is_idle());

    // Claimable, oldest first: b3, b1, b2, then a1 (searched: absent), k2 (lease expired).
    backfill_dossiers(&*l, &["b3", "b1", "b2", "p1", "a1", "k1", "k2", "d1"]).await;
    let mut out = record("o1", atexo(State::Validated, Some(1)));
    out.in_perimeter = false;
    backfill(&*l, "bf-o1", out).await;
    accept(
        &*l,
        "sync-s1",
        record("s1", atexo(State::Validated, Some(1))),
    )
    .await;
    let at = crate::ledger::stored::now();
    l.record_operation(
        "p1",
        AGORA,
        &search(at),
        &present("AG-P1", AgoraState::Entre),
        None,
    )
    .await
    .expect("recorded");
    l.record_operation("a1", AGORA, &search(at), &Delivered::Absent, None)
        .await
        .expect("recorded");
    assert!(l
        .try_lease("k1", "worker-1", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    assert!(l
        .try_lease("k2", "worker-2", Duration::ZERO)
        .await
        .expect("lease")
        .is_held());
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[])
        .await
        .expect("settled");
    // Leases aside, k1 is claimable too; p1 (AGORA confirmed it) is reconciled one by one.
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("p"),
        progress(6, 0, 0, 1)
    );
    assert_eq!(
        l.backfill_progress("other").await.expect("p"),
        BackfillProgress::default()
    );
    let mut pending = l.pending(AGORA, Duration::ZERO, 100).await.expect("p");
    pending.sort();
    assert_eq!(
        pending,
        vec!["p1", "s1"],
        "claimable backfill dossiers are the lots' to deliver"
    );

    let l1 = l
        .claim_lot(AGORA, "L1", 2)
        .await
        .expect("claim")
        .expect("a lot");
    assert_eq!(l1.lot_key, "L1");
    assert_eq!(l1.destination, AGORA);
    assert_eq!(l1.state, LotState::Claimed);
    assert_eq!(l1.agora_lot, None);
    assert_eq!(l1.members, members(&["b3", "b1"]));
    assert_eq!(l1.created_at, l1.updated_at);
    assert_eq!(l.lot("L1").await.expect("lot"), Some(l1.clone()));
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("p"),
        progress(4, 2, 1, 1)
    );

    // A second claim does not take the first lot's members again.
    let l2 = l
        .claim_lot(AGORA, "L2", 10)
        .await
        .expect("claim")
        .expect("a lot");
    // Oldest pending first (by the delivery's last change: a1's search moved it, differently
    // per backend), so only the set is compared.
    let mut taken = l2.members.clone();
    taken.sort_by(|a, b| a.dossier_id.cmp(&b.dossier_id));
    assert_eq!(taken, members(&["a1", "b2", "k2"]));
    assert!(l.claim_lot(AGORA, "L3", 10).await.expect("claim").is_none());
    assert!(l.lot("L3").await.expect("lot").is_none());
    assert!(l
        .claim_lot("other", "L4", 10)
        .await
        .expect("claim")
        .is_none());
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("p"),
        progress(1, 5, 2, 1)
    );
    let mut pending = l.pending(AGORA, Duration::ZERO, 100).await.expect("p");
    pending.sort();
    assert_eq!(
        pending,
        vec!["p1", "s1"],
        "lot members are the lots' to deliver"
    );

    // The lease gone, k1 is claimable.
    l.release("k1", "worker-1").await.expect("released");
    let l5 = l
        .claim_lot(AGORA, "L5", 10)
        .await
        .expect("claim")
        .expect("a lot");
    assert_eq!(l5.members, members(&["k1"]));

    // The dossiers read back with their lot.
    assert_eq!(row(&*l, "b3").await.lot.as_deref(), Some("L1"));
    assert_eq!(row(&*l, "p1").await.lot, None);
    let ids: Vec<String> = ["b2", "b3", "p1", "nope"].map(String::from).to_vec();
    let mut rows = l.dossiers(&ids).await.expect("dossiers");
    rows.sort_by(|a, b| a.dossier_id.cmp(&b.dossier_id));
    assert_eq!(
        rows,
        vec![
            row(&*l, "b2").await,
            row(&*l, "b3").await,
            row(&*l, "p1").await
        ]
    );
    assert_eq!(rows[0].lot.as_deref(), Some("L2"));
    assert_eq!(rows[0].sources.len(), 1);
    assert_eq!(
        rows[2].delivery.delivered,
        present("AG-P1", AgoraState::Entre)
    );
    assert!(l.dossiers(&[]).await.expect("dossiers").is_empty());

    // Their deliveries alone: the same rows as the dossiers carry, for those found.
    let mut deliveries = l.deliveries(AGORA, &ids).await.expect("deliveries");
    deliveries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        deliveries,
        rows.iter()
            .map(|r| (r.dossier_id.clone(), r.delivery.clone()))
            .collect::<Vec<_>>()
    );
    assert!(l
        .deliveries("elsewhere", &ids)
        .await
        .expect("deliveries")
        .is_empty());
    assert!(l
        .deliveries(AGORA, &[])
        .await
        .expect("deliveries")
        .is_empty());
}

pub async fn lots_round_trip(l: Arc<dyn Ledger>) {
    backfill_dossiers(&*l, &["b1", "b2", "b3"]).await;
    let l1 = l
        .claim_lot(AGORA, "L1", 1)
        .await
        .expect("claim")
        .expect("a lot");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let l2 = l
        .claim_lot(AGORA, "L2", 5)
        .await
        .expect("claim")
        .expect("a lot");
    assert_eq!(
        l.open_lots(AGORA).await.expect("open"),
        vec![l1.clone(), l2.clone()]
    );
    assert!(l.open_lots("other").await.expect("open").is_empty());

    l.lot_submitted("L1", "AG-LOT-1").await.expect("submitted");
    let submitted = l.lot("L1").await.expect("lot").expect("exists");
    assert_eq!(submitted.state, LotState::Submitted);
    assert_eq!(submitted.agora_lot.as_deref(), Some("AG-LOT-1"));
    assert_eq!(submitted.members, l1.members);
    assert_eq!(submitted.created_at, l1.created_at);
    assert!(submitted.updated_at >= l1.updated_at);
    assert_eq!(
        l.open_lots(AGORA).await.expect("open"),
        vec![submitted, l2.clone()]
    );
    let err = l.lot_submitted("nope", "AG").await.expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    let err = l.settle_lot("nope", &[], true).await.expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
}

pub async fn settle_lot_settles_each_line(l: Arc<dyn Ledger>) {
    backfill_dossiers(&*l, &["c1", "c2", "c3", "c4", "c5", "c6"]).await;
    accept(
        &*l,
        "sync-s1",
        record("s1", atexo(State::Validated, Some(1))),
    )
    .await;
    let lot = l
        .claim_lot(AGORA, "L1", 10)
        .await
        .expect("claim")
        .expect("a lot");
    assert_eq!(lot.members, members(&["c1", "c2", "c3", "c4", "c5", "c6"]));
    l.lot_submitted("L1", "AG-LOT-9").await.expect("submitted");

    // A new source version of c2 arrives while the lot is with AGORA: it stays in the lot.
    let mut newer = atexo(State::Validated, Some(2));
    newer.training.title = Some("Titre corrigé".into());
    let a = backfill(&*l, "bf-c2-v2", record("c2", newer)).await;
    assert_eq!(a.dossiers[0].desired_version, 2);
    assert_eq!(row(&*l, "c2").await.lot.as_deref(), Some("L1"));

    let doublon = DeadReason::Rejected {
        anomalies: vec![Anomaly {
            code: "AG-DOUBLON".into(),
            champ: None,
            libelle: Some("dossier en double".into()),
        }],
    };
    let accepted = |id: &str, numero: &str| LotLine::Accepted {
        dossier_id: id.into(),
        numero_agora: numero.into(),
        state: AgoraState::Cree,
        version: 1,
    };
    let lines = vec![
        accepted("c1", "AG-1"),
        accepted("c2", "AG-2"),
        LotLine::NothingOwed {
            dossier_id: "c3".into(),
            version: 1,
        },
        LotLine::Dead {
            dossier_id: "c4".into(),
            reason: doublon.clone(),
        },
        LotLine::Released {
            dossier_id: "c5".into(),
        },
        // Not a member: ignored.
        accepted("s1", "AG-S"),
    ];
    let owed = l.settle_lot("L1", &lines, false).await.expect("settled");
    assert_eq!(owed, vec!["c2", "c5"], "newer version, released");

    let c1 = row(&*l, "c1").await;
    assert_eq!(c1.lot, None);
    assert_eq!(c1.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(c1.delivery.delivered, present("AG-1", AgoraState::Cree));
    assert_eq!(c1.delivery.delivered_version, 1);
    let ops = l.operations("c1", AGORA).await.expect("ops");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].operation, Operation::Create);
    assert_eq!(ops[0].status, Some(202));
    assert_eq!(ops[0].outcome, "backfill lot AG-LOT-9: CREE");
    assert_eq!(ops[0].numero_agora.as_deref(), Some("AG-1"));

    let c2 = row(&*l, "c2").await;
    assert_eq!(c2.lot, None);
    assert_eq!(
        c2.delivery.status,
        DeliveryStatus::Pending,
        "version 2 is owed"
    );
    assert_eq!(c2.delivery.delivered, present("AG-2", AgoraState::Cree));
    assert_eq!(c2.delivery.delivered_version, 1);
    assert_eq!(l.operations("c2", AGORA).await.expect("ops").len(), 1);

    let c3 = row(&*l, "c3").await;
    assert_eq!(c3.lot, None);
    assert_eq!(c3.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(c3.delivery.delivered, Delivered::Unknown);
    assert_eq!(c3.delivery.delivered_version, 1);
    assert!(l.operations("c3", AGORA).await.expect("ops").is_empty());

    let c4 = row(&*l, "c4").await;
    assert_eq!(c4.lot, None);
    assert_eq!(c4.delivery.status, DeliveryStatus::Dead);
    let dead = l
        .dead_letters(&DeadLetterFilter {
            code: Some("AG-DOUBLON".into()),
            ..DeadLetterFilter::default()
        })
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].dossier_id, "c4");
    assert_eq!(dead[0].destination, AGORA);
    assert_eq!(dead[0].reason, doublon);

    let c5 = row(&*l, "c5").await;
    assert_eq!(c5.lot, None);
    assert_eq!(c5.delivery.status, DeliveryStatus::Pending);
    assert_eq!(c5.delivery.delivered, Delivered::Unknown);

    let s1 = row(&*l, "s1").await;
    assert_eq!(s1.delivery.status, DeliveryStatus::Pending);
    assert_eq!(s1.delivery.delivered, Delivered::Unknown);
    assert!(l.operations("s1", AGORA).await.expect("ops").is_empty());

    assert_eq!(row(&*l, "c6").await.lot.as_deref(), Some("L1"));
    assert_eq!(
        l.lot("L1").await.expect("lot").expect("exists").state,
        LotState::Submitted
    );
    // c5 is claimable again; c2 (AGORA has it) is reconciled one by one.
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("p"),
        progress(1, 1, 1, 1)
    );
    let mut pending = l.pending(AGORA, Duration::ZERO, 100).await.expect("p");
    pending.sort();
    assert_eq!(pending, vec!["c2", "s1"]);

    let l2 = l
        .claim_lot(AGORA, "L2", 10)
        .await
        .expect("claim")
        .expect("a lot");
    assert_eq!(l2.members, members(&["c5"]), "c6 is still in L1");

    // Done: the member the report did not name leaves the lot; a line naming a dossier that
    // already left is ignored.
    let owed = l
        .settle_lot("L1", &[accepted("c1", "AG-OTHER")], true)
        .await
        .expect("settled");
    assert_eq!(owed, vec!["c6"]);
    assert_eq!(row(&*l, "c6").await.lot, None);
    assert_eq!(
        row(&*l, "c1").await.delivery.delivered,
        present("AG-1", AgoraState::Cree)
    );
    assert_eq!(l.operations("c1", AGORA).await.expect("ops").len(), 1);
    let l1 = l.lot("L1").await.expect("lot").expect("exists");
    assert_eq!(l1.state, LotState::Done);
    assert_eq!(l1.members, lot.members, "the members stay, for the trace");
    assert_eq!(
        l.open_lots(AGORA)
            .await
            .expect("open")
            .into_iter()
            .map(|lot| lot.lot_key)
            .collect::<Vec<_>>(),
        vec!["L2"]
    );
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("p"),
        progress(1, 1, 1, 1)
    );

    let owed = l
        .settle_lot("L2", &[accepted("c5", "AG-5")], true)
        .await
        .expect("settled");
    assert!(owed.is_empty());
    assert_eq!(
        row(&*l, "c5").await.delivery.status,
        DeliveryStatus::Delivered
    );
    assert_eq!(
        l.backfill_progress(AGORA).await.expect("p"),
        progress(1, 0, 0, 1)
    );
    assert!(l.open_lots(AGORA).await.expect("open").is_empty());
}

/// The Reprises page's reads: each lot with what became of its members (waiting for their line,
/// delivered, dead-lettered), newest first, done lots included; and each input file's checkpoint.
pub async fn lot_and_input_progress_for_the_console(l: Arc<dyn Ledger>) {
    use crate::ledger::progress::FILE_CHECKPOINT_PREFIX;
    assert!(l.lot_progress(AGORA, 10).await.expect("lots").is_empty());
    backfill_dossiers(&*l, &["p1", "p2", "p3", "p4"]).await;
    let first = l
        .claim_lot(AGORA, "P1", 3)
        .await
        .expect("claim")
        .expect("a lot");
    let m: Vec<String> = first.members.iter().map(|m| m.dossier_id.clone()).collect();
    l.lot_submitted("P1", "AG-LOT-1").await.expect("submitted");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = l
        .claim_lot(AGORA, "P2", 3)
        .await
        .expect("claim")
        .expect("a lot");
    assert_eq!(second.members.len(), 1);
    let accepted = |id: &str, numero: &str| LotLine::Accepted {
        dossier_id: id.into(),
        numero_agora: numero.into(),
        state: AgoraState::Cree,
        version: 1,
    };
    let dead = LotLine::Dead {
        dossier_id: m[1].clone(),
        reason: DeadReason::Rejected {
            anomalies: vec![Anomaly {
                code: "AG-DOUBLON".into(),
                champ: None,
                libelle: None,
            }],
        },
    };
    l.settle_lot("P1", &[accepted(&m[0], "AG-1"), dead], false)
        .await
        .expect("settled");

    let lots = l.lot_progress(AGORA, 10).await.expect("lots");
    let keys: Vec<&str> = lots.iter().map(|p| p.lot_key.as_str()).collect();
    assert_eq!(keys, ["P2", "P1"], "newest first");
    let (p2, p1) = (&lots[0], &lots[1]);
    assert_eq!(p2.state, LotState::Claimed);
    assert_eq!(p2.agora_lot, None);
    assert_eq!((p2.members, p2.waiting, p2.settled()), (1, 1, 0));
    assert_eq!(p1.state, LotState::Submitted);
    assert_eq!(p1.agora_lot.as_deref(), Some("AG-LOT-1"));
    assert_eq!(
        (p1.members, p1.waiting, p1.settled(), p1.delivered, p1.dead),
        (3, 1, 2, 1, 1)
    );

    // The last line read, the lot is done: its members are kept, none waits.
    l.settle_lot("P1", &[accepted(&m[2], "AG-3")], true)
        .await
        .expect("settled");
    let lots = l.lot_progress(AGORA, 10).await.expect("lots");
    let p1 = &lots[1];
    assert_eq!(p1.state, LotState::Done);
    assert_eq!(
        (p1.members, p1.waiting, p1.settled(), p1.delivered, p1.dead),
        (3, 0, 3, 2, 1)
    );
    assert_eq!(l.lot_progress(AGORA, 1).await.expect("lots").len(), 1);
    assert!(l
        .lot_progress("elsewhere", 10)
        .await
        .expect("lots")
        .is_empty());

    // The input files' checkpoints, the latest advanced first; other checkpoints are not files.
    let file = |k: &str| format!("{FILE_CHECKPOINT_PREFIX}{k}");
    l.set_checkpoint(&file("a"), 120).await.expect("set");
    l.set_checkpoint("something-else", 5).await.expect("set");
    tokio::time::sleep(Duration::from_millis(5)).await;
    l.set_checkpoint(&file("b"), 7).await.expect("set");
    let inputs = l.input_progress(10).await.expect("inputs");
    let read: Vec<(String, u64)> = inputs.iter().map(|i| (i.key.clone(), i.read)).collect();
    assert_eq!(read, [(file("b"), 7), (file("a"), 120)]);
}

/// Backfill reports: kept whole (bytes as given), listed newest first with their counts and size.
pub async fn backfill_reports_are_kept_and_listed_newest_first(l: Arc<dyn Ledger>) {
    assert!(l.backfill_reports(10).await.unwrap().is_empty());
    let first = l
        .store_backfill_report(&serde_json::json!({"accepted": 3}), b"\x1f\x8b one")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = l
        .store_backfill_report(
            &serde_json::json!({"accepted": 5, "invalid": 1}),
            &[0u8; 300],
        )
        .await
        .unwrap();
    assert_ne!(first, second);
    let listed = l.backfill_reports(10).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|r| r.report_id.as_str())
            .collect::<Vec<_>>(),
        [second.as_str(), first.as_str()]
    );
    assert_eq!(listed[0].counts["invalid"], 1);
    assert_eq!(listed[0].gzip_bytes, 300);
    assert_eq!(l.backfill_reports(1).await.unwrap().len(), 1);
    assert_eq!(
        l.backfill_report(&first).await.unwrap().as_deref(),
        Some(&b"\x1f\x8b one"[..])
    );
    assert!(l.backfill_report("nope").await.unwrap().is_none());
}
