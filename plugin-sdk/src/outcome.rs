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
