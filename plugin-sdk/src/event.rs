//! [`Event`]: one event of a batch, as the host hands it to a destination.

use serde::de::DeserializeOwned;

use crate::spec;
pub use switchyard_types::EventType;

/// One event, accepted and normalized by the host.
///
/// The host has already parsed the fields most destinations need; the full
/// Segment event stays available as JSON text through [`Event::json`] and,
/// typed, through [`Event::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventType,
    /// The Segment `messageId`, stable across redeliveries: use it to dedupe.
    pub message_id: String,
    /// `event` for a track, `name` for a page or screen.
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The skew-corrected `timestamp` in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The whole normalized event as JSON text.
    pub json: String,
    /// The name of the source that sent it (`[[sources]]` in the host's
    /// config): the warehouse keeps one schema per source.
    pub source: String,
}

impl Event {
    /// The whole normalized Segment event as JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Deserializes the event JSON into `T`: one of the typed events in
    /// [`spec`], or a type of the plugin's own.
    ///
    /// # Errors
    ///
    /// The serde error, with the path of the field that did not fit.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let de = &mut serde_json::Deserializer::from_str(&self.json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            format!("field `{path}`: {}", e.into_inner())
        })
    }

    /// Deserializes the event as the typed Segment message of its `kind`.
    ///
    /// # Errors
    ///
    /// As [`Event::parse`].
    pub fn message(&self) -> Result<spec::Message, String> {
        Ok(match self.kind {
            EventType::Identify => spec::Message::Identify(self.parse()?),
            EventType::Track => spec::Message::Track(self.parse()?),
            EventType::Page => spec::Message::Page(self.parse()?),
            EventType::Screen => spec::Message::Screen(self.parse()?),
            EventType::Group => spec::Message::Group(self.parse()?),
            EventType::Alias => spec::Message::Alias(self.parse()?),
        })
    }

    /// The event JSON as an object, with what the typed messages cannot
    /// read dropped or mended by [`spec::sanitize`]: the event as
    /// [`Event::message_lenient`] reads it, for fields the typed messages
    /// leave out.
    ///
    /// # Errors
    ///
    /// When the JSON does not parse or is not an object (the host never
    /// hands on such an event).
    pub fn lenient_json(&self) -> Result<serde_json::Value, String> {
        let mut raw: serde_json::Value =
            serde_json::from_str(&self.json).map_err(|e| format!("the event is not valid JSON: {e}"))?;
        let obj = raw.as_object_mut().ok_or("the event is not a JSON object")?;
        spec::sanitize(obj);
        Ok(raw)
    }

    /// Reads the event as the typed Segment message of its `kind`
    /// leniently: a `properties`, `traits` or `context` (or a part of it)
    /// that is not an object, and the like, is dropped rather than failing
    /// the event (see [`spec::sanitize`]). Returns the message and the
    /// sanitized JSON it was read from ([`Event::lenient_json`]).
    ///
    /// Prefer it to [`Event::message`] in a destination: an odd field a
    /// client sent should cost that field, not the event. Where speed
    /// matters, [`Event::view`] reads the same fields as leniently without
    /// building a `serde_json::Value` tree (about 5× faster).
    ///
    /// # Errors
    ///
    /// As [`Event::lenient_json`], or when the event still does not fit the
    /// message (which sanitizing makes next to impossible).
    pub fn message_lenient(&self) -> Result<(spec::Message, serde_json::Value), String> {
        fn read<T: DeserializeOwned>(raw: &serde_json::Value) -> Result<T, String> {
            T::deserialize(raw).map_err(|e| format!("the event does not fit the Segment spec: {e}"))
        }
        let raw = self.lenient_json()?;
        let message = match self.kind {
            EventType::Identify => spec::Message::Identify(read(&raw)?),
            EventType::Track => spec::Message::Track(read(&raw)?),
            EventType::Page => spec::Message::Page(read(&raw)?),
            EventType::Screen => spec::Message::Screen(read(&raw)?),
            EventType::Group => spec::Message::Group(read(&raw)?),
            EventType::Alias => spec::Message::Alias(read(&raw)?),
        };
        Ok((message, raw))
    }

    /// Builds an event from Segment JSON the way the host does, for tests and
    /// fixtures: reads `type`, `messageId`, the ids, the name and `timestamp`.
    /// The source is [`Event::TEST_SOURCE`]; set [`Event::source`] for
    /// another.
    ///
    /// # Errors
    ///
    /// When the JSON is not an object, or `type` or `messageId` is missing or
    /// unknown.
    pub fn from_segment_json(json: &str) -> Result<Event, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = value.as_object().ok_or("event is not a JSON object")?;
        let text = |key: &str| obj.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let kind = text("type").as_deref().and_then(EventType::parse).ok_or("missing or unknown `type`")?;
        let message_id = text("messageId").ok_or("missing `messageId`")?;
        let name = match kind {
            EventType::Track => text("event"),
            EventType::Page | EventType::Screen => text("name"),
            _ => None,
        };
        let timestamp_ms = text("timestamp").as_deref().and_then(spec::parse_timestamp_ms).unwrap_or(0);
        Ok(Event {
            kind,
            message_id,
            name,
            user_id: text("userId"),
            anonymous_id: text("anonymousId"),
            timestamp_ms,
            json: json.to_owned(),
            source: Event::TEST_SOURCE.to_owned(),
        })
    }

    /// The source of events built by [`Event::from_segment_json`].
    pub const TEST_SOURCE: &str = "test";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lenient_survives_odd_containers() {
        let event = Event::from_segment_json(
            r#"{"type":"track","messageId":"m","event":"E","userId":"u","properties":[1],"context":"x"}"#,
        )
        .unwrap();
        assert!(event.message().is_err(), "the strict read fails on `properties: [1]`");
        let (message, raw) = event.message_lenient().unwrap();
        let spec::Message::Track(track) = message else { panic!("a track: {message:?}") };
        assert_eq!((track.event.as_str(), track.user_id.as_deref()), ("E", Some("u")));
        assert!(track.properties.is_empty());
        assert_eq!(raw, serde_json::json!({"type": "track", "messageId": "m", "event": "E", "userId": "u"}));
    }

    #[test]
    fn message_lenient_reads_each_kind() {
        for (json, kind) in [
            (r#"{"type":"identify","messageId":"m","traits":null}"#, EventType::Identify),
            (r#"{"type":"page","messageId":"m","name":3}"#, EventType::Page),
            (r#"{"type":"screen","messageId":"m"}"#, EventType::Screen),
            (r#"{"type":"group","messageId":"m","groupId":9}"#, EventType::Group),
            (r#"{"type":"alias","messageId":"m","previousId":"p"}"#, EventType::Alias),
        ] {
            let event = Event::from_segment_json(json).unwrap();
            let (message, _) = event.message_lenient().unwrap();
            let read = match message {
                spec::Message::Identify(_) => EventType::Identify,
                spec::Message::Track(_) => EventType::Track,
                spec::Message::Page(_) => EventType::Page,
                spec::Message::Screen(_) => EventType::Screen,
                spec::Message::Group(_) => EventType::Group,
                spec::Message::Alias(_) => EventType::Alias,
            };
            assert_eq!(read, kind, "{json}");
        }
        let mut not_json = Event::from_segment_json(r#"{"type":"track","messageId":"m"}"#).unwrap();
        not_json.json = "[1]".into();
        assert_eq!(not_json.message_lenient().unwrap_err(), "the event is not a JSON object");
    }
}
