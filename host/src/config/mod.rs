//! The operator's config file: TOML, with `${ENV}` interpolation.
//!
//! [`Config::load`] reads, interpolates and validates a file in one go. It
//! reports every problem it finds, not only the first, each naming the
//! file, the line and the dotted key (`destinations[0].batch.max_events`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use switchyard_log::DedupeOptions;
use switchyard_runtime::capabilities::http::Origin;
use switchyard_runtime::redact::Redactor;
use switchyard_warehouse::WarehouseUrl;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

pub mod connector;
pub mod governance;

pub use connector::{Installed, RegistryConfig, TrustConfig};
pub use governance::{AuditConfig, GovernanceConfig, LoadedPlan};

use crate::ingest::settings::PublicUrl;
use crate::normalize::EventType;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line (1-based), where known.
    pub line: Option<usize>,
    /// The dotted key it is about, e.g. `destinations[0].batch.max_events`.
    pub key: Option<String>,
    pub message: String,
}

/// An invalid config file: every problem found, in file order, each
/// displayed on a line of its own as `file:line: key: message`.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    /// Never empty.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    fn new(path: &Path, problems: Vec<Problem>) -> ConfigError {
        ConfigError { path: path.to_owned(), problems }
    }

    /// The first problem's line.
    pub fn line(&self) -> Option<usize> {
        self.problems.first().and_then(|p| p.line)
    }

    /// The first problem's message.
    pub fn message(&self) -> &str {
        self.problems.first().map_or("", |p| p.message.as_str())
    }

    /// Each problem as `file:line: key: message` (`file: message` when
    /// neither is known).
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|p| {
            let line = p.line.map(|l| format!(":{l}")).unwrap_or_default();
            let key = p.key.as_ref().map(|k| format!(" {k}:")).unwrap_or_default();
            format!("{}{line}:{key} {}", self.path.display(), p.message)
        })
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// `[[trust]]`: the publisher keys connector packages may be signed by.
    #[serde(default)]
    pub trust: Vec<TrustConfig>,
    /// `[[registries]]`: OCI registries connectors are pulled from when
    /// they are not installed, in order.
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    /// `[governance]`: exposure events, audit rules.
    #[serde(default)]
    pub governance: GovernanceConfig,
    /// Those keys, read.
    #[serde(skip)]
    pub trusted: Vec<switchyard_connector::TrustedKey>,
    /// Every value that came from `${ENV}` interpolation: treated as secret.
    #[serde(skip)]
    pub redactor: Redactor,
    /// The file it was read from: reloads read it again.
    #[serde(skip)]
    pub path: PathBuf,
    /// Where each key is in that file, for messages about it.
    #[serde(skip)]
    keys: KeyLines,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Tracking API address.
    pub listen: SocketAddr,
    /// The tracking API's URL as clients see it (`https://ingest.example.com`,
    /// behind a proxy or TLS terminator); the settings answers point SDKs
    /// there. Default: the `Host` each request came to, over http.
    #[serde(deserialize_with = "public_url")]
    pub public_url: Option<PublicUrl>,
    /// TLS on the tracking listener: PEM certificate chain and key
    /// (relative to the config's folder), read again on every reload.
    pub tls: Option<TlsConfig>,
    /// Admin API and `/metrics` address.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for the admin API.
    pub admin_token: Option<String>,
    /// A file holding the admin token instead (relative to the config's
    /// folder): the server writes a random one there, readable by its user
    /// only, when the file does not exist; the CLI reads it. One of this
    /// and `admin_token`.
    pub admin_token_file: Option<PathBuf>,
    /// Durable log, cursors and the compiled-plugin cache.
    pub data_dir: PathBuf,
    /// Largest request body, after gzip inflation, in bytes.
    pub max_request_bytes: usize,
    /// Largest single event, in bytes.
    pub max_event_bytes: usize,
    /// Repeated `messageId`s within this window are dropped.
    pub dedupe_window_secs: u64,
    /// Most message ids remembered for dedupe (bounds its memory, ~40 B each).
    pub dedupe_max_ids: usize,
    /// Log segment size, MiB.
    pub log_segment_mb: u64,
    /// Watch the config file and plugins, and reload when they change.
    pub watch: bool,
    /// How long file changes must settle before a reload, ms.
    pub watch_debounce_ms: u64,
    /// Threads of the tracking and admin APIs, which no plugin code runs
    /// on (see [`crate::executor`]); default: one per core.
    pub api_threads: Option<usize>,
    /// Ingest answers 503 while less than this is free on `data_dir`'s
    /// filesystem, MiB, so that cursors, the dedupe journal and dead
    /// letters always have room; 0 turns the floor off.
    pub min_free_disk_mb: u64,
    /// Each destination persists its position at most this often, ms (and
    /// on shutdown); after a crash, what it delivered since is delivered
    /// again. 0 persists after every batch.
    pub cursor_commit_ms: u64,
    /// Warn when a destination removed from the config still holds more
    /// than this much of the log, MiB.
    pub removed_destination_warn_mb: u64,
}

impl ServerConfig {
    /// The dedupe window and bound, as the log backends take them.
    pub fn dedupe(&self) -> DedupeOptions {
        DedupeOptions { window: std::time::Duration::from_secs(self.dedupe_window_secs), max_ids: self.dedupe_max_ids }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            public_url: None,
            tls: None,
            admin_listen: None,
            admin_token: None,
            admin_token_file: None,
            data_dir: PathBuf::from("data"),
            // 512 KiB: analytics-ruby and analytics-java fill batches to
            // 512,000 bytes of events, then add the envelope.
            max_request_bytes: 512 * 1024,
            max_event_bytes: 32 * 1024,
            dedupe_window_secs: DedupeOptions::default().window.as_secs(),
            dedupe_max_ids: DedupeOptions::default().max_ids,
            log_segment_mb: 64,
            watch: true,
            watch_debounce_ms: 200,
            api_threads: None,
            min_free_disk_mb: 256,
            cursor_commit_ms: 100,
            removed_destination_warn_mb: 1024,
        }
    }
}

/// `[runtime]`: the Wasm engine, shared by all destinations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Plugin instances that may be alive at once (pooling allocator slots).
    pub max_instances: u32,
    /// Largest linear memory any one instance may grow to, in MiB. Each
    /// destination's `quota.memory_mb` must fit under it.
    pub max_memory_mb: u32,
    /// Memory, in MiB, an idle instance slot keeps resident and resets in
    /// place instead of handing back to the kernel (default 16): a plugin
    /// re-instantiated over and over (after traps) then costs no page
    /// faults. At most 16 idle slots keep it.
    pub memory_keep_resident_mb: u32,
    /// Nice value (0–19) of the threads that run destinations, so that the
    /// tracking API wins the cores when they are busy (see
    /// [`crate::executor`]); default 19, the lowest priority.
    pub destination_nice: i32,
    /// Whether those threads also take Linux's `SCHED_IDLE` policy: they
    /// run only on CPU time no other thread *of the machine* wants, and any
    /// other thread that wakes up preempts them at once, so a CPU-hungry
    /// plugin costs ingest latency least. On by default. On a host another
    /// process keeps busy that time can be almost none: a destination
    /// whose calls stall there for a second while its last call succeeded
    /// leaves `SCHED_IDLE` (keeping its nice value) until it has caught
    /// up (`delivery::LIFT_IDLE_AFTER`). `false`: nice value only.
    pub destination_idle: bool,
    /// A destination this many events behind the log's end whose calls
    /// succeed runs its plugin calls on the `delivery` threads (at the
    /// default priority, sharing the cores with the tracking API) instead
    /// of its own lowest-priority ones, so that under a sustained peak
    /// delivery keeps pace with ingest instead of building a backlog that
    /// only grows; ingest then accepts less. A destination whose calls
    /// fail (a plugin that spins, say) never does. 0 turns it off. Default
    /// 10000 (see [`crate::executor`]).
    pub catch_up_backlog: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 64,
            max_memory_mb: 512,
            memory_keep_resident_mb: 16,
            destination_nice: 19,
            destination_idle: true,
            catch_up_backlog: 10_000,
        }
    }
}

/// `[log]`: where accepted events wait for delivery.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `embedded` (the default): the durable log under `data_dir`, no
    /// server needed. `jetstream`: a NATS JetStream stream that several
    /// Switchyard nodes share (`[log.jetstream]`).
    pub backend: LogBackend,
    pub jetstream: JetStreamConfig,
}

/// `[log] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    #[default]
    Embedded,
    Jetstream,
}

/// `[log.jetstream]`: the cluster and the stream's shape (see the
/// `switchyard-jetstream` crate for what each does on the server).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// NATS servers, `nats://host:port`; one of a cluster suffices.
    pub servers: Vec<String>,
    /// A token the servers require (use `${ENV}`).
    pub token: Option<String>,
    /// The events stream (the others are named after it).
    pub stream: String,
    /// The first token of the subjects.
    pub subject_prefix: String,
    /// Replicas of the streams and consumers: 1, or 3 on a cluster.
    pub replicas: usize,
    /// Undelivered events older than this are deleted: keep it above the
    /// retry horizon plus the longest outage to tolerate, hours.
    pub max_age_hours: u64,
    /// The events stream's bound, MiB (0: none); at the bound ingest
    /// answers 503, never evicts an undelivered event.
    pub max_bytes_mb: u64,
    /// Subject partitions, by a hash of the user (fixed once created).
    pub partitions: u32,
    /// JetStream's own `Nats-Msg-Id` window, seconds.
    pub duplicate_window_secs: u64,
    /// `set` (default): repeats of a `messageId` are dropped across every
    /// node for `server.dedupe_window_secs`, each node holding the ids in
    /// memory (`server.dedupe_max_ids` of them) and sharing its additions
    /// through a stream. `lookup`: the same through one stream message per
    /// id, read before each publish (no memory on the nodes; a fifth of
    /// the throughput). `window`: only within `duplicate_window_secs`.
    /// Every node of a cluster must use the same.
    pub dedupe: JetStreamDedupe,
    /// Most ids `lookup`'s stream keeps (the window shortens when reached).
    pub dedupe_max_ids: i64,
    /// How long the server waits for an ack (progress acks extend it)
    /// before handing an event to another node, seconds.
    pub ack_wait_secs: u64,
    /// How long ingest keeps publishing an event again (same id) when the
    /// stream does not acknowledge it, before answering 503, ms.
    pub publish_timeout_ms: u64,
}

/// `[log.jetstream] dedupe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JetStreamDedupe {
    Set,
    Lookup,
    Window,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        let d = switchyard_jetstream::Options::default();
        JetStreamConfig {
            servers: d.servers,
            token: None,
            stream: d.stream,
            subject_prefix: d.subject_prefix,
            replicas: d.replicas,
            max_age_hours: d.max_age.as_secs() / 3600,
            max_bytes_mb: 0,
            partitions: d.partitions,
            duplicate_window_secs: d.duplicate_window.as_secs(),
            dedupe: JetStreamDedupe::Set,
            dedupe_max_ids: d.dedupe_max_ids,
            ack_wait_secs: d.ack_wait.as_secs(),
            publish_timeout_ms: u64::try_from(d.publish_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl JetStreamConfig {
    /// The backend's options; `dedupe` is `server`'s window and bound.
    pub fn options(&self, dedupe: &switchyard_log::DedupeOptions) -> switchyard_jetstream::Options {
        use std::time::Duration;
        switchyard_jetstream::Options {
            servers: self.servers.clone(),
            token: self.token.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            replicas: self.replicas,
            max_age: Duration::from_secs(self.max_age_hours * 3600),
            max_bytes: i64::try_from(self.max_bytes_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
            partitions: self.partitions,
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            dedupe: match self.dedupe {
                JetStreamDedupe::Set => switchyard_jetstream::Dedupe::Set,
                JetStreamDedupe::Lookup => switchyard_jetstream::Dedupe::Lookup,
                JetStreamDedupe::Window => switchyard_jetstream::Dedupe::Window,
            },
            dedupe_window: dedupe.window,
            dedupe_max_ids: self.dedupe_max_ids,
            dedupe_set_max_ids: dedupe.max_ids,
            ack_wait: Duration::from_secs(self.ack_wait_secs),
            publish_timeout: Duration::from_millis(self.publish_timeout_ms),
        }
    }
}

/// `[[sources]]`: who may send events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub write_key: String,
    /// Which web pages may send this source's events.
    #[serde(default)]
    pub cors: CorsConfig,
    /// Requests per second this source may send; over it, 429.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// A Segment Protocols tracking plan (JSON, relative to the config
    /// file) every event of this source is checked against.
    #[serde(default)]
    pub tracking_plan: Option<PathBuf>,
    /// The plan, compiled at load.
    #[serde(skip)]
    pub plan: Option<Arc<LoadedPlan>>,
    /// What the plan's violations do (Segment's Schema Configuration).
    #[serde(default)]
    pub schema_settings: switchyard_governance::SchemaSettings,
    /// `[[sources.transformations]]`: applied to every event of this
    /// source, after its tracking plan.
    #[serde(default)]
    pub transformations: Vec<switchyard_governance::TransformConfig>,
}

/// `rate_limit` of a source: a token bucket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_second: u32,
    /// Requests allowed at once after a quiet spell; default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `server.tls`: the tracking listener's certificate and key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `cors` of a source: the origins (`https://shop.example.com`) whose
/// pages may send its events. Absent: any origin, as Segment's API
/// allows; `allowed_origins = []`: no browser.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
}

/// `[[destinations]]`: where events go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    /// Path of the plugin `.wasm`, relative to the config file; for a
    /// `connector`, the installed component's (empty when not set).
    #[serde(default)]
    pub plugin: PathBuf,
    /// An installed connector package instead of a `plugin` file:
    /// `id@version-requirement`, e.g. `com.example.hook@^1.2`.
    #[serde(default)]
    pub connector: Option<String>,
    /// Runs a connector that no `[[trust]]` key signed (for development).
    #[serde(default)]
    pub allow_unsigned: bool,
    /// The connector package, resolved and verified at load.
    #[serde(skip)]
    pub installed: Option<Arc<Installed>>,
    /// Passed to the plugin's `init` as a JSON object.
    #[serde(default = "empty_table")]
    pub settings: toml::Table,
    /// Origins (`scheme://host[:port]`) the plugin may call.
    #[serde(default, deserialize_with = "origins")]
    pub allow_http: Vec<Origin>,
    /// The warehouse the plugin may load tables into: `postgres://…` or
    /// `sqlite:<dir>` (relative to the config file). None: the `warehouse`
    /// capability is not granted.
    #[serde(default)]
    pub warehouse: Option<WarehouseUrl>,
    #[serde(default)]
    pub subscribe: Subscribe,
    /// `[[destinations.filters]]`: Segment's destination filters (an FQL
    /// `if`, then drop, sample, drop or allow properties).
    #[serde(default)]
    pub filters: Vec<switchyard_governance::FilterConfig>,
    /// `[[destinations.transformations]]`: applied after its filters.
    #[serde(default)]
    pub transformations: Vec<switchyard_governance::TransformConfig>,
    /// The sources whose events it receives (Segment's connections);
    /// absent: every source.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Experiment exposures: `all` (default), `owner:sdk` (the vendor's SDK
    /// logs them itself: none are delivered), `owner:router` (delivered
    /// once per unit, experiment and variant per 24 h) or `dedupe:<window>`.
    #[serde(default)]
    pub exposures: switchyard_governance::ExposurePolicy,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub quota: QuotaConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Deliver each user's events in the order they were accepted, across
    /// failures and nodes: one call at a time (per partition on
    /// JetStream, each partition read by one node at a time), a failed
    /// event retried before anything after it. Slower; off by default.
    #[serde(default)]
    pub ordered: bool,
}

fn empty_table() -> toml::Table {
    toml::Table::new()
}

/// `subscribe`: which events a destination receives. Either a table,
/// `subscribe = { types = ["track"], if = "event = 'Order Completed'" }`,
/// or an FQL condition alone, `subscribe = "type = 'track'"` (as Segment's
/// Actions write subscriptions).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub types: BTreeSet<EventType>,
    /// An FQL condition an event must also satisfy.
    pub condition: Option<String>,
}

impl Default for Subscribe {
    fn default() -> Self {
        Subscribe { types: EventType::ALL.into_iter().collect(), condition: None }
    }
}

impl<'de> Deserialize<'de> for Subscribe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Subscribe, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default = "all_types")]
            types: BTreeSet<EventType>,
            #[serde(default, rename = "if")]
            condition: Option<String>,
        }

        fn all_types() -> BTreeSet<EventType> {
            EventType::ALL.into_iter().collect()
        }

        struct Form;

        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = Subscribe;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an FQL condition, or a table { types = [...], if = \"...\" }")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Subscribe, E> {
                Ok(Subscribe { types: all_types(), condition: Some(v.to_owned()) })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Subscribe, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Subscribe { types: t.types, condition: t.condition })
            }
        }

        deserializer.deserialize_any(Form)
    }
}

/// The largest batch a destination can be configured to take.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// `batch = { max_events, linger_ms }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_events: usize,
    pub linger_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_events: 100, linger_ms: 200 }
    }
}

/// `retry = { ... }`: how long and how often to retry a failing event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff, ms; it doubles per attempt (with ±50 % jitter).
    pub initial_backoff_ms: u64,
    /// Longest backoff, ms.
    pub max_backoff_ms: u64,
    /// After this long since the first failure, an event is dead-lettered.
    /// Segment's own horizon is four hours.
    pub horizon_secs: u64,
    /// Longest delay a plugin may ask for (`Retry-After`), ms; a longer
    /// request is cut to this.
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            horizon_secs: 4 * 3600,
            max_retry_after_ms: 900_000,
        }
    }
}

impl RetryConfig {
    /// The backoff before attempt `attempt + 1` (`attempt` ≥ 1), scaled by
    /// `jitter` in `[0, 1)` to ±50 %. Callers draw one jitter per failed
    /// batch, so events that failed together are retried together.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> std::time::Duration {
        let exp = self.initial_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
        let base = exp.min(self.max_backoff_ms) as f64;
        std::time::Duration::from_millis((base * (0.5 + jitter.clamp(0.0, 1.0))) as u64)
    }

    /// The retry horizon.
    pub fn horizon(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.horizon_secs)
    }
}

/// `quarantine = { ... }`: when a destination whose calls keep failing is
/// taken out of service, and how it is probed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Consecutive failed calls that quarantine the destination.
    pub after_failures: u32,
    /// First wait before a probe call, ms; it doubles per failed probe.
    pub initial_ms: u64,
    /// Longest wait between probes, ms.
    pub max_ms: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig { after_failures: 3, initial_ms: 5_000, max_ms: 600_000 }
    }
}

/// `quota = { ... }`: the sandbox limits of one destination.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Linear memory cap per instance, MiB.
    pub memory_mb: u32,
    /// CPU time per `deliver` or `init` call, ms.
    pub cpu_ms_per_call: u64,
    /// Wall-clock limit per call, including time waiting on HTTP, ms.
    pub call_timeout_ms: u64,
    /// Outbound HTTP request timeout, ms.
    pub http_timeout_ms: u64,
    /// Largest HTTP response body the plugin may receive, bytes.
    pub http_max_response_bytes: usize,
    /// Events per second; `None` is unlimited.
    pub events_per_second: Option<u32>,
    /// Batches in flight at once, each in its own instance. More than one
    /// lets batches finish out of order.
    pub max_concurrent_calls: usize,
    /// Outbound HTTP requests per second; `None` is unlimited. Past it, the
    /// call fails.
    pub http_requests_per_second: Option<u32>,
    /// Log lines per second; past it, the call fails.
    pub log_lines_per_second: u32,
    /// Log bytes per second; past it, the call fails.
    pub log_bytes_per_second: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            memory_mb: 64,
            cpu_ms_per_call: 1_000,
            call_timeout_ms: 30_000,
            http_timeout_ms: 10_000,
            http_max_response_bytes: 1024 * 1024,
            events_per_second: None,
            max_concurrent_calls: 2,
            http_requests_per_second: None,
            log_lines_per_second: 1_000,
            log_bytes_per_second: 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads, interpolates and validates the config at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem, each naming the file, line
    /// and key: unreadable file, TOML syntax, unknown keys, wrong types, an
    /// unset `${VAR}`, or an invalid value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(path, &read(path)?, &|name| std::env::var(name).ok())
    }

    /// As [`Config::load`], but destinations' `connector`s are left
    /// unresolved: for `switchyard connector install`, which fills the store
    /// a config names connectors from.
    ///
    /// # Errors
    ///
    /// As [`Config::load`], except for connector problems.
    pub fn load_for_install(path: &Path) -> Result<Config, ConfigError> {
        Config::parse_as(path, &read(path)?, &|name| std::env::var(name).ok(), false)
    }

    /// Parses config `text` (from `path`, for messages) with `env` for
    /// interpolation. Relative paths in the file resolve against the file's
    /// folder.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse_as(path, text, env, true)
    }

    fn parse_as(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        resolve_connectors: bool,
    ) -> Result<Config, ConfigError> {
        let (mut root, syntax) = DeTable::parse_recoverable(text);
        let keys = KeyLines::index(text, &root);
        if !syntax.is_empty() {
            // What the parser recovered is not what was meant: report the
            // syntax alone, one problem per line.
            let mut problems: Vec<Problem> = syntax
                .iter()
                .map(|e| {
                    let at = e.span().map(|s| s.start);
                    Problem {
                        line: at.map(|at| line_of(text, at)),
                        key: at.and_then(|at| keys.key_at(line_of(text, at), at)),
                        message: e.message().to_owned(),
                    }
                })
                .collect();
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            problems.dedup_by_key(|p| p.line);
            return Err(ConfigError::new(path, problems));
        }

        let mut redactor = Redactor::default();
        let mut problems = Vec::new();
        let mut interpolated = HashSet::new();
        for (k, v) in root.get_mut().iter_mut() {
            let key = push_key("", k.get_ref());
            let mut at = Interpolation {
                text,
                env,
                redactor: &mut redactor,
                problems: &mut problems,
                interpolated: &mut interpolated,
            };
            at.value(v, &key);
        }
        let (config, complete) = deserialize(root, text, &keys, &mut problems);
        if let Some(mut config) = config {
            config.redactor = redactor.clone();
            config.path = path.to_owned();
            config.keys = keys.clone();
            let base = path.parent().unwrap_or(Path::new("."));
            if config.server.data_dir.is_relative() {
                config.server.data_dir = base.join(&config.server.data_dir);
            }
            if let Some(f) = config.server.admin_token_file.as_mut().filter(|f| f.is_relative()) {
                *f = base.join(&*f);
            }
            if let Some(tls) = config.server.tls.as_mut() {
                for f in [&mut tls.cert, &mut tls.key] {
                    if f.is_relative() {
                        *f = base.join(&*f);
                    }
                }
            }
            for d in &mut config.destinations {
                if !d.plugin.as_os_str().is_empty() && d.plugin.is_relative() {
                    d.plugin = base.join(&d.plugin);
                }
                if let Some(w) = &mut d.warehouse {
                    w.resolve_against(base);
                }
            }
            // With a source or destination dropped for its errors, the
            // indices no longer match the file's.
            if complete {
                let (trusted, mut bad) = connector::trusted_keys(&config.trust, base);
                config.trusted = trusted;
                bad.extend(governance::load_plans(&mut config, base));
                bad.extend(governance::validate(&config));
                if resolve_connectors {
                    bad.extend(connector::resolve(&mut config, &interpolated));
                }
                bad.extend(config.validate());
                problems.extend(bad.into_iter().map(|(key, message)| Problem {
                    line: keys.line(&key),
                    key: Some(key),
                    message,
                }));
            }
            if problems.is_empty() {
                return Ok(config);
            }
        }
        // One problem per key: the first (an unset variable, say, and not
        // the type error its placeholder then causes).
        let mut seen = HashSet::new();
        problems.retain(|p| p.key.as_ref().is_none_or(|k| seen.insert(k.clone())));
        for p in &mut problems {
            p.message = redactor.redact(&p.message);
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(ConfigError::new(path, problems))
    }

    /// `file:line: key` for `key` of this config (at the line of the
    /// nearest enclosing key the file has), to name it in messages.
    pub fn locate(&self, key: &str) -> String {
        match self.keys.line(key) {
            Some(line) => format!("{}:{line}: {key}", self.path.display()),
            None => format!("{}: {key}", self.path.display()),
        }
    }

    /// [`Config::locate`] for the `settings` of destination `name`.
    pub fn locate_settings(&self, name: &str) -> String {
        match self.destinations.iter().position(|d| d.name == name) {
            Some(i) => self.locate(&format!("destinations[{i}].settings")),
            None => format!("{}: destination `{name}`", self.path.display()),
        }
    }

    /// Checks what the types alone cannot. Returns every problem, as the
    /// dotted key and the message.
    fn validate(&self) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        if !(0..=19).contains(&self.runtime.destination_nice) {
            bad.push(("runtime.destination_nice".to_owned(), "must be between 0 and 19".to_owned()));
        }
        if self.server.api_threads == Some(0) {
            bad.push(("server.api_threads".to_owned(), "must be at least 1".to_owned()));
        }
        if self.server.admin_token.is_some() && self.server.admin_token_file.is_some() {
            bad.push((
                "server.admin_token_file".to_owned(),
                "set admin_token or admin_token_file, not both".to_owned(),
            ));
        }
        let js = &self.log.jetstream;
        if js.servers.is_empty() {
            bad.push(("log.jetstream.servers".to_owned(), "name at least one server".to_owned()));
        }
        for (i, url) in js.servers.iter().enumerate() {
            if !switchyard_jetstream::is_server_url(url) {
                bad.push((format!("log.jetstream.servers[{i}]"), format!("`{url}` is not a NATS server URL")));
            }
        }
        if !(1..=5).contains(&js.replicas) {
            bad.push(("log.jetstream.replicas".to_owned(), "must be between 1 and 5".to_owned()));
        }
        if js.partitions == 0 || js.partitions > 1024 {
            bad.push(("log.jetstream.partitions".to_owned(), "must be between 1 and 1024".to_owned()));
        }
        for (key, name) in [("log.jetstream.stream", &js.stream), ("log.jetstream.subject_prefix", &js.subject_prefix)]
        {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                bad.push((key.to_owned(), "must be non-empty ASCII letters, digits, `-` or `_`".to_owned()));
            }
        }
        for (key, v) in [
            ("log.jetstream.max_age_hours", js.max_age_hours),
            ("log.jetstream.duplicate_window_secs", js.duplicate_window_secs),
            ("log.jetstream.ack_wait_secs", js.ack_wait_secs),
            ("log.jetstream.publish_timeout_ms", js.publish_timeout_ms),
        ] {
            if v == 0 {
                bad.push((key.to_owned(), "must be positive".to_owned()));
            }
        }
        let mut keys = HashSet::new();
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let mut fail = |field: &str, m: &str| {
                bad.push((format!("sources[{i}].{field}"), format!("source `{}`: {m}", s.name)));
            };
            if s.write_key.is_empty() {
                fail("write_key", "write_key is empty");
            } else if !keys.insert(&s.write_key) {
                fail("write_key", "write_key is used by another source");
            }
            if !names.insert(&s.name) {
                fail("name", "another source has this name");
            }
            if let Some(r) = &s.rate_limit
                && (r.requests_per_second == 0 || r.burst == Some(0))
            {
                fail("rate_limit", "rate_limit.requests_per_second and burst must be positive");
            }
            for (j, o) in s.cors.allowed_origins.iter().flatten().enumerate() {
                let (scheme, host) = o.split_once("://").unwrap_or(("", ""));
                if !matches!(scheme, "http" | "https") || host.is_empty() || host.trim_end_matches('/').contains('/') {
                    fail(&format!("cors.allowed_origins[{j}]"), "an origin is `https://host[:port]`, with no path");
                }
            }
        }
        let max_memory = self.runtime.max_memory_mb;
        let mut names = HashSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let mut fail = |field: &str, m: String| {
                bad.push((format!("destinations[{i}].{field}"), format!("destination `{}`: {m}", d.name)));
            };
            if d.name.is_empty() || !d.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                fail("name", "name must be non-empty ASCII letters, digits, `-` or `_`".into());
            } else if !names.insert(&d.name) {
                fail("name", "another destination has this name".into());
            }
            if d.batch.max_events == 0 || d.batch.max_events > MAX_BATCH_EVENTS {
                fail("batch.max_events", format!("batch.max_events must be between 1 and {MAX_BATCH_EVENTS}"));
            }
            if d.quota.memory_mb == 0 || d.quota.memory_mb > max_memory {
                fail(
                    "quota.memory_mb",
                    format!("quota.memory_mb must be between 1 and runtime.max_memory_mb ({max_memory})"),
                );
            }
            for (field, value) in [
                ("cpu_ms_per_call", Some(d.quota.cpu_ms_per_call)),
                ("call_timeout_ms", Some(d.quota.call_timeout_ms)),
                ("http_requests_per_second", d.quota.http_requests_per_second.map(u64::from)),
                ("log_lines_per_second", Some(d.quota.log_lines_per_second.into())),
                ("log_bytes_per_second", Some(d.quota.log_bytes_per_second.into())),
            ] {
                if value == Some(0) {
                    fail(&format!("quota.{field}"), format!("quota.{field} must be positive"));
                }
            }
            if d.quota.events_per_second == Some(0) {
                fail(
                    "quota.events_per_second",
                    "quota.events_per_second must be positive (leave it out for no limit)".into(),
                );
            }
            if d.quota.max_concurrent_calls == 0 || d.quota.max_concurrent_calls > 64 {
                fail("quota.max_concurrent_calls", "quota.max_concurrent_calls must be between 1 and 64".into());
            }
            let q = &d.quarantine;
            if q.after_failures == 0 {
                fail("quarantine.after_failures", "quarantine.after_failures must be positive".into());
            }
            if q.initial_ms == 0 {
                fail("quarantine.initial_ms", "quarantine.initial_ms must be positive".into());
            } else if q.max_ms < q.initial_ms {
                fail("quarantine.max_ms", "quarantine.max_ms must be at least quarantine.initial_ms".into());
            }
            if d.retry.initial_backoff_ms == 0 {
                fail("retry.initial_backoff_ms", "retry.initial_backoff_ms must be positive".into());
            } else if d.retry.max_backoff_ms < d.retry.initial_backoff_ms {
                fail("retry.max_backoff_ms", "retry.max_backoff_ms must be at least retry.initial_backoff_ms".into());
            }
            if d.subscribe.types.is_empty() {
                fail("subscribe.types", "subscribe.types is empty: the destination would receive nothing".into());
            }
            if let Some(condition) = &d.subscribe.condition
                && let Err(e) = switchyard_governance::Query::compile(condition)
            {
                fail("subscribe", format!("subscribe: FQL {e}"));
            }
            for (j, filter) in d.filters.iter().enumerate() {
                if let Err((_, e)) = switchyard_governance::Filters::compile(std::slice::from_ref(filter)) {
                    let field = match e {
                        switchyard_governance::filter::FilterError::Condition(_) => "if",
                        _ => "actions",
                    };
                    fail(&format!("filters[{j}].{field}"), format!("filters[{j}]: {e}"));
                }
            }
        }
        bad
    }
}

/// Deserializes `root` into a [`Config`], recording every type, unknown-key
/// and missing-key problem: after each, the offending entry is dropped (so
/// that its default applies) and deserializing starts again. Returns the
/// config when one could be made, and whether all of the file's sources
/// and destinations are in it (so that later problems can name their
/// indices).
fn deserialize(
    mut root: Spanned<DeTable<'_>>,
    text: &str,
    keys: &KeyLines,
    problems: &mut Vec<Problem>,
) -> (Option<Config>, bool) {
    // The file's index of each entry left in an array one was dropped from.
    let mut renumbered: HashMap<String, Vec<usize>> = HashMap::new();
    for _ in 0..100 {
        let e = match serde_path_to_error::deserialize::<_, Config>(toml::de::Deserializer::from(root.clone())) {
            Ok(config) => {
                let complete = !renumbered.keys().any(|k| k == "sources" || k == "destinations");
                return (Some(config), complete);
            }
            Err(e) => e,
        };
        let segments: Option<Vec<Seg>> = e
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } | serde_path_to_error::Segment::Enum { variant: key } => {
                    Some(Seg::Key(key.clone()))
                }
                _ => None,
            })
            .collect();
        let span_line = e.inner().span().map(|s| line_of(text, s.start));
        let Some(segments) = segments else {
            problems.push(Problem { line: span_line, key: None, message: e.inner().message().to_owned() });
            break;
        };
        let key = file_key(&segments, &renumbered);
        problems.push(Problem {
            line: keys.line(&key).or(span_line),
            key: (!key.is_empty()).then(|| key.clone()),
            message: e.inner().message().to_owned(),
        });
        let mut table = DeValue::Table(std::mem::take(root.get_mut()));
        let removed = remove(&mut table, &segments);
        if let DeValue::Table(t) = table {
            *root.get_mut() = t;
        }
        match (removed, segments.last()) {
            (None, _) => break,
            (Some(len), Some(Seg::Index(i))) => {
                let array = file_key(&segments[..segments.len() - 1], &renumbered);
                let left = renumbered.entry(array).or_insert_with(|| (0..len).collect());
                if *i < left.len() {
                    left.remove(*i);
                }
            }
            _ => {}
        }
    }
    (None, false)
}

/// One step of a path into the file's values.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The dotted key of `segments`, with array indices as in the file.
fn file_key(segments: &[Seg], renumbered: &HashMap<String, Vec<usize>>) -> String {
    let mut key = String::new();
    for s in segments {
        key = match s {
            Seg::Key(k) => push_key(&key, k),
            Seg::Index(i) => {
                let i = renumbered.get(&key).and_then(|left| left.get(*i)).copied().unwrap_or(*i);
                format!("{key}[{i}]")
            }
        };
    }
    key
}

/// Drops the entry at `segments` from `value`. Returns `None` when there is
/// none, else the length the array it was in had (0 for a table).
fn remove(value: &mut DeValue<'_>, segments: &[Seg]) -> Option<usize> {
    match (value, segments) {
        (DeValue::Table(t), [Seg::Key(k)]) => t.remove(k.as_str()).map(|_| 0),
        (DeValue::Array(a), [Seg::Index(i)]) if *i < a.len() => {
            let len = a.len();
            let mut kept = DeArray::new();
            for (j, item) in a.iter().enumerate() {
                if j != *i {
                    kept.push(item.clone());
                }
            }
            *a = kept;
            Some(len)
        }
        (DeValue::Table(t), [Seg::Key(k), rest @ ..]) if !rest.is_empty() => {
            remove(t.get_mut(k.as_str())?.get_mut(), rest)
        }
        (DeValue::Array(a), [Seg::Index(i), rest @ ..]) if !rest.is_empty() => remove(a.get_mut(*i)?.get_mut(), rest),
        _ => None,
    }
}

/// `path.key`, quoting `key` unless it is bare.
fn push_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if path.is_empty() { key } else { format!("{path}.{key}") }
}

/// The key enclosing `key`: `a.b[0]` for `a.b[0].c`, `a.b` for `a.b[0]`;
/// `None` for a top-level key.
fn parent(key: &str) -> Option<&str> {
    if key.ends_with(']') {
        return key.rfind('[').map(|at| &key[..at]);
    }
    let at = match key.strip_suffix('"') {
        Some(quoted) => quoted.rfind('"')?,
        None => key.rfind('.').map_or(0, |at| at + 1),
    };
    (at > 0).then(|| key[..at].trim_end_matches('.'))
}

/// Where each key of a config file is: dotted key (with array entries as
/// `[i]`) to its line and the byte offset it starts at.
#[derive(Debug, Clone, Default)]
struct KeyLines(Arc<BTreeMap<String, (usize, usize)>>);

impl KeyLines {
    fn index(text: &str, root: &Spanned<DeTable<'_>>) -> KeyLines {
        fn walk(text: &str, path: &str, value: &DeValue<'_>, out: &mut BTreeMap<String, (usize, usize)>) {
            match value {
                DeValue::Table(t) => {
                    for (k, v) in t.iter() {
                        let key = push_key(path, k.get_ref());
                        let at = k.span().start;
                        out.entry(key.clone()).or_insert((line_of(text, at), at));
                        walk(text, &key, v.get_ref(), out);
                    }
                }
                DeValue::Array(a) => {
                    for (i, v) in a.iter().enumerate() {
                        let key = format!("{path}[{i}]");
                        let at = v.span().start;
                        out.insert(key.clone(), (line_of(text, at), at));
                        walk(text, &key, v.get_ref(), out);
                    }
                }
                _ => {}
            }
        }
        let mut out = BTreeMap::new();
        for (k, v) in root.get_ref().iter() {
            let key = push_key("", k.get_ref());
            let at = k.span().start;
            out.insert(key.clone(), (line_of(text, at), at));
            walk(text, &key, v.get_ref(), &mut out);
        }
        KeyLines(Arc::new(out))
    }

    /// The line of `key`, or of the nearest key enclosing it that the file
    /// has (a key left to its default is not in the file).
    fn line(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some((line, _)) = self.0.get(key) {
                return Some(*line);
            }
            key = parent(key)?;
        }
    }

    /// Whether the file sets `key` itself.
    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The key on `line` that starts last before byte `at`.
    fn key_at(&self, line: usize, at: usize) -> Option<String> {
        self.0
            .iter()
            .filter(|(_, (l, start))| *l == line && *start <= at)
            .max_by_key(|(_, (_, start))| *start)
            .map(|(k, _)| k.clone())
    }
}

/// `${VAR}` interpolation over a config file's values.
struct Interpolation<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Every interpolated value, remembered as a secret.
    redactor: &'a mut Redactor,
    /// Each unset variable.
    problems: &'a mut Vec<Problem>,
    /// The dotted keys whose values came from the environment.
    interpolated: &'a mut HashSet<String>,
}

impl Interpolation<'_> {
    /// Replaces `${VAR}` in every string of `value` (at `key`), recording
    /// each unset variable as a problem and leaving it as it was.
    fn value(&mut self, value: &mut Spanned<DeValue<'_>>, key: &str) {
        let span: Range<usize> = value.span();
        match value.get_mut() {
            DeValue::String(s) if s.contains("${") => {
                self.interpolated.insert(key.to_owned());
                let mut out = String::with_capacity(s.len());
                let mut rest: &str = s;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let Some(end) = rest[start..].find('}') else {
                        out.push_str(&rest[start..]);
                        rest = "";
                        break;
                    };
                    let name = &rest[start + 2..start + end];
                    match (self.env)(name) {
                        Some(v) => {
                            self.redactor.add(&v);
                            out.push_str(&v);
                        }
                        None => {
                            let needle = format!("${{{name}}}");
                            let at = self
                                .text
                                .get(span.clone())
                                .and_then(|t| t.find(&needle))
                                .map_or(span.start, |o| span.start + o);
                            self.problems.push(Problem {
                                line: Some(line_of(self.text, at)),
                                key: Some(key.to_owned()),
                                message: format!("environment variable `{name}` is not set"),
                            });
                            out.push_str(&needle);
                        }
                    }
                    rest = &rest[start + end + 1..];
                }
                out.push_str(rest);
                *s = out.into();
            }
            DeValue::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    self.value(v, &format!("{key}[{i}]"));
                }
            }
            DeValue::Table(t) => {
                for (k, v) in t.iter_mut() {
                    self.value(v, &push_key(key, k.get_ref()));
                }
            }
            _ => {}
        }
    }
}

/// The config file's text, or the error naming it.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(path, vec![Problem { line: None, key: None, message: format!("cannot read: {e}") }])
    })
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// `server.public_url`, parsed.
fn public_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PublicUrl>, D::Error> {
    let url = String::deserialize(d)?;
    PublicUrl::parse(&url).map(Some).map_err(|e| serde::de::Error::custom(format!("public_url `{url}`: {e}")))
}

/// `allow_http`: each entry parsed as an [`Origin`].
fn origins<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Origin>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|o| Origin::parse(o).map_err(|e| serde::de::Error::custom(format!("allow_http entry `{o}`: {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let env = |k: &str| match k {
            "KEY" => Some("s3cret".to_owned()),
            _ => None,
        };
        Config::parse(Path::new("/etc/sy/switchyard.toml"), text, &env)
    }

    /// The README's governance example loads: its plan compiles, its
    /// settings and filters are valid (its connectors are not resolved:
    /// they need an installed store).
    #[test]
    fn the_governance_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/governance/switchyard.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let env = |k: &str| Some(format!("value-of-{k}"));
        let config = Config::parse_as(&path, &text, &env, false).unwrap_or_else(|e| panic!("{e}"));
        let web = &config.sources[0];
        assert_eq!(web.plan.as_ref().map(|p| p.plan.len()), Some(3));
        assert!(!web.schema_settings.track.allow_unplanned_events);
        assert_eq!(config.destinations[1].exposures, switchyard_governance::ExposurePolicy::OwnerSdk);
        assert_eq!(config.destinations[0].sources.as_deref(), Some(&["web".to_owned()][..]));
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9999"

[[sources]]
name = "web"
write_key = "${KEY}"

[[destinations]]
name = "hook"
plugin = "plugins/webhook.wasm"
settings = { url = "http://127.0.0.1:1/x", token = "Bearer ${KEY}" }
allow_http = ["http://127.0.0.1:1"]
subscribe = { types = ["track", "identify"] }
batch = { max_events = 10, linger_ms = 5 }
"#;

    #[test]
    fn parses_and_interpolates() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.sources[0].write_key, "s3cret");
        assert_eq!(c.destinations[0].settings["token"].as_str(), Some("Bearer s3cret"));
        assert_eq!(c.destinations[0].plugin, Path::new("/etc/sy/plugins/webhook.wasm"));
        assert_eq!(c.server.data_dir, Path::new("/etc/sy/data"));
        assert_eq!(c.destinations[0].subscribe.types.len(), 2);
        assert_eq!(c.redactor.redact("key is s3cret"), "key is [redacted]");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = parse("[server]\nlisten = \n").unwrap_err();
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.to_string().starts_with("/etc/sy/switchyard.toml:2: server.listen: "), "{e}");
    }

    #[test]
    fn unset_variable_names_line() {
        let e = parse("[[sources]]\nname = \"a\"\nwrite_key = \"${NOPE}\"\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(e.message().contains("`NOPE` is not set"), "{e}");
        assert_eq!(e.problems[0].key.as_deref(), Some("sources[0].write_key"), "{e}");
    }

    #[test]
    fn unknown_key_names_line() {
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(e.message().contains("unknown field `bogus`"), "{e}");
        assert_eq!(e.line(), Some(3), "{e}");
        assert_eq!(e.problems[0].key.as_deref(), Some("server.bogus"), "{e}");
    }

    /// The line of the first line of `text` containing `needle`.
    fn line(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).expect(needle) + 1
    }

    fn keys(e: &ConfigError) -> Vec<(Option<usize>, &str)> {
        e.problems.iter().map(|p| (p.line, p.key.as_deref().unwrap_or(""))).collect()
    }

    #[test]
    fn a_wrong_type_names_line_and_dotted_key() {
        let text = GOOD.replace("max_events = 10", "max_events = \"lots\"");
        let e = parse(&text).unwrap_err();
        let at = line(&text, "lots");
        assert_eq!(
            e.to_string(),
            format!(
                "/etc/sy/switchyard.toml:{at}: destinations[0].batch.max_events: invalid type: string \"lots\", \
                 expected usize"
            )
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = format!(
            "{GOOD}\
             [destinations.quota]\n\
             max_concurrent_calls = 0\n\
             \n\
             [[destinations]]\n\
             name = \"second\"\n\
             plugin = \"p.wasm\"\n\
             bogus = true\n\
             subscribe.types = [\"track\", \"purchase\"]\n\
             batch.max_events = -1\n\
             \n\
             [runtime]\n\
             destination_nice = 40\n\
             max_instances = \"many\"\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            keys(&e),
            [
                (Some(line(&text, "max_concurrent_calls")), "destinations[0].quota.max_concurrent_calls"),
                (Some(line(&text, "bogus")), "destinations[1].bogus"),
                (Some(line(&text, "purchase")), "destinations[1].subscribe.types[1]"),
                (Some(line(&text, "max_events = -1")), "destinations[1].batch.max_events"),
                (Some(line(&text, "destination_nice")), "runtime.destination_nice"),
                (Some(line(&text, "many")), "runtime.max_instances"),
            ],
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 6, "one problem per line: {e}");
        assert!(e.to_string().lines().all(|l| l.starts_with("/etc/sy/switchyard.toml:")), "{e}");
    }

    #[test]
    fn the_jetstream_log_section_is_parsed_and_its_bad_values_named() {
        let good = format!(
            "{GOOD}\n[log]\nbackend = \"jetstream\"\n\n[log.jetstream]\n\
             servers = [\"nats://10.0.0.1:4222\", \"10.0.0.2:4222\"]\nreplicas = 3\ndedupe = \"window\"\n"
        );
        let c = parse(&good).unwrap();
        assert_eq!(c.log.backend, LogBackend::Jetstream);
        let o = c.log.jetstream.options(&c.server.dedupe());
        assert_eq!((o.servers.len(), o.replicas, o.dedupe), (2, 3, switchyard_jetstream::Dedupe::Window));
        let set = parse(&good.replace("\"window\"", "\"set\"")).unwrap();
        assert_eq!(set.log.jetstream.options(&set.server.dedupe()).dedupe, switchyard_jetstream::Dedupe::Set);
        assert_eq!(JetStreamConfig::default().dedupe, JetStreamDedupe::Set, "the replicated set by default");
        assert_eq!(parse(GOOD).unwrap().log.backend, LogBackend::Embedded, "embedded by default");

        let bad = format!(
            "{GOOD}\n[log]\nbackend = \"kafka\"\n\n[log.jetstream]\nservers = [\"nats://\"]\nreplicas = 7\n\
             partitions = 0\nstream = \"a.b\"\nack_wait_secs = 0\n"
        );
        let e = parse(&bad).unwrap_err();
        assert_eq!(keys(&e)[0], (Some(line(&bad, "kafka")), "log.backend"), "{e}");
        let fixed = bad.replace("\"kafka\"", "\"jetstream\"");
        let e = parse(&fixed).unwrap_err();
        let named: Vec<&str> = keys(&e).into_iter().map(|(_, k)| k).collect();
        for key in [
            "log.jetstream.servers[0]",
            "log.jetstream.replicas",
            "log.jetstream.partitions",
            "log.jetstream.stream",
            "log.jetstream.ack_wait_secs",
        ] {
            assert!(named.contains(&key), "{key} not named: {e}");
        }
    }

    #[test]
    fn a_destination_missing_a_key_does_not_hide_the_next_ones_problems() {
        let text = "[[destinations]]\nplugin = \"a.wasm\"\n\n[[destinations]]\nname = \"b\"\nplugin = \"b.wasm\"\n\
                    batch = { linger_ms = \"soon\" }\n";
        let e = parse(text).unwrap_err();
        assert_eq!(keys(&e), [(Some(1), "destinations[0]"), (Some(7), "destinations[1].batch.linger_ms")], "{e}");
        assert!(e.message().contains("missing field `name`"), "{e}");
    }

    #[test]
    fn every_unset_variable_is_reported() {
        let text = "[server]\nadmin_token = \"${TOKEN}\"\n\n[[sources]]\nname = \"a\"\nwrite_key = \"${NOPE}\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(keys(&e), [(Some(2), "server.admin_token"), (Some(6), "sources[0].write_key")], "{e}");
        assert!(e.problems[1].message.contains("`NOPE` is not set"), "{e}");
    }

    #[test]
    fn every_syntax_error_is_reported() {
        let e =
            parse("[server]\nlisten = \"127.0.0.1:1\"\nwatch = tru\n\n[runtime]\nmax_instances = 1 2\n").unwrap_err();
        assert_eq!(keys(&e), [(Some(3), "server.watch"), (Some(6), "runtime.max_instances")], "{e}");
    }

    #[test]
    fn a_secret_in_a_wrong_type_is_redacted() {
        let text = GOOD.replace("max_events = 10", "max_events = \"${KEY}\"");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("destinations[0].batch.max_events"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn keys_are_located_for_messages_after_loading() {
        let c = parse(GOOD).unwrap();
        let at = line(GOOD, "settings =");
        assert_eq!(c.locate_settings("hook"), format!("/etc/sy/switchyard.toml:{at}: destinations[0].settings"));
        // A key the file leaves to its default: the line of what encloses it.
        let at = line(GOOD, "[[destinations]]");
        assert_eq!(
            c.locate("destinations[0].quota.memory_mb"),
            format!("/etc/sy/switchyard.toml:{at}: destinations[0].quota.memory_mb")
        );
        assert_eq!(parent("a.\"b.c\""), Some("a"));
        assert_eq!(parent("a[2]"), Some("a"));
        assert_eq!(parent("a"), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let r =
            RetryConfig { initial_backoff_ms: 100, max_backoff_ms: 1000, horizon_secs: 10, max_retry_after_ms: 1000 };
        assert_eq!(r.backoff(1, 0.5).as_millis(), 100);
        assert_eq!(r.backoff(1, 0.0).as_millis(), 50);
        assert_eq!(r.backoff(3, 0.5).as_millis(), 400);
        assert_eq!(r.backoff(3, 0.999).as_millis(), 599);
        assert_eq!(r.backoff(9, 0.5).as_millis(), 1000);
        assert_eq!(r.backoff(60, 0.0).as_millis(), 500);
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad_origin = GOOD.replace("allow_http = [\"http://127.0.0.1:1\"]", "allow_http = [\"ftp://x\"]");
        let e = parse(&bad_origin).unwrap_err();
        assert!(e.message().contains("allow_http"), "{e}");
        assert_eq!(e.problems[0].key.as_deref(), Some("destinations[0].allow_http"), "{e}");
        let bad_type = GOOD.replace("\"identify\"]", "\"purchase\"]");
        let e = parse(&bad_type).unwrap_err();
        assert!(e.message().contains("purchase"), "{e}");
        assert_eq!(e.problems[0].key.as_deref(), Some("destinations[0].subscribe.types[1]"), "{e}");
        let dup = format!("{GOOD}\n[[sources]]\nname = \"web2\"\nwrite_key = \"${{KEY}}\"\n");
        let e = parse(&dup).unwrap_err();
        assert!(e.message().contains("another source"), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "/etc/sy/switchyard.toml:{}: sources[1].write_key: source `web2`: write_key is used by another source",
                line(&dup, "name = \"web2\"") + 1
            )
        );
    }
}
