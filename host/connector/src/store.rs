//! The local store of installed connectors, `data_dir/connectors`: one
//! folder per package, `<id>/<version>/`, each a complete package as
//! published (manifest, signature, component, README). Installing writes a
//! new folder beside the others and renames it into place, so a reader
//! never sees half a package.

use std::path::{Path, PathBuf};

use crate::package::{Package, PackageError};

/// Why a connector reference cannot be resolved or installed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a connector reference: write `id@version-requirement`, e.g. `com.example.hook@^1.2`")]
    BadReference(String),
    #[error("{id}: not installed (install it with `switchyard connector install`){}", installed_list(.installed))]
    NotInstalled { id: String, installed: Vec<String> },
    #[error("{id}@{requirement}: no installed version matches (installed: {})", .installed.join(", "))]
    NoMatch { id: String, requirement: String, installed: Vec<String> },
    #[error("{reference} is already installed with different contents; publish a new version instead")]
    Conflict { reference: String },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

fn installed_list(installed: &[String]) -> String {
    if installed.is_empty() { String::new() } else { format!("; installed: {}", installed.join(", ")) }
}

/// `id@requirement` as written in a config (`com.example.hook@^1.2`; no
/// `@` means any version).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub id: String,
    pub requirement: semver::VersionReq,
}

impl std::str::FromStr for Reference {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Reference, StoreError> {
        let (id, req) = s.split_once('@').unwrap_or((s, "*"));
        let requirement = semver::VersionReq::parse(req).map_err(|_| StoreError::BadReference(s.to_owned()))?;
        if id.is_empty() || !id.contains('.') {
            return Err(StoreError::BadReference(s.to_owned()));
        }
        Ok(Reference { id: id.to_owned(), requirement })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.requirement)
    }
}

/// The connectors installed under one folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root` (created when something is installed).
    pub fn new(root: &Path) -> Store {
        Store { root: root.to_owned() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copies `package` into the store. Installing the same package twice
    /// is a no-op; the same `id@version` with other contents is refused,
    /// unless `replace` (a developer rebuilding one version).
    /// Returns the installed package.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`], or a file that cannot be written.
    pub fn install(&self, package: &Package, replace: bool) -> Result<Package, StoreError> {
        let m = &package.manifest;
        let dest = self.root.join(&m.id).join(m.version.to_string());
        if dest.exists() {
            let existing = Package::open(&dest)?;
            let same = existing.manifest_bytes == package.manifest_bytes && existing.signature == package.signature;
            if same {
                return Ok(existing);
            }
            if !replace {
                return Err(StoreError::Conflict { reference: m.reference() });
            }
            // A running server keeps the component it compiled; the next
            // reload reads the new one.
            std::fs::remove_dir_all(&dest).map_err(|e| self.io(&dest, e))?;
        }
        let parent = dest.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(|e| self.io(parent, e))?;
        let staging = parent.join(format!(".installing-{}-{}", m.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(|e| self.io(&staging, e))?;
        for f in package.files() {
            let (from, to) = (package.dir.join(&f), staging.join(&f));
            std::fs::copy(&from, &to).map_err(|e| self.io(&from, e))?;
        }
        // Durable before it becomes visible.
        for f in package.files() {
            let path = staging.join(&f);
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| self.io(&path, e))?;
        }
        std::fs::rename(&staging, &dest).map_err(|e| self.io(&dest, e))?;
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(Package::open(&dest)?)
    }

    /// The installed versions of `id`, lowest first.
    pub fn versions(&self, id: &str) -> Vec<semver::Version> {
        let mut versions: Vec<semver::Version> = std::fs::read_dir(self.root.join(id))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| semver::Version::parse(n).ok()))
            .collect();
        versions.sort();
        versions
    }

    /// Every installed package, as `(id, version)`, sorted.
    pub fn list(&self) -> Vec<(String, semver::Version)> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        ids.into_iter().flat_map(|id| self.versions(&id).into_iter().map(move |v| (id.clone(), v))).collect()
    }

    /// The highest installed version matching `reference`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotInstalled`] or [`StoreError::NoMatch`] listing what
    /// is installed; a package that cannot be read.
    pub fn resolve(&self, reference: &Reference) -> Result<Package, StoreError> {
        let versions = self.versions(&reference.id);
        let installed = |v: &[semver::Version]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        if versions.is_empty() {
            let others: Vec<String> = self.list().into_iter().map(|(id, v)| format!("{id}@{v}")).collect();
            return Err(StoreError::NotInstalled { id: reference.id.clone(), installed: others });
        }
        let best =
            versions.iter().rev().find(|v| reference.requirement.matches(v)).ok_or_else(|| StoreError::NoMatch {
                id: reference.id.clone(),
                requirement: reference.requirement.to_string(),
                installed: installed(&versions),
            })?;
        Ok(Package::open(&self.root.join(&reference.id).join(best.to_string()))?)
    }

    fn io(&self, path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Io { path: path.to_owned(), message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::MANIFEST_FILE;

    fn package(version: &str) -> (tempfile::TempDir, Package) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.wasm"), version.as_bytes()).unwrap();
        let sha = crate::package::sha256_file(&dir.path().join("hook.wasm")).unwrap();
        let text = crate::manifest::tests::GOOD.replace("1.2.0", version);
        std::fs::write(dir.path().join(MANIFEST_FILE), crate::package::pin(&text, &sha)).unwrap();
        let pkg = Package::open(dir.path()).unwrap();
        (dir, pkg)
    }

    #[test]
    fn the_highest_matching_version_is_resolved() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        for v in ["1.2.0", "1.4.1", "2.0.0"] {
            let (_dir, pkg) = package(v);
            store.install(&pkg, false).unwrap();
        }
        let resolve = |r: &str| store.resolve(&r.parse().unwrap()).map(|p| p.manifest.version.to_string());
        assert_eq!(resolve("com.example.hook@^1.2").unwrap(), "1.4.1");
        assert_eq!(resolve("com.example.hook@=1.2.0").unwrap(), "1.2.0");
        assert_eq!(resolve("com.example.hook").unwrap(), "2.0.0");
        let e = resolve("com.example.hook@^3").unwrap_err().to_string();
        assert!(e.contains("no installed version matches (installed: 1.2.0, 1.4.1, 2.0.0)"), "{e}");
        let e = resolve("com.example.other@1").unwrap_err().to_string();
        assert!(e.contains("not installed"), "{e}");
        assert!("nodots@1".parse::<Reference>().is_err());
        assert!("com.example.hook@banana".parse::<Reference>().is_err());
    }

    #[test]
    fn reinstalling_is_a_no_op_and_other_contents_conflict() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        let (_a, pkg) = package("1.0.0");
        store.install(&pkg, false).unwrap();
        store.install(&pkg, false).unwrap();
        let (b, _) = package("1.0.0");
        std::fs::write(b.path().join("hook.wasm"), b"other").unwrap();
        let sha = crate::package::sha256_file(&b.path().join("hook.wasm")).unwrap();
        let text = std::fs::read_to_string(b.path().join(MANIFEST_FILE)).unwrap();
        std::fs::write(b.path().join(MANIFEST_FILE), crate::package::pin(&text, &sha)).unwrap();
        let other = Package::open(b.path()).unwrap();
        assert!(matches!(store.install(&other, false), Err(StoreError::Conflict { .. })));
        assert_eq!(store.list().len(), 1);
        let replaced = store.install(&other, true).unwrap();
        assert_eq!(std::fs::read(replaced.component_path()).unwrap(), b"other");
    }
}
