//! Ingest benchmark: HTTP batches of 100 ~500-byte events over several
//! connections → tracking API → durable log (fsync) → webhook plugin →
//! loopback receiver. In the same run, the same load against a bare
//! hyper + serde_json server that parses and discards (the ceiling).
//!
//! Run: `./x bench` (or `cargo bench -p switchyard --bench ingest` after
//! `./x plugins`). `BENCH_SECS` sets each phase's length (default 5).
//! Everything runs in this one process on this machine's cores, load
//! generator included, for both servers alike.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Server, env_or, quantile, rss_mb};
use http_body_util::{BodyExt, Full};

/// Client connections (`BENCH_CONNECTIONS`, default 32): a durable server
/// hides fsync latency only with requests from many clients in flight.
fn connections() -> usize {
    env_or("BENCH_CONNECTIONS", 32)
}

const BATCH: usize = 100;

/// A batch body with unique messageIds (across connections, phases and
/// calls: repeated ids would be dropped by dedupe and never reach the log),
/// built by plain string formatting so the load generator stays cheap next
/// to the servers it measures.
fn body() -> Bytes {
    common::batch_body_with(BATCH, r#","sentAt":"2024-05-01T12:00:01.000Z""#)
}

/// A loopback server answering `status`. As the baseline (`parse`), it
/// parses each body into a `serde_json::Value` and discards it; as the
/// destination's receiver, it only counts the events (a real destination's
/// work is not ours to bill).
async fn serve(listener: tokio::net::TcpListener, events: Arc<AtomicU64>, parse: bool, status: u16) {
    let status = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    let respond = move || {
        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(br#"{"success":true}"#)));
        *resp.status_mut() = status;
        resp
    };
    if parse {
        common::serve_bodies(listener, move |b| {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null);
            events.fetch_add(v["batch"].as_array().map_or(0, |a| a.len() as u64), Ordering::Relaxed);
            respond()
        })
        .await;
    } else {
        common::serve(listener, events, respond).await;
    }
}

struct LoadResult {
    /// Events answered with 200.
    accepted: u64,
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// What the load generator sends.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `/v1/batch` of [`BATCH`] events, as a server SDK; with `origin`,
    /// also an `Origin` header (every answer then carries CORS headers).
    Batch { origin: bool },
    /// `/v1/t` with one event, as analytics.js in a page: `text/plain`,
    /// `Origin`, Basic auth.
    Browser,
}

impl Shape {
    fn events(self) -> usize {
        match self {
            Shape::Batch { .. } => BATCH,
            Shape::Browser => 1,
        }
    }

    fn request(self) -> hyper::Request<Full<Bytes>> {
        let (path, body, content_type, origin) = match self {
            Shape::Batch { origin } => ("/v1/batch", body(), "application/json", origin),
            Shape::Browser => ("/v1/t", common::track_body(), "text/plain", true),
        };
        let mut req = hyper::Request::post(path)
            .header("host", "bench")
            .header("authorization", common::AUTHORIZATION)
            .header("content-type", content_type);
        if origin {
            req = req.header("origin", "https://shop.example.com");
        }
        req.body(Full::new(body)).expect("request")
    }
}

/// Sends batches for `secs` over [`connections`], optionally
/// paced to `rate` events/s in total.
async fn load(addr: SocketAddr, secs: f64, rate: Option<f64>) -> LoadResult {
    let origin = std::env::var("BENCH_ORIGIN").is_ok_and(|v| !v.is_empty());
    load_shaped(addr, secs, rate, Shape::Batch { origin }).await
}

/// As [`load`], sending `shape`.
async fn load_shaped(addr: SocketAddr, secs: f64, rate: Option<f64>, shape: Shape) -> LoadResult {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    let conns = connections();
    for slot in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut send = common::connect(addr).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            let interval = rate.map(|r| Duration::from_secs_f64(shape.events() as f64 * conns as f64 / r));
            // Paced connections are staggered across the interval, so the
            // load arrives evenly rather than in bursts of `conns` requests.
            let start = Instant::now() + interval.map_or(Duration::ZERO, |iv| iv * slot as u32 / conns as u32);
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    let due = start + iv * n as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let req = shape.request();
                let t = Instant::now();
                match send.send_request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // No request answered 200: the percentiles print as 0, as they always have.
    let mut pct = |p: f64| if lat.is_empty() { 0.0 } else { quantile(&mut lat, p) };
    let (p50_ms, p99_ms) = (pct(0.50), pct(0.99));
    LoadResult {
        accepted: (lat.len() * shape.events()) as u64,
        events_per_sec: lat.len() as f64 * shape.events() as f64 / elapsed,
        p50_ms,
        p99_ms,
        errors,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

/// Starts switchyard in this process, delivering to `receiver` with the
/// webhook plugin.
async fn start_switchyard(wasm: &std::path::Path, recv_addr: SocketAddr) -> Server {
    let destination =
        common::webhook_destination(wasm, recv_addr, "retry = { initial_backoff_ms = 1000, max_backoff_ms = 5000 }");
    Server::start(&destination).await.unwrap_or_else(|e| panic!("switchyard did not start: {e}"))
}

/// With the destination down (503), ingests `n` events and reports RSS as
/// the backlog grows on disk.
async fn backlog(wasm: &std::path::Path, n: u64) {
    let (receiver, recv_addr) = common::listen().await;
    tokio::spawn(serve(receiver, Arc::new(AtomicU64::new(0)), false, 503));
    let server = start_switchyard(wasm, recv_addr).await;
    let addr = server.addr;
    println!("\n# backlog: destination answering 503 while {n} events are ingested\n");
    println!("| events accepted | log on disk MB | process RSS MB |");
    println!("|---:|---:|---:|");
    let mut accepted = 0u64;
    let mut next_report = 0u64;
    while accepted < n {
        let r = load(addr, 2.0, None).await;
        accepted += (r.events_per_sec * 2.0) as u64;
        if accepted >= next_report {
            let disk: u64 = std::fs::read_dir(server.data_dir().join("log"))
                .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            println!("| {accepted} | {:.0} | {:.0} |", disk as f64 / 1e6, rss_mb());
            next_report = accepted + n / 5;
        }
    }
    server.stop().await;
}

async fn bench() {
    if let Some(n) = std::env::var("BENCH_BACKLOG").ok().and_then(|v| v.parse().ok()) {
        backlog(&common::plugin("webhook_destination"), n).await;
        return;
    }
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let wasm = common::plugin("webhook_destination");

    // The bare ceiling: hyper + serde_json, parse and discard.
    let (bare, bare_addr) = common::listen().await;
    tokio::spawn(serve(bare, Arc::new(AtomicU64::new(0)), true, 200));
    // BENCH_SKIP_CEILING=1 leaves it out, to profile switchyard alone.
    let ceiling = if std::env::var_os("BENCH_SKIP_CEILING").is_some() {
        LoadResult { accepted: 0, events_per_sec: f64::NAN, p50_ms: f64::NAN, p99_ms: f64::NAN, errors: 0 }
    } else {
        load(bare_addr, secs, None).await
    };

    // Switchyard with the webhook plugin delivering to a loopback receiver.
    let (receiver, recv_addr) = common::listen().await;
    let delivered = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve(receiver, delivered.clone(), false, 200));
    let server = start_switchyard(&wasm, recv_addr).await;
    let addr = server.addr;
    let d0 = delivered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let peak = load(addr, secs, None).await;
    let delivered_rate = (delivered.load(Ordering::Relaxed) - d0) as f64 / t0.elapsed().as_secs_f64();
    let rss_peak = rss_mb();
    // Half the peak is measured at steady state: first let delivery catch
    // up with what the peak phase accepted (it shares the two cores).
    let drain_start = Instant::now();
    while delivered.load(Ordering::Relaxed) - d0 < peak.accepted && drain_start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained_in = drain_start.elapsed().as_secs_f64();
    let d1 = delivered.load(Ordering::Relaxed);
    let t1 = Instant::now();
    let half = load(addr, secs, Some(peak.events_per_sec / 2.0)).await;
    let delivered_half = (delivered.load(Ordering::Relaxed) - d1) as f64 / t1.elapsed().as_secs_f64();
    // The browser pattern: many small cross-origin requests.
    let browser = load_shaped(addr, secs, None, Shape::Browser).await;
    server.stop().await;

    let conns = connections();
    println!("# ingest: batches of {BATCH} × ~500-byte events, {conns} connections, {secs} s per phase\n");
    println!("| server | accepted events/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| bare hyper + serde_json (parse, discard) | {:.0} | {:.2} | {:.2} | {} |",
        ceiling.events_per_sec, ceiling.p50_ms, ceiling.p99_ms, ceiling.errors
    );
    println!(
        "| switchyard, durable (fsync) | {:.0} | {:.2} | {:.2} | {} |",
        peak.events_per_sec, peak.p50_ms, peak.p99_ms, peak.errors
    );
    println!(
        "| switchyard at half its peak rate | {:.0} | {:.2} | {:.2} | {} |",
        half.events_per_sec, half.p50_ms, half.p99_ms, half.errors
    );
    println!(
        "| switchyard, `/v1/t` one event per request from a page (CORS) | {:.0} | {:.2} | {:.2} | {} |",
        browser.events_per_sec, browser.p50_ms, browser.p99_ms, browser.errors
    );
    println!("\nswitchyard / ceiling: {:.2}", peak.events_per_sec / ceiling.events_per_sec);
    println!("delivered to the receiver during the peak phase: {delivered_rate:.0} events/s");
    println!("delivery caught up with the peak phase {drained_in:.1} s after it ended");
    println!("delivered to the receiver during the half-peak phase: {delivered_half:.0} events/s");
    println!("RSS of the whole process (server + load generator + receiver) after the peak phase: {rss_peak:.0} MB");
}
