//! Which events a destination receives, and in what shape, in this order:
//! its sources, its subscribed event types and what each event's
//! `integrations` object says about it; its FQL subscription condition;
//! its destination filters; its exposure rule; then its transformations
//! (Segment runs a destination's filters before its transformations).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use switchyard_governance::{ExposureDecision, ExposureGate, ExposureRegistry, Filters, Query, Transforms, Verdict};

use crate::normalize::{Envelope, EventType};

/// Which events a destination receives.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The destination's name, matched case-insensitively against the keys
    /// of an event's `integrations` object.
    pub name: String,
    pub types: BTreeSet<EventType>,
    /// `subscribe`'s FQL condition.
    pub condition: Option<Query>,
    pub filters: Filters,
    /// The sources it takes events from; `None`: all.
    pub sources: Option<BTreeSet<String>>,
    /// Its exposure rule, and what an exposure is; `None`: every
    /// exposure is delivered.
    pub exposures: Option<(Arc<ExposureGate>, Arc<ExposureRegistry>)>,
    pub transforms: Transforms,
}

/// What [`Subscription::select`] decided.
#[derive(Debug)]
pub enum Selection {
    /// Not for this destination (not subscribed, or filtered out).
    Skip,
    /// An exposure kept from it: its vendor's SDK owns them, or it is a
    /// repeat within the dedupe window.
    SkipExposure(ExposureDecision),
    /// Deliver this: the event, or its filtered rewrite.
    Deliver(Envelope),
}

impl Subscription {
    /// A subscription with no condition and no filters.
    pub fn of_types(name: &str, types: BTreeSet<EventType>) -> Subscription {
        Subscription {
            name: name.to_owned(),
            types,
            condition: None,
            filters: Filters::default(),
            sources: None,
            exposures: None,
            transforms: Transforms::default(),
        }
    }

    /// Whether `event` goes to this destination ([`Subscription::wants`],
    /// then the FQL condition), and in what shape (the filters). The
    /// condition and filters apply to replayed dead letters too, so a
    /// filter that keeps a field from a destination keeps it from replays.
    /// A condition that fails to evaluate skips the event (fail closed).
    pub fn select(&self, mut event: Envelope) -> Selection {
        if !self.wants(&event) {
            return Selection::Skip;
        }
        if self.condition.is_none() && self.filters.is_empty() && self.exposures.is_none() && self.transforms.is_empty()
        {
            return Selection::Deliver(event);
        }
        let Ok(parsed) = serde_json::from_str::<Value>(&event.json) else { return Selection::Skip };
        if let Some(c) = &self.condition
            && !c.matches(&parsed)
        {
            return Selection::Skip;
        }
        // Filters never remove the fields the envelope mirrors (ids, type,
        // name): only the JSON changes.
        let mut parsed = match self.filters.apply_parsed(parsed) {
            Verdict::Keep => None,
            Verdict::Rewrite(json) => {
                event.json = json;
                if self.exposures.is_none() && self.transforms.is_empty() {
                    return Selection::Deliver(event);
                }
                match serde_json::from_str::<Value>(&event.json) {
                    Ok(v) => Some(v),
                    Err(_) => return Selection::Skip,
                }
            }
            Verdict::Drop(_) => return Selection::Skip,
        };
        if let Some((gate, registry)) = &self.exposures {
            let value = match &parsed {
                Some(v) => v,
                None => parsed.insert(serde_json::from_str(&event.json).unwrap_or(Value::Null)),
            };
            match gate.decide(registry, value, &event.message_id) {
                ExposureDecision::NotExposure | ExposureDecision::Deliver => {}
                d @ (ExposureDecision::DropOwnedBySdk | ExposureDecision::DropDuplicate) => {
                    return Selection::SkipExposure(d);
                }
            }
        }
        if !self.transforms.is_empty() {
            let mut value = match parsed.take() {
                Some(v) => v,
                None => serde_json::from_str(&event.json).unwrap_or(Value::Null),
            };
            let applied = self.transforms.apply(&mut value);
            if applied.changed {
                if let Some(name) = applied.renamed {
                    event.name = Some(name);
                }
                event.json = value.to_string();
            }
        }
        Selection::Deliver(event)
    }

    /// Whether `event` goes to this destination: its type is subscribed, and
    /// its `integrations` object enables it (its own key if present, else
    /// `All`, else yes). A per-destination value that is an object means
    /// enabled, with options.
    pub fn wants(&self, event: &Envelope) -> bool {
        if let Some(only) = &event.only_for {
            return **only == *self.name;
        }
        if self.sources.as_ref().is_some_and(|s| !s.contains(&*event.source)) {
            return false;
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
        let s = Subscription::of_types("Amplitude", [EventType::Track].into_iter().collect());
        assert!(s.wants(&event(EventType::Track, None)));
        assert!(!s.wants(&event(EventType::Identify, None)));
        assert!(!s.wants(&event(EventType::Track, Some(json!({"All": false})))));
        assert!(s.wants(&event(EventType::Track, Some(json!({"All": false, "amplitude": true})))));
        assert!(s.wants(&event(EventType::Track, Some(json!({"All": false, "Amplitude": {"session_id": 1}})))));
        assert!(!s.wants(&event(EventType::Track, Some(json!({"Amplitude": false})))));
        assert!(s.wants(&event(EventType::Track, Some(json!({"Statsig": false})))));
    }
}
