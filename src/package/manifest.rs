//! `SHIP_MANIFEST.json`: what is in a release and how it was built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest packed at the root of every artifact. Field names are a public contract
/// (hosts keep it in each release; `status` reads it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub schema: u32,
    /// Package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// The binary's file name at the release root.
    pub bin: String,
    /// Target as configured, including a glibc pin (`x86_64-unknown-linux-gnu.2.17`).
    pub target: String,
    /// Cargo profile.
    pub profile: String,
    /// Enabled features (sorted).
    pub features: Vec<String>,
    /// `HEAD` commit of the package's git repository, when there is one.
    pub git_commit: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub git_dirty: bool,
    /// `rustc --version` output.
    pub rustc: String,
    /// Builder used (`cargo`, `zigbuild`, `cross`).
    pub builder: String,
    /// Build time, RFC 3339 UTC. Reproducible: `SOURCE_DATE_EPOCH` when set, else the HEAD
    /// commit's time, else the Cargo.toml's modification time.
    pub built_at: String,
    /// Highest `GLIBC_x.y` symbol version the binary needs; `None` for static binaries.
    pub glibc_required: Option<String>,
    /// Every file in the artifact except the manifest itself: path → sha256, size and mode.
    pub files: BTreeMap<String, FileEntry>,
}

/// One packed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix mode as packed (0o755 or 0o644).
    pub mode: u32,
}
