//! `cargo ship init`: the section it adds keeps the rest of Cargo.toml and loads as written.

use cargo_ship::config::{self, LoadOptions};
use cargo_ship::init::{init, InitOptions};
use cargo_ship::ui::Ui;

use crate::support::Project;

/// The hello fixture without its ship section, with a comment of ours above the features.
fn hello_without_ship() -> Project {
    let p = Project::fixture("hello");
    let text = p.manifest();
    let cut = text
        .find("[package.metadata.ship]")
        .expect("the fixture has a ship section");
    let kept = text[..cut].replacen("[features]", "# Keep this comment.\n[features]", 1);
    p.set_manifest(&kept);
    p
}

fn options(p: &Project, force: bool) -> InitOptions {
    InitOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        package: None,
        force,
    }
}

#[test]
fn init_adds_a_section_that_loads() {
    let p = hello_without_ship();
    let before = p.manifest();
    let path = init(&options(&p, false), &Ui::silent()).unwrap();
    assert!(path.ends_with("hello/Cargo.toml"));
    let after = p.manifest();
    assert!(
        after.starts_with(before.trim_end()),
        "existing text changed:\n{after}"
    );
    assert!(after.contains("# Keep this comment.\n[features]\n"));
    assert!(after.contains("unhealthy = []"));
    for table in [
        "[package.metadata.ship]",
        "[package.metadata.ship.systemd]",
        "[package.metadata.ship.health]",
        "[package.metadata.ship.environments.prod]",
    ] {
        assert!(
            after.lines().any(|l| l == table),
            "missing {table}:\n{after}"
        );
    }

    let opts = LoadOptions {
        manifest_path: Some(path.clone()),
        environment: Some("prod".into()),
        ..LoadOptions::default()
    };
    let c = config::load(&opts).unwrap();
    assert_eq!(c.bin, "hello");
    assert_eq!(c.deploy_to, "/opt/hello");
    assert_eq!(c.systemd.unit, "hello");
    assert_eq!(c.keep_releases, 5);
    let env = c.env().unwrap();
    assert_eq!(env.hosts.len(), 1);
    assert_eq!(env.hosts[0].to_string(), "deploy@prod1.example.com");
}

#[test]
fn init_refuses_an_existing_section_unless_forced() {
    let p = Project::fixture("hello");
    let before = p.manifest();
    let err = init(&options(&p, false), &Ui::silent()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("Cargo.toml already has a [package.metadata.ship] section"),
        "{err}"
    );
    assert_eq!(
        err.help().unwrap(),
        "edit it, see it resolved with `cargo ship config show`, or pass `--force` to replace it"
    );
    assert_eq!(p.manifest(), before);

    init(&options(&p, true), &Ui::silent()).unwrap();
    let after = p.manifest();
    assert_eq!(after.matches("[package.metadata.ship]").count(), 1);
    assert!(
        !after.contains("keep_releases = 3"),
        "the old section is gone"
    );
    assert!(
        after.contains("# A standalone fixture, not part of cargo-ship's workspace.\n[workspace]")
    );
    assert!(after.contains("[features]"));
}

#[test]
fn init_in_a_workspace_member() {
    let p = Project::fixture("workspace-two");
    p.write(
        "api/Cargo.toml",
        "[package]\nname = \"api\"\nversion.workspace = true\nedition.workspace = true\n",
    );
    let opts = InitOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        package: Some("api".into()),
        force: false,
    };
    let path = init(&opts, &Ui::silent()).unwrap();
    assert!(path.ends_with("api/Cargo.toml"));
    let c = config::load(&LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        package: Some("api".into()),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(c.deploy_to, "/opt/api");
}

#[test]
fn init_through_the_binary() {
    let p = hello_without_ship();
    let out = p.ship().arg("init").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(p
        .manifest()
        .contains("[package.metadata.ship.environments.prod]"));
    let out = p.ship().arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a second init is refused");
}
