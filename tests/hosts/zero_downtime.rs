//! Issue #7, part 1: zero-downtime restarts measured on the real hosts. Under constant load
//! from this machine (a new TCP connection per request, 240 requests/s spread over the three
//! hosts), a deploy of a new version with `restart = "socket"` and with `"blue-green"` fails
//! no request and both versions answer; the same run with `restart = "restart"` (the control)
//! shows failures, so the measurement is known to catch them. Timings are printed, never
//! asserted.
//!
//! The load runs from this machine against the hosts' addresses (each host in its own network
//! namespace), so the requests cross the same veth/bridge a real client's would.

// The measured figures are printed for the record (see `--nocapture`), never asserted.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::app::{App, Run, Spec, EXIT_ROLLED_BACK};
use crate::host;
use crate::load::{Load, LoadConfig, LoadReport};

/// The load tests run one at a time: two loads at once on two cores would measure each other.
pub(crate) static ONE_LOAD_AT_A_TIME: Mutex<()> = Mutex::new(());

const RATE: u32 = 240;

fn spec(strategy: &str, port: u16) -> Spec {
    let mut systemd_lines = vec![format!("restart = \"{strategy}\"")];
    if strategy != "restart" {
        systemd_lines.push(format!("listen = [\"0.0.0.0:{port}\"]"));
        systemd_lines.push("notify = true".into());
    }
    systemd_lines.push("drain_timeout = \"10s\"".into());
    Spec {
        hosts: vec!["host0".into(), "host1".into(), "host2".into()],
        // A service that takes half a second to start: the gap a plain restart leaves.
        extra_args: vec!["--start-delay-ms".into(), "500".into()],
        timeout: "15s".into(),
        settle: "1s".into(),
        systemd_lines,
        ..Spec::default()
    }
}

fn targets(app: &App, port: u16) -> Vec<SocketAddr> {
    app.app_hosts()
        .iter()
        .map(|h| SocketAddr::from((h.ip, port)))
        .collect()
}

/// Deploys 0.1.0 with `strategy`, then deploys `features`/0.2.0 while the load runs (from
/// two seconds before the deploy to two seconds after it). Returns the deploy and the load.
fn deploy_under_load(
    app: &mut App,
    port: u16,
    version: &str,
    extra: &[&str],
    code: i32,
) -> (Run, LoadReport) {
    app.update(|s| s.version = version.into());
    // Build first, so the load window holds the deploy and not the compile.
    let mut build = vec!["build"];
    build.extend_from_slice(extra);
    app.run_expect(&build, 0);
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start(LoadConfig {
        targets: targets(app, port),
        path: "/version".into(),
        rate_per_sec: RATE,
        timeout: Duration::from_secs(10),
    });
    std::thread::sleep(Duration::from_secs(2));
    let run = app.deploy(extra, code);
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    eprintln!(
        "[{}] deploy of {version} under load: {}",
        app.name,
        report.summary()
    );
    (run, report)
}

fn assert_no_failures(app: &App, report: &LoadReport, run: &Run) {
    app.check(
        report.failed() == 0,
        format!(
            "no request may fail during the deploy, but {} of {} did: {}",
            report.failed(),
            report.sent,
            report.summary()
        ),
        Some(run),
    );
    // The offered rate was kept up (not a load that stalled and so saw nothing).
    let expected = (report.elapsed.as_secs_f64() * RATE as f64 * 0.9) as u64;
    app.check(
        report.sent >= expected,
        format!(
            "the load should have sent about {RATE}/s, sent {} in {:.1}s",
            report.sent,
            report.elapsed.as_secs_f64()
        ),
        Some(run),
    );
}

fn first_deploy(app: &App) {
    let run = app.deploy(&[], 0);
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&run));
    }
}

fn zero_downtime(strategy: &str, name: &str, port: u16) {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, name, port, spec(strategy, port)).in_git();
    first_deploy(&app);
    let (run, report) = deploy_under_load(&mut app, port, "0.2.0", &[], 0);
    assert_no_failures(&app, &report, &run);
    for v in ["0.1.0", "0.2.0"] {
        app.check(
            report.bodies.contains_key(v),
            format!(
                "both versions should answer during the deploy, {v} never did: {:?}",
                report.bodies
            ),
            Some(&run),
        );
    }
    for h in app.app_hosts() {
        app.assert_version(h, "0.2.0", Some(&run));
    }
}

#[test]
fn issue_7_socket_restart_drops_no_request_under_load() {
    zero_downtime("socket", "ship-zd-socket", 18701);
}

#[test]
fn issue_7_blue_green_drops_no_request_under_load() {
    zero_downtime("blue-green", "ship-zd-bluegreen", 18702);
}

/// The control: the same deploy with a plain `systemctl restart` refuses connections, so the
/// load above is known to catch a gap.
#[test]
fn issue_7_plain_restart_drops_requests_under_the_same_load() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18703;
    let mut app = App::new(hosts, "ship-zd-restart", port, spec("restart", port)).in_git();
    first_deploy(&app);
    let (run, report) = deploy_under_load(&mut app, port, "0.2.0", &[], 0);
    app.check(
        report.failed() > 0,
        format!(
            "a plain restart of a service that takes 500ms to start must drop requests under load: {}",
            report.summary()
        ),
        Some(&run),
    );
    app.check(
        report.failures_by_kind().contains_key("refused"),
        format!(
            "the dropped requests should be refused connections: {:?}",
            report.failures_by_kind()
        ),
        Some(&run),
    );
}

/// Blue-green: a release that never becomes ready (no READY=1) never takes traffic: the old
/// instance serves every request, the deploy fails and rolls back, and nothing is dropped.
#[test]
fn issue_7_blue_green_release_that_never_gets_ready_never_takes_traffic() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18704;
    let mut s = spec("blue-green", port);
    s.timeout = "5s".into();
    let mut app = App::new(hosts, "ship-zd-neverready", port, s).in_git();
    first_deploy(&app);
    let (run, report) = deploy_under_load(
        &mut app,
        port,
        "0.2.0",
        &["--features", "never-ready"],
        EXIT_ROLLED_BACK,
    );
    assert_no_failures(&app, &report, &run);
    app.check(
        report.bodies.keys().all(|b| b == "0.1.0"),
        format!(
            "only 0.1.0 may answer: the new release never said READY=1 ({:?})",
            report.bodies
        ),
        Some(&run),
    );
    app.check(
        run.all_output().contains("did not become active"),
        "the deploy should say the new instance did not become active",
        Some(&run),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&run));
        app.check(
            !app.exists(h, ".ship/lock") && !app.exists(h, ".ship/pending"),
            "lock and pending switch must be cleared",
            Some(&run),
        );
    }
}

/// Socket strategy, unhealthy release and rollback: the unhealthy release is rolled back with
/// the socket still serving, and `cargo ship rollback` goes back a release, both without a
/// failed request.
#[test]
fn issue_7_socket_unhealthy_release_and_rollback_keep_serving() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18705;
    let mut app = App::new(hosts, "ship-zd-sockrb", port, spec("socket", port)).in_git();
    first_deploy(&app);
    let (run, report) = deploy_under_load(
        &mut app,
        port,
        "0.2.0",
        &["--features", "unhealthy"],
        EXIT_ROLLED_BACK,
    );
    assert_no_failures(&app, &report, &run);
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&run));
    }
    let (run, _) = deploy_under_load(&mut app, port, "0.3.0", &[], 0);
    for h in app.app_hosts() {
        app.assert_version(h, "0.3.0", Some(&run));
    }
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start(LoadConfig {
        targets: targets(&app, port),
        path: "/version".into(),
        rate_per_sec: RATE,
        timeout: Duration::from_secs(10),
    });
    std::thread::sleep(Duration::from_secs(1));
    let rb = app.run_expect(&["rollback", "test"], 0);
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    eprintln!("[{}] rollback under load: {}", app.name, report.summary());
    assert_no_failures(&app, &report, &rb);
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&rb));
    }
}

/// Issue #22: what `cargo ship init --strategy socket` writes is a working zero-downtime setup.
/// In a git repository (a commit per version), the fixture's section is replaced by init's, and
/// only what a user must fill in is edited:
/// the hosts and their ssh_config (environment `prod` renamed `test`), the port (8080 → this
/// test's own, on shared hosts), and `args` for a service that takes 500 ms to start (the gap
/// a plain restart leaves). Under the same load as above, the deploy of a new version refuses
/// no connection and fails no request.
#[test]
fn issue_22_init_strategy_socket_deploys_with_no_refused_connection() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let port = 18706;
    // A crate in its git repository, as users have it: each deploy from its own commit.
    let app = App::new(
        hosts,
        "ship-init-socket",
        port,
        Spec {
            hosts: vec!["host0".into(), "host1".into(), "host2".into()],
            ..Spec::default()
        },
    )
    .in_git();
    // The package without any ship section, then `cargo ship init --strategy socket`.
    let text = app.project.manifest();
    let cut = text.find("[package.metadata.ship]").unwrap();
    app.project.set_manifest(&text[..cut]);
    app.run_expect(&["init", "--strategy", "socket"], 0);
    let written = app.project.manifest();
    let edited = written
        .replace("8080", &port.to_string())
        .replace(
            "# args = [\"--port\", \"",
            "args = [\"--start-delay-ms\", \"500\"] # was: [\"--port\", \"",
        )
        .replace(
            "[package.metadata.ship.environments.prod]",
            "[package.metadata.ship.environments.test]",
        )
        .replace(
            "hosts = [\"deploy@prod1.example.com\"]",
            &format!(
                "hosts = [\"host0\", \"host1\", \"host2\"]\nssh_config = {}",
                crate::app::toml_str(&hosts.ssh_config.display().to_string())
            ),
        );
    assert!(
        edited.contains(&format!(
            "restart = \"socket\"\nlisten = [\"0.0.0.0:{port}\"]"
        )),
        "{edited}"
    );
    app.project.set_manifest(&edited);
    app.project.commit("cargo ship init --strategy socket");
    // The fixture answers /version; what App checks with is the same port.
    let run = app.deploy(&[], 0);
    for h in app.app_hosts() {
        app.assert_version(h, "0.1.0", Some(&run));
    }

    app.project.set_version("0.2.0");
    app.project.commit("0.2.0");
    app.run_expect(&["build"], 0);
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let load = Load::start(LoadConfig {
        targets: targets(&app, port),
        path: "/version".into(),
        rate_per_sec: RATE,
        timeout: Duration::from_secs(10),
    });
    std::thread::sleep(Duration::from_secs(2));
    let run = app.deploy(&[], 0);
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    eprintln!(
        "[{}] deploy of 0.2.0 under load: {}",
        app.name,
        report.summary()
    );
    app.check(
        !report.failures_by_kind().contains_key("refused"),
        format!(
            "no connection may be refused: {:?}",
            report.failures_by_kind()
        ),
        Some(&run),
    );
    assert_no_failures(&app, &report, &run);
    app.check(
        report.bodies.contains_key("0.2.0"),
        format!("0.2.0 should answer during the load: {:?}", report.bodies),
        Some(&run),
    );
    for h in app.app_hosts() {
        app.assert_version(h, "0.2.0", Some(&run));
    }
}
