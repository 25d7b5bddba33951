//! ssh configuration handed to cargo-ship from outside the project: `--ssh-config FILE`
//! (`CARGO_SHIP_SSH_CONFIG`) and `--known-hosts FILE` (`CARGO_SHIP_KNOWN_HOSTS`).
//!
//! A CI job (the GitHub Action) or a laptop can give cargo-ship an ssh config and the one
//! known_hosts file to trust without touching `~/.ssh` or Cargo.toml. When either is given,
//! cargo-ship writes a small ssh config of its own in its private control directory and passes
//! it to ssh as `-F`, so `~/.ssh/config` is never read:
//!
//! ```text
//! UserKnownHostsFile "<--known-hosts>"      (only this file is trusted; ssh never writes to it
//! GlobalKnownHostsFile /dev/null             because host keys are checked strictly)
//! StrictHostKeyChecking yes
//! Include "<--ssh-config>"                  (first value wins: it overrides the environment's)
//! Include "<the environment's ssh_config>"
//! ```
//!
//! Without either, ssh gets the environment's `ssh_config` as `-F` (or reads ~/.ssh/config), as
//! before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::config::Environment;
use crate::{Error, Result};

/// ssh files given from outside the project (command line or environment variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshFiles {
    /// `--ssh-config` / `CARGO_SHIP_SSH_CONFIG`: an ssh config included before the
    /// environment's own `ssh_config`, so its settings win.
    pub config: Option<PathBuf>,
    /// `--known-hosts` / `CARGO_SHIP_KNOWN_HOSTS`: the only known_hosts file ssh consults.
    pub known_hosts: Option<PathBuf>,
    /// `CARGO_SHIP_SSH_AUTH_SOCK`: the ssh-agent socket for ssh alone (`IdentityAgent`), so
    /// the build never gets it as `SSH_AUTH_SOCK` (the GitHub Action sets it, issue #16).
    pub agent: Option<PathBuf>,
}

static OUTSIDE: OnceLock<SshFiles> = OnceLock::new();
static GENERATED: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

impl SshFiles {
    /// Checks that the files exist and can be read (a known_hosts file must hold at least one
    /// key), and makes their paths absolute. The errors name the flag and its variable.
    pub fn checked(self) -> Result<SshFiles> {
        let config = match self.config {
            Some(p) => Some(readable(&p, "--ssh-config", "CARGO_SHIP_SSH_CONFIG")?.0),
            None => None,
        };
        let known_hosts = match self.known_hosts {
            Some(p) => {
                let (abs, text) = readable(&p, "--known-hosts", "CARGO_SHIP_KNOWN_HOSTS")?;
                let keys = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .count();
                if keys == 0 {
                    return Err(Error::usage(
                        format!(
                            "the known_hosts file `{}` (--known-hosts / CARGO_SHIP_KNOWN_HOSTS) holds no host keys",
                            p.display()
                        ),
                        Some(
                            "add one line per host, `<address> <key type> <key>`, taken from the server \
                             itself or from `ssh-keyscan <address>` checked against the server's \
                             fingerprint; cargo-ship never accepts an unknown host key"
                                .into(),
                        ),
                    ));
                }
                Some(abs)
            }
            None => None,
        };
        let agent = match self.agent {
            Some(p) => {
                let t = p.to_string_lossy();
                if t.contains(['"', '$', '\n', '\r']) || !p.is_absolute() {
                    return Err(Error::usage(
                        format!("CARGO_SHIP_SSH_AUTH_SOCK: `{t}` is not an absolute path an ssh config can name"),
                        Some("set it to the agent's socket, e.g. the SSH_AUTH_SOCK ssh-agent printed".into()),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        Ok(SshFiles {
            config,
            known_hosts,
            agent,
        })
    }

    /// True when neither file is given.
    pub fn is_empty(&self) -> bool {
        self.config.is_none() && self.known_hosts.is_none() && self.agent.is_none()
    }
}

fn readable(path: &Path, flag: &str, var: &str) -> Result<(PathBuf, String)> {
    let fail = |why: String| {
        Error::usage(
            format!("{flag} / {var}: cannot read `{}`: {why}", path.display()),
            Some(format!(
                "pass an existing file to {flag} (or set {var} to one), or leave both unset"
            )),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let abs = std::fs::canonicalize(path).map_err(|e| fail(e.to_string()))?;
    let s = abs.to_string_lossy();
    if s.contains('"') || s.contains('\n') || s.contains('\r') {
        return Err(fail(
            "its path holds a double quote or a line break, which an ssh config cannot name".into(),
        ));
    }
    Ok((abs, text))
}

/// Sets the outside ssh files for this process (call once, before any connection; later calls
/// are ignored). Pass files already [`SshFiles::checked`].
pub fn set_outside(files: SshFiles) {
    let _ = OUTSIDE.set(files);
}

/// The outside ssh files of this process (empty when none were given).
pub fn outside() -> SshFiles {
    OUTSIDE.get().cloned().unwrap_or_default()
}

/// The text of the ssh config cargo-ship generates for `env` when outside files are given.
pub fn render(outside: &SshFiles, env_config: Option<&Path>, env_name: &str) -> String {
    let mut t = format!(
        "# Generated by cargo-ship for environment `{env_name}`; removed when it exits.\n\
         # Host keys are checked strictly: an unknown or changed key fails the connection.\n\
         StrictHostKeyChecking yes\n"
    );
    if let Some(kh) = &outside.known_hosts {
        t.push_str("# --known-hosts / CARGO_SHIP_KNOWN_HOSTS: the only host keys trusted.\n");
        // UserKnownHostsFile expands %-tokens: a literal % is written %%.
        t.push_str(&format!(
            "UserKnownHostsFile \"{}\"\nGlobalKnownHostsFile /dev/null\n",
            kh.display().to_string().replace('%', "%%")
        ));
        // Nor any other source of host keys (a command, DNS), and no agent for the host
        // (issue #16). First values win: an included config cannot turn them back on. An ssh
        // older than 8.5 knows no KnownHostsCommand (and so runs none).
        t.push_str(
            "IgnoreUnknown KnownHostsCommand\nKnownHostsCommand none\nVerifyHostKeyDNS no\nForwardAgent no\n",
        );
    }
    if let Some(a) = &outside.agent {
        t.push_str("# CARGO_SHIP_SSH_AUTH_SOCK: the agent, for ssh alone (never in the build's environment).\n");
        t.push_str(&format!(
            "IdentityAgent \"{}\"\n",
            a.display().to_string().replace('%', "%%")
        ));
    }
    if let Some(c) = &outside.config {
        t.push_str(
            "# --ssh-config / CARGO_SHIP_SSH_CONFIG (its settings come first, so they win)\n",
        );
        t.push_str(&format!("Include \"{}\"\n", c.display()));
    }
    if let Some(c) = env_config {
        t.push_str(&format!(
            "# ssh_config of environment `{env_name}` in Cargo.toml\nMatch all\nInclude \"{}\"\n",
            c.display()
        ));
    }
    t
}

/// The file ssh gets as `-F` for `env`: the environment's own `ssh_config` when nothing was
/// given from outside, else a config generated (once per environment) in `dir`.
pub fn config_for(env: &Environment, dir: &Path) -> Result<Option<PathBuf>> {
    let outside = outside();
    if outside.is_empty() {
        return Ok(env.ssh_config.clone());
    }
    let mut generated = GENERATED.lock().unwrap_or_else(|e| e.into_inner());
    let map = generated.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&env.name) {
        return Ok(Some(p.clone()));
    }
    let path = dir.join(format!("ssh_config-{}", map.len()));
    let text = render(&outside, env.ssh_config.as_deref(), &env.name);
    std::fs::write(&path, text)
        .map_err(|e| Error::io("write the generated ssh config", &path, e))?;
    map.insert(env.name.clone(), path.clone());
    Ok(Some(path))
}

/// Removes the generated configs (called before the control directory is removed).
pub fn remove_generated() {
    let mut generated = GENERATED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = generated.take() {
        for p in map.values() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How to run ssh by hand the way cargo-ship does, for help texts: `ssh -F <file>` with the
/// files a user can see (the generated config is gone once cargo-ship exits).
pub fn hint_args(env: &Environment) -> String {
    let outside = outside();
    let mut s = String::new();
    match (&outside.config, &env.ssh_config) {
        (Some(c), _) | (None, Some(c)) => s.push_str(&format!(" -F {}", c.display())),
        (None, None) if outside.known_hosts.is_some() => s.push_str(" -F /dev/null"),
        _ => {}
    }
    if let Some(kh) = &outside.known_hosts {
        s.push_str(&format!(
            " -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
            kh.display()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_hosts_then_outside_config_then_environment_config() {
        let files = SshFiles {
            config: Some("/ci/ssh config".into()),
            known_hosts: Some("/ci/known_100%".into()),
            agent: None,
        };
        let text = render(&files, Some(Path::new("/app/deploy/ssh_config")), "prod");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "StrictHostKeyChecking yes",
                "UserKnownHostsFile \"/ci/known_100%%\"",
                "GlobalKnownHostsFile /dev/null",
                "IgnoreUnknown KnownHostsCommand",
                "KnownHostsCommand none",
                "VerifyHostKeyDNS no",
                "ForwardAgent no",
                "Include \"/ci/ssh config\"",
                "Match all",
                "Include \"/app/deploy/ssh_config\"",
            ]
        );
    }

    #[test]
    fn known_hosts_alone_still_replaces_the_users_config() {
        let files = SshFiles {
            config: None,
            known_hosts: Some("/kh".into()),
            agent: None,
        };
        let text = render(&files, None, "prod");
        assert!(text.contains("UserKnownHostsFile \"/kh\"\nGlobalKnownHostsFile /dev/null\n"));
        assert!(!text.contains("Include"));
    }

    #[test]
    fn checked_refuses_missing_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SshFiles {
            config: Some(dir.path().join("nope")),
            known_hosts: None,
            agent: None,
        };
        let e = missing.checked().unwrap_err().to_string();
        assert!(
            e.starts_with("--ssh-config / CARGO_SHIP_SSH_CONFIG: cannot read `"),
            "{e}"
        );

        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "# nothing yet\n\n").unwrap();
        let empty = SshFiles {
            config: None,
            known_hosts: Some(kh.clone()),
            agent: None,
        };
        let e = empty.checked().unwrap_err().to_string();
        assert!(e.contains("holds no host keys"), "{e}");

        std::fs::write(&kh, "10.0.0.1 ssh-ed25519 AAAA\n").unwrap();
        let ok = SshFiles {
            config: None,
            known_hosts: Some(kh),
            agent: None,
        }
        .checked()
        .unwrap();
        assert!(ok.known_hosts.unwrap().is_absolute());
    }
}
