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

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures_util::StreamExt as _;
use switchyard_log::{Consumer, LogError, Progress, Seq};
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
    messages: mpsc::Receiver<Received>,
    /// Records received and not yet handed out, in order.
    ready: VecDeque<(Seq, Bytes)>,
    progress: Progress,
    held: HeldMessages,
    acks: mpsc::UnboundedSender<(Subject, Bytes)>,
    reader: JoinHandle<()>,
    keep_alive: JoinHandle<()>,
    window: usize,
    /// One past the last record received.
    next: Seq,
}

impl JetStreamConsumer {
    /// The destination's durable consumer: created delivering from now on
    /// when new, kept (with its position) when it exists.
    pub(crate) async fn open(inner: Arc<Inner>, destination: &str) -> Result<JetStreamConsumer, LogError> {
        let name = consumer_name(destination);
        let config = consumer_config(&inner.options, &name, INITIAL_WINDOW as i64);
        let (consumer, new): (PullConsumer, bool) = match inner.events.get_consumer(&name).await {
            Ok(c) => (c, false),
            Err(_) => (inner.events.create_consumer(config).await.map_err(unavailable)?, true),
        };
        inner.counts.track(&name, new).await.map_err(unavailable)?;
        let window = usize::try_from(consumer.cached_info().config.max_ack_pending).unwrap_or(INITIAL_WINDOW);
        let (tx, messages) = mpsc::channel(PULL_BATCH);
        let held: HeldMessages = Arc::default();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        tokio::spawn(send_acks(inner.client.clone(), ack_rx));
        let every = (inner.options.ack_wait / 3).max(Duration::from_millis(100));
        let keep_alive = tokio::spawn(keep_alive(held.clone(), acks.clone(), every));
        let reader = tokio::spawn(read(consumer, name.clone(), tx, held.clone(), acks.clone()));
        let next = inner.end.load(Ordering::Relaxed);
        let mut progress = Progress::new(next);
        progress.set_window(window);
        Ok(JetStreamConsumer {
            inner,
            name,
            messages,
            ready: VecDeque::new(),
            progress,
            held,
            acks,
            reader,
            keep_alive,
            window,
            next,
        })
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
        if window == self.window {
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
        self.reader.abort();
        self.keep_alive.abort();
        let held = std::mem::take(&mut *lock(&self.held));
        for (_, h) in held {
            let _ = self.acks.send((h.reply, AckKind::Nak(None).into()));
        }
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
    name: String,
    tx: mpsc::Sender<Received>,
    held: HeldMessages,
    acks: mpsc::UnboundedSender<(Subject, Bytes)>,
) {
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .expires(Duration::from_secs(10))
            .heartbeat(Duration::from_secs(3))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(consumer = name, error = %e, "cannot pull; trying again");
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
                                    false
                                }
                                None => {
                                    let n = records.len();
                                    held.insert(stream_seq, Held { reply, records: n, unfinished: n });
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
