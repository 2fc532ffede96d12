//! Outbound HTTP through the host's `http` capability.
//!
//! The host performs the request, so a plugin needs no sockets: it may reach
//! only the origins the operator listed in the destination's `allow_http`.
//! In native builds (`cargo test`) requests go to the stand-in host that
//! the `testing` module installs (its harness's scripted responder).

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Outcome, RetryClass};

/// The HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// An outbound request. Build it with [`Request::post`] or [`Request::get`].
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Text body (JSON or form-encoded); empty for none.
    pub body: String,
    /// Per-request timeout; the host caps it at the destination's limit.
    pub timeout_ms: Option<u32>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request { method, url: url.into(), headers: Vec::new(), body: String::new(), timeout_ms: None }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new(Method::Post, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets a text body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Serializes `value` as the JSON body and sets `Content-Type`.
    ///
    /// # Errors
    ///
    /// When `value` cannot be serialized (a map with non-string keys).
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_string(value)?;
        Ok(self.header("Content-Type", "application/json").body(body))
    }

    /// Sets this request's timeout.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Sends the request through the host and waits for the response.
    ///
    /// # Errors
    ///
    /// [`HttpError`] when no response arrived. An HTTP error status is not an
    /// error here: it is a [`Response`] to classify.
    pub fn send(&self) -> Result<Response, HttpError> {
        send(self)
    }
}

/// A response, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` and a text body, for tests.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Response { status, headers: Vec::new(), body: body.into().into_bytes() }
    }

    /// Adds a header, for tests.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text, replacing invalid UTF-8.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Deserializes the body as JSON.
    ///
    /// # Errors
    ///
    /// When the body is not JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// How Segment's retry classes treat this status.
    pub fn class(&self) -> RetryClass {
        RetryClass::of_status(self.status)
    }

    /// `Retry-After` in milliseconds, when given in seconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        let secs: f64 = self.header("retry-after")?.trim().parse().ok()?;
        (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
    }
}

/// Why no response was received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The origin is not in the destination's `allow_http`.
    #[error("origin not allowed: {0}")]
    Denied(String),
    /// The URL or a header is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// DNS failure, connection refused or reset.
    #[error("connection failed: {0}")]
    Connection(String),
    /// No complete response within the timeout.
    #[error("timed out")]
    Timeout,
    /// The response exceeded the destination's size limit.
    #[error("response too large")]
    ResponseTooLarge,
}

impl HttpError {
    /// Whether trying again later may succeed (network errors, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(self, HttpError::Connection(_) | HttpError::Timeout)
    }
}

/// The usual outcome of a request that carried a whole batch: success
/// delivers, retryable statuses and network errors retry (honouring
/// `Retry-After`), anything else rejects with the status and the start of
/// the body.
pub fn outcome_for(result: &Result<Response, HttpError>) -> Outcome {
    match result {
        Ok(resp) => match resp.class() {
            RetryClass::Success => Outcome::Delivered,
            RetryClass::Retry => Outcome::Retry { after_ms: resp.retry_after_ms(), reason: status_reason(resp) },
            RetryClass::Reject => Outcome::Rejected(status_reason(resp)),
        },
        Err(err) if err.is_retryable() => Outcome::retry(err.to_string()),
        Err(err) => Outcome::Rejected(err.to_string()),
    }
}

/// "HTTP 400: {first 200 chars of the body}".
pub fn status_reason(resp: &Response) -> String {
    let text = resp.text();
    let snippet: String = text.chars().take(200).collect();
    if snippet.trim().is_empty() {
        format!("HTTP {}", resp.status)
    } else {
        format!("HTTP {}: {}", resp.status, snippet.trim())
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Sends `request` through the host capability.
///
/// # Errors
///
/// As [`Request::send`].
#[cfg(target_arch = "wasm32")]
pub fn send(request: &Request) -> Result<Response, HttpError> {
    use crate::__private::bindings::switchyard::destination::http as wit;
    let method = match request.method {
        Method::Get => wit::Method::Get,
        Method::Head => wit::Method::Head,
        Method::Post => wit::Method::Post,
        Method::Put => wit::Method::Put,
        Method::Patch => wit::Method::Patch,
        Method::Delete => wit::Method::Delete,
    };
    let req = wit::Request {
        method,
        url: request.url.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
        timeout_ms: request.timeout_ms,
    };
    match wit::send(&req) {
        Ok(resp) => Ok(Response { status: resp.status, headers: resp.headers, body: resp.body }),
        Err(wit::Error::Denied(s)) => Err(HttpError::Denied(s)),
        Err(wit::Error::InvalidRequest(s)) => Err(HttpError::InvalidRequest(s)),
        Err(wit::Error::Connection(s)) => Err(HttpError::Connection(s)),
        Err(wit::Error::Timeout) => Err(HttpError::Timeout),
        Err(wit::Error::ResponseTooLarge) => Err(HttpError::ResponseTooLarge),
    }
}

/// Sends `request` to the scripted responder of the current test.
///
/// # Errors
///
/// What the responder returns; [`HttpError::Connection`] when none is set.
#[cfg(not(target_arch = "wasm32"))]
pub fn send(request: &Request) -> Result<Response, HttpError> {
    match NATIVE_HOST.get() {
        Some(host) => host(request),
        None => Err(HttpError::Connection("no host: natively, requests go to the testing harness".into())),
    }
}

/// Natively, the function that answers in the host's place.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type NativeHost = fn(&Request) -> Result<Response, HttpError>;

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// Natively, what stands in for the host's capability; the `testing`
    /// module installs its own, so this module does not depend on it.
    pub(crate) static NATIVE_HOST: std::cell::Cell<Option<NativeHost>> =
        const { std::cell::Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_classes() {
        assert_eq!(outcome_for(&Ok(Response::new(200, "{}"))), Outcome::Delivered);
        let o = outcome_for(&Ok(Response::new(429, "").with_header("Retry-After", "7")));
        assert_eq!(o, Outcome::Retry { after_ms: Some(7000), reason: "HTTP 429".into() });
        assert_eq!(outcome_for(&Ok(Response::new(400, "bad"))), Outcome::Rejected("HTTP 400: bad".into()));
        assert!(matches!(outcome_for(&Err(HttpError::Timeout)), Outcome::Retry { .. }));
        assert!(matches!(outcome_for(&Err(HttpError::Denied("x".into()))), Outcome::Rejected(_)));
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let r = Request::post("http://x").header("Content-Type", "a");
        assert_eq!(r.header_value("content-type"), Some("a"));
    }
}
