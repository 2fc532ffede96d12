//! [`MemoryLog`], a backend in memory: the same consumer semantics as the
//! durable ones, nothing persisted. For tests of delivery and of the seam
//! itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

use super::{Consumer, EventLog, LogError, Progress, Seq};

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
            inner: Arc::new(Inner { records: Mutex::default(), end: watch::channel(0).0, positions: Mutex::default() }),
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

    async fn append(&self, records: Vec<Bytes>) -> Result<Seq, LogError> {
        let mut all = self.inner.records();
        let first = all.len() as Seq;
        all.extend(records);
        self.inner.end.send_replace(all.len() as Seq);
        Ok(first)
    }

    fn end(&self) -> Seq {
        *self.inner.end.borrow()
    }

    fn consumer(&self, name: &str) -> Result<MemoryConsumer, LogError> {
        let end = self.end();
        let start = *self.inner.positions().entry(name.to_owned()).or_insert(end);
        Ok(MemoryConsumer {
            name: name.to_owned(),
            read: start,
            progress: Progress::new(start),
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

    fn remove_consumer(&self, name: &str) -> Result<Option<u64>, LogError> {
        let end = self.end();
        Ok(self.inner.positions().remove(name).map(|at| end.saturating_sub(at)))
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
        let records = self.inner.records();
        let from = usize::try_from(self.read).unwrap_or(usize::MAX).min(records.len());
        let out: Vec<(Seq, Bytes)> =
            records[from..].iter().take(max).enumerate().map(|(i, r)| (self.read + i as Seq, r.clone())).collect();
        drop(records);
        for (seq, _) in &out {
            self.progress.started(*seq);
        }
        self.read += out.len() as Seq;
        Ok(out)
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        let read = self.read;
        self.end.wait_for(|end| *end > read).await.map(|_| ()).map_err(|_| LogError::Closed)
    }

    fn ack(&mut self, seq: Seq) {
        self.progress.finished(seq);
    }

    fn in_flight(&self) -> usize {
        self.progress.in_flight()
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

    fn records(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("r{i}"))).collect()
    }

    #[tokio::test]
    async fn a_new_consumer_starts_at_the_end_and_waits_for_records() {
        let log = MemoryLog::new();
        log.append(records(3)).await.unwrap();
        let mut c = log.consumer("late").unwrap();
        assert!(c.try_batch(10).await.unwrap().is_empty(), "events from before it existed are not its");
        let waiter = tokio::time::timeout(Duration::from_secs(5), async {
            c.wait().await.unwrap();
            c.try_batch(10).await.unwrap()
        });
        let append = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            log.append(records(2)).await.unwrap()
        };
        let (got, first) = tokio::join!(waiter, append);
        assert_eq!(first, 3);
        assert_eq!(got.unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[tokio::test]
    async fn commits_follow_the_first_unacked_record_and_backlogs_are_per_consumer() {
        let log = MemoryLog::new();
        let mut a = log.consumer("a").unwrap();
        let mut b = log.consumer("b").unwrap();
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
        let mut again = log.consumer("a").unwrap();
        assert_eq!(again.try_batch(10).await.unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(log.consumers(), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(log.remove_consumer("b").unwrap(), Some(5));
        assert_eq!(log.backlog("b"), None);
    }
}
