//! Quota accounting: the kinds of breach a destination's sandbox reports,
//! and the token bucket behind its rate quotas. A leaf: it takes plain
//! numbers and knows nothing of config, capabilities or the runtime.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// A limit of the sandbox that a plugin call overstepped. A breach fails
/// the call; repeated failures quarantine the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Linear memory past `memory_mb`.
    Memory,
    /// CPU time past `cpu_ms_per_call`.
    Cpu,
    /// Wall time past `call_timeout_ms`.
    CallTimeout,
    /// An HTTP request to an origin not in `allow_http`.
    HttpOrigin,
    /// An HTTP request past `http_timeout_ms`.
    HttpTimeout,
    /// An HTTP response body past `http_max_response_bytes`.
    HttpResponseSize,
    /// HTTP requests past `http_requests_per_second`.
    HttpRate,
    /// Log lines or bytes past `log_lines_per_second` / `log_bytes_per_second`.
    LogRate,
    /// `deliver` returned the wrong number of outcomes.
    OutcomeCount,
    /// `deliver` returned more reason text than the contract allows (1 KiB
    /// per event on average, at least 64 KiB a call).
    OutcomeSize,
}

impl QuotaKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [QuotaKind; 10] = [
        QuotaKind::Memory,
        QuotaKind::Cpu,
        QuotaKind::CallTimeout,
        QuotaKind::HttpOrigin,
        QuotaKind::HttpTimeout,
        QuotaKind::HttpResponseSize,
        QuotaKind::HttpRate,
        QuotaKind::LogRate,
        QuotaKind::OutcomeCount,
        QuotaKind::OutcomeSize,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Memory => "memory",
            QuotaKind::Cpu => "cpu",
            QuotaKind::CallTimeout => "call_timeout",
            QuotaKind::HttpOrigin => "http_origin",
            QuotaKind::HttpTimeout => "http_timeout",
            QuotaKind::HttpResponseSize => "http_response_size",
            QuotaKind::HttpRate => "http_rate",
            QuotaKind::LogRate => "log_rate",
            QuotaKind::OutcomeCount => "outcome_count",
            QuotaKind::OutcomeSize => "outcome_size",
        }
    }

    /// Its index in [`QuotaKind::ALL`].
    pub fn index(self) -> usize {
        QuotaKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl std::fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Locks `mutex`, recovering the value if a thread panicked while holding
/// it: every value guarded here (token buckets, counters) stays valid after
/// any partial update, and a quota must not turn into a false breach.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A token bucket: holds up to one second's worth (at least `burst`) and
/// refills continuously. [`take`](TokenBucket::take) may overdraw it (the
/// debt is paid by waiting: pacing); [`try_take`](TokenBucket::try_take)
/// never does (a hard limit).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens a second (at least 1),
    /// holding one second's worth or `burst`, whichever is more.
    pub fn new(rate: u32, burst: usize) -> Self {
        let rate = f64::from(rate.max(1));
        let capacity = rate.max(burst as f64);
        TokenBucket { rate, capacity, tokens: capacity, at: Instant::now() }
    }

    /// Takes `n` tokens and returns how long until the bucket is out of debt.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity) - n as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }

    /// Takes `n` tokens if the bucket holds them; false (taking none) if not.
    pub fn try_take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_paces_to_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 50);
        // A full bucket lets the first second's worth through at once.
        assert_eq!(b.take(50, t0), Duration::ZERO);
        assert_eq!(b.take(50, t0), Duration::ZERO);
        // 50 more overdraw it by half a second.
        let wait = b.take(50, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After that wait, 50 more overdraw it by another 0.5 s.
        let wait = b.take(50, t0 + Duration::from_millis(500));
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // A long idle spell refills only up to capacity.
        assert_eq!(b.take(100, t0 + Duration::from_secs(60)), Duration::ZERO);
        assert!(!b.take(1, t0 + Duration::from_secs(60)).is_zero());
    }

    #[test]
    fn try_take_never_overdraws() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 1);
        assert!(b.try_take(10, t0));
        assert!(!b.try_take(1, t0), "empty");
        assert!(b.try_take(1, t0 + Duration::from_millis(100)), "refilled one token");
        assert!(!b.try_take(1, t0 + Duration::from_millis(100)));
    }
}
