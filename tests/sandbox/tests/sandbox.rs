//! The simulators over real HTTP on loopback, each rule of the contract proved with reqwest and
//! the adapters' own encoders and decoders.

use passerelle_adapters::agora::{
    self, decode_answer, decode_lot_accepted, decode_reprise_report, encode_dossier,
    encode_reprise_line, encode_transition, Outcome, ReportState, RepriseLot, TransientReason,
};
use passerelle_adapters::atexo_sem::{encode_return, AgoraReturn};
use passerelle_adapters::planner::{AgoraState, Operation};
use passerelle_adapters::pole_emploi::{self, decode_error, decode_token, SessionRef};
use passerelle_adapters::rules::RuleSettings;
use passerelle_adapters::{Dossier, State};
use passerelle_sandbox::{
    Call, FaultKind, Faults, ForcedFault, PoleEmploiConfig, Refusal, RunningSandbox, Sandbox,
    SandboxConfig,
};
use serde_json::{json, Value};
use std::time::Duration;

const REF: &str = "psl-0123456789abcdef0123";
const NIR: &str = "185077512345608";

fn canonical(name: &str) -> Dossier {
    let path = format!(
        "{}/../fixtures/agora/canonical/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).expect("fixture");
    serde_json::from_slice(&bytes).expect("canonical dossier")
}

async fn start() -> RunningSandbox {
    start_with(SandboxConfig::default()).await
}

async fn start_with(config: SandboxConfig) -> RunningSandbox {
    Sandbox::start(config).await.expect("sandbox starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The `POST /dossiers` body of the settled fixture, as JSON (to derive variants).
fn dossier_json(reference: &str) -> Value {
    let body = encode_dossier(reference, &canonical("settled")).expect("encodable");
    serde_json::to_value(body).expect("json")
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("an answer");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes().await.expect("a body").to_vec();
    Answer {
        status,
        retry_after,
        body,
    }
}

fn outcome(op: Operation, a: &Answer) -> Outcome {
    decode_answer(op, a.status, a.retry_after.as_deref(), &a.body)
}

/// A creation as a correct client makes it: a search for the dossier first (contract §3).
async fn create(sb: &RunningSandbox, body: &Value) -> Answer {
    let financeur = body["financeur"]["code"].as_str().unwrap_or_default();
    let reference = body["reference"].as_str().unwrap_or_default();
    search(sb, financeur, reference).await;
    create_unsearched(sb, body).await
}

/// A creation with no search before it.
async fn create_unsearched(sb: &RunningSandbox, body: &Value) -> Answer {
    send(
        client()
            .post(format!("{}/dossiers", sb.agora_url()))
            .bearer_auth(sb.agora_token())
            .json(body),
    )
    .await
}

async fn search(sb: &RunningSandbox, financeur: &str, reference: &str) -> Answer {
    send(
        client()
            .get(format!("{}/dossiers", sb.agora_url()))
            .query(&[("financeur", financeur), ("reference", reference)])
            .bearer_auth(sb.agora_token()),
    )
    .await
}

async fn transition(sb: &RunningSandbox, numero: &str, op: Operation, d: &Dossier) -> Answer {
    let body = encode_transition(op, d).expect("transition body");
    send(
        client()
            .post(format!(
                "{}/dossiers/{numero}/{}",
                sb.agora_url(),
                body.path()
            ))
            .bearer_auth(sb.agora_token())
            .json(&body),
    )
    .await
}

fn created_number(o: Outcome) -> String {
    match o {
        Outcome::Created { numero_agora } => numero_agora,
        other => panic!("expected a creation, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------ AGORA

#[tokio::test]
async fn create_once_then_409_with_the_same_number() {
    let sb = start().await;
    assert_eq!(
        outcome(Operation::Search, &search(&sb, "2", REF).await),
        Outcome::NotFound
    );
    let numero = created_number(outcome(
        Operation::Create,
        &create(&sb, &dossier_json(REF)).await,
    ));
    assert_eq!(
        outcome(Operation::Search, &search(&sb, "2", REF).await),
        Outcome::Found {
            numero_agora: numero.clone(),
            etat: AgoraState::Cree
        }
    );
    // The same reference again, then another reference for the same trainee on the same session.
    for reference in [REF, "psl-another-reference-0001"] {
        assert_eq!(
            outcome(
                Operation::Create,
                &create(&sb, &dossier_json(reference)).await
            ),
            Outcome::AlreadyExists {
                numero_agora: numero.clone()
            }
        );
    }
    // Another trainee on the same session is another dossier.
    let mut other = dossier_json("psl-other-trainee-000001");
    other["stagiaire"]["nir13"] = json!("2550814168025");
    let other_numero = created_number(outcome(Operation::Create, &create(&sb, &other).await));
    assert_ne!(other_numero, numero);

    assert_eq!(sb.agora_dossiers().len(), 2);
    let counters = sb.creations();
    let mine = counters
        .iter()
        .find(|c| c.nir13.expose() == &NIR[..13])
        .expect("counters");
    assert_eq!(
        (mine.create_calls, mine.created, mine.duplicates_refused),
        (3, 1, 2)
    );
    let statuses: Vec<_> = sb
        .calls(Call::AgoraCreate)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [Some(201), Some(409), Some(409), Some(201)]);
    sb.shutdown().await;
}

#[tokio::test]
async fn concurrent_creations_of_one_dossier_create_it_once() {
    let sb = std::sync::Arc::new(start().await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let sb = sb.clone();
        tasks.spawn(async move { create(&sb, &dossier_json(REF)).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 201).count(), 1);
    assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), 19);
    assert_eq!(sb.agora_dossiers().len(), 1);
    let sb = std::sync::Arc::into_inner(sb).expect("sole owner");
    sb.shutdown().await;
}

/// Contract §3: a search "always before a creation". A creation no search for its (financeur,
/// reference) preceded is refused, as is one whose only search failed before AGORA read it.
#[tokio::test]
async fn a_creation_no_search_preceded_is_refused() {
    let sb = start().await;
    let refused = |a: &Answer| match outcome(Operation::Create, a) {
        Outcome::Rejected { anomalies } => {
            anomalies.len() == 1
                && anomalies[0].code == passerelle_sandbox::agora::NO_SEARCH
                && anomalies[0].champ.as_deref() == Some("/reference")
        }
        _ => false,
    };
    assert!(refused(&create_unsearched(&sb, &dossier_json(REF)).await));
    // A search for another reference, or one refused at the door, is no search of this one.
    search(&sb, "2", "psl-another-reference").await;
    sb.fail_next(ForcedFault {
        call: Some(Call::AgoraSearch),
        fault: FaultKind::Error503,
        applied: false,
    });
    assert_eq!(search(&sb, "2", REF).await.status, 503);
    assert!(refused(&create_unsearched(&sb, &dossier_json(REF)).await));
    assert!(sb.agora_dossiers().is_empty());
    assert_eq!(search(&sb, "2", REF).await.status, 404);
    assert_eq!(create_unsearched(&sb, &dossier_json(REF)).await.status, 201);
    sb.shutdown().await;
}

/// The kill hook of the crash tests: the k-th write is applied at once, its answer held until
/// released; the writes before it are answered as usual.
#[tokio::test]
async fn a_held_write_is_applied_and_answered_only_when_released() {
    let sb = start().await;
    search(&sb, "2", REF).await;
    let mut hold = sb.hold_answer_of_write(2);
    let numero = created_number(outcome(
        Operation::Create,
        &create(&sb, &dossier_json(REF)).await,
    ));
    let body = encode_transition(Operation::Enter, &canonical("settled")).expect("body");
    let request = client()
        .post(format!("{}/dossiers/{numero}/entree", sb.agora_url()))
        .bearer_auth(sb.agora_token())
        .json(&body);
    let pending = tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    let record = tokio::time::timeout(Duration::from_secs(10), hold.applied())
        .await
        .expect("the second write arrives")
        .expect("held");
    assert_eq!((record.call, record.applied), (Call::AgoraEnter, true));
    assert_eq!(record.reference.as_deref(), Some(REF));
    assert_eq!(
        sb.agora_dossier("2", REF).map(|d| d.etat),
        Some(AgoraState::Entre),
        "applied before its answer"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the answer is held");
    hold.release();
    let status = pending.await.expect("task").expect("an answer");
    assert_eq!(status, 200);
    assert_eq!(sb.writes_applied(), 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn every_call_wants_the_bearer_token() {
    let sb = start().await;
    let url = format!("{}/dossiers", sb.agora_url());
    let none = send(client().post(&url).json(&dossier_json(REF))).await;
    let wrong = send(
        client()
            .post(&url)
            .bearer_auth("not-the-token")
            .json(&dossier_json(REF)),
    )
    .await;
    let lot = send(client().get(format!("{}/reprises/LOT000001", sb.agora_url()))).await;
    assert_eq!((none.status, wrong.status, lot.status), (401, 401, 401));
    assert!(sb.agora_dossiers().is_empty());
    sb.shutdown().await;
}

#[tokio::test]
async fn schema_violations_are_422_with_anomalies() {
    let sb = start().await;
    let mut nir15 = dossier_json(REF);
    nir15["stagiaire"]["nir13"] = json!(NIR);
    let mut float = dossier_json(REF);
    float["financements"][0]["montant_engage_cents"] = json!(4520.5);
    let mut extra = dossier_json(REF);
    extra["inconnu"] = json!(1);
    for (body, pointer) in [
        (nir15, "/stagiaire/nir13"),
        (float, "/financements/0/montant_engage_cents"),
        (extra, ""),
    ] {
        match outcome(Operation::Create, &create(&sb, &body).await) {
            Outcome::Rejected { anomalies } => {
                assert!(anomalies.iter().all(|a| a.code == "AG-SCHEMA"));
                if !pointer.is_empty() {
                    assert!(
                        anomalies
                            .iter()
                            .any(|a| a.champ.as_deref() == Some(pointer)),
                        "{anomalies:?}"
                    );
                }
                // No personal value is echoed back.
                for a in &anomalies {
                    assert!(!a.libelle.as_deref().unwrap_or_default().contains("1850775"));
                }
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    let not_json = send(
        client()
            .post(format!("{}/dossiers", sb.agora_url()))
            .bearer_auth(sb.agora_token())
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_eq!(not_json.status, 415);
    assert!(sb.agora_dossiers().is_empty());
    sb.shutdown().await;
}

#[tokio::test]
async fn transitions_follow_agora_states_else_ag_etat() {
    let sb = start().await;
    let d = canonical("settled");
    let numero = created_number(outcome(
        Operation::Create,
        &create(&sb, &dossier_json(REF)).await,
    ));
    // Exit before entry: a state conflict.
    assert_eq!(
        outcome(
            Operation::Exit,
            &transition(&sb, &numero, Operation::Exit, &d).await
        ),
        Outcome::StateConflict
    );
    for op in [Operation::Enter, Operation::Exit, Operation::Settle] {
        assert_eq!(
            outcome(op, &transition(&sb, &numero, op, &d).await),
            Outcome::Accepted,
            "{op:?}"
        );
    }
    // A repeated entry and a cancellation after entry: conflicts.
    assert_eq!(
        outcome(
            Operation::Enter,
            &transition(&sb, &numero, Operation::Enter, &d).await
        ),
        Outcome::StateConflict
    );
    let cancel = send(
        client()
            .post(format!("{}/dossiers/{numero}/annulation", sb.agora_url()))
            .bearer_auth(sb.agora_token())
            .json(
                &json!({"date_annulation": "2019-09-01", "initiateur": "STAGIAIRE", "motif": "x"}),
            ),
    )
    .await;
    assert_eq!(outcome(Operation::Cancel, &cancel), Outcome::StateConflict);
    // An unknown number, an unknown transition, a bad body.
    assert_eq!(
        transition(&sb, "AG9999999999", Operation::Enter, &d)
            .await
            .status,
        404
    );
    let bad = send(
        client()
            .post(format!("{}/dossiers/{numero}/sortie", sb.agora_url()))
            .bearer_auth(sb.agora_token())
            .json(&json!({"date_sortie": "2019-12-20"})),
    )
    .await;
    assert_eq!(bad.status, 422);

    let dossier = sb.agora_dossier("2", REF).expect("dossier");
    assert_eq!(dossier.etat, AgoraState::Solde);
    let states: Vec<_> = dossier.history.iter().map(|h| h.etat).collect();
    assert_eq!(
        states,
        [
            AgoraState::Cree,
            AgoraState::Entre,
            AgoraState::Sorti,
            AgoraState::Solde
        ]
    );
    assert_eq!(dossier.state_conflicts, 3);
    sb.shutdown().await;
}

/// A lot of the settled dossier (SOLDE), another trainee (CREE), and one invalid line.
fn lot_bytes() -> (Vec<u8>, Vec<String>) {
    let d = canonical("settled");
    let mut lot = RepriseLot::new();
    lot.push(&encode_reprise_line(REF, &d, AgoraState::Solde).expect("line"))
        .expect("room");
    let mut other = d.clone();
    other.trainee.nir = passerelle_adapters::canonical::Nir::new("2550814168025");
    other.state = State::Validated;
    lot.push(
        &encode_reprise_line("psl-second-000000000001", &other, AgoraState::Cree).expect("line"),
    )
    .expect("room");
    let refs = lot.references().to_vec();
    let mut bytes = lot.into_bytes();
    bytes.extend_from_slice(b"{\"not\": \"a dossier\"}\n");
    (bytes, refs)
}

async fn submit(sb: &RunningSandbox, bytes: Vec<u8>) -> Answer {
    send(
        client()
            .post(format!("{}/reprises", sb.agora_url()))
            .bearer_auth(sb.agora_token())
            .header("content-type", agora::NDJSON)
            .body(bytes),
    )
    .await
}

async fn report(sb: &RunningSandbox, lot: &str) -> agora::RepriseReport {
    let a = send(
        client()
            .get(format!("{}/reprises/{lot}", sb.agora_url()))
            .bearer_auth(sb.agora_token()),
    )
    .await;
    assert_eq!(a.status, 200);
    decode_reprise_report(&a.body).expect("a valid report")
}

#[tokio::test]
async fn a_lot_is_en_cours_then_termine_and_idempotent() {
    let mut config = SandboxConfig::default();
    config.agora.lot_polls_en_cours = 2;
    let sb = start_with(config).await;
    let (bytes, refs) = lot_bytes();
    let a = submit(&sb, bytes.clone()).await;
    assert_eq!(a.status, 202);
    let lot = decode_lot_accepted(&a.body).expect("lot id");
    for _ in 0..2 {
        let r = report(&sb, &lot).await;
        assert_eq!(
            (r.etat, r.lignes, r.acceptees),
            (ReportState::EnCours, 3, 0)
        );
    }
    let r = report(&sb, &lot).await;
    assert_eq!(r.etat, ReportState::Termine);
    assert_eq!((r.lignes, r.acceptees, r.rejetees), (3, 2, 1));
    assert_eq!(r.compte_rendu[0].reference, refs[0]);
    assert!(r.compte_rendu[2].numero_agora.is_none());
    assert!(!r.compte_rendu[2].anomalies.is_empty());
    let first: Vec<_> = r
        .compte_rendu
        .iter()
        .map(|l| l.numero_agora.clone())
        .collect();
    assert_eq!(
        sb.agora_dossier("2", REF).expect("created").etat,
        AgoraState::Solde
    );

    // The same lot again: accepted with the same numbers, nothing duplicated.
    let again = decode_lot_accepted(&submit(&sb, bytes).await.body).expect("lot id");
    assert_ne!(again, lot);
    let _ = report(&sb, &again).await;
    let _ = report(&sb, &again).await;
    let r2 = report(&sb, &again).await;
    let second: Vec<_> = r2
        .compte_rendu
        .iter()
        .map(|l| l.numero_agora.clone())
        .collect();
    assert_eq!(first, second);
    assert_eq!(sb.agora_dossiers().len(), 2);
    assert!(sb.creations().iter().all(|c| c.created == 1));

    // A sync creation of a dossier the lot created: 409 with its number.
    assert_eq!(
        outcome(Operation::Create, &create(&sb, &dossier_json(REF)).await),
        Outcome::AlreadyExists {
            numero_agora: first[0].clone().expect("number")
        }
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_business_refusal_is_422_until_lifted_by_call_and_by_lot() {
    let sb = start().await;
    let body = dossier_json(REF);
    let certification = body["formation"]["certification"].clone();
    assert!(certification.is_string(), "the fixture has a certification");
    // Over HTTP, as a rehearsal sets it; a champ that is no JSON pointer is refused.
    let rules = format!("{}/_sandbox/agora/refusals", sb.base_url());
    let bad = client()
        .post(&rules)
        .json(&json!({"champ": "formation.certification", "valeur": "x", "code": "AG-X"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);
    let set = client()
        .post(&rules)
        .json(
            &json!({"champ": "/formation/certification", "valeur": certification,
                      "code": "AG-CERTIF", "libelle": "certification inconnue"}),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(set.status(), 204);
    let listed: Value = client()
        .get(&rules)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["code"], "AG-CERTIF");

    let a = create(&sb, &body).await;
    assert_eq!(a.status, 422);
    match outcome(Operation::Create, &a) {
        Outcome::Rejected { anomalies } => {
            assert_eq!(anomalies.len(), 1);
            assert_eq!(anomalies[0].code, "AG-CERTIF");
            assert_eq!(
                anomalies[0].champ.as_deref(),
                Some("/formation/certification")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(sb.agora_dossiers().is_empty(), "nothing created");
    // A lot line matching the rule is rejected with the same anomaly; the other is accepted.
    let (bytes, _) = lot_bytes();
    let lot = decode_lot_accepted(&submit(&sb, bytes).await.body).expect("lot id");
    let _ = report(&sb, &lot).await;
    let r = report(&sb, &lot).await;
    assert_eq!(r.etat, ReportState::Termine);
    assert_eq!(r.compte_rendu[0].anomalies[0].code, "AG-CERTIF");
    assert!(r.compte_rendu[0].numero_agora.is_none());

    // Lifted (the correction on AGORA's side): the same body is created.
    let cleared = client().delete(&rules).send().await.expect("answer");
    assert_eq!(cleared.status(), 204);
    let a = create(&sb, &body).await;
    assert_eq!(a.status, 201);
    // The in-process controls do the same.
    sb.refuse(Refusal {
        champ: "/reference".into(),
        valeur: json!("psl-other"),
        code: "AG-REF".into(),
        libelle: "référence refusée".into(),
    });
    assert_eq!(create(&sb, &dossier_json("psl-other")).await.status, 422);
    sb.clear_refusals();
    assert_ne!(create(&sb, &dossier_json("psl-other")).await.status, 422);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_lot_over_10000_lines_is_413_and_unknown_lots_404() {
    let sb = start().await;
    let bytes = "{}\n".repeat(agora::MAX_LOT_LINES + 1).into_bytes();
    assert_eq!(submit(&sb, bytes).await.status, 413);
    let a = send(
        client()
            .get(format!("{}/reprises/LOT999999", sb.agora_url()))
            .bearer_auth(sb.agora_token()),
    )
    .await;
    assert_eq!(a.status, 404);
    sb.shutdown().await;
}

// ------------------------------------------------------------------------------ faults

#[tokio::test]
async fn random_faults_follow_their_share_and_their_seed() {
    let sb = start().await;
    let faults = Faults {
        seed: 42,
        error_500: 0.2,
        rate_limited: 0.1,
        retry_after_s: 7,
        only: vec![Call::AgoraSearch],
        ..Faults::none()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        sb.set_faults(faults.clone()).expect("valid faults");
        let mut statuses = Vec::new();
        for _ in 0..300 {
            let a = search(&sb, "2", REF).await;
            if a.status == 429 {
                assert_eq!(a.retry_after.as_deref(), Some("7"));
                assert_eq!(
                    outcome(Operation::Search, &a),
                    Outcome::Transient {
                        retry_after: Some(Duration::from_secs(7)),
                        reason: TransientReason::RateLimited
                    }
                );
            }
            statuses.push(a.status);
        }
        runs.push(statuses);
    }
    // Reproducible: the same seed gives the same sequence.
    assert_eq!(runs[0], runs[1]);
    let share = |s: u16| runs[0].iter().filter(|&&x| x == s).count() as f64 / 300.0;
    assert!((0.13..0.27).contains(&share(500)), "500: {}", share(500));
    assert!((0.05..0.15).contains(&share(429)), "429: {}", share(429));
    // Scoped: a creation is never faulted.
    assert_eq!(create(&sb, &dossier_json(REF)).await.status, 201);
    // Invalid faults are refused.
    assert!(sb
        .set_faults(Faults {
            error_500: 0.8,
            drop: 0.5,
            ..Faults::none()
        })
        .is_err());
    sb.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error_and_may_have_applied() {
    let sb = start().await;
    sb.fail_next(ForcedFault {
        call: Some(Call::AgoraCreate),
        fault: FaultKind::Drop,
        applied: true,
    });
    search(&sb, "2", REF).await;
    let err = client()
        .post(format!("{}/dossiers", sb.agora_url()))
        .bearer_auth(sb.agora_token())
        .json(&dossier_json(REF))
        .send()
        .await;
    let err = err.expect_err("a dropped connection must not be an answer");
    // No status line reached the client: the error is the transport's, not a body's.
    assert!(err.status().is_none() && !err.is_body() && !err.is_decode());
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    eprintln!("dropped connection seen as: {chain}");
    // Applied before failing: the dossier exists, the journal says so.
    let record = sb.calls(Call::AgoraCreate).pop().expect("journaled");
    assert_eq!(record.status, None);
    assert_eq!(record.fault, Some(FaultKind::Drop));
    assert!(record.applied);
    assert_eq!(record.effect_status, Some(201));
    assert_eq!(record.reference.as_deref(), Some(REF));
    let numero = sb.agora_dossier("2", REF).expect("applied").numero_agora;
    // What a correct client does next: search, find it, no second creation.
    assert_eq!(
        outcome(Operation::Search, &search(&sb, "2", REF).await),
        Outcome::Found {
            numero_agora: numero,
            etat: AgoraState::Cree
        }
    );

    // Not applied: nothing happened.
    sb.fail_next(ForcedFault {
        call: Some(Call::AgoraCreate),
        fault: FaultKind::Drop,
        applied: false,
    });
    let mut other = dossier_json("psl-other-trainee-000001");
    other["stagiaire"]["nir13"] = json!("2550814168025");
    assert!(client()
        .post(format!("{}/dossiers", sb.agora_url()))
        .bearer_auth(sb.agora_token())
        .json(&other)
        .send()
        .await
        .is_err());
    assert_eq!(sb.agora_dossiers().len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_slow_answer_times_the_client_out_after_applying() {
    let sb = start().await;
    sb.set_faults(Faults {
        slow: 1.0,
        applied_share: 1.0,
        slow_ms: 1_500,
        only: vec![Call::AgoraCreate],
        ..Faults::none()
    })
    .expect("valid");
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    search(&sb, "2", REF).await;
    let err = quick
        .post(format!("{}/dossiers", sb.agora_url()))
        .bearer_auth(sb.agora_token())
        .json(&dossier_json(REF))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout());
    assert!(sb.agora_dossier("2", REF).is_some());
    let record = sb.calls(Call::AgoraCreate).pop().expect("journaled");
    assert_eq!(
        (record.fault, record.applied),
        (Some(FaultKind::Slow), true)
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_500_may_hide_an_applied_transition() {
    let sb = start().await;
    let d = canonical("settled");
    let numero = created_number(outcome(
        Operation::Create,
        &create(&sb, &dossier_json(REF)).await,
    ));
    sb.fail_next(ForcedFault {
        call: Some(Call::AgoraEnter),
        fault: FaultKind::Error500,
        applied: true,
    });
    let a = transition(&sb, &numero, Operation::Enter, &d).await;
    assert!(matches!(
        outcome(Operation::Enter, &a),
        Outcome::Transient {
            reason: TransientReason::ServerError(500),
            ..
        }
    ));
    // The retry finds AGORA already there: AG-ETAT, and a search says ENTRE.
    assert_eq!(
        outcome(
            Operation::Enter,
            &transition(&sb, &numero, Operation::Enter, &d).await
        ),
        Outcome::StateConflict
    );
    assert_eq!(
        outcome(Operation::Search, &search(&sb, "2", REF).await),
        Outcome::Found {
            numero_agora: numero,
            etat: AgoraState::Entre
        }
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn faults_can_be_set_over_http() {
    let sb = start().await;
    let c = client();
    let bad = c
        .post(format!("{}/_sandbox/faults", sb.base_url()))
        .json(&json!({"error_500": 2.0}))
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status().as_u16(), 400);
    let ok = c
        .post(format!("{}/_sandbox/faults", sb.base_url()))
        .json(&json!({"error_503": 1.0, "only": ["agora_lot_submit", "agora_lot_report"]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(submit(&sb, lot_bytes().0).await.status, 503);
    assert_eq!(search(&sb, "2", REF).await.status, 404);
    assert_eq!(sb.faults().error_503, 1.0);
    sb.shutdown().await;
}

// ------------------------------------------------------------------------------ inspection

#[tokio::test]
async fn the_http_inspection_api_never_shows_a_nir() {
    let sb = start().await;
    assert_eq!(create(&sb, &dossier_json(REF)).await.status, 201);
    let c = client();
    for path in ["journal", "agora/dossiers", "agora/creations"] {
        let text = c
            .get(format!("{}/_sandbox/{path}", sb.base_url()))
            .send()
            .await
            .expect("answer")
            .text()
            .await
            .expect("text");
        assert!(!text.contains(&NIR[..13]), "{path}: {text}");
        assert!(!text.contains("DUPONT"), "{path}");
    }
    let dossiers: Value = c
        .get(format!("{}/_sandbox/agora/dossiers", sb.base_url()))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(dossiers[0]["reference"], REF);
    assert_eq!(dossiers[0]["etat"], "CREE");
    assert_eq!(dossiers[0]["nir13"], "1************");
    // Debug masks too.
    assert!(!format!("{:?}", sb.agora_dossiers()).contains(&NIR[..13]));
    sb.shutdown().await;
}

// ------------------------------------------------------------------------------ Pôle emploi

fn session() -> SessionRef {
    SessionRef {
        numero_formation: "20_1262663".to_string(),
        numero_action: "20_1330305".to_string(),
        numero_session: "1330305".to_string(),
    }
}

async fn token_call(sb: &RunningSandbox, realm: &str, secret: &str) -> Answer {
    let (id, _) = sb.pole_emploi_credentials();
    send(
        client()
            .post(format!(
                "{}/connexion/oauth2/access_token",
                sb.pole_emploi_url()
            ))
            .query(&[("realm", realm)])
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
                ("scope", "api_inscriptions"),
            ]),
    )
    .await
}

async fn registrations(sb: &RunningSandbox, token: &str, s: &SessionRef) -> Answer {
    send(
        client()
            .get(format!(
                "{}/inscriptions/statut/session",
                sb.pole_emploi_url()
            ))
            .query(&[
                ("numeroFormation", s.numero_formation.as_str()),
                ("numeroAction", s.numero_action.as_str()),
                ("numeroSession", s.numero_session.as_str()),
            ])
            .bearer_auth(token),
    )
    .await
}

#[tokio::test]
async fn pole_emploi_tokens_registrations_and_errors() {
    let sb = start_with(SandboxConfig {
        pole_emploi: PoleEmploiConfig {
            token_ttl: Duration::from_millis(1_000),
            ..PoleEmploiConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let secret = sb.pole_emploi_credentials().1.to_string();
    let realm = token_call(&sb, "/autre", &secret).await;
    assert_eq!(realm.status, 400);
    assert_eq!(
        decode_error(&realm.body).expect("error body").code_http,
        400
    );
    let creds = token_call(&sb, "/partenaire", "wrong").await;
    assert_eq!(creds.status, 401);
    assert_eq!(
        decode_error(&creds.body).expect("error body").code_http,
        401
    );

    let ok = token_call(&sb, "/partenaire", &secret).await;
    assert_eq!(ok.status, 200);
    let token = decode_token(&ok.body).expect("token");
    assert_eq!(token.expires_in, 1);

    let d = canonical("settled");
    sb.set_registrations(&session(), std::slice::from_ref(&d));
    let a = registrations(&sb, token.access_token(), &session()).await;
    assert_eq!(a.status, 200);
    let decoded = pole_emploi::decode_registrations(&a.body, &session(), &RuleSettings::default())
        .expect("a list");
    assert_eq!(decoded.len(), 1);
    let got = decoded[0].as_ref().expect("valid registration");
    assert_eq!(got.trainee.nir.nir13(), &NIR[..13]);
    assert_eq!(got.state, State::Entered);

    // An unseeded session: an empty list. Missing numbers: 400.
    let other = SessionRef {
        numero_session: "999".to_string(),
        ..session()
    };
    assert_eq!(
        registrations(&sb, token.access_token(), &other).await.body,
        b"[]"
    );
    let missing = send(
        client()
            .get(format!(
                "{}/inscriptions/statut/session",
                sb.pole_emploi_url()
            ))
            .query(&[("numeroFormation", "20_1262663")])
            .bearer_auth(token.access_token()),
    )
    .await;
    assert_eq!(missing.status, 400);

    // Expiry: 401 with the error body; a new token works again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let expired = registrations(&sb, token.access_token(), &session()).await;
    assert_eq!(expired.status, 401);
    assert_eq!(decode_error(&expired.body).expect("error").code_http, 401);
    let fresh = decode_token(&token_call(&sb, "/partenaire", &secret).await.body).expect("token");
    assert_eq!(
        registrations(&sb, fresh.access_token(), &session())
            .await
            .status,
        200
    );
    sb.expire_pe_tokens();
    assert_eq!(
        registrations(&sb, fresh.access_token(), &session())
            .await
            .status,
        401
    );
    assert_eq!(sb.pe_token_requests(), 4);

    // Faults carry the error body and Retry-After.
    sb.fail_next(ForcedFault {
        call: Some(Call::PeRegistrations),
        fault: FaultKind::RateLimited,
        applied: false,
    });
    let limited = registrations(&sb, "whatever", &session()).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    assert_eq!(decode_error(&limited.body).expect("error").code_http, 429);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_session_can_be_refused_in_process_and_over_http() {
    let sb = start().await;
    let secret = sb.pole_emploi_credentials().1.to_string();
    let token = decode_token(&token_call(&sb, "/partenaire", &secret).await.body).expect("token");
    sb.refuse_registrations(&session(), 403, "HABILITATION_INSUFFISANTE");
    let refused = registrations(&sb, token.access_token(), &session()).await;
    assert_eq!(refused.status, 403);
    let body = decode_error(&refused.body).expect("error body");
    assert_eq!(
        (body.code_erreur.as_str(), body.code_http),
        ("HABILITATION_INSUFFISANTE", 403)
    );
    // The token is still checked first: a refusal says nothing to whoever has no token.
    assert_eq!(registrations(&sb, "whatever", &session()).await.status, 401);
    sb.allow_registrations(&session());
    assert_eq!(
        registrations(&sb, token.access_token(), &session())
            .await
            .status,
        200
    );

    let control = format!(
        "{}/_sandbox/pole-emploi/refusals?numeroFormation=20_1262663&numeroAction=20_1330305&numeroSession=1330305",
        sb.base_url()
    );
    let put = send(
        client()
            .put(&control)
            .json(&serde_json::json!({"status": 400, "codeErreur": "PARAMETRE_INVALIDE"})),
    )
    .await;
    assert_eq!(put.status, 204);
    let refused = registrations(&sb, token.access_token(), &session()).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        decode_error(&refused.body).expect("error body").code_erreur,
        "PARAMETRE_INVALIDE"
    );
    let not_an_error = send(
        client()
            .put(&control)
            .json(&serde_json::json!({"status": 200, "codeErreur": "OK"})),
    )
    .await;
    assert_eq!(not_an_error.status, 400);
    assert_eq!(send(client().delete(&control)).await.status, 204);
    assert_eq!(
        registrations(&sb, token.access_token(), &session())
            .await
            .status,
        200
    );
    sb.shutdown().await;
}

// ------------------------------------------------------------------------------ ATEXO SEM

#[tokio::test]
async fn returns_are_stored_and_malformed_ones_refused() {
    let sb = start().await;
    let r = AgoraReturn {
        dossier: "PDL-2019-000123".to_string(),
        numero_agora: Some("AG0000000001".to_string()),
        etat: Some(AgoraState::Entre),
        date: chrono::NaiveDate::from_ymd_opt(2019, 9, 3).expect("date"),
        anomalies: Vec::new(),
    };
    let post = |body: String, ct: &'static str| {
        client()
            .post(sb.atexo_sem_returns_url())
            .header("content-type", ct)
            .body(body)
    };
    assert_eq!(
        send(post(encode_return(&r), "application/xml"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(post(
            "<retourAgora dossier=\"x\"".to_string(),
            "application/xml"
        ))
        .await
        .status,
        400
    );
    assert_eq!(
        send(post("<autre/>".to_string(), "application/xml"))
            .await
            .status,
        400
    );
    assert_eq!(
        send(post(encode_return(&r), "application/json"))
            .await
            .status,
        415
    );
    let stored = sb.returns();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].dossier, r.dossier);
    assert_eq!(stored[0].numero_agora, r.numero_agora);
    assert_eq!(stored[0].etat, Some(AgoraState::Entre));

    sb.fail_next(ForcedFault {
        call: Some(Call::AtexoReturn),
        fault: FaultKind::Error503,
        applied: false,
    });
    assert_eq!(
        send(post(encode_return(&r), "application/xml"))
            .await
            .status,
        503
    );
    assert_eq!(sb.returns().len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_journaled() {
    let sb = start().await;
    let a = send(client().get(format!("{}/agora/nowhere", sb.base_url()))).await;
    assert_eq!(a.status, 404);
    assert_eq!(sb.calls(Call::Other).len(), 1);
    sb.reset();
    assert!(sb.journal().is_empty());
    sb.shutdown().await;
}
