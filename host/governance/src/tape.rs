//! JSON Schema validation over an event's text, without building a
//! `serde_json::Value`: `jsonschema`'s [`Json`] representation for the
//! plugin SDK's one-pass indexer ([`switchyard_plugin_sdk::json`]).
//!
//! The tracking plan validates every event it checks. Building a `Value`
//! tree of a ~500-byte event costs more than validating it; indexing the
//! text costs a fraction of either. So the plan's happy path (a valid
//! event) runs on a [`Document`] through [`TapeValidator`]s compiled from
//! the same schemas, and only an event with something to report or change
//! is parsed whole.
//!
//! The text is the host's own (the normalizer checked its syntax with
//! serde_json), so the indexer's leniency towards malformed text never
//! applies.
//!
//! **Repeated keys.** serde_json keeps a key's last value. A lookup here
//! does the same, but a pass over an object's members
//! (`additionalProperties`, `patternProperties`, `propertyNames`, and the
//! `properties` keyword, which jsonschema runs as a pass when lookups are
//! walks) sees every occurrence ([`tape::Object::iter_as_sent`]): finding
//! which ones a later one overrides costs more than the validation. That
//! makes validation here at most stricter than on a `Value` (an earlier,
//! overridden occurrence is checked too; the member count that
//! `minProperties` and `maxProperties` read is the distinct one), which is
//! what the plan needs: an event that does not pass here is checked again
//! on its `Value`, where the verdict is made.

use std::borrow::Cow;
use std::cell::Cell;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use serde_json::Value;
use switchyard_plugin_sdk::json::{self as tape, Document, Kind};

/// The representation: nodes of a [`Document`].
pub struct Tape;

/// A validator for events held as [`Document`]s.
pub type TapeValidator = jsonschema::Validator<Tape>;

/// One value of a [`Document`].
#[derive(Clone, Copy)]
pub struct TapeNode<'a>(tape::Json<'a>);

impl<'a> TapeNode<'a> {
    /// The document's root value.
    pub fn root(document: &'a Document<'a>) -> TapeNode<'a> {
        TapeNode(document.root())
    }
}

impl Json for Tape {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = String;

    /// A lookup walks the object's members, so one pass over them beats
    /// any number of lookups; jsonschema multiplies this by counts, so it
    /// stays a plain large number (events' objects are smaller).
    const KEYS_PER_LOOKUP: usize = 64;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(buffer: &mut String, string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        buffer.clear();
        let mut bytes = std::mem::take(buffer).into_bytes();
        tape::write_str(&mut bytes, string);
        // `write_str` writes valid UTF-8 (the string, quoted and escaped).
        *buffer = String::from_utf8(bytes).unwrap_or_default();
        match Document::parse(buffer) {
            Ok(document) => f(TapeNode(document.root())),
            // Unreachable for a string written by `write_str`; an empty
            // string node keeps the call total.
            Err(_) => match Document::parse("\"\"") {
                Ok(document) => f(TapeNode(document.root())),
                Err(_) => unreachable!("\"\" is a JSON string"),
            },
        }
    }
}

/// A number, read from its JSON text when asked.
pub struct TapeNumber<'a>(&'a str);

impl JsonNumber for TapeNumber<'_> {
    fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    fn as_i64(&self) -> Option<i64> {
        self.0.parse().ok()
    }

    fn as_f64(&self) -> Option<f64> {
        self.0.parse().ok()
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.0)
    }

    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        // serde_json reads every JSON number (as f64 past i64/u64).
        Cow::Owned(serde_json::from_str(self.0).unwrap_or_else(|_| serde_json::Number::from(0)))
    }

    fn is_integer(&self) -> bool {
        // What serde_json's Number says: an integer literal, or a float
        // with no fraction.
        !self.0.contains(['.', 'e', 'E']) || self.as_f64().is_some_and(|f| f.fract() == 0.0)
    }
}

impl<'a> Node<'a, Tape> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = TapeNumber<'a>;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        self.0.object().map(|object| TapeObject(object, Cell::new(None)))
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        self.0.array().map(TapeArray)
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.0.str()
    }

    fn as_number(&self) -> Option<TapeNumber<'a>> {
        (self.0.kind() == Kind::Number).then(|| TapeNumber(self.0.raw()))
    }

    fn as_boolean(&self) -> Option<bool> {
        (self.0.kind() == Kind::Bool).then(|| self.0.raw() == "true")
    }

    fn is_null(&self) -> bool {
        self.0.is_null()
    }

    fn is_number(&self) -> bool {
        self.0.kind() == Kind::Number
    }

    fn json_type(&self) -> JsonType {
        match self.0.kind() {
            Kind::Null => JsonType::Null,
            Kind::Bool => JsonType::Boolean,
            Kind::Number => JsonType::Number,
            Kind::String => JsonType::String,
            Kind::Array => JsonType::Array,
            Kind::Object => JsonType::Object,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.0.to_value())
    }

    /// Where the value's text starts: distinct for every value of a
    /// document (a container's first member starts after its bracket).
    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(self.0.raw().as_ptr() as usize))
    }
}

/// An object's members, and how many distinct keys it has once counted
/// (jsonschema asks before most keywords).
pub struct TapeObject<'a>(tape::Object<'a>, Cell<Option<usize>>);

/// Objects with more members than this count their distinct keys with the
/// indexer's own (hashing) walk.
const SMALL_OBJECT: usize = 16;

impl TapeObject<'_> {
    fn distinct_keys(&self) -> usize {
        let keys: Vec<Cow<'_, str>> = self.0.iter_as_sent().map(|(key, _)| key).collect();
        if keys.len() > SMALL_OBJECT {
            return self.0.len();
        }
        (0..keys.len()).filter(|&i| !keys[i + 1..].contains(&keys[i])).count()
    }
}

/// [`TapeObject`]'s members, as sent.
pub struct TapeMembers<'a>(tape::MembersAsSent<'a>);

impl<'a> Iterator for TapeMembers<'a> {
    type Item = (Cow<'a, str>, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(key, value)| (key, TapeNode(value)))
    }
}

impl<'a> Object<'a, Tape> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = Cow<'a, str>;
    type MembersIter = TapeMembers<'a>;

    fn len(&self) -> usize {
        match self.1.get() {
            Some(n) => n,
            None => {
                let n = self.distinct_keys();
                self.1.set(Some(n));
                n
            }
        }
    }

    fn get(&self, key: &Box<str>) -> Option<TapeNode<'a>> {
        self.0.get(key).map(TapeNode)
    }

    fn members(&self) -> Self::MembersIter {
        TapeMembers(self.0.iter_as_sent())
    }
}

/// An array's items.
pub struct TapeArray<'a>(Vec<tape::Json<'a>>);

impl<'a> Array<'a, Tape> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = TapeItems<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Self::ElementsIter {
        TapeItems(self.0.clone().into_iter())
    }
}

/// [`TapeArray`]'s items.
pub struct TapeItems<'a>(std::vec::IntoIter<tape::Json<'a>>);

impl<'a> Iterator for TapeItems<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        self.0.next().map(TapeNode)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Whether `instance` is valid under `schema`, by the tape and by
    /// serde_json's `Value`, which must agree.
    fn valid(schema: &Value, instance: &Value) -> bool {
        let by_value = jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(schema).unwrap();
        let by_tape = jsonschema::options_for::<Tape>().with_draft(jsonschema::Draft::Draft7).build(schema).unwrap();
        let text = instance.to_string();
        let document = Document::parse(&text).unwrap();
        let tape = by_tape.is_valid(TapeNode::root(&document));
        assert_eq!(tape, by_value.is_valid(instance), "{schema} on {text}");
        let errors = |v: Vec<String>| v;
        let tape_errors = errors(by_tape.iter_errors(TapeNode::root(&document)).map(|e| e.to_string()).collect());
        let value_errors = errors(by_value.iter_errors(instance).map(|e| e.to_string()).collect());
        assert_eq!(tape_errors.len(), value_errors.len(), "{schema} on {text}: {tape_errors:?} / {value_errors:?}");
        tape
    }

    #[test]
    fn the_tape_validates_as_serde_json_does() {
        let schema = json!({
            "type": "object",
            "required": ["event", "properties"],
            "properties": {
                "event": {"const": "Product Added"},
                "properties": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["sku"],
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"},
                        "price": {"type": "number", "minimum": 0, "exclusiveMaximum": 10000},
                        "quantity": {"type": "integer", "minimum": 1},
                        "category": {"enum": ["shoes", "hats", null]},
                        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 3},
                        "gift": {"type": "boolean"},
                        "note": {"type": ["string", "null"], "maxLength": 4},
                        "meta": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}, "minProperties": 1}
                    }
                }
            }
        });
        let base = json!({"event": "Product Added", "properties": {"sku": "ABC-1", "price": 9.5, "quantity": 2}});
        assert!(valid(&schema, &base));
        let cases = [
            (json!({"sku": "ABC-1", "quantity": 2.0}), true),
            (json!({"sku": "ABC-1", "quantity": 2.5}), false),
            (json!({"sku": "ABC-1", "quantity": 1e2}), true),
            (json!({"sku": "ABC-1", "quantity": 0}), false),
            (json!({"sku": "abc-1"}), false),
            (json!({"sku": "ABC-\u{e9}"}), false),
            (json!({"sku": 12}), false),
            (json!({}), false),
            (json!({"sku": "ABC-1", "price": -1}), false),
            (json!({"sku": "ABC-1", "price": 10000}), false),
            (json!({"sku": "ABC-1", "category": null}), true),
            (json!({"sku": "ABC-1", "category": "socks"}), false),
            (json!({"sku": "ABC-1", "tags": ["a", "b"]}), true),
            (json!({"sku": "ABC-1", "tags": ["a", "a"]}), false),
            (json!({"sku": "ABC-1", "tags": ["a", 1]}), false),
            (json!({"sku": "ABC-1", "tags": ["a", "b", "c", "d"]}), false),
            (json!({"sku": "ABC-1", "gift": "yes"}), false),
            (json!({"sku": "ABC-1", "note": "caf\u{e9}"}), true),
            (json!({"sku": "ABC-1", "note": "caf\u{e9}s"}), false),
            (json!({"sku": "ABC-1", "note": "a\"\\b"}), true),
            (json!({"sku": "ABC-1", "meta": {"ok": 1}}), true),
            (json!({"sku": "ABC-1", "meta": {"Not ok": 1}}), false),
            (json!({"sku": "ABC-1", "meta": {}}), false),
            (json!({"sku": "ABC-1", "colour": "red"}), false),
        ];
        for (properties, want) in cases {
            let mut event = base.clone();
            event["properties"] = properties.clone();
            assert_eq!(valid(&schema, &event), want, "{properties}");
        }
        assert!(!valid(&schema, &json!({"event": "Other", "properties": {"sku": "ABC-1"}})));
        assert!(!valid(&schema, &json!([1, 2])));
    }

    #[test]
    fn a_repeated_key_is_checked_each_time_so_the_tape_is_never_more_lenient() {
        let schema = json!({"properties": {"a": {"type": "string"}}, "required": ["a"]});
        let by_value = jsonschema::options().build(&schema).unwrap();
        let by_tape = jsonschema::options_for::<Tape>().build(&schema).unwrap();
        for (text, tape) in
            [(r#"{"a": "x", "a": "y"}"#, true), (r#"{"a": 1, "a": "x"}"#, false), (r#"{"a": "x", "a": 1}"#, false)]
        {
            let document = Document::parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(by_tape.is_valid(TapeNode::root(&document)), tape, "{text}");
            assert!(!tape || by_value.is_valid(&value), "{text}: passing here means passing on the Value");
        }
    }
}
