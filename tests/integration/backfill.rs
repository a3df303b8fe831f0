//! The backfill (*reprise d'antériorité*) end to end: `passerelle backfill` runs as a child process
//! over a generated ATEXO SEM export, against a sandbox AGORA outside it (so AGORA survives the
//! kills). The report is checked against the generator's truth dossier by dossier, and AGORA
//! against the report: each accepted dossier once, in its state, no line ever sent twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use passerelle_adapters::planner::{self, Target};
use passerelle_sandbox::{
    AgoraConfig, Call, FaultKind, Faults, ForcedFault, RunningSandbox, Sandbox, SandboxConfig,
};
use passerelle_tests::generate::{self, GenOptions, Outcome, Truth};
use rand::{Rng, SeedableRng};

use crate::support::{gateway, Production};

/// The export the acceptance runs use (the issue asks for at least 100,000).
const DOSSIERS: usize = 100_000;

/// A generated export on disk and its truth.
struct Export {
    path: PathBuf,
    seed: u64,
    truth: Vec<Truth>,
}

fn export(dir: &Path, seed: u64, count: usize) -> Export {
    let path = dir.join(format!("export-{seed}.xml"));
    let file = std::fs::File::create(&path).expect("export file");
    let truth = generate::write_atexo_export(
        std::io::BufWriter::new(file),
        &GenOptions {
            seed,
            count,
            flow: passerelle_adapters::atexo_sem::Flow::Backfill,
            invalid_share: 0.05,
            out_of_perimeter_share: 0.10,
            before_2017_share: 0.03,
        },
    )
    .expect("generated export");
    Export { path, seed, truth }
}

/// What the report must say of a generated dossier.
fn expected_outcome(t: &Truth) -> (&'static str, Option<&'static str>) {
    match t.outcome {
        Outcome::Invalid(_) => ("invalid", None),
        Outcome::OutOfPerimeter(_) => ("out_of_perimeter", None),
        Outcome::Valid(state) => match planner::target(state) {
            Target::State(s) => ("accepted", Some(s.as_str())),
            Target::Nothing | Target::CancelIfPresent => ("nothing_owed", None),
        },
    }
}

/// `passerelle backfill` as a child process.
struct Backfill {
    env: Vec<(String, String)>,
    dir: PathBuf,
    runs: usize,
}

impl Backfill {
    /// `production`: the ledger and queue URLs; embedded under `dir` otherwise.
    fn new(dir: &Path, sandbox: &RunningSandbox, production: Option<(String, String)>) -> Backfill {
        let d = dir.display().to_string();
        let (ledger, queue) = production.unwrap_or_else(|| {
            (
                format!("sqlite://{d}/passerelle.db"),
                format!("embedded:{d}/queue.db"),
            )
        });
        let env = [
            ("DATA__DIR", d.clone()),
            ("LEDGER__URL", ledger),
            ("QUEUE__URL", queue),
            ("AGORA__BASE_URL", sandbox.agora_url()),
            ("AGORA__TOKEN", sandbox.agora_token().to_string()),
            ("RETRY__BASE_MS", "50".to_string()),
            ("RETRY__MAX_MS", "1000".to_string()),
            ("RETRY__MAX_ATTEMPTS", "30".to_string()),
            ("BACKFILL__POLL_INTERVAL_MS", "100".to_string()),
            // A killed run's lot leases must expire soon for the test to end soon.
            ("WORKER__LEASE_TTL_S", "3".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("PASSERELLE__{k}"), v))
        .collect();
        Backfill {
            env,
            dir: dir.to_path_buf(),
            runs: 0,
        }
    }

    fn with(mut self, key: &str, value: &str) -> Backfill {
        let key = format!("PASSERELLE__{key}");
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.to_string()));
        self
    }

    fn report_path(&self) -> PathBuf {
        self.dir.join("report.json")
    }

    fn spawn(&mut self, input: &Path, resume: bool) -> Child {
        self.spawn_with(input, if resume { &["--resume"] } else { &[] })
    }

    fn spawn_with(&mut self, input: &Path, args: &[&str]) -> Child {
        self.runs += 1;
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
                .expect("log file")
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway_process"));
        cmd.arg("backfill")
            .arg("--input")
            .arg(input)
            .arg("--report")
            .arg(self.report_path())
            .args(args);
        cmd.envs(self.env.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdout(log(&format!("stdout-{}", self.runs)))
            .stderr(log("backfill.log"))
            .spawn()
            .expect("passerelle backfill starts")
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stdout-{}", self.runs))).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("backfill.log")).unwrap_or_default()
    }

    async fn wait(&self, child: &mut Child, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let log = self.log();
                panic!(
                    "the backfill did not end within {within:?}; log tail:\n{}",
                    &log[log.len().saturating_sub(4000)..]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sandbox_config(faults: Faults) -> SandboxConfig {
    SandboxConfig {
        faults,
        agora: AgoraConfig {
            lot_polls_en_cours: 2,
            ..AgoraConfig::default()
        },
        ..SandboxConfig::default()
    }
}

/// Checks the JSON report against the truth (every dossier, its outcome, reason and number) and
/// AGORA against the report (each accepted dossier once, in its state; nothing else; no line sent
/// twice). Returns the report's entries as (id, outcome) for comparisons between runs.
fn check(export: &Export, report: &Path, sandbox: &RunningSandbox) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(report).expect("the JSON report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let entries = report["dossiers"].as_array().expect("dossiers");
    assert_eq!(
        entries.len(),
        export.truth.len(),
        "every input dossier once"
    );

    let agora: HashMap<String, String> = sandbox
        .agora_dossiers()
        .into_iter()
        .map(|d| (d.numero_agora.clone(), d.etat.as_str().to_string()))
        .collect();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut numbers = std::collections::HashSet::new();
    let mut summary = Vec::with_capacity(entries.len());
    for (t, e) in export.truth.iter().zip(entries) {
        let id = generate::dossier_id(export.seed, t.index);
        assert_eq!(e["id"], id.as_str(), "the report follows the input order");
        let (outcome, etat) = expected_outcome(t);
        assert_eq!(e["outcome"], outcome, "{id}: {e} (truth {:?})", t.outcome);
        *counts.entry(outcome).or_default() += 1;
        if let Some(etat) = etat {
            let numero = e["numero_agora"]
                .as_str()
                .expect("an accepted dossier has its number");
            assert_eq!(
                agora.get(numero).map(String::as_str),
                Some(etat),
                "{id}: AGORA holds {numero} in the wrong state"
            );
            assert!(
                numbers.insert(numero.to_string()),
                "{numero} reported twice"
            );
        }
        if let Outcome::Invalid(rule) = t.outcome {
            let errors = e["errors"]
                .as_array()
                .expect("an invalid dossier has its errors");
            assert!(
                errors.iter().any(|x| x["rule"] == rule.code()),
                "{id}: {rule:?} not among {errors:?}"
            );
        }
        summary.push((id, outcome.to_string()));
    }
    for (k, v) in &counts {
        assert_eq!(report["counts"][*k], *v, "count of {k}");
    }
    assert_eq!(report["counts"]["rejected"], 0);
    assert_eq!(
        agora.len(),
        numbers.len(),
        "AGORA holds exactly the accepted dossiers"
    );
    for c in sandbox.creations() {
        assert_eq!(c.created, 1, "a dossier created twice");
        assert_eq!(c.lot_lines_existing, 0, "a backfill line sent twice");
        assert_eq!(c.create_calls, 0, "the backfill creates through lots only");
    }
    summary
}

async fn straight_and_killed(production: Option<Production>, faults: Faults) {
    let _heavy = crate::support::heavy().await;
    let faulty = faults != Faults::none();
    let dir = tempfile::tempdir().expect("tempdir");
    let export = export(dir.path(), 7, DOSSIERS);
    let sandbox = Sandbox::start(sandbox_config(faults))
        .await
        .expect("sandbox");
    let urls = production
        .as_ref()
        .map(|p| (p.ledger_url.clone(), p.queue_url.clone()));
    if faulty {
        // Whatever the seed: at least one lot applied by AGORA whose answer is lost, which a
        // resumed run must find by searching, not send again.
        sandbox.fail_next(ForcedFault {
            call: Some(Call::AgoraLotSubmit),
            fault: FaultKind::Drop,
            applied: true,
        });
    }
    let mut backfill = Backfill::new(dir.path(), &sandbox, urls);
    // Three kills at random points: while reading, and twice while lots are in flight. The seed is
    // printed (PASSERELLE_TEST_SEED replays it).
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(crate::support::test_seed("backfill killed three times"));
    let lots_at = [rng.gen_range(1..3), rng.gen_range(4..6)];
    let mut child = backfill.spawn(&export.path, false);
    tokio::time::sleep(Duration::from_millis(rng.gen_range(1_500..4_000))).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "ended before the first kill:\n{}",
        backfill.log()
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for at in lots_at {
        let mut child = backfill.spawn(&export.path, true);
        let deadline = Instant::now() + Duration::from_secs(240);
        while sandbox.calls(Call::AgoraLotSubmit).len() < at {
            assert!(
                Instant::now() < deadline,
                "no lot submitted:\n{}",
                backfill.log()
            );
            assert!(
                child.try_wait().expect("wait").is_none(),
                "ended before a kill:\n{}",
                backfill.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
    let mut child = backfill.spawn(&export.path, true);
    let status = backfill.wait(&mut child, Duration::from_secs(600)).await;
    // 5 % invalid dossiers: not every owed dossier reached AGORA.
    assert_eq!(
        status.code(),
        Some(1),
        "{}\n{}",
        backfill.stdout(),
        backfill.log()
    );
    assert!(
        backfill.stdout().contains("accepted"),
        "{}",
        backfill.stdout()
    );
    check(&export, &backfill.report_path(), &sandbox);
    if faulty {
        // The faults did happen, some after their effect (a lot AGORA took while the answer was
        // lost): the resumed runs searched instead of resending.
        let lot_calls: Vec<_> = [Call::AgoraLotSubmit, Call::AgoraLotReport]
            .into_iter()
            .flat_map(|c| sandbox.calls(c))
            .collect();
        assert!(lot_calls
            .iter()
            .any(|c| c.fault.is_some() && c.applied && c.call == Call::AgoraLotSubmit));
        assert!(lot_calls
            .iter()
            .any(|c| c.fault.is_some() && c.call == Call::AgoraLotReport));
        assert!(
            !sandbox.calls(Call::AgoraSearch).is_empty(),
            "no member was searched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_backfill_of_a_hundred_thousand_killed_three_times() {
    straight_and_killed(Some(Production::new("backfill_kill")), Faults::none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backfill_of_a_hundred_thousand_with_30_percent_lot_faults_and_kills() {
    let faults = Faults {
        seed: 5,
        error_503: 0.10,
        rate_limited: 0.10,
        slow: 0.05,
        drop: 0.05,
        applied_share: 0.5,
        retry_after_s: 1,
        slow_ms: 3_000,
        only: vec![Call::AgoraLotSubmit, Call::AgoraLotReport],
        ..Faults::none()
    };
    straight_and_killed(None, faults).await;
}

/// A lot whose submission outlasts the lot's lease is still sent once. Its first `POST` hangs
/// 5 s and fails unapplied (a `504`), with leases of 1 s; the first search hangs 5 s too. A
/// runner that let its lease lapse during the `POST`, and went on, would search and send the
/// lot again while the runner that took it over searched: every line twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lot_whose_submission_outlasts_its_lease_is_sent_once() {
    let _heavy = crate::support::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let export = export(dir.path(), 31, 400);
    let sandbox = Sandbox::start(SandboxConfig {
        faults: Faults {
            slow_ms: 5_000,
            ..Faults::none()
        },
        // The lot sent stays unsettled a while: a second runner would not see it settled.
        agora: AgoraConfig {
            lot_min_duration: Duration::from_secs(5),
            ..AgoraConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    for call in [Call::AgoraLotSubmit, Call::AgoraSearch] {
        sandbox.fail_next(ForcedFault {
            call: Some(call),
            fault: FaultKind::Slow,
            applied: false,
        });
    }
    let mut backfill = Backfill::new(dir.path(), &sandbox, None).with("WORKER__LEASE_TTL_S", "1");
    let mut child = backfill.spawn(&export.path, false);
    let status = backfill.wait(&mut child, Duration::from_secs(120)).await;
    assert_eq!(status.code(), Some(1), "{}", backfill.stdout());
    check(&export, &backfill.report_path(), &sandbox);
    // The run's report is kept in the ledger, gzipped, as written (the console offers it).
    let ledger =
        passerelle::ledger::connect(&format!("sqlite://{}/passerelle.db", dir.path().display()))
            .await
            .expect("the ledger");
    let kept = ledger.backfill_reports(10).await.expect("reports");
    assert_eq!(kept.len(), 1, "one report per run");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    assert_eq!(kept[0].counts, report["counts"]);
    let gz = ledger
        .backfill_report(&kept[0].report_id)
        .await
        .expect("read")
        .expect("kept");
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut json)
        .expect("gzip");
    assert_eq!(
        json,
        std::fs::read_to_string(backfill.report_path()).expect("report")
    );
    let slow: Vec<_> = [Call::AgoraLotSubmit, Call::AgoraSearch]
        .into_iter()
        .flat_map(|c| sandbox.calls(c))
        .filter(|c| c.fault == Some(FaultKind::Slow))
        .collect();
    assert_eq!(slow.len(), 2, "both slow calls happened: {slow:?}");
}

/// A synchronous dossier posted while a backfill runs on the same ledger and queue reaches AGORA
/// before the backfill ends; a backfilled dossier changed afterwards in ATEXO SEM gets only the
/// operations still owed (no second creation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_flow_goes_first_during_a_backfill_and_takes_over_after_it() {
    let _heavy = crate::support::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let export = export(dir.path(), 21, 20_000);
    // Slow lots: each stays EN_COURS for 2 s.
    let sandbox = Sandbox::start(SandboxConfig {
        agora: AgoraConfig {
            lot_polls_en_cours: 1,
            lot_min_duration: Duration::from_secs(2),
            ..AgoraConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let production = Production::new("backfill_sync");
    let urls = (production.ledger_url.clone(), production.queue_url.clone());
    // The gateway first: it writes the credentials (and the identity salt) the backfill shares.
    let d = dir.path().display().to_string();
    let agora_url = sandbox.agora_url();
    let serve = gateway(
        Some(production),
        &[
            ("PASSERELLE__DATA__DIR", d.as_str()),
            ("PASSERELLE__AGORA__BASE_URL", agora_url.as_str()),
            ("PASSERELLE__AGORA__TOKEN", sandbox.agora_token()),
        ],
    )
    .await;
    let mut backfill = Backfill::new(dir.path(), &sandbox, Some(urls))
        .with("BACKFILL__LOT_SIZE", "2000")
        .with("BACKFILL__LOTS_IN_FLIGHT", "1");

    let mut child = backfill.spawn(&export.path, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    while sandbox.calls(Call::AgoraLotSubmit).is_empty() {
        assert!(Instant::now() < deadline, "no lot within 120 s");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "{}",
            backfill.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new dossier, by the synchronous flow.
    let sync = crate::support::generated(99, 1).remove(0);
    let sync_id = serve.post_atexo_accepted(&sync.id, &sync.xml).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox
        .agora_dossiers()
        .iter()
        .all(|d| d.reference != sync_id)
    {
        assert!(
            Instant::now() < deadline,
            "the sync dossier waited for the backfill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the backfill had ended already: nothing shown"
    );
    let status = backfill.wait(&mut child, Duration::from_secs(300)).await;
    assert_eq!(status.code(), Some(1), "{}", backfill.stdout());

    // Hand-over: a backfilled dossier in CREE (registered) then entered in ATEXO SEM.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    let created = export
        .truth
        .iter()
        .find(|t| {
            matches!(t.outcome, Outcome::Valid(s) if planner::target(s) == Target::State(planner::AgoraState::Cree))
        })
        .expect("a registered dossier in the export");
    let entry = &report["dossiers"][created.index - 1];
    assert_eq!(entry["outcome"], "accepted");
    let numero = entry["numero_agora"].as_str().expect("numero").to_string();
    let changed = entered_version(&export.path, created.index);
    serve.post_atexo_accepted("changed", &changed).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = sandbox
            .agora_dossiers()
            .into_iter()
            .find(|d| d.numero_agora == numero)
            .expect("still there");
        if d.etat.as_str() == "ENTRE" {
            break;
        }
        assert!(Instant::now() < deadline, "the change was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in sandbox.creations() {
        assert_eq!(c.created, 1, "created twice");
        assert_eq!(c.duplicates_refused, 0, "a second creation was attempted");
    }
    let enters = sandbox.calls(Call::AgoraEnter);
    assert_eq!(enters.len(), 1, "only the entry was owed");
    serve.stop().await;
}

/// `--dry-run` stores and sends nothing and says what would be sent; then, for real: a dossier
/// AGORA already holds cancelled (under another reference) has its line rejected (`AG-ETAT`) and
/// reported with the anomaly, and lots over AGORA's limit (`413`) are halved until they pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_then_rejected_lines_and_oversized_lots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let export = export(dir.path(), 31, 3_000);
    let sandbox = Sandbox::start(SandboxConfig {
        agora: AgoraConfig {
            max_lot_lines: 1_000,
            ..AgoraConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let mut backfill = Backfill::new(dir.path(), &sandbox, None);

    let mut child = backfill.spawn_with(&export.path, &["--dry-run"]);
    let status = backfill.wait(&mut child, Duration::from_secs(120)).await;
    assert_eq!(
        status.code(),
        Some(1),
        "invalid dossiers fail even a dry run"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for t in &export.truth {
        let (outcome, _) = expected_outcome(t);
        let outcome = if outcome == "accepted" {
            "would_send"
        } else {
            outcome
        };
        *expected.entry(outcome).or_default() += 1;
    }
    for (k, v) in &expected {
        assert_eq!(report["counts"][*k], *v, "dry-run count of {k}");
    }
    assert_eq!(report["counts"]["accepted"], 0);
    assert!(sandbox.journal().is_empty(), "a dry run called AGORA");
    assert!(
        !dir.path().join("passerelle.db").exists(),
        "a dry run wrote the ledger"
    );

    // AGORA already holds one of the dossiers, cancelled, under another reference.
    let victim = export
        .truth
        .iter()
        .find(|t| expected_outcome(t).0 == "accepted")
        .expect("an owed dossier");
    let victim_id = generate::dossier_id(export.seed, victim.index);
    let dossier = decode_one(&export.path, victim.index);
    let http = reqwest::Client::new();
    let body = passerelle_adapters::agora::encode_dossier("psl-pppppppppppppppppppp", &dossier)
        .expect("an AGORA body");
    // A search first: AGORA refuses a creation no search preceded.
    let searched = http
        .get(format!("{}/dossiers", sandbox.agora_url()))
        .query(&[
            ("financeur", body.financeur.code.as_str()),
            ("reference", body.reference.as_str()),
        ])
        .bearer_auth(sandbox.agora_token())
        .send()
        .await
        .expect("search");
    assert_eq!(searched.status(), 404);
    let created: serde_json::Value = http
        .post(format!("{}/dossiers", sandbox.agora_url()))
        .bearer_auth(sandbox.agora_token())
        .json(&body)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let numero = created["numero_agora"]
        .as_str()
        .expect("numero")
        .to_string();
    let cancelled = http
        .post(format!("{}/dossiers/{numero}/annulation", sandbox.agora_url()))
        .bearer_auth(sandbox.agora_token())
        .json(&serde_json::json!({"date_annulation": "2019-01-02", "initiateur": "FINANCEUR", "motif": "doublon"}))
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), 200);

    let mut child = backfill.spawn(&export.path, false);
    let status = backfill.wait(&mut child, Duration::from_secs(300)).await;
    assert_eq!(status.code(), Some(1), "{}", backfill.stdout());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    let entry = &report["dossiers"][victim.index - 1];
    assert_eq!(entry["id"], victim_id.as_str());
    assert_eq!(entry["outcome"], "rejected", "{entry}");
    assert_eq!(entry["errors"][0]["code"], "AG-ETAT", "{entry}");
    assert_eq!(entry["errors"][0]["champ"], "etat", "{entry}");
    assert_eq!(report["counts"]["rejected"], 1);
    assert_eq!(
        report["counts"]["accepted"].as_u64(),
        expected.get("would_send").map(|n| n - 1)
    );
    let text = backfill.stdout();
    assert!(
        text.lines()
            .any(|l| l.contains(&victim_id) && l.contains("AG-ETAT")),
        "the text report lists the rejection:\n{text}"
    );
    // Oversized lots were refused, then sent halved: every lot AGORA took is within its limit.
    let lots = sandbox.calls(Call::AgoraLotSubmit);
    assert!(
        lots.iter().any(|c| c.status == Some(413)),
        "no lot was too large"
    );
    for lot in lots.iter().filter(|c| c.status == Some(202)) {
        let lot_id = lot.lot.as_deref().expect("lot id");
        let lines = sandbox
            .agora_dossiers()
            .iter()
            .filter(|d| d.history.first().and_then(|h| h.lot.as_deref()) == Some(lot_id))
            .count();
        assert!(lines <= 1_000, "{lot_id}: {lines} lines");
    }
}

/// A dossier of an export declared ISO-8859-1 whose bytes are UTF-8 ("ÉLODIE" that would read
/// "Ã‰LODIE") is reported invalid with its rule and path; the export's genuine dossier goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mislabelled_latin1_dossier_is_invalid_in_a_backfill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let mut backfill = Backfill::new(dir.path(), &sandbox, None);
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/atexo_sem/invalid/xml_encoding_mismatch.xml");
    let mut child = backfill.spawn_with(&input, &["--dry-run"]);
    let status = backfill.wait(&mut child, Duration::from_secs(120)).await;
    assert_eq!(status.code(), Some(1), "{}", backfill.stdout());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    assert_eq!(report["counts"]["invalid"], 1, "{report}");
    let refused = &report["dossiers"][0];
    assert_eq!(refused["id"], "PDL-2019-000701");
    assert_eq!(refused["outcome"], "invalid");
    assert_eq!(
        refused["errors"][0]["rule"], "xml.encoding.mismatch",
        "{refused}"
    );
    assert_eq!(
        refused["errors"][0]["pointer"],
        "/exportSEM/dossier[1]/stagiaire/prenoms"
    );
    let genuine = &report["dossiers"][1];
    assert_eq!(genuine["id"], "PDL-2019-000702");
    assert_eq!(genuine["outcome"], "would_send", "{genuine}");
}

/// The backfill reads any source of the registry whose records come as files (`--system`): an
/// OUIFORM orientation is decoded, validated and checked against what AGORA requires as an
/// export's dossier would be (alone, an orientation lacks the session and the funding: it is
/// reported incomplete, naming them), and a system whose records are polled is refused with the
/// list of those that are files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_reads_the_files_of_the_source_it_is_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox");
    let mut backfill = Backfill::new(dir.path(), &sandbox, None);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ouiform");
    let mut child = backfill.spawn_with(
        &fixtures.join("valid/entree.json"),
        &["--dry-run", "--system", "ouiform"],
    );
    let status = backfill.wait(&mut child, Duration::from_secs(120)).await;
    assert_eq!(
        status.code(),
        Some(1),
        "{}{}",
        backfill.stdout(),
        backfill.log()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    let orientation: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures.join("valid/entree.json")).expect("fixture"),
    )
    .expect("json");
    let dossiers = report["dossiers"].as_array().expect("dossiers");
    assert_eq!(dossiers.len(), 1, "{report}");
    assert_eq!(dossiers[0]["id"], orientation["idOrientation"], "{report}");
    assert_eq!(dossiers[0]["outcome"], "invalid", "{report}");
    assert_eq!(dossiers[0]["reason"], "incomplete_for_agora", "{report}");
    let missing: Vec<&str> = dossiers[0]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert!(missing.contains(&"/session"), "{report}");

    let mut child = backfill.spawn_with(
        &fixtures.join("invalid/nir.checksum--wrong-key.json"),
        &["--dry-run", "--system", "ouiform"],
    );
    let status = backfill.wait(&mut child, Duration::from_secs(120)).await;
    assert_eq!(status.code(), Some(1), "{}", backfill.stdout());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backfill.report_path()).expect("report"))
            .expect("json");
    assert_eq!(report["counts"]["invalid"], 1, "{report}");
    let errors = report["dossiers"][0]["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e["rule"] == "nir.checksum" && e["pointer"] == "/beneficiaire/nir"),
        "{report}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_gateway_process"))
        .args(["backfill", "--system", "pole-emploi", "--input"])
        .arg(fixtures.join("valid/entree.json"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a system whose records come as files; one of: atexo-sem, ouiform"),
        "{stderr}"
    );
}

fn decode_one(path: &Path, index: usize) -> passerelle_adapters::Dossier {
    use passerelle_adapters::atexo_sem::{self, DecodeSettings, Flow};
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("export"));
    atexo_sem::decode_stream(file, Flow::Backfill, &DecodeSettings::default())
        .find_map(|x| x.ok().filter(|d| d.index == index))
        .expect("the dossier")
        .dossier
}

/// The next version of the `index`-th dossier of an export, entered on its session's first day.
fn entered_version(path: &Path, index: usize) -> Vec<u8> {
    use passerelle_adapters::atexo_sem;
    let mut d = decode_one(path, index);
    d.state = passerelle_adapters::State::Entered;
    d.entry = Some(passerelle_adapters::canonical::Entry {
        date: d.session.as_ref().expect("a session").start,
    });
    let source = d.sources.first_mut().expect("its ATEXO source");
    source.version = Some(source.version.unwrap_or(1) + 1);
    let mut out = Vec::new();
    atexo_sem::encode_export([&d], &mut out).expect("encodable");
    out
}
