//! TLS on the tracking listener (`server.tls = { cert, key }`), for the
//! mobile SDKs, which only speak `https://`.
//!
//! The certificate chain and key are PEM files, read with rustls (ring):
//! TLS 1.2 and 1.3, HTTP/1.1 by ALPN. They are read again on every reload
//! — the watcher reloads when either file changes — and a new handshake
//! uses the new ones; connections already open keep theirs. A pair that
//! cannot be read refuses the reload, and the old pair stays.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS settings new handshakes use; replaced whole on a reload.
pub type TlsConfigs = Arc<ArcSwap<rustls::ServerConfig>>;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("server.tls.key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("server.tls: the key does not fit the certificate, or is of a kind rustls does not take: {0}")]
    Mismatch(String),
}

/// Reads the PEM certificate chain at `cert` and the private key at `key`.
///
/// # Errors
///
/// [`TlsError`] naming the file and what is wrong with it.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert { path: cert.display().to_string(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.display().to_string(), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let e = load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("server.tls.cert") && e.contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
