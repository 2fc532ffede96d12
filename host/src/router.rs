//! The seam between ingest and delivery.
//!
//! Ingest hands every accepted batch to an [`EventSink`]; once `submit`
//! returns `Ok`, the events are the sink's responsibility. [`MemoryRouter`]
//! routes them straight to each subscribed destination's worker queue; the
//! durable log takes its place behind the same trait.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::metrics::DestinationStats;
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

/// One destination as the router sees it.
pub struct Route {
    pub subscription: Subscription,
    pub queue: mpsc::Sender<Arc<Envelope>>,
    pub stats: Arc<DestinationStats>,
}

/// Routes events in memory to each destination's queue, waiting when a
/// queue is full (back-pressure reaches the client as latency, not loss).
pub struct MemoryRouter {
    routes: Vec<Route>,
}

impl MemoryRouter {
    pub fn new(routes: Vec<Route>) -> Self {
        MemoryRouter { routes }
    }
}

impl EventSink for MemoryRouter {
    async fn submit(&self, events: Vec<Arc<Envelope>>) -> Result<(), SinkError> {
        for route in &self.routes {
            for event in &events {
                if route.subscription.wants(event) {
                    route.stats.received.inc();
                    route
                        .queue
                        .send(event.clone())
                        .await
                        .map_err(|_| SinkError(format!("destination `{}` is shut down", route.subscription.name)))?;
                } else {
                    route.stats.filtered.inc();
                }
            }
        }
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
