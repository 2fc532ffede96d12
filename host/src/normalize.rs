//! The Segment event model on the host: types, normalization, validation.
//!
//! [`normalize`] turns one event as a client sent it into the event every
//! destination receives: `messageId` assigned when missing, `receivedAt` set,
//! `timestamp` corrected for client clock skew (keeping `originalTimestamp`),
//! and the batch-level `context` and `integrations` merged in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_types::time::Timestamp;

pub use switchyard_types::{Envelope, EventType};

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

/// Normalizes and validates one event, given as the JSON text the client
/// sent.
///
/// Only the top-level members are parsed; properties, traits and context are
/// copied through as the client wrote them (bar the batch-level merge), which
/// keeps the per-event cost near a single scan of its bytes.
/// `forced_type` is the type implied by a single-event endpoint
/// (`/v1/track`), which wins over the body's `type`.
///
/// # Errors
///
/// [`Invalid`] naming the first problem found.
pub fn normalize(
    raw: &str,
    forced_type: Option<EventType>,
    meta: &BatchMeta<'_>,
    received_at: DateTime<Utc>,
    source: &Arc<str>,
) -> Result<Envelope, Invalid> {
    let members = Members::parse(raw)?;
    let kind = match forced_type {
        Some(t) => t,
        None => members.str("type").as_deref().and_then(EventType::parse).ok_or(Invalid::Type)?,
    };
    let message_id = match members.get("messageId").map(|v| v.get()) {
        None | Some("null") => uuid::Uuid::new_v4().to_string(),
        Some(v) => match serde_json::from_str::<String>(v) {
            Ok(s) if !s.is_empty() && s.chars().count() <= 100 => s,
            _ => return Err(Invalid::MessageId),
        },
    };
    let user_id = members.id("userId")?;
    let anonymous_id = members.id("anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Invalid::MissingId);
    }
    let mut extra_ids: Vec<(&'static str, String)> = Vec::new();
    let name = match kind {
        EventType::Track => match members.str("event") {
            Some(s) if !s.trim().is_empty() => Some(s),
            _ => return Err(Invalid::TrackEvent),
        },
        EventType::Page | EventType::Screen => members.str("name"),
        EventType::Group => {
            extra_ids.push(("groupId", members.id("groupId")?.ok_or(Invalid::GroupId)?));
            None
        }
        EventType::Alias => {
            match (members.id("previousId")?, &user_id) {
                (Some(p), Some(_)) => extra_ids.push(("previousId", p)),
                _ => return Err(Invalid::Alias),
            }
            None
        }
        EventType::Identify => None,
    };
    for key in ["properties", "traits"] {
        if members.get(key).is_some_and(|v| !is_object_or_null(v.get())) {
            return Err(Invalid::NotObject(if key == "properties" { "properties" } else { "traits" }));
        }
    }
    let context = merged(&members, "context", meta.context)?;
    let integrations_text = merged(&members, "integrations", meta.integrations)?;

    // timestamp = receivedAt − (sentAt − originalTimestamp)
    let original = members.time("timestamp")?;
    let sent_at = match members.time("sentAt")? {
        Some(t) => Some(t),
        None => match meta.sent_at {
            Some(s) => Some(parse_time(s).ok_or(Invalid::Timestamp("sentAt"))?),
            None => None,
        },
    };
    let corrected = match (original, sent_at) {
        (Some(orig), Some(sent)) => received_at - (sent - orig),
        (Some(orig), None) => orig,
        (None, _) => received_at,
    };

    // The client's members minus the ones set here, then ours.
    let mut out = String::with_capacity(raw.len() + 200);
    out.push('{');
    const OURS: [&str; 13] = [
        "type",
        "messageId",
        "userId",
        "anonymousId",
        "groupId",
        "previousId",
        "context",
        "integrations",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "writeKey",
    ];
    let mut written: Vec<&str> = Vec::with_capacity(members.0.len());
    for (k, v) in members.0.iter().rev() {
        // Last of repeated keys wins, as in any JSON parser.
        if OURS.contains(&k.as_str()) || written.contains(&k.as_str()) {
            continue;
        }
        written.push(k);
        push_key(&mut out, k);
        out.push_str(v.get());
        out.push(',');
    }
    push_str_member(&mut out, "type", kind.as_str());
    push_str_member(&mut out, "messageId", &message_id);
    for (key, value) in [("userId", &user_id), ("anonymousId", &anonymous_id)] {
        if let Some(v) = value {
            push_str_member(&mut out, key, v);
        }
    }
    for (key, value) in &extra_ids {
        push_str_member(&mut out, key, value);
    }
    for (key, value) in [("context", &context), ("integrations", &integrations_text)] {
        if let Some(v) = value {
            push_key(&mut out, key);
            out.push_str(v);
            out.push(',');
        }
    }
    if let Some(orig) = original {
        push_str_member(&mut out, "originalTimestamp", &fmt_time(orig));
    }
    if let Some(sent) = sent_at {
        push_str_member(&mut out, "sentAt", &fmt_time(sent));
    }
    push_str_member(&mut out, "receivedAt", &fmt_time(received_at));
    push_str_member(&mut out, "timestamp", &fmt_time(corrected));
    out.pop();
    out.push('}');

    let integrations = integrations_text.as_deref().and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok());
    Ok(Envelope {
        kind,
        message_id,
        name,
        user_id,
        anonymous_id,
        timestamp_ms: corrected.timestamp_millis(),
        source: source.clone(),
        integrations,
        json: out,
        only_for: None,
    })
}

type Raw = serde_json::value::RawValue;

/// The top-level members of an event, in order, values left as raw JSON.
struct Members<'a>(Vec<(String, &'a Raw)>);

impl<'a> Members<'a> {
    fn parse(raw: &'a str) -> Result<Members<'a>, Invalid> {
        serde_json::from_str::<Members<'a>>(raw).map_err(|_| Invalid::NotAnObject)
    }

    /// The last value of `key` (the one any JSON parser keeps).
    fn get(&self, key: &str) -> Option<&'a Raw> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    /// An id: a non-empty string, or a number (which SDKs send and Segment
    /// accepts) as a string.
    fn id(&self, key: &'static str) -> Result<Option<String>, Invalid> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match serde_json::from_str::<Value>(v.get()) {
            Ok(Value::Null) => Ok(None),
            Ok(Value::String(s)) if s.is_empty() => Ok(None),
            Ok(Value::String(s)) => Ok(Some(s)),
            Ok(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => Err(Invalid::IdType(key)),
        }
    }

    /// An ISO-8601 timestamp member, if present and not null.
    fn time(&self, key: &'static str) -> Result<Option<DateTime<Utc>>, Invalid> {
        match self.get(key).map(|v| v.get()) {
            None | Some("null") => Ok(None),
            Some(t) => serde_json::from_str::<String>(t)
                .ok()
                .and_then(|s| parse_time(&s))
                .map(Some)
                .ok_or(Invalid::Timestamp(key)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some((k, v)) = m.next_entry::<String, &'de Raw>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

fn is_object_or_null(raw: &str) -> bool {
    raw.starts_with('{') || raw == "null"
}

fn push_key(out: &mut String, key: &str) {
    push_json_str(out, key);
    out.push(':');
}

fn push_str_member(out: &mut String, key: &str, value: &str) {
    push_key(out, key);
    push_json_str(out, value);
    out.push(',');
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// The event's `context` or `integrations` with the batch-level object
/// merged under it (the event's keys win, nested objects merge), as JSON
/// text; the event's own text untouched when there is nothing to merge.
fn merged(
    members: &Members<'_>,
    key: &'static str,
    batch: Option<&Map<String, Value>>,
) -> Result<Option<String>, Invalid> {
    let own = members.get(key).map(|v| v.get()).filter(|t| *t != "null");
    match (own, batch) {
        (Some(t), _) if !t.starts_with('{') => Err(Invalid::NotObject(key)),
        (Some(t), None) => Ok(Some(t.to_owned())),
        (None, None) => Ok(None),
        (None, Some(b)) => Ok(serde_json::to_string(b).ok()),
        (Some(t), Some(b)) => {
            let mut own: Map<String, Value> = serde_json::from_str(t).map_err(|_| Invalid::NotObject(key))?;
            merge_under(&mut own, b);
            Ok(serde_json::to_string(&own).ok())
        }
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

/// Parses a Segment timestamp (the grammar is in [`switchyard_types::time`]:
/// the SDK and the warehouse read timestamps the same way).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let t = Timestamp::parse(s).ok()?;
    DateTime::from_timestamp(t.unix_seconds(), t.subsec_nanos())
}

/// ISO 8601 with milliseconds and `Z`, as Segment writes timestamps
/// ([`Timestamp::to_rfc3339_millis`]).
pub fn fmt_time(t: DateTime<Utc>) -> String {
    Timestamp::from_unix_millis(t.timestamp_millis()).to_rfc3339_millis()
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
        normalize(&v.to_string(), None, &BatchMeta::default(), now(), &Arc::from("web"))
    }

    #[test]
    fn skew_is_corrected_and_original_kept() {
        // Device clock 1 hour behind: sent "11:00:05", event at "11:00:00".
        let meta = BatchMeta { sent_at: Some("2024-05-01T11:00:05Z"), ..Default::default() };
        let e = normalize(
            &json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T11:00:00Z"}).to_string(),
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
            &json!({"type": "track", "event": "E", "userId": "u", "context": {"library": {"name": "own"}}, "integrations": {"Amplitude": true}}).to_string(),
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
    fn client_members_pass_through_and_ours_are_set_once() {
        let raw = r#"{"type":"group","userId":"u","groupId":77,"writeKey":"secret","we\"ird":[1,{"a":null}],
                      "traits":{"n":1.50},"x":1,"x":2}"#;
        let e = normalize(raw, None, &BatchMeta::default(), now(), &Arc::from("web")).unwrap();
        let v: Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(v["groupId"], "77", "numeric ids become strings");
        assert!(v.get("writeKey").is_none(), "the write key is never forwarded");
        assert_eq!(v["we\"ird"], json!([1, {"a": null}]));
        assert_eq!(v["x"], 2, "the last of repeated keys wins");
        assert_eq!(e.json.matches("\"x\"").count(), 1);
        assert_eq!(e.json.matches("\"type\"").count(), 1);
        assert!(e.json.contains(r#""traits":{"n":1.50}"#), "properties keep the client's own text");
    }

    #[test]
    fn forced_type_wins() {
        let e = normalize(
            &json!({"type": "identify", "event": "E", "userId": "u"}).to_string(),
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
