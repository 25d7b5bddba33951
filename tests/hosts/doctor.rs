//! Issue #22: `cargo ship doctor` on a real host of its own (its /etc/hosts and resolver are
//! broken on purpose, which would slow every other test's sudo on a shared host).
//!
//! What is broken, and how:
//! - the host's own name is removed from its /etc/hosts and its resolver is an address on its
//!   own subnet that nobody has (queries go unanswered): every `sudo` waits for the resolver;
//! - its clock is 300 s ahead: nspawn hosts share this machine's kernel clock, so a wrapper
//!   `date` in /usr/local/bin (first on ssh's PATH) adds 300 s to what `date` prints with no
//!   `-d`/`-r`/`-s`. Doctor and preflight read the host's clock with that same `date +%s`, so
//!   the code path measured is the real one; only the clock behind it is simulated;
//! - a process (perl, as a transient systemd unit) listens on the port in `listen`;
//! - a lock is left behind in deploy_to.
//!
//! The host is prepared with `cargo ship setup` and checked as the deploy user through the
//! unit's helper. Doctor names each with its cause and fix (exit 10), changes nothing on the host (a hash of
//! every path, size, mode, owner and mtime under the directories a deploy writes, before and
//! after), and a deploy, refused by the lock, warns about the slow sudo and the clock first.

use crate::app::{Run, EXIT_LOCKED};
use crate::host::{BootOptions, TestHost, TestHosts};
use crate::support::Project;

const PORT: u16 = 18720;
const APP: &str = "ship-doctor";

fn manifest(ssh_config: &str) -> String {
    format!(
        r#"[package]
name = "{APP}"
version = "0.1.0"
edition = "2021"
publish = false

[workspace]

[features]
unhealthy = []
crash = []
never-ready = []

[package.metadata.ship]
deploy_to = "/opt/{APP}"
sudo = true

[package.metadata.ship.systemd]
user = "{APP}"
restart = "socket"
listen = ["0.0.0.0:{PORT}"]
notify = true

[package.metadata.ship.health]
http = "http://127.0.0.1:{PORT}/healthz"

[package.metadata.ship.environments.test]
hosts = ["shipdoc@host0"]
ssh_config = "{ssh_config}"

# The same host as root, which may see other users' processes (to name a port's owner).
[package.metadata.ship.environments.asroot]
hosts = ["host0"]
ssh_config = "{ssh_config}"
sudo = false
"#
    )
}

fn run(p: &Project, args: &[&str]) -> Run {
    let out = p
        .ship()
        .args(args)
        .timeout(std::time::Duration::from_secs(240))
        .output()
        .unwrap();
    Run::from_output(args.iter().map(|s| s.to_string()).collect(), &out)
}

/// The findings of the host's `doctor` output event, as (check, level, message, fix).
fn findings(r: &Run) -> Vec<(String, String, String, String)> {
    let events = r.events();
    let doc = events
        .iter()
        .find(|e| e["kind"] == "doctor")
        .unwrap_or_else(|| panic!("no doctor event\n{}", r.describe()));
    doc["data"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
            (s("check"), s("level"), s("message"), s("fix"))
        })
        .collect()
}

fn find<'a>(
    all: &'a [(String, String, String, String)],
    check: &str,
    level: &str,
    r: &Run,
) -> &'a (String, String, String, String) {
    all.iter()
        .find(|f| f.0 == check && f.1 == level)
        .unwrap_or_else(|| panic!("no {level} about {check}: {all:#?}\n{}", r.describe()))
}

/// Every path under the directories a deploy writes, with size, mode, owner and mtime; plus
/// /etc/hosts and the resolver: one hash.
fn snapshot(h: &TestHost) -> String {
    h.exec_ok(&format!(
        "find /opt /etc/systemd/system /etc/cargo-ship /usr/local -xdev -printf '%p %y %s %m %u %T@\\n' 2>/dev/null | sort | sha256sum; sha256sum /etc/hosts /etc/resolv.conf; ls -la /opt/{APP}/.ship"
    ))
}

#[test]
fn issue_22_doctor_names_slow_sudo_skewed_clock_taken_port_and_changes_nothing() {
    let Ok(hosts) = TestHosts::boot(1, BootOptions::default()) else {
        return;
    };
    let h = hosts.host(0);
    let p = Project::fixture("hello");
    p.set_manifest(&manifest(hosts.ssh_config.to_str().unwrap()));
    // As users do: `cargo ship setup` once, then everything as the deploy user through the
    // unit's helper.
    let key = hosts.dir.join("id_ed25519.pub");
    let setup = run(
        &p,
        &["setup", "test", "--authorized-key", key.to_str().unwrap()],
    );
    assert_eq!(setup.code, 0, "{}", setup.describe());

    // A sound host: nothing to fix.
    let ok = run(&p, &["doctor", "test", "--message-format", "json"]);
    assert_eq!(ok.code, 0, "{}", ok.describe());
    let all = findings(&ok);
    assert!(all.iter().all(|f| f.1 != "problem"), "{all:#?}");
    let sudo = find(&all, "sudo", "ok", &ok);
    assert!(
        sudo.2
            .starts_with("one privileged call (the setup helper's check through sudo) took "),
        "{sudo:?}"
    );
    find(&all, "clock", "ok", &ok);
    let port = find(&all, "port", "ok", &ok);
    assert_eq!(port.2, format!("port {PORT} is free"));
    let systemd = find(&all, "systemd", "ok", &ok);
    assert!(
        systemd.2.starts_with("systemd 252: restart = \"socket\""),
        "{systemd:?}"
    );

    // A host key that is not the host's: unreachable (exit 5), with the ssh error's own fix.
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("other");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let other = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let known = keydir.path().join("known_hosts");
    let mut fields = other.split_whitespace();
    let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
    std::fs::write(&known, format!("{} {kind} {blob}\n", h.ip)).unwrap();
    let known_arg = known.to_str().unwrap();
    let unknown = run(
        &p,
        &[
            "doctor",
            "test",
            "--known-hosts",
            known_arg,
            "--message-format",
            "json",
        ],
    );
    assert_eq!(unknown.code, 5, "{}", unknown.describe());
    let all = findings(&unknown);
    let ssh = find(&all, "ssh", "problem", &unknown);
    assert!(ssh.2.starts_with("unreachable: "), "{ssh:?}");
    assert!(
        ssh.3.starts_with(
            "the host key of shipdoc@host0 is not in the known_hosts given with --known-hosts"
        ),
        "{ssh:?}"
    );

    // Break it.
    let resolver = {
        let o = h.ip.octets();
        format!("{}.{}.{}.250", o[0], o[1], o[2])
    };
    h.exec_ok(&format!(
        "sed -i '/[[:space:]]host0$/d' /etc/hosts && echo 'nameserver {resolver}' > /etc/resolv.conf"
    ));
    h.exec_ok(concat!(
        "printf '%s\\n' '#!/bin/sh' ",
        "'case \" $* \" in *\" -d\"*|*\" --date\"*|*\" -r\"*|*\" --reference\"*|*\" -s\"*|*\" --set\"*) exec /bin/date \"$@\" ;; esac' ",
        "'exec /bin/date -d \"@$(( $(/bin/date +%s) + 300 ))\" \"$@\"' > /usr/local/bin/date && chmod 755 /usr/local/bin/date"
    ));
    h.exec_ok(&format!(
        "systemd-run --unit=squatter perl -MIO::Socket::INET -e 'our @k = (IO::Socket::INET->new(LocalPort => {PORT}, Listen => 5, ReuseAddr => 1) or die); sleep 100000' && for i in $(seq 50); do grep -q ':{PORT:04X} 00000000:0000 0A' /proc/net/tcp && break; sleep 0.1; done"
    ));
    h.exec_ok(&format!(
        "su shipdoc -s /bin/sh -c 'mkdir -p /opt/{APP}/.ship/lock && echo \"alice@laptop pid 4242 since 2026-12-06T03:00:00Z: cargo ship deploy test\" > /opt/{APP}/.ship/lock/holder'"
    ));
    let before = snapshot(h);

    let bad = run(&p, &["doctor", "test", "--message-format", "json"]);
    assert_eq!(bad.code, 10, "{}", bad.describe());
    let all = findings(&bad);
    let sudo = find(&all, "sudo", "problem", &bad);
    assert!(
        sudo.2
            .starts_with("one privileged call (the setup helper's check through sudo) took "),
        "{sudo:?}"
    );
    assert!(
        sudo.2.contains(" s: this host's own name `host0` is not in its /etc/hosts and did not resolve within 5 s (the resolver does not answer); sudo looks the host's name up on every call"),
        "{sudo:?}"
    );
    assert_eq!(
        sudo.3,
        "add the name to /etc/hosts on the host (e.g. the line `127.0.1.1 host0`), or fix its resolver in /etc/resolv.conf"
    );
    let clock = find(&all, "clock", "problem", &bad);
    let ahead = ["299", "300", "301"].iter().any(|s| {
        clock.2.starts_with(&format!(
            "the host's clock is {s} s ahead of this machine's"
        ))
    });
    assert!(ahead, "{clock:?}");
    assert!(clock.3.contains("timedatectl set-ntp true"), "{clock:?}");
    let port = find(&all, "port", "problem", &bad);
    assert!(
        port.2.starts_with(&format!(
            "port {PORT} in `listen` is taken by another process"
        )),
        "{port:?}"
    );
    let lock = find(&all, "lock", "problem", &bad);
    assert!(
        lock.2
            .starts_with("the deploy lock is held by alice@laptop pid 4242"),
        "{lock:?}"
    );
    assert_eq!(
        lock.3,
        "if that deploy is still running, wait for it; if its holder is gone, `cargo ship unlock test`"
    );
    let verdict = bad
        .events()
        .into_iter()
        .find(|e| e["kind"] == "verdict")
        .unwrap();
    assert_eq!(verdict["data"]["exit_code"], 10);
    assert_eq!(verdict["data"]["ok"], false);

    // As root the port's owner is named.
    let root = run(&p, &["doctor", "asroot"]);
    assert_eq!(root.code, 10, "{}", root.describe());
    assert!(
        root.stdout.contains(&format!(
            "port {PORT} in `listen` is taken by another process: perl (pid "
        )) && root.stdout.contains(", squatter.service)"),
        "{}",
        root.describe()
    );
    assert!(
        root.stderr.contains("error: doctor found "),
        "{}",
        root.describe()
    );

    // A deploy, refused by the lock, says why this host is slow before anything changes.
    let deploy = run(&p, &["deploy", "test"]);
    assert_eq!(deploy.code, EXIT_LOCKED, "{}", deploy.describe());
    let warned = |needle: &str| {
        deploy
            .stderr
            .lines()
            .any(|l| l.starts_with("warning: shipdoc@host0: ") && l.contains(needle))
    };
    assert!(
        warned("this host's own name `host0` is not in its /etc/hosts"),
        "{}",
        deploy.describe()
    );
    assert!(warned("s ahead of this machine's"), "{}", deploy.describe());
    let warn_at = deploy.stderr.find("warning: shipdoc@host0").unwrap();
    let locked_at = deploy.stderr.find("deploy locked by alice@laptop").unwrap();
    assert!(warn_at < locked_at, "{}", deploy.describe());

    // Nothing changed on the host.
    assert_eq!(
        snapshot(h),
        before,
        "doctor or the refused deploy changed the host"
    );
}
