//! Segment's analytics.js 2.0 (`@segment/analytics-next` from npm,
//! unmodified, bundled at test time) in a real browser — Debian's Chromium
//! driven by playwright-core — on a page whose origin is not Switchyard's,
//! so every request meets CORS. `./x test` installs both under
//! `target/clients/browser`.

use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{Config, Receiver, Switchyard, eventually, workspace};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "wk_browser";

fn config(receiver: &Receiver, cors: &str) -> String {
    Config::new()
        .source("web", KEY)
        .webhook("hook", &format!("{}/hook", receiver.origin()), "batch = { max_events = 100, linger_ms = 10 }")
        .build()
        .replace(&format!("write_key = \"{KEY}\"\n"), &format!("write_key = \"{KEY}\"\n{cors}\n"))
}

/// Runs the browser driver with analytics-next; returns what the page
/// reported.
fn browser(sy: &Switchyard, mode: &str, user: &str) -> Value {
    browser_with(sy, "segment", mode, user)
}

fn browser_with(sy: &Switchyard, sdk: &str, mode: &str, user: &str) -> Value {
    let modules = workspace().join("target/clients/browser/node_modules");
    assert!(modules.join("@segment/analytics-next").exists(), "analytics-next is not installed: run `./x test`");
    assert!(std::path::Path::new("/usr/bin/chromium").exists(), "Chromium is not installed: run `./x test`");
    let host = sy.url("").trim_start_matches("http://").to_owned();
    let script = workspace().join("tests/clients/browser.mjs");
    let out =
        std::process::Command::new("node").arg(&script).args([sdk, &host, KEY, mode, user]).output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser driver failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn events_of(receiver: &Receiver, user: &str) -> Vec<Value> {
    receiver.events().into_iter().filter(|e| e["userId"] == user).collect()
}

async fn all_five_arrive_once(mode: &str) {
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, "")).await;
    let user = format!("u-browser-{mode}");
    let report = browser(&sy, mode, &user);
    assert!(report["error"].is_null(), "{report}");
    let kinds = ["alias", "identify", "track", "page", "group"];
    eventually(WAIT, "the five events delivered", || {
        let got = events_of(&receiver, &user);
        kinds.iter().all(|k| got.iter().any(|e| e["type"] == *k))
    })
    .await;
    // Retries, if any, would have come by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = events_of(&receiver, &user);
    for kind in kinds {
        let n = got.iter().filter(|e| e["type"] == kind).count();
        assert_eq!(n, 1, "{mode}: {kind} delivered {n} times: {got:?}\n{report}");
    }
    let anonymous = report["anonymousId"].as_str().unwrap_or_default();
    for e in &got {
        let kind = e["type"].as_str().unwrap_or_default();
        assert_eq!(e["anonymousId"], anonymous, "{kind}: {e}");
        assert_eq!(e["context"]["library"]["name"], "analytics.js", "{kind}: {e}");
        assert_eq!(e["context"]["userAgent"], report["userAgent"], "{kind}: {e}");
        assert_eq!(e["context"]["page"]["url"], report["url"], "{kind}: {e}");
        assert!(e["messageId"].as_str().is_some_and(|m| m.starts_with("ajs-next-")), "{kind}: {e}");
    }
    let find = |kind: &str| got.iter().find(|e| e["type"] == kind).cloned().unwrap_or_default();
    assert_eq!(find("identify")["traits"]["email"], format!("{user}@example.com"));
    assert_eq!(find("identify")["traits"]["plan"], "pro");
    let track = find("track");
    assert_eq!((track["event"].as_str(), track["properties"]["price"].as_f64()), (Some("Browser Clicked"), Some(19.5)));
    assert_eq!(track["properties"]["nested"]["list"], serde_json::json!([1, "two"]));
    assert_eq!(
        (find("page")["name"].as_str(), find("page")["properties"]["section"].as_str()),
        (Some("Getting Started"), Some("intro"))
    );
    assert_eq!(find("group")["groupId"], "g-acme");
    assert_eq!(find("alias")["previousId"], format!("anon-{user}"));
    assert_eq!(sy.metric("switchyard_source_events_accepted_total{source=\"web\"}").await, 5, "{report}");
}

#[tokio::test]
async fn analytics_next_in_a_browser_delivers_each_event_once_one_request_per_event() {
    all_five_arrive_once("standard").await;
}

#[tokio::test]
async fn analytics_next_in_a_browser_delivers_each_event_once_in_batches() {
    all_five_arrive_once("batching").await;
}

/// A page on an origin the source does not allow: even with its settings
/// given inline (so it tries to send), nothing is accepted.
#[tokio::test]
async fn a_page_on_an_origin_the_source_does_not_allow_sends_nothing() {
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, "cors = { allowed_origins = [\"https://shop.example.com\"] }")).await;
    let report = browser(&sy, "inline-settings", "u-elsewhere");
    assert!(
        report["failed"].as_array().is_some_and(|f| !f.is_empty()),
        "the browser saw its requests blocked: {report}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events_of(&receiver, "u-elsewhere").is_empty(), "{:?}", receiver.events());
    assert_eq!(sy.metric("switchyard_source_events_accepted_total{source=\"web\"}").await, 0);
}

/// RudderStack's JS SDK v3, with its source config from `/sourceConfig/`
/// and its events to `/v1/<type>` (preflighted: it sends `Authorization`
/// and `AnonymousId`).
#[tokio::test]
async fn rudderstack_js_in_a_browser_delivers_each_event_once() {
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, "")).await;
    let user = "u-rudder";
    let report = browser_with(&sy, "rudderstack", "standard", user);
    assert!(report["error"].is_null(), "{report}");
    let kinds = ["alias", "identify", "track", "page", "group"];
    eventually(WAIT, "the five events delivered", || {
        let got = events_of(&receiver, user);
        kinds.iter().all(|k| got.iter().any(|e| e["type"] == *k))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = events_of(&receiver, user);
    for kind in kinds {
        assert_eq!(got.iter().filter(|e| e["type"] == kind).count(), 1, "{kind}: {got:?}");
    }
    let track = got.iter().find(|e| e["type"] == "track").cloned().unwrap_or_default();
    assert_eq!((track["event"].as_str(), track["properties"]["price"].as_f64()), (Some("Browser Clicked"), Some(19.5)));
    assert_eq!(track["anonymousId"], report["anonymousId"], "{track}");
    assert_eq!(track["context"]["library"]["name"], "RudderLabs JavaScript SDK", "{track}");
    let identify = got.iter().find(|e| e["type"] == "identify").cloned().unwrap_or_default();
    assert_eq!(identify["context"]["traits"]["email"], format!("{user}@example.com"), "{identify}");
}
