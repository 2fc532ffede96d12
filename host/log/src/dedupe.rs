//! Drops repeated `messageId`s (per source) seen within a window, as Segment
//! does (at least 24 hours), in bounded memory and across restarts.
//!
//! Ids are kept as 64-bit hashes in two generations: an id is remembered
//! for between one and two windows. When the current generation reaches
//! half of `max_ids` it rotates early, shortening the window rather than
//! growing without bound (and says so in the log). Every remembered id is
//! appended to the current generation's journal under `data_dir`; a
//! rotation renames it to `<journal>.prev` and starts an empty one, so it
//! costs one rename however many ids are remembered (an earlier design
//! rewrote every id under the lock, stalling ingest for tens of ms). Both
//! journals are replayed on start. A crash can lose the journal's last
//! writes: the worst case is a duplicate delivered, never a lost event.
//!
//! The log backends own it: [`EventLog::append`](crate::EventLog::append)
//! drops the records whose id was appended within the window (or earlier
//! in the same batch) and remembers the others once they are durable, so
//! a client's retry after a failed append is never taken for a duplicate.
//! A backend with dedupe of its own (JetStream's `Nats-Msg-Id` within the
//! stream's duplicate window) uses that instead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Record;

/// How long and how many ids are remembered.
#[derive(Debug, Clone)]
pub struct DedupeOptions {
    /// An id is remembered for between one and two windows.
    pub window: Duration,
    /// At most this many ids are kept (the window shortens when reached).
    pub max_ids: usize,
}

impl Default for DedupeOptions {
    /// Segment's window (at least 24 hours) and a million ids; also the
    /// defaults of `server.dedupe_window_secs` and `server.dedupe_max_ids`.
    fn default() -> Self {
        DedupeOptions { window: Duration::from_secs(24 * 3600), max_ids: 1_000_000 }
    }
}

/// The dedupe state.
pub struct Dedupe {
    state: Mutex<State>,
    /// The journal; `None` keeps the ids in memory only.
    path: Option<PathBuf>,
    window_ms: i64,
    max_ids: usize,
}

#[derive(Default)]
struct State {
    current: HashMap<u64, i64>,
    previous: HashMap<u64, i64>,
    started_ms: i64,
    journal: Option<BufWriter<File>>,
}

/// The key of an event: its source and `messageId`.
pub fn key(source: &str, message_id: &str) -> u64 {
    // FNV-1a: stable across builds, which the journal needs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes().chain([0u8]).chain(message_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Dedupe {
    /// Opens the journal at `path` and loads the ids still in the window.
    ///
    /// # Errors
    ///
    /// When the journal cannot be opened.
    pub fn open(path: &Path, opts: &DedupeOptions) -> std::io::Result<Dedupe> {
        let now = now_ms();
        let d = Dedupe { path: Some(path.to_owned()), ..Dedupe::in_memory(opts) };
        let window_ms = d.window_ms;
        let previous = load(&previous_path(path), now, window_ms)?;
        let current = load(path, now, window_ms)?;
        let journal = Some(BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?));
        if let Ok(mut s) = d.state.lock() {
            *s = State { current, previous, started_ms: now, journal };
        }
        Ok(d)
    }

    /// Dedupe state that is not persisted (the in-memory log, tests).
    pub fn in_memory(opts: &DedupeOptions) -> Dedupe {
        Dedupe {
            state: Mutex::new(State { started_ms: now_ms(), ..State::default() }),
            path: None,
            window_ms: opts.window.as_millis() as i64,
            max_ids: opts.max_ids.max(2),
        }
    }

    /// Splits `records` into those to append and the indexes of the
    /// duplicates: ids seen within the window, or earlier in the batch.
    pub fn split(&self, records: Vec<Record>) -> (Vec<Record>, Vec<usize>) {
        let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
        let seen = self.seen_each(&ids);
        let mut in_batch = std::collections::HashSet::with_capacity(records.len());
        let mut fresh = Vec::with_capacity(records.len());
        let mut duplicates = Vec::new();
        for (i, (record, seen)) in records.into_iter().zip(seen).enumerate() {
            if seen || !in_batch.insert(record.id) {
                duplicates.push(i);
            } else {
                fresh.push(record);
            }
        }
        (fresh, duplicates)
    }

    /// Whether `key` was seen within the window.
    pub fn seen(&self, key: u64) -> bool {
        self.state.lock().map(|s| s.current.contains_key(&key) || s.previous.contains_key(&key)).unwrap_or(false)
    }

    /// For each of `keys`, whether it was seen within the window (one lock
    /// for the whole batch).
    pub fn seen_each(&self, keys: &[u64]) -> Vec<bool> {
        match self.state.lock() {
            Ok(s) => keys.iter().map(|k| s.current.contains_key(k) || s.previous.contains_key(k)).collect(),
            Err(_) => vec![false; keys.len()],
        }
    }

    /// Remembers `keys` (call after they are durably accepted).
    pub fn remember(&self, keys: &[u64]) {
        let Ok(mut s) = self.state.lock() else { return };
        let now = now_ms();
        if now - s.started_ms >= self.window_ms || s.current.len() + keys.len() > self.max_ids / 2 {
            if now - s.started_ms < self.window_ms {
                tracing::warn!(
                    max_ids = self.max_ids,
                    "dedupe memory bound reached: the dedupe window is shorter than configured"
                );
            }
            s.previous = std::mem::take(&mut s.current);
            s.started_ms = now;
            if let Err(e) = self.rotate(&mut s) {
                tracing::warn!(error = %e, "cannot rotate the dedupe journal");
            }
        }
        s.current.reserve(keys.len());
        for k in keys {
            s.current.insert(*k, now);
        }
        if let Some(j) = s.journal.as_mut() {
            let mut buf = Vec::with_capacity(keys.len() * 16);
            for k in keys {
                buf.extend_from_slice(&k.to_le_bytes());
                buf.extend_from_slice(&now.to_le_bytes());
            }
            let _ = j.write_all(&buf).and_then(|()| j.flush());
        }
    }

    /// Makes the current journal the previous one and starts a new one.
    fn rotate(&self, s: &mut State) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(mut j) = s.journal.take() {
            j.flush()?;
        }
        std::fs::rename(path, previous_path(path))?;
        s.journal = Some(BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?));
        Ok(())
    }
}

fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".prev");
    path.with_file_name(name)
}

/// The ids in the journal at `path` still within the window (none when it
/// does not exist).
fn load(path: &Path, now: i64, window_ms: i64) -> std::io::Result<HashMap<u64, i64>> {
    let mut ids = HashMap::new();
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    for chunk in buf.chunks_exact(16) {
        let (k, t) = chunk.split_at(8);
        let (Ok(k), Ok(t)) = (k.try_into(), t.try_into()) else { continue };
        let t = i64::from_le_bytes(t);
        if now - t < window_ms {
            ids.insert(u64::from_le_bytes(k), t);
        }
    }
    Ok(ids)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(window_secs: u64, max_ids: usize) -> DedupeOptions {
        DedupeOptions { window: Duration::from_secs(window_secs), max_ids }
    }

    #[test]
    fn remembers_across_reopen_and_rotates_within_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedupe.journal");
        let d = Dedupe::open(&path, &opts(3600, 1000)).unwrap();
        let (a, b) = (key("web", "m1"), key("web", "m2"));
        assert_ne!(a, key("ios", "m1"), "keys are per source");
        assert!(!d.seen(a));
        d.remember(&[a]);
        assert!(d.seen(a) && !d.seen(b));
        drop(d);
        let d = Dedupe::open(&path, &opts(3600, 1000)).unwrap();
        assert!(d.seen(a), "survives a restart");
        for i in 0..2000 {
            d.remember(&[key("web", &format!("x{i}"))]);
        }
        {
            let s = d.state.lock().unwrap();
            assert!(s.current.len() + s.previous.len() <= 1000, "bounded");
        }
        // Both generations survive a restart: the latest ids are still seen.
        let last = key("web", "x1999");
        drop(d);
        let d = Dedupe::open(&path, &opts(3600, 1000)).unwrap();
        assert!(d.seen(last));
        assert!(d.seen(key("web", "x1700")), "from the previous generation");
    }

    #[test]
    fn expired_ids_are_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedupe.journal");
        let mut old = Vec::new();
        old.extend_from_slice(&key("web", "old").to_le_bytes());
        old.extend_from_slice(&(now_ms() - 10_000).to_le_bytes());
        std::fs::write(&path, old).unwrap();
        let d = Dedupe::open(&path, &opts(5, 100)).unwrap();
        assert!(!d.seen(key("web", "old")));
    }
}
