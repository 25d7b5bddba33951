//! The dead-man's switch: after a switch, the host puts the previous release back by itself
//! unless the deploy confirms the new one within `health.confirm_timeout`.
//!
//! Built from systemd alone, so it outlives the SSH session, a SIGKILLed client, a cut network
//! and a reboot:
//!
//! * `.ship/pending` records the switch (`release=`, `previous=`, `holder=`, `deadline=` in
//!   wall-clock seconds) before anything changes; `<unit>-guard.service` is started in the
//!   same `systemctl restart` as the service, right after `current` flips (issue #18: one
//!   systemctl call for both). Until then the switch script's output waits in a file and
//!   SIGPIPE is ignored ([`quiet`]), so a client that vanishes cannot stop the script between
//!   the flip and the guard's start, and an exit of the script in between starts the guard
//!   by itself (an EXIT trap). Its `ExecStart` is the revert script below (inside the unit
//!   file), which sleeps until the deadline and then reverts; the same service runs at boot
//!   when a `pending` record survived a reboot (see [`units`] for why not a timer);
//! * the deploy's confirmation removes `pending` and ends the guard's wait.
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

/// Removes what must not stay: the timer of earlier versions, and, when the switch is off, the
/// guard's unit. Needs `$SUDO`. (When the switch is on, its unit file is written with the app's,
/// under one check and one `daemon-reload`: see [`super::strategy::install`].)
pub fn uninstall_stale(s: &mut Script, config: &Config) {
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
    }
}

/// The guard's unit files the switch installs with the app's (none when the switch is off).
pub fn wanted_units(config: &Config) -> Vec<UnitFile> {
    if enabled(config) {
        units(config)
    } else {
        Vec::new()
    }
}

/// Where the switch script's standard output and error wait until the guard runs.
fn held_output(config: &Config) -> (String, String) {
    let state = Layout::new(&config.deploy_to).state();
    (format!("{state}/switch.out"), format!("{state}/switch.err"))
}

/// From here until [`started`], the script's standard output and error wait in files under
/// `.ship/` and SIGPIPE is ignored: a client that vanished (SIGKILL, a cut network) closes the
/// connection, and the first write to it would end the script, maybe between the flip of
/// `current` and the guard's start. An exit before [`started`] (an error, `exit`) runs the
/// EXIT trap: once [`arm`] wrote `pending` (`$_armed`), it reloads systemd if unit files
/// changed and starts the guard; then it prints what waited. Must run under [`hold`]; needs
/// `$SUDO`. Nothing when the switch is off.
pub fn quiet(s: &mut Script, config: &Config) {
    if !enabled(config) {
        return;
    }
    let (out, err) = held_output(config);
    define_retry(s, config);
    s.lines("_armed=0; _changed=0");
    s.line(
        "_held_out() {{ exec 1>&3 2>&4 3>&- 4>&-; while IFS= read -r _l || [ -n \"$_l\" ]; do printf '%s\\n' \"$_l\"; done < {}; while IFS= read -r _l || [ -n \"$_l\" ]; do printf '%s\\n' \"$_l\" >&2; done < {}; }}",
        &[&out, &err],
    );
    s.line(
        "_switch_exit() {{ _rc=$?; trap - EXIT; if [ \"$_armed\" = 1 ]; then if [ \"$_changed\" = 1 ]; then $SUDO systemctl daemon-reload 2>/dev/null || true; fi; _guard_retry {} || true; fi; _held_out || true; exit \"$_rc\"; }}",
        &[&service(config)],
    );
    s.lines("trap '' PIPE; trap _switch_exit EXIT");
    s.line("exec 3>&1 4>&2 >{} 2>{}", &[&out, &err]);
}

/// After the guard started (with the service, see [`super::strategy::bring_up`]): the output
/// that waited is printed, and the script writes to the connection again.
pub fn started(s: &mut Script, config: &Config) {
    if !enabled(config) {
        return;
    }
    s.lines("_armed=0; trap - EXIT; _held_out; trap - PIPE");
}

/// The `systemctl restart` that starts the guard with the unit in `$_svc` (a switch): the
/// guard's `After=` the app units orders it after the service's start in the same job. Should
/// that call fail (the service did not start, or the guard met 219/CGROUP), the guard is
/// started again by itself ([`define_retry`]). `$_reused` = 1 (the release already runs)
/// starts the guard alone.
pub fn restart_with(s: &mut Script, config: &Config) {
    let sv = service(config);
    s.line(
        "if [ \"$_reused\" = 0 ]; then $SUDO systemctl restart \"$_svc\" {} 2>/dev/null || _guard_retry {}; else old_inv=; _guard_retry {}; fi",
        &[&sv, &sv, &sv],
    );
}

/// Records the switch in `pending`: from here on the guard, once started (with the service,
/// see [`restart_with`]; or by [`quiet`]'s EXIT trap on an earlier exit), puts the previous
/// release back unless [`confirm`] runs in time. Shell variables: `$_prev`, the release to go
/// back to, and `$_now`, the time (unix seconds). Sets `$_armed`; prints `guard_deadline=<unix
/// seconds>`. Must run after [`quiet`].
///
/// Written in place (no temp file and `mv`): nothing reads `pending` while it is written (a
/// guard of an earlier switch is gone: preflight waits until no switch is pending).
pub fn arm(s: &mut Script, config: &Config, release: &str, holder: &str) {
    if !enabled(config) {
        return;
    }
    let layout = Layout::new(&config.deploy_to);
    s.line("_deadline=$(( _now + {} ))", &[&secs(config).to_string()]);
    s.line(
        "printf 'release=%s\\nprevious=%s\\nholder=%s\\ndeadline=%s\\n' {} \"$_prev\" {} \"$_deadline\" > {}; _armed=1",
        &[release, holder, &layout.pending()],
    );
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

/// The first half of confirming `release`, under the flock (taken here unless `held`): sets
/// `$_ours` to 1 when `pending` records `release`; when the revert got there first (nothing
/// pending and `current` is no longer `release`), exits [`EXIT_REVERTED`]. The caller then
/// removes `pending` (with whatever else goes, in one `rm`: [`pending_path`]) and runs
/// [`confirm_end`]. `$_ours` is 0 when the switch is off.
pub fn confirm_check(s: &mut Script, config: &Config, release: &str, held: bool) {
    s.lines("_ours=0");
    if !enabled(config) {
        return;
    }
    let layout = Layout::new(&config.deploy_to);
    if !held {
        hold(s, config);
    }
    s.line(
        "_pr=; if [ -f {} ]; then while IFS='=' read -r _k _v; do [ \"$_k\" != release ] || _pr=$_v; done < {}; fi",
        &[&layout.pending(), &layout.pending()],
    );
    s.line(
        "if [ -f {} ] && [ \"$_pr\" = {} ]; then _ours=1; else",
        &[&layout.pending(), release],
    );
    crate::hostfacts::link_base(s, &layout.current());
    s.line(
        "  if [ \"$_c\" != {} ]; then echo \"the dead-man's switch put ${{_c:-nothing}} back before release \"{}\" was confirmed\" >&2; exit {}; fi",
        &[release, release, &EXIT_REVERTED.to_string()],
    );
    s.lines("fi");
}

/// `.ship/pending`, for the caller's `rm` between [`confirm_check`] and [`confirm_end`].
pub fn pending_path(config: &Config) -> String {
    Layout::new(&config.deploy_to).pending()
}

/// The second half of confirming: once `pending` is gone, ends the guard's wait (still under
/// the flock) and prints `confirmed=1`.
pub fn confirm_end(s: &mut Script, config: &Config) {
    if !enabled(config) {
        return;
    }
    s.lines("if [ \"$_ours\" = 1 ]; then");
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
    crate::hostfacts::link_base(s, &layout.current());
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
    crate::hostfacts::uid(&mut s);
    s.line(
        "if [ \"$_uid\" != 0 ] && [ -x {} ]; then SUDO=\"sudo -n \"{}' '; _nr=; _H=1; else SUDO=''; _nr=--no-reload; _H=; fi",
        &[&helper, &helper],
    );
    // Wait (outside the lock) until the recorded deadline; at boot it is usually past. Read by
    // the shell: no process while the guard starts (that is during the switch).
    s.line(
        "_dl=; if [ -f {} ]; then while IFS='=' read -r _k _v; do [ \"$_k\" != deadline ] || _dl=$_v; done < {}; fi; case $_dl in ''|*[!0-9]*) _dl=0 ;; esac",
        &[&pending, &pending],
    );
    // How long until the deadline, on the wall clock: the time now is the one the deploy's
    // preflight read plus the uptime since, when that was in this boot and recent (it is,
    // when the switch starts this guard); else (at boot, after a long wait) `date` says.
    s.lines("if [ \"$_dl\" = 0 ]; then _left=0; else");
    crate::hostfacts::now(&mut s, &crate::hostfacts::clock_file(&layout));
    s.lines("_left=$(( _dl - _now )); fi");
    // The wait is a `sleep` whose pid the confirmation finds in `guard.pid` and ends with the
    // shell's own `kill` (no systemctl call); the guard then finds nothing pending and exits.
    s.line(
        "if [ \"$_left\" -gt 0 ]; then sleep \"$_left\" & _sp=$!; printf '%s\\n' \"$_sp\" > {}; wait \"$_sp\" || true; fi",
        &[&sleep_pid(config)],
    );
    // Confirmed meanwhile: nothing to do, and no flock to take.
    s.line(
        "if ! [ -f {} ]; then echo 'no unconfirmed switch: nothing to revert'; exit 0; fi",
        &[&pending],
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
    strategy::bring_up(&mut s, config, true, false, false);
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
            svc.contains("ExecStart=/bin/sh -c \"set -eu\\n_uid=; if [ -r /proc/self/status ]")
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
            let out = s.run_local();
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

    /// The switch's lines around the guard (#18), through the real /bin/sh with a fake
    /// `systemctl` that logs its arguments: what runs before and after the script's body.
    fn switch_like(dir: &std::path::Path, body: &'static str) -> Script {
        let mut c = config_from("", "confirm_timeout = \"60s\"\n");
        c.deploy_to = dir.display().to_string();
        let mut s = Script::new("t");
        s.line(
            "SUDO=; _H=; _nr=--no-reload; systemctl() {{ printf '%s\\n' \"$*\" >> {}; }}",
            &[&dir.join("systemctl.log").display().to_string()],
        );
        s.lines("_prev=20250101000000; _now=1000; _svc=hello.service; _reused=0; old_inv=");
        hold(&mut s, &c);
        quiet(&mut s, &c);
        arm(&mut s, &c, "20260101000000", "me");
        s.lines("echo previous=$_prev; echo oops >&2");
        s.lines(body);
        restart_with(&mut s, &c);
        started(&mut s, &c);
        s.lines("echo after");
        s
    }

    /// An exit between recording the switch and the guard's start (a failed step) starts the
    /// guard by itself, then prints the output that waited, with the script's exit status.
    #[test]
    fn issue_18_an_exit_before_the_guard_starts_starts_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = switch_like(dir.path(), "exit 9");
        let out = s.run_local();
        assert_eq!(out.status.code(), Some(9), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "guard_deadline=1060\nprevious=20250101000000\n"
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap(),
            "restart hello-guard.service\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".ship/pending")).unwrap(),
            "release=20260101000000\nprevious=20250101000000\nholder=me\ndeadline=1060\n"
        );
    }

    /// A client that vanished (the script's stdout a pipe nobody reads) does not stop the
    /// script before the guard starts: its output waits in a file, SIGPIPE is ignored, and
    /// the guard starts in the service's `systemctl restart`.
    #[test]
    fn issue_18_a_vanished_client_cannot_stop_the_switch_before_the_guard_starts() {
        let dir = tempfile::tempdir().unwrap();
        let s = switch_like(
            dir.path(),
            "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i + 1)); done",
        );
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(s.render().unwrap())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "printing after the guard started fails: {status:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap(),
            "restart hello.service hello-guard.service\n"
        );
    }

    /// When nothing goes wrong, the output that waited comes out in order, then the rest.
    #[test]
    fn issue_18_held_output_is_printed_once_the_guard_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = switch_like(dir.path(), "echo units");
        let out = s.run_local();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "guard_deadline=1060\nprevious=20250101000000\nunits\nafter\n"
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap(),
            "restart hello.service hello-guard.service\n"
        );
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
