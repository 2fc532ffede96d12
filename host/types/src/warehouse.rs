//! The values of a warehouse load: cells ([`Value`]), column types
//! ([`ColumnType`]), the rows for one table ([`TableRows`]) and what a load
//! did ([`LoadReport`]).
//!
//! A destination builds [`TableRows`] and hands them to the host's
//! `warehouse` capability; the host loads them with the same types, so a
//! cell's type and text form are decided once, here.

/// A column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnType {
    Text,
    BigInt,
    Double,
    Boolean,
    /// An instant, as RFC 3339 text (see [`crate::time`]).
    Timestamp,
}

impl ColumnType {
    /// The type's name, the same for every backend (the host's `discards`
    /// table records it): `text`, `bigint`, `double`, `boolean`,
    /// `timestamp`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    BigInt(i64),
    Double(f64),
    Boolean(bool),
    /// RFC 3339 text, as sent (see [`crate::time`]).
    Timestamp(String),
}

impl Value {
    /// The type of a column holding this value; [`None`] for [`Value::Null`].
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Text(_) => ColumnType::Text,
            Value::BigInt(_) => ColumnType::BigInt,
            Value::Double(_) => ColumnType::Double,
            Value::Boolean(_) => ColumnType::Boolean,
            Value::Timestamp(_) => ColumnType::Timestamp,
        })
    }

    /// The value's text form, as stored in a [`ColumnType::Text`] column and
    /// in the host's `discards` table: strings and timestamps as they are,
    /// numbers and booleans as JSON text. [`None`] for [`Value::Null`].
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Text(s) | Value::Timestamp(s) => s.clone(),
            Value::BigInt(n) => n.to_string(),
            Value::Double(f) => serde_json::Number::from_f64(*f).map_or_else(|| f.to_string(), |n| n.to_string()),
            Value::Boolean(b) => b.to_string(),
        })
    }
}

/// Rows for one table. Every row has one value per column of `columns`,
/// in that order (a column absent from an event is [`Value::Null`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TableRows {
    pub table: String,
    /// (name, type); the type is the one a new column is created with.
    pub columns: Vec<(String, ColumnType)>,
    pub rows: Vec<Vec<Value>>,
    /// The column rows are keyed on; it must be one of `columns` and never
    /// null.
    pub key: String,
    /// Whether a row whose key is already there updates the columns it sets
    /// (`users`) rather than being ignored.
    pub upsert: bool,
}

impl TableRows {
    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| n == name)
    }

    /// The type of column `name`.
    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// The value of column `name` in row `row`.
    pub fn value(&self, row: usize, name: &str) -> Option<&Value> {
        self.rows.get(row)?.get(self.column(name)?)
    }
}

/// What a load did, as the `warehouse` capability reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Rows new to their table.
    pub inserted: u64,
    /// Rows whose key was there already (ignored, or upserted).
    pub existing: u64,
    /// Values that did not fit their column and went to `discards`.
    pub discarded: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_know_their_column_type_and_text() {
        assert_eq!(Value::Null.column_type(), None);
        assert_eq!(Value::BigInt(3).column_type(), Some(ColumnType::BigInt));
        assert_eq!(Value::Timestamp("t".into()).column_type().map(ColumnType::name), Some("timestamp"));
        assert_eq!(Value::Null.to_text(), None);
        assert_eq!(Value::Double(1.0).to_text().as_deref(), Some("1.0"));
        assert_eq!(Value::Double(f64::NAN).to_text().as_deref(), Some("NaN"));
        assert_eq!(Value::Boolean(false).to_text().as_deref(), Some("false"));
        assert_eq!(Value::Text("a".into()).to_text().as_deref(), Some("a"));
    }

    #[test]
    fn rows_are_read_by_column_name() {
        let t = TableRows {
            table: "tracks".into(),
            columns: vec![("id".into(), ColumnType::Text), ("n".into(), ColumnType::BigInt)],
            rows: vec![vec![Value::Text("m".into()), Value::BigInt(1)]],
            key: "id".into(),
            upsert: false,
        };
        assert_eq!(t.column("n"), Some(1));
        assert_eq!(t.column_type("id"), Some(ColumnType::Text));
        assert_eq!(t.value(0, "n"), Some(&Value::BigInt(1)));
        assert_eq!(t.value(1, "n"), None);
        assert_eq!(t.value(0, "x"), None);
    }
}
