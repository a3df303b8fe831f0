//! The Pôle emploi poller end to end, over real HTTP: the gateway (embedded) polls the Pôle emploi
//! simulator of a sandbox the test runs itself (so that it can seed registrations, expire tokens,
//! refuse sessions and inject faults in-process), which also plays AGORA. ATEXO SEM dossiers
//! posted to the gateway make the sessions known; the simulator's journal counts every call.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use passerelle_adapters::pole_emploi::SessionRef;
use passerelle_sandbox::{
    Call, CallRecord, FaultKind, Faults, ForcedFault, RunningSandbox, Sandbox, SandboxConfig,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::support::{agora_journal, fixture, gateway, Gateway};

const FORMATION: &str = "20_1262663";
const ACTION: &str = "20_1330305";
/// The poll interval of these tests (the smallest `pole_emploi.poll_interval_s`).
const ROUND: Duration = Duration::from_secs(1);
/// Far less than a round, far more than a retry's backoff (50 to 500 ms here): two calls of one
/// session closer than this are one poll retrying, further apart two rounds.
const SAME_POLL: Duration = Duration::from_millis(800);
const PATIENCE: Duration = Duration::from_secs(30);

/// The gateway and the sandbox it polls and delivers to.
struct Rig {
    sb: RunningSandbox,
    gw: Gateway,
    /// The poller's rounds are timed: these tests take turns with the heavy ones.
    _heavy: tokio::sync::MutexGuard<'static, ()>,
}

async fn rig() -> Rig {
    let _heavy = crate::support::heavy().await;
    let sb = Sandbox::start(SandboxConfig::default())
        .await
        .expect("the sandbox starts");
    let (client_id, client_secret) = sb.pole_emploi_credentials();
    let env: Vec<(&str, String)> = vec![
        ("PASSERELLE__AGORA__BASE_URL", sb.agora_url()),
        ("PASSERELLE__AGORA__TOKEN", sb.agora_token().to_string()),
        ("PASSERELLE__POLE_EMPLOI__AUTH_URL", sb.pole_emploi_url()),
        ("PASSERELLE__POLE_EMPLOI__API_URL", sb.pole_emploi_url()),
        ("PASSERELLE__POLE_EMPLOI__CLIENT_ID", client_id.to_string()),
        (
            "PASSERELLE__POLE_EMPLOI__CLIENT_SECRET",
            client_secret.to_string(),
        ),
        (
            "PASSERELLE__POLE_EMPLOI__SCOPE",
            "api_inscriptionsv1".to_string(),
        ),
        (
            "PASSERELLE__POLE_EMPLOI__POLL_INTERVAL_S",
            ROUND.as_secs().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = gateway(None, &env).await;
    Rig { sb, gw, _heavy }
}

/// One trainee on one session: the NIR-13 varies by `i`, the session by `session`.
struct Trainee {
    nir13: String,
    /// Pôle emploi's number of the registration (`idInscription`: an integer of up to 10 digits).
    id: u64,
    session: SessionRef,
}

impl Trainee {
    fn new(i: u32, session: u32) -> Trainee {
        Trainee {
            nir13: format!("1850775123{:03}", 400 + i),
            id: 4_200_000_000 + u64::from(session) * 1_000 + u64::from(i),
            session: SessionRef {
                numero_formation: FORMATION.into(),
                numero_action: ACTION.into(),
                numero_session: format!("13303{session:02}"),
            },
        }
    }

    /// An ATEXO SEM export of the trainee's dossier, validated by the funder (AGORA: `CREE`).
    fn atexo_validated(&self, i: u32) -> Vec<u8> {
        self.atexo("valide", "PDL-2019-000101", i)
    }

    /// The trainee's ATEXO SEM dossier, registered (`INSCRIT`).
    fn atexo_registered(&self, i: u32) -> Vec<u8> {
        self.atexo("inscrit", "PDL-2019-000100", i)
    }

    fn atexo(&self, fixture_name: &str, fixture_id: &str, i: u32) -> Vec<u8> {
        let n: u64 = self.nir13.parse().expect("digits");
        let nir15 = format!("{}{:02}", self.nir13, 97 - n % 97);
        String::from_utf8(fixture(&format!("atexo_sem/valid/{fixture_name}.xml")))
            .expect("UTF-8")
            .replace(fixture_id, &format!("PDL-2019-9{i:05}"))
            .replace("185077512345608", &nir15)
            .replace(
                "numeroSession=\"1330305\"",
                &format!("numeroSession=\"{}\"", self.session.numero_session),
            )
            .into_bytes()
    }

    /// Pôle emploi's registration of the trainee, typed as France Travail documents it: an
    /// integer id, `YYYY-MM-DD hh:mm:ss` plan dates.
    fn registration(&self, status: &str, entry: Option<&str>) -> Value {
        json!({
            "idInscription": self.id,
            "codeStatutInscription": status,
            "idNationalDE": "a3f9c2e1-0b7d-4c6e-9f10-2d5e8b7a6c41",
            "idRegionalDE": "0676932W",
            "codeGeoDE": "044",
            "nirCertifie": self.nir13,
            "idProjetAction": "PA0000123456",
            "aesRecue": entry.is_some(),
            "dateEntree": entry,
            "listeModuleFormation": [
                {"dateDebut": "2019-09-02 00:00:00", "dateFin": "2019-12-20 00:00:00"}
            ],
        })
    }

    /// The same registration as it is also seen in practice: the id as a string, dates without
    /// their time.
    fn registration_as_strings(&self, status: &str, entry: Option<&str>) -> Value {
        let mut r = self.registration(status, entry);
        r["idInscription"] = json!(self.id.to_string());
        r["listeModuleFormation"] = json!([{"dateDebut": "2019-09-02", "dateFin": "2019-12-20"}]);
        r
    }
}

impl Rig {
    /// Posts the trainee's ATEXO dossier and waits until AGORA created it; its dossier id.
    async fn known(&self, t: &Trainee, i: u32) -> String {
        let id = self
            .gw
            .post_atexo_accepted("atexo", &t.atexo_validated(i))
            .await;
        self.wait_for_agora(&id, "CREE").await;
        id
    }

    async fn wait_for_agora(&self, id: &str, etat: &str) {
        wait(&format!("AGORA has {id} in {etat}"), || async {
            self.sb
                .agora_dossiers()
                .iter()
                .any(|d| d.reference == id && d.etat.as_str() == etat)
        })
        .await;
    }

    /// `GET /v1/dossiers/{id}`.
    async fn dossier(&self, id: &str) -> Value {
        let r = self
            .gw
            .http
            .get(format!("{}/v1/dossiers/{id}", self.gw.url))
            .bearer_auth(self.gw.creds.admin.expose_secret())
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200, "{id}");
        r.json().await.expect("json")
    }

    /// Waits until the dossier's Pôle emploi registration is in `status`; its desired version.
    async fn wait_for_registration(&self, id: &str, status: &str) -> i64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let d = self.dossier(id).await;
            if d["dossier"]["registration"]["status"] == status {
                return d["desired_version"].as_i64().expect("version");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting: {id}'s registration is {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The registration calls of one session, in order.
    fn polls(&self, session: &SessionRef) -> Vec<CallRecord> {
        self.sb
            .calls(Call::PeRegistrations)
            .into_iter()
            .filter(|c| c.reference.as_deref() == Some(session.numero_session.as_str()))
            .collect()
    }

    /// Waits for `rounds` more polls of the session.
    async fn wait_rounds(&self, session: &SessionRef, rounds: usize) {
        let target = self.polls(session).len() + rounds;
        wait(&format!("{rounds} more polls"), || async {
            self.polls(session).len() >= target
        })
        .await;
    }

    /// The dossier's journal entries from Pôle emploi.
    async fn pe_messages(&self, id: &str) -> usize {
        self.dossier(id).await["history"]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["system"] == "pole_emploi")
            .count()
    }

    /// A counter of `GET /metrics` (0 when never incremented).
    async fn metric(&self, name: &str, outcome: &str) -> u64 {
        self.series(&format!("passerelle_{name}_total{{outcome=\"{outcome}\"}}"))
            .await
    }

    /// One series of `GET /metrics`, named with its labels (0 when never incremented).
    async fn series(&self, series: &str) -> u64 {
        let text = self
            .gw
            .http
            .get(format!("{}/metrics", self.gw.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let series = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().expect("a count"))
    }

    /// No poll ended in failure.
    async fn assert_no_failed_poll(&self) {
        for outcome in [
            "refused",
            "unauthorized",
            "exhausted",
            "unreadable",
            "unavailable",
        ] {
            assert_eq!(
                self.metric("pole_emploi_polls", outcome).await,
                0,
                "{outcome}"
            );
        }
    }

    async fn stop(self) {
        self.gw.stop().await;
        self.sb.shutdown().await;
    }
}

async fn wait<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The time between two calls, on the sandbox's monotonic clock.
fn gap(a: &CallRecord, b: &CallRecord) -> Duration {
    Duration::from_micros(b.since_start_us.saturating_sub(a.since_start_us))
}

fn at(c: &CallRecord) -> DateTime<Utc> {
    c.at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_becomes_an_entry_reaches_agora_once() {
    let rig = rig().await;
    let t = Trainee::new(1, 1);
    let id = rig.known(&t, 1).await;
    let v0 = rig.dossier(&id).await["desired_version"]
        .as_i64()
        .expect("version");
    let stranger = Trainee::new(2, 1);
    let mut invalid = t.registration("ICR", None);
    invalid["nirCertifie"] = json!("12345");
    // The stranger's registration as seen in practice (an id as a string): read all the same.
    let answer =
        |mine: Value| json!([mine, stranger.registration_as_strings("ICR", None), invalid]);

    // Waiting for a decision (PFR): news for the ledger, nothing for AGORA (validated is ahead).
    rig.sb
        .set_registrations_json(&t.session, answer(t.registration("PFR", None)));
    let v1 = rig.wait_for_registration(&id, "awaiting_decision").await;
    assert_eq!(v1, v0 + 1);
    // Retained after the information meeting (ICR).
    rig.sb
        .set_registrations_json(&t.session, answer(t.registration("ICR", None)));
    let v2 = rig.wait_for_registration(&id, "retained").await;
    assert_eq!(v2, v1 + 1, "one version per change");

    // The same answer, poll after poll: no new version, no journal entry, no task. Written
    // with string ids and dates without time, it is still the same registration.
    rig.wait_rounds(&t.session, 2).await;
    rig.sb
        .set_registrations_json(&t.session, answer(t.registration_as_strings("ICR", None)));
    rig.wait_rounds(&t.session, 2).await;
    assert_eq!(rig.dossier(&id).await["desired_version"], v2);
    assert_eq!(rig.pe_messages(&id).await, 2);
    assert_eq!(
        rig.dossier(&id).await["dossier"]["registration"]["id"],
        t.id.to_string()
    );

    // The AES arrives: the dossier enters training, and AGORA hears of it once.
    rig.sb.set_registrations_json(
        &t.session,
        answer(t.registration("ICR", Some("2019-09-02"))),
    );
    rig.wait_for_agora(&id, "ENTRE").await;
    let d = rig.dossier(&id).await;
    assert_eq!(d["dossier"]["state"], "entered");
    assert_eq!(d["dossier"]["entry"]["date"], "2019-09-02");
    let v3 = d["desired_version"].as_i64().expect("version");
    assert_eq!(v3, v2 + 1);
    rig.wait_rounds(&t.session, 3).await;
    let d = rig.dossier(&id).await;
    assert_eq!(d["desired_version"], v3, "nothing new after the entry");
    assert_eq!(d["delivery"]["agora"]["status"], "delivered");
    assert_eq!(
        rig.pe_messages(&id).await,
        3,
        "one journal entry per change"
    );

    let journal = agora_journal(&serde_json::to_value(rig.sb.journal()).expect("journal"));
    journal.assert_nothing_sent_twice();
    assert_eq!(
        journal.applied.get(&id).map(Vec::as_slice),
        Some(&["agora_create".to_string(), "agora_enter".to_string()][..]),
        "{:?}",
        journal.trace.get(&id)
    );
    let enters = rig
        .sb
        .calls(Call::AgoraEnter)
        .iter()
        .filter(|c| c.reference.as_deref() == Some(id.as_str()))
        .count();
    assert_eq!(enters, 1, "the entry was sent once");

    assert_eq!(rig.metric("pole_emploi_registrations", "changed").await, 3);
    assert!(rig.metric("pole_emploi_registrations", "unchanged").await >= 6);
    assert!(rig.metric("pole_emploi_registrations", "unmatched").await >= 9);
    assert!(
        rig.series(
            "passerelle_pole_emploi_registrations_total{outcome=\"invalid\",rule=\"schema.pattern\"}"
        )
        .await
            >= 9
    );
    assert!(rig.metric("pole_emploi_polls", "ok").await >= 9);
    rig.assert_no_failed_poll().await;
    // The stranger, whose dossier the Region does not have, is nowhere.
    assert_eq!(rig.sb.agora_dossiers().len(), 1);
    rig.stop().await;
}

/// A Pôle emploi refusal (`ICA`: absent; `ICN`: not retained) for a dossier AGORA already holds
/// (`CREE`) cancels it there (`annulation`), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_pole_emploi_cancels_a_dossier_agora_holds() {
    let rig = rig().await;
    let trainees = [
        (Trainee::new(1, 70), "ICA", "absent"),
        (Trainee::new(2, 71), "ICN", "not_retained"),
    ];
    let mut ids = Vec::new();
    for (i, (t, _, _)) in trainees.iter().enumerate() {
        let i = u32::try_from(i).expect("small") + 70;
        let id = rig
            .gw
            .post_atexo_accepted("atexo", &t.atexo_registered(i))
            .await;
        rig.wait_for_agora(&id, "CREE").await;
        ids.push(id);
    }
    for (t, status, _) in &trainees {
        rig.sb
            .set_registrations_json(&t.session, json!([t.registration(status, None)]));
    }
    for ((_, _, status), id) in trainees.iter().zip(&ids) {
        rig.wait_for_agora(id, "ANNULE").await;
        rig.wait_for_registration(id, status).await;
    }
    // A refused dossier's session is no longer polled; whatever was under way has two rounds to
    // send anything more (it must not).
    tokio::time::sleep(ROUND * 2).await;
    let journal = agora_journal(&serde_json::to_value(rig.sb.journal()).expect("journal"));
    journal.assert_nothing_sent_twice();
    for id in &ids {
        assert_eq!(
            journal.applied.get(id).map(Vec::as_slice),
            Some(&["agora_create".to_string(), "agora_cancel".to_string()][..]),
            "{:?}",
            journal.trace.get(id)
        );
    }
    rig.assert_no_failed_poll().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_once_without_a_failed_poll() {
    let rig = rig().await;
    let trainees: Vec<Trainee> = (1..=3).map(|i| Trainee::new(i, 10 + i)).collect();
    let mut ids = Vec::new();
    for (i, t) in (1..).zip(&trainees) {
        ids.push(rig.known(t, i).await);
        rig.sb
            .set_registrations_json(&t.session, json!([t.registration("ICR", None)]));
    }
    for id in &ids {
        rig.wait_for_registration(id, "retained").await;
    }
    assert_eq!(rig.sb.pe_token_requests(), 1, "one token for every poll");

    rig.sb.expire_pe_tokens();
    for t in &trainees {
        rig.wait_rounds(&t.session, 3).await;
    }
    assert_eq!(rig.sb.pe_token_requests(), 2, "one refresh, shared");
    let refused = rig
        .sb
        .calls(Call::PeRegistrations)
        .iter()
        .filter(|c| c.status == Some(401))
        .count();
    assert!(
        (1..=trainees.len()).contains(&refused),
        "at most the polls in flight met the expired token: {refused}"
    );
    rig.assert_no_failed_poll().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out() {
    let rig = rig().await;
    rig.sb
        .set_faults(Faults {
            retry_after_s: 1,
            ..Faults::none()
        })
        .expect("faults");
    let t = Trainee::new(1, 20);
    let id = rig.known(&t, 1).await;
    let before = rig.polls(&t.session).len();
    for _ in 0..4 {
        rig.sb.fail_next(ForcedFault {
            call: Some(Call::PeRegistrations),
            fault: FaultKind::RateLimited,
            applied: false,
        });
    }
    rig.sb
        .set_registrations_json(&t.session, json!([t.registration("ICR", None)]));
    rig.wait_for_registration(&id, "retained").await;

    let polls = rig.polls(&t.session).split_off(before);
    let first_ok = polls
        .iter()
        .position(|c| c.status == Some(200))
        .expect("a successful poll");
    assert_eq!(first_ok, 4, "four 429s, then the answer: {polls:?}");
    for pair in polls[..=first_ok].windows(2) {
        assert!(
            gap(&pair[0], &pair[1]) >= Duration::from_millis(990),
            "Retry-After: 1 not honoured: {} then {}",
            at(&pair[0]),
            at(&pair[1])
        );
    }
    rig.assert_no_failed_poll().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_within_the_poll() {
    let rig = rig().await;
    let t = Trainee::new(1, 30);
    // Before the first poll, so the first token call meets its fault too.
    for (call, fault) in [
        (Call::PeToken, FaultKind::Error503),
        (Call::PeRegistrations, FaultKind::Error500),
        (Call::PeRegistrations, FaultKind::Error503),
        (Call::PeRegistrations, FaultKind::Drop),
    ] {
        rig.sb.fail_next(ForcedFault {
            call: Some(call),
            fault,
            applied: false,
        });
    }
    rig.sb
        .set_registrations_json(&t.session, json!([t.registration("ICR", None)]));
    let id = rig.known(&t, 1).await;
    rig.wait_for_registration(&id, "retained").await;

    let polls = rig.polls(&t.session);
    let statuses: Vec<_> = polls.iter().take(4).map(|c| c.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(503), None, Some(200)]);
    for pair in polls[..4].windows(2) {
        assert!(
            gap(&pair[0], &pair[1]) < SAME_POLL,
            "retried within the poll, not at the next round"
        );
    }
    let tokens = rig.sb.calls(Call::PeToken);
    assert_eq!(
        tokens.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![Some(503), Some(200)]
    );
    rig.assert_no_failed_poll().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_forbidden_sessions_are_not_retried() {
    let rig = rig().await;
    let forbidden = Trainee::new(1, 40);
    let bad = Trainee::new(2, 41);
    rig.sb
        .refuse_registrations(&forbidden.session, 403, "HABILITATION_INSUFFISANTE");
    rig.sb
        .refuse_registrations(&bad.session, 400, "PARAMETRE_INVALIDE");
    let id = rig.known(&forbidden, 1).await;
    rig.known(&bad, 2).await;
    rig.wait_rounds(&forbidden.session, 3).await;
    rig.wait_rounds(&bad.session, 3).await;

    for t in [&forbidden, &bad] {
        let polls = rig.polls(&t.session);
        assert!(polls.len() >= 3);
        for pair in polls.windows(2) {
            assert!(
                gap(&pair[0], &pair[1]) >= SAME_POLL,
                "{}: a refused poll was retried ({} then {})",
                t.session.numero_session,
                at(&pair[0]),
                at(&pair[1])
            );
        }
    }
    assert!(rig.metric("pole_emploi_polls", "refused").await >= 6);
    assert_eq!(
        rig.sb.pe_token_requests(),
        1,
        "a 400 or 403 asks no new token"
    );

    // Once Pôle emploi lets passerelle see the session, its registrations come in.
    rig.sb.allow_registrations(&forbidden.session);
    rig.sb.set_registrations_json(
        &forbidden.session,
        json!([forbidden.registration("ICR", None)]),
    );
    rig.wait_for_registration(&id, "retained").await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_after_a_fresh_token_is_an_error_not_a_loop() {
    let rig = rig().await;
    let t = Trainee::new(1, 50);
    rig.sb
        .refuse_registrations(&t.session, 401, "JETON_INVALIDE");
    rig.known(&t, 1).await;
    rig.wait_rounds(&t.session, 6).await;

    // Each round: the call, one new token, the call again; then the next round.
    let polls = rig.polls(&t.session);
    let rounds = polls.len() / 2;
    for (i, pair) in polls.windows(2).enumerate() {
        let same_round = i % 2 == 0;
        assert_eq!(
            gap(&pair[0], &pair[1]) < SAME_POLL,
            same_round,
            "call {i} and {}: {} then {}",
            i + 1,
            at(&pair[0]),
            at(&pair[1])
        );
    }
    assert!(rig.metric("pole_emploi_polls", "unauthorized").await >= rounds as u64);
    let tokens = rig.sb.pe_token_requests();
    assert!(
        tokens <= polls.len() / 2 + 2,
        "one refresh per round, no more: {tokens} tokens for {} calls",
        polls.len()
    );
    rig.stop().await;
}

/// A registration the gateway cannot read does not vanish into a log line: it is counted under
/// its rule, listed masked with its rule and pointer by `GET /v1/unreadable` (once, however many
/// polls see it), and `/readyz` reports Pôle emploi degraded, still answering 200. Once Pôle
/// emploi sends readable registrations again, `/readyz` reports it ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_registration_is_counted_listed_and_reported() {
    let rig = rig().await;
    let t = Trainee::new(1, 40);
    let id = rig.known(&t, 1).await;
    // A registration with an id Pôle emploi does not write (letters), and one with a
    // calendar-impossible entry date.
    let mut bad_id = t.registration("ICR", None);
    bad_id["idInscription"] = json!("INS-42");
    let other = Trainee::new(2, 40);
    let mut bad_date = other.registration("ICR", Some("2019-02-30"));
    bad_date["idNationalDE"] = json!("secret-national-id");
    rig.sb
        .set_registrations_json(&t.session, json!([bad_id, bad_date]));
    rig.wait_rounds(&t.session, 3).await;

    assert!(
        rig.series(
            "passerelle_pole_emploi_registrations_total{outcome=\"invalid\",rule=\"schema.pattern\"}"
        )
        .await
            >= 2
    );
    assert!(
        rig.series(
            "passerelle_pole_emploi_registrations_total{outcome=\"invalid\",rule=\"date.format\"}"
        )
        .await
            >= 2
    );

    let listed: Value = rig
        .gw
        .http
        .get(format!("{}/v1/unreadable?system=pole-emploi", rig.gw.url))
        .bearer_auth(rig.gw.creds.admin.expose_secret())
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let rows = listed.as_array().expect("a list");
    assert_eq!(
        rows.len(),
        2,
        "one entry per registration, not per poll: {listed:#}"
    );
    let by_pointer = |p: &str| {
        rows.iter()
            .find(|r| {
                r["violations"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v["pointer"] == p))
            })
            .unwrap_or_else(|| panic!("no entry with {p}: {listed:#}"))
    };
    let id_row = by_pointer("/0/idInscription");
    assert_eq!(id_row["violations"][0]["rule"], "schema.pattern");
    assert_eq!(id_row["masked_item"]["idInscription"], "INS-42");
    // The NIR as every view masks it (issue 18): its first character and its length.
    assert_eq!(
        id_row["masked_item"]["nirCertifie"],
        passerelle_adapters::canonical::Identifier::Nir.mask(&t.nir13)
    );
    assert_eq!(id_row["context"]["numeroSession"], t.session.numero_session);
    assert!(id_row["seen"].as_i64().expect("seen") >= 2, "{id_row:#}");
    let date_row = by_pointer("/1/dateEntree");
    assert_eq!(date_row["violations"][0]["rule"], "date.format");
    let text = listed.to_string();
    for personal in [
        t.nir13.as_str(),
        other.nir13.as_str(),
        "secret-national-id",
        "0676932W",
    ] {
        assert!(
            !text.contains(personal),
            "a personal value is listed: {text}"
        );
    }
    // Operators only.
    let anonymous = rig
        .gw
        .http
        .get(format!("{}/v1/unreadable", rig.gw.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), 401);

    let ready = rig.readyz().await;
    assert_eq!(ready.0, 200, "reported, never gating: {:#}", ready.1);
    assert_eq!(
        ready.1["pole_emploi"]["status"], "degraded",
        "{:#}",
        ready.1
    );
    assert_eq!(
        ready.1["pole_emploi"]["last_round"]["unreadable_registrations"],
        2
    );

    // Pôle emploi mends its answer: readable again, and the dossier gets its registration.
    rig.sb
        .set_registrations_json(&t.session, json!([t.registration("ICR", None)]));
    rig.wait_for_registration(&id, "retained").await;
    rig.wait_rounds(&t.session, 2).await;
    // `/readyz` may serve an answer up to a second old.
    wait("Pôle emploi reported ok again", || async {
        rig.readyz().await.1["pole_emploi"]["status"] == "ok"
    })
    .await;
    rig.stop().await;
}

impl Rig {
    /// `GET /readyz`: status and body.
    async fn readyz(&self) -> (u16, Value) {
        let r = self
            .gw
            .http
            .get(format!("{}/readyz", self.gw.url))
            .send()
            .await
            .expect("answer");
        (r.status().as_u16(), r.json().await.expect("json"))
    }
}
