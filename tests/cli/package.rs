//! Issue #17: what `cargo package` ships: both license files of `MIT OR Apache-2.0`, and not
//! the benchmark's raw results.

use crate::support::repo_root;

#[test]
fn issue_17_package_ships_the_licenses_and_not_bench_results() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("cargo package --list");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo package --list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<&str> = stdout.lines().collect();
    for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(
            files.contains(&license),
            "{license} is not packaged:\n{stdout}"
        );
    }
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    let apache = std::fs::read_to_string(repo_root().join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License\n                        Version 2.0, January 2004"));
    let mit = std::fs::read_to_string(repo_root().join("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License\n") && mit.contains("Permission is hereby granted"));
    let results: Vec<&&str> = files
        .iter()
        .filter(|f| f.starts_with("bench/results"))
        .collect();
    assert!(results.is_empty(), "bench/results is packaged: {results:?}");
}
