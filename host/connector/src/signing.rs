//! Publisher signatures: a detached minisign (Ed25519) signature over the
//! exact bytes of `connector.toml`, which pins the component's SHA-256, so
//! one signature covers the whole package. Its trusted comment is the
//! package's `id@version`. Verification is offline.

use std::io::Cursor;

/// The file name of a package's signature.
pub const SIGNATURE_FILE: &str = "connector.toml.minisig";

/// Why signing or verifying failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("not a minisign public key: {0}")]
    BadPublicKey(String),
    #[error("not a minisign secret key (or one protected by a password, which this command cannot ask for): {0}")]
    BadSecretKey(String),
    #[error("not a minisign signature: {0}")]
    Malformed(String),
    #[error("signed by key {key_id}, which [trust] does not list")]
    UnknownKey { key_id: String },
    #[error("signed by key {key_id} ({signer}), which [trust] allows only for ids starting with {allowed}")]
    NotAllowedFor { key_id: String, signer: String, allowed: String },
    #[error("the signature does not match the manifest: it was changed after signing, or signed by another key")]
    Mismatch,
    #[error("the signature is for `{signed}`, not `{package}`")]
    OtherPackage { signed: String, package: String },
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A new key pair, as the text of the files `keygen` writes: the secret
/// key (unencrypted: keep it out of the repository) and the public key.
///
/// # Errors
///
/// When the system's random source fails.
pub fn keygen(comment: &str) -> Result<(String, String), SignatureError> {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| SignatureError::Sign(e.to_string()))?;
    let secret = pair
        .sk
        .to_box(Some(&format!("{comment} secret key")))
        .map_err(|e| SignatureError::Sign(e.to_string()))?
        .into_string();
    let public = pair.pk.to_box().map_err(|e| SignatureError::Sign(e.to_string()))?.into_string();
    Ok((secret, public))
}

/// Signs `manifest` (its bytes) with the secret key in `secret_key_text`;
/// the trusted comment is `reference` (`id@version`). Returns the
/// signature file's text.
///
/// # Errors
///
/// [`SignatureError::BadSecretKey`] when the key cannot be read.
pub fn sign(manifest: &[u8], secret_key_text: &str, reference: &str) -> Result<String, SignatureError> {
    let sk = minisign::SecretKeyBox::from_string(secret_key_text)
        .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
        .map_err(|e| SignatureError::BadSecretKey(e.to_string()))?;
    let pk = minisign::PublicKey::from_secret_key(&sk).ok();
    let sig = minisign::sign(
        pk.as_ref(),
        &sk,
        Cursor::new(manifest),
        Some(reference),
        Some(&format!("signature of {reference}")),
    )
    .map_err(|e| SignatureError::Sign(e.to_string()))?;
    Ok(sig.into_string())
}

/// A public key an operator trusts, and for which ids.
#[derive(Clone)]
pub struct TrustedKey {
    /// Who it belongs to, for messages (`Amplitude`).
    pub name: String,
    /// Id prefixes it may sign (`com.amplitude.`); `*` for any.
    pub ids: Vec<String>,
    key: minisign::PublicKey,
    key_id: String,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey").field("name", &self.name).field("key_id", &self.key_id).finish()
    }
}

impl TrustedKey {
    /// A key from its base64 form (the second line of a `.pub` file) or
    /// the whole `.pub` file's text.
    ///
    /// # Errors
    ///
    /// [`SignatureError::BadPublicKey`].
    pub fn new(name: &str, key: &str, ids: Vec<String>) -> Result<TrustedKey, SignatureError> {
        let key = key.trim();
        let parsed = if key.contains('\n') {
            minisign::PublicKeyBox::from_string(key).and_then(minisign::PublicKeyBox::into_public_key)
        } else {
            minisign::PublicKey::from_base64(key)
        }
        .map_err(|e| SignatureError::BadPublicKey(e.to_string()))?;
        let key_id = key_id(parsed.keynum());
        Ok(TrustedKey { name: name.to_owned(), ids, key: parsed, key_id })
    }

    /// The key's id, as minisign prints it (16 hex digits).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn allows(&self, id: &str) -> bool {
        self.ids.iter().any(|p| p == "*" || id.starts_with(p.as_str()) || id == p.trim_end_matches('.'))
    }
}

/// Who signed a package, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_id: String,
    /// The trusted key's name.
    pub name: String,
}

/// The key id a signature was made with (whether or not it is trusted).
///
/// # Errors
///
/// [`SignatureError::Malformed`].
pub fn signature_key_id(signature_text: &str) -> Result<String, SignatureError> {
    let sig =
        minisign::SignatureBox::from_string(signature_text).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    Ok(key_id(sig.keynum()))
}

/// Verifies `signature_text` over `manifest` for package `reference`
/// (`id@version`, of id `id`) against `trusted`.
///
/// # Errors
///
/// Which of [`SignatureError`]'s cases it is: an unknown key, a key not
/// allowed for this id, a signature that does not match, or one made for
/// another package.
pub fn verify(
    manifest: &[u8],
    signature_text: &str,
    id: &str,
    reference: &str,
    trusted: &[TrustedKey],
) -> Result<Signer, SignatureError> {
    let sig =
        minisign::SignatureBox::from_string(signature_text).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let signed_by = key_id(sig.keynum());
    let keys: Vec<&TrustedKey> = trusted.iter().filter(|k| k.key_id == signed_by).collect();
    let Some(key) = keys.iter().find(|k| k.allows(id)) else {
        return Err(match keys.first() {
            Some(k) => {
                SignatureError::NotAllowedFor { key_id: signed_by, signer: k.name.clone(), allowed: k.ids.join(", ") }
            }
            None => SignatureError::UnknownKey { key_id: signed_by },
        });
    };
    minisign::verify(&key.key, &sig, Cursor::new(manifest), true, false, false)
        .map_err(|_| SignatureError::Mismatch)?;
    let signed = sig.trusted_comment().map_err(|e| SignatureError::Malformed(e.to_string()))?;
    if signed != reference {
        return Err(SignatureError::OtherPackage { signed, package: reference.to_owned() });
    }
    Ok(Signer { key_id: key.key_id.clone(), name: key.name.clone() })
}

fn key_id(keynum: &[u8]) -> String {
    // minisign prints the little-endian u64 in upper-case hex.
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_unchanged_by_a_trusted_key_for_its_id() {
        let (secret, public) = keygen("test").unwrap();
        let manifest = b"id = \"com.example.hook\"\nversion = \"1.0.0\"\n";
        let sig = sign(manifest, &secret, "com.example.hook@1.0.0").unwrap();
        let key = TrustedKey::new("Example", &public, vec!["com.example.".into()]).unwrap();
        let keys = std::slice::from_ref(&key);
        let signer = verify(manifest, &sig, "com.example.hook", "com.example.hook@1.0.0", keys).unwrap();
        assert_eq!(signer.name, "Example");
        assert_eq!(signature_key_id(&sig).unwrap(), key.key_id());

        let mut tampered = manifest.to_vec();
        tampered[5] ^= 1;
        let e = verify(&tampered, &sig, "com.example.hook", "com.example.hook@1.0.0", keys);
        assert!(matches!(e, Err(SignatureError::Mismatch)), "{e:?}");

        let e = verify(manifest, &sig, "com.other.hook", "com.example.hook@1.0.0", keys);
        assert!(matches!(e, Err(SignatureError::NotAllowedFor { .. })), "{e:?}");

        let e = verify(manifest, &sig, "com.example.hook", "com.example.hook@1.0.1", keys);
        assert!(matches!(e, Err(SignatureError::OtherPackage { .. })), "{e:?}");

        let (_, other) = keygen("other").unwrap();
        let other = TrustedKey::new("Other", &other, vec!["*".into()]).unwrap();
        let e = verify(manifest, &sig, "com.example.hook", "com.example.hook@1.0.0", &[other]);
        assert!(matches!(e, Err(SignatureError::UnknownKey { .. })), "{e:?}");
    }

    #[test]
    fn a_key_is_read_from_base64_or_the_whole_file() {
        let (_, public) = keygen("test").unwrap();
        let line = public.lines().nth(1).unwrap();
        let a = TrustedKey::new("a", line, vec!["*".into()]).unwrap();
        let b = TrustedKey::new("b", &public, vec!["*".into()]).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(TrustedKey::new("c", "not a key", vec![]).is_err());
    }
}
