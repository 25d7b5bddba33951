//! Issue #3: deploys to several hosts at once: one connection per host, a host without zstd,
//! and batch rollouts that stop and put the fleet back when a host fails.

use crate::app::{App, Spec, EXIT_ROLLED_BACK};
use crate::host;

fn three_hosts() -> Vec<String> {
    vec!["host0".into(), "host1".into(), "host2".into()]
}

/// Three hosts, host2 without zstd: every host answers, each over exactly one connection;
/// host2 got a `.tar.gz`, the others the `.tar.zst` itself.
#[test]
fn issue_3_deploys_to_three_hosts_one_connection_each() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: three_hosts(),
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-fleet", 18301, spec);
    let run = app.deploy(&[], 0);
    let artifact = app.artifact_path("0.1.0");
    let size = std::fs::metadata(&artifact).unwrap().len();
    let sha = artifact
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.zst")
        .rsplit('-')
        .next()
        .unwrap()
        .to_string();
    let mut releases = Vec::new();
    for (i, alias) in ["host0", "host1", "host2"].iter().enumerate() {
        let h = app.host(i);
        releases.push(app.deployed_release(&run, alias));
        app.assert_version(h, "0.1.0", Some(&run));
        let row = run.row(alias);
        app.check_eq(
            row["connections"].as_u64(),
            Some(1),
            &format!("ssh connections to {alias}"),
            Some(&run),
        );
        let cached = app.list(h, ".ship/artifacts");
        let ext = if i == 2 { ".tar.gz" } else { ".tar.zst" };
        app.check(
            cached.len() == 1 && cached[0].starts_with(&sha) && cached[0].ends_with(ext),
            format!("{alias} should hold the artifact as <sha256>{ext}, it has {cached:?}"),
            Some(&run),
        );
    }
    app.check(
        releases.iter().all(|r| r == &releases[0]),
        format!("one release id on every host: {releases:?}"),
        Some(&run),
    );
    let sent0 = run.row("host0")["bytes_sent"].as_u64().unwrap_or(u64::MAX);
    app.check(
        sent0 > 0 && sent0 <= size,
        format!("host0 was sent {sent0} bytes for a {size}-byte artifact"),
        Some(&run),
    );
    app.check(
        run.stderr.is_empty() || !run.stderr.contains("warning"),
        "no warnings",
        Some(&run),
    );
}

/// `batch = 1` over host0..host2, and the new release fails its health command on host1 only:
/// the rollout stops; host0 (already switched) is rolled back too, host1 is rolled back, host2
/// is never switched and keeps no staged release. With `--keep-switched` host0 stays on the
/// new release.
#[test]
fn issue_3_failed_batch_puts_the_fleet_back() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-batch";
    let marker = format!("/tmp/fail-{name}");
    let spec = Spec {
        hosts: three_hosts(),
        env_lines: vec!["batch = 1".into()],
        health_command: Some(format!("test ! -e {marker}")),
        timeout: "6s".into(),
        ..Spec::default()
    };
    let mut app = App::new(hosts, name, 18302, spec);
    let (h0, h1, h2) = (app.host(0), app.host(1), app.host(2));
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    for h in [h0, h1, h2] {
        app.assert_version(h, "0.1.0", Some(&first));
    }

    h1.exec_ok(&format!("touch {marker}"));
    app.update(|s| s.version = "0.2.0".into());
    let bad = app.deploy(&[], EXIT_ROLLED_BACK);
    for h in [h0, h1, h2] {
        app.assert_version(h, "0.1.0", Some(&bad));
        app.check_eq(
            app.current(h),
            Some(r1.clone()),
            &format!("current on {}", h.name),
            Some(&bad),
        );
        app.check(
            !app.exists(h, ".ship/lock"),
            format!("the lock on {} must be released", h.name),
            Some(&bad),
        );
    }
    app.check_eq(
        app.releases(h2),
        vec![r1.clone()],
        "host2 was never switched: its staged release must be gone",
        Some(&bad),
    );
    let outcomes: Vec<String> = ["host0", "host1", "host2"]
        .iter()
        .map(|a| bad.row(a)["outcome"].as_str().unwrap_or("?").to_string())
        .collect();
    app.check_eq(
        outcomes,
        vec![
            "rolled back".to_string(),
            "rolled back".to_string(),
            "skipped".to_string(),
        ],
        "outcomes",
        Some(&bad),
    );
    app.check(
        app.read(h1, "revisions.log")
            .lines()
            .last()
            .is_some_and(|l| l.contains("auto-rollback") && l.contains("result=unhealthy")),
        "host1's revisions.log should record the automatic rollback",
        Some(&bad),
    );

    // Again with --keep-switched (a new version: 0.2.0 is a ghost on host1 now).
    app.update(|s| s.version = "0.3.0".into());
    let kept = app.deploy(&["--keep-switched"], EXIT_ROLLED_BACK);
    let r3 = app.deployed_release(&kept, "host0");
    app.assert_version(h0, "0.3.0", Some(&kept));
    app.check_eq(app.current(h0), Some(r3), "current on host0", Some(&kept));
    for h in [h1, h2] {
        app.assert_version(h, "0.1.0", Some(&kept));
        app.check_eq(
            app.current(h),
            Some(r1.clone()),
            &format!("current on {}", h.name),
            Some(&kept),
        );
    }
    h1.exec_ok(&format!("rm -f {marker}"));
}

/// `before_switch_once` (migrations) runs on exactly one host, after every host has staged and
/// before any switch; when it fails, nothing is switched anywhere and every host is unlocked.
#[test]
fn issue_3_before_switch_once_runs_on_one_host_only() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-once";
    let marker = format!("/tmp/{name}-migrated");
    let spec = Spec {
        hosts: three_hosts(),
        before_switch_once: vec![format!("echo \"$SHIP_RELEASE\" >> {marker}")],
        ..Spec::default()
    };
    let mut app = App::new(hosts, name, 18303, spec);
    let run = app.deploy(&[], 0);
    let release = app.deployed_release(&run, "host0");
    let ran: Vec<bool> = (0..3)
        .map(|i| {
            app.host(i)
                .exec(&format!("test -f {marker}"))
                .status
                .success()
        })
        .collect();
    app.check_eq(
        ran,
        vec![true, false, false],
        "hosts that ran the once-hook",
        Some(&run),
    );
    let logged = app.host(0).exec_ok(&format!("cat {marker}"));
    app.check_eq(
        logged.trim().to_string(),
        release,
        "the hook ran in the new release",
        Some(&run),
    );

    // A failing once-hook: exit 9, every host still on 0.1.0, unlocked, no staged release left.
    app.update(|s| {
        s.version = "0.2.0".into();
        s.before_switch_once = vec!["exit 4".into()];
    });
    let failed = app.deploy(&[], 9);
    app.check(
        failed
            .all_output()
            .contains("before_switch_once hook failed"),
        "the error names the failing hook",
        Some(&failed),
    );
    for i in 0..3 {
        let h = app.host(i);
        app.assert_version(h, "0.1.0", Some(&failed));
        app.check_eq(
            app.releases(h).len(),
            1,
            "releases left on the host",
            Some(&failed),
        );
        app.check(
            !app.exists(h, ".ship/lock"),
            "the lock is released",
            Some(&failed),
        );
    }
}
