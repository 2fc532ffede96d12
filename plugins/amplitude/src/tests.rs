//! Native tests through the SDK's harness: mapping, batching, outcomes,
//! settings.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::{Value, json};
use switchyard_plugin_sdk::http::{HttpError, Request, Response};
use switchyard_plugin_sdk::testing::{Harness, event};
use switchyard_plugin_sdk::{Event, InitError, Outcome, form};

use crate::Amplitude;
use crate::client::MAX_ROUNDS;

const KEY: &str = "0123456789abcdefSECRETKEY";
const US_HTTPAPI: &str = "https://api2.amplitude.com/2/httpapi";

fn harness_with(extra: Value) -> Harness<Amplitude> {
    let mut settings = json!({"api_key": KEY});
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Harness::new(settings).expect("valid settings")
}

/// A harness with `extra` settings whose every request is answered 200.
fn ok_harness(extra: Value) -> Harness<Amplitude> {
    let mut h = harness_with(extra);
    h.respond(|_| Ok(Response::new(200, r#"{"code":200,"events_ingested":1}"#)));
    h
}

fn harness() -> Harness<Amplitude> {
    ok_harness(json!({}))
}

fn body(req: &Request) -> Value {
    serde_json::from_str(&req.body).expect("JSON body")
}

fn events(req: &Request) -> Vec<Value> {
    body(req)["events"].as_array().cloned().unwrap_or_default()
}

/// The only event of the only request.
fn one(h: &Harness<Amplitude>) -> Value {
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let evs = events(&reqs[0]);
    assert_eq!(evs.len(), 1);
    evs[0].clone()
}

/// Decodes a form body into (name, value) pairs.
fn form_fields(body: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect()
}

fn form_json(req: &Request, field: &str) -> Value {
    let fields = form_fields(&req.body);
    assert_eq!(fields[0], ("api_key".to_owned(), KEY.to_owned()));
    let (_, v) = fields.iter().find(|(k, _)| k == field).unwrap();
    serde_json::from_str(v).unwrap()
}

fn track(i: usize) -> Event {
    event(json!({"type": "track", "event": "Clicked", "userId": format!("user-{i}"), "messageId": format!("m{i}"),
        "timestamp": "2024-05-01T12:00:00Z"}))
}

fn tracks(n: usize) -> Vec<Event> {
    (0..n).map(track).collect()
}

/// Whether `text` holds any 8-character piece of the key.
fn leaks(text: &str) -> bool {
    let chars: Vec<char> = KEY.chars().collect();
    chars.windows(8).any(|w| text.contains(&w.iter().collect::<String>()))
}

fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Rejected(r) => r,
        Outcome::Retry { reason, .. } => reason,
        Outcome::Delivered => "",
    }
}

fn assert_rejected(o: &Outcome, needle: &str) {
    assert!(matches!(o, Outcome::Rejected(r) if r.contains(needle)), "expected rejection with {needle:?}, got {o:?}");
}

// ---------------------------------------------------------------- mapping

#[test]
fn track_maps_every_context_field() {
    let mut h = harness();
    let e = event(json!({
        "type": "track", "event": "Song Played", "userId": "user-123", "anonymousId": "anon-456",
        "messageId": "msg-1", "timestamp": "2024-05-01T12:00:00.250Z",
        "properties": {"song": "Blue", "plays": 3},
        "context": {
            "ip": "203.0.113.9", "locale": "de-DE", "userAgent": "Mozilla/5.0",
            "app": {"version": "2.3.1", "build": 7},
            "device": {"id": "device-789", "manufacturer": "Apple", "model": "iPhone15,2", "type": "ios",
                       "advertisingId": "ad-id-0001", "brand": "Apple"},
            "os": {"name": "iOS", "version": "17.4"},
            "network": {"carrier": "T-Mobile"},
            "location": {"country": "Germany", "region": "Berlin", "city": "Berlin", "latitude": 52.52, "longitude": 13.4},
            "library": {"name": "analytics-ios", "version": "4.1.0"},
            "traits": {"plan": "pro"}
        }
    }));
    assert_eq!(h.deliver(vec![e]), vec![Outcome::Delivered]);
    let req = &h.requests()[0];
    assert_eq!(req.url, US_HTTPAPI);
    assert_eq!(req.header_value("content-type"), Some("application/json"));
    assert_eq!(body(req)["api_key"], KEY);
    assert!(body(req).get("options").is_none());
    let ev = one(&h);
    assert_eq!(
        ev,
        json!({
            "event_type": "Song Played", "user_id": "user-123", "device_id": "device-789",
            "time": 1_714_564_800_250_i64, "insert_id": "msg-1",
            "event_properties": {"song": "Blue", "plays": 3},
            "user_properties": {"$set": {"plan": "pro"}},
            "ip": "203.0.113.9", "app_version": "2.3.1", "platform": "iOS", "os_name": "iOS", "os_version": "17.4",
            "device_brand": "Apple", "device_manufacturer": "Apple", "device_model": "iPhone15,2",
            "carrier": "T-Mobile", "country": "Germany", "region": "Berlin", "city": "Berlin",
            "location_lat": 52.52, "location_lng": 13.4, "language": "de-DE",
            "library": "analytics-ios/4.1.0", "idfa": "ad-id-0001", "idfv": "device-789"
        })
    );
}

#[test]
fn android_gets_adid_and_web_gets_platform_from_user_agent() {
    let mut h = harness();
    let android = event(json!({"type": "track", "event": "A", "anonymousId": "anon-1",
        "context": {"os": {"name": "Android"}, "device": {"type": "android", "advertisingId": "gaid-1"}}}));
    let opted_out = event(json!({"type": "track", "event": "A", "anonymousId": "anon-1",
        "context": {"os": {"name": "Android"}, "device": {"advertisingId": "gaid-1", "adTrackingEnabled": false}}}));
    let web = event(json!({"type": "track", "event": "W", "anonymousId": "anon-1",
        "context": {"userAgent": "Mozilla/5.0", "library": {"name": "analytics.js"}}}));
    h.deliver(vec![android, opted_out, web]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["adid"], "gaid-1");
    assert_eq!(evs[0]["platform"], "Android");
    assert!(evs[0].get("idfa").is_none() && evs[0].get("idfv").is_none());
    assert!(evs[1].get("adid").is_none(), "adTrackingEnabled=false keeps the advertising id out");
    assert_eq!(evs[2]["platform"], "Web");
    assert_eq!(evs[2]["library"], "analytics.js");
    assert_eq!(evs[2]["device_id"], "anon-1");
    assert!(evs[2].get("user_id").is_none());
}

#[test]
fn page_named_and_unnamed_with_context_page() {
    let mut h = harness();
    let named = event(json!({"type": "page", "name": "Pricing", "userId": "user-1",
        "properties": {"title": "Own title"},
        "context": {"page": {"url": "https://x.io/pricing?a=1", "path": "/pricing", "referrer": "https://google.com",
                             "title": "Ctx title", "search": "?a=1"}}}));
    let unnamed = event(json!({"type": "page", "userId": "user-1"}));
    assert_eq!(h.deliver(vec![named, unnamed]), vec![Outcome::Delivered; 2]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["event_type"], "Viewed Pricing");
    assert_eq!(
        evs[0]["event_properties"],
        json!({"title": "Own title", "url": "https://x.io/pricing?a=1", "path": "/pricing",
               "referrer": "https://google.com", "search": "?a=1"})
    );
    assert_eq!(evs[1]["event_type"], "Loaded a Page");
    assert!(evs[1].get("event_properties").is_none());
}

#[test]
fn screen_named_and_unnamed() {
    let mut h = harness();
    let named =
        event(json!({"type": "screen", "name": "Checkout", "anonymousId": "anon-1", "properties": {"step": 2}}));
    let unnamed = event(json!({"type": "screen", "name": "", "anonymousId": "anon-1"}));
    h.deliver(vec![named, unnamed]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["event_type"], "Viewed Checkout");
    assert_eq!(evs[0]["event_properties"], json!({"step": 2}));
    assert_eq!(evs[1]["event_type"], "Loaded a Screen");
}

#[test]
fn identify_sets_traits_including_booleans() {
    let mut h = harness();
    let e = event(json!({"type": "identify", "userId": "user-1", "messageId": "id-1",
        "traits": {"email": "a@b.c", "vip": true, "age": 41, "tags": ["x"]},
        "context": {"traits": {"ignored": 1}, "groups": {"org": "acme"}}}));
    assert_eq!(h.deliver(vec![e]), vec![Outcome::Delivered]);
    let ev = one(&h);
    assert_eq!(ev["event_type"], "$identify");
    assert_eq!(ev["user_properties"], json!({"$set": {"email": "a@b.c", "vip": true, "age": 41, "tags": ["x"]}}));
    assert_eq!(ev["groups"], json!({"org": "acme"}));
    assert_eq!(ev["insert_id"], "id-1");
    assert!(ev.get("event_properties").is_none());
}

#[test]
fn missing_ids_are_rejected_without_a_request() {
    let mut h = harness();
    let e = event(json!({"type": "track", "event": "X", "properties": {"a": 1}}));
    let out = h.deliver(vec![e]);
    assert_rejected(&out[0], "missing userId and anonymousId/device id");
    assert!(h.requests().is_empty());
}

#[test]
fn short_ids_are_rejected_locally_by_default() {
    let mut h = harness();
    let short_user = event(json!({"type": "track", "event": "X", "userId": "u1", "anonymousId": "anon-123"}));
    let short_anon = event(json!({"type": "track", "event": "X", "anonymousId": "abcd"}));
    let ok = event(json!({"type": "track", "event": "X", "anonymousId": "abcde"}));
    let out = h.deliver(vec![short_user, short_anon, ok]);
    assert_rejected(&out[0], "userId is 2 characters long");
    assert_rejected(&out[0], "min_id_length");
    assert_rejected(&out[1], "anonymousId is 4 characters long");
    assert_eq!(out[2], Outcome::Delivered);
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(events(&reqs[0]).len(), 1);
}

#[test]
fn min_id_length_is_sent_and_applied() {
    let mut h = harness_with(json!({"min_id_length": 1}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    let out = h.deliver(vec![event(json!({"type": "track", "event": "X", "userId": "u"}))]);
    assert_eq!(out, vec![Outcome::Delivered]);
    assert_eq!(body(&h.requests()[0])["options"], json!({"min_id_length": 1}));

    let mut h = harness_with(json!({"min_id_length": 8}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    let out = h.deliver(vec![
        event(json!({"type": "track", "event": "X", "userId": "1234567"})),
        event(json!({"type": "track", "event": "X", "userId": "12345678"})),
    ]);
    assert_rejected(&out[0], "minimum id length of 8");
    assert_eq!(out[1], Outcome::Delivered);
    assert_eq!(body(&h.requests()[0])["options"]["min_id_length"], 8);
}

#[test]
fn id_length_counts_characters_not_bytes() {
    let mut h = harness();
    let out = h.deliver(vec![event(json!({"type": "track", "event": "X", "userId": "ééé"}))]);
    assert_rejected(&out[0], "3 characters");
}

#[test]
fn device_id_prefers_context_device_id() {
    let mut h = harness();
    h.deliver(vec![event(json!({"type": "track", "event": "X", "anonymousId": "anon-1",
        "context": {"device": {"id": "dev-12345"}}}))]);
    assert_eq!(one(&h)["device_id"], "dev-12345");
}

#[test]
fn odd_types_are_tolerated() {
    let mut h = harness();
    let numeric_user = event(json!({"type": "track", "event": "X", "userId": 1234567}));
    let null_props = event(json!({"type": "track", "event": "X", "userId": "user-1", "properties": null}));
    let array_props = event(json!({"type": "track", "event": "X", "userId": "user-1", "properties": [1, 2]}));
    let odd_context = event(json!({"type": "track", "event": "X", "userId": "user-1",
        "context": {"device": "phone", "traits": [1], "location": {"latitude": "1.5", "longitude": "x"}}}));
    let bool_traits = event(json!({"type": "identify", "userId": "user-1", "traits": {"a": false, "b": null}}));
    let numeric_event = event(json!({"type": "track", "event": 42, "userId": "user-1"}));
    let out = h.deliver(vec![numeric_user, null_props, array_props, odd_context, bool_traits, numeric_event]);
    assert_eq!(out, vec![Outcome::Delivered; 6]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["user_id"], "1234567");
    assert!(evs[1].get("event_properties").is_none());
    assert!(evs[2].get("event_properties").is_none());
    assert_eq!(evs[3]["location_lat"], 1.5);
    assert!(evs[3].get("location_lng").is_none());
    assert_eq!(evs[4]["user_properties"], json!({"$set": {"a": false, "b": null}}));
    assert_eq!(evs[5]["event_type"], "42");
}

#[test]
fn track_without_a_name_is_rejected() {
    let mut h = harness();
    let out = h.deliver(vec![event(json!({"type": "track", "event": "  ", "userId": "user-1"}))]);
    assert_rejected(&out[0], "no `event` name");
    assert!(h.requests().is_empty());
}

#[test]
fn unicode_names_and_keys_survive() {
    let mut h = harness();
    let e = event(json!({"type": "track", "event": "Kauf abgeschlossen ✓ 日本", "userId": "benutzer-ü",
        "properties": {"größe": "groß", "emoji 🎉": {"deep": ["日本", {"ключ": "значение"}]}}}));
    assert_eq!(h.deliver(vec![e]), vec![Outcome::Delivered]);
    let ev = one(&h);
    assert_eq!(ev["event_type"], "Kauf abgeschlossen ✓ 日本");
    assert_eq!(ev["user_id"], "benutzer-ü");
    assert_eq!(ev["event_properties"]["größe"], "groß");
    assert_eq!(ev["event_properties"]["emoji 🎉"]["deep"][1]["ключ"], "значение");
}

#[test]
fn time_is_integer_ms_from_the_offset_timestamp() {
    let mut h = harness();
    h.deliver(vec![event(json!({"type": "track", "event": "X", "userId": "user-1",
        "timestamp": "2024-05-01T12:00:00+02:00"}))]);
    let ev = one(&h);
    assert!(ev["time"].is_i64(), "{}", ev["time"]);
    assert_eq!(ev["time"], 1_714_557_600_000_i64);
    assert!(h.requests()[0].body.contains("\"time\":1714557600000"));
}

#[test]
fn insert_id_is_the_message_id() {
    let mut h = harness();
    h.deliver(tracks(3));
    let ids: Vec<_> = events(&h.requests()[0]).iter().map(|e| e["insert_id"].clone()).collect();
    assert_eq!(ids, vec![json!("m0"), json!("m1"), json!("m2")]);
}

#[test]
fn session_id_sources() {
    let mut h = harness();
    let from_integrations = event(json!({"type": "track", "event": "X", "userId": "user-1",
        "integrations": {"Amplitude": {"session_id": 1_714_564_800_000_i64}}, "properties": {"session_id": 5}}));
    let from_context = event(json!({"type": "track", "event": "X", "userId": "user-1",
        "context": {"session_id": "1714564800001"}}));
    let from_props =
        event(json!({"type": "track", "event": "X", "userId": "user-1", "properties": {"session_id": -7}}));
    let none = event(json!({"type": "track", "event": "X", "userId": "user-1"}));
    h.deliver(vec![from_integrations, from_context, from_props, none]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["session_id"], 1_714_564_800_000_i64);
    assert_eq!(evs[1]["session_id"], 1_714_564_800_001_i64);
    assert_eq!(evs[2]["session_id"], -1);
    assert!(evs[3].get("session_id").is_none());
}

#[test]
fn groups_pass_through_from_context_and_properties() {
    let mut h = harness();
    let e = event(json!({"type": "track", "event": "X", "userId": "user-1",
        "context": {"groups": {"company": "acme", "team": "a"}}, "properties": {"groups": {"team": ["b", "c"]}}}));
    let not_object = event(json!({"type": "page", "userId": "user-1", "context": {"groups": "acme"}}));
    h.deliver(vec![e, not_object]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["groups"], json!({"company": "acme", "team": ["b", "c"]}));
    assert!(evs[1].get("groups").is_none());
}

// ---------------------------------------------------------------- revenue

#[test]
fn revenue_fields_on_a_plain_track() {
    let mut h = harness();
    let e = event(json!({"type": "track", "event": "Subscription Renewed", "userId": "user-1",
        "properties": {"revenue": 9.99, "price": "4.995", "quantity": 2, "productId": "plan-pro", "revenueType": "Renewal"}}));
    let no_revenue = event(json!({"type": "track", "event": "X", "userId": "user-1", "properties": {"total": 5}}));
    h.deliver(vec![e, no_revenue]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs[0]["revenue"], 9.99);
    assert_eq!(evs[0]["price"], 4.995);
    assert_eq!(evs[0]["quantity"], 2);
    assert_eq!(evs[0]["productId"], "plan-pro");
    assert_eq!(evs[0]["revenueType"], "Renewal");
    for key in ["revenue", "price", "revenueType"] {
        assert!(evs[1].get(key).is_none(), "{key}: total counts only for Order Completed");
    }
}

#[test]
fn order_completed_without_products_uses_total() {
    let mut h = harness();
    h.deliver(vec![event(json!({"type": "track", "event": "Order Completed", "userId": "user-1",
        "properties": {"total": 42.5, "order_id": "o1"}}))]);
    let ev = one(&h);
    assert_eq!(ev["revenue"], 42.5);
    assert_eq!(ev["revenueType"], "Purchase");
}

/// The five Amplitude revenue fields.
const REVENUE_FIELDS: [&str; 5] = ["revenue", "price", "quantity", "productId", "revenueType"];

/// An `Order Completed` with revenue, total and three priced products (and
/// a non-object entry, skipped).
fn priced_order() -> Event {
    event(json!({"type": "track", "event": "Order Completed", "userId": "user-1", "messageId": "order-1",
    "properties": {"order_id": "o1", "revenue": 30, "total": 35, "revenueType": "Sale",
        "products": [
            {"product_id": "p1", "sku": "S1", "price": 10, "quantity": 2, "name": "Shoe"},
            {"sku": "S2", "price": "10.5"},
            {"id": "p3", "price": 1, "quantity": 1.6, "revenueType": "Gift"},
            "not an object"
        ]}}))
}

#[test]
fn order_revenue_is_counted_on_the_order_by_default() {
    let mut h = harness();
    assert_eq!(h.deliver(vec![priced_order()]), vec![Outcome::Delivered]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs.len(), 4);
    let order = &evs[0];
    assert_eq!(order["event_type"], "Order Completed");
    assert_eq!(order["revenue"], 30, "properties.revenue wins over total");
    assert_eq!(order["revenueType"], "Sale");
    for p in &evs[1..] {
        assert_eq!(p["event_type"], "Product Purchased");
        for key in REVENUE_FIELDS {
            assert!(p.get(key).is_none(), "product carries no {key}: revenue is on the order: {p}");
        }
    }
    let p = &evs[1];
    assert_eq!(p["insert_id"], "order-1-product-0");
    assert_eq!(p["user_id"], "user-1");
    assert_eq!(
        p["event_properties"],
        json!({"product_id": "p1", "sku": "S1", "price": 10, "quantity": 2, "name": "Shoe"})
    );
    assert_eq!(evs[3]["insert_id"], "order-1-product-2");

    // Without revenue or total, the products' prices are not added up.
    let mut h = harness();
    h.deliver(vec![event(json!({"type": "track", "event": "Checkout", "userId": "user-1", "messageId": "c",
        "properties": {"products": [{"product_id": "p1", "price": 10}]}}))]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs.len(), 2);
    for (ev, key) in evs.iter().flat_map(|e| REVENUE_FIELDS.map(|k| (e, k))) {
        assert!(ev.get(key).is_none(), "{key}: {ev}");
    }
}

#[test]
fn track_revenue_per_product_moves_revenue_to_the_products() {
    let mut h = ok_harness(json!({"track_revenue_per_product": true}));
    assert_eq!(h.deliver(vec![priced_order()]), vec![Outcome::Delivered]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs.len(), 4);
    let order = &evs[0];
    assert_eq!(order["event_type"], "Order Completed");
    assert_eq!(order["insert_id"], "order-1");
    for key in REVENUE_FIELDS {
        assert!(order.get(key).is_none(), "order carries no {key}: revenue is per product");
    }
    assert_eq!(order["event_properties"]["revenue"], 30, "the properties themselves are kept");
    let p = &evs[1];
    assert_eq!(p["event_type"], "Product Purchased");
    assert_eq!(p["insert_id"], "order-1-product-0");
    assert_eq!(p["user_id"], "user-1");
    assert_eq!((p["price"].clone(), p["quantity"].clone()), (json!(10), json!(2)));
    assert_eq!(p["productId"], "p1");
    assert_eq!(p["revenueType"], "Sale");
    assert_eq!(p["event_properties"]["name"], "Shoe");
    assert!(p.get("revenue").is_none());
    assert_eq!(evs[2]["insert_id"], "order-1-product-1");
    assert_eq!(evs[2]["price"], 10.5);
    assert_eq!(evs[2]["quantity"], 1);
    assert_eq!(evs[2]["productId"], "S2");
    assert_eq!(evs[3]["productId"], "p3");
    assert_eq!(evs[3]["quantity"], 2);
    assert_eq!(evs[3]["revenueType"], "Gift");
}

#[test]
fn track_revenue_per_product_without_product_events_keeps_revenue_on_the_order() {
    let mut h = ok_harness(json!({"track_revenue_per_product": true, "track_products": false}));
    h.deliver(vec![priced_order()]);
    let ev = one(&h);
    assert_eq!((ev["revenue"].clone(), ev["revenueType"].clone()), (json!(30), json!("Sale")));
}

#[test]
fn products_without_prices_keep_revenue_on_the_order() {
    let order = || {
        event(json!({"type": "track", "event": "Order Completed", "userId": "user-1", "messageId": "o",
        "properties": {"revenue": 12, "products": [{"product_id": "p1", "quantity": 3}]}}))
    };
    // Default: the product event carries no revenue field at all.
    let mut h = harness();
    h.deliver(vec![order()]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["revenue"], 12);
    assert_eq!(evs[0]["revenueType"], "Purchase");
    for key in REVENUE_FIELDS {
        assert!(evs[1].get(key).is_none(), "{key}: {}", evs[1]);
    }
    // Per product: no product has a price, so the order keeps its revenue;
    // the product event has its id, quantity and type but no price.
    let mut h = ok_harness(json!({"track_revenue_per_product": true}));
    h.deliver(vec![order()]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["revenue"], 12);
    assert_eq!(evs[0]["revenueType"], "Purchase");
    assert_eq!(evs[1]["productId"], "p1");
    assert_eq!(evs[1]["quantity"], 3);
    assert_eq!(evs[1]["revenueType"], "Purchase");
    assert!(evs[1].get("price").is_none());
    assert!(evs[1].get("revenue").is_none());
}

#[test]
fn any_track_with_products_emits_them_unless_disabled() {
    let e = || {
        event(json!({"type": "track", "event": "Cart Viewed", "userId": "user-1", "messageId": "c",
        "properties": {"products": [{"sku": "a", "price": 1}]}}))
    };
    let mut h = harness();
    h.deliver(vec![e()]);
    assert_eq!(events(&h.requests()[0]).len(), 2);

    let mut h = harness_with(json!({"track_products": false}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    h.deliver(vec![e()]);
    let evs = events(&h.requests()[0]);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["event_properties"]["products"][0]["sku"], "a");
}

#[test]
fn a_refused_product_event_rejects_its_order() {
    let mut h = harness_with(json!({}));
    h.push_response(Ok(Response::new(
        400,
        r#"{"code":400,"error":"Request missing required field","events_with_invalid_fields":{"price":[2]}}"#,
    )));
    h.respond(|_| Ok(Response::new(200, "{}")));
    let order = event(json!({"type": "track", "event": "Order Completed", "userId": "user-1", "messageId": "o",
        "properties": {"products": [{"price": 1}]}}));
    let out = h.deliver(vec![track(0), order, track(2)]);
    assert_eq!(out[0], Outcome::Delivered);
    assert_rejected(&out[1], "`price`");
    assert_eq!(out[2], Outcome::Delivered);
}

// ---------------------------------------------------------------- group and alias

#[test]
fn group_sends_groupidentify_and_identify() {
    let mut h = harness();
    let e = event(json!({"type": "group", "userId": "user-1", "groupId": "org-42", "messageId": "g1",
        "traits": {"name": "Acme", "employees": 50}}));
    assert_eq!(h.deliver(vec![e]), vec![Outcome::Delivered]);
    let reqs = h.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].url, "https://api2.amplitude.com/groupidentify");
    assert_eq!(reqs[0].header_value("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(
        form_json(&reqs[0], "identification"),
        json!([{"group_type": "group", "group_value": "org-42", "group_properties": {"name": "Acme", "employees": 50}}])
    );
    assert_eq!(reqs[1].url, US_HTTPAPI);
    let ev = &events(&reqs[1])[0];
    assert_eq!(ev["event_type"], "$identify");
    assert_eq!(ev["groups"], json!({"group": "org-42"}));
    assert_eq!(ev["user_id"], "user-1");
    assert_eq!(ev["insert_id"], "g1");
}

#[test]
fn group_type_and_value_traits() {
    let mut h =
        harness_with(json!({"group_type_trait": "kind", "group_value_trait": "slug", "default_group_type": "org"}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    let both = event(
        json!({"type": "group", "userId": "user-1", "groupId": "g-1", "traits": {"kind": "team", "slug": "blue"}}),
    );
    let fallback = event(json!({"type": "group", "userId": "user-1", "groupId": 12345, "traits": {"slug": ["x"]}}));
    let none = event(json!({"type": "group", "userId": "user-1", "traits": {}}));
    let out = h.deliver(vec![both, fallback, none]);
    assert_eq!(out[..2], [Outcome::Delivered, Outcome::Delivered]);
    assert_rejected(&out[2], "groupId");
    let reqs = h.requests();
    assert_eq!(reqs.len(), 2, "one groupidentify for both groups, one httpapi");
    let ids = form_json(&reqs[0], "identification");
    assert_eq!((ids[0]["group_type"].clone(), ids[0]["group_value"].clone()), (json!("team"), json!("blue")));
    assert_eq!((ids[1]["group_type"].clone(), ids[1]["group_value"].clone()), (json!("org"), json!("12345")));
    let evs = events(&reqs[1]);
    assert_eq!(evs[0]["groups"], json!({"team": "blue"}));
    assert_eq!(evs[1]["groups"], json!({"org": "12345"}));
}

#[test]
fn group_outcome_is_the_worst_of_its_two_requests() {
    let mut h = harness_with(json!({}));
    h.respond(|req| {
        Ok(if req.url.ends_with("/groupidentify") { Response::new(503, "") } else { Response::new(200, "{}") })
    });
    let g = event(json!({"type": "group", "userId": "user-1", "groupId": "org-1"}));
    let out = h.deliver(vec![g, track(1)]);
    assert!(matches!(&out[0], Outcome::Retry { .. }), "{out:?}");
    assert_eq!(out[1], Outcome::Delivered);
}

#[test]
fn a_bad_group_among_several_is_isolated() {
    let mut h = harness_with(json!({}));
    h.respond(|req| {
        Ok(if req.url.ends_with("/groupidentify") && req.body.contains("bad-group") {
            Response::new(400, "invalid group_value")
        } else {
            Response::new(200, "{}")
        })
    });
    let g = |id: &str| event(json!({"type": "group", "userId": "user-1", "groupId": id}));
    let out = h.deliver(vec![g("good-1"), g("bad-group"), g("good-2")]);
    assert_eq!(out[0], Outcome::Delivered);
    assert_rejected(&out[1], "invalid group_value");
    assert_eq!(out[2], Outcome::Delivered);
}

#[test]
fn alias_is_a_no_op_by_default() {
    let mut h = harness();
    let out = h.deliver(vec![event(json!({"type": "alias", "userId": "user-1", "previousId": "anon-1"}))]);
    assert_eq!(out, vec![Outcome::Delivered]);
    assert!(h.requests().is_empty());
}

#[test]
fn alias_usermap_form_encoding_is_exact() {
    let mut h = harness_with(json!({"alias_usermap": true}));
    h.respond(|_| Ok(Response::new(200, "")));
    let out = h.deliver(vec![
        event(json!({"type": "alias", "userId": "new user+1", "previousId": "old-ü&1"})),
        event(json!({"type": "alias", "userId": "user-2"})),
    ]);
    assert_eq!(out[0], Outcome::Delivered);
    assert_rejected(&out[1], "previousId");
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url, "https://api.amplitude.com/usermap");
    assert_eq!(reqs[0].header_value("content-type"), Some("application/x-www-form-urlencoded"));
    let mapping = json!([{"user_id": "old-ü&1", "global_user_id": "new user+1"}]);
    let expected = format!("api_key={KEY}&mapping={}", form::encode(&mapping.to_string()));
    assert_eq!(reqs[0].body, expected);
    assert!(reqs[0].body.contains("%22old-%C3%BC%261%22"), "{}", reqs[0].body);
    assert!(reqs[0].body.contains("%22new+user%2B1%22"), "{}", reqs[0].body);
    assert_eq!(form_json(&reqs[0], "mapping"), mapping);
}

#[test]
fn api_key_is_form_encoded() {
    let key = "k3y+with/odd=chars";
    let mut h = Harness::<Amplitude>::new(json!({"api_key": key, "alias_usermap": true})).unwrap();
    h.respond(|_| Ok(Response::new(200, "")));
    h.deliver(vec![event(json!({"type": "alias", "userId": "user-1", "previousId": "prev-1"}))]);
    assert!(h.requests()[0].body.starts_with("api_key=k3y%2Bwith%2Fodd%3Dchars&mapping="));
}

// ---------------------------------------------------------------- endpoints

#[test]
fn eu_region_urls() {
    let mut h = harness_with(json!({"region": "eu", "alias_usermap": true}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    h.deliver(vec![
        track(0),
        event(json!({"type": "group", "userId": "user-1", "groupId": "g-1"})),
        event(json!({"type": "alias", "userId": "user-1", "previousId": "prev-1"})),
    ]);
    let mut urls: Vec<_> = h.requests().iter().map(|r| r.url.clone()).collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            "https://api.eu.amplitude.com/2/httpapi",
            "https://api.eu.amplitude.com/groupidentify",
            "https://api.eu.amplitude.com/usermap"
        ]
    );
}

#[test]
fn custom_endpoint_overrides_region() {
    let mut h = harness_with(json!({"region": "eu", "endpoint": "http://127.0.0.1:9000/amp/", "alias_usermap": true}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    h.deliver(vec![
        event(json!({"type": "group", "userId": "user-1", "groupId": "g-1"})),
        event(json!({"type": "alias", "userId": "user-1", "previousId": "prev-1"})),
    ]);
    let urls: Vec<_> = h.requests().iter().map(|r| r.url.clone()).collect();
    assert_eq!(
        urls,
        vec![
            "http://127.0.0.1:9000/amp/groupidentify",
            "http://127.0.0.1:9000/amp/usermap",
            "http://127.0.0.1:9000/amp/2/httpapi"
        ]
    );
}

#[test]
fn default_us_urls() {
    let mut h = harness();
    let urls = h.destination().config().urls.clone();
    assert_eq!(urls.httpapi, US_HTTPAPI);
    assert_eq!(urls.groupidentify, "https://api2.amplitude.com/groupidentify");
    assert_eq!(urls.usermap, "https://api.amplitude.com/usermap");
}

// ---------------------------------------------------------------- batching

#[test]
fn splits_by_event_count() {
    let mut h = harness_with(json!({"max_events_per_request": 2}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    assert_eq!(h.deliver(tracks(5)), vec![Outcome::Delivered; 5]);
    let sizes: Vec<_> = h.requests().iter().map(|r| events(r).len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
}

#[test]
fn splits_near_one_megabyte() {
    let mut h = harness();
    let big = "x".repeat(400_000);
    let batch: Vec<_> = (0..3)
        .map(|i| {
            event(json!({"type": "track", "event": "Big", "userId": "user-1", "messageId": format!("b{i}"),
            "properties": {"blob": big, "nested": {"a": [1, 2, {"b": "c"}]}}}))
        })
        .collect();
    assert_eq!(h.deliver(batch), vec![Outcome::Delivered; 3]);
    let reqs = h.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.body.len() <= 1_000_000));
    assert_eq!(events(&reqs[0]).len(), 2);
    assert_eq!(events(&reqs[1])[0]["insert_id"], "b2");
    assert_eq!(events(&reqs[1])[0]["event_properties"]["nested"]["a"][2]["b"], "c");
}

#[test]
fn an_event_over_the_byte_limit_is_rejected_locally() {
    let mut h = harness();
    let huge = event(json!({"type": "track", "event": "Huge", "userId": "user-1",
        "properties": {"blob": "y".repeat(1_000_001)}}));
    let out = h.deliver(vec![huge, track(1)]);
    assert_rejected(&out[0], "event too large for Amplitude");
    assert_eq!(out[1], Outcome::Delivered);
    assert_eq!(h.requests().len(), 1);
    assert_eq!(events(&h.requests()[0]).len(), 1);
}

#[test]
fn smaller_byte_limit_is_honoured() {
    let mut h = harness_with(json!({"max_bytes_per_request": 2000}));
    h.respond(|_| Ok(Response::new(200, "{}")));
    let batch: Vec<_> = (0..10)
        .map(|i| {
            event(json!({"type": "track", "event": "E", "userId": "user-1", "messageId": format!("m{i}"),
            "properties": {"pad": "p".repeat(300)}}))
        })
        .collect();
    assert_eq!(h.deliver(batch), vec![Outcome::Delivered; 10]);
    let reqs = h.requests();
    assert!(reqs.len() > 1);
    assert!(reqs.iter().all(|r| r.body.len() <= 2000), "{:?}", reqs.iter().map(|r| r.body.len()).collect::<Vec<_>>());
    assert_eq!(reqs.iter().map(|r| events(r).len()).sum::<usize>(), 10);
}

// ---------------------------------------------------------------- responses

#[test]
fn partial_400_rejects_named_events_and_resends_the_rest() {
    let mut h = harness_with(json!({}));
    h.push_response(Ok(Response::new(
        400,
        r#"{"code":400,"error":"Invalid field values on some events",
            "events_with_invalid_fields":{"time":[1]},"events_with_missing_fields":{"event_type":[3]}}"#,
    )));
    h.respond(|_| Ok(Response::new(200, r#"{"code":200}"#)));
    let out = h.deliver(tracks(4));
    assert_eq!(out[0], Outcome::Delivered);
    assert_rejected(&out[1], "invalid field `time`");
    assert_rejected(&out[1], "Invalid field values on some events");
    assert_eq!(out[2], Outcome::Delivered);
    assert_rejected(&out[3], "missing field `event_type`");
    let reqs = h.requests();
    assert_eq!(reqs.len(), 2);
    let resent: Vec<_> = events(&reqs[1]).iter().map(|e| e["insert_id"].clone()).collect();
    assert_eq!(resent, vec![json!("m0"), json!("m2")]);
}

#[test]
fn a_400_without_indices_rejects_all_without_the_key() {
    let mut h = harness_with(json!({}));
    h.respond(|_| {
        Ok(Response::new(400, format!(r#"{{"code":400,"error":"Invalid API key: {KEY}","missing_field":"api_key"}}"#)))
    });
    let out = h.deliver(tracks(2));
    for o in &out {
        assert_rejected(o, "HTTP 400");
        assert_rejected(o, "missing field `api_key`");
        assert!(!leaks(reason(o)), "{o:?}");
    }
    assert_eq!(h.requests().len(), 1);
}

#[test]
fn resending_is_bounded() {
    let mut h = harness_with(json!({}));
    h.respond(|_| Ok(Response::new(400, r#"{"code":400,"events_with_invalid_fields":{"time":[0]}}"#)));
    let out = h.deliver(tracks(10));
    let requests = h.requests().len();
    assert_eq!(requests, MAX_ROUNDS as usize + 1);
    assert!(out[..requests].iter().all(|o| matches!(o, Outcome::Rejected(_))));
    assert!(out[requests..].iter().all(|o| matches!(o, Outcome::Retry { .. })), "{out:?}");
}

#[test]
fn a_413_splits_the_request() {
    let mut h = harness_with(json!({}));
    h.respond(|req| {
        let n = body(req)["events"].as_array().unwrap().len();
        Ok(if n > 2 { Response::new(413, "Payload too large") } else { Response::new(200, "{}") })
    });
    assert_eq!(h.deliver(tracks(5)), vec![Outcome::Delivered; 5]);
    let sizes: Vec<_> = h.requests().iter().map(|r| events(r).len()).collect();
    assert_eq!(sizes, vec![5, 2, 3, 1, 2]);
    let order: Vec<_> = h.requests()[1..].iter().flat_map(events).map(|e| e["insert_id"].clone()).collect::<Vec<_>>();
    assert_eq!(order.iter().filter(|id| id.as_str() == Some("m0")).count(), 1);
}

#[test]
fn a_single_event_still_too_large_is_rejected() {
    let mut h = harness_with(json!({}));
    h.respond(|_| Ok(Response::new(413, "")));
    let out = h.deliver(tracks(2));
    for o in &out {
        assert_rejected(o, "event too large for Amplitude");
    }
    assert_eq!(h.requests().len(), 3);
}

#[test]
fn a_429_retries_throttled_events_after_30s_and_resends_the_rest() {
    let mut h = harness_with(json!({}));
    h.push_response(Ok(Response::new(
        429,
        r#"{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,
            "throttled_devices":{},"throttled_users":{"user-0":31},"throttled_events":[0,2]}"#,
    )));
    h.respond(|_| Ok(Response::new(200, "{}")));
    let out = h.deliver(tracks(3));
    assert!(matches!(&out[0], Outcome::Retry { after_ms: Some(30_000), .. }), "{out:?}");
    assert_eq!(out[1], Outcome::Delivered);
    assert!(matches!(&out[2], Outcome::Retry { after_ms: Some(30_000), .. }));
    let reqs = h.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(events(&reqs[1]).len(), 1);
    assert_eq!(events(&reqs[1])[0]["insert_id"], "m1");
}

#[test]
fn a_429_without_indices_retries_everything() {
    let mut h = harness_with(json!({}));
    h.respond(|_| Ok(Response::new(429, "slow down")));
    let out = h.deliver(tracks(2));
    assert!(out.iter().all(|o| matches!(o, Outcome::Retry { after_ms: Some(30_000), .. })), "{out:?}");
    assert_eq!(h.requests().len(), 1);
}

#[test]
fn unauthorized_rejects_naming_the_api_key_setting() {
    for status in [401, 403] {
        let mut h = harness_with(json!({}));
        h.respond(move |_| Ok(Response::new(status, format!("bad key {KEY}"))));
        let out = h.deliver(tracks(2));
        for o in &out {
            assert_rejected(o, "api_key");
            assert_rejected(o, &format!("HTTP {status}"));
            assert!(!leaks(reason(o)));
        }
    }
}

#[test]
fn server_errors_retry_honouring_retry_after() {
    for status in [500, 502, 503, 504, 408] {
        let mut h = harness_with(json!({}));
        h.respond(move |_| Ok(Response::new(status, "busy").with_header("Retry-After", "2")));
        let out = h.deliver(tracks(2));
        assert_eq!(out, vec![Outcome::retry_after(2000, format!("HTTP {status}: busy")); 2], "{status}");
    }
    let mut h = harness_with(json!({}));
    h.respond(|_| Ok(Response::new(500, "")));
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::retry("HTTP 500")]);
}

#[test]
fn other_client_errors_reject_with_status() {
    let mut h = harness_with(json!({}));
    h.push_response(Ok(Response::new(404, "not found")));
    h.push_response(Ok(Response::new(501, "")));
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::rejected("HTTP 404: not found")]);
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::rejected("HTTP 501")]);
}

#[test]
fn network_errors_retry_and_denied_origin_rejects() {
    let mut h = harness_with(json!({}));
    h.push_response(Err(HttpError::Connection("connection refused".into())));
    h.push_response(Err(HttpError::Timeout));
    h.push_response(Err(HttpError::Denied("https://api2.amplitude.com".into())));
    assert!(matches!(&h.deliver(tracks(1))[0], Outcome::Retry { reason, .. } if reason.contains("refused")));
    assert!(matches!(&h.deliver(tracks(1))[0], Outcome::Retry { .. }));
    assert_rejected(&h.deliver(tracks(1))[0], "origin not allowed");
}

#[test]
fn form_endpoints_map_statuses() {
    let g = || event(json!({"type": "group", "anonymousId": "anon-1", "groupId": "g-1"}));
    type Check = fn(&Outcome) -> bool;
    let cases: Vec<(Response, Check)> = vec![
        (Response::new(429, ""), |o| matches!(o, Outcome::Retry { after_ms: Some(30_000), .. })),
        (Response::new(502, "").with_header("Retry-After", "5"), |o| {
            matches!(o, Outcome::Retry { after_ms: Some(5000), .. })
        }),
        (Response::new(401, ""), |o| matches!(o, Outcome::Rejected(r) if r.contains("api_key"))),
        (Response::new(413, ""), |o| matches!(o, Outcome::Rejected(r) if r.contains("group identify too large"))),
        (
            Response::new(400, "missing_field: identification"),
            |o| matches!(o, Outcome::Rejected(r) if r.contains("identification")),
        ),
    ];
    for (resp, check) in cases {
        let status = resp.status;
        let mut h = harness_with(json!({}));
        h.respond(move |req| {
            Ok(if req.url.ends_with("/groupidentify") { resp.clone() } else { Response::new(200, "{}") })
        });
        let out = h.deliver(vec![g()]);
        assert!(check(&out[0]), "{status}: {out:?}");
    }
}

#[test]
fn secrets_never_reach_logs_or_outcomes() {
    let mut h = harness_with(json!({"alias_usermap": true}));
    let n = Rc::new(Cell::new(0));
    let counter = n.clone();
    h.respond(move |_| {
        counter.set(counter.get() + 1);
        let echo = format!("Invalid API key: {KEY} ({}) {}…", form::encode(KEY), &KEY[..9]);
        Ok(match counter.get() % 5 {
            0 => Response::new(400, format!(r#"{{"code":400,"error":"{echo}"}}"#)),
            1 => Response::new(401, echo),
            2 => Response::new(500, echo),
            3 => Response::new(404, echo),
            _ => Response::new(429, echo),
        })
    });
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.extend(h.deliver(vec![
            track(0),
            event(json!({"type": "group", "userId": "user-1", "groupId": "g-1"})),
            event(json!({"type": "alias", "userId": "user-1", "previousId": "prev-1"})),
        ]));
    }
    h.push_response(Err(HttpError::Connection(format!("reset while sending {KEY}"))));
    outcomes.extend(h.deliver(tracks(1)));
    assert!(n.get() >= 10);
    for o in &outcomes {
        assert!(!leaks(reason(o)), "{o:?}");
    }
    let logs = h.logs();
    assert!(!logs.is_empty());
    for (_, line) in &logs {
        assert!(!leaks(line), "{line}");
    }
}

#[test]
fn local_rejections_do_not_block_the_rest() {
    let mut h = harness();
    let out = h.deliver(vec![
        event(json!({"type": "track", "event": "X"})),
        track(1),
        event(json!({"type": "identify", "userId": "abc"})),
        track(3),
    ]);
    assert!(matches!(out[0], Outcome::Rejected(_)));
    assert_eq!(out[1], Outcome::Delivered);
    assert!(matches!(out[2], Outcome::Rejected(_)));
    assert_eq!(out[3], Outcome::Delivered);
    assert_eq!(events(&h.requests()[0]).len(), 2);
}

#[test]
fn empty_batch_sends_nothing() {
    let mut h = harness();
    assert!(h.deliver(Vec::new()).is_empty());
    assert!(h.requests().is_empty());
}

// ---------------------------------------------------------------- settings

fn init_err(settings: Value) -> String {
    match Harness::<Amplitude>::new(settings) {
        Ok(_) => panic!("settings accepted"),
        Err(InitError::InvalidSettings(m)) => m,
        Err(e) => panic!("wrong error kind: {e:?}"),
    }
}

#[test]
fn settings_errors_name_the_setting() {
    assert_eq!(init_err(json!({})), "missing field `api_key`");
    assert!(init_err(json!({"api_key": ""})).contains("`api_key`"));
    assert!(init_err(json!({"api_key": "   "})).contains("`api_key`"));
    assert!(init_err(json!({"api_key": 5})).contains("api_key"));
    for bad in ["ftp://x.io", "api.amplitude.com", "https://", "https://x.io/?q=1", "https://x.io/#f", "http://a b"] {
        let m = init_err(json!({"api_key": KEY, "endpoint": bad}));
        assert!(m.contains("`endpoint`"), "{bad}: {m}");
    }
    assert!(init_err(json!({"api_key": KEY, "region": "mars"})).contains("`region`"));
    assert!(init_err(json!({"api_key": KEY, "bogus": 1})).contains("bogus"));
    for n in [0, 2001] {
        assert!(init_err(json!({"api_key": KEY, "max_events_per_request": n})).contains("max_events_per_request"));
    }
    assert!(init_err(json!({"api_key": KEY, "max_events_per_request": -1})).contains("max_events_per_request"));
    for n in [100, 1_000_001] {
        assert!(init_err(json!({"api_key": KEY, "max_bytes_per_request": n})).contains("max_bytes_per_request"));
    }
    assert!(init_err(json!({"api_key": KEY, "min_id_length": 0})).contains("min_id_length"));
    assert!(init_err(json!({"api_key": KEY, "group_type_trait": ""})).contains("group_type_trait"));
    assert!(init_err(json!({"api_key": KEY, "alias_usermap": "yes"})).contains("alias_usermap"));
    let m = init_err(json!({"api_key": KEY, "track_revenue_per_product": "true"}));
    assert!(m.contains("track_revenue_per_product"), "{m}");
}

#[test]
fn settings_errors_never_echo_the_key() {
    for s in [
        json!({"api_key": KEY, "endpoint": "nope"}),
        json!({"api_key": KEY, "region": "xx"}),
        json!({"api_key": KEY, "max_events_per_request": 0}),
    ] {
        assert!(!leaks(&init_err(s)));
    }
}

#[test]
fn settings_defaults_and_variants() {
    let mut h = Harness::<Amplitude>::new(json!({"api_key": KEY})).unwrap();
    let c = h.destination().config().clone();
    assert_eq!(c.urls.httpapi, US_HTTPAPI);
    assert_eq!((c.max_events, c.max_bytes, c.min_id_length), (2000, 1_000_000, None));
    assert!(c.track_products && !c.alias_usermap && !c.track_revenue_per_product);
    assert_eq!(c.default_group_type, "group");
    let mut h = Harness::<Amplitude>::new(json!({"api_key": KEY, "region": "US"})).unwrap();
    assert_eq!(h.destination().config().urls.usermap, "https://api.amplitude.com/usermap");
    let mut h =
        Harness::<Amplitude>::new(json!({"api_key": KEY, "endpoint": "https://proxy.example.com:8443/"})).unwrap();
    assert_eq!(h.destination().config().urls.httpapi, "https://proxy.example.com:8443/2/httpapi");
}
