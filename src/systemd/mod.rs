//! systemd on the host: the unit files (`unit`), how a release is put in service under each
//! restart strategy (`strategy`), the dead-man's switch (`guard`), and the shared pieces here:
//! systemd's quoting, `$SUDO`, reading a unit's state and its journal.
//!
//! Unit-file values use systemd's own quoting (not the shell's): see [`exec_arg`].

use crate::config::Config;
use crate::remote::script::Script;

pub mod guard;
pub mod privilege;
pub mod strategy;
pub mod unit;

/// Every unit file this service needs on a host, name and text: the app units of its restart
/// strategy and, when the dead-man's switch is on, the guard's. The one list both sides use:
/// `cargo ship setup` fixes exactly these texts for the helper (root renders them), and a
/// deploy installs them by name (preflight refuses when the host's fixed copies differ, see
/// [`privilege::fixed_units_check`]). Another kind of unit (a scheduled job's `.service` and
/// `.timer`) added here is fixed by setup and allowed by the helper with no other change.
pub fn unit_files(config: &Config) -> Vec<unit::UnitFile> {
    let mut files = unit::app_units(config);
    if guard::enabled(config) {
        files.extend(guard::units(config));
    }
    // The scheduled jobs' `.service` and `.timer` (#21).
    files.extend(crate::jobs::all_units(config));
    files
}

/// The unit whose journal holds the service's lines: `<unit>.service`, or for blue-green the
/// pattern `<unit>@*.service` (both instances), as `journalctl -u` takes it.
pub fn unit_name(config: &Config) -> String {
    match config.systemd.restart {
        crate::config::RestartStrategy::BlueGreen => format!("{}@*.service", config.systemd.unit),
        _ => unit::service(config),
    }
}

/// One ExecStart word in systemd's syntax: double-quoted, with `\`, `"` and control
/// characters escaped C-style, `$` doubled (no variable expansion) and `%` doubled (no
/// specifier expansion).
pub fn exec_arg(s: &str) -> String {
    quote(s, true)
}

/// One Environment= assignment: quoted like [`exec_arg`], but `$` is left alone, because
/// Environment= does no variable expansion (a doubled `$$` would reach the process as `$$`).
pub fn env_arg(s: &str) -> String {
    quote(s, false)
}

fn quote(s: &str, double_dollar: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '$' if double_dollar => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value written bare into a unit file (Description=, WorkingDirectory=...): `%` doubled,
/// and every control character (systemd ends a line at CR as well as LF) shown as a space.
pub(crate) fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%").replace(|c: char| c.is_control(), " ")
}

/// Sets `$SUDO` for the script: when the config asks for sudo, the unit's `ship-root` helper
/// (through `sudo -n`) if `cargo ship setup` installed it and the script does not run as root,
/// else `sudo -n `; empty without sudo. `$_H` is `1` when the helper is used: unit files are
/// then installed by name (`$SUDO install <name>`), never from the script's text. Templates then write `$SUDO systemctl ...` (the
/// variable holds only our literal: the helper path has no spaces, unit names are validated).
///
/// Also sets `$_nr`, the flag that keeps `systemctl enable`/`disable` from reloading systemd
/// (each reload re-runs every generator: ~15 processes on a Debian host), since the scripts run
/// one `daemon-reload` themselves: `--no-reload`, or empty through the helper, whose
/// enable/disable add it themselves (an older helper reloads: slower, same result).
pub fn sudo_prelude(script: &mut Script, config: &Config) {
    if config.sudo {
        let helper = privilege::helper_path(config);
        crate::hostfacts::uid(script);
        script.line(
            "if [ \"$_uid\" != 0 ] && [ -x {} ]; then SUDO=\"sudo -n \"{}' '; _nr=; _H=1; else SUDO='sudo -n '; _nr=--no-reload; _H=; fi",
            &[&helper, &helper],
        );
    } else {
        script.lines("SUDO=''; _nr=--no-reload; _H=");
    }
}

/// Reads the state of the unit named by shell variable `$_svc` with one `systemctl show`
/// into `$_st`, `$_inv`, `$_pid`, `$_nr`, `$_since`; with a prefix, also prints them as
/// `<prefix>_active=`, `_invocation=`, `_pid=`, `_restarts=`, `_since=` lines.
pub fn show_state(script: &mut Script, prefix: Option<&'static str>) {
    script.lines("_st=; _inv=; _pid=; _nr=; _since=");
    script.lines("_props=$(systemctl show -p ActiveState -p InvocationID -p MainPID -p NRestarts -p ActiveEnterTimestamp -- \"$_svc\" 2>/dev/null) || true");
    script.lines("while IFS='=' read -r _k _v; do case $_k in ActiveState) _st=$_v ;; InvocationID) _inv=$_v ;; MainPID) _pid=$_v ;; NRestarts) _nr=$_v ;; ActiveEnterTimestamp) _since=$_v ;; esac; done <<SHIP_EOF");
    script.lines("$_props");
    script.lines("SHIP_EOF");
    if let Some(prefix) = prefix {
        print_state(script, prefix);
    }
}

/// Prints the state [`show_state`] read last as `<prefix>_active=`, `_invocation=`, `_pid=`,
/// `_restarts=`, `_since=` lines (no process).
pub fn print_state(script: &mut Script, prefix: &'static str) {
    script.line(
        "printf '%s_active=%s\\n%s_invocation=%s\\n%s_pid=%s\\n%s_restarts=%s\\n%s_since=%s\\n' \
         {} \"$_st\" {} \"$_inv\" {} \"$_pid\" {} \"$_nr\" {} \"$_since\"",
        &[prefix, prefix, prefix, prefix, prefix],
    );
}

/// Prints the last `lines` journal lines of the unit after a `--journal--` marker line.
pub fn journal_tail(script: &mut Script, config: &Config, lines: u32) {
    script.lines("echo --journal--");
    script.line(
        "$SUDO journalctl -u {} -n {} --no-pager -o short-iso 2>&1 || true",
        &[&unit_name(config), &lines.to_string()],
    );
}

/// Splits a script's stdout at the `--journal--` marker.
pub fn split_journal(stdout: &str) -> (&str, &str) {
    match stdout.find("--journal--\n") {
        Some(i) => (&stdout[..i], &stdout[i + "--journal--\n".len()..]),
        None => (stdout, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arg_escapes_systemd_syntax() {
        assert_eq!(exec_arg("plain"), "\"plain\"");
        assert_eq!(exec_arg("a b"), "\"a b\"");
        assert_eq!(exec_arg("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(exec_arg("$HOME"), "\"$$HOME\"");
        assert_eq!(exec_arg("100%"), "\"100%%\"");
        assert_eq!(exec_arg("a\\b\nc"), "\"a\\\\b\\nc\"");
        assert_eq!(env_arg("K=$HOME 100%"), "\"K=$HOME 100%%\"");
    }

    #[test]
    fn splits_journal() {
        let (a, b) = split_journal("x=1\n--journal--\nline1\nline2\n");
        assert_eq!(a, "x=1\n");
        assert_eq!(b, "line1\nline2\n");
        assert_eq!(split_journal("x=1\n"), ("x=1\n", ""));
    }
}
