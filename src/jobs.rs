//! Scheduled jobs (#21): `[package.metadata.ship.jobs.<name>]` becomes
//! `<unit>-job-<name>.service` + `<unit>-job-<name>.timer` on its hosts.
//!
//! * The service runs the job's binary from the release `current` points at *when the job
//!   starts*: a constant `sh -c` resolves `current` once (`cd -P`), takes a shared `flock` on
//!   that release directory (held by the job's process through an inherited descriptor) and
//!   execs the binary there. A deploy or rollback that flips `current` meanwhile leaves the
//!   running job on its release, and prune skips a release whose lock is held ([`prune_line`]).
//! * It has the service's user, group, environment, secrets and hardening; `Type=exec`, so
//!   systemd's one-instance-per-unit means no overlapping runs, and `timeout` is
//!   `RuntimeMaxSec=`.
//! * A deploy writes the job units a host should have into `.ship/jobs/<release>/` and
//!   installs exactly that set ([`install`]), saving the files it replaces or removes in
//!   `units.prev` beside the app units: the client's revert, the fleet rollback and the host's
//!   dead-man's switch all put them back through [`crate::systemd::strategy::restore`], and a
//!   rollback installs the set recorded with its target release. Job services are never
//!   stopped or restarted by any of this: only timers are.
//! * `cargo ship jobs`, `cargo ship run` and `status` read the units' state ([`state_lines`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::{Config, JobConfig, JobHosts};
use crate::fleet;
use crate::layout::Layout;
use crate::remote::script::{Script, EXIT_MISSING};
use crate::remote::session::Connection;
use crate::systemd::unit::{self, UnitFile, UNIT_DIR};
use crate::systemd::{self, env_arg, escape_specifiers, exec_arg};
use crate::ui::{Event, HostRow, Ui};
use crate::{Error, Result};

/// The job's command line inside the unit: `$0` is the binary's file name, `"$@"` its
/// arguments, `$SHIP_DEPLOY_TO` comes from `Environment=`; no value is pasted into it. fd 9
/// keeps the shared lock on the release directory for as long as the job's process lives.
pub const RUNNER: &str =
    "cd -P \"$SHIP_DEPLOY_TO/current\" && exec 9<. && flock -s 9 && exec \"./$0\" \"$@\"";

/// `<unit>-job-`: the start of every job unit name of this service.
pub fn prefix(config: &Config) -> String {
    format!("{}-job-", config.systemd.unit)
}

/// `<unit>-job-<name>.service`.
pub fn service(config: &Config, job: &str) -> String {
    format!("{}{job}.service", prefix(config))
}

/// `<unit>-job-<name>.timer`.
pub fn timer(config: &Config, job: &str) -> String {
    format!("{}{job}.timer", prefix(config))
}

/// Whether `host` (as `HostSpec` displays it) runs `job`.
pub fn runs_on(config: &Config, job: &JobConfig, host: &str) -> bool {
    match job.on {
        JobHosts::All => true,
        JobHosts::One => config.jobs_host().as_deref() == Some(host),
    }
}

/// The job unit files `host` should have, service then timer per job.
pub fn units(config: &Config, host: &str) -> Vec<UnitFile> {
    let config = config.for_host(host);
    config
        .jobs
        .iter()
        .filter(|(_, job)| runs_on(config, job, host))
        .flat_map(|(name, job)| pair(config, name, job))
        .collect()
}

/// Every job unit file of the config, whichever host runs it (an `on = "one"` job's too): part
/// of [`crate::systemd::unit_files`], the one list setup fixes for the root helper.
pub fn all_units(config: &Config) -> Vec<UnitFile> {
    config
        .jobs
        .iter()
        .flat_map(|(name, job)| pair(config, name, job))
        .collect()
}

/// A job's service and timer.
fn pair(config: &Config, name: &str, job: &JobConfig) -> [UnitFile; 2] {
    [
        UnitFile {
            name: service(config, name),
            text: render_service(config, name, job),
        },
        UnitFile {
            name: timer(config, name),
            text: render_timer(config, name, job),
        },
    ]
}

/// The header and `[Unit]` description shared by a job's service and timer (`what` tells them
/// apart in the description).
fn unit_head(config: &Config, name: &str, what: &str) -> String {
    let mut u = unit::header(config);
    u.push('\n');
    u.push_str("[Unit]\n");
    u.push_str(&format!(
        "Description={} job {}{what} (deployed by cargo-ship)\n",
        escape_specifiers(&config.package),
        escape_specifiers(name)
    ));
    u
}

/// The job's service: the binary under `current` as resolved at start, as the service's user
/// with its environment and secrets, in the release directory.
pub fn render_service(config: &Config, name: &str, job: &JobConfig) -> String {
    let s = &config.systemd;
    let mut exec = vec!["/bin/sh".to_string(), "-c".into(), exec_arg(RUNNER)];
    exec.push(exec_arg(&job.bin));
    exec.extend(job.args.iter().map(|a| exec_arg(a)));
    let mut u = unit_head(config, name, "");
    u.push_str("After=network-online.target\n\n");
    u.push_str("[Service]\nType=exec\n");
    u.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    let mut env = s.environment.clone();
    for (k, v) in &job.environment {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &env {
        u.push_str(&format!("Environment={}\n", env_arg(&format!("{k}={v}"))));
    }
    u.push_str(&format!(
        "Environment={}\n",
        env_arg(&format!("SHIP_DEPLOY_TO={}", config.deploy_to))
    ));
    u.push_str(&format!(
        "Environment={}\n",
        env_arg(&format!("SHIP_JOB={name}"))
    ));
    if !s.secrets.is_empty() {
        u.push_str(&format!(
            "EnvironmentFile={}\n",
            escape_specifiers(&crate::secrets::host_path(config))
        ));
    }
    if let Some(user) = &s.user {
        u.push_str(&format!("User={}\n", escape_specifiers(user)));
    }
    if let Some(group) = &s.group {
        u.push_str(&format!("Group={}\n", escape_specifiers(group)));
    }
    if let Some(t) = job.timeout {
        u.push_str(&format!("RuntimeMaxSec={}\n", t.as_secs().max(1)));
    }
    if s.hardening {
        u.push_str(&crate::systemd::unit::hardening(config));
    }
    u
}

/// The job's timer: `OnCalendar=` the schedule, to the second (`AccuracySec=1s`).
pub fn render_timer(config: &Config, name: &str, job: &JobConfig) -> String {
    let mut u = unit_head(config, name, " schedule");
    u.push('\n');
    u.push_str("[Timer]\n");
    u.push_str(&format!(
        "OnCalendar={}\n",
        escape_specifiers(&job.schedule)
    ));
    u.push_str(&format!("Unit={}\n", service(config, name)));
    u.push_str("AccuracySec=1s\n");
    if job.persistent {
        u.push_str("Persistent=true\n");
    }
    if let Some(d) = job.randomized_delay {
        u.push_str(&format!("RandomizedDelaySec={}\n", d.as_secs().max(1)));
    }
    u.push_str("\n[Install]\nWantedBy=timers.target\n");
    u
}

/// Preflight: each job's schedule must be one the host's `systemd-analyze calendar` accepts
/// (skipped where systemd-analyze is missing). Uses the `problem` function of the checks.
pub fn preflight(s: &mut Script, config: &Config) {
    for (name, job) in &config.jobs {
        let key = format!("jobs.{name}.schedule");
        s.line(
            r#"if command -v systemd-analyze >/dev/null 2>&1 && ! systemd-analyze calendar -- {} >/dev/null 2>&1; then problem "package.metadata.ship."{}": systemd on this host does not accept the calendar expression \""{}"\" (systemd-analyze calendar)"; fi"#,
            &[&job.schedule, &key, &job.schedule],
        );
    }
}

/// Records the job units this host gets with `release` in `.ship/jobs/<release>/` (a
/// rollback to the release installs them again). With `keep`, an existing record stays
/// (a rollback to a release deployed with jobs); without one it is written from the config.
pub fn record(s: &mut Script, config: &Config, host: &str, release: &str, keep: bool) {
    let layout = Layout::new(&config.deploy_to);
    let dir = layout.jobs_record(release);
    let files = units(config, host);
    if keep {
        s.line("if [ ! -d {} ]; then", &[&dir]);
    }
    s.line(
        "mkdir -p -- {}; for _f in {}/*; do [ -e \"$_f\" ] && rm -f -- \"$_f\"; done",
        &[&dir, &dir],
    );
    for f in &files {
        s.line("printf '%s' {} > {}/{}", &[&f.text, &dir, &f.name]);
    }
    if keep {
        s.lines("fi");
    }
}

/// Installs exactly the job units recorded for `release` (see [`record`]): writes the ones
/// that differ, removes the installed ones not in the record (stopping their timers; a job
/// still running finishes), saving what it replaces in `units.prev` for a revert. Then
/// enables and (re)starts the timers that changed. Prints `jobs_changed=0|1`.
pub fn install(s: &mut Script, config: &Config, release: &str) {
    let layout = Layout::new(&config.deploy_to);
    let dir = layout.jobs_record(release);
    let prev = layout.units_prev();
    let pre = prefix(config);
    s.lines("_jc=0; _jt=");
    s.line(
        "for _f in {}/*; do [ -f \"$_f\" ] || continue; _n=${{_f##*/}}",
        &[&dir],
    );
    s.line(
        "  if [ -f {}/\"$_n\" ] && cmp -s -- \"$_f\" {}/\"$_n\"; then continue; fi",
        &[UNIT_DIR, UNIT_DIR],
    );
    s.line(
        "  if [ -f {}/\"$_n\" ]; then cp -- {}/\"$_n\" {}/\"$_n\"; else : > {}/\"$_n\".absent; fi",
        &[UNIT_DIR, UNIT_DIR, &prev, &prev],
    );
    // Through the helper (`$_H`, issue #16) by name: the text is the one setup fixed, which
    // preflight found equal to this one.
    s.line(
        "  if [ -n \"$_H\" ]; then $SUDO install \"$_n\"; else $SUDO tee {}/\"$_n\".ship-tmp < \"$_f\" >/dev/null; $SUDO mv -f -- {}/\"$_n\".ship-tmp {}/\"$_n\"; fi; _jc=1",
        &[UNIT_DIR, UNIT_DIR, UNIT_DIR],
    );
    s.lines("  case $_n in *.timer) _jt=\"$_jt $_n\" ;; esac");
    s.lines("done");
    s.line(
        "for _f in {}/{}*.service {}/{}*.timer; do [ -f \"$_f\" ] || continue; _n=${{_f##*/}}",
        &[UNIT_DIR, &pre, UNIT_DIR, &pre],
    );
    s.line("  [ -f {}/\"$_n\" ] && continue", &[&dir]);
    // Only what cargo-ship wrote.
    s.line(
        "  _h=; IFS= read -r _h < \"$_f\" || true; [ \"$_h\" = {} ] || continue",
        &[&unit::header(config)],
    );
    s.line("  cp -- \"$_f\" {}/\"$_n\"", &[&prev]);
    s.lines("  case $_n in *.timer) $SUDO systemctl stop \"$_n\" 2>/dev/null || true; $SUDO systemctl $_nr disable -q \"$_n\" 2>/dev/null || true ;; esac");
    s.lines(
        "  if [ -n \"$_H\" ]; then $SUDO remove \"$_n\"; else $SUDO rm -f -- \"$_f\"; fi; _jc=1",
    );
    s.lines("done");
    s.lines("if [ \"$_jc\" = 1 ]; then $SUDO systemctl daemon-reload; fi");
    s.lines("if [ -n \"$_jt\" ]; then $SUDO systemctl $_nr enable -q $_jt; $SUDO systemctl restart $_jt; fi");
    s.lines("echo jobs_changed=$_jc");
}

/// Inside [`crate::systemd::strategy::restore`]'s loop over `.absent` marks (`$_n` the unit
/// name): a job timer the undone switch added is stopped (its service, if running, is not).
pub fn restore_absent(s: &mut Script, config: &Config) {
    s.line(
        "    case $_n in {}*.timer) $SUDO systemctl stop \"$_n\" 2>/dev/null || true ;; esac",
        &[&prefix(config)],
    );
}

/// Inside restore's loop over saved files (`$_n`): remembers a job timer to start again.
pub fn restore_saved(s: &mut Script, config: &Config) {
    s.line(
        "    case $_n in {}*.timer) _jt=\"$_jt $_n\" ;; esac",
        &[&prefix(config)],
    );
}

/// After restore's daemon-reload: enables and restarts the job timers put back.
pub fn restore_timers(s: &mut Script) {
    s.lines("  if [ -n \"$_jt\" ]; then $SUDO systemctl $_nr enable -q $_jt; $SUDO systemctl restart $_jt; fi");
}

/// Removes release `id` unless a running job holds its lock (then prints `busy=<id>` and
/// keeps it for a later prune); removes its job record with it.
pub fn prune_line(s: &mut Script, layout: &Layout, id: &str) {
    s.line(
        "_r=0; flock -n -x -E 75 {} rm -rf -- {} {} {} || _r=$?",
        &[
            &layout.release(id),
            &layout.release(id),
            &layout.failed(id),
            &layout.jobs_record(id),
        ],
    );
    s.line(
        "case $_r in 0) echo pruned={} ;; 75) echo busy={} ;; *) [ -d {} ] || echo pruned={} ;; esac",
        &[id, id, &layout.release(id), id],
    );
}

/// Prints the state of every job unit installed for this service as `jobprop=<Key>=<value>`
/// lines (one `systemctl show` for all; a `jobprop=` line ends each unit's block).
pub fn state_lines(s: &mut Script, config: &Config) {
    s.line("echo jobs_prefix={}", &[&prefix(config)]);
    s.lines("set --");
    s.line(
        "for _f in {}/{}*.timer; do [ -f \"$_f\" ] || continue; _n=${{_f##*/}}; _n=${{_n%.timer}}; set -- \"$@\" \"$_n.service\" \"$_n.timer\"; done",
        &[UNIT_DIR, &prefix(config)],
    );
    s.lines("if [ $# -gt 0 ]; then systemctl show -p Id -p ActiveState -p Result -p ExecMainStatus -p ExecMainStartTimestamp -p ExecMainStartTimestampMonotonic -p ExecMainExitTimestampMonotonic -p NextElapseUSecRealtime -- \"$@\" 2>/dev/null | sed 's/^/jobprop=/' || true; fi");
}

/// One job's state on one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobState {
    /// The job's name.
    pub name: String,
    /// A run is in progress.
    pub running: bool,
    /// When the last (or the running) run started, as systemd prints it; `None`: never ran.
    pub last_start: Option<String>,
    /// `ok`, `failed (exit N)`, `failed (timeout)`, `failed (signal N)`, `running`, `never`.
    pub result: String,
    /// The last run failed.
    pub failed: bool,
    /// How long the last run took (or the running one has taken).
    pub duration: Option<Duration>,
    /// The next run, as systemd prints it; `None` when the timer is not waiting.
    pub next: Option<String>,
}

/// Parses [`state_lines`]' output.
pub fn parse(stdout: &str) -> Vec<JobState> {
    let Some(pre) = stdout.lines().find_map(|l| l.strip_prefix("jobs_prefix=")) else {
        return Vec::new();
    };
    // One block per unit, separated by an empty line (systemd prints `Id=` among the others,
    // not first).
    let mut blocks: Vec<std::collections::BTreeMap<String, String>> = vec![Default::default()];
    for line in stdout.lines() {
        let Some(kv) = line.strip_prefix("jobprop=") else {
            continue;
        };
        match kv.split_once('=') {
            Some((k, v)) => {
                if let Some(b) = blocks.last_mut() {
                    b.insert(k.to_string(), v.to_string());
                }
            }
            None if kv.is_empty() => blocks.push(Default::default()),
            None => {}
        }
    }
    let mut jobs: Vec<JobState> = Vec::new();
    for b in &blocks {
        let id = b.get("Id").map(String::as_str).unwrap_or("");
        let get = |k: &str| b.get(k).map(String::as_str).unwrap_or("");
        if let Some(name) = id
            .strip_prefix(pre)
            .and_then(|n| n.strip_suffix(".service"))
        {
            let running = matches!(
                get("ActiveState"),
                "active" | "activating" | "deactivating" | "reloading"
            );
            let start: u64 = get("ExecMainStartTimestampMonotonic").parse().unwrap_or(0);
            let exit: u64 = get("ExecMainExitTimestampMonotonic").parse().unwrap_or(0);
            let status = get("ExecMainStatus");
            let (result, failed) = if running {
                ("running".to_string(), false)
            } else if start == 0 {
                ("never".to_string(), false)
            } else {
                match get("Result") {
                    "success" => ("ok".to_string(), false),
                    "exit-code" => (format!("failed (exit {status})"), true),
                    "timeout" => ("failed (timeout)".to_string(), true),
                    "signal" | "core-dump" => (format!("failed (signal {status})"), true),
                    other => (format!("failed ({other})"), true),
                }
            };
            let duration = if start == 0 {
                None
            } else if exit >= start {
                Some(Duration::from_micros(exit - start))
            } else {
                None
            };
            let last = get("ExecMainStartTimestamp");
            jobs.push(JobState {
                name: name.to_string(),
                running,
                last_start: (start != 0 && !last.is_empty() && last != "n/a")
                    .then(|| last.to_string()),
                result,
                failed,
                duration: if running { None } else { duration },
                next: None,
            });
        } else if let Some(name) = id.strip_prefix(pre).and_then(|n| n.strip_suffix(".timer")) {
            let next = get("NextElapseUSecRealtime");
            if let Some(j) = jobs.iter_mut().find(|j| j.name == name) {
                j.next = (!next.is_empty() && next != "n/a").then(|| next.to_string());
            }
        }
    }
    jobs
}

/// The script behind `cargo ship jobs`.
pub fn jobs_script(config: &Config) -> Script {
    let mut s = Script::new(format!("read the jobs of {}", config.systemd.unit));
    s.idempotent();
    state_lines(&mut s, config);
    s
}

fn duration_text(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d.as_millis() < 1000 => format!("{}ms", d.as_millis()),
        Some(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
    }
}

/// `cargo ship jobs <env>`: per host and job, the last run (start, result, duration), the
/// next run and whether one is running.
pub async fn jobs(config: &Config, hosts: &[String], ui: &Ui) -> Result<()> {
    let results = crate::host::each(config, hosts, ui, |conn| async move {
        let script = jobs_script(config.for_host(conn.host()));
        let out = conn.run(&script).await?;
        if out.status != 0 {
            return Err(conn.remote_error(&script, &out));
        }
        Ok((conn.host().to_string(), parse(&out.stdout)))
    })
    .await;
    let mut rows: Vec<(String, JobState)> = Vec::new();
    let mut errors = Vec::new();
    let total = results.len();
    for (host, r) in results {
        match r {
            Err(e) if host.is_empty() => return Err(e),
            Ok((host, states)) => rows.extend(states.into_iter().map(|s| (host.clone(), s))),
            Err(e) => errors.push(e),
        }
    }
    let header = [
        "HOST", "JOB", "LAST RUN", "RESULT", "DURATION", "NEXT RUN", "RUNNING",
    ];
    let mut table: Vec<[String; 7]> = vec![header.map(String::from)];
    for (host, j) in &rows {
        table.push([
            host.clone(),
            j.name.clone(),
            j.last_start.clone().unwrap_or_else(|| "-".into()),
            j.result.clone(),
            duration_text(j.duration),
            j.next.clone().unwrap_or_else(|| "-".into()),
            if j.running { "yes" } else { "no" }.into(),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &table {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut text = String::new();
    if rows.is_empty() {
        text.push_str("no jobs installed\n");
    } else {
        for r in &table {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            text.push_str(cells.join("  ").trim_end());
            text.push('\n');
        }
    }
    let data = json!({
        "jobs": rows.iter().map(|(host, j)| json!({
            "host": host,
            "job": j.name,
            "last_start": j.last_start,
            "result": j.result,
            "failed": j.failed,
            "duration_ms": j.duration.map(|d| d.as_millis() as u64),
            "next": j.next,
            "running": j.running,
        })).collect::<Vec<_>>(),
    });
    ui.emit(Event::Output {
        kind: "jobs".into(),
        text,
        data,
    });
    fleet::fail_if_any("jobs", total, errors)
}

/// The script behind `cargo ship run`: starts the job's service (or joins the run in
/// progress), prints `invocation=<id>`, follows the job's journal as JSON until the run ends,
/// then prints `result=` and `status=` and exits with the job's exit status (124 on timeout,
/// 128+N on signal N). Exits [`EXIT_MISSING`] when the job is not installed here.
pub fn run_script(config: &Config, job: &str) -> Script {
    let svc = service(config, job);
    let mut s = Script::new(format!("run job {job} ({svc}) now"));
    systemd::sudo_prelude(&mut s, config);
    s.line(
        "if [ ! -f {} ]; then echo 'cargo-ship: job' {} 'is not installed on this host: deploy first' >&2; exit {}; fi",
        &[&unit::path(&svc), job, &EXIT_MISSING.to_string()],
    );
    s.lines("_t=$(date '+%Y-%m-%d %H:%M:%S')");
    s.line("_svc={}", &[&svc]);
    s.lines("if systemctl is-active -q \"$_svc\"; then echo 'cargo-ship: a run is in progress; following it' >&2; else $SUDO systemctl start \"$_svc\"; fi");
    // The run's invocation, and when it started (monotonic µs): a line journald stored
    // without the invocation (see `run_line`) belongs to this run when it came after.
    s.lines("_inv=; _mono=; _props=$(systemctl show -p InvocationID -p InactiveExitTimestampMonotonic -- \"$_svc\") || true");
    s.lines("while IFS='=' read -r _k _v; do case $_k in InvocationID) _inv=$_v ;; InactiveExitTimestampMonotonic) _mono=$_v ;; esac; done <<SHIP_EOF");
    s.lines("$_props");
    s.lines("SHIP_EOF");
    s.lines("echo invocation=$_inv; echo started_mono=$_mono");
    s.lines(
        "$SUDO journalctl -u \"$_svc\" --since \"$_t\" -n all -o json --no-pager --follow & _jp=$!",
    );
    s.lines("while :; do _st=$(systemctl show -p ActiveState --value -- \"$_svc\"); _i=$(systemctl show -p InvocationID --value -- \"$_svc\")");
    s.lines("  case $_st in active|activating|deactivating|reloading) [ \"$_i\" = \"$_inv\" ] || break ;; *) break ;; esac; sleep 0.2; done");
    // The follower may still be starting (journalctl reads the journal files first: slow on a
    // busy host) when a short job ends, and journald may not have stored the job's last lines
    // yet (seen on a loaded host: none of them within a second). `journalctl --sync` returns
    // once journald has written out everything sent to it before; then the run's lines are
    // read once more in full, and the client shows each journal entry once (by its cursor).
    // A helper installed before `--sync` was allowed refuses it: a second's wait instead.
    s.lines("$SUDO journalctl --sync 2>/dev/null || sleep 1");
    s.lines("kill $_jp 2>/dev/null || true; wait $_jp 2>/dev/null || true; echo");
    s.lines("$SUDO journalctl -u \"$_svc\" --since \"$_t\" -n all -o json --no-pager || true");
    s.lines("_res=$(systemctl show -p Result --value -- \"$_svc\"); _code=$(systemctl show -p ExecMainStatus --value -- \"$_svc\")");
    s.lines("echo result=$_res; echo status=$_code");
    s.lines("case $_res in success) exit 0 ;; timeout) exit 124 ;; signal|core-dump) exit $((128 + _code)) ;; *) [ \"${_code:-1}\" != 0 ] && exit \"$_code\" || exit 1 ;; esac");
    s
}

/// `cargo ship run <env> <job>`: starts the job now on its hosts (every host, or the one
/// host of an `on = "one"` job), streams its output prefixed by host, and reports the exit
/// code per host.
pub async fn run(config: &Config, job: &str, hosts: &[String], ui: &Ui) -> Result<()> {
    let Some(j) = config.jobs.get(job) else {
        return Err(unknown_job(config, job));
    };
    let env = config.env()?;
    let mut selected: Vec<String> = env.hosts.iter().map(|h| h.to_string()).collect();
    if j.on == JobHosts::One {
        selected.retain(|h| runs_on(config, j, h));
    }
    if !hosts.is_empty() {
        let asked: Vec<String> = fleet::select_hosts(env, hosts)?
            .iter()
            .map(|h| h.to_string())
            .collect();
        let not_job: Vec<&String> = asked.iter().filter(|h| !selected.contains(h)).collect();
        if let Some(h) = not_job.first() {
            return Err(Error::usage(
                format!(
                    "job `{job}` does not run on {h}: it is `on = \"one\"` and runs on {}",
                    selected.join(", ")
                ),
                None,
            ));
        }
        selected = asked;
    }
    let results = crate::host::each(config, &selected, ui, |conn| async move {
        let script = run_script(config.for_host(conn.host()), job);
        run_on(&conn, &script, ui).await
    })
    .await;
    fleet::command_summary("run", results, ui)
}

async fn run_on(conn: &Arc<Connection>, script: &Script, ui: &Ui) -> Result<(HostRow, i32)> {
    let host = conn.host().to_string();
    let mut child = conn.spawn(script).await?;
    let out = child.stdout().take();
    let err = child.stderr().take();
    let host2 = host.clone();
    let pump_out = async move {
        let mut result = None;
        let Some(r) = out else { return result };
        let mut lines = BufReader::new(r).lines();
        let mut inv = String::new();
        let mut started: Option<u64> = None;
        let mut seen = std::collections::HashSet::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(i) = line.strip_prefix("invocation=") {
                inv = i.to_string();
            } else if let Some(m) = line.strip_prefix("started_mono=") {
                started = m.parse().ok();
            } else if let Some(r) = line.strip_prefix("result=") {
                result = Some(r.to_string());
            } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let cursor = v.get("__CURSOR").and_then(|x| x.as_str()).unwrap_or("");
                let Some(message) = run_line(&v, &inv, started) else {
                    continue;
                };
                if seen.insert(cursor.to_string()) {
                    emit_line(ui, &host2, &message);
                }
            }
        }
        result
    };
    let host3 = host.clone();
    let pump_err = async move {
        let Some(r) = err else { return };
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            emit_line(ui, &host3, &line);
        }
    };
    let (result, ()) = tokio::join!(pump_out, pump_err);
    let code = match child.wait().await {
        Ok(st) => st.code().unwrap_or(-1),
        Err(_) => -1,
    };
    let detail = match (code, result.as_deref()) {
        (0, _) => None,
        (c, _) if c == EXIT_MISSING => Some("the job is not installed here".to_string()),
        (_, Some("timeout")) => Some("the job ran longer than its timeout".to_string()),
        (c, _) => Some(format!("the job exited {c}")),
    };
    let row = HostRow {
        outcome: format!("exit {code}"),
        detail,
        ..fleet::row(conn)
    };
    Ok((row, code))
}

/// The message of a journal entry of the job's unit (`journalctl -u`, since the run began)
/// when it is a line of this run: one of its invocation `inv`, or one journald stored without
/// an invocation id at or after the run's start (`started`, monotonic µs). journald looks the
/// id up when it reads a process's first line; on a loaded host it may read a short job's
/// output only after the job has ended, when systemd has dropped the id (seen in CI: `run`
/// showed none of the lines). systemd's own messages about the unit are not the job's.
fn run_line(entry: &serde_json::Value, inv: &str, started: Option<u64>) -> Option<String> {
    let s = |k: &str| entry.get(k).and_then(|x| x.as_str()).unwrap_or("");
    if s("_PID") == "1" {
        return None;
    }
    let ours = match s("_SYSTEMD_INVOCATION_ID") {
        "" => match (started, s("__MONOTONIC_TIMESTAMP").parse::<u64>()) {
            (Some(start), Ok(at)) => at >= start,
            _ => false,
        },
        id => id == inv,
    };
    if !ours {
        return None;
    }
    match entry.get("MESSAGE") {
        Some(serde_json::Value::String(m)) => Some(m.clone()),
        Some(serde_json::Value::Array(bytes)) => Some(
            String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
        ),
        _ => None,
    }
}

fn emit_line(ui: &Ui, host: &str, line: &str) {
    ui.emit(Event::Output {
        kind: "job".into(),
        text: format!("{host}: {line}"),
        data: json!({ "host": host, "line": line }),
    });
}

/// The error for a job name the config does not have.
pub fn unknown_job(config: &Config, job: &str) -> Error {
    let names: Vec<&str> = config.jobs.keys().map(String::as_str).collect();
    if names.is_empty() {
        return Error::usage(
            format!("no job `{job}`: package `{}` has no jobs configured", config.package),
            Some(format!(
                "add one to {}:\n\n    [package.metadata.ship.jobs.{job}]\n    schedule = \"daily\"",
                config.manifest_path.display()
            )),
        );
    }
    Error::usage(
        format!(
            "no job `{job}` in the ship configuration of package `{}`; configured: {}",
            config.package,
            crate::workspace::list(&names)
        ),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::config_with;

    /// A run's lines: its invocation's, and those journald stored without one after the run
    /// began (it read them once the job had ended); not another run's, not earlier ones
    /// without an id, not systemd's own.
    #[test]
    fn run_lines_include_those_journald_stored_without_the_invocation() {
        let e = |pid: &str, inv: Option<&str>, mono: &str, msg: serde_json::Value| {
            let mut v = json!({"_PID": pid, "__MONOTONIC_TIMESTAMP": mono, "MESSAGE": msg});
            if let Some(i) = inv {
                v["_SYSTEMD_INVOCATION_ID"] = json!(i);
            }
            v
        };
        let line = |v: &serde_json::Value| run_line(v, "abc", Some(1000));
        assert_eq!(
            line(&e("7", Some("abc"), "900", json!("mine"))),
            Some("mine".into())
        );
        assert_eq!(
            line(&e("7", None, "1000", json!("late"))),
            Some("late".into())
        );
        assert_eq!(line(&e("7", None, "999", json!("before"))), None);
        assert_eq!(line(&e("7", Some("old"), "2000", json!("other run"))), None);
        assert_eq!(line(&e("1", None, "2000", json!("Started it."))), None);
        assert_eq!(
            line(&e("7", Some("abc"), "1", json!([104, 105]))),
            Some("hi".into())
        );
        assert_eq!(
            run_line(&e("7", None, "5000", json!("late")), "abc", None),
            None
        );
    }

    fn job() -> JobConfig {
        JobConfig {
            bin: "cleanup".into(),
            args: vec!["--older-than".into(), "30 d".into()],
            schedule: "*-*-* 03:00:00".into(),
            on: JobHosts::All,
            timeout: Some(Duration::from_secs(3600)),
            persistent: true,
            randomized_delay: Some(Duration::from_secs(60)),
            environment: [("MODE".to_string(), "$x".to_string())].into(),
        }
    }

    #[test]
    fn service_runs_the_current_release_under_a_shared_lock() {
        let c = config_with("user = \"svc\"\nenvironment = { A = \"1\" }\n");
        let t = render_service(&c, "cleanup", &job());
        assert!(
            t.contains("ExecStart=/bin/sh -c \"cd -P \\\"$$SHIP_DEPLOY_TO/current\\\" && exec 9<. && flock -s 9 && exec \\\"./$$0\\\" \\\"$$@\\\"\" \"cleanup\" \"--older-than\" \"30 d\"\n"),
            "{t}"
        );
        assert!(t.contains("Type=exec\n"), "{t}");
        assert!(
            t.contains("Environment=\"A=1\"\nEnvironment=\"MODE=$x\"\n"),
            "{t}"
        );
        assert!(
            t.contains("Environment=\"SHIP_DEPLOY_TO=/opt/hello\"\n"),
            "{t}"
        );
        assert!(t.contains("Environment=\"SHIP_JOB=cleanup\"\n"), "{t}");
        assert!(t.contains("User=svc\n"), "{t}");
        assert!(t.contains("RuntimeMaxSec=3600\n"), "{t}");
        assert!(!t.contains("[Install]"), "{t}");
        let timer = render_timer(&c, "cleanup", &job());
        assert_eq!(
            timer,
            format!(
                "{}\n[Unit]\nDescription=hello job cleanup schedule (deployed by cargo-ship)\n\n\
                 [Timer]\nOnCalendar=*-*-* 03:00:00\nUnit=hello-job-cleanup.service\nAccuracySec=1s\n\
                 Persistent=true\nRandomizedDelaySec=60\n\n[Install]\nWantedBy=timers.target\n",
                unit::header(&c)
            )
        );
    }

    #[test]
    fn parses_job_state() {
        let out = "jobs_prefix=hello-job-\njobprop=ActiveState=failed\njobprop=Result=exit-code\n\
                   jobprop=ExecMainStatus=3\njobprop=ExecMainStartTimestamp=Sun 2026-12-06 04:00:00 UTC\n\
                   jobprop=ExecMainStartTimestampMonotonic=1000000\njobprop=ExecMainExitTimestampMonotonic=3500000\n\
                   jobprop=Id=hello-job-a.service\njobprop=\njobprop=Id=hello-job-a.timer\njobprop=ActiveState=active\n\
                   jobprop=NextElapseUSecRealtime=Sun 2026-12-06 05:00:00 UTC\njobprop=\n\
                   jobprop=Id=hello-job-b.service\njobprop=ActiveState=inactive\njobprop=Result=success\n\
                   jobprop=ExecMainStatus=0\njobprop=ExecMainStartTimestamp=\n\
                   jobprop=ExecMainStartTimestampMonotonic=0\njobprop=ExecMainExitTimestampMonotonic=0\n";
        let j = parse(out);
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].name, "a");
        assert_eq!(j[0].result, "failed (exit 3)");
        assert!(j[0].failed);
        assert_eq!(j[0].duration, Some(Duration::from_millis(2500)));
        assert_eq!(j[0].next.as_deref(), Some("Sun 2026-12-06 05:00:00 UTC"));
        assert_eq!(j[1].result, "never");
        assert_eq!(j[1].last_start, None);
    }
}
