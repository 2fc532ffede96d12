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
use crate::telemetry::{EventDeduplicated, EventInvalid, EventsAccepted, EventsRefused, InternalEvent, RequestRefused};

/// A source: a write key and its counters.
#[derive(Clone)]
pub struct Source {
    pub name: Arc<str>,
    pub stats: Arc<SourceStats>,
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
}

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
            let service = service_fn(move |req| {
                let this = this.clone();
                async move { Ok::<_, Infallible>(this.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed with error");
                }
            });
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

    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().trim_end_matches('/');
        let route = match path {
            "/v1/batch" | "/v1/import" => None,
            p => match p.strip_prefix("/v1/").and_then(EventType::parse) {
                Some(t) => Some(t),
                None => {
                    return self.refuse(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {path}"));
                }
            },
        };
        if req.method() != Method::POST {
            return self.refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST".into());
        }
        let (parts, incoming) = req.into_parts();
        let bytes = match body::read(&parts.headers, incoming, self.max_request_bytes).await {
            Ok(b) => b,
            Err(e @ body::BodyError::TooLarge(_)) => {
                return self.refuse(StatusCode::BAD_REQUEST, "payload_too_large", e.to_string());
            }
            Err(e) => return self.refuse(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
        };
        let header_key = body::basic_auth_key(&parts.headers);
        let received_at = chrono::Utc::now();
        match route {
            None => self.batch(&bytes, header_key, received_at).await,
            Some(kind) => self.single(kind, &bytes, header_key, received_at).await,
        }
    }

    async fn batch(
        &self,
        bytes: &[u8],
        header_key: Option<String>,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Reply {
        let body: BatchBody<'_> = match serde_json::from_slice(bytes) {
            Ok(b) => b,
            Err(e) => {
                return self.refuse(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid JSON: {e}"));
            }
        };
        let Some(source) = self.authenticate(header_key.or(body.write_key)) else {
            return self.refuse(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown write key".into());
        };
        if let Some(i) = body.batch.iter().position(|raw| raw.get().len() > self.max_event_bytes) {
            return self.refuse(
                StatusCode::BAD_REQUEST,
                "event_too_large",
                format!("batch[{i}] exceeds {} bytes", self.max_event_bytes),
            );
        }
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
        self.accept(&source, accepted).await
    }

    async fn single(
        &self,
        kind: EventType,
        bytes: &[u8],
        header_key: Option<String>,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Reply {
        if bytes.len() > self.max_event_bytes {
            return self.refuse(
                StatusCode::BAD_REQUEST,
                "event_too_large",
                format!("event exceeds {} bytes", self.max_event_bytes),
            );
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return self.refuse(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid JSON: {e}")),
        };
        let body_key = match serde_json::from_str::<KeyOnly>(text) {
            Ok(k) => k.write_key,
            Err(e) if e.is_data() => {
                return self.refuse(StatusCode::BAD_REQUEST, "invalid_json", "body must be a JSON object".into());
            }
            Err(e) => return self.refuse(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid JSON: {e}")),
        };
        let Some(source) = self.authenticate(header_key.or(body_key)) else {
            return self.refuse(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown write key".into());
        };
        let mut accepted = Vec::with_capacity(1);
        let event = normalize::normalize(text, Some(kind), &BatchMeta::default(), received_at, &source.name);
        self.tally(&source, 0, event, &mut accepted);
        self.accept(&source, accepted).await
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
            Ok(e) => accepted.push(Arc::new(e)),
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
