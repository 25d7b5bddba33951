//! Pure path math for a deploy directory on a host (Capistrano's layout, which users know):
//!
//! ```text
//! <deploy_to>/releases/<YYYYMMDDHHMMSS>/   unpacked release + SHIP_MANIFEST.json
//! <deploy_to>/shared/                      shared_dirs and shared_files, linked into releases
//! <deploy_to>/current -> releases/<id>     switched atomically (temp symlink + rename)
//! <deploy_to>/revisions.log                one line per deploy / rollback
//! <deploy_to>/.ship/                       cargo-ship's own state:
//!     lock/holder                          the deploy lock (mkdir is the atomic test-and-set)
//!     artifacts/<sha256>.tar.zst           uploaded artifacts (skip the upload when present)
//!     unfinished/<id>                      a release still being staged
//!     failed/<id>                          a release that failed (never a rollback target)
//!     ghosts/<sha256>                      an artifact that failed health: not redeployed without --force
//!     switching                            release to return to if a deploy is interrupted mid-switch
//!     pending                              an unconfirmed switch the dead-man's switch reverts
//!     guard.lock                           flock(1) file: confirm and revert never overlap
//!     lease                                flock(1) file held by a running lock holder (lock/leased)
//!     units.prev/                          unit files a pending switch replaced (restored on revert)
//!     slots/blue, slots/green              blue-green: the release each instance runs
//!     jobs/<id>/                           job unit files installed with release <id> (#21)
//! ```

/// Paths under one `deploy_to`.
#[derive(Debug, Clone)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// `deploy_to` must be absolute and clean (checked by config validation).
    pub fn new(deploy_to: &str) -> Self {
        Layout {
            root: deploy_to.trim_end_matches('/').to_string(),
        }
    }
    /// `<deploy_to>`.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// `<deploy_to>/releases`.
    pub fn releases(&self) -> String {
        format!("{}/releases", self.root)
    }
    /// `<deploy_to>/releases/<id>`.
    pub fn release(&self, id: &str) -> String {
        format!("{}/releases/{id}", self.root)
    }
    /// `<deploy_to>/shared`.
    pub fn shared(&self) -> String {
        format!("{}/shared", self.root)
    }
    /// `<deploy_to>/current`.
    pub fn current(&self) -> String {
        format!("{}/current", self.root)
    }
    /// Temporary name of the next `current` symlink, renamed over `current` to switch.
    pub fn current_tmp(&self) -> String {
        format!("{}/.ship/current.tmp", self.root)
    }
    /// `<deploy_to>/revisions.log`.
    pub fn revisions_log(&self) -> String {
        format!("{}/revisions.log", self.root)
    }
    /// `<deploy_to>/.ship`.
    pub fn state(&self) -> String {
        format!("{}/.ship", self.root)
    }
    /// The dead-man's switch record of an unconfirmed switch (`key=value` lines).
    pub fn pending(&self) -> String {
        format!("{}/.ship/pending", self.root)
    }
    /// The file `flock` serialises confirm and revert on.
    pub fn guard_lock(&self) -> String {
        format!("{}/.ship/guard.lock", self.root)
    }
    /// Copies of the unit files the pending switch replaced (`<name>` or `<name>.absent`).
    pub fn units_prev(&self) -> String {
        format!("{}/.ship/units.prev", self.root)
    }
    /// `<deploy_to>/.ship/jobs/<id>`: the job unit files this host got with release `id`
    /// (#21), installed again by a rollback to it.
    pub fn jobs_record(&self, id: &str) -> String {
        format!("{}/.ship/jobs/{id}", self.root)
    }
    /// `<deploy_to>/.ship/slots`: one symlink per blue-green color.
    pub fn slots(&self) -> String {
        format!("{}/.ship/slots", self.root)
    }
    /// The lock directory.
    pub fn lock(&self) -> String {
        format!("{}/.ship/lock", self.root)
    }
    /// The file inside the lock naming its holder.
    pub fn lock_holder(&self) -> String {
        format!("{}/.ship/lock/holder", self.root)
    }
    /// `<deploy_to>/.ship/artifacts`.
    pub fn artifacts(&self) -> String {
        format!("{}/.ship/artifacts", self.root)
    }
    /// `lock/leased`: the lock's holder holds [`Layout::lease`] (see [`crate::lock::lease`]).
    pub fn lock_leased(&self) -> String {
        format!("{}/.ship/lock/leased", self.root)
    }
    /// `.ship/lease`: flock(1) file held by the running lock holder (see [`crate::lock::lease`]).
    pub fn lease(&self) -> String {
        format!("{}/.ship/lease", self.root)
    }
    /// Cached artifact with this sha256 and file extension (`tar.zst`, `tar.gz`, `tar`).
    pub fn artifact(&self, sha256: &str, ext: &str) -> String {
        format!("{}/.ship/artifacts/{sha256}.{ext}", self.root)
    }
    /// Marker of a release still being staged.
    pub fn unfinished(&self, id: &str) -> String {
        format!("{}/.ship/unfinished/{id}", self.root)
    }
    /// `<deploy_to>/.ship/unfinished`.
    pub fn unfinished_dir(&self) -> String {
        format!("{}/.ship/unfinished", self.root)
    }
    /// Marker of a failed release.
    pub fn failed(&self, id: &str) -> String {
        format!("{}/.ship/failed/{id}", self.root)
    }
    /// `<deploy_to>/.ship/failed`.
    pub fn failed_dir(&self) -> String {
        format!("{}/.ship/failed", self.root)
    }
    /// Ghost mark of an artifact that failed its health check.
    pub fn ghost(&self, sha256: &str) -> String {
        format!("{}/.ship/ghosts/{sha256}", self.root)
    }
    /// `<deploy_to>/.ship/ghosts`.
    pub fn ghosts_dir(&self) -> String {
        format!("{}/.ship/ghosts", self.root)
    }
    /// Relative target of `current` for a release (relative so the tree can be moved).
    pub fn current_target(id: &str) -> String {
        format!("releases/{id}")
    }
}

/// A new release id: the UTC time as `YYYYMMDDHHMMSS`, as Capistrano does.
pub fn new_release_id(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%Y%m%d%H%M%S").to_string()
}

/// True when `s` looks like a release id we created (14 digits).
pub fn is_release_id(s: &str) -> bool {
    s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new("/opt/hello/");
        assert_eq!(
            l.release("20260101000000"),
            "/opt/hello/releases/20260101000000"
        );
        assert_eq!(l.current(), "/opt/hello/current");
        assert_eq!(l.lock_holder(), "/opt/hello/.ship/lock/holder");
        assert_eq!(
            l.artifact("ab", "tar.zst"),
            "/opt/hello/.ship/artifacts/ab.tar.zst"
        );
        assert_eq!(Layout::current_target("1"), "releases/1");
    }

    #[test]
    fn release_ids() {
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 5, 7).unwrap();
        assert_eq!(new_release_id(t), "20261123090507");
        assert!(is_release_id("20261123090507"));
        assert!(!is_release_id("2026112309050"));
        assert!(!is_release_id("2026112309050x"));
    }
}
