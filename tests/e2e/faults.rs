//! Faults operators meet, through the real binary on real files: a full
//! disk that recovers by itself, an unreadable cursor, readiness, a
//! removed destination holding the log.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, embedded_log_only, eventually, http, post_json};

const WAIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "f4ults-admin";

/// A tmpfs of `mb` MiB mounted on a fresh folder, unmounted when dropped.
/// Needs root (the test machines run as root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mounting a {mb} MiB tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free_mb(&self) -> u64 {
        let out = std::process::Command::new("df").args(["-B1M", "--output=avail"]).arg(self.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A webhook receiver that answers 503 while `down`, and records the ids
/// it accepted.
async fn flaky_receiver(down: Arc<AtomicBool>) -> (Receiver, Arc<Mutex<HashSet<String>>>) {
    let delivered: Arc<Mutex<HashSet<String>>> = Arc::default();
    let d = delivered.clone();
    let receiver = Receiver::start(move |_, req| {
        if down.load(Ordering::SeqCst) {
            return (503, vec![], String::new());
        }
        let ids = req.json()["batch"].as_array().cloned().unwrap_or_default();
        let mut d = d.lock().unwrap();
        d.extend(ids.iter().filter_map(|e| e["messageId"].as_str().map(str::to_owned)));
        (200, vec![], String::new())
    })
    .await;
    (receiver, delivered)
}

fn batch(prefix: &str, n: usize, pad: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "track", "event": "Fill", "userId": "u", "messageId": id, "properties": {"pad": "x".repeat(pad)}}))
        .collect();
    (ids, json!({ "batch": events }))
}

async fn ready(sy: &Switchyard) -> (u16, Value) {
    let (code, body) = http(hyper::Method::GET, &sy.admin_url("/ready"), &[], Vec::new()).await;
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Waits until `/ready` answers `want`; returns how long that took.
async fn wait_ready(sy: &Switchyard, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let (code, body) = ready(sy).await;
        if code == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < WAIT, "/ready never answered {want}: {code} {body}\n{}", sy.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn small_disk_config(disk: &Path, receiver: &Receiver) -> String {
    Config::new()
        .admin(TOKEN)
        .data_dir(&disk.join("data"))
        .server("log_segment_mb = 1")
        .server("min_free_disk_mb = 12")
        .source("web", "wk_test")
        .webhook(
            "hook",
            &format!("{}/hook", receiver.origin()),
            "batch = { max_events = 200, linger_ms = 5 }\nretry = { initial_backoff_ms = 20, max_backoff_ms = 200 }\nquarantine = { after_failures = 1000000 }",
        )
        .build()
}

/// With the destination down, ingest fills a small disk down to its floor
/// and answers 503 (`disk_below_floor`), `/ready` too; once the
/// destination is back, every acknowledged event is delivered and ingest
/// accepts again by itself, including a refused batch resent with the
/// same messageIds.
#[tokio::test]
async fn a_full_disk_recovers_by_itself_once_the_destination_drains_it() {
    if embedded_log_only("the disk floor of data_dir") {
        return;
    }
    let disk = SmallDisk::mount(48);
    let down = Arc::new(AtomicBool::new(true));
    let (receiver, delivered) = flaky_receiver(down.clone()).await;
    let sy = Switchyard::start(&small_disk_config(disk.path(), &receiver)).await;
    assert_eq!(ready(&sy).await.0, 200);

    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    for round in 0..2000 {
        let (ids, body) = batch(&format!("fill{round}"), 100, 1000);
        let (code, reply) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &body).await;
        match code {
            200 => acked.extend(ids),
            503 => {
                assert_eq!(reply["code"], "disk_below_floor", "{reply}");
                assert!(reply["message"].as_str().unwrap_or("").contains("floor"), "{reply}");
                refused = Some((ids, body));
                break;
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    let (refused_ids, refused_body) = refused.expect("the disk filled up to its floor");
    assert!(acked.len() >= 10_000, "{} events fit", acked.len());
    assert!(disk.free_mb() >= 8, "the floor kept room for metadata: {} MiB free", disk.free_mb());
    let (code, body) = ready(&sy).await;
    assert_eq!((code, body["reason"].as_str()), (503, Some("disk_below_floor")), "{body}");
    assert!(sy.metric("switchyard_ingest_refused_total{reason=\"disk_below_floor\"}").await >= 1);
    assert_eq!(sy.metric("switchyard_log_accepting").await, 0);
    eventually(WAIT, "the refusal is logged", || sy.logs().contains("refusing events: disk space below the floor"))
        .await;

    // The destination comes back: everything acknowledged is delivered,
    // and ingest accepts again without any request to wake it.
    down.store(false, Ordering::SeqCst);
    eventually(WAIT, "every acknowledged event delivered", || {
        let d = delivered.lock().unwrap();
        acked.iter().all(|id| d.contains(id))
    })
    .await;
    let drained = Instant::now();
    wait_ready(&sy, 200).await;
    println!("full disk: /ready answered 200 {} ms after the last delivery", drained.elapsed().as_millis());
    assert_eq!(sy.metric("switchyard_log_accepting").await, 1);

    // The refused batch was not taken for delivered: resent, it is
    // accepted and delivered.
    let (code, reply) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &refused_body).await;
    assert_eq!(code, 200, "{reply}");
    eventually(WAIT, "the resent batch is delivered", || {
        let d = delivered.lock().unwrap();
        refused_ids.iter().all(|id| d.contains(id))
    })
    .await;
    assert_eq!(sy.metric("switchyard_source_events_deduplicated_total{source=\"web\"}").await, 0);
}

/// Space the operator frees (a big file deleted) lets ingest in again
/// within a second, with no traffic needed. Prints how long it took.
#[tokio::test]
async fn space_freed_by_the_operator_lets_ingest_in_again() {
    if embedded_log_only("the disk floor of data_dir") {
        return;
    }
    let disk = SmallDisk::mount(48);
    let (receiver, delivered) = flaky_receiver(Arc::new(AtomicBool::new(false))).await;
    let sy = Switchyard::start(&small_disk_config(disk.path(), &receiver)).await;
    let (ids, body) = batch("before", 10, 10);
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &body).await.0, 200);

    // Something else fills the disk.
    let ballast: PathBuf = disk.path().join("ballast");
    let free = disk.free_mb();
    std::fs::write(&ballast, vec![1u8; ((free - 4) * 1024 * 1024) as usize]).unwrap();
    wait_ready(&sy, 503).await;
    let (_, body2) = batch("during", 10, 10);
    let (code, reply) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &body2).await;
    assert_eq!((code, reply["code"].as_str()), (503, Some("disk_below_floor")), "{reply}");

    std::fs::remove_file(&ballast).unwrap();
    let took = wait_ready(&sy, 200).await;
    println!("space freed: /ready answered 200 {} ms after the file was deleted", took.as_millis());
    let (code, reply) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &body2).await;
    assert_eq!(code, 200, "{reply}");
    eventually(WAIT, "both batches delivered", || {
        let d = delivered.lock().unwrap();
        ids.iter().all(|id| d.contains(id)) && (0..10).all(|i| d.contains(&format!("during-{i}")))
    })
    .await;
}

/// An unreadable cursor (a power loss left it empty) never skips events:
/// the destination resumes from the oldest record the log holds, says so,
/// and delivers what it had not.
#[tokio::test]
async fn a_corrupt_cursor_resumes_from_the_oldest_record_not_the_end() {
    if embedded_log_only("cursor files") {
        return;
    }
    let down = Arc::new(AtomicBool::new(true));
    let (receiver, delivered) = flaky_receiver(down.clone()).await;
    let cfg = Config::new()
        .admin(TOKEN)
        .source("web", "wk_test")
        .webhook(
            "hook",
            &format!("{}/hook", receiver.origin()),
            "retry = { initial_backoff_ms = 20, max_backoff_ms = 100 }\nquarantine = { after_failures = 1000000 }",
        )
        .build();
    let mut sy = Switchyard::start(&cfg).await;
    let (ids, body) = batch("kept", 50, 10);
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &body).await.0, 200);
    eventually(WAIT, "delivery attempted", || receiver.count() > 0).await;
    sy.kill9();

    let cursor = sy.config_path().with_file_name("data").join("cursors").join("hook.cursor");
    assert!(cursor.exists(), "{}", cursor.display());
    std::fs::write(&cursor, b"").unwrap();
    down.store(false, Ordering::SeqCst);
    sy.restart().await;
    eventually(WAIT, "the undelivered events are delivered after all", || {
        let d = delivered.lock().unwrap();
        ids.iter().all(|id| d.contains(id))
    })
    .await;
    assert!(sy.logs().contains("unreadable cursor file"), "{}", sy.logs());
}

/// A destination removed from the config shows how much of the log it
/// holds: in `/admin/destinations`, `switchyard status` and `/metrics`.
#[tokio::test]
async fn a_removed_destination_shows_the_log_it_holds() {
    if embedded_log_only("the segment bytes a destination holds") {
        return;
    }
    let receiver = Receiver::always(200).await;
    let hook = |cfg: Config, name: &str| {
        cfg.webhook(name, &format!("{}/{name}", receiver.origin()), "batch = { max_events = 100, linger_ms = 5 }")
    };
    let head = Config::new().admin(TOKEN).server("log_segment_mb = 1").source("web", "wk_test");
    let sy = Switchyard::start(&hook(hook(head.clone(), "kept"), "gone").build()).await;
    let auth = format!("Bearer {TOKEN}");
    let list = || async {
        let (code, body) =
            http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &[("authorization", &auth)], Vec::new())
                .await;
        assert_eq!(code, 200);
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    sy.rewrite_config(&hook(head, "kept").build());
    let start = Instant::now();
    loop {
        let body = list().await;
        let gone = body["destinations"].as_array().unwrap().iter().find(|d| d["name"] == "gone").cloned();
        if gone.as_ref().is_some_and(|d| d["state"] == "removed") {
            break;
        }
        assert!(start.elapsed() < WAIT, "`gone` never removed: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 0..30 {
        let (_, body) = batch(&format!("held{round}"), 100, 1000);
        assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &body).await.0, 200);
    }
    let body = list().await;
    let gone = body["destinations"].as_array().unwrap().iter().find(|d| d["name"] == "gone").cloned().unwrap();
    assert_eq!(gone["backlog"], 3000, "{gone}");
    let bytes = gone["log_bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 3 * 1024 * 1024, "3000 events of ~1 KB are held: {gone}");
    assert!(sy.metric("switchyard_destination_log_bytes{destination=\"gone\"}").await > 3 * 1024 * 1024);
    let out = std::process::Command::new(switchyard_tests::binary())
        .args(["status", "--config"])
        .arg(sy.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("gone")).unwrap_or_default().to_owned();
    assert!(line.contains("removed") && line.contains("MiB"), "{text}");
}
