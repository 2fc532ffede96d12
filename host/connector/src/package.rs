//! A connector package on disk: a directory holding `connector.toml`, its
//! signature, the component and a README; and the same files as a gzipped
//! tarball under one folder `<id>-<version>/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::{MANIFEST_FILE, Manifest, ManifestError};
use crate::signing::{SIGNATURE_FILE, SignatureError, Signer, TrustedKey};

/// The optional README a package carries.
pub const README_FILE: &str = "README.md";

/// Why a package cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "{path}: the component's SHA-256 is {actual}, but the manifest pins {pinned}: the component was changed \
         after the manifest was written (tampered with, or rebuilt without `switchyard plugin sign`)"
    )]
    Tampered { path: PathBuf, actual: String, pinned: String },
    #[error("{path}: the manifest does not pin the component's SHA-256 yet: run `switchyard plugin sign`")]
    Unpinned { path: PathBuf },
    #[error("{reference}: {error}")]
    Signature { reference: String, error: SignatureError },
    #[error("{reference} is not signed ({SIGNATURE_FILE} is missing)")]
    Unsigned { reference: String },
    #[error("{path}: {message}")]
    Archive { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PackageError + '_ {
    move |e| PackageError::Io { path: path.to_owned(), message: e.to_string() }
}

/// A package directory, its manifest read and checked.
#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The manifest's exact bytes: what the signature covers.
    pub manifest_bytes: Vec<u8>,
    /// The signature file's text, when there is one.
    pub signature: Option<String>,
}

/// Whether a package is signed, once checked against the trusted keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    Signed(Signer),
    /// No signature, and the destination allows that.
    Unsigned,
    /// Signed by a key `[trust]` does not list (or not for this id), and
    /// the destination allows unsigned packages.
    Untrusted {
        key_id: String,
    },
}

impl std::fmt::Display for SignatureState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureState::Signed(s) => write!(f, "signed by {} (key {})", s.name, s.key_id),
            SignatureState::Unsigned => f.write_str("unsigned (allowed by allow_unsigned)"),
            SignatureState::Untrusted { key_id } => {
                write!(f, "signed by untrusted key {key_id} (allowed by allow_unsigned)")
            }
        }
    }
}

impl Package {
    /// Reads the package in `dir`: its manifest (checked) and signature.
    ///
    /// # Errors
    ///
    /// A manifest problem naming file and line, or an unreadable file.
    pub fn open(dir: &Path) -> Result<Package, PackageError> {
        let path = dir.join(MANIFEST_FILE);
        let manifest_bytes = std::fs::read(&path).map_err(io(&path))?;
        let text = std::str::from_utf8(&manifest_bytes)
            .map_err(|_| PackageError::Io { path: path.clone(), message: "is not UTF-8".into() })?;
        let manifest = Manifest::parse(&path, text)?;
        let sig_path = dir.join(SIGNATURE_FILE);
        let signature = match std::fs::read_to_string(&sig_path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&sig_path)(e)),
        };
        Ok(Package { dir: dir.to_owned(), manifest, manifest_bytes, signature })
    }

    /// The component's path.
    pub fn component_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.component.path)
    }

    /// Checks that the component is the one the manifest pins.
    ///
    /// # Errors
    ///
    /// [`PackageError::Tampered`] when its hash differs; an unreadable file.
    pub fn check_component(&self) -> Result<(), PackageError> {
        let path = self.component_path();
        if self.manifest.component.sha256.is_empty() {
            return Err(PackageError::Unpinned { path: self.dir.join(MANIFEST_FILE) });
        }
        let actual = sha256_file(&path).map_err(io(&path))?;
        if actual != self.manifest.component.sha256 {
            return Err(PackageError::Tampered { path, actual, pinned: self.manifest.component.sha256.clone() });
        }
        Ok(())
    }

    /// Checks the component's hash and the signature against `trusted`.
    /// With `allow_unsigned`, a package with no signature, or with one by a
    /// key `trusted` does not list for its id, is accepted as such; a
    /// signature that does not match the manifest never is.
    ///
    /// # Errors
    ///
    /// [`PackageError::Tampered`], [`PackageError::Signature`] (unknown key,
    /// mismatch…) or [`PackageError::Unsigned`].
    pub fn verify(&self, trusted: &[TrustedKey], allow_unsigned: bool) -> Result<SignatureState, PackageError> {
        self.check_component()?;
        let reference = self.manifest.reference();
        match &self.signature {
            Some(sig) => {
                match crate::signing::verify(&self.manifest_bytes, sig, &self.manifest.id, &reference, trusted) {
                    Ok(signer) => Ok(SignatureState::Signed(signer)),
                    Err(SignatureError::UnknownKey { key_id } | SignatureError::NotAllowedFor { key_id, .. })
                        if allow_unsigned =>
                    {
                        Ok(SignatureState::Untrusted { key_id })
                    }
                    Err(error) => Err(PackageError::Signature { reference, error }),
                }
            }
            None if allow_unsigned => Ok(SignatureState::Unsigned),
            None => Err(PackageError::Unsigned { reference }),
        }
    }

    /// The files a package consists of, present ones only, manifest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![PathBuf::from(MANIFEST_FILE)];
        for f in [SIGNATURE_FILE, &self.manifest.component.path, README_FILE] {
            if self.dir.join(f).is_file() {
                files.push(PathBuf::from(f));
            }
        }
        files
    }

    /// The folder name inside a tarball, and in the store: `<id>-<version>`.
    pub fn folder_name(&self) -> String {
        format!("{}-{}", self.manifest.id, self.manifest.version)
    }

    /// Writes the package's files as a gzipped tarball at `out`, under one
    /// folder `<id>-<version>/`.
    ///
    /// # Errors
    ///
    /// When a file cannot be read or the tarball written.
    pub fn pack(&self, out: &Path) -> Result<(), PackageError> {
        let file = std::fs::File::create(out).map_err(io(out))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        let folder = PathBuf::from(self.folder_name());
        for f in self.files() {
            let src = self.dir.join(&f);
            tar.append_path_with_name(&src, folder.join(&f)).map_err(io(&src))?;
        }
        let gz = tar.into_inner().map_err(io(out))?;
        gz.finish().map_err(io(out))?;
        Ok(())
    }
}

/// Whether `path` looks like a packed tarball rather than a directory.
pub fn is_tarball(path: &Path) -> bool {
    path.is_file()
}

/// The most a package may unpack to: far above any component (the
/// first-party ones are under 2 MiB), far below a full disk.
pub const MAX_UNPACKED_BYTES: u64 = 256 << 20;

/// Unpacks the tarball at `path` into `into` (which must be empty) and
/// returns the package directory in it. Only regular files under one
/// folder are accepted: no links, no absolute paths, no `..`.
///
/// # Errors
///
/// [`PackageError::Archive`] naming what is wrong with the archive.
pub fn unpack(path: &Path, into: &Path) -> Result<PathBuf, PackageError> {
    let bad = |message: String| PackageError::Archive { path: path.to_owned(), message };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut folder: Option<PathBuf> = None;
    let mut total: u64 = 0;
    let entries = archive.entries().map_err(|e| bad(format!("not a gzipped tarball: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a gzipped tarball: {e}")))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let mut parts = name.components();
        let top = match parts.next() {
            Some(std::path::Component::Normal(top)) => PathBuf::from(top),
            _ => return Err(bad(format!("entry `{}` is not under a package folder", name.display()))),
        };
        let rest: PathBuf = parts.as_path().to_owned();
        if entry.header().entry_type().is_dir() {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(bad(format!("entry `{}` is not a regular file", name.display())));
        }
        if rest.as_os_str().is_empty()
            || !rest.components().all(|c| matches!(c, std::path::Component::Normal(_)))
            || rest.components().count() != 1
        {
            return Err(bad(format!("entry `{}` is not a file directly in the package folder", name.display())));
        }
        match &folder {
            None => folder = Some(top.clone()),
            Some(f) if *f != top => return Err(bad("holds more than one package folder".into())),
            Some(_) => {}
        }
        total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if total > MAX_UNPACKED_BYTES {
            return Err(bad(format!("unpacks to more than {} MiB", MAX_UNPACKED_BYTES >> 20)));
        }
        let dir = into.join(&top);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let dest = dir.join(&rest);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
        std::fs::write(&dest, bytes).map_err(io(&dest))?;
    }
    let folder = folder.ok_or_else(|| bad("is empty".into()))?;
    Ok(into.join(folder))
}

/// SHA-256 of the file at `path`, lowercase hex.
///
/// # Errors
///
/// When it cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `manifest_text` with `[component] sha256` set to `sha256` (the line
/// replaced in place, comments and layout kept; added after
/// `[component]` when missing).
pub fn pin(manifest_text: &str, sha256: &str) -> String {
    let mut out = Vec::new();
    let mut in_component = false;
    let mut done = false;
    for line in manifest_text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            if in_component && !done {
                out.push(format!("sha256 = \"{sha256}\""));
                done = true;
            }
            in_component = t.trim_end() == "[component]";
            out.push(line.to_owned());
            continue;
        }
        if in_component && !done && t.split(['=', ' ']).next() == Some("sha256") {
            out.push(format!("sha256 = \"{sha256}\""));
            done = true;
            continue;
        }
        out.push(line.to_owned());
    }
    if in_component && !done {
        out.push(format!("sha256 = \"{sha256}\""));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing;

    fn write_package(dir: &Path, component: &[u8]) {
        let text = crate::manifest::tests::GOOD;
        let sha = {
            std::fs::write(dir.join("hook.wasm"), component).unwrap();
            sha256_file(&dir.join("hook.wasm")).unwrap()
        };
        std::fs::write(dir.join(MANIFEST_FILE), pin(text, &sha)).unwrap();
    }

    #[test]
    fn pinning_replaces_or_adds_the_hash() {
        let text = "id = \"a.b\"\n[component]\npath = \"x.wasm\" # the file\nsha256 = \"old\"\n[settings.a]\ntype = \"string\"\n";
        let pinned = pin(text, "new");
        assert_eq!(pinned, text.replace("\"old\"", "\"new\""));
        let missing = "[component]\npath = \"x.wasm\"\n[settings.a]\n";
        assert_eq!(pin(missing, "h"), "[component]\npath = \"x.wasm\"\nsha256 = \"h\"\n[settings.a]\n");
    }

    #[test]
    fn a_package_packs_unpacks_and_verifies() {
        let src = tempfile::tempdir().unwrap();
        write_package(src.path(), b"\0asm component bytes");
        let (secret, public) = signing::keygen("t").unwrap();
        let pkg = Package::open(src.path()).unwrap();
        let sig = signing::sign(&pkg.manifest_bytes, &secret, &pkg.manifest.reference()).unwrap();
        std::fs::write(src.path().join(SIGNATURE_FILE), sig).unwrap();
        let trusted = [TrustedKey::new("Example", &public, vec!["com.example.".into()]).unwrap()];

        let out = tempfile::tempdir().unwrap();
        let tarball = out.path().join("p.tar.gz");
        Package::open(src.path()).unwrap().pack(&tarball).unwrap();
        let into = tempfile::tempdir().unwrap();
        let dir = unpack(&tarball, into.path()).unwrap();
        assert_eq!(dir.file_name().unwrap(), "com.example.hook-1.2.0");
        let pkg = Package::open(&dir).unwrap();
        assert!(matches!(pkg.verify(&trusted, false), Ok(SignatureState::Signed(_))));

        // One byte of the component changed.
        let mut bytes = std::fs::read(pkg.component_path()).unwrap();
        bytes[3] ^= 1;
        std::fs::write(pkg.component_path(), bytes).unwrap();
        assert!(matches!(pkg.verify(&trusted, false), Err(PackageError::Tampered { .. })));
    }

    #[test]
    fn an_unsigned_package_needs_allow_unsigned() {
        let src = tempfile::tempdir().unwrap();
        write_package(src.path(), b"bytes");
        let pkg = Package::open(src.path()).unwrap();
        assert!(matches!(pkg.verify(&[], false), Err(PackageError::Unsigned { .. })));
        assert_eq!(pkg.verify(&[], true).unwrap(), SignatureState::Unsigned);
    }
}
