//! The `switchyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard::config::Config;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Segment-compatible event router with WebAssembly destinations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Run {
        /// The config file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file: syntax, values, and that every plugin loads and
    /// accepts its settings. Prints every problem, one per line, each with
    /// its file, line and key.
    Validate {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Show each destination's state (active or quarantined, and why),
    /// backlog and deliveries (through the running server's admin API).
    Status {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Replay all of a destination's dead letters, with progress (the same
    /// as `dead-letters --replay`).
    Replay {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long, short)]
        destination: String,
    },
    /// Reload the config file and plugins of the running server (it also
    /// reloads by itself when they change on disk).
    Reload {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Pause a destination: no new calls; its events wait in the log.
    Pause {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long, short)]
        destination: String,
    },
    /// Resume a paused destination.
    Resume {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long, short)]
        destination: String,
    },
    /// Drop the undelivered events and dead letters of a destination that
    /// was removed from the config.
    Purge {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long, short)]
        destination: String,
    },
    /// Author connector packages: keys, signing, packing, inspecting.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Install connector packages into the store a config runs them from.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// List a destination's dead letters, or replay them (through the admin
    /// API of the running server named in the config).
    DeadLetters {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// The destination.
        #[arg(long, short)]
        destination: String,
        /// Replay them all instead of listing them.
        #[arg(long)]
        replay: bool,
    },
    /// What a source's tracking plan found: violations by event, field and
    /// kind, with counts, when last seen and example payloads.
    Violations {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// The source.
        #[arg(long, short)]
        source: String,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Audit destinations and sources: orphaned destinations, PII their
    /// filters let through, grants never used, removed destinations still
    /// holding events, sources without a tracking plan.
    Audit {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
        /// Exit with an error when anything is found (for CI and cron).
        #[arg(long)]
        fail_on_findings: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a connector crate from the template: a destination that
    /// builds for wasm32-wasip2 and passes its tests, with its manifest.
    New {
        /// The crate name, e.g. `acme-destination`.
        name: String,
        /// The connector id (reverse DNS); default `com.example.<name>`.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        publisher: Option<String>,
        /// Use the SDK at this path (a Switchyard checkout's `plugin-sdk`)
        /// instead of crates.io.
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the crate's component (wasm32-wasip2, profile plugin), pin it
    /// in connector.toml and check it against the manifest.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a built component in the sandbox on events from a file, with
    /// HTTP answers scripted from a file; prints requests and outcomes.
    Run {
        /// A package or crate directory (with connector.toml), or a .wasm.
        #[arg(default_value = ".")]
        component: PathBuf,
        /// Events: a JSON array, a `{"batch": […]}` body, or JSON lines.
        #[arg(long)]
        events: PathBuf,
        /// Answers, in order, the last repeating: `[{"status": 429,
        /// "headers": {"retry-after": "3"}, "body": "…", "delay_ms": 0,
        /// "connection_error": false}]`. Default: every request gets 200.
        #[arg(long)]
        responses: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// The conformance kit: every event type, odd and huge events, each
    /// retryable and permanent status, Retry-After, timeouts, batches of 1
    /// and the maximum; checks the contract on every call and prints a
    /// report. Fails when any case fails.
    Test {
        #[arg(default_value = ".")]
        component: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Also write the report (Markdown) here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Make a signing key pair: PREFIX.key (secret) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files, e.g. `keys/acme`.
        prefix: PathBuf,
    },
    /// Pin the component's SHA-256 in connector.toml and sign the manifest.
    Sign {
        /// The package directory (holding connector.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The secret key file from `plugin keygen`.
        #[arg(long, short, env = "SWITCHYARD_SIGNING_KEY")]
        key: PathBuf,
    },
    /// Check a package's component pin and signature.
    Verify {
        /// A package directory or tarball.
        package: PathBuf,
        /// Public key files to trust (any id).
        #[arg(long = "key", short)]
        keys: Vec<PathBuf>,
        /// Or trust the keys of this config's [[trust]].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write the package as <id>-<version>.tar.gz.
    Pack {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The tarball to write, or a directory to write it in.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Pack a package that is not signed (for development).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Push a package to an OCI registry: the component as a CNCF Wasm
    /// artifact tagged with the version, the manifest and signature as an
    /// artifact referring to it.
    Push {
        /// The package directory (pinned and signed).
        dir: PathBuf,
        /// `registry/repository[:version]`, e.g.
        /// `registry.example.com/connectors/com.example.hook`.
        reference: String,
        /// Plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
        #[arg(long, env = "SWITCHYARD_REGISTRY_USERNAME")]
        username: Option<String>,
        #[arg(long, env = "SWITCHYARD_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Push a package without a signature (development registries).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Show what a package is and asks for: manifest, capabilities, settings
    /// schema, signature, the component's contract and imports.
    Inspect {
        /// A package directory, tarball or OCI reference.
        package: String,
        /// Check its signature against this config's [[trust]].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Settings and grants for `plugin run` and `plugin test`.
#[derive(clap::Args)]
struct SettingsArgs {
    /// Settings as a JSON object in a file.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// One setting, `key=value` (a JSON value, or else a string); repeatable.
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Also allow requests to this origin (beyond what the manifest asks
    /// for; a bare .wasm gets nothing else); repeatable.
    #[arg(long = "allow-http", value_name = "ORIGIN")]
    allow_http: Vec<String>,
}

impl SettingsArgs {
    fn settings(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let mut map = match &self.settings {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON object", p.display()))?
            }
            None => serde_json::Map::new(),
        };
        for kv in &self.set {
            let (k, v) = kv.split_once('=').with_context(|| format!("--setting {kv}: write key=value"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
            map.insert(k.to_owned(), value);
        }
        Ok(map)
    }
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// Verify a package (directory, tarball or OCI reference
    /// `registry/repository:version`) and install it into the config's
    /// data_dir/connectors; prints what it asks for.
    Install {
        package: String,
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Replace the same version installed with other contents (a
        /// developer's rebuild; never needed for published packages).
        #[arg(long)]
        replace: bool,
    },
    /// List the installed connectors and their signatures.
    List {
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,cranelift=warn,wasmtime=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A config error lists each problem on a line of its own.
            for line in format!("{e:#}").lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            switchyard::app::run(config, shutdown_signal()).await
        }
        Command::Validate { config: path } => {
            let config = Config::load(&path)?;
            switchyard::registry::deploy::validate(&config).await?;
            println!(
                "{}: ok ({} sources, {} destinations)",
                path.display(),
                config.sources.len(),
                config.destinations.len()
            );
            Ok(())
        }
        Command::Status { config } => {
            let config = Config::load(&config)?;
            switchyard::client::status(&config).await
        }
        Command::Replay { config, destination } => {
            switchyard::client::dead_letters(&Config::load(&config)?, &destination, true).await
        }
        Command::Reload { config } => switchyard::client::reload(&Config::load(&config)?).await,
        Command::Pause { config, destination } => {
            switchyard::client::set_paused(&Config::load(&config)?, &destination, true).await
        }
        Command::Resume { config, destination } => {
            switchyard::client::set_paused(&Config::load(&config)?, &destination, false).await
        }
        Command::Purge { config, destination } => {
            switchyard::client::purge(&Config::load(&config)?, &destination).await
        }
        Command::Plugin(command) => plugin(command).await,
        Command::Connector(ConnectorCommand::Install { package, config, replace }) => {
            switchyard::connectors::install(&package, &Config::load_for_install(&config)?, replace).await
        }
        Command::Connector(ConnectorCommand::List { config }) => {
            switchyard::connectors::list(&Config::load_for_install(&config)?)
        }
        Command::DeadLetters { config, destination, replay } => {
            let config = Config::load(&config)?;
            switchyard::client::dead_letters(&config, &destination, replay).await
        }
        Command::Violations { config, source, json } => {
            let config = Config::load(&config)?;
            switchyard::client::violations(&config, &source, json).await
        }
        Command::Audit { config, json, fail_on_findings } => {
            let config = Config::load(&config)?;
            switchyard::client::audit(&config, json, fail_on_findings).await
        }
    }
}

async fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    use switchyard::connectors;
    let config = |path: Option<PathBuf>| path.map(|p| Config::load_for_install(&p)).transpose();
    match command {
        PluginCommand::New { name, id, publisher, sdk, dir } => {
            let sdk = sdk.map_or(connectors::scaffold::SdkSource::Registry, connectors::scaffold::SdkSource::Path);
            connectors::scaffold::new(&dir, &connectors::scaffold::NewPlugin { name, id, publisher, sdk }).map(drop)
        }
        PluginCommand::Build { dir } => connectors::scaffold::build(&dir).map(drop),
        PluginCommand::Run { component, events, responses, settings, batch } => {
            let allow = &settings.allow_http;
            connectors::harness::run(&component, &events, responses.as_deref(), settings.settings()?, allow, batch)
                .await
        }
        PluginCommand::Test { component, settings, report } => {
            let passed = connectors::conformance::test(
                &component,
                settings.settings()?,
                &settings.allow_http,
                report.as_deref(),
            )
            .await?;
            if !passed {
                anyhow::bail!("{}: the conformance kit found failures (the report above)", component.display());
            }
            Ok(())
        }
        PluginCommand::Keygen { prefix } => connectors::keygen(&prefix),
        PluginCommand::Sign { dir, key } => connectors::sign(&dir, &key),
        PluginCommand::Verify { package, keys, config: path } => {
            connectors::verify(&package, config(path)?.as_ref(), &keys)
        }
        PluginCommand::Pack { dir, out, allow_unsigned } => {
            connectors::pack(&dir, out.as_deref(), allow_unsigned).map(drop)
        }
        PluginCommand::Inspect { package, config: path } => connectors::inspect(&package, config(path)?.as_ref()).await,
        PluginCommand::Push { dir, reference, insecure, username, password, allow_unsigned } => {
            let access = switchyard_connector::oci::Access { insecure, username, password };
            connectors::push(&dir, &reference, &access, allow_unsigned).await
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
