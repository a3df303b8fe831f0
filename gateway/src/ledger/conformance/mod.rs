//! The ledger's conformance suite: one set of scenarios, run against both backends.
//!
//! Each scenario is an async function taking a fresh, empty ledger. The macro at the bottom
//! instantiates every scenario twice, in `conformance::sqlite` (a temporary file) and in
//! `conformance::postgres` (a fresh database `passerelle_t_<uuid>` on 127.0.0.1:5433, dropped after
//! the test, whether it passed or not). PostgreSQL being unreachable fails the test, never skips it:
//! `bash tests/services.sh` starts it; `PASSERELLE_TEST_POSTGRES_URL` points elsewhere (a URL whose
//! user may create databases; its database part is replaced).
//!
//! The scenarios live by role, as the backends' code does: `intake`, `batches` (messages of
//! several records), `deliveries`, `leases`, `dead_letters`, `lots`, `checkpoints` and `search`.
//! This module keeps the builders and helpers several of them use, the harness and the macro.

#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, Utc};
use passerelle_adapters::canonical::{
    Dossier, Entry, Funding, Nir, Personal, Session, SourceRef, State, System, Trainee, Training,
};
use passerelle_adapters::merge::Precedence;
use passerelle_adapters::planner::Operation;

use super::{Flow, Inbound, InboundRecord, Ledger, OperationRecord};

mod batches;
mod checkpoints;
mod dead_letters;
mod deliveries;
mod intake;
mod leases;
mod lots;
mod search;

use batches::{
    a_dossier_named_twice_in_one_message, concurrent_accepts_on_a_new_dossier,
    concurrent_identical_payloads, every_refused_record_is_reported, one_message_many_dossiers,
    one_message_naming_a_dossier_twice_equals_its_records_one_by_one,
    refused_records_in_a_batch_store_nothing,
};
use checkpoints::{checkpoints_round_trip, purge_payloads_by_age};
use dead_letters::{
    dead_letters_filter_and_replay, new_version_revives_a_dead_dossier,
    replay_lineage_links_the_attempts, replay_matching_replays_what_the_filter_selects,
};
use deliveries::{
    failures_count_attempts, operations_and_delivered_round_trip, out_of_perimeter_status,
    pending_lists_owed_dossiers, returns_outbox_is_written_with_the_answer_and_claimed_once,
    sessions_of_open_in_perimeter_dossiers, settling_an_older_version_leaves_it_pending,
};
use intake::{
    a_ledger_holding_dossiers_never_gets_a_new_salt, accept_then_duplicate_payload,
    behind_state_is_kept, changed_and_desired_version, concurrent_first_starts_agree_on_one_salt,
    health_answers, identity_salt_is_created_once_and_guarded, older_source_version_is_ignored,
    record_without_source_is_refused, refused_transition_stores_nothing,
    two_sources_merge_into_one_dossier, unknown_dossier_reads_empty,
    unreadable_messages_are_kept_once_per_item,
};
use leases::{
    concurrent_leases_have_one_winner, fenced_writes_need_the_lease_held_and_unexpired,
    lease_expiry_renewal_and_release, one_replica_runs_a_singleton_and_the_retention_purge_repeats,
    the_sweeper_republishes_a_lost_task_once_per_quiet_period,
};
use lots::{
    backfill_reports_are_kept_and_listed_newest_first,
    claim_lot_takes_claimable_dossiers_oldest_first, lot_and_input_progress_for_the_console,
    lots_round_trip, settle_lot_settles_each_line,
};
use search::search_finds_by_identifier_and_filters;

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

// ---------------------------------------------------------------------------------------------
// Harness.

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
