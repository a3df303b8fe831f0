//! The ledger's conformance suite: one set of scenarios, run against both backends.
//!
//! Each scenario is an async function taking a fresh, empty ledger. The macro at the bottom
//! instantiates every scenario twice, in `conformance::sqlite` (a temporary file) and in
//! `conformance::postgres` (a fresh database `passerelle_t_<uuid>` on 127.0.0.1:5433, dropped after
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
    BackfillProgress, DeadLetterFilter, DeadReason, DeliveryStatus, Flow, Inbound, InboundRecord,
    Lease, Ledger, LedgerError, LotLine, LotMember, LotState, OperationRecord, AGORA,
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

pub(super) fn ouiform(state: State) -> Dossier {
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

pub(super) fn record(dossier_id: &str, record: Dossier) -> InboundRecord {
    InboundRecord {
        dossier_id: dossier_id.into(),
        record,
        in_perimeter: true,
    }
}

/// A message of one record; the payload hash stands for the body's digest.
pub(super) fn inbound(hash: &str, rec: InboundRecord) -> Inbound {
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

pub(super) fn p() -> Precedence {
    Precedence::default()
}

async fn accept(l: &dyn Ledger, hash: &str, rec: InboundRecord) -> super::Accepted {
    l.accept(inbound(hash, rec), &p()).await.expect("accepted")
}

/// A backfill message of one record.
async fn backfill(l: &dyn Ledger, hash: &str, rec: InboundRecord) -> super::Accepted {
    let mut msg = inbound(hash, rec);
    msg.flow = Flow::Backfill;
    l.accept(msg, &p()).await.expect("accepted")
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
    // A renewal says so: its holder kept the lease throughout. A lease nobody held is acquired.
    assert_eq!(
        l.try_lease("d1", "c", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Renewed
    );
    l.release("d1", "c").await.expect("release");
    assert_eq!(
        l.try_lease("d1", "a", Duration::from_secs(60))
            .await
            .expect("lease"),
        Lease::Acquired
    );
    l.release("d1", "a").await.expect("release");
    // Not a renewal for `c`: another held the lease in between (a lot runner that overran its
    // lease learns so, and stops).
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
    let mut call = search(super::logic::now());
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
    let ids = |v: &[super::Replayed]| {
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
    let strip = |dossiers: Vec<super::AcceptedDossier>| {
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
    let outcome = |dossiers: &[super::AcceptedDossier]| {
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

// --- The backfill's lots.

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

fn search(at: chrono::DateTime<Utc>) -> OperationRecord {
    OperationRecord {
        operation: Operation::Search,
        status: Some(200),
        outcome: "searched".into(),
        numero_agora: None,
        at,
        replay_id: None,
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
    let at = super::logic::now();
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

/// An unreadable registration is kept once however many polls see it, with its violations and
/// its masked item; a different one is a second row; filters narrow by system and last sighting.
pub async fn unreadable_messages_are_kept_once_per_item(l: Arc<dyn Ledger>) {
    let context = serde_json::json!({"numeroSession": "1330305"});
    let bad = super::Unreadable {
        system: System::PoleEmploi,
        context: context.clone(),
        masked_item: Some(serde_json::json!({"idInscription": "INS-1", "nirCertifie": "***"})),
        violations: vec![Violation::new(
            "/0/idInscription",
            Rule::SchemaPattern,
            "must match the pattern",
        )],
    };
    let before = Utc::now() - chrono::Duration::seconds(1);
    l.record_unreadable(&bad).await.expect("record");
    l.record_unreadable(&bad).await.expect("again");
    let whole = super::Unreadable {
        masked_item: None,
        violations: vec![Violation::new("", Rule::SchemaType, "must be an array")],
        ..bad.clone()
    };
    l.record_unreadable(&whole)
        .await
        .expect("record the whole answer");

    let rows = l.unreadable(None, None, 10).await.expect("list");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let item = rows
        .iter()
        .find(|r| r.masked_item.is_some())
        .expect("the item");
    assert_eq!(item.seen, 2);
    assert_eq!(item.system, System::PoleEmploi);
    assert_eq!(item.context, context);
    assert_eq!(item.violations, bad.violations);
    assert_eq!(item.masked_item, bad.masked_item);
    assert!(item.first_seen <= item.last_seen);
    assert_eq!(rows[0].masked_item, None, "the most recently seen first");

    assert_eq!(
        l.unreadable(Some(System::PoleEmploi), Some(before), 1)
            .await
            .expect("list")
            .len(),
        1,
        "limit"
    );
    assert!(l
        .unreadable(Some(System::Ouiform), None, 10)
        .await
        .expect("list")
        .is_empty());
    assert!(l
        .unreadable(None, Some(Utc::now() + chrono::Duration::hours(1)), 10)
        .await
        .expect("list")
        .is_empty());
}

pub async fn checkpoints_round_trip(l: Arc<dyn Ledger>) {
    assert_eq!(l.checkpoint("file-a").await.expect("read"), None);
    l.set_checkpoint("file-a", 5).await.expect("set");
    assert_eq!(l.checkpoint("file-a").await.expect("read"), Some(5));
    l.set_checkpoint("file-a", 12_000_000_000)
        .await
        .expect("set");
    assert_eq!(
        l.checkpoint("file-a").await.expect("read"),
        Some(12_000_000_000)
    );
    assert_eq!(l.checkpoint("file-b").await.expect("read"), None);
}

/// The Reprises page's reads: each lot with what became of its members (waiting for their line,
/// delivered, dead-lettered), newest first, done lots included; and each input file's checkpoint.
pub async fn lot_and_input_progress_for_the_console(l: Arc<dyn Ledger>) {
    use super::progress::FILE_CHECKPOINT_PREFIX;
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

// ---------------------------------------------------------------------------------------------
// Harness.

// ---------------------------------------------------------------------------------------------
// Identity: the salt of dossier ids, one per ledger.

fn salt_refused(r: Result<String, LedgerError>) -> String {
    match r {
        Err(LedgerError::Identity(problem)) => problem,
        other => panic!("expected an identity refusal, got {other:?}"),
    }
}

pub async fn identity_salt_is_created_once_and_guarded(l: Arc<dyn Ledger>) {
    use super::SaltOffer::{Configured, Generated};
    // The first start wins; later ones, generated or configured alike, get its salt.
    assert_eq!(
        l.identity_salt(&Generated("first".into())).await.unwrap(),
        "first"
    );
    assert_eq!(
        l.identity_salt(&Generated("second".into())).await.unwrap(),
        "first"
    );
    assert_eq!(
        l.identity_salt(&Configured("first".into())).await.unwrap(),
        "first"
    );
    // A replica configured with another salt refuses to start.
    let problem = salt_refused(l.identity_salt(&Configured("other".into())).await);
    assert!(problem.contains("differs"), "{problem}");
    assert_eq!(
        l.identity_salt(&Generated("third".into())).await.unwrap(),
        "first"
    );
}

pub async fn concurrent_first_starts_agree_on_one_salt(l: Arc<dyn Ledger>) {
    let starts: Vec<_> = (0..8)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(async move {
                l.identity_salt(&super::SaltOffer::Generated(format!("salt-{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut salts = BTreeSet::new();
    for s in starts {
        salts.insert(s.await.unwrap());
    }
    assert_eq!(salts.len(), 1, "{salts:?}");
}

pub async fn a_ledger_holding_dossiers_never_gets_a_new_salt(l: Arc<dyn Ledger>) {
    use super::SaltOffer::{Configured, Generated};
    accept(&*l, "h1", record("d1", atexo(State::Entered, Some(1)))).await;
    let problem = salt_refused(l.identity_salt(&Generated("fresh".into())).await);
    assert!(problem.contains("holds dossiers"), "{problem}");
    // The salt the dossiers were made with, given by the operator, is taken and kept.
    assert_eq!(
        l.identity_salt(&Configured("theirs".into())).await.unwrap(),
        "theirs"
    );
    assert_eq!(
        l.identity_salt(&Generated("fresh".into())).await.unwrap(),
        "theirs"
    );
}

mod harness {
    use std::future::Future;
    use std::sync::Arc;

    use sqlx::Connection;

    use super::super::postgres::PostgresLedger;
    use super::super::sqlite::SqliteLedger;
    use super::super::{mask_url, Ledger};

    /// tests/services.sh's own cluster (`tests/run.sh` sets `PASSERELLE_TEST_POSTGRES_URL` to it).
    const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5433/postgres";

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

/// The operators' search: by each identifier a system gave, by filters, in keyset pages.
pub async fn search_finds_by_identifier_and_filters(l: Arc<dyn Ledger>) {
    use super::search::{Cursor, SearchFilter};
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    accept(&*l, "2", record("d2", ouiform(State::Registered))).await;
    accept(&*l, "3", record("d3", pole_emploi_entered())).await;
    let created = OperationRecord {
        operation: Operation::Create,
        status: Some(201),
        outcome: "created".into(),
        numero_agora: Some("AG-000001".into()),
        at: super::logic::now(),
        replay_id: None,
    };
    let present = Delivered::Present {
        numero_agora: "AG-000001".into(),
        state: AgoraState::Cree,
    };
    l.record_operation("d1", AGORA, &created, &present, None)
        .await
        .unwrap();
    let reason = DeadReason::Exhausted {
        last_error: "503".into(),
        status: Some(503),
    };
    l.dead_letter("d2", AGORA, &reason).await.unwrap();

    let ids = |f: SearchFilter| {
        let l = l.clone();
        async move {
            let page = l.search(&f).await.unwrap();
            page.dossiers
                .into_iter()
                .map(|r| r.dossier_id)
                .collect::<BTreeSet<_>>()
        }
    };
    let all = || SearchFilter {
        limit: 50,
        ..SearchFilter::default()
    };
    let q = |q: &str| SearchFilter {
        q: Some(q.into()),
        ..all()
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        ids(q("PDL-2019-000123")).await,
        set(&["d1"]),
        "ATEXO reference"
    );
    assert_eq!(ids(q("OF-2019-000042")).await, set(&["d2"]), "OUIFORM id");
    assert_eq!(ids(q("INS-1")).await, set(&["d3"]), "idInscription");
    assert_eq!(ids(q("AG-000001")).await, set(&["d1"]), "AGORA number");
    assert_eq!(ids(q("d2")).await, set(&["d2"]), "dossier id");
    assert_eq!(ids(q("nothing")).await, set(&[]));
    let by_nir = SearchFilter {
        q_ids: vec!["d3".into(), "unknown".into()],
        ..q("185077512345608")
    };
    assert_eq!(ids(by_nir).await, set(&["d3"]), "the ids a NIR stands for");
    assert_eq!(
        ids(SearchFilter {
            state: Some(State::Registered),
            ..all()
        })
        .await,
        set(&["d2"])
    );
    assert_eq!(
        ids(SearchFilter {
            delivery: Some(DeliveryStatus::Dead),
            ..all()
        })
        .await,
        set(&["d2"])
    );
    assert_eq!(
        ids(SearchFilter {
            funder: Some(2),
            ..all()
        })
        .await,
        set(&["d1"])
    );
    assert_eq!(
        ids(SearchFilter {
            code: Some("http.503".into()),
            ..all()
        })
        .await,
        set(&["d2"])
    );
    assert_eq!(
        ids(SearchFilter {
            session: Some("1330305".into()),
            funder: Some(4),
            ..all()
        })
        .await,
        set(&["d2"])
    );
    let future = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(
        ids(SearchFilter {
            since: Some(future),
            ..all()
        })
        .await,
        set(&[])
    );
    assert_eq!(
        ids(SearchFilter {
            until: Some(future),
            ..all()
        })
        .await,
        set(&["d1", "d2", "d3"])
    );

    // Keyset pages of one: each dossier once, then no cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..4 {
        let page = l
            .search(&SearchFilter {
                limit: 1,
                cursor: cursor.clone(),
                ..all()
            })
            .await
            .unwrap();
        seen.extend(page.dossiers.iter().map(|r| r.dossier_id.clone()));
        match page.next {
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 3, "{seen:?}");

    let mut sessions = l.session_numbers().await.unwrap();
    sessions.sort();
    assert_eq!(sessions, ["1330305"]);
    let activity = l
        .activity(Utc::now() - chrono::Duration::hours(3))
        .await
        .unwrap();
    assert!(activity.len() >= 3, "{activity:?}");
    assert_eq!(activity.iter().map(|h| h.intake).sum::<u64>(), 3);
    assert_eq!(activity.iter().map(|h| h.deliveries).sum::<u64>(), 1);
    assert_eq!(activity.iter().map(|h| h.dead_letters).sum::<u64>(), 1);
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
    replay_lineage_links_the_attempts,
    replay_matching_replays_what_the_filter_selects,
    new_version_revives_a_dead_dossier,
    pending_lists_owed_dossiers,
    purge_payloads_by_age,
    one_message_many_dossiers,
    a_dossier_named_twice_in_one_message,
    refused_records_in_a_batch_store_nothing,
    concurrent_accepts_on_a_new_dossier,
    concurrent_identical_payloads,
    unknown_dossier_reads_empty,
    record_without_source_is_refused,
    one_message_naming_a_dossier_twice_equals_its_records_one_by_one,
    every_refused_record_is_reported,
    claim_lot_takes_claimable_dossiers_oldest_first,
    lots_round_trip,
    settle_lot_settles_each_line,
    checkpoints_round_trip,
    lot_and_input_progress_for_the_console,
    unreadable_messages_are_kept_once_per_item,
    sessions_of_open_in_perimeter_dossiers,
    identity_salt_is_created_once_and_guarded,
    concurrent_first_starts_agree_on_one_salt,
    a_ledger_holding_dossiers_never_gets_a_new_salt,
    search_finds_by_identifier_and_filters,
    returns_outbox_is_written_with_the_answer_and_claimed_once,
    backfill_reports_are_kept_and_listed_newest_first,
    one_replica_runs_a_singleton_and_the_retention_purge_repeats,
    fenced_writes_need_the_lease_held_and_unexpired,
    the_sweeper_republishes_a_lost_task_once_per_quiet_period,
);

/// The sweeper republishes a pending dossier whose task was lost, then not again until its quiet
/// period has passed (a backlog is not multiplied every round).
pub async fn the_sweeper_republishes_a_lost_task_once_per_quiet_period(l: Arc<dyn Ledger>) {
    use crate::startup::{sweep_round, SweepStamps};
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = crate::queue::connect("embedded", dir.path())
        .await
        .expect("queue");
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let quiet = Duration::from_millis(300);
    tokio::time::sleep(quiet).await;
    let mut stamps = SweepStamps::default();
    assert_eq!(sweep_round(&*l, &*queue, quiet, &mut stamps).await, 1);
    assert_eq!(
        sweep_round(&*l, &*queue, quiet, &mut stamps).await,
        0,
        "stamped: not again within the quiet period"
    );
    tokio::time::sleep(quiet).await;
    assert_eq!(
        sweep_round(&*l, &*queue, quiet, &mut stamps).await,
        1,
        "still pending after the quiet period: republished"
    );
}

/// Within a fenced run, a write succeeds only while its holder holds an unexpired lease; past it,
/// or once another runner took the lease, it fails with `LeaseLost` and writes nothing.
pub async fn fenced_writes_need_the_lease_held_and_unexpired(l: Arc<dyn Ledger>) {
    use super::fence::{scope, Fence};
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let call = OperationRecord {
        operation: Operation::Search,
        status: Some(404),
        outcome: "not found".into(),
        numero_agora: None,
        at: super::logic::now(),
        replay_id: None,
    };
    let fence = || Fence {
        key: "d1".into(),
        holder: "run-a".into(),
    };
    assert!(l
        .try_lease("d1", "run-a", Duration::from_millis(400))
        .await
        .unwrap()
        .is_held());
    scope(
        fence(),
        l.record_operation("d1", AGORA, &call, &Delivered::Absent, None),
    )
    .await
    .expect("held: written");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Expired, even though nobody took it yet.
    let lost = scope(
        fence(),
        l.settle_delivery("d1", AGORA, DeliveryStatus::Delivered, 1, &[]),
    )
    .await;
    assert!(
        matches!(lost, Err(LedgerError::LeaseLost { .. })),
        "{lost:?}"
    );
    assert_eq!(
        l.try_lease("d1", "run-b", Duration::from_secs(30))
            .await
            .unwrap(),
        Lease::TakenOver
    );
    for lost in [
        scope(
            fence(),
            l.record_operation("d1", AGORA, &call, &Delivered::Absent, None),
        )
        .await
        .map(|_| ()),
        scope(fence(), l.record_failure("d1", AGORA, "503"))
            .await
            .map(|_| ()),
        scope(
            fence(),
            l.dead_letter(
                "d1",
                AGORA,
                &DeadReason::Irreconcilable { detail: "x".into() },
            ),
        )
        .await
        .map(|_| ()),
    ] {
        assert!(
            matches!(lost, Err(LedgerError::LeaseLost { .. })),
            "{lost:?}"
        );
    }
    assert_eq!(
        l.operations("d1", AGORA).await.unwrap().len(),
        1,
        "nothing more written"
    );
    let row = l.dossier("d1").await.unwrap().expect("d1");
    assert_eq!(row.delivery.status, DeliveryStatus::Pending);
    assert_eq!(row.delivery.attempts, 0);
    // The new holder writes.
    scope(
        Fence {
            key: "d1".into(),
            holder: "run-b".into(),
        },
        l.record_failure("d1", AGORA, "503"),
    )
    .await
    .expect("run-b holds it");
}

/// A singleton (the sweeper, the poller, the purge) runs in one replica at a time; when that one
/// stops, another takes it over. The retention purge runs at once, then periodically.
pub async fn one_replica_runs_a_singleton_and_the_retention_purge_repeats(l: Arc<dyn Ledger>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let replica = |holder: &str| {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let single = crate::singleton::Singleton {
            ledger: l.clone(),
            name: "test",
            holder: holder.to_string(),
            lease: Duration::from_millis(900),
        };
        let (running, most, started) = (running.clone(), most.clone(), started.clone());
        let task = tokio::spawn(single.run(rx, move |mut rx| {
            let (running, most, started) = (running.clone(), most.clone(), started.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = rx.changed().await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        (stop, task)
    };
    let (stop_a, a) = replica("replica-a");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "nobody started it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (stop_b, b) = replica("replica-b");
    // Several lease periods: renewed by its holder, never taken by the other.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "one replica runs it");
    assert_eq!(running.load(Ordering::SeqCst), 1);
    // Whichever runs it stops: the other takes over.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    stop_a.send(true).expect("a");
    a.await.expect("a ends");
    while started.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.load(Ordering::SeqCst), 1, "b runs it");
    stop_b.send(true).expect("b");
    b.await.expect("b ends");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");

    // The purge: at once, then every period.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let purge = tokio::spawn(crate::singleton::retention_purge(
        l.clone(),
        Duration::from_millis(200),
        Duration::from_millis(100),
        rx,
    ));
    accept(&*l, "old", record("d1", atexo(State::Validated, Some(1)))).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        l.purge_payloads(Duration::from_millis(200))
            .await
            .expect("p"),
        0,
        "the periodic purge already purged the payload past its retention"
    );
    accept(&*l, "new", record("d2", ouiform(State::Registered))).await;
    assert_eq!(
        l.purge_payloads(Duration::from_secs(3_600))
            .await
            .expect("p"),
        0
    );
    stop.send(true).expect("stop");
    purge.await.expect("ends");
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

/// The returns outbox: a return is written with AGORA's answer or not at all, claimed by one
/// sender at a time, claimed again when its claim lapses or its post is to be retried, and never
/// again once sent or refused.
pub async fn returns_outbox_is_written_with_the_answer_and_claimed_once(l: Arc<dyn Ledger>) {
    use super::outbox::{PendingReturn, ReturnAttempt, ReturnStatus};
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    let call = |n: u32| OperationRecord {
        operation: Operation::Create,
        status: Some(201),
        outcome: "created".into(),
        numero_agora: Some(format!("AG-{n}")),
        at: super::logic::now(),
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
