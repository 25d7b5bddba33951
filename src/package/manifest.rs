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

/// The manifest format version written by this cargo-ship.
pub const SCHEMA: u32 = 1;

impl Manifest {
    /// The manifest as packed: pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and maps cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Parses a glibc version (`2.17`, `2.3.4`) into comparable numbers; `None` if malformed.
pub fn parse_glibc_version(v: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| (2..=3).contains(&p.len()))
}

/// The highest glibc version among ELF version-needed names (`GLIBC_2.34`, `GLIBC_2.2.5`,
/// `GLIBC_PRIVATE`...), without the `GLIBC_` prefix. Non-numeric names are ignored.
pub fn highest_glibc<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|n| n.strip_prefix("GLIBC_"))
        .filter_map(|v| parse_glibc_version(v).map(|k| (k, v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.to_string())
}

/// The highest `GLIBC_x.y[.z]` version an ELF executable needs, read from its version-needed
/// section; `None` for static (e.g. musl) binaries. `Err` says why the file is not usable ELF.
pub fn glibc_required(elf: &[u8]) -> Result<Option<String>, String> {
    let parsed = goblin::elf::Elf::parse(elf).map_err(|e| format!("not an ELF executable: {e}"))?;
    let Some(verneed) = &parsed.verneed else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for need in verneed.iter() {
        for aux in need.iter() {
            if let Some(name) = parsed.dynstrtab.get_at(aux.vna_name) {
                names.push(name);
            }
        }
    }
    Ok(highest_glibc(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_glibc_compares_numerically() {
        let names = [
            "GLIBC_2.2.5",
            "GLIBC_2.34",
            "GLIBC_PRIVATE",
            "GCC_3.0",
            "GLIBC_2.9",
            "GLIBC_2.17",
        ];
        assert_eq!(highest_glibc(names).as_deref(), Some("2.34"));
        assert_eq!(
            highest_glibc(["GLIBC_2.3.4", "GLIBC_2.3"]).as_deref(),
            Some("2.3.4")
        );
        assert_eq!(highest_glibc(["GCC_3.0", "GLIBC_PRIVATE"]), None);
        assert_eq!(highest_glibc([]), None);
    }

    #[test]
    fn parses_glibc_versions() {
        assert_eq!(parse_glibc_version("2.17"), Some(vec![2, 17]));
        assert_eq!(parse_glibc_version("2.2.5"), Some(vec![2, 2, 5]));
        assert!(parse_glibc_version("2").is_none() && parse_glibc_version("2.x").is_none());
        assert!(parse_glibc_version("2.3.4.5").is_none());
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn reads_the_glibc_requirement_of_this_test_binary() {
        // The test binary itself is a dynamically linked glibc executable on this platform.
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(exe).unwrap();
        let v = glibc_required(&bytes)
            .unwrap()
            .expect("a glibc-linked test binary");
        assert!(parse_glibc_version(&v).unwrap() >= vec![2, 2], "{v}");
        assert!(glibc_required(b"#!/bin/sh\n").unwrap_err().contains("ELF"));
    }

    #[test]
    fn manifest_json_is_pretty_with_a_trailing_newline() {
        let m = Manifest {
            schema: SCHEMA,
            package: "hello".into(),
            version: "0.1.0".into(),
            bin: "hello".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            profile: "release".into(),
            features: vec![],
            git_commit: None,
            git_dirty: false,
            rustc: "rustc 1.95.0".into(),
            builder: "cargo".into(),
            built_at: "2024-01-01T00:00:00Z".into(),
            glibc_required: Some("2.34".into()),
            files: BTreeMap::new(),
        };
        let json = m.to_json();
        assert!(
            json.starts_with("{\n  \"schema\": 1,") && json.ends_with("}\n"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }
}
