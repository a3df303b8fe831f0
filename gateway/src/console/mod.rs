//! The operator console (*console d'exploitation*), under `/console/`: HTML rendered on the server
//! with maud, in French, with no script at all.
//!
//! - this module: the routes, the session (login with the admin or the personal-data token, an
//!   HttpOnly SameSite=Strict cookie, Secure under TLS, expiring; logout), the CSRF token every
//!   POST carries, the security headers (a strict Content-Security-Policy) and the page layout;
//! - [`labels`]: the French labels of states, codes and systems;
//! - [`dossiers`]: the search and the dossier page; [`operations`]: the dead letters and their
//!   replay, the dashboard, the mapping; [`backfill`]: the backfill's progress and reports.
//!
//! It is mounted by `routes::admin_scope`, so it answers on `server.admin_bind` when that is set.
//! Sessions live in the process (one store per gateway): behind several replicas, the admin
//! listener must reach one replica per operator (or the operator logs in again).

mod backfill;
mod dossiers;
mod labels;
mod operations;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use rand::RngCore;

use crate::routes::{AppState, Caller};

/// How long a session lasts after login, whatever is done with it.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const COOKIE: &str = "passerelle_console";
const LOGIN_COOKIE: &str = "passerelle_console_login";
const CSS: &str = include_str!("console.css");

/// No script, no frame, nothing from elsewhere: every page is plain HTML with one stylesheet of
/// this origin. Charts are inline SVG drawn with attributes, not styles.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An operator's session.
#[derive(Debug, Clone)]
struct Session {
    personal_data: bool,
    csrf: String,
    expires: Instant,
}

/// The console's sessions, by the cookie's random id.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn open(&self, personal_data: bool) -> (String, Session) {
        let session = Session {
            personal_data,
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        let id = random_token();
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    fn close(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A logged-in operator, as a page sees them.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub personal_data: bool,
    pub csrf: String,
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure when the listener is HTTPS. `max_age`
/// zero removes the cookie.
fn set_cookie(req: &HttpRequest, name: &str, value: &str, path: &str, max_age: u64) -> String {
    let secure = if req.app_config().secure() {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn operator(req: &HttpRequest, state: &AppState) -> Option<Operator> {
    let id = cookie_value(req, COOKIE)?;
    state.console.get(&id).map(|s| Operator {
        personal_data: s.personal_data,
        csrf: s.csrf,
    })
}

/// The operator of a GET, or the redirection to the login form: without a session, no page shows
/// anything.
pub(crate) fn viewer(req: &HttpRequest, state: &AppState) -> Result<Operator, Box<HttpResponse>> {
    operator(req, state).ok_or_else(|| Box::new(redirect("/console/login")))
}

/// The operator of a POST whose form carries the session's CSRF token; `403` otherwise.
pub(crate) fn poster(
    req: &HttpRequest,
    state: &AppState,
    form: &[(String, String)],
) -> Result<Operator, Box<HttpResponse>> {
    let Some(op) = operator(req, state) else {
        return Err(Box::new(refused(
            "Aucune session : connectez-vous d'abord.",
        )));
    };
    let given = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    match given {
        Some(token) if same(token, &op.csrf) => Ok(op),
        _ => Err(Box::new(refused(
            "Jeton anti-CSRF absent ou invalide : rechargez la page et recommencez.",
        ))),
    }
}

/// The headers every console answer carries.
fn secured(mut res: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    res.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    res
}

pub(crate) fn html_response(markup: Markup) -> HttpResponse {
    secured(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

pub(crate) fn redirect(to: &str) -> HttpResponse {
    secured(HttpResponse::SeeOther())
        .insert_header((header::LOCATION, to))
        .finish()
}

fn refused(message: &str) -> HttpResponse {
    secured(HttpResponse::Forbidden())
        .content_type("text/html; charset=utf-8")
        .body(bare("Refusé", html! { p role="alert" { (message) } }).into_string())
}

pub(crate) fn failure(message: &str) -> HttpResponse {
    secured(HttpResponse::ServiceUnavailable())
        .content_type("text/html; charset=utf-8")
        .body(bare("Indisponible", html! { p role="alert" { (message) } }).into_string())
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " — passerelle" }
            link rel="stylesheet" href="/console/assets/console.css";
        }
    }
}

/// A page without navigation (login, refusals).
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="fr" {
            (head(title))
            body {
                main id="contenu" class="narrow" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Dashboard,
    Search,
    DeadLetters,
    Backfill,
    Mapping,
}

/// A page with the navigation, the search box and the logout button.
pub(crate) fn layout(
    op: &Operator,
    section: Section,
    title: &str,
    q: Option<&str>,
    body: Markup,
) -> Markup {
    let nav = [
        (Section::Dashboard, "/console/", "Tableau de bord"),
        (Section::Search, "/console/dossiers", "Dossiers"),
        (
            Section::DeadLetters,
            "/console/lettres-mortes",
            "Lettres mortes",
        ),
        (Section::Backfill, "/console/reprises", "Reprises"),
        (
            Section::Mapping,
            "/console/correspondances",
            "Correspondances",
        ),
    ];
    html! {
        (DOCTYPE)
        html lang="fr" {
            (head(title))
            body {
                a class="skip" href="#contenu" { "Aller au contenu" }
                header {
                    p class="brand" { "passerelle" span { " · console d'exploitation" } }
                    nav aria-label="Sections" {
                        ul {
                            @for (s, href, label) in nav {
                                li {
                                    @if s == section {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form class="search" role="search" method="get" action="/console/dossiers" {
                        label for="q" { "Rechercher un dossier" }
                        input type="search" id="q" name="q" value=(q.unwrap_or(""))
                            placeholder=(search_hint());
                        button type="submit" { "Rechercher" }
                    }
                    form class="logout" method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(op.csrf);
                        span class="who" {
                            @if op.personal_data { "Jeton données personnelles" } @else { "Jeton administrateur" }
                        }
                        button type="submit" { "Se déconnecter" }
                    }
                }
                main id="contenu" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(op: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(op.csrf); }
}

/// What the search box finds, in its placeholder: each source's record id, AGORA's number,
/// passerelle's id.
fn search_hint() -> String {
    let mut parts: Vec<String> = passerelle_adapters::SOURCES
        .iter()
        .map(|s| format!("{} {}", s.label(), s.record_id()))
        .collect();
    parts.extend(["n° AGORA".to_string(), "id passerelle".to_string()]);
    parts.join(", ")
}

/// Everything the console serves.
pub fn routes(routes: &mut crate::routes::Routes<'_>) {
    routes
        .get("/console", to_dashboard)
        .get("/console/", operations::dashboard)
        .get("/console/assets/console.css", stylesheet)
        .get("/console/login", login_form)
        .post("/console/login", login)
        .post("/console/logout", logout)
        .get("/console/dossiers", dossiers::search)
        .get("/console/dossiers.csv", dossiers::search_csv)
        .get("/console/dossiers/{id}", dossiers::dossier)
        .get("/console/lettres-mortes", operations::dead_letters)
        .get(
            "/console/lettres-mortes/rejouer",
            operations::confirm_bulk_replay,
        )
        .post("/console/lettres-mortes/rejouer", operations::bulk_replay)
        .post("/console/lettres-mortes/{id}/rejouer", operations::replay)
        .get("/console/reprises", backfill::backfill)
        .get("/console/reprises/rapports/{id}", backfill::backfill_report)
        .get("/console/correspondances", operations::mapping)
        .get("/console/correspondances.md", operations::mapping_markdown)
        .get("/console/correspondances.csv", operations::mapping_csv);
}

/// The console's operations in the OpenAPI document (see `routes::openapi`): HTML pages for a
/// browser, under the `console` tag.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(paths(
        to_dashboard,
        operations::dashboard,
        stylesheet,
        login_form,
        login,
        logout,
        dossiers::search,
        dossiers::search_csv,
        dossiers::dossier,
        operations::dead_letters,
        operations::confirm_bulk_replay,
        operations::bulk_replay,
        operations::replay,
        backfill::backfill,
        backfill::backfill_report,
        operations::mapping,
        operations::mapping_markdown,
        operations::mapping_csv,
    ))]
    struct ConsoleDoc;
    ConsoleDoc::openapi()
}

#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    operation_id = "console_root",
    summary = "To the console's home page",
    responses((status = 303, description = "To `/console/`")),
)]
async fn to_dashboard() -> HttpResponse {
    redirect("/console/")
}

#[utoipa::path(
    get,
    path = "/console/assets/console.css",
    tag = "console",
    operation_id = "console_stylesheet",
    summary = "The console's one stylesheet",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)),
)]
async fn stylesheet() -> HttpResponse {
    secured(HttpResponse::Ok())
        .content_type("text/css; charset=utf-8")
        .body(CSS)
}

fn login_page(req: &HttpRequest, message: Option<&str>) -> HttpResponse {
    // The login form has its own CSRF token (no session yet): a random value in a cookie and in
    // the form, which another site can neither read nor set.
    let token = random_token();
    let c = set_cookie(req, LOGIN_COOKIE, &token, "/console/login", 30 * 60);
    let page = bare(
        "Connexion à la console",
        html! {
            @if let Some(m) = message { p class="error" role="alert" { (m) } }
            form method="post" action="/console/login" class="login" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Jeton d'administration" }
                input type="password" id="token" name="token" required autocomplete="current-password"
                    aria-describedby="token-aide";
                p id="token-aide" class="hint" {
                    "Le jeton administrateur (" code { "auth.tokens.admin" } ") ou le jeton "
                    "données personnelles (" code { "auth.tokens.admin_personal_data" } ")."
                }
                button type="submit" { "Se connecter" }
            }
        },
    );
    secured(if message.is_some() {
        HttpResponse::Unauthorized()
    } else {
        HttpResponse::Ok()
    })
    .insert_header((header::SET_COOKIE, c))
    .content_type("text/html; charset=utf-8")
    .body(page.into_string())
}

#[utoipa::path(
    get,
    path = "/console/login",
    tag = "console",
    operation_id = "console_login_form",
    summary = "The login form",
    responses(
        (status = 200, description = "The form (with its own CSRF cookie)", content_type = "text/html", body = String),
        (status = 303, description = "Already logged in: to `/console/`"),
    ),
)]
async fn login_form(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if operator(&req, &state).is_some() {
        return redirect("/console/");
    }
    login_page(&req, None)
}

#[utoipa::path(
    post,
    path = "/console/login",
    tag = "console",
    operation_id = "console_login",
    summary = "Log in with `auth.tokens.admin` or `auth.tokens.admin_personal_data`",
    responses(
        (status = 303, description = "Logged in: the session cookie is set, to `/console/`"),
        (status = 401, description = "Not an admin token: the form again", content_type = "text/html", body = String),
        (status = 403, description = "No valid CSRF token in the form", content_type = "text/html", body = String),
    ),
)]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expected = cookie_value(&req, LOGIN_COOKIE);
    let csrf_ok = matches!((field("csrf"), &expected), (Some(f), Some(c)) if same(f, c));
    if !csrf_ok {
        return refused("Jeton anti-CSRF absent ou invalide : rechargez la page de connexion.");
    }
    let caller = field("token").and_then(|t| state.credentials.caller(t.trim()));
    let Some(Caller::Admin { personal_data }) = caller else {
        tracing::info!("a console login was refused");
        return login_page(&req, Some("Ce jeton n'ouvre pas la console."));
    };
    let (id, _) = state.console.open(personal_data);
    tracing::info!(personal_data, "an operator logged in to the console");
    secured(HttpResponse::SeeOther())
        .insert_header((header::LOCATION, "/console/"))
        .append_header((
            header::SET_COOKIE,
            set_cookie(&req, COOKIE, &id, "/console", SESSION_TTL.as_secs()),
        ))
        .append_header((
            header::SET_COOKIE,
            set_cookie(&req, LOGIN_COOKIE, "", "/console/login", 0),
        ))
        .finish()
}

#[utoipa::path(
    post,
    path = "/console/logout",
    tag = "console",
    operation_id = "console_logout",
    summary = "Close the session",
    responses(
        (status = 303, description = "Logged out: to the login form"),
        (status = 403, description = "No session, or no valid CSRF token in the form", content_type = "text/html", body = String),
    ),
)]
async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    if let Err(res) = poster(&req, &state, &form) {
        return *res;
    }
    if let Some(id) = cookie_value(&req, COOKIE) {
        state.console.close(&id);
    }
    secured(HttpResponse::SeeOther())
        .insert_header((header::LOCATION, "/console/login"))
        .insert_header((
            header::SET_COOKIE,
            set_cookie(&req, COOKIE, "", "/console", 0),
        ))
        .finish()
}

/// Markup that is already HTML (an SVG drawn here).
pub(crate) fn raw(s: String) -> Markup {
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::default();
        let (id, session) = s.open(true);
        assert!(s
            .get(&id)
            .is_some_and(|g| g.personal_data && g.csrf == session.csrf));
        assert!(s.get("other").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        let (id, _) = s.open(false);
        s.0.lock()
            .expect("lock")
            .get_mut(&id)
            .expect("there")
            .expires = Instant::now();
        assert!(s.get(&id).is_none(), "an expired session is no session");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
