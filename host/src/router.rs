//! The seam between ingest and delivery.
//!
//! Ingest hands every accepted batch to an [`EventSink`]; once `submit`
//! returns `Ok`, the events are the sink's responsibility. [`LogSink`] makes
//! them durable in the log; each destination's worker then reads the log
//! and keeps what its [`Subscription`] wants.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::dedupe::{self, Dedupe};
use crate::log::{EventLog, encode_envelope};
use crate::spec::{Envelope, EventType};

/// Why a sink could not take events. Ingest answers 503: never 200.
#[derive(Debug, thiserror::Error)]
#[error("events cannot be accepted: {0}")]
pub struct SinkError(pub String);

/// Where ingest hands accepted events.
pub trait EventSink: Send + Sync + 'static {
    /// Takes responsibility for `events`.
    ///
    /// # Errors
    ///
    /// [`SinkError`] when the events were not taken.
    fn submit(&self, events: Vec<Arc<Envelope>>) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Which events a destination receives.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The destination's name, matched case-insensitively against the keys
    /// of an event's `integrations` object.
    pub name: String,
    pub types: BTreeSet<EventType>,
}

impl Subscription {
    /// Whether `event` goes to this destination: its type is subscribed, and
    /// its `integrations` object enables it (its own key if present, else
    /// `All`, else yes). A per-destination value that is an object means
    /// enabled, with options.
    pub fn wants(&self, event: &Envelope) -> bool {
        if let Some(only) = &event.only_for {
            return **only == *self.name;
        }
        if !self.types.contains(&event.kind) {
            return false;
        }
        let Some(integrations) = &event.integrations else {
            return true;
        };
        let own = integrations.iter().find(|(k, _)| k.eq_ignore_ascii_case(&self.name)).map(|(_, v)| v);
        match own.or_else(|| integrations.get("All")) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Null) | None => true,
            Some(_) => true,
        }
    }
}

/// The durable sink: deduplicates, appends to the log, and answers only once
/// the events are on disk. Delivery workers read the log on their own.
pub struct LogSink<L: EventLog> {
    pub log: Arc<L>,
    pub dedupe: Dedupe,
    pub duplicates: Arc<crate::metrics::Counter>,
}

impl<L: EventLog> EventSink for LogSink<L> {
    async fn submit(&self, events: Vec<Arc<Envelope>>) -> Result<(), SinkError> {
        let all: Vec<u64> = events.iter().map(|e| dedupe::key(&e.source, &e.message_id)).collect();
        let seen = self.dedupe.seen_each(&all);
        let mut keys = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        let mut in_batch = std::collections::HashSet::with_capacity(events.len());
        for ((e, k), seen) in events.iter().zip(all).zip(seen) {
            if seen || !in_batch.insert(k) {
                self.duplicates.inc();
                tracing::debug!(message_id = %e.message_id, source = &*e.source, "duplicate messageId dropped");
                continue;
            }
            keys.push(k);
            records.push(encode_envelope(e));
        }
        if records.is_empty() {
            return Ok(());
        }
        self.log.append(records).await.map_err(|e| SinkError(e.to_string()))?;
        // Only now: a failed append must not make the client's retry look
        // like a duplicate.
        self.dedupe.remember(&keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: EventType, integrations: Option<Value>) -> Envelope {
        Envelope {
            kind,
            message_id: "m".into(),
            name: None,
            user_id: Some("u".into()),
            anonymous_id: None,
            timestamp_ms: 0,
            source: Arc::from("web"),
            integrations: integrations.and_then(|v| v.as_object().cloned()),
            json: "{}".into(),
            only_for: None,
        }
    }

    #[test]
    fn subscriptions_follow_types_and_integrations() {
        let s = Subscription { name: "Amplitude".into(), types: [EventType::Track].into_iter().collect() };
        assert!(s.wants(&event(EventType::Track, None)));
        assert!(!s.wants(&event(EventType::Identify, None)));
        assert!(!s.wants(&event(EventType::Track, Some(json!({"All": false})))));
        assert!(s.wants(&event(EventType::Track, Some(json!({"All": false, "amplitude": true})))));
        assert!(s.wants(&event(EventType::Track, Some(json!({"All": false, "Amplitude": {"session_id": 1}})))));
        assert!(!s.wants(&event(EventType::Track, Some(json!({"Amplitude": false})))));
        assert!(s.wants(&event(EventType::Track, Some(json!({"Statsig": false})))));
    }
}
