//! Crashes at random points with random commit timing: whatever was
//! appended stays readable from every consumer's restored position.
//!
//! A crash is a copy of the data folder taken between two operations
//! (what `kill -9` leaves: every completed write, nothing after), reopened
//! as the next run. Segments are tiny, so nearly every commit releases
//! segments and rolls reuse spares — the ordering the invariant in
//! [`crate::cursor`] is about.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;

use crate::{Consumer, DedupeOptions, EventLog, LocalLog, LogOptions, Record, Seq};

const OPTS: LogOptions = LogOptions { segment_bytes: 400, fsync: false, min_free_bytes: 0 };
const CONSUMERS: [&str; 2] = ["fast", "slow"];

fn payload(seq: Seq) -> Bytes {
    Bytes::from(format!("record-{seq:08}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if let Err(e) = std::fs::copy(entry.path(), &target) {
            // A spare renamed or deleted meanwhile by the fill thread.
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
    }
}

/// One consumer as the test sees it: records handed out and not acked.
struct Model {
    consumer: crate::LocalConsumer,
    unacked: BTreeSet<Seq>,
}

#[tokio::test]
async fn crashes_at_random_points_with_random_commit_timing_lose_no_record() {
    for seed in 0..10u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let root = tempfile::tempdir().unwrap();
        let mut run = 0;
        let mut dir = root.path().join(format!("run{run}"));
        let mut log = LocalLog::open(&dir, OPTS, &DedupeOptions::default()).unwrap();
        let mut models: Vec<Model> = Vec::new();
        for n in CONSUMERS {
            models.push(Model { consumer: log.consumer(n).await.unwrap(), unacked: BTreeSet::new() });
        }
        let mut appended: Seq = 0;
        // How eagerly each consumer commits: from every step to rarely.
        let commit_odds: Vec<u32> = CONSUMERS.iter().map(|_| rng.u32(1..=8)).collect();
        for step in 0..300 {
            match rng.u32(0..10) {
                0..=3 => {
                    let n = rng.u64(1..8);
                    let records =
                        (appended..appended + n).map(|s| Record { id: s, order_key: 0, payload: payload(s) }).collect();
                    let a = log.append(records).await.unwrap();
                    assert_eq!(a.first, appended, "seed {seed} step {step}");
                    appended += n;
                }
                4..=7 => {
                    let i = rng.usize(..models.len());
                    // The slow consumer takes little and acks half.
                    let (max, ack_odds) = if i == 0 { (16, 9) } else { (4, 5) };
                    let m = &mut models[i];
                    for (seq, bytes) in m.consumer.try_batch(max).await.unwrap() {
                        assert_eq!(bytes, payload(seq), "seed {seed} step {step}: record {seq} read back wrong");
                        m.unacked.insert(seq);
                    }
                    let acks: Vec<Seq> = m.unacked.iter().copied().filter(|_| rng.u32(0..10) < ack_odds).collect();
                    for seq in acks {
                        m.consumer.ack(seq);
                        m.unacked.remove(&seq);
                    }
                    if rng.u32(0..commit_odds[i]) == 0 {
                        m.consumer.commit().unwrap();
                    }
                }
                _ => {
                    // Crash now; the copy is the next run.
                    run += 1;
                    let next = root.path().join(format!("run{run}"));
                    copy_dir(&dir, &next);
                    // Where each consumer stood: nothing from there on was
                    // finished.
                    let stood: Vec<Seq> = models.iter().map(|m| m.consumer.position()).collect();
                    drop(models);
                    log.close();
                    drop(log);
                    dir = next;
                    log = LocalLog::open(&dir, OPTS, &DedupeOptions::default()).unwrap();
                    assert_eq!(log.end(), appended, "seed {seed} step {step}: every append survives");
                    models = Vec::new();
                    for (name, stood) in CONSUMERS.into_iter().zip(stood) {
                        let mut consumer = log.consumer(name).await.unwrap();
                        // It resumes at or before where it stood, and
                        // everything from there reads back intact, in order.
                        let from = consumer.position();
                        assert!(from <= stood, "seed {seed} step {step}: {name} resumed at {from}, past {stood}");
                        let mut all = Vec::new();
                        loop {
                            let got = consumer.try_batch(64).await.unwrap();
                            if got.is_empty() {
                                break;
                            }
                            all.extend(got);
                        }
                        let seqs: Vec<Seq> = all.iter().map(|(s, _)| *s).collect();
                        assert_eq!(seqs, (from..appended).collect::<Vec<_>>(), "seed {seed} step {step}: {name}");
                        for (seq, bytes) in &all {
                            assert_eq!(*bytes, payload(*seq), "seed {seed} step {step}: {name} record {seq}");
                        }
                        // Nothing is acked yet in this run: all of it is
                        // unfinished, and comes again in order.
                        let model = Model { consumer, unacked: seqs.into_iter().collect() };
                        models.push(model);
                    }
                }
            }
        }
        // Whatever a consumer left unfinished is still readable.
        for (name, m) in CONSUMERS.iter().zip(&models) {
            let pos = m.consumer.position();
            assert!(m.unacked.first().is_none_or(|first| pos <= *first), "seed {seed}: {name} at {pos}");
        }
        log.close();
    }
}
