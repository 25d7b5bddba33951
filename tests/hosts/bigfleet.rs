//! Issue #19: big fleets that tolerate failure, on ten real hosts of their own (`fl1`..`fl10`,
//! booted once for this module): ramps with a pause between batches, the failure budget
//! (`max_fail`), deferred unreachable hosts and convergence on the next run, promote / abort
//! of a deploy waiting for approval, and a deploy killed during a pause.

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::app::{App, Spec, EXIT_ROLLED_BACK};
use crate::host::{BootOptions, TestHost, TestHosts};

/// `deployed with some hosts failed or deferred` (README, Exit codes).
const EXIT_PARTIAL: i32 = 11;
const N: usize = 10;

static FLEET: OnceLock<Option<TestHosts>> = OnceLock::new();

/// Tests share the ten hosts and run in parallel; the one that takes a host's link down runs
/// alone (write), the others together (read).
static LINKS: RwLock<()> = RwLock::new(());

fn shared_links() -> RwLockReadGuard<'static, ()> {
    LINKS.read().unwrap_or_else(|e| e.into_inner())
}

/// The ten hosts of this module, booted on first use (None: skipped, as the shared hosts are).
fn fleet() -> Option<&'static TestHosts> {
    FLEET
        .get_or_init(|| {
            TestHosts::boot(
                N,
                BootOptions {
                    alias_prefix: Some("fl".into()),
                    timeout: Some(Duration::from_secs(180)),
                    ..BootOptions::default()
                },
            )
            .ok()
        })
        .as_ref()
}

fn aliases() -> Vec<String> {
    (1..=N).map(|i| format!("fl{i}")).collect()
}

fn spec(env_lines: &[&str]) -> Spec {
    Spec {
        hosts: aliases(),
        timeout: "6s".into(),
        settle: "0s".into(),
        env_lines: env_lines.iter().map(|s| s.to_string()).collect(),
        ..Spec::default()
    }
}

/// Every host of the app serves `version`.
fn all_on(app: &App, version: &str) {
    for h in app.hosts.hosts.iter() {
        app.assert_version(h, version, None);
    }
}

fn ms(v: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp"))
        .expect("an RFC 3339 timestamp")
        .timestamp_millis()
}

/// `batch = [1, "30%", "100%"]` with `pause = "2s"` on ten hosts: three batches of 1, 3 and 6
/// hosts in that order, each pause between two batches (and none after the last), as the
/// JSON `rollout` events show with their timestamps; every host ends on the release.
#[test]
fn issue_19_ramp_with_pause_runs_the_batches_in_order() {
    let Some(hosts) = fleet() else { return };
    let _links = shared_links();
    let app = App::new(
        hosts,
        "ship-ramp",
        18901,
        spec(&["batch = [1, \"30%\", \"100%\"]", "pause = \"2s\""]),
    );
    let run = app.deploy(&[], 0);
    all_on(&app, "0.1.0");
    let events: Vec<serde_json::Value> = run
        .events()
        .into_iter()
        .filter(|e| e["event"] == "output" && e["kind"] == "rollout")
        .map(|e| e["data"].clone())
        .collect();
    let phases: Vec<(String, usize)> = events
        .iter()
        .map(|d| {
            let n = match d["phase"].as_str() {
                Some("batch") => d["hosts"].as_array().map_or(0, |h| h.len()),
                _ => d["watched"].as_array().map_or(0, |h| h.len()),
            };
            (d["phase"].as_str().unwrap_or_default().to_string(), n)
        })
        .collect();
    app.check_eq(
        phases,
        vec![
            ("batch".into(), 1),
            ("pause".into(), 1),
            ("batch".into(), 3),
            ("pause".into(), 4),
            ("batch".into(), 6),
        ],
        "batches and pauses, in order, with their hosts",
        Some(&run),
    );
    app.check_eq(
        events[0]["hosts"].clone(),
        serde_json::json!(["fl1"]),
        "the first batch is the first host",
        Some(&run),
    );
    // Each phase starts after the previous one ended; each pause lasted its 2s at least.
    for pair in events.windows(2) {
        app.check(
            ms(&pair[0]["ended_at"]) <= ms(&pair[1]["started_at"]),
            format!("{} ended before {} started", pair[0], pair[1]),
            Some(&run),
        );
    }
    for p in events.iter().filter(|d| d["phase"] == "pause") {
        app.check(
            ms(&p["ended_at"]) - ms(&p["started_at"]) >= 2000,
            format!("the pause watched the hosts for 2s: {p}"),
            Some(&run),
        );
    }
}

/// Two of ten hosts fail the new release's health check. With `max_fail = 2` the other eight
/// end on the new release, the two are back on the old one, and the deploy exits 11 naming
/// them (GitHub's `result` word: partial). With `max_fail = 1` the budget is exceeded: every
/// host is put back (exit 8).
#[test]
fn issue_19_failure_budget_keeps_the_healthy_hosts_or_puts_everything_back() {
    let Some(hosts) = fleet() else { return };
    let _links = shared_links();
    let name = "ship-budget";
    let marker = format!("/tmp/fail-{name}");
    let mut s = spec(&["max_fail = 2"]);
    s.health_command = Some(format!("test ! -e {marker}"));
    let mut app = App::new(hosts, name, 18902, s);
    app.deploy(&[], 0);
    let bad: Vec<&TestHost> = vec![app.host(3), app.host(7)];
    for h in &bad {
        h.exec_ok(&format!("touch {marker}"));
    }
    app.update(|s| s.version = "0.2.0".into());
    let run = app.deploy(&[], EXIT_PARTIAL);
    for (i, h) in app.hosts.hosts.iter().enumerate() {
        let failing = i == 3 || i == 7;
        app.assert_version(h, if failing { "0.1.0" } else { "0.2.0" }, Some(&run));
        app.check_eq(
            run.row(&h.name)["outcome"].as_str(),
            Some(if failing { "rolled back" } else { "deployed" }),
            &format!("outcome of {}", h.name),
            Some(&run),
        );
        app.check(
            !app.exists(h, ".ship/lock"),
            format!("the lock on {} must be released", h.name),
            Some(&run),
        );
    }
    let error = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "error")
        .unwrap_or_else(|| app.fail("no error event", Some(&run)));
    let message = error["message"].as_str().unwrap_or_default().to_string();
    app.check(
        message.contains(
            "is live on 8 of 10 host(s); 2 failed and put back on their old release: fl4 (",
        ) && message.contains(", fl8 ("),
        format!("the error names the two hosts: {message}"),
        Some(&run),
    );
    app.check_eq(
        error["exit_code"].as_i64(),
        Some(11),
        "exit code",
        Some(&run),
    );

    // `cargo ship status` shows the drift.
    let status = app.run(&["status", "test"]);
    app.check(
        status.code == 10
            && status.all_output().contains("0.1.0")
            && status.all_output().contains("0.2.0"),
        "status shows hosts on two versions (exit 10)",
        Some(&status),
    );

    // The same failure with max_fail = 1: everything back on what it ran.
    app.update(|s| {
        s.version = "0.3.0".into();
        s.env_lines = vec!["max_fail = 1".into()];
    });
    let run = app.deploy(&[], EXIT_ROLLED_BACK);
    for (i, h) in app.hosts.hosts.iter().enumerate() {
        let failing = i == 3 || i == 7;
        app.assert_version(h, if failing { "0.1.0" } else { "0.2.0" }, Some(&run));
    }
    for h in &bad {
        h.exec_ok(&format!("rm -f {marker}"));
    }
}

/// The host side of a host's veth pair on the run's bridge (scripts/testhosts: `sv<hash>-<i>`
/// for machine `ship-<hash>-<i>`).
fn veth(h: &TestHost) -> String {
    h.machine.replacen("ship-", "sv", 1)
}

fn link(h: &TestHost, state: &str) {
    let out = std::process::Command::new("ip")
        .args(["link", "set", &veth(h), state])
        .output()
        .expect("ip link");
    assert!(
        out.status.success(),
        "ip link set {} {state}: {out:?}",
        veth(h)
    );
}

/// With `unreachable = "defer"`, one host whose link is down is deferred: the nine others
/// deploy, the deploy exits 11 naming it, and once its link is back the same deploy converges
/// only that host (the others are `unchanged`: not restarted).
#[test]
fn issue_19_unreachable_host_is_deferred_then_converged() {
    let Some(hosts) = fleet() else { return };
    let _alone = LINKS.write().unwrap_or_else(|e| e.into_inner());
    let mut app = App::new(
        hosts,
        "ship-defer",
        18903,
        spec(&["unreachable = \"defer\"", "max_fail = \"10%\""]),
    );
    app.deploy(&[], 0);
    let down = app.host(9);
    app.update(|s| s.version = "0.2.0".into());
    link(down, "down");
    let run = app.deploy(&[], EXIT_PARTIAL);
    link(down, "up");
    app.check_eq(
        run.row("fl10")["outcome"].as_str(),
        Some("deferred"),
        "fl10 is deferred",
        Some(&run),
    );
    for h in app.hosts.hosts.iter() {
        app.assert_version(
            h,
            if h.name == "fl10" { "0.1.0" } else { "0.2.0" },
            Some(&run),
        );
    }
    app.check(
        run.all_output()
            .contains("1 deferred (left on their old release): fl10 ("),
        "the error names the deferred host",
        Some(&run),
    );

    let again = app.deploy(&[], 0);
    for h in app.hosts.hosts.iter() {
        app.assert_version(h, "0.2.0", Some(&again));
        app.check_eq(
            again.row(&h.name)["outcome"].as_str(),
            Some(if h.name == "fl10" {
                "deployed"
            } else {
                "unchanged"
            }),
            &format!("outcome of {} on the second run", h.name),
            Some(&again),
        );
    }

    // Nothing to change where the deploy reaches, one host deferred: still exit 11.
    link(down, "down");
    let third = app.deploy(&[], EXIT_PARTIAL);
    link(down, "up");
    app.check(
        third
            .all_output()
            .contains("is live on 9 of 10 host(s); 1 deferred (left on their old release): fl10 ("),
        "a deploy with nothing to restart still names the deferred host",
        Some(&third),
    );
}

/// Starts `cargo ship deploy test <extra>` in the background (stdout/stderr to files).
fn spawn_deploy(app: &App, extra: &[&str]) -> Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-ship"));
    cmd.args(["ship", "deploy", "test"])
        .args(extra)
        .current_dir(&app.project.root)
        .env("CARGO_TERM_COLOR", "never")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(app.project.path("deploy.stderr")).expect("stderr file"))
        .process_group(0);
    cmd.spawn().expect("spawn cargo-ship")
}

fn stderr_of(app: &App) -> String {
    std::fs::read_to_string(app.project.path("deploy.stderr")).unwrap_or_default()
}

/// Waits until `cond` holds (polling every 200 ms), failing after `secs`.
fn wait_for(app: &App, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            app.fail(
                &format!(
                    "timed out waiting until {what}\n--- deploy stderr ---\n{}",
                    stderr_of(app)
                ),
                None,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_exit(app: &App, child: &mut Child, secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            app.fail(
                &format!("the deploy did not end\n--- stderr ---\n{}", stderr_of(app)),
                None,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `--pause-for-approval` stops after the first batch (fl1) until `cargo ship promote test`
/// from a second process: then every host gets the release. A second deploy, answered with
/// `cargo ship abort test`, puts fl1 back and never switches the others.
#[test]
fn issue_19_promote_and_abort_from_a_second_process() {
    let Some(hosts) = fleet() else { return };
    let _links = shared_links();
    // A short confirm_timeout: waiting longer than that for the promote, fl1 stays on the
    // new release (its dead-man's switch is extended while it waits).
    let mut s = spec(&["batch = [1, \"100%\"]"]);
    s.health_lines = vec!["confirm_timeout = \"15s\"".into()];
    let mut app = App::new(hosts, "ship-approve", 18904, s);
    app.deploy(&[], 0);
    let first = app.host(0);
    app.update(|s| s.version = "0.2.0".into());
    let mut child = spawn_deploy(&app, &["--pause-for-approval"]);
    wait_for(&app, 120, "the deploy waits for approval on fl1", || {
        app.exists(first, ".ship/lock/approval")
    });
    app.assert_version(first, "0.2.0", None);
    app.assert_version(app.host(1), "0.1.0", None);
    std::thread::sleep(Duration::from_secs(18));
    app.check(
        app.exists(first, ".ship/lock/approval") && app.version(first).as_deref() == Ok("0.2.0"),
        format!(
            "fl1 still waits on the new release after more than confirm_timeout\n{}",
            stderr_of(&app)
        ),
        None,
    );
    let promote = app.run(&["promote", "test"]);
    app.check_eq(promote.code, 0, "cargo ship promote", Some(&promote));
    let code = wait_exit(&app, &mut child, 120);
    app.check_eq(
        code,
        0,
        &format!("the promoted deploy's exit code\n{}", stderr_of(&app)),
        None,
    );
    all_on(&app, "0.2.0");

    app.update(|s| s.version = "0.3.0".into());
    let mut child = spawn_deploy(&app, &["--pause-for-approval"]);
    wait_for(&app, 120, "the deploy waits for approval on fl1", || {
        app.exists(first, ".ship/lock/approval")
    });
    app.assert_version(first, "0.3.0", None);
    let abort = app.run(&["abort", "test"]);
    app.check_eq(abort.code, 0, "cargo ship abort", Some(&abort));
    let code = wait_exit(&app, &mut child, 120);
    app.check(
        code != 0,
        format!("the aborted deploy fails (exit {code})"),
        None,
    );
    all_on(&app, "0.2.0");
    let none = app.run(&["promote", "test"]);
    app.check(
        none.code == 2
            && none
                .stderr
                .contains("no deploy of environment `test` is waiting for approval"),
        "promote with nothing waiting is refused",
        Some(&none),
    );
}

/// A deploy killed (SIGKILL to the process alone) during the pause after its first batch:
/// the two switched hosts revert by themselves (the dead-man's switch stayed armed), the
/// others never switched: every host serves the old release.
#[test]
fn issue_19_deploy_killed_during_a_pause_reverts_the_switched_hosts() {
    let Some(hosts) = fleet() else { return };
    let _links = shared_links();
    let mut s = spec(&[]);
    s.health_lines = vec!["confirm_timeout = \"12s\"".into()];
    let mut app = App::new(hosts, "ship-killpause", 18905, s);
    app.deploy(&[], 0);
    let old: Vec<Option<String>> = app.hosts.hosts.iter().map(|h| app.current(h)).collect();
    app.update(|s| {
        s.version = "0.2.0".into();
        s.env_lines = vec!["batch = [2, \"100%\"]".into(), "pause = \"5m\"".into()];
    });
    let mut child = spawn_deploy(&app, &[]);
    wait_for(&app, 120, "the deploy pauses after its first batch", || {
        stderr_of(&app).contains("Pausing")
    });
    let killed_at = Instant::now();
    // The process alone, as CI does; it keeps its ssh masters (they die with their idle time).
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
    for (i, h) in app.hosts.hosts.iter().enumerate() {
        let deadline = killed_at + Duration::from_secs(12 + 30);
        loop {
            if app.current(h) == old[i]
                && app.version(h).as_deref() == Ok("0.1.0")
                && !app.exists(h, ".ship/pending")
            {
                break;
            }
            if Instant::now() > deadline {
                app.fail(
                    &format!(
                        "{} should be back on its old release by itself (current {:?}, version {:?})\n--- deploy stderr ---\n{}",
                        h.name,
                        app.current(h),
                        app.version(h),
                        stderr_of(&app)
                    ),
                    None,
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
