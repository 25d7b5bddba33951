//! Shared test helpers: a fixture project copied to a temp dir, and a `cargo ship` command.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod process;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of a fixture in a fresh temp dir, so tests can edit it freely.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The copied fixture's root (its Cargo.toml lives here).
    pub root: PathBuf,
}

impl Project {
    /// Copies `fixtures/<name>` (without its `target/`) into a temp dir. The copy shares one
    /// cargo target dir per fixture under the repo's `target/fixture-builds/` unless
    /// `CARGO_TARGET_DIR` is set, so repeated builds are incremental.
    pub fn fixture(name: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("ship-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join(name);
        copy_dir(&repo_root().join("fixtures").join(name), &root);
        Project { dir, root }
    }

    /// A cargo workspace in a fresh temp dir whose members are copies of `fixtures/hello`,
    /// one directory per name; the caller writes every Cargo.toml.
    pub fn hello_workspace(members: &[&str]) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("ship-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("ws");
        for m in members {
            copy_dir(&repo_root().join("fixtures/hello"), &root.join(m));
            let _ = std::fs::remove_file(root.join(m).join("Cargo.lock"));
        }
        Project { dir, root }
    }

    /// Path of a file in the project.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The project's Cargo.toml text.
    pub fn manifest(&self) -> String {
        std::fs::read_to_string(self.path("Cargo.toml")).unwrap()
    }

    /// Replaces the project's Cargo.toml.
    pub fn set_manifest(&self, text: &str) {
        std::fs::write(self.path("Cargo.toml"), text).unwrap();
    }

    /// Replaces the first occurrence of `from` with `to` in a file of the project.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.path(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// Sets the package version in Cargo.toml.
    pub fn set_version(&self, version: &str) {
        let text = self.manifest();
        let re_line = text
            .lines()
            .find(|l| l.starts_with("version = "))
            .expect("version line")
            .to_string();
        self.set_manifest(&text.replacen(&re_line, &format!("version = \"{version}\""), 1));
    }

    /// Writes a file in the project, creating parent dirs.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Makes the project a git repository, as a team keeps it: `target/` ignored, a
    /// `Cargo.lock`, everything committed. Returns the commit id.
    pub fn git_init(&self) -> String {
        git(&self.root, &["init", "-q", "-b", "main"]);
        std::fs::write(self.path(".gitignore"), "target/\n").unwrap();
        if !self.path("Cargo.lock").exists() {
            let out = std::process::Command::new("cargo")
                .args(["generate-lockfile", "--offline"])
                .current_dir(&self.root)
                .output()
                .expect("cargo generate-lockfile");
            assert!(
                out.status.success(),
                "cargo generate-lockfile: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.commit("initial commit")
    }

    /// True when [`Project::git_init`] made the project a repository.
    pub fn is_git(&self) -> bool {
        self.path(".git").is_dir()
    }

    /// Commits every change in the work tree (a version bump, an edit) as `message`, as a
    /// developer does before deploying; returns the new commit id. Commits even when nothing
    /// changed: each deploy then comes from its own commit.
    pub fn commit(&self, message: &str) -> String {
        git(&self.root, &["add", "-A"]);
        git(
            &self.root,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.root, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// `cargo ship <args>` run in the project's root.
    pub fn ship(&self) -> assert_cmd::Command {
        let mut cmd = ship_command();
        cmd.current_dir(&self.root);
        cmd
    }
}

/// `cargo-ship ship` with a quiet, colourless environment.
pub fn ship_command() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("cargo-ship"));
    cmd.arg("ship")
        .env("CARGO_TERM_COLOR", "never")
        .env_remove("RUST_LOG")
        // Run under GitHub Actions, cargo-ship would group its lines and write the job's files.
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("GITHUB_STEP_SUMMARY");
    cmd
}

/// Runs `git <args>` in `dir` with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Ship Test",
            "-c",
            "user.email=ship-test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), to.join(&name))
                .unwrap();
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
