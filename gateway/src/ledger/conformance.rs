//! The ledger's conformance suite: one set of scenarios, run against both backends.
//!
//! Each scenario is an async function taking a fresh, empty ledger. The macro at the bottom
//! instantiates every scenario twice, in `conformance::sqlite` (a temporary file) and in
//! `conformance::postgres` (a fresh database `passerelle_t_<uuid>` on 127.0.0.1:5432, dropped after
//! the test, whether it passed or not). PostgreSQL being unreachable fails the test, never skips it:
//! `bash tests/services.sh` starts it; `PASSERELLE_TEST_POSTGRES_URL` points elsewhere (a URL whose
//! user may create databases; its database part is replaced).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use passerelle_adapters::agora::model::Anomaly;
use passerelle_adapters::canonical::{
    Dossier, Entry, Funding, Nir, Personal, Session, SourceRef, State, System, Trainee, Training,
};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::{AgoraState, Delivered, Operation};
use passerelle_adapters::violation::Rule;
use passerelle_adapters::Violation;

use super::{
    DeadLetterFilter, DeadReason, DeliveryStatus, Flow, Inbound, InboundRecord, Lease, Ledger,
    LedgerError, OperationRecord, AGORA,
};

// ---------------------------------------------------------------------------------------------
// Builders: single-source canonical records of one trainee on one session (as the adapters
// decode them), after adapters/src/merge/tests.rs.

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn base(system: System, id: &str, state: State) -> Dossier {
    Dossier {
        sources: vec![SourceRef {
            system,
            id: id.into(),
            version: None,
            updated_on: None,
        }],
        state,
        dispositif: None,
        category: None,
        programme: None,
        consultation: None,
        trainee: Trainee {
            nir: Nir::new("1850775123456"),
            birth_name: None,
            usage_name: None,
            first_names: None,
            sex: None,
            birth_date: None,
            pole_emploi_id: None,
            postal_code: None,
            commune_insee: None,
        },
        training: Training {
            numero_formation: None,
            numero_action: None,
            numero_session: "1330305".into(),
            title: None,
            formacode: None,
            certification: None,
        },
        provider: None,
        session: None,
        entry: None,
        exit: None,
        fundings: vec![],
        cancellation: None,
        refusal: None,
        orientation: None,
        registration: None,
    }
}

/// An ATEXO SEM record at `version` (ATEXO's counter).
fn atexo(state: State, version: Option<u64>) -> Dossier {
    let mut d = base(System::AtexoSem, "PDL-2019-000123", state);
    d.sources[0].version = version;
    d.trainee.nir = Nir::new("185077512345608");
    d.trainee.birth_name = Some(Personal::new("DUPONT".into()));
    d.training.title = Some("Visa métiers".into());
    d.session = Some(Session {
        start: date(2019, 9, 2),
        end: date(2019, 12, 20),
        hours_centre: Some(420),
        hours_company: Some(140),
    });
    d.fundings = vec![Funding {
        funder: 2,
        committed_cents: Some(452_000),
        realised_cents: None,
        settled_cents: None,
    }];
    if matches!(state, State::Entered | State::Exited) {
        d.entry = Some(Entry {
            date: date(2019, 9, 2),
        });
    }
    d
}

fn pole_emploi_entered() -> Dossier {
    let mut d = base(System::PoleEmploi, "INS-1", State::Entered);
    d.entry = Some(Entry {
        date: date(2019, 9, 3),
    });
    d.session = Some(Session {
        start: date(2019, 9, 1),
        end: date(2019, 12, 1),
        hours_centre: None,
        hours_company: None,
    });
    d
}

fn ouiform(state: State) -> Dossier {
    let mut d = base(System::Ouiform, "OF-2019-000042", state);
    d.training.title = Some("Titre OUIFORM".into());
    d.fundings = vec![Funding {
        funder: 4,
        committed_cents: None,
        realised_cents: None,
        settled_cents: None,
    }];
    d
}

fn record(dossier_id: &str, record: Dossier) -> InboundRecord {
    InboundRecord {
        dossier_id: dossier_id.into(),
        record,
        in_perimeter: true,
    }
}

/// A message of one record; the payload hash stands for the body's digest.
fn inbound(hash: &str, rec: InboundRecord) -> Inbound {
    let system = rec.record.sources[0].system;
    Inbound {
        system,
        flow: Flow::Sync,
        payload_hash: hash.into(),
        masked_payload: Some(b"{\"nir\":\"1*************\"}".to_vec()),
        request_id: Some(format!("req-{hash}")),
        records: vec![rec],
    }
}

fn p() -> Precedence {
    Precedence::default()
}

async fn accept(l: &dyn Ledger, hash: &str, rec: InboundRecord) -> super::Accepted {
    l.accept(inbound(hash, rec), &p()).await.expect("accepted")
}

async fn row(l: &dyn Ledger, id: &str) -> super::DossierRow {
    l.dossier(id).await.expect("readable").expect("exists")
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

pub async fn health_answers(l: Arc<dyn Ledger>) {
    l.health().await.expect("healthy");
}

pub async fn accept_then_duplicate_payload(l: Arc<dyn Ledger>) {
    let first = accept(&*l, "h1", record("d1", atexo(State::Validated, Some(1)))).await;
    assert!(!first.duplicate);
    assert_eq!(first.dossiers.len(), 1);
    assert!(first.dossiers[0].changed);
    assert_eq!(first.dossiers[0].desired_version, 1);

    let r = row(&*l, "d1").await;
    assert_eq!(r.desired_version, 1);
    assert_eq!(r.desired.state, State::Validated);
    assert_eq!(r.sources.len(), 1);
    assert_eq!(r.flow, Flow::Sync);
    assert!(r.in_perimeter);
    assert_eq!(r.delivery.destination, AGORA);
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert_eq!(r.delivery.delivered, Delivered::Unknown);
    assert_eq!(r.delivery.attempts, 0);
    assert_eq!(
        r.desired.trainee.nir.expose(),
        "185077512345608",
        "the full NIR is kept: the ledger is the system of record"
    );

    // The same body again (even with a different request): same message, nothing changes.
    let mut again = inbound("h1", record("d1", atexo(State::Entered, Some(2))));
    again.request_id = Some("another".into());
    let second = l.accept(again, &p()).await.expect("accepted");
    assert!(second.duplicate);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.dossiers.len(), 1);
    assert_eq!(second.dossiers[0].dossier_id, "d1");
    assert!(!second.dossiers[0].changed);
    assert_eq!(second.dossiers[0].desired_version, 1);
    assert_eq!(row(&*l, "d1").await, r, "a duplicate changes nothing");

    let journal = l.journal("d1").await.expect("journal");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].message_id, first.message_id);
    assert_eq!(journal[0].system, System::AtexoSem);
    assert_eq!(journal[0].flow, Flow::Sync);
    assert_eq!(journal[0].payload_hash, "h1");
    assert_eq!(journal[0].dossier_ids, vec!["d1".to_string()]);
    assert_eq!(journal[0].request_id.as_deref(), Some("req-h1"));

    // The same hash from another system is another message.
    let other = l
        .accept(
            inbound("h1", record("d1", ouiform(State::Registered))),
            &p(),
        )
        .await
        .expect("accepted");
    assert!(!other.duplicate);
    assert_ne!(other.message_id, first.message_id);
}

pub async fn older_source_version_is_ignored(l: Arc<dyn Ledger>) {
    let mut v5 = atexo(State::Entered, Some(5));
    v5.training.title = Some("version 5".into());
    accept(&*l, "v5", record("d1", v5)).await;

    let mut v3 = atexo(State::Validated, Some(3));
    v3.training.title = Some("version 3".into());
    let a = accept(&*l, "v3", record("d1", v3)).await;
    assert!(!a.duplicate);
    assert!(!a.dossiers[0].changed, "an older ATEXO version is stale");
    assert_eq!(a.dossiers[0].desired_version, 1);
    let r = row(&*l, "d1").await;
    assert_eq!(r.desired.training.title.as_deref(), Some("version 5"));
    assert_eq!(r.sources[0].sources[0].version, Some(5));
    assert_eq!(
        l.journal("d1").await.expect("journal").len(),
        2,
        "the stale message is journalled all the same"
    );

    // The same version replaces (a correction), and so does a newer one.
    let mut v5b = atexo(State::Entered, Some(5));
    v5b.training.title = Some("version 5 corrected".into());
    let a = accept(&*l, "v5b", record("d1", v5b)).await;
    assert!(a.dossiers[0].changed);
    assert_eq!(a.dossiers[0].desired_version, 2);

    let mut v6 = atexo(State::Entered, Some(6));
    v6.training.title = Some("version 6".into());
    let a = accept(&*l, "v6", record("d1", v6)).await;
    assert_eq!(a.dossiers[0].desired_version, 3);

    // A record without version always replaces.
    let mut unversioned = atexo(State::Entered, None);
    unversioned.training.title = Some("no version".into());
    let a = accept(&*l, "nv", record("d1", unversioned)).await;
    assert!(a.dossiers[0].changed);
    let r = row(&*l, "d1").await;
    assert_eq!(r.desired.training.title.as_deref(), Some("no version"));
    assert_eq!(r.desired_version, 4);
}

pub async fn two_sources_merge_into_one_dossier(l: Arc<dyn Ledger>) {
    accept(&*l, "o", record("d1", ouiform(State::Registered))).await;
    let a = accept(&*l, "a", record("d1", atexo(State::Validated, Some(1)))).await;
    assert!(a.dossiers[0].changed);
    assert_eq!(a.dossiers[0].desired_version, 2);
    let r = row(&*l, "d1").await;
    let mut systems: Vec<System> = r.sources.iter().map(|s| s.sources[0].system).collect();
    systems.sort();
    assert_eq!(systems, vec![System::AtexoSem, System::Ouiform]);
    assert_eq!(r.desired.state, State::Validated);
    assert_eq!(r.desired.sources.len(), 2);
    assert_eq!(
        r.desired.training.title.as_deref(),
        Some("Visa métiers"),
        "ATEXO SEM owns the offer"
    );
    assert_eq!(r.desired.fundings[0].funder, 2, "ATEXO SEM owns funding");
    // Same result as merging in memory.
    let expected = passerelle_adapters::merge::merge(
        &[ouiform(State::Registered), atexo(State::Validated, Some(1))],
        &p(),
    )
    .expect("merges")
    .dossier;
    assert_eq!(r.desired, expected);
}

pub async fn behind_state_is_kept(l: Arc<dyn Ledger>) {
    accept(&*l, "pe", record("d1", pole_emploi_entered())).await;
    // ATEXO SEM says validated, with news for the rest (its session, funding, title): the
    // state stays entered, the rest is taken.
    let a = accept(&*l, "a", record("d1", atexo(State::Validated, Some(1)))).await;
    assert!(a.dossiers[0].changed);
    let r = row(&*l, "d1").await;
    assert_eq!(
        r.desired.state,
        State::Entered,
        "stale state news is ignored"
    );
    assert_eq!(r.desired.training.title.as_deref(), Some("Visa métiers"));
    assert_eq!(
        r.desired.session.as_ref().map(|s| s.start),
        Some(date(2019, 9, 2))
    );
    assert_eq!(r.desired_version, 2);

    // One source going back: ATEXO SEM said entered (version 2), then validated (version 3),
    // with a new title. The merge alone says validated; the dossier stays entered, title taken.
    accept(&*l, "b", record("d2", atexo(State::Entered, Some(2)))).await;
    let mut back = atexo(State::Validated, Some(3));
    back.training.title = Some("titre rectifié".into());
    let a = accept(&*l, "c", record("d2", back)).await;
    assert!(a.dossiers[0].changed);
    assert_eq!(a.dossiers[0].desired_version, 2);
    let r = row(&*l, "d2").await;
    assert_eq!(
        r.desired.state,
        State::Entered,
        "Behind: the previous state is kept"
    );
    assert_eq!(r.desired.training.title.as_deref(), Some("titre rectifié"));
    assert_eq!(
        r.sources[0].state,
        State::Validated,
        "the source record itself is stored as received"
    );
    // The same record again (another body, same version) changes nothing. (A new ATEXO version
    // with the same content would: the canonical dossier names its sources' versions.)
    let mut back = atexo(State::Validated, Some(3));
    back.training.title = Some("titre rectifié".into());
    let a = accept(&*l, "d", record("d2", back)).await;
    assert!(!a.dossiers[0].changed);
}

pub async fn refused_transition_stores_nothing(l: Arc<dyn Ledger>) {
    accept(&*l, "a", record("d1", atexo(State::Entered, Some(1)))).await;
    let before = row(&*l, "d1").await;
    let journal_before = l.journal("d1").await.expect("journal");

    // Entered → cancelled is not allowed (cancellation comes before entry). The message also
    // names a second, new dossier: nothing of it is stored either.
    let mut msg = inbound("bad", record("d2", ouiform(State::Registered)));
    msg.system = System::AtexoSem;
    msg.records = vec![
        record("d2", atexo(State::Validated, Some(1))),
        record("d1", atexo(State::Cancelled, Some(2))),
    ];
    let err = l.accept(msg, &p()).await.expect_err("refused");
    match err {
        LedgerError::Rejected(v) => {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].rule, Rule::LifecycleTransition);
            assert!(!v[0].detail.contains("185077"), "no NIR in a violation");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(row(&*l, "d1").await, before);
    assert!(l.dossier("d2").await.expect("readable").is_none());
    assert_eq!(l.journal("d1").await.expect("journal"), journal_before);
    assert!(l.journal("d2").await.expect("journal").is_empty());

    // Nothing was journalled: the same payload, corrected, is not a duplicate.
    let retry = l
        .accept(
            inbound("bad", record("d1", atexo(State::Exited, Some(2)))),
            &p(),
        )
        .await
        .expect("accepted");
    assert!(!retry.duplicate);
}

pub async fn changed_and_desired_version(l: Arc<dyn Ledger>) {
    let a = accept(&*l, "1", record("d1", ouiform(State::Registered))).await;
    assert_eq!(
        (a.dossiers[0].changed, a.dossiers[0].desired_version),
        (true, 1)
    );

    // Another payload with the same content: not a duplicate, but nothing changed.
    let mut same = ouiform(State::Registered);
    same.sources[0].updated_on = None;
    let a = accept(&*l, "2", record("d1", same)).await;
    assert!(!a.duplicate);
    assert_eq!(
        (a.dossiers[0].changed, a.dossiers[0].desired_version),
        (false, 1)
    );

    // A change in a field that loses precedence to nobody: a new version.
    let mut titled = ouiform(State::Registered);
    titled.training.title = Some("Nouveau titre".into());
    let a = accept(&*l, "3", record("d1", titled)).await;
    assert_eq!(
        (a.dossiers[0].changed, a.dossiers[0].desired_version),
        (true, 2)
    );

    // ATEXO SEM arrives: its title wins; a new version.
    let a = accept(&*l, "4", record("d1", atexo(State::Validated, Some(1)))).await;
    assert_eq!(
        (a.dossiers[0].changed, a.dossiers[0].desired_version),
        (true, 3)
    );

    // OUIFORM changes its title again: the merged dossier keeps ATEXO's, but its sources list
    // still names OUIFORM's record only by reference: unchanged desired state, no new version,
    // while the source record is replaced.
    let mut retitled = ouiform(State::Registered);
    retitled.training.title = Some("Encore un titre".into());
    let a = accept(&*l, "5", record("d1", retitled)).await;
    assert_eq!(
        (a.dossiers[0].changed, a.dossiers[0].desired_version),
        (false, 3)
    );
    let r = row(&*l, "d1").await;
    let of = r
        .sources
        .iter()
        .find(|s| s.sources[0].system == System::Ouiform)
        .expect("OUIFORM record");
    assert_eq!(of.training.title.as_deref(), Some("Encore un titre"));
    assert_eq!(r.desired.training.title.as_deref(), Some("Visa métiers"));
    assert_eq!(r.desired_version, 3);

    // Delivered then changed: owed again.
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 3, &[])
        .await
        .expect("settled");
    assert_eq!(
        row(&*l, "d1").await.delivery.status,
        DeliveryStatus::Delivered
    );
    let a = accept(&*l, "6", record("d1", atexo(State::Entered, Some(2)))).await;
    assert_eq!(
        (a.dossiers[0].changed, a.dossiers[0].desired_version),
        (true, 4)
    );
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert_eq!(r.delivery.delivered_version, 3);

    // Incomplete then changed: owed again, and what it waited for is cleared.
    let waiting = vec![Violation::new(
        "/session",
        Rule::FieldRequired,
        "no session dates",
    )];
    l.settle_delivery("d1", AGORA, DeliveryStatus::Incomplete, 4, &waiting)
        .await
        .expect("settled");
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Incomplete);
    assert_eq!(r.delivery.waiting_for, waiting);
    accept(&*l, "7", record("d1", pole_emploi_entered())).await;
    let r = row(&*l, "d1").await;
    assert_eq!(r.desired_version, 5);
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert!(r.delivery.waiting_for.is_empty());

    // An unchanged message leaves a delivered dossier delivered.
    l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 5, &[])
        .await
        .expect("settled");
    let a = accept(&*l, "8", record("d1", pole_emploi_entered())).await;
    assert!(!a.dossiers[0].changed);
    assert_eq!(
        row(&*l, "d1").await.delivery.status,
        DeliveryStatus::Delivered
    );
}

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

pub async fn concurrent_leases_have_one_winner(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Validated, Some(1)))).await;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                let holder = format!("worker-{round}-{i}");
                let won = l
                    .try_lease("d1", &holder, Duration::from_secs(60))
                    .await
                    .expect("lease answered")
                    .is_held();
                (holder, won)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (holder, won) = t.await.expect("task");
            if won {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
        l.release("d1", &winners[0]).await.expect("released");
    }
    // A lease on a dossier the ledger does not know yet works too (one worker per dossier).
    assert!(l
        .try_lease("unknown", "w", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
}

pub async fn lease_expiry_renewal_and_release(l: Arc<dyn Ledger>) {
    assert!(l
        .try_lease("d1", "a", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    assert!(!l
        .try_lease("d1", "b", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    // The holder renews.
    assert!(l
        .try_lease("d1", "a", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    // Only the holder releases.
    l.release("d1", "b").await.expect("release");
    assert!(!l
        .try_lease("d1", "b", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    l.release("d1", "a").await.expect("release");
    assert!(l
        .try_lease("d1", "b", Duration::from_millis(200))
        .await
        .expect("lease")
        .is_held());
    assert!(!l
        .try_lease("d1", "c", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    // An expired lease is taken over, and the taker is told: the holder died mid-dossier.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::TakenOver
    );
    // A renewal, or a lease nobody held, is a plain acquisition.
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Acquired
    );
    l.release("d1", "c").await.expect("release");
    assert_eq!(
        l.try_lease("d1", "a", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Acquired
    );
    l.release("d1", "a").await.expect("release");
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Acquired
    );
    // A holder interrupted mid-dossier expires its own lease instead of releasing it: the next
    // holder is told the state is in doubt.
    assert!(l
        .try_lease("d1", "c", Duration::ZERO)
        .await
        .expect("lease")
        .is_held());
    assert_eq!(
        l.try_lease("d1", "a", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::TakenOver
    );
    l.release("d1", "a").await.expect("release");
    assert!(l
        .try_lease("d1", "c", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
    assert!(!l
        .try_lease("d1", "b", Duration::from_secs(60))
        .await
        .expect("lease")
        .is_held());
}

pub async fn operations_and_delivered_round_trip(l: Arc<dyn Ledger>) {
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let at = super::logic::now();
    let steps: Vec<(OperationRecord, Delivered)> = vec![
        (
            OperationRecord {
                operation: Operation::Search,
                status: Some(404),
                outcome: "not found".into(),
                numero_agora: None,
                at,
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
            },
            Delivered::Unknown,
        ),
    ];
    for (op, delivered) in &steps {
        l.record_operation("d1", AGORA, op, delivered)
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
        l.record_operation("d1", AGORA, &steps[0].0, &delivered)
            .await
            .expect("recorded");
        assert_eq!(row(&*l, "d1").await.delivery.delivered, delivered);
    }

    let err = l
        .record_operation("nope", AGORA, &steps[0].0, &Delivered::Absent)
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
    let ids = |v: Vec<super::DeadLetter>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
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

    // Replay: the dead letter stays, marked; the dossier is owed again with fresh attempts.
    assert_eq!(l.replay(&dl1).await.expect("replayed"), "d1");
    let r = row(&*l, "d1").await;
    assert_eq!(r.delivery.status, DeliveryStatus::Pending);
    assert_eq!(r.delivery.attempts, 0);
    assert_eq!(r.delivery.last_error, None);
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
    let replayed_at = all[0].replayed_at.expect("marked replayed");
    assert_eq!(all[0].id, dl1);
    assert_eq!(all[0].reason, rejected, "lineage kept");
    // Replaying twice keeps the first mark.
    assert_eq!(l.replay(&dl1).await.expect("replayed"), "d1");
    let again = l.dead_letters(&with_replayed).await.expect("l");
    assert_eq!(again[0].replayed_at, Some(replayed_at));

    let err = l.replay("no-such-id").await.expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
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

pub async fn purge_payloads_by_age(l: Arc<dyn Ledger>) {
    accept(&*l, "old", record("d1", atexo(State::Validated, Some(1)))).await;
    let mut none = inbound("nothing-kept", record("d2", ouiform(State::Registered)));
    none.masked_payload = None;
    l.accept(none, &p()).await.expect("accepted");
    tokio::time::sleep(Duration::from_millis(600)).await;
    accept(&*l, "new", record("d3", ouiform(State::Registered))).await;

    assert_eq!(
        l.purge_payloads(Duration::from_secs(3600))
            .await
            .expect("p"),
        0
    );
    assert_eq!(
        l.purge_payloads(Duration::from_millis(300))
            .await
            .expect("p"),
        1,
        "only the old payload (the one with no payload does not count)"
    );
    assert_eq!(
        l.purge_payloads(Duration::from_millis(300))
            .await
            .expect("p"),
        0
    );
    assert_eq!(l.purge_payloads(Duration::ZERO).await.expect("p"), 1);
    // The journal entries stay.
    assert_eq!(l.journal("d1").await.expect("j").len(), 1);
    // A purged message is still recognised as a duplicate.
    let a = accept(&*l, "old", record("d1", atexo(State::Validated, Some(1)))).await;
    assert!(a.duplicate);
}

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

pub async fn unknown_dossier_reads_empty(l: Arc<dyn Ledger>) {
    assert!(l.dossier("nope").await.expect("readable").is_none());
    assert!(l.journal("nope").await.expect("readable").is_empty());
    assert!(l
        .operations("nope", AGORA)
        .await
        .expect("readable")
        .is_empty());
    let err = l
        .dead_letter(
            "nope",
            AGORA,
            &DeadReason::Irreconcilable { detail: "x".into() },
        )
        .await
        .expect_err("unknown");
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
}

pub async fn record_without_source_is_refused(l: Arc<dyn Ledger>) {
    let mut d = ouiform(State::Registered);
    d.sources.clear();
    let mut msg = inbound("x", record("d1", ouiform(State::Registered)));
    msg.records = vec![record("d1", d)];
    let err = l.accept(msg, &p()).await.expect_err("refused");
    assert!(matches!(err, LedgerError::Rejected(_)), "{err:?}");
    assert!(l.dossier("d1").await.expect("readable").is_none());
}

// ---------------------------------------------------------------------------------------------
// Harness.

mod harness {
    use std::future::Future;
    use std::sync::Arc;

    use sqlx::Connection;

    use super::super::postgres::PostgresLedger;
    use super::super::sqlite::SqliteLedger;
    use super::super::{mask_url, Ledger};

    const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    pub async fn with_sqlite<F, Fut>(scenario: F)
    where
        F: FnOnce(Arc<dyn Ledger>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A missing sub-directory checks that connect creates it.
        let url = format!("sqlite://{}/data/ledger.db", dir.path().display());
        let ledger = SqliteLedger::connect(&url).await.expect("SQLite ledger");
        let ledger: Arc<dyn Ledger> = Arc::new(ledger);
        let outcome = tokio::spawn(scenario(ledger)).await;
        drop(dir);
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    /// Replaces the database of a PostgreSQL URL.
    fn with_database(url: &str, database: &str) -> String {
        let (head, query) = match url.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (url, None),
        };
        let after_scheme = head.find("://").map_or(0, |i| i + 3);
        let base = match head[after_scheme..].find('/') {
            Some(i) => &head[..after_scheme + i],
            None => head,
        };
        match query {
            Some(q) => format!("{base}/{database}?{q}"),
            None => format!("{base}/{database}"),
        }
    }

    pub async fn with_postgres<F, Fut>(scenario: F)
    where
        F: FnOnce(Arc<dyn Ledger>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let admin_url = std::env::var("PASSERELLE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES.to_string());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => panic!(
                "PostgreSQL is not reachable at {} ({e}). The ledger tests need it and never \
                 skip: start it with `bash tests/services.sh`, or set PASSERELLE_TEST_POSTGRES_URL \
                 to a server where this user may create databases{}.",
                mask_url(&admin_url),
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    " (CI=true)"
                } else {
                    ""
                }
            ),
        };
        let name = format!("passerelle_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE for the test run");
        let ledger = PostgresLedger::connect(&with_database(&admin_url, &name))
            .await
            .expect("PostgreSQL ledger");
        let shared: Arc<dyn Ledger> = Arc::new(ledger.clone());
        let outcome = tokio::spawn(scenario(shared)).await;
        ledger.close().await;
        let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
        dropped.expect("DROP DATABASE after the test run");
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }
}

macro_rules! conformance {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::harness::with_sqlite(super::$scenario).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::harness::with_postgres(super::$scenario).await;
                }
            )+
        }
    };
}

conformance!(
    health_answers,
    accept_then_duplicate_payload,
    older_source_version_is_ignored,
    two_sources_merge_into_one_dossier,
    behind_state_is_kept,
    refused_transition_stores_nothing,
    changed_and_desired_version,
    settling_an_older_version_leaves_it_pending,
    out_of_perimeter_status,
    concurrent_leases_have_one_winner,
    lease_expiry_renewal_and_release,
    operations_and_delivered_round_trip,
    failures_count_attempts,
    dead_letters_filter_and_replay,
    new_version_revives_a_dead_dossier,
    pending_lists_owed_dossiers,
    purge_payloads_by_age,
    one_message_many_dossiers,
    concurrent_accepts_on_a_new_dossier,
    concurrent_identical_payloads,
    unknown_dossier_reads_empty,
    record_without_source_is_refused,
);
