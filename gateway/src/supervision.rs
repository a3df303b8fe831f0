//! What keeps `serve` from failing silently: each long-running task (a worker lane, the sweeper,
//! the Pôle emploi poller) beats here while it runs, `/readyz` reports every beat, and a task that
//! ends when it was not told to makes `serve` exit non-zero (see `startup`), so that its
//! supervisor (systemd, Kubernetes, Docker's restart policy) starts it again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The last beat of each named long-running task.
#[derive(Debug, Default)]
pub struct Heartbeats {
    tasks: Mutex<BTreeMap<&'static str, Beat>>,
}

#[derive(Debug, Clone, Copy)]
struct Beat {
    at: DateTime<Utc>,
    ended: bool,
}

impl Heartbeats {
    /// `name` is alive now.
    pub fn beat(&self, name: &'static str) {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                name,
                Beat {
                    at: Utc::now(),
                    ended: false,
                },
            );
    }

    /// `name` ended: not ready any more (the process is on its way out).
    pub fn ended(&self, name: &'static str) {
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = tasks.get(name).map_or_else(Utc::now, |b| b.at);
        tasks.insert(name, Beat { at, ended: true });
    }

    /// Whether every task still runs, and each one's last beat for `/readyz`'s body.
    pub fn report(&self) -> (bool, Value) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Utc::now();
        let mut alive = true;
        let mut body = serde_json::Map::new();
        for (name, beat) in tasks.iter() {
            alive &= !beat.ended;
            body.insert(
                (*name).to_string(),
                json!({
                    "status": if beat.ended { "stopped" } else { "running" },
                    "heartbeat_at": beat.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "heartbeat_age_ms": (now - beat.at).num_milliseconds().max(0),
                }),
            );
        }
        (alive, Value::Object(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_task_is_reported_and_not_alive() {
        let h = Heartbeats::default();
        h.beat("sync");
        h.beat("sweeper");
        let (alive, body) = h.report();
        assert!(alive);
        assert_eq!(body["sync"]["status"], "running");
        h.ended("sync");
        let (alive, body) = h.report();
        assert!(!alive);
        assert_eq!(body["sync"]["status"], "stopped");
        assert_eq!(body["sweeper"]["status"], "running");
    }
}
