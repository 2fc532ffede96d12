//! Destination filters and FQL subscriptions through the real binary: what
//! each destination receives, in what shape, decided per destination after
//! the log; a condition that fails to evaluate drops (fail closed); a
//! filter that does not compile refuses the config with file and line.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, eventually, post_json};

const WAIT: Duration = Duration::from_secs(60);

fn order(i: usize, flag: Value) -> Value {
    json!({"type": "track", "event": if i.is_multiple_of(2) { "Order Completed" } else { "Product Viewed" },
        "userId": format!("user-{i}"), "messageId": format!("f-{i}"),
        "properties": {"email": format!("u{i}@example.com"), "total": i, "flag": flag},
        "context": {"ip": "203.0.113.7", "locale": "de-DE"}})
}

#[tokio::test]
async fn filters_drop_sample_and_strip_per_destination() {
    let (orders, sampled) = (Receiver::always(200).await, Receiver::always(200).await);
    let cfg = Config::new()
        .source("web", "wk")
        // Only completed orders, and no personal data.
        .webhook(
            "orders",
            &format!("{}/orders", orders.origin()),
            "subscribe = \"type = 'track' and event = 'Order Completed'\"\n\
             batch = { max_events = 200, linger_ms = 5 }\n\
             [[destinations.filters]]\n\
             if = \"true\"\n\
             actions = [{ type = \"drop_properties\", fields = { properties = [\"email\"], context = [\"ip\"] } }]\n\
             [[destinations.filters]]\n\
             if = \"properties.flag and properties.total >= 0\"\n\
             actions = [{ type = \"drop\" }]",
        )
        // A deterministic 25% of users, everything else as sent.
        .webhook(
            "sampled",
            &format!("{}/sampled", sampled.origin()),
            "batch = { max_events = 500, linger_ms = 5 }\n\
             [[destinations.filters]]\n\
             if = \"type = 'track'\"\n\
             actions = [{ type = \"SAMPLE\", percent = 0.25, path = \"userId\" }]",
        );
    let sy = Switchyard::start(&cfg.build()).await;
    let total = 10_000;
    // `flag` is a bool in most events; a string in every 10th, where the
    // orders filter's condition (`properties.flag and …`) cannot evaluate.
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|&i| order(i, if i % 10 == 4 { json!("yes") } else { json!(i.is_multiple_of(3)) }))
            .collect();
        assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &json!({ "batch": batch })).await.0, 200);
    }
    // Orders: even i (Order Completed), minus flag = true (i % 3 == 0, dropped
    // by the filter), minus flag = "yes" (i % 10 == 4: fails, so dropped).
    let expected: Vec<String> = (0..total)
        .filter(|i| i.is_multiple_of(2) && !i.is_multiple_of(3) && i % 10 != 4)
        .map(|i| format!("f-{i}"))
        .collect();
    eventually(WAIT, "the orders destination's events", || orders.message_ids().len() >= expected.len()).await;
    let filtered = (total - expected.len()) as u64;
    let counted = sy.wait_metric("switchyard_destination_filtered_total{destination=\"orders\"}", filtered).await;
    assert_eq!(counted, filtered, "every event not delivered is counted as filtered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = orders.events();
    let mut ids: Vec<String> = got.iter().map(|e| e["messageId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(ids, want, "exactly the subscribed, unfiltered events");
    for e in &got {
        assert!(e["properties"].get("email").is_none() && e["context"].get("ip").is_none(), "stripped: {e}");
        assert_eq!(e["context"]["locale"], "de-DE", "the rest arrives: {e}");
        assert!(e["properties"]["total"].is_number(), "{e}");
    }

    // Sampling: about a quarter of the users, each all in or all out.
    eventually(WAIT, "the sampled destination settles", || sampled.message_ids().len() > 2_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = sampled.message_ids().len();
    assert!((2_300..=2_700).contains(&n), "{n} of {total} at 25% (±2%)");
    let kept: std::collections::HashSet<String> =
        sampled.events().iter().map(|e| e["userId"].as_str().unwrap().to_owned()).collect();
    // The same users again: the same decision for each.
    let again: Vec<Value> = (0..200)
        .map(|i| {
            json!({"type": "track", "event": "Again", "userId": format!("user-{i}"),
        "messageId": format!("again-{i}")})
        })
        .collect();
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &json!({ "batch": again })).await.0, 200);
    let want_again = (0..200).filter(|i| kept.contains(&format!("user-{i}"))).count();
    eventually(WAIT, "the repeat users", || {
        sampled.events().iter().filter(|e| e["event"] == "Again").count() >= want_again
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again_users: Vec<String> = sampled
        .events()
        .iter()
        .filter(|e| e["event"] == "Again")
        .map(|e| e["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again_users.len(), want_again);
    assert!(again_users.iter().all(|u| kept.contains(u)), "a user sampled out stays out");
}

#[test]
fn filters_that_do_not_compile_refuse_the_config_by_line() {
    let cfg = Config::new().source("web", "wk").webhook(
        "orders",
        "http://127.0.0.1:9/orders",
        "subscribe = \"type = \"\n\
         [[destinations.filters]]\n\
         if = \"contains(event)\"\n\
         actions = [{ type = \"drop\" }]\n\
         [[destinations.filters]]\n\
         if = \"true\"\n\
         actions = [{ type = \"drop_properties\", fields = { \"\" = [\"userId\"] } }]",
    );
    let (code, log) = Switchyard::start_expecting_failure(&cfg.build());
    assert_ne!(code, Some(0));
    assert!(log.contains("subscribe: FQL at column 8: expected a value"), "{log}");
    assert!(log.contains("filters[0]: `if`: at column 1: `contains` takes 2 arguments, not 1"), "{log}");
    assert!(log.contains("filters[1]: `userId` is a core field of every event"), "{log}");
    assert!(log.contains("switchyard.toml:"), "names the file and line: {log}");
}
