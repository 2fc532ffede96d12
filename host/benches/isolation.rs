//! Isolation benchmark: does a hostile neighbour slow a healthy destination?
//!
//! In one run: switchyard (in this process) ingests batches of 100 ~500-byte
//! events as fast as the load generator can send them, and `good` (the
//! webhook plugin) delivers them to a loopback receiver: alone, and
//! beside `bad`, the hostile example plugin in each of its modes, with a run
//! alone before each neighbour. Each neighbour runs twice:
//!
//! - **never quarantined** (`after_failures` huge): it misbehaves for the
//!   whole phase, retried every ≤ 500 ms, two calls at a time. The worst
//!   case, which isolation alone (CPU, memory, time limits) must absorb.
//! - **default quarantine** (3 failed calls, then a probe at 5 s, doubling):
//!   what an operator gets out of the box.
//!
//! The table gives `good`'s delivered events/s and its ratio to runs alone
//! interleaved with the neighbour's (target ≥ 0.9), and how many of `bad`'s
//! calls failed in a phase, to show the neighbour really was busy.
//!
//! Run: `./x plugins && cargo bench -p switchyard --bench isolation`.
//! `BENCH_SECS` sets each phase's length (default 5), `BENCH_REPEAT` the
//! rounds (default 1; medians are reported), `BENCH_CONNECTIONS` the load
//! generator's connections (default 16), `BENCH_MODES` a comma-separated
//! subset of modes. No tracing subscriber is installed, so
//! a log-flooding neighbour costs only its rate checks here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

const BATCH: usize = 100;

/// Every mode of the hostile plugin, in the order of its docs.
const MODES: [&str; 13] = [
    "spin",
    "allocate",
    "stack-overflow",
    "call-stack-overflow",
    "panic",
    "forbidden-host",
    "slow-response",
    "giant-response",
    "log-flood",
    "wrong-count",
    "garbage",
    "retry-forever",
    "init-panic",
];

static NEXT_SEED: AtomicU64 = AtomicU64::new(0);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("parent").to_owned()
}

/// A plugin built by `./x plugins` (under `CARGO_TARGET_DIR` when set).
fn plugin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let path = target.join(format!("wasm32-wasip2/plugin/{name}.wasm"));
    assert!(path.exists(), "{} is missing: build the plugins first (./x plugins)", path.display());
    path
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A batch body with unique messageIds.
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
            r#"{{"type":"track","event":"Product Added","userId":"user-{user}","messageId":"iso-{seed}-{i}","timestamp":"2024-05-01T12:00:00.000Z","properties":{{"product_id":"507f1f77bcf86cd799439011","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","price":18.99,"quantity":1}},"context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"2.11.1"}},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"}}}}"#,
            user = (seed + i as u64) % 10_000,
        );
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// Serves every request on `listener` with `respond`, after reading the
/// request body; `events` counts the `messageId`s in the bodies received.
async fn serve<B, F>(listener: tokio::net::TcpListener, events: Arc<AtomicU64>, respond: F)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Fn() -> hyper::Response<B> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (events, respond) = (events.clone(), respond.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (events, respond) = (events.clone(), respond.clone());
                async move {
                    let b = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    events.fetch_add(b.windows(11).filter(|w| w == b"\"messageId\"").count() as u64, Ordering::Relaxed);
                    Ok::<_, Infallible>(respond())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// A response body that drips one byte per second.
struct Drip(tokio::sync::mpsc::Receiver<Bytes>);

impl Drip {
    fn start() -> Drip {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..3600 {
                if tx.send(Bytes::from_static(b".")).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Drip(rx)
    }
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// Sends batches for `secs` over `conns` connections; returns the events
/// accepted.
async fn load(addr: SocketAddr, secs: f64, conns: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).ok();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
                tokio::spawn(conn);
                let mut accepted = 0u64;
                while Instant::now() < deadline {
                    let seed = NEXT_SEED.fetch_add(BATCH as u64, Ordering::Relaxed);
                    let req = hyper::Request::post("/v1/batch")
                        .header("host", "bench")
                        .header("authorization", "Basic YmVuY2hfa2V5Og==") // bench_key:
                        .header("content-type", "application/json")
                        .body(Full::new(body(seed)))
                        .expect("request");
                    if let Ok(resp) = send.send_request(req).await {
                        let ok = resp.status() == 200;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            accepted += BATCH as u64;
                        }
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap_or(0);
    }
    accepted
}

/// A counter's value from `/metrics` (0 when absent).
async fn metric(admin: SocketAddr, name_and_labels: &str) -> u64 {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let Ok(uri) = format!("http://{admin}/metrics").parse::<hyper::Uri>() else { return 0 };
    let Ok(resp) = client.get(uri).await else { return 0 };
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

/// Where the hostile neighbour's requests go.
struct Targets {
    drip: SocketAddr,
    giant: SocketAddr,
}

/// `bad`'s config for `mode`.
fn neighbour(mode: &str, quarantine: bool, t: &Targets) -> String {
    let (url, allow) = match mode {
        "forbidden-host" => (Some("http://127.0.0.1:9/exfiltrate".to_owned()), String::new()),
        "slow-response" => (Some(format!("http://{}/slow", t.drip)), format!("\"http://{}\"", t.drip)),
        "giant-response" => (Some(format!("http://{}/giant", t.giant)), format!("\"http://{}\"", t.giant)),
        _ => (None, String::new()),
    };
    let url = url.map(|u| format!(", url = \"{u}\"")).unwrap_or_default();
    let quarantine =
        if quarantine { "" } else { "quarantine = { after_failures = 1000000000, initial_ms = 1000, max_ms = 1000 }" };
    format!(
        r#"
[[destinations]]
name = "bad"
plugin = "{plugin}"
settings = {{ mode = "{mode}"{url} }}
allow_http = [{allow}]
batch = {{ max_events = 10, linger_ms = 20 }}
quota = {{ memory_mb = 16, cpu_ms_per_call = 200, call_timeout_ms = 2000, http_timeout_ms = 500, http_max_response_bytes = 65536, log_lines_per_second = 50 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
{quarantine}
"#,
        plugin = plugin("hostile_destination").display(),
    )
}

/// One phase's result.
enum Phase {
    Ran { good_per_sec: f64, bad_failures: u64 },
    DidNotStart(String),
}

/// Runs switchyard with `good` (and `bad`, if given) under load for `secs`.
async fn phase(recv: SocketAddr, delivered: &AtomicU64, bad: Option<String>, secs: f64, conns: usize) -> Phase {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
data_dir = "{data}"
[[sources]]
name = "bench"
write_key = "bench_key"
[[destinations]]
name = "good"
plugin = "{webhook}"
settings = {{ url = "http://{recv}/good" }}
allow_http = ["http://{recv}"]
batch = {{ max_events = 1000, linger_ms = 50 }}
{bad}
"#,
        data = dir.path().join("data").display(),
        webhook = plugin("webhook_destination").display(),
        bad = bad.unwrap_or_default(),
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
        if server.is_finished() {
            let why = match server.await {
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(())) => "exited".into(),
                Err(e) => e.to_string(),
            };
            return Phase::DidNotStart(why);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    // A short warm-up, so the phase measures the steady state.
    load(addr, 1.0, conns).await;
    let d0 = delivered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    load(addr, secs, conns).await;
    let good_per_sec = (delivered.load(Ordering::Relaxed) - d0) as f64 / t0.elapsed().as_secs_f64();
    let bad_failures = metric(admin, "switchyard_destination_call_failures_total{destination=\"bad\"}").await;
    let _ = stop_tx.send(());
    let _ = server.await;
    Phase::Ran { good_per_sec, bad_failures }
}

/// The median (NaN when empty).
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

async fn bench() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let conns: usize = env_or("BENCH_CONNECTIONS", 16);
    let repeat: usize = env_or("BENCH_REPEAT", 1usize).max(1);
    let modes: Vec<String> = std::env::var("BENCH_MODES").map_or_else(
        |_| MODES.iter().map(|m| (*m).to_owned()).collect(),
        |v| v.split(',').map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect(),
    );

    let (recv, recv_addr) = listen().await;
    let delivered = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve(recv, delivered.clone(), || hyper::Response::new(Full::new(Bytes::from_static(b"ok")))));
    let (drip, drip_addr) = listen().await;
    tokio::spawn(serve(drip, Arc::default(), || hyper::Response::new(Drip::start())));
    let (giant, giant_addr) = listen().await;
    let giant_body = Bytes::from(vec![b'G'; 8 << 20]);
    tokio::spawn(serve(giant, Arc::default(), move || hyper::Response::new(Full::new(giant_body.clone()))));
    let targets = Targets { drip: drip_addr, giant: giant_addr };

    // Each neighbour is compared with a run alone just before it, and the
    // rounds interleave: on a shared machine the baseline drifts more than
    // a single ratio tolerates. Medians over `BENCH_REPEAT` rounds.
    let mut runs: Vec<(Vec<f64>, Vec<Phase>, Vec<Phase>)> = modes.iter().map(|_| Default::default()).collect();
    for _ in 0..repeat {
        for (mode, (alone, worst, default)) in modes.iter().zip(&mut runs) {
            if let Phase::Ran { good_per_sec, .. } = phase(recv_addr, &delivered, None, secs, conns).await {
                alone.push(good_per_sec);
            }
            worst.push(phase(recv_addr, &delivered, Some(neighbour(mode, false, &targets)), secs, conns).await);
            default.push(phase(recv_addr, &delivered, Some(neighbour(mode, true, &targets)), secs, conns).await);
        }
    }

    println!(
        "# isolation: `good` (webhook) delivered events/s beside a hostile `bad`; {conns} connections, \
         batches of {BATCH}, {secs} s per phase, median of {repeat} round(s), {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| neighbour | alone: events/s | never quarantined: events/s | ratio | bad's failed calls \
         | default quarantine: events/s | ratio | bad's failed calls |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut refused = Vec::new();
    let cells = |phases: &[Phase], alone: f64| {
        let mut rates = Vec::new();
        let mut failures = Vec::new();
        for p in phases {
            match p {
                Phase::Ran { good_per_sec, bad_failures } => {
                    rates.push(*good_per_sec);
                    failures.push(*bad_failures as f64);
                }
                Phase::DidNotStart(_) => return "host did not start | – | –".to_owned(),
            }
        }
        let rate = median(&mut rates);
        let ratio = rate / alone;
        let flag = if ratio < 0.9 { " ⚠" } else { "" };
        format!("{rate:.0} | {ratio:.2}{flag} | {:.0}", median(&mut failures))
    };
    for (mode, (alone, worst, default)) in modes.iter().zip(&mut runs) {
        let alone = median(alone);
        println!("| {mode} | {alone:.0} | {} | {} |", cells(worst, alone), cells(default, alone));
        if let Some(Phase::DidNotStart(why)) = worst.first() {
            refused.push(format!("{mode}: {why}"));
        }
    }
    for r in refused {
        println!("\nhost did not start with neighbour {r}");
    }
}
