//! The [`Destination`]: each batch becomes one load per source schema
//! through the host's `warehouse` capability.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_plugin_sdk::warehouse::{self, LoadError};
use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome};

use crate::naming::sql_name;
use crate::plan::plan;

/// The warehouse destination's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Load every event into this schema instead of one schema per source
    /// (named after the source, in snake_case).
    #[serde(default)]
    pub schema: Option<String>,
}

/// Segment events into the warehouse, in Segment's schema.
#[derive(Debug)]
pub struct Warehouse {
    schema: Option<String>,
}

impl Destination for Warehouse {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, InitError> {
        let schema = match settings.schema {
            None => None,
            Some(s) => Some(
                sql_name(&s).ok_or_else(|| InitError::invalid_settings("`schema` must contain a letter or a digit"))?,
            ),
        };
        Ok(Warehouse { schema })
    }

    /// Groups the batch by schema; each group is planned and loaded in one
    /// transaction, so its events share an outcome — except those that
    /// cannot be mapped at all, which are rejected with the reason.
    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Delivered; batch.len()];
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in batch.iter().enumerate() {
            let schema = self.schema.clone().or_else(|| sql_name(&e.source)).unwrap_or_else(|| "default".to_owned());
            groups.entry(schema).or_default().push(i);
        }
        for (schema, members) in groups {
            let events: Vec<Event> = members.iter().map(|&i| batch[i].clone()).collect();
            let (plan, unmapped) = plan(&schema, &events);
            let mut mapped = vec![true; members.len()];
            for (j, reason) in unmapped {
                mapped[j] = false;
                outcomes[members[j]] = Outcome::Rejected(reason);
            }
            if plan.tables.is_empty() {
                continue;
            }
            let tables: Vec<warehouse::TableRows> = plan.tables.into_iter().map(|t| t.load).collect();
            let outcome = match warehouse::load(&schema, &tables) {
                Ok(_) => Outcome::Delivered,
                // Kept for a retry: the operator may grant a warehouse, or
                // the warehouse come back.
                Err(e @ (LoadError::NotGranted | LoadError::Unavailable(_))) => Outcome::retry(e.to_string()),
                Err(e @ LoadError::Invalid(_)) => Outcome::Rejected(e.to_string()),
            };
            for (j, &i) in members.iter().enumerate() {
                if mapped[j] {
                    outcomes[i] = outcome.clone();
                }
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchyard_plugin_sdk::testing::{Harness, event};
    use switchyard_plugin_sdk::warehouse::LoadReport;

    use super::*;

    fn track(id: &str, source: &str) -> Event {
        let mut e = event(json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": id,
            "properties": {"revenue": 12.5}}));
        e.source = source.to_owned();
        e
    }

    fn granted(h: &mut Harness<Warehouse>) {
        h.warehouse(|_, tables| {
            Ok(LoadReport { inserted: tables.iter().map(|t| t.rows.len() as u64).sum(), ..Default::default() })
        });
    }

    #[test]
    fn one_load_per_source_schema() {
        let mut h = Harness::<Warehouse>::new(json!({})).unwrap();
        granted(&mut h);
        let out = h.deliver(vec![track("a", "Web App"), track("b", "ios"), track("c", "Web App")]);
        assert_eq!(out, vec![Outcome::Delivered; 3]);
        let loads = h.loads();
        let schemas: Vec<&str> = loads.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(schemas, ["ios", "web_app"]);
        let web = &loads[1].1;
        let tracks = web.iter().find(|t| t.table == "tracks").unwrap();
        assert_eq!(tracks.rows.len(), 2);
        let order = web.iter().find(|t| t.table == "order_completed").unwrap();
        let revenue = order.columns.iter().position(|(n, _)| n == "revenue").unwrap();
        assert_eq!(order.columns[revenue].1, warehouse::ColumnType::Double);
        assert_eq!(order.rows[0][revenue], warehouse::Value::Double(12.5));
    }

    #[test]
    fn a_fixed_schema_setting_takes_every_source() {
        let mut h = Harness::<Warehouse>::new(json!({"schema": "Analytics"})).unwrap();
        granted(&mut h);
        h.deliver(vec![track("a", "web"), track("b", "ios")]);
        let loads = h.loads();
        assert_eq!(loads.len(), 1);
        assert_eq!(loads[0].0, "analytics");
        assert!(Harness::<Warehouse>::new(json!({"schema": "🎉"})).is_err());
        assert!(Harness::<Warehouse>::new(json!({"bogus": 1})).is_err());
    }

    #[test]
    fn outcomes_follow_the_load() {
        let mut h = Harness::<Warehouse>::new(json!({})).unwrap();
        // No warehouse granted: the events wait (retry), naming the setting.
        let out = h.deliver(vec![track("a", "web")]);
        assert!(matches!(&out[0], Outcome::Retry { reason, .. } if reason.contains("`warehouse`")), "{out:?}");
        h.warehouse(|_, _| Err(LoadError::Unavailable("connection refused".into())));
        assert!(matches!(&h.deliver(vec![track("a", "web")])[0], Outcome::Retry { .. }));
        h.warehouse(|_, _| Err(LoadError::Invalid("name too long".into())));
        assert!(matches!(&h.deliver(vec![track("a", "web")])[0], Outcome::Rejected(r) if r.contains("name too long")));
    }

    #[test]
    fn an_unmappable_event_is_rejected_and_the_rest_loaded() {
        let mut h = Harness::<Warehouse>::new(json!({})).unwrap();
        granted(&mut h);
        let mut nameless = event(json!({"type": "track", "userId": "u", "messageId": "bad"}));
        nameless.source = "web".into();
        let out = h.deliver(vec![nameless, track("good", "web")]);
        assert!(matches!(&out[0], Outcome::Rejected(_)), "{out:?}");
        assert_eq!(out[1], Outcome::Delivered);
        assert_eq!(h.loads().len(), 1);
    }
}
