//! The operator's config file: TOML, with `${ENV}` interpolation.
//!
//! [`Config::load`] reads, interpolates and validates a file in one go, and
//! every error names the file, and the line where there is one.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_log::DedupeOptions;
use switchyard_runtime::capabilities::http::Origin;
use switchyard_runtime::redact::Redactor;
use switchyard_warehouse::WarehouseUrl;

use crate::normalize::EventType;

/// An error in a config file, naming the file and (where known) the line.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// Every value that came from `${ENV}` interpolation: treated as secret.
    #[serde(skip)]
    pub redactor: Redactor,
    /// The file it was read from: reloads read it again.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Tracking API address.
    pub listen: SocketAddr,
    /// Admin API and `/metrics` address.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for the admin API.
    pub admin_token: Option<String>,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            admin_listen: None,
            admin_token: None,
            data_dir: PathBuf::from("data"),
            max_request_bytes: 500 * 1024,
            max_event_bytes: 32 * 1024,
            dedupe_window_secs: DedupeOptions::default().window.as_secs(),
            dedupe_max_ids: DedupeOptions::default().max_ids,
            log_segment_mb: 64,
            watch: true,
            watch_debounce_ms: 200,
            api_threads: None,
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
    /// other thread that wakes up preempts them at once. Best ingest
    /// latency beside a CPU-hungry plugin on a dedicated host; off by
    /// default, because on a shared host any busy process then stalls
    /// delivery outright (nice 19 still gives it a share).
    pub destination_idle: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 64,
            max_memory_mb: 512,
            memory_keep_resident_mb: 16,
            destination_nice: 19,
            destination_idle: false,
        }
    }
}

/// `[[sources]]`: who may send events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub write_key: String,
}

/// `[[destinations]]`: where events go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    /// Path of the plugin `.wasm`, relative to the config file.
    pub plugin: PathBuf,
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
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub quota: QuotaConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
}

fn empty_table() -> toml::Table {
    toml::Table::new()
}

/// `subscribe = { types = [...] }`: which events a destination receives.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Subscribe {
    pub types: BTreeSet<EventType>,
}

impl Default for Subscribe {
    fn default() -> Self {
        Subscribe { types: EventType::ALL.into_iter().collect() }
    }
}

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
    /// A [`ConfigError`] naming the file and line: unreadable file, TOML
    /// syntax, unknown keys, an unset `${VAR}`, or an invalid value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses config `text` (from `path`, for messages) with `env` for
    /// interpolation. Relative paths in the file resolve against the file's
    /// folder.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError { path: path.to_owned(), line, message };
        let mut value: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            err(line, e.message().to_owned())
        })?;
        let mut redactor = Redactor::default();
        for (_, v) in value.iter_mut() {
            interpolate(v, env, &mut redactor).map_err(|var| {
                let line = text.find(&format!("${{{var}}}")).map(|at| line_of(text, at));
                err(line, format!("environment variable `{var}` is not set"))
            })?;
        }
        // Re-serialize so serde errors carry spans into the original text.
        let mut config: Config = Config::deserialize(toml::Value::Table(value)).map_err(|e| {
            let line = find_key_line(text, &e.to_string());
            err(line, e.message().to_owned())
        })?;
        config.redactor = redactor;
        config.path = path.to_owned();
        let base = path.parent().unwrap_or(Path::new("."));
        if config.server.data_dir.is_relative() {
            config.server.data_dir = base.join(&config.server.data_dir);
        }
        for d in &mut config.destinations {
            if d.plugin.is_relative() {
                d.plugin = base.join(&d.plugin);
            }
            if let Some(w) = &mut d.warehouse {
                w.resolve_against(base);
            }
        }
        config.validate().map_err(|(needle, message)| {
            let line = needle.and_then(|n| text.find(&n)).map(|at| line_of(text, at));
            err(line, message)
        })?;
        Ok(config)
    }

    /// Checks what the types alone cannot. On error returns a snippet of the
    /// file to locate the line by, and the message.
    fn validate(&self) -> Result<(), (Option<String>, String)> {
        if !(0..=19).contains(&self.runtime.destination_nice) {
            return Err((Some("destination_nice".into()), "runtime.destination_nice must be between 0 and 19".into()));
        }
        if self.server.api_threads == Some(0) {
            return Err((Some("api_threads".into()), "server.api_threads must be at least 1".into()));
        }
        let mut keys = HashSet::new();
        let mut names = HashSet::new();
        for s in &self.sources {
            if s.write_key.is_empty() {
                return Err((Some(format!("\"{}\"", s.name)), format!("source `{}`: write_key is empty", s.name)));
            }
            if !keys.insert(&s.write_key) {
                return Err((
                    Some(format!("\"{}\"", s.name)),
                    format!("source `{}`: write_key is used by another source", s.name),
                ));
            }
            if !names.insert(&s.name) {
                return Err((Some(format!("\"{}\"", s.name)), format!("two sources are named `{}`", s.name)));
            }
        }
        let mut names = HashSet::new();
        for d in &self.destinations {
            let at = Some(format!("\"{}\"", d.name));
            let fail = |m: String| Err((at.clone(), format!("destination `{}`: {m}", d.name)));
            if d.name.is_empty() || !d.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return fail("name must be non-empty ASCII letters, digits, `-` or `_`".into());
            }
            if !names.insert(&d.name) {
                return fail("two destinations have this name".into());
            }
            if d.batch.max_events == 0 || d.batch.max_events > 10_000 {
                return fail("batch.max_events must be between 1 and 10000".into());
            }
            if d.quota.memory_mb == 0 || d.quota.memory_mb > self.runtime.max_memory_mb {
                return fail(format!(
                    "quota.memory_mb must be between 1 and runtime.max_memory_mb ({})",
                    self.runtime.max_memory_mb
                ));
            }
            if d.quota.cpu_ms_per_call == 0 || d.quota.call_timeout_ms == 0 {
                return fail("quota.cpu_ms_per_call and quota.call_timeout_ms must be positive".into());
            }
            if d.quota.max_concurrent_calls == 0 || d.quota.max_concurrent_calls > 64 {
                return fail("quota.max_concurrent_calls must be between 1 and 64".into());
            }
            if d.quota.http_requests_per_second == Some(0)
                || d.quota.log_lines_per_second == 0
                || d.quota.log_bytes_per_second == 0
            {
                return fail("quota rates (http_requests_per_second, log_*_per_second) must be positive".into());
            }
            if d.quarantine.after_failures == 0
                || d.quarantine.initial_ms == 0
                || d.quarantine.max_ms < d.quarantine.initial_ms
            {
                return fail(
                    "quarantine.after_failures and initial_ms must be positive, max_ms at least initial_ms".into(),
                );
            }
            if d.quota.events_per_second == Some(0) {
                return fail("quota.events_per_second must be positive (leave it out for no limit)".into());
            }
            if d.retry.initial_backoff_ms == 0 || d.retry.max_backoff_ms < d.retry.initial_backoff_ms {
                return fail("retry.initial_backoff_ms must be positive and at most retry.max_backoff_ms".into());
            }
            if d.subscribe.types.is_empty() {
                return fail("subscribe.types is empty: the destination would receive nothing".into());
            }
        }
        Ok(())
    }
}

/// Replaces `${VAR}` in every string of `value`. Returns the name of the first
/// unset variable. Interpolated values are remembered as secrets.
fn interpolate(
    value: &mut toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
    redactor: &mut Redactor,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let Some(end) = rest[start..].find('}') else {
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let name = &rest[start + 2..start + end];
                let v = env(name).ok_or_else(|| name.to_owned())?;
                redactor.add(&v);
                out.push_str(&v);
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            *s = out;
            Ok(())
        }
        toml::Value::Array(items) => items.iter_mut().try_for_each(|v| interpolate(v, env, redactor)),
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, v)| interpolate(v, env, redactor)),
        _ => Ok(()),
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// Serde errors after interpolation have no span; locate the line of the key
/// they name (`unknown field `foo``, `missing field `bar``) when it is in the
/// text.
fn find_key_line(text: &str, message: &str) -> Option<usize> {
    let key = message.split('`').nth(1)?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
                || l.contains(&format!("{key} ="))
                || l.contains(&format!("{key}="))
        })
        .map(|i| i + 1)
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
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().starts_with("/etc/sy/switchyard.toml:2: "), "{e}");
    }

    #[test]
    fn unset_variable_names_line() {
        let e = parse("[[sources]]\nname = \"a\"\nwrite_key = \"${NOPE}\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("`NOPE` is not set"), "{e}");
    }

    #[test]
    fn unknown_key_names_line() {
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
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
        assert!(parse(&bad_origin).unwrap_err().message.contains("allow_http"));
        let bad_type = GOOD.replace("\"identify\"]", "\"purchase\"]");
        let e = parse(&bad_type).unwrap_err();
        assert!(e.message.contains("purchase"), "{e}");
        let dup = format!("{GOOD}\n[[sources]]\nname = \"web2\"\nwrite_key = \"${{KEY}}\"\n");
        assert!(parse(&dup).unwrap_err().message.contains("another source"));
    }
}
