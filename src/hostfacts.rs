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
        "_c=; _lo=$PWD; if cd -P -- {} 2>/dev/null; then _c=${{PWD##*/}}; cd -- \"$_lo\" 2>/dev/null || cd /; elif [ -L {} ]; then _c=$(readlink -- {} 2>/dev/null || true); _c=${{_c##*/}}; fi",
        &[link, link, link],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &Script) -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(s.render().unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
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
