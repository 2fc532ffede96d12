//! Counters per destination and per source, rendered in Prometheus' text
//! format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use switchyard_runtime::quota::QuotaKind;

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

/// Upper bounds of the plugin-call latency buckets, seconds.
pub const CALL_LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A Prometheus histogram with [`CALL_LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound (not cumulative; summed when
    /// rendered).
    buckets: [AtomicU64; CALL_LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = CALL_LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of series `name`
    /// with `labels` (`key="value"` pairs, comma-separated).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in CALL_LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
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
    /// Delivery attempts of an event that did not succeed: a retry or
    /// rejection outcome, or the event's share of a failed call.
    pub failed: Counter,
    /// Outcomes asking for another attempt.
    pub retried: Counter,
    /// Rejected by the plugin, or out of retries.
    pub dead_lettered: Counter,
    /// Plugin calls that failed as a whole (trap, timeout, contract breach).
    pub call_failures: Counter,
    /// Plugin calls run on the `delivery` threads, the destination being
    /// behind (`runtime.catch_up_backlog`).
    pub catch_up_calls: Counter,
    /// Times its threads left `SCHED_IDLE` because its calls stalled there
    /// (the machine busy with something else).
    pub idle_lifts: Counter,
    /// Quota breaches, by [`QuotaKind::index`].
    pub breaches: [Counter; QuotaKind::ALL.len()],
    /// Wall time of each `deliver` call.
    pub call_latency: Histogram,
    /// What the destination's warehouse loads did.
    pub warehouse: Arc<WarehouseStats>,
    /// What `switchyard status` shows.
    pub status: Mutex<DestinationStatus>,
    /// Exposures not delivered: the vendor's SDK owns them
    /// (`exposures = "owner:sdk"`), or a repeat within the dedupe window.
    pub exposures_owned: Counter,
    pub exposures_duplicate: Counter,
    /// Its exposure rule and dedupe cache, kept across reloads that keep
    /// the rule.
    pub exposure_gate: Mutex<Option<Arc<switchyard_governance::ExposureGate>>>,
    /// What the audit saw it receive and call.
    pub audit: crate::observed::Observed,
    /// Its position in the log as its worker last saw it (the first event
    /// not finished), ahead of the committed one by up to
    /// `server.cursor_commit_ms`; `u64::MAX` before the worker starts.
    pub position: LivePosition,
}

/// A worker's position in the log, published for the admin API.
#[derive(Debug)]
pub struct LivePosition(AtomicU64);

impl Default for LivePosition {
    fn default() -> Self {
        LivePosition(AtomicU64::new(u64::MAX))
    }
}

impl LivePosition {
    pub fn set(&self, at: u64) {
        self.0.store(at, Ordering::Relaxed);
    }

    /// Events from the position to `end`, once the worker has started.
    pub fn backlog(&self, end: u64) -> Option<u64> {
        let at = self.0.load(Ordering::Relaxed);
        (at != u64::MAX).then(|| end.saturating_sub(at))
    }
}

/// A destination's state for operators.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DestinationStatus {
    /// SHA-256 of the plugin's `.wasm`, hex.
    pub plugin_hash: String,
    /// The contract version the plugin was built against.
    pub plugin_contract: String,
    /// When the plugin was loaded, ms since the Unix epoch.
    pub plugin_loaded_ms: i64,
    /// The connector package it runs, when it names one.
    pub connector: Option<crate::admin_api::ConnectorView>,
    /// Events delivered by each plugin version (by hash) since start.
    pub delivered_by_plugin: BTreeMap<String, u64>,
    /// The last plugin version or settings refused on a reload, and why.
    pub refused: Option<Refusal>,
    /// Paused by the operator: no new calls.
    pub paused: bool,
    /// Why the destination is quarantined; `None` while active.
    pub quarantined: Option<String>,
    /// When a call last succeeded / failed, ms since the Unix epoch.
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub last_failure: Option<String>,
}

/// Rows a destination loaded through the `warehouse` capability.
#[derive(Debug, Default)]
pub struct WarehouseStats {
    /// Rows new to their table.
    pub inserted: Counter,
    /// Rows whose key was there already (ignored, or upserted).
    pub existing: Counter,
    /// Values that did not fit their column and went to `discards`.
    pub discarded: Counter,
    /// Loads that failed (nothing written).
    pub failures: Counter,
}

/// A new plugin version or config that was not adopted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    /// The refused plugin's hash, when it could be read.
    pub plugin_hash: Option<String>,
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

impl DestinationStats {
    /// The exposure gate for `policy`: the one kept if its policy is the
    /// same, else a new one (with an empty cache).
    pub fn exposure_gate(
        &self,
        policy: switchyard_governance::ExposurePolicy,
        max_keys: usize,
    ) -> Arc<switchyard_governance::ExposureGate> {
        let mut kept = self.exposure_gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kept.as_ref().filter(|g| g.policy() == policy) {
            Some(g) => g.clone(),
            None => {
                let gate = Arc::new(switchyard_governance::ExposureGate::new(policy, max_keys));
                *kept = Some(gate.clone());
                gate
            }
        }
    }

    /// A new destination's counters.
    pub fn new(name: &str) -> DestinationStats {
        DestinationStats { name: name.to_owned(), ..Default::default() }
    }

    /// Counts `n` events delivered by the plugin version `hash`.
    pub fn delivered_by(&self, hash: &str, n: u64) {
        if n > 0 {
            self.update_status(|s| *s.delivered_by_plugin.entry(hash.to_owned()).or_default() += n);
        }
    }

    /// The state operators see: `paused`, `quarantined` or `active`.
    pub fn state(&self) -> &'static str {
        let s = self.status();
        if s.paused {
            "paused"
        } else if s.quarantined.is_some() {
            "quarantined"
        } else {
            "active"
        }
    }

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
    /// Repeats of a `messageId` within the dedupe window, dropped.
    pub events_deduplicated: Counter,
    /// Requests over the source's rate limit, answered 429.
    pub rate_limited: Counter,
    /// Blocked by the tracking plan (forwarded or dropped).
    pub events_blocked: Counter,
    /// Of those, forwarded to `forwarding_blocked_events_to`.
    pub events_forwarded: Counter,
    /// What the tracking plan found, by event, field and kind.
    pub violations: switchyard_governance::ViolationLog,
}

/// A counter family: name, help text and how to read it from `T`.
type Series<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Everything `/metrics` shows. Destinations and sources come and go with
/// reloads.
#[derive(Debug, Default)]
pub struct Metrics {
    pub destinations: RwLock<Vec<Arc<DestinationStats>>>,
    pub sources: RwLock<Vec<Arc<SourceStats>>>,
    /// Requests refused before a source was known (bad key, bad JSON, size).
    pub rejected_requests: Counter,
    /// Reloads applied and refused.
    pub reloads_applied: Counter,
    pub reloads_refused: Counter,
    /// Requests answered 503 because the events could not be stored.
    pub ingest_refused: Refusals,
    /// The browser SDK's own metrics posts (`/v1/m`), accepted and dropped.
    pub sdk_metrics: Counter,
}

/// Ingest refusals by reason (the `code` of the sink's error).
#[derive(Debug, Default)]
pub struct Refusals {
    pub disk_below_floor: Counter,
    pub shutting_down: Counter,
    pub log_unavailable: Counter,
}

impl Refusals {
    /// The reasons, in the order they are rendered.
    pub const REASONS: [&'static str; 3] = ["disk_below_floor", "shutting_down", "log_unavailable"];

    /// Counts one refusal for `reason` (anything unknown counts as
    /// `log_unavailable`).
    pub fn count(&self, reason: &str) {
        self.get(reason).inc();
    }

    /// The counter of `reason`.
    pub fn get(&self, reason: &str) -> &Counter {
        match reason {
            "disk_below_floor" => &self.disk_below_floor,
            "shutting_down" => &self.shutting_down,
            _ => &self.log_unavailable,
        }
    }
}

/// What `/metrics` shows of the log: read when scraped.
pub trait LogGauges {
    /// Every consumer the log keeps, removed destinations included.
    fn consumers(&self) -> Vec<String>;
    /// The sequence number the next append gets.
    fn end(&self) -> u64;
    /// Records consumer `name` has not finished.
    fn backlog(&self, name: &str) -> Option<u64>;
    /// Bytes of log consumer `name` holds from deletion.
    fn held_bytes(&self, name: &str) -> Option<u64>;
    /// Free bytes where the log stores records.
    fn free_bytes(&self) -> Option<u64>;
    /// Whether an append would be accepted now.
    fn accepting(&self) -> bool;
    /// Whether other nodes consume the log too.
    fn shared(&self) -> bool;
}

impl<L: switchyard_log::EventLog> LogGauges for L {
    fn consumers(&self) -> Vec<String> {
        switchyard_log::EventLog::consumers(self)
    }
    fn end(&self) -> u64 {
        switchyard_log::EventLog::end(self)
    }
    fn backlog(&self, name: &str) -> Option<u64> {
        switchyard_log::EventLog::backlog(self, name)
    }
    fn held_bytes(&self, name: &str) -> Option<u64> {
        switchyard_log::EventLog::held_bytes(self, name)
    }
    fn free_bytes(&self) -> Option<u64> {
        switchyard_log::EventLog::free_bytes(self)
    }
    fn accepting(&self) -> bool {
        switchyard_log::EventLog::accepting(self).is_ok()
    }

    fn shared(&self) -> bool {
        switchyard_log::EventLog::shared(self)
    }
}

impl Metrics {
    /// The current destinations.
    pub fn destinations(&self) -> Vec<Arc<DestinationStats>> {
        self.destinations.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// The destination named `name`.
    pub fn destination(&self, name: &str) -> Option<Arc<DestinationStats>> {
        self.destinations.read().ok()?.iter().find(|d| d.name == name).cloned()
    }

    /// The current sources.
    pub fn sources(&self) -> Vec<Arc<SourceStats>> {
        self.sources.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Replaces the destinations and sources shown.
    pub fn set(&self, destinations: Vec<Arc<DestinationStats>>, sources: Vec<Arc<SourceStats>>) {
        if let Ok(mut d) = self.destinations.write() {
            *d = destinations;
        }
        if let Ok(mut s) = self.sources.write() {
            *s = sources;
        }
    }

    /// The Prometheus text exposition, with the gauges `log` reports.
    pub fn render(&self, log: &dyn LogGauges) -> String {
        let mut out = String::new();
        let destinations = self.destinations();
        let sources = self.sources();
        let dest: [Series<DestinationStats>; 9] = [
            ("switchyard_destination_received_total", "Events routed to the destination", |d| d.received.get()),
            ("switchyard_destination_filtered_total", "Events not subscribed by the destination", |d| d.filtered.get()),
            ("switchyard_destination_delivered_total", "Events the destination accepted", |d| d.delivered.get()),
            ("switchyard_destination_failed_total", "Delivery attempts of an event that did not succeed", |d| {
                d.failed.get()
            }),
            ("switchyard_destination_retried_total", "Delivery attempts that asked for a retry", |d| d.retried.get()),
            ("switchyard_destination_dead_lettered_total", "Events rejected or out of retries", |d| {
                d.dead_lettered.get()
            }),
            ("switchyard_destination_call_failures_total", "Plugin calls that failed as a whole", |d| {
                d.call_failures.get()
            }),
            (
                "switchyard_destination_catch_up_calls_total",
                "Plugin calls run on the delivery threads, the destination being behind",
                |d| d.catch_up_calls.get(),
            ),
            (
                "switchyard_destination_idle_lifts_total",
                "Times the destination's threads left SCHED_IDLE because its calls stalled there",
                |d| d.idle_lifts.get(),
            ),
        ];
        for (name, help, get) in dest {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for d in &destinations {
                let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, get(d));
            }
        }
        // Every consumer of the log, removed destinations too: they hold
        // their undelivered events until purged.
        let consumers = log.consumers();
        let name = "switchyard_destination_backlog";
        let _ =
            writeln!(out, "# HELP {name} Events in the log not yet finished by the destination\n# TYPE {name} gauge");
        let end = log.end();
        for c in &consumers {
            let live =
                destinations.iter().find(|d| d.name == *c && !log.shared()).and_then(|d| d.position.backlog(end));
            if let Some(n) = live.or_else(|| log.backlog(c)) {
                let _ = writeln!(out, "{name}{{destination=\"{c}\"}} {n}");
            }
        }
        let name = "switchyard_destination_log_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Bytes of the log the destination holds from deletion (whole segments)\n# TYPE {name} gauge"
        );
        for c in &consumers {
            if let Some(n) = log.held_bytes(c) {
                let _ = writeln!(out, "{name}{{destination=\"{c}\"}} {n}");
            }
        }
        let name = "switchyard_destination_paused";
        let _ = writeln!(out, "# HELP {name} 1 while the operator has paused the destination\n# TYPE {name} gauge");
        for d in &destinations {
            let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, u8::from(d.status().paused));
        }
        let name = "switchyard_destination_call_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Wall time of plugin deliver calls\n# TYPE {name} histogram");
        for d in &destinations {
            d.call_latency.render(&mut out, name, &format!("destination=\"{}\"", d.name));
        }
        let name = "switchyard_destination_warehouse_rows_total";
        let _ = writeln!(
            out,
            "# HELP {name} Rows loaded through the warehouse capability, by result\n# TYPE {name} counter"
        );
        for d in &destinations {
            let w = &d.warehouse;
            for (result, n) in [("inserted", &w.inserted), ("existing", &w.existing), ("discarded", &w.discarded)] {
                let _ = writeln!(out, "{name}{{destination=\"{}\",result=\"{result}\"}} {}", d.name, n.get());
            }
        }
        let name = "switchyard_destination_warehouse_load_failures_total";
        let _ = writeln!(out, "# HELP {name} Warehouse loads that failed\n# TYPE {name} counter");
        for d in &destinations {
            let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, d.warehouse.failures.get());
        }
        let name = "switchyard_destination_quarantined";
        let _ = writeln!(out, "# HELP {name} 1 while the destination is quarantined\n# TYPE {name} gauge");
        for d in &destinations {
            let _ =
                writeln!(out, "{name}{{destination=\"{}\"}} {}", d.name, u8::from(d.status().quarantined.is_some()));
        }
        let name = "switchyard_destination_quota_breaches_total";
        let _ = writeln!(out, "# HELP {name} Plugin calls that overstepped a sandbox quota\n# TYPE {name} counter");
        for d in &destinations {
            for kind in QuotaKind::ALL {
                let n = d.breaches[kind.index()].get();
                let _ = writeln!(out, "{name}{{destination=\"{}\",quota=\"{kind}\"}} {n}", d.name);
            }
        }
        let name = "switchyard_destination_exposures_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Experiment exposures kept from the destination: its vendor's SDK owns them, or a repeat within the window\n# TYPE {name} counter"
        );
        for d in &destinations {
            for (reason, n) in [("owned_by_sdk", &d.exposures_owned), ("duplicate", &d.exposures_duplicate)] {
                let _ = writeln!(out, "{name}{{destination=\"{}\",reason=\"{reason}\"}} {}", d.name, n.get());
            }
        }
        let src: [Series<SourceStats>; 7] = [
            ("switchyard_source_requests_total", "Tracking API requests", |s| s.requests.get()),
            ("switchyard_source_events_accepted_total", "Events accepted", |s| s.events_accepted.get()),
            ("switchyard_source_events_failed_total", "Events failed on ingest (validation)", |s| {
                s.events_failed.get()
            }),
            ("switchyard_source_events_deduplicated_total", "Repeated messageIds dropped on ingest", |s| {
                s.events_deduplicated.get()
            }),
            ("switchyard_source_requests_rate_limited_total", "Requests over the source's rate limit (429)", |s| {
                s.rate_limited.get()
            }),
            ("switchyard_source_events_blocked_total", "Events the tracking plan blocked", |s| s.events_blocked.get()),
            (
                "switchyard_source_events_forwarded_total",
                "Blocked events forwarded to the source's forwarding_blocked_events_to",
                |s| s.events_forwarded.get(),
            ),
        ];
        for (name, help, get) in src {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in &sources {
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {}", s.name, get(s));
            }
        }
        let name = "switchyard_source_violations_total";
        let _ =
            writeln!(out, "# HELP {name} Tracking plan violations, by event, field and kind\n# TYPE {name} counter");
        for s in &sources {
            for (event, field, kind, n) in s.violations.counts() {
                let (source, event, field) = (label(&s.name), label(&event), label(&field));
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{source}\",event=\"{event}\",field=\"{field}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        let name = "switchyard_rejected_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused before reaching a source\n# TYPE {name} counter\n{name} {}",
            self.rejected_requests.get()
        );
        let name = "switchyard_sdk_metrics_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} The browser SDK's own metrics posts (/v1/m), accepted and dropped\n# TYPE {name} counter\n{name} {}",
            self.sdk_metrics.get()
        );
        let name = "switchyard_ingest_refused_total";
        let _ =
            writeln!(out, "# HELP {name} Requests answered 503: the events could not be stored\n# TYPE {name} counter");
        for reason in Refusals::REASONS {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", self.ingest_refused.get(reason).get());
        }
        let name = "switchyard_log_accepting";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while the log accepts appends (0: disk below its floor, or unusable)\n# TYPE {name} gauge\n{name} {}",
            u8::from(log.accepting())
        );
        if let Some(free) = log.free_bytes() {
            let name = "switchyard_log_disk_free_bytes";
            let _ =
                writeln!(out, "# HELP {name} Free bytes on the log's filesystem\n# TYPE {name} gauge\n{name} {free}");
        }
        let name = "switchyard_reloads_total";
        let _ = writeln!(
            out,
            "# HELP {name} Config and plugin reloads\n# TYPE {name} counter\n{name}{{result=\"applied\"}} {}\n{name}{{result=\"refused\"}} {}",
            self.reloads_applied.get(),
            self.reloads_refused.get()
        );
        out
    }
}

/// `value` as a Prometheus label value: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
