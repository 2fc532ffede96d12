//! Scaffolding the benchmarks share: paths, the event bodies they send,
//! loopback receivers, an in-process switchyard, load generators (as fast
//! as possible, or paced with per-request latency) and statistics.
//!
//! Each bench uses part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("parent").to_owned()
}

/// A plugin built by `./x plugins` (under `CARGO_TARGET_DIR` when set).
pub fn plugin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let path = target.join(format!("wasm32-wasip2/plugin/{name}.wasm"));
    assert!(path.exists(), "{} is missing: build the plugins first (./x plugins)", path.display());
    path
}

/// The environment variable `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The write key every bench config gives its source, and its Basic
/// authorization header value.
pub const WRITE_KEY: &str = "bench_key";
pub const AUTHORIZATION: &str = "Basic YmVuY2hfa2V5Og=="; // bench_key:

/// Unique seeds for message ids across a whole run.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0);

/// Makes this process's message ids start at `seed`: a load generator in
/// a process of its own takes a new seed per load, so two loads against one
/// server never repeat an id (dedupe would drop it).
pub fn first_seed(seed: u64) {
    NEXT_SEED.store(seed, Ordering::Relaxed);
}

/// One ~500-byte analytics.js-like track event with a unique messageId.
pub fn track_event(out: &mut String, seed: u64, i: usize) {
    let _ = write!(
        out,
        r#"{{"type":"track","event":"Product Added","userId":"user-{user}","messageId":"bench-{seed}-{i}","timestamp":"2024-05-01T12:00:00.000Z","properties":{{"product_id":"507f1f77bcf86cd799439011","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","price":18.99,"quantity":1}},"context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"2.11.1"}},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"}}}}"#,
        user = (seed + i as u64) % 10_000,
    );
}

/// A `/v1/batch` body of `n` events with unique messageIds.
pub fn batch_body(n: usize) -> Bytes {
    batch_body_with(n, "")
}

/// As [`batch_body`], with `tail` (more members of the body's object, each
/// after a comma, e.g. `,"sentAt":"…"`) after the batch.
pub fn batch_body_with(n: usize, tail: &str) -> Bytes {
    let seed = NEXT_SEED.fetch_add(n as u64, Ordering::Relaxed);
    let mut out = String::with_capacity(n * 520 + 64);
    out.push_str("{\"batch\":[");
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        track_event(&mut out, seed, i);
    }
    out.push(']');
    out.push_str(tail);
    out.push('}');
    Bytes::from(out)
}

/// A `/v1/track` body: one event with a unique messageId.
pub fn track_body() -> Bytes {
    let seed = NEXT_SEED.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(600);
    track_event(&mut out, seed, 0);
    Bytes::from(out)
}

/// A loopback listener on a free port.
pub async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// Serves every request on `listener` with `respond`, after reading the
/// request body; `events` counts the `messageId`s in the bodies received.
pub async fn serve<B, F>(listener: tokio::net::TcpListener, events: Arc<AtomicU64>, respond: F)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Fn() -> hyper::Response<B> + Send + Sync + 'static,
{
    serve_bodies(listener, move |b| {
        events.fetch_add(b.windows(11).filter(|w| w == b"\"messageId\"").count() as u64, Ordering::Relaxed);
        respond()
    })
    .await;
}

/// Serves every request on `listener` with `respond`, which gets the
/// request body, read whole.
pub async fn serve_bodies<B, F>(listener: tokio::net::TcpListener, respond: F)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Fn(Bytes) -> hyper::Response<B> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let respond = respond.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let respond = respond.clone();
                async move {
                    let b = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Ok::<_, Infallible>(respond(b))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

// `Drip`, a response body that sends one byte per second: the same file
// the end-to-end tests use.
#[path = "../../../tests/support/drip.rs"]
mod drip;
#[allow(unused_imports)] // not every bench sends a dripping answer
pub use drip::Drip;

/// A switchyard running in this process.
pub struct Server {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts switchyard with a `[server]` section of its own (free ports, a
    /// fresh data dir), one source with [`WRITE_KEY`], and `rest` (its
    /// destinations); waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// What stopped the server, when it exits before listening.
    pub async fn start(rest: &str) -> Result<Server, String> {
        Server::start_with("", rest).await
    }

    /// As [`Server::start`], with `server` (more lines of the `[server]`
    /// section, e.g. `admin_token = "…"`).
    ///
    /// # Errors
    ///
    /// What stopped the server, when it exits before listening.
    pub async fn start_with(server: &str, rest: &str) -> Result<Server, String> {
        // `BENCH_CONFIG` adds TOML lines after the `[server]` ones (more
        // server keys, or a `[runtime]` table), to compare settings.
        let extra = std::env::var("BENCH_CONFIG").unwrap_or_default().replace("\\n", "\n");
        let server = format!("{server}\n{extra}");
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin_port) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\ndata_dir = \"{data}\"\n\
             {server}\n[[sources]]\nname = \"bench\"\nwrite_key = \"{WRITE_KEY}\"\n{rest}",
            data = dir.path().join("data").display(),
        );
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).expect("config");
        let config = switchyard::config::Config::load(&path).map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(switchyard::app::run(config, async {
            let _ = stop_rx.await;
        }));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if task.is_finished() {
                return Err(match task.await {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "exited".into(),
                    Err(e) => e.to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        Ok(Server { addr, admin, stop: Some(stop_tx), task, dir })
    }

    /// Its data dir (the durable log is under `log/`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A counter's value from `/metrics` (0 when absent).
    pub async fn metric(&self, name_and_labels: &str) -> u64 {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let Ok(uri) = format!("http://{}/metrics", self.admin).parse::<hyper::Uri>() else { return 0 };
        let Ok(resp) = client.get(uri).await else { return 0 };
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Shuts it down gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// An HTTP/1 connection to `addr` for sending requests one at a time.
pub async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    send
}

/// Sends `body` to `path`; true when answered 200.
async fn post(send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, path: &str, body: Bytes) -> bool {
    let req = hyper::Request::post(path)
        .header("host", "bench")
        .header("authorization", AUTHORIZATION)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    match send.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 200;
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

/// Sends batches of `batch` events to `/v1/batch` as fast as `conns`
/// connections allow, for `secs`; returns the events accepted.
pub async fn flood(addr: SocketAddr, secs: f64, conns: usize, batch: usize) -> u64 {
    flood_timed(addr, secs, conns, batch).await.accepted
}

/// What [`flood_timed`] measured.
#[derive(Debug, Default)]
pub struct Flood {
    /// Events in requests answered 200.
    pub accepted: u64,
    /// Per request answered 200, ms.
    pub latencies_ms: Vec<f64>,
    /// Requests not answered 200.
    pub errors: u64,
}

/// As [`flood`], with each request's latency.
pub async fn flood_timed(addr: SocketAddr, secs: f64, conns: usize, batch: usize) -> Flood {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(async move {
                let mut send = connect(addr).await;
                let mut out = Flood::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if post(&mut send, "/v1/batch", batch_body(batch)).await {
                        out.accepted += batch as u64;
                        out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        out.errors += 1;
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Flood::default();
    for t in tasks {
        if let Ok(f) = t.await {
            all.accepted += f.accepted;
            all.latencies_ms.extend(f.latencies_ms);
            all.errors += f.errors;
        }
    }
    all
}

/// A `[[destinations]]` entry named `hook` running the webhook plugin at
/// `plugin`, posting to `recv`, batches of up to 1000 events lingering
/// 50 ms; `extra` adds lines.
pub fn webhook_destination(plugin: &std::path::Path, recv: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "hook"
plugin = "{plugin}"
settings = {{ url = "http://{recv}/hook" }}
allow_http = ["http://{recv}"]
batch = {{ max_events = 1000, linger_ms = 50 }}
{extra}
"#,
        plugin = plugin.display(),
    )
}

/// What a paced load measured.
#[derive(Debug, Default)]
pub struct Paced {
    /// Per request, from when it was due to be sent to its answer, ms: a
    /// request sent late because the one before was slow counts its
    /// lateness (no coordinated omission).
    pub latencies_ms: Vec<f64>,
    /// Requests not answered 200.
    pub failed: u64,
    /// Requests still unsent when the phase ended because the ones before
    /// were slow. Each is also in `latencies_ms`, with the wait it had so
    /// far (a lower bound), so a stalled server cannot look fast.
    pub missed: u64,
}

/// Sends `requests_per_sec` requests to `path` for `secs`, spread over
/// `conns` connections whose schedules are staggered, each body made by
/// `body`.
pub async fn paced(
    addr: SocketAddr,
    path: &'static str,
    requests_per_sec: f64,
    secs: f64,
    conns: usize,
    body: fn() -> Bytes,
) -> Paced {
    let interval = Duration::from_secs_f64(conns as f64 / requests_per_sec.max(0.001));
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            tokio::spawn(async move {
                let mut send = connect(addr).await;
                let mut out = Paced::default();
                let mut due = start + interval.mul_f64(c as f64 / conns as f64);
                while due < end {
                    if Instant::now() >= end {
                        out.latencies_ms.push((end - due).as_secs_f64() * 1e3);
                        out.missed += 1;
                        due += interval;
                        continue;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let ok = post(&mut send, path, body()).await;
                    out.latencies_ms.push(due.elapsed().as_secs_f64() * 1e3);
                    out.failed += u64::from(!ok);
                    due += interval;
                }
                out
            })
        })
        .collect();
    let mut all = Paced::default();
    for t in tasks {
        if let Ok(p) = t.await {
            all.latencies_ms.extend(p.latencies_ms);
            all.failed += p.failed;
            all.missed += p.missed;
        }
    }
    all
}

/// The `p`th percentile (0–100) of `v`, nearest rank (NaN when empty).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The value at index ⌊`q`·n⌋ of `v` sorted, `q` from 0 to 1 (NaN when
/// empty): the definition the ingest, reload and deliver benches have
/// always reported, kept so their figures compare with earlier runs.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

/// The median (NaN when empty).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

/// This process's resident memory, MB.
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}
