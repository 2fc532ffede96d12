//! The load plan: which rows a batch of Segment events becomes, per table,
//! in Segment's warehouse schema.
//!
//! # Tables
//!
//! | event | rows |
//! |---|---|
//! | `track` | one in `tracks`, one in the event's own table (`Order Completed` → `order_completed`) |
//! | `identify` | one in `identifies`; with a `userId`, also one in `users` |
//! | `page` / `screen` | one in `pages` / `screens` |
//! | `group` | one in `groups` |
//! | `alias` | one in `aliases` |
//!
//! An event's table is named with [`naming::event_table`](crate::naming::event_table): the snake_case of
//! the event name, with a leading `_` when that is a table of the schema
//! itself (`"Identifies"` → `_identifies`, `"tracks"` → `_tracks`).
//!
//! # Columns
//!
//! Every table but `users` starts with the common columns, in this order:
//! `id` (the `messageId`, the key), `anonymous_id`, `user_id` (text),
//! `received_at`, `sent_at`, `timestamp`, `original_timestamp` (timestamps
//! as the event carries them) and `uuid_ts` (the load time given to
//! [`plan_at`]). Then:
//!
//! - `tracks` and the event tables: `event` (the event's table name, so
//!   `tracks.event` names the table that holds the properties) and
//!   `event_text` (the name as sent); the event tables also the properties;
//! - `identifies`: the traits;
//! - `pages`, `screens`: `name`, and the properties. A page's top-level
//!   `category` fills a `category` column when the properties have none
//!   (analytics.js copies both `name` and `category` into the properties);
//! - `groups`: `group_id`, and the traits;
//! - `aliases`: `previous_id`.
//!
//! `users` holds only `id` (the `userId`), `received_at`, `timestamp` and
//! the traits. `timestamp` is not in Segment's `users` table: it is there
//! so the loader can tell a newer identify from an older one (see Keys).
//!
//! After the fixed columns come the others (`context_*`, properties,
//! traits) sorted by name. Each is the [`naming::sql_name`](crate::naming::sql_name) of the JSON path
//! with its keys joined by `_`: `context.app.version` →
//! `context_app_version`, `properties.shipping.zipCode` → `shipping_zip_code`
//! (properties and traits take no prefix). Nested objects are flattened to
//! any depth; arrays are stored as their JSON text.
//!
//! Properties and traits never overwrite a column of the schema: a key whose
//! column is one of the common columns, one of the table's own fixed columns
//! (`event`, `event_text`, `name`, `group_id`) or starts with `context_` is
//! dropped (`properties.timestamp`, `properties.userId`, `traits.id`, a
//! property `name` on a page...). When several keys of one event map to the
//! same column (`firstName` and `first_name`), the key already written in
//! the column's form wins, else the first in byte order of the JSON path
//! (`{"a": {"b": 1}}` before `{"a_b": 2}`), whatever the order of the keys.
//! A key with no usable name (`"🎉"`) is dropped.
//!
//! # Types
//!
//! A column's [`ColumnType`] comes from the values of the batch:
//!
//! - a string holding an RFC 3339 / ISO 8601 date *and time*
//!   (`2024-05-01T12:00:00Z`, `2024-05-01 12:00:00.5+02:00`; a missing offset
//!   means UTC) → [`Timestamp`](ColumnType::Timestamp), kept as sent; a date
//!   alone (`1990-04-12`) stays text;
//! - an integer → [`BigInt`](ColumnType::BigInt), one beyond `i64` →
//!   [`Double`](ColumnType::Double); any other number → `Double`;
//! - `true` / `false` → [`Boolean`](ColumnType::Boolean);
//! - other strings and arrays → [`Text`](ColumnType::Text);
//! - `null` (and an empty object) → nothing. Like Segment, a null alone never
//!   creates a column; a column some events of the batch have is
//!   [`Value::Null`] in the others' rows.
//!
//! The fixed columns always exist, with the types above, even when every
//! row is null there; a fixed timestamp that does not parse is null.
//!
//! # Type conflicts within a batch
//!
//! When one column gets values of different types in one table of a batch,
//! the column's type — what a new column is created as — widens: `BigInt`
//! with `Double` to `Double`, any other mix to `Text`. The values keep their
//! own types: the loader stores each as its column takes it (any value as
//! its text form in a `Text` column, an integer in a `Double` one) and
//! sends what does not fit an existing column to `discards`. So a value
//! that fits the column already in the warehouse is never turned into one
//! that does not (a redelivered `3` stays a `3` for a `bigint` column, even
//! in a batch that also holds `"many"`).
//!
//! # Keys
//!
//! Rows are keyed on `id`. For every table but `users` that is the
//! `messageId` and a repeated key is ignored, so a redelivered batch loads
//! no duplicates. `users` is keyed on the `userId` and upserted, and keeps
//! the latest state of each user: the plan holds one row per identify with
//! a `userId`, in batch order, each with its own `timestamp` and
//! `received_at` (the plan merges nothing: only the loader knows the row
//! already stored). The loader (the host's `warehouse` capability) applies
//! a user's rows oldest first, by `timestamp` then `received_at`, each only
//! when it is not older than the row stored, taking its non-null values: a
//! [`Value::Null`] in a `users` row means "not sent", so it updates with
//! `COALESCE(new, old)`. An identify older than the stored row (a replay, a
//! late batch) changes nothing there; `identifies` keeps it.
//!
//! # Events that cannot be mapped
//!
//! Returned beside the plan with the reason, and left out of it entirely: a
//! body that is not a JSON object, an empty `messageId`, a track without a
//! non-blank `event` or whose name has no letter or digit to name a table
//! with, a group without `groupId`, an alias without `previousId` or
//! `userId`. (The host already refuses most of these at ingest.) An identify
//! without `userId` is not one of them: it goes to `identifies` and only the
//! `users` row is skipped, as in Segment.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json};
use switchyard_plugin_sdk::time::Timestamp;
use switchyard_plugin_sdk::{Event, EventType};

use crate::naming::{event_table, sql_name};

pub use switchyard_plugin_sdk::warehouse::{ColumnType, TableRows, Value};

/// The rows the plan loads into one table, with the event each row came
/// from.
///
/// Every row has the same set of columns, listed in `columns` (name, type)
/// — a column absent from an event is [`Value::Null`] in that row. `key` is
/// `id` everywhere (for `users`, the user id); `upsert` is true only for
/// `users`, where a key may have several rows, one per identify, applied
/// newest last (see the [module docs](self) on how). Reads through to the
/// [`TableRows`] it loads, so `table.rows` and `table.column("id")` work on
/// it directly.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTable {
    /// What the `warehouse` capability loads.
    pub load: TableRows,
    /// Index into the batch of the event each row came from, parallel to
    /// `load.rows`.
    pub sources: Vec<usize>,
}

impl std::ops::Deref for PlannedTable {
    type Target = TableRows;

    fn deref(&self) -> &TableRows {
        &self.load
    }
}

/// The plan for one batch: every table touched, in a deterministic order
/// (sorted by table name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadPlan {
    /// The schema (dataset) the tables live in, as given to [`plan`].
    pub schema: String,
    pub tables: Vec<PlannedTable>,
}

impl LoadPlan {
    /// The rows for `table`, if the batch touches it.
    pub fn table(&self, table: &str) -> Option<&PlannedTable> {
        self.tables.iter().find(|t| t.table == table)
    }
}

/// Maps `batch` into a [`LoadPlan`] for `schema`, with `uuid_ts` set to
/// the current time. See [`plan_at`].
pub fn plan(schema: &str, batch: &[Event]) -> (LoadPlan, Vec<(usize, String)>) {
    plan_at(schema, batch, &now_rfc3339())
}

/// Maps `batch` into a [`LoadPlan`] for `schema`, with `uuid_ts` (the load
/// time) set to `now_rfc3339`, which the caller passes as an RFC 3339
/// timestamp.
///
/// Also returns the events that cannot be mapped at all, as (index in
/// `batch`, reason); they have no row anywhere in the plan. Every other
/// event has at least one row, and each row names its event in
/// [`PlannedTable::sources`]. The rules are in the [module docs](self).
pub fn plan_at(schema: &str, batch: &[Event], now_rfc3339: &str) -> (LoadPlan, Vec<(usize, String)>) {
    let mut drafts: BTreeMap<String, Draft> = BTreeMap::new();
    let mut unmapped = Vec::new();
    for (index, event) in batch.iter().enumerate() {
        match map_event(event, now_rfc3339) {
            Ok(rows) => {
                for row in rows {
                    drafts.entry(row.table).or_insert_with(|| Draft::new(row.kind)).push(index, row.values);
                }
            }
            Err(reason) => unmapped.push((index, reason)),
        }
    }
    let tables = drafts.into_iter().map(|(table, draft)| draft.finish(table)).collect();
    (LoadPlan { schema: schema.to_owned(), tables }, unmapped)
}

// ---------------------------------------------------------------- tables

/// What kind of table a row goes to: decides its fixed columns, its
/// reserved names and whether it is upserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tracks,
    /// The table of one track event.
    Event,
    Identifies,
    Users,
    Pages,
    Screens,
    Groups,
    Aliases,
}

/// The columns every table but `users` starts with.
const COMMON: [(&str, ColumnType); 8] = [
    ("id", ColumnType::Text),
    ("anonymous_id", ColumnType::Text),
    ("user_id", ColumnType::Text),
    ("received_at", ColumnType::Timestamp),
    ("sent_at", ColumnType::Timestamp),
    ("timestamp", ColumnType::Timestamp),
    ("original_timestamp", ColumnType::Timestamp),
    ("uuid_ts", ColumnType::Timestamp),
];

impl Kind {
    /// The table's own columns after [`COMMON`].
    fn extra(self) -> &'static [(&'static str, ColumnType)] {
        match self {
            Kind::Tracks | Kind::Event => &[("event", ColumnType::Text), ("event_text", ColumnType::Text)],
            Kind::Pages | Kind::Screens => &[("name", ColumnType::Text)],
            Kind::Groups => &[("group_id", ColumnType::Text)],
            Kind::Aliases => &[("previous_id", ColumnType::Text)],
            Kind::Identifies | Kind::Users => &[],
        }
    }

    /// The columns every row of the table has, in order.
    fn fixed_columns(self) -> Vec<(&'static str, ColumnType)> {
        match self {
            Kind::Users => vec![
                ("id", ColumnType::Text),
                ("received_at", ColumnType::Timestamp),
                ("timestamp", ColumnType::Timestamp),
            ],
            _ => COMMON.iter().chain(self.extra()).copied().collect(),
        }
    }

    /// Whether a property or trait column `name` is taken by the schema and
    /// must be dropped. `users` reserves what `identifies` does, so the two
    /// tables get the same trait columns.
    fn reserves(self, name: &str) -> bool {
        name.starts_with("context_")
            || COMMON.iter().any(|(n, _)| *n == name)
            || self.extra().iter().any(|(n, _)| *n == name)
    }
}

/// One row on its way into a table.
struct Row {
    table: String,
    kind: Kind,
    /// Non-null values by column.
    values: BTreeMap<String, Value>,
}

/// A table being built.
struct Draft {
    kind: Kind,
    rows: Vec<BTreeMap<String, Value>>,
    sources: Vec<usize>,
}

impl Draft {
    fn new(kind: Kind) -> Draft {
        Draft { kind, rows: Vec::new(), sources: Vec::new() }
    }

    fn push(&mut self, source: usize, values: BTreeMap<String, Value>) {
        self.rows.push(values);
        self.sources.push(source);
    }

    /// Settles the columns and their types, and lays the rows out.
    fn finish(self, table: String) -> PlannedTable {
        let fixed = self.kind.fixed_columns();
        let mut seen: BTreeMap<&str, BTreeSet<ColumnType>> = BTreeMap::new();
        for row in &self.rows {
            for (name, value) in row {
                if let Some(t) = value.column_type()
                    && !fixed.iter().any(|(n, _)| n == name)
                {
                    seen.entry(name).or_default().insert(t);
                }
            }
        }
        let columns: Vec<(String, ColumnType)> = fixed
            .iter()
            .map(|&(n, t)| (n.to_owned(), t))
            .chain(seen.into_iter().map(|(n, types)| (n.to_owned(), widen(&types))))
            .collect();
        let rows = self
            .rows
            .iter()
            .map(|row| columns.iter().map(|(n, t)| row.get(n).map_or(Value::Null, |v| coerce(v, *t))).collect())
            .collect();
        PlannedTable {
            load: TableRows { table, columns, rows, key: "id".to_owned(), upsert: self.kind == Kind::Users },
            sources: self.sources,
        }
    }
}

/// The one type for a column that saw `types`: BigInt and Double make
/// Double, any other mix Text.
fn widen(types: &BTreeSet<ColumnType>) -> ColumnType {
    match types.iter().collect::<Vec<_>>().as_slice() {
        [only] => **only,
        _ if types.iter().all(|t| matches!(t, ColumnType::BigInt | ColumnType::Double)) => ColumnType::Double,
        _ => ColumnType::Text,
    }
}

/// `value` for a column of type `to`: unchanged (see "Type conflicts
/// within a batch" above); the loader fits it to the column.
fn coerce(value: &Value, _to: ColumnType) -> Value {
    value.clone()
}

// ---------------------------------------------------------------- events

/// The rows of one event, or why it has none.
fn map_event(event: &Event, now: &str) -> Result<Vec<Row>, String> {
    let json: Json = serde_json::from_str(event.json()).map_err(|e| format!("event is not valid JSON: {e}"))?;
    let Json::Object(obj) = json else {
        return Err("event is not a JSON object".to_owned());
    };
    if event.message_id.is_empty() {
        return Err("empty `messageId`".to_owned());
    }
    let user_id = event.user_id.clone().filter(|s| !s.is_empty()).or_else(|| id_text(&obj, "userId"));
    let anonymous_id = event.anonymous_id.clone().filter(|s| !s.is_empty()).or_else(|| id_text(&obj, "anonymousId"));

    let mut common = BTreeMap::new();
    common.insert("id".to_owned(), Value::Text(event.message_id.clone()));
    put(&mut common, "anonymous_id", anonymous_id.map(Value::Text));
    put(&mut common, "user_id", user_id.clone().map(Value::Text));
    for (column, key) in [
        ("received_at", "receivedAt"),
        ("sent_at", "sentAt"),
        ("timestamp", "timestamp"),
        ("original_timestamp", "originalTimestamp"),
    ] {
        put(&mut common, column, time(&obj, key));
    }
    common.insert("uuid_ts".to_owned(), Value::Timestamp(now.to_owned()));
    if let Some(Json::Object(context)) = obj.get("context") {
        let mut entries = Vec::new();
        flatten(&["context".to_owned()], context, &mut entries);
        common.extend(columns(entries, |name| !name.starts_with("context_")));
    }

    let row = |table: &str, kind: Kind, values: BTreeMap<String, Value>| Row { table: table.to_owned(), kind, values };
    let free = |key: &str, kind: Kind| match obj.get(key) {
        Some(Json::Object(map)) => {
            let mut entries = Vec::new();
            flatten(&[], map, &mut entries);
            columns(entries, |name| kind.reserves(name))
        }
        _ => BTreeMap::new(),
    };

    Ok(match event.kind {
        EventType::Track => {
            let raw = event
                .name
                .clone()
                .or_else(|| obj.get("event").and_then(Json::as_str).map(str::to_owned))
                .filter(|s| !s.trim().is_empty())
                .ok_or("track without an `event` name")?;
            let table = event_table(&raw)
                .ok_or_else(|| format!("event name {raw:?} has no letter or digit to name a table"))?;
            let mut tracks = common;
            tracks.insert("event".to_owned(), Value::Text(table.clone()));
            tracks.insert("event_text".to_owned(), Value::Text(raw));
            let mut own = tracks.clone();
            own.extend(free("properties", Kind::Event));
            vec![row("tracks", Kind::Tracks, tracks), row(&table, Kind::Event, own)]
        }
        EventType::Identify => {
            let traits = free("traits", Kind::Identifies);
            let mut rows = Vec::with_capacity(2);
            if let Some(user_id) = user_id {
                let mut user = traits.clone();
                user.insert("id".to_owned(), Value::Text(user_id));
                put(&mut user, "received_at", time(&obj, "receivedAt"));
                put(&mut user, "timestamp", time(&obj, "timestamp"));
                rows.push(row("users", Kind::Users, user));
            }
            let mut identify = common;
            identify.extend(traits);
            rows.insert(0, row("identifies", Kind::Identifies, identify));
            rows
        }
        kind @ (EventType::Page | EventType::Screen) => {
            let (table, kind) =
                if kind == EventType::Page { ("pages", Kind::Pages) } else { ("screens", Kind::Screens) };
            let mut view = common;
            put(&mut view, "name", event.name.clone().or_else(|| id_text(&obj, "name")).map(Value::Text));
            let mut properties = free("properties", kind);
            if let Some(category) = id_text(&obj, "category") {
                properties.entry("category".to_owned()).or_insert(Value::Text(category));
            }
            view.extend(properties);
            vec![row(table, kind, view)]
        }
        EventType::Group => {
            let group_id = id_text(&obj, "groupId").ok_or("group without `groupId`")?;
            let mut group = common;
            group.insert("group_id".to_owned(), Value::Text(group_id));
            group.extend(free("traits", Kind::Groups));
            vec![row("groups", Kind::Groups, group)]
        }
        EventType::Alias => {
            let previous_id = id_text(&obj, "previousId").ok_or("alias without `previousId`")?;
            if user_id.is_none() {
                return Err("alias without `userId`".to_owned());
            }
            let mut alias = common;
            alias.insert("previous_id".to_owned(), Value::Text(previous_id));
            vec![row("aliases", Kind::Aliases, alias)]
        }
    })
}

fn put(values: &mut BTreeMap<String, Value>, column: &str, value: Option<Value>) {
    if let Some(value) = value {
        values.insert(column.to_owned(), value);
    }
}

/// An id-like member: a non-empty string, or a number as text.
fn id_text(obj: &Map<String, Json>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A timestamp member for a fixed column: null unless it parses.
fn time(obj: &Map<String, Json>, key: &str) -> Option<Value> {
    match obj.get(key)? {
        Json::String(s) if is_timestamp(s) => Some(Value::Timestamp(s.clone())),
        _ => None,
    }
}

/// Whether `s` is a date and time in the Segment timestamp grammar
/// ([`switchyard_plugin_sdk::time`]: `YYYY-MM-DD`, `T` or a space,
/// `hh:mm:ss`, optional fraction, optional offset), with nothing around it.
fn is_timestamp(s: &str) -> bool {
    s.trim() == s && Timestamp::parse_date_time(s).is_ok()
}

/// The leaves of `obj` as (path of keys below `prefix`, value), objects
/// flattened; nulls and empty objects leave nothing.
fn flatten(prefix: &[String], obj: &Map<String, Json>, out: &mut Vec<(Vec<String>, Value)>) {
    for (key, value) in obj {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        match value {
            Json::Null => {}
            Json::Object(inner) => flatten(&path, inner, out),
            leaf => out.push((path, scalar(leaf))),
        }
    }
}

/// A JSON leaf as a cell: see the module docs on types.
fn scalar(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::BigInt(i),
            None => n.as_f64().map_or(Value::Null, Value::Double),
        },
        Json::String(s) if is_timestamp(s) => Value::Timestamp(s.clone()),
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => Value::Text(value.to_string()),
    }
}

/// Names flattened entries (keys joined by `_`), drops the ones `dropped`
/// rejects or that have no usable name, and settles collisions: of several
/// paths naming one column, the one already in the column's form wins, else
/// the first in byte order of the joined path, then of its keys one by one
/// (so the outcome never depends on the order of keys in the JSON).
fn columns(entries: Vec<(Vec<String>, Value)>, dropped: impl Fn(&str) -> bool) -> BTreeMap<String, Value> {
    type Rank = (bool, String, Vec<String>);
    let mut best: BTreeMap<String, (Rank, Value)> = BTreeMap::new();
    for (keys, value) in entries {
        let joined = keys.join("_");
        let Some(column) = sql_name(&joined) else { continue };
        if dropped(&column) {
            continue;
        }
        let rank = (column != joined, joined, keys);
        match best.get(&column) {
            Some((held, _)) if *held <= rank => {}
            _ => {
                best.insert(column, (rank, value));
            }
        }
    }
    best.into_iter().map(|(column, (_, value))| (column, value)).collect()
}

// ---------------------------------------------------------------- time

/// The current time as RFC 3339 in UTC with milliseconds.
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    format_rfc3339_ms(ms)
}

/// `ms` since the Unix epoch as `YYYY-MM-DDThh:mm:ss.sssZ`.
pub(crate) fn format_rfc3339_ms(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).to_rfc3339_millis()
}
