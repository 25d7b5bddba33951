//! The scripts of every phase, as pure functions of the config and the decisions already made.
//! Each is one round trip. `deploy`, `rollback` and `prune` run them; `--dry-run` prints them.
//!
//! | phase    | script             | does                                                       |
//! |----------|--------------------|------------------------------------------------------------|
//! | lock     | [`preflight`]      | checks (before touching anything), lock, clear stale, state |
//! | stage    | [`stage`]          | verify sha256, unpack, verify files, link shared, hooks    |
//! | once     | [`once_hooks`]     | before_switch_once hooks, on the first host only           |
//! | switch   | [`switch`]         | arm the guard, units, flip `current`, start, new process   |
//! | verify   | [`verify`]         | settle, same process, retire the old instance, hooks        |
//! | finish   | [`finish`]         | confirm (disarm the guard), revisions.log, prune, unlock    |
//! | revert   | [`revert`]         | mark failed/ghost, units + release back, journal, unlock   |
//! | abort    | [`abort`]          | undo an unverified switch, drop staged release, unlock     |

use std::time::Duration;

use crate::config::Config;
use crate::hooks::{self, HookEnv};
use crate::journal;
use crate::layout::Layout;
use crate::lock;
use crate::package::Manifest;
use crate::preflight::{self, Requirements};
use crate::remote::script::{Script, EXIT_CHECKSUM, EXIT_LOCKED, EXIT_UNSTABLE};
use crate::remote::transfer::Encoding;
use crate::secrets::Secrets;
use crate::systemd::{self, guard, strategy};

/// Lock + state, with the artifact checks when `req` is given (deploy: one per artifact, the
/// host's `uname -m` picks), without (rollback, prune). Also reports which cached files of
/// the host's artifact exist.
pub fn preflight(
    config: &Config,
    req: Option<&[Requirements]>,
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
    // One process for all six, and none when they all exist (every deploy but the first).
    s.lines("set --");
    for d in [
        layout.releases(),
        layout.shared(),
        layout.artifacts(),
        layout.unfinished_dir(),
        layout.failed_dir(),
        layout.ghosts_dir(),
    ] {
        s.line("[ -d {} ] || set -- \"$@\" {}", &[&d, &d]);
    }
    s.lines("[ \"$#\" = 0 ] || mkdir -p -- \"$@\"");
    // A release left unfinished by an interrupted deploy is never used: remove it, with the
    // artifact its mark names (one whose transfer or check did not end, see `stage`).
    s.line(
        "for _m in {}/*; do [ -e \"$_m\" ] || continue; _id=${{_m##*/}}; _a=; read -r _a < \"$_m\" || true",
        &[&layout.unfinished_dir()],
    );
    s.line(
        "  set -- {}/\"$_id\" \"$_m\"; case $_a in ''|.*|*/*) ;; *) set -- \"$@\" {}/\"$_a\" ;; esac",
        &[&layout.releases(), &layout.artifacts()],
    );
    s.lines("  rm -rf -- \"$@\"; printf 'cleared=%s\\n' \"$_id\"");
    s.lines("done");
    if let Some(req) = req {
        // The clock the checks read, for the switch and its dead-man's switch (no `date`).
        crate::hostfacts::record_clock(&mut s, &crate::hostfacts::clock_file(&layout));
        crate::hostfacts::record_facts(&mut s, &crate::hostfacts::facts_file(&layout));
        preflight::cached(&mut s, &layout, req);
        // Every artifact the host keeps: one may be the base of a delta (no process).
        s.line(
            "for _a in {}/*; do [ -f \"$_a\" ] && printf 'have=%s\\n' \"${{_a##*/}}\"; done; true",
            &[&layout.artifacts()],
        );
    }
    // An unconfirmed switch (its deploy vanished, and someone removed the lock): the host is
    // about to put the previous release back by itself; nothing may switch before that.
    // `--lock-wait` waits for that too, with what is left of its time (#17).
    s.line(
        "while [ -f {} ] && [ \"$_w\" -lt {} ]; do _w=$((_w + 1)); sleep 1; done",
        &[&layout.pending(), &lock_wait.as_secs().to_string()],
    );
    s.line(
        "if [ -f {} ]; then printf 'holder=an unconfirmed switch to release %s by %s; this host puts release %s back by itself at %s\\n' \"$(sed -n 's/^release=//p' {})\" \"$(sed -n 's/^holder=//p' {})\" \"$(sed -n 's/^previous=//p' {})\" \"$(date -u -d \"@$(sed -n 's/^deadline=//p' {})\" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null || echo soon)\"; exit {}; fi",
        &[&layout.pending(), &layout.pending(), &layout.pending(), &layout.pending(), &layout.pending(), &EXIT_LOCKED.to_string()],
    );
    journal::state_lines(&mut s, &layout);
    // A switch record left by a deploy that was killed mid-switch has been reported above;
    // the lock is ours now, so it must not be "restored" by this flow's own undo.
    s.line(
        "[ ! -e {} ] || rm -f -- {}",
        &[&journal::switching(&layout), &journal::switching(&layout)],
    );
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
    /// The artifact arrives on the script's standard input (this many bytes), to be stored in
    /// the host's cache first; `None` when the host has it already.
    pub receive: Option<u64>,
    /// What arrives is a delta against this file of the host's artifacts dir
    /// ([`crate::remote::transfer::Delta`]): the host rebuilds the tar (`receive` bytes, sha256
    /// `sent_sha`) with `zstd --patch-from`, or exits [`crate::remote::transfer::EXIT_DELTA`].
    pub delta_base: Option<&'a str>,
    /// The manifest (file checksums).
    pub manifest: &'a Manifest,
    /// Hook context.
    pub hook_env: HookEnv<'a>,
    /// What the release runs with ([`crate::fingerprint`]), recorded beside it.
    pub fingerprint: &'a str,
}

/// Verifies the uploaded file, unpacks it into `releases/<id>` (marked unfinished until the
/// end), verifies every file against the manifest, links shared paths, runs before_switch.
pub fn stage(config: &Config, input: &StageInput<'_>) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let rel = layout.release(input.release);
    let art = layout.artifact(input.artifact_sha, input.encoding.ext());
    let mut s = Script::new(format!("stage release {} in {rel}", input.release));
    let mark = layout.unfinished(input.release);
    let checksum = EXIT_CHECKSUM.to_string();
    s.lines("umask 022");
    if input.receive.is_some() {
        // The artifact is received under its final name, so no `mv`; until it has been
        // checked, the release's unfinished mark names it, and the preflight of a later
        // deploy removes it with the release (an interrupted transfer never counts as a
        // cached artifact). Preflight made the artifacts dir.
        let name = art.rsplit('/').next().unwrap_or_default();
        s.line("printf '%s\\n' {} > {}", &[name, &mark]);
    } else {
        s.line(": > {}", &[&mark]);
    }
    if let (Some(_), Some(base)) = (input.receive, input.delta_base) {
        // A delta follows the script: zstd reads it from standard input and rebuilds the tar
        // against the earlier artifact's tar (decompressed next to it first when cached as
        // .tar.zst); a zstd without --patch-from, or any failure, asks for the whole artifact.
        let base = format!("{}/{base}", layout.artifacts());
        if base.ends_with(".tar.zst") {
            s.line(
                "if zstd -dcq -- {} > {}.base; then _ref={}.base; else _ref=; fi",
                &[&base, &art, &art],
            );
        } else {
            s.line("_ref={}", &[&base]);
        }
        s.line(
            "if [ -z \"$_ref\" ] || ! zstd -dqf --patch-from=\"$_ref\" -o {}; then rm -f -- {} {}.base {}; echo 'this host could not rebuild the artifact from the delta' >&2; exit {}; fi",
            &[&art, &art, &art, &mark, &crate::remote::transfer::EXIT_DELTA.to_string()],
        );
        if base.ends_with(".tar.zst") {
            s.line("rm -f -- {}.base", &[&art]);
        }
    } else if input.receive.is_some() {
        // The artifact follows the script on standard input: no SFTP session, no extra round
        // trip. A short or corrupted transfer fails the sha256 check below, which then names
        // the size that arrived.
        s.line("cat > {}", &[&art]);
    }
    s.line("mkdir -- {}", &[&rel]);
    crate::package::unpack::unpack_and_count(&mut s, input.encoding, &art, &rel, input.manifest);
    // One `sha256sum -c` for the artifact and every unpacked file (absolute paths, no `cd`
    // subshell; on a here-document, no `printf |` pipeline). Only when it fails, or the
    // archive was refused, is the artifact's own sum taken apart: a wrong artifact is
    // reported first and alone, as what arrived, and removed.
    let checklist: String = std::iter::once(format!("{}  {art}\n", input.sent_sha))
        .chain(
            input
                .manifest
                .files
                .iter()
                .map(|(path, f)| format!("{}  {rel}/{path}\n", f.sha256)),
        )
        .collect();
    s.line("_cl={}", &[checklist.trim_end_matches('\n')]);
    s.lines(
        "_ck=; _ok=0; if [ -z \"$_bad\" ] && _ck=$(sha256sum -c --quiet --strict - 2>&1 <<SHIP_EOF",
    );
    s.lines("$_cl");
    s.lines("SHIP_EOF");
    s.lines("); then _ok=1; fi");
    s.lines("if [ \"$_ok\" = 0 ]; then");
    s.line("  _sum=$(sha256sum < {}); _sum=${{_sum%% *}}", &[&art]);
    match input.receive {
        Some(size) => s.line(
            "  if [ \"$_sum\" != {} ]; then _len=$(wc -c < {}); rm -rf -- {} {} {}; echo \"the uploaded artifact's sha256 is $_sum, expected \"{}\" (it arrived with $_len bytes, expected \"{}\")\" >&2; exit {}; fi",
            &[input.sent_sha, &art, &art, &rel, &mark, input.sent_sha, &size.to_string(), &checksum],
        ),
        None => s.line(
            "  if [ \"$_sum\" != {} ]; then rm -rf -- {} {} {}; echo \"the uploaded artifact's sha256 is $_sum, expected\" {} >&2; exit {}; fi",
            &[input.sent_sha, &art, &rel, &mark, input.sent_sha, &checksum],
        ),
    };
    crate::package::unpack::refuse_bad(&mut s, &rel, &mark);
    s.line(
        "  printf '%s\\n' \"$_ck\" >&2; echo 'the unpacked files do not match the manifest' >&2; exit {}",
        &[&checksum],
    );
    s.lines("fi");
    if input.receive.is_some() {
        // Checked: the artifact is a cached one now, whatever becomes of the release.
        s.line(": > {}", &[&mark]);
    }
    shared_links(&mut s, config, &layout, &rel);
    if !config.hooks.before_switch.is_empty() {
        hooks::as_service_user(&mut s, config);
    }
    hooks::run(
        &mut s,
        "before_switch",
        &config.hooks.before_switch,
        &input.hook_env,
    );
    crate::fingerprint::record(&mut s, &layout, input.release, input.fingerprint);
    s.line("rm -f -- {}", &[&layout.unfinished(input.release)]);
    s.line("echo staged={}", &[input.release]);
    s
}

/// Links the shared dirs and files into the release, in the order of one link at a time
/// (shared dirs made, whatever the artifact put at the link paths removed, link parents made,
/// links made) but with one `mkdir -p` and one `rm -rf` for all of them, and one `ln -s` each.
fn shared_links(s: &mut Script, config: &Config, layout: &Layout, rel: &str) {
    let shared_dirs: Vec<String> = config
        .shared_dirs
        .iter()
        .map(|d| format!("{}/{d}", layout.shared()))
        .collect();
    let links: Vec<(String, String)> = config
        .shared_dirs
        .iter()
        .chain(&config.shared_files)
        .map(|p| (format!("{}/{p}", layout.shared()), format!("{rel}/{p}")))
        .collect();
    if links.is_empty() {
        return;
    }
    let mut parents: Vec<String> = Vec::new();
    for (_, link) in &links {
        if let Some((parent, _)) = link.rsplit_once('/') {
            if parent != rel && !parents.iter().any(|p| p == parent) {
                parents.push(parent.to_string());
            }
        }
    }
    // Each value is one quoted word of "$@" (set one by one), and only when it needs the
    // command (a directory missing, something at a link's path): one process per list, and
    // none when nothing needs it (shared dirs exist after the first deploy; an artifact rarely
    // holds files where the links go).
    let missing_dir = |s: &mut Script, v: &str| {
        s.line("[ -d {} ] || set -- \"$@\" {}", &[v, v]);
    };
    let something_at = |s: &mut Script, v: &str| {
        s.line(
            "if [ -e {} ] || [ -L {} ]; then set -- \"$@\" {}; fi",
            &[v, v, v],
        );
    };
    let list = |s: &mut Script,
                values: &[&String],
                test: &dyn Fn(&mut Script, &str),
                cmd: &'static str| {
        if values.is_empty() {
            return;
        }
        s.lines("set --");
        for v in values {
            test(s, v.as_str());
        }
        s.lines(cmd);
    };
    list(
        s,
        &shared_dirs.iter().collect::<Vec<_>>(),
        &missing_dir,
        "[ \"$#\" = 0 ] || mkdir -p -- \"$@\"",
    );
    list(
        s,
        &links.iter().map(|(_, l)| l).collect::<Vec<_>>(),
        &something_at,
        "[ \"$#\" = 0 ] || rm -rf -- \"$@\"",
    );
    list(
        s,
        &parents.iter().collect::<Vec<_>>(),
        &missing_dir,
        "[ \"$#\" = 0 ] || mkdir -p -- \"$@\"",
    );
    // One `ln -s -- <target>... <dir>/` per directory the links go in: each link is named
    // after its target's last component, as `<shared>/<p>` and `<rel>/<p>` share theirs.
    let mut dirs: Vec<(String, Vec<&String>)> = Vec::new();
    for (shared, link) in &links {
        let dir = link.rsplit_once('/').map_or(rel, |(d, _)| d).to_string();
        match dirs.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, targets)) => targets.push(shared),
            None => dirs.push((dir, vec![shared])),
        }
    }
    for (dir, targets) in &dirs {
        s.lines("set --");
        for t in targets {
            s.line("set -- \"$@\" {}", &[t.as_str()]);
        }
        s.line("ln -s -- \"$@\" {}/", &[dir]);
    }
}

/// Runs the `before_switch_once` hooks (migrations) in the staged release: on one host, after
/// every host has staged, before any switch.
pub fn once_hooks(config: &Config, hook_env: &HookEnv<'_>) -> Script {
    let mut s = Script::new(format!(
        "run the before_switch_once hooks in release {}",
        hook_env.release
    ));
    if !config.hooks.before_switch_once.is_empty() {
        hooks::as_service_user(&mut s, config);
    }
    hooks::run(
        &mut s,
        "before_switch_once",
        &config.hooks.before_switch_once,
        hook_env,
    );
    s
}

/// Records the current release in `.ship/switching`, arms the dead-man's switch, installs the
/// unit files, flips `current` to `release` atomically and puts it in service under the
/// configured restart strategy, waiting for a new active process (and the health command).
/// Prints `previous=`, `unit_changed=`, `outage=` (when the sockets close for a moment),
/// `guard_deadline=`, `new_unit=`, `retire=` and the `new_*` unit state.
///
/// With `secrets` (a deploy), the unit's secret file is written when its values changed; a
/// rollback passes `None` and keeps the values the host has.
///
/// The job units (#21) of `host` are recorded with the release and installed beside the app
/// units (a rollback installs the set recorded with its target, when there is one).
pub fn switch(
    config: &Config,
    host: &str,
    release: &str,
    holder: &str,
    secrets: Option<&Secrets>,
) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "switch `current` to release {release} and start it ({} restart of {})",
        config.systemd.restart.as_str(),
        config.systemd.unit
    ));
    systemd::sudo_prelude(&mut s, config);
    crate::hostfacts::link_base(&mut s, &layout.current());
    crate::hostfacts::now(&mut s, &crate::hostfacts::clock_file(&layout));
    s.lines("_prev=$_c");
    s.line(
        "[ -f {} ] || printf '%s\\n' \"$_prev\" > {}",
        &[&journal::switching(&layout), &journal::switching(&layout)],
    );
    // The flock keeps a firing revert from running beside the rest of the switch. From
    // `quiet` on, nothing is written to the connection until the guard runs (a client that
    // vanished would end the script at the first write), and an exit starts the guard once
    // `pending` records the switch: armed before anything changes, the host reverts by itself
    // if the deploy never confirms. The guard itself starts with the service (`bring_up`),
    // after `current` flips: one `systemctl restart` for both.
    let guard_units = guard::wanted_units(config);
    guard::hold(&mut s, config);
    guard::quiet(&mut s, config);
    strategy::prepare(&mut s, config, &guard_units);
    guard::arm(&mut s, config, release, holder);
    s.lines("echo previous=$_prev");
    guard::uninstall_stale(&mut s, config);
    strategy::install(&mut s, config, &guard_units);
    crate::jobs::record(&mut s, config, host, release, secrets.is_none());
    crate::jobs::install(&mut s, config, release);
    match secrets {
        Some(secrets) => crate::secrets::install(&mut s, config, secrets),
        // A rollback installs today's units with the release's binary: the fingerprint the
        // release was deployed with no longer says what runs.
        None => crate::fingerprint::forget(&mut s, &layout, release),
    }
    // The version now live, for reports.
    journal::print_version(&mut s, "version", &layout.release(release));
    s.lines("echo switched_at=@$_now");
    s.line("_to={}", &[release]);
    strategy::bring_up(&mut s, config, false, true, true);
    if let Some(cmd) = &config.health.command {
        hooks::as_service_user(&mut s, config);
        crate::health::command_check(&mut s, &layout.release(release), cmd, config.health.timeout);
    }
    // The HTTP check too, on the host, while the script runs: no round trips of its own.
    crate::health::probe_on_host(&mut s, config);
    s
}

/// Whether a switch also verifies ([`switch_verified`]): with no settle period and no
/// after_switch hooks, nothing happens on the deploying machine between a host's switch and
/// its verify (issue #18: one round trip less per host).
pub fn verifies_in_switch(config: &Config) -> bool {
    config.health.settle.is_zero() && config.hooks.after_switch.is_empty()
}

/// A deploy's switch: [`switch`], and, when [`verifies_in_switch`], then [`verify`]'s check
/// that the unit still runs the process the switch started and the retirement of the old
/// blue-green instance, and, with `finish`, the [`finish`] lines (a deploy to one host):
/// prints `verified=1`. Otherwise [`switch`] alone (`finish` then goes with [`verify`]).
///
/// The HTTP check is probed on the host when it has bash; without bash (the client probes
/// through the connection) or when that probe failed, the script ends after the switch as
/// [`switch`] does, and the client runs [`verify`] once it has probed.
pub fn switch_verified(
    config: &Config,
    host: &str,
    release: &str,
    holder: &str,
    secrets: Option<&Secrets>,
    finish: Option<Finish<'_>>,
) -> Script {
    let mut s = switch(config, host, release, holder, secrets);
    if !verifies_in_switch(config) {
        return s;
    }
    s.set_purpose(format!(
        "switch `current` to release {release}, start it and check it stays up ({} restart of {}){}",
        config.systemd.restart.as_str(),
        config.systemd.unit,
        if finish.is_some() {
            ", then confirm, record and unlock"
        } else {
            ""
        }
    ));
    let probe = matches!(crate::health::http_target(config), Ok(Some(_)));
    if probe {
        s.lines("if [ \"${_probe_ok:-0}\" = 1 ]; then");
    }
    // The unit and invocation the switch started are in `$_svc` and `$_inv`; the flock taken
    // by the switch is still held, so the dead-man's switch cannot have reverted meanwhile.
    s.lines("_ninv=$_inv");
    systemd::show_state(&mut s, None);
    s.line(
        "if [ \"$_st\" != active ] || [ \"$_inv\" != \"$_ninv\" ]; then echo \"the service did not stay up: state $_st, restarted $_nr times\" >&2; exit {}; fi",
        &[&EXIT_UNSTABLE.to_string()],
    );
    strategy::retire(&mut s);
    s.lines("echo verified=1");
    if let Some(f) = finish {
        finish_lines(&mut s, config, release, f.log, f.prune, true);
    }
    if probe {
        s.lines("fi");
    }
    s
}

/// The [`finish`] lines to run at the end of [`verify`], when nothing else must be waited for
/// (a rollback, a deploy to one host): one round trip less.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// The revisions.log line.
    pub log: &'a str,
    /// Releases to remove.
    pub prune: &'a [String],
}

/// What [`verify`] checks: the unit the switch started and its process.
pub struct Started<'a> {
    /// The unit serving the new release (`new_unit=` of the switch).
    pub unit: &'a str,
    /// Its InvocationID right after the switch.
    pub invocation: &'a str,
    /// Blue-green: the instance still serving the old release (`retire=`), stopped once the
    /// new one is proven.
    pub retire: &'a str,
}

/// Waits `settle`, then checks the unit still runs the process started by the switch and is
/// active; retires the old blue-green instance; runs after_switch hooks. With `finish`,
/// the [`finish`] lines follow in the same script (one round trip less), reached only when
/// all that passed; a host that must wait for the rest of the fleet (deploy) passes `None`.
pub fn verify(
    config: &Config,
    release: &str,
    started: &Started<'_>,
    hook_env: &HookEnv<'_>,
    finish: Option<Finish<'_>>,
) -> Script {
    let mut s = Script::new(format!("verify release {release} stays up"));
    systemd::sudo_prelude(&mut s, config);
    // Never beside the dead-man's switch: if it reverted the release already, say so and
    // touch nothing (retiring the old instance now would stop what serves).
    guard::hold(&mut s, config);
    guard::already_reverted(&mut s, config, release);
    if !config.health.settle.is_zero() {
        s.line(
            "sleep {}",
            &[&format!("{:.1}", config.health.settle.as_secs_f64())],
        );
    }
    s.line("_svc={}", &[started.unit]);
    systemd::show_state(&mut s, Some("now"));
    s.line(
        "if [ \"$_st\" != active ] || [ \"$_inv\" != {} ]; then echo \"the service did not stay up: state $_st, restarted $_nr times\" >&2; exit {}; fi",
        &[started.invocation, &EXIT_UNSTABLE.to_string()],
    );
    s.line("_retire={}", &[started.retire]);
    strategy::retire(&mut s);
    let hooks_after = !config.hooks.after_switch.is_empty();
    // The hooks may take long: a revert that comes due meanwhile must not wait for them.
    // Without hooks, a finish that follows keeps the flock (one `flock` less).
    let held = finish.is_some() && !hooks_after;
    if !held {
        guard::release(&mut s);
    }
    if hooks_after {
        hooks::as_service_user(&mut s, config);
    }
    hooks::run(&mut s, "after_switch", &config.hooks.after_switch, hook_env);
    if let Some(f) = finish {
        finish_lines(&mut s, config, release, f.log, f.prune, held);
    }
    s
}

/// Confirms `release` to the dead-man's switch (exits [`crate::remote::script::EXIT_REVERTED`]
/// when it already put the previous release back), appends to revisions.log, removes `prune`
/// releases and old cached artifacts, clears the switch records and releases the lock.
pub fn finish(config: &Config, release: &str, log_line: &str, prune: &[String]) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "confirm release {release}, record it and release the lock in {}",
        layout.root()
    ));
    s.idempotent();
    systemd::sudo_prelude(&mut s, config);
    finish_lines(&mut s, config, release, log_line, prune, false);
    s
}

/// The lines of [`finish`]; `held`: the script holds the guard's flock already.
///
/// One `rm` (issue #18) removes the confirmation (`pending`), the switch record, the unit
/// files kept for a revert and, when nothing is pruned, the lock; the guard's wait ends after
/// it (still under the flock), then what is pruned goes, then the lock if it is still there.
fn finish_lines(
    s: &mut Script,
    config: &Config,
    release: &str,
    log_line: &str,
    prune: &[String],
    held: bool,
) {
    let layout = Layout::new(&config.deploy_to);
    guard::confirm_check(s, config, release, held);
    s.line(
        "printf '%s\\n' {} >> {}",
        &[log_line, &layout.revisions_log()],
    );
    crate::secrets::forget_previous(s, config);
    strategy::settle_slots(s, config, release);
    s.line(
        "set -- {} {}",
        &[&guard::pending_path(config), &journal::switching(&layout)],
    );
    s.line(
        "for _f in {}/*; do if [ -e \"$_f\" ]; then set -- \"$@\" \"$_f\"; fi; done",
        &[&layout.units_prev()],
    );
    s.lines("_unlock=0");
    if prune.is_empty() {
        // No release to remove, and no cached artifact past keep_releases: the lock goes now.
        s.line(
            "_na=0; for _a in {}/*; do if [ -e \"$_a\" ]; then _na=$((_na + 1)); fi; done",
            &[&layout.artifacts()],
        );
        s.line(
            "if [ \"$_na\" -le {} ]; then set -- \"$@\" {}; _unlock=1; fi",
            &[&config.keep_releases.to_string(), &layout.lock()],
        );
    }
    s.lines("rm -rf -- \"$@\"");
    guard::confirm_end(s, config);
    prune_lines(s, &layout, prune, config.keep_releases);
    s.line("[ \"$_unlock\" = 1 ] || rm -rf -- {}", &[&layout.lock()]);
}

/// Moves the dead-man's switch deadline of a host that waits for later batches.
pub fn extend_guard(config: &Config, release: &str) -> Script {
    let mut s = Script::new(format!(
        "give release {release} more time before the host reverts it"
    ));
    s.idempotent();
    systemd::sudo_prelude(&mut s, config);
    // Under the lock: a revert already under way is never restarted half-done.
    guard::hold(&mut s, config);
    guard::extend(&mut s, config, release);
    s
}

/// Removes releases (and their marks) and keeps only the newest `keep_artifacts` cached
/// artifacts.
pub fn prune_lines(s: &mut Script, layout: &Layout, prune: &[String], keep_artifacts: usize) {
    for id in prune {
        // Kept (`busy=`) while a scheduled job runs from it.
        crate::jobs::prune_line(s, layout, id);
    }
    // Counted by a glob first: `ls` (a process) only when some must go.
    s.line(
        "set -- {}/*; [ -e \"$1\" ] || set --",
        &[&layout.artifacts()],
    );
    s.line(
        "if [ \"$#\" -gt {} ]; then _n=0; for _a in $(ls -1t {} 2>/dev/null); do _n=$((_n + 1))",
        &[&keep_artifacts.to_string(), &layout.artifacts()],
    );
    s.line(
        "  [ \"$_n\" -le {} ] || rm -f -- {}/\"$_a\"",
        &[&keep_artifacts.to_string(), &layout.artifacts()],
    );
    s.lines("done; fi");
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

/// Marks the release failed (and the artifact a ghost), captures the journal, puts back the
/// unit files the switch replaced and the previous release (blue-green: the old instance,
/// which never stopped, keeps serving and the new one stops), or stops the service when there
/// is nothing to go back to; disarms the dead-man's switch, logs and unlocks.
pub fn revert(config: &Config, input: &RevertInput<'_>) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let unit = systemd::unit_name(config);
    let mut s = Script::new(format!("roll back from release {}", input.failed));
    s.idempotent();
    systemd::sudo_prelude(&mut s, config);
    guard::hold(&mut s, config);
    guard::already_reverted(&mut s, config, input.failed);
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
        "_j=$($SUDO journalctl -u {} -n {} --since {} --no-pager -o short-iso 2>&1) || true",
        &[
            &unit,
            &input.journal_lines.to_string(),
            input.since.unwrap_or("-1h"),
        ],
    );
    strategy::restore(&mut s, config);
    match input.previous {
        Some(prev) => {
            s.line("_to={}", &[prev]);
            strategy::bring_up(&mut s, config, true, false, false);
            strategy::retire(&mut s);
            s.line("echo restored={}", &[prev]);
        }
        None => {
            strategy::stop_everything(&mut s, config);
            s.line("rm -f -- {}; echo restored=", &[&layout.current()]);
        }
    }
    s.line(
        "printf '%s\\n' {} >> {}",
        &[input.log_line, &layout.revisions_log()],
    );
    s.line("rm -f -- {}", &[&journal::switching(&layout)]);
    guard::disarm(&mut s, config);
    lock::release(&mut s, &layout);
    s.lines("echo --journal--; printf '%s\\n' \"$_j\"");
    s
}

/// Puts a host back as it was after an interrupted or stopped flow — only while its lock is
/// still held by `holder`, so it never touches another deploy's work. If a switch was recorded
/// and not finished, the unit files and `current` go back to the recorded release and it is
/// put in service again (blue-green: the old instance, if still running, just keeps serving);
/// `release` (the new, staged one, if any) is removed unless it is current; the dead-man's
/// switch is disarmed and the lock goes.
pub fn abort(config: &Config, holder: &str, release: Option<&str>) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!("put {} back as it was", layout.root()));
    s.idempotent();
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "if [ \"$(cat {} 2>/dev/null || true)\" != {} ]; then echo not_ours=1; exit 0; fi",
        &[&layout.lock_holder(), holder],
    );
    guard::hold(&mut s, config);
    let sw = journal::switching(&layout);
    s.line("if [ -f {} ]; then _prev=$(cat {})", &[&sw, &sw]);
    strategy::restore(&mut s, config);
    s.line(
        "  if [ -n \"$_prev\" ] && [ -d {}/\"$_prev\" ]; then _to=$_prev",
        &[&layout.releases()],
    );
    strategy::bring_up(&mut s, config, true, false, false);
    strategy::retire(&mut s);
    s.lines("  echo restored=$_prev");
    s.lines("  else");
    strategy::stop_everything(&mut s, config);
    s.line("    rm -f -- {}; echo restored=", &[&layout.current()]);
    s.lines("  fi");
    s.line("  rm -f -- {}", &[&sw]);
    s.lines("fi");
    guard::disarm(&mut s, config);
    if let Some(release) = release {
        s.line(
            "_c=$(readlink {} 2>/dev/null) || true",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::{config_from, config_with};

    fn manifest() -> Manifest {
        let mut m = Manifest {
            schema: 1,
            package: "hello".into(),
            version: "0.1.0".into(),
            bin: "hello".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            profile: "release".into(),
            features: Vec::new(),
            git_commit: None,
            git_dirty: false,
            rustc: String::new(),
            builder: "cargo".into(),
            built_at: String::new(),
            glibc_required: None,
            files: Default::default(),
        };
        m.files.insert(
            "hello".into(),
            crate::package::manifest::FileEntry {
                sha256: "0".repeat(64),
                size: 1,
                mode: 0o755,
            },
        );
        m
    }

    /// The shared links through the real /bin/sh: whatever the artifact put at a link's path
    /// goes, missing parents and shared dirs are made, and each link names its shared path
    /// (one `ln` per directory the links go in).
    #[test]
    fn shared_links_in_sh() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        let mut config = config_with("");
        config.deploy_to = root.display().to_string();
        config.shared_dirs = vec!["data".into(), "log/app".into()];
        config.shared_files = vec!["config/local.toml".into(), "top.env".into()];
        let layout = Layout::new(&config.deploy_to);
        let rel = layout.release("20260101000000");
        std::fs::create_dir_all(format!("{rel}/data")).unwrap();
        std::fs::write(format!("{rel}/data/x"), "from the artifact").unwrap();
        let mut s = Script::new("t");
        shared_links(&mut s, &config, &layout, &rel);
        let out = s.run_local();
        assert!(out.status.success(), "{out:?}");
        for p in ["data", "log/app", "config/local.toml", "top.env"] {
            assert_eq!(
                std::fs::read_link(format!("{rel}/{p}")).unwrap(),
                std::path::PathBuf::from(format!("{}/{p}", layout.shared())),
                "{p}"
            );
        }
        assert!(std::path::Path::new(&format!("{}/log/app", layout.shared())).is_dir());
    }

    /// With `settle = "0s"` the switch verifies (#18): only once the probe on the host passed
    /// (without bash the client probes, then runs `verify`), retiring the old blue-green
    /// instance and, for a host alone, finishing, all inside that branch; with a settle period
    /// or after_switch hooks it does not.
    #[test]
    fn the_switch_verifies_only_when_nothing_happens_in_between() {
        let bg = "restart = \"blue-green\"\nlisten = [\"8080\"]\n";
        let config = config_from(
            bg,
            "http = \"http://127.0.0.1:8080/healthz\"\nsettle = \"0s\"\n",
        );
        assert!(verifies_in_switch(&config));
        let finish = Finish {
            log: "the log line",
            prune: &[],
        };
        let text = switch_verified(&config, "h1", "20260101000000", "me", None, Some(finish))
            .render()
            .unwrap();
        let branch = text
            .find("if [ \"${_probe_ok:-0}\" = 1 ]; then")
            .expect("the verify lines wait for the probe");
        assert!(text.find("_probe_ok=1").unwrap() < branch, "{text}");
        for needle in [
            "_ninv=$_inv",
            "the service did not stay up",
            "systemctl stop \"$_retire\"",
            "echo verified=1",
            "'the log line'",
            "confirmed=1",
        ] {
            let at = text
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing\n{text}"));
            assert!(at > branch, "{needle} before the probe's branch\n{text}");
        }
        assert!(text.trim_end().ends_with("fi"), "{text}");

        // No HTTP check: nothing to wait for.
        let config = config_from("", "settle = \"0s\"\n");
        let text = switch_verified(&config, "h1", "20260101000000", "me", None, None)
            .render()
            .unwrap();
        assert!(!text.contains("_probe_ok:-0"), "{text}");
        assert!(text.contains("echo verified=1"), "{text}");
        assert!(!text.contains("confirmed=1"), "{text}");

        let settling = config_from("", "settle = \"1s\"\n");
        assert!(!verifies_in_switch(&settling));
        let text = switch_verified(&settling, "h1", "20260101000000", "me", None, None)
            .render()
            .unwrap();
        assert!(!text.contains("verified=1"), "{text}");
        let mut hooked = config_from("", "settle = \"0s\"\n");
        hooked.hooks.after_switch = vec!["true".into()];
        assert!(!verifies_in_switch(&hooked));
    }

    /// Every phase script of every strategy, with and without sudo and the dead-man's switch,
    /// is one the host's `/bin/sh` (dash on Debian) parses.
    #[test]
    fn every_phase_script_parses() {
        let configs = [
            config_with(""),
            config_from("", "confirm_timeout = \"0s\"\n"),
            config_with(
                "restart = \"socket\"\nlisten = [\"8080\"]\nnotify = true\nuser = \"svc\"\n",
            ),
            config_with("restart = \"blue-green\"\nlisten = [\"8080\"]\n"),
        ];
        let m = manifest();
        let rel = "20260101000000";
        for (i, mut config) in configs.into_iter().enumerate() {
            config.sudo = i == 2;
            config.shared_dirs = vec!["data".into(), "log/app".into()];
            config.shared_files = vec!["config/local.toml".into()];
            let env = HookEnv {
                release: rel,
                release_dir: "/opt/hello/releases/20260101000000",
                deploy_to: "/opt/hello",
                previous: "",
                version: "0.1.0",
                environment: "test",
                host: "h1",
            };
            let req = Requirements {
                machine: "x86_64".into(),
                target: "x86_64-unknown-linux-gnu".into(),
                glibc: Some("2.31".into()),
                disk_kib: 1,
                artifact_sha: Some("a".repeat(64)),
                force: false,
            };
            let mut scripts = vec![
                preflight(
                    &config,
                    Some(std::slice::from_ref(&req)),
                    "me",
                    Duration::from_secs(1),
                ),
                preflight(&config, None, "me", Duration::from_secs(1)),
                switch(&config, "h1", rel, "me", Some(&Secrets::default())),
                switch(&config, "h1", rel, "me", None),
                finish(&config, rel, "log line", &["20250101000000".into()]),
                finish(&config, rel, "log line", &[]),
                extend_guard(&config, rel),
                abort(&config, "me", Some(rel)),
                guard::revert_script(&config),
            ];
            let started = Started {
                unit: "hello.service",
                invocation: "abc",
                retire: "",
            };
            for f in [
                None,
                Some(Finish {
                    log: "l",
                    prune: &[],
                }),
            ] {
                scripts.push(verify(&config, rel, &started, &env, f));
                scripts.push(switch_verified(
                    &config,
                    "h1",
                    rel,
                    "me",
                    Some(&Secrets::default()),
                    f,
                ));
            }
            for (receive, delta) in [
                (None, None),
                (Some(10), None),
                (Some(10), Some("b.tar.zst")),
                (Some(10), Some("b.tar")),
            ] {
                scripts.push(stage(
                    &config,
                    &StageInput {
                        release: rel,
                        artifact_sha: &"a".repeat(64),
                        encoding: if delta.is_some() {
                            Encoding::Tar
                        } else {
                            Encoding::Zstd
                        },
                        sent_sha: &"a".repeat(64),
                        receive,
                        delta_base: delta,
                        manifest: &m,
                        hook_env: HookEnv { ..env },
                        fingerprint: "f",
                    },
                ));
            }
            scripts.push(revert(
                &config,
                &RevertInput {
                    failed: rel,
                    previous: Some("20250101000000"),
                    ghost: Some("abc"),
                    reason: "r",
                    log_line: "l",
                    journal_lines: 5,
                    since: None,
                },
            ));
            for s in scripts {
                let text = s.render().unwrap();
                let out = std::process::Command::new("/bin/sh")
                    .arg("-n")
                    .arg("-c")
                    .arg(&text)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "config {i}: {}: {}\n{text}",
                    s.purpose(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
