//! What the vendor mocks share: a loopback HTTP/1 server that hands each
//! request to an async handler, scriptable faults, and recorded requests,
//! put together as [`Mock`]; a vendor adds its API as an [`Api`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request a mock got, with the status it answered (`0`: the mock hung
/// up without answering).
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?` (empty when none).
    pub query: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    /// The body as sent (before any gzip inflation).
    pub raw_body: Bytes,
    /// The body, inflated when it came with `Content-Encoding: gzip`.
    pub body: Bytes,
    pub status: u16,
    /// What the mock answered, for assertions and failure messages.
    pub response: String,
    pub at: Instant,
}

impl MockRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The form fields of an `application/x-www-form-urlencoded` body,
    /// then the query string's.
    pub fn form(&self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        let is_form = self.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            fields.extend(parse_form(&String::from_utf8_lossy(&self.body)));
        }
        fields.extend(parse_form(&self.query));
        fields
    }

    /// One form field (first occurrence), see [`MockRequest::form`].
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The response body as JSON (`Null` when it is not JSON).
    pub fn response_json(&self) -> Value {
        serde_json::from_str(&self.response).unwrap_or(Value::Null)
    }
}

/// A failure a mock plays instead of (or around) its normal behaviour.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status with the vendor's usual error body; accept nothing.
    Status(u16),
    /// Answer exactly this; accept nothing.
    Reply { status: u16, headers: Vec<(String, String)>, body: String },
    /// Process the request normally (accepting its events) but answer this
    /// status: a 500/502/504 that did ingest, as the vendors warn can happen.
    IngestThen(u16),
    /// Wait this long, then process the request normally.
    Delay(Duration),
    /// Close the connection without an answer: a network error.
    Hangup,
}

impl Fault {
    /// `status` with a `Retry-After: secs` header and the given body.
    pub fn retry_after(status: u16, secs: u64, body: &str) -> Fault {
        Fault::Reply { status, headers: vec![("Retry-After".into(), secs.to_string())], body: body.into() }
    }
}

/// Queued faults per path, and a standing outage.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    queue: VecDeque<(String, Fault)>,
    outage: Option<(String, Fault)>,
}

impl Faults {
    pub(crate) fn push(&mut self, path: &str, n: usize, fault: Fault) {
        for _ in 0..n {
            self.queue.push_back((path.to_owned(), fault.clone()));
        }
    }

    pub(crate) fn set_outage(&mut self, path: &str, fault: Option<Fault>) {
        self.outage = fault.map(|f| (path.to_owned(), f));
    }

    /// The fault for a request to `path`, if any: the outage first, then the
    /// first queued fault for that path.
    pub(crate) fn take(&mut self, path: &str) -> Option<Fault> {
        if let Some((p, f)) = &self.outage
            && p == path
        {
            return Some(f.clone());
        }
        let at = self.queue.iter().position(|(p, _)| p == path)?;
        self.queue.remove(at).map(|(_, f)| f)
    }

    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }
}

/// What a handler does with a request.
pub enum Action {
    Reply { status: u16, headers: Vec<(String, String)>, body: String },
    Hangup,
}

impl Action {
    pub(crate) fn json(status: u16, body: &Value) -> Action {
        Action::Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> Action {
        Action::Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into(),
        }
    }
}

/// Starts a loopback server; `handler` gets every request (with the status
/// still 0) and returns what to answer.
async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(MockRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Action> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("addr");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let at = Instant::now();
                        let method = req.method().to_string();
                        let path = req.uri().path().to_owned();
                        let query = req.uri().query().unwrap_or("").to_owned();
                        let headers: HashMap<String, String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let raw_body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let body = match headers.get("content-encoding").map(String::as_str) {
                            Some("gzip") => {
                                let mut out = Vec::new();
                                match flate2::read::GzDecoder::new(&raw_body[..]).read_to_end(&mut out) {
                                    Ok(_) => Bytes::from(out),
                                    Err(_) => Bytes::new(),
                                }
                            }
                            _ => raw_body.clone(),
                        };
                        let rec = MockRequest {
                            method,
                            path,
                            query,
                            headers,
                            raw_body,
                            body,
                            status: 0,
                            response: String::new(),
                            at,
                        };
                        match handler(rec).await {
                            Action::Reply { status, headers, body } => {
                                let mut resp = hyper::Response::builder().status(status);
                                for (k, v) in headers {
                                    resp = resp.header(k, v);
                                }
                                Ok(resp.body(Full::new(Bytes::from(body))).expect("response"))
                            }
                            Action::Hangup => Err(std::io::Error::other("mock hangs up")),
                        }
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// What a vendor mock adds to [`Mock`]: the state of its API and how it
/// answers.
pub trait Api: Send + 'static {
    /// The path [`Mock::fail_next`] and [`Mock::outage`] aim at.
    const PATH: &'static str;

    /// The answer to a request that reaches none of the APIs (an unknown
    /// path, a method the path does not take), or `None` when it reaches
    /// one. Faults other than [`Fault::Delay`] play first.
    fn refuse(&self, _req: &MockRequest) -> Option<Action> {
        None
    }

    /// Processes a request that reaches an API: accepts what it carries
    /// and says what to answer.
    fn process(&mut self, req: &MockRequest) -> Action;

    /// The vendor's error answer with `status`, for [`Fault::Status`].
    fn error(&self, status: u16) -> Action;

    /// The answer after a request was processed under
    /// [`Fault::IngestThen`] (by default [`Api::error`]).
    fn ingested_error(&self, status: u16) -> Action {
        self.error(status)
    }
}

/// Everything a mock keeps behind its one lock.
struct Shared<A> {
    faults: Faults,
    requests: Vec<MockRequest>,
    api: A,
}

/// A running vendor mock: a loopback server playing the vendor's API `A`,
/// with scriptable faults and every request recorded. Cloning shares the
/// server.
pub struct Mock<A> {
    pub addr: SocketAddr,
    state: Arc<Mutex<Shared<A>>>,
}

impl<A> Clone for Mock<A> {
    fn clone(&self) -> Self {
        Mock { addr: self.addr, state: self.state.clone() }
    }
}

/// The vendor state of a [`Mock`], locked.
pub(crate) struct ApiGuard<'a, A>(MutexGuard<'a, Shared<A>>);

impl<A> std::ops::Deref for ApiGuard<'_, A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.0.api
    }
}

impl<A> std::ops::DerefMut for ApiGuard<'_, A> {
    fn deref_mut(&mut self) -> &mut A {
        &mut self.0.api
    }
}

impl<A: Api> Mock<A> {
    /// Starts a mock whose API starts as `api`.
    pub(crate) async fn serve(api: A) -> Mock<A> {
        let state = Arc::new(Mutex::new(Shared { faults: Faults::default(), requests: Vec::new(), api }));
        let s = state.clone();
        let addr = serve(move |req| {
            let s = s.clone();
            async move { handle(&s, req).await }
        })
        .await;
        Mock { addr, state }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<A>> {
        self.state.lock().expect("mock lock")
    }

    /// The vendor state, locked.
    pub(crate) fn api(&self) -> ApiGuard<'_, A> {
        ApiGuard(self.lock())
    }

    /// The base URL, for the plugin's `endpoint` setting and `allow_http`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `n` requests to the main path ([`Api::PATH`]) play `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.fail_next_at(A::PATH, n, fault);
    }

    /// The next `n` requests to `path` play `fault`.
    pub fn fail_next_at(&self, path: &str, n: usize, fault: Fault) {
        self.lock().faults.push(path, n, fault);
    }

    /// Every request to the main path plays `fault` until
    /// [`Mock::recover`].
    pub fn outage(&self, fault: Fault) {
        self.lock().faults.set_outage(A::PATH, Some(fault));
    }

    /// Ends an outage.
    pub fn recover(&self) {
        self.lock().faults.set_outage(A::PATH, None);
    }

    /// Queued faults not yet played.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.pending()
    }

    /// Every request so far, to any path, in arrival order.
    pub fn requests(&self) -> Vec<MockRequest> {
        self.lock().requests.clone()
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<MockRequest> {
        self.lock().requests.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// The requests answered 2xx.
    pub fn accepted_requests(&self) -> Vec<MockRequest> {
        self.lock().requests.iter().filter(|r| (200..300).contains(&r.status)).cloned().collect()
    }
}

/// Plays the request's fault, or hands the request to the API; records
/// it with what was answered.
async fn handle<A: Api>(state: &Mutex<Shared<A>>, mut req: MockRequest) -> Action {
    let fault = state.lock().expect("lock").faults.take(&req.path);
    if let Some(Fault::Delay(d)) = &fault {
        tokio::time::sleep(*d).await;
    }
    let mut s = state.lock().expect("lock");
    let action = match &fault {
        Some(Fault::Status(status)) => s.api.error(*status),
        Some(Fault::Reply { status, headers, body }) => {
            Action::Reply { status: *status, headers: headers.clone(), body: body.clone() }
        }
        Some(Fault::Hangup) => Action::Hangup,
        _ => match s.api.refuse(&req) {
            Some(refused) => refused,
            None => {
                let action = s.api.process(&req);
                match fault {
                    Some(Fault::IngestThen(status)) => s.api.ingested_error(status),
                    _ => action,
                }
            }
        },
    };
    match &action {
        Action::Reply { status, body, .. } => {
            req.status = *status;
            req.response = body.clone();
        }
        Action::Hangup => req.status = 0,
    }
    s.requests.push(req);
    action
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space,
/// `%XX` a byte; pairs split on `&`).
pub fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let f = parse_form("api_key=k%201&identification=%5B%7B%22a%22%3A1%7D%5D&x=a+b&bad=%zz&end=%4");
        assert_eq!(f[0], ("api_key".into(), "k 1".into()));
        assert_eq!(f[1], ("identification".into(), r#"[{"a":1}]"#.into()));
        assert_eq!(f[2], ("x".into(), "a b".into()));
        assert_eq!(f[3], ("bad".into(), "%zz".into()));
        assert_eq!(f[4], ("end".into(), "%4".into()));
    }
}
