//! What a release runs with, as one hash: the files of its artifact (binary and assets: path,
//! sha256, mode, as its manifest lists them), the unit files the switch installs and the
//! secrets it writes. Build metadata (the git commit, build time, rustc) is not part of it: a
//! new commit that leaves a service's files alone leaves its fingerprint alone too (#17). A workspace deploy leaves a service alone on a host whose current
//! release has the same fingerprint as the one it would deploy (nothing to restart).
//!
//! The stage step writes the fingerprint to `releases/<id>/.ship-fingerprint` (mode 0600: it
//! hashes the secrets); preflight reads the current release's ([`state_line`]). A rollback
//! re-renders the units from the local configuration, so it removes the target's fingerprint
//! ([`forget`]): the next workspace deploy then deploys that service rather than guess.

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::layout::Layout;
use crate::package::Manifest;
use crate::remote::script::Script;
use crate::secrets::Secrets;
use crate::systemd::unit;

/// The file name inside a release directory.
pub const FILE: &str = ".ship-fingerprint";

/// The fingerprint of the artifact with `manifest` deployed with `config` (as resolved for one
/// host) and `secrets`: hex sha256, prefixed with its scheme so a release recorded by an
/// earlier scheme (v1 hashed the whole artifact) never matches by chance.
pub fn of(config: &Config, manifest: &Manifest, secrets: &Secrets) -> String {
    let mut h = Sha256::new();
    h.update(b"cargo-ship fingerprint 2\0files\0");
    // What runs: every packed file (the manifest itself aside), by path, content and mode.
    for (path, f) in &manifest.files {
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(f.sha256.as_bytes());
        h.update(format!("\0{:o}\0", f.mode).as_bytes());
    }
    // The scheduled jobs' units (#21), of every host (an `on = "one"` job is on one).
    let hosts: Vec<String> = config
        .environment
        .iter()
        .flat_map(|e| e.hosts.iter().map(|h| h.to_string()))
        .collect();
    let jobs = hosts.iter().flat_map(|host| {
        crate::jobs::units(config, host)
            .into_iter()
            .map(move |f| unit::UnitFile {
                name: format!("{host}\0{}", f.name),
                text: f.text,
            })
    });
    for f in unit::app_units(config).into_iter().chain(jobs) {
        h.update(b"\0unit\0");
        h.update(f.name.as_bytes());
        h.update(b"\0");
        h.update(f.text.as_bytes());
    }
    h.update(b"\0secrets\0");
    h.update(secrets.env_file_text().as_bytes());
    format!("v2-{}", hex::encode(h.finalize()))
}

/// `<release dir>/.ship-fingerprint`.
pub fn path(layout: &Layout, release: &str) -> String {
    format!("{}/{FILE}", layout.release(release))
}

/// Stage: records the fingerprint of the release being staged (readable by the deploy user
/// only). Builtins only: no process is spawned.
pub fn record(s: &mut Script, layout: &Layout, release: &str, fingerprint: &str) {
    s.line(
        "umask 077; printf '%s\\n' {} > {}; umask 022",
        &[fingerprint, &path(layout, release)],
    );
}

/// Preflight/status: prints `fingerprint=<hex>` of the current release, when it has one.
pub fn state_line(s: &mut Script, layout: &Layout) {
    let file = format!("{}/{FILE}", layout.current());
    s.line(
        "if [ -f {} ]; then read -r _fp < {} || true; printf 'fingerprint=%s\\n' \"$_fp\"; fi",
        &[&file, &file],
    );
}

/// Rollback: the units about to be installed come from the local configuration, not the ones
/// `release` was deployed with, so its fingerprint no longer says what runs.
pub fn forget(s: &mut Script, layout: &Layout, release: &str) {
    s.line("rm -f -- {}", &[&path(layout, release)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::config_from;

    fn manifest(bin_sha: &str, mode: u32) -> Manifest {
        let file = |sha256: &str, mode| crate::package::manifest::FileEntry {
            sha256: sha256.into(),
            size: 3,
            mode,
        };
        Manifest {
            schema: 1,
            package: "hello".into(),
            version: "0.1.0".into(),
            bin: "hello".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            profile: "release".into(),
            features: Vec::new(),
            git_commit: Some("1111111111111111111111111111111111111111".into()),
            git_dirty: false,
            rustc: "rustc 1.85.0".into(),
            builder: "cargo".into(),
            built_at: "2026-01-01T00:00:00Z".into(),
            glibc_required: None,
            files: [
                ("hello".to_string(), file(bin_sha, mode)),
                ("static/index.html".to_string(), file("bbb", 0o644)),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn changes_with_files_units_and_secrets() {
        let c = config_from("", "");
        let none = Secrets::default();
        let m = manifest("aaa", 0o755);
        let a = of(&c, &m, &none);
        assert!(a.starts_with("v2-") && a.len() == 67, "{a}");
        assert_eq!(a, of(&c, &m, &none), "stable");
        assert_ne!(a, of(&c, &manifest("ccc", 0o755), &none), "binary");
        assert_ne!(a, of(&c, &manifest("aaa", 0o644), &none), "mode");
        let mut renamed = m.clone();
        let entry = renamed.files.remove("static/index.html").unwrap();
        renamed.files.insert("static/other.html".into(), entry);
        assert_ne!(a, of(&c, &renamed, &none), "asset path");
        let mut other = c.clone();
        other.systemd.args = vec!["--verbose".into()];
        assert_ne!(a, of(&other, &m, &none), "unit text");
        let one = Secrets::from_pairs([("TOKEN", "x")]);
        assert_ne!(a, of(&c, &m, &one), "secrets");
    }

    /// #17: build metadata is not what runs; a new commit with the same files is unchanged.
    #[test]
    fn ignores_build_metadata() {
        let c = config_from("", "");
        let none = Secrets::default();
        let m = manifest("aaa", 0o755);
        let mut next = m.clone();
        next.git_commit = Some("2222222222222222222222222222222222222222".into());
        next.git_dirty = true;
        next.built_at = "2026-02-02T00:00:00Z".into();
        next.version = "0.2.0".into();
        next.rustc = "rustc 1.86.0".into();
        assert_eq!(of(&c, &m, &none), of(&c, &next, &none));
    }

    #[test]
    fn script_lines() {
        let layout = Layout::new("/opt/app");
        let mut s = Script::new("t");
        record(&mut s, &layout, "20260101000000", "v1-ab");
        state_line(&mut s, &layout);
        forget(&mut s, &layout, "20260101000000");
        let text = s.render().unwrap();
        assert!(text.contains("umask 077; printf '%s\\n' v1-ab > /opt/app/releases/20260101000000/.ship-fingerprint; umask 022"), "{text}");
        assert!(text.contains("if [ -f /opt/app/current/.ship-fingerprint ]; then read -r _fp < /opt/app/current/.ship-fingerprint"), "{text}");
        assert!(
            text.contains("rm -f -- /opt/app/releases/20260101000000/.ship-fingerprint"),
            "{text}"
        );
    }
}
