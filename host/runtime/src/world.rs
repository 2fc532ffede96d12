//! The contract's generated bindings, of every version this host runs:
//! the one module both the runtime (exports: `init`, `deliver`) and the
//! capabilities (imports: `http`, `log`, `warehouse`) depend on, so neither
//! depends on the other. It depends on nothing of the host.
//!
//! The newest version (`v0_2`) is the one the host speaks; its interfaces
//! are re-exported here. A plugin built against an older version links
//! against that version's interfaces, which each capability adapts onto
//! the newest (and the runtime adapts the exports): the published WIT
//! folders stay frozen and old plugins keep running.

/// `switchyard:destination@0.2.0`: adds `event.source` and the `warehouse`
/// capability.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../../plugin-sdk/wit/since_v0.2.0",
        imports: {
            "switchyard:destination/log.log": trappable,
            default: async | trappable,
        },
        exports: { default: async },
        // Events are lent to the guest straight from the host's buffers
        // instead of being cloned into owned bindings first.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

/// `switchyard:destination@0.1.0`, the first published contract.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../../plugin-sdk/wit/since_v0.1.0",
        imports: {
            "switchyard:destination/log.log": trappable,
            default: async | trappable,
        },
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

pub use self::v0_2::switchyard::destination::{http, log, types, warehouse};
pub use self::v0_2::{Destination, DestinationPre};
