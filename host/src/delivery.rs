//! Delivery workers: one per destination, each with its own cursor into the
//! log, plugin instance and backoff, so a slow or failing destination never
//! slows the others — its backlog simply stays on disk.
//!
//! A worker reads the log from its cursor, keeps the events its
//! subscription wants, and gathers a batch (up to `max_events`, or whatever
//! arrived within `linger_ms` of the first event). It calls the plugin's
//! `deliver` and acts on each event's outcome: delivered is final; rejected
//! goes to the dead letters; a retry waits a jittered exponential backoff
//! (or the delay the plugin asked for) until the retry horizon, then goes to
//! the dead letters. The cursor advances only over events whose outcome is
//! final, so after a crash everything unfinished is delivered again
//! (at-least-once). At most `window` events are in flight or waiting for a
//! retry; past that the worker stops reading and memory stays flat.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{BatchConfig, RetryConfig};
use crate::cursor::Cursors;
use crate::deadletter::DeadLetters;
use crate::log::{EventLog, LogReader, Seq, decode_envelope};
use crate::metrics::DestinationStats;
use crate::router::Subscription;
use crate::runtime::{CallError, Grants, Instance, Outcome, Plugin};
use crate::spec::Envelope;

/// Everything a worker needs to run one destination.
pub struct WorkerSpec<L: EventLog> {
    pub plugin: Plugin,
    pub grants: Arc<Grants>,
    pub settings_json: String,
    pub subscription: Subscription,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub stats: Arc<DestinationStats>,
    pub log: Arc<L>,
    pub cursors: Cursors,
    pub dead_letters: Arc<DeadLetters>,
}

/// An event in flight or waiting for another attempt.
#[derive(Debug)]
struct Pending {
    seq: Seq,
    event: Arc<Envelope>,
    attempts: u32,
    first_failure: Option<Instant>,
}

/// Retries ordered by due time, then log order.
struct Due(Instant, Pending);

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1.seq) == (o.0, o.1.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1.seq).cmp(&(o.0, o.1.seq))
    }
}

struct Worker<L: EventLog> {
    spec: WorkerSpec<L>,
    reader: L::Reader,
    instance: Option<Instance>,
    retries: BinaryHeap<Reverse<Due>>,
    /// Sequence numbers read but not final.
    unfinished: BTreeSet<Seq>,
    window: usize,
    saved: Seq,
}

/// Runs a destination until `shutdown` turns true; the batch in flight
/// finishes and the cursor is saved.
pub async fn run_worker<L: EventLog>(spec: WorkerSpec<L>, shutdown: watch::Receiver<bool>) {
    let name = spec.grants.name.clone();
    let start = match spec.cursors.load(&name, spec.log.end()) {
        Ok(at) => at,
        Err(e) => {
            tracing::error!(destination = &*name, error = %e, "cannot persist the cursor; destination stopped");
            return;
        }
    };
    let reader = match spec.log.reader(start) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(destination = &*name, error = %e, "cannot read the log; destination stopped");
            return;
        }
    };
    let window = (spec.batch.max_events * 20).max(10_000);
    let mut w = Worker {
        spec,
        reader,
        instance: None,
        retries: BinaryHeap::new(),
        unfinished: BTreeSet::new(),
        window,
        saved: start,
    };
    tracing::info!(destination = &*name, cursor = start, "delivery worker started");
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            biased;
            () = &mut stop => break,
            batch = w.gather() => batch,
        };
        if !batch.is_empty() {
            w.deliver(batch).await;
        }
        w.save_cursor();
    }
    w.save_cursor();
    if !w.retries.is_empty() {
        tracing::info!(
            destination = &*name,
            events = w.retries.len(),
            "stopping with events waiting for a retry; they are redelivered after restart"
        );
    }
}

impl<L: EventLog> Worker<L> {
    /// Gathers the next batch: due retries first, then new events from the
    /// log, until the batch is full or `linger_ms` has passed since it got
    /// its first event.
    async fn gather(&mut self) -> Vec<Pending> {
        let max = self.spec.batch.max_events;
        let linger = Duration::from_millis(self.spec.batch.linger_ms);
        let mut batch = Vec::with_capacity(max);
        let mut deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            while batch.len() < max && self.retries.peek().is_some_and(|Reverse(Due(at, _))| *at <= now) {
                if let Some(Reverse(Due(_, p))) = self.retries.pop() {
                    batch.push(p);
                }
            }
            if batch.len() < max && self.unfinished.len() < self.window {
                let room = (max - batch.len()).min(self.window - self.unfinished.len());
                match self.reader.try_batch(room).await {
                    Ok(records) => {
                        for (seq, payload) in records {
                            self.admit(seq, &payload, &mut batch);
                        }
                    }
                    Err(e) => {
                        tracing::error!(destination = &*self.spec.grants.name, error = %e, "reading the log failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if !batch.is_empty() {
                let d = *deadline.get_or_insert(now + linger);
                if batch.len() >= max || Instant::now() >= d {
                    return batch;
                }
            }
            // Wait for new records, the next retry, or the linger deadline.
            let next_retry = self.retries.peek().map(|Reverse(Due(at, _))| *at);
            let wake = match (deadline, next_retry) {
                (Some(d), Some(r)) => Some(d.min(r)),
                (d, r) => d.or(r),
            };
            let can_read = self.unfinished.len() < self.window;
            match (wake, can_read) {
                (Some(at), true) => {
                    tokio::select! {
                        _ = self.reader.wait() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                (Some(at), false) => tokio::time::sleep_until(at).await,
                (None, true) => {
                    if self.reader.wait().await.is_err() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                (None, false) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Takes one log record into `batch` if this destination wants it.
    fn admit(&mut self, seq: Seq, payload: &[u8], batch: &mut Vec<Pending>) {
        let event = match decode_envelope(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(destination = &*self.spec.grants.name, seq, error = %e, "skipping undecodable log record");
                return;
            }
        };
        if !self.spec.subscription.wants(&event) {
            self.spec.stats.filtered.inc();
            return;
        }
        self.spec.stats.received.inc();
        self.unfinished.insert(seq);
        batch.push(Pending { seq, event: Arc::new(event), attempts: 0, first_failure: None });
    }

    async fn deliver(&mut self, batch: Vec<Pending>) {
        let events: Vec<Arc<Envelope>> = batch.iter().map(|p| p.event.clone()).collect();
        let result = match self.ensure_instance().await {
            Ok(inst) => inst.deliver(&events).await,
            Err(err) => Err(err),
        };
        let jitter = fastrand::f64();
        match result {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Delivered => {
                            self.spec.stats.delivered.inc();
                            self.unfinished.remove(&pending.seq);
                        }
                        Outcome::Rejected(reason) => self.dead_letter(pending, &reason).await,
                        Outcome::Retry { after, reason } => self.schedule(pending, after, jitter, &reason).await,
                    }
                }
            }
            Err(err) => {
                self.spec.stats.call_failures.inc();
                tracing::error!(destination = &*self.spec.grants.name, error = %err, events = batch.len(), "plugin call failed; batch will be retried");
                // A trapped or timed-out instance cannot be entered again.
                self.instance = None;
                let reason = err.to_string();
                for pending in batch {
                    self.schedule(pending, None, jitter, &reason).await;
                }
            }
        }
    }

    async fn ensure_instance(&mut self) -> Result<&mut Instance, CallError> {
        if self.instance.is_none() {
            let mut inst = self.spec.plugin.instantiate(self.spec.grants.clone()).await?;
            inst.init(&self.spec.settings_json).await?;
            self.instance = Some(inst);
        }
        self.instance.as_mut().ok_or_else(|| CallError::Trap("no instance".into()))
    }

    /// Puts `pending` back for another attempt, or dead-letters it when the
    /// retry horizon has passed.
    async fn schedule(&mut self, mut pending: Pending, after: Option<Duration>, jitter: f64, reason: &str) {
        let first = *pending.first_failure.get_or_insert_with(Instant::now);
        pending.attempts += 1;
        let delay = after.unwrap_or_else(|| self.spec.retry.backoff(pending.attempts, jitter));
        if first.elapsed() + delay > self.spec.retry.horizon() {
            let reason = format!("retry horizon passed after {} attempts: {reason}", pending.attempts);
            self.dead_letter(pending, &reason).await;
            return;
        }
        self.spec.stats.retried.inc();
        tracing::debug!(destination = &*self.spec.grants.name, message_id = %pending.event.message_id, attempts = pending.attempts, ?delay, %reason, "retrying event");
        self.retries.push(Reverse(Due(Instant::now() + delay, pending)));
    }

    /// Moves `pending` to the dead letters. If even that fails, the event
    /// stays unfinished (it is retried later) rather than being lost.
    async fn dead_letter(&mut self, mut pending: Pending, reason: &str) {
        let name = self.spec.grants.name.clone();
        match self.spec.dead_letters.add(&pending.event, reason, pending.attempts.max(1)).await {
            Ok(()) => {
                self.spec.stats.dead_lettered.inc();
                self.unfinished.remove(&pending.seq);
                tracing::warn!(destination = &*name, message_id = %pending.event.message_id, %reason, "event dead-lettered");
            }
            Err(e) => {
                tracing::error!(destination = &*name, error = %e, "cannot store dead letter; will retry the event");
                pending.attempts += 1;
                let at = Instant::now() + self.spec.retry.backoff(pending.attempts, 0.5);
                self.retries.push(Reverse(Due(at, pending)));
            }
        }
    }

    /// Saves the cursor (the first unfinished event, or the read position)
    /// and lets the log delete what every destination has passed.
    fn save_cursor(&mut self) {
        let at = self.unfinished.first().copied().unwrap_or_else(|| self.reader.position());
        if at == self.saved {
            return;
        }
        match self.spec.cursors.save(&self.spec.grants.name, at) {
            Ok(min) => {
                self.saved = at;
                self.spec.log.release(min);
            }
            Err(e) => tracing::warn!(destination = &*self.spec.grants.name, error = %e, "cannot save cursor"),
        }
    }
}
