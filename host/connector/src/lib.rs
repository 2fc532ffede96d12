//! Connector packages: how a vendor publishes a destination and an operator
//! installs it.
//!
//! A package is a manifest ([`manifest`], `connector.toml`), the Wasm
//! component it pins by SHA-256, a detached minisign signature over the
//! manifest ([`signing`]) and a README, as a directory or a tarball
//! ([`package`]). Installed packages live in a [`store`], resolved by id
//! and semver requirement; [`oci`] pushes and pulls them through an OCI
//! registry. The manifest's settings become a JSON Schema
//! that checks a destination's settings ([`settings`]).
//!
//! This crate reads and writes packages; it runs nothing. The host decides
//! what to grant.

pub mod manifest;
pub mod oci;
pub mod package;
pub mod settings;
pub mod signing;
pub mod store;

pub use manifest::{Manifest, ManifestError, OriginRequest};
pub use package::{Package, PackageError, SignatureState};
pub use signing::{SignatureError, Signer, TrustedKey};
pub use store::{Reference, Store, StoreError};
