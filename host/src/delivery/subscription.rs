//! Which events a destination receives, and in what shape, in this order:
//! its sources, its subscribed event types and what each event's
//! `integrations` object says about it; its FQL subscription condition;
//! its destination filters; its exposure rule; then its transformations
//! (Segment runs a destination's filters before its transformations).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use switchyard_governance::raw::{self, Needs};
use switchyard_governance::{Decision, ExposureDecision, ExposureGate, ExposureRegistry, Filters, Query, Transforms};

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
    /// The sources it takes events from; `None`: all but
    /// `excluded_sources`.
    pub sources: Option<BTreeSet<String>>,
    /// With no `sources`, the ones it does not take events from (those
    /// receiving other sources' blocked events and violations).
    pub excluded_sources: BTreeSet<String>,
    /// Its exposure rule, and what an exposure is; `None`: every
    /// exposure is delivered.
    pub exposures: Option<(Arc<ExposureGate>, Arc<ExposureRegistry>)>,
    pub transforms: Transforms,
    /// What the condition, the filters and the exposure rule read of an
    /// event ([`Subscription::prepare`]).
    needs: Needs,
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
            excluded_sources: BTreeSet::new(),
            exposures: None,
            transforms: Transforms::default(),
            needs: Needs::default(),
        }
    }

    /// Notes what the condition, the filters and the exposure rule read,
    /// so [`Subscription::select`] parses only that; call it once the
    /// subscription's parts are set.
    pub fn prepare(&mut self) {
        let mut needs = Needs::default();
        if let Some(c) = &self.condition {
            needs.merge(&c.needs());
        }
        needs.merge(self.filters.needs());
        if let Some((_, registry)) = &self.exposures {
            needs.merge(&registry.needs());
        }
        self.needs = needs;
    }

    /// Whether `event` goes to this destination ([`Subscription::wants`],
    /// then the FQL condition), and in what shape (the filters, then the
    /// transformations). The condition and filters apply to replayed dead
    /// letters too, so a filter that keeps a field from a destination keeps
    /// it from replays. A condition that fails to evaluate skips the event
    /// (fail closed). Exposures are recognised on the event as it reached
    /// the filters.
    ///
    /// Only what the condition, filters and exposure rule read is parsed
    /// ([`raw::sparse`]), and filters remove keys from the text itself;
    /// transformations parse the event whole.
    pub fn select(&self, mut event: Envelope) -> Selection {
        if !self.wants(&event) {
            return Selection::Skip;
        }
        if self.condition.is_none() && self.filters.is_empty() && self.exposures.is_none() && self.transforms.is_empty()
        {
            return Selection::Deliver(event);
        }
        let Ok(sparse) = raw::sparse(&event.json, &self.needs) else { return Selection::Skip };
        if let Some(c) = &self.condition
            && !c.matches(&sparse)
        {
            return Selection::Skip;
        }
        let edit = match self.filters.decide(&sparse) {
            Decision::Keep(edit) => edit,
            Decision::Drop(_) => return Selection::Skip,
        };
        if let Some((gate, registry)) = &self.exposures {
            match gate.decide(registry, &sparse, &event.message_id) {
                ExposureDecision::NotExposure | ExposureDecision::Deliver => {}
                d @ (ExposureDecision::DropOwnedBySdk | ExposureDecision::DropDuplicate) => {
                    return Selection::SkipExposure(d);
                }
            }
        }
        // Filters never remove the fields the envelope mirrors (ids, type,
        // name): only the JSON changes.
        match edit.apply(&event.json) {
            Ok(Some(text)) => event.json = text,
            Ok(None) => {}
            Err(_) => return Selection::Skip,
        }
        if !self.transforms.is_empty() {
            let Ok(mut value) = serde_json::from_str::<Value>(&event.json) else { return Selection::Skip };
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
        let from = &*event.source;
        let listed = match &self.sources {
            Some(sources) => sources.contains(from),
            None => !self.excluded_sources.contains(from),
        };
        if !listed {
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
