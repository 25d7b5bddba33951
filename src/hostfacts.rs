//! Facts about the host that the scripts read with the shell alone, without starting a process
//! (issue #18: every process counts on a busy host). The scripts run under `sh`, which is dash
//! on Debian: no `$EUID`, no `$EPOCHSECONDS`, no `readlink` builtin; `read`, `cd -P`, `[`,
//! `printf` and parameter expansion are builtins there, and a redirection of a builtin or a
//! loop opens the file in the shell itself.
//!
//! Each function sets one shell variable, named in its docs, and falls back to the usual
//! command when the shell cannot tell (no /proc, a dangling link).

use crate::remote::script::Script;

/// Sets `$_uid` to the script's effective uid (what `id -u` prints), read from the `Uid:`
/// line of `/proc/self/status` (real, effective, saved, filesystem): `/proc/self` is the shell
/// itself, since the redirection is opened by the shell.
pub fn uid(s: &mut Script) {
    s.lines("_uid=; if [ -r /proc/self/status ]; then while read -r _k _r _e _x; do if [ \"$_k\" = Uid: ]; then _uid=$_e; break; fi; done < /proc/self/status; fi; [ -n \"$_uid\" ] || _uid=$(id -u)");
}

/// Sets `$_c` to the last path component of where the symlink `link` points (`releases/<id>`
/// gives `<id>`), empty when `link` does not exist. `cd -P` in the script's own shell resolves
/// it; the working directory is put back. A link whose target is gone still names it (then
/// `readlink` runs: that is no deploy's normal path).
pub fn link_base(s: &mut Script, link: &str) {
    s.line(
        "_c=; _lo=$PWD; if cd -P -- {} 2>/dev/null; then _c=${{PWD##*/}}; cd -- \"$_lo\" 2>/dev/null || cd /; elif [ -L {} ]; then _c=$(readlink -- {} 2>/dev/null) || true; _c=${{_c##*/}}; fi",
        &[link, link, link],
    );
}

/// `<deploy_to>/.ship/clock`: the host's wall clock and uptime read together by a preflight
/// (`<unix seconds> <uptime> <boot id>`), so later scripts of the deploy (and the dead-man's
/// switch it arms) know the time without `date`: see [`now`].
pub fn clock_file(layout: &crate::layout::Layout) -> String {
    format!("{}/clock", layout.state())
}

/// How old (by the uptime) [`clock_file`] may be for [`now`] to use it: a switch runs seconds
/// after its preflight (longer only when batches or an approval wait in between).
const CLOCK_MAX_AGE_SECS: u64 = 600;

/// Records [`clock_file`] from `$_wall` (unix seconds, `date +%s`) and `$_ck` (the uptime read
/// right after it, see [`crate::diagnose::clock_start`]). No process.
pub fn record_clock(s: &mut Script, file: &str) {
    s.line(
        "_bi=; if [ -r /proc/sys/kernel/random/boot_id ]; then read -r _bi < /proc/sys/kernel/random/boot_id || true; fi; printf '%s %s %s\\n' \"$_wall\" \"$_ck\" \"$_bi\" > {}",
        &[file],
    );
}

/// Sets `$_now` to the time (unix seconds, as `date +%s` prints it): the wall clock recorded
/// in `file` ([`record_clock`]) plus the uptime since, when `file` was written in this boot
/// (same boot id) at most [`CLOCK_MAX_AGE_SECS`] ago; else `date +%s` (at boot, after a long
/// wait, without /proc). Never later than `date` would say: both truncate, and the uptime is
/// read after the recorded `date`.
pub fn now(s: &mut Script, file: &str) {
    s.line(
        "_now=; if [ -r {} ] && [ -r /proc/uptime ] && [ -r /proc/sys/kernel/random/boot_id ]; then _cw=; _cu=; _cb=; _bi=; _u=; read -r _cw _cu _cb < {} || true; read -r _bi < /proc/sys/kernel/random/boot_id || true; read -r _u _x < /proc/uptime || true",
        &[file, file],
    );
    s.line(
        "  case $_cw:$_cu:$_u in [0-9]*:[0-9]*.[0-9][0-9]:[0-9]*.[0-9][0-9]) case $_cw${{_cu%.*}}${{_u%.*}} in *[!0-9]*) ;; *) if [ -n \"$_cb\" ] && [ \"$_cb\" = \"$_bi\" ]; then _d=$(( (${{_u%.*}} - ${{_cu%.*}}) * 100 + 1${{_u#*.}} - 1${{_cu#*.}} )); if [ \"$_d\" -ge 0 ] && [ \"$_d\" -le {} ]; then _now=$(( _cw + _d / 100 )); fi; fi ;; esac ;; esac; fi; [ -n \"$_now\" ] || _now=$(date +%s)",
        &[&(CLOCK_MAX_AGE_SECS * 100).to_string()],
    );
}

/// `<deploy_to>/.ship/facts`: what the last preflight learnt of the host that only a reboot or
/// a library upgrade changes (`<uname -m> <glibc version or -> <boot id>`).
pub fn facts_file(layout: &crate::layout::Layout) -> String {
    format!("{}/facts", layout.state())
}

/// Sets `$_arch` (`uname -m`) and `$_glibc` (`getconf GNU_LIBC_VERSION` without `glibc `,
/// empty without glibc), from `file` ([`facts_file`]) when it was written in this boot and
/// `/etc/ld.so.cache` (rewritten by `ldconfig` whenever a library is installed or upgraded)
/// is not newer; else by asking `uname` and `getconf`, and sets `$_facts_new` to 1 so
/// [`record_facts`] writes them (once the deploy holds the lock).
pub fn arch_and_glibc(s: &mut Script, file: &str) {
    s.line(
        "_arch=; _glibc=; _facts_new=1; if [ -r {} ] && [ -f /etc/ld.so.cache ] && ! [ /etc/ld.so.cache -nt {} ] && [ -r /proc/sys/kernel/random/boot_id ]; then _fa=; _fg=; _fb=; _bi=; read -r _fa _fg _fb < {} || true; read -r _bi < /proc/sys/kernel/random/boot_id || true; if [ -n \"$_fa\" ] && [ -n \"$_fb\" ] && [ \"$_fb\" = \"$_bi\" ]; then _arch=$_fa; _glibc=${{_fg#-}}; _facts_new=0; fi; fi",
        &[file, file, file],
    );
    s.lines("if [ \"$_facts_new\" = 1 ]; then _arch=$(uname -m); _glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null) || true; _glibc=${_glibc#glibc }; fi");
}

/// Writes [`facts_file`] when [`arch_and_glibc`] asked the commands. No process.
pub fn record_facts(s: &mut Script, file: &str) {
    s.line(
        "if [ \"$_facts_new\" = 1 ]; then _bi=; if [ -r /proc/sys/kernel/random/boot_id ]; then read -r _bi < /proc/sys/kernel/random/boot_id || true; fi; printf '%s %s %s\\n' \"$_arch\" \"${{_glibc:--}}\" \"$_bi\" > {}; fi",
        &[file],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &Script) -> String {
        let out = s.run_local();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The time from a recorded clock: the recorded seconds plus the uptime since (same boot);
    /// `date` when the record is of another boot, too old, from the future, or garbled.
    #[test]
    fn issue_18_now_from_the_recorded_clock() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let boot = boot.trim();
        let up: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let date = || -> u64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let run = |record: &str| -> u64 {
            std::fs::write(&file, record).unwrap();
            let mut s = Script::new("t");
            now(&mut s, &file.display().to_string());
            s.lines("echo \"$_now\"");
            sh(&s).trim().parse().unwrap()
        };
        // 30.5 s of uptime ago the clock said 1000: now it says 1030 (or 1031 on a slow run).
        let then = format!("{:.2}", up - 30.5);
        let t = run(&format!("1000 {then} {boot}\n"));
        assert!((1030..=1032).contains(&t), "{t}");
        // Another boot, too old, later than now, garbled: `date`.
        // (Too old only where this machine has been up long enough to say so.)
        let old = match up > 700.0 {
            true => format!("1000 {:.2} {boot}\n", up - 700.0),
            false => String::new(),
        };
        for record in [
            format!("1000 {then} another-boot\n"),
            old,
            format!("1000 {:.2} {boot}\n", up + 50.0),
            format!("x1000 {then} {boot}\n"),
            format!("1000 {} {boot}\n", up as u64),
            String::new(),
        ] {
            let before = date();
            let t = run(&record);
            assert!(t >= before && t <= date(), "{record:?}: {t}");
        }
    }

    /// The architecture and glibc come from the facts file written in this boot, unless
    /// /etc/ld.so.cache is newer; else from `uname` and `getconf`, and are recorded then.
    #[test]
    fn issue_18_arch_and_glibc_from_the_recorded_facts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("facts").display().to_string();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let run = || {
            let mut s = Script::new("t");
            arch_and_glibc(&mut s, &file);
            record_facts(&mut s, &file);
            s.lines("echo \"$_arch|$_glibc|$_facts_new\"");
            sh(&s)
        };
        let asked = run();
        assert!(asked.ends_with("|1\n"), "{asked}");
        let recorded = std::fs::read_to_string(&file).unwrap();
        assert!(recorded.ends_with(&format!(" {}", boot)), "{recorded}");
        // (Without /etc/ld.so.cache, the facts are never believed.)
        if std::path::Path::new("/etc/ld.so.cache").exists() {
            assert_eq!(run(), asked.replace("|1\n", "|0\n"));
            // Recorded facts are believed (this is what the shell read, not the machine).
            std::fs::write(&file, format!("riscv64 - {boot}")).unwrap();
            assert_eq!(run(), "riscv64||0\n");
        }
        // Another boot's: asked again.
        std::fs::write(&file, "riscv64 2.99 another-boot\n").unwrap();
        assert_eq!(run(), asked);
    }

    #[test]
    fn uid_is_what_id_says() {
        let mut s = Script::new("t");
        uid(&mut s);
        s.lines("echo \"$_uid\"; id -u");
        let out = sh(&s);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], lines[1], "{out}");
    }

    /// The release a link points at, through a link in a path with a symlinked parent; a
    /// dangling link still names its target; a missing one is empty; the working directory
    /// is unchanged.
    #[test]
    fn link_base_names_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("releases/20260101000000")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink("releases/20260101000000", real.join("current")).unwrap();
        std::os::unix::fs::symlink("releases/20260202000000", real.join("dangling")).unwrap();
        let app = dir.path().join("app");
        for (name, expect) in [
            ("current", "20260101000000"),
            ("dangling", "20260202000000"),
            ("missing", ""),
        ] {
            let mut s = Script::new("t");
            s.lines("cd /tmp");
            link_base(&mut s, &app.join(name).display().to_string());
            s.lines("echo \"$_c\"; pwd");
            assert_eq!(sh(&s), format!("{expect}\n/tmp\n"), "{name}");
        }
    }
}
