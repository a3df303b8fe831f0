//! The Pôle emploi partner API simulator (contract §2.3): OAuth2 client credentials on the
//! `/partenaire` realm, and the registrations of a session, seeded by the tests.

use crate::faults::Call;
use crate::server::{bearer, serve, Reply, Shared, Tags};
use actix_web::{web, HttpRequest, HttpResponse};
use passerelle_adapters::pole_emploi::{encode_error, encode_token, ErrorBody, SessionRef, Token};
use rand::RngCore;
use std::collections::HashMap;
use std::time::Instant;

/// The session's three numbers, as the query gives them.
pub(crate) type SessionKey = (String, String, String);

pub(crate) fn key_of(s: &SessionRef) -> SessionKey {
    (
        s.numero_formation.clone(),
        s.numero_action.clone(),
        s.numero_session.clone(),
    )
}

/// Pôle emploi's data: tokens issued (secret → expiry), the registrations of each session, and
/// the sessions it refuses to show.
#[derive(Debug, Default)]
pub(crate) struct PeStore {
    tokens: HashMap<String, Instant>,
    pub sessions: HashMap<SessionKey, serde_json::Value>,
    /// Sessions answered with an error (status, `codeErreur`) instead of their registrations.
    pub refusals: HashMap<SessionKey, (u16, String)>,
}

impl PeStore {
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.sessions.clear();
        self.refusals.clear();
    }

    /// Every token issued so far expires now.
    pub fn expire_tokens(&mut self) {
        let now = Instant::now();
        for expiry in self.tokens.values_mut() {
            *expiry = now;
        }
    }
}

/// An answer carrying Pôle emploi's error body.
pub(crate) fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &encode_error(&ErrorBody {
            code_erreur: code.to_string(),
            code_http: status,
            message: message.to_string(),
        }),
    )
}

fn form(text: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(text)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// `POST /connexion/oauth2/access_token?realm=/partenaire`.
pub(crate) async fn token(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    serve(&shared, &req, Call::PeToken, Tags::default(), |s| {
        let query = form(req.query_string());
        if query.get("realm").map(String::as_str) != Some("/partenaire") {
            return error_reply(400, "REALM_INVALIDE", "le realm doit être /partenaire");
        }
        if crate::server::media_type(&req) != "application/x-www-form-urlencoded" {
            return error_reply(
                400,
                "REQUETE_INVALIDE",
                "le corps doit être application/x-www-form-urlencoded",
            );
        }
        let Ok(text) = std::str::from_utf8(&body) else {
            return error_reply(400, "REQUETE_INVALIDE", "le corps n'est pas en UTF-8");
        };
        let f = form(text);
        let field = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "client_credentials" {
            return error_reply(
                400,
                "GRANT_TYPE_INVALIDE",
                "grant_type doit être client_credentials",
            );
        }
        if field("scope").trim().is_empty() {
            return error_reply(400, "SCOPE_ABSENT", "le scope est obligatoire");
        }
        if field("client_id") != s.settings.pe_client_id
            || field("client_secret") != s.settings.pe_client_secret
        {
            return error_reply(401, "CLIENT_INVALIDE", "identifiants du client refusés");
        }
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let secret = hex::encode(bytes);
        let ttl = s.settings.pe_token_ttl;
        s.pe.lock()
            .tokens
            .insert(secret.clone(), Instant::now() + ttl);
        // `expires_in` is whole seconds: a sub-second lifetime still says 1 rather than 0.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        Reply::json(200, &encode_token(&Token::new(secret, "Bearer", secs)))
    })
    .await
}

/// `GET /inscriptions/statut/session?numeroFormation=&numeroAction=&numeroSession=`. A session
/// nobody seeded has no registrations: `200 []`; a refused one answers its error (after the token
/// and the parameters were checked, as Pôle emploi checks the habilitation last).
pub(crate) async fn registrations(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let query = form(req.query_string());
    let hint = Tags {
        reference: query.get("numeroSession").cloned(),
        ..Tags::default()
    };
    serve(&shared, &req, Call::PeRegistrations, hint, |s| {
        let valid = bearer(&req).is_some_and(|t| {
            s.pe.lock()
                .tokens
                .get(t)
                .is_some_and(|expiry| Instant::now() < *expiry)
        });
        if !valid {
            return error_reply(401, "JETON_INVALIDE", "jeton absent, inconnu ou expiré");
        }
        let get = |k: &str| query.get(k).filter(|v| !v.trim().is_empty()).cloned();
        let (Some(f), Some(a), Some(n)) = (
            get("numeroFormation"),
            get("numeroAction"),
            get("numeroSession"),
        ) else {
            return error_reply(
                400,
                "PARAMETRE_ABSENT",
                "numeroFormation, numeroAction et numeroSession sont obligatoires",
            );
        };
        let key = (f, a, n);
        let pe = s.pe.lock();
        if let Some((status, code)) = pe.refusals.get(&key) {
            return error_reply(*status, code, "sandbox: session refused on purpose");
        }
        let list = pe
            .sessions
            .get(&key)
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Array(Vec::new()));
        Reply::json(200, &list)
    })
    .await
}
