//! The warehouse keeps the latest user state end to end: the real binary,
//! the warehouse plugin and PostgreSQL (a throwaway database). A newer
//! identify followed by an older one for the same user — in one request,
//! in two requests, and all of it redelivered from an older cursor — leaves
//! `users` with the newer traits, while `identifies` has one row per
//! `messageId`.

use serde_json::{Value, json};
use switchyard_tests::{Switchyard, embedded_log_only, post_json};

use crate::warehouse::config;

const NEWER: &str = "2024-05-01T11:00:00.000Z";
const OLDER: &str = "2024-05-01T10:00:00.000Z";

fn identify(message_id: &str, user: &str, timestamp: &str, traits: Value) -> Value {
    json!({"type": "identify", "messageId": message_id, "userId": user, "timestamp": timestamp, "traits": traits})
}

async fn send(sy: &Switchyard, events: Vec<Value>) {
    let (status, reply) = post_json(&sy.url("/v1/batch"), Some("wk_web"), &json!({ "batch": events })).await;
    assert_eq!(status, 200, "{reply}");
}

async fn wait_delivered(sy: &Switchyard, n: u64) {
    let got = sy.wait_metric("switchyard_destination_delivered_total{destination=\"wh\"}", n).await;
    assert_eq!(got, n, "delivered {got} of {n}:\n{}", sy.logs());
}

async fn connect(db: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port=5432 user=postgres dbname={db}"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (start it with pg_ctlcluster)");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `users` row `id`: plan, email, timestamp (UTC, to the second).
async fn user(db: &tokio_postgres::Client, id: &str) -> Vec<Option<String>> {
    let sql = "SELECT plan, email, to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') \
               FROM web_app.users WHERE id = $1";
    let row = db.query_one(sql, &[&id]).await.unwrap_or_else(|e| panic!("users row {id}: {e:?}"));
    (0..3).map(|i| row.get::<_, Option<String>>(i)).collect()
}

/// The message ids in `identifies`, sorted, each with its row count.
async fn identifies(db: &tokio_postgres::Client) -> Vec<(String, i64)> {
    let rows = db.query("SELECT id, count(*) FROM web_app.identifies GROUP BY id ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn check(db: &tokio_postgres::Client) {
    let newer = |plan: &str, email: &str| {
        vec![Some(plan.to_owned()), Some(email.to_owned()), Some("2024-05-01T11:00:00".to_owned())]
    };
    assert_eq!(user(db, "u1").await, newer("pro", "new@example.com"), "one request: newer, then older");
    assert_eq!(user(db, "u2").await, newer("team", "u2-new@example.com"), "two requests: newer, then older");
    let count: i64 = db.query_one("SELECT count(*) FROM web_app.users", &[]).await.unwrap().get(0);
    assert_eq!(count, 2);
    let ids: Vec<(String, i64)> =
        ["m-u1-new", "m-u1-old", "m-u2-new", "m-u2-old"].iter().map(|id| ((*id).to_owned(), 1)).collect();
    assert_eq!(identifies(db).await, ids, "identifies: every call, once");
    let old: Option<String> =
        db.query_one("SELECT plan FROM web_app.identifies WHERE id = 'm-u2-old'", &[]).await.unwrap().get(0);
    assert_eq!(old.as_deref(), Some("free"), "the older identify is kept in identifies");
}

#[tokio::test]
async fn users_keep_the_newer_identify_when_an_older_one_comes_after_it() {
    let admin = connect("postgres").await;
    let db_name = format!("sy_e2e_latest_{}", std::process::id());
    admin.execute(&format!("DROP DATABASE IF EXISTS {db_name}"), &[]).await.unwrap();
    admin.execute(&format!("CREATE DATABASE {db_name}"), &[]).await.unwrap();
    let mut sy = Switchyard::start(&config(&format!("postgres://postgres@127.0.0.1:5432/{db_name}"))).await;

    // u1: newer then older in one request (one load, most likely).
    send(
        &sy,
        vec![
            identify("m-u1-new", "u1", NEWER, json!({"plan": "pro", "email": "new@example.com"})),
            identify("m-u1-old", "u1", OLDER, json!({"plan": "free", "email": "old@example.com"})),
        ],
    )
    .await;
    wait_delivered(&sy, 2).await;
    // u2: newer, delivered; then older, in a later request and load.
    send(&sy, vec![identify("m-u2-new", "u2", NEWER, json!({"plan": "team", "email": "u2-new@example.com"}))]).await;
    wait_delivered(&sy, 3).await;
    send(&sy, vec![identify("m-u2-old", "u2", OLDER, json!({"plan": "free", "email": "u2-old@example.com"}))]).await;
    wait_delivered(&sy, 4).await;
    let db = connect(&db_name).await;
    check(&db).await;

    // Redelivery from an older cursor (a crash that lost it): every
    // identify loaded again, in its old order; nothing changes.
    if !embedded_log_only("redelivery from a rewritten cursor file") {
        sy.kill9();
        std::fs::write(sy.dir.path().join("data/cursors/wh.cursor"), "0").unwrap();
        sy.restart().await;
        wait_delivered(&sy, 4).await;
        check(&db).await;
    }

    drop(sy);
    drop(db);
    let _ = admin.execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"), &[]).await;
}
