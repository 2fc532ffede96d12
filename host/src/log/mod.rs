//! The durable log: every accepted event is appended here, and made durable
//! with a group-commit fsync, before the client gets its 200.
//!
//! [`EventLog`] is the seam a NATS JetStream backend will implement; the
//! embedded default is [`SegmentLog`], a purpose-built segmented log under
//! `data_dir/log`: records with a CRC each, segments rolled at a size, a torn
//! tail cut on open, whole segments deleted once every destination's cursor
//! has passed them.

mod record;
mod segment;

use std::future::Future;

use bytes::Bytes;

pub use record::{decode_envelope, encode_envelope};
pub use segment::{LogOptions, SegmentLog, SegmentReader};

/// Log positions: the sequence number of a record, from 0, gap-free.
pub type Seq = u64;

/// Why the log could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("log I/O: {0}")]
    Io(String),
    #[error("the log is closed")]
    Closed,
    #[error("corrupt log record at {segment} offset {offset}: {reason}")]
    Corrupt { segment: String, offset: u64, reason: String },
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(e.to_string())
    }
}

/// An append-only, durable, ordered log of records.
pub trait EventLog: Send + Sync + 'static {
    /// The reader type.
    type Reader: LogReader;

    /// Appends `records` and resolves once they are durable. Returns the
    /// sequence number of the first one; the rest follow in order.
    ///
    /// # Errors
    ///
    /// When the records could not be made durable; none of them may be
    /// acknowledged to a client then.
    fn append(&self, records: Vec<Bytes>) -> impl Future<Output = Result<Seq, LogError>> + Send;

    /// A reader starting at `from` (clamped to what the log still holds).
    ///
    /// # Errors
    ///
    /// I/O errors opening the segments.
    fn reader(&self, from: Seq) -> Result<Self::Reader, LogError>;

    /// The sequence number the next append will get.
    fn end(&self) -> Seq;

    /// Tells the log that no reader needs records before `seq` any more; it
    /// may delete them.
    fn release(&self, seq: Seq);
}

/// Reads a log in order.
pub trait LogReader: Send + 'static {
    /// Up to `max` records from the current position, waiting until at least
    /// one is durable.
    ///
    /// # Errors
    ///
    /// I/O errors and corruption.
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Result<Vec<(Seq, Bytes)>, LogError>> + Send;

    /// Up to `max` records already durable, without waiting.
    ///
    /// # Errors
    ///
    /// As [`LogReader::next_batch`].
    fn try_batch(&mut self, max: usize) -> impl Future<Output = Result<Vec<(Seq, Bytes)>, LogError>> + Send;

    /// Resolves once a record at the reader's position is durable.
    ///
    /// # Errors
    ///
    /// [`LogError::Closed`] when the log is gone.
    fn wait(&mut self) -> impl Future<Output = Result<(), LogError>> + Send;

    /// The sequence number of the next record this reader returns.
    fn position(&self) -> Seq;
}
