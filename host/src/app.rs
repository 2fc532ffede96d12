//! Wires a [`Config`] into a running server: runtime, plugins, workers,
//! router, tracking API and the metrics listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::capabilities::http::{HttpCapability, HttpPolicy, HyperTransport, Origin, Transport};
use crate::config::{Config, DestinationConfig};
use crate::cursor::Cursors;
use crate::dedupe::Dedupe;
use crate::ingest::{Ingest, Sources};
use crate::log::{LogOptions, SegmentLog};
use crate::metrics::{Metrics, WarehouseStats};
use crate::quota::Rates;
use crate::redact::Redactor;
use crate::registry::Registry;
use crate::router::LogSink;
use crate::runtime::{CallError, EPOCH_TICK, Grants, Plugin, Runtime, RuntimeOptions};

/// The runtime for `config`.
///
/// # Errors
///
/// When the engine cannot be built.
pub fn runtime_for(config: &Config) -> anyhow::Result<Runtime> {
    Runtime::new(&RuntimeOptions {
        cache_dir: config.server.data_dir.join("plugin-cache"),
        max_instances: config.runtime.max_instances,
        max_memory_bytes: config.runtime.max_memory_mb as usize * 1024 * 1024,
        pooling: true,
        epoch_interruption: true,
    })
}

/// A destination's sandbox grants from its config; its warehouse loads are
/// counted in `warehouse_stats`.
pub fn grants_for(
    d: &DestinationConfig,
    redactor: &Redactor,
    transport: Arc<dyn Transport>,
    warehouse_stats: Arc<WarehouseStats>,
) -> Arc<Grants> {
    let allow = d.allow_http.iter().filter_map(|o| Origin::parse(o).ok()).collect();
    let policy = HttpPolicy {
        allow,
        timeout: Duration::from_millis(d.quota.http_timeout_ms),
        max_response_bytes: d.quota.http_max_response_bytes,
    };
    let tick = EPOCH_TICK.as_millis() as u64;
    Arc::new(Grants {
        name: Arc::from(d.name.as_str()),
        http: HttpCapability::new(policy, transport),
        memory_bytes: d.quota.memory_mb as usize * 1024 * 1024,
        cpu_ticks: d.quota.cpu_ms_per_call.div_ceil(tick).max(1),
        call_timeout: Duration::from_millis(d.quota.call_timeout_ms),
        redactor: redactor.clone(),
        rates: Rates::new(&d.quota),
        // The config checked the setting; PostgreSQL connects on first use.
        warehouse: d.warehouse.as_deref().and_then(|w| crate::warehouse::Warehouse::new(w).ok()).map(Arc::new),
        warehouse_stats,
    })
}

/// The settings table as the JSON object `init` receives.
pub fn settings_json(d: &DestinationConfig) -> String {
    serde_json::to_string(&d.settings).unwrap_or_else(|_| "{}".into())
}

/// Loads every destination's plugin and checks that `init` accepts its
/// settings, so a bad plugin or setting fails at start, naming it.
///
/// A plugin that traps (or breaches a quota) in that check fails the start
/// only when `strict` (`switchyard validate`); when running, the
/// destination starts anyway — its calls fail and quarantine it, while the
/// other destinations deliver and its events wait in the log.
///
/// # Errors
///
/// The first destination that cannot load, or whose `init` refuses its
/// settings (or, when `strict`, fails in any way).
pub async fn load_destinations(
    runtime: &Arc<Runtime>,
    config: &Config,
    transport: &Arc<dyn Transport>,
    strict: bool,
) -> anyhow::Result<Vec<(Plugin, Arc<Grants>)>> {
    let mut loaded = Vec::new();
    for d in &config.destinations {
        let rt = runtime.clone();
        let path = d.plugin.clone();
        let plugin = tokio::task::spawn_blocking(move || rt.load(&path))
            .await?
            .with_context(|| format!("destination `{}`", d.name))?;
        let grants = grants_for(d, &config.redactor, transport.clone(), Arc::default());
        let checked = match plugin.instantiate(grants.clone()).await {
            Ok(mut instance) => instance.init(&settings_json(d)).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => {
                tracing::info!(destination = %d.name, plugin = %d.plugin.display(), hash = &plugin.hash[..12], "destination ready");
            }
            Err(e @ CallError::Init(_)) => bail!("destination `{}`: {}: {e}", d.name, d.plugin.display()),
            Err(e) if strict => bail!("destination `{}`: {}: {e}", d.name, d.plugin.display()),
            Err(e) => tracing::error!(
                destination = %d.name,
                plugin = %d.plugin.display(),
                error = %e,
                "plugin failed its start-up check; its calls will fail and quarantine it while the others deliver"
            ),
        }
        loaded.push((plugin, grants));
    }
    Ok(loaded)
}

/// Runs the server until `shutdown` resolves, then shuts down gracefully:
/// stop accepting, finish in-flight requests and batches, save cursors.
///
/// While it runs, changes to the config file and plugins are applied
/// without a restart (see [`crate::registry`] and [`crate::watcher`]).
///
/// # Errors
///
/// When a listener cannot bind, the data dir is unusable, or a destination
/// cannot start.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let data = &config.server.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("creating data_dir {}", data.display()))?;
    let runtime = Arc::new(runtime_for(&config)?);
    let transport: Arc<dyn Transport> = Arc::new(HyperTransport::new());
    let loaded = load_destinations(&runtime, &config, &transport, false).await?;

    let log_opts = LogOptions { segment_bytes: config.server.log_segment_mb.max(1) * 1024 * 1024, fsync: true };
    let log = Arc::new(SegmentLog::open(&data.join("log"), log_opts).context("opening the durable log")?);
    let cursors = Cursors::open(&data.join("cursors")).context("opening cursors")?;
    let dedupe = Dedupe::open(
        &data.join("dedupe.journal"),
        Duration::from_secs(config.server.dedupe_window_secs),
        config.server.dedupe_max_ids,
    )
    .context("opening the dedupe journal")?;

    let metrics = Arc::new(Metrics::default());
    let sources: Sources = Arc::default();
    let registry = Registry::start(
        config.path.clone(),
        config.clone(),
        loaded.into_iter().map(|(plugin, _)| plugin).collect(),
        runtime,
        transport,
        log.clone(),
        cursors.clone(),
        metrics.clone(),
        sources.clone(),
    )?;
    let ingest = Arc::new(Ingest {
        sources,
        sink: LogSink { log: log.clone(), dedupe, duplicates: Arc::new(Default::default()) },
        metrics: metrics.clone(),
        max_request_bytes: config.server.max_request_bytes,
        max_event_bytes: config.server.max_event_bytes,
    });

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding tracking API to {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    servers.spawn(ingest.clone().serve(listener, http_stop_rx.clone()));
    if let Some(admin) = config.server.admin_listen {
        let listener = TcpListener::bind(admin).await.with_context(|| format!("binding admin API to {admin}"))?;
        tracing::info!(addr = %listener.local_addr()?, "admin API and /metrics listening");
        let state = Arc::new(crate::admin::AdminState {
            metrics: metrics.clone(),
            token: config.server.admin_token.clone(),
            log: log.clone(),
            cursors: cursors.clone(),
            registry: registry.clone(),
        });
        servers.spawn(crate::admin::serve(listener, state, http_stop_rx.clone()));
    }
    if config.server.watch {
        let debounce = Duration::from_millis(config.server.watch_debounce_ms);
        if let Err(e) = crate::watcher::spawn(registry.clone(), debounce, http_stop_rx) {
            tracing::warn!(error = %e, "cannot watch the config and plugins; reload with `switchyard reload`");
        }
    }
    tracing::info!(%addr, destinations = config.destinations.len(), "tracking API listening");

    shutdown.await;
    tracing::info!("shutting down: no new requests; finishing in-flight work");
    let _ = http_stop_tx.send(true);
    while let Some(r) = servers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "server stopped with error");
        }
    }
    registry.shutdown(Duration::from_secs(30)).await;
    drop(ingest);
    log.close();
    tracing::info!("stopped");
    Ok(())
}
