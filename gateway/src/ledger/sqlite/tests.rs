//! The SQLite ledger's own tests: its schema migrations on a ledger written by an older version,
//! and the stored texts its SQL spells out.

use std::borrow::Cow;
use std::str::FromStr;

use passerelle_adapters::canonical::State;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::super::conformance::{inbound, ouiform, p, record};
use super::SqliteLedger;
use crate::ledger::planning::DELIVERED_NOT_PRESENT;
use crate::ledger::DeliveryLedger;
use crate::ledger::IntakeLedger;
use crate::ledger::LotLedger;

/// A ledger written before the dossier sequence numbers keeps its journal, its operations, its
/// lots, its sources and its deliveries readable by dossier after the migrations (4 and 5),
/// and new dossiers number after the old.
#[tokio::test]
async fn the_sequence_migration_keeps_what_an_older_ledger_holds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let older = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::from_str(&url)
                .expect("url")
                .create_if_missing(true),
        )
        .await
        .expect("older ledger");
    let mut before = sqlx::migrate!("./migrations/sqlite");
    let seq = before
        .migrations
        .iter()
        .position(|m| m.description.contains("dossier seq"))
        .expect("the sequence migration");
    before.migrations = Cow::Owned(before.migrations[..seq].to_vec());
    before.run(&older).await.expect("older migrations");
    let t = "2025-01-01T00:00:00.000000Z";
    let source = serde_json::to_string(&record("d1", ouiform(State::Registered)).record)
        .expect("a source record");
    sqlx::raw_sql(&format!(
        "INSERT INTO dossiers (dossier_id, desired, desired_version, flow, in_perimeter, \
         created_at, updated_at) VALUES ('d1', '{source}', 1, 'sync', 1, '{t}', '{t}'), \
         ('d2', '{source}', 1, 'backfill', 1, '{t}', '{t}'); \
         INSERT INTO journal (message_id, system, flow, payload_hash, received_at) \
         VALUES ('m1', 'atexo-sem', 'backfill', 'h1', '{t}'); \
         INSERT INTO journal_dossiers (message_id, dossier_id, position) \
         VALUES ('m1', 'd2', 0), ('m1', 'd1', 1); \
         INSERT INTO operations (dossier_id, destination, operation, http_status, outcome, \
         numero_agora, at) VALUES ('d2', 'agora', 'search', 200, 'absent', NULL, '{t}'), \
         ('d1', 'agora', 'create', 201, 'created', 'A1', '{t}'), \
         ('d2', 'agora', 'create', 201, 'created', 'A2', '{t}'); \
         INSERT INTO lots (lot_key, destination, state, agora_lot, created_at, updated_at) \
         VALUES ('L1', 'agora', 'done', 'LOT1', '{t}', '{t}'); \
         INSERT INTO lot_members (lot_key, position, dossier_id, desired_version) \
         VALUES ('L1', 0, 'd2', 1), ('L1', 1, 'd1', 1); \
         INSERT INTO dossier_sources (dossier_id, system, source_version, in_perimeter, \
         record, received_at) VALUES ('d1', 'ouiform', 3, 1, '{source}', '{t}'), \
         ('d2', 'ouiform', 4, 1, '{source}', '{t}'); \
         INSERT INTO deliveries (dossier_id, destination, delivered, delivered_version, \
         status, attempts, waiting_for, updated_at, lot) \
         VALUES ('d1', 'agora', '{{\"kind\":\"unknown\"}}', 0, 'pending', 2, '[]', '{t}', NULL), \
         ('d2', 'agora', '{{\"kind\":\"unknown\"}}', 0, 'pending', 0, '[]', '{t}', 'L1');"
    ))
    .execute(&older)
    .await
    .expect("older rows");
    older.close().await;

    let ledger = SqliteLedger::connect(&url).await.expect("migrated ledger");
    let journal = ledger.journal("d1").await.expect("journal");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].dossier_ids, ["d2", "d1"]);
    let operations = ledger.operations("d2", "agora").await.expect("operations");
    let outcomes: Vec<&str> = operations.iter().map(|o| o.outcome.as_str()).collect();
    assert_eq!(outcomes, ["absent", "created"]);
    assert_eq!(operations[1].numero_agora.as_deref(), Some("A2"));
    let lot = ledger.lot("L1").await.expect("lot").expect("the lot");
    let members: Vec<&str> = lot.members.iter().map(|m| m.dossier_id.as_str()).collect();
    assert_eq!(members, ["d2", "d1"]);
    let rows = ledger
        .dossiers(&["d1".to_string(), "d2".to_string()])
        .await
        .expect("dossiers");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.sources.len(), 1, "{}: its source", row.dossier_id);
        assert_eq!(row.delivery.status, super::DeliveryStatus::Pending);
        let lot = (row.dossier_id == "d2").then_some("L1");
        assert_eq!(row.lot.as_deref(), lot, "{}", row.dossier_id);
    }
    let d1 = rows.iter().find(|r| r.dossier_id == "d1").expect("d1");
    assert_eq!(d1.delivery.attempts, 2);
    for table in [
        "dossiers",
        "journal_dossiers",
        "lot_members",
        "operations",
        "dossier_sources",
        "deliveries",
    ] {
        let column = if table == "dossiers" {
            "seq"
        } else {
            "dossier_seq"
        };
        let unnumbered: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE {column} IS NULL"
        ))
        .fetch_one(&ledger.pool)
        .await
        .expect("count");
        assert_eq!(unnumbered, 0, "{table}");
    }
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
            .fetch_all(&ledger.pool)
            .await
            .expect("indexes");
    for gone in [
        "journal_dossiers_by_dossier",
        "lot_members_by_dossier",
        "operations_by_dossier",
    ] {
        assert!(!indexes.iter().any(|i| i == gone), "{gone} is still there");
    }
    // Nothing but the dossiers themselves is keyed by the (random) dossier id any more.
    for table in ["deliveries", "dossier_sources"] {
        let leading: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT (SELECT name FROM pragma_index_info(l.name) WHERE seqno = 0) \
             FROM pragma_index_list('{table}') l"
        ))
        .fetch_all(&ledger.pool)
        .await
        .expect("index columns");
        assert!(!leading.is_empty(), "{table} has its keys");
        assert!(
            !leading.iter().any(|c| c == "dossier_id"),
            "{table} is still indexed by dossier id: {leading:?}"
        );
    }
    for kept in [
        "dossiers_by_seq",
        "journal_dossiers_by_seq",
        "lot_members_by_seq",
        "operations_by_seq",
    ] {
        assert!(indexes.iter().any(|i| i == kept), "{kept} is missing");
    }
    ledger
        .accept(
            inbound("h-new", record("d3", ouiform(State::Registered))),
            &p(),
        )
        .await
        .expect("a new dossier");
    let numbers: Vec<(String, i64)> =
        sqlx::query_as("SELECT dossier_id, seq FROM dossiers ORDER BY dossier_id")
            .fetch_all(&ledger.pool)
            .await
            .expect("numbers");
    assert_eq!(numbers[2].0, "d3");
    assert!(
        numbers[2].1 > numbers[0].1.max(numbers[1].1),
        "the new dossier numbers after the old: {numbers:?}"
    );
    assert_eq!(ledger.journal("d3").await.expect("journal").len(), 1);
}

#[test]
fn not_present_spells_the_stored_texts() {
    for text in DELIVERED_NOT_PRESENT {
        assert!(not_present!().contains(&format!("'{text}'")), "{text}");
    }
}
