//! `cargo ship setup` (issue #9 part 2) on a real host: an admin prepares it for a fresh
//! non-root deploy user; that user then deploys, rolls back, prunes, reads logs and status,
//! while every other privilege is refused on the host itself.

use std::process::{Command, Output, Stdio};

use crate::app::{App, Spec};
use crate::host::{self, TestHost};

const DEPLOY_USER: &str = "shipper";
const SERVICE_USER: &str = "shipsvc";
const HELPER: &str = "/usr/local/lib/cargo-ship/ship-setup/ship-root";

/// `cmd` run by `user`'s login shell on `h` over ssh; `stdin` is fed to it.
pub(crate) fn exec_as(h: &TestHost, user: &str, cmd: &str, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(&h.ssh_config)
        .args(["-l", user, &h.name, "--", cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ssh output")
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that the deploy user's `cmd` fails, and that its stderr contains `expect`.
fn refused(h: &TestHost, cmd: &str, stdin: &str, expect: &str) {
    let out = exec_as(h, DEPLOY_USER, cmd, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(expect),
        "`{cmd}` as {DEPLOY_USER} should be refused with {expect:?}\n{}",
        text(&out)
    );
}

#[test]
fn issue_9_setup_then_deploy_as_a_least_privileged_user() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec![format!("{DEPLOY_USER}@host0")],
        ship_lines: vec!["sudo = true".into()],
        systemd_lines: vec![format!("user = \"{SERVICE_USER}\"")],
        // Hooks and the health command run as the service user.
        before_switch: vec!["echo \"$(id -un) $SHIP_RELEASE\" > data/hook-user".into()],
        health_command: Some(format!("test \"$(id -un)\" = {SERVICE_USER}")),
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-setup", 18741, spec);
    let h = app.host(0);
    let row = format!("{DEPLOY_USER}@host0");
    let key = hosts.dir.join("id_ed25519.pub");
    let key = key.to_str().expect("utf-8 path");

    // A dry run prints the script and changes nothing.
    let dry = app.run_expect(&["setup", "test", "--dry-run", "--authorized-key", key], 0);
    assert!(
        dry.all_output().contains("visudo -cf"),
        "{}",
        dry.describe()
    );
    assert!(
        !h.exec(&format!("id -u {DEPLOY_USER}")).status.success(),
        "--dry-run created the deploy user"
    );

    // Before setup, the deploy user cannot log in.
    let first = app.run_expect(&["setup", "test", "--authorized-key", key], 0);
    let out = first.all_output();
    for done in [
        "created service user shipsvc",
        "created deploy user shipper",
        "added 1 key(s)",
        "installed /usr/local/lib/cargo-ship/ship-setup/ship-root",
        "installed /etc/sudoers.d/cargo-ship-ship-setup",
    ] {
        assert!(out.contains(done), "no {done:?}\n{}", first.describe());
    }
    // Idempotent: a second run changes nothing.
    let again = app.run_expect(&["setup", "test", "--authorized-key", key], 0);
    assert!(
        !again.all_output().contains("created") && !again.all_output().contains("installed"),
        "{}",
        again.describe()
    );
    assert_eq!(
        h.exec_ok("stat -c '%U %a' /opt/ship-setup /opt/ship-setup/shared/data /etc/sudoers.d/cargo-ship-ship-setup /usr/local/lib/cargo-ship/ship-setup/ship-root"),
        "shipper 755\nshipsvc 755\nroot 440\nroot 755\n"
    );

    // Deploy as the deploy user, through the helper.
    let run = app.deploy(&[], 0);
    let r1 = app.deployed_release(&run, &row);
    app.assert_version(h, "0.1.0", Some(&run));
    assert_eq!(
        h.unit_property("ship-setup.service", "User"),
        SERVICE_USER,
        "the service's user"
    );
    let pid = h.unit_property("ship-setup.service", "MainPID");
    assert_eq!(
        h.exec_ok(&format!("ps -o user= -p {pid}")).trim(),
        SERVICE_USER
    );
    assert_eq!(
        h.exec_ok("cat /opt/ship-setup/shared/data/hook-user")
            .trim(),
        format!("{SERVICE_USER} {r1}"),
        "before_switch ran as"
    );
    assert_eq!(
        h.exec_ok(&format!(
            "stat -c %U /opt/ship-setup/releases/{r1}/ship-setup"
        ))
        .trim(),
        DEPLOY_USER
    );
    // The service's user writes its shared dir, not its release or binary.
    h.exec_ok(&format!(
        "runuser -u {SERVICE_USER} -- touch /opt/ship-setup/shared/data/written"
    ));
    for path in [
        format!("/opt/ship-setup/releases/{r1}/x"),
        format!("/opt/ship-setup/releases/{r1}/ship-setup"),
    ] {
        let out = h.exec(&format!("runuser -u {SERVICE_USER} -- touch {path}"));
        assert!(!out.status.success(), "{SERVICE_USER} could write {path}");
    }
    // The dead-man's switch runs as the deploy user.
    assert_eq!(
        h.unit_property("ship-setup-guard.service", "User"),
        DEPLOY_USER
    );

    // Everything else is refused to the deploy user.
    let shadow_before = h.exec_ok("sha256sum /etc/shadow");
    refused(h, "sudo -n sh -c id", "", "sudo");
    refused(h, "sudo -n cat /etc/shadow", "", "sudo");
    refused(h, "sudo -n systemctl restart ssh.service", "", "sudo");
    refused(h, "sudo -n tee /etc/systemd/system/x.service", "", "sudo");
    refused(
        h,
        &format!("sudo -n {HELPER} systemctl restart ssh.service"),
        "",
        "ship-root: refused: systemctl restart ssh.service (the deploy user may only manage unit ship-setup through cargo-ship)",
    );
    refused(
        h,
        &format!("sudo -n {HELPER} journalctl -u ssh.service"),
        "",
        "ship-root: refused: journalctl -u ssh.service",
    );
    refused(
        h,
        &format!("sudo -n {HELPER} tee /etc/systemd/system/ssh.service"),
        "[Service]\nExecStart=/bin/sh\n",
        "ship-root: refused: tee /etc/systemd/system/ssh.service (the deploy user never supplies unit text: setup fixed every unit file of ship-setup)",
    );
    refused(
        h,
        &format!("sudo -n {HELPER} cp -- /etc/shadow /tmp/x"),
        "",
        "ship-root: refused: cp -- /etc/shadow /tmp/x",
    );
    // Issue #16: unit files are named, never sent: the installed unit with the service user
    // swapped for root, with a root pre-start, or with the very text setup fixed, is refused
    // alike; and only the names setup fixed can be installed.
    let unit = h.exec_ok("cat /etc/systemd/system/ship-setup.service");
    let tee = format!("sudo -n {HELPER} tee /etc/systemd/system/ship-setup.service");
    let no_text = "ship-root: refused: tee /etc/systemd/system/ship-setup.service (the deploy user never supplies unit text: setup fixed every unit file of ship-setup)";
    for text in [
        unit.replace("User=shipsvc", "User=root"),
        unit.replace("User=shipsvc\n", ""),
        unit.replace(
            "[Service]\n",
            "[Service]\nExecStartPre=+/bin/sh -c 'id > /root/x'\n",
        ),
        unit.replace("User=shipsvc\n", "User=shipsvc\\\nUser=root\n"),
        unit.clone(),
    ] {
        refused(h, &tee, &text, no_text);
    }
    refused(
        h,
        &format!("sudo -n {HELPER} install ssh.service"),
        "",
        "ship-root: refused: install ssh.service: cargo ship setup fixed no unit file of that name for ship-setup; run cargo ship setup again (it needs root)",
    );
    refused(
        h,
        &format!("sudo -n {HELPER} install ../../../../etc/passwd"),
        "",
        "ship-root: refused: install ../../../../etc/passwd (the deploy user may only manage unit ship-setup through cargo-ship)",
    );
    refused(
        h,
        &format!("sudo -n {HELPER} remove ssh.service"),
        "",
        "ship-root: refused: remove ssh.service (the deploy user may only manage unit ship-setup through cargo-ship)",
    );
    assert_eq!(
        h.exec_ok("cat /etc/systemd/system/ship-setup.service"),
        unit,
        "a refused unit text reached the unit file"
    );
    assert_eq!(h.exec_ok("sha256sum /etc/shadow"), shadow_before);
    assert!(
        h.exec_ok("systemctl is-active ssh.service").trim() == "active",
        "ssh.service"
    );

    // A second version, status, logs, a rollback and a prune: all as the deploy user.
    app.update(|s| s.version = "0.2.0".into());
    let run = app.deploy(&[], 0);
    app.assert_version(h, "0.2.0", Some(&run));
    let status = app.run_expect(&["status", "test"], 0);
    assert!(
        status.all_output().contains("0.2.0"),
        "{}",
        status.describe()
    );
    let logs = app.run_expect(&["logs", "test", "-n", "20"], 0);
    assert!(
        !logs.all_output().contains("refused"),
        "{}",
        logs.describe()
    );
    // exec: the helper runs the command as the service's user, with the service's environment.
    let ex = app.run_expect(
        &[
            "exec",
            "test",
            "--",
            "sh",
            "-c",
            "echo \"user=$(id -un) dir=$(pwd) path=$PATH\"",
        ],
        0,
    );
    // Once, in the current release, with the service's PATH.
    let lines: Vec<&str> = ex.stdout.lines().filter(|l| l.contains("user=")).collect();
    assert_eq!(
        lines,
        [format!("shipper@host0: user={SERVICE_USER} dir=/opt/ship-setup/releases/{} path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", app.current(h).unwrap())],
        "{}",
        ex.describe()
    );
    let rb = app.run_expect(&["rollback", "test"], 0);
    app.assert_version(h, "0.1.0", Some(&rb));
    assert_eq!(app.current(h), Some(r1.clone()), "current after rollback");
    // A third release; prune keeps it (current) and the rollback target (the one before it).
    let r2 = h
        .exec_ok("ls /opt/ship-setup/releases")
        .lines()
        .find(|r| *r != r1)
        .map(str::to_string)
        .expect("second release");
    app.update(|s| s.version = "0.3.0".into());
    let run = app.deploy(&[], 0);
    let r3 = app.deployed_release(&run, &row);
    app.run_expect(&["prune", "test", "--keep", "1"], 0);
    assert_eq!(
        h.exec_ok("ls /opt/ship-setup/releases"),
        format!("{r2}\n{r3}\n"),
        "prune removed {r1} only"
    );

    // The dead-man's switch fires as the deploy user and puts the previous release back
    // through the helper: an unconfirmed switch to r3 (recorded as its deploy would).
    h.exec_ok(&format!(
        "runuser -u {DEPLOY_USER} -- sh -c 'printf \"release={r3}\\nprevious={r2}\\nholder=test\\ndeadline=0\\n\" > /opt/ship-setup/.ship/pending' && systemctl start ship-setup-guard.service"
    ));
    // The guard is Type=exec: `start` returns once it runs; wait for its revert to end.
    h.exec_ok(
        "for _ in $(seq 600); do systemctl is-active -q ship-setup-guard.service || exit 0; sleep 0.1; done; exit 1",
    );
    let journal = h.exec_ok("journalctl -u ship-setup-guard.service --no-pager -o cat");
    assert!(
        journal.contains(&format!("reverted release {r3}")),
        "{journal}"
    );
    assert!(!journal.contains("refused"), "{journal}");
    assert_eq!(
        app.current(h),
        Some(r2.clone()),
        "current after the guard fired"
    );
    app.assert_version(h, "0.2.0", None);
    assert_eq!(h.unit_property("ship-setup.service", "User"), SERVICE_USER);
}

/// `cargo ship deploy test --message-format json <extra>` with the secret's value in the
/// environment, expecting `code`.
fn deploy_with_secret(app: &App, value: &str, extra: &[&str], code: i32) -> crate::app::Run {
    let mut args = vec!["deploy", "test", "--message-format", "json"];
    args.extend_from_slice(extra);
    let out = app
        .ship()
        .env("SHIP_SETUP_SECRET", value)
        .args(&args)
        .timeout(std::time::Duration::from_secs(240))
        .output()
        .expect("run cargo ship");
    let run = crate::app::Run::from_output(args.iter().map(|s| s.to_string()).collect(), &out);
    if run.code != code {
        app.fail(&format!("expected exit code {code}"), Some(&run));
    }
    run
}

fn secret_seen(app: &App) -> String {
    match app
        .host(0)
        .http_get(app.port, "/env?name=SHIP_SETUP_SECRET")
    {
        Some((200, body)) => body,
        other => app.fail(&format!("GET /env answered {other:?}"), None),
    }
}

/// Every other verb of the helper: blue-green instances and the socket, the secret file
/// (write, rotate, put back by a revert), a revert of an unhealthy release, and a change of
/// strategy (units removed and disabled), all as a deploy user prepared by setup.
#[test]
fn issue_9_setup_blue_green_secrets_and_reverts_through_the_helper() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18742;
    let spec = Spec {
        hosts: vec!["shipbg@host0".into()],
        ship_lines: vec!["sudo = true".into()],
        timeout: "5s".into(),
        systemd_lines: vec![
            "user = \"shipbgsvc\"".into(),
            "restart = \"blue-green\"".into(),
            format!("listen = [\"0.0.0.0:{port}\"]"),
            "notify = true".into(),
            "secrets = [\"SHIP_SETUP_SECRET\"]".into(),
        ],
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-setup-bg", port, spec);
    let h = app.host(0);
    let key = hosts.dir.join("id_ed25519.pub");
    // A deploy_to that is someone else's directory is never handed over.
    h.exec_ok("mkdir -p /opt/ship-setup-bg && touch /opt/ship-setup-bg/not-cargo-ship");
    let refused = app.run_expect(&["setup", "test"], crate::app::EXIT_REMOTE);
    assert!(
        refused.stderr.contains("deploy_to /opt/ship-setup-bg exists, is not empty and holds no .ship directory: setup will not give it to shipbg"),
        "{}",
        refused.describe()
    );
    assert_eq!(h.exec_ok("stat -c %U /opt/ship-setup-bg"), "root\n");
    h.exec_ok("rm -r /opt/ship-setup-bg");
    // An admin other than root: the script runs through its `sudo -n sh`.
    app.run_expect(
        &[
            "setup",
            "test",
            "--admin-user",
            "deploy",
            "--authorized-key",
            key.to_str().unwrap(),
        ],
        0,
    );

    let run = deploy_with_secret(&app, "first", &[], 0);
    app.assert_version(h, "0.1.0", Some(&run));
    assert_eq!(secret_seen(&app), "first");
    assert_eq!(
        h.exec_ok("stat -c '%U %a' /etc/cargo-ship/ship-setup-bg.env"),
        "root 600\n"
    );
    assert_eq!(
        h.unit_property("ship-setup-bg@blue.service", "User"),
        "shipbgsvc"
    );

    // A rotated secret on the second version (the green instance).
    app.update(|s| s.version = "0.2.0".into());
    let run = deploy_with_secret(&app, "second", &[], 0);
    app.assert_version(h, "0.2.0", Some(&run));
    assert_eq!(secret_seen(&app), "second");
    assert_eq!(
        h.unit_property("ship-setup-bg@green.service", "ActiveState"),
        "active"
    );

    // An unhealthy third version with a new secret: reverted, the old value put back.
    app.update(|s| s.version = "0.3.0".into());
    let run = deploy_with_secret(
        &app,
        "third",
        &["--features", "unhealthy"],
        crate::app::EXIT_ROLLED_BACK,
    );
    app.assert_version(h, "0.2.0", Some(&run));
    assert_eq!(secret_seen(&app), "second");

    // Another strategy: the template is disabled and removed, the service written. Its unit
    // texts are new: only root may fix them (issue #16), so the deploy is refused until setup
    // ran again, before anything changed.
    app.update(|s| {
        s.version = "0.4.0".into();
        s.systemd_lines[1] = "restart = \"socket\"".into();
    });
    let stale = deploy_with_secret(&app, "second", &[], crate::app::EXIT_PREFLIGHT);
    assert!(
        stale.all_output().contains("shipbg@host0: preflight failed: unit file ship-setup-bg.socket as this deploy would write it differs from the one cargo ship setup fixed in /usr/local/lib/cargo-ship/ship-setup-bg/units; \
            unit file ship-setup-bg.service as this deploy would write it differs from the one cargo ship setup fixed in /usr/local/lib/cargo-ship/ship-setup-bg/units; \
            the config (or cargo-ship) changed since setup, and the deploy user cannot install unit text itself: run cargo ship setup for this environment again (as root or an admin)"),
        "{}",
        stale.describe()
    );
    app.assert_version(h, "0.2.0", Some(&stale));
    app.run_expect(&["setup", "test", "--admin-user", "deploy"], 0);
    assert_eq!(
        h.exec_ok("ls /usr/local/lib/cargo-ship/ship-setup-bg/units /usr/local/lib/cargo-ship/ship-setup-bg/units.old"),
        "/usr/local/lib/cargo-ship/ship-setup-bg/units:\nship-setup-bg-guard.service\nship-setup-bg.service\nship-setup-bg.socket\n\n\
         /usr/local/lib/cargo-ship/ship-setup-bg/units.old:\nship-setup-bg-guard.service\nship-setup-bg.socket\nship-setup-bg@.service\n"
    );
    // The first deploy of the new strategy is unhealthy: its revert puts back, through the
    // helper, the unit texts the previous setup fixed (units.old), never the deploy user's
    // copies, and the blue-green instance serves 0.2.0 again.
    let units_before = h
        .exec_ok("cd /etc/systemd/system && sha256sum ship-setup-bg.socket ship-setup-bg@.service");
    let run = deploy_with_secret(
        &app,
        "second",
        &["--features", "unhealthy"],
        crate::app::EXIT_ROLLED_BACK,
    );
    app.assert_version(h, "0.2.0", Some(&run));
    assert_eq!(
        (
            h.exec_ok(
                "cd /etc/systemd/system && sha256sum ship-setup-bg.socket ship-setup-bg@.service"
            ),
            h.exec("test -e /etc/systemd/system/ship-setup-bg.service")
                .status
                .success(),
        ),
        (units_before, false),
        "the unit files after the revert"
    );
    let run = deploy_with_secret(&app, "second", &[], 0);
    app.assert_version(h, "0.4.0", Some(&run));
    assert_eq!(
        h.exec_ok("ls /etc/systemd/system | grep '^ship-setup-bg' | sort"),
        "ship-setup-bg-guard.service\nship-setup-bg-guard.service.d\nship-setup-bg.service\nship-setup-bg.socket\n"
    );
    assert_eq!(
        h.unit_property("ship-setup-bg.service", "User"),
        "shipbgsvc"
    );
}

/// Deploying as root with `systemd.user`: setup creates the service user and gives it the
/// shared dirs (no helper, no sudoers), and hooks and `health.command` run as that user
/// (`runuser`), not as root.
#[test]
fn issue_9_hooks_run_as_the_service_user_when_root_deploys() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec!["root@host0".into()],
        systemd_lines: vec!["user = \"shiprootsvc\"".into()],
        before_switch: vec!["echo \"$(id -un) $SHIP_RELEASE\" > data/before".into()],
        after_switch: vec!["id -un > data/after".into()],
        health_command: Some("test \"$(id -un)\" = shiprootsvc".into()),
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-setup-root", 18743, spec);
    let h = app.host(0);
    let setup = app.run_expect(&["setup", "test"], 0);
    assert!(
        setup
            .all_output()
            .contains("created service user shiprootsvc"),
        "{}",
        setup.describe()
    );
    assert!(
        !h.exec("test -e /etc/sudoers.d/cargo-ship-ship-setup-root")
            .status
            .success(),
        "a sudoers drop-in for a root deployer"
    );
    let run = app.deploy(&[], 0);
    let r1 = app.deployed_release(&run, "root@host0");
    assert_eq!(
        h.exec_ok(
            "cat /opt/ship-setup-root/shared/data/before /opt/ship-setup-root/shared/data/after"
        ),
        format!("shiprootsvc {r1}\nshiprootsvc\n")
    );
    assert_eq!(
        h.unit_property("ship-setup-root.service", "User"),
        "shiprootsvc"
    );
}

/// Issue #18: the dead-man's switch's unit text changed (the switch starts it with the
/// service). A host whose setup fixed an older text refuses the deploy before anything
/// changes, naming the host and the command that fixes it; after `cargo ship setup` again,
/// the deploy goes through.
#[test]
fn issue_18_a_host_set_up_for_an_older_guard_is_told_to_run_setup_again() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec!["ship18@host0".into()],
        ship_lines: vec!["sudo = true".into()],
        systemd_lines: vec!["user = \"ship18svc\"".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-setup-18", 18744, spec);
    let h = app.host(0);
    let key = hosts.dir.join("id_ed25519.pub");
    let key = key.to_str().expect("utf-8 path");
    app.run_expect(&["setup", "test", "--authorized-key", key], 0);
    // What the setup of an older cargo-ship fixed: another text of the guard's unit.
    h.exec_ok("printf '# older\\n' >> /usr/local/lib/cargo-ship/ship-setup-18/units/ship-setup-18-guard.service");
    let stale = app.run_expect(&["deploy", "test"], crate::app::EXIT_PREFLIGHT);
    assert!(
        stale.all_output().contains("ship18@host0: preflight failed: the dead-man's switch's unit file ship-setup-18-guard.service differs from the one cargo ship setup fixed in /usr/local/lib/cargo-ship/ship-setup-18/units: this version of cargo-ship writes a new text for it (issue #18: the switch starts it with the service), or health.confirm_timeout changed; run `cargo ship setup test` again (as root or an admin) before deploying; \
            the config (or cargo-ship) changed since setup, and the deploy user cannot install unit text itself: run cargo ship setup for this environment again (as root or an admin)"),
        "{}",
        stale.describe()
    );
    assert!(!app.exists(h, "current"), "{}", stale.describe());
    app.run_expect(&["setup", "test", "--authorized-key", key], 0);
    let run = app.deploy(&[], 0);
    app.assert_version(h, "0.1.0", Some(&run));
}
