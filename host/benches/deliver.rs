//! Plugin-call benchmark: events/s through `deliver()` for the webhook
//! example and the Amplitude and Statsig destinations, each compiled to Wasm
//! (through the real host runtime) against the same crate compiled natively
//! (through the SDK's native harness), plus
//! instantiate cost with and without the pooling allocator, the cost of a
//! fresh store per call, and load time with and without the compiled cache.
//!
//! Run: `./x bench` (or `cargo bench -p switchyard --bench deliver` after
//! `./x plugins`). HTTP is answered in-process on both sides, so this
//! measures the plugin call, not the network.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use switchyard::normalize::{BatchMeta, Envelope, normalize};
use switchyard_plugin_sdk::Destination;
use switchyard_plugin_sdk::http::Response;
use switchyard_plugin_sdk::testing::Harness;
use switchyard_runtime::capabilities::Caller;
use switchyard_runtime::capabilities::http::{HttpCtx, HttpPolicy, Origin, Transport, TransportFuture};
use switchyard_runtime::capabilities::log::LogCtx;
use switchyard_runtime::capabilities::warehouse::WarehouseCtx;
use switchyard_runtime::redact::Redactor;
use switchyard_runtime::{Grants, Outcome, Runtime, RuntimeOptions};
use webhook_destination::Webhook;

/// Answers 200 at once.
struct Ok200;

impl Transport for Ok200 {
    fn send(&self, _req: hyper::Request<Full<Bytes>>, _max: usize) -> TransportFuture {
        Box::pin(async { Ok(hyper::Response::builder().status(200).body(Bytes::new()).expect("response")) })
    }
}

/// A ~500-byte track event, normalized as the host would.
fn events(n: usize) -> Vec<Arc<Envelope>> {
    let source: Arc<str> = Arc::from("web");
    (0..n)
        .map(|i| {
            let v = json!({
                "type": "track", "event": "Product Added", "userId": format!("user-{i:06}"),
                "anonymousId": "4d2c7a0e-1f7b-4c57-9d2b-0a6f3c1e9b11", "messageId": format!("msg-{i:08}"),
                "timestamp": "2024-05-01T12:00:00.000Z",
                "properties": {"product_id": "507f1f77bcf86cd799439011", "sku": "G-32", "category": "Games",
                               "name": "Monopoly: 3rd Edition", "price": 18.99, "quantity": 1},
                "context": {"ip": "203.0.113.7", "library": {"name": "analytics.js", "version": "2.11.1"},
                            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"}
            });
            Arc::new(
                normalize(&v.to_string(), None, &BatchMeta::default(), chrono::Utc::now(), &source).expect("valid"),
            )
        })
        .collect()
}

fn grants() -> Arc<Grants> {
    Arc::new(Grants {
        caller: Caller { name: Arc::from("bench"), redactor: Redactor::default() },
        http: HttpCtx::new(
            HttpPolicy {
                allow: vec![Origin::parse("http://127.0.0.1:1").expect("origin")],
                timeout: Duration::from_secs(5),
                max_response_bytes: 1 << 20,
            },
            Arc::new(Ok200),
            None,
        ),
        log: LogCtx::unlimited(),
        warehouse: WarehouseCtx::default(),
        memory_bytes: 256 << 20,
        cpu_ticks: 1000,
        call_timeout: Duration::from_secs(30),
    })
}

/// Runs `f` (which processes `per_call` events) for about `budget`, returns
/// events/s.
async fn rate<F, Fut>(per_call: usize, budget: Duration, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..3 {
        f().await;
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        f().await;
        calls += 1;
    }
    (calls as f64 * per_call as f64) / start.elapsed().as_secs_f64()
}

/// Median of `f`'s duration over `n` runs, µs.
async fn median_us<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f().await.as_secs_f64() * 1e6);
    }
    common::quantile(&mut v, 0.5)
}

fn runtime(pooling: bool, cache: &std::path::Path) -> Runtime {
    sandboxed_runtime(pooling, true, cache)
}

fn sandboxed_runtime(pooling: bool, epoch_interruption: bool, cache: &std::path::Path) -> Runtime {
    Runtime::new(&RuntimeOptions {
        cache_dir: cache.to_owned(),
        max_instances: 16,
        max_memory_bytes: 256 << 20,
        pooling,
        epoch_interruption,
        keep_resident_bytes: 16 << 20,
        perf_map: std::env::var_os("SWITCHYARD_PERF_MAP").is_some_and(|v| v == "1"),
    })
    .expect("runtime")
}

/// Wasm events/s of `deliver(batch)` on a fresh instance of `wasm_name`.
async fn wasm_rate(
    runtime: &Runtime,
    wasm_name: &str,
    settings: &serde_json::Value,
    n: usize,
    budget: Duration,
) -> f64 {
    let wasm = common::plugin(wasm_name);
    let plugin = runtime.load(&wasm).expect("load");
    let mut instance = plugin.instantiate(grants()).await.expect("instantiate");
    instance.init(&settings.to_string()).await.expect("init");
    let batch = events(n);
    for _ in 0..3 {
        instance.deliver(&batch).await.expect("deliver");
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        let out = instance.deliver(&batch).await.expect("deliver");
        assert!(out.iter().all(|o| matches!(o, Outcome::Delivered)));
        calls += 1;
    }
    (calls as f64 * n as f64) / start.elapsed().as_secs_f64()
}

/// What the sandbox's CPU quota costs a healthy plugin: the same calls with
/// and without epoch interruption (memory limits cost nothing per call: the
/// limiter runs only when memory grows).
async fn sandbox_cost(cache: &std::path::Path, budget: Duration) {
    let with = sandboxed_runtime(true, true, cache);
    let without = sandboxed_runtime(true, false, cache);
    println!("# sandbox cost: deliver(100) events/s with and without epoch interruption\n");
    println!("| plugin | with epochs | without | with / without |");
    println!("|---|---:|---:|---:|");
    let plugins = [
        ("webhook", "webhook_destination", json!({"url": "http://127.0.0.1:1/hook"})),
        (
            "amplitude",
            "amplitude_destination",
            json!({"api_key": "bench-api-key-0001", "endpoint": "http://127.0.0.1:1"}),
        ),
        (
            "statsig",
            "statsig_destination",
            json!({"server_secret": "secret-bench-0001", "endpoint": "http://127.0.0.1:1"}),
        ),
    ];
    for (label, wasm, settings) in plugins {
        let a = wasm_rate(&with, wasm, &settings, 100, budget).await;
        let b = wasm_rate(&without, wasm, &settings, 100, budget).await;
        println!("| {label} | {a:.0} | {b:.0} | {:.2} |", a / b);
    }
    println!();
}

/// Prints events/s through `deliver()` of plugin `D`, natively and as the
/// Wasm `target/wasm32-wasip2/plugin/{wasm_name}.wasm`, for batches of 1 to
/// 1000 events. Every call must deliver every event (HTTP answers 200), so
/// the numbers are of the success path.
async fn compare<D: Destination>(
    runtime: &Runtime,
    label: &str,
    wasm_name: &str,
    settings: serde_json::Value,
    size: usize,
    budget: Duration,
) {
    let wasm = common::plugin(wasm_name);
    assert!(wasm.exists(), "build the plugins first: ./x plugins");
    println!("# deliver() throughput — {label}, {size}-byte track events, HTTP answered in-process\n");
    println!("| batch | native events/s | Wasm events/s | Wasm time / native time |");
    println!("|---:|---:|---:|---:|");
    let plugin = runtime.load(&wasm).expect("load");
    let mut instance = plugin.instantiate(grants()).await.expect("instantiate");
    instance.init(&settings.to_string()).await.expect("init");
    let mut native = match Harness::<D>::new(settings) {
        Ok(h) => h,
        Err(e) => panic!("native init: {e}"),
    };
    native.respond(|_| Ok(Response::new(200, "")));
    native.set_recording(false);

    for n in [1usize, 10, 100, 1000] {
        let batch = events(n);
        let sdk_batch: Vec<switchyard_plugin_sdk::Event> =
            batch.iter().map(|e| switchyard_plugin_sdk::Event::from_segment_json(&e.json).expect("event")).collect();
        let out = native.deliver(sdk_batch.clone());
        assert!(out.iter().all(|o| *o == switchyard_plugin_sdk::Outcome::Delivered), "native: {:?}", out.first());
        let out = instance.deliver(&batch).await.expect("deliver");
        assert!(out.iter().all(|o| matches!(o, Outcome::Delivered)), "Wasm: {:?}", out.first());
        let native_rate = rate(n, budget, || {
            let out = native.deliver(sdk_batch.clone());
            assert_eq!(out.len(), n);
            async {}
        })
        .await;
        let wasm_rate = {
            for _ in 0..3 {
                instance.deliver(&batch).await.expect("deliver");
            }
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < budget {
                let out = instance.deliver(&batch).await.expect("deliver");
                assert_eq!(out.len(), n);
                calls += 1;
            }
            (calls as f64 * n as f64) / start.elapsed().as_secs_f64()
        };
        println!("| {n} | {native_rate:.0} | {wasm_rate:.0} | {:.2}× |", native_rate / wasm_rate);
    }
    println!();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

async fn bench() {
    let wasm = common::plugin("webhook_destination");
    assert!(wasm.exists(), "build the plugins first: ./x plugins");
    let cache = tempfile::tempdir().expect("tempdir");
    let settings = r#"{"url":"http://127.0.0.1:1/hook"}"#;
    let budget = Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500));
    let size = events(1)[0].json.len();
    let pooled = runtime(true, cache.path());
    let plugin = pooled.load(&wasm).expect("load");
    let mut instance = plugin.instantiate(grants()).await.expect("instantiate");
    instance.init(settings).await.expect("init");

    // BENCH_ONLY=amplitude (a part of a plugin's label) runs that plugin's
    // throughput table alone: what to profile one plugin with.
    let only = std::env::var("BENCH_ONLY").ok().map(|s| s.to_ascii_lowercase());
    let wanted = |label: &str| only.as_ref().is_none_or(|o| label.to_ascii_lowercase().contains(o.as_str()));
    if wanted("webhook example") {
        compare::<Webhook>(
            &pooled,
            "webhook example",
            "webhook_destination",
            json!({"url": "http://127.0.0.1:1/hook"}),
            size,
            budget,
        )
        .await;
    }
    // The vendors' mappings: each event is parsed, mapped and re-serialized,
    // where the webhook splices the JSON through untouched.
    if wanted("Amplitude (HTTP V2 mapping)") {
        compare::<amplitude_destination::Amplitude>(
            &pooled,
            "Amplitude (HTTP V2 mapping)",
            "amplitude_destination",
            json!({"api_key": "bench-api-key-0001", "endpoint": "http://127.0.0.1:1"}),
            size,
            budget,
        )
        .await;
    }
    if wanted("Statsig (log_event mapping)") {
        compare::<statsig_destination::Statsig>(
            &pooled,
            "Statsig (log_event mapping)",
            "statsig_destination",
            json!({"server_secret": "secret-bench-0001", "endpoint": "http://127.0.0.1:1"}),
            size,
            budget,
        )
        .await;
    }
    if only.is_some() {
        return;
    }

    sandbox_cost(cache.path(), budget).await;

    println!("\n# instance lifecycle (median of 2000, µs)\n");
    println!("| step | pooling allocator | on-demand allocator |");
    println!("|---|---:|---:|");
    let ondemand = runtime(false, cache.path());
    let plugin_od = ondemand.load(&wasm).expect("load");
    let mut rows = Vec::new();
    for p in [&plugin, &plugin_od] {
        let inst = median_us(2000, || async {
            let t = Instant::now();
            let i = p.instantiate(grants()).await.expect("instantiate");
            let d = t.elapsed();
            drop(i);
            d
        })
        .await;
        let init = median_us(2000, || async {
            let mut i = p.instantiate(grants()).await.expect("instantiate");
            let t = Instant::now();
            i.init(settings).await.expect("init");
            t.elapsed()
        })
        .await;
        let per_call = median_us(2000, || async {
            let batch = events(100);
            let t = Instant::now();
            let mut i = p.instantiate(grants()).await.expect("instantiate");
            i.init(settings).await.expect("init");
            i.deliver(&batch).await.expect("deliver");
            drop(i);
            t.elapsed()
        })
        .await;
        rows.push((inst, init, per_call));
    }
    println!("| instantiate | {:.1} | {:.1} |", rows[0].0, rows[1].0);
    println!("| init() | {:.1} | {:.1} |", rows[0].1, rows[1].1);
    println!(
        "| fresh store per call: instantiate + init + deliver(100) + drop | {:.1} | {:.1} |",
        rows[0].2, rows[1].2
    );
    let batch = events(100);
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        instance.deliver(&batch).await.expect("deliver");
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let reuse = samples[samples.len() / 2];
    println!("| reused instance: deliver(100) | {reuse:.1} | |");

    println!("\n# plugin load ({} KB .wasm)\n", std::fs::metadata(&wasm).map(|m| m.len() / 1024).unwrap_or(0));
    let bytes = std::fs::read(&wasm).expect("read");
    let compile = median_us(5, || async {
        let t = Instant::now();
        pooled.compile_uncached(&bytes).expect("compile");
        t.elapsed()
    })
    .await;
    let cached = median_us(50, || async {
        let t = Instant::now();
        pooled.load(&wasm).expect("load");
        t.elapsed()
    })
    .await;
    println!("| compile (Cranelift, no cache) | {:.1} ms |", compile / 1000.0);
    println!("| load from the compiled cache (hash + deserialize + link) | {:.2} ms |", cached / 1000.0);
}
