//! Scenarios of dead letters: filtered, replayed one by one or in bulk, the replay lineage, and a
//! new desired version reviving a dead dossier.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use passerelle_adapters::agora::model::Anomaly;
use passerelle_adapters::canonical::State;
use passerelle_adapters::planner::Delivered;

use crate::ledger::{DeadLetterFilter, DeadReason, DeliveryStatus, Ledger, LedgerError, AGORA};

use super::*;

pub async fn dead_letters_filter_and_replay(l: Arc<dyn Ledger>) {
    let t0 = Utc::now() - chrono::Duration::seconds(1);
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    accept(&*l, "2", record("d2", ouiform(State::Registered))).await;
    accept(&*l, "3", record("d3", pole_emploi_entered())).await;

    l.record_failure("d1", AGORA, "http 503").await.expect("f");
    l.record_failure("d1", AGORA, "http 503").await.expect("f");
    let before_d1 = row(&*l, "d1").await;
    let rejected = DeadReason::Rejected {
        anomalies: vec![Anomaly {
            code: "AG-NIR".into(),
            champ: Some("stagiaire.nir13".into()),
            libelle: Some("NIR inconnu".into()),
        }],
    };
    let dl1 = l.dead_letter("d1", AGORA, &rejected).await.expect("dead");
    let exhausted = DeadReason::Exhausted {
        last_error: "service unavailable".into(),
        status: Some(503),
    };
    let dl2 = l.dead_letter("d2", AGORA, &exhausted).await.expect("dead");
    let irreconcilable = DeadReason::Irreconcilable {
        detail: "AGORA says ANNULE".into(),
    };
    let dl3 = l
        .dead_letter("d3", "elsewhere-missing", &irreconcilable)
        .await;
    assert!(
        matches!(dl3, Err(LedgerError::NotFound { .. })),
        "no delivery toward that destination"
    );
    let dl3 = l
        .dead_letter("d3", AGORA, &irreconcilable)
        .await
        .expect("dead");

    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Dead);
    let all = l
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![dl1.clone(), dl2.clone(), dl3.clone()]
    );
    let d1 = &all[0];
    assert_eq!(d1.dossier_id, "d1");
    assert_eq!(d1.destination, AGORA);
    assert_eq!(d1.reason, rejected);
    assert_eq!(d1.attempts, 2, "attempts copied");
    assert_eq!(
        Some(d1.first_failure),
        before_d1.delivery.last_attempt_at.map(|_| d1.first_failure)
    );
    assert!(d1.first_failure <= d1.last_failure);
    assert_eq!(d1.replayed_at, None);
    assert_eq!(all[1].attempts, 0);
    assert_eq!(all[1].first_failure, all[1].last_failure);

    let by_code = |code: &str| DeadLetterFilter {
        code: Some(code.into()),
        ..DeadLetterFilter::default()
    };
    let ids = |v: Vec<crate::ledger::DeadLetter>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(l.dead_letters(&by_code("AG-NIR")).await.expect("l")),
        vec![dl1.clone()]
    );
    assert_eq!(
        ids(l.dead_letters(&by_code("http.503")).await.expect("l")),
        vec![dl2.clone()]
    );
    assert_eq!(
        ids(l
            .dead_letters(&by_code("lifecycle.irreconcilable"))
            .await
            .expect("l")),
        vec![dl3.clone()]
    );
    assert!(l
        .dead_letters(&by_code("AG-NONE"))
        .await
        .expect("l")
        .is_empty());
    let by_dest = DeadLetterFilter {
        destination: Some("other".into()),
        ..DeadLetterFilter::default()
    };
    assert!(l.dead_letters(&by_dest).await.expect("l").is_empty());
    let by_dest = DeadLetterFilter {
        destination: Some(AGORA.into()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(l.dead_letters(&by_dest).await.expect("l").len(), 3);
    let later = Utc::now() + chrono::Duration::seconds(60);
    let window = DeadLetterFilter {
        since: Some(t0),
        until: Some(later),
        ..DeadLetterFilter::default()
    };
    assert_eq!(l.dead_letters(&window).await.expect("l").len(), 3);
    let future = DeadLetterFilter {
        since: Some(later),
        ..DeadLetterFilter::default()
    };
    assert!(l.dead_letters(&future).await.expect("l").is_empty());
    let past = DeadLetterFilter {
        until: Some(t0),
        ..DeadLetterFilter::default()
    };
    assert!(l.dead_letters(&past).await.expect("l").is_empty());
    let split = DeadLetterFilter {
        since: Some(all[1].last_failure),
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        ids(l.dead_letters(&split).await.expect("l")),
        vec![dl2.clone(), dl3.clone()]
    );

    let of_dossier = |id: &str| DeadLetterFilter {
        dossier_id: Some(id.into()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        ids(l.dead_letters(&of_dossier("d2")).await.expect("l")),
        vec![dl2.clone()]
    );
    assert!(l
        .dead_letters(&of_dossier("nope"))
        .await
        .expect("l")
        .is_empty());
    let combined = DeadLetterFilter {
        destination: Some(AGORA.into()),
        code: Some("AG-NIR".into()),
        since: Some(t0),
        until: Some(later),
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        ids(l.dead_letters(&combined).await.expect("l")),
        vec![dl1.clone()],
        "every filter given must match"
    );

    // Replay: the dead letter stays, marked; the dossier is owed again with fresh attempts.
    let replayed = l.replay(&dl1).await.expect("replayed");
    assert_eq!(replayed.dead_letter_id, dl1);
    assert_eq!(replayed.dossier_id, "d1");
    assert_eq!(replayed.destination, AGORA);
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert_eq!(r.delivery.attempts, 0);
    assert_eq!(r.delivery.last_error, None);
    assert_eq!(r.delivery.replay_id.as_ref(), Some(&replayed.replay_id));
    assert!(l
        .pending(AGORA, Duration::ZERO, 10)
        .await
        .expect("p")
        .contains(&"d1".to_string()));
    assert_eq!(
        ids(l
            .dead_letters(&DeadLetterFilter::default())
            .await
            .expect("l")),
        vec![dl2.clone(), dl3.clone()],
        "replayed letters are left out by default"
    );
    let with_replayed = DeadLetterFilter {
        include_replayed: true,
        ..DeadLetterFilter::default()
    };
    let all = l.dead_letters(&with_replayed).await.expect("l");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, dl1);
    assert_eq!(all[0].replayed_at, Some(replayed.replayed_at));
    assert_eq!(all[0].replay_id.as_ref(), Some(&replayed.replay_id));
    assert_eq!(all[0].reason, rejected, "lineage kept");
    assert_eq!(
        ids(l.dead_letters(&by_code("AG-NIR")).await.expect("l")),
        Vec::<String>::new(),
        "a filter leaves replayed letters out too"
    );

    // A second replay is refused and changes nothing.
    let err = l.replay(&dl1).await.expect_err("replayed once");
    match err {
        LedgerError::AlreadyReplayed {
            id,
            dossier_id,
            replayed_at,
        } => {
            assert_eq!((id.as_str(), dossier_id.as_str()), (dl1.as_str(), "d1"));
            assert_eq!(replayed_at, replayed.replayed_at);
        }
        other => panic!("{other:?}"),
    }
    let again = l.dead_letters(&with_replayed).await.expect("l");
    assert_eq!(again[0].replayed_at, Some(replayed.replayed_at));
    assert_eq!(
        row(&*l, "d1").await.delivery.replay_id.as_ref(),
        Some(&replayed.replay_id)
    );

    let err = l.replay("no-such-id").await.expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
}

fn rejected_with(code: &str) -> DeadReason {
    DeadReason::Rejected {
        anomalies: vec![Anomaly {
            code: code.into(),
            champ: Some("/formation/certification".into()),
            libelle: Some("refusé".into()),
        }],
    }
}

/// A replay opens an attempt: its id goes on the replayed letter, the delivery, the calls made,
/// and the dead letter that ends the attempt; each dead letter is replayed once.
pub async fn replay_lineage_links_the_attempts(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    let before = l
        .dead_letter("d1", AGORA, &rejected_with("AG-CERTIF"))
        .await
        .expect("dead");
    let first = l
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("l");
    assert_eq!(
        (first[0].replay_id.as_ref(), first[0].after_replay.as_ref()),
        (None, None)
    );

    let r1 = l.replay(&before).await.expect("replayed");
    // The calls of the attempt carry its replay id (the worker copies the delivery's).
    let attempt = row(&*l, "d1").await.delivery.replay_id;
    assert_eq!(attempt.as_ref(), Some(&r1.replay_id));
    let mut call = search(crate::ledger::stored::now());
    call.replay_id = attempt;
    l.record_operation("d1", AGORA, &call, &Delivered::Absent, None)
        .await
        .expect("recorded");
    assert_eq!(
        l.operations("d1", AGORA).await.expect("ops")[0]
            .replay_id
            .as_ref(),
        Some(&r1.replay_id)
    );

    // It fails again: a new dead letter, naming the attempt; the delivery's attempt is over.
    l.record_failure("d1", AGORA, "http 422").await.expect("f");
    let after = l
        .dead_letter("d1", AGORA, &rejected_with("AG-CERTIF"))
        .await
        .expect("dead");
    assert_ne!(after, before);
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Dead);
    assert_eq!(r.delivery.replay_id, None);
    let trace = l
        .dead_letters(&DeadLetterFilter {
            dossier_id: Some("d1".into()),
            include_replayed: true,
            ..DeadLetterFilter::default()
        })
        .await
        .expect("l");
    assert_eq!(
        trace.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![before.clone(), after.clone()]
    );
    assert_eq!(trace[0].replay_id.as_ref(), Some(&r1.replay_id));
    assert_eq!(trace[1].after_replay.as_ref(), Some(&r1.replay_id));
    assert_eq!(trace[1].replayed_at, None);
    assert_eq!(trace[1].attempts, 1);
    assert_eq!(
        l.dead_letters(&DeadLetterFilter::default())
            .await
            .expect("l")
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>(),
        vec![after.clone()],
        "only the new one waits for an operator"
    );

    // Replayed again: a second attempt, with its own id.
    let r2 = l.replay(&after).await.expect("replayed");
    assert_ne!(r2.replay_id, r1.replay_id);
    // A newer desired version arrives meanwhile: settling the older one ends nothing.
    let mut newer = atexo(State::Validated, Some(2));
    newer.training.title = Some("corrigé".into());
    accept(&*l, "2", record("d1", newer)).await;
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[])
        .await
        .expect("settled");
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert_eq!(r.delivery.replay_id.as_ref(), Some(&r2.replay_id));
    // Settled at the desired version: the attempt is over.
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 2, &[])
        .await
        .expect("settled");
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(r.delivery.replay_id, None);
    // A later failure is no replay's.
    let third = l
        .dead_letter("d1", AGORA, &rejected_with("AG-X"))
        .await
        .expect("dead");
    let all = l
        .dead_letters(&DeadLetterFilter {
            include_replayed: true,
            ..DeadLetterFilter::default()
        })
        .await
        .expect("l");
    let third = all.iter().find(|d| d.id == third).expect("listed");
    assert_eq!(third.after_replay, None);
    assert!(matches!(
        l.replay(&before).await,
        Err(LedgerError::AlreadyReplayed { .. })
    ));
}

/// A bulk replay takes the dead letters not yet replayed that its filter selects, once each,
/// even when two run at the same time.
pub async fn replay_matching_replays_what_the_filter_selects(l: Arc<dyn Ledger>) {
    let t0 = Utc::now() - chrono::Duration::seconds(1);
    let reasons = [
        ("d1", rejected_with("AG-CERTIF")),
        ("d2", rejected_with("AG-CERTIF")),
        ("d3", rejected_with("AG-SIRET")),
        (
            "d4",
            DeadReason::Exhausted {
                last_error: "503".into(),
                status: Some(503),
            },
        ),
    ];
    let mut dl = Vec::new();
    for (i, (id, reason)) in reasons.iter().enumerate() {
        accept(
            &*l,
            &format!("{i}"),
            record(id, atexo(State::Validated, Some(1))),
        )
        .await;
        dl.push(l.dead_letter(id, AGORA, reason).await.expect("dead"));
    }
    let filter = |code: Option<&str>| DeadLetterFilter {
        code: code.map(str::to_string),
        ..DeadLetterFilter::default()
    };
    let ids = |v: &[crate::ledger::Replayed]| {
        v.iter()
            .map(|r| r.dead_letter_id.clone())
            .collect::<Vec<_>>()
    };

    // Confirmed for another number than the filter selects: refused, nothing replayed.
    match l.replay_counted(&filter(Some("AG-CERTIF")), Some(1)).await {
        Err(LedgerError::CountChanged { expected, found }) => {
            assert_eq!((expected, found), (1, 2));
        }
        other => panic!("expected CountChanged, got {other:?}"),
    }
    assert_eq!(
        l.dead_letters(&filter(Some("AG-CERTIF")))
            .await
            .expect("list")
            .len(),
        2,
        "nothing replayed"
    );
    let certif = l
        .replay_counted(&filter(Some("AG-CERTIF")), Some(2))
        .await
        .expect("replayed");
    assert_eq!(
        ids(&certif),
        vec![dl[0].clone(), dl[1].clone()],
        "oldest first"
    );
    assert_eq!(
        certif
            .iter()
            .map(|r| r.dossier_id.as_str())
            .collect::<Vec<_>>(),
        vec!["d1", "d2"]
    );
    assert_ne!(certif[0].replay_id, certif[1].replay_id);
    for (id, status) in [
        ("d1", DeliveryStatus::Pending),
        ("d2", DeliveryStatus::Pending),
        ("d3", DeliveryStatus::Dead),
        ("d4", DeliveryStatus::Dead),
    ] {
        assert_eq!(row(&*l, id).await.delivery.status, status, "{id}");
    }
    assert_eq!(
        row(&*l, "d2").await.delivery.replay_id.as_ref(),
        Some(&certif[1].replay_id)
    );
    assert!(
        l.replay_matching(&filter(Some("AG-CERTIF")))
            .await
            .expect("none left")
            .is_empty(),
        "replayed letters are not replayed again"
    );

    // Filters that select nothing replay nothing.
    let later = Utc::now() + chrono::Duration::seconds(60);
    for nothing in [
        DeadLetterFilter {
            destination: Some("elsewhere".into()),
            ..DeadLetterFilter::default()
        },
        DeadLetterFilter {
            since: Some(later),
            ..DeadLetterFilter::default()
        },
        DeadLetterFilter {
            until: Some(t0),
            ..DeadLetterFilter::default()
        },
        DeadLetterFilter {
            code: Some("AG-SIRET".into()),
            dossier_id: Some("d4".into()),
            ..DeadLetterFilter::default()
        },
    ] {
        assert!(
            l.replay_matching(&nothing).await.expect("l").is_empty(),
            "{nothing:?}"
        );
    }
    assert_eq!(row(&*l, "d3").await.delivery.status, DeliveryStatus::Dead);

    let by_dossier = l
        .replay_matching(&DeadLetterFilter {
            dossier_id: Some("d3".into()),
            destination: Some(AGORA.into()),
            since: Some(t0),
            until: Some(later),
            ..DeadLetterFilter::default()
        })
        .await
        .expect("replayed");
    assert_eq!(ids(&by_dossier), vec![dl[2].clone()]);
    assert!(matches!(
        l.replay(&dl[2]).await,
        Err(LedgerError::AlreadyReplayed { .. })
    ));
    // The empty filter: every dead letter left.
    let rest = l
        .replay_matching(&DeadLetterFilter::default())
        .await
        .expect("replayed");
    assert_eq!(ids(&rest), vec![dl[3].clone()]);
    let mut owed = l.pending(AGORA, Duration::ZERO, 10).await.expect("p");
    owed.sort();
    assert_eq!(owed, vec!["d1", "d2", "d3", "d4"]);

    // Two bulk replays at once replay each dead letter once between them.
    let mut fresh = BTreeSet::new();
    for id in ["d1", "d2", "d3", "d4"] {
        fresh.insert(
            l.dead_letter(id, AGORA, &rejected_with("AG-CERTIF"))
                .await
                .expect("dead"),
        );
    }
    let (certif, everything) = (filter(Some("AG-CERTIF")), filter(None));
    let (a, b) = tokio::join!(l.replay_matching(&certif), l.replay_matching(&everything));
    let mut both: Vec<String> = ids(&a.expect("a"));
    both.extend(ids(&b.expect("b")));
    assert_eq!(both.len(), fresh.len(), "none twice: {both:?}");
    assert_eq!(both.into_iter().collect::<BTreeSet<_>>(), fresh);
    assert!(l
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("l")
        .is_empty());
}

pub async fn new_version_revives_a_dead_dossier(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    l.record_failure("d1", AGORA, "503").await.expect("f");
    let reason = DeadReason::Rejected { anomalies: vec![] };
    assert_eq!(reason.code(), "agora.rejected");
    let dl = l.dead_letter("d1", AGORA, &reason).await.expect("dead");
    // An unchanged message leaves it dead.
    let a = accept(&*l, "2", record("d1", atexo(State::Validated, Some(1)))).await;
    assert!(!a.dossiers[0].changed);
    assert_eq!(row(&*l, "d1").await.delivery.status, DeliveryStatus::Dead);
    // A corrected source revives it.
    let mut fixed = atexo(State::Validated, Some(2));
    fixed.training.title = Some("corrigé".into());
    let a = accept(&*l, "3", record("d1", fixed)).await;
    assert!(a.dossiers[0].changed);
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert_eq!(r.delivery.attempts, 0);
    // The dead letter itself is untouched (only an operator replays).
    let all = l
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("l");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, dl);
}
