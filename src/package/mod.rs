//! The release artifact: a reproducible tar + zstd archive holding the binary, the assets and
//! `SHIP_MANIFEST.json`, stored under `<target-dir>/ship/`.
//!
//! * `manifest.rs`: the manifest written into every artifact.
//! * `store.rs`: the local artifact store (naming, reuse, pruning).
//! * this file: packing (sorted entries, fixed mtime/uid/gid, normalised modes) and reading.

pub mod manifest;
pub mod store;

use std::path::PathBuf;

pub use manifest::Manifest;

/// File name of the manifest inside every artifact and release directory.
pub const MANIFEST_FILE: &str = "SHIP_MANIFEST.json";

/// A packed artifact on this machine.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Path of the `.tar.zst` file.
    pub path: PathBuf,
    /// Hex sha256 of the whole file: the artifact's identity.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The manifest packed inside.
    pub manifest: Manifest,
}

impl Artifact {
    /// The first 12 hex digits of the sha256, used in file names and output.
    pub fn short_sha(&self) -> &str {
        &self.sha256[..12]
    }
}

/// Builds the binary (see [`crate::build`]), packs it with the assets and a manifest, and
/// stores the artifact, reusing an identical one already in the store.
pub fn build_artifact(_config: &crate::config::Config, _ui: &crate::ui::Ui) -> crate::Result<Artifact> {
    Err(crate::Error::usage("packing is not implemented yet", None))
}

/// Reads the manifest out of an artifact file.
pub fn read_manifest(_path: &std::path::Path) -> crate::Result<Manifest> {
    Err(crate::Error::usage("reading artifacts is not implemented yet", None))
}
