//! `cargo ship init`: the section it adds keeps the rest of Cargo.toml and loads as written.

use cargo_ship::config::{self, LoadOptions, RestartStrategy};
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
        strategy: RestartStrategy::Restart,
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
        strategy: RestartStrategy::Restart,
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

/// Is this line of the template an example (`# key = value` or `# [table]`), and if so, the
/// line uncommented.
fn example(line: &str) -> Option<String> {
    let rest = line.strip_prefix("# ")?;
    let is_table = rest.starts_with('[') && rest.ends_with(']');
    let is_key = rest.split_once(" = ").is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    });
    (is_table || is_key).then(|| rest.to_string())
}

/// The key (or table) an example line sets.
fn key_of(uncommented: &str) -> String {
    uncommented
        .split_once(" = ")
        .map(|(k, _)| k.to_string())
        .unwrap_or_else(|| uncommented.to_string())
}

/// The project's manifest with the example lines at `which` uncommented, each with the
/// commented table header it belongs to (an example key under `# [table]` needs the table).
fn uncomment(text: &str, which: &[usize]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    for &i in which {
        out[i] = example(lines[i]).expect("an example line");
        if out[i].starts_with('[') {
            continue;
        }
        // The nearest table header above, if commented.
        if let Some(h) = (0..i)
            .rev()
            .find(|&j| lines[j].starts_with('[') || lines[j].starts_with("# ["))
        {
            if let Some(t) = lines[h].strip_prefix("# ") {
                out[h] = t.to_string();
            }
        }
    }
    out.join("\n") + "\n"
}

fn load_prod(p: &Project) -> cargo_ship::Result<config::Config> {
    config::load(&LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        environment: Some("prod".into()),
        ..LoadOptions::default()
    })
}

/// Issue #22: the template shows every section a user may want, and each example loads when
/// uncommented: all at once, and each alone (`restart` and `listen` go together: one needs
/// the other). The files the examples name (ssh_config, secrets_file) are created first, as a
/// user would.
#[test]
fn issue_22_every_example_in_the_template_loads_when_uncommented() {
    let p = hello_without_ship();
    init(&options(&p, false), &Ui::silent()).unwrap();
    let text = p.manifest();
    for needle in [
        "# restart = \"socket\"",
        "# listen = [\"0.0.0.0:8080\"]",
        "# notify = true",
        "# drain_timeout = \"30s\"",
        "# secrets = [\"DATABASE_URL\"]",
        "# secrets_file = \"deploy/prod.env\"",
        "# confirm_timeout = \"90s\"",
        "# [package.metadata.ship.environments.prod.per_host.\"deploy@prod1.example.com\".systemd]",
        "# targets = [\"x86_64-unknown-linux-gnu\", \"aarch64-unknown-linux-gnu\"]",
        "\"blue-green\": the new release starts beside the old one",
        "# [package.metadata.ship.jobs.cleanup]",
        "# schedule = \"*-*-* 03:00:00\"",
        "# [package.metadata.ship.canary]",
    ] {
        assert!(
            text.contains(needle),
            "the template lacks {needle}:\n{text}"
        );
    }
    p.write("deploy/ssh_config", "Host *\n");
    p.write("deploy/prod.env", "DATABASE_URL=postgres://x\n");
    let lines: Vec<&str> = text.lines().collect();
    let examples: Vec<usize> = (0..lines.len())
        .filter(|&i| example(lines[i]).is_some())
        .collect();
    assert!(examples.len() >= 30, "{} examples", examples.len());

    // All at once: every key together.
    p.set_manifest(&uncomment(&text, &examples));
    let c = load_prod(&p).unwrap_or_else(|e| panic!("{e}\n{}", p.manifest()));
    assert_eq!(c.systemd.restart, RestartStrategy::Socket);
    assert_eq!(c.systemd.listen, ["0.0.0.0:8080"]);
    assert!(c.systemd.notify);
    assert_eq!(c.systemd.drain_timeout.as_secs(), 30);
    assert_eq!(c.systemd.secrets, ["DATABASE_URL"]);
    assert_eq!(c.health.confirm_timeout.as_secs(), 90);
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.per_host.len(), 1);
    assert_eq!(c.jobs.len(), 1, "{:?}", c.jobs);
    assert!(c.canary.is_some(), "the canary example is on");

    // Each alone (with its partner for the pair that needs one).
    each_example_alone(&p, &text);

    // The zero-downtime templates' examples load too, with the strategy set for real.
    for strategy in [RestartStrategy::Socket, RestartStrategy::BlueGreen] {
        let q = hello_without_ship();
        let mut opts = options(&q, false);
        opts.strategy = strategy;
        init(&opts, &Ui::silent()).unwrap();
        q.write("deploy/ssh_config", "Host *\n");
        q.write("deploy/prod.env", "DATABASE_URL=postgres://x\n");
        let text = q.manifest();
        let lines: Vec<&str> = text.lines().collect();
        let all: Vec<usize> = (0..lines.len())
            .filter(|&i| example(lines[i]).is_some())
            .collect();
        q.set_manifest(&uncomment(&text, &all));
        let c = load_prod(&q).unwrap_or_else(|e| panic!("{e}\n{}", q.manifest()));
        assert_eq!(c.systemd.restart, strategy);
        each_example_alone(&q, &text);
    }
}

/// Uncomments each example line of `text` alone (`restart` and `listen` together) and loads.
fn each_example_alone(p: &Project, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let examples: Vec<usize> = (0..lines.len())
        .filter(|&i| example(lines[i]).is_some())
        .collect();
    for &i in &examples {
        let key = key_of(&example(lines[i]).unwrap());
        let mut which = vec![i];
        // A job's table needs its schedule.
        // A job's table needs its schedule; a canary's, its metrics and counters.
        let table = (0..=i)
            .rev()
            .find(|&j| lines[j].starts_with('[') || lines[j].starts_with("# ["))
            .map(|h| lines[h])
            .unwrap_or("");
        let partners: &[&str] = match key.as_str() {
            "restart" => &["listen"],
            "listen" => &["restart"],
            _ if table.contains(".jobs.") => &["schedule"],
            _ if table.ends_with(".canary]") => &["metrics", "requests", "errors"],
            _ => &[],
        };
        // (Only the partners inside the same table: `timeout` and the like exist elsewhere.)
        let end = (i + 1..lines.len())
            .find(|&j| {
                lines[j].starts_with('[') || lines[j].starts_with("# [") || lines[j].is_empty()
            })
            .unwrap_or(lines.len());
        let start = (0..=i)
            .rev()
            .find(|&j| {
                lines[j].starts_with('[') || lines[j].starts_with("# [") || lines[j].is_empty()
            })
            .unwrap_or(0);
        which.extend(examples.iter().filter(|&&j| {
            j >= start
                && j < end
                && partners.contains(&key_of(&example(lines[j]).unwrap()).as_str())
        }));
        p.set_manifest(&uncomment(text, &which));
        if let Err(e) = load_prod(p) {
            panic!(
                "uncommenting `{}` alone does not load: {e}\n{}",
                lines[i],
                p.manifest()
            );
        }
    }
}

/// Issue #22: `init --strategy socket` (and blue-green) writes the zero-downtime keys for real:
/// systemd holds port 8080, the app says READY=1, drains within 30 s, and the probe checks
/// the same port.
#[test]
fn issue_22_init_strategy_socket_and_blue_green() {
    for (strategy, name) in [
        (RestartStrategy::Socket, "socket"),
        (RestartStrategy::BlueGreen, "blue-green"),
    ] {
        let p = hello_without_ship();
        let mut opts = options(&p, false);
        opts.strategy = strategy;
        init(&opts, &Ui::silent()).unwrap();
        let text = p.manifest();
        assert!(
            text.contains(&format!(
                "\nrestart = \"{name}\"\nlisten = [\"0.0.0.0:8080\"]"
            )),
            "{text}"
        );
        let c = load_prod(&p).unwrap();
        assert_eq!(c.systemd.restart, strategy);
        assert_eq!(c.systemd.listen, ["0.0.0.0:8080"]);
        assert!(c.systemd.notify);
        assert_eq!(c.systemd.drain_timeout.as_secs(), 30);
        let http = c.health.http.as_ref().expect("a health probe");
        assert!(http.contains("127.0.0.1:8080/healthz"), "{http}");
    }
    // Through the binary: the flag, and what it says the app must do.
    let p = hello_without_ship();
    let out = p
        .ship()
        .args(["init", "--strategy", "socket"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the service must take its listener from fd 3 (LISTEN_FDS)"),
        "{stderr}"
    );
    let out = p
        .ship()
        .args(["init", "--force", "--strategy", "rolling"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Issue #22: at the root of a workspace of several members, `init` writes
/// `[workspace.metadata.ship]` defaults (with the members in the `order` example), which the
/// members inherit; `-p` still initialises one member.
#[test]
fn issue_22_init_at_a_workspace_root_writes_workspace_defaults() {
    let p = Project::fixture("workspace-two");
    let text = p.manifest();
    let cut = text.find("# Defaults for every package").unwrap();
    p.set_manifest(&text[..cut]);
    let path = init(&options(&p, false), &Ui::silent()).unwrap();
    assert_eq!(path, p.path("Cargo.toml"));
    let after = p.manifest();
    assert!(after.contains("\n[workspace.metadata.ship]\n"), "{after}");
    assert!(after.contains("# order = [\"api\", \"worker\"]"), "{after}");
    assert!(
        !after
            .lines()
            .any(|l| l.starts_with("[package.metadata.ship")),
        "{after}"
    );
    // The members inherit the defaults (worker's own keep_releases = 8 wins over them).
    for (member, keep) in [("api", 5), ("worker", 8)] {
        let c = config::load(&LoadOptions {
            manifest_path: Some(p.path("Cargo.toml")),
            package: Some(member.into()),
            environment: Some("prod".into()),
            ..LoadOptions::default()
        })
        .unwrap();
        assert_eq!(c.keep_releases, keep);
        assert_eq!(
            c.env().unwrap().hosts[0].to_string(),
            "deploy@prod1.example.com"
        );
    }
    // Every example there loads too.
    let lines: Vec<&str> = after.lines().collect();
    let all: Vec<usize> = (0..lines.len())
        .filter(|&i| example(lines[i]).is_some())
        .collect();
    p.write("deploy/ssh_config", "Host *\n");
    p.write("deploy/prod.env", "DATABASE_URL=x\n");
    p.set_manifest(&uncomment(&after, &all));
    let c = config::load(&LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        package: Some("api".into()),
        environment: Some("prod".into()),
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.manifest()));
    assert_eq!(c.targets.len(), 2);
    assert!(c.sudo);
    // `--strategy` is one service's: refused at the root, with the way to do it.
    let mut opts = options(&p, true);
    opts.strategy = RestartStrategy::Socket;
    let err = init(&opts, &Ui::silent()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("`--strategy socket` sets up one service's sockets, and "),
        "{err}"
    );
    assert_eq!(
        err.help().unwrap(),
        "run `cargo ship init -p <member> --strategy socket` for each service (members: api, worker); `cargo ship init` here writes the workspace's defaults"
    );
    // A second init at the root is refused like a package's.
    p.set_manifest(&after);
    let err = init(&options(&p, false), &Ui::silent()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("Cargo.toml already has a [workspace.metadata.ship] section"),
        "{err}"
    );
}
