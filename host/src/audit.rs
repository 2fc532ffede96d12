//! The destination audit: what `switchyard audit` and `GET /admin/audit`
//! report.
//!
//! - **orphaned**: a destination that delivered nothing for
//!   `governance.audit.orphaned_after` (counted from when it was first
//!   configured, if it never delivered);
//! - **pii**: a destination that received fields on the PII list
//!   (`governance.audit.pii_fields`) — seen in what it was handed, after
//!   its filters, so its filters do not drop them;
//! - **unused_grant**: an `allow_http` origin it never called;
//! - **removed_holding_events**: a destination removed from the config
//!   whose undelivered events the log still keeps;
//! - **no_tracking_plan**: a source whose events nothing checks.
//!
//! What each destination was seen doing is kept in a [`Ledger`], saved to
//! `data_dir/audit.json` every [`SAVE_EVERY`] and at shutdown, so that
//! "nothing for 7 days" survives restarts.
//!
//! What each worker sees live is in [`crate::observed`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin_api::{AuditFinding, AuditReport};
use crate::config::Config;
use crate::metrics::DestinationStats;

/// How often the ledger is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);

/// What the audit remembers of one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// When it was first configured, ms since the epoch.
    pub since_ms: i64,
    pub last_delivered_ms: Option<i64>,
    pub origins_called: BTreeSet<String>,
    pub pii_fields: BTreeSet<String>,
}

/// Every destination's [`Seen`], by name, saved in `data_dir/audit.json`.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl Ledger {
    /// The ledger saved under `data_dir`, or an empty one (a ledger that
    /// cannot be read is logged and started afresh: it is advisory).
    pub fn open(data_dir: &Path) -> Ledger {
        let path = data_dir.join("audit.json");
        let seen = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "audit ledger unreadable: starting afresh");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Ledger { path, seen: Mutex::new(seen) }
    }

    /// Folds what the live destinations saw into the ledger.
    pub fn merge(&self, destinations: &[Arc<DestinationStats>], now_ms: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for d in destinations {
            let entry = seen.entry(d.name.clone()).or_insert_with(|| Seen { since_ms: now_ms, ..Seen::default() });
            let last = d.status().last_success_ms;
            entry.last_delivered_ms = entry.last_delivered_ms.max(last);
            entry.origins_called.extend(d.audit.origins.list());
            let room = crate::observed::MAX_PII_FIELDS.saturating_sub(entry.pii_fields.len());
            entry.pii_fields.extend(d.audit.pii_seen().into_iter().take(room));
        }
    }

    /// Writes the ledger (to a temporary file renamed into place).
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn save(&self) -> std::io::Result<()> {
        let text = {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            serde_json::to_vec_pretty(&*seen).map_err(std::io::Error::other)?
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// The audit of `config`'s destinations and sources, with `removed`,
    /// the destinations gone from the config and the events the log
    /// keeps for each.
    pub fn report(
        &self,
        config: &Config,
        destinations: &[Arc<DestinationStats>],
        removed: &[(String, u64)],
        now_ms: i64,
    ) -> AuditReport {
        self.merge(destinations, now_ms);
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let audit = &config.governance.audit;
        let mut findings = Vec::new();
        let mut finding = |kind: &str, subject: &str, detail: String, fields: Vec<String>| {
            findings.push(AuditFinding { kind: kind.to_owned(), subject: subject.to_owned(), detail, fields });
        };
        for d in &config.destinations {
            let Some(s) = seen.get(&d.name) else { continue };
            let quiet_ms = now_ms - s.last_delivered_ms.unwrap_or(s.since_ms);
            if quiet_ms > audit.orphaned_after.as_millis() as i64 {
                let detail = match s.last_delivered_ms {
                    Some(_) => format!("delivered nothing for {}", human(quiet_ms)),
                    None => format!("has delivered nothing since it was configured {} ago", human(quiet_ms)),
                };
                finding("orphaned", &d.name, detail, Vec::new());
            }
            if !s.pii_fields.is_empty() {
                let fields: Vec<String> = s.pii_fields.iter().cloned().collect();
                let detail = format!("receives {} (on the PII list; its filters do not drop them)", fields.join(", "));
                finding("pii", &d.name, detail, fields);
            }
            let unused: Vec<String> =
                d.allow_http.iter().map(ToString::to_string).filter(|o| !s.origins_called.contains(o)).collect();
            if !unused.is_empty() {
                let detail = format!("allow_http grants {} but it never called them", unused.join(", "));
                finding("unused_grant", &d.name, detail, unused);
            }
        }
        for (name, events) in removed.iter().filter(|(_, n)| *n > 0) {
            let detail = format!(
                "removed from the config; the log keeps its {events} undelivered events (DELETE /admin/destinations/{name})"
            );
            finding("removed_holding_events", name, detail, Vec::new());
        }
        // Sources that receive others' blocked events and violations need
        // no plan of their own.
        let targets = crate::registry::deploy::forwarding_targets(config);
        for s in config.sources.iter().filter(|s| s.plan.is_none() && !targets.contains(&s.name)) {
            finding("no_tracking_plan", &s.name, "no tracking_plan checks its events".into(), Vec::new());
        }
        AuditReport { generated_at_ms: now_ms, findings }
    }
}

/// `90061000` → `1d 1h`.
fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!([human(5_000), human(120_000), human(3_660_000), human(90_061_000)], ["5s", "2m", "1h 1m", "1d 1h"]);
    }
}
