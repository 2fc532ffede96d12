//! Pipeline benchmark, end to end and from outside the process: the real
//! release `switchyard` binary ingests batches over HTTP, writes them to
//! its durable log and delivers them through three Wasm destinations
//! (Amplitude, Statsig, webhook) to loopback mocks of those vendors. The
//! load generator and the receivers run in processes of their own (this
//! bench binary, re-executed with `PIPELINE_ROLE=loadgen` or
//! `PIPELINE_ROLE=receiver`), so the server's CPU, memory and disk figures
//! are its own; they still share this machine's cores with it.
//!
//! Per connection count it starts a fresh server and receiver, floods
//! `/v1/batch` with batches of 100 ~500-byte events, and reports: accepted
//! events/s and ingest latency; events delivered per destination during the
//! load and how long after it the backlog took to drain; the server's CPU
//! (cores busy) and peak RSS; bytes written to the data dir's block device
//! per accepted event (the device's own counters: everything written to
//! that device in the window, by any process, so other work on the machine
//! inflates it). Then a paced load at half the measured peak, for latency
//! at a sustainable rate (measured from when each request was due, so a
//! stalled server cannot look fast).
//!
//! Run: `./x plugins && cargo bench -p switchyard --bench pipeline` (or
//! `./x bench`); `cargo bench` builds `target/release/switchyard` too.
//!
//! Environment:
//! - `BENCH_SECS`: length of each load, s (default 20).
//! - `BENCH_CONNS`: connection counts, comma-separated (default `8,32`).
//! - `BENCH_PACED=0`: skip the half-peak phase.
//! - `BENCH_CONFIG`: TOML lines added after the `[server]` ones (more
//!   server keys, or a `[runtime]` table), to compare settings; `\n`
//!   separates lines.
//! - `BENCH_DIR`: where the data dirs are made (default the temp dir), to
//!   measure another device.
//! - `CARGO_TARGET_DIR`: where the binary and the plugins are found.
//! - `PIPELINE_SERVER`: another `switchyard` binary to measure.
//! - `BENCH_LOG`: `embedded` (default); `jetstream`, one NATS server and
//!   replicas 1; `jetstream-r3`, a three-node NATS cluster on loopback and
//!   replicas 3 (`target/nats/bin/nats-server`, or `NATS_SERVER_BIN`). The
//!   NATS servers share this machine's cores, and their CPU and RSS are
//!   reported beside the server's.
//! - `BENCH_NATS_SYNC`: the NATS servers' `sync_interval`: `always`
//!   (default: fsync before every ack, as the embedded log does),
//!   `default` (NATS's own, every 2 minutes) or a duration (`1s`).
//! - `BENCH_JETSTREAM`: lines added to `[log.jetstream]` (e.g.
//!   `dedupe = "window"`), `\n`-separated.
//! - `BENCH_DESTINATION`: lines added to every destination (e.g.
//!   `ordered = true`), `\n`-separated.
//! - `BENCH_NODES`: Switchyard nodes on the one log (default 1; more need
//!   JetStream): the load generator spreads its connections over them, and
//!   CPU is summed, RSS the largest node's.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{AUTHORIZATION, WRITE_KEY, env_or, free_port, percentile};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// Events per `/v1/batch` request.
const BATCH: usize = 100;
/// The destinations, in the order of every table.
const DESTINATIONS: [&str; 3] = ["amplitude", "statsig", "webhook"];
/// How long the backlog may take to drain before it is reported as such.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/<pid>/stat` times, 100 on
/// every Linux architecture this runs on.
const CLOCK_TICKS: f64 = 100.0;

fn main() {
    match std::env::var("PIPELINE_ROLE").as_deref() {
        Ok("receiver") => runtime().block_on(receiver()),
        Ok("loadgen") => runtime().block_on(loadgen()),
        Ok(other) => panic!("unknown PIPELINE_ROLE {other:?}"),
        Err(_) => orchestrate(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio")
}

/// A role process exits when the orchestrator goes away (its stdin
/// closes), even if the orchestrator could not kill it.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
}

// ---- Receiver role: the vendors' mocks ------------------------------------

/// Events received per destination, as `GET /stats` serves them.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Stats {
    amplitude: u64,
    statsig: u64,
    webhook: u64,
}

impl Stats {
    fn counts(self) -> [u64; 3] {
        [self.amplitude, self.statsig, self.webhook]
    }
}

#[derive(Default)]
struct Counters([AtomicU64; 3]);

/// Prints its port on the first line of stdout, then answers as Amplitude
/// HTTP V2 (`POST /2/httpapi` → 200 with `events_ingested`), Statsig
/// (`POST /v1/log_event` → 202) and a webhook (`POST /hook` → 200) do on
/// success, counting the events in each body.
async fn receiver() {
    exit_with_parent();
    let (listener, addr) = common::listen().await;
    println!("{}", addr.port());
    let counters = Arc::new(Counters::default());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let counters = counters.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let counters = counters.clone();
                async move {
                    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Ok::<_, Infallible>(answer(&method, &path, &body, &counters))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn answer(method: &Method, path: &str, body: &[u8], counters: &Counters) -> Response<Full<Bytes>> {
    let count = |dest: usize, needle: &[u8]| {
        let n = body.windows(needle.len()).filter(|w| w == &needle).count() as u64;
        counters.0[dest].fetch_add(n, Ordering::Relaxed);
        n
    };
    let (status, reply) = match (method, path) {
        (&Method::POST, "/2/httpapi") => {
            let n = count(0, b"\"insert_id\"");
            let now_ms = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_millis());
            let reply = format!(
                r#"{{"code":200,"events_ingested":{n},"payload_size_bytes":{},"server_upload_time":{now_ms}}}"#,
                body.len()
            );
            (StatusCode::OK, reply)
        }
        (&Method::POST, "/v1/log_event") => {
            count(1, b"\"eventName\"");
            (StatusCode::ACCEPTED, r#"{"success":true}"#.to_owned())
        }
        (&Method::POST, "/hook") => {
            count(2, b"\"messageId\"");
            (StatusCode::OK, r#"{"success":true}"#.to_owned())
        }
        (&Method::GET, "/stats") => {
            let [amplitude, statsig, webhook] = counters.0.each_ref().map(|c| c.load(Ordering::Relaxed));
            (StatusCode::OK, serde_json::to_string(&Stats { amplitude, statsig, webhook }).expect("json"))
        }
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(reply)));
    *resp.status_mut() = status;
    resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    resp
}

// ---- Load generator role ---------------------------------------------------

/// What one load measured: the loadgen's one line of stdout.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LoadReport {
    /// Events in requests answered 200.
    accepted: u64,
    /// Requests sent.
    requests: u64,
    /// Requests not answered 200.
    failures: u64,
    /// Paced only: requests never sent because the ones before were late.
    missed: u64,
    /// From the first request to the last answer, s.
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// A `/v1/batch` body of [`BATCH`] events with unique messageIds.
fn body() -> Bytes {
    common::batch_body(BATCH)
}

/// Loads `PIPELINE_ADDR` over `PIPELINE_CONNS` connections for
/// `BENCH_SECS`: as fast as they allow, or at `PIPELINE_RATE` requests/s;
/// prints a [`LoadReport`] as one JSON line.
async fn loadgen() {
    exit_with_parent();
    let addrs: Vec<SocketAddr> = std::env::var("PIPELINE_ADDR")
        .expect("PIPELINE_ADDR")
        .split(',')
        .map(|a| a.parse().expect("address"))
        .collect();
    let conns: usize = env_or("PIPELINE_CONNS", 8);
    let secs: f64 = env_or("BENCH_SECS", 20.0);
    common::first_seed(env_or("PIPELINE_SEED", 0));
    let started = Instant::now();
    let (mut latencies, failures, missed) =
        match std::env::var("PIPELINE_RATE").ok().and_then(|r| r.parse::<f64>().ok()) {
            Some(rate) => {
                // The rate and the connections split evenly over the nodes.
                let n = addrs.len();
                let runs =
                    addrs.iter().map(|&addr| common::paced(addr, "/v1/batch", rate / n as f64, secs, conns / n, body));
                let (mut latencies, mut failed, mut missed) = (Vec::new(), 0, 0);
                for p in futures_join_all(runs).await {
                    latencies.extend(p.latencies_ms);
                    failed += p.failed;
                    missed += p.missed;
                }
                (latencies, failed, missed)
            }
            None => flood(&addrs, secs, conns).await,
        };
    let secs = started.elapsed().as_secs_f64();
    let requests = latencies.len() as u64 - missed;
    let mut pct = |p| if latencies.is_empty() { 0.0 } else { percentile(&mut latencies, p) };
    let report = LoadReport {
        accepted: (requests - failures) * BATCH as u64,
        requests,
        failures,
        missed,
        secs,
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        max_ms: pct(100.0),
    };
    println!("{}", serde_json::to_string(&report).expect("json"));
}

/// Runs `futures` concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("load task"));
    }
    out
}

/// Sends batches back to back on each of `conns` keep-alive connections
/// (spread round-robin over `addrs`) for `secs`; returns every request's
/// latency (ms) and the failures.
async fn flood(addrs: &[SocketAddr], secs: f64, conns: usize) -> (Vec<f64>, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            tokio::spawn(async move {
                let mut send = common::connect(addr).await;
                let (mut latencies, mut failures) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let req = Request::post("/v1/batch")
                        .header("host", "bench")
                        .header("authorization", AUTHORIZATION)
                        .header("content-type", "application/json")
                        .body(Full::new(body()))
                        .expect("request");
                    let t = Instant::now();
                    let ok = match send.send_request(req).await {
                        Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    failures += u64::from(!ok);
                    if !ok && send.is_closed() {
                        send = common::connect(addr).await;
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await.expect("load task");
        latencies.extend(l);
        failures += f;
    }
    (latencies, failures, 0)
}

// ---- Orchestrator -----------------------------------------------------------

/// A child process, killed when dropped (also on panic).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This binary again, playing `role`.
fn role(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env("PIPELINE_ROLE", role).stdin(Stdio::piped()).stdout(Stdio::piped());
    cmd
}

/// `target/release/switchyard` (under `CARGO_TARGET_DIR` when set): the
/// release binary, which `cargo bench` builds with this bench, as the
/// bench profile is the release one; `PIPELINE_SERVER` names another (an
/// older build, to compare before and after in one run).
fn server_binary() -> PathBuf {
    let path = std::env::var_os("PIPELINE_SERVER")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchyard")), PathBuf::from);
    assert!(path.exists(), "{} is missing: build it first (cargo build --release -p switchyard)", path.display());
    path
}

/// `GET path` on `addr`: the status and body (None when unreachable).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned()))
}

fn stats(receiver: SocketAddr) -> [u64; 3] {
    let (_, body) = get(receiver, "/stats").expect("receiver /stats");
    serde_json::from_str::<Stats>(&body).expect("stats json").counts()
}

/// utime + stime of `pid`, s.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces), from field 3.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks = |i: usize| fields[i - 3].parse::<f64>().expect("ticks");
    (ticks(14) + ticks(15)) / CLOCK_TICKS
}

/// `VmHWM` of `pid` (peak resident set), MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|kb| kb.parse::<f64>().ok()).map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Bytes written so far to the block device holding `path`, from the
/// device's own counters (None when it has none: tmpfs, overlay).
fn device_bytes_written(path: &Path) -> Option<u64> {
    let dev = std::fs::metadata(path).ok()?.dev();
    // glibc's major()/minor() encoding of dev_t.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// The server's config: one source, the three destinations pointed at the
/// receiver, `BENCH_CONFIG`'s lines, and a `[log]` section for `nats`
/// (when not empty) with `BENCH_JETSTREAM`'s lines.
fn config(dir: &Path, port: u16, admin: u16, receiver: SocketAddr, nats: &[String], replicas: usize) -> String {
    let extra = std::env::var("BENCH_CONFIG").unwrap_or_default().replace("\\n", "\n");
    let log = if nats.is_empty() {
        String::new()
    } else {
        let servers: Vec<String> = nats.iter().map(|u| format!("\"{u}\"")).collect();
        let lines = std::env::var("BENCH_JETSTREAM").unwrap_or_default().replace("\\n", "\n");
        format!(
            "\n[log]\nbackend = \"jetstream\"\n\n[log.jetstream]\nservers = [{}]\nreplicas = {replicas}\n{lines}\n",
            servers.join(", ")
        )
    };
    let plugin = |name: &str| common::plugin(name).display().to_string();
    let origin = format!("http://{receiver}");
    let each = std::env::var("BENCH_DESTINATION").unwrap_or_default().replace("\\n", "\n");
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{data}"
{extra}

[[sources]]
name = "bench"
write_key = "{WRITE_KEY}"

[[destinations]]
name = "amplitude"
plugin = "{amplitude}"
settings = {{ api_key = "bench-amplitude-key", endpoint = "{origin}" }}
allow_http = ["{origin}"]
{each}

[[destinations]]
name = "statsig"
plugin = "{statsig}"
settings = {{ server_secret = "secret-bench", endpoint = "{origin}" }}
allow_http = ["{origin}"]
{each}

[[destinations]]
name = "webhook"
plugin = "{webhook}"
settings = {{ url = "{origin}/hook" }}
allow_http = ["{origin}"]
{each}
{log}"#,
        data = dir.join("data").display(),
        amplitude = plugin("amplitude_destination"),
        statsig = plugin("statsig_destination"),
        webhook = plugin("webhook_destination"),
    )
}

/// The running servers (nodes) on one log, their NATS servers if any, and
/// the receiver, on fresh data dirs.
struct Stack {
    servers: Vec<Proc>,
    nats: Vec<Proc>,
    _receiver: Proc,
    addrs: Vec<SocketAddr>,
    receiver: SocketAddr,
    dir: tempfile::TempDir,
}

/// The NATS servers `BENCH_LOG` asks for, started under `dir`: their URLs
/// and the replicas to use.
fn start_nats(dir: &Path) -> (Vec<Proc>, Vec<String>, usize) {
    let (nodes, replicas) = match std::env::var("BENCH_LOG").as_deref() {
        Err(_) | Ok("embedded") => return (Vec::new(), Vec::new(), 1),
        Ok("jetstream") => (1, 1),
        Ok("jetstream-r3") => (3, 3),
        Ok(other) => panic!("BENCH_LOG {other:?}: embedded, jetstream or jetstream-r3"),
    };
    let binary = std::env::var_os("NATS_SERVER_BIN")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nats/bin/nats-server"), PathBuf::from);
    assert!(binary.exists(), "{} is missing: `./x test` installs it", binary.display());
    let ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports.iter().map(|(_, r)| format!("nats://127.0.0.1:{r}")).collect();
    let mut procs = Vec::new();
    for (i, (port, route)) in ports.iter().enumerate() {
        let node = dir.join(format!("nats{i}"));
        std::fs::create_dir_all(&node).expect("nats dir");
        let cluster = if nodes > 1 {
            format!("cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{}] }}\n", routes.join(", "))
        } else {
            String::new()
        };
        let sync = match std::env::var("BENCH_NATS_SYNC").as_deref() {
            Ok("default") => String::new(),
            Ok(every) => format!(", sync_interval: {every}"),
            Err(_) => ", sync_interval: always".to_owned(),
        };
        let conf = format!(
            "listen: 127.0.0.1:{port}\nserver_name: n{i}\njetstream {{ store_dir: \"{}\"{sync} }}\n{cluster}",
            node.join("store").display()
        );
        std::fs::write(node.join("nats.conf"), conf).expect("nats.conf");
        let log = std::fs::File::create(node.join("nats.log")).expect("nats.log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(node.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        procs.push(Proc(child));
    }
    for (port, _) in &ports {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (procs, ports.iter().map(|(p, _)| format!("nats://127.0.0.1:{p}")).collect(), replicas)
}

impl Stack {
    fn start() -> Stack {
        let parent = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let mut receiver = Proc(role("receiver").spawn().expect("spawn receiver"));
        let mut line = String::new();
        BufReader::new(receiver.0.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("receiver port");
        let receiver_addr = SocketAddr::from(([127, 0, 0, 1], line.trim().parse().expect("port")));
        let (nats, urls, replicas) = start_nats(dir.path());
        let nodes: usize = env_or("BENCH_NODES", 1);
        assert!(nodes == 1 || !urls.is_empty(), "BENCH_NODES > 1 needs BENCH_LOG=jetstream");
        let mut stack =
            Stack { servers: Vec::new(), nats, _receiver: receiver, addrs: Vec::new(), receiver: receiver_addr, dir };
        for node in 0..nodes {
            let node_dir = stack.dir.path().join(format!("node{node}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let (port, admin) = (free_port(), free_port());
            let config_path = node_dir.join("switchyard.toml");
            std::fs::write(&config_path, config(&node_dir, port, admin, receiver_addr, &urls, replicas))
                .expect("config");
            let admin = SocketAddr::from(([127, 0, 0, 1], admin));
            // A cluster elects its JetStream leaders a moment after it
            // listens: a node that exits at start is started again.
            let start = Instant::now();
            loop {
                let log = std::fs::File::create(node_dir.join("server.log")).expect("server.log");
                let server = Command::new(server_binary())
                    .arg("run")
                    .arg("--config")
                    .arg(&config_path)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn switchyard");
                let mut server = Proc(server);
                match wait_ready(&mut server, admin) {
                    Ok(()) => {
                        stack.servers.push(server);
                        break;
                    }
                    Err(exited) if start.elapsed() < Duration::from_secs(60) => {
                        eprintln!("pipeline: node {node} exited at start ({exited}); starting it again");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(exited) => {
                        let log = std::fs::read_to_string(node_dir.join("server.log")).unwrap_or_default();
                        panic!("switchyard did not become ready ({exited}); its log:\n{log}");
                    }
                }
            }
            stack.addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        stack
    }

    /// utime + stime of every node, s.
    fn cpu_secs(&self) -> f64 {
        self.servers.iter().map(|s| cpu_secs(s.0.id())).sum()
    }

    /// utime + stime of the NATS servers, s.
    fn nats_cpu_secs(&self) -> f64 {
        self.nats.iter().map(|s| cpu_secs(s.0.id())).sum()
    }

    /// The largest node's peak RSS, MB.
    fn rss_mb(&self) -> f64 {
        self.servers.iter().map(|s| peak_rss_mb(s.0.id())).fold(0.0, f64::max)
    }

    /// The NATS servers' peak RSS, summed, MB.
    fn nats_rss_mb(&self) -> f64 {
        self.nats.iter().map(|s| peak_rss_mb(s.0.id())).sum()
    }

    /// Every node's WARN and ERROR lines.
    fn log_problems(&self) -> (usize, Vec<String>) {
        let (mut n, mut first) = (0, Vec::new());
        for node in 0..self.servers.len() {
            let (k, lines) = log_problems(&self.dir.path().join(format!("node{node}/server.log")));
            n += k;
            first.extend(lines);
        }
        first.truncate(3);
        (n, first)
    }

    /// Runs a load generator against the server and waits for its report.
    fn load(&self, conns: usize, secs: f64, seed: u64, rate: Option<f64>) -> LoadReport {
        let mut cmd = role("loadgen");
        let addrs: Vec<String> = self.addrs.iter().map(SocketAddr::to_string).collect();
        cmd.env("PIPELINE_ADDR", addrs.join(","))
            .env("PIPELINE_CONNS", conns.to_string())
            .env("BENCH_SECS", secs.to_string())
            .env("PIPELINE_SEED", seed.to_string());
        if let Some(rate) = rate {
            cmd.env("PIPELINE_RATE", rate.to_string());
        }
        let mut child = Proc(cmd.spawn().expect("spawn loadgen"));
        let mut out = String::new();
        child.0.stdout.take().expect("stdout").read_to_string(&mut out).expect("loadgen output");
        let status = child.0.wait().expect("loadgen");
        assert!(status.success(), "the load generator failed: {status}");
        serde_json::from_str(out.lines().last().unwrap_or_default()).expect("loadgen report")
    }
}

/// Until `/ready` answers 200 on `admin`, or the server exits (Err, how).
///
/// # Panics
///
/// When it is not ready within a minute.
fn wait_ready(server: &mut Proc, admin: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if get(admin, "/ready").is_some_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if let Some(status) = server.0.try_wait().ok().flatten() {
            return Err(status.to_string());
        }
        assert!(start.elapsed() < Duration::from_secs(60), "switchyard did not become ready in a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one connection count measured.
struct Phase {
    conns: usize,
    peak: LoadReport,
    /// Wall time of the load, s, as the orchestrator saw it.
    window: f64,
    /// Per destination, events received when the load ended.
    at_end: [u64; 3],
    /// Per destination, when after the load it had every accepted event
    /// (None: not within [`DRAIN_TIMEOUT`]), and the count then.
    drained: [Option<f64>; 3],
    final_counts: [u64; 3],
    cores: f64,
    rss_mb: f64,
    /// The NATS servers' cores busy and peak RSS (0 on the embedded log).
    nats_cores: f64,
    nats_rss_mb: f64,
    device_bytes: Option<u64>,
    paced: Option<LoadReport>,
    /// The server's WARN and ERROR log lines: how many, and the first few.
    log_problems: (usize, Vec<String>),
}

fn run_phase(conns: usize, secs: f64, index: u64) -> Phase {
    eprintln!("pipeline: {conns} connections: starting switchyard and the receivers");
    let stack = Stack::start();
    let data = stack.dir.path().to_owned();
    let (cpu0, nats0, dev0) = (stack.cpu_secs(), stack.nats_cpu_secs(), device_bytes_written(&data));
    eprintln!("pipeline: {conns} connections: {secs} s of load");
    let t0 = Instant::now();
    // Seeds far apart: each load's message ids are its own.
    let peak = stack.load(conns, secs, index << 40, None);
    let window = t0.elapsed().as_secs_f64();
    let at_end = stats(stack.receiver);
    let cores = (stack.cpu_secs() - cpu0) / window;
    let nats_cores = (stack.nats_cpu_secs() - nats0) / window;

    let drain_start = Instant::now();
    let mut drained = [None; 3];
    let mut counts = at_end;
    while drained.iter().any(Option::is_none) && drain_start.elapsed() < DRAIN_TIMEOUT {
        counts = stats(stack.receiver);
        for (d, &n) in drained.iter_mut().zip(&counts) {
            if d.is_none() && n >= peak.accepted {
                *d = Some(drain_start.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let device_bytes = dev0.zip(device_bytes_written(&data)).map(|(a, b)| b - a);

    let paced = (std::env::var("BENCH_PACED").as_deref() != Ok("0") && peak.accepted > 0).then(|| {
        let rate = peak.accepted as f64 / peak.secs / 2.0 / BATCH as f64;
        eprintln!("pipeline: {conns} connections: {secs} s paced at {rate:.0} requests/s");
        stack.load(conns, secs, (index << 40) + (1 << 39), Some(rate))
    });
    let (rss_mb, nats_rss_mb) = (stack.rss_mb(), stack.nats_rss_mb());
    let log_problems = stack.log_problems();
    Phase {
        conns,
        peak,
        window,
        at_end,
        drained,
        final_counts: counts,
        cores,
        rss_mb,
        nats_cores,
        nats_rss_mb,
        device_bytes,
        paced,
        log_problems,
    }
}

/// The WARN and ERROR lines of the server's log: how many, and the first
/// three (without their timestamps).
fn log_problems(path: &Path) -> (usize, Vec<String>) {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let problems: Vec<&str> =
        log.lines().filter_map(|l| l.split_once(" WARN ").or_else(|| l.split_once(" ERROR ")).map(|_| l)).collect();
    let first = problems
        .iter()
        .take(3)
        .map(|l| l.split_once(' ').map_or(*l, |(_, rest)| rest.trim()).chars().take(240).collect());
    (problems.len(), first.collect())
}

fn orchestrate() {
    let secs: f64 = env_or("BENCH_SECS", 20.0);
    let conns: Vec<usize> = std::env::var("BENCH_CONNS")
        .unwrap_or_else(|_| "8,32".into())
        .split(',')
        .map(|c| c.trim().parse().expect("BENCH_CONNS: comma-separated connection counts"))
        .collect();
    server_binary();
    for name in ["amplitude_destination", "statsig_destination", "webhook_destination"] {
        common::plugin(name);
    }
    let phases: Vec<Phase> = conns.iter().zip(0..).map(|(&c, i)| run_phase(c, secs, i)).collect();
    print_tables(&phases, secs);
}

fn print_tables(phases: &[Phase], secs: f64) {
    let mut extra = std::env::var("BENCH_CONFIG").map(|c| format!(", BENCH_CONFIG `{c}`")).unwrap_or_default();
    for var in ["BENCH_LOG", "BENCH_JETSTREAM", "BENCH_DESTINATION", "BENCH_NODES", "BENCH_NATS_SYNC"] {
        if let Ok(v) = std::env::var(var) {
            extra.push_str(&format!(", {var} `{v}`"));
        }
    }
    println!(
        "# pipeline: `cargo bench -p switchyard --bench pipeline`: release binary, load generator and \
         receivers in their own processes; /v1/batch of {BATCH} × ~500-byte events for {secs} s{extra}\n"
    );
    println!(
        "| connections | accepted events/s | requests | failures | p50 ms | p99 ms | max ms | server cores busy | \
         server peak RSS MB | NATS cores busy | NATS peak RSS MB | device bytes written / accepted event |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in phases {
        let r = &p.peak;
        let device =
            p.device_bytes.map_or_else(|| "n/a".to_owned(), |b| format!("{:.0}", b as f64 / r.accepted.max(1) as f64));
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} | {:.0} | {device} |",
            p.conns,
            r.accepted as f64 / r.secs,
            r.requests,
            r.failures,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            p.cores,
            p.rss_mb,
            p.nats_cores,
            p.nats_rss_mb,
        );
    }
    println!(
        "\nCores busy: the server's utime + stime over the load. Device bytes: the data dir's block device's \
         counters over the load and the drain, every process writing to that device included.\n"
    );
    println!("Delivery:\n");
    println!(
        "| connections | destination | delivered events/s during the load | delivered / accepted at load end | \
         drained after the load | delivered / accepted in the end |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for p in phases {
        let accepted = p.peak.accepted.max(1) as f64;
        for (d, name) in DESTINATIONS.iter().enumerate() {
            let drained = p.drained[d]
                .map_or_else(|| format!("not within {} s", DRAIN_TIMEOUT.as_secs()), |s| format!("{s:.1} s"));
            println!(
                "| {} | {name} | {:.0} | {:.2} | {drained} | {:.2} |",
                p.conns,
                p.at_end[d] as f64 / p.window,
                p.at_end[d] as f64 / accepted,
                p.final_counts[d] as f64 / accepted,
            );
        }
    }
    if phases.iter().any(|p| p.paced.is_some()) {
        println!("\nPaced at half the peak (latency from when each request was due):\n");
        println!(
            "| connections | target events/s | accepted events/s | p50 ms | p99 ms | max ms | failures | missed |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for p in phases {
            let Some(r) = &p.paced else { continue };
            println!(
                "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
                p.conns,
                p.peak.accepted as f64 / p.peak.secs / 2.0,
                r.accepted as f64 / r.secs,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.failures,
                r.missed,
            );
        }
    }
    for p in phases {
        let (n, first) = &p.log_problems;
        println!("\nserver log, {} connections: {n} WARN/ERROR lines", p.conns);
        for line in first {
            println!("    {line}");
        }
    }
}
