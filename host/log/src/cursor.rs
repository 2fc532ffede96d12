//! Per-destination cursors: how far into the log each destination has
//! finished, persisted under `data_dir/cursors`, and the minimum over all
//! destinations that tells the log what it may delete.
//!
//! # The invariant
//!
//! A segment is released (deleted, or kept as a spare and overwritten) only
//! behind every *persisted* position. [`Cursors`] keeps nothing but
//! persisted positions: a position enters it after its write is durable,
//! and the minimum it returns is what [`crate::LocalLog`] passes to
//! [`SegmentLog::release`](crate::SegmentLog::release). So however saves
//! are timed, a crash restarts every destination at a position whose
//! records are still on disk.
//!
//! # The file
//!
//! A cursor file is [`FILE_BYTES`] long and holds two slots, one per 4 KiB
//! block: `magic | generation: u64 LE | position: u64 LE | crc32: u32 LE`.
//! A save overwrites the older slot in place and syncs it, so it:
//!
//! - needs no free block (the file was allocated when the destination
//!   was first seen), and keeps working on a full disk, where a write to
//!   a temporary file and a rename would fail and hold every segment;
//! - survives power loss: a torn write spoils only the slot being written,
//!   and the other still holds the previous position.
//!
//! A new cursor file is written whole to a temporary name, synced, renamed
//! into place and its folder synced, so once [`Cursors::load`] returns the
//! file exists after a power loss too. A file that is there but that no
//! slot of can be read (truncated by a filesystem repair, edited by hand)
//! is never taken for a new destination, which would start at the log's
//! end and skip what it had not delivered: the destination resumes from the
//! oldest record the log holds, and the error is logged. Its events may be
//! delivered twice; none is skipped. Cursor files of older versions (the
//! position as decimal text) are read and rewritten in this format.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Seq;

/// Bytes of a cursor file: two slots, each in its own 4 KiB block.
pub const FILE_BYTES: usize = 2 * SLOT_STRIDE;
const SLOT_STRIDE: usize = 4096;
const MAGIC: &[u8; 8] = b"SYCURSR2";
const SLOT_BYTES: usize = 8 + 8 + 8 + 4;

/// What a cursor file held when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// A position saved by an earlier run.
    Saved(Seq),
    /// The file exists but holds no readable position; the destination
    /// resumes from the oldest retained record.
    Unreadable(String),
}

/// The cursors of every destination, shared by their workers.
#[derive(Clone)]
pub struct Cursors {
    dir: PathBuf,
    sync: bool,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Persisted positions only (see the module docs).
    positions: HashMap<String, Seq>,
    /// Open files of the cursors saved in this run.
    files: HashMap<String, Arc<Mutex<OpenCursor>>>,
    /// Cursor files found unreadable on open, until loaded.
    unreadable: HashMap<String, String>,
}

impl Cursors {
    /// Opens the cursor folder, creating it; `sync` makes each save
    /// durable (off only in benchmarks of the log itself).
    ///
    /// Every cursor file found is registered, also of destinations no
    /// longer in the config: the events they have not delivered are kept
    /// until [`Cursors::remove`]. An unreadable file registers its
    /// destination at position 0 (everything the log holds) until it is
    /// loaded.
    ///
    /// # Errors
    ///
    /// When the folder cannot be created or listed.
    pub fn open(dir: &Path, sync: bool) -> std::io::Result<Cursors> {
        std::fs::create_dir_all(dir)?;
        let mut state = State::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "cursor") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            match read(&path) {
                Loaded::Saved(at) => {
                    state.positions.insert(name.to_owned(), at);
                }
                Loaded::Unreadable(why) => {
                    state.positions.insert(name.to_owned(), 0);
                    state.unreadable.insert(name.to_owned(), why);
                }
            }
        }
        Ok(Cursors { dir: dir.to_owned(), sync, state: Arc::new(Mutex::new(state)) })
    }

    /// Every registered destination.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().map(|s| s.positions.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }

    /// Deletes `name`'s cursor and returns the new minimum over the rest.
    ///
    /// # Errors
    ///
    /// When the file cannot be deleted.
    pub fn remove(&self, name: &str) -> std::io::Result<Option<Seq>> {
        let mut s = self.lock()?;
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        s.positions.remove(name);
        s.files.remove(name);
        s.unreadable.remove(name);
        Ok(s.positions.values().copied().min())
    }

    /// `name`'s saved position, or, for a new destination, `new` — written
    /// at once: were it written only after the first batch, a crash before
    /// then would restart the destination at the log's end, past what it
    /// had not delivered yet. An unreadable cursor file yields
    /// [`Loaded::Unreadable`] and is rewritten at `oldest`, the first
    /// record the log holds. The destination is registered, holding back
    /// deletion from its position.
    ///
    /// # Errors
    ///
    /// When a cursor cannot be written.
    pub fn load(&self, name: &str, new: Seq, oldest: Seq) -> std::io::Result<(Seq, Option<Loaded>)> {
        let path = self.path(name);
        let found = self.lock()?.unreadable.remove(name).map(Loaded::Unreadable).or_else(|| match path.exists() {
            true => Some(read(&path)),
            false => None,
        });
        let (at, rewrite) = match &found {
            // A file of an older version is rewritten in this format.
            Some(Loaded::Saved(at)) => (*at, std::fs::read(&path).map(|b| newest_of(&b).is_none()).unwrap_or(true)),
            Some(Loaded::Unreadable(_)) => (oldest, true),
            None => (new, true),
        };
        if rewrite {
            self.create(name, at)?;
        }
        self.lock()?.positions.insert(name.to_owned(), at);
        Ok((at, found))
    }

    /// Persists `name`'s position and returns the minimum over all
    /// destinations. The older of the file's two slots is overwritten in
    /// place and synced; see the module docs.
    ///
    /// # Errors
    ///
    /// When the file cannot be written; the last persisted position stands.
    pub fn save(&self, name: &str, at: Seq) -> std::io::Result<Seq> {
        let file = self.file(name)?;
        {
            // The file's own lock: destinations save concurrently.
            let mut f = file.lock().map_err(|_| std::io::Error::other("cursor lock poisoned"))?;
            let next = f.generation + 1;
            f.file.write_all_at(&slot(next, at), slot_offset(next))?;
            if self.sync {
                f.file.sync_data()?;
            }
            f.generation = next;
        }
        let mut s = self.lock()?;
        s.positions.insert(name.to_owned(), at);
        Ok(s.positions.values().copied().min().unwrap_or(at))
    }

    /// `name`'s open cursor file, opened on its first save in this run.
    fn file(&self, name: &str) -> std::io::Result<Arc<Mutex<OpenCursor>>> {
        let mut s = self.lock()?;
        if let Some(f) = s.files.get(name) {
            return Ok(f.clone());
        }
        let file = OpenOptions::new().read(true).write(true).open(self.path(name))?;
        let generation = newest_slot(&file).map(|(g, _)| g).unwrap_or(0);
        let f = Arc::new(Mutex::new(OpenCursor { file, generation }));
        s.files.insert(name.to_owned(), f.clone());
        Ok(f)
    }

    /// `name`'s persisted position, if it is registered.
    pub fn position(&self, name: &str) -> Option<Seq> {
        self.lock().ok().and_then(|s| s.positions.get(name).copied())
    }

    /// Writes a new cursor file for `name` at `at`: both slots, to a
    /// temporary file that is synced and renamed into place, then the
    /// folder is synced.
    fn create(&self, name: &str, at: Seq) -> std::io::Result<()> {
        let path = self.path(name);
        let tmp = path.with_extension("tmp");
        let mut bytes = vec![0u8; FILE_BYTES];
        bytes[..SLOT_BYTES].copy_from_slice(&slot(2, at));
        bytes[SLOT_STRIDE..SLOT_STRIDE + SLOT_BYTES].copy_from_slice(&slot(1, at));
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        if self.sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if self.sync {
            File::open(&self.dir)?.sync_all()?;
        }
        self.lock()?.files.remove(name);
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cursor"))
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| std::io::Error::other("cursor lock poisoned"))
    }
}

/// A cursor file open for saves, and the generation last written to it.
struct OpenCursor {
    file: File,
    generation: u64,
}

/// The slot generation `generation` is written to.
fn slot_offset(generation: u64) -> u64 {
    (generation % 2) * SLOT_STRIDE as u64
}

fn slot(generation: u64, at: Seq) -> [u8; SLOT_BYTES] {
    let mut out = [0u8; SLOT_BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out[16..24].copy_from_slice(&at.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn parse_slot(bytes: &[u8]) -> Option<(u64, Seq)> {
    let bytes = bytes.get(..SLOT_BYTES)?;
    let crc = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
    if &bytes[..8] != MAGIC || crc32fast::hash(&bytes[..24]) != crc {
        return None;
    }
    let generation = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    Some((generation, Seq::from_le_bytes(bytes[16..24].try_into().ok()?)))
}

/// The newest valid slot of an open cursor file: (generation, position).
fn newest_slot(file: &File) -> Option<(u64, Seq)> {
    let mut bytes = vec![0u8; FILE_BYTES];
    let n = file.read_at(&mut bytes, 0).ok()?;
    newest_of(&bytes[..n])
}

fn newest_of(bytes: &[u8]) -> Option<(u64, Seq)> {
    let a = parse_slot(bytes);
    let b = bytes.get(SLOT_STRIDE..).and_then(parse_slot);
    a.into_iter().chain(b).max_by_key(|(generation, _)| *generation)
}

/// Reads a cursor file: this format, or the decimal text of older versions.
fn read(path: &Path) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Loaded::Unreadable(format!("cannot read it: {e}")),
    };
    if let Some((_, at)) = newest_of(&bytes) {
        return Loaded::Saved(at);
    }
    if let Some(at) = std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse().ok()) {
        return Loaded::Saved(at);
    }
    Loaded::Unreadable(match bytes.len() {
        0 => "it is empty".to_owned(),
        n => format!("no readable position in its {n} bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Cursors {
        Cursors::open(dir, true).unwrap()
    }

    #[test]
    fn a_new_cursor_is_persisted_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        assert_eq!(c.load("hook", 40, 0).unwrap(), (40, None));
        // After a crash, the log has grown; the destination resumes at 40.
        let c = open(dir.path());
        assert_eq!(c.load("hook", 90, 0).unwrap(), (40, Some(Loaded::Saved(40))));
        assert_eq!(c.save("hook", 50).unwrap(), 50);
        assert_eq!(c.load("other", 45, 0).unwrap().0, 45);
        assert_eq!(c.save("hook", 60).unwrap(), 45, "the minimum holds back deletion");
        assert_eq!(open(dir.path()).load("hook", 99, 0).unwrap().0, 60);
    }

    #[test]
    fn a_removed_destination_holds_its_events_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.load("kept", 10, 0).unwrap();
        c.load("gone", 5, 0).unwrap();
        // Restart with only `kept` configured: `gone` still holds the log.
        let c = open(dir.path());
        assert_eq!(c.names(), vec!["gone".to_owned(), "kept".to_owned()]);
        assert_eq!(c.load("kept", 99, 0).unwrap().0, 10);
        assert_eq!(c.save("kept", 20).unwrap(), 5);
        assert_eq!(c.remove("gone").unwrap(), Some(20));
        assert_eq!(open(dir.path()).names(), vec!["kept".to_owned()]);
    }

    #[test]
    fn a_save_overwrites_the_file_in_place_and_a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.load("hook", 1, 0).unwrap();
        let path = dir.path().join("hook.cursor");
        let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        let before = inode();
        for at in 2..=7 {
            c.save("hook", at).unwrap();
        }
        assert_eq!(inode(), before, "saved in place, not through a new file");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_BYTES as u64);
        // A power loss tears the last save (position 7): the other slot
        // still holds the one before it.
        let mut bytes = std::fs::read(&path).unwrap();
        let (generation, at) = newest_of(&bytes).unwrap();
        assert_eq!(at, 7);
        let torn = slot_offset(generation) as usize;
        bytes[torn + 17] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path), Loaded::Saved(6));
        let c = open(dir.path());
        assert_eq!(c.load("hook", 99, 0).unwrap().0, 6);
        assert_eq!(c.save("hook", 8).unwrap(), 8, "the torn slot is the next one written");
        assert_eq!(read(&path), Loaded::Saved(8));
    }

    #[test]
    fn an_unreadable_cursor_resumes_from_the_oldest_record_not_the_end() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).load("hook", 30, 0).unwrap();
        std::fs::write(dir.path().join("hook.cursor"), b"").unwrap();
        let c = open(dir.path());
        assert_eq!(c.position("hook"), Some(0), "it holds the whole log until loaded");
        let (at, found) = c.load("hook", 500, 12).unwrap();
        assert_eq!(at, 12, "from the oldest retained record, not the end (500)");
        assert_eq!(found, Some(Loaded::Unreadable("it is empty".into())));
        assert_eq!(open(dir.path()).load("hook", 500, 12).unwrap(), (12, Some(Loaded::Saved(12))), "rewritten");
    }

    #[test]
    fn a_cursor_of_an_older_version_is_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.cursor"), b"1234").unwrap();
        let c = open(dir.path());
        assert_eq!(c.load("hook", 9999, 0).unwrap(), (1234, Some(Loaded::Saved(1234))));
        assert_eq!(c.save("hook", 1300).unwrap(), 1300);
        assert_eq!(read(&dir.path().join("hook.cursor")), Loaded::Saved(1300));
    }
}
