//! [`SegmentLog`]: the embedded log, files of framed records under one folder.
//!
//! One writer thread owns the active segment. Appends queue up while it
//! fsyncs; it then writes everything queued in one `write` and one
//! `fdatasync` (group commit) and acknowledges each append. Readers follow
//! the durable end (published lock-free, with a `Notify` to wake them) and
//! read segments with their own file handles, never past the durable byte
//! offset.
//!
//! Segments are written into space that is already allocated whenever it
//! can be: a released segment is kept as a spare (up to [`MAX_SPARES`]) and
//! reused as the next one, and when there is none a spare is zero-filled in
//! the background. Overwriting allocated blocks lets `fdatasync` skip the
//! file-size metadata that an append must commit, which halves its latency
//! on ext4. A reused segment holds old bytes past its end; the sequence
//! number and CRC of each record tell them apart on recovery.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, oneshot};

use super::record::{self, HEADER, Parsed};
use super::space::{self, Space};
use super::{LogError, LogReader, Seq};

/// How the log behaves.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// `fdatasync` before acknowledging. Off only in benchmarks of the
    /// log itself.
    pub fsync: bool,
    /// Appends are refused while less than this is free on the log's
    /// filesystem (see [`crate::space`]); 0 never refuses.
    pub min_free_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_bytes: 64 * 1024 * 1024, fsync: true, min_free_bytes: 0 }
    }
}

struct Append {
    records: Vec<Bytes>,
    done: oneshot::Sender<Result<Seq, LogError>>,
}

/// Released segments kept for reuse.
pub const MAX_SPARES: usize = 2;

/// What is durable: everything before record `seq`, which ends at byte
/// `offset` of the active segment starting at `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    seq: Seq,
    base: Seq,
    offset: u64,
}

/// State the writer, the readers and `release` share. Nothing here that
/// a reader or `release` touches is behind a lock the writer also takes:
/// readers and releases run on destination threads at the lowest
/// priority, and a lock such a thread held when the kernel preempted it
/// would stall the writer — and every acknowledgement — for as long as
/// the thread waited to run again (tens of ms beside a spinning plugin).
struct Shared {
    dir: PathBuf,
    /// Base sequence numbers of the segments on disk, ascending; replaced
    /// whole (read-copy-update) by a roll or a release.
    segments: ArcSwap<Vec<Seq>>,
    /// Releases one at a time (never taken by the writer).
    releasing: Mutex<()>,
    /// The durable end, published by the writer after each group commit.
    durable: ArcSwap<Durable>,
    /// Wakes readers waiting for [`Shared::durable`] to move.
    grown: Notify,
    /// Set when the writer has stopped.
    closed: AtomicBool,
    released: AtomicU64,
    /// Allocated files ready to become the next segment.
    spares: Mutex<Vec<PathBuf>>,
    /// A spare is being zero-filled.
    filling: AtomicBool,
    segment_bytes: u64,
    space: Arc<Space>,
    /// Why the writer refuses every append, once a failed write could not
    /// be undone.
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn path(&self, base: Seq) -> PathBuf {
        segment_path(&self.dir, base)
    }

    fn bases(&self) -> Arc<Vec<Seq>> {
        self.segments.load_full()
    }

    fn durable(&self) -> Durable {
        **self.durable.load()
    }

    /// Makes `d` the durable end and wakes the readers waiting for it.
    fn publish(&self, d: Durable) {
        self.durable.store(Arc::new(d));
        self.grown.notify_waiters();
    }

    /// No more appends: wakes every waiting reader for good.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.grown.notify_waiters();
    }

    /// Resolves once the durable end is past `pos`.
    async fn wait_past(&self, pos: Seq) -> Result<(), LogError> {
        loop {
            let grown = self.grown.notified();
            tokio::pin!(grown);
            grown.as_mut().enable();
            if self.durable().seq > pos {
                return Ok(());
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(LogError::Closed);
            }
            grown.await;
        }
    }

    fn take_spare(&self) -> Option<PathBuf> {
        self.spares.lock().ok().and_then(|mut s| s.pop())
    }

    /// Keeps a released segment as a spare, or deletes it when there are
    /// enough or space is short.
    fn retire(&self, path: &Path, base: Seq) -> std::io::Result<()> {
        // The lock is held only to count and to push, never across the
        // rename: the writer takes it at every roll.
        let room = |spares: &Vec<PathBuf>| spares.len() < MAX_SPARES;
        if self.space.pressed() || !self.spares.lock().is_ok_and(|s| room(&s)) {
            return std::fs::remove_file(path);
        }
        let spare = self.dir.join(format!("spare-{base:020}.seg"));
        std::fs::rename(path, &spare)?;
        match self.spares.lock() {
            Ok(mut spares) if room(&spares) => {
                spares.push(spare);
                Ok(())
            }
            _ => std::fs::remove_file(&spare),
        }
    }

    /// Zero-fills a new spare on a background thread, unless one is
    /// already being filled.
    fn fill_spare_in_background(self: &Arc<Self>) {
        if self.space.pressed() || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        let spawned = std::thread::Builder::new().name("log-prealloc".into()).spawn(move || {
            let path = shared.dir.join(format!("spare-new-{}.seg", fastrand::u64(..)));
            shared.space.wrote(shared.segment_bytes);
            match zero_fill(&path, shared.segment_bytes) {
                Ok(()) => {
                    if let Ok(mut s) = shared.spares.lock() {
                        s.push(path);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot preallocate a log segment");
                    let _ = std::fs::remove_file(&path);
                }
            }
            shared.filling.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.filling.store(false, Ordering::Release);
        }
    }

    /// Deletes the spares: space is short.
    fn give_back_spares(&self) {
        let spares: Vec<PathBuf> = self.spares.lock().map(|mut s| s.drain(..).collect()).unwrap_or_default();
        for spare in spares {
            match std::fs::remove_file(&spare) {
                Ok(()) => tracing::info!(spare = %spare.display(), "disk space is short: spare log segment deleted"),
                Err(e) => tracing::warn!(spare = %spare.display(), error = %e, "cannot delete spare log segment"),
            }
        }
    }
}

/// Writes `len` zero bytes to a new file at `path` and syncs it, a
/// [`ZERO_FILL_CHUNK`] at a time.
///
/// Each chunk is made durable before the next is written, so the spare
/// never has more than one chunk of dirty pages. Written whole and synced
/// once, its 64 MiB reached the disk in one burst that the writer's next
/// `fdatasync` queued behind (and, on ext4 with `data=ordered`, a journal
/// commit had to flush first): every segment roll beside a destination
/// holding old segments — one with a backlog — cost acknowledged appends a
/// latency spike of tens of milliseconds.
fn zero_fill(path: &Path, len: u64) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create_new(true).write(true).open(path)?;
    let chunk = vec![0u8; ZERO_FILL_CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        f.sync_data()?;
        left -= n as u64;
    }
    f.sync_all()
}

/// The zero-fill of a spare writes and syncs this much at a time.
const ZERO_FILL_CHUNK: usize = 1 << 20;

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
        let mut bases: Vec<Seq> = Vec::new();
        let mut spares = Vec::new();
        for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(base) = name.strip_suffix(".log").and_then(|n| n.parse::<Seq>().ok()) {
                bases.push(base);
            } else if name.starts_with("spare-") && name.ends_with(".seg") {
                // A spare whose zero-fill a crash cut short is still space.
                spares.push(entry.path());
            }
        }
        spares.truncate(MAX_SPARES);
        bases.sort_unstable();
        if bases.is_empty() {
            File::create(segment_path(dir, 0))?;
            bases.push(0);
        }
        let last = *bases.last().unwrap_or(&0);
        let (next, size) = recover_tail(&segment_path(dir, last), last)?;
        let durable = ArcSwap::from_pointee(Durable { seq: next, base: last, offset: size });
        let spare_room = opts.segment_bytes.saturating_mul(MAX_SPARES as u64);
        let space = Arc::new(Space::new(dir, opts.min_free_bytes, spare_room)?);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            segments: ArcSwap::from_pointee(bases),
            releasing: Mutex::new(()),
            durable,
            grown: Notify::new(),
            closed: AtomicBool::new(false),
            released: AtomicU64::new(0),
            spares: Mutex::new(spares),
            filling: AtomicBool::new(false),
            segment_bytes: opts.segment_bytes,
            space: space.clone(),
            failed: Mutex::new(None),
        });
        if opts.min_free_bytes > 0 {
            let weak = Arc::downgrade(&shared);
            space::watch(&space, report_floor, move || {
                if let Some(shared) = weak.upgrade() {
                    shared.give_back_spares();
                }
            })?;
        }
        let mut file = OpenOptions::new().write(true).open(shared.path(last))?;
        file.seek(SeekFrom::Start(size))?;
        let (tx, rx) = mpsc::channel::<Append>();
        let allocated = file.metadata()?.len();
        let w = Writer { shared: shared.clone(), file, base: last, size, allocated, next, opts, failed: None };
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

    /// Bytes on disk across all segments (spares not included).
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

/// Logs the free space crossing the floor, either way.
fn report_floor(below: bool, space: &Space) {
    let free_mb = space.free() / (1024 * 1024);
    if below {
        tracing::warn!(free_mb, "refusing events: disk space below the floor (server.min_free_disk_mb)");
    } else {
        tracing::info!(free_mb, "disk space above the floor again: accepting events");
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
        // Zeros or older records past the end are preallocated or reused
        // space; anything else is a write a crash tore.
        let reused = data[at..].iter().all(|b| *b == 0)
            || matches!(record::parse(&data[at..]), Parsed::Record { seq, .. } if seq < next);
        if !reused {
            tracing::warn!(segment = %path.display(), valid = at, cut = data.len() - at, "cutting torn or corrupt log tail");
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(at as u64)?;
            f.sync_all()?;
        }
    }
    Ok((next, at as u64))
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    /// The active segment's base.
    base: Seq,
    /// Bytes of records in the active segment; it is written at this offset.
    size: u64,
    /// Bytes the active segment's file has allocated (a spare's whole
    /// length): writes within them take no free space.
    allocated: u64,
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
        self.shared.close();
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
                if self.size > self.allocated {
                    self.shared.space.wrote(self.size - self.allocated);
                    self.allocated = self.size;
                }
                self.next = seq;
                self.shared.publish(Durable { seq, base: self.base, offset: self.size });
                Committed { firsts, error: None }
            }
            Err(e) => {
                // Write the next group where this one started, over whatever
                // part of it landed; if even that fails, refuse all further
                // appends.
                let undo = self.file.seek(SeekFrom::Start(self.size)).map(|_| ());
                if let Err(u) = undo {
                    let reason = format!("log unusable after failed write ({e}) and failed undo ({u})");
                    if let Ok(mut failed) = self.shared.failed.lock() {
                        *failed = Some(reason.clone());
                    }
                    self.failed = Some(reason);
                }
                tracing::error!(error = %e, "log append failed");
                Committed { firsts, error: Some(LogError::Io(e.to_string())) }
            }
        }
    }

    /// Closes the active segment at its last record and starts the next one
    /// in a spare when there is one.
    fn roll(&mut self) -> Result<(), LogError> {
        // Cut reused or preallocated space: a closed segment ends at its
        // last record, so readers can read it to the end of the file.
        self.file.set_len(self.size)?;
        self.file.sync_all()?;
        let path = self.shared.path(self.next);
        let spare = self.shared.take_spare().filter(|spare| std::fs::rename(spare, &path).is_ok());
        if spare.is_none() {
            self.shared.fill_spare_in_background();
        }
        self.file = OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
        self.allocated = self.file.metadata()?.len();
        if let Ok(dir) = File::open(&self.shared.dir) {
            let _ = dir.sync_all();
        }
        self.size = 0;
        self.base = self.next;
        let next = self.next;
        self.shared.segments.rcu(|bases| {
            let mut bases = Vec::clone(bases);
            bases.push(next);
            bases
        });
        Ok(())
    }
}

struct Committed {
    firsts: Vec<Seq>,
    error: Option<LogError>,
}

impl SegmentLog {
    /// Appends `records` and resolves once they are durable (one group
    /// commit with whatever else is queued). Returns the sequence number of
    /// the first one; the rest follow in order.
    ///
    /// # Errors
    ///
    /// When the records could not be made durable.
    pub async fn append(&self, records: Vec<Bytes>) -> Result<Seq, LogError> {
        if records.is_empty() {
            return Ok(self.end());
        }
        self.shared.space.check().map_err(LogError::from)?;
        let (done, rx) = oneshot::channel();
        {
            let tx = self.tx.lock().map_err(|_| LogError::Closed)?;
            tx.as_ref().ok_or(LogError::Closed)?.send(Append { records, done }).map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// A reader starting at `from` (clamped to what the log still holds).
    ///
    /// # Errors
    ///
    /// None today; kept for backends that open files here.
    pub fn reader(&self, from: Seq) -> Result<SegmentReader, LogError> {
        let first = self.shared.bases().first().copied().unwrap_or(0);
        Ok(SegmentReader { shared: self.shared.clone(), pos: from.max(first), file: None })
    }

    /// The sequence number the next append will get.
    pub fn end(&self) -> Seq {
        self.shared.durable().seq
    }

    /// Whether an append would be accepted now: `Err` while the free space
    /// is below the floor, or when a failed write left the log unusable.
    ///
    /// # Errors
    ///
    /// [`LogError::BelowFloor`], or [`LogError::Io`] with the failure.
    pub fn accepting(&self) -> Result<(), LogError> {
        if let Some(reason) = self.shared.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(LogError::Io(reason));
        }
        self.shared.space.check().map_err(LogError::from)
    }

    /// Free bytes on the log's filesystem, as last measured.
    pub fn free_bytes(&self) -> u64 {
        self.shared.space.free()
    }

    /// Bytes of the segments holding records from `seq` on: whole
    /// segments, from the one that holds `seq` (the most deleting every
    /// reader behind `seq` could free).
    pub fn bytes_from(&self, seq: Seq) -> u64 {
        let bases = self.shared.bases();
        let durable = self.shared.durable();
        let mut total = 0;
        for (i, base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied().unwrap_or(Seq::MAX);
            if next <= seq {
                continue;
            }
            total += if *base == durable.base {
                durable.offset
            } else {
                std::fs::metadata(self.shared.path(*base)).map(|m| m.len()).unwrap_or(0)
            };
        }
        total
    }

    /// The oldest record the log holds (the first segment's base).
    pub fn oldest(&self) -> Seq {
        self.shared.bases().first().copied().unwrap_or(0)
    }

    /// Tells the log that no reader needs records before `seq` any more;
    /// whole segments before it are deleted (or kept as spares and
    /// overwritten).
    ///
    /// `seq` must be at or behind every reader's *persisted* position (the
    /// one it restarts from after a crash), not merely the position it has
    /// reached: [`crate::Cursors`] returns exactly that minimum.
    pub fn release(&self, seq: Seq) {
        let prev = self.shared.released.fetch_max(seq, Ordering::Relaxed);
        if seq <= prev {
            return;
        }
        let Ok(_one_at_a_time) = self.shared.releasing.lock() else { return };
        // A segment can go when the next one starts at or before `seq`; the
        // last (active) segment always stays: its name carries the next seq.
        // Taken off the list first (the writer may push meanwhile), then
        // deleted or kept as a spare: no reader needs it.
        let bases = self.shared.bases();
        let gone: Vec<Seq> = bases.windows(2).take_while(|w| w[1] <= seq).map(|w| w[0]).collect();
        if gone.is_empty() {
            return;
        }
        self.shared.segments.rcu(|bases| bases.iter().copied().filter(|b| !gone.contains(b)).collect::<Vec<_>>());
        for base in gone {
            let path = self.shared.path(base);
            match self.shared.retire(&path, base) {
                Ok(()) => tracing::debug!(segment = %path.display(), "deleted delivered log segment"),
                Err(e) => tracing::warn!(segment = %path.display(), error = %e, "cannot delete log segment"),
            }
        }
    }
}

/// A reader of a [`SegmentLog`].
pub struct SegmentReader {
    shared: Arc<Shared>,
    pos: Seq,
    /// The open segment, positioned at `pos`.
    file: Option<SegmentFile>,
}

impl SegmentReader {
    /// Reads records `pos..durable.seq` (at most `max`). Segment files are
    /// read with blocking I/O: they are sequential, mostly in the page
    /// cache, and the batch is small.
    fn read(&mut self, max: usize, durable: Durable) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let mut out = Vec::new();
        // One snapshot per call, taken after `durable` was: a roll adds its
        // segment before any record in it is durable, so the snapshot holds
        // every segment up to `durable`.
        let bases = self.shared.bases();
        while out.len() < max && self.pos < durable.seq {
            let base = bases.iter().rev().find(|b| **b <= self.pos).copied().ok_or(LogError::Corrupt {
                segment: "-".into(),
                offset: 0,
                reason: format!("no segment holds record {}", self.pos),
            })?;
            if self.file.as_ref().map(|f| f.base) != Some(base) {
                self.file = Some(SegmentFile::open(&self.shared.path(base), base)?);
                self.skip_to(durable)?;
                continue;
            }
            let Some(file) = self.file.as_mut() else { continue };
            // The active segment may hold preallocated or reused space past
            // its durable end; a closed one ends at its last record.
            let limit = if base == durable.base { durable.offset } else { u64::MAX };
            match file.next(limit)? {
                Some((seq, payload)) if seq == self.pos => {
                    out.push((seq, payload));
                    self.pos += 1;
                }
                Some((seq, _)) => {
                    return Err(LogError::Corrupt {
                        segment: format!("{base:020}.log"),
                        offset: file.offset(),
                        reason: format!("expected record {}, found {seq}", self.pos),
                    });
                }
                None => {
                    // End of this segment: the next one holds `pos`.
                    if !bases.iter().any(|b| *b > base) {
                        break;
                    }
                    self.file = None;
                }
            }
        }
        Ok(out)
    }

    /// Positions the freshly opened segment at `pos`, skipping earlier records.
    fn skip_to(&mut self, durable: Durable) -> Result<(), LogError> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let limit = if file.base == durable.base { durable.offset } else { u64::MAX };
        let mut seq = file.base;
        while seq < self.pos {
            match file.next(limit)? {
                Some((s, _)) => seq = s + 1,
                None => break,
            }
        }
        Ok(())
    }
}

/// One segment file open for reading, with a read-ahead buffer that never
/// reaches past the limit it is given.
struct SegmentFile {
    base: Seq,
    file: File,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    at: usize,
    /// The file offset of `buf[0]`.
    buf_offset: u64,
}

/// Read-ahead per `pread`.
const READ_CHUNK: usize = 256 * 1024;

impl SegmentFile {
    fn open(path: &Path, base: Seq) -> Result<SegmentFile, LogError> {
        Ok(SegmentFile { base, file: File::open(path)?, buf: Vec::new(), at: 0, buf_offset: 0 })
    }

    /// The file offset of the next record.
    fn offset(&self) -> u64 {
        self.buf_offset + self.at as u64
    }

    /// The next record, or `None` at the end of the file or at `limit`.
    fn next(&mut self, limit: u64) -> Result<Option<(Seq, Bytes)>, LogError> {
        if !self.fill(HEADER, limit)? {
            return Ok(None);
        }
        let h = &self.buf[self.at..self.at + 4];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > record::MAX_PAYLOAD {
            return Err(self.corrupt("length out of range"));
        }
        if !self.fill(HEADER + len, limit)? {
            return Ok(None);
        }
        match record::parse(&self.buf[self.at..self.at + HEADER + len]) {
            Parsed::Record { seq, payload_at, len } => {
                let payload = Bytes::copy_from_slice(&self.buf[self.at + payload_at..self.at + len]);
                self.at += len;
                Ok(Some((seq, payload)))
            }
            Parsed::Corrupt(reason) => Err(self.corrupt(reason)),
            Parsed::Incomplete => Ok(None),
        }
    }

    /// Makes `need` unread bytes available, reading no further than
    /// `limit`. False when the file or the limit ends first.
    fn fill(&mut self, need: usize, limit: u64) -> Result<bool, LogError> {
        use std::os::unix::fs::FileExt as _;
        while self.buf.len() - self.at < need {
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.buf_offset += self.at as u64;
                self.at = 0;
            }
            let pos = self.buf_offset + self.buf.len() as u64;
            if pos >= limit {
                return Ok(false);
            }
            let want = READ_CHUNK.max(need - self.buf.len()).min(usize::try_from(limit - pos).unwrap_or(usize::MAX));
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let n = self.file.read_at(&mut self.buf[old..], pos);
            self.buf.truncate(old + *n.as_ref().unwrap_or(&0));
            if n? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn corrupt(&self, reason: &str) -> LogError {
        LogError::Corrupt { segment: format!("{:020}.log", self.base), offset: self.offset(), reason: reason.into() }
    }
}

impl LogReader for SegmentReader {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        self.shared.wait_past(self.pos).await?;
        let durable = self.shared.durable();
        self.read(max, durable)
    }

    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let durable = self.shared.durable();
        if self.pos < durable.seq { self.read(max, durable) } else { Ok(Vec::new()) }
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        self.shared.wait_past(self.pos).await
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
        let opts = LogOptions { segment_bytes: 200, fsync: true, min_free_bytes: 0 };
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

    /// Readers opened at arbitrary positions, racing a writer that rolls
    /// small segments and a release that deletes what they passed, always
    /// see every record from their start, in order, with its payload.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_at_any_position_race_appends_rolls_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            SegmentLog::open(dir.path(), LogOptions { segment_bytes: 700, fsync: false, min_free_bytes: 0 }).unwrap(),
        );
        let payload = |seq: u64| Bytes::from(format!("r{seq}-{}", "x".repeat((seq % 37) as usize)));
        const TOTAL: u64 = 3_000;
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut next = 0;
                while next < TOTAL {
                    let n = (fastrand::u64(1..40)).min(TOTAL - next);
                    let first = log.append((next..next + n).map(payload).collect()).await.unwrap();
                    assert_eq!(first, next);
                    next += n;
                    if fastrand::bool() {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        // Each reader starts where the previous one is, so releasing up to
        // the slowest reader's position never removes what a reader needs.
        let mut readers = Vec::new();
        for _ in 0..6 {
            let from = fastrand::u64(0..TOTAL / 4);
            let log = log.clone();
            readers.push(tokio::spawn(async move {
                let mut r = log.reader(from).unwrap();
                let mut want = from;
                while want < TOTAL {
                    for (seq, got) in r.next_batch(fastrand::usize(1..64)).await.unwrap() {
                        assert_eq!(seq, want, "records arrive in order, gap-free");
                        assert_eq!(got, payload(seq));
                        want += 1;
                    }
                    assert_eq!(r.position(), want);
                }
            }));
        }
        writer.await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
        // A reader reopened mid-segment after most segments are released.
        log.release(TOTAL - 100);
        let from = TOTAL - 50;
        let mut r = log.reader(from).unwrap();
        let got = r.next_batch(1_000).await.unwrap();
        assert_eq!(got.len(), 50);
        assert!(got.iter().zip(from..).all(|((s, p), want)| *s == want && *p == payload(want)));
    }

    /// Released segments are reused as spares: a reader never sees their old
    /// bytes, and a restart finds the end of the records in reused space.
    #[tokio::test]
    async fn reused_segments_hide_their_old_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_bytes: 300, fsync: true, min_free_bytes: 0 };
        {
            let log = SegmentLog::open(dir.path(), opts.clone()).unwrap();
            let mut r = log.reader(0).unwrap();
            let mut next = 0u64;
            for round in 0..20 {
                let first = log.append(recs(7, &format!("round{round}"))).await.unwrap();
                assert_eq!(first, next);
                let got = r.next_batch(100).await.unwrap();
                assert_eq!(got.len(), 7, "round {round}");
                for (i, (seq, payload)) in got.into_iter().enumerate() {
                    assert_eq!(seq, next + i as u64);
                    assert_eq!(payload, Bytes::from(format!("round{round}-{i}")));
                }
                next += 7;
                log.release(next);
            }
            let spares = std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("spare-"))
                .count();
            assert!(spares <= MAX_SPARES);
        }
        // The active segment is a reused file with older records past the
        // end: a restart continues right after the last record.
        let log = SegmentLog::open(dir.path(), opts).unwrap();
        assert_eq!(log.end(), 140);
        assert_eq!(log.append(recs(1, "after")).await.unwrap(), 140);
        let mut r = log.reader(140).unwrap();
        assert_eq!(r.next_batch(10).await.unwrap(), vec![(140, Bytes::from("after-0"))]);
    }
}
