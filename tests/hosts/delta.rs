//! Issue #18: a new version travels as a delta against the artifact the host has (`zstd
//! --patch-from`), checked on the host by its sha256; hosts without zstd, or whose zstd cannot
//! apply it, get the whole artifact.

use crate::app::{App, Run, Spec};
use crate::host::{self, TestHost};

/// Takes the limited zstd off the (shared) host again, whatever happens.
struct Restore(&'static TestHost);

impl Drop for Restore {
    fn drop(&mut self) {
        self.0.exec("rm -f /usr/local/bin/zstd");
    }
}

fn sent(run: &Run, alias: &str) -> u64 {
    run.row(alias)["bytes_sent"].as_u64().unwrap_or(u64::MAX)
}

/// The messages of the status events of `verb` about `alias`.
fn said(run: &Run, verb: &str, alias: &str) -> Vec<String> {
    run.events()
        .iter()
        .filter(|e| e["verb"] == verb && e["host"].as_str().is_some_and(|h| h.contains(alias)))
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_new_version_travels_as_a_delta_and_falls_back_to_the_whole_artifact() {
    let Some(hosts) = host::shared_or_skip() else {
        return;
    };
    let mut app = App::new(
        hosts,
        "ship-delta",
        18461,
        Spec {
            // host0 has zstd, host2 has not.
            hosts: vec!["host0".into(), "host2".into()],
            settle: "0s".into(),
            ..Spec::default()
        },
    );
    let (h0, h2) = (app.host(0), app.host(2));
    let first = app.deploy(&[], 0);
    let full_first = sent(&first, "host0");
    // The switch reads the invocation before its restart from the file systemd exports for
    // the journal, not from systemctl: the two agree.
    let exported = h0.exec_ok(&format!(
        "readlink /run/systemd/units/invocation:{}",
        app.unit()
    ));
    app.check_eq(
        exported.trim().to_string(),
        h0.unit_property(&app.unit(), "InvocationID"),
        "the exported invocation id",
        Some(&first),
    );

    // v0.2.0: host0 has 0.1.0's artifact, and so does the local store.
    app.update(|s| s.version = "0.2.0".into());
    let second = app.deploy(&[], 0);
    let artifact = std::fs::metadata(app.artifact_path("0.2.0")).unwrap().len();
    let delta = sent(&second, "host0");
    app.check(
        delta * 3 < artifact,
        format!("host0 was sent {delta} bytes for a {artifact}-byte artifact (the first deploy sent {full_first})"),
        Some(&second),
    );
    // The switch script probed /healthz on the host (bash's /dev/tcp): no port forward.
    let probed = said(&second, "Probed", "host0");
    app.check(
        probed.len() == 1 && probed[0].starts_with("/healthz answered 200 on the host after "),
        format!("host0's probe: {probed:?}"),
        Some(&second),
    );
    let uploaded = said(&second, "Uploaded", "host0");
    app.check(
        uploaded.iter().any(|m| m.starts_with("delta against ")),
        format!("host0's upload: {uploaded:?}"),
        Some(&second),
    );
    app.check(
        sent(&second, "host2") > artifact,
        "host2 (no zstd) gets the whole artifact as gzip",
        Some(&second),
    );
    app.assert_version(h0, "0.2.0", Some(&second));
    app.assert_version(h2, "0.2.0", Some(&second));
    // The confirmation ended the dead-man's switch's wait without systemctl: it is gone.
    let guard = format!("{}-guard.service", app.name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut state = String::new();
    while std::time::Instant::now() < deadline {
        state = h0.unit_property(&guard, "ActiveState");
        if state == "inactive" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    app.check_eq(
        (state, h0.unit_property(&guard, "Result")),
        ("inactive".to_string(), "success".to_string()),
        "the guard after a confirmed deploy",
        Some(&second),
    );

    // The host keeps the tar it rebuilt: the same artifact again sends nothing.
    let again = app.deploy(&[], 0);
    app.check_eq(
        (sent(&again, "host0"), sent(&again, "host2")),
        (0, 0),
        "bytes sent for artifacts the hosts have",
        Some(&again),
    );

    // A zstd without --patch-from (older than 1.4.5): the whole artifact follows.
    let _restore = Restore(h0);
    h0.exec_ok(
        "printf '%s\\n' '#!/bin/sh' 'for a; do case $a in --patch-from*) echo \"zstd: unknown argument: $a\" >&2; exit 1;; esac; done' 'exec /usr/bin/zstd \"$@\"' > /usr/local/bin/zstd && chmod 755 /usr/local/bin/zstd",
    );
    app.update(|s| s.version = "0.3.0".into());
    let third = app.deploy(&[], 0);
    let artifact = std::fs::metadata(app.artifact_path("0.3.0")).unwrap().len();
    let warned = third.events().iter().any(|e| {
        e["verb"] == "warning"
            && e["message"].as_str().is_some_and(|m| {
                m.contains("host0")
                    && m.ends_with(
                        "this host could not rebuild the artifact from the delta; sending the whole artifact",
                    )
            })
    });
    app.check(warned, "no warning about the delta on host0", Some(&third));
    app.check(
        sent(&third, "host0") > artifact,
        format!(
            "host0 was sent {} bytes: the delta, then the whole {artifact}-byte artifact",
            sent(&third, "host0")
        ),
        Some(&third),
    );
    app.assert_version(h0, "0.3.0", Some(&third));
}
