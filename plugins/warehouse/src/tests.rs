//! Native tests of the load plan, from realistic Segment events.

use serde_json::{Value as Json, json};
use switchyard_plugin_sdk::{Event, EventType};

use crate::naming::{FIXED_TABLES, MAX_NAME_LEN, event_table, sql_name};
use crate::plan::format_rfc3339_ms;
use crate::{ColumnType, LoadPlan, PlannedTable, TableRows, Value, plan, plan_at};

const NOW: &str = "2024-05-01T12:00:30.000Z";
const SCHEMA: &str = "ios_prod";

const COMMON: [&str; 8] =
    ["id", "anonymous_id", "user_id", "received_at", "sent_at", "timestamp", "original_timestamp", "uuid_ts"];

fn ev(json: Json) -> Event {
    Event::from_segment_json(&json.to_string()).expect("a Segment event")
}

fn run(batch: &[Event]) -> LoadPlan {
    let (plan, unmapped) = plan_at(SCHEMA, batch, NOW);
    assert_eq!(unmapped, vec![], "every event maps");
    assert_consistent(&plan);
    plan
}

/// Every row has one value per column, of the column's type or null, and
/// one source; tables are sorted.
fn assert_consistent(plan: &LoadPlan) {
    let names: Vec<&str> = plan.tables.iter().map(|t| t.table.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "tables sorted by name");
    for t in &plan.tables {
        assert_eq!(t.rows.len(), t.sources.len(), "{}", t.table);
        assert_eq!(t.key, "id");
        assert_eq!(t.upsert, t.table == "users");
        let mut cols: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
        cols.sort_unstable();
        cols.dedup();
        assert_eq!(cols.len(), t.columns.len(), "{}: duplicate column", t.table);
        for (name, _) in &t.columns {
            assert!(name.len() <= MAX_NAME_LEN && sql_name(name).as_deref() == Some(name.as_str()), "{name}");
        }
        for row in &t.rows {
            assert_eq!(row.len(), t.columns.len(), "{}", t.table);
            for ((name, ty), v) in t.columns.iter().zip(row) {
                let fits = v.column_type().is_none_or(|vt| {
                    vt == *ty || *ty == ColumnType::Text || (vt == ColumnType::BigInt && *ty == ColumnType::Double)
                });
                assert!(fits, "{}.{name}: {v:?} in a {ty:?} column", t.table);
            }
        }
    }
}

fn table<'a>(plan: &'a LoadPlan, name: &str) -> &'a PlannedTable {
    plan.table(name).unwrap_or_else(|| panic!("no table {name} in {:?}", table_names(plan)))
}

fn table_names(plan: &LoadPlan) -> Vec<&str> {
    plan.tables.iter().map(|t| t.table.as_str()).collect()
}

fn column_names(t: &TableRows) -> Vec<&str> {
    t.columns.iter().map(|(n, _)| n.as_str()).collect()
}

/// Row `row` of `t` as (column, value) for its non-null cells.
fn cells(t: &TableRows, row: usize) -> Vec<(&str, Value)> {
    t.columns
        .iter()
        .zip(&t.rows[row])
        .filter(|(_, v)| **v != Value::Null)
        .map(|((n, _), v)| (n.as_str(), v.clone()))
        .collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn ts(s: &str) -> Value {
    Value::Timestamp(s.to_owned())
}

/// The common part of a normalized event, as the host writes it.
fn base(kind: &str, id: &str) -> Json {
    json!({
        "type": kind, "messageId": id, "userId": "user-1", "anonymousId": "anon-1",
        "timestamp": "2024-05-01T12:00:00.000Z", "originalTimestamp": "2024-05-01T11:59:58.000Z",
        "sentAt": "2024-05-01T11:59:59.000Z", "receivedAt": "2024-05-01T12:00:01.000Z",
        "context": {"library": {"name": "analytics.js", "version": "5.2.0"}, "ip": "203.0.113.9"}
    })
}

fn with(mut value: Json, extra: Json) -> Json {
    if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            v.insert(k.clone(), x.clone());
        }
    }
    value
}

/// The common cells of an event made with [`base`], in column order.
fn common_cells(id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("id", text(id)),
        ("anonymous_id", text("anon-1")),
        ("user_id", text("user-1")),
        ("received_at", ts("2024-05-01T12:00:01.000Z")),
        ("sent_at", ts("2024-05-01T11:59:59.000Z")),
        ("timestamp", ts("2024-05-01T12:00:00.000Z")),
        ("original_timestamp", ts("2024-05-01T11:59:58.000Z")),
        ("uuid_ts", ts(NOW)),
    ]
}

fn concat(parts: &[Vec<(&'static str, Value)>]) -> Vec<(&'static str, Value)> {
    parts.concat()
}

fn library_cells() -> Vec<(&'static str, Value)> {
    vec![
        ("context_ip", text("203.0.113.9")),
        ("context_library_name", text("analytics.js")),
        ("context_library_version", text("5.2.0")),
    ]
}

// ---------------------------------------------------------------- tables

#[test]
fn track_lands_in_tracks_and_its_own_table() {
    let e = ev(json!({
        "type": "track", "event": "Order Completed", "messageId": "msg-1",
        "userId": "user-123", "anonymousId": "507f191e810c19729de860ea",
        "timestamp": "2024-05-01T12:00:00.250Z", "originalTimestamp": "2024-05-01T11:59:58.000Z",
        "sentAt": "2024-05-01T11:59:59.000Z", "receivedAt": "2024-05-01T12:00:01.000Z",
        "context": {
            "app": {"name": "Shop", "version": "2.3.1", "build": 7},
            "device": {"id": "dev-9", "adTrackingEnabled": true},
            "ip": "203.0.113.9", "locale": "de-DE",
            "location": {"latitude": 52.52},
            "library": {"name": "analytics-ios", "version": "4.1.0"},
            "traits": {"email": "a@example.com"}
        },
        "properties": {
            "orderId": "50314b8e9bcf000000000000", "total": 27.5, "revenue": 25, "coupon": null,
            "products": [{"sku": "45790-32", "price": 19}],
            "shipping": {"method": "DHL", "zipCode": "10115"}
        },
        "integrations": {"All": true}
    }));
    let plan = run(&[e]);
    assert_eq!(plan.schema, SCHEMA);
    assert_eq!(table_names(&plan), ["order_completed", "tracks"]);

    let common = vec![
        ("id", text("msg-1")),
        ("anonymous_id", text("507f191e810c19729de860ea")),
        ("user_id", text("user-123")),
        ("received_at", ts("2024-05-01T12:00:01.000Z")),
        ("sent_at", ts("2024-05-01T11:59:59.000Z")),
        ("timestamp", ts("2024-05-01T12:00:00.250Z")),
        ("original_timestamp", ts("2024-05-01T11:59:58.000Z")),
        ("uuid_ts", ts(NOW)),
        ("event", text("order_completed")),
        ("event_text", text("Order Completed")),
    ];
    let context = vec![
        ("context_app_build", Value::BigInt(7)),
        ("context_app_name", text("Shop")),
        ("context_app_version", text("2.3.1")),
        ("context_device_ad_tracking_enabled", Value::Boolean(true)),
        ("context_device_id", text("dev-9")),
        ("context_ip", text("203.0.113.9")),
        ("context_library_name", text("analytics-ios")),
        ("context_library_version", text("4.1.0")),
        ("context_locale", text("de-DE")),
        ("context_location_latitude", Value::Double(52.52)),
        ("context_traits_email", text("a@example.com")),
    ];
    let tracks = table(&plan, "tracks");
    assert_eq!(cells(tracks, 0), concat(&[common.clone(), context.clone()]));
    assert_eq!(tracks.sources, [0]);
    assert_eq!(tracks.column_type("context_app_build"), Some(ColumnType::BigInt));
    assert_eq!(tracks.column_type("timestamp"), Some(ColumnType::Timestamp));

    let own = table(&plan, "order_completed");
    let mut expected = concat(&[common, context]);
    expected.extend([
        ("order_id", text("50314b8e9bcf000000000000")),
        ("products", text(r#"[{"price":19,"sku":"45790-32"}]"#)),
        ("revenue", Value::BigInt(25)),
        ("shipping_method", text("DHL")),
        ("shipping_zip_code", text("10115")),
        ("total", Value::Double(27.5)),
    ]);
    assert_eq!(cells(own, 0), expected);
    assert_eq!(own.column("coupon"), None, "a null alone creates no column");
    assert_eq!(own.column("integrations"), None);
    assert_eq!(own.column_type("products"), Some(ColumnType::Text));
    assert_eq!(own.sources, [0]);
    assert!(!own.upsert);
}

#[test]
fn tracks_has_no_properties_and_fixed_columns_come_first() {
    let e = ev(with(base("track", "m1"), json!({"event": "Clicked", "properties": {"button": "buy", "alpha": 1}})));
    let plan = run(&[e]);
    let tracks = table(&plan, "tracks");
    assert_eq!(tracks.column("button"), None);
    let clicked = table(&plan, "clicked");
    assert_eq!(
        column_names(clicked),
        [
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
            "alpha",
            "button",
            "context_ip",
            "context_library_name",
            "context_library_version",
        ]
    );
}

#[test]
fn identify_lands_in_identifies_and_users() {
    let e = ev(with(
        base("identify", "msg-id-1"),
        json!({"traits": {
            "email": "peter@example.com", "firstName": "Peter", "plan": "premium", "logins": 5,
            "createdAt": "2015-02-23T22:28:55.111Z", "address": {"city": "Berlin", "postalCode": "10115"},
            "optOut": false, "birthday": "1990-04-12"
        }}),
    ));
    let plan = run(&[e]);
    assert_eq!(table_names(&plan), ["identifies", "users"]);
    let traits = vec![
        ("address_city", text("Berlin")),
        ("address_postal_code", text("10115")),
        ("birthday", text("1990-04-12")),
        ("context_ip", text("203.0.113.9")),
        ("context_library_name", text("analytics.js")),
        ("context_library_version", text("5.2.0")),
        ("created_at", ts("2015-02-23T22:28:55.111Z")),
        ("email", text("peter@example.com")),
        ("first_name", text("Peter")),
        ("logins", Value::BigInt(5)),
        ("opt_out", Value::Boolean(false)),
        ("plan", text("premium")),
    ];
    let identifies = table(&plan, "identifies");
    assert_eq!(cells(identifies, 0), concat(&[common_cells("msg-id-1"), traits.clone()]));
    assert!(!identifies.upsert);

    let users = table(&plan, "users");
    assert!(users.upsert);
    assert_eq!(users.key, "id");
    assert_eq!(
        column_names(users),
        [
            "id",
            "received_at",
            "timestamp",
            "address_city",
            "address_postal_code",
            "birthday",
            "created_at",
            "email",
            "first_name",
            "logins",
            "opt_out",
            "plan"
        ]
    );
    let mut expected = vec![
        ("id", text("user-1")),
        ("received_at", ts("2024-05-01T12:00:01.000Z")),
        ("timestamp", ts("2024-05-01T12:00:00.000Z")),
    ];
    expected.extend(traits.into_iter().filter(|(n, _)| !n.starts_with("context_")));
    assert_eq!(cells(users, 0), expected);
    assert_eq!(users.column_type("created_at"), Some(ColumnType::Timestamp));
    assert_eq!(users.sources, [0]);
}

#[test]
fn identify_without_user_id_has_no_users_row() {
    let e = ev(json!({"type": "identify", "messageId": "m1", "anonymousId": "anon-7", "traits": {"plan": "free"}}));
    let plan = run(&[e]);
    assert_eq!(table_names(&plan), ["identifies"]);
    let identifies = table(&plan, "identifies");
    assert_eq!(
        cells(identifies, 0),
        [("id", text("m1")), ("anonymous_id", text("anon-7")), ("uuid_ts", ts(NOW)), ("plan", text("free"))]
    );
    assert_eq!(identifies.value(0, "user_id"), Some(&Value::Null));
    assert_eq!(identifies.value(0, "sent_at"), Some(&Value::Null), "fixed columns exist even when null");
}

#[test]
fn users_are_one_row_per_identify_with_its_times_for_the_loader_to_order() {
    let batch = [
        ev(with(base("identify", "m0"), json!({"traits": {"plan": "free", "email": "a@example.com"}}))),
        ev(with(base("identify", "m1"), json!({"userId": "user-2", "traits": {"plan": "pro"}}))),
        ev(with(base("track", "m2"), json!({"event": "Upgraded"}))),
        // Later in the batch, but an older call (a device that was offline).
        ev(with(
            base("identify", "m3"),
            json!({"timestamp": "2024-04-30T09:00:00.000Z", "receivedAt": "2024-05-01T13:00:00.000Z",
                   "traits": {"plan": "pro", "seats": 3, "email": null}}),
        )),
    ];
    let plan = run(&batch);
    let users = table(&plan, "users");
    assert_eq!(users.rows.len(), 3, "one row per identify with a user id: the loader orders and merges them");
    assert_eq!(users.sources, [0, 1, 3], "batch order");
    assert_eq!(
        cells(users, 0),
        [
            ("id", text("user-1")),
            ("received_at", ts("2024-05-01T12:00:01.000Z")),
            ("timestamp", ts("2024-05-01T12:00:00.000Z")),
            ("email", text("a@example.com")),
            ("plan", text("free")),
        ]
    );
    assert_eq!(
        cells(users, 1),
        [
            ("id", text("user-2")),
            ("received_at", ts("2024-05-01T12:00:01.000Z")),
            ("timestamp", ts("2024-05-01T12:00:00.000Z")),
            ("plan", text("pro")),
        ]
    );
    assert_eq!(
        cells(users, 2),
        [
            ("id", text("user-1")),
            ("received_at", ts("2024-05-01T13:00:00.000Z")),
            ("timestamp", ts("2024-04-30T09:00:00.000Z")),
            ("plan", text("pro")),
            ("seats", Value::BigInt(3)),
        ],
        "its own times and traits; a trait sent as null is not sent"
    );
    assert_eq!(users.value(1, "seats"), Some(&Value::Null));
    // identifies keeps every call.
    let identifies = table(&plan, "identifies");
    assert_eq!(identifies.sources, [0, 1, 3]);
    assert_eq!(identifies.value(2, "email"), Some(&Value::Null));
    assert_eq!(identifies.value(0, "email"), Some(&text("a@example.com")));
}

#[test]
fn page_has_name_and_properties() {
    let e = ev(with(
        base("page", "p1"),
        json!({"name": "Pricing", "category": "Docs", "properties": {
            "name": "Pricing", "title": "Pricing – Acme", "url": "https://acme.io/pricing?x=1",
            "path": "/pricing", "referrer": "https://google.com", "search": "?x=1"
        }}),
    ));
    let plan = run(&[e]);
    assert_eq!(table_names(&plan), ["pages"]);
    let pages = table(&plan, "pages");
    let mut expected = common_cells("p1");
    expected.push(("name", text("Pricing")));
    expected.push(("category", text("Docs")));
    expected.extend(library_cells());
    expected.extend([
        ("path", text("/pricing")),
        ("referrer", text("https://google.com")),
        ("search", text("?x=1")),
        ("title", text("Pricing – Acme")),
        ("url", text("https://acme.io/pricing?x=1")),
    ]);
    assert_eq!(cells(pages, 0), expected);
    assert_eq!(pages.column_type("name"), Some(ColumnType::Text));
}

#[test]
fn page_category_from_properties_wins_and_unnamed_page_has_null_name() {
    let batch = [
        ev(with(base("page", "p1"), json!({"category": "Top", "properties": {"category": "Inner"}}))),
        ev(with(base("page", "p2"), json!({}))),
    ];
    let plan = run(&batch);
    let pages = table(&plan, "pages");
    assert_eq!(pages.value(0, "category"), Some(&text("Inner")));
    assert_eq!(pages.value(0, "name"), Some(&Value::Null));
    assert_eq!(pages.value(1, "category"), Some(&Value::Null));
    assert_eq!(pages.sources, [0, 1]);
}

#[test]
fn screen_has_name_and_properties() {
    let e = ev(json!({
        "type": "screen", "messageId": "s1", "anonymousId": "anon-1", "name": "Checkout",
        "timestamp": "2024-05-01T12:00:00Z",
        "properties": {"step": 2, "variation": "blue"},
        "context": {"os": {"name": "iOS", "version": "17.4"}, "screen": {"width": 390, "density": 3.0}}
    }));
    let plan = run(&[e]);
    assert_eq!(table_names(&plan), ["screens"]);
    assert_eq!(
        cells(table(&plan, "screens"), 0),
        [
            ("id", text("s1")),
            ("anonymous_id", text("anon-1")),
            ("timestamp", ts("2024-05-01T12:00:00Z")),
            ("uuid_ts", ts(NOW)),
            ("name", text("Checkout")),
            ("context_os_name", text("iOS")),
            ("context_os_version", text("17.4")),
            ("context_screen_density", Value::Double(3.0)),
            ("context_screen_width", Value::BigInt(390)),
            ("step", Value::BigInt(2)),
            ("variation", text("blue")),
        ]
    );
}

#[test]
fn group_has_group_id_and_traits() {
    let e = ev(with(
        base("group", "g1"),
        json!({"groupId": "acme-inc", "traits": {"name": "Acme Inc", "employees": 120, "industry": "Tech",
            "groupId": "other", "plan": {"tier": "enterprise"}}}),
    ));
    let plan = run(&[e]);
    assert_eq!(table_names(&plan), ["groups"]);
    let mut expected = common_cells("g1");
    expected.push(("group_id", text("acme-inc")));
    expected.extend(library_cells());
    expected.extend([
        ("employees", Value::BigInt(120)),
        ("industry", text("Tech")),
        ("name", text("Acme Inc")),
        ("plan_tier", text("enterprise")),
    ]);
    assert_eq!(cells(table(&plan, "groups"), 0), expected, "traits.groupId is dropped, the event's stays");
}

#[test]
fn alias_has_previous_id() {
    let e = ev(with(base("alias", "a1"), json!({"previousId": "anon-1", "traits": {"ignored": true}})));
    let plan = run(&[e]);
    assert_eq!(table_names(&plan), ["aliases"]);
    let aliases = table(&plan, "aliases");
    let mut expected = common_cells("a1");
    expected.push(("previous_id", text("anon-1")));
    expected.extend(library_cells());
    assert_eq!(cells(aliases, 0), expected);
    assert_eq!(aliases.column("ignored"), None);
}

#[test]
fn a_mixed_batch_touches_every_table_in_name_order() {
    let batch = [
        ev(with(base("track", "t1"), json!({"event": "Song Played"}))),
        ev(with(base("identify", "i1"), json!({"traits": {"a": 1}}))),
        ev(with(base("page", "p1"), json!({"name": "Home"}))),
        ev(with(base("screen", "s1"), json!({"name": "Home"}))),
        ev(with(base("group", "g1"), json!({"groupId": "g"}))),
        ev(with(base("alias", "a1"), json!({"previousId": "old"}))),
        ev(with(base("track", "t2"), json!({"event": "Song Played"}))),
    ];
    let plan = run(&batch);
    assert_eq!(
        table_names(&plan),
        ["aliases", "groups", "identifies", "pages", "screens", "song_played", "tracks", "users"]
    );
    let sources: Vec<(&str, Vec<usize>)> = plan.tables.iter().map(|t| (t.table.as_str(), t.sources.clone())).collect();
    assert_eq!(
        sources,
        [
            ("aliases", vec![5]),
            ("groups", vec![4]),
            ("identifies", vec![1]),
            ("pages", vec![2]),
            ("screens", vec![3]),
            ("song_played", vec![0, 6]),
            ("tracks", vec![0, 6]),
            ("users", vec![1]),
        ]
    );
    assert_eq!(table(&plan, "tracks").value(1, "id"), Some(&text("t2")));
    // Deterministic: the same batch plans the same.
    assert_eq!(plan_at(SCHEMA, &batch, NOW).0, plan);
}

#[test]
fn empty_batch_is_an_empty_plan() {
    let (plan, unmapped) = plan_at("s", &[], NOW);
    assert_eq!(plan, LoadPlan { schema: "s".to_owned(), tables: vec![] });
    assert!(unmapped.is_empty());
}

#[test]
fn plan_uses_the_current_time_for_uuid_ts() {
    let (plan, _) = plan(SCHEMA, &[ev(with(base("track", "t1"), json!({"event": "E"})))]);
    let Some(Value::Timestamp(now)) = table(&plan, "tracks").value(0, "uuid_ts") else {
        panic!("uuid_ts is a timestamp");
    };
    let ms = switchyard_plugin_sdk::spec::parse_timestamp_ms(now).expect("RFC 3339");
    assert!(ms > 1_714_564_800_000, "{now} is after 2024-05-01");
    assert!(now.ends_with('Z') && now.len() == 24, "{now}");
}

#[test]
fn rfc3339_formatting() {
    for (ms, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_714_564_800_123, "2024-05-01T12:00:00.123Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (-1000, "1969-12-31T23:59:59.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(format_rfc3339_ms(ms), text);
        assert_eq!(switchyard_plugin_sdk::spec::parse_timestamp_ms(text), Some(ms));
    }
}

// ---------------------------------------------------------------- naming

#[test]
fn sql_names() {
    for (raw, want) in [
        ("firstName", "first_name"),
        ("first_name", "first_name"),
        ("FirstName", "first_name"),
        ("userID", "user_id"),
        ("userId", "user_id"),
        ("URL", "url"),
        ("pageURL", "page_url"),
        ("HTTPServer", "http_server"),
        ("md5Hash", "md5_hash"),
        ("address1", "address1"),
        ("Order Completed", "order_completed"),
        ("order-completed!!", "order_completed"),
        ("  Signed   Up  ", "signed_up"),
        ("__private__", "private"),
        ("a.b.c", "a_b_c"),
        ("a__b", "a_b"),
        ("Größe", "gr_e"),
        ("Café Visited 🎉", "caf_visited"),
        ("3dSecure", "_3d_secure"),
        ("2024 Sale", "_2024_sale"),
        ("_1st", "_1st"),
        ("$revenue", "revenue"),
        ("snake_Case", "snake_case"),
        ("CTA Clicked (v2)", "cta_clicked_v2"),
    ] {
        assert_eq!(sql_name(raw).as_deref(), Some(want), "{raw:?}");
    }
    for unusable in ["", "   ", "!!!", "🎉", "___", "é"] {
        assert_eq!(sql_name(unusable), None, "{unusable:?}");
    }
}

#[test]
fn long_names_are_cut_to_63_bytes() {
    let long = "a".repeat(100);
    assert_eq!(sql_name(&long), Some("a".repeat(63)));
    // A `_` left at the end by the cut goes too.
    let raw = format!("{}_{}", "b".repeat(62), "c".repeat(10));
    assert_eq!(sql_name(&raw), Some("b".repeat(62)));
    // The digit prefix counts.
    let digits = "1".repeat(80);
    assert_eq!(sql_name(&digits), Some(format!("_{}", "1".repeat(62))));

    let event = format!("Very Long Event Name {}", "x".repeat(80));
    let key = format!("someVeryLongPropertyName{}", "Y".repeat(60));
    let plan = run(&[ev(with(base("track", "t1"), json!({"event": event, "properties": {key: 1}})))]);
    let table_name = format!("very_long_event_name_{}", "x".repeat(42));
    assert_eq!(table_name.len(), 63);
    let t = table(&plan, &table_name);
    assert_eq!(t.value(0, "event"), Some(&text(&table_name)));
    assert_eq!(t.value(0, "event_text"), Some(&text(&event)));
    let column = format!("some_very_long_property_name_{}", "y".repeat(34));
    assert_eq!(column.len(), 63);
    assert_eq!(t.value(0, &column), Some(&Value::BigInt(1)));
}

#[test]
fn event_names_colliding_with_schema_tables_get_an_underscore() {
    for fixed in FIXED_TABLES {
        assert_eq!(event_table(fixed), Some(format!("_{fixed}")));
    }
    assert_eq!(event_table("Identifies"), Some("_identifies".to_owned()));
    assert_eq!(event_table("Discards"), Some("_discards".to_owned()), "the host keeps `discards` for misfit values");
    assert_eq!(event_table("_users_"), Some("_users".to_owned()));
    assert_eq!(event_table("user"), Some("user".to_owned()));
    assert_eq!(event_table("Order Completed"), Some("order_completed".to_owned()));

    let batch = [
        ev(with(base("track", "t1"), json!({"event": "Users", "properties": {"count": 1}}))),
        ev(with(base("track", "t2"), json!({"event": "tracks"}))),
        ev(with(base("track", "t3"), json!({"event": "Identifies"}))),
        ev(with(base("track", "t4"), json!({"event": "Page Viewed"}))),
    ];
    let plan = run(&batch);
    assert_eq!(table_names(&plan), ["_identifies", "_tracks", "_users", "page_viewed", "tracks"]);
    let users = table(&plan, "_users");
    assert!(!users.upsert, "an event table, not the users table");
    assert_eq!(users.value(0, "count"), Some(&Value::BigInt(1)));
    assert_eq!(users.value(0, "event"), Some(&text("_users")));
    assert_eq!(users.value(0, "event_text"), Some(&text("Users")));
    let tracks = table(&plan, "tracks");
    assert_eq!(tracks.rows.len(), 4);
    let events: Vec<_> = (0..4).map(|r| tracks.value(r, "event").cloned()).collect();
    assert_eq!(
        events,
        [Some(text("_users")), Some(text("_tracks")), Some(text("_identifies")), Some(text("page_viewed"))]
    );
}

#[test]
fn spellings_of_one_event_share_a_table() {
    let batch = [
        ev(with(base("track", "t1"), json!({"event": "Order Completed"}))),
        ev(with(base("track", "t2"), json!({"event": "order_completed"}))),
        ev(with(base("track", "t3"), json!({"event": "OrderCompleted"}))),
    ];
    let plan = run(&batch);
    assert_eq!(table_names(&plan), ["order_completed", "tracks"]);
    let t = table(&plan, "order_completed");
    let raw: Vec<_> = (0..3).map(|r| t.value(r, "event_text").cloned()).collect();
    assert_eq!(raw, [Some(text("Order Completed")), Some(text("order_completed")), Some(text("OrderCompleted"))]);
    assert_eq!(t.sources, [0, 1, 2]);
}

// ---------------------------------------------------------------- flattening

#[test]
fn nested_objects_flatten_and_arrays_become_json_text() {
    let e = ev(with(
        base("track", "t1"),
        json!({"event": "Checkout", "properties": {
            "cart": {"items": {"count": 3, "skus": ["a", "b"]}, "empty": {}, "gone": null, "camelCase": {"deepKey": true}},
            "tags": [], "matrix": [[1, 2], [3]], "objects": [{"a": null}],
            "emoji 🎉": "kept under its usable part", "🎉": "dropped"
        }}),
    ));
    let plan = run(&[e]);
    let t = table(&plan, "checkout");
    let own: Vec<_> =
        cells(t, 0).into_iter().filter(|(n, _)| !COMMON.contains(n) && !n.starts_with("context_")).collect();
    assert_eq!(
        own,
        [
            ("event", text("checkout")),
            ("event_text", text("Checkout")),
            ("cart_camel_case_deep_key", Value::Boolean(true)),
            ("cart_items_count", Value::BigInt(3)),
            ("cart_items_skus", text(r#"["a","b"]"#)),
            ("emoji", text("kept under its usable part")),
            ("matrix", text("[[1,2],[3]]")),
            ("objects", text(r#"[{"a":null}]"#)),
            ("tags", text("[]")),
        ]
    );
    assert_eq!(t.column("cart_empty"), None);
    assert_eq!(t.column("cart_gone"), None);
}

#[test]
fn keys_naming_one_column_keep_the_canonical_one() {
    let e = ev(with(
        base("identify", "i1"),
        json!({"traits": {
            "firstName": "camel", "first_name": "canonical", "FirstName": "pascal",
            "zipCode": "z1", "zip code": "z2",
            "a": {"b": "nested"}, "a_b": "flat",
            "address": {"City": "nested-pascal"}, "address_City": "flat-pascal"
        }}),
    ));
    let plan = run(&[e]);
    let t = table(&plan, "identifies");
    assert_eq!(t.value(0, "first_name"), Some(&text("canonical")));
    // Neither is canonical: the first path in byte order (" " < "C").
    assert_eq!(t.value(0, "zip_code"), Some(&text("z2")));
    // "a_b" is the canonical path of both: the keys decide, "a" < "a_b".
    assert_eq!(t.value(0, "a_b"), Some(&text("nested")));
    // "address_City" for both, canonical for neither: "address" < "address_City".
    assert_eq!(t.value(0, "address_city"), Some(&text("nested-pascal")));
    assert_eq!(t.columns.len(), COMMON.len() + 3 + 4, "{:?}", column_names(t));
}

#[test]
fn context_is_flattened_whole() {
    let e = ev(json!({
        "type": "track", "event": "E", "messageId": "t1", "userId": "u",
        "context": {
            "campaign": {"name": "Spring", "source": "google", "utm_term": "shoes"},
            "page": {"url": "https://x.io/a", "path": "/a"},
            "userAgent": "Mozilla/5.0", "timezone": "Europe/Berlin",
            "device": {"type": "ios", "advertisingId": "ad-1"},
            "network": {"wifi": true}, "customField": {"nestedList": [1, 2]},
            "nothing": null, "🎉": "dropped", "active": true
        }
    }));
    let plan = run(&[e]);
    let t = table(&plan, "tracks");
    let context: Vec<_> = cells(t, 0).into_iter().filter(|(n, _)| n.starts_with("context")).collect();
    assert_eq!(
        context,
        [
            ("context_active", Value::Boolean(true)),
            ("context_campaign_name", text("Spring")),
            ("context_campaign_source", text("google")),
            ("context_campaign_utm_term", text("shoes")),
            ("context_custom_field_nested_list", text("[1,2]")),
            ("context_device_advertising_id", text("ad-1")),
            ("context_device_type", text("ios")),
            ("context_network_wifi", Value::Boolean(true)),
            ("context_page_path", text("/a")),
            ("context_page_url", text("https://x.io/a")),
            ("context_timezone", text("Europe/Berlin")),
            ("context_user_agent", text("Mozilla/5.0")),
        ]
    );
}

#[test]
fn reserved_columns_are_never_overwritten_by_properties_or_traits() {
    let sneaky = json!({
        "id": "forged", "messageId": "forged", "userId": "forged", "user_id": "forged", "anonymousId": "forged",
        "timestamp": "2000-01-01T00:00:00Z", "receivedAt": "forged", "sent_at": "forged",
        "originalTimestamp": "forged", "uuid_ts": "forged", "event": "forged", "eventText": "forged",
        "name": "forged", "groupId": "forged", "previousId": "forged",
        "context": {"ip": "forged"}, "contextMenu": "dropped-prefix", "context_x": "forged",
        "kept": "yes"
    });
    let batch = [
        ev(with(base("track", "t1"), json!({"event": "Sneaky", "properties": sneaky.clone()}))),
        ev(with(base("identify", "i1"), json!({"traits": sneaky.clone()}))),
        ev(with(base("page", "p1"), json!({"name": "Real", "properties": sneaky.clone()}))),
        ev(with(base("group", "g1"), json!({"groupId": "real-group", "traits": sneaky}))),
    ];
    let plan = run(&batch);

    let sneaky_t = table(&plan, "sneaky");
    assert_eq!(sneaky_t.value(0, "id"), Some(&text("t1")));
    assert_eq!(sneaky_t.value(0, "user_id"), Some(&text("user-1")));
    assert_eq!(sneaky_t.value(0, "timestamp"), Some(&ts("2024-05-01T12:00:00.000Z")));
    assert_eq!(sneaky_t.value(0, "event"), Some(&text("sneaky")));
    assert_eq!(sneaky_t.value(0, "event_text"), Some(&text("Sneaky")));
    assert_eq!(sneaky_t.value(0, "context_ip"), Some(&text("203.0.113.9")));
    assert_eq!(sneaky_t.value(0, "context_menu"), None);
    assert_eq!(sneaky_t.value(0, "context_x"), None);
    assert_eq!(sneaky_t.value(0, "kept"), Some(&text("yes")));
    // Not reserved on a track table: `name`, `group_id`, `previous_id`, `message_id`.
    for free in ["name", "group_id", "previous_id", "message_id"] {
        assert_eq!(sneaky_t.value(0, free), Some(&text("forged")), "{free}");
    }

    let identifies = table(&plan, "identifies");
    assert_eq!(identifies.value(0, "id"), Some(&text("i1")));
    assert_eq!(identifies.value(0, "kept"), Some(&text("yes")));
    assert_eq!(identifies.value(0, "event"), Some(&text("forged")), "`event` is only reserved on track tables");
    let users = table(&plan, "users");
    assert_eq!(users.value(0, "id"), Some(&text("user-1")));
    assert_eq!(users.value(0, "received_at"), Some(&ts("2024-05-01T12:00:01.000Z")));
    assert_eq!(users.value(0, "timestamp"), Some(&ts("2024-05-01T12:00:00.000Z")), "the order key is the event's");
    assert_eq!(users.column("user_id"), None);
    assert_eq!(users.column("uuid_ts"), None);
    assert_eq!(users.column("context_ip"), None);

    let pages = table(&plan, "pages");
    assert_eq!(pages.value(0, "name"), Some(&text("Real")));
    assert_eq!(pages.value(0, "uuid_ts"), Some(&ts(NOW)));

    let groups = table(&plan, "groups");
    assert_eq!(groups.value(0, "group_id"), Some(&text("real-group")));
    assert_eq!(groups.value(0, "previous_id"), Some(&text("forged")));
    for t in [sneaky_t, identifies, pages, groups] {
        assert_eq!(t.value(0, "sent_at"), Some(&ts("2024-05-01T11:59:59.000Z")), "{}", t.table);
        assert_eq!(t.value(0, "original_timestamp"), Some(&ts("2024-05-01T11:59:58.000Z")), "{}", t.table);
        assert_eq!(t.value(0, "anonymous_id"), Some(&text("anon-1")), "{}", t.table);
    }
}

// ---------------------------------------------------------------- types

#[test]
fn types_are_inferred_from_values() {
    let e = ev(with(
        base("track", "t1"),
        json!({"event": "Typed", "properties": {
            "rfc3339": "2024-05-01T12:00:00Z", "with_offset": "2024-05-01T14:00:00.5+02:00",
            "space": "2024-05-01 12:00:00", "no_offset": "2024-05-01T12:00:00",
            "date_only": "2024-05-01", "not_a_date": "2024-13-01T00:00:00Z", "padded": " 2024-05-01T12:00:00Z",
            "int": 42, "negative": -7, "max": 9_223_372_036_854_775_807_i64, "beyond": 18_446_744_073_709_551_615_u64,
            "float": 1.5, "whole_float": 2.0, "exp": 1e300,
            "yes": true, "no": false, "string": "hello", "empty": "", "numeric_string": "42"
        }}),
    ));
    let plan = run(&[e]);
    let t = table(&plan, "typed");
    let got = |c: &str| (t.column_type(c), t.value(0, c).cloned());
    assert_eq!(got("rfc3339"), (Some(ColumnType::Timestamp), Some(ts("2024-05-01T12:00:00Z"))));
    assert_eq!(got("with_offset"), (Some(ColumnType::Timestamp), Some(ts("2024-05-01T14:00:00.5+02:00"))));
    assert_eq!(got("space"), (Some(ColumnType::Timestamp), Some(ts("2024-05-01 12:00:00"))));
    assert_eq!(got("no_offset"), (Some(ColumnType::Timestamp), Some(ts("2024-05-01T12:00:00"))));
    assert_eq!(got("date_only"), (Some(ColumnType::Text), Some(text("2024-05-01"))));
    assert_eq!(got("not_a_date"), (Some(ColumnType::Text), Some(text("2024-13-01T00:00:00Z"))));
    assert_eq!(got("padded"), (Some(ColumnType::Text), Some(text(" 2024-05-01T12:00:00Z"))));
    assert_eq!(got("int"), (Some(ColumnType::BigInt), Some(Value::BigInt(42))));
    assert_eq!(got("negative"), (Some(ColumnType::BigInt), Some(Value::BigInt(-7))));
    assert_eq!(got("max"), (Some(ColumnType::BigInt), Some(Value::BigInt(i64::MAX))));
    assert_eq!(got("beyond"), (Some(ColumnType::Double), Some(Value::Double(18_446_744_073_709_551_615_u64 as f64))));
    assert_eq!(got("float"), (Some(ColumnType::Double), Some(Value::Double(1.5))));
    assert_eq!(got("whole_float"), (Some(ColumnType::Double), Some(Value::Double(2.0))));
    assert_eq!(got("exp"), (Some(ColumnType::Double), Some(Value::Double(1e300))));
    assert_eq!(got("yes"), (Some(ColumnType::Boolean), Some(Value::Boolean(true))));
    assert_eq!(got("no"), (Some(ColumnType::Boolean), Some(Value::Boolean(false))));
    assert_eq!(got("string"), (Some(ColumnType::Text), Some(text("hello"))));
    assert_eq!(got("empty"), (Some(ColumnType::Text), Some(text(""))));
    assert_eq!(got("numeric_string"), (Some(ColumnType::Text), Some(text("42"))));
}

#[test]
fn value_column_types_and_text_forms() {
    assert_eq!(Value::Null.column_type(), None);
    assert_eq!(text("x").column_type(), Some(ColumnType::Text));
    assert_eq!(Value::BigInt(1).column_type(), Some(ColumnType::BigInt));
    assert_eq!(Value::Double(1.0).column_type(), Some(ColumnType::Double));
    assert_eq!(Value::Boolean(true).column_type(), Some(ColumnType::Boolean));
    assert_eq!(ts("2024-05-01T12:00:00Z").column_type(), Some(ColumnType::Timestamp));

    assert_eq!(Value::Null.to_text(), None);
    assert_eq!(text("x").to_text().as_deref(), Some("x"));
    assert_eq!(Value::BigInt(-42).to_text().as_deref(), Some("-42"));
    assert_eq!(Value::Double(1.5).to_text().as_deref(), Some("1.5"));
    assert_eq!(Value::Double(2.0).to_text().as_deref(), Some("2.0"));
    assert_eq!(Value::Boolean(false).to_text().as_deref(), Some("false"));
    assert_eq!(ts("2024-05-01T12:00:00Z").to_text().as_deref(), Some("2024-05-01T12:00:00Z"));
}

#[test]
fn conflicting_types_in_a_batch_widen() {
    let batch: Vec<Event> = [
        json!({"amount": 5, "code": 7, "flag": true, "when": "2024-05-01T12:00:00Z", "mixed": 1, "same": 1}),
        json!({"amount": 5.5, "code": "A7", "flag": 1, "when": "soon", "mixed": 2.5, "same": 2}),
        json!({"mixed": false, "only_here": null}),
        json!({}),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, props)| ev(with(base("track", &format!("t{i}")), json!({"event": "Paid", "properties": props}))))
    .collect();
    let plan = run(&batch);
    let t = table(&plan, "paid");
    let column = |c: &str| -> (Option<ColumnType>, Vec<Value>) {
        (t.column_type(c), (0..4).map(|r| t.value(r, c).cloned().unwrap_or(Value::Null)).collect())
    };
    assert_eq!(
        column("amount"),
        (Some(ColumnType::Double), vec![Value::BigInt(5), Value::Double(5.5), Value::Null, Value::Null]),
        "BigInt with Double widens to Double; each value keeps its type for the loader to fit"
    );
    assert_eq!(column("code"), (Some(ColumnType::Text), vec![Value::BigInt(7), text("A7"), Value::Null, Value::Null]));
    assert_eq!(
        column("flag"),
        (Some(ColumnType::Text), vec![Value::Boolean(true), Value::BigInt(1), Value::Null, Value::Null])
    );
    assert_eq!(
        column("when"),
        (
            Some(ColumnType::Text),
            vec![Value::Timestamp("2024-05-01T12:00:00Z".into()), text("soon"), Value::Null, Value::Null]
        )
    );
    assert_eq!(
        column("mixed"),
        (Some(ColumnType::Text), vec![Value::BigInt(1), Value::Double(2.5), Value::Boolean(false), Value::Null])
    );
    assert_eq!(
        column("same"),
        (Some(ColumnType::BigInt), vec![Value::BigInt(1), Value::BigInt(2), Value::Null, Value::Null])
    );
    assert_eq!(t.column("only_here"), None);
    // Widening is per table: `tracks` has none of these columns and is untouched.
    assert_eq!(table(&plan, "tracks").column("amount"), None);
}

#[test]
fn widening_is_per_table() {
    let batch = [
        ev(with(base("track", "t1"), json!({"event": "A", "properties": {"x": 1}}))),
        ev(with(base("track", "t2"), json!({"event": "B", "properties": {"x": "one"}}))),
    ];
    let plan = run(&batch);
    assert_eq!(table(&plan, "a").column_type("x"), Some(ColumnType::BigInt));
    assert_eq!(table(&plan, "b").column_type("x"), Some(ColumnType::Text));
}

#[test]
fn fixed_columns_keep_their_types() {
    let e = ev(json!({
        "type": "track", "event": "E", "messageId": "t1", "userId": 42, "anonymousId": 7,
        "timestamp": "not a time", "sentAt": 12345, "receivedAt": "2024-05-01T12:00:01Z"
    }));
    let plan = run(&[e]);
    let t = table(&plan, "tracks");
    assert_eq!(t.value(0, "user_id"), Some(&text("42")), "numeric ids become text");
    assert_eq!(t.value(0, "anonymous_id"), Some(&text("7")));
    assert_eq!(t.value(0, "timestamp"), Some(&Value::Null));
    assert_eq!(t.value(0, "sent_at"), Some(&Value::Null));
    assert_eq!(t.value(0, "received_at"), Some(&ts("2024-05-01T12:00:01Z")));
    let types: Vec<_> = t.columns.iter().take(10).map(|(_, t)| *t).collect();
    use ColumnType::{Text as T, Timestamp as S};
    assert_eq!(types, [T, T, T, S, S, S, S, S, T, T]);
}

// ---------------------------------------------------------------- unmappable

#[test]
fn unmappable_events_are_reported_and_left_out() {
    let nameless = Event {
        kind: EventType::Track,
        message_id: "bad-0".to_owned(),
        name: None,
        user_id: Some("u".to_owned()),
        anonymous_id: None,
        timestamp_ms: 0,
        json: r#"{"type":"track","messageId":"bad-0","userId":"u"}"#.to_owned(),
        source: Event::TEST_SOURCE.to_owned(),
    };
    let not_json = Event { json: "{not json".to_owned(), message_id: "bad-6".to_owned(), ..nameless.clone() };
    let not_object = Event { json: "[1,2]".to_owned(), message_id: "bad-7".to_owned(), ..nameless.clone() };
    let batch = vec![
        nameless,
        ev(with(base("track", "bad-1"), json!({"event": "   "}))),
        ev(with(base("track", "bad-2"), json!({"event": "🎉🎉"}))),
        ev(with(base("track", "ok-3"), json!({"event": "Fine"}))),
        ev(json!({"type": "group", "messageId": "bad-4", "userId": "u", "traits": {"a": 1}})),
        ev(json!({"type": "alias", "messageId": "bad-5", "userId": "u"})),
        not_json,
        not_object,
        ev(json!({"type": "alias", "messageId": "bad-8", "anonymousId": "a", "previousId": "p"})),
        ev(json!({"type": "identify", "messageId": "", "userId": "u"})),
        ev(with(base("page", "ok-10"), json!({}))),
    ];
    let (plan, unmapped) = plan_at(SCHEMA, &batch, NOW);
    assert_consistent(&plan);
    let indexes: Vec<usize> = unmapped.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    let reason = |i: usize| unmapped.iter().find(|(j, _)| *j == i).map(|(_, r)| r.as_str()).unwrap_or("");
    assert_eq!(reason(0), "track without an `event` name");
    assert_eq!(reason(1), "track without an `event` name");
    assert_eq!(reason(2), "event name \"🎉🎉\" has no letter or digit to name a table");
    assert_eq!(reason(4), "group without `groupId`");
    assert_eq!(reason(5), "alias without `previousId`");
    assert!(reason(6).starts_with("event is not valid JSON"), "{}", reason(6));
    assert_eq!(reason(7), "event is not a JSON object");
    assert_eq!(reason(8), "alias without `userId`");
    assert_eq!(reason(9), "empty `messageId`");

    assert_eq!(table_names(&plan), ["fine", "pages", "tracks"]);
    assert_eq!(table(&plan, "tracks").sources, [3]);
    assert_eq!(table(&plan, "fine").sources, [3]);
    assert_eq!(table(&plan, "pages").sources, [10]);
    assert_eq!(table(&plan, "pages").value(0, "id"), Some(&text("ok-10")));
}

#[test]
fn ids_as_numbers_are_accepted_for_group_and_alias() {
    let batch = [
        ev(json!({"type": "group", "messageId": "g", "userId": "u", "groupId": 77})),
        ev(json!({"type": "alias", "messageId": "a", "userId": "u", "previousId": 12})),
    ];
    let plan = run(&batch);
    assert_eq!(table(&plan, "groups").value(0, "group_id"), Some(&text("77")));
    assert_eq!(table(&plan, "aliases").value(0, "previous_id"), Some(&text("12")));
}
