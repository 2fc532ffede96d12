//! Checks that a `.wasm` is a component of a contract version this host runs,
//! with messages a plugin author can act on.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The contract this host implements.
pub const CONTRACT: &str = "switchyard:destination@0.2.0";

const PACKAGE: &str = "switchyard:destination";
/// Every contract version this host runs, as (major, minor): any patch
/// release of these is accepted.
const SUPPORTED: [(u64, u64); 2] = [(0, 1), (0, 2)];

/// Rejects files that are not Wasm components before the compiler does, with
/// a hint about the build target.
///
/// # Errors
///
/// A message saying what the file is instead.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]) => Err(format!(
            "is a core WebAssembly module, not a component: build the plugin with \
             `cargo build --target wasm32-wasip2` against the {CONTRACT} SDK"
        )),
        _ => Err("is not a WebAssembly file".to_owned()),
    }
}

/// What a component was built against, read from its imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imports {
    /// The contract version, e.g. `0.2.0` (this host's, when it imports
    /// none of the contract's interfaces).
    pub contract: String,
    /// The contract's capability interfaces it imports (`http`, `log`,
    /// `warehouse`; not `types`), sorted: what it can ask the host for.
    pub capabilities: Vec<String>,
}

/// Checks the component's imports and exports against the contract, and
/// returns what it imports.
///
/// # Errors
///
/// Names the first missing export or unsupported import.
pub fn check(engine: &Engine, component: &Component) -> Result<Imports, String> {
    let ty = component.component_type();
    let mut built_for = None;
    let mut capabilities = Vec::new();
    for (name, _) in ty.imports(engine) {
        if let Some(rest) = name.strip_prefix(PACKAGE) {
            let (interface, version) = rest.rsplit_once('@').unwrap_or((rest, ""));
            let interface = interface.trim_start_matches('/');
            if !interface.is_empty() && interface != "types" {
                capabilities.push(interface.to_owned());
            }
            built_for.get_or_insert_with(|| version.to_owned());
            if !supported(version) {
                return Err(format!(
                    "was built against contract {PACKAGE}@{version}, but this host runs {}",
                    supported_list()
                ));
            }
        } else if !name.starts_with("wasi:") {
            return Err(format!(
                "imports `{name}`, which this host does not provide: plugins may import only \
                 {PACKAGE} capabilities and WASI"
            ));
        }
    }
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| (name.to_owned(), matches!(item.ty, ComponentItem::ComponentFunc(_))))
        .collect();
    for want in ["init", "deliver"] {
        match exports.iter().find(|(n, _)| n == want) {
            Some((_, true)) => {}
            Some((_, false)) => {
                return Err(format!("exports `{want}`, but not as a function ({CONTRACT})"));
            }
            None => {
                let has: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!(
                    "is not a {CONTRACT} plugin: it does not export `{want}` (exports: [{}])",
                    has.join(", ")
                ));
            }
        }
    }
    capabilities.sort();
    capabilities.dedup();
    let contract = built_for.unwrap_or_else(|| CONTRACT.rsplit_once('@').map_or("", |(_, v)| v).to_owned());
    Ok(Imports { contract, capabilities })
}

/// Semver-compatible with the supported version (0.x: same minor).
fn supported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.split(['-', '+']).next().unwrap_or("").parse::<u64>());
    matches!((parts.next(), parts.next()), (Some(Ok(major)), Some(Ok(minor))) if SUPPORTED.contains(&(major, minor)))
}

/// "0.1.x and 0.2.x", for messages.
fn supported_list() -> String {
    let list: Vec<String> = SUPPORTED.iter().map(|(major, minor)| format!("{major}.{minor}.x")).collect();
    list.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_kinds() {
        assert!(check_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(check_header(b"\0asm\x01\0\0\0rest").unwrap_err().contains("core WebAssembly module"));
        assert!(check_header(b"hello").unwrap_err().contains("not a WebAssembly file"));
    }

    #[test]
    fn versions() {
        assert!(supported("0.1.0"));
        assert!(supported("0.1.7"));
        assert!(supported("0.2.0"));
        assert!(!supported("0.3.0"));
        assert!(!supported("1.1.0"));
        assert!(!supported(""));
    }
}
