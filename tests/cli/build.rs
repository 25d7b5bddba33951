//! `cargo ship build` through the library: compile the hello fixture, pack it, and check the
//! artifact byte for byte (issue #2).
//!
//! Every build shares the cargo target dir `target/fixture-builds/hello`, and packing holds the
//! store's lock, so builds run one at a time anyway; [`BUILDS`] also serialises the tests that
//! change `SOURCE_DATE_EPOCH`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cargo_ship::config::{BuilderKind, Config, HealthConfig, HooksConfig, SystemdConfig};
use cargo_ship::package::{self, Artifact, MANIFEST_FILE};
use cargo_ship::target::Target;
use cargo_ship::ui::Ui;
use sha2::{Digest, Sha256};

use crate::support::{repo_root, Project};

static BUILDS: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    BUILDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The resolved config the loader would give for fixtures/hello, built by hand.
fn hello_config(project: &Project, target: &str) -> Config {
    Config {
        manifest_path: project.path("Cargo.toml"),
        package_root: project.root.clone(),
        target_dir: repo_root().join("target/fixture-builds/hello"),
        package: "hello".into(),
        version: "0.1.0".into(),
        bin: "hello".into(),
        target: Target::parse(target).unwrap(),
        targets: vec![Target::parse(target).unwrap()],
        builder: BuilderKind::Auto,
        profile: "release".into(),
        features: vec![],
        all_features: false,
        no_default_features: false,
        strip: true,
        assets: vec!["config/default.toml".into(), "static".into()],
        deploy_to: "/opt/hello".into(),
        keep_releases: 3,
        shared_dirs: vec!["data".into(), "log".into()],
        shared_files: vec![],
        sudo: false,
        systemd: SystemdConfig {
            unit: "hello".into(),
            args: vec!["--port".into(), "8080".into()],
            environment: BTreeMap::new(),
            user: None,
            group: None,
            restart_sec: Duration::from_secs(1),
            hardening: true,
            restart: cargo_ship::config::RestartStrategy::Restart,
            listen: vec![],
            notify: false,
            drain_timeout: Duration::from_secs(30),
            secrets: vec![],
        },
        health: HealthConfig {
            http: Some("http://127.0.0.1:8080/healthz".into()),
            command: None,
            timeout: Duration::from_secs(20),
            settle: Duration::from_secs(2),
            confirm_timeout: Duration::from_secs(90),
        },
        canary: None,
        hooks: HooksConfig::default(),
        jobs: Default::default(),
        environment: None,
        per_host: BTreeMap::new(),
    }
}

/// One entry read back from an artifact.
#[derive(Debug)]
struct TarEntry {
    path: String,
    dir: bool,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
}

fn read_tar(path: &Path) -> Vec<TarEntry> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(zstd::stream::Decoder::new(file).unwrap());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(
            (h.username().unwrap(), h.groupname().unwrap()),
            (Some(""), Some(""))
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(TarEntry {
            path: entry.path().unwrap().display().to_string(),
            dir: h.entry_type().is_dir(),
            mode: h.mode().unwrap(),
            mtime: h.mtime().unwrap(),
            data,
        });
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks everything that does not depend on the target: layout, modes, mtimes, hashes, name.
fn check_artifact(a: &Artifact, target: &str) -> Vec<TarEntry> {
    let bytes = std::fs::read(&a.path).unwrap();
    assert_eq!(sha256(&bytes), a.sha256);
    assert_eq!(bytes.len() as u64, a.size);
    let name = a.path.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name,
        format!("hello-0.1.0-{target}-{}.tar.zst", a.short_sha())
    );
    assert_eq!(
        a.path.parent().unwrap(),
        repo_root().join("target/fixture-builds/hello/ship")
    );

    let m = &a.manifest;
    assert_eq!(
        (
            m.schema,
            m.package.as_str(),
            m.version.as_str(),
            m.bin.as_str()
        ),
        (1, "hello", "0.1.0", "hello")
    );
    assert_eq!((m.target.as_str(), m.profile.as_str()), (target, "release"));
    assert!(m.rustc.starts_with("rustc "), "{}", m.rustc);
    let built_at = chrono::DateTime::parse_from_rfc3339(&m.built_at)
        .unwrap()
        .timestamp() as u64;

    let entries = read_tar(&a.path);
    let layout: Vec<(&str, bool, u32)> = entries
        .iter()
        .map(|e| (e.path.as_str(), e.dir, e.mode))
        .collect();
    assert_eq!(
        layout,
        [
            (MANIFEST_FILE, false, 0o644),
            ("config", true, 0o755),
            ("config/default.toml", false, 0o644),
            ("hello", false, 0o755),
            ("static", true, 0o755),
            ("static/index.html", false, 0o644),
        ]
    );
    assert!(
        entries.iter().all(|e| e.mtime == built_at),
        "every mtime is built_at"
    );
    let manifest_text = std::str::from_utf8(&entries[0].data).unwrap();
    assert!(manifest_text.starts_with("{\n  \"schema\": 1,") && manifest_text.ends_with("}\n"));
    assert_eq!(
        &serde_json::from_str::<package::Manifest>(manifest_text).unwrap(),
        m
    );
    assert_eq!(&package::read_manifest(&a.path).unwrap(), m);

    let files: Vec<&str> = m.files.keys().map(String::as_str).collect();
    assert_eq!(files, ["config/default.toml", "hello", "static/index.html"]);
    for e in entries.iter().filter(|e| !e.dir && e.path != MANIFEST_FILE) {
        let f = &m.files[&e.path];
        assert_eq!(
            (f.sha256.as_str(), f.size, f.mode),
            (sha256(&e.data).as_str(), e.data.len() as u64, e.mode)
        );
    }
    let html = std::fs::read(repo_root().join("fixtures/hello/static/index.html")).unwrap();
    assert_eq!(m.files["static/index.html"].sha256, sha256(&html));
    entries
}

/// Writes the packed binary to a temp dir and runs `hello --version`.
fn run_packed_binary(entries: &[TarEntry]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hello");
    let data = &entries.iter().find(|e| e.path == "hello").unwrap().data;
    std::fs::write(&bin, data).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn packed_binary(entries: &[TarEntry]) -> &[u8] {
    &entries.iter().find(|e| e.path == "hello").unwrap().data
}

/// True when the ELF has a PT_INTERP program header (it needs a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let o = phoff + i * size;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

fn glibc(v: &Option<String>) -> Vec<u32> {
    package::manifest::parse_glibc_version(v.as_deref().expect("a glibc requirement")).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=ship",
            "-c",
            "user.email=ship@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn build_gnu_artifact_in_git_repo_with_full_manifest() {
    let _guard = serial();
    std::env::remove_var("SOURCE_DATE_EPOCH");
    let project = Project::fixture("hello");
    git(&project.root, &["init", "-q"]);
    git(&project.root, &["add", "."]);
    git(&project.root, &["commit", "-q", "-m", "hello"]);
    let head = git(&project.root, &["rev-parse", "HEAD"]);
    let config = hello_config(&project, "x86_64-unknown-linux-gnu");

    let a = package::build_artifact(&config, &Ui::silent()).unwrap();
    let entries = check_artifact(&a, "x86_64-unknown-linux-gnu");
    let m = &a.manifest;
    assert_eq!(m.builder, "cargo");
    assert_eq!(m.features, Vec::<String>::new());
    assert_eq!(
        (m.git_commit.as_deref(), m.git_dirty),
        (Some(head.as_str()), false)
    );
    assert_eq!(m.built_at, "2023-11-14T22:13:20Z", "the HEAD commit's time");
    // A plain build on this machine links against its recent glibc.
    assert!(
        glibc(&m.glibc_required) >= vec![2, 30],
        "{:?}",
        m.glibc_required
    );
    assert!(has_interpreter(packed_binary(&entries)));
    assert_eq!(run_packed_binary(&entries), "0.1.0\n");

    // SOURCE_DATE_EPOCH wins over the commit time; an uncommitted change marks the tree dirty.
    project.write("static/index.html", "<h1>changed</h1>\n");
    std::env::set_var("SOURCE_DATE_EPOCH", "1234567890");
    let b = package::build_artifact(&config, &Ui::silent());
    std::env::remove_var("SOURCE_DATE_EPOCH");
    let b = b.unwrap();
    let entries = check_artifact_changed_html(&b);
    assert_eq!(b.manifest.built_at, "2009-02-13T23:31:30Z");
    assert!(entries.iter().all(|e| e.mtime == 1_234_567_890));
    assert_eq!(
        (b.manifest.git_commit.as_deref(), b.manifest.git_dirty),
        (Some(head.as_str()), true)
    );
    assert_ne!(a.sha256, b.sha256);
}

/// Like [`check_artifact`] for the edited index.html.
fn check_artifact_changed_html(a: &Artifact) -> Vec<TarEntry> {
    let entries = read_tar(&a.path);
    let html = entries
        .iter()
        .find(|e| e.path == "static/index.html")
        .unwrap();
    assert_eq!(html.data, b"<h1>changed</h1>\n");
    assert_eq!(
        a.manifest.files["static/index.html"].sha256,
        sha256(&html.data)
    );
    entries
}

#[test]
fn same_inputs_give_a_byte_identical_artifact() {
    let _guard = serial();
    std::env::remove_var("SOURCE_DATE_EPOCH");
    let project = Project::fixture("hello");
    let config = hello_config(&project, "x86_64-unknown-linux-gnu");
    let ui = Ui::silent();

    let first = package::build_artifact(&config, &ui).unwrap();
    check_artifact(&first, "x86_64-unknown-linux-gnu");
    // Outside git: no commit, not dirty, and built_at is Cargo.toml's modification time.
    assert_eq!(
        (
            first.manifest.git_commit.as_deref(),
            first.manifest.git_dirty
        ),
        (None, false)
    );
    let mtime = std::fs::metadata(project.path("Cargo.toml"))
        .unwrap()
        .modified()
        .unwrap();
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(
        first.manifest.built_at,
        chrono::DateTime::from_timestamp(secs, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    );
    assert!(!first.reused || first.path.exists());
    let bytes = std::fs::read(&first.path).unwrap();

    let again = package::build_artifact(&config, &ui).unwrap();
    assert!(again.reused, "an identical artifact in the store is reused");
    assert_eq!(
        (again.path.as_path(), again.sha256.as_str()),
        (first.path.as_path(), first.sha256.as_str())
    );

    std::fs::remove_file(&first.path).unwrap();
    let rebuilt = package::build_artifact(&config, &ui).unwrap();
    assert!(!rebuilt.reused);
    assert_eq!(rebuilt.sha256, first.sha256);
    assert_eq!(rebuilt.path, first.path);
    assert!(
        std::fs::read(&rebuilt.path).unwrap() == bytes,
        "byte-identical .tar.zst"
    );
}

#[test]
fn glibc_pinned_build_uses_zigbuild() {
    let _guard = serial();
    let project = Project::fixture("hello");
    let config = hello_config(&project, "x86_64-unknown-linux-gnu.2.17");
    let a = package::build_artifact(&config, &Ui::silent()).unwrap();
    let entries = check_artifact(&a, "x86_64-unknown-linux-gnu.2.17");
    assert_eq!(a.manifest.builder, "zigbuild");
    assert!(
        glibc(&a.manifest.glibc_required) <= vec![2, 17],
        "{:?}",
        a.manifest.glibc_required
    );
    assert!(has_interpreter(packed_binary(&entries)));
    assert_eq!(run_packed_binary(&entries), "0.1.0\n");
}

#[test]
fn musl_build_is_static_and_records_features() {
    let _guard = serial();
    let project = Project::fixture("hello");
    let mut config = hello_config(&project, "x86_64-unknown-linux-musl");
    config.features = vec!["unhealthy".into()];
    let a = package::build_artifact(&config, &Ui::silent()).unwrap();
    let entries = check_artifact(&a, "x86_64-unknown-linux-musl");
    assert_eq!(a.manifest.builder, "cargo");
    assert_eq!(a.manifest.features, ["unhealthy"]);
    assert_eq!(a.manifest.glibc_required, None);
    assert!(
        !has_interpreter(packed_binary(&entries)),
        "a static binary needs no loader"
    );
    assert_eq!(run_packed_binary(&entries), "0.1.0\n");
}

fn build_error(config: &Config) -> cargo_ship::Error {
    package::build_artifact(config, &Ui::silent()).expect_err("the build should fail")
}

#[test]
fn missing_asset_is_refused_before_compiling() {
    let project = Project::fixture("hello");
    let mut config = hello_config(&project, "x86_64-unknown-linux-gnu");
    config.assets.push("config/missing.toml".into());
    let e = build_error(&config);
    assert_eq!(
        e.to_string(),
        format!(
            "failed to pack hello v0.1.0: asset `config/missing.toml` in package.metadata.ship.assets does not \
             exist: {}",
            project.path("config/missing.toml").display()
        )
    );
    assert_eq!(
        e.help().unwrap(),
        "create it, or remove it from `assets` in the ship configuration"
    );
    assert_eq!(e.exit_code(), cargo_ship::error::exit::BUILD);
}

#[test]
fn assets_colliding_with_the_binary_or_manifest_are_refused() {
    let project = Project::fixture("hello");
    project.write("hello/readme.txt", "x");
    project.write("SHIP_MANIFEST.json", "{}");
    let mut config = hello_config(&project, "x86_64-unknown-linux-gnu");
    config.assets = vec!["hello/readme.txt".into()];
    assert_eq!(
        build_error(&config).to_string(),
        "failed to pack hello v0.1.0: asset `hello/readme.txt` in package.metadata.ship.assets would be \
         packed as `hello` at the release root, which is reserved for the binary"
    );
    config.assets = vec!["./SHIP_MANIFEST.json".into()];
    assert!(build_error(&config)
        .to_string()
        .ends_with("which is reserved for the manifest"));
    config.assets = vec!["../hello".into()];
    assert!(build_error(&config)
        .to_string()
        .contains("leaves the package root"));
}

#[test]
fn symlinks_in_assets_are_refused() {
    let project = Project::fixture("hello");
    std::os::unix::fs::symlink("index.html", project.path("static/alias.html")).unwrap();
    let config = hello_config(&project, "x86_64-unknown-linux-gnu");
    let e = build_error(&config);
    assert_eq!(
        e.to_string(),
        format!(
            "failed to pack hello v0.1.0: asset `static` contains a symlink, which is not packed: {} -> index.html",
            project.path("static/alias.html").display()
        )
    );
    assert!(e.help().unwrap().contains("replace symlinks"));
}

/// Issue #9: an asset under a symlinked directory (`ext/secret.txt`, `ext` -> a directory
/// outside the package) was packed from outside the package.
#[test]
fn assets_under_a_symlinked_directory_are_refused() {
    let project = Project::fixture("hello");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "not part of the package").unwrap();
    std::os::unix::fs::symlink(outside.path(), project.path("ext")).unwrap();
    let mut config = hello_config(&project, "x86_64-unknown-linux-gnu");
    config.assets = vec!["ext/secret.txt".into()];
    let e = build_error(&config);
    assert_eq!(
        e.to_string(),
        format!(
            "failed to pack hello v0.1.0: asset `ext/secret.txt` in package.metadata.ship.assets is under a \
             symlink, which is not followed: {} -> {}",
            project.path("ext").display(),
            outside.path().display()
        )
    );
    assert_eq!(
        e.help().unwrap(),
        "list assets by their real path inside the package, or replace the symlinked directory with a real one"
    );
}

#[test]
fn cross_without_a_container_engine_says_so() {
    if cargo_ship::build::container_engine().is_some() {
        // With an engine, cross is picked rather than refused; the refusal needs a machine without.
        let target = Target::parse("aarch64-unknown-linux-gnu").unwrap();
        let picked = cargo_ship::build::select_builder(
            BuilderKind::Cross,
            &target,
            "x86_64",
            cargo_ship::build::Probes {
                zigbuild: || false,
                engine: || true,
            },
        )
        .unwrap();
        assert_eq!(picked.builder, BuilderKind::Cross);
        return;
    }
    let project = Project::fixture("hello");
    let mut config = hello_config(&project, "aarch64-unknown-linux-gnu");
    config.builder = BuilderKind::Cross;
    let e = build_error(&config);
    assert_eq!(
        e.to_string(),
        "failed to compile hello v0.1.0 for aarch64-unknown-linux-gnu: builder `cross` needs a running \
         container engine, and neither `docker info` nor `podman info` succeeds on this machine; start \
         Docker or Podman, or use builder `zigbuild` (glibc pins, foreign -gnu targets) or `cargo`"
    );
    assert_eq!(e.exit_code(), cargo_ship::error::exit::BUILD);
}

/// `cargo ship prune` without an environment trims only the local artifact store.
#[test]
fn prune_without_an_environment_trims_the_local_store() {
    let p = crate::support::Project::fixture("hello");
    for v in ["0.1.0", "0.2.0", "0.3.0"] {
        p.set_version(v);
        let out = p.ship().args(["build", "-q"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let count = || {
        std::fs::read_dir(p.path("target/ship"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tar.zst")
            })
            .count()
    };
    assert_eq!(count(), 3);
    let out = p.ship().args(["prune", "--keep", "1"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(), 1);
    let left = std::fs::read_dir(p.path("target/ship"))
        .unwrap()
        .find_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with(".tar.zst").then_some(n)
        });
    assert!(
        left.unwrap().starts_with("hello-0.3.0-"),
        "the newest artifact is kept"
    );
}

/// Issue #18: a second build of unchanged inputs neither compiles nor packs (`Unchanged`, no
/// cargo run), and any change of a source, the environment (`SOURCE_DATE_EPOCH`) or the git
/// state is built again, into the artifact those inputs give.
#[test]
fn unchanged_inputs_skip_cargo_and_packing_and_any_change_builds_again() {
    let p = crate::support::Project::fixture("hello");
    let cache = p.dir.path().join("cache");
    let build = |epoch: Option<&str>| {
        let mut cmd = p.ship();
        cmd.args(["build", "-v", "--message-format", "json"])
            .env("XDG_CACHE_HOME", &cache)
            .env_remove("SOURCE_DATE_EPOCH");
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let events: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let verbs: Vec<String> = events
            .iter()
            .filter_map(|e| e["verb"].as_str().map(str::to_string))
            .collect();
        let sha = events
            .iter()
            .find(|e| e["event"] == "artifact")
            .and_then(|e| e["sha256"].as_str())
            .expect("an artifact event")
            .to_string();
        (verbs, sha, stderr)
    };
    // Recorded at once, though `target/` was just created and the sources copied a moment
    // ago (issue #18).
    let (verbs, first, _) = build(None);
    assert!(verbs.contains(&"Building".to_string()), "{verbs:?}");
    let (verbs, again, stderr) = build(None);
    assert_eq!(again, first);
    assert!(verbs.contains(&"Unchanged".to_string()), "{verbs:?}");
    assert!(!verbs.contains(&"Building".to_string()), "{verbs:?}");
    assert!(!stderr.contains("Finished"), "cargo did not run: {stderr}");

    // A source change is compiled and packed.
    p.edit(
        "src/main.rs",
        "println!(\"{VERSION}\");",
        "println!(\"{VERSION} edited\");",
    );
    let (verbs, edited, _) = build(None);
    assert!(verbs.contains(&"Building".to_string()), "{verbs:?}");
    assert_ne!(edited, first);
    let (verbs, same, _) = build(None);
    assert_eq!(
        (verbs.contains(&"Unchanged".to_string()), &same),
        (true, &edited)
    );

    // The environment: SOURCE_DATE_EPOCH goes into the manifest.
    let (verbs, dated, _) = build(Some("1234567890"));
    assert!(!verbs.contains(&"Unchanged".to_string()), "{verbs:?}");
    assert_ne!(dated, edited);

    // The git commit goes into the manifest too.
    p.write(".gitignore", "/target\n");
    git(&p.root, &["init", "-q"]);
    git(&p.root, &["add", "."]);
    git(&p.root, &["commit", "-q", "-m", "hello"]);
    let (verbs, committed, _) = build(None);
    assert!(!verbs.contains(&"Unchanged".to_string()), "{verbs:?}");
    assert_ne!(committed, edited);
    let (verbs, again, _) = build(None);
    assert_eq!(
        (verbs.contains(&"Unchanged".to_string()), &again),
        (true, &committed)
    );
    git(&p.root, &["commit", "-q", "--allow-empty", "-m", "empty"]);
    let (verbs, recommitted, _) = build(None);
    assert!(!verbs.contains(&"Unchanged".to_string()), "{verbs:?}");
    assert_ne!(recommitted, committed);
}

/// `cargo ship <args> -v --message-format json` in `p` with its own cache dir: the verbs of
/// the events, the artifact's sha256 and reuse, and stderr (where cargo writes).
fn ship_json(p: &Project, args: &[&str]) -> (Vec<String>, String, bool, String) {
    let out = p
        .ship()
        .args(args)
        .args(["-v", "--message-format", "json"])
        .env("XDG_CACHE_HOME", p.dir.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let verbs = events
        .iter()
        .filter_map(|e| e["verb"].as_str().map(str::to_string))
        .collect();
    let artifact = events
        .iter()
        .find(|e| e["event"] == "artifact")
        .expect("an artifact event");
    (
        verbs,
        artifact["sha256"].as_str().unwrap().to_string(),
        artifact["reused"] == true,
        stderr,
    )
}

/// The hello fixture with its `demo` environment on an ssh_config of its own (a dry run
/// connects nowhere).
fn hello_for_dry_runs() -> Project {
    let p = Project::fixture("hello");
    p.write("ssh_config", "Host demo1\n");
    p.edit(
        "Cargo.toml",
        "ssh_config = \"../../target/ship-demo/ssh_config\"",
        "ssh_config = \"ssh_config\"",
    );
    p
}

/// Issue #18: as people work (a fresh clone, then edit, `git commit`, build and deploy at
/// once), the deploy finds the artifact the build just made: `Fresh`, no cargo run, not packed
/// again, though the inputs changed a moment before the build recorded them.
#[test]
fn issue_18_a_deploy_right_after_commit_and_build_is_fresh() {
    let p = hello_for_dry_runs();
    p.git_init();
    assert!(!p.path("target").exists(), "a fresh clone");
    let deploy = ["deploy", "demo", "--dry-run"];
    for version in ["0.1.0", "0.2.0"] {
        if version != "0.1.0" {
            // The bump, its lock file, a commit: a clean tree (as the peers bench does).
            p.set_version(version);
            let lock = Command::new("cargo")
                .args(["generate-lockfile", "--offline", "-q"])
                .current_dir(&p.root)
                .status()
                .unwrap();
            assert!(lock.success());
            p.commit(version);
        }
        let (verbs, built, reused, _) = ship_json(&p, &["build"]);
        assert!(verbs.contains(&"Building".to_string()), "{verbs:?}");
        assert!(!reused);
        let (verbs, sha, reused, stderr) = ship_json(&p, &deploy);
        assert_eq!((reused, &sha), (true, &built), "{verbs:?}\n{stderr}");
        assert!(verbs.contains(&"Unchanged".to_string()), "{verbs:?}");
        assert!(!verbs.contains(&"Building".to_string()), "{verbs:?}");
        assert!(!stderr.contains("Finished"), "cargo did not run: {stderr}");
    }
    // What a person reads.
    let out = p
        .ship()
        .args(deploy)
        .env("XDG_CACHE_HOME", p.dir.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Fresh"), "{stderr}");
    assert!(!stderr.contains("Finished"), "{stderr}");
}

/// Issue #18: a change made right after a build recorded its inputs is seen, even one that
/// keeps the size and puts the modification time back; so are a new mode, a file added and
/// one removed (no git here: only the inputs' record can tell).
#[test]
fn issue_18_changes_right_after_the_record_are_built() {
    let p = hello_for_dry_runs();
    let (_, first, _, _) = ship_json(&p, &["build"]);
    let (_, again, reused, _) = ship_json(&p, &["build"]);
    assert_eq!((reused, &again), (true, &first));

    // Same size, same modification time, at once: an asset, then a source.
    let same_size_edit = |rel: &str, from: &str, to: &str| {
        assert_eq!(from.len(), to.len());
        let path = p.path(rel);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        p.edit(rel, from, to);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    let mut last = first;
    // `new_artifact`: `None` when cargo decides (it judges sources by modification time).
    let mut expect_build = |what: &str, new_artifact: Option<bool>| {
        let (verbs, sha, _, _) = ship_json(&p, &["build"]);
        assert!(verbs.contains(&"Building".to_string()), "{what}: {verbs:?}");
        if let Some(new) = new_artifact {
            assert_eq!(sha != last, new, "{what}");
        }
        last = sha.clone();
        let (_, again, reused, _) = ship_json(&p, &["build"]);
        assert_eq!((reused, &again), (true, &sha), "{what}: recorded at once");
    };
    same_size_edit("static/index.html", "hello from", "HELLO from");
    expect_build("an asset's content", Some(true));
    // cargo runs; whether it compiles again is its own call (by mtime, put back here).
    same_size_edit("src/main.rs", "listening on port", "LISTENING ON PORT");
    expect_build("a source's content", None);
    std::fs::set_permissions(
        p.path("static/index.html"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    expect_build("an asset's mode", Some(true));
    p.write("static/new.txt", "new\n");
    expect_build("a file added", Some(true));
    std::fs::remove_file(p.path("static/new.txt")).unwrap();
    expect_build("a file removed", Some(true));
    p.write("src/unused.rs", "\n");
    expect_build("a source file nobody uses, added", Some(false));
}
