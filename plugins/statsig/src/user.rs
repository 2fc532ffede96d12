//! The Statsig user every event carries, and the value conversions Statsig's
//! types need.
//!
//! [`UserSource::write`] writes `user` straight into the Statsig event's
//! JSON text, from the borrowed event ([`EventView`]) and the traits the
//! identify cache holds for it.
//!
//! The conversions read the event as the SDK's lenient typed messages do
//! ([`switchyard_plugin_sdk::Event::message_lenient`]): a number where text
//! is expected is its text as serde_json prints it ([`number_text`]: `1.50`
//! → `1.5`), a boolean is `true`/`false`. A JSON string is copied into the
//! output as sent, escapes and all, which reads back as the same string.
//! Each rule is also given on `serde_json::Value` ([`lookup_path`],
//! [`id_string`], [`custom_value`], [`metadata_value`]): the reference the
//! borrowed forms are tested against.

use std::borrow::Cow;

use serde_json::Value;
use switchyard_plugin_sdk::EventView;
use switchyard_plugin_sdk::json::{Json, Kind, Object, ObjectWriter};
use switchyard_plugin_sdk::spec::Properties;

use crate::cache::IdentifyCache;
use crate::settings::{Config, CustomId};

/// The custom ID that carries Segment's `anonymousId`.
pub const STABLE_ID: &str = "stableID";
/// The custom ID a `group` call sets from its `groupId`.
pub const GROUP_ID: &str = "groupID";

/// The reason for a local rejection when an event names no user at all.
pub const MISSING_IDS: &str =
    "no userId, anonymousId or configured custom ID: Statsig needs a userID or a customID to attribute the event";

/// What a user is built from, borrowed from the event.
pub struct UserSource<'k> {
    /// The event: its `context` and the configured `custom_ids` paths.
    pub view: &'k EventView<'k>,
    /// `userId`, as sent.
    pub user_id: Option<Json<'k>>,
    /// `anonymousId`, as sent.
    pub anonymous_id: Option<Json<'k>>,
    /// An identify's own `traits` (they win over `context.traits`).
    pub traits: Option<Object<'k>>,
    /// A group's `groupId`, for `customIDs.groupID`: a value that reads as
    /// text ([`text_value`]).
    pub group_id: Option<Json<'k>>,
}

impl<'k> UserSource<'k> {
    /// The user of `view`'s event: its ids, no traits of its own, no group.
    pub fn new(view: &'k EventView<'k>) -> Self {
        UserSource {
            view,
            user_id: view.get("userId"),
            anonymous_id: view.get("anonymousId"),
            traits: None,
            group_id: None,
        }
    }

    /// `userId` and `anonymousId` as text ([`lenient_text`]): the identify
    /// cache's keys.
    pub fn ids(&self) -> [Option<Cow<'k, str>>; 2] {
        [self.user_id.and_then(lenient_text), self.anonymous_id.and_then(lenient_text)]
    }

    /// Writes the Statsig user as the `user` member of `event`. Empty
    /// fields are left out; the members are in the order `userID`,
    /// `email`, `ip`, `userAgent`, `country`, `locale`, `appVersion`,
    /// `custom`, `customIDs`, `statsigEnvironment`, and `custom` and
    /// `customIDs` are sorted by key. The ids and the `context` fields are
    /// written as text ([`write_text`]) when not blank.
    ///
    /// `custom` is the traits `cache` holds for the user's ids, overlaid
    /// with `context.traits`, overlaid with the identify's own traits,
    /// without `email` (which is `user.email` when the winning value is a
    /// string, not blank), each value converted by [`custom_value`]'s
    /// rules. `customIDs` is `stableID`, then `groupID`, then the
    /// configured paths, a later one overriding an earlier one of the same
    /// name.
    ///
    /// # Errors
    ///
    /// [`MISSING_IDS`] when the event has neither a userId, an anonymousId,
    /// nor any custom ID; nothing is written then.
    pub fn write(&self, config: &Config, cache: &IdentifyCache, event: &mut ObjectWriter<'_>) -> Result<(), String> {
        let user_id = self.user_id.and_then(text_value);
        let mut custom_ids: Vec<(&str, Json<'_>)> = Vec::with_capacity(2 + config.custom_ids.len());
        custom_ids.extend(self.anonymous_id.and_then(text_value).map(|id| (STABLE_ID, id)));
        custom_ids.extend(self.group_id.map(|id| (GROUP_ID, id)));
        for CustomId { name, path } in &config.custom_ids {
            if let Some(id) = custom_id_at(self.view, path) {
                custom_ids.push((name, id));
            }
        }
        if user_id.is_none() && custom_ids.is_empty() {
            return Err(MISSING_IDS.to_owned());
        }
        sort_last_wins(&mut custom_ids);

        let ctx = self.view.context();
        let [user_key, anonymous_key] = self.ids();
        let cached = cache.traits_of(user_key.as_deref(), anonymous_key.as_deref());
        let mut traits = merged_traits(cached, ctx.object("traits"), self.traits);
        let email = take_email(&mut traits);
        traits.retain(|(_, value)| !value.is_null());

        let mut user = event.object("user");
        if let Some(id) = user_id {
            write_text(&mut user, "userID", id);
        }
        match email {
            Some(Trait::Sent(email)) => {
                user.json("email", email);
            }
            Some(Trait::Cached(Value::String(email))) => {
                user.str("email", email);
            }
            _ => {}
        }
        let (location, app) = (ctx.object("location"), ctx.object("app"));
        for (key, value) in [
            ("ip", ctx.get("ip")),
            ("userAgent", ctx.get("userAgent")),
            ("country", location.get("country")),
            ("locale", ctx.get("locale")),
            ("appVersion", app.get("version")),
        ] {
            if let Some(value) = value.and_then(text_value) {
                write_text(&mut user, key, value);
            }
        }
        if !traits.is_empty() {
            let mut custom = user.object("custom");
            for (key, value) in &traits {
                value.write_custom(&mut custom, key)?;
            }
        }
        if !custom_ids.is_empty() {
            let mut ids = user.object("customIDs");
            for (name, id) in &custom_ids {
                write_text(&mut ids, name, *id);
            }
        }
        if let Some(tier) = &config.environment {
            user.object("statsigEnvironment").str("tier", tier);
        }
        Ok(())
    }
}

/// A trait value: sent on the event, or remembered by the identify cache.
#[derive(Clone, Copy)]
enum Trait<'k> {
    Sent(Json<'k>),
    Cached(&'k Value),
}

impl Trait<'_> {
    fn is_null(self) -> bool {
        match self {
            Trait::Sent(value) => value.is_null(),
            Trait::Cached(value) => value.is_null(),
        }
    }

    /// Whether the trait can be `user.email`: a string, not blank.
    fn is_email(self) -> bool {
        match self {
            Trait::Sent(value) => value.str().is_some_and(|s| !is_blank(&s)),
            Trait::Cached(value) => value.as_str().is_some_and(|s| !is_blank(s)),
        }
    }

    /// Writes `key` of `user.custom` by [`custom_value`]'s rules: strings,
    /// numbers, booleans and arrays of strings as they are (a sent one
    /// copied as sent), other arrays and objects as their JSON text
    /// ([`value_text`]); `null` writes nothing.
    ///
    /// # Errors
    ///
    /// When serde_json cannot write a cached value (a `Value` always can).
    fn write_custom(self, custom: &mut ObjectWriter<'_>, key: &str) -> Result<(), String> {
        match self {
            Trait::Sent(value) => match value.kind() {
                Kind::Null => {}
                Kind::Array
                    if !value.items().is_some_and(|mut items| items.all(|item| item.kind() == Kind::String)) =>
                {
                    custom.str(key, &value_text(value));
                }
                Kind::Object => {
                    custom.str(key, &value_text(value));
                }
                Kind::Array | Kind::String | Kind::Number | Kind::Bool => {
                    custom.json(key, value);
                }
            },
            Trait::Cached(value) => match value {
                Value::Null => {}
                Value::Array(items) if !items.iter().all(Value::is_string) => {
                    custom.str(key, &value.to_string());
                }
                Value::Object(_) => {
                    custom.str(key, &value.to_string());
                }
                Value::Array(_) | Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    custom.serialize(key, value)?;
                }
            },
        }
        Ok(())
    }
}

/// The user's traits by precedence, lowest first: the cached ones (the
/// anonymousId's, then the userId's), `context.traits`, an identify's own
/// traits; sorted by key, each key with the value of highest precedence
/// (`null` included: it hides the lower ones).
fn merged_traits<'t>(
    cached: [Option<&'t Properties>; 2],
    context_traits: Object<'t>,
    own: Option<Object<'t>>,
) -> Vec<(Cow<'t, str>, Trait<'t>)> {
    let mut traits = Vec::new();
    for cached in cached.into_iter().flatten() {
        traits.extend(cached.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Trait::Cached(v))));
    }
    for sent in std::iter::once(context_traits).chain(own) {
        traits.extend(sent.iter().map(|(k, v)| (k, Trait::Sent(v))));
    }
    sort_last_wins(&mut traits);
    traits
}

/// Takes `email` out of the merged `traits`, sorted by key: `user.email`
/// when it is a string, not blank.
fn take_email<'t>(traits: &mut Vec<(Cow<'_, str>, Trait<'t>)>) -> Option<Trait<'t>> {
    let i = traits.binary_search_by(|(k, _)| k.as_ref().cmp("email")).ok()?;
    Some(traits.remove(i).1).filter(|email| email.is_email())
}

/// Sorts `members` by key, stably, and keeps the last of each key: a
/// `BTreeMap` filled in that order.
pub fn sort_last_wins<K: Ord, V>(members: &mut Vec<(K, V)>) {
    members.sort_by(|a, b| a.0.cmp(&b.0));
    // `dedup_by` keeps the earlier of two equal keys: hand it the later value.
    members.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
}

/// `true` for a string of whitespace only (or none).
pub fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// A value as text, as the SDK's typed messages read a string field: a
/// string as itself, a number as serde_json prints it ([`number_text`]),
/// a boolean as `true`/`false`; [`None`] for `null`, arrays and objects.
pub fn lenient_text(value: Json<'_>) -> Option<Cow<'_, str>> {
    match value.kind() {
        Kind::Number => Some(number_text(value.raw())),
        _ => value.text(),
    }
}

/// The value, when it reads as text ([`lenient_text`]) that is not blank:
/// a string not blank, a number or a boolean.
pub fn text_value(value: Json<'_>) -> Option<Json<'_>> {
    // The SDK's reading differs from `lenient_text` in a number's digits
    // only, and no number reads as blank.
    value.text().is_some_and(|s| !is_blank(&s)).then_some(value)
}

/// The value, when it is an id: a string (not blank) or a number, which
/// [`write_text`] writes as its text. [`id_string`] on borrowed JSON.
pub fn id_value(value: Json<'_>) -> Option<Json<'_>> {
    text_value(value).filter(|v| v.kind() != Kind::Bool)
}

/// Writes `key` as the string `value` reads as ([`lenient_text`]): a JSON
/// string copied as sent, a number as [`number_text`], a boolean as
/// `"true"`/`"false"`. Other values write nothing.
pub fn write_text(object: &mut ObjectWriter<'_>, key: &str, value: Json<'_>) {
    match value.kind() {
        Kind::String => {
            object.json(key, value);
        }
        Kind::Number => {
            object.str(key, &number_text(value.raw()));
        }
        Kind::Bool => {
            object.str(key, value.raw());
        }
        Kind::Null | Kind::Array | Kind::Object => {}
    }
}

/// Writes `key` of `metadata` by [`metadata_value`]'s rules. Statsig
/// metadata values are strings: strings are copied as sent, numbers and
/// booleans become their text (`42`, `true`), arrays and objects their
/// JSON text ([`value_text`]), and `null` is left out.
pub fn write_metadata(metadata: &mut ObjectWriter<'_>, key: &str, value: Json<'_>) {
    match value.kind() {
        Kind::Array | Kind::Object => {
            metadata.str(key, &value_text(value));
        }
        Kind::Null | Kind::String | Kind::Number | Kind::Bool => write_text(metadata, key, value),
    }
}

/// The JSON text serde_json writes for the value it reads from `value`
/// (`Value::to_string`): compact, object keys sorted (a key sent twice
/// keeping its last value), numbers as [`number_text`] prints them.
pub fn value_text(value: Json<'_>) -> String {
    value.to_value().to_string()
}

/// A JSON number's text as serde_json prints the number it reads from it
/// (`Value::Number(n).to_string()`): an integer that fits 64 bits, or a
/// short decimal already in that form (`18.99`), as sent (borrowed);
/// anything else (`1.50`, `1e3`, `-0`, a 20-digit integer) as its shortest
/// round-trip form (`1.5`, `1000.0`, `-0.0`, `1e20`).
pub fn number_text(raw: &str) -> Cow<'_, str> {
    if is_plain_integer(raw) || is_shortest_decimal(raw) {
        return Cow::Borrowed(raw);
    }
    match serde_json::from_str::<serde_json::Number>(raw) {
        Ok(n) => Cow::Owned(n.to_string()),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// `true` for an integer serde_json reads as one and prints as sent: digits,
/// optionally after a `-`, within `u64` (`i64` when negative), not `-0`.
fn is_plain_integer(raw: &str) -> bool {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, raw),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if negative { raw.parse::<i64>().is_ok_and(|n| n != 0) } else { digits.parse::<u64>().is_ok() }
}

/// `true` for a decimal that serde_json prints as sent: `int.frac`
/// (optionally after a `-`), no exponent, at most 15 significant digits,
/// and laid out as its shortest round-trip form is (no trailing zero
/// but in `N.0`; at most 4 zeros after `0.`).
///
/// Why as sent: such a decimal is read exactly rounded (its digits fit the
/// 53-bit significand and 10^len(frac) is exact, so serde_json's one
/// division rounds correctly), and no other decimal of 15 digits or fewer
/// reads as the same `f64`, so the digits are the shortest that round-trip:
/// the ones ryu (serde_json's float printer) picks.
fn is_shortest_decimal(raw: &str) -> bool {
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let Some((int, frac)) = unsigned.split_once('.') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return false;
    }
    if frac == "0" {
        return int.len() <= 15;
    }
    if frac.ends_with('0') {
        return false;
    }
    if int == "0" {
        let zeros = frac.len() - frac.trim_start_matches('0').len();
        zeros <= 4 && frac.len() - zeros <= 15
    } else {
        int.len() + frac.len() <= 15
    }
}

/// The members of the event the SDK's lenient reading drops when they
/// are not objects ([`switchyard_plugin_sdk::spec::sanitize`]).
const OBJECT_MEMBERS: [&str; 4] = ["properties", "traits", "context", "integrations"];
/// The members it drops when they are not strings.
const STRING_MEMBERS: [&str; 5] = ["timestamp", "originalTimestamp", "sentAt", "receivedAt", "messageId"];
/// The parts of `context` it drops when they are not objects.
const CONTEXT_OBJECTS: [&str; 11] =
    ["app", "campaign", "device", "library", "location", "network", "os", "page", "referrer", "screen", "traits"];

/// The configured custom ID at `path` in the event, for [`write_text`]:
/// [`lookup_path`] then [`id_string`], on the event as the SDK's lenient
/// reading sees it (a `properties` that is not an object is not there, a
/// numeric or boolean `event` name is its text, and so on: see
/// [`switchyard_plugin_sdk::spec::sanitize`]).
pub fn custom_id_at<'v>(view: &'v EventView<'_>, path: &[String]) -> Option<Json<'v>> {
    let (first, rest) = path.split_first()?;
    let top = view.get(first)?;
    let key = first.as_str();
    if (OBJECT_MEMBERS.contains(&key) && top.kind() != Kind::Object)
        || (STRING_MEMBERS.contains(&key) && top.kind() != Kind::String)
    {
        return None;
    }
    if key == "event" {
        // The lenient reading turns a number or boolean name into its text
        // and drops any other non-string one; a string has no members.
        return if rest.is_empty() { text_value(top) } else { None };
    }
    let mut value = top;
    for (depth, segment) in rest.iter().enumerate() {
        value = match value.kind() {
            Kind::Object => {
                let next = value.object()?.get(segment)?;
                let dropped = depth == 0
                    && key == "context"
                    && CONTEXT_OBJECTS.contains(&segment.as_str())
                    && next.kind() != Kind::Object;
                if dropped {
                    return None;
                }
                next
            }
            Kind::Array => value.items()?.nth(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    id_value(value)
}

/// The value at a dotted path: object keys, or array indices (`items.0.id`).
pub fn lookup_path<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// An id from a string (not blank) or a number; anything else is no id.
pub fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !is_blank(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A `user.custom` value. Statsig takes strings, numbers, booleans and
/// arrays of strings: those pass as they are, other arrays and objects
/// become their JSON text, and `null` is left out.
pub fn custom_value(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Array(items) if items.iter().all(Value::is_string) => Some(Value::Array(items)),
        v @ (Value::Array(_) | Value::Object(_)) => Some(Value::String(v.to_string())),
        v => Some(v),
    }
}

/// A `metadata` value. Statsig metadata values are strings: strings pass,
/// numbers and booleans become their text (`42`, `true`), arrays and
/// objects their JSON text, and `null` is left out.
pub fn metadata_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        v @ (Value::Array(_) | Value::Object(_)) => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::Event;
    use switchyard_plugin_sdk::json::Document;

    use super::*;

    /// serde_json's text for the number it reads from `raw`.
    fn serde_number_text(raw: &str) -> String {
        serde_json::from_str::<serde_json::Number>(raw).unwrap().to_string()
    }

    #[test]
    fn number_text_prints_as_serde_json_does() {
        let samples = [
            "0",
            "-0",
            "7",
            "-3",
            "1.5",
            "1.50",
            "18.99",
            "5.0",
            "-0.0",
            "0.0",
            "1000.0",
            "1e3",
            "1E+2",
            "2.5e-3",
            "0.0001",
            "0.00001",
            "0.00012",
            "123456789012345",
            "123456789012345.0",
            "1234567890123456.0",
            "12345678901234.5",
            "1234567890123456",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.30000000000000004",
            "9007199254740993",
            "3.141592653589793",
        ];
        for raw in samples {
            assert_eq!(number_text(raw), serde_number_text(raw), "{raw}");
        }
        assert!(matches!(number_text("18.99"), Cow::Borrowed(_)), "a short decimal is not reparsed");
        assert!(matches!(number_text("-42"), Cow::Borrowed(_)));
        // Decimals of every layout the fast path accepts, and its borders.
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..50_000 {
            let int = match next(4) {
                0 => "0".to_owned(),
                _ => {
                    let digits = 1 + next(15) as u32;
                    (1 + next(10u64.pow(digits))).to_string()
                }
            };
            let frac_digits = 1 + next(17) as usize;
            let frac: String = (0..frac_digits).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let sign = if next(2) == 0 { "-" } else { "" };
            let raw = format!("{sign}{int}.{frac}");
            assert_eq!(number_text(&raw), serde_number_text(&raw), "{raw}");
        }
    }

    /// The borrowed conversions against the `Value` ones.
    #[test]
    fn borrowed_conversions_follow_the_value_rules() {
        let samples = [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1.50",
            "1e3",
            "18446744073709551616",
            r#""""#,
            r#""  ""#,
            r#""x""#,
            r#""caf\u00e9""#,
            "[]",
            r#"["a","b\n"]"#,
            r#"["a",1]"#,
            "[null]",
            r#"{"b":1,"a":{"c":[1.0]},"b":[2.50]}"#,
            "{}",
        ];
        for raw in samples {
            let doc = Document::parse(raw).unwrap();
            let json = doc.root();
            let value: Value = serde_json::from_str(raw).unwrap();
            let written = |write: &dyn Fn(&mut ObjectWriter<'_>)| {
                let mut out = Vec::new();
                write(&mut ObjectWriter::new(&mut out));
                serde_json::from_slice::<Value>(&out).unwrap().get("k").cloned()
            };
            assert_eq!(written(&|o| write_metadata(o, "k", json)), metadata_value(&value).map(Value::String), "{raw}");
            let sent = written(&|o| Trait::Sent(json).write_custom(o, "k").unwrap());
            assert_eq!(sent, custom_value(value.clone()), "{raw}");
            let cached = written(&|o| Trait::Cached(&value).write_custom(o, "k").unwrap());
            assert_eq!(cached, custom_value(value.clone()), "{raw}");
            let id = written(&|o| {
                if let Some(id) = id_value(json) {
                    write_text(o, "k", id);
                }
            });
            assert_eq!(id, id_string(&value).map(Value::String), "{raw}");
            let email = value.as_str().is_some_and(|s| !is_blank(s));
            assert_eq!((Trait::Sent(json).is_email(), Trait::Cached(&value).is_email()), (email, email), "{raw}");
        }
    }

    /// `custom_id_at` reads what `lookup_path` reads in the sanitized event.
    #[test]
    fn custom_ids_read_the_event_as_sanitized() {
        let text = r#"{"type":"track","messageId":"m","event":404,"sentAt":5,"userId":" ",
            "properties":[{"id":"p"}],"traits":{"slug":"acme","n":1.50,"list":["x",{"id":"deep"}]},
            "context":{"app":["v1"],"device":{"id":7},"groupId":"g","traits":"t","page":{"url":" "}}}"#;
        let event = Event::from_segment_json(text).unwrap();
        let view = event.view().unwrap();
        let sanitized = event.lenient_json().unwrap();
        for path in [
            "event",
            "event.x",
            "sentAt",
            "messageId",
            "userId",
            "properties.0.id",
            "traits.slug",
            "traits.n",
            "traits.list.0",
            "traits.list.1.id",
            "traits.list.+1.id",
            "traits.list.9",
            "context.app.0",
            "context.device.id",
            "context.groupId",
            "context.traits",
            "context.page.url",
            "type",
            "missing.path",
        ] {
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            let mut out = Vec::new();
            if let Some(id) = custom_id_at(&view, &path) {
                write_text(&mut ObjectWriter::new(&mut out), "k", id);
            }
            let read = (!out.is_empty()).then(|| serde_json::from_slice::<Value>(&out).unwrap()["k"].clone());
            let expected = lookup_path(&sanitized, &path).and_then(id_string).map(Value::String);
            assert_eq!(read, expected, "{path:?}");
        }
    }

    #[test]
    fn later_members_win_and_keys_sort() {
        let mut members = vec![("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5), ("b", 6)];
        sort_last_wins(&mut members);
        assert_eq!(members, [("a", 5), ("b", 6), ("c", 4)]);
    }
}
