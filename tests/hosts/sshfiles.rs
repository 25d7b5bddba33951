//! Issue #8: `--ssh-config` / `CARGO_SHIP_SSH_CONFIG` and `--known-hosts` /
//! `CARGO_SHIP_KNOWN_HOSTS` against real hosts, without the action.

use crate::app::{App, Spec};
use crate::host;

/// `--known-hosts` wins over the environment's own ssh_config (whose Host entries still
/// apply): a file with another key for the host refuses it and changes nothing; the right
/// file deploys.
#[test]
fn issue_8_known_hosts_flag_overrides_the_environments_ssh_config() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(hosts, "ship-kh-flag", 18811, Spec::default());
    let h = app.host(0);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    let other = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let fields: Vec<&str> = other.split_whitespace().collect();
    let wrong = dir.path().join("wrong_known_hosts");
    std::fs::write(&wrong, format!("{} {} {}\n", h.ip, fields[0], fields[1])).unwrap();

    let refused = app.run_expect(
        &["deploy", "test", "--known-hosts", wrong.to_str().unwrap()],
        5,
    );
    app.check(
        refused.stderr.contains("host0: cannot connect")
            && refused
                .stderr
                .contains("--known-hosts / CARGO_SHIP_KNOWN_HOSTS"),
        "the error should name the host and the known_hosts flag",
        Some(&refused),
    );
    app.check(
        !app.exists(h, &app.deploy_to()),
        "a refused host key must change nothing",
        Some(&refused),
    );

    let right = hosts.dir.join("known_hosts");
    let ok = app.run_expect(
        &[
            "deploy",
            "test",
            "--message-format",
            "json",
            "--known-hosts",
            right.to_str().unwrap(),
        ],
        0,
    );
    app.deployed_release(&ok, "host0");
    app.assert_version(h, "0.1.0", None);
}

/// `--ssh-config` alone reaches a host the environment names by an alias only that file
/// defines (HostName, User, IdentityFile), with host keys from CARGO_SHIP_KNOWN_HOSTS.
#[test]
fn issue_8_ssh_config_flag_defines_the_hosts() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let app = App::new(
        hosts,
        "ship-ssh-config-flag",
        18812,
        Spec {
            hosts: vec!["shipweb".into()],
            ..Spec::default()
        },
    );
    // No ssh_config in Cargo.toml: only the flag knows what `shipweb` is.
    let text: String = app
        .manifest_text()
        .lines()
        .filter(|l| !l.starts_with("ssh_config = "))
        .map(|l| format!("{l}\n"))
        .collect();
    app.project.set_manifest(&text);
    let h = app.host(1);
    let cfg = app.project.path("ci_ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host shipweb\n  HostName {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n",
            h.ip,
            hosts.dir.join("id_ed25519").display()
        ),
    )
    .unwrap();
    let out = app
        .ship()
        .args(["deploy", "test", "--message-format", "json", "--ssh-config"])
        .arg(&cfg)
        .env("CARGO_SHIP_KNOWN_HOSTS", hosts.dir.join("known_hosts"))
        .timeout(std::time::Duration::from_secs(240))
        .output()
        .unwrap();
    let run = crate::app::Run::from_output(vec!["deploy".into(), "test".into()], &out);
    if run.code != 0 {
        app.fail("deploy through --ssh-config should succeed", Some(&run));
    }
    app.assert_version(h, "0.1.0", Some(&run));
    app.check(
        app.current(h).is_some(),
        "host1 (shipweb) has a current release",
        Some(&run),
    );
}
