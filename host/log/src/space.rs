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
//! the spares are given back and no new one is prepared. A refusing log
//! accepts again once the floor plus that room (at most half the floor
//! again) is free: giving the spares back cannot then flip a refusal
//! straight back, and ingest does not flap at the floor.

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
    /// An append was refused on the estimate ([`Space::check`]) since the
    /// last measurement: that measurement then judges with the resume
    /// margin, as if below already.
    refused: AtomicBool,
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
            refused: AtomicBool::new(false),
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
        let was = self.below.load(Ordering::Relaxed);
        let refusing = was | self.refused.swap(false, Ordering::Relaxed);
        let below = self.floor > 0 && free < if refusing { self.resume_at() } else { self.floor };
        self.below.store(below, Ordering::Relaxed);
        Ok((was, below))
    }

    /// Free bytes at which a refusing log accepts again: the floor plus
    /// room for the spares (at most half the floor again). Giving the
    /// spares back frees no more than that, so it cannot flip a refusal
    /// straight back, and ingest does not flap at the floor.
    fn resume_at(&self) -> u64 {
        self.floor.saturating_add(self.spare_room.min(self.floor / 2))
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
            self.refused.store(true, Ordering::Relaxed);
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

    /// Once refusing, the log accepts again only with the resume margin
    /// free, so that giving the spares back (or a little deleted) does not
    /// flip it straight back.
    #[test]
    fn a_refusal_lasts_until_the_floor_plus_the_margin_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let free = Space::new(dir.path(), 0, 0).unwrap().free();
        // Gigabytes apart: other processes write to the same disk.
        let floor = free.saturating_sub(2 << 30);
        let space = Space::new(dir.path(), floor, 8 << 30).unwrap();
        assert!(space.check().is_ok());
        space.wrote(3 << 30);
        assert!(space.check().is_err(), "refused on the estimate");
        assert_eq!(space.measure().unwrap(), (false, true), "measured: above the floor, under the margin");
        assert!(space.check().is_err());
        assert_eq!(space.measure().unwrap(), (true, true), "and so it stays");
        let resumed = Space::new(dir.path(), free.saturating_sub(10 << 30), 8 << 30).unwrap();
        resumed.below.store(true, Ordering::Relaxed);
        assert_eq!(resumed.measure().unwrap(), (true, false), "the floor plus the margin free: accepting");
    }
}
