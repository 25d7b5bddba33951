//! `cargo ship setup <env>`: first-time preparation of each host, run by an admin.
//!
//! Logs in as `--admin-user` (root by default; another user goes through `sudo -n`), and, as
//! root, idempotently:
//!
//! 1. installs sudo when it is missing (apt-get, dnf, yum or apk) and the deploy user is not root;
//! 2. creates the service user (`systemd.user`, a system account without login) and the deploy
//!    user named in `hosts` (when it is not root), adding `--authorized-key` to the deploy
//!    user's `~/.ssh/authorized_keys` (written as that user, never as root in its home);
//! 3. gives deploy_to to the deploy user and the shared dirs to the service user;
//! 4. installs the unit's `ship-root` helper, the guard drop-in and the sudoers drop-in
//!    (checked with `visudo -cf` before it is moved in place): see [`crate::systemd::privilege`].
//!
//! `--dry-run` prints each host's script and connects nowhere.

use std::path::PathBuf;

use crate::config::{Config, HostSpec};
use crate::fleet;
use crate::layout::Layout;
use crate::remote::script::Script;
use crate::remote::session::Connection;
use crate::systemd::privilege;
use crate::ui::{Event, HostRow, Ui};
use crate::{Error, Result};

/// Options of `cargo ship setup`.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// Who logs in to prepare the hosts (root, or a user with passwordless sudo).
    pub admin_user: String,
    /// A public key file (one or more `authorized_keys` lines) for the deploy user.
    pub authorized_key: Option<PathBuf>,
    /// Print the scripts; connect nowhere.
    pub dry_run: bool,
    /// `--adopt-existing-user`: use a service user or group, or a system account as deploy
    /// user, that exists on the host and that setup did not create.
    pub adopt_existing_user: bool,
    /// Only these hosts.
    pub hosts: Vec<String>,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            admin_user: "root".into(),
            authorized_key: None,
            dry_run: false,
            adopt_existing_user: false,
            hosts: Vec::new(),
        }
    }
}

/// An account name setup may create: what `useradd` accepts on every distribution.
fn account_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 32
}

/// Groups whose members are root, or close to it (raw disks, the password hashes, the docker or
/// lxd daemon, sudo rights, every log): a service in one would hand root to whoever deploys
/// it, since the deploy user may run anything as the service user.
pub const PRIVILEGED_GROUPS: [&str; 14] = [
    "root",
    "sudo",
    "wheel",
    "admin",
    "adm",
    "disk",
    "shadow",
    "docker",
    "lxd",
    "kmem",
    "libvirt",
    "systemd-journal",
    "staff",
    "kvm",
];

/// Where setup records the accounts and groups it created (root-only), so a later run can tell
/// them from ones it would adopt.
pub const ACCOUNTS_DIR: &str = "/usr/local/lib/cargo-ship/.accounts";

/// Reads and checks the `--authorized-key` file: non-empty lines, each `type base64 [comment]`.
fn read_keys(path: &PathBuf) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("read the authorized key", path, e))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let looks_like_key = |l: &str| {
        let mut w = l.split_whitespace();
        matches!((w.next(), w.next()), (Some(t), Some(_)) if t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-"))
    };
    if keys.is_empty() || !keys.iter().all(|k| looks_like_key(k)) {
        return Err(Error::usage(
            format!(
                "`--authorized-key {}` is not a public key file",
                path.display()
            ),
            Some("pass the deploy user's public key, e.g. ~/.ssh/id_ed25519.pub".into()),
        ));
    }
    Ok(keys)
}

/// Checks what setup needs from the config for `deploy_user`; returns the service user.
fn service_user(config: &Config, deploy_user: &str) -> Result<String> {
    let user = config.systemd.user.clone().unwrap_or_default();
    if deploy_user == "root" {
        return Ok(user);
    }
    if user.is_empty() || user == "root" {
        return Err(Error::usage(
            format!(
                "`cargo ship setup` cannot give {deploy_user} least privilege while the service runs as root"
            ),
            Some(format!(
                "set `user = \"{}\"` under [package.metadata.ship.systemd] (setup creates that account)",
                config.bin
            )),
        ));
    }
    if !config.sudo {
        return Err(Error::usage(
            format!("hosts log in as {deploy_user}, not root, but `sudo` is not enabled"),
            Some("set `sudo = true` in [package.metadata.ship]".into()),
        ));
    }
    if user == deploy_user {
        return Err(Error::usage(
            format!("the deploy user and the service user are both {deploy_user}"),
            Some("the service must not be able to write its own releases: give `systemd.user` another name".into()),
        ));
    }
    for name in [deploy_user, user.as_str()] {
        if !account_ok(name) {
            return Err(Error::usage(
                format!("`cargo ship setup` will not create an account named {name:?}"),
                Some("use lowercase letters, digits, `_` and `-`, starting with a letter".into()),
            ));
        }
    }
    Ok(user)
}

/// The script that prepares one host for `deploy_user` (run as root; see the module docs).
pub fn script(config: &Config, deploy_user: &str, keys: &[String], adopt: bool) -> Result<Script> {
    let svc = service_user(config, deploy_user)?;
    if let Some(g) = &config.systemd.group {
        if PRIVILEGED_GROUPS.contains(&g.as_str()) {
            return Err(Error::usage(
                format!("`cargo ship setup` will not run the service in group {g}: its members are root, or close to it"),
                Some(format!("the deploy user may run anything as the service user; give {} a group of its own (remove `group` to get one)", config.systemd.unit)),
            ));
        }
    }
    if PRIVILEGED_GROUPS.contains(&svc.as_str()) {
        return Err(Error::usage(
            format!("`cargo ship setup` will not run the service as {svc}: that name is a privileged group's"),
            Some("give `systemd.user` a name of its own".into()),
        ));
    }
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "prepare the host for {} (deploy user {deploy_user})",
        config.systemd.unit
    ));
    s.lines("umask 022");
    s.lines("problem() { echo \"$*\" >&2; exit 1; }");
    s.lines("[ \"$(id -u)\" = 0 ] || problem \"setup must run as root, not $(id -un)\"");
    let root_deploys = deploy_user == "root";
    if !root_deploys {
        s.lines("if ! command -v sudo >/dev/null 2>&1; then");
        s.lines("  if command -v apt-get >/dev/null 2>&1; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q sudo >&2");
        s.lines("  elif command -v dnf >/dev/null 2>&1; then dnf install -y -q sudo >&2");
        s.lines("  elif command -v yum >/dev/null 2>&1; then yum install -y -q sudo >&2");
        s.lines("  elif command -v apk >/dev/null 2>&1; then apk add -q sudo >&2");
        s.lines("  else problem 'sudo is missing and no package manager (apt-get, dnf, yum, apk) was found'; fi");
        s.lines("  echo 'done=installed sudo'");
        s.lines("fi");
        s.lines(
            "command -v visudo >/dev/null 2>&1 || problem 'visudo is missing (it comes with sudo)'",
        );
    }
    // Accounts setup created are recorded; one it did not create is only adopted with the flag.
    s.line(
        "install -d -m 0755 -o root -g root -- {}; install -d -m 0700 -o root -g root -- {}",
        &[privilege::HELPER_DIR, ACCOUNTS_DIR],
    );
    // A unit set up by an earlier version (before the records) has its sudoers drop-in: the
    // accounts it names, and the group, were set up then.
    s.line(
        "_A={}; _adopt={}; _earlier={}",
        &[
            ACCOUNTS_DIR,
            if adopt { "1" } else { "" },
            &if root_deploys {
                String::new()
            } else {
                privilege::sudoers_path(config)
            },
        ],
    );
    s.lines("adopt() { if [ -f \"$_A/$1:$2\" ]; then return 0; fi; if [ -f \"$_earlier\" ] && { [ \"$1\" = group ] || grep -qw -e \"$2\" -- \"$_earlier\"; }; then : > \"$_A/$1:$2\"; return 0; fi; [ -n \"$_adopt\" ] || problem \"the $3 $2 already exists on this host and cargo ship setup did not create it: $4; pass --adopt-existing-user to use it anyway\"; : > \"$_A/$1:$2\"; }");
    // The service user: a system account that cannot log in.
    if !svc.is_empty() {
        let _ = match &config.systemd.group {
            Some(g) => {
                s.line("if getent group {} >/dev/null; then adopt group {} group 'the deploy user could act as every member of it'; else groupadd --system {}; : > \"$_A/group:\"{}; echo done=created group {}; fi", &[g, g, g, g, g]);
                s.line(
                    "if id -u {} >/dev/null 2>&1; then adopt user {} 'service user' 'the deploy user may run anything as the service user, so it would act as that account'; else useradd --system --gid {} --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {}; : > \"$_A/user:\"{}; echo done=created service user {}; fi",
                    &[&svc, &svc, g, &svc, &svc, &svc],
                )
            }
            None => s.line(
                "if id -u {} >/dev/null 2>&1; then adopt user {} 'service user' 'the deploy user may run anything as the service user, so it would act as that account'; else useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {}; : > \"$_A/user:\"{}; echo done=created service user {}; fi",
                &[&svc, &svc, &svc, &svc, &svc],
            ),
        };
    }
    if !root_deploys {
        // An existing login account is adopted as deploy user; a system account (uid below
        // 1000: postgres, www-data...) only with the flag.
        s.line(
            "if id -u {} >/dev/null 2>&1; then if [ \"$(id -u {})\" -lt 1000 ]; then adopt user {} 'deploy user (a system account)' 'it would deploy with the rights of that account'; fi",
            &[deploy_user, deploy_user, deploy_user],
        );
        // `*`, not the default `!`: a locked password must not lock out key logins.
        s.line(
            "else useradd --create-home --user-group --shell /bin/sh {}; usermod -p '*' {}; : > \"$_A/user:\"{}; echo done=created deploy user {}; fi",
            &[deploy_user, deploy_user, deploy_user, deploy_user],
        );
        if !keys.is_empty() {
            // Written by the deploy user itself: root never follows a link planted in its home.
            s.line("_keys={}", &[&keys.join("\n")]);
            s.line(
                "printf '%s\\n' \"$_keys\" | runuser -u {} -- sh -c 'umask 077; mkdir -p \"$HOME/.ssh\"; f=$HOME/.ssh/authorized_keys; touch \"$f\"; n=0; while IFS= read -r k; do grep -qxF -- \"$k\" \"$f\" || { printf \"%s\\n\" \"$k\" >> \"$f\"; n=$((n + 1)); }; done; [ \"$n\" = 0 ] || echo \"done=added $n key(s) to $f\"'",
                &[deploy_user],
            );
        }
    }
    s.line("_dgroup=$(id -gn {})", &[deploy_user]);
    // Never hand over a directory that is not (yet) cargo-ship's: deploy_to = /var/lib or /usr
    // would give the deploy user the system.
    s.line(
        "if [ -d {} ] && ! [ -d {} ] && [ -n \"$(ls -A -- {})\" ]; then problem \"deploy_to \"{}\" exists, is not empty and holds no .ship directory: setup will not give it to \"{}; fi",
        &[layout.root(), &layout.state(), layout.root(), layout.root(), deploy_user],
    );
    // deploy_to to the deploy user. deploy_to itself lies in directories root controls; what is
    // inside, the deploy user controls (a rerun must never follow its symlinks as root: issue
    // #16). So: no symlink as deploy_to, ownership changed from inside the directory (`.`, the
    // directory itself whatever is renamed meanwhile), and every directory inside it created by
    // the deploy user and entered with `cd -P`, then refused unless it is where it should be.
    s.line(
        "[ -L {} ] && problem \"deploy_to \"{}\" is a symlink: setup will not give its target to \"{}",
        &[layout.root(), layout.root(), deploy_user],
    );
    s.line("mkdir -p -- {}", &[layout.root()]);
    s.line(
        "_real=$(cd -P -- {} && pwd -P); (cd -P -- {} && [ \"$(pwd -P)\" = \"$_real\" ] && chown -R -h {}:\"$_dgroup\" -- . && chmod 0755 -- .) || problem \"cannot give deploy_to \"{}\" to \"{}",
        &[layout.root(), layout.root(), deploy_user, layout.root(), deploy_user],
    );
    s.line(
        "runuser -u {} -- mkdir -p -- {} {}",
        &[deploy_user, &layout.state(), &layout.shared()],
    );
    if !svc.is_empty() {
        s.line("_sgroup=$(id -gn {})", &[&svc]);
        for d in &config.shared_dirs {
            let dir = format!("{}/{d}", layout.shared());
            let rel = dir.strip_prefix(layout.root()).unwrap_or(&dir).to_string();
            s.line(
                "runuser -u {} -- mkdir -p -- {} 2>/dev/null || true",
                &[deploy_user, &dir],
            );
            s.line(
                "(cd -P -- {} && [ \"$(pwd -P)\" = \"$_real\"{} ] && chown -R -h {}:\"$_sgroup\" -- . && chmod 0755 -- .) || problem \"shared dir \"{}\" is not a directory of its own under deploy_to (a symlink on the way?): setup will not give it to \"{}",
                &[&dir, &rel, &svc, &dir, &svc],
            );
        }
    }
    s.line(
        "install -d -m 0700 -o root -g root -- {}",
        &[crate::secrets::HOST_DIR],
    );
    if !root_deploys {
        let helper = format!("#!/bin/sh\n{}", privilege::helper(config, &svc).render()?);
        let helper_path = privilege::helper_path(config);
        let helper_dir = privilege::helper_dir(config);
        s.line("install -d -m 0755 -o root -g root -- {}", &[&helper_dir]);
        s.line("_helper={}", &[&helper]);
        s.line(
            "if ! printf '%s' \"$_helper\" | cmp -s - {}; then printf '%s' \"$_helper\" > {}.tmp; chmod 0755 -- {}.tmp; mv -f -- {}.tmp {}; echo done=installed {}; fi",
            &[&helper_path, &helper_path, &helper_path, &helper_path, &helper_path, &helper_path],
        );
        // Every unit text the service needs, rendered here (by root): the helper installs
        // these and nothing else. Texts that change move the old ones to units.old/ (what a
        // revert of the next deploy puts back).
        let fixed = privilege::fixed_dir(config);
        let new = format!("{fixed}.new");
        let old = format!("{fixed}.old");
        s.line(
            "rm -rf -- {}; install -d -m 0755 -o root -g root -- {}",
            &[&new, &new],
        );
        for f in crate::systemd::unit_files(config) {
            s.line("_u={}", &[&f.text]);
            s.line("printf '%s' \"$_u\" > {}/{}", &[&new, &f.name]);
        }
        s.line(
            "if [ -d {} ] && ! diff -r -q -- {} {} >/dev/null 2>&1; then rm -rf -- {}; mv -- {} {}; fi",
            &[&fixed, &fixed, &new, &old, &fixed, &old],
        );
        s.line(
            "if [ -d {} ]; then rm -rf -- {}; else mv -- {} {}; echo done=installed the unit files of {} in {}; fi",
            &[&fixed, &new, &new, &fixed, &config.systemd.unit, &fixed],
        );
        // The dead-man's switch runs as the deploy user.
        let dropin = privilege::guard_dropin_path(config);
        let dropin_dir = dropin.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        s.line(
            "_dropin={}",
            &[&privilege::guard_dropin_text(config, deploy_user)],
        );
        s.line("mkdir -p -- {}", &[dropin_dir]);
        s.line(
            "if ! printf '%s' \"$_dropin\" | cmp -s - {}; then printf '%s' \"$_dropin\" > {}; systemctl daemon-reload; echo done=installed {}; fi",
            &[&dropin, &dropin, &dropin],
        );
        let sudoers = privilege::sudoers_text(config, deploy_user, &svc);
        let path = privilege::sudoers_path(config);
        let tmp = format!("/etc/sudoers.d/.{}.tmp", config.systemd.unit);
        s.line("_sudoers={}", &[&sudoers]);
        s.line(
            "if ! printf '%s' \"$_sudoers\" | cmp -s - {}; then",
            &[&path],
        );
        s.line(
            "  printf '%s' \"$_sudoers\" > {}; chmod 0440 -- {}",
            &[&tmp, &tmp],
        );
        s.line(
            "  if ! _v=$(visudo -cf {} 2>&1); then rm -f -- {}; problem \"visudo refused the sudoers drop-in: $_v\"; fi",
            &[&tmp, &tmp],
        );
        s.line(
            "  mv -f -- {} {}; echo done=installed {}",
            &[&tmp, &path, &path],
        );
        s.lines("fi");
    }
    s.lines("echo ready=1");
    Ok(s)
}

/// The deploy user of a host: the user of its `hosts` entry.
fn deploy_user(spec: &HostSpec) -> Result<String> {
    spec.user.clone().ok_or_else(|| {
        Error::usage(
            format!("`cargo ship setup` needs the deploy user of host {spec}"),
            Some(format!(
                "write it in `hosts` as `user@{}` (root if the deploy logs in as root)",
                spec.host
            )),
        )
    })
}

/// Prepares every selected host of the environment.
pub async fn setup(config: &Config, opts: &SetupOptions, ui: &Ui) -> Result<()> {
    let env = config.env()?;
    let hosts = fleet::select_hosts(env, &opts.hosts)?;
    let keys = match &opts.authorized_key {
        Some(p) => read_keys(p)?,
        None => Vec::new(),
    };
    if !account_ok(&opts.admin_user) && opts.admin_user != "root" {
        return Err(Error::usage(
            format!("`--admin-user {}` is not a user name", opts.admin_user),
            None,
        ));
    }
    // Everything is checked and built before anything connects.
    let mut plans = Vec::new();
    for spec in hosts {
        let user = deploy_user(&spec)?;
        // Per-host overrides change unit texts: each host gets the ones its deploys render.
        let host_config = config.for_host(&spec.to_string());
        let mut inner = script(host_config, &user, &keys, opts.adopt_existing_user)?;
        let admin = HostSpec {
            user: Some(opts.admin_user.clone()),
            host: spec.host.clone(),
            port: spec.port,
        };
        if opts.admin_user != "root" {
            // The whole script runs as root through sudo, on its standard input.
            let text = inner.render()?;
            let mut outer = Script::new(inner.purpose().to_string());
            outer.line("_setup={}", &[&text]);
            outer.lines("printf '%s' \"$_setup\" | sudo -n sh");
            inner = outer;
        }
        plans.push((spec, admin, user, inner));
    }
    if opts.dry_run {
        for (spec, admin, _, s) in &plans {
            ui.emit(Event::Script {
                host: format!("{spec} (as {admin})"),
                purpose: s.purpose().into(),
                script: s.render_redacted()?,
            });
        }
        ui.status("Dry run", "nothing was changed");
        return Ok(());
    }
    let results = fleet::bounded(plans, env.parallel, |(spec, admin, user, s)| async move {
        let name = spec.to_string();
        let started = std::time::Instant::now();
        let conn = match Connection::open(&admin, env, ui).await {
            Ok(c) => c,
            Err(e) => return (name, Err(e)),
        };
        let out = conn.run_ok(&s).await;
        let mut row: HostRow = fleet::row(&conn);
        conn.close().await;
        let result = out.map(|out| {
            for l in out.lines().filter_map(|l| l.strip_prefix("done=")) {
                ui.host(&name, "Setup", l.to_string());
            }
            row.outcome = "ready".into();
            row.detail = Some(format!("deploys as {user}"));
            row.millis = started.elapsed().as_millis() as u64;
            row
        });
        (name, result)
    })
    .await;
    fleet::summarize("setup", results, ui)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::config_with;

    #[test]
    fn refuses_a_root_service_for_a_non_root_deployer() {
        let c = config_with("");
        let e = script(&c, "shipper", &[], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`cargo ship setup` cannot give shipper least privilege while the service runs as root"
        );
        assert_eq!(
            e.help().as_deref(),
            Some("set `user = \"hello\"` under [package.metadata.ship.systemd] (setup creates that account)")
        );
    }

    #[test]
    fn root_deployer_gets_no_helper() {
        let c = config_with("user = \"svc\"\n");
        let s = script(&c, "root", &[], false).unwrap().render().unwrap();
        assert!(!s.contains("sudoers"), "{s}");
        assert!(s.contains("useradd --system --user-group"), "{s}");
    }

    #[test]
    fn account_names() {
        assert!(account_ok("shipper"));
        assert!(account_ok("_x-1"));
        assert!(!account_ok("Root"));
        assert!(!account_ok("a b"));
        assert!(!account_ok("-x"));
    }
}
