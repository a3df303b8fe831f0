//! The report's pass: each dossier's outcome read back from the ledger once the lots are settled,
//! and what an invalid dossier's entry says.

#[allow(unused_imports)]
use super::*;

/// An I/O error of the report, naming its file.
pub(super) fn report_error(opts: &Options) -> impl Fn(std::io::Error) -> BackfillError + '_ {
    |source| BackfillError::Report {
        path: opts
            .report
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        source,
    }
}

/// Reports each input dossier's outcome, in input order: from the spill when decoding settled
/// it, from the ledger's delivery row otherwise.
pub(super) async fn report_pass(
    ledger: &dyn Ledger,
    opts: &Options,
    spills: Vec<SpillReader>,
) -> Result<(report::Counts, Vec<Entry>), BackfillError> {
    use futures_util::StreamExt;
    const CHUNK: usize = 2_000;
    let report_err = report_error(opts);
    // The dead letters of the run's dossiers are read once (a few per cent of the input).
    let dead: HashMap<String, DeadReason> = ledger
        .dead_letters(&DeadLetterFilter {
            destination: Some(AGORA.to_string()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|d| (d.dossier_id, d.reason))
        .collect();
    // The JSON report is always made: kept in the ledger for the console, and written where
    // `--report` says (else to a temporary file, removed once kept).
    let json_path = opts.report.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "passerelle-backfill-report-{}.json",
            uuid::Uuid::now_v7()
        ))
    });
    let mut out = ReportWriter::new(Some(&json_path)).map_err(&report_err)?;
    for spill in spills {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<Item>>>(2);
        let reader = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            for item in spill {
                match item {
                    Ok(item) => chunk.push(item),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
                if chunk.len() >= CHUNK
                    && tx
                        .blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))))
                        .is_err()
                {
                    return;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(chunk));
            }
        });
        // The next chunk's delivery rows are read while this one is written.
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .map(|chunk| async move {
            let chunk = chunk.map_err(|source| BackfillError::Spill { source })?;
            let ids: Vec<String> = chunk
                .iter()
                .filter_map(|i| match i {
                    Item::Owed { dossier_id, .. } => Some(dossier_id.clone()),
                    Item::Done(_) => None,
                })
                .collect();
            let rows: HashMap<String, DeliveryRow> =
                ledger.deliveries(AGORA, &ids).await?.into_iter().collect();
            Ok::<_, BackfillError>((chunk, rows))
        })
        .buffered(2);
        let mut chunks = std::pin::pin!(chunks);
        while let Some(next) = chunks.next().await {
            let (chunk, rows) = next?;
            for item in chunk {
                let entry = match item {
                    Item::Done(e) => e,
                    Item::Owed { id, dossier_id } => {
                        outcome_of(id, &dossier_id, rows.get(&dossier_id), &dead)
                    }
                };
                out.push(entry).map_err(&report_err)?;
            }
        }
        let _ = reader.await;
    }
    let (counts, problems) = out.finish(Some(&json_path)).map_err(&report_err)?;
    report::keep(ledger, &json_path, &counts).await;
    if opts.report.is_none() {
        let _ = std::fs::remove_file(&json_path);
    }
    Ok((counts, problems))
}

/// One decoded input dossier, as far as decoding alone can say.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) enum Item {
    /// Its outcome needs no ledger: invalid or out of perimeter.
    Done(Entry),
    /// In perimeter: the ledger says what became of it.
    Owed { id: String, dossier_id: String },
}

impl Item {
    pub(super) fn decoded(d: &passerelle_adapters::sources::Record, dossier_id: &str) -> Item {
        match d.out_of_perimeter {
            Some(why) => Item::Done(Entry {
                id: d.id.clone(),
                outcome: Outcome::OutOfPerimeter,
                numero_agora: None,
                reason: Some(why.to_string()),
                errors: Vec::new(),
            }),
            None => Item::Owed {
                id: d.id.clone(),
                dossier_id: dossier_id.to_string(),
            },
        }
    }
}

/// The report's line for a dossier that failed decoding or validation.
/// `fatal`: the input cannot be read from there on.
pub(super) fn invalid_entry(
    id: Option<String>,
    index: usize,
    fatal: bool,
    violations: &[passerelle_adapters::Violation],
) -> Entry {
    Entry {
        id: id.unwrap_or_else(|| format!("#{index}")),
        outcome: Outcome::Invalid,
        numero_agora: None,
        reason: fatal.then(|| "unreadable_document".to_string()),
        errors: violations.iter().map(ReportError::violation).collect(),
    }
}

pub(super) fn outcome_of(
    id: String,
    dossier_id: &str,
    delivery: Option<&DeliveryRow>,
    dead: &HashMap<String, DeadReason>,
) -> Entry {
    let mut e = Entry {
        id,
        outcome: Outcome::Pending,
        numero_agora: None,
        reason: None,
        errors: Vec::new(),
    };
    let Some(delivery) = delivery else {
        e.outcome = Outcome::Invalid;
        e.errors.push(ReportError::other(
            "ledger.missing",
            "not recorded in the ledger",
        ));
        return e;
    };
    if let Delivered::Present { numero_agora, .. } = &delivery.delivered {
        if delivery.status != DeliveryStatus::Dead {
            e.outcome = Outcome::Accepted;
            e.numero_agora = Some(numero_agora.clone());
            return e;
        }
    }
    match delivery.status {
        DeliveryStatus::Delivered => e.outcome = Outcome::NothingOwed,
        DeliveryStatus::OutOfPerimeter => {
            e.outcome = Outcome::OutOfPerimeter;
            e.reason = Some("another_source".into());
        }
        DeliveryStatus::Incomplete => {
            e.outcome = Outcome::Invalid;
            e.reason = Some("incomplete_for_agora".into());
            e.errors = delivery
                .waiting_for
                .iter()
                .map(ReportError::violation)
                .collect();
        }
        DeliveryStatus::Dead => {
            e.outcome = Outcome::Rejected;
            match dead.get(dossier_id) {
                Some(DeadReason::Rejected { anomalies }) => {
                    e.reason = Some("agora_rejected".into());
                    e.errors = anomalies.iter().map(ReportError::anomaly).collect();
                }
                Some(other) => {
                    e.reason = Some(other.code());
                    e.errors
                        .push(ReportError::other(&other.code(), "not delivered"));
                }
                None => e.reason = Some("dead_letter".into()),
            }
        }
        DeliveryStatus::Pending => e.outcome = Outcome::Pending,
    }
    e
}
