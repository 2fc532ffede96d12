//! Host bindings of the `switchyard:destination@0.1.0` world.

wasmtime::component::bindgen!({
    world: "destination",
    path: "../plugin-sdk/wit/since_v0.1.0",
    imports: {
        "switchyard:destination/log.log": trappable,
        default: async | trappable,
    },
    exports: { default: async },
    // Events are lent to the guest straight from the host's buffers instead
    // of being cloned into owned bindings first.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use self::switchyard::destination::{http, log, types};
