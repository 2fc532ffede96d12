//! [`MemoryLog`], a backend in memory: the same consumer semantics as the
//! durable ones, nothing persisted. For tests of delivery and of the seam
//! itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    Appended, Consumer, ConsumerOptions, DeadLetterLog, Dedupe, DedupeOptions, EventLog, LogError, MemoryDeadLetters,
    Progress, Record, Seq,
};

/// A log in memory. Records are never deleted.
#[derive(Clone)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

struct Inner {
    records: Mutex<Vec<Bytes>>,
    /// The end, for consumers waiting for records.
    end: watch::Sender<Seq>,
    /// Committed positions by consumer.
    positions: Mutex<HashMap<String, Seq>>,
    dedupe: Dedupe,
    letters: Mutex<HashMap<String, Arc<MemoryDeadLetters>>>,
}

impl Inner {
    fn records(&self) -> MutexGuard<'_, Vec<Bytes>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn positions(&self) -> MutexGuard<'_, HashMap<String, Seq>> {
        self.positions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog {
            inner: Arc::new(Inner {
                records: Mutex::default(),
                end: watch::channel(0).0,
                positions: Mutex::default(),
                dedupe: Dedupe::in_memory(&DedupeOptions::default()),
                letters: Mutex::default(),
            }),
        }
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }
}

impl EventLog for MemoryLog {
    type Consumer = MemoryConsumer;

    async fn append(&self, records: Vec<Record>) -> Result<Appended, LogError> {
        let (fresh, duplicates) = self.inner.dedupe.split(records);
        let ids: Vec<u64> = fresh.iter().map(|r| r.id).collect();
        let mut all = self.inner.records();
        let first = all.len() as Seq;
        all.extend(fresh.into_iter().map(|r| r.payload));
        self.inner.end.send_replace(all.len() as Seq);
        drop(all);
        self.inner.dedupe.remember(&ids);
        Ok(Appended { first, duplicates })
    }

    fn end(&self) -> Seq {
        *self.inner.end.borrow()
    }

    async fn open_consumer(&self, name: &str, options: ConsumerOptions) -> Result<MemoryConsumer, LogError> {
        let end = self.end();
        let start = *self.inner.positions().entry(name.to_owned()).or_insert(end);
        Ok(MemoryConsumer {
            name: name.to_owned(),
            read: start,
            progress: {
                let mut p = Progress::new(start);
                p.set_ordered(options.ordered);
                p
            },
            end: self.inner.end.subscribe(),
            inner: self.inner.clone(),
        })
    }

    fn consumers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.positions().keys().cloned().collect();
        names.sort();
        names
    }

    fn backlog(&self, name: &str) -> Option<u64> {
        let end = self.end();
        self.inner.positions().get(name).map(|at| end.saturating_sub(*at))
    }

    async fn remove_consumer(&self, name: &str) -> Result<Option<u64>, LogError> {
        let end = self.end();
        self.inner.letters.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
        Ok(self.inner.positions().remove(name).map(|at| end.saturating_sub(at)))
    }

    async fn dead_letters(&self, name: &str) -> Result<Arc<dyn DeadLetterLog>, LogError> {
        let mut letters = self.inner.letters.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(letters.entry(name.to_owned()).or_default().clone())
    }
}

/// A consumer of a [`MemoryLog`].
pub struct MemoryConsumer {
    name: String,
    /// The next record to hand out.
    read: Seq,
    progress: Progress,
    end: watch::Receiver<Seq>,
    inner: Arc<Inner>,
}

impl Consumer for MemoryConsumer {
    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let (inner, read) = (&self.inner, &mut self.read);
        self.progress
            .batch(max, |room| {
                let records = inner.records();
                let from = usize::try_from(*read).unwrap_or(usize::MAX).min(records.len());
                let fresh: Vec<(Seq, Bytes)> =
                    records[from..].iter().take(room).enumerate().map(|(i, r)| (*read + i as Seq, r.clone())).collect();
                *read += fresh.len() as Seq;
                std::future::ready(Ok(fresh))
            })
            .await
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        let read = self.read;
        let fresh = self.end.wait_for(|end| *end > read);
        self.progress.wait(async { fresh.await.map(|_| ()).map_err(|_| LogError::Closed) }).await
    }

    fn ack(&mut self, seq: Seq) {
        self.progress.finished(seq);
    }

    fn nak(&mut self, seq: Seq, delay: Duration) {
        self.progress.redeliver(seq, delay);
    }

    fn set_window(&mut self, window: usize) {
        self.progress.set_window(window);
    }

    fn in_flight(&self) -> usize {
        self.progress.in_flight()
    }

    fn pending(&self) -> u64 {
        self.end.borrow().saturating_sub(self.read)
    }

    fn position(&self) -> Seq {
        self.progress.position(self.read)
    }

    fn commit(&mut self) -> Result<(), LogError> {
        if let Some(at) = self.progress.to_save(self.read) {
            self.inner.positions().insert(self.name.clone(), at);
            self.progress.saved(at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `n` records with ids of their own (a fresh range per call).
    fn records(n: usize) -> Vec<Record> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let from = NEXT.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        (0..n).map(|i| Record { id: from + i as u64, order_key: 0, payload: Bytes::from(format!("r{i}")) }).collect()
    }

    #[tokio::test]
    async fn a_new_consumer_starts_at_the_end_and_waits_for_records() {
        let log = MemoryLog::new();
        log.append(records(3)).await.unwrap();
        let mut c = log.consumer("late").await.unwrap();
        assert!(c.try_batch(10).await.unwrap().is_empty(), "events from before it existed are not its");
        let waiter = tokio::time::timeout(Duration::from_secs(5), async {
            c.wait().await.unwrap();
            c.try_batch(10).await.unwrap()
        });
        let append = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            log.append(records(2)).await.unwrap()
        };
        let (got, appended) = tokio::join!(waiter, append);
        assert_eq!(appended, Appended { first: 3, duplicates: vec![] });
        assert_eq!(got.unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[tokio::test]
    async fn commits_follow_the_first_unacked_record_and_backlogs_are_per_consumer() {
        let log = MemoryLog::new();
        let mut a = log.consumer("a").await.unwrap();
        let mut b = log.consumer("b").await.unwrap();
        log.append(records(5)).await.unwrap();
        assert_eq!(a.try_batch(2).await.unwrap().len(), 2);
        assert_eq!(a.try_batch(10).await.unwrap().len(), 3);
        assert_eq!(a.in_flight(), 5);
        for seq in [4, 3, 1, 0] {
            a.ack(seq);
        }
        a.commit().unwrap();
        assert_eq!(a.position(), 2);
        assert_eq!(log.backlog("a"), Some(3));
        assert_eq!(log.backlog("b"), Some(5), "b has read nothing");
        b.commit().unwrap();
        assert_eq!(log.backlog("b"), Some(5));
        // A consumer opened again resumes at its committed position.
        let mut again = log.consumer("a").await.unwrap();
        assert_eq!(again.try_batch(10).await.unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(log.consumers(), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(log.remove_consumer("b").await.unwrap(), Some(5));
        assert_eq!(log.backlog("b"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nakd_record_comes_back_after_its_delay_even_with_the_window_full() {
        let log = MemoryLog::new();
        let mut c = log.consumer("d").await.unwrap();
        c.set_window(2);
        log.append(records(5)).await.unwrap();
        let seqs = |v: Vec<(Seq, Bytes)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(seqs(c.try_batch(10).await.unwrap()), vec![0, 1], "the window holds new records back");
        c.nak(1, Duration::from_secs(3));
        c.ack(0);
        c.commit().unwrap();
        assert_eq!(c.position(), 1, "a record waiting for its retry holds the position");
        assert_eq!(seqs(c.try_batch(10).await.unwrap()), vec![2]);
        // Window full (1 and 2 unfinished): only the redelivery can wake it.
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), c.wait()).await.expect("woken by the redelivery").unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(c.try_batch(10).await.unwrap(), vec![(1, Bytes::from("r1"))]);
        c.ack(1);
        c.ack(2);
        assert_eq!(seqs(c.try_batch(10).await.unwrap()), vec![3, 4]);
        c.ack(3);
        c.ack(4);
        c.commit().unwrap();
        assert_eq!(log.backlog("d"), Some(0));
    }

    #[tokio::test]
    async fn duplicates_are_dropped_within_a_batch_and_across_batches() {
        let log = MemoryLog::new();
        let record = |id: u64| Record { id, order_key: 0, payload: Bytes::from(format!("id{id}")) };
        let a = log.append(vec![record(1), record(2), record(1)]).await.unwrap();
        assert_eq!(a, Appended { first: 0, duplicates: vec![2] });
        let b = log.append(vec![record(2), record(3)]).await.unwrap();
        assert_eq!(b, Appended { first: 2, duplicates: vec![0] });
        assert_eq!(log.end(), 3);
    }
}
