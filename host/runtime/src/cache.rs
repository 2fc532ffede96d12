//! The compiled-plugin cache: Cranelift output stored under `data_dir`,
//! keyed by the `.wasm`'s content hash and the engine's compatibility hash,
//! so a restart loads a plugin in well under a millisecond instead of
//! compiling it again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// SHA-256 of `bytes`, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key for this engine's compiled-code format: wasmtime version and
/// every setting that changes generated code.
fn engine_key(engine: &Engine) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Loads the compiled artifact for `hash` from `dir`, or compiles `bytes`
/// and stores it there (atomically: write then rename).
///
/// # Errors
///
/// The compiler's message when `bytes` is not a valid component.
pub fn compile_cached(engine: &Engine, dir: &Path, hash: &str, bytes: &[u8]) -> Result<Component, String> {
    let artifact = dir.join(format!("{hash}-{}.cwasm", engine_key(engine)));
    if artifact.exists() {
        match deserialize_file(engine, &artifact) {
            Ok(component) => return Ok(component),
            Err(err) => {
                tracing::warn!(path = %artifact.display(), error = %err, "discarding unusable compiled plugin");
                let _ = std::fs::remove_file(&artifact);
            }
        }
    }
    let started = std::time::Instant::now();
    let compiled =
        engine.precompile_component(bytes).map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
    tracing::info!(hash = &hash[..12], ms = started.elapsed().as_millis() as u64, "compiled plugin");
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    let stored = std::fs::write(&tmp, &compiled).and_then(|()| std::fs::rename(&tmp, &artifact));
    if let Err(err) = stored {
        // The cache is an optimisation: run uncached rather than fail.
        tracing::warn!(path = %artifact.display(), error = %err, "cannot cache compiled plugin");
        let _ = std::fs::remove_file(&tmp);
    }
    deserialize_bytes(engine, &compiled)
}

#[allow(unsafe_code)]
fn deserialize_file(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: the file is one this host wrote with `precompile_component`
    // into its own data_dir; wasmtime checks the engine compatibility
    // header before using it.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    // SAFETY: `bytes` was produced by `precompile_component` on this engine
    // just now.
    unsafe { Component::deserialize(engine, bytes) }.map_err(|e| format!("{e:#}"))
}
