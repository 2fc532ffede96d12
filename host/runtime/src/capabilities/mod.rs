//! What a plugin may call, one module per capability, each in the shape of
//! wasmtime-wasi-http and Spin's factors:
//!
//! - a **context** (`HttpCtx`, `LogCtx`, `WarehouseCtx`): one destination's
//!   grant of that capability, built from its config and shared by its
//!   instances;
//! - a **view trait** (`HttpView`, …) that the store's data implements,
//!   lending the context, the [`Caller`] and the call's [`Breach`] slot as a
//!   `…CtxView`, on which the contract's `Host` traits are implemented;
//! - one **`add_to_linker`**, which links every contract version's
//!   interface of that capability (older versions adapted onto the newest).
//!
//! A capability names neither the runtime nor its store type: the runtime
//! depends on the capabilities, never the other way. Adding one is a new
//! module here and one line where the runtime builds its linker.

pub mod http;
pub mod log;
pub mod warehouse;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::quota::QuotaKind;
use crate::redact::Redactor;

/// Whose instance calls: the destination's name (for logs) and its
/// secrets (scrubbed from everything a capability reports).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
    pub redactor: Redactor,
}

/// The quota the current call overstepped, recorded by a capability just
/// before it traps the guest, so the runtime can report the breach by kind
/// rather than as a plain trap.
#[derive(Debug, Default)]
pub struct Breach(Option<(QuotaKind, String)>);

impl Breach {
    /// Records a breach of `kind` and returns the trap that ends the call.
    pub fn record(&mut self, kind: QuotaKind, detail: String) -> wasmtime::Error {
        let err = wasmtime::Error::msg(format!("quota breached ({kind}): {detail}"));
        self.0 = Some((kind, detail));
        err
    }

    /// The recorded breach, if any, clearing it.
    pub fn take(&mut self) -> Option<(QuotaKind, String)> {
        self.0.take()
    }
}

/// The `types` interface declares no functions; linking it only makes the
/// import resolvable.
struct Types;

impl HasData for Types {
    type Data<'a> = ();
}

impl crate::world::types::Host for () {}
impl crate::world::v0_1::switchyard::destination::types::Host for () {}

/// Links the contract's `types` interface, of every version.
///
/// # Errors
///
/// When the linker already defines it.
pub fn add_types_to_linker<T: 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::world::types::add_to_linker::<T, Types>(linker, |_| ())?;
    crate::world::v0_1::switchyard::destination::types::add_to_linker::<T, Types>(linker, |_| ())
}
