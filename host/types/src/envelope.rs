//! The event the host carries from ingest to every destination.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::EventType;

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
