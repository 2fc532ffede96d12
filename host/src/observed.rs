//! What a destination's worker is seen doing, for the audit
//! (`switchyard audit`): the granted origins it calls, and the fields on the
//! PII list in the events it is handed (after its filters).
//!
//! Fields are looked for in the first [`ALWAYS_SCANNED`] events a
//! destination is handed after start, then in one in [`SCAN_ONE_IN`]: the
//! audit finds fields that flow regularly, at a cost the delivery path
//! does not notice.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde_json::Value;
use switchyard_runtime::capabilities::http::CalledOrigins;

/// Events scanned for PII fields after start, before sampling.
pub const ALWAYS_SCANNED: u64 = 1000;
/// Past those, one event in this many is scanned.
pub const SCAN_ONE_IN: u64 = 100;
/// Distinct PII field paths kept per destination (clients choose the
/// keys: they cannot grow the set past this).
pub const MAX_PII_FIELDS: usize = 100;

/// What one destination's worker sees, live: the origins it calls and
/// the PII fields in the events it is handed.
#[derive(Debug, Default)]
pub struct Observed {
    pub origins: Arc<CalledOrigins>,
    pii_names: RwLock<Arc<HashSet<String>>>,
    handed: AtomicU64,
    pii_seen: Mutex<BTreeSet<String>>,
}

/// `Email`, `e-mail`, `first_name` → `email`, `email`, `firstname`.
fn normalized(name: &str) -> String {
    name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

impl Observed {
    /// The field names that count as personal data.
    pub fn set_pii_fields(&self, names: &[String]) {
        let set: HashSet<String> = names.iter().map(|n| normalized(n)).collect();
        *self.pii_names.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    /// Notes the PII fields of an event about to be delivered (sampled,
    /// see the module docs).
    pub fn observe(&self, json: &str) {
        let n = self.handed.fetch_add(1, Ordering::Relaxed);
        if n >= ALWAYS_SCANNED && !n.is_multiple_of(SCAN_ONE_IN) {
            return;
        }
        let names = self.pii_names.read().unwrap_or_else(PoisonError::into_inner).clone();
        if names.is_empty() {
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(json) else { return };
        let mut found = Vec::new();
        let mut look = |prefix: &str, object: Option<&Value>, deeper: bool| {
            let Some(Value::Object(o)) = object else { return };
            for (k, v) in o {
                if names.contains(&normalized(k)) {
                    found.push(format!("{prefix}.{k}"));
                } else if deeper && let Value::Object(inner) = v {
                    found.extend(
                        inner
                            .keys()
                            .filter(|k2| names.contains(&normalized(k2)))
                            .map(|k2| format!("{prefix}.{k}.{k2}")),
                    );
                }
            }
        };
        look("properties", event.get("properties"), true);
        look("traits", event.get("traits"), true);
        // In context only its own keys (ip) and the traits it carries:
        // library, app and os have names that are not personal.
        look("context", event.get("context"), false);
        look("context.traits", event.pointer("/context/traits"), false);
        if !found.is_empty() {
            let mut seen = self.pii_seen.lock().unwrap_or_else(PoisonError::into_inner);
            for f in found {
                if seen.len() >= MAX_PII_FIELDS {
                    break;
                }
                seen.insert(f);
            }
        }
    }

    pub fn pii_seen(&self) -> BTreeSet<String> {
        self.pii_seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pii_fields_are_found_in_properties_traits_and_context() {
        let o = Observed::default();
        o.set_pii_fields(&["email".into(), "ip".into(), "first_name".into()]);
        o.observe(
            r#"{"traits":{"E-mail":"a@b","plan":"pro"},"properties":{"billing":{"firstName":"A"}},
                "context":{"ip":"1.2.3.4","library":{"name":"x","email":"not looked at"}}}"#,
        );
        let found: Vec<String> = o.pii_seen().into_iter().collect();
        assert_eq!(found, ["context.ip", "properties.billing.firstName", "traits.E-mail"]);
    }

    #[test]
    fn past_the_first_events_one_in_a_hundred_is_scanned() {
        let o = Observed::default();
        o.set_pii_fields(&["email".into()]);
        for _ in 0..ALWAYS_SCANNED + 1 {
            o.observe(r#"{"properties":{}}"#);
        }
        o.observe(r#"{"properties":{"email":"a@b"}}"#);
        assert!(o.pii_seen().is_empty());
        for _ in 0..SCAN_ONE_IN {
            o.observe(r#"{"properties":{"email":"a@b"}}"#);
        }
        assert_eq!(o.pii_seen().len(), 1);
    }
}
