//! The admin API's wire types: what each endpoint answers, shared by the
//! server (`admin`), its client (`client`, behind the
//! `switchyard status|reload|…` commands) and the web console. Plain data,
//! depending on nothing else in the host, so it can move into a crate of
//! its own.
//!
//! Every error answer is an [`ErrorReply`]; its HTTP status says which
//! kind (401 no token, 404 unknown destination, 409 still configured, 422
//! refused reload, 503 the log refused an append).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /admin/destinations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationList {
    pub destinations: Vec<DestinationView>,
}

/// One destination: configured (active, paused or quarantined), or
/// removed from the config with its undelivered events kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationView {
    pub name: String,
    /// `active`, `paused`, `quarantined` or `removed`.
    pub state: String,
    /// Why it is quarantined or removed.
    pub reason: Option<String>,
    /// Events in the log it has not finished; `None` when unknown.
    pub backlog: Option<u64>,
    /// Bytes of the log it holds from deletion (whole segments, from the
    /// one holding its position); `None` when the log cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
    /// The plugin version it runs; `None` for a removed destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginView>,
    /// The connector package it runs, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Events delivered by each plugin version (by hash) since start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delivered_by_plugin: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_failures: Option<u64>,
    /// When a call last succeeded / failed, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl DestinationView {
    /// What `switchyard status` shows as the reason: why it is quarantined
    /// or removed, else a refused reload, else the last failure.
    pub fn why(&self) -> Option<String> {
        let refused =
            self.plugin.as_ref().and_then(|p| p.refused.as_ref()).map(|r| format!("reload refused: {}", r.reason));
        self.reason.clone().or(refused).or_else(|| self.last_failure.clone())
    }
}

/// A destination's plugin version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginView {
    /// SHA-256 of the `.wasm`, hex.
    pub hash: String,
    /// The contract version it was built against.
    pub contract: String,
    /// When it was loaded, ms since the Unix epoch.
    pub loaded_at_ms: i64,
    /// The last version or settings a reload refused, and why.
    pub refused: Option<RefusalView>,
}

/// The connector package a destination runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectorView {
    /// Reverse-DNS, e.g. `com.amplitude.destination`.
    pub id: String,
    pub version: String,
    pub publisher: String,
    /// "signed by <name> (key <id>)", or why it runs unsigned.
    pub signature: String,
    /// What it asks for and the destination does not grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ungranted: Vec<String>,
}

/// A plugin version or config that a reload did not adopt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalView {
    /// The refused plugin's hash, when it could be read.
    pub plugin_hash: Option<String>,
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// `POST /admin/reload`: applied (200, with what changed) or refused
/// (422, with why; nothing changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub reloaded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ReloadChanges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an applied reload changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Destinations with a new plugin version or config.
    pub updated: Vec<String>,
    pub sources_changed: bool,
}

/// `POST /admin/destinations/{name}/pause|resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseReply {
    pub destination: String,
    pub paused: bool,
}

/// `DELETE /admin/destinations/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeReply {
    pub destination: String,
    pub purged: bool,
    pub dropped_events: u64,
}

/// `GET /admin/destinations/{name}/dead-letters`: the oldest (up to 1000)
/// and how many there are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    pub destination: String,
    pub count: u64,
    pub dead_letters: Vec<DeadLetterView>,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Its position in the destination's dead-letter store.
    pub seq: u64,
    pub reason: String,
    pub attempts: u32,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub failed_at_ms: i64,
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// The Segment event type.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `POST /admin/destinations/{name}/dead-letters/replay?limit=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReply {
    pub replayed: u64,
    pub remaining: u64,
}

/// `/health` and `/ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReply {
    pub status: String,
}

/// `/ready`: whether ingest accepts events now, and if not why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyReply {
    pub ready: bool,
    /// `disk_below_floor`, `log_unavailable` or `shutting_down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Any error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// `GET /admin/sources/{name}/violations`: what the source's tracking
/// plan found since the server started, most recently seen first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViolationList {
    pub source: String,
    /// The plan file checking the source's events, if any.
    pub tracking_plan: Option<String>,
    pub blocked: u64,
    pub forwarded: u64,
    pub violations: Vec<ViolationView>,
}

/// One kind of violation of one field of one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViolationView {
    pub event: String,
    pub field: String,
    /// `unplanned_event`, `unplanned_property`, `required_missing`,
    /// `datatype_mismatch`, `additional_properties`, `pattern`, `enum`,
    /// `format`, `range` or `unknown`.
    pub kind: String,
    pub count: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub description: String,
    /// The latest payloads, newest first.
    pub samples: Vec<serde_json::Value>,
}

/// `GET /admin/audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub generated_at_ms: i64,
    pub findings: Vec<AuditFinding>,
}

/// One thing the audit found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditFinding {
    /// `orphaned`, `pii`, `unused_grant`, `removed_holding_events` or
    /// `no_tracking_plan`.
    pub kind: String,
    /// The destination or source it is about.
    pub subject: String,
    pub detail: String,
    /// The fields or origins concerned, for automation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_destination_has_no_plugin_fields() {
        let v = DestinationView {
            name: "gone".into(),
            state: "removed".into(),
            reason: Some("removed from the config".into()),
            backlog: Some(5),
            ..Default::default()
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "gone", "state": "removed", "reason": "removed from the config", "backlog": 5})
        );
        assert_eq!(serde_json::from_value::<DestinationView>(json).unwrap(), v);
    }

    #[test]
    fn why_prefers_the_reason_then_a_refusal_then_the_last_failure() {
        let mut v = DestinationView { last_failure: Some("timeout".into()), ..Default::default() };
        assert_eq!(v.why().as_deref(), Some("timeout"));
        v.plugin = Some(PluginView {
            refused: Some(RefusalView { plugin_hash: None, reason: "init refused".into(), at_ms: 1 }),
            ..Default::default()
        });
        assert_eq!(v.why().as_deref(), Some("reload refused: init refused"));
        v.reason = Some("quarantined".into());
        assert_eq!(v.why().as_deref(), Some("quarantined"));
    }
}
