//! Helpers for the deploy tests (issue #3): each test deploys its own copy of `fixtures/hello`
//! under a unique name and port, so tests can share the three hosts and run in parallel.
//!
//! An [`App`] owns the project copy and its Cargo.toml (rendered from a [`Spec`]), runs
//! `cargo ship ...` in it, and reads the real state of the hosts: `current`, files under
//! `/opt/<app>`, HTTP answers, the unit. Every failed check panics with the command's output
//! and the unit's journal on the hosts involved.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crate::host::{TestHost, TestHosts};
use crate::support::Project;

/// The exit codes of README's table.
pub const EXIT_PREFLIGHT: i32 = 6;
pub const EXIT_LOCKED: i32 = 7;
pub const EXIT_ROLLED_BACK: i32 = 8;
pub const EXIT_REMOTE: i32 = 9;
pub const EXIT_INTERRUPTED: i32 = 130;

/// What goes into the app's Cargo.toml besides its name, port and paths.
#[derive(Debug, Clone)]
pub struct Spec {
    pub version: String,
    /// ssh aliases of the environment `test` (`host0`, `host1-deploy`...).
    pub hosts: Vec<String>,
    pub keep_releases: u32,
    pub timeout: String,
    pub settle: String,
    /// Extra arguments after `--port <port>`.
    pub extra_args: Vec<String>,
    /// `[systemd] environment`.
    pub environment: Vec<(String, String)>,
    pub health_command: Option<String>,
    pub before_switch: Vec<String>,
    pub before_switch_once: Vec<String>,
    pub after_switch: Vec<String>,
    /// Raw extra lines for `[package.metadata.ship]` (e.g. `sudo = true`).
    pub ship_lines: Vec<String>,
    /// Raw extra lines for the environment `test` (e.g. `batch = 1`).
    pub env_lines: Vec<String>,
    /// Raw extra lines for `[package.metadata.ship.systemd]` (e.g. `restart = "socket"`).
    pub systemd_lines: Vec<String>,
    /// Raw extra lines for `[package.metadata.ship.health]` (e.g. `confirm_timeout = "0s"`).
    pub health_lines: Vec<String>,
    /// The environment's `ssh_config` (default: the test hosts' own).
    pub ssh_config: Option<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: "0.1.0".into(),
            hosts: vec!["host0".into()],
            keep_releases: 5,
            timeout: "15s".into(),
            settle: "1s".into(),
            extra_args: Vec::new(),
            environment: Vec::new(),
            health_command: None,
            before_switch: Vec::new(),
            before_switch_once: Vec::new(),
            after_switch: Vec::new(),
            ship_lines: Vec::new(),
            env_lines: Vec::new(),
            systemd_lines: Vec::new(),
            health_lines: Vec::new(),
            ssh_config: None,
        }
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", v.join(", "))
}

/// A finished `cargo ship` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(args: Vec<String>, out: &Output) -> Run {
        Run {
            args,
            // Killed by a signal: -1.
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The command line and everything it printed, for panic messages.
    pub fn describe(&self) -> String {
        format!(
            "`cargo ship {}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }

    /// The `--message-format json` events on stdout.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\n{}", self.describe()))
            })
            .collect()
    }

    /// The rows of the final `{"event":"summary",...}` line.
    pub fn summary(&self) -> Vec<serde_json::Value> {
        let events = self.events();
        let summary = events
            .iter()
            .rev()
            .find(|e| e["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary event\n{}", self.describe()));
        summary["hosts"]
            .as_array()
            .unwrap_or_else(|| panic!("summary without hosts\n{}", self.describe()))
            .clone()
    }

    /// The summary row of the host whose configured name contains `alias` (e.g. `host1`).
    pub fn row(&self, alias: &str) -> serde_json::Value {
        self.summary()
            .into_iter()
            .find(|r| r["host"].as_str().is_some_and(|h| h == alias))
            .unwrap_or_else(|| panic!("no summary row for {alias}\n{}", self.describe()))
    }

    /// stdout and stderr together (human output goes to stderr, requested output to stdout).
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// One test's app on the shared hosts.
pub struct App {
    pub name: String,
    pub port: u16,
    pub project: Project,
    pub hosts: &'static TestHosts,
    pub spec: Spec,
}

impl App {
    /// A copy of `fixtures/hello` named `name` (also its unit and `/opt/<name>`), listening
    /// on `port`. Nothing is written until [`App::write`] (called by [`App::new`]).
    pub fn new(hosts: &'static TestHosts, name: &str, port: u16, spec: Spec) -> App {
        let app = App {
            name: name.to_string(),
            port,
            project: Project::fixture("hello"),
            hosts,
            spec,
        };
        app.write();
        app
    }

    /// Makes the project a git repository (see [`Project::git_init`]): from now on every
    /// [`App::update`] is committed, so each deploy comes from its own commit, as in a team's
    /// repository (the artifact's manifest then names a new commit every time).
    pub fn in_git(self) -> App {
        self.project.git_init();
        self
    }

    /// Prepares the app's hosts with `cargo ship setup` (run as root, the admin) for a
    /// least-privileged `deploy_user` and a `service_user`, then switches the environment's
    /// hosts to `deploy_user@hostN`: every later command runs as that user, as intended after
    /// setup. Returns the setup run.
    pub fn as_deploy_user(&mut self, deploy_user: &str, service_user: &str) -> Run {
        let hosts: Vec<String> = self
            .spec
            .hosts
            .iter()
            .map(|h| {
                let base = h.rsplit('@').next().unwrap_or(h);
                format!("{deploy_user}@{}", base.trim_end_matches("-deploy"))
            })
            .collect();
        let key = self.hosts.dir.join("id_ed25519.pub");
        self.update(|s| {
            s.hosts = hosts;
            if !s.ship_lines.iter().any(|l| l.starts_with("sudo")) {
                s.ship_lines.push("sudo = true".into());
            }
            s.systemd_lines.retain(|l| !l.starts_with("user "));
            s.systemd_lines
                .push(format!("user = {}", toml_str(service_user)));
        });
        self.run_expect(
            &[
                "setup",
                "test",
                "--authorized-key",
                key.to_str().expect("utf-8 path"),
            ],
            0,
        )
    }

    /// Starts `cargo ship <args>` in the background, in its own process group (see
    /// [`crate::support::process::Spawned`]).
    pub fn spawn(&self, args: &[&str]) -> crate::support::process::Spawned {
        crate::support::process::Spawned::start(
            &self.project.root,
            args,
            match self.project.is_git() {
                true => &[],
                false => &[("SOURCE_DATE_EPOCH", "1700000000")],
            },
        )
    }

    /// `/opt/<name>`.
    pub fn deploy_to(&self) -> String {
        format!("/opt/{}", self.name)
    }

    /// The unit name as given to systemctl.
    pub fn unit(&self) -> String {
        format!("{}.service", self.name)
    }

    /// Changes the spec and rewrites Cargo.toml.
    pub fn update(&mut self, f: impl FnOnce(&mut Spec)) {
        f(&mut self.spec);
        self.write();
        if self.project.is_git() {
            self.project
                .commit(&format!("{} {}", self.name, self.spec.version));
        }
    }

    /// Renders the whole Cargo.toml from the spec.
    pub fn manifest_text(&self) -> String {
        let s = &self.spec;
        let mut args = vec!["--port".to_string(), self.port.to_string()];
        args.extend(s.extra_args.iter().cloned());
        let environment: Vec<String> = s
            .environment
            .iter()
            .map(|(k, v)| format!("{k} = {}", toml_str(v)))
            .collect();
        let mut t = format!(
            r#"[package]
name = "{name}"
version = "{version}"
edition = "2021"
publish = false

# A standalone fixture, not part of cargo-ship's workspace.
[workspace]

[features]
unhealthy = []
crash = []
never-ready = []
flaky = []

[package.metadata.ship]
target = "x86_64-unknown-linux-gnu"
assets = ["config/default.toml", "static"]
deploy_to = "/opt/{name}"
keep_releases = {keep}
shared_dirs = ["data"]
"#,
            name = self.name,
            version = s.version,
            keep = s.keep_releases,
        );
        for l in &s.ship_lines {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str(&format!(
            "\n[package.metadata.ship.systemd]\nunit = {}\nargs = {}\nenvironment = {{ {} }}\n",
            toml_str(&self.name),
            toml_list(&args),
            environment.join(", ")
        ));
        for l in &s.systemd_lines {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str(&format!(
            "\n[package.metadata.ship.health]\nhttp = \"http://127.0.0.1:{}/healthz\"\ntimeout = {}\nsettle = {}\n",
            self.port,
            toml_str(&s.timeout),
            toml_str(&s.settle)
        ));
        if let Some(c) = &s.health_command {
            t.push_str(&format!("command = {}\n", toml_str(c)));
        }
        for l in &s.health_lines {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str(&format!(
            "\n[package.metadata.ship.hooks]\nbefore_switch = {}\nbefore_switch_once = {}\nafter_switch = {}\n",
            toml_list(&s.before_switch),
            toml_list(&s.before_switch_once),
            toml_list(&s.after_switch)
        ));
        t.push_str(&format!(
            "\n[package.metadata.ship.environments.test]\nhosts = {}\nssh_config = {}\n",
            toml_list(&s.hosts),
            toml_str(
                &s.ssh_config.clone().unwrap_or_else(|| self
                    .hosts
                    .ssh_config
                    .display()
                    .to_string())
            )
        ));
        for l in &s.env_lines {
            t.push_str(l);
            t.push('\n');
        }
        t
    }

    pub fn write(&self) {
        self.project.set_manifest(&self.manifest_text());
    }

    /// `cargo ship <args>` in the project (reproducible: a fixed SOURCE_DATE_EPOCH, unless the
    /// project is a git repository: then, as for a team, the build time is the commit's).
    pub fn ship(&self) -> assert_cmd::Command {
        let mut cmd = self.project.ship();
        if !self.project.is_git() {
            cmd.env("SOURCE_DATE_EPOCH", "1700000000");
        }
        cmd
    }

    /// Runs `cargo ship <args>` to the end.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .ship()
            .args(args)
            .timeout(Duration::from_secs(240))
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo ship {args:?}: {e}"));
        Run::from_output(args.iter().map(|s| s.to_string()).collect(), &out)
    }

    /// Runs `cargo ship <args>` and checks its exit code.
    pub fn run_expect(&self, args: &[&str], code: i32) -> Run {
        let run = self.run(args);
        if run.code != code {
            self.fail(&format!("expected exit code {code}"), Some(&run));
        }
        run
    }

    /// `cargo ship deploy test --message-format json <extra>`, expecting `code`.
    pub fn deploy(&self, extra: &[&str], code: i32) -> Run {
        let mut args = vec!["deploy", "test", "--message-format", "json"];
        args.extend_from_slice(extra);
        self.run_expect(&args, code)
    }

    /// Panics with `what`, the run's output and the unit's journal on every host of the app.
    pub fn fail(&self, what: &str, run: Option<&Run>) -> ! {
        let mut msg = format!("[{}] {what}\n", self.name);
        if let Some(r) = run {
            msg.push_str(&r.describe());
            msg.push('\n');
        }
        for h in self.app_hosts() {
            let guard = format!("{}-guard.service", self.name);
            msg.push_str(&format!(
                "--- journal of {} on {} ---\n{}\n--- journal of {guard} on {} ---\n{}\n--- ls -la {} on {} ---\n{}\n",
                self.unit(),
                h.name,
                h.journal(&self.unit()),
                h.name,
                h.journal(&guard),
                self.deploy_to(),
                h.name,
                self.ls_state(h)
            ));
        }
        panic!("{msg}");
    }

    /// `check(cond, what, run)`: [`fail`](Self::fail) unless `cond`.
    pub fn check(&self, cond: bool, what: impl AsRef<str>, run: Option<&Run>) {
        if !cond {
            self.fail(what.as_ref(), run);
        }
    }

    /// Asserts equality with the journal in the message.
    pub fn check_eq<T: PartialEq + std::fmt::Debug>(
        &self,
        left: T,
        right: T,
        what: &str,
        run: Option<&Run>,
    ) {
        if left != right {
            self.fail(&format!("{what}: {left:?} != {right:?}"), run);
        }
    }

    fn ls_state(&self, h: &TestHost) -> String {
        let d = self.deploy_to();
        let out = h.exec(&format!(
            "cd {d} 2>/dev/null && ls -la . releases .ship .ship/* 2>&1; cat revisions.log 2>/dev/null"
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The test hosts the app's environment names (by alias prefix `hostN`).
    pub fn app_hosts(&self) -> Vec<&'static TestHost> {
        self.spec
            .hosts
            .iter()
            .filter_map(|alias| {
                let base = alias.rsplit('@').next().unwrap_or(alias);
                let base = base.trim_end_matches("-deploy");
                self.hosts.hosts.iter().find(|h| h.name == base)
            })
            .collect()
    }

    pub fn host(&self, i: usize) -> &'static TestHost {
        self.hosts.host(i)
    }

    /// The release `current` points to on `h`.
    pub fn current(&self, h: &TestHost) -> Option<String> {
        h.current_release(&self.deploy_to())
    }

    /// Release directories on `h`, sorted.
    pub fn releases(&self, h: &TestHost) -> Vec<String> {
        self.list(h, "releases")
    }

    /// Entries of `<deploy_to>/<rel>` on `h` (empty if it does not exist), sorted.
    pub fn list(&self, h: &TestHost, rel: &str) -> Vec<String> {
        let out = h.exec(&format!("ls -1A -- {}/{rel} 2>/dev/null", self.deploy_to()));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Checks that the deploy lock on `h` was released (no `.ship/lock`).
    pub fn assert_unlocked(&self, h: &TestHost, run: Option<&Run>) {
        self.check(
            !self.exists(h, ".ship/lock"),
            "the lock must be released",
            run,
        );
    }

    /// Does `path` (absolute, or relative to deploy_to) exist on `h` (`test -e` or a link)?
    pub fn exists(&self, h: &TestHost, path: &str) -> bool {
        let p = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.deploy_to())
        };
        h.exec(&format!("test -e '{p}' || test -L '{p}'"))
            .status
            .success()
    }

    /// A file's content on `h` (relative to deploy_to unless absolute).
    pub fn read(&self, h: &TestHost, path: &str) -> String {
        let p = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.deploy_to())
        };
        h.exec_ok(&format!("cat -- '{p}'"))
    }

    /// What GET /version answers on `h` now (trimmed body of a 200), or a description.
    pub fn version(&self, h: &TestHost) -> Result<String, String> {
        match h.http_get(self.port, "/version") {
            Some((200, body)) => Ok(body.trim().to_string()),
            Some((status, body)) => Err(format!("status {status}: {}", body.trim())),
            None => Err("no answer".into()),
        }
    }

    /// Asserts that `h` serves `/version` = `version` (polling a little: a rollback's restart
    /// may still be settling when the command returns).
    pub fn assert_version(&self, h: &TestHost, version: &str, run: Option<&Run>) {
        if let Err(last) = h.try_wait_http(
            self.port,
            "/version",
            &format!("{version}\n"),
            Duration::from_secs(10),
        ) {
            self.fail(
                &format!(
                    "{} should answer /version {version:?}; last answer: {last}",
                    h.name
                ),
                run,
            );
        }
    }

    /// The release id a deploy reported for `alias` in its JSON summary.
    pub fn deployed_release(&self, run: &Run, alias: &str) -> String {
        let row = run.row(alias);
        if row["outcome"] != "deployed" {
            self.fail(&format!("{alias} was not deployed: {row}"), Some(run));
        }
        row["release"]
            .as_str()
            .unwrap_or_else(|| self.fail(&format!("no release in {row}"), Some(run)))
            .to_string()
    }

    /// The single `.tar.zst` the project has built for version `version` (under its
    /// `target/ship/`).
    pub fn artifact_path(&self, version: &str) -> PathBuf {
        let dir = self.project.path("target/ship");
        let prefix = format!("{}-{version}-", self.name);
        let found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(&prefix) && n.ends_with(".tar.zst")
            })
            .collect();
        assert_eq!(found.len(), 1, "artifacts for {version}: {found:?}");
        found.into_iter().next().unwrap()
    }
}
