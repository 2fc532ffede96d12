//! The destination's settings and their validation.

use serde::Deserialize;
use switchyard_plugin_sdk::{InitError, settings};

/// Amplitude's hard limit on events per HTTP V2 request.
pub const MAX_EVENTS: usize = 2000;
/// Amplitude's limit on the size of one HTTP V2 request body.
pub const MAX_BYTES: usize = 1_000_000;
/// The smallest `max_bytes_per_request` accepted: below this not even a
/// modest event fits.
pub const MIN_BYTES: usize = 1024;
/// Amplitude's minimum id length when `min_id_length` is not set.
pub const DEFAULT_MIN_ID_LENGTH: u32 = 5;

/// The settings, as the operator writes them under `settings = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Amplitude project API key. A secret: never logged or echoed.
    pub api_key: String,
    /// `"us"` (default) or `"eu"`: which Amplitude data center.
    #[serde(default)]
    pub region: Option<String>,
    /// An absolute base URL that replaces the region's (a proxy, a test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Sent as `options.min_id_length`; ids shorter than it are rejected locally.
    #[serde(default)]
    pub min_id_length: Option<u32>,
    /// Send `alias` calls to `/usermap`; when false they are a no-op.
    #[serde(default)]
    pub alias_usermap: bool,
    /// The group trait holding the group type.
    #[serde(default)]
    pub group_type_trait: Option<String>,
    /// The group trait holding the group value (name).
    #[serde(default)]
    pub group_value_trait: Option<String>,
    /// The group type when `group_type_trait` is unset or absent.
    #[serde(default = "default_group_type")]
    pub default_group_type: String,
    /// Emit one `Product Purchased` event per product of a track's `products`.
    #[serde(default = "yes")]
    pub track_products: bool,
    /// Where an order's revenue is counted: once on the track itself (its
    /// `revenue`) when false, on its `Product Purchased` events (`price` ×
    /// `quantity`) when true.
    #[serde(default)]
    pub track_revenue_per_product: bool,
    /// Events per `/2/httpapi` request (1..=2000).
    #[serde(default = "default_max_events")]
    pub max_events_per_request: usize,
    /// Bytes per request body (1024..=1000000).
    #[serde(default = "default_max_bytes")]
    pub max_bytes_per_request: usize,
}

fn default_group_type() -> String {
    "group".to_owned()
}

fn yes() -> bool {
    true
}

fn default_max_events() -> usize {
    MAX_EVENTS
}

fn default_max_bytes() -> usize {
    MAX_BYTES
}

/// The three Amplitude URLs a destination posts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// `.../2/httpapi`: events.
    pub httpapi: String,
    /// `.../groupidentify`: group properties.
    pub groupidentify: String,
    /// `.../usermap`: aliases.
    pub usermap: String,
}

impl Urls {
    /// The URLs under one base, e.g. `https://api.eu.amplitude.com`.
    fn under(base: &str) -> Self {
        Urls {
            httpapi: format!("{base}/2/httpapi"),
            groupidentify: format!("{base}/groupidentify"),
            usermap: format!("{base}/usermap"),
        }
    }
}

/// Settings checked and resolved, ready for delivery.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_key: String,
    pub urls: Urls,
    /// `min_id_length` as configured (sent in `options` when set).
    pub min_id_length: Option<u32>,
    pub alias_usermap: bool,
    pub group_type_trait: Option<String>,
    pub group_value_trait: Option<String>,
    pub default_group_type: String,
    pub track_products: bool,
    pub track_revenue_per_product: bool,
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Config {
    /// The minimum id length Amplitude applies.
    pub fn effective_min_id_length(&self) -> usize {
        self.min_id_length.unwrap_or(DEFAULT_MIN_ID_LENGTH) as usize
    }
}

impl TryFrom<Settings> for Config {
    type Error = InitError;

    fn try_from(s: Settings) -> Result<Self, InitError> {
        let api_key = s.api_key.trim().to_owned();
        if api_key.is_empty() {
            return Err(InitError::invalid_settings("`api_key` must not be empty"));
        }
        let region = s.region.as_deref().map(|r| r.trim().to_ascii_lowercase());
        let regional = match region.as_deref() {
            None | Some("us") => "https://api2.amplitude.com",
            Some("eu") => "https://api.eu.amplitude.com",
            Some(_) => return Err(InitError::invalid_settings("`region` must be \"us\" or \"eu\"")),
        };
        let mut urls = Urls::under(regional);
        // The US usermap lives on api.amplitude.com, not api2.
        if regional == "https://api2.amplitude.com" {
            urls.usermap = "https://api.amplitude.com/usermap".to_owned();
        }
        if let Some(endpoint) = &s.endpoint {
            urls = Urls::under(&settings::base_url("endpoint", endpoint)?);
        }
        if s.min_id_length == Some(0) {
            return Err(InitError::invalid_settings("`min_id_length` must be at least 1"));
        }
        if !(1..=MAX_EVENTS).contains(&s.max_events_per_request) {
            return Err(InitError::invalid_settings(format!("`max_events_per_request` must be 1..={MAX_EVENTS}")));
        }
        if !(MIN_BYTES..=MAX_BYTES).contains(&s.max_bytes_per_request) {
            return Err(InitError::invalid_settings(format!(
                "`max_bytes_per_request` must be {MIN_BYTES}..={MAX_BYTES}"
            )));
        }
        for (name, value) in [("group_type_trait", &s.group_type_trait), ("group_value_trait", &s.group_value_trait)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(InitError::invalid_settings(format!("`{name}` must not be empty when set")));
            }
        }
        if s.default_group_type.trim().is_empty() {
            return Err(InitError::invalid_settings("`default_group_type` must not be empty"));
        }
        Ok(Config {
            api_key,
            urls,
            min_id_length: s.min_id_length,
            alias_usermap: s.alias_usermap,
            group_type_trait: s.group_type_trait,
            group_value_trait: s.group_value_trait,
            default_group_type: s.default_group_type,
            track_products: s.track_products,
            track_revenue_per_product: s.track_revenue_per_product,
            max_events: s.max_events_per_request,
            max_bytes: s.max_bytes_per_request,
        })
    }
}
