//! Turns merged layers into a complete [`Config`], or the first precise error; and renders a
//! resolved [`Config`] for `cargo ship config show`.
//!
//! Layers, lowest first: `[workspace.metadata.ship]`, `[package.metadata.ship]`, the chosen
//! environment's table (workspace's, then package's), then command-line flags. Defaults are
//! applied once, after merging, and every check names the file, the full key path, the
//! line:column and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::layer::{closest, BatchValue, HealthLayer, Layer, Strings, SystemdLayer, DURATION};
use super::source::{Origin, Source, Val};
use super::{
    Batch, Budget, BuilderKind, CanaryConfig, CanaryHosts, Config, Environment, HealthConfig,
    HooksConfig, HostSpec, JobConfig, JobHosts, LoadOptions, RestartStrategy, SystemdConfig,
    Unreachable,
};
use crate::target::Target;
use crate::workspace::{self, list, Package};
use crate::{Error, Result};

/// The file cargo-ship writes into every release root.
const MANIFEST_FILE: &str = "SHIP_MANIFEST.json";

/// Reads Cargo.toml (via cargo_metadata and its text, for positions), merges the workspace,
/// package and environment layers with the command line, and validates the result.
pub fn load(opts: &LoadOptions) -> Result<Config> {
    let package = workspace::find(opts.manifest_path.as_deref(), opts.package.as_deref())?;
    load_package(&package, opts)
}

/// [`load`] for every package the command line selects (see [`workspace::select`]): one, or
/// the services of a workspace deploy, in their switch order.
pub fn load_selected(sel: &workspace::Selection<'_>, opts: &LoadOptions) -> Result<Vec<Config>> {
    workspace::select(sel)?
        .iter()
        .map(|p| load_package(p, opts))
        .collect()
}

/// What makes two services collide on a host they share, as the end of "both run on <host>
/// with ...": the same deploy_to or unit, one deploy_to inside the other, a unit that is the
/// other's dead-man's switch (`x-guard` beside `x`: the guard drop-in setup writes for one would
/// apply to the other's service), or units that share a sudoers file (`foo.bar` and `foo_bar`:
/// sudo's file names turn `.` into `_`). Issue #16 added the last three; a unit named like
/// another's scheduled job (`x-job-y` beside `x`, issue #21) collides too.
pub fn collision(a: &Config, b: &Config) -> Option<String> {
    let (ua, ub) = (&a.systemd.unit, &b.systemd.unit);
    let (pa, pb) = (
        std::path::Path::new(&a.deploy_to),
        std::path::Path::new(&b.deploy_to),
    );
    let sudoers = crate::systemd::privilege::sudoers_name;
    if a.deploy_to == b.deploy_to {
        Some(format!("the same deploy_to {}", a.deploy_to))
    } else if ua == ub {
        Some(format!("the same unit {ua}"))
    } else if pa.starts_with(pb) || pb.starts_with(pa) {
        Some(format!(
            "deploy_to {} and {}, one inside the other",
            a.deploy_to, b.deploy_to
        ))
    } else if *ub == format!("{ua}-guard") || *ua == format!("{ub}-guard") {
        let (owner, guard) = if *ub == format!("{ua}-guard") {
            (ua, ub)
        } else {
            (ub, ua)
        };
        Some(format!(
            "units {owner} and {guard}, but {guard}.service is the dead-man's switch of unit {owner}"
        ))
    } else if ub.starts_with(&format!("{ua}-job-")) || ua.starts_with(&format!("{ub}-job-")) {
        let (owner, other) = if ub.starts_with(&format!("{ua}-job-")) {
            (ua, ub)
        } else {
            (ub, ua)
        };
        Some(format!(
            "units {owner} and {other}, but {owner}-job-* names the scheduled jobs of unit {owner}"
        ))
    } else if sudoers(ua) == sudoers(ub) {
        Some(format!(
            "units {ua} and {ub}, which would share the sudoers file /etc/sudoers.d/cargo-ship-{} (sudo's file names turn `.` into `_`)",
            sudoers(ua)
        ))
    } else {
        None
    }
}

/// [`load`] for a package already found (`opts.manifest_path` and `opts.package` are ignored).
pub(crate) fn load_package(package: &Package, opts: &LoadOptions) -> Result<Config> {
    let pkg_src = Source::read(&package.manifest_path)?;
    let mut layer = if package.workspace_manifest == package.manifest_path {
        Layer::from_manifest(&pkg_src, "workspace")?
    } else {
        match Source::read(&package.workspace_manifest) {
            Ok(ws_src) => Layer::from_manifest(&ws_src, "workspace")?,
            // A workspace root cargo could read but we cannot is unexpected; report it.
            Err(e) => return Err(e),
        }
    };
    layer.merge(&Layer::from_manifest(&pkg_src, "package")?);
    let environments = std::mem::take(&mut layer.environments);

    let ship_at = {
        let span = pkg_src
            .get(&["package", "metadata", "ship"])
            .and_then(|(n, k)| n.span().or(k));
        pkg_src.origin("package.metadata.ship", span)
    };

    let environment = match &opts.environment {
        None => None,
        Some(name) => match environments.get(name) {
            Some(env) => {
                layer.merge(&env.layer);
                Some((name.as_str(), env.at.clone()))
            }
            None => {
                return Err(unknown_environment(
                    name,
                    package,
                    &environments.keys().collect::<Vec<_>>(),
                ))
            }
        },
    };
    // Per-host overrides (issue #11): each host's table on top of the environment's, then the
    // command line, resolved and validated like the environment itself.
    let per_host = std::mem::take(&mut layer.per_host);
    let mut host_layers = Vec::new();
    for (host, h) in &per_host {
        let mut hl = layer.clone();
        hl.merge(&h.layer);
        hl.merge(&cli_layer(opts));
        host_layers.push((host, h, hl));
    }
    layer.merge(&cli_layer(opts));
    let mut config = resolve(package, &layer, environment.clone(), &ship_at, opts)?;
    if let Some(env) = &config.environment {
        let written: Vec<String> = layer
            .hosts
            .as_ref()
            .map(|l| l.value.iter().map(|v| v.value.clone()).collect())
            .unwrap_or_default();
        let spec_of = |h: &str| {
            written
                .iter()
                .position(|w| w == h)
                .and_then(|i| env.hosts.get(i))
                .map(|s| s.to_string())
        };
        for (host, h, hl) in host_layers {
            if let Some(d) = &h.layer.deploy_to {
                return Err(d.at.error(
                    "deploy_to cannot differ between the hosts of an environment (the deploy lock and the releases live there)",
                    Some("set it in the environment's table instead".into()),
                ));
            }
            let Some(spec) = spec_of(host) else {
                return Err(h.at.error(
                    format!("`{host}` is not a host of environment `{}`", env.name),
                    Some(format!(
                        "write the host exactly as in `hosts`: {}",
                        written.join(", ")
                    )),
                ));
            };
            let host_config = resolve(package, &hl, environment.clone(), &ship_at, opts)?;
            config.per_host.insert(spec, host_config);
        }
        if let Some(once) = &layer.hooks.once_on {
            match spec_of(&once.value) {
                Some(spec) => config.hooks.once_on = Some(spec),
                None => {
                    return Err(once.at.error(
                        format!(
                            "`{}` is not a host of environment `{}`",
                            once.value, env.name
                        ),
                        Some(format!(
                            "write the host exactly as in `hosts`: {}",
                            written.join(", ")
                        )),
                    ))
                }
            }
        }
        let once_on = config.hooks.once_on.clone();
        for c in config.per_host.values_mut() {
            c.hooks.once_on = once_on.clone();
        }
    }
    Ok(config)
}

/// `targets = [...]`: each a valid triple, at least one, at most one per architecture (a host
/// gets the artifact for its `uname -m`, which must be unambiguous). Empty when not set.
fn resolve_targets(l: &Layer) -> Result<Vec<Target>> {
    let Some(list) = &l.targets else {
        return Ok(Vec::new());
    };
    if list.value.is_empty() {
        return Err(list.at.error(
            "expected at least one target triple, found an empty array",
            Some("list one target per host architecture, e.g. targets = [\"x86_64-unknown-linux-gnu\", \"aarch64-unknown-linux-gnu\"]".into()),
        ));
    }
    let mut out: Vec<Target> = Vec::new();
    for v in &list.value {
        let t = Target::parse(&v.value).map_err(|e| v.at.error(format!("expected {e}"), None))?;
        if let Some(other) = out.iter().find(|o| o.uname_machine() == t.uname_machine()) {
            return Err(v.at.error(
                format!(
                    "expected one target per host architecture, found `{other}` and `{t}`, which both run on {}",
                    t.uname_machine()
                ),
                Some("a host gets the artifact of its architecture (`uname -m`); keep one of them".into()),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

fn cli_layer(opts: &LoadOptions) -> Layer {
    Layer {
        target: opts
            .target
            .clone()
            .map(|t| Val::new(t, Origin::flag("--target"))),
        profile: opts
            .profile
            .clone()
            .map(|p| Val::new(p, Origin::flag("--profile"))),
        ..Layer::default()
    }
}

fn unknown_environment(name: &str, package: &Package, known: &[&String]) -> Error {
    if known.is_empty() {
        return Error::usage(
            format!("no environment `{name}`: package `{}` has no environments configured", package.name),
            Some(format!(
                "add one to {}:\n\n    [package.metadata.ship.environments.{name}]\n    hosts = [\"deploy@web1.example.com\"]",
                package.manifest_path.display()
            )),
        );
    }
    let names: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
    let help = match closest(name, &names) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!(
            "use one of them, or add `[package.metadata.ship.environments.{name}]` to Cargo.toml"
        ),
    };
    Error::usage(
        format!(
            "no environment `{name}` in the ship configuration of package `{}`; configured: {}",
            package.name,
            list(&names)
        ),
        Some(help),
    )
}

fn resolve(
    package: &Package,
    l: &Layer,
    environment: Option<(&str, Origin)>,
    ship_at: &Origin,
    opts: &LoadOptions,
) -> Result<Config> {
    let bin = match &l.bin {
        Some(v) => check_bin(package, v)?,
        None => match package.default_bin() {
            Ok(b) => b.to_string(),
            Err(m) if package.bins.is_empty() => return Err(Error::usage(m, None)),
            Err(m) => {
                return Err(Error::Config {
                    location: ship_at.location.clone(),
                    key: "package.metadata.ship.bin".into(),
                    problem: format!("missing: {m}"),
                    help: Some(format!(
                        "say which one to ship, e.g. `bin = \"{}\"` in `[package.metadata.ship]`",
                        package.bins[0]
                    )),
                })
            }
        },
    };

    let targets = resolve_targets(l)?;
    let target = match (&l.target, targets.first()) {
        (Some(v), _) => {
            Target::parse(&v.value).map_err(|e| v.at.error(format!("expected {e}"), None))?
        }
        (None, Some(first)) => first.clone(),
        (None, None) => Target::parse(&host_triple()).map_err(|e| {
            Error::usage(
                format!("cannot default the target to this machine's: expected {e}"),
                Some("set `target` in `[package.metadata.ship]` or pass `--target`".into()),
            )
        })?,
    };

    let builder = match &l.builder {
        None => BuilderKind::Auto,
        Some(v) => match v.value.as_str() {
            "auto" => BuilderKind::Auto,
            "cargo" => BuilderKind::Cargo,
            "zigbuild" => BuilderKind::Zigbuild,
            "cross" => BuilderKind::Cross,
            other => {
                let help = closest(other, &["auto", "cargo", "zigbuild", "cross"])
                    .map(|s| format!("did you mean \"{s}\"?"));
                return Err(v.at.error(format!("expected one of \"auto\", \"cargo\", \"zigbuild\", \"cross\", found \"{other}\""), help));
            }
        },
    };
    if let (Some((pinned, glibc)), Some(v)) = (
        targets
            .iter()
            .chain([&target])
            .find_map(|t| t.glibc.as_ref().map(|g| (t, g))),
        &l.builder,
    ) {
        if matches!(builder, BuilderKind::Cargo | BuilderKind::Cross) {
            return Err(v.at.error(
                format!("expected \"zigbuild\" or \"auto\" with a glibc-pinned target (`{pinned}`), found \"{}\"", v.value),
                Some(format!("only cargo-zigbuild can link against glibc {glibc}; remove the `.{glibc}` suffix to use {}", v.value)),
            ));
        }
    }

    let profile = match &l.profile {
        None => "release".to_string(),
        Some(v) => {
            let ok = !v.value.is_empty()
                && v.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(v.at.error(
                    format!(
                        "expected a cargo profile name like \"release\", found \"{}\"",
                        v.value
                    ),
                    None,
                ));
            }
            v.value.clone()
        }
    };

    let assets = match &l.assets {
        None => Vec::new(),
        Some(list) => relative_paths(list, "the package")?,
    };
    check_bin_name(&bin, ship_at)?;
    let deploy_to = match &l.deploy_to {
        None => derived_default(
            &bin,
            "deploy_to",
            format!("/opt/{bin}"),
            ship_at,
            check_deploy_to,
        )?,
        Some(v) => check_deploy_to(v)?,
    };
    let keep_releases = match &l.keep_releases {
        None => 5,
        Some(v) => at_least_one(v)?,
    };
    let shared_dirs = match &l.shared_dirs {
        None => Vec::new(),
        Some(list) => relative_paths(list, "the release")?,
    };
    let shared_files = match &l.shared_files {
        None => Vec::new(),
        Some(list) => relative_paths(list, "the release")?,
    };
    check_shared(l, &bin, &assets)?;

    let systemd = resolve_systemd(l, &bin, ship_at)?;
    let health = resolve_health(l)?;
    let canary = resolve_canary(l)?;
    let hooks = HooksConfig {
        before_switch: commands(l.hooks.before_switch.as_ref())?,
        before_switch_once: commands(l.hooks.before_switch_once.as_ref())?,
        after_switch: commands(l.hooks.after_switch.as_ref())?,
        once_on: None,
    };
    let jobs = resolve_jobs(l, package, &bin, &systemd.unit)?;
    let environment = match environment {
        None => None,
        Some((name, at)) => Some(resolve_environment(l, name, &at)?),
    };

    Ok(Config {
        manifest_path: package.manifest_path.clone(),
        package_root: package.root.clone(),
        target_dir: package.target_dir.clone(),
        package: package.name.clone(),
        version: package.version.clone(),
        bin,
        targets: if targets.is_empty() {
            vec![target.clone()]
        } else {
            targets
        },
        target,
        builder,
        profile,
        features: opts
            .features
            .iter()
            .flat_map(|f| f.split([',', ' ']))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect(),
        all_features: opts.all_features,
        no_default_features: opts.no_default_features,
        strip: l.strip.as_ref().is_none_or(|v| v.value),
        assets,
        deploy_to,
        keep_releases,
        shared_dirs,
        shared_files,
        sudo: l.sudo.as_ref().is_some_and(|v| v.value),
        systemd,
        health,
        canary,
        hooks,
        jobs,
        environment,
        per_host: Default::default(),
    })
}

fn resolve_systemd(l: &Layer, bin: &str, ship_at: &Origin) -> Result<SystemdConfig> {
    let s = &l.systemd;
    let (restart, listen) = resolve_restart(s)?;
    let unit = match &s.unit {
        None => derived_default(bin, "systemd.unit", bin.to_string(), ship_at, check_unit)?,
        Some(v) => check_unit(v)?,
    };
    let environment = check_environment(&s.environment)?;
    Ok(SystemdConfig {
        unit,
        args: match &s.args {
            None => Vec::new(),
            Some(list) => {
                for a in &list.value {
                    if a.value.contains(['\n', '\r', '\0']) {
                        return Err(a.at.error(
                            "expected a single-line argument, found a line break or NUL",
                            None,
                        ));
                    }
                }
                list.value.iter().map(|v| v.value.clone()).collect()
            }
        },
        environment,
        user: s
            .user
            .as_ref()
            .map(|v| account_name(v, "user"))
            .transpose()?,
        group: s
            .group
            .as_ref()
            .map(|v| account_name(v, "group"))
            .transpose()?,
        restart_sec: match &s.restart_sec {
            None => Duration::from_secs(1),
            Some(v) => duration(v)?,
        },
        hardening: s.hardening.as_ref().is_none_or(|v| v.value),
        restart,
        listen,
        notify: s.notify.as_ref().is_some_and(|v| v.value),
        drain_timeout: match &s.drain_timeout {
            None => Duration::from_secs(30),
            Some(v) => duration(v)?,
        },
        secrets: resolve_secrets(s)?,
    })
}

/// `jobs.<name>` (#21): each job's name fits a unit name, its binary is one of the package's,
/// its schedule looks like a systemd calendar expression (the host's `systemd-analyze
/// calendar` judges it for good before the deploy changes anything).
fn resolve_jobs(
    l: &Layer,
    package: &Package,
    bin: &str,
    unit: &str,
) -> Result<BTreeMap<String, JobConfig>> {
    let mut jobs = BTreeMap::new();
    for (name, j) in &l.jobs {
        let key = |k: &str| Origin {
            location: j.at.location.clone(),
            key: format!("{}.{k}", j.at.key),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(j.at.error(
                format!("expected a job name of letters, digits, `-` and `_`, found `{name}`"),
                Some(format!(
                    "the job runs as unit `{unit}-job-<name>.service`: rename the table"
                )),
            ));
        }
        let job_bin = match &j.bin {
            None => bin.to_string(),
            Some(v) => check_bin(package, v)?,
        };
        let schedule = match &j.schedule {
            None => {
                return Err(key("schedule").error(
                    "missing: when the job runs",
                    Some(
                        "add e.g. `schedule = \"*-*-* 03:00:00\"` or `schedule = \"hourly\"` (systemd OnCalendar=)"
                            .into(),
                    ),
                ))
            }
            Some(v) => check_schedule(v)?,
        };
        let on = match &j.on {
            None => JobHosts::All,
            Some(v) => match v.value.as_str() {
                "all" => JobHosts::All,
                "one" => JobHosts::One,
                other => {
                    return Err(v.at.error(
                        format!("expected \"all\" or \"one\", found \"{other}\""),
                        None,
                    ))
                }
            },
        };
        let positive = |v: &Val<String>| -> Result<Duration> {
            let d = duration(v)?;
            if d.is_zero() {
                return Err(v.at.error(
                    format!(
                        "expected a duration longer than zero, found \"{}\"",
                        v.value
                    ),
                    None,
                ));
            }
            Ok(d)
        };
        let environment = check_environment(&j.environment)?;
        let mut args = Vec::new();
        if let Some(list) = &j.args {
            for a in &list.value {
                if a.value.contains(['\n', '\r', '\0']) {
                    return Err(a.at.error(
                        "expected a single-line argument, found a line break or NUL",
                        None,
                    ));
                }
                args.push(a.value.clone());
            }
        }
        jobs.insert(
            name.clone(),
            JobConfig {
                bin: job_bin,
                args,
                schedule,
                on,
                timeout: j.timeout.as_ref().map(positive).transpose()?,
                persistent: j.persistent.as_ref().is_some_and(|v| v.value),
                randomized_delay: j.randomized_delay.as_ref().map(positive).transpose()?,
                environment,
            },
        );
    }
    Ok(jobs)
}

/// A systemd calendar expression, checked conservatively here (the characters systemd.time(7)
/// uses, one line); the host's `systemd-analyze calendar` has the last word in preflight.
fn check_schedule(v: &Val<String>) -> Result<String> {
    let s = v.value.trim();
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " *:/.,~+-".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(v.at.error(
            format!(
                "expected a systemd calendar expression like \"*-*-* 03:00:00\" or \"daily\", found \"{}\"",
                v.value
            ),
            Some("see `man systemd.time` (CALENDAR EVENTS); `systemd-analyze calendar '<expression>'` checks one".into()),
        ))
    }
}

/// `bin` or a job's `bin`: one of the package's binaries.
fn check_bin(package: &Package, v: &Val<String>) -> Result<String> {
    if !package.bins.contains(&v.value) {
        return Err(v.at.error(
            format!(
                "expected one of the binaries of package `{}` ({}), found \"{}\"",
                package.name,
                list(&package.bins),
                v.value
            ),
            None,
        ));
    }
    Ok(v.value.clone())
}

/// `systemd.environment` or a job's `environment`: names as the shell has them, one-line values.
fn check_environment(
    table: &BTreeMap<String, (Origin, Val<String>)>,
) -> Result<BTreeMap<String, String>> {
    let mut environment = BTreeMap::new();
    for (name, (name_at, value)) in table {
        if !is_env_name(name) {
            return Err(name_at.error(
                format!("expected an environment variable name matching [A-Za-z_][A-Za-z0-9_]*, found `{name}`"),
                None,
            ));
        }
        if value.value.contains(['\n', '\r', '\0']) {
            return Err(value.at.error(
                "expected a single-line value, found a line break or NUL",
                None,
            ));
        }
        environment.insert(name.clone(), value.value.clone());
    }
    Ok(environment)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `systemd.secrets`: variable names, none of them also in `environment` (whose values are in
/// Cargo.toml, i.e. not secret).
fn resolve_secrets(s: &SystemdLayer) -> Result<Vec<String>> {
    let Some(list) = &s.secrets else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for v in &list.value {
        if !is_env_name(&v.value) {
            return Err(v.at.error(
                format!("expected an environment variable name matching [A-Za-z_][A-Za-z0-9_]*, found \"{}\"", v.value),
                None,
            ));
        }
        if s.environment.contains_key(&v.value) {
            return Err(v.at.error(
                format!("`{}` is both a secret and a value in `systemd.environment`", v.value),
                Some("values in `environment` live in Cargo.toml, i.e. in git: remove it there and pass the value in the deploying process's environment or the environment's `secrets_file`".into()),
            ));
        }
        if !names.contains(&v.value) {
            names.push(v.value.clone());
        }
    }
    Ok(names)
}

fn resolve_restart(s: &SystemdLayer) -> Result<(RestartStrategy, Vec<String>)> {
    let restart = match &s.restart {
        None => RestartStrategy::Restart,
        Some(v) => match v.value.as_str() {
            "restart" => RestartStrategy::Restart,
            "socket" => RestartStrategy::Socket,
            "blue-green" => RestartStrategy::BlueGreen,
            other => {
                return Err(v.at.error(
                    format!(
                        "expected one of \"restart\", \"socket\", \"blue-green\", found \"{other}\""
                    ),
                    None,
                ))
            }
        },
    };
    let mut listen = Vec::new();
    if let Some(list) = &s.listen {
        for a in &list.value {
            check_listen(a)?;
            listen.push(a.value.trim().to_string());
        }
        if restart == RestartStrategy::Restart {
            return Err(list.at.error(
                "`listen` is only used by restart = \"socket\" or \"blue-green\", but restart is \"restart\"",
                Some("set `restart = \"socket\"` (or \"blue-green\") to have systemd hold these sockets, or remove `listen`".into()),
            ));
        }
    }
    if restart != RestartStrategy::Restart && listen.is_empty() {
        let at = s.restart.as_ref().map(|v| &v.at).expect("restart is set");
        return Err(at.error(
            format!(
                "restart = \"{}\" needs the sockets systemd holds for the service, but `systemd.listen` is empty",
                restart.as_str()
            ),
            Some("add e.g. `listen = [\"0.0.0.0:8080\"]` under [package.metadata.ship.systemd]".into()),
        ));
    }
    Ok((restart, listen))
}

/// A `ListenStream=` value: a port, `address:port`, `[v6]:port` or an absolute socket path.
fn check_listen(v: &Val<String>) -> Result<()> {
    let s = v.value.trim();
    let bad = || {
        v.at.error(
            format!("expected a port, an \"address:port\" (\"0.0.0.0:8080\", \"[::]:8080\") or an absolute socket path, found \"{}\"", v.value),
            None,
        )
    };
    if s.starts_with('/') {
        return if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            Err(bad())
        } else {
            Ok(())
        };
    }
    let port = match s.rsplit_once(':') {
        Some((addr, port)) => {
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            if addr.parse::<std::net::IpAddr>().is_err() {
                return Err(bad());
            }
            port
        }
        None => s,
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

fn resolve_health(l: &Layer) -> Result<HealthConfig> {
    let h = &l.health;
    let timeout = match &h.timeout {
        None => Duration::from_secs(30),
        Some(v) => duration(v)?,
    };
    if timeout.is_zero() {
        if let Some(v) = &h.timeout {
            return Err(v
                .at
                .error("expected a duration longer than zero, found \"0s\"", None));
        }
    }
    let settle = match &h.settle {
        None => Duration::from_secs(3),
        Some(v) => duration(v)?,
    };
    let confirm_timeout = resolve_confirm(h, timeout, settle)?;
    Ok(HealthConfig {
        http: h.http.as_ref().map(check_http).transpose()?,
        command: match &h.command {
            None => None,
            Some(v) if v.value.trim().is_empty() => {
                return Err(v
                    .at
                    .error("expected a shell command, found an empty string", None))
            }
            Some(v) => Some(v.value.clone()),
        },
        timeout,
        settle,
        confirm_timeout,
    })
}

/// `[...canary]` (issue #20): `None` without the table or with `enabled = false`; otherwise
/// every key checked, `metrics`, `requests` and `errors` required.
fn resolve_canary(l: &Layer) -> Result<Option<CanaryConfig>> {
    let c = &l.canary;
    let Some(at) = &c.at else {
        return Ok(None);
    };
    if c.enabled.as_ref().is_some_and(|v| !v.value) {
        return Ok(None);
    }
    let missing = |key: &str, example: &str| Error::Config {
        location: at.location.clone(),
        key: format!("{}.{key}", at.key),
        problem: "missing: a canary is judged on the service's own metrics".into(),
        help: Some(format!(
            "add `{key} = {example}` to `[{}]`, or `enabled = false` to turn the canary off",
            at.key
        )),
    };
    let hosts = match &c.hosts {
        None => CanaryHosts::Count(1),
        Some(v) => match parse_batch(&v.value) {
            Ok(Batch::Count(n)) => CanaryHosts::Count(n),
            Ok(Batch::Percent(p)) => CanaryHosts::Percent(p),
            Ok(Batch::All) | Err(_) => {
                let found = shown(&v.value);
                return Err(v.at.error(
                    format!("expected a number of hosts (at least 1) or a percentage from \"1%\" to \"100%\", found {found}"),
                    None,
                ));
            }
        },
    };
    let window = match &c.window {
        None => Duration::from_secs(120),
        Some(v) => duration(v)?,
    };
    if window < Duration::from_secs(1) {
        if let Some(v) = &c.window {
            return Err(v.at.error(
                format!("expected a window of at least 1s, found \"{}\"", v.value),
                None,
            ));
        }
    }
    let metrics = match &c.metrics {
        None => return Err(missing("metrics", "\"http://127.0.0.1:7070/metrics\"")),
        Some(v) => check_url(v, "http://127.0.0.1:7070/metrics")?,
    };
    let selector = |v: &Option<Val<String>>, key: &str, example: &str| -> Result<String> {
        let Some(v) = v else {
            return Err(missing(key, example));
        };
        crate::metrics::Selector::parse(&v.value).map_err(|why| {
            v.at.error(
                format!("expected a series selector like `http_requests_total{{code=~\"5..\"}}`, found \"{}\": {why}", v.value),
                None,
            )
        })?;
        Ok(v.value.trim().to_string())
    };
    let requests = selector(&c.requests, "requests", "\"http_requests_total\"")?;
    let errors = selector(&c.errors, "errors", "'http_requests_total{code=~\"5..\"}'")?;
    let max_error_ratio = match &c.max_error_ratio {
        None => 0.01,
        Some(v) if (0.0..=1.0).contains(&v.value) => v.value,
        Some(v) => {
            return Err(v.at.error(
                format!("expected a ratio from 0 to 1 like 0.01, found {}", v.value),
                None,
            ))
        }
    };
    let min_requests = match &c.min_requests {
        None => 100,
        Some(v) => at_least_one(v)? as u64,
    };
    Ok(Some(CanaryConfig {
        hosts,
        window,
        metrics,
        requests,
        errors,
        max_error_ratio,
        min_requests,
    }))
}

/// `health.confirm_timeout`: zero turns the dead-man's switch off; otherwise the switch, the
/// probe and the settle period must fit before the host reverts by itself.
fn resolve_confirm(h: &HealthLayer, timeout: Duration, settle: Duration) -> Result<Duration> {
    let minimum = timeout + settle + Duration::from_secs(5);
    let Some(v) = &h.confirm_timeout else {
        return Ok((timeout * 2 + settle + Duration::from_secs(10)).max(Duration::from_secs(90)));
    };
    let d = duration(v)?;
    if !d.is_zero() && d < minimum {
        return Err(v.at.error(
            format!(
                "expected at least {} (health.timeout + health.settle + 5s, so the checks fit before the host reverts by itself), or \"0s\" to turn the dead-man's switch off, found \"{}\"",
                humantime::format_duration(minimum),
                v.value
            ),
            None,
        ));
    }
    Ok(d)
}

fn resolve_environment(l: &Layer, name: &str, at: &Origin) -> Result<Environment> {
    let hosts =
        match &l.hosts {
            None => {
                return Err(Error::Config {
                    location: at.location.clone(),
                    key: format!("{}.hosts", at.key),
                    problem: format!("missing: environment `{name}` has no hosts"),
                    help: Some(format!(
                        "add `hosts = [\"deploy@web1.example.com\"]` to `[{}]`",
                        at.key
                    )),
                })
            }
            Some(list) if list.value.is_empty() => return Err(list.at.error(
                "expected at least one host like \"deploy@web1.example.com\", found an empty array",
                None,
            )),
            Some(list) => {
                let mut seen = BTreeSet::new();
                let mut hosts = Vec::new();
                for v in &list.value {
                    let spec = parse_host(&v.value).map_err(|why| {
                        v.at.error(
                            format!(
                                "expected `[user@]host[:port]`, found \"{}\": {why}",
                                v.value
                            ),
                            None,
                        )
                    })?;
                    if !seen.insert(spec.to_string()) {
                        return Err(v.at.error(
                            format!("expected each host once, found \"{}\" twice", v.value),
                            None,
                        ));
                    }
                    hosts.push(spec);
                }
                hosts
            }
        };
    let ssh_config = l
        .ssh_config
        .as_ref()
        .map(|v| {
            existing_file(
                v,
                "ssh config file",
                "`ssh_config` is relative to the directory of the Cargo.toml that sets it",
            )
        })
        .transpose()?;
    let secrets_file = l
        .secrets_file
        .as_ref()
        .map(|v| {
            existing_file(
                v,
                "secrets file",
                "`secrets_file` is relative to the directory of the Cargo.toml that sets it; it stays on the deploying machine (keep it out of git)",
            )
        })
        .transpose()?;
    let connect_parallel = match &l.connect_parallel {
        None => 10,
        Some(v) => at_least_one(v)?,
    };
    let parallel = match &l.parallel {
        None => None,
        Some(v) => match &v.value {
            BatchValue::Text(t) if t.trim() == "all" => None,
            BatchValue::Count(n) => Some(at_least_one(&Val::new(*n, v.at.clone()))?),
            other => {
                return Err(v.at.error(
                    format!(
                        "expected a positive integer or \"all\", found {}",
                        shown(other)
                    ),
                    None,
                ))
            }
        },
    };
    let batch_error = |v: &Val<BatchValue>, found: String| {
        let ramp = matches!(v.value, BatchValue::List(_));
        v.at.error(
            format!(
                "expected a number of hosts (at least 1), a percentage from \"1%\" to \"100%\", or \"all\", found {found}{}",
                if ramp { " in the ramp" } else { "" }
            ),
            None,
        )
    };
    let batch = match &l.batch {
        None => vec![Batch::All],
        Some(v) => match &v.value {
            BatchValue::List(items) => items
                .iter()
                .map(|i| parse_batch(i).map_err(|found| batch_error(v, found)))
                .collect::<Result<Vec<_>>>()?,
            one => vec![parse_batch(one).map_err(|found| batch_error(v, found))?],
        },
    };
    let pause = match &l.pause {
        None => Duration::ZERO,
        Some(v) => duration(v)?,
    };
    let max_fail = match &l.max_fail {
        None => Budget::Count(0),
        Some(v) => parse_budget(&v.value).ok_or_else(|| {
            v.at.error(
                format!(
                    "expected a number of hosts (0 or more) or a percentage from \"0%\" to \"100%\", found {}",
                    shown(&v.value)
                ),
                None,
            )
        })?,
    };
    let unreachable = match l.unreachable.as_ref().map(|v| (v, v.value.trim())) {
        None | Some((_, "fail")) => Unreachable::Fail,
        Some((_, "defer")) => Unreachable::Defer,
        Some((v, _)) => {
            return Err(v.at.error(
                format!("expected \"fail\" or \"defer\", found \"{}\"", v.value),
                None,
            ))
        }
    };
    Ok(Environment {
        name: name.to_string(),
        hosts,
        ssh_config,
        secrets_file,
        connect_parallel,
        parallel,
        batch,
        pause,
        max_fail,
        unreachable,
    })
}

/// A `batch`/`parallel`/`max_fail` value as an error message shows it.
fn shown(v: &BatchValue) -> String {
    match v {
        BatchValue::Count(n) => n.to_string(),
        BatchValue::Text(t) => format!("\"{t}\""),
        BatchValue::List(_) => "an array".into(),
    }
}

/// `max_fail`: `2`, `"2"`, `"5%"` (zero allowed: no failure tolerated, the default).
fn parse_budget(v: &BatchValue) -> Option<Budget> {
    match v {
        BatchValue::Count(n) => usize::try_from(*n).ok().map(Budget::Count),
        BatchValue::Text(t) => match t.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .map(Budget::Percent),
            None => t.trim().parse::<usize>().ok().map(Budget::Count),
        },
        BatchValue::List(_) => None,
    }
}

/// A path key that must name an existing file (`what`: "ssh config file"); canonical once found.
fn existing_file(
    v: &Val<std::path::PathBuf>,
    what: &str,
    help: &str,
) -> Result<std::path::PathBuf> {
    if !v.value.is_file() {
        return Err(v.at.error(
            format!("the {what} `{}` does not exist", v.value.display()),
            Some(help.into()),
        ));
    }
    Ok(std::fs::canonicalize(&v.value).unwrap_or_else(|_| v.value.clone()))
}

fn at_least_one(v: &Val<i64>) -> Result<usize> {
    if v.value < 1 {
        return Err(v
            .at
            .error(format!("expected at least 1, found {}", v.value), None));
    }
    usize::try_from(v.value).map_err(|_| {
        v.at.error(
            format!("expected a smaller number, found {}", v.value),
            None,
        )
    })
}

fn duration(v: &Val<String>) -> Result<Duration> {
    humantime::parse_duration(v.value.trim()).map_err(|_| {
        v.at.error(format!("expected {DURATION}, found \"{}\"", v.value), None)
    })
}

fn commands(list: Option<&Strings>) -> Result<Vec<String>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in &list.value {
        if c.value.trim().is_empty() {
            return Err(c
                .at
                .error("expected a shell command, found an empty string", None));
        }
        if c.value.contains('\0') {
            return Err(c
                .at
                .error("expected a shell command, found a NUL character", None));
        }
        out.push(c.value.clone());
    }
    Ok(out)
}

/// Relative, normalized paths (`./a/` → `a`) with no `..`; `inside` says relative to what.
fn relative_paths(list: &Strings, inside: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in &list.value {
        let s = &v.value;
        let parts: Vec<&str> = s
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let problem = if s.starts_with('/') {
            Some("an absolute path")
        } else if s.split('/').any(|p| p == "..") {
            Some("a path with `..`")
        } else if parts.is_empty() {
            Some("an empty path")
        } else if s.contains(['\n', '\r', '\0']) {
            Some("a line break or NUL")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(v.at.error(
                format!("expected a relative path inside {inside} (no `..`), found {p}: \"{s}\""),
                None,
            ));
        }
        out.push(parts.join("/"));
    }
    Ok(out)
}

/// Shared paths must not replace files the release brings itself.
fn check_shared(l: &Layer, bin: &str, assets: &[String]) -> Result<()> {
    let mut seen: Vec<(String, &Origin)> = Vec::new();
    for list in [&l.shared_dirs, &l.shared_files].into_iter().flatten() {
        for v in &list.value {
            let path: String = v
                .value
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect::<Vec<_>>()
                .join("/");
            let first = path.split('/').next().unwrap_or("");
            if first == bin {
                return Err(v.at.error(
                    format!("expected a path that is not the release's own binary `{bin}`, found \"{}\"", v.value),
                    Some("shared paths are linked into each release; pick a directory such as \"data\"".into()),
                ));
            }
            if first == MANIFEST_FILE {
                return Err(v.at.error(
                    format!("expected a path that is not the release's own `{MANIFEST_FILE}`, found \"{}\"", v.value),
                    None,
                ));
            }
            if let Some(asset) = assets.iter().find(|a| overlaps(a, &path)) {
                return Err(v.at.error(
                    format!("expected a path that no asset provides, found \"{}\", which overlaps the asset \"{asset}\"", v.value),
                    Some("a shared path replaces what the release brings; move the asset or the shared path".into()),
                ));
            }
            if let Some((other, other_at)) = seen.iter().find(|(o, _)| overlaps(o, &path)) {
                return Err(v.at.error(
                    format!("expected each shared path once, found \"{}\", which overlaps \"{other}\" (`{}`)", v.value, other_at.key),
                    None,
                ));
            }
            seen.push((path, &v.at));
        }
    }
    Ok(())
}

/// True when one path is the other or contains it.
fn overlaps(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// The binary's name goes into the unit file (Description=, ExecStart=) and is the file name
/// at the release root: it must be a plain file name (no `/`, not `.` or `..`) without
/// control characters (systemd ends a line at a carriage return too).
fn check_bin_name(bin: &str, ship_at: &Origin) -> Result<()> {
    let why = if bin.contains(|c: char| c.is_control()) {
        "it would be written into the unit file"
    } else if bin.contains('/') || bin == "." || bin == ".." || bin.is_empty() {
        "it would name a file outside the release root"
    } else {
        return Ok(());
    };
    Err(Error::Config {
        location: ship_at.location.clone(),
        key: "package.metadata.ship.bin".into(),
        problem: format!(
            "expected a binary name that is a plain file name without control characters, found {bin:?}: {why}"
        ),
        help: Some("rename the `[[bin]]` target in Cargo.toml".into()),
    })
}

/// A default derived from the binary's name (`deploy_to = "/opt/<bin>"`, `unit = "<bin>"`)
/// gets the same check as the key written out; its error says where the value came from.
fn derived_default(
    bin: &str,
    key: &str,
    value: String,
    ship_at: &Origin,
    check: fn(&Val<String>) -> Result<String>,
) -> Result<String> {
    let at = Origin {
        location: ship_at.location.clone(),
        key: format!("package.metadata.ship.{key}"),
    };
    check(&Val::new(value.clone(), at)).map_err(|e| match e {
        Error::Config {
            location,
            key: full_key,
            problem,
            ..
        } => Error::Config {
            location,
            key: full_key,
            problem: format!(
                "the default \"{value}\", derived from the binary name {bin:?}, is not usable: {problem}"
            ),
            help: Some(format!(
                "set `{key}` in `[package.metadata.ship{}]`, or rename the binary",
                if key == "deploy_to" { "" } else { ".systemd" }
            )),
        },
        other => other,
    })
}

fn check_deploy_to(v: &Val<String>) -> Result<String> {
    const WORLD_WRITABLE: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock"];
    const SYSTEM: &[&str] = &[
        "bin", "boot", "dev", "etc", "home", "lib", "lib64", "opt", "proc", "root", "run", "sbin",
        "srv", "sys", "tmp", "usr", "var",
    ];
    let s = v.value.as_str();
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    let parts: Vec<&str> = trimmed.split('/').skip(1).collect();
    let bad_char = trimmed
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@~=,".contains(*c)));
    let problem = if !s.starts_with('/') {
        Some("a relative path".to_string())
    } else if trimmed.is_empty() {
        Some("the root directory".to_string())
    } else if let Some(c) = bad_char {
        Some(format!("the character {c:?}"))
    } else if parts.iter().any(|p| p.is_empty()) {
        Some("an empty path component (`//`)".to_string())
    } else if parts.iter().any(|p| *p == ".." || *p == ".") {
        Some("a `.` or `..` component".to_string())
    } else if parts.len() == 1 && SYSTEM.contains(&parts[0]) {
        Some("a system directory".to_string())
    } else {
        WORLD_WRITABLE
            .iter()
            .find(|d| std::path::Path::new(trimmed).starts_with(d))
            .map(|d| {
                format!(
                    "a path under {d}, which every local user can write (they could replace it before the first deploy)"
                )
            })
    };
    match problem {
        None => Ok(trimmed.to_string()),
        Some(p) => Err(v.at.error(
            format!("expected an absolute path like \"/opt/hello\" (letters, digits, `._-+@~=,`), found {p}: \"{s}\""),
            None,
        )),
    }
}

fn check_unit(v: &Val<String>) -> Result<String> {
    let s = v.value.as_str();
    if let Some(base) = s.strip_suffix(".service") {
        return Err(v.at.error(
            format!("expected a unit name without the `.service` suffix, found \"{s}\""),
            Some(format!("write `unit = \"{base}\"`")),
        ));
    }
    let ok = !s.is_empty()
        && s.len() <= 200
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if !ok {
        return Err(v.at.error(
            format!("expected a unit name of letters, digits and `_.:-` (no `/` or spaces), found \"{s}\""),
            None,
        ));
    }
    Ok(s.to_string())
}

fn account_name(v: &Val<String>, what: &str) -> Result<String> {
    let s = v.value.as_str();
    let ok = !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(v.at.error(
            format!("expected a {what} name of letters, digits and `_.-`, found \"{s}\""),
            None,
        ))
    }
}

fn check_http(v: &Val<String>) -> Result<String> {
    check_url(v, "http://127.0.0.1:8080/healthz")
}

/// An `http://host:port/path` URL read on the host itself; `example` goes into the message.
fn check_url(v: &Val<String>, example: &str) -> Result<String> {
    let s = v.value.as_str();
    let expected = format!("expected a URL like \"{example}\" (http://, a host and a port)");
    if s.starts_with("https://") {
        return Err(v.at.error(
            format!("{expected}, found \"{s}\": https is not supported"),
            Some("the probe runs on the host itself through the ssh connection; point it at the plain-http port the service listens on".into()),
        ));
    }
    let Some(rest) = s.strip_prefix("http://") else {
        return Err(v.at.error(format!("{expected}, found \"{s}\""), None));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let why = if authority.contains('@') {
        Some("credentials in the URL are not supported")
    } else if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace")
    } else {
        match split_host_port(authority) {
            Err(e) => Some(e),
            Ok((_, None)) => Some("the port is missing"),
            Ok(("", Some(_))) => Some("the host is missing"),
            Ok(_) => None,
        }
    };
    match why {
        None => Ok(s.to_string()),
        Some(w) => Err(v.at.error(format!("{expected}, found \"{s}\": {w}"), None)),
    }
}

/// `host[:port]` or `[v6][:port]`; the host is checked by [`parse_host`] callers.
fn split_host_port(s: &str) -> std::result::Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err("the `]` after the IPv6 address is missing");
        };
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err("expected `:port` after the IPv6 address"),
            },
        }
    } else if s.matches(':').count() > 1 {
        return Err("an IPv6 address must be written in brackets, like `[::1]:22`");
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some("") => return Err("the port after `:` is missing"),
        Some(p) if !p.chars().all(|c| c.is_ascii_digit()) => {
            return Err("the port is not a number")
        }
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Some(n as u16),
            _ => return Err("the port is out of range (1-65535)"),
        },
    };
    Ok((host, port))
}

/// Parses `[user@]host[:port]`; the error says what is wrong.
pub(crate) fn parse_host(s: &str) -> std::result::Result<HostSpec, &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace");
    }
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, s),
    };
    if let Some(u) = user {
        if u.is_empty() {
            return Err("the user before `@` is empty");
        }
        if u.starts_with('-')
            || !u
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err("the user may only contain letters, digits and `_.-`");
        }
    }
    if rest.is_empty() {
        return Err("the host is missing");
    }
    let bracketed = rest.starts_with('[');
    let (host, port) = split_host_port(rest)?;
    if host.is_empty() {
        return Err("the host is missing");
    }
    let ok = if bracketed {
        host.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.starts_with(['-', '.'])
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    if !ok {
        return Err("the host may only contain letters, digits and `_.-`");
    }
    Ok(HostSpec {
        user: user.map(str::to_string),
        host: host.to_string(),
        port,
    })
}

/// `2`, `"2"`, `"25%"`, `"all"`; the error is the value as shown in messages.
fn parse_batch(v: &BatchValue) -> std::result::Result<Batch, String> {
    match v {
        BatchValue::Count(n) if *n >= 1 => usize::try_from(*n)
            .map(Batch::Count)
            .map_err(|_| n.to_string()),
        BatchValue::Count(n) => Err(n.to_string()),
        BatchValue::List(_) => Err("an array inside the array".into()),
        BatchValue::Text(t) => {
            let s = t.trim();
            if s == "all" {
                return Ok(Batch::All);
            }
            let parsed = match s.strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .map(Batch::Percent),
                None => s
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(Batch::Count),
            };
            parsed.ok_or_else(|| format!("\"{t}\""))
        }
    }
}

/// The host triple of `rustc` (`$RUSTC` if set), or this build's architecture on Linux.
fn host_triple() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        std::process::Command::new(rustc)
            .arg("-vV")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|out| {
                out.lines()
                    .find_map(|l| l.strip_prefix("host: ").map(|h| h.trim().to_string()))
            })
            .unwrap_or_else(|| format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// `cargo ship config show`

/// The resolved configuration as shown by `cargo ship config show`: TOML-like text (the same
/// keys as in Cargo.toml, every default filled in) and the same content as JSON.
pub fn show(config: &Config) -> (String, serde_json::Value) {
    let view = View::from(config);
    let mut text = format!(
        "# resolved ship configuration of `{}` {} ({})",
        config.package,
        config.version,
        config.manifest_path.display()
    );
    match &config.environment {
        Some(env) => text.push_str(&format!(", environment `{}`\n", env.name)),
        None => text.push_str(", no environment\n"),
    }
    match toml::to_string(&view) {
        Ok(body) => text.push_str(&body),
        Err(e) => text.push_str(&format!("# cannot render as TOML: {e}\n")),
    }
    let json = serde_json::to_value(&view).unwrap_or(serde_json::Value::Null);
    (text, json)
}

#[derive(Serialize)]
struct View<'a> {
    package: &'a str,
    version: &'a str,
    manifest_path: String,
    target_dir: String,
    bin: &'a str,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<Vec<String>>,
    builder: BuilderKind,
    profile: &'a str,
    features: &'a [String],
    all_features: bool,
    no_default_features: bool,
    strip: bool,
    assets: &'a [String],
    deploy_to: &'a str,
    keep_releases: usize,
    shared_dirs: &'a [String],
    shared_files: &'a [String],
    sudo: bool,
    systemd: SystemdView<'a>,
    health: HealthView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<CanaryView<'a>>,
    hooks: &'a HooksConfig,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    jobs: &'a BTreeMap<String, JobConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<EnvView<'a>>,
}

#[derive(Serialize)]
struct SystemdView<'a> {
    unit: &'a str,
    args: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    restart_sec: String,
    hardening: bool,
    restart: RestartStrategy,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    listen: &'a [String],
    notify: bool,
    drain_timeout: String,
    environment: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    secrets: &'a [String],
}

#[derive(Serialize)]
struct HealthView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
    timeout: String,
    settle: String,
    confirm_timeout: String,
}

#[derive(Serialize)]
struct CanaryView<'a> {
    hosts: BatchView,
    window: String,
    metrics: &'a str,
    requests: &'a str,
    errors: &'a str,
    max_error_ratio: f64,
    min_requests: u64,
}

#[derive(Serialize)]
struct EnvView<'a> {
    name: &'a str,
    hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh_config: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secrets_file: Option<String>,
    connect_parallel: usize,
    parallel: BatchView,
    batch: BatchView,
    pause: String,
    max_fail: BatchView,
    unreachable: Unreachable,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BatchView {
    Count(usize),
    Text(String),
    List(Vec<BatchView>),
}

impl<'a> From<&'a Config> for View<'a> {
    fn from(c: &'a Config) -> Self {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        View {
            package: &c.package,
            version: &c.version,
            manifest_path: c.manifest_path.display().to_string(),
            target_dir: c.target_dir.display().to_string(),
            bin: &c.bin,
            target: c.target.to_string(),
            targets: (c.targets.len() > 1)
                .then(|| c.targets.iter().map(Target::to_string).collect()),
            builder: c.builder,
            profile: &c.profile,
            features: &c.features,
            all_features: c.all_features,
            no_default_features: c.no_default_features,
            strip: c.strip,
            assets: &c.assets,
            deploy_to: &c.deploy_to,
            keep_releases: c.keep_releases,
            shared_dirs: &c.shared_dirs,
            shared_files: &c.shared_files,
            sudo: c.sudo,
            systemd: SystemdView {
                unit: &c.systemd.unit,
                args: &c.systemd.args,
                user: c.systemd.user.as_deref(),
                group: c.systemd.group.as_deref(),
                restart_sec: human(c.systemd.restart_sec),
                hardening: c.systemd.hardening,
                restart: c.systemd.restart,
                listen: &c.systemd.listen,
                notify: c.systemd.notify,
                drain_timeout: human(c.systemd.drain_timeout),
                environment: &c.systemd.environment,
                secrets: &c.systemd.secrets,
            },
            health: HealthView {
                http: c.health.http.as_deref(),
                command: c.health.command.as_deref(),
                timeout: human(c.health.timeout),
                settle: human(c.health.settle),
                confirm_timeout: human(c.health.confirm_timeout),
            },
            canary: c.canary.as_ref().map(|k| CanaryView {
                hosts: match k.hosts {
                    CanaryHosts::Count(n) => BatchView::Count(n),
                    CanaryHosts::Percent(p) => BatchView::Text(format!("{p}%")),
                },
                window: human(k.window),
                metrics: &k.metrics,
                requests: &k.requests,
                errors: &k.errors,
                max_error_ratio: k.max_error_ratio,
                min_requests: k.min_requests,
            }),
            hooks: &c.hooks,
            jobs: &c.jobs,
            environment: c.environment.as_ref().map(|e| EnvView {
                name: &e.name,
                hosts: e.hosts.iter().map(ToString::to_string).collect(),
                ssh_config: e.ssh_config.as_ref().map(|p| p.display().to_string()),
                secrets_file: e.secrets_file.as_ref().map(|p| p.display().to_string()),
                connect_parallel: e.connect_parallel,
                parallel: match e.parallel {
                    Some(n) => BatchView::Count(n),
                    None => BatchView::Text("all".into()),
                },
                batch: {
                    let one = |b: &Batch| match b {
                        Batch::All => BatchView::Text("all".into()),
                        Batch::Count(n) => BatchView::Count(*n),
                        Batch::Percent(p) => BatchView::Text(format!("{p}%")),
                    };
                    match &e.batch[..] {
                        [b] => one(b),
                        ramp => BatchView::List(ramp.iter().map(one).collect()),
                    }
                },
                pause: human(e.pause),
                max_fail: match e.max_fail {
                    Budget::Count(n) => BatchView::Count(n),
                    Budget::Percent(p) => BatchView::Text(format!("{p}%")),
                },
                unreachable: e.unreachable,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #16: services on one host whose unit files, sudoers files or trees collide.
    #[test]
    fn issue_16_colliding_services() {
        let base = crate::config::tests_support::config_with("");
        let with = |unit: &str, deploy_to: &str| {
            let mut c = base.clone();
            c.systemd.unit = unit.into();
            c.deploy_to = deploy_to.into();
            c
        };
        let what = |a: Config, b: Config| collision(&a, &b).unwrap_or_default();
        assert_eq!(
            what(with("x", "/opt/api"), with("x-guard", "/opt/worker")),
            "units x and x-guard, but x-guard.service is the dead-man's switch of unit x"
        );
        assert_eq!(
            what(with("x-guard", "/opt/api"), with("x", "/opt/worker")),
            "units x and x-guard, but x-guard.service is the dead-man's switch of unit x"
        );
        assert_eq!(
            what(with("foo.bar", "/opt/api"), with("foo_bar", "/opt/worker")),
            "units foo.bar and foo_bar, which would share the sudoers file /etc/sudoers.d/cargo-ship-foo_bar (sudo's file names turn `.` into `_`)"
        );
        assert_eq!(
            what(with("api", "/opt/app"), with("worker", "/opt/app/worker")),
            "deploy_to /opt/app and /opt/app/worker, one inside the other"
        );
        assert_eq!(
            what(with("api", "/opt/api"), with("api", "/opt/worker")),
            "the same unit api"
        );
        // Issue #21: `x-job-*` names the jobs of unit x.
        assert_eq!(
            what(
                with("api-job-report", "/opt/report"),
                with("api", "/opt/api")
            ),
            "units api and api-job-report, but api-job-* names the scheduled jobs of unit api"
        );
        // Siblings whose names only share a prefix are fine.
        assert_eq!(
            what(with("api", "/opt/app"), with("api-x", "/opt/app-x")),
            ""
        );
    }

    fn val(s: &str) -> Val<String> {
        Val::new(
            s.to_string(),
            Origin {
                location: "Cargo.toml:1:1".into(),
                key: "k".into(),
            },
        )
    }

    #[test]
    fn host_specs() {
        let h = parse_host("deploy@web1.example.com").unwrap();
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (Some("deploy"), "web1.example.com", None)
        );
        let h = parse_host("web2.example.com:2222").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("web2.example.com", Some(2222)));
        let h = parse_host("root@[::1]:22").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", Some(22)));
        assert_eq!(parse_host("user@"), Err("the host is missing"));
        assert_eq!(
            parse_host("host:99999"),
            Err("the port is out of range (1-65535)")
        );
        assert_eq!(parse_host("host:abc"), Err("the port is not a number"));
        assert_eq!(parse_host("a b"), Err("it contains whitespace"));
        assert_eq!(parse_host(""), Err("it is empty"));
        assert_eq!(parse_host("@h"), Err("the user before `@` is empty"));
        assert!(parse_host("-oProxyCommand=x").is_err());
        assert!(parse_host("::1").is_err());
    }

    #[test]
    fn batches() {
        assert_eq!(parse_batch(&BatchValue::Count(2)), Ok(Batch::Count(2)));
        assert_eq!(
            parse_batch(&BatchValue::Text("25%".into())),
            Ok(Batch::Percent(25))
        );
        assert_eq!(
            parse_batch(&BatchValue::Text("3".into())),
            Ok(Batch::Count(3))
        );
        assert_eq!(parse_batch(&BatchValue::Text("all".into())), Ok(Batch::All));
        assert_eq!(parse_batch(&BatchValue::Count(0)), Err("0".into()));
        assert_eq!(
            parse_batch(&BatchValue::Text("0".into())),
            Err("\"0\"".into())
        );
        assert_eq!(
            parse_batch(&BatchValue::Text("150%".into())),
            Err("\"150%\"".into())
        );
        assert_eq!(
            parse_batch(&BatchValue::Text("abc".into())),
            Err("\"abc\"".into())
        );
    }

    #[test]
    fn deploy_to_paths() {
        assert_eq!(check_deploy_to(&val("/opt/hello/")).unwrap(), "/opt/hello");
        for bad in [
            "opt/hello",
            "/",
            "/opt/../etc",
            "/opt//x",
            "/opt/hello ",
            "/opt/hel$lo",
            "/etc",
            "/opt/./x",
        ] {
            let err = check_deploy_to(&val(bad)).unwrap_err().to_string();
            assert!(
                err.contains("expected an absolute path like \"/opt/hello\""),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn http_urls() {
        assert!(check_http(&val("http://127.0.0.1:8080/healthz")).is_ok());
        assert!(check_http(&val("http://[::1]:8080/")).is_ok());
        let e = check_http(&val("https://x:443/")).unwrap_err().to_string();
        assert!(e.ends_with("https is not supported"), "{e}");
        assert!(check_http(&val("http://x/"))
            .unwrap_err()
            .to_string()
            .ends_with("the port is missing"));
        assert!(check_http(&val("http://:80/"))
            .unwrap_err()
            .to_string()
            .ends_with("the host is missing"));
        assert!(check_http(&val("ftp://x:1/")).is_err());
    }

    #[test]
    fn units_and_overlaps() {
        assert!(check_unit(&val("hello-api")).is_ok());
        assert!(check_unit(&val("a/b")).is_err());
        assert!(check_unit(&val("a b")).is_err());
        assert!(check_unit(&val("x.service"))
            .unwrap_err()
            .help()
            .unwrap()
            .contains("unit = \"x\""));
        assert!(overlaps("config", "config/a.toml"));
        assert!(overlaps("data", "data"));
        assert!(!overlaps("config/a.toml", "config/b.toml"));
        assert!(!overlaps("dat", "data"));
    }
}
