//! A loopback mock of Amplitude's ingestion APIs: HTTP V2 (`POST
//! /2/httpapi`), Group Identify (`POST /groupidentify`) and User Mapping
//! (`POST /usermap`), with their documented wire formats and errors.
//!
//! HTTP V2, checked in this order:
//!
//! | condition | answer |
//! |---|---|
//! | body over `max_body_bytes` (1 000 000) | 413 `{"code":413,"error":"Payload too large"}` |
//! | `Content-Type` not `application/json` | 400 `{"code":400,"error":"Invalid Content-Type header..."}` |
//! | body not a JSON object | 400 `{"code":400,"error":"Invalid JSON request body"}` |
//! | no `api_key` | 400 `{"code":400,"error":"Request missing required field","missing_field":"api_key"}` |
//! | wrong `api_key` | 400 `{"code":400,"error":"Invalid API key: <key>"}` — Amplitude echoes the key |
//! | no `events` array | 400 `{..., "missing_field":"events"}` |
//! | more than `max_events` (2000) events | 413 |
//! | some events invalid | 400 with `events_with_invalid_fields` / `events_with_missing_fields` (`{field: [index, …]}`) |
//! | a user or device over `throttle` events in the request | 429 with `eps_threshold`, `throttled_devices`, `throttled_users`, `throttled_events` |
//! | otherwise | 200 `{"code":200,"events_ingested":n,"payload_size_bytes":b,"server_upload_time":ms}` |
//!
//! A 400/413/429 ingests nothing of the request, as Amplitude does. Per
//! event: `event_type` is a non-empty string; `user_id` or `device_id` is
//! present, each a string of at least `options.min_id_length` (default 5)
//! characters, and a device id of all zeros is invalid (Amplitude drops
//! Limit-Ad-Tracking IDFAs); `time`, when present, is an integer (epoch ms:
//! an ISO string or a float is invalid). An event with neither id is listed
//! under `events_with_missing_fields.user_id` (Amplitude's exact key there is
//! unconfirmed; clients should read every list).
//!
//! Accepted events are deduplicated by `insert_id`, forever within a test
//! (Amplitude: 7 days). [`AmplitudeMock::events`] is the deduplicated list;
//! [`AmplitudeMock::requests`] is every request as it came.
//!
//! `/groupidentify` and `/usermap` take `application/x-www-form-urlencoded`
//! `api_key` plus `identification` (a JSON object or array of `{group_type,
//! group_value, group_properties?}`) or `mapping` (a JSON array of `{user_id,
//! global_user_id}` or `{user_id, unmap: true}`); a missing or wrong key or a
//! malformed parameter is a 400 with a short text body (never echoing the
//! key); success is 200 `success`.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use crate::mock::{Action, Api, Mock, MockRequest, now_ms};

/// The HTTP V2 path.
pub const HTTPAPI: &str = "/2/httpapi";
/// The Group Identify path.
pub const GROUPIDENTIFY: &str = "/groupidentify";
/// The User Mapping path.
pub const USERMAP: &str = "/usermap";

/// The state of the Amplitude mock's APIs (see [`AmplitudeMock`]).
#[derive(Debug)]
pub struct Amplitude {
    api_key: String,
    max_body_bytes: usize,
    max_events: usize,
    throttle: Option<usize>,
    events: Vec<Value>,
    insert_ids: HashSet<String>,
    accepted_total: usize,
    duplicates: usize,
    groups: Vec<Value>,
    mappings: Vec<Value>,
}

/// A running Amplitude mock; faults aim at [`HTTPAPI`] unless given a path.
/// Cloning shares the server.
pub type AmplitudeMock = Mock<Amplitude>;

impl Mock<Amplitude> {
    /// Starts a mock that accepts `api_key` only.
    pub async fn start(api_key: &str) -> AmplitudeMock {
        Mock::serve(Amplitude {
            api_key: api_key.to_owned(),
            max_body_bytes: 1_000_000,
            max_events: 2000,
            throttle: None,
            events: Vec::new(),
            insert_ids: HashSet::new(),
            accepted_total: 0,
            duplicates: 0,
            groups: Vec::new(),
            mappings: Vec::new(),
        })
        .await
    }

    /// Larger HTTP V2 bodies are answered 413 (default 1 000 000 bytes).
    pub fn set_max_body_bytes(&self, n: usize) {
        self.api().max_body_bytes = n;
    }

    /// More events in one request are answered 413 (default 2000).
    pub fn set_max_events(&self, n: usize) {
        self.api().max_events = n;
    }

    /// Throttle: a user or device with more than `n` events in one request
    /// is answered 429, its events past the `n`th listed as throttled.
    pub fn set_throttle(&self, n: Option<usize>) {
        self.api().throttle = n;
    }

    /// The statuses answered to `path`, in order.
    pub fn statuses(&self, path: &str) -> Vec<u16> {
        self.requests_to(path).iter().map(|r| r.status).collect()
    }

    /// Accepted HTTP V2 events, deduplicated by `insert_id`, in order.
    pub fn events(&self) -> Vec<Value> {
        self.api().events.clone()
    }

    /// The accepted event with this `insert_id`.
    pub fn event(&self, insert_id: &str) -> Option<Value> {
        self.api().events.iter().find(|e| e["insert_id"] == insert_id).cloned()
    }

    /// The `insert_id`s of [`AmplitudeMock::events`].
    pub fn insert_ids(&self) -> Vec<String> {
        self.api().events.iter().filter_map(|e| e["insert_id"].as_str().map(str::to_owned)).collect()
    }

    /// Events accepted including duplicates.
    pub fn accepted_total(&self) -> usize {
        self.api().accepted_total
    }

    /// Accepted events dropped as repeated `insert_id`s.
    pub fn duplicates(&self) -> usize {
        self.api().duplicates
    }

    /// Accepted group identifications (`{group_type, group_value, ...}`).
    pub fn group_identifications(&self) -> Vec<Value> {
        self.api().groups.clone()
    }

    /// Accepted user mappings (`{user_id, global_user_id}` or unmaps).
    pub fn user_mappings(&self) -> Vec<Value> {
        self.api().mappings.clone()
    }
}

impl Api for Amplitude {
    const PATH: &'static str = HTTPAPI;

    fn refuse(&self, req: &MockRequest) -> Option<Action> {
        match req.path.as_str() {
            HTTPAPI if req.method == "POST" => None,
            GROUPIDENTIFY | USERMAP if req.method == "POST" || req.method == "GET" => None,
            HTTPAPI | GROUPIDENTIFY | USERMAP => Some(Action::text(405, "Method Not Allowed")),
            _ => Some(Action::text(404, "Not Found")),
        }
    }

    fn process(&mut self, req: &MockRequest) -> Action {
        if req.path == HTTPAPI { httpapi(self, req) } else { form_api(self, req) }
    }

    fn error(&self, status: u16) -> Action {
        error_body(status)
    }
}

fn error_body(status: u16) -> Action {
    let error = match status {
        413 => "Payload too large",
        429 => "Too many requests for some devices and users",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Error",
    };
    Action::json(status, &json!({"code": status, "error": error}))
}

fn bad_request(error: &str, extra: Value) -> Action {
    let mut body = json!({"code": 400, "error": error});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    Action::json(400, &body)
}

fn httpapi(s: &mut Amplitude, req: &MockRequest) -> Action {
    if req.body.len() > s.max_body_bytes {
        return error_body(413);
    }
    if !req.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return bad_request("Invalid Content-Type header: application/json is required", json!({}));
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return bad_request("Invalid JSON request body", json!({}));
    };
    match body.get("api_key") {
        None | Some(Value::Null) => {
            return bad_request("Request missing required field", json!({"missing_field": "api_key"}));
        }
        Some(Value::String(k)) if *k == s.api_key => {}
        Some(other) => {
            let shown = other.as_str().map(str::to_owned).unwrap_or_else(|| other.to_string());
            return bad_request(&format!("Invalid API key: {shown}"), json!({}));
        }
    }
    let Some(events) = body.get("events").and_then(Value::as_array) else {
        return bad_request("Request missing required field", json!({"missing_field": "events"}));
    };
    if events.len() > s.max_events {
        return error_body(413);
    }
    let min_id_length = body
        .get("options")
        .and_then(|o| o.get("min_id_length"))
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .unwrap_or(5);
    let (invalid, missing) = validate(events, min_id_length);
    if !invalid.is_empty() || !missing.is_empty() {
        let error =
            if missing.is_empty() { "Invalid field values on some events" } else { "Request missing required field" };
        let mut extra = Map::new();
        if !invalid.is_empty() {
            extra.insert("events_with_invalid_fields".into(), json!(invalid));
        }
        if !missing.is_empty() {
            extra.insert("events_with_missing_fields".into(), json!(missing));
        }
        return bad_request(error, Value::Object(extra));
    }
    if let Some(limit) = s.throttle
        && let Some(body) = throttled(events, limit)
    {
        return Action::json(429, &body);
    }
    for e in events {
        s.accepted_total += 1;
        match e.get("insert_id").and_then(Value::as_str) {
            Some(id) if !s.insert_ids.insert(id.to_owned()) => s.duplicates += 1,
            _ => s.events.push(e.clone()),
        }
    }
    Action::json(
        200,
        &json!({"code": 200, "events_ingested": events.len(), "payload_size_bytes": req.body.len(),
                "server_upload_time": now_ms()}),
    )
}

type FieldIndices = BTreeMap<&'static str, Vec<usize>>;

/// Per-event checks: `(events_with_invalid_fields, events_with_missing_fields)`.
fn validate(events: &[Value], min_id_length: usize) -> (FieldIndices, FieldIndices) {
    let (mut invalid, mut missing) = (FieldIndices::new(), FieldIndices::new());
    for (i, e) in events.iter().enumerate() {
        let present = |k: &str| e.get(k).is_some_and(|v| !v.is_null());
        match e.get("event_type") {
            Some(Value::String(t)) if !t.is_empty() => {}
            None | Some(Value::Null) => missing.entry("event_type").or_default().push(i),
            Some(_) => invalid.entry("event_type").or_default().push(i),
        }
        for field in ["user_id", "device_id"] {
            if !present(field) {
                continue;
            }
            let ok = e[field].as_str().is_some_and(|id| {
                id.chars().count() >= min_id_length
                    && !(field == "device_id" && id.chars().all(|c| c == '0' || c == '-'))
            });
            if !ok {
                invalid.entry(field).or_default().push(i);
            }
        }
        if !present("user_id") && !present("device_id") {
            missing.entry("user_id").or_default().push(i);
        }
        if present("time") && !(e["time"].is_i64() || e["time"].is_u64()) {
            invalid.entry("time").or_default().push(i);
        }
    }
    (invalid, missing)
}

/// The 429 body when a user or device has more than `limit` events in the
/// request; `None` when nobody does.
fn throttled(events: &[Value], limit: usize) -> Option<Value> {
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_device: BTreeMap<String, usize> = BTreeMap::new();
    let mut throttled_events = Vec::new();
    let (mut users, mut devices) = (HashSet::new(), HashSet::new());
    for (i, e) in events.iter().enumerate() {
        let mut over = false;
        if let Some(u) = e.get("user_id").and_then(Value::as_str) {
            let n = per_user.entry(u.to_owned()).or_default();
            *n += 1;
            if *n > limit {
                over = true;
                users.insert(u.to_owned());
            }
        }
        if let Some(d) = e.get("device_id").and_then(Value::as_str) {
            let n = per_device.entry(d.to_owned()).or_default();
            *n += 1;
            if *n > limit {
                over = true;
                devices.insert(d.to_owned());
            }
        }
        if over {
            throttled_events.push(i);
        }
    }
    if throttled_events.is_empty() {
        return None;
    }
    let pick = |m: &BTreeMap<String, usize>, keep: &HashSet<String>| -> Map<String, Value> {
        m.iter().filter(|(k, _)| keep.contains(*k)).map(|(k, v)| (k.clone(), json!(v))).collect()
    };
    Some(json!({
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": limit,
        "throttled_devices": pick(&per_device, &devices),
        "throttled_users": pick(&per_user, &users),
        "throttled_events": throttled_events,
    }))
}

/// `/groupidentify` and `/usermap`.
fn form_api(s: &mut Amplitude, req: &MockRequest) -> Action {
    if req.body.len() > 1_000_000 {
        return Action::text(413, "Payload too large");
    }
    if req.method == "POST"
        && !req.body.is_empty()
        && !req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return Action::text(400, "Content-Type must be application/x-www-form-urlencoded");
    }
    match req.form_field("api_key") {
        None => return Action::text(400, "missing api_key"),
        Some(k) if k != s.api_key => return Action::text(400, "invalid api_key"),
        Some(_) => {}
    }
    let param = if req.path == GROUPIDENTIFY { "identification" } else { "mapping" };
    let Some(text) = req.form_field(param) else {
        return Action::text(400, &format!("missing {param}"));
    };
    let items = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(item @ Value::Object(_)) => vec![item],
        _ => return Action::text(400, &format!("invalid {param}: not JSON")),
    };
    if items.is_empty() || items.len() > 1024 {
        return Action::text(400, &format!("invalid {param}: 1 to 1024 entries"));
    }
    let nonempty = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    for (i, item) in items.iter().enumerate() {
        let ok = if req.path == GROUPIDENTIFY {
            nonempty(item, "group_type")
                && (nonempty(item, "group_value") || item.get("group_value").is_some_and(Value::is_array))
                && item.get("group_properties").is_none_or(Value::is_object)
        } else {
            nonempty(item, "user_id") && (nonempty(item, "global_user_id") || item.get("unmap") == Some(&json!(true)))
        };
        if !ok {
            return Action::text(400, &format!("invalid {param}: entry {i}"));
        }
    }
    if req.path == GROUPIDENTIFY {
        s.groups.extend(items);
    } else {
        s.mappings.extend(items);
    }
    Action::text(200, "success")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use crate::mock::Fault;

    async fn post(mock: &AmplitudeMock, body: &Value) -> (u16, Value) {
        let (status, bytes) = http(
            hyper::Method::POST,
            &format!("{}{HTTPAPI}", mock.origin()),
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn ev(i: usize) -> Value {
        json!({"event_type": "E", "user_id": format!("user-{i}"), "insert_id": format!("ins-{i}"), "time": 1_700_000_000_000u64 + i as u64})
    }

    #[tokio::test]
    async fn accepts_and_dedupes() {
        let m = AmplitudeMock::start("key-1").await;
        let (status, body) = post(&m, &json!({"api_key": "key-1", "events": [ev(0), ev(1)]})).await;
        assert_eq!(status, 200);
        assert_eq!(body["code"], 200);
        assert_eq!(body["events_ingested"], 2);
        assert!(body["payload_size_bytes"].as_u64().unwrap() > 0);
        assert!(body["server_upload_time"].as_u64().unwrap() > 1_600_000_000_000);
        let (status, _) = post(&m, &json!({"api_key": "key-1", "events": [ev(1), ev(2)]})).await;
        assert_eq!(status, 200);
        assert_eq!(m.insert_ids(), vec!["ins-0", "ins-1", "ins-2"]);
        assert_eq!((m.accepted_total(), m.duplicates()), (4, 1));
    }

    #[tokio::test]
    async fn api_key_errors() {
        let m = AmplitudeMock::start("key-1").await;
        let (status, body) = post(&m, &json!({"events": [ev(0)]})).await;
        assert_eq!((status, &body["missing_field"]), (400, &json!("api_key")));
        let (status, body) = post(&m, &json!({"api_key": "nope-123", "events": [ev(0)]})).await;
        assert_eq!(status, 400);
        assert_eq!(body, json!({"code": 400, "error": "Invalid API key: nope-123"}));
        let (status, bytes) = http(
            hyper::Method::POST,
            &format!("{}{HTTPAPI}", m.origin()),
            &[("content-type", "text/plain")],
            json!({"api_key": "key-1", "events": [ev(0)]}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 400, "{bytes:?}");
        assert!(m.events().is_empty());
    }

    #[tokio::test]
    async fn invalid_events_reject_the_whole_request_with_indices() {
        let m = AmplitudeMock::start("key-1").await;
        let events = json!([
            ev(0),
            {"event_type": "E", "user_id": "abc"},
            {"event_type": "E"},
            {"user_id": "user-3"},
            {"event_type": "E", "device_id": "00000000-0000-0000-0000-000000000000"},
            {"event_type": "E", "user_id": "user-5", "time": "2024-05-01T00:00:00Z"},
            {"event_type": "E", "user_id": "user-6", "time": 1.5},
            ev(7),
        ]);
        let (status, body) = post(&m, &json!({"api_key": "key-1", "events": events})).await;
        assert_eq!(status, 400);
        assert_eq!(body["events_with_invalid_fields"], json!({"user_id": [1], "device_id": [4], "time": [5, 6]}));
        assert_eq!(body["events_with_missing_fields"], json!({"event_type": [3], "user_id": [2]}));
        assert!(m.events().is_empty(), "nothing of a 400 is ingested");
        // min_id_length lowers the bar.
        let (status, _) = post(
            &m,
            &json!({"api_key": "key-1", "events": [{"event_type": "E", "user_id": "abc"}], "options": {"min_id_length": 3}}),
        )
        .await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn size_limits_throttle_and_faults() {
        let m = AmplitudeMock::start("key-1").await;
        m.set_max_events(3);
        let (status, _) = post(&m, &json!({"api_key": "key-1", "events": [ev(0), ev(1), ev(2), ev(3)]})).await;
        assert_eq!(status, 413);
        m.set_max_events(2000);
        m.set_max_body_bytes(100);
        let (status, body) = post(&m, &json!({"api_key": "key-1", "events": [ev(0), ev(1)]})).await;
        assert_eq!((status, body["code"].clone()), (413, json!(413)));
        m.set_max_body_bytes(1_000_000);

        m.set_throttle(Some(2));
        let hot = |i: usize| json!({"event_type": "E", "user_id": "hot-user", "device_id": format!("dev-{i}-xx")});
        let (status, body) =
            post(&m, &json!({"api_key": "key-1", "events": [hot(0), ev(1), hot(2), hot(3), hot(4)]})).await;
        assert_eq!(status, 429);
        assert_eq!(body["throttled_events"], json!([3, 4]));
        assert_eq!(body["throttled_users"], json!({"hot-user": 4}));
        assert_eq!(body["throttled_devices"], json!({}));
        assert_eq!(body["eps_threshold"], 2);
        assert!(m.events().is_empty());
        m.set_throttle(None);

        m.fail_next(1, Fault::Status(503));
        m.fail_next(1, Fault::IngestThen(502));
        m.fail_next(1, Fault::retry_after(429, 7, "{}"));
        assert_eq!(post(&m, &json!({"api_key": "key-1", "events": [ev(0)]})).await.0, 503);
        assert_eq!(post(&m, &json!({"api_key": "key-1", "events": [ev(0)]})).await.0, 502);
        assert_eq!(post(&m, &json!({"api_key": "key-1", "events": [ev(0)]})).await.0, 429);
        assert_eq!(post(&m, &json!({"api_key": "key-1", "events": [ev(0)]})).await.0, 200);
        assert_eq!((m.events().len(), m.duplicates()), (1, 1), "the 502 ingested, the retry was a duplicate");
        m.outage(Fault::Hangup);
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let req = hyper::Request::post(format!("{}{HTTPAPI}", m.origin()))
            .body(http_body_util::Full::new(bytes::Bytes::from("{}")))
            .unwrap();
        assert!(client.request(req).await.is_err(), "a hang-up is a network error");
        m.recover();
        assert_eq!(m.statuses(HTTPAPI), vec![413, 413, 429, 503, 502, 429, 200, 0]);
    }

    #[tokio::test]
    async fn group_identify_and_usermap() {
        let m = AmplitudeMock::start("key-1").await;
        let form = |body: &str| {
            let url = m.origin();
            let body = body.to_owned();
            async move {
                let path = if body.contains("identification") { GROUPIDENTIFY } else { USERMAP };
                http(
                    hyper::Method::POST,
                    &format!("{url}{path}"),
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body.into_bytes(),
                )
                .await
            }
        };
        let ident = "%5B%7B%22group_type%22%3A%22org%22%2C%22group_value%22%3A%22acme%22%2C%22group_properties%22%3A%7B%22size%22%3A5%7D%7D%5D";
        let (status, body) = form(&format!("api_key=key-1&identification={ident}")).await;
        assert_eq!((status, &body[..]), (200, &b"success"[..]));
        assert_eq!(
            m.group_identifications(),
            vec![json!({"group_type": "org", "group_value": "acme", "group_properties": {"size": 5}})]
        );
        assert_eq!(form(&format!("api_key=wrong&identification={ident}")).await.0, 400);
        assert_eq!(form("api_key=key-1&identification=%7B%7D").await.0, 400);
        let mapping = "%5B%7B%22user_id%22%3A%22old-1%22%2C%22global_user_id%22%3A%22new-1%22%7D%5D";
        assert_eq!(form(&format!("api_key=key-1&mapping={mapping}")).await.0, 200);
        assert_eq!(m.user_mappings(), vec![json!({"user_id": "old-1", "global_user_id": "new-1"})]);
        assert_eq!(form("api_key=key-1&mapping=%5B%7B%22user_id%22%3A%22x%22%7D%5D").await.0, 400);
    }
}
