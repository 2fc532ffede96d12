//! Reading a request body: size cap, gzip with a cap on the inflated size,
//! and the write key from Basic auth.

use std::io::Read;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, HeaderMap};

/// Why a body could not be read. Each maps to a 400 with its message.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("unsupported Content-Encoding `{0}` (use gzip or none)")]
    Encoding(String),
    #[error("invalid gzip body: {0}")]
    Gzip(String),
    #[error("reading request body: {0}")]
    Read(String),
}

/// Reads the body, inflating gzip; at most `limit` bytes before and after
/// inflation (so a gzip bomb stops at `limit`).
///
/// # Errors
///
/// [`BodyError`].
pub async fn read(headers: &HeaderMap, body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let raw = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            BodyError::TooLarge(limit)
        } else {
            BodyError::Read(e.to_string())
        }
    })?;
    let raw = raw.to_bytes();
    match headers.get(CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(raw),
        Some(enc) if enc.is_empty() || enc == "identity" => Ok(raw),
        Some(enc) if enc == "gzip" || enc == "x-gzip" => gunzip(&raw, limit),
        Some(other) => Err(BodyError::Encoding(other)),
    }
}

fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| BodyError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// The write key from `Authorization: Basic base64(key:)`, if any.
pub fn basic_auth_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let key = decoded.split_once(':').map_or(decoded.as_str(), |(k, _)| k);
    (!key.is_empty()).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn basic_auth() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic a2V5MTIzOg==".parse().unwrap()); // "key123:"
        assert_eq!(basic_auth_key(&h).as_deref(), Some("key123"));
        h.insert(AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_auth_key(&h), None);
        h.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_auth_key(&h), None);
    }

    #[test]
    fn gzip_bomb_stops_at_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 10 * 1024 * 1024]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 20 * 1024);
        assert!(matches!(gunzip(&bomb, 500 * 1024), Err(BodyError::TooLarge(_))));
        assert!(matches!(gunzip(b"not gzip", 100), Err(BodyError::Gzip(_))));
    }
}
