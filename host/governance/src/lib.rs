//! Data governance: what decides whether an event reaches a destination,
//! and in what shape.
//!
//! [`fql`] is Segment's Filter Query Language: the conditions destination
//! filters, transformations and subscriptions are written in, compiled once
//! per config load and evaluated per event. [`filter`] is Segment's
//! destination filters on top of it: drop, sample, drop or allow
//! properties.

pub mod filter;
pub mod fql;

pub use filter::{FilterConfig, Filters, Verdict};
pub use fql::{FqlError, Query};
