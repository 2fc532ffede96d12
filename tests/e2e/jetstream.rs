//! The JetStream backend with real NATS servers (`./x test` installs
//! nats-server ≥ 2.12 into `target/nats`): what only a shared log can do
//! or fail at — several nodes sharing delivery, the cluster going away,
//! a full stream, node loss. The rest of the suite runs on JetStream too,
//! in its second pass (`SWITCHYARD_TEST_LOG=jetstream`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::nats::log_section;
use switchyard_tests::{Config, NatsCluster, NatsServer, Receiver, Switchyard, eventually, http, post_json, try_http};

const WAIT: Duration = Duration::from_secs(60);

fn events(prefix: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| json!({"type": "track", "event": "E", "userId": format!("u{}", i % 7), "messageId": format!("{prefix}-{i}")}))
        .collect()
}

/// A config with one webhook destination to `receiver`, on `servers`.
fn config(receiver: &Receiver, servers: &[String], jetstream: &str) -> String {
    let cfg = Config::new()
        .admin("t0ken")
        .source("web", "wk")
        .webhook("hook", &format!("{}/hook", receiver.origin()), "batch = { max_events = 50, linger_ms = 5 }")
        .build();
    format!("{cfg}{}", log_section(servers, &format!("ack_wait_secs = 5\n{jetstream}")))
}

/// Counts per messageId of what reached `receiver`.
fn counts(receiver: &Receiver) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for id in receiver.message_ids() {
        *c.entry(id).or_default() += 1;
    }
    c
}

async fn admin(sy: &Switchyard, path: &str) -> u16 {
    http(hyper::Method::POST, &sy.admin_url(path), &[("authorization", "Bearer t0ken")], Vec::new()).await.0
}

async fn ready(sy: &Switchyard) -> u16 {
    http(hyper::Method::GET, &sy.admin_url("/ready"), &[], Vec::new()).await.0
}

#[tokio::test]
async fn two_nodes_share_delivery_and_each_event_arrives_once() {
    share_delivery_and_dedupe_across_nodes("").await;
}

#[tokio::test]
async fn dedupe_by_lookup_holds_across_nodes_too() {
    share_delivery_and_dedupe_across_nodes("dedupe = \"lookup\"").await;
}

/// Two nodes deliver 500 events between them, each once; repeats sent to
/// another node, and to a node started afterwards, are dropped.
async fn share_delivery_and_dedupe_across_nodes(jetstream: &str) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let receiver = Receiver::always(200).await;
    let cfg = config(&receiver, &[nats.url()], jetstream);
    let a = Switchyard::start(&cfg).await;
    let b = Switchyard::start(&cfg).await;
    for round in 0..20 {
        let node = if round % 2 == 0 { &a } else { &b };
        let body = json!({ "batch": events(&format!("r{round}"), 0..25) });
        assert_eq!(post_json(&node.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    }
    eventually(WAIT, "500 events delivered", || counts(&receiver).len() == 500).await;
    // Give a duplicate time to show up, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = counts(&receiver);
    assert!(c.values().all(|n| *n == 1), "an event delivered twice without a failure: {c:?}");
    let metric = "switchyard_destination_delivered_total{destination=\"hook\"}";
    let (by_a, by_b) = (a.metric(metric).await, b.metric(metric).await);
    assert_eq!(by_a + by_b, 500);
    assert!(by_a > 0 && by_b > 0, "both nodes deliver from the shared consumer: {by_a} and {by_b}");

    // Repeats of events node a took, sent to node b beside new ones: the
    // messages differ from the first ones, so JetStream's `Nats-Msg-Id`
    // window cannot catch the repeats; the day-long dedupe must.
    let mut again = events("r0", 0..10);
    again.extend(events("new", 0..5));
    assert_eq!(post_json(&b.url("/v1/batch"), Some("wk"), &json!({ "batch": again })).await.0, 200);
    eventually(WAIT, "the 5 new events delivered", || counts(&receiver).len() == 505).await;
    // And to a node started after they were accepted: it learns them.
    let c = Switchyard::start(&cfg).await;
    let mut late = events("r1", 5..15);
    late.extend(events("late", 0..5));
    assert_eq!(post_json(&c.url("/v1/batch"), Some("wk"), &json!({ "batch": late })).await.0, 200);
    eventually(WAIT, "the 5 late events delivered", || counts(&receiver).len() == 510).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.message_ids().len(), 510, "repeats on other nodes are dropped: {:?}", counts(&receiver));
}

#[tokio::test]
async fn a_pause_through_one_node_pauses_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let receiver = Receiver::always(200).await;
    let cfg = config(&receiver, &[nats.url()], "");
    let a = Switchyard::start(&cfg).await;
    let b = Switchyard::start(&cfg).await;
    assert_eq!(admin(&a, "/admin/destinations/hook/pause").await, 200);
    for node in [&a, &b] {
        wait_state(node, "paused").await;
    }
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let body = json!({ "batch": events(&format!("p{i}"), 0..20) });
        assert_eq!(post_json(&node.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.message_ids().len(), 0, "nothing is delivered while paused");
    let (_, list) =
        http(hyper::Method::GET, &b.admin_url("/admin/destinations"), &[("authorization", "Bearer t0ken")], Vec::new())
            .await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list["destinations"][0]["backlog"], 40, "the backlog is the consumer's, the same on every node: {list}");

    // Resumed through the other node: both deliver again.
    assert_eq!(admin(&b, "/admin/destinations/hook/resume").await, 200);
    for node in [&a, &b] {
        wait_state(node, "active").await;
    }
    eventually(WAIT, "40 events delivered once resumed", || counts(&receiver).len() == 40).await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_through_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    // The receiver refuses everything (400, final) until told otherwise.
    let refuse = Arc::new(AtomicBool::new(true));
    let flag = refuse.clone();
    let receiver =
        Receiver::start(move |_, _| (if flag.load(Ordering::SeqCst) { 400 } else { 200 }, vec![], String::new())).await;
    let cfg = config(&receiver, &[nats.url()], "");
    let a = Switchyard::start(&cfg).await;
    let b = Switchyard::start(&cfg).await;
    let body = json!({ "batch": events("dl", 0..10) });
    assert_eq!(post_json(&a.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    let metric = "switchyard_destination_dead_lettered_total{destination=\"hook\"}";
    let started = Instant::now();
    while a.metric(metric).await + b.metric(metric).await < 10 {
        assert!(started.elapsed() < WAIT, "10 events dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every node lists all ten, whichever dead-lettered them.
    let auth = [("authorization", "Bearer t0ken")];
    for node in [&a, &b] {
        let url = node.admin_url("/admin/destinations/hook/dead-letters");
        let (status, body) = http(hyper::Method::GET, &url, &auth, Vec::new()).await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["count"], 10, "{body}");
        assert_eq!(body["dead_letters"].as_array().map(Vec::len), Some(10), "{body}");
    }
    // Replayed through one node, delivered once, gone from every list.
    refuse.store(false, Ordering::SeqCst);
    let replay = b.admin_url("/admin/destinations/hook/dead-letters/replay");
    let (status, body) = http(hyper::Method::POST, &replay, &auth, Vec::new()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((body["replayed"].as_u64(), body["remaining"].as_u64()), (Some(10), Some(0)), "{body}");
    eventually(WAIT, "the replayed events delivered", || {
        receiver.message_ids().iter().filter(|id| id.starts_with("dl-")).count() >= 20
    })
    .await;
    let url = a.admin_url("/admin/destinations/hook/dead-letters");
    let (_, body) = http(hyper::Method::GET, &url, &auth, Vec::new()).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["count"], 0, "nothing left to replay on any node");
}

/// Polls `/admin/destinations` until `hook` is in `state`.
async fn wait_state(sy: &Switchyard, state: &str) {
    let start = Instant::now();
    loop {
        let (_, body) = http(
            hyper::Method::GET,
            &sy.admin_url("/admin/destinations"),
            &[("authorization", "Bearer t0ken")],
            Vec::new(),
        )
        .await;
        let list: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if list["destinations"][0]["state"] == state {
            return;
        }
        assert!(start.elapsed() < WAIT, "`hook` never {state}: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_the_cluster_ingest_answers_503_and_resumes_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path());
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, &[nats.url()], "publish_timeout_ms = 2000")).await;
    let body = json!({ "batch": events("before", 0..10) });
    assert_eq!(post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0, 200);
    eventually(WAIT, "delivered before the outage", || counts(&receiver).len() == 10).await;

    nats.stop();
    let start = Instant::now();
    while ready(&sy).await != 503 {
        assert!(start.elapsed() < WAIT, "/ready stays 200 without NATS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, reply) = post_json(&sy.url("/v1/batch"), Some("wk"), &json!({ "batch": events("during", 0..10) })).await;
    assert_eq!(code, 503, "{reply}");
    assert_eq!(reply["code"], "log_unavailable", "{reply}");
    assert!(reply["message"].as_str().unwrap_or("").contains("NATS"), "{reply}");

    nats.restart();
    post_until_accepted(&sy, events("after", 0..10), "ingest does not resume once NATS is back").await;
    eventually(WAIT, "delivery resumes", || (0..10).all(|i| counts(&receiver).contains_key(&format!("after-{i}"))))
        .await;
    assert_eq!(ready(&sy).await, 200);
}

#[tokio::test]
async fn a_full_stream_answers_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let receiver = Receiver::always(200).await;
    let sy = Switchyard::start(&config(&receiver, &[nats.url()], "max_bytes_mb = 1")).await;
    // Paused, the destination leaves every event in the stream.
    assert_eq!(admin(&sy, "/admin/destinations/hook/pause").await, 200);
    // ~1 KiB events until the stream refuses.
    let pad = "x".repeat(1000);
    let mut accepted = Vec::new();
    let mut refused = None;
    for round in 0..200 {
        let batch: Vec<Value> = (0..50)
            .map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": format!("f{round}-{i}"), "properties": {"pad": pad}}))
            .collect();
        let ids: Vec<String> = (0..50).map(|i| format!("f{round}-{i}")).collect();
        let (code, reply) = post_json(&sy.url("/v1/batch"), Some("wk"), &json!({ "batch": batch })).await;
        match code {
            200 => accepted.extend(ids),
            503 => {
                refused = Some(reply);
                break;
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    let refused = refused.expect("a 1 MiB stream refuses 50 KiB batches before the 200th");
    assert_eq!(refused["code"], "log_full", "{refused}");
    assert!(!accepted.is_empty());

    assert_eq!(admin(&sy, "/admin/destinations/hook/resume").await, 200);
    eventually(WAIT, "every accepted event delivered", || {
        let c = counts(&receiver);
        accepted.iter().all(|id| c.contains_key(id))
    })
    .await;
    // Delivered events are deleted (interest retention): room again.
    post_until_accepted(&sy, events("later", 0..5), "the stream never had room again").await;
}

/// Posts `batch` until it is answered 200 (within [`WAIT`]; `what` says
/// what failed otherwise).
async fn post_until_accepted(sy: &Switchyard, batch: Vec<Value>, what: &str) {
    let start = Instant::now();
    let body = json!({ "batch": batch });
    while post_json(&sy.url("/v1/batch"), Some("wk"), &body).await.0 != 200 {
        assert!(start.elapsed() < WAIT, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three Switchyard nodes on a three-node NATS cluster (replicas 3) under
/// continuous load: a node killed and restarted several times, then a NATS
/// node. Every event answered 200 arrives at least once.
#[tokio::test]
async fn node_loss_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3);
    let receiver = Receiver::always(200).await;
    let cfg = config(&receiver, &cluster.urls(), "replicas = 3\npublish_timeout_ms = 15000");
    // The cluster elects its leaders a moment after it listens.
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_with_retries(&cfg).await);
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(send_until(ports, stop.clone(), Duration::ZERO));

    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = &mut nodes[round % 3];
        victim.kill9();
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.nodes[2].kill9();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, refused) = load.await.unwrap();
    assert!(acknowledged.len() > 500, "the load got through: {} acknowledged, {refused} refused", acknowledged.len());

    wait_all_delivered(&receiver, &acknowledged).await;
    let c = counts(&receiver);
    let duplicates: usize = c.values().map(|n| n - 1).sum();
    eprintln!(
        "node loss: {} acknowledged, {refused} refused (503), {} delivered, {duplicates} duplicates",
        acknowledged.len(),
        c.len()
    );
}

/// `ordered = true` with two nodes under continuous load, each killed and
/// restarted in turn: every user's events are taken by the destination in
/// the order they were acknowledged (repeats after a kill aside).
#[tokio::test]
async fn an_ordered_destination_keeps_each_users_order_across_node_kills() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let receiver = Receiver::always(200).await;
    let batch = "batch = { max_events = 50, linger_ms = 5 }";
    let cfg = config(&receiver, &[nats.url()], "").replace(batch, &format!("{batch}\nordered = true"));
    assert!(cfg.contains("ordered = true"));
    let mut nodes = [Switchyard::start(&cfg).await, Switchyard::start(&cfg).await];
    let stop = Arc::new(AtomicBool::new(false));
    // Paced: an ordered destination delivers far fewer events/s than
    // ingest takes, and the test waits for all of them.
    let ports = nodes.iter().map(|n| n.port).collect();
    let load = tokio::spawn(send_until(ports, stop.clone(), Duration::from_millis(20)));
    for victim in [0, 1] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nodes[victim].kill9();
        tokio::time::sleep(Duration::from_millis(500)).await;
        nodes[victim].restart().await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, refused) = load.await.unwrap();
    assert!(acknowledged.len() > 200, "the load got through: {} acknowledged, {refused} refused", acknowledged.len());
    wait_all_delivered(&receiver, &acknowledged).await;

    // Each user's acknowledged events, in the order the receiver first
    // got them, against the order they were acknowledged in.
    let user_of = |id: &str| -> usize {
        let i: usize = id.rsplit('-').next().and_then(|i| i.parse().ok()).unwrap_or(0);
        i % 7
    };
    let acked: std::collections::HashSet<&String> = acknowledged.iter().collect();
    let mut first = std::collections::HashSet::new();
    let mut arrived: HashMap<usize, Vec<String>> = HashMap::new();
    for id in receiver.message_ids() {
        if acked.contains(&id) && first.insert(id.clone()) {
            arrived.entry(user_of(&id)).or_default().push(id);
        }
    }
    for user in 0..7 {
        let expected: Vec<String> = acknowledged.iter().filter(|id| user_of(id) == user).cloned().collect();
        assert_eq!(arrived.get(&user), Some(&expected), "user u{user}'s events out of order");
    }
    let c = counts(&receiver);
    eprintln!(
        "ordered: {} acknowledged, {refused} refused, {} repeats after kills",
        acknowledged.len(),
        c.values().map(|n| n - 1).sum::<usize>()
    );
}

/// Waits (up to two minutes) until every one of `acknowledged` reached
/// `receiver`.
async fn wait_all_delivered(receiver: &Receiver, acknowledged: &[String]) {
    eventually(Duration::from_secs(120), "every acknowledged event delivered", || {
        let c = counts(receiver);
        acknowledged.iter().all(|id| c.contains_key(id))
    })
    .await;
}

/// Starts a node, retrying while the cluster has no JetStream leader yet.
async fn start_with_retries(cfg: &str) -> Switchyard {
    let start = Instant::now();
    loop {
        match Switchyard::try_start(cfg).await {
            Ok(sy) => return sy,
            Err(_) if start.elapsed() < WAIT => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(logs) => panic!("no node started on the cluster:\n{logs}"),
        }
    }
}

/// Sends batches of 20 round-robin to `ports`, `pause` apart, until
/// `stop`; returns the messageIds answered 200 and how many requests were
/// refused.
async fn send_until(ports: Vec<u16>, stop: Arc<AtomicBool>, pause: Duration) -> (Vec<String>, usize) {
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let port = ports[round % ports.len()];
        let batch = events(&format!("l{round}"), 0..20);
        let ids: Vec<String> = batch.iter().map(|e| e["messageId"].as_str().unwrap_or("").to_owned()).collect();
        let url = format!("http://127.0.0.1:{port}/v1/batch");
        let body = json!({ "batch": batch }).to_string().into_bytes();
        let headers = [("content-type", "application/json"), ("authorization", "Basic d2s6")];
        let sent = tokio::time::timeout(Duration::from_secs(20), try_http(hyper::Method::POST, &url, &headers, body));
        match sent.await {
            Ok(Ok((200, _))) => acknowledged.extend(ids),
            _ => refused += 1,
        }
        round += 1;
        tokio::time::sleep(pause).await;
    }
    (acknowledged, refused)
}
