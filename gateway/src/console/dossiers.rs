//! The search (with its filters, pages and CSV export) and the dossier page.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use passerelle_adapters::canonical::{mask_dossier_json, State};

use super::{csrf_field, failure, html_response, labels, layout, viewer, Section};
use crate::ledger::outbox::ReturnStatus;
use crate::ledger::search::Cursor;
use crate::ledger::{DeadLetterFilter, DeadReason, DeliveryStatus, AGORA};
use crate::routes::search::{self, agora_of};
use crate::routes::AppState;

fn pairs(req: &HttpRequest) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The query string of `pairs` with `key` set to `to` (or left out when empty).
fn with(pairs: &[(String, String)], key: &str, to: &str) -> String {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, v)| k != key && !v.is_empty())
        .cloned()
        .collect();
    if !to.is_empty() {
        out.push((key.to_string(), to.to_string()));
    }
    serde_urlencoded::to_string(out).unwrap_or_default()
}

fn filters(pairs: &[(String, String)]) -> Markup {
    let v = |k: &str| value(pairs, k).to_string();
    html! {
        form method="get" action="/console/dossiers" class="filters" aria-label="Filtres de recherche" {
            div {
                label for="f-q" { "Identifiant" }
                input type="search" id="f-q" name="q" value=(v("q"));
            }
            div {
                label for="f-state" { "État du dossier" }
                select id="f-state" name="state" {
                    option value="" { "Tous" }
                    @for s in State::ALL {
                        @let code = s.as_str();
                        option value=(code) selected[v("state") == code] { (labels::state(s)) }
                    }
                }
            }
            div {
                label for="f-delivery" { "Livraison AGORA" }
                select id="f-delivery" name="delivery" {
                    option value="" { "Toutes" }
                    @for d in DeliveryStatus::ALL {
                        option value=(d.as_str()) selected[v("delivery") == d.as_str()] { (labels::delivery(d)) }
                    }
                }
            }
            div {
                label for="f-funder" { "Financeur" }
                select id="f-funder" name="funder" {
                    option value="" { "Tous" }
                    @for f in labels::FUNDERS {
                        option value=(f) selected[v("funder") == f.to_string()] { (f) " – " (labels::funder(f)) }
                    }
                }
            }
            div {
                label for="f-session" { "N° de session" }
                input type="text" id="f-session" name="session" value=(v("session"));
            }
            div {
                label for="f-code" { "Code de lettre morte" }
                input type="text" id="f-code" name="code" value=(v("code")) placeholder="AG-CERTIF";
            }
            div {
                label for="f-since" { "Modifié depuis le" }
                input type="date" id="f-since" name="since" value=(v("since"));
            }
            div {
                label for="f-until" { "Modifié avant le" }
                input type="date" id="f-until" name="until" value=(v("until"));
            }
            div class="actions" {
                button type="submit" { "Filtrer" }
                a href="/console/dossiers" { "Effacer les filtres" }
            }
        }
    }
}

/// `GET /console/dossiers`: the search box's results, a page at a time.
#[utoipa::path(
    get,
    path = "/console/dossiers",
    tag = "console",
    operation_id = "console_search",
    summary = "The search box's results, a page at a time (the parameters of `GET /v1/dossiers`)",
    responses(
        (status = 200, description = "A console page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn search(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let pairs = pairs(&req);
    let q = value(&pairs, "q").trim().to_string();
    let query = search::parse(pairs.clone());
    let body = match query {
        Err(violations) => html! {
            (filters(&pairs))
            div class="error" role="alert" {
                p { "La recherche ne peut pas être lue :" }
                ul { @for v in &violations { li { code { (v.pointer) } " " (v.detail) } } }
            }
        },
        Ok(query) => {
            let page = match search::run(
                &*state.ledger,
                &state.credentials.dossier_salt,
                query.filter,
                op.personal_data,
            )
            .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "the console's search found the ledger unavailable");
                    return failure("Le registre ne répond pas : réessayez dans un instant.");
                }
            };
            html! {
                (filters(&pairs))
                p class="count" role="status" {
                    (page.dossiers.len()) " dossier(s) sur cette page."
                    " "
                    a href={ "/console/dossiers.csv?" (with(&pairs, "cursor", "")) } { "Exporter en CSV" }
                }
                @if !page.dossiers.is_empty() {
                    table {
                        caption { "Dossiers, les plus récemment modifiés d'abord" }
                        thead { tr {
                            th scope="col" { "Dossier" }
                            th scope="col" { "Sources" }
                            th scope="col" { "État" }
                            th scope="col" { "Livraison" }
                            th scope="col" { "N° AGORA" }
                            th scope="col" { "État AGORA" }
                            th scope="col" { "Session" }
                            th scope="col" { "Modifié le" }
                        } }
                        tbody {
                            @for row in &page.dossiers {
                                @let agora = agora_of(row);
                                tr {
                                    td { a href={ "/console/dossiers/" (row.dossier_id) } { (row.dossier_id) } }
                                    td { @for s in row.sources.iter().flat_map(|s| s.sources.first()) {
                                        span class="source" { (labels::system(s.system)) " " code { (s.id) } } " "
                                    } }
                                    td { (labels::state(row.desired.state)) }
                                    td { span class={ "status " (row.delivery.status.as_str()) } { (labels::delivery(row.delivery.status)) } }
                                    td { @if let Some((n, _)) = &agora { code { (n) } } @else { "—" } }
                                    td { @if let Some((_, s)) = &agora { code { (s) } " " (labels::agora_state(s)) } @else { "—" } }
                                    td { (row.desired.training.numero_session) }
                                    td { (labels::time(row.updated_at)) }
                                }
                            }
                        }
                    }
                }
                nav aria-label="Pages" class="pager" {
                    @if !value(&pairs, "cursor").is_empty() {
                        a href={ "/console/dossiers?" (with(&pairs, "cursor", "")) } { "Première page" }
                    }
                    @if let Some(next) = page.next.as_ref().map(Cursor::encode) {
                        a href={ "/console/dossiers?" (with(&pairs, "cursor", &next)) } rel="next" { "Page suivante" }
                    }
                }
            }
        }
    };
    html_response(layout(
        &op,
        Section::Search,
        "Recherche de dossiers",
        Some(&q),
        body,
    ))
}

/// Dossiers per keyset page of the CSV export (the search's largest page).
const EXPORT_PAGE: u32 = crate::ledger::search::MAX_LIMIT;

/// `GET /console/dossiers.csv`: every dossier the search selects, as CSV, whatever the number:
/// read a keyset page of [`EXPORT_PAGE`] at a time and streamed, so memory stays flat. The first
/// page is read before answering (the ledger down is a `503`, not an empty file); a failure
/// later ends the download early, which the browser reports as failed.
#[utoipa::path(
    get,
    path = "/console/dossiers.csv",
    tag = "console",
    operation_id = "console_search_csv",
    summary = "Every dossier the search selects, as CSV, streamed",
    responses(
        (status = 200, description = "A download", content_type = "text/csv", body = String),
        (status = 303, description = "No session: to the login form"),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn search_csv(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let mut pairs = pairs(&req);
    pairs.retain(|(k, _)| k != "limit" && k != "format" && k != "cursor");
    let Ok(query) = search::parse(pairs) else {
        return super::redirect("/console/dossiers");
    };
    let mut filter = query.filter;
    filter.limit = EXPORT_PAGE;
    let ledger = state.ledger.clone();
    let salt = state.credentials.dossier_salt.clone();
    let personal_data = op.personal_data;
    let first = match search::run(&*ledger, &salt, filter.clone(), personal_data).await {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!(error = %e, "the console's CSV export found the ledger unavailable");
            return failure("Le registre ne répond pas : réessayez dans un instant.");
        }
    };
    let mut text = String::from(search::CSV_HEADER);
    text.push_str(&search::csv_lines(&first.dossiers));
    let head = futures_util::stream::once(async move {
        Ok::<_, crate::ledger::LedgerError>(bytes::Bytes::from(text))
    });
    // Then each next page, from where the previous one stopped.
    let rest = futures_util::stream::try_unfold(first.next, move |cursor| {
        let (ledger, salt, mut filter) = (ledger.clone(), salt.clone(), filter.clone());
        async move {
            let Some(cursor) = cursor else {
                return Ok(None);
            };
            filter.cursor = Some(cursor);
            let page = search::run(&*ledger, &salt, filter, personal_data)
                .await
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "the console's CSV export stopped: the ledger failed");
                })?;
            let chunk = bytes::Bytes::from(search::csv_lines(&page.dossiers));
            Ok(Some((chunk, page.next)))
        }
    });
    super::secured(HttpResponse::Ok())
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            "attachment; filename=\"dossiers.csv\"",
        ))
        .streaming(futures_util::StreamExt::chain(head, rest))
}

/// One line of a dossier's timeline.
struct Event {
    at: DateTime<Utc>,
    kind: &'static str,
    what: Markup,
}

/// `GET /console/dossiers/{id}`.
#[utoipa::path(
    get,
    path = "/console/dossiers/{id}",
    params(("id" = String, Path, description = "The dossier's id")),
    tag = "console",
    operation_id = "console_dossier",
    summary = "A dossier and its timeline",
    responses(
        (status = 200, description = "The dossier's page (or that there is none)", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn dossier(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let id = path.into_inner();
    let ledger = &state.ledger;
    let read = async {
        let row = ledger.dossier(&id).await?;
        let journal = ledger.journal(&id).await?;
        let operations = ledger.operations(&id, AGORA).await?;
        let dead = ledger
            .dead_letters(&DeadLetterFilter {
                dossier_id: Some(id.clone()),
                include_replayed: true,
                ..DeadLetterFilter::default()
            })
            .await?;
        let returns = ledger.returns_of(&id).await?;
        Ok::<_, crate::ledger::LedgerError>((row, journal, operations, dead, returns))
    };
    let (row, journal, operations, dead, returns) = match read.await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the console's dossier page found the ledger unavailable");
            return failure("Le registre ne répond pas : réessayez dans un instant.");
        }
    };
    let Some(row) = row else {
        let body = html! { p role="alert" { "Aucun dossier " code { (id) } "." } };
        return html_response(layout(
            &op,
            Section::Search,
            "Dossier introuvable",
            None,
            body,
        ));
    };
    let mut desired = serde_json::to_value(&row.desired).unwrap_or_default();
    if op.personal_data {
        tracing::info!(
            dossier_id = %id,
            "a dossier's personal fields were shown in the console to the personal-data token"
        );
    } else {
        mask_dossier_json(&mut desired);
    }
    let agora = agora_of(&row);

    let mut events: Vec<Event> = Vec::new();
    for j in &journal {
        events.push(Event {
            at: j.received_at,
            kind: "Message reçu",
            what: html! {
                (labels::system(j.system)) " (" (labels::flow(j.flow)) ") — message "
                code { (j.message_id) }
                @if let Some(r) = &j.request_id { ", requête " code { (r) } }
            },
        });
    }
    for o in &operations {
        events.push(Event {
            at: o.at,
            kind: "Appel AGORA",
            what: html! {
                (labels::operation(o.operation)) " → "
                @match o.status { Some(s) => { "HTTP " (s) }, None => { "sans réponse" } }
                " : " (o.outcome)
                @if let Some(n) = &o.numero_agora { " — n° " code { (n) } }
                @if let Some(r) = &o.replay_id { " — rejeu " code { (r) } }
            },
        });
    }
    for r in &returns {
        events.push(Event {
            at: r.created_at,
            kind: "Retour ATEXO SEM",
            what: html! {
                "dossier ATEXO " code { (r.atexo_dossier) }
                @if let Some(n) = &r.numero_agora { " — n° " code { (n) } }
                @if let Some(e) = &r.etat { " — " code { (e) } " " (labels::agora_state(e)) }
                @if !r.anomaly_codes.is_empty() { " — anomalies " code { (r.anomaly_codes.join(", ")) } }
                " : " (labels::return_status(r.status))
                @if let Some(at) = r.sent_at { " le " (labels::time(at)) }
                @if r.attempts > 1 { " (" (r.attempts) " envois)" }
                @if let Some(e) = &r.last_error { @if r.status != ReturnStatus::Sent { " — " (e) } }
                " — clé " code { (r.return_id) }
            },
        });
    }
    for d in &dead {
        let detail = match &d.reason {
            DeadReason::Rejected { anomalies } => anomalies
                .iter()
                .map(|a| {
                    let a = if op.personal_data {
                        a.clone()
                    } else {
                        a.masked()
                    };
                    format!(
                        "{} {} {}",
                        a.code,
                        a.champ.unwrap_or_default(),
                        a.libelle.unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ; "),
            DeadReason::Exhausted { last_error, .. } => last_error.clone(),
            DeadReason::Irreconcilable { detail } => detail.clone(),
            DeadReason::Poison { returns } => {
                format!("tâche revenue {returns} fois sans être traitée (limite de livraisons)")
            }
        };
        events.push(Event {
            at: d.last_failure,
            kind: "Lettre morte",
            what: html! {
                code { (d.reason.code()) } " après " (d.attempts) " tentative(s) : " (detail)
                @if let Some(r) = &d.after_replay { " — fin de la tentative du rejeu " code { (r) } }
                @if let (Some(at), Some(r)) = (d.replayed_at, &d.replay_id) {
                    " — rejouée le " (labels::time(at)) " (rejeu " code { (r) } ")"
                } @else {
                    form method="post" action={ "/console/lettres-mortes/" (d.id) "/rejouer" } class="inline" {
                        (csrf_field(&op))
                        input type="hidden" name="retour" value={ "/console/dossiers/" (row.dossier_id) };
                        button type="submit" aria-label={ "Rejouer la lettre morte " (d.id) } { "Rejouer" }
                    }
                }
            },
        });
    }
    events.sort_by_key(|e| e.at);
    let replayed = req.query_string().contains("rejoue=1");

    let body = html! {
        @if replayed { p class="notice" role="status" { "Lettre morte rejouée : le dossier est de nouveau réconcilié avec AGORA." } }
        section aria-labelledby="resume" {
            h2 id="resume" { "Résumé" }
            dl class="summary" {
                dt { "État du dossier" } dd { (labels::state(row.desired.state)) " (" code { (row.desired.state.as_str()) } ")" }
                dt { "Livraison AGORA" } dd { span class={ "status " (row.delivery.status.as_str()) } { (labels::delivery(row.delivery.status)) } }
                dt { "Numéro AGORA" } dd { @if let Some((n, _)) = &agora { code class="agora-number" { (n) } } @else { "aucun" } }
                dt { "État AGORA" } dd {
                    @if let Some((_, s)) = &agora { code class="agora-state" { (s) } " " (labels::agora_state(s)) } @else { "—" }
                }
                dt { "Version désirée / livrée" } dd { (row.desired_version) " / " (row.delivery.delivered_version) }
                dt { "Tentatives" } dd { (row.delivery.attempts) }
                @if let Some(e) = &row.delivery.last_error { dt { "Dernière erreur" } dd { (e) } }
                @if !row.delivery.waiting_for.is_empty() {
                    dt { "En attente de" } dd { ul { @for v in &row.delivery.waiting_for { li { code { (v.pointer) } " " code { (v.rule.code()) } } } } }
                }
                dt { "Flux" } dd { (labels::flow(row.flow)) }
                dt { "Périmètre AGORA" } dd { @if row.in_perimeter { "dans le périmètre" } @else { "hors périmètre" } }
                dt { "Financeurs" } dd { @for f in &row.desired.fundings { (f.funder) " – " (labels::funder(f.funder)) br; } }
                dt { "Session" } dd { (row.desired.training.numero_session) }
                dt { "Créé / modifié le" } dd { (labels::time(row.created_at)) " / " (labels::time(row.updated_at)) }
            }
        }
        section aria-labelledby="sources" {
            h2 id="sources" { "Sources et versions" }
            table {
                thead { tr { th scope="col" { "Système" } th scope="col" { "Identifiant" } th scope="col" { "Version" } th scope="col" { "Mise à jour" } th scope="col" { "État transmis" } } }
                tbody {
                    @for s in &row.sources {
                        @if let Some(r) = s.sources.first() {
                            tr {
                                td { (labels::system(r.system)) }
                                td { code { (r.id) } }
                                td { @if let Some(v) = r.version { (v) } @else { "—" } }
                                td { @if let Some(d) = r.updated_on { (d.format("%d/%m/%Y")) } @else { "—" } }
                                td { (labels::state(s.state)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="chronologie" {
            h2 id="chronologie" { "Chronologie" }
            ol class="timeline" {
                @for e in &events {
                    li { span class="when" { (labels::time(e.at)) } " " strong { (e.kind) } " — " (e.what) }
                }
            }
            p class="hint" {
                "Chaque retour dû à ATEXO SEM (numéro AGORA attribué, transition acceptée ou refusée) est "
                "consigné dans le registre avant d'être envoyé : il figure ici avec son état d'envoi."
            }
        }
        section aria-labelledby="canonique" {
            h2 id="canonique" { "Dossier canonique" @if !op.personal_data { " (données personnelles masquées)" } }
            pre { (serde_json::to_string_pretty(&desired).unwrap_or_default()) }
        }
    };
    html_response(layout(
        &op,
        Section::Search,
        &format!("Dossier {}", row.dossier_id),
        None,
        body,
    ))
}
