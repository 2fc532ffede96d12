//! The Statsig user every event carries, and the value conversions Statsig's
//! types need.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use switchyard_plugin_sdk::spec::{Context, Properties};

use crate::settings::{Config, CustomId};

/// The custom ID that carries Segment's `anonymousId`.
pub const STABLE_ID: &str = "stableID";

/// The reason for a local rejection when an event names no user at all.
pub const MISSING_IDS: &str =
    "no userId, anonymousId or configured custom ID: Statsig needs a userID or a customID to attribute the event";

/// `user.statsigEnvironment`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    pub tier: String,
}

/// A Statsig user, as `log_event` takes it. Empty fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(rename = "userID", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub custom: Map<String, Value>,
    #[serde(rename = "customIDs", skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_ids: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statsig_environment: Option<Environment>,
}

/// What a user is built from.
pub struct UserSource<'a> {
    pub user_id: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub context: &'a Context,
    /// An identify's own `traits` (they win over `context.traits`).
    pub traits: Option<&'a Properties>,
    /// Traits remembered from earlier identifies of this user.
    pub cached: Properties,
    /// Extra custom IDs the event type adds (`groupID` for a group).
    pub extra_ids: Vec<(&'static str, String)>,
    /// The whole (sanitized) Segment event, for `custom_ids` paths.
    pub raw: &'a Value,
}

impl UserSource<'_> {
    /// Builds the Statsig user.
    ///
    /// # Errors
    ///
    /// [`MISSING_IDS`] when the event has neither a userId, an anonymousId,
    /// nor any custom ID.
    pub fn build(self, config: &Config) -> Result<User, String> {
        let ctx = self.context;
        let mut user = User {
            user_id: non_empty(self.user_id),
            ip: non_empty(ctx.ip.as_deref()),
            user_agent: non_empty(ctx.user_agent.as_deref()),
            country: non_empty(ctx.location.country.as_deref()),
            locale: non_empty(ctx.locale.as_deref()),
            app_version: non_empty(ctx.app.version.as_deref()),
            statsig_environment: config.environment.clone().map(|tier| Environment { tier }),
            ..User::default()
        };
        // Precedence, lowest first: cached identify traits, context.traits,
        // the identify's own traits.
        let mut traits = self.cached;
        traits.extend(ctx.traits.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(own) = self.traits {
            traits.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        user.email = traits.remove("email").and_then(|v| v.as_str().and_then(|s| non_empty(Some(s))));
        user.custom = traits.into_iter().filter_map(|(k, v)| custom_value(v).map(|v| (k, v))).collect();

        if let Some(anonymous_id) = non_empty(self.anonymous_id) {
            user.custom_ids.insert(STABLE_ID.to_owned(), anonymous_id);
        }
        for (name, value) in self.extra_ids {
            user.custom_ids.insert(name.to_owned(), value);
        }
        for CustomId { name, path } in &config.custom_ids {
            if let Some(id) = lookup_path(self.raw, path).and_then(id_string) {
                user.custom_ids.insert(name.clone(), id);
            }
        }
        if user.user_id.is_none() && user.custom_ids.is_empty() {
            return Err(MISSING_IDS.to_owned());
        }
        Ok(user)
    }
}

/// `s` unless it is missing or blank.
pub fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty()).map(str::to_owned)
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
        Value::String(s) => non_empty(Some(s)),
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
