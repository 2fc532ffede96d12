//! Governance benchmark: what a tracking plan and destination filters cost
//! ingest. The same `/v1/batch` load (batches of 100 ~500-byte events over
//! 32 connections, durable log, webhook delivery to a loopback receiver)
//! against two servers, alternately, in one run:
//!
//! - **plain**: no plan, no filters;
//! - **governed**: a 50-rule tracking plan on the source (48 other events,
//!   the benchmark's `Product Added` with every property typed, and a
//!   common rule over the whole payload), omitting unplanned properties;
//!   three FQL filters on the destination (one of which rewrites every
//!   event: it drops `context.ip`).
//!
//! Run: `cargo bench -p switchyard --bench governance` after `./x plugins`.
//! `BENCH_SECS` sets each phase's length (default 5), `BENCH_ROUNDS` how
//! many plain/governed pairs (default 2; the best of each is reported),
//! `BENCH_GOVERNED=plan` or `filters` governs with one half alone.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use common::{Server, env_or, quantile};
use http_body_util::Full;

const CONNECTIONS: usize = 32;
const BATCH: usize = 100;

/// 50 rules: 48 events nobody sends, `Product Added` (what the load
/// sends), and a common rule.
fn plan() -> String {
    let mut rules = Vec::new();
    for i in 0..48 {
        rules.push(format!(
            r#"{{"type": "track", "key": "Event {i}", "json_schema": {{"properties": {{"properties": {{"type": "object",
                "required": ["id"], "properties": {{"id": {{"type": "string"}}, "value": {{"type": "number"}}}}}}}}}}}}"#
        ));
    }
    rules.push(
        r#"{"type": "track", "key": "Product Added", "json_schema": {"properties": {"properties": {"type": "object",
            "required": ["product_id", "sku", "price"],
            "properties": {"product_id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "sku": {"type": "string"}, "category": {"enum": ["Games", "Books", "Toys"]},
                "name": {"type": "string", "maxLength": 200}, "price": {"type": "number", "minimum": 0},
                "quantity": {"type": "integer", "minimum": 1}}}}}}"#
            .to_owned(),
    );
    rules.push(
        r#"{"type": "common", "json_schema": {"required": ["type", "messageId"], "properties": {
            "userId": {"type": ["string", "null"]},
            "context": {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"},
                "library": {"type": "object", "required": ["name"]}}}}}}"#
            .to_owned(),
    );
    format!("{{\"name\": \"bench\", \"rules\": [{}]}}", rules.join(",\n"))
}

/// Three filters; the second rewrites every event (drops `context.ip`).
const FILTERS: &str = r#"
[[destinations.filters]]
if = "type = 'track' and event = 'Order Completed'"
actions = [{ type = "drop_properties", fields = { properties = ["email"] } }]

[[destinations.filters]]
if = "match(context.library.name, 'analytics*')"
actions = [{ type = "drop_properties", fields = { context = ["ip"] } }]

[[destinations.filters]]
if = "properties.price > 1000"
actions = [{ type = "drop" }]
"#;

#[derive(Clone, Copy)]
struct Phase {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn load(addr: SocketAddr, secs: f64) -> Phase {
    let started = Instant::now();
    let mut f = common::flood_timed(addr, secs, CONNECTIONS, BATCH).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut pct = |p: f64| if f.latencies_ms.is_empty() { 0.0 } else { quantile(&mut f.latencies_ms, p) };
    let (p50_ms, p99_ms) = (pct(0.50), pct(0.99));
    Phase { events_per_sec: f.accepted as f64 / elapsed, p50_ms, p99_ms, errors: f.errors }
}

/// Runs one phase against a fresh server: `governed` or plain.
async fn phase(wasm: &std::path::Path, plan_path: &std::path::Path, governed: bool, secs: f64) -> (Phase, u64) {
    let (receiver, recv) = common::listen().await;
    let delivered = Arc::new(AtomicU64::new(0));
    tokio::spawn(common::serve(receiver, delivered.clone(), || {
        hyper::Response::new(Full::new(Bytes::from_static(br#"{"success":true}"#)))
    }));
    // BENCH_GOVERNED=plan or filters measures one half alone.
    let only = std::env::var("BENCH_GOVERNED").unwrap_or_default();
    let (with_plan, with_filters) = (governed && only != "filters", governed && only != "plan");
    let mut rest = String::new();
    if with_plan {
        let _ = writeln!(
            rest,
            "tracking_plan = \"{}\"\n[sources.schema_settings.track]\nallow_unplanned_event_properties = false",
            plan_path.display()
        );
    }
    rest.push_str(&common::webhook_destination(wasm, recv, if with_filters { FILTERS } else { "" }));
    let server = Server::start(&rest).await.unwrap_or_else(|e| panic!("switchyard did not start: {e}"));
    let result = load(server.addr, secs).await;
    server.stop().await;
    (result, delivered.load(Ordering::Relaxed))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

async fn bench() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let rounds: usize = env_or("BENCH_ROUNDS", 2);
    let wasm = common::plugin("webhook_destination");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, plan()).expect("plan");

    let (mut plain, mut governed): (Vec<Phase>, Vec<Phase>) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(phase(&wasm, &plan_path, false, secs).await.0);
        governed.push(phase(&wasm, &plan_path, true, secs).await.0);
    }
    let best = |v: &[Phase]| v.iter().copied().max_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    let (Some(p), Some(g)) = (best(&plain), best(&governed)) else { return };
    println!(
        "# governance on ingest: /v1/batch of {BATCH} × ~500-byte events, {CONNECTIONS} connections, {secs} s per phase, best of {rounds}\n"
    );
    println!("| server | accepted events/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [("plain (no plan, no filters)", &p), ("50-rule plan + 3 FQL filters", &g)] {
        println!("| {name} | {:.0} | {:.2} | {:.2} | {} |", r.events_per_sec, r.p50_ms, r.p99_ms, r.errors);
    }
    println!(
        "\ngoverned / plain: {:.3} events/s ({:.1}% cost), p99 {:.2}×",
        g.events_per_sec / p.events_per_sec,
        (1.0 - g.events_per_sec / p.events_per_sec) * 100.0,
        g.p99_ms / p.p99_ms
    );
}
