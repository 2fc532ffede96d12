//! Data governance: what decides whether an event is kept, and in what
//! shape it reaches each destination.
//!
//! At ingest, per source: [`plan`] is Segment Protocols' tracking plans
//! (JSON Schema rules, and the controls that block events or omit
//! properties that break them), with the [`violations`] they find counted
//! per event, field and kind; [`transform`] renames events and renames,
//! sets or drops properties, per source or per destination. Before each destination: [`fql`] is Segment's
//! Filter Query Language, the conditions subscriptions and filters are
//! written in, compiled once per config load; [`filter`] is Segment's
//! destination filters on top of it (drop, sample, drop or allow
//! properties); [`exposure`] keeps experiment exposures from being counted
//! twice: it recognises them, drops them where the vendor's SDK already
//! reports them, and dedupes them per destination. [`raw`] lets all of
//! them read only the parts of an event they need and edit its text in
//! place; [`tape`] validates an event's text against a plan's schemas
//! without parsing it into a `Value`.

pub mod exposure;
pub mod filter;
pub mod fql;
pub mod plan;
pub mod raw;
pub mod tape;
pub mod transform;
pub mod violations;

pub use exposure::{ExposureDecision, ExposureGate, ExposurePolicy, ExposureRegistry, ExposureSignature};
pub use filter::{Decision, FilterConfig, Filters, Verdict};
pub use fql::{FqlError, Query};
pub use plan::{Checked, Outcome, PlanError, SchemaSettings, TrackingPlan, Violation, ViolationKind};
pub use transform::{Applied, TransformConfig, TransformError, Transforms};
pub use violations::{ViolationLog, ViolationSummary};
