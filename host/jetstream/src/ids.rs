//! Dedupe of `messageId`s across every node for a day, which JetStream's
//! own duplicate window cannot do: that window keeps each id in memory on
//! every replica and rescans it on restart (about 55 GB per replica for a
//! day at 5k events/s), so it stays short (minutes) and only makes a
//! re-published record safe.
//!
//! [`Dedupe::Stream`] keeps one empty message per accepted id in a stream
//! of its own, subject `<prefix>.id.<hex id>`, one message per subject,
//! deleted after the dedupe window (`max_age`) or, at
//! [`Options::dedupe_max_ids`](crate::Options), oldest first: like the
//! embedded log's dedupe, it shortens the window rather than grow without
//! bound. An append first asks for each id (a direct get, which any
//! replica answers), publishes the fresh records, and only once they are
//! acknowledged remembers their ids — so a client's retry after a failed
//! append is never taken for a duplicate. Two copies of one id racing on
//! two nodes both pass the check; the events stream's `Nats-Msg-Id`
//! window then drops the second. A node that dies between the publish and
//! the remember leaves that id unremembered: a later repeat is delivered
//! again (at least once), never an event lost.
//!
//! The alternative, a 24 h set local to whichever node owns a partition,
//! needs an owner per partition and a rebuild from the stream on
//! failover; the id stream costs one small read and one small publish per
//! event, measured in `BENCHMARKS.md`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::future::join_all;

use crate::Options;

/// How repeats of a `messageId` are dropped beyond JetStream's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// Only JetStream's `Nats-Msg-Id` window (`duplicate_window`).
    Window,
    /// The id stream, across nodes, for `dedupe_window`.
    Stream,
}

/// Sixteen hex digits of an id: its `Nats-Msg-Id` and its subject token.
pub fn hex(id: u64) -> String {
    format!("{id:016x}")
}

pub(crate) fn stream_name(options: &Options) -> String {
    format!("{}_IDS", options.stream)
}

/// The id stream.
pub(crate) struct IdStore {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

impl IdStore {
    pub(crate) async fn open(js: &jetstream::Context, options: &Options) -> Result<IdStore, async_nats::Error> {
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
        Ok(IdStore { js: js.clone(), stream, prefix })
    }

    /// Whether each of `ids` was remembered within the window, in order.
    ///
    /// # Errors
    ///
    /// When the stream cannot be read: the append fails then (503), since
    /// no record may be acknowledged unchecked.
    pub(crate) async fn seen(&self, ids: impl Iterator<Item = u64>) -> Result<Vec<bool>, String> {
        let gets = ids.map(|id| {
            let subject = format!("{}.{}", self.prefix, hex(id));
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

    /// Remembers `ids`, pipelined. A failure is logged: the records are
    /// durable already, and the worst it costs is a repeat delivered.
    pub(crate) async fn remember(&self, ids: impl Iterator<Item = u64>) {
        let mut acks = Vec::new();
        for id in ids {
            let subject = format!("{}.{}", self.prefix, hex(id));
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
