//! Step 1 of decoding: XML → [`RawDossier`] (shape: unknown or repeated elements and
//! attributes, bad UTF-8, entities), violations collected, attributes read without quick-xml's
//! checks and their duplicates found by slot.

#[allow(unused_imports)]
use super::*;

pub(super) type Rd<'a> = Reader<Source<'a>>;
pub(super) type Slot<T> = for<'t> fn(&'t mut T, &[u8]) -> Option<&'t mut Option<String>>;

/// Reads the attributes of `e` into `target` through `slot`; an attribute `slot` does not know is
/// reported as unexpected, one given twice as a syntax fault (the first one is kept). A malformed
/// attribute (no quotes, no `=`) is fatal: the rest of the tag cannot be read.
///
/// quick-xml's own duplicate check compares each name with every name before it: quadratic, so a
/// tag of a million attributes would take minutes. It is off; a duplicate is found instead by its
/// slot having been filled already, which costs nothing for the attributes the format defines
/// (a handful per element) and leaves unknown ones to the violation cap.
pub(super) fn attrs<T>(
    e: &BytesStart<'_>,
    sc: &mut Scratch,
    target: &mut T,
    slot: Slot<T>,
) -> Result<(), Violation> {
    // The slots filled so far, by address: a slot is a field of `target`.
    let mut filled: Vec<*const Option<String>> = Vec::new();
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    for a in attributes {
        sc.tick()?;
        // Not quick-xml's message, which quotes the document (see `Scratch::syntax`).
        let a = a.map_err(|_| sc.fatal(Rule::XmlSyntax, "has a malformed attribute list"))?;
        let key = a.key.as_ref();
        match slot(target, key) {
            Some(place) if filled.contains(&std::ptr::from_ref(place)) => sc.issue_attr(
                key,
                Rule::XmlSyntax,
                "appears more than once in this element: XML allows each attribute once",
            ),
            Some(place) => {
                filled.push(std::ptr::from_ref(place));
                *place = value(&a.value, sc, Some(key));
            }
            None => sc.issue_attr(
                key,
                Rule::XmlUnexpected,
                "is not an attribute the ATEXO SEM export defines here",
            ),
        }
    }
    Ok(())
}

/// The next event, once the deadline has been looked at.
pub(super) fn next_event<'b>(
    rd: &mut Rd<'_>,
    buf: &'b mut Vec<u8>,
    sc: &mut Scratch,
) -> Result<Event<'b>, Violation> {
    sc.tick()?;
    buf.clear();
    rd.read_event_into(buf)
        .map_err(|e| sc.syntax(&e, rd.error_position()))
}

/// An attribute's or a text's raw bytes as a value: UTF-8 checked, the predefined entities and
/// character references resolved, whitespace trimmed, empty meaning absent.
pub(super) fn value(raw: &[u8], sc: &mut Scratch, attr: Option<&[u8]>) -> Option<String> {
    let report = |sc: &mut Scratch, rule, detail: &str| match attr {
        Some(k) => sc.issue_attr(k, rule, detail),
        None => sc.issue(rule, detail),
    };
    let Ok(s) = std::str::from_utf8(raw) else {
        report(
            sc,
            Rule::XmlEncoding,
            "is not valid UTF-8, as the document declares",
        );
        return None;
    };
    if sc.mislabelled(s, attr) {
        return None;
    }
    let s = if s.contains('&') {
        match quick_xml::escape::unescape(s) {
            Ok(s) => s,
            Err(quick_xml::escape::EscapeError::UnrecognizedEntity(..)) => {
                report(
                    sc,
                    Rule::XmlSyntax,
                    "refers to an undeclared entity: only &lt; &gt; &amp; &apos; &quot; and character references are allowed",
                );
                return None;
            }
            Err(_) => {
                report(
                    sc,
                    Rule::XmlSyntax,
                    "holds a malformed character or entity reference",
                );
                return None;
            }
        }
    } else {
        Cow::Borrowed(s)
    };
    let t = s.trim_matches(is_xml_space);
    (!t.is_empty()).then(|| t.to_owned())
}

pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Reads the content of a text-only element up to its end tag.
pub(super) fn text(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
) -> Result<Option<String>, Violation> {
    sc.text.clear();
    let mut bad = false;
    let mut depth = 0usize;
    loop {
        let ev = next_event(rd, buf, sc)?;
        match ev {
            Event::Text(t) if depth == 0 => {
                let before = sc.found();
                let v = value_untrimmed(&t[..], sc);
                bad |= sc.found() > before;
                sc.text.push_str(&v);
            }
            Event::CData(t) if depth == 0 => match std::str::from_utf8(&t) {
                Ok(s) if sc.mislabelled(s, None) => bad = true,
                Ok(s) => sc.text.push_str(s),
                Err(_) => {
                    bad = true;
                    sc.issue(
                        Rule::XmlEncoding,
                        "is not valid UTF-8, as the document declares",
                    );
                }
            },
            Event::Start(_) | Event::Empty(_) if depth == 0 => {
                bad = true;
                sc.issue(
                    Rule::XmlUnexpected,
                    "holds an element where text is expected",
                );
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::Start(_) => depth += 1,
            Event::End(_) if depth == 0 => break,
            Event::End(_) => depth -= 1,
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this element"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            _ => {}
        }
    }
    if bad {
        return Ok(None);
    }
    let t = sc.text.trim_matches(is_xml_space);
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

/// A text event as a string, without trimming (a text may be split around a CDATA section).
pub(super) fn value_untrimmed<'t>(raw: &'t [u8], sc: &mut Scratch) -> Cow<'t, str> {
    let Ok(s) = std::str::from_utf8(raw) else {
        sc.issue(
            Rule::XmlEncoding,
            "is not valid UTF-8, as the document declares",
        );
        return Cow::Borrowed("");
    };
    if sc.mislabelled(s, None) {
        return Cow::Borrowed("");
    }
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    match quick_xml::escape::unescape(s) {
        Ok(s) => s,
        Err(quick_xml::escape::EscapeError::UnrecognizedEntity(..)) => {
            sc.issue(
                Rule::XmlSyntax,
                "refers to an undeclared entity: only &lt; &gt; &amp; &apos; &quot; and character references are allowed",
            );
            Cow::Borrowed("")
        }
        Err(_) => {
            sc.issue(
                Rule::XmlSyntax,
                "holds a malformed character or entity reference",
            );
            Cow::Borrowed("")
        }
    }
}

/// Skips the content of an element that should have none (or that is unknown), up to its end tag.
/// `report` says whether content found there is a violation.
pub(super) fn skip(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
    report: bool,
) -> Result<(), Violation> {
    let mut depth = 0usize;
    let mut reported = !report;
    loop {
        let ev = next_event(rd, buf, sc)?;
        match ev {
            Event::Start(_) | Event::Empty(_) | Event::Text(_) | Event::CData(_) if !reported => {
                reported = true;
                sc.issue(
                    Rule::XmlUnexpected,
                    "must be empty: its data are in its attributes",
                );
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::Start(_) => depth += 1,
            Event::End(_) if depth == 0 => return Ok(()),
            Event::End(_) => depth -= 1,
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this element"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            _ => {}
        }
    }
}

/// Elements whose data are their text: no attribute is expected.
pub(super) fn no_attrs<'t>(_: &'t mut (), _: &[u8]) -> Option<&'t mut Option<String>> {
    None
}

pub(super) fn export_slot<'t>(t: &'t mut RawExport, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"version" => Some(&mut t.version),
        b"region" => Some(&mut t.region),
        b"dateExport" => Some(&mut t.date_export),
        _ => None,
    }
}

pub(super) fn dossier_slot<'t>(t: &'t mut RawDossier, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"id" => Some(&mut t.id),
        b"version" => Some(&mut t.version),
        b"dateMaj" => Some(&mut t.date_maj),
        _ => None,
    }
}

pub(super) fn dispositif_slot<'t>(
    t: &'t mut RawDispositif,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"code" => Some(&mut t.code),
        b"libelle" => Some(&mut t.libelle),
        b"agora" => Some(&mut t.agora),
        _ => None,
    }
}

pub(super) fn programme_slot<'t>(
    t: &'t mut Option<String>,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    (k == b"code").then_some(t)
}

pub(super) fn consultation_slot<'t>(
    t: &'t mut RawConsultation,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"numero" => Some(&mut t.numero),
        b"lot" => Some(&mut t.lot),
        _ => None,
    }
}

pub(super) fn action_slot<'t>(t: &'t mut RawAction, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"numeroFormation" => Some(&mut t.numero_formation),
        b"numeroAction" => Some(&mut t.numero_action),
        b"numeroSession" => Some(&mut t.numero_session),
        b"intitule" => Some(&mut t.intitule),
        b"formacode" => Some(&mut t.formacode),
        b"formacodeVersion" => Some(&mut t.formacode_version),
        b"certification" => Some(&mut t.certification),
        _ => None,
    }
}

pub(super) fn organisme_slot<'t>(
    t: &'t mut RawOrganisme,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"siret" => Some(&mut t.siret),
        b"nda" => Some(&mut t.nda),
        b"raisonSociale" => Some(&mut t.raison_sociale),
        _ => None,
    }
}

pub(super) fn session_slot<'t>(t: &'t mut RawSession, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"dateDebut" => Some(&mut t.date_debut),
        b"dateFin" => Some(&mut t.date_fin),
        b"heuresCentre" => Some(&mut t.heures_centre),
        b"heuresEntreprise" => Some(&mut t.heures_entreprise),
        _ => None,
    }
}

pub(super) fn entree_slot<'t>(t: &'t mut RawEntree, k: &[u8]) -> Option<&'t mut Option<String>> {
    (k == b"date").then_some(&mut t.date)
}

pub(super) fn sortie_slot<'t>(t: &'t mut RawSortie, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"date" => Some(&mut t.date),
        b"motif" => Some(&mut t.motif),
        b"resultat" => Some(&mut t.resultat),
        b"heuresRealisees" => Some(&mut t.heures_realisees),
        _ => None,
    }
}

pub(super) fn financement_slot<'t>(
    t: &'t mut RawFinancement,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"financeur" => Some(&mut t.financeur),
        b"montantEngage" => Some(&mut t.montant_engage),
        b"montantRealise" => Some(&mut t.montant_realise),
        b"montantSolde" => Some(&mut t.montant_solde),
        _ => None,
    }
}

pub(super) fn annulation_slot<'t>(
    t: &'t mut RawAnnulation,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"date" => Some(&mut t.date),
        b"initiateur" => Some(&mut t.initiateur),
        b"motif" => Some(&mut t.motif),
        _ => None,
    }
}

pub(super) fn identifiant_pe_slot<'t>(
    t: &'t mut RawIdentifiantPe,
    k: &[u8],
) -> Option<&'t mut Option<String>> {
    match k {
        b"national" => Some(&mut t.national),
        b"regional" => Some(&mut t.regional),
        b"codeGeo" => Some(&mut t.code_geo),
        _ => None,
    }
}

pub(super) fn adresse_slot<'t>(t: &'t mut RawAdresse, k: &[u8]) -> Option<&'t mut Option<String>> {
    match k {
        b"codePostal" => Some(&mut t.code_postal),
        b"communeInsee" => Some(&mut t.commune_insee),
        _ => None,
    }
}

/// A block that may appear once: reports a repetition (the later one wins).
pub(super) fn once<'t, T: Default>(slot: &'t mut Option<T>, sc: &mut Scratch) -> &'t mut T {
    if slot.is_some() {
        sc.issue(Rule::XmlUnexpected, "appears more than once");
    }
    slot.insert(T::default())
}

/// What an element of a dossier holds once its start tag is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Content {
    /// Attributes only: any content is unexpected.
    Empty,
    /// Text (`categorie`, `etat`, the trainee's fields).
    Text,
    /// `<stagiaire>`: elements.
    Trainee,
    /// An unknown element: skipped, already reported.
    Unknown,
}

/// Reads the children of a `<dossier>` up to its end tag.
pub(super) fn read_dossier(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
    raw: &mut RawDossier,
) -> Result<(), Violation> {
    loop {
        let ev = next_event(rd, buf, sc)?;
        let (start, e) = match ev {
            Event::Start(e) => (true, e),
            Event::Empty(e) => (false, e),
            Event::End(_) => return Ok(()),
            Event::Text(_) | Event::CData(_) => {
                sc.issue(
                    Rule::XmlUnexpected,
                    "holds text where only elements are expected",
                );
                continue;
            }
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this dossier"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
        };
        let name = e.name();
        let name = name.as_ref();
        let mark = sc.path.len();
        let content = match name {
            b"dispositif" => {
                sc.enter("dispositif");
                let t = once(&mut raw.dispositif, sc);
                attrs(&e, sc, t, dispositif_slot)?;
                Content::Empty
            }
            b"programme" => {
                sc.enter("programme");
                if raw.programme.is_some() {
                    sc.issue(Rule::XmlUnexpected, "appears more than once");
                }
                attrs(&e, sc, &mut raw.programme, programme_slot)?;
                Content::Empty
            }
            b"consultation" => {
                sc.enter("consultation");
                let t = once(&mut raw.consultation, sc);
                attrs(&e, sc, t, consultation_slot)?;
                Content::Empty
            }
            b"action" => {
                sc.enter("action");
                let t = once(&mut raw.action, sc);
                attrs(&e, sc, t, action_slot)?;
                Content::Empty
            }
            b"organisme" => {
                sc.enter("organisme");
                let t = once(&mut raw.organisme, sc);
                attrs(&e, sc, t, organisme_slot)?;
                Content::Empty
            }
            b"session" => {
                sc.enter("session");
                let t = once(&mut raw.session, sc);
                attrs(&e, sc, t, session_slot)?;
                Content::Empty
            }
            b"entree" => {
                sc.enter("entree");
                let t = once(&mut raw.entree, sc);
                attrs(&e, sc, t, entree_slot)?;
                Content::Empty
            }
            b"sortie" => {
                sc.enter("sortie");
                let t = once(&mut raw.sortie, sc);
                attrs(&e, sc, t, sortie_slot)?;
                Content::Empty
            }
            b"annulation" => {
                sc.enter("annulation");
                let t = once(&mut raw.annulation, sc);
                attrs(&e, sc, t, annulation_slot)?;
                Content::Empty
            }
            b"financement" => {
                raw.financements.push(RawFinancement::default());
                let n = raw.financements.len();
                let _ = write!(sc.path, "/financement[{n}]");
                if let Some(t) = raw.financements.last_mut() {
                    attrs(&e, sc, t, financement_slot)?;
                }
                Content::Empty
            }
            b"categorie" | b"etat" | b"stagiaire" => {
                let (tag, content) = match name {
                    b"categorie" => ("categorie", Content::Text),
                    b"etat" => ("etat", Content::Text),
                    _ => ("stagiaire", Content::Trainee),
                };
                sc.enter(tag);
                attrs(&e, sc, &mut (), no_attrs)?;
                let seen = match tag {
                    "categorie" => raw.categorie.is_some(),
                    "etat" => raw.etat.is_some(),
                    _ => raw.stagiaire.is_some(),
                };
                if seen {
                    sc.issue(Rule::XmlUnexpected, "appears more than once");
                }
                content
            }
            other => {
                let other = scratch::shown_name(other);
                sc.enter(&other);
                sc.issue(
                    Rule::XmlUnexpected,
                    "is not an element of an ATEXO SEM dossier",
                );
                Content::Unknown
            }
        };
        let tag_is_etat = name == b"etat";
        drop(e);
        match (content, start) {
            (Content::Text, true) => {
                let v = text(rd, buf, sc)?;
                if tag_is_etat {
                    raw.etat = v;
                } else {
                    raw.categorie = v;
                }
            }
            (Content::Text, false) => {
                // `<nomUsage/>`: present but empty, which ATEXO writes for "none".
                if tag_is_etat {
                    raw.etat = None;
                } else {
                    raw.categorie = None;
                }
            }
            (Content::Trainee, true) => {
                let t = raw.stagiaire.insert(RawStagiaire::default());
                read_trainee(rd, buf, sc, t)?;
            }
            (Content::Trainee, false) => {
                raw.stagiaire = Some(RawStagiaire::default());
            }
            (Content::Empty, true) => skip(rd, buf, sc, true)?,
            (Content::Unknown, true) => skip(rd, buf, sc, false)?,
            (_, false) => {}
        }
        sc.path.truncate(mark);
    }
}

/// Reads the children of `<stagiaire>`.
pub(super) fn read_trainee(
    rd: &mut Rd<'_>,
    buf: &mut Vec<u8>,
    sc: &mut Scratch,
    t: &mut RawStagiaire,
) -> Result<(), Violation> {
    loop {
        let ev = next_event(rd, buf, sc)?;
        let (start, e) = match ev {
            Event::Start(e) => (true, e),
            Event::Empty(e) => (false, e),
            Event::End(_) => return Ok(()),
            Event::Text(_) | Event::CData(_) => {
                sc.issue(
                    Rule::XmlUnexpected,
                    "holds text where only elements are expected",
                );
                continue;
            }
            Event::Eof => {
                return Err(sc.fatal(Rule::XmlSyntax, "the document ends inside this dossier"))
            }
            Event::DocType(_) => {
                return Err(sc.fatal(Rule::XmlDoctype, "a DOCTYPE is not accepted"))
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
        };
        let mark = sc.path.len();
        // Which text field, if the element is one.
        let field: Option<fn(&mut RawStagiaire) -> &mut Option<String>> = match e.name().as_ref() {
            b"nir" => Some(|t| &mut t.nir),
            b"nomNaissance" => Some(|t| &mut t.nom_naissance),
            b"nomUsage" => Some(|t| &mut t.nom_usage),
            b"prenoms" => Some(|t| &mut t.prenoms),
            b"sexe" => Some(|t| &mut t.sexe),
            b"dateNaissance" => Some(|t| &mut t.date_naissance),
            _ => None,
        };
        let mut unknown = false;
        if let Some(f) = field {
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            sc.enter(&name);
            attrs(&e, sc, &mut (), no_attrs)?;
            if f(t).is_some() {
                sc.issue(Rule::XmlUnexpected, "appears more than once");
            }
        } else {
            match e.name().as_ref() {
                b"identifiantPE" => {
                    sc.enter("identifiantPE");
                    let x = once(&mut t.identifiant_pe, sc);
                    attrs(&e, sc, x, identifiant_pe_slot)?;
                }
                b"adresse" => {
                    sc.enter("adresse");
                    let x = once(&mut t.adresse, sc);
                    attrs(&e, sc, x, adresse_slot)?;
                }
                other => {
                    let other = scratch::shown_name(other);
                    sc.enter(&other);
                    sc.issue(
                        Rule::XmlUnexpected,
                        "is not an element of an ATEXO SEM trainee",
                    );
                    unknown = true;
                }
            }
        }
        drop(e);
        match (field, start) {
            (Some(f), true) => *f(t) = text(rd, buf, sc)?,
            (Some(f), false) => *f(t) = None,
            (None, true) => skip(rd, buf, sc, !unknown)?,
            (None, false) => {}
        }
        sc.path.truncate(mark);
    }
}
