//! The `switchyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

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
}

#[derive(Subcommand)]
enum PluginCommand {
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
    /// Show what a package is and asks for: manifest, capabilities, settings
    /// schema, signature, the component's contract and imports.
    Inspect {
        /// A package directory or tarball.
        package: PathBuf,
        /// Check its signature against this config's [[trust]].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// Verify a package (directory or tarball) and install it into the
    /// config's data_dir/connectors; prints what it asks for.
    Install {
        package: PathBuf,
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
        Command::Plugin(command) => plugin(command),
        Command::Connector(ConnectorCommand::Install { package, config, replace }) => {
            switchyard::connectors::install(&package, &Config::load_for_install(&config)?, replace)
        }
        Command::Connector(ConnectorCommand::List { config }) => {
            switchyard::connectors::list(&Config::load_for_install(&config)?)
        }
        Command::DeadLetters { config, destination, replay } => {
            let config = Config::load(&config)?;
            switchyard::client::dead_letters(&config, &destination, replay).await
        }
    }
}

fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    use switchyard::connectors;
    let config = |path: Option<PathBuf>| path.map(|p| Config::load_for_install(&p)).transpose();
    match command {
        PluginCommand::Keygen { prefix } => connectors::keygen(&prefix),
        PluginCommand::Sign { dir, key } => connectors::sign(&dir, &key),
        PluginCommand::Verify { package, keys, config: path } => {
            connectors::verify(&package, config(path)?.as_ref(), &keys)
        }
        PluginCommand::Pack { dir, out, allow_unsigned } => {
            connectors::pack(&dir, out.as_deref(), allow_unsigned).map(drop)
        }
        PluginCommand::Inspect { package, config: path } => connectors::inspect(&package, config(path)?.as_ref()),
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
