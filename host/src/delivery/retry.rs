//! Retry scheduling: when an event whose attempt failed is tried again,
//! and when it has had its chances and goes to the dead letters.
//!
//! The delay is the plugin's requested one (`retry-later(after)`, a
//! Retry-After), capped at `retry.max_retry_after_ms`, or else a jittered
//! exponential backoff ([`RetryConfig::backoff`]). An event whose next
//! attempt would come later than `retry.horizon_secs` after its first
//! failure is dead-lettered instead.

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
}
