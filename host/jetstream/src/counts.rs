//! Exact backlogs in records, across nodes.
//!
//! The server counts a consumer's backlog in messages, and a message holds
//! several records ([`pack`](crate::pack)). So the log keeps two kinds of
//! JetStream counters (server 2.12's `allow_msg_counter`, added to with a
//! `Nats-Incr` header) in a stream of their own, `<stream>_COUNTS`:
//! `<prefix>.count.appended`, records appended by every node, and
//! `<prefix>.count.acked.<consumer>`, records each consumer finished.
//! A backlog is the difference. Both are totals that only grow, so every
//! value a node reads or is answered with is merged by taking the larger:
//! nothing is counted twice, and what another node did shows within a
//! refresh.
//!
//! An append adds its records before it returns. A consumer's finished
//! records are added in the background every [`FLUSH_EVERY`]; until then
//! they count as finished locally. A new consumer starts with its count at
//! the appended total, as it starts delivering from now on; records
//! appended between its creation and that read are not counted (the
//! backlog shows less, never negative).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::Options;

/// How often finished records are added to the server's counters.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A consumer's count of finished records.
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    /// The server's total, as last read or answered.
    total: u64,
    /// Finished on this node, not yet added to the server's total.
    unflushed: u64,
}

/// The counters of one log.
pub(crate) struct Counts {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
    appended: AtomicU64,
    acked: Mutex<HashMap<String, Acked>>,
}

/// Why a counter could not be read or added to.
pub(crate) type CountError = String;

impl Counts {
    pub(crate) async fn open(js: &jetstream::Context, options: &Options) -> Result<Counts, async_nats::Error> {
        let name = format!("{}_COUNTS", options.stream);
        let prefix = format!("{}.count", options.subject_prefix);
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            allow_message_counter: true,
            allow_direct: true,
            ..Default::default()
        })
        .await?;
        let stream = js.get_stream(&name).await?;
        let counts = Counts { js: js.clone(), stream, prefix, appended: AtomicU64::new(0), acked: Mutex::default() };
        let appended = counts.read(&counts.appended_subject()).await?;
        counts.appended.store(appended, Ordering::Relaxed);
        Ok(counts)
    }

    fn acked(&self) -> MutexGuard<'_, HashMap<String, Acked>> {
        self.acked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn appended_subject(&self) -> String {
        format!("{}.appended", self.prefix)
    }

    fn acked_subject(&self, consumer: &str) -> String {
        format!("{}.acked.{consumer}", self.prefix)
    }

    /// A counter's value (0 when it was never added to).
    async fn read(&self, subject: &str) -> Result<u64, CountError> {
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(value(&message.payload)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("reading counter {subject}: {e}")),
        }
    }

    /// Adds `by` to a counter; returns its new total.
    async fn add(&self, subject: String, by: u64) -> Result<u64, CountError> {
        let message = jetstream::message::PublishMessage::build().header("Nats-Incr", format!("+{by}").as_str());
        let ack = self.js.send_publish(subject.clone(), message).await.map_err(|e| e.to_string())?;
        let ack = ack.await.map_err(|e| format!("adding to counter {subject}: {e}"))?;
        Ok(ack.value.as_deref().map_or(0, |v| v.parse().unwrap_or(0)))
    }

    /// Counts `n` records appended.
    pub(crate) async fn appended(&self, n: u64) -> Result<(), CountError> {
        let total = self.add(self.appended_subject(), n).await?;
        self.appended.fetch_max(total, Ordering::Relaxed);
        Ok(())
    }

    /// Starts counting for `consumer`: when `new`, its count starts at the
    /// appended total.
    pub(crate) async fn track(&self, consumer: &str, new: bool) -> Result<(), CountError> {
        let subject = self.acked_subject(consumer);
        let mut total = self.read(&subject).await?;
        if new {
            let appended = self.read(&self.appended_subject()).await?;
            self.appended.fetch_max(appended, Ordering::Relaxed);
            let appended = self.appended.load(Ordering::Relaxed);
            if appended > total {
                total = self.add(subject, appended - total).await?;
            }
        }
        let mut acked = self.acked();
        let entry = acked.entry(consumer.to_owned()).or_default();
        entry.total = entry.total.max(total);
        Ok(())
    }

    /// `n` records of `consumer` finished on this node.
    pub(crate) fn finished(&self, consumer: &str, n: u64) {
        if let Some(a) = self.acked().get_mut(consumer) {
            a.unflushed += n;
        }
    }

    /// Records appended and not finished by `consumer`.
    pub(crate) fn backlog(&self, consumer: &str) -> Option<u64> {
        let a = *self.acked().get(consumer)?;
        Some(self.appended.load(Ordering::Relaxed).saturating_sub(a.total + a.unflushed))
    }

    /// Forgets `consumer`'s count (it was deleted).
    pub(crate) async fn forget(&self, consumer: &str) -> Result<(), CountError> {
        self.acked().remove(consumer);
        self.stream.purge().filter(self.acked_subject(consumer)).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Adds what consumers finished on this node to the server's totals.
    pub(crate) async fn flush(&self) {
        let due: Vec<(String, u64)> =
            self.acked().iter().filter(|(_, a)| a.unflushed > 0).map(|(n, a)| (n.clone(), a.unflushed)).collect();
        for (name, n) in due {
            match self.add(self.acked_subject(&name), n).await {
                Ok(total) => {
                    if let Some(a) = self.acked().get_mut(&name) {
                        a.unflushed -= n.min(a.unflushed);
                        a.total = a.total.max(total);
                    }
                }
                Err(e) => tracing::debug!(consumer = name, error = e, "cannot count finished records; trying again"),
            }
        }
    }

    /// Reads every total again: what other nodes appended and finished.
    pub(crate) async fn refresh(&self) {
        match self.read(&self.appended_subject()).await {
            Ok(v) => {
                self.appended.fetch_max(v, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = e, "cannot read the appended count"),
        }
        let names: Vec<String> = self.acked().keys().cloned().collect();
        for name in names {
            if let Ok(v) = self.read(&self.acked_subject(&name)).await
                && let Some(a) = self.acked().get_mut(&name)
            {
                a.total = a.total.max(v);
            }
        }
    }
}

/// A counter message's value: `{"val":"123"}`.
fn value(payload: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("val").and_then(|v| v.as_str().and_then(|s| s.parse().ok())))
        .unwrap_or(0)
}
