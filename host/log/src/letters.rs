//! Where a destination's dead letters are kept, behind the log seam: the
//! embedded log keeps them on this node's disk, a shared log (JetStream)
//! where every node sees them, so that any node lists and replays them.
//!
//! A [`DeadLetterLog`] is an append-only list of opaque payloads (the host
//! encodes what failed and why) whose oldest entries are released once
//! replayed. It is an object (`Arc<dyn DeadLetterLog>`) rather than a
//! generic: dead letters are rare, and the destinations' bookkeeping that
//! holds them need not know the backend.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use crate::{LogError, LogOptions, LogReader as _, SegmentLog, Seq};

/// A boxed future of a [`DeadLetterLog`] call.
pub type LetterFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LogError>> + Send + 'a>>;

/// One destination's dead letters.
pub trait DeadLetterLog: Send + Sync + 'static {
    /// Appends `payload`; resolves once it is durable, with its number.
    ///
    /// # Errors
    ///
    /// When it cannot be made durable (the event stays unfinished then).
    fn add(&self, payload: Bytes) -> LetterFuture<'_, Seq>;

    /// Up to `limit` dead letters not released, oldest first, numbered.
    ///
    /// # Errors
    ///
    /// When they cannot be read.
    fn list(&self, limit: usize) -> LetterFuture<'_, Vec<(Seq, Bytes)>>;

    /// How many are not released.
    ///
    /// # Errors
    ///
    /// When the store cannot be asked.
    fn count(&self) -> LetterFuture<'_, u64>;

    /// Releases every dead letter numbered below `before` (replayed).
    ///
    /// # Errors
    ///
    /// When that cannot be made durable; a later replay may then repeat
    /// them, never lose them.
    fn release(&self, before: Seq) -> LetterFuture<'_, ()>;
}

/// Dead letters in a [`SegmentLog`] of their own under a directory, with a
/// file saying up to where they were replayed.
pub struct LocalDeadLetters {
    log: SegmentLog,
    replayed: PathBuf,
}

impl LocalDeadLetters {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn open(dir: &Path) -> Result<LocalDeadLetters, LogError> {
        let log =
            SegmentLog::open(dir, LogOptions { segment_bytes: 16 * 1024 * 1024, fsync: true, min_free_bytes: 0 })?;
        Ok(LocalDeadLetters { log, replayed: dir.join("replayed.cursor") })
    }

    fn replayed_up_to(&self) -> Seq {
        std::fs::read_to_string(&self.replayed).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
}

impl DeadLetterLog for LocalDeadLetters {
    fn add(&self, payload: Bytes) -> LetterFuture<'_, Seq> {
        Box::pin(async move { self.log.append(vec![payload]).await })
    }

    fn list(&self, limit: usize) -> LetterFuture<'_, Vec<(Seq, Bytes)>> {
        Box::pin(async move {
            let mut reader = self.log.reader(self.replayed_up_to())?;
            let mut out = Vec::new();
            while out.len() < limit {
                let batch = reader.try_batch(limit - out.len()).await?;
                if batch.is_empty() {
                    break;
                }
                out.extend(batch);
            }
            Ok(out)
        })
    }

    fn count(&self) -> LetterFuture<'_, u64> {
        Box::pin(async move { Ok(self.log.end().saturating_sub(self.replayed_up_to())) })
    }

    fn release(&self, before: Seq) -> LetterFuture<'_, ()> {
        Box::pin(async move {
            let tmp = self.replayed.with_extension("tmp");
            std::fs::write(&tmp, before.to_string())?;
            std::fs::rename(&tmp, &self.replayed)?;
            self.log.release(before);
            Ok(())
        })
    }
}

/// Dead letters in memory ([`MemoryLog`](crate::MemoryLog), tests).
#[derive(Default)]
pub struct MemoryDeadLetters {
    /// Every one added, and how many of the first are released.
    state: Mutex<(Vec<Bytes>, usize)>,
}

impl MemoryDeadLetters {
    fn state(&self) -> std::sync::MutexGuard<'_, (Vec<Bytes>, usize)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeadLetterLog for MemoryDeadLetters {
    fn add(&self, payload: Bytes) -> LetterFuture<'_, Seq> {
        let mut s = self.state();
        s.0.push(payload);
        let seq = s.0.len() as Seq - 1;
        Box::pin(std::future::ready(Ok(seq)))
    }

    fn list(&self, limit: usize) -> LetterFuture<'_, Vec<(Seq, Bytes)>> {
        let s = self.state();
        let out = s.0.iter().enumerate().skip(s.1).take(limit).map(|(i, b)| (i as Seq, b.clone())).collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn count(&self) -> LetterFuture<'_, u64> {
        let s = self.state();
        Box::pin(std::future::ready(Ok((s.0.len() - s.1) as u64)))
    }

    fn release(&self, before: Seq) -> LetterFuture<'_, ()> {
        let mut s = self.state();
        s.1 = s.1.max(usize::try_from(before).unwrap_or(usize::MAX).min(s.0.len()));
        Box::pin(std::future::ready(Ok(())))
    }
}
