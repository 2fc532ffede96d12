//! A hostile or broken plugin cannot hurt the host, the other destinations,
//! or the data.
//!
//! Each test runs the real binary with two destinations: `good` (the
//! webhook plugin, to a loopback receiver) and `bad` (the hostile example
//! plugin in one mode, with small quotas). For every mode it checks that
//!
//! - (a) the host stays up: a later POST is accepted and `/health` answers;
//! - (b) `good` receives every event;
//! - (c) `bad` is quarantined, visibly: the gauge, a `destination
//!   quarantined` log line naming the problem, `GET /admin/destinations`
//!   and `switchyard status`;
//! - (d) none of `bad`'s events is lost: nothing is dead-lettered and all
//!   of them wait in the log (its backlog). For `spin` and `panic` the
//!   strongest form: kill the host, switch `bad` to the webhook plugin
//!   (same name, so the same cursor), restart, and see every event arrive.
//!
//! Deadlines are generous: they bound correctness, never speed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchyard_tests::{Config, Drip, Receiver, Switchyard, binary, eventually, http, plugin, post_json};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "h0stile-admin";
/// Events sent in the first batch; one more follows once `bad` is quarantined.
const N: usize = 20;

/// The small quotas `bad` runs under, so breaches come quickly.
const QUOTA: &str = "quota = { memory_mb = 16, cpu_ms_per_call = 200, call_timeout_ms = 2000, http_timeout_ms = 500, \
                     http_max_response_bytes = 65536, log_lines_per_second = 50 }";
/// The panic message of the hostile plugin's `panic` and `init-panic` modes
/// (`hostile_destination::PANIC_MESSAGE`).
const PANIC_MESSAGE: &str = "hostile plugin panicked on purpose";
/// Two failed calls quarantine `bad`, and no probe comes during a test.
const QUARANTINE: &str = "quarantine = { after_failures = 2, initial_ms = 60000 }";

/// The config head and `good`.
fn head(good: &Receiver) -> Config {
    Config::new().admin(TOKEN).source("web", "wk_test").webhook(
        "good",
        &format!("{}/good", good.origin()),
        "batch = { max_events = 10, linger_ms = 20 }",
    )
}

/// `cfg` with `bad` as the hostile plugin in `mode`.
fn hostile(cfg: Config, mode: &str, url: Option<&str>, allow_http: &[String], extra: &str) -> String {
    let url = url.map(|u| format!(", url = \"{u}\"")).unwrap_or_default();
    let allow: Vec<String> = allow_http.iter().map(|o| format!("\"{o}\"")).collect();
    let lines = format!(
        r#"
settings = {{ mode = "{mode}"{url} }}
allow_http = [{allow}]
batch = {{ max_events = 5, linger_ms = 20 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500, max_retry_after_ms = 500 }}
{extra}
"#,
        allow = allow.join(", "),
    );
    cfg.destination("bad", plugin("hostile_destination"), &lines).build()
}

/// One hostile mode and how its failure must be reported.
struct Case<'a> {
    mode: &'a str,
    url: Option<String>,
    allow_http: Vec<String>,
    /// The `quota` label of the breach, when it is one (a trap is not).
    quota: Option<&'a str>,
    /// What the quarantine reason must say (any one of these).
    reason: &'a [&'a str],
}

impl<'a> Case<'a> {
    fn new(mode: &'a str, quota: Option<&'a str>, reason: &'a [&'a str]) -> Self {
        Case { mode, url: None, allow_http: Vec::new(), quota, reason }
    }

    fn calling(mut self, url: String, allow_http: Vec<String>) -> Self {
        self.url = Some(url);
        self.allow_http = allow_http;
        self
    }
}

/// A host whose `bad` destination has been shown contained.
struct Contained {
    sy: Switchyard,
    good: Receiver,
    /// Every event sent, in order.
    ids: Vec<String>,
}

fn metric(name: &str, dest: &str) -> String {
    format!("{name}{{destination=\"{dest}\"}}")
}

fn breaches(dest: &str, kind: &str) -> String {
    format!("switchyard_destination_quota_breaches_total{{destination=\"{dest}\",quota=\"{kind}\"}}")
}

/// Polls a metric until it is at least `min`; returns the last value.
async fn wait_at_least(sy: &Switchyard, name: &str, min: u64) -> u64 {
    let start = Instant::now();
    loop {
        let v = sy.metric(name).await;
        if v >= min || start.elapsed() > WAIT {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events(prefix: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| json!({"type": "track", "event": "Hostile", "userId": "u", "messageId": format!("{prefix}-{i}")}))
        .collect()
}

async fn admin_destination(sy: &Switchyard, name: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (code, body) =
        http(hyper::Method::GET, &sy.admin_url("/admin/destinations"), &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["destinations"].as_array().unwrap().iter().find(|d| d["name"] == name).cloned().unwrap_or(Value::Null)
}

/// Starts the host with `good` and `bad` in `case.mode`, sends events and
/// checks (a) to (d) above, (d) by the backlog.
async fn contained(case: Case<'_>) -> Contained {
    let good = Receiver::always(200).await;
    let extra = format!("{QUOTA}\n{QUARANTINE}");
    let cfg = hostile(head(&good), case.mode, case.url.as_deref(), &case.allow_http, &extra);
    let sy = Switchyard::start(&cfg).await;
    let prefix = case.mode;
    let mut ids: Vec<String> = (0..N).map(|i| format!("{prefix}-{i}")).collect();
    let (status, _) = post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": events(prefix, 0..N) })).await;
    assert_eq!(status, 200);

    // (c) quarantined, and for the right reason.
    let q = sy.wait_metric(&metric("switchyard_destination_quarantined", "bad"), 1).await;
    assert_eq!(q, 1, "`bad` ({}) was not quarantined:\n{}", case.mode, sy.logs());
    let failures = sy.metric(&metric("switchyard_destination_call_failures_total", "bad")).await;
    assert!(failures >= 2, "quarantined after {failures} failed calls");
    if let Some(kind) = case.quota {
        let n = sy.metric(&breaches("bad", kind)).await;
        assert!(n >= 1, "no `{kind}` breach counted:\n{}", sy.logs());
    }
    let logs = sy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("destination quarantined") && l.contains("destination=\"bad\""))
        .unwrap_or_else(|| panic!("no quarantine log line:\n{logs}"));
    let says = |text: &str| case.reason.iter().any(|r| text.contains(r));
    assert!(says(line), "the log line does not say {:?}: {line}", case.reason);
    let bad = admin_destination(&sy, "bad").await;
    assert_eq!(bad["state"], "quarantined", "{bad}");
    let reason = bad["reason"].as_str().unwrap_or_default();
    assert!(says(reason), "the admin API's reason does not say {:?}: {bad}", case.reason);

    // (a) the host is up and still takes events.
    let late = format!("{prefix}-late");
    let (status, body) = post_json(
        &sy.url("/v1/track"),
        Some("wk_test"),
        &json!({"userId": "u", "event": "Hostile", "messageId": late}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    ids.push(late);
    let (code, _) = http(hyper::Method::GET, &sy.admin_url("/health"), &[], Vec::new()).await;
    assert_eq!(code, 200);

    // (b) the healthy neighbour gets everything.
    eventually(WAIT, "`good` receives every event", || {
        let got = good.message_ids();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    let good_state = admin_destination(&sy, "good").await;
    assert_eq!(good_state["state"], "active", "{good_state}");

    // (d) nothing of `bad`'s is lost: no dead letters, all waiting in the log.
    assert_eq!(sy.metric(&metric("switchyard_destination_dead_lettered_total", "bad")).await, 0);
    assert_eq!(sy.metric(&metric("switchyard_destination_delivered_total", "bad")).await, 0);
    let bad = admin_destination(&sy, "bad").await;
    assert_eq!(bad["backlog"], ids.len(), "every event waits in the log: {bad}");
    assert_eq!(bad["dead_lettered"], 0, "{bad}");

    // `switchyard status` shows the same.
    let out = std::process::Command::new(binary())
        .args(["status", "--config"])
        .arg(sy.dir.path().join("switchyard.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = stdout.lines().find(|l| l.starts_with("bad ")).unwrap_or_else(|| panic!("no `bad` row:\n{stdout}"));
    assert!(row.contains("quarantined") && says(row), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("good ")).unwrap_or_else(|| panic!("no `good` row:\n{stdout}"));
    assert!(row.contains("active"), "{stdout}");

    Contained { sy, good, ids }
}

/// The strongest form of (d): kill the host, replace `bad`'s plugin with the
/// webhook (same name, so the same cursor), restart, and expect every one
/// of its events to arrive exactly where the webhook sends them.
async fn rescue(c: Contained) {
    let Contained { mut sy, good, ids } = c;
    sy.kill9();
    let rescue = Receiver::always(200).await;
    let cfg = head(&good).webhook("bad", &format!("{}/rescued", rescue.origin()), "");
    sy.rewrite_config(&cfg.build());
    sy.restart().await;
    eventually(WAIT, "every event of `bad` arrives once its plugin is fixed", || {
        let got = rescue.message_ids();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    let delivered = sy.wait_metric(&metric("switchyard_destination_delivered_total", "bad"), ids.len() as u64).await;
    assert_eq!(delivered, ids.len() as u64, "{}", sy.logs());
    assert_eq!(sy.metric(&metric("switchyard_destination_dead_lettered_total", "bad")).await, 0);
    assert_eq!(sy.metric(&metric("switchyard_destination_quarantined", "bad")).await, 0);
    // The cursor is saved just after the outcomes count: poll for it.
    let start = Instant::now();
    loop {
        let bad = admin_destination(&sy, "bad").await;
        if (bad["state"].as_str(), bad["backlog"].as_u64()) == (Some("active"), Some(0)) {
            break;
        }
        assert!(start.elapsed() < WAIT, "`bad` is not active with an empty backlog: {bad}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn spin_is_stopped_by_the_cpu_limit() {
    let c = contained(Case::new("spin", Some("cpu"), &["CPU time limit exceeded"])).await;
    rescue(c).await;
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    contained(Case::new("allocate", Some("memory"), &["memory limit exceeded"])).await;
}

/// Rust's usual stack overflow on wasm32: its shadow stack, in linear
/// memory below the data, wraps below address 0 and the access traps. The
/// engine reports an out-of-bounds access (it cannot tell it was the stack);
/// a host that recognises the case may name it.
#[tokio::test]
async fn stack_overflow_traps() {
    contained(Case::new("stack-overflow", None, &["stack", "out of bounds memory access"])).await;
}

/// Recursion that exhausts the engine's own wasm call stack.
#[tokio::test]
async fn call_stack_overflow_traps() {
    contained(Case::new("call-stack-overflow", None, &["call stack exhausted"])).await;
}

#[tokio::test]
async fn panic_traps_with_its_message() {
    let c = contained(Case::new("panic", None, &[PANIC_MESSAGE])).await;
    rescue(c).await;
}

#[tokio::test]
async fn init_panic_keeps_the_destination_from_starting() {
    contained(Case::new("init-panic", None, &[PANIC_MESSAGE])).await;
}

#[tokio::test]
async fn forbidden_host_never_leaves_the_host() {
    let forbidden = Receiver::always(200).await;
    let url = format!("{}/exfiltrate", forbidden.origin());
    let c =
        contained(Case::new("forbidden-host", Some("http_origin"), &["not in allow_http"]).calling(url, vec![])).await;
    assert_eq!(forbidden.count(), 0, "the request must never leave the host");
    // The plugin claimed `Delivered` after the refused request; the call
    // failed instead, so nothing counts as delivered.
    assert_eq!(c.sy.metric(&metric("switchyard_destination_delivered_total", "bad")).await, 0);
}

#[tokio::test]
async fn slow_response_breaches_the_http_timeout() {
    let (addr, hits) = serve(|| hyper::Response::new(Drip::start(1_000))).await;
    let origin = format!("http://{addr}");
    let case = Case::new("slow-response", Some("http_timeout"), &["http_timeout_ms"])
        .calling(format!("{origin}/slow"), vec![origin]);
    contained(case).await;
    assert!(hits.load(Ordering::SeqCst) >= 1, "the plugin reached the dripping server");
}

#[tokio::test]
async fn giant_response_breaches_the_response_cap() {
    let giant = Bytes::from(vec![b'G'; 8 * 1024 * 1024]);
    let (addr, hits) = serve(move || hyper::Response::new(Full::new(giant.clone()))).await;
    let origin = format!("http://{addr}");
    let case = Case::new("giant-response", Some("http_response_size"), &["http_max_response_bytes"])
        .calling(format!("{origin}/giant"), vec![origin]);
    contained(case).await;
    assert!(hits.load(Ordering::SeqCst) >= 1, "the plugin reached the giant server");
}

#[tokio::test]
async fn log_flood_breaches_the_log_rate() {
    let started = Instant::now();
    let c = contained(Case::new("log-flood", Some("log_rate"), &["log_lines_per_second"])).await;
    // At 50 lines/s with a one-second bucket, no more than 50 × (t + 1)
    // lines can reach the log in t seconds (the plugin tried 5000 a call).
    let flood = c.sy.logs().lines().filter(|l| l.contains("hostile log flood")).count();
    let bound = (50.0 * (started.elapsed().as_secs_f64() + 1.0)).ceil() as usize;
    assert!(flood <= bound, "{flood} flood lines reached the log in {:?}", started.elapsed());
    assert!(flood >= 1, "the first lines within the quota are logged");
}

#[tokio::test]
async fn wrong_outcome_count_fails_the_call() {
    contained(Case::new("wrong-count", Some("outcome_count"), &["outcomes for"])).await;
}

/// Megabytes of outcome reasons fail the call (`outcome_size`), so a plugin
/// flooding the host with text is quarantined like any other offender, and
/// none of its text reaches the log.
#[tokio::test]
async fn garbage_outcomes_breach_the_outcome_size_cap() {
    let c = contained(Case::new("garbage", Some("outcome_size"), &["bytes of outcome reasons"])).await;
    let logs = c.sy.logs();
    assert!(!logs.contains("garbage ZZZ"), "a garbage reason reached the log");
    assert!(logs.len() < 1024 * 1024, "the log grew to {} bytes", logs.len());
}

/// A requested delay is not a failure, but it is capped at the retry
/// config's `max_retry_after_ms` (500 ms here), so events asked back in
/// `u64::MAX` ms are tried again soon, and none is dead-lettered.
#[tokio::test]
async fn retry_forever_delay_is_capped() {
    let good = Receiver::always(200).await;
    let cfg = hostile(head(&good), "retry-forever", None, &[], QUARANTINE);
    let sy = Switchyard::start(&cfg).await;
    let n = 5;
    let (status, _) =
        post_json(&sy.url("/v1/batch"), Some("wk_test"), &json!({ "batch": events("forever", 0..n) })).await;
    assert_eq!(status, 200);
    let retried = wait_at_least(&sy, &metric("switchyard_destination_retried_total", "bad"), 2 * n as u64).await;
    assert!(
        retried >= 2 * n as u64,
        "after_ms = u64::MAX was not capped at max_retry_after_ms (500 ms): {retried} retries of {n} events in {WAIT:?}"
    );
    // Retries are outcomes, not failed calls: no quarantine, nothing lost.
    assert_eq!(sy.metric(&metric("switchyard_destination_call_failures_total", "bad")).await, 0);
    assert_eq!(sy.metric(&metric("switchyard_destination_quarantined", "bad")).await, 0);
    assert_eq!(sy.metric(&metric("switchyard_destination_dead_lettered_total", "bad")).await, 0);
    let bad = admin_destination(&sy, "bad").await;
    assert_eq!(bad["state"], "active", "{bad}");
    assert_eq!(bad["backlog"], n, "the events wait in the log: {bad}");
    let ids: Vec<String> = (0..n).map(|i| format!("forever-{i}")).collect();
    eventually(WAIT, "`good` receives every event", || {
        let got = good.message_ids();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
}

/// A loopback HTTP server answering every request with `respond()`, and a
/// count of the requests it got.
async fn serve<B>(respond: impl Fn() -> hyper::Response<B> + Send + Sync + 'static) -> (SocketAddr, Arc<AtomicUsize>)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let respond = Arc::new(respond);
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (h, respond) = (h.clone(), respond.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (h, respond) = (h.clone(), respond.clone());
                    async move {
                        let _ = req.into_body().collect().await;
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(respond())
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, hits)
}
