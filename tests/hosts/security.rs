//! Issue #9, part 3: the security review's findings that concern a host, each reproduced on a
//! real test host and refused. (The ones that need no host are in tests/cli/security.rs.)

use std::io::Read;

use crate::app::{App, Spec, EXIT_PREFLIGHT, EXIT_REMOTE};
use crate::host::{self, TestHost};

/// Everything under `dir` (type, mode, owner, size, mtime, link target, content hash) and the
/// switch record: equal snapshots mean nothing there changed.
fn snapshot(h: &TestHost, dir: &str) -> String {
    h.exec_ok(&format!(
        "cd {dir} && find . -printf '%p %y %m %U:%G %s %T@ %l\\n' | LC_ALL=C sort; \
         find . -type f -exec sha256sum {{}} + | LC_ALL=C sort; \
         echo switching:; cat .ship/switching 2>/dev/null || echo '(none)'"
    ))
}

/// `prune --dry-run` took the lock, created directories, removed unfinished releases and
/// deleted `.ship/switching`. Now it only reads: the host is unchanged, byte for byte; so it
/// is after `rollback --dry-run` and `deploy --dry-run`.
#[test]
fn issue_9_prune_dry_run_changes_nothing_on_the_host() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-sec-prune", 18951, Spec::default());
    let h = app.host(0);
    app.deploy(&[], 0);
    let d = app.deploy_to();
    // Two older releases (the newer one is the rollback target), an unfinished one left by an
    // interrupted deploy, and the record of an interrupted switch.
    h.exec_ok(&format!(
        "cd {d} && cur=$(readlink current) && cp -a \"$cur\" releases/20000101000000 && \
         cp -a \"$cur\" releases/20000102000000 && mkdir releases/20991231000000 && \
         : > .ship/unfinished/20991231000000 && echo 20000102000000 > .ship/switching"
    ));
    let before = snapshot(h, &d);
    let run = app.run_expect(&["prune", "test", "--dry-run", "--keep", "1"], 0);
    let after = snapshot(h, &d);
    let only = |a: &str, b: &str| -> Vec<String> {
        a.lines()
            .filter(|l| !b.lines().any(|m| m == *l))
            .map(str::to_string)
            .collect()
    };
    app.check_eq(
        (only(&before, &after), only(&after, &before)),
        (vec![], vec![]),
        "(lines gone, lines new) in a listing of the host after prune --dry-run",
        Some(&run),
    );
    // Nor do the other dry runs.
    for args in [
        &["rollback", "test", "--dry-run"][..],
        &["deploy", "test", "--dry-run"][..],
    ] {
        let other = app.run_expect(args, 0);
        let now = snapshot(h, &d);
        app.check_eq(
            (only(&before, &now), only(&now, &before)),
            (vec![], vec![]),
            &format!("(lines gone, lines new) after {}", args.join(" ")),
            Some(&other),
        );
    }
    app.check(
        run.stderr.contains(
            "host0: would remove 20000101000000 (and unfinished release(s) 20991231000000 left by an interrupted deploy)",
        ),
        "the dry run should say what a prune would remove",
        Some(&run),
    );
    // The real prune then does it.
    let real = app.run_expect(&["prune", "test", "--keep", "1"], 0);
    app.check(
        !app.exists(h, "releases/20000101000000") && !app.exists(h, "releases/20991231000000"),
        "the real prune removes the old and the unfinished release",
        Some(&real),
    );
}

/// A unit name taken by a unit cargo-ship did not write (as `ssh` is) was overwritten, and a
/// failed first deploy then stopped and disabled it; deploy_to under a directory every user can
/// write was accepted. Both are refused in preflight, before anything changes.
#[test]
fn issue_9_foreign_unit_and_world_writable_deploy_to_are_refused() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-sec-foreign";
    let h = hosts.host(0);
    let vendor = format!("/usr/lib/systemd/system/{name}.service");
    h.exec_ok(&format!(
        "printf '[Unit]\\nDescription=not deployed by cargo-ship\\n[Service]\\nExecStart=/bin/sleep infinity\\n' > {vendor} && \
         systemctl daemon-reload && systemctl start {name}.service && \
         mkdir -p /srv/ship-sec-ww && chmod 1777 /srv/ship-sec-ww && \
         printf '[Socket]\\nListenStream=127.0.0.1:18999\\n' > /etc/systemd/system/{name}.socket"
    ));
    let vendor_before = h.exec_ok(&format!("sha256sum {vendor}"));
    // A socket unit of that name, not cargo-ship's: the restart strategy would remove it.
    let socket_before = h.exec_ok(&format!("sha256sum /etc/systemd/system/{name}.socket"));
    // Where systemd says it loads the unit from (/lib/... on merged-/usr Debian).
    let fragment = h.unit_property(&format!("{name}.service"), "FragmentPath");
    let app = App::new(hosts, name, 18952, Spec::default());
    app.project.edit(
        "Cargo.toml",
        &format!("deploy_to = \"/opt/{name}\""),
        "deploy_to = \"/srv/ship-sec-ww/app\"",
    );
    let run = app.run_expect(&["deploy", "test"], EXIT_PREFLIGHT);
    let cleanup = || {
        h.exec(&format!(
            "systemctl stop {name}.service; rm -f {vendor} /etc/systemd/system/{name}.service \
             /etc/systemd/system/{name}.socket; \
             systemctl daemon-reload; rm -rf /srv/ship-sec-ww /opt/{name}"
        ));
    };
    let expect = [
        format!(
            "unit {name}.service already exists in {fragment} and was not written by cargo-ship: a deploy or \
             rollback would replace or remove it; set systemd.unit to a name of its own, or remove that unit first"
        ),
        format!(
            "unit {name}.socket already exists in /etc/systemd/system/{name}.socket and was not written by \
             cargo-ship: a deploy or rollback would replace or remove it; set systemd.unit to a name of its own, \
             or remove that unit first"
        ),
        "/srv/ship-sec-ww is writable by every local user (mode 1777): deploy_to must not be in or under such a \
         directory; choose another deploy_to, or chmod o-w /srv/ship-sec-ww"
            .to_string(),
    ];
    for problem in &expect {
        if !run.stderr.contains(problem.as_str()) {
            cleanup();
            app.fail(&format!("stderr should say: {problem}"), Some(&run));
        }
    }
    let state = (
        h.exec_ok(&format!("sha256sum {vendor}"))
            + &h.exec_ok(&format!("sha256sum /etc/systemd/system/{name}.socket")),
        h.exec(&format!("test -e /etc/systemd/system/{name}.service"))
            .status
            .success(),
        h.unit_property(&format!("{name}.service"), "ActiveState"),
        h.exec("test -e /srv/ship-sec-ww/app").status.success(),
    );
    cleanup();
    app.check_eq(
        state,
        (
            vendor_before + &socket_before,
            false,
            "active".to_string(),
            false,
        ),
        "the foreign unit (file, no override, running) and deploy_to after the refusal",
        Some(&run),
    );
}

/// Rollback rewrites and restarts the unit too: with `systemd.unit` naming a unit cargo-ship
/// did not write, it is refused before anything changes.
#[test]
fn issue_9_rollback_refuses_a_foreign_unit() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-sec-rbunit";
    let foreign = "ship-sec-rbforeign";
    let h = hosts.host(0);
    let app = App::new(hosts, name, 18955, Spec::default());
    app.deploy(&[], 0);
    let second = app.deploy(&[], 0);
    let current = app.deployed_release(&second, "host0");
    let vendor = format!("/usr/lib/systemd/system/{foreign}.service");
    h.exec_ok(&format!(
        "printf '[Unit]\\nDescription=not deployed by cargo-ship\\n[Service]\\nExecStart=/bin/sleep infinity\\n' > {vendor} && \
         systemctl daemon-reload && systemctl start {foreign}.service"
    ));
    let fragment = h.unit_property(&format!("{foreign}.service"), "FragmentPath");
    let vendor_before = h.exec_ok(&format!("sha256sum {vendor}"));
    let invocation = h.unit_property(&format!("{foreign}.service"), "InvocationID");
    app.project.edit(
        "Cargo.toml",
        &format!("unit = \"{name}\""),
        &format!("unit = \"{foreign}\""),
    );
    let run = app.run("rollback test".split(' ').collect::<Vec<_>>().as_slice());
    let state = (
        run.code,
        h.exec_ok(&format!("sha256sum {vendor}")),
        h.exec(&format!("test -e /etc/systemd/system/{foreign}.service"))
            .status
            .success(),
        h.unit_property(&format!("{foreign}.service"), "InvocationID"),
        app.current(h),
    );
    h.exec(&format!(
        "systemctl stop {foreign}.service; rm -f {vendor} /etc/systemd/system/{foreign}.service; systemctl daemon-reload"
    ));
    app.check_eq(
        state,
        (
            EXIT_PREFLIGHT,
            vendor_before,
            false,
            invocation,
            Some(current),
        ),
        "(exit code, foreign unit file, override written, its process, current) after the rollback",
        Some(&run),
    );
    app.check(
        run.stderr.contains(&format!(
            "error: host0: preflight failed: unit {foreign}.service already exists in {fragment} and was not \
             written by cargo-ship: a deploy or rollback would replace or remove it; set systemd.unit to a name \
             of its own, or remove that unit first"
        )),
        "the refusal should name the unit and where it is",
        Some(&run),
    );
}

/// The hello artifact (built by the project) decoded to its tar entries.
fn entries_of(path: &std::path::Path) -> Vec<(tar::Header, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(zstd::stream::Decoder::new(file).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (e.header().clone(), data)
        })
        .collect()
}

/// A crafted `--artifact` (here: the real one plus a symlink `data` -> `/etc`, where a shared
/// dir is linked) was unpacked as root. It is refused when opened, before any connection; and
/// the host-side unpack, run on the host with its own GNU tar, refuses it too.
#[test]
fn issue_9_crafted_artifact_is_refused_before_and_on_the_host() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-sec-crafted", 18953, Spec::default());
    let h = app.host(0);
    let built = app.run_expect(&["build", "--message-format", "json"], 0);
    // Where the store is depends on CARGO_TARGET_DIR: take the path the build reports.
    let real = std::path::PathBuf::from(
        built
            .events()
            .iter()
            .find(|e| e["event"] == "artifact")
            .and_then(|e| e["path"].as_str())
            .unwrap_or_else(|| app.fail("the build reported no artifact", Some(&built)))
            .to_string(),
    );
    let mut tar = tar::Builder::new(Vec::new());
    for (mut header, data) in entries_of(&real) {
        let path = header.path().unwrap().into_owned();
        tar.append_data(&mut header, path, &data[..]).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o777);
    link.set_size(0);
    tar.append_link(&mut link, "data", "/etc").unwrap();
    let tar_bytes = tar.into_inner().unwrap();
    let crafted = app.project.path("crafted.tar.zst");
    std::fs::write(&crafted, zstd::encode_all(&tar_bytes[..], 3).unwrap()).unwrap();

    let run = app.run_expect(
        &["deploy", "test", "--artifact", crafted.to_str().unwrap()],
        4,
    );
    app.check(
        run.stderr.contains(&format!(
            "failed to check the artifact {}: entry \"data\" is a symlink to \"/etc\"; an artifact holds only \
             regular files and directories",
            crafted.display()
        )),
        "the crafted artifact should be refused when opened",
        Some(&run),
    );
    app.check(
        !app.exists(h, &app.deploy_to()),
        "nothing may be created on the host",
        Some(&run),
    );

    // The host side: the stage script's unpack lines, on the host, as root.
    let manifest = cargo_ship::package::read_manifest(&real).unwrap();
    let dir = "/var/lib/ship-sec-unpack";
    let mut s = cargo_ship::remote::script::Script::new("unpack");
    s.lines("umask 022");
    cargo_ship::package::unpack::unpack_lines(
        &mut s,
        cargo_ship::remote::transfer::Encoding::Tar,
        &format!("{dir}/crafted.tar"),
        &format!("{dir}/rel"),
        &format!("{dir}/unfinished"),
        &manifest,
    );
    s.lines("echo unpacked");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("crafted.tar"), &tar_bytes).unwrap();
    std::fs::write(tmp.path().join("unpack.sh"), s.render().unwrap()).unwrap();
    h.exec_ok(&format!(
        "rm -rf {dir} && mkdir -p {dir}/rel && : > {dir}/unfinished"
    ));
    let scp = std::process::Command::new("scp")
        .arg("-F")
        .arg(&hosts.ssh_config)
        .arg(tmp.path().join("crafted.tar"))
        .arg(tmp.path().join("unpack.sh"))
        .arg(format!("{}:{dir}/", h.ssh_target()))
        .output()
        .unwrap();
    assert!(
        scp.status.success(),
        "{}",
        String::from_utf8_lossy(&scp.stderr)
    );
    let out = h.exec(&format!("sh {dir}/unpack.sh"));
    let left = h.exec_ok(&format!(
        "ls -A {dir}; test -e /etc/passwd && echo etc-intact"
    ));
    h.exec(&format!("rm -rf {dir}"));
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            left
        ),
        (
            Some(76),
            String::new(),
            "refusing the artifact: it holds entries that are neither regular files nor directories: data \n"
                .to_string(),
            "crafted.tar\nunpack.sh\netc-intact\n".to_string()
        ),
        "the host-side unpack must refuse the crafted archive and remove the release dir"
    );
}

/// Text from hosts (a hook's stderr here) reached the terminal with its escape sequences
/// (retitle the window, clear the screen). They are shown escaped now.
#[test]
fn issue_9_escape_sequences_from_hosts_do_not_reach_the_terminal() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        before_switch: vec!["printf 'boom \\033]0;owned\\007\\033[2J\\n' >&2; exit 1".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-sec-escape", 18954, spec);
    let run = app.run_expect(&["deploy", "test"], EXIT_REMOTE);
    app.check(
        !run.stderr.contains('\x1b') && !run.stderr.contains('\x07'),
        "no raw escape character may reach the terminal",
        Some(&run),
    );
    app.check(
        run.stderr.contains("boom \\x1b]0;owned\\x07\\x1b[2J"),
        "the hook's output should be shown, escaped",
        Some(&run),
    );
}
