//! Segment event → Statsig `log_event` event: the field mapping.
//!
//! [`map_event`] turns one Segment event into one Statsig event, updating
//! the identify cache on the way. An event that cannot be sent is rejected
//! here with a reason, before any request. The README has the whole table.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use switchyard_plugin_sdk::Event;
use switchyard_plugin_sdk::spec::{self, Message, Properties};

use crate::cache::{IdentifyCache, Key};
use crate::settings::Config;
use crate::user::{User, UserSource, id_string, metadata_value, non_empty};

/// `eventName` of a Segment `page`.
pub const PAGE_VIEW: &str = "page_view";
/// `eventName` of a Segment `screen`.
pub const SCREEN_VIEW: &str = "screen_view";
/// `eventName` of a Segment `identify`. Not `statsig::identify`: Statsig
/// reserves the `statsig::` prefix for its SDKs' own events.
pub const IDENTIFY: &str = "segment_identify";
/// `eventName` of a Segment `group`.
pub const GROUP: &str = "group";
/// `eventName` of a Segment `alias`.
pub const ALIAS: &str = "alias";
/// The Segment spec's A/B testing event.
pub const EXPERIMENT_VIEWED: &str = "Experiment Viewed";
/// The exposure event Statsig's SDKs log for experiments and dynamic configs.
pub const CONFIG_EXPOSURE: &str = "statsig::config_exposure";
/// The custom ID a `group` call sets from its `groupId`.
pub const GROUP_ID: &str = "groupID";

/// One event of a `log_event` request body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsigEvent {
    #[serde(rename = "eventName")]
    pub event_name: String,
    pub user: User,
    /// A string or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Set (empty) on exposures, as Statsig's SDKs send them.
    #[serde(rename = "secondaryExposures", skip_serializing_if = "Option::is_none")]
    pub secondary_exposures: Option<Vec<Value>>,
}

/// Maps `event` to its Statsig event. An identify (or an alias) updates
/// `cache` first, so the events after it in log order carry its traits.
///
/// # Errors
///
/// The rejection reason: the event is not valid JSON, names no user, or is
/// a track without a name.
pub fn map_event(event: &Event, config: &Config, cache: &mut IdentifyCache) -> Result<StatsigEvent, String> {
    let (message, raw) = event.message_lenient()?;
    let time = (event.timestamp_ms > 0).then_some(event.timestamp_ms);
    match message {
        Message::Track(t) => {
            if t.event.trim().is_empty() {
                return Err("track has no `event` name: Statsig requires an eventName".into());
            }
            let source = base(&raw, &t.user_id, &t.anonymous_id, &t.context, cache);
            let exposure = config.experiment_exposures && t.event.trim().eq_ignore_ascii_case(EXPERIMENT_VIEWED);
            let mapped = match exposure.then(|| experiment_exposure(&t.properties)).flatten() {
                Some((event_name, metadata)) => {
                    Mapped { source, event_name, value: None, metadata, secondary_exposures: Some(Vec::new()) }
                }
                None => Mapped {
                    source,
                    event_name: t.event.clone(),
                    value: track_value(&t.properties),
                    metadata: metadata_of(&t.properties),
                    secondary_exposures: None,
                },
            };
            finish(mapped, config, time)
        }
        Message::Page(p) => {
            let page = &p.context.page;
            let mut metadata = BTreeMap::new();
            for (key, value) in [
                ("url", &page.url),
                ("path", &page.path),
                ("referrer", &page.referrer),
                ("title", &page.title),
                ("search", &page.search),
            ] {
                if let Some(v) = non_empty(value.as_deref()) {
                    metadata.insert(key.to_owned(), v);
                }
            }
            metadata.extend(metadata_of(&p.properties));
            named(&mut metadata, &p.name, &p.category);
            let source = base(&raw, &p.user_id, &p.anonymous_id, &p.context, cache);
            let value = non_empty(p.name.as_deref()).map(Value::String);
            finish(
                Mapped { source, event_name: PAGE_VIEW.into(), value, metadata, secondary_exposures: None },
                config,
                time,
            )
        }
        Message::Screen(s) => {
            let mut metadata = metadata_of(&s.properties);
            named(&mut metadata, &s.name, &s.category);
            let source = base(&raw, &s.user_id, &s.anonymous_id, &s.context, cache);
            let value = non_empty(s.name.as_deref()).map(Value::String);
            finish(
                Mapped { source, event_name: SCREEN_VIEW.into(), value, metadata, secondary_exposures: None },
                config,
                time,
            )
        }
        Message::Identify(i) => {
            if let Some(user_id) = non_empty(i.user_id.as_deref()) {
                cache.merge(Key::User(user_id), &i.traits);
            }
            if let Some(anonymous_id) = non_empty(i.anonymous_id.as_deref()) {
                cache.merge(Key::Anonymous(anonymous_id), &i.traits);
            }
            let mut source = base(&raw, &i.user_id, &i.anonymous_id, &i.context, cache);
            source.traits = Some(&i.traits);
            finish(
                Mapped {
                    source,
                    event_name: IDENTIFY.into(),
                    value: None,
                    metadata: metadata_of(&i.traits),
                    secondary_exposures: None,
                },
                config,
                time,
            )
        }
        Message::Group(g) => {
            let mut source = base(&raw, &g.user_id, &g.anonymous_id, &g.context, cache);
            let mut metadata = metadata_of(&g.traits);
            if let Some(group_id) = non_empty(g.group_id.as_deref()) {
                source.extra_ids.push((GROUP_ID, group_id.clone()));
                metadata.insert("groupId".into(), group_id);
            }
            finish(
                Mapped { source, event_name: GROUP.into(), value: None, metadata, secondary_exposures: None },
                config,
                time,
            )
        }
        Message::Alias(a) => {
            let mut metadata = BTreeMap::new();
            if let Some(previous_id) = non_empty(a.previous_id.as_deref()) {
                if let Some(user_id) = non_empty(a.user_id.as_deref()) {
                    // The new id inherits what was known about the old one.
                    let known = cache.lookup(Some(&previous_id), Some(&previous_id));
                    cache.merge(Key::User(user_id), &known);
                }
                metadata.insert("previousId".into(), previous_id);
            }
            if let Some(user_id) = non_empty(a.user_id.as_deref()) {
                metadata.insert("userId".into(), user_id);
            }
            let source = base(&raw, &a.user_id, &a.anonymous_id, &a.context, cache);
            finish(
                Mapped { source, event_name: ALIAS.into(), value: None, metadata, secondary_exposures: None },
                config,
                time,
            )
        }
    }
}

/// A mapped event before its user is built.
struct Mapped<'a> {
    source: UserSource<'a>,
    event_name: String,
    value: Option<Value>,
    metadata: BTreeMap<String, String>,
    secondary_exposures: Option<Vec<Value>>,
}

fn finish(m: Mapped<'_>, config: &Config, time: Option<i64>) -> Result<StatsigEvent, String> {
    Ok(StatsigEvent {
        event_name: m.event_name,
        user: m.source.build(config)?,
        value: m.value,
        time,
        metadata: m.metadata,
        secondary_exposures: m.secondary_exposures,
    })
}

/// The user source common to every event type.
fn base<'a>(
    raw: &'a Value,
    user_id: &'a Option<String>,
    anonymous_id: &'a Option<String>,
    context: &'a spec::Context,
    cache: &IdentifyCache,
) -> UserSource<'a> {
    UserSource {
        user_id: user_id.as_deref(),
        anonymous_id: anonymous_id.as_deref(),
        context,
        traits: None,
        cached: cache.lookup(user_id.as_deref(), anonymous_id.as_deref()),
        extra_ids: Vec::new(),
        raw,
    }
}

/// Properties as Statsig metadata (see [`metadata_value`]).
fn metadata_of(props: &Properties) -> BTreeMap<String, String> {
    props.iter().filter_map(|(k, v)| metadata_value(v).map(|v| (k.clone(), v))).collect()
}

/// Sets `name` and `category` of a page or screen over any same-named
/// properties: the call's own fields are authoritative.
fn named(metadata: &mut BTreeMap<String, String>, name: &Option<String>, category: &Option<String>) {
    if let Some(name) = non_empty(name.as_deref()) {
        metadata.insert("name".into(), name);
    }
    if let Some(category) = non_empty(category.as_deref()) {
        metadata.insert("category".into(), category);
    }
}

/// A track's `value`: the first of `properties.value`, `revenue`, `total`
/// that is a number or a non-blank string.
fn track_value(props: &Properties) -> Option<Value> {
    ["value", "revenue", "total"].iter().find_map(|key| match props.get(*key) {
        Some(v @ Value::Number(_)) => Some(v.clone()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(Value::String(s.clone())),
        _ => None,
    })
}

/// `Experiment Viewed` as a config exposure: `config` ← `experiment_id`,
/// else `experiment_name`; `ruleID` ← `variation_id`, else
/// `variation_name`; the other properties stay as metadata. `None` (a plain
/// event) when the experiment is not named at all.
fn experiment_exposure(props: &Properties) -> Option<(String, BTreeMap<String, String>)> {
    let first = |keys: [&str; 2]| keys.iter().find_map(|k| props.get(*k).and_then(id_string));
    let config = first(["experiment_id", "experiment_name"])?;
    let mut metadata = metadata_of(props);
    metadata.insert("config".into(), config);
    if let Some(rule) = first(["variation_id", "variation_name"]) {
        metadata.insert("ruleID".into(), rule);
    }
    Some((CONFIG_EXPOSURE.into(), metadata))
}
