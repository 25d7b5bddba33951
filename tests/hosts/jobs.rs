//! Issue #21: scheduled jobs beside the service, on real hosts. Each app gets a second binary,
//! `tick`, which prints and appends to `data/ticks.log` (a shared dir) the line
//! `<label> <version> <release dir>`, sleeps, prints `done <line>` and exits with a code:
//! `tick <label> [sleep seconds] [exit code]`.

use std::time::{Duration, Instant};

use crate::app::{App, Run, Spec, EXIT_PREFLIGHT, EXIT_REMOTE, EXIT_ROLLED_BACK};
use crate::host::{self, TestHost};

const EXIT_NOT_HEALTHY: i32 = 10;

const TICK: &str = r#"use std::io::Write;
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cwd = std::env::current_dir().expect("cwd");
    let release = cwd.file_name().expect("dir").to_string_lossy().into_owned();
    let label = args.first().cloned().unwrap_or_default();
    let line = format!("{label} {} {release}", env!("CARGO_PKG_VERSION"));
    println!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open("data/ticks.log") {
        let _ = writeln!(f, "{line}");
    }
    let sleep = args.get(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_secs(sleep));
    println!("done {line}");
    std::process::exit(args.get(2).and_then(|s| s.parse::<i32>().ok()).unwrap_or(0));
}
"#;

/// The `[package.metadata.ship.jobs.<name>]` table running `tick <name> <sleep> <exit>`.
fn job(name: &str, schedule: &str, extra: &[&str], sleep: u32, exit: i32) -> Vec<String> {
    let mut v = vec![
        format!("[package.metadata.ship.jobs.{name}]"),
        "bin = \"tick\"".to_string(),
        format!("args = [\"{name}\", \"{sleep}\", \"{exit}\"]"),
        format!("schedule = \"{schedule}\""),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn new_app(name: &str, port: u16, hosts: Vec<String>, jobs: Vec<String>) -> App {
    let Some(test_hosts) = host::shared_or_skip() else {
        unreachable!()
    };
    app_on(test_hosts, name, port, hosts, jobs)
}

fn app_on(
    test_hosts: &'static host::TestHosts,
    name: &str,
    port: u16,
    hosts: Vec<String>,
    jobs: Vec<String>,
) -> App {
    let spec = Spec {
        hosts,
        ship_lines: vec![format!("bin = \"{name}\"")],
        env_lines: jobs,
        ..Spec::default()
    };
    let app = App::new(test_hosts, name, port, spec);
    app.project.write("src/bin/tick.rs", TICK);
    // A repository with a commit per version, as a team deploys.
    app.in_git()
}

/// `data/ticks.log` lines on `h`.
fn ticks(app: &App, h: &TestHost) -> Vec<String> {
    let out = h.exec(&format!(
        "cat {}/shared/data/ticks.log 2>/dev/null",
        app.deploy_to()
    ));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `h`'s ticks.log has a line equal to `line`.
fn wait_tick(app: &App, h: &TestHost, line: &str, run: Option<&Run>) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if ticks(app, h).iter().any(|l| l == line) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    app.fail(
        &format!(
            "{}: no tick {line:?} within 30s; ticks: {:?}; timers: {}",
            h.name,
            ticks(app, h),
            h.exec_ok("systemctl list-timers --all --no-pager")
        ),
        run,
    );
}

fn unit_exists(h: &TestHost, unit: &str) -> bool {
    h.exec(&format!("test -f /etc/systemd/system/{unit}"))
        .status
        .success()
}

/// Jobs every 5 s run on every host from the current release; `on = "one"` only on the first
/// host; `run` streams one run and reports its exit code per host; `jobs` shows each job per
/// host; a failed last run is a problem for `status`; a job removed from the config loses its
/// timer with the next deploy, and a rollback puts the previous set back.
#[test]
fn issue_21_jobs_run_from_the_current_release_and_follow_deploys_and_rollbacks() {
    if host::shared_or_skip().is_none() {
        return;
    }
    let name = "ship-jobs21";
    let mut jobs = job("every", "*:*:0/5", &[], 0, 0);
    jobs.extend(job("once", "*:*:0/5", &["on = \"one\""], 0, 0));
    jobs.extend(job("fail", "2099-01-01", &["timeout = \"1m\""], 0, 3));
    let mut app = new_app(
        name,
        18211,
        vec!["host0".into(), "host1".into()],
        jobs.clone(),
    );
    let (h0, h1) = (app.host(0), app.host(1));
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    let r1b = app.deployed_release(&first, "host1");
    wait_tick(&app, h0, &format!("every 0.1.0 {r1}"), Some(&first));
    wait_tick(&app, h1, &format!("every 0.1.0 {r1b}"), Some(&first));
    wait_tick(&app, h0, &format!("once 0.1.0 {r1}"), Some(&first));
    app.check(
        unit_exists(h0, "ship-jobs21-job-once.timer")
            && !unit_exists(h1, "ship-jobs21-job-once.timer")
            && !unit_exists(h1, "ship-jobs21-job-once.service")
            && !ticks(&app, h1).iter().any(|l| l.starts_with("once ")),
        "on = \"one\" runs on host0 only",
        Some(&first),
    );
    app.check_eq(
        h0.unit_property("ship-jobs21-job-every.service", "WorkingDirectory"),
        String::new(),
        "the job resolves current itself (no WorkingDirectory=)",
        Some(&first),
    );

    // `run`: the job's output, prefixed by its host; exit code per host.
    let run = app.run_expect(
        &["run", "test", "fail", "--message-format", "json"],
        EXIT_REMOTE,
    );
    let lines: Vec<String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "output" && e["kind"] == "job")
        .map(|e| {
            format!(
                "{}: {}",
                e["data"]["host"].as_str().unwrap(),
                e["data"]["line"].as_str().unwrap()
            )
        })
        .collect();
    app.check_eq(
        lines
            .iter()
            .filter(|l| l.starts_with("host0: "))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            format!("host0: fail 0.1.0 {r1}"),
            format!("host0: done fail 0.1.0 {r1}"),
        ],
        "run streams host0's output of the job",
        Some(&run),
    );
    for (alias, rel) in [("host0", &r1), ("host1", &r1b)] {
        let row = run.row(alias);
        app.check(
            row["outcome"] == "exit 3" && row["detail"] == "the job exited 3",
            format!("{alias} ran the job, exit 3 ({rel}): {row}"),
            Some(&run),
        );
    }
    let once = app.run_expect(&["run", "test", "once"], 0);
    app.check(
        once.stdout.contains(&format!(
            "host0: once 0.1.0 {r1}\nhost0: done once 0.1.0 {r1}\n"
        )) && !once.stdout.contains("host1"),
        "run of an on = \"one\" job runs on host0 only",
        Some(&once),
    );

    // `jobs`: per host and job; JSON too.
    // Asked as the 5-second job's timer elapses, systemd has no next run for it for a moment:
    // such an answer is asked again (the other fields are checked on whichever answer stays).
    let mut asked = 0;
    let (js, rows) = loop {
        asked += 1;
        let js = app.run_expect(&["jobs", "test", "--message-format", "json"], 0);
        let ev = js
            .events()
            .into_iter()
            .find(|e| e["event"] == "output" && e["kind"] == "jobs")
            .unwrap_or_else(|| app.fail("no jobs output", Some(&js)));
        let rows = ev["data"]["jobs"].as_array().cloned().unwrap_or_default();
        if asked == 3 || rows.first().is_some_and(|r| r["next"].as_str().is_some()) {
            break (js, rows);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["host"].as_str().unwrap(),
                r["job"].as_str().unwrap()
            )
        })
        .collect();
    app.check_eq(
        names,
        [
            "host0 every",
            "host0 fail",
            "host0 once",
            "host1 every",
            "host1 fail",
        ]
        .map(String::from)
        .to_vec(),
        "jobs lists every job per host",
        Some(&js),
    );
    let fail0 = &rows[1];
    app.check(
        fail0["result"] == "failed (exit 3)"
            && fail0["failed"] == true
            && fail0["running"] == false
            && fail0["next"]
                .as_str()
                .is_some_and(|n| n.contains("2099-01-01"))
            && rows[0]["next"].as_str().is_some(),
        format!("the failed job's row: {fail0}"),
        Some(&js),
    );
    let human = app.run_expect(&["jobs", "test"], 0);
    app.check(
        human.stdout.lines().next().is_some_and(|l| {
            l.split_whitespace().collect::<Vec<_>>()
                == [
                    "HOST", "JOB", "LAST", "RUN", "RESULT", "DURATION", "NEXT", "RUN", "RUNNING",
                ]
        }) && human.stdout.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"host1")
                && w.get(1) == Some(&"fail")
                && l.contains("failed (exit 3)")
                && l.contains("2099-01-01")
                && w.last() == Some(&"no")
        }),
        "jobs' table",
        Some(&human),
    );
    let st = app.run_expect(&["status", "test"], EXIT_NOT_HEALTHY);
    app.check(
        st.stdout
            .contains("problem: host0: job fail failed (exit 3) in its last run (started ")
            && st
                .stdout
                .contains("problem: host1: job fail failed (exit 3) in its last run (started "),
        "status reports the failed last runs",
        Some(&st),
    );
    let logs = app.run_expect(&["logs", "test", "--job", "fail", "--host", "host1"], 0);
    app.check(
        logs.stdout.contains(&format!(": done fail 0.1.0 {r1b}")),
        "logs --job shows the job's journal",
        Some(&logs),
    );
    let unknown = app.run_expect(&["logs", "test", "--job", "nope"], 2);
    app.check(
        unknown.stderr.contains(
            "error: no job `nope` in the ship configuration of package `ship-jobs21`; configured: `every`, `fail`, `once`",
        ),
        "an unknown job is named",
        Some(&unknown),
    );

    // A schedule systemd on the host does not take is refused in preflight, before any change.
    app.update(|s| s.env_lines = job("every", "*-*-* 25:00:00", &[], 0, 0));
    let bad = app.deploy(&[], EXIT_PREFLIGHT);
    app.check(
        bad.events().iter().any(|e| {
            e["event"] == "error"
                && e["message"]
                    == "host0: preflight failed: package.metadata.ship.jobs.every.schedule: systemd on this host does not accept the calendar expression \"*-*-* 25:00:00\" (systemd-analyze calendar)"
        }) && app.current(h0).as_deref() == Some(r1.as_str()),
        "preflight refuses the schedule",
        Some(&bad),
    );
    // v0.2.0 without `once`: its timer goes with the deploy; `every` runs the new release.
    let without_once: Vec<String> = job("every", "*:*:0/5", &[], 0, 0)
        .into_iter()
        .chain(job("fail", "2099-01-01", &["timeout = \"1m\""], 0, 3))
        .collect();
    app.update(|s| {
        s.version = "0.2.0".into();
        s.env_lines = without_once;
    });
    let second = app.deploy(&[], 0);
    let r2 = app.deployed_release(&second, "host0");
    app.check(
        !unit_exists(h0, "ship-jobs21-job-once.timer")
            && !unit_exists(h0, "ship-jobs21-job-once.service")
            && h0
                .exec_ok("systemctl is-active ship-jobs21-job-once.timer || true")
                .trim()
                == "inactive",
        "the removed job's timer is gone from host0",
        Some(&second),
    );
    wait_tick(&app, h0, &format!("every 0.2.0 {r2}"), Some(&second));
    app.check(
        app.read(h0, &format!(".ship/jobs/{r2}/ship-jobs21-job-every.timer"))
            .contains("OnCalendar=*:*:0/5\n"),
        "the job set is recorded with the release",
        Some(&second),
    );

    // Rollback: release 1's job set (with `once`) comes back with it.
    let back = app.run_expect(&["rollback", "test", "--yes"], 0);
    app.check(
        unit_exists(h0, "ship-jobs21-job-once.timer")
            && h0
                .exec_ok("systemctl is-active ship-jobs21-job-once.timer || true")
                .trim()
                == "active"
            && !unit_exists(h1, "ship-jobs21-job-once.timer"),
        "rollback restores the previous job set",
        Some(&back),
    );
    let n = ticks(&app, h0).len();
    let start = Instant::now();
    loop {
        let t = ticks(&app, h0);
        if t[n..].iter().any(|l| l == &format!("once 0.1.0 {r1}"))
            && t[n..].iter().any(|l| l == &format!("every 0.1.0 {r1}"))
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            app.fail(
                &format!(
                    "after the rollback, the jobs do not run release 1: {:?}",
                    &t[n..]
                ),
                Some(&back),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // An unhealthy release with another job set is reverted: the job units go back with the
    // app units (the lines the fleet rollback and the dead-man's switch run too).
    let other: Vec<String> = job("every", "*:*:0/5", &[], 0, 0)
        .into_iter()
        .chain(job("fresh", "*:*:0/5", &[], 0, 0))
        .collect();
    app.update(|s| {
        s.version = "0.3.0".into();
        s.env_lines = other;
    });
    let bad = app.deploy(&["--features", "unhealthy"], EXIT_ROLLED_BACK);
    app.check(
        unit_exists(h0, "ship-jobs21-job-once.timer")
            && unit_exists(h0, "ship-jobs21-job-fail.service")
            && !unit_exists(h0, "ship-jobs21-job-fresh.timer")
            && !unit_exists(h0, "ship-jobs21-job-fresh.service")
            && h0.exec_ok("systemctl is-active ship-jobs21-job-once.timer ship-jobs21-job-fresh.timer || true") == "active\ninactive\n",
        "the revert puts the previous job units back",
        Some(&bad),
    );
}

/// A job still running (a 60 s sleep) while two deploys and a prune go by is not killed,
/// finishes on the release it started with, and that release stays until it has ended.
#[test]
fn issue_21_a_running_job_keeps_its_release_through_deploys_and_prune() {
    if host::shared_or_skip().is_none() {
        return;
    }
    let name = "ship-jobsrun21";
    let jobs = job("sleepy", "2099-01-01", &[], 60, 0);
    let mut app = new_app(name, 18212, vec!["host2".into()], jobs.clone());
    app.update(|s| s.keep_releases = 1);
    // Build every version first: the deploys must fit in the job's 60 s (with the whole
    // suite running beside it, two deploys and a prune were seen to take more than 20 s).
    let mut artifacts = Vec::new();
    for v in ["0.1.0", "0.2.0", "0.3.0"] {
        app.update(|s| s.version = v.into());
        app.run_expect(&["build"], 0);
        artifacts.push(app.artifact_path(v).display().to_string());
    }
    let h = app.host(2);
    let first = app.deploy(&["--artifact", &artifacts[0]], 0);
    let r1 = app.deployed_release(&first, "host2");
    let svc = "ship-jobsrun21-job-sleepy.service";
    h.exec_ok(&format!("systemctl start {svc}"));
    let inv = h.unit_property(svc, "InvocationID");
    wait_tick(&app, h, &format!("sleepy 0.1.0 {r1}"), Some(&first));

    app.update(|s| s.version = "0.2.0".into());
    let second = app.deploy(&["--artifact", &artifacts[1]], 0);
    app.update(|s| s.version = "0.3.0".into());
    let third = app.deploy(&["--artifact", &artifacts[2]], 0);
    let r3 = app.deployed_release(&third, "host2");
    let prune = app.run_expect(&["prune", "test"], 0);
    app.check(
        h.unit_property(svc, "ActiveState") == "active"
            && h.unit_property(svc, "InvocationID") == inv,
        "the job is still running, the same run",
        Some(&prune),
    );
    app.check(
        app.releases(h).contains(&r1) && app.current(h).as_deref() == Some(r3.as_str()),
        format!(
            "release {r1} stays while the job runs from it: {:?}",
            app.releases(h)
        ),
        Some(&third),
    );
    let _ = second;
    let js = app.run_expect(&["jobs", "test", "--message-format", "json"], 0);
    let row = js
        .events()
        .into_iter()
        .find(|e| e["event"] == "output" && e["kind"] == "jobs")
        .map(|e| e["data"]["jobs"][0].clone())
        .unwrap_or_default();
    app.check(
        row["job"] == "sleepy"
            && row["running"] == true
            && row["result"] == "running"
            && row["next"]
                .as_str()
                .is_some_and(|n| n.contains("2099-01-01")),
        format!("jobs shows the run in progress: {row}"),
        Some(&js),
    );
    // It ends on its own release, successfully.
    let start = Instant::now();
    while h.unit_property(svc, "ActiveState") == "active" {
        if start.elapsed() > Duration::from_secs(90) {
            app.fail("the job did not end", None);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    app.check_eq(
        (
            h.unit_property(svc, "Result"),
            h.unit_property(svc, "ExecMainStatus"),
        ),
        ("success".to_string(), "0".to_string()),
        "the job finished normally",
        None,
    );
    let journal = h.exec_ok(&format!("journalctl -u {svc} -o cat --no-pager"));
    app.check(
        journal.contains(&format!("done sleepy 0.1.0 {r1}")),
        format!("the job finished on release {r1}: {journal}"),
        None,
    );
    let prune = app.run_expect(&["prune", "test"], 0);
    app.check(
        !app.releases(h).contains(&r1) && !app.exists(h, &format!(".ship/jobs/{r1}")),
        format!("once the job ended, prune removes release {r1}"),
        Some(&prune),
    );
}

/// After `cargo ship setup`, the deploy user installs, runs and reads a job through the root
/// helper; the job runs as the service user.
#[test]
fn issue_21_jobs_as_the_deploy_user_after_setup() {
    if host::shared_or_skip().is_none() {
        return;
    }
    let name = "ship-jobsetup21";
    let mut app = new_app(
        name,
        18213,
        vec!["host1".into()],
        job("every", "*:*:0/5", &[], 0, 0),
    );
    // Setup (as root, the admin), then every command as the deploy user.
    app.as_deploy_user("jobber", "jobsvc");
    let h = app.host(1);
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "jobber@host1");
    wait_tick(&app, h, &format!("every 0.1.0 {r1}"), Some(&first));
    app.check_eq(
        h.unit_property("ship-jobsetup21-job-every.service", "User"),
        "jobsvc".to_string(),
        "the job runs as the service user",
        Some(&first),
    );
    let run = app.run_expect(&["run", "test", "every"], 0);
    app.check(
        run.stdout.contains(&format!(
            "jobber@host1: every 0.1.0 {r1}\njobber@host1: done every 0.1.0 {r1}\n"
        )),
        "run through the helper streams the job's output",
        Some(&run),
    );
    let logs = app.run_expect(&["logs", "test", "--job", "every", "-n", "5"], 0);
    app.check(
        logs.stdout.contains(&format!("done every 0.1.0 {r1}")),
        "logs --job through the helper",
        Some(&logs),
    );
    // An unhealthy release without the job is reverted through the helper: the job's units
    // come back (as setup fixed them) and its timer runs again.
    app.update(|s| {
        s.version = "0.2.0".into();
        s.env_lines = Vec::new();
    });
    let bad = app.deploy(&["--features", "unhealthy"], EXIT_ROLLED_BACK);
    app.check(
        unit_exists(h, "ship-jobsetup21-job-every.timer")
            && unit_exists(h, "ship-jobsetup21-job-every.service")
            && h.exec_ok("systemctl is-active ship-jobsetup21-job-every.timer || true")
                == "active\n",
        "the revert through the helper puts the removed job back",
        Some(&bad),
    );
    // Removing the job: its units go, through the helper.
    app.update(|s| {
        s.version = "0.2.0".into();
        s.env_lines = Vec::new();
    });
    let second = app.deploy(&[], 0);
    app.check(
        !unit_exists(h, "ship-jobsetup21-job-every.timer")
            && !unit_exists(h, "ship-jobsetup21-job-every.service"),
        "the deploy user removed the job's units",
        Some(&second),
    );
    // The helper refuses a job unit the config did not have at setup time.
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&h.ssh_config)
        .args(["-l", "jobber", &h.name, "--"])
        .arg("sudo -n /usr/local/lib/cargo-ship/ship-jobsetup21/ship-root install ship-jobsetup21-job-other.timer")
        .output()
        .expect("ssh");
    app.check(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains(
                "ship-root: refused: install ship-jobsetup21-job-other.timer: cargo ship setup fixed no unit file of that name for ship-jobsetup21; run cargo ship setup again (it needs root)",
            ),
        "ship-root refuses a job the config did not have at setup",
        Some(&second),
    );
}

/// Lets journald run again on the host, whatever happens.
struct JournaldBack(&'static TestHost);

impl Drop for JournaldBack {
    fn drop(&mut self) {
        self.0
            .exec("pkill -CONT -x systemd-journal; rm -f /run/late-journald.done");
    }
}

/// A loaded host's journald may read a job's output only after the job has ended (seen in CI:
/// `run` printed none of host0's lines). By then systemd has removed the unit's invocation id,
/// so journald stores the lines without `_SYSTEMD_INVOCATION_ID`; `run` still shows them as
/// this run's (they are the unit's, written after this run started). Reproduced exactly, on a
/// host of its own: a watcher on the host stops journald before the job's first line and lets
/// it go on once the job has failed (no ssh login meanwhile: logins wait for journald).
#[test]
fn issue_21_run_shows_the_lines_journald_stored_after_the_job_ended() {
    if host::shared_or_skip().is_none() {
        return;
    }
    let Ok(own) = host::TestHosts::boot(1, host::BootOptions::default()) else {
        panic!("could not boot a test host of its own");
    };
    // App keeps a 'static reference; the hosts go down with the test process (--owner-pid).
    let own: &'static host::TestHosts = Box::leak(Box::new(own));
    let name = "ship-jobs21late";
    // Prints a line, prints `done ...`, exits 3.
    let jobs = job("fail", "2099-01-01", &["timeout = \"1m\""], 0, 3);
    let app = app_on(own, name, 18214, vec!["host0".into()], jobs);
    let h0 = app.host(0);
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    let svc = format!("{name}-job-fail.service");

    // The job's main process starts 3 s after the unit (a drop-in's ExecStartPre): the
    // watcher stops journald meanwhile, before the job's first line (time to spare on a loaded host).
    h0.exec_ok(&format!(
        "mkdir -p /etc/systemd/system/{svc}.d && printf '[Service]\\nExecStartPre=/bin/sleep 3\\n' > /etc/systemd/system/{svc}.d/late.conf && systemctl daemon-reload"
    ));
    let _back = JournaldBack(h0);
    h0.exec_ok(&format!(
        "svc={svc}; before=$(systemctl show -p InvocationID --value -- $svc)
nohup sh -c 'trap \"pkill -CONT -x systemd-journal; touch /run/late-journald.done\" EXIT
  i=0; while [ $i -lt 1200 ]; do
    [ \"$(systemctl show -p InvocationID --value -- $0)\" != \"$1\" ] && [ \"$(systemctl show -p ActiveState --value -- $0)\" = activating ] && break
    sleep 0.05; i=$((i + 1)); done
  pkill -STOP -x systemd-journal
  i=0; while [ $i -lt 1200 ] && [ \"$(systemctl show -p ActiveState --value -- $0)\" != failed ]; do sleep 0.05; i=$((i + 1)); done
  sleep 0.3' \"$svc\" \"$before\" >/dev/null 2>&1 &"
    ));
    let run = app.run(&["run", "test", "fail", "--message-format", "json"]);
    let watched = h0.exec("test -e /run/late-journald.done").status.success();
    let lines: Vec<String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "output" && e["kind"] == "job")
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .collect();
    app.check_eq(
        (watched, run.code, lines),
        (
            true,
            EXIT_REMOTE,
            vec![
                format!("host0: fail 0.1.0 {r1}"),
                format!("host0: done fail 0.1.0 {r1}"),
            ],
        ),
        "the watcher's end, run's exit and output with journald stopped meanwhile",
        Some(&run),
    );
}
