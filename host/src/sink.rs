//! The seam between ingest and delivery.
//!
//! Ingest hands every accepted batch to an [`EventSink`]; once `submit`
//! returns `Ok`, the events are the sink's responsibility. [`LogSink`] makes
//! them durable in the log; each destination's worker then reads the log
//! and keeps what its [`Subscription`](crate::delivery::Subscription) wants.

use std::future::Future;
use std::sync::Arc;

use switchyard_log::{EventLog, LogError, Record, dedupe};

use crate::normalize::Envelope;
use crate::record::encode_envelope;

/// Why a sink could not take events. Ingest answers 503 with `code` and
/// the message: never 200.
#[derive(Debug, thiserror::Error)]
#[error("events cannot be accepted: {message}")]
pub struct SinkError {
    /// `disk_below_floor`, `log_full`, `shutting_down` or `log_unavailable`.
    pub code: &'static str,
    pub message: String,
}

impl From<LogError> for SinkError {
    fn from(e: LogError) -> Self {
        let code = match e {
            LogError::BelowFloor { .. } => "disk_below_floor",
            LogError::Closed => "shutting_down",
            LogError::Full(_) => "log_full",
            LogError::Io(_) | LogError::Corrupt { .. } => "log_unavailable",
        };
        SinkError { code, message: e.to_string() }
    }
}

/// Where ingest hands accepted events.
pub trait EventSink: Send + Sync + 'static {
    /// Takes responsibility for `events`, except repeats of an event it
    /// already took (same source and `messageId`, within the dedupe
    /// window), which it drops and returns.
    ///
    /// # Errors
    ///
    /// [`SinkError`] when the events were not taken.
    fn submit(&self, events: Vec<Arc<Envelope>>) -> impl Future<Output = Result<Vec<Arc<Envelope>>, SinkError>> + Send;
}

/// The key that keeps one user's events in order where the log
/// partitions: their `userId`, else their `anonymousId`.
fn order_key(e: &Envelope) -> u64 {
    let user = e.user_id.as_deref().or(e.anonymous_id.as_deref()).unwrap_or("");
    dedupe::key("", user)
}

/// The durable sink: appends to the log, which drops duplicates, and
/// answers only once the events are on disk. Delivery workers read the log
/// on their own.
pub struct LogSink<L: EventLog> {
    pub log: Arc<L>,
}

impl<L: EventLog> EventSink for LogSink<L> {
    async fn submit(&self, events: Vec<Arc<Envelope>>) -> Result<Vec<Arc<Envelope>>, SinkError> {
        let records = events
            .iter()
            .map(|e| Record {
                id: dedupe::key(&e.source, &e.message_id),
                order_key: order_key(e),
                payload: encode_envelope(e),
            })
            .collect();
        let appended = self.log.append(records).await?;
        Ok(appended.duplicates.into_iter().filter_map(|i| events.get(i).cloned()).collect())
    }
}
