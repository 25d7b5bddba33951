//! Issue #9, part 1 on a real host: a secret reaches the service, and is nowhere else — not in
//! the unit file, `systemctl show`, any process's argv on the host during the deploy,
//! revisions.log, the artifact, any file a non-root account can read, or any output of
//! cargo-ship (-v, --dry-run, JSON). A rotated value is live after redeploying the same
//! artifact; rollback keeps the current values; a missing one refuses the deploy naming it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::app::{App, Run, Spec};
use crate::host;

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Characters a careless quoting would mangle or expand.
    format!("{tag}-{nanos}-p$w\"d 'x`y`%z")
}

/// `cargo ship <args>` with extra environment variables for the cargo-ship process.
fn run_with(app: &App, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = app.ship();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(args)
        .timeout(Duration::from_secs(240))
        .output()
        .expect("run cargo ship");
    Run::from_output(args.iter().map(|s| s.to_string()).collect(), &out)
}

fn env_value(app: &App, name: &str) -> String {
    let h = app.host(0);
    match h.http_get(app.port, &format!("/env?name={name}")) {
        Some((200, body)) => body,
        other => app.fail(&format!("GET /env?name={name} answered {other:?}"), None),
    }
}

#[test]
fn issue_9_secrets_reach_the_service_and_nothing_else() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        systemd_lines: vec!["secrets = [\"SHIP_TEST_SECRET\", \"SHIP_FILE_SECRET\"]".into()],
        env_lines: vec!["secrets_file = \"deploy/test.env\"".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-secrets", 18901, spec).in_git();
    let h = app.host(0);
    let from_env = unique("env");
    let from_file = unique("file");
    let file = app.project.path("deploy/test.env");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // Escaped for the dotenv double-quoted form: \ and ".
    let quoted = from_file.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(&file, format!("# test\nSHIP_FILE_SECRET=\"{quoted}\"\n")).unwrap();
    set_mode(&file, 0o644);

    // Missing: refused before anything connects, naming the key and where it looked; the
    // world-readable file is warned about.
    let missing = run_with(&app, &[], &["deploy", "test"]);
    app.check_eq(
        missing.code,
        2,
        "exit code without the secret",
        Some(&missing),
    );
    let expected = format!(
        "error: no value for the secret `SHIP_TEST_SECRET`: looked in the environment of this process and in {} (the `secrets_file` of environment `test`); nothing was changed on any host",
        std::fs::canonicalize(&file).unwrap().display()
    );
    app.check(
        missing.stderr.contains(&expected),
        format!("stderr should say:\n{expected}"),
        Some(&missing),
    );
    app.check(
        missing
            .stderr
            .contains("can be read by other local accounts (mode 644)"),
        "a world-readable secrets file should be warned about",
        Some(&missing),
    );
    app.check(
        !app.exists(h, ""),
        "nothing may be created on the host",
        Some(&missing),
    );
    set_mode(&file, 0o600);

    // Deploy while sampling the host's process list.
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Vec::new());
    let secrets = [from_env.as_str(), from_file.as_str()];
    let env = [("SHIP_TEST_SECRET", from_env.as_str())];
    let deploy = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = h.exec("ps -eo args");
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&out.stdout).into_owned());
            }
        });
        let r = run_with(
            &app,
            &env,
            &["deploy", "test", "-v", "--message-format", "json"],
        );
        stop.store(true, Ordering::Relaxed);
        r
    });
    app.check_eq(deploy.code, 0, "deploy exit code", Some(&deploy));
    let samples = seen.into_inner().unwrap();
    app.check(
        samples.len() >= 3,
        format!(
            "the process list should have been sampled during the deploy ({} samples)",
            samples.len()
        ),
        Some(&deploy),
    );
    for s in &samples {
        for secret in secrets {
            app.check(
                !s.contains(secret),
                format!("a secret showed in the host's process list:\n{s}"),
                Some(&deploy),
            );
        }
    }
    app.check_eq(
        env_value(&app, "SHIP_TEST_SECRET"),
        from_env.clone(),
        "the service's SHIP_TEST_SECRET",
        Some(&deploy),
    );
    app.check_eq(
        env_value(&app, "SHIP_FILE_SECRET"),
        from_file.clone(),
        "the service's SHIP_FILE_SECRET",
        Some(&deploy),
    );

    // Nowhere else.
    let unit_file = h.exec_ok(&format!("cat /etc/systemd/system/{}", app.unit()));
    let show = h.exec_ok(&format!("systemctl show -p Environment {}", app.unit()));
    let log = app.read(h, "revisions.log");
    let mode = h.exec_ok("stat -c '%a %U' /etc/cargo-ship/ship-secrets.env /etc/cargo-ship");
    app.check_eq(
        mode.trim().to_string(),
        "600 root\n700 root".to_string(),
        "secret file and dir modes",
        Some(&deploy),
    );
    app.check(
        unit_file.contains("EnvironmentFile=/etc/cargo-ship/ship-secrets.env"),
        "the unit reads the secret file",
        Some(&deploy),
    );
    let readable = h.exec_as_deploy(&format!(
        "grep -rIlF -e {} -e {} /etc /opt /var /tmp /run /home /srv 2>/dev/null; true",
        shell_quote(&from_env),
        shell_quote(&from_file)
    ));
    let artifact = std::process::Command::new("sh")
        .arg("-c")
        .arg("for f in target/ship/*.tar.zst; do zstd -dcq \"$f\"; done")
        .current_dir(&app.project.root)
        .output()
        .expect("unpack the artifacts");
    let dry = run_with(&app, &env, &["deploy", "test", "--dry-run"]);
    app.check_eq(dry.code, 0, "dry run exit code", Some(&dry));
    app.check(
        dry.all_output().contains("'[redacted]'"),
        "the dry run shows where the secret file is written, redacted",
        Some(&dry),
    );
    for secret in secrets {
        for (what, text) in [
            ("the unit file", unit_file.as_str()),
            ("systemctl show", show.as_str()),
            ("revisions.log", log.as_str()),
            ("the deploy's output (-v, JSON)", &deploy.all_output()),
            ("the dry run's output", &dry.all_output()),
            (
                "files a non-root account can read",
                &String::from_utf8_lossy(&readable.stdout),
            ),
            ("the artifact", &String::from_utf8_lossy(&artifact.stdout)),
        ] {
            app.check(
                !text.contains(secret),
                format!("a secret showed in {what}"),
                Some(&deploy),
            );
        }
    }

    // Rotated: the same artifact redeployed with a new value; the service restarts with it.
    let rotated = unique("rotated");
    let again = run_with(
        &app,
        &[("SHIP_TEST_SECRET", rotated.as_str())],
        &["deploy", "test"],
    );
    app.check_eq(again.code, 0, "redeploy exit code", Some(&again));
    app.check(
        again.stderr.contains("nothing to upload"),
        "the redeploy should reuse the same artifact",
        Some(&again),
    );
    app.check_eq(
        env_value(&app, "SHIP_TEST_SECRET"),
        rotated.clone(),
        "the rotated value",
        Some(&again),
    );

    // Rollback keeps the current values.
    let rb = app.run_expect(&["rollback", "test"], 0);
    app.check_eq(
        env_value(&app, "SHIP_TEST_SECRET"),
        rotated,
        "after rollback",
        Some(&rb),
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Issue #16, item 10: a secret with a line break reached the service as a literal `\n`; and
/// `cargo ship exec -- env` printed every secret's value.
#[test]
fn issue_16_multiline_secret_arrives_intact_and_exec_hides_values() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        systemd_lines: vec!["secrets = [\"SHIP_ML_SECRET\"]".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-secrets-ml", 18902, spec);
    let value = format!("{}\nsecond line \"q\" $x\\y", unique("ml"));
    let run = run_with(&app, &[("SHIP_ML_SECRET", &value)], &["deploy", "test"]);
    app.check_eq(run.code, 0, "exit code of the deploy", Some(&run));
    app.check_eq(
        env_value(&app, "SHIP_ML_SECRET"),
        value.clone(),
        "the value the service got",
        Some(&run),
    );
    // exec -- env, from a machine that does not know the value: learned from `NAME=`.
    let ex = run_with(&app, &[], &["exec", "test", "--", "env"]);
    app.check_eq(ex.code, 0, "exit code of exec", Some(&ex));
    let first = value.lines().next().unwrap();
    app.check(
        ex.stdout.contains("SHIP_ML_SECRET=[redacted]")
            && !ex.all_output().contains(first)
            && !ex.all_output().contains("second line"),
        "exec -- env must show the secret's name, never its value (either line)",
        Some(&ex),
    );
    // And from one that knows it: hidden wherever it shows.
    let ex = run_with(
        &app,
        &[("SHIP_ML_SECRET", &value)],
        &[
            "exec",
            "test",
            "--",
            "sh",
            "-c",
            "echo \"token: $SHIP_ML_SECRET\"",
        ],
    );
    app.check(
        ex.stdout.contains("token: [redacted]") && !ex.all_output().contains(first),
        "exec output must hide a known value",
        Some(&ex),
    );
}
