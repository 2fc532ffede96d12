//! Tracking plans per event: a 50-rule plan checking a typical track
//! event as ingest does: first on its indexed text (`passes`, all a valid
//! event costs), then, for one with violations, on what the plan reads of
//! it (`raw::sparse`).
//!
//! Run: `cargo bench -p switchyard-governance --bench plan`;
//! `PASSES_ONLY=1` loops `passes` on the valid event alone, for a profiler.

mod common;

use std::hint::black_box;

use common::per_op;

use serde_json::{Value, json};
use switchyard_governance::{SchemaSettings, TrackingPlan};
use switchyard_plugin_sdk::json::Document;

fn plan_text() -> String {
    let mut rules: Vec<Value> = (0..48)
        .map(|i| {
            json!({"type": "track", "key": format!("Event {i}"), "json_schema": {"properties": {"properties": {
                "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "value": {"type": "number"}}}}}})
        })
        .collect();
    rules.push(json!({"type": "track", "key": "Product Added", "json_schema": {"properties": {"properties": {
        "type": "object", "required": ["product_id", "sku", "price"],
        "properties": {"product_id": {"type": "string", "pattern": "^[0-9a-f]{24}$"}, "sku": {"type": "string"},
            "category": {"enum": ["Games", "Books", "Toys"]}, "name": {"type": "string", "maxLength": 200},
            "price": {"type": "number", "minimum": 0}, "quantity": {"type": "integer", "minimum": 1}}}}}}));
    rules.push(json!({"type": "common", "json_schema": {"required": ["type", "messageId"], "properties": {
        "userId": {"type": ["string", "null"]},
        "context": {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"},
            "library": {"type": "object", "required": ["name"]}}}}}}));
    json!({"name": "bench", "rules": rules}).to_string()
}

fn main() {
    let plan = TrackingPlan::parse(&plan_text()).expect("plan compiles");
    let settings: SchemaSettings =
        serde_json::from_value(json!({"track": {"allow_unplanned_event_properties": false}})).expect("settings");
    let valid = r#"{"type":"track","event":"Product Added","userId":"user-1","messageId":"m-1","timestamp":"2024-05-01T12:00:00.000Z","properties":{"product_id":"507f1f77bcf86cd799439011","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","price":18.99,"quantity":1},"context":{"ip":"203.0.113.7","library":{"name":"analytics.js","version":"2.11.1"},"userAgent":"Mozilla/5.0"}}"#;
    let invalid = valid.replace("18.99", "\"18.99\"").replace("\"quantity\":1", "\"quantity\":1,\"coupon\":\"X\"");
    if std::env::var_os("PASSES_ONLY").is_some() {
        let ns = per_op(2_000_000, || {
            black_box(plan.passes(black_box(valid)));
        });
        println!("passes: {ns:.0} ns");
        return;
    }
    println!("A {}-rule tracking plan, ns per event (as ingest checks it):", plan.len());
    for (name, text) in [("valid event", valid), ("a wrong type and an unplanned property", &invalid)] {
        let ns = per_op(100_000, || {
            if !plan.passes(black_box(text)) {
                let mut v = switchyard_governance::raw::sparse(text, plan.needs()).expect("json");
                black_box(plan.check(&settings, &mut v));
            }
        });
        println!("  {ns:>8.0}  {name}");
    }
    let index = per_op(100_000, || {
        black_box(Document::parse(black_box(valid)).ok());
    });
    let checked = per_op(100_000, || {
        let mut v = switchyard_governance::raw::sparse(black_box(valid), plan.needs()).expect("json");
        black_box(plan.check(&settings, &mut v));
    });
    println!("  {index:>8.0}  of which indexing the valid one ({checked:.0} to check it on a sparse Value instead)");
    let read = per_op(100_000, || {
        black_box(switchyard_governance::raw::sparse(black_box(valid), plan.needs()).ok());
    });
    let whole = per_op(100_000, || {
        black_box(serde_json::from_str::<Value>(black_box(valid)).ok());
    });
    println!("  {read:>8.0}  of which reading what the plan needs ({whole:.0} to parse it whole)");
    let compile = per_op(100, || {
        black_box(TrackingPlan::parse(black_box(&plan_text())).ok());
    });
    println!("  compile: {:.2} ms (once per config load)", compile / 1e6);
}
