//! Issue #11: the 3 a.m. toolkit on real hosts: a held lock with a reason, status's verdict
//! (drift after a rollback of one host), exec on three hosts with one failing, logs -f from
//! every host through a unit restart and a dropped connection, rollback's plan prompt.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::{App, Run, Spec, EXIT_LOCKED, EXIT_REMOTE};
use crate::host;

const EXIT_NOT_HEALTHY: i32 = 10;

fn hosts_list(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("host{i}")).collect()
}

/// `cargo ship lock -m` holds the lock on every host; a deploy is refused (exit 7) naming the
/// holder and the reason; a second lock is refused too; status shows the lock with its reason
/// and age (a note: the release is still healthy, exit 0); `unlock` releases it and the next
/// deploy goes through.
#[test]
fn issue_11_held_lock_refuses_deploys_with_the_reason_until_unlock() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: hosts_list(3),
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-lock11", 18111, spec).in_git();
    app.deploy(&[], 0);
    let reason = "incident 42: do not deploy";
    let lock = app.run_expect(
        &["lock", "test", "-m", reason, "--message-format", "json"],
        0,
    );
    for (i, alias) in ["host0", "host1", "host2"].iter().enumerate() {
        let holder = app.read(app.host(i), ".ship/lock/holder");
        app.check(
            holder.contains(": cargo ship lock test: incident 42: do not deploy"),
            format!("the lock on {alias} should carry the reason, it says {holder:?}"),
            Some(&lock),
        );
        app.check_eq(
            lock.row(alias)["outcome"].as_str(),
            Some("locked"),
            &format!("lock outcome on {alias}"),
            Some(&lock),
        );
    }

    app.update(|s| s.version = "0.2.0".into());
    let refused = app.run_expect(&["deploy", "test"], EXIT_LOCKED);
    app.check(
        refused.stderr.contains("error: host0: deploy locked by ")
            && refused
                .stderr
                .contains(": cargo ship lock test: incident 42: do not deploy")
            && refused.stderr.contains(
                "help: the environment was locked on purpose, for the reason above; once that is over, `cargo ship unlock <env>` releases it",
            ),
        "the refused deploy must name the holder, the reason and what to do",
        Some(&refused),
    );
    // One winner: the first host by name refused, so nothing was touched on the others.
    for i in 0..3 {
        app.assert_version(app.host(i), "0.1.0", Some(&refused));
    }
    let again = app.run_expect(&["lock", "test", "-m", "another"], EXIT_LOCKED);
    app.check(
        again.stderr.contains("incident 42: do not deploy")
            && !app
                .read(app.host(2), ".ship/lock/holder")
                .contains("another"),
        "a second lock is refused and changes no holder",
        Some(&again),
    );

    let st = app.run_expect(&["status", "test"], 0);
    app.check(
        st.stdout.contains("note: host1: locked by ")
            && st
                .stdout
                .contains("cargo ship lock test: incident 42: do not deploy (held for ")
            && st.stdout.contains("verdict: ok, 3 host(s) run release "),
        "status shows the lock with its reason and age, and a healthy verdict",
        Some(&st),
    );

    let unlock = app.run_expect(&["unlock", "test"], 0);
    for i in 0..3 {
        app.check(
            !app.exists(app.host(i), ".ship/lock"),
            format!("unlock must remove the lock on host{i}"),
            Some(&unlock),
        );
    }
    let ok = app.deploy(&[], 0);
    for i in 0..3 {
        app.assert_version(app.host(i), "0.2.0", Some(&ok));
    }
}

/// Two hosts on one release: status exits 0 with an ok verdict. After rolling back only
/// host1, status reports the drift (which host runs what) and exits 10; `releases` says who
/// deployed each release, when, and where it is.
#[test]
fn issue_11_drift_after_a_rollback_of_one_host_makes_status_exit_non_zero() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: hosts_list(2),
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-drift11", 18112, spec).in_git();
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    app.update(|s| s.version = "0.2.0".into());
    let second = app.deploy(&[], 0);
    let r2 = app.deployed_release(&second, "host0");

    let ok = app.run_expect(&["status", "test"], 0);
    app.check(
        ok.stdout.contains(&format!(
            "verdict: ok, 2 host(s) run release {r2} (v0.2.0), active"
        )),
        "one release everywhere: an ok verdict",
        Some(&ok),
    );

    let rb = app.run_expect(&["rollback", "test", "--host", "host1", "--yes"], 0);
    app.assert_version(app.host(1), "0.1.0", Some(&rb));
    let drift = app.run_expect(&["status", "test"], EXIT_NOT_HEALTHY);
    let expected = format!("drift: host1 on release {r1} (v0.1.0); host0 on release {r2} (v0.2.0)");
    app.check(
        drift.stdout.contains(&format!("problem: {expected}"))
            && drift.stdout.contains("verdict: NOT OK, 1 problem(s)")
            && drift.stderr.contains(&format!(
                "error: environment `test` is not healthy: {expected}"
            )),
        "status must name the drift and exit 10",
        Some(&drift),
    );
    let json = app.run_expect(
        &["status", "test", "--message-format", "json"],
        EXIT_NOT_HEALTHY,
    );
    let verdict = json
        .events()
        .into_iter()
        .find(|e| e["event"] == "output" && e["kind"] == "verdict")
        .unwrap_or_else(|| app.fail("no verdict event", Some(&json)));
    app.check_eq(
        (
            verdict["data"]["ok"].as_bool(),
            verdict["data"]["exit_code"].as_i64(),
        ),
        (Some(false), Some(10)),
        "JSON verdict",
        Some(&json),
    );

    let rel = app.run_expect(&["releases", "test", "--message-format", "json"], 0);
    let out = rel
        .events()
        .into_iter()
        .find(|e| e["event"] == "output" && e["kind"] == "releases")
        .unwrap_or_else(|| app.fail("no releases event", Some(&rel)));
    let rows = out["data"]["releases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let who = format!(
        "{}@",
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    );
    app.check(
        rows.len() == 2
            && rows[0]["id"] == r1.as_str()
            && rows[0]["current_on"] == serde_json::json!(["host1"])
            && rows[0]["on"] == serde_json::json!(["host0"])
            && rows[1]["id"] == r2.as_str()
            && rows[1]["current_on"] == serde_json::json!(["host0"])
            && rows[1]["on"] == serde_json::json!(["host1"])
            && rows[1]["target"] == "x86_64-unknown-linux-gnu"
            && rows[1]["deployed_by"]
                .as_str()
                .is_some_and(|b| b.starts_with(&who))
            && rows[1]["deployed_at"]
                .as_str()
                .is_some_and(|t| t.len() == 20 && t.ends_with('Z')),
        format!("releases must say who, when and where: {rows:?}"),
        Some(&rel),
    );
}

/// exec on three hosts, failing on host1: every host's output arrives prefixed, the command
/// runs in the current release with the service's environment, the summary has each exit
/// code, and the whole command exits 9 naming host1.
#[test]
fn issue_11_exec_on_three_hosts_with_one_failing() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-exec11";
    let marker = format!("/tmp/exec-fail-{name}");
    let spec = Spec {
        hosts: hosts_list(3),
        environment: vec![("GREETING".into(), "it's me".into())],
        ..Spec::default()
    };
    let app = App::new(hosts, name, 18113, spec).in_git();
    let run = app.deploy(&[], 0);
    let release = app.deployed_release(&run, "host0");
    app.host(1).exec_ok(&format!("touch {marker}"));
    let script = format!(
        "echo \"$GREETING in $(pwd -P) as $(id -un)\"; test ! -e {marker} || {{ echo failing here >&2; exit 3; }}"
    );
    let ex = app.run(&[
        "exec",
        "test",
        "--message-format",
        "json",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    app.host(1).exec_ok(&format!("rm -f {marker}"));
    app.check_eq(ex.code, EXIT_REMOTE, "exec exit code", Some(&ex));
    let lines: Vec<(String, String, String)> = ex
        .events()
        .into_iter()
        .filter(|e| e["event"] == "output" && e["kind"] == "exec")
        .map(|e| {
            (
                e["data"]["host"].as_str().unwrap_or("").to_string(),
                e["data"]["stream"].as_str().unwrap_or("").to_string(),
                e["data"]["line"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for alias in ["host0", "host1", "host2"] {
        let want = (
            alias.to_string(),
            "stdout".to_string(),
            format!("it's me in /opt/{name}/releases/{release} as root"),
        );
        app.check(
            lines.contains(&want),
            format!("{alias}'s line {want:?} is missing from {lines:?}"),
            Some(&ex),
        );
    }
    app.check(
        lines.contains(&("host1".into(), "stderr".into(), "failing here".into())),
        "host1's stderr arrives prefixed",
        Some(&ex),
    );
    app.check_eq(
        ["host0", "host1", "host2"]
            .iter()
            .map(|a| ex.row(a)["outcome"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>(),
        vec!["exit 0".to_string(), "exit 3".into(), "exit 0".into()],
        "exit codes in the summary",
        Some(&ex),
    );
    app.check(
        ex.stdout
            .contains("\"message\":\"the command failed on 1 of 3 host(s): host1 (exit 3)\""),
        "the error names the failed host and its exit code",
        Some(&ex),
    );
    // Human output: every line prefixed with its host.
    let human = app.run_expect(
        &[
            "exec", "test", "--host", "host2", "--", "printenv", "GREETING",
        ],
        0,
    );
    app.check(
        human.stdout.trim_end() == "host2: it's me",
        "human exec output is prefixed with the host",
        Some(&human),
    );

    // `ssh --host host1`: a shell on a terminal, in the current release; its exit code is ours.
    let bin = assert_cmd::cargo::cargo_bin!("cargo-ship");
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{} ship ssh test --host host1", bin.display()),
            "/dev/null",
        ])
        .current_dir(app.project.path("."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1)");
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo \"in $(pwd -P) tty=$(tty)\"; exit 3\n");
    let out = child.wait_with_output().unwrap();
    let shell = Run::from_output(vec!["ssh test --host host1".into()], &out);
    app.check(
        shell.code == 3
            && shell
                .stdout
                .contains(&format!("in /opt/{name}/releases/{release} tty=/dev/pts/")),
        "ssh opens a shell with a terminal in the current release and passes its exit code",
        Some(&shell),
    );
    let many = app.run_expect(&["ssh", "test"], 2);
    app.check(
        many.stderr
            .contains("error: the following required arguments were not provided"),
        "ssh needs --host",
        Some(&many),
    );
}

/// A `cargo ship` process whose stdout lines are collected while it runs.
struct Live {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Live {
    fn spawn(app: &App, args: &[&str], tmpdir: &str) -> Live {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("cargo-ship"))
            .arg("ship")
            .args(args)
            .current_dir(app.project.path("."))
            .env("CARGO_TERM_COLOR", "never")
            .env("TMPDIR", tmpdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cargo-ship");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        for (r, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                lines.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), err.clone()),
        ] {
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(|l| l.ok()) {
                    sink.lock().unwrap().push(l);
                }
            });
        }
        Live { child, lines, err }
    }

    fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|e| f(&e));
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.lines.lock().unwrap().join("\n"),
                self.err.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn is_log(e: &serde_json::Value, host: &str, needle: &str) -> bool {
    e["event"] == "output"
        && e["kind"] == "log"
        && e["data"]["host"] == host
        && e["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle))
        && e["data"]["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
}

/// `logs -f` on two hosts: a unit restarted on host1 shows its lines prefixed with host1;
/// the connection to host0 is cut from the host's side, which is reported, reconnected, and
/// host0's later lines still arrive; Ctrl-C ends it with exit 0 and no ssh process left.
#[test]
fn issue_11_logs_follow_every_host_through_a_restart_and_a_drop() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-logs11";
    let spec = Spec {
        hosts: hosts_list(2),
        ..Spec::default()
    };
    let app = App::new(hosts, name, 18114, spec).in_git();
    app.deploy(&[], 0);
    let tmp = tempfile::Builder::new()
        .prefix("l11")
        .tempdir_in("/tmp")
        .unwrap();
    let tmpdir = tmp.path().to_str().unwrap().to_string();
    let live = Live::spawn(
        &app,
        &["logs", "test", "-f", "-n", "0", "--message-format", "json"],
        &tmpdir,
    );
    live.wait_for("the follow to start", Duration::from_secs(30), |e| {
        e["event"] == "status" && e["verb"] == "Following"
    });
    // Both journals are open once a line from a fresh restart arrives; restart until it does.
    let unit = app.unit();
    app.host(1)
        .exec_ok(&format!("sleep 2; systemctl restart {unit}"));
    live.wait_for(
        "host1's lines after its restart",
        Duration::from_secs(30),
        |e| is_log(e, "host1", "hello 0.1.0 listening on port 18114"),
    );
    live.wait_for(
        "systemd's lines about host1's unit",
        Duration::from_secs(5),
        |e| is_log(e, "host1", &format!("Stopped {unit} - ")),
    );

    // Cut host0's connection from the host: kill the sshd process serving our journalctl.
    // (Its parent is the sshd process of our connection, never the listener.)
    app.host(0).exec_ok(&format!(
        "p=$(pgrep -f 'journalctl -u {unit} -o json' | head -n 1); sp=$(ps -o ppid= -p $p); case $(ps -o args= -p $sp) in *notty*) kill -9 $sp ;; *) exit 1 ;; esac"
    ));
    live.wait_for("the drop to be reported", Duration::from_secs(30), |e| {
        e["event"] == "status" && e["verb"] == "Lost" && e["host"] == "host0"
    });
    live.wait_for("host0 to reconnect", Duration::from_secs(60), |e| {
        e["event"] == "status" && e["verb"] == "Reconnected" && e["host"] == "host0"
    });
    app.host(0).exec_ok(&format!("systemctl restart {unit}"));
    live.wait_for(
        "host0's lines after the reconnect",
        Duration::from_secs(30),
        |e| is_log(e, "host0", "hello 0.1.0 listening on port 18114"),
    );

    // Ctrl-C: exit 0, nothing of ours left running.
    let mut child = live.child;
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "logs -f did not end on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    let dump = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        live.lines.lock().unwrap().join("\n"),
        live.err.lock().unwrap().join("\n")
    );
    assert_eq!(
        status.code(),
        Some(0),
        "Ctrl-C must end logs -f with 0\n{dump}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let left = Command::new("pgrep")
        .args(["-af", &tmpdir])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "ssh processes left behind:\n{}\n{dump}",
        String::from_utf8_lossy(&left.stdout)
    );
    // Nothing of ours is left on the hosts either: journalctl ends with its channel.
    for i in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = app
                .host(i)
                .exec(&format!("pgrep -af 'journalctl -u {unit} -o json'"));
            let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "journalctl still runs on host{i} after Ctrl-C: {left}\n{dump}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Every log line carried its host and a timestamp; no line was shown twice.
    let logs: Vec<serde_json::Value> = live
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "log")
        .collect();
    let mut keys: Vec<String> = logs
        .iter()
        .map(|e| {
            format!(
                "{}{}{}",
                e["data"]["host"], e["data"]["timestamp"], e["data"]["message"]
            )
        })
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a line was shown twice\n{dump}");

    // Without -f, human output: each line prefixed by its host, one colour per host with
    // --color always, none without.
    let plain = app.run_expect(&["logs", "test", "-n", "2"], 0);
    app.check(
        !plain.stdout.contains('\u{1b}')
            && plain
                .stdout
                .lines()
                .filter(|l| l.starts_with("host0: "))
                .count()
                == 2
            && plain
                .stdout
                .lines()
                .filter(|l| l.starts_with("host1: "))
                .count()
                == 2,
        "two lines per host, prefixed, no colour",
        Some(&plain),
    );
    let coloured = app.run_expect(&["logs", "test", "-n", "1", "--color", "always"], 0);
    let prefix = |l: &str| l.split(':').next().unwrap_or("").to_string();
    let prefixes: Vec<String> = coloured.stdout.lines().map(prefix).collect();
    let style_of = |h: &str| {
        prefixes
            .iter()
            .find(|p| p.contains(h))
            .map(|p| p.replace(h, ""))
    };
    app.check(
        prefixes.len() == 2
            && style_of("host0").is_some_and(|s| s.contains("\u{1b}["))
            && style_of("host1").is_some()
            && style_of("host0") != style_of("host1"),
        format!("each host in its own colour: {prefixes:?}"),
        Some(&coloured),
    );
}

/// rollback on a terminal shows the plan and asks: "n" changes nothing (exit 1), "y" rolls
/// back; `--yes` and a run without a terminal act without asking.
#[test]
fn issue_11_rollback_shows_the_plan_and_asks_on_a_terminal() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: hosts_list(2),
        ..Spec::default()
    };
    let mut app = App::new(hosts, "ship-plan11", 18115, spec).in_git();
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    app.update(|s| s.version = "0.2.0".into());
    let second = app.deploy(&[], 0);
    let r2 = app.deployed_release(&second, "host0");

    let pty = |args: &str, answer: &str| -> Run {
        let bin = assert_cmd::cargo::cargo_bin!("cargo-ship");
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{} ship {args}", bin.display()),
                "/dev/null",
            ])
            .current_dir(app.project.path("."))
            .env("CARGO_TERM_COLOR", "never")
            // A person at a terminal, not a CI job (where rollback never asks).
            .env_remove("CI")
            .env_remove("GITHUB_ACTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script(1)");
        // Answer once the question is up (script forwards our stdin to the terminal).
        std::thread::sleep(Duration::from_secs(4));
        // (A run that never asks may have exited already: the assertions below say so.)
        let _ = child.stdin.take().unwrap().write_all(answer.as_bytes());
        let out = child.wait_with_output().unwrap();
        Run::from_output(vec![args.to_string()], &out)
    };

    let no = pty("rollback test", "n\n");
    let plan = format!("host0: {r2} -> {r1}");
    app.check(
        no.stdout.contains("Rollback plan:")
            && no.stdout.contains(&plan)
            && no.stdout.contains(&format!("host1: {r2} -> {r1}"))
            && no.stdout.contains("Roll back these hosts? [y/N]")
            && no
                .stdout
                .contains("error: rollback of test cancelled: nothing was changed"),
        "the plan, the question, and a cancel",
        Some(&no),
    );
    app.check_eq(no.code, 1, "exit code after answering no", Some(&no));
    for i in 0..2 {
        app.check_eq(
            app.current(app.host(i)),
            Some(r2.clone()),
            "unchanged",
            Some(&no),
        );
    }

    let yes = pty("rollback test", "y\n");
    app.check(
        yes.code == 0 && yes.stdout.contains(&plan),
        "answering y rolls back",
        Some(&yes),
    );
    for i in 0..2 {
        app.check_eq(
            app.current(app.host(i)),
            Some(r1.clone()),
            "rolled back",
            Some(&yes),
        );
    }

    // --yes on a terminal: no plan, no question.
    let forced = pty(&format!("rollback test --to {r2} --yes"), "");
    app.check(
        forced.code == 0 && !forced.stdout.contains("Rollback plan:"),
        "--yes does not ask",
        Some(&forced),
    );
    // Without a terminal (CI): acts at once.
    let ci = app.run_expect(&["rollback", "test", "--to", &r1], 0);
    app.check(
        !ci.all_output().contains("Rollback plan:"),
        "without a terminal there is no question",
        Some(&ci),
    );
    for i in 0..2 {
        app.check_eq(
            app.current(app.host(i)),
            Some(r1.clone()),
            "rolled back without asking",
            Some(&ci),
        );
    }
}

/// `per_host."host1".systemd.environment` reaches host1's service only; `hooks.once_on =
/// "host1"` runs before_switch_once there and nowhere else.
#[test]
fn issue_11_a_per_host_override_reaches_only_its_host() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let name = "ship-ovr11";
    let marker = format!("/tmp/once-{name}");
    let spec = Spec {
        hosts: hosts_list(2),
        environment: vec![("GREETING".into(), "base".into())],
        before_switch_once: vec![format!("touch {marker}")],
        env_lines: vec![
            "[package.metadata.ship.environments.test.hooks]".into(),
            "once_on = \"host1\"".into(),
            "[package.metadata.ship.environments.test.per_host.\"host1\".systemd]".into(),
            "environment = { GREETING = \"only host1\" }".into(),
        ],
        ..Spec::default()
    };
    let app = App::new(hosts, name, 18116, spec).in_git();
    for i in 0..2 {
        app.host(i).exec_ok(&format!("rm -f {marker}"));
    }
    let run = app.deploy(&[], 0);
    app.check(
        !app.exists(app.host(0), &marker) && app.exists(app.host(1), &marker),
        "before_switch_once must run on host1 only",
        Some(&run),
    );
    let ex = app.run_expect(&["exec", "test", "--", "printenv", "GREETING"], 0);
    let mut lines: Vec<&str> = ex.stdout.lines().collect();
    lines.sort();
    app.check_eq(
        lines,
        vec!["host0: base", "host1: only host1"],
        "each service's environment",
        Some(&ex),
    );

    // A deploy that leaves the once_on host out runs the hook on its first host, saying so.
    app.host(1).exec_ok(&format!("rm -f {marker}"));
    let only0 = app.run_expect(&["deploy", "test", "--host", "host0"], 0);
    app.check(
        only0.stderr.contains(
            "warning: hooks.once_on names host1, which this deploy does not include; running before_switch_once on host0",
        ) && app.exists(app.host(0), &marker)
            && !app.exists(app.host(1), &marker),
        "once_on outside the deploy falls back to its first host, with a warning",
        Some(&only0),
    );
}

/// With `systemd.user`, exec runs as that user (the service's), with the service's environment.
#[test]
fn issue_11_exec_runs_as_the_service_user() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: hosts_list(1),
        environment: vec![("GREETING".into(), "as nobody".into())],
        systemd_lines: vec!["user = \"nobody\"".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-user11", 18117, spec).in_git();
    app.deploy(&[], 0);
    let ex = app.run_expect(
        &[
            "exec",
            "test",
            "--",
            "sh",
            "-c",
            "echo \"$(id -un) $GREETING\"",
        ],
        0,
    );
    app.check_eq(
        ex.stdout.trim_end(),
        "host0: nobody as nobody",
        "exec as the service's user",
        Some(&ex),
    );
}
