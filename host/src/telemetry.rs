//! Telemetry as events, in the spirit of Vector's `internal_events`: one
//! type per thing that happens, whose [`InternalEvent::emit`] writes its
//! log line and counts its metric together, so no component can do one and
//! forget the other. The counters live in [`crate::metrics`]; the log lines
//! go to `tracing` with the destination or source they concern.
//!
//! Per-event happenings on the hot path (received, filtered, delivered)
//! only count: a log line per event would cost more than the delivery.

use std::fmt::Display;
use std::time::Duration;

use switchyard_runtime::quota::QuotaKind;

use crate::metrics::{DestinationStats, Metrics, SourceStats, WarehouseStats};

/// Something that happened, to be logged and counted at once.
pub trait InternalEvent {
    /// Writes the log line (if any) and counts the metric.
    fn emit(self);
}

/// An event routed to a destination that wants it.
pub struct EventReceived<'a> {
    pub stats: &'a DestinationStats,
}

impl InternalEvent for EventReceived<'_> {
    fn emit(self) {
        self.stats.received.inc();
    }
}

/// An event the destination is not subscribed to (type or `integrations`).
pub struct EventFiltered<'a> {
    pub stats: &'a DestinationStats,
}

impl InternalEvent for EventFiltered<'_> {
    fn emit(self) {
        self.stats.filtered.inc();
    }
}

/// An experiment exposure kept from a destination: its vendor's SDK owns
/// exposures, or it repeats one delivered within the window.
pub struct ExposureDropped<'a> {
    pub stats: &'a DestinationStats,
    pub decision: switchyard_governance::ExposureDecision,
}

impl InternalEvent for ExposureDropped<'_> {
    fn emit(self) {
        self.stats.filtered.inc();
        match self.decision {
            switchyard_governance::ExposureDecision::DropOwnedBySdk => self.stats.exposures_owned.inc(),
            _ => self.stats.exposures_duplicate.inc(),
        }
    }
}

/// Events a source's tracking plan blocked: forwarded to `to`, or dropped.
pub struct EventBlocked<'a> {
    pub source: &'a SourceStats,
    pub message_id: &'a str,
    pub to: Option<&'a str>,
}

impl InternalEvent for EventBlocked<'_> {
    fn emit(self) {
        self.source.events_blocked.inc();
        match self.to {
            Some(to) => {
                self.source.events_forwarded.inc();
                tracing::debug!(
                    source = self.source.name.as_str(),
                    message_id = self.message_id,
                    to,
                    "tracking plan blocked an event: forwarded"
                );
            }
            None => tracing::debug!(
                source = self.source.name.as_str(),
                message_id = self.message_id,
                "tracking plan blocked an event: dropped"
            ),
        }
    }
}

/// An event broke its source's tracking plan.
pub struct ViolationsFound<'a> {
    pub source: &'a SourceStats,
    pub event: &'a str,
    pub violations: &'a [switchyard_governance::Violation],
    pub payload: &'a str,
}

impl InternalEvent for ViolationsFound<'_> {
    fn emit(self) {
        let now = chrono::Utc::now().timestamp_millis();
        self.source.violations.record(self.event, self.violations, self.payload, now);
        if tracing::enabled!(tracing::Level::DEBUG) {
            for v in self.violations {
                tracing::debug!(
                    source = self.source.name.as_str(),
                    event = self.event,
                    field = v.field,
                    kind = v.kind.as_str(),
                    "tracking plan violation"
                );
            }
        }
    }
}

/// An event the plugin delivered.
pub struct EventDelivered<'a> {
    pub stats: &'a DestinationStats,
}

impl InternalEvent for EventDelivered<'_> {
    fn emit(self) {
        self.stats.delivered.inc();
    }
}

/// An event whose attempt failed and that will be tried again.
pub struct EventRetried<'a> {
    pub stats: &'a DestinationStats,
    pub message_id: &'a str,
    pub attempts: u32,
    pub delay: Duration,
    pub reason: &'a str,
}

impl InternalEvent for EventRetried<'_> {
    fn emit(self) {
        self.stats.retried.inc();
        tracing::debug!(
            destination = self.stats.name.as_str(),
            message_id = self.message_id,
            attempts = self.attempts,
            delay = ?self.delay,
            reason = self.reason,
            "retrying event"
        );
    }
}

/// Delivery attempts that did not succeed: a retry or rejection outcome,
/// or the events of a failed call (the Delivery Overview's "failed").
pub struct EventsFailed<'a> {
    pub stats: &'a DestinationStats,
    pub count: u64,
}

impl InternalEvent for EventsFailed<'_> {
    fn emit(self) {
        self.stats.failed.add(self.count);
    }
}

/// An event moved to the dead letters.
pub struct EventDeadLettered<'a> {
    pub stats: &'a DestinationStats,
    pub message_id: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for EventDeadLettered<'_> {
    fn emit(self) {
        self.stats.dead_lettered.inc();
        tracing::warn!(
            destination = self.stats.name.as_str(),
            message_id = self.message_id,
            reason = self.reason,
            "event dead-lettered"
        );
    }
}

/// A plugin call that failed as a whole: a trap, a breached quota, a
/// broken contract. `current` is false for a call of a deploy already
/// replaced, which is counted but says nothing about the new one.
pub struct CallFailed<'a> {
    pub stats: &'a DestinationStats,
    pub error: &'a dyn Display,
    pub quota: Option<QuotaKind>,
    pub events: usize,
    pub current: bool,
}

impl InternalEvent for CallFailed<'_> {
    fn emit(self) {
        self.stats.call_failures.inc();
        if !self.current {
            return;
        }
        if let Some(kind) = self.quota {
            self.stats.breaches[kind.index()].inc();
        }
        tracing::error!(destination = self.stats.name.as_str(), error = %self.error, events = self.events, "plugin call failed; batch will be retried");
    }
}

/// A destination taken out of service after failed calls in a row (its
/// state and reason show in `/metrics` and the admin API).
pub struct DestinationQuarantined<'a> {
    pub stats: &'a DestinationStats,
    pub summary: &'a str,
    pub probe_in: Duration,
}

impl InternalEvent for DestinationQuarantined<'_> {
    fn emit(self) {
        tracing::warn!(destination = self.stats.name.as_str(), reason = self.summary, probe_in = ?self.probe_in, "destination quarantined");
    }
}

/// A probe call succeeded: the destination is active again.
pub struct QuarantineEnded<'a> {
    pub stats: &'a DestinationStats,
}

impl InternalEvent for QuarantineEnded<'_> {
    fn emit(self) {
        tracing::info!(destination = self.stats.name.as_str(), "probe call succeeded; destination active again");
    }
}

/// A destination's calls stalled under `SCHED_IDLE` (the machine is busy
/// with something else), so its threads left it.
pub struct IdleLifted<'a> {
    pub stats: &'a DestinationStats,
    pub stalled: Duration,
}

impl InternalEvent for IdleLifted<'_> {
    fn emit(self) {
        self.stats.idle_lifts.inc();
        tracing::warn!(
            destination = self.stats.name.as_str(),
            stalled = ?self.stalled,
            "delivery stalled under SCHED_IDLE (the machine is busy); its threads run under the normal policy until it catches up"
        );
    }
}

/// A destination whose `SCHED_IDLE` was lifted caught up.
pub struct IdleRestored<'a> {
    pub stats: &'a DestinationStats,
}

impl InternalEvent for IdleRestored<'_> {
    fn emit(self) {
        tracing::info!(destination = self.stats.name.as_str(), "caught up: its threads are under SCHED_IDLE again");
    }
}

/// A reload that changed something.
pub struct ReloadApplied<'a> {
    pub metrics: &'a Metrics,
    pub added: &'a [String],
    pub removed: &'a [String],
    pub updated: &'a [String],
    pub sources_changed: bool,
}

impl InternalEvent for ReloadApplied<'_> {
    fn emit(self) {
        self.metrics.reloads_applied.inc();
        tracing::info!(
            added = ?self.added,
            removed = ?self.removed,
            updated = ?self.updated,
            sources_changed = self.sources_changed,
            "reload applied"
        );
    }
}

/// A reload refused whole; everything keeps running as it was.
pub struct ReloadRefused<'a> {
    pub metrics: &'a Metrics,
    pub error: &'a dyn Display,
}

impl InternalEvent for ReloadRefused<'_> {
    fn emit(self) {
        self.metrics.reloads_refused.inc();
        tracing::error!(error = %self.error, "reload refused; the running config and plugins stay");
    }
}

/// An event of a request that failed validation; the rest of its batch is
/// accepted (Segment answers 200 too, so the count and the log are how an
/// operator sees it).
pub struct EventInvalid<'a> {
    pub source: &'a SourceStats,
    pub index: usize,
    pub reason: &'a dyn Display,
}

impl InternalEvent for EventInvalid<'_> {
    fn emit(self) {
        self.source.events_failed.inc();
        tracing::warn!(source = self.source.name.as_str(), index = self.index, reason = %self.reason, "event failed validation on ingest");
    }
}

/// Events made durable and acknowledged to the client (duplicates are
/// acknowledged and not counted here).
pub struct EventsAccepted<'a> {
    pub source: &'a SourceStats,
    pub count: u64,
}

impl InternalEvent for EventsAccepted<'_> {
    fn emit(self) {
        self.source.events_accepted.add(self.count);
    }
}

/// An event dropped on ingest as a repeat of one accepted within the
/// dedupe window (same source and `messageId`); the client got its 200.
pub struct EventDeduplicated<'a> {
    pub source: &'a SourceStats,
    pub message_id: &'a str,
}

impl InternalEvent for EventDeduplicated<'_> {
    fn emit(self) {
        self.source.events_deduplicated.inc();
        tracing::debug!(
            source = self.source.name.as_str(),
            message_id = self.message_id,
            "duplicate messageId dropped"
        );
    }
}

/// A request refused before a source was known (bad key, bad JSON, size).
pub struct RequestRefused<'a> {
    pub metrics: &'a Metrics,
    pub status: u16,
    pub code: &'a str,
    pub message: &'a str,
}

impl InternalEvent for RequestRefused<'_> {
    fn emit(self) {
        self.metrics.rejected_requests.inc();
        tracing::debug!(status = self.status, code = self.code, message = self.message, "request refused");
    }
}

/// Events the sink could not take (the request is answered 503): the
/// disk is below its floor, the log is unusable, or the server is
/// stopping. Falling below the floor is logged when it happens, by the
/// log; each refusal only counts then.
pub struct EventsRefused<'a> {
    pub metrics: &'a Metrics,
    pub source: &'a str,
    pub code: &'static str,
    pub message: &'a str,
    pub count: usize,
}

impl InternalEvent for EventsRefused<'_> {
    fn emit(self) {
        self.metrics.ingest_refused.count(self.code);
        match self.code {
            "disk_below_floor" | "shutting_down" => {
                tracing::debug!(source = self.source, events = self.count, reason = self.message, "events refused")
            }
            _ => tracing::error!(
                source = self.source,
                events = self.count,
                error = self.message,
                "could not accept events"
            ),
        }
    }
}

/// A destination removed from the config still holds much of the log
/// (`switchyard_destination_log_bytes` shows it all the time).
pub struct RemovedDestinationHoldsLog<'a> {
    pub name: &'a str,
    pub bytes: u64,
    pub records: u64,
}

impl InternalEvent for RemovedDestinationHoldsLog<'_> {
    fn emit(self) {
        tracing::warn!(
            destination = self.name,
            log_mb = self.bytes / (1024 * 1024),
            undelivered = self.records,
            "a destination removed from the config holds this much of the log; add it back to deliver its events, \
             or drop them with `switchyard purge --destination {}`",
            self.name
        );
    }
}

/// A request over its source's rate limit, answered 429.
pub struct RateLimited<'a> {
    pub stats: &'a SourceStats,
    pub retry_after_secs: u64,
}

impl InternalEvent for RateLimited<'_> {
    fn emit(self) {
        self.stats.rate_limited.inc();
        tracing::debug!(source = %self.stats.name, retry_after_secs = self.retry_after_secs, "request over the rate limit");
    }
}

/// A warehouse load that committed.
pub struct WarehouseLoaded<'a> {
    pub stats: &'a WarehouseStats,
    pub inserted: u64,
    pub existing: u64,
    pub discarded: u64,
}

impl InternalEvent for WarehouseLoaded<'_> {
    fn emit(self) {
        self.stats.inserted.add(self.inserted);
        self.stats.existing.add(self.existing);
        self.stats.discarded.add(self.discarded);
    }
}

/// A warehouse load that failed; nothing of it was written.
pub struct WarehouseLoadFailed<'a> {
    pub stats: &'a WarehouseStats,
    pub destination: &'a str,
    /// The error, with the destination's secrets redacted.
    pub message: &'a str,
    pub retryable: bool,
}

impl InternalEvent for WarehouseLoadFailed<'_> {
    fn emit(self) {
        self.stats.failures.inc();
        tracing::warn!(
            destination = self.destination,
            error = self.message,
            retryable = self.retryable,
            "warehouse load failed"
        );
    }
}

/// The warehouse capability reports each load here; the two events above
/// count and log it.
impl switchyard_runtime::capabilities::warehouse::LoadTelemetry for WarehouseStats {
    fn loaded(&self, inserted: u64, existing: u64, discarded: u64) {
        WarehouseLoaded { stats: self, inserted, existing, discarded }.emit();
    }

    fn failed(&self, destination: &str, message: &str, retryable: bool) {
        WarehouseLoadFailed { stats: self, destination, message, retryable }.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_counts_its_metric() {
        let stats = DestinationStats::new("hook");
        EventReceived { stats: &stats }.emit();
        EventFiltered { stats: &stats }.emit();
        EventDelivered { stats: &stats }.emit();
        EventsFailed { stats: &stats, count: 3 }.emit();
        let retried =
            EventRetried { stats: &stats, message_id: "m", attempts: 1, delay: Duration::ZERO, reason: "503" };
        retried.emit();
        EventDeadLettered { stats: &stats, message_id: "m", reason: "400" }.emit();
        let err = "trap";
        CallFailed { stats: &stats, error: &err, quota: Some(QuotaKind::Cpu), events: 2, current: true }.emit();
        CallFailed { stats: &stats, error: &err, quota: Some(QuotaKind::Cpu), events: 2, current: false }.emit();
        let counts = [
            stats.received.get(),
            stats.filtered.get(),
            stats.delivered.get(),
            stats.failed.get(),
            stats.retried.get(),
            stats.dead_lettered.get(),
            stats.call_failures.get(),
            stats.breaches[QuotaKind::Cpu.index()].get(),
        ];
        assert_eq!(counts, [1, 1, 1, 3, 1, 1, 2, 1], "a stale deploy's failure is counted, its breach is not");
        let metrics = Metrics::default();
        ReloadApplied { metrics: &metrics, added: &[], removed: &[], updated: &[], sources_changed: true }.emit();
        ReloadRefused { metrics: &metrics, error: &err }.emit();
        RequestRefused { metrics: &metrics, status: 401, code: "unauthorized", message: "no key" }.emit();
        let got = [metrics.reloads_applied.get(), metrics.reloads_refused.get(), metrics.rejected_requests.get()];
        assert_eq!(got, [1, 1, 1]);
    }
}
