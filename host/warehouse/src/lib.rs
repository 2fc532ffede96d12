//! Table loads into a SQL warehouse: the host side of the warehouse
//! destination (issue 7). The plugin maps a batch of events to a
//! [`LoadPlan`] (rows per table, in Segment's schema); the host runs it
//! against PostgreSQL ([`PostgresWarehouse`]) or an embedded SQLite
//! directory ([`SqliteWarehouse`]), picked by [`Warehouse::connect`].
//!
//! # What a load does
//!
//! Both backends do the same, in ONE transaction per [`Warehouse::load`]
//! (nothing of a failed load stays behind):
//!
//! 1. ensure the schema exists (PostgreSQL: a schema; SQLite: one database
//!    file per schema, `<dir>/<schema>.db`, attached under the schema's name,
//!    so analysts query `web.tracks` in both);
//! 2. ensure each table exists, created with all its columns and the key
//!    column as `TEXT PRIMARY KEY`, and add the columns it lacks
//!    (`ALTER TABLE … ADD COLUMN`). The existing columns and their types are
//!    read from the catalog and cached per connection; the cache is dropped
//!    whenever a load fails, so the next load reads it afresh;
//! 3. a value that does not fit its existing column is stored as NULL there
//!    and recorded in the schema's [`DISCARDS_TABLE`] instead; it never
//!    fails the load. What fits: a value of the column's type, a
//!    [`BigInt`](Value::BigInt) in a [`Double`](ColumnType::Double) column,
//!    anything in a [`Text`](ColumnType::Text) column (as its
//!    [`Value::to_text`] form), a [`Timestamp`](Value::Timestamp) that parses
//!    in a timestamp column. A column of a type this module does not create
//!    (say `integer` or `jsonb`, made by hand) takes no value but NULL. So
//!    does a column named like a PostgreSQL system column (`xmin`, `ctid`…,
//!    which PostgreSQL cannot create): its values are discarded in both
//!    backends, with the column type `reserved`;
//! 4. insert rows idempotently by the key: a key already in the table adds
//!    no row (`ON CONFLICT (id) DO NOTHING`); for [`upsert`](TableRows::upsert)
//!    tables (`users`), see below.
//!
//! # Upsert tables: the latest state
//!
//! An upsert table (`users`: one row per user, one plan row per identify)
//! keeps the latest state, whatever order the rows arrive in — a
//! redelivered batch, a replay from an older cursor, two batches loaded out
//! of order. Rows are ordered by their [`ORDER_COLUMNS`]: `timestamp` (the
//! event's time), ties broken by `received_at`. A new row for a key already
//! stored is applied only when it is not older than the stored row; then
//! the stored row takes its non-null values (`COALESCE(excluded.col,
//! t.col)`), keeping its own where the new row has NULL ("not sent"),
//! `timestamp` and `received_at` included. An older row changes nothing.
//! The comparison and the update are one statement (`INSERT … ON CONFLICT
//! (id) DO UPDATE SET … WHERE (older) IS NOT TRUE`), so a concurrent load
//! of the same user cannot slip in between.
//!
//! - An older row does not fill in the traits the stored row lacks either:
//!   the row is the latest state, and an older identify's traits are not
//!   that (they stay in `identifies`). A trait only an older identify sent
//!   is missing from `users` when that identify is loaded after a newer
//!   one; loaded in order, it would be there.
//! - Equal times (both columns the same) apply the new row, so the later of
//!   two identifies of one request in the same millisecond wins, as sent;
//!   redelivering the very row stored rewrites the same values.
//! - A NULL time, or a table without the column, never makes a row older:
//!   rows stored before `users` had a `timestamp`, and plans without the
//!   columns, behave as plain upserts. Two NULL timestamps count as equal,
//!   so `received_at` decides.
//! - Within one plan, a key's rows are applied one after the other, oldest
//!   first (plan order among equal times), each by the same rule against
//!   the row as the previous ones left it: PostgreSQL's `ON CONFLICT DO
//!   UPDATE` cannot touch one row twice in a statement, so the rows go in
//!   rounds, round `r` holding each key's `r`-th row. A plan is thus
//!   loaded as if its rows had come one by one in time order: a row older
//!   than the stored one is left out, the newer ones are applied in turn.
//!
//! # Types
//!
//! | [`ColumnType`] | PostgreSQL | SQLite (declared type: stored as) |
//! |---|---|---|
//! | `Text` | `text` | `TEXT` |
//! | `BigInt` | `bigint` | `INTEGER` |
//! | `Double` | `double precision` | `REAL` |
//! | `Boolean` | `boolean` | `BOOLEAN`: integer 0 / 1 |
//! | `Timestamp` | `timestamptz` | `TIMESTAMP`: ISO-8601 text in UTC, `2024-05-01T12:00:00.000000Z` |
//!
//! SQLite stores booleans as integers and timestamps as text whatever the
//! declared type; the declared types `BOOLEAN` and `TIMESTAMP` are there so
//! the catalog (`pragma table_info`) tells them from `INTEGER` and `TEXT`,
//! which the type-fit rules above need to behave as in PostgreSQL.
//! Timestamps are normalised to UTC with a fixed six-digit fraction, so
//! they sort as text.
//!
//! Identifiers are always quoted (names may be keywords like `order`); an
//! empty one, one longer than 63 bytes (PostgreSQL's limit) or one holding a
//! NUL byte is refused with a non-retryable error, before anything runs.
//!
//! # Why SQLite, not DuckDB, is the embedded default
//!
//! Build cost: DuckDB is a large C++ code base that adds many minutes and a
//! big object to every build of the host, while SQLite is one C file
//! (`rusqlite`'s `bundled` feature). And the result is easy to open: the
//! schema files are plain SQLite databases that analysts read with
//! `sqlite3`, DBeaver, Python's `sqlite3`, or DuckDB itself through its
//! SQLite scanner — WAL mode lets them read while loads go on.

mod postgres;
mod shape;
mod sqlite;
#[cfg(test)]
mod tests;

pub use postgres::PostgresWarehouse;
pub use sqlite::SqliteWarehouse;

/// The table of each schema where values that did not fit their column
/// go; a plan may not name a table so.
///
/// Columns: `id` (the row's key), `table_name`, `column_name`,
/// `column_type` (the existing column's type: `text`, `bigint`, `double`,
/// `boolean`, `timestamp`, `reserved`, or the catalog's name of a type
/// this module does not create), `value` (the value's text form),
/// `received_at` (the row's `received_at` when it has a valid one, else
/// the load time) and `uuid_ts` (the load time). Keyed on
/// (`table_name`, `id`, `column_name`): a reloaded row adds no discard, a
/// later one for the same cell (an upserted user) replaces it.
pub const DISCARDS_TABLE: &str = "discards";

/// The columns an [`upsert`](TableRows::upsert) table's rows are ordered
/// by, most significant first: the event's `timestamp`, then its
/// `received_at` (see the [module docs](self)). A table with one of them
/// is ordered by that one; with neither, its rows are applied as they come.
pub const ORDER_COLUMNS: [&str; 2] = ["timestamp", "received_at"];

/// The longest identifier, in bytes: PostgreSQL's `NAMEDATALEN - 1`
/// (longer names would be truncated silently by the server).
pub const MAX_IDENTIFIER_LEN: usize = 63;

pub use switchyard_types::warehouse::{ColumnType, TableRows, Value};

/// What one load writes: every table touched, into one schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadPlan {
    /// The schema (dataset) the tables live in.
    pub schema: String,
    pub tables: Vec<TableRows>,
}

/// What a load did, in the backend's detail. The `warehouse` capability
/// reports less to the plugin
/// ([`switchyard_types::warehouse::LoadReport`]: `existing` is
/// `duplicates + upserted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Rows added.
    pub inserted: u64,
    /// Rows ignored because their key was already in the table (or earlier
    /// in the same table of the plan); for upsert tables, rows older than
    /// the row they would update (see the [module docs](self)).
    pub duplicates: u64,
    /// Rows of upsert tables applied to an existing row (or to an earlier
    /// row of the plan with the same key).
    pub upserted: u64,
    /// Values stored as NULL and recorded in the [`DISCARDS_TABLE`].
    pub discarded: u64,
    /// Tables created.
    pub tables_created: u64,
    /// Columns added to existing tables.
    pub columns_added: u64,
}

/// Why a load (or a connection) failed. [`WarehouseError::is_retryable`]
/// tells whether the same load may succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarehouseError {
    /// The connection setting is not one this module understands.
    #[error("invalid warehouse setting: {0}")]
    Config(String),
    /// A schema, table or column name that cannot be used.
    #[error("invalid identifier {name:?}: {reason}")]
    InvalidIdentifier { name: String, reason: &'static str },
    /// A plan that is not well formed (row width, key column, null key…).
    #[error("invalid load plan: {0}")]
    InvalidPlan(String),
    /// The warehouse cannot be reached, the connection was lost or the
    /// server is shutting down or out of resources. Retryable.
    #[error("warehouse unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race (serialization failure, deadlock, a lock
    /// held elsewhere, concurrent DDL). Retryable.
    #[error("warehouse conflict: {0}")]
    Conflict(String),
    /// Any other error the warehouse reported: not retryable.
    #[error("warehouse error: {0}")]
    Database(String),
    /// A bug or a panic on the host's side: not retryable.
    #[error("warehouse internal error: {0}")]
    Internal(String),
}

impl WarehouseError {
    /// Whether the same load may succeed if tried again later:
    /// [`Unavailable`](WarehouseError::Unavailable) and
    /// [`Conflict`](WarehouseError::Conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, WarehouseError::Unavailable(_) | WarehouseError::Conflict(_))
    }
}

/// A warehouse connection setting, parsed: which backend, and where.
/// Its `Debug` form never shows a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseUrl {
    /// `postgres://…` or `postgresql://…`: a libpq URL, no TLS.
    Postgres(Box<tokio_postgres::Config>),
    /// `sqlite:<dir>` (also `sqlite://<dir>`): the embedded backend, one
    /// database file per schema in `<dir>`.
    Sqlite(std::path::PathBuf),
}

impl WarehouseUrl {
    /// Parses a connection setting. A PostgreSQL connect timeout of 10 s
    /// applies unless the URL sets one.
    ///
    /// # Errors
    ///
    /// [`WarehouseError::Config`] for a setting of another scheme or one
    /// that does not parse (the message never repeats the setting, which may
    /// hold a password).
    pub fn parse(url: &str) -> Result<WarehouseUrl, WarehouseError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(WarehouseUrl::Postgres(Box::new(postgres::parse_config(url)?)))
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let dir = rest.strip_prefix("//").unwrap_or(rest);
            if dir.is_empty() {
                return Err(WarehouseError::Config("`sqlite:` needs a directory, as in `sqlite:/var/lib/wh`".into()));
            }
            Ok(WarehouseUrl::Sqlite(dir.into()))
        } else {
            Err(WarehouseError::Config("expected `postgres://…` or `sqlite:<dir>`".into()))
        }
    }

    /// Resolves a relative SQLite directory against `base` (the config
    /// file's folder).
    pub fn resolve_against(&mut self, base: &std::path::Path) {
        if let WarehouseUrl::Sqlite(dir) = self
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
    }
}

impl<'de> serde::Deserialize<'de> for WarehouseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WarehouseUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A warehouse to load into.
#[derive(Debug)]
pub enum Warehouse {
    Postgres(PostgresWarehouse),
    Sqlite(SqliteWarehouse),
}

impl Warehouse {
    /// The warehouse a connection setting names, without connecting yet:
    /// `postgres://…` or `postgresql://…` (a libpq URL, no TLS) picks
    /// PostgreSQL, `sqlite:<dir>` (also `sqlite://<dir>`) the embedded
    /// backend with its schema files in `<dir>`. PostgreSQL connects on the
    /// first load; use [`Warehouse::connect`] to check the setting at once.
    ///
    /// # Errors
    ///
    /// [`WarehouseError::Config`] for a setting of another scheme or one
    /// that does not parse (the message never repeats the setting, which may
    /// hold a password).
    pub fn new(url: &str) -> Result<Warehouse, WarehouseError> {
        Ok(Warehouse::open(&WarehouseUrl::parse(url)?))
    }

    /// The warehouse of a parsed setting, without connecting yet.
    pub fn open(url: &WarehouseUrl) -> Warehouse {
        match url {
            WarehouseUrl::Postgres(config) => {
                Warehouse::Postgres(PostgresWarehouse::with_config(config.as_ref().clone()))
            }
            WarehouseUrl::Sqlite(dir) => Warehouse::Sqlite(SqliteWarehouse::new(dir.clone())),
        }
    }

    /// Like [`Warehouse::new`], then connects (PostgreSQL) or creates the
    /// directory and opens the embedded database (SQLite), so a wrong
    /// setting shows at once.
    ///
    /// # Errors
    ///
    /// As [`Warehouse::new`]; then a retryable
    /// [`Unavailable`](WarehouseError::Unavailable) when the server refuses
    /// the connection, or the server's error (a wrong password or database
    /// is not retryable).
    pub async fn connect(url: &str) -> Result<Warehouse, WarehouseError> {
        let warehouse = Warehouse::new(url)?;
        match &warehouse {
            Warehouse::Postgres(pg) => pg.ping().await?,
            Warehouse::Sqlite(lite) => lite.ping().await?,
        }
        Ok(warehouse)
    }

    /// Runs `plan` in one transaction: see the [module docs](self).
    ///
    /// # Errors
    ///
    /// A [`WarehouseError`]; nothing of the plan is written then.
    /// [`WarehouseError::is_retryable`] tells whether to try again.
    pub async fn load(&self, plan: &LoadPlan) -> Result<LoadReport, WarehouseError> {
        match self {
            Warehouse::Postgres(pg) => pg.load(plan).await,
            Warehouse::Sqlite(lite) => lite.load(plan).await,
        }
    }

    /// The backend's name: `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Warehouse::Postgres(_) => "postgres",
            Warehouse::Sqlite(_) => "sqlite",
        }
    }
}
