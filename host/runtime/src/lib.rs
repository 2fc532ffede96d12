//! The Wasm runtime: one wasmtime engine, plugins loaded from `.wasm`
//! components (compiled once and cached on disk), and sandboxed instances.
//!
//! The crate is the sandbox and nothing else: it knows the contract
//! ([`world`], the generated bindings of every version the host runs), the
//! capabilities a plugin can be granted ([`capabilities`]: `http`, `log`,
//! `warehouse`, each a module with its context, view trait and
//! `add_to_linker`), the quota arithmetic they share ([`quota`]) and the
//! secret redaction applied to everything a plugin emits ([`redact`]). It
//! knows nothing of the log, delivery or configuration files: the host
//! builds each destination's [`Grants`] and calls [`Instance::deliver`].
//!
//! # Instances: one per delivery worker, reused across calls
//!
//! A delivery worker keeps one [`Instance`] and calls `deliver` on it batch
//! after batch; it is rebuilt only after a trap (a trapped instance cannot
//! be entered again) or when it is swapped out. Building a fresh store per
//! call would cost instantiate + `init` + drop, ~60 µs (see `cargo bench -p
//! switchyard --bench deliver`, "per-call store"), which at batch 100 is
//! most of what a simple mapping costs. Reuse also lets plugins keep state
//! built in `init`.

pub mod capabilities;
pub mod quota;
pub mod redact;
pub mod world;

mod cache;
mod compat;
mod contract;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use switchyard_types::{Envelope, EventType};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::http::{HttpCtx, HttpCtxView, HttpView};
use crate::capabilities::log::{LogCtx, LogCtxView, LogView};
use crate::capabilities::warehouse::{WarehouseCtx, WarehouseCtxView, WarehouseView};
use crate::capabilities::{Breach, Caller};
use crate::quota::QuotaKind;
use crate::world as bindings;

pub use contract::CONTRACT;

/// How often the epoch ticks; CPU budgets are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of a plugin's stderr kept to explain a trap (panic messages).
const STDERR_CAPTURE: usize = 16 * 1024;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

/// Why a call into a plugin failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The guest trapped: a panic, a stack overflow, a bug.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call overstepped a quota of its sandbox (CPU, memory, time,
    /// HTTP, log, or the contract's outcome count).
    #[error("quota breached ({0}): {1}")]
    Quota(QuotaKind, String),
    /// `init` refused the settings.
    #[error("init refused: {0}")]
    Init(String),
}

impl CallError {
    /// The quota the call overstepped, if that is why it failed.
    pub fn quota_kind(&self) -> Option<QuotaKind> {
        match self {
            CallError::Quota(kind, _) => Some(*kind),
            _ => None,
        }
    }
}

/// The engine and linker every plugin shares.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: PathBuf,
    ticker_stop: Arc<AtomicBool>,
    /// [`RuntimeOptions::perf_map`]: plugins are then compiled afresh, as
    /// code loaded from the compiled cache is not named in the map.
    perf_map: bool,
}

/// Runtime-wide limits.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled artifacts are cached.
    pub cache_dir: PathBuf,
    /// Instances alive at once (pooling allocator slots).
    pub max_instances: u32,
    /// Largest linear memory of any instance, bytes.
    pub max_memory_bytes: usize,
    /// Use the pooling allocator (faster instantiation).
    pub pooling: bool,
    /// Compile in epoch checks, which enforce `cpu_ms_per_call`. Off only
    /// to measure what they cost: without them a spinning guest is stopped
    /// by the call timeout alone.
    pub epoch_interruption: bool,
    /// Memory a pooling slot keeps resident when its instance is dropped,
    /// reset in place for the next one (0: every reset hands it back).
    /// What an idle slot costs in RSS at most, up to [`MAX_WARM_SLOTS`]
    /// idle slots.
    pub keep_resident_bytes: usize,
    /// Write `/tmp/perf-<pid>.map` as plugins are compiled, so `perf
    /// report` names the functions of plugin code (Linux `perf`'s map of
    /// JIT code; nothing is written when off). Plugins then skip the
    /// compiled cache, whose code the map would not name.
    pub perf_map: bool,
}

/// Idle pooling slots kept warm (with their resident memory) at most.
pub const MAX_WARM_SLOTS: u32 = 16;

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption), the linker
    /// (deny-by-default WASI plus the contract's capabilities) and starts the
    /// epoch ticker.
    ///
    /// # Errors
    ///
    /// When the engine cannot be configured or the cache folder created.
    pub fn new(opts: &RuntimeOptions) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(opts.epoch_interruption);
        config.concurrency_support(false);
        if opts.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if opts.pooling {
            let n = opts.max_instances.max(1);
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(n)
                .total_core_instances(n * 8)
                .total_memories(n * 2)
                .total_tables(n * 4)
                .total_stacks(n)
                .max_memories_per_component(2)
                .max_core_instances_per_component(16)
                .max_tables_per_component(8)
                .max_memory_size(opts.max_memory_bytes);
            // A slot's memory is reset in place (only its dirty pages, with
            // Linux's PAGEMAP_SCAN where there is one) instead of being
            // handed back with `madvise`, up to `keep_resident_bytes`: a
            // plugin that traps and is re-instantiated over and over then
            // takes no page faults and sends no TLB-shootdown IPIs, kernel
            // work that the scheduler's priorities do not cover and that
            // slowed the tracking API beside it (BENCHMARKS.md, issue 12).
            pool.linear_memory_keep_resident(opts.keep_resident_bytes)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .max_unused_warm_slots(MAX_WARM_SLOTS.min(n));
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(err) if opts.pooling => {
                tracing::warn!(error = %err, "pooling allocator unavailable; falling back to on-demand allocation");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(anyhow::Error::from)?
            }
            Err(err) => return Err(anyhow::Error::from(err)),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // Each capability links its interface of every contract version,
        // side by side: a plugin links against the version it was built for.
        capabilities::add_types_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        capabilities::http::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        capabilities::log::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        capabilities::warehouse::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        std::fs::create_dir_all(&opts.cache_dir)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                e.increment_epoch();
            }
        })?;
        Ok(Runtime { engine, linker, cache_dir: opts.cache_dir.clone(), ticker_stop, perf_map: opts.perf_map })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads the plugin at `path`: checks it is a component of this contract,
    /// compiles it (or loads the cached artifact) and pre-links it. CPU-heavy
    /// on a cache miss; call from a blocking thread.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming the file and what is wrong with it.
    pub fn load(&self, path: &Path) -> Result<Plugin, LoadError> {
        let fail = |message: String| LoadError { path: path.to_owned(), message };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        contract::check_header(&bytes).map_err(fail)?;
        let hash = cache::content_hash(&bytes);
        let component = if self.perf_map {
            Component::new(&self.engine, &bytes).map_err(|e| fail(format!("cannot compile: {e:#}")))?
        } else {
            cache::compile_cached(&self.engine, &self.cache_dir, &hash, &bytes).map_err(fail)?
        };
        let contract::Imports { contract, capabilities } = contract::check(&self.engine, &component).map_err(fail)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("not a valid {CONTRACT} plugin: {e:#}")))?;
        let pre = Pre::new(pre, &contract).map_err(|e| fail(format!("not a valid {CONTRACT} plugin: {e:#}")))?;
        Ok(Plugin { path: path.to_owned(), hash, contract, capabilities, pre, loaded_at: SystemTime::now() })
    }

    /// Compiles `bytes` without caching, for benchmarks of load time.
    ///
    /// # Errors
    ///
    /// When `bytes` is not a valid component.
    pub fn compile_uncached(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        Component::new(&self.engine, bytes).map_err(anyhow::Error::from)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// The content hash (SHA-256, hex) of the plugin file at `path`, as
/// [`Plugin::hash`] would be.
///
/// # Errors
///
/// When the file cannot be read.
pub fn file_hash(path: &Path) -> std::io::Result<String> {
    Ok(cache::content_hash(&std::fs::read(path)?))
}

/// A loaded, pre-linked plugin version. Cheap to instantiate many times.
#[derive(Clone)]
pub struct Plugin {
    pub path: PathBuf,
    /// SHA-256 of the `.wasm`, hex.
    pub hash: String,
    /// The contract version it was built against, e.g. `0.1.0`.
    pub contract: String,
    /// The contract's capability interfaces it imports (`http`, `log`,
    /// `warehouse`), sorted.
    pub capabilities: Vec<String>,
    pub loaded_at: SystemTime,
    pre: Pre,
}

/// A plugin pre-linked against the contract version it was built for.
#[derive(Clone)]
enum Pre {
    V0_1(bindings::v0_1::DestinationPre<HostState>),
    V0_2(bindings::v0_2::DestinationPre<HostState>),
}

impl Pre {
    /// Type-checks the component's exports against `contract`'s world (the
    /// newest when the plugin imports none of the contract's interfaces and
    /// so names no version: then an older world is tried too).
    fn new(pre: wasmtime::component::InstancePre<HostState>, contract: &str) -> anyhow::Result<Pre> {
        if contract.starts_with("0.1.") {
            return Ok(Pre::V0_1(bindings::v0_1::DestinationPre::new(pre).map_err(anyhow::Error::from)?));
        }
        match bindings::v0_2::DestinationPre::new(pre.clone()) {
            Ok(p) => Ok(Pre::V0_2(p)),
            Err(newest) => match bindings::v0_1::DestinationPre::new(pre) {
                Ok(p) => Ok(Pre::V0_1(p)),
                Err(_) => Err(anyhow::Error::from(newest)),
            },
        }
    }

    fn engine(&self) -> &Engine {
        match self {
            Pre::V0_1(p) => p.engine(),
            Pre::V0_2(p) => p.engine(),
        }
    }

    async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            Pre::V0_1(p) => Guest::V0_1(p.instantiate_async(store).await?),
            Pre::V0_2(p) => Guest::V0_2(p.instantiate_async(store).await?),
        })
    }
}

/// A live instance's exports, of its contract version.
enum Guest {
    V0_1(bindings::v0_1::Destination),
    V0_2(bindings::v0_2::Destination),
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("hash", &self.hash).finish()
    }
}

/// What one destination's instances are allowed: its sandbox, one grant
/// per capability plus the limits the runtime enforces itself.
pub struct Grants {
    /// The destination, and the secrets scrubbed from its log lines and
    /// errors.
    pub caller: Caller,
    pub http: HttpCtx,
    pub log: LogCtx,
    pub warehouse: WarehouseCtx,
    pub memory_bytes: usize,
    /// CPU budget per call, in epoch ticks.
    pub cpu_ticks: u64,
    pub call_timeout: Duration,
}

/// The data of one instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stderr: MemoryOutputPipe,
    ticks_left: u64,
    grants: Arc<Grants>,
    /// The quota the current call overstepped, if a capability reported one.
    breach: Breach,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HttpView for HostState {
    fn http(&mut self) -> HttpCtxView<'_> {
        HttpCtxView { ctx: &self.grants.http, caller: &self.grants.caller, breach: &mut self.breach }
    }
}

impl LogView for HostState {
    fn log(&mut self) -> LogCtxView<'_> {
        LogCtxView { ctx: &self.grants.log, caller: &self.grants.caller, breach: &mut self.breach }
    }
}

impl WarehouseView for HostState {
    fn warehouse(&mut self) -> WarehouseCtxView<'_> {
        WarehouseCtxView { ctx: &self.grants.warehouse, caller: &self.grants.caller }
    }
}

impl Plugin {
    /// A new sandboxed instance with `grants`. Does not call `init`.
    ///
    /// # Errors
    ///
    /// When instantiation fails (pool exhausted, start function trapped).
    pub async fn instantiate(&self, grants: Arc<Grants>) -> Result<Instance, CallError> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        // Deny by default: no env, no args, no preopens, no sockets; stderr
        // is captured so a panic message can be reported.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(grants.memory_bytes)
            .instances(32)
            .tables(32)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
            ticks_left: grants.cpu_ticks,
            grants,
            breach: Breach::default(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            if s.ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            s.ticks_left -= 1;
            // Yield to the executor each tick so a spinning guest cannot hold
            // a tokio worker thread for its whole budget.
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let timeout = store.data().grants.call_timeout;
        let bindings = match tokio::time::timeout(timeout, self.pre.instantiate(&mut store)).await {
            Err(_) => return Err(call_timeout(timeout)),
            Ok(Err(e)) => return Err(classify_trap(&e, &mut store)),
            Ok(Ok(b)) => b,
        };
        Ok(Instance { store, bindings, hash: self.hash.clone() })
    }
}

/// A live plugin instance. Not reusable after a failed call: build a new one.
pub struct Instance {
    store: Store<HostState>,
    bindings: Guest,
    /// The plugin version it runs.
    pub hash: String,
}

/// One event's outcome, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry { after: Option<Duration>, reason: String },
    Rejected(String),
}

impl Instance {
    /// Calls `init` with the settings as a JSON object.
    ///
    /// # Errors
    ///
    /// [`CallError::Init`] when the plugin refuses its settings, or a
    /// trap or timeout.
    pub async fn init(&mut self, settings_json: &str) -> Result<(), CallError> {
        self.arm();
        let timeout = self.store.data().grants.call_timeout;
        let call = async {
            match &self.bindings {
                Guest::V0_2(g) => g.call_init(&mut self.store, settings_json).await,
                Guest::V0_1(g) => Ok(g.call_init(&mut self.store, settings_json).await?.map_err(compat::init_error)),
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(call_timeout(timeout)),
            Ok(Err(e)) => Err(classify_trap(&e, &mut self.store)),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(err))) => {
                let msg = match err {
                    bindings::types::InitError::InvalidSettings(m) => {
                        format!("invalid settings: {m}")
                    }
                    bindings::types::InitError::Other(m) => m,
                };
                Err(CallError::Init(self.store.data().grants.caller.redactor.redact(&msg)))
            }
        }
    }

    /// Calls `deliver` with `batch` and returns one outcome per event.
    ///
    /// # Errors
    ///
    /// A trap, a timeout, or the wrong number of outcomes.
    pub async fn deliver(&mut self, batch: &[Arc<Envelope>]) -> Result<Vec<Outcome>, CallError> {
        let events: Vec<bindings::types::Event<'_>> = batch.iter().map(|e| to_wit(e)).collect();
        self.arm();
        let timeout = self.store.data().grants.call_timeout;
        let call = async {
            match &self.bindings {
                Guest::V0_2(g) => g.call_deliver(&mut self.store, &events).await,
                Guest::V0_1(g) => {
                    let old: Vec<_> = events.iter().map(compat::event).collect();
                    Ok(g.call_deliver(&mut self.store, &old).await?.into_iter().map(compat::outcome).collect())
                }
            }
        };
        let outcomes = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(call_timeout(timeout)),
            Ok(Err(e)) => return Err(classify_trap(&e, &mut self.store)),
            Ok(Ok(outcomes)) => outcomes,
        };
        if outcomes.len() != batch.len() {
            let detail = format!("returned {} outcomes for {} events", outcomes.len(), batch.len());
            return Err(CallError::Quota(QuotaKind::OutcomeCount, detail));
        }
        let reason_bytes: usize = outcomes.iter().map(reason_len).sum();
        let cap = max_outcome_bytes(batch.len());
        if reason_bytes > cap {
            let detail =
                format!("returned {reason_bytes} bytes of outcome reasons for {} events (cap {cap})", batch.len());
            return Err(CallError::Quota(QuotaKind::OutcomeSize, detail));
        }
        let redactor = &self.store.data().grants.caller.redactor;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                bindings::types::Outcome::Delivered => Outcome::Delivered,
                bindings::types::Outcome::Retry(r) => Outcome::Retry {
                    after: r.after_ms.map(Duration::from_millis),
                    reason: redactor.redact(truncate(&r.reason, MAX_REASON)),
                },
                bindings::types::Outcome::Rejected(reason) => {
                    Outcome::Rejected(redactor.redact(truncate(&reason, MAX_REASON)))
                }
            })
            .collect())
    }

    /// Resets the CPU budget before a call.
    fn arm(&mut self) {
        let ticks = self.store.data().grants.cpu_ticks;
        self.store.data_mut().ticks_left = ticks;
        self.store.data_mut().breach.take();
        self.store.set_epoch_deadline(1);
    }
}

fn to_wit(e: &Envelope) -> bindings::types::Event<'_> {
    use bindings::types::EventType as W;
    let kind = match e.kind {
        EventType::Identify => W::Identify,
        EventType::Track => W::Track,
        EventType::Page => W::Page,
        EventType::Screen => W::Screen,
        EventType::Group => W::Group,
        EventType::Alias => W::Alias,
    };
    bindings::types::Event {
        kind,
        message_id: &e.message_id,
        name: e.name.as_deref(),
        user_id: e.user_id.as_deref(),
        anonymous_id: e.anonymous_id.as_deref(),
        timestamp_ms: e.timestamp_ms,
        json: &e.json,
        source: &e.source,
    }
}

/// Longest outcome reason kept; a plugin's reasons end up in logs and
/// dead letters.
pub const MAX_REASON: usize = 1024;

/// Reason bytes one `deliver` call may return for `events` events: 1 KiB
/// per event on average, and never less than 64 KiB. Past it the call
/// breaches [`QuotaKind::OutcomeSize`], so a plugin that floods the host
/// with text fails its calls and is quarantined instead of costing its
/// neighbours a copy of every megabyte. Each reason within the cap is
/// still cut to [`MAX_REASON`].
pub fn max_outcome_bytes(events: usize) -> usize {
    (events * MAX_REASON).max(64 * 1024)
}

fn reason_len(o: &bindings::types::Outcome) -> usize {
    match o {
        bindings::types::Outcome::Delivered => 0,
        bindings::types::Outcome::Retry(r) => r.reason.len(),
        bindings::types::Outcome::Rejected(reason) => reason.len(),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn call_timeout(timeout: Duration) -> CallError {
    CallError::Quota(
        QuotaKind::CallTimeout,
        format!("call took longer than call_timeout_ms ({} ms)", timeout.as_millis()),
    )
}

/// What a failed call ran into: a quota a capability reported, the CPU or
/// memory limit, or a plain trap (with the guest's stderr, which explains a
/// panic).
fn classify_trap(err: &wasmtime::Error, store: &mut Store<HostState>) -> CallError {
    if let Some((kind, detail)) = store.data_mut().breach.take() {
        return CallError::Quota(kind, store.data().grants.caller.redactor.redact(&detail));
    }
    if let Some(wasmtime::Trap::Interrupt) = err.downcast_ref::<wasmtime::Trap>() {
        return CallError::Quota(QuotaKind::Cpu, "CPU time limit exceeded (cpu_ms_per_call)".into());
    }
    let mut msg = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    if msg.contains("forcing trap when growing memory") {
        let limit = store.data().grants.memory_bytes >> 20;
        return CallError::Quota(QuotaKind::Memory, format!("linear memory limit exceeded ({limit} MiB)"));
    }
    let stderr = store.data().stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    let tail: String =
        stderr.trim().lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
    if !tail.is_empty() {
        msg.push_str(": ");
        msg.push_str(&tail);
    }
    CallError::Trap(store.data().grants.caller.redactor.redact(&msg))
}
