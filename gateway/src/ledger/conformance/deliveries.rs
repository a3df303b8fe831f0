//! Scenarios of deliveries: how an attempt settles or fails, the AGORA operations recorded, the
//! pending dossiers and sessions read back, and the returns outbox.

use std::sync::Arc;
use std::time::Duration;

use passerelle_adapters::canonical::{Dossier, Nir, State};
use passerelle_adapters::planner::{AgoraState, Delivered, Operation};

use crate::ledger::{DeadReason, DeliveryStatus, Ledger, LedgerError, OperationRecord, AGORA};

use super::*;

pub async fn settling_an_older_version_leaves_it_pending(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    accept(&*l, "2", record("d1", atexo(State::Entered, Some(2)))).await;
    // A worker that reconciled version 1 finishes after version 2 arrived.
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[])
        .await
        .expect("settled");
    let r = row(&*l, "d1").await;
    assert_eq!(
        r.delivery.status,
        DeliveryStatus::Pending,
        "version 2 is owed"
    );
    assert_eq!(r.delivery.delivered_version, 1);
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 2, &[])
        .await
        .expect("settled");
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Delivered);
    assert_eq!(r.delivery.delivered_version, 2);
}

pub async fn out_of_perimeter_status(l: Arc<dyn Ledger>) {
    let mut rec = record("d1", atexo(State::Validated, Some(1)));
    rec.in_perimeter = false;
    let a = l.accept(inbound("1", rec), &p()).await.expect("accepted");
    assert!(!a.dossiers[0].in_perimeter);
    let r = row(&*l, "d1").await;
    assert!(!r.in_perimeter);
    assert_eq!(r.delivery.status, DeliveryStatus::OutOfPerimeter);
    assert!(l
        .pending(AGORA, Duration::ZERO, 10)
        .await
        .expect("pending")
        .is_empty());

    // Another source (in perimeter by its own verdict) does not lift ATEXO's exclusion.
    let a = accept(&*l, "2", record("d1", ouiform(State::Registered))).await;
    assert!(!a.dossiers[0].in_perimeter);
    assert_eq!(
        row(&*l, "d1").await.delivery.status,
        DeliveryStatus::OutOfPerimeter
    );

    // ATEXO corrects its record (e.g. its category): the dossier enters the perimeter.
    let a = accept(&*l, "3", record("d1", atexo(State::Validated, Some(2)))).await;
    assert!(a.dossiers[0].in_perimeter);
    let r = row(&*l, "d1").await;
    assert!(r.in_perimeter);
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
}

pub async fn operations_and_delivered_round_trip(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let at = crate::ledger::stored::now();
    let steps: Vec<(OperationRecord, Delivered)> = vec![
        (
            OperationRecord {
                operation: Operation::Search,
                status: Some(404),
                outcome: "not found".into(),
                numero_agora: None,
                at,
                replay_id: None,
            },
            Delivered::Absent,
        ),
        (
            OperationRecord {
                operation: Operation::Create,
                status: Some(201),
                outcome: "created".into(),
                numero_agora: Some("AG-000001".into()),
                at: at + chrono::Duration::milliseconds(1),
                replay_id: None,
            },
            Delivered::Present {
                numero_agora: "AG-000001".into(),
                state: AgoraState::Cree,
            },
        ),
        (
            OperationRecord {
                operation: Operation::Enter,
                status: None,
                outcome: "connection reset".into(),
                numero_agora: None,
                at: at + chrono::Duration::milliseconds(2),
                replay_id: None,
            },
            Delivered::Present {
                numero_agora: "AG-000001".into(),
                state: AgoraState::Cree,
            },
        ),
        (
            OperationRecord {
                operation: Operation::Enter,
                status: Some(200),
                outcome: "entered".into(),
                numero_agora: Some("AG-000001".into()),
                at: at + chrono::Duration::milliseconds(3),
                replay_id: Some("replay-1".into()),
            },
            Delivered::Present {
                numero_agora: "AG-000001".into(),
                state: AgoraState::Entre,
            },
        ),
        (
            OperationRecord {
                operation: Operation::Search,
                status: Some(200),
                outcome: "found".into(),
                numero_agora: Some("AG-000001".into()),
                at: at + chrono::Duration::milliseconds(4),
                replay_id: None,
            },
            Delivered::Unknown,
        ),
    ];
    for (op, delivered) in &steps {
        l.record_operation("d1", AGORA, op, delivered, None)
            .await
            .expect("recorded");
        assert_eq!(&row(&*l, "d1").await.delivery.delivered, delivered);
    }
    let ops = l.operations("d1", AGORA).await.expect("operations");
    let expected: Vec<OperationRecord> = steps.iter().map(|(o, _)| o.clone()).collect();
    assert_eq!(ops, expected);
    assert!(l
        .operations("d1", "elsewhere")
        .await
        .expect("ops")
        .is_empty());

    // Every AGORA state round-trips.
    for state in [
        AgoraState::Cree,
        AgoraState::Entre,
        AgoraState::Sorti,
        AgoraState::Solde,
        AgoraState::Annule,
    ] {
        let delivered = Delivered::Present {
            numero_agora: "AG-000002".into(),
            state,
        };
        l.record_operation("d1", AGORA, &steps[0].0, &delivered, None)
            .await
            .expect("recorded");
        assert_eq!(row(&*l, "d1").await.delivery.delivered, delivered);
    }

    let err = l
        .record_operation("nope", AGORA, &steps[0].0, &Delivered::Absent, None)
        .await
        .expect_err("unknown dossier");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    assert_eq!(
        l.operations("d1", AGORA).await.expect("ops").len(),
        steps.len() + 5,
        "a failed call records nothing"
    );
}

pub async fn failures_count_attempts(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    assert_eq!(
        l.record_failure("d1", AGORA, "http 503").await.expect("f"),
        1
    );
    assert_eq!(
        l.record_failure("d1", AGORA, "timeout").await.expect("f"),
        2
    );
    let long = "x".repeat(10_000);
    assert_eq!(l.record_failure("d1", AGORA, &long).await.expect("f"), 3);
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.attempts, 3);
    assert!(r
        .delivery
        .last_error
        .as_ref()
        .is_some_and(|e| e.len() < 3000));
    assert!(r.delivery.last_attempt_at.is_some());
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);

    // Success resets the attempts.
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[])
        .await
        .expect("settled");
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.attempts, 0);
    assert_eq!(r.delivery.last_error, None);
    assert_eq!(r.delivery.delivered_version, 1);
    assert_eq!(l.record_failure("d1", AGORA, "again").await.expect("f"), 1);

    let err = l
        .record_failure("nope", AGORA, "x")
        .await
        .expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    let err = l
        .settle_delivery("nope", AGORA, DeliveryStatus::Delivered, 1, &[])
        .await
        .expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
}

pub async fn pending_lists_owed_dossiers(l: Arc<dyn Ledger>) {
    for (i, id) in ["d1", "d2", "d3", "d4"].iter().enumerate() {
        accept(
            &*l,
            &format!("h{i}"),
            record(id, atexo(State::Validated, Some(1))),
        )
        .await;
    }
    let mut out = record("d5", atexo(State::Validated, Some(1)));
    out.in_perimeter = false;
    l.accept(inbound("h5", out), &p()).await.expect("accepted");
    let mut pending = l
        .pending(AGORA, Duration::ZERO, 100)
        .await
        .expect("pending");
    pending.sort();
    assert_eq!(pending, vec!["d1", "d2", "d3", "d4"]);
    assert_eq!(
        l.pending(AGORA, Duration::ZERO, 2)
            .await
            .expect("pending")
            .len(),
        2
    );
    assert!(l
        .pending(AGORA, Duration::ZERO, 0)
        .await
        .expect("pending")
        .is_empty());
    assert!(l
        .pending("other", Duration::ZERO, 100)
        .await
        .expect("pending")
        .is_empty());
    // Recently touched dossiers are left alone (their own task is on its way).
    assert!(l
        .pending(AGORA, Duration::from_secs(3600), 100)
        .await
        .expect("pending")
        .is_empty());

    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[])
        .await
        .expect("s");
    l.settle_delivery("d2", AGORA, DeliveryStatus::Incomplete, 1, &[])
        .await
        .expect("s");
    l.dead_letter(
        "d3",
        AGORA,
        &DeadReason::Irreconcilable { detail: "x".into() },
    )
    .await
    .expect("d");
    assert_eq!(
        l.pending(AGORA, Duration::ZERO, 100)
            .await
            .expect("pending"),
        vec!["d4"]
    );
}

/// An ATEXO record of `state` on the session (`formation`, `action`, `session`).
fn on_session(state: State, formation: Option<&str>, action: &str, session: &str) -> Dossier {
    let mut d = atexo(state, Some(1));
    d.training.numero_formation = formation.map(str::to_string);
    d.training.numero_action = Some(action.to_string());
    d.training.numero_session = session.to_string();
    d
}

fn session(f: &str, a: &str, s: &str) -> passerelle_adapters::pole_emploi::SessionRef {
    passerelle_adapters::pole_emploi::SessionRef {
        numero_formation: f.into(),
        numero_action: a.into(),
        numero_session: s.into(),
    }
}

pub async fn sessions_of_open_in_perimeter_dossiers(l: Arc<dyn Ledger>) {
    let open = [
        State::Prescribed,
        State::Registered,
        State::Validated,
        State::Entered,
    ];
    assert!(l.sessions(&open).await.expect("sessions").is_empty());
    // Two dossiers of one session: listed once. `_` sorts before letters in byte order only.
    let s1 = on_session(State::Validated, Some("20_A"), "20_B", "S1");
    accept(&*l, "1", record("d1", s1.clone())).await;
    let mut other_trainee = s1;
    other_trainee.trainee.nir = Nir::new("269054958815780");
    accept(&*l, "2", record("d2", other_trainee)).await;
    let s0 = on_session(State::Registered, Some("20_A"), "20_B", "S0");
    backfill(&*l, "3", record("d3", s0)).await;
    let sorted = on_session(State::Entered, Some("20_A"), "20_Ba", "S9");
    accept(&*l, "4", record("d4", sorted)).await;
    // Out of perimeter, closed (settled), or lacking a number: not polled.
    let mut excluded = record(
        "d5",
        on_session(State::Validated, Some("20_X"), "20_X", "S5"),
    );
    excluded.in_perimeter = false;
    l.accept(inbound("5", excluded), &p())
        .await
        .expect("accepted");
    accept(
        &*l,
        "6",
        record("d6", on_session(State::Settled, Some("20_Y"), "20_Y", "S6")),
    )
    .await;
    accept(
        &*l,
        "7",
        record("d7", on_session(State::Validated, None, "20_Z", "S7")),
    )
    .await;

    let listed = l.sessions(&open).await.expect("sessions");
    assert_eq!(
        listed,
        vec![
            session("20_A", "20_B", "S0"),
            session("20_A", "20_B", "S1"),
            session("20_A", "20_Ba", "S9"),
        ]
    );
    // The states asked for are the filter.
    assert_eq!(
        l.sessions(&[State::Settled]).await.expect("sessions"),
        vec![session("20_Y", "20_Y", "S6")]
    );
    assert!(l.sessions(&[]).await.expect("sessions").is_empty());

    // A dossier that moves on leaves the list with its state; one that enters the perimeter joins.
    accept(
        &*l,
        "8",
        record("d4", {
            let mut d = on_session(State::Exited, Some("20_A"), "20_Ba", "S9");
            d.sources[0].version = Some(2);
            d.exit = Some(passerelle_adapters::canonical::Exit {
                date: date(2019, 12, 20),
                reason: passerelle_adapters::canonical::ExitReason::End,
                result: None,
                hours_done: None,
            });
            d
        }),
    )
    .await;
    let mut corrected = on_session(State::Validated, Some("20_X"), "20_X", "S5");
    corrected.sources[0].version = Some(2);
    accept(&*l, "9", record("d5", corrected)).await;
    assert_eq!(
        l.sessions(&open).await.expect("sessions"),
        vec![
            session("20_A", "20_B", "S0"),
            session("20_A", "20_B", "S1"),
            session("20_X", "20_X", "S5"),
        ]
    );
}

/// The returns outbox: a return is written with AGORA's answer or not at all, claimed by one
/// sender at a time, claimed again when its claim lapses or its post is to be retried, and never
/// again once sent or refused.
pub async fn returns_outbox_is_written_with_the_answer_and_claimed_once(l: Arc<dyn Ledger>) {
    use crate::ledger::outbox::{PendingReturn, ReturnAttempt, ReturnStatus};
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let call = |n: u32| OperationRecord {
        operation: Operation::Create,
        status: Some(201),
        outcome: "created".into(),
        numero_agora: Some(format!("AG-{n}")),
        at: crate::ledger::stored::now(),
        replay_id: None,
    };
    let ret = |n: u32| PendingReturn {
        return_id: format!("{:08}-r", n),
        atexo_dossier: "PDL-1".into(),
        numero_agora: Some(format!("AG-{n}")),
        etat: Some("CREE".into()),
        anomaly_codes: if n == 2 {
            vec!["AG-CERTIF".into()]
        } else {
            vec![]
        },
        body: format!("<retourAgora n=\"{n}\"/>"),
    };
    let present = Delivered::Present {
        numero_agora: "AG-1".into(),
        state: AgoraState::Cree,
    };
    l.record_operation("d1", AGORA, &call(1), &present, Some(&ret(1)))
        .await
        .expect("recorded");
    // An answer that cannot be recorded leaves no return behind.
    l.record_operation("nope", AGORA, &call(9), &present, Some(&ret(9)))
        .await
        .expect_err("no such delivery");
    assert!(l.returns_of("nope").await.unwrap().is_empty());
    let rows = l.returns_of("d1").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, ReturnStatus::Pending);
    assert_eq!(rows[0].numero_agora.as_deref(), Some("AG-1"));
    assert_eq!(rows[0].etat.as_deref(), Some("CREE"));

    let claim = Duration::from_secs(60);
    let due = l.claim_returns(10, claim).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].return_id, ret(1).return_id);
    assert_eq!(due[0].body, ret(1).body);
    assert_eq!(due[0].dossier_id, "d1");
    assert!(
        l.claim_returns(10, claim).await.unwrap().is_empty(),
        "claimed"
    );
    // A post to retry comes back when due, with its attempt counted.
    l.settle_return(
        &due[0].return_id,
        &ReturnAttempt::Retry {
            error: "HTTP 503".into(),
            next: chrono::Utc::now() - chrono::Duration::seconds(1),
        },
    )
    .await
    .unwrap();
    let again = l.claim_returns(10, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    // A claim that lapsed (its sender died) is claimed again.
    let lapsed = l.claim_returns(10, claim).await.unwrap();
    assert_eq!(lapsed.len(), 1);
    l.settle_return(&lapsed[0].return_id, &ReturnAttempt::Sent)
        .await
        .unwrap();
    let rows = l.returns_of("d1").await.unwrap();
    assert_eq!(rows[0].status, ReturnStatus::Sent);
    assert_eq!(rows[0].attempts, 2);
    assert!(rows[0].sent_at.is_some());
    // Settling it again (a second sender's late answer) changes nothing.
    l.settle_return(
        &lapsed[0].return_id,
        &ReturnAttempt::Refused("HTTP 400".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        l.returns_of("d1").await.unwrap()[0].status,
        ReturnStatus::Sent
    );
    assert!(l
        .claim_returns(10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    // Refused for good: kept, never claimed again.
    l.record_operation("d1", AGORA, &call(2), &present, Some(&ret(2)))
        .await
        .unwrap();
    let due = l.claim_returns(10, claim).await.unwrap();
    l.settle_return(
        &due[0].return_id,
        &ReturnAttempt::Refused("HTTP 400".into()),
    )
    .await
    .unwrap();
    assert!(l
        .claim_returns(10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let rows = l.returns_of("d1").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].status, ReturnStatus::Refused);
    assert_eq!(rows[1].anomaly_codes, vec!["AG-CERTIF".to_string()]);

    // Senders claiming at once share the returns: each claimed by exactly one.
    for n in 10..40 {
        l.record_operation("d1", AGORA, &call(n), &present, Some(&ret(n)))
            .await
            .unwrap();
    }
    let claims = futures_util::future::join_all((0..4).map(|_| {
        let l = l.clone();
        async move { l.claim_returns(8, claim).await.unwrap() }
    }))
    .await;
    let mut ids: Vec<String> = claims.into_iter().flatten().map(|d| d.return_id).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "a return claimed twice");
    assert_eq!(total, 30);
}
