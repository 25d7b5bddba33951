//! The artifact cache: what each stored artifact was built from, so building the same inputs
//! again skips `rustc -vV`, the no-op `cargo build` and re-packing, and a deploy of an already
//! built artifact starts connecting at once.
//!
//! A record (`<target-dir>/ship/.inputs/<bin>-<key>.json`, one per package, target, profile,
//! features, builder, strip and assets) holds the artifact and the stamps
//! ([`crate::inputs`]) of every input:
//!
//! * every file and directory of the workspace (the target dir, `.git` and other cargo target
//!   dirs excepted): sources, Cargo.toml and Cargo.lock, build scripts and what they read,
//!   assets, a new file anywhere;
//! * every file cargo's dep-info for the binary (`<bin>.d` beside it) lists: the sources of
//!   every dependency and what build scripts declared, plus every file of a path dependency
//!   outside the workspace;
//! * the toolchain: `$CARGO`, `cargo` and `rustc` on `PATH` (and `$RUSTC`), rustup's settings,
//!   toolchains and update hashes, `rust-toolchain(.toml)` above the package, cargo's
//!   configuration files;
//! * the environment ([`crate::inputs::env_digest`]: `RUSTFLAGS`, `SOURCE_DATE_EPOCH`, ...) and
//!   the git commit and dirty state (both in the manifest), read with one `git status`.
//!
//! Only plain `cargo` builds are recorded (zigbuild and cross bring toolchains of their own).
//! A record is written after a build only when no input changed from just before the build
//! until after packing. Inputs that changed too recently for their stamps to be trusted are
//! recorded by content ([`crate::inputs::Clock`]), so a deploy right after an edit, a commit
//! and a build finds the artifact; the directory holding the target dir is recorded by its
//! listing without it, and files under the target dir (build scripts' `OUT_DIR`) are outputs,
//! not inputs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Artifact, Manifest};
use crate::config::Config;
use crate::inputs::{self, Check, Stamped};

/// Beyond this many files and directories in the workspace, nothing is recorded: stamping
/// them would cost more than asking cargo.
const MAX_WALK: usize = 50_000;

/// The git commit of the package's directory and whether its tree has changes (both go into
/// the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    /// `HEAD`, when the package is in a git work tree with a commit.
    pub commit: Option<String>,
    /// Uncommitted changes (or untracked files) under the package's directory.
    pub dirty: bool,
}

/// [`GitState`] of `dir`, with one `git status --porcelain=v2 --branch -- .` (none at all when
/// no ancestor has a `.git` and `GIT_DIR` is unset).
pub fn git_state(dir: &Path) -> GitState {
    let none = GitState {
        commit: None,
        dirty: false,
    };
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if std::env::var_os("GIT_DIR").is_none() && !abs.ancestors().any(|a| a.join(".git").exists()) {
        return none;
    }
    let Ok(out) = Command::new("git")
        .args(["status", "--porcelain=v2", "--branch", "--", "."])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return none;
    };
    if !out.status.success() {
        return none;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("# branch.oid "))
        .map(str::trim)
        .filter(|c| *c != "(initial)")
        .map(str::to_string);
    let dirty = commit.is_some() && text.lines().any(|l| !l.starts_with('#') && !l.is_empty());
    GitState { commit, dirty }
}

#[derive(Serialize, Deserialize)]
struct Record {
    env: String,
    git: GitState,
    inputs: Stamped,
    path: PathBuf,
    sha256: String,
    size: u64,
    manifest: Manifest,
}

/// True when the cache applies to `config`: a plain cargo build.
pub fn applies(config: &Config) -> bool {
    crate::build::plain_cargo(config)
}

fn record_path(config: &Config) -> PathBuf {
    let mut features = crate::build::requested_features(config);
    features.sort();
    let key = serde_json::json!([
        env!("CARGO_PKG_VERSION"),
        config.manifest_path,
        config.package,
        config.version,
        config.bin,
        config.target.to_string(),
        config.profile,
        features,
        config.all_features,
        config.no_default_features,
        crate::build::builder_name(config.builder),
        config.strip,
        config.assets,
        config.target_dir,
    ]);
    let key = hex::encode(Sha256::digest(key.to_string()));
    super::store::store_dir(&config.target_dir)
        .join(".inputs")
        .join(format!("{}-{}.json", config.bin, &key[..16]))
}

/// The artifact built before from exactly these inputs, when its record is intact, no input
/// changed and the artifact is still in the store (its modification time is set to now, as
/// packing does, so pruning keeps it). A record whose racy inputs are racy no more is written
/// again with them on stat checks.
pub fn lookup(config: &Config, git: &GitState) -> Option<Artifact> {
    if !applies(config) {
        return None;
    }
    let path = record_path(config);
    let rec: Record = inputs::read_record(&path)?;
    if rec.git != *git || rec.env != inputs::env_digest() {
        return None;
    }
    let Check::Unchanged(renewed) = rec.inputs.check(path.parent()?) else {
        return None;
    };
    let meta = std::fs::metadata(&rec.path).ok()?;
    if !meta.is_file() || meta.len() != rec.size {
        return None;
    }
    std::fs::File::options()
        .write(true)
        .open(&rec.path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .ok()?;
    let artifact = Artifact {
        path: rec.path.clone(),
        sha256: rec.sha256.clone(),
        size: rec.size,
        manifest: rec.manifest.clone(),
        reused: true,
    };
    if let Some(inputs) = renewed {
        inputs::write_record(&path, &Record { inputs, ..rec });
    }
    Some(artifact)
}

/// The inputs as they were just before a build.
pub struct Before {
    root: PathBuf,
    env: String,
    inputs: inputs::Before,
}

/// The workspace `config`'s package belongs to: the nearest directory from the package's up
/// whose Cargo.toml has a `[workspace]` table, else the package's own.
fn workspace_root(config: &Config) -> PathBuf {
    config
        .package_root
        .ancestors()
        .find(|a| {
            std::fs::read_to_string(a.join("Cargo.toml"))
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .is_some_and(|t| t.contains_key("workspace"))
        })
        .unwrap_or(&config.package_root)
        .to_path_buf()
}

/// Stamps every input known before the build: the workspace, the toolchain, cargo's
/// configuration and whatever the previous record listed (the dependencies' sources).
pub fn before_build(config: &Config) -> Option<Before> {
    if !applies(config) {
        return None;
    }
    let root = workspace_root(config);
    let mut paths = BTreeSet::new();
    walk(&root, &config.target_dir, &mut paths)?;
    for a in root.ancestors() {
        paths.insert(a.join("Cargo.toml"));
    }
    toolchain(config, &mut paths);
    inputs::cargo_config_paths(&config.package_root, &mut paths);
    let record = record_path(config);
    if let Some(prev) = inputs::read_record::<Record>(&record) {
        paths.extend(prev.inputs.all_paths().cloned());
    }
    // The directory holding the target dir is recorded by its listing without it: the first
    // build creates it.
    let target = canonical_target(&config.target_dir);
    let listed = target
        .parent()
        .zip(target.file_name())
        .map(|(d, n)| (d.to_path_buf(), PathBuf::from(n)));
    Some(Before {
        root,
        env: inputs::env_digest(),
        inputs: inputs::Before::take(&paths, record.parent()?, listed),
    })
}

/// The target dir with its parent's symlinks resolved (it may not exist yet).
fn canonical_target(target_dir: &Path) -> PathBuf {
    match (target_dir.parent(), target_dir.file_name()) {
        (Some(d), Some(n)) => std::fs::canonicalize(d)
            .map(|d| d.join(n))
            .unwrap_or_else(|_| target_dir.to_path_buf()),
        _ => target_dir.to_path_buf(),
    }
}

/// Records `artifact` as the result of the inputs stamped in `before` plus the files cargo's
/// dep-info lists for `binary`, unless any input changed meanwhile. What build scripts wrote
/// under the target dir (`OUT_DIR`) is their output, not an input: their inputs are.
pub fn record(config: &Config, before: Before, git: &GitState, binary: &Path, artifact: &Artifact) {
    let Some(deps) = dep_info(Path::new(&format!("{}.d", binary.display()))) else {
        return;
    };
    let target = canonical_target(&config.target_dir);
    let mut later = BTreeSet::new();
    let mut outside = BTreeSet::new();
    for d in deps {
        if d.starts_with(&target) || d.starts_with(&config.target_dir) {
            continue;
        }
        if let Some(root) = path_dependency_root(&d, &before.root, &config.target_dir) {
            outside.insert(root);
        }
        later.insert(d);
    }
    for root in outside {
        if walk(&root, &config.target_dir, &mut later).is_none() {
            return;
        }
    }
    let path = record_path(config);
    let Some(dir) = path.parent() else { return };
    let Some(stamped) = before.inputs.finish(&later, dir) else {
        return;
    };
    if inputs::env_digest() != before.env {
        return;
    }
    inputs::write_record(
        &path,
        &Record {
            env: before.env,
            git: git.clone(),
            inputs: stamped,
            path: artifact.path.clone(),
            sha256: artifact.sha256.clone(),
            size: artifact.size,
            manifest: artifact.manifest.clone(),
        },
    );
}

/// Every file and directory under `root`, not following symlinks, without `skip` (the
/// target dir), `.git` and other cargo target dirs (`CACHEDIR.TAG`); `None` past [`MAX_WALK`]
/// or when a directory cannot be read.
fn walk(root: &Path, skip: &Path, out: &mut BTreeSet<PathBuf>) -> Option<()> {
    let skip = std::fs::canonicalize(skip).unwrap_or_else(|_| skip.to_path_buf());
    let root = std::fs::canonicalize(root).ok()?;
    let mut stack = vec![root.clone()];
    out.insert(root);
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let path = entry.path();
            if entry.file_type().ok()?.is_dir() {
                if path == skip || entry.file_name() == ".git" || path.join("CACHEDIR.TAG").exists()
                {
                    continue;
                }
                stack.push(path.clone());
            }
            out.insert(path);
            seen += 1;
            if seen > MAX_WALK {
                return None;
            }
        }
    }
    Some(())
}

/// The toolchain's files: `$CARGO` and the rustc beside it, `cargo`, `rustc` and `$RUSTC` on
/// `PATH`, rustup's settings, toolchains and update hashes, `rust-toolchain(.toml)` files.
fn toolchain(config: &Config, out: &mut BTreeSet<PathBuf>) {
    if let Some(cargo) = std::env::var_os("CARGO").filter(|c| !c.is_empty()) {
        let cargo = PathBuf::from(cargo);
        if let Some(dir) = cargo.parent() {
            out.insert(dir.join("rustc"));
        }
        out.insert(cargo);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |name: &str| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    let mut names = vec!["cargo".to_string(), "rustc".to_string()];
    if let Some(rustc) = std::env::var_os("RUSTC").filter(|r| !r.is_empty()) {
        let rustc = PathBuf::from(rustc);
        if rustc.components().count() > 1 {
            out.insert(rustc);
        } else {
            names.push(rustc.to_string_lossy().into_owned());
        }
    }
    for n in names {
        if let Some(p) = on_path(&n) {
            out.insert(p);
        }
    }
    let rustup = std::env::var_os("RUSTUP_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")));
    if let Some(r) = rustup {
        out.insert(r.join("settings.toml"));
        out.insert(r.join("toolchains"));
        out.insert(r.join("update-hashes"));
        if let Ok(entries) = std::fs::read_dir(r.join("update-hashes")) {
            out.extend(entries.flatten().map(|e| e.path()));
        }
    }
    for a in config.package_root.ancestors() {
        out.insert(a.join("rust-toolchain"));
        out.insert(a.join("rust-toolchain.toml"));
    }
}

/// The files cargo's dep-info (`<target>: <dep> <dep> ...`, spaces escaped as `\ `) lists;
/// `None` when it is missing or lists a relative path (`build.dep-info-basedir`).
fn dep_info(path: &Path) -> Option<BTreeSet<PathBuf>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        let mut cur = String::new();
        let mut chars = deps.chars().peekable();
        let push = |cur: &mut String, out: &mut BTreeSet<PathBuf>| -> bool {
            if cur.is_empty() {
                return true;
            }
            let p = PathBuf::from(std::mem::take(cur));
            let absolute = p.is_absolute();
            out.insert(p);
            absolute
        };
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek().is_some_and(|n| *n == ' ' || *n == '\\') => {
                    cur.push(chars.next().unwrap_or(' '));
                }
                ' ' => {
                    if !push(&mut cur, &mut out) {
                        return None;
                    }
                }
                c => cur.push(c),
            }
        }
        if !push(&mut cur, &mut out) {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The package directory of a path dependency outside the workspace that `file` belongs to
/// (the nearest ancestor with a Cargo.toml); `None` for the workspace's own files, the target
/// dir and cargo's and rustup's homes (registry and git sources do not change in place).
fn path_dependency_root(file: &Path, workspace_root: &Path, target_dir: &Path) -> Option<PathBuf> {
    let homes: Vec<PathBuf> = ["CARGO_HOME", "RUSTUP_HOME"]
        .iter()
        .filter_map(|v| {
            std::env::var_os(v)
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
        })
        .chain(std::env::var_os("HOME").into_iter().flat_map(|h| {
            let h = PathBuf::from(h);
            [h.join(".cargo"), h.join(".rustup")]
        }))
        .collect();
    if file.starts_with(workspace_root)
        || file.starts_with(target_dir)
        || homes.iter().any(|h| file.starts_with(h))
    {
        return None;
    }
    file.ancestors()
        .skip(1)
        .find(|a| a.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_lists_escaped_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("hello.d");
        std::fs::write(
            &d,
            "/t/release/hello: /w/src/main.rs /w/my\\ dir/x.rs /r/lib.rs\n",
        )
        .unwrap();
        let got: Vec<PathBuf> = dep_info(&d).unwrap().into_iter().collect();
        assert_eq!(
            got,
            vec![
                PathBuf::from("/r/lib.rs"),
                PathBuf::from("/w/my dir/x.rs"),
                PathBuf::from("/w/src/main.rs"),
            ]
        );
        std::fs::write(&d, "hello: src/main.rs\n").unwrap();
        assert!(dep_info(&d).is_none(), "relative paths are not trusted");
    }

    #[test]
    fn git_state_outside_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            git_state(dir.path()),
            GitState {
                commit: None,
                dirty: false
            }
        );
    }
}
