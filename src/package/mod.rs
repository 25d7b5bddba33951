//! The release artifact: a reproducible tar + zstd archive holding the binary, the assets and
//! `SHIP_MANIFEST.json`, stored under `<target-dir>/ship/`.
//!
//! * `manifest.rs`: the manifest written into every artifact.
//! * `store.rs`: the local artifact store (naming, listing, pruning, the build lock).
//! * this file: packing and reading.
//!
//! Same inputs give a byte-identical `.tar.zst`: `SHIP_MANIFEST.json` comes first (so
//! [`read_manifest`] stops after one entry), then every other entry sorted by path, parent
//! directories included explicitly; GNU headers with uid/gid 0, empty owner names, modes
//! normalised to 0755/0644 and every mtime set to the manifest's `built_at`; zstd runs
//! single-threaded at a fixed level.

pub mod cache;
pub mod manifest;
pub mod store;
pub mod unpack;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

pub use manifest::{FileEntry, Manifest};

use crate::build::{self, BuildOutput};
use crate::config::Config;
use crate::ui::{Event, Ui};
use crate::{Error, Result};

/// File name of the manifest inside every artifact and release directory.
pub const MANIFEST_FILE: &str = "SHIP_MANIFEST.json";

/// zstd level used for every artifact. Always single-threaded: multi-threaded zstd output
/// depends on the worker count, which would break reproducibility. Measured on a 9 MB stripped
/// binary: level 10 packs in 0.3 s to 2.29 MB, level 19 takes 4.0 s for 1.98 MB; packing runs
/// on every build (the sha256 names the artifact), so 10 it is.
pub const ZSTD_LEVEL: i32 = 10;

/// The largest manifest [`read_manifest`] accepts.
const MAX_MANIFEST: u64 = 16 << 20;

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
    /// True when an identical artifact was already in the store and was reused.
    pub reused: bool,
}

impl Artifact {
    /// The first 12 hex digits of the sha256, used in file names and output.
    pub fn short_sha(&self) -> &str {
        &self.sha256[..12]
    }
}

/// Builds the binary (see [`crate::build`]), packs it with the assets and a manifest, and
/// stores the artifact, reusing an identical one already in the store.
pub fn build_artifact(config: &Config, ui: &Ui) -> Result<Artifact> {
    build_artifacts(&[config], ui, std::slice::from_ref(ui)).map(|mut v| v.remove(0))
}

/// [`build_artifact`] for several packages of one workspace that [`build::same_build`] allows
/// to compile together: one builder invocation, then one artifact each, reported on its own
/// `ui` (a workspace deploy tags each with its package); `build_ui` reports the compile.
pub fn build_artifacts(configs: &[&Config], build_ui: &Ui, uis: &[Ui]) -> Result<Vec<Artifact>> {
    let gits: Vec<cache::GitState> = configs
        .iter()
        .map(|c| cache::git_state(&c.package_root))
        .collect();
    build_with(configs, build_ui, uis, &gits)
}

/// [`build_artifacts`] with the git state of each package read already.
fn build_with(
    configs: &[&Config],
    build_ui: &Ui,
    uis: &[Ui],
    gits: &[cache::GitState],
) -> Result<Vec<Artifact>> {
    let mut prepared = Vec::new();
    for (config, git) in configs.iter().zip(gits) {
        let what = format!("{} v{}", config.bin, config.version);
        // Problems with the assets show before a long compile.
        let assets = collect_assets(config, &what)?;
        let source = SourceInfo::read(config, git)?;
        prepared.push((what, assets, source));
    }
    let store_dir = store::store_dir(&configs[0].target_dir);
    // Held until the artifacts are stored: another build sharing the target dir would
    // otherwise overwrite a binary between compiling and packing.
    let _lock = store::lock(&store_dir, build_ui)?;
    // The inputs as they are before cargo looks at them (see `cache`).
    let before: Vec<Option<cache::Before>> =
        configs.iter().map(|c| cache::before_build(c)).collect();
    let built = build::build_together(configs, build_ui)?;
    let mut artifacts = Vec::new();
    for ((((config, ui), (what, assets, source)), built), (before, git)) in configs
        .iter()
        .zip(uis)
        .zip(prepared)
        .zip(built)
        .zip(before.into_iter().zip(gits))
    {
        let binary = built.binary.clone();
        let artifact = pack_built(config, ui, &store_dir, what, assets, source, built)?;
        if let Some(before) = before {
            cache::record(config, before, git, &binary, &artifact);
        }
        artifacts.push(artifact);
    }
    Ok(artifacts)
}

/// One artifact per configured target (`targets`: one per host architecture) of each config,
/// in the order of its targets; `uis[i]` reports about `configs[i]`, `ui` about a compile of
/// several. Builds that can share a builder invocation ([`build::same_build`]: a workspace's
/// services) run as one.
pub fn build_each_target(configs: &[&Config], ui: &Ui, uis: &[Ui]) -> Result<Vec<Vec<Artifact>>> {
    // One build per (config, target).
    let mut builds: Vec<(usize, Config)> = Vec::new();
    for (n, config) in configs.iter().enumerate() {
        for target in &config.targets {
            let mut one = (*config).clone();
            one.target = target.clone();
            one.targets = vec![target.clone()];
            builds.push((n, one));
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, (n, c)) in builds.iter().enumerate() {
        // A group never holds two builds of one config (its targets build apart).
        match groups
            .iter_mut()
            .find(|g| build::same_build(&builds[g[0]].1, c) && g.iter().all(|&j| builds[j].0 != *n))
        {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut out: Vec<Vec<(usize, Artifact)>> = vec![Vec::new(); configs.len()];
    for g in groups {
        let group_configs: Vec<&Config> = g.iter().map(|&i| &builds[i].1).collect();
        let group_uis: Vec<Ui> = g.iter().map(|&i| uis[builds[i].0].clone()).collect();
        let build_ui = match group_uis.as_slice() {
            [one] => one.clone(),
            _ => ui.clone(),
        };
        let gits: Vec<cache::GitState> = group_configs
            .iter()
            .map(|c| cache::git_state(&c.package_root))
            .collect();
        // Every artifact of the group built before from these very inputs: nothing to do.
        let fresh: Option<Vec<Artifact>> = group_configs
            .iter()
            .zip(&gits)
            .map(|(c, git)| cache::lookup(c, git))
            .collect();
        let artifacts = match fresh {
            Some(found) => {
                for (a, gui) in found.iter().zip(&group_uis) {
                    gui.detail(
                        "Unchanged",
                        format!(
                            "{} v{}: no input changed since it was built (not compiled or packed again)",
                            a.manifest.bin, a.manifest.version
                        ),
                    );
                    gui.emit(Event::Artifact {
                        path: a.path.display().to_string(),
                        size: a.size,
                        sha256: a.sha256.clone(),
                        reused: true,
                    });
                }
                found
            }
            None => build_with(&group_configs, &build_ui, &group_uis, &gits)?,
        };
        for (&i, a) in g.iter().zip(artifacts) {
            out[builds[i].0].push((i, a));
        }
    }
    Ok(out
        .into_iter()
        .map(|mut v| {
            v.sort_by_key(|(i, _)| *i);
            v.into_iter().map(|(_, a)| a).collect()
        })
        .collect())
}

/// Packs one compiled binary with its assets into the store.
fn pack_built(
    config: &Config,
    ui: &Ui,
    store_dir: &Path,
    what: String,
    assets: BTreeMap<String, Entry>,
    source: SourceInfo,
    built: BuildOutput,
) -> Result<Artifact> {
    let mut entries = assets;
    entries.insert(
        config.bin.clone(),
        Entry::File {
            source: built.binary.clone(),
            mode: 0o755,
        },
    );
    for (name, path) in &built.extra {
        entries.insert(
            name.clone(),
            Entry::File {
                source: path.clone(),
                mode: 0o755,
            },
        );
    }
    let binary = std::fs::read(&built.binary)
        .map_err(|e| Error::io("read the built binary", &built.binary, e))?;
    let glibc_required = manifest::glibc_required(&binary).map_err(|detail| Error::Build {
        purpose: format!("read the ELF headers of {}", built.binary.display()),
        detail,
        help: None,
    })?;
    drop(binary);
    let manifest = Manifest {
        schema: manifest::SCHEMA,
        package: config.package.clone(),
        version: config.version.clone(),
        bin: config.bin.clone(),
        target: config.target.to_string(),
        profile: config.profile.clone(),
        features: manifest_features(config, &built),
        git_commit: source.git_commit,
        git_dirty: source.git_dirty,
        rustc: built.rustc.clone(),
        builder: build::builder_name(built.builder).to_string(),
        built_at: rfc3339(source.built_at),
        glibc_required,
        files: BTreeMap::new(),
    };
    ui.status(
        "Packing",
        format!(
            "{what} ({} entries, zstd level {ZSTD_LEVEL})",
            entries.len() + 1
        ),
    );
    let artifact = pack(
        store_dir,
        manifest,
        &entries,
        source.built_at.max(0) as u64,
        &what,
    )?;
    // Rendered as `Packed <path> (size, sha256)`, or `Fresh` when reused.
    ui.emit(Event::Artifact {
        path: artifact.path.display().to_string(),
        size: artifact.size,
        sha256: artifact.sha256.clone(),
        reused: artifact.reused,
    });
    Ok(artifact)
}

/// The features cargo reports as enabled; the configured ones if it reported none.
fn manifest_features(config: &Config, built: &BuildOutput) -> Vec<String> {
    let mut f = if built.features.is_empty() {
        build::requested_features(config)
    } else {
        built.features.clone()
    };
    f.sort();
    f.dedup();
    f
}

/// Reads the manifest out of an artifact file. Only the archive's first entries are
/// decompressed: nothing is unpacked to disk.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let damaged = |detail: String| {
        Error::Build {
        purpose: format!("read the manifest of {}", path.display()),
        detail,
        help: Some("the file is not a cargo-ship artifact or is damaged; build it again with `cargo ship build`".into()),
    }
    };
    let file = File::open(path).map_err(|e| Error::io("open the artifact", path, e))?;
    let decoder = zstd::stream::Decoder::new(file).map_err(|e| damaged(format!("zstd: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let entries = archive
        .entries()
        .map_err(|e| damaged(format!("tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| damaged(format!("tar: {e}")))?;
        let is_manifest = entry
            .path()
            .map(|p| p == Path::new(MANIFEST_FILE))
            .unwrap_or(false);
        if !is_manifest {
            continue;
        }
        if entry.size() > MAX_MANIFEST {
            return Err(damaged(format!(
                "{MANIFEST_FILE} is {} bytes, more than a manifest can be",
                entry.size()
            )));
        }
        let mut text = String::new();
        entry
            .take(MAX_MANIFEST)
            .read_to_string(&mut text)
            .map_err(|e| damaged(format!("{MANIFEST_FILE}: {e}")))?;
        return serde_json::from_str(&text).map_err(|e| damaged(format!("{MANIFEST_FILE}: {e}")));
    }
    Err(damaged(format!("it has no {MANIFEST_FILE}")))
}

/// Opens an existing artifact file (`deploy --artifact`): its sha256, size and manifest,
/// after checking it holds only what its manifest lists ([`unpack::check_entries`]).
/// `reused` is true: nothing was built.
pub fn open_artifact(path: &Path) -> Result<Artifact> {
    let manifest = read_manifest(path)?;
    unpack::check_entries(path, &manifest)?;
    let (sha256, size) = hash_file(path).map_err(|e| Error::io("read the artifact", path, e))?;
    Ok(Artifact {
        path: path.to_path_buf(),
        sha256,
        size,
        manifest,
        reused: true,
    })
}

/// One entry of the release root, keyed by its relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A directory (packed as 0755).
    Dir,
    /// A regular file and the mode it is packed with (0755 or 0644).
    File { source: PathBuf, mode: u32 },
}

/// Walks the configured assets into release-root entries, refusing anything that cannot be
/// packed faithfully.
fn collect_assets(config: &Config, what: &str) -> Result<BTreeMap<String, Entry>> {
    let purpose = format!("pack {what}");
    let fail = |detail: String, help: &str| Error::Build {
        purpose: purpose.clone(),
        detail,
        help: Some(help.to_string()),
    };
    let mut entries = BTreeMap::new();
    for asset in &config.assets {
        let parts = normalize_asset(asset).map_err(|why| {
            fail(
                format!("asset `{asset}` in package.metadata.ship.assets {why}"),
                "list assets as paths relative to the package root, e.g. `config/default.toml` or `static`",
            )
        })?;
        let rel = parts.join("/");
        let source = config.package_root.join(&rel);
        // `walk` refuses symlinks inside an asset; a symlinked directory on the way to it
        // would pack files from outside the package.
        if let Some((link, to)) = symlinked_parent(&config.package_root, &parts) {
            return Err(fail(
                format!(
                    "asset `{asset}` in package.metadata.ship.assets is under a symlink, which is not followed: {} -> {}",
                    link.display(),
                    to.display()
                ),
                "list assets by their real path inside the package, or replace the symlinked directory with a real one",
            ));
        }
        let meta = match std::fs::symlink_metadata(&source) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(
                    format!(
                        "asset `{asset}` in package.metadata.ship.assets does not exist: {}",
                        source.display()
                    ),
                    "create it, or remove it from `assets` in the ship configuration",
                ))
            }
            Err(e) => return Err(Error::io(format!("read asset `{asset}`"), &source, e)),
        };
        for i in 1..parts.len() {
            entries.insert(parts[..i].join("/"), Entry::Dir);
        }
        walk(asset, &source, rel, meta, &mut entries).map_err(|e| match e {
            WalkError::Refused(detail) => fail(
                detail,
                "replace symlinks and special files with regular files or directories, or list what \
                 they point to as assets instead",
            ),
            WalkError::Io(e, path) => Error::io(format!("read asset `{asset}`"), path, e),
        })?;
    }
    let bins = config.bins();
    for reserved in bins.iter().map(String::as_str).chain([MANIFEST_FILE]) {
        if entries.contains_key(reserved) {
            let from = config
                .assets
                .iter()
                .find(|a| {
                    normalize_asset(a)
                        .map(|p| p[0] == reserved)
                        .unwrap_or(false)
                })
                .map(String::as_str)
                .unwrap_or(reserved);
            return Err(fail(
                format!(
                    "asset `{from}` in package.metadata.ship.assets would be packed as `{reserved}` at the \
                     release root, which is reserved for the {}",
                    if reserved == MANIFEST_FILE { "manifest" } else { "binary" }
                ),
                "move or rename the asset",
            ));
        }
    }
    Ok(entries)
}

/// The first directory on the way from `root` to the asset `parts` (the asset itself
/// excluded) that is a symlink, and where it points.
fn symlinked_parent(root: &Path, parts: &[String]) -> Option<(PathBuf, PathBuf)> {
    let mut p = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        let meta = std::fs::symlink_metadata(&p).ok()?;
        if meta.file_type().is_symlink() {
            let to = std::fs::read_link(&p).unwrap_or_default();
            return Some((p, to));
        }
    }
    None
}

/// Splits an asset path into normal components; refuses absolute paths and `..`.
fn normalize_asset(asset: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut parts = Vec::new();
    for c in Path::new(asset).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or("is not valid UTF-8")?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("leaves the package root (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    if parts.is_empty() {
        return Err("is empty (the whole package root cannot be an asset)");
    }
    Ok(parts)
}

enum WalkError {
    Refused(String),
    Io(std::io::Error, PathBuf),
}

fn walk(
    asset: &str,
    source: &Path,
    rel: String,
    meta: std::fs::Metadata,
    entries: &mut BTreeMap<String, Entry>,
) -> std::result::Result<(), WalkError> {
    let ty = meta.file_type();
    if ty.is_symlink() {
        let to = std::fs::read_link(source)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        return Err(WalkError::Refused(format!(
            "asset `{asset}` contains a symlink, which is not packed: {} -> {to}",
            source.display()
        )));
    }
    if ty.is_file() {
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        entries.insert(
            rel,
            Entry::File {
                source: source.to_path_buf(),
                mode,
            },
        );
        return Ok(());
    }
    if !ty.is_dir() {
        return Err(WalkError::Refused(format!(
            "asset `{asset}` contains {}, which is neither a file nor a directory",
            source.display()
        )));
    }
    entries.insert(rel.clone(), Entry::Dir);
    let io = |e, p: &Path| WalkError::Io(e, p.to_path_buf());
    for child in std::fs::read_dir(source).map_err(|e| io(e, source))? {
        let child = child.map_err(|e| io(e, source))?;
        let path = child.path();
        let name = child.file_name();
        let name = name.to_str().ok_or_else(|| {
            WalkError::Refused(format!(
                "asset `{asset}` contains a file name that is not UTF-8: {}",
                path.display()
            ))
        })?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(e, &path))?;
        walk(asset, &path, format!("{rel}/{name}"), meta, entries)?;
    }
    Ok(())
}

/// Where the sources came from, for the manifest and the archive's timestamps.
struct SourceInfo {
    git_commit: Option<String>,
    git_dirty: bool,
    /// Seconds since the epoch.
    built_at: i64,
}

impl SourceInfo {
    fn read(config: &Config, git_state: &cache::GitState) -> Result<SourceInfo> {
        let dir = &config.package_root;
        let git_commit = git_state.commit.clone();
        let git_dirty = git_state.dirty;
        let built_at = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| Error::Build {
                    purpose: "read SOURCE_DATE_EPOCH".into(),
                    detail: format!("`{v}` is not a number of seconds since 1970-01-01"),
                    help: Some(
                        "unset it, or set it to e.g. the output of `git log -1 --format=%ct`"
                            .into(),
                    ),
                })?,
            _ => match git(dir, &["log", "-1", "--format=%ct"]).and_then(|s| s.trim().parse().ok())
            {
                Some(t) => t,
                None => {
                    let m = std::fs::metadata(&config.manifest_path)
                        .and_then(|m| m.modified())
                        .map_err(|e| {
                            Error::io("read the modification time of", &config.manifest_path, e)
                        })?;
                    m.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0)
                }
            },
        };
        Ok(SourceInfo {
            git_commit: git_commit.map(|c| c.trim().to_string()),
            git_dirty,
            built_at,
        })
    }
}

/// `git <args>` in `dir`; `None` when git is missing, `dir` is not in a work tree, or it fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// RFC 3339 UTC with seconds, e.g. `2024-01-01T00:00:00Z`.
fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Hashes `entries` into `manifest.files`, writes the archive to a temporary file in
/// `store_dir` and renames it to its content-addressed name, or reuses an identical one.
fn pack(
    store_dir: &Path,
    mut manifest: Manifest,
    entries: &BTreeMap<String, Entry>,
    mtime: u64,
    what: &str,
) -> Result<Artifact> {
    for (path, entry) in entries {
        if let Entry::File { source, mode } = entry {
            let (sha256, size) = hash_file(source).map_err(|e| Error::io("hash", source, e))?;
            manifest.files.insert(
                path.clone(),
                FileEntry {
                    sha256,
                    size,
                    mode: *mode,
                },
            );
        }
    }
    std::fs::create_dir_all(store_dir)
        .map_err(|e| Error::io("create the artifact store", store_dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ship-")
        .suffix(".part")
        .tempfile_in(store_dir)
        .map_err(|e| Error::io("create a temporary file in", store_dir, e))?;
    let (sha256, size) = write_archive(tmp.as_file(), &manifest, entries, mtime, what)
        .map_err(|e| Error::io("write the artifact", tmp.path(), e))?;

    let name = store::file_name(&manifest.bin, &manifest.version, &manifest.target, &sha256);
    let path = store_dir.join(name);
    let reused = std::fs::metadata(&path)
        .map(|m| m.is_file() && m.len() == size)
        .unwrap_or(false);
    if reused {
        drop(tmp);
        // The newest artifact is the one just built or reused: prune keeps it.
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(|e| Error::io("update the modification time of", &path, e))?;
    } else {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("set the permissions of", tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| Error::io("store the artifact as", &path, e.error))?;
    }
    Ok(Artifact {
        path,
        sha256,
        size,
        manifest,
        reused,
    })
}

fn write_archive(
    file: &File,
    manifest: &Manifest,
    entries: &BTreeMap<String, Entry>,
    mtime: u64,
    what: &str,
) -> std::io::Result<(String, u64)> {
    let out = Hashing {
        inner: BufWriter::with_capacity(1 << 16, file),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut encoder = zstd::stream::Encoder::new(out, ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    let mut tar = tar::Builder::new(encoder);

    let json = manifest.to_json();
    let mut h = header(tar::EntryType::Regular, 0o644, json.len() as u64, mtime);
    tar.append_data(&mut h, MANIFEST_FILE, json.as_bytes())?;
    for (path, entry) in entries {
        match entry {
            Entry::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
                tar.append_data(&mut h, path, std::io::empty())?;
            }
            Entry::File { source, mode } => {
                let expected = &manifest.files[path];
                let mut h = header(tar::EntryType::Regular, *mode, expected.size, mtime);
                let mut reader = HashingReader {
                    inner: File::open(source)?.take(expected.size),
                    hasher: Sha256::new(),
                };
                tar.append_data(&mut h, path, &mut reader)?;
                if hex::encode(reader.hasher.finalize()) != expected.sha256 {
                    return Err(std::io::Error::other(format!(
                        "{} changed while {what} was being packed; run the build again",
                        source.display()
                    )));
                }
            }
        }
    }
    let encoder = tar.into_inner()?;
    let mut out = encoder.finish()?;
    out.flush()?;
    file.sync_all()?;
    Ok((hex::encode(out.hasher.finalize()), out.written))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(bin: &str, version: &str) -> Manifest {
        Manifest {
            schema: manifest::SCHEMA,
            package: bin.into(),
            version: version.into(),
            bin: bin.into(),
            target: "x86_64-unknown-linux-musl".into(),
            profile: "release".into(),
            features: vec![],
            git_commit: None,
            git_dirty: false,
            rustc: "rustc 1.95.0".into(),
            builder: "cargo".into(),
            built_at: rfc3339(1_700_000_000),
            glibc_required: None,
            files: BTreeMap::new(),
        }
    }

    /// A source tree with a "binary", an executable script, a nested dir and an empty dir.
    fn tree(dir: &Path, content: &str) -> BTreeMap<String, Entry> {
        std::fs::create_dir_all(dir.join("static/css")).unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        std::fs::write(dir.join("bin"), content).unwrap();
        std::fs::write(dir.join("static/css/site.css"), "body{}").unwrap();
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let mut e = BTreeMap::new();
        e.insert(
            "app".into(),
            Entry::File {
                source: dir.join("bin"),
                mode: 0o755,
            },
        );
        e.insert("static".into(), Entry::Dir);
        e.insert("static/css".into(), Entry::Dir);
        e.insert(
            "static/css/site.css".into(),
            Entry::File {
                source: dir.join("static/css/site.css"),
                mode: 0o644,
            },
        );
        e.insert(
            "run.sh".into(),
            Entry::File {
                source: dir.join("run.sh"),
                mode: 0o755,
            },
        );
        e.insert("empty".into(), Entry::Dir);
        e
    }

    #[test]
    fn packing_is_byte_identical_and_reuses_the_stored_artifact() {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let entries = tree(src.path(), "binary v1");
        let a = pack(
            store.path(),
            manifest("app", "1.0.0"),
            &entries,
            1_700_000_000,
            "app",
        )
        .unwrap();
        assert!(!a.reused);
        let bytes = std::fs::read(&a.path).unwrap();
        let b = pack(
            store.path(),
            manifest("app", "1.0.0"),
            &entries,
            1_700_000_000,
            "app",
        )
        .unwrap();
        assert!(b.reused && b.path == a.path && b.sha256 == a.sha256);
        std::fs::remove_file(&a.path).unwrap();
        let c = pack(
            store.path(),
            manifest("app", "1.0.0"),
            &entries,
            1_700_000_000,
            "app",
        )
        .unwrap();
        assert!(!c.reused);
        assert_eq!(std::fs::read(&c.path).unwrap(), bytes);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), c.sha256);
        assert_eq!(
            c.path.file_name().unwrap().to_str().unwrap(),
            format!(
                "app-1.0.0-x86_64-unknown-linux-musl-{}.tar.zst",
                &c.sha256[..12]
            )
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(store.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn archive_layout_headers_and_manifest() {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let entries = tree(src.path(), "binary v1");
        let a = pack(
            store.path(),
            manifest("app", "1.0.0"),
            &entries,
            1_700_000_000,
            "app",
        )
        .unwrap();
        let mut archive =
            tar::Archive::new(zstd::stream::Decoder::new(File::open(&a.path).unwrap()).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 1_700_000_000)
            );
            assert_eq!(
                (h.username().unwrap(), h.groupname().unwrap()),
                (Some(""), Some(""))
            );
            assert!(h.as_gnu().is_some());
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if let Some(f) = a.manifest.files.get(&path) {
                assert_eq!(hex::encode(Sha256::digest(&data)), f.sha256);
                assert_eq!((data.len() as u64, h.mode().unwrap()), (f.size, f.mode));
            }
            seen.push((path, h.entry_type().is_dir(), h.mode().unwrap()));
        }
        let expect = [
            (MANIFEST_FILE, false, 0o644),
            ("app", false, 0o755),
            ("empty", true, 0o755),
            ("run.sh", false, 0o755),
            ("static", true, 0o755),
            ("static/css", true, 0o755),
            ("static/css/site.css", false, 0o644),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|(p, d, m)| (p.to_string(), *d, *m))
            .collect();
        assert_eq!(seen, expect);
        let files: Vec<_> = a.manifest.files.keys().cloned().collect();
        assert_eq!(files, ["app", "run.sh", "static/css/site.css"]);
        assert_eq!(read_manifest(&a.path).unwrap(), a.manifest);
        let opened = open_artifact(&a.path).unwrap();
        assert_eq!(
            (opened.sha256, opened.size, opened.manifest),
            (a.sha256.clone(), a.size, a.manifest.clone())
        );
    }

    #[test]
    fn read_manifest_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar.zst");
        std::fs::write(&p, "not zstd").unwrap();
        let e = read_manifest(&p).unwrap_err().to_string();
        assert!(e.starts_with("failed to read the manifest of"), "{e}");
        assert!(read_manifest(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("open the artifact"));
    }

    #[test]
    fn store_lists_finds_and_prunes_by_mtime() {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, v) in ["1.0.0", "1.0.1", "1.0.2"].iter().enumerate() {
            let entries = tree(src.path(), &format!("binary {v}"));
            let a = pack(
                store.path(),
                manifest("app", v),
                &entries,
                1_700_000_000,
                "app",
            )
            .unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_800_000_000 + i as u64);
            File::options()
                .write(true)
                .open(&a.path)
                .unwrap()
                .set_modified(t)
                .unwrap();
            paths.push(a.path);
        }
        // Another bin whose name is a prefix of this one's is not touched.
        let other = pack(
            store.path(),
            manifest("app-worker", "1.0.0"),
            &tree(src.path(), "w"),
            0,
            "w",
        )
        .unwrap();
        std::fs::write(store.path().join("junk.tar.zst"), "junk").unwrap();

        let listed = store::list(store.path()).unwrap();
        assert_eq!(listed.len(), 4);
        let newest = store::find_newest(store.path(), "app", "1.0.1", "x86_64-unknown-linux-musl")
            .unwrap()
            .unwrap();
        assert_eq!(newest.path, paths[1]);
        assert!(
            store::find_newest(store.path(), "app", "9.9.9", "x86_64-unknown-linux-musl")
                .unwrap()
                .is_none()
        );

        let removed = store::prune(store.path(), "app", 2).unwrap();
        assert_eq!(removed, vec![paths[0].clone()]);
        assert!(
            !paths[0].exists() && paths[1].exists() && paths[2].exists() && other.path.exists()
        );
        // keep = 0 still keeps the newest.
        assert_eq!(
            store::prune(store.path(), "app", 0).unwrap(),
            vec![paths[1].clone()]
        );
        assert!(paths[2].exists() && store.path().join("junk.tar.zst").exists());
    }

    #[test]
    fn asset_paths_are_normalised() {
        assert_eq!(normalize_asset("./static/").unwrap(), ["static"]);
        assert_eq!(
            normalize_asset("config/default.toml").unwrap(),
            ["config", "default.toml"]
        );
        assert!(normalize_asset("../etc").unwrap_err().contains(".."));
        assert!(normalize_asset("/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(normalize_asset(".").unwrap_err().contains("empty"));
    }

    #[test]
    fn rfc3339_is_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
