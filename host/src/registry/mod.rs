//! What runs: each destination's deploy (plugin version, settings, policy)
//! and worker, and the sources. [`Registry::reload`] applies a changed
//! config file or plugin without a restart.
//!
//! # Reloads
//!
//! A reload reads the config file again and compares every destination with
//! what runs. A destination whose config or plugin file (by content hash)
//! changed gets a new deploy: the plugin is compiled off the delivery path
//! (or taken from the compiled cache), instantiated and `init`ed with its
//! settings, and only when that succeeds handed to the worker, which
//! switches before its next batch (see [`crate::delivery`]). New
//! destinations start; removed ones stop, keeping their cursor — and with
//! it their undelivered events — until [`Registry::purge`]. Sources are
//! swapped whole.
//!
//! A reload is all or nothing: an invalid config, or any plugin that fails
//! to load or `init`, refuses the whole reload and everything keeps running
//! as it was. The refusal is logged, counted
//! (`switchyard_reloads_total{result="refused"}`) and shown per destination
//! in the admin API and `switchyard status`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

pub mod deploy;

use deploy::{TransportFactory, grants_for, settings_json, subscription_for};
use switchyard_governance::{Transforms, ViolationLog};
use switchyard_log::{ConsumerOptions, EventLog, LocalLog};
use switchyard_runtime::capabilities::http::Transport;
use switchyard_runtime::{Plugin, Runtime};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::config::{BatchConfig, Config, DestinationConfig};
use crate::deadletter::DeadLetters;
use crate::delivery::{CatchUp, Deploy, WorkerSpec, run_worker};
use crate::executor::{Executor, Priority};
use crate::ingest::cors::Cors;
use crate::ingest::governance::SourceGovernance;
use crate::ingest::rate_limit::RateLimiter;
use crate::ingest::tls::TlsConfigs;
use crate::ingest::{Source, Sources};
use crate::metrics::{DestinationStats, Metrics, Refusal, SourceStats};
use crate::telemetry::{InternalEvent, ReloadApplied, ReloadRefused, RemovedDestinationHoldsLog};

/// Why a reload was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("reload refused: {0}")]
pub struct ReloadError(pub String);

/// What a reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Destinations with a new plugin version or config.
    pub updated: Vec<String>,
    pub sources_changed: bool,
}

impl ReloadReport {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty() && !self.sources_changed
    }
}

/// Why an admin action on one destination could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no destination named `{0}`")]
    NotFound(String),
    #[error("destination `{0}` is in the config: remove it from the config before purging it")]
    Configured(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Log(#[from] switchyard_log::LogError),
}

/// What every destination shares: the engine, the log (each destination
/// reads it through a consumer of its own), the telemetry, and where each
/// destination's HTTP client comes from.
pub struct Shared<L: EventLog = LocalLog> {
    pub runtime: Arc<Runtime>,
    pub transports: TransportFactory,
    pub log: Arc<L>,
    pub metrics: Arc<Metrics>,
    /// The sources the tracking API accepts, published by the registry.
    pub sources: Sources,
    /// The tracking listener's TLS settings, read again on each reload.
    pub tls: Option<TlsConfigs>,
    /// The delivery workers' loops, and the plugin calls of a destination
    /// that is behind (see [`crate::executor`]).
    pub delivery: Arc<Executor>,
}

/// The running destinations and sources.
pub struct Registry<L: EventLog = LocalLog> {
    config_path: PathBuf,
    shared: Shared<L>,
    state: Mutex<State>,
}

struct State {
    config: Config,
    running: BTreeMap<String, Running>,
    /// Workers being stopped, so shutdown can wait for them.
    stopping: Vec<JoinHandle<()>>,
}

/// One destination's worker and the handles to steer it.
struct Running {
    config: DestinationConfig,
    /// Its HTTP client, whose connections live on its executor.
    transport: Arc<dyn Transport>,
    plugin_hash: String,
    generation: u64,
    deploy: watch::Sender<Arc<Deploy>>,
    paused: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    /// The worker, on the destination's own executor; resolves when it has
    /// stopped and its executor is shut down.
    task: JoinHandle<()>,
    stats: Arc<DestinationStats>,
    dead_letters: Arc<DeadLetters>,
}

/// A destination's plugin, loaded and checked, ready to deploy.
struct Checked {
    plugin: Plugin,
    config: DestinationConfig,
}

impl<L: EventLog> Registry<L> {
    /// Loads every destination of `config`, starts its worker, and
    /// publishes the sources.
    ///
    /// A plugin whose `init` refuses its settings fails the start, naming
    /// it. One that traps (or breaches a quota) in that check starts anyway:
    /// its calls fail and quarantine it, while the other destinations
    /// deliver and its events wait in the log.
    ///
    /// # Errors
    ///
    /// When a plugin cannot be loaded or refuses its settings, or a
    /// destination's dead-letter store or executor cannot be opened.
    pub async fn start(config: Config, shared: Shared<L>) -> anyhow::Result<Arc<Registry<L>>> {
        let registry = Registry {
            config_path: config.path.clone(),
            shared,
            state: Mutex::new(State { config: config.clone(), running: BTreeMap::new(), stopping: Vec::new() }),
        };
        let mut running = BTreeMap::new();
        for d in &config.destinations {
            let loaded = deploy::load(&registry.shared.runtime, &config, d, (registry.shared.transports)())
                .await
                .map_err(|e| anyhow::anyhow!("destination `{}`: {e}", d.name))?;
            match loaded.check {
                Ok(()) => {
                    let hash = &loaded.plugin.hash[..12.min(loaded.plugin.hash.len())];
                    tracing::info!(destination = %d.name, plugin = %d.plugin.display(), hash, "destination ready");
                }
                Err(e) if e.is_refusal() => anyhow::bail!("destination `{}`: {e}", d.name),
                Err(e) => tracing::error!(
                    destination = %d.name,
                    error = %e,
                    "plugin failed its start-up check; its calls will fail and quarantine it while the others deliver"
                ),
            }
            let checked = Checked { plugin: loaded.plugin, config: d.clone() };
            running.insert(d.name.clone(), registry.spawn(&config, checked, false).await?);
        }
        registry.publish_sources(&config, &[]);
        registry.publish_destinations(&running);
        registry.state.lock().await.running = running;
        Ok(Arc::new(registry))
    }

    /// The config file this registry reloads from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config in force (the last one loaded or reloaded).
    pub async fn config(&self) -> Config {
        self.state.lock().await.config.clone()
    }

    /// Every file a reload reads: the config, each destination's plugin
    /// and each source's tracking plan.
    pub async fn watched_files(&self) -> Vec<PathBuf> {
        let state = self.state.lock().await;
        let mut files = vec![self.config_path.clone()];
        files.extend(state.config.destinations.iter().map(|d| d.plugin.clone()));
        files.extend(state.config.sources.iter().filter_map(|s| s.tracking_plan.clone()));
        if let Some(tls) = &state.config.server.tls {
            files.extend([tls.cert.clone(), tls.key.clone()]);
        }
        files
    }

    /// Reads the config file again and applies what changed, all or nothing.
    ///
    /// # Errors
    ///
    /// A [`ReloadError`] when the config is invalid or a changed plugin
    /// fails to load or `init`; nothing changed then.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut state = self.state.lock().await;
        let result = self.try_reload(&mut state).await;
        match &result {
            Ok(report) if report.is_empty() => tracing::debug!("reload: nothing changed"),
            Ok(r) => ReloadApplied {
                metrics: &self.shared.metrics,
                added: &r.added,
                removed: &r.removed,
                updated: &r.updated,
                sources_changed: r.sources_changed,
            }
            .emit(),
            Err(e) => ReloadRefused { metrics: &self.shared.metrics, error: e }.emit(),
        }
        result
    }

    async fn try_reload(&self, state: &mut State) -> Result<ReloadReport, ReloadError> {
        let config = Config::load(&self.config_path).map_err(|e| ReloadError(e.to_string()))?;
        if config.server.listen != state.config.server.listen
            || config.server.admin_listen != state.config.server.admin_listen
            || config.server.data_dir != state.config.server.data_dir
            || config.runtime != state.config.runtime
        {
            tracing::warn!("changes to [server] listeners, data_dir and [runtime] take effect at the next restart");
        }
        // The certificate and key are read on every reload (the watcher
        // reloads when they change); TLS itself is turned on or off only
        // by a restart.
        let tls = match (&config.server.tls, &self.shared.tls) {
            (Some(t), Some(_)) => {
                Some(crate::ingest::tls::load(&t.cert, &t.key).map_err(|e| ReloadError(e.to_string()))?)
            }
            (None, None) => None,
            _ => return Err(ReloadError("server.tls is turned on or off only by a restart".into())),
        };

        // Check every new or changed destination before touching anything.
        // What every subscription reads besides its own config (the
        // exposure registry, the PII list, which sources are forwarding
        // targets) changing redeploys them all.
        let shared_changed = config.governance != state.config.governance
            || deploy::forwarding_targets(&config) != deploy::forwarding_targets(&state.config);
        let mut checked = Vec::new();
        let mut refusals = Vec::new();
        for d in &config.destinations {
            let current = state.running.get(&d.name);
            let hash = switchyard_runtime::file_hash(&d.plugin).ok();
            if let Some(r) = current
                && !shared_changed
                && r.config == *d
                && hash.as_deref() == Some(r.plugin_hash.as_str())
            {
                continue;
            }
            match self.check(&config, d).await {
                Ok(plugin) => checked.push(Checked { plugin, config: d.clone() }),
                Err(reason) => {
                    if let Some(r) = current {
                        let at_ms = chrono::Utc::now().timestamp_millis();
                        let refusal = Refusal { plugin_hash: hash.clone(), reason: reason.clone(), at_ms };
                        r.stats.update_status(|s| s.refused = Some(refusal));
                    }
                    refusals.push(format!("destination `{}`: {reason}", d.name));
                }
            }
        }
        if !refusals.is_empty() {
            return Err(ReloadError(refusals.join("; ")));
        }

        let mut report = ReloadReport::default();
        let keep: Vec<&str> = config.destinations.iter().map(|d| d.name.as_str()).collect();
        let gone: Vec<String> = state.running.keys().filter(|n| !keep.contains(&n.as_str())).cloned().collect();
        for name in gone {
            if let Some(r) = state.running.remove(&name) {
                let backlog = self.shared.log.backlog(&name);
                tracing::info!(
                    destination = %name,
                    undelivered = ?backlog,
                    "destination removed; its undelivered events are kept until it is purged"
                );
                let _ = r.stop.send(true);
                state.stopping.push(r.task);
                report.removed.push(name);
            }
        }
        for c in checked {
            let name = c.config.name.clone();
            if let Some(r) = state.running.get(&name)
                && r.config.ordered != c.config.ordered
                && let Some(old) = state.running.remove(&name)
            {
                // The consumer's shape changes (on a shared log, its
                // JetStream consumers too): the worker is replaced, and the
                // new consumer resumes where the old one got to.
                let paused = *old.paused.borrow();
                let restore = Checked { plugin: old.deploy.borrow().plugin.clone(), config: old.config.clone() };
                let _ = old.stop.send(true);
                let mut task = old.task;
                if tokio::time::timeout(Duration::from_secs(30), &mut task).await.is_err() {
                    // Its calls in flight end here; their events are
                    // delivered again (at least once), never overtaken.
                    tracing::warn!(destination = name.as_str(), "the worker did not stop within 30 s; stopping it");
                    task.abort();
                    let _ = task.await;
                }
                match self.spawn(&config, c, paused).await {
                    Ok(running) => {
                        state.running.insert(name.clone(), running);
                        report.updated.push(name);
                    }
                    Err(e) => {
                        // Keep delivering as before rather than not at all.
                        match self.spawn(&state.config, restore, paused).await {
                            Ok(running) => {
                                state.running.insert(name.clone(), running);
                            }
                            Err(again) => {
                                tracing::error!(destination = name.as_str(), error = %again, "cannot restart the destination");
                            }
                        }
                        return Err(ReloadError(format!("{e:#}")));
                    }
                }
            } else if let Some(r) = state.running.get_mut(&name) {
                r.generation += 1;
                let deploy = Self::deploy(&config, &c, r.generation, &r.stats, &r.transport);
                set_plugin_status(&r.stats, &c);
                r.stats.update_status(|s| s.refused = None);
                r.plugin_hash = c.plugin.hash.clone();
                r.config = c.config.clone();
                let _ = r.deploy.send(Arc::new(deploy));
                report.updated.push(name);
            } else {
                // Added to the config, it starts unpaused, as on the
                // embedded log, also where a shared log kept a pause from
                // before it was removed.
                if self.shared.log.paused(&name) == Some(true)
                    && let Err(e) = self.shared.log.pause(&name, false).await
                {
                    tracing::warn!(destination = name.as_str(), error = %e, "cannot resume its consumer");
                }
                let running = self.spawn(&config, c, false).await.map_err(|e| ReloadError(format!("{e:#}")))?;
                state.running.insert(name.clone(), running);
                report.added.push(name);
            }
        }
        // Refusals of earlier attempts no longer apply once the config is
        // accepted as a whole.
        for r in state.running.values() {
            r.stats.update_status(|s| s.refused = None);
        }
        if let (Some(new), Some(current)) = (tls, &self.shared.tls) {
            current.store(new);
        }
        report.sources_changed = config.sources != state.config.sources;
        if report.sources_changed {
            self.publish_sources(&config, &self.shared.metrics.sources());
        }
        self.publish_destinations(&state.running);
        state.config = config;
        Ok(report)
    }

    /// Loads `d`'s plugin and checks that `init` accepts its settings.
    async fn check(&self, config: &Config, d: &DestinationConfig) -> Result<Plugin, String> {
        let transport = (self.shared.transports)();
        deploy::check(&self.shared.runtime, config, d, transport).await.map_err(|e| e.to_string())
    }

    fn deploy(
        config: &Config,
        c: &Checked,
        generation: u64,
        stats: &DestinationStats,
        transport: &Arc<dyn Transport>,
    ) -> Deploy {
        let d = &c.config;
        Deploy {
            generation,
            plugin: c.plugin.clone(),
            grants: grants_for(
                d,
                &config.redactor,
                transport.clone(),
                stats.warehouse.clone(),
                stats.audit.origins.clone(),
            ),
            settings_json: settings_json(d),
            subscription: subscription_for(config, d, stats),
            // Ordered, nothing more arrives while a batch forms (the
            // consumer hands out one batch at a time): lingering would
            // only delay it.
            batch: if d.ordered { BatchConfig { linger_ms: 0, ..d.batch.clone() } } else { d.batch.clone() },
            retry: d.retry.clone(),
            max_concurrent_calls: d.quota.max_concurrent_calls,
            events_per_second: d.quota.events_per_second,
            quarantine: d.quarantine.clone(),
        }
    }

    /// Starts `c`'s worker, on an executor of its own (see
    /// [`crate::executor`]), with fresh counters, paused if `paused` (a
    /// worker replaced while paused); a destination that ran before under
    /// the same name resumes from its saved cursor.
    async fn spawn(&self, config: &Config, c: Checked, paused: bool) -> anyhow::Result<Running> {
        let name = c.config.name.clone();
        let dead_letters = Arc::new(DeadLetters::new(
            self.shared
                .log
                .dead_letters(&name)
                .await
                .map_err(|e| anyhow::anyhow!("destination `{name}`: opening dead letters: {e}"))?,
        ));
        let executor = Executor::for_destination(
            &name,
            c.config.quota.max_concurrent_calls,
            Priority { nice: config.runtime.destination_nice, idle: config.runtime.destination_idle },
        )
        .map_err(|e| anyhow::anyhow!("destination `{name}`: starting its threads: {e}"))?;
        let transport = (self.shared.transports)();
        let stats = Arc::new(DestinationStats::new(&name));
        stats.update_status(|s| s.paused = paused);
        set_plugin_status(&stats, &c);
        let (deploy_tx, deploy_rx) = watch::channel(Arc::new(Self::deploy(config, &c, 1, &stats, &transport)));
        let (paused_tx, paused_rx) = watch::channel(paused);
        let (stop_tx, stop_rx) = watch::channel(false);
        let consumer = self
            .shared
            .log
            .open_consumer(&name, ConsumerOptions { ordered: c.config.ordered })
            .await
            .map_err(|e| anyhow::anyhow!("destination `{name}`: opening its consumer of the log: {e}"))?;
        let spec: WorkerSpec<L> = WorkerSpec {
            name: Arc::from(name.as_str()),
            deploy: deploy_rx,
            paused: paused_rx,
            stats: stats.clone(),
            consumer,
            dead_letters: dead_letters.clone(),
            commit_every: Duration::from_millis(config.server.cursor_commit_ms),
            own_threads: executor.handle().clone(),
            catch_up: (config.runtime.catch_up_backlog > 0).then(|| CatchUp {
                threads: self.shared.delivery.handle().clone(),
                backlog: config.runtime.catch_up_backlog,
            }),
            sched_idle: executor.idle_control().cloned(),
        };
        // The worker's own loop (reading the log, batching, outcomes) runs
        // at the default priority when it may catch up, so that delivery's
        // bookkeeping keeps pace too; its plugin calls choose per call.
        let worker = if spec.catch_up.is_some() {
            self.shared.delivery.spawn(run_worker(spec, stop_rx))
        } else {
            executor.spawn(run_worker(spec, stop_rx))
        };
        // The executor lives as long as its worker.
        let task = tokio::spawn(async move {
            let _ = worker.await;
            drop(executor);
        });
        Ok(Running {
            plugin_hash: c.plugin.hash.clone(),
            config: c.config,
            transport,
            generation: 1,
            deploy: deploy_tx,
            paused: paused_tx,
            stop: stop_tx,
            task,
            stats,
            dead_letters,
        })
    }

    /// Publishes the sources of `config`, keeping the counters of those
    /// that stay.
    fn publish_sources(&self, config: &Config, previous: &[Arc<SourceStats>]) {
        let mut by_key = HashMap::new();
        let mut stats = Vec::new();
        for s in &config.sources {
            let st = previous.iter().find(|p| p.name == s.name).cloned().unwrap_or_else(|| {
                Arc::new(SourceStats {
                    name: s.name.clone(),
                    violations: ViolationLog::new(config.governance.violations_max_keys),
                    ..Default::default()
                })
            });
            stats.push(st.clone());
            let cors = Arc::new(Cors::new(s.cors.allowed_origins.as_deref()));
            let limiter = s
                .rate_limit
                .as_ref()
                .map(|r| Arc::new(RateLimiter::new(r.requests_per_second, r.burst.unwrap_or(r.requests_per_second))));
            let governance = SourceGovernance {
                plan: s.plan.clone().map(|p| (p, s.schema_settings.clone())),
                transforms: Transforms::compile(&s.transformations).unwrap_or_else(|_| {
                    // The config load refused any that does not compile.
                    tracing::error!(source = %s.name, "transformations do not compile: none applied");
                    Transforms::default()
                }),
                blocked_to: s.schema_settings.forwarding_blocked_events_to.as_deref().map(Arc::from),
                violations_to: s.schema_settings.forwarding_violations_to.as_deref().map(Arc::from),
            };
            let governance = (!governance.is_empty()).then(|| Arc::new(governance));
            let source = Source { name: Arc::from(s.name.as_str()), stats: st, cors, limiter, governance };
            by_key.insert(s.write_key.clone(), source);
        }
        self.shared.sources.store(Arc::new(by_key));
        if let Ok(mut s) = self.shared.metrics.sources.write() {
            *s = stats;
        }
    }

    fn publish_destinations(&self, running: &BTreeMap<String, Running>) {
        if let Ok(mut d) = self.shared.metrics.destinations.write() {
            *d = running.values().map(|r| r.stats.clone()).collect();
        }
    }

    /// Pauses (no new calls) or resumes `name`.
    ///
    /// # Errors
    ///
    /// [`ActionError::NotFound`] when no such destination runs.
    ///
    /// On a log other nodes share, the destination's consumer is paused for
    /// all of them (see [`Registry::follow_shared_pauses`]).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), ActionError> {
        let state = self.state.lock().await;
        let r = state.running.get(name).ok_or_else(|| ActionError::NotFound(name.to_owned()))?;
        self.shared.log.pause(name, paused).await?;
        r.stats.update_status(|s| s.paused = paused);
        let _ = r.paused.send(paused);
        Ok(())
    }

    /// Pauses or resumes the workers whose consumer another node paused or
    /// resumed on a shared log, so that every node shows (and keeps) the
    /// same state.
    pub async fn follow_shared_pauses(&self) {
        let state = self.state.lock().await;
        for (name, r) in &state.running {
            let Some(paused) = self.shared.log.paused(name) else { continue };
            if *r.paused.borrow() != paused {
                tracing::info!(destination = name.as_str(), paused, "pause changed on the shared log");
                r.stats.update_status(|s| s.paused = paused);
                let _ = r.paused.send(paused);
            }
        }
    }

    /// The dead letters of a running destination.
    pub async fn dead_letters(&self, name: &str) -> Option<Arc<DeadLetters>> {
        self.state.lock().await.running.get(name).map(|r| r.dead_letters.clone())
    }

    /// Destinations removed from the config whose events are still kept.
    pub async fn removed(&self) -> Vec<String> {
        let state = self.state.lock().await;
        self.shared.log.consumers().into_iter().filter(|n| !state.running.contains_key(n)).collect()
    }

    /// Warns about each destination removed from the config that still
    /// holds more than `threshold` bytes of the log (its undelivered
    /// events are kept until purged, so the log cannot shrink past them).
    pub async fn warn_removed_holding(&self, threshold: u64) {
        for name in self.removed().await {
            let bytes = self.shared.log.held_bytes(&name).unwrap_or(0);
            if bytes > threshold {
                let records = self.shared.log.backlog(&name).unwrap_or(0);
                RemovedDestinationHoldsLog { name: &name, bytes, records }.emit();
            }
        }
    }

    /// Forgets a removed destination: its cursor (so the log may delete the
    /// events it never delivered) and its dead letters.
    ///
    /// # Errors
    ///
    /// When the destination is still configured, unknown, or its files
    /// cannot be removed.
    pub async fn purge(&self, name: &str) -> Result<u64, ActionError> {
        let state = self.state.lock().await;
        if state.running.contains_key(name) {
            return Err(ActionError::Configured(name.to_owned()));
        }
        let Some(dropped) = self.shared.log.remove_consumer(name).await? else {
            return Err(ActionError::NotFound(name.to_owned()));
        };
        tracing::warn!(destination = name, dropped, "destination purged; its undelivered events are dropped");
        Ok(dropped)
    }

    /// Stops every worker: calls in flight finish and cursors are saved,
    /// for up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let mut state = self.state.lock().await;
        let mut tasks = std::mem::take(&mut state.stopping);
        for (_, r) in std::mem::take(&mut state.running) {
            let _ = r.stop.send(true);
            tasks.push(r.task);
        }
        let drained = tokio::time::timeout(grace, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "destinations did not finish within {grace:?}; unfinished events are redelivered after restart"
            );
        }
    }
}

/// Shows `plugin` as the destination's current version.
/// Shows the plugin version (and connector package) `c` runs in the
/// destination's status; says once what a connector asks for and is not
/// granted, since it runs without it.
fn set_plugin_status(stats: &DestinationStats, c: &Checked) {
    let plugin = &c.plugin;
    let loaded_ms =
        plugin.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let connector = c.config.installed.as_ref().map(|i| {
        if !i.ungranted.is_empty() {
            tracing::warn!(
                destination = %c.config.name,
                connector = %i.reference(),
                ungranted = %i.ungranted.join(", "),
                "the connector asks for more than this destination grants; it runs with only what is granted"
            );
        }
        crate::admin_api::ConnectorView {
            id: i.id.clone(),
            version: i.version.clone(),
            publisher: i.publisher.clone(),
            signature: i.signature.to_string(),
            ungranted: i.ungranted.clone(),
        }
    });
    stats.update_status(|s| {
        s.plugin_hash = plugin.hash.clone();
        s.plugin_contract = plugin.contract.clone();
        s.plugin_loaded_ms = loaded_ms;
        s.connector = connector;
    });
}
