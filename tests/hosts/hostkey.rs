//! Host keys are checked strictly: with a known_hosts file that does not hold the host's key,
//! cargo-ship refuses to connect (exit 5), says why, and changes nothing on the host.

use crate::host;
use crate::support::Project;

#[test]
fn issue_3_unknown_host_key_is_refused() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let project = Project::fixture("hello");
    // The harness's ssh_config, but pointing at an empty known_hosts file.
    let empty = project.path("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let config = std::fs::read_to_string(&hosts.ssh_config).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.trim_start().starts_with("UserKnownHostsFile") {
            true => format!("  UserKnownHostsFile {}", empty.display()),
            false => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    project.write("ssh_config", &config);
    let manifest = project.manifest();
    let manifest = &manifest[..manifest.find("[package.metadata.ship]").unwrap()];
    project.set_manifest(&format!(
        "{manifest}[package.metadata.ship]\ndeploy_to = \"/opt/ship-hostkey\"\n\n\
         [package.metadata.ship.systemd]\nunit = \"ship-hostkey\"\nargs = [\"--port\", \"18107\"]\n\n\
         [package.metadata.ship.environments.test]\nhosts = [\"host0\"]\nssh_config = \"ssh_config\"\n"
    ));

    let out = project.ship().args(["deploy", "test"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "expected a connect failure:\n{stderr}"
    );
    assert!(stderr.contains("host0: cannot connect"), "{stderr}");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(stderr.contains("never accepts keys"), "{stderr}");
    let touched = hosts.host(0).exec("test -e /opt/ship-hostkey");
    assert!(
        !touched.status.success(),
        "nothing may change on a host whose key was not verified"
    );
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "the key must not be added silently"
    );
}
