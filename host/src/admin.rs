//! The admin listener: `/metrics` (Prometheus), `/health`, and the admin API
//! behind a bearer token.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Serves the admin listener until `shutdown` turns true.
///
/// # Errors
///
/// Never in practice; accept errors are logged and retried.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    token: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let token: Option<Arc<str>> = token.map(Arc::from);
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            () = &mut stop => return Ok(()),
        };
        let (metrics, token) = (metrics.clone(), token.clone());
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let (metrics, token) = (metrics.clone(), token.clone());
            async move { Ok::<_, Infallible>(route(&req, &metrics, token.as_deref())) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn route(req: &Request<hyper::body::Incoming>, metrics: &Metrics, token: Option<&str>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", metrics.render()),
        "/health" | "/ready" => text(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into()),
        _ => {
            let presented = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match (token, presented) {
                (Some(t), Some(p)) if constant_time_eq(t.as_bytes(), p.trim().as_bytes()) => {
                    text(StatusCode::NOT_FOUND, "application/json", r#"{"error":"not found"}"#.into())
                }
                _ => text(StatusCode::UNAUTHORIZED, "application/json", r#"{"error":"admin token required"}"#.into()),
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}
