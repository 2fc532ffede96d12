//! Contract versions: a plugin built against the first published contract
//! (0.1.0, from its frozen WIT) runs beside plugins of the newest, each
//! linked against its own version; a plugin of a version this host does not
//! run is refused with a message naming both.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, eventually, http, plugin, post_json};

const TOKEN: &str = "c0ntract-admin";
const WAIT: Duration = Duration::from_secs(60);

fn config(old: &Receiver, new: &Receiver, old_plugin: &str) -> String {
    let (o, n) = (old.origin(), new.origin());
    let batch = "batch = { max_events = 10, linger_ms = 10 }";
    let old_lines = format!("settings = {{ url = \"{o}/old\" }}\nallow_http = [\"{o}\"]\n{batch}");
    Config::new()
        .admin(TOKEN)
        .source("web", "wk_test")
        .destination("old", old_plugin, &old_lines)
        .webhook("new", &format!("{n}/new"), batch)
        .build()
}

async fn destinations(sy: &Switchyard) -> Vec<Value> {
    let auth = format!("Bearer {TOKEN}");
    let (code, body) =
        http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(code, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["destinations"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_plugin_of_the_previous_contract_runs_beside_the_newest() {
    let (old, new) = (Receiver::always(200).await, Receiver::always(200).await);
    let legacy = plugin("legacy_v0_1_destination");
    let sy = Switchyard::start(&config(&old, &new, &legacy.display().to_string())).await;
    let batch: Vec<Value> =
        (0..5).map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("c-{i}")})).collect();
    let (code, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await;
    assert_eq!(code, 200);
    eventually(WAIT, "both destinations get all five", || old.message_ids().len() == 5 && new.message_ids().len() == 5)
        .await;
    assert!(old.requests().iter().all(|r| r.headers.get("x-contract").map(String::as_str) == Some("0.1.0")));
    // The newest contract carries the source; the old one never saw it and
    // still got the whole event.
    assert_eq!(old.events()[0]["userId"], "u");
    let list = destinations(&sy).await;
    let contract = |name: &str| {
        list.iter().find(|d| d["name"] == name).map(|d| d["plugin"]["contract"].clone()).unwrap_or(Value::Null)
    };
    assert_eq!(contract("old"), "0.1.0");
    assert_eq!(contract("new"), "0.2.0");
}

/// The legacy plugin with its imports renamed to contract 0.9.0 (same
/// length, so the binary stays valid): refused at start, naming both.
#[tokio::test]
async fn a_plugin_of_an_unsupported_contract_is_refused_naming_both_versions() {
    let mut bytes = std::fs::read(plugin("legacy_v0_1_destination")).unwrap();
    let (from, to) = (b"switchyard:destination/http@0.1.0", b"switchyard:destination/http@0.9.0");
    let mut patched = 0;
    for i in 0..bytes.len().saturating_sub(from.len()) {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            patched += 1;
        }
    }
    assert!(patched > 0, "the legacy plugin imports http@0.1.0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.wasm");
    std::fs::write(&path, &bytes).unwrap();
    let (old, new) = (Receiver::always(200).await, Receiver::always(200).await);
    let (code, stderr) = Switchyard::start_expecting_failure(&config(&old, &new, &path.display().to_string()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("future.wasm"), "names the file: {stderr}");
    assert!(
        stderr.contains("switchyard:destination@0.9.0") && stderr.contains("0.1.x and 0.2.x"),
        "names both versions: {stderr}"
    );
}
