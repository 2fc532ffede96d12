//! The seam between ingest and delivery.
//!
//! Ingest hands every accepted batch to an [`EventSink`]; once `submit`
//! returns `Ok`, the events are the sink's responsibility. [`LogSink`] makes
//! them durable in the log; each destination's worker then reads the log
//! and keeps what its [`Subscription`](crate::delivery::Subscription) wants.

use std::future::Future;
use std::sync::Arc;

use switchyard_log::EventLog;

use crate::dedupe::{self, Dedupe};
use crate::normalize::Envelope;
use crate::record::encode_envelope;

/// Why a sink could not take events. Ingest answers 503: never 200.
#[derive(Debug, thiserror::Error)]
#[error("events cannot be accepted: {0}")]
pub struct SinkError(pub String);

/// Where ingest hands accepted events.
pub trait EventSink: Send + Sync + 'static {
    /// Takes responsibility for `events`.
    ///
    /// # Errors
    ///
    /// [`SinkError`] when the events were not taken.
    fn submit(&self, events: Vec<Arc<Envelope>>) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The durable sink: deduplicates, appends to the log, and answers only once
/// the events are on disk. Delivery workers read the log on their own.
pub struct LogSink<L: EventLog> {
    pub log: Arc<L>,
    pub dedupe: Dedupe,
    pub duplicates: Arc<crate::metrics::Counter>,
}

impl<L: EventLog> EventSink for LogSink<L> {
    async fn submit(&self, events: Vec<Arc<Envelope>>) -> Result<(), SinkError> {
        let all: Vec<u64> = events.iter().map(|e| dedupe::key(&e.source, &e.message_id)).collect();
        let seen = self.dedupe.seen_each(&all);
        let mut keys = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        let mut in_batch = std::collections::HashSet::with_capacity(events.len());
        for ((e, k), seen) in events.iter().zip(all).zip(seen) {
            if seen || !in_batch.insert(k) {
                self.duplicates.inc();
                tracing::debug!(message_id = %e.message_id, source = &*e.source, "duplicate messageId dropped");
                continue;
            }
            keys.push(k);
            records.push(encode_envelope(e));
        }
        if records.is_empty() {
            return Ok(());
        }
        self.log.append(records).await.map_err(|e| SinkError(e.to_string()))?;
        // Only now: a failed append must not make the client's retry look
        // like a duplicate.
        self.dedupe.remember(&keys);
        Ok(())
    }
}
