//! The embedded backend: a directory of SQLite databases, one file per
//! schema (`<dir>/<schema>.db`, WAL mode), attached under the schema's
//! name to one connection whose own database is in memory; so the SQL is
//! the same as PostgreSQL's (`web.tracks`). The connection lives behind a
//! mutex and every load runs on [`tokio::task::spawn_blocking`].
//!
//! A load touches one schema, so its transaction spans one file and is
//! atomic (SQLite in WAL mode is atomic per file, not across attached
//! files). SQLite attaches at most 10 databases: past that the least
//! recently loaded schema is detached, to be attached again when needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, TransactionBehavior, params_from_iter};

use super::shape::{self, Catalog, Cell, Dialect, Discards};
use super::{DISCARDS_TABLE, LoadPlan, LoadReport, WarehouseError};

/// SQLite's default limit on attached databases (`SQLITE_MAX_ATTACHED`).
const MAX_ATTACHED: usize = 10;

/// How long a load waits for a lock another process holds on a schema
/// file (an analyst's write, a checkpoint) before giving up, retryably.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An embedded SQLite warehouse.
pub struct SqliteWarehouse {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

/// The connection and what it knows.
#[derive(Default)]
struct State {
    conn: Option<Connection>,
    /// The schemas attached, least recently loaded first.
    attached: Vec<String>,
    catalog: Catalog,
}

impl std::fmt::Debug for SqliteWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWarehouse").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SqliteWarehouse {
    /// A warehouse keeping its schema files in `dir` (created on the first
    /// load if missing). Opens nothing yet.
    pub fn new(dir: impl Into<PathBuf>) -> SqliteWarehouse {
        SqliteWarehouse { dir: dir.into(), state: Arc::new(Mutex::new(State::default())) }
    }

    /// The directory of the schema files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `schema`.
    pub fn schema_file(&self, schema: &str) -> PathBuf {
        self.dir.join(format!("{schema}.db"))
    }

    /// Creates the directory and opens the connection if not done yet.
    ///
    /// # Errors
    ///
    /// [`WarehouseError::Unavailable`] when the directory cannot be created
    /// or the database opened.
    pub async fn ping(&self) -> Result<(), WarehouseError> {
        self.blocking(|state, dir| connected(state, dir).map(|_| ())).await
    }

    /// Runs `plan` in one transaction: see the [module docs](super).
    ///
    /// # Errors
    ///
    /// A non-retryable error for a plan that does not check out (nothing
    /// runs then) or whose schema cannot name a file (`/`, `\`, a leading
    /// `.`) or an attached database (`main`, `temp`);
    /// [`WarehouseError::Conflict`] (retryable) when another process holds
    /// the file's lock past the busy timeout; [`WarehouseError::Unavailable`]
    /// (retryable) for I/O errors, a full disk or a file that cannot be
    /// opened; SQLite's other errors as [`WarehouseError::Database`]. On
    /// any error the transaction is rolled back and the catalog cache
    /// dropped; a non-retryable error with a cached catalog is tried once
    /// more with the catalog read afresh.
    pub async fn load(&self, plan: &LoadPlan) -> Result<LoadReport, WarehouseError> {
        shape::check(plan)?;
        check_schema(&plan.schema)?;
        let plan = plan.clone();
        self.blocking(move |state, dir| {
            let cached = state.catalog.has_schema(&plan.schema);
            let mut result = run(state, dir, &plan);
            if result.as_ref().is_err_and(|e| shape::stale_catalog_may_explain(e, cached)) {
                // The tables may have changed behind the cache: once more,
                // reading the catalog afresh.
                state.catalog.clear();
                result = run(state, dir, &plan);
            }
            if let Err(e) = &result {
                state.catalog.clear();
                if matches!(e, WarehouseError::Unavailable(_)) {
                    *state = State::default();
                }
            }
            result
        })
        .await
    }

    /// Runs `f` on the state, on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State, &Path) -> Result<T, WarehouseError> + Send + 'static,
    ) -> Result<T, WarehouseError> {
        let state = Arc::clone(&self.state);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = state.lock().unwrap_or_else(|poisoned| {
                // A load panicked half-way: start from a fresh connection.
                let mut guard = poisoned.into_inner();
                *guard = State::default();
                state.clear_poison();
                guard
            });
            f(&mut guard, &dir)
        })
        .await
        .map_err(|e| WarehouseError::Internal(format!("the SQLite load task failed: {e}")))?
    }
}

/// Refuses schema names SQLite cannot take as a file and an attached
/// database: with a path separator, a leading `.`, or `main` / `temp`.
fn check_schema(schema: &str) -> Result<(), WarehouseError> {
    let reason = if schema.contains(['/', '\\']) {
        "a path separator cannot be in a schema file's name"
    } else if schema.starts_with('.') {
        "a schema file's name cannot start with `.`"
    } else if schema.eq_ignore_ascii_case("main") || schema.eq_ignore_ascii_case("temp") {
        "`main` and `temp` are SQLite's own databases"
    } else {
        return Ok(());
    };
    Err(WarehouseError::InvalidIdentifier { name: schema.to_owned(), reason })
}

/// The open connection, opened (on an in-memory main database) if needed.
fn connected<'a>(state: &'a mut State, dir: &Path) -> Result<&'a mut Connection, WarehouseError> {
    if state.conn.is_none() {
        std::fs::create_dir_all(dir)
            .map_err(|e| WarehouseError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open_in_memory().map_err(error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        state.attached.clear();
        state.catalog.clear();
        state.conn = Some(conn);
    }
    state.conn.as_mut().ok_or_else(|| WarehouseError::Internal("no SQLite connection".into()))
}

/// Makes sure `schema`'s file is attached (creating it, in WAL mode), and
/// marks it the most recently used.
fn attach(state: &mut State, dir: &Path, schema: &str) -> Result<(), WarehouseError> {
    connected(state, dir)?;
    let State { conn, attached, catalog } = state;
    let conn = conn.as_mut().ok_or_else(|| WarehouseError::Internal("no SQLite connection".into()))?;
    if let Some(at) = attached.iter().position(|s| s == schema) {
        let name = attached.remove(at);
        attached.push(name);
        return Ok(());
    }
    // SQLite's names are case-blind: `Web` must make way for `web`; and at
    // the limit, the least recently loaded schema goes.
    let mut leaving: Vec<String> = attached.iter().filter(|s| s.eq_ignore_ascii_case(schema)).cloned().collect();
    if attached.len() - leaving.len() >= MAX_ATTACHED
        && let Some(oldest) = attached.iter().find(|s| !leaving.contains(s))
    {
        leaving.push(oldest.clone());
    }
    for old in leaving {
        attached.retain(|s| *s != old);
        conn.flush_prepared_statement_cache();
        conn.execute_batch(&format!("DETACH DATABASE {}", shape::quote(&old))).map_err(error)?;
        catalog.forget_schema(&old);
    }
    let file = dir.join(format!("{schema}.db"));
    let path = file
        .to_str()
        .ok_or_else(|| WarehouseError::Config(format!("the SQLite directory {} is not valid UTF-8", dir.display())))?;
    conn.execute(&format!("ATTACH DATABASE ?1 AS {}", shape::quote(schema)), [path]).map_err(error)?;
    let mode: String = conn
        .query_row(&format!("PRAGMA {}.journal_mode = WAL", shape::quote(schema)), [], |r| r.get(0))
        .map_err(error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(schema, mode, "the SQLite warehouse file is not in WAL mode");
    }
    attached.push(schema.to_owned());
    catalog.forget_schema(schema);
    Ok(())
}

/// The load itself, in one transaction.
fn run(state: &mut State, dir: &Path, plan: &LoadPlan) -> Result<LoadReport, WarehouseError> {
    let schema = plan.schema.as_str();
    attach(state, dir, schema)?;
    let State { conn, catalog, .. } = state;
    let conn = conn.as_mut().ok_or_else(|| WarehouseError::Internal("no SQLite connection".into()))?;
    let now = shape::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
    if !catalog.has_schema(schema) {
        catalog.set_schema(schema, read_columns(&tx, schema, None)?);
    }

    let mut report = LoadReport::default();
    let mut discards = Discards::default();
    for table in &plan.tables {
        let name = table.table.as_str();
        // Twice at most: a table another process created meanwhile may
        // still lack some columns after our CREATE … IF NOT EXISTS.
        for _ in 0..2 {
            match shape::ddl(table, catalog.table(schema, name)) {
                shape::Ddl::Ready => break,
                shape::Ddl::Create(columns) => {
                    tx.execute_batch(&shape::create_table_sql(Dialect::Sqlite, schema, name, &columns, &table.key))
                        .map_err(error)?;
                    report.tables_created += 1;
                }
                shape::Ddl::Add(columns) => {
                    for (column, t) in &columns {
                        tx.execute_batch(&shape::add_column_sql(Dialect::Sqlite, schema, name, column, *t))
                            .map_err(error)?;
                    }
                    report.columns_added += columns.len() as u64;
                }
            }
            let mut read = read_columns(&tx, schema, Some(name))?;
            catalog.set_table(schema, name, read.remove(name).unwrap_or_default());
        }
        let none = shape::Columns::new();
        let shaped = shape::shape(table, catalog.table(schema, name).unwrap_or(&none), now, &mut discards)?;
        report.discarded += shaped.discarded;

        // One row a statement: in-process, a cached statement per row is as
        // fast as a multi-row one, and tells inserted from ignored.
        let insert = shape::insert_sql(Dialect::Sqlite, schema, name, &shaped.columns, shaped.key, table.upsert, 1);
        let exists = format!(
            "SELECT 1 FROM {} WHERE {} = ?1",
            shape::qualified(schema, name),
            shape::quote(&shaped.columns[shaped.key])
        );
        let mut insert = tx.prepare_cached(&insert).map_err(error)?;
        let mut exists = tx.prepare_cached(&exists).map_err(error)?;
        for row in shaped.rounds.iter().flatten() {
            if table.upsert {
                // Inserted, updated, or left out as older (no change).
                let key = row.get(shaped.key).and_then(Cell::as_text).unwrap_or_default();
                let there = exists.query_row([key], |_| Ok(())).optional().map_err(error)?.is_some();
                let written = insert.execute(params_from_iter(row)).map_err(error)? > 0;
                match (there, written) {
                    (false, _) => report.inserted += 1,
                    (true, true) => report.upserted += 1,
                    (true, false) => report.duplicates += 1,
                }
            } else if insert.execute(params_from_iter(row)).map_err(error)? > 0 {
                report.inserted += 1;
            } else {
                report.duplicates += 1;
            }
        }
    }

    if !discards.list().is_empty() {
        tx.execute_batch(&shape::create_discards_sql(Dialect::Sqlite, schema)).map_err(error)?;
        let mut insert = tx.prepare_cached(&shape::insert_discards_sql(Dialect::Sqlite, schema, 1)).map_err(error)?;
        for discard in discards.list() {
            insert.execute(params_from_iter(discard.cells(now))).map_err(error)?;
        }
    }
    tx.commit().map_err(error)?;
    Ok(report)
}

/// The columns of every table of `schema` (or of `only` that table), by
/// table, from `pragma table_info`.
fn read_columns(
    conn: &Connection,
    schema: &str,
    only: Option<&str>,
) -> Result<HashMap<String, shape::Columns>, WarehouseError> {
    let sql = format!(
        "SELECT m.name, p.name, p.type FROM {}.sqlite_master AS m, pragma_table_info(m.name, ?1) AS p \
         WHERE m.type = 'table' AND (?2 IS NULL OR m.name = ?2) AND m.name <> ?3",
        shape::quote(schema)
    );
    let mut statement = conn.prepare(&sql).map_err(error)?;
    let rows = statement
        .query_map(rusqlite::params![schema, only, DISCARDS_TABLE], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(error)?;
    let triples = rows.collect::<Result<Vec<_>, _>>().map_err(error)?;
    Ok(shape::group_columns(Dialect::Sqlite, triples))
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Owned(SqlValue::Null),
            Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Cell::BigInt(n) => ToSqlOutput::Owned(SqlValue::Integer(*n)),
            Cell::Double(f) => ToSqlOutput::Owned(SqlValue::Real(*f)),
            Cell::Boolean(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
            Cell::Timestamp(t) => ToSqlOutput::Owned(SqlValue::Text(shape::format_timestamp(t))),
        })
    }
}

/// A [`rusqlite::Error`] classified: a lock held elsewhere past the busy
/// timeout is a [`Conflict`](WarehouseError::Conflict); I/O errors, a full
/// disk, a file that cannot be opened or no memory make the warehouse
/// [`Unavailable`](WarehouseError::Unavailable); the rest is a
/// non-retryable [`Database`](WarehouseError::Database) error.
fn error(e: rusqlite::Error) -> WarehouseError {
    let text = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => WarehouseError::Conflict(text),
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::OutOfMemory) => {
            WarehouseError::Unavailable(text)
        }
        _ => WarehouseError::Database(text),
    }
}
