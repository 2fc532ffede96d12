//! Sending to Amplitude: batching, response handling and per-item outcomes.
//!
//! Items (events for `/2/httpapi`, identifications for `/groupidentify`,
//! mappings for `/usermap`) are packed into requests of at most
//! `max_events_per_request` items and `max_bytes_per_request` bytes. Every
//! item gets its own [`Outcome`]: Amplitude's `400` and `429` responses name
//! the events they refused, and the others are resent at once within the
//! same call (the `insert_id` makes a resend safe). Resending is bounded by
//! [`MAX_ROUNDS`] so a misbehaving server cannot keep a call looping.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;
use switchyard_plugin_sdk::http::{self, HttpError, Request, Response};
use switchyard_plugin_sdk::{Outcome, RetryClass, form, log, redact};

use crate::settings::Config;

/// How many times one call resends the rest of a request after a partial
/// `400` or `429`; past it the remaining items retry later.
pub const MAX_ROUNDS: u32 = 3;
/// The retry delay for throttled events when the 429 has no `Retry-After`.
pub const THROTTLE_RETRY_MS: u64 = 30_000;

/// One item to send, owned by the Segment event at index `owner`.
#[derive(Debug, Clone)]
pub struct Item {
    pub owner: usize,
    /// The item's JSON (httpapi) or its form-encoded JSON (the others).
    pub body: String,
}

/// Which Amplitude API a batch of items goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/2/httpapi`: JSON events.
    Events,
    /// `/groupidentify`: form field `identification`.
    GroupIdentify,
    /// `/usermap`: form field `mapping`.
    UserMap,
}

impl Api {
    fn noun(self) -> &'static str {
        match self {
            Api::Events => "event",
            Api::GroupIdentify => "group identify",
            Api::UserMap => "user mapping",
        }
    }
}

/// A request's worth of items (indices into the item list) and how many
/// resend rounds led to it.
struct Chunk {
    items: Vec<usize>,
    round: u32,
}

/// Sends items to one API.
pub struct Sender<'a> {
    config: &'a Config,
    api: Api,
    url: &'a str,
    prefix: String,
    suffix: String,
    separator: &'static str,
}

impl<'a> Sender<'a> {
    /// A sender for `api` with `config`'s URL, key and limits.
    pub fn new(config: &'a Config, api: Api) -> Self {
        let key_json = Value::String(config.api_key.clone()).to_string();
        let (url, prefix, suffix, separator) = match api {
            Api::Events => {
                let suffix = match config.min_id_length {
                    Some(n) => format!("],\"options\":{{\"min_id_length\":{n}}}}}"),
                    None => "]}".to_owned(),
                };
                (&config.urls.httpapi, format!("{{\"api_key\":{key_json},\"events\":["), suffix, ",")
            }
            Api::GroupIdentify => (
                &config.urls.groupidentify,
                format!("api_key={}&identification=%5B", form::encode(&config.api_key)),
                "%5D".to_owned(),
                "%2C",
            ),
            Api::UserMap => (
                &config.urls.usermap,
                format!("api_key={}&mapping=%5B", form::encode(&config.api_key)),
                "%5D".to_owned(),
                "%2C",
            ),
        };
        Sender { config, api, url, prefix, suffix, separator }
    }

    /// Sends `items` and returns one outcome per item, in order.
    pub fn send(&self, items: &[Item]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; items.len()];
        let mut queue = VecDeque::new();
        for chunk in self.pack(items, &mut outcomes) {
            queue.push_back(Chunk { items: chunk, round: 0 });
        }
        while let Some(chunk) = queue.pop_front() {
            if chunk.round > MAX_ROUNDS {
                let reason =
                    format!("Amplitude refused parts of the request {MAX_ROUNDS} times in a row; retrying later");
                for &i in &chunk.items {
                    outcomes[i] = Some(Outcome::retry(reason.clone()));
                }
                continue;
            }
            let body = self.body(items, &chunk.items);
            let content_type = match self.api {
                Api::Events => "application/json",
                _ => "application/x-www-form-urlencoded",
            };
            let result = Request::post(self.url).header("Content-Type", content_type).body(body).send();
            match self.api {
                Api::Events => self.handle_events(&result, chunk, &mut outcomes, &mut queue),
                _ => self.handle_form(&result, chunk, &mut outcomes, &mut queue),
            }
        }
        outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::retry("not sent (internal error)"))).collect()
    }

    /// Splits the items into chunks within the count and byte limits. An
    /// item too big for a request on its own is rejected here.
    fn pack(&self, items: &[Item], outcomes: &mut [Option<Outcome>]) -> Vec<Vec<usize>> {
        let overhead = self.prefix.len() + self.suffix.len();
        let (max_events, max_bytes) = (self.config.max_events, self.config.max_bytes);
        let mut chunks = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut size = overhead;
        for (i, item) in items.iter().enumerate() {
            if overhead + item.body.len() > max_bytes {
                outcomes[i] = Some(Outcome::rejected(format!(
                    "{} too large for Amplitude: {} bytes, more than max_bytes_per_request ({max_bytes})",
                    self.api.noun(),
                    overhead + item.body.len()
                )));
                continue;
            }
            let extra = item.body.len() + if current.is_empty() { 0 } else { self.separator.len() };
            if !current.is_empty() && (current.len() >= max_events || size + extra > max_bytes) {
                chunks.push(std::mem::take(&mut current));
                size = overhead;
            }
            size += item.body.len() + if current.is_empty() { 0 } else { self.separator.len() };
            current.push(i);
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        chunks
    }

    /// The request body for the items at `indices`.
    fn body(&self, items: &[Item], indices: &[usize]) -> String {
        let size = self.prefix.len()
            + self.suffix.len()
            + indices.iter().map(|&i| items[i].body.len() + self.separator.len()).sum::<usize>();
        let mut body = String::with_capacity(size);
        body.push_str(&self.prefix);
        for (n, &i) in indices.iter().enumerate() {
            if n > 0 {
                body.push_str(self.separator);
            }
            body.push_str(&items[i].body);
        }
        body.push_str(&self.suffix);
        body
    }

    /// Handles a `/2/httpapi` response.
    fn handle_events(
        &self,
        result: &Result<Response, HttpError>,
        chunk: Chunk,
        outcomes: &mut [Option<Outcome>],
        queue: &mut VecDeque<Chunk>,
    ) {
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => return self.network_error(err, &chunk, outcomes),
        };
        let n = chunk.items.len();
        match resp.status {
            200..=299 => set_all(outcomes, &chunk.items, &Outcome::Delivered),
            400 => {
                let body: Value = resp.json().unwrap_or(Value::Null);
                let refused = refused_events(&body, n);
                if refused.is_empty() {
                    self.warn(resp, n);
                    let reason = format!("Amplitude rejected the request ({})", self.error_text(resp));
                    return set_all(outcomes, &chunk.items, &Outcome::rejected(reason));
                }
                let detail = self.error_detail(&body);
                let mut rest = Vec::new();
                for (pos, &i) in chunk.items.iter().enumerate() {
                    match refused.get(&pos) {
                        Some(fields) => {
                            let reason =
                                format!("Amplitude rejected the event (HTTP 400{detail}): {}", fields.join(", "));
                            outcomes[i] = Some(Outcome::rejected(reason));
                        }
                        None => rest.push(i),
                    }
                }
                log::warn(&format!(
                    "amplitude: HTTP 400 from {}: {} of {n} events refused, resending {}",
                    self.url,
                    refused.len(),
                    rest.len()
                ));
                if !rest.is_empty() {
                    queue.push_front(Chunk { items: rest, round: chunk.round + 1 });
                }
            }
            413 => self.too_large(resp, chunk, outcomes, queue),
            429 => {
                let body: Value = resp.json().unwrap_or(Value::Null);
                let after = resp.retry_after_ms().unwrap_or(THROTTLE_RETRY_MS);
                let throttled = indices(body.get("throttled_events"), n);
                let reason = format!("throttled by Amplitude (HTTP 429); retrying in {} s", after / 1000);
                log::warn(&format!(
                    "amplitude: HTTP 429 from {}: {} of {n} events throttled",
                    self.url,
                    throttled.len()
                ));
                if throttled.is_empty() {
                    return set_all(outcomes, &chunk.items, &Outcome::retry_after(after, reason));
                }
                let mut rest = Vec::new();
                for (pos, &i) in chunk.items.iter().enumerate() {
                    if throttled.contains(&pos) {
                        outcomes[i] = Some(Outcome::retry_after(after, reason.clone()));
                    } else {
                        rest.push(i);
                    }
                }
                if !rest.is_empty() {
                    queue.push_front(Chunk { items: rest, round: chunk.round + 1 });
                }
            }
            _ => self.by_class(resp, &chunk, outcomes),
        }
    }

    /// Handles a `/groupidentify` or `/usermap` response. These APIs do not
    /// say which item failed, so a refused request of several items is
    /// split in halves until the culprit stands alone.
    fn handle_form(
        &self,
        result: &Result<Response, HttpError>,
        chunk: Chunk,
        outcomes: &mut [Option<Outcome>],
        queue: &mut VecDeque<Chunk>,
    ) {
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => return self.network_error(err, &chunk, outcomes),
        };
        match resp.status {
            200..=299 => set_all(outcomes, &chunk.items, &Outcome::Delivered),
            400 | 413 if chunk.items.len() > 1 => split(chunk, queue),
            400 => {
                self.warn(resp, 1);
                let reason = format!("Amplitude rejected the {} ({})", self.api.noun(), self.error_text(resp));
                set_all(outcomes, &chunk.items, &Outcome::rejected(reason));
            }
            413 => self.too_large(resp, chunk, outcomes, queue),
            429 => {
                self.warn(resp, chunk.items.len());
                let after = resp.retry_after_ms().unwrap_or(THROTTLE_RETRY_MS);
                let reason = format!("throttled by Amplitude (HTTP 429); retrying in {} s", after / 1000);
                set_all(outcomes, &chunk.items, &Outcome::retry_after(after, reason));
            }
            _ => self.by_class(resp, &chunk, outcomes),
        }
    }

    /// 413: split the request in halves; a single item is rejected.
    fn too_large(&self, resp: &Response, chunk: Chunk, outcomes: &mut [Option<Outcome>], queue: &mut VecDeque<Chunk>) {
        if chunk.items.len() > 1 {
            log::warn(&format!(
                "amplitude: HTTP 413 from {}: splitting {} items in halves",
                self.url,
                chunk.items.len()
            ));
            return split(chunk, queue);
        }
        self.warn(resp, 1);
        let reason = format!("{} too large for Amplitude (HTTP 413)", self.api.noun());
        set_all(outcomes, &chunk.items, &Outcome::rejected(reason));
    }

    /// 401/403 and the remaining statuses, by Segment's retry classes.
    fn by_class(&self, resp: &Response, chunk: &Chunk, outcomes: &mut [Option<Outcome>]) {
        self.warn(resp, chunk.items.len());
        let outcome = match (resp.status, resp.class()) {
            (401 | 403, _) => Outcome::rejected(format!(
                "Amplitude refused the api_key setting (HTTP {}): check that `api_key` is a valid project API key \
                 for this region",
                resp.status
            )),
            (_, RetryClass::Retry) => {
                Outcome::Retry { after_ms: resp.retry_after_ms(), reason: self.redact(&http::status_reason(resp)) }
            }
            _ => Outcome::rejected(self.error_text(resp)),
        };
        set_all(outcomes, &chunk.items, &outcome);
    }

    /// No response: retry on network errors, as the SDK classifies them.
    fn network_error(&self, err: &HttpError, chunk: &Chunk, outcomes: &mut [Option<Outcome>]) {
        let message = self.redact(&err.to_string());
        log::warn(&format!("amplitude: POST {} failed: {message}", self.url));
        let outcome = match http::outcome_for(&Err(err.clone())) {
            Outcome::Retry { after_ms, .. } => Outcome::Retry { after_ms, reason: message },
            Outcome::Rejected(_) => Outcome::rejected(message),
            Outcome::Delivered => Outcome::Delivered,
        };
        set_all(outcomes, &chunk.items, &outcome);
    }

    /// "HTTP {status}: {error}" with Amplitude's `error` (and
    /// `missing_field`) when the body is JSON, else the start of the body;
    /// the API key redacted.
    fn error_text(&self, resp: &Response) -> String {
        let body: Value = resp.json().unwrap_or(Value::Null);
        let detail = self.error_detail(&body);
        if detail.is_empty() {
            self.redact(&http::status_reason(resp))
        } else {
            format!("HTTP {}{detail}", resp.status)
        }
    }

    /// ": {error}; missing field `x`" from a JSON error body, or "".
    fn error_detail(&self, body: &Value) -> String {
        let mut out = String::new();
        if let Some(error) = body.get("error").and_then(Value::as_str).filter(|e| !e.trim().is_empty()) {
            let error: String = error.chars().take(200).collect();
            out.push_str(": ");
            out.push_str(error.trim());
        }
        if let Some(field) = body.get("missing_field").and_then(Value::as_str) {
            out.push_str(if out.is_empty() { ": " } else { "; " });
            out.push_str(&format!("missing field `{}`", field.chars().take(100).collect::<String>()));
        }
        self.redact(&out)
    }

    /// Logs a refused request without its body beyond the redacted start.
    fn warn(&self, resp: &Response, n: usize) {
        let reason = self.redact(&http::status_reason(resp));
        log::warn(&format!("amplitude: {reason} from {} for {n} {}(s)", self.url, self.api.noun()));
    }

    /// `text` with the API key (plain and form-encoded) replaced.
    fn redact(&self, text: &str) -> String {
        redact(text, &self.config.api_key)
    }
}

fn set_all(outcomes: &mut [Option<Outcome>], items: &[usize], outcome: &Outcome) {
    for &i in items {
        outcomes[i] = Some(outcome.clone());
    }
}

/// Queues the two halves of `chunk` to be sent next, in order.
fn split(chunk: Chunk, queue: &mut VecDeque<Chunk>) {
    let mut first = chunk.items;
    let second = first.split_off(first.len() / 2);
    queue.push_front(Chunk { items: second, round: chunk.round });
    queue.push_front(Chunk { items: first, round: chunk.round });
}

/// The indices (below `n`) in a JSON array.
fn indices(value: Option<&Value>, n: usize) -> Vec<usize> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).map(|i| i as usize).filter(|&i| i < n).collect())
        .unwrap_or_default()
}

/// The events a 400 names, with what was wrong with each:
/// `events_with_invalid_fields` and `events_with_missing_fields` (and any
/// other `events_with_*` map of field → indices), plus `silenced_events`.
fn refused_events(body: &Value, n: usize) -> BTreeMap<usize, Vec<String>> {
    let mut refused: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let Some(obj) = body.as_object() else { return refused };
    for (key, value) in obj {
        let Some(kind) = key.strip_prefix("events_with_") else { continue };
        let Some(fields) = value.as_object() else { continue };
        let kind = kind.replace('_', " ");
        let kind = kind.strip_suffix(" fields").unwrap_or(&kind);
        for (field, list) in fields {
            for i in indices(Some(list), n) {
                refused.entry(i).or_default().push(format!("{kind} field `{field}`"));
            }
        }
    }
    for i in indices(obj.get("silenced_events"), n) {
        refused.entry(i).or_default().push("device silenced by Amplitude".to_owned());
    }
    refused
}
