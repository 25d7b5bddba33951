//! Compiling the binary to ship: plain `cargo build`, `cargo zigbuild` (glibc-pinned targets)
//! or `cross build` (foreign targets in a container).
//!
//! * [`select_builder`] is the pure `auto` decision, unit-tested on its own.
//! * [`build`] installs a missing rustup target, runs the builder with
//!   `--message-format=json-render-diagnostics` (cargo's human diagnostics go straight to
//!   stderr) and takes the binary's path from the `compiler-artifact` message, never by
//!   guessing. Stripping goes through cargo's own profile override
//!   (`CARGO_PROFILE_<PROFILE>_STRIP=symbols`), so the output stays deterministic.

use std::ffi::OsString;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{BuilderKind, Config};
use crate::target::Target;
use crate::ui::Ui;
use crate::{Error, Result};

/// Install hint for the zigbuild toolchain.
pub const ZIGBUILD_HELP: &str = "pip install ziglang cargo-zigbuild";

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The compiled executable, as reported by cargo's `compiler-artifact` message.
    pub binary: PathBuf,
    /// The builder actually used (never [`BuilderKind::Auto`]).
    pub builder: BuilderKind,
    /// First line of `rustc -vV`, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
    pub rustc: String,
    /// The features cargo reports as enabled for the binary (sorted; includes `default`
    /// when default features are on).
    pub features: Vec<String>,
    /// The jobs' other binaries (#21), by name: `[package.metadata.ship.jobs.*] bin`.
    pub extra: Vec<(String, PathBuf)>,
}

/// The outcome of the builder choice: which builder, and why (shown to the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The builder to run (never `Auto`).
    pub builder: BuilderKind,
    /// A short reason, e.g. `auto: native target`.
    pub reason: String,
}

/// What [`select_builder`] may probe on this machine; each probe is only called when the
/// answer depends on it (a foreign target under `auto`, or an explicit `cross`).
pub struct Probes<Z, E> {
    /// cargo-zigbuild and zig are installed (see [`zigbuild_available`]).
    pub zigbuild: Z,
    /// A container engine answers (see [`container_engine`]).
    pub engine: E,
}

/// Picks the builder for `target` on a machine whose CPU architecture is `host_arch`
/// (`std::env::consts::ARCH` spelling).
///
/// `auto`: zigbuild when the target has a glibc pin. For a foreign architecture (an aarch64
/// server built on an x86_64 laptop), a builder that can link for it: zigbuild when it is
/// installed (zig links any Linux target, glibc or musl, with no container), else cross when a
/// container engine runs, else plain cargo (which then needs a linker configured for the
/// target, and says so if the link fails). Plain cargo for a native target.
/// An error message (what is wrong and what to do) comes back for impossible combinations.
pub fn select_builder(
    requested: BuilderKind,
    target: &Target,
    host_arch: &str,
    probes: Probes<impl FnOnce() -> bool, impl FnOnce() -> bool>,
) -> std::result::Result<Selection, String> {
    let engine_running = probes.engine;
    let sel = |builder, reason: &str| {
        Ok(Selection {
            builder,
            reason: reason.to_string(),
        })
    };
    match requested {
        BuilderKind::Auto => {
            if target.glibc.is_some() {
                sel(BuilderKind::Zigbuild, "auto: glibc pin")
            } else if !same_arch(host_arch, target.arch()) {
                let foreign = format!("auto: {} target on this {host_arch} machine", target.arch());
                if (probes.zigbuild)() {
                    sel(BuilderKind::Zigbuild, &format!("{foreign}, zig links it"))
                } else if engine_running() {
                    sel(
                        BuilderKind::Cross,
                        &format!("{foreign}, no cargo-zigbuild, container engine running"),
                    )
                } else {
                    sel(
                        BuilderKind::Cargo,
                        &format!(
                            "{foreign}, neither cargo-zigbuild nor a container engine for cross: \
                             plain cargo needs a linker for it"
                        ),
                    )
                }
            } else {
                sel(BuilderKind::Cargo, "auto: native target")
            }
        }
        BuilderKind::Cargo if target.glibc.is_some() => Err(format!(
            "plain cargo cannot pin glibc (target `{target}`); use builder `zigbuild` or `auto`, \
             or drop the `.{}` suffix",
            target.glibc.as_deref().unwrap_or_default()
        )),
        BuilderKind::Cross if target.glibc.is_some() => Err(format!(
            "cross cannot pin glibc (target `{target}`); use builder `zigbuild` or `auto`"
        )),
        BuilderKind::Cross if !engine_running() => Err(
            "builder `cross` needs a running container engine, and neither `docker info` nor \
             `podman info` succeeds on this machine; start Docker or Podman, or use builder \
             `zigbuild` (glibc pins, foreign -gnu targets) or `cargo`"
                .to_string(),
        ),
        other => sel(other, "configured"),
    }
}

/// True when `config` is built by plain cargo without probing anything: configured so, or
/// `auto` for a target of this machine's architecture without a glibc pin.
pub fn plain_cargo(config: &Config) -> bool {
    match config.builder {
        BuilderKind::Cargo => true,
        BuilderKind::Auto => {
            config.target.glibc.is_none() && same_arch(std::env::consts::ARCH, config.target.arch())
        }
        BuilderKind::Zigbuild | BuilderKind::Cross => false,
    }
}

/// True when code for `target_arch` (the triple's first part) runs natively on `host_arch`.
fn same_arch(host_arch: &str, target_arch: &str) -> bool {
    let norm = |a: &str| -> String {
        match a {
            "i386" | "i486" | "i586" | "i686" | "x86" => "x86".into(),
            a if a.starts_with("arm") || a.starts_with("thumb") => "arm".into(),
            a => a.into(),
        }
    };
    norm(host_arch) == norm(target_arch)
}

/// The name of a container engine that answers (`docker` or `podman`), honouring
/// `CROSS_CONTAINER_ENGINE` as cross does. Each probe is given 10 seconds.
pub fn container_engine() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("CROSS_CONTAINER_ENGINE") {
        Ok(e) if !e.trim().is_empty() => vec![e.trim().to_string()],
        _ => vec!["docker".into(), "podman".into()],
    };
    candidates.into_iter().find(|engine| {
        let mut cmd = Command::new(engine);
        cmd.arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        succeeds_within(cmd, Duration::from_secs(10))
    })
}

fn succeeds_within(mut cmd: Command, limit: Duration) -> bool {
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The cargo to run: `$CARGO` when set (cargo sets it for subcommands), else `cargo`.
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cargo".into())
}

fn rustc_program() -> OsString {
    std::env::var_os("RUSTC")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "rustc".into())
}

/// First line of `rustc -vV` run in `dir` (so a `rust-toolchain.toml` there applies).
pub fn rustc_version(dir: &Path) -> Result<String> {
    let out = run_captured(
        Command::new(rustc_program()).arg("-vV").current_dir(dir),
        "query the rustc version",
    )?;
    let first = out.lines().next().unwrap_or_default().trim().to_string();
    if !first.starts_with("rustc ") {
        return Err(Error::Build {
            purpose: "query the rustc version".into(),
            detail: format!("`rustc -vV` printed an unexpected first line: {first:?}"),
            help: Some("check that `rustc` on PATH (or $RUSTC) is a Rust compiler".into()),
        });
    }
    Ok(first)
}

fn run_captured(cmd: &mut Command, purpose: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Build {
            purpose: purpose.into(),
            detail: format!("cannot run `{}`: {e}", cmd.get_program().to_string_lossy()),
            help: None,
        })?;
    if !out.status.success() {
        return Err(Error::Build {
            purpose: purpose.into(),
            detail: format!(
                "`{}` failed ({}): {}",
                describe(cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            help: None,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Adds the rustup target for `triple` when the active toolchain lacks its standard library.
/// Returns whether it had to install it.
pub fn ensure_rustup_target(triple: &str, dir: &Path, ui: &Ui) -> Result<bool> {
    let sysroot = run_captured(
        Command::new(rustc_program())
            .args(["--print", "sysroot"])
            .current_dir(dir),
        "find the Rust sysroot",
    )?;
    let lib = Path::new(sysroot.trim())
        .join("lib")
        .join("rustlib")
        .join(triple)
        .join("lib");
    if lib.is_dir() {
        return Ok(false);
    }
    ui.status("Installing", format!("rustup target {triple}"));
    let purpose = format!("install the rustup target {triple}");
    let help = Some(format!(
        "run `rustup target add {triple}` yourself and try again"
    ));
    let out = Command::new("rustup")
        .args(["target", "add", triple])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Build {
            purpose: purpose.clone(),
            detail: format!("cannot run `rustup`: {e}"),
            help: Some(format!(
                "install the standard library for {triple} (with rustup: `rustup target add {triple}`)"
            )),
        })?;
    if !out.status.success() {
        return Err(Error::Build {
            purpose,
            detail: format!(
                "`rustup target add {triple}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            help,
        });
    }
    Ok(true)
}

/// The project's venv for zig tools: `$SHIP_VENV`, else `~/.cache/cargo-ship/venv`
/// (where `.ci/setup` installs them).
pub fn venv_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("SHIP_VENV").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/cargo-ship/venv"))
}

fn find_on_path(name: &str, path: &OsString) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where cargo-zigbuild lives, and the PATH the child gets (the venv's bin dir in front).
struct Zigbuild {
    program: PathBuf,
    path: OsString,
}

fn find_zigbuild(purpose: &str) -> Result<Zigbuild> {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let venv_bin = venv_dir().map(|v| v.join("bin")).filter(|b| b.is_dir());
    let mut dirs: Vec<PathBuf> = venv_bin.iter().cloned().collect();
    dirs.extend(std::env::split_paths(&current));
    let path = std::env::join_paths(dirs).unwrap_or(current.clone());
    let missing = |what: &str| Error::Build {
        purpose: purpose.to_string(),
        detail: format!("{what} is not installed (looked on PATH and in the venv's bin directory)"),
        help: Some(format!(
            "{ZIGBUILD_HELP} (e.g. into a venv at ~/.cache/cargo-ship/venv, as .ci/setup does)"
        )),
    };
    let program = find_on_path("cargo-zigbuild", &current)
        .or_else(|| {
            venv_bin
                .as_ref()
                .map(|b| b.join("cargo-zigbuild"))
                .filter(|p| is_executable(p))
        })
        .ok_or_else(|| missing("cargo-zigbuild"))?;
    // cargo-zigbuild looks for zig as `$ZIG_COMMAND`, `zig`, then `python3 -m ziglang`.
    let has_zig = std::env::var_os("ZIG_COMMAND").is_some_and(|z| !z.is_empty())
        || find_on_path("zig", &path).is_some()
        || {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "ziglang", "version"]).env("PATH", &path);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            succeeds_within(cmd, Duration::from_secs(20))
        };
    if !has_zig {
        return Err(missing("zig"));
    }
    Ok(Zigbuild { program, path })
}

/// True when cargo-zigbuild and zig are installed (on PATH or in the project's venv).
pub fn zigbuild_available(purpose: &str) -> bool {
    find_zigbuild(purpose).is_ok()
}

/// The cargo arguments shared by every builder (after `build`), for `config`.
pub fn cargo_args(config: &Config, target_arg: &str) -> Vec<OsString> {
    cargo_args_for(&[config], target_arg)
}

/// [`cargo_args`] for several packages built in one invocation (`-p a --bin a -p b --bin b`);
/// everything else comes from the first, which [`same_build`] checked they share.
fn cargo_args_for(configs: &[&Config], target_arg: &str) -> Vec<OsString> {
    let config = configs[0];
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &str| args.push(a.into());
    if config.profile == "release" {
        push("--release");
    } else {
        push("--profile");
        push(&config.profile);
    }
    push("--target");
    push(target_arg);
    push("--manifest-path");
    args.push(config.manifest_path.clone().into_os_string());
    let mut push = |a: &str| args.push(a.into());
    for c in configs {
        push("-p");
        push(&c.package);
        for bin in c.bins() {
            push("--bin");
            push(&bin);
        }
    }
    let features = requested_features(config);
    if !features.is_empty() {
        push("--features");
        push(&features.join(","));
    }
    if config.all_features {
        push("--all-features");
    }
    if config.no_default_features {
        push("--no-default-features");
    }
    push("--target-dir");
    args.push(config.target_dir.clone().into_os_string());
    args.push("--message-format=json-render-diagnostics".into());
    args
}

/// The configured features, split on commas and spaces as cargo does, sorted, deduplicated.
pub fn requested_features(config: &Config) -> Vec<String> {
    let mut f: Vec<String> = config
        .features
        .iter()
        .flat_map(|s| s.split([',', ' ']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    f.sort();
    f.dedup();
    f
}

/// `CARGO_PROFILE_<PROFILE>_STRIP` for a profile name.
pub fn strip_env_var(profile: &str) -> String {
    format!(
        "CARGO_PROFILE_{}_STRIP",
        profile.to_ascii_uppercase().replace('-', "_")
    )
}

/// Compiles `config.bin` for `config.target` with the configured builder and returns the
/// executable's path as cargo reports it.
pub fn build(config: &Config, ui: &Ui) -> Result<BuildOutput> {
    build_together(&[config], ui).map(|mut v| v.remove(0))
}

/// True when `a` and `b` can be compiled by one builder invocation: same workspace target
/// dir, target, profile, builder, feature flags and strip setting.
pub fn same_build(a: &Config, b: &Config) -> bool {
    a.target_dir == b.target_dir
        && a.target == b.target
        && a.profile == b.profile
        && a.builder == b.builder
        && requested_features(a) == requested_features(b)
        && a.all_features == b.all_features
        && a.no_default_features == b.no_default_features
        && a.strip == b.strip
}

/// Compiles the binaries of several packages of one workspace in one builder invocation
/// (cargo builds their crates in parallel, each dependency once); they must all be
/// [`same_build`] as the first. Returns one output per config, in order.
pub fn build_together(configs: &[&Config], ui: &Ui) -> Result<Vec<BuildOutput>> {
    let config = configs[0];
    debug_assert!(configs.iter().all(|c| same_build(config, c)));
    let what = match configs {
        [one] => format!("{} v{} for {}", one.bin, one.version, one.target),
        many => format!(
            "{} for {}",
            many.iter()
                .map(|c| format!("{} v{}", c.bin, c.version))
                .collect::<Vec<_>>()
                .join(", "),
            config.target
        ),
    };
    let purpose = format!("compile {what}");
    let selection = select_builder(
        config.builder,
        &config.target,
        std::env::consts::ARCH,
        Probes {
            zigbuild: || zigbuild_available(&purpose),
            engine: || container_engine().is_some(),
        },
    )
    .map_err(|detail| Error::Build {
        purpose: purpose.clone(),
        detail,
        help: None,
    })?;

    let rustc = rustc_version(&config.package_root)?;

    let (mut cmd, target_arg) = match selection.builder {
        BuilderKind::Cargo | BuilderKind::Auto => {
            ensure_rustup_target(&config.target.triple, &config.package_root, ui)?;
            let mut cmd = Command::new(cargo_program());
            cmd.arg("build");
            (cmd, config.target.triple.clone())
        }
        BuilderKind::Zigbuild => {
            let zig = find_zigbuild(&purpose)?;
            ensure_rustup_target(&config.target.triple, &config.package_root, ui)?;
            let mut cmd = Command::new(&zig.program);
            cmd.arg("zigbuild")
                .env("PATH", &zig.path)
                .env("CARGO", cargo_program());
            // cargo-zigbuild takes the pin as part of the target.
            (cmd, config.target.to_string())
        }
        BuilderKind::Cross => {
            let program = find_on_path("cross", &std::env::var_os("PATH").unwrap_or_default())
                .ok_or_else(|| Error::Build {
                    purpose: purpose.clone(),
                    detail: "`cross` is not installed".into(),
                    help: Some(
                        "cargo install cross --git https://github.com/cross-rs/cross".into(),
                    ),
                })?;
            // cross adds the rustup target itself and reads Cross.toml from the package root.
            let mut cmd = Command::new(program);
            cmd.arg("build");
            (cmd, config.target.triple.clone())
        }
    };
    cmd.args(cargo_args_for(configs, &target_arg))
        .current_dir(&config.package_root);
    // Every build script and proc macro of every dependency runs with this environment: it
    // never holds the deploy agent (given to ssh alone) nor the secrets' values (issue #16).
    cmd.env_remove("CARGO_SHIP_SSH_AUTH_SOCK");
    for c in configs {
        for name in &c.systemd.secrets {
            cmd.env_remove(name);
        }
    }
    // Nor a private key, whatever its name (a runner may export an action's inputs).
    for (k, v) in std::env::vars_os() {
        if v.to_string_lossy().contains("PRIVATE KEY-----") {
            cmd.env_remove(k);
        }
    }
    if config.strip {
        cmd.env(strip_env_var(&config.profile), "symbols");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());

    let builder_name = builder_name(selection.builder);
    ui.status(
        "Building",
        format!("{what} with {builder_name} ({})", selection.reason),
    );
    ui.detail("Running", describe(&cmd));

    let mut child = cmd.spawn().map_err(|e| Error::Build {
        purpose: purpose.clone(),
        detail: format!("cannot run `{}`: {e}", cmd.get_program().to_string_lossy()),
        help: Some("install Rust with rustup (https://rustup.rs)".into()),
    })?;
    let mut found: Vec<Option<(PathBuf, Vec<String>)>> = vec![None; configs.len()];
    let mut extra: Vec<Vec<(String, PathBuf)>> = vec![Vec::new(); configs.len()];
    let mut read_error = None;
    if let Some(stdout) = child.stdout.take() {
        for message in cargo_metadata::Message::parse_stream(BufReader::new(stdout)) {
            match message {
                Ok(cargo_metadata::Message::CompilerArtifact(a)) if a.target.is_bin() => {
                    if let Some(i) = configs.iter().position(|c| {
                        a.target.name != c.bin
                            && c.bins().contains(&a.target.name)
                            && (configs.len() == 1
                                || a.manifest_path.as_std_path() == c.manifest_path)
                    }) {
                        if let Some(exe) = &a.executable {
                            extra[i].push((a.target.name.clone(), exe.clone().into_std_path_buf()));
                        }
                        continue;
                    }
                    let Some(i) = configs.iter().position(|c| {
                        a.target.name == c.bin
                            && (configs.len() == 1
                                || a.manifest_path.as_std_path() == c.manifest_path)
                    }) else {
                        continue;
                    };
                    if let Some(exe) = a.executable {
                        found[i] = Some((exe.into_std_path_buf(), a.features));
                    }
                }
                Ok(_) => {}
                Err(e) => read_error = Some(e),
            }
        }
    }
    let status = child.wait().map_err(|e| Error::Build {
        purpose: purpose.clone(),
        detail: format!("waiting for {builder_name} failed: {e}"),
        help: None,
    })?;
    if !status.success() {
        let help = match (selection.builder, same_arch(std::env::consts::ARCH, config.target.arch())) {
            (BuilderKind::Cargo, false) => Some(
                "a foreign target needs a linker for it: use builder `zigbuild` (pip install ziglang \
                 cargo-zigbuild), `cross` with a running container engine, or configure \
                 `target.<triple>.linker` in .cargo/config.toml"
                    .into(),
            ),
            _ => Some("fix the errors reported above and run the command again".into()),
        };
        return Err(Error::Build {
            purpose,
            detail: format!("{builder_name} build exited with {status}"),
            help,
        });
    }
    if let Some(e) = read_error {
        return Err(Error::Build {
            purpose,
            detail: format!("cannot read cargo's JSON messages: {e}"),
            help: None,
        });
    }
    let mut outputs = Vec::new();
    for ((config, found), mut extra) in configs.iter().zip(found).zip(extra) {
        for bin in config.bins().iter().skip(1) {
            let Some((_, path)) = extra.iter_mut().find(|(n, _)| n == bin) else {
                return Err(Error::Build {
                    purpose: purpose.clone(),
                    detail: format!("cargo reported no executable for the job binary `{bin}`"),
                    help: Some(format!(
                        "check that package `{}` has a `[[bin]]` named `{bin}`",
                        config.package
                    )),
                });
            };
            if selection.builder == BuilderKind::Cross && !path.exists() {
                if let Ok(rest) = path.strip_prefix("/target") {
                    *path = config.target_dir.join(rest);
                }
            }
        }
        let (mut binary, mut features) = found.ok_or_else(|| Error::Build {
            purpose: purpose.clone(),
            detail: format!(
                "cargo reported no executable for the binary `{}`",
                config.bin
            ),
            help: Some(format!(
                "check that package `{}` has a `[[bin]]` named `{}`",
                config.package, config.bin
            )),
        })?;
        if selection.builder == BuilderKind::Cross && !binary.exists() {
            // Older cross versions report paths inside the container (`/target/...`).
            if let Ok(rest) = binary.strip_prefix("/target") {
                binary = config.target_dir.join(rest);
            }
        }
        if !binary.is_file() {
            return Err(Error::Build {
                purpose,
                detail: format!(
                    "cargo reported `{}`, which does not exist",
                    binary.display()
                ),
                help: None,
            });
        }
        features.sort();
        features.dedup();
        outputs.push(BuildOutput {
            binary,
            builder: selection.builder,
            rustc: rustc.clone(),
            features,
            extra,
        });
    }
    Ok(outputs)
}

/// The builder's name as written in the manifest and the config (`cargo`, `zigbuild`, `cross`).
pub fn builder_name(kind: BuilderKind) -> &'static str {
    match kind {
        BuilderKind::Auto => "auto",
        BuilderKind::Cargo => "cargo",
        BuilderKind::Zigbuild => "zigbuild",
        BuilderKind::Cross => "cross",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace deploy compiles its services in one invocation: every `-p`/`--bin` pair,
    /// the rest once; services that differ in what they build stay apart.
    #[test]
    fn several_packages_in_one_invocation() {
        let a = crate::config::tests_support::config_from("", "");
        let mut b = a.clone();
        b.package = "worker".into();
        b.bin = "worker".into();
        let args: Vec<String> = cargo_args_for(&[&a, &b], "x86_64-unknown-linux-gnu")
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let text = args.join(" ");
        assert!(
            text.contains("-p hello --bin hello -p worker --bin worker --target-dir"),
            "{text}"
        );
        assert_eq!(args.iter().filter(|a| *a == "--release").count(), 1);
        assert!(same_build(&a, &b));
        b.profile = "dev".into();
        assert!(!same_build(&a, &b));
    }

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    /// Probes answering `zig` and `engine` (zigbuild installed, container engine running).
    fn probes(zig: bool, engine: bool) -> Probes<impl FnOnce() -> bool, impl FnOnce() -> bool> {
        Probes {
            zigbuild: move || zig,
            engine: move || engine,
        }
    }

    /// Probes that fail the test when asked: the answer must not depend on them.
    fn no_probes() -> Probes<impl FnOnce() -> bool, impl FnOnce() -> bool> {
        Probes {
            zigbuild: || panic!("zigbuild probed"),
            engine: || panic!("container engine probed"),
        }
    }

    fn pick(
        req: BuilderKind,
        target: &str,
        host: &str,
        engine: bool,
    ) -> std::result::Result<BuilderKind, String> {
        select_builder(req, &t(target), host, probes(false, engine)).map(|s| s.builder)
    }

    #[test]
    fn auto_picks_zigbuild_for_a_glibc_pin() {
        let s = select_builder(
            BuilderKind::Auto,
            &t("x86_64-unknown-linux-gnu.2.17"),
            "x86_64",
            no_probes(),
        )
        .unwrap();
        assert_eq!(s.builder, BuilderKind::Zigbuild);
        assert_eq!(s.reason, "auto: glibc pin");
        assert_eq!(
            pick(
                BuilderKind::Auto,
                "aarch64-unknown-linux-gnu.2.28",
                "x86_64",
                true
            ),
            Ok(BuilderKind::Zigbuild)
        );
    }

    #[test]
    fn auto_picks_cargo_for_native_targets_without_probing_the_engine() {
        for target in ["x86_64-unknown-linux-gnu", "x86_64-unknown-linux-musl"] {
            let s = select_builder(BuilderKind::Auto, &t(target), "x86_64", no_probes()).unwrap();
            assert_eq!(s.builder, BuilderKind::Cargo);
            assert_eq!(s.reason, "auto: native target");
        }
        assert_eq!(
            pick(
                BuilderKind::Auto,
                "aarch64-unknown-linux-musl",
                "aarch64",
                true
            ),
            Ok(BuilderKind::Cargo)
        );
        assert_eq!(
            pick(BuilderKind::Auto, "i686-unknown-linux-gnu", "x86", true),
            Ok(BuilderKind::Cargo)
        );
        assert_eq!(
            pick(
                BuilderKind::Auto,
                "armv7-unknown-linux-gnueabihf",
                "arm",
                true
            ),
            Ok(BuilderKind::Cargo)
        );
    }

    #[test]
    fn auto_picks_zigbuild_for_foreign_targets_when_it_is_installed() {
        for target in ["aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl"] {
            let s = select_builder(
                BuilderKind::Auto,
                &t(target),
                "x86_64",
                Probes {
                    zigbuild: || true,
                    engine: || panic!("zigbuild is there: no engine probe"),
                },
            )
            .unwrap();
            assert_eq!(s.builder, BuilderKind::Zigbuild, "{target}");
            assert_eq!(
                s.reason,
                "auto: aarch64 target on this x86_64 machine, zig links it"
            );
        }
        let s = select_builder(
            BuilderKind::Auto,
            &t("x86_64-unknown-linux-gnu"),
            "aarch64",
            probes(true, true),
        )
        .unwrap();
        assert_eq!(s.builder, BuilderKind::Zigbuild);
    }

    #[test]
    fn auto_picks_cross_for_foreign_targets_without_zigbuild_only_with_an_engine() {
        let s = select_builder(
            BuilderKind::Auto,
            &t("aarch64-unknown-linux-gnu"),
            "x86_64",
            probes(false, true),
        )
        .unwrap();
        assert_eq!(s.builder, BuilderKind::Cross);
        assert_eq!(
            s.reason,
            "auto: aarch64 target on this x86_64 machine, no cargo-zigbuild, container engine running"
        );
        let s = select_builder(
            BuilderKind::Auto,
            &t("aarch64-unknown-linux-gnu"),
            "x86_64",
            probes(false, false),
        )
        .unwrap();
        assert_eq!(s.builder, BuilderKind::Cargo);
        assert_eq!(
            s.reason,
            "auto: aarch64 target on this x86_64 machine, neither cargo-zigbuild nor a container \
             engine for cross: plain cargo needs a linker for it"
        );
    }

    #[test]
    fn explicit_builders() {
        assert_eq!(
            pick(
                BuilderKind::Cargo,
                "aarch64-unknown-linux-gnu",
                "x86_64",
                false
            ),
            Ok(BuilderKind::Cargo)
        );
        assert_eq!(
            pick(
                BuilderKind::Zigbuild,
                "x86_64-unknown-linux-musl",
                "x86_64",
                false
            ),
            Ok(BuilderKind::Zigbuild)
        );
        assert_eq!(
            pick(
                BuilderKind::Cross,
                "aarch64-unknown-linux-gnu",
                "x86_64",
                true
            ),
            Ok(BuilderKind::Cross)
        );
        let no_engine = pick(
            BuilderKind::Cross,
            "aarch64-unknown-linux-gnu",
            "x86_64",
            false,
        )
        .unwrap_err();
        assert!(
            no_engine.contains("container engine") && no_engine.contains("docker info"),
            "{no_engine}"
        );
        let pinned = pick(
            BuilderKind::Cargo,
            "x86_64-unknown-linux-gnu.2.17",
            "x86_64",
            false,
        )
        .unwrap_err();
        assert!(pinned.contains("zigbuild"), "{pinned}");
        assert!(pick(
            BuilderKind::Cross,
            "x86_64-unknown-linux-gnu.2.17",
            "x86_64",
            true
        )
        .is_err());
    }

    #[test]
    fn strip_variable_names() {
        assert_eq!(strip_env_var("release"), "CARGO_PROFILE_RELEASE_STRIP");
        assert_eq!(
            strip_env_var("release-lto"),
            "CARGO_PROFILE_RELEASE_LTO_STRIP"
        );
    }
}
