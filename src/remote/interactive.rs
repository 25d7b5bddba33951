//! The one place a local `ssh` process is started: `cargo ship ssh`, which needs a terminal
//! on the host (the multiplexed sessions of `remote::session` have none). The remote command
//! is a [`Script`] rendered by the quoting builder and handed to `sh -c` as one quoted word;
//! the connection uses the environment's ssh_config and strict host-key checking, like every
//! other connection.

use crate::config::{Environment, HostSpec};
use crate::remote::script::{quote, Script};
use crate::{Error, Result};

/// Runs `script` on `spec` with a terminal (`ssh -t`), stdin/stdout/stderr inherited, and
/// returns the remote shell's exit code.
pub fn run(spec: &HostSpec, env: &Environment, script: &Script) -> Result<i32> {
    let text = script.render()?;
    let remote = format!("sh -c {}", quote(&text).map_err(|e| Error::usage(e, None))?);
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-t").args(["-o", "StrictHostKeyChecking=yes"]);
    // The same ssh config as every other connection: the environment's ssh_config, or the
    // one generated for --ssh-config/--known-hosts.
    if let Some(f) = super::ssh_files::config_for(env, &super::session::control_dir())? {
        cmd.arg("-F").arg(f);
    }
    if let Some(p) = spec.port {
        cmd.arg("-p").arg(p.to_string());
    }
    if let Some(u) = &spec.user {
        cmd.arg("-l").arg(u);
    }
    cmd.arg("--").arg(&spec.host).arg(remote);
    let status = cmd
        .status()
        .map_err(|e| Error::io("run the local ssh client", "ssh", e))?;
    Ok(status.code().unwrap_or(-1))
}
