//! The scripts of every phase, as pure functions of the config and the decisions already made.
//! Each is one round trip. `deploy`, `rollback` and `prune` run them; `--dry-run` prints them.
//!
//! | phase    | script             | does                                                       |
//! |----------|--------------------|------------------------------------------------------------|
//! | lock     | [`preflight`]      | checks (before touching anything), lock, clear stale, state |
//! | stage    | [`stage`]          | verify sha256, unpack, verify files, link shared, hooks    |
//! | once     | [`once_hooks`]     | before_switch_once hooks, on the first host only           |
//! | switch   | [`switch`]         | unit file, flip `current`, restart, wait for a new process |
//! | verify   | [`verify`]         | settle, same process still active, after_switch hooks      |
//! | finish   | [`finish`]         | revisions.log, prune, unlock                               |
//! | revert   | [`revert`]         | mark failed/ghost, flip back, restart, journal, unlock     |
//! | abort    | [`abort`]          | undo an unverified switch, drop staged release, unlock     |

use std::time::Duration;

use crate::config::Config;
use crate::hooks::{self, HookEnv};
use crate::journal;
use crate::layout::Layout;
use crate::lock;
use crate::package::Manifest;
use crate::preflight::{self, Requirements};
use crate::remote::script::{Script, EXIT_CHECKSUM, EXIT_UNSTABLE};
use crate::remote::transfer::Encoding;
use crate::systemd;

/// Lock + state, with the artifact checks when `req` is given (deploy), without (rollback,
/// prune). Also reports which cached artifact files exist for `artifact_sha`.
pub fn preflight(
    config: &Config,
    req: Option<&Requirements>,
    holder: &str,
    lock_wait: Duration,
) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "check the host and take the deploy lock in {}",
        layout.root()
    ));
    s.lines("umask 022");
    match req {
        Some(req) => preflight::checks(&mut s, config, &layout, req),
        None => preflight::unit_guard(&mut s, config),
    }
    lock::take(&mut s, &layout, holder, lock_wait.as_secs());
    for d in [
        layout.releases(),
        layout.shared(),
        layout.artifacts(),
        layout.unfinished_dir(),
        layout.failed_dir(),
        layout.ghosts_dir(),
    ] {
        s.line("mkdir -p {}", &[&d]);
    }
    // A release left unfinished by an interrupted deploy is never used: remove it.
    s.line(
        "for _m in {}/*; do [ -e \"$_m\" ] || continue; _id=${{_m##*/}}",
        &[&layout.unfinished_dir()],
    );
    s.line(
        "  rm -rf -- {}/\"$_id\" \"$_m\"; printf 'cleared=%s\\n' \"$_id\"",
        &[&layout.releases()],
    );
    s.lines("done");
    if let Some(sha) = req.and_then(|r| r.artifact_sha.as_deref()) {
        for e in [Encoding::Zstd, Encoding::Gzip, Encoding::Tar] {
            s.line(
                "[ -f {} ] && echo cached={} || true",
                &[&layout.artifact(sha, e.ext()), e.ext()],
            );
        }
    }
    journal::state_lines(&mut s, &layout);
    // A switch record left by a deploy that was killed mid-switch has been reported above;
    // the lock is ours now, so it must not be "restored" by this flow's own undo.
    s.line("rm -f -- {}", &[&journal::switching(&layout)]);
    lock::keep(&mut s);
    s
}

/// What [`stage`] needs to know about the artifact on the host.
pub struct StageInput<'a> {
    /// The new release id.
    pub release: &'a str,
    /// The artifact's identity (cache file name).
    pub artifact_sha: &'a str,
    /// How it was sent.
    pub encoding: Encoding,
    /// sha256 of the bytes sent (equals `artifact_sha` for zstd).
    pub sent_sha: &'a str,
    /// The manifest (file checksums).
    pub manifest: &'a Manifest,
    /// Hook context.
    pub hook_env: HookEnv<'a>,
}

/// Verifies the uploaded file, unpacks it into `releases/<id>` (marked unfinished until the
/// end), verifies every file against the manifest, links shared paths, runs before_switch.
pub fn stage(config: &Config, input: &StageInput<'_>) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let rel = layout.release(input.release);
    let art = layout.artifact(input.artifact_sha, input.encoding.ext());
    let mut s = Script::new(format!("stage release {} in {rel}", input.release));
    s.lines("umask 022");
    s.line("_sum=$(sha256sum < {} | cut -d' ' -f1)", &[&art]);
    s.line(
        "if [ \"$_sum\" != {} ]; then rm -f -- {}; echo \"the uploaded artifact's sha256 is $_sum, expected\" {} >&2; exit {}; fi",
        &[input.sent_sha, &art, input.sent_sha, &EXIT_CHECKSUM.to_string()],
    );
    s.line(": > {}", &[&layout.unfinished(input.release)]);
    s.line("mkdir -- {}", &[&rel]);
    crate::package::unpack::unpack_lines(
        &mut s,
        input.encoding,
        &art,
        &rel,
        &layout.unfinished(input.release),
        input.manifest,
    );
    let checklist: String = input
        .manifest
        .files
        .iter()
        .map(|(path, f)| format!("{}  {path}\n", f.sha256))
        .collect();
    s.line(
        "if ! (cd {} && printf '%s' {} | sha256sum -c --quiet --strict - >&2); then echo 'the unpacked files do not match the manifest' >&2; exit {}; fi",
        &[&rel, &checklist, &EXIT_CHECKSUM.to_string()],
    );
    for d in &config.shared_dirs {
        let (shared, link) = (format!("{}/{d}", layout.shared()), format!("{rel}/{d}"));
        s.line(
            "mkdir -p -- {}; rm -rf -- {}; mkdir -p -- \"$(dirname -- {})\"; ln -s -- {} {}",
            &[&shared, &link, &link, &shared, &link],
        );
    }
    for f in &config.shared_files {
        let (shared, link) = (format!("{}/{f}", layout.shared()), format!("{rel}/{f}"));
        s.line(
            "rm -rf -- {}; mkdir -p -- \"$(dirname -- {})\"; ln -s -- {} {}",
            &[&link, &link, &shared, &link],
        );
    }
    hooks::run(
        &mut s,
        "before_switch",
        &config.hooks.before_switch,
        &input.hook_env,
    );
    s.line("rm -f -- {}", &[&layout.unfinished(input.release)]);
    s.line("echo staged={}", &[input.release]);
    s
}

/// Runs the `before_switch_once` hooks (migrations) in the staged release: on one host, after
/// every host has staged, before any switch.
pub fn once_hooks(config: &Config, hook_env: &HookEnv<'_>) -> Script {
    let mut s = Script::new(format!(
        "run the before_switch_once hooks in release {}",
        hook_env.release
    ));
    hooks::run(
        &mut s,
        "before_switch_once",
        &config.hooks.before_switch_once,
        hook_env,
    );
    s
}

/// Installs the unit, records the current release in `.ship/switching`, flips `current` to
/// `release` atomically, restarts and waits for a new active process (and the health command).
/// Prints `previous=`, `unit_changed=` and the `new_*` unit state.
pub fn switch(config: &Config, release: &str) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "switch `current` to release {release} and restart {}",
        systemd::unit_name(config)
    ));
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "_prev=$(readlink {} 2>/dev/null || true); _prev=${{_prev##*/}}; echo previous=$_prev",
        &[&layout.current()],
    );
    s.line(
        "[ -f {} ] || printf '%s\\n' \"$_prev\" > {}",
        &[&journal::switching(&layout), &journal::switching(&layout)],
    );
    systemd::install_unit(&mut s, config);
    systemd::remember_invocation(&mut s, config);
    flip(&mut s, &layout, release);
    // The version now live, for reports.
    journal::print_version(&mut s, "version", &layout.release(release));
    s.lines("echo switched_at=@$(date +%s)");
    systemd::restart_and_wait(&mut s, config, config.health.timeout.as_secs());
    if let Some(cmd) = &config.health.command {
        crate::health::command_check(&mut s, &layout.release(release), cmd, config.health.timeout);
    }
    s
}

fn flip(s: &mut Script, layout: &Layout, release: &str) {
    s.line(
        "ln -sfn -- {} {}",
        &[&Layout::current_target(release), &layout.current_tmp()],
    );
    s.line(
        "mv -fT -- {} {}",
        &[&layout.current_tmp(), &layout.current()],
    );
}

/// Waits `settle`, then checks the unit still runs the process started by the switch
/// (`invocation`) and is active; runs after_switch hooks. With `finish_log`, the [`finish`]
/// lines follow in the same script (one round trip less), reached only when all that passed;
/// a host that must wait for the rest of the fleet (deploy) passes `None`.
pub fn verify(
    config: &Config,
    release: &str,
    invocation: &str,
    hook_env: &HookEnv<'_>,
    finish_log: Option<&str>,
) -> Script {
    let mut s = Script::new(format!("verify release {release} stays up"));
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "sleep {}",
        &[&format!("{:.1}", config.health.settle.as_secs_f64())],
    );
    systemd::show_state(&mut s, config, "now");
    s.line(
        "if [ \"$_st\" != active ] || [ \"$_inv\" != {} ]; then echo \"the service did not stay up: state $_st, restarted $_nr times\" >&2; exit {}; fi",
        &[invocation, &EXIT_UNSTABLE.to_string()],
    );
    hooks::run(&mut s, "after_switch", &config.hooks.after_switch, hook_env);
    if let Some(log_line) = finish_log {
        finish_lines(&mut s, config, log_line, &[]);
    }
    s
}

/// Appends to revisions.log, removes `prune` releases and old cached artifacts, clears the
/// switch record and releases the lock.
pub fn finish(config: &Config, log_line: &str, prune: &[String]) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "record the release and release the lock in {}",
        layout.root()
    ));
    s.idempotent();
    finish_lines(&mut s, config, log_line, prune);
    s
}

fn finish_lines(s: &mut Script, config: &Config, log_line: &str, prune: &[String]) {
    let layout = Layout::new(&config.deploy_to);
    s.line(
        "printf '%s\\n' {} >> {}",
        &[log_line, &layout.revisions_log()],
    );
    s.line("rm -f -- {}", &[&journal::switching(&layout)]);
    prune_lines(s, &layout, prune, config.keep_releases);
    lock::release(s, &layout);
}

/// Removes releases (and their marks) and keeps only the newest `keep_artifacts` cached
/// artifacts.
pub fn prune_lines(s: &mut Script, layout: &Layout, prune: &[String], keep_artifacts: usize) {
    for id in prune {
        s.line(
            "rm -rf -- {} {}; echo pruned={}",
            &[&layout.release(id), &layout.failed(id), id],
        );
    }
    s.line(
        "_n=0; for _a in $(ls -1t {} 2>/dev/null); do _n=$((_n + 1))",
        &[&layout.artifacts()],
    );
    s.line(
        "  [ \"$_n\" -le {} ] || rm -f -- {}/\"$_a\"",
        &[&keep_artifacts.to_string(), &layout.artifacts()],
    );
    s.lines("done");
}

/// What [`revert`] records.
pub struct RevertInput<'a> {
    /// The release that failed or is being undone.
    pub failed: &'a str,
    /// The release to return to (`None`: stop the unit and remove `current`).
    pub previous: Option<&'a str>,
    /// Mark the artifact as a ghost (it failed its health check here).
    pub ghost: Option<&'a str>,
    /// Why, for the failed mark.
    pub reason: &'a str,
    /// The revisions.log line.
    pub log_line: &'a str,
    /// Journal lines to capture from the failed run.
    pub journal_lines: u32,
    /// Only journal lines since this time (`@<unix seconds>`, printed by [`switch`] as
    /// `switched_at`), so the excerpt shows the failed release, not older restarts.
    pub since: Option<&'a str>,
}

/// Marks the release failed (and the artifact a ghost), captures the journal, flips `current`
/// back and restarts (or stops the unit when there is nothing to go back to), logs and unlocks.
pub fn revert(config: &Config, input: &RevertInput<'_>) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let unit = systemd::unit_name(config);
    let mut s = Script::new(format!("roll back from release {}", input.failed));
    s.idempotent();
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "printf '%s\\n' {} > {}",
        &[input.reason, &layout.failed(input.failed)],
    );
    if let Some(sha) = input.ghost {
        s.line(
            "printf 'release %s: %s\\n' {} {} > {}",
            &[input.failed, input.reason, &layout.ghost(sha)],
        );
    }
    s.line(
        "_j=$($SUDO journalctl -u {} -n {} --since {} --no-pager -o short-iso 2>&1 || true)",
        &[
            &unit,
            &input.journal_lines.to_string(),
            input.since.unwrap_or("-1h"),
        ],
    );
    match input.previous {
        Some(prev) => {
            systemd::remember_invocation(&mut s, config);
            flip(&mut s, &layout, prev);
            s.line("echo restored={}", &[prev]);
            s.line(
                "printf '%s\\n' {} >> {}",
                &[input.log_line, &layout.revisions_log()],
            );
            s.line("rm -f -- {}", &[&journal::switching(&layout)]);
            lock::release(&mut s, &layout);
            // Restart last: if the old release cannot start either, everything else is done.
            systemd::restart_and_wait(&mut s, config, config.health.timeout.as_secs());
        }
        None => {
            s.line("$SUDO systemctl stop {} 2>/dev/null || true; $SUDO systemctl disable -q {} 2>/dev/null || true", &[&unit, &unit]);
            s.line("rm -f -- {}; echo restored=", &[&layout.current()]);
            s.line(
                "printf '%s\\n' {} >> {}",
                &[input.log_line, &layout.revisions_log()],
            );
            s.line("rm -f -- {}", &[&journal::switching(&layout)]);
            lock::release(&mut s, &layout);
        }
    }
    s.lines("echo --journal--; printf '%s\\n' \"$_j\"");
    s
}

/// Puts a host back as it was after an interrupted or stopped flow — only while its lock is
/// still held by `holder`, so it never touches another deploy's work. If a switch was recorded
/// and not finished, `current` flips back to the recorded release and the unit restarts;
/// `release` (the new, staged one, if any) is removed unless it is current; the lock goes.
pub fn abort(config: &Config, holder: &str, release: Option<&str>) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let unit = systemd::unit_name(config);
    let mut s = Script::new(format!("put {} back as it was", layout.root()));
    s.idempotent();
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "if [ \"$(cat {} 2>/dev/null || true)\" != {} ]; then echo not_ours=1; exit 0; fi",
        &[&layout.lock_holder(), holder],
    );
    let sw = journal::switching(&layout);
    s.line("if [ -f {} ]; then _prev=$(cat {})", &[&sw, &sw]);
    s.line(
        "  if [ -n \"$_prev\" ] && [ -d {}/\"$_prev\" ]; then",
        &[&layout.releases()],
    );
    s.line(
        "    ln -sfn -- releases/\"$_prev\" {}",
        &[&layout.current_tmp()],
    );
    s.line(
        "    mv -fT -- {} {}",
        &[&layout.current_tmp(), &layout.current()],
    );
    s.line(
        "    $SUDO systemctl restart {} || true; echo restored=$_prev",
        &[&unit],
    );
    s.line(
        "  else rm -f -- {}; $SUDO systemctl stop {} 2>/dev/null || true; echo restored=; fi",
        &[&layout.current(), &unit],
    );
    s.line("  rm -f -- {}", &[&sw]);
    s.lines("fi");
    if let Some(release) = release {
        s.line(
            "_c=$(readlink {} 2>/dev/null || true)",
            &[&layout.current()],
        );
        s.line(
            "if [ \"${{_c##*/}}\" != {} ]; then rm -rf -- {}; fi",
            &[release, &layout.release(release)],
        );
        s.line("rm -f -- {}", &[&layout.unfinished(release)]);
    }
    lock::release(&mut s, &layout);
    s
}
