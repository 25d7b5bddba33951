//! Stamps of local inputs, so work whose inputs did not change is not done again: `cargo
//! metadata` (here) and the build and packing of an artifact ([`crate::package::cache`]).
//!
//! An input is stamped, not read: the size, modification and change times (nanoseconds) and
//! inode of a file or directory, or its absence. Writing, replacing, touching, renaming or
//! chmod-ing a file changes its stamp (the change time cannot be set back by any tool); a
//! directory's stamp changes when an entry appears or goes. Stamps are hashed together with
//! the environment ([`env_digest`]); any difference is a miss, and a miss does the work as
//! before. A record is only ever a shortcut to a result the full path would give.
//!
//! File times come from a coarse clock, so an input changed in the same tick as the record
//! was taken could change again unseen: such "racy" inputs are recorded by content (sha256,
//! size and mode; a directory by its entry names) and read on later runs, as git does with
//! its racy index entries, until the file system's clock has moved past them; then the record
//! is written again with their stamps ([`Clock`], [`Stamped::check`]).

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
    std::fs::metadata(path).ok().as_ref().map(stamp_of)
}

/// The stamp of metadata `m`.
fn stamp_of(m: &std::fs::Metadata) -> [i64; 6] {
    [
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino() as i64,
    ]
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

/// Beyond the clock of its own file system, how far the clock behind an input on another file
/// system (another device) may be behind, or coarser (whole seconds).
const OTHER_FS_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// The file system's clock at one moment: the modification time of a marker file just created
/// (and removed again) beside a record, and its device.
///
/// File times come from a coarse clock (a kernel tick: 4 ms here) or are cut to the file
/// system's granularity: a file written again within the tick of its last change keeps the
/// same stamp. An input whose last change is not before the marker's time may have been
/// changed again after it was stamped without its stamp showing it ("racy", as git calls its
/// index entries of the same kind): such an input is recorded by its content instead. The
/// marker, not the system clock, is the reference: it is taken from the same clock, with the
/// same granularity, as the inputs' times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    dev: u64,
    at: (i64, i64),
}

impl Clock {
    /// The clock of the file system holding `dir` (created when missing), now; `None` when no
    /// file can be created there.
    pub fn now(dir: &Path) -> Option<Clock> {
        std::fs::create_dir_all(dir).ok()?;
        let marker = tempfile::Builder::new()
            .prefix(".clock-")
            .tempfile_in(dir)
            .ok()?;
        let m = marker.as_file().metadata().ok()?;
        Some(Clock {
            dev: m.dev(),
            at: (m.mtime(), m.mtime_nsec()),
        })
    }

    /// A clock at `secs` (seconds since the epoch) on device `dev` (for tests).
    pub fn at(dev: u64, secs: i64) -> Clock {
        Clock { dev, at: (secs, 0) }
    }

    /// True when an input with metadata `m`, stamped after this clock was read, last changed
    /// before it: any later change gives it a newer stamp. On another device the input's
    /// clock may be behind or coarser: it must be [`OTHER_FS_SLACK`] older.
    pub fn trusts(&self, m: &std::fs::Metadata) -> bool {
        let changed = (m.mtime(), m.mtime_nsec()).max((m.ctime(), m.ctime_nsec()));
        let limit = if m.dev() == self.dev {
            self.at
        } else {
            (self.at.0 - OTHER_FS_SLACK.as_secs() as i64, self.at.1)
        };
        changed < limit
    }
}

/// What a racy input held when it was recorded: it is checked by content on later runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// A file: the sha256 of its bytes, its size and mode.
    File {
        sha256: String,
        size: u64,
        mode: u32,
    },
    /// A directory: the sha256 of its sorted entry names, `without` one (the target dir, in
    /// the directory that holds it).
    Dir {
        names: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        without: Option<PathBuf>,
    },
}

/// The content of `path` (symlinks followed); `None` when it is absent, unreadable or neither
/// a file nor a directory. A directory's listing leaves out the entry named `without`.
pub fn content(path: &Path, without: Option<&Path>) -> Option<Content> {
    let m = std::fs::metadata(path).ok()?;
    if m.is_dir() {
        let mut names: Vec<OsString> = std::fs::read_dir(path)
            .ok()?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ok()?;
        names.retain(|n| Some(Path::new(n)) != without);
        names.sort();
        let mut h = Sha256::new();
        for n in names {
            h.update(n.as_bytes());
            h.update([0]);
        }
        return Some(Content::Dir {
            names: hex::encode(h.finalize()),
            without: without.map(Path::to_path_buf),
        });
    }
    if !m.is_file() {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let m = f.metadata().ok()?;
    let mut h = Sha256::new();
    let size = std::io::copy(&mut f, &mut h).ok()?;
    Some(Content::File {
        sha256: hex::encode(h.finalize()),
        size,
        mode: m.mode(),
    })
}

/// Inputs as a record holds them: most by their stamps, those that were racy when recorded by
/// their content ([`Clock`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamped {
    /// Every input path checked by its stamp (files and directories, absent ones too).
    pub paths: BTreeSet<PathBuf>,
    /// [`digest_of`] their stamps then.
    pub digest: String,
    /// Inputs checked by content: racy ones, and the directory holding the target dir
    /// (listed without it, so that a first build creating `target/` does not count).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contents: BTreeMap<PathBuf, Content>,
}

/// The answer of [`Stamped::check`].
#[derive(Debug)]
pub enum Check {
    /// An input changed (or could not be read).
    Changed,
    /// No input changed; `Some` is the same record with racy inputs that are no longer racy
    /// back on stat checks, to be written over the old one.
    Unchanged(Option<Stamped>),
}

impl Stamped {
    /// Records `stamps`, every input by its stamp.
    pub fn of(stamps: &BTreeMap<PathBuf, Stamp>) -> Stamped {
        Stamped {
            paths: stamps.keys().cloned().collect(),
            digest: digest_of(stamps),
            contents: BTreeMap::new(),
        }
    }

    /// Every input path, however it is checked.
    pub fn all_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.paths.iter().chain(self.contents.keys())
    }

    /// True when no input changed since it was recorded.
    pub fn unchanged(&self, clock_dir: &Path) -> bool {
        matches!(self.check(clock_dir), Check::Unchanged(_))
    }

    /// Whether any input changed since it was recorded: stamps compared, racy inputs read.
    /// Racy inputs that last changed before the file system's clock now ([`Clock::now`] in
    /// `clock_dir`) go back to stat checks in the answer's new record.
    pub fn check(&self, clock_dir: &Path) -> Check {
        let racy = self.contents.values().any(|c| {
            !matches!(
                c,
                Content::Dir {
                    without: Some(_),
                    ..
                }
            )
        });
        // Read before the racy inputs are stamped, so it can vouch for their stamps.
        let clock = if racy { Clock::now(clock_dir) } else { None };
        self.check_with(clock)
    }

    fn check_with(&self, clock: Option<Clock>) -> Check {
        let now = stamps(&self.paths);
        if digest_of(&now) != self.digest {
            return Check::Changed;
        }
        let mut promoted = BTreeMap::new();
        for (p, c) in &self.contents {
            let Ok(m) = std::fs::metadata(p) else {
                return Check::Changed;
            };
            let without = match c {
                Content::Dir { without, .. } => without.as_deref(),
                Content::File { .. } => None,
            };
            if content(p, without).as_ref() != Some(c) {
                return Check::Changed;
            }
            if without.is_none() && clock.is_some_and(|k| k.trusts(&m)) {
                promoted.insert(p.clone(), Some(stamp_of(&m)));
            }
        }
        if promoted.is_empty() {
            return Check::Unchanged(None);
        }
        let mut contents = self.contents.clone();
        contents.retain(|p, _| !promoted.contains_key(p));
        let mut all = now;
        all.extend(promoted);
        Check::Unchanged(Some(Stamped {
            contents,
            ..Stamped::of(&all)
        }))
    }
}

/// The inputs of some work as they were just before it ([`Before::take`]), to be recorded
/// after it ([`Before::finish`]) when none changed meanwhile.
#[derive(Debug)]
pub struct Before {
    clock: Option<Clock>,
    stamps: BTreeMap<PathBuf, Stamp>,
    contents: BTreeMap<PathBuf, Content>,
    listed: Option<(PathBuf, PathBuf)>,
}

impl Before {
    /// Stamps `paths`, reading the racy ones ([`Clock`], read in `clock_dir` first). `listed`
    /// (a directory and the name of an entry in it, the target dir) is recorded by its
    /// listing without that entry when it is one of `paths`.
    pub fn take(
        paths: &BTreeSet<PathBuf>,
        clock_dir: &Path,
        listed: Option<(PathBuf, PathBuf)>,
    ) -> Before {
        Before::take_with(paths, Clock::now(clock_dir), listed)
    }

    fn take_with(
        paths: &BTreeSet<PathBuf>,
        clock: Option<Clock>,
        listed: Option<(PathBuf, PathBuf)>,
    ) -> Before {
        let listed = listed.filter(|(d, _)| paths.contains(d));
        let mut stamps = BTreeMap::new();
        let mut contents = BTreeMap::new();
        for p in paths {
            let m = std::fs::metadata(p).ok();
            stamps.insert(p.clone(), m.as_ref().map(stamp_of));
            let without = listed
                .as_ref()
                .filter(|(d, _)| d == p)
                .map(|(_, n)| n.as_path());
            let racy = m
                .as_ref()
                .is_some_and(|m| !clock.is_some_and(|k| k.trusts(m)));
            if without.is_some() || racy {
                if let Some(c) = content(p, without) {
                    contents.insert(p.clone(), c);
                }
            }
        }
        Before {
            clock,
            stamps,
            contents,
            listed,
        }
    }

    /// The stamps taken.
    pub fn stamps(&self) -> &BTreeMap<PathBuf, Stamp> {
        &self.stamps
    }

    /// The record of the inputs, when none changed since [`Before::take`]: each input by its
    /// stamp, or by its content when it is racy now (the clock read again in `clock_dir`).
    /// `later` are inputs learnt of from the work itself (dep-info): they must not have
    /// changed since the work started. `None`: something changed, or could not be read.
    pub fn finish(self, later: &BTreeSet<PathBuf>, clock_dir: &Path) -> Option<Stamped> {
        let clock = Clock::now(clock_dir);
        self.finish_with(later, clock)
    }

    fn finish_with(self, later: &BTreeSet<PathBuf>, clock: Option<Clock>) -> Option<Stamped> {
        let (Some(start), Some(clock)) = (self.clock, clock) else {
            return None;
        };
        let listed_dir = self.listed.as_ref().map(|(d, _)| d.clone());
        let mut stamped = BTreeMap::new();
        // Inputs to read again, and whether the clock now vouches for their stamps.
        let mut reread = BTreeMap::new();
        let inputs = self
            .stamps
            .keys()
            .chain(later.iter().filter(|p| !self.stamps.contains_key(*p)));
        for p in inputs {
            if Some(p) == listed_dir.as_ref() {
                reread.insert(p.clone(), false);
                continue;
            }
            let m = std::fs::metadata(p).ok();
            let s = m.as_ref().map(stamp_of);
            match self.stamps.get(p) {
                Some(before) if *before != s => return None,
                Some(_) => {}
                // Learnt of after the work: it must have last changed before it started.
                None if m.as_ref().is_some_and(|m| !start.trusts(m)) => return None,
                None => {}
            }
            if let Some(m) = &m {
                if self.contents.contains_key(p) || !clock.trusts(m) {
                    reread.insert(p.clone(), clock.trusts(m));
                }
            }
            stamped.insert(p.clone(), s);
        }
        // Read after the stamps were compared, then stamped again: a change while reading
        // shows as a new stamp. What was read before the work must not have changed.
        let mut contents = BTreeMap::new();
        for (p, trusted) in &reread {
            let listed = Some(p) == listed_dir.as_ref();
            let without = self
                .listed
                .as_ref()
                .filter(|_| listed)
                .map(|(_, n)| n.as_path());
            let c = content(p, without)?;
            match self.contents.get(p) {
                Some(b) if *b != c => return None,
                None if listed => return None,
                _ => {}
            }
            if !listed && stamped.get(p) != Some(&stamp(p)) {
                return None;
            }
            if *trusted {
                // Racy before the work, not now: back on its stamp.
                continue;
            }
            stamped.remove(p);
            contents.insert(p.clone(), c);
        }
        Some(Stamped {
            contents,
            ..Stamped::of(&stamped)
        })
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
/// workspace around it), cargo's configuration files, cargo itself and the environment. The
/// directory where cargo starts is recorded by its listing without `target` (or the target
/// dir `CARGO_TARGET_DIR` names there), so the first build creating it is no change.
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
    let record_dir = record_path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    if let (Some(path), Some(dir)) = (&record_path, &record_dir) {
        if let Some(rec) = read_record::<MetadataRecord>(path) {
            if let Check::Unchanged(renewed) = rec.inputs.check(dir) {
                if let Ok(m) = serde_json::from_value(rec.metadata.clone()) {
                    if let Some(inputs) = renewed {
                        write_record(
                            path,
                            &MetadataRecord {
                                inputs,
                                metadata: rec.metadata,
                            },
                        );
                    }
                    return Ok(m);
                }
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
    // The package's own directories, when cargo starts in it (they are learnt of from its
    // answer otherwise: those must not change while it runs).
    paths.insert(start.clone());
    paths.insert(start.join("src"));
    paths.insert(start.join("src/bin"));
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
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|t| !t.is_empty())
        .map(|t| cwd.clone().unwrap_or_default().join(t))
        .unwrap_or_else(|| start.join("target"));
    let listed = target
        .parent()
        .zip(target.file_name())
        .map(|(d, n)| (d.to_path_buf(), PathBuf::from(n)));
    let before = record_dir
        .as_deref()
        .map(|dir| Before::take(&paths, dir, listed));
    let metadata = run()?;
    let mut later = BTreeSet::new();
    let root = metadata.workspace_root.as_std_path();
    later.insert(root.join("Cargo.toml"));
    member_dirs(root, &mut later);
    for p in &metadata.packages {
        let manifest = p.manifest_path.as_std_path();
        later.insert(manifest.to_path_buf());
        if let Some(dir) = manifest.parent() {
            later.insert(dir.to_path_buf());
            later.insert(dir.join("src"));
            later.insert(dir.join("src/bin"));
        }
        for t in &p.targets {
            if let Some(dir) = t.src_path.as_std_path().parent() {
                later.insert(dir.to_path_buf());
            }
        }
    }
    let (Some(path), Some(dir), Some(before)) = (record_path, record_dir, before) else {
        return Ok(metadata);
    };
    if let (Some(inputs), Ok(value)) =
        (before.finish(&later, &dir), serde_json::to_value(&metadata))
    {
        write_record(
            &path,
            &MetadataRecord {
                inputs,
                metadata: value,
            },
        );
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
        assert!(rec.unchanged(dir.path()));
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
        assert!(!rec.unchanged(dir.path()));
        let rec = Stamped::of(&stamps(&paths));
        std::fs::write(dir.path().join("b"), "").unwrap();
        assert!(
            !rec.unchanged(dir.path()),
            "a file that appears is a change"
        );
    }

    use std::os::unix::fs::PermissionsExt;

    /// A clock read before any file here was written: every input counts as racy.
    fn early(dir: &Path) -> Option<Clock> {
        let dev = std::fs::metadata(dir).unwrap().dev();
        Some(Clock::at(dev, 0))
    }

    /// Issue #18: an input too recent to trust is recorded by content; a change to it that
    /// leaves size and modification time as they were is still seen (same size, mtime put
    /// back), and so are a new mode and a new file.
    #[test]
    fn racy_inputs_are_recorded_and_checked_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.rs");
        std::fs::write(&f, "fn main() {1}").unwrap();
        let paths: BTreeSet<PathBuf> = [f.clone(), dir.path().to_path_buf()].into();
        let before = Before::take_with(&paths, early(dir.path()), None);
        let rec = before
            .finish_with(&BTreeSet::new(), early(dir.path()))
            .expect("nothing changed");
        assert!(rec.paths.is_empty(), "{rec:?}");
        assert_eq!(
            rec.contents.keys().collect::<Vec<_>>(),
            vec![&dir.path().to_path_buf(), &f]
        );
        assert!(matches!(
            rec.check_with(early(dir.path())),
            Check::Unchanged(None)
        ));

        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, "fn main() {2}").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(matches!(rec.check_with(early(dir.path())), Check::Changed));
        std::fs::write(&f, "fn main() {1}").unwrap();
        assert!(matches!(
            rec.check_with(early(dir.path())),
            Check::Unchanged(None)
        ));
        let mode = std::fs::metadata(&f).unwrap().permissions();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(rec.check_with(early(dir.path())), Check::Changed));
        std::fs::set_permissions(&f, mode).unwrap();
        std::fs::write(dir.path().join("b.rs"), "").unwrap();
        assert!(matches!(rec.check_with(early(dir.path())), Check::Changed));
    }

    /// Issue #18: once the file system's clock has moved past them, racy inputs go back to
    /// stat checks: the answer carries the record to write again.
    #[test]
    fn racy_inputs_go_back_to_stamps_once_the_clock_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.rs");
        std::fs::write(&f, "fn main() {}").unwrap();
        let paths: BTreeSet<PathBuf> = [f.clone(), dir.path().join("gone")].into();
        let rec = Before::take_with(&paths, early(dir.path()), None)
            .finish_with(&BTreeSet::new(), early(dir.path()))
            .unwrap();
        assert_eq!(rec.contents.len(), 1);
        // Still within the tick of the last change (the clock on the record's side).
        let m = std::fs::metadata(&f).unwrap();
        let same_tick = Some(Clock::at(m.dev(), m.ctime()));
        assert!(matches!(rec.check_with(same_tick), Check::Unchanged(None)));
        let later = Some(Clock::at(m.dev(), m.ctime() + 1));
        let Check::Unchanged(Some(renewed)) = rec.check_with(later) else {
            panic!("the clock moved on: back to stamps");
        };
        assert!(renewed.contents.is_empty());
        assert_eq!(renewed.paths, paths);
        assert!(matches!(renewed.check(dir.path()), Check::Unchanged(None)));
        std::fs::write(&f, "fn main() {0}").unwrap();
        assert!(matches!(renewed.check(dir.path()), Check::Changed));
    }

    /// A file written before the clock is read is on stat checks at once; the directory
    /// holding the target dir is listed without it, so creating it is no change, but another
    /// new entry is.
    #[test]
    fn settled_inputs_go_by_stamp_and_the_target_dir_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let f = root.join("main.rs");
        std::fs::write(&f, "fn main() {}").unwrap();
        let paths: BTreeSet<PathBuf> = [f.clone(), root.clone()].into();
        let listed = Some((root.clone(), PathBuf::from("target")));
        let before = Before::take(&paths, &root.join("rec"), listed.clone());
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        let rec = before
            .finish(&BTreeSet::new(), &root.join("rec"))
            .expect("target/ is not an input");
        assert!(rec.all_paths().any(|p| *p == f));
        assert!(matches!(
            rec.contents.get(&root),
            Some(Content::Dir { without: Some(t), .. }) if t == Path::new("target")
        ));
        assert!(matches!(
            rec.check(&root.join("rec")),
            Check::Unchanged(None)
        ));
        std::fs::remove_dir_all(root.join("target")).unwrap();
        assert!(rec.unchanged(&root.join("rec")));
        std::fs::write(root.join("build.rs"), "").unwrap();
        assert!(!rec.unchanged(&root.join("rec")), "a new file is a change");

        // A new entry during the work: nothing is recorded.
        let before = Before::take(&paths, &root.join("rec"), listed);
        std::fs::write(root.join("lib.rs"), "").unwrap();
        assert!(before.finish(&BTreeSet::new(), &root.join("rec")).is_none());
    }

    /// Inputs learnt of after the work (dep-info) must not have changed since it started.
    #[test]
    fn later_inputs_changed_during_the_work_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let dep = dir.path().join("dep.rs");
        std::fs::write(&dep, "").unwrap();
        let later: BTreeSet<PathBuf> = [dep.clone()].into();
        let m = std::fs::metadata(&dep).unwrap();
        let after_it = Some(Clock::at(m.dev(), m.ctime() + 1));
        let before = Before::take_with(&BTreeSet::new(), after_it, None);
        assert!(before.finish(&later, dir.path()).is_some());
        let before = Before::take(&BTreeSet::new(), dir.path(), None);
        std::fs::write(&dep, "x").unwrap();
        assert!(before.finish(&later, dir.path()).is_none());
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
