//! The inspection and control API over HTTP, under `/_sandbox` (not part of the contract): the
//! same as [`crate::RunningSandbox`]'s methods, for people rehearsing with `passerelle sandbox`.
//! NIRs never leave as such: a dossier shows its NIR masked and an `identity`, a salted hash of
//! (financeur, NIR-13, numero_session) that tells dossiers apart without revealing the NIR.

use crate::faults::{Faults, ForcedFault};
use crate::server::Shared;
use actix_web::{web, HttpRequest, HttpResponse};
use passerelle_adapters::canonical::mask_nir;
use passerelle_schemas::SchemaId;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A short salted hash of an identity, stable for the life of the sandbox.
pub(crate) fn identity_hash(salt: &[u8], financeur: &str, nir13: &str, session: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    for part in [financeur, nir13, session] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/journal", web::get().to(journal))
        .route("/agora/dossiers", web::get().to(dossiers))
        .route("/agora/creations", web::get().to(creations))
        .route("/faults", web::get().to(get_faults))
        .route("/faults", web::post().to(set_faults))
        .route("/faults/next", web::post().to(force_fault))
        .route(
            "/pole-emploi/registrations",
            web::put().to(put_registrations),
        )
        .route("/pole-emploi/expire-tokens", web::post().to(expire_tokens))
        .route("/atexo-sem/retours", web::get().to(returns))
        .route("/reset", web::post().to(reset));
}

async fn journal(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&*shared.journal.lock())
}

async fn dossiers(shared: web::Data<Shared>) -> HttpResponse {
    let list: Vec<serde_json::Value> = shared
        .agora
        .lock()
        .dossiers()
        .iter()
        .map(|d| {
            json!({
                "numero_agora": d.numero_agora,
                "reference": d.reference,
                "financeur": d.financeur,
                "nir13": mask_nir(d.nir13.expose()),
                "identity": identity_hash(&shared.salt, &d.financeur, d.nir13.expose(), &d.numero_session),
                "numero_session": d.numero_session,
                "etat": d.etat,
                "history": d.history,
                "state_conflicts": d.state_conflicts,
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

async fn creations(shared: web::Data<Shared>) -> HttpResponse {
    let list: Vec<serde_json::Value> = shared
        .agora
        .lock()
        .creations()
        .iter()
        .map(|c| {
            json!({
                "financeur": c.financeur,
                "identity": identity_hash(&shared.salt, &c.financeur, c.nir13.expose(), &c.numero_session),
                "numero_session": c.numero_session,
                "create_calls": c.create_calls,
                "created": c.created,
                "duplicates_refused": c.duplicates_refused,
                "lot_lines_existing": c.lot_lines_existing,
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

async fn get_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.faults.lock().faults())
}

fn bad_request(detail: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "detail": detail.into() }))
}

async fn set_faults(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e.to_string()),
    };
    match shared.faults.lock().set(faults) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn force_fault(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<ForcedFault>(&body) {
        Ok(f) => {
            shared.faults.lock().force(f);
            HttpResponse::NoContent().finish()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

/// `PUT /_sandbox/pole-emploi/registrations?numeroFormation=&numeroAction=&numeroSession=` with a
/// registrations list in Pôle emploi's own shape (checked against its schema).
async fn put_registrations(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let get = |k: &str| query.get(k).filter(|v| !v.is_empty()).cloned();
    let (Some(f), Some(a), Some(n)) = (
        get("numeroFormation"),
        get("numeroAction"),
        get("numeroSession"),
    ) else {
        return bad_request("numeroFormation, numeroAction and numeroSession are required");
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return bad_request("the body is not JSON"),
    };
    let violations = passerelle_schemas::check(SchemaId::PoleEmploiRegistrations, &value);
    if !violations.is_empty() {
        let list: Vec<_> = violations
            .iter()
            .map(|v| json!({"pointer": v.pointer, "keyword": v.keyword}))
            .collect();
        return HttpResponse::BadRequest().json(json!({
            "detail": "not a registrations list", "errors": list
        }));
    }
    shared.pe.lock().sessions.insert((f, a, n), value);
    HttpResponse::NoContent().finish()
}

async fn expire_tokens(shared: web::Data<Shared>) -> HttpResponse {
    shared.pe.lock().expire_tokens();
    HttpResponse::NoContent().finish()
}

async fn returns(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&*shared.returns.lock())
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.reset();
    HttpResponse::NoContent().finish()
}
