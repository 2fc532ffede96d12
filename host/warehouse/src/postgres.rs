//! The PostgreSQL backend: one [`tokio_postgres::Client`] (no TLS) behind a
//! [`tokio::sync::Mutex`], connected on first use and again after the
//! connection is lost.
//!
//! Rows go in as multi-row parameterized `INSERT … ON CONFLICT`s, in chunks
//! of at most [`MAX_ROWS_PER_STATEMENT`] rows and [`MAX_PARAMETERS`]
//! parameters. Not `COPY`: `COPY` knows no `ON CONFLICT`, so idempotent
//! loads would need a staging table per table and an `INSERT … SELECT …
//! ON CONFLICT` from it (three statements and a temporary table instead of
//! one), and binary `COPY` needs every value typed exactly. A load is one
//! delivery batch (hundreds to a few thousand rows), where a chunked INSERT
//! costs a few round trips and stays within a small factor of `COPY`, with
//! the inserted-row count straight from the statement.

use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Statement, Transaction};

use super::shape::{self, Catalog, Cell, Dialect, Discards};
use super::{DISCARDS_TABLE, LoadPlan, LoadReport, WarehouseError};

/// PostgreSQL's limit on the parameters of one statement.
pub const MAX_PARAMETERS: usize = 65_535;

/// The most rows one INSERT carries (keeps statements and their plans
/// small when tables are narrow).
pub const MAX_ROWS_PER_STATEMENT: usize = 1_000;

/// How long a connection attempt may take when the setting says nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL warehouse.
pub struct PostgresWarehouse {
    // Boxed, both: they are large, and [`Warehouse`](super::Warehouse)
    // holds this or a small SQLite handle.
    config: Box<Config>,
    conn: Mutex<Option<Box<Conn>>>,
}

/// A live connection and what it knows of the catalog.
struct Conn {
    client: Client,
    catalog: Catalog,
}

impl std::fmt::Debug for PostgresWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the Config: no password in logs.
        f.debug_struct("PostgresWarehouse")
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// Parses a libpq-style `url`, with a connect timeout of 10 s unless the
/// URL sets one.
///
/// # Errors
///
/// [`WarehouseError::Config`] when `url` does not parse.
pub(super) fn parse_config(url: &str) -> Result<Config, WarehouseError> {
    let mut config = Config::from_str(url).map_err(|e| WarehouseError::Config(chain(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

impl PostgresWarehouse {
    /// A warehouse for the libpq-style `url` (`postgres://user@host/db`),
    /// without connecting yet. A connect timeout of 10 s applies unless
    /// the URL sets one.
    ///
    /// # Errors
    ///
    /// [`WarehouseError::Config`] when `url` does not parse.
    pub fn new(url: &str) -> Result<PostgresWarehouse, WarehouseError> {
        Ok(PostgresWarehouse::with_config(parse_config(url)?))
    }

    /// A warehouse for a parsed `config`, without connecting yet.
    pub fn with_config(config: Config) -> PostgresWarehouse {
        PostgresWarehouse { config: Box::new(config), conn: Mutex::new(None) }
    }

    /// Connects now if not connected.
    ///
    /// # Errors
    ///
    /// As [`PostgresWarehouse::load`] for connection errors.
    pub async fn ping(&self) -> Result<(), WarehouseError> {
        let mut slot = self.conn.lock().await;
        self.connected(&mut slot).await.map(|_| ())
    }

    /// Runs `plan` in one transaction: see the [module docs](super).
    ///
    /// # Errors
    ///
    /// A non-retryable error for a plan that does not check out (nothing
    /// runs then); [`WarehouseError::Unavailable`] (retryable) when the
    /// server cannot be reached or the connection is lost — the next load
    /// reconnects; [`WarehouseError::Conflict`] (retryable) for
    /// serialization failures, deadlocks and concurrent DDL; the server's
    /// other errors as [`WarehouseError::Database`]. On any error the
    /// transaction is rolled back and the catalog cache dropped; a
    /// non-retryable error with a cached catalog is tried once more with
    /// the catalog read afresh (a table dropped by hand is created again).
    pub async fn load(&self, plan: &LoadPlan) -> Result<LoadReport, WarehouseError> {
        shape::check(plan)?;
        let mut slot = self.conn.lock().await;
        let conn = self.connected(&mut slot).await?;
        let cached = conn.catalog.has_schema(&plan.schema);
        let mut result = run(conn, plan).await;
        if result.as_ref().is_err_and(|e| shape::stale_catalog_may_explain(e, cached)) {
            // The tables may have changed behind the cache (dropped, altered
            // by hand): once more, reading the catalog afresh.
            conn.catalog.clear();
            result = run(conn, plan).await;
        }
        if let Err(e) = &result {
            conn.catalog.clear();
            if matches!(e, WarehouseError::Unavailable(_)) || conn.client.is_closed() {
                *slot = None;
            }
        }
        result
    }

    /// The live connection in `slot`, made anew when there is none or it
    /// was closed.
    async fn connected<'a>(&self, slot: &'a mut Option<Box<Conn>>) -> Result<&'a mut Conn, WarehouseError> {
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            let (client, connection) = self.config.connect(NoTls).await.map_err(error)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %chain(&e), "warehouse connection lost");
                }
            });
            *slot = Some(Box::new(Conn { client, catalog: Catalog::default() }));
        }
        slot.as_deref_mut().ok_or_else(|| WarehouseError::Internal("no PostgreSQL connection".into()))
    }
}

/// The load itself, in one transaction.
async fn run(conn: &mut Conn, plan: &LoadPlan) -> Result<LoadReport, WarehouseError> {
    let Conn { client, catalog } = conn;
    let schema = plan.schema.as_str();
    let now = shape::now();
    let tx = client.transaction().await.map_err(error)?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", shape::quote(schema))).await.map_err(ddl_error)?;
    if !catalog.has_schema(schema) {
        catalog.set_schema(schema, read_columns(&tx, schema, None).await?);
    }

    let mut report = LoadReport::default();
    let mut discards = Discards::default();
    for table in &plan.tables {
        let name = table.table.as_str();
        // Twice at most: a table another loader created meanwhile may still
        // lack some columns after our CREATE … IF NOT EXISTS.
        for _ in 0..2 {
            match shape::ddl(table, catalog.table(schema, name)) {
                shape::Ddl::Ready => break,
                shape::Ddl::Create(columns) => {
                    let sql = shape::create_table_sql(Dialect::Postgres, schema, name, &columns, &table.key);
                    tx.batch_execute(&sql).await.map_err(ddl_error)?;
                    report.tables_created += 1;
                }
                shape::Ddl::Add(columns) => {
                    for (column, t) in &columns {
                        let sql = shape::add_column_sql(Dialect::Postgres, schema, name, column, *t);
                        tx.batch_execute(&sql).await.map_err(ddl_error)?;
                    }
                    report.columns_added += columns.len() as u64;
                }
            }
            let mut read = read_columns(&tx, schema, Some(name)).await?;
            catalog.set_table(schema, name, read.remove(name).unwrap_or_default());
        }
        let none = shape::Columns::new();
        let shaped = shape::shape(table, catalog.table(schema, name).unwrap_or(&none), now, &mut discards)?;
        report.discarded += shaped.discarded;

        let width = shaped.columns.len();
        let per_statement = (MAX_PARAMETERS / width).clamp(1, MAX_ROWS_PER_STATEMENT);
        let mut full: Option<Statement> = None;
        let count_sql = format!(
            "SELECT count(*) FROM {} WHERE {} = ANY($1)",
            shape::qualified(schema, name),
            shape::quote(&shaped.columns[shaped.key])
        );
        // The rounds one after the other: an upsert table's later rows for
        // a key see the earlier ones.
        for chunk in shaped.rounds.iter().flat_map(|round| round.chunks(per_statement)) {
            let sql = || {
                shape::insert_sql(
                    Dialect::Postgres,
                    schema,
                    name,
                    &shaped.columns,
                    shaped.key,
                    table.upsert,
                    chunk.len(),
                )
            };
            let statement = match &full {
                Some(s) if chunk.len() == per_statement => s.clone(),
                _ => {
                    let s = tx.prepare(&sql()).await.map_err(error)?;
                    if chunk.len() == per_statement {
                        full = Some(s.clone());
                    }
                    s
                }
            };
            let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flatten().map(|c| c as &(dyn ToSql + Sync)).collect();
            let rows = chunk.len() as u64;
            if table.upsert {
                // A chunk holds each key once: the rows not there are
                // inserted, the rest updated unless older (then left out,
                // and not counted by the statement).
                let ids: Vec<&str> = chunk.iter().filter_map(|r| r.get(shaped.key).and_then(Cell::as_text)).collect();
                let there: i64 = tx.query_one(&count_sql, &[&ids]).await.map_err(error)?.try_get(0).map_err(error)?;
                let there = u64::try_from(there).unwrap_or(0).min(rows);
                let written = tx.execute(&statement, &params).await.map_err(error)?.clamp(rows - there, rows);
                let updated = written - (rows - there);
                report.inserted += rows - there;
                report.upserted += updated;
                report.duplicates += there - updated;
            } else {
                let inserted = tx.execute(&statement, &params).await.map_err(error)?.min(rows);
                report.inserted += inserted;
                report.duplicates += rows - inserted;
            }
        }
    }

    if !discards.list().is_empty() {
        tx.batch_execute(&shape::create_discards_sql(Dialect::Postgres, schema)).await.map_err(ddl_error)?;
        let width = shape::DISCARD_COLUMNS.len();
        for chunk in discards.list().chunks((MAX_PARAMETERS / width).min(MAX_ROWS_PER_STATEMENT)) {
            let cells: Vec<Cell> = chunk.iter().flat_map(|d| d.cells(now)).collect();
            let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            let sql = shape::insert_discards_sql(Dialect::Postgres, schema, chunk.len());
            tx.execute(&sql, &params).await.map_err(error)?;
        }
    }
    tx.commit().await.map_err(error)?;
    Ok(report)
}

/// The columns of every table of `schema` (or of `only` that table) from
/// `information_schema.columns`, by table.
async fn read_columns(
    tx: &Transaction<'_>,
    schema: &str,
    only: Option<&str>,
) -> Result<std::collections::HashMap<String, shape::Columns>, WarehouseError> {
    let sql = "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
               WHERE table_schema::text = $1::text AND ($2::text IS NULL OR table_name::text = $2::text) \
               AND table_name::text <> $3::text";
    let rows = tx.query(sql, &[&schema, &only, &DISCARDS_TABLE]).await.map_err(error)?;
    let mut triples = Vec::with_capacity(rows.len());
    for row in rows {
        triples.push((row.try_get(0).map_err(error)?, row.try_get(1).map_err(error)?, row.try_get(2).map_err(error)?));
    }
    Ok(shape::group_columns(Dialect::Postgres, triples))
}

impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Text(s) => bind(s, ty, out),
            Cell::BigInt(n) => bind(n, ty, out),
            Cell::Double(f) => bind(f, ty, out),
            Cell::Boolean(b) => bind(b, ty, out),
            Cell::Timestamp(t) => bind::<DateTime<Utc>>(t, ty, out),
        }
    }

    /// Any type: the cell checks its own against the parameter's when
    /// bound (a NULL fits every column).
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `value` as a parameter of type `ty`, refused when the types differ.
fn bind<T: ToSql>(
    value: &T,
    ty: &Type,
    out: &mut BytesMut,
) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
    if !T::accepts(ty) {
        return Err(format!("a {} cannot be bound to a `{ty}` parameter", std::any::type_name::<T>()).into());
    }
    value.to_sql(ty, out)
}

/// A [`tokio_postgres::Error`] classified: see [`classify`].
fn error(e: tokio_postgres::Error) -> WarehouseError {
    let text = chain(&e);
    match e.code() {
        Some(code) => classify(code.code(), text),
        // No SQLSTATE: lost or refused connections (an I/O error inside),
        // or trouble on our side (a parameter that does not bind…).
        None if e.is_closed() || io_inside(&e) => WarehouseError::Unavailable(text),
        None => WarehouseError::Database(text),
    }
}

/// Like [`error`], for DDL: a duplicate object (schema, table, type or
/// column) means another loader created it between our check and ours,
/// so trying again succeeds.
fn ddl_error(e: tokio_postgres::Error) -> WarehouseError {
    match e.code().map(|c| c.code()) {
        Some("23505" | "42P06" | "42P07" | "42701" | "42710") => {
            WarehouseError::Conflict(format!("concurrent DDL: {}", chain(&e)))
        }
        _ => error(e),
    }
}

/// A server error by its SQLSTATE: connection trouble (class 08), the
/// server shutting down or not yet up (57P01–57P03), out of resources (53,
/// 58) or a cancelled statement (57014: a timeout) are
/// [`Unavailable`](WarehouseError::Unavailable); serialization failures and
/// deadlocks (class 40) or a lock not available (55P03) are a
/// [`Conflict`](WarehouseError::Conflict); anything else (a bad name, a
/// constraint, a permission) is a non-retryable
/// [`Database`](WarehouseError::Database) error.
pub(crate) fn classify(sqlstate: &str, text: String) -> WarehouseError {
    match sqlstate {
        s if s.starts_with("08") || s.starts_with("53") || s.starts_with("58") => WarehouseError::Unavailable(text),
        "57P01" | "57P02" | "57P03" | "57014" => WarehouseError::Unavailable(text),
        s if s.starts_with("40") => WarehouseError::Conflict(text),
        "55P03" => WarehouseError::Conflict(text),
        _ => WarehouseError::Database(text),
    }
}

/// Whether an I/O error is among `e`'s causes.
fn io_inside(e: &tokio_postgres::Error) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `e` with its causes, `outer: inner: …`, and the SQLSTATE of a server
/// error.
fn chain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} [{}]", db.severity(), db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
