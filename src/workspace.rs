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

/// What the command line says about packages, as cargo's flags do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    /// `--manifest-path`.
    pub manifest_path: Option<&'a Path>,
    /// `-p/--package`, any number of times.
    pub packages: &'a [String],
    /// `--workspace`.
    pub workspace: bool,
    /// `--exclude`.
    pub exclude: &'a [String],
}

/// The packages a command acts on. One package as [`find`] picks it (`-p NAME`, the member
/// whose directory contains the current directory, the only member); or, at the root of a
/// workspace of several members, with `--workspace` or several `-p`: every selected member
/// that has a `[package.metadata.ship]` table (possibly empty), minus `--exclude`, in the
/// order of `[workspace.metadata.ship] order` and then of `members`.
pub fn select(sel: &Selection<'_>) -> Result<Vec<Package>> {
    if sel.packages.len() == 1 && !sel.workspace {
        return find(sel.manifest_path, Some(&sel.packages[0])).map(|p| vec![p]);
    }
    let metadata = metadata(sel.manifest_path)?;
    let workspace_root = PathBuf::from(metadata.workspace_root.as_std_path());
    let members: Vec<&cargo_metadata::Package> = metadata.workspace_packages();
    let names: Vec<String> = members.iter().map(|p| p.name.to_string()).collect();
    let not_member = |wanted: &str, flag: &str| {
        Error::usage(
            format!(
                "{flag} `{wanted}`: no such package in the workspace at {}",
                workspace_root.display()
            ),
            Some(format!("the members are: {}", list(&names))),
        )
    };
    for e in sel.exclude {
        if !names.contains(e) {
            return Err(not_member(e, "--exclude"));
        }
    }
    let chosen: Vec<&cargo_metadata::Package> = if !sel.packages.is_empty() {
        let mut v = Vec::new();
        for wanted in sel.packages {
            match members.iter().find(|p| p.name.as_str() == wanted) {
                Some(p)
                    if !v
                        .iter()
                        .any(|q: &&cargo_metadata::Package| q.name == p.name) =>
                {
                    v.push(*p)
                }
                Some(_) => {}
                None => return Err(not_member(wanted, "-p")),
            }
        }
        v
    } else {
        let at_root = !sel.workspace
            && containing_member(sel.manifest_path, &members)?.is_none()
            && members.len() > 1;
        // (`--exclude` means the workspace, as it does for cargo.)
        if !sel.workspace && sel.exclude.is_empty() && !at_root {
            return pick(&metadata, sel.manifest_path, None).map(|p| vec![p]);
        }
        let shipped: Vec<&cargo_metadata::Package> = members
            .iter()
            .copied()
            .filter(|p| p.metadata.get("ship").is_some())
            .filter(|p| !sel.exclude.iter().any(|e| e == p.name.as_str()))
            .collect();
        if shipped.is_empty() {
            return Err(Error::usage(
                format!(
                    "no member of the workspace at {} has a `[package.metadata.ship]` table{}",
                    workspace_root.display(),
                    if sel.exclude.is_empty() { "" } else { " (after --exclude)" }
                ),
                Some(format!(
                    "add `[package.metadata.ship]` (it may be empty) to each service's Cargo.toml, or pass `-p <package>` (members: {})",
                    list(&names)
                )),
            ));
        }
        shipped
    };
    let order = workspace_order(&metadata, &workspace_root, &names)?;
    let rank = |p: &cargo_metadata::Package| {
        let member = names.iter().position(|n| n == p.name.as_str()).unwrap_or(0);
        match order.iter().position(|o| o == p.name.as_str()) {
            Some(i) => (0, i),
            None => (1, member),
        }
    };
    let mut chosen = chosen;
    chosen.sort_by_key(|p| rank(p));
    Ok(chosen
        .into_iter()
        .map(|p| to_package(p, &metadata))
        .collect())
}

/// `[workspace.metadata.ship] order`: package names, each a member.
fn workspace_order(
    metadata: &cargo_metadata::Metadata,
    root: &Path,
    names: &[String],
) -> Result<Vec<String>> {
    let Some(order) = metadata
        .workspace_metadata
        .get("ship")
        .and_then(|s| s.get("order"))
    else {
        return Ok(Vec::new());
    };
    let at = format!(
        "{}: `workspace.metadata.ship.order`",
        root.join("Cargo.toml").display()
    );
    let list_of = order.as_array().and_then(|a| {
        a.iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
    });
    let Some(order) = list_of else {
        return Err(Error::usage(
            format!("{at}: expected an array of package names, e.g. [\"worker\", \"api\"]"),
            None,
        ));
    };
    for o in &order {
        if !names.contains(o) {
            return Err(Error::usage(
                format!("{at}: `{o}` is not a member of the workspace"),
                Some(format!("the members are: {}", list(names))),
            ));
        }
    }
    Ok(order)
}

/// `cargo metadata --no-deps`, or what it said last time when none of its inputs changed
/// ([`crate::inputs::cached_metadata`]).
fn metadata(manifest_path: Option<&Path>) -> Result<cargo_metadata::Metadata> {
    crate::inputs::cached_metadata(manifest_path, || run_metadata(manifest_path))
}

fn run_metadata(manifest_path: Option<&Path>) -> Result<cargo_metadata::Metadata> {
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

    Ok(metadata)
}

fn to_package(p: &cargo_metadata::Package, metadata: &cargo_metadata::Metadata) -> Package {
    let workspace_root = PathBuf::from(metadata.workspace_root.as_std_path());
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
        workspace_root,
        target_dir: PathBuf::from(metadata.target_directory.as_std_path()),
    }
}

/// The member whose directory contains the starting directory (`--manifest-path`'s, or the
/// current one); the deepest one wins.
fn containing_member<'m>(
    manifest_path: Option<&Path>,
    members: &[&'m cargo_metadata::Package],
) -> Result<Option<&'m cargo_metadata::Package>> {
    let start = match manifest_path {
        Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => {
            std::env::current_dir().map_err(|e| Error::io("read the current directory", ".", e))?
        }
    };
    let start = canonical(&start);
    Ok(members
        .iter()
        .filter_map(|p| {
            let dir = canonical(p.manifest_path.parent()?.as_std_path());
            start
                .starts_with(&dir)
                .then_some((dir.components().count(), *p))
        })
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, p)| p))
}

/// At the root of a workspace of several members (no member's directory contains the
/// starting point, as for a whole-workspace deploy): the root's Cargo.toml and the members'
/// names. `None` anywhere else.
pub fn root_of_several(manifest_path: Option<&Path>) -> Result<Option<(PathBuf, Vec<String>)>> {
    let metadata = metadata(manifest_path)?;
    let members: Vec<&cargo_metadata::Package> = metadata.workspace_packages();
    if members.len() < 2 || containing_member(manifest_path, &members)?.is_some() {
        return Ok(None);
    }
    let root = PathBuf::from(metadata.workspace_root.as_std_path()).join("Cargo.toml");
    Ok(Some((
        root,
        members.iter().map(|p| p.name.to_string()).collect(),
    )))
}

/// Finds the one package to ship. `manifest_path` is `--manifest-path`, `package` is `-p`.
pub fn find(manifest_path: Option<&Path>, package: Option<&str>) -> Result<Package> {
    pick(&metadata(manifest_path)?, manifest_path, package)
}

/// [`find`] in metadata already read.
fn pick(
    metadata: &cargo_metadata::Metadata,
    manifest_path: Option<&Path>,
    package: Option<&str>,
) -> Result<Package> {
    let workspace_root = PathBuf::from(metadata.workspace_root.as_std_path());
    let members: Vec<&cargo_metadata::Package> = metadata.workspace_packages();
    let names: Vec<String> = members.iter().map(|p| p.name.to_string()).collect();

    if let Some(wanted) = package {
        return match members.iter().find(|p| p.name.as_str() == wanted) {
            Some(p) => Ok(to_package(p, metadata)),
            None => Err(Error::usage(
                format!(
                    "package `{wanted}` is not a member of the workspace at {}",
                    workspace_root.display()
                ),
                Some(format!("the members are: {}", list(&names))),
            )),
        };
    }
    if let Some(p) = containing_member(manifest_path, &members)? {
        return Ok(to_package(p, metadata));
    }
    match members.as_slice() {
        [only] => Ok(to_package(only, metadata)),
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
