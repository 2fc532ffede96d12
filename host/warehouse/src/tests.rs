//! Every behaviour against both backends: a throwaway PostgreSQL database
//! (`sy_<random>` on 127.0.0.1:5432, dropped at the end) and a temporary
//! SQLite directory, checked with SQL as an analyst would.

use std::path::PathBuf;

use ColumnType as T;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::*;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

// ---------------------------------------------------------------- harness

/// A backend under test, and a way in for the test's own SQL.
struct Backend {
    name: &'static str,
    warehouse: Warehouse,
    probe: Probe,
}

enum Probe {
    Postgres { url: String, _db: PgDb },
    Sqlite { dir: tempfile::TempDir },
}

/// A throwaway database, dropped (with its connections) on drop.
struct PgDb {
    name: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(PG_ADMIN, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// Both backends, fresh.
async fn backends() -> Vec<Backend> {
    vec![postgres().await, sqlite().await]
}

async fn postgres() -> Backend {
    let (admin, conn) = tokio_postgres::connect(PG_ADMIN, NoTls).await.expect(
        "PostgreSQL at 127.0.0.1:5432 (start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)",
    );
    tokio::spawn(conn);
    let name = format!("sy_{:016x}", fastrand::u64(..));
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let warehouse = Warehouse::connect(&url).await.unwrap();
    Backend { name: "postgres", warehouse, probe: Probe::Postgres { url, _db: PgDb { name } } }
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("wh").display());
    let warehouse = Warehouse::connect(&url).await.unwrap();
    Backend { name: "sqlite", warehouse, probe: Probe::Sqlite { dir } }
}

type Rows = Vec<Vec<Option<String>>>;

impl Backend {
    fn is_pg(&self) -> bool {
        matches!(self.probe, Probe::Postgres { .. })
    }

    async fn load(&self, plan: &LoadPlan) -> LoadReport {
        match self.warehouse.load(plan).await {
            Ok(report) => report,
            Err(e) => panic!("{}: load failed: {e}", self.name),
        }
    }

    /// The SQLite schema files.
    fn sqlite_dir(&self) -> PathBuf {
        match &self.probe {
            Probe::Sqlite { dir } => dir.path().join("wh"),
            Probe::Postgres { .. } => PathBuf::new(),
        }
    }

    /// A connection to the SQLite files that `sql` names (and `web`
    /// always), each attached under its schema's name, as an analyst would
    /// open them.
    fn sqlite_conn(&self, sql: &str) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let dir = self.sqlite_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut schemas = vec!["web".to_owned()];
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "db")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                && stem != "web"
                && (sql.contains(&format!("{stem}.")) || sql.contains(&format!("\"{stem}\".")))
            {
                schemas.push(stem.to_owned());
            }
        }
        for schema in schemas {
            let file = dir.join(format!("{schema}.db"));
            conn.execute(&format!("ATTACH DATABASE ?1 AS \"{schema}\""), [file.to_str().unwrap()]).unwrap();
        }
        conn
    }

    /// Runs `sql`, every value as text (NULL as `None`).
    async fn query(&self, sql: &str) -> Rows {
        match &self.probe {
            Probe::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
                tokio::spawn(conn);
                let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                messages
                    .into_iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(row) => {
                            Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .collect()
            }
            Probe::Sqlite { .. } => {
                let conn = self.sqlite_conn(sql);
                let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let width = statement.column_count();
                statement
                    .query_map([], |row| {
                        (0..width)
                            .map(|i| {
                                Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                                    rusqlite::types::Value::Null => None,
                                    rusqlite::types::Value::Integer(n) => Some(n.to_string()),
                                    rusqlite::types::Value::Real(f) => Some(f.to_string()),
                                    rusqlite::types::Value::Text(s) => Some(s),
                                    rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
                                })
                            })
                            .collect()
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
        }
    }

    /// Runs statements (DDL by hand).
    async fn exec(&self, sql: &str) {
        match &self.probe {
            Probe::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            }
            Probe::Sqlite { .. } => self.sqlite_conn(sql).execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// The one value of `sql`.
    async fn scalar(&self, sql: &str) -> Option<String> {
        let rows = self.query(sql).await;
        assert_eq!(rows.len(), 1, "{}: {sql} gave {rows:?}", self.name);
        rows[0][0].clone()
    }

    async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {table}")).await.unwrap().parse().unwrap()
    }

    /// The columns of `web.<table>` in order, with the catalog's type names.
    async fn columns(&self, table: &str) -> Vec<(String, String)> {
        let sql = if self.is_pg() {
            format!(
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = 'web' AND table_name = '{table}' ORDER BY ordinal_position"
            )
        } else {
            format!("SELECT name, type FROM pragma_table_info('{table}', 'web') ORDER BY cid")
        };
        self.query(&sql).await.into_iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect()
    }

    /// The tables of schema `web`, sorted.
    async fn tables(&self) -> Vec<String> {
        let sql = if self.is_pg() {
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'web' ORDER BY 1"
        } else {
            "SELECT name FROM web.sqlite_master WHERE type = 'table' ORDER BY 1"
        };
        self.query(sql).await.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }

    /// The catalog's name of `t`.
    fn type_name(&self, t: ColumnType) -> &'static str {
        match (self.is_pg(), t) {
            (true, T::Text) => "text",
            (true, T::BigInt) => "bigint",
            (true, T::Double) => "double precision",
            (true, T::Boolean) => "boolean",
            (true, T::Timestamp) => "timestamp with time zone",
            (false, T::Text) => "TEXT",
            (false, T::BigInt) => "INTEGER",
            (false, T::Double) => "REAL",
            (false, T::Boolean) => "BOOLEAN",
            (false, T::Timestamp) => "TIMESTAMP",
        }
    }

    /// How a boolean reads as text.
    fn bool_text(&self, b: bool) -> &'static str {
        match (self.is_pg(), b) {
            (true, true) => "t",
            (true, false) => "f",
            (false, true) => "1",
            (false, false) => "0",
        }
    }

    /// An SQL expression giving timestamp column `column` as
    /// `YYYY-MM-DDThh:mm:ss.ffffffZ`.
    fn iso(&self, column: &str) -> String {
        if self.is_pg() {
            format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        } else {
            column.to_owned()
        }
    }
}

// ---------------------------------------------------------------- plans

fn s(v: &str) -> Value {
    Value::Text(v.to_owned())
}

fn ts(v: &str) -> Value {
    Value::Timestamp(v.to_owned())
}

fn cols(columns: &[(&str, ColumnType)]) -> Vec<(String, ColumnType)> {
    columns.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
}

fn table(name: &str, columns: &[(&str, ColumnType)], rows: Vec<Vec<Value>>) -> TableRows {
    TableRows { table: name.to_owned(), columns: cols(columns), rows, key: "id".to_owned(), upsert: name == "users" }
}

fn web(tables: Vec<TableRows>) -> LoadPlan {
    LoadPlan { schema: "web".to_owned(), tables }
}

const TRACK: [(&str, ColumnType); 3] = [("id", T::Text), ("received_at", T::Timestamp), ("event", T::Text)];

/// `tracks` rows `ids`, received at noon.
fn tracks(ids: &[&str]) -> TableRows {
    table(
        "tracks",
        &TRACK,
        ids.iter().map(|id| vec![s(id), ts("2024-05-01T12:00:00Z"), s("order_completed")]).collect(),
    )
}

fn rows(values: &[&[Option<&str>]]) -> Rows {
    values.iter().map(|r| r.iter().map(|v| v.map(str::to_owned)).collect()).collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn creates_the_schema_and_tables_with_typed_columns() {
    for b in backends().await {
        let event_columns = [
            ("id", T::Text),
            ("received_at", T::Timestamp),
            ("event", T::Text),
            ("revenue", T::Double),
            ("quantity", T::BigInt),
            ("paid", T::Boolean),
        ];
        let plan = web(vec![
            table(
                "order_completed",
                &event_columns,
                vec![
                    vec![
                        s("m1"),
                        ts("2024-05-01 12:00:00.5+02:00"),
                        s("order_completed"),
                        Value::Double(19.99),
                        Value::BigInt(3),
                        Value::Boolean(true),
                    ],
                    vec![
                        s("m2"),
                        ts("2024-05-01T12:00:00Z"),
                        s("order_completed"),
                        Value::Null,
                        Value::BigInt(-7),
                        Value::Boolean(false),
                    ],
                ],
            ),
            tracks(&["m1", "m2"]),
        ]);
        let report = b.load(&plan).await;
        assert_eq!(report, LoadReport { inserted: 4, tables_created: 2, ..LoadReport::default() }, "{}", b.name);
        assert_eq!(b.tables().await, ["order_completed", "tracks"], "{}", b.name);
        let expected: Vec<(String, String)> =
            event_columns.iter().map(|(n, t)| ((*n).to_owned(), b.type_name(*t).to_owned())).collect();
        assert_eq!(b.columns("order_completed").await, expected, "{}", b.name);
        let got = b
            .query(&format!(
                "SELECT id, {}, event, revenue, quantity, paid FROM web.order_completed ORDER BY id",
                b.iso("received_at")
            ))
            .await;
        assert_eq!(
            got,
            rows(&[
                &[
                    Some("m1"),
                    Some("2024-05-01T10:00:00.500000Z"),
                    Some("order_completed"),
                    Some("19.99"),
                    Some("3"),
                    Some(b.bool_text(true))
                ],
                &[
                    Some("m2"),
                    Some("2024-05-01T12:00:00.000000Z"),
                    Some("order_completed"),
                    None,
                    Some("-7"),
                    Some(b.bool_text(false))
                ],
            ]),
            "{}",
            b.name
        );
        assert_eq!(b.count("web.tracks").await, 2, "{}", b.name);
    }
}

#[tokio::test]
async fn the_key_column_is_the_primary_key() {
    for b in backends().await {
        b.load(&web(vec![tracks(&["m1"])])).await;
        let sql = if b.is_pg() {
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'web.tracks'::regclass AND i.indisprimary"
        } else {
            "SELECT name FROM pragma_table_info('tracks', 'web') WHERE pk = 1"
        };
        assert_eq!(b.query(sql).await, rows(&[&[Some("id")]]), "{}", b.name);
    }
}

#[tokio::test]
async fn reloading_the_same_plan_adds_no_rows() {
    for b in backends().await {
        let plan = web(vec![tracks(&["m1", "m2", "m3"])]);
        assert_eq!(b.load(&plan).await.inserted, 3, "{}", b.name);
        let again = b.load(&plan).await;
        assert_eq!(again, LoadReport { duplicates: 3, ..LoadReport::default() }, "{}", b.name);
        assert_eq!(b.count("web.tracks").await, 3, "{}", b.name);

        // A key repeated within one plan, and one already loaded.
        let report = b.load(&web(vec![tracks(&["m4", "m4", "m1"])])).await;
        assert_eq!((report.inserted, report.duplicates), (1, 2), "{}", b.name);
        assert_eq!(b.count("web.tracks").await, 4, "{}", b.name);
    }
}

#[tokio::test]
async fn a_new_column_mid_stream_is_added() {
    for b in backends().await {
        b.load(&web(vec![tracks(&["m1"])])).await;
        let mut later = tracks(&["m2"]);
        later.columns.extend(cols(&[("coupon", T::Text), ("total", T::Double), ("context_app_build", T::BigInt)]));
        later.rows[0].extend([s("SPRING"), Value::Double(5.5), Value::BigInt(42)]);
        let report = b.load(&web(vec![later])).await;
        assert_eq!((report.inserted, report.columns_added, report.tables_created), (1, 3, 0), "{}", b.name);
        let columns = b.columns("tracks").await;
        assert_eq!(
            columns[3..].to_vec(),
            [
                ("coupon".to_owned(), b.type_name(T::Text).to_owned()),
                ("total".to_owned(), b.type_name(T::Double).to_owned()),
                ("context_app_build".to_owned(), b.type_name(T::BigInt).to_owned()),
            ],
            "{}",
            b.name
        );
        let got = b.query("SELECT id, coupon, total, context_app_build FROM web.tracks ORDER BY id").await;
        assert_eq!(
            got,
            rows(&[&[Some("m1"), None, None, None], &[Some("m2"), Some("SPRING"), Some("5.5"), Some("42")]])
        );
    }
}

#[tokio::test]
async fn a_value_that_does_not_fit_goes_to_discards_and_the_rest_of_the_row_loads() {
    for b in backends().await {
        let columns = [
            ("id", T::Text),
            ("received_at", T::Timestamp),
            ("amount", T::BigInt),
            ("score", T::Double),
            ("label", T::Text),
            ("at", T::Timestamp),
            ("flag", T::Boolean),
        ];
        let first = vec![
            s("m1"),
            ts("2024-05-01T12:00:00Z"),
            Value::BigInt(1),
            Value::Double(0.5),
            s("one"),
            ts("2024-05-01T12:00:00Z"),
            Value::Boolean(true),
        ];
        b.load(&web(vec![table("purchase", &columns, vec![first])])).await;

        // The same columns, now with values of other types.
        let clash = vec![
            s("m2"),
            ts("2024-05-02T08:30:00Z"),
            s("abc"),             // text in bigint: discarded
            Value::BigInt(7),     // bigint in double: widened
            Value::Boolean(true), // anything in text: its text form
            s("yesterday"),       // text in timestamp: discarded
            Value::BigInt(1),     // bigint in boolean: discarded
        ];
        let plan = web(vec![table("purchase", &columns, vec![clash])]);
        let report = b.load(&plan).await;
        assert_eq!((report.inserted, report.discarded, report.columns_added), (1, 3, 0), "{}", b.name);
        let got = b.query(r#"SELECT id, amount, score, label, "at", flag FROM web.purchase WHERE id = 'm2'"#).await;
        assert_eq!(got, rows(&[&[Some("m2"), None, Some("7"), Some("true"), None, None]]), "{}", b.name);

        let discards = b
            .query(&format!(
                "SELECT id, table_name, column_name, column_type, \"value\", {} FROM web.discards ORDER BY column_name",
                b.iso("received_at")
            ))
            .await;
        let at = Some("2024-05-02T08:30:00.000000Z");
        assert_eq!(
            discards,
            rows(&[
                &[Some("m2"), Some("purchase"), Some("amount"), Some("bigint"), Some("abc"), at],
                &[Some("m2"), Some("purchase"), Some("at"), Some("timestamp"), Some("yesterday"), at],
                &[Some("m2"), Some("purchase"), Some("flag"), Some("boolean"), Some("1"), at],
            ]),
            "{}",
            b.name
        );
        assert_eq!(b.scalar("SELECT count(*) FROM web.discards WHERE uuid_ts IS NULL").await.as_deref(), Some("0"));

        // Reloaded: no second row, no second discard.
        let again = b.load(&plan).await;
        assert_eq!((again.inserted, again.duplicates), (0, 1), "{}", b.name);
        assert_eq!(b.count("web.purchase").await, 2, "{}", b.name);
        assert_eq!(b.count("web.discards").await, 3, "{}", b.name);
    }
}

#[tokio::test]
async fn a_column_of_a_type_made_by_hand_takes_only_null() {
    for b in backends().await {
        b.load(&web(vec![tracks(&["m0"])])).await;
        b.exec("CREATE TABLE web.hand (id TEXT PRIMARY KEY, n INT)").await;
        let plan =
            web(vec![table("hand", &[("id", T::Text), ("n", T::BigInt)], vec![vec![s("h1"), Value::BigInt(5)]])]);
        let report = b.load(&plan).await;
        assert_eq!((report.inserted, report.discarded), (1, 1), "{}", b.name);
        assert_eq!(b.query("SELECT id, n FROM web.hand").await, rows(&[&[Some("h1"), None]]), "{}", b.name);
        let expected = if b.is_pg() { "integer" } else { "INT" };
        let got = b.query(r#"SELECT column_name, column_type, "value" FROM web.discards"#).await;
        assert_eq!(got, rows(&[&[Some("n"), Some(expected), Some("5")]]), "{}", b.name);
    }
}

#[tokio::test]
async fn postgres_system_column_names_are_discarded_in_both_backends() {
    for b in backends().await {
        let plan = web(vec![table(
            "signup",
            &[("id", T::Text), ("xmin", T::BigInt), ("plan", T::Text)],
            vec![vec![s("m1"), Value::BigInt(3), s("pro")], vec![s("m2"), Value::Null, s("free")]],
        )]);
        let report = b.load(&plan).await;
        assert_eq!((report.inserted, report.discarded), (2, 1), "{}", b.name);
        let names: Vec<String> = b.columns("signup").await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["id", "plan"], "{}", b.name);
        let got = b.query(r#"SELECT id, column_name, column_type, "value" FROM web.discards"#).await;
        assert_eq!(got, rows(&[&[Some("m1"), Some("xmin"), Some("reserved"), Some("3")]]), "{}", b.name);
    }
}

#[tokio::test]
async fn users_are_upserted_keeping_earlier_non_null_traits() {
    for b in backends().await {
        let columns = [
            ("id", T::Text),
            ("received_at", T::Timestamp),
            ("name", T::Text),
            ("email", T::Text),
            ("plan", T::BigInt),
        ];
        let first = web(vec![table(
            "users",
            &columns,
            vec![vec![s("u1"), ts("2024-05-01T12:00:00Z"), s("Ann"), s("ann@example.com"), Value::BigInt(1)]],
        )]);
        assert_eq!(b.load(&first).await.inserted, 1, "{}", b.name);

        // u1 again without a name and plan, a new email and a new trait; and u2.
        let mut later = table(
            "users",
            &columns,
            vec![
                vec![s("u1"), ts("2024-05-02T12:00:00Z"), Value::Null, s("ann@new.example"), Value::Null],
                vec![s("u2"), ts("2024-05-02T12:00:00Z"), s("Bob"), Value::Null, Value::Null],
            ],
        );
        later.columns.push(("age".to_owned(), T::BigInt));
        later.rows[0].push(Value::BigInt(30));
        later.rows[1].push(Value::Null);
        let report = b.load(&web(vec![later])).await;
        assert_eq!((report.inserted, report.upserted, report.duplicates), (1, 1, 0), "{}", b.name);
        let got = b
            .query(&format!("SELECT id, {}, name, email, plan, age FROM web.users ORDER BY id", b.iso("received_at")))
            .await;
        assert_eq!(
            got,
            rows(&[
                &[
                    Some("u1"),
                    Some("2024-05-02T12:00:00.000000Z"),
                    Some("Ann"),
                    Some("ann@new.example"),
                    Some("1"),
                    Some("30")
                ],
                &[Some("u2"), Some("2024-05-02T12:00:00.000000Z"), Some("Bob"), None, None, None],
            ]),
            "{}",
            b.name
        );

        // Two rows for u1 in one plan merge the same way, then upsert; a
        // discarded value keeps the stored one.
        let twice = web(vec![table(
            "users",
            &columns,
            vec![
                vec![s("u1"), Value::Null, Value::Null, Value::Null, Value::BigInt(2)],
                vec![s("u1"), Value::Null, s("Anna"), Value::Null, s("not a number")],
            ],
        )]);
        let report = b.load(&twice).await;
        assert_eq!((report.inserted, report.upserted, report.discarded), (0, 2, 1), "{}", b.name);
        let got = b.query("SELECT name, email, plan, age FROM web.users WHERE id = 'u1'").await;
        assert_eq!(got, rows(&[&[Some("Anna"), Some("ann@new.example"), Some("2"), Some("30")]]), "{}", b.name);
        assert_eq!(b.count("web.users").await, 2, "{}", b.name);
    }
}

/// One identify: its `identifies` row and its `users` row.
struct Identify {
    message_id: String,
    user: String,
    timestamp: Option<String>,
    received_at: String,
    plan: Option<String>,
    email: Option<String>,
}

const IDENTIFIES: [(&str, ColumnType); 6] = [
    ("id", T::Text),
    ("user_id", T::Text),
    ("received_at", T::Timestamp),
    ("timestamp", T::Timestamp),
    ("plan", T::Text),
    ("email", T::Text),
];

const USERS: [(&str, ColumnType); 5] = [
    ("id", T::Text),
    ("received_at", T::Timestamp),
    ("timestamp", T::Timestamp),
    ("plan", T::Text),
    ("email", T::Text),
];

/// An identify of `user` at `timestamp`, received at `received_at`, with
/// no traits yet.
fn identify(message_id: &str, user: &str, timestamp: &str, received_at: &str) -> Identify {
    Identify {
        message_id: message_id.to_owned(),
        user: user.to_owned(),
        timestamp: Some(timestamp.to_owned()),
        received_at: received_at.to_owned(),
        plan: None,
        email: None,
    }
}

impl Identify {
    fn plan(mut self, plan: &str) -> Identify {
        self.plan = Some(plan.to_owned());
        self
    }

    fn email(mut self, email: &str) -> Identify {
        self.email = Some(email.to_owned());
        self
    }
}

/// The plan of a batch of identifies, as the warehouse plugin makes it:
/// one `identifies` row and one `users` row each, in batch order.
fn identifies(batch: &[Identify]) -> LoadPlan {
    let opt = |v: &Option<String>| v.as_deref().map_or(Value::Null, s);
    let time = |v: &Option<String>| v.as_deref().map_or(Value::Null, ts);
    let calls = batch
        .iter()
        .map(|i| {
            vec![s(&i.message_id), s(&i.user), ts(&i.received_at), time(&i.timestamp), opt(&i.plan), opt(&i.email)]
        })
        .collect();
    let users = batch
        .iter()
        .map(|i| vec![s(&i.user), ts(&i.received_at), time(&i.timestamp), opt(&i.plan), opt(&i.email)])
        .collect();
    web(vec![table("identifies", &IDENTIFIES, calls), table("users", &USERS, users)])
}

impl Backend {
    /// `users` row `id`: timestamp, received_at, plan, email.
    async fn user(&self, id: &str) -> Rows {
        self.query(&format!(
            "SELECT {}, {}, plan, email FROM web.users WHERE id = '{id}'",
            self.iso("\"timestamp\""),
            self.iso("received_at")
        ))
        .await
    }

    /// The message ids in `identifies`, sorted, with how often each is there.
    async fn identify_ids(&self) -> Rows {
        self.query("SELECT id, count(*) FROM web.identifies GROUP BY id ORDER BY id").await
    }
}

#[tokio::test]
async fn users_keep_the_newer_identify_when_an_older_one_is_redelivered() {
    for b in backends().await {
        let older =
            || identify("m-old", "u1", "2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z").plan("free").email("a@x");
        let newer = || identify("m-new", "u1", "2024-05-01T11:00:00Z", "2024-05-01T11:00:01Z").plan("pro");
        // In order: the older, then the newer.
        assert_eq!(b.load(&identifies(&[older()])).await.inserted, 2, "{}", b.name);
        let report = b.load(&identifies(&[newer()])).await;
        assert_eq!((report.inserted, report.upserted), (1, 1), "{}", b.name);
        let expected = rows(&[&[
            Some("2024-05-01T11:00:00.000000Z"),
            Some("2024-05-01T11:00:01.000000Z"),
            Some("pro"),
            Some("a@x"),
        ]]);
        assert_eq!(b.user("u1").await, expected, "{}", b.name);

        // The older batch redelivered (a replay, a restart from an older
        // cursor): nothing changes, its users row is left out.
        let report = b.load(&identifies(&[older()])).await;
        assert_eq!(report, LoadReport { duplicates: 2, ..LoadReport::default() }, "{}", b.name);
        assert_eq!(b.user("u1").await, expected, "{}", b.name);
        // The newer one redelivered rewrites the same values.
        let report = b.load(&identifies(&[newer()])).await;
        assert_eq!((report.inserted, report.upserted, report.duplicates), (0, 1, 1), "{}", b.name);
        assert_eq!(b.user("u1").await, expected, "{}", b.name);

        assert_eq!(b.identify_ids().await, rows(&[&[Some("m-new"), Some("1")], &[Some("m-old"), Some("1")]]));
        assert_eq!(b.count("web.users").await, 1, "{}", b.name);
    }
}

#[tokio::test]
async fn out_of_order_batches_keep_the_newer_values() {
    for b in backends().await {
        // Two batches of u1 finishing out of order (max_concurrent_calls = 2):
        // the newer first.
        let newer = [identify("m2", "u1", "2024-05-01T11:00:00Z", "2024-05-01T11:00:05Z").plan("pro")];
        let older = [
            identify("m0", "u1", "2024-05-01T09:00:00Z", "2024-05-01T11:00:02Z").plan("trial"),
            identify("m1", "u1", "2024-05-01T10:00:00Z", "2024-05-01T11:00:03Z").plan("free").email("a@x"),
        ];
        b.load(&identifies(&newer)).await;
        let report = b.load(&identifies(&older)).await;
        assert_eq!((report.inserted, report.upserted, report.duplicates), (2, 0, 2), "{}", b.name);
        // The newer values stay; an older identify fills in nothing either
        // (its traits are not the latest state; `identifies` has them).
        let expected =
            rows(&[&[Some("2024-05-01T11:00:00.000000Z"), Some("2024-05-01T11:00:05.000000Z"), Some("pro"), None]]);
        assert_eq!(b.user("u1").await, expected, "{}", b.name);
        assert_eq!(
            b.identify_ids().await,
            rows(&[&[Some("m0"), Some("1")], &[Some("m1"), Some("1")], &[Some("m2"), Some("1")]]),
            "{}",
            b.name
        );

        // The same identifies in order, for u2: every one applied in turn.
        let in_order = [
            identify("n0", "u2", "2024-05-01T09:00:00Z", "2024-05-01T11:00:02Z").plan("trial"),
            identify("n1", "u2", "2024-05-01T10:00:00Z", "2024-05-01T11:00:03Z").plan("free").email("a@x"),
        ];
        b.load(&identifies(&in_order)).await;
        b.load(&identifies(&[identify("n2", "u2", "2024-05-01T11:00:00Z", "2024-05-01T11:00:05Z").plan("pro")])).await;
        assert_eq!(
            b.user("u2").await,
            rows(&[&[
                Some("2024-05-01T11:00:00.000000Z"),
                Some("2024-05-01T11:00:05.000000Z"),
                Some("pro"),
                Some("a@x")
            ]]),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_timestamp_tie_is_broken_by_received_at() {
    for b in backends().await {
        let at = "2024-05-01T10:00:00Z";
        // Same event time; the later received first, the earlier after it.
        b.load(&identifies(&[identify("m2", "u1", at, "2024-05-01T10:00:09Z").plan("pro")])).await;
        let report = b.load(&identifies(&[identify("m1", "u1", at, "2024-05-01T10:00:05Z").plan("free")])).await;
        assert_eq!((report.upserted, report.duplicates), (0, 1), "{}", b.name);
        assert_eq!(b.scalar("SELECT plan FROM web.users WHERE id = 'u1'").await.as_deref(), Some("pro"), "{}", b.name);

        // Both times equal: the row loaded last wins (two identifies of one
        // request in the same millisecond, in the order sent).
        let report = b.load(&identifies(&[identify("m3", "u1", at, "2024-05-01T10:00:09Z").plan("team")])).await;
        assert_eq!((report.upserted, report.duplicates), (1, 0), "{}", b.name);
        assert_eq!(b.scalar("SELECT plan FROM web.users WHERE id = 'u1'").await.as_deref(), Some("team"), "{}", b.name);

        // A later timestamp wins whatever its received_at.
        b.load(&identifies(&[identify("m4", "u1", "2024-05-01T10:00:01Z", "2024-05-01T10:00:00Z").plan("ent")])).await;
        assert_eq!(b.scalar("SELECT plan FROM web.users WHERE id = 'u1'").await.as_deref(), Some("ent"), "{}", b.name);
        assert_eq!(b.count("web.identifies").await, 4, "{}", b.name);
    }
}

#[tokio::test]
async fn a_plan_applies_a_users_rows_oldest_first_each_against_the_stored_row() {
    for b in backends().await {
        // Stored: u1 as of 10:00.
        b.load(&identifies(&[identify("s", "u1", "2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z").email("mid@x")]))
            .await;
        // One plan, in batch order: u1 newer, u2 newer, u1 older than the
        // stored row (a late device), u2 oldest, u1 newest.
        let batch = [
            identify("a", "u1", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z").plan("pro"),
            identify("b", "u2", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z").plan("pro"),
            identify("c", "u1", "2024-05-01T09:00:00Z", "2024-05-01T12:00:00Z").plan("free").email("old@x"),
            identify("d", "u2", "2024-05-01T09:00:00Z", "2024-05-01T12:00:00Z").plan("free").email("b@x"),
            identify("e", "u1", "2024-05-01T11:30:00Z", "2024-05-01T12:00:00Z").plan("team"),
        ];
        let report = b.load(&identifies(&batch)).await;
        // identifies: 5 new. users: u2 inserted, then updated by its newer
        // row; u1 updated twice, its older row left out.
        assert_eq!((report.inserted, report.upserted, report.duplicates), (6, 3, 1), "{}", b.name);
        assert_eq!(
            b.user("u1").await,
            rows(&[&[
                Some("2024-05-01T11:30:00.000000Z"),
                Some("2024-05-01T12:00:00.000000Z"),
                Some("team"),
                Some("mid@x")
            ]]),
            "{}: the older row did not bring back its email",
            b.name
        );
        assert_eq!(
            b.user("u2").await,
            rows(&[&[
                Some("2024-05-01T11:00:00.000000Z"),
                Some("2024-05-01T12:00:00.000000Z"),
                Some("pro"),
                Some("b@x")
            ]]),
            "{}: oldest first, as if they had come one by one",
            b.name
        );
        assert_eq!(b.count("web.identifies").await, 6, "{}", b.name);

        // The whole plan again: nothing changes.
        b.load(&identifies(&batch)).await;
        assert_eq!(b.user("u1").await[0][2].as_deref(), Some("team"), "{}", b.name);
        assert_eq!(b.user("u2").await[0][2].as_deref(), Some("pro"), "{}", b.name);
        assert_eq!(b.count("web.identifies").await, 6, "{}", b.name);
    }
}

#[tokio::test]
async fn a_users_row_without_a_time_is_a_plain_upsert() {
    for b in backends().await {
        // A users table from before `timestamp` was one of its columns.
        b.load(&web(vec![table(
            "users",
            &[("id", T::Text), ("received_at", T::Timestamp), ("plan", T::Text)],
            vec![vec![s("u1"), ts("2024-05-01T12:00:00Z"), s("legacy")]],
        )]))
        .await;
        // An older identify, but the stored row has no timestamp to say so.
        let older = identify("m1", "u1", "2024-05-01T09:00:00Z", "2024-05-01T09:00:01Z").plan("free");
        let report = b.load(&identifies(&[older])).await;
        assert_eq!((report.upserted, report.columns_added), (1, 2), "{}", b.name);
        let expected =
            rows(&[&[Some("2024-05-01T09:00:00.000000Z"), Some("2024-05-01T09:00:01.000000Z"), Some("free"), None]]);
        assert_eq!(b.user("u1").await, expected, "{}", b.name);

        // From now on it is ordered; a row without a timestamp still applies.
        let mut untimed = identify("m2", "u1", "", "2024-05-01T08:00:00Z").plan("pro");
        untimed.timestamp = None;
        assert_eq!(b.load(&identifies(&[untimed])).await.upserted, 1, "{}", b.name);
        let got = b.user("u1").await;
        assert_eq!(got[0][0].as_deref(), Some("2024-05-01T09:00:00.000000Z"), "{}: kept", b.name);
        assert_eq!(got[0][2].as_deref(), Some("pro"), "{}", b.name);
    }
}

#[tokio::test]
async fn concurrent_loads_of_one_user_keep_the_newer() {
    for b in backends().await {
        let url = match &b.probe {
            Probe::Postgres { url, .. } => url.clone(),
            Probe::Sqlite { .. } => format!("sqlite:{}", b.sqlite_dir().display()),
        };
        let other = Warehouse::connect(&url).await.unwrap();
        // The tables made, both loaders' catalogs read.
        let seed = identifies(&[identify("seed", "seed", "2024-05-01T09:00:00Z", "2024-05-01T09:00:01Z").plan("x")]);
        b.load(&seed).await;
        other.load(&seed).await.unwrap();
        for round in 0..10 {
            let user = format!("u{round}");
            let newer = identify(&format!("n{round}"), &user, "2024-05-01T11:00:00Z", "2024-05-01T11:00:01Z");
            let older = identify(&format!("o{round}"), &user, "2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z");
            let (newer, older) = (identifies(&[newer.plan("pro")]), identifies(&[older.plan("free")]));
            // Two loaders at once, either one first: the newer stays.
            let (first, second) = if round % 2 == 0 { (&newer, &older) } else { (&older, &newer) };
            let (x, y) = tokio::join!(b.warehouse.load(first), other.load(second));
            if let Err(e) = x.and(y) {
                panic!("{}: {e}", b.name);
            }
            let sql = format!("SELECT plan FROM web.users WHERE id = '{user}'");
            assert_eq!(b.scalar(&sql).await.as_deref(), Some("pro"), "{} round {round}", b.name);
        }
        assert_eq!(b.count("web.identifies").await, 21, "{}", b.name);
    }
}

#[tokio::test]
async fn keywords_and_odd_characters_work_as_names() {
    for b in backends().await {
        let plan = LoadPlan {
            schema: "select".to_owned(),
            tables: vec![table(
                "order",
                &[("id", T::Text), ("from", T::Text), ("user", T::Text), ("group", T::BigInt), ("we\"ird", T::Boolean)],
                vec![vec![s("m1"), s("a"), s("b"), Value::BigInt(1), Value::Boolean(true)]],
            )],
        };
        assert_eq!(b.load(&plan).await.inserted, 1, "{}", b.name);
        assert_eq!(b.load(&plan).await.duplicates, 1, "{}", b.name);
        let got = b.query(r#"SELECT "from", "user", "group", "we""ird" FROM "select"."order""#).await;
        assert_eq!(got, rows(&[&[Some("a"), Some("b"), Some("1"), Some(b.bool_text(true))]]), "{}", b.name);
    }
}

#[tokio::test]
async fn bad_identifiers_are_refused_before_anything_runs() {
    for b in backends().await {
        let long = "x".repeat(64);
        let mut plans = Vec::new();
        for (schema, name, column) in
            [("web", "tracks", ""), ("web", long.as_str(), "id"), ("", "tracks", "id"), ("web", "tracks", "a\0b")]
        {
            let mut t = tracks(&["m1"]);
            t.table = name.to_owned();
            t.columns.push((column.to_owned(), T::Text));
            t.rows[0].push(Value::Null);
            plans.push(LoadPlan { schema: schema.to_owned(), tables: vec![t] });
        }
        plans.push(web(vec![table(DISCARDS_TABLE, &TRACK, vec![])]));
        for plan in &plans {
            let e = b.warehouse.load(plan).await.unwrap_err();
            assert!(matches!(e, WarehouseError::InvalidIdentifier { .. }), "{}: {e}", b.name);
            assert!(!e.is_retryable(), "{}: {e}", b.name);
        }
        assert!(b.tables().await.is_empty(), "{}", b.name);

        // 63 bytes is fine.
        let mut t = tracks(&["m1"]);
        t.table = "t".repeat(63);
        t.columns.push(("c".repeat(63), T::Text));
        t.rows[0].push(s("v"));
        assert_eq!(b.load(&web(vec![t])).await.inserted, 1, "{}", b.name);
    }
}

#[tokio::test]
async fn malformed_plans_are_refused() {
    for b in backends().await {
        let mut short_row = tracks(&["m1"]);
        short_row.rows[0].pop();
        let mut null_key = tracks(&["m1"]);
        null_key.rows[0][0] = Value::Null;
        let mut no_key = tracks(&["m1"]);
        no_key.key = "message_id".to_owned();
        let mut twice = tracks(&["m1"]);
        twice.columns.push(("event".to_owned(), T::Text));
        twice.rows[0].push(s("again"));
        for bad in [short_row, null_key, no_key, twice] {
            let e = b.warehouse.load(&web(vec![tracks(&["ok"]), bad])).await.unwrap_err();
            assert!(matches!(e, WarehouseError::InvalidPlan(_)), "{}: {e}", b.name);
            assert!(!e.is_retryable(), "{}", b.name);
        }
        assert!(b.tables().await.is_empty(), "{}", b.name);
    }
}

#[tokio::test]
async fn a_failed_load_leaves_nothing_and_the_next_load_recovers() {
    for b in backends().await {
        b.load(&web(vec![tracks(&["m0"])])).await;
        // No primary key: ON CONFLICT (id) cannot work there.
        b.exec("CREATE TABLE web.broken (id TEXT, x TEXT)").await;
        let broken = table("broken", &[("id", T::Text), ("x", T::Text)], vec![vec![s("b1"), s("x")]]);
        let fresh = table("aaa", &[("id", T::Text), ("y", T::BigInt)], vec![vec![s("a1"), Value::BigInt(1)]]);
        let mut more = tracks(&["m1"]);
        more.columns.push(("extra".to_owned(), T::Text));
        more.rows[0].push(s("e"));

        let e = b.warehouse.load(&web(vec![fresh.clone(), broken, more.clone()])).await.unwrap_err();
        assert!(matches!(e, WarehouseError::Database(_)), "{}: {e}", b.name);
        assert!(!e.is_retryable(), "{}", b.name);
        // One transaction: neither the new table nor the new rows or
        // columns of the others stayed.
        assert_eq!(b.tables().await, ["broken", "tracks"], "{}", b.name);
        assert_eq!(b.columns("tracks").await.len(), TRACK.len(), "{}", b.name);
        assert_eq!(b.count("web.tracks").await, 1, "{}", b.name);

        // The catalog cache was dropped: `aaa` and `extra` are made now.
        let report = b.load(&web(vec![fresh, more])).await;
        assert_eq!((report.inserted, report.tables_created, report.columns_added), (2, 1, 1), "{}", b.name);
        assert_eq!(b.count("web.aaa").await, 1, "{}", b.name);
    }
}

#[tokio::test]
async fn a_table_dropped_by_hand_is_created_again() {
    for b in backends().await {
        b.load(&web(vec![tracks(&["m1"])])).await;
        b.exec("DROP TABLE web.tracks").await;
        let report = b.load(&web(vec![tracks(&["m2"])])).await;
        assert_eq!((report.inserted, report.tables_created), (1, 1), "{}", b.name);
        assert_eq!(b.count("web.tracks").await, 1, "{}", b.name);
    }
}

#[tokio::test]
async fn large_and_wide_batches_load_in_chunks() {
    for b in backends().await {
        // 40 columns × 2,000 rows = 80,000 values: past PostgreSQL's 65,535
        // parameters a statement, so several statements.
        let mut columns = vec![("id".to_owned(), T::Text)];
        columns.extend((1..40).map(|i| (format!("c{i:02}"), T::BigInt)));
        let rows: Vec<Vec<Value>> = (0..2000)
            .map(|r| {
                let mut row = vec![s(&format!("m{r:05}"))];
                row.extend((1..40).map(|c| Value::BigInt(r * 100 + c)));
                row
            })
            .collect();
        let wide = TableRows { table: "wide".to_owned(), columns, rows, key: "id".to_owned(), upsert: false };
        let plan = web(vec![wide]);
        assert_eq!(b.load(&plan).await.inserted, 2000, "{}", b.name);
        assert_eq!(b.load(&plan).await.duplicates, 2000, "{}", b.name);
        assert_eq!(b.count("web.wide").await, 2000, "{}", b.name);
        assert_eq!(b.scalar("SELECT c39 FROM web.wide WHERE id = 'm01999'").await.as_deref(), Some("199939"));
    }
}

#[tokio::test]
async fn many_schemas_load_side_by_side() {
    for b in backends().await {
        // More than SQLite attaches at once.
        for round in 0..2 {
            for i in 0..12 {
                let plan = LoadPlan { schema: format!("src{i:02}"), tables: vec![tracks(&[&format!("m{round}")])] };
                assert_eq!(b.load(&plan).await.inserted, 1, "{}", b.name);
            }
        }
        assert_eq!(b.count("src00.tracks").await, 2, "{}", b.name);
        assert_eq!(b.count("src11.tracks").await, 2, "{}", b.name);
    }
}

#[tokio::test]
async fn sqlite_keeps_one_wal_file_per_schema() {
    let b = sqlite().await;
    b.load(&web(vec![tracks(&["m1"])])).await;
    b.load(&LoadPlan { schema: "ios".to_owned(), tables: vec![tracks(&["m1"])] }).await;
    for schema in ["web", "ios"] {
        let file = b.sqlite_dir().join(format!("{schema}.db"));
        let conn = rusqlite::Connection::open(&file).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal", "{schema}");
        let n: i64 = conn.query_row("SELECT count(*) FROM tracks", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "{schema}");
    }
    for schema in ["main", "TEMP", "../up", ".hidden"] {
        let plan = LoadPlan { schema: schema.to_owned(), tables: vec![tracks(&["m1"])] };
        let e = b.warehouse.load(&plan).await.unwrap_err();
        assert!(matches!(e, WarehouseError::InvalidIdentifier { .. }) && !e.is_retryable(), "{schema}: {e}");
    }
}

#[tokio::test]
async fn refused_connections_are_retryable() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let e = Warehouse::connect(&url).await.unwrap_err();
    assert!(matches!(e, WarehouseError::Unavailable(_)) && e.is_retryable(), "{e}");

    // Lazily: the load says so.
    let lazy = Warehouse::new(&url).unwrap();
    let e = lazy.load(&web(vec![tracks(&["m1"])])).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn a_lost_postgres_connection_is_made_again() {
    let b = postgres().await;
    b.load(&web(vec![tracks(&["m1"])])).await;
    let Probe::Postgres { _db: db, .. } = &b.probe else { unreachable!() };
    let (admin, conn) = tokio_postgres::connect(PG_ADMIN, NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&db.name])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The first load may notice the loss (retryable) or reconnect at once.
    if let Err(e) = b.warehouse.load(&web(vec![tracks(&["m2"])])).await {
        assert!(e.is_retryable(), "{e}");
    }
    b.load(&web(vec![tracks(&["m2", "m3"])])).await;
    assert_eq!(b.count("web.tracks").await, 3);
}

#[test]
fn connection_settings_pick_the_backend() {
    assert_eq!(Warehouse::new("postgres://postgres@127.0.0.1/db").unwrap().kind(), "postgres");
    assert_eq!(Warehouse::new("postgresql://postgres@127.0.0.1/db").unwrap().kind(), "postgres");
    assert_eq!(Warehouse::new("sqlite:/tmp/wh").unwrap().kind(), "sqlite");
    match Warehouse::new("sqlite:///var/lib/wh").unwrap() {
        Warehouse::Sqlite(lite) => assert_eq!(lite.dir(), std::path::Path::new("/var/lib/wh")),
        other => panic!("{other:?}"),
    }
    for bad in ["mysql://u@h/db", "sqlite:", "", "postgres://u:hunter2@h:notaport/db"] {
        let e = Warehouse::new(bad).unwrap_err();
        assert!(matches!(e, WarehouseError::Config(_)) && !e.is_retryable(), "{bad}: {e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn sqlstates_are_classified() {
    use super::postgres::classify;
    for retryable in ["08006", "08001", "57P01", "57P03", "40001", "40P01", "53300", "55P03"] {
        assert!(classify(retryable, String::new()).is_retryable(), "{retryable}");
    }
    for not in ["42601", "42P01", "23502", "28P01", "3D000", "42501"] {
        assert!(!classify(not, String::new()).is_retryable(), "{not}");
    }
}

#[tokio::test]
async fn a_sqlite_file_locked_elsewhere_is_a_retryable_conflict() {
    let b = sqlite().await;
    b.load(&web(vec![tracks(&["m1"])])).await;
    // An analyst's open write transaction on the schema file.
    let other = rusqlite::Connection::open(b.sqlite_dir().join("web.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let e = b.warehouse.load(&web(vec![tracks(&["m2"])])).await.unwrap_err();
    assert!(matches!(e, WarehouseError::Conflict(_)) && e.is_retryable(), "{e}");
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(b.load(&web(vec![tracks(&["m2"])])).await.inserted, 1);
}
