//! The `warehouse` capability (contract 0.2): table loads into the
//! warehouse a destination's config names (`warehouse = "postgres://…"` or
//! `"sqlite:<dir>"`), through [`crate::warehouse`]. A destination without
//! one is refused with `not-granted`.
//!
//! A load is one transaction; its errors come back to the plugin as
//! `unavailable` (retryable: the plugin asks for a retry and its events
//! wait) or `invalid` (never loadable), with the destination's secrets —
//! a password in the connection setting, say — redacted.

use crate::runtime::HostState;
use crate::runtime::bindings::warehouse::{ColumnType, Host, LoadError, LoadReport, TableRows, Value};
use crate::warehouse as wh;

impl Host for HostState {
    async fn load(
        &mut self,
        schema: String,
        tables: Vec<TableRows>,
    ) -> wasmtime::Result<Result<LoadReport, LoadError>> {
        let Some(warehouse) = self.grants.warehouse.clone() else {
            return Ok(Err(LoadError::NotGranted));
        };
        let plan = wh::LoadPlan { schema, tables: tables.into_iter().map(table).collect() };
        let stats = &self.grants.warehouse_stats;
        Ok(match warehouse.load(&plan).await {
            Ok(r) => {
                stats.inserted.add(r.inserted);
                stats.existing.add(r.duplicates + r.upserted);
                stats.discarded.add(r.discarded);
                Ok(LoadReport { inserted: r.inserted, existing: r.duplicates + r.upserted, discarded: r.discarded })
            }
            Err(e) => {
                stats.failures.inc();
                let message = self.grants.redactor.redact(&e.to_string());
                tracing::warn!(destination = &*self.grants.name, error = %message, retryable = e.is_retryable(), "warehouse load failed");
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
