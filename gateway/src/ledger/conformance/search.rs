//! Scenarios of the operators' search ([`crate::ledger::search`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use passerelle_adapters::canonical::State;
use passerelle_adapters::planner::{AgoraState, Delivered, Operation};

use crate::ledger::{DeadReason, DeliveryStatus, Ledger, OperationRecord, AGORA};

use super::*;

/// The operators' search: by each identifier a system gave, by filters, in keyset pages.
pub async fn search_finds_by_identifier_and_filters(l: Arc<dyn Ledger>) {
    use crate::ledger::search::{Cursor, SearchFilter};
    accept(&*l, "1", record("d1", atexo(State::Entered, Some(1)))).await;
    accept(&*l, "2", record("d2", ouiform(State::Registered))).await;
    accept(&*l, "3", record("d3", pole_emploi_entered())).await;
    let created = OperationRecord {
        operation: Operation::Create,
        status: Some(201),
        outcome: "created".into(),
        numero_agora: Some("AG-000001".into()),
        at: crate::ledger::stored::now(),
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
