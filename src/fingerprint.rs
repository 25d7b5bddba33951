//! What a release runs with, as one hash: its artifact, the unit files the switch installs and
//! the secrets it writes. A workspace deploy leaves a service alone on a host whose current
//! release has the same fingerprint as the one it would deploy (nothing to restart).
//!
//! The stage step writes the fingerprint to `releases/<id>/.ship-fingerprint` (mode 0600: it
//! hashes the secrets); preflight reads the current release's ([`state_line`]). A rollback
//! re-renders the units from the local configuration, so it removes the target's fingerprint
//! ([`forget`]): the next workspace deploy then deploys that service rather than guess.

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::layout::Layout;
use crate::remote::script::Script;
use crate::secrets::Secrets;
use crate::systemd::unit;

/// The file name inside a release directory.
pub const FILE: &str = ".ship-fingerprint";

/// The fingerprint of `artifact_sha` deployed with `config` (as resolved for one host) and
/// `secrets`: hex sha256, prefixed with its scheme so a future change never matches by chance.
pub fn of(config: &Config, artifact_sha: &str, secrets: &Secrets) -> String {
    let mut h = Sha256::new();
    h.update(b"cargo-ship fingerprint 1\0artifact\0");
    h.update(artifact_sha.as_bytes());
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
    format!("v1-{}", hex::encode(h.finalize()))
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

    #[test]
    fn changes_with_artifact_units_and_secrets() {
        let c = config_from("", "");
        let none = Secrets::default();
        let a = of(&c, "aaa", &none);
        assert!(a.starts_with("v1-") && a.len() == 67, "{a}");
        assert_eq!(a, of(&c, "aaa", &none), "stable");
        assert_ne!(a, of(&c, "bbb", &none), "artifact");
        let mut other = c.clone();
        other.systemd.args = vec!["--verbose".into()];
        assert_ne!(a, of(&other, "aaa", &none), "unit text");
        let one = Secrets::from_pairs([("TOKEN", "x")]);
        assert_ne!(a, of(&c, "aaa", &one), "secrets");
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
