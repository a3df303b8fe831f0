//! The inspection and control API over HTTP, under `/_sandbox` (not part of the contract): the
//! same as [`crate::RunningSandbox`]'s methods, for people rehearsing with `passerelle sandbox`.
//! NIRs never leave as such: a dossier shows its NIR masked and an `identity`, a salted hash of
//! (financeur, NIR-13, numero_session) that tells dossiers apart without revealing the NIR.

use crate::agora::Refusal;
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
        .route("/agora/refusals", web::get().to(get_refusals))
        .route("/agora/refusals", web::post().to(add_refusal))
        .route("/agora/refusals", web::delete().to(clear_refusals))
        .route("/agora/revoked-tokens", web::post().to(revoke_token))
        .route("/faults", web::get().to(get_faults))
        .route("/faults", web::post().to(set_faults))
        .route("/faults/next", web::post().to(force_fault))
        .route(
            "/pole-emploi/registrations",
            web::put().to(put_registrations),
        )
        .route("/pole-emploi/refusals", web::put().to(put_refusal))
        .route("/pole-emploi/refusals", web::delete().to(delete_refusal))
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

async fn get_refusals(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.agora.lock().refusals())
}

/// `POST /_sandbox/agora/refusals` with one [`Refusal`]: AGORA applies it from now on.
async fn add_refusal(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<Refusal>(&body) {
        Ok(r) if r.champ.starts_with('/') => {
            shared.agora.lock().refuse(r);
            HttpResponse::NoContent().finish()
        }
        Ok(_) => bad_request("champ must be a JSON pointer such as /formation/certification"),
        Err(e) => bad_request(e.to_string()),
    }
}

/// `DELETE /_sandbox/agora/refusals`: AGORA's rules are lifted (the correction on its side).
async fn clear_refusals(shared: web::Data<Shared>) -> HttpResponse {
    shared.agora.lock().clear_refusals();
    HttpResponse::NoContent().finish()
}

/// `{"token": "…"}`: AGORA refuses it with `401` from now on.
async fn revoke_token(
    shared: web::Data<Shared>,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    match body.get("token").and_then(serde_json::Value::as_str) {
        Some(token) if !token.is_empty() => {
            shared.revoked.lock().insert(token.to_string());
            HttpResponse::NoContent().finish()
        }
        _ => bad_request("expected {\"token\": \"…\"}"),
    }
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

/// The session a control call names by its query, if it names all three numbers.
fn session_of(req: &HttpRequest) -> Option<crate::pole_emploi::SessionKey> {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let get = |k: &str| query.get(k).filter(|v| !v.is_empty()).cloned();
    Some((
        get("numeroFormation")?,
        get("numeroAction")?,
        get("numeroSession")?,
    ))
}

fn no_session() -> HttpResponse {
    bad_request("numeroFormation, numeroAction and numeroSession are required")
}

/// `PUT /_sandbox/pole-emploi/registrations?numeroFormation=&numeroAction=&numeroSession=` with a
/// registrations list in Pôle emploi's own shape (checked against its schema).
async fn put_registrations(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    let Some((f, a, n)) = session_of(&req) else {
        return no_session();
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PeRefusal {
    status: u16,
    code_erreur: String,
}

/// `PUT /_sandbox/pole-emploi/refusals?numeroFormation=&numeroAction=&numeroSession=` with
/// `{"status", "codeErreur"}`: the session's registrations are answered with that error.
async fn put_refusal(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    let Some(key) = session_of(&req) else {
        return no_session();
    };
    let refusal: PeRefusal = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e.to_string()),
    };
    if !(400..=599).contains(&refusal.status) {
        return bad_request("status must be an error status (400 to 599)");
    }
    shared
        .pe
        .lock()
        .refusals
        .insert(key, (refusal.status, refusal.code_erreur));
    HttpResponse::NoContent().finish()
}

/// `DELETE /_sandbox/pole-emploi/refusals?…`: the session answers its registrations again.
async fn delete_refusal(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    match session_of(&req) {
        Some(key) => {
            shared.pe.lock().refusals.remove(&key);
            HttpResponse::NoContent().finish()
        }
        None => no_session(),
    }
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
