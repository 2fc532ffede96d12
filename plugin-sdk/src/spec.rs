//! Typed Segment messages: the six event types and the common `context`.
//!
//! Field names follow the Segment spec (camelCase on the wire). Every field
//! is optional and string fields accept numbers and booleans, because real
//! SDKs send them: a destination should map what it can rather than fail on
//! a `context.app.build` of `42`. Anything not modelled here is still in
//! [`Event::json`](crate::Event::json).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

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

/// Parses an ISO 8601 / RFC 3339 timestamp (`2024-05-01T12:00:00.123Z`,
/// `2024-05-01T14:00:00+02:00`, or a date alone) into milliseconds since the
/// Unix epoch.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s.trim()[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let (oh, om) = if b.get(i + 3) == Some(&b':') {
                (num(i + 1..i + 3)?, num(i + 4..i + 6)?)
            } else {
                (num(i + 1..i + 3)?, num(i + 3..i + 5).unwrap_or(0))
            };
            let rest = if b.get(i + 3) == Some(&b':') {
                i + 6
            } else if b.len() >= i + 5 {
                i + 5
            } else {
                i + 3
            };
            if rest != b.len() {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
