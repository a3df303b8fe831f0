//! What hostile ATEXO SEM bodies cost (issue 18, point 2), against a valid export of the same size
//! decoded in the same run.
//!
//! `cargo bench -p passerelle-tests --bench hostile`
//!
//! 1. **Decoder**: each shape of `passerelle_tests::hostile` at just under 10 MiB, decoded whole
//!    (`decode_document_within` with a deadline far away, so the figure is its full cost), median
//!    of a few runs, as a ratio to the valid 10 MiB export's decode.
//! 2. **Why the duplicate check went**: quick-xml's own attribute iteration with its duplicate
//!    check on, over tags of growing size (it doubles the count, the time goes ×4), against the
//!    decoder's iteration without it over a million attributes.
//! 3. **HTTP**: an embedded gateway (default settings: 800 ms decoding budget); each shape posted
//!    four at a time; the time until the last answer, and `/healthz`'s latency meanwhile against
//!    its latency idle.
//!
//! Everything shares the machine with whatever else runs: quote ratios, and only from a quiet run.
//! It prints figures and asserts nothing about them.

use std::time::{Duration, Instant};

use passerelle::settings::Settings;
use passerelle::startup::Application;
use passerelle_adapters::atexo_sem::{decode_document_within, DecodeSettings, DocumentError, Flow};
use passerelle_tests::hostile::{valid_export, SHAPES};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 10 * 1024 * 1024 - 4096;
const AT_ONCE: usize = 4;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Decodes `body` `runs` times; the median time and what came of it.
fn decode(body: &[u8], runs: usize) -> (Duration, String) {
    let settings = DecodeSettings::default();
    let mut times = Vec::new();
    let mut outcome = String::new();
    for _ in 0..runs {
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let r = decode_document_within(body, Flow::Sync, &settings, far);
        times.push(start.elapsed());
        outcome = match r {
            Ok(d) => format!("{} dossiers", d.len()),
            Err(DocumentError::Invalid(v)) => {
                let first = v.0.first().map(|v| v.rule.code()).unwrap_or_default();
                format!("{} entries, first {first}", v.0.len())
            }
            Err(DocumentError::OverBudget { .. }) => "over budget".into(),
        };
    }
    (median(times), outcome)
}

fn decoder() -> Duration {
    let valid = valid_export(SIZE);
    let (baseline, outcome) = decode(&valid, 5);
    println!("\n== 1. decoder, bodies of {} bytes", SIZE);
    println!("{:<24} {:>10} {:>8}  outcome", "shape", "ms", "× valid");
    println!(
        "{:<24} {:>10.1} {:>8.2}  {outcome}",
        "valid export (baseline)",
        ms(baseline),
        1.0
    );
    for shape in SHAPES {
        let body = shape.export(SIZE);
        let (t, outcome) = decode(&body, 3);
        println!(
            "{:<24} {:>10.1} {:>8.2}  {outcome}",
            shape.name,
            ms(t),
            t.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    baseline
}

/// Iterates the attributes of one tag of `n` attributes, with quick-xml's duplicate check or not.
fn iterate_attributes(n: usize, checks: bool) -> Duration {
    let mut tag = String::from("session");
    for i in 0..n {
        tag.push_str(&format!(" a{i:x}=\"\""));
    }
    let start_tag = quick_xml::events::BytesStart::from_content(tag, "session".len());
    let start = Instant::now();
    let mut it = start_tag.attributes();
    it.with_checks(checks);
    let count = it.filter(Result::is_ok).count();
    assert_eq!(count, n);
    start.elapsed()
}

fn duplicate_check() {
    println!("\n== 2. quick-xml's duplicate-attribute check");
    let mut last: Option<Duration> = None;
    for n in [10_000, 20_000, 40_000] {
        let t = iterate_attributes(n, true);
        let growth = last.map_or(String::new(), |l| {
            format!(
                "  (×{:.1} for ×2 attributes)",
                t.as_secs_f64() / l.as_secs_f64()
            )
        });
        println!("checks on,  {n:>9} attributes: {:>10.1} ms{growth}", ms(t));
        last = Some(t);
    }
    if let Some(l) = last {
        // Quadratic: a million is 625 times 40,000 squared... over 40,000 squared.
        let projected = l.as_secs_f64() * (1_000_000f64 / 40_000f64).powi(2);
        println!("checks on,  1,000,000 attributes: ~{projected:.0} s projected");
    }
    let t = iterate_attributes(1_000_000, false);
    println!("checks off, 1,000,000 attributes: {:>10.1} ms", ms(t));
}

async fn post_raw(port: u16, token: String, body: Vec<u8>) -> u16 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/inbound/atexo-sem/dossiers HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&body).await.expect("body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("answer");
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn healthz(http: &reqwest::Client, url: &str) -> Duration {
    let start = Instant::now();
    let r = http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    start.elapsed()
}

async fn http(baseline: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    let env = vec![
        (
            "PASSERELLE__SERVER__BIND".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("PASSERELLE__DATA__DIR".to_string(), d.clone()),
        (
            "PASSERELLE__LEDGER__URL".to_string(),
            format!("sqlite://{d}/passerelle.db"),
        ),
        (
            "PASSERELLE__QUEUE__URL".to_string(),
            format!("embedded:{d}/queue.db"),
        ),
    ];
    let app = Application::build(Settings::load(None, env)?).await?;
    let port = app.port();
    let token = app
        .credentials
        .token(passerelle_adapters::System::AtexoSem)
        .expect("ATEXO SEM posts: it has a token")
        .expose_secret()
        .to_string();
    let running = app.spawn();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(healthz(&client, &url).await);
    }
    let idle = median(idle);
    println!("\n== 3. HTTP, {AT_ONCE} posts at once, 800 ms decoding budget (the default)");
    println!("/healthz idle: {:.2} ms (median of 50)", ms(idle));
    println!(
        "{:<24} {:>12} {:>14} {:>14} {:>12} {:>12}  statuses",
        "shape", "answers (ms)", "× valid decode", "healthz p50 ms", "p50 × idle", "max ms"
    );
    for shape in SHAPES {
        let body = shape.export(SIZE);
        let start = Instant::now();
        let posts: Vec<_> = (0..AT_ONCE)
            .map(|_| tokio::spawn(post_raw(port, token.clone(), body.clone())))
            .collect();
        let mut during = Vec::new();
        while posts.iter().any(|p| !p.is_finished()) {
            during.push(healthz(&client, &url).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed();
        let mut statuses = Vec::new();
        for p in posts {
            statuses.push(p.await?);
        }
        let max = during.iter().max().copied().unwrap_or_default();
        let p50 = if during.is_empty() {
            Duration::ZERO
        } else {
            median(during.clone())
        };
        println!(
            "{:<24} {:>12.0} {:>14.2} {:>14.2} {:>12.1} {:>12.1}  {statuses:?}",
            shape.name,
            ms(elapsed),
            elapsed.as_secs_f64() / baseline.as_secs_f64(),
            ms(p50),
            p50.as_secs_f64() / idle.as_secs_f64(),
            ms(max),
        );
    }
    running.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let baseline = decoder();
    duplicate_check();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(http(baseline))
}
