//! Segment's Filter Query Language: conditions over an event, compiled once
//! per config load and evaluated per event.
//!
//! ```text
//! type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )
//! !contains( context.library.name, 'js' )
//! 'dark-mode' in properties.features and length( userId ) > 0
//! ```
//!
//! # Semantics
//!
//! Following the FQL reference, with the gaps it leaves decided here:
//!
//! - **Paths** are dot-separated members of the event (`context.library.
//!   version`); characters other than `a-z A-Z 0-9 _ - $` are escaped with
//!   `\` (`properties.product\ 1.price`). A missing member is `null`.
//! - **Values**: strings (single or double quotes), numbers, `true`,
//!   `false`, `null`, lists `[…]`. An object read from the event has type
//!   `object` (the reference names none).
//! - `=` and `!=` need the same type and strict equality (`1 = '1'` is
//!   false); `<` `<=` `>` `>=` compare numbers, and are false for anything
//!   else; `x in list` is true when a member equals `x` (false when the
//!   right side is `null`).
//! - `and`, `or` and `!` take booleans or `null` (as false). Anything else
//!   there (a string, say) is an **evaluation error**.
//! - **Precedence** (the reference defines none): `!`, then comparisons,
//!   then `and`, then `or`.
//! - Functions: `contains(s, sub)`, `match(s, glob)` (whole string, case
//!   sensitive: `*` `?` `[abc]` `[a-z]` `\x`), `length(s | list)` (bytes
//!   of a string), `lowercase`, `uppercase`, `snakecase`, `kebabcase`,
//!   `titlecase`, `typeof` (`string` `number` `list` `bool` `null`
//!   `object`), `bool`, `string`, `number`. On `null`: `contains` and
//!   `match` are false, `length` is 0, the case functions give `null`.
//!   A function given the wrong type is an evaluation error.
//!
//! An expression that does not compile is refused at config load; one
//! that fails to evaluate on an event makes [`Query::matches`] false, which
//! filters read as "drop": fail closed, as Segment does, since filters
//! keep personal data from destinations.

mod eval;
mod lexer;
mod parser;

pub use eval::{EvalError, Value};
pub use lexer::CmpOp;

/// An expression that does not compile, with the byte offset of the
/// problem in its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {}: {message}", .offset + 1)]
pub struct FqlError {
    pub offset: usize,
    pub message: String,
}

impl FqlError {
    fn at(offset: usize, message: impl Into<String>) -> FqlError {
        FqlError { offset, message: message.into() }
    }
}

/// A function FQL defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Contains,
    Match,
    Length,
    Lowercase,
    Uppercase,
    Snakecase,
    Kebabcase,
    Titlecase,
    Typeof,
    Bool,
    String,
    Number,
}

impl Func {
    fn named(name: &str) -> Option<Func> {
        Some(match name {
            "contains" => Func::Contains,
            "match" => Func::Match,
            "length" => Func::Length,
            "lowercase" => Func::Lowercase,
            "uppercase" => Func::Uppercase,
            "snakecase" => Func::Snakecase,
            "kebabcase" => Func::Kebabcase,
            "titlecase" => Func::Titlecase,
            "typeof" => Func::Typeof,
            "bool" => Func::Bool,
            "string" => Func::String,
            "number" => Func::Number,
            _ => return None,
        })
    }

    fn arity(self) -> usize {
        match self {
            Func::Contains | Func::Match => 2,
            _ => 1,
        }
    }
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    List(Vec<Expr>),
    Path(Vec<String>),
    Call(Func, Vec<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// An FQL condition, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    source: String,
    expr: Expr,
}

impl Query {
    /// The paths the condition reads: evaluating it on
    /// [`crate::raw::sparse`] of these gives the same answer as on the
    /// whole event.
    pub fn needs(&self) -> crate::raw::Needs {
        fn collect(e: &Expr, n: &mut crate::raw::Needs) {
            match e {
                Expr::Path(p) => n.add_path(p),
                Expr::List(items) | Expr::Call(_, items) => items.iter().for_each(|i| collect(i, n)),
                Expr::Cmp(_, a, b) | Expr::In(a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                    collect(a, n);
                    collect(b, n);
                }
                Expr::Not(a) => collect(a, n),
                Expr::Str(_) | Expr::Num(_) | Expr::Bool(_) | Expr::Null => {}
            }
        }
        let mut needs = crate::raw::Needs::default();
        collect(&self.expr, &mut needs);
        needs
    }

    /// Compiles `source`.
    ///
    /// # Errors
    ///
    /// [`FqlError`] naming the column of the first problem.
    pub fn compile(source: &str) -> Result<Query, FqlError> {
        let tokens = lexer::lex(source)?;
        let expr = parser::Parser::new(tokens, source.len()).parse()?;
        Ok(Query { source: source.to_owned(), expr })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Evaluates the condition on `event`.
    ///
    /// # Errors
    ///
    /// [`EvalError`] when an operand has a type the operator does not take
    /// (a string given to `and`, a number to `lowercase`).
    pub fn eval(&self, event: &serde_json::Value) -> Result<bool, EvalError> {
        eval::truth(&eval::eval(&self.expr, event)?)
    }

    /// Whether `event` satisfies the condition; an evaluation error is
    /// `false` (fail closed).
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        self.eval(event).unwrap_or(false)
    }
}

impl std::str::FromStr for Query {
    type Err = FqlError;

    fn from_str(s: &str) -> Result<Query, FqlError> {
        Query::compile(s)
    }
}

#[cfg(test)]
mod tests;
