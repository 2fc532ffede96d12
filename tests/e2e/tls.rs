//! TLS on the tracking listener, as the mobile SDKs need it (they only
//! speak `https://`): a certificate made with `openssl`, a client that
//! trusts only it, and the pair replaced while the server runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use switchyard_tests::{Config, Receiver, Switchyard, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "wk_tls";

/// A self-signed certificate for 127.0.0.1, and its key, as PEM files.
fn make_cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        // An end-entity certificate trusted as it is (webpki refuses a CA
        // certificate serving as the server's own).
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// POSTs `body` to `path` over TLS, trusting only `ca`; the status, or the
/// handshake's error.
async fn post_tls(port: u16, ca: &Path, path: &str, body: &str) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nUser-Agent: analytics-ios/1.9.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {text:?}"))
}

fn swift_batch(id: &str) -> String {
    json!({"batch": [{"type": "track", "event": "Tapped", "userId": "u1", "messageId": id}], "sentAt": "2026-12-01T10:00:00Z", "writeKey": KEY}).to_string()
}

#[tokio::test]
async fn the_tracking_api_over_tls_with_the_certificate_replaced_live() {
    let receiver = Receiver::always(200).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "first");
    let (live_cert, live_key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let cfg = Config::new()
        .server("watch_debounce_ms = 100")
        .server(&format!("tls = {{ cert = \"{}\", key = \"{}\" }}", live_cert.display(), live_key.display()))
        .source("ios", KEY)
        .webhook("hook", &format!("{}/hook", receiver.origin()), "batch = { max_events = 10, linger_ms = 5 }")
        .build();
    let sy = Switchyard::start(&cfg).await;
    let port: u16 = sy.url("").rsplit(':').next().unwrap().parse().unwrap();

    assert_eq!(post_tls(port, &cert, "/v1/b", &swift_batch("tls-1")).await, Ok(200));
    eventually(WAIT, "the event sent over TLS delivered", || receiver.message_ids().contains(&"tls-1".to_owned()))
        .await;
    // Plain HTTP on the TLS port gets nothing through.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body = swift_batch("plain-1");
    let req =
        format!("POST /v1/b HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    plain.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "plain HTTP was served");

    // A new pair, renamed into place: new handshakes use it.
    let (next_cert, next_key) = make_cert(dir.path(), "second");
    switchyard_tests::replace_file(&live_key, &std::fs::read(&next_key).unwrap());
    switchyard_tests::replace_file(&live_cert, &std::fs::read(&next_cert).unwrap());
    let start = Instant::now();
    loop {
        match post_tls(port, &next_cert, "/v1/b", &swift_batch("tls-2")).await {
            Ok(200) => break,
            other => {
                assert!(start.elapsed() < WAIT, "the new certificate was never served: {other:?}\n{}", sy.logs());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(post_tls(port, &cert, "/v1/b", &swift_batch("tls-3")).await.is_err(), "the old certificate is gone");
    eventually(WAIT, "delivered", || receiver.message_ids().contains(&"tls-2".to_owned())).await;
    assert!(!receiver.message_ids().contains(&"plain-1".to_owned()));
}
