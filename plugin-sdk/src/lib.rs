//! The Switchyard plugin SDK: write a destination as one Rust type.
//!
//! A destination receives batches of Segment events from the Switchyard host
//! and reports one [`Outcome`] per event. Write a struct, implement
//! [`Destination`] for it, and call [`export_destination!`]:
//!
//! ```
//! use switchyard_plugin_sdk::{Destination, Event, InitError, Outcome, export_destination};
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     api_key: String,
//! }
//!
//! struct Counter {
//!     settings: Settings,
//! }
//!
//! impl Destination for Counter {
//!     type Settings = Settings;
//!
//!     fn init(settings: Settings) -> Result<Self, InitError> {
//!         if settings.api_key.is_empty() {
//!             return Err(InitError::invalid_settings("`api_key` must not be empty"));
//!         }
//!         Ok(Counter { settings })
//!     }
//!
//!     fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome> {
//!         batch.iter().map(|_| Outcome::Delivered).collect()
//!     }
//! }
//!
//! export_destination!(Counter);
//! # fn main() {}
//! ```
//!
//! # Reading events fast
//!
//! [`Event::message_lenient`] gives typed messages ([`spec`]) and is the
//! easy way to read an event. A mapping that must keep up with ingest reads
//! it through [`Event::view`] instead: the event's JSON is indexed once
//! ([`json::Document`]) and every field, at any depth, is borrowed from
//! it; the vendor payload is written straight into its buffer with
//! [`json::ObjectWriter`], copying objects such as `properties` member by
//! member. The Amplitude, Statsig and warehouse destinations are written
//! this way (`cargo bench --bench deliver` measures them).
//!
//! ```
//! use switchyard_plugin_sdk::Event;
//! use switchyard_plugin_sdk::json::ObjectWriter;
//!
//! let event = Event::from_segment_json(
//!     r#"{"type":"track","messageId":"m1","event":"Signed Up","userId":"u1",
//!         "properties":{"plan":"pro"},"context":{"device":{"id":"d1"}}}"#,
//! )
//! .unwrap();
//! let view = event.view().unwrap();
//! let mut out = Vec::new();
//! {
//!     let mut o = ObjectWriter::new(&mut out);
//!     o.str("event_type", &view.event_name().unwrap_or_default());
//!     if let Some(device) = view.context().object("device").non_empty("id") {
//!         o.str("device_id", &device);
//!     }
//!     o.object("event_properties").members(&view.properties());
//! }
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     r#"{"event_type":"Signed Up","device_id":"d1","event_properties":{"plan":"pro"}}"#
//! );
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the `.wasm`
//! is a component of the `switchyard:destination@0.2.0` contract, whose WIT
//! ships in this crate's `wit/` folder. On the host target the same code is
//! unit-tested with plain `cargo test` through [`testing`], with HTTP
//! responses scripted per test.

extern crate self as switchyard_plugin_sdk;

mod event;
pub mod form;
pub mod http;
pub mod json;
pub mod log;
mod outcome;
mod redact;
pub mod settings;
pub mod spec;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod view;
pub mod warehouse;

pub use event::{Event, EventType};
pub use outcome::{InitError, Outcome, RetryClass};
pub use redact::{LEAK_WINDOW, redact};
pub use settings::parse_settings;
/// The Segment timestamp grammar the host parses with: see
/// [`time::Timestamp::parse`].
pub use switchyard_types::time;
pub use view::EventView;

/// The version of the WIT contract this SDK builds plugins against.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// A destination: the one trait a plugin implements.
///
/// The host creates one value per sandboxed instance with [`init`], then calls
/// [`deliver`] with batches of events in log order. An instance is used by one
/// call at a time, so `&mut self` needs no locking.
///
/// [`init`]: Destination::init
/// [`deliver`]: Destination::deliver
pub trait Destination: Sized + 'static {
    /// The destination's settings, deserialized from the operator's config.
    /// A missing or mistyped field becomes an [`InitError`] naming the field.
    type Settings: serde::de::DeserializeOwned;

    /// Validates the settings and builds the destination.
    ///
    /// # Errors
    ///
    /// [`InitError::InvalidSettings`] when a setting is unusable (say which,
    /// never echo a secret), [`InitError::Other`] for anything else. Either
    /// keeps the destination from starting.
    fn init(settings: Self::Settings) -> Result<Self, InitError>;

    /// Delivers `batch` and returns exactly one outcome per event, in order.
    ///
    /// A transient failure is [`Outcome::Retry`]; the host backs off and
    /// tries again. A permanent one is [`Outcome::Rejected`].
    fn deliver(&mut self, batch: Vec<Event>) -> Vec<Outcome>;
}

/// Exports a [`Destination`] type as the plugin's implementation of the
/// contract. Call it once, at the crate root of a `cdylib` crate.
///
/// On `wasm32` it emits the component exports; on other targets it emits
/// nothing, so the same crate also links natively for tests and benchmarks.
#[macro_export]
macro_rules! export_destination {
    ($destination:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct SwitchyardDestinationExport;

            impl $crate::__private::bindings::Guest for SwitchyardDestinationExport {
                fn init(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<(), $crate::__private::bindings::InitError> {
                    $crate::__private::init::<$destination>(&settings)
                }

                fn deliver(
                    batch: ::std::vec::Vec<$crate::__private::bindings::Event>,
                ) -> ::std::vec::Vec<$crate::__private::bindings::Outcome> {
                    $crate::__private::deliver::<$destination>(batch)
                }
            }

            $crate::__private::bindings::__export_destination!(
                SwitchyardDestinationExport with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Glue for [`export_destination!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    #[cfg(target_arch = "wasm32")]
    pub use crate::guest::{deliver, init};

    #[allow(missing_docs, unsafe_code, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "destination",
            path: "wit/since_v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_destination",
            default_bindings_module: "switchyard_plugin_sdk::__private::bindings",
            runtime_path: "switchyard_plugin_sdk::__private::wit_bindgen::rt",
        });
    }
}

#[cfg(target_arch = "wasm32")]
mod guest;
