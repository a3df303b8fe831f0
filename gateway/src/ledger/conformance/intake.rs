//! Scenarios of what comes in: one record accepted, merged, kept out or refused; the identity
//! salt; unreadable messages kept.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use passerelle_adapters::canonical::{State, System};
use passerelle_adapters::planner::Delivered;
use passerelle_adapters::violation::Rule;
use passerelle_adapters::Violation;

use crate::ledger::{DeadReason, DeliveryStatus, Flow, Ledger, LedgerError, AGORA};

use super::*;

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

/// An unreadable registration is kept once however many polls see it, with its violations and
/// its masked item; a different one is a second row; filters narrow by system and last sighting.
pub async fn unreadable_messages_are_kept_once_per_item(l: Arc<dyn Ledger>) {
    let context = serde_json::json!({"numeroSession": "1330305"});
    let bad = crate::ledger::Unreadable {
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
    let whole = crate::ledger::Unreadable {
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

fn salt_refused(r: Result<String, LedgerError>) -> String {
    match r {
        Err(LedgerError::Identity(problem)) => problem,
        other => panic!("expected an identity refusal, got {other:?}"),
    }
}

pub async fn identity_salt_is_created_once_and_guarded(l: Arc<dyn Ledger>) {
    use crate::ledger::SaltOffer::{Configured, Generated};
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
                l.identity_salt(&crate::ledger::SaltOffer::Generated(format!("salt-{i}")))
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
    use crate::ledger::SaltOffer::{Configured, Generated};
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
