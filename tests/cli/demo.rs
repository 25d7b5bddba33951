//! Issue #17: `scripts/demo` installs what the demo needs (the local test host), not what
//! only the test suite needs; `.ci/setup` with no part still installs everything.

use crate::support::repo_root;

fn plan(parts: &[&str]) -> String {
    let out = std::process::Command::new("bash")
        .arg(".ci/setup")
        .arg("--plan")
        .args(parts)
        .current_dir(repo_root())
        .output()
        .expect("bash .ci/setup --plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn issue_17_demo_installs_only_what_it_needs() {
    let demo = std::fs::read_to_string(repo_root().join("scripts/demo")).unwrap();
    let calls: Vec<&str> = demo.lines().filter(|l| l.contains(".ci/setup")).collect();
    assert_eq!(calls, ["bash .ci/setup hosts"], "{demo}");
    let hosts = plan(&["hosts"]);
    assert_eq!(
        hosts,
        "hosts: apt debootstrap systemd-container openssh-client openssh-server zstd iproute2 tar curl git\n"
    );
    for only_tests in [
        "qemu",
        "zig",
        "act",
        "zizmor",
        "rustup target",
        "shellcheck",
    ] {
        assert!(!hosts.contains(only_tests), "{only_tests} in {hosts}");
    }
    // The test suite (scripts/test) runs `.ci/setup` with no part: every part.
    let test = std::fs::read_to_string(repo_root().join("scripts/test")).unwrap();
    assert!(test.lines().any(|l| l == "bash .ci/setup"), "{test}");
    let all = plan(&[]);
    for part in ["hosts:", "lint:", "arm64:", "zig:", "action:", "targets:"] {
        assert!(all.contains(part), "{part} missing from {all}");
    }
}
