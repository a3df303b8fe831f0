//! The operator console in a real browser: Debian's headless Chromium driven over WebDriver
//! against a gateway booted on a random port with its AGORA sandbox; and the search API it shares
//! (`GET /v1/dossiers`).
//!
//! The browser is driven with fantoccini (no TLS, no driver manager: a chromedriver started here,
//! on a free port). Chromium runs headless, with no network beyond loopback: every host name but
//! 127.0.0.1 resolves to nothing, background services are off.
//! A missing `chromium` or `chromedriver` fails the test under `CI=true` (`tests/services.sh`
//! installs them) and skips it elsewhere, saying so.
//!
//! Each page's screenshot is written under `$PASSERELLE_CONSOLE_SCREENSHOTS`, by default
//! `target/tmp/console-screenshots/`.

use crate::support::PostingCredentials as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::Locator;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::support::{atexo_returns, fixture, gateway, gateway_on, Gateway};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PERSONAL_DATA_TOKEN: &str = "pd-console-7d3e91b0c2a4";
const REFUSED_CERTIFICATION: &str = "RNCP11111";
/// What the admin token must never see: the fixture's NIR (and its 13 first characters), names
/// and birth date, in every spelling the gateway could give them.
const PERSONAL: [&str; 6] = [
    "1850775123456",
    "DUPONT",
    "Jean Pierre",
    "12/07/1985",
    "1985-07-12",
    "0676932W",
];

// ---------------------------------------------------------------------------------------------
// The browser: chromedriver on a free port, driven with fantoccini.

/// A headless Chromium session and the chromedriver it runs under (killed on drop).
struct Driver {
    process: Child,
    web: fantoccini::Client,
    shots: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Chromium and its driver, or `None` (skip) outside CI when they are not installed.
fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{CHROMIUM} and {CHROMEDRIVER} are required under CI=true (tests/services.sh \
             installs Debian's chromium and chromium-driver)"
        );
        eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} is not installed");
    }
    present
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Driver {
    async fn start(profile: &Path) -> Driver {
        let port = free_port();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--disable-extensions",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--lang=fr-FR",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        // Plain HTTP to the chromedriver on loopback: no TLS connector.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        // chromedriver listens a moment after it starts.
        let deadline = Instant::now() + Duration::from_secs(20);
        let web = loop {
            match fantoccini::ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&base)
                .await
            {
                Ok(web) => break web,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let shots = std::env::var_os("PASSERELLE_CONSOLE_SCREENSHOTS").map_or_else(
            || Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Driver {
            process,
            web,
            shots,
        }
    }

    async fn goto(&self, url: &str) {
        self.web.goto(url).await.expect("navigation");
    }

    async fn url(&self) -> String {
        self.web.current_url().await.expect("url").to_string()
    }

    async fn source(&self) -> String {
        self.web.source().await.expect("source")
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.web
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn count(&self, css: &str) -> usize {
        self.web
            .find_all(Locator::Css(css))
            .await
            .expect("elements")
            .len()
    }

    async fn type_in(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.expect("typed");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("clicked");
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn cookies(&self) -> Vec<fantoccini::cookies::Cookie<'static>> {
        self.web.get_all_cookies().await.expect("cookies")
    }

    /// Runs `script` in the page and returns what it returns.
    async fn execute(&self, script: &str) -> Value {
        self.web.execute(script, Vec::new()).await.expect("script")
    }

    /// Presses and releases the Tab key, as a keyboard user moves to the next stop.
    async fn press_tab(&self) {
        let tab = char::from(Key::Tab);
        let keys = KeyActions::new("keyboard".to_string())
            .then(KeyAction::Down { value: tab })
            .then(KeyAction::Up { value: tab });
        self.web.perform_actions(keys).await.expect("Tab");
    }

    /// Saves the page as `name.png`, checks its accessibility ([`assert_accessible`]) and
    /// returns its source.
    async fn shot(&self, name: &str) -> String {
        let png = self.web.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("screenshot file");
        assert_accessible(self, name).await;
        self.source().await
    }

    async fn quit(self) {
        let _ = self.web.clone().close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway's side.

fn atexo(id: &str, session: &str, certification: &str) -> Vec<u8> {
    let xml = String::from_utf8(fixture("atexo_sem/valid/entre.xml")).expect("UTF-8");
    let xml = xml
        .replace("id=\"PDL-2019-000102\"", &format!("id=\"{id}\""))
        .replace(
            "numeroSession=\"1330305\"",
            &format!("numeroSession=\"{session}\""),
        )
        .replace(
            "certification=\"RNCP34567\"",
            &format!("certification=\"{certification}\""),
        );
    assert!(xml.contains(id) && xml.contains(certification));
    xml.into_bytes()
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn api(gw: &Gateway, path: &str) -> Value {
    let base = gw.admin_url.as_deref().unwrap_or(&gw.url);
    let r = gw
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(gw.creds.admin.expose_secret())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("json")
}

/// The dossier's AGORA number once AGORA holds it in `etat`.
async fn agora_number(gw: &Gateway, dossier: &str, etat: &str) -> String {
    eventually(&format!("{dossier} in AGORA as {etat}"), || async {
        let agora = gw.agora().await;
        agora.as_array()?.iter().find_map(|d| {
            (d["reference"] == dossier && d["etat"] == etat)
                .then(|| d["numero_agora"].as_str().map(str::to_string))
                .flatten()
        })
    })
    .await
}

async fn open_dead_letters(gw: &Gateway, n: usize) -> Vec<Value> {
    eventually(&format!("{n} open dead letter(s)"), || async {
        let list = api(gw, "/v1/dead-letters").await;
        let list = list.as_array().cloned().unwrap_or_default();
        (list.len() == n).then_some(list)
    })
    .await
}

async fn refuse_certification(gw: &Gateway) {
    let r = gw
        .http
        .post(format!("{}/_sandbox/agora/refusals", gw.sandbox_url))
        .json(
            &json!({"champ": "/formation/certification", "valeur": REFUSED_CERTIFICATION,
                      "code": "AG-CERTIF"}),
        )
        .send()
        .await
        .expect("sandbox");
    assert_eq!(r.status(), 204);
}

async fn lift_refusals(gw: &Gateway) {
    let r = gw
        .http
        .delete(format!("{}/_sandbox/agora/refusals", gw.sandbox_url))
        .send()
        .await
        .expect("sandbox");
    assert_eq!(r.status(), 204);
}

fn assert_no_personal_data(page: &str, source: &str) {
    for p in PERSONAL {
        assert!(!source.contains(p), "{page} shows {p:?} to the admin token");
    }
}

/// What the accessibility check finds wrong with the page in the browser: the page's language,
/// its one `main` landmark, unique ids, a label for every form control, no positive `tabindex`,
/// every link and button focusable and named, text contrast (WCAG AA), an `alt` on every image
/// and a name on every drawing.
const ACCESSIBILITY_FAULTS: &str = r#"
const faults = [];
const lang = document.documentElement.getAttribute('lang');
if (lang !== 'fr') faults.push('html lang=' + lang);
const mains = document.querySelectorAll('main').length;
if (mains !== 1) faults.push(mains + ' main landmark(s)');
const ids = new Set();
for (const el of document.querySelectorAll('[id]')) {
  if (ids.has(el.id)) faults.push('duplicate id ' + el.id);
  ids.add(el.id);
}
const short = (el) => el.outerHTML.slice(0, 160);
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const label = el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
  const named = (label && label.textContent.trim()) || (el.closest('label') && el.closest('label').textContent.trim())
    || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!named) faults.push('no label: ' + short(el));
}
for (const el of document.querySelectorAll('[tabindex]')) {
  if (parseInt(el.getAttribute('tabindex'), 10) > 0) faults.push('positive tabindex: ' + short(el));
}
for (const el of document.querySelectorAll('a, button')) {
  if (el.tagName === 'A' && !el.hasAttribute('href')) faults.push('link without href: ' + short(el));
  if (el.tabIndex < 0 || el.disabled) faults.push('out of the tab order: ' + short(el));
  if (!(el.textContent.trim() || el.getAttribute('aria-label'))) faults.push('no name: ' + short(el));
  el.focus();
  if (document.activeElement !== el) faults.push('cannot take the focus: ' + short(el));
}
if (document.activeElement) document.activeElement.blur();
for (const img of document.querySelectorAll('img')) {
  if (!img.hasAttribute('alt')) faults.push('image without alt: ' + short(img));
}
// Text contrast (WCAG 2 AA): 4.5:1, 3:1 for large text, against the first opaque background.
const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
const lum = (c) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
};
const background = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c;
  }
  return [255, 255, 255];
};
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg') || !Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const st = getComputedStyle(el);
  if (st.display === 'none' || st.visibility === 'hidden') continue;
  const [a, b] = [lum(rgb(st.color)), lum(background(el))].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const size = parseFloat(st.fontSize);
  const large = size >= 24 || (parseInt(st.fontWeight, 10) >= 700 && size >= 18.66);
  if (ratio < (large ? 3 : 4.5)) faults.push('contrast ' + ratio.toFixed(2) + ': ' + short(el));
}
for (const svg of document.querySelectorAll('svg')) {
  if (svg.getAttribute('role') !== 'img' || !(svg.getAttribute('aria-labelledby') || svg.getAttribute('aria-label')))
    faults.push('drawing without role=img and a name: ' + short(svg));
}
return faults;
"#;

/// Marks every link and button of the page with its index (`data-k`) and returns how many.
const MARK_TAB_STOPS: &str = r#"
const stops = document.querySelectorAll('a[href], button');
stops.forEach((el, i) => el.setAttribute('data-k', String(i)));
if (document.activeElement) document.activeElement.blur();
return stops.length;
"#;

/// Checks the page the browser shows (see [`ACCESSIBILITY_FAULTS`]), then walks it with the Tab
/// key from the top: every link and button is reached.
async fn assert_accessible(d: &Driver, page: &str) {
    let faults = d.execute(ACCESSIBILITY_FAULTS).await;
    assert_eq!(faults, json!([]), "{page}: accessibility");
    let stops = d.execute(MARK_TAB_STOPS).await.as_u64().expect("a count");
    let mut reached = std::collections::BTreeSet::new();
    for _ in 0..(2 * stops + 10) {
        d.press_tab().await;
        let at = d
            .execute(
                "return document.activeElement && document.activeElement.getAttribute('data-k');",
            )
            .await
            .as_str()
            .and_then(|k| k.parse::<u64>().ok());
        if let Some(k) = at {
            if !reached.insert(k) {
                break;
            }
        }
    }
    let missed: Vec<u64> = (0..stops).filter(|k| !reached.contains(k)).collect();
    assert!(
        missed.is_empty(),
        "{page}: Tab never reaches links and buttons {missed:?} of {stops}"
    );
}

/// Waits until the browser is at a URL containing `part` (a click does not wait for the page it
/// leads to).
async fn wait_url(d: &Driver, part: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.url().await.contains(part) {
        assert!(
            Instant::now() < deadline,
            "never reached {part}: {}",
            d.url().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(d: &Driver, base: &str, token: &str) {
    d.goto(&format!("{base}/console/login")).await;
    d.type_in("#token", token).await;
    d.click("form.login button[type=submit]").await;
    // The form's answer, before anything else is asked of the browser.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.url().await.ends_with("/console/") && !d.source().await.contains("n'ouvre pas") {
        assert!(Instant::now() < deadline, "the login form did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_finds_shows_and_repairs_dossiers_in_a_browser() {
    if !browser_available() {
        return;
    }
    // The console on its own listener (server.admin_bind), as production runs it, with returns
    // to ATEXO SEM on (the test's sandbox receives them).
    let sandbox = passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig::default())
        .await
        .expect("sandbox");
    let gw = gateway_on(
        &sandbox,
        None,
        &[
            (
                "PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA",
                PERSONAL_DATA_TOKEN,
            ),
            ("PASSERELLE__SERVER__ADMIN_BIND", "127.0.0.1:0"),
        ],
    )
    .await;
    let console = gw.admin_url.clone().expect("an admin listener");
    let main_console = gw
        .http
        .get(format!("{}/console/login", gw.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        main_console.status(),
        404,
        "the console answers only on server.admin_bind"
    );

    // One dossier delivered, two refused by AGORA into the dead letters.
    refuse_certification(&gw).await;
    let delivered = gw
        .post_atexo_accepted("PDL-2019-000102", &fixture("atexo_sem/valid/entre.xml"))
        .await;
    let refused = gw
        .post_atexo_accepted(
            "PDL-2019-000801",
            &atexo("PDL-2019-000801", "1330801", REFUSED_CERTIFICATION),
        )
        .await;
    let other = gw
        .post_atexo_accepted(
            "PDL-2019-000802",
            &atexo("PDL-2019-000802", "1330802", REFUSED_CERTIFICATION),
        )
        .await;
    let numero = agora_number(&gw, &delivered, "ENTRE").await;
    // Its return to ATEXO SEM went out of the outbox: the timeline shows it taken.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !atexo_returns(&gw.http, &gw.sandbox_url)
        .await
        .iter()
        .any(|r| r["dossier"] == "PDL-2019-000102" && r["etat"] == "ENTRE")
    {
        assert!(Instant::now() < deadline, "no return to ATEXO SEM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = open_dead_letters(&gw, 2).await;
    let dead_of = |dossier: &str| {
        dead.iter()
            .find(|d| d["dossier_id"] == dossier)
            .and_then(|d| d["id"].as_str())
            .expect("a dead letter")
            .to_string()
    };
    let (refused_letter, other_letter) = (dead_of(&refused), dead_of(&other));

    let profile = tempfile::tempdir().expect("profile");
    let d = Driver::start(profile.path()).await;

    // Without a session, every page is the login form and shows nothing.
    for path in [
        "/console/".to_string(),
        format!("/console/dossiers?q={delivered}"),
        format!("/console/dossiers/{delivered}"),
        "/console/lettres-mortes".to_string(),
        "/console/reprises".to_string(),
        "/console/correspondances".to_string(),
        "/console/dossiers.csv".to_string(),
    ] {
        d.goto(&format!("{console}{path}")).await;
        assert!(d.url().await.ends_with("/console/login"), "{path}");
        let source = d.source().await;
        for secret in [&delivered, &refused, &numero] {
            assert!(
                !source.contains(secret.as_str()),
                "{path} without a session"
            );
        }
    }
    d.shot("01-connexion").await;

    // A wrong token is refused; the admin token opens a session with a guarded cookie.
    login(&d, &console, "not-a-token").await;
    let source = d.source().await;
    assert!(source.contains("n'ouvre pas"), "{source}");
    login(&d, &console, gw.creds.admin.expose_secret()).await;
    assert!(d.url().await.ends_with("/console/"), "{}", d.url().await);
    let cookies = d.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c.name() == "passerelle_console")
        .unwrap_or_else(|| panic!("a session cookie: {cookies:?}"));
    assert_eq!(session.http_only(), Some(true), "{session}");
    assert_eq!(
        session.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict"),
        "{session}"
    );
    assert!(session.expires().is_some(), "it expires: {session}");
    let session_cookie = format!("passerelle_console={}", session.value());
    let source = d.shot("02-tableau-de-bord").await;
    assert!(source.contains("Tableau de bord") && source.contains("<svg"));
    assert_no_personal_data("the dashboard", &source);

    // The search box finds the dossier by its ATEXO reference; its page shows AGORA's number and
    // state, with the state's French label.
    d.type_in("#q", "PDL-2019-000102").await;
    d.click("form.search button").await;
    wait_url(&d, "/console/dossiers?").await;
    let source = d.shot("03-recherche").await;
    assert_no_personal_data("the search", &source);
    assert_eq!(
        d.count(&format!("a[href='/console/dossiers/{delivered}']"))
            .await,
        1,
        "the search by ATEXO reference finds the dossier"
    );
    assert_eq!(d.count("tbody tr").await, 1);
    d.click(&format!("a[href='/console/dossiers/{delivered}']"))
        .await;
    wait_url(&d, &format!("/console/dossiers/{delivered}")).await;
    let source = d.shot("04-dossier").await;
    assert_no_personal_data("the dossier page", &source);
    assert_eq!(d.text(".agora-number").await, numero);
    assert_eq!(d.text(".agora-state").await, "ENTRE");
    assert!(source.contains("Entré en formation"));
    assert!(source.contains("Appel AGORA") && source.contains("Message reçu"));
    assert!(
        source.contains("Retour ATEXO SEM") && source.contains("reçu par ATEXO SEM"),
        "the return in the timeline"
    );
    assert!(
        !source.contains("pas encore consignés"),
        "no word saying returns are not recorded: they are (the returns outbox)"
    );

    // A POST without the session's CSRF token is refused, and changes nothing.
    for body in ["all=true", "all=true&csrf=forged"] {
        let r = gw
            .http
            .post(format!("{console}/console/lettres-mortes/rejouer"))
            .header("cookie", &session_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 403, "{body}");
    }
    assert_eq!(open_dead_letters(&gw, 2).await.len(), 2);

    // The dead letters; AGORA corrects itself, and one is replayed from the console.
    d.goto(&format!("{console}/console/lettres-mortes")).await;
    let source = d.shot("05-lettres-mortes").await;
    assert_no_personal_data("the dead letters", &source);
    assert!(source.contains("AG-CERTIF"));
    lift_refusals(&gw).await;
    d.click(&format!(
        "form[action='/console/lettres-mortes/{refused_letter}/rejouer'] button"
    ))
    .await;
    wait_url(&d, &format!("/console/dossiers/{refused}?rejoue=1")).await;
    let source = d.shot("06-dossier-rejoue").await;
    assert_no_personal_data("a replayed dossier", &source);
    assert!(source.contains("Lettre morte rejouée"));
    agora_number(&gw, &refused, "ENTRE").await;

    // The rest by filter, after a confirmation that says how many.
    d.goto(&format!(
        "{console}/console/lettres-mortes/rejouer?code=AG-CERTIF"
    ))
    .await;
    let source = d.shot("07-confirmation").await;
    assert!(
        d.text(".confirm strong").await.starts_with("1 lettre"),
        "{source}"
    );
    assert_eq!(
        open_dead_letters(&gw, 1).await[0]["id"],
        other_letter.as_str()
    );
    d.click("form[action='/console/lettres-mortes/rejouer'] button")
        .await;
    wait_url(&d, "rejouees=1").await;
    agora_number(&gw, &other, "ENTRE").await;
    open_dead_letters(&gw, 0).await;

    // The other pages, none with a personal value.
    for (path, name, expect) in [
        ("/console/reprises", "08-reprises", "Avancement"),
        (
            "/console/correspondances",
            "09-correspondances",
            "nir.checksum",
        ),
    ] {
        d.goto(&format!("{console}{path}")).await;
        let source = d.shot(name).await;
        assert_no_personal_data(path, &source);
        assert!(source.contains(expect), "{path}");
    }
    d.goto(&format!("{console}/console/dossiers?state=entered"))
        .await;
    assert_no_personal_data("a filtered search", &d.source().await);
    assert_eq!(d.count("tbody tr").await, 3);

    // A backfill's report kept in the ledger is listed with its counts and downloaded as kept.
    let ledger = passerelle::ledger::connect(&gw.ledger_url)
        .await
        .expect("the ledger");
    let gz: Vec<u8> = b"\x1f\x8b a gzipped report".to_vec();
    let report_id = ledger
        .store_backfill_report(&json!({"accepted": 41, "rejected": 2}), &gz)
        .await
        .expect("kept");
    // An input file read by a backfill: its checkpoint is shown with its count.
    ledger
        .set_checkpoint(
            &format!(
                "{}feedc0de",
                passerelle::ledger::progress::FILE_CHECKPOINT_PREFIX
            ),
            42,
        )
        .await
        .expect("checkpoint");
    d.goto(&format!("{console}/console/reprises")).await;
    let source = d.shot("08-reprises-rapports").await;
    assert!(
        source.contains("<td><code>feedc0de</code></td><td>42</td>"),
        "the file's dossiers read: {source}"
    );
    assert!(source.contains("<dd class=\"read\">42 (1 fichier(s))</dd>"));
    let link = format!("/console/reprises/rapports/{report_id}");
    assert_eq!(d.count(&format!("a[href='{link}']")).await, 1, "{source}");
    assert!(source.contains("<td>41</td>"), "the counts");
    let r = gw
        .http
        .get(format!("{console}{link}"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ascii"),
        "application/gzip"
    );
    assert_eq!(r.bytes().await.expect("body").to_vec(), gz);

    // Logout ends the session: the cookie no longer opens anything.
    d.click("form.logout button").await;
    wait_url(&d, "/console/login").await;
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{console}/console/dossiers/{delivered}"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 303, "a closed session shows nothing");

    // The personal-data token finds a dossier by NIR and sees its personal fields.
    login(&d, &console, PERSONAL_DATA_TOKEN).await;
    d.goto(&format!("{console}/console/dossiers?q=185077512345608"))
        .await;
    assert_eq!(d.count("tbody tr").await, 3, "the NIR's three dossiers");
    d.goto(&format!("{console}/console/dossiers/{delivered}"))
        .await;
    let source = d.shot("10-dossier-donnees-personnelles").await;
    assert!(source.contains("DUPONT"));
    d.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_api_finds_by_reference_pages_and_exports_csv() {
    let gw = gateway(
        None,
        &[(
            "PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA",
            PERSONAL_DATA_TOKEN,
        )],
    )
    .await;
    let a = gw
        .post_atexo_accepted("PDL-2019-000102", &fixture("atexo_sem/valid/entre.xml"))
        .await;
    let b = gw
        .post_atexo_accepted(
            "PDL-2019-000901",
            &atexo("PDL-2019-000901", "1330901", "RNCP34567"),
        )
        .await;
    let numero = agora_number(&gw, &a, "ENTRE").await;
    agora_number(&gw, &b, "ENTRE").await;

    let found = api(&gw, "/v1/dossiers?q=PDL-2019-000102").await;
    let list = found["dossiers"].as_array().expect("dossiers");
    assert_eq!(list.len(), 1, "{found}");
    assert_eq!(list[0]["dossier_id"], a.as_str());
    assert_eq!(list[0]["sources"][0]["id"], "PDL-2019-000102");
    assert!(found["next_cursor"].is_null());
    let by_number = api(&gw, &format!("/v1/dossiers?q={numero}")).await;
    assert_eq!(by_number["dossiers"][0]["dossier_id"], a.as_str());
    assert_eq!(by_number["dossiers"][0]["agora_state"], "ENTRE");
    for q in ["185077512345608", "DUPONT"] {
        let none = api(&gw, &format!("/v1/dossiers?q={q}")).await;
        assert_eq!(
            none["dossiers"],
            json!([]),
            "the admin token cannot search by {q}"
        );
    }
    let everything = api(&gw, "/v1/dossiers").await.to_string();
    for p in PERSONAL {
        assert!(!everything.contains(p), "results are masked: {p}");
    }

    // Keyset pages.
    let first = api(&gw, "/v1/dossiers?limit=1").await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = api(&gw, &format!("/v1/dossiers?limit=1&cursor={cursor}")).await;
    assert!(second["next_cursor"].is_null());
    assert_ne!(
        first["dossiers"][0]["dossier_id"],
        second["dossiers"][0]["dossier_id"]
    );

    // CSV, by Accept or by format=csv.
    let r = gw
        .http
        .get(format!("{}/v1/dossiers?state=entered", gw.url))
        .bearer_auth(gw.creds.admin.expose_secret())
        .header("accept", "text/csv")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    let csv = r.text().await.expect("text");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("dossier_id,state,delivery,numero_agora"));
    assert!(csv.contains(&numero) && csv.contains("atexo-sem:PDL-2019-000102"));
    let r = gw
        .http
        .get(format!("{}/v1/dossiers?format=csv&q={b}", gw.url))
        .bearer_auth(gw.creds.admin.expose_secret())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.text().await.expect("text").lines().count(), 2);

    // The personal-data token finds both dossiers of the NIR.
    let r: Value = gw
        .http
        .get(format!("{}/v1/dossiers?q=185077512345608", gw.url))
        .bearer_auth(PERSONAL_DATA_TOKEN)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(r["dossiers"].as_array().map(Vec::len), Some(2), "{r}");

    // Bad parameters are named; a system's token is refused.
    let r = gw
        .http
        .get(format!("{}/v1/dossiers?state=gone&sort=x", gw.url))
        .bearer_auth(gw.creds.admin.expose_secret())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.expect("json");
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(pointers, ["/state", "/sort"]);
    let r = gw
        .http
        .get(format!("{}/v1/dossiers", gw.url))
        .bearer_auth(gw.creds.atexo_sem().expose_secret())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    gw.stop().await;
}

/// The console's guards over plain HTTP (no browser): redirections without a session, the login
/// form's own CSRF token, the cookies' flags, the security headers, POSTs without their token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_guards_its_pages_and_posts() {
    let gw = gateway(None, &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = &gw.url;
    let r = http
        .get(format!("{base}/console/lettres-mortes"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");

    let r = http
        .get(format!("{base}/console/login"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe") && !csp.contains("script"),
        "{csp}"
    );
    let login_cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    let login_cookie = login_cookie.split(';').next().expect("pair").to_string();
    let html = r.text().await.expect("html");
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's CSRF token")
        .to_string();
    let admin = gw.creds.admin.expose_secret().to_string();
    let form = |pairs: &[(&str, &str)]| form_body(pairs);

    // The login form refuses a post without its token, or with another one.
    for body in [
        form(&[("token", &admin)]),
        form(&[("token", &admin), ("csrf", "forged")]),
    ] {
        let r = http
            .post(format!("{base}/console/login"))
            .header("cookie", &login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 403);
    }
    let r = http
        .post(format!("{base}/console/login"))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", &admin), ("csrf", &token)]))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("passerelle_console="))
        .expect("a session cookie")
        .to_string();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=28800",
        "Path=/console",
    ] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag");
    let session = session.split(';').next().expect("pair").to_string();

    let r = http
        .get(format!("{base}/console/lettres-mortes"))
        .header("cookie", &session)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("content-security-policy"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let css = http
        .get(format!("{base}/console/assets/console.css"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        css.status(),
        200,
        "the stylesheet is served from the binary"
    );

    // A POST with the session but without its CSRF token is refused; with it, it is done.
    let r = http
        .post(format!("{base}/console/logout"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    let page = http
        .get(format!("{base}/console/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("answer");
    assert_eq!(page.status(), 200, "the session is still open");
    let html = page.text().await.expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the session's CSRF token")
        .to_string();
    let r = http
        .post(format!("{base}/console/logout"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", &csrf)]))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 303);
    let r = http
        .get(format!("{base}/console/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 303, "logged out");
    gw.stop().await;
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A console session over plain HTTP (no browser): a client that follows no redirection, the
/// session cookie (`name=value`) and the session's CSRF token.
struct HttpSession {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

/// The `value` of the first `name="csrf"` field of a page.
fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string()
}

impl HttpSession {
    /// Logs in to the console at `base` with `token`, through the login form. `http` must follow
    /// no redirection.
    async fn login(http: reqwest::Client, base: &str, token: &str) -> HttpSession {
        let r = http
            .get(format!("{base}/console/login"))
            .send()
            .await
            .expect("answer");
        let login_cookie = r.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        let form = csrf_of(&r.text().await.expect("html"));
        let r = http
            .post(format!("{base}/console/login"))
            .header("cookie", &login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("token", token), ("csrf", &form)]))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 303, "logged in");
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("passerelle_console="))
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_string();
        let page = http
            .get(format!("{base}/console/"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("answer");
        let csrf = csrf_of(&page.text().await.expect("html"));
        HttpSession {
            http,
            base: base.to_string(),
            cookie,
            csrf,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("answer")
    }

    /// Posts `pairs` and the session's CSRF token.
    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        let mut pairs = pairs.to_vec();
        pairs.push(("csrf", self.csrf.as_str()));
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&pairs))
            .send()
            .await
            .expect("answer")
    }
}

fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A bulk replay replays the number of dead letters its confirmation stated, or nothing: a dead
/// letter arriving between the confirmation and the click sends the operator back to a
/// confirmation with the new number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_replay_replays_the_number_confirmed_or_nothing() {
    let sandbox = passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig::default())
        .await
        .expect("sandbox");
    let gw = gateway_on(&sandbox, None, &[]).await;
    refuse_certification(&gw).await;
    for n in ["811", "812"] {
        gw.post_atexo_accepted(
            &format!("PDL-2019-000{n}"),
            &atexo(
                &format!("PDL-2019-000{n}"),
                &format!("1330{n}"),
                REFUSED_CERTIFICATION,
            ),
        )
        .await;
    }
    open_dead_letters(&gw, 2).await;
    let s = HttpSession::login(no_redirect(), &gw.url, gw.creds.admin.expose_secret()).await;

    // The confirmation states two, and carries that number.
    let page = s
        .get("/console/lettres-mortes/rejouer?code=AG-CERTIF")
        .await
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("2 lettre(s) morte(s) seront rejouée(s)"),
        "{page}"
    );
    assert!(page.contains("name=\"attendu\" value=\"2\""), "{page}");

    // A third dead letter of the same code arrives before the click.
    gw.post_atexo_accepted(
        "PDL-2019-000813",
        &atexo("PDL-2019-000813", "1330813", REFUSED_CERTIFICATION),
    )
    .await;
    open_dead_letters(&gw, 3).await;
    let confirmed = [("code", "AG-CERTIF"), ("attendu", "2")];
    let r = s.post("/console/lettres-mortes/rejouer", &confirmed).await;
    assert_eq!(r.status(), 409, "confirmed for 2, the filter selects 3");
    let page = r.text().await.expect("html");
    assert!(page.contains("3 au lieu de 2"), "{page}");
    assert!(page.contains("name=\"attendu\" value=\"3\""), "{page}");
    assert_no_personal_data("the new confirmation", &page);
    assert_eq!(open_dead_letters(&gw, 3).await.len(), 3, "nothing replayed");

    // Without a confirmed number, nothing either.
    let r = s
        .post("/console/lettres-mortes/rejouer", &[("code", "AG-CERTIF")])
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(open_dead_letters(&gw, 3).await.len(), 3, "nothing replayed");

    // Confirmed again for three: the three are replayed.
    let r = s
        .post(
            "/console/lettres-mortes/rejouer",
            &[("code", "AG-CERTIF"), ("attendu", "3")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/lettres-mortes?rejouees=3"
    );
    gw.stop().await;
}

/// The console's CSV export holds every dossier the search selects, not only its first page: more
/// dossiers than a page holds, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_holds_every_result_not_only_the_first_page() {
    // Out of perimeter (category VAE): stored and searchable, never sent to AGORA, so nothing
    // changes them while the export walks its pages.
    const COUNT: usize = passerelle::ledger::search::MAX_LIMIT as usize + 21;
    let gw = gateway(None, &[("PASSERELLE__SERVER__DECODE_BUDGET_MS", "60000")]).await;
    let one = String::from_utf8(fixture("atexo_sem/valid/entre.xml")).expect("UTF-8");
    let start = one.find("  <dossier").expect("a dossier");
    let end = one.find("</dossier>").expect("its end") + "</dossier>\n".len();
    let mut doc = one[..start].to_string();
    for i in 0..COUNT {
        doc.push_str(
            &one[start..end]
                .replace("PDL-2019-000102", &format!("PDL-2020-{i:06}"))
                .replace(
                    "numeroSession=\"1330305\"",
                    &format!("numeroSession=\"{}\"", 2_000_000 + i),
                )
                .replace(
                    "<categorie>QUALIFIANT</categorie>",
                    "<categorie>VAE</categorie>",
                ),
        );
    }
    doc.push_str(&one[end..]);
    let r = gw.post_atexo(doc.into_bytes()).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.expect("json");
    let statuses = accepted["dossiers"].as_array().expect("dossiers");
    assert_eq!(statuses.len(), COUNT);
    assert!(
        statuses.iter().all(|d| d["status"] == "out_of_perimeter"),
        "{accepted}"
    );

    let s = HttpSession::login(no_redirect(), &gw.url, gw.creds.admin.expose_secret()).await;
    let r = s
        .get("/console/dossiers.csv?q=&cursor=ignored&limit=3")
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    assert_eq!(r.content_length(), None, "streamed, page after page");
    let csv = r.text().await.expect("text");
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .is_some_and(|h| h.starts_with("dossier_id,state,delivery")));
    let ids: std::collections::HashSet<&str> =
        lines.map(|l| l.split(',').next().expect("an id")).collect();
    assert_eq!(csv.lines().count(), COUNT + 1, "every dossier once");
    assert_eq!(ids.len(), COUNT, "no dossier twice");
    for i in [0, COUNT - 1] {
        assert!(
            csv.contains(&format!("atexo-sem:PDL-2020-{i:06}")),
            "PDL-2020-{i:06} is exported"
        );
    }
    assert_no_personal_data("the CSV export", &csv);
    gw.stop().await;
}

/// The console's cookies over HTTPS: Secure, HttpOnly, SameSite=Strict (over plain HTTP there is
/// no Secure flag: `the_console_guards_its_pages_and_posts`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_under_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let ca = crate::hardening::TestCa::new("passerelle console test CA");
    let (cert, key) = ca.issue("localhost", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().to_string()
    };
    let (cert_file, key_file) = (write("server.pem", &cert), write("server.key", &key));
    let config = write(
        "tls.toml",
        &format!("[server]\ntls_cert_file = {cert_file:?}\ntls_key_file = {key_file:?}\n"),
    );
    let settings = passerelle::settings::Settings::load(
        Some(Path::new(&config)),
        [
            ("PASSERELLE__SERVER__BIND", "127.0.0.1:0".to_string()),
            ("PASSERELLE__DATA__DIR", d.clone()),
            ("PASSERELLE__LEDGER__URL", format!("sqlite://{d}/p.db")),
            ("PASSERELLE__QUEUE__URL", format!("embedded:{d}/q.db")),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("settings");
    let app = passerelle::startup::Application::build(settings)
        .await
        .expect("the gateway starts with TLS");
    let admin = app.credentials.admin.expose_secret().to_string();
    let base = format!("https://localhost:{}", app.port());
    let running = app.spawn();
    let https = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("ca"))
        .build()
        .expect("client");

    let flags = |set_cookie: &str| -> Vec<String> {
        set_cookie
            .split(';')
            .skip(1)
            .map(|f| f.trim().to_string())
            .collect()
    };
    let r = https
        .get(format!("{base}/console/login"))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
    let login_cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    let f = flags(&login_cookie);
    for flag in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(f.iter().any(|x| x == flag), "{login_cookie} lacks {flag}");
    }
    let form = csrf_of(&r.text().await.expect("html"));
    let r = https
        .post(format!("{base}/console/login"))
        .header("cookie", login_cookie.split(';').next().expect("pair"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("token", &admin), ("csrf", &form)]))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("passerelle_console="))
        .expect("a session cookie")
        .to_string();
    let f = flags(&session);
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Max-Age=28800"] {
        assert!(f.iter().any(|x| x == flag), "{session} lacks {flag}");
    }
    running.stop().await;
}
