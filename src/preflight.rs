//! Checks made on each host before anything there changes, all in the first script of a
//! deploy (which then takes the lock and reads the release state): the host's architecture
//! and glibc can run the artifact, the tools the deploy needs are there, the disk has room,
//! shared files exist, systemctl can be run, and the artifact is not a ghost of a failed
//! release. Every problem of a host is reported at once. The sudo call is timed and the host's
//! clock read, so a slow or skewed host is warned about with its cause (`diagnose`).

use crate::config::Config;
use crate::layout::Layout;
use crate::remote::script::Script;
use crate::remote::transfer::Encoding;

/// Exit code of a preflight script that found problems (nothing was changed).
pub const EXIT_PREFLIGHT: i32 = 81;

/// What an artifact needs from a host. A deploy has one per artifact: one for a single
/// target, one per architecture for `targets = [...]` (each host is checked against the one
/// for its `uname -m`).
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
/// anything. The host's `uname -m` picks which of `reqs` applies; a host no artifact runs on
/// is a problem naming its architecture and what there is.
pub fn checks(script: &mut Script, config: &Config, layout: &Layout, reqs: &[Requirements]) {
    script.lines("_problems=0");
    script.lines("problem() { printf 'problem=%s\\n' \"$*\"; _problems=$((_problems + 1)); }");
    crate::hostfacts::uid(script);
    crate::diagnose::clock_start(script);
    crate::hostfacts::arch_and_glibc(script, &crate::hostfacts::facts_file(layout));
    script.lines("echo arch=$_arch; echo glibc=$_glibc");
    // The artifact for this host's architecture: its target, glibc, disk and ghost mark.
    script.lines("_target=; _need=; _disk=0; _ghost=");
    script.lines("case \"$_arch\" in");
    for r in reqs {
        let ghost = match (&r.artifact_sha, r.force) {
            (Some(sha), false) => layout.ghost(sha),
            _ => String::new(),
        };
        script.line(
            "  {}) _target={}; _need={}; _disk={}; _ghost={} ;;",
            &[
                &r.machine,
                &r.target,
                r.glibc.as_deref().unwrap_or(""),
                &r.disk_kib.to_string(),
                &ghost,
            ],
        );
    }
    match reqs {
        [one] => {
            script.line("  *) _m={}; _t={}", &[&one.machine, &one.target]);
            script.lines("     problem \"this host is $_arch (uname -m) but the artifact is built for $_t, which runs on $_m\" ;;");
        }
        many => {
            let list: Vec<&str> = many.iter().map(|r| r.target.as_str()).collect();
            script.line("  *) _ts={}", &[&list.join(", ")]);
            script.lines("     problem \"this host is $_arch (uname -m), and none of the configured targets runs there (targets: $_ts)\" ;;");
        }
    }
    script.lines("esac");
    script.lines("[ -z \"$_target\" ] || echo target=$_target");
    script.lines("if [ -n \"$_need\" ]; then");
    glibc_compare(script);
    script.lines("fi");
    script.lines("for _t in sh tar sha256sum systemctl mkdir ln mv readlink df find mktemp; do command -v $_t >/dev/null 2>&1 || problem \"missing command: $_t\"; done");
    script.lines(
        "if command -v zstd >/dev/null 2>&1; then echo has_zstd=1; else echo has_zstd=0; fi",
    );
    script.lines(
        "if command -v gzip >/dev/null 2>&1; then echo has_gzip=1; else echo has_gzip=0; fi",
    );
    if config.sudo {
        // After `cargo ship setup`, the deploy user may run the unit's helper and nothing else.
        // Timed: a slow call is explained (`diagnose`) and warned about before anything changes.
        crate::diagnose::sudo_timed(script, config);
    } else {
        script.lines("[ \"$_uid\" = 0 ] || problem \"logged in as $(id -un), not root, and sudo is not enabled: set sudo = true in [package.metadata.ship] or deploy as root\"");
    }
    crate::diagnose::clock_end(script);
    // The nearest existing ancestor of deploy_to must be writable and have room. (`${_p%/*}`
    // is dirname for the absolute, normalised deploy_to: no process per step.)
    script.line(
        "_p={}; while [ ! -e \"$_p\" ]; do _p=${{_p%/*}}; [ -n \"$_p\" ] || _p=/; done",
        &[layout.root()],
    );
    script.lines("[ -w \"$_p\" ] || problem \"$_p is not writable by $(id -un)\"");
    // The fourth field of df's second line, read by the shell (no awk, no pipeline).
    script.lines("_avail=; _df=$(df -Pk \"$_p\" 2>/dev/null) || true");
    script.lines("{ read -r _l || true; read -r _l _l _l _avail _l || true; } <<SHIP_EOF");
    script.lines("$_df");
    script.lines("SHIP_EOF");
    script.lines(
        "if [ -n \"$_avail\" ] && [ \"$_avail\" -lt \"$_disk\" ]; then problem \"only ${_avail} KiB free under $_p, the release needs about $_disk KiB\"; fi",
    );
    world_writable_ancestors(script, layout);
    foreign_unit(script, config);
    crate::jobs::preflight(script, config);
    crate::systemd::privilege::fixed_units_check(script, config);
    for f in &config.shared_files {
        let path = format!("{}/{f}", layout.shared());
        script.line("[ -f {} ] || problem \"shared file $(printf %s {}) is missing: create it on the host before deploying\"", &[&path, &path]);
    }
    script.lines(
        "if [ -n \"$_ghost\" ] && [ -f \"$_ghost\" ]; then problem \"this artifact failed its health check here before ($(cat \"$_ghost\")); deploy a fixed build, or pass --force to try it again\"; fi",
    );
    script.line(
        "[ \"$_problems\" = 0 ] || exit {}",
        &[&EXIT_PREFLIGHT.to_string()],
    );
}

/// Prints `cached=<ext>` for each form of this host's artifact (the one for its `uname -m`,
/// as [`checks`] ran first) already in the host's artifact cache.
pub fn cached(script: &mut Script, layout: &Layout, reqs: &[Requirements]) {
    for r in reqs {
        let Some(sha) = r.artifact_sha.as_deref() else {
            continue;
        };
        for e in [Encoding::Zstd, Encoding::Gzip, Encoding::Tar] {
            script.line(
                "[ \"$_arch\" = {} ] && [ -f {} ] && echo cached={} || true",
                &[&r.machine, &layout.artifact(sha, e.ext()), e.ext()],
            );
        }
    }
}

/// The one check of flows that take the lock without an artifact (rollback, prune): the unit
/// must not be one cargo-ship did not write ([`foreign_unit`]), since rollback rewrites and
/// restarts it. Exits [`EXIT_PREFLIGHT`] before touching anything; problems go to stdout as
/// `problem=` lines and to stderr.
pub fn unit_guard(script: &mut Script, config: &Config) {
    script.lines("_problems=0");
    script.lines("problem() { printf 'problem=%s\\n' \"$*\"; printf '%s\\n' \"$*\" >&2; _problems=$((_problems + 1)); }");
    crate::hostfacts::uid(script);
    foreign_unit(script, config);
    crate::systemd::privilege::fixed_units_check(script, config);
    script.line(
        "[ \"$_problems\" = 0 ] || exit {}",
        &[&EXIT_PREFLIGHT.to_string()],
    );
}

/// A problem for each existing directory on the way to deploy_to (itself included) that every
/// local user can write: they could swap the releases, or the binary root runs, under it.
fn world_writable_ancestors(script: &mut Script, layout: &Layout) {
    // Every ancestor (deploy_to included) into "$@", then one `find` for all of them.
    script.line(
        "_p={}; set --; while :; do set -- \"$@\" \"$_p\"; [ \"$_p\" = / ] && break; _p=${{_p%/*}}; [ -n \"$_p\" ] || _p=/; done",
        &[layout.root()],
    );
    script
        .lines("_ww=$(find -H \"$@\" -maxdepth 0 -type d -perm -0002 -print 2>/dev/null) || true");
    script.lines("if [ -n \"$_ww\" ]; then while IFS= read -r _p; do problem \"$_p is writable by every local user (mode $(stat -L -c %a \"$_p\")): deploy_to must not be in or under such a directory; choose another deploy_to, or chmod o-w $_p\"; done <<SHIP_EOF");
    script.lines("$_ww");
    script.lines("SHIP_EOF");
    script.lines("fi");
}

/// A problem for each unit file cargo-ship may write or remove for this config (the app units
/// of every restart strategy and the guard's) that exists and was not written by it (in
/// /etc/systemd/system, or wherever systemd loads the unit from, e.g. `ssh` from
/// /lib/systemd/system): a deploy or rollback would replace or remove it, and a failed first
/// deploy would stop and disable it.
fn foreign_unit(script: &mut Script, config: &Config) {
    foreign_unit_in(script, config, crate::systemd::unit::SEARCH_PATH);
}

/// [`foreign_unit`] with the unit search path `dirs`, in systemd's order of precedence.
///
/// Where systemd loads a unit from is the first of `dirs` holding a file (or link) of that
/// name, as `systemctl show -p FragmentPath` would say (issue #18: found by the shell, with
/// no process, instead of asking systemd; templates too, which `systemctl show` refuses).
fn foreign_unit_in(script: &mut Script, config: &Config, dirs: &[&str]) {
    use crate::systemd::{guard, unit};
    let [mark_app, mark_guard] = crate::systemd::privilege::legacy_marks(config);
    let mut names = unit::managed(config).to_vec();
    names.extend([guard::timer(config), guard::service(config)]);
    // And any other unit file the service needs (the one list setup fixes, issue #16).
    for f in crate::systemd::unit_files(config) {
        if !names.contains(&f.name) {
            names.push(f.name);
        }
    }
    script.lines("set --");
    for d in dirs {
        script.line("set -- \"$@\" {}", &[d]);
    }
    for name in &names {
        script.line(
            "_f=; for _d in \"$@\"; do if [ -e \"$_d\"/{} ] || [ -L \"$_d\"/{} ]; then _f=$_d/{}; break; fi; done",
            &[name, name, name],
        );
        // The first line read by the shell (no `head`): an unreadable file reads as empty,
        // which is not the header.
        // Ours: the header naming this unit and deploy_to, or the older header with a line
        // only this service's units have (issue #16: `x-guard.service` of unit `x` is not
        // the app unit of a service named `x-guard`).
        script.line(
            "_h=; if [ -n \"$_f\" ] && {{ IFS= read -r _h 2>/dev/null < \"$_f\" || true; [ \"$_h\" != {} ]; }} && ! {{ [ \"$_h\" = {} ] && grep -qxF -e {} -e {} -- \"$_f\" 2>/dev/null; }}; then",
            &[&unit::header(config), unit::HEADER, &mark_app, &mark_guard],
        );
        script.line(
            "  case $_h in '# Generated by cargo-ship'*) problem \"unit\" {} \"already exists in $_f and belongs to another service deployed by cargo-ship (its first line: $_h): a deploy or rollback would replace or remove it; give this service a systemd.unit of its own\" ;;",
            &[name],
        );
        script.line(
            "  *) problem \"unit\" {} \"already exists in $_f and was not written by cargo-ship: a deploy or rollback would replace or remove it; set systemd.unit to a name of its own, or remove that unit first\" ;; esac; fi",
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
    /// The target of the artifact this host gets (empty when none runs there).
    pub target: String,
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
                "target" => f.target = v.to_string(),
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

    fn run_sh(s: &Script) -> String {
        let out = s.run_local();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Where systemd would load each unit from is found on the unit search path by the shell
    /// (no `systemctl show`): the first directory holding the name wins, so a foreign file
    /// there is a problem, one shadowed by ours is not, and ours and unknown units are not.
    /// The blue-green template is checked like the others.
    #[test]
    fn issue_18_foreign_units_found_on_the_search_path() {
        let config = crate::config::tests_support::config_from("", "");
        let header = crate::systemd::unit::header(&config);
        let foreign = "[Unit]\nDescription=someone else's\n".to_string();
        let ours = format!("{header}\n[Unit]\n");
        // Issue #16: an older cargo-ship unit is ours by its SHIP_DEPLOY_TO line; another
        // service's (its header names another unit, or its lines another deploy_to) is not.
        let legacy = format!(
            "{}\n[Service]\nEnvironment=\"SHIP_DEPLOY_TO=/opt/hello\"\n",
            crate::systemd::unit::HEADER
        );
        let other_line = "# Generated by cargo-ship for unit hello-x in /opt/hello-x; changes here are replaced by the next deploy.";
        let other = format!("{other_line}\n");
        let other_legacy = format!(
            "{}\n[Service]\nEnvironment=\"SHIP_DEPLOY_TO=/opt/hello-x\"\n",
            crate::systemd::unit::HEADER
        );
        // (file in the first dir, file in the second, name, the problem's dir or none)
        type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a str, Option<usize>);
        let cases: [Case; 9] = [
            (None, Some(&foreign), "hello.service", Some(1)),
            (Some(&foreign), None, "hello.service", Some(0)),
            (Some(&ours), Some(&foreign), "hello.service", None),
            (Some(&foreign), Some(&ours), "hello.service", Some(0)),
            (None, None, "hello.service", None),
            (Some(&legacy), None, "hello.service", None),
            (Some(&other), None, "hello.service", Some(0)),
            (None, Some(&other_legacy), "hello.service", Some(1)),
            (None, Some(&foreign), "hello@.service", Some(1)),
        ];
        for (k, (first, second, name, expect)) in cases.into_iter().enumerate() {
            let root = tempfile::tempdir().unwrap();
            let dirs = [root.path().join("etc"), root.path().join("lib")];
            for (d, text) in dirs.iter().zip([first, second]) {
                std::fs::create_dir_all(d).unwrap();
                if let Some(text) = text {
                    std::fs::write(d.join(name), text).unwrap();
                }
            }
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let mut s = Script::new("t");
            s.lines("problem() { printf 'problem=%s\\n' \"$*\"; }");
            foreign_unit_in(&mut s, &config, &[&dirs[0], &dirs[1]]);
            let out = run_sh(&s);
            match expect {
                None => assert!(!out.contains("problem="), "{k}: {out}"),
                Some(d) => {
                    let at = format!("{}/{name}", dirs[d]);
                    let first_line = match k {
                        6 => other_line,
                        _ => crate::systemd::unit::HEADER,
                    };
                    let want = if k == 6 || k == 7 {
                        format!("problem=unit {name} already exists in {at} and belongs to another service deployed by cargo-ship (its first line: {first_line}): a deploy or rollback would replace or remove it; give this service a systemd.unit of its own\n")
                    } else {
                        format!("problem=unit {name} already exists in {at} and was not written by cargo-ship: a deploy or rollback would replace or remove it; set systemd.unit to a name of its own, or remove that unit first\n")
                    };
                    assert_eq!(out, want, "{k}");
                }
            }
        }
    }

    /// Every ancestor of deploy_to is checked with one `find`; a world-writable one is named.
    #[test]
    fn world_writable_ancestors_in_sh() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let app = open.join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut s = Script::new("t");
        s.lines("problem() { printf 'problem=%s\\n' \"$*\"; }");
        world_writable_ancestors(
            &mut s,
            &Layout::new(&app.join("deploy").display().to_string()),
        );
        let out = run_sh(&s);
        assert!(
            out.contains(&format!(
                "problem={} is writable by every local user (mode 777)",
                open.display()
            )),
            "{out}"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run_sh(&s);
        // /tmp (mode 1777) may be an ancestor of the temp dir: only `open` is ours to judge.
        assert!(
            !out.contains(&format!("problem={} ", open.display())),
            "{out}"
        );
    }

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
            let out = s.run_local();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(!text.contains("problem="), ok, "{have} vs {need}: {text}");
        }
    }

    /// Runs [`checks`] through the real /bin/sh on this machine: the host's `uname -m` picks
    /// the requirements (and only their glibc is compared), and a host no artifact runs on is
    /// a problem naming its architecture and the targets there are.
    #[test]
    fn checks_pick_the_artifact_for_the_hosts_architecture() {
        let here = String::from_utf8(
            std::process::Command::new("uname")
                .arg("-m")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let other = if here == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let req = |machine: &str, target: &str, glibc: Option<&str>| Requirements {
            machine: machine.into(),
            target: target.into(),
            glibc: glibc.map(String::from),
            disk_kib: 1,
            artifact_sha: None,
            force: false,
        };
        let config = crate::config::tests_support::config_with("");
        let layout = Layout::new(&config.deploy_to);
        let run = |reqs: &[Requirements]| {
            let mut s = Script::new("t");
            checks(&mut s, &config, &layout, reqs);
            let out = s.run_local();
            let facts = Facts::parse(&String::from_utf8_lossy(&out.stdout));
            // Only the problems about the artifact (not root, disk or tools of this machine).
            let problems: Vec<String> = facts
                .problems
                .iter()
                .filter(|p| p.contains("uname -m") || p.contains("glibc"))
                .cloned()
                .collect();
            (facts.target, problems)
        };

        // Two artifacts: this machine's is chosen; the other's glibc need is not compared.
        let (target, problems) = run(&[
            req(other, "other-unknown-linux-gnu", Some("9.99")),
            req(&here, "here-unknown-linux-musl", None),
        ]);
        assert_eq!(target, "here-unknown-linux-musl");
        assert!(problems.is_empty(), "{problems:?}");
        // This machine's artifact needs a glibc nobody has: that is the problem reported.
        let (_, problems) = run(&[
            req(other, "other-unknown-linux-gnu", None),
            req(&here, "here-unknown-linux-gnu", Some("9.99")),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("the binary needs glibc 9.99 but this host has"));
        // No artifact for this machine.
        let (target, problems) = run(&[
            req(other, "other-unknown-linux-gnu", None),
            req("riscv64", "riscv64gc-unknown-linux-gnu", None),
        ]);
        assert_eq!(target, "");
        assert_eq!(
            problems,
            [format!(
                "this host is {here} (uname -m), and none of the configured targets runs there \
                 (targets: other-unknown-linux-gnu, riscv64gc-unknown-linux-gnu)"
            )]
        );
        // One artifact, for another machine.
        let (_, problems) = run(&[req(other, "other-unknown-linux-gnu", Some("9.99"))]);
        assert_eq!(
            problems,
            [format!(
                "this host is {here} (uname -m) but the artifact is built for \
                 other-unknown-linux-gnu, which runs on {other}"
            )]
        );
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
