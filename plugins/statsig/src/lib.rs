//! Switchyard destination: Segment events to Statsig's `log_event` API.
//!
//! Maps every Segment event to one Statsig event (see [`mapping`] and the
//! README's table) and POSTs them, up to `max_events_per_request` per
//! request, to `{endpoint}/v1/log_event`:
//!
//! ```json
//! {"events": [{"eventName", "user", "value", "time", "metadata"}, ...],
//!  "statsigMetadata": {"sdkType": "switchyard", "sdkVersion": "<crate version>"}}
//! ```
//!
//! with the headers `statsig-api-key`, `STATSIG-CLIENT-TIME` and
//! `Content-Type: application/json`. Outcomes follow Statsig's own SDKs:
//! 2xx delivers; 408, 500, 502, 503, 504, 522, 524, 599 and network errors
//! retry, and so does 429 (beyond Statsig's list, so throttled data is not
//! dropped), honouring `Retry-After`; 401/403 reject naming the
//! `server_secret` setting; any other status rejects with the status and the
//! start of the body. Events naming no user are rejected locally, unsent.
//!
//! Settings:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `server_secret` | string | required | Statsig server secret key, `secret-...` |
//! | `endpoint` | string | `https://events.statsigapi.net` | base URL; its origin must be in `allow_http` |
//! | `environment` | string | none | `user.statsigEnvironment.tier` on every event |
//! | `custom_ids` | table of strings | `{}` | custom ID name → dotted path into the Segment event |
//! | `max_events_per_request` | integer | 500 | 1..=1000 |
//! | `identify_cache_users` | integer | 10000 | 0..=100000; 0 turns the identify cache off |
//! | `experiment_exposures` | bool | true | `Experiment Viewed` → `statsig::config_exposure` |

pub mod cache;
pub mod mapping;
pub mod settings;
pub mod user;

#[cfg(test)]
mod tests;

use switchyard_plugin_sdk::http::{self, HttpError, Request, Response};
use switchyard_plugin_sdk::json::ObjectWriter;
use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome, export_destination, log};

use crate::cache::IdentifyCache;
use crate::mapping::{StatsigEvent, map_event};
use crate::settings::{Config, Settings};

/// `statsigMetadata.sdkType` of every request.
pub const SDK_TYPE: &str = "switchyard";
/// `statsigMetadata.sdkVersion`: this crate's version.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The statuses retried, as Statsig's SDKs do, plus 429.
pub const RETRY_STATUSES: [u16; 9] = [408, 429, 500, 502, 503, 504, 522, 524, 599];

/// A source of the current time in epoch milliseconds.
pub type Clock = fn() -> Option<i64>;

/// The Statsig destination.
pub struct Statsig {
    config: Config,
    cache: IdentifyCache,
    clock: Clock,
}

impl Destination for Statsig {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, InitError> {
        let config = Config::try_from(settings)?;
        let cache = IdentifyCache::new(config.cache_users);
        Ok(Statsig { config, cache, clock: wall_clock_ms })
    }

    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut pending: Vec<(usize, StatsigEvent, i64)> = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            match map_event(event, &self.config, &mut self.cache) {
                Ok(mapped) => pending.push((i, mapped, event.timestamp_ms)),
                Err(reason) => outcomes[i] = Some(Outcome::Rejected(self.redact(&reason))),
            }
        }
        // After a retry or an auth failure the next requests would fare no
        // better: they share the outcome without being sent.
        let mut shared: Option<Outcome> = None;
        for chunk in pending.chunks(self.config.max_events) {
            let outcome = match &shared {
                Some(outcome) => outcome.clone(),
                None => {
                    let (outcome, stop) = self.send(chunk);
                    if stop {
                        shared = Some(outcome.clone());
                    }
                    outcome
                }
            };
            for (i, _, _) in chunk {
                outcomes[*i] = Some(outcome.clone());
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("internal: event left without outcome")))
            .collect()
    }
}

impl Statsig {
    /// The settings as resolved at `init`.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The identify cache, to inspect it.
    pub fn cache(&self) -> &IdentifyCache {
        &self.cache
    }

    /// Replaces the clock behind `STATSIG-CLIENT-TIME` (for tests).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The request carrying `events`: their JSON texts spliced into the
    /// body, with `statsigMetadata` after them.
    ///
    /// `STATSIG-CLIENT-TIME` is the wall clock at sending, which Statsig's
    /// SDKs send so the server can correct client clock skew; the events'
    /// `time`s are already skew-corrected by Switchyard. If the clock is
    /// unavailable (reads as the epoch or before), the newest event
    /// timestamp of the request stands in.
    pub fn request(&self, events: &[&StatsigEvent], newest_ms: i64) -> Request {
        let client_time = (self.clock)().filter(|ms| *ms > 0).unwrap_or(newest_ms.max(0));
        Request::post(self.config.url.clone())
            .header("statsig-api-key", self.config.server_secret.clone())
            .header("STATSIG-CLIENT-TIME", client_time.to_string())
            .header("Content-Type", "application/json")
            .body(body(events))
    }

    /// Sends one request for `chunk` and classifies the answer. The flag
    /// says whether the batch's remaining requests should share this
    /// outcome unsent: after a retry, or when the secret was refused.
    fn send(&self, chunk: &[(usize, StatsigEvent, i64)]) -> (Outcome, bool) {
        let events: Vec<&StatsigEvent> = chunk.iter().map(|(_, e, _)| e).collect();
        let newest = chunk.iter().map(|(_, _, ms)| *ms).max().unwrap_or(0);
        let request = self.request(&events, newest);
        log::debug(&format!("POST {} with {} events", self.config.url, events.len()));
        let result = request.send();
        let auth_failed = matches!(&result, Ok(resp) if matches!(resp.status, 401 | 403));
        if auth_failed {
            log::warn("Statsig refused the `server_secret` setting (HTTP 401/403): check the server secret key");
        }
        let outcome = self.classify(&result);
        let stop = auth_failed || matches!(outcome, Outcome::Retry { .. });
        (outcome, stop)
    }

    /// Maps Statsig's answer to an outcome (see the module docs).
    pub fn classify(&self, result: &Result<Response, HttpError>) -> Outcome {
        match result {
            Ok(resp) if (200..=299).contains(&resp.status) => Outcome::Delivered,
            Ok(resp) if RETRY_STATUSES.contains(&resp.status) => {
                Outcome::Retry { after_ms: resp.retry_after_ms(), reason: self.redact(&http::status_reason(resp)) }
            }
            Ok(resp) if matches!(resp.status, 401 | 403) => Outcome::rejected(format!(
                "HTTP {}: Statsig refused the `server_secret` setting: it is not a valid, active server secret key",
                resp.status
            )),
            Ok(resp) => Outcome::rejected(self.redact(&http::status_reason(resp))),
            Err(err) if err.is_retryable() => Outcome::retry(self.redact(&err.to_string())),
            Err(err @ HttpError::Denied(_)) => Outcome::rejected(format!(
                "{}: add the endpoint's origin to this destination's `allow_http`",
                self.redact(&err.to_string())
            )),
            Err(err) => Outcome::rejected(self.redact(&err.to_string())),
        }
    }

    /// `text` with the server secret blanked out, should anything echo
    /// it whole, cut short or form-encoded ([`switchyard_plugin_sdk::redact`]).
    fn redact(&self, text: &str) -> String {
        switchyard_plugin_sdk::redact(text, &self.config.server_secret)
    }
}

/// The body of a `log_event` request:
/// `{"events": [...], "statsigMetadata": {"sdkType", "sdkVersion"}}`, each
/// event's JSON text copied in as it is.
fn body(events: &[&StatsigEvent]) -> String {
    let size: usize = events.iter().map(|e| e.json().len() + 1).sum();
    let mut out = Vec::with_capacity(size + 128);
    {
        let mut body = ObjectWriter::new(&mut out);
        {
            let mut items = body.array("events");
            for event in events {
                items.raw(event.json());
            }
        }
        body.object("statsigMetadata").str("sdkType", SDK_TYPE).str("sdkVersion", SDK_VERSION);
    }
    // Only UTF-8 went in: the events' texts and the escaped constants.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The wall clock in epoch milliseconds (`wasi:clocks/wall-clock` in the
/// plugin), `None` if it reads before the epoch.
fn wall_clock_ms() -> Option<i64> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

export_destination!(Statsig);
