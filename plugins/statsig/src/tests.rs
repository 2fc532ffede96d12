//! The destination end to end through the SDK's native harness.

use serde_json::{Value, json};
use switchyard_plugin_sdk::http::{HttpError, Method, Request, Response};
use switchyard_plugin_sdk::log::Level;
use switchyard_plugin_sdk::testing::{Harness, event};
use switchyard_plugin_sdk::{Event, InitError, Outcome};

use super::*;

const SECRET: &str = "secret-Zq9TestKey0123456789";
const CLOCK_MS: i64 = 1_714_600_000_000;
const OK_BODY: &str = r#"{"success":true}"#;

fn fixed_clock() -> Option<i64> {
    Some(CLOCK_MS)
}

fn no_clock() -> Option<i64> {
    None
}

/// A harness with `extra` settings over the minimal ones, a fixed clock and
/// Statsig answering 200.
fn harness_with(extra: Value) -> Harness<Statsig> {
    let mut settings = json!({"server_secret": SECRET});
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let mut h = Harness::<Statsig>::new(settings).expect("valid settings");
    h.destination().set_clock(fixed_clock);
    h.respond(|_| Ok(Response::new(200, OK_BODY)));
    h
}

fn harness() -> Harness<Statsig> {
    harness_with(json!({}))
}

fn body(req: &Request) -> Value {
    serde_json::from_str(&req.body).expect("JSON body")
}

/// Delivers `events`, expects them all delivered, returns every Statsig
/// event sent, across requests.
fn send_all(h: &mut Harness<Statsig>, events: Vec<Value>) -> Vec<Value> {
    let n = events.len();
    let before = h.requests().len();
    let outcomes = h.deliver(events.into_iter().map(event).collect());
    assert_eq!(outcomes, vec![Outcome::Delivered; n]);
    h.requests()[before..].iter().flat_map(|r| body(r)["events"].as_array().cloned().unwrap_or_default()).collect()
}

/// Delivers one event and returns its Statsig event.
fn send_one(h: &mut Harness<Statsig>, e: Value) -> Value {
    let mut sent = send_all(h, vec![e]);
    assert_eq!(sent.len(), 1);
    sent.remove(0)
}

fn track(props: Value) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
           "timestamp": "2024-05-01T12:00:00.000Z", "properties": props})
}

fn tracks(n: usize) -> Vec<Event> {
    (0..n).map(|i| event(json!({"type": "track", "event": "E", "userId": format!("u{i}")}))).collect()
}

fn init_error(settings: Value) -> String {
    match Harness::<Statsig>::new(settings) {
        Err(InitError::InvalidSettings(msg)) => msg,
        Err(other) => panic!("wrong error kind: {other:?}"),
        Ok(_) => panic!("settings accepted"),
    }
}

fn assert_no_secret(h: &Harness<Statsig>, outcomes: &[Outcome]) {
    for (_, line) in h.logs() {
        assert!(!line.contains(SECRET), "secret in log: {line}");
    }
    for o in outcomes {
        let text = format!("{o:?}");
        assert!(!text.contains(SECRET), "secret in outcome: {text}");
    }
}

// ---------------------------------------------------------------- track

#[test]
fn track_maps_name_user_time_value_and_metadata() {
    let mut h = harness();
    let e = send_one(&mut h, track(json!({"revenue": 9.99, "currency": "EUR", "items": 3})));
    assert_eq!(e["eventName"], "Order Completed");
    assert_eq!(e["user"]["userID"], "u1");
    assert_eq!(e["user"]["customIDs"], json!({"stableID": "a1"}));
    assert_eq!(e["time"], json!(1_714_564_800_000_i64));
    assert_eq!(e["value"], json!(9.99));
    assert_eq!(e["metadata"], json!({"revenue": "9.99", "currency": "EUR", "items": "3"}));
    assert!(e.get("secondaryExposures").is_none());
}

#[test]
fn track_value_prefers_value_then_revenue_then_total() {
    let mut h = harness();
    assert_eq!(send_one(&mut h, track(json!({"value": "gold", "revenue": 5, "total": 7})))["value"], "gold");
    assert_eq!(send_one(&mut h, track(json!({"value": 3, "revenue": 5})))["value"], json!(3));
    assert_eq!(send_one(&mut h, track(json!({"value": {"x": 1}, "revenue": 5, "total": 7})))["value"], json!(5));
    assert_eq!(send_one(&mut h, track(json!({"value": true, "revenue": null, "total": "12.50"})))["value"], "12.50");
    assert_eq!(send_one(&mut h, track(json!({"value": "  ", "total": 1})))["value"], json!(1));
    assert!(send_one(&mut h, track(json!({"plan": "pro"}))).get("value").is_none());
}

#[test]
fn metadata_values_become_strings() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        track(json!({"s": "x", "i": 42, "f": 1.5, "neg": -3, "t": true, "f2": false, "nil": null,
                     "obj": {"a": [1, "b"]}, "arr": [1, 2], "empty": {}})),
    );
    assert_eq!(
        e["metadata"],
        json!({"s": "x", "i": "42", "f": "1.5", "neg": "-3", "t": "true", "f2": "false",
               "obj": "{\"a\":[1,\"b\"]}", "arr": "[1,2]", "empty": "{}"})
    );
}

#[test]
fn nested_and_huge_properties_are_kept_whole() {
    let mut h = harness();
    let big = "x".repeat(200_000);
    let mut props = serde_json::Map::new();
    for i in 0..2000 {
        props.insert(format!("k{i}"), json!(i));
    }
    props.insert("big".into(), json!(big));
    props.insert("deep".into(), json!({"a": {"b": {"c": {"d": [1, {"e": "日本"}]}}}}));
    let e = send_one(&mut h, track(Value::Object(props)));
    let metadata = e["metadata"].as_object().unwrap();
    assert_eq!(metadata.len(), 2002);
    assert_eq!(metadata["big"].as_str().unwrap().len(), 200_000);
    assert_eq!(metadata["k1999"], "1999");
    let deep: Value = serde_json::from_str(metadata["deep"].as_str().unwrap()).unwrap();
    assert_eq!(deep["a"]["b"]["c"]["d"][1]["e"], "日本");
}

#[test]
fn unicode_survives() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "Ünïcödé ✓ 🚀", "userId": "用户-1",
               "properties": {"名前": "テスト", "emoji": "👍🏽"}, "context": {"traits": {"城市": "北京"}}}),
    );
    assert_eq!(e["eventName"], "Ünïcödé ✓ 🚀");
    assert_eq!(e["user"]["userID"], "用户-1");
    assert_eq!(e["metadata"], json!({"名前": "テスト", "emoji": "👍🏽"}));
    assert_eq!(e["user"]["custom"], json!({"城市": "北京"}));
}

#[test]
fn track_without_a_name_is_rejected_unsent() {
    let mut h = harness();
    let outcomes = h.deliver(vec![event(json!({"type": "track", "event": "  ", "userId": "u"}))]);
    assert!(matches!(&outcomes[0], Outcome::Rejected(r) if r.contains("eventName")), "{outcomes:?}");
    assert!(h.requests().is_empty());
}

#[test]
fn numeric_and_boolean_event_names_are_text() {
    let mut h = harness();
    assert_eq!(send_one(&mut h, json!({"type": "track", "event": 404, "userId": "u"}))["eventName"], "404");
}

// ---------------------------------------------------------------- user

#[test]
fn user_fields_come_from_context() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "E", "userId": "u1", "anonymousId": "a1",
               "context": {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0", "locale": "fr-FR",
                           "location": {"country": "France", "city": "Paris"}, "app": {"version": "3.2.1", "build": 7},
                           "traits": {"email": "ada@example.com", "plan": "pro", "age": 36, "vip": true,
                                      "tags": ["a", "b"], "mixed": [1, "b"], "address": {"city": "Paris"},
                                      "gone": null}}}),
    );
    assert_eq!(
        e["user"],
        json!({"userID": "u1", "email": "ada@example.com", "ip": "203.0.113.7", "userAgent": "Mozilla/5.0",
               "country": "France", "locale": "fr-FR", "appVersion": "3.2.1",
               "custom": {"plan": "pro", "age": 36, "vip": true, "tags": ["a", "b"], "mixed": "[1,\"b\"]",
                          "address": "{\"city\":\"Paris\"}"},
               "customIDs": {"stableID": "a1"}})
    );
}

#[test]
fn minimal_user_has_only_ids() {
    let mut h = harness();
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "anonymousId": "anon-only"}));
    assert_eq!(e["user"], json!({"customIDs": {"stableID": "anon-only"}}));
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "user-only"}));
    assert_eq!(e["user"], json!({"userID": "user-only"}));
}

#[test]
fn numeric_ids_become_strings() {
    let mut h = harness();
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": 42, "anonymousId": 7.5}));
    assert_eq!(e["user"]["userID"], "42");
    assert_eq!(e["user"]["customIDs"]["stableID"], "7.5");
}

#[test]
fn events_without_any_id_are_rejected_and_not_sent() {
    let mut h = harness();
    let outcomes = h.deliver(vec![
        event(json!({"type": "track", "event": "E"})),
        event(json!({"type": "track", "event": "E", "userId": "", "anonymousId": null})),
        event(json!({"type": "page", "name": "Home"})),
    ]);
    for o in &outcomes {
        assert_eq!(o, &Outcome::rejected(user::MISSING_IDS));
    }
    assert!(h.requests().is_empty());
}

#[test]
fn rejected_events_do_not_hold_back_the_rest() {
    let mut h = harness();
    let outcomes = h.deliver(vec![
        event(json!({"type": "track", "event": "A", "userId": "u1"})),
        event(json!({"type": "track", "event": "B"})),
        event(json!({"type": "track", "event": "C", "anonymousId": "a3"})),
    ]);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(matches!(outcomes[1], Outcome::Rejected(_)));
    assert_eq!(outcomes[2], Outcome::Delivered);
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    let names: Vec<_> = body(&reqs[0])["events"].as_array().unwrap().iter().map(|e| e["eventName"].clone()).collect();
    assert_eq!(names, vec![json!("A"), json!("C")]);
}

#[test]
fn custom_ids_follow_their_paths() {
    let mut h = harness_with(json!({"custom_ids": {
        "companyID": "context.groupId", "orgID": "properties.org_id", "firstItem": "properties.items.0.sku",
        "missing": "properties.nope", "objectID": "properties.obj", "deviceID": "context.device.id"}}));
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "E", "userId": "u1", "anonymousId": "a1",
               "context": {"groupId": "acme", "device": {"id": "dev-9"}},
               "properties": {"org_id": 1234, "items": [{"sku": "sku-1"}, {"sku": "sku-2"}], "obj": {"id": 1}}}),
    );
    assert_eq!(
        e["user"]["customIDs"],
        json!({"stableID": "a1", "companyID": "acme", "orgID": "1234", "firstItem": "sku-1", "deviceID": "dev-9"})
    );
}

#[test]
fn a_custom_id_alone_identifies_the_user() {
    let mut h = harness_with(json!({"custom_ids": {"companyID": "context.groupId"}}));
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "context": {"groupId": "acme"}}));
    assert_eq!(e["user"], json!({"customIDs": {"companyID": "acme"}}));
    let outcomes = h.deliver(vec![event(json!({"type": "track", "event": "E", "context": {"groupId": ""}}))]);
    assert!(matches!(outcomes[0], Outcome::Rejected(_)));
}

#[test]
fn environment_tier_is_on_every_event() {
    let mut h = harness_with(json!({"environment": "staging"}));
    let sent = send_all(
        &mut h,
        vec![
            json!({"type": "track", "event": "E", "userId": "u"}),
            json!({"type": "identify", "userId": "u", "traits": {"plan": "x"}}),
            json!({"type": "page", "anonymousId": "a"}),
        ],
    );
    for e in sent {
        assert_eq!(e["user"]["statsigEnvironment"], json!({"tier": "staging"}));
    }
    let e = send_one(&mut harness(), json!({"type": "track", "event": "E", "userId": "u"}));
    assert!(e["user"].get("statsigEnvironment").is_none());
}

// ---------------------------------------------------------------- odd types

#[test]
fn odd_shaped_objects_are_ignored_not_fatal() {
    let mut h = harness();
    let sent = send_all(
        &mut h,
        vec![
            json!({"type": "track", "event": "Null", "userId": "u", "properties": null}),
            json!({"type": "track", "event": "Array", "userId": "u", "properties": [1, 2, 3]}),
            json!({"type": "track", "event": "Str", "userId": "u", "properties": "x", "context": "y"}),
            json!({"type": "identify", "userId": "u", "traits": ["a"], "context": {"traits": 5, "app": "z"}}),
            json!({"type": "group", "userId": "u", "groupId": 99, "traits": null}),
        ],
    );
    assert_eq!(sent.len(), 5);
    for e in &sent[..3] {
        assert!(e.get("metadata").is_none(), "{e}");
    }
    assert_eq!(sent[4]["metadata"], json!({"groupId": "99"}));
    assert_eq!(sent[4]["user"]["customIDs"]["groupID"], "99");
}

#[test]
fn boolean_values_are_text_in_metadata_and_kept_in_custom() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "E", "userId": "u", "properties": {"ok": true},
               "context": {"traits": {"beta": false}}}),
    );
    assert_eq!(e["metadata"]["ok"], "true");
    assert_eq!(e["user"]["custom"]["beta"], json!(false));
}

// ---------------------------------------------------------------- time

#[test]
fn time_is_integer_ms_from_offset_timestamps() {
    let mut h = harness();
    let sent = send_all(
        &mut h,
        vec![
            json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T12:00:00+02:00"}),
            json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T07:30:00.250-04:30"}),
            json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T10:00:00.123456Z"}),
        ],
    );
    assert_eq!(sent[0]["time"], json!(1_714_557_600_000_i64));
    assert!(sent[0]["time"].is_i64());
    assert_eq!(sent[1]["time"], json!(1_714_564_800_250_i64));
    assert_eq!(sent[2]["time"], json!(1_714_557_600_123_i64));
}

#[test]
fn missing_timestamp_leaves_time_to_statsig() {
    let mut h = harness();
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u"}));
    assert!(e.get("time").is_none());
}

// ---------------------------------------------------------------- page / screen

#[test]
fn page_is_a_page_view_with_page_metadata() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "page", "name": "Pricing", "category": "Docs", "anonymousId": "a1",
               "context": {"page": {"url": "https://x.io/pricing?a=1", "path": "/pricing", "referrer": "https://google.com",
                                    "title": "Pricing — X", "search": "?a=1"}},
               "properties": {"title": "Own title", "name": "ignored", "plan": "pro"}}),
    );
    assert_eq!(e["eventName"], "page_view");
    assert_eq!(e["value"], "Pricing");
    assert_eq!(
        e["metadata"],
        json!({"name": "Pricing", "category": "Docs", "url": "https://x.io/pricing?a=1", "path": "/pricing",
               "referrer": "https://google.com", "title": "Own title", "search": "?a=1", "plan": "pro"})
    );
}

#[test]
fn unnamed_page_has_no_value() {
    let mut h = harness();
    let e = send_one(&mut h, json!({"type": "page", "userId": "u"}));
    assert_eq!(e["eventName"], "page_view");
    assert!(e.get("value").is_none());
    assert!(e.get("metadata").is_none());
}

#[test]
fn screen_is_a_screen_view() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "screen", "name": "Settings", "category": "Account", "userId": "u",
               "properties": {"tab": 2}, "context": {"app": {"version": "1.0"}}}),
    );
    assert_eq!(e["eventName"], "screen_view");
    assert_eq!(e["value"], "Settings");
    assert_eq!(e["metadata"], json!({"name": "Settings", "category": "Account", "tab": "2"}));
    assert_eq!(e["user"]["appVersion"], "1.0");
}

// ---------------------------------------------------------------- identify

#[test]
fn identify_is_logged_with_traits_on_the_user() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
               "traits": {"email": "ada@example.com", "name": "Ada", "logins": 3},
               "context": {"traits": {"email": "old@example.com", "name": "Old", "tz": "UTC"}}}),
    );
    assert_eq!(e["eventName"], mapping::IDENTIFY);
    assert_eq!(e["user"]["email"], "ada@example.com");
    assert_eq!(e["user"]["custom"], json!({"name": "Ada", "logins": 3, "tz": "UTC"}));
    assert_eq!(e["metadata"], json!({"email": "ada@example.com", "name": "Ada", "logins": "3"}));
}

#[test]
fn identify_traits_reach_later_events_of_the_user() {
    let mut h = harness();
    let sent = send_all(
        &mut h,
        vec![
            json!({"type": "track", "event": "Before", "userId": "u1"}),
            json!({"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com", "plan": "pro"}}),
            json!({"type": "track", "event": "After", "userId": "u1"}),
            json!({"type": "track", "event": "Other", "userId": "u2"}),
        ],
    );
    assert!(sent[0]["user"].get("custom").is_none());
    assert_eq!(sent[2]["user"]["email"], "ada@example.com");
    assert_eq!(sent[2]["user"]["custom"], json!({"plan": "pro"}));
    assert!(sent[3]["user"].get("custom").is_none());
    assert!(sent[3]["user"].get("email").is_none());
    // And in a later batch.
    let e = send_one(&mut h, json!({"type": "page", "userId": "u1", "context": {"traits": {"plan": "team"}}}));
    assert_eq!(e["user"]["custom"], json!({"plan": "team"}), "the event's own context.traits win");
    assert_eq!(e["user"]["email"], "ada@example.com");
}

#[test]
fn identify_traits_accumulate_and_null_clears() {
    let mut h = harness();
    send_all(
        &mut h,
        vec![
            json!({"type": "identify", "userId": "u1", "traits": {"a": 1, "b": 2}}),
            json!({"type": "identify", "userId": "u1", "traits": {"b": 3, "c": 4}}),
            json!({"type": "identify", "userId": "u1", "traits": {"a": null}}),
        ],
    );
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u1"}));
    assert_eq!(e["user"]["custom"], json!({"b": 3, "c": 4}));
}

#[test]
fn anonymous_identify_traits_follow_the_anonymous_id() {
    let mut h = harness();
    send_one(&mut h, json!({"type": "identify", "anonymousId": "a1", "traits": {"source": "ad", "plan": "free"}}));
    send_one(&mut h, json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}));
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "anonymousId": "a1"}));
    assert_eq!(e["user"]["custom"], json!({"source": "ad", "plan": "free"}));
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u1", "anonymousId": "a1"}));
    assert_eq!(e["user"]["custom"], json!({"source": "ad", "plan": "pro"}), "the userId's traits win");
    // A userId and an anonymousId with the same text are different users.
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "anonymousId": "u1"}));
    assert!(e["user"].get("custom").is_none());
}

#[test]
fn identify_cache_evicts_the_oldest() {
    let mut h = harness_with(json!({"identify_cache_users": 2}));
    let identify = |u: &str| json!({"type": "identify", "userId": u, "traits": {"who": u}});
    send_all(&mut h, vec![identify("u1"), identify("u2"), identify("u1"), identify("u3")]);
    assert_eq!(h.destination().cache().len(), 2);
    let sent = send_all(
        &mut h,
        ["u1", "u2", "u3"].iter().map(|u| json!({"type": "track", "event": "E", "userId": u})).collect(),
    );
    assert_eq!(sent[0]["user"]["custom"], json!({"who": "u1"}), "refreshed, so kept");
    assert!(sent[1]["user"].get("custom").is_none(), "u2 was the oldest");
    assert_eq!(sent[2]["user"]["custom"], json!({"who": "u3"}));
}

#[test]
fn identify_cache_can_be_turned_off() {
    let mut h = harness_with(json!({"identify_cache_users": 0}));
    let sent = send_all(
        &mut h,
        vec![
            json!({"type": "identify", "userId": "u1", "traits": {"email": "e@x.io", "plan": "pro"}}),
            json!({"type": "track", "event": "E", "userId": "u1"}),
        ],
    );
    assert_eq!(sent[0]["user"]["email"], "e@x.io", "the identify itself still carries its traits");
    assert!(sent[1]["user"].get("custom").is_none());
    assert!(sent[1]["user"].get("email").is_none());
    assert!(h.destination().cache().is_empty());
}

#[test]
fn identify_without_ids_caches_nothing_and_is_rejected() {
    let mut h = harness();
    let outcomes = h.deliver(vec![event(json!({"type": "identify", "traits": {"a": 1}}))]);
    assert_eq!(outcomes, vec![Outcome::rejected(user::MISSING_IDS)]);
    assert!(h.destination().cache().is_empty());
}

// ---------------------------------------------------------------- group / alias

#[test]
fn group_sets_the_group_custom_id() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme", "employees": 50}}),
    );
    assert_eq!(e["eventName"], "group");
    assert_eq!(e["user"]["customIDs"], json!({"groupID": "acme"}));
    assert_eq!(e["metadata"], json!({"groupId": "acme", "name": "Acme", "employees": "50"}));
}

#[test]
fn configured_custom_ids_override_the_group_id() {
    let mut h = harness_with(json!({"custom_ids": {"groupID": "traits.slug"}}));
    let e = send_one(&mut h, json!({"type": "group", "userId": "u1", "groupId": "g-1", "traits": {"slug": "acme"}}));
    assert_eq!(e["user"]["customIDs"]["groupID"], "acme");
    let e = send_one(&mut h, json!({"type": "group", "userId": "u1", "groupId": "g-2"}));
    assert_eq!(e["user"]["customIDs"]["groupID"], "g-2", "path not found: the groupId stays");
}

#[test]
fn alias_is_logged_and_hands_cached_traits_to_the_new_id() {
    let mut h = harness();
    send_one(&mut h, json!({"type": "identify", "anonymousId": "anon-1", "traits": {"plan": "trial"}}));
    let e = send_one(&mut h, json!({"type": "alias", "userId": "u-9", "previousId": "anon-1"}));
    assert_eq!(e["eventName"], "alias");
    assert_eq!(e["metadata"], json!({"previousId": "anon-1", "userId": "u-9"}));
    assert_eq!(e["user"]["userID"], "u-9");
    assert_eq!(e["user"]["custom"], json!({"plan": "trial"}));
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u-9"}));
    assert_eq!(e["user"]["custom"], json!({"plan": "trial"}));
}

// ---------------------------------------------------------------- experiments

#[test]
fn experiment_viewed_is_a_config_exposure() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "Experiment Viewed", "userId": "u1", "timestamp": "2024-05-01T12:00:00Z",
               "properties": {"experiment_id": "checkout_redesign", "experiment_name": "Checkout redesign",
                              "variation_id": "5yQbPMfm", "variation_name": "Test", "extra": 1}}),
    );
    assert_eq!(e["eventName"], "statsig::config_exposure");
    assert_eq!(
        e["metadata"],
        json!({"config": "checkout_redesign", "ruleID": "5yQbPMfm", "experiment_id": "checkout_redesign",
               "experiment_name": "Checkout redesign", "variation_id": "5yQbPMfm", "variation_name": "Test",
               "extra": "1"})
    );
    assert_eq!(e["secondaryExposures"], json!([]));
    assert!(e.get("value").is_none());
    assert_eq!(e["time"], json!(1_714_564_800_000_i64));
}

#[test]
fn experiment_viewed_falls_back_to_names() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "experiment viewed", "userId": "u1",
               "properties": {"experiment_name": "new_onboarding", "variation_name": "control"}}),
    );
    assert_eq!(e["eventName"], "statsig::config_exposure");
    assert_eq!(e["metadata"]["config"], "new_onboarding");
    assert_eq!(e["metadata"]["ruleID"], "control");
}

#[test]
fn experiment_viewed_without_an_experiment_stays_a_plain_event() {
    let mut h = harness();
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "Experiment Viewed", "userId": "u1", "properties": {"variation_id": "v"}}),
    );
    assert_eq!(e["eventName"], "Experiment Viewed");
    assert!(e.get("secondaryExposures").is_none());
}

#[test]
fn experiment_exposures_can_be_turned_off() {
    let mut h = harness_with(json!({"experiment_exposures": false}));
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "Experiment Viewed", "userId": "u1",
               "properties": {"experiment_id": "x", "variation_id": "v"}}),
    );
    assert_eq!(e["eventName"], "Experiment Viewed");
    assert_eq!(e["metadata"], json!({"experiment_id": "x", "variation_id": "v"}));
}

// ---------------------------------------------------------------- request

#[test]
fn request_url_headers_and_body_are_exact() {
    let mut h = harness();
    send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u"}));
    let req = &h.requests()[0];
    assert_eq!(req.method, Method::Post);
    assert_eq!(req.url, "https://events.statsigapi.net/v1/log_event");
    assert_eq!(
        req.headers,
        vec![
            ("statsig-api-key".to_owned(), SECRET.to_owned()),
            ("STATSIG-CLIENT-TIME".to_owned(), CLOCK_MS.to_string()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ]
    );
    assert_eq!(
        body(req),
        json!({"events": [{"eventName": "E", "user": {"userID": "u"}}],
               "statsigMetadata": {"sdkType": "switchyard", "sdkVersion": env!("CARGO_PKG_VERSION")}})
    );
}

#[test]
fn client_time_falls_back_to_the_newest_event() {
    let mut h = harness();
    h.destination().set_clock(no_clock);
    h.deliver(vec![
        event(json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T12:00:00Z"})),
        event(json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T12:00:05Z"})),
        event(json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2024-05-01T11:00:00Z"})),
    ]);
    assert_eq!(h.requests()[0].header_value("statsig-client-time"), Some("1714564805000"));
}

#[test]
fn the_real_clock_is_used_by_default() {
    let mut h = Harness::<Statsig>::new(json!({"server_secret": SECRET})).unwrap();
    h.respond(|_| Ok(Response::new(200, OK_BODY)));
    h.deliver(tracks(1));
    let sent: i64 = h.requests()[0].header_value("STATSIG-CLIENT-TIME").unwrap().parse().unwrap();
    assert!(sent > 1_700_000_000_000, "{sent}");
}

#[test]
fn endpoint_trailing_slash_and_path_prefix() {
    let mut h = harness_with(json!({"endpoint": "http://127.0.0.1:9000/proxy/statsig/"}));
    h.deliver(tracks(1));
    assert_eq!(h.requests()[0].url, "http://127.0.0.1:9000/proxy/statsig/v1/log_event");
}

#[test]
fn batches_split_at_max_events_per_request() {
    let mut h = harness_with(json!({"max_events_per_request": 2}));
    let outcomes = h.deliver(tracks(5));
    assert_eq!(outcomes, vec![Outcome::Delivered; 5]);
    let sizes: Vec<_> = h.requests().iter().map(|r| body(r)["events"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let ids: Vec<_> = h
        .requests()
        .iter()
        .flat_map(|r| body(r)["events"].as_array().unwrap().clone())
        .map(|e| e["user"]["userID"].clone())
        .collect();
    assert_eq!(ids, (0..5).map(|i| json!(format!("u{i}"))).collect::<Vec<_>>());
}

#[test]
fn default_batch_of_500_is_one_request_and_501_two() {
    let mut h = harness();
    h.deliver(tracks(500));
    assert_eq!(h.requests().len(), 1);
    h.deliver(tracks(501));
    assert_eq!(h.requests().len(), 3);
}

#[test]
fn empty_batch_sends_nothing() {
    let mut h = harness();
    assert!(h.deliver(Vec::new()).is_empty());
    assert!(h.requests().is_empty());
}

// ---------------------------------------------------------------- outcomes

#[test]
fn any_2xx_delivers() {
    for status in [200, 201, 202, 204] {
        let mut h = harness();
        h.respond(move |_| Ok(Response::new(status, "")));
        assert_eq!(h.deliver(tracks(2)), vec![Outcome::Delivered; 2], "{status}");
    }
}

#[test]
fn statsig_retry_statuses_and_429_retry() {
    for status in [408, 429, 500, 502, 503, 504, 522, 524, 599] {
        let mut h = harness();
        h.respond(move |_| Ok(Response::new(status, "busy")));
        assert_eq!(h.deliver(tracks(2)), vec![Outcome::retry(format!("HTTP {status}: busy")); 2], "{status}");
    }
}

#[test]
fn retry_after_is_honoured() {
    let mut h = harness();
    h.push_response(Ok(Response::new(429, "").with_header("Retry-After", "30")));
    h.push_response(Ok(Response::new(503, "").with_header("retry-after", "1.5")));
    h.push_response(Ok(Response::new(500, "").with_header("Retry-After", "soon")));
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::retry_after(30_000, "HTTP 429")]);
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::retry_after(1_500, "HTTP 503")]);
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::retry("HTTP 500")]);
}

#[test]
fn other_statuses_reject_with_status_and_text() {
    for status in [400, 404, 405, 409, 413, 422, 301, 501, 505, 507] {
        let mut h = harness();
        h.respond(move |_| Ok(Response::new(status, "  nope  ")));
        assert_eq!(h.deliver(tracks(1)), vec![Outcome::rejected(format!("HTTP {status}: nope"))], "{status}");
    }
}

#[test]
fn rejection_text_is_cut_to_200_chars() {
    let mut h = harness();
    h.respond(|_| Ok(Response::new(400, "e".repeat(5000))));
    let outcomes = h.deliver(tracks(1));
    let Outcome::Rejected(reason) = &outcomes[0] else { panic!("{outcomes:?}") };
    assert_eq!(reason.len(), "HTTP 400: ".len() + 200);
}

#[test]
fn auth_failures_name_the_setting_not_the_secret() {
    for status in [401, 403] {
        let mut h = harness();
        h.respond(move |_| Ok(Response::new(status, format!("invalid key {SECRET}"))));
        let outcomes = h.deliver(tracks(2));
        for o in &outcomes {
            assert!(
                matches!(o, Outcome::Rejected(r) if r.contains("`server_secret`") && r.contains(&status.to_string()))
            );
        }
        assert_no_secret(&h, &outcomes);
        assert!(h.logs().iter().any(|(level, line)| *level == Level::Warn && line.contains("server_secret")));
    }
}

#[test]
fn network_errors_retry_and_denied_origins_reject() {
    let mut h = harness();
    h.push_response(Err(HttpError::Connection("connection refused".into())));
    h.push_response(Err(HttpError::Timeout));
    h.push_response(Err(HttpError::Denied("https://events.statsigapi.net".into())));
    h.push_response(Err(HttpError::InvalidRequest("bad header".into())));
    assert_eq!(h.deliver(tracks(2)), vec![Outcome::retry("connection failed: connection refused"); 2]);
    assert_eq!(h.deliver(tracks(1)), vec![Outcome::retry("timed out")]);
    let outcomes = h.deliver(tracks(1));
    assert!(matches!(&outcomes[0], Outcome::Rejected(r) if r.contains("allow_http")), "{outcomes:?}");
    assert!(matches!(h.deliver(tracks(1))[0], Outcome::Rejected(_)));
}

#[test]
fn a_retry_stops_the_remaining_requests_of_the_batch() {
    let mut h = harness_with(json!({"max_events_per_request": 2}));
    h.push_response(Ok(Response::new(200, OK_BODY)));
    h.push_response(Ok(Response::new(503, "down")));
    let outcomes = h.deliver(tracks(6));
    assert_eq!(outcomes[..2], [Outcome::Delivered, Outcome::Delivered]);
    assert_eq!(outcomes[2..], vec![Outcome::retry("HTTP 503: down"); 4]);
    assert_eq!(h.requests().len(), 2);
}

#[test]
fn an_auth_failure_stops_the_remaining_requests_too() {
    let mut h = harness_with(json!({"max_events_per_request": 1}));
    h.respond(|_| Ok(Response::new(401, "")));
    let outcomes = h.deliver(tracks(3));
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Rejected(r) if r.contains("server_secret"))));
    assert_eq!(h.requests().len(), 1);
}

#[test]
fn a_bad_request_does_not_stop_the_other_requests() {
    let mut h = harness_with(json!({"max_events_per_request": 2}));
    h.push_response(Ok(Response::new(400, "bad")));
    let outcomes = h.deliver(tracks(4));
    assert_eq!(
        outcomes,
        vec![
            Outcome::rejected("HTTP 400: bad"),
            Outcome::rejected("HTTP 400: bad"),
            Outcome::Delivered,
            Outcome::Delivered
        ]
    );
    assert_eq!(h.requests().len(), 2);
}

#[test]
fn the_secret_never_leaks_into_logs_or_outcomes() {
    let mut h = harness();
    h.push_response(Ok(Response::new(400, format!("bad key {SECRET}"))));
    h.push_response(Ok(Response::new(500, format!("echo {SECRET}"))));
    h.push_response(Err(HttpError::Connection(format!("reset while sending {SECRET}"))));
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(h.deliver(tracks(1)));
    }
    all.extend(h.deliver(vec![event(json!({"type": "track", "event": "E"}))]));
    assert_eq!(all[0], Outcome::rejected("HTTP 400: bad key [redacted]"));
    assert_no_secret(&h, &all);
    assert!(!h.logs().is_empty());
}

// ---------------------------------------------------------------- settings

#[test]
fn defaults_are_applied() {
    let mut h = harness();
    let config = h.destination().config();
    assert_eq!(config.url, "https://events.statsigapi.net/v1/log_event");
    assert_eq!(config.max_events, 500);
    assert_eq!(config.cache_users, 10_000);
    assert!(config.environment.is_none());
    assert!(config.custom_ids.is_empty());
    assert!(config.experiment_exposures);
}

#[test]
fn server_secret_is_required_and_checked_without_echo() {
    assert_eq!(init_error(json!({})), "missing field `server_secret`");
    for bad in ["client-abcdef", "console-abcdef", "abcsecret-x", "secret-", "", "secret-has space", "SECRET-abc"] {
        let msg = init_error(json!({"server_secret": bad}));
        assert!(msg.contains("`server_secret`"), "{msg}");
        assert!(bad.len() <= "secret-".len() || !msg.contains(bad), "echoed the value: {msg}");
    }
    let msg = init_error(json!({"server_secret": 12345}));
    assert!(msg.starts_with("`server_secret`: invalid type"), "{msg}");
    // Surrounding whitespace is forgiven.
    let h = Harness::<Statsig>::new(json!({"server_secret": format!(" {SECRET}\n")}));
    assert!(h.is_ok());
}

#[test]
fn endpoint_must_be_absolute_http() {
    for bad in [
        "ftp://x.io",
        "events.statsigapi.net",
        "https://",
        "https://:443",
        "https://u:p@x.io",
        "https://x.io/?a=1",
        "https://x.io/#f",
        "http://x .io",
    ] {
        let msg = init_error(json!({"server_secret": SECRET, "endpoint": bad}));
        assert!(msg.contains("`endpoint`"), "{bad}: {msg}");
    }
}

#[test]
fn unknown_fields_are_refused() {
    let msg = init_error(json!({"server_secret": SECRET, "api_key": "x"}));
    assert!(msg.contains("api_key"), "{msg}");
}

#[test]
fn numeric_bounds_are_checked() {
    for bad in [0, 1001] {
        let msg = init_error(json!({"server_secret": SECRET, "max_events_per_request": bad}));
        assert!(msg.contains("`max_events_per_request` must be 1..=1000"), "{msg}");
    }
    for ok in [1, 1000] {
        assert!(Harness::<Statsig>::new(json!({"server_secret": SECRET, "max_events_per_request": ok})).is_ok());
    }
    let msg = init_error(json!({"server_secret": SECRET, "identify_cache_users": 100_001}));
    assert!(msg.contains("`identify_cache_users`"), "{msg}");
    let msg = init_error(json!({"server_secret": SECRET, "max_events_per_request": -1}));
    assert!(msg.contains("`max_events_per_request`"), "{msg}");
}

#[test]
fn environment_and_custom_ids_are_checked() {
    let msg = init_error(json!({"server_secret": SECRET, "environment": "  "}));
    assert!(msg.contains("`environment`"), "{msg}");
    for bad in ["", "context..groupId", ".x", "x."] {
        let msg = init_error(json!({"server_secret": SECRET, "custom_ids": {"orgID": bad}}));
        assert!(msg.contains("`custom_ids.orgID`"), "{bad}: {msg}");
    }
    let msg = init_error(json!({"server_secret": SECRET, "custom_ids": {"": "x"}}));
    assert!(msg.contains("`custom_ids`"), "{msg}");
    let msg = init_error(json!({"server_secret": SECRET, "custom_ids": {"orgID": 5}}));
    assert!(msg.contains("custom_ids"), "{msg}");
}

// ---------------------------------------------------------------- units

#[test]
fn cache_is_bounded_and_keyed_by_id_kind() {
    use crate::cache::{IdentifyCache, Key};
    let traits = |v: Value| v.as_object().cloned().unwrap();
    let mut cache = IdentifyCache::new(1);
    cache.merge(Key::User("x".into()), &traits(json!({"a": 1})));
    cache.merge(Key::User("x".into()), &serde_json::Map::new());
    assert_eq!(cache.len(), 1, "empty traits change nothing");
    cache.merge(Key::Anonymous("x".into()), &traits(json!({"b": 2})));
    assert_eq!(cache.len(), 1);
    assert!(cache.get(&Key::User("x".into())).is_none());
    assert_eq!(cache.lookup(Some("x"), Some("x")), traits(json!({"b": 2})));
    let mut off = IdentifyCache::new(0);
    off.merge(Key::User("x".into()), &traits(json!({"a": 1})));
    assert!(off.is_empty());
}

#[test]
fn path_lookup_and_value_conversions() {
    use crate::user::{custom_value, id_string, lookup_path, metadata_value};
    let doc = json!({"a": {"b": [10, {"c": "deep"}]}, "n": null});
    let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(lookup_path(&doc, &path("a.b.1.c")), Some(&json!("deep")));
    assert_eq!(lookup_path(&doc, &path("a.b.0")), Some(&json!(10)));
    assert_eq!(lookup_path(&doc, &path("a.b.x")), None);
    assert_eq!(lookup_path(&doc, &path("a.b.9")), None);
    assert_eq!(lookup_path(&doc, &path("n.x")), None);
    assert_eq!(id_string(&json!(" ")), None);
    assert_eq!(id_string(&json!(true)), None);
    assert_eq!(id_string(&json!(12)), Some("12".into()));
    assert_eq!(custom_value(json!(null)), None);
    assert_eq!(custom_value(json!([])), Some(json!([])));
    assert_eq!(custom_value(json!([null])), Some(json!("[null]")));
    assert_eq!(metadata_value(&json!(1e3)), Some("1000.0".into()));
    assert_eq!(metadata_value(&json!(u64::MAX)), Some(u64::MAX.to_string()));
}

#[test]
fn email_precedence_identify_then_context_then_cache() {
    let mut h = harness();
    send_one(&mut h, json!({"type": "identify", "userId": "u1", "traits": {"email": "cached@x.io"}}));
    let e = send_one(
        &mut h,
        json!({"type": "track", "event": "E", "userId": "u1", "context": {"traits": {"email": "ctx@x.io"}}}),
    );
    assert_eq!(e["user"]["email"], "ctx@x.io");
    let e =
        send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u1", "context": {"traits": {"email": 5}}}));
    assert!(e["user"].get("email").is_none(), "a non-string email is no email");
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u1"}));
    assert_eq!(e["user"]["email"], "cached@x.io");
}

#[test]
fn identify_cache_survives_a_failed_delivery() {
    let mut h = harness();
    h.push_response(Ok(Response::new(503, "")));
    let outcomes = h.deliver(vec![event(json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}))]);
    assert!(matches!(outcomes[0], Outcome::Retry { .. }));
    let e = send_one(&mut h, json!({"type": "track", "event": "E", "userId": "u1"}));
    assert_eq!(e["user"]["custom"], json!({"plan": "pro"}));
}
