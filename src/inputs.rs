//! Stamps of local inputs, so work whose inputs did not change is not done again: `cargo
//! metadata` (here) and the build and packing of an artifact ([`crate::package::cache`]).
//!
//! An input is stamped, not read: the size, modification and change times (nanoseconds) and
//! inode of a file or directory, or its absence. Writing, replacing, touching, renaming or
//! chmod-ing a file changes its stamp (the change time cannot be set back by any tool); a
//! directory's stamp changes when an entry appears or goes. Stamps are hashed together with
//! the environment ([`env_digest`]); any difference is a miss, and a miss does the work as
//! before. A record is only ever a shortcut to a result the full path would give.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One path's stamp: size, mtime (s, ns), ctime (s, ns), inode; `None` when it is absent.
pub type Stamp = Option<[i64; 6]>;

/// The stamp of `path` now (symlinks followed).
pub fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some([
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino() as i64,
    ])
}

/// The stamps of `paths` now.
pub fn stamps(paths: &BTreeSet<PathBuf>) -> BTreeMap<PathBuf, Stamp> {
    paths.iter().map(|p| (p.clone(), stamp(p))).collect()
}

/// One hash over paths and their stamps.
pub fn digest_of(stamps: &BTreeMap<PathBuf, Stamp>) -> String {
    let mut h = Sha256::new();
    for (p, s) in stamps {
        h.update(p.as_os_str().as_bytes());
        h.update([0]);
        match s {
            Some(s) => h.update(format!("{s:?}")),
            None => h.update("absent"),
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// How long ago an input must have changed to be recorded: ten times the coarsest clock tick
/// file times are taken from (HZ=100), plus room for a file server's clock running behind.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// True when every stamped input last changed more than [`SETTLE`] before `started`. The
/// clock behind file times is coarse (a few ms): an edit right after a stamp was taken may
/// leave the same times behind, so inputs that changed just now are never recorded.
pub fn settled(stamps: &BTreeMap<PathBuf, Stamp>, started: std::time::SystemTime) -> bool {
    stamps.values().flatten().all(|s| {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(s[3].max(0) as u64, s[4].clamp(0, 999_999_999) as u32);
        changed + SETTLE < started
    })
}

/// Paths and the digest of their stamps when they were recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamped {
    /// Every input path (files and directories, absent ones too).
    pub paths: BTreeSet<PathBuf>,
    /// [`digest_of`] their stamps then.
    pub digest: String,
}

impl Stamped {
    /// Records `stamps`.
    pub fn of(stamps: &BTreeMap<PathBuf, Stamp>) -> Stamped {
        Stamped {
            paths: stamps.keys().cloned().collect(),
            digest: digest_of(stamps),
        }
    }

    /// True when no input changed since it was recorded.
    pub fn unchanged(&self) -> bool {
        digest_of(&stamps(&self.paths)) == self.digest
    }
}

/// Environment variables that describe the terminal or the session, never a build: left out
/// of [`env_digest`] so a new shell does not miss. Anything not listed counts (a variable
/// nobody reads costs a miss, never a wrong result).
fn volatile(name: &OsString) -> bool {
    const EXACT: &[&str] = &[
        "_",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "TERM",
        "COLORTERM",
        "COLUMNS",
        "LINES",
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "WINDOWID",
        "MAIL",
        "LS_COLORS",
        "PS1",
        "PS2",
        "PROMPT_COMMAND",
        "HISTFILE",
        "HISTSIZE",
        "HISTFILESIZE",
        "HISTCONTROL",
        "GPG_TTY",
        "DBUS_SESSION_BUS_ADDRESS",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "STY",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "CARGO_MAKEFLAGS",
    ];
    const PREFIX: &[&str] = &[
        "SSH_",
        "TERM_",
        "TMUX",
        "XDG_SESSION_",
        "CARGO_TERM_",
        // cargo-ship's own settings (ssh config, known hosts): not build inputs.
        "CARGO_SHIP_",
    ];
    let Some(n) = name.to_str() else { return false };
    EXACT.contains(&n) || PREFIX.iter().any(|p| n.starts_with(p))
}

/// A hash of the environment (every variable but [`volatile`] ones): what cargo, rustc, build
/// scripts and `SOURCE_DATE_EPOCH` may read.
pub fn env_digest() -> String {
    let mut vars: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(k, _)| !volatile(k)).collect();
    vars.sort();
    let mut h = Sha256::new();
    for (k, v) in vars {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Reads a record written by [`write_record`]; `None` when it is missing or unreadable.
pub fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes a record atomically (a temporary file renamed over it). Failing to write only
/// costs the next run its shortcut, so errors are ignored.
pub fn write_record<T: Serialize>(path: &Path, record: &T) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(json) = serde_json::to_vec(record) else {
        return;
    };
    let Ok(mut tmp) = tempfile::Builder::new().prefix(".rec-").tempfile_in(dir) else {
        return;
    };
    use std::io::Write;
    if tmp.write_all(&json).is_ok() {
        let _ = tmp.persist(path);
    }
}

/// `$XDG_CACHE_HOME/cargo-ship`, else `~/.cache/cargo-ship`.
fn user_cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("cargo-ship"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/cargo-ship"))
}

/// `dir` and every ancestor of it.
pub fn ancestors(dir: &Path) -> impl Iterator<Item = &Path> {
    dir.ancestors()
}

/// The cargo configuration files cargo reads when started in `dir`: `.cargo/config` and
/// `.cargo/config.toml` in `dir` and each ancestor, and in `$CARGO_HOME`.
pub fn cargo_config_paths(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    for a in ancestors(dir) {
        out.insert(a.join(".cargo/config"));
        out.insert(a.join(".cargo/config.toml"));
    }
    if let Some(home) = cargo_home() {
        out.insert(home.join("config"));
        out.insert(home.join("config.toml"));
    }
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// What `cargo metadata --no-deps` was made from and what it said.
#[derive(Serialize, Deserialize)]
struct MetadataRecord {
    inputs: Stamped,
    metadata: serde_json::Value,
}

/// `cargo metadata --no-deps` (run by `run`) for `--manifest-path` (or cargo's search from the
/// current directory), or what it said last time when none of its inputs changed: every
/// member's Cargo.toml, directory, `src` and `src/bin` (new binaries), the directory holding
/// each member (new members of a glob), Cargo.toml in every ancestor of where cargo starts (a
/// workspace around it), cargo's configuration files, cargo itself and the environment.
pub fn cached_metadata(
    manifest_path: Option<&Path>,
    run: impl FnOnce() -> crate::Result<cargo_metadata::Metadata>,
) -> crate::Result<cargo_metadata::Metadata> {
    let cwd = std::env::current_dir().ok();
    let record_path = user_cache_dir().zip(cwd.as_ref()).map(|(dir, cwd)| {
        let mut h = Sha256::new();
        h.update(env_digest());
        h.update([0]);
        h.update(cwd.as_os_str().as_bytes());
        h.update([0]);
        if let Some(m) = manifest_path {
            h.update(m.as_os_str().as_bytes());
        }
        dir.join("metadata")
            .join(format!("{}.json", &hex::encode(h.finalize())[..32]))
    });
    if let Some(rec) = record_path
        .as_deref()
        .and_then(read_record::<MetadataRecord>)
    {
        if rec.inputs.unchanged() {
            if let Ok(m) = serde_json::from_value(rec.metadata) {
                return Ok(m);
            }
        }
    }
    // Stamped before cargo reads them: an edit while it runs is a miss next time.
    let mut paths = BTreeSet::new();
    let start = match manifest_path {
        Some(m) => m
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        None => cwd.clone().unwrap_or_else(|| PathBuf::from(".")),
    };
    let start = std::fs::canonicalize(&start).unwrap_or(start);
    for a in ancestors(&start) {
        paths.insert(a.join("Cargo.toml"));
    }
    if let Some(m) = manifest_path {
        paths.insert(std::fs::canonicalize(m).unwrap_or_else(|_| m.to_path_buf()));
    }
    if let Some(cwd) = &cwd {
        cargo_config_paths(cwd, &mut paths);
    }
    cargo_config_paths(&start, &mut paths);
    if let Some(cargo) = std::env::var_os("CARGO").filter(|c| !c.is_empty()) {
        paths.insert(PathBuf::from(cargo));
    }
    let started = std::time::SystemTime::now();
    let before = stamps(&paths);
    let metadata = run()?;
    let mut after_paths = BTreeSet::new();
    let root = metadata.workspace_root.as_std_path();
    after_paths.insert(root.join("Cargo.toml"));
    member_dirs(root, &mut after_paths);
    for p in &metadata.packages {
        let manifest = p.manifest_path.as_std_path();
        after_paths.insert(manifest.to_path_buf());
        if let Some(dir) = manifest.parent() {
            after_paths.insert(dir.to_path_buf());
            after_paths.insert(dir.join("src"));
            after_paths.insert(dir.join("src/bin"));
        }
        for t in &p.targets {
            if let Some(dir) = t.src_path.as_std_path().parent() {
                after_paths.insert(dir.to_path_buf());
            }
        }
    }
    // Paths first seen now must not have changed since cargo started.
    let mut all = before.clone();
    for p in after_paths {
        all.entry(p.clone()).or_insert_with(|| stamp(&p));
    }
    let unchanged = before.iter().all(|(p, s)| stamp(p) == *s);
    if let (Some(path), true, true) = (record_path, unchanged, settled(&all, started)) {
        if let Ok(value) = serde_json::to_value(&metadata) {
            write_record(
                &path,
                &MetadataRecord {
                    inputs: Stamped::of(&all),
                    metadata: value,
                },
            );
        }
    }
    Ok(metadata)
}

/// The directories `workspace.members` of the root Cargo.toml names, each glob by the
/// directory before its first wildcard: a member added under one of them changes its stamp.
fn member_dirs(root: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(text) = std::fs::read_to_string(root.join("Cargo.toml")) else {
        return;
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return;
    };
    let members = doc
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array());
    for m in members.into_iter().flatten().filter_map(|m| m.as_str()) {
        let fixed = match m.find(['*', '?', '[']) {
            Some(i) => m[..i].rsplit_once('/').map(|(d, _)| d).unwrap_or(""),
            None => m,
        };
        out.insert(root.join(fixed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_content_and_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.rs");
        std::fs::write(&f, "fn main() {}").unwrap();
        let paths: BTreeSet<PathBuf> = [f.clone(), dir.path().to_path_buf(), dir.path().join("b")]
            .into_iter()
            .collect();
        let rec = Stamped::of(&stamps(&paths));
        assert!(rec.unchanged());
        // Same size, new content: the change time moves even if mtime is put back.
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&f, "fn main() {1}").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(!rec.unchanged());
        let rec = Stamped::of(&stamps(&paths));
        std::fs::write(dir.path().join("b"), "").unwrap();
        assert!(!rec.unchanged(), "a file that appears is a change");
    }

    #[test]
    fn the_terminal_does_not_count_the_build_settings_do() {
        assert!(volatile(&"SSH_AUTH_SOCK".into()));
        assert!(volatile(&"PWD".into()));
        assert!(!volatile(&"RUSTFLAGS".into()));
        assert!(!volatile(&"SOURCE_DATE_EPOCH".into()));
        assert!(!volatile(&"CARGO_TARGET_DIR".into()));
        assert!(!volatile(&"PATH".into()));
    }
}
