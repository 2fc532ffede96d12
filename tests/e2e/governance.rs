//! Data governance through the real binary: tracking plans that block,
//! forward and omit, with their violations in the admin API, the CLI and
//! metrics; plan reloads; transformations; exposure dedupe and ownership
//! against the Statsig mock; the destination audit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, StatsigMock, Switchyard, binary, eventually, http, plugin, post_json};

const WAIT: Duration = Duration::from_secs(60);
const ADMIN: &str = "gov-admin-token";

/// A plan for `Order Completed` (order_id required, total a number) and
/// `Product Viewed`.
const PLAN: &str = r#"{
  "name": "Shop",
  "rules": [
    { "type": "track", "key": "Order Completed", "json_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": { "properties": { "type": "object", "required": ["order_id"],
          "properties": { "order_id": { "type": "string" }, "total": { "type": "number" } } } } } },
    { "type": "track", "key": "Product Viewed", "json_schema": {
        "properties": { "properties": { "properties": { "sku": { "type": "string" } } } } } }
  ]
}"#;

async fn send(sy: &Switchyard, key: &str, batch: Vec<Value>) {
    let (status, body) = post_json(&sy.url("/v1/batch"), Some(key), &json!({ "batch": batch })).await;
    assert_eq!((status, body), (200, json!({"success": true})));
}

async fn admin_get(sy: &Switchyard, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let (status, body) = http(hyper::Method::GET, &sy.admin_url(path), &[("authorization", &auth)], Vec::new()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn reload(sy: &Switchyard) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let (status, body) =
        http(hyper::Method::POST, &sy.admin_url("/admin/reload"), &[("authorization", &auth)], Vec::new()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary()).args(args).output().expect("run switchyard");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_plan_blocks_forwards_omits_and_counts_violations() {
    let plans = tempfile::tempdir().unwrap();
    let plan = write(plans.path(), "shop.json", PLAN);
    let (main, quarantine, violations) =
        (Receiver::always(200).await, Receiver::always(200).await, Receiver::always(200).await);
    let cfg = Config::new()
        .admin(ADMIN)
        .source_with(
            "web",
            "wk_web",
            &format!(
                "tracking_plan = \"{plan}\"\n\
                 [sources.schema_settings]\n\
                 forwarding_blocked_events_to = \"quarantine\"\n\
                 forwarding_violations_to = \"violations\"\n\
                 [sources.schema_settings.track]\n\
                 allow_unplanned_events = false\n\
                 allow_unplanned_event_properties = false"
            ),
        )
        .source("quarantine", "wk_quarantine")
        .source("violations", "wk_violations")
        // No `sources`: every source but those receiving blocked events and violations.
        .webhook("main", &format!("{}/main", main.origin()), "batch = { linger_ms = 5 }")
        .webhook(
            "held",
            &format!("{}/held", quarantine.origin()),
            "sources = [\"quarantine\"]\nbatch = { linger_ms = 5 }",
        )
        .webhook(
            "violations",
            &format!("{}/violations", violations.origin()),
            "sources = [\"violations\"]\nbatch = { linger_ms = 5 }",
        );
    let sy = Switchyard::start(&cfg.build()).await;
    send(
        &sy,
        "wk_web",
        vec![
            // Planned, with an unplanned property: omitted, the rest arrives.
            json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "ok-1",
                   "properties": {"order_id": "o-1", "total": 30.5, "coupon": "SPRING"}}),
            // A wrong type: a violation, still delivered (violations allowed).
            json!({"type": "track", "event": "Order Completed", "userId": "u2", "messageId": "typed-1",
                   "properties": {"order_id": "o-2", "total": "thirty"}}),
            // Unplanned: blocked, forwarded to the quarantine source.
            json!({"type": "track", "event": "Signed Up", "userId": "u3", "messageId": "unplanned-1",
                   "properties": {"plan": "pro"}}),
        ],
    )
    .await;
    eventually(WAIT, "the planned events", || main.events().len() >= 2).await;
    eventually(WAIT, "the blocked event, forwarded", || !quarantine.events().is_empty()).await;
    eventually(WAIT, "three Violation Generated events", || violations.events().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut got = main.events();
    got.sort_by_key(|e| e["messageId"].as_str().unwrap().to_owned());
    assert_eq!(got.len(), 2, "the unplanned event never reaches main: {got:?}");
    assert_eq!(got[0]["messageId"], "ok-1");
    assert_eq!(got[0]["properties"], json!({"order_id": "o-1", "total": 30.5}), "coupon omitted");
    assert_eq!(got[0]["context"]["protocols"]["omitted"], json!(["coupon"]));
    assert_eq!(got[1]["properties"]["total"], "thirty", "allowed on violation, as sent");

    let held = quarantine.events();
    assert_eq!(held.len(), 1);
    assert_eq!((held[0]["messageId"].as_str(), held[0]["event"].as_str()), (Some("unplanned-1"), Some("Signed Up")));
    assert_eq!(held[0]["properties"], json!({"plan": "pro"}), "forwarded as it was sent");
    assert_eq!(held[0]["context"]["protocols"]["violations"][0]["type"], "unplanned_event");

    let generated = violations.events();
    assert!(generated.iter().all(|e| e["event"] == "Violation Generated" && e["userId"] == "schema-violations"));
    let mut fields: Vec<(String, String)> = generated
        .iter()
        .map(|e| {
            let p = &e["properties"];
            (p["violationField"].as_str().unwrap().to_owned(), p["violationType"].as_str().unwrap().to_owned())
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("event".to_owned(), "Unplanned Event".to_owned()),
            ("properties.coupon".to_owned(), "Unplanned Property".to_owned()),
            ("properties.total".to_owned(), "Type".to_owned())
        ]
    );
    let typed = generated.iter().find(|e| e["properties"]["violationField"] == "properties.total").unwrap();
    assert_eq!(typed["properties"]["eventMessageID"], "typed-1");
    assert_eq!(typed["properties"]["sourceName"], "web");
    assert_eq!(typed["properties"]["trackingPlanName"], "Shop");

    // The admin API, metrics and the CLI show the violation with its path.
    let (status, list) = admin_get(&sy, "/admin/sources/web/violations").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!((list["blocked"].as_u64(), list["forwarded"].as_u64()), (Some(1), Some(1)), "{list}");
    let rows = list["violations"].as_array().unwrap();
    let wrong = rows.iter().find(|r| r["kind"] == "datatype_mismatch").expect("the type violation");
    assert_eq!((wrong["event"].as_str(), wrong["field"].as_str()), (Some("Order Completed"), Some("properties.total")));
    assert_eq!(wrong["count"], 1);
    assert_eq!(wrong["samples"][0]["messageId"], "typed-1", "the payload is kept as an example");
    let metric = "switchyard_source_violations_total{source=\"web\",event=\"Order Completed\",field=\"properties.total\",kind=\"datatype_mismatch\"}";
    assert_eq!(sy.metric(metric).await, 1);
    assert_eq!(sy.metric("switchyard_source_events_blocked_total{source=\"web\"}").await, 1);
    let config = sy.config_path().display().to_string();
    let (ok, out) = cli(&["violations", "-c", &config, "-s", "web"]);
    assert!(ok, "{out}");
    assert!(out.contains("1 blocked, 1 forwarded"), "{out}");
    assert!(out.contains("properties.total") && out.contains("datatype_mismatch"), "{out}");
    let (status, _) = admin_get(&sy, "/admin/sources/nope/violations").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_plan_reload_applies_live_and_an_invalid_plan_is_refused() {
    let plans = tempfile::tempdir().unwrap();
    let plan = write(plans.path(), "plan.json", PLAN);
    let hook = Receiver::always(200).await;
    let cfg = Config::new()
        .admin(ADMIN)
        .server("watch = false")
        .source_with(
            "web",
            "wk_web",
            &format!("tracking_plan = \"{plan}\"\n[sources.schema_settings.track]\nallow_unplanned_events = false"),
        )
        .webhook("hook", &format!("{}/hook", hook.origin()), "batch = { linger_ms = 5 }");
    let sy = Switchyard::start(&cfg.build()).await;
    let signed_up = |id: &str| json!({"type": "track", "event": "Signed Up", "userId": "u", "messageId": id});
    send(&sy, "wk_web", vec![signed_up("before")]).await;
    assert_eq!(sy.wait_metric("switchyard_source_events_blocked_total{source=\"web\"}", 1).await, 1);

    // The plan gains `Signed Up`: a reload applies it.
    let planned = PLAN.replace(
        "\"rules\": [",
        "\"rules\": [\n    { \"type\": \"track\", \"key\": \"Signed Up\", \"json_schema\": {} },",
    );
    std::fs::write(&plan, &planned).unwrap();
    let (status, body) = reload(&sy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"]["sources_changed"], true, "{body}");
    send(&sy, "wk_web", vec![signed_up("after")]).await;
    eventually(WAIT, "the newly planned event", || hook.message_ids().contains(&"after".to_owned())).await;

    // A plan that does not compile is refused, naming its file and line;
    // the plan in force stays.
    let broken = planned.replace("{ \"type\": \"string\" }", "{ \"type\": 7 }");
    std::fs::write(&plan, &broken).unwrap();
    let (status, body) = reload(&sy).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    let line = broken.lines().position(|l| l.contains("\"Order Completed\"")).unwrap() + 1;
    assert!(error.contains(&format!("plan.json:{line}: rules[1]: json_schema does not compile")), "{error}");
    assert!(error.contains("sources[0].tracking_plan"), "{error}");
    send(&sy, "wk_web", vec![signed_up("still"), json!({"type": "track", "event": "Other", "userId": "u"})]).await;
    eventually(WAIT, "the old plan still applies", || hook.message_ids().contains(&"still".to_owned())).await;
    assert_eq!(sy.wait_metric("switchyard_source_events_blocked_total{source=\"web\"}", 2).await, 2);
    assert!(!hook.events().iter().any(|e| e["event"] == "Other"));

    // And at start, the server refuses to run.
    let (code, log) = Switchyard::start_expecting_failure(&cfg.build());
    assert_ne!(code, Some(0));
    assert!(log.contains(&format!("plan.json:{line}: rules[1]")) && log.contains("does not compile"), "{log}");
}

#[tokio::test]
async fn a_plan_edited_on_disk_is_applied_by_the_watcher() {
    let plans = tempfile::tempdir().unwrap();
    let plan = write(plans.path(), "plan.json", PLAN);
    let hook = Receiver::always(200).await;
    let cfg = Config::new()
        .server("watch_debounce_ms = 50")
        .source_with(
            "web",
            "wk_web",
            &format!("tracking_plan = \"{plan}\"\n[sources.schema_settings.track]\nallow_unplanned_events = false"),
        )
        .webhook("hook", &format!("{}/hook", hook.origin()), "batch = { linger_ms = 5 }");
    let sy = Switchyard::start(&cfg.build()).await;
    let planned = PLAN.replace(
        "\"rules\": [",
        "\"rules\": [\n    { \"type\": \"track\", \"key\": \"Signed Up\", \"json_schema\": {} },",
    );
    let tmp = plans.path().join("plan.json.new");
    std::fs::write(&tmp, planned).unwrap();
    std::fs::rename(&tmp, &plan).unwrap();
    // Until the watcher has reloaded, `Signed Up` is blocked; after, delivered.
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 0;
    while hook.events().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the edited plan never applied:\n{}", sy.logs());
        n += 1;
        send(
            &sy,
            "wk_web",
            vec![json!({"type": "track", "event": "Signed Up", "userId": "u", "messageId": format!("w-{n}")})],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sy.logs().contains("reload"), "{}", sy.logs());
}

#[tokio::test]
async fn transformations_rename_and_drop_per_source_and_destination() {
    let (plain, scrubbed) = (Receiver::always(200).await, Receiver::always(200).await);
    let cfg = Config::new()
        .source_with(
            "web",
            "wk_web",
            "[[sources.transformations]]\n\
             type = \"track\"\n\
             event = \"order_completed\"\n\
             new_event_name = \"Order Completed\"\n\
             property_renames = [{ old_name = \"amount\", new_name = \"revenue\" }, { old_name = \"zip\", new_name = \"address.zip\" }]\n\
             property_value_transformations = [{ property_paths = [\"currency\"], property_value = \"EUR\" }]",
        )
        .webhook("plain", &format!("{}/plain", plain.origin()), "batch = { linger_ms = 5 }")
        .webhook(
            "scrubbed",
            &format!("{}/scrubbed", scrubbed.origin()),
            "batch = { linger_ms = 5 }\n\
             [[destinations.transformations]]\n\
             type = \"track\"\n\
             event = \"Order Completed\"\n\
             drop_properties = [\"address\", \"context.ip\"]",
        );
    let sy = Switchyard::start(&cfg.build()).await;
    send(
        &sy,
        "wk_web",
        vec![json!({"type": "track", "event": "order_completed", "userId": "u", "messageId": "t-1",
                    "properties": {"amount": 12, "zip": "10115", "currency": "USD"}, "context": {"ip": "203.0.113.9"}})],
    )
    .await;
    eventually(WAIT, "both destinations", || !plain.events().is_empty() && !scrubbed.events().is_empty()).await;
    let p = &plain.events()[0];
    assert_eq!(p["event"], "Order Completed");
    assert_eq!(p["properties"], json!({"revenue": 12, "address": {"zip": "10115"}, "currency": "EUR"}));
    assert_eq!(p["context"]["ip"], "203.0.113.9");
    let s = &scrubbed.events()[0];
    assert_eq!(s["properties"], json!({"revenue": 12, "currency": "EUR"}), "{s}");
    assert!(s["context"].get("ip").is_none(), "{s}");

    // Two rules for one event could loop: refused with their indexes.
    let looping = Config::new().source_with(
        "web",
        "wk",
        "[[sources.transformations]]\ntype = \"track\"\nevent = \"a\"\nnew_event_name = \"b\"\n\
         [[sources.transformations]]\ntype = \"track\"\nevent = \"a\"\nnew_event_name = \"c\"",
    );
    let (code, log) = Switchyard::start_expecting_failure(&looping.build());
    assert_ne!(code, Some(0));
    assert!(log.contains("sources[0].transformations[1]") && log.contains("one transformation per"), "{log}");
}

#[tokio::test]
async fn exposures_reach_statsig_once_and_never_when_its_sdk_owns_them() {
    let (deduped, owned) = (StatsigMock::start("secret-a").await, StatsigMock::start("secret-b").await);
    let analytics = Receiver::always(200).await;
    let statsig = |secret: &str, mock: &StatsigMock, exposures: &str| {
        format!(
            "settings = {{ server_secret = \"{secret}\", endpoint = \"{origin}\" }}\n\
             allow_http = [\"{origin}\"]\n\
             exposures = \"{exposures}\"\n\
             batch = {{ max_events = 100, linger_ms = 5 }}",
            origin = mock.origin()
        )
    };
    let cfg = Config::new()
        .source("web", "wk_web")
        .destination("statsig", plugin("statsig_destination"), &statsig("secret-a", &deduped, "dedupe:1h"))
        .destination("statsig_owned", plugin("statsig_destination"), &statsig("secret-b", &owned, "owner:sdk"))
        .webhook("analytics", &format!("{}/a", analytics.origin()), "batch = { linger_ms = 5 }");
    let sy = Switchyard::start(&cfg.build()).await;
    let viewed = |id: &str, user: &str| {
        json!({"type": "track", "event": "Experiment Viewed", "userId": user, "messageId": id,
               "properties": {"experimentId": "checkout-v2", "variationId": "treatment"}})
    };
    let statsig_exposure = |id: &str| {
        json!({"type": "track", "event": "statsig::experiment_exposure", "userId": "u1", "messageId": id,
               "properties": {"config": "checkout-v2", "ruleID": "rule-7"}})
    };
    send(&sy, "wk_web", vec![viewed("e-1", "u1"), viewed("e-2", "u1"), viewed("e-3", "u2")]).await;
    send(&sy, "wk_web", vec![statsig_exposure("s-1"), statsig_exposure("s-2")]).await;
    send(&sy, "wk_web", vec![json!({"type": "track", "event": "Purchase", "userId": "u1", "messageId": "p-1"})]).await;
    eventually(WAIT, "analytics gets every exposure", || analytics.events().len() >= 6).await;
    eventually(WAIT, "statsig's deliveries", || deduped.events().len() >= 4 && !owned.events().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let names = |mock: &StatsigMock| -> Vec<String> {
        let mut v: Vec<String> = mock
            .events()
            .iter()
            .map(|e| format!("{}/{}", e["eventName"].as_str().unwrap(), e["user"]["userID"].as_str().unwrap_or("")))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&deduped),
        ["Experiment Viewed/u1", "Experiment Viewed/u2", "Purchase/u1", "statsig::experiment_exposure/u1"],
        "each (unit, experiment, variant) once within the window"
    );
    assert_eq!(names(&owned), ["Purchase/u1"], "Statsig's SDK owns exposures: none are forwarded");
    assert_eq!(analytics.events().len(), 6, "analytics destinations still get every exposure");
    let dropped = |d: &str, r: &str| {
        format!("switchyard_destination_exposures_dropped_total{{destination=\"{d}\",reason=\"{r}\"}}")
    };
    assert_eq!(sy.metric(&dropped("statsig", "duplicate")).await, 2);
    assert_eq!(sy.metric(&dropped("statsig_owned", "owned_by_sdk")).await, 5);
}

#[tokio::test]
async fn the_audit_finds_orphans_pii_unused_grants_and_removed_destinations() {
    let (leaky, clean, idle, stuck) = (
        Receiver::always(200).await,
        Receiver::always(200).await,
        Receiver::always(200).await,
        Receiver::always(503).await,
    );
    let base = Config::new()
        .admin(ADMIN)
        .source("web", "wk_web")
        .webhook("leaky", &format!("{}/l", leaky.origin()), "batch = { linger_ms = 5 }")
        .webhook(
            "clean",
            &format!("{}/c", clean.origin()),
            "batch = { linger_ms = 5 }\n\
             [[destinations.filters]]\n\
             if = \"true\"\n\
             actions = [{ type = \"drop_properties\", fields = { traits = [\"email\"], context = [\"ip\"] } }]",
        )
        // Subscribed to nothing that is sent, and granted an origin it never calls.
        .destination(
            "idle",
            plugin("webhook_destination"),
            &format!(
                "settings = {{ url = \"{o}/i\" }}\nallow_http = [\"{o}\", \"https://api.unused.example\"]\nsubscribe = \"event = 'Never Sent'\"",
                o = idle.origin()
            ),
        )
        .section("[governance.audit]\norphaned_after = \"2s\"\npii_fields = [\"email\", \"ip\", \"phone\"]");
    let with_stuck = base.clone().webhook(
        "stuck",
        &format!("{}/s", stuck.origin()),
        "retry = { initial_backoff_ms = 50, max_backoff_ms = 200, horizon_secs = 3600 }",
    );
    let sy = Switchyard::start(&with_stuck.build()).await;
    send(
        &sy,
        "wk_web",
        vec![json!({"type": "identify", "userId": "u1", "messageId": "id-1",
                    "traits": {"email": "ada@example.com", "plan": "pro"}, "context": {"ip": "203.0.113.9"}})],
    )
    .await;
    eventually(WAIT, "leaky and clean deliver", || !leaky.events().is_empty() && !clean.events().is_empty()).await;
    eventually(WAIT, "stuck is failing", || stuck.count() >= 1).await;
    // `stuck` leaves the config with its event undelivered.
    sy.rewrite_config(&base.build());
    assert_eq!(reload(&sy).await.0, 200);
    // Past `orphaned_after` for idle; leaky delivers again just before the audit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send(&sy, "wk_web", vec![json!({"type": "track", "event": "Ping", "userId": "u1", "messageId": "ping-1"})]).await;
    eventually(WAIT, "leaky delivers again", || leaky.events().len() >= 2).await;
    // The receiver has it before the worker has counted the call (the audit
    // reads the worker's last success).
    assert_eq!(sy.wait_metric("switchyard_destination_delivered_total{destination=\"leaky\"}", 2).await, 2);

    let (status, report) = admin_get(&sy, "/admin/audit").await;
    assert_eq!(status, 200, "{report}");
    let findings = report["findings"].as_array().unwrap();
    let has = |kind: &str, subject: &str| findings.iter().find(|f| f["kind"] == kind && f["subject"] == subject);
    assert!(has("orphaned", "idle").is_some(), "{report}");
    assert!(has("orphaned", "leaky").is_none(), "delivered within the window: {report}");
    let pii = has("pii", "leaky").expect("leaky receives PII");
    assert_eq!(pii["fields"], json!(["context.ip", "traits.email"]), "{report}");
    assert!(has("pii", "clean").is_none(), "its filters drop them: {report}");
    let unused = &has("unused_grant", "idle").expect("unused grant")["fields"];
    assert!(unused.as_array().unwrap().contains(&json!("https://api.unused.example:443")), "{report}");
    assert!(has("unused_grant", "leaky").is_none(), "{report}");
    assert!(has("removed_holding_events", "stuck").is_some(), "{report}");
    assert!(has("no_tracking_plan", "web").is_some(), "{report}");

    let config = sy.config_path().display().to_string();
    let (ok, out) = cli(&["audit", "-c", &config]);
    assert!(ok, "{out}");
    assert!(out.contains("orphaned") && out.contains("idle") && out.contains("traits.email"), "{out}");
    let (ok, out) = cli(&["audit", "-c", &config, "--json", "--fail-on-findings"]);
    assert!(!ok, "findings fail the command for automation: {out}");
    assert!(out.contains("\"kind\": \"pii\""), "{out}");
}
