//! Segment event → Statsig `log_event` event: the field mapping.
//!
//! [`map_event`] turns one Segment event into one Statsig event, updating
//! the identify cache on the way. An event that cannot be sent is rejected
//! here with a reason, before any request. The README has the whole table.
//!
//! The event is read once through the SDK's borrowed [`EventView`] and the
//! Statsig event is written straight into its JSON text
//! ([`StatsigEvent::json`]): no `serde_json::Value` tree is built for it and
//! strings are copied from the event as sent. `metadata`, `user.custom` and
//! `user.customIDs` are written sorted by key, a key set twice keeping its
//! last value, as the typed mapping's `BTreeMap`s had them.

use std::borrow::Cow;

use switchyard_plugin_sdk::json::{Json, Object, ObjectWriter};
use switchyard_plugin_sdk::{Event, EventType, EventView};

use crate::cache::{IdentifyCache, Key};
use crate::settings::Config;
use crate::user::{
    UserSource, id_value, is_blank, lenient_text, sort_last_wins, text_value, write_metadata, write_text,
};

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

/// One event of a `log_event` request body, as its JSON text: an object
/// with `eventName`, `user`, then when set `value` (a string or a number),
/// `time` (epoch milliseconds), `metadata` (string values) and, on
/// exposures, `secondaryExposures` (empty), in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsigEvent {
    json: String,
}

impl StatsigEvent {
    /// The event's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// Maps `event` to its Statsig event. An identify (or an alias) updates
/// `cache` first, so the events after it in log order carry its traits.
///
/// # Errors
///
/// The rejection reason: the event is not valid JSON, names no user, or is
/// a track without a name.
pub fn map_event(event: &Event, config: &Config, cache: &mut IdentifyCache) -> Result<StatsigEvent, String> {
    let view = event.view()?;
    let mapped = match view.kind() {
        EventType::Track => {
            let Some(name) = view.get("event").and_then(text_value) else {
                return Err("track has no `event` name: Statsig requires an eventName".into());
            };
            let props = view.properties();
            let exposure = config.experiment_exposures
                && lenient_text(name).is_some_and(|name| name.trim().eq_ignore_ascii_case(EXPERIMENT_VIEWED));
            match exposure.then(|| experiment_exposure(props)).flatten() {
                Some(metadata) => {
                    Mapped { metadata, exposure: true, ..Mapped::new(&view, EventName::Fixed(CONFIG_EXPOSURE)) }
                }
                None => {
                    let mut mapped = Mapped::new(&view, EventName::Sent(name));
                    mapped.value = track_value(props);
                    mapped.metadata.properties(props);
                    mapped
                }
            }
        }
        EventType::Page => {
            let mut mapped = Mapped::new(&view, EventName::Fixed(PAGE_VIEW));
            let page = view.context().object("page");
            for key in ["url", "path", "referrer", "title", "search"] {
                if let Some(value) = page.get(key).and_then(text_value) {
                    mapped.metadata.set(key, value);
                }
            }
            mapped.metadata.properties(view.properties());
            mapped.named();
            mapped
        }
        EventType::Screen => {
            let mut mapped = Mapped::new(&view, EventName::Fixed(SCREEN_VIEW));
            mapped.metadata.properties(view.properties());
            mapped.named();
            mapped
        }
        EventType::Identify => {
            let mut mapped = Mapped::new(&view, EventName::Fixed(IDENTIFY));
            let traits = view.traits();
            let to_cache = traits.to_map();
            let [user_id, anonymous_id] = mapped.user.ids();
            if let Some(user_id) = user_id.filter(|id| !is_blank(id)) {
                cache.merge(Key::User(user_id.into_owned()), &to_cache);
            }
            if let Some(anonymous_id) = anonymous_id.filter(|id| !is_blank(id)) {
                cache.merge(Key::Anonymous(anonymous_id.into_owned()), &to_cache);
            }
            mapped.metadata.properties(traits);
            mapped.user.traits = Some(traits);
            mapped
        }
        EventType::Group => {
            let mut mapped = Mapped::new(&view, EventName::Fixed(GROUP));
            mapped.metadata.properties(view.traits());
            if let Some(group_id) = view.get("groupId").and_then(text_value) {
                mapped.user.group_id = Some(group_id);
                mapped.metadata.set("groupId", group_id);
            }
            mapped
        }
        EventType::Alias => {
            let mut mapped = Mapped::new(&view, EventName::Fixed(ALIAS));
            let new_id = mapped.user.user_id.and_then(text_value);
            if let Some(previous_id) = view.get("previousId").and_then(text_value) {
                if let (Some(new_id), Some(previous_id)) = (new_id.and_then(lenient_text), lenient_text(previous_id)) {
                    // The new id inherits what was known about the old one.
                    let known = cache.lookup(Some(&previous_id), Some(&previous_id));
                    cache.merge(Key::User(new_id.into_owned()), &known);
                }
                mapped.metadata.set("previousId", previous_id);
            }
            if let Some(new_id) = new_id {
                mapped.metadata.set("userId", new_id);
            }
            mapped
        }
    };
    mapped.write(config, cache)
}

/// A Statsig event before it is written: what the event type decided, and
/// what its user is built from (the cached traits are looked up when it is
/// written, after the event's own cache updates).
struct Mapped<'k> {
    event_name: EventName<'k>,
    value: Option<EventValue<'k>>,
    metadata: Metadata<'k>,
    /// A config exposure: `secondaryExposures` is set (empty).
    exposure: bool,
    user: UserSource<'k>,
}

/// `eventName`.
enum EventName<'k> {
    /// One of the mapping's own.
    Fixed(&'static str),
    /// A track's `event`, written as text ([`write_text`]).
    Sent(Json<'k>),
}

/// `value`: a string or a number.
enum EventValue<'k> {
    /// A number or a string, copied as sent.
    AsSent(Json<'k>),
    /// A page's or screen's name, written as text ([`write_text`]).
    Text(Json<'k>),
}

impl<'k> Mapped<'k> {
    /// An event of `view` named `event_name`, with no value and no
    /// metadata yet, whose user has the event's ids and `context`.
    fn new(view: &'k EventView<'k>, event_name: EventName<'k>) -> Self {
        Mapped { event_name, value: None, metadata: Metadata::default(), exposure: false, user: UserSource::new(view) }
    }

    /// A page or screen: `value` ← the call's `name`, and `name` and
    /// `category` set in `metadata` over any same-named properties (the
    /// call's own fields are authoritative).
    fn named(&mut self) {
        let view = self.user.view;
        let name = view.get("name").and_then(text_value);
        if let Some(name) = name {
            self.metadata.set("name", name);
        }
        if let Some(category) = view.get("category").and_then(text_value) {
            self.metadata.set("category", category);
        }
        self.value = name.map(EventValue::Text);
    }

    /// Writes the event, its user with the traits `cache` holds for it.
    ///
    /// # Errors
    ///
    /// [`crate::user::MISSING_IDS`] when the event names no user.
    fn write(self, config: &Config, cache: &IdentifyCache) -> Result<StatsigEvent, String> {
        let view = self.user.view;
        let mut out = Vec::with_capacity(view.event().json().len());
        {
            let mut event = ObjectWriter::new(&mut out);
            match self.event_name {
                EventName::Fixed(name) => {
                    event.str("eventName", name);
                }
                EventName::Sent(name) => write_text(&mut event, "eventName", name),
            }
            self.user.write(config, cache, &mut event)?;
            match self.value {
                Some(EventValue::AsSent(value)) => {
                    event.json("value", value);
                }
                Some(EventValue::Text(value)) => write_text(&mut event, "value", value),
                None => {}
            }
            if view.timestamp_ms() > 0 {
                event.i64("time", view.timestamp_ms());
            }
            self.metadata.write(&mut event);
            if self.exposure {
                event.array("secondaryExposures").end();
            }
        }
        // Only UTF-8 went in: text copied from the event, and escaped strings.
        let json = String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(StatsigEvent { json })
    }
}

/// `metadata`, member by member in the order the mapping sets them, each
/// a sent value converted when written ([`write_metadata`]); written
/// sorted by key, a key set twice keeping its last value.
#[derive(Default)]
struct Metadata<'k> {
    members: Vec<(Cow<'k, str>, Json<'k>)>,
}

impl<'k> Metadata<'k> {
    /// Sets `key` to `value`, which is not `null`.
    fn set(&mut self, key: &'static str, value: Json<'k>) {
        self.members.push((Cow::Borrowed(key), value));
    }

    /// Sets every property but the `null` ones (which set nothing).
    fn properties(&mut self, props: Object<'k>) {
        // Room for a typical event's properties at once: their count is
        // not known without walking them, and growing one by one costs.
        self.members.reserve(16);
        self.members.extend(props.iter().filter(|(_, value)| !value.is_null()));
    }

    /// Writes `metadata` into `event`, unless it is empty.
    fn write(mut self, event: &mut ObjectWriter<'_>) {
        if self.members.is_empty() {
            return;
        }
        sort_last_wins(&mut self.members);
        let mut metadata = event.object("metadata");
        for (key, value) in &self.members {
            write_metadata(&mut metadata, key, *value);
        }
    }
}

/// A track's `value`: the first of `properties.value`, `revenue`, `total`
/// that is a number or a string not blank ([`id_value`]), copied as sent.
fn track_value(props: Object<'_>) -> Option<EventValue<'_>> {
    ["value", "revenue", "total"].iter().find_map(|key| props.get(key).and_then(id_value)).map(EventValue::AsSent)
}

/// `Experiment Viewed` as a config exposure's metadata: `config` ←
/// `experiment_id`, else `experiment_name`; `ruleID` ← `variation_id`,
/// else `variation_name` (each a string not blank or a number); the
/// properties stay as metadata beside them. `None` (a plain event) when
/// the experiment is not named at all.
fn experiment_exposure(props: Object<'_>) -> Option<Metadata<'_>> {
    let first = |keys: [&str; 2]| keys.iter().find_map(|key| props.get(key).and_then(id_value));
    let config = first(["experiment_id", "experiment_name"])?;
    let mut metadata = Metadata::default();
    metadata.properties(props);
    metadata.set("config", config);
    if let Some(rule) = first(["variation_id", "variation_name"]) {
        metadata.set("ruleID", rule);
    }
    Some(metadata)
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::Event;

    use super::*;
    use crate::settings::Settings;

    fn config(settings: serde_json::Value) -> Config {
        let settings: Settings = serde_json::from_value(settings).unwrap();
        Config::try_from(settings).unwrap()
    }

    fn map(text: &str, config: &Config) -> String {
        let event = Event::from_segment_json(text).unwrap();
        map_event(&event, config, &mut IdentifyCache::new(10)).unwrap().json().to_owned()
    }

    /// The members in their order, `metadata` and the user's maps sorted,
    /// sent strings and numbers copied as sent.
    #[test]
    fn the_event_text_is_ordered_and_copies_what_it_can() {
        let config = config(serde_json::json!({"server_secret": "secret-x1", "environment": "prod",
            "custom_ids": {"aID": "properties.org", "stableID": "context.device.id"}}));
        let text = r#"{"type":"track","messageId":"m","event":"Caf\u00e9","userId":42,"anonymousId":"a",
            "timestamp":"2024-05-01T12:00:00.000Z",
            "properties":{"z":1.50,"revenue":9.990,"a":"x\/y","org":7,"nested":{"b":1,"a":[2.0]}},
            "context":{"ip":"1.2.3.4","device":{"id":"dev"},"traits":{"email":"e@x.io","plan":"pro","n":null}}}"#;
        assert_eq!(
            map(text, &config),
            concat!(
                r#"{"eventName":"Caf\u00e9","user":{"userID":"42","email":"e@x.io","ip":"1.2.3.4","#,
                r#""custom":{"plan":"pro"},"customIDs":{"aID":"7","stableID":"dev"},"#,
                r#""statsigEnvironment":{"tier":"prod"}},"value":9.990,"time":1714564800000,"#,
                r#""metadata":{"a":"x\/y","nested":"{\"a\":[2.0],\"b\":1}","org":"7","revenue":"9.99","z":"1.5"}}"#
            )
        );
    }

    #[test]
    fn an_exposure_ends_with_empty_secondary_exposures() {
        let config = config(serde_json::json!({"server_secret": "secret-x1"}));
        let text = r#"{"type":"track","messageId":"m","event":"Experiment Viewed","userId":"u",
            "properties":{"experiment_id":5,"variation_name":"B","config":"sent"}}"#;
        assert_eq!(
            map(text, &config),
            concat!(
                r#"{"eventName":"statsig::config_exposure","user":{"userID":"u"},"#,
                r#""metadata":{"config":"5","experiment_id":"5","ruleID":"B","variation_name":"B"},"#,
                r#""secondaryExposures":[]}"#
            )
        );
    }
}
