//! Issue #3: the happy paths of `cargo ship deploy|rollback|status|releases|prune` against a
//! real host, checked on the host itself.

use crate::app::{App, Spec};
use crate::host;

/// Deploy, redeploy the same build (nothing uploaded, one connection), deploy a new version,
/// roll back, and read `status` and `releases`.
#[test]
fn issue_3_deploy_redeploy_new_version_and_rollback() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(hosts, "ship-basic", 18101, Spec::default());
    let h = app.host(0);

    // v0.1.0, first deploy.
    let first = app.deploy(&[], 0);
    let r1 = app.deployed_release(&first, "host0");
    app.assert_version(h, "0.1.0", Some(&first));
    app.check_eq(
        h.current_link(&app.deploy_to()),
        Some(format!("releases/{r1}")),
        "current after the first deploy",
        Some(&first),
    );
    let log = app.read(h, "revisions.log");
    app.check(
        log.lines().any(|l| {
            l.contains(" deploy ")
                && l.contains(&format!("release={r1}"))
                && l.ends_with("result=ok")
        }),
        format!("revisions.log has no `deploy release={r1} ... result=ok` line:\n{log}"),
        Some(&first),
    );
    app.check(
        app.exists(h, &format!("/etc/systemd/system/{}", app.unit())),
        "the unit file was not written",
        Some(&first),
    );
    let data_link = h.exec_ok(&format!(
        "readlink -- {}/releases/{r1}/data",
        app.deploy_to()
    ));
    app.check_eq(
        data_link.trim().to_string(),
        format!("{}/shared/data", app.deploy_to()),
        "releases/<id>/data links into shared/",
        Some(&first),
    );
    // The service wrote its start line through the link.
    app.check(
        app.read(h, "shared/data/started.log").contains("0.1.0"),
        "shared/data/started.log does not show v0.1.0 starting",
        Some(&first),
    );

    // The same build again: the artifact is cached on the host, nothing is uploaded.
    let again = app.deploy(&[], 0);
    let r2 = app.deployed_release(&again, "host0");
    let row = again.row("host0");
    app.check_eq(
        row["bytes_sent"].as_u64(),
        Some(0),
        "bytes sent for a cached artifact",
        Some(&again),
    );
    app.check_eq(
        row["connections"].as_u64(),
        Some(1),
        "ssh connections",
        Some(&again),
    );
    app.check(r2 > r1, format!("release ids {r1} then {r2}"), Some(&again));
    app.assert_version(h, "0.1.0", Some(&again));

    // v0.2.0.
    app.update(|s| s.version = "0.2.0".into());
    let second = app.deploy(&[], 0);
    let r3 = app.deployed_release(&second, "host0");
    app.assert_version(h, "0.2.0", Some(&second));
    app.check_eq(
        app.current(h),
        Some(r3.clone()),
        "current after v0.2.0",
        Some(&second),
    );
    let row = second.row("host0");
    app.check(
        row["bytes_sent"].as_u64().is_some_and(|b| b > 0),
        "a new version must be uploaded",
        Some(&second),
    );

    // Rollback: back to the newest good release before current, v0.1.0.
    let rb = app.run_expect(&["rollback", "test", "--message-format", "json"], 0);
    app.assert_version(h, "0.1.0", Some(&rb));
    app.check_eq(
        app.current(h),
        Some(r2.clone()),
        "current after rollback",
        Some(&rb),
    );
    app.check_eq(
        rb.row("host0")["bytes_sent"].as_u64(),
        Some(0),
        "a rollback uploads nothing",
        Some(&rb),
    );
    let log = app.read(h, "revisions.log");
    app.check(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("rollback") && l.contains(&r2) && l.ends_with("result=ok")),
        format!("revisions.log does not end with the rollback:\n{log}"),
        Some(&rb),
    );

    // status (human): the current release and the unit's state.
    let st = app.run_expect(&["status", "test"], 0);
    app.check(
        st.stdout.contains(&format!("current:   {r2}  v0.1.0")),
        "status does not show the current release",
        Some(&st),
    );
    app.check(
        st.stdout.contains("unit:      active"),
        "status does not show the unit active",
        Some(&st),
    );

    // releases (JSON): every release with its version.
    let rel = app.run_expect(&["releases", "test", "--message-format", "json"], 0);
    let out = rel
        .events()
        .into_iter()
        .find(|e| e["event"] == "output" && e["kind"] == "releases")
        .unwrap_or_else(|| app.fail("no releases output event", Some(&rel)));
    let listed: Vec<(String, String, bool)> = out["data"]["releases"]
        .as_array()
        .unwrap_or_else(|| app.fail("no releases array", Some(&rel)))
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                r["version"].as_str().unwrap_or_default().to_string(),
                r["current"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    app.check_eq(
        listed,
        vec![
            (r1, "0.1.0".to_string(), false),
            (r2, "0.1.0".to_string(), true),
            (r3, "0.2.0".to_string(), false),
        ],
        "releases listed",
        Some(&rel),
    );
}
