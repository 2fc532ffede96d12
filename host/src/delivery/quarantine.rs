//! The circuit breaker: a destination whose calls keep failing as a whole
//! is quarantined — no calls until a single probe — and made active again
//! by a probe that succeeds.
//!
//! After `quarantine.after_failures` failed calls in a row the first probe
//! comes `initial_ms` later; each failed probe doubles the wait, up to
//! `max_ms`. While quarantined at most one call (the probe) is in flight.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::QuarantineConfig;

/// A quarantined destination: when the next probe may go, and the wait
/// that led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantine {
    pub probe_at: Instant,
    pub wait: Duration,
}

/// A destination's failure streak and quarantine.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    quarantine: Option<Quarantine>,
}

impl Breaker {
    /// A call succeeded: the streak ends, and a quarantine with it. True
    /// when it ended a quarantine.
    pub fn succeeded(&mut self) -> bool {
        self.failures = 0;
        self.quarantine.take().is_some()
    }

    /// A call failed at `now`: the streak grows; at `after_failures` the
    /// destination is quarantined, and a failed probe doubles the wait.
    /// Returns the quarantine this failure started or extended.
    pub fn failed(&mut self, policy: &QuarantineConfig, now: Instant) -> Option<Quarantine> {
        self.failures += 1;
        if self.failures < policy.after_failures {
            return None;
        }
        let wait = match self.quarantine {
            Some(q) => (q.wait * 2).min(Duration::from_millis(policy.max_ms)),
            None => Duration::from_millis(policy.initial_ms),
        };
        let q = Quarantine { probe_at: now + wait, wait };
        self.quarantine = Some(q);
        Some(q)
    }

    /// Forgets the streak and any quarantine (a new deploy deserves its own
    /// chance).
    pub fn reset(&mut self) {
        *self = Breaker::default();
    }

    /// Failed calls in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The quarantine, if any.
    pub fn quarantine(&self) -> Option<Quarantine> {
        self.quarantine
    }

    /// How many calls may be in flight: none while paused, the probe while
    /// quarantined, else `max_concurrent_calls`.
    pub fn call_limit(&self, paused: bool, max_concurrent_calls: usize) -> usize {
        match (paused, self.quarantine.is_some()) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => max_concurrent_calls.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QuarantineConfig {
        QuarantineConfig { after_failures: 3, initial_ms: 5_000, max_ms: 30_000 }
    }

    #[tokio::test(start_paused = true)]
    async fn probes_follow_a_doubling_schedule_up_to_the_cap() {
        let (p, mut b) = (policy(), Breaker::default());
        assert_eq!(b.failed(&p, Instant::now()), None);
        assert_eq!(b.failed(&p, Instant::now()), None);
        assert_eq!(b.call_limit(false, 4), 4, "not quarantined before the third failure");
        let mut waits = Vec::new();
        for _ in 0..5 {
            let now = Instant::now();
            let q = b.failed(&p, now).expect("quarantined");
            assert_eq!(q.probe_at, now + q.wait);
            assert_eq!(b.call_limit(false, 4), 1, "one probe at a time");
            waits.push(q.wait.as_secs());
            tokio::time::advance(q.wait).await;
        }
        assert_eq!(waits, [5, 10, 20, 30, 30]);
        assert_eq!(b.failures(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_ends_the_quarantine_and_the_streak() {
        let (p, mut b) = (policy(), Breaker::default());
        for _ in 0..3 {
            b.failed(&p, Instant::now());
        }
        assert!(b.quarantine().is_some());
        assert!(b.succeeded(), "ended a quarantine");
        assert!(!b.succeeded(), "nothing left to end");
        assert_eq!(b.call_limit(false, 2), 2);
        // The streak starts again from zero.
        assert_eq!(b.failed(&p, Instant::now()), None);
        assert_eq!(b.failed(&p, Instant::now()), None);
        assert_eq!(b.failed(&p, Instant::now()).map(|q| q.wait.as_secs()), Some(5), "back to the first wait");
    }

    #[test]
    fn a_pause_holds_every_call_and_a_reset_forgets_the_quarantine() {
        let (p, mut b) = (policy(), Breaker::default());
        for _ in 0..3 {
            b.failed(&p, Instant::now());
        }
        assert_eq!(b.call_limit(true, 2), 0);
        b.reset();
        assert_eq!(b.quarantine(), None);
        assert_eq!(b.call_limit(false, 2), 2);
    }
}
