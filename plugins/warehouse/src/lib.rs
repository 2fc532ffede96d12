//! Switchyard destination: Segment events into a SQL warehouse, in the
//! schema Segment's own warehouses use, so analysts' existing queries work
//! unchanged.
//!
//! [`plan()`] turns a batch of events into a [`LoadPlan`], the rows to
//! write per table with their columns and inferred types; it does no I/O.
//! [`Warehouse`] (the [`Destination`]) loads each batch's plan, one
//! transaction per source schema, through the host's `warehouse`
//! capability, which creates tables and columns, inserts idempotently by
//! `id` and sends values that do not fit their column to `discards`.
//!
//! The schema in short (details on [`plan`](mod@plan) and in the README):
//!
//! | table | one row per | columns beyond the common ones |
//! |---|---|---|
//! | `tracks` | track | `event`, `event_text` |
//! | `<event>` (e.g. `order_completed`) | track of that event | `event`, `event_text`, properties |
//! | `identifies` | identify | traits |
//! | `users` | user id (upserted, latest identify wins) | only `id`, `received_at`, `timestamp` and traits |
//! | `pages`, `screens` | page / screen | `name`, properties |
//! | `groups` | group | `group_id`, traits |
//! | `aliases` | alias | `previous_id` |
//!
//! Common columns: `id` (the `messageId`), `anonymous_id`, `user_id`,
//! `received_at`, `sent_at`, `timestamp`, `original_timestamp`, `uuid_ts`
//! (load time) and the flattened `context_*`.
//!
//! [`Destination`]: switchyard_plugin_sdk::Destination

mod destination;
pub mod naming;
pub mod plan;
#[cfg(test)]
mod tests;

pub use crate::destination::{Settings, Warehouse};
pub use crate::plan::{ColumnType, LoadPlan, PlannedTable, TableRows, Value, plan, plan_at};

switchyard_plugin_sdk::export_destination!(Warehouse);
