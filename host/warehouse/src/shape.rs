//! What both backends share, so they behave the same: checking a plan, the
//! per-connection catalog cache, the DDL a table needs, fitting values to
//! the existing columns (and collecting the discards), and the SQL text.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use switchyard_types::time::Timestamp;

use super::{
    ColumnType, DISCARDS_TABLE, LoadPlan, MAX_IDENTIFIER_LEN, ORDER_COLUMNS, TableRows, Value, WarehouseError,
};

/// PostgreSQL's system columns: a table cannot have a column of these
/// names, so their values are discarded (in both backends alike).
const SYSTEM_COLUMNS: [&str; 6] = ["tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"];

/// The `column_type` of a discard whose column has a reserved name.
const RESERVED: &str = "reserved";

/// The SQL dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// A column's type as the catalog tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Existing {
    /// One this module creates.
    Known(ColumnType),
    /// Any other (made by hand): the catalog's name. It takes only NULL.
    Other(String),
}

impl Existing {
    /// The column type named `name` in `dialect`'s catalog
    /// (`information_schema.columns.data_type` / `pragma table_info`'s
    /// `type`).
    pub(crate) fn from_catalog(dialect: Dialect, name: &str) -> Existing {
        let known = match dialect {
            Dialect::Postgres => match name {
                "text" => Some(ColumnType::Text),
                "bigint" => Some(ColumnType::BigInt),
                "double precision" => Some(ColumnType::Double),
                "boolean" => Some(ColumnType::Boolean),
                "timestamp with time zone" => Some(ColumnType::Timestamp),
                _ => None,
            },
            Dialect::Sqlite => match name.to_ascii_uppercase().as_str() {
                "TEXT" => Some(ColumnType::Text),
                "INTEGER" | "BIGINT" => Some(ColumnType::BigInt),
                "REAL" | "DOUBLE" | "DOUBLE PRECISION" => Some(ColumnType::Double),
                "BOOLEAN" => Some(ColumnType::Boolean),
                "TIMESTAMP" | "TIMESTAMPTZ" => Some(ColumnType::Timestamp),
                _ => None,
            },
        };
        known.map_or_else(|| Existing::Other(name.to_owned()), Existing::Known)
    }

    /// The name recorded in a discard's `column_type`.
    fn name(&self) -> &str {
        match self {
            Existing::Known(t) => t.name(),
            Existing::Other(name) => name,
        }
    }
}

/// The columns of one table: name → type.
pub(crate) type Columns = HashMap<String, Existing>;

/// What the catalog said, cached per connection: schema → table → columns.
/// Dropped whenever a load fails (its DDL was rolled back, or the
/// warehouse was changed behind our back).
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    schemas: HashMap<String, HashMap<String, Columns>>,
}

impl Catalog {
    /// Whether the tables of `schema` were read.
    pub(crate) fn has_schema(&self, schema: &str) -> bool {
        self.schemas.contains_key(schema)
    }

    /// Sets every table of `schema`.
    pub(crate) fn set_schema(&mut self, schema: &str, tables: HashMap<String, Columns>) {
        self.schemas.insert(schema.to_owned(), tables);
    }

    /// Sets the columns of one table (none: the table does not exist).
    pub(crate) fn set_table(&mut self, schema: &str, table: &str, columns: Columns) {
        let tables = self.schemas.entry(schema.to_owned()).or_default();
        if columns.is_empty() {
            tables.remove(table);
        } else {
            tables.insert(table.to_owned(), columns);
        }
    }

    /// The columns of `schema.table`, if it exists.
    pub(crate) fn table(&self, schema: &str, table: &str) -> Option<&Columns> {
        self.schemas.get(schema)?.get(table)
    }

    /// Forgets `schema`.
    pub(crate) fn forget_schema(&mut self, schema: &str) {
        self.schemas.remove(schema);
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.schemas.clear();
    }
}

/// Groups `(table, column, type)` rows from a catalog query by table.
pub(crate) fn group_columns(
    dialect: Dialect,
    rows: impl IntoIterator<Item = (String, String, String)>,
) -> HashMap<String, Columns> {
    let mut tables: HashMap<String, Columns> = HashMap::new();
    for (table, column, type_name) in rows {
        tables.entry(table).or_default().insert(column, Existing::from_catalog(dialect, &type_name));
    }
    tables
}

// ---------------------------------------------------------------- checks

/// Checks an identifier: not empty, at most [`MAX_IDENTIFIER_LEN`] bytes,
/// no NUL byte.
///
/// # Errors
///
/// [`WarehouseError::InvalidIdentifier`] (not retryable).
pub(crate) fn check_identifier(name: &str) -> Result<(), WarehouseError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IDENTIFIER_LEN {
        "longer than 63 bytes"
    } else if name.contains('\0') {
        "holds a NUL byte"
    } else {
        return Ok(());
    };
    Err(WarehouseError::InvalidIdentifier { name: name.to_owned(), reason })
}

/// Checks a whole plan before anything runs.
///
/// # Errors
///
/// Not retryable: [`WarehouseError::InvalidIdentifier`] for a bad name (or
/// a table named [`DISCARDS_TABLE`], or a key column with a reserved
/// name), [`WarehouseError::InvalidPlan`] for a repeated column, a key
/// that is not a column, a row of the wrong width or a null key.
pub(crate) fn check(plan: &LoadPlan) -> Result<(), WarehouseError> {
    check_identifier(&plan.schema)?;
    plan.tables.iter().try_for_each(check_table)
}

fn check_table(table: &TableRows) -> Result<(), WarehouseError> {
    check_identifier(&table.table)?;
    if table.table == DISCARDS_TABLE {
        return Err(WarehouseError::InvalidIdentifier {
            name: table.table.clone(),
            reason: "reserved for the values that did not fit their column",
        });
    }
    for (i, (name, _)) in table.columns.iter().enumerate() {
        check_identifier(name)?;
        if table.columns[..i].iter().any(|(n, _)| n == name) {
            return Err(WarehouseError::InvalidPlan(format!("table `{}` has column `{name}` twice", table.table)));
        }
    }
    let key = table.columns.iter().position(|(n, _)| *n == table.key).ok_or_else(|| {
        WarehouseError::InvalidPlan(format!("table `{}`: key `{}` is not one of its columns", table.table, table.key))
    })?;
    if is_reserved(&table.key) {
        return Err(WarehouseError::InvalidIdentifier {
            name: table.key.clone(),
            reason: "a PostgreSQL system column cannot be the key",
        });
    }
    for (i, row) in table.rows.iter().enumerate() {
        if row.len() != table.columns.len() {
            return Err(WarehouseError::InvalidPlan(format!(
                "table `{}`: row {i} has {} values for {} columns",
                table.table,
                row.len(),
                table.columns.len()
            )));
        }
        if row.get(key).is_none_or(|v| *v == Value::Null) {
            return Err(WarehouseError::InvalidPlan(format!("table `{}`: row {i} has a null key", table.table)));
        }
    }
    Ok(())
}

/// Whether a load that failed with `e` may succeed at once with the
/// catalog read afresh: a non-retryable database error (no such table, a
/// column of another type…) while the catalog came from the cache
/// (`cached`).
pub(crate) fn stale_catalog_may_explain(e: &WarehouseError, cached: bool) -> bool {
    cached && matches!(e, WarehouseError::Database(_) | WarehouseError::Internal(_))
}

/// Whether a column name is a PostgreSQL system column.
fn is_reserved(column: &str) -> bool {
    SYSTEM_COLUMNS.contains(&column)
}

// ---------------------------------------------------------------- DDL

/// What a table needs before its rows go in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ddl {
    /// Nothing.
    Ready,
    /// It does not exist: create it with these columns.
    Create(Vec<(String, ColumnType)>),
    /// It lacks these columns.
    Add(Vec<(String, ColumnType)>),
}

/// What `table` needs, given its `existing` columns.
pub(crate) fn ddl(table: &TableRows, existing: Option<&Columns>) -> Ddl {
    let storable = table.columns.iter().filter(|(name, _)| !is_reserved(name)).cloned();
    match existing {
        None => Ddl::Create(storable.collect()),
        Some(columns) => {
            let missing: Vec<_> = storable.filter(|(name, _)| !columns.contains_key(name)).collect();
            if missing.is_empty() { Ddl::Ready } else { Ddl::Add(missing) }
        }
    }
}

/// `name` quoted as an SQL identifier (both dialects): `order` → `"order"`.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table`, quoted.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// The SQL type of `t`.
pub(crate) fn sql_type(dialect: Dialect, t: ColumnType) -> &'static str {
    match (dialect, t) {
        (Dialect::Postgres, ColumnType::Text) => "text",
        (Dialect::Postgres, ColumnType::BigInt) => "bigint",
        (Dialect::Postgres, ColumnType::Double) => "double precision",
        (Dialect::Postgres, ColumnType::Boolean) => "boolean",
        (Dialect::Postgres, ColumnType::Timestamp) => "timestamptz",
        (Dialect::Sqlite, ColumnType::Text) => "TEXT",
        (Dialect::Sqlite, ColumnType::BigInt) => "INTEGER",
        (Dialect::Sqlite, ColumnType::Double) => "REAL",
        (Dialect::Sqlite, ColumnType::Boolean) => "BOOLEAN",
        (Dialect::Sqlite, ColumnType::Timestamp) => "TIMESTAMP",
    }
}

/// The text type and the key's constraint.
fn key_def(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "text PRIMARY KEY",
        // SQLite lets a TEXT PRIMARY KEY be NULL unless told otherwise.
        Dialect::Sqlite => "TEXT NOT NULL PRIMARY KEY",
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `columns`, `key` the primary key.
pub(crate) fn create_table_sql(
    dialect: Dialect,
    schema: &str,
    table: &str,
    columns: &[(String, ColumnType)],
    key: &str,
) -> String {
    let defs: Vec<String> = columns
        .iter()
        .map(|(name, t)| {
            let def = if name == key { key_def(dialect) } else { sql_type(dialect, *t) };
            format!("{} {def}", quote(name))
        })
        .collect();
    format!("CREATE TABLE IF NOT EXISTS {} ({})", qualified(schema, table), defs.join(", "))
}

/// `ALTER TABLE … ADD COLUMN` (PostgreSQL: `IF NOT EXISTS`, for loaders
/// racing on one table; SQLite's writer lock rules that race out).
pub(crate) fn add_column_sql(dialect: Dialect, schema: &str, table: &str, column: &str, t: ColumnType) -> String {
    let if_not_exists = if dialect == Dialect::Postgres { "IF NOT EXISTS " } else { "" };
    format!(
        "ALTER TABLE {} ADD COLUMN {if_not_exists}{} {}",
        qualified(schema, table),
        quote(column),
        sql_type(dialect, t)
    )
}

/// The columns of the [`DISCARDS_TABLE`], in order.
pub(crate) const DISCARD_COLUMNS: [&str; 7] =
    ["id", "table_name", "column_name", "column_type", "value", "received_at", "uuid_ts"];

/// `CREATE TABLE IF NOT EXISTS` for the schema's [`DISCARDS_TABLE`].
pub(crate) fn create_discards_sql(dialect: Dialect, schema: &str) -> String {
    let (text, time) = (sql_type(dialect, ColumnType::Text), sql_type(dialect, ColumnType::Timestamp));
    let not_null = if dialect == Dialect::Sqlite { " NOT NULL" } else { "" };
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\"id\" {text}{not_null}, \"table_name\" {text}{not_null}, \
         \"column_name\" {text}{not_null}, \"column_type\" {text}, \"value\" {text}, \"received_at\" {time}, \
         \"uuid_ts\" {time}, PRIMARY KEY (\"table_name\", \"id\", \"column_name\"))",
        qualified(schema, DISCARDS_TABLE)
    )
}

/// The `n`-th (0-based) parameter placeholder.
fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${}", n + 1),
        Dialect::Sqlite => format!("?{}", n + 1),
    }
}

/// `VALUES (…), (…)` for `rows` rows of `width` parameters.
fn values_list(dialect: Dialect, width: usize, rows: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (0..width).map(|c| placeholder(dialect, r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!("VALUES {}", tuples.join(", "))
}

/// An idempotent multi-row INSERT of `rows` rows into `columns`, keyed on
/// `columns[key]`: a repeated key does nothing or, with `upsert`, sets the
/// columns the new row has non-null — unless the new row is older than the
/// stored one by the [`ORDER_COLUMNS`] it has: an earlier `timestamp`, or
/// the same `timestamp` (both NULL counts as the same) and an earlier
/// `received_at`. A NULL on either side never makes a row older.
pub(crate) fn insert_sql(
    dialect: Dialect,
    schema: &str,
    table: &str,
    columns: &[String],
    key: usize,
    upsert: bool,
    rows: usize,
) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let key_name = quote(&columns[key]);
    let updates: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != key)
        .map(|(_, c)| format!("{c} = COALESCE(excluded.{c}, t.{c})"))
        .collect();
    let on_conflict = if upsert && !updates.is_empty() {
        let unless = older_sql(columns, key).map(|older| format!(" WHERE ({older}) IS NOT TRUE")).unwrap_or_default();
        format!("ON CONFLICT ({key_name}) DO UPDATE SET {}{unless}", updates.join(", "))
    } else {
        format!("ON CONFLICT ({key_name}) DO NOTHING")
    };
    format!(
        "INSERT INTO {} AS t ({}) {} {on_conflict}",
        qualified(schema, table),
        names.join(", "),
        values_list(dialect, columns.len(), rows)
    )
}

/// The index in `columns` of order column `name`, unless it is the key.
fn order_column(columns: &[String], key: usize, name: &str) -> Option<usize> {
    columns.iter().position(|c| c == name).filter(|&i| i != key)
}

/// The condition under which the proposed row (`excluded`) is older than
/// the stored one (`t`), by the [`ORDER_COLUMNS`] among `columns` (the key
/// excepted); [`None`] when there are none. It is NULL, not true, when a
/// time it needs is NULL. Both dialects: SQLite knows `IS NOT DISTINCT
/// FROM` since 3.39.
fn older_sql(columns: &[String], key: usize) -> Option<String> {
    let order: Vec<String> = ORDER_COLUMNS
        .iter()
        .filter(|name| order_column(columns, key, name).is_some())
        .map(|name| quote(name))
        .collect();
    // (a, b) < (c, d): a < c OR (a = c AND b < d), with NULL = NULL for the tie.
    order.iter().rev().fold(None, |later: Option<String>, c| {
        let earlier = format!("excluded.{c} < t.{c}");
        Some(match later {
            None => earlier,
            Some(later) => format!("{earlier} OR (excluded.{c} IS NOT DISTINCT FROM t.{c} AND ({later}))"),
        })
    })
}

/// An INSERT of `rows` discards: a cell already discarded takes the new
/// value.
pub(crate) fn insert_discards_sql(dialect: Dialect, schema: &str, rows: usize) -> String {
    let names: Vec<String> = DISCARD_COLUMNS.iter().map(|c| quote(c)).collect();
    let updates: Vec<String> = names[3..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    format!(
        "INSERT INTO {} ({}) {} ON CONFLICT (\"table_name\", \"id\", \"column_name\") DO UPDATE SET {}",
        qualified(schema, DISCARDS_TABLE),
        names.join(", "),
        values_list(dialect, names.len(), rows),
        updates.join(", ")
    )
}

// ---------------------------------------------------------------- rows

/// A value ready to bind, of its column's type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Text(String),
    BigInt(i64),
    Double(f64),
    Boolean(bool),
    Timestamp(DateTime<Utc>),
}

impl Cell {
    /// The text of a [`Cell::Text`] (the key).
    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// `value` in a column of type `column`; [`None`] when it does not fit.
fn fit(value: &Value, column: &Existing) -> Option<Cell> {
    use ColumnType as T;
    Some(match (value, column) {
        (Value::Null, _) => Cell::Null,
        (_, Existing::Other(_)) => return None,
        (_, Existing::Known(T::Text)) => Cell::Text(value.to_text()?),
        (Value::BigInt(n), Existing::Known(T::BigInt)) => Cell::BigInt(*n),
        (Value::BigInt(n), Existing::Known(T::Double)) => Cell::Double(*n as f64),
        (Value::Double(f), Existing::Known(T::Double)) => Cell::Double(*f),
        (Value::Boolean(b), Existing::Known(T::Boolean)) => Cell::Boolean(*b),
        (Value::Timestamp(s), Existing::Known(T::Timestamp)) => Cell::Timestamp(parse_timestamp(s)?),
        _ => return None,
    })
}

/// A value that did not fit its column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Discard {
    pub id: String,
    pub table: String,
    pub column: String,
    pub column_type: String,
    pub value: String,
    pub received_at: DateTime<Utc>,
}

impl Discard {
    /// The row for [`insert_discards_sql`], `now` as `uuid_ts`.
    pub(crate) fn cells(&self, now: DateTime<Utc>) -> [Cell; 7] {
        [
            Cell::Text(self.id.clone()),
            Cell::Text(self.table.clone()),
            Cell::Text(self.column.clone()),
            Cell::Text(self.column_type.clone()),
            Cell::Text(self.value.clone()),
            Cell::Timestamp(self.received_at),
            Cell::Timestamp(now),
        ]
    }
}

/// The discards of one load, one per cell (table, key, column): the last
/// wins, so one statement never touches a row twice.
#[derive(Debug, Default)]
pub(crate) struct Discards {
    list: Vec<Discard>,
    at: HashMap<(String, String, String), usize>,
}

impl Discards {
    fn push(&mut self, discard: Discard) {
        let cell = (discard.table.clone(), discard.id.clone(), discard.column.clone());
        match self.at.get(&cell) {
            Some(&i) => self.list[i] = discard,
            None => {
                self.at.insert(cell, self.list.len());
                self.list.push(discard);
            }
        }
    }

    /// The discards, in the order first seen.
    pub(crate) fn list(&self) -> &[Discard] {
        &self.list
    }
}

/// One table's rows, fitted to its existing columns.
#[derive(Debug)]
pub(crate) struct Shaped {
    /// The columns written (those with a storable name), in plan order.
    pub columns: Vec<String>,
    /// The key's index in `columns`.
    pub key: usize,
    /// The rows, one cell per column (the key is a [`Cell::Text`]), in the
    /// rounds to apply them in, one after the other. For an upsert table
    /// round `r` holds the `r`-th row of each key, a key's rows taken oldest
    /// first by the [`ORDER_COLUMNS`] (plan order among equals): so no
    /// statement touches a row twice, and a user's identifies of one plan go
    /// in as they happened. For any other table, one round of all the rows
    /// in plan order.
    pub rounds: Vec<Vec<Vec<Cell>>>,
    /// Values discarded.
    pub discarded: u64,
}

/// Fits `table`'s rows to its `existing` columns: values that do not fit go
/// to `discards` (NULL in the row); the rows of an upsert table are laid
/// out in rounds, a key's rows oldest first (see [`Shaped::rounds`]). `now`
/// is the discards' `received_at` when the row has no valid one.
///
/// # Errors
///
/// [`WarehouseError::Internal`] when a column is still missing (its DDL
/// should have added it).
pub(crate) fn shape(
    table: &TableRows,
    existing: &Columns,
    now: DateTime<Utc>,
    discards: &mut Discards,
) -> Result<Shaped, WarehouseError> {
    // (index in the plan's row, existing type) of each column written.
    let mut written: Vec<(usize, &Existing)> = Vec::with_capacity(table.columns.len());
    let mut columns = Vec::with_capacity(table.columns.len());
    let mut key = 0;
    for (i, (name, _)) in table.columns.iter().enumerate() {
        if is_reserved(name) {
            continue;
        }
        let column = existing.get(name).ok_or_else(|| {
            WarehouseError::Internal(format!("column `{name}` of `{}` is missing after its DDL", table.table))
        })?;
        if *name == table.key {
            key = columns.len();
        }
        written.push((i, column));
        columns.push(name.clone());
    }
    let plan_key = table.columns.iter().position(|(n, _)| *n == table.key);
    let received = table.columns.iter().position(|(n, _)| n == "received_at");

    let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(table.rows.len());
    let mut discarded = 0;
    for row in &table.rows {
        let id = plan_key.and_then(|k| row.get(k)).and_then(Value::to_text).unwrap_or_default();
        let received_at = || match received.and_then(|r| row.get(r)) {
            Some(Value::Timestamp(s)) => parse_timestamp(s).unwrap_or(now),
            _ => now,
        };
        let mut discard = |column: &str, column_type: &str, value: &Value| {
            discarded += 1;
            discards.push(Discard {
                id: id.clone(),
                table: table.table.clone(),
                column: column.to_owned(),
                column_type: column_type.to_owned(),
                value: value.to_text().unwrap_or_default(),
                received_at: received_at(),
            });
        };
        let mut cells = Vec::with_capacity(written.len());
        for (w, &(i, column)) in written.iter().enumerate() {
            let value = row.get(i).unwrap_or(&Value::Null);
            if w == key {
                cells.push(Cell::Text(id.clone()));
                continue;
            }
            match fit(value, column) {
                Some(cell) => cells.push(cell),
                None => {
                    discard(&table.columns[i].0, column.name(), value);
                    cells.push(Cell::Null);
                }
            }
        }
        for (i, (name, _)) in table.columns.iter().enumerate() {
            if let Some(value) = row.get(i).filter(|v| is_reserved(name) && **v != Value::Null) {
                discard(name, RESERVED, value);
            }
        }
        rows.push(cells);
    }
    let rounds = if table.upsert { rounds(&columns, key, rows) } else { vec![rows] };
    Ok(Shaped { columns, key, rounds, discarded })
}

/// The rows of an upsert table in rounds: round `r` holds the `r`-th row of
/// each key, a key's rows sorted (stably) by the [`ORDER_COLUMNS`] found in
/// `columns`, a NULL or unfit time first. Keys keep the order they first
/// appear in.
fn rounds(columns: &[String], key: usize, rows: Vec<Vec<Cell>>) -> Vec<Vec<Vec<Cell>>> {
    let [timestamp, received_at] = ORDER_COLUMNS.map(|name| order_column(columns, key, name));
    let time = |row: &[Cell], at: Option<usize>| match at.and_then(|at| row.get(at)) {
        Some(Cell::Timestamp(t)) => Some(*t),
        _ => None,
    };
    let mut by_key: Vec<Vec<Vec<Cell>>> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let id = row.get(key).and_then(Cell::as_text).unwrap_or_default().to_owned();
        let slot = *at.entry(id).or_insert_with(|| {
            by_key.push(Vec::new());
            by_key.len() - 1
        });
        by_key[slot].push(row);
    }
    let mut rounds: Vec<Vec<Vec<Cell>>> = Vec::new();
    for mut user in by_key {
        // Stable: plan order among equal times.
        user.sort_by_key(|row| (time(row, timestamp), time(row, received_at)));
        for (r, row) in user.into_iter().enumerate() {
            if rounds.len() == r {
                rounds.push(Vec::new());
            }
            rounds[r].push(row);
        }
    }
    rounds
}

// ---------------------------------------------------------------- time

/// Parses a timestamp cell: a date and time in the Segment grammar
/// ([`switchyard_types::time`]: `YYYY-MM-DD`, `T` or `t` or a space,
/// `hh:mm:ss`, an optional fraction, an optional offset; none means UTC),
/// kept to the microsecond as both backends store it. [`None`] when it is
/// not one (a date alone is not), or not a real date.
pub(crate) fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let t = Timestamp::parse_date_time(s).ok()?.truncated_to_micros();
    DateTime::from_timestamp(t.unix_seconds(), t.subsec_nanos())
}

/// `t` as the SQLite backend stores it: `2024-05-01T12:00:00.000000Z`.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    Timestamp::from_unix_micros(t.timestamp_micros()).to_rfc3339_micros()
}

/// The current time, to the microsecond (what both backends keep).
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn timestamps_parse_like_the_plan_writes_them() {
        let utc = |s: &str| parse_timestamp(s).map(|t| format_timestamp(&t));
        assert_eq!(utc("2024-05-01T12:00:00Z").as_deref(), Some("2024-05-01T12:00:00.000000Z"));
        assert_eq!(utc("2024-05-01 12:00:00.5+02:00").as_deref(), Some("2024-05-01T10:00:00.500000Z"));
        assert_eq!(utc("2024-05-01t12:00:00.1234567-0130").as_deref(), Some("2024-05-01T13:30:00.123456Z"));
        assert_eq!(utc("2024-05-01T12:00:00+01").as_deref(), Some("2024-05-01T11:00:00.000000Z"));
        assert_eq!(utc("2024-05-01T12:00:00").as_deref(), Some("2024-05-01T12:00:00.000000Z"));
        assert_eq!(utc("2016-12-31T23:59:60Z").as_deref(), Some("2017-01-01T00:00:00.000000Z"));
        for bad in ["2024-02-30T12:00:00Z", "2024-05-01", "2024-05-01T25:00:00Z", "2024-05-01T12:00:00Zx", "abc", ""] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert!(check_identifier("order").is_ok());
        assert!(check_identifier(&"a".repeat(63)).is_ok());
        for bad in ["", "a\0b"] {
            assert!(matches!(check_identifier(bad), Err(WarehouseError::InvalidIdentifier { .. })));
        }
        assert!(check_identifier(&"a".repeat(64)).is_err());
        assert_eq!(quote("order"), "\"order\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn an_upsert_updates_only_from_a_row_that_is_not_older() {
        let columns: Vec<String> = ["id", "received_at", "timestamp", "plan"].map(str::to_owned).into();
        let sql = insert_sql(Dialect::Postgres, "web", "users", &columns, 0, true, 1);
        assert!(
            sql.ends_with(
                "WHERE (excluded.\"timestamp\" < t.\"timestamp\" OR (excluded.\"timestamp\" IS NOT DISTINCT FROM \
                 t.\"timestamp\" AND (excluded.\"received_at\" < t.\"received_at\"))) IS NOT TRUE"
            ),
            "{sql}"
        );
        let only_received = insert_sql(Dialect::Sqlite, "web", "users", &columns[..2], 0, true, 1);
        assert!(only_received.ends_with("WHERE (excluded.\"received_at\" < t.\"received_at\") IS NOT TRUE"));
        let untimed = insert_sql(Dialect::Sqlite, "web", "users", &["id".to_owned(), "plan".to_owned()], 0, true, 1);
        assert!(untimed.ends_with("\"plan\" = COALESCE(excluded.\"plan\", t.\"plan\")"), "{untimed}");
        let tracks = insert_sql(Dialect::Sqlite, "web", "tracks", &columns, 0, false, 2);
        assert!(tracks.ends_with("ON CONFLICT (\"id\") DO NOTHING"), "{tracks}");
    }

    #[test]
    fn a_keys_rows_go_in_rounds_oldest_first() {
        let columns: Vec<String> = ["id", "timestamp", "received_at"].map(str::to_owned).into();
        let at = |s: &str| parse_timestamp(s).map_or(Cell::Null, Cell::Timestamp);
        let row = |id: &str, t: &str, r: &str| vec![Cell::Text(id.to_owned()), at(t), at(r)];
        let (t9, t10, t11) = ("2024-05-01T09:00:00Z", "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z");
        let got = rounds(
            &columns,
            0,
            vec![row("a", t11, t9), row("b", t10, t9), row("a", t10, t11), row("a", t10, t9), row("a", "", t9)],
        );
        let ids: Vec<Vec<(String, Cell, Cell)>> = got
            .into_iter()
            .map(|round| {
                round
                    .into_iter()
                    .map(|r| (r[0].as_text().unwrap_or_default().to_owned(), r[1].clone(), r[2].clone()))
                    .collect()
            })
            .collect();
        let cell = |id: &str, t: &str, r: &str| (id.to_owned(), at(t), at(r));
        assert_eq!(
            ids,
            [
                vec![cell("a", "", t9), cell("b", t10, t9)],
                vec![cell("a", t10, t9)],
                vec![cell("a", t10, t11)],
                vec![cell("a", t11, t9)],
            ],
            "a NULL time first, then by timestamp, then received_at; keys in order of first appearance"
        );
    }

    #[test]
    fn values_fit_their_columns_or_not() {
        use ColumnType as T;
        let k = Existing::Known;
        assert_eq!(fit(&Value::BigInt(3), &k(T::Double)), Some(Cell::Double(3.0)));
        assert_eq!(fit(&Value::Double(1.5), &k(T::Text)), Some(Cell::Text("1.5".into())));
        assert_eq!(fit(&Value::Boolean(true), &k(T::Text)), Some(Cell::Text("true".into())));
        assert_eq!(fit(&Value::Text("abc".into()), &k(T::BigInt)), None);
        assert_eq!(fit(&Value::Double(1.5), &k(T::BigInt)), None);
        assert_eq!(fit(&Value::Timestamp("nope".into()), &k(T::Timestamp)), None);
        assert_eq!(fit(&Value::Text("2024-05-01T12:00:00Z".into()), &k(T::Timestamp)), None);
        assert_eq!(fit(&Value::BigInt(1), &Existing::Other("integer".into())), None);
        assert_eq!(fit(&Value::Null, &Existing::Other("integer".into())), Some(Cell::Null));
    }
}
