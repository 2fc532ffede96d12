//! Webhook: an example Switchyard destination to copy.
//!
//! POSTs each batch as one JSON document to the configured `url`:
//!
//! ```json
//! {"batch": [<Segment event>, ...]}
//! ```
//!
//! and maps the response to an outcome for every event of the batch with
//! Segment's retry classes: 2xx delivers; 408, 423, 429 and 5xx (not 501)
//! and network errors retry (honouring `Retry-After`); any other status
//! rejects the batch with the status and the start of the body.
//!
//! Settings:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `url` | string | required | where to POST; its origin must be in `allow_http` |
//! | `headers` | table of strings | `{}` | extra headers, e.g. `Authorization` |
//! | `timeout_ms` | integer | host limit | per-request timeout |

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_plugin_sdk::http::{self, Request};
use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome, export_destination};

/// The webhook's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

/// The webhook destination.
pub struct Webhook {
    settings: Settings,
}

impl Destination for Webhook {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, InitError> {
        let url = settings.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InitError::invalid_settings("`url` must be an absolute http:// or https:// URL"));
        }
        if let Some(name) = settings.headers.keys().find(|k| k.eq_ignore_ascii_case("host")) {
            return Err(InitError::invalid_settings(format!("`headers.{name}`: the host sets Host from the URL")));
        }
        Ok(Webhook { settings })
    }

    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
        let request = self.request(&batch);
        let outcome = http::outcome_for(&request.send());
        vec![outcome; batch.len()]
    }
}

impl Webhook {
    /// The request for `batch`. The events' JSON is spliced in as is: the
    /// host already validated it, so there is nothing to re-parse.
    pub fn request(&self, batch: &[Event]) -> Request {
        let size = batch.iter().map(|e| e.json.len() + 1).sum::<usize>() + 16;
        let mut body = String::with_capacity(size);
        body.push_str("{\"batch\":[");
        for (i, event) in batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(event.json());
        }
        body.push_str("]}");
        let mut request = Request::post(self.settings.url.trim()).header("Content-Type", "application/json").body(body);
        for (name, value) in &self.settings.headers {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(ms) = self.settings.timeout_ms {
            request = request.timeout_ms(ms);
        }
        request
    }
}

export_destination!(Webhook);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use switchyard_plugin_sdk::http::{HttpError, Response};
    use switchyard_plugin_sdk::testing::{Harness, event};

    use super::*;

    fn harness() -> Harness<Webhook> {
        Harness::new(json!({"url": "https://hooks.example.com/in", "headers": {"Authorization": "Bearer t"}}))
            .expect("valid settings")
    }

    fn batch(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| event(json!({"type": "track", "event": "Clicked", "userId": format!("u{i}"), "messageId": format!("m{i}")})))
            .collect()
    }

    #[test]
    fn posts_the_batch_as_json() {
        let mut h = harness();
        h.respond(|_| Ok(Response::new(200, "ok")));
        let outcomes = h.deliver(batch(3));
        assert_eq!(outcomes, vec![Outcome::Delivered; 3]);
        let reqs = h.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].url, "https://hooks.example.com/in");
        assert_eq!(reqs[0].header_value("authorization"), Some("Bearer t"));
        assert_eq!(reqs[0].header_value("content-type"), Some("application/json"));
        let body: Value = serde_json::from_str(&reqs[0].body).unwrap();
        let ids: Vec<_> = body["batch"].as_array().unwrap().iter().map(|e| e["messageId"].clone()).collect();
        assert_eq!(ids, vec![json!("m0"), json!("m1"), json!("m2")]);
    }

    #[test]
    fn server_errors_retry_and_client_errors_reject() {
        let mut h = harness();
        h.push_response(Ok(Response::new(500, "boom")));
        h.push_response(Ok(Response::new(503, "").with_header("Retry-After", "2")));
        h.push_response(Ok(Response::new(400, "bad payload")));
        h.push_response(Ok(Response::new(501, "")));
        h.push_response(Err(HttpError::Connection("refused".into())));
        assert_eq!(h.deliver(batch(2)), vec![Outcome::retry("HTTP 500: boom"); 2]);
        assert_eq!(h.deliver(batch(1)), vec![Outcome::retry_after(2000, "HTTP 503")]);
        assert_eq!(h.deliver(batch(1)), vec![Outcome::rejected("HTTP 400: bad payload")]);
        assert_eq!(h.deliver(batch(1)), vec![Outcome::rejected("HTTP 501")]);
        assert!(matches!(&h.deliver(batch(1))[0], Outcome::Retry { .. }));
    }

    #[test]
    fn empty_batch_still_one_outcome_each() {
        let mut h = harness();
        h.respond(|_| Ok(Response::new(200, "")));
        assert!(h.deliver(Vec::new()).is_empty());
    }

    #[test]
    fn settings_are_checked() {
        let err = Harness::<Webhook>::new(json!({})).err().unwrap();
        assert_eq!(err, InitError::invalid_settings("missing field `url`"));
        let err = Harness::<Webhook>::new(json!({"url": "ftp://x"})).err().unwrap();
        assert!(matches!(err, InitError::InvalidSettings(m) if m.contains("`url`")));
        let err = Harness::<Webhook>::new(json!({"url": "http://x", "headers": {"Host": "evil"}})).err().unwrap();
        assert!(matches!(err, InitError::InvalidSettings(m) if m.contains("Host")));
        let err = Harness::<Webhook>::new(json!({"url": "http://x", "bogus": 1})).err().unwrap();
        assert!(matches!(err, InitError::InvalidSettings(m) if m.contains("bogus")));
    }

    #[test]
    fn preserves_unicode_and_nested_properties() {
        let mut h = harness();
        h.respond(|_| Ok(Response::new(202, "")));
        let e = event(json!({"type": "track", "event": "Ünïcödé ✓", "anonymousId": "a",
            "properties": {"nested": {"deep": [1, {"x": "日本"}]}}}));
        assert_eq!(h.deliver(vec![e]), vec![Outcome::Delivered]);
        let body: Value = serde_json::from_str(&h.requests()[0].body).unwrap();
        assert_eq!(body["batch"][0]["event"], "Ünïcödé ✓");
        assert_eq!(body["batch"][0]["properties"]["nested"]["deep"][1]["x"], "日本");
    }
}
