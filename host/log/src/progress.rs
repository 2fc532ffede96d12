//! Where a consumer stands in the log, the bookkeeping every backend's
//! consumer shares: the records it handed out and not finished, the ones
//! waiting to be handed out again, how many may be unfinished at once, and
//! so the position it may save — the first unfinished record, or the read
//! position when none is.
//!
//! Several calls may be in flight at once and finish in any order: a
//! record finished out of order does not move the position past an earlier
//! one still in flight or waiting for a retry, so a crash redelivers
//! everything unfinished (at-least-once) and skips nothing.
//!
//! A record whose attempt failed is handed out again after a delay
//! ([`Progress::redeliver`], the consumer's `nak`): it keeps its payload
//! (a `Bytes` handle, not a copy) until it is finished, so redelivering
//! it reads nothing back. A backend that redelivers by itself (JetStream's
//! nak-with-delay) needs only the position half.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{LogError, Seq};

/// The unfinished records of one consumer and its last saved position.
#[derive(Debug)]
pub struct Progress {
    /// Handed out and not finished, with their payloads.
    unfinished: BTreeMap<Seq, Bytes>,
    /// Unfinished records to hand out again, by due time then log order.
    redeliveries: BinaryHeap<Reverse<(Instant, Seq)>>,
    /// Ordered: the unfinished records waiting to be handed out again, in
    /// log order, with when each is due (instead of `redeliveries`).
    waiting: BTreeMap<Seq, Instant>,
    /// New records are handed out only while fewer are unfinished.
    window: usize,
    /// Nothing new is handed out while anything is unfinished.
    ordered: bool,
    saved: Seq,
}

impl Progress {
    /// Progress from a saved position `at`, with no limit on unfinished
    /// records until [`Progress::set_window`].
    pub fn new(at: Seq) -> Progress {
        Progress {
            unfinished: BTreeMap::new(),
            redeliveries: BinaryHeap::new(),
            waiting: BTreeMap::new(),
            window: usize::MAX,
            ordered: false,
            saved: at,
        }
    }

    /// Record `seq` was handed out and is on its way.
    pub fn started(&mut self, seq: Seq, payload: Bytes) {
        self.unfinished.insert(seq, payload);
    }

    /// Record `seq` has its final outcome (delivered, dead-lettered, or not
    /// for this consumer). A redelivery still queued for it is dropped.
    pub fn finished(&mut self, seq: Seq) {
        self.unfinished.remove(&seq);
        self.waiting.remove(&seq);
    }

    /// Forgets the records in `seqs` without finishing them: another
    /// reader will hand them out (a shared log's consumer that lost its
    /// hold on them). A call still under way for one of them finishes as
    /// a no-op.
    pub fn forget(&mut self, seqs: std::ops::Range<Seq>) {
        let gone: Vec<Seq> = self.unfinished.range(seqs).map(|(seq, _)| *seq).collect();
        for seq in gone {
            self.finished(seq);
        }
    }

    /// Hands record `seq` out again once `delay` has passed (it stays
    /// unfinished meanwhile). Ignored for a record not unfinished.
    pub fn redeliver(&mut self, seq: Seq, delay: Duration) {
        if !self.unfinished.contains_key(&seq) {
            return;
        }
        let at = Instant::now() + delay;
        if self.ordered {
            self.waiting.insert(seq, at);
        } else {
            self.redeliveries.push(Reverse((at, seq)));
        }
    }

    /// In order (a consumer's [`ConsumerOptions::ordered`](crate::ConsumerOptions)):
    /// no new record is handed out while any is unfinished — one batch at
    /// a time, and a failed record is retried before anything after it —
    /// and the records waiting for a retry are handed out together, in log
    /// order, once nothing is on its way and the first of them is due.
    /// Set it before the first record is handed out.
    pub fn set_ordered(&mut self, ordered: bool) {
        self.ordered = ordered;
    }

    /// Ordered: records handed out and neither finished nor waiting.
    fn on_their_way(&self) -> usize {
        self.unfinished.len() - self.waiting.len()
    }

    /// Up to `max` redeliveries due by `now`, in due order (in log order
    /// when ordered).
    pub fn due(&mut self, max: usize, now: Instant) -> Vec<(Seq, Bytes)> {
        let mut out = Vec::new();
        if self.ordered {
            if self.on_their_way() > 0 || self.waiting.first_key_value().is_none_or(|(_, at)| *at > now) {
                return out;
            }
            while out.len() < max
                && let Some((seq, _)) = self.waiting.pop_first()
            {
                if let Some(payload) = self.unfinished.get(&seq) {
                    out.push((seq, payload.clone()));
                }
            }
            return out;
        }
        while out.len() < max
            && let Some(Reverse((at, seq))) = self.redeliveries.peek().copied()
            && at <= now
        {
            self.redeliveries.pop();
            if let Some(payload) = self.unfinished.get(&seq) {
                out.push((seq, payload.clone()));
            }
        }
        out
    }

    /// The next batch of up to `max` records, as [`crate::Consumer::try_batch`]
    /// hands them out: redeliveries due now first, then as many fresh
    /// records as the window has room for, read by `fresh(room)` from the
    /// backend; the fresh ones become unfinished.
    ///
    /// # Errors
    ///
    /// What `fresh` fails with.
    pub async fn batch<F, Fut>(&mut self, max: usize, fresh: F) -> Result<Vec<(Seq, Bytes)>, LogError>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Vec<(Seq, Bytes)>, LogError>>,
    {
        let mut out = self.due(max, Instant::now());
        let room = self.room(max - out.len());
        if room > 0 {
            let records = fresh(room).await?;
            for (seq, payload) in &records {
                self.started(*seq, payload.clone());
            }
            out.extend(records);
        }
        Ok(out)
    }

    /// Resolves once the consumer has something to hand out: a redelivery
    /// that is due, or, with room in the window, what `fresh` waits for (a
    /// new durable record). With the window full and no redelivery queued
    /// it never resolves.
    ///
    /// # Errors
    ///
    /// What `fresh` fails with.
    pub async fn wait(&self, fresh: impl Future<Output = Result<(), LogError>>) -> Result<(), LogError> {
        let redelivery = self.next_due();
        if self.room(1) == 0 {
            match redelivery {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
            return Ok(());
        }
        match redelivery {
            None => fresh.await,
            Some(at) => tokio::select! {
                r = fresh => r,
                () = tokio::time::sleep_until(at) => Ok(()),
            },
        }
    }

    /// When the next redelivery is due (ordered: when the first record
    /// waiting is, once nothing is on its way).
    pub fn next_due(&self) -> Option<Instant> {
        if self.ordered {
            return if self.on_their_way() > 0 { None } else { self.waiting.first_key_value().map(|(_, at)| *at) };
        }
        self.redeliveries.peek().map(|Reverse((at, _))| *at)
    }

    /// Sets how many records may be unfinished before no new one is handed
    /// out (JetStream's `max_ack_pending`); redeliveries still are.
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    /// How many new records may be handed out now, at most `max`.
    pub fn room(&self, max: usize) -> usize {
        if self.ordered && !self.unfinished.is_empty() {
            return 0;
        }
        max.min(self.window.saturating_sub(self.unfinished.len()))
    }

    /// Records handed out and not finished.
    pub fn in_flight(&self) -> usize {
        self.unfinished.len()
    }

    /// The position to save when the reader is at `read`: the first
    /// unfinished record, else `read`.
    pub fn position(&self, read: Seq) -> Seq {
        self.unfinished.keys().next().copied().unwrap_or(read)
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

    #[tokio::test(start_paused = true)]
    async fn ordered_hands_out_nothing_new_while_a_record_is_unfinished_and_retries_in_log_order() {
        let mut p = Progress::new(0);
        p.set_ordered(true);
        assert_eq!(p.room(10), 10);
        for seq in 0..4 {
            p.started(seq, Bytes::new());
        }
        assert_eq!(p.room(10), 0, "one batch at a time");
        // 0 waits 5 s, 2 waits 1 s, 1 is delivered, 3 is still on its way.
        p.redeliver(0, Duration::from_secs(5));
        p.redeliver(2, Duration::from_secs(1));
        p.finished(1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(p.due(10, Instant::now()).is_empty(), "nothing while a record is on its way");
        assert_eq!(p.next_due(), None);
        p.finished(3);
        let due: Vec<Seq> = p.due(10, Instant::now()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(due, [0, 2], "together, in log order");
        assert_eq!(p.room(10), 0, "nothing after them while they are retried");

        // Again: 2 is due before 0, and waits for it.
        p.redeliver(0, Duration::from_secs(5));
        p.redeliver(2, Duration::from_secs(1));
        assert_eq!(p.next_due(), Some(Instant::now() + Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(p.due(10, Instant::now()).is_empty(), "2 does not overtake 0");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(p.due(10, Instant::now()).len(), 2);
        p.finished(0);
        p.finished(2);
        assert_eq!(p.room(10), 10);
    }

    #[test]
    fn out_of_order_completion_never_moves_the_position_past_an_unfinished_event() {
        let mut p = Progress::new(100);
        // Three calls in flight: 100..110, 110..120, 120..130.
        for seq in 100..130 {
            p.started(seq, Bytes::new());
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

    #[tokio::test(start_paused = true)]
    async fn redeliveries_come_back_when_due_by_time_then_log_order() {
        let mut p = Progress::new(0);
        for seq in 0..10 {
            p.started(seq, Bytes::from(format!("r{seq}")));
        }
        let t0 = Instant::now();
        p.redeliver(5, Duration::from_secs(2));
        p.redeliver(9, Duration::from_secs(1));
        p.redeliver(3, Duration::from_secs(1));
        p.redeliver(42, Duration::from_secs(1));
        assert!(p.due(10, t0).is_empty());
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(p.due(1, later), vec![(3, Bytes::from("r3"))]);
        assert_eq!(p.due(10, later), vec![(9, Bytes::from("r9"))], "42 was never handed out");
        // A record finished before its redelivery is due is not handed out.
        p.finished(5);
        assert!(p.due(10, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(p.next_due(), None);
        assert_eq!(p.in_flight(), 9);
    }

    #[test]
    fn the_window_bounds_new_records_only() {
        let mut p = Progress::new(0);
        assert_eq!(p.room(100), 100, "no window yet");
        p.set_window(3);
        p.started(0, Bytes::new());
        p.started(1, Bytes::new());
        assert_eq!(p.room(100), 1);
        p.started(2, Bytes::new());
        assert_eq!(p.room(100), 0);
        p.finished(0);
        assert_eq!(p.room(100), 1);
    }
}
