//! Issue #3: deploys that go wrong on a real host (unhealthy, crash loop, failing hook, held
//! lock, Ctrl-C) must leave the previous release running, say why, and exit with README's code.

use std::time::{Duration, Instant};

use crate::app::{
    App, Run, Spec, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_PREFLIGHT, EXIT_REMOTE, EXIT_ROLLED_BACK,
};
use crate::host;

/// A release whose /healthz answers 500 is rolled back; the same artifact is then refused in
/// preflight unless `--force`.
#[test]
fn issue_3_unhealthy_release_is_rolled_back_and_becomes_a_ghost() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-unhealthy", 18201, Spec::default());
    let h = app.host(0);
    let good = app.deploy(&[], 0);
    let r1 = app.deployed_release(&good, "host0");
    app.assert_version(h, "0.1.0", Some(&good));

    let bad = app.run_expect(
        &["deploy", "test", "--features", "unhealthy"],
        EXIT_ROLLED_BACK,
    );
    app.assert_version(h, "0.1.0", Some(&bad));
    app.check_eq(app.current(h), Some(r1.clone()), "current", Some(&bad));
    let failed = app.list(h, ".ship/failed");
    app.check_eq(failed.len(), 1, "releases marked failed", Some(&bad));
    let failed_id = &failed[0];
    app.check(
        failed_id != &r1 && app.releases(h).contains(failed_id),
        format!("the failed mark {failed_id} should name the new release"),
        Some(&bad),
    );
    app.check(
        app.read(h, &format!(".ship/failed/{failed_id}"))
            .contains("500"),
        "the failed mark should say why (GET /healthz answered 500)",
        Some(&bad),
    );
    app.check(
        bad.stderr.contains("unhealthy") && bad.stderr.contains("rolled back"),
        "stderr should say the release was unhealthy and rolled back",
        Some(&bad),
    );
    app.check(
        app.list(h, ".ship/ghosts").len() == 1,
        "the artifact should be marked a ghost",
        Some(&bad),
    );
    app.assert_unlocked(h, Some(&bad));

    // The same artifact again: refused before anything changes.
    let again = app.run_expect(
        &["deploy", "test", "--features", "unhealthy"],
        EXIT_PREFLIGHT,
    );
    app.check(
        again.stderr.contains("--force") && again.stderr.contains("failed its health check"),
        "the refusal should name --force",
        Some(&again),
    );
    app.check_eq(
        app.releases(h).len(),
        2,
        "a refused deploy stages nothing",
        Some(&again),
    );
    app.assert_version(h, "0.1.0", Some(&again));

    // --force tries it again, and it fails again.
    let forced = app.run_expect(
        &["deploy", "test", "--features", "unhealthy", "--force"],
        EXIT_ROLLED_BACK,
    );
    app.assert_version(h, "0.1.0", Some(&forced));
    app.check_eq(
        app.current(h),
        Some(r1),
        "current after --force",
        Some(&forced),
    );
    app.check_eq(
        app.list(h, ".ship/failed").len(),
        2,
        "releases marked failed after --force",
        Some(&forced),
    );
}

/// A release that answers its health check but exits 2 s later is caught by `settle` (the
/// InvocationID changed) and rolled back.
#[test]
fn issue_3_crash_loop_is_rolled_back() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    // settle longer than the crash delay (2 s), so the crash happens inside it.
    let spec = Spec {
        settle: "4s".into(),
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-crash", 18202, spec);
    let h = app.host(0);
    let good = app.deploy(&[], 0);
    let r1 = app.deployed_release(&good, "host0");

    let bad = app.run_expect(&["deploy", "test", "--features", "crash"], EXIT_ROLLED_BACK);
    app.assert_version(h, "0.1.0", Some(&bad));
    app.check_eq(app.current(h), Some(r1), "current", Some(&bad));
    app.check(
        bad.stderr.contains("did not stay up"),
        "the reason should be that the service did not stay up",
        Some(&bad),
    );
    app.check_eq(
        h.unit_property(&app.unit(), "ActiveState"),
        "active".to_string(),
        "unit state",
        Some(&bad),
    );
}

/// An unhealthy first deploy has nothing to return to: the unit is stopped, no `current`.
#[test]
fn issue_3_unhealthy_first_deploy_leaves_nothing_running() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-firstbad", 18203, Spec::default());
    let h = app.host(0);
    let bad = app.run_expect(
        &["deploy", "test", "--features", "unhealthy"],
        EXIT_ROLLED_BACK,
    );
    app.check(
        app.current(h).is_none() && !app.exists(h, "current"),
        "there must be no `current` after an unhealthy first deploy",
        Some(&bad),
    );
    let state = h.unit_property(&app.unit(), "ActiveState");
    app.check(
        state != "active" && state != "activating",
        format!("the unit should be stopped, it is {state}"),
        Some(&bad),
    );
    app.check(
        h.http_get(app.port, "/version").is_none(),
        "nothing should answer on the port",
        Some(&bad),
    );
    app.assert_unlocked(h, Some(&bad));
    app.check(
        bad.stderr.contains("unhealthy"),
        "stderr should say why",
        Some(&bad),
    );
}

/// A failing before_switch hook stops the deploy before any switch: exit 9, nothing changed,
/// the staged release removed, the lock released.
#[test]
fn issue_3_failing_before_switch_hook_switches_nothing() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-hookfail", 18204, Spec::default());
    let h = app.host(0);
    let good = app.deploy(&[], 0);
    let r1 = app.deployed_release(&good, "host0");

    app.update(|s| {
        s.version = "0.2.0".into();
        s.before_switch = vec!["echo about to fail >&2; exit 3".into()];
    });
    let bad = app.run_expect(&["deploy", "test"], EXIT_REMOTE);
    app.check_eq(app.current(h), Some(r1.clone()), "current", Some(&bad));
    app.assert_version(h, "0.1.0", Some(&bad));
    app.check(
        bad.stderr.contains("before_switch hook failed"),
        "stderr should name the failed hook",
        Some(&bad),
    );
    app.check_eq(
        app.releases(h),
        vec![r1],
        "the staged release must be removed",
        Some(&bad),
    );
    app.assert_unlocked(h, Some(&bad));
    app.check(
        app.list(h, ".ship/unfinished").is_empty(),
        "no unfinished mark may be left",
        Some(&bad),
    );

    // Fixed: the next deploy goes through.
    app.update(|s| s.before_switch.clear());
    let fixed = app.deploy(&[], 0);
    app.assert_version(h, "0.2.0", Some(&fixed));
}

/// A held lock makes a deploy exit 7 naming the holder; `unlock` clears it; `--lock-wait`
/// waits for it.
#[test]
fn issue_3_lock_is_honoured_named_and_can_be_waited_for() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-lock", 18205, Spec::default());
    let h = app.host(0);
    let lock = format!("{}/.ship/lock", app.deploy_to());
    let holder = "someone@else pid 1 since 2026-01-01T00:00:00Z: cargo ship deploy test";
    h.exec_ok(&format!(
        "mkdir -p {lock} && printf '%s\\n' '{holder}' > {lock}/holder"
    ));

    let locked = app.run_expect(&["deploy", "test"], EXIT_LOCKED);
    app.check(
        locked.stderr.contains(holder),
        "the error should name the lock's holder",
        Some(&locked),
    );
    app.check(
        app.exists(h, ".ship/lock/holder") && app.current(h).is_none(),
        "a locked deploy must change nothing (and keep the foreign lock)",
        Some(&locked),
    );

    let unlock = app.run_expect(&["unlock", "test"], 0);
    app.check(
        unlock.stderr.contains("someone@else"),
        "unlock should say whose lock it removed",
        Some(&unlock),
    );
    let ok = app.deploy(&[], 0);
    app.assert_version(h, "0.1.0", Some(&ok));

    // --lock-wait: the lock goes away 4 s after it is taken, while the deploy waits.
    app.run_expect(&["build"], 0);
    h.exec_ok(&format!(
        "mkdir -p {lock} && printf '%s\\n' '{holder}' > {lock}/holder && \
         systemd-run --quiet --collect --on-active=4s --unit ship-lock-remover /bin/rm -rf {lock}"
    ));
    let waited = app.deploy(&["--lock-wait", "20s"], 0);
    app.deployed_release(&waited, "host0");
    app.assert_unlocked(h, Some(&waited));
}

/// Two deploys of the same app at once: exactly one takes the lock; the other exits 7.
#[test]
fn issue_3_concurrent_deploys_one_wins_the_other_is_locked_out() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    // The hook keeps the lock held for a while, so the two really overlap.
    let spec = Spec {
        before_switch: vec!["sleep 3".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-race", 18206, spec);
    let h = app.host(0);
    app.run_expect(&["build"], 0);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| app.run(&["deploy", "test"]));
        let b = s.spawn(|| app.run(&["deploy", "test"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut codes = [a.code, b.code];
    codes.sort();
    let (winner, loser) = if a.code == 0 { (&a, &b) } else { (&b, &a) };
    if codes != [0, EXIT_LOCKED] {
        app.fail(
            &format!(
                "expected one success and one exit 7, got {codes:?}\n=== first ===\n{}\n=== second ===",
                a.describe()
            ),
            Some(&b),
        );
    }
    app.check(
        loser.stderr.contains("locked by") && loser.stderr.contains("cargo ship deploy test"),
        "the loser should name the winner's lock",
        Some(loser),
    );
    app.assert_version(h, "0.1.0", Some(winner));
    app.check_eq(
        app.releases(h).len(),
        1,
        "one release on the host",
        Some(loser),
    );
    app.assert_unlocked(h, Some(winner));
}

/// Starts `cargo ship deploy test`, waits until `marker` (a glob under deploy_to) exists on
/// `h`, then sends SIGINT to the process alone, or to its whole process group (what Ctrl-C in
/// a terminal does), and waits for it to exit.
fn interrupt_when(app: &App, h: &crate::host::TestHost, marker: &str, group: bool) -> Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-ship"));
    cmd.args(["ship", "deploy", "test"])
        .current_dir(&app.project.root)
        .env("CARGO_TERM_COLOR", "never")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if group {
        cmd.process_group(0);
    }
    let child = cmd.spawn().expect("spawn cargo-ship");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reached = loop {
        let out = h.exec(&format!("ls {}/{marker} 2>/dev/null", app.deploy_to()));
        if out.status.success() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let target = if group {
        format!("-{}", child.id())
    } else {
        child.id().to_string()
    };
    let kill = std::process::Command::new("kill")
        .args(["-INT", "--", &target])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait for cargo-ship");
    let run = Run::from_output(vec!["deploy".into(), "test".into()], &out);
    app.check(
        reached && kill.success(),
        format!("the deploy never reached {marker}"),
        Some(&run),
    );
    run
}

/// After an interrupted deploy: exit 130, lock released, `r1` current and answering v0.1.0,
/// and (once the interrupted remote script has finished its sleep) no other release and no
/// unfinished mark left.
fn assert_put_back(app: &App, h: &crate::host::TestHost, r1: &str, run: &Run, what: &str) {
    app.check_eq(
        run.code,
        EXIT_INTERRUPTED,
        &format!("{what}: exit code"),
        Some(run),
    );
    app.check(
        run.stderr.contains("Interrupted"),
        format!("{what}: stderr should say the deploy was interrupted"),
        Some(run),
    );
    app.check(
        !app.exists(h, ".ship/lock"),
        format!("{what}: the lock must be released"),
        Some(run),
    );
    app.check_eq(
        app.current(h),
        Some(r1.to_string()),
        &format!("{what}: current"),
        Some(run),
    );
    app.assert_version(h, "0.1.0", Some(run));
    // The interrupted remote script may still be sleeping in its hook on the host.
    std::thread::sleep(Duration::from_secs(6));
    app.check_eq(
        app.releases(h),
        vec![r1.to_string()],
        &format!("{what}: releases"),
        Some(run),
    );
    app.check(
        app.list(h, ".ship/unfinished").is_empty() && !app.exists(h, ".ship/switching"),
        format!("{what}: no unfinished or switching mark may be left"),
        Some(run),
    );
    app.check_eq(
        app.current(h),
        Some(r1.to_string()),
        &format!("{what}: current"),
        Some(run),
    );
}

/// Ctrl-C puts the host back as it was: while a before_switch hook runs (SIGINT to the process,
/// then to its process group as a terminal does), and after the switch while an after_switch
/// hook runs (the new release is already live).
#[test]
fn issue_3_ctrl_c_puts_the_host_back() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-ctrlc", 18207, Spec::default()).in_git();
    let h = app.host(0);
    let good = app.deploy(&[], 0);
    let r1 = app.deployed_release(&good, "host0");

    app.update(|s| {
        s.version = "0.2.0".into();
        s.before_switch = vec!["touch before-started; sleep 6".into()];
    });
    app.run_expect(&["build"], 0);
    let run = interrupt_when(&app, h, "releases/*/before-started", false);
    assert_put_back(&app, h, &r1, &run, "SIGINT during before_switch");

    let run = interrupt_when(&app, h, "releases/*/before-started", true);
    assert_put_back(
        &app,
        h,
        &r1,
        &run,
        "SIGINT to the group during before_switch",
    );

    app.update(|s| {
        s.before_switch.clear();
        s.after_switch = vec!["touch after-started; sleep 6".into()];
    });
    let run = interrupt_when(&app, h, "releases/*/after-started", false);
    assert_put_back(&app, h, &r1, &run, "SIGINT during after_switch");

    // And the next deploy goes through.
    app.update(|s| s.after_switch.clear());
    let next = app.deploy(&[], 0);
    app.assert_version(h, "0.2.0", Some(&next));
}
