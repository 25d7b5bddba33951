//! What a host remembers about its releases, and the pure decisions made from it:
//! `revisions.log` lines, the rollback target, and which releases prune removes.
//!
//! The state is read by [`state_lines`] inside a phase script (so it costs no extra round
//! trip) and parsed by [`HostState::parse`].

use crate::layout::{is_release_id, Layout};
use crate::remote::script::Script;

/// A host's releases as its deploy directory shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// The release `current` points at.
    pub current: Option<String>,
    /// Every release directory, oldest first.
    pub releases: Vec<String>,
    /// Releases still marked unfinished.
    pub unfinished: Vec<String>,
    /// Releases marked failed.
    pub failed: Vec<String>,
    /// The release to return to if an interrupted deploy left a switch unverified.
    pub switching: Option<String>,
    /// The holder of the lock, when someone holds it (status only).
    pub lock_holder: Option<String>,
    /// The version of the current release, from its manifest.
    pub current_version: Option<String>,
    /// The current release's [`crate::fingerprint`], when it has one.
    pub current_fingerprint: Option<String>,
}

impl HostState {
    /// Parses the lines printed by [`state_lines`].
    pub fn parse(stdout: &str) -> HostState {
        let mut s = HostState::default();
        for line in stdout.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_string();
            match k {
                "current" if !v.is_empty() => s.current = Some(v),
                "release" if is_release_id(&v) => s.releases.push(v),
                "unfinished" if !v.is_empty() => s.unfinished.push(v),
                "failed" if !v.is_empty() => s.failed.push(v),
                "switching" => s.switching = Some(v),
                "lock" if !v.is_empty() => s.lock_holder = Some(v),
                "current_version" if !v.is_empty() => s.current_version = Some(v),
                "fingerprint" if !v.is_empty() => s.current_fingerprint = Some(v),
                _ => {}
            }
        }
        s.releases.sort();
        s
    }

    /// Finished, not failed releases, oldest first: what keep_releases counts and rollback uses.
    pub fn good(&self) -> Vec<&String> {
        self.releases
            .iter()
            .filter(|r| !self.unfinished.contains(r) && !self.failed.contains(r))
            .collect()
    }

    /// The release a plain `rollback` returns to: the newest good release older than current.
    pub fn rollback_target(&self) -> Option<String> {
        let current = self.current.as_deref()?;
        self.good()
            .into_iter()
            .rfind(|r| r.as_str() < current)
            .cloned()
    }

    /// Releases prune removes when keeping `keep` good releases: never `current`, never the
    /// rollback target, never unfinished ones (a deploy may be staging them); failed ones go
    /// except the newest (kept for a post-mortem).
    pub fn prune_candidates(&self, keep: usize) -> Vec<String> {
        let keep = keep.max(1);
        let protected: Vec<String> = self
            .current
            .iter()
            .cloned()
            .chain(self.rollback_target())
            .collect();
        let good = self.good();
        let mut kept_good: Vec<&String> = good.iter().rev().take(keep).copied().collect();
        kept_good.extend(protected.iter());
        let newest_failed = self
            .failed
            .iter()
            .filter(|f| self.releases.contains(f))
            .max();
        self.releases
            .iter()
            .filter(|r| !protected.contains(r) && !self.unfinished.contains(r))
            .filter(|r| {
                if self.failed.contains(r) {
                    Some(*r) != newest_failed
                } else {
                    !kept_good.contains(r)
                }
            })
            .cloned()
            .collect()
    }
}

/// Script lines printing the host's release state for [`HostState::parse`]. The script must
/// not have `cd`'d elsewhere; every path is absolute.
pub fn state_lines(script: &mut Script, layout: &Layout) {
    crate::hostfacts::link_base(script, &layout.current());
    script.lines("printf 'current=%s\\n' \"$_c\"");
    script.line(
        "for _d in {}/*; do [ -d \"$_d\" ] && printf 'release=%s\\n' \"${{_d##*/}}\"; done; true",
        &[&layout.releases()],
    );
    script.line("for _d in {}/*; do [ -e \"$_d\" ] && printf 'unfinished=%s\\n' \"${{_d##*/}}\"; done; true", &[&layout.unfinished_dir()]);
    script.line(
        "for _d in {}/*; do [ -e \"$_d\" ] && printf 'failed=%s\\n' \"${{_d##*/}}\"; done; true",
        &[&layout.failed_dir()],
    );
    print_version(script, "current_version", &layout.current());
    crate::fingerprint::state_line(script, layout);
    script.line(
        "if [ -f {} ]; then printf 'switching=%s\\n' \"$(cat {})\"; fi",
        &[&switching(layout), &switching(layout)],
    );
}

/// Prints `<key>=<version>` read from the manifest in `release_dir` (pretty-printed JSON that
/// cargo-ship wrote: the top-level `"version"` is the line indented by two spaces); nothing
/// when it is absent. Read by the shell, no process; it stops at that line, near the top.
pub fn print_version(script: &mut Script, key: &'static str, release_dir: &str) {
    script.line(
        "if [ -r {}/{} ]; then while IFS= read -r _l; do case $_l in '  \"version\": \"'*) _l=${{_l#*: \\\"}}; printf '%s=%s\\n' {} \"${{_l%%\\\"*}}\"; break ;; esac; done < {}/{}; fi",
        &[release_dir, crate::package::MANIFEST_FILE, key, release_dir, crate::package::MANIFEST_FILE],
    );
}

/// The file recording the release that was current before an unverified switch.
pub fn switching(layout: &Layout) -> String {
    format!("{}/switching", layout.state())
}

/// One `revisions.log` line: UTC time, action, release, version, artifact, git commit, who,
/// result. Space-separated `key=value` fields after the time, so both people and `grep` read it.
pub struct Revision<'a> {
    /// `deploy`, `rollback`, `auto-rollback`...
    pub action: &'a str,
    /// The release the line is about.
    pub release: &'a str,
    /// Its version, when known.
    pub version: Option<&'a str>,
    /// Its artifact sha256, when known.
    pub artifact: Option<&'a str>,
    /// Its git commit, when known.
    pub git: Option<&'a str>,
    /// `ok`, `unhealthy`, `aborted`...
    pub result: &'a str,
}

impl Revision<'_> {
    /// The line, without a trailing newline.
    pub fn line(&self, now: chrono::DateTime<chrono::Utc>, who: &str) -> String {
        let mut l = format!(
            "{} {} release={}",
            now.format("%Y-%m-%dT%H:%M:%SZ"),
            self.action,
            self.release
        );
        if let Some(v) = self.version {
            l.push_str(&format!(" version={v}"));
        }
        if let Some(a) = self.artifact {
            l.push_str(&format!(" artifact={}", &a[..a.len().min(12)]));
        }
        if let Some(g) = self.git {
            l.push_str(&format!(" git={}", &g[..g.len().min(12)]));
        }
        l.push_str(&format!(
            " by={} result={}",
            who.replace(' ', "_"),
            self.result
        ));
        l.replace('\n', " ")
    }
}

/// `user@machine` of whoever runs cargo-ship.
pub fn who() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    let machine = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{machine}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(releases: &[&str], current: &str, failed: &[&str], unfinished: &[&str]) -> HostState {
        HostState {
            current: Some(current.to_string()).filter(|c| !c.is_empty()),
            releases: releases.iter().map(|s| s.to_string()).collect(),
            failed: failed.iter().map(|s| s.to_string()).collect(),
            unfinished: unfinished.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_state_lines() {
        let s = HostState::parse(
            "current=20260101000003\nrelease=20260101000003\nrelease=20260101000001\nrelease=junk\nfailed=20260101000002\nrelease=20260101000002\nunfinished=\nswitching=20260101000001\n",
        );
        assert_eq!(s.current.as_deref(), Some("20260101000003"));
        assert_eq!(
            s.releases,
            ["20260101000001", "20260101000002", "20260101000003"]
        );
        assert_eq!(s.failed, ["20260101000002"]);
        assert!(s.unfinished.is_empty());
        assert_eq!(s.switching.as_deref(), Some("20260101000001"));
    }

    #[test]
    fn rollback_target_skips_failed_and_unfinished() {
        let s = state(&["1", "2", "3", "4", "5"], "5", &["4"], &["3"]);
        assert_eq!(s.rollback_target().as_deref(), Some("2"));
        let s = state(&["1"], "1", &[], &[]);
        assert_eq!(s.rollback_target(), None);
        // After a rollback, current is older than newer good releases: still go further back.
        let s = state(&["1", "2", "3"], "2", &[], &[]);
        assert_eq!(s.rollback_target().as_deref(), Some("1"));
    }

    #[test]
    fn prune_never_removes_current_or_rollback_target() {
        let s = state(&["1", "2", "3", "4", "5", "6"], "6", &[], &[]);
        assert_eq!(s.prune_candidates(3), ["1", "2", "3"]);
        // keep=1 still keeps the rollback target.
        assert_eq!(s.prune_candidates(1), ["1", "2", "3", "4"]);
        // Current rolled back to 2: 2 and 1 (its rollback target) survive, plus the newest 2.
        let s = state(&["1", "2", "3", "4", "5"], "2", &[], &[]);
        assert_eq!(s.prune_candidates(2), ["3"]);
        // Failed ones don't count toward keep; only the newest failed one is kept.
        let s = state(&["1", "2", "3", "4", "5"], "5", &["2", "4"], &["3"]);
        assert_eq!(s.prune_candidates(2), ["2"]);
    }

    /// The shell loop in [`print_version`] reads the version out of a manifest as cargo-ship writes
    /// it (pretty JSON), through the real /bin/sh.
    #[test]
    fn prints_the_manifest_version() {
        let dir = tempfile::tempdir().unwrap();
        let m = serde_json::json!({"schema": 1, "package": "p", "version": "1.2.3-rc.1", "files": {"a": {"version": "9"}}});
        std::fs::write(
            dir.path().join(crate::package::MANIFEST_FILE),
            serde_json::to_string_pretty(&m).unwrap(),
        )
        .unwrap();
        let mut s = Script::new("t");
        print_version(&mut s, "v", dir.path().to_str().unwrap());
        print_version(&mut s, "missing", "/nonexistent");
        let out = s.run_local();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "v=1.2.3-rc.1\n");
        assert!(out.status.success());
    }

    #[test]
    fn revision_line() {
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let r = Revision {
            action: "deploy",
            release: "20261123090000",
            version: Some("0.2.0"),
            artifact: Some("abcdef0123456789"),
            git: None,
            result: "ok",
        };
        assert_eq!(
            r.line(t, "alice@laptop"),
            "2026-11-23T09:00:00Z deploy release=20261123090000 version=0.2.0 artifact=abcdef012345 by=alice@laptop result=ok"
        );
    }
}
