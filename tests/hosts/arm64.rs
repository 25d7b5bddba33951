//! Issue #12: aarch64 servers. An arm64 Debian root boots under systemd-nspawn on this x86_64
//! machine (qemu-user through binfmt_misc), in its own network namespace like the other test
//! hosts; `uname -m` there says `aarch64`. The fixture is built here for aarch64 (glibc, glibc
//! pinned, musl), deployed, and the process systemd runs is checked to be an aarch64 ELF.
//! An artifact of the wrong architecture is refused in preflight, before anything changes.
//!
//! Emulated hosts are slow (sshd, bash and the service all run under qemu): these tests boot
//! the fewest hosts they can and print how long each step took.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use crate::host::{BootOptions, TestHost, TestHosts};
use crate::support::Project;

/// A Cargo.toml for the hello fixture with `target_line` (a `target = ...` or
/// `targets = [...]` line), one environment `env` over `hosts`.
pub fn manifest(
    version: &str,
    target_line: &str,
    unit: &str,
    port: u16,
    hosts: &[&str],
    ssh_config: &str,
) -> String {
    let hosts = hosts
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[package]
name = "hello"
version = "{version}"
edition = "2021"
publish = false

[workspace]

[features]
unhealthy = []
crash = []
never-ready = []

[package.metadata.ship]
{target_line}
deploy_to = "/opt/{unit}"
keep_releases = 2

[package.metadata.ship.systemd]
unit = "{unit}"
args = ["--port", "{port}"]

[package.metadata.ship.health]
http = "http://127.0.0.1:{port}/healthz"
timeout = "60s"
settle = "1s"

[package.metadata.ship.environments.prod]
hosts = [{hosts}]
ssh_config = "{ssh_config}"
"#
    )
}

/// The binary the unit's main process was started from, and the architecture its ELF header
/// names (`e_machine`: `x86_64` or `aarch64`). Under qemu-user `/proc/<pid>/exe` is the
/// emulator, so the binary is found in the process's memory map (the kernel's view, not
/// qemu's), as the file under `<deploy_to>/releases/` that is mapped; for a native process it
/// is also `/proc/<pid>/exe`, which is checked.
pub struct Running {
    pub binary: String,
    pub exe: String,
    pub machine: String,
}

pub fn running_binary(host: &TestHost, unit: &str, deploy_to: &str) -> Running {
    let out = host.exec_ok(&format!(
        "pid=$(systemctl show -p MainPID --value '{unit}'); \
         echo \"exe=$(readlink /proc/$pid/exe)\"; \
         bin=$(awk '$6 ~ \"^{deploy_to}/releases/[^/]+/hello$\" {{print $6; exit}}' /proc/$pid/maps); \
         echo \"bin=$bin\"; echo \"elf=$(od -An -tx1 -N20 \"$bin\" | tr -s ' \\n' ' ')\""
    ));
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{}: no {k}= in {out:?}", host.name))
            .trim()
            .to_string()
    };
    let elf: Vec<String> = get("elf").split_whitespace().map(String::from).collect();
    assert!(
        elf.len() == 20 && elf[..4] == ["7f", "45", "4c", "46"],
        "{}: the running binary {} is not an ELF file: {elf:?}",
        host.name,
        get("bin")
    );
    let machine = match (elf[18].as_str(), elf[19].as_str()) {
        ("3e", "00") => "x86_64",
        ("b7", "00") => "aarch64",
        other => panic!("{}: unexpected e_machine {other:?}", host.name),
    };
    Running {
        binary: get("bin"),
        exe: get("exe"),
        machine: machine.to_string(),
    }
}

/// Boots `count` arm64 hosts (prefix `arm`: `arm1`..), printing how long it took.
pub fn boot_arm64(count: usize) -> Option<TestHosts> {
    let started = Instant::now();
    let hosts = TestHosts::boot(
        count,
        BootOptions {
            arch: Some("arm64".into()),
            alias_prefix: Some("arm".into()),
            timeout: Some(Duration::from_secs(180)),
            ..BootOptions::default()
        },
    )
    .ok()?;
    eprintln!(
        "timing: {count} arm64 host(s) booted in {:.1?}",
        started.elapsed()
    );
    Some(hosts)
}

/// Runs `cargo ship <args>`; returns (exit code, stderr), printing the duration.
pub fn ship(project: &Project, args: &[&str], what: &str) -> (Option<i32>, String) {
    let started = Instant::now();
    let out = project.ship().args(args).output().unwrap();
    eprintln!("timing: {what}: {:.1?}", started.elapsed());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arm64 host: `uname -m` is aarch64; an x86_64 artifact is refused in preflight naming
/// the host, its architecture and the artifact's target, with nothing created; then
/// `aarch64-unknown-linux-gnu` (auto picks zigbuild: foreign target), the glibc-pinned
/// `.2.17` build and `aarch64-unknown-linux-musl` each deploy, answer, and run as aarch64.
#[test]
fn issue_12_aarch64_host_end_to_end() {
    let Some(hosts) = boot_arm64(1) else {
        return;
    };
    let host = hosts.host(0);
    assert_eq!(host.exec_ok("uname -m").trim(), "aarch64");
    assert_eq!(
        host.exec_ok("getconf GNU_LIBC_VERSION").trim(),
        "glibc 2.36"
    );
    let ssh_config = hosts.ssh_config.to_str().unwrap().to_string();
    let (unit, port) = ("arm-app", 18120);
    let deploy_to = format!("/opt/{unit}");
    let project = Project::fixture("hello");
    let set = |version: &str, target: &str| {
        project.set_manifest(&manifest(
            version,
            &format!("target = \"{target}\""),
            unit,
            port,
            &["arm1"],
            &ssh_config,
        ))
    };

    // An x86_64 artifact: refused before anything changes on the host.
    set("0.1.0", "x86_64-unknown-linux-gnu");
    let (code, stderr) = ship(&project, &["deploy", "prod"], "x86_64 artifact refused");
    assert_eq!(code, Some(6), "expected a preflight refusal:\n{stderr}");
    assert!(
        stderr.contains(
            "error: arm1: preflight failed: this host is aarch64 (uname -m) but the artifact is \
             built for x86_64-unknown-linux-gnu, which runs on x86_64\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "help: nothing was changed on this host; build for its architecture \
             (target = \"aarch64-unknown-linux-gnu\"), or, for an environment whose hosts \
             differ, list one target per architecture: targets = [\"x86_64-unknown-linux-gnu\", \
             \"aarch64-unknown-linux-gnu\"]"
        ),
        "{stderr}"
    );
    assert!(
        !host.exec(&format!("test -e {deploy_to}")).status.success(),
        "preflight must not create anything on the host"
    );

    let cases = [
        (
            "0.1.0",
            "aarch64-unknown-linux-gnu",
            "with zigbuild (auto: aarch64 target on this x86_64 machine, zig links it)",
        ),
        (
            "0.2.0",
            "aarch64-unknown-linux-gnu.2.17",
            "with zigbuild (auto: glibc pin)",
        ),
        (
            "0.3.0",
            "aarch64-unknown-linux-musl",
            "with zigbuild (auto: aarch64 target on this x86_64 machine, zig links it)",
        ),
    ];
    for (version, target, builder) in cases {
        set(version, target);
        let (code, stderr) = ship(
            &project,
            &["deploy", "prod"],
            &format!("build + deploy of {target} to the arm64 host"),
        );
        assert_eq!(
            code,
            Some(0),
            "deploy of {target} failed:\n{stderr}\n{}",
            host.journal(unit)
        );
        assert!(
            stderr.contains(&format!(
                "Building hello v{version} for {target} {builder}\n"
            )),
            "{stderr}"
        );
        host.wait_http_unit(
            port,
            "/version",
            version,
            Duration::from_secs(20),
            Some(unit),
        );
        let running = running_binary(host, unit, &deploy_to);
        let current = host
            .exec_ok(&format!("readlink -f {deploy_to}/current/hello"))
            .trim()
            .to_string();
        assert_eq!(running.binary, current, "the unit runs the current release");
        assert_eq!(running.machine, "aarch64", "{target}: {}", running.binary);
        eprintln!(
            "{target}: running {} (aarch64 ELF), /proc/<pid>/exe = {}",
            running.binary, running.exe
        );
    }
}

/// The lines `status`/`releases` print for `host`: its name, then its indented lines.
fn host_block(text: &str, host: &str) -> String {
    let mut lines = text.lines().skip_while(|l| *l != host);
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no block for {host} in:\n{text}"));
    let body: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    format!("{head}\n{}", body.join("\n"))
}

/// `ssh -F` config reaching the hosts of several runs (their aliases must differ).
fn joined_ssh_config(project: &Project, runs: &[&TestHosts]) -> String {
    let text: String = runs
        .iter()
        .map(|r| std::fs::read_to_string(&r.ssh_config).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let path = project.path("ssh_config");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The artifact `cargo ship build --target <target>` packed (from its JSON `artifact` event).
fn build_one(project: &Project, target: &str) -> String {
    let out = project
        .ship()
        .args(["--message-format", "json", "build", "--target", target])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build for {target} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "artifact")
        .and_then(|v| v["path"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no artifact event in {stdout}"))
}

/// Issue #12, a mixed environment: two x86_64 hosts and one arm64 host with
/// `targets = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]`. A single-target
/// artifact is refused in preflight on the hosts of the other architecture (both ways), with
/// nothing changed anywhere; a deploy builds one artifact per target and each host runs the
/// binary of its own architecture (the ELF header of the running process's binary); the
/// summary, `status` and `releases` show each host's target; a rollback puts each host back
/// on its own previous build, and the next deploy prunes each host's oldest release.
#[test]
fn issue_12_mixed_environment_two_x86_64_hosts_and_one_arm64_host() {
    let started = Instant::now();
    let Ok(x86) = TestHosts::boot(
        2,
        BootOptions {
            alias_prefix: Some("x".into()),
            ..BootOptions::default()
        },
    ) else {
        return;
    };
    eprintln!("timing: 2 x86_64 hosts booted in {:.1?}", started.elapsed());
    let Some(arm) = boot_arm64(1) else {
        return;
    };
    let project = Project::fixture("hello");
    let ssh_config = joined_ssh_config(&project, &[&x86, &arm]);
    let (unit, port) = ("mixed-app", 18130);
    let deploy_to = format!("/opt/{unit}");
    let hosts = [
        ("x1", x86.host(0), "x86_64"),
        ("x2", x86.host(1), "x86_64"),
        ("arm1", arm.host(0), "aarch64"),
    ];
    let set = |version: &str| {
        project.set_manifest(&manifest(
            version,
            "targets = [\"x86_64-unknown-linux-gnu\", \"aarch64-unknown-linux-gnu\"]",
            unit,
            port,
            &["x1", "x2", "arm1"],
            &ssh_config,
        ))
    };
    set("0.1.0");

    // A single-target artifact for the mixed environment: refused before anything changes.
    let x86_artifact = build_one(&project, "x86_64-unknown-linux-gnu");
    let (code, stderr) = ship(
        &project,
        &["deploy", "prod", "--artifact", &x86_artifact],
        "x86_64-only artifact refused",
    );
    assert_eq!(code, Some(6), "expected a preflight refusal:\n{stderr}");
    assert!(
        stderr.contains(
            "error: arm1: preflight failed: this host is aarch64 (uname -m) but the artifact is \
             built for x86_64-unknown-linux-gnu, which runs on x86_64\n"
        ),
        "{stderr}"
    );
    let arm_artifact = build_one(&project, "aarch64-unknown-linux-gnu");
    let (code, stderr) = ship(
        &project,
        &["deploy", "prod", "--artifact", &arm_artifact],
        "aarch64-only artifact refused",
    );
    assert_eq!(code, Some(6), "expected a preflight refusal:\n{stderr}");
    assert!(
        stderr.contains("error: preflight failed on 2 of 3 hosts\n"),
        "{stderr}"
    );
    for x in ["x1", "x2"] {
        assert!(
            stderr.contains(&format!(
                "  - {x}: preflight failed: this host is x86_64 (uname -m) but the artifact is \
                 built for aarch64-unknown-linux-gnu, which runs on aarch64\n"
            )),
            "{stderr}"
        );
    }
    for (name, host, _) in &hosts {
        assert!(
            !host
                .exec(&format!("test -e {deploy_to}/current"))
                .status
                .success(),
            "{name}: a refused deploy must not change the host"
        );
    }

    // Both targets: each host gets the artifact of its architecture.
    let mut first = Vec::new();
    for version in ["0.1.0", "0.2.0"] {
        set(version);
        let (code, stderr) = ship(
            &project,
            &["deploy", "prod"],
            &format!("mixed deploy of {version} (2 builds, 3 hosts)"),
        );
        assert_eq!(code, Some(0), "mixed deploy of {version} failed:\n{stderr}");
        for (name, host, machine) in &hosts {
            host.wait_http_unit(
                port,
                "/version",
                version,
                Duration::from_secs(20),
                Some(unit),
            );
            let running = running_binary(host, unit, &deploy_to);
            assert_eq!(&running.machine, machine, "{name} runs {}", running.binary);
            if *machine == "x86_64" {
                assert_eq!(running.exe, running.binary, "{name}: a native process");
            }
            let target = format!("{machine}-unknown-linux-gnu");
            let row = stderr
                .lines()
                .find(|l| l.starts_with(&format!("  {name} ")) && l.contains(" deployed "))
                .unwrap_or_else(|| panic!("no summary row for {name}:\n{stderr}"));
            assert!(
                row.contains(&format!(" {version} ")) && row.contains(&format!(" {target} ")),
                "{name}'s summary row should show {version} and {target}: {row:?}"
            );
            if version == "0.1.0" {
                first.push(host.current_release(&deploy_to).unwrap());
            }
        }
    }

    // status and releases name each host's target.
    // (the per-host blocks are status's -v view)
    let out = project
        .ship()
        .args(["status", "prod", "-v"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    for (name, _, machine) in &hosts {
        let block = host_block(&status, name);
        assert!(
            block.contains(&format!("  v0.2.0  {machine}-unknown-linux-gnu  git ")),
            "{name}:\n{block}"
        );
    }
    let out = project.ship().args(["releases", "prod"]).output().unwrap();
    let releases = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{releases}");
    // One table for the environment: a release built for several targets says which host runs which.
    for (i, (name, _, machine)) in hosts.iter().enumerate() {
        let line = releases
            .lines()
            .find(|l| l.starts_with(&first[i]))
            .unwrap_or_else(|| panic!("no line for {} in\n{releases}", first[i]));
        assert!(
            line.contains("v0.1.0 ")
                && line.contains(" mixed ")
                && line.contains(&format!("{machine}-unknown-linux-gnu on "))
                && line.contains(*name),
            "{name}: {line:?}"
        );
    }

    // Rollback: each host back on its own build of 0.1.0.
    let (code, stderr) = ship(&project, &["rollback", "prod"], "mixed rollback");
    assert_eq!(code, Some(0), "rollback failed:\n{stderr}");
    for (i, (name, host, machine)) in hosts.iter().enumerate() {
        host.wait_http_unit(
            port,
            "/version",
            "0.1.0",
            Duration::from_secs(20),
            Some(unit),
        );
        assert_eq!(host.current_release(&deploy_to).as_ref(), Some(&first[i]));
        let running = running_binary(host, unit, &deploy_to);
        assert_eq!(&running.machine, machine, "{name} after rollback");
    }

    // A third deploy prunes on each host (keep_releases = 2): the oldest release goes, the
    // rollback target (0.2.0) and the new one stay.
    set("0.3.0");
    let (code, stderr) = ship(
        &project,
        &["deploy", "prod"],
        "mixed deploy of 0.3.0 (prunes)",
    );
    assert_eq!(code, Some(0), "mixed deploy of 0.3.0 failed:\n{stderr}");
    for (i, (name, host, machine)) in hosts.iter().enumerate() {
        host.wait_http_unit(
            port,
            "/version",
            "0.3.0",
            Duration::from_secs(20),
            Some(unit),
        );
        let listing = host.exec_ok(&format!("ls {deploy_to}/releases"));
        let kept: Vec<&str> = listing.split_whitespace().collect();
        let current = host.current_release(&deploy_to).unwrap();
        assert_eq!(kept.len(), 2, "{name} keeps 2 releases: {kept:?}");
        assert!(
            !kept.contains(&first[i].as_str()) && kept.contains(&current.as_str()),
            "{name}: the oldest release ({}) is pruned, the current one kept: {kept:?}",
            first[i]
        );
        let running = running_binary(host, unit, &deploy_to);
        assert_eq!(&running.machine, machine, "{name} after the pruning deploy");
    }
}
