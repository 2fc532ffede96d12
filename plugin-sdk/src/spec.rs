//! Typed Segment messages: the six event types and the common `context`.
//!
//! Field names follow the Segment spec (camelCase on the wire). Every field
//! is optional and string fields accept numbers and booleans, because real
//! SDKs send them: a destination should map what it can rather than fail on
//! a `context.app.build` of `42`. Anything not modelled here is still in
//! [`Event::json`](crate::Event::json).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// A JSON object of free-form properties or traits.
pub type Properties = Map<String, Value>;

/// One typed Segment message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Identify(Identify),
    Track(Track),
    Page(Page),
    Screen(Screen),
    Group(Group),
    Alias(Alias),
}

macro_rules! segment_message {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct $name {
            pub message_id: String,
            #[serde(deserialize_with = "lenient_string")]
            pub user_id: Option<String>,
            #[serde(deserialize_with = "lenient_string")]
            pub anonymous_id: Option<String>,
            /// Skew-corrected time of the event (ISO 8601).
            pub timestamp: Option<String>,
            /// The client's own time of the event (ISO 8601).
            pub original_timestamp: Option<String>,
            pub sent_at: Option<String>,
            pub received_at: Option<String>,
            pub context: Context,
            pub integrations: Properties,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

segment_message!(
    /// `identify`: who the user is, with traits.
    Identify { traits: Properties }
);
segment_message!(
    /// `track`: an action the user performed.
    Track { event: String, properties: Properties }
);
segment_message!(
    /// `page`: a web page view.
    Page {
        #[serde(deserialize_with = "lenient_string")]
        name: Option<String>,
        #[serde(deserialize_with = "lenient_string")]
        category: Option<String>,
        properties: Properties
    }
);
segment_message!(
    /// `screen`: a mobile screen view.
    Screen {
        #[serde(deserialize_with = "lenient_string")]
        name: Option<String>,
        #[serde(deserialize_with = "lenient_string")]
        category: Option<String>,
        properties: Properties
    }
);
segment_message!(
    /// `group`: associates the user with a group (account, company).
    Group {
        #[serde(deserialize_with = "lenient_string")]
        group_id: Option<String>,
        traits: Properties
    }
);
segment_message!(
    /// `alias`: merges a previous identity into `userId`.
    Alias {
        #[serde(deserialize_with = "lenient_string")]
        previous_id: Option<String>
    }
);

macro_rules! lenient_struct {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct $name {
            $($(#[$fdoc])* #[serde(deserialize_with = "lenient_string", skip_serializing_if = "Option::is_none")]
            pub $field: Option<String>,)*
        }
    };
}

lenient_struct!(
    /// `context.app`
    App { name, version, build, namespace }
);
lenient_struct!(
    /// `context.campaign` (UTM parameters)
    Campaign { name, source, medium, term, content }
);
lenient_struct!(
    /// `context.library`: the SDK that sent the event.
    Library { name, version }
);
lenient_struct!(
    /// `context.os`
    Os { name, version }
);
lenient_struct!(
    /// `context.page`
    PageContext { path, referrer, search, title, url }
);
lenient_struct!(
    /// `context.referrer`
    Referrer { id, name, url, link }
);

/// `context.device`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Device {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub advertising_id: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub ad_tracking_enabled: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub manufacturer: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub token: Option<String>,
}

/// `context.location`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Location {
    #[serde(deserialize_with = "lenient_string")]
    pub city: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub country: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub region: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    pub latitude: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub longitude: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub speed: Option<f64>,
}

/// `context.network`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Network {
    #[serde(deserialize_with = "lenient_bool")]
    pub bluetooth: Option<bool>,
    #[serde(deserialize_with = "lenient_string")]
    pub carrier: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub cellular: Option<bool>,
    #[serde(deserialize_with = "lenient_bool")]
    pub wifi: Option<bool>,
}

/// `context.screen`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScreenContext {
    #[serde(deserialize_with = "lenient_f64")]
    pub width: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub height: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub density: Option<f64>,
}

/// The common `context` object every message may carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Context {
    #[serde(deserialize_with = "lenient_bool")]
    pub active: Option<bool>,
    pub app: App,
    pub campaign: Campaign,
    pub device: Device,
    #[serde(deserialize_with = "lenient_string")]
    pub ip: Option<String>,
    pub library: Library,
    #[serde(deserialize_with = "lenient_string")]
    pub locale: Option<String>,
    pub location: Location,
    pub network: Network,
    pub os: Os,
    pub page: PageContext,
    pub referrer: Referrer,
    pub screen: ScreenContext,
    #[serde(deserialize_with = "lenient_string")]
    pub group_id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub timezone: Option<String>,
    pub traits: Properties,
    #[serde(deserialize_with = "lenient_string")]
    pub user_agent: Option<String>,
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Drops or mends the members of a Segment event object that the typed
/// messages of this module cannot read, so one odd field does not cost the
/// whole event; [`Event::message_lenient`](crate::Event::message_lenient)
/// runs it before reading the message.
///
/// Real SDKs and hand-written clients send `properties: null`,
/// `traits: [..]`, `context: "x"`. This:
///
/// - removes `properties`, `traits`, `context` and `integrations` when they
///   are not objects, and so too `context.app`, `campaign`, `device`,
///   `library`, `location`, `network`, `os`, `page`, `referrer`, `screen`
///   and `traits`;
/// - removes `timestamp`, `originalTimestamp`, `sentAt`, `receivedAt` and
///   `messageId` when they are not strings;
/// - turns a number or boolean `event` name into its text, and removes any
///   other non-string one.
///
/// What the typed messages already read leniently (ids and context
/// strings given as numbers, say) is left alone.
pub fn sanitize(obj: &mut Map<String, Value>) {
    for key in ["properties", "traits", "context", "integrations"] {
        if obj.get(key).is_some_and(|v| !v.is_object()) {
            obj.remove(key);
        }
    }
    for key in ["timestamp", "originalTimestamp", "sentAt", "receivedAt", "messageId"] {
        if obj.get(key).is_some_and(|v| !v.is_string()) {
            obj.remove(key);
        }
    }
    match obj.get("event") {
        Some(Value::String(_)) | None => {}
        Some(v @ (Value::Number(_) | Value::Bool(_))) => {
            let text = v.to_string();
            obj.insert("event".into(), Value::String(text));
        }
        Some(_) => {
            obj.remove("event");
        }
    }
    if let Some(Value::Object(ctx)) = obj.get_mut("context") {
        for key in [
            "app", "campaign", "device", "library", "location", "network", "os", "page", "referrer", "screen", "traits",
        ] {
            if ctx.get(key).is_some_and(|v| !v.is_object()) {
                ctx.remove(key);
            }
        }
    }
}

/// Parses a Segment timestamp (`2024-05-01T12:00:00.123Z`,
/// `2024-05-01T14:00:00+02:00`, or a date alone) into milliseconds since the
/// Unix epoch, rounded down: [`Timestamp::parse`] then
/// [`Timestamp::unix_millis`]. The grammar is in [`crate::time`].
///
/// [`None`] when `s` is not a timestamp; [`Timestamp::parse`] says why.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    Timestamp::parse(s).ok().map(Timestamp::unix_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp_ms("2024-05-01T12:00:00.123Z"), Some(1_714_564_800_123));
        assert_eq!(parse_timestamp_ms("2024-05-01T14:00:00.123+02:00"), Some(1_714_564_800_123));
        assert_eq!(parse_timestamp_ms("2024-05-01T07:30:00-0430"), Some(1_714_564_800_000));
        assert_eq!(parse_timestamp_ms("2024-05-01T12:00:00.1234567Z"), Some(1_714_564_800_123));
        assert_eq!(parse_timestamp_ms("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(parse_timestamp_ms("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00.",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn sanitize_drops_what_cannot_be_read() {
        let mut obj = serde_json::json!({
            "type": "track", "event": 42, "messageId": 7, "timestamp": 1_714_564_800,
            "properties": null, "traits": [1], "integrations": "all",
            "context": {"app": "x", "page": {"url": "u"}, "traits": 3, "ip": "1.2.3.4"}
        });
        let Some(map) = obj.as_object_mut() else { panic!("an object") };
        sanitize(map);
        assert_eq!(
            obj,
            serde_json::json!({"type": "track", "event": "42", "context": {"page": {"url": "u"}, "ip": "1.2.3.4"}})
        );
        let track: Track = serde_json::from_value(obj).unwrap();
        assert_eq!(track.event, "42");
        assert_eq!(track.context.page.url.as_deref(), Some("u"));
    }

    #[test]
    fn sanitize_mends_boolean_names_and_drops_other_ones() {
        let mut obj = serde_json::json!({"event": true});
        sanitize(obj.as_object_mut().unwrap());
        assert_eq!(obj, serde_json::json!({"event": "true"}));
        let mut obj = serde_json::json!({"event": {"name": "E"}});
        sanitize(obj.as_object_mut().unwrap());
        assert_eq!(obj, serde_json::json!({}));
    }

    #[test]
    fn lenient_context_fields() {
        let t: Track = serde_json::from_value(serde_json::json!({
            "messageId": "m", "event": "E", "userId": 42,
            "context": {"app": {"build": 7}, "device": {"adTrackingEnabled": "true", "type": "ios"},
                        "location": {"latitude": "1.5"}, "screen": {"width": 320}}
        }))
        .unwrap();
        assert_eq!(t.user_id.as_deref(), Some("42"));
        assert_eq!(t.context.app.build.as_deref(), Some("7"));
        assert_eq!(t.context.device.ad_tracking_enabled, Some(true));
        assert_eq!(t.context.device.kind.as_deref(), Some("ios"));
        assert_eq!(t.context.location.latitude, Some(1.5));
        assert_eq!(t.context.screen.width, Some(320.0));
    }
}
