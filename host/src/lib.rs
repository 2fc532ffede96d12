//! Switchyard: a self-hosted, Segment-compatible event router whose
//! destinations are sandboxed WebAssembly components.
//!
//! One module per stage of the flow: [`ingest`] (tracking API) →
//! [`normalize`] (Segment JSON into an [`Envelope`](normalize::Envelope)) →
//! [`sink`] (dedupe, then the append to the log, `switchyard_log`) →
//! [`delivery`] (a worker per destination, reading the log) → the Wasm
//! sandbox (`switchyard_runtime`, with its capabilities). [`config`] reads
//! the operator's file, [`registry`] holds what runs and applies reloads
//! (which [`watcher`] triggers on file changes), [`executor`] says which
//! threads run what, and [`app`] wires it all together.

pub mod admin;
pub mod admin_api;
pub mod admin_token;
pub mod app;
pub mod audit;
pub mod client;
pub mod config;
pub mod connectors;
pub mod deadletter;
pub mod delivery;
pub mod executor;
pub mod ingest;
pub mod metrics;
pub mod normalize;
pub mod observed;
pub mod record;
pub mod registry;
pub mod sink;
pub mod telemetry;
pub mod watcher;

/// Resolves once `flag` turns true (or its sender is gone).
pub async fn stopped(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
