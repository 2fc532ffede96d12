//! Reload benchmark: delivery latency while a plugin is swapped again and
//! again, against steady state, in one run; and the time from writing a new
//! plugin file to the new version serving.
//!
//! Switchyard runs in this process with the webhook plugin (a copy in a
//! temporary folder) delivering to a loopback receiver. A paced load
//! generator stamps each event with its send time; the receiver turns the
//! stamps into delivery latencies (ingest, durable log, plugin, HTTP).
//! Phase 1 is steady; in phase 2 a new plugin version (the same code with a
//! custom section appended, so a new hash) is renamed over the file every
//! `BENCH_SWAP_MS` (default 250 ms). For each swap the bench records when
//! the admin API first shows the new version (adopted) and when the
//! receiver first gets a batch from it (serving).
//!
//! Run: `./x plugins && cargo bench -p switchyard --bench reload`.
//! `BENCH_SECS` per phase (default 5), `BENCH_RATE` events/s (default
//! 20000).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Server, env_or, quantile as percentile};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const BATCH: usize = 100;
const CONNECTIONS: usize = 4;
const TOKEN: &str = "bench";

/// The webhook plugin, with a custom section naming `version` appended
/// after the first.
fn version(base: &[u8], version: u32) -> Vec<u8> {
    let mut bytes = base.to_vec();
    if version > 0 {
        let name = b"bench-version";
        let mut section = vec![name.len() as u8];
        section.extend_from_slice(name);
        section.extend_from_slice(&version.to_le_bytes());
        bytes.push(0);
        bytes.push(section.len() as u8);
        bytes.extend_from_slice(&section);
    }
    bytes
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// What the receiver saw: per event, when it arrived (ms since the run's
/// epoch, which tells the phase) and its delivery latency (ms).
#[derive(Default)]
struct Seen {
    latencies: Vec<(f64, f64)>,
}

/// A receiver that parses each webhook body and records every event's
/// delivery latency from its `properties.t` (µs since `epoch`).
async fn receiver(epoch: Instant, seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let (listener, addr) = common::listen().await;
    tokio::spawn(common::serve_bodies(listener, move |body| {
        let now = epoch.elapsed().as_secs_f64() * 1e3;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Ok(mut s) = seen.lock() {
            for e in v["batch"].as_array().into_iter().flatten() {
                if let Some(t) = e["properties"]["t"].as_f64() {
                    s.latencies.push((now, now - t / 1e3));
                }
            }
        }
        hyper::Response::new(Full::new(Bytes::from_static(b"ok")))
    }));
    addr
}

/// Sends paced batches at `rate` events/s over [`CONNECTIONS`] for `secs`.
async fn load(addr: SocketAddr, epoch: Instant, secs: f64, rate: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let interval = Duration::from_secs_f64(BATCH as f64 * CONNECTIONS as f64 / rate);
    let mut tasks = Vec::new();
    for slot in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut send = common::connect(addr).await;
            let start = Instant::now() + interval * slot as u32 / CONNECTIONS as u32;
            let mut n = 0u32;
            while Instant::now() < deadline {
                tokio::time::sleep_until((start + interval * n).into()).await;
                let t = epoch.elapsed().as_micros();
                let mut body = String::from("{\"batch\":[");
                for i in 0..BATCH {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&format!(
                        r#"{{"type":"track","event":"Bench","userId":"u{i}","messageId":"{slot}-{n}-{i}-{t}","properties":{{"t":{t}}}}}"#
                    ));
                }
                body.push_str("]}");
                let req = hyper::Request::post("/v1/batch")
                    .header("host", "bench")
                    .header("authorization", common::AUTHORIZATION)
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                if let Ok(resp) = send.send_request(req).await {
                    let _ = resp.into_body().collect().await;
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The hash the admin API shows for `hook`, and what it delivered per
/// plugin version.
async fn admin_plugin(admin: SocketAddr) -> (String, serde_json::Value) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = hyper::Request::get(format!("http://{admin}/admin/destinations"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(resp) = client.request(req).await else { return (String::new(), serde_json::Value::Null) };
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let d = v["destinations"][0].clone();
    (d["plugin"]["hash"].as_str().unwrap_or("").to_owned(), d["delivered_by_plugin"].clone())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

async fn bench() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let rate: f64 = env_or("BENCH_RATE", 20_000.0);
    let swap_every = Duration::from_millis(env_or("BENCH_SWAP_MS", 250));
    let base = std::fs::read(common::plugin("webhook_destination")).expect("build the plugins first: ./x plugins");

    let epoch = Instant::now();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recv = receiver(epoch, seen.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("hook.wasm");
    std::fs::write(&wasm, version(&base, 0)).expect("plugin");
    let destination = format!(
        r#"
[[destinations]]
name = "hook"
plugin = "{plugin}"
settings = {{ url = "http://{recv}/hook" }}
allow_http = ["http://{recv}"]
batch = {{ max_events = 500, linger_ms = 20 }}
"#,
        plugin = wasm.display(),
    );
    let server = Server::start_with(&format!("admin_token = \"{TOKEN}\"\nwatch_debounce_ms = 50"), &destination)
        .await
        .unwrap_or_else(|e| panic!("switchyard did not start: {e}"));
    let (addr, admin) = (server.addr, server.admin);

    let p1_start = epoch.elapsed().as_secs_f64() * 1e3;
    load(addr, epoch, secs, rate).await;
    let p1_end = epoch.elapsed().as_secs_f64() * 1e3;

    // Phase 2: the same load, and a swap every `swap_every`.
    let p2_start = p1_end;
    let swapper = {
        let wasm = wasm.clone();
        tokio::spawn(async move {
            let mut adopted = Vec::new();
            let mut serving = Vec::new();
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let mut v = 1;
            while Instant::now() + swap_every < deadline {
                tokio::time::sleep(swap_every / 2).await;
                let bytes = version(&base, v);
                let hash = switchyard_hash(&bytes);
                let t0 = Instant::now();
                replace_file(&wasm, &bytes);
                let mut adopted_at = None;
                let mut serving_at = None;
                while (adopted_at.is_none() || serving_at.is_none()) && t0.elapsed() < Duration::from_secs(10) {
                    let (current, by_plugin) = admin_plugin(admin).await;
                    if adopted_at.is_none() && current == hash {
                        adopted_at = Some(t0.elapsed());
                    }
                    if serving_at.is_none() && by_plugin[&hash].as_u64().unwrap_or(0) > 0 {
                        serving_at = Some(t0.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                adopted.extend(adopted_at.map(|d| d.as_secs_f64() * 1e3));
                serving.extend(serving_at.map(|d| d.as_secs_f64() * 1e3));
                v += 1;
                tokio::time::sleep(swap_every.saturating_sub(t0.elapsed())).await;
            }
            (v - 1, adopted, serving)
        })
    };
    load(addr, epoch, secs, rate).await;
    let p2_end = epoch.elapsed().as_secs_f64() * 1e3;
    let (swaps, mut adopted, mut serving) = swapper.await.expect("swapper");
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop().await;

    let seen = seen.lock().expect("lock");
    let phase = |from: f64, to: f64| -> (usize, f64, f64) {
        let mut v: Vec<f64> =
            seen.latencies.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, l)| *l).collect();
        let n = v.len();
        (n, percentile(&mut v, 0.5), percentile(&mut v, 0.99))
    };
    let (n1, p50_1, p99_1) = phase(p1_start + 1000.0, p1_end);
    let (n2, p50_2, p99_2) = phase(p2_start + 500.0, p2_end);
    println!("# reload: {rate:.0} events/s, batches of {BATCH}, {secs} s per phase, a swap every {swap_every:?}\n");
    println!("| phase | events | delivery p50 ms | delivery p99 ms |");
    println!("|---|---:|---:|---:|");
    println!("| steady (first second skipped) | {n1} | {p50_1:.2} | {p99_1:.2} |");
    println!("| {swaps} plugin swaps | {n2} | {p50_2:.2} | {p99_2:.2} |");
    println!("\np99 during swaps / steady: {:.2}", p99_2 / p99_1);
    println!(
        "file written → new version adopted: p50 {:.1} ms, max {:.1} ms ({} swaps)",
        percentile(&mut adopted, 0.5),
        adopted.iter().copied().fold(0.0, f64::max),
        adopted.len()
    );
    println!(
        "file written → first batch delivered by it: p50 {:.1} ms, max {:.1} ms (includes the {} ms debounce)",
        percentile(&mut serving, 0.5),
        serving.iter().copied().fold(0.0, f64::max),
        50
    );
}

/// The content hash the host shows for a plugin (SHA-256, hex).
fn switchyard_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
