//! What each posting system's posts have looked like since this replica started, for `/readyz`
//! (reported, never gating: a system that posts badly is its own news, not this replica's
//! inability to accept). An operator reads there that a system's posts have been refused since
//! 9:02 (`422`: invalid exports; `401`: its signatures stopped matching), without a log.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use passerelle_adapters::canonical::System;
use serde_json::{json, Value};

/// Every posting system's posts since start; one per replica, shared by the handlers.
#[derive(Debug, Default)]
pub struct Posts {
    by_system: Mutex<BTreeMap<System, Seen>>,
}

/// One system's posts since start.
#[derive(Debug, Default, Clone)]
struct Seen {
    accepted: u64,
    refused: u64,
    last_accepted_at: Option<DateTime<Utc>>,
    /// When, with which status and problem type.
    last_refusal: Option<(DateTime<Utc>, u16, &'static str)>,
    /// Whether the latest post was refused.
    refusing: bool,
}

impl Posts {
    /// Records how a post of `system` ended: accepted (`None`), or refused with this status and
    /// problem type. The routes record only posts whose caller is `system` (its bearer token), so
    /// that an anonymous post cannot make a system look as if it were failing.
    pub fn record(&self, system: System, refusal: Option<(u16, &'static str)>) {
        let mut by = self
            .by_system
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = by.entry(system).or_default();
        let now = Utc::now();
        match refusal {
            None => {
                seen.accepted += 1;
                seen.last_accepted_at = Some(now);
                seen.refusing = false;
            }
            Some((status, kind)) => {
                seen.refused += 1;
                seen.last_refusal = Some((now, status, kind));
                seen.refusing = true;
            }
        }
    }

    /// `system`'s part of `/readyz`: `idle` before its first post, `refusing` while its latest
    /// post was refused, `ok` otherwise; the counts since start and the latest of each outcome.
    pub fn report(&self, system: System) -> Value {
        let seen = self
            .by_system
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&system)
            .cloned()
            .unwrap_or_default();
        let status = if seen.accepted + seen.refused == 0 {
            "idle"
        } else if seen.refusing {
            "refusing"
        } else {
            "ok"
        };
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "status": status,
            "accepted": seen.accepted,
            "refused": seen.refused,
            "last_accepted_at": seen.last_accepted_at.map(at),
            "last_refusal": seen.last_refusal.map(|(t, status, kind)| json!({
                "at": at(t),
                "status": status,
                "type": kind,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_then_ok_then_refusing_then_ok_again() {
        let posts = Posts::default();
        assert_eq!(posts.report(System::Ouiform)["status"], "idle");
        posts.record(System::Ouiform, None);
        let r = posts.report(System::Ouiform);
        assert_eq!(
            (r["status"].as_str(), r["accepted"].as_u64()),
            (Some("ok"), Some(1))
        );
        assert!(r["last_refusal"].is_null());
        posts.record(
            System::Ouiform,
            Some((401, "urn:passerelle:problem:unauthorized")),
        );
        let r = posts.report(System::Ouiform);
        assert_eq!(r["status"], "refusing");
        assert_eq!(r["refused"], 1);
        assert_eq!(r["last_refusal"]["status"], 401);
        assert_eq!(
            r["last_refusal"]["type"],
            "urn:passerelle:problem:unauthorized"
        );
        posts.record(System::Ouiform, None);
        let r = posts.report(System::Ouiform);
        assert_eq!(r["status"], "ok");
        // The refusal stays visible after the system recovered.
        assert_eq!(r["last_refusal"]["status"], 401);
        // Each system is its own.
        assert_eq!(posts.report(System::AtexoSem)["status"], "idle");
    }
}
