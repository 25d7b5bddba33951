//! `cargo ship init`: adds a commented `[package.metadata.ship]` section to the package's
//! Cargo.toml (at the root of a workspace of several members, `[workspace.metadata.ship]`
//! defaults). The template shows every section a user may want, each with a line on what it
//! does and when to use it; `--strategy socket|blue-green` writes a zero-downtime setup.
//!
//! The existing text is kept byte for byte: the section is appended as text, after `toml_edit`
//! has checked that there is no ship section yet (or, with `--force`, removed the old one, which
//! re-renders only what it touched). The result is parsed and loaded with
//! [`crate::config::load`]'s rules before it is written, so `init` never leaves a Cargo.toml that
//! cargo-ship itself would reject.

use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::config::{self, LoadOptions, RestartStrategy};
use crate::ui::Ui;
use crate::workspace::{self, Package};
use crate::{Error, Result};

/// `cargo ship init` options.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// `--manifest-path`.
    pub manifest_path: Option<PathBuf>,
    /// `-p/--package`.
    pub package: Option<String>,
    /// Replace an existing ship section.
    pub force: bool,
    /// `--strategy`: `socket` or `blue-green` write a working zero-downtime setup.
    pub strategy: RestartStrategy,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            manifest_path: None,
            package: None,
            force: false,
            strategy: RestartStrategy::Restart,
        }
    }
}

/// Adds the ship section to the package's Cargo.toml (or, at the root of a workspace of
/// several members without `-p`, `[workspace.metadata.ship]` to the root's) and returns that
/// file's path.
pub fn init(opts: &InitOptions, ui: &Ui) -> Result<PathBuf> {
    if opts.package.is_none() {
        if let Some((root, members)) = workspace::root_of_several(opts.manifest_path.as_deref())? {
            if opts.strategy != RestartStrategy::Restart {
                // Each service listens on its own port: a workspace-wide `listen` would be wrong.
                return Err(Error::usage(
                    format!(
                        "`--strategy {}` sets up one service's sockets, and {} is the root of a workspace of several",
                        opts.strategy.as_str(),
                        root.display()
                    ),
                    Some(format!(
                        "run `cargo ship init -p <member> --strategy {}` for each service (members: {}); `cargo ship init` here writes the workspace's defaults",
                        opts.strategy.as_str(),
                        members.join(", ")
                    )),
                ));
            }
            return init_workspace(opts, &root, &members, ui);
        }
    }
    let package = workspace::find(opts.manifest_path.as_deref(), opts.package.as_deref())?;
    let path = package.manifest_path.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let updated = add_section(
        &text,
        "package",
        &section(&package, opts.strategy),
        opts.force,
        &path,
    )?;
    write_checked(&path, &text, &updated, &package.name)?;
    ui.status(
        "Added",
        format!("[package.metadata.ship] to {}", path.display()),
    );
    ui.status(
        "Next",
        "replace the placeholder host in [package.metadata.ship.environments.prod], check the hosts with `cargo ship doctor prod`, then `cargo ship deploy prod`",
    );
    if opts.strategy != RestartStrategy::Restart {
        ui.status(
            "Note",
            format!(
                "restart = \"{}\": the service must take its listener from fd 3 (LISTEN_FDS), send READY=1 when it can serve, and drain on SIGTERM; README \"The app's side\" has the lines for axum, actix-web and hyper",
                opts.strategy.as_str()
            ),
        );
    }
    Ok(path)
}

/// `init` at a workspace root: the defaults every member inherits.
fn init_workspace(opts: &InitOptions, root: &Path, members: &[String], ui: &Ui) -> Result<PathBuf> {
    let text = std::fs::read_to_string(root).map_err(|e| Error::io("read", root, e))?;
    let updated = add_section(
        &text,
        "workspace",
        &workspace_section(members),
        opts.force,
        root,
    )?;
    // Loaded as the first member sees it (a member's own section, if any, on top).
    write_checked(root, &text, &updated, &members[0])?;
    ui.status(
        "Added",
        format!("[workspace.metadata.ship] to {}", root.display()),
    );
    ui.status(
        "Next",
        format!(
            "give each service its own section with `cargo ship init -p <member>` (members: {}), replace the placeholder host, then `cargo ship doctor prod` and `cargo ship deploy prod`",
            members.join(", ")
        ),
    );
    Ok(root.to_path_buf())
}

/// Writes `updated` to `path`, then checks it with the loader's own rules (as `package` in
/// environment `prod` sees it) and puts `original` back if it does not load.
fn write_checked(path: &Path, original: &str, updated: &str, package: &str) -> Result<()> {
    std::fs::write(path, updated).map_err(|e| Error::io("write", path, e))?;
    let check = config::load(&LoadOptions {
        manifest_path: Some(path.to_path_buf()),
        package: Some(package.to_string()),
        environment: Some("prod".into()),
        ..LoadOptions::default()
    });
    if let Err(e) = check {
        std::fs::write(path, original).map_err(|e| Error::io("restore", path, e))?;
        return Err(Error::usage(
            format!("the section `cargo ship init` would add does not load, so {} was left as it was: {e}", path.display()),
            e.help(),
        ));
    }
    Ok(())
}

/// The manifest text with `section` (a `[<root>.metadata.ship]` section) added, or replacing
/// the existing one with `force`.
fn add_section(text: &str, root: &str, section: &str, force: bool, path: &Path) -> Result<String> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        Error::usage(
            format!("cannot parse {}: {}", path.display(), e.message().trim()),
            None,
        )
    })?;
    let has_section = doc
        .get(root)
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("ship"))
        .is_some();
    let base = if !has_section {
        text.to_string()
    } else if !force {
        return Err(Error::usage(
            format!("{} already has a [{root}.metadata.ship] section", path.display()),
            Some("edit it, see it resolved with `cargo ship config show`, or pass `--force` to replace it".into()),
        ));
    } else {
        let metadata = doc
            .get_mut(root)
            .and_then(|p| p.get_mut("metadata"))
            .and_then(|m| m.as_table_like_mut());
        if let Some(m) = metadata {
            m.remove("ship");
            // Leave no empty `[<root>.metadata]` behind when ship was all it had.
            let empty = m.is_empty();
            if empty {
                if let Some(p) = doc.get_mut(root).and_then(|p| p.as_table_like_mut()) {
                    p.remove("metadata");
                }
            }
        }
        doc.to_string()
    };
    let mut out = base.trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(section);
    // The appended tables must extend the document, e.g. not an inline `metadata = { .. }`.
    if let Err(e) = out.parse::<DocumentMut>() {
        return Err(Error::usage(
            format!("cannot add [{root}.metadata.ship] to {}: {}", path.display(), e.message().trim()),
            Some(format!("`{root}.metadata` is probably an inline table; turn it into a `[{root}.metadata]` section")),
        ));
    }
    Ok(out)
}

/// The section `init` writes, for `package`: every key a user may want, commented where it is
/// optional, each with one line on what it does and when to use it. With a zero-downtime
/// `strategy` the socket, notify and drain keys and the health probe are set for real (an
/// axum/actix/hyper service on port 8080 that takes its listener from fd 3).
pub fn section(package: &Package, strategy: RestartStrategy) -> String {
    let bin = package
        .bins
        .iter()
        .find(|b| **b == package.name)
        .or(package.bins.first())
        .cloned()
        .unwrap_or_else(|| package.name.clone());
    let q = |s: &str| toml_edit::Value::from(s).to_string();
    let deploy_to = format!("/opt/{bin}");
    // Set for real with a zero-downtime strategy, an example otherwise.
    let (zd, restart) = match strategy {
        RestartStrategy::Restart => ("# ", "socket"),
        other => ("", other.as_str()),
    };
    format!(
        r#"# cargo-ship: `cargo ship deploy prod` builds `{bin}`, packs it with its assets and installs it as
# a systemd service on every host of the environment. A line `# key = ...` is an example:
# uncomment what you need. `cargo ship config show prod` prints the resolved configuration;
# `cargo ship doctor prod` checks the hosts (ssh, sudo, clock, ports, tools) before a deploy.
[package.metadata.ship]
bin = {bin_q}
# targets = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]   # mixed x86/ARM hosts: one artifact per architecture (default: one, `target = "..."`, this machine's)
# builder = "auto"                      # auto | cargo | zigbuild (glibc pins like "...-gnu.2.17") | cross
# profile = "release"
# strip = true
# assets = ["config", "static"]         # files and dirs packed into the release root, relative to this file
deploy_to = {deploy_to_q}
keep_releases = 5
# shared_dirs = ["data", "log"]         # kept across releases in <deploy_to>/shared: uploads, sqlite, logs
# shared_files = ["production.toml"]   # per-host files under <deploy_to>/shared, linked into each release (must exist there)
# sudo = true                           # deploy as a non-root user; run `cargo ship setup prod` once as an admin first

[package.metadata.ship.systemd]
unit = {bin_q}
# args = ["--port", "8080"]
# environment = {{ RUST_LOG = "info" }}   # settings that may live in git
# secrets = ["DATABASE_URL"]            # names only: values from your environment (CI) or the environment's secrets_file
# user = {bin_q}                         # run the service as this user (`cargo ship setup` creates it)
# group = {bin_q}
restart_sec = "1s"
hardening = true
# How a new release replaces the running one (README: Zero-downtime restarts):
#   "restart" (default): systemctl restart; connections are refused while the new process
#     starts. The app needs nothing.
#   "socket": systemd holds `listen` across the restart, connections wait instead of being
#     refused. The app takes its listener from fd 3 (LISTEN_FDS) and drains on SIGTERM.
#   "blue-green": the new release starts beside the old one on the same socket; the old one
#     stops only once the new one is healthy. The app does what "socket" needs, plus notify.
{zd}restart = "{restart}"
{zd}listen = ["0.0.0.0:8080"]             # sockets systemd holds and passes as fds 3, 4, ... in this order
{zd}notify = true                         # the app sends READY=1 (sd_notify) when it can serve; only then is it started
{zd}drain_timeout = "30s"                 # after SIGTERM, time to finish requests in flight, then SIGKILL

[package.metadata.ship.health]
{zd}http = "http://127.0.0.1:8080/healthz"   # probed on each host through the ssh connection; must answer 2xx
# command = "./{bin} --check"              # run in the release directory; exit 0 means healthy
timeout = "30s"
settle = "3s"
# confirm_timeout = "90s"                  # dead-man's switch: each host puts the previous release back by itself unless the deploy confirms in time ("0s": off); raise it for slow hosts

# Canary: switch the first host(s), judge them on the service's own Prometheus counters against
# the hosts still on the old release, and put a worse release back before the rest (README: Canary releases):
# [package.metadata.ship.canary]
# metrics = "http://127.0.0.1:8080/metrics"     # Prometheus text, read on each host over its ssh connection
# requests = "http_requests_total"              # counter of all requests
# errors = 'http_requests_total{{code=~"5.."}}'   # counter of failed ones
# hosts = 1                                     # or "10%": the hosts switched and judged first
# window = "2m"                                 # how long they are judged, under real traffic

# [package.metadata.ship.hooks]
# before_switch = ["./{bin} check-config"]      # on every host, in the new release directory, before the switch
# before_switch_once = ["./{bin} migrate"]      # on one host only (once_on), after every host has staged: migrations
# after_switch = []                            # after the switch, once healthy

# A scheduled job (cleanups, reports) run from the current release with the service's user and
# environment, on a systemd timer (README: Scheduled jobs); `cargo ship run prod <name>` runs it now:
# [package.metadata.ship.jobs.cleanup]
# schedule = "*-*-* 03:00:00"                   # systemd OnCalendar=: "hourly", "daily", "Mon *-*-* 04:00"
# args = ["cleanup"]                            # the service's binary (or `bin = "..."`, another of this package) with these arguments
# on = "one"                                    # "all" hosts (default) or "one" (hooks.once_on, else the first host)
# timeout = "1h"                                # the longest run (RuntimeMaxSec=); default: none

[package.metadata.ship.environments.prod]
{environment}
# One host's overrides on top of its environment (the host as written in `hosts`), e.g. a smaller machine:
# [package.metadata.ship.environments.prod.per_host."deploy@prod1.example.com".systemd]
# environment = {{ WORKERS = "2" }}
"#,
        bin_q = q(&bin),
        deploy_to_q = q(&deploy_to),
        environment = ENVIRONMENT,
    )
}

/// The body of the `prod` environment in both templates (a package's and a workspace's).
const ENVIRONMENT: &str = r#"hosts = ["deploy@prod1.example.com"]       # placeholder: your servers, as [user@]host[:port]
# ssh_config = "deploy/ssh_config"         # passed to ssh as -F, relative to this file
# secrets_file = "deploy/prod.env"         # dotenv file with the secrets' values, on this machine only (keep it out of git)
# connect_parallel = 10                    # SSH handshakes in flight at once (a jump host's sshd MaxStartups); default 10
# parallel = 50                            # hosts worked on at once; default: every connected host
# batch = [1, "10%", "50%", "100%"]        # a ramp: each entry the size of the next switch batch (or one size, "25%"); default: all at once
# pause = "30s"                            # between batches, watch the switched hosts stay healthy (README: Big fleets)
# max_fail = "5%"                          # hosts that may fail (each put back) before the whole deploy is put back; default 0
# unreachable = "defer"                    # "fail" (default) or "defer": leave hosts that cannot be reached on their old release
"#;

/// The `[workspace.metadata.ship]` section `init` writes at the root of a workspace of several
/// members: defaults every service inherits (each member's own section overrides any key).
pub fn workspace_section(members: &[String]) -> String {
    let order: Vec<String> = members
        .iter()
        .map(|m| toml_edit::Value::from(m.as_str()).to_string())
        .collect();
    format!(
        r#"# cargo-ship: defaults for every service of this workspace. Each service gets its own section
# with `cargo ship init -p <member>`, which overrides any key here. At this root,
# `cargo ship deploy prod` ships every member that has one, in one rollout.
[workspace.metadata.ship]
# order = [{order}]   # the order services switch in (default: members)
keep_releases = 5
# targets = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]   # mixed x86/ARM hosts: one artifact per architecture
# sudo = true                           # deploy as a non-root user; run `cargo ship setup prod` once as an admin first

[workspace.metadata.ship.systemd]
# environment = {{ RUST_LOG = "info" }}   # merged key by key with each service's
restart_sec = "1s"
hardening = true

[workspace.metadata.ship.health]
timeout = "30s"
settle = "3s"
# confirm_timeout = "90s"                  # dead-man's switch: hosts revert unless the deploy confirms in time ("0s": off)

[workspace.metadata.ship.environments.prod]
{environment}"#,
        order = order.join(", "),
        environment = ENVIRONMENT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> Package {
        Package {
            name: "hello".into(),
            version: "0.1.0".into(),
            manifest_path: "/p/Cargo.toml".into(),
            root: "/p".into(),
            bins: vec!["hello".into()],
            workspace_root: "/p".into(),
            workspace_manifest: "/p/Cargo.toml".into(),
            target_dir: "/p/target".into(),
        }
    }

    const MANIFEST: &str = "[package]\nname = \"hello\" # the name\nversion = \"0.1.0\"\n\n[package.metadata.docs]\nx = 1\n";

    #[test]
    fn appends_and_keeps_the_text() {
        let out = add_section(
            MANIFEST,
            "package",
            &section(&package(), RestartStrategy::Restart),
            false,
            Path::new("Cargo.toml"),
        )
        .unwrap();
        assert!(out.starts_with(MANIFEST.trim_end()));
        assert!(out.contains("[package.metadata.ship]\nbin = \"hello\"\n"));
        assert!(out.contains("deploy_to = \"/opt/hello\""));
    }

    #[test]
    fn refuses_an_existing_section_unless_forced() {
        let once = add_section(
            MANIFEST,
            "package",
            &section(&package(), RestartStrategy::Restart),
            false,
            Path::new("Cargo.toml"),
        )
        .unwrap();
        let err = add_section(
            &once,
            "package",
            &section(&package(), RestartStrategy::Restart),
            false,
            Path::new("Cargo.toml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cargo.toml already has a [package.metadata.ship] section"
        );
        let twice = add_section(
            &once,
            "package",
            &section(&package(), RestartStrategy::Restart),
            true,
            Path::new("Cargo.toml"),
        )
        .unwrap();
        assert_eq!(twice.matches("[package.metadata.ship]").count(), 1);
        assert!(twice.contains("name = \"hello\" # the name"));
        assert!(twice.contains("[package.metadata.docs]\nx = 1"));
    }

    #[test]
    fn inline_metadata_is_reported() {
        let text = "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nmetadata = { docs = 1 }\n";
        let err = add_section(
            text,
            "package",
            &section(&package(), RestartStrategy::Restart),
            false,
            Path::new("Cargo.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot add [package.metadata.ship] to Cargo.toml"),
            "{err}"
        );
    }
}
