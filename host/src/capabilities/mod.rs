//! What a plugin may call. Each capability is one module with one entry
//! point: its `Host` implementation on [`HostState`](crate::runtime::HostState)
//! (registered on the linker by the runtime), configured per destination
//! from its [`Grants`](crate::runtime::Grants).

pub mod http;
pub mod log;
pub mod warehouse;

impl crate::runtime::bindings::types::Host for crate::runtime::HostState {}
