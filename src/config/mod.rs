//! The ship configuration: `[workspace.metadata.ship]`, `[package.metadata.ship]`, an
//! environment's overrides and command-line flags, merged in that order and validated once.
//!
//! * `layer.rs`: one serde struct of `Option`s per table (`deny_unknown_fields`) and the merge.
//! * `source.rs`: reads Cargo.toml text with spans so errors point at file:line:column.
//! * `validate.rs`: turns the merged layer into the complete [`Config`] below, or the first
//!   precise error (file, key, what was expected).
//!
//! Everything downstream (build, package, deploy...) reads only [`Config`].

mod layer;
mod source;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use layer::Layer;
pub use validate::{collision, load, load_selected, show};

use crate::target::Target;

/// What the command line contributes to the configuration (the last layer).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--manifest-path`; `None` means cargo's own search from the current directory.
    pub manifest_path: Option<PathBuf>,
    /// `-p/--package`; required in a workspace with several packages that have a ship section
    /// (or several binaries), otherwise inferred.
    pub package: Option<String>,
    /// The environment to resolve (`deploy prod` → `Some("prod")`); `None` for `build`.
    pub environment: Option<String>,
    /// `--target` override.
    pub target: Option<String>,
    /// `--profile` override (default `release`).
    pub profile: Option<String>,
    /// `--features` (comma or space separated, as cargo).
    pub features: Vec<String>,
    /// `--all-features`.
    pub all_features: bool,
    /// `--no-default-features`.
    pub no_default_features: bool,
}

/// Which tool compiles the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderKind {
    /// zigbuild for glibc-pinned targets, cross when a container engine runs and the target is
    /// foreign, plain cargo otherwise.
    Auto,
    /// `cargo build` (adds the rustup target when missing).
    Cargo,
    /// `cargo zigbuild`.
    Zigbuild,
    /// `cross build` (honours Cross.toml).
    Cross,
}

/// The fully resolved configuration for one package (and one environment, when given).
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The package's Cargo.toml.
    pub manifest_path: PathBuf,
    /// The package's directory (assets are relative to it).
    pub package_root: PathBuf,
    /// cargo's target directory (artifacts go under `<target_dir>/ship`).
    pub target_dir: PathBuf,
    /// Package name.
    pub package: String,
    /// Package version.
    pub version: String,
    /// The binary to ship.
    pub bin: String,
    /// Target triple, possibly with a glibc pin (the first of `targets`, or `--target`).
    pub target: Target,
    /// Every configured target, one per host architecture (`targets = [...]`); just `target`
    /// when one is configured.
    pub targets: Vec<Target>,
    /// Builder to use.
    pub builder: BuilderKind,
    /// Cargo profile (default `release`).
    pub profile: String,
    /// Cargo features to enable.
    pub features: Vec<String>,
    /// `--all-features`.
    pub all_features: bool,
    /// `--no-default-features`.
    pub no_default_features: bool,
    /// Strip the binary before packing (default true).
    pub strip: bool,
    /// Files and directories packed into the release root, relative to the package root.
    pub assets: Vec<String>,
    /// Absolute directory on the hosts (default `/opt/<bin>`).
    pub deploy_to: String,
    /// How many finished releases to keep on each host (default 5, at least 1).
    pub keep_releases: usize,
    /// Directories under `shared/` linked into every release (relative paths).
    pub shared_dirs: Vec<String>,
    /// Files under `shared/` linked into every release (relative paths).
    pub shared_files: Vec<String>,
    /// Run systemctl and journalctl through `sudo -n` (non-root deploy user).
    pub sudo: bool,
    /// The generated systemd unit.
    pub systemd: SystemdConfig,
    /// How a new release is judged healthy.
    pub health: HealthConfig,
    /// `[package.metadata.ship.canary]`: the first hosts are judged on the service's own
    /// metrics before the rest switch (issue #20); `None` when not configured or disabled.
    pub canary: Option<CanaryConfig>,
    /// Commands run on the hosts around the switch.
    pub hooks: HooksConfig,
    /// `[package.metadata.ship.jobs.<name>]`: scheduled jobs run from the live release (#21).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, JobConfig>,
    /// The environment, when one was asked for.
    pub environment: Option<Environment>,
    /// `[...environments.<env>.per_host."<host>"]`: the whole configuration as resolved for
    /// each host that has overrides, keyed by the host as `HostSpec` displays it.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub per_host: std::collections::BTreeMap<String, Config>,
}

/// `[package.metadata.ship.systemd]`.
#[derive(Debug, Clone, Serialize)]
pub struct SystemdConfig {
    /// Unit name without `.service` (default: the bin name).
    pub unit: String,
    /// Arguments after the binary in ExecStart.
    pub args: Vec<String>,
    /// Environment= lines.
    pub environment: BTreeMap<String, String>,
    /// User= (default: none, so the service runs as root, whoever deploys it).
    pub user: Option<String>,
    /// Group=.
    pub group: Option<String>,
    /// RestartSec= (default 1s).
    pub restart_sec: Duration,
    /// Apply the hardening options (default true).
    pub hardening: bool,
    /// How a new release replaces the running one (default `restart`).
    pub restart: RestartStrategy,
    /// Sockets systemd holds for the service (`ListenStream=`), in the order the service
    /// receives them (fds 3..). Needed by `socket` and `blue-green`.
    pub listen: Vec<String>,
    /// `Type=notify`: the service says READY=1 when it can serve (default false: `Type=exec`).
    pub notify: bool,
    /// Time the old process gets after SIGTERM to finish requests in flight (default 30s):
    /// `TimeoutStopSec=`, then SIGKILL.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    /// Names of environment variables whose values are secrets: read on the deploying machine
    /// (its environment, else the environment's `secrets_file`), never from Cargo.toml, and
    /// given to the service through a root-only file on the host.
    pub secrets: Vec<String>,
}

/// `systemd.restart`: how a new release replaces the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RestartStrategy {
    /// `systemctl restart`: connections are refused between the old process exiting and the
    /// new one listening.
    #[serde(rename = "restart")]
    Restart,
    /// A `<unit>.socket` holds the listening sockets across the restart: new connections wait
    /// in the kernel's queue instead of being refused.
    #[serde(rename = "socket")]
    Socket,
    /// Two instances (`<unit>@blue`, `<unit>@green`) share the socket: the new release starts
    /// beside the old one, which is stopped only once the new one is proven.
    #[serde(rename = "blue-green")]
    BlueGreen,
}

impl RestartStrategy {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartStrategy::Restart => "restart",
            RestartStrategy::Socket => "socket",
            RestartStrategy::BlueGreen => "blue-green",
        }
    }
}

/// `[package.metadata.ship.health]`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthConfig {
    /// URL probed on the host (through the SSH connection) until it answers 2xx.
    pub http: Option<String>,
    /// A command run on the host in the release dir; exit 0 means healthy.
    pub command: Option<String>,
    /// How long the new release has to become healthy (default 30s).
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// How long it must then stay up with the same process (default 3s).
    #[serde(with = "humantime_serde_compat")]
    pub settle: Duration,
    /// The dead-man's switch: a host puts the previous release back by itself unless the
    /// deploy confirms the new one within this time after the switch (default 90s; zero: off).
    #[serde(with = "humantime_serde_compat")]
    pub confirm_timeout: Duration,
}

/// `[package.metadata.ship.canary]` (issue #20).
#[derive(Debug, Clone, Serialize)]
pub struct CanaryConfig {
    /// How many of the first hosts are the canary.
    pub hosts: CanaryHosts,
    /// How long the canary is judged under real traffic (default 2m).
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
    /// The Prometheus text endpoint, read on each host through its SSH connection.
    pub metrics: String,
    /// Selector of the counter of all requests (summed over its series).
    pub requests: String,
    /// Selector of the counter of failed requests.
    pub errors: String,
    /// How far the canary's error ratio may exceed the baseline's (default 0.01).
    pub max_error_ratio: f64,
    /// Fewer canary requests in the window: inconclusive (default 100).
    pub min_requests: u64,
}

/// `canary.hosts`: a count or a percentage of the deploy's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryHosts {
    /// This many hosts.
    Count(usize),
    /// This percentage of the hosts (rounded up, at least one).
    Percent(u8),
}

impl CanaryHosts {
    /// How many of `total` hosts are canaries (never more than `total`).
    pub fn count(self, total: usize) -> usize {
        match self {
            CanaryHosts::Count(n) => n.min(total),
            CanaryHosts::Percent(p) => (total * p as usize).div_ceil(100).max(1).min(total),
        }
    }
}

/// `[package.metadata.ship.hooks]`: shell commands (run by `sh -c` on the host, in the release
/// directory, with `SHIP_*` variables set).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HooksConfig {
    /// Run on every host after its staging, before any host switches; a failure stops the
    /// deploy.
    pub before_switch: Vec<String>,
    /// Run once per deploy, on the `once_on` host (default: the first), after every host has staged and before any
    /// switch (database migrations); a failure stops the deploy.
    pub before_switch_once: Vec<String>,
    /// Run after the restart, once the release is healthy.
    pub after_switch: Vec<String>,
    /// `once_on`: the host (as `HostSpec` displays it) that runs `before_switch_once`;
    /// `None`: the first host of the deploy.
    pub once_on: Option<String>,
}

/// `[package.metadata.ship.jobs.<name>]`: a binary of the package run on a schedule by a
/// systemd timer, from the release `current` points at when it starts (see [`crate::jobs`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobConfig {
    /// The binary (default: the service's `bin`).
    pub bin: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// `OnCalendar=`.
    pub schedule: String,
    /// Which hosts run it.
    pub on: JobHosts,
    /// `RuntimeMaxSec=`: the longest run (`None`: no limit).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// `Persistent=`: a run missed while the host was off happens when it is back.
    pub persistent: bool,
    /// `RandomizedDelaySec=`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub randomized_delay: Option<Duration>,
    /// Environment= lines on top of `systemd.environment`.
    pub environment: BTreeMap<String, String>,
}

/// `jobs.<name>.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobHosts {
    /// Every host of the environment (the default).
    All,
    /// One host: `hooks.once_on`, else the environment's first host.
    One,
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// A resolved `[package.metadata.ship.environments.<name>]`.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// The environment's name.
    pub name: String,
    /// Hosts, in configured order.
    pub hosts: Vec<HostSpec>,
    /// ssh config file passed as `-F` (absolute after resolving against the package root).
    pub ssh_config: Option<PathBuf>,
    /// Dotenv file on the deploying machine with secret values (absolute once resolved).
    pub secrets_file: Option<PathBuf>,
    /// SSH handshakes in flight at most (default 10: sshd's `MaxStartups 10:30:100`, on a
    /// jump host too, refuses an 11th concurrent unauthenticated connection).
    pub connect_parallel: usize,
    /// Connected hosts worked on at once; `None` (the default): every connected host.
    pub parallel: Option<usize>,
    /// The switch batches (#19): each entry is the size of the next batch, the last one
    /// repeating until every host is done. `[All]` by default: one batch.
    pub batch: Vec<Batch>,
    /// Between two batches: how long the switched hosts are watched (re-probed, their units
    /// checked for restarts) before the next batch switches.
    #[serde(with = "humantime_serde_compat")]
    pub pause: Duration,
    /// Hosts that may fail (or be deferred) before the deploy stops and puts the fleet back.
    pub max_fail: Budget,
    /// What a host that cannot be reached or fails preflight does to the deploy.
    pub unreachable: Unreachable,
}

impl Environment {
    /// How many connected hosts are worked on at once (`parallel`, else all of them).
    pub fn at_once(&self) -> usize {
        self.parallel.unwrap_or(usize::MAX)
    }

    /// The sizes of the switch batches for `hosts` hosts, in order (they add up to `hosts`).
    pub fn batch_sizes(&self, hosts: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut left = hosts;
        let mut ramp = self.batch.iter();
        let mut last = Batch::All;
        while left > 0 {
            if let Some(b) = ramp.next() {
                last = *b;
            }
            let n = last.size(hosts).min(left);
            sizes.push(n);
            left -= n;
        }
        sizes
    }
}

/// The size of one switch batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Batch {
    /// All hosts (left) together.
    All,
    /// This many hosts.
    Count(usize),
    /// This percentage of all the hosts (rounded up, at least one).
    Percent(u8),
}

impl Batch {
    /// Batch size for `hosts` hosts.
    pub fn size(self, hosts: usize) -> usize {
        match self {
            Batch::All => hosts.max(1),
            Batch::Count(n) => n.max(1),
            Batch::Percent(p) => (hosts * p as usize).div_ceil(100).max(1),
        }
    }
}

/// `max_fail`: how many hosts may fail (a count, or a percentage of the hosts, rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// This many hosts.
    Count(usize),
    /// This percentage of the deploy's hosts, rounded down.
    Percent(u8),
}

impl Budget {
    /// Hosts that may fail out of `hosts`.
    pub fn allowed(self, hosts: usize) -> usize {
        match self {
            Budget::Count(n) => n,
            Budget::Percent(p) => hosts * p as usize / 100,
        }
    }
}

/// `unreachable`: a host that cannot be reached or fails preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreachable {
    /// Stop the deploy before anything changes (the default).
    Fail,
    /// Leave it on its old release, count it against `max_fail`, deploy the others.
    Defer,
}

/// `[user@]host[:port]` as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSpec {
    /// The user, when given.
    pub user: Option<String>,
    /// Host name, address or ssh_config alias.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

impl std::fmt::Display for HostSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// The configuration for one host (as `HostSpec` displays it): its per-host overrides
    /// applied, or the environment's own.
    pub fn for_host(&self, host: &str) -> &Config {
        self.per_host.get(host).unwrap_or(self)
    }

    /// Every binary a release of this config holds: `bin`, then the jobs' other binaries.
    pub fn bins(&self) -> Vec<String> {
        let mut bins = vec![self.bin.clone()];
        for j in self.jobs.values() {
            if !bins.contains(&j.bin) {
                bins.push(j.bin.clone());
            }
        }
        bins
    }

    /// The host (as `HostSpec` displays it) that runs the `on = "one"` jobs: `hooks.once_on`,
    /// else the environment's first host.
    pub fn jobs_host(&self) -> Option<String> {
        self.hooks.once_on.clone().or_else(|| {
            self.environment
                .as_ref()
                .and_then(|e| e.hosts.first())
                .map(|h| h.to_string())
        })
    }

    /// The environment, or a usage error naming the command that needs one.
    pub fn env(&self) -> crate::Result<&Environment> {
        self.environment.as_ref().ok_or_else(|| {
            crate::Error::usage(
                "this command needs an environment",
                Some("e.g. `cargo ship deploy prod`".into()),
            )
        })
    }
}

mod humantime_serde_compat {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// Builds real [`Config`]s from Cargo.toml text for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::{load, Config, LoadOptions};

    /// A package `hello` (deploy_to /opt/hello, args `--port 8080`, environment `test` with
    /// hosts h1, h2) with `systemd` lines added to its `[package.metadata.ship.systemd]`.
    pub fn config_with(systemd: &str) -> Config {
        config_from(systemd, "")
    }

    /// [`config_with`], plus lines for `[package.metadata.ship.health]`.
    pub fn config_from(systemd: &str, health: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        std::fs::create_dir_all(dir.join("src")).expect("src");
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").expect("main.rs");
        let manifest = dir.join("Cargo.toml");
        std::fs::write(
            &manifest,
            format!(
                "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n\
                 [package.metadata.ship]\ndeploy_to = \"/opt/hello\"\n\n\
                 [package.metadata.ship.systemd]\nargs = [\"--port\", \"8080\"]\n{systemd}\n\
                 [package.metadata.ship.health]\n{health}\n\
                 [package.metadata.ship.environments.test]\nhosts = [\"h1\", \"h2\"]\n"
            ),
        )
        .expect("Cargo.toml");
        load(&LoadOptions {
            manifest_path: Some(manifest),
            environment: Some("test".into()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("test config does not load: {e}"))
    }
}
