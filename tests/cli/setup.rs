//! `cargo ship setup`: what it refuses before connecting anywhere (exact texts), and its
//! `--dry-run` (prints the scripts, connects nowhere: the hosts here do not exist).

use crate::support::Project;

const HEADER: &str = "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n[workspace]\n\n";

fn hello(ship: &str) -> Project {
    let p = Project::fixture("hello");
    p.set_manifest(&format!("{HEADER}{ship}"));
    p
}

fn setup(p: &Project, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["setup", "prod"];
    args.extend_from_slice(extra);
    let out = p.ship().args(&args).output().expect("run cargo ship");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "[package.metadata.ship]\nsudo = true\n[package.metadata.ship.systemd]\nuser = \"hellosvc\"\n[package.metadata.ship.environments.prod]\nhosts = [\"shipper@web1.invalid\"]\n";

#[test]
fn setup_refuses_a_root_service_for_a_non_root_deploy_user() {
    let p = hello("[package.metadata.ship]\nsudo = true\n[package.metadata.ship.environments.prod]\nhosts = [\"shipper@web1.invalid\"]\n");
    let (code, _, err) = setup(&p, &["--dry-run"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: `cargo ship setup` cannot give shipper least privilege while the service runs as root\n"),
        "{err}"
    );
    assert!(
        err.contains("set `user = \"hello\"` under [package.metadata.ship.systemd] (setup creates that account)"),
        "{err}"
    );
}

#[test]
fn setup_refuses_hosts_without_a_user_and_missing_sudo() {
    let p = hello("[package.metadata.ship]\nsudo = true\n[package.metadata.ship.systemd]\nuser = \"hellosvc\"\n[package.metadata.ship.environments.prod]\nhosts = [\"web1.invalid\"]\n");
    let (code, _, err) = setup(&p, &["--dry-run"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: `cargo ship setup` needs the deploy user of host web1.invalid\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "write it in `hosts` as `user@web1.invalid` (root if the deploy logs in as root)"
        ),
        "{err}"
    );
    let p = hello(&GOOD.replace("sudo = true\n", ""));
    let (code, _, err) = setup(&p, &["--dry-run"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: hosts log in as shipper, not root, but `sudo` is not enabled\n"),
        "{err}"
    );
    let p = hello(&GOOD.replace("hellosvc", "shipper"));
    let (code, _, err) = setup(&p, &["--dry-run"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: the deploy user and the service user are both shipper\n"),
        "{err}"
    );
}

#[test]
fn setup_refuses_a_file_that_is_not_a_public_key() {
    let p = hello(GOOD);
    p.write("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n");
    let key = p.path("id_ed25519");
    let (code, _, err) = setup(
        &p,
        &["--dry-run", "--authorized-key", key.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "error: `--authorized-key {}` is not a public key file\n",
            key.display()
        )),
        "{err}"
    );
}

#[test]
fn setup_dry_run_prints_the_script_and_connects_nowhere() {
    let p = hello(GOOD);
    p.write(
        "deploy.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 ci@example\n",
    );
    let key = p.path("deploy.pub");
    let (code, out, err) = setup(
        &p,
        &[
            "--dry-run",
            "--authorized-key",
            key.to_str().unwrap(),
            "--message-format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let script: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "script")
        .unwrap_or_else(|| panic!("no script event\n{out}"));
    assert_eq!(
        script["host"],
        "shipper@web1.invalid (as root@web1.invalid)"
    );
    let text = script["script"].as_str().unwrap();
    for want in [
        "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hellosvc",
        "useradd --create-home --user-group --shell /bin/sh shipper",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 ci@example",
        "shipper ALL=(root) NOPASSWD: /usr/local/lib/cargo-ship/hello/ship-root",
        "visudo -cf /etc/sudoers.d/.hello.tmp",
        "/etc/systemd/system/hello-guard.service.d/cargo-ship-setup.conf",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
}
