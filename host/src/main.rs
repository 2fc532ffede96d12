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
        Command::DeadLetters { config, destination, replay } => {
            let config = Config::load(&config)?;
            switchyard::client::dead_letters(&config, &destination, replay).await
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
