//! Prometheus metrics (`GET /metrics`): what was received, rejected (by rule), delivered (by
//! outcome), retried and dead-lettered, the queue depth and the delivery latency, and the Pôle
//! emploi polls (by outcome) with what became of the registrations they read. Labels carry codes
//! only, never a personal value.

use std::sync::Mutex;
use std::time::Duration;

use passerelle_adapters::agora::Outcome;
use passerelle_adapters::planner::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SystemLabel {
    pub system: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub system: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabel {
    pub end: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    pub lane: String,
}

/// Every metric of the gateway, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Messages accepted (202), per system.
    pub received: Family<SystemLabel, Counter>,
    /// Violations in rejected messages, per system and rule.
    pub rejected: Family<RuleLabel, Counter>,
    /// AGORA calls, per operation and outcome.
    pub agora_calls: Family<CallLabel, Counter>,
    /// AGORA call latency, seconds.
    pub agora_latency: Histogram,
    /// Reconciliations ended, per kind of end (delivered, retrying, dead_lettered, …).
    pub task_ends: Family<EndLabel, Counter>,
    /// Returns to ATEXO SEM that failed.
    pub returns_failed: Counter,
    /// Tasks waiting, per lane (refreshed when scraped).
    pub queue_depth: Family<LaneLabel, Gauge>,
    /// Ingress latency (HTTP in → 202), seconds.
    pub ingress_latency: Histogram,
    /// Polls of a session's Pôle emploi registrations, per outcome (`ok`, `refused`,
    /// `unauthorized`, `exhausted`, `unreadable`, `unavailable`).
    pub pe_polls: Family<OutcomeLabel, Counter>,
    /// Registrations read from Pôle emploi, per outcome: `changed` (accepted into the ledger and
    /// the dossier changed), `merged_unchanged` (accepted, the merged dossier did not change),
    /// `unchanged`, `unmatched` (no dossier of the ledger), `skipped` (out of perimeter or closed),
    /// `duplicate` (another registration of the same trainee won), `invalid` (with a `rule`
    /// label: the rule of its first violation), `refused`.
    pub pe_registrations: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("passerelle");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            received: Family::default(),
            rejected: Family::default(),
            agora_calls: Family::default(),
            agora_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            task_ends: Family::default(),
            returns_failed: Counter::default(),
            queue_depth: Family::default(),
            ingress_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            pe_polls: Family::default(),
            pe_registrations: Family::default(),
        };
        registry.register(
            "received",
            "Messages accepted (202), per system",
            m.received.clone(),
        );
        registry.register(
            "rejected_violations",
            "Violations in rejected messages, per system and rule",
            m.rejected.clone(),
        );
        registry.register(
            "agora_calls",
            "AGORA calls, per operation and outcome",
            m.agora_calls.clone(),
        );
        registry.register(
            "agora_call_seconds",
            "AGORA call latency",
            m.agora_latency.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciliations ended, per kind of end",
            m.task_ends.clone(),
        );
        registry.register(
            "atexo_returns_failed",
            "Returns to ATEXO SEM that failed",
            m.returns_failed.clone(),
        );
        registry.register(
            "queue_depth",
            "Tasks waiting, per lane",
            m.queue_depth.clone(),
        );
        registry.register(
            "ingress_seconds",
            "Ingress latency, HTTP in to 202",
            m.ingress_latency.clone(),
        );
        registry.register(
            "pole_emploi_polls",
            "Polls of a session's Pôle emploi registrations, per outcome",
            m.pe_polls.clone(),
        );
        registry.register(
            "pole_emploi_registrations",
            "Registrations read from Pôle emploi, per outcome (changed: a new dossier version)",
            m.pe_registrations.clone(),
        );
        if let Ok(mut r) = m.registry.lock() {
            *r = registry;
        }
        m
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    pub fn agora_call(&self, op: Operation, outcome: &Outcome, took: Duration) {
        let kind = crate::clients::agora::outcome_kind(outcome);
        self.agora_calls
            .get_or_create(&CallLabel {
                operation: op.name().to_string(),
                outcome: kind.to_string(),
            })
            .inc();
        self.agora_latency.observe(took.as_secs_f64());
    }

    /// A task ended, under its end's label ([`crate::worker::TaskEnd::label`]).
    pub fn task_end(&self, label: &'static str) {
        self.task_ends
            .get_or_create(&EndLabel { end: label.into() })
            .inc();
    }

    pub fn pe_poll(&self, outcome: &str) {
        self.pe_polls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn pe_registration(&self, outcome: &str) {
        self.pe_registrations
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    /// A registration that could not be read, under the rule of its first violation (one count
    /// per registration, so the `invalid` series still sum to the registrations left out).
    pub fn pe_invalid_registration(&self, rule: &str) {
        self.pe_registrations
            .get_or_create(&vec![
                ("outcome".to_string(), "invalid".to_string()),
                ("rule".to_string(), rule.to_string()),
            ])
            .inc();
    }

    pub fn return_failed(&self) {
        self.returns_failed.inc();
    }
}

#[cfg(test)]
mod tests {
    /// The README lists every metric operators can graph: a metric added here and not there fails.
    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        let text = super::Metrics::new().encode();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            assert!(
                readme.contains(name),
                "{name} is not in the README's metrics list"
            );
        }
    }
}
