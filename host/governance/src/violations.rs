//! The violations a source's events had: counted per event, field and
//! kind, with when they were first and last seen and the latest example
//! payloads, as Segment's violations view shows them.
//!
//! The table is bounded: past [`ViolationLog::new`]'s `max_keys` distinct
//! (event, field, kind), new ones are counted under the event and field
//! `(other)`, so a client sending random event names cannot grow it (or
//! the metrics read from it) without bound.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::plan::{Violation, ViolationKind};

/// Example payloads kept per violation.
pub const SAMPLES: usize = 3;
/// A payload longer than this is not kept as an example.
pub const MAX_SAMPLE_BYTES: usize = 16 * 1024;

const OTHER: &str = "(other)";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    event: String,
    field: String,
    kind: ViolationKind,
}

#[derive(Debug)]
struct Entry {
    count: u64,
    first_seen_ms: i64,
    last_seen_ms: i64,
    description: String,
    samples: VecDeque<String>,
}

/// One source's violations; shared by every request thread.
#[derive(Debug)]
pub struct ViolationLog {
    max_keys: usize,
    entries: Mutex<BTreeMap<Key, Entry>>,
}

/// One row of [`ViolationLog::summary`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViolationSummary {
    /// The track event, page or screen name, or the call type.
    pub event: String,
    pub field: String,
    pub kind: &'static str,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The latest description.
    pub description: String,
    /// The latest payloads, newest first.
    pub samples: Vec<serde_json::Value>,
}

impl Default for ViolationLog {
    /// An empty log of up to 1000 distinct violations.
    fn default() -> Self {
        ViolationLog::new(1000)
    }
}

impl ViolationLog {
    /// An empty log holding at most `max_keys` distinct violations.
    pub fn new(max_keys: usize) -> ViolationLog {
        ViolationLog { max_keys: max_keys.max(1), entries: Mutex::new(BTreeMap::new()) }
    }

    /// Counts `violations` of one event (`payload`, its JSON) named `event`.
    pub fn record(&self, event: &str, violations: &[Violation], payload: &str, now_ms: i64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        for v in violations {
            let mut key = Key { event: event.to_owned(), field: v.field.clone(), kind: v.kind };
            if !entries.contains_key(&key) && entries.len() >= self.max_keys {
                key = Key { event: OTHER.into(), field: OTHER.into(), kind: v.kind };
            }
            let entry = entries.entry(key).or_insert_with(|| Entry {
                count: 0,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                description: String::new(),
                samples: VecDeque::with_capacity(SAMPLES),
            });
            entry.count += 1;
            entry.last_seen_ms = now_ms;
            v.description.clone_into(&mut entry.description);
            if payload.len() <= MAX_SAMPLE_BYTES && entry.samples.front().is_none_or(|s| s != payload) {
                if entry.samples.len() == SAMPLES {
                    entry.samples.pop_back();
                }
                entry.samples.push_front(payload.to_owned());
            }
        }
    }

    /// Every violation counted, most recently seen first.
    pub fn summary(&self) -> Vec<ViolationSummary> {
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        let mut rows: Vec<ViolationSummary> = entries
            .iter()
            .map(|(k, e)| ViolationSummary {
                event: k.event.clone(),
                field: k.field.clone(),
                kind: k.kind.as_str(),
                count: e.count,
                first_seen_ms: e.first_seen_ms,
                last_seen_ms: e.last_seen_ms,
                description: e.description.clone(),
                samples: e.samples.iter().filter_map(|s| serde_json::from_str(s).ok()).collect(),
            })
            .collect();
        rows.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then_with(|| a.event.cmp(&b.event)));
        rows
    }

    /// The counts alone, for metrics: (event, field, kind, count).
    pub fn counts(&self) -> Vec<(String, String, &'static str, u64)> {
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        entries.iter().map(|(k, e)| (k.event.clone(), k.field.clone(), k.kind.as_str(), e.count)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(field: &str, kind: ViolationKind) -> Violation {
        Violation {
            kind,
            field: field.into(),
            path: field.split('.').map(str::to_owned).collect(),
            description: format!("{field} is wrong"),
            common: false,
        }
    }

    #[test]
    fn counts_keep_the_latest_samples_and_stay_bounded() {
        let log = ViolationLog::new(2);
        let wrong = violation("properties.total", ViolationKind::DatatypeMismatch);
        for i in 0..5 {
            log.record("Order Completed", std::slice::from_ref(&wrong), &format!("{{\"n\":{i}}}"), 100 + i);
        }
        log.record("Signed Up", &[violation("event", ViolationKind::UnplannedEvent)], "{}", 200);
        log.record("Random 1", &[violation("event", ViolationKind::UnplannedEvent)], "{}", 300);
        log.record("Random 2", &[violation("event", ViolationKind::UnplannedEvent)], "{}", 400);
        let rows = log.summary();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].event.as_str(), rows[0].count, rows[0].last_seen_ms), ("(other)", 2, 400));
        let order = rows.iter().find(|r| r.event == "Order Completed").expect("kept");
        assert_eq!((order.count, order.first_seen_ms, order.last_seen_ms), (5, 100, 104));
        assert_eq!(
            order.samples,
            [serde_json::json!({"n": 4}), serde_json::json!({"n": 3}), serde_json::json!({"n": 2})]
        );
        assert_eq!(order.kind, "datatype_mismatch");
        assert_eq!(log.counts().len(), 3);
    }

    #[test]
    fn oversized_payloads_are_counted_but_not_kept() {
        let log = ViolationLog::new(10);
        let big = format!("\"{}\"", "x".repeat(MAX_SAMPLE_BYTES));
        log.record("E", &[violation("(root)", ViolationKind::Unknown)], &big, 1);
        assert_eq!((log.summary()[0].count, log.summary()[0].samples.len()), (1, 0));
    }
}
