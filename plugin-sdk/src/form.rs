//! `application/x-www-form-urlencoded` encoding, for APIs that take form
//! bodies (Amplitude's `/groupidentify` and `/usermap`), and for
//! the redactor, which hides a secret's form-encoded echo too.

/// Percent-encodes `s` as a form value (WHATWG `application/x-www-form-urlencoded`):
/// ASCII letters, digits and `*-._` stay as they are, a space becomes `+`,
/// every other byte of the UTF-8 text becomes `%XX`.
///
/// Encoding works byte by byte, so `encode(a + b) == encode(a) + encode(b)`:
/// the batcher encodes each item once and joins the pieces.
pub fn encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xF) as usize] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encodes_like_a_browser_form() {
        assert_eq!(encode("abc-XYZ_0.9*"), "abc-XYZ_0.9*");
        assert_eq!(encode("a b&c=d"), "a+b%26c%3Dd");
        assert_eq!(encode(r#"[{"k":"v"}]"#), "%5B%7B%22k%22%3A%22v%22%7D%5D");
        assert_eq!(encode("é✓"), "%C3%A9%E2%9C%93");
        assert_eq!(encode("~+/"), "%7E%2B%2F");
    }

    #[test]
    fn concatenation_commutes() {
        let (a, b) = ("{\"x\": 1}", "ünï ✓");
        assert_eq!(encode(&format!("{a}{b}")), format!("{}{}", encode(a), encode(b)));
    }
}
