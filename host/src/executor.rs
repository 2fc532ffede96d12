//! Where code runs: plugin code never shares a thread with the tracking API,
//! and each destination's plugin code runs on threads of its own.
//!
//! # The execution model
//!
//! | threads | what runs there | how many |
//! |---|---|---|
//! | the API runtime | the tracking API and the admin API (`/metrics`, `/ready`, …) | `server.api_threads` (default: one per core) |
//! | one runtime per destination | its plugin calls and its outbound HTTP connections (and its worker's loop when `catch_up_backlog` is 0) | `min(quota.max_concurrent_calls, cores)`, fixed when the destination starts, at nice `runtime.destination_nice` (19) and under `SCHED_IDLE` (lifted while its calls stall) |
//! | the `delivery` runtime | every delivery worker's loop (reading the log, batching, acting on outcomes), and the plugin calls of a destination that is behind (`runtime.catch_up_backlog` events) and healthy (its last call succeeded) | one per core, at the default priority |
//! | the control runtime (the process's main one) | reloads, the file watcher, `init` checks of new plugin versions | tokio's default |
//! | `log-writer`, `log-prealloc` | the durable log's group commit and spare segments | one each |
//! | `epoch-ticker` | the CPU clock of every sandbox ([`switchyard_runtime::EPOCH_TICK`]) | one |
//!
//! A guest yields to its executor only at epoch ticks, so on a shared
//! executor a plugin spinning in a loop held the ingest tasks queued behind
//! it for up to a tick each time: 2000 events in 20 requests took ~2 s to
//! be acknowledged instead of ~0.03 s. On threads of their own, plugins are
//! scheduled by the kernel, preemptively, against the API's threads and
//! against each other: a destination can take at most as many cores as it
//! has threads, a thread that wakes up for a request preempts one that has
//! been spinning, and neighbours get their share however a plugin behaves.
//! Its HTTP connections live on its runtime too, so a destination's
//! connection pool is its own.
//!
//! Destination threads run at the lowest priority (nice 19,
//! `runtime.destination_nice`, and Linux's `SCHED_IDLE`,
//! `runtime.destination_idle`, under which an API thread that wakes
//! preempts them at once, where under plain nice 19 it may wait for a
//! spinning plugin's slice; a destination whose calls stall there, the
//! machine being busy with something else, leaves it until it has caught
//! up: [`IdleControl`]), and when the cores are busy the kernel gives the
//! API's threads the CPU first, so acknowledging events comes before
//! delivering them — they are durable by then, and delivery catches up
//! whenever ingest waits (on fsync, on clients). Between destinations the
//! share stays equal. Measured on 2 cores (`cargo bench --bench ingest`):
//! at nice 0 delivery took its fair share of the cores and durable ingest
//! fell to ~160k events/s; at nice 19 it is back to 200–235k, with
//! delivery still keeping up with 165–190k of it during the peak.
//!
//! At nice 19 delivery only gets what ingest leaves: under a sustained peak
//! it fell behind and the backlog only grew (`cargo bench --bench
//! pipeline`). So a destination that is behind by `runtime.catch_up_backlog`
//! events (10000) and whose last call succeeded runs its calls on the
//! `delivery` runtime instead, at the default priority: it then shares the
//! cores with the tracking API as an equal, delivery keeps pace, and ingest
//! accepts less — backpressure through the CPU rather than an unbounded
//! backlog. A destination whose calls fail (a plugin that spins or runs out
//! of memory) stays on its own lowest-priority threads, so it still cannot
//! slow ingest; nor can one that keeps up, which is never behind. Its calls
//! go back to its own threads as soon as it has caught up. The workers'
//! loops run on the `delivery` runtime too: they only read the log and
//! keep accounts, and at nice 19 that bookkeeping alone held a
//! catching-up destination back.
//!
//! The cost is threads: one runtime per destination, each with at most
//! `max_concurrent_calls` workers (they sleep while the destination is
//! idle). A reload that raises `max_concurrent_calls` allows more calls at
//! once at once, but they share the threads the destination started with
//! until it is restarted.

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// Threads a destination's runtime keeps for blocking work (the embedded
/// warehouse's SQLite loads).
const MAX_BLOCKING_THREADS: usize = 8;

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// A multi-threaded tokio runtime with named threads, shut down (without
/// waiting for its tasks) when dropped, which is allowed from async code.
pub struct Executor {
    runtime: Option<Runtime>,
    handle: Handle,
    idle: Option<Arc<IdleControl>>,
}

impl Executor {
    /// A runtime of `threads` worker threads (at least one) named `name`.
    ///
    /// # Errors
    ///
    /// When the threads cannot be started.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Executor> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name(name)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Executor { runtime: Some(runtime), handle, idle: None })
    }

    /// The runtime for one destination: `min(max_concurrent_calls, cores)`
    /// threads named after it, each at `priority` (a thread may always
    /// lower its own). Under `SCHED_IDLE` its threads follow the
    /// runtime's [`IdleControl`]: each re-applies its policy the next time
    /// it wakes after a change.
    ///
    /// # Errors
    ///
    /// When the threads cannot be started.
    pub fn for_destination(name: &str, max_concurrent_calls: usize, priority: Priority) -> std::io::Result<Executor> {
        // Thread names are cut to 15 bytes by Linux; keep the destination's.
        let short: String = name.chars().take(10).collect();
        let control = priority.idle.then(|| Arc::new(IdleControl::default()));
        let on_start = control.clone();
        let on_unpark = control.clone();
        let runtime = Builder::new_multi_thread()
            .worker_threads(max_concurrent_calls.clamp(1, cores()))
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name(format!("dest-{short}"))
            .on_thread_start(move || priority.apply(on_start.as_deref()))
            .on_thread_unpark(move || {
                if let Some(control) = &on_unpark {
                    priority.follow(control);
                }
            })
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Executor { runtime: Some(runtime), handle, idle: control })
    }

    /// How the runtime's `SCHED_IDLE` is lifted and restored; `None` when
    /// its threads are not under `SCHED_IDLE`.
    pub fn idle_control(&self) -> Option<&Arc<IdleControl>> {
        self.idle.as_ref()
    }

    /// Runs `future` on this runtime.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// How destination threads are scheduled against the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// Nice value, 0 to 19.
    pub nice: i32,
    /// Linux's `SCHED_IDLE` policy on top.
    pub idle: bool,
}

impl Priority {
    /// Applies it to the calling thread (Linux: priorities are per
    /// thread): its nice value, and `SCHED_IDLE` unless `control` has it
    /// lifted. A failure is logged and the thread runs at the default.
    fn apply(self, control: Option<&IdleControl>) {
        let idle = match control {
            Some(control) => !control.follow_on_this_thread(),
            None => self.idle,
        };
        set_policy(idle);
        #[cfg(target_os = "linux")]
        {
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), self.nice.clamp(0, 19)) {
                tracing::warn!(error = %e, nice = self.nice, "cannot lower a destination thread's priority");
            }
        }
    }

    /// Re-applies the policy on the calling thread if `control` changed
    /// since it last did: one atomic load otherwise. The nice value is
    /// left as it is (an unprivileged thread could not take it back).
    fn follow(self, control: &IdleControl) {
        if control.changed_for_this_thread() {
            let lifted = control.follow_on_this_thread();
            set_policy(self.idle && !lifted);
        }
    }
}

/// Puts the calling thread under `SCHED_IDLE`, or back under the normal
/// policy (`SCHED_OTHER`, which any thread may return to at its nice
/// value). A failure is logged.
fn set_policy(idle: bool) {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let policy = if idle { NormalThreadSchedulePolicy::Idle } else { NormalThreadSchedulePolicy::Other };
        if thread_priority::thread_schedule_policy().ok() == Some(ThreadSchedulePolicy::Normal(policy)) {
            return;
        }
        // Keep the thread's nice value: the crate's setter also sets it
        // (to the policy's minimum), so it is read first and put back.
        let tid = rustix::thread::gettid();
        let nice = rustix::process::getpriority_process(Some(tid)).unwrap_or(19);
        let native = thread_priority::thread_native_id();
        let set = thread_priority::set_thread_priority_and_policy(
            native,
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(policy),
        );
        if let Err(e) = set {
            tracing::warn!(error = %e, idle, "cannot change a destination thread's scheduling policy");
        }
        let _ = rustix::process::setpriority_process(Some(tid), nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = idle;
}

/// Whether a destination runtime's threads have `SCHED_IDLE` lifted,
/// shared by those threads and the destination's worker.
///
/// Under `SCHED_IDLE` a thread runs only on CPU time nothing else on the
/// machine wants; on a host kept busy by another process that can be
/// almost none, and delivery would stall. So the worker lifts it when
/// its calls stall (`delivery::LIFT_IDLE_AFTER`) and restores it once the
/// destination has caught up. The change takes effect on each thread the
/// next time it wakes (a tokio worker wakes for every task it is given);
/// blocking-pool threads take the state current when they start.
#[derive(Debug, Default)]
pub struct IdleControl {
    lifted: AtomicBool,
    /// Bumped on every change, so a thread can tell it has one to apply.
    generation: AtomicU64,
}

thread_local! {
    /// The [`IdleControl::generation`] this thread last applied.
    static APPLIED: Cell<u64> = const { Cell::new(0) };
}

impl IdleControl {
    /// Lifts `SCHED_IDLE`: the threads run under the normal policy, still
    /// at their nice value. Returns whether that is a change.
    pub fn lift(&self) -> bool {
        self.set(true)
    }

    /// Puts the threads back under `SCHED_IDLE`. Returns whether that is a
    /// change.
    pub fn restore(&self) -> bool {
        self.set(false)
    }

    /// Whether `SCHED_IDLE` is lifted now.
    pub fn is_lifted(&self) -> bool {
        self.lifted.load(Ordering::Acquire)
    }

    fn set(&self, lifted: bool) -> bool {
        let changed = self.lifted.swap(lifted, Ordering::AcqRel) != lifted;
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    fn changed_for_this_thread(&self) -> bool {
        APPLIED.with(|applied| applied.get() != self.generation.load(Ordering::Acquire))
    }

    /// Records the current generation as applied on this thread and
    /// returns whether `SCHED_IDLE` is lifted.
    fn follow_on_this_thread(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        APPLIED.with(|applied| applied.set(generation));
        self.is_lifted()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("workers", &self.handle.metrics().num_workers()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_executors_own_threads() {
        let exec = Executor::new("test-exec", 2).unwrap();
        let name = exec.spawn(async { std::thread::current().name().map(str::to_owned) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("test-exec"));
        assert_eq!(exec.handle().metrics().num_workers(), 2);
        // Dropping it from async code must not panic.
        drop(exec);
    }

    #[tokio::test]
    async fn a_destination_gets_at_most_one_thread_per_core() {
        let exec =
            Executor::for_destination("a-destination-with-a-long-name", 1000, Priority { nice: 10, idle: false })
                .unwrap();
        assert_eq!(exec.handle().metrics().num_workers(), cores());
        let name = exec.spawn(async { std::thread::current().name().map(str::to_owned) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("dest-a-destinat"));
        assert_eq!(
            Executor::for_destination("d", 0, Priority { nice: 10, idle: false })
                .unwrap()
                .handle()
                .metrics()
                .num_workers(),
            1
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn destination_threads_run_at_the_lower_priority() {
        let exec = Executor::for_destination("nice", 1, Priority { nice: 7, idle: true }).unwrap();
        let nice = exec.spawn(async { rustix::process::getpriority_process(Some(rustix::thread::gettid())) });
        assert_eq!(nice.await.unwrap().unwrap(), 7);
        let policy = exec.spawn(async { thread_priority::thread_schedule_policy() }).await.unwrap().unwrap();
        let idle = thread_priority::ThreadSchedulePolicy::Normal(thread_priority::NormalThreadSchedulePolicy::Idle);
        assert_eq!(policy, idle);
        let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(here, 0, "the caller's thread is untouched");
    }

    /// The policy a task on `exec` sees once the threads have settled: a
    /// worker applies a change when it next wakes, so ask until it has.
    #[cfg(target_os = "linux")]
    async fn policy_becomes(exec: &Executor, want: thread_priority::NormalThreadSchedulePolicy) {
        let want = thread_priority::ThreadSchedulePolicy::Normal(want);
        for _ in 0..100 {
            let (policy, nice) = exec
                .spawn(async {
                    let tid = rustix::thread::gettid();
                    (
                        thread_priority::thread_schedule_policy().unwrap(),
                        rustix::process::getpriority_process(Some(tid)),
                    )
                })
                .await
                .unwrap();
            assert_eq!(nice.unwrap(), 7, "the nice value stays");
            if policy == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the destination's thread never took {want:?}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn lifting_sched_idle_moves_the_threads_to_the_normal_policy_and_back() {
        use thread_priority::NormalThreadSchedulePolicy::{Idle, Other};
        let exec = Executor::for_destination("lift", 1, Priority { nice: 7, idle: true }).unwrap();
        let control = exec.idle_control().expect("under SCHED_IDLE").clone();
        policy_becomes(&exec, Idle).await;
        assert!(control.lift() && !control.lift(), "one change");
        assert!(control.is_lifted());
        policy_becomes(&exec, Other).await;
        assert!(control.restore() && !control.restore());
        policy_becomes(&exec, Idle).await;
        assert!(
            Executor::for_destination("plain", 1, Priority { nice: 7, idle: false }).unwrap().idle_control().is_none()
        );
    }
}
