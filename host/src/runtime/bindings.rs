//! Host bindings of every contract version this host runs.
//!
//! The newest version (`v0_2`) is the one the runtime and the capabilities
//! speak; its modules are re-exported here. Plugins built against an older
//! version link against that version's interfaces, which
//! [`compat`](super::compat) adapts onto the newest: the published WIT
//! folders stay frozen and old plugins keep running.

/// `switchyard:destination@0.2.0`: adds `event.source` and the `warehouse`
/// capability.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../plugin-sdk/wit/since_v0.2.0",
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
        path: "../plugin-sdk/wit/since_v0.1.0",
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
