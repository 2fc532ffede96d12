//! Delivery workers: one per destination, each with its own cursor into the
//! log, plugin instance and backoff, so a slow or failing destination never
//! slows the others — its backlog simply stays on disk.
//!
//! A worker reads the log from its cursor, keeps the events its
//! subscription wants, and gathers a batch (up to `max_events`, or whatever
//! arrived within `linger_ms` of the first event). It calls the plugin's
//! `deliver` and acts on each event's outcome: delivered is final; rejected
//! goes to the dead letters; a retry is handed back to the log's consumer
//! (`nak`) to come back after a jittered exponential backoff (or the delay
//! the plugin asked for), until the retry horizon, then goes to the dead
//! letters. The cursor advances only over events whose outcome is final,
//! so after a crash everything unfinished is delivered again
//! (at-least-once). At most `window` events are in flight or waiting for a
//! retry; past that the consumer hands out no new ones and memory stays
//! flat.
//!
//! Up to `quota.max_concurrent_calls` batches are in flight at once, each in
//! its own sandboxed instance (idle instances are kept for the next batch);
//! with more than one, batches may finish out of order, which the cursor —
//! the first unfinished event — tolerates. `quota.events_per_second` paces
//! the batches with a token bucket.
//!
//! A call that fails as a whole (a trap, a breached quota, a broken
//! contract) sends its batch back for a retry. After
//! `quarantine.after_failures` failed calls in a row the destination is
//! quarantined: no calls until a single probe call `initial_ms` later
//! (doubling per failed probe, up to `max_ms`); a probe that succeeds makes
//! it active again. Its events wait in the log meanwhile.
//!
//! # Hot swaps and pauses
//!
//! What a worker runs — plugin version, settings, sandbox, batching, retry
//! and quarantine policy — is one [`Deploy`], replaced whole through a
//! `watch` channel when the operator reloads. Calls in flight finish on the
//! version they started with (their instances are then dropped); the next
//! batch goes to the new one. Events in flight or waiting for a retry stay
//! unfinished in the consumer, so a swap loses nothing, and duplicates only what a
//! plugin had sent before its call was cut short. A paused worker starts
//! no new calls; its events wait in the log.
//!
//! # When the machine is busy
//!
//! A destination's own threads may run under `SCHED_IDLE`
//! (`runtime.destination_idle`, see [`crate::executor`]): ingest then
//! preempts them at once. If its calls stall there — one in flight and
//! none finished for [`LIFT_IDLE_AFTER`], while the last one succeeded —
//! another process is keeping the cores busy, and the worker lifts
//! `SCHED_IDLE` (the threads stay at their nice value) until nothing waits
//! for the destination, then restores it. A destination whose calls fail
//! is never lifted.
//!
//! # Parts
//!
//! The worker's loop ties together parts that each hold one concern and
//! are unit-tested on their own under paused time: [`retry`] (backoff,
//! requested delays, the horizon), [`quarantine`] (the circuit breaker and
//! its probes) and [`pacing`] (`events_per_second`). Where the destination
//! stands in the log — acks in any order, naks with their delays, the
//! window, the committed position — is its [`Consumer`] of the log; the
//! worker itself runs against any [`EventLog`] (its tests use the
//! in-memory one).

pub mod pacing;
pub mod quarantine;
pub mod retry;
pub mod subscription;

pub use subscription::{Selection, Subscription};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pacing::Pacer;
use quarantine::Breaker;
use retry::{Next, Pending, next_attempt};
use switchyard_log::{Consumer, EventLog, Seq};
use switchyard_runtime::{CallError, Grants, Instance, Outcome, Plugin};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{BatchConfig, QuarantineConfig, RetryConfig};
use crate::deadletter::DeadLetters;
use crate::executor::IdleControl;
use crate::metrics::DestinationStats;
use crate::normalize::Envelope;
use crate::record::decode_envelope;
use crate::telemetry::{
    CallFailed, DestinationQuarantined, EventDeadLettered, EventDelivered, EventFiltered, EventReceived, EventRetried,
    EventsFailed, ExposureDropped, IdleLifted, IdleRestored, InternalEvent, QuarantineEnded,
};

/// What a destination runs: one plugin version with its settings and
/// sandbox, and the delivery policy. Replaced whole on a reload.
pub struct Deploy {
    /// Counts deploys of this destination, from 1; instances remember it so
    /// that one of an older deploy is never reused.
    pub generation: u64,
    pub plugin: Plugin,
    pub grants: Arc<Grants>,
    pub settings_json: String,
    pub subscription: Subscription,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    /// Batches in flight at once (at least 1).
    pub max_concurrent_calls: usize,
    /// Events per second across all calls; `None` is unlimited.
    pub events_per_second: Option<u32>,
    pub quarantine: QuarantineConfig,
}

/// Everything a worker needs to run one destination.
pub struct WorkerSpec<L: EventLog> {
    pub name: Arc<str>,
    /// The current deploy; a new value is adopted before the next batch.
    pub deploy: watch::Receiver<Arc<Deploy>>,
    /// While `true`, no new calls start.
    pub paused: watch::Receiver<bool>,
    pub stats: Arc<DestinationStats>,
    /// Its consumer of the log, opened by whoever starts the worker before
    /// ingest can append: a new destination's consumer starts at the end,
    /// so one opened later (the worker's threads start at the lowest
    /// priority) would skip what arrived meanwhile.
    pub consumer: L::Consumer,
    pub dead_letters: Arc<DeadLetters>,
    /// Commit the position at most this often (and on stop); zero commits
    /// after every change.
    pub commit_every: Duration,
    /// The destination's own threads, where its plugin calls run.
    pub own_threads: tokio::runtime::Handle,
    /// Where calls run while the destination is behind; `None`: always on
    /// its own threads.
    pub catch_up: Option<CatchUp>,
    /// The `SCHED_IDLE` of its own threads, lifted while its calls stall
    /// (see [`LIFT_IDLE_AFTER`]); `None` when they are not under it.
    pub sched_idle: Option<Arc<IdleControl>>,
}

/// A destination whose threads are under `SCHED_IDLE` and whose last call
/// succeeded, with a call in flight and none finished for this long, has
/// `SCHED_IDLE` lifted (its threads keep their nice value) until nothing
/// waits for it. Under `SCHED_IDLE` a thread runs only on CPU time nothing
/// else on the machine wants; on a host another process keeps busy that is
/// almost none, and delivery would stop. A destination whose calls fail (a
/// plugin that spins) is never lifted: it cannot slow ingest.
pub const LIFT_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The `delivery` threads (see [`crate::executor`]) and when a
/// destination's calls use them: while at least `backlog` events wait for it in the log and
/// its last call succeeded.
#[derive(Clone)]
pub struct CatchUp {
    pub threads: tokio::runtime::Handle,
    pub backlog: u64,
}

struct Worker<C: Consumer> {
    name: Arc<str>,
    deploy: Arc<Deploy>,
    stats: Arc<DestinationStats>,
    dead_letters: Arc<DeadLetters>,
    /// Its consumer of the log: what it has read, acked and committed.
    consumer: C,
    /// Instances of the current deploy not in a call, ready for the next
    /// batch.
    idle: Vec<Instance>,
    /// Events nak'd for a retry, by log position: their failed attempts so
    /// far and when the first failed (the consumer holds the records).
    retrying: HashMap<Seq, (u32, Option<Instant>)>,
    /// The batch being gathered, kept here so that gathering can be
    /// interrupted (by a finished call) without dropping events.
    forming: Vec<Pending>,
    /// When `forming` must go, `linger_ms` after its first event.
    deadline: Option<Instant>,
    pacer: Pacer,
    breaker: Breaker,
    commits: Commits,
    own_threads: tokio::runtime::Handle,
    catch_up: Option<CatchUp>,
    /// The last finished call of the current deploy succeeded: only then
    /// may calls go to the `delivery` threads.
    healthy: bool,
    /// Whether the last call launched went to the `delivery` threads.
    catching_up: bool,
    sched_idle: Option<Arc<IdleControl>>,
    /// When a call last finished, or started with none in flight: a stall
    /// is measured from here.
    last_progress: Instant,
}

/// When the worker commits its position: at most every `every`, and, if
/// a commit failed, again [`RETRY_COMMIT`] later, whether or not events
/// arrive (the log cannot free space until a position is persisted).
struct Commits {
    every: Duration,
    /// The position last committed.
    committed: Option<Seq>,
    /// No commit before this.
    not_before: Instant,
}

/// A failed commit is tried again after this long.
const RETRY_COMMIT: Duration = Duration::from_millis(200);

impl Commits {
    /// When the next commit is due, if the position moved since the last.
    fn due(&self, position: Seq) -> Option<Instant> {
        (self.committed != Some(position)).then_some(self.not_before)
    }
}

/// A finished plugin call: the instance (unless it trapped) and the deploy
/// it belongs to, the batch and its result.
struct CallDone {
    instance: Option<Instance>,
    generation: u64,
    batch: Vec<Pending>,
    result: Result<Vec<Outcome>, CallError>,
}

/// Runs a destination until `shutdown` turns true; the batches in flight
/// finish and the cursor is saved.
pub async fn run_worker<L: EventLog>(spec: WorkerSpec<L>, shutdown: watch::Receiver<bool>) {
    let WorkerSpec {
        name,
        deploy: mut deploys,
        paused: mut pauses,
        stats,
        consumer,
        dead_letters,
        commit_every,
        own_threads,
        catch_up,
        sched_idle,
    } = spec;
    let start = consumer.position();
    let deploy = deploys.borrow_and_update().clone();
    let mut consumer = consumer;
    consumer.set_window(window_for(&deploy));
    let mut w: Worker<L::Consumer> = Worker {
        name: name.clone(),
        pacer: pacer_for(&deploy),
        deploy,
        stats,
        dead_letters,
        consumer,
        idle: Vec::new(),
        retrying: HashMap::new(),
        forming: Vec::new(),
        deadline: None,
        breaker: Breaker::default(),
        commits: Commits { every: commit_every, committed: Some(start), not_before: Instant::now() },
        own_threads,
        catch_up,
        healthy: false,
        catching_up: false,
        sched_idle,
        last_progress: Instant::now(),
    };
    tracing::info!(
        destination = &*name,
        cursor = start,
        max_calls = w.deploy.max_concurrent_calls,
        "delivery worker started"
    );
    let mut calls: JoinSet<CallDone> = JoinSet::new();
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        // A new batch may go unless a pause, pacing or a quarantine holds it
        // back; a quarantined destination gets one probe call at a time.
        let now = Instant::now();
        let probe_at = w.breaker.quarantine().map(|q| q.probe_at).filter(|at| *at > now);
        let held = w.pacer.held_until(now).into_iter().chain(probe_at).max();
        let limit = w.breaker.call_limit(*pauses.borrow(), w.deploy.max_concurrent_calls);
        let commit_at = w.commits.due(w.consumer.position());
        let lift_at = w.lift_idle_at(!calls.is_empty());
        tokio::select! {
            biased;
            () = &mut stop => break,
            Ok(()) = deploys.changed() => {
                let next = deploys.borrow_and_update().clone();
                w.adopt(next);
            }
            Ok(()) = pauses.changed() => {
                let paused = *pauses.borrow_and_update();
                w.stats.update_status(|s| s.paused = paused);
                tracing::info!(destination = &*name, paused, "destination {}", if paused { "paused" } else { "resumed" });
            }
            Some(done) = calls.join_next(), if !calls.is_empty() => match done {
                Ok(done) => {
                    w.finish(done).await;
                    w.restore_idle_if_caught_up();
                }
                Err(e) => tracing::error!(destination = &*name, error = %e, "delivery task failed"),
            },
            () = tokio::time::sleep_until(held.unwrap_or(now)), if held.is_some() && limit > 0 => {}
            () = tokio::time::sleep_until(commit_at.unwrap_or(now)), if commit_at.is_some_and(|at| at > now) => {}
            () = tokio::time::sleep_until(lift_at.unwrap_or(now)), if lift_at.is_some() => w.lift_idle(),
            batch = w.gather(), if calls.len() < limit && held.is_none() => {
                w.pacer.charge(batch.len(), Instant::now());
                w.launch(&mut calls, batch);
            }
        }
        w.save_cursor(false);
    }
    // Let the calls in flight finish (each is bounded by the call timeout)
    // so their outcomes count; the batch being gathered is simply not sent.
    while let Some(done) = calls.join_next().await {
        if let Ok(done) = done {
            w.finish(done).await;
        }
    }
    w.save_cursor(true);
    let waiting = w.retrying.len() + w.forming.len();
    if waiting > 0 {
        tracing::info!(
            destination = &*name,
            events = waiting,
            "stopping with events not yet delivered; they are redelivered after restart"
        );
    }
}

/// Events a worker holds at most (in flight, forming or waiting to retry).
fn window_for(deploy: &Deploy) -> usize {
    (deploy.batch.max_events * 20).max(10_000)
}

fn pacer_for(deploy: &Deploy) -> Pacer {
    Pacer::new(deploy.events_per_second, deploy.batch.max_events)
}

impl<C: Consumer> Worker<C> {
    /// Switches to a new deploy: idle instances of the old one are dropped
    /// (calls in flight finish on theirs), and a quarantine ends, since the
    /// new version or settings deserve their own chance.
    fn adopt(&mut self, next: Arc<Deploy>) {
        tracing::info!(
            destination = &*self.name,
            generation = next.generation,
            plugin = &next.plugin.hash[..12.min(next.plugin.hash.len())],
            "new deploy adopted; the next batch goes to it"
        );
        self.idle.clear();
        self.consumer.set_window(window_for(&next));
        self.pacer = pacer_for(&next);
        self.breaker.reset();
        self.healthy = false;
        self.stats.update_status(|s| s.quarantined = None);
        self.deploy = next;
    }

    /// Gathers the next batch from the consumer (due retries first, then
    /// new events), until the batch is full or `linger_ms` has passed since
    /// it got its first event.
    ///
    /// Cancel-safe: the batch grows in `self.forming`, so a gather that is
    /// interrupted resumes where it stopped.
    async fn gather(&mut self) -> Vec<Pending> {
        let max = self.deploy.batch.max_events;
        let linger = Duration::from_millis(self.deploy.batch.linger_ms);
        loop {
            if self.forming.len() < max {
                match self.consumer.try_batch(max - self.forming.len()).await {
                    Ok(records) => {
                        for (seq, payload) in records {
                            self.admit(seq, &payload);
                        }
                    }
                    Err(e) => {
                        tracing::error!(destination = &*self.name, error = %e, "reading the log failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if !self.forming.is_empty() {
                let d = *self.deadline.get_or_insert(Instant::now() + linger);
                if self.forming.len() >= max || Instant::now() >= d {
                    self.deadline = None;
                    return std::mem::take(&mut self.forming);
                }
            }
            // Wait for a record (new, or a retry due) or the linger deadline.
            match self.deadline {
                Some(at) => {
                    tokio::select! {
                        _ = self.consumer.wait() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => {
                    if self.consumer.wait().await.is_err() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Takes one log record into the forming batch if this destination
    /// wants it.
    fn admit(&mut self, seq: Seq, payload: &[u8]) {
        let event = match decode_envelope(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(destination = &*self.name, seq, error = %e, "skipping undecodable log record");
                self.consumer.ack(seq);
                return;
            }
        };
        let retried = self.retrying.remove(&seq);
        let event = match self.deploy.subscription.select(event) {
            Selection::Deliver(event) => event,
            Selection::Skip => {
                EventFiltered { stats: &self.stats }.emit();
                self.consumer.ack(seq);
                return;
            }
            Selection::SkipExposure(decision) => {
                ExposureDropped { stats: &self.stats, decision }.emit();
                self.consumer.ack(seq);
                return;
            }
        };
        self.stats.audit.observe(&event.json);
        let mut pending = Pending::new(seq, Arc::new(event));
        match retried {
            Some((attempts, first_failure)) => (pending.attempts, pending.first_failure) = (attempts, first_failure),
            None => EventReceived { stats: &self.stats }.emit(),
        }
        self.forming.push(pending);
    }

    /// The `delivery` threads, when the next call, of `batch` events, should
    /// run there: the destination is `catch_up.backlog` events behind (the
    /// batch and what waits after it) and its last call succeeded. Logs
    /// when that starts and ends.
    fn catch_up_threads(&mut self, batch: usize) -> Option<tokio::runtime::Handle> {
        let behind = self.consumer.pending() + batch as u64;
        let threads = self.catch_up.as_ref().filter(|c| self.healthy && behind >= c.backlog).map(|c| c.threads.clone());
        if threads.is_some() != self.catching_up {
            self.catching_up = threads.is_some();
            if self.catching_up {
                tracing::info!(destination = &*self.name, behind, "behind: calls run on the delivery threads");
            } else {
                tracing::info!(destination = &*self.name, behind, "caught up: calls run on its own threads");
            }
        }
        threads
    }

    /// Starts a plugin call for `batch` on an idle instance, or a new one,
    /// on the destination's threads or, while it is behind, the `delivery`
    /// threads.
    fn launch(&mut self, calls: &mut JoinSet<CallDone>, batch: Vec<Pending>) {
        if calls.is_empty() {
            self.last_progress = Instant::now();
        }
        let idle = self.idle.pop();
        let deploy = self.deploy.clone();
        let stats = self.stats.clone();
        let threads = self.catch_up_threads(batch.len());
        if threads.is_some() {
            self.stats.catch_up_calls.inc();
        }
        let call = async move {
            let generation = deploy.generation;
            let mut instance = match idle {
                Some(instance) => instance,
                None => match new_instance(&deploy.plugin, deploy.grants.clone(), &deploy.settings_json).await {
                    Ok(instance) => instance,
                    Err(err) => return CallDone { instance: None, generation, batch, result: Err(err) },
                },
            };
            let events: Vec<Arc<Envelope>> = batch.iter().map(|p| p.event.clone()).collect();
            let started = Instant::now();
            let result = instance.deliver(&events).await;
            stats.call_latency.observe(started.elapsed());
            if let Ok(outcomes) = &result {
                let delivered = outcomes.iter().filter(|o| matches!(o, Outcome::Delivered)).count();
                stats.delivered_by(&instance.hash, delivered as u64);
            }
            // A trapped or timed-out instance cannot be entered again.
            let instance = result.is_ok().then_some(instance);
            CallDone { instance, generation, batch, result }
        };
        calls.spawn_on(call, threads.as_ref().unwrap_or(&self.own_threads));
    }

    /// Acts on a finished call: each event's outcome, or a retry of the
    /// whole batch when the call itself failed.
    async fn finish(&mut self, done: CallDone) {
        let CallDone { instance, generation, batch, result } = done;
        self.last_progress = Instant::now();
        if let Some(instance) = instance.filter(|_| generation == self.deploy.generation) {
            self.idle.push(instance);
        }
        // A call of an older deploy reports as usual, but its failure says
        // nothing about the new one.
        let current = generation == self.deploy.generation;
        let jitter = fastrand::f64();
        match result {
            Ok(outcomes) => {
                if current {
                    self.call_succeeded();
                }
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Delivered => {
                            EventDelivered { stats: &self.stats }.emit();
                            self.consumer.ack(pending.seq);
                        }
                        Outcome::Rejected(reason) => {
                            EventsFailed { stats: &self.stats, count: 1 }.emit();
                            self.dead_letter(pending, &reason).await;
                        }
                        Outcome::Retry { after, reason } => {
                            EventsFailed { stats: &self.stats, count: 1 }.emit();
                            self.schedule(pending, after, jitter, &reason).await;
                        }
                    }
                }
            }
            Err(err) => {
                let quota = err.quota_kind();
                CallFailed { stats: &self.stats, error: &err, quota, events: batch.len(), current }.emit();
                if current {
                    self.call_failed(&err);
                }
                EventsFailed { stats: &self.stats, count: batch.len() as u64 }.emit();
                let reason = err.to_string();
                for pending in batch {
                    self.schedule(pending, None, jitter, &reason).await;
                }
            }
        }
    }

    /// When `SCHED_IDLE` should be lifted if no call finishes first: its
    /// threads are under it, a call is in flight and the last succeeded.
    fn lift_idle_at(&self, in_flight: bool) -> Option<Instant> {
        let lowered = self.sched_idle.as_ref().is_some_and(|idle| !idle.is_lifted());
        (lowered && in_flight && self.healthy).then(|| self.last_progress + LIFT_IDLE_AFTER)
    }

    /// Delivery stalled under `SCHED_IDLE`: lift it.
    fn lift_idle(&mut self) {
        if self.sched_idle.as_ref().is_some_and(|idle| idle.lift()) {
            IdleLifted { stats: &self.stats, stalled: self.last_progress.elapsed() }.emit();
        }
    }

    /// Puts the threads back under `SCHED_IDLE` once nothing waits for
    /// the destination (no record unread, no batch forming).
    fn restore_idle_if_caught_up(&mut self) {
        let caught_up = self.consumer.pending() == 0 && self.forming.is_empty();
        if caught_up && self.sched_idle.as_ref().is_some_and(|idle| idle.restore()) {
            IdleRestored { stats: &self.stats }.emit();
        }
    }

    /// A call succeeded: the failure streak ends, and a quarantine with it.
    fn call_succeeded(&mut self) {
        self.healthy = true;
        let ended_quarantine = self.breaker.succeeded();
        let now = chrono::Utc::now().timestamp_millis();
        self.stats.update_status(|s| {
            s.last_success_ms = Some(now);
            s.quarantined = None;
        });
        if ended_quarantine {
            QuarantineEnded { stats: &self.stats }.emit();
        }
    }

    /// A call of the current deploy failed as a whole: quarantines the
    /// destination after `after_failures` in a row (or backs off further
    /// after a failed probe).
    fn call_failed(&mut self, err: &CallError) {
        self.healthy = false;
        let stats = &self.stats;
        let reason = err.to_string();
        let now = chrono::Utc::now().timestamp_millis();
        let Some(q) = self.breaker.failed(&self.deploy.quarantine, Instant::now()) else {
            stats.update_status(|s| {
                s.last_failure_ms = Some(now);
                s.last_failure = Some(reason);
            });
            return;
        };
        let summary = format!("{} failed calls in a row; last: {reason}", self.breaker.failures());
        DestinationQuarantined { stats, summary: &summary, probe_in: q.wait }.emit();
        stats.update_status(|s| {
            s.last_failure_ms = Some(now);
            s.last_failure = Some(reason);
            s.quarantined = Some(summary);
        });
    }

    /// Puts `pending` back for another attempt, or dead-letters it when the
    /// retry horizon has passed.
    async fn schedule(&mut self, mut pending: Pending, after: Option<Duration>, jitter: f64, reason: &str) {
        match next_attempt(&self.deploy.retry, &mut pending, after, jitter, Instant::now(), reason) {
            Next::DeadLetter(reason) => self.dead_letter(pending, &reason).await,
            Next::RetryAt(at) => {
                EventRetried {
                    stats: &self.stats,
                    message_id: &pending.event.message_id,
                    attempts: pending.attempts,
                    delay: at.saturating_duration_since(Instant::now()),
                    reason,
                }
                .emit();
                self.retry_at(at, pending);
            }
        }
    }

    /// Moves `pending` to the dead letters. If even that fails, the event
    /// stays unfinished (it is retried later) rather than being lost.
    async fn dead_letter(&mut self, mut pending: Pending, reason: &str) {
        let name = self.name.clone();
        match self.dead_letters.add(&pending.event, reason, pending.attempts.max(1)).await {
            Ok(()) => {
                EventDeadLettered { stats: &self.stats, message_id: &pending.event.message_id, reason }.emit();
                self.consumer.ack(pending.seq);
            }
            Err(e) => {
                tracing::error!(destination = &*name, error = %e, "cannot store dead letter; will retry the event");
                pending.attempts += 1;
                let at = Instant::now() + self.deploy.retry.backoff(pending.attempts, 0.5);
                self.retry_at(at, pending);
            }
        }
    }

    /// Hands `pending` back to the consumer, to come back at `at`; the
    /// worker keeps only its attempt count.
    fn retry_at(&mut self, at: Instant, pending: Pending) {
        self.retrying.insert(pending.seq, (pending.attempts, pending.first_failure));
        self.consumer.nak(pending.seq, at.saturating_duration_since(Instant::now()));
    }

    /// Commits the consumer's position (the first unfinished event, or the
    /// read position) if it moved and a commit is due (or `now`), which
    /// lets the log delete what every destination has passed.
    fn save_cursor(&mut self, now: bool) {
        let position = self.consumer.position();
        self.stats.position.set(position);
        let at = Instant::now();
        match self.commits.due(position) {
            Some(due) if now || due <= at => {}
            _ => return,
        }
        match self.consumer.commit() {
            Ok(()) => {
                self.commits.committed = Some(position);
                self.commits.not_before = at + self.commits.every;
            }
            Err(e) => {
                tracing::warn!(destination = &*self.name, error = %e, "cannot save cursor; trying again shortly");
                self.commits.not_before = at + RETRY_COMMIT;
            }
        }
    }
}

/// A fresh instance with its settings applied.
async fn new_instance(plugin: &Plugin, grants: Arc<Grants>, settings: &str) -> Result<Instance, CallError> {
    let mut instance = plugin.instantiate(grants).await?;
    instance.init(settings).await?;
    Ok(instance)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use switchyard_log::{EventLog, MemoryLog, Record};
    use switchyard_runtime::capabilities::Caller;
    use switchyard_runtime::capabilities::http::{HttpCtx, HttpPolicy, Origin, Transport, TransportFuture};
    use switchyard_runtime::capabilities::log::LogCtx;
    use switchyard_runtime::capabilities::warehouse::WarehouseCtx;
    use switchyard_runtime::redact::Redactor;
    use switchyard_runtime::{Grants, Runtime, RuntimeOptions};
    use tokio::sync::watch;

    use super::{CatchUp, Deploy, LIFT_IDLE_AFTER, Subscription, WorkerSpec, run_worker};
    use crate::config::{BatchConfig, QuarantineConfig, RetryConfig};
    use crate::deadletter::DeadLetters;
    use crate::executor::IdleControl;
    use crate::metrics::DestinationStats;
    use crate::normalize::{Envelope, EventType};
    use crate::record::encode_envelope;

    /// A track event whose messageId names `seq`.
    pub(crate) fn event(seq: u64) -> Arc<Envelope> {
        Arc::new(Envelope {
            kind: EventType::Track,
            message_id: format!("m{seq}"),
            name: Some("Tested".into()),
            user_id: Some("u1".into()),
            anonymous_id: None,
            timestamp_ms: 0,
            source: Arc::from("test"),
            integrations: None,
            json: format!(r#"{{"type":"track","event":"Tested","userId":"u1","messageId":"m{seq}"}}"#),
            only_for: None,
        })
    }

    /// The webhook example plugin, as `./x plugins` builds it.
    fn webhook_wasm() -> PathBuf {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
        let path = target.join("wasm32-wasip2/plugin/webhook_destination.wasm");
        assert!(path.exists(), "{} is missing: build the plugins first (./x plugins)", path.display());
        path
    }

    /// A receiver that answers 503 to its first `failures` requests, then
    /// 200, and records each request's messageIds with its status.
    struct Flaky {
        failures: usize,
        seen: Requests,
    }

    /// Each request's status and messageIds, in order.
    type Requests = Arc<Mutex<Vec<(u16, Vec<String>)>>>;

    impl Transport for Flaky {
        fn send(&self, req: hyper::Request<Full<Bytes>>, _max: usize) -> TransportFuture {
            let (seen, failures) = (self.seen.clone(), self.failures);
            Box::pin(async move {
                let body = http_body_util::BodyExt::collect(req.into_body()).await.map(|b| b.to_bytes());
                let json: serde_json::Value = serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
                let ids = json["batch"]
                    .as_array()
                    .map(|b| b.iter().filter_map(|e| e["messageId"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let status = if seen.len() < failures { 503 } else { 200 };
                seen.push((status, ids));
                Ok(hyper::Response::builder().status(status).body(Bytes::new()).expect("response"))
            })
        }
    }

    /// The webhook plugin as a deploy posting to `transport`, in batches of
    /// `max_events`, at most `max_calls` calls at a time.
    fn webhook_deploy(
        dir: &std::path::Path,
        transport: Arc<dyn Transport>,
        max_events: usize,
        max_calls: usize,
    ) -> Arc<Deploy> {
        let runtime = Runtime::new(&RuntimeOptions {
            cache_dir: dir.join("cache"),
            max_instances: 4,
            max_memory_bytes: 64 << 20,
            pooling: false,
            epoch_interruption: true,
            keep_resident_bytes: 0,
            perf_map: false,
        })
        .unwrap();
        let plugin = runtime.load(&webhook_wasm()).unwrap();
        let origin = "http://127.0.0.1:9";
        let grants = Arc::new(Grants {
            caller: Caller { name: Arc::from("hook"), redactor: Redactor::default() },
            http: HttpCtx::new(
                HttpPolicy {
                    allow: vec![Origin::parse(origin).unwrap()],
                    timeout: Duration::from_secs(5),
                    max_response_bytes: 1 << 20,
                },
                transport,
                None,
            ),
            log: LogCtx::unlimited(),
            warehouse: WarehouseCtx::default(),
            memory_bytes: 64 << 20,
            cpu_ticks: 1000,
            call_timeout: Duration::from_secs(30),
        });
        Arc::new(Deploy {
            generation: 1,
            plugin,
            grants,
            settings_json: format!(r#"{{"url":"{origin}/hook"}}"#),
            subscription: Subscription::of_types("hook", EventType::ALL.into_iter().collect()),
            batch: BatchConfig { max_events, linger_ms: 5 },
            retry: RetryConfig { initial_backoff_ms: 10, max_backoff_ms: 40, ..RetryConfig::default() },
            max_concurrent_calls: max_calls,
            events_per_second: None,
            quarantine: QuarantineConfig { after_failures: 100, ..QuarantineConfig::default() },
        })
    }

    /// A worker for `deploy` on a memory log holding `events` events that
    /// arrived after the destination was created, run until the backlog
    /// drains.
    async fn deliver_all(
        deploy: Arc<Deploy>,
        events: u64,
        own_threads: tokio::runtime::Handle,
        catch_up: Option<CatchUp>,
        idle: Option<Arc<IdleControl>>,
    ) -> Arc<DestinationStats> {
        let log = Arc::new(MemoryLog::new());
        // The destination exists before the events arrive (a new consumer
        // starts at the end).
        let consumer = log.consumer("hook").await.unwrap();
        log.append((0..events).map(|i| Record { id: i, order_key: 0, payload: encode_envelope(&event(i)) }).collect())
            .await
            .unwrap();
        let stats = Arc::new(DestinationStats::new("hook"));
        let (_deploy_tx, deploy_rx) = watch::channel(deploy);
        let (_pause_tx, pause_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let spec: WorkerSpec<MemoryLog> = WorkerSpec {
            name: Arc::from("hook"),
            deploy: deploy_rx,
            paused: pause_rx,
            stats: stats.clone(),
            consumer,
            dead_letters: Arc::new(DeadLetters::new(log.dead_letters("hook").await.unwrap())),
            commit_every: Duration::from_millis(50),
            own_threads,
            catch_up,
            sched_idle: idle,
        };
        let worker = tokio::spawn(run_worker(spec, stop_rx));
        tokio::time::timeout(Duration::from_secs(60), async {
            while log.backlog("hook") != Some(0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the backlog drains");
        stop_tx.send_replace(true);
        worker.await.unwrap();
        stats
    }

    /// A receiver whose second request is answered only after `stall`.
    struct StallsOnce {
        stall: Duration,
        requests: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Transport for StallsOnce {
        fn send(&self, _req: hyper::Request<Full<Bytes>>, _max: usize) -> TransportFuture {
            let n = self.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let stall = self.stall;
            Box::pin(async move {
                if n == 1 {
                    tokio::time::sleep(stall).await;
                }
                Ok(hyper::Response::builder().status(200).body(Bytes::new()).expect("response"))
            })
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_stalled_call_lifts_sched_idle_until_the_destination_has_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let requests = Arc::default();
        let receiver =
            StallsOnce { stall: LIFT_IDLE_AFTER + Duration::from_millis(500), requests: Arc::clone(&requests) };
        let deploy = webhook_deploy(dir.path(), Arc::new(receiver), 5, 1);
        let own =
            crate::executor::Executor::for_destination("hook", 1, crate::executor::Priority { nice: 19, idle: true })
                .unwrap();
        let idle = own.idle_control().cloned().expect("under SCHED_IDLE");
        let stats = deliver_all(deploy, 15, own.handle().clone(), None, Some(idle.clone())).await;

        assert_eq!(stats.delivered.get(), 15);
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3, "three batches of 5");
        // The first call succeeded at once; the second stalled past the
        // limit, so SCHED_IDLE was lifted, and restored once the third
        // left nothing waiting.
        assert!(stats.idle_lifts.get() >= 1, "lifted {} times", stats.idle_lifts.get());
        assert!(!idle.is_lifted(), "restored once caught up");
    }

    #[tokio::test]
    async fn a_worker_on_the_memory_log_retries_through_its_consumer_until_every_event_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let seen: Requests = Arc::default();
        let deploy = webhook_deploy(dir.path(), Arc::new(Flaky { failures: 2, seen: seen.clone() }), 10, 2);
        let catch_up = crate::executor::Executor::new("catch-up", 1).unwrap();
        let catch_up = Some(CatchUp { threads: catch_up.handle().clone(), backlog: 5 });
        let stats = deliver_all(deploy, 30, tokio::runtime::Handle::current(), catch_up, None).await;

        let seen: Vec<(u16, Vec<String>)> = seen.lock().unwrap().clone();
        let failed: Vec<&String> = seen.iter().filter(|(s, _)| *s == 503).flat_map(|(_, ids)| ids).collect();
        let mut delivered: Vec<&String> = seen.iter().filter(|(s, _)| *s == 200).flat_map(|(_, ids)| ids).collect();
        delivered.sort();
        let mut want: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(delivered, want.iter().collect::<Vec<_>>(), "each event delivered exactly once");
        assert!(!failed.is_empty() && failed.iter().all(|id| want.contains(id)), "{seen:?}");
        assert_eq!(stats.received.get(), 30, "a redelivered retry is not received again");
        assert_eq!(stats.delivered.get(), 30);
        assert_eq!(stats.retried.get(), failed.len() as u64);
        assert_eq!(stats.dead_lettered.get(), 0);
        // The first two calls start before any has succeeded, on the
        // worker's threads; once one has, the third batch of 10 (over the
        // backlog of 5) goes to the catch-up threads.
        assert!(stats.catch_up_calls.get() >= 1, "{}", stats.catch_up_calls.get());
    }
}
