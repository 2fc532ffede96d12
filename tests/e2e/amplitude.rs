//! The Amplitude destination plugin through the real host, against the
//! loopback Amplitude mock (`switchyard_tests::amplitude`).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::amplitude::{GROUPIDENTIFY, HTTPAPI, USERMAP};
use switchyard_tests::{AmplitudeMock, Config, Fault, Switchyard, eventually, http, plugin, post_json};

const WAIT: Duration = Duration::from_secs(90);
const KEY: &str = "amp-project-key-5f1e2d";
const ADMIN: &str = "adm1n-token";

/// A config with one Amplitude destination named `amp` pointed at `mock`,
/// using `api_key`; `settings` adds to the settings table, `extra` to the
/// destination.
fn config(mock: &AmplitudeMock, api_key: &str, settings: &str, extra: &str) -> String {
    let lines = format!(
        r#"
settings = {{ api_key = "{api_key}", endpoint = "{origin}"{settings} }}
allow_http = ["{origin}"]
batch = {{ max_events = 100, linger_ms = 20 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
{extra}
"#,
        origin = mock.origin(),
    );
    Config::new()
        .admin(ADMIN)
        .source("web", "wk_test")
        .destination("amp", plugin("amplitude_destination"), &lines)
        .build()
}

async fn send(sy: &Switchyard, batch: Vec<Value>) {
    let (status, body) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": batch})).await;
    assert_eq!((status, body), (200, json!({"success": true})));
}

/// The destination's dead letters, from the admin API.
async fn dead_letters(sy: &Switchyard) -> Vec<Value> {
    let auth = format!("Bearer {ADMIN}");
    let (status, body) = http(
        hyper::Method::GET,
        &sy.admin_url("/admin/destinations/amp/dead-letters"),
        &[("authorization", auth.as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["dead_letters"].as_array().cloned().unwrap_or_default()
}

async fn metric(sy: &Switchyard, name: &str) -> u64 {
    sy.metric(&format!("switchyard_destination_{name}_total{{destination=\"amp\"}}")).await
}

/// Whether `text` holds `secret` or any 8-character piece of it (a
/// truncated echo is a leak too).
fn leaks(text: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(8.min(chars.len())).any(|w| text.contains(&w.iter().collect::<String>()))
}

fn track(id: &str, user: &str) -> Value {
    json!({"type": "track", "event": "Song Played", "userId": user, "messageId": id, "properties": {"n": id}})
}

#[tokio::test]
async fn all_six_types_arrive_mapped() {
    let mock = AmplitudeMock::start(KEY).await;
    let settings = r#", alias_usermap = true, group_type_trait = "kind""#;
    let sy = Switchyard::start(&config(&mock, KEY, settings, "")).await;
    let ios = json!({
        "device": {"id": "device-0001", "manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"},
        "os": {"name": "iOS", "version": "17.4"}, "ip": "203.0.113.7", "locale": "de-DE",
        "library": {"name": "analytics-ios", "version": "4.1.8"}, "app": {"version": "3.2.1"}
    });
    send(
        &sy,
        vec![
            json!({"type": "track", "event": "Order Completed", "userId": "user-0001", "anonymousId": "anon-0001",
                   "messageId": "amp-track", "timestamp": "2024-05-01T11:00:00Z", "context": ios,
                   "properties": {"total": 42.5, "currency": "EUR", "name": "Ünïcödé", "tags": ["a", "b"]}}),
            json!({"type": "identify", "userId": "user-0001", "messageId": "amp-identify",
                   "timestamp": "2024-05-01T11:00:01.250Z", "traits": {"plan": "pro", "email": "a@example.com"}}),
            json!({"type": "page", "anonymousId": "anon-page-01", "name": "Pricing", "messageId": "amp-page",
                   "properties": {"plan": "team"}, "context": {"page": {"url": "https://ex.com/pricing", "path": "/pricing"}}}),
            json!({"type": "screen", "userId": "user-0002", "name": "Home", "messageId": "amp-screen"}),
            json!({"type": "group", "userId": "user-0001", "groupId": "acme-corp", "messageId": "amp-group",
                   "traits": {"name": "Acme", "employees": 250, "kind": "company"}}),
            json!({"type": "alias", "userId": "user-0001", "previousId": "anon-0001", "messageId": "amp-alias"}),
            json!({"type": "track", "event": "Checkout", "userId": "user-0003", "messageId": "amp-products",
                   "properties": {"products": [{"product_id": "p-1", "price": 10, "quantity": 2}, {"product_id": "p-2", "price": 5}]}}),
        ],
    )
    .await;
    eventually(WAIT, "7 Segment events delivered", || {
        mock.events().len() >= 8 && !mock.group_identifications().is_empty() && !mock.user_mappings().is_empty()
    })
    .await;
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"amp\"}", 7).await, 7);
    assert_eq!(metric(&sy, "dead_lettered").await, 0, "{}", sy.logs());

    // The HTTP V2 requests: JSON with the key in the body.
    let reqs = mock.requests_to(HTTPAPI);
    assert!(reqs.iter().all(|r| r.status == 200 && r.method == "POST"));
    assert!(reqs.iter().all(|r| r.header("content-type").is_some_and(|c| c.starts_with("application/json"))));
    assert!(reqs.iter().all(|r| r.json()["api_key"] == KEY));
    let mut ids = mock.insert_ids();
    ids.sort();
    let want = [
        "amp-group",
        "amp-identify",
        "amp-page",
        "amp-products",
        "amp-products-product-0",
        "amp-products-product-1",
        "amp-screen",
        "amp-track",
    ];
    assert_eq!(ids, want, "one Amplitude event per Segment event (the alias goes to /usermap)");

    let t = mock.event("amp-track").unwrap();
    assert_eq!(t["event_type"], "Order Completed");
    assert_eq!(t["user_id"], "user-0001");
    assert_eq!(t["device_id"], "device-0001", "context.device.id wins over anonymousId");
    assert_eq!(t["time"], 1_714_561_200_000u64, "epoch ms of the timestamp");
    assert_eq!(t["event_properties"], json!({"total": 42.5, "currency": "EUR", "name": "Ünïcödé", "tags": ["a", "b"]}));
    assert_eq!(t["ip"], "203.0.113.7");
    assert_eq!(t["language"], "de-DE");
    assert_eq!((&t["os_name"], &t["os_version"]), (&json!("iOS"), &json!("17.4")));
    assert_eq!((&t["device_model"], &t["device_manufacturer"]), (&json!("iPhone15,2"), &json!("Apple")));
    assert_eq!(t["app_version"], "3.2.1");
    assert_eq!(t["platform"], "iOS");
    assert!(t["library"].as_str().unwrap().starts_with("analytics-ios"), "{t}");
    assert_eq!(t["revenue"], 42.5, "Order Completed's total is its revenue");

    let i = mock.event("amp-identify").unwrap();
    assert_eq!(i["event_type"], "$identify");
    assert_eq!(i["user_id"], "user-0001");
    assert!(i.get("device_id").is_none(), "{i}");
    assert_eq!(i["time"], 1_714_561_201_250u64);
    assert_eq!(i["user_properties"], json!({"$set": {"plan": "pro", "email": "a@example.com"}}));

    let p = mock.event("amp-page").unwrap();
    assert_eq!(p["event_type"], "Viewed Pricing");
    assert_eq!(p["device_id"], "anon-page-01", "anonymousId is the device id without context.device.id");
    assert!(p.get("user_id").is_none());
    assert_eq!(p["event_properties"]["plan"], "team");
    assert_eq!(p["event_properties"]["url"], "https://ex.com/pricing");
    assert!(p["time"].is_u64(), "{p}");

    let s = mock.event("amp-screen").unwrap();
    assert_eq!((&s["event_type"], &s["user_id"]), (&json!("Viewed Home"), &json!("user-0002")));

    let g = mock.event("amp-group").unwrap();
    assert_eq!(g["event_type"], "$identify");
    assert_eq!(g["groups"], json!({"company": "acme-corp"}), "the user joins the group");
    let gi = mock.requests_to(GROUPIDENTIFY);
    assert_eq!(gi.len(), 1);
    assert_eq!(gi[0].status, 200);
    assert!(gi[0].header("content-type").unwrap().starts_with("application/x-www-form-urlencoded"));
    assert_eq!(gi[0].form_field("api_key").as_deref(), Some(KEY));
    let identification: Value = serde_json::from_str(&gi[0].form_field("identification").unwrap()).unwrap();
    assert_eq!(
        identification,
        json!([{"group_type": "company", "group_value": "acme-corp",
                "group_properties": {"name": "Acme", "employees": 250, "kind": "company"}}])
    );

    let um = mock.requests_to(USERMAP);
    assert_eq!(um.len(), 1);
    assert_eq!(um[0].form_field("api_key").as_deref(), Some(KEY));
    assert_eq!(mock.user_mappings(), vec![json!({"user_id": "anon-0001", "global_user_id": "user-0001"})]);

    // By default revenue stays on the order (here there is none: a Checkout
    // without `revenue`), so the product events carry no revenue fields;
    // see the revenue tests below.
    let products = mock.event("amp-products").unwrap();
    assert_eq!(products["event_type"], "Checkout");
    let p0 = mock.event("amp-products-product-0").unwrap();
    assert_eq!(p0["event_type"], "Product Purchased");
    assert_eq!(p0["event_properties"], json!({"product_id": "p-1", "price": 10, "quantity": 2}));
    let p1 = mock.event("amp-products-product-1").unwrap();
    assert_eq!(p1["event_properties"], json!({"product_id": "p-2", "price": 5}));
    for e in [&products, &p0, &p1] {
        assert_eq!(revenue_fields(e), Vec::<&str>::new(), "{e}");
    }
}

/// Amplitude's revenue fields `event` carries.
fn revenue_fields(event: &Value) -> Vec<&'static str> {
    ["revenue", "price", "quantity", "productId", "revenueType"]
        .into_iter()
        .filter(|k| event.get(*k).is_some())
        .collect()
}

/// The revenue Amplitude counts for `events`: `price` × `quantity` (default
/// 1) where a price is set, else `revenue`.
fn counted_revenue(events: &[Value]) -> f64 {
    events
        .iter()
        .map(|e| match e["price"].as_f64() {
            Some(price) => price * e["quantity"].as_f64().unwrap_or(1.0),
            None => e["revenue"].as_f64().unwrap_or(0.0),
        })
        .sum()
}

/// An `Order Completed` of 30 (total 35) whose two products have prices
/// adding up to the same 30.
fn priced_order() -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "user-0001", "messageId": "order-1",
           "properties": {"order_id": "o-1", "revenue": 30, "total": 35, "currency": "EUR",
                          "products": [{"product_id": "p-1", "price": 10, "quantity": 2},
                                       {"product_id": "p-2", "price": 5, "quantity": 2, "revenueType": "Gift"}]}})
}

/// Sends [`priced_order`] to a destination with `settings` and returns the
/// order event and its two product events as Amplitude received them.
async fn deliver_priced_order(settings: &str) -> (Value, Value, Value, Vec<Value>) {
    let mock = AmplitudeMock::start(KEY).await;
    let sy = Switchyard::start(&config(&mock, KEY, settings, "")).await;
    send(&sy, vec![priced_order()]).await;
    eventually(WAIT, "the order and its 2 products", || mock.events().len() >= 3).await;
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"amp\"}", 1).await, 1);
    assert_eq!(metric(&sy, "dead_lettered").await, 0, "{}", sy.logs());
    let events = mock.events();
    assert_eq!(events.len(), 3, "{events:?}");
    let order = mock.event("order-1").unwrap();
    assert_eq!(order["event_type"], "Order Completed");
    assert_eq!(order["event_properties"]["revenue"], 30, "the properties are kept in both modes");
    let p0 = mock.event("order-1-product-0").unwrap();
    let p1 = mock.event("order-1-product-1").unwrap();
    for p in [&p0, &p1] {
        assert_eq!(p["event_type"], "Product Purchased");
        assert_eq!(p["user_id"], "user-0001");
    }
    (order, p0, p1, events)
}

#[tokio::test]
async fn order_revenue_is_counted_once_on_the_order_by_default() {
    let (order, p0, p1, events) = deliver_priced_order("").await;
    assert_eq!(order["revenue"], 30, "properties.revenue, on the order event");
    assert_eq!(order["revenueType"], "Purchase");
    for p in [&p0, &p1] {
        assert_eq!(revenue_fields(p), Vec::<&str>::new(), "no revenue on the product events: {p}");
    }
    assert_eq!(p0["event_properties"], json!({"product_id": "p-1", "price": 10, "quantity": 2}));
    assert_eq!(counted_revenue(&events), 30.0, "counted once: {events:?}");
}

#[tokio::test]
async fn track_revenue_per_product_counts_revenue_on_the_products() {
    let (order, p0, p1, events) = deliver_priced_order(", track_revenue_per_product = true").await;
    assert_eq!(revenue_fields(&order), Vec::<&str>::new(), "no revenue on the order event: {order}");
    assert_eq!(
        (&p0["price"], &p0["quantity"], &p0["productId"], &p0["revenueType"]),
        (&json!(10), &json!(2), &json!("p-1"), &json!("Purchase"))
    );
    assert_eq!(
        (&p1["price"], &p1["quantity"], &p1["productId"], &p1["revenueType"]),
        (&json!(5), &json!(2), &json!("p-2"), &json!("Gift"))
    );
    assert_eq!(counted_revenue(&events), 30.0, "counted once: {events:?}");
}

#[tokio::test]
async fn a_400_dead_letters_exactly_the_named_events_and_delivers_the_rest() {
    let mock = AmplitudeMock::start(KEY).await;
    let sy = Switchyard::start(&config(&mock, KEY, "", "")).await;
    // Amplitude refuses an all-zero device id (a Limit-Ad-Tracking IDFA);
    // Segment accepts it, and the plugin does not check it, so only the 400
    // can tell which events are bad.
    let zero = json!({"device": {"id": "00000000-0000-0000-0000-000000000000"}});
    let bad: BTreeSet<String> = ["bad-2", "bad-5", "bad-7"].map(String::from).into();
    let batch: Vec<Value> = (0..10)
        .map(|i| {
            let id = if [2, 5, 7].contains(&i) { format!("bad-{i}") } else { format!("good-{i}") };
            let mut e = track(&id, &format!("user-{i:04}"));
            if bad.contains(&id) {
                e["context"] = zero.clone();
            }
            e
        })
        .collect();
    send(&sy, batch).await;

    assert_eq!(sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"amp\"}", 3).await, 3);
    eventually(WAIT, "the 7 good events accepted", || mock.events().len() >= 7).await;
    let got: BTreeSet<String> = mock.insert_ids().into_iter().collect();
    let good: BTreeSet<String> = [0, 1, 3, 4, 6, 8, 9].map(|i| format!("good-{i}")).into();
    assert_eq!(got, good);

    // The mock did answer 400 naming device_id (the path under test ran).
    let refused: Vec<_> = mock.requests_to(HTTPAPI).into_iter().filter(|r| r.status == 400).collect();
    assert!(!refused.is_empty(), "statuses: {:?}", mock.statuses(HTTPAPI));
    let named_ids: BTreeSet<String> = refused
        .iter()
        .flat_map(|r| {
            let events = r.json()["events"].clone();
            let named = r.response_json()["events_with_invalid_fields"]["device_id"].clone();
            named
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |i| events[i.as_u64().unwrap() as usize]["insert_id"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(named_ids, bad);

    let dead = dead_letters(&sy).await;
    let dead_ids: BTreeSet<String> = dead.iter().map(|d| d["messageId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(dead_ids, bad, "exactly the named events are dead-lettered");
    for d in &dead {
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains("400") && reason.contains("device_id"), "{reason}");
    }
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"amp\"}", 7).await, 7);
}

#[tokio::test]
async fn a_413_splits_the_request_and_everything_arrives() {
    let mock = AmplitudeMock::start(KEY).await;
    // Stricter than the plugin's own limits (2000 events, 1 MB): only the
    // 413s can make it split.
    mock.set_max_body_bytes(6000);
    mock.set_max_events(8);
    let sy = Switchyard::start(&config(&mock, KEY, "", "")).await;
    let ids: Vec<String> = (0..40).map(|i| format!("big-{i:02}")).collect();
    let batch = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut e = track(id, &format!("user-{i:04}"));
            e["properties"]["pad"] = json!("x".repeat(400));
            e
        })
        .collect();
    send(&sy, batch).await;
    eventually(WAIT, "all 40 events accepted", || mock.events().len() >= 40).await;
    let statuses = mock.statuses(HTTPAPI);
    assert!(statuses.contains(&413), "{statuses:?}");
    let got: BTreeSet<String> = mock.insert_ids().into_iter().collect();
    assert_eq!(got, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(mock.events().len(), 40);
    for r in mock.requests_to(HTTPAPI).iter().filter(|r| r.status == 200) {
        assert!(r.body.len() <= 6000 && r.json()["events"].as_array().unwrap().len() <= 8);
    }
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"amp\"}", 40).await, 40);
    assert_eq!(metric(&sy, "dead_lettered").await, 0);
}

#[tokio::test]
async fn throttled_events_arrive_after_the_throttle() {
    let mock = AmplitudeMock::start(KEY).await;
    mock.set_throttle(Some(4));
    let sy = Switchyard::start(&config(&mock, KEY, "", "")).await;
    // Seven events of one user (three over the threshold) among three others.
    let mut batch = Vec::new();
    for i in 0..10 {
        let user = if i % 3 == 2 { format!("calm-user-{i}") } else { "hot-user-01".to_owned() };
        batch.push(track(&format!("t-{i}"), &user));
    }
    send(&sy, batch).await;
    // Amplitude asks for 30 s; the plugin waits that long.
    eventually(Duration::from_secs(150), "all 10 events accepted", || mock.events().len() >= 10).await;
    let reqs = mock.requests_to(HTTPAPI);
    let first_429 = reqs.iter().find(|r| r.status == 429).expect("a 429 was answered");
    let body = first_429.response_json();
    let throttled: BTreeSet<String> = body["throttled_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| first_429.json()["events"][i.as_u64().unwrap() as usize]["insert_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(throttled.len(), 3, "{body}");
    assert_eq!(body["throttled_users"], json!({"hot-user-01": 7}));
    // The others were resent at once; the throttled ones came ~30 s later.
    let accepted_at = |id: &str| {
        reqs.iter()
            .find(|r| r.status == 200 && r.json()["events"].as_array().unwrap().iter().any(|e| e["insert_id"] == id))
            .map(|r| r.at)
            .unwrap()
    };
    for id in &throttled {
        let waited = accepted_at(id) - first_429.at;
        assert!(waited >= Duration::from_secs(25), "{id} resent after {waited:?}");
    }
    let got: BTreeSet<String> = mock.insert_ids().into_iter().collect();
    assert_eq!(got, (0..10).map(|i| format!("t-{i}")).collect::<BTreeSet<_>>());
    assert_eq!(mock.events().len(), 10);
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"amp\"}", 10).await, 10);
    assert_eq!(metric(&sy, "dead_lettered").await, 0);
}

#[tokio::test]
async fn an_outage_then_recovery_delivers_each_event_exactly_once() {
    let mock = AmplitudeMock::start(KEY).await;
    // The first request is ingested but answered 502 (Amplitude warns this
    // happens): its resend must be recognised by insert_id.
    mock.fail_next(1, Fault::IngestThen(502));
    let sy = Switchyard::start(&config(&mock, KEY, "", "")).await;
    let mut ids = Vec::new();
    let mut batch_of = |b: usize| -> Vec<Value> {
        (0..20)
            .map(|i| {
                let id = format!("o-{b}-{i}");
                ids.push(id.clone());
                track(&id, &format!("user-{i:04}"))
            })
            .collect()
    };
    let first = batch_of(0);
    send(&sy, first).await;
    eventually(WAIT, "the ingest-then-502", || mock.statuses(HTTPAPI).contains(&502)).await;
    mock.outage(Fault::Status(503));
    for b in 1..5 {
        let batch = batch_of(b);
        send(&sy, batch).await;
    }
    eventually(WAIT, "several 503s", || mock.statuses(HTTPAPI).iter().filter(|s| **s == 503).count() >= 5).await;
    mock.recover();
    eventually(WAIT, "all 100 events accepted", || mock.events().len() >= 100).await;
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"amp\"}", 100).await, 100);

    let events = mock.events();
    assert_eq!(events.len(), 100, "exactly once after dedupe");
    let unique: HashSet<String> = mock.insert_ids().into_iter().collect();
    assert_eq!(unique, ids.iter().cloned().collect::<HashSet<_>>());
    // Each insert_id is the event's messageId, so the resends were duplicates.
    assert!(mock.duplicates() >= 20, "the 502'd batch was resent: {} duplicates", mock.duplicates());
    assert_eq!(mock.accepted_total(), 100 + mock.duplicates());
    assert!(metric(&sy, "retried").await > 0);
    assert_eq!(metric(&sy, "dead_lettered").await, 0);
}

#[tokio::test]
async fn a_wrong_api_key_dead_letters_without_leaking_the_key() {
    let mock = AmplitudeMock::start(KEY).await;
    let wrong = "amp-WRONG-key-7f3c9a1b";
    let sy = Switchyard::start(&config(&mock, wrong, "", "")).await;
    send(
        &sy,
        vec![
            track("k-1", "user-0001"),
            json!({"type": "identify", "userId": "user-0001", "messageId": "k-2", "traits": {"plan": "pro"}}),
            json!({"type": "page", "userId": "user-0001", "name": "Home", "messageId": "k-3"}),
            json!({"type": "group", "userId": "user-0001", "groupId": "acme-corp", "messageId": "k-4"}),
        ],
    )
    .await;
    assert_eq!(sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"amp\"}", 4).await, 4);
    // Amplitude's answer names the key, so a careless reason would leak it.
    let answers = mock.requests_to(HTTPAPI);
    assert!(answers.iter().any(|r| r.status == 400 && r.response.contains(wrong)), "{answers:?}");
    assert!(mock.events().is_empty() && mock.group_identifications().is_empty());

    let dead = dead_letters(&sy).await;
    let ids: BTreeSet<&str> = dead.iter().map(|d| d["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["k-1", "k-2", "k-3", "k-4"].into());
    for d in &dead {
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains("400"), "{reason}");
        assert!(!leaks(reason, wrong), "the key leaked: {reason}");
    }
    assert!(!leaks(&sy.logs(), wrong), "the key leaked into the log");
    assert_eq!(metric(&sy, "delivered").await, 0);
    // Rejected, not retried: no request after the first refusal of each kind.
    let before = mock.requests().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.requests().len(), before);
    assert_eq!(metric(&sy, "retried").await, 0);
}
