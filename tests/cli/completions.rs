//! Issue #8: shell completions, man pages and the outside ssh files (`--ssh-config`,
//! `--known-hosts`), through the real binary.

use crate::support::ship_command;

/// Runs the bash completion function for `words` (the last one is being completed) and
/// returns what it offers.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let cword = words.len() - 1;
    let array: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; _cargo__ship cargo-ship '{}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        array.join(" "),
        words[cword],
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn issue_8_bash_completion_completes_subcommands_and_their_flags() {
    let out = ship_command()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cargo-ship.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    assert_eq!(bash_complete(&script, &["cargo-ship", "dep"]), ["deploy"]);
    assert_eq!(
        bash_complete(&script, &["cargo-ship", "deploy", "--known"]),
        ["--known-hosts"]
    );
    assert_eq!(
        bash_complete(&script, &["cargo-ship", "config", "show", "--manifest"]),
        ["--manifest-path"]
    );
    let shells = bash_complete(&script, &["cargo-ship", "completions", "z"]);
    assert_eq!(shells, ["zsh"]);

    // `completion` is an alias, and every shell clap_complete knows gives a script.
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let out = ship_command().args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("known-hosts"),
            "{shell}"
        );
    }
}

#[test]
fn issue_8_man_pages_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = ship_command()
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "cargo-ship.1",
        "cargo-ship-deploy.1",
        "cargo-ship-rollback.1",
        "cargo-ship-status.1",
        "cargo-ship-releases.1",
        "cargo-ship-unlock.1",
        "cargo-ship-prune.1",
        "cargo-ship-config-show.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page} is not roff");
    }
    let deploy = std::fs::read_to_string(dir.path().join("cargo-ship-deploy.1")).unwrap();
    assert!(deploy.contains("cargo ship deploy"), "{deploy}");
}

#[test]
fn issue_8_missing_known_hosts_file_is_a_usage_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = ship_command()
        .args(["status", "prod", "--known-hosts"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: --known-hosts / CARGO_SHIP_KNOWN_HOSTS: cannot read `{}`: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );

    let empty = dir.path().join("known_hosts");
    std::fs::write(&empty, "\n# none yet\n").unwrap();
    let out = ship_command()
        .args(["status", "prod"])
        .env("CARGO_SHIP_KNOWN_HOSTS", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no host keys"), "{stderr}");

    let out = ship_command()
        .args(["status", "prod", "--ssh-config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("error: --ssh-config / CARGO_SHIP_SSH_CONFIG: cannot read"));
}
