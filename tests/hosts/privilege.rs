//! Issue #16: least privilege that holds. After `cargo ship setup`, the deploy user tried to
//! become root through the per-unit helper `ship-root` (a unit text whose NUL bytes hide a
//! root `ExecStartPre=+` or a second `User=root` from the helper's line check, but not from
//! systemd). The helper now installs only the unit texts setup (root) fixed: nothing the
//! deploy user sends becomes a unit file.

use crate::app::{App, Spec};
use crate::host::{self, TestHost};
use crate::setup::{exec_as, text};

/// `Error::Usage`: refused before anything connects.
const EXIT_USAGE: i32 = 2;
const HELPER_DIR_PLANT: &str = "/usr/local/lib/cargo-ship/ship-plant";

const DEPLOY_USER: &str = "shippriv";
const SERVICE_USER: &str = "shipprivsvc";
const NAME: &str = "ship-priv";
const HELPER: &str = "/usr/local/lib/cargo-ship/ship-priv/ship-root";

/// Runs `cmd` as the deploy user with `stdin`; returns its output text (any status).
fn as_deployer(h: &TestHost, cmd: &str, stdin: &str) -> String {
    text(&exec_as(h, DEPLOY_USER, cmd, stdin))
}

/// The deploy user pipes a unit text to the helper's install path, reloads and restarts the
/// service through the helper: the way the escalation was done.
fn plant(h: &TestHost, file: &str, unit_text: &str) -> String {
    let mut out = as_deployer(
        h,
        &format!("sudo -n {HELPER} tee /etc/systemd/system/{file}"),
        unit_text,
    );
    out += &as_deployer(
        h,
        &format!(
            "sudo -n {HELPER} systemctl daemon-reload; sudo -n {HELPER} systemctl restart {NAME}.service"
        ),
        "",
    );
    out
}

#[test]
fn issue_16_deploy_user_cannot_become_root_through_the_helper() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec![format!("{DEPLOY_USER}@host0")],
        ship_lines: vec!["sudo = true".into()],
        systemd_lines: vec![format!("user = \"{SERVICE_USER}\"")],
        ..Spec::default()
    };
    let app = App::new(hosts, NAME, 18761, spec);
    let h = app.host(0);
    let key = hosts.dir.join("id_ed25519.pub");
    h.exec("rm -f /root/ship-priv-owned");
    app.run_expect(
        &["setup", "test", "--authorized-key", key.to_str().unwrap()],
        0,
    );
    let run = app.deploy(&[], 0);
    app.assert_version(h, "0.1.0", Some(&run));
    // Item 10: the helper is a script with its interpreter line.
    assert_eq!(h.exec_ok(&format!("head -n 1 {HELPER}")), "#!/bin/sh\n");
    let unit = h.exec_ok(&format!("cat /etc/systemd/system/{NAME}.service"));

    // 1. NUL bytes hide a root pre-start in the [Unit] section (systemd reads NUL as a line
    //    break; the shell's `read` drops it).
    let nul = format!(
        "{unit}[Unit]\nDescription=x\0[Service]\0ExecStartPre=+/bin/sh -c \"id > /root/ship-priv-owned\"\n"
    );
    let out1 = plant(h, &format!("{NAME}.service"), &nul);
    let owned = h.exec("cat /root/ship-priv-owned");
    // 2. A hidden second User=root after the visible one.
    let hidden = format!("{unit}[Unit]\nDescription=x\0[Service]\0User=root\n");
    let out2 = plant(h, &format!("{NAME}.service"), &hidden);
    let user = h.unit_property(&format!("{NAME}.service"), "User");
    let pid = h.unit_property(&format!("{NAME}.service"), "MainPID");
    let runs_as = h.exec_ok(&format!("ps -o user= -p {pid}"));
    // 3. The guard unit (the dead-man's switch runs it) and a restore from units.prev, the
    //    deploy user's own directory.
    let guard = h.exec_ok(&format!("cat /etc/systemd/system/{NAME}-guard.service"));
    let out3 = as_deployer(
        h,
        &format!("sudo -n {HELPER} tee /etc/systemd/system/{NAME}-guard.service"),
        &format!("{guard}[Unit]\nDescription=x\0[Service]\0ExecStartPre=+/bin/sh -c \"id > /root/ship-priv-owned\"\n"),
    );
    let prev = format!("/opt/{NAME}/.ship/units.prev");
    let out4 = as_deployer(
        h,
        &format!(
            "mkdir -p {prev} && cat > {prev}/{NAME}.service && sudo -n {HELPER} restore {NAME}.service; \
             sudo -n {HELPER} systemctl daemon-reload; sudo -n {HELPER} systemctl restart {NAME}.service"
        ),
        &hidden,
    );
    let after = (
        h.exec_ok(&format!("cat /etc/systemd/system/{NAME}.service")),
        h.exec_ok(&format!("cat /etc/systemd/system/{NAME}-guard.service")),
        h.unit_property(&format!("{NAME}.service"), "User"),
    );
    h.exec("rm -f /root/ship-priv-owned");
    let what = format!("NUL:\n{out1}\nhidden User=root:\n{out2}\nguard:\n{out3}\nrestore:\n{out4}");
    assert!(
        !owned.status.success(),
        "a hidden root ExecStartPre ran: /root/ship-priv-owned holds {}\n{what}",
        String::from_utf8_lossy(&owned.stdout)
    );
    assert_eq!(
        (user.as_str(), runs_as.trim()),
        (SERVICE_USER, SERVICE_USER),
        "the service's User= and the user of its process after a hidden User=root\n{what}"
    );
    assert_eq!(
        after,
        (unit.clone(), guard.clone(), SERVICE_USER.to_string()),
        "the unit files and the service's user after the attempts\n{what}"
    );
    for (out, expect) in [
        (&out1, format!("ship-root: refused: tee /etc/systemd/system/{NAME}.service (the deploy user never supplies unit text: setup fixed every unit file of {NAME})")),
        (&out3, format!("ship-root: refused: tee /etc/systemd/system/{NAME}-guard.service (the deploy user never supplies unit text: setup fixed every unit file of {NAME})")),
    ] {
        assert!(out.contains(&expect), "expected {expect:?} in\n{out}");
    }
}

/// Item 9: setup adopted any account or group named in Cargo.toml: a root-equivalent group
/// is refused before any connection; a system account it did not create needs
/// `--adopt-existing-user`. Item 2: a rerun of setup followed the deploy user's symlinks as
/// root (`shared/data -> /root` made it `chmod 0755 /root`; `shared -> /var` made it
/// `chown -R` `/var/data` to the service user); now it refuses and leaves both alone.
#[test]
fn issue_16_setup_adopts_no_account_and_follows_no_symlink() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let (deployer, svc, old) = ("shipplant", "shipplantsvc", "shipplantold");
    let spec = Spec {
        hosts: vec![format!("{deployer}@host0")],
        ship_lines: vec!["sudo = true".into()],
        systemd_lines: vec![format!("user = \"{old}\""), "group = \"disk\"".into()],
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-plant", 18762, spec);
    let h = app.host(0);
    let key = hosts.dir.join("id_ed25519.pub");
    let key = key.to_str().unwrap();
    let setup = |app: &App, code: i32, extra: &[&str]| {
        let mut args = vec!["setup", "test", "--authorized-key", key];
        args.extend_from_slice(extra);
        app.run_expect(&args, code)
    };
    // A root-equivalent group: refused before anything connects.
    let run = setup(&app, EXIT_USAGE, &[]);
    app.check(
        run.stderr.contains("error: `cargo ship setup` will not run the service in group disk: its members are root, or close to it"),
        "the group disk should be refused",
        Some(&run),
    );
    // An existing system account setup did not create: refused on the host, before the sudoers
    // file or the helper exist; adopted with the flag.
    h.exec_ok(&format!(
        "useradd --system --no-create-home --shell /usr/sbin/nologin {old}"
    ));
    app.update(|s| s.systemd_lines.truncate(1));
    let run = setup(&app, crate::app::EXIT_REMOTE, &[]);
    let sudoers = "/etc/sudoers.d/cargo-ship-ship-plant";
    let refused_state = h.exec(&format!("test -e {sudoers} || test -e {HELPER_DIR_PLANT}"));
    app.check(
        run.stderr.contains(&format!("the service user {old} already exists on this host and cargo ship setup did not create it: the deploy user may run anything as the service user, so it would act as that account; pass --adopt-existing-user to use it anyway")),
        "an existing system account should be refused",
        Some(&run),
    );
    app.check(
        !refused_state.status.success(),
        "setup went on after the refusal",
        Some(&run),
    );
    setup(&app, 0, &["--adopt-existing-user"]);
    // Its own service user from now on.
    app.update(|s| s.systemd_lines[0] = format!("user = \"{svc}\""));
    setup(&app, 0, &[]);
    let before = h.exec_ok("stat -c '%a %U' /root");
    h.exec_ok("mkdir -p /var/data && chown root:root /var/data && chmod 0700 /var/data");
    let var_before = h.exec_ok("stat -c '%a %U:%G' /var/data");

    // shared/data -> /root, then setup again.
    let planted = exec_as(
        h,
        deployer,
        "cd /opt/ship-plant/shared && rm -r data && ln -s /root data",
        "",
    );
    assert!(planted.status.success(), "{}", text(&planted));
    let run1 = setup(&app, crate::app::EXIT_REMOTE, &[]);
    let root_after = h.exec_ok("stat -c '%a %U' /root");
    // shared -> /var, then setup again.
    let planted = exec_as(
        h,
        deployer,
        "cd /opt/ship-plant && rm shared/data && mv shared shared.old && ln -s /var shared",
        "",
    );
    assert!(planted.status.success(), "{}", text(&planted));
    let run2 = setup(&app, crate::app::EXIT_REMOTE, &[]);
    let var_after = h.exec_ok("stat -c '%a %U:%G' /var/data");
    h.exec("rmdir /var/data");
    app.check_eq(
        (root_after, var_after),
        (before, var_before),
        "the mode of /root and the owner of /var/data after the setup reruns",
        Some(&run2),
    );
    for run in [&run1, &run2] {
        app.check(
            run.stderr.contains(&format!("shared dir /opt/ship-plant/shared/data is not a directory of its own under deploy_to (a symlink on the way?): setup will not give it to {svc}")),
            "the rerun should say why it stopped",
            Some(run),
        );
    }
}

/// Item 3: a service whose unit is another service's dead-man's switch (`x` and `x-guard`)
/// is refused on the host, before anything changes: the header of every unit file names the
/// unit and deploy_to it belongs to.
#[test]
fn issue_16_unit_of_another_service_is_refused_on_the_host() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let first = App::new(hosts, "ship-coll", 18763, Spec::default());
    let h = first.host(0);
    first.deploy(&[], 0);
    let guard_before = h.exec_ok("sha256sum /etc/systemd/system/ship-coll-guard.service");
    let second = App::new(hosts, "ship-coll-guard", 18764, Spec::default());
    let run = second.run_expect(&["deploy", "test"], crate::app::EXIT_PREFLIGHT);
    second.check(
        run.stderr.contains(
            "unit ship-coll-guard.service already exists in /etc/systemd/system/ship-coll-guard.service and belongs to \
             another service deployed by cargo-ship (its first line: # Generated by cargo-ship for unit ship-coll in \
             /opt/ship-coll; changes here are replaced by the next deploy.): a deploy or rollback would replace or \
             remove it; give this service a systemd.unit of its own",
        ),
        "the second service should be refused, naming the owner of the unit file",
        Some(&run),
    );
    second.check_eq(
        (
            h.exec_ok("sha256sum /etc/systemd/system/ship-coll-guard.service"),
            h.exec("test -e /opt/ship-coll-guard").status.success(),
        ),
        (guard_before, false),
        "the first service's guard unit and the second's deploy_to after the refusal",
        Some(&run),
    );
    first.assert_version(h, "0.1.0", Some(&run));
}
