//! The command line: clap lives here and only here. Each subcommand turns its flags into the
//! library's plain option structs and calls one flow.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cargo_ship::config::{self, LoadOptions};
use cargo_ship::remote::ssh_files::{self, SshFiles};
use cargo_ship::ui::{ColorChoice, Format, Ui, Verbosity};
use cargo_ship::{
    approval, deploy, doctor, exec, init, lock, logs, package, prune, rollback, setup, status,
    Result,
};

/// `cargo ship ...` is run by cargo as `cargo-ship ship ...`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap_cargo::style::CLAP_STYLING)]
pub enum Cargo {
    /// Build, deploy and roll back a Rust service on Linux servers running systemd.
    #[command(version, author, long_about = LONG_ABOUT, after_long_help = EXIT_CODES)]
    Ship(Ship),
}

/// The one-line description (also the first line of `LONG_ABOUT`).
pub(crate) const ABOUT: &str =
    "Build, deploy and roll back a Rust service on Linux servers running systemd.";

pub(crate) const LONG_ABOUT: &str = "\
Build, deploy and roll back a Rust service on Linux servers running systemd.

cargo ship reads [package.metadata.ship] from Cargo.toml, builds a reproducible release artifact,
and ships it to every host of an environment over one multiplexed OpenSSH connection per host,
into Capistrano-style releases/ with an atomically switched `current` symlink. A release that
is not healthy after the restart is rolled back by itself.

Run `cargo ship init` to add a commented configuration to Cargo.toml.";

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
    0  success
    1  anything else (local I/O...)
    2  bad command line or workspace
    3  invalid configuration
    4  build or packing failed
    5  a host could not be reached or its host key verified
    6  a host failed preflight; nothing was changed
    7  another deploy holds the lock
    8  the new release was unhealthy and was rolled back
    9  a remote step failed (stage, hook, switch, rollback), or `exec`'s command failed on a host
   10  status: the hosts do not all run the same healthy release
   12  deploy: the canary was judged worse on its metrics and reverted
   13  deploy: the canary could not be judged (too few requests, metrics unreadable) and was reverted
  130  interrupted; hosts were put back as they were

Under GitHub Actions (GITHUB_ACTIONS=true) the step output `result` names the code: 0 success,
1 error, 2 usage, 3 config, 4 build, 5 unreachable, 6 preflight, 7 locked, 8 unhealthy,
9 failed, 10 not-healthy, 12 canary-worse, 13 canary-inconclusive, 130 interrupted.";

/// Top-level flags shared by every subcommand, and the subcommand.
#[derive(Debug, Args)]
pub struct Ship {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Use verbose output (show every remote script and local command)
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Do not print progress, only errors and requested output
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Coloring: auto, always, never [env: CARGO_TERM_COLOR]
    #[arg(long, global = true, value_name = "WHEN")]
    color: Option<ColorArg>,
    /// Output format: human (on stderr) or json (one event per line on stdout)
    #[arg(long, global = true, value_name = "FMT", default_value = "human")]
    message_format: FormatArg,
    /// ssh config for every host, read instead of ~/.ssh/config; its settings win over the
    /// environment's `ssh_config`, which is still read after it
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CARGO_SHIP_SSH_CONFIG"
    )]
    ssh_config: Option<PathBuf>,
    /// The only known_hosts file to trust (GlobalKnownHostsFile is /dev/null, host keys are
    /// checked strictly); ~/.ssh/config is then not read
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CARGO_SHIP_KNOWN_HOSTS"
    )]
    known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Human,
    Json,
}

/// `init --strategy`: `systemd.restart` as written in the config.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    Restart,
    Socket,
    BlueGreen,
}

/// Which package, and how to build it: cargo's standard flags.
#[derive(Debug, Args, Clone, Default)]
struct PackageArgs {
    #[command(flatten)]
    manifest: clap_cargo::Manifest,
    /// Package to ship (in a workspace with several)
    #[arg(short, long, value_name = "SPEC")]
    package: Option<String>,
}

/// Which packages, as cargo selects them: at a workspace root, every member with a
/// `[package.metadata.ship]` table; `-p` (repeatable), `--workspace`, `--exclude`.
#[derive(Debug, Args, Clone, Default)]
struct WorkspaceArgs {
    #[command(flatten)]
    manifest: clap_cargo::Manifest,
    /// Package to ship (repeatable; at a workspace root the default is every member with a
    /// ship section)
    #[arg(short, long, value_name = "SPEC")]
    package: Vec<String>,
    /// Every workspace member with a ship section, even from inside a member's directory
    #[arg(long)]
    workspace: bool,
    /// Leave this package out (with --workspace or at a workspace root; repeatable)
    #[arg(long, value_name = "SPEC")]
    exclude: Vec<String>,
}

#[derive(Debug, Args, Clone, Default)]
struct BuildArgs {
    /// Build for the target triple (overrides `target`; `.2.17` pins glibc)
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// Build with the given profile (default: release)
    #[arg(long, value_name = "PROFILE-NAME")]
    profile: Option<String>,
    #[command(flatten)]
    features: clap_cargo::Features,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile the binary and pack the release artifact under target/ship/
    Build {
        #[command(flatten)]
        package: WorkspaceArgs,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Build (if needed) and deploy to every host of an environment
    Deploy {
        /// Environment from [package.metadata.ship.environments]
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        #[command(flatten)]
        build: BuildArgs,
        /// Deploy this artifact instead of building one
        #[arg(long, value_name = "PATH")]
        artifact: Option<PathBuf>,
        /// Print every remote script and transfer that would run; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Deploy even an artifact that failed its health check before on a host
        #[arg(long)]
        force: bool,
        /// Wait up to this long for another deploy's lock, or for a switch a crashed deploy
        /// left unconfirmed to be put back by its host (e.g. 2m)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lock_wait: Option<Duration>,
        /// When a batch fails, leave the hosts of earlier batches on the new release
        /// (default: roll them back too, so the fleet runs one version)
        #[arg(long)]
        keep_switched: bool,
        /// After the first batch, wait for `cargo ship promote <env>` (or `cargo ship abort
        /// <env>`) from another terminal or CI job
        #[arg(long)]
        pause_for_approval: bool,
        /// Skip the canary phase (`[package.metadata.ship.canary]`): every host rolls out as
        /// if no canary were configured
        #[arg(long)]
        no_canary: bool,
        /// Promote a canary that could not be judged (too few requests, metrics unreadable)
        /// instead of reverting it
        #[arg(long, conflicts_with = "no_canary")]
        promote_inconclusive: bool,
        /// Only these hosts of the environment (repeatable)
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Let a deploy waiting with `--pause-for-approval` go on with its next batches
    Promote {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
    },
    /// Stop a deploy waiting with `--pause-for-approval`: it puts every switched host back
    Abort {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
    },
    /// Prepare each host once, as an admin: deploy and service users, directories, and sudo
    /// rights for exactly this unit
    Setup {
        /// Environment
        env: String,
        #[command(flatten)]
        package: PackageArgs,
        /// Log in as this user to prepare the hosts (root, or a user with passwordless sudo)
        #[arg(long, value_name = "USER", default_value = "root")]
        admin_user: String,
        /// Public key file to authorize for the deploy user
        #[arg(long, value_name = "FILE")]
        authorized_key: Option<PathBuf>,
        /// Print the script each host would run; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Use a service user or group (or a system account as deploy user) that exists on the
        /// host and that setup did not create
        #[arg(long)]
        adopt_existing_user: bool,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Switch back to the previous (or a named) release on every host; right after a deploy
    /// crashed past its switch, put that unconfirmed switch back at once instead
    Rollback {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Release id to return to (default: the one before `current`)
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
        /// Do not show the plan and ask first (without a terminal it never asks)
        #[arg(short = 'y', long)]
        yes: bool,
        /// Print what would run; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Wait up to this long for another deploy's lock
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lock_wait: Option<Duration>,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Remove old releases on the hosts (never `current` or the rollback target) and old local artifacts
    Prune {
        /// Environment (without one, only the local artifact store is pruned)
        env: Option<String>,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Releases to keep per host (default: keep_releases)
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Print what would be removed; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Show each host's current release, version, unit state and releases on disk
    Status {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Check every host before a deploy (ssh, sudo and its speed, systemd, tools, disk, clock, ports, leftover locks); changes nothing
    Doctor {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// List the releases on each host (current, rollback target, failed, unfinished)
    Releases {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Show (or with -f follow) the service's journal on every host, each line prefixed by its host
    Logs {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Number of lines per host shown first
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u32,
        /// Keep following every host's journal until Ctrl-C
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines since this time (journalctl syntax: "1h ago", "2026-11-28 03:00")
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The journal of this scheduled job instead of the service's
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Show the scheduled jobs on each host: last run (result, duration), next run, running or not
    Jobs {
        /// Environment
        env: String,
        #[command(flatten)]
        package: PackageArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Start a scheduled job now on its hosts and stream its output
    Run {
        /// Environment
        env: String,
        /// The job (a `[package.metadata.ship.jobs.<name>]` table)
        job: String,
        #[command(flatten)]
        package: PackageArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Run a command on every host, in the current release, as the service's user with its environment
    Exec {
        /// Environment
        env: String,
        #[command(flatten)]
        package: PackageArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Open an interactive shell on one host, in the current release
    Ssh {
        /// Environment
        env: String,
        #[command(flatten)]
        package: PackageArgs,
        /// The host
        #[arg(long = "host", value_name = "HOST", required = true)]
        hosts: Vec<String>,
    },
    /// Take the deploy lock on every host and keep it, with a reason, until `cargo ship unlock`
    Lock {
        /// Environment
        env: String,
        /// Path to Cargo.toml (`-m` is the reason here)
        #[arg(long, value_name = "PATH")]
        manifest_path: Option<PathBuf>,
        /// Package to ship (in a workspace with several)
        #[arg(short, long, value_name = "SPEC")]
        package: Option<String>,
        /// Why nobody may deploy (shown to whoever tries, and by `status`)
        #[arg(short = 'm', long = "message", value_name = "REASON", required = true)]
        message: String,
        /// Wait up to this long for a lock someone else holds
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lock_wait: Option<Duration>,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Release the deploy lock: one taken by `cargo ship lock`, or left behind by a deploy whose
    /// holder is gone (a switch it left unconfirmed is put back first); refused while the holder
    /// still runs
    Unlock {
        /// Environment
        env: String,
        #[command(flatten)]
        package: WorkspaceArgs,
        /// Only these hosts
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Add a commented [package.metadata.ship] section to Cargo.toml ([workspace.metadata.ship] at a workspace root)
    Init {
        #[command(flatten)]
        package: PackageArgs,
        /// Replace an existing ship section
        #[arg(long)]
        force: bool,
        /// How a new release replaces the running one; socket and blue-green write a zero-downtime setup
        #[arg(long, value_enum, default_value = "restart")]
        strategy: StrategyArg,
    },
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script for `cargo-ship` (see the README for `cargo ship <TAB>`)
    #[command(visible_alias = "completion")]
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// Write man pages for cargo-ship and each of its subcommands into a directory
    Man {
        /// Where to write `cargo-ship.1`, `cargo-ship-deploy.1`, ...
        #[arg(long, value_name = "DIR", default_value = "man")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the fully resolved configuration (for an environment, if given)
    Show {
        /// Environment
        env: Option<String>,
        #[command(flatten)]
        package: PackageArgs,
        #[command(flatten)]
        build: BuildArgs,
    },
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("expected a duration like 30s or 2m: {e}"))
}

impl Ship {
    /// The reporter these flags ask for.
    pub fn ui(&self) -> Ui {
        let g = &self.global;
        let color = match g.color {
            Some(ColorArg::Always) => ColorChoice::Always,
            Some(ColorArg::Never) => ColorChoice::Never,
            Some(ColorArg::Auto) => ColorChoice::Auto,
            None => match std::env::var("CARGO_TERM_COLOR").ok().as_deref() {
                Some("always") => ColorChoice::Always,
                Some("never") => ColorChoice::Never,
                _ => ColorChoice::Auto,
            },
        };
        let verbosity = if g.verbose {
            Verbosity::Verbose
        } else if g.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        };
        let format = match g.message_format {
            FormatArg::Human => Format::Human,
            FormatArg::Json => Format::Json,
        };
        Ui::new(format, color, verbosity)
    }

    /// The ssh files given with `--ssh-config`/`--known-hosts` (or their variables).
    fn ssh_files(&self) -> SshFiles {
        SshFiles {
            config: self.global.ssh_config.clone(),
            known_hosts: self.global.known_hosts.clone(),
            agent: std::env::var_os("CARGO_SHIP_SSH_AUTH_SOCK")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// Runs the subcommand.
    pub async fn run(self, ui: &Ui) -> Result<()> {
        ssh_files::set_outside(self.ssh_files().checked()?);
        match self.command {
            Command::Completions { shell } => {
                crate::completions::print_completions(shell);
                Ok(())
            }
            Command::Man { out_dir } => {
                let pages = crate::completions::write_man_pages(&out_dir)?;
                ui.status(
                    "Generated",
                    format!("{pages} man pages in {}", out_dir.display()),
                );
                Ok(())
            }
            Command::Build { package, build } => {
                // Every selected package (those that compile alike in one builder run); one
                // artifact per configured target (`targets = [...]`: one per architecture).
                let configs = selected(&package, Some(&build), None)?;
                let uis: Vec<Ui> = configs
                    .iter()
                    .map(|c| match configs.len() {
                        1 => ui.clone(),
                        _ => ui.for_package(&c.package),
                    })
                    .collect();
                let refs: Vec<&config::Config> = configs.iter().collect();
                tokio::task::block_in_place(|| package::build_each_target(&refs, ui, &uis))
                    .map(|_| ())
            }
            Command::Deploy {
                env,
                package,
                build,
                artifact,
                dry_run,
                force,
                lock_wait,
                keep_switched,
                pause_for_approval,
                no_canary,
                promote_inconclusive,
                hosts,
            } => {
                let configs = selected(&package, Some(&build), Some(env))?;
                let opts = deploy::DeployOptions {
                    artifact,
                    dry_run,
                    force,
                    lock_wait,
                    keep_switched,
                    no_canary,
                    promote_inconclusive,
                    hosts,
                    pause_for_approval,
                };
                deploy::deploy(&configs, &opts, ui).await
            }
            Command::Promote { env, package } => {
                let configs = selected(&package, None, Some(env))?;
                approval::decide(&configs, approval::Decision::Promote, ui).await
            }
            Command::Abort { env, package } => {
                let configs = selected(&package, None, Some(env))?;
                approval::decide(&configs, approval::Decision::Abort, ui).await
            }
            Command::Setup {
                env,
                package,
                admin_user,
                authorized_key,
                dry_run,
                adopt_existing_user,
                hosts,
            } => {
                let config = config::load(&load_options(&package, None, Some(env)))?;
                let opts = setup::SetupOptions {
                    admin_user,
                    authorized_key,
                    dry_run,
                    adopt_existing_user,
                    hosts,
                };
                setup::setup(&config, &opts, ui).await
            }
            Command::Rollback {
                env,
                package,
                to,
                yes,
                dry_run,
                lock_wait,
                hosts,
            } => {
                let configs = selected(&package, None, Some(env))?;
                let opts = rollback::RollbackOptions {
                    to,
                    dry_run,
                    lock_wait,
                    hosts,
                    // Ask only a person: a terminal, and not a CI job (act and some runners
                    // give steps a pseudo-terminal nobody answers).
                    confirm: !yes
                        && !dry_run
                        && std::io::IsTerminal::is_terminal(&std::io::stdin())
                        && std::env::var_os("CI").is_none()
                        && std::env::var_os("GITHUB_ACTIONS").is_none(),
                };
                match configs.as_slice() {
                    [config] => rollback::rollback(config, &opts, ui).await,
                    services => rollback::rollback_workspace(services, &opts, ui).await,
                }
            }
            Command::Prune {
                env,
                package,
                keep,
                dry_run,
                hosts,
            } => {
                let opts = prune::PruneOptions {
                    keep,
                    dry_run,
                    hosts,
                };
                each_service("prune", selected(&package, None, env)?, ui, |config, ui| {
                    let opts = &opts;
                    async move { prune::prune(&config, opts, &ui).await }
                })
                .await
            }
            Command::Status {
                env,
                package,
                hosts,
            } => each_service(
                "status",
                selected(&package, None, Some(env))?,
                ui,
                |config, ui| {
                    let hosts = &hosts;
                    async move { status::status(&config, hosts, status::View::Status, &ui).await }
                },
            )
            .await,
            Command::Doctor {
                env,
                package,
                hosts,
            } => {
                each_service(
                    "doctor",
                    selected(&package, None, Some(env))?,
                    ui,
                    |config, ui| {
                        let hosts = &hosts;
                        async move { doctor::doctor(&config, hosts, &ui).await }
                    },
                )
                .await
            }
            Command::Releases {
                env,
                package,
                hosts,
            } => each_service(
                "releases",
                selected(&package, None, Some(env))?,
                ui,
                |config, ui| {
                    let hosts = &hosts;
                    async move { status::status(&config, hosts, status::View::Releases, &ui).await }
                },
            )
            .await,
            Command::Logs {
                env,
                package,
                lines,
                follow,
                since,
                job,
                hosts,
            } => {
                let configs = selected(&package, None, Some(env))?;
                let opts = logs::LogsOptions {
                    lines,
                    follow,
                    since,
                    hosts,
                    job,
                };
                match configs.as_slice() {
                    [config] => logs::logs(config, &opts, ui).await,
                    // Every service's journal at once (following them all with -f).
                    services => {
                        let all = services.iter().map(|c| {
                            let ui = ui.for_package(&c.package);
                            let opts = &opts;
                            async move { logs::logs(c, opts, &ui).await }
                        });
                        let results = futures_util::future::join_all(all).await;
                        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
                    }
                }
            }
            Command::Jobs {
                env,
                package,
                hosts,
            } => {
                let config = config::load(&load_options(&package, None, Some(env)))?;
                cargo_ship::jobs::jobs(&config, &hosts, ui).await
            }
            Command::Run {
                env,
                job,
                package,
                hosts,
            } => {
                let config = config::load(&load_options(&package, None, Some(env)))?;
                cargo_ship::jobs::run(&config, &job, &hosts, ui).await
            }
            Command::Exec {
                env,
                package,
                hosts,
                command,
            } => {
                let config = config::load(&load_options(&package, None, Some(env)))?;
                exec::exec(&config, &exec::ExecOptions { command, hosts }, ui).await
            }
            Command::Ssh {
                env,
                package,
                hosts,
            } => {
                let config = config::load(&load_options(&package, None, Some(env)))?;
                let code = exec::ssh(&config, &hosts)?;
                if code != 0 {
                    cargo_ship::remote::session::remove_control_dir();
                    std::process::exit(code);
                }
                Ok(())
            }
            Command::Lock {
                env,
                manifest_path,
                package,
                message,
                lock_wait,
                hosts,
            } => {
                let mut args = PackageArgs {
                    package,
                    ..PackageArgs::default()
                };
                args.manifest.manifest_path = manifest_path;
                let config = config::load(&load_options(&args, None, Some(env)))?;
                let opts = lock::LockOptions {
                    reason: message,
                    lock_wait,
                    hosts,
                };
                lock::lock(&config, &opts, ui).await
            }
            Command::Unlock {
                env,
                package,
                hosts,
            } => {
                each_service(
                    "unlock",
                    selected(&package, None, Some(env))?,
                    ui,
                    |config, ui| {
                        let hosts = &hosts;
                        async move { lock::unlock(&config, hosts, &ui).await }
                    },
                )
                .await
            }
            Command::Init {
                package,
                force,
                strategy,
            } => {
                let opts = init::InitOptions {
                    manifest_path: package.manifest.manifest_path.clone(),
                    package: package.package.clone(),
                    force,
                    strategy: match strategy {
                        StrategyArg::Restart => config::RestartStrategy::Restart,
                        StrategyArg::Socket => config::RestartStrategy::Socket,
                        StrategyArg::BlueGreen => config::RestartStrategy::BlueGreen,
                    },
                };
                init::init(&opts, ui).map(|_| ())
            }
            Command::Config(ConfigCommand::Show {
                env,
                package,
                build,
            }) => {
                let config = config::load(&load_options(&package, Some(&build), env))?;
                let (text, data) = config::show(&config);
                ui.emit(cargo_ship::ui::Event::Output {
                    kind: "config".into(),
                    text,
                    data,
                });
                Ok(())
            }
        }
    }
}

/// The configurations of the packages the command line selects (one, or the services of a
/// workspace, in their switch order).
fn selected(
    ws: &WorkspaceArgs,
    build: Option<&BuildArgs>,
    environment: Option<String>,
) -> Result<Vec<config::Config>> {
    let single = PackageArgs {
        manifest: ws.manifest.clone(),
        package: None,
    };
    let sel = cargo_ship::workspace::Selection {
        manifest_path: ws.manifest.manifest_path.as_deref(),
        packages: &ws.package,
        workspace: ws.workspace,
        exclude: &ws.exclude,
    };
    config::load_selected(&sel, &load_options(&single, build, environment))
}

/// Runs `f` for each service, one after the other, each reporting under its package name when
/// there are several (their summary rows in one table); fails with the first error after all
/// ran.
async fn each_service<F, Fut>(
    operation: &str,
    configs: Vec<config::Config>,
    ui: &Ui,
    f: F,
) -> Result<()>
where
    F: Fn(config::Config, Ui) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let several = configs.len() > 1;
    let collect = ui.collecting_summaries();
    let mut first_error = None;
    for config in configs {
        let ui = match several {
            true => collect.for_package(&config.package),
            false => ui.clone(),
        };
        if let Err(e) = f(config, ui.clone()).await {
            if !several {
                return Err(e);
            }
            if first_error.is_some() {
                // Only the first error ends the run; the others are told as they come.
                ui.warn(e.to_string());
            } else {
                first_error = Some(e);
            }
        }
    }
    let rows = collect.take_summaries();
    if !rows.is_empty() {
        ui.emit(cargo_ship::ui::Event::Summary {
            operation: operation.into(),
            hosts: rows,
        });
    }
    first_error.map_or(Ok(()), Err)
}

fn load_options(
    package: &PackageArgs,
    build: Option<&BuildArgs>,
    environment: Option<String>,
) -> LoadOptions {
    let mut o = LoadOptions {
        manifest_path: package.manifest.manifest_path.clone(),
        package: package.package.clone(),
        environment,
        ..LoadOptions::default()
    };
    if let Some(b) = build {
        o.target = b.target.clone();
        o.profile = b.profile.clone();
        o.features = b.features.features.clone();
        o.all_features = b.features.all_features;
        o.no_default_features = b.features.no_default_features;
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cargo::command().debug_assert();
    }

    /// The `result` words `--help` lists are the ones the GitHub output writes.
    #[test]
    fn help_lists_the_result_word_of_every_exit_code() {
        let text = super::EXIT_CODES;
        let words = &text[text.find("names the code:").expect("the result paragraph")..];
        let words = words
            .trim_start_matches("names the code:")
            .replace('\n', " ");
        for pair in words.trim_end_matches('.').split(',') {
            let mut it = pair.split_whitespace();
            let code: i32 = it.next().unwrap().parse().unwrap();
            let word = it.next().unwrap();
            assert_eq!(cargo_ship::ui::github::result_word(code), word, "{code}");
            assert!(
                text.contains(&format!("\n  {code:>3}  ")),
                "{code} is not in the exit code table"
            );
        }
    }
}
