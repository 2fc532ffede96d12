//! Borrowed JSON: read an event's fields without building a
//! `serde_json::Value` tree, and write a vendor payload straight into its
//! output buffer.
//!
//! - [`Document`] indexes a JSON text in one pass: a flat list of nodes
//!   (each value's span and where its subtree ends), so any member at any
//!   depth is found without scanning the text again.
//! - [`Json`] is one value of a document. It is converted only when asked
//!   ([`Json::text`], [`Json::f64`], …), leniently as the Segment SDKs
//!   need: a number where a string was expected is read as its text.
//! - [`Object`] is an object's members, looked up in place.
//! - [`ObjectWriter`] and [`ArrayWriter`] append JSON to a `Vec<u8>`:
//!   strings are escaped, a [`Json`] is copied verbatim, numbers are
//!   formatted without allocating.
//!
//! # Trust
//!
//! [`Document::parse`] checks the structure (brackets, quotes, colons and
//! commas), not every token: a number or a literal is the text between
//! delimiters, taken as it is. That is enough for JSON a trusted producer
//! wrote — the host checked every event's syntax with serde_json at ingest
//! before handing it on (what that check lets through, and a full read
//! into a `serde_json::Value` refuses: a number beyond `f64`'s range such
//! as `1e400`, a lone surrogate escape such as `"\ud800"`, reads here as
//! absent) — and it is what makes one pass cheap. Whatever the input, parsing never panics
//! and never reads out of bounds: a malformed document is refused, and a
//! malformed token reads as absent ([`Json::f64`] of `1x` is `None`).
//! Nothing here allocates per value unless a string holds an escape
//! sequence (then [`Json::str`] gives an owned, unescaped copy).

use std::borrow::Cow;
use std::fmt;

/// A JSON text and its index: the one allocation of a read.
#[derive(Clone)]
pub struct Document<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

/// One value of a [`Document`]: its span in the text, its kind (the first
/// byte), whether a string holds escapes, and the index of the node after
/// its subtree. An object's children are its keys (string nodes) each
/// followed by its value's subtree; an array's are its items.
#[derive(Debug, Clone, Copy)]
struct Node {
    start: u32,
    end: u32,
    next: u32,
    first: u8,
    escaped: bool,
}

/// Why a text is not a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a JSON document: {reason} at byte {at}")]
pub struct ParseError {
    /// The byte offset where reading stopped.
    pub at: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl<'a> Document<'a> {
    /// Indexes `text` in one pass (see the module docs on what is checked).
    ///
    /// # Errors
    ///
    /// When the text is not one JSON value: an unclosed string or
    /// container, a missing colon or comma, trailing text, or a text over
    /// 4 GiB.
    pub fn parse(text: &'a str) -> Result<Document<'a>, ParseError> {
        if u32::try_from(text.len()).is_err() {
            return Err(ParseError { at: 0, reason: "text longer than 4 GiB" });
        }
        let mut nodes = Vec::with_capacity(text.len() / 10 + 4);
        Indexer { bytes: text.as_bytes(), nodes: &mut nodes }.run()?;
        Ok(Document { text, nodes })
    }

    /// The top-level value.
    pub fn root(&self) -> Json<'_> {
        Json { text: self.text, nodes: &self.nodes, at: 0 }
    }

    /// The top-level value as an object; empty when it is not one.
    pub fn object(&self) -> Object<'_> {
        self.root().object().unwrap_or_default()
    }

    /// The text the document was read from.
    pub fn text(&self) -> &'a str {
        self.text
    }
}

impl fmt::Debug for Document<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document").field("text", &self.text).field("nodes", &self.nodes.len()).finish()
    }
}

/// The one-pass indexer behind [`Document::parse`]: an explicit stack of
/// open containers, no recursion.
struct Indexer<'b, 'n> {
    bytes: &'b [u8],
    nodes: &'n mut Vec<Node>,
}

impl Indexer<'_, '_> {
    fn error(at: usize, reason: &'static str) -> ParseError {
        ParseError { at, reason }
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(i) {
            i += 1;
        }
        i
    }

    fn push(&mut self, start: usize, end: usize, first: u8, escaped: bool) {
        let next = self.nodes.len() as u32 + 1;
        // Offsets fit: the text is at most u32::MAX bytes (checked).
        self.nodes.push(Node { start: start as u32, end: end as u32, next, first, escaped });
    }

    fn run(mut self) -> Result<(), ParseError> {
        let mut open: Vec<usize> = Vec::with_capacity(8);
        let mut i = self.skip_ws(0);
        loop {
            // A value starts at `i`.
            i = self.skip_ws(i);
            let Some(&first) = self.bytes.get(i) else { return Err(Self::error(i, "a value was expected")) };
            match first {
                b'{' | b'[' => {
                    let close = if first == b'{' { b'}' } else { b']' };
                    open.push(self.nodes.len());
                    self.push(i, i, first, false);
                    i = self.skip_ws(i + 1);
                    if self.bytes.get(i) != Some(&close) {
                        if first == b'{' {
                            i = self.key(i)?;
                        }
                        continue;
                    }
                    // An empty container closes in the loop below.
                }
                b'"' => i = self.string(i)?,
                _ => {
                    let start = i;
                    while let Some(&b) = self.bytes.get(i) {
                        if matches!(b, b',' | b'}' | b']' | b':' | b' ' | b'\n' | b'\r' | b'\t') {
                            break;
                        }
                        i += 1;
                    }
                    if i == start {
                        return Err(Self::error(i, "a value was expected"));
                    }
                    self.push(start, i, first, false);
                }
            }
            // After a value: a comma, or the end of containers.
            loop {
                i = self.skip_ws(i);
                let Some(&top) = open.last() else {
                    return if i == self.bytes.len() { Ok(()) } else { Err(Self::error(i, "trailing text")) };
                };
                let container = self.nodes[top].first;
                let empty = self.nodes[top].next as usize == top + 1 && self.nodes.len() == top + 1;
                match (self.bytes.get(i), container) {
                    (Some(b','), _) if !empty => {
                        i = self.skip_ws(i + 1);
                        if container == b'{' {
                            i = self.key(i)?;
                        }
                        break;
                    }
                    (Some(b'}'), b'{') | (Some(b']'), b'[') => {
                        i += 1;
                        let next = self.nodes.len() as u32;
                        let node = &mut self.nodes[top];
                        node.end = i as u32;
                        node.next = next;
                        open.pop();
                    }
                    _ => return Err(Self::error(i, "a comma or a closing bracket was expected")),
                }
            }
        }
    }

    /// A key and its colon at `i`; returns where its value starts.
    fn key(&mut self, i: usize) -> Result<usize, ParseError> {
        if self.bytes.get(i) != Some(&b'"') {
            return Err(Self::error(i, "a string key was expected"));
        }
        let after = self.string(i)?;
        let i = self.skip_ws(after);
        if self.bytes.get(i) != Some(&b':') {
            return Err(Self::error(i, "a colon was expected"));
        }
        Ok(i + 1)
    }

    /// A string starting at the quote at `start`; returns the index after
    /// its closing quote.
    fn string(&mut self, start: usize) -> Result<usize, ParseError> {
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            // Eight bytes at a time while none is a quote or a backslash:
            // most of an event's bytes are inside strings.
            while let Some(chunk) = self.bytes.get(i..i + 8)
                && let Ok(word) = <[u8; 8]>::try_from(chunk)
                && !word_has_quote_or_backslash(u64::from_le_bytes(word))
            {
                i += 8;
            }
            match self.bytes.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
                None => return Err(Self::error(start, "an unclosed string")),
            }
        }
        self.push(start, i + 1, b'"', escaped);
        Ok(i + 1)
    }
}

/// One JSON value of a [`Document`], borrowed from it.
#[derive(Clone, Copy)]
pub struct Json<'a> {
    text: &'a str,
    nodes: &'a [Node],
    at: u32,
}

/// What kind of JSON value a [`Json`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl<'a> Json<'a> {
    fn node(&self) -> Node {
        self.nodes[self.at as usize]
    }

    /// The value's place in its document (for [`Json::at`]).
    pub(crate) fn index(self) -> u32 {
        self.at
    }

    /// The value at `index` of the same document.
    pub(crate) fn at(self, index: u32) -> Json<'a> {
        Json { at: index.min(self.nodes.len().saturating_sub(1) as u32), ..self }
    }

    /// The value's JSON text, exactly as it was sent.
    pub fn raw(self) -> &'a str {
        let node = self.node();
        // Spans start and end at ASCII bytes (or the end), so they are
        // char boundaries; `get` keeps that a non-issue even so.
        self.text.get(node.start as usize..node.end as usize).unwrap_or("")
    }

    /// The kind of value, from its first byte.
    pub fn kind(self) -> Kind {
        match self.node().first {
            b'"' => Kind::String,
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ => Kind::Number,
        }
    }

    /// `true` for `null`.
    pub fn is_null(self) -> bool {
        self.kind() == Kind::Null
    }

    /// The string, unescaped: borrowed when it holds no escape sequence.
    /// [`None`] when the value is not a string (or a malformed one).
    pub fn str(self) -> Option<Cow<'a, str>> {
        let node = self.node();
        if node.first != b'"' {
            return None;
        }
        let (start, end) = (node.start as usize, node.end as usize);
        if !node.escaped {
            return self.text.get(start + 1..end.saturating_sub(1).max(start + 1)).map(Cow::Borrowed);
        }
        serde_json::from_str::<String>(self.text.get(start..end)?).ok().map(Cow::Owned)
    }

    /// The value as text, leniently: a string as itself, a number as its
    /// JSON text (`42`, `1.5`), a boolean as `true`/`false`; [`None`] for
    /// null, arrays and objects.
    pub fn text(self) -> Option<Cow<'a, str>> {
        match self.kind() {
            Kind::String => self.str(),
            Kind::Number | Kind::Bool => Some(Cow::Borrowed(self.raw())),
            _ => None,
        }
    }

    /// The value as a finite number, leniently: a JSON number, or a string
    /// holding one (surrounding spaces allowed).
    pub fn f64(self) -> Option<f64> {
        let n = match self.kind() {
            Kind::Number => self.raw().parse::<f64>().ok(),
            Kind::String => self.str()?.trim().parse::<f64>().ok(),
            _ => None,
        }?;
        n.is_finite().then_some(n)
    }

    /// The value as a boolean, leniently: `true`/`false`, or a string
    /// spelling one in any case.
    pub fn bool(self) -> Option<bool> {
        let s = match self.kind() {
            Kind::Bool => Cow::Borrowed(self.raw()),
            Kind::String => self.str()?,
            _ => return None,
        };
        if s.eq_ignore_ascii_case("true") {
            Some(true)
        } else if s.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }

    /// The members of an object; [`None`] when the value is not one.
    pub fn object(self) -> Option<Object<'a>> {
        (self.kind() == Kind::Object).then_some(Object { value: Some(self) })
    }

    /// The items of an array, in order; [`None`] when the value is not one.
    pub fn items(self) -> Option<impl Iterator<Item = Json<'a>>> {
        if self.kind() != Kind::Array {
            return None;
        }
        let end = self.node().next;
        let mut at = self.at + 1;
        Some(std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let item = Json { at, ..self };
            at = item.node().next;
            Some(item)
        }))
    }

    /// The items of an array, collected; [`None`] when the value is not one.
    pub fn array(self) -> Option<Vec<Json<'a>>> {
        Some(self.items()?.collect())
    }

    /// The value as a `serde_json::Value` tree, for code that wants one
    /// (`Null` when serde_json refuses a malformed token).
    pub fn to_value(self) -> serde_json::Value {
        serde_json::from_str(self.raw()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw())
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw())
    }
}

/// A JSON object's members, in the order sent; the empty object when read
/// from something that is not one. A key sent twice has its last value
/// (as `serde_json::Map` has), at the last position.
#[derive(Clone, Copy, Default, PartialEq)]
pub struct Object<'a> {
    value: Option<Json<'a>>,
}

impl<'a> Object<'a> {
    /// Every member, a repeated key each time: (key node, value).
    pub(crate) fn members_with_repeats(&self) -> impl Iterator<Item = (Json<'a>, Json<'a>)> + 'a {
        let (mut at, end, value) = match self.value {
            Some(v) => (v.at + 1, v.node().next, Some(v)),
            None => (0, 0, None),
        };
        std::iter::from_fn(move || {
            let v = value?;
            if at >= end {
                return None;
            }
            let key = Json { at, ..v };
            let value = Json { at: at + 1, ..v };
            at = value.node().next;
            Some((key, value))
        })
    }

    /// The value of `key` (its last, if sent twice).
    pub fn get(&self, key: &str) -> Option<Json<'a>> {
        let object = self.value?;
        let (text, nodes) = (object.text.as_bytes(), object.nodes);
        let end = nodes.get(object.at as usize)?.next as usize;
        let mut at = object.at as usize + 1;
        let mut found = None;
        // One walk over the members, comparing lengths before bytes; all
        // of them, since the last of a repeated key wins.
        while at + 1 < end.min(nodes.len()) {
            let k = nodes[at];
            let quoted = (k.end - k.start) as usize;
            let matches = if k.escaped {
                key_text(Json { at: at as u32, ..object }) == key
            } else {
                quoted == key.len() + 2 && text.get(k.start as usize + 1..k.end as usize - 1) == Some(key.as_bytes())
            };
            if matches {
                found = Some(Json { at: at as u32 + 1, ..object });
            }
            at = nodes[at + 1].next as usize;
        }
        found
    }

    /// `true` when the object has `key`, whatever its value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// [`Json::text`] of `key`.
    pub fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        self.get(key)?.text()
    }

    /// [`Json::text`] of `key`, when it is not empty.
    pub fn non_empty(&self, key: &str) -> Option<Cow<'a, str>> {
        self.text(key).filter(|s| !s.is_empty())
    }

    /// [`Json::text`] of `key`, when it is not empty or only whitespace
    /// (what most vendor mappings treat as absent).
    pub fn non_blank(&self, key: &str) -> Option<Cow<'a, str>> {
        self.text(key).filter(|s| !s.trim().is_empty())
    }

    /// [`Json::f64`] of `key`.
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.f64()
    }

    /// [`Json::bool`] of `key`.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.bool()
    }

    /// The object at `key`; empty when it is absent or not an object (the
    /// lenient reading: an odd container costs that container, not the
    /// event).
    pub fn object(&self, key: &str) -> Object<'a> {
        self.get(key).and_then(Json::object).unwrap_or_default()
    }

    /// Every member in the order sent, a repeated key each time. Cheaper
    /// than [`Object::iter`], which skips a member whose key comes again
    /// later; the same when no key repeats (as in any JSON a serializer
    /// wrote).
    pub fn iter_as_sent(&self) -> MembersAsSent<'a> {
        let (at, end) = self.value.map_or((0, 0), |v| (v.at + 1, v.node().next));
        MembersAsSent { object: self.value, at, end }
    }

    /// The members in order, each key once (with its last value).
    pub fn iter(&self) -> Members<'a> {
        let count = self.members_with_repeats().count();
        // A key's later duplicate is looked for in place in a small
        // object; a large one is indexed once so this stays linear.
        let dropped = if count > 32 {
            let mut seen = std::collections::HashSet::with_capacity(count);
            let mut dropped = vec![false; count];
            let keys: Vec<Cow<'a, str>> = self.members_with_repeats().map(|(k, _)| key_text(k)).collect();
            for (i, key) in keys.iter().enumerate().rev() {
                dropped[i] = !seen.insert(key.as_ref());
            }
            Some(dropped)
        } else {
            None
        };
        Members { object: *self, at: self.value.map_or(0, |v| v.at + 1), index: 0, dropped }
    }

    /// How many distinct keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// `true` when there are no members.
    pub fn is_empty(&self) -> bool {
        self.members_with_repeats().next().is_none()
    }

    /// The object's JSON text as sent; `{}` for the empty object.
    pub fn raw(&self) -> &'a str {
        self.value.map_or("{}", Json::raw)
    }

    /// The object as a `serde_json::Map`, for code that wants one.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.iter().map(|(k, v)| (k.into_owned(), v.to_value())).collect()
    }
}

impl fmt::Debug for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw())
    }
}

/// The members of an [`Object`] as sent: see [`Object::iter_as_sent`].
#[derive(Clone)]
pub struct MembersAsSent<'a> {
    object: Option<Json<'a>>,
    /// The node of the next key.
    at: u32,
    end: u32,
}

impl<'a> Iterator for MembersAsSent<'a> {
    type Item = (Cow<'a, str>, Json<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let object = self.object?;
        if self.at >= self.end {
            return None;
        }
        let key = Json { at: self.at, ..object };
        let value = Json { at: self.at + 1, ..object };
        self.at = value.node().next;
        Some((key_text(key), value))
    }
}

/// The members of an [`Object`], each key once: see [`Object::iter`].
pub struct Members<'a> {
    object: Object<'a>,
    /// The node of the next key.
    at: u32,
    index: usize,
    /// For a large object, which members a later duplicate overrides.
    dropped: Option<Vec<bool>>,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, Json<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let object = self.object.value?;
        let end = object.node().next;
        loop {
            if self.at >= end {
                return None;
            }
            let key = Json { at: self.at, ..object };
            let value = Json { at: self.at + 1, ..object };
            self.at = value.node().next;
            self.index += 1;
            let overridden = match &self.dropped {
                Some(dropped) => dropped.get(self.index - 1).copied().unwrap_or(false),
                None => {
                    // The members after this one, walked from here.
                    let mut later = self.at;
                    let mut repeated = false;
                    while later < end && !repeated {
                        repeated = same_key(Json { at: later, ..object }, key);
                        later = Json { at: later + 1, ..object }.node().next;
                    }
                    repeated
                }
            };
            if !overridden {
                return Some((key_text(key), value));
            }
        }
    }
}

/// A key node's text, unescaped.
fn key_text(key: Json<'_>) -> Cow<'_, str> {
    key.str().unwrap_or_default()
}

/// Whether two key nodes spell the same key.
fn same_key(a: Json<'_>, b: Json<'_>) -> bool {
    if a.node().escaped || b.node().escaped { key_text(a) == key_text(b) } else { a.raw() == b.raw() }
}

/// Whether any byte of `word` is `"` or `\` (the SWAR zero-byte test).
fn word_has_quote_or_backslash(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGH != 0
}

/// Whether any byte of `word` needs escaping in a JSON string: a
/// control character, `"` or `\` (the SWAR zero-byte test).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let has_quote = quote.wrapping_sub(ONES) & !quote & HIGH;
    let has_backslash = backslash.wrapping_sub(ONES) & !backslash & HIGH;
    (below_space | has_quote | has_backslash) != 0
}

/// Appends one JSON string literal (quotes and escapes) to `out`. Runs of
/// bytes that need no escape are copied whole, eight bytes checked at once.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8)
            && let Ok(word) = <[u8; 8]>::try_from(chunk)
            && !word_needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `n` as a JSON number; a non-finite `n` (which JSON cannot
/// hold) as `null`.
pub fn write_f64(out: &mut Vec<u8>, n: f64) {
    if n.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(n).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `n` as a JSON number.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes one JSON object member by member; the closing `}` is written
/// when the writer is dropped (or [`ObjectWriter::end`] is called), so a
/// nested object cannot be left open.
///
/// ```
/// use switchyard_plugin_sdk::json::{Document, ObjectWriter};
///
/// let props = Document::parse(r#"{"plan":"pro"}"#).unwrap();
/// let mut out = Vec::new();
/// let mut event = ObjectWriter::new(&mut out);
/// event.str("event_type", "Signed Up").i64("time", 1_714_564_800_123);
/// event.json("event_properties", props.root());
/// event.object("user_properties").str("tier", "gold");
/// event.end();
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     r#"{"event_type":"Signed Up","time":1714564800123,"event_properties":{"plan":"pro"},"user_properties":{"tier":"gold"}}"#
/// );
/// ```
pub struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    empty: bool,
}

impl<'o> ObjectWriter<'o> {
    /// Starts an object at the end of `out`.
    pub fn new(out: &'o mut Vec<u8>) -> ObjectWriter<'o> {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Writes `key` and its colon; the value is the caller's to write.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// `"key": "value"`.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        write_str(self.key(key), value);
        self
    }

    /// `"key": value`, the JSON copied verbatim.
    pub fn json(&mut self, key: &str, value: Json<'_>) -> &mut Self {
        self.key(key).extend_from_slice(value.raw().as_bytes());
        self
    }

    /// `"key": n`.
    pub fn i64(&mut self, key: &str, n: i64) -> &mut Self {
        write_i64(self.key(key), n);
        self
    }

    /// `"key": n` (`null` when `n` is not finite).
    pub fn f64(&mut self, key: &str, n: f64) -> &mut Self {
        write_f64(self.key(key), n);
        self
    }

    /// `"key": true|false`.
    pub fn bool(&mut self, key: &str, b: bool) -> &mut Self {
        self.key(key).extend_from_slice(if b { b"true" } else { b"false" });
        self
    }

    /// `"key": value`, serialized by serde_json.
    ///
    /// # Errors
    ///
    /// serde_json's error when `value` cannot be serialized (a map with
    /// non-string keys, say); the member is then written as `null`.
    pub fn serialize<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<&mut Self, String> {
        let out = self.key(key);
        let start = out.len();
        if let Err(e) = serde_json::to_writer(&mut *out, value) {
            out.truncate(start);
            out.extend_from_slice(b"null");
            return Err(e.to_string());
        }
        Ok(self)
    }

    /// Every member of `object`, copied verbatim.
    pub fn members(&mut self, object: &Object<'_>) -> &mut Self {
        for (key, value) in object.iter() {
            self.json(&key, value);
        }
        self
    }

    /// Starts an object at `key`; it ends when the returned writer drops.
    pub fn object(&mut self, key: &str) -> ObjectWriter<'_> {
        ObjectWriter::new(self.key(key))
    }

    /// Starts an array at `key`; it ends when the returned writer drops.
    pub fn array(&mut self, key: &str) -> ArrayWriter<'_> {
        ArrayWriter::new(self.key(key))
    }

    /// Ends the object (as dropping the writer does).
    pub fn end(self) {}
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        self.out.push(b'}');
    }
}

/// Writes one JSON array item by item; the closing `]` is written when
/// the writer is dropped, as for [`ObjectWriter`].
pub struct ArrayWriter<'o> {
    out: &'o mut Vec<u8>,
    empty: bool,
}

impl<'o> ArrayWriter<'o> {
    /// Starts an array at the end of `out`.
    pub fn new(out: &'o mut Vec<u8>) -> ArrayWriter<'o> {
        out.push(b'[');
        ArrayWriter { out, empty: true }
    }

    fn next(&mut self) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out
    }

    /// A string item.
    pub fn str(&mut self, value: &str) -> &mut Self {
        write_str(self.next(), value);
        self
    }

    /// An item copied verbatim.
    pub fn json(&mut self, value: Json<'_>) -> &mut Self {
        self.next().extend_from_slice(value.raw().as_bytes());
        self
    }

    /// Already-serialized JSON text, copied verbatim. The caller vouches
    /// that `text` is one valid JSON value (an item another writer made).
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.next().extend_from_slice(text.as_bytes());
        self
    }

    /// An object item; it ends when the returned writer drops.
    pub fn object(&mut self) -> ObjectWriter<'_> {
        ObjectWriter::new(self.next())
    }

    /// Ends the array (as dropping the writer does).
    pub fn end(self) {}
}

impl Drop for ArrayWriter<'_> {
    fn drop(&mut self) {
        self.out.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document<'_> {
        Document::parse(text).unwrap()
    }

    #[test]
    fn lenient_scalars() {
        let d = doc(
            r#"{"s":"a\"b","n":42,"f":1.5,"t":true,"ns":" 2.5 ","bs":"FALSE","null":null,"arr":[1,"x"],"o":{"k":1}}"#,
        );
        let obj = d.object();
        assert_eq!(obj.text("s").as_deref(), Some("a\"b"));
        assert!(matches!(obj.get("s").and_then(Json::str), Some(Cow::Owned(_))));
        assert_eq!(obj.text("n").as_deref(), Some("42"));
        assert_eq!(obj.text("t").as_deref(), Some("true"));
        assert_eq!(obj.text("null"), None);
        assert_eq!(obj.text("arr"), None);
        assert_eq!(obj.f64("f"), Some(1.5));
        assert_eq!(obj.f64("ns"), Some(2.5));
        assert_eq!(obj.f64("s"), None);
        assert_eq!(obj.bool("bs"), Some(false));
        assert_eq!(obj.bool("t"), Some(true));
        assert_eq!(obj.bool("n"), None);
        assert_eq!(obj.object("o").f64("k"), Some(1.0));
        assert!(obj.object("arr").is_empty(), "an array read as an object is empty");
        assert!(obj.object("missing").is_empty());
        assert_eq!(obj.get("arr").and_then(Json::array).map(|a| a.len()), Some(2));
        assert_eq!(obj.get("o").map(Json::kind), Some(Kind::Object));
        assert_eq!(obj.get("null").map(Json::is_null), Some(true));
    }

    #[test]
    fn whitespace_nesting_and_empty_containers() {
        let d = doc(" { \"a\" : [ ] , \"b\" : { } , \"c\" : [ 1 , { \"d\" : [ [ ] , -2.5e3 ] } ] , \"e\" : \"x\" } ");
        let obj = d.object();
        assert_eq!(obj.len(), 4);
        assert_eq!(obj.get("a").and_then(Json::array).map(|a| a.len()), Some(0));
        assert!(obj.object("b").is_empty());
        let c = obj.get("c").and_then(Json::array).unwrap();
        assert_eq!(c[0].f64(), Some(1.0));
        let d_items = c[1].object().unwrap().get("d").and_then(Json::array).unwrap();
        assert_eq!((d_items.len(), d_items[1].f64()), (2, Some(-2500.0)));
        assert_eq!(obj.text("e").as_deref(), Some("x"), "the member after a nested array is found");
        assert_eq!(obj.get("c").unwrap().raw(), "[ 1 , { \"d\" : [ [ ] , -2.5e3 ] } ]");
    }

    #[test]
    fn borrowed_unless_escaped() {
        let d = doc(r#"{"plain":"abc","k\u0065y":"v"}"#);
        let obj = d.object();
        assert!(matches!(obj.get("plain").and_then(Json::str), Some(Cow::Borrowed("abc"))));
        assert_eq!(obj.text("key").as_deref(), Some("v"), "escaped keys are unescaped");
        assert_eq!(obj.iter().map(|(k, _)| k.into_owned()).collect::<Vec<_>>(), ["plain", "key"]);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let d = doc(r#"{"a":1,"b":2,"a":3}"#);
        let members: Vec<_> = d.object().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(members, ["b=2", "a=3"]);
        let as_sent: Vec<_> = d.object().iter_as_sent().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(as_sent, ["a=1", "b=2", "a=3"]);
        assert_eq!(doc(r#"{"k\u0041":[1]}"#).object().iter_as_sent().map(|(k, _)| k).collect::<Vec<_>>(), ["kA"]);
        assert_eq!(doc("[]").object().iter_as_sent().count(), 0);
        assert_eq!(d.object().f64("a"), Some(3.0));
        for n in [10, 40] {
            let many: String = (0..n).map(|i| format!("\"k{i}\":{i},")).collect();
            let text = format!("{{{many}\"k3\":99}}");
            let d = doc(&text);
            assert_eq!((d.object().len(), d.object().f64("k3")), (n, Some(99.0)), "{n} keys");
            assert_eq!(d.object().to_map().get("k3"), Some(&serde_json::json!(99)));
        }
    }

    #[test]
    fn refuses_malformed_structure() {
        for bad in [
            "",
            "{",
            "[1",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{,}",
            "[,]",
            "[1,]",
            "{\"a\":1,}",
            "{1:2}",
            "\"open",
            "{\"a\":1} x",
            "]",
            "[1 2]",
            "{\"a\":[}",
        ] {
            assert!(Document::parse(bad).is_err(), "{bad:?}");
        }
        assert!(doc("[1]").root().object().is_none());
        assert!(doc("[1]").object().is_empty());
    }

    /// Every prefix and every one-byte corruption of a real event parses
    /// or is refused, and what parses reads without a panic.
    #[test]
    fn never_panics_on_damaged_input() {
        let text =
            r#"{"type":"track","event":"E\"x","properties":{"a":[1,{"b":null}],"c":-1.5e2,"d":true},"k\u00e9":"v"}"#;
        let mut tried = 0;
        let read_all = |t: &str| {
            if let Ok(d) = Document::parse(t) {
                let obj = d.object();
                for (k, v) in obj.iter() {
                    let _ = (k.len(), v.text(), v.f64(), v.bool(), v.to_value(), v.array(), v.raw());
                    if let Some(o) = v.object() {
                        let _ = (o.len(), o.to_map(), o.get("a").map(|a| a.array()));
                    }
                }
            }
        };
        for end in 0..=text.len() {
            if let Some(prefix) = text.get(..end) {
                read_all(prefix);
                tried += 1;
            }
        }
        for i in 0..text.len() {
            for b in [b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'x', b'0'] {
                let mut bytes = text.as_bytes().to_vec();
                bytes[i] = b;
                if let Ok(t) = std::str::from_utf8(&bytes) {
                    read_all(t);
                    tried += 1;
                }
            }
        }
        assert!(tried > 1000);
    }

    /// On valid JSON the index reads what serde_json reads.
    #[test]
    fn agrees_with_serde_json() {
        let text = r#"{"a":{"b":[1,2,{"c":"d\n"}],"e":{}},"f":[],"g":"h","i":-0.5,"j":[[[]]],"k":false,"l":null}"#;
        let d = doc(text);
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::Value::Object(d.object().to_map()), value);
        assert_eq!(d.root().to_value(), value);
        let c = d.object().object("a").get("b").and_then(Json::array).unwrap()[2];
        assert_eq!(c.object().unwrap().text("c").as_deref(), Some("d\n"));
        assert_eq!(d.object().text("g").as_deref(), Some("h"));
        assert_eq!(d.object().get("j").map(Json::raw), Some("[[[]]]"));
    }

    /// Strings are scanned eight bytes at a time: a quote or an escape at
    /// any offset of a word still ends or marks the string.
    #[test]
    fn strings_end_at_any_offset() {
        for len in 0..24 {
            let plain = "x".repeat(len);
            let text = format!(r#"{{"{plain}":"{plain}","e":"{plain}\"{plain}","n":1}}"#);
            let d = doc(&text);
            let obj = d.object();
            assert_eq!(obj.text(&plain).as_deref(), Some(plain.as_str()), "{text}");
            assert_eq!(obj.text("e"), Some(Cow::Owned(format!("{plain}\"{plain}"))), "{text}");
            assert_eq!(obj.f64("n"), Some(1.0), "{text}");
        }
    }

    #[test]
    fn writers_escape_and_nest() {
        let nested = doc(" {\"k\": [1]} ");
        let mut out = Vec::new();
        {
            let mut o = ObjectWriter::new(&mut out);
            o.str("q\"", "line\nbreak\u{1}é").f64("nan", f64::NAN).f64("x", 0.1).bool("b", false);
            o.array("a").str("s").json(nested.root()).object().i64("n", -7);
            o.object("empty");
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"q\"":"line\nbreak\u0001é","nan":null,"x":0.1,"b":false,"a":["s",{"k": [1]},{"n":-7}],"empty":{}}"#
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["q\""], "line\nbreak\u{1}é");
    }

    /// The eight-at-a-time check escapes exactly what the byte loop would.
    #[test]
    fn write_str_agrees_with_serde_json() {
        let mut samples: Vec<String> = vec![String::new(), "plain ascii text longer than eight".into()];
        for c in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '😀', ' ', '!', '#'] {
            for at in 0..18 {
                let mut s: String = "abcdefghijklmnopq".chars().take(at).collect();
                s.push(c);
                s.push_str("rstuvwxyz0123456");
                samples.push(s);
            }
        }
        for s in samples {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn serialize_writes_null_on_error() {
        let mut out = Vec::new();
        {
            let mut o = ObjectWriter::new(&mut out);
            let bad: std::collections::HashMap<Vec<u8>, u8> = [(vec![1], 1)].into();
            assert!(o.serialize("bad", &bad).is_err());
            o.serialize("ok", &[1, 2]).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"bad":null,"ok":[1,2]}"#);
    }
}
