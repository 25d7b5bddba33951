//! Issue #9, part 3: the security review's findings that need no host, each reproduced and
//! refused with its exact error or behaviour. The host-side ones are in tests/hosts/security.rs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cargo_ship::config::{self, Config, LoadOptions};
use cargo_ship::package::{self, unpack, FileEntry, Manifest, MANIFEST_FILE};
use cargo_ship::remote::script::Script;
use cargo_ship::remote::transfer::Encoding;

use crate::support::Project;

const HEADER: &str = "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n[workspace]\n\n";

fn load(p: &Project) -> cargo_ship::Result<Config> {
    config::load(&LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        ..LoadOptions::default()
    })
}

/// The text of the `<unit>.service` file a deploy of `c` writes.
fn service_unit(c: &Config) -> String {
    let name = cargo_ship::systemd::unit::service(c);
    cargo_ship::systemd::unit::app_units(c)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name} among the unit files"))
        .text
}

fn hello(extra: &str) -> Project {
    let p = Project::fixture("hello");
    p.set_manifest(&format!("{HEADER}{extra}"));
    p
}

fn load_err(p: &Project) -> (String, Option<String>) {
    let e = load(p).expect_err("the config should be refused");
    let root = p.root.display().to_string();
    let clean = |s: String| s.replace(&root, "<p>");
    (clean(e.to_string()), e.help().map(clean))
}

/// A bin named `..` gave deploy_to `/opt/..` (that is, `/`) and unit `..`: such a bin name is
/// refused, and the defaults derived from the bin name get the checks the keys get.
#[test]
fn defaults_derived_from_the_bin_name_are_validated() {
    let p = hello("[[bin]]\nname = \"..\"\npath = \"src/main.rs\"\n");
    assert_eq!(
        load_err(&p),
        (
            "<p>/Cargo.toml: `package.metadata.ship.bin`: expected a binary name that is a plain file name \
             without control characters, found \"..\": it would name a file outside the release root"
                .to_string(),
            Some("rename the `[[bin]]` target in Cargo.toml".to_string())
        )
    );
    let p = hello("[[bin]]\nname = \"my app\"\npath = \"src/main.rs\"\n");
    assert_eq!(
        load_err(&p),
        (
            "<p>/Cargo.toml: `package.metadata.ship.deploy_to`: the default \"/opt/my app\", derived from the \
             binary name \"my app\", is not usable: expected an absolute path like \"/opt/hello\" (letters, \
             digits, `._-+@~=,`), found the character ' ': \"/opt/my app\""
                .to_string(),
            Some("set `deploy_to` in `[package.metadata.ship]`, or rename the binary".to_string())
        )
    );
    // With deploy_to set, the unit name (also the bin's by default) is checked too.
    let p = hello(
        "[[bin]]\nname = \"my app\"\npath = \"src/main.rs\"\n[package.metadata.ship]\ndeploy_to = \"/srv/app\"\n",
    );
    assert_eq!(
        load_err(&p),
        (
            "<p>/Cargo.toml:11:1: `package.metadata.ship.systemd.unit`: the default \"my app\", derived from the \
             binary name \"my app\", is not usable: expected a unit name of letters, digits and `_.:-` (no `/` or \
             spaces), found \"my app\""
                .to_string(),
            Some("set `systemd.unit` in `[package.metadata.ship.systemd]`, or rename the binary".to_string())
        )
    );
}

/// A carriage return in the bin name reached the unit file's Description= line, where systemd
/// ends the line and reads the rest as a directive.
#[test]
fn carriage_return_in_the_bin_name_is_refused_and_never_reaches_the_unit() {
    let p = hello(
        "[[bin]]\nname = \"app\\rExecStartPre=/bin/touch /tmp/pwned\"\npath = \"src/main.rs\"\n\
         [package.metadata.ship]\ndeploy_to = \"/srv/app\"\n[package.metadata.ship.systemd]\nunit = \"app\"\n",
    );
    assert_eq!(
        load_err(&p),
        (
            "<p>/Cargo.toml:11:1: `package.metadata.ship.bin`: expected a binary name that is a plain file name \
             without control characters, found \"app\\rExecStartPre=/bin/touch /tmp/pwned\": it would be written \
             into the unit file"
                .to_string(),
            Some("rename the `[[bin]]` target in Cargo.toml".to_string())
        )
    );
    // And should such a value reach the unit anyway, it stays on its line.
    let mut c = load(&hello("")).unwrap();
    c.bin = "app\rExecStartPre=/bin/touch /tmp/pwned".into();
    let unit = service_unit(&c);
    let lines: Vec<&str> = unit.split(['\n', '\r']).collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("ExecStartPre")),
        "{unit}"
    );
    assert!(
        unit.contains(
            "\nDescription=hello app ExecStartPre=/bin/touch /tmp/pwned (deployed by cargo-ship)\n"
        ),
        "{unit}"
    );
}

/// ProtectHome= was decided by a string prefix: /rootfs/app counted as under /root.
#[test]
fn protect_home_compares_whole_path_components() {
    let mut c = load(&hello("")).unwrap();
    for (deploy_to, protected) in [
        ("/rootfs/app", true),
        ("/homestead/app", true),
        ("/opt/app", true),
        ("/root/app", false),
        ("/home/deploy/app", false),
        ("/run/user/1000/app", false),
    ] {
        c.deploy_to = deploy_to.into();
        let unit = service_unit(&c);
        assert_eq!(
            unit.lines().any(|l| l == "ProtectHome=yes"),
            protected,
            "{deploy_to}:\n{unit}"
        );
    }
}

/// deploy_to in a directory every local user can write is refused.
#[test]
fn deploy_to_under_a_world_writable_directory_is_refused() {
    for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
        let p = hello(&format!(
            "[package.metadata.ship]\ndeploy_to = \"{dir}/app\"\n"
        ));
        assert_eq!(
            load_err(&p).0,
            format!(
                "<p>/Cargo.toml:9:13: `package.metadata.ship.deploy_to`: expected an absolute path like \
                 \"/opt/hello\" (letters, digits, `._-+@~=,`), found a path under {dir}, which every local user \
                 can write (they could replace it before the first deploy): \"{dir}/app\""
            )
        );
    }
    // A name that merely starts the same is fine.
    let p = hello("[package.metadata.ship]\ndeploy_to = \"/tmpfiles/app\"\n");
    assert_eq!(load(&p).unwrap().deploy_to, "/tmpfiles/app");
}

/// health.command wrote its output to /tmp/.ship-health.$$ as root: a symlink planted there
/// by any local user was followed (clobbering its target) and then removed. Run through the
/// real /bin/sh with the symlink planted at the predictable name.
#[test]
fn health_command_output_goes_to_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let go = dir.path().join("go");
    let mut s = Script::new("health");
    // Wait until the test has planted the symlink for this shell's pid.
    s.line(
        "while [ ! -e {} ]; do sleep 0.05; done",
        &[go.to_str().unwrap()],
    );
    cargo_ship::health::command_check(
        &mut s,
        dir.path().to_str().unwrap(),
        "echo clobbered",
        Duration::from_secs(2),
    );
    s.lines("echo done");
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(s.render().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let planted = format!("/tmp/.ship-health.{}", child.id());
    let _ = std::fs::remove_file(&planted);
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let link_left = std::fs::symlink_metadata(&planted).is_ok();
    let _ = std::fs::remove_file(&planted);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), "done\n".to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(link_left, "the planted symlink was removed by the check");
    let script = s.render().unwrap();
    assert!(!script.contains(".ship-health"), "{script}");
}

// ---- crafted artifacts ----------------------------------------------------------------------

/// What goes into a crafted archive.
enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Device(&'a str),
}

fn manifest(files: &[(&str, &[u8])]) -> Manifest {
    let mut m = Manifest {
        schema: 1,
        package: "hello".into(),
        version: "0.1.0".into(),
        bin: "hello".into(),
        target: "x86_64-unknown-linux-gnu".into(),
        profile: "release".into(),
        features: vec![],
        git_commit: None,
        git_dirty: false,
        rustc: "rustc 1.95.0".into(),
        builder: "cargo".into(),
        built_at: "2023-11-14T22:13:20Z".into(),
        glibc_required: None,
        files: BTreeMap::new(),
    };
    for (path, data) in files {
        use sha2::Digest;
        m.files.insert(
            path.to_string(),
            FileEntry {
                sha256: hex::encode(sha2::Sha256::digest(data)),
                size: data.len() as u64,
                mode: 0o755,
            },
        );
    }
    m
}

/// Writes `<dir>/<name>.tar` and `.tar.zst`: the manifest first (unless `items` has one),
/// then `items` in order.
fn craft(dir: &Path, name: &str, m: &Manifest, items: &[Item<'_>]) -> std::path::PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    let json = m.to_json();
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    };
    tar.append_data(
        &mut header(tar::EntryType::Regular, 0o644, json.len() as u64),
        MANIFEST_FILE,
        json.as_bytes(),
    )
    .unwrap();
    for item in items {
        match item {
            Item::File(p, data, mode) => tar
                .append_data(
                    &mut header(tar::EntryType::Regular, *mode, data.len() as u64),
                    p,
                    *data,
                )
                .unwrap(),
            Item::Dir(p) => tar
                .append_data(
                    &mut header(tar::EntryType::Directory, 0o755, 0),
                    p,
                    std::io::empty(),
                )
                .unwrap(),
            Item::Symlink(p, to) => tar
                .append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), p, to)
                .unwrap(),
            Item::Device(p) => tar
                .append_data(
                    &mut header(tar::EntryType::Char, 0o666, 0),
                    p,
                    std::io::empty(),
                )
                .unwrap(),
        }
    }
    let bytes = tar.into_inner().unwrap();
    std::fs::write(dir.join(format!("{name}.tar")), &bytes).unwrap();
    let path = dir.join(format!("{name}.tar.zst"));
    std::fs::write(&path, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    path
}

fn open_err(path: &Path) -> String {
    package::open_artifact(path)
        .expect_err("the artifact should be refused")
        .to_string()
        .replace(&path.display().to_string(), "<a>")
}

const BIN: &[u8] = b"\x7fELF not really";

#[test]
fn crafted_artifacts_are_refused_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = manifest(&[("hello", BIN)]);
    let ok = craft(
        d,
        "ok",
        &m,
        &[Item::Dir("static"), Item::File("hello", BIN, 0o755)],
    );
    package::open_artifact(&ok).expect("a well-formed artifact opens");
    // Paths longer than a tar header holds (GNU long-name entries) are fine.
    let long = format!("static/{}/asset.txt", "d".repeat(150));
    let lm = manifest(&[("hello", BIN), (long.as_str(), b"x")]);
    let long_ok = craft(
        d,
        "long",
        &lm,
        &[
            Item::File("hello", BIN, 0o755),
            Item::File(&long, b"x", 0o644),
        ],
    );
    package::open_artifact(&long_ok).expect("an artifact with a long path opens");

    let cases: Vec<(&str, Vec<Item<'_>>, String)> = vec![
        (
            "extra",
            vec![Item::File("hello", BIN, 0o755), Item::File("setuid-shell", b"#!/bin/sh\n", 0o755)],
            format!("entry \"setuid-shell\" is not listed in its {MANIFEST_FILE}"),
        ),
        (
            "setuid",
            vec![Item::File("hello", BIN, 0o4755)],
            "entry \"hello\" has mode 4755 (setuid, setgid or sticky bits)".into(),
        ),
        (
            "symlink",
            vec![Item::Symlink("data", "/etc"), Item::File("hello", BIN, 0o755)],
            "entry \"data\" is a symlink to \"/etc\"; an artifact holds only regular files and directories"
                .into(),
        ),
        (
            "device",
            vec![Item::Device("null"), Item::File("hello", BIN, 0o755)],
            "entry \"null\" is a device node; an artifact holds only regular files and directories".into(),
        ),
        (
            "second-manifest",
            vec![Item::File("hello", BIN, 0o755), Item::File(MANIFEST_FILE, b"{}", 0o644)],
            format!(
                "it holds a second {MANIFEST_FILE} (entry 3); the manifest comes first, once"
            ),
        ),
        (
            "twice",
            vec![Item::File("hello", BIN, 0o755), Item::File("hello", BIN, 0o755)],
            "entry \"hello\" appears twice".into(),
        ),
        (
            "missing",
            vec![Item::Dir("static")],
            format!("\"hello\", listed in its {MANIFEST_FILE}, is not in it"),
        ),
    ];
    for (name, items, detail) in cases {
        let path = craft(d, name, &m, &items);
        assert_eq!(
            open_err(&path),
            format!("failed to check the artifact <a>: {detail}"),
            "{name}"
        );
    }
}

#[test]
fn an_artifact_of_another_package_or_bin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(&hello("")).unwrap();
    let mut m = manifest(&[("worker", BIN)]);
    m.bin = "worker".into();
    let path = craft(
        dir.path(),
        "worker",
        &m,
        &[Item::File("worker", BIN, 0o755)],
    );
    let a = package::open_artifact(&path).unwrap();
    let e = unpack::check_is_this_package(&c, &a).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot deploy the artifact {}: it holds binary `worker` of package `hello`, but this deploy ships \
             binary `hello` of package `hello`",
            path.display()
        )
    );
    assert_eq!(
        e.help().unwrap(),
        "pass an artifact built by `cargo ship build` for package `hello` (or choose the package with `-p`)"
    );
    let m = manifest(&[("hello", BIN)]);
    let path = craft(dir.path(), "hello", &m, &[Item::File("hello", BIN, 0o755)]);
    unpack::check_is_this_package(&c, &package::open_artifact(&path).unwrap()).unwrap();
}

/// The host-side unpack (the lines `stage` runs, through the real /bin/sh and GNU tar, as
/// root here like on a host) refuses what the client would, removes the release dir and does
/// not keep the archive's modes.
#[test]
fn host_side_unpack_refuses_what_the_manifest_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = manifest(&[("hello", BIN)]);
    let run = |name: &str, items: &[Item<'_>]| {
        craft(d, name, &m, items);
        let rel = d.join(format!("rel-{name}"));
        let mark = d.join(format!("unfinished-{name}"));
        std::fs::create_dir(&rel).unwrap();
        std::fs::write(&mark, "").unwrap();
        let mut s = Script::new("unpack");
        s.lines("umask 022");
        unpack::unpack_lines(
            &mut s,
            Encoding::Tar,
            d.join(format!("{name}.tar")).to_str().unwrap(),
            rel.to_str().unwrap(),
            mark.to_str().unwrap(),
            &m,
        );
        s.lines("echo unpacked");
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(s.render().unwrap())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            rel,
            mark,
        )
    };
    let (code, stdout, stderr, rel, _) = run("good", &[Item::File("hello", BIN, 0o4777)]);
    assert_eq!((code, stdout.as_str()), (Some(0), "unpacked\n"), "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rel.join("hello"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(
        mode, 0o755,
        "setuid and group/other write bits must not be kept"
    );

    let (code, _, stderr, rel, mark) = run(
        "symlink",
        &[
            Item::Symlink("data", "/etc"),
            Item::File("hello", BIN, 0o755),
        ],
    );
    assert_eq!(
        (code, stderr.as_str(), rel.exists(), mark.exists()),
        (
            Some(76),
            "refusing the artifact: it holds entries that are neither regular files nor directories: data \n",
            false,
            false
        )
    );
    let (code, _, stderr, rel, _) = run(
        "extra",
        &[
            Item::File("hello", BIN, 0o755),
            Item::File("extra", b"x", 0o644),
        ],
    );
    assert_eq!(
        (code, stderr.as_str(), rel.exists()),
        (
            Some(76),
            "refusing the artifact: it holds 3 regular files, expected 2 (the manifest and the files it lists)\n",
            false
        )
    );
}

#[test]
fn sanitized_output_keeps_lines_and_shows_escapes() {
    let shown = cargo_ship::ui::sanitize::text("a\x1b[31mred\x1b[0m\n\x1b]0;title\x07");
    assert_eq!(shown, "a\\x1b[31mred\\x1b[0m\n\\x1b]0;title\\x07");
}

/// Issue #16: with --known-hosts, the generated ssh config leaves ssh no other source of host
/// keys (a KnownHostsCommand, DNS) and no agent forwarding, whatever an included config says
/// (ssh takes the first value of each option): checked with `ssh -G`, as ssh reads it.
#[test]
fn issue_16_known_hosts_pins_every_host_key_source() {
    let dir = tempfile::tempdir().unwrap();
    let included = dir.path().join("included");
    std::fs::write(
        &included,
        "Host *\n  KnownHostsCommand /bin/echo host ssh-ed25519 AAAA\n  VerifyHostKeyDNS yes\n  ForwardAgent yes\n  UserKnownHostsFile /etc/other\n",
    )
    .unwrap();
    let files = cargo_ship::remote::ssh_files::SshFiles {
        config: Some(included),
        known_hosts: Some("/kh".into()),
        agent: Some("/run/agent.sock".into()),
    };
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        cargo_ship::remote::ssh_files::render(&files, None, "prod"),
    )
    .unwrap();
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(&config)
        .arg("example.invalid")
        .output()
        .expect("the test needs OpenSSH's client (ssh -G)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = String::from_utf8_lossy(&out.stdout).to_lowercase();
    for line in [
        "userknownhostsfile /kh\n",
        "globalknownhostsfile /dev/null\n",
        "verifyhostkeydns false\n",
        "forwardagent no\n",
        "stricthostkeychecking true\n",
        "identityagent /run/agent.sock\n",
    ] {
        assert!(effective.contains(line), "no {line:?} in\n{effective}");
    }
    // `none` is not printed: no KnownHostsCommand runs.
    assert!(
        !effective
            .lines()
            .any(|l| l.starts_with("knownhostscommand ")),
        "{effective}"
    );
}

/// Issue #16: while the build runs, the deploy agent is locked: a build script that finds its
/// socket gets no key listed and no signature; unlocked afterwards, the key is there again.
#[test]
fn issue_16_agent_is_locked_for_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let key = dir.path().join("id");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen")
        .success();
    assert!(ok);
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ssh_add = |args: &[&str]| {
        let out = Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .expect("ssh-add");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(ssh_add(&[key.to_str().unwrap()]).0, Some(0));
    let locked = cargo_ship::remote::agent::lock(&sock).unwrap();
    let while_locked = ssh_add(&["-l"]);
    // A second lock (what a build script would try, to keep it locked) is refused.
    let relock = cargo_ship::remote::agent::lock(&sock)
        .map(|_| ())
        .map_err(|e| e.to_string());
    locked.unlock().unwrap();
    let after = ssh_add(&["-l"]);
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(while_locked.0, Some(1), "{while_locked:?}");
    assert!(!while_locked.1.contains("ED25519"), "{while_locked:?}");
    assert_eq!(
        relock,
        Err(format!(
            "the ssh-agent at {} (CARGO_SHIP_SSH_AUTH_SOCK) refused to lock for the build (already locked?)",
            sock.display()
        ))
    );
    assert_eq!(after.0, Some(0), "{after:?}");
    assert!(after.1.contains("ED25519"), "{after:?}");
}
