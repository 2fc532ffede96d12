//! The tracking API as each SDK calls it, through the real binary: golden
//! requests built from the SDKs' sources (`SDK-WIRE.md` in the reference
//! notes) for the clients that cannot run here, CORS as a browser does it,
//! and the settings endpoints SDKs fetch before they send.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Config, Receiver, Switchyard, eventually, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "wk_wire";
const SHOP: &str = "https://shop.example.com";

async fn start(receiver: &Receiver, cors: &str) -> Switchyard {
    let cfg = Config::new()
        .source("web", KEY)
        .webhook("hook", &format!("{}/hook", receiver.origin()), "batch = { max_events = 50, linger_ms = 5 }")
        .build()
        .replace(&format!("write_key = \"{KEY}\"\n"), &format!("write_key = \"{KEY}\"\n{cors}\n"));
    Switchyard::start(&cfg).await
}

fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Sends `head` (request line and headers, CRLF-separated, without the
/// blank line) and `body` as they are, over a fresh connection; returns
/// the status, the headers and the body.
async fn raw(sy: &Switchyard, head: &str, body: &[u8]) -> (u16, String, Value) {
    let addr = sy.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
    req.extend_from_slice(body);
    stream.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if header(headers, "transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        // One chunk: its size line, the JSON, then the end.
        body.lines().nth(1).unwrap_or("").to_owned()
    } else {
        body.to_owned()
    };
    (status, headers.to_owned(), serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn event(kind: &str, id: &str) -> Value {
    let mut e = json!({"type": kind, "messageId": id, "userId": "u1", "anonymousId": "a1"});
    match kind {
        "track" => e["event"] = json!("Clicked"),
        "alias" => e["previousId"] = json!("a1"),
        "group" => e["groupId"] = json!("g1"),
        _ => {}
    }
    e
}

/// Every request shape a Segment SDK sends is accepted and delivered once.
#[tokio::test]
async fn golden_requests_of_every_sdk_are_accepted_and_delivered() {
    let receiver = Receiver::always(200).await;
    let sy = start(&receiver, "").await;
    let mut sent = Vec::new();

    // analytics.js, standard mode: one event per request, first letter of
    // the type, text/plain, the key in the body.
    for (path, kind) in [
        ("/v1/t", "track"),
        ("/v1/i", "identify"),
        ("/v1/p", "page"),
        ("/v1/g", "group"),
        ("/v1/a", "alias"),
        ("/v1/s", "screen"),
    ] {
        let id = format!("ajs-{kind}");
        let mut body = event(kind, &id);
        body["writeKey"] = json!(KEY);
        let body = body.to_string();
        let head = format!("POST {path} HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {}", body.len());
        let (status, _, reply) = raw(&sy, &head, body.as_bytes()).await;
        assert_eq!((status, &reply), (200, &json!({"success": true})), "{path}");
        sent.push(id);
    }
    // analytics-kotlin: gzip, text/plain, chunked, the key only in the body.
    let body = json!({"batch": [event("track", "kotlin-1"), event("screen", "kotlin-2")], "sentAt": "2026-12-01T10:00:00Z", "writeKey": KEY});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let mut chunked = Vec::new();
    for chunk in gz.chunks(40) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /v1/b HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nUser-Agent: analytics-kotlin/1.24.1";
    let (status, _, reply) = raw(&sy, head, &chunked).await;
    assert_eq!((status, &reply), (200, &json!({"success": true})), "kotlin");
    sent.extend(["kotlin-1".to_owned(), "kotlin-2".to_owned()]);
    // analytics-swift: /v1/b, JSON, the key only in the body.
    let body = format!(
        "{{ \"batch\": [{}],\"sentAt\":\"2026-12-01T10:00:00.000Z\",\"writeKey\":\"{KEY}\"}}",
        event("identify", "swift-1")
    );
    let head = format!(
        "POST /v1/b HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}",
        body.len()
    );
    assert_eq!(raw(&sy, &head, body.as_bytes()).await.0, 200, "swift");
    sent.push("swift-1".into());
    // analytics-ruby: /v1/import with Basic auth; analytics-java:
    // /v1/import/ with Basic auth and the key in the body too.
    for (path, id, with_key) in [("/v1/import", "ruby-1", false), ("/v1/import/", "java-1", true)] {
        let mut body = json!({"batch": [event("track", id)], "sentAt": "2026-12-01T10:00:00Z"});
        if with_key {
            body["writeKey"] = json!(KEY);
            body["context"] = json!({"library": {"name": "analytics-java", "version": "3.5.5"}});
        }
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}",
            basic(KEY),
            body.len()
        );
        let (status, _, reply) = raw(&sy, &head, body.as_bytes()).await;
        assert_eq!((status, &reply), (200, &json!({"success": true})), "{path}");
        sent.push(id.into());
    }
    // analytics-go: `"context": null` in the batch.
    let body = json!({"messageId": "b1", "sentAt": "2026-12-01T10:00:00Z", "batch": [event("track", "go-1")], "context": null}).to_string();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}",
        basic(KEY),
        body.len()
    );
    assert_eq!(raw(&sy, &head, body.as_bytes()).await.0, 200, "go");
    sent.push("go-1".into());
    // RudderStack's beacon: the key in the query, text/plain.
    let body = json!({"batch": [event("page", "rs-beacon-1")], "sentAt": "2026-12-01T10:00:00Z"}).to_string();
    let head = format!(
        "POST /beacon/v1/batch?writeKey={KEY} HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {}",
        body.len()
    );
    assert_eq!(raw(&sy, &head, body.as_bytes()).await.0, 200, "beacon");
    sent.push("rs-beacon-1".into());
    // The browser SDK's own metrics: accepted, counted, not delivered.
    let body = r#"{"series":[{"type":"Counter","metric":"analytics_js.invoke","value":1,"tags":{}}]}"#;
    let head = format!("POST /v1/m HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {}", body.len());
    assert_eq!(raw(&sy, &head, body.as_bytes()).await.0, 200, "/v1/m");

    eventually(WAIT, "every golden request delivered", || {
        let got = receiver.message_ids();
        sent.iter().all(|id| got.contains(id))
    })
    .await;
    let got = receiver.message_ids();
    for id in &sent {
        assert_eq!(got.iter().filter(|g| *g == id).count(), 1, "{id} delivered once");
    }
    assert_eq!(got.len(), sent.len(), "nothing else (the SDK metrics are not events): {got:?}");
    assert_eq!(sy.metric("switchyard_sdk_metrics_requests_total").await, 1);
}

/// The settings each SDK fetches before sending: analytics.js's
/// `/v1/projects/{key}/settings`, the mobile SDKs' `/projects/{key}/settings`,
/// RudderStack's `/sourceConfig/`; each points the SDK at this server.
#[tokio::test]
async fn the_settings_endpoints_point_every_sdk_here() {
    let receiver = Receiver::always(200).await;
    let sy = start(&receiver, "").await;
    let host = sy.url("").trim_start_matches("http://").to_owned();
    for path in [format!("/v1/projects/{KEY}/settings"), format!("/projects/{KEY}/settings")] {
        let (status, body) = http(hyper::Method::GET, &sy.url(&path), &[], Vec::new()).await;
        let s: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{path}: {s}");
        let io = &s["integrations"]["Segment.io"];
        assert_eq!(io["apiKey"], KEY);
        assert_eq!(io["apiHost"], format!("{host}/v1"), "the request's host: {s}");
        assert_eq!(io["protocol"], "http");
        assert_eq!(s["metrics"]["sampleRate"], 0);
    }
    let (status, body) = http(hyper::Method::GET, &sy.url("/v1/projects/nope/settings"), &[], Vec::new()).await;
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, err["code"].as_str()), (404, Some("unknown_write_key")), "{err}");
    let (status, body) =
        http(hyper::Method::GET, &sy.url(&format!("/sourceConfig/?p=npm&v=3.31.6&writeKey={KEY}")), &[], Vec::new())
            .await;
    let c: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, c["source"]["id"].as_str()), (200, Some("web")), "{c}");

    // Behind a proxy, `public_url` is what the SDKs are told.
    let cfg = Config::new()
        .server("public_url = \"https://ingest.example.com/segment\"")
        .source("web", KEY)
        .webhook("hook", &format!("{}/hook", receiver.origin()), "")
        .build();
    let proxied = Switchyard::start(&cfg).await;
    let (_, body) =
        http(hyper::Method::GET, &proxied.url(&format!("/v1/projects/{KEY}/settings")), &[], Vec::new()).await;
    let s: Value = serde_json::from_slice(&body).unwrap();
    let io = &s["integrations"]["Segment.io"];
    assert_eq!(
        (io["apiHost"].as_str(), io["protocol"].as_str()),
        (Some("ingest.example.com/segment/v1"), Some("https"))
    );
}

/// CORS as a browser does it: a preflight, then the request; every answer
/// to an allowed page carries `Access-Control-Allow-Origin`, errors too; a
/// page on an origin the source does not allow gets nothing accepted.
#[tokio::test]
async fn cors_lets_allowed_pages_in_and_keeps_others_out() {
    let receiver = Receiver::always(200).await;
    let sy = start(&receiver, &format!("cors = {{ allowed_origins = [\"{SHOP}\"] }}")).await;

    let head = format!(
        "OPTIONS /v1/t HTTP/1.1\r\nOrigin: {SHOP}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization,content-type,x-retry-count"
    );
    let (status, headers, _) = raw(&sy, &head, b"").await;
    assert_eq!(status, 204, "{headers}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(SHOP));
    assert_eq!(header(&headers, "access-control-allow-headers"), Some("authorization,content-type,x-retry-count"));
    assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{headers}");
    assert!(header(&headers, "access-control-max-age").is_some(), "{headers}");

    let body = json!({"type": "track", "event": "Viewed", "userId": "u1", "messageId": "from-shop", "writeKey": KEY})
        .to_string();
    let head = format!(
        "POST /v1/t HTTP/1.1\r\nOrigin: {SHOP}\r\nAuthorization: {}\r\nContent-Type: text/plain\r\nContent-Length: {}",
        basic(KEY),
        body.len()
    );
    let (status, headers, reply) = raw(&sy, &head, body.as_bytes()).await;
    assert_eq!((status, &reply), (200, &json!({"success": true})));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(SHOP));
    assert!(header(&headers, "access-control-expose-headers").is_some_and(|h| h.contains("Retry-After")));
    // An error to an allowed page carries it too, or the SDK cannot read it.
    let head = format!("POST /v1/t HTTP/1.1\r\nOrigin: {SHOP}\r\nContent-Type: text/plain\r\nContent-Length: 5");
    let (status, headers, reply) = raw(&sy, &head, b"{nope").await;
    assert_eq!((status, reply["code"].as_str()), (400, Some("invalid_json")));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(SHOP));
    // The settings GET too.
    let head = format!("GET /v1/projects/{KEY}/settings HTTP/1.1\r\nOrigin: {SHOP}");
    let (status, headers, _) = raw(&sy, &head, b"").await;
    assert_eq!((status, header(&headers, "access-control-allow-origin")), (200, Some(SHOP)));

    // Another origin: the preflight is refused, and the request itself
    // (as a simple request, with no preflight) accepts nothing.
    let evil = "https://evil.example.com";
    let head = format!("OPTIONS /v1/t HTTP/1.1\r\nOrigin: {evil}\r\nAccess-Control-Request-Method: POST");
    let (status, headers, _) = raw(&sy, &head, b"").await;
    assert_eq!((status, header(&headers, "access-control-allow-origin")), (403, None));
    let body = json!({"type": "track", "event": "Viewed", "userId": "u1", "messageId": "from-evil", "writeKey": KEY})
        .to_string();
    let head =
        format!("POST /v1/t HTTP/1.1\r\nOrigin: {evil}\r\nContent-Type: text/plain\r\nContent-Length: {}", body.len());
    let (status, headers, reply) = raw(&sy, &head, body.as_bytes()).await;
    assert_eq!((status, reply["code"].as_str()), (403, Some("origin_not_allowed")), "{reply}");
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    eventually(WAIT, "the allowed page's event delivered", || receiver.message_ids().contains(&"from-shop".to_owned()))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!receiver.message_ids().contains(&"from-evil".to_owned()), "nothing from the other origin");
    // Server SDKs send no Origin: no CORS headers, nothing refused.
    let body = json!({"batch": [event("track", "server-1")]}).to_string();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}",
        basic(KEY),
        body.len()
    );
    let (status, headers, _) = raw(&sy, &head, body.as_bytes()).await;
    assert_eq!((status, header(&headers, "access-control-allow-origin")), (200, None));
}

/// A source over its rate limit gets 429 with `Retry-After` and
/// `X-RateLimit-Reset`; a client that waits as told gets every event in,
/// and each is delivered once.
#[tokio::test]
async fn over_the_rate_limit_a_source_gets_429_and_loses_nothing() {
    let receiver = Receiver::always(200).await;
    let sy = start(&receiver, "rate_limit = { requests_per_second = 2, burst = 2 }").await;
    let mut limited = 0;
    for i in 0..6 {
        let id = format!("rl-{i}");
        loop {
            let body = json!({"batch": [event("track", &id)]}).to_string();
            let head = format!(
                "POST /v1/batch HTTP/1.1\r\nAuthorization: {}\r\nOrigin: {SHOP}\r\nContent-Type: application/json\r\nContent-Length: {}",
                basic(KEY),
                body.len()
            );
            let (status, headers, reply) = raw(&sy, &head, body.as_bytes()).await;
            if status == 200 {
                break;
            }
            assert_eq!((status, reply["code"].as_str()), (429, Some("rate_limited")), "{reply}");
            let secs: u64 = header(&headers, "retry-after").and_then(|s| s.parse().ok()).expect("Retry-After");
            assert_eq!(header(&headers, "x-ratelimit-reset"), Some(secs.to_string().as_str()));
            assert_eq!(header(&headers, "access-control-allow-origin"), Some(SHOP), "a page can read the 429");
            assert!((1..=2).contains(&secs), "{secs}");
            limited += 1;
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
    }
    assert!(limited >= 1, "six requests at once exceed 2/s with a burst of 2");
    assert_eq!(sy.metric("switchyard_source_requests_rate_limited_total{source=\"web\"}").await, limited);
    let start = std::time::Instant::now();
    while !(0..6).all(|i| receiver.message_ids().contains(&format!("rl-{i}"))) {
        assert!(start.elapsed() < WAIT, "not every event delivered: {:?}\n{}", receiver.message_ids(), sy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.message_ids().len(), 6, "each once");
}

/// analytics-ruby and analytics-java fill a batch up to 512,000 bytes of
/// events and then add the envelope: such a batch is accepted whole.
#[tokio::test]
async fn a_full_512000_byte_batch_of_the_ruby_and_java_sdks_is_accepted() {
    let receiver = Receiver::always(200).await;
    let sy = start(&receiver, "").await;
    let mut events = Vec::new();
    let mut size: usize = 0;
    let mut i = 0;
    while size < 512_000 {
        let mut e = event("track", &format!("full-{i}"));
        let room = (512_000 - size).min(30_000);
        e["properties"] = json!({"pad": "p".repeat(room.saturating_sub(200).max(1))});
        size += e.to_string().len() + 1;
        events.push(e);
        i += 1;
    }
    let body = json!({"batch": events, "sentAt": "2026-12-01T10:00:00Z", "writeKey": KEY, "context": {"library": {"name": "analytics-java"}}, "sequence": 1}).to_string();
    assert!(body.len() > 512_000, "{}", body.len());
    let head = format!(
        "POST /v1/import/ HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}",
        basic(KEY),
        body.len()
    );
    let (status, _, reply) = raw(&sy, &head, body.as_bytes()).await;
    assert_eq!((status, &reply), (200, &json!({"success": true})), "{} bytes", body.len());
    eventually(WAIT, "every event of the full batch delivered", || receiver.message_ids().len() == i).await;
}
