//! [`EventView`]: one event read once, its fields borrowed from the
//! event's JSON text.
//!
//! This is the fast way to read an event in a mapping. The whole event is
//! indexed in one pass ([`Document`]) and the well-known top-level members
//! are located on the way, so `view.context().object("device")` walks a
//! few nodes and copies nothing. The reading is as lenient as
//! [`Event::message_lenient`]: a container that is not an object reads as
//! empty, an id or a name sent as a number reads as its text, a timestamp
//! that is not a string reads as absent. One difference: a number read as
//! text is its JSON text as sent (`1.50`), where the typed messages give
//! serde_json's rendering of it (`1.5`).

use std::borrow::Cow;

use crate::json::{Document, Json, Kind, Object};
use crate::{Event, EventType};

/// An event's fields, borrowed from [`Event::json`]: the event's text
/// indexed once (a [`Document`]). Built by [`Event::view`]; what it gives
/// borrows the view.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    event: &'a Event,
    doc: Document<'a>,
    /// The node of each [`Known`] member.
    known: [Option<u32>; Known::COUNT],
}

/// The top-level members a mapping reads most: their nodes are found in
/// the one walk over the top level that [`Event::view`] makes.
#[derive(Debug, Clone, Copy)]
enum Known {
    UserId,
    AnonymousId,
    Event,
    Name,
    Category,
    GroupId,
    PreviousId,
    Properties,
    Traits,
    Context,
    Integrations,
    Timestamp,
    OriginalTimestamp,
    SentAt,
    ReceivedAt,
}

impl Known {
    const COUNT: usize = 15;

    fn of(key: &str) -> Option<Known> {
        Some(match key {
            "userId" => Known::UserId,
            "anonymousId" => Known::AnonymousId,
            "event" => Known::Event,
            "name" => Known::Name,
            "category" => Known::Category,
            "groupId" => Known::GroupId,
            "previousId" => Known::PreviousId,
            "properties" => Known::Properties,
            "traits" => Known::Traits,
            "context" => Known::Context,
            "integrations" => Known::Integrations,
            "timestamp" => Known::Timestamp,
            "originalTimestamp" => Known::OriginalTimestamp,
            "sentAt" => Known::SentAt,
            "receivedAt" => Known::ReceivedAt,
            _ => return None,
        })
    }
}

impl Event {
    /// Reads the event once for a mapping: see [`EventView`].
    ///
    /// # Errors
    ///
    /// When the JSON does not parse or is not an object (the host never
    /// hands on such an event).
    pub fn view(&self) -> Result<EventView<'_>, String> {
        let doc = Document::parse(&self.json).map_err(|e| format!("the event is {e}"))?;
        let top = doc.root().object().ok_or("the event is not a JSON object")?;
        let mut known = [None; Known::COUNT];
        // Every member, repeats included: the last of a repeated key wins.
        for (key, value) in top.members_with_repeats() {
            if let Some(slot) = key.str().as_deref().and_then(Known::of) {
                known[slot as usize] = Some(value.index());
            }
        }
        Ok(EventView { event: self, doc, known })
    }
}

impl<'a> EventView<'a> {
    /// The event the view reads.
    pub fn event(&self) -> &'a Event {
        self.event
    }

    /// The Segment `type`, as the host read it.
    pub fn kind(&self) -> EventType {
        self.event.kind
    }

    /// The `messageId` the host assigned or kept.
    pub fn message_id(&self) -> &'a str {
        &self.event.message_id
    }

    /// The skew-corrected `timestamp`, in ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.event.timestamp_ms
    }

    /// A well-known member, from the index made at [`Event::view`].
    fn known(&self, member: Known) -> Option<Json<'_>> {
        Some(self.doc.root().at(self.known[member as usize]?))
    }

    /// Any top-level member (a well-known one from the index made at
    /// [`Event::view`]).
    pub fn get(&self, key: &str) -> Option<Json<'_>> {
        if let Some(member) = Known::of(key) {
            return self.known(member);
        }
        self.doc.object().get(key)
    }

    /// The top-level members.
    pub fn top(&self) -> Object<'_> {
        self.doc.object()
    }

    /// `userId`, as text (a number is read as its text).
    pub fn user_id(&self) -> Option<Cow<'_, str>> {
        self.known(Known::UserId)?.text()
    }

    /// `anonymousId`, as text.
    pub fn anonymous_id(&self) -> Option<Cow<'_, str>> {
        self.known(Known::AnonymousId)?.text()
    }

    /// A track's `event` name (a number or boolean is read as its text).
    pub fn event_name(&self) -> Option<Cow<'_, str>> {
        self.known(Known::Event)?.text()
    }

    /// A page's or screen's `name`.
    pub fn name(&self) -> Option<Cow<'_, str>> {
        self.known(Known::Name)?.text()
    }

    /// A page's or screen's `category`.
    pub fn category(&self) -> Option<Cow<'_, str>> {
        self.known(Known::Category)?.text()
    }

    /// A group's `groupId`.
    pub fn group_id(&self) -> Option<Cow<'_, str>> {
        self.known(Known::GroupId)?.text()
    }

    /// An alias's `previousId`.
    pub fn previous_id(&self) -> Option<Cow<'_, str>> {
        self.known(Known::PreviousId)?.text()
    }

    /// A timestamp member (`timestamp`, `originalTimestamp`, `sentAt`,
    /// `receivedAt`) as sent, when it is a string.
    pub fn time_text(&self, key: &str) -> Option<Cow<'_, str>> {
        self.get(key).filter(|v| v.kind() == Kind::String)?.str()
    }

    /// `properties` (empty when absent or not an object).
    pub fn properties(&self) -> Object<'_> {
        self.known(Known::Properties).and_then(Json::object).unwrap_or_default()
    }

    /// `traits` (empty when absent or not an object).
    pub fn traits(&self) -> Object<'_> {
        self.known(Known::Traits).and_then(Json::object).unwrap_or_default()
    }

    /// `context` (empty when absent or not an object). Its parts are
    /// objects too: `view.context().object("device").text("id")`.
    pub fn context(&self) -> Object<'_> {
        self.known(Known::Context).and_then(Json::object).unwrap_or_default()
    }

    /// `integrations` (empty when absent or not an object).
    pub fn integrations(&self) -> Object<'_> {
        self.known(Known::Integrations).and_then(Json::object).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Message;

    const EVENT: &str = r#"{"type":"track","messageId":"m1","event":42,"userId":7,"anonymousId":"a",
        "timestamp":"2024-05-01T12:00:00Z","sentAt":5,"properties":[1],"traits":{"plan":"pro"},
        "context":{"device":{"id":"d","adTrackingEnabled":"true"},"os":"x","ip":"1.2.3.4"},
        "integrations":"all"}"#;

    #[test]
    fn reads_leniently() {
        let event = Event::from_segment_json(EVENT).unwrap();
        let view = event.view().unwrap();
        assert_eq!(view.message_id(), "m1");
        assert_eq!(view.event_name().as_deref(), Some("42"));
        assert_eq!(view.user_id().as_deref(), Some("7"));
        assert_eq!(view.anonymous_id().as_deref(), Some("a"));
        assert_eq!(view.time_text("timestamp").as_deref(), Some("2024-05-01T12:00:00Z"));
        assert_eq!(view.time_text("sentAt"), None, "a number is no timestamp");
        assert!(view.properties().is_empty(), "an array is no properties object");
        assert_eq!(view.traits().text("plan").as_deref(), Some("pro"));
        let ctx = view.context();
        assert_eq!(ctx.object("device").text("id").as_deref(), Some("d"));
        assert_eq!(ctx.object("device").bool("adTrackingEnabled"), Some(true));
        assert!(ctx.object("os").is_empty());
        assert_eq!(ctx.text("ip").as_deref(), Some("1.2.3.4"));
        assert!(view.integrations().is_empty());
    }

    /// The view reads what the typed, lenient message reads.
    #[test]
    fn agrees_with_message_lenient() {
        let event = Event::from_segment_json(EVENT).unwrap();
        let view = event.view().unwrap();
        let (Message::Track(track), _) = event.message_lenient().unwrap() else { panic!("a track") };
        assert_eq!(view.event_name().as_deref(), Some(track.event.as_str()));
        assert_eq!(view.user_id().as_deref(), track.user_id.as_deref());
        assert_eq!(view.context().object("device").text("id").as_deref(), track.context.device.id.as_deref());
        assert_eq!(view.context().object("device").bool("adTrackingEnabled"), track.context.device.ad_tracking_enabled);
        assert_eq!(view.properties().to_map(), track.properties);
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        let mut event = Event::from_segment_json(r#"{"type":"track","messageId":"m"}"#).unwrap();
        event.json = "[1]".into();
        assert_eq!(event.view().unwrap_err(), "the event is not a JSON object");
    }
}
