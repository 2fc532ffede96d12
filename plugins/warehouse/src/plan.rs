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
//! any depth; arrays are stored as their JSON text, compact as serde_json
//! writes it (no spaces, object keys sorted, `1.50` as `1.5`).
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
//!   [`Double`](ColumnType::Double); any other number (`2.0`, `1e3`, `-0`)
//!   → `Double`;
//! - `true` / `false` → [`Boolean`](ColumnType::Boolean);
//! - other strings and arrays → [`Text`](ColumnType::Text);
//! - `null` (and an empty object) → nothing. Like Segment, a null alone never
//!   creates a column; a column some events of the batch have is
//!   [`Value::Null`] in the others' rows;
//! - a value serde_json cannot read into a `serde_json::Value` (the host's
//!   syntax check at ingest lets it through): a number beyond `f64`'s range
//!   (`1e400`), a string with a lone surrogate escape (`"\ud800"`), an array
//!   holding one → null, as if not sent; the rest of the row loads. An id
//!   or name sent so is absent too (a group with such a `groupId` cannot be
//!   mapped), and a key with a lone surrogate reads as the empty key.
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
//! body that is not JSON or not a JSON object, an empty `messageId`, a track
//! without a non-blank `event` or whose name has no letter or digit to name
//! a table with, a group without `groupId`, an alias without `previousId`
//! or `userId`. (The host already refuses most of these at ingest.) An identify
//! without `userId` is not one of them: it goes to `identifies` and only the
//! `users` row is skipped, as in Segment.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use switchyard_plugin_sdk::json::{Document, Json, Kind as JsonKind, Object};
use switchyard_plugin_sdk::time::Timestamp;
use switchyard_plugin_sdk::{Event, EventType, EventView};

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
///
/// Each event is read once through its borrowed [`EventView`]: cells are
/// made straight from the event's JSON text, each column name is computed
/// once per batch (per distinct JSON path) and rows name their columns by
/// index until the tables are laid out.
pub fn plan_at(schema: &str, batch: &[Event], now_rfc3339: &str) -> (LoadPlan, Vec<(usize, String)>) {
    let mut planner = Planner::new(now_rfc3339);
    let mut unmapped = Vec::new();
    for (index, event) in batch.iter().enumerate() {
        if let Err(reason) = planner.add(index, event) {
            unmapped.push((index, reason));
        }
    }
    (LoadPlan { schema: schema.to_owned(), tables: planner.finish() }, unmapped)
}

// ---------------------------------------------------------------- columns

/// A column of the batch: an index into [`Columns`]. The columns the
/// schema itself names have the fixed ids below.
type ColumnId = usize;

const ID: ColumnId = 0;
const ANONYMOUS_ID: ColumnId = 1;
const USER_ID: ColumnId = 2;
const RECEIVED_AT: ColumnId = 3;
const SENT_AT: ColumnId = 4;
const TIMESTAMP: ColumnId = 5;
const ORIGINAL_TIMESTAMP: ColumnId = 6;
const UUID_TS: ColumnId = 7;
const EVENT: ColumnId = 8;
const EVENT_TEXT: ColumnId = 9;
const NAME: ColumnId = 10;
const GROUP_ID: ColumnId = 11;
const PREVIOUS_ID: ColumnId = 12;
/// Not a fixed column: the one a page's top-level `category` fills.
const CATEGORY: ColumnId = 13;

/// The names of the ids above, in id order.
const KNOWN: [&str; 14] = [
    "id",
    "anonymous_id",
    "user_id",
    "received_at",
    "sent_at",
    "timestamp",
    "original_timestamp",
    "uuid_ts",
    "event",
    "event_text",
    "name",
    "group_id",
    "previous_id",
    "category",
];

/// One cell of a row on its way into a table.
type Cell = (ColumnId, Value);

/// The column names of a batch, each stored once, and the JSON paths seen
/// with the column each names (so [`sql_name`] runs once per distinct
/// path, not once per event).
struct Columns {
    /// By [`ColumnId`].
    names: Vec<String>,
    ids: HashMap<String, ColumnId>,
    /// JSON paths (keys joined by `_`) by [`PathId`].
    paths: Vec<PathName>,
    path_ids: HashMap<String, PathId>,
}

/// A JSON path seen in the batch: an index into [`Columns::paths`].
type PathId = usize;

/// A JSON path, keys joined by `_`, and the column it names.
struct PathName {
    joined: String,
    /// [`None`] when the path has no usable name (`"🎉"`).
    column: Option<ColumnId>,
    /// Whether the path is already written in its column's form.
    canonical: bool,
}

/// Which object of an event is being flattened: decides the columns its
/// members may fill.
#[derive(Debug, Clone, Copy)]
enum Fills {
    /// `context`: only `context_*` columns.
    Context,
    /// Properties or traits going to a table of this kind: any column but
    /// `context_*` ones and those the kind reserves ([`Kind::reserves`]).
    Free(Kind),
}

impl Columns {
    fn new() -> Columns {
        const EXPECTED: usize = 64;
        let mut columns = Columns {
            names: Vec::with_capacity(EXPECTED),
            ids: HashMap::with_capacity(EXPECTED),
            paths: Vec::with_capacity(EXPECTED),
            path_ids: HashMap::with_capacity(EXPECTED),
        };
        for name in KNOWN {
            columns.intern(name.to_owned());
        }
        columns
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn name(&self, column: ColumnId) -> &str {
        &self.names[column]
    }

    /// The id of column `name`, added when new.
    fn intern(&mut self, name: String) -> ColumnId {
        if let Some(&id) = self.ids.get(&name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The id of JSON path `joined`, named on first sight.
    fn path(&mut self, joined: &str) -> PathId {
        if let Some(&id) = self.path_ids.get(joined) {
            return id;
        }
        let column = sql_name(joined).map(|name| self.intern(name));
        let canonical = column.is_some_and(|c| self.name(c) == joined);
        let id = self.paths.len();
        self.paths.push(PathName { joined: joined.to_owned(), column, canonical });
        self.path_ids.insert(joined.to_owned(), id);
        id
    }

    /// Whether a member of the object being flattened may fill `column`.
    fn fills(&self, column: ColumnId, fills: Fills) -> bool {
        let contextual = self.name(column).starts_with("context_");
        match fills {
            Fills::Context => contextual,
            Fills::Free(kind) => !contextual && !kind.reserves(column),
        }
    }
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
const COMMON: [(ColumnId, ColumnType); 8] = [
    (ID, ColumnType::Text),
    (ANONYMOUS_ID, ColumnType::Text),
    (USER_ID, ColumnType::Text),
    (RECEIVED_AT, ColumnType::Timestamp),
    (SENT_AT, ColumnType::Timestamp),
    (TIMESTAMP, ColumnType::Timestamp),
    (ORIGINAL_TIMESTAMP, ColumnType::Timestamp),
    (UUID_TS, ColumnType::Timestamp),
];

/// The columns of `users`.
const USERS: [(ColumnId, ColumnType); 3] =
    [(ID, ColumnType::Text), (RECEIVED_AT, ColumnType::Timestamp), (TIMESTAMP, ColumnType::Timestamp)];

impl Kind {
    /// The table's own columns after [`COMMON`].
    fn extra(self) -> &'static [(ColumnId, ColumnType)] {
        match self {
            Kind::Tracks | Kind::Event => &[(EVENT, ColumnType::Text), (EVENT_TEXT, ColumnType::Text)],
            Kind::Pages | Kind::Screens => &[(NAME, ColumnType::Text)],
            Kind::Groups => &[(GROUP_ID, ColumnType::Text)],
            Kind::Aliases => &[(PREVIOUS_ID, ColumnType::Text)],
            Kind::Identifies | Kind::Users => &[],
        }
    }

    /// The columns every row of the table has, in order.
    fn fixed_columns(self) -> Vec<(ColumnId, ColumnType)> {
        match self {
            Kind::Users => USERS.to_vec(),
            _ => COMMON.iter().chain(self.extra()).copied().collect(),
        }
    }

    /// Whether `column` is one of the table's fixed columns, which no
    /// property or trait may fill. `users` reserves what `identifies` does,
    /// so the two tables get the same trait columns.
    fn reserves(self, column: ColumnId) -> bool {
        COMMON.iter().chain(self.extra()).any(|&(id, _)| id == column)
    }
}

/// A table being built: its rows, sparse (the non-null cells of each,
/// back to back), and the types each column has seen.
struct Draft {
    kind: Kind,
    cells: Vec<Cell>,
    /// Where each row ends in `cells`.
    row_ends: Vec<usize>,
    sources: Vec<usize>,
    /// By [`ColumnId`]: the column's type so far ([`widen`]); [`None`] for
    /// a column the table has no value in.
    types: Vec<Option<ColumnType>>,
}

impl Draft {
    fn new(kind: Kind) -> Draft {
        Draft { kind, cells: Vec::new(), row_ends: Vec::new(), sources: Vec::new(), types: Vec::new() }
    }

    /// Adds a row of event `source` made of `cells`.
    fn push(&mut self, source: usize, cells: impl IntoIterator<Item = Cell>) {
        let start = self.cells.len();
        self.cells.extend(cells);
        for (column, value) in &self.cells[start..] {
            if let Some(t) = value.column_type() {
                if self.types.len() <= *column {
                    self.types.resize(column + 1, None);
                }
                let seen = &mut self.types[*column];
                *seen = Some(seen.map_or(t, |seen| widen(seen, t)));
            }
        }
        self.row_ends.push(self.cells.len());
        self.sources.push(source);
    }

    /// Settles the columns and their types, and lays the rows out: the
    /// fixed columns, then the others that hold a value, sorted by name.
    fn finish(self, table: String, names: &Columns) -> PlannedTable {
        let fixed = self.kind.fixed_columns();
        let mut others: Vec<(ColumnId, ColumnType)> = self
            .types
            .iter()
            .enumerate()
            .filter_map(|(column, &seen)| Some((column, seen?)))
            .filter(|&(column, _)| !fixed.iter().any(|&(f, _)| f == column))
            .collect();
        others.sort_unstable_by(|a, b| names.name(a.0).cmp(names.name(b.0)));
        let layout: Vec<(ColumnId, ColumnType)> = fixed.into_iter().chain(others).collect();
        // By column: its index in the row (past the end for a null-only one).
        let mut position = vec![usize::MAX; names.len()];
        for (at, &(column, _)) in layout.iter().enumerate() {
            position[column] = at;
        }
        let mut cells = self.cells.into_iter();
        let mut start = 0;
        let rows = self
            .row_ends
            .iter()
            .map(|&end| {
                let mut row = vec![Value::Null; layout.len()];
                for (column, value) in cells.by_ref().take(end - start) {
                    if let Some(slot) = row.get_mut(position[column]) {
                        *slot = value;
                    }
                }
                start = end;
                row
            })
            .collect();
        let columns = layout.iter().map(|&(column, t)| (names.name(column).to_owned(), t)).collect();
        PlannedTable {
            load: TableRows { table, columns, rows, key: "id".to_owned(), upsert: self.kind == Kind::Users },
            sources: self.sources,
        }
    }
}

/// The one type for a column with values of types `a` and `b`: BigInt and
/// Double make Double, any other mix Text.
fn widen(a: ColumnType, b: ColumnType) -> ColumnType {
    match (a, b) {
        _ if a == b => a,
        (ColumnType::BigInt, ColumnType::Double) | (ColumnType::Double, ColumnType::BigInt) => ColumnType::Double,
        _ => ColumnType::Text,
    }
}

// ---------------------------------------------------------------- events

/// The plan being built, and what it keeps from one event to the next.
struct Planner<'n> {
    now: &'n str,
    columns: Columns,
    flattener: Flattener,
    /// The table of each track event name seen ([`event_table`]).
    event_tables: HashMap<String, Option<String>>,
    drafts: Drafts,
    /// The cells of the event being mapped that all its rows but `users`
    /// share: the common ones and the context.
    shared: Vec<Cell>,
    /// Its properties or traits.
    free: Vec<Cell>,
}

impl<'n> Planner<'n> {
    fn new(now: &'n str) -> Planner<'n> {
        Planner {
            now,
            columns: Columns::new(),
            flattener: Flattener::default(),
            event_tables: HashMap::new(),
            drafts: Drafts::default(),
            shared: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Adds the rows of event `index` to the plan, or says why it has
    /// none (and then adds nothing).
    fn add(&mut self, index: usize, event: &Event) -> Result<(), String> {
        // The host checked the syntax at ingest: this refuses only what
        // bypassed it, or a body that is not an object.
        let view = event.view().map_err(|_| match Document::parse(event.json()) {
            Err(e) => format!("event is not valid JSON: {} at byte {}", e.reason, e.at),
            Ok(_) => "event is not a JSON object".to_owned(),
        })?;
        if event.message_id.is_empty() {
            return Err("empty `messageId`".to_owned());
        }
        let user_id = host_id(&event.user_id).or_else(|| id_text(view.get("userId")));
        let anonymous_id = host_id(&event.anonymous_id).or_else(|| id_text(view.get("anonymousId")));
        let ids = Ids { user_id: user_id.as_deref(), anonymous_id: anonymous_id.as_deref() };
        self.shared.clear();
        self.free.clear();

        match event.kind {
            EventType::Track => {
                let raw = event
                    .name
                    .as_deref()
                    .map(Cow::Borrowed)
                    .or_else(|| view.get("event").and_then(Json::str))
                    .filter(|s| !s.trim().is_empty())
                    .ok_or("track without an `event` name")?;
                let table = self
                    .event_table(&raw)
                    .ok_or_else(|| format!("event name {raw:?} has no letter or digit to name a table"))?;
                self.common(event, &view, ids);
                self.shared.push((EVENT_TEXT, Value::Text(raw.into_owned())));
                self.flatten(&view.properties(), Fills::Free(Kind::Event));
                let tracks_event = (EVENT, Value::Text(table.clone()));
                self.drafts.get("tracks", Kind::Tracks).push(index, self.shared.iter().cloned().chain([tracks_event]));
                let own = self.drafts.get(&table, Kind::Event);
                own.push(index, self.shared.drain(..).chain([(EVENT, Value::Text(table))]).chain(self.free.drain(..)));
            }
            EventType::Identify => {
                self.common(event, &view, ids);
                self.flatten(&view.traits(), Fills::Free(Kind::Identifies));
                if let Some(user_id) = user_id {
                    // `received_at` and `timestamp` as the common cells read them.
                    let times = self.shared.iter().filter(|(c, _)| matches!(*c, RECEIVED_AT | TIMESTAMP)).cloned();
                    let row = [(ID, Value::Text(user_id.into_owned()))].into_iter().chain(times);
                    self.drafts.get("users", Kind::Users).push(index, row.chain(self.free.iter().cloned()));
                }
                let row = self.shared.drain(..).chain(self.free.drain(..));
                self.drafts.get("identifies", Kind::Identifies).push(index, row);
            }
            kind @ (EventType::Page | EventType::Screen) => {
                let (table, kind) =
                    if kind == EventType::Page { ("pages", Kind::Pages) } else { ("screens", Kind::Screens) };
                self.common(event, &view, ids);
                let name = event.name.as_deref().map(Cow::Borrowed).or_else(|| id_text(view.get("name")));
                self.shared.extend(name.map(|n| (NAME, Value::Text(n.into_owned()))));
                self.flatten(&view.properties(), Fills::Free(kind));
                if !self.free.iter().any(|&(column, _)| column == CATEGORY)
                    && let Some(category) = id_text(view.get("category"))
                {
                    self.free.push((CATEGORY, Value::Text(category.into_owned())));
                }
                self.drafts.get(table, kind).push(index, self.shared.drain(..).chain(self.free.drain(..)));
            }
            EventType::Group => {
                let group_id = id_text(view.get("groupId")).ok_or("group without `groupId`")?;
                self.common(event, &view, ids);
                self.shared.push((GROUP_ID, Value::Text(group_id.into_owned())));
                self.flatten(&view.traits(), Fills::Free(Kind::Groups));
                self.drafts.get("groups", Kind::Groups).push(index, self.shared.drain(..).chain(self.free.drain(..)));
            }
            EventType::Alias => {
                let previous_id = id_text(view.get("previousId")).ok_or("alias without `previousId`")?;
                if ids.user_id.is_none() {
                    return Err("alias without `userId`".to_owned());
                }
                self.common(event, &view, ids);
                self.shared.push((PREVIOUS_ID, Value::Text(previous_id.into_owned())));
                self.drafts.get("aliases", Kind::Aliases).push(index, self.shared.drain(..));
            }
        }
        Ok(())
    }

    /// Puts the common cells of an event (see the module docs on columns)
    /// and its flattened `context` in `shared`.
    fn common(&mut self, event: &Event, view: &EventView<'_>, ids: Ids<'_>) {
        let cells = &mut self.shared;
        cells.push((ID, Value::Text(event.message_id.clone())));
        cells.extend(ids.anonymous_id.map(|id| (ANONYMOUS_ID, Value::Text(id.to_owned()))));
        cells.extend(ids.user_id.map(|id| (USER_ID, Value::Text(id.to_owned()))));
        for (column, key) in [
            (RECEIVED_AT, "receivedAt"),
            (SENT_AT, "sentAt"),
            (TIMESTAMP, "timestamp"),
            (ORIGINAL_TIMESTAMP, "originalTimestamp"),
        ] {
            cells.extend(time(view, key).map(|t| (column, t)));
        }
        cells.push((UUID_TS, Value::Timestamp(self.now.to_owned())));
        self.flattener.flatten(&mut self.columns, "context", &view.context(), Fills::Context, cells);
    }

    /// Puts the cells of properties or traits `object` in `free`: see
    /// [`Flattener`].
    fn flatten(&mut self, object: &Object<'_>, fills: Fills) {
        self.flattener.flatten(&mut self.columns, "", object, fills, &mut self.free);
    }

    /// The table of track event `name`, from the cache.
    fn event_table(&mut self, name: &str) -> Option<String> {
        if let Some(table) = self.event_tables.get(name) {
            return table.clone();
        }
        let table = event_table(name);
        self.event_tables.insert(name.to_owned(), table.clone());
        table
    }

    /// The tables, sorted by name.
    fn finish(self) -> Vec<PlannedTable> {
        self.drafts.finish(&self.columns)
    }
}

/// The tables being built, in the order first touched. The schema's own
/// tables and the event tables share one namespace: [`event_table`] never
/// names an event's table like one of the schema's.
#[derive(Default)]
struct Drafts {
    tables: Vec<(String, Draft)>,
    by_name: HashMap<String, usize>,
}

impl Drafts {
    /// The draft of `table`, started as a table of `kind` when new.
    fn get(&mut self, table: &str, kind: Kind) -> &mut Draft {
        let at = match self.by_name.get(table) {
            Some(&at) => at,
            None => {
                self.by_name.insert(table.to_owned(), self.tables.len());
                self.tables.push((table.to_owned(), Draft::new(kind)));
                self.tables.len() - 1
            }
        };
        &mut self.tables[at].1
    }

    /// The tables, sorted by name.
    fn finish(mut self, columns: &Columns) -> Vec<PlannedTable> {
        self.tables.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.tables.into_iter().map(|(table, draft)| draft.finish(table, columns)).collect()
    }
}

/// An event's ids, as the common columns take them.
#[derive(Clone, Copy)]
struct Ids<'a> {
    user_id: Option<&'a str>,
    anonymous_id: Option<&'a str>,
}

/// An id the host read, when not empty.
fn host_id(id: &Option<String>) -> Option<Cow<'_, str>> {
    id.as_deref().filter(|s| !s.is_empty()).map(Cow::Borrowed)
}

/// An id-like member: a non-empty string, or a number as text (as
/// serde_json writes the number: `1.50` → `1.5`).
fn id_text(value: Option<Json<'_>>) -> Option<Cow<'_, str>> {
    let value = value?;
    match value.kind() {
        JsonKind::String => value.str().filter(|s| !s.is_empty()),
        JsonKind::Number => Some(Cow::Owned(number(value.raw())?.to_string())),
        _ => None,
    }
}

/// A timestamp member for a fixed column: null unless it parses.
fn time(view: &EventView<'_>, key: &str) -> Option<Value> {
    view.time_text(key).filter(|s| is_timestamp(s)).map(|s| Value::Timestamp(s.into_owned()))
}

/// Whether `s` is a date and time in the Segment timestamp grammar
/// ([`switchyard_plugin_sdk::time`]: `YYYY-MM-DD`, `T` or a space,
/// `hh:mm:ss`, optional fraction, optional offset), with nothing around it.
fn is_timestamp(s: &str) -> bool {
    // The shortest date and time, `YYYY-MM-DDThh:mm:ss`, has 19 bytes and
    // starts with a digit: most strings are ruled out without parsing.
    s.len() >= 19 && s.as_bytes()[0].is_ascii_digit() && s.trim() == s && Timestamp::parse_date_time(s).is_ok()
}

// ---------------------------------------------------------------- flattening

/// Flattens one object of an event (`context`, `properties`, `traits`)
/// into cells, one per column: nested objects to any depth, their keys
/// joined by `_`; nulls and empty objects leave nothing.
///
/// Of several paths naming one column, the one already in the column's
/// form wins, else the first in byte order of the joined path, then of its
/// keys one by one (so the outcome never depends on the order of keys in
/// the JSON). A leaf's value is made only when its path wins (so far).
///
/// Its buffers are kept from one object to the next.
#[derive(Default)]
struct Flattener {
    /// The path of the member being read, keys joined by `_`.
    path: String,
    /// Where each key of `path` ends.
    ends: Vec<usize>,
    /// The leading path of each column found in the current object.
    found: Vec<Found>,
    /// The `ends` of each found path, back to back.
    found_ends: Vec<usize>,
    /// By [`ColumnId`]: the column's index into `found`, if found.
    slots: Vec<Option<usize>>,
}

/// The path leading for one column so far, and its value.
struct Found {
    column: ColumnId,
    path: PathId,
    /// Its key ends, in [`Flattener::found_ends`].
    ends: Range<usize>,
    value: Value,
}

impl Flattener {
    /// Appends the cells of `object`'s leaves to `out`, their paths below
    /// `prefix` (`context` for the context, else none); `fills` says which
    /// columns they may fill, the others are dropped.
    fn flatten(&mut self, columns: &mut Columns, prefix: &str, object: &Object<'_>, fills: Fills, out: &mut Vec<Cell>) {
        self.path.clear();
        self.ends.clear();
        self.found.clear();
        self.found_ends.clear();
        if !prefix.is_empty() {
            self.path.push_str(prefix);
            self.ends.push(self.path.len());
        }
        self.walk(columns, object, fills);
        for found in self.found.drain(..) {
            self.slots[found.column] = None;
            out.push((found.column, found.value));
        }
    }

    fn walk(&mut self, columns: &mut Columns, object: &Object<'_>, fills: Fills) {
        for (key, value) in object.iter() {
            let kind = value.kind();
            if kind == JsonKind::Null {
                continue;
            }
            let start = self.path.len();
            if !self.ends.is_empty() {
                self.path.push('_');
            }
            self.path.push_str(&key);
            self.ends.push(self.path.len());
            if kind == JsonKind::Object {
                if let Some(inner) = value.object() {
                    self.walk(columns, &inner, fills);
                }
            } else {
                self.leaf(columns, value, fills);
            }
            self.ends.pop();
            self.path.truncate(start);
        }
    }

    /// Takes the leaf at `path` for its column if it leads there.
    fn leaf(&mut self, columns: &mut Columns, value: Json<'_>, fills: Fills) {
        let path = columns.path(&self.path);
        let Some(column) = columns.paths[path].column else { return };
        if !columns.fills(column, fills) {
            return;
        }
        if self.slots.len() <= column {
            self.slots.resize(columns.len(), None);
        }
        let held = self.slots[column];
        if held.is_some_and(|at| !self.outranks(columns, path, &self.found[at])) {
            return;
        }
        let start = self.found_ends.len();
        self.found_ends.extend_from_slice(&self.ends);
        let found = Found { column, path, ends: start..self.found_ends.len(), value: cell(value) };
        match held {
            Some(at) => self.found[at] = found,
            None => {
                self.slots[column] = Some(self.found.len());
                self.found.push(found);
            }
        }
    }

    /// Whether the path being read, `path`, names its column better than
    /// `held`'s path: in the column's form first, then by joined path,
    /// then by its keys.
    fn outranks(&self, columns: &Columns, path: PathId, held: &Found) -> bool {
        if path == held.path {
            // One joined path, split into keys differently (`a.b`, `a_b`):
            // the keys compare as their ends do (a shorter key is a prefix).
            return self.ends.as_slice() < &self.found_ends[held.ends.clone()];
        }
        let (new, old) = (&columns.paths[path], &columns.paths[held.path]);
        (!new.canonical, new.joined.as_str()) < (!old.canonical, old.joined.as_str())
    }
}

/// A JSON leaf as a cell: see the module docs on types.
fn cell(value: Json<'_>) -> Value {
    match value.kind() {
        JsonKind::Null => Value::Null,
        JsonKind::Bool => value.bool().map_or(Value::Null, Value::Boolean),
        JsonKind::Number => number_cell(value.raw()),
        JsonKind::String => match value.str() {
            Some(s) if is_timestamp(&s) => Value::Timestamp(s.into_owned()),
            Some(s) => Value::Text(s.into_owned()),
            None => Value::Null,
        },
        // As serde_json writes it (keys sorted, `1.50` as `1.5`), as the plan
        // always has: arrays are rare, the tree built on the way is cheap.
        JsonKind::Array | JsonKind::Object => {
            serde_json::from_str::<serde_json::Value>(value.raw()).map_or(Value::Null, |v| Value::Text(v.to_string()))
        }
    }
}

/// A JSON number as a cell, read as serde_json reads it: an integer that
/// fits `i64` is a [`Value::BigInt`], any other number (`1.0`, `-0`, one
/// beyond `i64`) a [`Value::Double`]; one beyond `f64` (`1e400`) is null.
fn number_cell(raw: &str) -> Value {
    match number(raw) {
        Some(n) => n.as_i64().map_or_else(|| n.as_f64().map_or(Value::Null, Value::Double), Value::BigInt),
        None => Value::Null,
    }
}

/// A JSON number's text as serde_json reads it; [`None`] beyond `f64`.
fn number(raw: &str) -> Option<serde_json::Number> {
    serde_json::from_str(raw).ok()
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

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::testing::event;

    use super::*;

    const NOW: &str = "2024-05-01T12:00:30.000Z";

    /// What the host's syntax check lets through and serde_json cannot read
    /// into a value (a lone surrogate, a number beyond `f64`) costs that
    /// value, not the row.
    #[test]
    fn a_value_serde_json_cannot_read_is_null_and_the_row_stays() {
        for raw in [r#""\ud800""#, r#""a\udc00""#, "1e400", "-1e400", "[1,1e400]", r#"["\ud800"]"#, r#"{"y":1e400}"#] {
            let mut e = event(serde_json::json!({"type": "track", "event": "E", "messageId": "m", "userId": "u"}));
            e.json = format!(
                r#"{{"type":"track","event":"E","messageId":"m","userId":"u","integrations":{{"All":{raw}}},"context":{{"x":{raw}}},"properties":{{"x":{raw},"kept":1}}}}"#
            );
            let (plan, unmapped) = plan_at("s", &[e], NOW);
            assert_eq!(unmapped, vec![], "{raw}");
            let t = plan.table("e").expect("the row stays");
            let free: Vec<&str> = t.columns.iter().skip(10).map(|(name, _)| name.as_str()).collect();
            assert_eq!(free, ["kept"], "{raw}");
            assert_eq!(t.value(0, "kept"), Some(&Value::BigInt(1)), "{raw}");
        }
        let mut e = event(serde_json::json!({"type": "group", "messageId": "m", "userId": "u", "groupId": "g"}));
        e.json = r#"{"type":"group","messageId":"m","userId":"u","groupId":1e400}"#.to_owned();
        assert_eq!(plan_at("s", &[e], NOW).1, vec![(0, "group without `groupId`".to_owned())]);
    }

    /// The cell a property holding `raw` becomes.
    fn property_cell(raw: &str) -> Value {
        let mut e = event(serde_json::json!({"type": "track", "event": "E", "messageId": "m", "userId": "u"}));
        e.json = format!(r#"{{"type":"track","event":"E","messageId":"m","userId":"u","properties":{{"x":{raw}}}}}"#);
        let (plan, unmapped) = plan_at("s", &[e], NOW);
        assert_eq!(unmapped, vec![], "{raw}");
        plan.table("e").and_then(|t| t.value(0, "x")).cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn arrays_are_stored_as_serde_json_writes_them() {
        for (raw, text) in [
            (r#"[ "spaced" , 1 ]"#, r#"["spaced",1]"#),
            (r#"[{"b":1,"a":2,"b":3}]"#, r#"[{"a":2,"b":3}]"#),
            (r#"[1.50,1e3,-0,"caf\u00e9"]"#, r#"[1.5,1000.0,-0.0,"café"]"#),
        ] {
            assert_eq!(property_cell(raw), Value::Text(text.to_owned()), "{raw}");
        }
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for raw in [
            "0",
            "-0",
            "42",
            "-7",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "123456789012345678901234567890",
            "1.5",
            "2.0",
            "-0.0",
            "1.50",
            "1e3",
            "1E-2",
            "-1.5e+2",
            "2.2250738585072014e-308",
            "0.30000000000000004",
        ] {
            let Ok(serde_json::Value::Number(n)) = serde_json::from_str::<serde_json::Value>(raw) else {
                panic!("{raw} is a number");
            };
            let expected = match n.as_i64() {
                Some(i) => Value::BigInt(i),
                None => n.as_f64().map_or(Value::Null, Value::Double),
            };
            // Debug tells -0.0 from 0.0.
            assert_eq!(format!("{:?}", number_cell(raw)), format!("{expected:?}"), "{raw}");
            assert_eq!(format!("{:?}", property_cell(raw)), format!("{expected:?}"), "{raw}");
            let mut e = event(serde_json::json!({"type": "group", "messageId": "m", "userId": "u"}));
            e.json = format!(r#"{{"type":"group","messageId":"m","userId":"u","groupId":{raw}}}"#);
            let (plan, _) = plan_at("s", &[e], NOW);
            let group_id = plan.table("groups").and_then(|t| t.value(0, "group_id")).cloned();
            assert_eq!(group_id, Some(Value::Text(n.to_string())), "{raw}");
        }
    }

    /// Events of one batch that differ in shape plan as they do alone:
    /// nothing one leaves in the flattener's buffers leaks into the next.
    #[test]
    fn a_batch_of_mixed_shapes_plans_as_its_events_alone() {
        let shapes = [
            serde_json::json!({"a": 1, "b": {"c": 2}, "d": "x"}),
            serde_json::json!({"b": {"c": "moved"}, "a": {"deep": true}}),
            serde_json::json!({"a_b": 1, "a": {"b": 2}, "zip code": "z", "zipCode": "y"}),
            serde_json::json!({"d": null, "a": 3}),
            serde_json::json!({}),
            serde_json::json!({"a": 1, "b": {"c": 2}, "d": "x"}),
        ];
        let batch: Vec<Event> = shapes
            .iter()
            .enumerate()
            .map(|(i, props)| {
                event(serde_json::json!({"type": "track", "event": "Same", "messageId": format!("m{i}"),
                    "userId": "u", "properties": props, "context": props}))
            })
            .collect();
        let cells = |plan: &LoadPlan, row: usize| -> Vec<(String, Value)> {
            let Some(t) = plan.table("same") else { return Vec::new() };
            let mut cells: Vec<(String, Value)> = t
                .columns
                .iter()
                .zip(&t.rows[row])
                .filter(|(_, v)| **v != Value::Null)
                .map(|((n, _), v)| (n.clone(), v.clone()))
                .collect();
            cells.sort_by(|a, b| a.0.cmp(&b.0));
            cells
        };
        let (together, _) = plan_at("s", &batch, NOW);
        for (i, e) in batch.iter().enumerate() {
            let (alone, _) = plan_at("s", std::slice::from_ref(e), NOW);
            assert_eq!(cells(&together, i), cells(&alone, 0), "event {i}");
        }
    }
}
