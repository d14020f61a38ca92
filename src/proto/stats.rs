//! Counters (SPEC §11): connections, accepted messages, rejections by reason, deliveries,
//! deferrals, bounces, TLS sessions by version and authentications by mechanism, per
//! service, since the start and since the last `clear stats`.
//!
//! The counters are process-wide and cheap to bump (one uncontended lock); they are
//! shown by the console's `show stats` and `drawbridge stats [--json]`. A rejection's
//! reason is the command and the reply's codes (`RCPT 550 5.7.1`), so the number of
//! distinct reasons is bounded by the protocol, and further capped by
//! [`MAX_REASONS`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use crate::proto::config::ServiceName;

/// Most distinct keys kept in one table (reasons, versions, mechanisms); more are
/// counted under `other`. 64 keys of a few dozen octets each.
pub const MAX_REASONS: usize = 64;

/// The counters of one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    pub connections: u64,
    pub accepted: u64,
    /// By reason: `COMMAND CODE ENHANCED-CODE`.
    pub rejected: BTreeMap<String, u64>,
    /// TLS sessions by version (`TLSv1.3`).
    pub tls: BTreeMap<String, u64>,
    pub auth_succeeded: BTreeMap<String, u64>,
    pub auth_failed: BTreeMap<String, u64>,
}

/// Every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub inbound: ServiceCounters,
    pub outbound: ServiceCounters,
    /// Recipients delivered, deferred (one per failed attempt) and bounced (refused for
    /// good, or expired in the queue).
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
    /// Our TLS sessions with next hops, by version.
    pub tls_out: BTreeMap<String, u64>,
}

impl Counters {
    fn service(&mut self, s: ServiceName) -> &mut ServiceCounters {
        match s {
            ServiceName::Inbound => &mut self.inbound,
            ServiceName::Outbound => &mut self.outbound,
        }
    }

    /// These counters less `earlier` (a snapshot taken at `clear stats`).
    fn since(&self, earlier: &Counters) -> Counters {
        let service = |now: &ServiceCounters, then: &ServiceCounters| ServiceCounters {
            connections: now.connections.saturating_sub(then.connections),
            accepted: now.accepted.saturating_sub(then.accepted),
            rejected: less(&now.rejected, &then.rejected),
            tls: less(&now.tls, &then.tls),
            auth_succeeded: less(&now.auth_succeeded, &then.auth_succeeded),
            auth_failed: less(&now.auth_failed, &then.auth_failed),
        };
        Counters {
            inbound: service(&self.inbound, &earlier.inbound),
            outbound: service(&self.outbound, &earlier.outbound),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            deferred: self.deferred.saturating_sub(earlier.deferred),
            bounced: self.bounced.saturating_sub(earlier.bounced),
            tls_out: less(&self.tls_out, &earlier.tls_out),
        }
    }
}

fn less(now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(then.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn bump(table: &mut BTreeMap<String, u64>, key: &str) {
    let key = if table.contains_key(key) || table.len() < MAX_REASONS {
        key
    } else {
        "other"
    };
    *table.entry(key.to_string()).or_insert(0) += 1;
}

struct Stats {
    total: Counters,
    at_clear: Counters,
    started: u64,
    cleared: Option<u64>,
}

static STATS: LazyLock<Mutex<Stats>> = LazyLock::new(|| {
    Mutex::new(Stats {
        total: Counters::default(),
        at_clear: Counters::default(),
        started: 0,
        cleared: None,
    })
});

fn with(f: impl FnOnce(&mut Stats)) {
    // A panic elsewhere while holding the lock leaves plain counters behind: use them.
    let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut stats);
}

/// The gateway started at `now` (unix seconds).
pub fn started(now: u64) {
    with(|s| s.started = now);
}

pub fn connection(service: ServiceName) {
    with(|s| s.total.service(service).connections += 1);
}

pub fn accepted(service: ServiceName) {
    with(|s| s.total.service(service).accepted += 1);
}

/// A refusal: `command` (`RCPT`, `CONNECT` …) and the reply's codes.
pub fn rejected(service: ServiceName, command: &str, code: u16, enhanced: Option<&str>) {
    let reason = match enhanced {
        Some(e) => format!("{command} {code} {e}"),
        None => format!("{command} {code}"),
    };
    with(|s| bump(&mut s.total.service(service).rejected, &reason));
}

pub fn tls(service: ServiceName, version: &str) {
    with(|s| bump(&mut s.total.service(service).tls, version));
}

pub fn authenticated(service: ServiceName, mechanism: &str, succeeded: bool) {
    with(|s| {
        let c = s.total.service(service);
        let table = if succeeded {
            &mut c.auth_succeeded
        } else {
            &mut c.auth_failed
        };
        bump(table, mechanism);
    });
}

/// What became of one recipient's delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Deferred,
    Bounced,
}

pub fn delivery(outcome: Delivery) {
    with(|s| match outcome {
        Delivery::Delivered => s.total.delivered += 1,
        Delivery::Deferred => s.total.deferred += 1,
        Delivery::Bounced => s.total.bounced += 1,
    });
}

pub fn tls_out(version: &str) {
    with(|s| bump(&mut s.total.tls_out, version));
}

/// `clear stats`: the since-clear counters start afresh at `now`.
pub fn clear(now: u64) {
    with(|s| {
        s.at_clear = s.total.clone();
        s.cleared = Some(now);
    });
}

/// The counters as they are now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub started: u64,
    pub cleared: Option<u64>,
    pub since_start: Counters,
    pub since_clear: Counters,
}

pub fn report() -> Report {
    let mut out = None;
    with(|s| {
        out = Some(Report {
            started: s.started,
            cleared: s.cleared,
            since_clear: s.total.since(&s.at_clear),
            since_start: s.total.clone(),
        });
    });
    // INVARIANT: `with` always runs its closure.
    out.unwrap_or_else(|| Report {
        started: 0,
        cleared: None,
        since_start: Counters::default(),
        since_clear: Counters::default(),
    })
}

/// The rows of a report: a name and the two counts.
fn rows(r: &Report) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let (a, b) = (&r.since_start, &r.since_clear);
    for (name, s, c) in [
        ("inbound", &a.inbound, &b.inbound),
        ("outbound", &a.outbound, &b.outbound),
    ] {
        out.push((format!("{name} connections"), s.connections, c.connections));
        out.push((format!("{name} accepted"), s.accepted, c.accepted));
        let tables = [
            ("rejected", &s.rejected, &c.rejected),
            ("TLS", &s.tls, &c.tls),
            ("auth succeeded", &s.auth_succeeded, &c.auth_succeeded),
            ("auth failed", &s.auth_failed, &c.auth_failed),
        ];
        for (what, total, since) in tables {
            for (key, n) in total {
                out.push((
                    format!("{name} {what} {key}"),
                    *n,
                    since.get(key).copied().unwrap_or(0),
                ));
            }
        }
    }
    out.push(("delivered".into(), a.delivered, b.delivered));
    out.push(("deferred".into(), a.deferred, b.deferred));
    out.push(("bounced".into(), a.bounced, b.bounced));
    for (key, n) in &a.tls_out {
        out.push((
            format!("delivery TLS {key}"),
            *n,
            b.tls_out.get(key).copied().unwrap_or(0),
        ));
    }
    out
}

/// The heading of the counters' column, which is at least as wide.
const COUNTER_HEADING: &str = "counter";

/// `show stats`: one counter a line, since the start and since the last clear.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let cleared = match r.cleared {
        Some(t) => format!("since clear ({})", crate::proto::calendar::mailq_stamp(t)),
        None => "since clear (never)".into(),
    };
    let _ = writeln!(
        out,
        "Counters since start ({}) and {cleared}",
        crate::proto::calendar::mailq_stamp(r.started)
    );
    let rows = rows(r);
    let width = rows
        .iter()
        .map(|(n, _, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(COUNTER_HEADING.len());
    let _ = writeln!(
        out,
        "{COUNTER_HEADING:<width$} {:>12} {:>12}",
        "start", "clear"
    );
    for (name, total, since) in rows {
        let _ = writeln!(out, "{name:<width$} {total:>12} {since:>12}");
    }
    out
}

fn json_counters(c: &Counters) -> String {
    let table = |t: &BTreeMap<String, u64>| {
        let items: Vec<String> = t
            .iter()
            .map(|(k, v)| format!("{}:{v}", crate::proto::json::json_string(k)))
            .collect();
        format!("{{{}}}", items.join(","))
    };
    let service = |s: &ServiceCounters| {
        format!(
            "{{\"connections\":{},\"accepted\":{},\"rejected\":{},\"tls\":{},\"auth_succeeded\":{},\"auth_failed\":{}}}",
            s.connections,
            s.accepted,
            table(&s.rejected),
            table(&s.tls),
            table(&s.auth_succeeded),
            table(&s.auth_failed)
        )
    };
    format!(
        "{{\"inbound\":{},\"outbound\":{},\"delivered\":{},\"deferred\":{},\"bounced\":{},\"tls_out\":{}}}",
        service(&c.inbound),
        service(&c.outbound),
        c.delivered,
        c.deferred,
        c.bounced,
        table(&c.tls_out)
    )
}

/// `drawbridge stats --json`.
pub fn json(r: &Report) -> String {
    format!(
        "{{\"started\":{},\"cleared\":{},\"since_start\":{},\"since_clear\":{}}}\n",
        r.started,
        r.cleared.map_or("null".to_string(), |t| t.to_string()),
        json_counters(&r.since_start),
        json_counters(&r.since_clear)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_clear_subtracts_and_tables_are_bounded() {
        let mut total = Counters::default();
        total.inbound.accepted = 5;
        bump(&mut total.inbound.rejected, "RCPT 550 5.7.1");
        let at_clear = total.clone();
        total.inbound.accepted = 7;
        bump(&mut total.inbound.rejected, "RCPT 550 5.7.1");
        bump(&mut total.inbound.rejected, "DATA 554 5.5.2");
        let since = total.since(&at_clear);
        assert_eq!(since.inbound.accepted, 2);
        assert_eq!(since.inbound.rejected.get("RCPT 550 5.7.1"), Some(&1));
        assert_eq!(since.inbound.rejected.get("DATA 554 5.5.2"), Some(&1));
        let mut t = BTreeMap::new();
        for i in 0..MAX_REASONS + 10 {
            bump(&mut t, &format!("r{i}"));
        }
        assert_eq!(t.len(), MAX_REASONS + 1);
        assert_eq!(t.get("other"), Some(&10));
    }

    #[test]
    fn text_and_json_show_every_counter() {
        let mut since_start = Counters::default();
        since_start.outbound.accepted = 3;
        bump(&mut since_start.outbound.auth_failed, "PLAIN");
        since_start.bounced = 1;
        let r = Report {
            started: 1_795_297_301,
            cleared: None,
            since_clear: since_start.clone(),
            since_start,
        };
        let text = text(&r);
        assert!(text.contains("outbound accepted"), "{text}");
        assert!(text.contains("outbound auth failed PLAIN"), "{text}");
        let json = json(&r);
        assert!(json.contains("\"auth_failed\":{\"PLAIN\":1}"), "{json}");
        assert!(json.contains("\"cleared\":null"));
    }
}
