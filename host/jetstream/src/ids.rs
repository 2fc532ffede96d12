//! Dedupe of `messageId`s across every node for a day, which JetStream's
//! own duplicate window cannot do: that window keeps each id in memory on
//! every replica and rescans it on restart (about 55 GB per replica for a
//! day at 5k events/s), so it stays short (minutes) and only makes a
//! re-published record safe.
//!
//! Two ways are built; [`Dedupe::Set`] is the default, chosen by the
//! benchmark in `BENCHMARKS.md` (JetStream, "the cost of the 24 h dedupe"):
//!
//! - [`Dedupe::Set`] — **a replicated id set**. Every node keeps the ids
//!   of the window in memory (the embedded log's [`switchyard_log::Dedupe`],
//!   bounded by `server.dedupe_max_ids`, ~40 B per id), so the check costs
//!   no round trip. An append publishes the ids it wrote as *one* message
//!   (8 bytes per id, after the node's own id) to the set stream `<stream>_IDSET` (subject
//!   `<prefix>.ids`, kept for the window, bounded in bytes to what the
//!   sets hold); every node reads that stream with an ordered consumer
//!   from its start and adds what it reads, so a node restarted or added
//!   later rebuilds its set before it opens (reading a million ids takes
//!   well under a second). A repeat that reaches another node within the
//!   few milliseconds before the ids arrive there passes (the events
//!   stream's `Nats-Msg-Id` window still drops an identical pack): at
//!   least once, never an event lost. Cost: one small publish per append.
//! - [`Dedupe::Lookup`] — **an id stream read per id**: one empty message
//!   per accepted id in `<stream>_IDS` (subject `<prefix>.id.<hex id>`,
//!   one message per subject, `max_age` the window, `max_msgs` bounded,
//!   discard old), asked for by direct get before the publish. No memory
//!   on the nodes and exact across them, but one read and one write per
//!   event: a fifth of the set's throughput here.
//!
//! Both check before the publish and remember only once the records are
//! acknowledged — so a client's retry after a failed append is never taken
//! for a duplicate — and both, like the embedded log, shorten the window
//! at their bound rather than grow without one. A node that dies between
//! the publish and the remember leaves those ids unremembered: a later
//! repeat is delivered again (at least once), never an event lost. The
//! alternative the design notes name, a set local to a partition's pinned
//! owner, needs an owner per partition for every node's ingest; the
//! replicated set gives each node the whole set instead.
//!
//! Every node of a cluster must use the same [`Dedupe`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use tokio::task::JoinHandle;

use crate::Options;

/// How repeats of a `messageId` are dropped beyond JetStream's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// Only JetStream's `Nats-Msg-Id` window (`duplicate_window`).
    Window,
    /// Every node's replicated id set, for `dedupe_window`.
    Set,
    /// The id stream, read per id, for `dedupe_window`.
    Lookup,
}

/// Sixteen hex digits of an id: its `Nats-Msg-Id` and its subject token.
pub fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// The name of the stream a [`Dedupe`] keeps its ids in.
pub(crate) fn stream_name(options: &Options) -> String {
    match options.dedupe {
        Dedupe::Set => format!("{}_IDSET", options.stream),
        Dedupe::Lookup | Dedupe::Window => format!("{}_IDS", options.stream),
    }
}

/// The ids accepted within the window, one way or the other.
pub(crate) enum Ids {
    Set(Box<IdSet>),
    Lookup(Box<IdLookup>),
}

impl Ids {
    /// Opens the store `options.dedupe` names (none for [`Dedupe::Window`]).
    pub(crate) async fn open(js: &jetstream::Context, options: &Options) -> Result<Option<Ids>, async_nats::Error> {
        Ok(match options.dedupe {
            Dedupe::Window => None,
            Dedupe::Set => Some(Ids::Set(Box::new(IdSet::open(js, options).await?))),
            Dedupe::Lookup => Some(Ids::Lookup(Box::new(IdLookup::open(js, options).await?))),
        })
    }

    /// Whether each of `ids` was remembered within the window, in order.
    ///
    /// # Errors
    ///
    /// When the store cannot be read: the append fails then (503), since
    /// no record may be acknowledged unchecked.
    pub(crate) async fn seen(&self, ids: &[u64]) -> Result<Vec<bool>, String> {
        match self {
            Ids::Set(set) => Ok(set.ids.seen_each(ids)),
            Ids::Lookup(lookup) => lookup.seen(ids).await,
        }
    }

    /// Remembers `ids` of records the stream acknowledged. A failure is
    /// logged: the records are durable already, and the worst it costs is
    /// a repeat delivered.
    pub(crate) async fn remember(&self, ids: &[u64]) {
        match self {
            Ids::Set(set) => set.remember(ids),
            Ids::Lookup(lookup) => lookup.remember(ids).await,
        }
    }
}

/// Ids per message of the set stream (8 bytes each: 512 KiB, below
/// NATS's default 1 MiB payload limit).
const IDS_PER_MESSAGE: usize = 64 * 1024;
/// How long opening waits for the set to be read up to the stream's end.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// [`Dedupe::Set`]: this node's copy of the set and the stream that
/// carries every node's additions.
pub(crate) struct IdSet {
    js: jetstream::Context,
    subject: String,
    ids: Arc<switchyard_log::Dedupe>,
    /// Heads this node's messages, so that it skips its own when they
    /// come back.
    node: u64,
    reader: JoinHandle<()>,
}

impl Drop for IdSet {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl IdSet {
    async fn open(js: &jetstream::Context, options: &Options) -> Result<IdSet, async_nats::Error> {
        let subject = format!("{}.ids", options.subject_prefix);
        let name = stream_name(options);
        // What every set holds at most, with room for the messages' own
        // overhead; older ids are evicted as the sets evict them.
        let max_bytes = i64::try_from(options.dedupe_set_max_ids.saturating_mul(8).saturating_mul(2))
            .unwrap_or(i64::MAX)
            .saturating_add(16 << 20);
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: options.dedupe_window,
            max_bytes,
            duplicate_window: Duration::from_secs(120).min(options.dedupe_window),
            ..Default::default()
        })
        .await?;
        let stream = js.get_stream(&name).await?;
        let state = &stream.cached_info().state;
        let end = if state.messages > 0 { state.last_sequence } else { 0 };
        let ids = Arc::new(switchyard_log::Dedupe::in_memory(&switchyard_log::DedupeOptions {
            window: options.dedupe_window,
            max_ids: options.dedupe_set_max_ids,
        }));
        let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
        let node = fastrand::u64(..);
        let reader = tokio::spawn(read(stream, ids.clone(), node, end, loaded_tx));
        let started = Instant::now();
        if end > 0 {
            match tokio::time::timeout(LOAD_TIMEOUT, loaded).await {
                Ok(Ok(count)) => tracing::info!(
                    ids = count,
                    took_ms = started.elapsed().as_millis() as u64,
                    "dedupe ids of the window read from the cluster"
                ),
                _ => tracing::warn!(
                    timeout_secs = LOAD_TIMEOUT.as_secs(),
                    "the dedupe ids are not all read yet; until they are, a repeat may be delivered again"
                ),
            }
        }
        Ok(IdSet { js: js.clone(), subject, ids, node, reader })
    }

    /// Adds `ids` here at once and, for the other nodes, publishes them
    /// (the ack awaited off the request's path).
    fn remember(&self, ids: &[u64]) {
        self.ids.remember(ids);
        for chunk in ids.chunks(IDS_PER_MESSAGE) {
            let mut body = Vec::with_capacity(8 * (chunk.len() + 1));
            body.extend_from_slice(&self.node.to_le_bytes());
            for id in chunk {
                body.extend_from_slice(&id.to_le_bytes());
            }
            let (js, subject) = (self.js.clone(), self.subject.clone());
            tokio::spawn(async move {
                let ack = match js.publish(subject, body.into()).await {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = ack {
                    tracing::warn!(error = %e, "cannot share dedupe ids; a repeat reaching another node would be delivered");
                }
            });
        }
    }
}

/// Adds the other nodes' ids to `ids` as they arrive (a message is the
/// sending node's id, then the ids, 8 bytes each, little-endian; this
/// node's own, `node`, it has already), reading the set stream from its
/// start with an ordered consumer, and again from where it stopped should
/// that ever end; says on `loaded` how many it read once it reached `end`
/// (the stream's end at open) or had nothing left to read.
async fn read(
    stream: stream::Stream,
    ids: Arc<switchyard_log::Dedupe>,
    node: u64,
    end: u64,
    loaded: tokio::sync::oneshot::Sender<u64>,
) {
    let mut loaded = Some(loaded);
    let mut count = 0u64;
    let mut next = 0u64;
    loop {
        let deliver_policy = match next {
            0 => consumer::DeliverPolicy::All,
            start_sequence => consumer::DeliverPolicy::ByStartSequence { start_sequence },
        };
        let config = consumer::pull::OrderedConfig {
            description: Some("a Switchyard node's copy of the dedupe ids".into()),
            deliver_policy,
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = e, "cannot read the dedupe ids; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the dedupe ids; the ordered consumer resumes");
                    continue;
                }
            };
            let mut words = message.payload.chunks_exact(8).filter_map(|b| b.try_into().ok().map(u64::from_le_bytes));
            if words.next() != Some(node) {
                let batch: Vec<u64> = words.collect();
                count += batch.len() as u64;
                ids.remember(&batch);
            }
            if let Ok(info) = message.info() {
                next = info.stream_sequence + 1;
                if (info.stream_sequence >= end || info.pending == 0)
                    && let Some(tx) = loaded.take()
                {
                    let _ = tx.send(count);
                }
            }
        }
        tracing::warn!("the dedupe id stream's reader ended; reading on from where it stopped");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// [`Dedupe::Lookup`]: the id stream.
pub(crate) struct IdLookup {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

impl IdLookup {
    async fn open(js: &jetstream::Context, options: &Options) -> Result<IdLookup, async_nats::Error> {
        let prefix = format!("{}.id", options.subject_prefix);
        let name = stream_name(options);
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.*")],
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: options.dedupe_window,
            max_messages: options.dedupe_max_ids,
            max_messages_per_subject: 1,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120).min(options.dedupe_window),
            ..Default::default()
        })
        .await?;
        let stream = js.get_stream(&name).await?;
        Ok(IdLookup { js: js.clone(), stream, prefix })
    }

    async fn seen(&self, ids: &[u64]) -> Result<Vec<bool>, String> {
        let gets = ids.iter().map(|id| {
            let subject = format!("{}.{}", self.prefix, hex(*id));
            async move { self.stream.direct_get_last_for_subject(subject).await }
        });
        join_all(gets)
            .await
            .into_iter()
            .map(|got| match got {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(false),
                Err(e) => Err(format!("reading the dedupe ids: {e}")),
            })
            .collect()
    }

    /// Publishes one message per id, pipelined, and awaits the acks.
    async fn remember(&self, ids: &[u64]) {
        let mut acks = Vec::new();
        for id in ids {
            let subject = format!("{}.{}", self.prefix, hex(*id));
            match self.js.publish(subject, bytes::Bytes::new()).await {
                Ok(ack) => acks.push(ack),
                Err(e) => tracing::warn!(error = %e, "cannot remember a dedupe id; a repeat of it would be delivered"),
            }
        }
        for ack in acks {
            if let Err(e) = ack.await {
                tracing::warn!(error = %e, "cannot remember a dedupe id; a repeat of it would be delivered");
            }
        }
    }
}
