//! [`JetStreamConsumer`]: a destination's durable pull consumer, shared by
//! every node.
//!
//! A reader task pulls continuously (JetStream's pull stream: batches
//! requested ahead, heartbeats, re-requested as they are consumed) into a
//! bounded channel that [`Consumer::try_batch`] drains; every record
//! received is *in flight* until acked, whether handed out yet or not. The
//! consumer sends progress acks (`+WPI`) for every record in flight
//! every third of `ack_wait`, so a record held in a batch, a slow call or a
//! quarantine is not handed to another node meanwhile; a node that dies
//! stops sending them and its records go to the others after `ack_wait`.
//!
//! - **ack** sends `+ACK`; **nak** sends `-NAK` with the delay, and the
//!   server hands the record out again once it has passed — to whichever
//!   node pulls first. The record keeps its slot in `max_ack_pending`
//!   meanwhile, as it keeps its place in the embedded log's window.
//! - **The window** is the consumer's `max_ack_pending`, shared by every
//!   node: a failing destination holds at most that many records across
//!   the cluster.
//! - A record handed out again while this node still holds it (its
//!   `ack_wait` ran out before a progress ack arrived) is not handed out
//!   twice: the newer delivery's reply subject replaces the older.
//! - **Dropped** (a reload that replaces the worker, shutdown), the
//!   consumer naks what it holds without delay, so that the next reader
//!   gets it at once instead of after `ack_wait`.
//! - The position it reports is the first record in flight; JetStream
//!   keeps the real one (its ack floor), so `commit` has nothing to save.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures_util::StreamExt as _;
use switchyard_log::{Consumer, LogError, Seq};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Inner, consumer_config, consumer_name, unavailable};

/// Records requested per pull, and the channel's room.
const PULL_BATCH: usize = 500;
/// `max_ack_pending` until the worker sets its window.
const INITIAL_WINDOW: usize = 10_000;

/// A record received and not yet acked.
struct Flight {
    /// Where its ack goes (the latest delivery's).
    reply: Subject,
    /// Nak'd: the server hands it out again after the delay.
    naked: bool,
}

/// A record on its way from the reader task.
struct Delivery {
    seq: Seq,
    payload: Bytes,
    /// Records the server holds for this consumer beyond this one.
    pending: u64,
}

type Flights = Arc<Mutex<BTreeMap<Seq, Flight>>>;

fn lock(flights: &Mutex<BTreeMap<Seq, Flight>>) -> MutexGuard<'_, BTreeMap<Seq, Flight>> {
    flights.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A destination's consumer of a [`JetStreamLog`](crate::JetStreamLog).
pub struct JetStreamConsumer {
    inner: Arc<Inner>,
    name: String,
    deliveries: mpsc::Receiver<Delivery>,
    peeked: Option<Delivery>,
    flights: Flights,
    acks: mpsc::UnboundedSender<(Subject, Bytes)>,
    reader: JoinHandle<()>,
    progress: JoinHandle<()>,
    window: usize,
    pending: u64,
    /// One past the last record handed out.
    next: Seq,
}

impl JetStreamConsumer {
    /// The destination's durable consumer: created delivering from now on
    /// when new, kept (with its position) when it exists.
    pub(crate) async fn open(inner: Arc<Inner>, destination: &str) -> Result<JetStreamConsumer, LogError> {
        let name = consumer_name(destination);
        let config = consumer_config(&inner.options, &name, INITIAL_WINDOW as i64);
        let consumer: PullConsumer = inner.events.get_or_create_consumer(&name, config).await.map_err(unavailable)?;
        let (tx, deliveries) = mpsc::channel(PULL_BATCH * 2);
        let flights: Flights = Arc::default();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        tokio::spawn(send_acks(inner.client.clone(), ack_rx));
        let progress_every = (inner.options.ack_wait / 3).max(Duration::from_millis(100));
        let progress = tokio::spawn(keep_alive(flights.clone(), acks.clone(), progress_every));
        let window = usize::try_from(consumer.cached_info().config.max_ack_pending).unwrap_or(INITIAL_WINDOW);
        let reader = tokio::spawn(read(consumer, name.clone(), tx, flights.clone()));
        let next = inner.end.load(std::sync::atomic::Ordering::Relaxed);
        Ok(JetStreamConsumer {
            inner,
            name,
            deliveries,
            peeked: None,
            flights,
            acks,
            reader,
            progress,
            window,
            pending: 0,
            next,
        })
    }

    fn reply(&self, seq: Seq, kind: AckKind, finished: bool) {
        let mut flights = lock(&self.flights);
        let reply = if finished {
            flights.remove(&seq).map(|f| f.reply)
        } else {
            flights.get_mut(&seq).map(|f| {
                f.naked = true;
                f.reply.clone()
            })
        };
        drop(flights);
        if let Some(reply) = reply {
            let _ = self.acks.send((reply, kind.into()));
        }
    }
}

impl Consumer for JetStreamConsumer {
    async fn try_batch(&mut self, max: usize) -> Result<Vec<(Seq, Bytes)>, LogError> {
        let mut out: Vec<Delivery> = self.peeked.take().into_iter().collect();
        while out.len() < max {
            match self.deliveries.try_recv() {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        if let Some(last) = out.last() {
            self.pending = last.pending;
        }
        Ok(out
            .into_iter()
            .map(|d| {
                self.next = self.next.max(d.seq + 1);
                (d.seq, d.payload)
            })
            .collect())
    }

    async fn wait(&mut self) -> Result<(), LogError> {
        if self.peeked.is_some() {
            return Ok(());
        }
        match self.deliveries.recv().await {
            Some(d) => {
                self.peeked = Some(d);
                Ok(())
            }
            None => Err(LogError::Closed),
        }
    }

    fn ack(&mut self, seq: Seq) {
        self.reply(seq, AckKind::Ack, true);
    }

    fn nak(&mut self, seq: Seq, delay: Duration) {
        self.reply(seq, AckKind::Nak(Some(delay)), false);
    }

    fn set_window(&mut self, window: usize) {
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
        let waiting = self.deliveries.len() + usize::from(self.peeked.is_some());
        lock(&self.flights).len().saturating_sub(waiting)
    }

    fn pending(&self) -> u64 {
        self.pending + (self.deliveries.len() as u64)
    }

    fn position(&self) -> Seq {
        lock(&self.flights).keys().next().copied().unwrap_or(self.next)
    }

    fn commit(&mut self) -> Result<(), LogError> {
        Ok(())
    }
}

impl Drop for JetStreamConsumer {
    fn drop(&mut self) {
        self.reader.abort();
        self.progress.abort();
        let held = std::mem::take(&mut *lock(&self.flights));
        // What it held is backlog again (until the next refresh reads the
        // server's count).
        let backlog = self.pending + held.len() as u64;
        self.inner.consumers().entry(self.name.clone()).or_default().backlog = backlog;
        for (_, flight) in held {
            if !flight.naked {
                let _ = self.acks.send((flight.reply, AckKind::Nak(None).into()));
            }
        }
    }
}

/// Sends acks in order until every sender is gone.
async fn send_acks(client: async_nats::Client, mut acks: mpsc::UnboundedReceiver<(Subject, Bytes)>) {
    while let Some((reply, kind)) = acks.recv().await {
        if let Err(e) = client.publish(reply, kind).await {
            tracing::debug!(error = %e, "cannot send an ack; the record will be handed out again");
        }
    }
}

/// Sends a progress ack for every record in flight and not nak'd, every
/// `every`.
async fn keep_alive(flights: Flights, acks: mpsc::UnboundedSender<(Subject, Bytes)>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let replies: Vec<Subject> = lock(&flights).values().filter(|f| !f.naked).map(|f| f.reply.clone()).collect();
        for reply in replies {
            if acks.send((reply, AckKind::Progress.into())).is_err() {
                return;
            }
        }
    }
}

/// Pulls records into `tx`, and pulls again after an error (the
/// connection is lost, the consumer deleted meanwhile, …).
async fn read(consumer: PullConsumer, name: String, tx: mpsc::Sender<Delivery>, flights: Flights) {
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
                        let (seq, pending) = (info.stream_sequence, info.pending);
                        let hand_out = {
                            let mut flights = lock(&flights);
                            match flights.get_mut(&seq) {
                                Some(f) => {
                                    let again = f.naked;
                                    f.reply = reply;
                                    f.naked = false;
                                    again
                                }
                                None => {
                                    flights.insert(seq, Flight { reply, naked: false });
                                    true
                                }
                            }
                        };
                        if hand_out {
                            let delivery = Delivery { seq, payload: message.payload.clone(), pending };
                            if tx.send(delivery).await.is_err() {
                                return;
                            }
                        }
                    }
                },
                () = tx.closed() => return,
            }
        }
    }
}
