//! The Segment-compatible tracking API.
//!
//! `POST /v1/{identify,track,page,screen,group,alias}` take one event;
//! `/v1/batch` and `/v1/import` take `{"batch": [...]}`. The write key comes
//! from Basic auth or `writeKey` in the body. Answers, exactly:
//!
//! | status | body | when |
//! |---|---|---|
//! | 200 | `{"success":true}` | accepted (events failing validation are counted and logged, as Segment does) |
//! | 400 | `{"success":false,"code":…,"message":…}` | invalid JSON, oversize request or event, bad encoding |
//! | 401 | same shape | missing or unknown write key |
//! | 404 / 405 | same shape | unknown path / not POST |
//! | 503 | same shape | events could not be stored (never 200): `code` is `disk_below_floor` (free space under `server.min_free_disk_mb`), `shutting_down` or `log_unavailable`; SDKs retry a 503 |

mod body;
pub mod cors;
pub mod governance;
pub mod rate_limit;
pub mod route;
pub mod settings;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{Metrics, SourceStats};
use crate::normalize::{self, BatchMeta, Envelope, EventType};
use crate::sink::EventSink;
use crate::telemetry::{
    EventDeduplicated, EventInvalid, EventsAccepted, EventsRefused, InternalEvent, RateLimited, RequestRefused,
};
use cors::Cors;
use governance::SourceGovernance;
use rate_limit::RateLimiter;
use route::Route;
use settings::PublicUrl;
use tls::TlsConfigs;

/// A source: a write key, its counters and which web pages may send.
#[derive(Clone)]
pub struct Source {
    pub name: Arc<str>,
    pub stats: Arc<SourceStats>,
    pub cors: Arc<Cors>,
    /// Its `rate_limit`, if it has one.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Its tracking plan and transformations, if it has any.
    pub governance: Option<Arc<SourceGovernance>>,
}

/// The sources by write key; replaced whole when a reload changes them.
pub type Sources = Arc<arc_swap::ArcSwap<HashMap<String, Source>>>;

/// What the tracking API needs.
pub struct Ingest<S> {
    pub sources: Sources,
    pub sink: S,
    pub metrics: Arc<Metrics>,
    pub max_request_bytes: usize,
    pub max_event_bytes: usize,
    /// What clients see as this server's URL (`server.public_url`), for
    /// the settings answers; `None`: the request's `Host`.
    pub public_url: Option<PublicUrl>,
    /// TLS for every connection (`server.tls`), swapped on reloads.
    pub tls: Option<TlsConfigs>,
}

/// A TLS handshake that takes longer is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Reply = Response<Full<Bytes>>;

/// `{"batch": [...], ...}`; events stay raw so each one's size is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default)]
    write_key: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    integrations: Option<Map<String, Value>>,
}

/// What a request brought besides its body.
struct Sent<'a> {
    /// From Basic auth (or the query, for a beacon).
    header_key: Option<String>,
    /// The page's origin, for a browser's request.
    origin: Option<&'a str>,
    received_at: chrono::DateTime<chrono::Utc>,
}

/// Just the write key of a single-event body (the rest is left unparsed).
#[derive(Deserialize)]
struct KeyOnly {
    #[serde(default, rename = "writeKey")]
    write_key: Option<String>,
}

impl<S: EventSink> Ingest<S> {
    /// Serves the tracking API on `listener` until `shutdown` turns true,
    /// then stops accepting and lets in-flight requests finish.
    ///
    /// # Errors
    ///
    /// Only if accepting connections fails for good.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let stop = crate::stopped(shutdown);
        tokio::pin!(stop);
        loop {
            let (stream, _peer): (_, SocketAddr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let watcher = graceful.watcher();
            match &self.tls {
                None => {
                    tokio::spawn(this.serve_connection(stream, watcher));
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
                    tokio::spawn(async move {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => this.serve_connection(tls_stream, watcher).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    });
                }
            }
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                tracing::warn!("in-flight tracking requests did not finish within 10 s");
            }
        }
        Ok(())
    }

    /// Serves HTTP/1.1 (keep-alive) on one connection, plain or TLS.
    async fn serve_connection<I>(self: Arc<Self>, io: I, watcher: hyper_util::server::graceful::Watcher)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection closed with error");
        }
    }

    /// Handles one request: routes it ([`route`]), answers it, and adds
    /// the CORS headers a page needs to read the answer ([`cors`]).
    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let origin = cors::origin(req.headers()).cloned();
        let (mut reply, source) = self.answer(req).await;
        if let Some(origin) = origin.as_ref().and_then(|o| o.to_str().ok().map(|s| (o, s.to_owned()))) {
            let allowed = match &source {
                Some(s) => s.cors.allows(&origin.1),
                None => self.any_source_allows(&origin.1),
            };
            if allowed {
                cors::allow(reply.headers_mut(), origin.0);
            }
        }
        reply
    }

    /// The answer, and the source the request turned out to be for.
    async fn answer(&self, req: Request<Incoming>) -> (Reply, Option<Source>) {
        let path = req.uri().path().to_owned();
        let Some(route) = route::route(&path, req.uri().query()) else {
            return (self.refuse(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {path}")), None);
        };
        let (get, methods) = match route.is_get() {
            true => (Method::GET, "GET, HEAD, OPTIONS"),
            false => (Method::POST, "POST, OPTIONS"),
        };
        if req.method() == Method::OPTIONS {
            return (self.preflight(req.headers(), methods), None);
        }
        let method_ok = req.method() == get || (get == Method::GET && req.method() == Method::HEAD);
        if !method_ok {
            let reason = format!("use {get}");
            return (self.refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", reason), None);
        }
        let origin = cors::origin(req.headers()).and_then(|o| o.to_str().ok()).map(str::to_owned);
        match route {
            Route::Settings { write_key } => return self.settings(&write_key, req.headers()),
            Route::SourceConfig { query_key } => {
                return self.source_config(query_key.or_else(|| body::basic_auth_key(req.headers())));
            }
            Route::SdkMetrics => {
                self.metrics.sdk_metrics.inc();
                return (reply(StatusCode::OK, Bytes::from_static(br#"{"success":true}"#)), None);
            }
            Route::Batch { .. } | Route::Single(_) => {}
        }
        let (parts, incoming) = req.into_parts();
        let bytes = match body::read(&parts.headers, incoming, self.max_request_bytes).await {
            Ok(b) => b,
            Err(e @ body::BodyError::TooLarge(_)) => {
                return (self.refuse(StatusCode::BAD_REQUEST, "payload_too_large", e.to_string()), None);
            }
            Err(e) => return (self.refuse(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()), None),
        };
        let header_key = body::basic_auth_key(&parts.headers);
        let received_at = chrono::Utc::now();
        let request = Sent { header_key, origin: origin.as_deref(), received_at };
        match route {
            Route::Batch { query_key } => {
                let request = Sent { header_key: request.header_key.or(query_key), ..request };
                self.batch(&bytes, request).await
            }
            Route::Single(kind) => self.single(kind, &bytes, request).await,
            _ => (self.refuse(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {path}")), None),
        }
    }

    /// A CORS preflight: allowed when some source allows the page's
    /// origin (a preflight names no write key).
    fn preflight(&self, headers: &hyper::HeaderMap, methods: &'static str) -> Reply {
        let Some(origin) = cors::origin(headers) else {
            return reply(StatusCode::NO_CONTENT, Bytes::new());
        };
        if !origin.to_str().is_ok_and(|o| self.any_source_allows(o)) {
            return self.refuse(StatusCode::FORBIDDEN, "origin_not_allowed", "no source accepts this origin".into());
        }
        let mut resp = reply(StatusCode::NO_CONTENT, Bytes::new());
        resp.headers_mut().remove(CONTENT_TYPE);
        cors::allow_preflight(resp.headers_mut(), origin, headers, methods);
        resp
    }

    fn any_source_allows(&self, origin: &str) -> bool {
        self.sources.load().values().any(|s| s.cors.allows(origin))
    }

    /// `GET /v1/projects/{writeKey}/settings`: 404 for an unknown key.
    fn settings(&self, write_key: &str, headers: &hyper::HeaderMap) -> (Reply, Option<Source>) {
        let Some(source) = self.sources.load().get(write_key).cloned() else {
            return (
                self.refuse(StatusCode::NOT_FOUND, "unknown_write_key", "no source has this write key".into()),
                None,
            );
        };
        let public = self.public_url.clone().unwrap_or_else(|| {
            let host = headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            PublicUrl::from_host(host, "http")
        });
        let body = settings::segment(write_key, &public).to_string();
        (reply(StatusCode::OK, Bytes::from(body)), Some(source))
    }

    /// RudderStack's `GET /sourceConfig/?writeKey=…`.
    fn source_config(&self, key: Option<String>) -> (Reply, Option<Source>) {
        let Some((key, source)) = key.and_then(|k| self.sources.load().get(&k).cloned().map(|s| (k, s))) else {
            return (
                self.refuse(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown write key".into()),
                None,
            );
        };
        let body = settings::rudderstack(&source.name, &key).to_string();
        (reply(StatusCode::OK, Bytes::from(body)), Some(source))
    }

    /// The source of `key`, unless the request came from a page on an
    /// origin the source does not allow.
    fn source_for(&self, key: Option<String>, origin: Option<&str>) -> Result<Source, Box<Reply>> {
        let Some(source) = self.authenticate(key) else {
            return Err(Box::new(self.refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown write key".into(),
            )));
        };
        if let Some(origin) = origin
            && !source.cors.allows(origin)
        {
            let message = format!("source `{}` does not accept events from pages on {origin}", source.name);
            return Err(Box::new(self.refuse(StatusCode::FORBIDDEN, "origin_not_allowed", message)));
        }
        if let Some(Err(wait)) = source.limiter.as_ref().map(|l| l.take()) {
            let secs = rate_limit::retry_after_secs(wait);
            RateLimited { stats: &source.stats, retry_after_secs: secs }.emit();
            let message = format!("source `{}` is over its rate limit; retry in {secs} s", source.name);
            let mut reply = reply(StatusCode::TOO_MANY_REQUESTS, error_body("rate_limited", &message));
            let value = HeaderValue::from(secs);
            reply.headers_mut().insert(hyper::header::RETRY_AFTER, value.clone());
            reply.headers_mut().insert("x-ratelimit-reset", value);
            return Err(Box::new(reply));
        }
        Ok(source)
    }

    async fn batch(&self, bytes: &[u8], request: Sent<'_>) -> (Reply, Option<Source>) {
        let body: BatchBody<'_> = match serde_json::from_slice(bytes) {
            Ok(b) => b,
            Err(e) => {
                return (self.refuse(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid JSON: {e}")), None);
            }
        };
        let source = match self.source_for(request.header_key.or(body.write_key), request.origin) {
            Ok(s) => s,
            Err(refused) => return (*refused, None),
        };
        if let Some(i) = body.batch.iter().position(|raw| raw.get().len() > self.max_event_bytes) {
            let message = format!("batch[{i}] exceeds {} bytes", self.max_event_bytes);
            return (self.refuse(StatusCode::BAD_REQUEST, "event_too_large", message), Some(source));
        }
        let received_at = request.received_at;
        let meta = BatchMeta {
            sent_at: body.sent_at.as_deref(),
            context: body.context.as_ref(),
            integrations: body.integrations.as_ref(),
        };
        let mut accepted = Vec::with_capacity(body.batch.len());
        for (i, raw) in body.batch.iter().enumerate() {
            let event = normalize::normalize(raw.get(), None, &meta, received_at, &source.name);
            self.tally(&source, i, event, &mut accepted);
        }
        (self.accept(&source, accepted).await, Some(source))
    }

    async fn single(&self, kind: EventType, bytes: &[u8], request: Sent<'_>) -> (Reply, Option<Source>) {
        let invalid = |message: String| (self.refuse(StatusCode::BAD_REQUEST, "invalid_json", message), None);
        if bytes.len() > self.max_event_bytes {
            let message = format!("event exceeds {} bytes", self.max_event_bytes);
            return (self.refuse(StatusCode::BAD_REQUEST, "event_too_large", message), None);
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return invalid(format!("invalid JSON: {e}")),
        };
        let body_key = match serde_json::from_str::<KeyOnly>(text) {
            Ok(k) => k.write_key,
            Err(e) if e.is_data() => return invalid("body must be a JSON object".into()),
            Err(e) => return invalid(format!("invalid JSON: {e}")),
        };
        let source = match self.source_for(request.header_key.or(body_key), request.origin) {
            Ok(s) => s,
            Err(refused) => return (*refused, None),
        };
        let mut accepted = Vec::with_capacity(1);
        let event = normalize::normalize(text, Some(kind), &BatchMeta::default(), request.received_at, &source.name);
        self.tally(&source, 0, event, &mut accepted);
        (self.accept(&source, accepted).await, Some(source))
    }

    fn authenticate(&self, key: Option<String>) -> Option<Source> {
        let source = self.sources.load().get(key.as_deref()?)?.clone();
        source.stats.requests.inc();
        Some(source)
    }

    fn tally(
        &self,
        source: &Source,
        index: usize,
        event: Result<Envelope, normalize::Invalid>,
        accepted: &mut Vec<Arc<Envelope>>,
    ) {
        match event {
            Ok(e) => match &source.governance {
                None => accepted.push(Arc::new(e)),
                Some(g) => {
                    let governed = g.apply(&source.stats, e);
                    accepted.extend(governed.event.map(Arc::new));
                    accepted.extend(governed.generated.into_iter().map(Arc::new));
                }
            },
            Err(reason) => EventInvalid { source: &source.stats, index, reason: &reason }.emit(),
        }
    }

    async fn accept(&self, source: &Source, events: Vec<Arc<Envelope>>) -> Reply {
        let n = events.len();
        if n > 0 {
            match self.sink.submit(events).await {
                Ok(duplicates) => {
                    for event in &duplicates {
                        EventDeduplicated { source: &source.stats, message_id: &event.message_id }.emit();
                    }
                    EventsAccepted { source: &source.stats, count: (n - duplicates.len()) as u64 }.emit();
                }
                Err(e) => {
                    let message = e.to_string();
                    EventsRefused {
                        metrics: &self.metrics,
                        source: &source.name,
                        code: e.code,
                        message: &message,
                        count: n,
                    }
                    .emit();
                    return reply(StatusCode::SERVICE_UNAVAILABLE, error_body(e.code, &message));
                }
            }
        }
        reply(StatusCode::OK, Bytes::from_static(br#"{"success":true}"#))
    }

    fn refuse(&self, status: StatusCode, code: &str, message: String) -> Reply {
        RequestRefused { metrics: &self.metrics, status: status.as_u16(), code, message: &message }.emit();
        reply(status, error_body(code, &message))
    }
}

fn error_body(code: &str, message: &str) -> Bytes {
    let v = serde_json::json!({"success": false, "code": code, "message": message});
    Bytes::from(v.to_string())
}

fn reply(status: StatusCode, body: Bytes) -> Reply {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
