//! Evaluating a compiled expression on an event.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::lexer::CmpOp;
use super::parser::op_text;
use super::{Expr, Func};

/// A value during evaluation: a literal, or a borrowed part of the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    List(Vec<Value<'a>>),
    /// An object read from the event.
    Object(&'a serde_json::Map<String, Json>),
}

impl Value<'_> {
    /// FQL's name for the type, as `typeof` returns it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Num(_) => "number",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Object(_) => "object",
        }
    }
}

/// An operand of a type its operator does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

fn from_json(v: &Json) -> Value<'_> {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Num(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Value::Str(Cow::Borrowed(s)),
        Json::Array(a) => Value::List(a.iter().map(from_json).collect()),
        Json::Object(o) => Value::Object(o),
    }
}

/// Reads `path` from the event; `null` when any part is missing.
fn lookup<'a>(event: &'a Json, path: &[String]) -> Value<'a> {
    let mut at = event;
    for segment in path {
        match at.get(segment.as_str()) {
            Some(v) => at = v,
            None => return Value::Null,
        }
    }
    from_json(at)
}

/// A condition's truth: `true`, `false`, or `null` (false).
///
/// # Errors
///
/// Any other type.
pub(super) fn truth(v: &Value<'_>) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        other => Err(EvalError(format!("a condition must be a bool or null, not a {}", other.type_name()))),
    }
}

pub(super) fn eval<'a>(expr: &'a Expr, event: &'a Json) -> Result<Value<'a>, EvalError> {
    Ok(match expr {
        Expr::Str(s) => Value::Str(Cow::Borrowed(s)),
        Expr::Num(n) => Value::Num(*n),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Null => Value::Null,
        Expr::List(items) => Value::List(items.iter().map(|e| eval(e, event)).collect::<Result<_, _>>()?),
        Expr::Path(path) => lookup(event, path),
        Expr::Not(e) => Value::Bool(!truth(&eval(e, event)?)?),
        // Both sides are evaluated: an error on either side fails the
        // whole expression, whatever the other says.
        Expr::And(a, b) => {
            let (a, b) = (truth(&eval(a, event)?)?, truth(&eval(b, event)?)?);
            Value::Bool(a && b)
        }
        Expr::Or(a, b) => {
            let (a, b) = (truth(&eval(a, event)?)?, truth(&eval(b, event)?)?);
            Value::Bool(a || b)
        }
        Expr::Cmp(op, a, b) => Value::Bool(compare(*op, &eval(a, event)?, &eval(b, event)?)),
        Expr::In(x, list) => match eval(list, event)? {
            Value::List(items) => {
                let x = eval(x, event)?;
                Value::Bool(items.iter().any(|i| equal(i, &x)))
            }
            Value::Null => Value::Bool(false),
            other => return Err(EvalError(format!("`in` needs a list on its right, not a {}", other.type_name()))),
        },
        Expr::Call(func, args) => {
            let args = args.iter().map(|a| eval(a, event)).collect::<Result<Vec<_>, _>>()?;
            call(*func, args)?
        }
    })
}

/// FQL's strict equality: same type, same value.
fn equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Num(x), Value::Num(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y)),
        (Value::Object(x), Value::Object(y)) => x == y,
        _ => false,
    }
}

fn compare(op: CmpOp, a: &Value<'_>, b: &Value<'_>) -> bool {
    match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        _ => match (a, b) {
            (Value::Num(x), Value::Num(y)) => match op {
                CmpOp::Lt => x < y,
                CmpOp::Le => x <= y,
                CmpOp::Gt => x > y,
                _ => x >= y,
            },
            _ => false,
        },
    }
}

fn wrong(func: Func, v: &Value<'_>) -> EvalError {
    EvalError(format!("{func:?} does not take a {}", v.type_name()).to_lowercase())
}

fn call(func: Func, mut args: Vec<Value<'_>>) -> Result<Value<'_>, EvalError> {
    let second = if args.len() > 1 { args.pop() } else { None };
    let first = args.pop().unwrap_or(Value::Null);
    Ok(match func {
        Func::Contains => match (&first, &second) {
            (Value::Null, _) => Value::Bool(false),
            (Value::Str(s), Some(Value::Str(sub))) => Value::Bool(s.contains(sub.as_ref())),
            (Value::Str(_), Some(other)) => return Err(wrong(func, other)),
            (other, _) => return Err(wrong(func, other)),
        },
        Func::Match => match (&first, &second) {
            (Value::Null, _) => Value::Bool(false),
            (Value::Str(s), Some(Value::Str(pattern))) => Value::Bool(glob(pattern.as_bytes(), s.as_bytes())),
            (Value::Str(_), Some(other)) => return Err(wrong(func, other)),
            (other, _) => return Err(wrong(func, other)),
        },
        Func::Length => match &first {
            Value::Null => Value::Num(0.0),
            Value::Str(s) => Value::Num(s.len() as f64),
            Value::List(l) => Value::Num(l.len() as f64),
            other => return Err(wrong(func, other)),
        },
        Func::Lowercase | Func::Uppercase | Func::Snakecase | Func::Kebabcase | Func::Titlecase => match &first {
            Value::Null => Value::Null,
            Value::Str(s) => Value::Str(Cow::Owned(recase(func, s))),
            other => return Err(wrong(func, other)),
        },
        Func::Typeof => Value::Str(Cow::Borrowed(first.type_name())),
        Func::Bool => match &first {
            Value::Bool(b) => Value::Bool(*b),
            Value::Null => Value::Bool(false),
            Value::Num(n) => Value::Bool(*n != 0.0),
            Value::Str(s) => Value::Bool(!s.is_empty() && s.as_ref() != "false" && s.as_ref() != "0"),
            Value::List(l) => Value::Bool(!l.is_empty()),
            Value::Object(o) => Value::Bool(!o.is_empty()),
        },
        Func::String => match &first {
            Value::Str(s) => Value::Str(s.clone()),
            Value::Null => Value::Str(Cow::Borrowed("null")),
            Value::Bool(b) => Value::Str(Cow::Owned(b.to_string())),
            Value::Num(n) => Value::Str(Cow::Owned(number_text(*n))),
            other => return Err(wrong(func, other)),
        },
        Func::Number => match &first {
            Value::Num(n) => Value::Num(*n),
            Value::Bool(b) => Value::Num(if *b { 1.0 } else { 0.0 }),
            Value::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()).map_or(Value::Null, Value::Num),
            Value::Null => Value::Null,
            other => return Err(wrong(func, other)),
        },
    })
}

/// `1` rather than `1.0`, as JSON writes it.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

/// Words of `s`: split at non-alphanumerics and at lower-to-upper changes.
fn words(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn recase(func: Func, s: &str) -> String {
    match func {
        Func::Lowercase => s.to_lowercase(),
        Func::Uppercase => s.to_uppercase(),
        Func::Snakecase => words(s).iter().map(|w| w.to_lowercase()).collect::<Vec<_>>().join("_"),
        Func::Kebabcase => words(s).iter().map(|w| w.to_lowercase()).collect::<Vec<_>>().join("-"),
        _ => words(s)
            .iter()
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Glob matching of the whole of `s`: `*`, `?` (one character), `[abc]`,
/// `[a-z]`, `[!a]` (classes of ASCII characters), `\x`. Iterative,
/// backtracking only to the last `*`: never exponential.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    // One character: a whole UTF-8 sequence.
                    p += 1;
                    i += utf8_len(s[i]);
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                // An escape that does not match: fall through to the last `*`.
                b'\\' if p + 1 < pattern.len() => {}
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// A `[…]` class at `pattern[p]` against byte `c`: whether it matched and
/// where the class ends; `None` when the `[` is not closed.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negated = matches!(pattern.get(j), Some(b'!') | Some(b'^'));
    if negated {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pattern.len() && (pattern[j] != b']' || first) {
        first = false;
        let lo = pattern[j];
        if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            matched |= (lo..=pattern[j + 2]).contains(&c);
            j += 3;
        } else {
            matched |= lo == c;
            j += 1;
        }
    }
    (j < pattern.len()).then_some((matched != negated, j + 1))
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Str(s) => write!(f, "{s:?}"),
            Expr::Num(n) => write!(f, "{}", number_text(*n)),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Null => f.write_str("null"),
            Expr::List(items) => {
                f.write_str("[")?;
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
            Expr::Path(p) => f.write_str(&p.join(".")),
            Expr::Call(func, args) => {
                write!(f, "{}(", format!("{func:?}").to_lowercase())?;
                for (i, e) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::Cmp(op, a, b) => write!(f, "({a} {} {b})", op_text(*op)),
            Expr::In(a, b) => write!(f, "({a} in {b})"),
            Expr::Not(e) => write!(f, "!{e}"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}
