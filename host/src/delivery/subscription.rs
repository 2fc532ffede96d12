//! Which events a destination receives: its subscribed event types and
//! what each event's `integrations` object says about it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::normalize::{Envelope, EventType};

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
