//! The README's configuration reference is real: its TOML block, put into a package, loads with
//! every key accepted, and resolves to the values it shows.

use cargo_ship::config::{self, Batch, BuilderKind, LoadOptions};

use crate::support::{repo_root, Project};

/// The first ```toml block after the "## Configuration" heading of the README.
fn reference_block() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Configuration")
        .expect("a Configuration section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

#[test]
fn readme_config_reference_loads_as_written() {
    let p = Project::fixture("hello");
    let manifest = p.manifest();
    let package = &manifest[..manifest.find("[package.metadata.ship]").unwrap()];
    p.set_manifest(&format!("{package}{}", reference_block()));
    p.write("deploy/ssh_config", "Host web1.example.com\n");
    p.write("config/production.toml", "");
    p.write("deploy/prod.env", "DATABASE_URL=postgres://example\n");
    let c = config::load(&LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        environment: Some("prod".into()),
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("the README's reference does not load: {e}"));

    assert_eq!(c.bin, "hello");
    assert_eq!(c.builder, BuilderKind::Auto);
    assert_eq!(c.keep_releases, 5);
    assert_eq!(c.shared_dirs, ["data", "log"]);
    assert_eq!(c.systemd.args, ["--port", "8080"]);
    assert_eq!(c.health.timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.health.confirm_timeout, std::time::Duration::from_secs(90));
    assert_eq!(
        c.systemd.restart,
        cargo_ship::config::RestartStrategy::Socket
    );
    assert_eq!(c.systemd.listen, ["0.0.0.0:8080"]);
    assert_eq!(c.systemd.secrets, ["DATABASE_URL", "API_TOKEN"]);
    assert!(c.systemd.notify);
    assert_eq!(c.systemd.drain_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.hooks.before_switch, ["./hello check-config"]);
    assert_eq!(c.hooks.before_switch_once, ["./hello migrate"]);
    // Issue #20: the canary table.
    let canary = c.canary.as_ref().expect("the reference's canary table");
    assert_eq!(canary.window, std::time::Duration::from_secs(120));
    assert_eq!(canary.errors, "http_requests_total{code=~\"5..\"}");
    assert_eq!((canary.max_error_ratio, canary.min_requests), (0.01, 100));
    // Issue #21: a scheduled job.
    let job = &c.jobs["cleanup"];
    assert_eq!(job.schedule, "*-*-* 03:00:00");
    assert_eq!(job.on, cargo_ship::config::JobHosts::One);
    assert_eq!(job.timeout, Some(std::time::Duration::from_secs(3600)));
    // The environment overrides deploy_to, as the comment says.
    assert_eq!(c.deploy_to, "/srv/hello");
    let env = c.environment.as_ref().unwrap();
    assert_eq!(env.hosts.len(), 2);
    assert_eq!(env.hosts[1].port, Some(2222));
    assert_eq!(env.batch, [Batch::Percent(25)]);
    // #18, #19: the two limits and the big-fleet keys, as the reference shows them.
    assert_eq!(env.connect_parallel, 10);
    assert_eq!(env.parallel, Some(10));
    assert_eq!(env.pause, std::time::Duration::from_secs(30));
    assert_eq!(env.max_fail, cargo_ship::config::Budget::Count(1));
    assert_eq!(env.unreachable, cargo_ship::config::Unreachable::Fail);
    // Issue #11: the per-host table and once_on, as the reference shows them.
    let web2 = c.for_host("web2.example.com:2222");
    assert_eq!(web2.systemd.environment["WORKERS"], "2");
    assert_eq!(web2.systemd.environment["RUST_LOG"], "info");
    assert!(!c.systemd.environment.contains_key("WORKERS"));
    assert_eq!(c.hooks.once_on.as_deref(), Some("deploy@web1.example.com"));
}

/// Issue #8: the README's example workflows are the files zizmor lints
/// (`examples/workflows/*.yml`), word for word.
#[test]
fn issue_8_readme_example_workflows_are_the_linted_files() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for name in ["deploy.yml", "rollback.yml"] {
        let file =
            std::fs::read_to_string(repo_root().join("examples/workflows").join(name)).unwrap();
        assert!(
            readme.contains(&format!("```yaml\n{file}```")),
            "README.md does not show examples/workflows/{name} as it is"
        );
        assert!(file.contains("cancel-in-progress: false") && file.contains("contents: read"));
    }
}
