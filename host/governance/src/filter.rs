//! Destination filters, as Segment defines them: each has an FQL `if`
//! and actions — `drop`, `sample` a percentage (deterministic by a path),
//! `drop_properties`, `allow_properties` — applied to the events a
//! destination is about to receive.
//!
//! # Order
//!
//! Every filter whose condition holds contributes its actions, which run
//! in Segment's order whatever the order written: **sample, drop, drop
//! properties, allow properties**. A condition that fails to evaluate drops
//! the event (fail closed: filters keep personal data from destinations).
//!
//! # Fields
//!
//! `fields` maps an object's path to keys in it: `{ properties = ["email"],
//! "context.device" = ["id"] }`; the empty path `""` is the event's top
//! level. `allow_properties` keeps only the listed keys of each named
//! object; at the top level the event's identity and shape always stay
//! ([`CORE_FIELDS`]). Neither action may remove a core field.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::fql::{FqlError, Query};
use crate::raw::{Edit, Needs};

/// Top-level members no filter removes: what makes an event an event.
pub const CORE_FIELDS: [&str; 13] = [
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "groupId",
    "previousId",
    "event",
    "name",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "integrations",
];

/// `[[destinations.filters]]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    #[serde(default)]
    pub title: Option<String>,
    /// The FQL condition the actions apply under.
    #[serde(rename = "if")]
    pub condition: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub actions: Vec<ActionConfig>,
}

fn yes() -> bool {
    true
}

/// One action; Segment's upper-case names are accepted too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionConfig {
    #[serde(alias = "DROP")]
    Drop,
    #[serde(alias = "SAMPLE")]
    Sample {
        /// The share kept, 0 to 1.
        percent: f64,
        /// The path whose value decides (default `messageId`): one user is
        /// always in or always out with `path = "userId"`.
        #[serde(default)]
        path: Option<String>,
    },
    #[serde(alias = "DROP_PROPERTIES")]
    DropProperties { fields: BTreeMap<String, Vec<String>> },
    #[serde(alias = "ALLOW_PROPERTIES")]
    AllowProperties { fields: BTreeMap<String, Vec<String>> },
}

/// Why a filter config is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("`if`: {0}")]
    Condition(#[from] FqlError),
    #[error("sample percent must be between 0 and 1, not {0}")]
    Percent(f64),
    #[error("`{0}` is a core field of every event; no filter removes it")]
    CoreField(String),
    #[error("a filter needs at least one action")]
    NoActions,
}

/// Keys of objects in an event: (the object's path, its keys).
type Fields = Vec<(Vec<String>, Vec<String>)>;

#[derive(Debug, Clone)]
enum Action {
    Sample { percent: f64, path: Vec<String> },
    Drop,
    DropProperties(Fields),
    AllowProperties(Fields),
}

impl Action {
    /// Segment's order.
    fn rank(&self) -> u8 {
        match self {
            Action::Sample { .. } => 0,
            Action::Drop => 1,
            Action::DropProperties(_) => 2,
            Action::AllowProperties(_) => 3,
        }
    }
}

#[derive(Debug, Clone)]
struct Filter {
    condition: Query,
    actions: Vec<Action>,
}

/// A destination's filters, compiled.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    filters: Vec<Filter>,
    /// What their conditions and samples read.
    needs: Needs,
}

/// What the filters decided for one event, before its text is edited.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep it, with these keys removed (perhaps none).
    Keep(Edit),
    Drop(DropReason),
}

/// What the filters decided for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Unchanged.
    Keep,
    /// With properties removed: the event's new JSON.
    Rewrite(String),
    Drop(DropReason),
}

/// Why an event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A `drop` action.
    Dropped,
    /// Outside a `sample`.
    Sampled,
    /// A condition failed to evaluate, or the event is not JSON.
    Error,
}

fn path_of(s: &str) -> Vec<String> {
    if s.is_empty() { Vec::new() } else { s.split('.').map(str::to_owned).collect() }
}

fn fields_of(fields: &BTreeMap<String, Vec<String>>) -> Result<Fields, FilterError> {
    for (object, keys) in fields {
        if object.is_empty()
            && let Some(core) = keys.iter().find(|k| CORE_FIELDS.contains(&k.as_str()))
        {
            return Err(FilterError::CoreField(core.clone()));
        }
    }
    Ok(fields.iter().map(|(o, k)| (path_of(o), k.clone())).collect())
}

impl Filters {
    /// Compiles a destination's filters (disabled ones are skipped).
    ///
    /// # Errors
    ///
    /// The index of the first filter that does not compile, and why.
    pub fn compile(configs: &[FilterConfig]) -> Result<Filters, (usize, FilterError)> {
        let mut filters = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let condition = Query::compile(&c.condition).map_err(|e| (i, e.into()))?;
            if c.actions.is_empty() {
                return Err((i, FilterError::NoActions));
            }
            let mut actions = Vec::new();
            for a in &c.actions {
                actions.push(match a {
                    ActionConfig::Drop => Action::Drop,
                    ActionConfig::Sample { percent, path } => {
                        if !(0.0..=1.0).contains(percent) {
                            return Err((i, FilterError::Percent(*percent)));
                        }
                        Action::Sample { percent: *percent, path: path_of(path.as_deref().unwrap_or("messageId")) }
                    }
                    ActionConfig::DropProperties { fields } => {
                        Action::DropProperties(fields_of(fields).map_err(|e| (i, e))?)
                    }
                    ActionConfig::AllowProperties { fields } => {
                        Action::AllowProperties(fields_of(fields).map_err(|e| (i, e))?)
                    }
                });
            }
            if c.enabled {
                filters.push(Filter { condition, actions });
            }
        }
        let mut needs = Needs::default();
        for f in &filters {
            needs.merge(&f.condition.needs());
            for a in &f.actions {
                if let Action::Sample { path, .. } = a {
                    needs.add_path(path);
                }
            }
        }
        Ok(Filters { filters, needs })
    }

    /// What the filters read of an event: [`Filters::decide`] on
    /// [`crate::raw::sparse`] of these decides as on the whole event.
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// Decides on `event` (whole, or sparse with [`Filters::needs`]):
    /// drop it, or keep it with the keys to remove from its text.
    pub fn decide(&self, event: &Value) -> Decision {
        let mut actions: Vec<&Action> = Vec::new();
        for f in &self.filters {
            match f.condition.eval(event) {
                Ok(true) => actions.extend(&f.actions),
                Ok(false) => {}
                Err(_) => return Decision::Drop(DropReason::Error),
            }
        }
        actions.sort_by_key(|a| a.rank());
        let mut edit = Edit::default();
        for a in actions {
            match a {
                Action::Sample { percent, path } => {
                    if !sampled_in(event, path, *percent) {
                        return Decision::Drop(DropReason::Sampled);
                    }
                }
                Action::Drop => return Decision::Drop(DropReason::Dropped),
                Action::DropProperties(fields) => {
                    for (object, keys) in fields {
                        edit.remove(object, keys);
                    }
                }
                Action::AllowProperties(fields) => {
                    for (object, keys) in fields {
                        let always: &'static [&'static str] = if object.is_empty() { &CORE_FIELDS } else { &[] };
                        edit.keep_only(object, keys, always);
                    }
                }
            }
        }
        Decision::Keep(edit)
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Applies the filters to an event's JSON: reads only what they need
    /// ([`Filters::needs`]) and removes keys from the text itself.
    pub fn apply(&self, json: &str) -> Verdict {
        if self.filters.is_empty() {
            return Verdict::Keep;
        }
        let Ok(event) = crate::raw::sparse(json, &self.needs) else { return Verdict::Drop(DropReason::Error) };
        match self.decide(&event) {
            Decision::Drop(reason) => Verdict::Drop(reason),
            Decision::Keep(edit) => match edit.apply(json) {
                Ok(Some(text)) => Verdict::Rewrite(text),
                Ok(None) => Verdict::Keep,
                Err(_) => Verdict::Drop(DropReason::Error),
            },
        }
    }
}

/// Whether the event is in a `percent` sample, decided by the value at
/// `path` alone (FNV-1a of its JSON text): the same value is always in or
/// always out, on every node and after every restart.
pub fn sampled_in(event: &Value, path: &[String], percent: f64) -> bool {
    let mut at = event;
    for p in path {
        match at.get(p.as_str()) {
            Some(v) => at = v,
            None => {
                at = &Value::Null;
                break;
            }
        }
    }
    let text = match at {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the high bits down: FNV's low bits are weak on short keys.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash as f64 / u64::MAX as f64) < percent
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filters(toml_text: &str) -> Filters {
        #[derive(Deserialize)]
        struct F {
            filters: Vec<FilterConfig>,
        }
        let f: F = toml::from_str(toml_text).expect("toml");
        Filters::compile(&f.filters).expect("compiles")
    }

    fn ev(kind: &str, user: &str) -> String {
        json!({"type": kind, "event": "Order Completed", "userId": user, "messageId": format!("m-{user}"),
            "properties": {"email": "a@b.c", "plan": "pro", "price": 5},
            "context": {"ip": "203.0.113.9", "device": {"id": "d1", "model": "x"}}})
        .to_string()
    }

    fn rewritten(v: Verdict) -> Value {
        match v {
            Verdict::Rewrite(s) => serde_json::from_str(&s).expect("json"),
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn drop_applies_under_its_condition_only() {
        let f = filters("[[filters]]\nif = \"type = 'identify'\"\nactions = [{ type = \"drop\" }]");
        assert_eq!(f.apply(&ev("identify", "u1")), Verdict::Drop(DropReason::Dropped));
        assert_eq!(f.apply(&ev("track", "u1")), Verdict::Keep);
    }

    #[test]
    fn properties_are_dropped_or_allowed_by_object() {
        let f = filters(
            "[[filters]]\nif = \"true\"\nactions = [{ type = \"DROP_PROPERTIES\", fields = { properties = [\"email\"], \
             context = [\"ip\"], \"context.device\" = [\"id\"] } }]",
        );
        let e = rewritten(f.apply(&ev("track", "u1")));
        assert_eq!(e["properties"], json!({"plan": "pro", "price": 5}));
        assert_eq!(e["context"], json!({"device": {"model": "x"}}));
        let f = filters(
            "[[filters]]\nif = \"true\"\nactions = [{ type = \"allow_properties\", fields = { properties = [\"plan\"], \
             \"\" = [\"properties\"] } }]",
        );
        let e = rewritten(f.apply(&ev("track", "u1")));
        assert_eq!(e["properties"], json!({"plan": "pro"}));
        assert!(e.get("context").is_none(), "only listed top-level members, and the core ones, stay");
        assert_eq!((e["type"].as_str(), e["userId"].as_str()), (Some("track"), Some("u1")));
    }

    #[test]
    fn actions_run_in_segments_order_whatever_the_order_written() {
        // Allow first, drop second as written: drop wins, as it runs first.
        let f = filters(
            "[[filters]]\nif = \"true\"\nactions = [{ type = \"allow_properties\", fields = { properties = [\"plan\"] } }]\n\
             [[filters]]\nif = \"event = 'Order Completed'\"\nactions = [{ type = \"drop\" }]",
        );
        assert_eq!(f.apply(&ev("track", "u1")), Verdict::Drop(DropReason::Dropped));
    }

    #[test]
    fn sampling_is_deterministic_by_path_and_near_its_rate() {
        let f =
            filters("[[filters]]\nif = \"true\"\nactions = [{ type = \"sample\", percent = 0.3, path = \"userId\" }]");
        let kept = (0..10_000).filter(|i| f.apply(&ev("track", &format!("user-{i}"))) == Verdict::Keep).count();
        assert!((2_800..=3_200).contains(&kept), "{kept} of 10000 at 30%");
        for i in 0..100 {
            let e = ev("track", &format!("user-{i}"));
            assert_eq!(f.apply(&e), f.apply(&e), "the same user always decides the same way");
        }
    }

    #[test]
    fn a_condition_that_fails_drops_the_event() {
        let f = filters(
            "[[filters]]\nif = \"event and true\"\nactions = [{ type = \"drop_properties\", fields = { properties = [\"email\"] } }]",
        );
        assert_eq!(f.apply(&ev("track", "u1")), Verdict::Drop(DropReason::Error));
        assert_eq!(f.apply("not json"), Verdict::Drop(DropReason::Error));
    }

    #[test]
    fn bad_filters_are_refused() {
        let refuse = |t: &str| {
            #[derive(Deserialize)]
            struct F {
                filters: Vec<FilterConfig>,
            }
            let f: F = toml::from_str(t).expect("toml");
            Filters::compile(&f.filters).expect_err(t)
        };
        assert!(matches!(
            refuse("[[filters]]\nif = \"type = \"\nactions = [{ type = \"drop\" }]"),
            (0, FilterError::Condition(_))
        ));
        assert_eq!(refuse("[[filters]]\nif = \"true\"\nactions = []").1, FilterError::NoActions);
        assert_eq!(
            refuse("[[filters]]\nif = \"true\"\nactions = [{ type = \"sample\", percent = 5 }]").1,
            FilterError::Percent(5.0)
        );
        assert_eq!(
            refuse("[[filters]]\nif = \"true\"\nactions = [{ type = \"drop_properties\", fields = { \"\" = [\"userId\"] } }]").1,
            FilterError::CoreField("userId".into())
        );
    }
}
