//! Issue #13: whole-workspace deploys. A workspace of two services (copies of
//! `fixtures/hello`): `wsapi13` on host0 and host1, `wswork13` on host1 and host2 (host1 runs
//! both), switched worker first (`[workspace.metadata.ship] order`).

use std::time::Duration;

use crate::app::{toml_str, Run, EXIT_ROLLED_BACK};
use crate::host::{self, TestHost, TestHosts};
use crate::support::Project;

const API: &str = "wsapi13";
const WORKER: &str = "wswork13";
const API_PORT: u16 = 18131;
const WORKER_PORT: u16 = 18132;

struct Ws {
    project: Project,
    hosts: &'static TestHosts,
}

/// One member's settings.
struct Member {
    version: &'static str,
    /// The port its health probe asks (a wrong one makes the release unhealthy).
    probe_port: u16,
}

impl Ws {
    fn new(hosts: &'static TestHosts) -> Ws {
        let ws = Ws {
            project: Project::hello_workspace(&[API, WORKER]),
            hosts,
        };
        ws.project.set_manifest(&format!(
            r#"[workspace]
members = ["{API}", "{WORKER}"]
resolver = "2"

[workspace.metadata.ship]
target = "x86_64-unknown-linux-gnu"
order = ["{WORKER}", "{API}"]
keep_releases = 5

[workspace.metadata.ship.health]
timeout = "4s"
settle = "1s"
"#
        ));
        ws.member(
            API,
            &Member {
                version: "0.1.0",
                probe_port: API_PORT,
            },
        );
        ws.member(
            WORKER,
            &Member {
                version: "0.1.0",
                probe_port: WORKER_PORT,
            },
        );
        // Kept in git as a team keeps it: every member change below is its own commit.
        ws.project.git_init();
        ws
    }

    fn port(name: &str) -> u16 {
        if name == API {
            API_PORT
        } else {
            WORKER_PORT
        }
    }

    fn hosts_of(name: &str) -> [&'static str; 2] {
        if name == API {
            ["host0", "host1"]
        } else {
            ["host1", "host2"]
        }
    }

    /// Writes `<name>/Cargo.toml`.
    fn member(&self, name: &str, m: &Member) {
        let port = Self::port(name);
        let hosts: Vec<String> = Self::hosts_of(name).iter().map(|h| toml_str(h)).collect();
        self.project.write(
            &format!("{name}/Cargo.toml"),
            &format!(
                r#"[package]
name = "{name}"
version = "{version}"
edition = "2021"
publish = false

[features]
unhealthy = []
crash = []
never-ready = []

[package.metadata.ship]
assets = ["config/default.toml", "static"]
deploy_to = "/opt/{name}"

[package.metadata.ship.systemd]
args = ["--port", "{port}"]

[package.metadata.ship.health]
http = "http://127.0.0.1:{probe}/healthz"

[package.metadata.ship.environments.test]
hosts = [{hosts}]
ssh_config = {ssh}
"#,
                version = m.version,
                probe = m.probe_port,
                hosts = hosts.join(", "),
                ssh = toml_str(&self.hosts.ssh_config.display().to_string()),
            ),
        );
        if self.project.is_git() {
            self.project.commit(&format!("{name} {}", m.version));
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        // No SOURCE_DATE_EPOCH: as for a team, the build time is the commit's.
        let out = self
            .project
            .ship()
            .args(args)
            .timeout(Duration::from_secs(300))
            .output()
            .expect("cargo ship");
        Run::from_output(args.iter().map(|s| s.to_string()).collect(), &out)
    }

    fn host(&self, alias: &str) -> &'static TestHost {
        self.hosts
            .hosts
            .iter()
            .find(|h| h.name == alias)
            .expect("host")
    }

    fn current(&self, name: &str, alias: &str) -> Option<String> {
        self.host(alias).current_release(&format!("/opt/{name}"))
    }

    fn invocation(&self, name: &str, alias: &str) -> String {
        self.host(alias)
            .unit_property(&format!("{name}.service"), "InvocationID")
    }

    fn main_pid(&self, name: &str, alias: &str) -> String {
        self.host(alias)
            .unit_property(&format!("{name}.service"), "MainPID")
    }

    /// The artifacts cached in `name`'s deploy_to on `alias` (one per upload).
    fn artifacts(&self, name: &str, alias: &str) -> String {
        self.host(alias)
            .exec_ok(&format!("ls /opt/{name}/.ship/artifacts"))
    }

    fn version(&self, name: &str, alias: &str) -> Option<String> {
        self.host(alias)
            .http_get(Self::port(name), "/version")
            .map(|(_, b)| b.trim().to_string())
    }

    /// The summary row of `package` on `alias`.
    fn row(run: &Run, package: &str, alias: &str) -> serde_json::Value {
        run.summary()
            .into_iter()
            .find(|r| r["host"] == alias && r["package"] == package)
            .unwrap_or_else(|| panic!("no row for {package} on {alias}\n{}", run.describe()))
    }
}

#[test]
fn issue_13_workspace_deploy_rollout_unchanged_rollback_status_and_one_package() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let ws = Ws::new(hosts);
    let pairs = [
        (API, "host0"),
        (API, "host1"),
        (WORKER, "host1"),
        (WORKER, "host2"),
    ];

    // 1. One deploy from the root ships both services, one connection per host.
    let first = ws.run(&["deploy", "test", "--message-format", "json"]);
    assert_eq!(first.code, 0, "{}", first.describe());
    assert_eq!(first.summary().len(), 4, "{}", first.describe());
    let r1 = Ws::row(&first, API, "host0")["release"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, alias) in pairs {
        let row = Ws::row(&first, name, alias);
        assert_eq!(row["outcome"], "deployed", "{name} on {alias}: {row}");
        assert_eq!(
            row["release"],
            r1.as_str(),
            "one release id names the deploy: {row}"
        );
        assert_eq!(row["connections"], 1, "one ssh connection per host: {row}");
        assert_eq!(ws.current(name, alias).as_deref(), Some(r1.as_str()));
        assert_eq!(
            ws.version(name, alias).as_deref(),
            Some("0.1.0"),
            "{name} on {alias}"
        );
    }
    // Every status line of a service names its package.
    let events = first.events();
    assert!(
        events
            .iter()
            .any(|e| e["verb"] == "Switched" && e["package"] == WORKER && e["host"] == "host1"),
        "{}",
        first.describe()
    );
    // The worker switched before the api (order = [worker, api]).
    let switched: Vec<String> = events
        .iter()
        .filter(|e| e["verb"] == "Switched")
        .map(|e| e["package"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        switched,
        [WORKER, WORKER, API, API],
        "switch order\n{}",
        first.describe()
    );

    // 2. Only the worker changed, in a commit of its own (#17: the artifacts' manifests name
    // the new commit, the api's binary, assets, units and secrets are the same): only the
    // worker restarts, and nothing of the api is uploaded.
    let api_inv: Vec<String> = ["host0", "host1"]
        .iter()
        .map(|h| ws.invocation(API, h))
        .collect();
    let api_pid: Vec<String> = ["host0", "host1"]
        .iter()
        .map(|h| ws.main_pid(API, h))
        .collect();
    let api_artifacts: Vec<String> = ["host0", "host1"]
        .iter()
        .map(|h| ws.artifacts(API, h))
        .collect();
    ws.member(
        WORKER,
        &Member {
            version: "0.2.0",
            probe_port: WORKER_PORT,
        },
    );
    let second = ws.run(&["deploy", "test", "--message-format", "json"]);
    assert_eq!(second.code, 0, "{}", second.describe());
    let r2 = Ws::row(&second, WORKER, "host1")["release"]
        .as_str()
        .unwrap()
        .to_string();
    for alias in ["host0", "host1"] {
        let row = Ws::row(&second, API, alias);
        assert_eq!(row["outcome"], "unchanged", "{row}\n{}", second.describe());
        assert_eq!(row["release"], r1.as_str(), "{row}");
    }
    for alias in ["host1", "host2"] {
        assert_eq!(Ws::row(&second, WORKER, alias)["outcome"], "deployed");
        assert_eq!(ws.current(WORKER, alias).as_deref(), Some(r2.as_str()));
        assert_eq!(ws.version(WORKER, alias).as_deref(), Some("0.2.0"));
    }
    let after: Vec<String> = ["host0", "host1"]
        .iter()
        .map(|h| ws.invocation(API, h))
        .collect();
    assert_eq!(api_inv, after, "the unchanged api was not restarted");
    let pid_after: Vec<String> = ["host0", "host1"]
        .iter()
        .map(|h| ws.main_pid(API, h))
        .collect();
    assert_eq!(api_pid, pid_after, "the unchanged api kept its MainPID");
    let artifacts_after: Vec<String> = ["host0", "host1"]
        .iter()
        .map(|h| ws.artifacts(API, h))
        .collect();
    assert_eq!(
        api_artifacts,
        artifacts_after,
        "no artifact of the unchanged api was uploaded\n{}",
        second.describe()
    );
    // host0 runs only the api: nothing at all was sent to it.
    assert_eq!(
        Ws::row(&second, API, "host0")["bytes_sent"],
        0,
        "{}",
        second.describe()
    );

    // 3. Both change, the api (switched second) is unhealthy: both go back.
    ws.member(
        WORKER,
        &Member {
            version: "0.3.0",
            probe_port: WORKER_PORT,
        },
    );
    ws.member(
        API,
        &Member {
            version: "0.3.0",
            probe_port: 18139,
        },
    );
    let bad = ws.run(&["deploy", "test", "--message-format", "json"]);
    assert_eq!(bad.code, EXIT_ROLLED_BACK, "{}", bad.describe());
    for (name, alias, release, version) in [
        (API, "host0", &r1, "0.1.0"),
        (API, "host1", &r1, "0.1.0"),
        (WORKER, "host1", &r2, "0.2.0"),
        (WORKER, "host2", &r2, "0.2.0"),
    ] {
        assert_eq!(
            ws.current(name, alias).as_deref(),
            Some(release.as_str()),
            "{name} on {alias} is back\n{}",
            bad.describe()
        );
        assert_eq!(
            ws.version(name, alias).as_deref(),
            Some(version),
            "{name} on {alias}"
        );
    }
    for alias in ["host1", "host2"] {
        assert_eq!(
            Ws::row(&bad, WORKER, alias)["outcome"],
            "rolled back",
            "{}",
            bad.describe()
        );
    }

    // 4. rollback at the root undoes the last deploy that went through: the worker goes
    // back to 0.1.0, the api (not changed by it) stays.
    let rb = ws.run(&["rollback", "test", "--message-format", "json"]);
    assert_eq!(rb.code, 0, "{}", rb.describe());
    for (name, alias) in pairs {
        assert_eq!(
            ws.current(name, alias).as_deref(),
            Some(r1.as_str()),
            "{name} on {alias} after rollback\n{}",
            rb.describe()
        );
    }
    for alias in ["host1", "host2"] {
        assert_eq!(Ws::row(&rb, WORKER, alias)["outcome"], "rolled back");
        assert_eq!(ws.version(WORKER, alias).as_deref(), Some("0.1.0"));
    }
    assert!(
        !rb.summary().iter().any(|r| r["package"] == API),
        "the api was left alone\n{}",
        rb.describe()
    );

    // 5. status at the root: both services, each host.
    let st = ws.run(&["status", "test", "--message-format", "json"]);
    assert_eq!(st.code, 0, "{}", st.describe());
    let verdicts: Vec<String> = st
        .events()
        .iter()
        .filter(|e| e["event"] == "output" && e["kind"] == "verdict")
        .map(|e| e["data"]["package"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(verdicts, [WORKER, API], "{}", st.describe());
    let human = ws.run(&["status", "test"]);
    assert_eq!(human.code, 0, "{}", human.describe());
    assert!(
        human.stdout.contains(&format!("{API}:\n"))
            && human.stdout.contains(&format!("{WORKER}:\n")),
        "{}",
        human.describe()
    );

    // logs, releases and prune at the root: every service, each event naming its package.
    let logs = ws.run(&["logs", "test", "-n", "5", "--message-format", "json"]);
    assert_eq!(logs.code, 0, "{}", logs.describe());
    for (name, alias) in pairs {
        assert!(
            logs.events().iter().any(|e| e["kind"] == "log"
                && e["data"]["package"] == name
                && e["data"]["host"] == alias),
            "no journal line of {name} on {alias}\n{}",
            logs.describe()
        );
    }
    let rel = ws.run(&["releases", "test", "--message-format", "json"]);
    assert_eq!(rel.code, 0, "{}", rel.describe());
    let tables: Vec<String> = rel
        .events()
        .iter()
        .filter(|e| e["kind"] == "releases")
        .map(|e| e["data"]["package"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(tables, [WORKER, API], "{}", rel.describe());
    let pr = ws.run(&["prune", "test", "--keep", "1", "--message-format", "json"]);
    assert_eq!(pr.code, 0, "{}", pr.describe());
    assert_eq!(
        pr.summary().len(),
        4,
        "one table, a row per host and service\n{}",
        pr.describe()
    );
    for (name, alias) in pairs {
        assert_eq!(
            Ws::row(&pr, name, alias)["outcome"],
            "pruned",
            "{}",
            pr.describe()
        );
    }

    // 6. -p still ships one package.
    ws.member(
        API,
        &Member {
            version: "0.4.0",
            probe_port: API_PORT,
        },
    );
    let one = ws.run(&["deploy", "test", "-p", API, "--message-format", "json"]);
    assert_eq!(one.code, 0, "{}", one.describe());
    let rows = one.summary();
    assert_eq!(rows.len(), 2, "{}", one.describe());
    assert!(rows
        .iter()
        .all(|r| r["outcome"] == "deployed" && r.get("package").is_none()));
    for alias in ["host0", "host1"] {
        assert_eq!(ws.version(API, alias).as_deref(), Some("0.4.0"));
    }
    assert_eq!(ws.current(WORKER, "host1").as_deref(), Some(r1.as_str()));

    // 7. Two workspace deploys at once: the locks go in one order, so exactly one wins.
    ws.member(
        WORKER,
        &Member {
            version: "0.5.0",
            probe_port: WORKER_PORT,
        },
    );
    ws.member(
        API,
        &Member {
            version: "0.5.0",
            probe_port: API_PORT,
        },
    );
    assert_eq!(ws.run(&["build"]).code, 0, "build at the root");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ws.run(&["deploy", "test", "--message-format", "json"]));
        let b = s.spawn(|| ws.run(&["deploy", "test", "--message-format", "json"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(
        codes,
        [0, crate::app::EXIT_LOCKED],
        "\n=== first ===\n{}\n=== second ===\n{}",
        a.describe(),
        b.describe()
    );
    let winner = if a.code == 0 { &a } else { &b };
    let r5 = Ws::row(winner, API, "host0")["release"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, alias) in pairs {
        assert_eq!(
            ws.current(name, alias).as_deref(),
            Some(r5.as_str()),
            "{name} on {alias}"
        );
        assert_eq!(
            ws.version(name, alias).as_deref(),
            Some("0.5.0"),
            "{name} on {alias}"
        );
        let lock = ws
            .host(alias)
            .exec(&format!("test -e /opt/{name}/.ship/lock"));
        assert!(!lock.status.success(), "no lock left for {name} on {alias}");
    }
    // unlock at the root: every service, one table.
    let un = ws.run(&["unlock", "test", "--message-format", "json"]);
    assert_eq!(un.code, 0, "{}", un.describe());
    assert_eq!(un.summary().len(), 4, "{}", un.describe());
}
