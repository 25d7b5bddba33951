//! Issue #8: the release archives, built here by the same script the release workflow runs
//! (`scripts/release-archives`), for what this machine can build: x86_64 gnu (glibc 2.17 via
//! cargo-zigbuild) and musl, and aarch64 gnu via cargo-zigbuild. Each archive is checked:
//! its sha256 file, its entries (binary, completions, man pages), the binary's architecture
//! and linking, that the x86_64 ones run, and that `[package.metadata.binstall]` in Cargo.toml
//! names exactly these files. Nothing is published.
//!
//! Needs cargo-zigbuild (`.ci/setup` installs it); without it the test says why it skips, and
//! under `CI=true` it fails instead.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ALL_TARGETS: [&str; 3] = [
    "x86_64-unknown-linux-gnu",
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-gnu",
];

/// The targets built: by default only x86_64 gnu (glibc 2.17 via cargo-zigbuild: the one the
/// action installs on GitHub's runners), because each target is a full compile of cargo-ship
/// and the whole suite must stay well under 30 minutes on 2 cores; `SHIP_RELEASE_TARGETS=all`
/// (or a comma-separated list) builds more.
fn targets() -> Vec<&'static str> {
    match std::env::var("SHIP_RELEASE_TARGETS").ok().as_deref() {
        Some("all") => ALL_TARGETS.to_vec(),
        Some(list) if !list.trim().is_empty() => ALL_TARGETS
            .iter()
            .copied()
            .filter(|t| list.split(',').any(|x| x.trim() == *t))
            .collect(),
        _ => vec![ALL_TARGETS[0]],
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_bin() -> PathBuf {
    std::env::var_os("SHIP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/cargo-ship/venv")
        })
        .join("bin")
}

/// PATH with the venv's bin directory appended, as scripts/test sets it.
fn path_with_venv() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.push(venv_bin());
    std::env::join_paths(dirs).unwrap()
}

fn have_zigbuild() -> bool {
    std::env::split_paths(&path_with_venv()).any(|d| d.join("cargo-zigbuild").is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `[package.metadata.binstall]` rendered for `target`: (file name of pkg-url, bin-dir).
fn binstall_names(target: &str) -> (String, String) {
    let manifest: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let package = manifest["package"].as_table().unwrap();
    let meta = package["metadata"]["binstall"].as_table().unwrap();
    assert_eq!(
        meta["pkg-fmt"].as_str(),
        Some("tgz"),
        "archives are .tar.gz"
    );
    let render = |t: &str| {
        t.replace("{ repo }", package["repository"].as_str().unwrap())
            .replace("{ version }", package["version"].as_str().unwrap())
            .replace("{ name }", "cargo-ship")
            .replace("{ target }", target)
            .replace("{ bin }", "cargo-ship")
            .replace("{ binary-ext }", "")
    };
    let url = render(meta["pkg-url"].as_str().unwrap());
    assert!(
        url.starts_with("https://github.com/")
            && url.contains(&format!(
                "/releases/download/v{}/",
                package["version"].as_str().unwrap()
            )),
        "{url}"
    );
    assert!(!url.contains('{'), "unrendered template in {url}");
    let file = url.rsplit('/').next().unwrap().to_string();
    (file, render(meta["bin-dir"].as_str().unwrap()))
}

#[test]
fn issue_8_release_archives_build_here_with_binary_completions_and_man_pages() {
    if !have_zigbuild() {
        let why = "cargo-zigbuild not found on PATH or in the venv; run `bash .ci/setup`";
        assert!(!in_ci(), "CI=true forbids skipping: {why}");
        eprintln!("skipping: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let targets = targets();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/release-archives"))
        .args(["--profile", "dist-check", "--out"])
        .arg(out.path())
        .env("PATH", path_with_venv())
        .current_dir(repo());
    for t in &targets {
        cmd.args(["--target", t]);
    }
    run(&mut cmd);
    eprintln!(
        "release archives for {} targets built in {:.1?}",
        targets.len(),
        started.elapsed()
    );

    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = targets
        .iter()
        .flat_map(|t| {
            [
                format!("cargo-ship-{t}.tar.gz"),
                format!("cargo-ship-{t}.tar.gz.sha256"),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(files, want);

    for t in targets.iter().copied() {
        let (archive, bin_dir) = binstall_names(t);
        assert_eq!(
            archive,
            format!("cargo-ship-{t}.tar.gz"),
            "binstall's pkg-url names another file"
        );
        // The sha256 file checks out, in the format `sha256sum -c` (and action/run.sh) reads.
        run(Command::new("sha256sum")
            .args(["-c", "--strict", &format!("{archive}.sha256")])
            .current_dir(out.path()));
        let sha = std::fs::read_to_string(out.path().join(format!("{archive}.sha256"))).unwrap();
        assert!(sha.ends_with(&format!("  {archive}\n")), "{sha}");

        let listing = run(Command::new("tar")
            .arg("-tzvf")
            .arg(out.path().join(&archive)));
        let names: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        let top = format!("cargo-ship-{t}/");
        for entry in [
            "cargo-ship",
            "README.md",
            "CHANGELOG.md",
            "completions/cargo-ship.bash",
            "completions/_cargo-ship",
            "completions/cargo-ship.fish",
            "completions/_cargo-ship.ps1",
            "completions/cargo-ship.elv",
            "man/cargo-ship.1",
            "man/cargo-ship-deploy.1",
            "man/cargo-ship-rollback.1",
        ] {
            assert!(
                names.contains(&format!("{top}{entry}").as_str()),
                "{archive} lacks {entry}:\n{listing}"
            );
        }
        assert!(
            names.iter().all(|n| n.starts_with(&top)),
            "{archive} has entries outside {top}:\n{listing}"
        );
        assert!(
            names.contains(&bin_dir.as_str()),
            "binstall's bin-dir {bin_dir} is not in {archive}"
        );
        assert!(
            listing.lines().all(|l| l.contains(" 0/0 ")),
            "entries must be owned by 0/0:\n{listing}"
        );

        let x = tempfile::tempdir().unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(out.path().join(&archive))
            .arg("-C")
            .arg(x.path()));
        let bin = x.path().join(&bin_dir);
        check_binary(t, &bin);
    }
}

/// The binary is an ELF for `target`'s architecture, linked as the target says; x86_64 ones
/// run and print their version.
fn check_binary(target: &str, bin: &Path) {
    let bytes = std::fs::read(bin).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let machine = if target.starts_with("aarch64") {
        goblin::elf::header::EM_AARCH64
    } else {
        goblin::elf::header::EM_X86_64
    };
    assert_eq!(
        elf.header.e_machine, machine,
        "{target}: wrong architecture"
    );
    if target.ends_with("-musl") {
        assert!(
            elf.interpreter.is_none(),
            "{target}: a musl build must be static"
        );
    } else {
        assert!(
            elf.interpreter.is_some(),
            "{target}: a gnu build links glibc dynamically"
        );
        // Pinned to glibc 2.17: no symbol version newer than that.
        let newest = elf
            .verneed
            .iter()
            .flat_map(|v| v.iter().flat_map(|n| n.iter().collect::<Vec<_>>()))
            .filter_map(|aux| elf.dynstrtab.get_at(aux.vna_name))
            .filter_map(|name| name.strip_prefix("GLIBC_"))
            .filter_map(|v| {
                let mut p = v.split('.').map(|x| x.parse::<u32>().ok());
                Some((p.next()??, p.next().flatten().unwrap_or(0)))
            })
            .max();
        assert!(
            newest.is_some_and(|v| v <= (2, 17)),
            "{target}: needs glibc {newest:?}, the release promises 2.17"
        );
    }
    if target.starts_with("x86_64") {
        let version = run(Command::new(bin).args(["--version"]));
        assert_eq!(
            version.trim(),
            format!("cargo-ship {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
