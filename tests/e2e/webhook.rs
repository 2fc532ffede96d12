//! The webhook example plugin through the real host, against a loopback
//! receiver.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, eventually, plugin, post_json};

const WAIT: Duration = Duration::from_secs(60);

fn config(receiver: &Receiver, extra: &str) -> String {
    let lines = format!(
        r#"
settings = {{ url = "{origin}/hook", headers = {{ "X-Token" = "t0ken" }} }}
allow_http = ["{origin}"]
batch = {{ max_events = 50, linger_ms = 20 }}
{extra}
"#,
        origin = receiver.origin(),
    );
    Config::new().source("web", "wk_test").destination("hook", plugin("webhook_destination"), &lines).build()
}

#[tokio::test]
async fn batch_is_delivered_with_its_fields_mapped() {
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, "")).await;
    let body = json!({
        "batch": [
            {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m-1",
             "properties": {"total": 42.5, "items": [{"sku": "a"}], "name": "Ünïcödé"},
             "timestamp": "2024-05-01T11:00:00Z"},
            {"type": "identify", "anonymousId": "anon-2", "messageId": "m-2", "traits": {"plan": "pro"}},
            {"type": "page", "userId": "u1", "name": "Pricing", "messageId": "m-3"}
        ],
        "sentAt": "2024-05-01T11:00:05Z",
        "context": {"library": {"name": "analytics-test", "version": "1.0"}}
    });
    let (status, resp) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &body).await;
    assert_eq!((status, resp), (200, json!({"success": true})));

    eventually(WAIT, "3 events at the receiver", || receiver.message_ids().len() >= 3).await;
    let req = &receiver.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.headers.get("x-token").map(String::as_str), Some("t0ken"));
    assert_eq!(req.headers.get("content-type").map(String::as_str), Some("application/json"));
    let events: Vec<Value> =
        receiver.requests().iter().flat_map(|r| r.json()["batch"].as_array().cloned().unwrap_or_default()).collect();
    let track = events.iter().find(|e| e["messageId"] == "m-1").expect("track delivered");
    assert_eq!(track["event"], "Order Completed");
    assert_eq!(track["properties"], json!({"total": 42.5, "items": [{"sku": "a"}], "name": "Ünïcödé"}));
    assert_eq!(track["originalTimestamp"], "2024-05-01T11:00:00.000Z");
    assert!(track["receivedAt"].is_string());
    assert_eq!(track["context"]["library"]["name"], "analytics-test");
    let identify = events.iter().find(|e| e["messageId"] == "m-2").expect("identify delivered");
    assert_eq!(identify["traits"]["plan"], "pro");
    assert_eq!(identify["type"], "identify");
    assert_eq!(events.iter().find(|e| e["messageId"] == "m-3").expect("page")["name"], "Pricing");
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"hook\"}", 3).await, 3);
}

#[tokio::test]
async fn single_event_endpoint_with_key_in_body() {
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, "")).await;
    let (status, _) =
        post_json(&sy.url("/v1/track"), None, &json!({"writeKey": "wk_test", "userId": "u9", "event": "Signed Up"}))
            .await;
    assert_eq!(status, 200);
    eventually(WAIT, "one event", || receiver.message_ids().len() == 1).await;
    let event = &receiver.requests()[0].json()["batch"][0];
    assert_eq!(event["type"], "track");
    assert_eq!(event["event"], "Signed Up");
    assert!(event.get("writeKey").is_none(), "the write key must not be forwarded: {event}");
    assert_eq!(event["messageId"].as_str().map(str::len), Some(36), "a messageId is assigned");
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    // The receiver answers 500 to its first two requests, then 200.
    let receiver = Receiver::start(|i, _| (if i < 2 { 500 } else { 200 }, vec![], "busy".into())).await;
    let sy = Switchyard::start(&config(&receiver, "retry = { initial_backoff_ms = 20, max_backoff_ms = 100 }")).await;
    let batch: Vec<Value> =
        (0..5).map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("r-{i}")})).collect();
    let (status, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": batch})).await;
    assert_eq!(status, 200);

    let ids_in = |reqs: &[switchyard_tests::Received]| -> Vec<String> {
        reqs.iter()
            .flat_map(|r| r.json()["batch"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
            .collect()
    };
    eventually(WAIT, "every event in a successful request", || {
        let reqs = receiver.requests();
        let ok = ids_in(reqs.get(2..).unwrap_or_default());
        (0..5).all(|i| ok.contains(&format!("r-{i}")))
    })
    .await;
    let reqs = receiver.requests();
    let failed = ids_in(&reqs[..2]);
    assert!(failed.len() >= 2, "the failed requests carried events: {failed:?}");
    // Each failed attempt was counted as a retry, and every event delivered once.
    let delivered = sy.wait_metric("switchyard_destination_delivered_total{destination=\"hook\"}", 5).await;
    assert_eq!(delivered, 5);
    assert_eq!(sy.metric("switchyard_destination_retried_total{destination=\"hook\"}").await, failed.len() as u64);
    assert_eq!(sy.metric("switchyard_destination_dead_lettered_total{destination=\"hook\"}").await, 0);
}

#[tokio::test]
async fn client_errors_are_rejected_not_retried() {
    let receiver = Receiver::start(|_, _| (400, vec![], r#"{"error":"bad event"}"#.into())).await;
    let sy = Switchyard::start(&config(&receiver, "retry = { initial_backoff_ms = 20, max_backoff_ms = 100 }")).await;
    let (status, _) = post_json(
        &sy.url("/v1/batch"),
        Some("wk_test"),
        &json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "bad-1"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let dead = sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"hook\"}", 1).await;
    assert_eq!(dead, 1, "the event is rejected:\n{}", sy.logs());
    // Give a retry, if one were (wrongly) scheduled, ample time to happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1, "a 400 must not be retried");
    assert_eq!(sy.metric("switchyard_destination_retried_total{destination=\"hook\"}").await, 0);
    let logs = sy.logs();
    assert!(logs.contains("event dead-lettered") && logs.contains("HTTP 400"), "{logs}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    // 429 with Retry-After: 1 → the second attempt comes no sooner than ~1 s.
    let receiver = Receiver::start(|i, _| {
        if i == 0 {
            (429, vec![("Retry-After".into(), "1".into())], String::new())
        } else {
            (200, vec![], String::new())
        }
    })
    .await;
    let sy = Switchyard::start(&config(&receiver, "retry = { initial_backoff_ms = 10, max_backoff_ms = 20 }")).await;
    let started = std::time::Instant::now();
    post_json(&sy.url("/v1/track"), Some("wk_test"), &json!({"userId": "u", "event": "E", "messageId": "ra-1"})).await;
    eventually(WAIT, "second attempt", || receiver.count() >= 2).await;
    // The backoff alone would retry within 20 ms; only Retry-After explains a
    // gap of a second. (A lower bound: it cannot flake on a slow machine.)
    assert!(started.elapsed() >= Duration::from_millis(950), "retried after {:?}", started.elapsed());
}

#[tokio::test]
async fn plugin_cannot_reach_hosts_outside_allow_http() {
    let allowed = Receiver::always(200).await;
    let other = Receiver::always(200).await;
    // The webhook's URL points at `other`, which is not in allow_http.
    let cfg = config(&allowed, "quarantine = { after_failures = 2, initial_ms = 60000 }")
        .replace(&format!("{}/hook", allowed.origin()), &format!("{}/hook", other.origin()));
    let sy = Switchyard::start(&cfg).await;
    post_json(&sy.url("/v1/track"), Some("wk_test"), &json!({"userId": "u", "event": "E"})).await;
    // The breach fails the call; twice in a row quarantines the destination.
    let q = sy.wait_metric("switchyard_destination_quarantined{destination=\"hook\"}", 1).await;
    assert_eq!(q, 1, "{}", sy.logs());
    let breaches =
        sy.metric("switchyard_destination_quota_breaches_total{destination=\"hook\",quota=\"http_origin\"}").await;
    assert!(breaches >= 2, "breaches: {breaches}");
    assert_eq!(other.count(), 0, "the request must never leave the host");
    assert_eq!(allowed.count(), 0);
    // The event is not dead-lettered: it waits in the log for a fixed config.
    assert_eq!(sy.metric("switchyard_destination_dead_lettered_total{destination=\"hook\"}").await, 0);
    let logs = sy.logs();
    assert!(logs.contains("destination quarantined") && logs.contains("not in allow_http"), "{logs}");
}

#[tokio::test]
async fn events_per_second_paces_delivery() {
    let receiver = Receiver::always(200).await;
    let sy =
        Switchyard::start(&config(&receiver, "quota = { events_per_second = 50, max_concurrent_calls = 4 }")).await;
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({"type": "track", "event": "Paced", "userId": "u", "messageId": format!("p-{i}")}))
        .collect();
    let (status, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await;
    assert_eq!(status, 200);
    eventually(WAIT, "the first batch", || receiver.count() >= 1).await;
    let first = std::time::Instant::now();
    eventually(WAIT, "all 200 events", || receiver.message_ids().len() >= 200).await;
    // 200 events at 50/s with a one-second bucket: the first 50 go at once,
    // the last 50 no sooner than 2 s later. A lower bound cannot flake.
    assert!(first.elapsed() >= Duration::from_millis(1_700), "all delivered after {:?}", first.elapsed());
    assert!(receiver.requests().iter().all(|r| r.json()["batch"].as_array().is_some_and(|b| b.len() <= 50)));
}
