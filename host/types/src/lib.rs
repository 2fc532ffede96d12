//! The data model Switchyard's host and its plugin SDK share.
//!
//! The host (`switchyard`) and the guest SDK (`switchyard-plugin-sdk`) both
//! depend on this crate, so an event type, a timestamp or a warehouse cell
//! means the same on both sides of the WebAssembly boundary:
//!
//! - [`EventType`]: the six Segment event types;
//! - [`Envelope`]: one accepted, normalized event as the host carries it
//!   from ingest through the log to every destination;
//! - [`time`]: the one Segment timestamp grammar, parsed into a
//!   [`Timestamp`](time::Timestamp) and formatted back;
//! - [`warehouse`]: the cells, column types and table rows of a warehouse
//!   load.
//!
//! It builds for `wasm32-wasip2` (it is linked into every plugin) and has no
//! platform code: no clock, no I/O.

mod envelope;
mod event;
pub mod time;
pub mod warehouse;

pub use envelope::Envelope;
pub use event::EventType;
