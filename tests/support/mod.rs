//! Helpers for end-to-end tests: start the real `switchyard` binary with a
//! real config, send it real HTTP, and stand up loopback receivers that play
//! a destination's server ([`Receiver`] for any endpoint; [`amplitude`] and
//! [`statsig`] for those vendors' APIs). Configs are built with
//! [`Config`].

pub mod amplitude;
pub mod config;
pub mod drip;
pub mod mock;
pub mod nats;
pub mod registry;
pub mod statsig;

pub use amplitude::AmplitudeMock;
pub use config::{Config, Written, write_config};
pub use drip::Drip;
pub use mock::{Fault, MockRequest};
pub use nats::{NatsCluster, NatsServer};
pub use registry::OciRegistry;
pub use statsig::StatsigMock;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// The `switchyard` binary: `$SWITCHYARD_BIN`, or `target/debug/switchyard`.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/switchyard"));
    assert!(path.exists(), "{} is missing: run `cargo build -p switchyard` first (`./x test` does)", path.display());
    path
}

/// A plugin built by `./x plugins`, e.g. `plugin("webhook_destination")`.
pub fn plugin(name: &str) -> PathBuf {
    let path = workspace().join(format!("target/wasm32-wasip2/plugin/{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `./x plugins` first (`./x test` does)", path.display());
    path
}

/// A free loopback port for a server a test starts later (bound then
/// released), never one this process handed out before.
///
/// The port is taken from below the kernel's ephemeral range, never from it:
/// a port from that range, released and then polled with `connect` until the
/// server binds it, can be picked by the kernel as the source port of the
/// poll itself — a TCP self-connect that "succeeds" with no server there
/// (and keeps the server from binding), and another test's outgoing
/// connection can take it in the meantime. Below the range neither happens.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Where this process starts in the range: apart from another test
    // process's start, so two suites running at once rarely probe the same
    // ports (a port in use is skipped either way).
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = ports_below_ephemeral();
    let span = u32::from(high - low);
    let _ = NEXT.compare_exchange(0, 1 + std::process::id() % span, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = low + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// Ports servers in tests listen on: below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 by default), above the
/// well-known and most registered services'.
fn ports_below_ephemeral() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let high = ephemeral_low.clamp(12000, 32768);
    (high - 10000, high)
}

/// Whether a test (or a part of one) about the embedded log's own files
/// (cursor files, the disk floor, segment bytes) is skipped: true in the
/// JetStream run, where those files do not exist. Says so on stderr.
pub fn embedded_log_only(what: &str) -> bool {
    let skip = nats::jetstream_run();
    if skip {
        eprintln!("skipped on JetStream (embedded log only): {what}");
    }
    skip
}

/// Polls `cond` until it holds or `timeout` passes. This is a deadline for
/// correctness, not a speed assertion: generous on purpose.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, what: &str, mut cond: F) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `switchyard run` process with its own data dir.
pub struct Switchyard {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// In a JetStream run, the NATS server of its own and the `[log]`
    /// section every config it is given gets (see [`nats`]).
    pub nats: Option<NatsServer>,
    log_section: String,
}

impl Switchyard {
    /// Writes `config` (with `{port}`, `{admin_port}` and `{data_dir}`
    /// placeholders filled in) and starts the server; waits until it accepts
    /// connections.
    pub async fn start(config: &str) -> Switchyard {
        Self::start_with_env(config, &[]).await
    }

    /// As [`Switchyard::start`], with extra environment variables.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Switchyard {
        let Spawned { child, dir, port, admin_port, log, nats, log_section } = Self::spawn(config, env);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut sy = Switchyard { child, dir, port, admin_port, log, env, nats, log_section };
        sy.wait_listening().await;
        sy
    }

    /// As [`Switchyard::start`], but a server that exits before listening
    /// is returned as its logs (a cluster still electing its leaders, say).
    ///
    /// # Errors
    ///
    /// The server's logs when it exited.
    pub async fn try_start(config: &str) -> Result<Switchyard, String> {
        let Spawned { child, dir, port, admin_port, log, nats, log_section } = Self::spawn(config, &[]);
        let mut sy = Switchyard { child, dir, port, admin_port, log, env: Vec::new(), nats, log_section };
        match sy.listening().await {
            Ok(()) => Ok(sy),
            Err(_) => Err(sy.logs()),
        }
    }

    async fn wait_listening(&mut self) {
        if let Err(status) = self.listening().await {
            panic!("switchyard exited with {status} before listening:\n{}", self.logs());
        }
    }

    /// Until the tracking port accepts connections, or the process exits
    /// (`Err`, how). Panics after two minutes.
    async fn listening(&mut self) -> Result<(), std::process::ExitStatus> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        loop {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                // Connected to itself, not to a server (see free_port).
                let to_itself = stream.local_addr().ok() == stream.peer_addr().ok();
                if !to_itself {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(status);
            }
            assert!(start.elapsed() < Duration::from_secs(120), "switchyard did not listen:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same config, data dir and ports
    /// (after [`Switchyard::kill9`] or [`Switchyard::terminate`]).
    pub async fn restart(&mut self) {
        let stderr = std::fs::OpenOptions::new().append(true).open(&self.log).expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.path().join("switchyard.toml"))
            .stdout(Stdio::null())
            .stderr(stderr);
        cmd.env("RUST_LOG", "info,switchyard=debug,cranelift=warn,wasmtime=warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = cmd.spawn().expect("spawn switchyard");
        self.wait_listening().await;
    }

    /// The admin API's base URL.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Runs `switchyard run` on `config` expecting it to fail at start;
    /// returns its exit code and stderr.
    pub fn start_expecting_failure(config: &str) -> (Option<i32>, String) {
        let Spawned { mut child, log, dir: _dir, nats: _nats, .. } = Self::spawn(config, &[]);
        let start = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("switchyard kept running on a config that should fail");
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        (status.code(), std::fs::read_to_string(log).unwrap_or_default())
    }

    fn spawn(config: &str, env: &[(&str, &str)]) -> Spawned {
        let dir = tempfile::tempdir().expect("tempdir");
        let (nats, log_section) = if nats::jetstream_run() && !config.contains("\n[log]") {
            let server = NatsServer::start(dir.path());
            // A short ack_wait: a test that kills the server gets what it
            // held back within its deadlines.
            let section = nats::log_section(&[server.url()], "ack_wait_secs = 5");
            (Some(server), section)
        } else {
            (None, String::new())
        };
        let Written { path: config_path, port, admin_port } =
            write_config(&format!("{config}{log_section}"), dir.path());
        let log = dir.path().join("switchyard.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg("run").arg("--config").arg(&config_path).stdout(Stdio::null()).stderr(stderr);
        cmd.env("RUST_LOG", "info,switchyard=debug,cranelift=warn,wasmtime=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn switchyard");
        Spawned { child, dir, port, admin_port, log, nats, log_section }
    }

    /// The config file the server runs on.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.toml")
    }

    /// Replaces the config file (placeholders filled in as at start) the way
    /// editors do: write a temporary file, then rename it over the old one.
    pub fn rewrite_config(&self, config: &str) {
        let config = format!("{config}{}", self.log_section);
        let text = config::fill(&config, self.port, self.admin_port, &self.dir.path().join("data"));
        replace_file(&self.config_path(), text.as_bytes());
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The tracking API's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, name_and_labels: &str) -> u64 {
        let (_, body) =
            http(hyper::Method::GET, &format!("http://127.0.0.1:{}/metrics", self.admin_port), &[], Vec::new()).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Polls a metric until it equals `want` (for up to a minute: a deadline
    /// for correctness, not speed) and returns the last value read.
    pub async fn wait_metric(&self, name_and_labels: &str, want: u64) -> u64 {
        let start = Instant::now();
        loop {
            let v = self.metric(name_and_labels).await;
            if v == want || start.elapsed() > Duration::from_secs(60) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().expect("wait")
    }
}

/// A process [`Switchyard::spawn`] started, with what it runs on.
struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    admin_port: u16,
    log: PathBuf,
    nats: Option<NatsServer>,
    log_section: String,
}

impl Drop for Switchyard {
    /// Kills the server; when the test failed, prints how it ended and the
    /// tail of its log first, so a CI failure shows the server's side.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let how = match self.child.try_wait() {
                Ok(Some(status)) => format!("had exited ({status})"),
                _ => "was still running".to_owned(),
            };
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- switchyard on port {} {how}; the last lines of its log:\n{}", self.port, tail.join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, renamed
/// over it (as editors and deploy scripts do).
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

/// Sends one HTTP request and returns the status and body.
pub async fn http(method: hyper::Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Bytes) {
    try_http(method, url, headers, body).await.expect("send request")
}

/// As [`http`], with a failure to connect or read returned, not a panic
/// (for servers a test kills).
///
/// # Errors
///
/// The connection or the body failed.
pub async fn try_http(
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// POSTs `body` as JSON to the tracking API with Basic auth for `write_key`.
pub async fn post_json(url: &str, write_key: Option<&str>, body: &Value) -> (u16, Value) {
    let auth =
        write_key.map(|k| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{k}:"))));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let (status, bytes) = http(hyper::Method::POST, url, &headers, body.to_string().into_bytes()).await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a [`Receiver`] answers: status, headers, body.
pub type Reply = (u16, Vec<(String, String)>, String);

type Script = Box<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

/// A loopback HTTP server that records every request and answers with a
/// script (given the request's index, from 0).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts a receiver answering with `script`.
    pub async fn start(script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Script> = Arc::new(Box::new(script));
        let (g, s) = (got.clone(), script.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, s) = (g.clone(), s.clone());
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let rec = Received { method, path, headers, body };
                            let index = {
                                let mut g = g.lock().expect("lock");
                                g.push(rec.clone());
                                g.len() - 1
                            };
                            let (status, headers, body) = s(index, &rec);
                            let mut resp = hyper::Response::builder().status(status);
                            for (k, v) in headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::from(body))).expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, got }
    }

    /// A receiver that answers `status` to everything.
    pub async fn always(status: u16) -> Receiver {
        Receiver::start(move |_, _| (status, vec![], String::new())).await
    }

    /// The origin, for `allow_http`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Every event received in `{"batch": [...]}` bodies, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests().iter().flat_map(|r| r.json()["batch"].as_array().cloned().unwrap_or_default()).collect()
    }

    /// The `messageId` of every event received, in arrival order.
    pub fn message_ids(&self) -> Vec<String> {
        self.events().iter().filter_map(|e| e["messageId"].as_str().map(str::to_owned)).collect()
    }

    /// How many requests so far.
    pub fn count(&self) -> usize {
        self.got.lock().expect("lock").len()
    }
}
