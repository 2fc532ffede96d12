//! Destinations that name an installed connector (`connector =
//! "com.example.hook@^1.2"`) instead of a `.wasm`: resolved against the
//! store in `data_dir/connectors`, verified against `[trust]`, their
//! settings checked against the manifest's schema, and their grants
//! reviewed against what the package asks for.
//!
//! The review follows one rule each way. A package that asks for more than
//! the destination grants starts with only what is granted, and says so at
//! start. A destination that grants something the package never asked for
//! is refused: a grant nobody asked for is a mistake, or an attempt.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_connector::manifest::origin_of;
use switchyard_connector::oci;
use switchyard_connector::{OriginRequest, Package, Reference, SignatureState, Store, StoreError, TrustedKey};
use switchyard_runtime::capabilities::http::Origin;

use super::{Config, DestinationConfig};
use crate::normalize::EventType;

/// `[[trust]]`: a publisher key the operator accepts, for which ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Who the key belongs to, for messages and `/admin/destinations`.
    pub name: String,
    /// The minisign public key (base64, the second line of a `.pub` file).
    #[serde(default)]
    pub key: Option<String>,
    /// Or a `.pub` file holding it (relative to the config file).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Id prefixes this key may sign, e.g. `["com.amplitude."]`; `["*"]`
    /// for any.
    pub ids: Vec<String>,
}

/// `[[registries]]`: where connectors missing from the store are pulled
/// from, as `<url>/<id>:<version>`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port]/path`, e.g. `registry.example.com/connectors`.
    pub url: String,
    /// Plain HTTP to a registry that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// Give it from the environment (`"${REGISTRY_PASSWORD}"`).
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Access` never shows the password.
        f.debug_struct("RegistryConfig").field("url", &self.url).field("access", &self.access()).finish()
    }
}

impl RegistryConfig {
    /// How to reach it.
    pub fn access(&self) -> oci::Access {
        oci::Access { insecure: self.insecure, username: self.username.clone(), password: self.password.clone() }
    }

    /// The registry's `host[:port]`.
    pub fn host(&self) -> &str {
        let url = self.url.strip_prefix("oci://").unwrap_or(&self.url);
        url.split('/').next().unwrap_or(url)
    }

    /// The repository of connector `id` in this registry.
    ///
    /// # Errors
    ///
    /// When `url` does not name a registry host.
    pub fn repository(&self, id: &str) -> Result<oci::Reference, oci::OciError> {
        let url = self.url.strip_prefix("oci://").unwrap_or(&self.url).trim_end_matches('/');
        oci::parse_reference(&format!("{url}/{id}:latest"))
    }
}

/// What a destination runs when it names a connector: the package as
/// resolved and verified at config load.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub id: String,
    pub version: String,
    pub name: String,
    pub publisher: String,
    pub signature: SignatureState,
    /// The component's SHA-256 the manifest pins (checked again on the
    /// bytes the runtime loads).
    pub sha256: String,
    /// The contract version the manifest says the component targets.
    pub contract: semver::Version,
    /// Whether the manifest asks for HTTP and for a warehouse: a component
    /// importing a capability its manifest does not ask for is refused.
    pub requests_http: bool,
    pub requests_warehouse: bool,
    /// What it asks for and the destination does not grant, as phrases
    /// ("HTTP to https://api.example.com:443").
    pub ungranted: Vec<String>,
    /// `[experimentation] exposure_events`.
    pub exposure_events: Vec<String>,
}

impl Installed {
    /// What `manifest` says, with no grant reviewed yet.
    pub fn of(m: &switchyard_connector::Manifest, signature: SignatureState) -> Installed {
        Installed {
            id: m.id.clone(),
            version: m.version.to_string(),
            name: m.name.clone(),
            publisher: m.publisher.clone(),
            signature,
            sha256: m.component.sha256.clone(),
            contract: m.contract.clone(),
            requests_http: !m.capabilities.http.is_empty(),
            requests_warehouse: m.capabilities.warehouse,
            ungranted: Vec::new(),
            exposure_events: m.experimentation.as_ref().map(|e| e.exposure_events.clone()).unwrap_or_default(),
        }
    }

    /// `id@version`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// The directory of installed connectors under `data_dir`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("connectors")
}

/// Reads `[[trust]]` into keys; problems as (dotted key, message).
pub(super) fn trusted_keys(trust: &[TrustConfig], base: &Path) -> (Vec<TrustedKey>, Vec<(String, String)>) {
    let mut keys = Vec::new();
    let mut bad = Vec::new();
    for (i, t) in trust.iter().enumerate() {
        let text = match (&t.key, &t.key_file) {
            (Some(k), None) => Ok(k.clone()),
            (None, Some(f)) => {
                let path = if f.is_relative() { base.join(f) } else { f.clone() };
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            _ => Err("set key or key_file (one of them)".to_owned()),
        };
        if t.ids.is_empty() {
            bad.push((format!("trust[{i}].ids"), "name the id prefixes this key may sign, or [\"*\"]".to_owned()));
        }
        match text.and_then(|text| TrustedKey::new(&t.name, &text, t.ids.clone()).map_err(|e| e.to_string())) {
            Ok(k) => keys.push(k),
            Err(m) => bad.push((format!("trust[{i}].key"), format!("trusted key `{}`: {m}", t.name))),
        }
    }
    (keys, bad)
}

/// Resolves every destination's `connector` (and checks that each names
/// a plugin or a connector). `interpolated` are the keys whose values came
/// from `${ENV}`. Returns every problem as (dotted key, message).
pub(super) fn resolve(config: &mut Config, interpolated: &HashSet<String>) -> Vec<(String, String)> {
    let store = Store::new(&store_dir(&config.server.data_dir));
    let mut bad = Vec::new();
    let keys = config.keys.clone();
    let trusted = config.trusted.clone();
    let registries = config.registries.clone();
    for (i, d) in config.destinations.iter_mut().enumerate() {
        let at = |field: &str| format!("destinations[{i}].{field}");
        match (&d.connector, d.plugin.as_os_str().is_empty()) {
            (Some(_), false) => {
                bad.push((at("connector"), format!("destination `{}`: set plugin or connector, not both", d.name)));
                continue;
            }
            (None, true) => {
                bad.push((
                    format!("destinations[{i}]"),
                    format!(
                        "destination `{}`: set plugin (a .wasm file) or connector (an installed package, \
                         `id@version`)",
                        d.name
                    ),
                ));
                continue;
            }
            (None, false) => continue,
            (Some(_), true) => {}
        }
        let has = |field: &str| keys.has(&at(field));
        if let Err(problems) = install(
            d,
            &store,
            &registries,
            &trusted,
            &|name| interpolated.contains(&at(&format!("settings.{name}"))),
            &has,
        ) {
            bad.extend(problems.into_iter().map(|(field, m)| (at(&field), format!("destination `{}`: {m}", d.name))));
        }
    }
    bad
}

/// Resolves `d.connector` in `store` and fills in `d`: the component's
/// path, settings with their defaults, the manifest's subscription and
/// batching where the file (`has`) sets none, and [`Installed`].
///
/// # Errors
///
/// Every problem as (field of the destination, message).
fn install(
    d: &mut DestinationConfig,
    store: &Store,
    registries: &[RegistryConfig],
    trusted: &[TrustedKey],
    from_env: &dyn Fn(&str) -> bool,
    has: &dyn Fn(&str) -> bool,
) -> Result<(), Vec<(String, String)>> {
    let one = |field: &str, m: String| vec![(field.to_owned(), m)];
    let written = d.connector.clone().unwrap_or_default();
    let reference: Reference =
        written.parse().map_err(|e: switchyard_connector::StoreError| one("connector", e.to_string()))?;
    let package = match store.resolve(&reference) {
        Ok(p) => p,
        Err(e @ (StoreError::NotInstalled { .. } | StoreError::NoMatch { .. })) if !registries.is_empty() => {
            pull(&reference, registries, store, trusted, d.allow_unsigned)
                .map_err(|pulling| one("connector", format!("{e}; {pulling}")))?
        }
        Err(e) => return Err(one("connector", e.to_string())),
    };
    let signature = package.verify(trusted, d.allow_unsigned).map_err(|e| {
        let hint = match e {
            switchyard_connector::PackageError::Unsigned { .. } => {
                " (sign it, or set allow_unsigned = true on this destination for development)"
            }
            switchyard_connector::PackageError::Signature { .. } => {
                " (add the publisher's key to [[trust]] if you trust it)"
            }
            _ => "",
        };
        one("connector", format!("{e}{hint}"))
    })?;
    let m = &package.manifest;
    let mut problems = Vec::new();

    for p in switchyard_connector::settings::validate(m, &d.settings) {
        let field =
            if d.settings.contains_key(&p.setting) { format!("settings.{}", p.setting) } else { "settings".into() };
        problems.push((field, format!("setting `{}` {}", p.setting, p.message)));
    }
    for (name, s) in &m.settings {
        if s.secret && d.settings.contains_key(name) && !from_env(name) {
            problems.push((
                format!("settings.{name}"),
                format!(
                    "setting `{name}` is a secret: give it from the environment (`{name} = \"${{{}}}\"`), \
                     never written in the file",
                    name.to_ascii_uppercase()
                ),
            ));
        }
    }
    let settings = switchyard_connector::settings::with_defaults(m, &d.settings);

    // What it asks for, against what the destination grants.
    let mut requested = Vec::new();
    for o in &m.capabilities.http {
        let url = match o {
            OriginRequest::Literal(url) => Some(url.clone()),
            OriginRequest::FromSetting { setting } => settings.get(setting).and_then(|v| v.as_str()).map(str::to_owned),
        };
        if let Some(origin) = url.and_then(|u| origin_of(&u).ok()).and_then(|o| Origin::parse(&o).ok()) {
            requested.push(origin);
        }
    }
    let asked = if requested.is_empty() {
        "no HTTP".to_owned()
    } else {
        requested.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    for (j, granted) in d.allow_http.iter().enumerate() {
        if !requested.contains(granted) {
            problems.push((
                format!("allow_http[{j}]"),
                format!("grants {granted}, which {} never asks for (it asks for: {asked})", m.reference()),
            ));
        }
    }
    let mut ungranted: Vec<String> =
        requested.iter().filter(|o| !d.allow_http.contains(o)).map(|o| format!("HTTP to {o}")).collect();
    match (m.capabilities.warehouse, d.warehouse.is_some()) {
        (false, true) => {
            problems.push(("warehouse".into(), format!("grants a warehouse, which {} never asks for", m.reference())))
        }
        (true, false) => ungranted.push("a warehouse".into()),
        _ => {}
    }
    let limits = &m.capabilities.limits;
    let q = &d.quota;
    for (what, asked, granted) in [
        ("quota.memory_mb", limits.memory_mb.map(u64::from), Some(u64::from(q.memory_mb))),
        ("quota.call_timeout_ms", limits.call_timeout_ms, Some(q.call_timeout_ms)),
        (
            "quota.http_requests_per_second",
            limits.http_requests_per_second.map(u64::from),
            q.http_requests_per_second.map(u64::from),
        ),
    ] {
        if let (Some(asked), Some(granted)) = (asked, granted)
            && asked > granted
        {
            ungranted.push(format!("{what} = {asked} (granted {granted})"));
        }
    }

    if !has("subscribe")
        && let Some(types) = &m.defaults.subscribe
    {
        d.subscribe.types = types
            .iter()
            .filter_map(|t| serde_json::from_value::<EventType>(serde_json::Value::String(t.clone())).ok())
            .collect();
    }
    if !has("batch")
        && let Some(b) = &m.defaults.batch
    {
        d.batch.max_events = b.max_events;
        d.batch.linger_ms = b.linger_ms;
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    d.settings = settings;
    d.plugin = package.component_path();
    d.installed = Some(std::sync::Arc::new(Installed { ungranted, ..Installed::of(m, signature) }));
    Ok(())
}

/// Pulls the highest version matching `reference` from the first of
/// `registries` that has one, verifies it and installs it in `store`.
/// Runs on a thread of its own with its own runtime, so config loading
/// stays synchronous wherever it is called from.
///
/// # Errors
///
/// What each registry answered, or why the pulled package was refused.
fn pull(
    reference: &Reference,
    registries: &[RegistryConfig],
    store: &Store,
    trusted: &[TrustedKey],
    allow_unsigned: bool,
) -> Result<Package, String> {
    let pulling = async {
        let mut answers = Vec::new();
        for r in registries {
            let attempt = async {
                let repository = r.repository(&reference.id)?;
                let registry = oci::Registry::new(&repository, &r.access());
                let at = registry.resolve(&repository, &reference.requirement).await?;
                let staging = store.root().join(".pulls");
                std::fs::create_dir_all(&staging)
                    .map_err(|e| oci::OciError::Io { path: staging.clone(), message: e.to_string() })?;
                let pulled = registry.pull(&at, &staging).await?;
                let result = pulled.verify(trusted, allow_unsigned).map_err(oci::OciError::from).and_then(|_| {
                    store
                        .install(&pulled, false)
                        .map_err(|e| oci::OciError::Io { path: store.root().to_owned(), message: e.to_string() })
                });
                let _ = std::fs::remove_dir_all(&pulled.dir);
                let installed = result?;
                tracing::info!(connector = %installed.manifest.reference(), from = %at.whole(), "pulled connector");
                Ok::<Package, oci::OciError>(installed)
            };
            match attempt.await {
                Ok(p) => return Ok(p),
                Err(e) => answers.push(format!("registry {}: {e}", r.url)),
            }
        }
        Err(answers.join("; "))
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime to pull: {e}"))?;
            rt.block_on(pulling)
        })
        .join()
        .unwrap_or_else(|_| Err("pulling panicked".into()))
    })
}
