//! CORS for browser SDKs, per source.
//!
//! A source's `cors.allowed_origins` lists the origins whose pages may send
//! its events (absent: any origin, as Segment's API allows; `[]`: no
//! browser at all). Every answer to a request from an allowed origin —
//! errors included — carries `Access-Control-Allow-Origin` (the origin
//! echoed, with `Vary: Origin` and `Access-Control-Allow-Credentials`, so
//! pages that send with `credentials: 'include'` work too) and exposes
//! `Retry-After` and `X-RateLimit-Reset`: a browser that cannot read a 200
//! sends the events again, duplicates.
//!
//! A preflight names no write key, so it is allowed when any source allows
//! the origin; the request that follows is checked against its own
//! source, and a page on an origin that source does not allow gets a 403
//! and nothing is accepted.

use hyper::HeaderMap;
use hyper::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    HeaderValue, ORIGIN, VARY,
};

/// Headers allowed when a preflight names none: what the Segment and
/// RudderStack SDKs send.
const DEFAULT_ALLOWED_HEADERS: &str = "Authorization, Content-Type, Content-Encoding, X-Retry-Count, AnonymousId, SentAt, Rsa-Retry-Attempt, \
     Rsa-Since-Last-Attempt, Rsa-Since-First-Attempt, Rsa-Retry-Reason, Rsa-Recovered";

/// How long a browser may cache a preflight, seconds.
const MAX_AGE_SECS: &str = "86400";

/// Which origins may send a source's events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cors {
    /// `None`: any origin.
    allowed: Option<Vec<String>>,
}

impl Cors {
    /// From a source's `cors.allowed_origins` (`None`: any origin).
    pub fn new(allowed_origins: Option<&[String]>) -> Cors {
        Cors { allowed: allowed_origins.map(|o| o.iter().map(|o| normalize(o)).collect()) }
    }

    /// Whether a page on `origin` may send.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.allowed {
            None => true,
            Some(list) => {
                let origin = normalize(origin);
                list.contains(&origin)
            }
        }
    }
}

/// `scheme://host[:port]`, lower-cased, without a trailing slash: how a
/// browser writes the `Origin` header.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The request's `Origin`, if it came from a page.
pub fn origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(ORIGIN)
}

/// Adds the headers that let the page on `origin` read the answer.
pub fn allow(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Retry-After, X-RateLimit-Reset"));
    headers.append(VARY, HeaderValue::from_static("Origin"));
}

/// Adds a preflight's answer headers for `origin`: the methods, the
/// headers it asked for (echoed; `Authorization` cannot be allowed by a
/// wildcard), and how long to cache it.
pub fn allow_preflight(headers: &mut HeaderMap, origin: &HeaderValue, request: &HeaderMap, methods: &'static str) {
    allow(headers, origin);
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    let asked = request.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS)));
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECS));
    headers.append(VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_by_default_a_list_when_given_none_with_an_empty_list() {
        assert!(Cors::new(None).allows("https://anything.example"));
        let shop = Cors::new(Some(&["https://Shop.example.com/".to_owned()]));
        assert!(shop.allows("https://shop.example.com"));
        assert!(!shop.allows("https://evil.example.com"));
        assert!(!shop.allows("http://shop.example.com"), "the scheme is part of the origin");
        assert!(!Cors::new(Some(&[])).allows("https://shop.example.com"));
    }

    #[test]
    fn a_preflight_echoes_the_requested_headers() {
        let origin = HeaderValue::from_static("https://shop.example.com");
        let mut request = HeaderMap::new();
        request.insert(ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_static("authorization,x-retry-count"));
        let mut out = HeaderMap::new();
        allow_preflight(&mut out, &origin, &request, "POST, OPTIONS");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example.com");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_HEADERS], "authorization,x-retry-count");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_METHODS], "POST, OPTIONS");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(out[ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().contains("Retry-After"));
        let mut plain = HeaderMap::new();
        allow_preflight(&mut plain, &origin, &HeaderMap::new(), "GET, OPTIONS");
        assert!(plain[ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("Authorization"));
    }
}
