//! Switchyard: a self-hosted, Segment-compatible event router whose
//! destinations are sandboxed WebAssembly components.
//!
//! One module per stage of the flow: [`ingest`] (tracking API) →
//! [`spec`] (normalization) → [`router`] (the seam to delivery) →
//! [`delivery`] (a worker per destination) → [`runtime`] (the Wasm sandbox)
//! with its [`capabilities`]. [`config`] reads the operator's file,
//! [`registry`] holds what runs and applies reloads (which [`watcher`]
//! triggers on file changes), and [`app`] wires it all together.

pub mod admin;
pub mod admin_api;
pub mod app;
pub mod capabilities;
pub mod client;
pub mod config;
pub mod deadletter;
pub mod dedupe;
pub mod delivery;
pub mod executor;
pub mod ingest;
pub mod log;
pub mod metrics;
pub mod quota;
pub mod redact;
pub mod registry;
pub mod router;
pub mod runtime;
pub mod spec;
pub mod telemetry;
pub mod warehouse;
pub mod watcher;
pub mod world;

/// Resolves once `flag` turns true (or its sender is gone).
pub async fn stopped(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
