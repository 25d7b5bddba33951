//! `--message-format json`: every stdout line is one JSON event, with the documented fields.

use crate::support::Project;

fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect()
}

#[test]
fn build_emits_an_artifact_event() {
    let p = Project::fixture("hello");
    let out = p
        .ship()
        .args(["build", "--message-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = events(&out.stdout);
    let artifact = events
        .iter()
        .find(|e| e["event"] == "artifact")
        .expect("an artifact event");
    let path = artifact["path"].as_str().unwrap();
    assert!(std::path::Path::new(path).is_file(), "{path}");
    assert_eq!(artifact["sha256"].as_str().unwrap().len(), 64);
    assert!(artifact["size"].as_u64().unwrap() > 0);
    assert!(artifact["reused"].is_boolean());
    assert!(events
        .iter()
        .any(|e| e["event"] == "status" && e["verb"] == "Packing"));
}

#[test]
fn errors_are_events_with_exit_codes() {
    let p = Project::fixture("hello");
    let out = p
        .ship()
        .args(["deploy", "nowhere", "--message-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = events(&out.stdout).pop().expect("an error event");
    assert_eq!(err["event"], "error");
    assert_eq!(err["exit_code"], 2);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no environment `nowhere`"),
        "{err}"
    );

    p.edit(
        "Cargo.toml",
        "keep_releases = 3",
        "keep_releases = \"three\"",
    );
    let out = p
        .ship()
        .args(["build", "--message-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = events(&out.stdout).pop().unwrap();
    assert_eq!(err["exit_code"], 3);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("package.metadata.ship.keep_releases"),
        "{err}"
    );
}

#[test]
fn config_show_gives_structured_data() {
    let p = Project::fixture("hello");
    let out = p
        .ship()
        .args(["config", "show", "--message-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = events(&out.stdout)
        .into_iter()
        .find(|e| e["event"] == "output")
        .unwrap();
    assert_eq!(shown["kind"], "config");
    assert_eq!(shown["data"]["deploy_to"], "/opt/hello");
}
