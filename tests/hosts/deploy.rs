//! Issue #3: the happy paths of `cargo ship deploy|rollback|status|releases|prune` against a
//! real host, checked on the host itself.

use crate::app::{App, Spec, EXIT_ROLLED_BACK};
use crate::host;

/// Deploy, redeploy the same build (nothing uploaded, one connection), deploy a new version,
/// roll back, and read `status` and `releases`.
#[test]
fn issue_3_deploy_redeploy_new_version_and_rollback() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-basic", 18101, Spec::default());
    let h = app.host(0);

    // v0.1.0, first deploy.
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    app.assert_version(h, "0.1.0", Some(&first));
    app.check_eq(
        h.current_link(&app.deploy_to()),
        Some(format!("releases/{r1}")),
        "current after the first deploy",
        Some(&first),
    );
    let log = app.read(h, "revisions.log");
    app.check(
        log.lines().any(|l| {
            l.contains(" deploy ")
                && l.contains(&format!("release={r1}"))
                && l.ends_with("result=ok")
        }),
        format!("revisions.log has no `deploy release={r1} ... result=ok` line:\n{log}"),
        Some(&first),
    );
    app.check(
        app.exists(h, &format!("/etc/systemd/system/{}", app.unit())),
        "the unit file was not written",
        Some(&first),
    );
    let data_link = h.exec_ok(&format!(
        "readlink -- {}/releases/{r1}/data",
        app.deploy_to()
    ));
    app.check_eq(
        data_link.trim().to_string(),
        format!("{}/shared/data", app.deploy_to()),
        "releases/<id>/data links into shared/",
        Some(&first),
    );
    // The service wrote its start line through the link.
    app.check(
        app.read(h, "shared/data/started.log").contains("0.1.0"),
        "shared/data/started.log does not show v0.1.0 starting",
        Some(&first),
    );

    // The same build again: the artifact is cached on the host, nothing is uploaded.
    let again = app.deploy(&[], 0);
    let r2 = app.deployed_release(&again, "host0");
    let row = again.row("host0");
    app.check_eq(
        row["bytes_sent"].as_u64(),
        Some(0),
        "bytes sent for a cached artifact",
        Some(&again),
    );
    app.check_eq(
        row["connections"].as_u64(),
        Some(1),
        "ssh connections",
        Some(&again),
    );
    app.check(r2 > r1, format!("release ids {r1} then {r2}"), Some(&again));
    app.assert_version(h, "0.1.0", Some(&again));

    // v0.2.0.
    app.update(|s| s.version = "0.2.0".into());
    let second = app.deploy(&[], 0);
    let r3 = app.deployed_release(&second, "host0");
    app.assert_version(h, "0.2.0", Some(&second));
    app.check_eq(
        app.current(h),
        Some(r3.clone()),
        "current after v0.2.0",
        Some(&second),
    );
    let row = second.row("host0");
    app.check(
        row["bytes_sent"].as_u64().is_some_and(|b| b > 0),
        "a new version must be uploaded",
        Some(&second),
    );

    // Rollback: back to the newest good release before current, v0.1.0.
    let rb = app.run_expect(&["rollback", "test", "--message-format", "json"], 0);
    app.assert_version(h, "0.1.0", Some(&rb));
    app.check_eq(
        app.current(h),
        Some(r2.clone()),
        "current after rollback",
        Some(&rb),
    );
    app.check_eq(
        rb.row("host0")["bytes_sent"].as_u64(),
        Some(0),
        "a rollback uploads nothing",
        Some(&rb),
    );
    let log = app.read(h, "revisions.log");
    app.check(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("rollback") && l.contains(&r2) && l.ends_with("result=ok")),
        format!("revisions.log does not end with the rollback:\n{log}"),
        Some(&rb),
    );

    // status (human): the current release and the unit's state.
    let st = app.run_expect(&["status", "test", "-v"], 0);
    app.check(
        st.stdout.contains(&format!("current:   {r2}  v0.1.0")),
        "status does not show the current release",
        Some(&st),
    );
    app.check(
        st.stdout.contains("unit:      active"),
        "status does not show the unit active",
        Some(&st),
    );

    // releases (JSON): every release with its version.
    let rel = app.run_expect(&["releases", "test", "--message-format", "json"], 0);
    let out = rel
        .events()
        .into_iter()
        .find(|e| e["event"] == "output" && e["kind"] == "releases")
        .unwrap_or_else(|| app.fail("no releases output event", Some(&rel)));
    let listed: Vec<(String, String, bool)> = out["data"]["releases"]
        .as_array()
        .unwrap_or_else(|| app.fail("no releases array", Some(&rel)))
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                r["version"].as_str().unwrap_or_default().to_string(),
                r["current"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    app.check_eq(
        listed,
        vec![
            (r1, "0.1.0".to_string(), false),
            (r2, "0.1.0".to_string(), true),
            (r3, "0.2.0".to_string(), false),
        ],
        "releases listed",
        Some(&rel),
    );
}

/// keep_releases bounds what a deploy leaves; `prune --keep 1` still keeps current and the
/// rollback target; rollback works after a prune.
#[test]
fn issue_3_keep_releases_and_prune() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        keep_releases: 2,
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-prune", 18102, spec);
    let h = app.host(0);
    let mut ids = Vec::new();
    for v in ["0.1.0", "0.2.0", "0.3.0", "0.4.0"] {
        app.update(|s| s.version = v.into());
        let run = app.deploy(&[], 0);
        ids.push(app.deployed_release(&run, "host0"));
        app.assert_version(h, v, Some(&run));
        app.check(
            app.releases(h).len() <= 2,
            format!("more than keep_releases = 2 releases after deploying {v}"),
            Some(&run),
        );
    }
    app.check_eq(
        app.releases(h),
        ids[2..].to_vec(),
        "releases after 4 deploys with keep_releases = 2",
        None,
    );
    app.check_eq(
        app.list(h, ".ship/artifacts").len(),
        2,
        "cached artifacts on the host after 4 deploys with keep_releases = 2",
        None,
    );

    // One more with a larger keep_releases, so that prune has something to remove.
    app.update(|s| {
        s.version = "0.5.0".into();
        s.keep_releases = 5;
    });
    let run = app.deploy(&[], 0);
    ids.push(app.deployed_release(&run, "host0"));
    app.check_eq(app.releases(h), ids[2..].to_vec(), "releases", Some(&run));

    let pruned = app.run_expect(&["prune", "test", "--keep", "1"], 0);
    app.check_eq(
        app.releases(h),
        ids[3..].to_vec(),
        "prune --keep 1 keeps current and the rollback target",
        Some(&pruned),
    );
    app.check_eq(
        app.current(h),
        Some(ids[4].clone()),
        "current after prune",
        Some(&pruned),
    );
    app.assert_version(h, "0.5.0", Some(&pruned));
    // The local store keeps one artifact.
    let local: Vec<_> = std::fs::read_dir(app.project.path("target/ship"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst"))
        .collect();
    app.check_eq(
        local.len(),
        1,
        "local artifacts after prune --keep 1",
        Some(&pruned),
    );

    let rb = app.run_expect(&["rollback", "test"], 0);
    app.assert_version(h, "0.4.0", Some(&rb));
    app.check_eq(
        app.current(h),
        Some(ids[3].clone()),
        "current after rollback",
        Some(&rb),
    );
}

/// Hostile text in environment values, arguments and hooks is passed verbatim and never run by
/// a shell; hooks see their SHIP_* variables.
#[test]
fn issue_3_hostile_values_are_never_executed() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-hostile";
    let hostile = format!(
        "$(touch /tmp/pwned-{name}); `touch /tmp/pwned2-{name}` 'q\" x; touch /tmp/pwned3-{name} \\ %n"
    );
    let spec = Spec {
        environment: vec![("HOSTILE".into(), hostile.clone())],
        extra_args: vec![hostile.clone()],
        before_switch: vec!["echo \"$SHIP_RELEASE\" > hook-ran.txt".into()],
        after_switch: vec!["printf '%s %s' \"$SHIP_VERSION\" \"$SHIP_ENV\" > after-ran.txt".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, name, 18103, spec);
    let h = app.host(0);
    let run = app.deploy(&[], 0);
    let id = app.deployed_release(&run, "host0");
    app.assert_version(h, "0.1.0", Some(&run));

    let pwned = h.exec("ls /tmp/pwned* 2>/dev/null");
    app.check(
        !pwned.status.success(),
        format!(
            "hostile text was executed: {}",
            String::from_utf8_lossy(&pwned.stdout)
        ),
        Some(&run),
    );
    // systemd has it verbatim...
    let shown = h.unit_property(&app.unit(), "Environment");
    app.check(
        shown.contains("HOSTILE=") && shown.contains(&format!("touch /tmp/pwned-{name}")),
        format!("systemctl show -p Environment: {shown}"),
        Some(&run),
    );
    // ...and so does the running process, byte for byte, in its environment and argv.
    let pid = h.unit_property(&app.unit(), "MainPID");
    let environ = h.exec_ok(&format!("tr '\\0' '\\n' < /proc/{pid}/environ"));
    app.check(
        environ.lines().any(|l| l == format!("HOSTILE={hostile}")),
        format!("the process environment lacks HOSTILE verbatim:\n{environ}"),
        Some(&run),
    );
    let argv = h.exec_ok(&format!("tr '\\0' '\\n' < /proc/{pid}/cmdline"));
    app.check(
        argv.lines().last() == Some(hostile.as_str()),
        format!("the last argument is not the hostile text verbatim:\n{argv}"),
        Some(&run),
    );
    // The hooks ran in the release dir with their variables.
    app.check_eq(
        app.read(h, &format!("releases/{id}/hook-ran.txt")),
        format!("{id}\n"),
        "hook-ran.txt",
        Some(&run),
    );
    app.check_eq(
        app.read(h, &format!("releases/{id}/after-ran.txt")),
        "0.1.0 test".to_string(),
        "after-ran.txt",
        Some(&run),
    );
    // Environment values are redacted in --dry-run output.
    let dry = app.run_expect(&["deploy", "test", "--dry-run"], 0);
    app.check(
        !dry.all_output().contains(&format!("pwned2-{name}")),
        "--dry-run shows a secret environment value",
        Some(&dry),
    );
}

/// `--dry-run` prints the scripts and changes nothing.
#[test]
fn issue_3_dry_run_touches_nothing() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-dryrun", 18104, Spec::default());
    let h = app.host(0);
    let run = app.run_expect(&["deploy", "test", "--dry-run"], 0);
    app.check(
        !app.exists(h, &app.deploy_to()),
        "--dry-run created the deploy directory",
        Some(&run),
    );
    app.check(
        !app.exists(h, &format!("/etc/systemd/system/{}", app.unit())),
        "--dry-run wrote the unit",
        Some(&run),
    );
    let text = run.all_output();
    // `cat >`: the stage script receives the artifact on its standard input (no SFTP), under
    // its final name (#18: the release's unfinished mark names it until it is checked).
    let receive = format!("cat > {}/.ship/artifacts/", app.deploy_to());
    for needle in ["mkdir", "systemctl", "restart", &app.deploy_to(), &receive] {
        app.check(
            text.contains(needle),
            format!("--dry-run output does not show {needle:?}"),
            Some(&run),
        );
    }
}

/// A non-root deploy user with `sudo = true`.
#[test]
fn issue_3_deploys_as_a_non_root_user_with_sudo() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec!["host0-deploy".into()],
        ship_lines: vec!["sudo = true".into()],
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-sudo", 18105, spec);
    let h = app.host(0);
    h.exec_ok(&format!(
        "mkdir -p {d} && chown deploy:deploy {d}",
        d = app.deploy_to()
    ));
    let run = app.deploy(&[], 0);
    let r1 = app.deployed_release(&run, "host0-deploy");
    app.assert_version(h, "0.1.0", Some(&run));
    app.check_eq(
        h.exec_ok(&format!("stat -c %U {}/releases/{r1}", app.deploy_to()))
            .trim()
            .to_string(),
        "deploy".to_string(),
        "owner of the release dir",
        Some(&run),
    );
    // A second version, then a rollback, all through sudo.
    app.update(|s| s.version = "0.2.0".into());
    let run = app.deploy(&[], 0);
    app.assert_version(h, "0.2.0", Some(&run));
    let rb = app.run_expect(&["rollback", "test"], 0);
    app.assert_version(h, "0.1.0", Some(&rb));
    app.check_eq(
        app.current(h),
        Some(r1),
        "current after rollback",
        Some(&rb),
    );
}

/// Issue #18, item 2: with `settle = "0s"` nothing happens on the deploying machine between
/// a host's switch and its verify (the switch script probes `health.http` on the host), so
/// the switch script verifies too: on two hosts a new version is five remote commands per host
/// (preflight, the lock's lease, stage, switch + verify, finish), and a deploy to one host,
/// which finishes in the same script, four. An unhealthy release is still put back on both
/// hosts, and a rollback with `settle = "0s"` still goes back and unlocks. From git, as the
/// deploy user after `cargo ship setup`.
#[test]
fn issue_18_with_settle_0_the_switch_script_also_verifies() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec!["host0".into(), "host1".into()],
        settle: "0s".into(),
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-settle0", 18106, spec).in_git();
    app.as_deploy_user("shipquick", "shipquicksvc");
    let (h0, h1) = (app.host(0), app.host(1));
    app.deploy(&[], 0);

    app.update(|s| s.version = "0.2.0".into());
    let two = app.deploy(&[], 0);
    let r2 = app.deployed_release(&two, "shipquick@host0");
    for (h, alias) in [(h0, "host0"), (h1, "host1")] {
        app.assert_version(h, "0.2.0", Some(&two));
        // A host that could not rebuild the artifact from its delta is sent the whole artifact
        // in one more command, and says so (seen once on a loaded machine; `delta::` tests it).
        let resent = two.all_output().contains(&format!(
            "shipquick@{alias}: this host could not rebuild the artifact from the delta"
        )) as u64;
        app.check_eq(
            two.row(&format!("shipquick@{alias}"))["commands"].as_u64(),
            Some(5 + resent),
            &format!("remote commands on {alias} for a new version (preflight, the lock's lease, stage, switch + verify, finish; resent whole: {resent})"),
            Some(&two),
        );
        app.assert_unlocked(h, Some(&two));
        app.check(
            !app.exists(h, ".ship/pending"),
            "the dead-man's switch must be confirmed (no .ship/pending)",
            Some(&two),
        );
    }

    let bad = app.deploy(&["--features", "unhealthy"], EXIT_ROLLED_BACK);
    for h in [h0, h1] {
        app.assert_version(h, "0.2.0", Some(&bad));
        app.check_eq(
            app.current(h),
            Some(r2.clone()),
            "current after the unhealthy release",
            Some(&bad),
        );
        app.assert_unlocked(h, Some(&bad));
    }
    app.check(
        bad.all_output().contains("GET /healthz answered 500"),
        "the output should say why the release was unhealthy",
        Some(&bad),
    );

    app.update(|s| s.version = "0.3.0".into());
    let one = app.deploy(&["--host", "host0"], 0);
    app.assert_version(h0, "0.3.0", Some(&one));
    app.assert_version(h1, "0.2.0", Some(&one));
    app.check_eq(
        one.row("shipquick@host0")["commands"].as_u64(),
        Some(4),
        "remote commands on host0 for a deploy to it alone (preflight, the lease, stage, switch + verify + finish)",
        Some(&one),
    );
    app.check(
        !app.exists(h0, ".ship/pending"),
        "host0's switch must be confirmed",
        Some(&one),
    );

    let back = app.run_expect(
        &[
            "rollback",
            "test",
            "--host",
            "host0",
            "--message-format",
            "json",
        ],
        0,
    );
    app.assert_version(h0, "0.2.0", Some(&back));
    app.assert_unlocked(h0, Some(&back));
}

/// Jump hosts (README: "jump hosts work as with plain ssh"), as a fleet behind a bastion uses
/// them: two hosts reached through `ProxyJump host0`, with `connect_parallel = 1` (the
/// handshakes one at a time, as a bastion's `MaxStartups` may require), and the jump host
/// itself reached directly. Every host serves the release, and the hosts behind the jump
/// host saw the deploy's connection come from it.
#[test]
fn issue_18_deploys_through_a_jump_host_and_directly() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let (h0, h1, h2) = (hosts.host(0), hosts.host(1), hosts.host(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("ssh_config");
    // The test hosts' own entries first (host0, the jump host, among them), then the hosts
    // behind it, with the same key and known_hosts (keyed by address).
    let mut text = format!("Include {}\n", hosts.ssh_config.display());
    for h in [h1, h2] {
        text.push_str(&format!(
            "Host jumped-{}\n  HostName {}\n  ProxyJump {}\n  User root\n  IdentityFile {}\n  \
             UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n  \
             BatchMode yes\n  LogLevel ERROR\n",
            h.name,
            h.ip,
            h0.name,
            hosts.dir.join("id_ed25519").display(),
            hosts.dir.join("known_hosts").display(),
        ));
    }
    std::fs::write(&cfg, text).expect("ssh_config");
    let spec = Spec {
        hosts: vec![
            format!("jumped-{}", h1.name),
            format!("jumped-{}", h2.name),
            h0.name.clone(),
        ],
        ssh_config: Some(cfg.display().to_string()),
        env_lines: vec!["connect_parallel = 1".into()],
        settle: "0s".into(),
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-jump", 18107, spec).in_git();
    let run = app.deploy(&[], 0);
    for h in [h0, h1, h2] {
        app.assert_version(h, "0.1.0", Some(&run));
    }
    for h in [h1, h2] {
        let log = h.exec_ok("journalctl -u ssh --no-pager -o cat");
        let from_jump = format!("Accepted publickey for root from {} ", h0.ip);
        app.check(
            log.contains(&from_jump),
            format!(
                "{} should have seen a login from the jump host ({from_jump:?})",
                h.name
            ),
            Some(&run),
        );
    }
}
