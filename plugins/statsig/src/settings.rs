//! The destination's settings and their validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_plugin_sdk::{InitError, settings};

/// Statsig's event-logging base URL.
pub const DEFAULT_ENDPOINT: &str = "https://events.statsigapi.net";
/// The path under `endpoint` that takes events.
pub const LOG_EVENT_PATH: &str = "/v1/log_event";
/// Events per request when `max_events_per_request` is not set: what
/// Statsig's server SDKs flush by default.
pub const DEFAULT_MAX_EVENTS: usize = 500;
/// The largest `max_events_per_request` accepted: the biggest buffer
/// Statsig's server SDKs flush in one request.
pub const MAX_EVENTS: usize = 1000;
/// Cached identify entries when `identify_cache_users` is not set.
pub const DEFAULT_CACHE_USERS: usize = 10_000;
/// The largest `identify_cache_users` accepted, to keep the cache within a
/// plugin's memory quota.
pub const MAX_CACHE_USERS: usize = 100_000;
/// The prefix of every Statsig server secret key.
pub const SECRET_PREFIX: &str = "secret-";

/// The settings, as the operator writes them under `settings = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Statsig server secret key (`secret-...`). A secret: never logged,
    /// never in an error or an outcome reason.
    pub server_secret: String,
    /// Base URL; requests go to `{endpoint}/v1/log_event`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The Statsig environment tier (`production`, `staging`, ...) set on
    /// every event's user.
    #[serde(default)]
    pub environment: Option<String>,
    /// Statsig custom ID name → dotted path into the Segment event JSON.
    #[serde(default)]
    pub custom_ids: BTreeMap<String, String>,
    /// Events per `log_event` request (1..=1000).
    #[serde(default = "default_max_events")]
    pub max_events_per_request: usize,
    /// Users (userIds and anonymousIds) whose identify traits are remembered
    /// (0..=100000; 0 turns the cache off).
    #[serde(default = "default_cache_users")]
    pub identify_cache_users: usize,
    /// Send Segment's `Experiment Viewed` as a `statsig::config_exposure`
    /// (default) rather than as a plain event.
    #[serde(default = "yes")]
    pub experiment_exposures: bool,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn default_max_events() -> usize {
    DEFAULT_MAX_EVENTS
}

fn default_cache_users() -> usize {
    DEFAULT_CACHE_USERS
}

fn yes() -> bool {
    true
}

/// One configured custom ID: where to find it in the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomId {
    /// The Statsig custom ID name (`user.customIDs` key).
    pub name: String,
    /// The path, split at the dots: `["context", "groupId"]`.
    pub path: Vec<String>,
}

/// Settings checked and resolved, ready for delivery.
#[derive(Debug, Clone)]
pub struct Config {
    pub server_secret: String,
    /// The full `.../v1/log_event` URL.
    pub url: String,
    pub environment: Option<String>,
    pub custom_ids: Vec<CustomId>,
    pub max_events: usize,
    pub cache_users: usize,
    pub experiment_exposures: bool,
}

impl TryFrom<Settings> for Config {
    type Error = InitError;

    fn try_from(s: Settings) -> Result<Self, InitError> {
        let server_secret = s.server_secret.trim().to_owned();
        if server_secret.len() <= SECRET_PREFIX.len()
            || !server_secret.starts_with(SECRET_PREFIX)
            || server_secret.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InitError::invalid_settings(
                "`server_secret` must be a Statsig server secret key: it starts with `secret-` \
                 (client and console keys are not accepted)",
            ));
        }
        let url = format!("{}{LOG_EVENT_PATH}", settings::base_url("endpoint", &s.endpoint)?);
        let environment = match s.environment {
            Some(tier) if tier.trim().is_empty() => {
                return Err(InitError::invalid_settings("`environment` must not be empty when set"));
            }
            Some(tier) => Some(tier.trim().to_owned()),
            None => None,
        };
        let mut custom_ids = Vec::with_capacity(s.custom_ids.len());
        for (name, path) in s.custom_ids {
            if name.trim().is_empty() {
                return Err(InitError::invalid_settings("`custom_ids`: a custom ID name must not be empty"));
            }
            let segments: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
            if segments.iter().any(|seg| seg.is_empty()) {
                return Err(InitError::invalid_settings(format!(
                    "`custom_ids.{name}` must be a dotted path such as `context.groupId` (no empty segments)"
                )));
            }
            custom_ids.push(CustomId { name, path: segments });
        }
        if !(1..=MAX_EVENTS).contains(&s.max_events_per_request) {
            return Err(InitError::invalid_settings(format!("`max_events_per_request` must be 1..={MAX_EVENTS}")));
        }
        if s.identify_cache_users > MAX_CACHE_USERS {
            return Err(InitError::invalid_settings(format!(
                "`identify_cache_users` must be 0..={MAX_CACHE_USERS} (0 turns the cache off)"
            )));
        }
        Ok(Config {
            server_secret,
            url,
            environment,
            custom_ids,
            max_events: s.max_events_per_request,
            cache_users: s.identify_cache_users,
            experiment_exposures: s.experiment_exposures,
        })
    }
}
