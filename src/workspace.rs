//! The cargo workspace as `cargo metadata` describes it: which package is being shipped, its
//! binaries, version and manifest, the workspace root and the target directory.
//!
//! Package selection follows cargo: `-p NAME`, else the member whose directory contains the
//! current directory (or the `--manifest-path` directory), else the only member. Several
//! candidates give an error listing them and suggesting `-p`.

use std::path::{Path, PathBuf};

use cargo_metadata::{MetadataCommand, TargetKind};

use crate::{Error, Result};

/// One workspace member, with what cargo-ship needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Package version (`0.1.0`).
    pub version: String,
    /// The package's Cargo.toml.
    pub manifest_path: PathBuf,
    /// The package's directory.
    pub root: PathBuf,
    /// Names of its binary targets, in cargo's order.
    pub bins: Vec<String>,
    /// The workspace root directory.
    pub workspace_root: PathBuf,
    /// The workspace root's Cargo.toml (the same file as `manifest_path` for a single package).
    pub workspace_manifest: PathBuf,
    /// cargo's target directory.
    pub target_dir: PathBuf,
}

impl Package {
    /// The binary to ship when the configuration names none: the only one, or an error listing
    /// them. The error is a usage error; `config::load` reports it against `bin`.
    pub fn default_bin(&self) -> std::result::Result<&str, String> {
        match self.bins.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "package `{}` has no binary target (cargo-ship ships an executable)",
                self.name
            )),
            many => Err(format!(
                "package `{}` has several binaries ({})",
                self.name,
                list(many)
            )),
        }
    }
}

/// Finds the package to ship. `manifest_path` is `--manifest-path`, `package` is `-p`.
pub fn find(manifest_path: Option<&Path>, package: Option<&str>) -> Result<Package> {
    let mut cmd = MetadataCommand::new();
    cmd.no_deps();
    if let Some(cargo) = std::env::var_os("CARGO") {
        cmd.cargo_path(cargo);
    }
    if let Some(p) = manifest_path {
        cmd.manifest_path(p);
    }
    let metadata = cmd.exec().map_err(|e| {
        let detail = match e {
            cargo_metadata::Error::CargoMetadata { stderr } => stderr.trim().to_string(),
            other => other.to_string(),
        };
        Error::usage(
            format!("cannot read the cargo workspace: {detail}"),
            Some(
                "cargo-ship runs `cargo metadata`; fix the error above or pass `--manifest-path`"
                    .into(),
            ),
        )
    })?;

    let workspace_root = PathBuf::from(metadata.workspace_root.as_std_path());
    let members: Vec<&cargo_metadata::Package> = metadata.workspace_packages();
    let to_package = |p: &cargo_metadata::Package| {
        let manifest_path = PathBuf::from(p.manifest_path.as_std_path());
        Package {
            name: p.name.to_string(),
            version: p.version.to_string(),
            root: manifest_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            manifest_path,
            bins: p
                .targets
                .iter()
                .filter(|t| t.kind.contains(&TargetKind::Bin))
                .map(|t| t.name.clone())
                .collect(),
            workspace_manifest: workspace_root.join("Cargo.toml"),
            workspace_root: workspace_root.clone(),
            target_dir: PathBuf::from(metadata.target_directory.as_std_path()),
        }
    };
    let names: Vec<String> = members.iter().map(|p| p.name.to_string()).collect();

    if let Some(wanted) = package {
        return match members.iter().find(|p| p.name.as_str() == wanted) {
            Some(p) => Ok(to_package(p)),
            None => Err(Error::usage(
                format!(
                    "package `{wanted}` is not a member of the workspace at {}",
                    workspace_root.display()
                ),
                Some(format!("the members are: {}", list(&names))),
            )),
        };
    }

    // The member whose directory contains the starting directory; the deepest one wins.
    let start = match manifest_path {
        Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => {
            std::env::current_dir().map_err(|e| Error::io("read the current directory", ".", e))?
        }
    };
    let start = canonical(&start);
    let containing = members
        .iter()
        .filter_map(|p| {
            let dir = canonical(p.manifest_path.parent()?.as_std_path());
            start
                .starts_with(&dir)
                .then_some((dir.components().count(), *p))
        })
        .max_by_key(|(depth, _)| *depth);
    if let Some((_, p)) = containing {
        return Ok(to_package(p));
    }
    match members.as_slice() {
        [only] => Ok(to_package(only)),
        [] => Err(Error::usage(
            format!(
                "the workspace at {} has no members",
                workspace_root.display()
            ),
            None,
        )),
        _ => Err(Error::usage(
            format!(
                "the workspace at {} has several packages: {}; which one should be shipped?",
                workspace_root.display(),
                list(&names)
            ),
            Some(format!(
                "pass `-p <package>`, e.g. `-p {}`, or run from the package's directory",
                names[0]
            )),
        )),
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn finds_the_hello_fixture() {
        let p = find(Some(&repo().join("fixtures/hello/Cargo.toml")), None).unwrap();
        assert_eq!(p.name, "hello");
        assert_eq!(p.version, "0.1.0");
        assert_eq!(p.bins, vec!["hello".to_string()]);
        assert_eq!(p.default_bin(), Ok("hello"));
        assert_eq!(p.manifest_path, p.workspace_manifest);
        assert!(p.target_dir.is_absolute());
    }

    #[test]
    fn workspace_needs_a_package_choice() {
        let root = repo().join("fixtures/workspace-two/Cargo.toml");
        let err = find(Some(&root), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("several packages: `api`, `worker`"),
            "{err}"
        );
        assert!(err.help().unwrap().contains("-p api"));
        let api = find(Some(&root), Some("api")).unwrap();
        assert_eq!(api.name, "api");
        assert_eq!(api.workspace_manifest, root);
        let member = find(
            Some(&repo().join("fixtures/workspace-two/worker/Cargo.toml")),
            None,
        )
        .unwrap();
        assert_eq!(member.name, "worker");
        let err = find(Some(&root), Some("nope")).unwrap_err();
        assert!(err.help().unwrap().contains("`api`, `worker`"));
    }

    #[test]
    fn several_bins_are_listed() {
        let p = Package {
            name: "x".into(),
            version: "1.0.0".into(),
            manifest_path: "Cargo.toml".into(),
            root: ".".into(),
            bins: vec!["a".into(), "b".into()],
            workspace_root: ".".into(),
            workspace_manifest: "Cargo.toml".into(),
            target_dir: "target".into(),
        };
        assert_eq!(
            p.default_bin(),
            Err("package `x` has several binaries (`a`, `b`)".to_string())
        );
    }
}
