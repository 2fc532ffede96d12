//! The Segment event model on the host: types, normalization, validation.
//!
//! [`normalize`] turns one event as a client sent it into the event every
//! destination receives: `messageId` assigned when missing, `receivedAt` set,
//! `timestamp` corrected for client clock skew (keeping `originalTimestamp`),
//! and the batch-level `context` and `integrations` merged in.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The six Segment event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    pub const ALL: [EventType; 6] =
        [EventType::Identify, EventType::Track, EventType::Page, EventType::Screen, EventType::Group, EventType::Alias];

    /// The Segment `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    /// Parses a Segment `type` string.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One accepted, normalized event, shared by every destination it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub kind: EventType,
    pub message_id: String,
    /// `event` of a track, `name` of a page or screen.
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Skew-corrected timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// The source that sent it.
    pub source: Arc<str>,
    /// The `integrations` object, for routing.
    pub integrations: Option<Map<String, Value>>,
    /// The normalized event as JSON text.
    pub json: String,
    /// Set on a replayed dead letter: deliver to this destination only.
    pub only_for: Option<Arc<str>>,
}

/// Why an event was refused at ingest (the rest of its batch is accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("missing or unknown `type`")]
    Type,
    #[error("`messageId` must be a string of at most 100 characters")]
    MessageId,
    #[error("one of `userId` or `anonymousId` is required")]
    MissingId,
    #[error("`{0}` must be a string or a number")]
    IdType(&'static str),
    #[error("track requires a non-empty string `event`")]
    TrackEvent,
    #[error("group requires `groupId`")]
    GroupId,
    #[error("alias requires `previousId` and `userId`")]
    Alias,
    #[error("`{0}` must be an object")]
    NotObject(&'static str),
    #[error("`{0}` is not an ISO-8601 timestamp")]
    Timestamp(&'static str),
}

/// What the request carried beside the events themselves.
#[derive(Debug, Clone, Default)]
pub struct BatchMeta<'a> {
    pub sent_at: Option<&'a str>,
    pub context: Option<&'a Map<String, Value>>,
    pub integrations: Option<&'a Map<String, Value>>,
}

/// Normalizes and validates one event.
///
/// `forced_type` is the type implied by a single-event endpoint
/// (`/v1/track`), which wins over the body's `type`.
///
/// # Errors
///
/// [`Invalid`] naming the first problem found.
pub fn normalize(
    event: Map<String, Value>,
    forced_type: Option<EventType>,
    meta: &BatchMeta<'_>,
    received_at: DateTime<Utc>,
    source: &Arc<str>,
) -> Result<Envelope, Invalid> {
    let mut e = event;
    let kind = match forced_type {
        Some(t) => t,
        None => e.get("type").and_then(Value::as_str).and_then(EventType::parse).ok_or(Invalid::Type)?,
    };
    e.insert("type".into(), Value::String(kind.as_str().into()));

    let message_id = match e.get("messageId") {
        None | Some(Value::Null) => {
            let id = uuid::Uuid::new_v4().to_string();
            e.insert("messageId".into(), Value::String(id.clone()));
            id
        }
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 100 => s.clone(),
        Some(_) => return Err(Invalid::MessageId),
    };

    let user_id = id_field(&mut e, "userId")?;
    let anonymous_id = id_field(&mut e, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Invalid::MissingId);
    }

    let name = match kind {
        EventType::Track => match e.get("event") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => return Err(Invalid::TrackEvent),
        },
        EventType::Page | EventType::Screen => e.get("name").and_then(Value::as_str).map(str::to_owned),
        EventType::Group => {
            match id_field(&mut e, "groupId")? {
                Some(_) => {}
                None => return Err(Invalid::GroupId),
            }
            None
        }
        EventType::Alias => {
            if user_id.is_none() || id_field(&mut e, "previousId")?.is_none() {
                return Err(Invalid::Alias);
            }
            None
        }
        EventType::Identify => None,
    };
    for key in ["properties", "traits"] {
        if matches!(e.get(key), Some(v) if !v.is_object() && !v.is_null()) {
            return Err(Invalid::NotObject(if key == "properties" { "properties" } else { "traits" }));
        }
    }

    merge_object(&mut e, "context", meta.context)?;
    merge_object(&mut e, "integrations", meta.integrations)?;

    let timestamp = correct_timestamp(&mut e, meta.sent_at, received_at)?;
    let integrations = e.get("integrations").and_then(Value::as_object).cloned();
    let json = Value::Object(e).to_string();
    Ok(Envelope {
        kind,
        message_id,
        name,
        user_id,
        anonymous_id,
        timestamp_ms: timestamp.timestamp_millis(),
        source: source.clone(),
        integrations,
        json,
        only_for: None,
    })
}

/// An id field: a non-empty string, or a number (which SDKs send and
/// Segment accepts) converted to a string in place.
fn id_field(e: &mut Map<String, Value>, key: &'static str) -> Result<Option<String>, Invalid> {
    match e.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => {
            let s = n.to_string();
            e.insert(key.into(), Value::String(s.clone()));
            Ok(Some(s))
        }
        Some(_) => Err(Invalid::IdType(key)),
    }
}

/// Merges the batch-level object under the event's own: the event's keys
/// win, nested objects merge recursively.
fn merge_object(
    e: &mut Map<String, Value>,
    key: &'static str,
    batch: Option<&Map<String, Value>>,
) -> Result<(), Invalid> {
    match (e.get_mut(key), batch) {
        (Some(Value::Object(own)), Some(batch)) => {
            merge_under(own, batch);
            Ok(())
        }
        (Some(Value::Object(_)), None) => Ok(()),
        (None | Some(Value::Null), Some(batch)) => {
            e.insert(key.into(), Value::Object(batch.clone()));
            Ok(())
        }
        (None | Some(Value::Null), None) => Ok(()),
        (Some(_), _) => Err(Invalid::NotObject(key)),
    }
}

fn merge_under(own: &mut Map<String, Value>, batch: &Map<String, Value>) {
    for (k, v) in batch {
        match (own.get_mut(k), v) {
            (Some(Value::Object(o)), Value::Object(b)) => merge_under(o, b),
            (Some(_), _) => {}
            (None, v) => {
                own.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Sets `receivedAt`, `originalTimestamp` and the corrected `timestamp`:
/// `timestamp = receivedAt − (sentAt − originalTimestamp)`.
fn correct_timestamp(
    e: &mut Map<String, Value>,
    batch_sent_at: Option<&str>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, Invalid> {
    let original = match e.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_time(s).ok_or(Invalid::Timestamp("timestamp"))?),
        Some(_) => return Err(Invalid::Timestamp("timestamp")),
    };
    let sent_at = match e.get("sentAt") {
        Some(Value::String(s)) => Some(parse_time(s).ok_or(Invalid::Timestamp("sentAt"))?),
        None | Some(Value::Null) => match batch_sent_at {
            Some(s) => Some(parse_time(s).ok_or(Invalid::Timestamp("sentAt"))?),
            None => None,
        },
        Some(_) => return Err(Invalid::Timestamp("sentAt")),
    };
    let corrected = match (original, sent_at) {
        (Some(orig), Some(sent)) => received_at - (sent - orig),
        (Some(orig), None) => orig,
        (None, _) => received_at,
    };
    if let Some(orig) = original {
        e.insert("originalTimestamp".into(), Value::String(fmt_time(orig)));
    }
    if let Some(sent) = sent_at {
        e.insert("sentAt".into(), Value::String(fmt_time(sent)));
    }
    e.insert("receivedAt".into(), Value::String(fmt_time(received_at)));
    e.insert("timestamp".into(), Value::String(fmt_time(corrected)));
    Ok(corrected)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}

/// ISO 8601 with milliseconds and `Z`, as Segment writes timestamps.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:10.000Z").unwrap()
    }

    fn norm(v: Value) -> Result<Envelope, Invalid> {
        normalize(obj(v), None, &BatchMeta::default(), now(), &Arc::from("web"))
    }

    #[test]
    fn skew_is_corrected_and_original_kept() {
        // Device clock 1 hour behind: sent "11:00:05", event at "11:00:00".
        let meta = BatchMeta { sent_at: Some("2024-05-01T11:00:05Z"), ..Default::default() };
        let e = normalize(
            obj(json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T11:00:00Z"})),
            None,
            &meta,
            now(),
            &Arc::from("web"),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["timestamp"], "2024-05-01T12:00:05.000Z");
        assert_eq!(v["originalTimestamp"], "2024-05-01T11:00:00.000Z");
        assert_eq!(v["receivedAt"], "2024-05-01T12:00:10.000Z");
        assert_eq!(e.timestamp_ms, parse_time("2024-05-01T12:00:05Z").unwrap().timestamp_millis());
    }

    #[test]
    fn message_id_assigned_and_numbers_become_strings() {
        let e = norm(json!({"type": "identify", "userId": 42})).unwrap();
        assert_eq!(e.message_id.len(), 36);
        assert_eq!(e.user_id.as_deref(), Some("42"));
        let v: Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["userId"], "42");
        assert_eq!(v["messageId"], e.message_id.as_str());
        assert_eq!(v["timestamp"], "2024-05-01T12:00:10.000Z");
    }

    #[test]
    fn batch_context_merges_under_event_context() {
        let ctx = obj(json!({"library": {"name": "batch-lib", "version": "1"}, "ip": "1.2.3.4"}));
        let integ = obj(json!({"All": false}));
        let meta = BatchMeta { context: Some(&ctx), integrations: Some(&integ), ..Default::default() };
        let e = normalize(
            obj(json!({"type": "track", "event": "E", "userId": "u", "context": {"library": {"name": "own"}}, "integrations": {"Amplitude": true}})),
            None,
            &meta,
            now(),
            &Arc::from("web"),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["context"]["library"], json!({"name": "own", "version": "1"}));
        assert_eq!(v["context"]["ip"], "1.2.3.4");
        assert_eq!(v["integrations"], json!({"All": false, "Amplitude": true}));
    }

    #[test]
    fn invalid_events_name_the_problem() {
        let cases = [
            (json!({"type": "track", "userId": "u"}), Invalid::TrackEvent),
            (json!({"type": "track", "event": "E"}), Invalid::MissingId),
            (json!({"type": "nope", "userId": "u"}), Invalid::Type),
            (json!({"type": "group", "userId": "u"}), Invalid::GroupId),
            (json!({"type": "alias", "anonymousId": "a", "previousId": "p"}), Invalid::Alias),
            (json!({"type": "track", "event": "E", "userId": {"x": 1}}), Invalid::IdType("userId")),
            (json!({"type": "track", "event": "E", "userId": "u", "messageId": 7}), Invalid::MessageId),
            (
                json!({"type": "track", "event": "E", "userId": "u", "timestamp": "noon"}),
                Invalid::Timestamp("timestamp"),
            ),
            (
                json!({"type": "track", "event": "E", "userId": "u", "properties": [1]}),
                Invalid::NotObject("properties"),
            ),
            (json!({"type": "track", "event": "E", "userId": "u", "context": "x"}), Invalid::NotObject("context")),
        ];
        for (event, want) in cases {
            assert_eq!(norm(event.clone()).unwrap_err(), want, "{event}");
        }
    }

    #[test]
    fn forced_type_wins() {
        let e = normalize(
            obj(json!({"type": "identify", "event": "E", "userId": "u"})),
            Some(EventType::Track),
            &BatchMeta::default(),
            now(),
            &Arc::from("w"),
        )
        .unwrap();
        assert_eq!(e.kind, EventType::Track);
        assert_eq!(e.name.as_deref(), Some("E"));
    }
}
