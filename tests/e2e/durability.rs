//! The durable log through the real binary: crashes, restarts, dedupe, dead
//! letters and replay.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, eventually, http, post_json};

const WAIT: Duration = Duration::from_secs(90);

fn config(receiver: &Receiver, extra: &str) -> Config {
    let lines = format!(
        "batch = {{ max_events = 200, linger_ms = 10 }}\nretry = {{ initial_backoff_ms = 20, max_backoff_ms = 200 }}\n{extra}"
    );
    Config::new().admin("adm1n-token").server("log_segment_mb = 1").source("web", "wk_test").webhook(
        "hook",
        &format!("{}/hook", receiver.origin()),
        &lines,
    )
}

/// The `messageId`s of the requests whose index `pick` accepts, in
/// arrival order.
fn ids_of_requests(receiver: &Receiver, pick: impl Fn(usize) -> bool) -> Vec<String> {
    let requests = receiver.requests();
    let picked = requests.iter().enumerate().filter(|(i, _)| pick(*i));
    let events = picked.flat_map(|(_, r)| r.json()["batch"].as_array().cloned().unwrap_or_default());
    events.filter_map(|e| e["messageId"].as_str().map(str::to_owned)).collect()
}

/// Sends batches of 50 until told to stop; records the ids answered 200.
fn load(url: String, acked: Arc<Mutex<Vec<String>>>, stop: Arc<std::sync::atomic::AtomicBool>, tag: &'static str) {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let ids: Vec<String> = (0..50).map(|i| format!("{tag}-{n}-{i}")).collect();
            let batch: Vec<Value> = ids
                .iter()
                .map(|id| json!({"type": "track", "event": "Load", "userId": "u", "messageId": id, "properties": {"pad": "x".repeat(300)}}))
                .collect();
            n += 1;
            let body = json!({"batch": batch}).to_string();
            let auth = "Basic d2tfdGVzdDo="; // wk_test:
            let result = tokio::time::timeout(Duration::from_secs(5), try_post(&url, auth, body)).await;
            match result {
                Ok(Some(200)) => acked.lock().unwrap().extend(ids),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

/// The `acked` ids `receiver` has not got, once it has them all or
/// [`WAIT`] has passed.
async fn undelivered_after_waiting(receiver: &Receiver, acked: &[String]) -> Vec<String> {
    let missing = || {
        let got: HashSet<String> = receiver.message_ids().into_iter().collect();
        acked.iter().filter(|id| !got.contains(*id)).cloned().collect::<Vec<_>>()
    };
    let start = std::time::Instant::now();
    while !missing().is_empty() && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    missing()
}

async fn try_post(url: &str, auth: &str, body: String) -> Option<u16> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = hyper::Request::post(url).header("authorization", auth).body(Full::new(bytes::Bytes::from(body))).ok()?;
    client.request(req).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    let receiver = Receiver::always(200).await;
    let mut sy = Switchyard::start(&config(&receiver, "").build()).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    for (round, tag) in ["r0", "r1", "r2"].into_iter().enumerate() {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..3 {
            load(sy.url("/v1/batch"), acked.clone(), stop.clone(), tag);
        }
        // Let load build up for a while, then pull the plug mid-stream.
        let before = acked.lock().unwrap().len();
        eventually(WAIT, "some load accepted", || acked.lock().unwrap().len() >= before + 500 * (round + 1)).await;
        sy.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        sy.restart().await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3000, "load ran: {}", acked.len());
    let missing = undelivered_after_waiting(&receiver, &acked).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events never delivered, e.g. {:?}\n{}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)],
        sy.logs()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("worker started"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// kill -9 at random moments, each run with a random cursor commit
/// interval (every batch to once a second) and two calls in flight (so
/// batches finish out of order): no acknowledged event is ever lost. The
/// seed is printed so a failure can be replayed (`SWITCHYARD_TEST_SEED`).
#[tokio::test]
async fn kill_9_at_random_moments_with_random_commit_timing_loses_nothing() {
    let seed =
        std::env::var("SWITCHYARD_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let receiver = Receiver::always(200).await;
    let cfg = |commit_ms: u64| {
        config(&receiver, "quota = { max_concurrent_calls = 2 }")
            .server(&format!("cursor_commit_ms = {commit_ms}"))
            .build()
    };
    let commit_ms = |rng: &mut fastrand::Rng| [0, 3, 50, 250, 1000][rng.usize(..5)];
    let mut commit = commit_ms(&mut rng);
    let mut sy = Switchyard::start(&cfg(commit)).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    for (round, tag) in ["q0", "q1", "q2", "q3", "q4"].into_iter().enumerate() {
        if round > 0 {
            commit = commit_ms(&mut rng);
            sy.rewrite_config(&cfg(commit));
            sy.restart().await;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..2 {
            load(sy.url("/v1/batch"), acked.clone(), stop.clone(), tag);
        }
        let alive = Duration::from_millis(rng.u64(30..1500));
        println!("round {round}: cursor_commit_ms = {commit}, killed after {} ms", alive.as_millis());
        tokio::time::sleep(alive).await;
        sy.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sy.rewrite_config(&cfg(100));
    sy.restart().await;
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 500, "load ran: {}", acked.len());
    let missing = undelivered_after_waiting(&receiver, &acked).await;
    assert!(
        missing.is_empty(),
        "seed {seed}: {} of {} acknowledged events never delivered, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn duplicates_are_dropped_across_a_restart() {
    let receiver = Receiver::always(200).await;
    let mut sy = Switchyard::start(&config(&receiver, "").build()).await;
    let event = |id: &str| json!({"type": "track", "event": "E", "userId": "u", "messageId": id});
    post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": [event("dup-1"), event("dup-1")]})).await;
    eventually(WAIT, "first delivery", || receiver.message_ids().contains(&"dup-1".to_owned())).await;
    let status = sy.terminate();
    assert!(status.success(), "clean shutdown on SIGTERM: {status}");
    sy.restart().await;
    let (status, body) =
        post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": [event("dup-1"), event("new-1")]})).await;
    assert_eq!((status, body), (200, json!({"success": true})), "a duplicate is still answered 200");
    eventually(WAIT, "new event delivered", || receiver.message_ids().contains(&"new-1".to_owned())).await;
    assert_eq!(receiver.message_ids().iter().filter(|id| *id == "dup-1").count(), 1);
    // After the restart: one dropped (the first process's count is gone),
    // one written.
    let source = |m: &str| format!("switchyard_source_events_{m}_total{{source=\"web\"}}");
    assert_eq!(sy.metric(&source("deduplicated")).await, 1);
    assert_eq!(sy.metric(&source("accepted")).await, 1);
}

#[tokio::test]
async fn outage_then_recovery_delivers_everything() {
    // The destination is down (503) for its first 8 requests, then recovers.
    let receiver = Receiver::start(|i, _| (if i < 8 { 503 } else { 200 }, vec![], String::new())).await;
    let sy = Switchyard::start(&config(&receiver, "").build()).await;
    let mut ids = Vec::new();
    for b in 0..10 {
        let batch: Vec<Value> = (0..20)
            .map(|i| {
                let id = format!("o-{b}-{i}");
                ids.push(id.clone());
                json!({"type": "identify", "userId": format!("u{i}"), "messageId": id, "traits": {"n": i}})
            })
            .collect();
        assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({"batch": batch})).await.0, 200);
    }
    eventually(WAIT, "all delivered after the outage", || {
        let ok: HashSet<String> = receiver
            .requests()
            .get(8..)
            .unwrap_or_default()
            .iter()
            .flat_map(|r| r.json()["batch"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["messageId"].as_str().map(str::to_owned))
            .collect();
        ids.iter().all(|id| ok.contains(id))
    })
    .await;
    assert!(sy.metric("switchyard_destination_retried_total{destination=\"hook\"}").await > 0);
    assert_eq!(sy.metric("switchyard_destination_dead_lettered_total{destination=\"hook\"}").await, 0);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    // The first request is refused with 400; everything after succeeds.
    let receiver = Receiver::start(|i, _| (if i == 0 { 400 } else { 200 }, vec![], "bad".into())).await;
    let sy = Switchyard::start(&config(&receiver, "").build()).await;
    post_json(&sy.url("/v1/track"), Some("wk_test"), &json!({"userId": "u", "event": "E", "messageId": "dl-1"})).await;
    let dead = sy.wait_metric("switchyard_destination_dead_lettered_total{destination=\"hook\"}", 1).await;
    assert_eq!(dead, 1);

    let list_url = sy.admin_url("/admin/destinations/hook/dead-letters");
    let (status, _) = http(hyper::Method::GET, &list_url, &[], Vec::new()).await;
    assert_eq!(status, 401, "the admin API needs the token");
    let (status, _) = http(hyper::Method::GET, &list_url, &[("authorization", "Bearer wrong")], Vec::new()).await;
    assert_eq!(status, 401);
    let auth = [("authorization", "Bearer adm1n-token")];
    let (status, body) = http(hyper::Method::GET, &list_url, &auth, Vec::new()).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["count"], 1);
    assert_eq!(body["dead_letters"][0]["messageId"], "dl-1");
    assert!(body["dead_letters"][0]["reason"].as_str().unwrap().contains("HTTP 400"), "{body}");

    // Replay with the CLI, as an operator would.
    let out = std::process::Command::new(switchyard_tests::binary())
        .args(["dead-letters", "--config"])
        .arg(sy.dir.path().join("switchyard.toml"))
        .args(["--destination", "hook", "--replay"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("replayed 1"), "{stdout}");
    eventually(WAIT, "the replayed event delivered", || {
        receiver.message_ids().iter().filter(|id| *id == "dl-1").count() == 2
    })
    .await;
    let (_, body) = http(hyper::Method::GET, &list_url, &auth, Vec::new()).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["count"], 0, "nothing left to replay");
}

#[tokio::test]
async fn status_shows_a_quarantined_destination_and_its_waiting_backlog() {
    let receiver = Receiver::always(200).await;
    // `hook` breaches its sandbox (its URL's origin is not allowed); `ok`
    // beside it is healthy.
    let cfg = config(&receiver, "quarantine = { after_failures = 2, initial_ms = 60000 }")
        .webhook("ok", &format!("{}/ok", receiver.origin()), "")
        .build()
        .replace(&format!("{}/hook", receiver.origin()), "http://127.0.0.1:9/hook");
    let sy = Switchyard::start(&cfg).await;
    let batch: Vec<Value> = (0..30)
        .map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("st-{i}")}))
        .collect();
    let (status, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await;
    assert_eq!(status, 200);
    eventually(WAIT, "the healthy destination gets all 30", || receiver.message_ids().len() >= 30).await;
    assert_eq!(sy.wait_metric("switchyard_destination_quarantined{destination=\"hook\"}", 1).await, 1);
    // The receiver has them before the plugin's call returns and the
    // worker acks them.
    assert_eq!(sy.wait_metric("switchyard_destination_backlog{destination=\"ok\"}", 0).await, 0);

    let auth = [("authorization", "Bearer adm1n-token")];
    let (code, _) = http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &[], Vec::new()).await;
    assert_eq!(code, 401);
    let (code, body) = http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &auth, Vec::new()).await;
    assert_eq!(code, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let hook = body["destinations"].as_array().unwrap().iter().find(|d| d["name"] == "hook").unwrap().clone();
    assert_eq!(hook["state"], "quarantined", "{body}");
    assert!(hook["reason"].as_str().unwrap().contains("not in allow_http"), "{body}");
    assert_eq!(hook["backlog"], 30, "its events wait in the log: {body}");
    assert_eq!(hook["dead_lettered"], 0);
    let ok = body["destinations"].as_array().unwrap().iter().find(|d| d["name"] == "ok").unwrap().clone();
    assert_eq!((ok["state"].as_str(), ok["backlog"].as_u64()), (Some("active"), Some(0)), "{body}");

    let out = std::process::Command::new(switchyard_tests::binary())
        .args(["status", "--config"])
        .arg(sy.dir.path().join("switchyard.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("hook ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("quarantined") && line.contains("30") && line.contains("not in allow_http"), "{stdout}");
}

#[tokio::test]
async fn an_ordered_destination_retries_in_place_and_keeps_each_users_order() {
    // Every third request fails (503, retried); the receiver sees each
    // event at least once and, per user, never one before an earlier one.
    let receiver = Receiver::start(|i, _| (if i % 3 == 1 { 503 } else { 200 }, vec![], String::new())).await;
    let cfg = config(&receiver, "ordered = true\nquota = { max_concurrent_calls = 4 }").build();
    let sy = Switchyard::start(&cfg.replace("max_events = 200", "max_events = 15")).await;
    let mut sent: Vec<(String, String)> = Vec::new();
    for round in 0..8 {
        let batch: Vec<Value> = (0..30)
            .map(|i| {
                let (user, id) = (format!("u{}", i % 3), format!("o{round}-{i}"));
                sent.push((user.clone(), id.clone()));
                json!({"type": "track", "event": "E", "userId": user, "messageId": id})
            })
            .collect();
        assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await.0, 200);
    }
    // Requests `i % 3 == 1` were answered 503.
    let taken = || ids_of_requests(&receiver, |i| i % 3 != 1);
    eventually(WAIT, "all 240 delivered", || taken().into_iter().collect::<HashSet<_>>().len() == 240).await;
    assert!(receiver.count() > 3, "some requests failed and were retried");
    // Per user: the order in which events were taken (answered 200) is
    // the order sent; without `ordered`, a failed batch's retry lands
    // after later batches.
    let user_of: HashMap<String, String> = sent.iter().map(|(u, id)| (id.clone(), u.clone())).collect();
    let mut arrived: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen = HashSet::new();
    for id in taken() {
        if seen.insert(id.clone()) {
            arrived.entry(user_of[&id].clone()).or_default().push(id);
        }
    }
    for user in ["u0", "u1", "u2"] {
        let expected: Vec<String> = sent.iter().filter(|(u, _)| u == user).map(|(_, id)| id.clone()).collect();
        assert_eq!(arrived[user], expected, "{user}'s events out of order");
    }
}

#[tokio::test]
async fn turning_order_on_and_off_by_reload_keeps_every_event() {
    // The receiver fails until told otherwise, so events wait unfinished
    // (retrying) while the destination's consumer changes shape.
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = fail.clone();
    let receiver = Receiver::start(move |_, _| {
        (if flag.load(std::sync::atomic::Ordering::SeqCst) { 503 } else { 200 }, vec![], String::new())
    })
    .await;
    let cfg = |ordered: bool| config(&receiver, &format!("ordered = {ordered}")).build();
    let sy = Switchyard::start(&cfg(false)).await;
    let mut ids = Vec::new();
    let mut send = async |tag: &str| {
        let batch: Vec<Value> = (0..40)
            .map(|i| {
                ids.push(format!("{tag}-{i}"));
                json!({"type": "track", "event": "E", "userId": format!("u{}", i % 5), "messageId": format!("{tag}-{i}")})
            })
            .collect();
        assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await.0, 200);
    };
    send("before").await;
    eventually(WAIT, "attempts failing", || receiver.count() >= 2).await;
    for (round, ordered) in [true, false].into_iter().enumerate() {
        sy.rewrite_config(&cfg(ordered));
        sy.wait_metric("switchyard_reloads_total{result=\"applied\"}", round as u64 + 1).await;
        send(if ordered { "ordered" } else { "unordered" }).await;
    }
    // Requests from here on are answered 200.
    let failed = receiver.count();
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let taken = || -> HashSet<String> { ids_of_requests(&receiver, |i| i >= failed).into_iter().collect() };
    eventually(WAIT, "every event delivered after the changes", || ids.iter().all(|id| taken().contains(id))).await;
}

#[tokio::test]
async fn a_paused_destination_stays_paused_when_its_order_setting_changes() {
    let receiver = Receiver::always(200).await;
    let cfg = |ordered: bool| config(&receiver, &format!("ordered = {ordered}")).build();
    let sy = Switchyard::start(&cfg(false)).await;
    let auth = [("authorization", "Bearer adm1n-token")];
    let pause = sy.admin_url("/admin/destinations/hook/pause");
    assert_eq!(http(hyper::Method::POST, &pause, &auth, Vec::new()).await.0, 200);
    sy.rewrite_config(&cfg(true));
    sy.wait_metric("switchyard_reloads_total{result=\"applied\"}", 1).await;
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("pz-{i}")}))
        .collect();
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": batch })).await.0, 200);
    // Longer than a shared log's pause refresh (1 s on every node).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.count(), 0, "still paused after the consumer was replaced");
    let resume = sy.admin_url("/admin/destinations/hook/resume");
    assert_eq!(http(hyper::Method::POST, &resume, &auth, Vec::new()).await.0, 200);
    eventually(WAIT, "delivered once resumed", || receiver.message_ids().len() >= 10).await;
}
