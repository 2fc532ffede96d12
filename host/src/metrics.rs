//! Counters per destination and per source, rendered in Prometheus' text
//! format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::quota::QuotaKind;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The stages of Segment's delivery overview, for one destination.
#[derive(Debug, Default)]
pub struct DestinationStats {
    pub name: String,
    /// Routed to this destination.
    pub received: Counter,
    /// Not subscribed (type or `integrations`).
    pub filtered: Counter,
    pub delivered: Counter,
    /// Outcomes asking for another attempt.
    pub retried: Counter,
    /// Rejected by the plugin, or out of retries.
    pub dead_lettered: Counter,
    /// Plugin calls that failed as a whole (trap, timeout, contract breach).
    pub call_failures: Counter,
    /// Quota breaches, by [`QuotaKind::index`].
    pub breaches: [Counter; QuotaKind::ALL.len()],
    /// What `switchyard status` shows.
    pub status: Mutex<DestinationStatus>,
}

/// A destination's state for operators.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DestinationStatus {
    /// SHA-256 of the plugin's `.wasm`, hex.
    pub plugin_hash: String,
    /// When the plugin was loaded, ms since the Unix epoch.
    pub plugin_loaded_ms: i64,
    /// Why the destination is quarantined; `None` while active.
    pub quarantined: Option<String>,
    /// When a call last succeeded / failed, ms since the Unix epoch.
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub last_failure: Option<String>,
}

impl DestinationStats {
    /// A copy of the status.
    pub fn status(&self) -> DestinationStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Updates the status.
    pub fn update_status(&self, f: impl FnOnce(&mut DestinationStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// Ingest counters for one source.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub name: String,
    pub requests: Counter,
    pub events_accepted: Counter,
    pub events_failed: Counter,
}

/// A counter family: name, help text and how to read it from `T`.
type Series<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Everything `/metrics` shows.
#[derive(Debug, Default)]
pub struct Metrics {
    pub destinations: Vec<Arc<DestinationStats>>,
    pub sources: Vec<Arc<SourceStats>>,
    /// Requests refused before a source was known (bad key, bad JSON, size).
    pub rejected_requests: Counter,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let dest: [Series<DestinationStats>; 6] = [
            ("switchyard_destination_received_total", "Events routed to the destination", |d| d.received.get()),
            ("switchyard_destination_filtered_total", "Events not subscribed by the destination", |d| d.filtered.get()),
            ("switchyard_destination_delivered_total", "Events the destination accepted", |d| d.delivered.get()),
            ("switchyard_destination_retried_total", "Delivery attempts that asked for a retry", |d| d.retried.get()),
            ("switchyard_destination_dead_lettered_total", "Events rejected or out of retries", |d| {
                d.dead_lettered.get()
            }),
            ("switchyard_destination_call_failures_total", "Plugin calls that failed as a whole", |d| {
                d.call_failures.get()
            }),
        ];
        for (name, help, get) in dest {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for d in &self.destinations {
                let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, get(d));
            }
        }
        let name = "switchyard_destination_quarantined";
        let _ = writeln!(out, "# HELP {name} 1 while the destination is quarantined\n# TYPE {name} gauge");
        for d in &self.destinations {
            let _ =
                writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, u8::from(d.status().quarantined.is_some()));
        }
        let name = "switchyard_destination_quota_breaches_total";
        let _ = writeln!(out, "# HELP {name} Plugin calls that overstepped a sandbox quota\n# TYPE {name} counter");
        for d in &self.destinations {
            for kind in QuotaKind::ALL {
                let n = d.breaches[kind.index()].get();
                let _ = writeln!(out, "{name}{{destination=\"{}\",quota=\"{kind}\"}} {n}", d.name);
            }
        }
        let src: [Series<SourceStats>; 3] = [
            ("switchyard_source_requests_total", "Tracking API requests", |s| s.requests.get()),
            ("switchyard_source_events_accepted_total", "Events accepted", |s| s.events_accepted.get()),
            ("switchyard_source_events_failed_total", "Events failed on ingest (validation)", |s| {
                s.events_failed.get()
            }),
        ];
        for (name, help, get) in src {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in &self.sources {
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {}", s.name, get(s));
            }
        }
        let name = "switchyard_rejected_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused before reaching a source\n# TYPE {name} counter\n{name} {}",
            self.rejected_requests.get()
        );
        out
    }
}
