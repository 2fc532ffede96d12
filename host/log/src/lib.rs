//! The durable log: every accepted event is appended here, and made durable
//! before the client gets its 200; each destination reads it through a
//! consumer of its own.
//!
//! [`EventLog`] is the seam between delivery and where the events live. A
//! backend appends records and keeps one durable [`Consumer`] per
//! destination: its position survives restarts, it hands out records in
//! order, takes an ack for each record whose outcome is final (in any
//! order), and commits the position — the first record not acked — so that
//! what every consumer has passed can be deleted. Backends:
//!
//! - [`LocalLog`], the embedded default: a [`SegmentLog`] under
//!   `data_dir/log` (records with a CRC each, segments rolled at a size, a
//!   torn tail cut on open, group-commit fsync) and one cursor file per
//!   consumer under `data_dir/cursors`;
//! - [`MemoryLog`], in memory, for tests;
//! - NATS JetStream (a stream, a durable pull consumer per destination),
//!   in the `switchyard-jetstream` crate, when Switchyard runs as several
//!   nodes.
//!
//! A record whose attempt failed is asked for again after a delay
//! ([`Consumer::nak`], JetStream's nak-with-delay): the backend hands it
//! out again once the delay has passed, and it stays unfinished meanwhile.
//! The worker decides whether and when to retry; the backend owns the
//! waiting. A consumer hands out no new record while `window` records are
//! unfinished ([`Consumer::set_window`], JetStream's `max_ack_pending`), so
//! a failing destination holds a bounded number of records in memory.

#[cfg(test)]
mod crash_tests;
mod cursor;
pub mod dedupe;
mod letters;
mod local;
mod memory;
mod progress;
mod record;
mod segment;
pub mod space;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub use cursor::{Cursors, Loaded};
pub use dedupe::{Dedupe, DedupeOptions};
pub use letters::{DeadLetterLog, LetterFuture, LocalDeadLetters, MemoryDeadLetters};
pub use local::{LocalConsumer, LocalLog};
pub use memory::{MemoryConsumer, MemoryLog};
pub use progress::Progress;
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
    #[error(
        "disk space below the floor: {} MiB free on the log's filesystem, the floor is {} MiB",
        free_bytes / (1024 * 1024),
        floor_bytes / (1024 * 1024)
    )]
    BelowFloor { free_bytes: u64, floor_bytes: u64 },
    /// The log is at its configured bound (JetStream's `max_bytes` with
    /// `discard = new`): nothing is evicted to make room.
    #[error("the log is full: {0}")]
    Full(String),
}

impl From<space::BelowFloor> for LogError {
    fn from(b: space::BelowFloor) -> Self {
        LogError::BelowFloor { free_bytes: b.free_bytes, floor_bytes: b.floor_bytes }
    }
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(e.to_string())
    }
}

/// One record to append: its payload, the id a duplicate of it is
/// recognised by (an event's source and `messageId`, [`dedupe::key`]), and
/// its order key (a hash of the event's user): a backend that partitions
/// keeps the records of one key in one partition, in order.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: u64,
    pub order_key: u64,
    pub payload: Bytes,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number of the first record written; the others follow
    /// in order. When every record was a duplicate, the end of the log.
    pub first: Seq,
    /// Indexes, in the batch, of the records not written because they are
    /// duplicates: of one appended within the dedupe window, or of one
    /// earlier in the batch.
    pub duplicates: Vec<usize>,
}

/// How a consumer hands out records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Keep the order of each order key (each user) as appended, across
    /// failures and, on a shared log, across nodes: records are handed out
    /// one batch at a time and a failed one is retried in place before
    /// anything after it ([`Progress::set_ordered`]); a shared log gives
    /// each partition one reading node at a time. Slower: one call in
    /// flight per consumer (per partition on a shared log), and a failing
    /// record holds back everything behind it.
    pub ordered: bool,
}

/// An append-only, durable, ordered log of records, read by one durable
/// consumer per destination. It drops duplicates on append (see
/// [`dedupe`]).
pub trait EventLog: Send + Sync + 'static {
    /// A destination's consumer.
    type Consumer: Consumer;

    /// Appends the records that are not duplicates and resolves once they
    /// are durable; only then are their ids remembered, so a client's
    /// retry after a failed append is not taken for a duplicate.
    ///
    /// # Errors
    ///
    /// When the records could not be made durable; none of them may be
    /// acknowledged to a client then.
    fn append(&self, records: Vec<Record>) -> impl Future<Output = Result<Appended, LogError>> + Send;

    /// The sequence number the next append will get.
    fn end(&self) -> Seq;

    /// Whether an append would be accepted now (what `/ready` reports).
    ///
    /// # Errors
    ///
    /// Why not: [`LogError::BelowFloor`], or the log is unusable.
    fn accepting(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Free bytes where the log keeps its records, when it knows.
    fn free_bytes(&self) -> Option<u64> {
        None
    }

    /// Bytes of the log consumer `name` holds from deletion (from its
    /// committed position to the end, in whole segments where the backend
    /// stores segments); `None` for no such consumer or when the backend
    /// cannot tell.
    fn held_bytes(&self, name: &str) -> Option<u64> {
        let _ = name;
        None
    }

    /// The durable consumer `name`: it resumes where it was committed, or,
    /// new, starts at the end (a new destination gets events from now on)
    /// and is persisted at once, so a crash before its first commit cannot
    /// skip what arrived meanwhile.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be persisted or the log read.
    fn open_consumer(
        &self,
        name: &str,
        options: ConsumerOptions,
    ) -> impl Future<Output = Result<Self::Consumer, LogError>> + Send;

    /// [`EventLog::open_consumer`] with the default options (unordered).
    ///
    /// # Errors
    ///
    /// As [`EventLog::open_consumer`].
    fn consumer(&self, name: &str) -> impl Future<Output = Result<Self::Consumer, LogError>> + Send {
        self.open_consumer(name, ConsumerOptions::default())
    }

    /// Every consumer the log keeps, also of destinations removed from the
    /// config, which hold their undelivered records until removed.
    fn consumers(&self) -> Vec<String>;

    /// Records consumer `name` has not finished (from its committed
    /// position to the end); `None` for no such consumer.
    fn backlog(&self, name: &str) -> Option<u64>;

    /// Forgets consumer `name`, so the log may delete what it never
    /// finished, and its dead letters; returns how many records that was,
    /// `None` when there was no such consumer.
    ///
    /// # Errors
    ///
    /// When its persisted state cannot be deleted.
    fn remove_consumer(&self, name: &str) -> impl Future<Output = Result<Option<u64>, LogError>> + Send;

    /// Destination `name`'s dead letters: on this node's disk for the
    /// embedded log, on the cluster for a shared one, so that every node
    /// lists and replays the same.
    ///
    /// # Errors
    ///
    /// When their store cannot be opened.
    fn dead_letters(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<std::sync::Arc<dyn DeadLetterLog>, LogError>> + Send;

    /// Stops taking appends after those already queued (at shutdown).
    fn close(&self) {}

    /// Whether other nodes consume this log too (JetStream): a node's own
    /// consumer position then says nothing of a destination's backlog, and
    /// [`EventLog::backlog`] is the figure to show.
    fn shared(&self) -> bool {
        false
    }

    /// Pauses (or resumes) consumer `name` for every node that shares the
    /// log: no record is handed out while it is paused. On a log only this
    /// node reads there is nothing to do (the worker's own pause does it).
    ///
    /// # Errors
    ///
    /// When the backend cannot be told.
    fn pause(&self, name: &str, paused: bool) -> impl Future<Output = Result<(), LogError>> + Send {
        let _ = (name, paused);
        std::future::ready(Ok(()))
    }

    /// Whether consumer `name` is paused on the shared log, as last read;
    /// `None` where the log keeps no such state.
    fn paused(&self, name: &str) -> Option<bool> {
        let _ = name;
        None
    }
}

/// One destination's view of the log: records in order from its position,
/// acked one by one in any order, and a committed position.
pub trait Consumer: Send + 'static {
    /// Up to `max` records without waiting: redeliveries that are due
    /// first, then records already durable and not yet handed out (as the
    /// window allows). Each is unfinished until [`Consumer::ack`]ed.
    ///
    /// # Errors
    ///
    /// I/O errors and corruption.
    fn try_batch(&mut self, max: usize) -> impl Future<Output = Result<Vec<(Seq, Bytes)>, LogError>> + Send;

    /// Resolves once [`Consumer::try_batch`] has something to hand out: a
    /// redelivery is due, or, with room in the window, a record not yet
    /// handed out is durable. With the window full and no redelivery
    /// queued it waits until the consumer is dropped (the caller acks from
    /// elsewhere, and stops waiting then).
    ///
    /// # Errors
    ///
    /// [`LogError::Closed`] when the log is gone.
    fn wait(&mut self) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Record `seq`'s outcome is final: delivered, dead-lettered, or not
    /// for this destination.
    fn ack(&mut self, seq: Seq);

    /// Record `seq`'s attempt failed: hand it out again once `delay` has
    /// passed. It stays unfinished (and holds the position) meanwhile.
    fn nak(&mut self, seq: Seq, delay: Duration);

    /// Hand out no new record while `window` records are unfinished;
    /// redeliveries still come.
    fn set_window(&mut self, window: usize);

    /// Records handed out and not acked.
    fn in_flight(&self) -> usize;

    /// Records durable and not yet handed out: how far behind the log's
    /// end this consumer reads (its backlog, less what is in flight).
    fn pending(&self) -> u64;

    /// The position a commit saves: the first record not acked, or the next
    /// one to hand out when every record is.
    fn position(&self) -> Seq;

    /// Persists [`Consumer::position`] if it moved, and lets the log delete
    /// what every consumer has passed.
    ///
    /// # Errors
    ///
    /// When the position cannot be persisted; the last persisted one
    /// stands, and nothing is deleted past it.
    fn commit(&mut self) -> Result<(), LogError>;
}

/// Reads a [`SegmentLog`] in order.
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
