//! Turning a destination's config into something that runs: its sandbox
//! grants, and the one loader that compiles its plugin and checks that
//! `init` accepts its settings — used at start, by `switchyard validate`
//! and by every reload.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use switchyard_runtime::capabilities::Caller;
use switchyard_runtime::capabilities::http::{CalledOrigins, HttpCtx, HttpPolicy, HyperTransport, Transport};
use switchyard_runtime::capabilities::log::LogCtx;
use switchyard_runtime::capabilities::warehouse::WarehouseCtx;
use switchyard_runtime::redact::Redactor;
use switchyard_runtime::{CallError, EPOCH_TICK, Grants, Plugin, Runtime, RuntimeOptions};

use crate::config::{Config, DestinationConfig, Installed};
use crate::delivery::Subscription;
use crate::metrics::{DestinationStats, WarehouseStats};

/// Makes each destination's HTTP transport. A destination gets its own, so
/// its connections live on its own runtime (see [`crate::executor`]).
pub type TransportFactory = Arc<dyn Fn() -> Arc<dyn Transport> + Send + Sync>;

/// hyper's pooled client over TLS, one per destination.
pub fn hyper_transports() -> TransportFactory {
    Arc::new(|| Arc::new(HyperTransport::new()) as Arc<dyn Transport>)
}

/// Set to `1`, the server writes Linux `perf`'s map of compiled plugin
/// code (`/tmp/perf-<pid>.map`), so `perf record -p <pid>` then `perf
/// report` names plugin functions: how an integration author profiles a
/// plugin under real traffic.
pub const PERF_MAP_ENV: &str = "SWITCHYARD_PERF_MAP";

/// The Wasm runtime for `config`.
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
        keep_resident_bytes: config.runtime.memory_keep_resident_mb as usize * 1024 * 1024,
        perf_map: std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1"),
    })
}

/// A runtime for reading components outside a server (`plugin inspect`):
/// no pooling, its compiled cache in `cache_dir`.
///
/// # Errors
///
/// When the engine cannot be built.
pub fn inspecting_runtime(cache_dir: &std::path::Path) -> anyhow::Result<Runtime> {
    Runtime::new(&RuntimeOptions {
        cache_dir: cache_dir.to_owned(),
        max_instances: 1,
        max_memory_bytes: 64 * 1024 * 1024,
        pooling: false,
        epoch_interruption: true,
        keep_resident_bytes: 0,
        perf_map: false,
    })
}

/// A destination's sandbox grants from its config; its warehouse loads are
/// counted in `warehouse_stats`, the origins it calls recorded in `called`.
pub fn grants_for(
    d: &DestinationConfig,
    redactor: &Redactor,
    transport: Arc<dyn Transport>,
    warehouse_stats: Arc<WarehouseStats>,
    called: Arc<CalledOrigins>,
) -> Arc<Grants> {
    let policy = HttpPolicy {
        allow: d.allow_http.clone(),
        timeout: Duration::from_millis(d.quota.http_timeout_ms),
        max_response_bytes: d.quota.http_max_response_bytes,
    };
    let tick = EPOCH_TICK.as_millis() as u64;
    let q = &d.quota;
    Arc::new(Grants {
        caller: Caller { name: Arc::from(d.name.as_str()), redactor: redactor.clone() },
        http: HttpCtx::new(policy, transport, q.http_requests_per_second).recording_calls(called),
        log: LogCtx::new(q.log_lines_per_second, q.log_bytes_per_second),
        warehouse: WarehouseCtx {
            warehouse: d.warehouse.as_ref().map(|url| Arc::new(switchyard_warehouse::Warehouse::open(url))),
            telemetry: warehouse_stats,
        },
        memory_bytes: q.memory_mb as usize * 1024 * 1024,
        cpu_ticks: q.cpu_ms_per_call.div_ceil(tick).max(1),
        call_timeout: Duration::from_millis(q.call_timeout_ms),
    })
}

/// A destination's subscription: its sources and types, its FQL
/// condition, its filters, its exposure rule and its transformations,
/// compiled. The config load already refused any that does not compile;
/// should one fail here anyway, the destination receives nothing rather
/// than unfiltered events (filters keep personal data out).
///
/// The exposure dedupe cache lives in `stats`, so a reload that keeps the
/// destination's exposure rule keeps what it remembers.
pub fn subscription_for(config: &Config, d: &DestinationConfig, stats: &DestinationStats) -> Subscription {
    let mut s = Subscription::of_types(&d.name, d.subscribe.types.clone());
    s.sources = d.sources.as_ref().map(|list| list.iter().cloned().collect());
    if s.sources.is_none() {
        // Blocked events and violations go only where they are asked for.
        s.excluded_sources = forwarding_targets(config);
    }
    let condition = d.subscribe.condition.as_deref().map(switchyard_governance::Query::compile).transpose();
    let filters = switchyard_governance::Filters::compile(&d.filters);
    let transforms = switchyard_governance::Transforms::compile(&d.transformations);
    let registry = switchyard_governance::ExposureRegistry::new(&config.governance.exposure_events);
    match (condition, filters, transforms, registry) {
        (Ok(condition), Ok(filters), Ok(transforms), Ok(registry)) => {
            (s.condition, s.filters, s.transforms) = (condition, filters, transforms);
            if d.exposures != switchyard_governance::ExposurePolicy::All {
                let gate = stats.exposure_gate(d.exposures, config.governance.exposure_max_keys);
                s.exposures = Some((gate, Arc::new(registry)));
            }
        }
        _ => {
            tracing::error!(destination = %d.name, "subscription, filters or transformations do not compile: delivering nothing");
            s.types.clear();
        }
    }
    stats.audit.set_pii_fields(&config.governance.audit.pii_fields);
    s.prepare();
    s
}

/// The sources that receive other sources' blocked events or violations:
/// a destination that does not name its `sources` gets none of theirs.
pub fn forwarding_targets(config: &Config) -> BTreeSet<String> {
    config
        .sources
        .iter()
        .flat_map(|s| {
            let settings = &s.schema_settings;
            [&settings.forwarding_blocked_events_to, &settings.forwarding_violations_to]
        })
        .flatten()
        .cloned()
        .collect()
}

/// The settings table as the JSON object `init` receives.
pub fn settings_json(d: &DestinationConfig) -> String {
    // A TOML table always serializes to a JSON object.
    serde_json::to_string(&d.settings).unwrap_or_else(|_| "{}".into())
}

/// Why a destination's plugin cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The file is missing, is not a component, or not of a contract this
    /// host runs.
    #[error(transparent)]
    Load(#[from] switchyard_runtime::LoadError),
    /// Instantiating it or calling `init` failed (`init` refused the
    /// settings, trapped, or breached a quota).
    #[error("{path}: {error}")]
    Init { path: String, error: CallError },
    /// The component is not what its connector package's manifest says:
    /// another hash, another contract, or imports of capabilities the
    /// manifest does not ask for.
    #[error("{reference}: {message}")]
    Connector { reference: String, message: String },
    /// Loading panicked.
    #[error("loading panicked: {0}")]
    Panicked(String),
}

impl DeployError {
    /// Whether the plugin refused its settings (as opposed to trapping or
    /// breaching a quota in `init`).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            DeployError::Init { error: CallError::Init(_), .. } | DeployError::Load(_) | DeployError::Connector { .. }
        )
    }
}

/// A plugin loaded for a destination, with what its start-up check said.
pub struct Loaded {
    pub plugin: Plugin,
    /// `Err` when instantiating it or `init` failed.
    pub check: Result<(), DeployError>,
}

/// Loads `d`'s plugin (compiling off the async threads, or from the
/// compiled cache), instantiates it with `d`'s grants and calls `init` with
/// its settings.
///
/// # Errors
///
/// [`DeployError::Load`] when the plugin cannot be loaded; a failed `init`
/// is reported in [`Loaded::check`], since a running server still starts
/// such a destination (its calls fail and quarantine it).
pub async fn load(
    runtime: &Arc<Runtime>,
    config: &Config,
    d: &DestinationConfig,
    transport: Arc<dyn Transport>,
) -> Result<Loaded, DeployError> {
    let rt = runtime.clone();
    let path = d.plugin.clone();
    let plugin = tokio::task::spawn_blocking(move || rt.load(&path))
        .await
        .map_err(|e| DeployError::Panicked(e.to_string()))??;
    if let Some(installed) = &d.installed {
        matches_manifest(installed, &plugin)
            .map_err(|message| DeployError::Connector { reference: installed.reference(), message })?;
    }
    let grants = grants_for(d, &config.redactor, transport, Arc::default(), Arc::default());
    let check = async {
        let mut instance = plugin.instantiate(grants).await?;
        instance.init(&settings_json(d)).await
    }
    .await
    .map_err(|error| {
        let plugin = d.plugin.display();
        // A refusal names where the settings it refused are in the config.
        let path = match &error {
            CallError::Init(_) => format!("{}: {plugin}", config.locate_settings(&d.name)),
            _ => plugin.to_string(),
        };
        DeployError::Init { path, error }
    });
    Ok(Loaded { plugin, check })
}

/// Checks a connector's loaded component against its manifest: the bytes
/// loaded are the ones it pins, built for the contract it names, importing
/// no capability it does not ask for.
///
/// # Errors
///
/// The first mismatch, for a person.
pub fn matches_manifest(installed: &Installed, plugin: &Plugin) -> Result<(), String> {
    if plugin.hash != installed.sha256 {
        return Err(format!(
            "the component loaded has SHA-256 {}, not the {} its manifest pins: it was changed after install",
            plugin.hash, installed.sha256
        ));
    }
    let built = semver::Version::parse(&plugin.contract).ok();
    let named = &installed.contract;
    let compatible = built.as_ref().is_some_and(|b| b.major == named.major && (b.major > 0 || b.minor == named.minor));
    if !compatible {
        return Err(format!(
            "its manifest says contract {named}, but the component imports contract {}",
            plugin.contract
        ));
    }
    for capability in &plugin.capabilities {
        let asked = match capability.as_str() {
            "http" => installed.requests_http,
            "warehouse" => installed.requests_warehouse,
            _ => true,
        };
        if !asked {
            return Err(format!(
                "the component imports switchyard:destination/{capability}, which its manifest does not ask for \
                 (add it to [capabilities] in connector.toml)"
            ));
        }
    }
    Ok(())
}

/// Loads and checks `d`'s plugin; any failure is an error.
///
/// # Errors
///
/// A [`DeployError`] saying what failed.
pub async fn check(
    runtime: &Arc<Runtime>,
    config: &Config,
    d: &DestinationConfig,
    transport: Arc<dyn Transport>,
) -> Result<Plugin, DeployError> {
    let loaded = load(runtime, config, d, transport).await?;
    loaded.check.map(|()| loaded.plugin)
}

/// Checks every destination of `config` the way `switchyard validate`
/// does: each plugin loads and its `init` accepts its settings.
///
/// # Errors
///
/// Every destination that fails, named, one per line.
pub async fn validate(config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.server.data_dir)?;
    let runtime = Arc::new(runtime_for(config)?);
    let transports = hyper_transports();
    let mut failed = Vec::new();
    for d in &config.destinations {
        if let Err(e) = check(&runtime, config, d, transports()).await {
            failed.push(format!("destination `{}`: {e}", d.name));
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(anyhow::anyhow!("{}", failed.join("\n"))) }
}
