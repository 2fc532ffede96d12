//! The warehouse destination end to end: the real binary, the warehouse
//! plugin, and the real backends — the embedded SQLite files and the
//! PostgreSQL on this machine (each test its own throwaway database).
//! Checked with SQL: rows, columns and types; a re-delivered batch adds no
//! rows; a new property adds a column; a type clash lands in `discards`;
//! PostgreSQL refusing connections delays loads and loses nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::{Config, Switchyard, embedded_log_only, plugin, post_json};

const WAIT: Duration = Duration::from_secs(90);

/// A config with one warehouse destination `wh` loading into `warehouse`.
pub(crate) fn config(warehouse: &str) -> String {
    let lines = format!(
        r#"
warehouse = "{warehouse}"
batch = {{ max_events = 100, linger_ms = 20 }}
retry = {{ initial_backoff_ms = 100, max_backoff_ms = 500 }}
"#
    );
    Config::new()
        .admin("wh-admin")
        .source("Web App", "wk_web")
        .destination("wh", plugin("warehouse_destination"), &lines)
        .build()
}

fn first_batch() -> Value {
    json!({ "batch": [
        {"type": "identify", "messageId": "m-identify", "userId": "u1",
         "traits": {"email": "ada@example.com", "firstName": "Ada", "plan": "pro"},
         "context": {"app": {"version": "1.2.3"}}},
        {"type": "track", "messageId": "m-exposure", "userId": "u1", "event": "Experiment Viewed",
         "properties": {"experimentId": "checkout", "variationId": "treatment"}},
        {"type": "track", "messageId": "m-order-1", "userId": "u1", "event": "Order Completed",
         "properties": {"revenue": 42.5, "seats": 3, "coupon": null}},
        {"type": "page", "messageId": "m-page", "anonymousId": "a1", "name": "Pricing",
         "properties": {"path": "/pricing"}},
    ]})
}

/// A later batch: a new property (`currency`) and a value of another type
/// for an existing column (`seats` was a bigint).
fn second_batch() -> Value {
    json!({ "batch": [
        {"type": "track", "messageId": "m-order-2", "userId": "u2", "event": "Order Completed",
         "properties": {"revenue": 10, "seats": "many", "currency": "EUR"}},
    ]})
}

async fn send(sy: &Switchyard, body: &Value) {
    let (status, reply) = post_json(&sy.url("/v1/batch"), Some("wk_web"), body).await;
    assert_eq!(status, 200, "{reply}");
}

async fn wait_delivered(sy: &Switchyard, n: u64) {
    let got = sy.wait_metric("switchyard_destination_delivered_total{destination=\"wh\"}", n).await;
    assert_eq!(got, n, "delivered {got} of {n}:\n{}", sy.logs());
}

/// What the checks need from either backend.
trait Sql {
    async fn count(&self, table: &str) -> i64;
    async fn text(&self, sql: &str) -> Vec<String>;
    /// (column, type) of `table`, types lower-cased.
    async fn columns(&self, table: &str) -> Vec<(String, String)>;
}

struct Lite(std::path::PathBuf);

impl Sql for Lite {
    async fn count(&self, table: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.0).unwrap();
        c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0)).unwrap()
    }
    async fn text(&self, sql: &str) -> Vec<String> {
        let c = rusqlite::Connection::open(&self.0).unwrap();
        let mut st = c.prepare(sql).unwrap();
        st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
    }
    async fn columns(&self, table: &str) -> Vec<(String, String)> {
        let c = rusqlite::Connection::open(&self.0).unwrap();
        let mut st = c.prepare(&format!("PRAGMA table_info(\"{table}\")")).unwrap();
        st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?.to_lowercase())))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

struct Pg {
    client: tokio_postgres::Client,
    schema: String,
}

impl Sql for Pg {
    async fn count(&self, table: &str) -> i64 {
        let row = self.client.query_one(&format!("SELECT count(*) FROM \"{}\".\"{table}\"", self.schema), &[]).await;
        row.unwrap().get(0)
    }
    async fn text(&self, sql: &str) -> Vec<String> {
        let sql = sql.replace("FROM ", &format!("FROM \"{}\".", self.schema));
        self.client.query(&sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
    }
    async fn columns(&self, table: &str) -> Vec<(String, String)> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&self.schema, &table],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).to_lowercase())).collect()
    }
}

fn column_type(columns: &[(String, String)], name: &str) -> String {
    columns
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("no column `{name}` in {columns:?}"))
}

/// The checks both backends must pass, after the first and second batches.
async fn check_schema(db: &impl Sql) {
    assert_eq!(db.count("tracks").await, 3);
    assert_eq!(db.count("order_completed").await, 2);
    assert_eq!(db.count("experiment_viewed").await, 1);
    assert_eq!(db.count("identifies").await, 1);
    assert_eq!(db.count("users").await, 1);
    assert_eq!(db.count("pages").await, 1);
    assert_eq!(db.text("SELECT event FROM tracks WHERE id = 'm-order-1'").await, ["order_completed"]);
    assert_eq!(db.text("SELECT event_text FROM tracks WHERE id = 'm-order-1'").await, ["Order Completed"]);
    assert_eq!(db.text("SELECT email FROM users WHERE id = 'u1'").await, ["ada@example.com"]);
    assert_eq!(db.text("SELECT first_name FROM identifies").await, ["Ada"]);
    assert_eq!(db.text("SELECT context_app_version FROM identifies").await, ["1.2.3"]);
    assert_eq!(db.text("SELECT experiment_id FROM experiment_viewed").await, ["checkout"]);
    let order = db.columns("order_completed").await;
    assert!(column_type(&order, "revenue").starts_with("double") || column_type(&order, "revenue") == "real");
    assert!(column_type(&order, "seats").contains("int"), "{order:?}");
    // The second batch's new property added a column...
    assert!(column_type(&order, "currency").contains("text"), "{order:?}");
    assert_eq!(db.text("SELECT currency FROM order_completed WHERE id = 'm-order-2'").await, ["EUR"]);
    // ...and its text `seats` landed in discards, the rest of its row loaded.
    assert_eq!(
        db.text("SELECT value FROM discards WHERE table_name = 'order_completed' AND column_name = 'seats'").await,
        ["many"]
    );
    assert!(column_type(&db.columns("tracks").await, "received_at").contains("time"));
}

#[tokio::test]
async fn segment_schema_into_the_embedded_warehouse() {
    let mut sy = Switchyard::start(&config("sqlite:{data_dir}/warehouse")).await;
    send(&sy, &first_batch()).await;
    wait_delivered(&sy, 4).await;
    send(&sy, &second_batch()).await;
    wait_delivered(&sy, 5).await;
    let file = sy.dir.path().join("data/warehouse/web_app.db");
    assert!(file.exists(), "one schema per source, named after it: {}", file.display());
    let db = Lite(file);
    check_schema(&db).await;
    // 5 events: 3 tracks (each also in its event's table), an identify (and
    // its user), a page — 9 rows; one value discarded.
    assert_eq!(sy.metric(&rows("inserted")).await, 9);
    assert_eq!(sy.metric(&rows("discarded")).await, 1);

    // Re-delivery after a crash that lost the cursor: every event is loaded
    // again, and no row is added.
    if embedded_log_only("redelivery from a rewritten cursor file") {
        return;
    }
    sy.kill9();
    std::fs::remove_file(sy.dir.path().join("data/cursors/wh.cursor")).unwrap();
    std::fs::write(sy.dir.path().join("data/cursors/wh.cursor"), "0").unwrap();
    sy.restart().await;
    wait_delivered(&sy, 5).await;
    check_schema(&db).await;
    assert_eq!(sy.metric(&rows("inserted")).await, 0, "the re-delivered rows were all there");
    assert_eq!(sy.metric(&rows("existing")).await, 9);
}

fn rows(result: &str) -> String {
    format!("switchyard_destination_warehouse_rows_total{{destination=\"wh\",result=\"{result}\"}}")
}

#[tokio::test]
async fn segment_schema_into_postgres_and_nothing_lost_while_it_refuses_connections() {
    let (admin, _conn) = connect("postgres").await;
    let db_name = format!("sy_e2e_{}", std::process::id());
    admin.execute(&format!("DROP DATABASE IF EXISTS {db_name}"), &[]).await.unwrap();
    admin.execute(&format!("CREATE DATABASE {db_name}"), &[]).await.unwrap();

    // PostgreSQL behind a switchable proxy: refusing at first.
    let up = Arc::new(AtomicBool::new(false));
    let proxy = proxy(up.clone()).await;
    let url = format!("postgres://postgres@{proxy}/{db_name}");
    let sy = Switchyard::start(&config(&url)).await;
    send(&sy, &first_batch()).await;
    let start = Instant::now();
    while sy.metric("switchyard_destination_retried_total{destination=\"wh\"}").await < 4 {
        assert!(start.elapsed() < WAIT, "no retries while PostgreSQL refused:\n{}", sy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sy.metric("switchyard_destination_delivered_total{destination=\"wh\"}").await, 0);
    assert_eq!(sy.metric("switchyard_destination_dead_lettered_total{destination=\"wh\"}").await, 0);
    assert!(sy.logs().contains("warehouse load failed"), "{}", sy.logs());
    assert!(sy.metric("switchyard_destination_warehouse_load_failures_total{destination=\"wh\"}").await >= 1);

    up.store(true, Ordering::SeqCst);
    wait_delivered(&sy, 4).await;
    send(&sy, &second_batch()).await;
    wait_delivered(&sy, 5).await;
    let (client, _c) = connect(&db_name).await;
    let db = Pg { client, schema: "web_app".into() };
    check_schema(&db).await;
    assert_eq!(column_type(&db.columns("tracks").await, "timestamp"), "timestamp with time zone");

    // The analyst's query from the README runs as written.
    let readme = std::fs::read_to_string(switchyard_tests::workspace().join("README.md")).unwrap();
    let query = readme.split("```sql\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a SQL block");
    let wrapped = format!(
        "SELECT variation_id, exposed::text, converted::text, conversion_rate::text, revenue::text FROM ({}) q",
        query.trim().trim_end_matches(';')
    );
    let rows = db.client.query(&wrapped, &[]).await.unwrap_or_else(|e| panic!("{e}: {wrapped}"));
    let got: Vec<Vec<String>> = rows.iter().map(|r| (0..5).map(|i| r.get::<_, String>(i)).collect()).collect();
    assert_eq!(got, [["treatment", "1", "1", "1.0000", "42.5"]]);
    drop(sy);
    drop(db);
    let _ = admin.execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"), &[]).await;
}

async fn connect(db: &str) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port=5432 user=postgres dbname={db}"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (start it with pg_ctlcluster)");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

/// A TCP proxy to PostgreSQL that closes every connection while `up` is
/// false, as a server that is down or refusing would.
async fn proxy(up: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            if !up.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}
