//! Isolation benchmark: does a hostile neighbour slow a healthy destination,
//! or the tracking API?
//!
//! **Throughput** (`BENCH_PART=throughput`): switchyard (in this process)
//! ingests batches of 100 ~500-byte events as fast as the load generator
//! can send them, and `good` (the webhook plugin) delivers them to a
//! loopback receiver: alone, and beside `bad`, the hostile example plugin in
//! each of its modes, with a run alone before each neighbour.
//!
//! **Ingest latency** (`BENCH_PART=latency`): the peak ingest rate is
//! measured alone, then `/v1/batch` (100 events) is sent at half of it and
//! `/v1/track` at 50 requests/s, paced, and each request's latency taken
//! from when it was due (a late send counts). Alone, and beside `bad` in
//! the modes that burn CPU, memory or wall time (`BENCH_LATENCY_MODES`,
//! default `healthy,spin,allocate,slow-response`; `healthy` is a second,
//! well-behaved webhook with the neighbour's batching: what any second
//! destination costs). Target: p99 beside any neighbour ≤ 2× alone, and
//! `good` delivering ≥ 0.9 of its rate alone.
//!
//! Each neighbour runs twice:
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
//! `BENCH_PART` picks `throughput`, `latency` or `all` (default),
//! `BENCH_SECS` sets each phase's length (default 5), `BENCH_REPEAT` the
//! rounds (default 1; medians are reported), `BENCH_CONNECTIONS` the load
//! generator's connections (default 16), `BENCH_MODES` a comma-separated
//! subset of modes for the throughput part, `BENCH_RATE` a fixed
//! events/s for the latency part instead of half the peak (to load builds
//! of different speeds alike; the peak column then shows twice it). No tracing subscriber is
//! installed, so a log-flooding neighbour costs only its rate checks here.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use common::{Drip, Paced, Server, env_or, median, percentile, plugin};
use http_body_util::Full;

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

/// `/v1/track` requests per second during the latency phases.
const TRACK_PER_SEC: f64 = 50.0;

/// Where the hostile neighbour's requests go.
struct Targets {
    drip: SocketAddr,
    giant: SocketAddr,
    /// A receiver of its own for a healthy neighbour.
    other: SocketAddr,
}

/// `bad`'s config for `mode`; mode `healthy` is a well-behaved webhook
/// with the same batching, the floor a second destination costs.
fn neighbour(mode: &str, quarantine: bool, t: &Targets) -> String {
    if mode == "healthy" {
        return format!(
            r#"
[[destinations]]
name = "bad"
plugin = "{plugin}"
settings = {{ url = "http://{other}/other" }}
allow_http = ["http://{other}"]
batch = {{ max_events = 10, linger_ms = 20 }}
"#,
            plugin = plugin("webhook_destination").display(),
            other = t.other,
        );
    }
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

/// The destinations of a phase: `good`, and `bad` if given.
fn destinations(recv: SocketAddr, bad: Option<String>) -> String {
    format!(
        r#"
[[destinations]]
name = "good"
plugin = "{webhook}"
settings = {{ url = "http://{recv}/good" }}
allow_http = ["http://{recv}"]
batch = {{ max_events = 1000, linger_ms = 50 }}
{bad}
"#,
        webhook = plugin("webhook_destination").display(),
        bad = bad.unwrap_or_default(),
    )
}

/// One throughput phase's result.
enum Phase {
    Ran { good_per_sec: f64, bad_failures: u64 },
    DidNotStart(String),
}

/// Runs switchyard with `good` (and `bad`, if given) under full load for
/// `secs`.
async fn phase(recv: SocketAddr, delivered: &AtomicU64, bad: Option<String>, secs: f64, conns: usize) -> Phase {
    let server = match Server::start(&destinations(recv, bad)).await {
        Ok(s) => s,
        Err(why) => return Phase::DidNotStart(why),
    };
    // A short warm-up, so the phase measures the steady state.
    common::flood(server.addr, 1.0, conns, BATCH).await;
    let d0 = delivered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    common::flood(server.addr, secs, conns, BATCH).await;
    let good_per_sec = (delivered.load(Ordering::Relaxed) - d0) as f64 / t0.elapsed().as_secs_f64();
    let bad_failures = server.metric("switchyard_destination_call_failures_total{destination=\"bad\"}").await;
    server.stop().await;
    Phase::Ran { good_per_sec, bad_failures }
}

/// One latency phase's result.
struct Latency {
    batch: Paced,
    track: Paced,
    good_per_sec: f64,
    bad_failures: u64,
}

/// Runs switchyard with `good` (and `bad`, if given) under paced load:
/// `batch_per_sec` batches of [`BATCH`] and [`TRACK_PER_SEC`] tracks.
async fn latency_phase(
    recv: SocketAddr,
    delivered: &AtomicU64,
    bad: Option<String>,
    secs: f64,
    batch_per_sec: f64,
) -> Result<Latency, String> {
    let server = Server::start(&destinations(recv, bad)).await?;
    let batch = || common::batch_body(BATCH);
    common::paced(server.addr, "/v1/batch", batch_per_sec, 1.0, 8, batch).await;
    let d0 = delivered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (batch, track) = tokio::join!(
        common::paced(server.addr, "/v1/batch", batch_per_sec, secs, 8, batch),
        common::paced(server.addr, "/v1/track", TRACK_PER_SEC, secs, 2, common::track_body),
    );
    let good_per_sec = (delivered.load(Ordering::Relaxed) - d0) as f64 / t0.elapsed().as_secs_f64();
    let bad_failures = server.metric("switchyard_destination_call_failures_total{destination=\"bad\"}").await;
    server.stop().await;
    Ok(Latency { batch, track, good_per_sec, bad_failures })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

/// The comma-separated list in `var`, or `default`.
fn list(var: &str, default: &[&str]) -> Vec<String> {
    std::env::var(var).map_or_else(
        |_| default.iter().map(|m| (*m).to_owned()).collect(),
        |v| v.split(',').map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect(),
    )
}

async fn bench() {
    let part: String = env_or("BENCH_PART", "all".to_owned());
    let (recv, recv_addr) = common::listen().await;
    let delivered = Arc::new(AtomicU64::new(0));
    let ok = || hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
    tokio::spawn(common::serve(recv, delivered.clone(), ok));
    let (drip, drip_addr) = common::listen().await;
    tokio::spawn(common::serve(drip, Arc::default(), || hyper::Response::new(Drip::start(3600))));
    let (giant, giant_addr) = common::listen().await;
    let giant_body = Bytes::from(vec![b'G'; 8 << 20]);
    tokio::spawn(common::serve(giant, Arc::default(), move || hyper::Response::new(Full::new(giant_body.clone()))));
    let (other, other_addr) = common::listen().await;
    tokio::spawn(common::serve(other, Arc::default(), ok));
    let targets = Targets { drip: drip_addr, giant: giant_addr, other: other_addr };
    if part == "all" || part == "throughput" {
        throughput(recv_addr, &delivered, &targets).await;
    }
    if part == "all" || part == "latency" {
        latency(recv_addr, &delivered, &targets).await;
    }
}

/// The throughput part: `good`'s delivered events/s under full load.
async fn throughput(recv_addr: SocketAddr, delivered: &AtomicU64, targets: &Targets) {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let conns: usize = env_or("BENCH_CONNECTIONS", 16);
    let repeat: usize = env_or("BENCH_REPEAT", 1usize).max(1);
    let modes = list("BENCH_MODES", &MODES);

    // Each neighbour is compared with a run alone just before it, and the
    // rounds interleave: on a shared machine the baseline drifts more than
    // a single ratio tolerates. Medians over `BENCH_REPEAT` rounds.
    let mut runs: Vec<(Vec<f64>, Vec<Phase>, Vec<Phase>)> = modes.iter().map(|_| Default::default()).collect();
    for _ in 0..repeat {
        for (mode, (alone, worst, default)) in modes.iter().zip(&mut runs) {
            if let Phase::Ran { good_per_sec, .. } = phase(recv_addr, delivered, None, secs, conns).await {
                alone.push(good_per_sec);
            }
            worst.push(phase(recv_addr, delivered, Some(neighbour(mode, false, targets)), secs, conns).await);
            default.push(phase(recv_addr, delivered, Some(neighbour(mode, true, targets)), secs, conns).await);
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

/// The latency part: ingest latency at half the peak rate, and `good`'s
/// delivered events/s, alone and beside each neighbour.
async fn latency(recv_addr: SocketAddr, delivered: &AtomicU64, targets: &Targets) {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let conns: usize = env_or("BENCH_CONNECTIONS", 16);
    let repeat: usize = env_or("BENCH_REPEAT", 1usize).max(1);
    let modes = list("BENCH_LATENCY_MODES", &["healthy", "spin", "allocate", "slow-response"]);

    // `BENCH_RATE` (events/s) fixes the rate instead of half this build's
    // peak, so that builds of different speeds are loaded alike.
    let fixed: Option<f64> = std::env::var("BENCH_RATE").ok().and_then(|v| v.parse().ok());
    let peak = match fixed {
        Some(rate) => rate * 2.0,
        None => match Server::start(&destinations(recv_addr, None)).await {
            Ok(server) => {
                common::flood(server.addr, 1.0, conns, BATCH).await;
                let t0 = Instant::now();
                let accepted = common::flood(server.addr, secs, conns, BATCH).await;
                server.stop().await;
                accepted as f64 / t0.elapsed().as_secs_f64()
            }
            Err(why) => {
                println!("host did not start: {why}");
                return;
            }
        },
    };
    let batch_per_sec = peak / 2.0 / BATCH as f64;

    struct Row {
        label: String,
        runs: Vec<Latency>,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut alone = Row { label: "alone".into(), runs: Vec::new() };
    for _ in 0..repeat {
        for (m, mode) in modes.iter().enumerate() {
            let phases = [(format!("{mode}, never quarantined"), false), (format!("{mode}, default quarantine"), true)];
            if let Ok(l) = latency_phase(recv_addr, delivered, None, secs, batch_per_sec).await {
                alone.runs.push(l);
            }
            for (p, (label, quarantine)) in phases.into_iter().enumerate() {
                let bad = Some(neighbour(mode, quarantine, targets));
                match latency_phase(recv_addr, delivered, bad, secs, batch_per_sec).await {
                    Ok(l) => match rows.get_mut(m * 2 + p) {
                        Some(row) => row.runs.push(l),
                        None => rows.push(Row { label, runs: vec![l] }),
                    },
                    Err(why) => println!("host did not start beside {label}: {why}"),
                }
            }
        }
    }

    /// Medians over the runs of a row: batch p50, p99, track p50, p99,
    /// good's events/s, bad's failed calls, requests failed or never sent.
    fn stats(runs: &[Latency]) -> [f64; 7] {
        let mut cols: [Vec<f64>; 7] = Default::default();
        for l in runs {
            let (mut b, mut t) = (l.batch.latencies_ms.clone(), l.track.latencies_ms.clone());
            cols[0].push(percentile(&mut b, 50.0));
            cols[1].push(percentile(&mut b, 99.0));
            cols[2].push(percentile(&mut t, 50.0));
            cols[3].push(percentile(&mut t, 99.0));
            cols[4].push(l.good_per_sec);
            cols[5].push(l.bad_failures as f64);
            cols[6].push((l.batch.failed + l.track.failed + l.batch.missed + l.track.missed) as f64);
        }
        cols.map(|mut c| median(&mut c))
    }
    println!(
        "\n# ingest latency: /v1/batch ({BATCH} events) at half the peak ({:.0} events/s of {peak:.0}) \
         and /v1/track at {TRACK_PER_SEC:.0}/s, latency from when each request was due; \
         {secs} s per phase, median of {repeat} round(s), {} cores; RSS at the end {:.0} MB\n",
        peak / 2.0,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        common::rss_mb(),
    );
    println!(
        "| phase | batch p50 ms | batch p99 ms | p99 / alone | track p50 ms | track p99 ms | p99 / alone \
         | good events/s | / alone | bad's failed calls | requests failed or unsent |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = stats(&alone.runs);
    let flag = |ratio: f64, bad: bool| if bad { format!("{ratio:.2} ⚠") } else { format!("{ratio:.2}") };
    for row in std::iter::once(&alone).chain(&rows) {
        let s = stats(&row.runs);
        let (rb, rt, rg) = (s[1] / base[1], s[3] / base[3], s[4] / base[4]);
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {:.0} | {} | {:.0} | {:.0} |",
            row.label,
            s[0],
            s[1],
            flag(rb, rb > 2.0),
            s[2],
            s[3],
            flag(rt, rt > 2.0),
            s[4],
            flag(rg, rg < 0.9),
            s[5],
            s[6],
        );
    }
}
