//! Warehouse benchmark: rows/s loaded into PostgreSQL and the embedded
//! SQLite backend, at batches of 100 and 1000 events.
//!
//! Each batch is mapped by the warehouse plugin's own mapping (natively,
//! `warehouse_destination::plan`) from Segment track events with a dozen
//! properties and a context, so a batch of N events is 2N rows (`tracks`
//! and the event's table), and loaded by the host's backend in one
//! transaction, as the `warehouse` capability does. Message ids never
//! repeat, so every row is inserted (a redelivered batch costs less).
//!
//! Run: `cargo bench -p switchyard --bench warehouse` (PostgreSQL at
//! 127.0.0.1:5432 with trust auth; a throwaway database is created and
//! dropped). `BENCH_SECS` per configuration, default 3.

mod common;

use std::time::{Duration, Instant};

use common::env_or;
use serde_json::json;
use switchyard_warehouse::{LoadPlan, Warehouse};

/// A plan for `n` events starting at id `first`, through the plugin's
/// mapping (the host loads the same types).
fn plan(first: usize, n: usize) -> LoadPlan {
    let events: Vec<_> = (first..first + n)
        .map(|i| {
            switchyard_plugin_sdk::testing::event(json!({
                "type": "track", "event": "Order Completed", "messageId": format!("m-{i}"),
                "userId": format!("u-{}", i % 5000), "anonymousId": format!("a-{i}"),
                "timestamp": "2026-11-29T10:00:00.123Z", "sentAt": "2026-11-29T10:00:01Z",
                "receivedAt": "2026-11-29T10:00:01.5Z",
                "context": {"app": {"version": "3.4.5", "build": "512"}, "locale": "en-GB",
                            "device": {"type": "ios", "model": "iPhone16,1"}, "ip": "203.0.113.7"},
                "properties": {"orderId": format!("o-{i}"), "revenue": 42.5, "currency": "EUR",
                               "items": 3, "coupon": "WINTER", "shipping": {"method": "express", "cost": 4.9},
                               "giftWrap": false, "categories": ["books", "music"]}
            }))
        })
        .collect();
    let (p, unmapped) = warehouse_destination::plan_at("bench", &events, "2026-11-29T10:00:02Z");
    assert!(unmapped.is_empty());
    LoadPlan { schema: p.schema, tables: p.tables.into_iter().map(|t| t.load).collect() }
}

struct Result {
    events_per_sec: f64,
    rows_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(w: &Warehouse, batch: usize, secs: f64, next: &mut usize) -> Result {
    // The first load creates the tables; it is not measured.
    w.load(&plan(*next, batch)).await.expect("first load");
    *next += batch;
    // Plans are mapped between loads; only the loads are timed.
    let mut lat = Vec::new();
    let mut rows = 0u64;
    let mut loading = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let p = plan(*next, batch);
        *next += batch;
        let t = Instant::now();
        let r = w.load(&p).await.expect("load");
        let took = t.elapsed();
        loading += took;
        lat.push(took.as_secs_f64() * 1e3);
        rows += r.inserted;
    }
    let elapsed = loading.as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Result {
        events_per_sec: (lat.len() * batch) as f64 / elapsed,
        rows_per_sec: rows as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(bench());
}

async fn bench() {
    let secs: f64 = env_or("BENCH_SECS", 3.0);
    let (admin, conn) =
        tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
    tokio::spawn(conn);
    let db = format!("sy_bench_{}", std::process::id());
    admin.execute(&format!("CREATE DATABASE {db}"), &[]).await.expect("create database");
    let dir = tempfile::tempdir().expect("tempdir");

    println!(
        "# warehouse: Segment track events (a dozen properties and a context) → 2 rows each, one transaction per batch, {secs} s per row\n"
    );
    println!("| backend | batch (events) | events/s | rows/s | load p50 ms | load p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let backends = [
        ("PostgreSQL 15 (local, fsync on)", format!("postgres://postgres@127.0.0.1:5432/{db}")),
        ("SQLite, embedded (WAL)", format!("sqlite:{}", dir.path().display())),
    ];
    let mut next = 0;
    for (name, url) in &backends {
        let w = Warehouse::connect(url).await.expect("connect");
        for batch in [100, 1000] {
            let r = measure(&w, batch, secs, &mut next).await;
            println!(
                "| {name} | {batch} | {:.0} | {:.0} | {:.2} | {:.2} |",
                r.events_per_sec, r.rows_per_sec, r.p50_ms, r.p99_ms
            );
        }
    }
    let _ = admin.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), &[]).await;
}
