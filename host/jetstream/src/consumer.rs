//! [`JetStreamConsumer`]: a destination's durable pull consumer, shared by
//! every node.
//!
//! A reader task pulls continuously (JetStream's pull stream: batches
//! requested ahead, heartbeats, re-requested as they are consumed) into a
//! bounded channel; each message holds several records ([`pack`]), handed
//! out one by one. A message is *held* from its receipt until every record
//! in it is finished; then it is acked (`+ACK`). A keep-alive task sends
//! progress acks (`+WPI`) for every held message every third of
//! `ack_wait`, so that a message held through a batch, a slow call, a
//! retry's backoff or a quarantine is not handed to another node; a node
//! that dies stops sending them and its messages go to the others after
//! `ack_wait`.
//!
//! - **Retries are this node's**: a record whose attempt failed is handed
//!   out again after its delay by the same [`Progress`] bookkeeping as the
//!   embedded log's, while its message stays held. A nak to the server
//!   would hand the whole message — records already delivered too — to
//!   another node; if this node dies meanwhile, that is what happens (at
//!   least once).
//! - **The window** bounds the records handed out and not finished, as on
//!   the embedded log; the server's `max_ack_pending` (set to the same
//!   number) bounds the messages held across every node.
//! - A message handed out again while this node still holds it (its
//!   `ack_wait` ran out before a progress ack arrived) is not handed out
//!   twice: the newer delivery's reply subject replaces the older.
//! - **Dropped** (a reload that replaces the worker, shutdown), the
//!   consumer naks what it holds without delay, so that the next reader
//!   gets it at once instead of after `ack_wait`.
//! - The position it reports is the first record unfinished; JetStream
//!   keeps the real one (its ack floor), so `commit` has nothing to save.
//!
//! # Ordered destinations
//!
//! With [`ConsumerOptions::ordered`] a destination has one consumer per
//! partition (`<name>_ordered_p<k>`, filtered on that partition's subject)
//! instead of one, each with `max_ack_pending = 1` and JetStream's
//! pinned-client priority policy: every node pulls every partition, the
//! server hands each partition to one of them and moves it when that node
//! stops pulling for the pin's timeout (`ack_wait`). Since a partition has
//! at most one message out at a time, cluster-wide, the next one goes out
//! only once the previous is acked, that is finished: a node taking over
//! gets the unfinished message again first, and no node can overtake
//! another. On the node, [`Progress::set_ordered`] hands out one batch at
//! a time and retries in place. A node whose connection drops hands back
//! what it held once it notices (pings every quarter of `ack_wait`)
//! instead of delivering it late, behind what another node may have
//! delivered meanwhile; only a call already under way when the
//! connection dropped can still land late. A destination whose order setting changed
//! gets its new consumers started where the old ones had all got to, and
//! the old ones deleted (what lay in between is delivered again).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{DeliverPolicy, Info as ConsumerInfo, PriorityPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use bytes::Bytes;
use futures_util::StreamExt as _;
use switchyard_log::{Consumer, ConsumerOptions, LogError, Progress, Seq};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Inner, consumer_config, consumer_name, pack, unavailable};

/// Messages requested per pull, and the channel's room.
const PULL_BATCH: usize = 64;
/// The window until the worker sets one.
const INITIAL_WINDOW: usize = 10_000;

/// A message received and not yet acked.
struct Held {
    /// Where its ack goes (the latest delivery's).
    reply: Subject,
    /// The connection's disconnect count when it arrived.
    epoch: u64,
    /// Its records, and those not yet finished.
    records: usize,
    unfinished: usize,
}

/// A message on its way from the reader task, unpacked.
struct Received {
    stream_seq: u64,
    records: Vec<Bytes>,
}

type HeldMessages = Arc<Mutex<BTreeMap<u64, Held>>>;

fn lock(held: &Mutex<BTreeMap<u64, Held>>) -> MutexGuard<'_, BTreeMap<u64, Held>> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A destination's consumer of a [`JetStreamLog`](crate::JetStreamLog).
pub struct JetStreamConsumer {
    inner: Arc<Inner>,
    name: String,
    /// Ordered: the partitions' JetStream consumers, unpinned when dropped
    /// (none when unordered).
    pinned: Vec<String>,
    messages: mpsc::Receiver<Received>,
    /// Records received and not yet handed out, in order.
    ready: VecDeque<(Seq, Bytes)>,
    progress: Progress,
    held: HeldMessages,
    acks: mpsc::UnboundedSender<(Subject, Bytes)>,
    /// One per JetStream consumer (one per partition when ordered).
    readers: Vec<JoinHandle<()>>,
    keep_alive: JoinHandle<()>,
    window: usize,
    /// One past the last record received.
    next: Seq,
}

impl JetStreamConsumer {
    /// The destination's durable consumer — one, or, ordered, one per
    /// partition ([`ordered_consumers`]) — created delivering from now on
    /// when new, kept (with its position) when it exists, and moved over
    /// from the other shape when `ordered` changed.
    pub(crate) async fn open(
        inner: Arc<Inner>,
        destination: &str,
        options: ConsumerOptions,
    ) -> Result<JetStreamConsumer, LogError> {
        let name = consumer_name(destination);
        let (consumers, new) = if options.ordered {
            ordered_consumers(&inner, &name).await?
        } else {
            let (consumer, new) = unordered_consumer(&inner, &name).await?;
            (vec![consumer], new)
        };
        inner.counts.track(&name, new).await.map_err(unavailable)?;
        let window = if options.ordered {
            INITIAL_WINDOW
        } else {
            usize::try_from(consumers[0].cached_info().config.max_ack_pending).unwrap_or(INITIAL_WINDOW)
        };
        let (tx, messages) = mpsc::channel(PULL_BATCH);
        let held: HeldMessages = Arc::default();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        tokio::spawn(send_acks(inner.client.clone(), ack_rx));
        let every = (inner.options.ack_wait / 3).max(Duration::from_millis(100));
        let keep_alive = tokio::spawn(keep_alive(held.clone(), acks.clone(), every));
        let pull = if options.ordered { Pull::pinned(&inner.options) } else { Pull::shared() };
        let pinned =
            if options.ordered { consumers.iter().map(|c| c.cached_info().name.clone()).collect() } else { Vec::new() };
        let readers = consumers
            .into_iter()
            .map(|c| {
                let disconnects = inner.disconnects.clone();
                tokio::spawn(read(c, pull.clone(), disconnects, name.clone(), tx.clone(), held.clone(), acks.clone()))
            })
            .collect();
        let next = inner.end.load(Ordering::Relaxed);
        let mut progress = Progress::new(next);
        progress.set_window(window);
        progress.set_ordered(options.ordered);
        Ok(JetStreamConsumer {
            inner,
            name,
            pinned,
            messages,
            ready: VecDeque::new(),
            progress,
            held,
            acks,
            readers,
            keep_alive,
            window,
            next,
        })
    }

    /// Whether it reads an ordered destination's partitions.
    fn ordered(&self) -> bool {
        !self.pinned.is_empty()
    }

    /// Ordered: hands back (naks) the messages held across a lost
    /// connection, before anything more is handed out. While cut off, the
    /// server may have given them to another node, which delivered them
    /// and what follows; delivering them here now would put them behind.
    fn drop_stale(&mut self) {
        let now = self.inner.disconnects.load(Ordering::SeqCst);
        let stale: Vec<(u64, Subject)> = {
            let mut held = lock(&self.held);
            let old: Vec<u64> = held.iter().filter(|(_, h)| h.epoch != now).map(|(m, _)| *m).collect();
            old.into_iter().filter_map(|m| held.remove(&m).map(|h| (m, h.reply))).collect()
        };
        if stale.is_empty() {
            return;
        }
        for (m, reply) in &stale {
            self.progress.forget(pack::seq(*m, 0)..pack::seq(*m + 1, 0));
            self.ready.retain(|(seq, _)| pack::message_of(*seq) != *m);
            let _ = self.acks.send((reply.clone(), AckKind::Nak(None).into()));
        }
        tracing::warn!(
            consumer = self.name,
            messages = stale.len(),
            "handing back what was held across a lost connection, so that it is not delivered out of order"
        );
    }

    fn take(&mut self, m: Received) {
        for (i, record) in m.records.into_iter().enumerate() {
            let seq = pack::seq(m.stream_seq, i);
            self.next = self.next.max(seq + 1);
            self.ready.push_back((seq, record));
        }
    }
}

impl Consumer for JetStreamConsumer {
    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        while self.ready.len() < max {
            match self.messages.try_recv() {
                Ok(m) => self.take(m),
                Err(_) => break,
            }
        }
        if self.ordered() {
            self.drop_stale();
        }
        let mut out = self.progress.due(max, tokio::time::Instant::now());
        let room = self.progress.room(max - out.len()).min(self.ready.len());
        for (seq, payload) in self.ready.drain(..room) {
            self.progress.started(seq, payload.clone());
            out.push((seq, payload));
        }
        Ok(out)
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        if !self.ready.is_empty() && self.progress.room(1) > 0 {
            return Ok(());
        }
        // Here nothing is ready, or the window is full (then only a
        // redelivery's time ends the wait).
        let messages = &mut self.messages;
        let mut got = None;
        let fresh = async {
            let m = messages.recv().await.ok_or(LogError::Closed)?;
            got = Some(m);
            Ok(())
        };
        let result = self.progress.wait(fresh).await;
        if let Some(m) = got {
            self.take(m);
        }
        result
    }

    fn ack(&mut self, seq: Seq) {
        self.progress.finished(seq);
        let message = pack::message_of(seq);
        let mut held = lock(&self.held);
        let done = match held.get_mut(&message) {
            Some(h) => {
                h.unfinished = h.unfinished.saturating_sub(1);
                h.unfinished == 0
            }
            None => false,
        };
        if done && let Some(h) = held.remove(&message) {
            drop(held);
            let _ = self.acks.send((h.reply, AckKind::Ack.into()));
            self.inner.counts.finished(&self.name, h.records as u64);
        }
    }

    fn nak(&mut self, seq: Seq, delay: Duration) {
        self.progress.redeliver(seq, delay);
    }

    fn set_window(&mut self, window: usize) {
        self.progress.set_window(window);
        // Ordered, each partition's consumer holds one message at a time.
        if window == self.window || self.ordered() {
            return;
        }
        self.window = window;
        let config = consumer_config(&self.inner.options, &self.name, i64::try_from(window).unwrap_or(i64::MAX));
        let (stream, name) = (self.inner.events.clone(), self.name.clone());
        tokio::spawn(async move {
            if let Err(e) = stream.update_consumer(config).await {
                tracing::warn!(consumer = name, error = %e, "cannot set the consumer's max_ack_pending");
            }
        });
    }

    fn in_flight(&self) -> usize {
        self.progress.in_flight()
    }

    fn pending(&self) -> u64 {
        let backlog = self.inner.counts.backlog(&self.name).unwrap_or(0);
        backlog.saturating_sub(self.progress.in_flight() as u64)
    }

    fn position(&self) -> Seq {
        self.progress.position(self.ready.front().map_or(self.next, |(seq, _)| *seq))
    }

    fn commit(&mut self) -> Result<(), LogError> {
        Ok(())
    }
}

impl Drop for JetStreamConsumer {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
        self.keep_alive.abort();
        let held = std::mem::take(&mut *lock(&self.held));
        for (_, h) in held {
            let _ = self.acks.send((h.reply, AckKind::Nak(None).into()));
        }
        // Ordered: hand the partitions to the next reader (here or on
        // another node) now rather than after the pin's timeout.
        if !self.pinned.is_empty() {
            let (stream, names) = (self.inner.events.clone(), std::mem::take(&mut self.pinned));
            // On the log's runtime: a destination's executor is shut down
            // right after its worker ends.
            self.inner.runtime.spawn(async move {
                for name in names {
                    if let Err(e) = stream.unpin_consumer(&name, PIN_GROUP).await {
                        tracing::debug!(consumer = name, error = %e, "cannot unpin; the pin moves after its timeout");
                    }
                }
            });
        }
    }
}

/// How a reader pulls.
#[derive(Clone)]
struct Pull {
    expires: Duration,
    heartbeat: Duration,
    /// The priority group of a pinned consumer.
    group: Option<&'static str>,
}

impl Pull {
    fn shared() -> Pull {
        Pull { expires: Duration::from_secs(10), heartbeat: Duration::from_secs(3), group: None }
    }

    /// Pulls that keep the pin: expiring well within the pin's timeout.
    fn pinned(options: &crate::Options) -> Pull {
        let expires = (pin_timeout(options) / 4).max(Duration::from_millis(500));
        Pull { expires, heartbeat: expires / 3, group: Some(PIN_GROUP) }
    }
}

/// The priority group every node pulls an ordered destination's
/// partitions in; the server pins one node per partition.
const PIN_GROUP: &str = "switchyard";

/// How long a pinned node may stop pulling before its partition's pin
/// moves to another node: as long as its held messages wait to be handed
/// out again (`ack_wait`), so both move together.
fn pin_timeout(options: &crate::Options) -> Duration {
    options.ack_wait.max(Duration::from_secs(2))
}

/// The JetStream consumer of an ordered destination's partition `k`.
pub(crate) fn partition_consumer(name: &str, k: u32) -> String {
    format!("{name}{PARTITION_MARK}{k}")
}

const PARTITION_MARK: &str = "_ordered_p";

/// The destination's consumer name a JetStream consumer belongs to (its
/// own name, or the destination of a partition consumer).
pub(crate) fn destination_of(consumer: &str) -> &str {
    match consumer.rsplit_once(PARTITION_MARK) {
        Some((name, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => consumer,
    }
}

/// Every JetStream consumer of destination `name` on the stream: the
/// unordered one and each partition's.
pub(crate) fn all_consumers(options: &crate::Options, name: &str) -> Vec<String> {
    std::iter::once(name.to_owned())
        .chain((0..options.partitions.max(1)).map(|k| partition_consumer(name, k)))
        .collect()
}

/// The unordered destination's one consumer: kept, or created — from
/// where its ordered partition consumers (if any) had all got to, which
/// are then deleted.
async fn unordered_consumer(inner: &Inner, name: &str) -> Result<(PullConsumer, bool), LogError> {
    if info_if_any(inner, name).await?.is_some() {
        return Ok((inner.events.get_consumer(name).await.map_err(unavailable)?, false));
    }
    let end = stream_end(inner).await?;
    let mut start = None;
    let mut previous = Vec::new();
    let mut pause_until = None;
    for k in 0..inner.options.partitions.max(1) {
        let p = partition_consumer(name, k);
        if let Some(info) = info_if_any(inner, &p).await? {
            let from = resume_point(&info, end);
            start = Some(start.map_or(from, |s: u64| s.min(from)));
            if info.paused {
                pause_until = pause_until.or(info.config.pause_until);
            }
            previous.push(p);
        }
    }
    let mut config = consumer_config(&inner.options, name, INITIAL_WINDOW as i64);
    if let Some(start_sequence) = start {
        config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
    }
    // A paused destination stays paused, on every node.
    config.pause_until = pause_until;
    let consumer = inner.events.create_consumer(config).await.map_err(unavailable)?;
    retire(inner, name, &previous, start).await;
    Ok((consumer, start.is_none()))
}

/// An ordered destination's consumers, one per partition, each pinned to
/// one node at a time and holding one message at a time: kept, or created
/// — from where its unordered consumer (if any) had got to, which is then
/// deleted.
async fn ordered_consumers(inner: &Inner, name: &str) -> Result<(Vec<PullConsumer>, bool), LogError> {
    let partitions = inner.options.partitions.max(1);
    let end = stream_end(inner).await?;
    let previous = info_if_any(inner, name).await?;
    let start = previous.as_ref().map(|info| resume_point(info, end));
    let mut consumers = Vec::with_capacity(partitions as usize);
    let mut new = previous.is_none();
    for k in 0..partitions {
        let p = partition_consumer(name, k);
        if info_if_any(inner, &p).await?.is_some() {
            consumers.push(inner.events.get_consumer(&p).await.map_err(unavailable)?);
            new = false;
            continue;
        }
        let mut config = consumer_config(&inner.options, &p, 1);
        config.filter_subject = format!("{}.ev.{k}", inner.options.subject_prefix);
        config.priority_policy = PriorityPolicy::PinnedClient;
        config.priority_groups = vec![PIN_GROUP.to_owned()];
        config.priority_timeout = pin_timeout(&inner.options);
        if let Some(start_sequence) = start {
            config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
        }
        // A paused destination stays paused, on every node.
        config.pause_until = previous.as_ref().filter(|info| info.paused).and_then(|info| info.config.pause_until);
        consumers.push(inner.events.create_consumer(config).await.map_err(unavailable)?);
    }
    if previous.is_some() {
        retire(inner, name, &[name.to_owned()], start).await;
    }
    Ok((consumers, new))
}

/// Consumer `name`'s state on the server, `None` when it does not exist.
///
/// # Errors
///
/// Any other failure to ask: a consumer that may exist is never taken for
/// an absent one (its replacement would skip what it had not finished).
pub(crate) async fn info_if_any(inner: &Inner, name: &str) -> Result<Option<ConsumerInfo>, LogError> {
    match inner.events.consumer_info(name).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

/// The stream's last sequence + 1, read before the consumers it bounds.
async fn stream_end(inner: &Inner) -> Result<u64, LogError> {
    let info = inner.events.get_info().await.map_err(unavailable)?;
    Ok(info.state.last_sequence + 1)
}

/// Where a replacement of the consumer `info` describes may start without
/// skipping what it did not finish: past its ack floor, or, when it had
/// nothing pending, at `end` (the stream's end read before `info`).
fn resume_point(info: &ConsumerInfo, end: u64) -> u64 {
    if info.num_pending == 0 && info.num_ack_pending == 0 { end } else { info.ack_floor.stream_sequence + 1 }
}

/// Deletes the consumers a destination had in its other shape, now that
/// the new ones start at `start`: what they had handed out beyond it is
/// delivered again (at least once).
async fn retire(inner: &Inner, name: &str, previous: &[String], start: Option<u64>) {
    for p in previous {
        if let Err(e) = inner.events.delete_consumer(p).await {
            tracing::warn!(consumer = p, error = %e, "cannot delete a consumer of the destination's previous shape");
        }
    }
    if !previous.is_empty() {
        tracing::info!(
            destination = name,
            from_stream_seq = start,
            "the destination's order setting changed: its consumers were replaced, resuming where the old ones had all got to"
        );
    }
}

/// Sends acks in order until every sender is gone.
async fn send_acks(client: async_nats::Client, mut acks: mpsc::UnboundedReceiver<(Subject, Bytes)>) {
    while let Some((reply, kind)) = acks.recv().await {
        if let Err(e) = client.publish(reply, kind).await {
            tracing::debug!(error = %e, "cannot send an ack; the message will be handed out again");
        }
    }
}

/// Sends a progress ack for every held message, every `every`.
async fn keep_alive(held: HeldMessages, acks: mpsc::UnboundedSender<(Subject, Bytes)>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let replies: Vec<Subject> = lock(&held).values().map(|h| h.reply.clone()).collect();
        for reply in replies {
            if acks.send((reply, AckKind::Progress.into())).is_err() {
                return;
            }
        }
    }
}

/// Pulls messages into `tx`, unpacked, and pulls again after an error
/// (the connection is lost, the consumer deleted meanwhile, …).
async fn read(
    consumer: PullConsumer,
    pull: Pull,
    disconnects: Arc<std::sync::atomic::AtomicU64>,
    name: String,
    tx: mpsc::Sender<Received>,
    held: HeldMessages,
    acks: mpsc::UnboundedSender<(Subject, Bytes)>,
) {
    let mut gone_told = false;
    loop {
        let mut stream =
            consumer.stream().max_messages_per_batch(PULL_BATCH).expires(pull.expires).heartbeat(pull.heartbeat);
        if let Some(group) = pull.group {
            stream = stream.group(group);
        }
        let messages = stream.messages().await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                // Deleted under it: by a purge, or by a node that runs
                // the destination with another order setting.
                if e.to_string().contains("not found") && !gone_told {
                    gone_told = true;
                    tracing::warn!(consumer = name, error = %e, "the consumer is gone; is every node on the same config?");
                } else {
                    tracing::debug!(consumer = name, error = %e, "cannot pull; trying again");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(consumer = name, error = %e, "pull interrupted; pulling again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                    Some(Ok(message)) => {
                        let Some(reply) = message.reply.clone() else { continue };
                        let Ok(info) = message.info() else { continue };
                        let stream_seq = info.stream_sequence;
                        let (records, intact) = pack::decode(&message.payload);
                        if !intact {
                            tracing::error!(
                                consumer = name, stream_seq, kept = records.len(),
                                "a message in the stream is not in Switchyard's layout; delivering the records before the damage"
                            );
                        }
                        if records.is_empty() {
                            let _ = acks.send((reply, AckKind::Ack.into()));
                            continue;
                        }
                        let fresh = {
                            let mut held = lock(&held);
                            match held.get_mut(&stream_seq) {
                                Some(h) => {
                                    h.reply = reply;
                                    h.epoch = disconnects.load(Ordering::SeqCst);
                                    false
                                }
                                None => {
                                    let n = records.len();
                                    let epoch = disconnects.load(Ordering::SeqCst);
                                    held.insert(stream_seq, Held { reply, epoch, records: n, unfinished: n });
                                    true
                                }
                            }
                        };
                        if fresh && tx.send(Received { stream_seq, records }).await.is_err() {
                            return;
                        }
                    }
                },
                () = tx.closed() => return,
            }
        }
    }
}
