//! Connector packages in an OCI registry.
//!
//! # Layout
//!
//! A package is two artifacts in one repository, tagged by version:
//!
//! - **the component**, in the CNCF Wasm artifact layout (config
//!   `application/vnd.wasm.config.v0+json` with `architecture = "wasm"`,
//!   `os = "wasip2"` and the component's imports and exports; one layer
//!   `application/wasm`), so `wkg oci pull` and other Wasm tooling read it
//!   as any component. Its tag is the package version (`…/dev.acme.hook:1.4.0`).
//! - **the connector**: an artifact of type
//!   `application/vnd.switchyard.connector.v1` whose `subject` is the
//!   component's manifest, holding `connector.toml`, its minisign signature
//!   and the README as layers. It is found as a *referrer* of the
//!   component, the mechanism notation and cosign use for signatures; for
//!   registries without the referrers API (the CNCF distribution registry
//!   2.x, ghcr.io) it is also listed in the fallback index tagged
//!   `sha256-<component digest>`, as the OCI distribution spec describes.
//!
//! Nothing pulled is trusted: a pulled package is written to a folder and
//! goes through the same checks as a tarball (the component against the
//! manifest's pin, the signature against `[trust]`).
//!
//! # Transport
//!
//! HTTPS, except for loopback registries (`localhost`, `127.0.0.1`,
//! `[::1]`), which speak plain HTTP as Docker treats them, and registries
//! an operator marks `insecure`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::Client;
pub use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};

use crate::manifest::MANIFEST_FILE;
use crate::package::{Package, PackageError, README_FILE};
use crate::signing::SIGNATURE_FILE;

/// The CNCF Wasm artifact's config media type.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF Wasm artifact's one layer: the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The connector artifact (manifest, signature, README) referring to it.
pub const CONNECTOR_ARTIFACT_TYPE: &str = "application/vnd.switchyard.connector.v1";
const MANIFEST_LAYER: &str = "application/vnd.switchyard.connector.manifest.v1+toml";
const SIGNATURE_LAYER: &str = "application/vnd.switchyard.connector.signature.v1";
const README_LAYER: &str = "text/markdown";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI title annotation: a layer's file name.
const TITLE: &str = "org.opencontainers.image.title";

/// Why a push or pull failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "`{0}` is not an OCI reference: write `registry/repository:version`, e.g. \
         `registry.example.com/connectors/com.example.hook:1.2.0`"
    )]
    BadReference(String),
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{reference}: {message}")]
    NotAConnector { reference: String, message: String },
    #[error("{repository}: no version matches {requirement} (versions: {})", list(.versions))]
    NoMatch { repository: String, requirement: String, versions: Vec<String> },
    #[error("{0}: is not a WebAssembly component")]
    NotAComponent(PathBuf),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

fn list(versions: &[String]) -> String {
    if versions.is_empty() { "none".to_owned() } else { versions.join(", ") }
}

/// How to reach a registry. The password never appears in `Debug` output.
#[derive(Clone, Default)]
pub struct Access {
    /// Plain HTTP even though the host is not loopback.
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Parses `registry/repository:tag` (or `@sha256:…`), with an optional
/// `oci://` prefix. The registry must be written out: nothing defaults to
/// Docker Hub.
///
/// # Errors
///
/// [`OciError::BadReference`].
pub fn parse_reference(s: &str) -> Result<Reference, OciError> {
    let bare = s.strip_prefix("oci://").unwrap_or(s);
    let host = bare.split('/').next().unwrap_or_default();
    let names_registry = bare.contains('/') && (host.contains('.') || host.contains(':') || host == "localhost");
    if !names_registry {
        return Err(OciError::BadReference(s.to_owned()));
    }
    bare.parse::<Reference>().map_err(|_| OciError::BadReference(s.to_owned()))
}

/// Whether a registry (`host[:port]`) is on this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => registry,
    };
    matches!(host.trim_start_matches('[').trim_end_matches(']'), "localhost" | "127.0.0.1" | "::1")
}

/// What a push wrote.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The component artifact's manifest digest.
    pub component_digest: String,
    /// The connector artifact's manifest digest.
    pub connector_digest: String,
}

/// A client for one registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl Registry {
    /// A client for the registry `reference` names.
    pub fn new(reference: &Reference, access: &Access) -> Registry {
        // reqwest is built without a default crypto provider: use ring, as
        // the rest of the host does. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = reference.resolve_registry().to_owned();
        let protocol = if access.insecure || is_loopback(&registry) {
            ClientProtocol::HttpsExcept(vec![registry])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        let auth = match (&access.username, &access.password) {
            (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            _ => RegistryAuth::Anonymous,
        };
        Registry { client: Client::new(config), auth }
    }

    fn fail(reference: &Reference, e: impl std::fmt::Display) -> OciError {
        OciError::Registry { reference: reference.whole(), message: e.to_string() }
    }

    /// Pushes `package` (pinned and, normally, signed) to `reference`,
    /// whose tag should be the package version.
    ///
    /// # Errors
    ///
    /// The component does not match the pin or is not a component; the
    /// registry refuses or cannot be reached.
    pub async fn push(&self, package: &Package, reference: &Reference) -> Result<Pushed, OciError> {
        package.check_component()?;
        let component_path = package.component_path();
        let component = std::fs::read(&component_path)
            .map_err(|e| OciError::Io { path: component_path.clone(), message: e.to_string() })?;
        let world = component_world(&component).ok_or_else(|| OciError::NotAComponent(component_path.clone()))?;
        let fail = |e| Self::fail(reference, e);
        self.client.auth(reference, &self.auth, oci_client::RegistryOperation::Push).await.map_err(fail)?;

        // The component, as any Wasm tool expects it.
        let layer =
            self.blob(reference, WASM_LAYER_MEDIA_TYPE, &component, Some(&package.manifest.component.path)).await?;
        let config = serde_json::json!({
            "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "author": package.manifest.publisher,
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.digest],
            "component": { "imports": world.imports, "exports": world.exports },
        });
        let config = self.blob(reference, WASM_CONFIG_MEDIA_TYPE, config.to_string().as_bytes(), None).await?;
        let mut annotations = BTreeMap::new();
        annotations.insert("org.opencontainers.image.version".to_owned(), package.manifest.version.to_string());
        annotations.insert("org.opencontainers.image.title".to_owned(), package.manifest.id.clone());
        annotations.insert("org.opencontainers.image.vendor".to_owned(), package.manifest.publisher.clone());
        let component_manifest = OciImageManifest {
            media_type: Some(IMAGE_MANIFEST.to_owned()),
            config,
            layers: vec![layer],
            annotations: Some(annotations),
            ..OciImageManifest::default()
        };
        let subject = self.put_manifest(reference, None, &OciManifest::Image(component_manifest.clone())).await?;

        // The connector, referring to it.
        let mut layers =
            vec![self.blob(reference, MANIFEST_LAYER, &package.manifest_bytes, Some(MANIFEST_FILE)).await?];
        if let Some(sig) = &package.signature {
            layers.push(self.blob(reference, SIGNATURE_LAYER, sig.as_bytes(), Some(SIGNATURE_FILE)).await?);
        }
        let readme = package.dir.join(README_FILE);
        if let Ok(text) = std::fs::read(&readme) {
            layers.push(self.blob(reference, README_LAYER, &text, Some(README_FILE)).await?);
        }
        let connector_manifest = OciImageManifest {
            media_type: Some(IMAGE_MANIFEST.to_owned()),
            artifact_type: Some(CONNECTOR_ARTIFACT_TYPE.to_owned()),
            config: self.blob(reference, EMPTY_CONFIG, b"{}", None).await?,
            layers,
            subject: Some(subject.clone()),
            ..OciImageManifest::default()
        };
        let connector = self.put_manifest(reference, None, &OciManifest::Image(connector_manifest)).await?;
        self.add_fallback_referrer(reference, &subject, &connector).await?;

        // The version tag last: once it is visible, so is all it refers to.
        let tag = reference.tag().unwrap_or("latest").to_owned();
        self.put_manifest(reference, Some(&tag), &OciManifest::Image(component_manifest)).await?;
        Ok(Pushed { component_digest: subject.digest, connector_digest: connector.digest })
    }

    /// Pulls the package `reference` names into a new folder under `into`
    /// and opens it. The component is checked against the manifest's pin;
    /// the signature is the caller's to check.
    ///
    /// # Errors
    ///
    /// The reference is not a component with a connector referring to it;
    /// a blob does not match its digest; the registry refuses.
    pub async fn pull(&self, reference: &Reference, into: &Path) -> Result<Package, OciError> {
        let fail = |e| Self::fail(reference, e);
        let not_connector = |message: String| OciError::NotAConnector { reference: reference.whole(), message };
        let (manifest, digest) = self.client.pull_manifest(reference, &self.auth).await.map_err(fail)?;
        let OciManifest::Image(component) = manifest else {
            return Err(not_connector("is an image index, not a Wasm component".into()));
        };
        let layer = match component.layers.as_slice() {
            [layer]
                if component.config.media_type == WASM_CONFIG_MEDIA_TYPE
                    && layer.media_type == WASM_LAYER_MEDIA_TYPE =>
            {
                layer.clone()
            }
            _ => {
                return Err(not_connector(format!(
                    "is not a Wasm component artifact (config {}, {} layers)",
                    component.config.media_type,
                    component.layers.len()
                )));
            }
        };
        let subject = reference.clone_with_digest(digest.clone());
        let referrers = self.client.pull_referrers(&subject, Some(CONNECTOR_ARTIFACT_TYPE)).await.map_err(fail)?;
        // The newest connector artifact wins: a re-push (a new signature)
        // is appended to the fallback index.
        let Some(entry) = referrers.manifests.last() else {
            return Err(not_connector(format!(
                "is a Wasm component ({digest}) but no connector manifest refers to it: push it with \
                 `switchyard plugin push`"
            )));
        };
        let (connector, _) = self
            .client
            .pull_manifest(&reference.clone_with_digest(entry.digest.clone()), &self.auth)
            .await
            .map_err(fail)?;
        let OciManifest::Image(connector) = connector else {
            return Err(not_connector(format!("referrer {} is not an image manifest", entry.digest)));
        };

        let dir = into.join(format!(".pulled-{}", digest.replace(':', "-")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| OciError::Io { path: dir.clone(), message: e.to_string() })?;
        let mut component_name = None;
        for l in &connector.layers {
            let name = match l.media_type.as_str() {
                MANIFEST_LAYER => MANIFEST_FILE,
                SIGNATURE_LAYER => SIGNATURE_FILE,
                README_LAYER => README_FILE,
                _ => continue,
            };
            self.fetch_blob(reference, l, &dir.join(name)).await?;
            if name == MANIFEST_FILE {
                let m = Package::open(&dir)?;
                component_name = Some(m.manifest.component.path.clone());
            }
        }
        let component_name =
            component_name.ok_or_else(|| not_connector("its connector artifact has no connector.toml".into()))?;
        self.fetch_blob(reference, &layer, &dir.join(&component_name)).await?;
        let package = Package::open(&dir)?;
        package.check_component()?;
        Ok(package)
    }

    /// The semver tags of `repository` (its tag is ignored), lowest first.
    ///
    /// # Errors
    ///
    /// The registry refuses or cannot be reached; an unknown repository.
    pub async fn versions(&self, repository: &Reference) -> Result<Vec<semver::Version>, OciError> {
        let fail = |e| Self::fail(repository, e);
        let mut versions = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page =
                self.client.list_tags(repository, &self.auth, Some(1000), last.as_deref()).await.map_err(fail)?;
            let n = page.tags.len();
            versions.extend(page.tags.iter().filter_map(|t| semver::Version::parse(t).ok()));
            last = page.tags.last().cloned();
            if n < 1000 {
                break;
            }
        }
        versions.sort();
        Ok(versions)
    }

    /// The highest version of `repository` matching `requirement`.
    ///
    /// # Errors
    ///
    /// [`OciError::NoMatch`], or what [`Registry::versions`] returns.
    pub async fn resolve(
        &self,
        repository: &Reference,
        requirement: &semver::VersionReq,
    ) -> Result<Reference, OciError> {
        let versions = self.versions(repository).await?;
        let Some(best) = versions.iter().rev().find(|v| requirement.matches(v)) else {
            return Err(OciError::NoMatch {
                repository: format!("{}/{}", repository.registry(), repository.repository()),
                requirement: requirement.to_string(),
                versions: versions.iter().map(ToString::to_string).collect(),
            });
        };
        Ok(Reference::with_tag(repository.registry().to_owned(), repository.repository().to_owned(), best.to_string()))
    }

    /// Adds `connector` to the referrers fallback index of `subject`
    /// (`sha256-<hex>`), keeping the entries already there.
    async fn add_fallback_referrer(
        &self,
        reference: &Reference,
        subject: &OciDescriptor,
        connector: &OciDescriptor,
    ) -> Result<(), OciError> {
        let tag = subject.digest.replace(':', "-");
        let at = Reference::with_tag(reference.registry().to_owned(), reference.repository().to_owned(), tag.clone());
        let mut manifests = match self.client.pull_manifest(&at, &self.auth).await {
            Ok((OciManifest::ImageIndex(index), _)) => index.manifests,
            _ => Vec::new(),
        };
        manifests.retain(|m| m.digest != connector.digest);
        manifests.push(ImageIndexEntry {
            media_type: IMAGE_MANIFEST.to_owned(),
            digest: connector.digest.clone(),
            size: connector.size,
            platform: None,
            annotations: None,
            artifact_type: Some(CONNECTOR_ARTIFACT_TYPE.to_owned()),
        });
        let index = OciImageIndex {
            schema_version: 2,
            media_type: Some(IMAGE_INDEX.to_owned()),
            manifests,
            artifact_type: None,
            annotations: None,
        };
        self.put_manifest(reference, Some(&tag), &OciManifest::ImageIndex(index)).await?;
        Ok(())
    }

    /// Uploads a manifest under `tag`, or by its digest when `None`, and
    /// returns its descriptor.
    async fn put_manifest(
        &self,
        reference: &Reference,
        tag: Option<&str>,
        manifest: &OciManifest,
    ) -> Result<OciDescriptor, OciError> {
        let fail = |e: String| OciError::Registry { reference: reference.whole(), message: e };
        let body = serde_json::to_vec(manifest).map_err(|e| fail(e.to_string()))?;
        let digest = sha256_digest(&body);
        let (registry, repository) = (reference.registry().to_owned(), reference.repository().to_owned());
        let at = match tag {
            Some(tag) => Reference::with_tag(registry, repository, tag.to_owned()),
            None => Reference::with_digest(registry, repository, digest.clone()),
        };
        let media_type = manifest.content_type();
        let content_type = media_type.parse().map_err(|_| fail(format!("media type {media_type}")))?;
        let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
        self.client.push_manifest_raw(&at, body, content_type).await.map_err(|e| fail(e.to_string()))?;
        Ok(OciDescriptor { media_type: media_type.to_owned(), digest, size, ..OciDescriptor::default() })
    }

    /// Downloads a blob to `path`, checking its digest.
    async fn fetch_blob(&self, reference: &Reference, layer: &OciDescriptor, path: &Path) -> Result<(), OciError> {
        // A registry is not trusted either: nothing larger than a package
        // may unpack to is downloaded.
        if u64::try_from(layer.size).map_or(true, |n| n > crate::package::MAX_UNPACKED_BYTES) {
            return Err(OciError::Registry {
                reference: reference.whole(),
                message: format!("blob {} declares {} bytes, over the package limit", layer.digest, layer.size),
            });
        }
        let mut data = Vec::new();
        self.client.pull_blob(reference, layer, &mut data).await.map_err(|e| Self::fail(reference, e))?;
        if sha256_digest(&data) != layer.digest || i64::try_from(data.len()).ok() != Some(layer.size) {
            return Err(OciError::Registry {
                reference: reference.whole(),
                message: format!("blob {} does not match its digest", layer.digest),
            });
        }
        std::fs::write(path, &data).map_err(|e| OciError::Io { path: path.to_owned(), message: e.to_string() })
    }

    /// Uploads one blob and returns its descriptor.
    async fn blob(
        &self,
        reference: &Reference,
        media_type: &str,
        data: &[u8],
        title: Option<&str>,
    ) -> Result<OciDescriptor, OciError> {
        let digest = sha256_digest(data);
        let exists = self.client.blob_exists(reference, &digest).await.unwrap_or(false);
        if !exists {
            self.client.push_blob(reference, data.to_vec(), &digest).await.map_err(|e| Self::fail(reference, e))?;
        }
        let annotations = title.map(|t| BTreeMap::from([(TITLE.to_owned(), t.to_owned())]));
        Ok(OciDescriptor {
            media_type: media_type.to_owned(),
            digest,
            size: i64::try_from(data.len()).unwrap_or(i64::MAX),
            annotations,
            ..OciDescriptor::default()
        })
    }
}

fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A component's top-level import and export names, as the CNCF config
/// lists them.
#[derive(Debug, Default, PartialEq)]
pub struct World {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Reads the top-level imports and exports of a component (not of the
/// modules and components nested in it). `None` when `bytes` is not a
/// well-formed component.
pub fn component_world(bytes: &[u8]) -> Option<World> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut world = World::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return None;
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    world.imports.push(import.ok()?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    world.exports.push(export.ok()?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Some(world)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_name_their_registry() {
        let r = parse_reference("oci://127.0.0.1:5000/connectors/com.acme.hook:1.2.0").expect("parses");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "connectors/com.acme.hook", Some("1.2.0"))
        );
        assert!(parse_reference("registry.example.com/c/com.acme.hook@sha256:0123").is_err(), "a digest is 64 hex");
        for bare in ["com.acme.hook:1.2.0", "acme/hook:1", ""] {
            assert!(matches!(parse_reference(bare), Err(OciError::BadReference(_))), "{bare} names no registry");
        }
    }

    #[test]
    fn only_loopback_registries_are_plain_http_by_default() {
        for host in ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example.com", "127.0.0.2:5000", "localhost.example.com:443"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn a_component_world_is_read_without_compiling() {
        // (component (import "wasi:cli/env@0.2.0" (instance)) ) by hand:
        // the preamble, then an import section of one instance import.
        let mut bytes = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let name = b"wasi:cli/env@0.2.0";
        // type section: one empty instance type
        bytes.extend_from_slice(&[0x07, 0x03, 0x01, 0x42, 0x00]);
        let mut import = vec![0x01, 0x00, name.len() as u8];
        import.extend_from_slice(name);
        import.extend_from_slice(&[0x05, 0x00]); // instance of type 0
        bytes.push(0x0a);
        bytes.push(import.len() as u8);
        bytes.extend_from_slice(&import);
        let world = component_world(&bytes).expect("a component");
        assert_eq!(world.imports, vec!["wasi:cli/env@0.2.0".to_owned()]);
        assert!(world.exports.is_empty());
        assert_eq!(component_world(&[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]), None, "a core module");
        assert_eq!(component_world(b"not wasm"), None);
    }
}
