//! Issue #17: cargo-ship stopped the way CI stops it (a signal to its process alone: a
//! runner's cancel, `timeout`) leaves nothing running, as when a terminal's Ctrl-C reaches its
//! whole process group.

use std::time::Duration;

use crate::app::{App, Spec};
use crate::host;

/// `logs -f` on three hosts, stopped by SIGINT (or SIGTERM) to its process alone: it exits 0
/// and has closed every ssh master before exiting.
#[test]
fn issue_17_logs_follow_closes_its_ssh_masters_on_a_signal_to_its_process_alone() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let spec = Spec {
        hosts: vec!["host0".into(), "host1".into(), "host2".into()],
        ..Spec::default()
    };
    let app = App::new(hosts, "ship-sig-logs", 18175, spec).in_git();
    app.deploy(&[], 0);
    for sig in ["INT", "TERM"] {
        let mut live = app.spawn(&["logs", "test", "-f", "-n", "20"]);
        live.wait_stderr("the follow to start", 1, Duration::from_secs(60), |l| {
            l.contains("Following")
        });
        // Lines arriving while it stops.
        for h in app.app_hosts() {
            h.exec_ok(&format!("systemctl restart {}", app.unit()));
        }
        let masters = live.ssh_processes();
        assert!(
            masters.len() >= 3,
            "one ssh master per host expected: {masters:?}\n{}",
            live.dump()
        );
        live.signal(sig);
        let status = live.wait(Duration::from_secs(20));
        // Checked the moment it has exited: nothing may be left to linger.
        let left = live.ssh_processes();
        assert!(
            left.is_empty(),
            "SIG{sig} to the process alone: ssh processes left after it exited:\n{}\n{}",
            left.join("\n"),
            live.dump()
        );
        assert_eq!(status.code(), Some(0), "SIG{sig}: exit 0\n{}", live.dump());
    }
}
