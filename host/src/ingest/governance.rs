//! The governance stage between ingest and the log, per source: its
//! tracking plan, then its transformations.
//!
//! For each accepted event, in this order:
//! 1. The plan checks the event as the client sent it (normalized). Its
//!    violations are counted on the source ([`ViolationsFound`]) and, with
//!    `forwarding_violations_to`, each becomes a `Violation Generated`
//!    track call into that source, with Segment's property names.
//! 2. A blocked event goes to `forwarding_blocked_events_to`, with its
//!    violations in `context.protocols.violations`, or is dropped. Forwarded
//!    events are stored as that source's and are not checked again: a
//!    quarantine source receives what its senders got wrong, as it was.
//! 3. Properties the controls omit are removed and listed in
//!    `context.protocols`.
//! 4. The source's transformations run on what is left.
//!
//! The client's answer does not change: Segment answers 200 for an event
//! a plan blocks, and so do we.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_governance::raw;
use switchyard_governance::{Outcome, SchemaSettings, Transforms, Violation};

use crate::metrics::SourceStats;
use crate::normalize::{self, BatchMeta, Envelope};
use crate::telemetry::{EventBlocked, InternalEvent, ViolationsFound};

/// One source's plan, controls and transformations, compiled.
pub struct SourceGovernance {
    pub plan: Option<(Arc<crate::config::LoadedPlan>, SchemaSettings)>,
    pub transforms: Transforms,
    /// The source blocked events go to, if any.
    pub blocked_to: Option<Arc<str>>,
    /// The source `Violation Generated` events go to, if any.
    pub violations_to: Option<Arc<str>>,
}

/// What the stage made of one event: itself (perhaps changed, perhaps
/// forwarded to another source), or nothing, and the `Violation
/// Generated` events it caused.
pub struct Governed {
    pub event: Option<Envelope>,
    pub generated: Vec<Envelope>,
}

impl SourceGovernance {
    /// Whether the stage would do anything at all.
    pub fn is_empty(&self) -> bool {
        self.plan.is_none() && self.transforms.is_empty()
    }

    /// Runs `event`, of `source`, through the stage.
    ///
    /// An event that passes its plan as it is, the usual case, is only
    /// indexed and validated on its text
    /// ([`TrackingPlan::passes`](switchyard_governance::TrackingPlan::passes)).
    /// Any other is checked on what the plan reads of it ([`raw::sparse`]
    /// of [`TrackingPlan::needs`](switchyard_governance::TrackingPlan::needs)),
    /// for its violations, and is parsed whole only if it must change. One that must change (fields omitted, a blocked event
    /// annotated, transformations) is parsed whole and checked again there.
    pub fn apply(&self, source: &SourceStats, mut event: Envelope) -> Governed {
        let mut generated = Vec::new();
        let mut whole: Option<Value> = None;
        // The usual event passes its plan as it is: its text indexed and
        // validated, nothing parsed.
        let plan = self.plan.as_ref().filter(|(loaded, _)| !loaded.plan.passes(&event.json));
        if let Some((loaded, settings)) = plan {
            let Ok(mut sparse) = raw::sparse(&event.json, loaded.plan.needs()) else {
                return Governed { event: Some(event), generated };
            };
            let checked = loaded.plan.check(settings, &mut sparse);
            if !checked.violations.is_empty() {
                let name = event.name.clone().unwrap_or_else(|| event.kind.as_str().to_owned());
                ViolationsFound { source, event: &name, violations: &checked.violations, payload: &event.json }.emit();
                if let Some(to) = &self.violations_to {
                    generated = violation_events(&event, &name, loaded.plan.name.as_deref(), &checked.violations, to);
                }
            }
            if checked.outcome == Outcome::Block {
                EventBlocked { source, message_id: &event.message_id, to: self.blocked_to.as_deref() }.emit();
                let Some(to) = &self.blocked_to else { return Governed { event: None, generated } };
                if let Ok(mut value) = serde_json::from_str::<Value>(&event.json) {
                    note_blocked(&mut value, &checked.violations);
                    event.json = value.to_string();
                }
                event.source = to.clone();
                return Governed { event: Some(event), generated };
            }
            if checked.changed {
                let Ok(mut value) = serde_json::from_str::<Value>(&event.json) else {
                    return Governed { event: Some(event), generated };
                };
                // The same event, whole: the same decisions, made on it.
                loaded.plan.check(settings, &mut value);
                event.json = value.to_string();
                whole = Some(value);
            }
        }
        if !self.transforms.is_empty() {
            let value = match whole.take() {
                Some(v) => Ok(v),
                None => serde_json::from_str::<Value>(&event.json),
            };
            if let Ok(mut value) = value {
                let applied = self.transforms.apply(&mut value);
                if let Some(name) = applied.renamed {
                    event.name = Some(name);
                }
                if applied.changed {
                    event.json = value.to_string();
                }
            }
        }
        Governed { event: Some(event), generated }
    }
}

/// Writes why an event was blocked into its `context.protocols.violations`.
fn note_blocked(value: &mut Value, violations: &[Violation]) {
    let list: Vec<Value> = violations
        .iter()
        .map(|v| json!({"type": v.kind.as_str(), "field": v.field, "description": v.description}))
        .collect();
    if let Some(root) = value.as_object_mut() {
        let context = root.entry("context").or_insert_with(|| json!({}));
        if let Some(c) = context.as_object_mut() {
            let protocols = c.entry("protocols").or_insert_with(|| json!({}));
            if let Some(p) = protocols.as_object_mut() {
                p.insert("blocked".into(), Value::Bool(true));
                p.insert("violations".into(), Value::Array(list));
            }
        }
    }
}

/// One `Violation Generated` track call per violation, as Segment
/// forwards them: `userId` `schema-violations`, the offending event
/// described in `properties`. Their `messageId`s derive from the
/// offending event's, so a client's retry of a batch does not count its
/// violations twice.
fn violation_events(
    event: &Envelope,
    name: &str,
    plan: Option<&str>,
    violations: &[Violation],
    to: &Arc<str>,
) -> Vec<Envelope> {
    let now = chrono::Utc::now();
    violations
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let digest = Sha256::digest(format!("{}\u{0}{}\u{0}{i}", event.source, event.message_id));
            let id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            let body = json!({
                "type": "track",
                "event": "Violation Generated",
                "userId": "schema-violations",
                "messageId": format!("sch-{id}"),
                "context": {"library": {"name": "switchyard-protocols", "version": env!("CARGO_PKG_VERSION")}},
                "properties": {
                    "eventMessageID": event.message_id,
                    "eventName": name,
                    "eventType": event.kind.as_str(),
                    "eventTimestamp": normalize::fmt_time(
                        chrono::DateTime::from_timestamp_millis(event.timestamp_ms).unwrap_or(now)
                    ),
                    "sourceName": &*event.source,
                    "sourceSlug": &*event.source,
                    "trackingPlanName": plan,
                    "violationDescription": v.description,
                    "violationField": v.field,
                    "violationType": v.kind.label(),
                }
            });
            normalize::normalize(&body.to_string(), None, &BatchMeta::default(), now, to).ok()
        })
        .collect()
}
