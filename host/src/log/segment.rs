//! [`SegmentLog`]: the embedded log, files of framed records under one folder.
//!
//! One writer thread owns the active segment. Appends queue up while it
//! fsyncs; it then writes everything queued in one `write` and one
//! `fdatasync` (group commit) and acknowledges each append. Readers follow
//! the durable end through a watch channel and read segments with their own
//! file handles.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, watch};

use super::record::{self, HEADER, Parsed};
use super::{EventLog, LogError, LogReader, Seq};

/// How the log behaves.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// `fdatasync` before acknowledging. Off only in benchmarks of the
    /// log itself.
    pub fsync: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_bytes: 64 * 1024 * 1024, fsync: true }
    }
}

struct Append {
    records: Vec<Bytes>,
    done: oneshot::Sender<Result<Seq, LogError>>,
}

struct Shared {
    dir: PathBuf,
    /// Base sequence numbers of the segments on disk, ascending.
    segments: Mutex<Vec<Seq>>,
    durable: watch::Sender<Seq>,
    released: AtomicU64,
}

impl Shared {
    fn path(&self, base: Seq) -> PathBuf {
        segment_path(&self.dir, base)
    }

    fn bases(&self) -> Vec<Seq> {
        self.segments.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn segment_path(dir: &Path, base: Seq) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The embedded segmented log.
pub struct SegmentLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Append>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, cutting a torn tail left by a
    /// crash, and starts the writer thread.
    ///
    /// # Errors
    ///
    /// I/O errors, or corruption before the last segment's tail.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<SegmentLog, LogError> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<Seq> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log").and_then(|n| n.parse::<Seq>().ok())
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            File::create(segment_path(dir, 0))?;
            bases.push(0);
        }
        let last = *bases.last().unwrap_or(&0);
        let (next, size) = recover_tail(&segment_path(dir, last), last)?;
        let (durable, _) = watch::channel(next);
        let shared =
            Arc::new(Shared { dir: dir.to_owned(), segments: Mutex::new(bases), durable, released: AtomicU64::new(0) });
        let file = OpenOptions::new().append(true).open(shared.path(last))?;
        let (tx, rx) = mpsc::channel::<Append>();
        let w = Writer { shared: shared.clone(), file, size, next, opts, failed: None };
        let writer = std::thread::Builder::new().name("log-writer".into()).spawn(move || w.run(rx))?;
        Ok(SegmentLog { shared, tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) })
    }

    /// Stops the writer after the appends already queued.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
    }

    /// Bytes on disk across all segments.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.bases().iter().filter_map(|b| std::fs::metadata(self.shared.path(*b)).ok()).map(|m| m.len()).sum()
    }

    /// How many segment files exist.
    pub fn segment_count(&self) -> usize {
        self.shared.bases().len()
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Scans the last segment, truncating at the first incomplete or corrupt
/// record. Returns the next sequence number and the valid size.
fn recover_tail(path: &Path, base: Seq) -> Result<(Seq, u64), LogError> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let (mut at, mut next) = (0usize, base);
    loop {
        match record::parse(&data[at..]) {
            Parsed::Record { seq, len, .. } if seq == next => {
                at += len;
                next += 1;
            }
            Parsed::Record { .. } | Parsed::Corrupt(_) | Parsed::Incomplete => break,
        }
    }
    if at < data.len() {
        tracing::warn!(segment = %path.display(), valid = at, cut = data.len() - at, "cutting torn or corrupt log tail");
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(at as u64)?;
        f.sync_all()?;
    }
    Ok((next, at as u64))
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    size: u64,
    next: Seq,
    opts: LogOptions,
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < 4096 {
                match rx.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            let result = self.commit(&group);
            for (append, first_seq) in group.into_iter().zip(result.firsts) {
                let _ = append.done.send(match &result.error {
                    None => Ok(first_seq),
                    Some(e) => Err(e.clone()),
                });
            }
        }
        let _ = self.file.sync_all();
    }

    fn commit(&mut self, group: &[Append]) -> Committed {
        let firsts: Vec<Seq> = {
            let mut seq = self.next;
            group
                .iter()
                .map(|a| {
                    let f = seq;
                    seq += a.records.len() as u64;
                    f
                })
                .collect()
        };
        if let Some(reason) = &self.failed {
            return Committed { firsts, error: Some(LogError::Io(reason.clone())) };
        }
        let total: usize = group.iter().flat_map(|a| &a.records).map(|r| r.len() + HEADER).sum();
        if self.size > 0
            && self.size + total as u64 > self.opts.segment_bytes
            && let Err(e) = self.roll()
        {
            return Committed { firsts, error: Some(e) };
        }
        let mut buf = BytesMut::with_capacity(total);
        let mut seq = self.next;
        for rec in group.iter().flat_map(|a| &a.records) {
            record::frame(&mut buf, seq, rec);
            seq += 1;
        }
        let written =
            self.file.write_all(&buf).and_then(|()| if self.opts.fsync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.next = seq;
                self.shared.durable.send_replace(seq);
                Committed { firsts, error: None }
            }
            Err(e) => {
                // Undo a partial write so the file stays a sequence of whole
                // records; if even that fails, refuse all further appends.
                let undo = self.file.set_len(self.size).and_then(|()| self.file.seek(SeekFrom::End(0)).map(|_| ()));
                if let Err(u) = undo {
                    self.failed = Some(format!("log unusable after failed write ({e}) and failed undo ({u})"));
                }
                tracing::error!(error = %e, "log append failed");
                Committed { firsts, error: Some(LogError::Io(e.to_string())) }
            }
        }
    }

    fn roll(&mut self) -> Result<(), LogError> {
        self.file.sync_all()?;
        let path = self.shared.path(self.next);
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        if let Ok(dir) = File::open(&self.shared.dir) {
            let _ = dir.sync_all();
        }
        self.size = 0;
        if let Ok(mut s) = self.shared.segments.lock() {
            s.push(self.next);
        }
        Ok(())
    }
}

struct Committed {
    firsts: Vec<Seq>,
    error: Option<LogError>,
}

impl EventLog for SegmentLog {
    type Reader = SegmentReader;

    async fn append(&self, records: Vec<Bytes>) -> Result<Seq, LogError> {
        if records.is_empty() {
            return Ok(self.end());
        }
        let (done, rx) = oneshot::channel();
        {
            let tx = self.tx.lock().map_err(|_| LogError::Closed)?;
            tx.as_ref().ok_or(LogError::Closed)?.send(Append { records, done }).map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    fn reader(&self, from: Seq) -> Result<SegmentReader, LogError> {
        let first = self.shared.bases().first().copied().unwrap_or(0);
        Ok(SegmentReader {
            shared: self.shared.clone(),
            pos: from.max(first),
            file: None,
            durable: self.shared.durable.subscribe(),
        })
    }

    fn end(&self) -> Seq {
        *self.shared.durable.borrow()
    }

    fn release(&self, seq: Seq) {
        let prev = self.shared.released.fetch_max(seq, Ordering::Relaxed);
        if seq <= prev {
            return;
        }
        let Ok(mut bases) = self.shared.segments.lock() else { return };
        // A segment can go when the next one starts at or before `seq`; the
        // last (active) segment always stays: its name carries the next seq.
        while bases.len() > 1 && bases[1] <= seq {
            let path = self.shared.path(bases[0]);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(segment = %path.display(), "deleted delivered log segment"),
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete log segment");
                    break;
                }
            }
            bases.remove(0);
        }
    }
}

/// A reader of a [`SegmentLog`].
pub struct SegmentReader {
    shared: Arc<Shared>,
    pos: Seq,
    /// The open segment: its base, the file and the offset of `pos` in it.
    file: Option<(Seq, std::io::BufReader<File>)>,
    durable: watch::Receiver<Seq>,
}

impl SegmentReader {
    /// Reads records `pos..end` (at most `max`). Segment files are read with
    /// blocking I/O: they are sequential, mostly in the page cache, and the
    /// batch is small.
    fn read(&mut self, max: usize, end: Seq) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let mut out = Vec::new();
        while out.len() < max && self.pos < end {
            let bases = self.shared.bases();
            let base = bases.iter().rev().find(|b| **b <= self.pos).copied().ok_or(LogError::Corrupt {
                segment: "-".into(),
                offset: 0,
                reason: format!("no segment holds record {}", self.pos),
            })?;
            let next_base = bases.iter().find(|b| **b > base).copied();
            if self.file.as_ref().map(|(b, _)| *b) != Some(base) {
                let f = File::open(self.shared.path(base))?;
                self.file = Some((base, std::io::BufReader::with_capacity(256 * 1024, f)));
                self.skip_to(base)?;
                continue;
            }
            if next_base.is_some_and(|n| self.pos >= n) {
                self.file = None;
                continue;
            }
            let Some((_, reader)) = self.file.as_mut() else { continue };
            match read_record(reader)? {
                Some((seq, payload)) if seq == self.pos => {
                    out.push((seq, payload));
                    self.pos += 1;
                }
                Some((seq, _)) => {
                    return Err(LogError::Corrupt {
                        segment: format!("{base:020}.log"),
                        offset: 0,
                        reason: format!("expected record {}, found {seq}", self.pos),
                    });
                }
                None => {
                    // End of this segment: the next one holds `pos`.
                    if next_base.is_none() {
                        break;
                    }
                    self.file = None;
                }
            }
        }
        Ok(out)
    }

    /// Positions the freshly opened segment at `pos`, skipping earlier records.
    fn skip_to(&mut self, base: Seq) -> Result<(), LogError> {
        let mut seq = base;
        while seq < self.pos {
            let Some((_, reader)) = self.file.as_mut() else { return Ok(()) };
            match read_record(reader)? {
                Some((s, _)) => seq = s + 1,
                None => break,
            }
        }
        Ok(())
    }
}

fn read_record(r: &mut std::io::BufReader<File>) -> Result<Option<(Seq, Bytes)>, LogError> {
    let mut header = [0u8; HEADER];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > record::MAX_PAYLOAD {
        return Err(LogError::Corrupt { segment: "-".into(), offset: 0, reason: "length out of range".into() });
    }
    let mut buf = vec![0u8; HEADER + len];
    buf[..HEADER].copy_from_slice(&header);
    r.read_exact(&mut buf[HEADER..])?;
    match record::parse(&buf) {
        Parsed::Record { seq, payload_at, .. } => Ok(Some((seq, Bytes::from(buf).slice(payload_at..)))),
        Parsed::Corrupt(reason) => Err(LogError::Corrupt { segment: "-".into(), offset: 0, reason: reason.into() }),
        Parsed::Incomplete => Ok(None),
    }
}

impl LogReader for SegmentReader {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        loop {
            let end = *self.durable.borrow_and_update();
            if self.pos < end {
                return self.read(max, end);
            }
            self.durable.changed().await.map_err(|_| LogError::Closed)?;
        }
    }

    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let end = *self.durable.borrow();
        if self.pos < end { self.read(max, end) } else { Ok(Vec::new()) }
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        while *self.durable.borrow_and_update() <= self.pos {
            self.durable.changed().await.map_err(|_| LogError::Closed)?;
        }
        Ok(())
    }

    fn position(&self) -> Seq {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: usize, tag: &str) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("{tag}-{i}"))).collect()
    }

    #[tokio::test]
    async fn append_read_roll_release_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_bytes: 200, fsync: true };
        {
            let log = SegmentLog::open(dir.path(), opts.clone()).unwrap();
            assert_eq!(log.append(recs(5, "a")).await.unwrap(), 0);
            assert_eq!(log.append(recs(20, "b")).await.unwrap(), 5);
            assert_eq!(log.end(), 25);
            assert!(log.segment_count() > 1, "rolled");
            let mut r = log.reader(3).unwrap();
            let got = r.next_batch(100).await.unwrap();
            assert_eq!(got.len(), 22);
            assert_eq!(got[0], (3, Bytes::from("a-3")));
            assert_eq!(got[21], (24, Bytes::from("b-19")));
            assert!(r.try_batch(10).await.unwrap().is_empty());
            log.release(25);
            assert_eq!(log.segment_count(), 1, "only the active segment is left");
        }
        let log = SegmentLog::open(dir.path(), opts).unwrap();
        assert_eq!(log.end(), 25, "sequence numbers continue after a restart");
        assert_eq!(log.append(recs(1, "c")).await.unwrap(), 25);
        let mut r = log.reader(25).unwrap();
        assert_eq!(r.next_batch(10).await.unwrap(), vec![(25, Bytes::from("c-0"))]);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SegmentLog::open(dir.path(), LogOptions::default()).unwrap();
            log.append(recs(3, "x")).await.unwrap();
        }
        let path = segment_path(dir.path(), 0);
        let full = std::fs::metadata(&path).unwrap().len();
        // A crash mid-write: half a record at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let log = SegmentLog::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.end(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full);
        assert_eq!(log.append(recs(1, "y")).await.unwrap(), 3);
        let mut r = log.reader(0).unwrap();
        assert_eq!(r.next_batch(10).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn corrupt_record_in_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SegmentLog::open(dir.path(), LogOptions::default()).unwrap();
            log.append(recs(3, "x")).await.unwrap();
        }
        let path = segment_path(dir.path(), 0);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&path, data).unwrap();
        let log = SegmentLog::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.end(), 2, "the record with a bad checksum is dropped");
    }

    #[tokio::test]
    async fn concurrent_appends_are_group_committed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SegmentLog::open(dir.path(), LogOptions::default()).unwrap());
        let mut tasks = Vec::new();
        for t in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.append(recs(10, &format!("t{t}"))).await.unwrap() }));
        }
        let mut firsts = Vec::new();
        for t in tasks {
            firsts.push(t.await.unwrap());
        }
        firsts.sort_unstable();
        assert_eq!(firsts, (0..8).map(|i| i * 10).collect::<Vec<_>>());
        let mut r = log.reader(0).unwrap();
        let all = r.next_batch(1000).await.unwrap();
        assert_eq!(all.len(), 80);
        assert!(all.iter().enumerate().all(|(i, (s, _))| *s == i as u64));
    }
}
