//! Delivery workers: one per destination, each with its own queue, plugin
//! instance and backoff, so a slow or failing destination never slows the
//! others.
//!
//! A worker gathers a batch (up to `max_events`, or whatever arrived within
//! `linger_ms` of the first event), calls the plugin's `deliver`, and acts
//! on each event's outcome: delivered and rejected are final; a retry goes
//! back to the queue after a jittered exponential backoff (or the delay the
//! plugin asked for) until the retry horizon, then to the dead letters.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{BatchConfig, RetryConfig};
use crate::metrics::DestinationStats;
use crate::runtime::{CallError, Grants, Instance, Outcome, Plugin};
use crate::spec::Envelope;

/// Everything a worker needs to run one destination.
pub struct WorkerSpec {
    pub plugin: Plugin,
    pub grants: Arc<Grants>,
    pub settings_json: String,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub stats: Arc<DestinationStats>,
}

/// An event waiting for another attempt.
#[derive(Debug)]
struct Pending {
    event: Arc<Envelope>,
    attempts: u32,
    first_failure: Instant,
}

/// Retries ordered by due time (then arrival, to keep order stable).
type RetryHeap = BinaryHeap<Reverse<(Instant, u64, PendingSlot)>>;

#[derive(Debug)]
struct PendingSlot(Pending);

impl PartialEq for PendingSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for PendingSlot {}
impl PartialOrd for PendingSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PendingSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Runs a destination until its queue closes and its batch is done.
pub async fn run_worker(spec: WorkerSpec, mut queue: mpsc::Receiver<Arc<Envelope>>) {
    let name = spec.grants.name.clone();
    let mut instance: Option<Instance> = None;
    let mut retries: RetryHeap = BinaryHeap::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        let batch = gather(&spec.batch, &mut queue, &mut retries, &mut open).await;
        if batch.is_empty() {
            if !open {
                break;
            }
            continue;
        }
        let events: Vec<Arc<Envelope>> = batch.iter().map(|p| p.event.clone()).collect();
        let result = match ensure_instance(&spec, &mut instance).await {
            Ok(inst) => inst.deliver(&events).await,
            Err(err) => Err(err),
        };
        let jitter = fastrand::f64();
        match result {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Delivered => spec.stats.delivered.inc(),
                        Outcome::Rejected(reason) => {
                            spec.stats.dead_lettered.inc();
                            tracing::warn!(destination = &*name, message_id = %pending.event.message_id, %reason, "event rejected by destination");
                        }
                        Outcome::Retry { after, reason } => {
                            schedule(&spec, &mut retries, &mut seq, pending, after, jitter, &reason);
                        }
                    }
                }
            }
            Err(err) => {
                spec.stats.call_failures.inc();
                tracing::error!(destination = &*name, error = %err, events = batch.len(), "plugin call failed; batch will be retried");
                // A trapped or timed-out instance cannot be entered again.
                instance = None;
                let reason = err.to_string();
                for pending in batch {
                    schedule(&spec, &mut retries, &mut seq, pending, None, jitter, &reason);
                }
            }
        }
    }
    if !retries.is_empty() {
        tracing::warn!(
            destination = &*name,
            events = retries.len(),
            "shutting down with events still waiting for a retry"
        );
    }
}

/// Gathers the next batch: due retries first, then queued events, until the
/// batch is full or `linger_ms` has passed since its first event. Waits for
/// the first event (or the next retry) without a deadline.
async fn gather(
    cfg: &BatchConfig,
    queue: &mut mpsc::Receiver<Arc<Envelope>>,
    retries: &mut RetryHeap,
    open: &mut bool,
) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(cfg.max_events);
    let now = Instant::now();
    while batch.len() < cfg.max_events {
        match retries.peek() {
            Some(Reverse((due, _, _))) if *due <= now => {
                if let Some(Reverse((_, _, PendingSlot(p)))) = retries.pop() {
                    batch.push(p);
                }
            }
            _ => break,
        }
    }
    let linger = Duration::from_millis(cfg.linger_ms);
    let mut deadline = (!batch.is_empty()).then(|| Instant::now() + linger);
    while batch.len() < cfg.max_events && *open {
        let next_retry = retries.peek().map(|Reverse((due, _, _))| *due);
        let wake = match (deadline, next_retry) {
            (Some(d), _) => Some(d),
            (None, Some(r)) => Some(r),
            (None, None) => None,
        };
        let received = match wake {
            Some(at) => tokio::select! {
                ev = queue.recv() => ev.ok_or(()),
                () = tokio::time::sleep_until(at) => break,
            },
            None => queue.recv().await.ok_or(()),
        };
        match received {
            Ok(event) => {
                batch.push(Pending { event, attempts: 0, first_failure: Instant::now() });
                deadline.get_or_insert_with(|| Instant::now() + linger);
            }
            Err(()) => *open = false,
        }
    }
    batch
}

/// Builds and initialises the worker's instance if it has none.
async fn ensure_instance<'a>(spec: &WorkerSpec, slot: &'a mut Option<Instance>) -> Result<&'a mut Instance, CallError> {
    if slot.is_none() {
        let mut inst = spec.plugin.instantiate(spec.grants.clone()).await?;
        inst.init(&spec.settings_json).await?;
        *slot = Some(inst);
    }
    slot.as_mut().ok_or_else(|| CallError::Trap("no instance".into()))
}

/// Puts `pending` back for another attempt, or dead-letters it when the
/// retry horizon has passed.
#[allow(clippy::too_many_arguments)]
fn schedule(
    spec: &WorkerSpec,
    retries: &mut RetryHeap,
    seq: &mut u64,
    mut pending: Pending,
    after: Option<Duration>,
    jitter: f64,
    reason: &str,
) {
    if pending.attempts == 0 {
        pending.first_failure = Instant::now();
    }
    pending.attempts += 1;
    let delay = after.unwrap_or_else(|| spec.retry.backoff(pending.attempts, jitter));
    if pending.first_failure.elapsed() + delay > spec.retry.horizon() {
        spec.stats.dead_lettered.inc();
        tracing::error!(destination = &*spec.grants.name, message_id = %pending.event.message_id, attempts = pending.attempts, %reason, "retry horizon passed; event dead-lettered");
        return;
    }
    spec.stats.retried.inc();
    tracing::debug!(destination = &*spec.grants.name, message_id = %pending.event.message_id, attempts = pending.attempts, ?delay, %reason, "retrying event");
    *seq += 1;
    retries.push(Reverse((Instant::now() + delay, *seq, PendingSlot(pending))));
}
