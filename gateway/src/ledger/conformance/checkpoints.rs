//! Scenarios of checkpoints and housekeeping: named checkpoints, and the purge of masked payloads.

use std::sync::Arc;
use std::time::Duration;

use passerelle_adapters::canonical::State;

use crate::ledger::Ledger;

use super::*;

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
