//! A loopback mock of Statsig's event API, `POST /v1/log_event`.
//!
//! | condition | answer |
//! |---|---|
//! | another path | 404 `{"message":"Not Found"}` |
//! | not POST | 405 |
//! | `statsig-api-key` header missing or not the server secret | 401 `{"message":"..."}` (never echoing the key) |
//! | body not a JSON object with an `events` array | 400 `{"message":"..."}` |
//! | an event without a non-empty string `eventName`, or a `user` object; a `value` not a string or number; a `time` not an integer; `metadata` not an object | 400 `{"message":"event i: ..."}` |
//! | otherwise | `success_status` (default 202) `{"success":true}` |
//!
//! A 4xx accepts nothing of the request. Faults ([`Fault`](crate::Fault)) script the
//! statuses Statsig's SDKs retry (408, 429 with `Retry-After`, 500, 502,
//! 503, 504, 522, 524, 599) and network errors. Statsig does not
//! deduplicate, so neither does the mock: [`StatsigMock::events`] is every
//! accepted event. Each accepted request's headers are kept, and requests
//! without a numeric `STATSIG-CLIENT-TIME` are counted.

use serde_json::{Value, json};

use crate::mock::{Action, Api, Mock, MockRequest};

/// The event path.
pub const LOG_EVENT: &str = "/v1/log_event";

/// The state of the Statsig mock's API (see [`StatsigMock`]).
#[derive(Debug)]
pub struct Statsig {
    secret: String,
    success_status: u16,
    events: Vec<Value>,
    missing_client_time: usize,
}

/// A running Statsig mock; faults aim at [`LOG_EVENT`]. Cloning shares
/// the server.
pub type StatsigMock = Mock<Statsig>;

impl Mock<Statsig> {
    /// Starts a mock that accepts the server secret `secret` only.
    pub async fn start(secret: &str) -> StatsigMock {
        Mock::serve(Statsig {
            secret: secret.to_owned(),
            success_status: 202,
            events: Vec::new(),
            missing_client_time: 0,
        })
        .await
    }

    /// The status of a successful answer (default 202; any 2xx).
    pub fn set_success_status(&self, status: u16) {
        self.api().success_status = status;
    }

    /// The statuses answered, in order (0: hung up).
    pub fn statuses(&self) -> Vec<u16> {
        self.requests().iter().map(|r| r.status).collect()
    }

    /// Every accepted event, in order (no deduplication, as Statsig).
    pub fn events(&self) -> Vec<Value> {
        self.api().events.clone()
    }

    /// Requests that came without a numeric `STATSIG-CLIENT-TIME`.
    pub fn missing_client_time(&self) -> usize {
        self.api().missing_client_time
    }
}

impl Api for Statsig {
    const PATH: &'static str = LOG_EVENT;

    fn process(&mut self, req: &MockRequest) -> Action {
        log_event(self, req)
    }

    fn error(&self, status: u16) -> Action {
        Action::json(status, &json!({"message": format!("Error {status}"), "success": false}))
    }

    fn ingested_error(&self, status: u16) -> Action {
        Action::json(status, &json!({"message": "Error"}))
    }
}

fn message(status: u16, text: &str) -> Action {
    Action::json(status, &json!({"message": text}))
}

fn log_event(s: &mut Statsig, req: &MockRequest) -> Action {
    if req.path != LOG_EVENT {
        return message(404, "Not Found");
    }
    if req.method != "POST" {
        return message(405, "Method Not Allowed");
    }
    match req.header("statsig-api-key") {
        None | Some("") => return message(401, "Missing statsig-api-key header"),
        Some(k) if k != s.secret => return message(401, "Invalid server secret key"),
        Some(_) => {}
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return message(400, "Invalid JSON body");
    };
    let Some(events) = body.get("events").and_then(Value::as_array) else {
        return message(400, "Missing events array");
    };
    for (i, e) in events.iter().enumerate() {
        let problem = if e.get("eventName").and_then(Value::as_str).is_none_or(str::is_empty) {
            Some("missing eventName")
        } else if !e.get("user").is_some_and(Value::is_object) {
            Some("missing user object")
        } else if e.get("value").is_some_and(|v| !(v.is_null() || v.is_string() || v.is_number())) {
            Some("value must be a string or a number")
        } else if e.get("time").is_some_and(|t| !(t.is_null() || t.is_i64() || t.is_u64())) {
            Some("time must be an integer (epoch ms)")
        } else if e.get("metadata").is_some_and(|m| !(m.is_null() || m.is_object())) {
            Some("metadata must be an object")
        } else {
            None
        };
        if let Some(p) = problem {
            return message(400, &format!("event {i}: {p}"));
        }
    }
    if req.header("statsig-client-time").is_none_or(|t| t.trim().parse::<u64>().is_err()) {
        s.missing_client_time += 1;
    }
    s.events.extend(events.iter().cloned());
    Action::json(s.success_status, &json!({"success": true}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use crate::mock::Fault;

    async fn post(m: &StatsigMock, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut headers = vec![("content-type", "application/json"), ("statsig-client-time", "1700000000000")];
        if let Some(k) = key {
            headers.push(("statsig-api-key", k));
        }
        let (status, bytes) =
            http(hyper::Method::POST, &format!("{}{LOG_EVENT}", m.origin()), &headers, body.to_string().into_bytes())
                .await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn validates_and_records() {
        let m = StatsigMock::start("secret-abc").await;
        let good = json!({"events": [{"eventName": "E", "user": {"userID": "u"}, "value": 3, "time": 1, "metadata": {"a": "b"}}]});
        assert_eq!(post(&m, None, &good).await.0, 401);
        let (status, body) = post(&m, Some("secret-wrong"), &good).await;
        assert_eq!(status, 401);
        assert!(!body.to_string().contains("secret-wrong"));
        assert_eq!(post(&m, Some("secret-abc"), &json!({"events": [{"user": {}}]})).await.0, 400);
        assert_eq!(post(&m, Some("secret-abc"), &json!({"events": [{"eventName": "E"}]})).await.0, 400);
        assert_eq!(
            post(&m, Some("secret-abc"), &json!({"events": [{"eventName": "E", "user": {}, "value": {}}]})).await.0,
            400
        );
        assert_eq!(post(&m, Some("secret-abc"), &json!([])).await.0, 400);
        assert!(m.events().is_empty());
        assert_eq!(post(&m, Some("secret-abc"), &good).await, (202, json!({"success": true})));
        assert_eq!(m.events().len(), 1);
        assert_eq!(m.missing_client_time(), 0);
        assert_eq!(m.accepted_requests()[0].header("statsig-api-key"), Some("secret-abc"));

        m.fail_next(1, Fault::retry_after(429, 2, "{}"));
        m.fail_next(1, Fault::Status(522));
        m.fail_next(1, Fault::IngestThen(500));
        let (status, _) = post(&m, Some("secret-abc"), &good).await;
        assert_eq!(status, 429);
        assert_eq!(m.requests().last().unwrap().status, 429);
        assert_eq!(post(&m, Some("secret-abc"), &good).await.0, 522);
        assert_eq!(post(&m, Some("secret-abc"), &good).await.0, 500);
        assert_eq!(m.events().len(), 2, "the 500 ingested");
        assert_eq!(m.statuses(), vec![401, 401, 400, 400, 400, 400, 202, 429, 522, 500]);
    }
}
