//! The Statsig destination plugin through the real host, against the
//! loopback Statsig mock (`switchyard_tests::statsig`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Fault, StatsigMock, Switchyard, eventually, http, plugin, post_json};

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "secret-4f7a1c9e2b3d";
const ADMIN: &str = "adm1n-token";

/// A config with one Statsig destination named `statsig` pointed at `mock`;
/// `settings` adds to the settings table.
fn config(mock: &StatsigMock, secret: &str, settings: &str) -> String {
    let lines = format!(
        r#"
settings = {{ server_secret = "{secret}", endpoint = "{origin}"{settings} }}
allow_http = ["{origin}"]
batch = {{ max_events = 100, linger_ms = 20 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
"#,
        origin = mock.origin(),
    );
    Config::new()
        .admin(ADMIN)
        .source("web", "wk_test")
        .destination("statsig", plugin("statsig_destination"), &lines)
        .build()
}

async fn send(sy: &Switchyard, batch: Vec<Value>) {
    let (status, body) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": batch})).await;
    assert_eq!((status, body), (200, json!({"success": true})));
}

async fn metric(sy: &Switchyard, name: &str) -> u64 {
    sy.metric(&format!("switchyard_destination_{name}_total{{destination=\"statsig\"}}")).await
}

/// The one accepted event named `name`.
fn by_name(mock: &StatsigMock, name: &str) -> Value {
    let found: Vec<Value> = mock.events().into_iter().filter(|e| e["eventName"] == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` event: {found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn all_six_types_arrive_mapped_with_headers() {
    let mock = StatsigMock::start(SECRET).await;
    let sy = Switchyard::start(&config(&mock, SECRET, r#", environment = "staging""#)).await;
    send(
        &sy,
        vec![
            json!({"type": "identify", "userId": "user-1", "anonymousId": "anon-1", "messageId": "s-identify",
                   "timestamp": "2024-05-01T11:00:00Z", "traits": {"email": "a@example.com", "plan": "pro"}}),
            json!({"type": "track", "event": "Purchase", "userId": "user-1", "anonymousId": "anon-1", "messageId": "s-track",
                   "timestamp": "2024-05-01T11:00:01.500Z",
                   "properties": {"revenue": 19.99, "sku": "G-32", "qty": 2, "gift": true},
                   "context": {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0", "locale": "en-US", "app": {"version": "3.2.1"}}}),
            json!({"type": "page", "userId": "user-2", "name": "Pricing", "messageId": "s-page",
                   "properties": {"plan": "team"}, "context": {"page": {"url": "https://ex.com/pricing"}}}),
            json!({"type": "screen", "anonymousId": "anon-3", "name": "Home", "messageId": "s-screen"}),
            json!({"type": "group", "userId": "user-1", "groupId": "acme", "messageId": "s-group", "traits": {"name": "Acme"}}),
            json!({"type": "alias", "userId": "user-1", "previousId": "anon-1", "messageId": "s-alias"}),
        ],
    )
    .await;
    eventually(WAIT, "6 events accepted", || mock.events().len() >= 6).await;
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"statsig\"}", 6).await, 6);
    assert_eq!(mock.events().len(), 6);
    assert_eq!(metric(&sy, "dead_lettered").await, 0, "{}", sy.logs());

    for r in mock.accepted_requests() {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/log_event"));
        assert_eq!(r.header("statsig-api-key"), Some(SECRET));
        assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{r:?}");
        let client_time: u64 = r.header("statsig-client-time").expect("STATSIG-CLIENT-TIME").parse().unwrap();
        assert!(client_time > 1_700_000_000_000, "epoch ms: {client_time}");
        assert_eq!(r.json()["statsigMetadata"]["sdkType"], "switchyard");
    }
    assert_eq!(mock.missing_client_time(), 0);
    for e in mock.events() {
        assert_eq!(e["user"]["statsigEnvironment"], json!({"tier": "staging"}), "{e}");
        assert!(e["time"].is_u64(), "{e}");
    }

    let t = by_name(&mock, "Purchase");
    assert_eq!(t["user"]["userID"], "user-1");
    assert_eq!(t["user"]["customIDs"]["stableID"], "anon-1");
    assert_eq!(t["time"], 1_714_561_201_500u64);
    assert_eq!(t["value"], 19.99);
    assert_eq!(t["metadata"], json!({"revenue": "19.99", "sku": "G-32", "qty": "2", "gift": "true"}));
    assert_eq!(t["user"]["ip"], "203.0.113.7");
    assert_eq!(t["user"]["userAgent"], "Mozilla/5.0");
    assert_eq!(t["user"]["locale"], "en-US");
    assert_eq!(t["user"]["appVersion"], "3.2.1");
    // The identify before it in the same batch lent the user its traits.
    assert_eq!(t["user"]["email"], "a@example.com");
    assert_eq!(t["user"]["custom"]["plan"], "pro");

    let i = by_name(&mock, "segment_identify");
    assert_eq!(i["user"]["userID"], "user-1");
    assert_eq!(i["user"]["email"], "a@example.com");
    assert_eq!(i["user"]["custom"]["plan"], "pro");
    assert_eq!(i["time"], 1_714_561_200_000u64);

    let p = by_name(&mock, "page_view");
    assert_eq!((&p["value"], &p["user"]["userID"]), (&json!("Pricing"), &json!("user-2")));
    assert_eq!(p["metadata"]["url"], "https://ex.com/pricing");
    assert_eq!(p["metadata"]["plan"], "team");
    assert_eq!(p["metadata"]["name"], "Pricing");

    let s = by_name(&mock, "screen_view");
    assert_eq!(s["value"], "Home");
    assert!(s["user"].get("userID").is_none(), "{s}");
    assert_eq!(s["user"]["customIDs"]["stableID"], "anon-3");

    let g = by_name(&mock, "group");
    assert_eq!(g["user"]["customIDs"]["groupID"], "acme");
    assert_eq!(g["metadata"]["groupId"], "acme");
    assert_eq!(g["metadata"]["name"], "Acme");

    let a = by_name(&mock, "alias");
    assert_eq!(a["metadata"], json!({"previousId": "anon-1", "userId": "user-1"}));
}

#[tokio::test]
async fn custom_ids_come_from_their_paths() {
    let mock = StatsigMock::start(SECRET).await;
    mock.set_success_status(200);
    let settings = r#", custom_ids = { companyID = "context.groupId", orgID = "properties.org.id", deviceID = "context.device.id" }"#;
    let sy = Switchyard::start(&config(&mock, SECRET, settings)).await;
    send(
        &sy,
        vec![
            json!({"type": "track", "event": "With IDs", "userId": "user-1", "anonymousId": "anon-1",
                   "properties": {"org": {"id": 4242}}, "context": {"groupId": "acme-co", "device": {"id": "dev-9"}}}),
            json!({"type": "track", "event": "Without IDs", "userId": "user-2"}),
        ],
    )
    .await;
    eventually(WAIT, "2 events accepted", || mock.events().len() >= 2).await;
    let with = by_name(&mock, "With IDs");
    assert_eq!(
        with["user"]["customIDs"],
        json!({"stableID": "anon-1", "companyID": "acme-co", "orgID": "4242", "deviceID": "dev-9"})
    );
    let without = by_name(&mock, "Without IDs");
    assert!(without["user"].get("customIDs").is_none_or(|c| c == &json!({})), "{without}");
    assert_eq!(without["user"]["userID"], "user-2");
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"statsig\"}", 2).await, 2);
}

#[tokio::test]
async fn retryable_failures_then_recovery_deliver_everything_once() {
    let mock = StatsigMock::start(SECRET).await;
    let faults = [500, 502, 503, 504, 522, 524, 599, 408];
    for status in faults {
        mock.fail_next(1, Fault::Status(status));
    }
    mock.fail_next(1, Fault::Hangup);
    mock.fail_next(1, Fault::retry_after(429, 1, r#"{"message":"rate limited"}"#));
    let sy = Switchyard::start(&config(&mock, SECRET, "")).await;
    for b in 0..3 {
        let batch = (0..10)
            .map(|i| json!({"type": "track", "event": "Tick", "userId": "user-1", "properties": {"seq": format!("{b}-{i}")}}))
            .collect();
        send(&sy, batch).await;
    }
    eventually(WAIT, "all 30 events accepted", || mock.events().len() >= 30).await;
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"statsig\"}", 30).await, 30);
    assert_eq!(mock.pending_faults(), 0, "every scripted failure was played");
    let seqs: Vec<String> = mock.events().iter().map(|e| e["metadata"]["seq"].as_str().unwrap().to_owned()).collect();
    let unique: BTreeSet<&String> = seqs.iter().collect();
    assert_eq!((seqs.len(), unique.len()), (30, 30), "each event exactly once: {seqs:?}");
    let statuses = mock.statuses();
    let failed: Vec<u16> = statuses.iter().copied().filter(|s| !(200..300).contains(s)).collect();
    assert_eq!(failed, [500, 502, 503, 504, 522, 524, 599, 408, 0, 429], "{statuses:?}");
    // Retry-After: 1 on the 429 is honoured (the backoff alone is ≤ 0.5 s).
    let reqs = mock.requests();
    let at_429 = reqs.iter().position(|r| r.status == 429).unwrap();
    if let Some(next) = reqs.get(at_429 + 1) {
        assert!(
            next.at - reqs[at_429].at >= Duration::from_millis(950),
            "retried after {:?}",
            next.at - reqs[at_429].at
        );
    }
    assert!(metric(&sy, "retried").await >= 10);
    assert_eq!(metric(&sy, "dead_lettered").await, 0);
}

/// Whether `text` holds `secret` or any 8-character piece of it.
fn leaks(text: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(8.min(chars.len())).any(|w| text.contains(&w.iter().collect::<String>()))
}

async fn dead_letters(sy: &Switchyard) -> Vec<Value> {
    let auth = format!("Bearer {ADMIN}");
    let (status, body) = http(
        hyper::Method::GET,
        &sy.admin_url("/admin/destinations/statsig/dead-letters"),
        &[("authorization", auth.as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    serde_json::from_slice::<Value>(&body).unwrap()["dead_letters"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_401_dead_letters_without_retrying_or_leaking_the_secret() {
    let mock = StatsigMock::start(SECRET).await;
    let wrong = "secret-WRONG-9d8c7b6a";
    let sy = Switchyard::start(&config(&mock, wrong, "")).await;
    send(
        &sy,
        vec![
            json!({"type": "track", "event": "E", "userId": "user-1", "messageId": "d-1"}),
            json!({"type": "identify", "userId": "user-1", "messageId": "d-2", "traits": {"plan": "pro"}}),
            json!({"type": "page", "anonymousId": "anon-1", "name": "Home", "messageId": "d-3"}),
        ],
    )
    .await;
    assert_eq!(sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"statsig\"}", 3).await, 3);
    let statuses = mock.statuses();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(mock.requests().iter().all(|r| r.header("statsig-api-key") == Some(wrong)));
    assert!(mock.events().is_empty());
    let dead = dead_letters(&sy).await;
    let ids: BTreeSet<&str> = dead.iter().map(|d| d["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["d-1", "d-2", "d-3"].into());
    for d in &dead {
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains("401"), "{reason}");
        assert!(!leaks(reason, wrong), "the secret leaked: {reason}");
    }
    assert!(!leaks(&sy.logs(), wrong), "the secret leaked into the log");
    let before = mock.requests().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.requests().len(), before, "a 401 is not retried");
    assert_eq!(metric(&sy, "retried").await, 0);
    assert_eq!(metric(&sy, "delivered").await, 0);
}

#[tokio::test]
async fn other_client_errors_are_rejected_and_later_events_still_flow() {
    let mock = StatsigMock::start(SECRET).await;
    mock.fail_next(1, Fault::Reply { status: 400, headers: vec![], body: r#"{"message":"bad event"}"#.into() });
    let sy = Switchyard::start(&config(&mock, SECRET, "")).await;
    send(&sy, vec![json!({"type": "track", "event": "First", "userId": "user-1", "messageId": "r-1"})]).await;
    assert_eq!(sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"statsig\"}", 1).await, 1);
    let dead = dead_letters(&sy).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["messageId"], "r-1");
    assert!(dead[0]["reason"].as_str().unwrap().contains("400"), "{}", dead[0]);
    send(&sy, vec![json!({"type": "track", "event": "Second", "userId": "user-1", "messageId": "r-2"})]).await;
    eventually(WAIT, "the next event accepted", || mock.events().len() == 1).await;
    assert_eq!(mock.events()[0]["eventName"], "Second");
    assert_eq!(mock.statuses(), [400, 202]);
    assert_eq!(metric(&sy, "retried").await, 0);
}
