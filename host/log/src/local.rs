//! [`LocalLog`], the embedded backend: a [`SegmentLog`] for the records,
//! a [`Cursors`] file per consumer for the positions and a [`Dedupe`]
//! journal for the ids appended, all under `data_dir`. Nothing to run
//! beside the binary.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Appended, Consumer, ConsumerOptions, Cursors, DeadLetterLog, Dedupe, DedupeOptions, EventLog, Loaded,
    LocalDeadLetters, LogError, LogOptions, LogReader, Progress, Record, SegmentLog, SegmentReader, Seq,
};

/// The embedded log: segments under `<dir>/log`, cursors under
/// `<dir>/cursors`, the dedupe journal at `<dir>/dedupe.journal`.
pub struct LocalLog {
    data_dir: std::path::PathBuf,
    /// Dead letters by destination, opened once each.
    letters: std::sync::Mutex<std::collections::HashMap<String, Arc<LocalDeadLetters>>>,
    log: Arc<SegmentLog>,
    cursors: Cursors,
    dedupe: Dedupe,
}

impl LocalLog {
    /// Opens (or creates) the log, its cursors and its dedupe journal
    /// under `data_dir`.
    ///
    /// # Errors
    ///
    /// When one cannot be opened: I/O errors, or corruption before the
    /// last segment's tail.
    pub fn open(data_dir: &Path, opts: LogOptions, dedupe: &DedupeOptions) -> Result<LocalLog, LogError> {
        let sync = opts.fsync;
        let log = Arc::new(SegmentLog::open(&data_dir.join("log"), opts)?);
        let cursors = Cursors::open(&data_dir.join("cursors"), sync)?;
        let dedupe = Dedupe::open(&data_dir.join("dedupe.journal"), dedupe)?;
        Ok(LocalLog { data_dir: data_dir.to_owned(), letters: Default::default(), log, cursors, dedupe })
    }

    /// The segments, for size and count.
    pub fn segments(&self) -> &SegmentLog {
        &self.log
    }
}

impl EventLog for LocalLog {
    type Consumer = LocalConsumer;

    async fn append(&self, records: Vec<Record>) -> Result<Appended, LogError> {
        let (fresh, duplicates) = self.dedupe.split(records);
        if fresh.is_empty() {
            return Ok(Appended { first: self.log.end(), duplicates });
        }
        let ids: Vec<u64> = fresh.iter().map(|r| r.id).collect();
        let first = self.log.append(fresh.into_iter().map(|r| r.payload).collect()).await?;
        self.dedupe.remember(&ids);
        Ok(Appended { first, duplicates })
    }

    fn end(&self) -> Seq {
        self.log.end()
    }

    fn accepting(&self) -> Result<(), LogError> {
        self.log.accepting()
    }

    fn free_bytes(&self) -> Option<u64> {
        Some(self.log.free_bytes())
    }

    fn held_bytes(&self, name: &str) -> Option<u64> {
        self.cursors.position(name).map(|at| self.log.bytes_from(at))
    }

    async fn open_consumer(&self, name: &str, options: ConsumerOptions) -> Result<LocalConsumer, LogError> {
        let oldest = self.log.oldest();
        let (start, found) = self.cursors.load(name, self.log.end(), oldest)?;
        match found {
            Some(Loaded::Unreadable(why)) => tracing::error!(
                destination = name,
                why = %why,
                resumes_at = start,
                "unreadable cursor file; the destination resumes from the oldest record the log holds \
                 (events it had delivered may be delivered again, none is skipped)"
            ),
            Some(Loaded::Saved(at)) if at < oldest => tracing::error!(
                destination = name,
                cursor = at,
                oldest,
                "cursor behind the oldest record the log holds: records were deleted before this destination \
                 finished them; resuming at the oldest"
            ),
            _ => {}
        }
        Ok(LocalConsumer {
            name: name.to_owned(),
            reader: self.log.reader(start)?,
            progress: {
                let mut p = Progress::new(start);
                p.set_ordered(options.ordered);
                p
            },
            log: self.log.clone(),
            cursors: self.cursors.clone(),
        })
    }

    fn consumers(&self) -> Vec<String> {
        self.cursors.names()
    }

    fn backlog(&self, name: &str) -> Option<u64> {
        self.cursors.position(name).map(|at| self.log.end().saturating_sub(at))
    }

    async fn remove_consumer(&self, name: &str) -> Result<Option<u64>, LogError> {
        let Some(at) = self.cursors.position(name) else { return Ok(None) };
        let dropped = self.log.end().saturating_sub(at);
        if let Some(min) = self.cursors.remove(name)? {
            self.log.release(min);
        }
        self.letters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
        let letters = self.data_dir.join("dead-letters").join(name);
        if letters.exists() {
            std::fs::remove_dir_all(&letters)?;
        }
        Ok(Some(dropped))
    }

    /// Under `data_dir/dead-letters/<name>`.
    async fn dead_letters(&self, name: &str) -> Result<Arc<dyn DeadLetterLog>, LogError> {
        let mut letters = self.letters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = letters.get(name) {
            return Ok(l.clone());
        }
        let l = Arc::new(LocalDeadLetters::open(&self.data_dir.join("dead-letters").join(name))?);
        letters.insert(name.to_owned(), l.clone());
        Ok(l)
    }

    /// Stops the writer after the appends already queued.
    fn close(&self) {
        self.log.close();
    }
}

/// A destination's consumer of a [`LocalLog`]: a reader, the records it
/// handed out and not finished, and its cursor file.
pub struct LocalConsumer {
    name: String,
    reader: SegmentReader,
    progress: Progress,
    log: Arc<SegmentLog>,
    cursors: Cursors,
}

impl Consumer for LocalConsumer {
    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let reader = &mut self.reader;
        self.progress.batch(max, |room| reader.try_batch(room)).await
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        self.progress.wait(self.reader.wait()).await
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
        self.log.end().saturating_sub(self.reader.position())
    }

    fn position(&self) -> Seq {
        self.progress.position(self.reader.position())
    }

    fn commit(&mut self) -> Result<(), LogError> {
        let Some(at) = self.progress.to_save(self.reader.position()) else { return Ok(()) };
        let min = self.cursors.save(&self.name, at)?;
        self.progress.saved(at);
        self.log.release(min);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<Record> {
        (0..n).map(|i| Record { id: i as u64, order_key: 0, payload: Bytes::from(format!("r{i}")) }).collect()
    }

    #[tokio::test]
    async fn a_consumer_resumes_at_its_first_unacked_record_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_bytes: 1 << 20, fsync: false, min_free_bytes: 0 };
        let log = LocalLog::open(dir.path(), opts.clone(), &DedupeOptions::default()).unwrap();
        let mut c = log.consumer("hook").await.unwrap();
        log.append(records(10)).await.unwrap();
        assert_eq!(c.pending(), 10, "durable, not handed out");
        assert_eq!(c.try_batch(3).await.unwrap().len(), 3);
        assert_eq!(c.pending(), 7);
        let got = c.try_batch(100).await.unwrap();
        assert_eq!((got.len(), c.pending()), (7, 0));
        // Acked out of order, all but record 4.
        for seq in (0..10).rev().filter(|s| *s != 4) {
            c.ack(seq);
        }
        c.commit().unwrap();
        assert_eq!(log.backlog("hook"), Some(6));
        log.close();
        drop((c, log));

        let log = LocalLog::open(dir.path(), opts, &DedupeOptions::default()).unwrap();
        assert_eq!(log.consumers(), vec!["hook".to_owned()]);
        let mut c = log.consumer("hook").await.unwrap();
        let again: Vec<Seq> = c.try_batch(100).await.unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(again, (4..10).collect::<Vec<_>>(), "record 4 and what followed it come again");
        // The ids appended before the restart are still known.
        let dup = log.append(records(11)).await.unwrap();
        assert_eq!(dup, Appended { first: 10, duplicates: (0..10).collect() }, "only the new id is written");
        assert_eq!(log.remove_consumer("hook").await.unwrap(), Some(7), "4..10 and the new record");
        assert_eq!(log.remove_consumer("hook").await.unwrap(), None);
        log.close();
    }
}
