//! [`Outcome`], [`InitError`] and the retry classes destinations share.

/// What happened to one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination accepted the event.
    Delivered,
    /// A transient failure: the host retries later. `after_ms` is the delay
    /// the destination asked for (say, from `Retry-After`); `None` lets the
    /// host back off on its own schedule.
    Retry { after_ms: Option<u64>, reason: String },
    /// A permanent failure, with the reason. The event is dead-lettered.
    Rejected(String),
}

impl Outcome {
    /// A retry on the host's own backoff schedule.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry { after_ms: None, reason: reason.into() }
    }

    /// A retry no sooner than `after_ms` milliseconds from now.
    pub fn retry_after(after_ms: u64, reason: impl Into<String>) -> Self {
        Outcome::Retry { after_ms: Some(after_ms), reason: reason.into() }
    }

    /// A permanent rejection.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Outcome::Rejected(reason.into())
    }

    /// Whether the outcome is final (delivered or rejected).
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Retry { .. })
    }

    /// The worse of two outcomes, for an event sent in several parts:
    /// Rejected > Retry > Delivered. Of two rejections the first reason
    /// stays; of two retries the first reason and the longer delay (a
    /// delay beats none).
    pub fn worst(&self, other: &Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Rejected(_), _) => self.clone(),
            (_, Outcome::Rejected(_)) => other.clone(),
            (Outcome::Retry { after_ms: x, reason }, Outcome::Retry { after_ms: y, .. }) => {
                Outcome::Retry { after_ms: (*x).max(*y), reason: reason.clone() }
            }
            (Outcome::Retry { .. }, Outcome::Delivered) => self.clone(),
            (Outcome::Delivered, _) => other.clone(),
        }
    }
}

/// How a destination's HTTP status should be treated, following Segment's
/// destination framework: retry 408, 423, 429 and 5xx except 501; reject
/// every other 4xx (and 501); 1xx-3xx leftovers are rejected too since
/// they mean the request cannot succeed as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    Success,
    Retry,
    Reject,
}

impl RetryClass {
    /// Classifies an HTTP status code.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => RetryClass::Success,
            408 | 423 | 429 => RetryClass::Retry,
            501 => RetryClass::Reject,
            500..=599 => RetryClass::Retry,
            _ => RetryClass::Reject,
        }
    }
}

/// Why [`Destination::init`](crate::Destination::init) refused to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// A setting is missing or unusable. The message names the setting and
    /// never repeats a secret's value.
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// Any other reason the destination cannot start.
    #[error("{0}")]
    Other(String),
}

impl InitError {
    /// An [`InitError::InvalidSettings`] with `message`.
    pub fn invalid_settings(message: impl Into<String>) -> Self {
        InitError::InvalidSettings(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_outcome_ordering() {
        let worst = Outcome::worst;
        let d = Outcome::Delivered;
        let r = Outcome::retry_after(10, "a");
        let r2 = Outcome::retry_after(30, "b");
        let x = Outcome::rejected("x");
        assert_eq!(worst(&d, &r), r);
        assert_eq!(worst(&r, &d), r);
        assert_eq!(worst(&r, &x), x);
        assert_eq!(worst(&x, &r), x);
        assert_eq!(worst(&r, &r2), Outcome::retry_after(30, "a"));
        assert_eq!(worst(&d, &d), d);
    }

    #[test]
    fn worst_keeps_the_first_rejection_and_any_delay() {
        let (x, y) = (Outcome::rejected("x"), Outcome::rejected("y"));
        assert_eq!(x.worst(&y), x);
        assert_eq!(Outcome::retry("a").worst(&Outcome::retry_after(5, "b")), Outcome::retry_after(5, "a"));
        assert_eq!(Outcome::retry_after(5, "a").worst(&Outcome::retry("b")), Outcome::retry_after(5, "a"));
    }

    #[test]
    fn retry_classes_follow_segment() {
        for s in [200, 201, 204] {
            assert_eq!(RetryClass::of_status(s), RetryClass::Success, "{s}");
        }
        for s in [408, 423, 429, 500, 502, 503, 504, 599] {
            assert_eq!(RetryClass::of_status(s), RetryClass::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 413, 422, 501] {
            assert_eq!(RetryClass::of_status(s), RetryClass::Reject, "{s}");
        }
    }
}
