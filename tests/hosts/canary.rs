//! Issue #20 on real hosts: canary releases judged on the service's own metrics. The hello
//! fixture exports `http_requests_total{code="..."}` on a metrics port (`--metrics-port`); a
//! release built with the `flaky` feature fails 5% of its `/version` requests. Three hosts,
//! the first is the canary, the other two the baseline; constant load (a new connection per
//! request, as the zero-downtime tests send) runs against all three while the canary is
//! judged. Windows are short (10-12 s) so the suite stays fast.
//!
//! The first deploy of each app goes with `--no-canary` (nothing runs yet, so there would be
//! no baseline to compare with), as a user would do it.

// The measured figures are printed for the record (see `--nocapture`), never asserted.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::app::{App, Run, Spec};
use crate::host;
use crate::load::{Load, LoadConfig, LoadReport};
use crate::zero_downtime::ONE_LOAD_AT_A_TIME;

const EXIT_CANARY_WORSE: i32 = 12;
const EXIT_CANARY_INCONCLUSIVE: i32 = 13;
/// The dead-man's switch of these apps: the minimum for timeout 15s + settle 1s.
const CONFIRM: u64 = 21;
/// Requests per second over the three hosts (about 30 per host).
const RATE: u32 = 90;

/// Three hosts with the socket strategy (no request refused by the restarts themselves), the
/// metrics on `port + 1000`, and a canary of one host judged for `window`.
fn spec(port: u16, window: &str) -> Spec {
    let metrics = port + 1000;
    Spec {
        hosts: vec!["host0".into(), "host1".into(), "host2".into()],
        extra_args: vec!["--metrics-port".into(), metrics.to_string()],
        timeout: "15s".into(),
        settle: "1s".into(),
        systemd_lines: vec![
            "restart = \"socket\"".into(),
            format!("listen = [\"0.0.0.0:{port}\"]"),
            "notify = true".into(),
            "drain_timeout = \"5s\"".into(),
        ],
        health_lines: vec![format!("confirm_timeout = \"{CONFIRM}s\"")],
        ship_lines: vec![canary_table(metrics, window)],
        ..Spec::default()
    }
}

fn canary_table(metrics_port: u16, window: &str) -> String {
    format!(
        "canary = {{ hosts = 1, window = \"{window}\", metrics = \"http://127.0.0.1:{metrics_port}/metrics\", \
         requests = \"http_requests_total\", errors = 'http_requests_total{{code=~\"5..\"}}', \
         max_error_ratio = 0.01, min_requests = 100 }}"
    )
}

fn targets(app: &App) -> Vec<SocketAddr> {
    app.app_hosts()
        .iter()
        .map(|h| SocketAddr::from((h.ip, app.port)))
        .collect()
}

/// Builds `version` (with `extra` build flags) first, then deploys it while the load runs.
fn deploy_under_load(app: &mut App, version: &str, extra: &[&str], code: i32) -> (Run, LoadReport) {
    app.update(|s| s.version = version.into());
    let mut build = vec!["build"];
    build.extend_from_slice(extra);
    app.run_expect(&build, 0);
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start(LoadConfig {
        targets: targets(app),
        path: "/version".into(),
        rate_per_sec: RATE,
        timeout: Duration::from_secs(10),
    });
    std::thread::sleep(Duration::from_secs(1));
    let run = app.deploy(extra, code);
    let report = load.stop();
    eprintln!(
        "[{}] deploy of {version} under load: {}",
        app.name,
        report.summary()
    );
    (run, report)
}

/// The data of the deploy's `output` event of kind `canary`.
fn verdict(app: &App, run: &Run) -> serde_json::Value {
    run.events()
        .into_iter()
        .find(|e| e["event"] == "output" && e["kind"] == "canary")
        .map(|e| e["data"].clone())
        .unwrap_or_else(|| app.fail("no canary event", Some(run)))
}

/// Starts `cargo ship deploy test` and returns once the canary host is switched and healthy,
/// two seconds into the window, with the deploy still running; its stderr lines keep coming
/// on the receiver.
fn deploy_until_judging(app: &App) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-ship"))
        .args(["ship", "deploy", "test"])
        .current_dir(&app.project.root)
        .env("CARGO_TERM_COLOR", "never")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cargo-ship");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let healthy = l.contains("Healthy host0");
                seen.push(l);
                if healthy {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                app.fail(
                    &format!("the canary never became healthy:\n{}", seen.join("\n")),
                    None,
                );
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    (child, rx)
}

/// `current` on every host of the app.
fn currents(app: &App) -> Vec<Option<String>> {
    app.app_hosts().iter().map(|h| app.current(h)).collect()
}

/// A first deploy of 0.1.0, then a flaky 0.2.0 (5% of /version fail) judged worse: the canary
/// is put back, the others never switch, exit 12. Then a good 0.3.0 is promoted and every host
/// ends on it.
#[test]
fn issue_20_bad_canary_reverted_good_canary_promoted_under_load() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18621;
    // A long window for the bad release: it must fail early, long before the window ends.
    let mut app = App::new(hosts, "ship-canary-judge", port, spec(port, "90s"));
    let first = app.deploy(&["--no-canary"], 0);
    app.check(
        first.all_output().contains("skipped (--no-canary)"),
        "--no-canary should say the phase was skipped",
        Some(&first),
    );
    let before = currents(&app);

    let (bad, report) = deploy_under_load(
        &mut app,
        "0.2.0",
        &["--features", "flaky"],
        EXIT_CANARY_WORSE,
    );
    let v = verdict(&app, &bad);
    eprintln!("[{}] bad canary: {v}", app.name);
    app.check_eq(v["verdict"].as_str(), Some("worse"), "verdict", Some(&bad));
    app.check_eq(
        v["early"].as_bool(),
        Some(true),
        "judged before the window ended",
        Some(&bad),
    );
    let (requests, errors) = (
        v["canary"]["requests"].as_u64().unwrap_or(0),
        v["canary"]["errors"].as_u64().unwrap_or(0),
    );
    app.check(
        requests >= 100 && errors > 0 && v["baseline"]["requests"].as_u64().unwrap_or(0) > 0,
        format!("the verdict should carry the canary's and the baseline's numbers: {v}"),
        Some(&bad),
    );
    app.check_eq(
        v["baseline"]["errors"].as_u64(),
        Some(0),
        "baseline errors",
        Some(&bad),
    );
    app.check(
        report.failures_by_kind().contains_key("status 500"),
        format!(
            "the load should have met the flaky release's 500s: {}",
            report.summary()
        ),
        Some(&bad),
    );
    app.check_eq(
        bad.row("host0")["outcome"].as_str(),
        Some("reverted"),
        "host0 outcome",
        Some(&bad),
    );
    for alias in ["host1", "host2"] {
        app.check_eq(
            bad.row(alias)["outcome"].as_str(),
            Some("skipped"),
            alias,
            Some(&bad),
        );
    }
    app.check(
        bad.all_output()
            .contains("canary worse on host0: the canary's error ratio"),
        "the error names the verdict, the host and the ratio",
        Some(&bad),
    );
    // Every host is back on (or never left) the first release, unlocked, nothing pending.
    app.check_eq(
        currents(&app),
        before.clone(),
        "current after the bad canary",
        Some(&bad),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&bad));
        app.check(
            !app.exists(h, ".ship/lock") && !app.exists(h, ".ship/pending"),
            format!("{}: lock and pending switch must be cleared", h.name),
            Some(&bad),
        );
    }
    // The worse canary's artifact is a ghost on the canary host (as an unhealthy release's),
    // and nowhere else.
    let hosts = app.app_hosts();
    app.check(
        app.list(hosts[0], ".ship/ghosts").len() == 1,
        "host0: the worse canary's artifact should be marked a ghost",
        Some(&bad),
    );
    for h in &hosts[1..] {
        app.check(
            app.list(h, ".ship/ghosts").is_empty(),
            format!("{}: never switched, so no ghost", h.name),
            Some(&bad),
        );
    }
    // The baseline never switched: no revisions.log line of the canary release there.
    for h in &app.app_hosts()[1..] {
        let log = app.read(h, "revisions.log");
        app.check(
            !log.contains("0.2.0"),
            format!(
                "{} never switched to 0.2.0, yet revisions.log says:\n{log}",
                h.name
            ),
            Some(&bad),
        );
    }

    app.update(|s| s.ship_lines = vec![canary_table(port + 1000, "12s")]);
    let (good, report) = deploy_under_load(&mut app, "0.3.0", &[], 0);
    let v = verdict(&app, &good);
    eprintln!("[{}] good canary: {v}", app.name);
    app.check_eq(
        v["verdict"].as_str(),
        Some("promote"),
        "verdict",
        Some(&good),
    );
    app.check_eq(
        v["canary"]["errors"].as_u64(),
        Some(0),
        "canary errors",
        Some(&good),
    );
    app.check(
        report.failed() == 0,
        format!(
            "no request may fail while a good canary is promoted: {}",
            report.summary()
        ),
        Some(&good),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.3.0", Some(&good));
    }
    let release = app.deployed_release(&good, "host0");
    for alias in ["host1", "host2"] {
        app.check_eq(
            app.deployed_release(&good, alias),
            release.clone(),
            alias,
            Some(&good),
        );
    }
}

/// Without traffic the canary cannot be judged: inconclusive, reverted, exit 13 (and promoted
/// with `--promote-inconclusive`); with its metrics endpoint down, the same under load; and a
/// deployer killed (SIGKILL to the process alone) during the window leaves the canary host to
/// its dead-man's switch, which puts the previous release back by itself.
#[test]
fn issue_20_inconclusive_canaries_revert_and_a_dead_deployer_leaves_no_canary() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18622;
    let mut app = App::new(hosts, "ship-canary-inconc", port, spec(port, "8s"));
    app.deploy(&["--no-canary"], 0);
    let before = currents(&app);

    // No traffic; the human output, as a terminal shows it.
    app.update(|s| s.version = "0.2.0".into());
    let idle = app.run_expect(&["deploy", "test"], EXIT_CANARY_INCONCLUSIVE);
    eprintln!("[{}] no traffic:\n{}", app.name, idle.stderr);
    for expected in [
        "Canary host0 first, judged for 8s on its metrics against the 2 host(s) still on the old release",
        "Canary inconclusive: the canary served 0 requests, fewer than min_requests = 100",
        "canary   (host0): 0 request(s), 0 error(s) (0.00%)",
        "baseline (host1, host2): 0 request(s), 0 error(s) (0.00%)",
        "error: canary inconclusive on host0: the canary served 0 requests, fewer than min_requests = 100; the canary host(s) were put back on the previous release and 2 other host(s) were not switched",
    ] {
        app.check(
            idle.stderr.contains(expected),
            format!("the output should say {expected:?}"),
            Some(&idle),
        );
    }
    app.check_eq(
        currents(&app),
        before.clone(),
        "current after no traffic",
        Some(&idle),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&idle));
    }

    // --promote-inconclusive promotes it anyway.
    let forced = app.deploy(&["--promote-inconclusive"], 0);
    app.check(
        forced
            .all_output()
            .contains("promoted anyway (--promote-inconclusive)"),
        "the promotion of an inconclusive canary is said",
        Some(&forced),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.2.0", Some(&forced));
    }
    let before = currents(&app);

    // The metrics endpoint is down (the config points at a port nobody serves), under load.
    app.update(|s| s.ship_lines = vec![canary_table(port + 2000, "8s")]);
    let (down, _) = deploy_under_load(&mut app, "0.3.0", &[], EXIT_CANARY_INCONCLUSIVE);
    let v = verdict(&app, &down);
    app.check(
        v["verdict"] == "inconclusive"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("metrics on host0 could not be read")),
        format!("an unreadable canary is inconclusive: {v}"),
        Some(&down),
    );
    app.check_eq(
        currents(&app),
        before.clone(),
        "current after metrics down",
        Some(&down),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.2.0", Some(&down));
    }

    // The deployer is stopped in the window as CI stops a job: SIGTERM to the process alone.
    // It puts the canary back itself and says so (exit 130).
    app.update(|s| {
        s.version = "0.4.0".into();
        s.ship_lines = vec![canary_table(port + 1000, "120s")];
    });
    app.run_expect(&["build"], 0);
    let (mut child, lines) = deploy_until_judging(&app);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = child.wait().expect("wait");
    let rest: Vec<String> = lines.try_iter().collect();
    app.check(
        status.code() == Some(130),
        format!(
            "SIGTERM should interrupt the deploy (exit 130), got {status:?}:\n{}",
            rest.join("\n")
        ),
        None,
    );
    app.check_eq(
        currents(&app),
        before.clone(),
        "current after SIGTERM in the window",
        None,
    );
    for h in app.app_hosts() {
        app.check(
            !app.exists(h, ".ship/lock") && !app.exists(h, ".ship/pending"),
            format!(
                "{}: lock and pending switch must be cleared after SIGTERM",
                h.name
            ),
            None,
        );
    }

    // The deployer dies in the window: SIGKILL to the cargo-ship process alone (its ssh
    // control masters live on, as after a crash).
    let (mut child, lines) = deploy_until_judging(&app);
    let killed = Instant::now();
    child.kill().expect("kill cargo-ship");
    let _ = child.wait();
    let lines: Vec<String> = lines.try_iter().collect();
    let h0 = app.host(0);
    let switched = app.current(h0);
    app.check(
        switched != before[0],
        format!(
            "host0 should have been on the canary release when the deployer died:\n{}",
            lines.join("\n")
        ),
        None,
    );
    let deadline = killed + Duration::from_secs(CONFIRM + 20);
    while app.current(h0) != before[0] || app.exists(h0, ".ship/pending") {
        if Instant::now() > deadline {
            app.fail(
                &format!(
                    "host0 should have reverted by itself within {}s of the deployer's death:\n{}",
                    CONFIRM + 20,
                    lines.join("\n")
                ),
                None,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "[{}] host0 reverted by itself {:.1}s after the deployer was killed",
        app.name,
        killed.elapsed().as_secs_f64()
    );
    app.assert_version(h0, "0.2.0", None);
    app.check_eq(
        currents(&app),
        before,
        "no host left on the canary release",
        None,
    );
    // The dead deploy's lock on the hosts that never switched is released by hand, as after
    // any deploy that died.
    app.run_expect(&["unlock", "test"], 0);
}

/// A one-host environment: the only host is the canary, judged against `max_error_ratio`
/// alone (no baseline), then confirmed, recorded and unlocked as any deploy.
#[test]
fn issue_20_a_single_host_canary_is_judged_alone_then_finished() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18623;
    let mut s = spec(port, "6s");
    s.hosts = vec!["host1".into()];
    let mut app = App::new(hosts, "ship-canary-alone", port, s);
    app.deploy(&["--no-canary"], 0);
    let (run, _) = deploy_under_load(&mut app, "0.2.0", &[], 0);
    let v = verdict(&app, &run);
    app.check(
        v["verdict"] == "promote"
            && v["baseline"].is_null()
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.ends_with("(no baseline: every host is a canary)")),
        format!("a lone canary is judged against max_error_ratio alone: {v}"),
        Some(&run),
    );
    let h = app.host(1);
    app.assert_version(h, "0.2.0", Some(&run));
    app.check(
        !app.exists(h, ".ship/lock") && !app.exists(h, ".ship/pending"),
        "the deploy confirmed and unlocked the host",
        Some(&run),
    );
    app.check(
        app.read(h, "revisions.log").contains("version=0.2.0"),
        "revisions.log records the deploy",
        Some(&run),
    );
}
