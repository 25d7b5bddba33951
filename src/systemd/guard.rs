//! The dead-man's switch: after a switch, the host puts the previous release back by itself
//! unless the deploy confirms the new one within `health.confirm_timeout`.
//!
//! Built from systemd alone, so it outlives the SSH session, a SIGKILLed client, a cut network
//! and a reboot:
//!
//! * `<unit>-guard.service` is (re)started by the switch script *before* `current` flips,
//!   after `.ship/pending` records the switch (`release=`, `previous=`, `holder=`,
//!   `deadline=` in wall-clock seconds); its `ExecStart` is the revert script below (inside the
//!   unit file), which sleeps until the deadline and then reverts; the same service runs at
//!   boot when a `pending` record survived a reboot (see [`units`] for why not a timer);
//! * the deploy's confirmation removes `pending` and stops the service.
//!
//! Confirmation and revert both hold `flock .ship/guard.lock` for their whole run, and each
//! first checks `pending`: whichever gets the lock first wins, and the other sees it (the
//! confirmation then exits [`EXIT_REVERTED`], so the deploy reports the truth). The revert
//! restores the previous unit files and sockets, marks the release failed, writes a
//! revisions.log line, and releases the deploy lock of the deploy that armed it.

use crate::config::Config;
use crate::layout::Layout;
use crate::remote::script::{Script, EXIT_REVERTED};

use super::unit::{self, UnitFile};
use super::{escape_specifiers, exec_arg, strategy};

/// `<unit>-guard.timer`: what earlier versions armed; removed when found.
pub fn timer(config: &Config) -> String {
    format!("{}-guard.timer", config.systemd.unit)
}

/// `<unit>-guard.service`.
pub fn service(config: &Config) -> String {
    format!("{}-guard.service", config.systemd.unit)
}

/// True when `health.confirm_timeout` is not zero.
pub fn enabled(config: &Config) -> bool {
    !config.health.confirm_timeout.is_zero()
}

fn secs(config: &Config) -> u64 {
    config.health.confirm_timeout.as_secs().max(1)
}

/// A glob matching exactly a release id (14 digits).
#[cfg(test)]
const RELEASE_GLOB: &str = "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]";

/// The guard's unit file: one service that waits until the deadline recorded in `pending`
/// and then reverts. It is a running process, not a monotonic timer: a `daemon-reload` on the
/// host (another deploy, a package upgrade) re-bases a timer's `OnActiveSec=` and so delays the
/// revert (seen on the test hosts: 35 s instead of 15), while a process waiting for a wall-clock
/// deadline is not moved. Stopping it (the confirmation) ends the wait; the revert itself runs
/// under the flock, so a stop can never cut one short.
pub fn units(config: &Config) -> Vec<UnitFile> {
    let layout = Layout::new(&config.deploy_to);
    let unit = &config.systemd.unit;
    let script = revert_script(config)
        .render()
        .unwrap_or_else(|e| format!("echo {}; exit 1", exec_arg(&e.to_string())));
    let guard = format!(
        "{header}\n[Unit]\n\
         Description=cargo-ship dead-man's switch of {u}: puts the previous release back unless the deploy confirmed the new one\n\
         ConditionPathExists={pending}\n\
         After={u}.service {u}.socket {u}@blue.service {u}@green.service\n\
         StartLimitIntervalSec=0\n\n\
         [Service]\nType=exec\nExecStart=/bin/sh -c {script}\nTimeoutStopSec=10000ms\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        header = unit::header(config),
        u = escape_specifiers(unit),
        pending = escape_specifiers(&layout.pending()),
        script = exec_arg(&script),
    );
    vec![UnitFile {
        name: service(config),
        text: guard,
    }]
}

/// Installs (or, when the switch is off, removes) the guard's unit files; reloads systemd when
/// they changed. Needs `$SUDO`.
pub fn install(s: &mut Script, config: &Config) {
    let layout = Layout::new(&config.deploy_to);
    let (t, sv) = (timer(config), service(config));
    // The timer of earlier versions goes (the service now waits by itself).
    s.line("if [ -f {} ]; then", &[&unit::path(&t)]);
    s.line(
        "  $SUDO systemctl stop {} 2>/dev/null || true; if [ -n \"$_H\" ]; then $SUDO remove {}; else $SUDO rm -f -- {}; fi; $SUDO systemctl daemon-reload",
        &[&t, &t, &unit::path(&t)],
    );
    s.lines("fi");
    if !enabled(config) {
        s.line("if [ -f {} ]; then", &[&unit::path(&sv)]);
        s.line(
            "  $SUDO systemctl stop {} 2>/dev/null || true; $SUDO systemctl $_nr disable -q {} 2>/dev/null || true",
            &[&sv, &sv],
        );
        s.line(
            "  if [ -n \"$_H\" ]; then $SUDO remove {}; else $SUDO rm -f -- {}; fi; $SUDO systemctl daemon-reload",
            &[&sv, &unit::path(&sv)],
        );
        s.lines("fi");
        return;
    }
    s.lines("_changed=0");
    for f in units(config) {
        strategy::write_unit(s, &layout, &f, false);
    }
    s.line(
        "if [ \"$_changed\" = 1 ]; then $SUDO systemctl daemon-reload; $SUDO systemctl $_nr enable -q {}; fi",
        &[&sv],
    );
}

/// Records the switch in `pending` and (re)starts the guard: from now on the host reverts by
/// itself unless [`confirm`] runs in time. Shell variables: `$_prev`, the release to go back
/// to, and `$_now`, the time (unix seconds). Prints `guard_deadline=<unix seconds>`. Needs
/// `$SUDO`.
pub fn arm(s: &mut Script, config: &Config, release: &str, holder: &str) {
    if !enabled(config) {
        return;
    }
    let layout = Layout::new(&config.deploy_to);
    let tmp = format!("{}.tmp", layout.pending());
    s.line("_deadline=$(( _now + {} ))", &[&secs(config).to_string()]);
    s.line(
        "printf 'release=%s\\nprevious=%s\\nholder=%s\\ndeadline=%s\\n' {} \"$_prev\" {} \"$_deadline\" > {}",
        &[release, holder, &tmp],
    );
    s.line("mv -f -- {} {}", &[&tmp, &layout.pending()]);
    restart(s, config);
    s.lines("echo guard_deadline=$_deadline");
}

/// How many times a failed start of the guard is tried again, [`RETRY_PAUSE`] apart, before
/// the script fails.
pub const RETRY: u32 = 5;

/// The pause between two tries of a failed guard start (seconds, as `sleep` takes it).
const RETRY_PAUSE: &str = "0.2";

/// Defines `_guard_retry <units...>`: `systemctl restart` of the units, tried again up to
/// [`RETRY`] times, [`RETRY_PAUSE`] s apart, when it fails; the last failure (with systemd's
/// message) fails the script. Needs `$SUDO`.
///
/// On the test hosts (systemd in a container, cgroup v1) a guard restarted right after its
/// last run ended was seen to fail with 219/CGROUP while systemd still tore down that run's
/// cgroup, for a few hundred milliseconds; a switch must not be given up for that, nor wait
/// a whole second for it.
pub fn define_retry(s: &mut Script, config: &Config) {
    s.line(
        "_guard_retry() {{ _gr=0; while ! $SUDO systemctl restart \"$@\" 2>/dev/null; do _gr=$((_gr + 1)); $SUDO systemctl reset-failed {} 2>/dev/null || true; sleep {}; if [ \"$_gr\" -ge {} ]; then $SUDO systemctl restart \"$@\"; return; fi; done; }}",
        &[&service(config), RETRY_PAUSE, &RETRY.to_string()],
    );
}

/// (Re)starts the guard. Type=exec: returns once the waiting process runs.
/// StartLimitIntervalSec=0 keeps systemd's start rate limit (5 in 10 s) from refusing it; a
/// start that fails anyway is tried again ([`define_retry`]).
fn restart(s: &mut Script, config: &Config) {
    define_retry(s, config);
    s.line("_guard_retry {}", &[&service(config)]);
}

/// Moves the deadline of a host still waiting for the rest of the fleet (a later batch), so
/// the wait does not count against it. Needs `$SUDO`.
pub fn extend(s: &mut Script, config: &Config, release: &str) {
    if !enabled(config) {
        return;
    }
    let layout = Layout::new(&config.deploy_to);
    let pending = layout.pending();
    s.line(
        "if [ \"$(sed -n 's/^release=//p' {} 2>/dev/null)\" = {} ]; then",
        &[&pending, release],
    );
    s.line(
        "  _deadline=$(( $(date +%s) + {} )); sed -i \"s/^deadline=.*/deadline=$_deadline/\" {}",
        &[&secs(config).to_string(), &pending],
    );
    restart(s, config);
    s.lines("  echo guard_deadline=$_deadline");
    s.lines("fi");
}

/// Where the guard's waiting `sleep` writes its pid.
fn sleep_pid(config: &Config) -> String {
    format!("{}/guard.pid", Layout::new(&config.deploy_to).state())
}

/// Takes the guard's flock for the rest of the script, so a firing revert waits for it (and
/// then finds nothing to do) and this script never runs beside one.
pub fn hold(s: &mut Script, config: &Config) {
    let layout = Layout::new(&config.deploy_to);
    s.line(
        "[ -d {} ] || mkdir -p -- {}",
        &[&layout.state(), &layout.state()],
    );
    s.line(
        "exec 9>>{}; if ! flock -w 300 9; then echo 'the dead-man'\\''s switch lock stayed busy for 300s' >&2; exit 1; fi",
        &[&layout.guard_lock()],
    );
}

/// Releases the flock taken by [`hold`] (closes its descriptor).
pub fn release(s: &mut Script) {
    s.lines("exec 9>&-");
}

/// Confirms `release`: removes `pending` and stops the guard, under the flock. When the
/// revert got there first (`current` is no longer `release`), exits [`EXIT_REVERTED`].
pub fn confirm(s: &mut Script, config: &Config, release: &str) {
    if !enabled(config) {
        return;
    }
    let layout = Layout::new(&config.deploy_to);
    hold(s, config);
    s.line(
        "_pr=; if [ -f {} ]; then while IFS='=' read -r _k _v; do [ \"$_k\" != release ] || _pr=$_v; done < {}; fi",
        &[&layout.pending(), &layout.pending()],
    );
    s.line(
        "if [ -f {} ] && [ \"$_pr\" = {} ]; then",
        &[&layout.pending(), release],
    );
    s.line("  rm -f -- {}", &[&layout.pending()]);
    // The guard waits in a `sleep` of its own cgroup: ending that sleep (the shell's `kill`)
    // lets it see that nothing is pending and exit. Anything else: systemctl stops it.
    s.line(
        "  _gp=; _in=0; if [ -f {} ]; then read -r _gp < {} || true; fi",
        &[&sleep_pid(config), &sleep_pid(config)],
    );
    s.line(
        "  if [ -n \"$_gp\" ] && [ -r \"/proc/$_gp/cgroup\" ] && read -r _cm < \"/proc/$_gp/comm\" && [ \"$_cm\" = sleep ]; then while IFS= read -r _l; do case $_l in */{}) _in=1 ;; esac; done < \"/proc/$_gp/cgroup\" || true; fi",
        &[&service(config)],
    );
    s.line(
        "  if [ \"$_in\" != 1 ] || ! kill \"$_gp\" 2>/dev/null; then $SUDO systemctl stop {} 2>/dev/null || true; fi; echo confirmed=1",
        &[&service(config)],
    );
    s.line(
        "else _c=$(readlink {} 2>/dev/null || true); _c=${{_c##*/}}",
        &[&layout.current()],
    );
    s.line(
        "  if [ \"$_c\" != {} ]; then echo \"the dead-man's switch put ${{_c:-nothing}} back before release \"{}\" was confirmed\" >&2; exit {}; fi",
        &[release, release, &EXIT_REVERTED.to_string()],
    );
    s.lines("fi");
}

/// Exits [`EXIT_REVERTED`] when the dead-man's switch already put the previous release back
/// (no switch pending and `current` is not `release`): the client's own revert then leaves
/// the host alone. Must run under [`hold`].
pub fn already_reverted(s: &mut Script, config: &Config, release: &str) {
    if !enabled(config) {
        return;
    }
    let layout = Layout::new(&config.deploy_to);
    s.line(
        "_c=$(readlink {} 2>/dev/null || true); _c=${{_c##*/}}",
        &[&layout.current()],
    );
    s.line(
        "if ! [ -f {} ] && [ \"$_c\" != {} ]; then echo \"the dead-man's switch put ${{_c:-nothing}} back before release \"{}\" was confirmed\" >&2; exit {}; fi",
        &[&layout.pending(), release, release, &EXIT_REVERTED.to_string()],
    );
}

/// Clears the switch after the client itself undid it (revert, abort): stops the guard and
/// removes `pending`. Must run under [`hold`].
pub fn disarm(s: &mut Script, config: &Config) {
    let layout = Layout::new(&config.deploy_to);
    if enabled(config) {
        s.line(
            "$SUDO systemctl stop {} 2>/dev/null || true",
            &[&service(config)],
        );
    }
    s.line(
        "rm -rf -- {} {}",
        &[&layout.pending(), &layout.units_prev()],
    );
}

/// Recovery right after a crashed deploy (`rollback`, `unlock`): when a switch is pending and
/// its holder is gone (`$_gone` = 1, see [`crate::lock::gone`]), does now what the guard
/// would do at the deadline, through the guard itself: under the flock (a revert already
/// running is waited for), the deadline becomes now and the guard is restarted; it reverts at
/// once, and this waits until it has. Prints `pending_release=`, `pending_previous=` and
/// `reverted=1`, or `pending_alive=1` when the switch's deploy still runs. Needs `$SUDO`.
pub fn revert_now(s: &mut Script, config: &Config) {
    let layout = Layout::new(&config.deploy_to);
    let pending = layout.pending();
    s.line("if [ -f {} ]; then", &[&pending]);
    s.line(
        "  _rel=$(sed -n 's/^release=//p' {}); _to=$(sed -n 's/^previous=//p' {})",
        &[&pending, &pending],
    );
    s.lines("  printf 'pending_release=%s\npending_previous=%s\n' \"$_rel\" \"$_to\"");
    s.lines("  if [ \"$_gone\" = 1 ]; then");
    hold(s, config);
    s.line(
        "    if [ -f {} ]; then sed -i 's/^deadline=.*/deadline=0/' {}; fi",
        &[&pending, &pending],
    );
    s.line("    if [ -f {} ]; then", &[&pending]);
    restart(s, config);
    s.lines("    fi");
    release(s);
    // The guard takes the flock, reverts, removes `pending`: wait for that (60 s at most).
    s.line(
        "    _t=0; while [ -f {} ] && [ \"$_t\" -lt 600 ]; do sleep 0.1; _t=$((_t + 1)); done",
        &[&pending],
    );
    s.line(
        "    if [ -f {} ]; then echo \"the dead-man's switch did not put back ${{_to:-nothing}} within 60s: see journalctl -u \"{} >&2; exit 1; fi",
        &[&pending, &service(config)],
    );
    s.lines("    echo reverted=1");
    s.lines("  else echo pending_alive=1; fi");
    s.lines("fi");
}

/// What `<unit>-guard.service` runs (as root; after `cargo ship setup`, as the deploy user
/// through the unit's `ship-root` helper, see [`super::privilege`]): under the flock, if a switch is still pending,
/// put its previous release back with the unit files it replaced, mark the release failed,
/// log it, clear the switch records and release the lock of the deploy that armed it.
pub fn revert_script(config: &Config) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let pending = layout.pending();
    let mut s = Script::new(format!(
        "put the previous release of {} back (dead-man's switch)",
        config.systemd.unit
    ));
    // As root, nothing needs sudo; after `cargo ship setup` the switch runs as the deploy user
    // (a drop-in of the setup) and goes through the same helper as a deploy.
    let helper = super::privilege::helper_path(config);
    s.line(
        "if [ \"$(id -u)\" != 0 ] && [ -x {} ]; then SUDO=\"sudo -n \"{}' '; _nr=; _H=1; else SUDO=''; _nr=--no-reload; _H=; fi",
        &[&helper, &helper],
    );
    // Wait (outside the lock) until the recorded deadline; at boot it is usually past. Read by
    // the shell: no process while the guard starts (that is during the switch).
    s.line(
        "_dl=; if [ -f {} ]; then while IFS='=' read -r _k _v; do [ \"$_k\" != deadline ] || _dl=$_v; done < {}; fi; case $_dl in ''|*[!0-9]*) _dl=0 ;; esac",
        &[&pending, &pending],
    );
    // The wait is a `sleep` whose pid the confirmation finds in `guard.pid` and ends with the
    // shell's own `kill` (no systemctl call); the guard then finds nothing pending and exits.
    s.line(
        "_left=$(( _dl - $(date +%s) )); if [ \"$_left\" -gt 0 ]; then sleep \"$_left\" & _sp=$!; printf '%s\\n' \"$_sp\" > {}; wait \"$_sp\" || true; fi",
        &[&sleep_pid(config)],
    );
    hold(&mut s, config);
    s.line(
        "if ! [ -f {} ]; then echo 'no unconfirmed switch: nothing to revert'; exit 0; fi",
        &[&pending],
    );
    s.line(
        "_rel=$(sed -n 's/^release=//p' {}); _to=$(sed -n 's/^previous=//p' {}); _holder=$(sed -n 's/^holder=//p' {})",
        &[&pending, &pending, &pending],
    );
    // Release ids are 14 digits (the glob is RELEASE_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9], written out: it must stay unquoted).
    s.lines("case $_rel in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]) ;; *) echo \"pending names no release: $_rel\" >&2; exit 1 ;; esac");
    s.lines("case $_to in ''|[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]) ;; *) echo \"pending names no previous release: $_to\" >&2; exit 1 ;; esac");
    s.line(
        "echo \"release $_rel was not confirmed within \"{}\"s: putting back ${{_to:-nothing}}\"",
        &[&secs(config).to_string()],
    );
    s.line(
        "printf 'not confirmed within %ss: the deploy never came back to confirm it\\n' {} > {}/\"$_rel\"",
        &[&secs(config).to_string(), &layout.failed_dir()],
    );
    strategy::restore(&mut s, config);
    s.line(
        "if [ -n \"$_to\" ] && [ -d {}/\"$_to\" ]; then",
        &[&layout.releases()],
    );
    strategy::bring_up(&mut s, config, true, false);
    strategy::retire(&mut s);
    s.lines("else");
    strategy::stop_everything(&mut s, config);
    s.line("  rm -f -- {}", &[&layout.current()]);
    s.lines("fi");
    s.line(
        "printf '%s auto-revert release=%s to=%s by=cargo-ship-guard result=unconfirmed\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$_rel\" \"${{_to:-none}}\" >> {}",
        &[&layout.revisions_log()],
    );
    s.line(
        "rm -f -- {} {}",
        &[&crate::journal::switching(&layout), &pending],
    );
    s.line(
        "if [ \"$(cat {} 2>/dev/null || true)\" = \"$_holder\" ]; then rm -rf -- {}; echo 'released the deploy lock'; fi",
        &[&layout.lock_holder(), &layout.lock()],
    );
    s.lines("echo \"reverted release $_rel\"");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::config_from;

    #[test]
    fn guard_units() {
        let c = config_from(
            "",
            "timeout = \"5s\"\nsettle = \"1s\"\nconfirm_timeout = \"20s\"\n",
        );
        let u = units(&c);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].name, "hello-guard.service");
        assert!(
            u[0].text.contains("[Service]\nType=exec\n"),
            "{}",
            u[0].text
        );
        // It waits for the deadline in `pending` (wall clock), before taking the lock.
        assert!(u[0].text.contains("sleep \\\"$$_left\\\""), "{}", u[0].text);
        let svc = &u[0].text;
        assert!(
            svc.contains("ConditionPathExists=/opt/hello/.ship/pending\n"),
            "{svc}"
        );
        assert!(
            svc.contains("ExecStart=/bin/sh -c \"set -eu\\nif [ ")
                && svc
                    .contains("/usr/local/lib/cargo-ship/hello/ship-root' '; _nr=; _H=1; else SUDO=''; _nr=--no-reload; _H=; fi\\n"),
            "{svc}"
        );
        // The release glob reaches the shell unquoted.
        assert!(
            svc.contains(&format!("case $$_rel in {RELEASE_GLOB})")),
            "{svc}"
        );
    }

    /// A guard start that fails is tried again [`RETRY`] times, [`RETRY_PAUSE`] s apart; a
    /// start that fails every time fails the script with systemctl's status. (`systemctl` is
    /// a shell function here, failing its first `fails` restarts.)
    #[test]
    fn guard_start_is_retried() {
        let c = config_from("", "confirm_timeout = \"60s\"\n");
        for (fails, ok) in [(0u32, true), (1, true), (RETRY, true), (RETRY + 1, false)] {
            let mut s = Script::new("t");
            s.line(
                "SUDO=; _n=0; systemctl() {{ if [ \"$1\" = restart ]; then _n=$((_n + 1)); echo \"restart $_n\" >&2; [ \"$_n\" -gt {} ] || return 3; fi; }}",
                &[&fails.to_string()],
            );
            restart(&mut s, &c);
            s.lines("echo started after $_n");
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(s.render().unwrap())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if ok {
                assert!(out.status.success(), "{fails}: {out:?}");
                assert_eq!(stdout, format!("started after {}\n", fails + 1));
            } else {
                assert_eq!(out.status.code(), Some(3), "{fails}: {out:?}");
                // Only the last try speaks.
                assert_eq!(
                    String::from_utf8_lossy(&out.stderr),
                    format!("restart {}\n", RETRY + 1)
                );
            }
        }
    }

    #[test]
    fn off_when_zero() {
        let c = config_from("", "confirm_timeout = \"0s\"\n");
        assert!(!enabled(&c));
        let mut s = Script::new("x");
        arm(&mut s, &c, "20260101000000", "me");
        assert_eq!(s.render().unwrap(), "set -eu\n");
    }
}
