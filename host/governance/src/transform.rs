//! Transformations, as Segment defines them: a rule for one event type
//! (and, for track, page and screen, one event name) that renames the
//! event, renames or moves properties, sets static property values and
//! drops properties. A source or a destination has a list of them
//! (`[[sources.transformations]]`, `[[destinations.transformations]]`),
//! named as in Segment's Public API, plus `drop_properties`.
//!
//! # Matching
//!
//! At most one rule applies to an event: the one for its `type` and name
//! (`event` of a track, `name` of a page or screen; a page or screen rule
//! without `event` takes every name), when its `if` holds on the event as
//! it arrived. An `if` that fails to evaluate means the rule does not
//! apply. It is a single pass: a renamed event is not matched again, so
//! `a → b` beside `b → a` cannot loop.
//!
//! # Order
//!
//! Within a rule, whatever the order written:
//!
//! 1. rename the event (`event` of a track, `new_event_name`);
//! 2. property renames, in the order written;
//! 3. property value sets (static values; missing objects on the way are
//!    created);
//! 4. drop properties.
//!
//! # Paths
//!
//! Dot paths of up to four keys as written (Segment's limit), relative to
//! the event's `properties` (track, page, screen) or `traits` (identify,
//! group); one that starts with `context.` is read from the event's root
//! instead (`context.ip`). `\` escapes the next character: `a\.b` is the
//! key `a.b`, and `\context.ip` is the property `context`'s `ip`.
//!
//! A rename to a nested path moves the value into or out of objects
//! (Segment's "JSON path" rename), creating objects on the way and
//! replacing what was at the new path. Renaming a missing path does
//! nothing, and so does any step blocked by a non-object on the way. No
//! path reaches the event's identity (`type`, `userId`, `messageId`, …).
//!
//! # Errors
//!
//! [`Transforms::compile`] refuses, naming the rule and the field: an
//! unknown `type`; a track rule without `event`, or an identify or group
//! rule with one; `new_event_name` outside track; two enabled rules for the
//! same (type, event), which is how Segment prevents cycles such as
//! `order_updated → orderUpdated → order_updated` (a page or screen rule
//! without `event` clashes with any other of its type); an empty path or one
//! deeper than four; the same path set twice, or set and renamed; a value
//! transformation with no paths or more than ten; an `if` that does not
//! compile. Disabled rules are skipped entirely.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::fql::Query;

/// Segment's limits: keys in a path, and paths in a value transformation.
const MAX_DEPTH: usize = 4;
const MAX_VALUE_PATHS: usize = 10;

/// `[[sources.transformations]]` or `[[destinations.transformations]]` as
/// written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// `track`, `identify`, `group`, `page` or `screen`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// The track event's name, or the page's or screen's: required for
    /// track, refused for identify and group.
    #[serde(default)]
    pub event: Option<String>,
    /// An extra FQL condition.
    #[serde(rename = "if", default)]
    pub condition: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Track only.
    #[serde(default)]
    pub new_event_name: Option<String>,
    #[serde(default)]
    pub property_renames: Vec<PropertyRename>,
    #[serde(default)]
    pub property_value_transformations: Vec<PropertyValue>,
    #[serde(default)]
    pub drop_properties: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Renames (or moves) the value at `old_name` to `new_name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyRename {
    pub old_name: String,
    pub new_name: String,
}

/// Sets every path in `property_paths` to `property_value`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyValue {
    pub property_paths: Vec<String>,
    pub property_value: Value,
}

/// Why a transformation is refused: the field, as written
/// (`property_renames[1].new_name`), and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct TransformError {
    pub field: String,
    pub message: String,
}

impl TransformError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> TransformError {
        TransformError { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Track,
    Identify,
    Group,
    Page,
    Screen,
}

impl Kind {
    fn of(name: &str) -> Option<Kind> {
        Some(match name {
            "track" => Kind::Track,
            "identify" => Kind::Identify,
            "group" => Kind::Group,
            "page" => Kind::Page,
            "screen" => Kind::Screen,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        ["track", "identify", "group", "page", "screen"][self as usize]
    }

    /// The object relative paths are in.
    fn body(self) -> &'static str {
        if matches!(self, Kind::Identify | Kind::Group) { "traits" } else { "properties" }
    }

    /// The member that names an event of this type, if any.
    fn name_field(self) -> Option<&'static str> {
        match self {
            Kind::Track => Some("event"),
            Kind::Page | Kind::Screen => Some("name"),
            Kind::Identify | Kind::Group => None,
        }
    }
}

/// Keys from the event's root.
type Path = Vec<String>;

#[derive(Debug, Clone)]
struct Rule {
    /// The index of its config.
    at: usize,
    condition: Option<Query>,
    new_event_name: Option<String>,
    renames: Vec<(Path, Path)>,
    values: Vec<(Path, Value)>,
    drops: Vec<Path>,
}

/// One type's rules: by name, and the one for every name.
#[derive(Debug, Clone, Default)]
struct Index {
    named: HashMap<String, usize>,
    every: Option<usize>,
}

/// A source's or a destination's transformations, compiled.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    rules: Vec<Rule>,
    /// By [`Kind`], positions in `rules`.
    index: [Index; 5],
}

/// What [`Transforms::apply`] did to one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Whether the event changed at all.
    pub changed: bool,
    /// The track event's new name, when it was renamed.
    pub renamed: Option<String>,
}

/// Parses a written path into keys from the event's root.
fn parse_path(written: &str, body: &str) -> Result<Path, String> {
    if written.is_empty() {
        return Err("a path can't be empty".into());
    }
    let (mut keys, mut key) = (Vec::new(), String::new());
    let mut chars = written.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => key.push(chars.next().ok_or_else(|| format!("`{written}` ends in a lone `\\`"))?),
            '.' => keys.push(std::mem::take(&mut key)),
            c => key.push(c),
        }
    }
    keys.push(key);
    if keys.iter().any(String::is_empty) {
        return Err(format!("`{written}` has an empty key"));
    }
    if keys.len() > MAX_DEPTH {
        return Err(format!("`{written}` is {} keys deep; Segment allows {MAX_DEPTH}", keys.len()));
    }
    if !written.starts_with("context.") {
        keys.insert(0, body.to_owned());
    }
    Ok(keys)
}

/// Compiles one enabled config: its kind, its name, its rule.
fn rule(at: usize, c: &TransformConfig) -> Result<(Kind, Option<String>, Rule), TransformError> {
    let kind = Kind::of(&c.r#type).ok_or_else(|| {
        TransformError::new("type", format!("must be track, identify, group, page or screen, not `{}`", c.r#type))
    })?;
    match (&c.event, kind) {
        (Some(e), _) if e.is_empty() => return Err(TransformError::new("event", "can't be empty")),
        (None, Kind::Track) => return Err(TransformError::new("event", "a track transformation names its event")),
        (Some(_), Kind::Identify | Kind::Group) => {
            return Err(TransformError::new("event", format!("{} events have no name to match", kind.name())));
        }
        _ => {}
    }
    match &c.new_event_name {
        Some(_) if kind != Kind::Track => {
            return Err(TransformError::new("new_event_name", "only a track event can be renamed"));
        }
        Some(n) if n.is_empty() => return Err(TransformError::new("new_event_name", "can't be empty")),
        _ => {}
    }
    let condition = match &c.condition {
        Some(source) => Some(Query::compile(source).map_err(|e| TransformError::new("if", e.to_string()))?),
        None => None,
    };
    let path =
        |written: &str, field: String| parse_path(written, kind.body()).map_err(|m| TransformError::new(field, m));
    let mut renames = Vec::new();
    for (i, r) in c.property_renames.iter().enumerate() {
        let old = path(&r.old_name, format!("property_renames[{i}].old_name"))?;
        renames.push((old, path(&r.new_name, format!("property_renames[{i}].new_name"))?));
    }
    let mut values: Vec<(Path, Value)> = Vec::new();
    for (i, v) in c.property_value_transformations.iter().enumerate() {
        let field = format!("property_value_transformations[{i}].property_paths");
        if v.property_paths.is_empty() || v.property_paths.len() > MAX_VALUE_PATHS {
            let n = v.property_paths.len();
            return Err(TransformError::new(field, format!("{n} paths; Segment takes 1 to {MAX_VALUE_PATHS}")));
        }
        for (j, written) in v.property_paths.iter().enumerate() {
            let field = format!("{field}[{j}]");
            let p = path(written, field.clone())?;
            if values.iter().any(|(q, _)| *q == p) {
                return Err(TransformError::new(field, format!("`{written}` is set twice")));
            }
            if let Some(k) = renames.iter().position(|(old, new)| *old == p || *new == p) {
                return Err(TransformError::new(
                    field,
                    format!("`{written}` is also renamed by property_renames[{k}]"),
                ));
            }
            values.push((p, v.property_value.clone()));
        }
    }
    let drops = c
        .drop_properties
        .iter()
        .enumerate()
        .map(|(i, written)| path(written, format!("drop_properties[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let rule = Rule { at, condition, new_event_name: c.new_event_name.clone(), renames, values, drops };
    Ok((kind, c.event.clone(), rule))
}

impl Transforms {
    /// Compiles a source's or a destination's transformations (disabled
    /// ones are skipped).
    ///
    /// # Errors
    ///
    /// The index of the first config that does not compile, and why (see
    /// the [module docs](self)); for two rules on the same (type, event),
    /// the index of the second.
    pub fn compile(configs: &[TransformConfig]) -> Result<Transforms, (usize, TransformError)> {
        let mut t = Transforms::default();
        for (i, c) in configs.iter().enumerate().filter(|(_, c)| c.enabled) {
            let (kind, name, rule) = rule(i, c).map_err(|e| (i, e))?;
            let index = &mut t.index[kind as usize];
            let other = match &name {
                Some(n) => index.named.get(n).or(index.every.as_ref()),
                None => index.every.as_ref().or(index.named.values().min()),
            };
            if let Some(&r) = other {
                let first = t.rules[r].at;
                let what = match (kind, name.as_deref().or(configs[first].event.as_deref())) {
                    (Kind::Track, Some(n)) => format!("`{n}`"),
                    (_, Some(n)) => format!("{} `{n}`", kind.name()),
                    (_, None) => format!("every {}", kind.name()),
                };
                let message = format!("one transformation per (type, event): rules {first} and {i} both match {what}");
                let field = if kind.name_field().is_some() { "event" } else { "type" };
                return Err((i, TransformError::new(field, message)));
            }
            match name {
                Some(n) => index.named.insert(n, t.rules.len()),
                None => index.every.replace(t.rules.len()),
            };
            t.rules.push(rule);
        }
        Ok(t)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules are enabled.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Applies the rule for `event`, if any, in place.
    pub fn apply(&self, event: &mut Value) -> Applied {
        let mut applied = Applied::default();
        let Some(rule) = self.rule_for(event) else { return applied };
        if rule.condition.as_ref().is_some_and(|q| !q.matches(event)) {
            return applied;
        }
        if let (Some(new), Some(o)) = (&rule.new_event_name, event.as_object_mut())
            && o.get("event").and_then(Value::as_str) != Some(new)
        {
            o.insert("event".into(), Value::String(new.clone()));
            applied.renamed = Some(new.clone());
            applied.changed = true;
        }
        for (old, new) in rule.renames.iter().filter(|(old, new)| old != new) {
            if let Some(v) = remove(event, old) {
                match insert(event, new, v) {
                    Ok(_) => applied.changed = true,
                    // Blocked: put it back where it was, which still exists.
                    Err(v) => {
                        let _ = insert(event, old, v);
                    }
                }
            }
        }
        for (path, value) in &rule.values {
            if let Ok(before) = insert(event, path, value.clone()) {
                applied.changed |= before.as_ref() != Some(value);
            }
        }
        for path in &rule.drops {
            applied.changed |= remove(event, path).is_some();
        }
        applied
    }

    fn rule_for(&self, event: &Value) -> Option<&Rule> {
        let kind = Kind::of(event.get("type")?.as_str()?)?;
        let index = &self.index[kind as usize];
        let name = kind.name_field().and_then(|f| event.get(f)).and_then(Value::as_str);
        let at = name.and_then(|n| index.named.get(n)).or(index.every.as_ref())?;
        self.rules.get(*at)
    }
}

fn remove(root: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut at = root;
    for k in parents {
        at = at.get_mut(k.as_str())?;
    }
    at.as_object_mut()?.remove(last.as_str())
}

/// Sets `path` to `value`, creating missing objects on the way, and gives
/// what was there; gives `value` back when a non-object is in the way.
fn insert(root: &mut Value, path: &[String], value: Value) -> Result<Option<Value>, Value> {
    let Some((last, parents)) = path.split_last() else { return Err(value) };
    let mut at = root;
    for k in parents {
        let Some(o) = at.as_object_mut() else { return Err(value) };
        at = o.entry(k.as_str()).or_insert_with(|| Value::Object(Map::new()));
    }
    match at.as_object_mut() {
        Some(o) => Ok(o.insert(last.clone(), value)),
        None => Err(value),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<TransformConfig>, toml::de::Error> {
        #[derive(Deserialize)]
        struct Sources {
            transformations: Vec<TransformConfig>,
        }
        #[derive(Deserialize)]
        struct T {
            sources: Sources,
        }
        Ok(toml::from_str::<T>(toml_text)?.sources.transformations)
    }

    fn configs(toml_text: &str) -> Vec<TransformConfig> {
        parse(toml_text).expect("toml")
    }

    fn transforms(toml_text: &str) -> Transforms {
        Transforms::compile(&configs(toml_text)).expect("compiles")
    }

    fn refuse(toml_text: &str) -> (usize, String) {
        let (i, e) = Transforms::compile(&configs(toml_text)).expect_err(toml_text);
        (i, e.to_string())
    }

    fn track(event: &str) -> Value {
        json!({"type": "track", "event": event, "userId": "u1", "messageId": "m1",
            "properties": {"order_id": "o1", "price": 5, "email": "a@b.c", "shipping": {"city": "Oslo"}},
            "context": {"ip": "203.0.113.9", "library": {"name": "js"}}})
    }

    const ORDER: &str = "[[sources.transformations]]\ntype = \"track\"\nevent = \"Order Completed\"\n";

    #[test]
    fn each_operation_runs_in_order() {
        let t = transforms(&format!(
            "{ORDER}new_event_name = \"order_completed\"\n\
             property_renames = [{{ old_name = \"order_id\", new_name = \"orderId\" }}]\n\
             property_value_transformations = [{{ property_paths = [\"currency\", \"meta.source\"], property_value = \"EUR\" }}]\n\
             drop_properties = [\"orderId\", \"email\"]"
        ));
        let mut e = track("Order Completed");
        let applied = t.apply(&mut e);
        assert_eq!(applied, Applied { changed: true, renamed: Some("order_completed".into()) });
        assert_eq!(e["event"], "order_completed");
        // Renamed, then dropped under its new name: drops run last.
        assert_eq!(
            e["properties"],
            json!({"price": 5, "currency": "EUR", "meta": {"source": "EUR"}, "shipping": {"city": "Oslo"}})
        );
        assert_eq!((&e["userId"], &e["messageId"], &e["type"]), (&json!("u1"), &json!("m1"), &json!("track")));
        let mut other = track("Product Viewed");
        assert_eq!(t.apply(&mut other), Applied::default());
        assert_eq!(other, track("Product Viewed"));
    }

    #[test]
    fn renames_move_values_into_and_out_of_objects() {
        let t = transforms(&format!(
            "{ORDER}property_renames = [{{ old_name = \"order_id\", new_name = \"order.id\" }}, \
             {{ old_name = \"shipping.city\", new_name = \"city\" }}, {{ old_name = \"missing\", new_name = \"found\" }}, \
             {{ old_name = \"price\", new_name = \"email.price\" }}]"
        ));
        let mut e = track("Order Completed");
        assert_eq!(t.apply(&mut e), Applied { changed: true, renamed: None });
        assert_eq!(e["properties"]["order"], json!({"id": "o1"}));
        assert_eq!(e["properties"]["city"], "Oslo");
        assert_eq!(e["properties"]["shipping"], json!({}));
        assert!(e["properties"].get("found").is_none(), "renaming a missing path does nothing");
        assert_eq!(e["properties"]["price"], 5, "a string in the way blocks the move");
    }

    #[test]
    fn identify_traits_and_absolute_context_paths() {
        let t = transforms(
            "[[sources.transformations]]\ntype = \"identify\"\n\
             property_renames = [{ old_name = \"first name\", new_name = \"firstName\" }, \
             { old_name = \"context.library.name\", new_name = \"library\" }]\n\
             drop_properties = [\"context.ip\", \"context\\\\.ip\"]",
        );
        let mut e = json!({"type": "identify", "userId": "u1", "traits": {"first name": "Ada", "context.ip": "x"},
            "context": {"ip": "203.0.113.9", "library": {"name": "js"}}});
        assert!(t.apply(&mut e).changed);
        assert_eq!(e["traits"], json!({"firstName": "Ada", "library": "js"}));
        assert_eq!(e["context"], json!({"library": {}}));
        assert_eq!(e["userId"], "u1");
    }

    #[test]
    fn one_rule_per_type_and_event() {
        let twice = format!("{ORDER}new_event_name = \"a\"\n{ORDER}new_event_name = \"b\"");
        assert_eq!(
            refuse(&twice),
            (1, "`event`: one transformation per (type, event): rules 0 and 1 both match `Order Completed`".into())
        );
        let pages = "[[sources.transformations]]\ntype = \"page\"\nevent = \"Home\"\ndrop_properties = [\"a\"]\n\
                     [[sources.transformations]]\ntype = \"page\"\ndrop_properties = [\"b\"]";
        assert_eq!(refuse(pages).0, 1);
        assert!(refuse(pages).1.ends_with("rules 0 and 1 both match page `Home`"), "{}", refuse(pages).1);
        let identifies =
            "[[sources.transformations]]\ntype = \"identify\"\n[[sources.transformations]]\ntype = \"identify\"";
        assert!(refuse(identifies).1.ends_with("both match every identify"));
        // A disabled rule neither clashes nor applies.
        let t = transforms(&format!("{ORDER}new_event_name = \"a\"\n{ORDER}enabled = false\nnew_event_name = \"b\""));
        assert_eq!(t.len(), 1);
        let mut e = track("Order Completed");
        assert_eq!(t.apply(&mut e).renamed.as_deref(), Some("a"));
    }

    #[test]
    fn a_page_rule_without_event_takes_every_page() {
        let t = transforms("[[sources.transformations]]\ntype = \"page\"\ndrop_properties = [\"url\"]");
        for name in [json!("Home"), json!("Cart"), Value::Null] {
            let mut e = json!({"type": "page", "name": name, "properties": {"url": "https://x", "path": "/"}});
            assert!(t.apply(&mut e).changed);
            assert_eq!(e["properties"], json!({"path": "/"}));
        }
        let mut s = json!({"type": "screen", "name": "Home", "properties": {"url": "https://x"}});
        assert_eq!(t.apply(&mut s), Applied::default());
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = |rest: &str| refuse(&format!("{ORDER}{rest}")).1;
        let paths = |n: usize| (0..n).map(|i| format!("\"p{i}\"")).collect::<Vec<_>>().join(", ");
        assert!(refuse("[[sources.transformations]]\ntype = \"alias\"").1.starts_with("`type`"));
        assert!(refuse("[[sources.transformations]]\ntype = \"track\"").1.starts_with("`event`"));
        assert!(refuse("[[sources.transformations]]\ntype = \"group\"\nevent = \"x\"").1.starts_with("`event`"));
        assert_eq!(
            refuse("[[sources.transformations]]\ntype = \"page\"\nnew_event_name = \"x\"").1,
            "`new_event_name`: only a track event can be renamed"
        );
        assert!(bad("if = \"type = \"").starts_with("`if`: at column"));
        assert_eq!(
            bad(
                "property_renames = [{ old_name = \"a\", new_name = \"x\" }, { old_name = \"b\", new_name = \"a.b.c.d.e\" }]"
            ),
            "`property_renames[1].new_name`: `a.b.c.d.e` is 5 keys deep; Segment allows 4"
        );
        assert!(bad("drop_properties = [\"\"]").starts_with("`drop_properties[0]`: a path can't be empty"));
        assert!(bad("drop_properties = [\"a..b\"]").ends_with("has an empty key"));
        assert_eq!(
            bad("property_value_transformations = [{ property_paths = [\"a\"], property_value = 1 }, \
                 { property_paths = [\"b\", \"a\"], property_value = 2 }]"),
            "`property_value_transformations[1].property_paths[1]`: `a` is set twice"
        );
        assert_eq!(
            bad("property_renames = [{ old_name = \"a\", new_name = \"b\" }]\n\
                 property_value_transformations = [{ property_paths = [\"b\"], property_value = 1 }]"),
            "`property_value_transformations[0].property_paths[0]`: `b` is also renamed by property_renames[0]"
        );
        let eleven =
            format!("property_value_transformations = [{{ property_paths = [{}], property_value = 1 }}]", paths(11));
        assert!(bad(&eleven).ends_with("11 paths; Segment takes 1 to 10"));
        let ten = format!(
            "{ORDER}property_value_transformations = [{{ property_paths = [{}], property_value = 1 }}]",
            paths(10)
        );
        assert_eq!(transforms(&ten).len(), 1);
        assert!(parse(&format!("{ORDER}new_name = \"y\"")).is_err(), "unknown fields are refused");
        assert!(Transforms::compile(&[]).is_ok_and(|t| t.is_empty()));
    }

    #[test]
    fn the_if_is_an_extra_condition() {
        let t = transforms(&format!("{ORDER}if = \"properties.price > 3\"\ndrop_properties = [\"email\"]"));
        let mut e = track("Order Completed");
        assert!(t.apply(&mut e).changed);
        let mut cheap = track("Order Completed");
        cheap["properties"]["price"] = json!(1);
        assert!(!t.apply(&mut cheap).changed);
        // An `if` that fails to evaluate: the rule does not apply.
        let t = transforms(&format!("{ORDER}if = \"event and true\"\ndrop_properties = [\"email\"]"));
        let mut e = track("Order Completed");
        assert_eq!(t.apply(&mut e), Applied::default());
        assert_eq!(e, track("Order Completed"));
    }

    #[test]
    fn a_renamed_event_is_not_transformed_again() {
        let t = transforms(
            "[[sources.transformations]]\ntype = \"track\"\nevent = \"order_updated\"\nnew_event_name = \"orderUpdated\"\n\
             [[sources.transformations]]\ntype = \"track\"\nevent = \"orderUpdated\"\nnew_event_name = \"order_updated\"\n\
             drop_properties = [\"email\"]",
        );
        let mut e = track("order_updated");
        assert_eq!(t.apply(&mut e).renamed.as_deref(), Some("orderUpdated"));
        assert_eq!((e["event"].as_str(), e["properties"]["email"].as_str()), (Some("orderUpdated"), Some("a@b.c")));
    }
}
