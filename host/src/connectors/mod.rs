//! The commands around connector packages: `switchyard plugin keygen |
//! sign | verify | pack | push | inspect` for the authors who publish them,
//! and `switchyard connector install | list` for the operators who run
//! them. Each prints what it did for a person; errors name the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use switchyard_connector::oci;
use switchyard_connector::package::{self, sha256_file};
use switchyard_connector::signing::{self, SIGNATURE_FILE};
use switchyard_connector::{OriginRequest, Package, SignatureState, Store, TrustedKey};

pub mod conformance;
pub mod harness;
pub mod scaffold;

use crate::config::Config;
use crate::config::connector::store_dir;

/// `plugin keygen`: writes a new key pair to `<prefix>.key` (the secret,
/// readable by its owner only) and `<prefix>.pub`.
///
/// # Errors
///
/// When either file exists already or cannot be written.
pub fn keygen(prefix: &Path) -> anyhow::Result<()> {
    let (secret_path, public_path) = (with_suffix(prefix, "key"), with_suffix(prefix, "pub"));
    for p in [&secret_path, &public_path] {
        if p.exists() {
            bail!("{} exists already: keygen never overwrites a key", p.display());
        }
    }
    let name = prefix.file_name().map_or_else(|| "switchyard".into(), |n| n.to_string_lossy().into_owned());
    let (secret, public) = signing::keygen(&name)?;
    write_private(&secret_path, secret.as_bytes())?;
    std::fs::write(&public_path, &public).with_context(|| format!("writing {}", public_path.display()))?;
    let key = TrustedKey::new(&name, &public, vec!["*".into()])?;
    println!("secret key: {} (keep it out of version control)", secret_path.display());
    println!("public key: {} (key id {})", public_path.display(), key.key_id());
    println!("operators trust it with:\n");
    println!("[[trust]]\nname = \"{name}\"\nkey = \"{}\"\nids = [\"<your id prefix>.\"]", public_line(&public));
    Ok(())
}

/// `plugin sign`: pins the component's SHA-256 in `dir/connector.toml`
/// (rewriting that one line when it changed) and signs the manifest with
/// the secret key at `key`.
///
/// # Errors
///
/// A manifest problem, a missing component, or an unreadable key.
pub fn sign(dir: &Path, key: &Path) -> anyhow::Result<()> {
    let manifest_path = dir.join(switchyard_connector::manifest::MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let secret = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    // Parsed before pinning (for the component path), again after.
    let before = switchyard_connector::Manifest::parse(&manifest_path, &text)?;
    let component = dir.join(&before.component.path);
    let sha = sha256_file(&component).with_context(|| format!("reading the component {}", component.display()))?;
    let pinned = package::pin(&text, &sha);
    if pinned != text {
        replace_file(&manifest_path, pinned.as_bytes())?;
        println!("pinned {} sha256 {sha}", before.component.path);
    }
    let package = Package::open(dir)?;
    let reference = package.manifest.reference();
    let signature = signing::sign(&package.manifest_bytes, &secret, &reference)
        .with_context(|| format!("signing with {}", key.display()))?;
    let sig_path = dir.join(SIGNATURE_FILE);
    replace_file(&sig_path, signature.as_bytes())?;
    println!("signed {reference} with key {} -> {}", signing::signature_key_id(&signature)?, sig_path.display());
    Ok(())
}

/// `plugin verify`: checks the package at `source` (a directory or a
/// tarball): the component against its pin, the signature against the
/// `[[trust]]` of `config` or the public key files `keys`.
///
/// # Errors
///
/// What does not verify, named.
pub fn verify(source: &Path, config: Option<&Config>, keys: &[PathBuf]) -> anyhow::Result<()> {
    let opened = Opened::new(source)?;
    let mut trusted = config.map(|c| c.trusted.clone()).unwrap_or_default();
    for k in keys {
        let text = std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?;
        trusted.push(TrustedKey::new(&k.display().to_string(), &text, vec!["*".into()])?);
    }
    if trusted.is_empty() {
        bail!("no keys to verify with: pass --key <file.pub> or --config with [[trust]]");
    }
    let state = opened.package.verify(&trusted, false)?;
    println!("{}: component sha256 matches; {state}", opened.package.manifest.reference());
    Ok(())
}

/// `plugin pack`: writes the package in `dir` as `<id>-<version>.tar.gz`
/// (into `out`, a file or a directory; the current one by default).
/// Refuses a stale pin, and an unsigned package unless `allow_unsigned`.
///
/// # Errors
///
/// A stale pin, a missing signature, or a file that cannot be written.
pub fn pack(dir: &Path, out: Option<&Path>, allow_unsigned: bool) -> anyhow::Result<PathBuf> {
    let package = Package::open(dir)?;
    package.check_component().context("run `switchyard plugin sign` after building the component")?;
    if package.signature.is_none() && !allow_unsigned {
        bail!(
            "{} is not signed: run `switchyard plugin sign` first (or pass --allow-unsigned for a development package)",
            package.manifest.reference()
        );
    }
    let name = format!("{}.tar.gz", package.folder_name());
    let out = match out {
        Some(o) if o.is_dir() => o.join(name),
        Some(o) => o.to_owned(),
        None => PathBuf::from(name),
    };
    package.pack(&out)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "packed {} -> {} ({size} bytes, sha256 {})",
        package.manifest.reference(),
        out.display(),
        sha256_file(&out)?
    );
    Ok(out)
}

/// `plugin inspect`: what a package (directory, tarball or OCI reference)
/// is and asks for — manifest, requested capabilities, settings schema,
/// signature and signer, and the contract and imports of its component
/// (compiled to read them).
///
/// # Errors
///
/// A package that cannot be read, or a component that does not load.
pub async fn inspect(source: &str, config: Option<&Config>) -> anyhow::Result<()> {
    let opened = Opened::any(source, config).await?;
    let p = &opened.package;
    let m = &p.manifest;
    println!("{} {} — {}", m.id, m.version, m.name);
    println!("publisher:  {}", m.publisher);
    if !m.description.is_empty() {
        println!("about:      {}", m.description);
    }
    for (label, value) in [("license", &m.license), ("homepage", &m.homepage), ("repository", &m.repository)] {
        if let Some(v) = value {
            println!("{:<11} {v}", format!("{label}:"));
        }
    }
    let pin = match p.check_component() {
        Ok(()) => "matches".to_owned(),
        Err(e) => format!("DOES NOT MATCH: {e}"),
    };
    println!("component:  {} (sha256 {}, {pin})", m.component.path, m.component.sha256);
    let runtime_dir = tempfile_dir()?;
    let runtime = crate::registry::deploy::inspecting_runtime(&runtime_dir)?;
    match runtime.load(&p.component_path()) {
        Ok(plugin) => {
            println!("contract:   manifest {}, component {}", m.contract, plugin.contract);
            println!(
                "imports:    {}",
                if plugin.capabilities.is_empty() { "nothing".into() } else { plugin.capabilities.join(", ") }
            );
        }
        Err(e) => println!("contract:   manifest {}; the component does not load: {e}", m.contract),
    }
    let _ = std::fs::remove_dir_all(&runtime_dir);
    println!("signature:  {}", signature_line(p, config));
    println!("asks for:");
    for line in requested(p) {
        println!("  {line}");
    }
    println!("settings (JSON Schema):");
    let schema = switchyard_connector::settings::json_schema(m);
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}

/// `plugin push`: uploads the package in `dir` (pinned; signed unless
/// `allow_unsigned`) to the OCI `reference` (`registry/repo:version`),
/// the tag defaulting to the package version.
///
/// # Errors
///
/// A stale pin, a missing signature, a tag that is not the version, or
/// what the registry answers.
pub async fn push(dir: &Path, reference: &str, access: &oci::Access, allow_unsigned: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let package = Package::open(dir)?;
    package.check_component().context("run `switchyard plugin sign` after building the component")?;
    if package.signature.is_none() && !allow_unsigned {
        bail!("{} is not signed: run `switchyard plugin sign` first", package.manifest.reference());
    }
    let version = package.manifest.version.to_string();
    let mut at = oci::parse_reference(reference)?;
    match at.tag() {
        _ if at.digest().is_some() => bail!("{reference}: push to a tag (the version), not a digest"),
        // `parse` fills in `latest` when no tag is written.
        Some("latest") if !reference.ends_with(":latest") => {
            at = oci::Reference::with_tag(at.registry().to_owned(), at.repository().to_owned(), version.clone());
        }
        Some(tag) if tag != version => {
            bail!("{reference}: the tag must be the package version ({version}), which operators resolve by semver")
        }
        _ => {}
    }
    let registry = oci::Registry::new(&at, access);
    let pushed = registry.push(&package, &at).await?;
    println!(
        "pushed {} -> {} in {} ms\n  component {} (application/wasm)\n  connector {} (referrer)",
        package.manifest.reference(),
        at.whole(),
        started.elapsed().as_millis(),
        pushed.component_digest,
        pushed.connector_digest
    );
    Ok(())
}

/// `connector install`: verifies the package at `source` (directory,
/// tarball or OCI reference) and copies it into `config`'s store (over the same version
/// with other contents when `replace`), then prints what it asks for and
/// the config that grants it: the permission review.
///
/// # Errors
///
/// A package that does not verify (tampered, badly signed), or a version
/// already installed with other contents.
pub async fn install(source: &str, config: &Config, replace: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let opened = Opened::any(source, Some(config)).await?;
    let p = &opened.package;
    // Installing an untrusted package is allowed (a destination refuses to
    // run it without allow_unsigned); installing a broken one is not.
    let state = p.verify(&config.trusted, true)?;
    let store = Store::new(&store_dir(&config.server.data_dir));
    let installed = store.install(p, replace)?;
    let m = &installed.manifest;
    println!(
        "installed {} ({}) into {} in {} ms",
        m.reference(),
        m.name,
        installed.dir.display(),
        started.elapsed().as_millis()
    );
    println!("signature: {state}");
    if !matches!(state, SignatureState::Signed(_)) {
        println!("  destinations refuse it unless they set allow_unsigned = true, or [[trust]] lists its key");
    }
    println!("it asks for:");
    for line in requested(&installed) {
        println!("  {line}");
    }
    println!("\nTo run it, grant what it needs in the config (nothing is granted unless written here):\n");
    println!("{}", grant_snippet(&installed));
    Ok(())
}

/// `connector list`: the installed packages and whether they verify.
///
/// # Errors
///
/// Never for a missing store (an empty list).
pub fn list(config: &Config) -> anyhow::Result<()> {
    let store = Store::new(&store_dir(&config.server.data_dir));
    let all = store.list();
    if all.is_empty() {
        println!("no connectors installed in {}", store.root().display());
    }
    for (id, version) in all {
        let reference: switchyard_connector::Reference = format!("{id}@={version}").parse()?;
        let line = match store.resolve(&reference) {
            Ok(p) => format!("{:<40} {}", p.manifest.reference(), signature_line(&p, Some(config))),
            Err(e) => format!("{id}@{version}: {e}"),
        };
        println!("{line}");
    }
    Ok(())
}

/// A package opened from a directory, or from a tarball unpacked into a
/// temporary directory that lives as long as this.
struct Opened {
    package: Package,
    _unpacked: Option<TempDir>,
}

impl Opened {
    /// A directory or tarball when `source` is a path, else an OCI
    /// reference pulled.
    async fn any(source: &str, config: Option<&Config>) -> anyhow::Result<Opened> {
        if Path::new(source).exists() { Opened::new(Path::new(source)) } else { Opened::pull(source, config).await }
    }

    /// Pulls an OCI reference, with the credentials of the `[[registries]]`
    /// entry on the same registry, if any.
    async fn pull(source: &str, config: Option<&Config>) -> anyhow::Result<Opened> {
        let at = oci::parse_reference(source).map_err(|e| anyhow::anyhow!("{source}: no such file, and {e}"))?;
        let access = config
            .into_iter()
            .flat_map(|c| &c.registries)
            .find(|r| r.host() == at.registry())
            .map(|r| r.access())
            .unwrap_or_default();
        let dir = TempDir(tempfile_dir()?);
        let package = oci::Registry::new(&at, &access).pull(&at, &dir.0).await?;
        println!("pulled {} from {}", package.manifest.reference(), at.whole());
        Ok(Opened { package, _unpacked: Some(dir) })
    }

    fn new(source: &Path) -> anyhow::Result<Opened> {
        if package::is_tarball(source) {
            let dir = TempDir(tempfile_dir()?);
            let folder = package::unpack(source, &dir.0)?;
            Ok(Opened { package: Package::open(&folder)?, _unpacked: Some(dir) })
        } else {
            Ok(Opened { package: Package::open(source)?, _unpacked: None })
        }
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temporary directory.
    fn new() -> anyhow::Result<TempDir> {
        Ok(TempDir(tempfile_dir()?))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The signature as `config`'s `[[trust]]` sees it (or just its key id).
fn signature_line(p: &Package, config: Option<&Config>) -> String {
    let Some(sig) = &p.signature else { return "unsigned".into() };
    let key_id = signing::signature_key_id(sig).unwrap_or_else(|e| e.to_string());
    match config {
        Some(c) => match p.verify(&c.trusted, false) {
            Ok(state) => state.to_string(),
            Err(e) => format!("key {key_id}: {e}"),
        },
        None => format!("by key {key_id} (not checked: pass --config to check it against [[trust]])"),
    }
}

/// What a package asks for, one phrase per line.
fn requested(p: &Package) -> Vec<String> {
    let c = &p.manifest.capabilities;
    let mut lines: Vec<String> = c.http.iter().map(|o| format!("HTTP to {o}")).collect();
    if c.warehouse {
        lines.push("a warehouse (tables it creates and loads)".into());
    }
    let l = &c.limits;
    for (what, v) in [
        ("memory_mb", l.memory_mb.map(u64::from)),
        ("call_timeout_ms", l.call_timeout_ms),
        ("http_requests_per_second", l.http_requests_per_second.map(u64::from)),
    ] {
        if let Some(v) = v {
            lines.push(format!("quota.{what} = {v}"));
        }
    }
    if lines.is_empty() {
        lines.push("nothing beyond logging".into());
    }
    for (name, s) in &p.manifest.settings {
        let mut flags = vec![s.kind.described().to_owned()];
        if s.required {
            flags.push("required".into());
        }
        if s.secret {
            flags.push("secret: from ${ENV}".into());
        }
        lines.push(format!("setting {name} ({})", flags.join(", ")));
    }
    lines
}

/// The `[[destinations]]` block granting what `p` asks for.
fn grant_snippet(p: &Package) -> String {
    let m = &p.manifest;
    let mut out = vec![
        "[[destinations]]".to_owned(),
        format!("name = \"{}\"", m.id.rsplit('.').next().unwrap_or("connector")),
        format!("connector = \"{}@^{}\"", m.id, m.version),
    ];
    let origins: Vec<String> = m
        .capabilities
        .http
        .iter()
        .map(|o| match o {
            OriginRequest::Literal(url) => format!("\"{url}\""),
            OriginRequest::FromSetting { setting } => format!("\"<the origin of settings.{setting}>\""),
        })
        .collect();
    if !origins.is_empty() {
        out.push(format!("allow_http = [{}]", origins.join(", ")));
    }
    if m.capabilities.warehouse {
        out.push("warehouse = \"postgres://…\"".into());
    }
    let settings: Vec<String> = m
        .settings
        .iter()
        .filter(|(_, s)| s.required || s.secret)
        .map(|(name, s)| {
            if s.secret { format!("{name} = \"${{{}}}\"", name.to_ascii_uppercase()) } else { format!("{name} = …") }
        })
        .collect();
    if !settings.is_empty() {
        out.push(format!("settings = {{ {} }}", settings.join(", ")));
    }
    out.join("\n")
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so a
/// reader sees the old file or the new one.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = with_suffix(path, &format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// The base64 line of a `.pub` file's text.
fn public_line(text: &str) -> &str {
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("untrusted comment")).unwrap_or("")
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
