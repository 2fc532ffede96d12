//! Reading and editing an event's JSON text without building all of it.
//!
//! Parsing a whole ~500-byte event into a [`Value`] and writing it back
//! costs several microseconds, more than the conditions and schemas that
//! need it. Conditions read a few paths, and filters remove a few keys, so:
//!
//! - [`Needs`] is the set of paths something reads, known at compile time
//!   (an FQL condition's paths, a schema's top-level members);
//! - [`sparse`] parses only those: a [`Value`] with the same content at
//!   every needed path and nothing else — what a condition or schema that
//!   reads only those paths cannot tell from the whole event;
//! - [`Edit`] removes keys from objects in the text itself, copying every
//!   other member's bytes as they are.
//!
//! An object's members are found by a structural scan, several times
//! faster than `serde_json`'s validating
//! skip: the events read here are the host's own normalized JSON, and a
//! value is checked when it is parsed. Text that is not JSON is an error,
//! never a panic. Duplicate keys are kept as they are by an edit (events
//! reach here normalized, without any).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// What parts of an event something reads: all of it, or some members,
/// each all or in part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    all: bool,
    members: BTreeMap<String, Needs>,
}

impl Needs {
    /// The whole value.
    pub fn all() -> Needs {
        Needs { all: true, members: BTreeMap::new() }
    }

    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.all && self.members.is_empty()
    }

    /// Whether this needs the bulk of an event whole (`context` and its
    /// `properties` or `traits`): then parsing it all is cheaper than
    /// scanning for the parts.
    fn is_bulk(&self) -> bool {
        let whole = |k: &str| self.members.get(k).is_some_and(|n| n.all);
        whole("context") && (whole("properties") || whole("traits"))
    }

    /// Adds the whole value at `path` (the empty path: everything).
    pub fn add_path(&mut self, path: &[String]) {
        if self.all {
            return;
        }
        match path.split_first() {
            None => *self = Needs::all(),
            Some((first, rest)) => self.members.entry(first.clone()).or_default().add_path(rest),
        }
    }

    /// Adds everything `other` needs.
    pub fn merge(&mut self, other: &Needs) {
        if self.all {
            return;
        }
        if other.all {
            *self = Needs::all();
            return;
        }
        for (k, n) in &other.members {
            self.members.entry(k.clone()).or_default().merge(n);
        }
    }
}

/// Text that is not the JSON it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {0}")]
pub struct RawError(pub usize);

/// A member's name: borrowed from the text unless it had escapes.
#[derive(Debug)]
struct Key<'a>(Cow<'a, str>);

impl Key<'_> {
    /// Writes the name as a JSON string.
    fn write(&self, out: &mut String) {
        match &self.0 {
            // Borrowed: the text had no escapes, so it is its own JSON.
            Cow::Borrowed(k) => {
                out.push('"');
                out.push_str(k);
                out.push('"');
            }
            Cow::Owned(k) => out.push_str(&Value::String(k.clone()).to_string()),
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The index after the string starting at `i` (its opening quote).
/// A plain loop: an event's strings are short, shorter than a vectorised
/// search takes to start.
fn string_end(b: &[u8], i: usize) -> Result<usize, RawError> {
    let mut j = i + 1;
    loop {
        match b.get(j) {
            None => return Err(RawError(i)),
            Some(b'"') => return Ok(j + 1),
            Some(b'\\') => j += 2,
            Some(_) => j += 1,
        }
    }
}

/// The index after the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Result<usize, RawError> {
    match b.get(i) {
        None => Err(RawError(i)),
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let (mut j, mut depth) = (i, 0usize);
            loop {
                match b.get(j) {
                    None => return Err(RawError(i)),
                    Some(b'"') => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => {}
                }
                j += 1;
            }
        }
        Some(_) => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                j += 1;
            }
            if j == i { Err(RawError(i)) } else { Ok(j) }
        }
    }
}

/// The members of the object `text` holds, as raw text, in order. Only
/// the structure is checked: each value is checked when it is parsed.
/// Events reach here as the host wrote them, so it is JSON; anything
/// else is an error, never a panic.
fn members(text: &str) -> Result<Vec<(Key<'_>, &str)>, RawError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(RawError(i));
    }
    let mut out = Vec::with_capacity(16);
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(RawError(i));
        }
        let end = string_end(b, i)?;
        let quoted = text.get(i..end).ok_or(RawError(i))?;
        let inner = &quoted[1..quoted.len() - 1];
        let key = if inner.contains('\\') {
            Key(Cow::Owned(serde_json::from_str::<String>(quoted).map_err(|_| RawError(i))?))
        } else {
            Key(Cow::Borrowed(inner))
        };
        i = skip_ws(b, end);
        if b.get(i) != Some(&b':') {
            return Err(RawError(i));
        }
        i = skip_ws(b, i + 1);
        let value_end = value_end(b, i)?;
        out.push((key, text.get(i..value_end).ok_or(RawError(i))?));
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok(out),
            _ => return Err(RawError(i)),
        }
    }
}

fn is_object(raw: &str) -> bool {
    raw.trim_start().starts_with('{')
}

/// Parses from `json` only what `needs` reaches (see the module docs).
///
/// # Errors
///
/// `json` is not valid JSON where it was read.
pub fn sparse(json: &str, needs: &Needs) -> Result<Value, RawError> {
    if needs.all || needs.is_bulk() || !is_object(json) {
        return serde_json::from_str(json).map_err(|e| RawError(e.column()));
    }
    let mut out = Map::new();
    for (key, raw) in members(json)? {
        if let Some(n) = needs.members.get(key.0.as_ref()) {
            out.insert(key.0.into_owned(), sparse(raw, n)?);
        }
    }
    Ok(Value::Object(out))
}

/// Keys to remove from objects of an event, by the objects' paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// Remove these keys here.
    remove: BTreeSet<String>,
    /// Keep only these keys here (and `always` ones), if set.
    keep_only: Option<BTreeSet<String>>,
    /// Keys kept whatever `keep_only` says.
    always: &'static [&'static str],
    members: BTreeMap<String, Edit>,
}

impl Edit {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.keep_only.is_none() && self.members.is_empty()
    }

    fn at(&mut self, path: &[String]) -> &mut Edit {
        match path.split_first() {
            None => self,
            Some((first, rest)) => self.members.entry(first.clone()).or_default().at(rest),
        }
    }

    /// Removes `keys` from the object at `path`.
    pub fn remove(&mut self, path: &[String], keys: &[String]) {
        self.at(path).remove.extend(keys.iter().cloned());
    }

    /// Keeps only `keys` (and `always`) in the object at `path`; applied
    /// twice, only the keys both lists name.
    pub fn keep_only(&mut self, path: &[String], keys: &[String], always: &'static [&'static str]) {
        let at = self.at(path);
        let keys: BTreeSet<String> = keys.iter().cloned().collect();
        at.keep_only = Some(match at.keep_only.take() {
            Some(before) => before.intersection(&keys).cloned().collect(),
            None => keys,
        });
        at.always = always;
    }

    /// `json` with the edit applied; `None` when nothing was removed.
    ///
    /// # Errors
    ///
    /// `json` is not valid JSON where it was read.
    pub fn apply(&self, json: &str) -> Result<Option<String>, RawError> {
        if self.is_empty() || !is_object(json) {
            return Ok(None);
        }
        let members = members(json)?;
        let mut out = String::with_capacity(json.len());
        let mut changed = false;
        out.push('{');
        let mut first = true;
        for (key, raw) in &members {
            let k = key.0.as_ref();
            let kept = !self.remove.contains(k)
                && self.keep_only.as_ref().is_none_or(|keep| keep.contains(k) || self.always.contains(&k));
            if !kept {
                changed = true;
                continue;
            }
            let edited = match self.members.get(k) {
                Some(inner) => inner.apply(raw)?,
                None => None,
            };
            if !first {
                out.push(',');
            }
            first = false;
            key.write(&mut out);
            out.push(':');
            match edited {
                Some(text) => {
                    changed = true;
                    out.push_str(&text);
                }
                None => out.push_str(raw),
            }
        }
        out.push('}');
        Ok(changed.then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(s: &str) -> Vec<String> {
        s.split('.').map(str::to_owned).collect()
    }

    const EVENT: &str = r#"{"type":"track","event":"A","userId":"u","properties":{"price":5,"email":"a@b","nested":{"x":[1,2]}},"context":{"ip":"1.2.3.4","library":{"name":"js","version":"1"}}}"#;

    #[test]
    fn sparse_reads_only_what_is_needed() {
        let mut needs = Needs::default();
        needs.add_path(&path("type"));
        needs.add_path(&path("properties.price"));
        needs.add_path(&path("context.library"));
        needs.add_path(&path("missing.deep"));
        let v = sparse(EVENT, &needs).unwrap();
        assert_eq!(
            v,
            json!({"type": "track", "properties": {"price": 5}, "context": {"library": {"name": "js", "version": "1"}}})
        );
        // A path through a non-object keeps the whole value there.
        let mut through = Needs::default();
        through.add_path(&path("event.length"));
        assert_eq!(sparse(EVENT, &through).unwrap(), json!({"event": "A"}));
        assert_eq!(sparse(EVENT, &Needs::all()).unwrap(), serde_json::from_str::<Value>(EVENT).unwrap());
        for bad in ["{\"a\":", "{\"a\" 1}", "{\"a\":\"x", "[1]x", "{\"a\":1,}", "{\"properties\":{\"price\":}}", ""] {
            assert!(sparse(bad, &needs).is_err(), "{bad}");
        }
    }

    #[test]
    fn needs_merge_and_widen() {
        let mut a = Needs::default();
        a.add_path(&path("context.ip"));
        let mut b = Needs::default();
        b.add_path(&path("context"));
        a.merge(&b);
        let v = sparse(EVENT, &a).unwrap();
        assert_eq!(v["context"]["library"]["name"], "js", "context is needed whole");
        a.add_path(&[]);
        assert!(a.is_all());
    }

    #[test]
    fn edits_remove_keys_and_copy_the_rest_as_it_was() {
        let mut e = Edit::default();
        e.remove(&path("context"), &["ip".to_owned()]);
        e.remove(&path("properties"), &["email".to_owned(), "absent".to_owned()]);
        let out = e.apply(EVENT).unwrap().expect("changed");
        assert_eq!(
            out,
            r#"{"type":"track","event":"A","userId":"u","properties":{"price":5,"nested":{"x":[1,2]}},"context":{"library":{"name":"js","version":"1"}}}"#
        );
        let mut keep = Edit::default();
        keep.keep_only(&[], &["properties".to_owned()], &["type", "userId"]);
        keep.keep_only(&path("properties"), &["price".to_owned(), "nested".to_owned()], &[]);
        keep.keep_only(&path("properties"), &["price".to_owned()], &[]);
        let out: Value = serde_json::from_str(&keep.apply(EVENT).unwrap().unwrap()).unwrap();
        assert_eq!(out, json!({"type": "track", "userId": "u", "properties": {"price": 5}}));
        let mut nothing = Edit::default();
        nothing.remove(&path("context"), &["absent".to_owned()]);
        assert_eq!(nothing.apply(EVENT).unwrap(), None);
        assert_eq!(Edit::default().apply(EVENT).unwrap(), None);
    }

    #[test]
    fn escaped_names_are_read_and_written_back_escaped() {
        let text = r#"{"a\"b":1,"c\u00e9":{"ip":"x","k":2},"plain":3}"#;
        let mut e = Edit::default();
        e.remove(&path("cé"), &["ip".to_owned()]);
        let out = e.apply(text).unwrap().unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, json!({"a\"b": 1, "cé": {"k": 2}, "plain": 3}));
        let mut needs = Needs::default();
        needs.add_path(&["a\"b".to_owned()]);
        assert_eq!(sparse(text, &needs).unwrap(), json!({"a\"b": 1}));
    }
}
