//! The FQL conformance suite: the reference's examples and rules, one
//! assertion each, plus the decisions the reference leaves open.

use serde_json::{Value as Json, json};

use super::*;

fn event() -> Json {
    json!({
        "type": "track",
        "event": "Button Clicked",
        "userId": "u-123",
        "anonymousId": null,
        "properties": {
            "features": ["dark-mode", "beta"],
            "price": 12.5,
            "quantity": 3,
            "enabled": true,
            "label": "Primary CTA",
            "product 1": { "price": 9 },
            "1st": "first",
            "nested": { "deep": { "er": { "est": "yes" } } },
        },
        "traits": { "email": "ada@company.com" },
        "context": { "library": { "name": "analytics.js", "version": "1.4.2" } },
    })
}

fn check(src: &str) -> bool {
    Query::compile(src).unwrap_or_else(|e| panic!("{src}: {e}")).eval(&event()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn error(src: &str) -> EvalError {
    Query::compile(src).unwrap_or_else(|e| panic!("{src}: {e}")).eval(&event()).expect_err(src)
}

fn refused(src: &str) -> FqlError {
    Query::compile(src).expect_err(src)
}

#[test]
fn the_reference_examples() {
    assert!(check("event = 'Button Clicked'"));
    assert!(check("type = 'identify' or type = 'track'"));
    assert!(check("match( context.library.version, '1.*' )"));
    assert!(check("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )"));
    assert!(!check("!contains( context.library.name, 'js' )"));
    assert!(check(
        "( type = 'track' or type = 'identify' ) and ( properties.enabled or match( traits.email, '*@company.com' ) )"
    ));
    assert!(check("'dark-mode' in properties.features"));
    assert!(!check("!( type in ['track', 'identify'] )"));
    assert!(check("length( userId ) > 0"));
    // The subscriptions' double quotes too.
    assert!(check(r#"type = "track" and (event = "Product Added" or event = "Button Clicked")"#));
}

#[test]
fn paths_read_nested_members_and_escapes() {
    assert!(check("context.library.name = 'analytics.js'"));
    assert!(check("properties.product\\ 1.price = 9"));
    assert!(check("properties.1st = 'first'"));
    assert!(check("properties.nested.deep.er.est = 'yes'"));
    assert!(check("properties.missing.deeper = null"), "a missing member is null");
    assert!(check("anonymousId = null"));
    assert!(check("typeof(properties.nested) = 'object'"));
}

#[test]
fn equality_is_strict_and_typed() {
    assert!(check("properties.quantity = 3"));
    assert!(!check("properties.quantity = '3'"), "a number is not a string");
    assert!(check("properties.quantity != '3'"));
    assert!(!check("properties.enabled = 'true'"));
    assert!(check("properties.enabled = true"));
    assert!(check("properties.features = ['dark-mode', 'beta']"), "lists compare member by member");
    assert!(!check("properties.features = ['beta', 'dark-mode']"));
    assert!(check("null = null"));
    assert!(!check("event = 'button clicked'"), "case sensitive");
}

#[test]
fn ordering_compares_numbers_only() {
    assert!(check("properties.price > 12"));
    assert!(check("properties.price >= 12.5"));
    assert!(check("properties.price < 1e2"));
    assert!(check("properties.quantity <= 3"));
    assert!(check("-1 < 0"));
    assert!(!check("event > 'A'"), "strings do not order");
    assert!(!check("userId < 5"));
    assert!(!check("properties.missing > 0"));
}

#[test]
fn in_needs_a_list() {
    assert!(check("type in ['track', 'page']"));
    assert!(!check("'gamma' in properties.features"));
    assert!(!check("'x' in properties.missing"), "null on the right is false");
    assert!(check("3 in [1, 2, 3]"));
    assert!(!check("'3' in [1, 2, 3]"));
    assert!(check("[] = []"));
    assert!(error("'x' in event").0.contains("needs a list"));
}

#[test]
fn boolean_operators_take_bools_or_null() {
    assert!(check("properties.enabled"));
    assert!(!check("properties.missing"), "null is false");
    assert!(check("!properties.missing"));
    assert!(check("true and !false"));
    assert!(error("event and true").0.contains("not a string"));
    assert!(error("true or properties.quantity").0.contains("not a number"), "an error on either side fails");
    assert!(!Query::compile("event or true").unwrap().matches(&event()), "an error drops (fail closed)");
}

#[test]
fn precedence_is_not_then_comparison_then_and_then_or() {
    // Read as `true or (false and false)`: true. Left to right it would be false.
    assert!(check("true or false and false"));
    assert!(!check("(true or false) and false"));
    assert!(check("false and false or true"));
    assert!(!check("!true and false"));
    assert!(check("!(true and false)"));
    assert!(check("!false = true"), "`!` binds before `=`");
    let q = Query::compile("a = 1 or b = 2 and !c").unwrap();
    assert_eq!(q.expr().to_string(), "((a = 1) or ((b = 2) and !c))");
}

#[test]
fn functions_and_their_null_defaults() {
    assert!(check("contains(event, 'Click')"));
    assert!(!check("contains(properties.missing, 'x')"));
    assert!(check("length(properties.features) = 2"));
    assert!(check("length(properties.missing) = 0"));
    assert!(check("length('é') = 2"), "bytes, not characters");
    assert!(check("lowercase(event) = 'button clicked'"));
    assert!(check("lowercase(properties.missing) = null"));
    assert!(check("uppercase(event) = 'BUTTON CLICKED'"));
    assert!(check("snakecase(properties.label) = 'primary_cta'"));
    assert!(check("snakecase('orderCompleted') = 'order_completed'"));
    assert!(check("kebabcase('Order Completed') = 'order-completed'"));
    assert!(check("titlecase('order_completed') = 'Order Completed'"));
    assert!(check("typeof(event) = 'string'"));
    assert!(check("typeof(properties.price) = 'number'"));
    assert!(check("typeof(properties.features) = 'list'"));
    assert!(check("typeof(properties.enabled) = 'bool'"));
    assert!(check("typeof(properties.missing) = 'null'"));
    assert!(check("number('12.5') = properties.price"));
    assert!(check("string(properties.quantity) = '3'"));
    assert!(check("bool(properties.quantity)"));
    assert!(check("number('x') = null"));
    assert!(!check("match(properties.missing, '*')"));
    assert!(error("lowercase(properties.quantity)").0.contains("lowercase does not take a number"));
    assert!(error("contains(properties.features, 'beta')").0.contains("contains does not take a list"));
}

#[test]
fn globs_match_the_whole_string() {
    let m = |s: &str, p: &str| check(&format!("match('{s}', '{p}')"));
    assert!(m("Button Clicked", "Button *"));
    assert!(!m("Big Button Clicked", "Button *"), "anchored at the start");
    assert!(!m("Button Clicked!", "*Clicked"), "anchored at the end");
    assert!(m("1.4.2", "1.?.2"));
    assert!(!m("1.42", "1.?"));
    assert!(m("cat", "[bc]at"));
    assert!(!m("rat", "[bc]at"));
    assert!(m("v7", "v[0-9]"));
    assert!(m("va", "v[!0-9]"));
    assert!(m("a*b", "a\\\\*b"), "an escaped `*` is literal");
    assert!(!m("axb", "a\\\\*b"));
    assert!(m("", "*"));
    assert!(m("ü", "?"), "one character, not one byte");
    assert!(m("abc", "a**c"));
    // A pattern that is exponential for naive backtracking.
    let long = "a".repeat(60);
    assert!(!m(&long, &format!("{}b", "a*".repeat(30))));
}

#[test]
fn expressions_that_do_not_compile_name_the_column() {
    let e = refused("userId = oops\"");
    assert_eq!(e.to_string(), "at column 14: unterminated string");
    assert!(refused("").message.contains("empty"));
    assert!(refused("type = ").message.contains("expected a value"));
    assert!(refused("(type = 'track'").message.contains("expected `)`"));
    assert!(refused("nope(event)").message.contains("unknown function `nope`"));
    assert!(refused("contains(event)").message.contains("takes 2 arguments, not 1"));
    assert!(refused("type = 'a' 'b'").message.contains("unexpected string"));
    assert!(refused("type = 'a' and").message.contains("expected a value"));
    assert!(refused("and = 1").message.contains("before `and`"));
    assert!(refused("properties. = 1").message.contains("field name after `.`"));
    assert!(refused("type # 'a'").message.contains("unexpected `#`"));
    assert_eq!(refused("a = 1e999").offset, 4);
}

#[test]
fn hostile_input_never_panics() {
    let sources =
        ["((((((((((", "[[[[[", "!!!!!", "a.b.c.d.e.f.", "'\\", "\\", "1e", "--1", "a = [1,", "match('a','[')"];
    for s in sources {
        let _ = Query::compile(s).map(|q| q.matches(&event()));
    }
    // Deep nesting compiles and evaluates (recursion bounded by the input).
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert!(check(&deep));
    for hostile in ["(".repeat(100_000), "!".repeat(100_000), "[".repeat(100_000)] {
        assert!(refused(&hostile).message.contains("nested deeper than 256"));
    }
}
