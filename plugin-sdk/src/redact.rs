//! [`redact`]: hiding a secret in text that may echo it (an error body, a
//! log line, a rejection reason).

use std::collections::HashSet;

use crate::form;

/// The shortest piece of a secret that counts as a leak: a truncated echo
/// ("Invalid API key: 0123abcd…") must not get through either.
pub const LEAK_WINDOW: usize = 8;

/// `text` with every run that contains a piece of `secret` (or of its form
/// encoding, [`form::encode`]) at least [`LEAK_WINDOW`] characters long
/// (the whole secret when shorter) replaced by `[redacted]`.
///
/// Use it on anything a destination reports that an outside server wrote:
/// a server that echoes the API key it refused, whole, cut short or
/// form-encoded, leaks none of it into outcomes or logs. Runs of hidden
/// characters become one `[redacted]`. An empty `secret` hides nothing.
pub fn redact(text: &str, secret: &str) -> String {
    let secret_chars: Vec<char> = secret.chars().collect();
    if secret_chars.is_empty() {
        return text.to_owned();
    }
    let encoded: Vec<char> = form::encode(secret).chars().collect();
    let w = LEAK_WINDOW.min(secret_chars.len());
    let mut pieces = HashSet::new();
    for source in [&secret_chars, &encoded] {
        for piece in source.windows(w.min(source.len())) {
            pieces.insert(piece.to_vec());
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut hidden = vec![false; chars.len()];
    for (i, window) in chars.windows(w).enumerate() {
        if pieces.contains(window) {
            hidden[i..i + w].iter_mut().for_each(|h| *h = true);
        }
    }
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if !hidden[i] {
            out.push(c);
        } else if i == 0 || !hidden[i - 1] {
            out.push_str("[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_whole_partial_and_encoded_echoes() {
        let key = "amp-WRONG-key+7f3c9a1b";
        assert_eq!(redact(&format!("Invalid API key: {key}."), key), "Invalid API key: [redacted].");
        assert_eq!(redact("key amp-WRONG-k… refused", key), "key [redacted]… refused");
        assert_eq!(redact("tail 7f3c9a1b", key), "tail [redacted]");
        assert_eq!(redact("form key%2B7f3c9a1b!", key), "form [redacted]!");
        assert_eq!(redact("short amp-WRO ok", key), "short amp-WRO ok");
        assert_eq!(redact("nothing here", key), "nothing here");
        assert_eq!(redact("abc xabcx", "abc"), "[redacted] x[redacted]x");
        assert_eq!(redact("ünï", ""), "ünï");
    }

    #[test]
    fn a_plain_replace_would_miss_these() {
        let secret = "secret-Zq9TestKey0123456789";
        assert_eq!(redact(&format!("HTTP 400: bad key {secret}"), secret), "HTTP 400: bad key [redacted]");
        assert_eq!(redact("echo secret-Zq9Tes…", secret), "echo [redacted]…");
        assert_eq!(redact("a one-character secret in text", "x"), "a one-character secret in te[redacted]t");
        assert_eq!(redact("", secret), "");
    }
}
