//! The `http` capability: outbound requests made by the host on a plugin's
//! behalf, deny by default.
//!
//! A request goes out only when its URL's origin (scheme, host, port) is in
//! the destination's `allow_http`. The connection goes to that URL's host;
//! a `Host` header from the plugin is dropped, so it cannot be used to reach
//! another virtual host behind an allowed address. Every request has a
//! timeout and every response a size cap; requests past
//! `http_requests_per_second` end the call.
//!
//! [`HttpCtx`] is a destination's grant, [`HttpView`] lends it to the
//! contract's `Host` traits, and [`add_to_linker`] links them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime::component::{HasData, Linker};

use super::{Breach, Caller};
use crate::quota::{QuotaKind, TokenBucket};
use crate::world::http::{Error, Host, Method, Request, Response};

/// An origin a destination may call: scheme, lowercase host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed, a path is not).
    ///
    /// # Errors
    ///
    /// A message saying what is wrong.
    pub fn parse(s: &str) -> Result<Origin, String> {
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        let uri: Uri = trimmed.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty()) {
            return Err("must be an origin (scheme://host[:port]) without a path".into());
        }
        Origin::of(&uri)
    }

    /// The origin of an absolute `http` or `https` URI.
    ///
    /// # Errors
    ///
    /// When the URI is relative, has another scheme, or user info.
    pub fn of(uri: &Uri) -> Result<Origin, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("scheme `{other}` is not http or https")),
            None => return Err("URL must be absolute (http:// or https://)".into()),
        };
        let authority = uri.authority().ok_or("URL has no host")?;
        if authority.as_str().contains('@') {
            return Err("URL must not contain user info".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() {
            return Err("URL has no host".into());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Origin { https, host, port })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// One destination's HTTP limits.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    pub allow: Vec<Origin>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// A failure below HTTP semantics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Connection(String),
    #[error("response too large")]
    TooLarge,
}

/// The future a [`Transport`] returns.
pub type TransportFuture = Pin<Box<dyn Future<Output = Result<hyper::Response<Bytes>, TransportError>> + Send>>;

/// Sends requests. The real one is [`HyperTransport`]; benchmarks use an
/// in-process one to measure the plugin without the network.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request`, reading at most `max_body` bytes of the response.
    fn send(&self, request: hyper::Request<Full<Bytes>>, max_body: usize) -> TransportFuture;
}

/// hyper's pooled client, with TLS (webpki roots) for `https`.
pub struct HyperTransport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HyperTransport {
    /// A client with connection pooling.
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(https);
        HyperTransport { client }
    }
}

impl Default for HyperTransport {
    fn default() -> Self {
        HyperTransport::new()
    }
}

impl Transport for HyperTransport {
    fn send(&self, request: hyper::Request<Full<Bytes>>, max_body: usize) -> TransportFuture {
        let fut = self.client.request(request);
        Box::pin(async move {
            let resp = fut.await.map_err(|e| TransportError::Connection(describe_client_error(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max_body).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    TransportError::TooLarge
                } else {
                    TransportError::Connection(format!("reading response: {e}"))
                }
            })?;
            Ok(hyper::Response::from_parts(parts, body.to_bytes()))
        })
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A destination's HTTP grant: its policy, its transport and its request
/// rate.
pub struct HttpCtx {
    pub policy: HttpPolicy,
    transport: Arc<dyn Transport>,
    /// `http_requests_per_second`; `None`: unlimited.
    rate: Option<Mutex<TokenBucket>>,
    /// The granted origins requests were sent to, for the host's audit.
    called: Arc<CalledOrigins>,
}

/// The granted origins a destination has sent requests to (whatever the
/// answer), so an operator can see grants broader than needed.
#[derive(Debug, Default)]
pub struct CalledOrigins(Mutex<std::collections::BTreeSet<String>>);

impl CalledOrigins {
    fn record(&self, origin: &Origin) {
        let mut set = crate::quota::lock(&self.0);
        let text = origin.to_string();
        if !set.contains(&text) {
            set.insert(text);
        }
    }

    /// The origins called so far, sorted.
    pub fn list(&self) -> Vec<String> {
        crate::quota::lock(&self.0).iter().cloned().collect()
    }

    /// Adds origins known to have been called (an earlier run's).
    pub fn extend(&self, origins: impl IntoIterator<Item = String>) {
        crate::quota::lock(&self.0).extend(origins);
    }
}

/// Headers a plugin may not set: the host owns them.
const HOST_OWNED: [&str; 6] = ["host", "content-length", "transfer-encoding", "connection", "upgrade", "te"];

impl HttpCtx {
    /// A grant of `policy` over `transport`, at most `requests_per_second`
    /// requests a second (shared by the destination's instances).
    pub fn new(policy: HttpPolicy, transport: Arc<dyn Transport>, requests_per_second: Option<u32>) -> Self {
        let rate = requests_per_second.map(|r| Mutex::new(TokenBucket::new(r, 1)));
        HttpCtx { policy, transport, rate, called: Arc::default() }
    }

    /// This grant, recording the origins it sends to in `called`.
    #[must_use]
    pub fn recording_calls(mut self, called: Arc<CalledOrigins>) -> Self {
        self.called = called;
        self
    }

    /// Counts one request; false when it is over the rate.
    fn admit(&self) -> bool {
        let Some(bucket) = &self.rate else { return true };
        crate::quota::lock(bucket).try_take(1, tokio::time::Instant::now())
    }

    /// Checks `request` against the policy, sends it and reads the response.
    ///
    /// # Errors
    ///
    /// The contract's [`Error`]: denied origin, malformed request,
    /// connection failure, timeout, oversize response.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        let uri: Uri = request.url.parse().map_err(|e| Error::InvalidRequest(format!("URL: {e}")))?;
        let origin = Origin::of(&uri).map_err(Error::InvalidRequest)?;
        if !self.policy.allow.contains(&origin) {
            return Err(Error::Denied(origin.to_string()));
        }
        self.called.record(&origin);
        let method = match request.method {
            Method::Get => hyper::Method::GET,
            Method::Head => hyper::Method::HEAD,
            Method::Post => hyper::Method::POST,
            Method::Put => hyper::Method::PUT,
            Method::Patch => hyper::Method::PATCH,
            Method::Delete => hyper::Method::DELETE,
        };
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        let headers = builder.headers_mut().ok_or_else(|| Error::InvalidRequest("request".into()))?;
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::InvalidRequest(format!("header name `{name}`")))?;
            if HOST_OWNED.contains(&name.as_str()) {
                continue;
            }
            let value =
                HeaderValue::from_str(value).map_err(|_| Error::InvalidRequest(format!("value of header `{name}`")))?;
            headers.append(name, value);
        }
        let req =
            builder.body(Full::new(Bytes::from(request.body))).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(self.policy.timeout))
            .unwrap_or(self.policy.timeout);
        let sent = self.transport.send(req, self.policy.max_response_bytes);
        let resp = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return Err(Error::Timeout),
            Ok(Err(TransportError::TooLarge)) => return Err(Error::ResponseTooLarge),
            Ok(Err(TransportError::Connection(msg))) => return Err(Error::Connection(msg)),
            Ok(Ok(resp)) => resp,
        };
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        Ok(Response { status: resp.status().as_u16(), headers, body: resp.into_body().to_vec() })
    }
}

/// What the `http` interface's functions see of a store: the grant, the
/// caller and the breach slot.
pub struct HttpCtxView<'a> {
    pub ctx: &'a HttpCtx,
    pub caller: &'a Caller,
    pub breach: &'a mut Breach,
}

/// Implemented by a store's data to lend its [`HttpCtxView`].
pub trait HttpView: Send {
    fn http(&mut self) -> HttpCtxView<'_>;
}

struct HasHttp;

impl HasData for HasHttp {
    type Data<'a> = HttpCtxView<'a>;
}

/// Links the `http` interface of every contract version.
///
/// # Errors
///
/// When the linker already defines it.
pub fn add_to_linker<T: HttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::world::http::add_to_linker::<T, HasHttp>(linker, T::http)?;
    crate::world::v0_1::switchyard::destination::http::add_to_linker::<T, HasHttp>(linker, T::http)
}

impl Host for HttpCtxView<'_> {
    /// Sends the plugin's request. Breaching a quota — an origin not in
    /// `allow_http`, the request rate, the timeout, the response size —
    /// ends the call (see [`QuotaKind`]); connection errors and HTTP
    /// statuses are the plugin's to handle.
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, Error>> {
        if !self.ctx.admit() {
            return Err(self
                .breach
                .record(QuotaKind::HttpRate, "more HTTP requests per second than http_requests_per_second".into()));
        }
        match self.ctx.send(request).await {
            Err(Error::Denied(origin)) => {
                tracing::warn!(destination = &*self.caller.name, %origin, "plugin tried to reach an origin not in allow_http");
                Err(self
                    .breach
                    .record(QuotaKind::HttpOrigin, format!("request to {origin}, which is not in allow_http")))
            }
            Err(Error::Timeout) => {
                let ms = self.ctx.policy.timeout.as_millis();
                Err(self
                    .breach
                    .record(QuotaKind::HttpTimeout, format!("HTTP request took longer than http_timeout_ms ({ms} ms)")))
            }
            Err(Error::ResponseTooLarge) => {
                let max = self.ctx.policy.max_response_bytes;
                Err(self.breach.record(
                    QuotaKind::HttpResponseSize,
                    format!("HTTP response larger than http_max_response_bytes ({max} bytes)"),
                ))
            }
            other => Ok(other),
        }
    }
}

/// Contract 0.1's `http`: the same functions, field by field.
mod v0_1 {
    use super::HttpCtxView;
    use crate::world::http;
    use crate::world::v0_1::switchyard::destination::http as old;

    impl old::Host for HttpCtxView<'_> {
        async fn send(&mut self, request: old::Request) -> wasmtime::Result<Result<old::Response, old::Error>> {
            use old::Method as M;
            let method = match request.method {
                M::Get => http::Method::Get,
                M::Head => http::Method::Head,
                M::Post => http::Method::Post,
                M::Put => http::Method::Put,
                M::Patch => http::Method::Patch,
                M::Delete => http::Method::Delete,
            };
            let request = http::Request {
                method,
                url: request.url,
                headers: request.headers,
                body: request.body,
                timeout_ms: request.timeout_ms,
            };
            let result = http::Host::send(self, request).await?;
            Ok(match result {
                Ok(r) => Ok(old::Response { status: r.status, headers: r.headers, body: r.body }),
                Err(e) => Err(match e {
                    http::Error::Denied(o) => old::Error::Denied(o),
                    http::Error::InvalidRequest(m) => old::Error::InvalidRequest(m),
                    http::Error::Connection(m) => old::Error::Connection(m),
                    http::Error::Timeout => old::Error::Timeout,
                    http::Error::ResponseTooLarge => old::Error::ResponseTooLarge,
                }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let o = Origin::parse("https://API2.amplitude.com").unwrap();
        assert_eq!(o, Origin { https: true, host: "api2.amplitude.com".into(), port: 443 });
        assert_eq!(Origin::parse("http://127.0.0.1:9000/").unwrap().port, 9000);
        assert!(Origin::parse("https://x.com/path").is_err());
        assert!(Origin::parse("ftp://x.com").is_err());
        assert!(Origin::parse("x.com").is_err());
        let uri: Uri = "http://user@127.0.0.1:9000/x".parse().unwrap();
        assert!(Origin::of(&uri).is_err());
        let uri: Uri = "http://127.0.0.1:9000/x?y=1".parse().unwrap();
        assert_eq!(Origin::of(&uri).unwrap(), Origin::parse("http://127.0.0.1:9000").unwrap());
    }

    struct Echo;
    impl Transport for Echo {
        fn send(&self, request: hyper::Request<Full<Bytes>>, _max: usize) -> TransportFuture {
            let host = request.headers().get("host").map(|h| h.to_str().unwrap_or("").to_owned());
            Box::pin(async move {
                Ok(hyper::Response::builder().status(200).body(Bytes::from(host.unwrap_or_default())).unwrap())
            })
        }
    }

    fn cap() -> HttpCtx {
        HttpCtx::new(
            HttpPolicy {
                allow: vec![Origin::parse("http://127.0.0.1:9000").unwrap()],
                timeout: Duration::from_secs(1),
                max_response_bytes: 1024,
            },
            Arc::new(Echo),
            None,
        )
    }

    fn req(url: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: Method::Post,
            url: url.into(),
            headers: headers.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            body: String::new(),
            timeout_ms: None,
        }
    }

    #[tokio::test]
    async fn deny_by_default_and_host_header_dropped() {
        let c = cap();
        assert!(
            matches!(c.send(req("http://127.0.0.1:9001/x", &[])).await, Err(Error::Denied(o)) if o == "http://127.0.0.1:9001")
        );
        assert!(matches!(c.send(req("https://127.0.0.1:9000/x", &[])).await, Err(Error::Denied(_))));
        let ok = c.send(req("http://127.0.0.1:9000/x", &[("Host", "evil.example")])).await.unwrap();
        assert_eq!(ok.status, 200);
        assert_ne!(ok.body, b"evil.example");
        assert!(matches!(
            c.send(req("http://127.0.0.1:9000/x", &[("bad header", "v")])).await,
            Err(Error::InvalidRequest(_))
        ));
    }
}
