//! The durable log against a well-kept crate: the purpose-built
//! `SegmentLog` and fjall (an LSM key-value engine, keys = big-endian
//! sequence numbers), on the same work: 8 concurrent appenders, batches of
//! 100 records of 560 bytes, each batch durable (fdatasync) before the next;
//! then one sequential read of everything.
//!
//! Run: `cargo bench -p switchyard --bench log` (`BENCH_SECS`, default 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_log::{LogOptions, LogReader, SegmentLog};

const WRITERS: usize = 8;
const BATCH: usize = 100;
const RECORD: usize = 560;

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    println!("# durable log: {WRITERS} appenders × batches of {BATCH} × {RECORD}-byte records, fdatasync per batch\n");
    println!("| log | append records/s | append p99 ms | sequential read records/s | disk MB |");
    println!("|---|---:|---:|---:|---:|");
    rt.block_on(segment_log(secs));
    fjall_log(secs);
}

fn record(i: u64) -> Bytes {
    let mut v = vec![b'x'; RECORD];
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() * 99 / 100).copied().unwrap_or(0.0)
}

async fn segment_log(secs: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SegmentLog::open(dir.path(), LogOptions::default()).expect("open"));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let batch: Vec<Bytes> = (0..BATCH as u64).map(|k| record(i + k)).collect();
                let t = Instant::now();
                log.append(batch).await.expect("append");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                i += BATCH as u64;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let appended = log.end();
    let rate = appended as f64 / start.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut reader = log.reader(0).expect("reader");
    let mut read = 0u64;
    while read < appended {
        read += reader.next_batch(10_000).await.expect("read").len() as u64;
    }
    let read_rate = read as f64 / t.elapsed().as_secs_f64();
    println!(
        "| switchyard SegmentLog (group commit) | {rate:.0} | {:.2} | {read_rate:.0} | {:.0} |",
        p99(lat),
        log.disk_bytes() as f64 / 1e6
    );
}

fn fjall_log(secs: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyspace = fjall::Config::new(dir.path()).open().expect("open fjall");
    let events = keyspace.open_partition("events", fjall::PartitionCreateOptions::default()).expect("partition");
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let lat: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (keyspace, events, next) = (&keyspace, &events, next.clone());
                s.spawn(move || {
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let first = next.fetch_add(BATCH as u64, Ordering::Relaxed);
                        let t = Instant::now();
                        let mut batch = keyspace.batch().durability(Some(fjall::PersistMode::SyncData));
                        for k in 0..BATCH as u64 {
                            batch.insert(events, (first + k).to_be_bytes(), record(first + k).to_vec());
                        }
                        batch.commit().expect("commit");
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("writer")).collect()
    });
    let appended = next.load(Ordering::Relaxed);
    let rate = appended as f64 / start.elapsed().as_secs_f64();
    let t = Instant::now();
    let read = events.iter().count() as u64;
    let read_rate = read as f64 / t.elapsed().as_secs_f64();
    assert_eq!(read, appended, "fjall lost records");
    println!(
        "| fjall 2.11 (LSM, batch commit with SyncData) | {rate:.0} | {:.2} | {read_rate:.0} | {:.0} |",
        p99(lat),
        keyspace.disk_space() as f64 / 1e6
    );
}
