//! Reprises: where the backfill stands (its totals, each input file read, each lot with its
//! members waiting, delivered or dead-lettered), and the reports of finished runs, for download.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

use super::operations::unavailable;
use super::{html_response, labels, layout, viewer, Section};
use crate::ledger::outbox::ReportMeta;
use crate::ledger::progress::{InputProgress, LotProgress, FILE_CHECKPOINT_PREFIX};
use crate::ledger::{BackfillProgress, LotState, AGORA};
use crate::routes::AppState;

/// How many lots, files and reports the page lists (the latest).
const LISTED: u32 = 50;

/// The counts of a backfill report, in the contract's order (§5).
const REPORT_COUNTS: &[&str] = &[
    "accepted",
    "rejected",
    "out_of_perimeter",
    "nothing_owed",
    "invalid",
];

/// `GET /console/reprises/rapports/{id}`: a backfill report, as kept (gzipped JSON).
#[utoipa::path(
    get,
    path = "/console/reprises/rapports/{id}",
    params(("id" = String, Path, description = "The report's id")),
    tag = "console",
    operation_id = "console_backfill_report",
    summary = "A backfill report, as kept (gzipped JSON)",
    responses(
        (status = 200, description = "A download", content_type = "application/gzip", body = Vec<u8>),
        (status = 303, description = "No session: to the login form"),
        (status = 404, description = "No such report", content_type = "text/plain", body = String),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn backfill_report(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(res) = viewer(&req, &state) {
        return *res;
    }
    let id = path.into_inner();
    match state.ledger.backfill_report(&id).await {
        Ok(Some(bytes)) => HttpResponse::Ok()
            .content_type("application/gzip")
            .insert_header((
                "content-disposition",
                format!("attachment; filename=\"rapport-reprise-{id}.json.gz\""),
            ))
            .body(bytes),
        Ok(None) => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("Aucun rapport de reprise de cet identifiant."),
        Err(e) => unavailable(&e),
    }
}

/// `GET /console/reprises`.
#[utoipa::path(
    get,
    path = "/console/reprises",
    tag = "console",
    operation_id = "console_backfill",
    summary = "The backfill's progress and reports",
    responses(
        (status = 200, description = "A console page", content_type = "text/html", body = String),
        (status = 303, description = "No session: to the login form"),
        (status = 503, description = "The ledger does not answer", content_type = "text/html", body = String),
    ),
)]
pub async fn backfill(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let op = match viewer(&req, &state) {
        Ok(op) => op,
        Err(res) => return *res,
    };
    let read = tokio::try_join!(
        state.ledger.backfill_progress(AGORA),
        state.ledger.lot_progress(AGORA, LISTED),
        state.ledger.input_progress(LISTED),
        state.ledger.backfill_reports(LISTED)
    );
    match read {
        Ok((progress, lots, inputs, reports)) => html_response(layout(
            &op,
            Section::Backfill,
            "Reprises",
            None,
            page(&progress, &lots, &inputs, &reports),
        )),
        Err(e) => unavailable(&e),
    }
}

fn lot_state(s: LotState) -> &'static str {
    match s {
        LotState::Claimed => "constitué, non envoyé",
        LotState::Submitted => "envoyé, compte rendu attendu",
        LotState::Done => "terminé",
    }
}

/// The page's body, from what the ledger says.
pub(crate) fn page(
    progress: &BackfillProgress,
    lots: &[LotProgress],
    inputs: &[InputProgress],
    reports: &[ReportMeta],
) -> Markup {
    let read: u64 = inputs.iter().map(|i| i.read).sum();
    let settled: u64 = lots.iter().map(LotProgress::settled).sum();
    let waiting: u64 = lots.iter().map(|l| l.waiting).sum();
    html! {
        section aria-labelledby="avancement" {
            h2 id="avancement" { "Avancement" }
            dl class="summary" {
                dt { "Dossiers lus" } dd class="read" { (read) @if !inputs.is_empty() { " (" (inputs.len()) " fichier(s))" } }
                dt { "Dossiers réglés dans un lot" } dd class="settled" { (settled) }
                dt { "En attente du compte rendu d'AGORA" } dd class="waiting" { (waiting) }
                dt { "À envoyer (hors lot)" } dd { (progress.claimable) }
                dt { "Lots en cours" } dd { (progress.open_lots) }
                dt { "Autres dossiers de reprise en attente" } dd { (progress.pending_other) }
                dt { "État" } dd { @if progress.is_idle() { "rien en cours" } @else { "en cours" } }
            }
            @if [lots.len(), inputs.len()].contains(&(LISTED as usize)) {
                p class="hint" { "Comptes des " (LISTED) " derniers lots et fichiers." }
            }
        }
        section aria-labelledby="lots" {
            h2 id="lots" { "Lots" }
            @if lots.is_empty() { p { "Aucun lot." } } @else {
                table class="lots" {
                    caption { "Chaque lot envoyé à AGORA, le plus récent d'abord : ses dossiers réglés (livrés, en lettre morte, ou repris un par un) et ceux qui attendent encore le compte rendu." }
                    thead { tr {
                        th scope="col" { "Lot" } th scope="col" { "État" } th scope="col" { "Lot AGORA" }
                        th scope="col" { "Dossiers" } th scope="col" { "Réglés" } th scope="col" { "En attente" }
                        th scope="col" { "Livrés" } th scope="col" { "En lettre morte" }
                        th scope="col" { "Créé le" } th scope="col" { "Dernier changement" }
                    } }
                    tbody { @for l in lots { tr {
                        td { code { (l.lot_key) } }
                        td { (lot_state(l.state)) }
                        td { @if let Some(a) = &l.agora_lot { code { (a) } } @else { "—" } }
                        td { (l.members) }
                        td { (l.settled()) }
                        td { (l.waiting) }
                        td { (l.delivered) }
                        td { (l.dead) }
                        td { (labels::time(l.created_at)) }
                        td { (labels::time(l.updated_at)) }
                    } } }
                }
            }
        }
        section aria-labelledby="fichiers" {
            h2 id="fichiers" { "Fichiers lus" }
            @if inputs.is_empty() { p { "Aucun fichier lu." } } @else {
                table class="inputs" {
                    caption { "Chaque fichier donné à " code { "passerelle backfill" } " (par l'empreinte de son chemin, de sa taille et de sa date) : ses dossiers lus et consignés dans le registre." }
                    thead { tr { th scope="col" { "Fichier" } th scope="col" { "Dossiers lus" } th scope="col" { "Dernière avancée" } } }
                    tbody { @for i in inputs { tr {
                        td { code { (i.key.strip_prefix(FILE_CHECKPOINT_PREFIX).unwrap_or(&i.key)) } }
                        td { (i.read) }
                        td { (labels::time(i.updated_at)) }
                    } } }
                }
            }
        }
        section aria-labelledby="rapports" {
            h2 id="rapports" { "Rapports des reprises" }
            p { "Le rapport de chaque reprise (" code { "passerelle backfill" } ") : ses comptes, et chaque dossier avec son résultat, en JSON compressé (gzip). Il ne contient aucune donnée personnelle." }
            @if reports.is_empty() { p { "Aucune reprise terminée." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Terminée le" }
                        @for c in REPORT_COUNTS { th scope="col" { code { (c) } } }
                        th scope="col" { "Rapport" }
                    } }
                    tbody { @for r in reports { tr {
                        td { (labels::time(r.finished_at)) }
                        @for c in REPORT_COUNTS { td { (r.counts.get(*c).and_then(serde_json::Value::as_u64).unwrap_or(0)) } }
                        td { a href={ "/console/reprises/rapports/" (r.report_id) } download { "Télécharger (" (r.gzip_bytes / 1024 + 1) " Kio)" } }
                    } } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn each_lot_shows_its_members_settled_and_waiting_and_each_file_its_reads() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 1, 8, 0, 0)
            .single()
            .expect("time");
        let lot = |key: &str, state, members, waiting, delivered, dead| LotProgress {
            lot_key: key.into(),
            state,
            agora_lot: (state != LotState::Claimed).then(|| format!("AG-{key}")),
            members,
            waiting,
            delivered,
            dead,
            created_at: at,
            updated_at: at,
        };
        let lots = [
            lot("L2", LotState::Submitted, 500, 120, 370, 10),
            lot("L1", LotState::Done, 500, 0, 497, 3),
        ];
        let inputs = [InputProgress {
            key: format!("{FILE_CHECKPOINT_PREFIX}0123abcd"),
            read: 1000,
            updated_at: at,
        }];
        let html = page(&BackfillProgress::default(), &lots, &inputs, &[]).into_string();
        let row = |cells: &[&str]| {
            cells
                .iter()
                .map(|c| format!("<td>{c}</td>"))
                .collect::<String>()
        };
        assert!(
            html.contains(&row(&["envoyé, compte rendu attendu"])),
            "{html}"
        );
        assert!(
            html.contains(&row(&["500", "380", "120", "370", "10"])),
            "{html}"
        );
        assert!(
            html.contains(&row(&["500", "500", "0", "497", "3"])),
            "{html}"
        );
        assert!(
            html.contains("<dd class=\"read\">1000 (1 fichier(s))</dd>"),
            "{html}"
        );
        assert!(html.contains("<dd class=\"settled\">880</dd>"), "{html}");
        assert!(html.contains("<dd class=\"waiting\">120</dd>"), "{html}");
        assert!(
            html.contains("<td><code>0123abcd</code></td><td>1000</td>"),
            "{html}"
        );
        let empty = page(&BackfillProgress::default(), &[], &[], &[]).into_string();
        assert!(empty.contains("Aucun lot.") && empty.contains("Aucun fichier lu."));
    }
}
