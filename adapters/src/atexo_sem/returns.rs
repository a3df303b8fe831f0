//! The `retourAgora` document that carries AGORA's answer back to ATEXO SEM (contract §4).

#[allow(unused_imports)]
use super::*;

/// AGORA's answer on one dossier, returned to ATEXO SEM (contract §4, `retourAgora`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgoraReturn {
    /// ATEXO's dossier id.
    pub dossier: String,
    /// The AGORA number, once assigned (*numéro AGORA*).
    pub numero_agora: Option<String>,
    /// AGORA's state after the operation, when it accepted one.
    pub etat: Option<AgoraState>,
    pub date: NaiveDate,
    /// AGORA's anomalies, when it rejected an operation.
    pub anomalies: Vec<Anomaly>,
}

/// The `retourAgora` XML of a return. Texts coming from AGORA are escaped; characters XML cannot
/// carry become U+FFFD rather than failing the return.
pub fn encode_return(r: &AgoraReturn) -> String {
    let mut out = String::with_capacity(256);
    let esc = |out: &mut String, s: &str| {
        let _ = escape_into(out, s, true);
    };
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<retourAgora dossier=\"");
    esc(&mut out, &r.dossier);
    out.push('"');
    if let Some(n) = &r.numero_agora {
        out.push_str(" numeroAgora=\"");
        esc(&mut out, n);
        out.push('"');
    }
    if let Some(e) = r.etat {
        let _ = write!(out, " etat=\"{}\"", e.as_str());
    }
    let _ = write!(out, " date=\"{}\"", fmt_date(r.date));
    if r.anomalies.is_empty() {
        out.push_str("/>\n");
        return out;
    }
    out.push('>');
    for a in &r.anomalies {
        out.push_str("<anomalie code=\"");
        esc(&mut out, &a.code);
        out.push('"');
        if let Some(c) = &a.champ {
            out.push_str(" champ=\"");
            esc(&mut out, c);
            out.push('"');
        }
        out.push('>');
        if let Some(l) = &a.libelle {
            esc(&mut out, l);
        }
        out.push_str("</anomalie>");
    }
    out.push_str("</retourAgora>\n");
    out
}
