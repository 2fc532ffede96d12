//! Retry scheduling: when an event whose attempt failed is tried again,
//! and when it has had its chances and goes to the dead letters.
//!
//! The delay is the plugin's requested one (`retry-later(after)`, a
//! Retry-After), capped at `retry.max_retry_after_ms`, or else a jittered
//! exponential backoff ([`RetryConfig::backoff`]). An event whose next
//! attempt would come later than `retry.horizon_secs` after its first
//! failure is dead-lettered instead.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_log::Seq;
use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::normalize::Envelope;

/// An event in flight or waiting for another attempt.
#[derive(Debug)]
pub struct Pending {
    pub seq: Seq,
    pub event: Arc<Envelope>,
    /// Attempts that failed so far.
    pub attempts: u32,
    pub first_failure: Option<Instant>,
}

impl Pending {
    /// A new event, not yet attempted.
    pub fn new(seq: Seq, event: Arc<Envelope>) -> Pending {
        Pending { seq, event, attempts: 0, first_failure: None }
    }
}

/// What becomes of an event whose attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this instant.
    RetryAt(Instant),
    /// The horizon has passed: dead-letter it with this reason.
    DeadLetter(String),
}

/// Counts the failed attempt of `pending` at `now` and decides its next
/// one: after the plugin's `after` (capped) or a backoff scaled by
/// `jitter` in `[0, 1)`, unless that passes the horizon.
pub fn next_attempt(
    policy: &RetryConfig,
    pending: &mut Pending,
    after: Option<Duration>,
    jitter: f64,
    now: Instant,
    reason: &str,
) -> Next {
    let first = *pending.first_failure.get_or_insert(now);
    pending.attempts += 1;
    // A plugin's requested delay is honoured up to `max_retry_after_ms`: a
    // garbage `after` cannot park an event until its horizon.
    let longest = Duration::from_millis(policy.max_retry_after_ms);
    let delay = after.map_or_else(|| policy.backoff(pending.attempts, jitter), |a| a.min(longest));
    if now.saturating_duration_since(first) + delay > policy.horizon() {
        return Next::DeadLetter(format!("retry horizon passed after {} attempts: {reason}", pending.attempts));
    }
    Next::RetryAt(now + delay)
}

/// Events waiting for their next attempt, by due time, then log order.
#[derive(Debug, Default)]
pub struct RetryQueue {
    heap: BinaryHeap<Reverse<Due>>,
}

#[derive(Debug)]
struct Due(Instant, Pending);

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1.seq) == (o.0, o.1.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1.seq).cmp(&(o.0, o.1.seq))
    }
}

impl RetryQueue {
    /// Queues `pending` for `at`.
    pub fn push(&mut self, at: Instant, pending: Pending) {
        self.heap.push(Reverse(Due(at, pending)));
    }

    /// The next event due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Pending> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(Due(_, p))| p)
    }

    /// When the next event is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(Due(at, _))| *at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig { initial_backoff_ms: 1_000, max_backoff_ms: 8_000, horizon_secs: 60, max_retry_after_ms: 20_000 }
    }

    fn pending(seq: Seq) -> Pending {
        Pending::new(seq, super::super::tests::event(seq))
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_within_its_jitter_bounds_up_to_the_cap() {
        let p = policy();
        let mut e = pending(1);
        let mut expected_base = 1_000u64;
        for _ in 0..6 {
            let now = Instant::now();
            for jitter in [0.0, 0.5, 0.999] {
                let mut probe = Pending { attempts: e.attempts, first_failure: e.first_failure, ..pending(1) };
                let Next::RetryAt(at) = next_attempt(&p, &mut probe, None, jitter, now, "x") else { panic!() };
                let delay = (at - now).as_millis() as u64;
                assert!(delay >= expected_base / 2 && delay < expected_base * 3 / 2, "{delay} vs base {expected_base}");
            }
            let Next::RetryAt(at) = next_attempt(&p, &mut e, None, 0.5, now, "x") else { panic!() };
            assert_eq!((at - now).as_millis() as u64, expected_base);
            tokio::time::advance(at - now).await;
            expected_base = (expected_base * 2).min(8_000);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_delay_is_honoured_up_to_max_retry_after() {
        let p = policy();
        let now = Instant::now();
        let mut e = pending(1);
        assert_eq!(
            next_attempt(&p, &mut e, Some(Duration::from_secs(3)), 0.5, now, "x"),
            Next::RetryAt(now + Duration::from_secs(3))
        );
        let mut e = pending(2);
        let capped = next_attempt(&p, &mut e, Some(Duration::from_secs(u64::MAX / 4)), 0.5, now, "x");
        assert_eq!(capped, Next::RetryAt(now + Duration::from_secs(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_horizon_an_event_is_dead_lettered_with_its_attempts() {
        let p = policy();
        let mut e = pending(1);
        let mut attempts = 0;
        let reason = loop {
            let now = Instant::now();
            match next_attempt(&p, &mut e, None, 0.5, now, "HTTP 503") {
                Next::RetryAt(at) => tokio::time::advance(at - now).await,
                Next::DeadLetter(reason) => break reason,
            }
            attempts += 1;
            assert!(attempts < 100, "never dead-lettered");
        };
        // Retries after 1 + 2 + 4 + 8 × 6 = 55 s of failing; the tenth
        // failure's next 8 s would pass the 60 s horizon.
        assert_eq!(e.attempts, 10);
        assert_eq!(reason, "retry horizon passed after 10 attempts: HTTP 503");
        let elapsed = Instant::now() - e.first_failure.unwrap();
        assert!(elapsed <= Duration::from_secs(60), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_yields_due_events_by_time_then_log_order() {
        let mut q = RetryQueue::default();
        let t0 = Instant::now();
        q.push(t0 + Duration::from_secs(2), pending(5));
        q.push(t0 + Duration::from_secs(1), pending(9));
        q.push(t0 + Duration::from_secs(1), pending(3));
        assert!(q.pop_due(t0).is_none());
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(q.pop_due(later).map(|p| p.seq), Some(3));
        assert_eq!(q.pop_due(later).map(|p| p.seq), Some(9));
        assert!(q.pop_due(later).is_none());
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(5)).map(|p| p.seq), Some(5));
        assert!(q.is_empty());
    }
}
