//! Per-source request rate limits: a token bucket of `burst` requests,
//! refilled at `requests_per_second`. A request over the limit is answered
//! 429 with `Retry-After` and `X-RateLimit-Reset` (whole seconds until a
//! token is back, as Segment's API sends them); every SDK retries a 429,
//! so nothing is lost — the events are simply not taken yet.
//!
//! The bucket starts full. A reload that changes a source's limit starts
//! a new bucket.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One source's bucket.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket of `burst` (at least 1) refilled at `per_second`.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter { per_second: f64::from(per_second.max(1)), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes a token for one request, or says how long until one is back.
    ///
    /// # Errors
    ///
    /// The wait, when the bucket is empty.
    pub fn take(&self) -> Result<(), Duration> {
        let Ok(mut state) = self.state.lock() else { return Ok(()) };
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

/// Whole seconds to tell a client to wait: at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10, 3);
        for _ in 0..3 {
            assert!(limiter.take().is_ok());
        }
        let wait = limiter.take().unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.take().is_ok(), "one token back after 1/10 s");
        assert!(limiter.take().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert!(limiter.take().is_ok(), "refilled to the burst, no more");
        }
        assert!(limiter.take().is_err());
    }
}
