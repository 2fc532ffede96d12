//! Segment's official SDKs (analytics-python from PyPI, analytics-node from
//! npm, installed by `./x test` under `target/clients`) send to the real
//! binary; every event reaches the destination with its fields intact.

use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{Config, Receiver, Switchyard, eventually, workspace};

fn config(receiver: &Receiver) -> String {
    Config::new()
        .source("apps", "wk_clients")
        .webhook("hook", &format!("{}/hook", receiver.origin()), "batch = { max_events = 100, linger_ms = 10 }")
        .build()
}

fn find<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events.iter().find(|e| e["messageId"] == id).unwrap_or_else(|| panic!("{id} not delivered"))
}

/// Runs a client script; panics with its output if it fails.
fn run(program: &str, args: &[&str], env: &[(&str, String)]) {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_all_six(events: &[Value], prefix: &str, user: &str) {
    for kind in ["track", "identify", "page", "screen", "group", "alias"] {
        let e = find(events, &format!("{prefix}-{kind}"));
        assert_eq!(e["type"], kind, "{e}");
        assert_eq!(e["userId"], user, "{e}");
        assert!(e["receivedAt"].is_string() && e["timestamp"].is_string(), "{e}");
        assert!(e["context"]["library"]["name"].is_string(), "the SDK's library context is kept: {e}");
    }
    let track = find(events, &format!("{prefix}-track"));
    assert_eq!(track["properties"]["nested"]["list"], serde_json::json!([1, "two", {"x": null}]));
    assert_eq!(track["properties"]["name"], "Ünïcödé ✓");
    assert_eq!(find(events, &format!("{prefix}-group"))["groupId"], "g-acme");
    assert_eq!(find(events, &format!("{prefix}-alias"))["previousId"], format!("prev-{}", &user[2..]));
    assert_eq!(find(events, &format!("{prefix}-page"))["name"], "Getting Started");
}

#[tokio::test]
async fn analytics_python_events_arrive_intact() {
    let py = workspace().join("target/clients/py");
    assert!(py.exists(), "segment-analytics-python is not installed: run `./x test` (it installs the clients)");
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver)).await;
    let script = workspace().join("tests/clients/send.py");
    let host = sy.url("");
    tokio::task::spawn_blocking(move || {
        run(
            "python3",
            &[&script.display().to_string(), &host, "wk_clients", "py"],
            &[("PYTHONPATH", py.display().to_string())],
        )
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "six python events", || receiver.events().len() >= 6).await;
    let evs = receiver.events();
    check_all_six(&evs, "py", "u-py");
    assert_eq!(find(&evs, "py-track")["context"]["app"]["version"], "1.2.3");
    assert_eq!(find(&evs, "py-track")["properties"]["price"], 9.99);
}

#[tokio::test]
async fn analytics_node_events_arrive_intact() {
    let node_modules = workspace().join("target/clients/node/node_modules");
    assert!(
        node_modules.exists(),
        "@segment/analytics-node is not installed: run `./x test` (it installs the clients)"
    );
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver)).await;
    // ESM resolves packages next to the script: run a copy inside the install.
    let script = workspace().join("target/clients/node/send.mjs");
    std::fs::copy(workspace().join("tests/clients/send.mjs"), &script).unwrap();
    let host = sy.url("");
    tokio::task::spawn_blocking(move || {
        run("node", &[&script.display().to_string(), &host, "wk_clients", "node"], &[])
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "six node events", || receiver.events().len() >= 6).await;
    let evs = receiver.events();
    check_all_six(&evs, "node", "u-node");
    assert_eq!(find(&evs, "node-track")["context"]["app"]["version"], "4.5.6");
}
