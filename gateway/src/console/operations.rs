//! Lettres mortes (list, replay one, replay by filter after a confirmation), Tableau de bord and
//! Correspondances.

use std::fmt::Write as _;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup};

use super::{
    csrf_field, failure, html_response, labels, layout, poster, raw, redirect, viewer, Operator,
    Section,
};
use crate::ledger::{DeadLetterFilter, LedgerError};
use crate::queue::Flow;
use crate::routes::admin::publish;
use crate::routes::AppState;

type Form = web::Form<Vec<(String, String)>>;

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.trim())
}

fn day(s: &str) -> Option<DateTime<Utc>> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// The dead-letter filter of a form or query string (`code`, `destination`, `since`, `until` as
/// dates), and whether it names anything.
fn dead_filter(pairs: &[(String, String)], include_replayed: bool) -> DeadLetterFilter {
    let text = |k: &str| Some(get(pairs, k).to_string()).filter(|s| !s.is_empty());
    DeadLetterFilter {
        dossier_id: None,
        destination: text("destination"),
        code: text("code"),
        since: day(get(pairs, "since")),
        until: day(get(pairs, "until")),
        include_replayed,
    }
}

pub(crate) fn unavailable(e: &LedgerError) -> HttpResponse {
    tracing::warn!(error = %e, "a console page found the ledger unavailable");
    failure("Le registre ne répond pas : réessayez dans un instant.")
}

fn query(req: &HttpRequest) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

fn dead_filters_form(pairs: &[(String, String)]) -> Markup {
    html! {
        form method="get" action="/console/lettres-mortes" class="filters" aria-label="Filtres des lettres mortes" {
            div { label for="d-code" { "Code" } input type="text" id="d-code" name="code" value=(get(pairs, "code")) placeholder="AG-CERTIF"; }
            div { label for="d-dest" { "Destination" }
                select id="d-dest" name="destination" {
                    option value="" { "Toutes" }
                    option value="agora" selected[get(pairs, "destination") == "agora"] { "AGORA" }
                }
            }
            div { label for="d-since" { "Depuis le" } input type="date" id="d-since" name="since" value=(get(pairs, "since")); }
            div { label for="d-until" { "Avant le" } input type="date" id="d-until" name="until" value=(get(pairs, "until")); }
            div {
                input type="checkbox" id="d-replayed" name="include_replayed" value="true" checked[get(pairs, "include_replayed") == "true"];
                label for="d-replayed" { "Inclure les lettres rejouées" }
            }
            div class="actions" { button type="submit" { "Filtrer" } a href="/console/lettres-mortes" { "Effacer les filtres" } }
        }
    }
}

/// `GET /console/lettres-mortes`.
#[utoipa::path(
    get,
    path = "/console/lettres-mortes",
    tag = "console",
    operation_id = "console_dead_letters",
    summary = "The dead letters, with their filters",
    responses(
        (status = 200, description = "A console page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn dead_letters(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let pairs = query(&req);
    let filter = dead_filter(&pairs, get(&pairs, "include_replayed") == "true");
    let list = match state.ledger.dead_letters(&filter).await {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let bulk: Vec<(String, String)> = ["code", "destination", "since", "until"]
        .iter()
        .map(|k| (k.to_string(), get(&pairs, k).to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let body = html! {
        (dead_filters_form(&pairs))
        @if let Some(n) = get(&pairs, "rejouees").parse::<usize>().ok() {
            p class="notice" role="status" { (n) " lettre(s) morte(s) rejouée(s)." }
        }
        p class="count" role="status" { (list.len()) " lettre(s) morte(s)." }
        form method="get" action="/console/lettres-mortes/rejouer" class="inline" {
            @for (k, v) in &bulk { input type="hidden" name=(k) value=(v); }
            @if bulk.is_empty() { input type="hidden" name="all" value="true"; }
            button type="submit" {
                @if bulk.is_empty() { "Rejouer toutes les lettres mortes ouvertes…" } @else { "Rejouer les lettres mortes ouvertes de ce filtre…" }
            }
        }
        @if !list.is_empty() {
            table {
                caption { "Lettres mortes, la plus ancienne d'abord" }
                thead { tr {
                    th scope="col" { "Dossier" } th scope="col" { "Destination" } th scope="col" { "Code" }
                    th scope="col" { "Tentatives" } th scope="col" { "Premier échec" } th scope="col" { "Dernier échec" }
                    th scope="col" { "Rejeu" } th scope="col" { "Action" }
                } }
                tbody {
                    @for d in &list {
                        tr {
                            td { a href={ "/console/dossiers/" (d.dossier_id) } { (d.dossier_id) } }
                            td { (d.destination) }
                            td { code { (d.reason.code()) } }
                            td { (d.attempts) }
                            td { (labels::time(d.first_failure)) }
                            td { (labels::time(d.last_failure)) }
                            td {
                                @if let Some(r) = &d.replay_id { "rejouée (" code { (r) } ")" }
                                @if let Some(r) = &d.after_replay { " après le rejeu " code { (r) } }
                            }
                            td {
                                @if d.replayed_at.is_none() {
                                    form method="post" action={ "/console/lettres-mortes/" (d.id) "/rejouer" } class="inline" {
                                        (csrf_field(&op))
                                        button type="submit" aria-label={ "Rejouer la lettre morte du dossier " (d.dossier_id) } { "Rejouer" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(layout(
        &op,
        Section::DeadLetters,
        "Lettres mortes",
        None,
        body,
    ))
}

/// The confirmation of a bulk replay: how many dead letters it replays, and the form that does
/// it, carrying that number (`attendu`). `changed`: the number the operator had confirmed, when
/// it no longer holds.
fn confirmation(
    op: &Operator,
    pairs: &[(String, String)],
    filter: &DeadLetterFilter,
    count: usize,
    changed: Option<usize>,
) -> Markup {
    let body = html! {
        @if let Some(before) = changed {
            p class="error" role="alert" {
                "Le nombre de lettres mortes de ce filtre a changé depuis la confirmation : "
                (count) " au lieu de " (before) ". Rien n'a été rejoué : confirmez de nouveau."
            }
        }
        p class="confirm" role="status" {
            strong { (count) " lettre(s) morte(s) seront rejouée(s)" }
            @if filter.is_empty() { " : toutes les lettres mortes ouvertes." } @else {
                " : celles "
                @if let Some(c) = &filter.code { "de code " code { (c) } " " }
                @if let Some(d) = &filter.destination { "vers " (d) " " }
                @if let Some(s) = filter.since { "depuis le " (s.format("%d/%m/%Y")) " " }
                @if let Some(u) = filter.until { "avant le " (u.format("%d/%m/%Y")) " " }
                "qui ne sont pas déjà rejouées."
            }
        }
        form method="post" action="/console/lettres-mortes/rejouer" {
            (csrf_field(op))
            @for k in ["code", "destination", "since", "until", "all"] {
                @if !get(pairs, k).is_empty() { input type="hidden" name=(k) value=(get(pairs, k)); }
            }
            input type="hidden" name="attendu" value=(count);
            button type="submit" { "Confirmer : rejouer " (count) " lettre(s) morte(s)" }
            " "
            a href="/console/lettres-mortes" { "Annuler" }
        }
    };
    layout(
        op,
        Section::DeadLetters,
        "Rejouer des lettres mortes",
        None,
        body,
    )
}

/// `GET /console/lettres-mortes/rejouer?…`: how many a bulk replay would replay, and the form
/// that does it. Nothing changes until that form is posted.
#[utoipa::path(
    get,
    path = "/console/lettres-mortes/rejouer",
    tag = "console",
    operation_id = "console_confirm_bulk_replay",
    summary = "How many dead letters a bulk replay would replay, and the form that does it",
    responses(
        (status = 200, description = "A console page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn confirm_bulk_replay(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let pairs = query(&req);
    let filter = dead_filter(&pairs, false);
    let all = get(&pairs, "all") == "true";
    if filter.is_empty() && !all {
        return redirect("/console/lettres-mortes");
    }
    let count = match state.ledger.dead_letters(&filter).await {
        Ok(l) => l.len(),
        Err(e) => return unavailable(&e),
    };
    html_response(confirmation(&op, &pairs, &filter, count, None))
}

/// `POST /console/lettres-mortes/rejouer`: the confirmed bulk replay. It replays exactly the
/// number confirmed (`attendu`) or nothing: when the filter selects another number by now (a new
/// dead letter, another operator's replay), the confirmation is shown again with the new number
/// (`409`).
#[utoipa::path(
    post,
    path = "/console/lettres-mortes/rejouer",
    tag = "console",
    operation_id = "console_bulk_replay",
    summary = "The confirmed bulk replay: exactly the number confirmed, or nothing",
    responses(
        (status = 303, description = "Replayed: to the dead letters"),
        (status = 409, description = "The filter selects another number by now: the confirmation again", content_type = "text/html", body = String),
        (status = 403, description = "No session, or no valid CSRF token in the form", content_type = "text/html", body = String),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn bulk_replay(req: HttpRequest, state: web::Data<AppState>, form: Form) -> HttpResponse {
    let op = match poster(&req, &state, &form) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let filter = dead_filter(&form, false);
    if filter.is_empty() && get(&form, "all") != "true" {
        return redirect("/console/lettres-mortes");
    }
    let expected = get(&form, "attendu").parse::<usize>().ok();
    let outcome = match expected {
        Some(n) => state.ledger.replay_counted(&filter, Some(n)).await,
        // Not confirmed with a number: nothing is replayed before it is.
        None => Err(LedgerError::CountChanged {
            expected: 0,
            found: 0,
        }),
    };
    let replayed = match outcome {
        Ok(r) => r,
        Err(LedgerError::CountChanged { .. }) => {
            let count = match state.ledger.dead_letters(&filter).await {
                Ok(l) => l.len(),
                Err(e) => return unavailable(&e),
            };
            tracing::info!(
                confirmed = expected,
                count,
                "a bulk replay from the console was refused: the count changed since its confirmation"
            );
            return super::secured(HttpResponse::Conflict())
                .content_type("text/html; charset=utf-8")
                .body(confirmation(&op, &form, &filter, count, expected).into_string());
        }
        Err(e) => return unavailable(&e),
    };
    let request_id = crate::routes::request_id(&req);
    tracing::info!(
        count = replayed.len(),
        code = filter.code.as_deref().unwrap_or(""),
        request_id = %request_id,
        "dead letters replayed by filter from the console"
    );
    publish(&state, &replayed, &request_id).await;
    redirect(&format!(
        "/console/lettres-mortes?rejouees={}",
        replayed.len()
    ))
}

/// `POST /console/lettres-mortes/{id}/rejouer`.
#[utoipa::path(
    post,
    path = "/console/lettres-mortes/{id}/rejouer",
    params(("id" = String, Path, description = "The dead letter's id")),
    tag = "console",
    operation_id = "console_replay",
    summary = "Replay one dead letter",
    responses(
        (status = 303, description = "Replayed: to its dossier"),
        (status = 403, description = "No session, or no valid CSRF token in the form", content_type = "text/html", body = String),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn replay(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    form: Form,
) -> HttpResponse {
    if let Err(res) = poster(&req, &state, &form) {
        return *res;
    }
    let replayed = match state.ledger.replay(&path.into_inner()).await {
        Ok(r) => r,
        Err(LedgerError::NotFound { .. }) => {
            return redirect("/console/lettres-mortes");
        }
        Err(LedgerError::AlreadyReplayed { dossier_id, .. }) => {
            return redirect(&format!("/console/dossiers/{dossier_id}"));
        }
        Err(e) => return unavailable(&e),
    };
    let request_id = crate::routes::request_id(&req);
    tracing::info!(
        dead_letter = %replayed.dead_letter_id,
        dossier_id = %replayed.dossier_id,
        replay_id = %replayed.replay_id,
        request_id = %request_id,
        "dead letter replayed from the console"
    );
    publish(&state, std::slice::from_ref(&replayed), &request_id).await;
    redirect(&format!(
        "/console/dossiers/{}?rejoue=1",
        replayed.dossier_id
    ))
}

/// An hourly bar chart, as inline SVG (attributes only: the CSP allows no inline style).
fn chart(title: &str, id: &str, points: &[(DateTime<Utc>, u64)]) -> Markup {
    let (w, h, pad) = (720u64, 160u64, 24u64);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let n = u64::try_from(points.len()).unwrap_or(1).max(1);
    let bar = (w - 2 * pad) / n;
    let total: u64 = points.iter().map(|p| p.1).sum();
    let mut svg = format!(
        "<svg role=\"img\" aria-labelledby=\"{id}-t {id}-d\" viewBox=\"0 0 {w} {h}\" \
         width=\"100%\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-t\">{title}</title>\
         <desc id=\"{id}-d\">{total} au total sur {n} heures, au plus {max} en une heure</desc>\
         <line x1=\"{pad}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#444\"/>",
        y = h - pad,
        x2 = w - pad,
    );
    for (i, (at, v)) in points.iter().enumerate() {
        let i = u64::try_from(i).unwrap_or(0);
        let bh = (h - 2 * pad) * v / max;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#1d4f91\">\
             <title>{} : {}</title></rect>",
            pad + i * bar + 1,
            h - pad - bh,
            bar.saturating_sub(2).max(1),
            bh,
            at.format("%d/%m %Hh"),
            v
        );
        if i % 6 == 0 {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#222\">{}</text>",
                pad + i * bar,
                h - 6,
                at.format("%Hh")
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{pad}\" y=\"14\" font-size=\"11\" fill=\"#222\">max {max}</text></svg>"
    );
    html! {
        figure {
            figcaption { (title) " — " (total) " sur 24 h" }
            (raw(svg))
        }
    }
}

/// Sample lines of a Prometheus text exposition whose name is `name`: (labels, value).
fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match key.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            (metric == name).then(|| (labels, value.parse().unwrap_or(0.0)))
        })
        .collect()
}

/// `GET /console/`: the dashboard.
#[utoipa::path(
    get,
    path = "/console/",
    tag = "console",
    operation_id = "console_dashboard",
    summary = "The operator console, in French: search, dossier, lettres mortes, tableau de bord, reprises, correspondances",
    description = "HTML for a browser. Without a session it redirects (303) to `/console/login`, a form taking `auth.tokens.admin` or `auth.tokens.admin_personal_data`; the session cookie is HttpOnly, SameSite=Strict, Secure under TLS and expires after 8 hours; every POST carries the session's CSRF token. On `server.admin_bind` when it is set.",
    responses(
        (status = 200, description = "A console page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
    ),
)]
pub async fn dashboard(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let since = Utc::now() - chrono::Duration::hours(23);
    let activity = match state.ledger.activity(since).await {
        Ok(a) => a,
        Err(e) => return unavailable(&e),
    };
    let mut depths = Vec::new();
    for lane in Flow::ALL {
        depths.push((lane, state.queue.depth(lane).await.ok()));
    }
    let metrics = state.metrics.encode();
    let latency_sum: f64 = samples(&metrics, "passerelle_agora_call_seconds_sum")
        .iter()
        .map(|s| s.1)
        .sum();
    let latency_count: f64 = samples(&metrics, "passerelle_agora_call_seconds_count")
        .iter()
        .map(|s| s.1)
        .sum();
    let calls = samples(&metrics, "passerelle_agora_calls_total");
    let polls = samples(&metrics, "passerelle_pole_emploi_polls_total");
    let agora = state.readiness.agora_status();
    let pole = state.pole_emploi.as_ref().map(|p| p.report());
    let series = |f: fn(&crate::ledger::search::HourActivity) -> u64| {
        activity.iter().map(|h| (h.hour, f(h))).collect::<Vec<_>>()
    };
    let body = html! {
        section aria-labelledby="activite" {
            h2 id="activite" { "Activité par heure (24 dernières heures, UTC)" }
            div class="charts" {
                (chart("Messages reçus", "c-intake", &series(|h| h.intake)))
                (chart("Appels AGORA réussis", "c-deliveries", &series(|h| h.deliveries)))
                (chart("Lettres mortes", "c-dead", &series(|h| h.dead_letters)))
            }
        }
        div class="cards" {
            section aria-labelledby="files" {
                h2 id="files" { "Files d'attente" }
                table {
                    thead { tr { th scope="col" { "Voie" } th scope="col" { "Tâches en attente" } } }
                    tbody { @for (lane, depth) in &depths {
                        tr { td { (match lane { Flow::Sync => "Flux synchrone", Flow::Backfill => "Reprise" }) }
                             td { @match depth { Some(d) => { (d) }, None => { "indisponible" } } } }
                    } }
                }
            }
            section aria-labelledby="agora" {
                h2 id="agora" { "AGORA" }
                dl class="summary" {
                    dt { "Santé" }
                    dd { @match agora["status"].as_str() {
                        Some("ok") => { span class="status delivered" { "Disponible" } },
                        Some("failing") => { span class="status dead" { "En échec" } " — " (agora["detail"].as_str().unwrap_or("")) },
                        _ => { "Pas encore vérifiée" },
                    } }
                    dt { "Latence moyenne" }
                    dd { @if latency_count > 0.0 { (format!("{:.0} ms", 1000.0 * latency_sum / latency_count)) " sur " (latency_count) " appel(s)" } @else { "aucun appel" } }
                }
                @if !calls.is_empty() {
                    table {
                        caption { "Appels depuis le démarrage" }
                        thead { tr { th scope="col" { "Opération, issue" } th scope="col" { "Nombre" } } }
                        tbody { @for (l, v) in &calls { tr { td { code { (l) } } td { (v) } } } }
                    }
                }
            }
            section aria-labelledby="pe" {
                h2 id="pe" { "Pôle emploi" }
                @match &pole {
                    None => { p { "L'interrogation de Pôle emploi est désactivée (" code { "pole_emploi.api_url" } " vide)." } },
                    Some(report) => {
                        p { "État : " code { (report["status"].as_str().unwrap_or("")) } }
                        @if let Some(last) = report["last_round"].as_object() {
                            dl class="summary" { @for (k, v) in last { dt { (k) } dd { (v.to_string()) } } }
                        }
                    },
                }
                @if !polls.is_empty() {
                    table {
                        caption { "Interrogations par issue" }
                        thead { tr { th scope="col" { "Issue" } th scope="col" { "Nombre" } } }
                        tbody { @for (l, v) in &polls { tr { td { code { (l) } } td { (v) } } } }
                    }
                }
            }
        }
    };
    html_response(layout(
        &op,
        Section::Dashboard,
        "Tableau de bord",
        None,
        body,
    ))
}

/// A Markdown document of headings, paragraphs and tables (what the generators write) as HTML.
fn markdown_tables(md: &str) -> Markup {
    let cells = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'|') => {
                    cur.push('|');
                    chars.next();
                }
                '|' => out.push(std::mem::take(&mut cur).trim().to_string()),
                c => cur.push(c),
            }
        }
        out.push(cur.trim().to_string());
        out
    };
    let inline = |s: &str| -> Markup {
        let parts: Vec<&str> = s.split('`').collect();
        html! { @for (i, p) in parts.iter().enumerate() { @if i % 2 == 1 { code { (p) } } @else { (p) } } }
    };
    let mut blocks: Vec<Markup> = Vec::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    let flush = |table: &mut Vec<Vec<String>>, blocks: &mut Vec<Markup>| {
        if table.is_empty() {
            return;
        }
        let head = table.remove(0);
        let rows = std::mem::take(table);
        blocks.push(html! {
            div class="scroll" { table {
                thead { tr { @for h in &head { th scope="col" { (inline(h)) } } } }
                tbody { @for r in &rows { tr { @for c in r { td { (inline(c)) } } } } }
            } }
        });
    };
    for line in md.lines() {
        if line.starts_with('|') {
            if !line.starts_with("|---") && !line.starts_with("|-") {
                table.push(cells(line));
            }
            continue;
        }
        flush(&mut table, &mut blocks);
        if let Some(h) = line.strip_prefix("# ") {
            blocks.push(html! { h2 { (inline(h)) } });
        } else if !line.trim().is_empty() {
            blocks.push(html! { p { (inline(line)) } });
        }
    }
    flush(&mut table, &mut blocks);
    html! { @for b in blocks { (b) } }
}

/// `GET /console/correspondances`: the mapping document and the rule codes, as `passerelle
/// mapping` and `passerelle rules` generate them.
#[utoipa::path(
    get,
    path = "/console/correspondances",
    tag = "console",
    operation_id = "console_mapping",
    summary = "The field correspondence and the rule codes",
    responses(
        (status = 200, description = "A console page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
    ),
)]
pub async fn mapping(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let document =
        passerelle_adapters::mapping::render(passerelle_adapters::mapping::Format::Markdown);
    let rules = crate::commands::rules::render();
    let body = html! {
        p {
            "La correspondance des champs de chaque système avec le dossier canonique et AGORA, et les règles "
            "de déclenchement de chaque flux, générées depuis le code des adaptateurs (" code { "passerelle mapping" } ")."
            " Télécharger : " a href="/console/correspondances.md" { "Markdown" } ", " a href="/console/correspondances.csv" { "CSV" } "."
        }
        (markdown_tables(&document))
        (markdown_tables(&rules))
    };
    html_response(layout(&op, Section::Mapping, "Correspondances", None, body))
}

fn download(
    op: Result<Operator, Box<HttpResponse>>,
    content_type: &str,
    name: &str,
    body: String,
) -> HttpResponse {
    if let Err(res) = op {
        return *res;
    }
    super::secured(HttpResponse::Ok())
        .content_type(content_type)
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        ))
        .body(body)
}

#[utoipa::path(
    get,
    path = "/console/correspondances.md",
    tag = "console",
    operation_id = "console_mapping_markdown",
    summary = "The field correspondence, as `passerelle mapping` writes it",
    responses(
        (status = 200, description = "A download", content_type = "text/markdown", body = String),
        (status = 303, description = "No session: to the login form"),
    ),
)]
pub async fn mapping_markdown(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    download(
        viewer(&req, &state),
        "text/markdown; charset=utf-8",
        "correspondances.md",
        passerelle_adapters::mapping::render(passerelle_adapters::mapping::Format::Markdown),
    )
}

#[utoipa::path(
    get,
    path = "/console/correspondances.csv",
    tag = "console",
    operation_id = "console_mapping_csv",
    summary = "The field correspondence as CSV",
    responses(
        (status = 200, description = "A download", content_type = "text/csv", body = String),
        (status = 303, description = "No session: to the login form"),
    ),
)]
pub async fn mapping_csv(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    download(
        viewer(&req, &state),
        "text/csv; charset=utf-8",
        "correspondances.csv",
        passerelle_adapters::mapping::render(passerelle_adapters::mapping::Format::Csv),
    )
}
