//! Checks made on each host before anything there changes, all in the first script of a
//! deploy (which then takes the lock and reads the release state): the host's architecture
//! and glibc can run the artifact, the tools the deploy needs are there, the disk has room,
//! shared files exist, systemctl can be run, and the artifact is not a ghost of a failed
//! release. Every problem of a host is reported at once.

use crate::config::Config;
use crate::layout::Layout;
use crate::remote::script::Script;

/// Exit code of a preflight script that found problems (nothing was changed).
pub const EXIT_PREFLIGHT: i32 = 81;

/// What the artifact needs from a host.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// `uname -m` the binary runs on.
    pub machine: String,
    /// Lowest glibc (`2.34`) the binary needs; `None` for static binaries.
    pub glibc: Option<String>,
    /// Target triple, for messages.
    pub target: String,
    /// Disk the release needs, in KiB (artifact + unpacked files, with headroom).
    pub disk_kib: u64,
    /// The artifact's sha256, to refuse a ghost without `--force`.
    pub artifact_sha: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// Appends the checks. Prints `problem=<text>` lines and `arch=`, `glibc=`, `has_zstd=`,
/// `has_gzip=` facts; exits [`EXIT_PREFLIGHT`] when there is any problem, before touching
/// anything.
pub fn checks(script: &mut Script, config: &Config, layout: &Layout, req: &Requirements) {
    script.lines("_problems=0");
    script.lines("problem() { printf 'problem=%s\\n' \"$*\"; _problems=$((_problems + 1)); }");
    script.lines("_arch=$(uname -m); echo arch=$_arch");
    script.line(
        "[ \"$_arch\" = {} ] || problem \"this host is $_arch but the artifact is built for\" {}",
        &[&req.machine, &req.target],
    );
    script.lines("_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || true); _glibc=${_glibc#glibc }; echo glibc=$_glibc");
    if let Some(need) = &req.glibc {
        script.line("_need={}", &[need]);
        glibc_compare(script);
    }
    script.lines("for _t in sh tar sha256sum systemctl mkdir ln mv readlink df find mktemp; do command -v $_t >/dev/null 2>&1 || problem \"missing command: $_t\"; done");
    script.lines(
        "if command -v zstd >/dev/null 2>&1; then echo has_zstd=1; else echo has_zstd=0; fi",
    );
    script.lines(
        "if command -v gzip >/dev/null 2>&1; then echo has_gzip=1; else echo has_gzip=0; fi",
    );
    if config.sudo {
        script.lines("sudo -n true 2>/dev/null || problem \"sudo = true but 'sudo -n true' fails for $(id -un): allow passwordless sudo for systemctl, journalctl, tee and mv of the unit file\"");
    } else {
        script.lines("[ \"$(id -u)\" = 0 ] || problem \"logged in as $(id -un), not root, and sudo is not enabled: set sudo = true in [package.metadata.ship] or deploy as root\"");
    }
    // The nearest existing ancestor of deploy_to must be writable and have room.
    script.line(
        "_p={}; while [ ! -e \"$_p\" ]; do _p=$(dirname \"$_p\"); done",
        &[layout.root()],
    );
    script.lines("[ -w \"$_p\" ] || problem \"$_p is not writable by $(id -un)\"");
    script.lines("_avail=$(df -Pk \"$_p\" | awk 'NR==2 {print $4}')");
    script.line(
        "if [ -n \"$_avail\" ] && [ \"$_avail\" -lt {} ]; then problem \"only ${{_avail}} KiB free under $_p, the release needs about\" {} KiB; fi",
        &[&req.disk_kib.to_string(), &req.disk_kib.to_string()],
    );
    world_writable_ancestors(script, layout);
    foreign_unit(script, config);
    for f in &config.shared_files {
        let path = format!("{}/{f}", layout.shared());
        script.line("[ -f {} ] || problem \"shared file $(printf %s {}) is missing: create it on the host before deploying\"", &[&path, &path]);
    }
    if let (Some(sha), false) = (&req.artifact_sha, req.force) {
        let ghost = layout.ghost(sha);
        script.line(
            "if [ -f {} ]; then problem \"this artifact failed its health check here before ($(cat {})); deploy a fixed build, or pass --force to try it again\"; fi",
            &[&ghost, &ghost],
        );
    }
    script.line(
        "[ \"$_problems\" = 0 ] || exit {}",
        &[&EXIT_PREFLIGHT.to_string()],
    );
}

/// The one check of flows that take the lock without an artifact (rollback, prune): the unit
/// must not be one cargo-ship did not write ([`foreign_unit`]), since rollback rewrites and
/// restarts it. Exits [`EXIT_PREFLIGHT`] before touching anything; problems go to stdout as
/// `problem=` lines and to stderr.
pub fn unit_guard(script: &mut Script, config: &Config) {
    script.lines("_problems=0");
    script.lines("problem() { printf 'problem=%s\\n' \"$*\"; printf '%s\\n' \"$*\" >&2; _problems=$((_problems + 1)); }");
    foreign_unit(script, config);
    script.line(
        "[ \"$_problems\" = 0 ] || exit {}",
        &[&EXIT_PREFLIGHT.to_string()],
    );
}

/// A problem for each existing directory on the way to deploy_to (itself included) that every
/// local user can write: they could swap the releases, or the binary root runs, under it.
fn world_writable_ancestors(script: &mut Script, layout: &Layout) {
    script.line("_p={}; while :; do", &[layout.root()]);
    script.lines("  if [ -n \"$(find -H \"$_p\" -maxdepth 0 -type d -perm -0002 2>/dev/null)\" ]; then problem \"$_p is writable by every local user (mode $(stat -L -c %a \"$_p\")): deploy_to must not be in or under such a directory; choose another deploy_to, or chmod o-w $_p\"; fi");
    script.lines("  [ \"$_p\" = / ] && break; _p=$(dirname \"$_p\")");
    script.lines("done");
}

/// A problem for each unit file cargo-ship may write or remove for this config (the app units
/// of every restart strategy and the guard's) that exists and was not written by it (in
/// /etc/systemd/system, or wherever systemd loads the unit from, e.g. `ssh` from
/// /lib/systemd/system): a deploy or rollback would replace or remove it, and a failed first
/// deploy would stop and disable it.
fn foreign_unit(script: &mut Script, config: &Config) {
    use crate::systemd::{guard, unit};
    let mut names = unit::managed(config).to_vec();
    names.extend([guard::timer(config), guard::service(config)]);
    for name in &names {
        script.line(
            "_frag=$(systemctl show -p FragmentPath --value -- {} 2>/dev/null || true)",
            &[name],
        );
        script.line(
            "for _f in {} \"$_frag\"; do if [ -n \"$_f\" ] && {{ [ -e \"$_f\" ] || [ -L \"$_f\" ]; }} && [ \"$(head -n 1 -- \"$_f\" 2>/dev/null || true)\" != {} ]; then",
            &[&unit::path(name), unit::HEADER],
        );
        script.line(
            "  problem \"unit\" {} \"already exists in $_f and was not written by cargo-ship: a deploy or rollback would replace or remove it; set systemd.unit to a name of its own, or remove that unit first\"; break; fi; done",
            &[name],
        );
    }
}

/// Compares `$_glibc` (the host's, maybe empty) with `$_need` and calls `problem` when the
/// host's is older or missing.
fn glibc_compare(script: &mut Script) {
    script.lines(
        "if [ -z \"$_glibc\" ]; then problem \"the binary needs glibc $_need but this host has no glibc (build for a -musl target)\"; else\n\
         \x20 _hm=${_glibc%%.*}; _hn=${_glibc#*.}; _hn=${_hn%%.*}; _nm=${_need%%.*}; _nn=${_need#*.}; _nn=${_nn%%.*}\n\
         \x20 if [ \"$_hm\" -lt \"$_nm\" ] || { [ \"$_hm\" -eq \"$_nm\" ] && [ \"$_hn\" -lt \"$_nn\" ]; }; then\n\
         \x20   problem \"the binary needs glibc $_need but this host has glibc $_glibc (pin the target, e.g. x86_64-unknown-linux-gnu.2.17, or use -musl)\"\n\
         \x20 fi\n\
         fi",
    );
}

/// Facts reported by [`checks`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `uname -m`.
    pub arch: String,
    /// glibc version, empty when none.
    pub glibc: String,
    /// `zstd` is installed.
    pub has_zstd: bool,
    /// `gzip` is installed.
    pub has_gzip: bool,
    /// Problems found.
    pub problems: Vec<String>,
}

impl Facts {
    /// Parses the lines printed by [`checks`].
    pub fn parse(stdout: &str) -> Facts {
        let mut f = Facts::default();
        for line in stdout.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "arch" => f.arch = v.to_string(),
                "glibc" => f.glibc = v.to_string(),
                "has_zstd" => f.has_zstd = v == "1",
                "has_gzip" => f.has_gzip = v == "1",
                "problem" => f.problems.push(v.to_string()),
                _ => {}
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the script's glibc comparison through the real /bin/sh.
    #[test]
    fn glibc_comparison_in_sh() {
        let cases = [
            ("2.36", "2.34", true),
            ("2.31", "2.34", false),
            ("2.34", "2.34", true),
            ("3.0", "2.34", true),
            ("2.9", "2.17", false),
            ("", "2.17", false),
        ];
        for (have, need, ok) in cases {
            let mut s = Script::new("t");
            s.lines("problem() { printf 'problem=%s\\n' \"$*\"; }");
            s.line("_glibc={}; _need={}", &[have, need]);
            glibc_compare(&mut s);
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(s.render().unwrap())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(!text.contains("problem="), ok, "{have} vs {need}: {text}");
        }
    }

    #[test]
    fn parses_facts() {
        let f = Facts::parse(
            "arch=x86_64\nglibc=2.36\nhas_zstd=0\nhas_gzip=1\nproblem=a b\nproblem=c\n",
        );
        assert_eq!(f.arch, "x86_64");
        assert!(!f.has_zstd && f.has_gzip);
        assert_eq!(f.problems, ["a b", "c"]);
    }
}
