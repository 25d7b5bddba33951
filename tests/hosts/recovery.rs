//! Issue #17, item 2: recovery right after a crashed deploy. The deploying process is killed
//! (SIGKILL) right after it switched three hosts, as a crashed laptop or a cancelled CI job
//! leaves them: each host locked by a holder that is gone, with an unconfirmed switch its
//! dead-man's switch puts back only at the deadline. At once, long before that deadline:
//! `rollback` puts every host back; `unlock` then `deploy` goes ahead; `--lock-wait` waits
//! through a switch left pending. Each project is a git repository with a commit per version.

use std::time::Duration;

use crate::app::{App, Run, Spec, EXIT_LOCKED};
use crate::host::{self, TestHost};
use crate::support::process::Spawned;

/// Long enough that the dead-man's switch cannot be what puts the hosts back in these tests.
const LONG_CONFIRM: &str = "120s";

fn spec(confirm: &str) -> Spec {
    Spec {
        hosts: vec!["host0".into(), "host1".into(), "host2".into()],
        timeout: "5s".into(),
        settle: "1s".into(),
        health_lines: vec![format!("confirm_timeout = \"{confirm}\"")],
        ..Spec::default()
    }
}

/// The first release (0.1.0) deployed; then 0.2.0, committed, whose deploy is killed with
/// SIGKILL right after it switched every host (`group`: the whole process group, as a
/// terminal's job control would; else the cargo-ship process alone, as a CI runner's cancel
/// does, its ssh control masters outliving it). Returns the first release and, per host, the
/// pending switch's deadline (unix seconds, host clock).
fn crash_after_switch(app: &mut App, group: bool) -> (String, Vec<u64>, Spawned) {
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, &app.spec.hosts[0].clone());
    app.update(|s| {
        s.version = "0.2.0".into();
        // Keeps the client busy after the switch, unconfirmed, until it is killed.
        s.after_switch = vec!["sleep 60".into()];
    });
    app.run_expect(&["build"], 0);
    let mut live = app.spawn(&["deploy", "test"]);
    live.wait_stderr("every host switched", 3, Duration::from_secs(180), |l| {
        l.contains("Switched")
    });
    if group {
        live.signal_group("KILL");
    } else {
        live.signal("KILL");
    }
    let _ = live.child.wait();
    let mut deadlines = Vec::new();
    for h in app.app_hosts() {
        app.check(
            app.exists(h, ".ship/pending") && app.exists(h, ".ship/lock"),
            format!(
                "{}: the killed deploy should have left its lock and a pending switch\n{}",
                h.name,
                live.dump()
            ),
            None,
        );
        let d = app.read(h, ".ship/pending");
        let deadline = d
            .lines()
            .find_map(|l| l.strip_prefix("deadline="))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| {
                app.fail(&format!("{}: no deadline in pending:\n{d}", h.name), None)
            });
        deadlines.push(deadline);
    }
    // The killed run's ssh masters stay, as on a crashed CI runner, until the caller drops
    // `live` at the end of the test.
    (r1, deadlines, live)
}

/// Asserts that the host clock is still before `deadline`: what happened was not the
/// dead-man's switch's timeout.
fn before_deadline(app: &App, h: &TestHost, deadline: u64, run: &Run) {
    let now: u64 = h.exec_ok("date +%s").trim().parse().expect("date");
    app.check(
        now < deadline,
        format!(
            "{}: the pending switch's deadline ({deadline}) had passed ({now}): this does not show recovery at once",
            h.name
        ),
        Some(run),
    );
}

fn assert_on(app: &App, release: &str, version: &str, run: &Run) {
    for h in app.app_hosts() {
        app.check_eq(
            app.current(h).as_deref(),
            Some(release),
            &format!("{}: current", h.name),
            Some(run),
        );
        app.assert_version(h, version, Some(run));
        app.check(
            !app.exists(h, ".ship/lock") && !app.exists(h, ".ship/pending"),
            format!("{}: no lock and no pending switch may be left", h.name),
            Some(run),
        );
    }
}

/// kill -9 of the deploy alone after the switch on 3 hosts, then at once `cargo ship rollback`:
/// every host back on the first release, long before the dead-man's switch would have.
#[test]
fn issue_17_rollback_right_after_a_crashed_deploy() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-crash-rb", 18171, spec(LONG_CONFIRM)).in_git();
    let (r1, deadlines, _crashed) = crash_after_switch(&mut app, false);
    // status advises what works from here.
    let st = app.run_expect(&["status", "test"], 10);
    app.check(
        st.stdout.contains(" back by itself at ")
            && st.stdout.contains(&format!(
            "(the deploy that switched is gone: `cargo ship rollback <env>` puts {r1} back now)"
        )),
        "status should say the switch's deploy is gone and what puts it back now",
        Some(&st),
    );
    let rb = app.run_expect(
        &["rollback", "test", "--yes", "--message-format", "json"],
        0,
    );
    for (h, d) in app.app_hosts().into_iter().zip(&deadlines) {
        before_deadline(&app, h, *d, &rb);
    }
    assert_on(&app, &r1, "0.1.0", &rb);
    for h in app.app_hosts() {
        let row = rb.row(&h.name);
        app.check(
            row["outcome"] == "rolled back" && row["release"] == r1.as_str(),
            format!("{}: summary row {row}", h.name),
            Some(&rb),
        );
        let log = app.read(h, "revisions.log");
        app.check(
            log.lines()
                .last()
                .is_some_and(|l| l.contains("auto-revert") && l.contains(&format!("to={r1}"))),
            format!("{}: revisions.log should record the revert:\n{log}", h.name),
            Some(&rb),
        );
    }
    // Nothing is left in the way of the next deploy.
    app.update(|s| {
        s.version = "0.3.0".into();
        s.after_switch.clear();
    });
    let next = app.deploy(&[], 0);
    let r3 = app.deployed_release(&next, "host0");
    assert_on(&app, &r3, "0.3.0", &next);
}

/// The same crash (the whole process group killed), as the deploy user after `cargo ship
/// setup`: `cargo ship unlock` says what it did with the pending switch, and `cargo ship
/// deploy` then goes ahead at once.
#[test]
fn issue_17_unlock_then_deploy_right_after_a_crashed_deploy() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-crash-un", 18172, spec(LONG_CONFIRM)).in_git();
    app.as_deploy_user("shipcrash", "shipcrashsvc");
    let (r1, deadlines, _crashed) = crash_after_switch(&mut app, true);
    // A deploy is refused, and its advice names commands that work from here.
    let refused = app.run_expect(&["deploy", "test"], EXIT_LOCKED);
    app.check(
        refused.stderr.contains("cargo ship unlock test")
            || refused.stderr.contains("cargo ship unlock <env>"),
        "the refusal should name `cargo ship unlock`",
        Some(&refused),
    );
    let un = app.run_expect(&["unlock", "test", "--message-format", "json"], 0);
    for (h, d) in app.app_hosts().into_iter().zip(&deadlines) {
        before_deadline(&app, h, *d, &un);
        let row = un.row(&format!("shipcrash@{}", h.name));
        let detail = row["detail"].as_str().unwrap_or_default();
        app.check(
            detail.starts_with("removed the lock of ")
                && detail.contains(": cargo ship deploy test; put release "),
            format!("{}: unlock's detail: {detail}", h.name),
            Some(&un),
        );
        app.check(
            detail.contains(&format!("; put release {r1} back: the switch to "))
                && detail.contains(" was never confirmed and its deploy is gone (done now, as the dead-man's switch would have at its deadline)"),
            format!("{}: unlock should say what it did with the pending switch: {detail}", h.name),
            Some(&un),
        );
    }
    assert_on(&app, &r1, "0.1.0", &un);
    app.update(|s| {
        s.version = "0.3.0".into();
        s.after_switch.clear();
    });
    let next = app.deploy(&[], 0);
    for (h, d) in app.app_hosts().into_iter().zip(&deadlines) {
        before_deadline(&app, h, *d, &next);
    }
    let r3 = app.deployed_release(&next, "shipcrash@host0");
    assert_on(&app, &r3, "0.3.0", &next);
}

/// A switch left pending with no lock (its deploy killed, its lock removed by hand, as
/// `unlock` did before #17): `deploy --lock-wait` waits for the host to put the previous
/// release back by itself, then deploys, instead of refusing at once.
#[test]
fn issue_17_lock_wait_waits_through_a_pending_switch() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-crash-lw", 18173, spec("40s")).in_git();
    // 0.3.0 is built first: a build between the crash and the deploy could outlast the 40 s
    // switch on a busy machine (seen beside the whole suite).
    app.update(|s| s.version = "0.3.0".into());
    app.run_expect(&["build"], 0);
    let next_artifact = app.artifact_path("0.3.0").display().to_string();
    app.update(|s| s.version = "0.1.0".into());
    let (_r1, _, _crashed) = crash_after_switch(&mut app, false);
    for h in app.app_hosts() {
        h.exec_ok(&format!("rm -rf {}/.ship/lock", app.deploy_to()));
    }
    app.update(|s| {
        s.version = "0.3.0".into();
        s.after_switch.clear();
    });
    for h in app.app_hosts() {
        app.check(
            app.exists(h, ".ship/pending"),
            format!(
                "{}: the switch should still be pending when the deploy starts (the build took too long?)",
                h.name
            ),
            None,
        );
    }
    let next = app.deploy(&["--lock-wait", "90s", "--artifact", &next_artifact], 0);
    let r3 = app.deployed_release(&next, "host0");
    assert_on(&app, &r3, "0.3.0", &next);
    for h in app.app_hosts() {
        let log = app.read(h, "revisions.log");
        app.check(
            log.contains("auto-revert"),
            format!(
                "{}: the host put the pending switch back first:\n{log}",
                h.name
            ),
            Some(&next),
        );
    }
}

/// A deploy that still runs is never taken over: frozen (SIGSTOP) right after its switch, as
/// a deploy from another machine behind a slow network looks, it keeps its lease, so
/// `rollback` and `unlock` refuse (exit 7) and touch nothing; resumed, it confirms and
/// finishes.
#[test]
fn issue_17_a_running_deploy_is_not_taken_over() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-crash-live", 18174, spec(LONG_CONFIRM)).in_git();
    app.spec.hosts.truncate(2);
    app.write();
    app.deploy(&[], 0);
    app.update(|s| {
        s.version = "0.2.0".into();
        s.after_switch = vec!["sleep 3".into()];
    });
    app.run_expect(&["build"], 0);
    let mut live = app.spawn(&["deploy", "test"]);
    live.wait_stderr("every host switched", 2, Duration::from_secs(180), |l| {
        l.contains("Switched")
    });
    live.signal("STOP");
    let switched: Vec<Option<String>> = app.app_hosts().iter().map(|h| app.current(h)).collect();
    let st = app.run_expect(&["status", "test"], 10);
    app.check(
        st.stdout
            .contains("unless the deploy confirms it (the deploy that switched still runs)"),
        "status should say the switch's deploy still runs",
        Some(&st),
    );
    let rb = app.run_expect(&["rollback", "test", "--yes"], EXIT_LOCKED);
    app.check(
        rb.stderr.contains("deploy locked by ") && rb.stderr.contains(": cargo ship deploy test"),
        "rollback should name the running deploy's lock",
        Some(&rb),
    );
    let un = app.run_expect(&["unlock", "test"], EXIT_LOCKED);
    app.check(
        un.stderr
            .contains(": cargo ship deploy test, which is still running")
            && un.stderr.contains("it holds the lock's lease"),
        "unlock should refuse a holder that still runs",
        Some(&un),
    );
    for (h, before) in app.app_hosts().into_iter().zip(&switched) {
        app.check(
            app.current(h) == *before
                && app.exists(h, ".ship/pending")
                && app.exists(h, ".ship/lock"),
            format!(
                "{}: the running deploy's switch, lock and pending record stay",
                h.name
            ),
            Some(&un),
        );
    }
    live.signal("CONT");
    let status = live.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "the resumed deploy finishes\n{}",
        live.dump()
    );
    // Its leases ended with it: no ssh master of it is left.
    let left = live.ssh_processes();
    assert!(
        left.is_empty(),
        "ssh processes left after the deploy exited:\n{}",
        left.join("\n")
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.2.0", None);
        app.check(
            !app.exists(h, ".ship/pending") && !app.exists(h, ".ship/lock"),
            format!("{}: confirmed and unlocked", h.name),
            None,
        );
    }
}
