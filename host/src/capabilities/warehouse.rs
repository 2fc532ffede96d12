//! The `warehouse` capability (contract 0.2): table loads into the
//! warehouse connected to a destination. No destination is granted one
//! yet — the backends are being built (issue 7) — so every call answers
//! `not-granted`, as it will for destinations without a connection.

use crate::runtime::HostState;
use crate::runtime::bindings::warehouse::{Host, LoadError, LoadReport, TableRows};

impl Host for HostState {
    async fn load(
        &mut self,
        _schema: String,
        _tables: Vec<TableRows>,
    ) -> wasmtime::Result<Result<LoadReport, LoadError>> {
        Ok(Err(LoadError::NotGranted))
    }
}
