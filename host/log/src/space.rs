//! Free space under the log's folder, and the floor below which appends
//! are refused.
//!
//! A log that fills its filesystem to the last block leaves no room for
//! the small writes that let it recover — a new cursor, the dedupe
//! journal, a dead letter — so appends stop at a floor
//! ([`LogOptions::min_free_bytes`](crate::LogOptions)) while there is still
//! room for those. A thread measures the free space every
//! [`CHECK_EVERY`]; between measurements the writer counts what it wrote,
//! so a burst cannot overshoot the floor by more than one group commit.
//! Once deliveries release segments, or the operator frees space, the next
//! measurement lets appends in again: within [`CHECK_EVERY`], with no
//! traffic needed.
//!
//! Under pressure — less than the floor plus room for the spare segments —
//! the spares are given back and no new one is prepared.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the free space is measured.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Free space as last seen.
pub struct Space {
    dir: PathBuf,
    floor: u64,
    /// Room kept for spares on top of the floor.
    spare_room: u64,
    /// Free bytes at the last measurement.
    free: AtomicU64,
    /// Bytes written since then.
    written: AtomicU64,
    below: AtomicBool,
}

/// Why appends are refused for lack of space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BelowFloor {
    pub free_bytes: u64,
    pub floor_bytes: u64,
}

impl Space {
    /// Measures `dir` once; `floor` 0 never refuses.
    ///
    /// # Errors
    ///
    /// When the filesystem of `dir` cannot be queried.
    pub fn new(dir: &Path, floor: u64, spare_room: u64) -> std::io::Result<Space> {
        let space = Space {
            dir: dir.to_owned(),
            floor,
            spare_room,
            free: AtomicU64::new(u64::MAX),
            written: AtomicU64::new(0),
            below: AtomicBool::new(false),
        };
        space.measure()?;
        Ok(space)
    }

    /// Measures the free space again; returns `(was_below, is_below)`.
    ///
    /// # Errors
    ///
    /// When the filesystem cannot be queried; the last measurement stands.
    pub fn measure(&self) -> std::io::Result<(bool, bool)> {
        let st = rustix::fs::statvfs(&self.dir)?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        self.written.store(0, Ordering::Relaxed);
        self.free.store(free, Ordering::Relaxed);
        let below = self.floor > 0 && free < self.floor;
        let was = self.below.swap(below, Ordering::Relaxed);
        Ok((was, below))
    }

    /// Counts `bytes` written since the last measurement.
    pub fn wrote(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Free bytes: the last measurement less what was written since.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed).saturating_sub(self.written.load(Ordering::Relaxed))
    }

    /// `Err` while the free space is below the floor. An append is not
    /// measured against it: the floor is a margin far larger than a
    /// request, and so ingest and `/ready` always agree.
    pub fn check(&self) -> Result<(), BelowFloor> {
        let free = self.free();
        if self.floor > 0 && (self.below.load(Ordering::Relaxed) || free < self.floor) {
            return Err(BelowFloor { free_bytes: free, floor_bytes: self.floor });
        }
        Ok(())
    }

    /// Whether spares should be given back: less than the floor plus room
    /// for them is free.
    pub fn pressed(&self) -> bool {
        self.floor > 0 && self.free() < self.floor.saturating_add(self.spare_room)
    }
}

/// Measures `space` every [`CHECK_EVERY`] on a thread of its own until
/// the last other reference to it is dropped, calling `on_change` when it
/// crosses the floor and `on_pressure` on each measurement under pressure.
///
/// # Errors
///
/// When the thread cannot be spawned.
pub fn watch(
    space: &Arc<Space>,
    on_change: impl Fn(bool, &Space) + Send + 'static,
    on_pressure: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let weak: Weak<Space> = Arc::downgrade(space);
    std::thread::Builder::new().name("log-space".into()).spawn(move || {
        loop {
            std::thread::sleep(CHECK_EVERY);
            let Some(space) = weak.upgrade() else { return };
            match space.measure() {
                Ok((was, is)) if was != is => on_change(is, &space),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot measure free space"),
            }
            if space.pressed() {
                on_pressure();
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_counts_what_was_written_since_the_last_measurement() {
        let dir = tempfile::tempdir().unwrap();
        let unlimited = Space::new(dir.path(), 0, 0).unwrap();
        unlimited.wrote(u64::MAX);
        assert!(unlimited.check().is_ok(), "no floor, no refusal");
        let free = Space::new(dir.path(), 0, 0).unwrap().free();
        // A floor just under the free space: a small append fits, a large
        // one (or the same after writes) does not.
        // (Gigabytes apart: other processes write to the same disk.)
        let floor = free.saturating_sub(4 << 30);
        let space = Space::new(dir.path(), floor, 1 << 30).unwrap();
        assert!(space.check().is_ok());
        assert!(!space.pressed());
        space.wrote(5 << 30);
        let refused = space.check().unwrap_err();
        assert_eq!(refused.floor_bytes, floor, "the writes since the measurement count");
        assert!(space.pressed());
        let (_, below) = space.measure().unwrap();
        assert!(!below, "nothing was really written: measured again, it fits");
    }
}
