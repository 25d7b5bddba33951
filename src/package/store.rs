//! The local artifact store under `<target-dir>/ship/`.
//!
//! Artifacts are named `<bin>-<version>-<target>-<sha12>.tar.zst`. Names are for people:
//! listing reads each artifact's manifest (the first entry of the archive, so this is cheap)
//! to learn its bin, version and target, since bins, versions and targets may all contain `-`.
//! Files that are not readable artifacts are left alone. Packing holds an exclusive lock on
//! `<store>/.lock` (see [`lock`]) from the build until the artifact is stored.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Manifest;
use crate::ui::Ui;
use crate::{Error, Result};

/// The store's directory name under cargo's target directory.
pub const STORE_DIR: &str = "ship";

/// File-name suffix of every artifact.
pub const EXTENSION: &str = ".tar.zst";

/// `<target_dir>/ship`.
pub fn store_dir(target_dir: &Path) -> PathBuf {
    target_dir.join(STORE_DIR)
}

/// `<bin>-<version>-<target>-<first 12 hex of sha256>.tar.zst`.
pub fn file_name(bin: &str, version: &str, target: &str, sha256: &str) -> String {
    let short = sha256.get(..12).unwrap_or(sha256);
    format!("{bin}-{version}-{target}-{short}{EXTENSION}")
}

/// One artifact found in the store.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Path of the `.tar.zst` file.
    pub path: PathBuf,
    /// The manifest packed inside.
    pub manifest: Manifest,
    /// Size in bytes.
    pub size: u64,
    /// Modification time: when it was last built or reused.
    pub modified: SystemTime,
}

/// Every readable artifact in `store_dir`, newest first (by modification time, then name).
/// A missing store is empty.
pub fn list(store_dir: &Path) -> Result<Vec<Stored>> {
    let entries = match std::fs::read_dir(store_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list the artifact store", store_dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list the artifact store", store_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(EXTENSION) || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        // Not an artifact of ours (or damaged): leave it alone.
        let Ok(manifest) = super::read_manifest(&path) else {
            continue;
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        found.push(Stored {
            path,
            manifest,
            size: meta.len(),
            modified,
        });
    }
    found.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| b.path.cmp(&a.path))
    });
    Ok(found)
}

/// The newest artifact of `bin` at `version` for `target` (written as configured, with any
/// glibc pin), if the store has one.
pub fn find_newest(
    store_dir: &Path,
    bin: &str,
    version: &str,
    target: &str,
) -> Result<Option<Stored>> {
    Ok(list(store_dir)?.into_iter().find(|s| {
        s.manifest.bin == bin && s.manifest.version == version && s.manifest.target == target
    }))
}

/// Removes all but the newest `keep` artifacts of `bin` (by modification time) and returns the
/// removed paths. `keep` is at least 1, and packing sets the modification time of the artifact
/// it builds or reuses to now, so the one just built is never removed.
pub fn prune(store_dir: &Path, bin: &str, keep: usize) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let of_bin = list(store_dir)?
        .into_iter()
        .filter(|s| s.manifest.bin == bin);
    for old in of_bin.skip(keep.max(1)) {
        match std::fs::remove_file(&old.path) {
            Ok(()) => removed.push(old.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove an old artifact", &old.path, e)),
        }
    }
    Ok(removed)
}

/// An exclusive lock on the store, held from the build until the artifact is stored, so two
/// builds sharing a target directory never pack each other's binary. Released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Takes the store's lock (`<store>/.lock`), creating the store; says so when it has to wait.
pub fn lock(store_dir: &Path, ui: &Ui) -> Result<StoreLock> {
    use rustix::fs::{flock, FlockOperation};
    std::fs::create_dir_all(store_dir)
        .map_err(|e| Error::io("create the artifact store", store_dir, e))?;
    let path = store_dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open the artifact store's lock", &path, e))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        ui.status(
            "Blocking",
            format!(
                "waiting for another build to finish with {}",
                store_dir.display()
            ),
        );
        flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock the artifact store", &path, std::io::Error::from(e)))?;
    }
    Ok(StoreLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_artifacts() {
        let sha = "0123456789abcdef".repeat(4);
        assert_eq!(
            file_name("hello", "0.1.0", "x86_64-unknown-linux-gnu.2.17", &sha),
            "hello-0.1.0-x86_64-unknown-linux-gnu.2.17-0123456789ab.tar.zst"
        );
        assert_eq!(store_dir(Path::new("/t")), Path::new("/t/ship"));
    }

    #[test]
    fn a_missing_store_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("nope")).unwrap().is_empty());
        assert!(prune(&dir.path().join("nope"), "hello", 1)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        use rustix::fs::{flock, FlockOperation};
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path(), &Ui::silent()).unwrap();
        let other = File::options()
            .write(true)
            .open(dir.path().join(".lock"))
            .unwrap();
        assert!(flock(&other, FlockOperation::NonBlockingLockExclusive).is_err());
        drop(held);
        assert!(flock(&other, FlockOperation::NonBlockingLockExclusive).is_ok());
    }
}
