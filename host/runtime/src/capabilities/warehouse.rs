//! The `warehouse` capability (contract 0.2): table loads into the
//! warehouse a destination's config names (`warehouse = "postgres://…"` or
//! `"sqlite:<dir>"`), through [`switchyard_warehouse`]. A destination without
//! one is refused with `not-granted`.
//!
//! A load is one transaction; its errors come back to the plugin as
//! `unavailable` (retryable: the plugin asks for a retry and its events
//! wait) or `invalid` (never loadable), with the destination's secrets —
//! a password in the connection setting, say — redacted.
//!
//! [`WarehouseCtx`] is a destination's grant, [`WarehouseView`] lends it to
//! the contract's `Host` trait, and [`add_to_linker`] links it. Contract
//! 0.1 has no `warehouse` interface.

use std::sync::Arc;

use switchyard_warehouse as wh;
use wasmtime::component::{HasData, Linker};

use super::Caller;
use crate::world::warehouse::{ColumnType, Host, LoadError, LoadReport, TableRows, Value};

/// A destination's warehouse grant: where it may load (`None`: not
/// granted), and where its loads are reported (the destination's, across
/// deploys).
#[derive(Debug)]
pub struct WarehouseCtx {
    pub warehouse: Option<Arc<wh::Warehouse>>,
    pub telemetry: Arc<dyn LoadTelemetry>,
}

impl Default for WarehouseCtx {
    /// Not granted, reporting nowhere.
    fn default() -> Self {
        WarehouseCtx { warehouse: None, telemetry: Arc::new(Unreported) }
    }
}

/// Where the capability reports what each load did. The host implements it
/// to count and log (its telemetry events); the capability knows neither.
pub trait LoadTelemetry: Send + Sync + std::fmt::Debug {
    /// A load committed: rows new to their tables, rows already there
    /// (ignored or upserted), values sent to `discards`.
    fn loaded(&self, inserted: u64, existing: u64, discarded: u64);
    /// A load failed and wrote nothing; `message` is already redacted.
    fn failed(&self, destination: &str, message: &str, retryable: bool);
}

/// Reports nowhere (tests, benches).
#[derive(Debug)]
pub struct Unreported;

impl LoadTelemetry for Unreported {
    fn loaded(&self, _: u64, _: u64, _: u64) {}
    fn failed(&self, _: &str, _: &str, _: bool) {}
}

/// What the `warehouse` interface's functions see of a store.
pub struct WarehouseCtxView<'a> {
    pub ctx: &'a WarehouseCtx,
    pub caller: &'a Caller,
}

/// Implemented by a store's data to lend its [`WarehouseCtxView`].
pub trait WarehouseView: Send {
    fn warehouse(&mut self) -> WarehouseCtxView<'_>;
}

struct HasWarehouse;

impl HasData for HasWarehouse {
    type Data<'a> = WarehouseCtxView<'a>;
}

/// Links the `warehouse` interface.
///
/// # Errors
///
/// When the linker already defines it.
pub fn add_to_linker<T: WarehouseView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::world::warehouse::add_to_linker::<T, HasWarehouse>(linker, T::warehouse)
}

impl Host for WarehouseCtxView<'_> {
    async fn load(
        &mut self,
        schema: String,
        tables: Vec<TableRows>,
    ) -> wasmtime::Result<Result<LoadReport, LoadError>> {
        let Some(warehouse) = self.ctx.warehouse.clone() else {
            return Ok(Err(LoadError::NotGranted));
        };
        let plan = wh::LoadPlan { schema, tables: tables.into_iter().map(table).collect() };
        let telemetry = &self.ctx.telemetry;
        Ok(match warehouse.load(&plan).await {
            Ok(r) => {
                let existing = r.duplicates + r.upserted;
                telemetry.loaded(r.inserted, existing, r.discarded);
                Ok(LoadReport { inserted: r.inserted, existing, discarded: r.discarded })
            }
            Err(e) => {
                let message = self.caller.redactor.redact(&e.to_string());
                let retryable = e.is_retryable();
                telemetry.failed(&self.caller.name, &message, retryable);
                if e.is_retryable() { Err(LoadError::Unavailable(message)) } else { Err(LoadError::Invalid(message)) }
            }
        })
    }
}

fn table(t: TableRows) -> wh::TableRows {
    let kind = |c: ColumnType| match c {
        ColumnType::Text => wh::ColumnType::Text,
        ColumnType::Bigint => wh::ColumnType::BigInt,
        ColumnType::Double => wh::ColumnType::Double,
        ColumnType::Boolean => wh::ColumnType::Boolean,
        ColumnType::Timestamp => wh::ColumnType::Timestamp,
    };
    let value = |v: Value| match v {
        Value::Null => wh::Value::Null,
        Value::Text(s) => wh::Value::Text(s),
        Value::Bigint(n) => wh::Value::BigInt(n),
        Value::Double(f) => wh::Value::Double(f),
        Value::Boolean(b) => wh::Value::Boolean(b),
        Value::Timestamp(s) => wh::Value::Timestamp(s),
    };
    wh::TableRows {
        table: t.table,
        columns: t.columns.into_iter().map(|c| (c.name, kind(c.kind))).collect(),
        rows: t.rows.into_iter().map(|r| r.into_iter().map(value).collect()).collect(),
        key: t.key,
        upsert: t.upsert,
    }
}
