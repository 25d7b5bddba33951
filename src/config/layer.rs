//! One struct of `Option`s per table, read from a `toml_edit` table, and the merge.
//!
//! A [`Layer`] is what one place contributes: `[workspace.metadata.ship]`,
//! `[package.metadata.ship]`, one `environments.<name>` table, or the command line. Every value
//! keeps its [`Origin`] (file:line:column and full key path), so that validation, which runs once
//! on the merged result, can point at the line that set it.
//!
//! Reading is a small hand-written walk rather than serde with `deny_unknown_fields`: it keeps the
//! same property (an unknown key is an error that lists the valid keys, with a "did you mean"),
//! and also knows each key's path and position, which serde's errors do not carry.
//!
//! Merging is key by key, later layers winning: a table such as `health` merges per key (an
//! environment overriding `health.timeout` keeps the package's `health.http`), as does
//! `systemd.environment`; arrays are replaced as a whole.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::source::{Node, Origin, Source, Val};
use crate::Result;

/// A list of strings, each element keeping its own position.
pub(crate) type Strings = Val<Vec<Val<String>>>;

/// A layer of configuration (workspace, package, environment or command line). All keys are
/// optional; [`crate::config::load`] merges the layers and applies defaults once.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub(crate) bin: Option<Val<String>>,
    pub(crate) target: Option<Val<String>>,
    /// Several targets, one per host architecture (a mixed environment); `target` and
    /// `targets` are one setting: a layer that sets either replaces the other.
    pub(crate) targets: Option<Strings>,
    pub(crate) builder: Option<Val<String>>,
    pub(crate) profile: Option<Val<String>>,
    pub(crate) strip: Option<Val<bool>>,
    pub(crate) assets: Option<Strings>,
    pub(crate) deploy_to: Option<Val<String>>,
    pub(crate) keep_releases: Option<Val<i64>>,
    pub(crate) shared_dirs: Option<Strings>,
    pub(crate) shared_files: Option<Strings>,
    pub(crate) sudo: Option<Val<bool>>,
    pub(crate) systemd: SystemdLayer,
    pub(crate) health: HealthLayer,
    pub(crate) hooks: HooksLayer,
    /// `[...canary]` (issue #20): the top table and environments, not per host.
    pub(crate) canary: CanaryLayer,
    /// `jobs.<name>` tables (#21), by job name.
    pub(crate) jobs: BTreeMap<String, JobLayer>,
    /// Environment tables only.
    pub(crate) hosts: Option<Strings>,
    /// Environment tables only; already resolved against the directory of the declaring file.
    pub(crate) ssh_config: Option<Val<PathBuf>>,
    /// Environment tables only; already resolved against the directory of the declaring file.
    pub(crate) secrets_file: Option<Val<PathBuf>>,
    /// Environment tables only.
    pub(crate) connect_parallel: Option<Val<i64>>,
    /// Environment tables only.
    pub(crate) parallel: Option<Val<BatchValue>>,
    /// Environment tables only.
    pub(crate) batch: Option<Val<BatchValue>>,
    /// Environment tables only (#19).
    pub(crate) pause: Option<Val<String>>,
    /// Environment tables only (#19).
    pub(crate) max_fail: Option<Val<BatchValue>>,
    /// Environment tables only (#19).
    pub(crate) unreachable: Option<Val<String>>,
    /// Top level only: the declared environments by name.
    pub(crate) environments: BTreeMap<String, EnvLayer>,
    /// Environment tables only: `per_host."<host>"` overrides, by host as written in `hosts`.
    pub(crate) per_host: BTreeMap<String, EnvLayer>,
}

/// `[...systemd]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SystemdLayer {
    pub unit: Option<Val<String>>,
    pub args: Option<Strings>,
    /// Variable name → (where the name was written, the value).
    pub environment: BTreeMap<String, (Origin, Val<String>)>,
    pub user: Option<Val<String>>,
    pub group: Option<Val<String>>,
    pub restart_sec: Option<Val<String>>,
    pub hardening: Option<Val<bool>>,
    pub restart: Option<Val<String>>,
    pub listen: Option<Strings>,
    pub notify: Option<Val<bool>>,
    pub drain_timeout: Option<Val<String>>,
    pub secrets: Option<Strings>,
}

/// `[...health]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthLayer {
    pub http: Option<Val<String>>,
    pub command: Option<Val<String>>,
    pub timeout: Option<Val<String>>,
    pub settle: Option<Val<String>>,
    pub confirm_timeout: Option<Val<String>>,
}

/// `[...hooks]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HooksLayer {
    pub before_switch: Option<Strings>,
    pub before_switch_once: Option<Strings>,
    pub after_switch: Option<Strings>,
    pub once_on: Option<Val<String>>,
}

/// `[...canary]` (issue #20).
#[derive(Debug, Clone, Default)]
pub(crate) struct CanaryLayer {
    /// Where the table is (for "missing key" errors): the last layer that has one.
    pub at: Option<Origin>,
    pub enabled: Option<Val<bool>>,
    pub hosts: Option<Val<BatchValue>>,
    pub window: Option<Val<String>>,
    pub metrics: Option<Val<String>>,
    pub requests: Option<Val<String>>,
    pub errors: Option<Val<String>>,
    pub max_error_ratio: Option<Val<f64>>,
    pub min_requests: Option<Val<i64>>,
}

/// One `[...jobs.<name>]` table (#21).
#[derive(Debug, Clone)]
pub(crate) struct JobLayer {
    /// Where the job's table is.
    pub at: Origin,
    pub bin: Option<Val<String>>,
    pub args: Option<Strings>,
    pub schedule: Option<Val<String>>,
    pub on: Option<Val<String>>,
    pub timeout: Option<Val<String>>,
    pub persistent: Option<Val<bool>>,
    pub randomized_delay: Option<Val<String>>,
    /// Variable name → (where the name was written, the value).
    pub environment: BTreeMap<String, (Origin, Val<String>)>,
}

impl JobLayer {
    fn merge(&mut self, o: &JobLayer) {
        set(&mut self.bin, &o.bin);
        set(&mut self.args, &o.args);
        set(&mut self.schedule, &o.schedule);
        set(&mut self.on, &o.on);
        set(&mut self.timeout, &o.timeout);
        set(&mut self.persistent, &o.persistent);
        set(&mut self.randomized_delay, &o.randomized_delay);
        for (k, v) in &o.environment {
            self.environment.insert(k.clone(), v.clone());
        }
        self.at = o.at.clone();
    }
}

/// `batch` as written: `2`, `"25%"` or a ramp `[1, "10%", "100%"]` (also `parallel`: `10`
/// or `"all"`, and `max_fail`: `2` or `"5%"`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BatchValue {
    Count(i64),
    Text(String),
    List(Vec<BatchValue>),
}

/// One `environments.<name>` table.
#[derive(Debug, Clone)]
pub(crate) struct EnvLayer {
    /// Where the environment's table is (for "no hosts" errors).
    pub at: Origin,
    /// Its overrides.
    pub layer: Layer,
}

/// Which table is being read: the ship table itself or an environment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Top,
    Environment,
    /// A `per_host."<host>"` table inside an environment.
    Host,
}

const COMMON_KEYS: &[&str] = &[
    "bin",
    "target",
    "targets",
    "builder",
    "profile",
    "strip",
    "assets",
    "deploy_to",
    "keep_releases",
    "shared_dirs",
    "shared_files",
    "sudo",
    "systemd",
    "health",
    "hooks",
    "jobs",
];
const ENV_ONLY_KEYS: &[&str] = &[
    "hosts",
    "ssh_config",
    "secrets_file",
    "connect_parallel",
    "parallel",
    "batch",
    "pause",
    "max_fail",
    "unreachable",
    "per_host",
];
const SYSTEMD_KEYS: &[&str] = &[
    "unit",
    "args",
    "environment",
    "user",
    "group",
    "restart_sec",
    "hardening",
    "restart",
    "listen",
    "notify",
    "drain_timeout",
    "secrets",
];
const HEALTH_KEYS: &[&str] = &["http", "command", "timeout", "settle", "confirm_timeout"];
const JOB_KEYS: &[&str] = &[
    "bin",
    "args",
    "schedule",
    "on",
    "timeout",
    "persistent",
    "randomized_delay",
    "environment",
];
const CANARY_KEYS: &[&str] = &[
    "enabled",
    "hosts",
    "window",
    "metrics",
    "requests",
    "errors",
    "max_error_ratio",
    "min_requests",
];
const HOOKS_KEYS: &[&str] = &[
    "before_switch",
    "before_switch_once",
    "after_switch",
    "once_on",
];

/// Reads typed values out of one file, naming keys by their full path.
struct Reader<'s> {
    src: &'s Source,
}

impl Layer {
    /// Reads the ship table at `prefix` (`package.metadata.ship`, or an environment's table).
    pub(crate) fn read(src: &Source, node: Node<'_>, prefix: &str, scope: Scope) -> Result<Layer> {
        Reader { src }.layer(node, prefix, scope)
    }

    /// Reads `[<root>.metadata.ship]` from a Cargo.toml (`root` is `package` or `workspace`);
    /// an empty layer when there is none.
    pub(crate) fn from_manifest(src: &Source, root: &str) -> Result<Layer> {
        let prefix = format!("{root}.metadata.ship");
        match src.get(&[root, "metadata", "ship"]) {
            None => Ok(Layer::default()),
            Some((node, key_span)) => {
                if node.entries().is_none() {
                    let at = src.origin(&prefix, node.span().or(key_span));
                    return Err(at.error(format!("expected a table, found {}", node.found()), None));
                }
                Layer::read(src, node, &prefix, Scope::Top)
            }
        }
    }

    /// Applies `over` on top of `self`: every key `over` sets wins; tables merge key by key.
    pub(crate) fn merge(&mut self, over: &Layer) {
        set(&mut self.bin, &over.bin);
        if over.target.is_some() || over.targets.is_some() {
            self.target.clone_from(&over.target);
            self.targets.clone_from(&over.targets);
        }
        set(&mut self.builder, &over.builder);
        set(&mut self.profile, &over.profile);
        set(&mut self.strip, &over.strip);
        set(&mut self.assets, &over.assets);
        set(&mut self.deploy_to, &over.deploy_to);
        set(&mut self.keep_releases, &over.keep_releases);
        set(&mut self.shared_dirs, &over.shared_dirs);
        set(&mut self.shared_files, &over.shared_files);
        set(&mut self.sudo, &over.sudo);

        let (s, o) = (&mut self.systemd, &over.systemd);
        set(&mut s.unit, &o.unit);
        set(&mut s.args, &o.args);
        for (k, v) in &o.environment {
            s.environment.insert(k.clone(), v.clone());
        }
        set(&mut s.user, &o.user);
        set(&mut s.group, &o.group);
        set(&mut s.restart_sec, &o.restart_sec);
        set(&mut s.hardening, &o.hardening);
        set(&mut s.restart, &o.restart);
        set(&mut s.listen, &o.listen);
        set(&mut s.notify, &o.notify);
        set(&mut s.drain_timeout, &o.drain_timeout);
        set(&mut s.secrets, &o.secrets);

        let (h, o) = (&mut self.health, &over.health);
        set(&mut h.http, &o.http);
        set(&mut h.command, &o.command);
        set(&mut h.timeout, &o.timeout);
        set(&mut h.settle, &o.settle);
        set(&mut h.confirm_timeout, &o.confirm_timeout);

        set(&mut self.hooks.before_switch, &over.hooks.before_switch);
        set(
            &mut self.hooks.before_switch_once,
            &over.hooks.before_switch_once,
        );
        set(&mut self.hooks.after_switch, &over.hooks.after_switch);
        set(&mut self.hooks.once_on, &over.hooks.once_on);
        for (name, job) in &over.jobs {
            match self.jobs.get_mut(name) {
                Some(mine) => mine.merge(job),
                None => {
                    self.jobs.insert(name.clone(), job.clone());
                }
            }
        }

        let (c, o) = (&mut self.canary, &over.canary);
        set(&mut c.at, &o.at);
        set(&mut c.enabled, &o.enabled);
        set(&mut c.hosts, &o.hosts);
        set(&mut c.window, &o.window);
        set(&mut c.metrics, &o.metrics);
        set(&mut c.requests, &o.requests);
        set(&mut c.errors, &o.errors);
        set(&mut c.max_error_ratio, &o.max_error_ratio);
        set(&mut c.min_requests, &o.min_requests);

        set(&mut self.hosts, &over.hosts);
        set(&mut self.ssh_config, &over.ssh_config);
        set(&mut self.secrets_file, &over.secrets_file);
        set(&mut self.connect_parallel, &over.connect_parallel);
        set(&mut self.parallel, &over.parallel);
        set(&mut self.batch, &over.batch);
        set(&mut self.pause, &over.pause);
        set(&mut self.max_fail, &over.max_fail);
        set(&mut self.unreachable, &over.unreachable);

        for (host, h) in &over.per_host {
            match self.per_host.get_mut(host) {
                Some(mine) => {
                    mine.layer.merge(&h.layer);
                    mine.at = h.at.clone();
                }
                None => {
                    self.per_host.insert(host.clone(), h.clone());
                }
            }
        }
        for (name, env) in &over.environments {
            match self.environments.get_mut(name) {
                Some(mine) => {
                    mine.layer.merge(&env.layer);
                    mine.at = env.at.clone();
                }
                None => {
                    self.environments.insert(name.clone(), env.clone());
                }
            }
        }
    }
}

fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
    if src.is_some() {
        dst.clone_from(src);
    }
}

impl Reader<'_> {
    fn layer(&self, node: Node<'_>, prefix: &str, scope: Scope) -> Result<Layer> {
        let mut l = Layer::default();
        let entries = self.table(node, prefix)?;
        for (name, key, value) in entries {
            let path = format!("{prefix}.{name}");
            match name {
                "bin" => l.bin = Some(self.string(value, &path, "a binary name")?),
                "target" => l.target = Some(self.string(value, &path, "a target triple")?),
                "targets" => {
                    l.targets = Some(self.strings(
                        value,
                        &path,
                        "an array of target triples, one per host architecture",
                    )?)
                }
                "builder" => {
                    l.builder = Some(self.string(
                        value,
                        &path,
                        "one of \"auto\", \"cargo\", \"zigbuild\", \"cross\"",
                    )?)
                }
                "profile" => l.profile = Some(self.string(value, &path, "a cargo profile name")?),
                "strip" => l.strip = Some(self.boolean(value, &path)?),
                "assets" => l.assets = Some(self.strings(value, &path, "an array of paths")?),
                "deploy_to" => l.deploy_to = Some(self.string(value, &path, "an absolute path")?),
                "keep_releases" => {
                    l.keep_releases = Some(self.integer(value, &path, "a non-negative integer")?)
                }
                "shared_dirs" => {
                    l.shared_dirs =
                        Some(self.strings(value, &path, "an array of relative paths")?)
                }
                "shared_files" => {
                    l.shared_files =
                        Some(self.strings(value, &path, "an array of relative paths")?)
                }
                "sudo" => l.sudo = Some(self.boolean(value, &path)?),
                "systemd" => self.systemd(&mut l.systemd, value, &path)?,
                "health" => self.health(&mut l.health, value, &path)?,
                "hooks" => self.hooks(&mut l.hooks, value, &path)?,
                "canary" if scope != Scope::Host => self.canary(&mut l.canary, value, &path)?,
                "jobs" => {
                    for (job, job_key, job_node) in self.table(value, &path)? {
                        let job_path =
                            format!("{path}.{}", toml_edit::Key::new(job).display_repr());
                        let at = self
                            .src
                            .origin(&job_path, job_node.span().or(job_key.span()));
                        let j = self.job(job_node, &job_path, at)?;
                        l.jobs.insert(job.to_string(), j);
                    }
                }
                "hosts" if scope == Scope::Environment => {
                    l.hosts = Some(self.strings(
                        value,
                        &path,
                        "an array of hosts like \"deploy@web1.example.com\"",
                    )?)
                }
                "ssh_config" if scope == Scope::Environment => {
                    let s = self.string(value, &path, "a path to an ssh config file")?;
                    l.ssh_config = Some(Val::new(self.src.dir().join(&s.value), s.at));
                }
                "secrets_file" if scope == Scope::Environment => {
                    let s = self.string(value, &path, "a path to a dotenv file")?;
                    l.secrets_file = Some(Val::new(self.src.dir().join(&s.value), s.at));
                }
                "connect_parallel" if scope == Scope::Environment => {
                    l.connect_parallel = Some(self.integer(value, &path, "a positive integer")?)
                }
                "parallel" if scope == Scope::Environment => {
                    l.parallel = Some(self.count_or_text(
                        value,
                        &path,
                        "a positive integer or \"all\"",
                        false,
                    )?)
                }
                "batch" if scope == Scope::Environment => {
                    l.batch = Some(self.count_or_text(
                        value,
                        &path,
                        "a number of hosts, a percentage like \"25%\", or a ramp like [1, \"10%\", \"100%\"]",
                        true,
                    )?)
                }
                "pause" if scope == Scope::Environment => {
                    l.pause = Some(self.string(value, &path, "a duration like \"30s\"")?)
                }
                "max_fail" if scope == Scope::Environment => {
                    l.max_fail = Some(self.count_or_text(
                        value,
                        &path,
                        "a number of hosts or a percentage like \"5%\"",
                        false,
                    )?)
                }
                "unreachable" if scope == Scope::Environment => {
                    l.unreachable = Some(self.string(value, &path, "\"fail\" or \"defer\"")?)
                }
                "per_host" if scope == Scope::Environment => {
                    for (host, host_key, host_node) in self.table(value, &path)? {
                        let host_path =
                            format!("{path}.{}", toml_edit::Key::new(host).display_repr());
                        let at = self
                            .src
                            .origin(&host_path, host_node.span().or(host_key.span()));
                        let layer = self.layer(host_node, &host_path, Scope::Host)?;
                        l.per_host.insert(host.to_string(), EnvLayer { at, layer });
                    }
                }
                // The order services of a workspace deploy switch in (read by `workspace`,
                // which checks the names against the members).
                "order" if scope == Scope::Top && prefix.starts_with("workspace.") => {
                    self.strings(value, &path, "an array of package names")?;
                }
                "order" if scope == Scope::Top => {
                    let at = self.src.origin(&path, key.span());
                    return Err(at.error(
                        "`order` (the order services of a workspace deploy switch in) belongs to the workspace",
                        Some("move it to `[workspace.metadata.ship]` in the workspace's Cargo.toml".into()),
                    ));
                }
                "environments" if scope == Scope::Top => {
                    for (env, env_key, env_node) in self.table(value, &path)? {
                        let env_path = format!("{path}.{env}");
                        let at = self
                            .src
                            .origin(&env_path, env_node.span().or(env_key.span()));
                        check_env_name(env, &self.src.origin(&env_path, env_key.span()))?;
                        let layer = self.layer(env_node, &env_path, Scope::Environment)?;
                        l.environments
                            .insert(env.to_string(), EnvLayer { at, layer });
                    }
                }
                _ => {
                    let at = self.src.origin(&path, key.span());
                    return Err(match (scope, name) {
                        (Scope::Top, n) if ENV_ONLY_KEYS.contains(&n) => at.error(
                            "this key belongs to an environment",
                            Some(format!("move it into an environment's table, e.g. `[{prefix}.environments.prod]`")),
                        ),
                        (Scope::Host, n) if ENV_ONLY_KEYS.contains(&n) || n == "environments" || n == "canary" => at.error(
                            "this key applies to the whole environment; it cannot be set per host",
                            Some(format!("move it to `[{}]`", prefix.rsplit_once(".per_host.").map(|p| p.0).unwrap_or(prefix))),
                        ),
                        (Scope::Environment, "environments") => {
                            at.error("environments cannot be nested", Some(format!("move it to `[{}]`", top_of(prefix))))
                        }
                        _ => {
                            let valid: Vec<&str> = match scope {
                                Scope::Top => COMMON_KEYS.iter().chain(&["environments", "canary"]).copied().collect(),
                                Scope::Environment => ENV_ONLY_KEYS.iter().chain(COMMON_KEYS).chain(&["canary"]).copied().collect(),
                                Scope::Host => COMMON_KEYS.to_vec(),
                            };
                            unknown_key(&at, name, prefix, &valid)
                        }
                    });
                }
            }
        }
        if let (Some(_), Some(many)) = (&l.target, &l.targets) {
            return Err(many.at.error(
                "set either `target` (one) or `targets` (one per host architecture), not both",
                Some("for an environment whose hosts differ in architecture keep `targets` and remove `target`".into()),
            ));
        }
        Ok(l)
    }

    fn systemd(&self, s: &mut SystemdLayer, node: Node<'_>, prefix: &str) -> Result<()> {
        for (name, key, value) in self.table(node, prefix)? {
            let path = format!("{prefix}.{name}");
            match name {
                "unit" => s.unit = Some(self.string(value, &path, "a unit name like \"hello\"")?),
                "args" => s.args = Some(self.strings(value, &path, "an array of strings")?),
                "environment" => {
                    for (var, var_key, var_value) in self.table(value, &path)? {
                        let var_path = format!("{path}.{var}");
                        let name_at = self.src.origin(&var_path, var_key.span());
                        let v = self.string(
                            var_value,
                            &var_path,
                            "a string (quote numbers and booleans)",
                        )?;
                        s.environment.insert(var.to_string(), (name_at, v));
                    }
                }
                "user" => s.user = Some(self.string(value, &path, "a user name")?),
                "group" => s.group = Some(self.string(value, &path, "a group name")?),
                "restart_sec" => s.restart_sec = Some(self.string(value, &path, DURATION)?),
                "hardening" => s.hardening = Some(self.boolean(value, &path)?),
                "restart" => {
                    s.restart = Some(self.string(
                        value,
                        &path,
                        "one of \"restart\", \"socket\", \"blue-green\"",
                    )?)
                }
                "listen" => {
                    s.listen = Some(self.strings(
                        value,
                        &path,
                        "an array of addresses like [\"0.0.0.0:8080\"]",
                    )?)
                }
                "notify" => s.notify = Some(self.boolean(value, &path)?),
                "drain_timeout" => s.drain_timeout = Some(self.string(value, &path, DURATION)?),
                "secrets" => {
                    s.secrets = Some(self.strings(
                        value,
                        &path,
                        "an array of environment variable names like [\"DATABASE_URL\"]",
                    )?)
                }
                _ => {
                    return Err(unknown_key(
                        &self.src.origin(&path, key.span()),
                        name,
                        prefix,
                        SYSTEMD_KEYS,
                    ))
                }
            }
        }
        Ok(())
    }

    fn health(&self, h: &mut HealthLayer, node: Node<'_>, prefix: &str) -> Result<()> {
        for (name, key, value) in self.table(node, prefix)? {
            let path = format!("{prefix}.{name}");
            match name {
                "http" => {
                    h.http = Some(self.string(
                        value,
                        &path,
                        "a URL like \"http://127.0.0.1:8080/healthz\"",
                    )?)
                }
                "command" => h.command = Some(self.string(value, &path, "a shell command")?),
                "timeout" => h.timeout = Some(self.string(value, &path, DURATION)?),
                "settle" => h.settle = Some(self.string(value, &path, DURATION)?),
                "confirm_timeout" => h.confirm_timeout = Some(self.string(value, &path, DURATION)?),
                _ => {
                    return Err(unknown_key(
                        &self.src.origin(&path, key.span()),
                        name,
                        prefix,
                        HEALTH_KEYS,
                    ))
                }
            }
        }
        Ok(())
    }

    fn hooks(&self, h: &mut HooksLayer, node: Node<'_>, prefix: &str) -> Result<()> {
        for (name, key, value) in self.table(node, prefix)? {
            let path = format!("{prefix}.{name}");
            match name {
                "before_switch" => {
                    h.before_switch =
                        Some(self.strings(value, &path, "an array of shell commands")?)
                }
                "before_switch_once" => {
                    h.before_switch_once =
                        Some(self.strings(value, &path, "an array of shell commands")?)
                }
                "after_switch" => {
                    h.after_switch =
                        Some(self.strings(value, &path, "an array of shell commands")?)
                }
                "once_on" => {
                    h.once_on = Some(self.string(value, &path, "a host as written in `hosts`")?)
                }
                _ => {
                    return Err(unknown_key(
                        &self.src.origin(&path, key.span()),
                        name,
                        prefix,
                        HOOKS_KEYS,
                    ))
                }
            }
        }
        Ok(())
    }

    fn job(&self, node: Node<'_>, prefix: &str, at: Origin) -> Result<JobLayer> {
        let mut j = JobLayer {
            at,
            bin: None,
            args: None,
            schedule: None,
            on: None,
            timeout: None,
            persistent: None,
            randomized_delay: None,
            environment: BTreeMap::new(),
        };
        for (name, key, value) in self.table(node, prefix)? {
            let path = format!("{prefix}.{name}");
            match name {
                "bin" => j.bin = Some(self.string(value, &path, "a binary name")?),
                "args" => j.args = Some(self.strings(value, &path, "an array of strings")?),
                "schedule" => {
                    j.schedule = Some(self.string(
                        value,
                        &path,
                        "a systemd calendar expression like \"*-*-* 03:00:00\" or \"daily\"",
                    )?)
                }
                "on" => j.on = Some(self.string(value, &path, "\"all\" or \"one\"")?),
                "timeout" => j.timeout = Some(self.string(value, &path, DURATION)?),
                "persistent" => j.persistent = Some(self.boolean(value, &path)?),
                "randomized_delay" => {
                    j.randomized_delay = Some(self.string(value, &path, DURATION)?)
                }
                "environment" => {
                    for (var, var_key, var_value) in self.table(value, &path)? {
                        let var_path = format!("{path}.{var}");
                        let name_at = self.src.origin(&var_path, var_key.span());
                        let v = self.string(
                            var_value,
                            &var_path,
                            "a string (quote numbers and booleans)",
                        )?;
                        j.environment.insert(var.to_string(), (name_at, v));
                    }
                }
                _ => {
                    return Err(unknown_key(
                        &self.src.origin(&path, key.span()),
                        name,
                        prefix,
                        JOB_KEYS,
                    ))
                }
            }
        }
        Ok(j)
    }

    fn canary(&self, c: &mut CanaryLayer, node: Node<'_>, prefix: &str) -> Result<()> {
        let entries = self.table(node, prefix)?;
        c.at = Some(self.src.origin(prefix, node.span()));
        for (name, key, value) in entries {
            let path = format!("{prefix}.{name}");
            match name {
                "enabled" => c.enabled = Some(self.boolean(value, &path)?),
                "hosts" => {
                    let at = self.src.origin(&path, value.span());
                    let v = if let Some(i) = value.as_integer() {
                        BatchValue::Count(i)
                    } else if let Some(s) = value.as_str() {
                        BatchValue::Text(s.to_string())
                    } else {
                        return Err(at.error(
                            format!(
                                "expected a number of hosts or a percentage like \"10%\", found {}",
                                value.found()
                            ),
                            None,
                        ));
                    };
                    c.hosts = Some(Val::new(v, at));
                }
                "window" => c.window = Some(self.string(value, &path, DURATION)?),
                "metrics" => {
                    c.metrics = Some(self.string(
                        value,
                        &path,
                        "a URL like \"http://127.0.0.1:7070/metrics\"",
                    )?)
                }
                "requests" | "errors" => {
                    let v = Some(self.string(
                        value,
                        &path,
                        "a series selector like `http_requests_total{code=~\"5..\"}`",
                    )?);
                    if name == "requests" {
                        c.requests = v;
                    } else {
                        c.errors = v;
                    }
                }
                "max_error_ratio" => {
                    let at = self.src.origin(&path, value.span());
                    match value.as_number() {
                        Some(f) => c.max_error_ratio = Some(Val::new(f, at)),
                        None => {
                            return Err(at.error(
                                format!(
                                    "expected a ratio from 0 to 1 like 0.01, found {}",
                                    value.found()
                                ),
                                None,
                            ))
                        }
                    }
                }
                "min_requests" => {
                    c.min_requests = Some(self.integer(value, &path, "a number of requests")?)
                }
                _ => {
                    return Err(unknown_key(
                        &self.src.origin(&path, key.span()),
                        name,
                        prefix,
                        CANARY_KEYS,
                    ))
                }
            }
        }
        Ok(())
    }

    fn table<'a>(
        &self,
        node: Node<'a>,
        path: &str,
    ) -> Result<Vec<(&'a str, &'a toml_edit::Key, Node<'a>)>> {
        node.entries().ok_or_else(|| {
            self.src
                .origin(path, node.span())
                .error(format!("expected a table, found {}", node.found()), None)
        })
    }

    fn string(&self, node: Node<'_>, path: &str, expected: &str) -> Result<Val<String>> {
        let at = self.src.origin(path, node.span());
        match node.as_str() {
            Some(s) => Ok(Val::new(s.to_string(), at)),
            None => Err(at.error(format!("expected {expected}, found {}", node.found()), None)),
        }
    }

    fn boolean(&self, node: Node<'_>, path: &str) -> Result<Val<bool>> {
        let at = self.src.origin(path, node.span());
        match node.as_bool() {
            Some(b) => Ok(Val::new(b, at)),
            None => Err(at.error(
                format!("expected a boolean (true or false), found {}", node.found()),
                None,
            )),
        }
    }

    /// An integer or a string (`batch`, `parallel`, `max_fail`); with `list`, also an array of
    /// those (a ramp).
    fn count_or_text(
        &self,
        node: Node<'_>,
        path: &str,
        expected: &str,
        list: bool,
    ) -> Result<Val<BatchValue>> {
        let at = self.src.origin(path, node.span());
        let one = |n: &Node<'_>| {
            if let Some(i) = n.as_integer() {
                Some(BatchValue::Count(i))
            } else {
                n.as_str().map(|s| BatchValue::Text(s.to_string()))
            }
        };
        let v = match (one(&node), node.as_array()) {
            (Some(v), _) => Some(v),
            (None, Some(items)) if list => items
                .iter()
                .map(one)
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())
                .map(BatchValue::List),
            _ => None,
        };
        match v {
            Some(v) => Ok(Val::new(v, at)),
            None => Err(at.error(format!("expected {expected}, found {}", node.found()), None)),
        }
    }

    fn integer(&self, node: Node<'_>, path: &str, expected: &str) -> Result<Val<i64>> {
        let at = self.src.origin(path, node.span());
        match node.as_integer() {
            Some(i) => Ok(Val::new(i, at)),
            None => Err(at.error(format!("expected {expected}, found {}", node.found()), None)),
        }
    }

    fn strings(&self, node: Node<'_>, path: &str, expected: &str) -> Result<Strings> {
        let at = self.src.origin(path, node.span());
        let Some(items) = node.as_array() else {
            return Err(at.error(format!("expected {expected}, found {}", node.found()), None));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let item_at = self.src.origin(format!("{path}[{i}]"), item.span());
            match item.as_str() {
                Some(s) => out.push(Val::new(s.to_string(), item_at)),
                None => {
                    return Err(
                        item_at.error(format!("expected a string, found {}", item.found()), None)
                    )
                }
            }
        }
        Ok(Val::new(out, at))
    }
}

/// What duration values look like, for messages.
pub(crate) const DURATION: &str = "a duration like \"30s\", \"2m\" or \"1m 30s\"";

fn top_of(prefix: &str) -> &str {
    prefix.split(".environments.").next().unwrap_or(prefix)
}

fn check_env_name(name: &str, at: &Origin) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(at.error(
            format!(
                "expected an environment name made of letters, digits, `-` and `_`, found `{name}`"
            ),
            None,
        ))
    }
}

/// The error for a key that is not allowed at `prefix`, listing the valid ones.
fn unknown_key(at: &Origin, name: &str, prefix: &str, valid: &[&str]) -> crate::Error {
    let problem = match closest(name, valid) {
        Some(s) => format!("unknown key; did you mean `{s}`?"),
        None => "unknown key".to_string(),
    };
    let mut sorted = valid.to_vec();
    sorted.sort_unstable();
    at.error(
        problem,
        Some(format!(
            "the keys allowed in `[{prefix}]` are: {}",
            crate::workspace::list(&sorted)
        )),
    )
}

/// The valid key closest to `name`, when it is close enough to be a typo.
pub(crate) fn closest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    valid
        .iter()
        .map(|v| (edit_distance(&lower, v), *v))
        .filter(|(d, v)| *d <= (v.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read(text: &str) -> Result<Layer> {
        let src = Source::parse(Path::new("/p/Cargo.toml"), text.to_string())?;
        Layer::from_manifest(&src, "package")
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("keep_release", "keep_releases"), 1);
        assert_eq!(closest("keep_release", COMMON_KEYS), Some("keep_releases"));
        assert_eq!(closest("deploy-to", COMMON_KEYS), Some("deploy_to"));
        assert_eq!(closest("timout", HEALTH_KEYS), Some("timeout"));
        assert_eq!(closest("zzz", COMMON_KEYS), None);
    }

    #[test]
    fn reads_every_table_with_positions() {
        let l = read(
            "[package.metadata.ship]\nkeep_releases = 3\nhealth.timeout = \"1s\"\n\
             [package.metadata.ship.systemd]\nenvironment = { A = \"1\" }\n\
             [package.metadata.ship.environments.prod]\nhosts = [\"a\", \"b\"]\nbatch = \"50%\"\n",
        )
        .unwrap();
        assert_eq!(l.keep_releases.as_ref().unwrap().value, 3);
        assert_eq!(
            l.keep_releases.as_ref().unwrap().at.location,
            "/p/Cargo.toml:2:17"
        );
        assert_eq!(
            l.health.timeout.as_ref().unwrap().at.key,
            "package.metadata.ship.health.timeout"
        );
        assert_eq!(l.systemd.environment["A"].0.location, "/p/Cargo.toml:5:17");
        let prod = &l.environments["prod"];
        let hosts = prod.layer.hosts.as_ref().unwrap();
        assert_eq!(
            hosts.value[1].at.key,
            "package.metadata.ship.environments.prod.hosts[1]"
        );
        assert_eq!(hosts.value[1].at.location, "/p/Cargo.toml:7:15");
        assert_eq!(
            prod.layer.batch.as_ref().unwrap().value,
            BatchValue::Text("50%".into())
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_list_valid_ones() {
        let err = read("[package.metadata.ship]\nkeep_release = 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/p/Cargo.toml:2:1: `package.metadata.ship.keep_release`: unknown key; did you mean `keep_releases`?"
        );
        let help = err.help().unwrap();
        assert!(
            help.starts_with("the keys allowed in `[package.metadata.ship]` are: `assets`, `bin`"),
            "{help}"
        );
        let err = read("[package.metadata.ship.environments.prod.health]\ntimout = \"3s\"\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/p/Cargo.toml:2:1: `package.metadata.ship.environments.prod.health.timout`: unknown key; did you mean `timeout`?"
        );
        let err = read("[package.metadata.ship]\nhosts = [\"a\"]\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("this key belongs to an environment"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_say_what_was_found() {
        let err = read("[package.metadata.ship]\nkeep_releases = \"five\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/p/Cargo.toml:2:17: `package.metadata.ship.keep_releases`: expected a non-negative integer, found a string (\"five\")"
        );
        let err = read("[package.metadata.ship]\nassets = [\"a\", 1]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/p/Cargo.toml:2:16: `package.metadata.ship.assets[1]`: expected a string, found an integer (1)"
        );
        let err = read("[package.metadata]\nship = 1\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("`package.metadata.ship`: expected a table, found an integer (1)"),
            "{err}"
        );
    }

    #[test]
    fn merge_is_key_by_key() {
        let mut base = read(
            "[package.metadata.ship.health]\nhttp = \"http://a:1/\"\ntimeout = \"5s\"\n\
             [package.metadata.ship.systemd]\nenvironment = { A = \"1\", B = \"2\" }\n",
        )
        .unwrap();
        let over = read(
            "[package.metadata.ship.health]\ntimeout = \"9s\"\n\
             [package.metadata.ship.systemd]\nenvironment = { B = \"3\" }\n",
        )
        .unwrap();
        base.merge(&over);
        assert_eq!(base.health.http.unwrap().value, "http://a:1/");
        assert_eq!(base.health.timeout.unwrap().value, "9s");
        assert_eq!(base.systemd.environment["A"].1.value, "1");
        assert_eq!(base.systemd.environment["B"].1.value, "3");
    }
}
