//! The gateway under measurement: booted in-process with production services (PostgreSQL
//! ledger, RabbitMQ queue) and AGORA played by its sandbox; posts ATEXO SEM documents, reads its
//! metrics, and waits until every dossier is in its target state in AGORA, checked on the sandbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use passerelle::ledger::{Ledger, AGORA};
use passerelle::settings::Settings;
use passerelle::startup::{Application, RunningApp};
use passerelle_adapters::atexo_sem::Flow;
use passerelle_adapters::planner::{target, Target};
use passerelle_tests::generate::{single_dossier_exports, GenOptions, Outcome};
use secrecy::ExposeSecret;

use super::{postgres_url, Scratch, AMQP_ADDR, HTTP_IN_FLIGHT, POLL};

pub(crate) struct Gateway {
    pub(crate) running: RunningApp,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) sandbox_url: String,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) http: reqwest::Client,
    pub(crate) sync_concurrency: u16,
    _sandbox: passerelle_sandbox::RunningSandbox,
    _dir: tempfile::TempDir,
}

/// The settings of both gateways: production services, rate limit lifted, then whatever
/// `PASSERELLE__*` the caller set.
pub(crate) fn gateway_vars(scratch: &str, dir: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("PASSERELLE__SERVER__BIND", "127.0.0.1:0".to_string()),
        ("PASSERELLE__DATA__DIR", dir.to_string()),
        ("PASSERELLE__LEDGER__URL", postgres_url(scratch)),
        (
            "PASSERELLE__QUEUE__URL",
            format!("amqp://guest:guest@{AMQP_ADDR}/{scratch}"),
        ),
        ("PASSERELLE__SERVER__RATE_PER_SECOND", "1000000".to_string()),
        ("PASSERELLE__SERVER__RATE_BURST", "1000000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("PASSERELLE__")));
    vars
}

impl Gateway {
    pub(crate) async fn boot(scratch: &Scratch) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let mut vars = gateway_vars(&scratch.name, &dir.path().display().to_string());
        // A production configuration refuses the built-in sandbox: AGORA is one run here, in
        // this process as before.
        let sandbox =
            passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig::default())
                .await
                .context("the sandbox did not start")?;
        ensure!(
            !vars.iter().any(|(k, _)| k == "PASSERELLE__AGORA__BASE_URL"),
            "PASSERELLE__AGORA__BASE_URL must stay unset: the benchmark reads AGORA's state from its own sandbox"
        );
        vars.push(("PASSERELLE__AGORA__BASE_URL".into(), sandbox.agora_url()));
        vars.push((
            "PASSERELLE__AGORA__TOKEN".into(),
            sandbox.agora_token().into(),
        ));
        let settings = Settings::load(None, vars)?;
        let sync_concurrency = settings.worker.sync_concurrency;
        let app = Application::build(settings).await?;
        let url = format!("http://127.0.0.1:{}", app.port());
        let token = app
            .credentials
            .token(passerelle_adapters::System::AtexoSem)
            .expect("ATEXO SEM posts: it has a token")
            .expose_secret()
            .to_string();
        let sandbox_url = sandbox.base_url();
        let ledger = app.ledger.clone();
        Ok(Gateway {
            running: app.spawn(),
            url,
            token,
            sandbox_url,
            ledger,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(4 * HTTP_IN_FLIGHT)
                .build()?,
            sync_concurrency,
            _sandbox: sandbox,
            _dir: dir,
        })
    }

    /// Posts one ATEXO SEM document: the status, and the dossier id when it is a `202`.
    pub(crate) async fn post(&self, xml: Vec<u8>) -> anyhow::Result<(u16, Option<String>)> {
        let r = self
            .http
            .post(format!("{}/v1/inbound/atexo-sem/dossiers", self.url))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/xml")
            .body(xml)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
        if status != 202 {
            return Ok((status, None));
        }
        let dossiers = body["dossiers"]
            .as_array()
            .context("202 without dossiers")?;
        ensure!(
            dossiers.len() == 1 && dossiers[0]["status"] == "accepted",
            "one dossier accepted in perimeter expected: {body}"
        );
        let id = dossiers[0]["dossier_id"]
            .as_str()
            .context("202 without dossier_id")?;
        Ok((status, Some(id.to_string())))
    }

    pub(crate) async fn sandbox_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/_sandbox/{path}", self.sandbox_url))
            .send()
            .await?;
        ensure!(r.status() == 200, "sandbox {path}: {}", r.status());
        Ok(r.json().await?)
    }

    pub(crate) async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?;
        // Only unlabelled samples (histogram sums and counts): the rest is not needed here.
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Waits until every dossier is delivered: nothing pending in the ledger, then every target
    /// confirmed in the sandbox. Fails on a timeout, or when the ledger has nothing pending but the
    /// sandbox still disagrees (a dossier lost, dead-lettered, duplicated).
    pub(crate) async fn wait_delivered(
        &self,
        expected: &HashMap<String, Target>,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut settled_since: Option<Instant> = None;
        loop {
            let pending = self.ledger.pending(AGORA, Duration::ZERO, 1).await?;
            if pending.is_empty() {
                let seen = Instant::now();
                let since = *settled_since.get_or_insert(seen);
                match self.check(expected).await? {
                    Ok(()) => return Ok(seen),
                    Err(problems) if since.elapsed() > Duration::from_secs(5) => {
                        bail!(
                            "the ledger has nothing pending but AGORA disagrees:\n{}",
                            self.explain(problems).await
                        )
                    }
                    Err(_) => {}
                }
            } else {
                settled_since = None;
            }
            if Instant::now() > deadline {
                let left = self
                    .ledger
                    .pending(AGORA, Duration::ZERO, 1_000_000)
                    .await?;
                bail!(
                    "not delivered after {timeout:?}: {} dossiers still pending (e.g. {:?})",
                    left.len(),
                    left.iter().take(3).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether AGORA holds exactly what the dossiers must give: the problems, per dossier id.
    pub(crate) async fn check(
        &self,
        expected: &HashMap<String, Target>,
    ) -> anyhow::Result<Result<(), Vec<(String, String)>>> {
        let dossiers = self.sandbox_get("agora/dossiers").await?;
        let creations = self.sandbox_get("agora/creations").await?;
        let mut problems = Vec::new();
        let mut held: HashMap<String, Vec<String>> = HashMap::new();
        for d in dossiers.as_array().context("dossiers: not a list")? {
            let reference = d["reference"].as_str().unwrap_or("?").to_string();
            let etat = d["etat"].as_str().unwrap_or("?").to_string();
            held.entry(reference).or_default().push(etat);
        }
        for (id, t) in expected {
            let got = held.get(id).map(Vec::as_slice).unwrap_or_default();
            let ok = match t {
                Target::State(s) => got == [s.as_str()],
                // Brand-new dossiers: AGORA never had them, so it must not have them now.
                Target::CancelIfPresent | Target::Nothing => got.is_empty(),
            };
            if !ok {
                problems.push((id.clone(), format!("expected {t:?}, AGORA holds {got:?}")));
            }
        }
        for (reference, etats) in &held {
            if !expected.contains_key(reference) {
                problems.push((
                    reference.clone(),
                    format!("not posted, AGORA holds {etats:?}"),
                ));
            }
        }
        let owed = expected
            .values()
            .filter(|t| matches!(t, Target::State(_)))
            .count() as u64;
        let mut created = 0;
        for c in creations.as_array().context("creations: not a list")? {
            let n = c["created"].as_u64().unwrap_or(0);
            created += n;
            if n != 1 {
                problems.push((
                    c["identity"].as_str().unwrap_or("?").to_string(),
                    format!("identity created {n} times: {c}"),
                ));
            }
        }
        if created != owed {
            problems.push((
                "*".into(),
                format!("{created} dossiers created in AGORA for {owed} owed"),
            ));
        }
        Ok(if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        })
    }

    pub(crate) async fn explain(&self, problems: Vec<(String, String)>) -> String {
        let mut out = format!("{} problems; the first ones:\n", problems.len());
        for (id, what) in problems.iter().take(5) {
            out.push_str(&format!("  {id}: {what}"));
            if let Ok(Some(row)) = self.ledger.dossier(id).await {
                out.push_str(&format!(
                    " (ledger: {:?}, attempts {}, last error {:?}, waiting for {:?})",
                    row.delivery.status,
                    row.delivery.attempts,
                    row.delivery.last_error,
                    row.delivery.waiting_for
                ));
            }
            out.push('\n');
        }
        out
    }

    pub(crate) async fn stop(self) {
        self.running.stop().await;
    }
}

/// N generated dossiers, one document each, with the AGORA target of each.
pub(crate) fn generated(seed: u64, count: usize) -> anyhow::Result<Vec<(Vec<u8>, Target)>> {
    let exports = single_dossier_exports(&GenOptions {
        seed,
        count,
        flow: Flow::Sync,
        invalid_share: 0.0,
        out_of_perimeter_share: 0.0,
        before_2017_share: 0.0,
    })?;
    exports
        .into_iter()
        .map(|e| match e.truth.outcome {
            Outcome::Valid(state) => Ok((e.xml, target(state))),
            other => bail!("{}: generated as {other:?}, not valid", e.id),
        })
        .collect()
}

/// The expected target of each dossier id the gateway answered; two documents giving the same
/// dossier would make the counts meaningless.
pub(crate) fn expectations(
    answered: impl IntoIterator<Item = (String, Target)>,
) -> anyhow::Result<HashMap<String, Target>> {
    let mut expected = HashMap::new();
    for (id, t) in answered {
        ensure!(
            expected.insert(id.clone(), t).is_none(),
            "two generated documents are the same dossier {id}: change the seed"
        );
    }
    Ok(expected)
}

/// The fewest AGORA calls a brand-new dossier needs to reach its target.
pub(crate) fn fewest_calls(t: Target) -> usize {
    use passerelle_adapters::planner::AgoraState::*;
    match t {
        Target::Nothing => 0,
        Target::CancelIfPresent => 1,
        Target::State(Cree | Annule) => 2,
        Target::State(Entre) => 3,
        Target::State(Sorti) => 4,
        Target::State(Solde) => 5,
    }
}
