//! FQL's grammar, with a precedence of our own (Segment's reference does
//! not define one; its examples always parenthesise):
//!
//! ```text
//! or    := and ("or" and)*
//! and   := unary ("and" unary)*
//! unary := "!" unary | cmp
//! cmp   := value (("=" | "!=" | "<" | "<=" | ">" | ">=" | "in") value)?
//! value := string | number | "true" | "false" | "null"
//!        | path | name "(" (or ("," or)*)? ")" | "(" or ")" | "[" (or ("," or)*)? "]"
//! path  := segment ("." segment)*
//! ```
//!
//! So `!` binds tightest, then comparisons, then `and`, then `or`, as in
//! SQL and most languages: `a or b and c` is `a or (b and c)`.

use super::lexer::{CmpOp, Token};
use super::{Expr, FqlError, Func};

/// How deep parentheses, lists, calls and `!` may nest: far beyond any
/// real condition, well within the stack.
const MAX_DEPTH: usize = 256;

pub(super) struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
    depth: usize,
}

impl Parser {
    pub(super) fn new(tokens: Vec<(usize, Token)>, len: usize) -> Parser {
        Parser { tokens, pos: 0, len, depth: 0 }
    }

    /// Parses the whole input as one expression.
    pub(super) fn parse(mut self) -> Result<Expr, FqlError> {
        if self.tokens.is_empty() {
            return Err(FqlError::at(0, "empty expression"));
        }
        let e = self.or()?;
        match self.tokens.get(self.pos) {
            None => Ok(e),
            Some((at, t)) => Err(FqlError::at(*at, format!("unexpected {}", describe(t)))),
        }
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(at, _)| *at)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident { text, escaped: false }) if text == word)
    }

    fn expect(&mut self, want: &Token, what: &str) -> Result<(), FqlError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(FqlError::at(self.at(), format!("expected {what}")))
        }
    }

    fn or(&mut self) -> Result<Expr, FqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FqlError::at(self.at(), format!("nested deeper than {MAX_DEPTH}")));
        }
        let result = self.or_inner();
        self.depth -= 1;
        result
    }

    fn or_inner(&mut self) -> Result<Expr, FqlError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FqlError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FqlError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(FqlError::at(self.at(), format!("nested deeper than {MAX_DEPTH}")));
            }
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, FqlError> {
        let left = self.value()?;
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.pos += 1;
                Ok(Expr::Cmp(op, Box::new(left), Box::new(self.value()?)))
            }
            _ if self.keyword("in") => {
                self.pos += 1;
                Ok(Expr::In(Box::new(left), Box::new(self.value()?)))
            }
            _ => Ok(left),
        }
    }

    fn value(&mut self) -> Result<Expr, FqlError> {
        let at = self.at();
        let Some((_, token)) = self.tokens.get(self.pos).cloned() else {
            return Err(FqlError::at(at, "expected a value, a path or a function"));
        };
        self.pos += 1;
        match token {
            Token::Str(s) => Ok(Expr::Str(s)),
            Token::Num(n) => Ok(Expr::Num(n)),
            Token::LParen => {
                let e = self.or()?;
                self.expect(&Token::RParen, "`)`")?;
                Ok(e)
            }
            Token::LBracket => Ok(Expr::List(self.items(&Token::RBracket, "`]` or `,`")?)),
            Token::Ident { text, escaped } => {
                if !escaped {
                    match text.as_str() {
                        "true" => return Ok(Expr::Bool(true)),
                        "false" => return Ok(Expr::Bool(false)),
                        "null" => return Ok(Expr::Null),
                        "and" | "or" | "in" => {
                            return Err(FqlError::at(at, format!("expected a value before `{text}`")));
                        }
                        _ => {}
                    }
                    if self.peek() == Some(&Token::LParen) {
                        return self.call(at, &text);
                    }
                }
                let mut path = vec![text];
                while self.peek() == Some(&Token::Dot) {
                    self.pos += 1;
                    match self.tokens.get(self.pos).cloned() {
                        Some((_, Token::Ident { text, .. })) => path.push(text),
                        _ => return Err(FqlError::at(self.at(), "expected a field name after `.`")),
                    }
                    self.pos += 1;
                }
                Ok(Expr::Path(path))
            }
            other => Err(FqlError::at(at, format!("unexpected {}", describe(&other)))),
        }
    }

    /// Comma-separated expressions up to `close` (consumed): a list's
    /// members or a call's arguments. Each goes through `or`, so its
    /// nesting counts towards the depth limit.
    fn items(&mut self, close: &Token, what: &str) -> Result<Vec<Expr>, FqlError> {
        let mut items = Vec::new();
        if self.peek() != Some(close) {
            loop {
                items.push(self.or()?);
                if self.peek() == Some(&Token::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(close, what)?;
        Ok(items)
    }

    fn call(&mut self, at: usize, name: &str) -> Result<Expr, FqlError> {
        let func = Func::named(name).ok_or_else(|| FqlError::at(at, format!("unknown function `{name}`")))?;
        self.pos += 1; // `(`
        let args = self.items(&Token::RParen, "`)` or `,`")?;
        if args.len() != func.arity() {
            return Err(FqlError::at(
                at,
                format!("`{name}` takes {} argument{}, not {}", func.arity(), plural(func.arity()), args.len()),
            ));
        }
        Ok(Expr::Call(func, args))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Ident { text, .. } => format!("`{text}`"),
        Token::Str(s) => format!("string \"{s}\""),
        Token::Num(n) => format!("number {n}"),
        Token::Dot => "`.`".into(),
        Token::Comma => "`,`".into(),
        Token::LParen => "`(`".into(),
        Token::RParen => "`)`".into(),
        Token::LBracket => "`[`".into(),
        Token::RBracket => "`]`".into(),
        Token::Not => "`!`".into(),
        Token::Op(op) => format!("`{}`", op_text(*op)),
    }
}

pub(super) fn op_text(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}
