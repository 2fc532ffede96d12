//! Ingest benchmark: HTTP batches of 100 ~500-byte events over several
//! connections → tracking API → durable log (fsync) → webhook plugin →
//! loopback receiver. In the same run, the same load against a bare
//! hyper + serde_json server that parses and discards (the ceiling).
//!
//! Run: `./x bench` (or `cargo bench -p switchyard --bench ingest` after
//! `./x plugins`). `BENCH_SECS` sets each phase's length (default 5).
//! Everything runs in this one process on this machine's cores, load
//! generator included, for both servers alike.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Client connections (`BENCH_CONNECTIONS`, default 32): a durable server
/// hides fsync latency only with requests from many clients in flight.
fn connections() -> usize {
    std::env::var("BENCH_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
}

/// The next messageId seed; see `load`.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0);
const BATCH: usize = 100;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("parent").to_owned()
}

/// A batch body with unique messageIds, built by plain string formatting so
/// the load generator stays cheap next to the servers it measures.
fn body(seed: u64) -> Bytes {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(BATCH * 520 + 64);
    out.push_str("{\"batch\":[");
    for i in 0..BATCH {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"type":"track","event":"Product Added","userId":"user-{user}","messageId":"bench-{seed}-{i}","timestamp":"2024-05-01T12:00:00.000Z","properties":{{"product_id":"507f1f77bcf86cd799439011","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","price":18.99,"quantity":1}},"context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"2.11.1"}},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"}}}}"#,
            user = (seed + i as u64) % 10_000,
        );
    }
    out.push_str(r#"],"sentAt":"2024-05-01T12:00:01.000Z"}"#);
    Bytes::from(out)
}

/// A loopback server. As the baseline (`parse`), it parses each body into a
/// `serde_json::Value` and discards it; as the destination's receiver, it
/// only counts the events (a real destination's work is not ours to bill).
async fn serve(listener: tokio::net::TcpListener, events: Arc<AtomicU64>, parse: bool, status: u16) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let events = events.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let events = events.clone();
                async move {
                    let b = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let n = if parse {
                        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null);
                        v["batch"].as_array().map_or(0, |a| a.len() as u64)
                    } else {
                        b.windows(11).filter(|w| w == b"\"messageId\"").count() as u64
                    };
                    events.fetch_add(n, Ordering::Relaxed);
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(br#"{"success":true}"#)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
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

/// Sends batches for `secs` over [`connections`], optionally
/// paced to `rate` events/s in total.
async fn load(addr: SocketAddr, secs: f64, rate: Option<f64>) -> LoadResult {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    let conns = connections();
    for slot in 0..conns {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            let interval = rate.map(|r| Duration::from_secs_f64(BATCH as f64 * conns as f64 / r));
            // Paced connections are staggered across the interval, so the
            // load arrives evenly rather than in bursts of `conns` requests.
            let start = Instant::now() + interval.map_or(Duration::ZERO, |iv| iv * slot as u32 / conns as u32);
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    let due = start + iv * n as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                // Unique across connections, phases and calls: repeated ids
                // would be dropped by dedupe and never reach the log.
                let seed = NEXT_SEED.fetch_add(BATCH as u64, Ordering::Relaxed);
                let req = hyper::Request::post("/v1/batch")
                    .header("host", "bench")
                    .header("authorization", "Basic YmVuY2hfa2V5Og==") // bench_key:
                    .header("content-type", "application/json")
                    .body(Full::new(body(seed)))
                    .expect("request");
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
    lat.sort_by(f64::total_cmp);
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0.0);
    LoadResult {
        accepted: (lat.len() * BATCH) as u64,
        events_per_sec: lat.len() as f64 * BATCH as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

/// Starts switchyard in this process, delivering to `receiver` with the
/// webhook plugin. Returns its address, a stop switch, its task and its dir.
async fn start_switchyard(
    wasm: &std::path::Path,
    recv_addr: SocketAddr,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
[[sources]]
name = "bench"
write_key = "bench_key"
[[destinations]]
name = "hook"
plugin = "{plugin}"
settings = {{ url = "http://{recv_addr}/hook" }}
allow_http = ["http://{recv_addr}"]
batch = {{ max_events = 1000, linger_ms = 50 }}
retry = {{ initial_backoff_ms = 1000, max_backoff_ms = 5000 }}
"#,
        data = dir.path().join("data").display(),
        plugin = wasm.display(),
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).expect("config");
    let config = switchyard::config::Config::load(&path).expect("config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::app::run(config, async {
        let _ = stop_rx.await;
    }));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, stop_tx, server, dir)
}

/// With the destination down (503), ingests `n` events and reports RSS as
/// the backlog grows on disk.
async fn backlog(wasm: &std::path::Path, n: u64) {
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let recv_addr = receiver.local_addr().expect("addr");
    tokio::spawn(serve(receiver, Arc::new(AtomicU64::new(0)), false, 503));
    let (addr, stop_tx, server, dir) = start_switchyard(wasm, recv_addr).await;
    println!("\n# backlog: destination answering 503 while {n} events are ingested\n");
    println!("| events accepted | log on disk MB | process RSS MB |");
    println!("|---:|---:|---:|");
    let mut accepted = 0u64;
    let mut next_report = 0u64;
    while accepted < n {
        let r = load(addr, 2.0, None).await;
        accepted += (r.events_per_sec * 2.0) as u64;
        if accepted >= next_report {
            let disk: u64 = std::fs::read_dir(dir.path().join("data/log"))
                .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            println!("| {accepted} | {:.0} | {:.0} |", disk as f64 / 1e6, rss_mb());
            next_report = accepted + n / 5;
        }
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}

async fn bench() {
    if let Some(n) = std::env::var("BENCH_BACKLOG").ok().and_then(|v| v.parse().ok()) {
        let wasm = workspace().join("target/wasm32-wasip2/plugin/webhook_destination.wasm");
        backlog(&wasm, n).await;
        return;
    }
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0);
    let wasm = workspace().join("target/wasm32-wasip2/plugin/webhook_destination.wasm");
    assert!(wasm.exists(), "build the plugins first: ./x plugins");

    // The bare ceiling: hyper + serde_json, parse and discard.
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bare_addr = bare.local_addr().expect("addr");
    tokio::spawn(serve(bare, Arc::new(AtomicU64::new(0)), true, 200));
    // BENCH_SKIP_CEILING=1 leaves it out, to profile switchyard alone.
    let ceiling = if std::env::var_os("BENCH_SKIP_CEILING").is_some() {
        LoadResult { accepted: 0, events_per_sec: f64::NAN, p50_ms: f64::NAN, p99_ms: f64::NAN, errors: 0 }
    } else {
        load(bare_addr, secs, None).await
    };

    // Switchyard with the webhook plugin delivering to a loopback receiver.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let recv_addr = receiver.local_addr().expect("addr");
    let delivered = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve(receiver, delivered.clone(), false, 200));
    let (addr, stop_tx, server, _dir) = start_switchyard(&wasm, recv_addr).await;
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
    let _ = stop_tx.send(());
    let _ = server.await;

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
    println!("\nswitchyard / ceiling: {:.2}", peak.events_per_sec / ceiling.events_per_sec);
    println!("delivered to the receiver during the peak phase: {delivered_rate:.0} events/s");
    println!("delivery caught up with the peak phase {drained_in:.1} s after it ended");
    println!("delivered to the receiver during the half-peak phase: {delivered_half:.0} events/s");
    println!("RSS of the whole process (server + load generator + receiver) after the peak phase: {rss_peak:.0} MB");
}
