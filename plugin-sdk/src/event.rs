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
