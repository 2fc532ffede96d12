//! A built component in the real sandbox, outside a server: what `plugin
//! run` and the conformance kit (`plugin test`) drive.
//!
//! The component is loaded by the same runtime, with the same grants
//! (deny-by-default WASI, the origins it may call, the quotas) a server
//! gives it; only the network is replaced: every HTTP request it makes is
//! recorded and answered from a script. It works for a component written
//! in any language, since it only speaks the contract.
//!
//! Events go through the tracking API's normalizer first, so the plugin
//! sees exactly what a server would hand it.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use switchyard_connector::manifest::origin_of;
use switchyard_connector::{Manifest, OriginRequest, Package};
use switchyard_runtime::capabilities::Caller;
use switchyard_runtime::capabilities::http::{HttpCtx, HttpPolicy, Origin, Transport, TransportError, TransportFuture};
use switchyard_runtime::capabilities::log::LogCtx;
use switchyard_runtime::capabilities::warehouse::WarehouseCtx;
use switchyard_runtime::redact::Redactor;
use switchyard_runtime::{CallError, EPOCH_TICK, Grants, Outcome, Plugin, Runtime};
use switchyard_types::Envelope;

use crate::config::QuotaConfig;
use crate::normalize::{BatchMeta, normalize};

/// One scripted answer to a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// Answer only after this long (past `http_timeout_ms`: a timeout).
    #[serde(default)]
    pub delay_ms: u64,
    /// Fail below HTTP instead: the connection was refused or reset.
    #[serde(default)]
    pub connection_error: bool,
}

fn ok() -> u16 {
    200
}

impl Answer {
    /// A plain answer with `status` and an empty JSON body.
    pub fn status(status: u16) -> Answer {
        Answer { status, headers: BTreeMap::new(), body: "{}".into(), delay_ms: 0, connection_error: false }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// A request the plugin made, as it reached the network.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The status it was answered with (`None`: a connection error).
    pub answered: Option<u16>,
}

/// Answers requests from a script, in order; the last answer repeats.
/// With an empty script every request gets a 200.
struct ScriptedTransport {
    answers: Mutex<VecDeque<Answer>>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

impl Transport for ScriptedTransport {
    fn send(&self, request: hyper::Request<Full<Bytes>>, _max_body: usize) -> TransportFuture {
        let answer = {
            let mut answers = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if answers.len() > 1 { answers.pop_front() } else { answers.front().cloned() }
        }
        .unwrap_or_else(|| Answer::status(200));
        let recorded = self.recorded.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Recorded {
                method: parts.method.to_string(),
                url: parts.uri.to_string(),
                headers,
                body,
                answered: (!answer.connection_error).then_some(answer.status),
            });
            if answer.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(answer.delay_ms)).await;
            }
            if answer.connection_error {
                return Err(TransportError::Connection("connection refused (scripted)".into()));
            }
            let mut response = hyper::Response::builder().status(answer.status);
            for (k, v) in &answer.headers {
                response = response.header(k, v);
            }
            response
                .body(Bytes::from(answer.body.clone()))
                .map_err(|e| TransportError::Connection(format!("scripted answer: {e}")))
        })
    }
}

/// What one `deliver` call did.
#[derive(Debug)]
pub struct Call {
    pub requests: Vec<Recorded>,
    pub result: Result<Vec<Outcome>, CallError>,
}

/// What is under test: a component, and the manifest when it came in a
/// package (or a crate with a `connector.toml`).
pub struct Subject {
    pub component: PathBuf,
    pub manifest: Option<Manifest>,
}

impl Subject {
    /// Reads `path`: a `.wasm`, or a directory with a `connector.toml`
    /// (a package, or a connector crate after `plugin build`).
    ///
    /// # Errors
    ///
    /// A manifest problem, or a directory without one.
    pub fn open(path: &Path) -> anyhow::Result<Subject> {
        if path.is_dir() {
            let package = Package::open(path)?;
            Ok(Subject { component: package.component_path(), manifest: Some(package.manifest) })
        } else {
            Ok(Subject { component: path.to_owned(), manifest: None })
        }
    }

    /// `id@version`, or the file name.
    pub fn label(&self) -> String {
        match &self.manifest {
            Some(m) => m.reference(),
            None => self.component.display().to_string(),
        }
    }
}

/// A loaded component and what every call grants it.
pub struct Harness {
    plugin: Plugin,
    settings: serde_json::Map<String, serde_json::Value>,
    pub allow: Vec<Origin>,
    pub quota: QuotaConfig,
    /// The values of settings marked `secret`: never to appear in a reason.
    pub secrets: Vec<String>,
    warehouse: Option<Arc<switchyard_warehouse::Warehouse>>,
    _runtime: Runtime,
}

impl Harness {
    /// Loads `subject` with `settings` (the manifest's defaults filled in),
    /// granting the origins its manifest asks for plus `allow`, a SQLite
    /// warehouse under `scratch` when it asks for one, and the default
    /// quotas raised to the manifest's limits.
    ///
    /// # Errors
    ///
    /// A component that does not load, or an origin that does not parse.
    pub fn new(
        subject: &Subject,
        settings: serde_json::Map<String, serde_json::Value>,
        allow: &[String],
        scratch: &Path,
    ) -> anyhow::Result<Harness> {
        let runtime = crate::registry::deploy::inspecting_runtime(&scratch.join("plugin-cache"))?;
        let plugin = runtime.load(&subject.component)?;
        let mut origins = Vec::new();
        for a in allow {
            origins.push(Origin::parse(a).map_err(|e| anyhow::anyhow!("--allow-http {a}: {e}"))?);
        }
        let mut quota = QuotaConfig::default();
        let mut secrets = Vec::new();
        let mut settings = settings;
        let mut warehouse = None;
        if let Some(m) = &subject.manifest {
            let toml_settings: toml::Table = serde_json::from_value(serde_json::Value::Object(settings.clone()))
                .context("settings must be a JSON object")?;
            let filled = switchyard_connector::settings::with_defaults(m, &toml_settings);
            settings = serde_json::to_value(&filled)?.as_object().cloned().unwrap_or_default();
            for o in &m.capabilities.http {
                let url = match o {
                    OriginRequest::Literal(url) => Some(url.clone()),
                    OriginRequest::FromSetting { setting } => {
                        settings.get(setting).and_then(|v| v.as_str()).map(str::to_owned)
                    }
                };
                if let Some(origin) = url.and_then(|u| origin_of(&u).ok()).and_then(|o| Origin::parse(&o).ok()) {
                    origins.push(origin);
                }
            }
            for (name, s) in &m.settings {
                if s.secret
                    && let Some(v) = settings.get(name).and_then(|v| v.as_str())
                {
                    secrets.push(v.to_owned());
                }
            }
            let l = &m.capabilities.limits;
            quota.memory_mb = l.memory_mb.unwrap_or(quota.memory_mb).max(quota.memory_mb);
            quota.call_timeout_ms = l.call_timeout_ms.unwrap_or(quota.call_timeout_ms).max(quota.call_timeout_ms);
            quota.http_requests_per_second = l.http_requests_per_second;
            if m.capabilities.warehouse {
                let dir = scratch.join("warehouse");
                warehouse = Some(Arc::new(switchyard_warehouse::Warehouse::open(
                    &switchyard_warehouse::WarehouseUrl::Sqlite(dir),
                )));
            }
        }
        origins.dedup();
        Ok(Harness { plugin, settings, allow: origins, quota, secrets, warehouse, _runtime: runtime })
    }

    /// The contract version the component was built against.
    pub fn contract(&self) -> &str {
        &self.plugin.contract
    }

    /// The component's SHA-256.
    pub fn hash(&self) -> &str {
        &self.plugin.hash
    }

    /// Whether the component imports `capability` (`http`, `warehouse`).
    pub fn imports(&self, capability: &str) -> bool {
        self.plugin.capabilities.iter().any(|c| c == capability)
    }

    /// A fresh instance: `init` with the settings, then one `deliver` of
    /// `events`, each request answered from `script`.
    ///
    /// # Errors
    ///
    /// When `init` fails (refused settings, trap): nothing was delivered.
    pub async fn call(
        &self,
        events: &[Arc<Envelope>],
        script: Vec<Answer>,
        quota: &QuotaConfig,
    ) -> Result<Call, CallError> {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let transport = ScriptedTransport { answers: Mutex::new(script.into()), recorded: recorded.clone() };
        let policy = HttpPolicy {
            allow: self.allow.clone(),
            timeout: Duration::from_millis(quota.http_timeout_ms),
            max_response_bytes: quota.http_max_response_bytes,
        };
        let tick = EPOCH_TICK.as_millis() as u64;
        let grants = Arc::new(Grants {
            // No redaction here: the kit must see a secret a plugin leaks.
            caller: Caller { name: Arc::from("under-test"), redactor: Redactor::default() },
            http: HttpCtx::new(policy, Arc::new(transport), quota.http_requests_per_second),
            log: LogCtx::new(quota.log_lines_per_second, quota.log_bytes_per_second),
            warehouse: WarehouseCtx { warehouse: self.warehouse.clone(), ..WarehouseCtx::default() },
            memory_bytes: quota.memory_mb as usize * 1024 * 1024,
            cpu_ticks: quota.cpu_ms_per_call.div_ceil(tick).max(1),
            call_timeout: Duration::from_millis(quota.call_timeout_ms),
        });
        let mut instance = self.plugin.instantiate(grants).await?;
        instance.init(&serde_json::Value::Object(self.settings.clone()).to_string()).await?;
        let result = instance.deliver(events).await;
        let requests = std::mem::take(&mut *recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        Ok(Call { requests, result })
    }
}

/// Normalizes events as the tracking API would: `text` is a JSON array, a
/// `{"batch": […]}` body, or one event per line (JSON lines).
///
/// # Errors
///
/// The first event the tracking API would refuse, by line or index.
pub fn read_events(path: &Path, text: &str) -> anyhow::Result<Vec<Arc<Envelope>>> {
    let whole: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let listed = match whole {
        Some(serde_json::Value::Array(a)) => Some(a),
        Some(serde_json::Value::Object(mut o)) => match o.remove("batch") {
            Some(serde_json::Value::Array(a)) => Some(a),
            _ => None,
        },
        _ => None,
    };
    let raws: Vec<(String, String)> = match listed {
        Some(list) => {
            list.iter().enumerate().map(|(i, v)| (format!("{}: event {i}", path.display()), v.to_string())).collect()
        }
        None => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (format!("{}:{}", path.display(), i + 1), l.to_owned()))
            .collect(),
    };
    normalize_all("plugin-run", raws)
}

/// Events as JSON values, normalized (for the kit's built-in cases).
///
/// # Errors
///
/// The first event the tracking API would refuse, by index.
pub fn envelopes(events: &[serde_json::Value]) -> anyhow::Result<Vec<Arc<Envelope>>> {
    normalize_all("conformance", events.iter().enumerate().map(|(i, e)| (format!("event {i}"), e.to_string())))
}

/// Normalizes (label, JSON text) pairs as from source `source`.
fn normalize_all(source: &str, raws: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Vec<Arc<Envelope>>> {
    let source: Arc<str> = Arc::from(source);
    let now = chrono::Utc::now();
    raws.into_iter()
        .map(|(at, raw)| {
            normalize(&raw, None, &BatchMeta::default(), now, &source)
                .map(Arc::new)
                .map_err(|e| anyhow::anyhow!("{at}: the tracking API would refuse this event: {e}"))
        })
        .collect()
}

/// `plugin run`: delivers the events in `events_file` in batches of
/// `batch`, answering requests from `script_file`, and prints each request
/// and each event's outcome. Secrets are printed as `[secret]`.
///
/// # Errors
///
/// Unreadable files, events the tracking API would refuse, or a component
/// that does not load or whose `init` refuses the settings.
pub async fn run(
    subject: &Path,
    events_file: &Path,
    script_file: Option<&Path>,
    settings: serde_json::Map<String, serde_json::Value>,
    allow: &[String],
    batch: usize,
) -> anyhow::Result<()> {
    let subject = Subject::open(subject)?;
    let scratch = super::TempDir::new()?;
    let harness = Harness::new(&subject, settings, allow, scratch.path())?;
    let text = std::fs::read_to_string(events_file).with_context(|| format!("reading {}", events_file.display()))?;
    let events = read_events(events_file, &text)?;
    let script: Vec<Answer> = match script_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{}: expected an array of answers", p.display()))?
        }
        None => Vec::new(),
    };
    let mut redactor = Redactor::default();
    for s in &harness.secrets {
        redactor.add(s);
    }
    let show = |s: &str| redactor.redact(s).replace("[redacted]", "[secret]");
    println!(
        "{} (contract {}), {} events in batches of {batch}; may call: {}",
        subject.label(),
        harness.contract(),
        events.len(),
        if harness.allow.is_empty() {
            "nothing".to_owned()
        } else {
            harness.allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    );
    let mut script = script;
    let (mut delivered, mut retried, mut rejected) = (0, 0, 0);
    for (n, chunk) in events.chunks(batch.max(1)).enumerate() {
        println!("\nbatch {} ({} events)", n + 1, chunk.len());
        // Each batch continues the script where the last one stopped.
        let call = harness
            .call(chunk, script.clone(), &harness.quota)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", subject.label(), show(&e.to_string())))?;
        let used = call.requests.len().min(script.len().saturating_sub(1));
        script.drain(..used);
        for r in &call.requests {
            let body = String::from_utf8_lossy(&r.body);
            let shown: String = body.chars().take(2000).collect();
            let more = if body.chars().count() > 2000 { " …" } else { "" };
            println!("  -> {} {} ({} bytes)", r.method, show(&r.url), r.body.len());
            for (k, v) in &r.headers {
                println!("     {k}: {}", show(v));
            }
            println!("     {}{more}", show(&shown));
            match r.answered {
                Some(status) => println!("  <- {status} (scripted)"),
                None => println!("  <- connection error (scripted)"),
            }
        }
        match call.result {
            Ok(outcomes) => {
                for (e, o) in chunk.iter().zip(&outcomes) {
                    let line = match o {
                        Outcome::Delivered => {
                            delivered += 1;
                            "delivered".to_owned()
                        }
                        Outcome::Retry { after, reason } => {
                            retried += 1;
                            match after {
                                Some(a) => format!("retry after {} ms: {}", a.as_millis(), show(reason)),
                                None => format!("retry: {}", show(reason)),
                            }
                        }
                        Outcome::Rejected(reason) => {
                            rejected += 1;
                            format!("rejected: {}", show(reason))
                        }
                    };
                    println!("  {} {:<8} {line}", e.message_id, e.kind.as_str());
                }
            }
            Err(e) => {
                retried += chunk.len();
                println!("  the call failed, so the whole batch would be retried: {}", show(&e.to_string()));
            }
        }
    }
    println!("\n{delivered} delivered, {retried} retried, {rejected} rejected");
    Ok(())
}
