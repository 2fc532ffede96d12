//! FQL and destination filters per event: compile once, evaluate many.
//!
//! Prints ns per evaluation of typical conditions on a typical track
//! event (already parsed), and of three filters applied to its JSON text
//! as delivery does it (reading what they need, editing the text).
//!
//! Run: `cargo bench -p switchyard-governance --bench fql`.

mod common;

use std::hint::black_box;

use common::per_op;

use serde_json::json;
use switchyard_governance::filter::{ActionConfig, FilterConfig};
use switchyard_governance::{Filters, Query};

fn main() {
    let event = json!({
        "type": "track", "event": "Order Completed", "userId": "user-12345", "messageId": "m-1",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "properties": {"total": 42.5, "currency": "EUR", "email": "a@example.com", "coupon": "SPRING",
            "products": [{"sku": "a"}, {"sku": "b"}], "internal": false},
        "context": {"ip": "203.0.113.7", "library": {"name": "analytics.js", "version": "2.11.1"},
            "userAgent": "Mozilla/5.0", "locale": "de-DE"},
    });
    let text = event.to_string();
    println!("FQL on a {}-byte track event (parsed once), ns per evaluation:", text.len());
    for src in [
        "type = 'track'",
        "type = 'track' and event = 'Order Completed'",
        "match(context.library.version, '2.*') and properties.total >= 10",
        "( type = 'track' or type = 'identify' ) and !contains(lowercase(context.library.name), 'ios')",
        "properties.currency in ['EUR', 'USD', 'GBP'] and length(userId) > 0",
    ] {
        let q = Query::compile(src).expect("compiles");
        let ns = per_op(1_000_000, || {
            black_box(q.matches(black_box(&event)));
        });
        println!("  {ns:>7.1}  {src}");
    }
    let compile = per_op(100_000, || {
        black_box(Query::compile(black_box("type = 'track' and match(event, 'Order *')")).ok());
    });
    println!("  compile: {compile:.0} ns (once per config load)");

    let filters = Filters::compile(&[
        FilterConfig {
            title: None,
            condition: "true".into(),
            enabled: true,
            actions: vec![ActionConfig::DropProperties {
                fields: [
                    ("properties".to_owned(), vec!["email".to_owned()]),
                    ("context".to_owned(), vec!["ip".to_owned()]),
                ]
                .into_iter()
                .collect(),
            }],
        },
        FilterConfig {
            title: None,
            condition: "type = 'track' and properties.internal = true".into(),
            enabled: true,
            actions: vec![ActionConfig::Drop],
        },
        FilterConfig {
            title: None,
            condition: "type = 'track'".into(),
            enabled: true,
            actions: vec![ActionConfig::Sample { percent: 1.0, path: Some("userId".into()) }],
        },
    ])
    .expect("filters");
    let parse = per_op(200_000, || {
        black_box(serde_json::from_str::<serde_json::Value>(black_box(&text)).ok());
    });
    let apply = per_op(200_000, || {
        black_box(filters.apply(black_box(&text)));
    });
    println!("\nthree filters (strip two fields, a drop, a 100% sample) on its JSON text:");
    println!(
        "  {apply:.0} ns per event, reading only the paths they need and removing keys from the text \
         (parsing it whole alone takes {parse:.0} ns)"
    );
}
