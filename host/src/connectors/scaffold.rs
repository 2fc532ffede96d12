//! `switchyard plugin new` and `plugin build`: from nothing to a pinned,
//! checked component.
//!
//! `new` writes a crate that is also its package directory: `Cargo.toml`
//! (with the `plugin` build profile and a workspace of its own),
//! `src/lib.rs` (an HTTP destination with native unit tests),
//! `connector.toml`, a README and a `.gitignore`. `build` runs cargo for
//! `wasm32-wasip2`, copies the component next to the manifest, pins its
//! SHA-256 there and checks it against the manifest: the contract it was
//! built for and the capabilities it imports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use switchyard_connector::Package;
use switchyard_connector::manifest::MANIFEST_FILE;
use switchyard_connector::package::{pin, sha256_file};

const CARGO_TOML: &str = include_str!("template/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("template/lib.rs.tmpl");
const CONNECTOR_TOML: &str = include_str!("template/connector.toml.tmpl");
const README: &str = include_str!("template/README.md.tmpl");
const GITIGNORE: &str = include_str!("template/gitignore.tmpl");

/// Where the new crate gets the SDK from.
#[derive(Debug, Clone)]
pub enum SdkSource {
    /// crates.io, this host's version.
    Registry,
    /// A checkout of the SDK crate (`plugin-sdk/` in the Switchyard tree).
    Path(PathBuf),
}

/// What `plugin new` needs to know.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The crate's name, kebab-case (`acme-destination`).
    pub name: String,
    /// The connector id (reverse DNS); default `com.example.<name>`.
    pub id: Option<String>,
    pub publisher: Option<String>,
    pub sdk: SdkSource,
}

/// `plugin new`: writes the crate into `parent/<name>` and returns its
/// directory.
///
/// # Errors
///
/// A name that is not a crate name, a directory that exists, or a file
/// that cannot be written.
pub fn new(parent: &Path, spec: &NewPlugin) -> anyhow::Result<PathBuf> {
    let name = spec.name.as_str();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("`{name}` is not a crate name: lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already: plugin new never overwrites", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let id = spec.id.clone().unwrap_or_else(|| format!("com.example.{}", crate_name.replace('_', "-")));
    let type_name: String = name
        .split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    let title = name.split(['-', '_']).collect::<Vec<_>>().join(" ");
    let sdk = match &spec.sdk {
        SdkSource::Registry => format!("switchyard-plugin-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
        SdkSource::Path(p) => {
            let p = std::fs::canonicalize(p).with_context(|| format!("the SDK at {}", p.display()))?;
            format!("switchyard-plugin-sdk = {{ path = \"{}\" }}", p.display())
        }
    };
    let contract = switchyard_runtime::CONTRACT.rsplit('@').next().unwrap_or("0.2.0");
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{type}}", &type_name)
            .replace("{{title}}", &title)
            .replace("{{id}}", &id)
            .replace("{{publisher}}", spec.publisher.as_deref().unwrap_or("Example Inc."))
            .replace("{{sdk}}", &sdk)
            .replace("{{contract}}", contract)
    };
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    for (file, template) in [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        (MANIFEST_FILE, CONNECTOR_TOML),
        ("README.md", README),
        (".gitignore", GITIGNORE),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, fill(template)).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created {} ({id}), a crate and its connector package:", dir.display());
    println!("  cd {} && cargo test && switchyard plugin build && switchyard plugin test", dir.display());
    Ok(dir)
}

/// `plugin build`: builds the crate in `dir` for `wasm32-wasip2` with the
/// `plugin` profile, copies the component where `connector.toml` says,
/// pins its SHA-256 and checks it against the manifest.
///
/// # Errors
///
/// A failed build, no component produced, or a component that does not
/// match its manifest (another contract, an import it does not ask for).
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest = switchyard_connector::Manifest::parse(&manifest_path, &text)?;
    let started = std::time::Instant::now();
    eprintln!("building {} for wasm32-wasip2 (profile plugin)", manifest.reference());
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "--message-format",
            "json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running cargo (is a Rust toolchain with the wasm32-wasip2 target installed?)")?;
    let stdout = child.stdout.take().context("cargo's output")?;
    let mut wasm = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] == "compiler-artifact"
            && let Some(files) = msg["filenames"].as_array()
        {
            for f in files.iter().filter_map(|f| f.as_str()).filter(|f| f.ends_with(".wasm")) {
                wasm = Some(PathBuf::from(f));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let wasm = wasm.context("cargo built no .wasm: is the crate a cdylib (crate-type = [\"cdylib\", …])?")?;
    let component = dir.join(&manifest.component.path);
    std::fs::copy(&wasm, &component)
        .with_context(|| format!("copying {} to {}", wasm.display(), component.display()))?;
    let sha = sha256_file(&component)?;
    let pinned = pin(&text, &sha);
    if pinned != text {
        super::replace_file(&manifest_path, pinned.as_bytes())?;
    }
    let package = Package::open(dir)?;
    let scratch = super::TempDir::new()?;
    let runtime = crate::registry::deploy::inspecting_runtime(scratch.path())?;
    let plugin = runtime.load(&component)?;
    let installed = crate::config::Installed::of(&package.manifest, switchyard_connector::SignatureState::Unsigned);
    crate::registry::deploy::matches_manifest(&installed, &plugin)
        .map_err(|m| anyhow::anyhow!("{}: {m}", manifest_path.display()))?;
    let size = std::fs::metadata(&component).map(|m| m.len()).unwrap_or(0);
    println!(
        "built {} -> {} ({size} bytes, sha256 {sha}, contract {}, imports {}) in {:.1} s",
        manifest.reference(),
        component.display(),
        plugin.contract,
        if plugin.capabilities.is_empty() { "nothing".to_owned() } else { plugin.capabilities.join(", ") },
        started.elapsed().as_secs_f64()
    );
    Ok(component)
}
