//! Preflight against a real host whose glibc is too old: Debian bullseye has glibc 2.31, a plain
//! `x86_64-unknown-linux-gnu` build of the hello fixture here needs 2.34, the zigbuild build
//! pinned to `.2.17` needs 2.16 and the musl build none. The refusal must come before anything
//! on the host changes.

use std::time::Duration;

use crate::host::{BootOptions, TestHosts};
use crate::support::Project;

fn manifest(target: &str, ssh_config: &str) -> String {
    format!(
        r#"[package]
name = "hello"
version = "0.1.0"
edition = "2021"
publish = false

[workspace]

[features]
unhealthy = []
crash = []

[package.metadata.ship]
target = "{target}"
deploy_to = "/opt/glibc-app"

[package.metadata.ship.systemd]
unit = "glibc-app"
args = ["--port", "18990"]

[package.metadata.ship.health]
http = "http://127.0.0.1:18990/healthz"
timeout = "15s"
settle = "1s"

[package.metadata.ship.environments.old]
hosts = ["host0"]
ssh_config = "{ssh_config}"
"#
    )
}

#[test]
fn issue_3_glibc_preflight_on_a_bullseye_host() {
    let opts = BootOptions {
        suite: Some("bullseye".into()),
        ..BootOptions::default()
    };
    let Ok(hosts) = TestHosts::boot(1, opts) else {
        return;
    };
    let host = hosts.host(0);
    let glibc = host.exec_ok("getconf GNU_LIBC_VERSION");
    assert_eq!(
        glibc.trim(),
        "glibc 2.31",
        "the bullseye root should have glibc 2.31"
    );
    let project = Project::fixture("hello");
    let ssh_config = hosts.ssh_config.to_str().unwrap().to_string();

    // A plain gnu build needs a newer glibc: refused in preflight, nothing created.
    project.set_manifest(&manifest("x86_64-unknown-linux-gnu", &ssh_config));
    let out = project.ship().args(["deploy", "old"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(6),
        "expected a preflight failure:\n{stderr}"
    );
    assert!(stderr.contains("preflight failed"), "{stderr}");
    assert!(stderr.contains("this host has glibc 2.31"), "{stderr}");
    assert!(
        stderr.contains("x86_64-unknown-linux-gnu.2.17"),
        "the message should suggest a pin:\n{stderr}"
    );
    let exists = host.exec("test -e /opt/glibc-app");
    assert!(
        !exists.status.success(),
        "preflight must not create anything on the host"
    );

    // Pinned to glibc 2.17 with zigbuild: deploys and answers.
    project.set_manifest(&manifest("x86_64-unknown-linux-gnu.2.17", &ssh_config));
    let out = project.ship().args(["deploy", "old"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pinned deploy failed:\n{stderr}\n{}",
        host.journal("glibc-app")
    );
    host.wait_http_unit(
        18990,
        "/version",
        "0.1.0",
        Duration::from_secs(10),
        Some("glibc-app"),
    );

    // musl: static, no glibc requirement at all.
    project.set_manifest(
        &manifest("x86_64-unknown-linux-musl", &ssh_config).replace("0.1.0", "0.2.0"),
    );
    let out = project.ship().args(["deploy", "old"]).output().unwrap();
    assert!(
        out.status.success(),
        "musl deploy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.wait_http_unit(
        18990,
        "/version",
        "0.2.0",
        Duration::from_secs(10),
        Some("glibc-app"),
    );
}
