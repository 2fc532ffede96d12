//! Table loads into the warehouse the operator connected to this
//! destination: the host's `warehouse` capability (contract 0.2).
//!
//! A destination describes rows per table ([`TableRows`]) and calls
//! [`load`]; the host creates the schema, the tables and any missing
//! columns, inserts the rows idempotently by their key (upserting where
//! asked), and writes values that do not fit their column's type to the
//! schema's `discards` table — all in one transaction. Only destinations
//! whose config grants a warehouse may load; for the others every call
//! fails with [`LoadError::NotGranted`].
//!
//! Natively, the `testing` module's harness records each load and answers
//! it as the test scripts.

pub use switchyard_types::warehouse::{ColumnType, LoadReport, TableRows, Value};

/// Why a load did not happen. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// This destination has no warehouse connection in the host's config.
    #[error("no warehouse is granted to this destination (set `warehouse` in its config)")]
    NotGranted,
    /// The warehouse cannot be reached or is busy: loading the same rows
    /// again later is safe.
    #[error("warehouse unavailable: {0}")]
    Unavailable(String),
    /// The load can never succeed as it is.
    #[error("invalid load: {0}")]
    Invalid(String),
}

/// Loads `tables` into `schema` in one transaction.
///
/// # Errors
///
/// A [`LoadError`]; retry [`LoadError::Unavailable`] later.
#[cfg(target_arch = "wasm32")]
pub fn load(schema: &str, tables: &[TableRows]) -> Result<LoadReport, LoadError> {
    use crate::__private::bindings::switchyard::destination::warehouse as wit;
    let kind = |t: ColumnType| match t {
        ColumnType::Text => wit::ColumnType::Text,
        ColumnType::BigInt => wit::ColumnType::Bigint,
        ColumnType::Double => wit::ColumnType::Double,
        ColumnType::Boolean => wit::ColumnType::Boolean,
        ColumnType::Timestamp => wit::ColumnType::Timestamp,
    };
    let value = |v: &Value| match v {
        Value::Null => wit::Value::Null,
        Value::Text(s) => wit::Value::Text(s.clone()),
        Value::BigInt(n) => wit::Value::Bigint(*n),
        Value::Double(f) => wit::Value::Double(*f),
        Value::Boolean(b) => wit::Value::Boolean(*b),
        Value::Timestamp(s) => wit::Value::Timestamp(s.clone()),
    };
    let tables: Vec<wit::TableRows> = tables
        .iter()
        .map(|t| wit::TableRows {
            table: t.table.clone(),
            columns: t.columns.iter().map(|(name, ty)| wit::Column { name: name.clone(), kind: kind(*ty) }).collect(),
            rows: t.rows.iter().map(|row| row.iter().map(value).collect()).collect(),
            key: t.key.clone(),
            upsert: t.upsert,
        })
        .collect();
    match wit::load(schema, &tables) {
        Ok(r) => Ok(LoadReport { inserted: r.inserted, existing: r.existing, discarded: r.discarded }),
        Err(wit::LoadError::NotGranted) => Err(LoadError::NotGranted),
        Err(wit::LoadError::Unavailable(m)) => Err(LoadError::Unavailable(m)),
        Err(wit::LoadError::Invalid(m)) => Err(LoadError::Invalid(m)),
    }
}

/// Hands the load to the scripted warehouse of the current test.
///
/// # Errors
///
/// What the script returns; [`LoadError::NotGranted`] when none is set.
#[cfg(not(target_arch = "wasm32"))]
pub fn load(schema: &str, tables: &[TableRows]) -> Result<LoadReport, LoadError> {
    match NATIVE_HOST.get() {
        Some(host) => host(schema, tables),
        None => Err(LoadError::NotGranted),
    }
}

/// Natively, the function that answers in the host's place.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type NativeHost = fn(&str, &[TableRows]) -> Result<LoadReport, LoadError>;

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// Natively, what stands in for the host's capability; the `testing`
    /// module installs its own, so this module does not depend on it.
    pub(crate) static NATIVE_HOST: std::cell::Cell<Option<NativeHost>> =
        const { std::cell::Cell::new(None) };
}
