//! Secrets (`${VAR}` values in settings) reach only their own destination's
//! plugin, and are redacted everywhere else: logs, errors, dead letters,
//! the admin API, `/metrics` and the CLI.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use switchyard_tests::{Config, Receiver, Switchyard, binary, eventually, http, plugin, post_json};

const SECRET: &str = "sk_live_2b7e151628aed2a6abf71588";
const TOKEN: &str = "s3crets-admin";
const WAIT: Duration = Duration::from_secs(60);

fn config(a: &Receiver, b: &Receiver) -> String {
    let webhook = plugin("webhook_destination");
    let (a, b) = (a.origin(), b.origin());
    let batch = "batch = { max_events = 10, linger_ms = 20 }";
    let a_lines = format!(
        "settings = {{ url = \"{a}/a\", headers = {{ Authorization = \"Bearer ${{A_SECRET}}\" }} }}\nallow_http = [\"{a}\"]\n{batch}"
    );
    let b_lines = format!(
        "settings = {{ url = \"{b}/b\", headers = {{ X-Team = \"growth\" }} }}\nallow_http = [\"{b}\"]\n{batch}"
    );
    Config::new()
        .admin(TOKEN)
        .source("web", "wk_test")
        .destination("a", &webhook, &a_lines)
        .destination("b", &webhook, &b_lines)
        .build()
}

/// `a`'s receiver refuses the credential and echoes it back in its error
/// (as some vendors do), so the plugin's rejection reason carries it; `b`
/// is a healthy neighbour running the same plugin.
#[tokio::test]
async fn a_secret_reaches_only_its_own_destination() {
    let a = Receiver::start(|_, r| {
        let presented = r.headers.get("authorization").cloned().unwrap_or_default();
        (401, vec![], format!("{{\"error\":\"invalid credential: {presented}\"}}"))
    })
    .await;
    let b = Receiver::always(200).await;
    let sy = Switchyard::start_with_env(&config(&a, &b), &[("A_SECRET", SECRET)]).await;

    let batch: Vec<_> =
        (0..3).map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("s-{i}")})).collect();
    let (status, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await;
    assert_eq!(status, 200);
    let dead = sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"a\"}", 3).await;
    assert_eq!(dead, 3, "{}", sy.logs());
    eventually(WAIT, "`b` receives every event", || b.message_ids().len() >= 3).await;

    // The secret went where it belongs, and nowhere else.
    let sent = a.requests();
    assert!(!sent.is_empty());
    for r in &sent {
        assert_eq!(r.headers.get("authorization").map(String::as_str), Some(&*format!("Bearer {SECRET}")));
    }
    for r in b.requests() {
        let text = format!("{:?} {}", r.headers, String::from_utf8_lossy(&r.body));
        assert!(!text.contains(SECRET), "`b`'s request carried `a`'s secret: {text}");
    }

    // Redacted from the dead letters' reasons, which still say what failed.
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = http(
        hyper::Method::GET,
        &sy.admin_url("/admin/destinations/a/dead-letters"),
        &[("authorization", &auth)],
        Vec::new(),
    )
    .await;
    let letters = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "{letters}");
    assert!(letters.contains("invalid credential"), "the reason is kept: {letters}");
    assert!(!letters.contains(SECRET), "secret in the dead letters: {letters}");

    // ...and from the log, the admin API, the metrics and the CLI.
    let (_, destinations) =
        http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &[("authorization", &auth)], Vec::new()).await;
    let (_, metrics) = http(hyper::Method::GET, &sy.admin_url("/metrics"), &[], Vec::new()).await;
    let cli = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(sy.dir.path().join("switchyard.toml"))
            .env("A_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let status = cli(&["status"]);
    let listed = cli(&["dead-letters", "--destination", "a"]);
    assert!(listed.contains("invalid credential"), "{listed}");
    for (place, text) in [
        ("the log", sy.logs()),
        ("GET /admin/destinations", String::from_utf8_lossy(&destinations).into_owned()),
        ("/metrics", String::from_utf8_lossy(&metrics).into_owned()),
        ("switchyard status", status),
        ("switchyard dead-letters", listed),
    ] {
        assert!(!text.contains(SECRET), "the secret leaked into {place}: {text}");
    }
}
