//! Dead letters on the cluster: one stream, `<stream>_DEAD`, subject
//! `<prefix>.dead.<destination>`, so that every node lists, counts and
//! replays the same dead letters whichever node dead-lettered them.
//!
//! A dead letter is one message (its number is its stream sequence); a
//! replay releases what it replayed by purging the destination's subject
//! below the last one. Limits retention without an age or size bound:
//! dead letters stay until replayed, as on the embedded log. Read back
//! one by one from the stream's leader: dead letters are few, and a
//! replay of 100,000 takes a while (the CLI shows its progress).

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;
use switchyard_log::{DeadLetterLog, LetterFuture, Seq};

use crate::{Options, consumer_name, unavailable};

pub(crate) fn stream_name(options: &Options) -> String {
    format!("{}_DEAD", options.stream)
}

/// Creates (or updates) the dead-letter stream.
pub(crate) async fn open_stream(
    js: &jetstream::Context,
    options: &Options,
) -> Result<stream::Stream, async_nats::Error> {
    let name = stream_name(options);
    js.create_or_update_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.dead.*", options.subject_prefix)],
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    Ok(js.get_stream(&name).await?)
}

/// One destination's dead letters on the cluster.
pub(crate) struct StreamDeadLetters {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
}

impl StreamDeadLetters {
    pub(crate) fn new(js: jetstream::Context, stream: stream::Stream, prefix: &str, destination: &str) -> Self {
        StreamDeadLetters { js, stream, subject: format!("{prefix}.dead.{}", consumer_name(destination)) }
    }
}

impl StreamDeadLetters {
    /// Deletes every one (the destination is purged).
    pub(crate) async fn delete_all(&self) -> Result<(), stream::PurgeError> {
        self.stream.purge().filter(self.subject.clone()).await.map(|_| ())
    }
}

impl DeadLetterLog for StreamDeadLetters {
    fn add(&self, payload: Bytes) -> LetterFuture<'_, Seq> {
        Box::pin(async move {
            let ack = self.js.publish(self.subject.clone(), payload).await.map_err(unavailable)?;
            Ok(ack.await.map_err(unavailable)?.sequence)
        })
    }

    fn list(&self, limit: usize) -> LetterFuture<'_, Vec<(Seq, Bytes)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut from = 1;
            // Read from the stream's leader (not by direct get, which any
            // replica answers, one that may not have applied a release yet:
            // a replay right after another would repeat it).
            while out.len() < limit {
                let get = self.stream.raw_message_builder().sequence(from).next_by_subject(self.subject.clone());
                match get.send().await {
                    Ok(m) => {
                        from = m.sequence + 1;
                        out.push((m.sequence, m.payload));
                    }
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                    Err(e) => return Err(unavailable(e)),
                }
            }
            Ok(out)
        })
    }

    fn count(&self) -> LetterFuture<'_, u64> {
        Box::pin(async move {
            let mut subjects = self.stream.info_with_subjects(&self.subject).await.map_err(unavailable)?;
            let mut count = 0;
            while let Some(entry) = subjects.next().await {
                let (subject, n) = entry.map_err(unavailable)?;
                if subject == self.subject {
                    count += n as u64;
                }
            }
            Ok(count)
        })
    }

    fn release(&self, before: Seq) -> LetterFuture<'_, ()> {
        Box::pin(async move {
            self.stream.purge().filter(self.subject.clone()).sequence(before).await.map_err(unavailable)?;
            Ok(())
        })
    }
}
