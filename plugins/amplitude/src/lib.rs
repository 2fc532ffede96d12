//! Amplitude: a Switchyard destination for Amplitude's HTTP V2 API.
//!
//! Maps each Segment event to Amplitude events and sends them in batches:
//!
//! - `track`, `page`, `screen` and `identify` → `POST {base}/2/httpapi`
//!   (`page`/`screen` become `Viewed {name}`, `identify` a `$identify` with
//!   `user_properties.$set`); a track with `products` also emits one
//!   `Product Purchased` event per product;
//! - `group` → `POST {base}/groupidentify` (the group's properties) and a
//!   `$identify` on `/2/httpapi` that puts the user in the group;
//! - `alias` → `POST {base}/usermap` when `alias_usermap` is set, otherwise
//!   delivered as a no-op.
//!
//! Every Segment event gets its own outcome, the worst of its Amplitude
//! parts: Amplitude's 400 names the refused events, which are rejected
//! while the rest are resent at once; 413 splits the request; 429 retries
//! the throttled events after 30 s; 401/403 reject (bad `api_key`); 5xx,
//! 408 and network errors retry, honouring `Retry-After`. Events that
//! cannot be valid (no id, an id shorter than the minimum length) are
//! rejected before any request.
//!
//! Settings (see `README.md` for the full mapping):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `api_key` | string | required | Amplitude project API key (secret) |
//! | `region` | `"us"` / `"eu"` | `"us"` | data center |
//! | `endpoint` | URL | none | base URL overriding `region` |
//! | `min_id_length` | integer ≥ 1 | none (Amplitude: 5) | minimum id length, sent as `options.min_id_length` |
//! | `alias_usermap` | bool | `false` | send `alias` to `/usermap` |
//! | `group_type_trait` | string | none | group trait holding the group type |
//! | `group_value_trait` | string | none | group trait holding the group value |
//! | `default_group_type` | string | `"group"` | group type otherwise |
//! | `track_products` | bool | `true` | one `Product Purchased` per product |
//! | `track_revenue_per_product` | bool | `false` | revenue on the product events instead of the order |
//! | `max_events_per_request` | integer | 2000 | 1..=2000 |
//! | `max_bytes_per_request` | integer | 1000000 | 1024..=1000000 |

pub mod client;
pub mod mapping;
pub mod settings;
#[cfg(test)]
mod tests;

use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome, export_destination, form};

use crate::client::{Api, Item, Sender};
use crate::mapping::{Part, map_event};
pub use crate::settings::{Config, Settings};

/// The Amplitude destination.
pub struct Amplitude {
    config: Config,
}

impl Destination for Amplitude {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, InitError> {
        Ok(Amplitude { config: Config::try_from(settings)? })
    }

    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Delivered; batch.len()];
        let mut items: [Vec<Item>; 3] = Default::default();
        for (owner, event) in batch.iter().enumerate() {
            let parts = match map_event(event, &self.config) {
                Ok(parts) => parts,
                Err(reason) => {
                    outcomes[owner] = Outcome::rejected(reason);
                    continue;
                }
            };
            for part in parts {
                let (slot, body) = match part {
                    Part::Event(body) => (0, body),
                    Part::GroupIdentify(json) => (1, form::encode(&json)),
                    Part::UserMap(json) => (2, form::encode(&json)),
                };
                items[slot].push(Item { owner, body });
            }
        }
        for (slot, api) in [(1, Api::GroupIdentify), (2, Api::UserMap), (0, Api::Events)] {
            if items[slot].is_empty() {
                continue;
            }
            let results = Sender::new(&self.config, api).send(&items[slot]);
            for (item, outcome) in items[slot].iter().zip(results) {
                outcomes[item.owner] = outcomes[item.owner].worst(&outcome);
            }
        }
        outcomes
    }
}

impl Amplitude {
    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

export_destination!(Amplitude);
