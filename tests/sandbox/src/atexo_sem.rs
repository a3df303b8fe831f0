//! ATEXO SEM's receiver of AGORA's returns (contract §4): `retourAgora` documents, checked and
//! stored for inspection.

use crate::faults::Call;
use crate::server::{media_type, serve, Reply, Shared, Tags};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use passerelle_adapters::agora::Anomaly;
use passerelle_adapters::planner::AgoraState;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::Serialize;

/// A return as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredReturn {
    /// ATEXO's dossier id.
    pub dossier: String,
    pub numero_agora: Option<String>,
    pub etat: Option<AgoraState>,
    pub date: NaiveDate,
    pub anomalies: Vec<Anomaly>,
    pub received_at: DateTime<Utc>,
    /// The `Idempotency-Key` it came with: a return posted again under the same key (the gateway
    /// crashed between its post and its record) is taken (`200`) and not stored twice, as ATEXO
    /// SEM deduplicates it.
    pub key: Option<String>,
}

/// Why a document is not a `retourAgora` (answered as `400` with this text; no value quoted).
fn invalid(why: &str) -> Reply {
    Reply {
        status: 400,
        body: why.as_bytes().to_vec(),
        content_type: Some("text/plain; charset=utf-8"),
        ..Reply::default()
    }
}

/// The attributes of an element, unescaped, with only the names allowed.
fn attributes(e: &BytesStart<'_>, allowed: &[&str]) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|_| "malformed attribute")?;
        let name = std::str::from_utf8(a.key.as_ref()).map_err(|_| "malformed attribute")?;
        if !allowed.contains(&name) {
            return Err("unknown attribute");
        }
        let value = a
            .unescape_value()
            .map_err(|_| "malformed attribute value")?;
        out.push((name.to_string(), value.into_owned()));
    }
    Ok(out)
}

fn take(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Reads a `retourAgora`: well-formed, root `retourAgora` with `dossier` and `date` (JJ/MM/AAAA),
/// optional `numeroAgora` and `etat` (an AGORA state), children `anomalie` (`code`, optional
/// `champ`, text) and nothing else.
pub fn parse_return(bytes: &[u8]) -> Result<StoredReturn, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut p = Parse::default();
    loop {
        match reader.read_event().map_err(|_| "not well-formed XML")? {
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err("a DOCTYPE is not accepted"),
            Event::Start(e) => p.element(&e, false)?,
            Event::Empty(e) => p.element(&e, true)?,
            Event::Text(t) => p.text(&t.unescape().map_err(|_| "malformed text")?)?,
            Event::CData(t) => p.text(std::str::from_utf8(&t).map_err(|_| "malformed text")?)?,
            Event::End(e) => p.end(e.name().as_ref())?,
        }
    }
    match p.root {
        Some(r) if p.closed => Ok(r),
        Some(_) => Err("retourAgora is not closed"),
        None => Err("no retourAgora element"),
    }
}

/// Where the reading of a `retourAgora` is.
#[derive(Default)]
struct Parse {
    root: Option<StoredReturn>,
    /// The root element has ended: nothing but comments may follow.
    closed: bool,
    /// The `anomalie` being read.
    current: Option<Anomaly>,
}

impl Parse {
    fn element(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<(), &'static str> {
        if self.closed {
            return Err("more than one root element");
        }
        let Some(root) = self.root.as_mut() else {
            if e.name().as_ref() != b"retourAgora" {
                return Err("the root element is not retourAgora");
            }
            let attrs = attributes(e, &["dossier", "numeroAgora", "etat", "date"])?;
            let dossier = take(&attrs, "dossier")
                .filter(|d| !d.trim().is_empty())
                .ok_or("retourAgora has no dossier")?;
            let date = take(&attrs, "date")
                .and_then(|d| NaiveDate::parse_from_str(&d, "%d/%m/%Y").ok())
                .ok_or("retourAgora has no valid date (JJ/MM/AAAA)")?;
            let etat = match take(&attrs, "etat") {
                Some(e) => Some(AgoraState::parse(&e).ok_or("etat is not an AGORA state")?),
                None => None,
            };
            self.root = Some(StoredReturn {
                dossier,
                numero_agora: take(&attrs, "numeroAgora"),
                etat,
                date,
                anomalies: Vec::new(),
                received_at: Utc::now(),
                key: None,
            });
            self.closed = empty;
            return Ok(());
        };
        if self.current.is_some() || e.name().as_ref() != b"anomalie" {
            return Err("retourAgora holds an element other than anomalie");
        }
        let attrs = attributes(e, &["code", "champ"])?;
        let code = take(&attrs, "code")
            .filter(|c| !c.is_empty())
            .ok_or("anomalie has no code")?;
        let anomaly = Anomaly {
            code,
            champ: take(&attrs, "champ"),
            libelle: None,
        };
        if empty {
            root.anomalies.push(anomaly);
        } else {
            self.current = Some(anomaly);
        }
        Ok(())
    }

    fn text(&mut self, t: &str) -> Result<(), &'static str> {
        let Some(a) = self.current.as_mut() else {
            return Err("text outside an anomalie");
        };
        a.libelle.get_or_insert_with(String::new).push_str(t);
        Ok(())
    }

    fn end(&mut self, name: &[u8]) -> Result<(), &'static str> {
        match (name, self.current.take(), self.root.as_mut()) {
            (b"anomalie", Some(a), Some(root)) => {
                root.anomalies.push(a);
                Ok(())
            }
            (b"retourAgora", None, Some(_)) if !self.closed => {
                self.closed = true;
                Ok(())
            }
            _ => Err("not well-formed XML"),
        }
    }
}

/// `POST /retours`: `200` and stored, `415` when not XML, `400` when not a `retourAgora`.
pub(crate) async fn receive(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    serve(&shared, &req, Call::AtexoReturn, Tags::default(), |s| {
        let mt = media_type(&req);
        if mt != "application/xml" && mt != "text/xml" {
            return Reply::empty(415);
        }
        match parse_return(&body) {
            Ok(mut r) => {
                let tags = Tags {
                    reference: Some(r.dossier.clone()),
                    numero_agora: r.numero_agora.clone(),
                    lot: None,
                };
                r.key = req
                    .headers()
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut returns = s.returns.lock();
                let known = r.key.is_some() && returns.iter().any(|seen| seen.key == r.key);
                if !known {
                    returns.push(r);
                }
                Reply::empty(200).tagged(tags)
            }
            Err(why) => invalid(why),
        }
    })
    .await
}

#[cfg(test)]
mod unit {
    use super::*;
    use passerelle_adapters::atexo_sem::{encode_return, AgoraReturn};

    #[test]
    fn reads_what_the_adapter_writes() {
        let r = AgoraReturn {
            dossier: "PDL-2019-000123".to_string(),
            numero_agora: Some("AG<1>".to_string()),
            etat: Some(AgoraState::Entre),
            date: NaiveDate::from_ymd_opt(2019, 9, 3).unwrap_or_default(),
            anomalies: vec![
                Anomaly {
                    code: "AG-042".to_string(),
                    champ: Some("stagiaire.nir13".to_string()),
                    libelle: Some("refusé & <x>".to_string()),
                },
                Anomaly {
                    code: "AG-1".to_string(),
                    champ: None,
                    libelle: None,
                },
            ],
        };
        let got = parse_return(encode_return(&r).as_bytes()).expect("a return");
        assert_eq!(got.dossier, r.dossier);
        assert_eq!(got.numero_agora, r.numero_agora);
        assert_eq!(got.etat, r.etat);
        assert_eq!(got.date, r.date);
        assert_eq!(got.anomalies, r.anomalies);
    }

    #[test]
    fn refuses_what_is_not_a_return() {
        for bad in [
            "",
            "<retour dossier=\"a\" date=\"01/01/2020\"/>",
            "<retourAgora date=\"01/01/2020\"/>",
            "<retourAgora dossier=\"a\" date=\"2020-01-01\"/>",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\" etat=\"X\"/>",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\" x=\"1\"/>",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\"><b/></retourAgora>",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\">",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\"/><retourAgora dossier=\"a\" date=\"01/01/2020\"/>",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\"><anomalie/></retourAgora>",
            "<retourAgora dossier=\"a\" date=\"01/01/2020\">texte</retourAgora>",
        ] {
            assert!(parse_return(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
