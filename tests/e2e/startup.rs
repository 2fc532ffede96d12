//! What the binary does with bad plugins, bad configs and bad requests.

use serde_json::json;
use switchyard_tests::{Config, Switchyard, http, plugin, post_json};

fn config_with_plugin(plugin_path: &str, settings: &str) -> String {
    let lines = format!("settings = {settings}\nallow_http = [\"http://127.0.0.1:9\"]");
    Config::new().source("web", "wk_test").destination("hook", plugin_path, &lines).build()
}

/// The line number of the `nth` line of `text` (from 0) containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines().enumerate().filter(|(_, l)| l.contains(needle)).nth(nth).expect(needle).0 + 1
}

/// Runs `switchyard validate` on `config`; its exit code and stderr.
fn validate(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let written = switchyard_tests::write_config(config, dir.path());
    let out = std::process::Command::new(switchyard_tests::binary())
        .args(["validate", "--config"])
        .arg(&written.path)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn a_core_module_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    // The smallest valid core module: magic + version 1.
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let (code, stderr) = Switchyard::start_expecting_failure(&config_with_plugin(&path.display().to_string(), "{}"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains("core WebAssembly module, not a component"), "{stderr}");
    assert!(stderr.contains("wasm32-wasip2"), "says how to fix it: {stderr}");
}

#[tokio::test]
async fn a_non_wasm_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, "#!/bin/sh\necho not wasm\n").unwrap();
    let (code, stderr) = Switchyard::start_expecting_failure(&config_with_plugin(&path.display().to_string(), "{}"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("plugin.wasm: is not a WebAssembly file"), "{stderr}");
}

#[tokio::test]
async fn a_missing_plugin_is_refused() {
    let (code, stderr) = Switchyard::start_expecting_failure(&config_with_plugin("/nonexistent/x.wasm", "{}"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/x.wasm: cannot read"), "{stderr}");
}

#[tokio::test]
async fn settings_the_plugin_refuses_stop_the_start() {
    let p = plugin("webhook_destination");
    let (code, stderr) =
        Switchyard::start_expecting_failure(&config_with_plugin(&p.display().to_string(), "{ headers = {} }"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("destination `hook`"), "{stderr}");
    assert!(stderr.contains("invalid settings: missing field `url`"), "{stderr}");
    let cfg = config_with_plugin(&p.display().to_string(), "{ headers = {} }");
    let at = format!("switchyard.toml:{}: destinations[0].settings: ", line_of(&cfg, "settings =", 0));
    assert!(stderr.contains(&at), "names the line and key of the settings ({at}): {stderr}");
}

/// A wrong type in one destination and an unknown key in another: both
/// named, each with its line and dotted key, by `validate` and by `run`.
#[tokio::test]
async fn every_config_problem_is_named_with_its_line_and_key() {
    let p = plugin("webhook_destination");
    let cfg = Config::new()
        .source("web", "wk_test")
        .webhook("a", "http://127.0.0.1:9/a", "batch = { max_events = \"lots\" }")
        .destination("b", &p, "settings = { url = \"http://127.0.0.1:9/b\" }\nbatch_size = 10")
        .build();
    let wrong_type = format!(
        "switchyard.toml:{}: destinations[0].batch.max_events: invalid type: string \"lots\", expected usize",
        line_of(&cfg, "lots", 0)
    );
    let unknown = format!(
        "switchyard.toml:{}: destinations[1].batch_size: unknown field `batch_size`",
        line_of(&cfg, "batch_size", 0)
    );

    let (code, stderr) = validate(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&wrong_type), "{wrong_type}: {stderr}");
    assert!(stderr.contains(&unknown), "{unknown}: {stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error: ")).count(), 2, "one line each: {stderr}");

    let (code, stderr) = Switchyard::start_expecting_failure(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&wrong_type), "{wrong_type}: {stderr}");
    assert!(stderr.contains(&unknown), "{unknown}: {stderr}");
}

/// `validate` names every destination whose plugin refuses its settings,
/// at the line of its `settings`.
#[tokio::test]
async fn validate_names_every_refused_settings_with_its_line() {
    let p = plugin("webhook_destination");
    let cfg = Config::new()
        .source("web", "wk_test")
        .destination("a", &p, "settings = { headers = {} }")
        .destination("b", &p, "settings = { url = 5 }")
        .build();
    let (code, stderr) = validate(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    for (i, name) in ["a", "b"].iter().enumerate() {
        let at = format!("switchyard.toml:{}: destinations[{i}].settings: ", line_of(&cfg, "settings =", i));
        let line = stderr.lines().find(|l| l.contains(&format!("destination `{name}`"))).unwrap_or_default();
        assert!(line.contains(&at) && line.contains("invalid settings"), "{at}: {stderr}");
    }
}

#[tokio::test]
async fn an_invalid_config_names_file_and_line() {
    let (code, stderr) =
        Switchyard::start_expecting_failure("[server]\nlisten = \"127.0.0.1:{port}\"\nlisten_typo = 1\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("switchyard.toml:3:"), "{stderr}");
    assert!(stderr.contains("listen_typo"), "{stderr}");
}

#[tokio::test]
async fn secrets_from_the_environment_never_reach_the_log() {
    let p = plugin("webhook_destination");
    let cfg = config_with_plugin(
        &p.display().to_string(),
        r#"{ url = "http://127.0.0.1:9/x", headers = { Authorization = "Bearer ${HOOK_SECRET}" }, bogus = "${HOOK_SECRET}" }"#,
    );
    let (code, stderr) = {
        // The plugin refuses `bogus`; the error must not echo the secret.
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("switchyard.toml");
        std::fs::write(&cfg_path, switchyard_tests::config::fill(&cfg, 0, 0, &dir.path().join("d"))).unwrap();
        let out = std::process::Command::new(switchyard_tests::binary())
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("HOOK_SECRET", "sk_live_very_secret_value")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code, Some(1));
    assert!(stderr.contains("bogus"), "{stderr}");
    assert!(!stderr.contains("sk_live_very_secret_value"), "secret leaked: {stderr}");
}

#[tokio::test]
async fn bad_requests_get_precise_answers() {
    let p = plugin("webhook_destination");
    let sy =
        Switchyard::start(&config_with_plugin(&p.display().to_string(), r#"{ url = "http://127.0.0.1:9/x" }"#)).await;
    let event = json!({"userId": "u", "event": "E"});

    let (status, body) = post_json(&sy.url("/v1/track"), Some("nope"), &event).await;
    assert_eq!(status, 401);
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "unauthorized");

    let (status, body) = post_json(&sy.url("/v1/track"), None, &event).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    let (status, body) = http(
        hyper::Method::POST,
        &sy.url("/v1/batch"),
        &[("authorization", "Basic d2tfdGVzdDo=")],
        b"{\"batch\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "invalid_json");
    assert!(body["message"].as_str().unwrap().contains("line 1"), "{body}");

    let big = "x".repeat(40 * 1024);
    let (status, body) = post_json(
        &sy.url("/v1/batch"),
        Some("wk_test"),
        &json!({"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"big": big}}]}),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("event_too_large")));

    let huge: Vec<_> = (0..20)
        .map(|_| json!({"type": "track", "userId": "u", "event": "E", "properties": {"p": "y".repeat(30 * 1024)}}))
        .collect();
    let (status, body) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": huge})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("payload_too_large")));

    let (status, body) = post_json(&sy.url("/v1/nope"), Some("wk_test"), &event).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let (status, _) = http(hyper::Method::GET, &sy.url("/v1/track"), &[], Vec::new()).await;
    assert_eq!(status, 405);

    // An invalid event in a batch is counted, the valid one accepted: 200.
    let (status, body) = post_json(
        &sy.url("/v1/batch"),
        Some("wk_test"),
        &json!({"batch": [{"type": "track", "userId": "u"}, {"type": "track", "userId": "u", "event": "E"}]}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"success": true})));
    assert_eq!(sy.metric("switchyard_source_events_failed_total{source=\"web\"}").await, 1, "{}", sy.logs());
    assert_eq!(sy.metric("switchyard_source_events_accepted_total{source=\"web\"}").await, 1);
}

/// The example config, as `./x run` starts it, works with every admin
/// command the README shows — no token to set by hand — and the admin API
/// still refuses requests without the token.
#[tokio::test]
async fn the_example_config_works_with_the_readme_commands() {
    let root = switchyard_tests::workspace();
    let example = std::fs::read_to_string(root.join("examples/switchyard.toml")).unwrap();
    assert!(
        !example.lines().any(|l| l.trim_start().starts_with("admin_token =")),
        "the example has no token to copy around"
    );
    let text = example
        .replace("127.0.0.1:8088", "127.0.0.1:{port}")
        .replace("127.0.0.1:8089", "127.0.0.1:{admin_port}")
        .replace("\"../data/admin.token\"", "\"{data_dir}/admin.token\"")
        .replace("\"../target/", &format!("\"{}/target/", root.display()));
    // What `./x run` does first: install the first-party packages the
    // example names into its data dir.
    let data = tempfile::tempdir().unwrap();
    let text = text.replace("\"../data\"", &format!("\"{}\"", data.path().display()));
    let install_dir = tempfile::tempdir().unwrap();
    let install_config = switchyard_tests::write_config(&text, install_dir.path()).path;
    for name in ["console", "warehouse"] {
        let package = root.join(format!("target/connectors/dev.switchyard.{name}-0.1.0.tar.gz"));
        let out = std::process::Command::new(switchyard_tests::binary())
            .args(["connector", "install"])
            .arg(&package)
            .arg("--config")
            .arg(&install_config)
            .output()
            .unwrap();
        assert!(out.status.success(), "installing {}: {}", package.display(), String::from_utf8_lossy(&out.stderr));
    }
    let sy = Switchyard::start(&text).await;
    let (code, _) =
        post_json(&sy.url("/v1/track"), Some("demo-write-key"), &json!({"userId": "u1", "event": "Signed Up"})).await;
    assert_eq!(code, 200);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(switchyard_tests::binary())
            .args(args)
            .arg("--config")
            .arg(sy.config_path())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "switchyard {args:?}: {text}");
        text
    };
    assert!(run(&["status"]).contains("console"));
    assert!(run(&["reload"]).contains("reloaded"));
    assert!(run(&["dead-letters", "--destination", "console"]).contains("dead letters"));
    let (code, _) = http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &[], Vec::new()).await;
    assert_eq!(code, 401, "the admin API still needs the token");
}
