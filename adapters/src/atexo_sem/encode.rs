//! Encoding: canonical dossiers written as an `exportSEM` document that decodes back to them.

#[allow(unused_imports)]
use super::*;

/// Why a canonical dossier cannot be written as ATEXO SEM XML.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("writing the export failed: {0}")]
    Io(#[from] io::Error),
    /// The dossier holds something ATEXO's format cannot say (index is 1-based).
    #[error("dossier #{index} cannot be written as ATEXO SEM XML: {reason}")]
    Unrepresentable { index: usize, reason: &'static str },
}

/// Writes `s` escaped for XML text or an attribute value. Tabs and line ends become character
/// references so attribute-value normalisation cannot turn them into spaces. Other C0 control
/// characters cannot appear in XML 1.0 at all: with `lossy` they become U+FFFD, else an error.
pub(super) fn escape_into(out: &mut String, s: &str, lossy: bool) -> Result<(), &'static str> {
    let mut rest = 0;
    for (i, c) in s.char_indices() {
        let rep: Cow<'static, str> = match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            '\t' => "&#9;".into(),
            '\n' => "&#10;".into(),
            '\r' => "&#13;".into(),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                if lossy {
                    "\u{FFFD}".into()
                } else {
                    return Err("a value holds a control character XML cannot carry");
                }
            }
            _ => continue,
        };
        out.push_str(&s[rest..i]);
        out.push_str(&rep);
        rest = i + c.len_utf8();
    }
    out.push_str(&s[rest..]);
    Ok(())
}

/// A small XML writer over a reused `String`.
pub(super) struct Xml {
    out: String,
    error: Option<&'static str>,
}

impl Xml {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }
    fn esc(&mut self, s: &str) {
        if let Err(e) = escape_into(&mut self.out, s, false) {
            self.error.get_or_insert(e);
        }
    }
    fn attr(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            self.esc(v);
            self.out.push('"');
        }
    }
    fn date_attr(&mut self, name: &str, d: Option<NaiveDate>) {
        if let Some(d) = d {
            let _ = write!(self.out, " {name}=\"{}\"", fmt_date(d));
        }
    }
    fn num_attr(&mut self, name: &str, n: Option<impl std::fmt::Display>) {
        if let Some(n) = n {
            let _ = write!(self.out, " {name}=\"{n}\"");
        }
    }
    fn text_elem(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => {
                let _ = write!(self.out, "<{name}>");
                self.esc(v);
                let _ = write!(self.out, "</{name}>");
            }
            None => {
                let _ = write!(self.out, "<{name}/>");
            }
        }
    }
}

/// A date as ATEXO writes it, `JJ/MM/AAAA`.
pub fn fmt_date(d: NaiveDate) -> String {
    format!("{:02}/{:02}/{:04}", d.day(), d.month(), d.year())
}

/// Cents as ATEXO writes euros: `4520,00`.
pub fn fmt_cents(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    let a = c.unsigned_abs();
    format!("{sign}{},{:02}", a / 100, a % 100)
}

pub(super) fn write_dossier(x: &mut Xml, d: &Dossier) -> Result<(), &'static str> {
    let src = d
        .source(System::AtexoSem)
        .ok_or("the dossier has no ATEXO SEM source (id and version)")?;
    let etat = etat_of(d.state).ok_or("ATEXO SEM has no state for a prescribed dossier")?;
    x.raw("  <dossier");
    x.attr("id", Some(&src.id));
    x.num_attr("version", src.version);
    x.date_attr("dateMaj", src.updated_on);
    x.raw(">\n");
    if let Some(disp) = &d.dispositif {
        x.raw("    <dispositif");
        x.attr("code", Some(&disp.code));
        x.attr("libelle", disp.label.as_deref());
        x.attr("agora", disp.agora.map(|a| if a { "O" } else { "N" }));
        x.raw("/>\n");
    }
    if let Some(c) = &d.category {
        x.raw("    ");
        x.text_elem("categorie", Some(c));
        x.raw("\n");
    }
    if let Some(p) = &d.programme {
        x.raw("    <programme");
        x.attr("code", Some(p));
        x.raw("/>\n");
    }
    if let Some(c) = &d.consultation {
        x.raw("    <consultation");
        x.attr("numero", Some(&c.number));
        x.attr("lot", c.lot.as_deref());
        x.raw("/>\n");
    }
    let t = &d.trainee;
    x.raw("    <stagiaire>\n      ");
    x.text_elem("nir", Some(t.nir.expose()));
    if let Some(v) = &t.birth_name {
        x.text_elem("nomNaissance", Some(v.expose()));
    }
    x.text_elem(
        "nomUsage",
        t.usage_name.as_ref().map(|v| v.expose().as_str()),
    );
    if let Some(v) = &t.first_names {
        x.text_elem("prenoms", Some(v.expose()));
    }
    if let Some(s) = t.sex {
        x.text_elem("sexe", Some(s.code()));
    }
    if let Some(b) = &t.birth_date {
        x.text_elem("dateNaissance", Some(&fmt_date(*b.expose())));
    }
    x.raw("\n");
    if let Some(p) = &t.pole_emploi_id {
        x.raw("      <identifiantPE");
        x.attr("national", p.national.as_deref());
        x.attr("regional", p.regional.as_deref());
        x.attr("codeGeo", p.geo_code.as_deref());
        x.raw("/>\n");
    }
    if t.postal_code.is_some() || t.commune_insee.is_some() {
        x.raw("      <adresse");
        x.attr("codePostal", t.postal_code.as_deref());
        x.attr("communeInsee", t.commune_insee.as_deref());
        x.raw("/>\n");
    }
    x.raw("    </stagiaire>\n");
    let tr = &d.training;
    x.raw("    <action");
    x.attr("numeroFormation", tr.numero_formation.as_deref());
    x.attr("numeroAction", tr.numero_action.as_deref());
    x.attr("numeroSession", Some(&tr.numero_session));
    x.attr("intitule", tr.title.as_deref());
    if let Some(f) = &tr.formacode {
        x.attr("formacode", Some(&f.code));
        x.attr("formacodeVersion", Some(&f.version));
    }
    x.attr("certification", tr.certification.as_deref());
    x.raw("/>\n");
    if let Some(p) = &d.provider {
        x.raw("    <organisme");
        x.attr("siret", p.siret.as_deref());
        x.attr("nda", p.nda.as_deref());
        x.attr("raisonSociale", p.name.as_deref());
        x.raw("/>\n");
    }
    if let Some(s) = &d.session {
        x.raw("    <session");
        x.date_attr("dateDebut", Some(s.start));
        x.date_attr("dateFin", Some(s.end));
        x.num_attr("heuresCentre", s.hours_centre);
        x.num_attr("heuresEntreprise", s.hours_company);
        x.raw("/>\n");
    }
    x.raw("    ");
    x.text_elem("etat", Some(etat));
    x.raw("\n");
    if let Some(e) = &d.entry {
        x.raw("    <entree");
        x.date_attr("date", Some(e.date));
        x.raw("/>\n");
    }
    if let Some(e) = &d.exit {
        x.raw("    <sortie");
        x.date_attr("date", Some(e.date));
        x.attr("motif", Some(e.reason.external()));
        x.attr("resultat", e.result.map(|r| r.external()));
        x.num_attr("heuresRealisees", e.hours_done);
        x.raw("/>\n");
    }
    for f in &d.fundings {
        x.raw("    <financement");
        x.num_attr("financeur", Some(f.funder));
        for (name, v) in [
            ("montantEngage", f.committed_cents),
            ("montantRealise", f.realised_cents),
            ("montantSolde", f.settled_cents),
        ] {
            // ATEXO writes "not yet" as an empty attribute.
            let text = v.map(fmt_cents).unwrap_or_default();
            x.attr(name, Some(&text));
        }
        x.raw("/>\n");
    }
    if let Some(c) = &d.cancellation {
        x.raw("    <annulation");
        x.date_attr("date", Some(c.date));
        x.attr("initiateur", Some(c.initiator.external()));
        x.attr("motif", c.reason.as_deref());
        x.raw("/>\n");
    }
    x.raw("  </dossier>\n");
    match x.error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Writes canonical dossiers as an `exportSEM` document (UTF-8), one dossier at a time; give it a
/// buffered writer. What ATEXO's format does not carry (orientation, registration, refusal) is
/// left out; the dossiers need an ATEXO SEM source for their id and version.
pub fn encode_export<'d>(
    dossiers: impl IntoIterator<Item = &'d Dossier>,
    mut w: impl Write,
) -> Result<(), EncodeError> {
    w.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<exportSEM version=\"1.0\">\n")?;
    let mut x = Xml {
        out: String::with_capacity(2048),
        error: None,
    };
    for (i, d) in dossiers.into_iter().enumerate() {
        x.out.clear();
        write_dossier(&mut x, d).map_err(|reason| EncodeError::Unrepresentable {
            index: i + 1,
            reason,
        })?;
        w.write_all(x.out.as_bytes())?;
    }
    w.write_all(b"</exportSEM>\n")?;
    w.flush()?;
    Ok(())
}
