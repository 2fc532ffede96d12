//! `quota.events_per_second`: batches are paced with a token bucket. A
//! batch may overdraw the bucket; the next one then waits until the debt
//! is paid, so the rate holds on average without splitting batches.

use switchyard_runtime::quota::TokenBucket;
use tokio::time::Instant;

/// Paces the batches of one destination.
#[derive(Debug, Default)]
pub struct Pacer {
    bucket: Option<TokenBucket>,
    until: Option<Instant>,
}

impl Pacer {
    /// At most `events_per_second` on average (`None`: unlimited), with
    /// bursts of a batch of `max_events`.
    pub fn new(events_per_second: Option<u32>, max_events: usize) -> Pacer {
        Pacer { bucket: events_per_second.map(|rate| TokenBucket::new(rate, max_events)), until: None }
    }

    /// Charges a batch of `events` sent at `now`.
    pub fn charge(&mut self, events: usize, now: Instant) {
        if let Some(bucket) = self.bucket.as_mut() {
            let wait = bucket.take(events, now);
            self.until = (!wait.is_zero()).then(|| now + wait);
        }
    }

    /// When the next batch may go, if that is after `now`.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|at| *at > now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batches_wait_off_the_debt_of_the_one_before() {
        let mut p = Pacer::new(Some(100), 50);
        let t0 = Instant::now();
        p.charge(100, t0);
        assert_eq!(p.held_until(t0), None, "a full bucket takes the first second's worth");
        p.charge(50, t0);
        assert_eq!(p.held_until(t0), Some(t0 + Duration::from_millis(500)));
        assert_eq!(p.held_until(t0 + Duration::from_millis(500)), None, "paid off");
    }

    #[test]
    fn unlimited_never_holds() {
        let mut p = Pacer::new(None, 10);
        let now = Instant::now();
        p.charge(1_000_000, now);
        assert_eq!(p.held_until(now), None);
    }
}
