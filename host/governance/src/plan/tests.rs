//! Every control of a tracking plan, on Segment's rule model.

use serde_json::{Value, json};

use super::*;

const PLAN: &str = r#"{
  "name": "Shop",
  "rules": [
    { "type": "common", "json_schema": {
        "properties": { "context": { "properties": { "ip": { "type": "string", "format": "ipv4" } } } } } },
    { "type": "track", "key": "Order Completed", "version": 1,
      "json_schema": { "properties": { "properties": {
        "type": "object", "required": ["order_id"],
        "properties": {
          "order_id": { "type": "string" },
          "total": { "type": "number", "minimum": 0 },
          "currency": { "enum": ["USD", "EUR"] } } } } } },
    { "type": "TRACK", "key": "Order Completed", "version": 2,
      "json_schema": { "properties": { "properties": {
        "type": "object", "required": ["order_id", "coupon"],
        "properties": { "order_id": { "type": "string" }, "coupon": { "type": "string" } } } } } },
    { "type": "identify", "json_schema": { "properties": { "traits": {
        "properties": { "email": { "type": "string", "pattern": "@" }, "plan": { "type": "string" } } } } } },
    { "type": "page", "key": "Pricing", "json_schema": { "properties": { "properties": {
        "properties": { "path": { "type": "string" } } } } } }
  ]
}"#;

fn plan() -> TrackingPlan {
    TrackingPlan::parse(PLAN).expect("plan compiles")
}

fn settings(v: Value) -> SchemaSettings {
    serde_json::from_value(v).expect("settings")
}

fn order(properties: Value) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "u1", "properties": properties})
}

fn kinds(c: &Checked) -> Vec<(&'static str, &str)> {
    c.violations.iter().map(|v| (v.kind.as_str(), v.field.as_str())).collect()
}

#[test]
fn a_planned_event_that_follows_its_rule_has_no_violation() {
    let mut e = order(json!({"order_id": "o1", "total": 10.5, "currency": "USD"}));
    let before = e.clone();
    let c = plan().check(&SchemaSettings::default(), &mut e);
    assert_eq!((c.outcome, c.violations.len(), c.changed), (Outcome::Allow, 0, false));
    assert_eq!(e, before);
    assert_eq!(plan().len(), 5);
}

#[test]
fn violations_are_typed_with_their_path() {
    let mut e = order(json!({"total": "ten", "currency": "GBP", "colour": "red"}));
    let c = plan().check(&SchemaSettings::default(), &mut e);
    let mut got = kinds(&c);
    got.sort();
    assert_eq!(
        got,
        [
            ("datatype_mismatch", "properties.total"),
            ("enum", "properties.currency"),
            ("required_missing", "properties.order_id"),
            ("unplanned_property", "properties.colour"),
        ]
    );
    assert_eq!(c.outcome, Outcome::Allow, "defaults allow");
    assert!(!c.changed);
    let range = plan().check(&SchemaSettings::default(), &mut order(json!({"order_id": "o", "total": -1})));
    assert_eq!(kinds(&range), [("range", "properties.total")]);
}

#[test]
fn unplanned_events_are_allowed_or_blocked() {
    let mut e = json!({"type": "track", "event": "order completed", "userId": "u", "properties": {}});
    let c = plan().check(&SchemaSettings::default(), &mut e);
    assert_eq!((c.outcome, kinds(&c)), (Outcome::Allow, vec![("unplanned_event", "event")]));
    let block = settings(json!({"track": {"allow_unplanned_events": false}}));
    assert_eq!(plan().check(&block, &mut e).outcome, Outcome::Block, "names match exactly, case included");
    // Only track calls can be unplanned events.
    let mut page = json!({"type": "page", "name": "Home", "userId": "u"});
    assert_eq!(plan().check(&block, &mut page).violations, []);
}

#[test]
fn unplanned_properties_are_omitted_and_listed_in_context_protocols() {
    let omit = settings(json!({"track": {"allow_unplanned_event_properties": false}}));
    let mut e = order(json!({"order_id": "o1", "colour": "red", "size": 3}));
    let c = plan().check(&omit, &mut e);
    assert_eq!((c.outcome, c.changed), (Outcome::Allow, true));
    assert_eq!(e["properties"], json!({"order_id": "o1"}));
    assert_eq!(e["context"]["protocols"]["omitted"], json!(["colour", "size"]));
}

#[test]
fn schema_violations_allow_omit_or_block() {
    let mut e = order(json!({"order_id": "o1", "total": "ten"}));
    let omit = settings(json!({"track": {"allow_properties_on_violations": false}}));
    let c = plan().check(&omit, &mut e);
    assert_eq!(c.outcome, Outcome::Allow);
    assert_eq!(e["properties"], json!({"order_id": "o1"}));
    assert_eq!(e["context"]["protocols"]["omitted_on_violation"], json!(["total"]));

    let block = settings(json!({"track": {"allow_event_on_violations": false}}));
    let mut e = order(json!({"order_id": "o1", "total": "ten"}));
    assert_eq!(plan().check(&block, &mut e).outcome, Outcome::Block);
    // An unplanned property alone is not a schema violation.
    let mut e = order(json!({"order_id": "o1", "extra": 1}));
    assert_eq!(plan().check(&block, &mut e).outcome, Outcome::Allow);
}

#[test]
fn the_common_schema_applies_to_every_call() {
    let bad_ip = |t: &str| {
        json!({"type": t, "userId": "u", "event": "Order Completed", "previousId": "p",
        "properties": {"order_id": "o"}, "context": {"ip": "not an ip", "locale": "en"}})
    };
    for t in ["track", "identify", "alias"] {
        let c = plan().check(&SchemaSettings::default(), &mut bad_ip(t));
        assert_eq!(kinds(&c), [("format", "context.ip")], "{t}");
        assert!(c.violations[0].common);
    }
    let block = settings(json!({"track": {"common_event_on_violations": "BLOCK"}}));
    assert_eq!(plan().check(&block, &mut bad_ip("track")).outcome, Outcome::Block);
    let identify_block = settings(json!({"identify": {"common_event_on_violations": "BLOCK"}}));
    assert_eq!(plan().check(&identify_block, &mut bad_ip("track")).outcome, Outcome::Allow);
    assert_eq!(plan().check(&identify_block, &mut bad_ip("identify")).outcome, Outcome::Block);

    let omit = settings(json!({"track": {"common_event_on_violations": "OMIT_PROPERTIES"}}));
    let mut e = bad_ip("track");
    assert_eq!(plan().check(&omit, &mut e).outcome, Outcome::Allow);
    assert_eq!(e["context"]["ip"], Value::Null);
    assert_eq!(e["context"]["locale"], "en");
    assert_eq!(e["context"]["protocols"]["omitted_on_violation"], json!(["context.ip"]));
}

#[test]
fn identify_traits_unplanned_and_violating_are_omitted() {
    let s = settings(json!({"identify": {"allow_unplanned_traits": false, "allow_traits_on_violations": false}}));
    let mut e = json!({"type": "identify", "userId": "u", "traits": {"email": "nope", "plan": "pro", "age": 3}});
    let c = plan().check(&s, &mut e);
    let mut got = kinds(&c);
    got.sort();
    assert_eq!(got, [("pattern", "traits.email"), ("unplanned_property", "traits.age")]);
    assert_eq!((c.outcome, &e["traits"]), (Outcome::Allow, &json!({"plan": "pro"})));
    assert_eq!(e["context"]["protocols"], json!({"omitted": ["age"], "omitted_on_violation": ["email"]}));
    // group has its own settings: nothing planned, nothing omitted.
    let mut g = json!({"type": "group", "userId": "u", "groupId": "g", "traits": {"x": 1}});
    assert_eq!(plan().check(&s, &mut g).violations, []);
}

#[test]
fn event_version_selects_the_schema_and_defaults_to_the_oldest() {
    let v2 = |version: Value| {
        let mut e = order(json!({"order_id": "o1"}));
        e["context"] = json!({"protocols": {"event_version": version}});
        e
    };
    let p = plan();
    let c = p.check(&SchemaSettings::default(), &mut v2(json!(2)));
    assert_eq!(kinds(&c), [("required_missing", "properties.coupon")]);
    for oldest in [json!(7), json!("x"), Value::Null] {
        assert_eq!(p.check(&SchemaSettings::default(), &mut v2(oldest)).violations, []);
    }
}

#[test]
fn pages_are_checked_by_name() {
    let mut e = json!({"type": "page", "name": "Pricing", "userId": "u", "properties": {"path": 3}});
    let c = plan().check(&SchemaSettings::default(), &mut e);
    assert_eq!(kinds(&c), [("datatype_mismatch", "properties.path")]);
}

#[test]
fn propagate_violations_writes_them_into_the_event() {
    let s = settings(json!({"propagate_violations": true}));
    let mut e = order(json!({"order_id": 5}));
    let c = plan().check(&s, &mut e);
    assert!(c.changed);
    assert_eq!(e["context"]["protocols"]["violations"][0]["type"], "datatype_mismatch");
    assert_eq!(e["context"]["protocols"]["violations"][0]["field"], "properties.order_id");
}

#[test]
fn schema_drafts_follow_dollar_schema() {
    // draft-07 by default: `dependentRequired` (2019-09) is not a keyword.
    let rule = |schema: Value| {
        let text = json!({"rules": [{"type": "common", "json_schema": schema}]}).to_string();
        TrackingPlan::parse(&text).expect("compiles")
    };
    let s = json!({"dependentRequired": {"a": ["b"]}});
    let mut e = json!({"type": "alias", "a": 1});
    assert_eq!(rule(s.clone()).check(&SchemaSettings::default(), &mut e).violations, []);
    let mut with = s;
    with["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let c = rule(with).check(&SchemaSettings::default(), &mut e);
    assert_eq!(kinds(&c), [("required_missing", "b")]);
    // A schema given as a string, as Segment's API exports it.
    let text = r#"{"rules": [{"type": "common", "json_schema": "{\"required\": [\"userId\"]}"}]}"#;
    let c = TrackingPlan::parse(text).unwrap().check(&SchemaSettings::default(), &mut json!({"type": "alias"}));
    assert_eq!(kinds(&c), [("required_missing", "userId")]);
}

#[test]
fn a_bad_plan_is_refused_at_its_line() {
    let bad_schema = "{\n  \"rules\": [\n    {\"type\": \"track\", \"key\": \"A\", \"json_schema\": {}},\n    {\"type\": \"track\", \"key\": \"B\",\n     \"json_schema\": {\"type\": 5}}\n  ]\n}";
    let e = TrackingPlan::parse(bad_schema).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.starts_with("rules[1]: json_schema does not compile"), "{e}");

    let unknown = "{\"rules\": [\n{\"type\": \"track\", \"key\": \"A\",\n \"jsonschema\": {}}]}";
    let e = TrackingPlan::parse(unknown).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("unknown field `jsonschema`"), "{e}");

    let e = TrackingPlan::parse("{\"rules\": [\n{\"type\": \"track\", \"json_schema\": {}}]}").unwrap_err();
    assert_eq!((e.line, e.message.as_str()), (2, "rules[0]: a track rule needs the `key` it plans"));
    let twice = "{\"rules\": [{\"type\": \"track\", \"key\": \"A\", \"json_schema\": {}},\n{\"type\": \"track\", \"key\": \"A\", \"json_schema\": {}}]}";
    assert_eq!(TrackingPlan::parse(twice).unwrap_err().line, 2);
    let e = TrackingPlan::parse("{\"rules\": [\n\n  {\"type\": \"metric\"}]}").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert_eq!(TrackingPlan::parse("{\"rules\": [").unwrap_err().line, 1);
}

#[test]
fn remote_references_are_never_fetched() {
    let text = r#"{"rules": [{"type": "common", "json_schema": {"$ref": "http://127.0.0.1:9/schema.json"}}]}"#;
    assert!(TrackingPlan::parse(text).is_err(), "an unresolvable remote reference is a compile error");
}

#[test]
fn checking_what_the_plan_needs_finds_what_checking_everything_finds() {
    let p = plan();
    for event in [
        order(json!({"total": "ten", "currency": "GBP", "colour": "red"})),
        json!({"type": "identify", "userId": "u", "traits": {"email": "nope", "age": 3}, "context": {"ip": "x"}}),
        json!({"type": "track", "event": "Nope", "userId": "u", "context": {"protocols": {"event_version": 2}}}),
        json!({"type": "page", "name": "Pricing", "userId": "u", "properties": {"path": 3}}),
    ] {
        let text = event.to_string();
        let mut whole = event.clone();
        let mut sparse = crate::raw::sparse(&text, p.needs()).unwrap();
        let (a, b) =
            (p.check(&SchemaSettings::default(), &mut whole), p.check(&SchemaSettings::default(), &mut sparse));
        assert_eq!(a.violations, b.violations, "{text}");
        assert_eq!(a.outcome, b.outcome);
    }
    // A root keyword over the whole object needs the whole event.
    let whole =
        TrackingPlan::parse(r#"{"rules": [{"type": "common", "json_schema": {"additionalProperties": false}}]}"#)
            .unwrap();
    assert!(whole.needs().is_all());
}

#[test]
fn violations_are_capped_per_event_and_never_quote_the_value() {
    let many: serde_json::Map<String, Value> = (0..500).map(|i| (format!("k{i}"), json!(i))).collect();
    let mut e = order(Value::Object(many));
    let c = plan().check(&SchemaSettings::default(), &mut e);
    assert_eq!(c.violations.len(), MAX_VIOLATIONS_PER_EVENT + 1);
    assert!(c.violations.last().unwrap().description.ends_with("more violations in this event"));
    let mut secret = order(json!({"order_id": "o", "total": "ada@example.com"}));
    let c = plan().check(&SchemaSettings::default(), &mut secret);
    assert_eq!(c.violations[0].description, "properties.total is not of type number");
}

#[test]
fn array_items_are_one_field_and_dotted_keys_stay_keys() {
    let text = json!({"rules": [{"type": "track", "key": "A", "json_schema": {"properties": {"properties": {
        "properties": {"items": {"type": "array", "items": {"properties": {"sku": {"type": "string"}}}},
                       "a.b": {"type": "string"}, "a": {"type": "string"}}}}}}]})
    .to_string();
    let p = TrackingPlan::parse(&text).unwrap();
    let omit = settings(json!({"track": {"allow_properties_on_violations": false}}));
    let mut e = json!({"type": "track", "event": "A", "userId": "u",
        "properties": {"items": [{"sku": 1}, {"sku": "ok"}, {"sku": 2}], "a.b": 5, "a": "fine"}});
    let c = p.check(&omit, &mut e);
    let mut fields: Vec<&str> = c.violations.iter().map(|v| v.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, ["properties.a.b", "properties.items[].sku", "properties.items[].sku"]);
    assert_eq!(e["properties"], json!({"a": "fine"}), "the bad `a.b` and items go, the good `a` stays");
    // A missing required property is reported, but nothing was omitted.
    let omit_all = settings(json!({"track": {"allow_properties_on_violations": false}}));
    let mut missing = order(json!({"total": 1}));
    plan().check(&omit_all, &mut missing);
    assert_eq!(missing.get("context"), None, "{missing}");
}

#[test]
fn an_event_passes_on_its_text_exactly_when_checking_it_finds_nothing() {
    let p = plan();
    let events = [
        order(json!({"order_id": "o1", "total": 5, "currency": "USD"})),
        order(json!({"order_id": "o1", "total": 5.0})),
        order(json!({"order_id": "o1", "total": -1})),
        order(json!({"order_id": 7})),
        order(json!({"order_id": "o1", "colour": "red"})),
        order(json!({"total": 5})),
        json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"order_id": "o", "coupon": "c"},
               "context": {"protocols": {"event_version": 2}}}),
        json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"order_id": "o"},
               "context": {"protocols": {"event_version": "2"}}}),
        json!({"type": "track", "event": "Nope", "userId": "u"}),
        json!({"type": "identify", "userId": "u", "traits": {"email": "a@b", "plan": "pro"}}),
        json!({"type": "identify", "userId": "u", "traits": {"email": "nope"}}),
        json!({"type": "identify", "userId": "u", "traits": {"age": 3}}),
        json!({"type": "group", "userId": "u", "groupId": "g", "traits": {}}),
        json!({"type": "page", "name": "Pricing", "userId": "u", "properties": {"path": "/p"}}),
        json!({"type": "page", "name": "Pricing", "userId": "u", "properties": {"path": 3}}),
        json!({"type": "page", "name": "Unplanned", "userId": "u"}),
        json!({"type": "alias", "userId": "u", "previousId": "p", "context": {"ip": "10.0.0.1"}}),
        json!({"type": "alias", "userId": "u", "previousId": "p", "context": {"ip": "not an ip"}}),
        json!({"type": "screen", "name": "Home", "userId": "u", "context": {"ip": 1}}),
    ];
    for event in events {
        let text = event.to_string();
        let c = p.check(&SchemaSettings::default(), &mut event.clone());
        let nothing = c.violations.is_empty() && !c.changed && c.outcome == Outcome::Allow;
        assert_eq!(p.passes(&text), nothing, "{text}: {:?}", kinds(&c));
    }
    assert!(!p.passes("{not json"));
}
