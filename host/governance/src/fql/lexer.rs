//! FQL's tokens, each with the byte offset it starts at.

use super::FqlError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    /// A path segment or a keyword (`and`, `or`, `in`, `true`, `false`,
    /// `null`, a function name); escapes already removed.
    Ident {
        text: String,
        escaped: bool,
    },
    Str(String),
    Num(f64),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Not,
    Op(CmpOp),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Characters a path segment may hold unescaped (FQL: `a-z A-Z 0-9 _ -`;
/// `$` too, for vendor names like Amplitude's `$set`).
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'
}

/// Splits `src` into tokens.
///
/// # Errors
///
/// An unterminated string, a bad number or escape, a stray character.
pub(super) fn lex(src: &str) -> Result<Vec<(usize, Token)>, FqlError> {
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        let single = match c {
            _ if c.is_whitespace() => {
                chars.next();
                continue;
            }
            '.' => Some(Token::Dot),
            ',' => Some(Token::Comma),
            '(' => Some(Token::LParen),
            ')' => Some(Token::RParen),
            '[' => Some(Token::LBracket),
            ']' => Some(Token::RBracket),
            '=' => Some(Token::Op(CmpOp::Eq)),
            _ => None,
        };
        if let Some(t) = single {
            chars.next();
            out.push((at, t));
            continue;
        }
        match c {
            '!' | '<' | '>' => {
                chars.next();
                let eq = chars.next_if(|&(_, c)| c == '=').is_some();
                let t = match (c, eq) {
                    ('!', true) => Token::Op(CmpOp::Ne),
                    ('!', false) => Token::Not,
                    ('<', true) => Token::Op(CmpOp::Le),
                    ('<', false) => Token::Op(CmpOp::Lt),
                    ('>', true) => Token::Op(CmpOp::Ge),
                    _ => Token::Op(CmpOp::Gt),
                };
                out.push((at, t));
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(FqlError::at(at, "unterminated string")),
                        Some((_, q)) if q == c => break,
                        Some((e, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, other)) => s.push(other),
                            None => return Err(FqlError::at(e, "unterminated escape")),
                        },
                        Some((_, other)) => s.push(other),
                    }
                }
                out.push((at, Token::Str(s)));
            }
            // After a `.`, digits and `-` start a field name (`properties.1st`).
            '-' | '0'..='9' if !matches!(out.last(), Some((_, Token::Dot))) => {
                let mut end = at;
                let mut text = String::new();
                while let Some(&(i, d)) = chars.peek() {
                    let sign_ok = (d == '-' || d == '+') && (i == at || text.ends_with(['e', 'E']));
                    if d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E' || sign_ok {
                        text.push(d);
                        end = i + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let n: f64 = text.parse().map_err(|_| FqlError::at(at, format!("`{text}` is not a number")))?;
                if !n.is_finite() {
                    return Err(FqlError::at(at, format!("`{}` is out of range", &src[at..end])));
                }
                out.push((at, Token::Num(n)));
            }
            _ if ident_char(c) || c == '\\' => {
                let mut text = String::new();
                let mut escaped = false;
                while let Some(&(i, d)) = chars.peek() {
                    if d == '\\' {
                        chars.next();
                        let Some((_, e)) = chars.next() else {
                            return Err(FqlError::at(i, "a `\\` must escape a character"));
                        };
                        text.push(e);
                        escaped = true;
                    } else if ident_char(d) {
                        text.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((at, Token::Ident { text, escaped }));
            }
            other => return Err(FqlError::at(at, format!("unexpected `{other}`"))),
        }
    }
    Ok(out)
}
