//! Hot reload: plugin versions and config edits applied while events flow,
//! losing none; broken versions and configs refused while the running ones
//! keep delivering; pause, resume and purge through the admin API and CLI.
//!
//! Plugin files are replaced the way deploys and editors do it (a temporary
//! file renamed over the old one); the server notices by itself. Deadlines
//! are generous: they bound correctness, never speed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_tests::{Config, Receiver, Switchyard, binary, eventually, http, plugin, post_json, replace_file};

const TOKEN: &str = "r3load-admin";
const WAIT: Duration = Duration::from_secs(60);

/// The head of every config here: listeners, one source, a quick watcher.
fn head() -> Config {
    Config::new().admin(TOKEN).server("watch_debounce_ms = 100").source("web", "wk_test")
}

/// `cfg` with a webhook destination `name` at `plugin`, delivering to `to`.
fn webhook(cfg: Config, name: &str, plugin: &Path, to: &Receiver) -> Config {
    let lines = format!(
        r#"
settings = {{ url = "{origin}/{name}" }}
allow_http = ["{origin}"]
batch = {{ max_events = 20, linger_ms = 10 }}
"#,
        origin = to.origin(),
    );
    cfg.destination(name, plugin, &lines)
}

/// The webhook plugin with a custom section naming `version` appended: the
/// same code under a new content hash, as a rebuilt plugin would be.
fn webhook_version(version: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(plugin("webhook_destination")).unwrap();
    if version > 0 {
        let name = b"switchyard-test-version";
        let payload = version.to_le_bytes();
        let mut section = vec![name.len() as u8];
        section.extend_from_slice(name);
        section.extend_from_slice(&payload);
        bytes.push(0); // custom section id
        bytes.push(section.len() as u8); // LEB128 size (< 128)
        bytes.extend_from_slice(&section);
    }
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn events(prefix: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| json!({"type": "track", "event": "Reload", "userId": "u", "messageId": format!("{prefix}-{i}")}))
        .collect()
}

async fn admin(sy: &Switchyard, method: hyper::Method, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = http(method, &sy.admin_url(path), &[("authorization", &auth)], Vec::new()).await;
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn destination(sy: &Switchyard, name: &str) -> Value {
    let (code, body) = admin(sy, hyper::Method::GET, "/admin/destinations").await;
    assert_eq!(code, 200, "{body}");
    body["destinations"].as_array().unwrap().iter().find(|d| d["name"] == name).cloned().unwrap_or(Value::Null)
}

/// Polls `/admin/destinations` until `name` satisfies `cond`.
async fn wait_destination(sy: &Switchyard, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let d = destination(sy, name).await;
        if cond(&d) {
            return d;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for `{name}` to be {what}: {d}\n{}", sy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cli(sy: &Switchyard, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(binary()).args(args).arg("--config").arg(sy.config_path()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A server whose `hook` runs the webhook plugin from a file in a folder of
/// its own (so the test can replace it), once version 0 is running; the
/// folder, the file and version 0's hash.
async fn start_on_version_0(receiver: &Receiver) -> (Switchyard, tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hook.wasm");
    std::fs::write(&wasm, webhook_version(0)).unwrap();
    let sy = Switchyard::start(&webhook(head(), "hook", &wasm, receiver).build()).await;
    let first = sha256(&webhook_version(0));
    wait_destination(&sy, "hook", "on the first version", |d| d["plugin"]["hash"] == first.as_str()).await;
    (sy, dir, wasm, first)
}

/// Posts batches of 10 events until stopped; returns every accepted id.
fn continuous_load(sy: &Switchyard) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = sy.url("/v1/batch");
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut n = 0;
        while !s.load(Ordering::SeqCst) {
            let batch = events("load", n..n + 10);
            let (status, _) = post_json(&url, Some("wk_test"), &json!({ "batch": batch })).await;
            if status == 200 {
                accepted.extend((n..n + 10).map(|i| format!("load-{i}")));
            }
            n += 10;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        accepted
    });
    (stop, task)
}

/// 20 plugin versions swapped in under continuous load: every accepted
/// event is delivered, each delivery is counted against the one version
/// that made it, and any duplicate is counted.
#[tokio::test]
async fn twenty_plugin_swaps_under_load_lose_nothing() {
    let receiver = Receiver::always(200).await;
    let (sy, _dir, wasm, first) = start_on_version_0(&receiver).await;

    let (stop, load) = continuous_load(&sy);
    let mut hashes = vec![first];
    for version in 1..=20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let bytes = webhook_version(version);
        let hash = sha256(&bytes);
        replace_file(&wasm, &bytes);
        wait_destination(&sy, "hook", &format!("on version {version}"), |d| d["plugin"]["hash"] == hash.as_str()).await;
        hashes.push(hash);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let accepted = load.await.unwrap();
    assert!(accepted.len() >= 200, "the load kept flowing: {} events accepted", accepted.len());

    eventually(WAIT, "every accepted event is delivered", || {
        let got: HashSet<String> = receiver.message_ids().into_iter().collect();
        accepted.iter().all(|id| got.contains(id))
    })
    .await;
    let received = receiver.message_ids();
    let unique: HashSet<&String> = received.iter().collect();
    let duplicates = received.len() - unique.len();
    // Batches in flight at a swap finish on their version, so none is sent
    // twice; the metric counts every delivery, duplicates included.
    let d = wait_destination(&sy, "hook", "caught up", |d| d["backlog"] == 0).await;
    assert_eq!(d["delivered"], received.len(), "{d}");
    assert_eq!(duplicates, 0, "{duplicates} duplicate deliveries across 20 swaps");
    let by_plugin: BTreeMap<String, u64> = serde_json::from_value(d["delivered_by_plugin"].clone()).unwrap();
    assert_eq!(by_plugin.values().sum::<u64>(), received.len() as u64, "each delivery counted once: {by_plugin:?}");
    assert!(by_plugin.keys().all(|h| hashes.contains(h)), "only the swapped versions delivered: {by_plugin:?}");
    assert!(by_plugin.len() >= 2, "deliveries spread over the versions: {by_plugin:?}");
    assert!(sy.metric("switchyard_reloads_total{result=\"applied\"}").await >= 20);
    assert_eq!(sy.metric("switchyard_reloads_total{result=\"refused\"}").await, 0, "{}", sy.logs());
}

/// A file beside the plugin written every 50 ms (a server log, say) does
/// not hold a reload back: a new version renamed into place meanwhile is
/// adopted and delivering while the writes go on. Prints how long that
/// took (BENCHMARKS.md).
#[tokio::test]
async fn a_busy_file_beside_the_plugin_does_not_hold_back_its_reload() {
    let receiver = Receiver::always(200).await;
    let (sy, dir, wasm, _first) = start_on_version_0(&receiver).await;

    let noisy = Arc::new(AtomicBool::new(true));
    let writer = {
        let (noisy, path) = (noisy.clone(), dir.path().join("server.log"));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            let mut lines = 0u64;
            while noisy.load(Ordering::SeqCst) {
                writeln!(log, "line {lines}").unwrap();
                lines += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            lines
        })
    };
    let (stop, load) = continuous_load(&sy);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let next = webhook_version(1);
    let hash = sha256(&next);
    let renamed = Instant::now();
    replace_file(&wasm, &next);
    wait_destination(&sy, "hook", "on the new version", |d| d["plugin"]["hash"] == hash.as_str()).await;
    let adopted = renamed.elapsed();
    wait_destination(&sy, "hook", "delivering with the new version", |d| {
        d["delivered_by_plugin"][hash.as_str()].as_u64().unwrap_or(0) > 0
    })
    .await;
    let delivering = renamed.elapsed();
    assert!(noisy.load(Ordering::SeqCst), "the writes went on throughout");
    noisy.store(false, Ordering::SeqCst);
    let lines = writer.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let accepted = load.await.unwrap();
    assert!(lines >= 10, "the neighbour file kept being written: {lines} lines");
    eventually(WAIT, "every accepted event is delivered", || {
        let got: HashSet<String> = receiver.message_ids().into_iter().collect();
        accepted.iter().all(|id| got.contains(id))
    })
    .await;
    println!(
        "reload beside a file written every 50 ms: adopted {} ms, delivering {} ms after the rename",
        adopted.as_millis(),
        delivering.as_millis()
    );
}

/// A version that is not a component, then one whose `init` refuses the
/// settings: each is refused, visibly, while the old version keeps
/// delivering; a good version after them is adopted.
#[tokio::test]
async fn a_broken_plugin_version_is_refused_and_the_old_one_keeps_delivering() {
    let receiver = Receiver::always(200).await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hook.wasm");
    std::fs::write(&wasm, webhook_version(0)).unwrap();
    let sy = Switchyard::start(&webhook(head(), "hook", &wasm, &receiver).build()).await;
    let good = sha256(&webhook_version(0));

    let broken: [(&[u8], &str); 2] = [
        (b"this is not a plugin", "not a WebAssembly file"),
        (&std::fs::read(plugin("hostile_destination")).unwrap(), "invalid settings"),
    ];
    for (round, (bytes, why)) in broken.iter().enumerate() {
        let refused_before = sy.metric("switchyard_reloads_total{result=\"refused\"}").await;
        replace_file(&wasm, bytes);
        let d = wait_destination(&sy, "hook", "refusing the broken version", |d| {
            d["plugin"]["refused"]["reason"].as_str().is_some_and(|r| r.contains(why))
        })
        .await;
        assert_eq!(d["plugin"]["hash"], good.as_str(), "the old version still runs: {d}");
        assert_eq!(d["state"], "active", "{d}");
        assert!(sy.metric("switchyard_reloads_total{result=\"refused\"}").await > refused_before);
        let (ok, status) = cli(&sy, &["status"]);
        assert!(ok && status.contains("reload refused") && status.contains(why), "{status}");

        // The old version keeps delivering.
        let prefix = format!("during-broken-{round}");
        let (code, _) =
            post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": events(&prefix, 0..5) })).await;
        assert_eq!(code, 200);
        eventually(WAIT, "events delivered by the old version", || {
            let got = receiver.message_ids();
            (0..5).all(|i| got.contains(&format!("{prefix}-{i}")))
        })
        .await;
    }
    assert!(sy.logs().contains("reload refused"), "the refusal is logged");

    // A good version is adopted and the refusal cleared.
    let next = webhook_version(7);
    let hash = sha256(&next);
    replace_file(&wasm, &next);
    let d = wait_destination(&sy, "hook", "on the fixed version", |d| d["plugin"]["hash"] == hash.as_str()).await;
    assert!(d["plugin"]["refused"].is_null(), "{d}");
    assert_eq!(d["plugin"]["contract"], "0.2.0", "{d}");
}

/// Config edits apply live: a destination is added and another removed;
/// the removed one keeps its undelivered events (and delivers them when it
/// comes back) until purged; a new source's key works; an invalid config is
/// refused whole while the running one stays.
#[tokio::test]
async fn config_edits_add_and_remove_destinations_live() {
    let (ra, rb) = (Receiver::always(200).await, Receiver::always(200).await);
    let hook = plugin("webhook_destination");
    let only_a = webhook(head(), "a", &hook, &ra);
    let sy = Switchyard::start(&only_a.build()).await;
    let send = |prefix: &'static str, key: &'static str| {
        let url = sy.url("/v1/batch");
        async move {
            let (code, body) = post_json(&url, Some(key), &json!({ "batch": events(prefix, 0..5) })).await;
            (code, body)
        }
    };
    let has_all = |r: &Receiver, prefix: &str| {
        let got = r.message_ids();
        (0..5).all(|i| got.contains(&format!("{prefix}-{i}")))
    };
    assert_eq!(send("first", "wk_test").await.0, 200);
    eventually(WAIT, "`a` delivers", || has_all(&ra, "first")).await;

    // `a` paused, so its next events wait; then it is removed and `b` added.
    let (code, _) = admin(&sy, hyper::Method::POST, "/admin/destinations/a/pause").await;
    assert_eq!(code, 200);
    wait_destination(&sy, "a", "paused", |d| d["state"] == "paused").await;
    assert_eq!(send("waiting", "wk_test").await.0, 200);
    wait_destination(&sy, "a", "holding 5 events", |d| d["backlog"] == 5).await;
    let only_b = webhook(head().source("ios", "wk_ios"), "b", &hook, &rb);
    sy.rewrite_config(&only_b.build());
    wait_destination(&sy, "b", "added", |d| d["state"] == "active").await;
    let a = wait_destination(&sy, "a", "removed", |d| d["state"] == "removed").await;
    assert_eq!(a["backlog"], 5, "the removed destination keeps its undelivered events: {a}");
    assert_eq!(send("second", "wk_ios").await.0, 200, "the new source's key works");
    eventually(WAIT, "`b` delivers", || has_all(&rb, "second")).await;
    assert!(!has_all(&ra, "second") && !has_all(&ra, "waiting"), "`a` is gone");

    // An invalid config is refused whole: `b` keeps running.
    let refused_before = sy.metric("switchyard_reloads_total{result=\"refused\"}").await;
    sy.rewrite_config(&only_b.clone().destination("c", "/nonexistent.wasm", "").build());
    let start = Instant::now();
    while sy.metric("switchyard_reloads_total{result=\"refused\"}").await == refused_before {
        assert!(start.elapsed() < WAIT, "the bad config was not refused:\n{}", sy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = admin(&sy, hyper::Method::POST, "/admin/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("nonexistent.wasm"), "{body}");
    assert!(destination(&sy, "c").await.is_null());
    assert_eq!(send("third", "wk_ios").await.0, 200);
    eventually(WAIT, "`b` still delivers", || has_all(&rb, "third")).await;

    // `a` comes back and delivers what waited for it.
    sy.rewrite_config(&webhook(only_b.clone(), "a", &hook, &ra).build());
    eventually(WAIT, "`a` delivers its kept events", || has_all(&ra, "waiting")).await;

    // Removed again, then purged from the CLI.
    sy.rewrite_config(&only_b.build());
    wait_destination(&sy, "a", "removed", |d| d["state"] == "removed").await;
    let (ok, out) = cli(&sy, &["purge", "--destination", "b"]);
    assert!(!ok && out.contains("is in the config"), "a configured destination cannot be purged: {out}");
    let (ok, out) = cli(&sy, &["purge", "--destination", "a"]);
    assert!(ok, "{out}");
    assert!(destination(&sy, "a").await.is_null(), "purged");
}

/// Pause and resume from the CLI; the admin API refuses requests without
/// the token.
#[tokio::test]
async fn pause_resume_and_the_admin_token() {
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&webhook(head(), "hook", &plugin("webhook_destination"), &receiver).build()).await;
    for (method, path) in [
        (hyper::Method::POST, "/admin/reload"),
        (hyper::Method::POST, "/admin/destinations/hook/pause"),
        (hyper::Method::POST, "/admin/destinations/hook/resume"),
        (hyper::Method::DELETE, "/admin/destinations/hook"),
        (hyper::Method::GET, "/admin/destinations"),
    ] {
        let (code, _) = http(method.clone(), &sy.admin_url(path), &[], Vec::new()).await;
        assert_eq!(code, 401, "{method} {path} without a token");
        let (code, _) =
            http(method.clone(), &sy.admin_url(path), &[("authorization", "Bearer wrong")], Vec::new()).await;
        assert_eq!(code, 401, "{method} {path} with a wrong token");
    }

    let (ok, out) = cli(&sy, &["pause", "--destination", "hook"]);
    assert!(ok, "{out}");
    assert_eq!(sy.metric("switchyard_destination_paused{destination=\"hook\"}").await, 1);
    let (code, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": events("p", 0..5) })).await;
    assert_eq!(code, 200);
    let d = wait_destination(&sy, "hook", "holding the events", |d| d["backlog"] == 5).await;
    assert_eq!(d["state"], "paused");
    let (ok, status) = cli(&sy, &["status"]);
    assert!(ok && status.lines().any(|l| l.starts_with("hook ") && l.contains("paused")), "{status}");
    assert!(receiver.message_ids().is_empty(), "nothing is delivered while paused");

    let (ok, out) = cli(&sy, &["resume", "--destination", "hook"]);
    assert!(ok, "{out}");
    eventually(WAIT, "delivered after resume", || receiver.message_ids().len() == 5).await;
    wait_destination(&sy, "hook", "caught up", |d| d["backlog"] == 0 && d["state"] == "active").await;
    assert_eq!(sy.metric("switchyard_destination_paused{destination=\"hook\"}").await, 0);
    let (ok, out) = cli(&sy, &["pause", "--destination", "nope"]);
    assert!(!ok && out.contains("no destination named `nope`"), "{out}");

    // The delivery-overview stages and the call-latency histogram are
    // exported for the destination.
    let (_, metrics) = http(hyper::Method::GET, &sy.admin_url("/metrics"), &[], Vec::new()).await;
    let metrics = String::from_utf8_lossy(&metrics);
    for series in [
        "switchyard_destination_received_total{destination=\"hook\"} 5",
        "switchyard_destination_delivered_total{destination=\"hook\"} 5",
        "switchyard_destination_failed_total{destination=\"hook\"} 0",
        "switchyard_destination_backlog{destination=\"hook\"} 0",
        "switchyard_destination_call_duration_seconds_count{destination=\"hook\"}",
        "switchyard_source_events_accepted_total{source=\"web\"} 5",
    ] {
        assert!(metrics.contains(series), "missing `{series}`:\n{metrics}");
    }
}
