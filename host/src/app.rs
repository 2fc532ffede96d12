//! Wires a [`Config`] into a running server: the log, the registry of
//! destinations, the tracking API and the admin API, each on the threads
//! [`crate::executor`] describes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_jetstream::JetStreamLog;
use switchyard_log::{EventLog, LocalLog, LogOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, LogBackend};
use crate::executor::{Executor, cores};
use crate::ingest::{Ingest, Sources};
use crate::metrics::Metrics;
use crate::registry::deploy::{hyper_transports, runtime_for};
use crate::registry::{Registry, Shared};
use crate::sink::LogSink;

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
    match config.log.backend {
        LogBackend::Embedded => {
            let log = open_embedded(&config)?;
            serve(config, log, shutdown).await
        }
        LogBackend::Jetstream => {
            let options = config.log.jetstream.options(&config.server.dedupe());
            let log = JetStreamLog::open(options).await.context("opening the JetStream log")?;
            serve(config, Arc::new(log), shutdown).await
        }
    }
}

/// The embedded log under `data_dir`.
fn open_embedded(config: &Config) -> anyhow::Result<Arc<LocalLog>> {
    let data = &config.server.data_dir;
    let log_opts = LogOptions {
        segment_bytes: config.server.log_segment_mb.max(1) * 1024 * 1024,
        fsync: true,
        min_free_bytes: config.server.min_free_disk_mb * 1024 * 1024,
    };
    Ok(Arc::new(LocalLog::open(data, log_opts, &config.server.dedupe()).context("opening the durable log")?))
}

/// Runs the server on `log` until `shutdown` resolves (see [`run`]).
async fn serve<L: EventLog>(
    config: Config,
    log: Arc<L>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime_for(&config)?);
    let metrics = Arc::new(Metrics::default());
    let sources: Sources = Arc::default();
    let tls = match &config.server.tls {
        Some(t) => Some(Arc::new(arc_swap::ArcSwap::new(crate::ingest::tls::load(&t.cert, &t.key)?))),
        None => None,
    };
    // The delivery workers' loops, and the calls of destinations that are
    // behind, run here at the default priority (see crate::executor).
    let delivery = Arc::new(Executor::new("delivery", cores()).context("starting the delivery threads")?);
    let shared = Shared {
        delivery,
        tls: tls.clone(),
        runtime,
        transports: hyper_transports(),
        log: log.clone(),
        metrics: metrics.clone(),
        sources: sources.clone(),
    };
    let registry = Registry::start(config.clone(), shared).await?;
    let ingest = Arc::new(Ingest {
        sources,
        sink: LogSink { log: log.clone() },
        metrics: metrics.clone(),
        max_request_bytes: config.server.max_request_bytes,
        max_event_bytes: config.server.max_event_bytes,
        public_url: config.server.public_url.clone(),
        tls,
    });

    // The tracking and admin APIs run on threads no plugin code runs on.
    let api = Executor::new("switchyard-api", config.server.api_threads.unwrap_or_else(cores))
        .context("starting the API threads")?;
    // The admin listener is bound first: once the tracking API accepts a
    // connection, /admin and /metrics are bound too (readiness probes and
    // tests poll the tracking port, then ask the admin API).
    let admin_listener = match config.server.admin_listen {
        Some(admin) => Some(bind(admin).with_context(|| format!("binding admin API to {admin}"))?),
        None => None,
    };
    let listener =
        bind(config.server.listen).with_context(|| format!("binding tracking API to {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let ledger = Arc::new(crate::audit::Ledger::open(&config.server.data_dir));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut servers = Vec::new();
    let (i, stop) = (ingest.clone(), http_stop_rx.clone());
    servers.push(api.spawn(async move { i.serve(TcpListener::from_std(listener)?, stop).await }));
    if let Some(listener) = admin_listener {
        tracing::info!(addr = %listener.local_addr()?, "admin API and /metrics listening");
        let state = Arc::new(crate::admin::AdminState {
            metrics: metrics.clone(),
            token: crate::admin_token::for_server(&config.server)?,
            log: log.clone(),
            registry: registry.clone(),
            stopping: stopping.clone(),
            ledger: ledger.clone(),
        });
        let stop = http_stop_rx.clone();
        servers
            .push(api.spawn(async move { crate::admin::serve(TcpListener::from_std(listener)?, state, stop).await }));
    }
    if config.server.watch {
        let debounce = Duration::from_millis(config.server.watch_debounce_ms);
        if let Err(e) = crate::watcher::spawn(registry.clone(), debounce, http_stop_rx.clone()) {
            tracing::warn!(error = %e, "cannot watch the config and plugins; reload with `switchyard reload`");
        }
    }
    let scheme = if config.server.tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, destinations = config.destinations.len(), "tracking API listening");
    if log.shared() {
        // Pauses made through other nodes of the shared log, applied here.
        let r = registry.clone();
        tokio::spawn(periodically(SHARED_PAUSES_EVERY, http_stop_rx.clone(), move || {
            let r = r.clone();
            async move { r.follow_shared_pauses().await }
        }));
    }
    // The audit's ledger, saved as it goes.
    let (l, m) = (ledger.clone(), metrics.clone());
    tokio::spawn(periodically(crate::audit::SAVE_EVERY, http_stop_rx.clone(), move || {
        save_ledger(&l, &m);
        std::future::ready(())
    }));
    // Removed destinations holding more than the threshold, warned about.
    let (r, threshold) = (registry.clone(), config.server.removed_destination_warn_mb * 1024 * 1024);
    tokio::spawn(periodically(REMOVED_CHECK_EVERY, http_stop_rx.clone(), move || {
        let r = r.clone();
        async move { r.warn_removed_holding(threshold).await }
    }));

    shutdown.await;
    tracing::info!("shutting down: no new requests; finishing in-flight work");
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = http_stop_tx.send(true);
    for server in servers {
        if let Ok(Err(e)) = server.await {
            tracing::warn!(error = %e, "server stopped with error");
        }
    }
    registry.shutdown(Duration::from_secs(30)).await;
    save_ledger(&ledger, &metrics);
    drop(ingest);
    drop(api);
    log.close();
    tracing::info!("stopped");
    Ok(())
}

fn save_ledger(ledger: &crate::audit::Ledger, metrics: &Metrics) {
    ledger.merge(&metrics.destinations(), chrono::Utc::now().timestamp_millis());
    if let Err(e) = ledger.save() {
        tracing::warn!(error = %e, "cannot save the audit ledger");
    }
}

/// Runs `work` every `period`, from start, until `shutdown` turns true.
async fn periodically<F, Fut>(period: Duration, shutdown: watch::Receiver<bool>, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    let mut every = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => work().await,
        }
    }
}

/// How often pauses made through other nodes of a shared log are applied.
const SHARED_PAUSES_EVERY: Duration = Duration::from_secs(1);

/// How often removed destinations that hold the log are warned about.
const REMOVED_CHECK_EVERY: Duration = Duration::from_secs(300);

/// A listening socket, not yet tied to a runtime: [`TcpListener::from_std`]
/// on the thread that serves it registers it with that runtime's reactor.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
