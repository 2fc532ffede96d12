//! Where a consumer stands in the log: the events it has read but not
//! finished, and so the position it may save — the first unfinished event,
//! or the read position when none is.
//!
//! Several calls may be in flight at once and finish in any order: an
//! event finished out of order does not move the position past an earlier
//! one still in flight or waiting for a retry, so a crash redelivers
//! everything unfinished (at-least-once) and skips nothing.

use std::collections::BTreeSet;

use super::Seq;

/// The unfinished events of one destination and its last saved position.
#[derive(Debug)]
pub struct Progress {
    unfinished: BTreeSet<Seq>,
    saved: Seq,
}

impl Progress {
    /// Progress from a saved position `at`.
    pub fn new(at: Seq) -> Progress {
        Progress { unfinished: BTreeSet::new(), saved: at }
    }

    /// Event `seq` was read and is on its way.
    pub fn started(&mut self, seq: Seq) {
        self.unfinished.insert(seq);
    }

    /// Event `seq` has its final outcome (delivered, or dead-lettered).
    pub fn finished(&mut self, seq: Seq) {
        self.unfinished.remove(&seq);
    }

    /// Events read and not finished.
    pub fn in_flight(&self) -> usize {
        self.unfinished.len()
    }

    /// The position to save when the reader is at `read`: the first
    /// unfinished event, else `read`.
    pub fn position(&self, read: Seq) -> Seq {
        self.unfinished.first().copied().unwrap_or(read)
    }

    /// The position to save, if it moved since the last save.
    pub fn to_save(&self, read: Seq) -> Option<Seq> {
        let at = self.position(read);
        (at != self.saved).then_some(at)
    }

    /// Records that `at` was saved.
    pub fn saved(&mut self, at: Seq) {
        self.saved = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_completion_never_moves_the_position_past_an_unfinished_event() {
        let mut p = Progress::new(100);
        // Three calls in flight: 100..110, 110..120, 120..130.
        for seq in 100..130 {
            p.started(seq);
        }
        assert_eq!(p.to_save(130), None, "nothing finished yet");
        // The third call finishes first, then the second.
        (120..130).for_each(|s| p.finished(s));
        assert_eq!(p.to_save(130), None);
        (110..120).for_each(|s| p.finished(s));
        assert_eq!(p.position(130), 100);
        // The first call finishes except one event that waits for a retry.
        (100..110).filter(|s| *s != 104).for_each(|s| p.finished(s));
        assert_eq!(p.to_save(130), Some(104));
        p.saved(104);
        assert_eq!(p.to_save(130), None, "saved already");
        assert_eq!(p.in_flight(), 1);
        // Its retry succeeds: the position is the read position.
        p.finished(104);
        assert_eq!(p.to_save(130), Some(130));
    }

    #[test]
    fn an_idle_destination_follows_the_read_position() {
        let mut p = Progress::new(7);
        assert_eq!(p.to_save(7), None);
        assert_eq!(p.to_save(9), Some(9), "read past filtered-out events");
        p.saved(9);
        assert_eq!(p.to_save(9), None);
    }
}
