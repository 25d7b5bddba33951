//! Self-tests of the test-host harness: if these fail, the deploy tests' failures mean nothing.

use std::time::Duration;

use crate::host::{self, BootOptions, TestHosts};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn every_host_answers_ssh_and_runs_systemd() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    assert_eq!(hosts.hosts.len(), 3);
    for h in &hosts.hosts {
        let state = stdout(&h.exec("systemctl is-system-running"));
        assert!(
            state == "running" || state == "degraded",
            "{}: systemctl is-system-running said {state:?}\nfailed units:\n{}",
            h.name,
            stdout(&h.exec("systemctl --failed --no-legend"))
        );
        assert_eq!(
            h.exec_ok("cat /proc/1/comm").trim(),
            "systemd",
            "{}: pid 1 is not systemd",
            h.name
        );
        assert_eq!(h.exec_ok("hostname").trim(), h.name);
        assert_eq!(h.exec_ok("whoami").trim(), "root");
        // Production limits: sshd keeps its default of 10 sessions per connection.
        assert!(
            h.exec_ok("sshd -T").lines().any(|l| l == "maxsessions 10"),
            "{}: MaxSessions is not 10",
            h.name
        );
    }
    let ips: std::collections::HashSet<_> = hosts.hosts.iter().map(|h| h.ip).collect();
    assert_eq!(ips.len(), 3, "hosts share an address");
}

#[test]
fn host2_has_no_zstd_and_host0_has_it() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let (h0, h2) = (hosts.host(0), hosts.host(2));
    assert!(h0.has_zstd && !h2.has_zstd);
    assert!(
        h0.exec("command -v zstd").status.success(),
        "host0 should have zstd"
    );
    h0.exec_ok(
        "tar --zstd -cf /tmp/harness.tar.zst /etc/hostname && tar --zstd -tf /tmp/harness.tar.zst",
    );
    assert!(
        !h2.exec("command -v zstd").status.success(),
        "host2 should have no zstd"
    );
    let out = h2.exec("tar --zstd -cf /tmp/harness.tar.zst /etc/hostname");
    assert!(
        !out.status.success(),
        "tar --zstd should fail on host2: {}",
        stdout(&out)
    );
}

#[test]
fn known_hosts_pinning_is_enforced() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let h0 = hosts.host(0);
    let tmp = tempfile::tempdir().unwrap();
    let ssh = |known_hosts: &std::path::Path| {
        std::process::Command::new("ssh")
            .arg("-F")
            .arg(&hosts.ssh_config)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", &h0.ssh_target(), "true"])
            .output()
            .unwrap()
    };
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let out = ssh(&empty);
    assert!(
        !out.status.success(),
        "ssh to an unknown host key must fail"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "unexpected stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another host's key pinned for host0's address: a changed host key must fail too.
    let known = std::fs::read_to_string(hosts.dir.join("known_hosts")).unwrap();
    let h1_key = known
        .lines()
        .find(|l| l.starts_with(&format!("{} ", hosts.host(1).ip)))
        .unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(
        &wrong,
        format!("{} {}\n", h0.ip, h1_key.split_once(' ').unwrap().1),
    )
    .unwrap();
    assert!(
        !ssh(&wrong).status.success(),
        "ssh with a mismatching pinned key must fail"
    );
    // And the generated known_hosts works.
    assert!(ssh(&hosts.dir.join("known_hosts")).status.success());
}

#[test]
fn deploy_user_has_passwordless_sudo_and_sftp_works() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let h1 = hosts.host(1);
    let out = h1.exec_as_deploy("whoami && sudo -n whoami");
    assert!(
        out.status.success(),
        "{}: {}",
        h1.deploy_target(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "deploy\nroot");
    let sftp = std::process::Command::new("sftp")
        .arg("-F")
        .arg(&hosts.ssh_config)
        .args(["-b", "-", &h1.ssh_target()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"ls /etc/ssh\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        sftp.status.success(),
        "sftp failed: {}",
        String::from_utf8_lossy(&sftp.stderr)
    );
    assert!(String::from_utf8_lossy(&sftp.stdout).contains("sshd_config"));
}

#[test]
fn transient_unit_runs_and_has_an_invocation_id() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let h = hosts.host(1);
    let unit = format!("ship-harness-sleep-{}", std::process::id());
    h.exec_ok(&format!(
        "systemd-run --unit {unit} -p Restart=on-failure /bin/sleep 1000"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.unit_property(&format!("{unit}.service"), "ActiveState") != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "{unit} not active:\n{}",
            h.journal(&unit)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = h.unit_property(&format!("{unit}.service"), "InvocationID");
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "InvocationID {id:?}"
    );
    h.exec_ok(&format!("systemctl stop {unit}"));
}

#[test]
fn http_get_reaches_a_service_on_the_host() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let h = hosts.host(0);
    assert_eq!(
        h.http_get(8089, "/"),
        None,
        "nothing should listen on 8089 yet"
    );
    let unit = format!("ship-harness-http-{}", std::process::id());
    h.exec_ok(&format!(
        "systemd-run --unit {unit} -p Restart=on-failure /usr/bin/systemd-socket-activate -l 8089 --accept --inetd \
         /bin/sh -c 'sed -n \"/^\\r\\?$/q\"; printf \"HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello from %s\\n\" \"$(hostname)\"'"
    ));
    let body = h.wait_http_unit(
        8089,
        "/",
        "hello from host0",
        Duration::from_secs(10),
        Some(&unit),
    );
    assert_eq!(body, "hello from host0\n");
    assert_eq!(
        h.http_get(8089, "/x"),
        Some((200, "hello from host0\n".to_string()))
    );
    h.exec_ok(&format!("systemctl stop {unit}"));
    let journal = h.journal(&unit);
    assert!(
        journal.contains(&unit) || journal.contains("systemd-socket-activate"),
        "journal: {journal}"
    );
}

#[test]
fn current_release_reads_the_current_symlink() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let h = hosts.host(2);
    let root = format!("/tmp/ship-harness-layout-{}", std::process::id());
    assert_eq!(h.current_release(&root), None);
    h.exec_ok(&format!(
        "mkdir -p {root}/releases/20261123-7 && ln -s releases/20261123-7 {root}/current"
    ));
    assert_eq!(
        h.current_link(&root).as_deref(),
        Some("releases/20261123-7")
    );
    assert_eq!(h.current_release(&root).as_deref(), Some("20261123-7"));
    h.exec_ok(&format!("rm -rf {root}"));
}

/// An owned run with an alias prefix boots, answers, and leaves nothing behind when dropped.
#[test]
fn owned_hosts_boot_and_tear_down_without_leftovers() {
    if host::require_root().is_some() {
        return;
    }
    let hosts = match TestHosts::boot(
        1,
        BootOptions {
            alias_prefix: Some("demo".into()),
            ..Default::default()
        },
    ) {
        Ok(h) => h,
        Err(_) => return,
    };
    let h = hosts.host(0);
    assert_eq!(h.name, "demo1");
    assert_eq!(h.exec_ok("hostname").trim(), "demo1");
    let machine = h.machine.clone();
    let h_ip = h.ip;
    let merged = hosts.dir.join("host0/merged");
    drop(hosts);
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&machine),
        "netns {machine} left behind"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(merged.to_str().unwrap()),
        "overlay {} left mounted",
        merged.display()
    );
    let hash = machine.split('-').nth(1).unwrap().to_string();
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    for name in [format!(": sb-{hash}:"), format!(": sv{hash}-0@")] {
        assert!(
            !links.contains(&name),
            "link{name} of {machine} left behind"
        );
    }
    let routes = std::process::Command::new("ip")
        .args(["-4", "route"])
        .output()
        .unwrap();
    let subnet = h_subnet(&h_ip);
    assert!(
        !String::from_utf8_lossy(&routes.stdout).contains(&subnet),
        "a route to {subnet} of {machine} left behind"
    );
}

/// `10.x.y.0/24` for a host address.
fn h_subnet(ip: &std::net::Ipv4Addr) -> String {
    let [a, b, c, _] = ip.octets();
    format!("{a}.{b}.{c}.0/24")
}
