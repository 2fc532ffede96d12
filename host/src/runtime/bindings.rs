//! Host bindings of the `switchyard:destination@0.1.0` world.

wasmtime::component::bindgen!({
    world: "destination",
    path: "../plugin-sdk/wit/since_v0.1.0",
    imports: {
        "switchyard:destination/log.log": trappable,
        default: async | trappable,
    },
    exports: { default: async },
});

pub use self::switchyard::destination::{http, log, types};
