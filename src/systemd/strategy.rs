//! Script lines that put a release in service under each restart strategy, install the unit
//! files (remembering the ones they replace), and undo both. The same lines serve a deploy's
//! switch, a rollback, the client's revert of an unhealthy release and the host's own
//! dead-man's switch, so every path starts and stops units the same way.
//!
//! Shell variables the lines share: `$SUDO` (see [`super::sudo_prelude`]), `$_strategy` (what
//! the installed unit files say: `restart`, `socket`, `blue-green` or `none`), `$_to` (the
//! release to bring up), and, once [`bring_up`] ran, `$_svc` (the unit now serving it) and
//! `$_retire` (blue-green: the other instance, still serving until it is retired).

use crate::config::{Config, RestartStrategy};
use crate::layout::Layout;
use crate::remote::script::{Script, EXIT_NOT_ACTIVE};

use super::unit::{self, UnitFile};
use super::{escape_specifiers, print_state, show_state};

/// Sets `$_strategy` from the unit files installed on the host.
pub fn detect(s: &mut Script, config: &Config) {
    s.line(
        "if [ -f {} ]; then _strategy=blue-green; elif [ -f {} ]; then _strategy=socket; elif [ -f {} ]; then _strategy=restart; else _strategy=none; fi",
        &[
            &unit::path(&unit::template(config)),
            &unit::path(&unit::socket(config)),
            &unit::path(&unit::service(config)),
        ],
    );
}

/// Sets shell variable `$<var>` to the installed socket unit's `ListenStream=` lines.
fn read_listen(s: &mut Script, config: &Config, var: &'static str) {
    // No grep at all when there is no socket unit (the plain restart strategy).
    let line = match var {
        "_old_listen" => {
            "_old_listen=; if [ -f {} ]; then _old_listen=$(grep '^ListenStream=' {}) || true; fi"
        }
        _ => "_cur_listen=; if [ -f {} ]; then _cur_listen=$(grep '^ListenStream=' {}) || true; fi",
    };
    let path = unit::path(&unit::socket(config));
    s.line(line, &[&path, &path]);
}

/// The `ListenStream=` lines the config's socket unit has (empty without one).
fn wanted_listen(config: &Config) -> String {
    if config.systemd.restart == RestartStrategy::Restart {
        return String::new();
    }
    config
        .systemd
        .listen
        .iter()
        .map(|l| format!("ListenStream={}", escape_specifiers(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stops every app unit of the strategy in shell variable `$<var>`.
fn stop_all(s: &mut Script, config: &Config, var: &'static str) {
    let head = match var {
        "_old" => "case $_old in",
        _ => "case $_strategy in",
    };
    s.lines(head);
    s.line(
        "  blue-green) $SUDO systemctl stop {} {} {} 2>/dev/null || true ;;",
        &[
            &unit::instance(config, "blue"),
            &unit::instance(config, "green"),
            &unit::socket(config),
        ],
    );
    s.line(
        "  socket) $SUDO systemctl stop {} {} 2>/dev/null || true ;;",
        &[&unit::service(config), &unit::socket(config)],
    );
    s.line(
        "  restart) $SUDO systemctl stop {} 2>/dev/null || true ;;",
        &[&unit::service(config)],
    );
    s.lines("esac");
}

/// Enables the unit files the strategy in `$_strategy` starts at boot, and `extra` (the
/// guard's), in one `systemctl enable`.
fn enable(s: &mut Script, config: &Config, extra: &[UnitFile]) {
    s.lines("set --");
    for f in extra {
        s.line("set -- \"$@\" {}", &[&f.name]);
    }
    s.lines("case $_strategy in");
    s.line(
        "  blue-green) $SUDO systemctl $_nr enable -q {} {} \"$@\" ;;",
        &[&unit::socket(config), &unit::instance(config, "blue")],
    );
    s.line(
        "  socket) $SUDO systemctl $_nr enable -q {} {} \"$@\" ;;",
        &[&unit::socket(config), &unit::service(config)],
    );
    s.line(
        "  restart) $SUDO systemctl $_nr enable -q {} \"$@\" ;;",
        &[&unit::service(config)],
    );
    s.lines("esac");
}

/// Sets `$_same` to 1 when every file of `files` is installed with exactly its text: one
/// `sha256sum -c` for all of them (issue #18), where comparing each costs a `cmp`.
fn all_installed(s: &mut Script, files: &[&UnitFile]) {
    let list: String = files
        .iter()
        .map(|f| format!("{}  {}\n", sha256_hex(&f.text), f.path()))
        .collect();
    s.line("_us={}", &[list.trim_end_matches('\n')]);
    s.lines("if sha256sum -c --quiet --strict - >/dev/null 2>&1 <<SHIP_EOF");
    s.lines("$_us");
    s.lines("SHIP_EOF");
    s.lines("then _same=1; else _same=0; fi");
}

/// The sha256 of a text, as `sha256sum` prints it.
fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `file` when its text differs from the installed one, first saving the installed
/// one (or an `.absent` mark) in `units.prev` when `backup`. Sets `_changed=1` when written.
pub fn write_unit(s: &mut Script, layout: &Layout, file: &UnitFile, backup: bool) {
    let path = file.path();
    let tmp = format!("{path}.ship-tmp");
    // The unit text ends with one newline (as `unit` and `guard` write them): the script holds
    // it without that newline and a here-document adds it back, so comparing costs `cmp` alone
    // (no `printf |` pipeline; up to 4 KiB dash writes a here-document without a process).
    let (body, heredoc) = match file.text.strip_suffix('\n') {
        Some(body) if !body.ends_with('\n') => (body, true),
        _ => (file.text.as_str(), false),
    };
    s.redact(body);
    s.line("_u={}", &[body]);
    if heredoc {
        s.line(
            "if ! [ -f {} ] || ! cmp -s - {} <<SHIP_EOF",
            &[&path, &path],
        );
        s.lines("$_u");
        s.lines("SHIP_EOF");
        s.lines("then");
    } else {
        s.line(
            "if ! [ -f {} ] || ! printf '%s' \"$_u\" | cmp -s - {}; then",
            &[&path, &path],
        );
    }
    if backup {
        let saved = format!("{}/{}", layout.units_prev(), file.name);
        s.line(
            "  if [ -f {} ]; then cp -- {} {}; else : > {}.absent; fi",
            &[&path, &path, &saved, &saved],
        );
    }
    // Through the helper, the deploy user names the file: its text is the one setup fixed
    // (preflight checked it is this one), never the script's.
    s.line(
        "  if [ -n \"$_H\" ]; then $SUDO install {}; else",
        &[&file.name],
    );
    if heredoc {
        s.line(
            "  printf '%s\\n' \"$_u\" | $SUDO tee {} >/dev/null",
            &[&tmp],
        );
    } else {
        s.line("  printf '%s' \"$_u\" | $SUDO tee {} >/dev/null", &[&tmp]);
    }
    s.line("  $SUDO mv -f -- {} {}; fi; _changed=1", &[&tmp, &path]);
    s.lines("fi");
}

/// The first half of installing the units: empties `units.prev`, checks with one `sha256sum
/// -c` whether every unit file (the app's and `extra`, the guard's) is installed as wanted
/// (`$_same`), and writes the files of `extra` that differ (not saved in `units.prev`: a
/// revert keeps the guard it runs in). Sets `$_changed` to 1 when it wrote one. [`install`]
/// follows (the switch records the switch in between, once the guard's unit exists).
pub fn prepare(s: &mut Script, config: &Config, extra: &[UnitFile]) {
    let layout = Layout::new(&config.deploy_to);
    let wanted = unit::app_units(config);
    // Made once and emptied file by file (the confirmation empties it too): no process when it
    // is there and empty, as after every confirmed deploy.
    let prev = layout.units_prev();
    s.line(
        "if [ -d {} ]; then for _f in {}/*; do [ -e \"$_f\" ] && rm -f -- \"$_f\"; done; else mkdir -- {}; fi; _changed=0",
        &[&prev, &prev, &prev],
    );
    let all: Vec<&UnitFile> = wanted.iter().chain(extra).collect();
    all_installed(s, &all);
    if !extra.is_empty() {
        s.lines("if [ \"$_same\" = 0 ]; then");
        for file in extra {
            write_unit(s, &layout, file, false);
        }
        s.lines("fi");
    }
}

/// Installs the config's app unit files (after [`prepare`], which checked them all),
/// saving the replaced ones in `units.prev` so a revert can restore them, and removes
/// managed unit files the strategy no longer uses; one `daemon-reload` and one `enable` (of
/// the app's units and `extra`) follow when something changed. When the strategy or the
/// listening sockets change, the old units are stopped first (the only outage a deploy
/// causes: the port closes until the new units start) and `outage=` says why. Prints
/// `unit_changed=0|1`; leaves `$_strategy` set to the config's strategy.
pub fn install(s: &mut Script, config: &Config, extra: &[UnitFile]) {
    let layout = Layout::new(&config.deploy_to);
    let wanted = unit::app_units(config);
    let new = config.systemd.restart.as_str();
    detect(s, config);
    s.lines("_old=$_strategy");
    read_listen(s, config, "_old_listen");
    s.lines("if [ \"$_same\" = 0 ]; then");
    for file in &wanted {
        write_unit(s, &layout, file, true);
    }
    s.lines("fi");
    s.line(
        "if [ \"$_old\" != none ] && [ \"$_old\" != {} ]; then echo outage=strategy; stop_old=1",
        &[new],
    );
    s.line(
        "elif [ \"$_old\" != none ] && [ \"$_old_listen\" != {} ]; then echo outage=listen; stop_old=1",
        &[&wanted_listen(config)],
    );
    s.lines("else stop_old=0; fi");
    s.lines("if [ \"$stop_old\" = 1 ]; then");
    stop_all(s, config, "_old");
    s.lines("fi");
    for name in unit::managed(config) {
        if wanted.iter().any(|w| w.name == name) {
            continue;
        }
        let path = unit::path(&name);
        let saved = format!("{}/{name}", layout.units_prev());
        s.line("if [ -f {} ]; then", &[&path]);
        s.line(
            "  cp -- {} {}; $SUDO systemctl $_nr disable -q {} 2>/dev/null || true; if [ -n \"$_H\" ]; then $SUDO remove {}; else $SUDO rm -f -- {}; fi; _changed=1",
            &[&path, &saved, &name, &name, &path],
        );
        s.lines("fi");
    }
    s.line("_strategy={}", &[new]);
    s.lines("if [ \"$_changed\" = 1 ]; then $SUDO systemctl daemon-reload");
    enable(s, config, extra);
    s.lines("fi");
    s.lines("echo unit_changed=$_changed");
}

/// Puts back the unit files saved in `units.prev` by the switch being undone (stopping the
/// units of the replaced strategy first when the strategy or the sockets differ), reloads
/// systemd, and leaves `$_strategy` set to what the restored files say.
pub fn restore(s: &mut Script, config: &Config) {
    let layout = Layout::new(&config.deploy_to);
    let prev = layout.units_prev();
    s.line(
        "if [ -d {} ] && [ -n \"$(ls -A -- {} 2>/dev/null)\" ]; then",
        &[&prev, &prev],
    );
    detect(s, config);
    s.lines("  _old=$_strategy");
    read_listen(s, config, "_old_listen");
    // Disable what goes away while its file is still there.
    s.line("  for _f in {}/*.absent; do", &[&prev]);
    s.lines("    [ -e \"$_f\" ] || continue; _n=${_f##*/}; _n=${_n%.absent}");
    crate::jobs::restore_absent(s, config);
    s.lines("    $SUDO systemctl $_nr disable -q \"$_n\" 2>/dev/null || true");
    s.lines("  done");
    s.lines("  _jt=");
    s.line("  for _f in {}/*; do", &[&prev]);
    s.lines("    [ -e \"$_f\" ] || continue; _n=${_f##*/}");
    crate::jobs::restore_saved(s, config);
    s.line(
        "    case $_n in secrets.changed) ;; *.absent) if [ -n \"$_H\" ]; then $SUDO remove \"${{_n%.absent}}\"; else $SUDO rm -f -- {}/\"${{_n%.absent}}\"; fi ;;",
        &[unit::UNIT_DIR],
    );
    // Through the helper, the saved copy only says which file changed: the helper puts back
    // the text setup fixed before (never the deploy user's copy); a file the switch removed
    // (a job dropped from the config, #21) comes back as setup fixed it.
    s.line(
        "      *) if [ -n \"$_H\" ]; then $SUDO restore \"$_n\"; [ -e {}/\"$_n\" ] || $SUDO install \"$_n\"; else $SUDO tee {}/\"$_n\" < \"$_f\" >/dev/null; fi ;; esac",
        &[unit::UNIT_DIR, unit::UNIT_DIR],
    );
    s.lines("  done");
    detect(s, config);
    read_listen(s, config, "_cur_listen");
    s.lines("  if [ \"$_old\" != \"$_strategy\" ] || [ \"$_old_listen\" != \"$_cur_listen\" ]; then echo outage=restore");
    stop_all(s, config, "_old");
    s.lines("  fi");
    crate::secrets::restore(s, config);
    s.lines("  $SUDO systemctl daemon-reload");
    enable(s, config, &[]);
    crate::jobs::restore_timers(s);
    s.line("  rm -rf -- {}", &[&prev]);
    s.lines("else");
    detect(s, config);
    s.lines("fi");
}

/// Flips `current` to `$_to` and puts it in service under `$_strategy`, waiting up to the
/// health timeout for the unit to be active with a new process. Blue-green starts the idle
/// instance beside the running one (which keeps serving; `$_retire` names it); with
/// `reuse`, an instance already running `$_to` is kept as it is (a revert during the
/// judgement: the old release never stopped). Prints `new_unit=`, `retire=` and the `new_*`
/// state; when the unit does not get there, exits [`EXIT_NOT_ACTIVE`] if `must` (a switch),
/// or goes on (a revert: everything else must still be put back).
///
/// With `with_guard` (a switch, with the dead-man's switch on), the guard starts in the same
/// `systemctl restart` as the unit, and the output held since [`super::guard::quiet`] is
/// printed then.
pub fn bring_up(s: &mut Script, config: &Config, reuse: bool, must: bool, with_guard: bool) {
    let layout = Layout::new(&config.deploy_to);
    let slots = layout.slots();
    let (blue, green) = (
        unit::instance(config, "blue"),
        unit::instance(config, "green"),
    );
    s.line(
        "ln -sfn -- \"releases/$_to\" {}; mv -fT -- {} {}",
        &[
            &layout.current_tmp(),
            &layout.current_tmp(),
            &layout.current(),
        ],
    );
    s.lines("_svc=; _retire=; _reused=0");
    s.lines("case $_strategy in");
    s.lines("blue-green)");
    s.line(
        "  _a=$(systemctl is-active {} {} 2>/dev/null) || true; set -- $_a; _sb=${{1:-inactive}}; _sg=${{2:-inactive}}",
        &[&blue, &green],
    );
    s.line(
        "  _lb=$(readlink {}/blue 2>/dev/null) || true; _lg=$(readlink {}/green 2>/dev/null) || true",
        &[&slots, &slots],
    );
    if reuse {
        s.lines("  if [ \"$_sb\" = active ] && [ \"$_lb\" = \"../../releases/$_to\" ]; then _c=blue; _reused=1");
        s.lines("  elif [ \"$_sg\" = active ] && [ \"$_lg\" = \"../../releases/$_to\" ]; then _c=green; _reused=1");
        s.lines("  elif [ \"$_sb\" != active ]; then _c=blue");
    } else {
        s.lines("  if [ \"$_sb\" != active ]; then _c=blue");
    }
    s.lines("  elif [ \"$_sg\" != active ]; then _c=green; else _c=blue; fi");
    s.lines("  if [ \"$_c\" = blue ]; then _o=green; _so=$_sg; else _o=blue; _so=$_sb; fi");
    s.line(
        "  case $_so in inactive|failed) ;; *) _retire={}@\"$_o\".service ;; esac",
        &[&config.systemd.unit],
    );
    s.line("  _svc={}@\"$_c\".service", &[&config.systemd.unit]);
    s.lines("  if [ \"$_reused\" = 0 ]; then");
    s.line(
        "    mkdir -p -- {}; ln -sfn -- \"../../releases/$_to\" {}/\"$_c\".tmp; mv -fT -- {}/\"$_c\".tmp {}/\"$_c\"",
        &[&slots, &slots, &slots, &slots],
    );
    s.lines("  fi");
    s.line(
        "  systemctl is-active -q {} || {{ $SUDO systemctl reset-failed {} 2>/dev/null || true; $SUDO systemctl start {} || true; }} ;;",
        &[&unit::socket(config), &unit::socket(config), &unit::socket(config)],
    );
    s.line(
        "socket) _svc={}; systemctl is-active -q {} || {{ $SUDO systemctl reset-failed {} 2>/dev/null || true; $SUDO systemctl start {} || true; }} ;;",
        &[
            &unit::service(config),
            &unit::socket(config),
            &unit::socket(config),
            &unit::socket(config),
        ],
    );
    s.line("restart) _svc={} ;;", &[&unit::service(config)]);
    s.lines("*) echo 'no unit file of this service is installed' >&2; exit 1 ;;");
    s.lines("esac");
    let tries = (config.health.timeout.as_secs().max(1) * 5).to_string();
    // The invocation before the restart, as systemd exports it for the journal
    // (/run/systemd/units/invocation:<unit>, a symlink to the id): no systemctl call. Absent
    // (never started), it reads as empty, which no new invocation equals.
    s.lines("old_inv=$(readlink \"/run/systemd/units/invocation:$_svc\" 2>/dev/null) || true");
    // A failed start is retried by Restart=on-failure; the loop below judges the outcome.
    // `restart` starts a failed or stopped unit too, and returns once it is started (Type=exec:
    // the binary was exec'd; Type=notify: it said READY=1), so the loop rarely goes round.
    if with_guard && super::guard::enabled(config) {
        super::guard::restart_with(s, config);
        super::guard::started(s, config);
    } else {
        s.lines("if [ \"$_reused\" = 0 ]; then $SUDO systemctl restart \"$_svc\" 2>/dev/null || true; else old_inv=; fi");
    }
    s.lines("_i=0");
    s.line("while [ \"$_i\" -lt {} ]; do", &[&tries]);
    show_state(s, None);
    s.lines("  if [ \"$_st\" = active ] && [ -n \"$_inv\" ] && [ \"$_inv\" != \"$old_inv\" ]; then break; fi");
    s.lines("  _i=$((_i + 1)); sleep 0.2");
    s.lines("done");
    print_state(s, "new");
    s.lines("echo new_unit=$_svc; echo retire=$_retire");
    if must {
        s.line(
            "if [ \"$_i\" -ge {} ]; then echo \"$_svc did not become active with a new process\" >&2; exit {}; fi",
            &[&tries, &EXIT_NOT_ACTIVE.to_string()],
        );
    } else {
        s.line(
            "if [ \"$_i\" -ge {} ]; then echo \"$_svc did not become active\" >&2; echo up=0; else echo up=1; fi",
            &[&tries],
        );
    }
}

/// Stops the instance in `$_retire` (blue-green: the old release, once the new one is proven).
/// Its process gets SIGTERM and `drain_timeout` to finish what it is serving.
pub fn retire(s: &mut Script) {
    s.lines("if [ -n \"$_retire\" ]; then $SUDO systemctl stop \"$_retire\" || true; echo retired=$_retire; fi");
}

/// Stops every app unit (after an unhealthy first deploy: there is nothing to go back to).
pub fn stop_everything(s: &mut Script, config: &Config) {
    detect(s, config);
    stop_all(s, config, "_strategy");
}

/// Blue-green, once a release is confirmed: points the slot of every instance that is not
/// running at `release`, so whichever instance starts next (at boot, through the socket)
/// runs the live release.
pub fn settle_slots(s: &mut Script, config: &Config, release: &str) {
    if config.systemd.restart != RestartStrategy::BlueGreen {
        return;
    }
    let slots = Layout::new(&config.deploy_to).slots();
    let target = format!("../../releases/{release}");
    s.line(
        "_a=$(systemctl is-active {} {} 2>/dev/null) || true; set -- $_a",
        &[
            &unit::instance(config, "blue"),
            &unit::instance(config, "green"),
        ],
    );
    s.lines("for _c in blue green; do");
    s.lines("  _st=${1:-inactive}; [ $# -gt 0 ] && shift");
    s.line(
        "  if [ \"$_st\" != active ]; then mkdir -p -- {}; ln -sfn -- {} {}/\"$_c\".tmp; mv -fT -- {}/\"$_c\".tmp {}/\"$_c\"; fi",
        &[&slots, &target, &slots, &slots, &slots],
    );
    s.lines("done");
}

/// Sets `$_strategy` and `$_svc`, the unit serving the live release: the service, or the
/// running blue-green instance (blue when neither runs).
pub fn serving(s: &mut Script, config: &Config) {
    detect(s, config);
    s.line("_svc={}", &[&unit::service(config)]);
    s.lines("if [ \"$_strategy\" = blue-green ]; then");
    s.line(
        "  if systemctl is-active -q {}; then _svc={}; else _svc={}; fi",
        &[
            &unit::instance(config, "green"),
            &unit::instance(config, "green"),
            &unit::instance(config, "blue"),
        ],
    );
    s.lines("fi");
}
