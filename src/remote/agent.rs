//! The deploy agent stays locked while the build runs (issue #16).
//!
//! The GitHub Action hands cargo-ship an ssh-agent holding the deploy key
//! (`CARGO_SHIP_SSH_AUTH_SOCK`, given to ssh alone: see [`super::ssh_files`]). The build runs
//! every build script and proc macro of every dependency as the same user, which could find the
//! agent's socket and have it sign a login to the hosts. So for the whole build the agent is
//! locked (the agent protocol's `SSH_AGENTC_LOCK`, the same as `ssh-add -x`) with a random
//! password that exists only in this process's memory: a locked agent refuses every signature
//! and lists no key. It is unlocked when the build is over, before any connection.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

const SSH_AGENT_SUCCESS: u8 = 6;
const SSH_AGENTC_LOCK: u8 = 22;
const SSH_AGENTC_UNLOCK: u8 = 23;

/// Sends one request (`kind`, then `password` as an SSH string); true on SSH_AGENT_SUCCESS.
fn request(socket: &Path, kind: u8, password: &str) -> std::io::Result<bool> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut body = vec![kind];
    body.extend_from_slice(&(password.len() as u32).to_be_bytes());
    body.extend_from_slice(password.as_bytes());
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut reply = vec![0u8; (u32::from_be_bytes(len) as usize).min(1 << 16)];
    s.read_exact(&mut reply)?;
    Ok(reply.first() == Some(&SSH_AGENT_SUCCESS))
}

/// A random password (16 bytes of the system's randomness, in hex).
fn password() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("read random bytes for the agent lock", "/dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The agent locked until this is dropped (or [`Locked::unlock`]ed).
pub struct Locked {
    socket: PathBuf,
    password: String,
    done: bool,
}

impl Locked {
    /// Unlocks the agent; an error says the deploy cannot log in.
    pub fn unlock(mut self) -> Result<()> {
        self.done = true;
        match request(&self.socket, SSH_AGENTC_UNLOCK, &self.password) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::usage(
                format!("the ssh-agent at {} (CARGO_SHIP_SSH_AUTH_SOCK) refused to unlock after the build: something else locked or replaced it", self.socket.display()),
                Some("run the deploy again; if it happens again, look for what talks to the agent during the build".into()),
            )),
            Err(e) => Err(Error::io("unlock the ssh-agent after the build", &self.socket, e)),
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if !self.done {
            let _ = request(&self.socket, SSH_AGENTC_UNLOCK, &self.password);
        }
    }
}

/// Locks the agent of `CARGO_SHIP_SSH_AUTH_SOCK` (the action's) for the build; `None` when
/// there is none.
pub fn lock_for_build() -> Result<Option<Locked>> {
    let Some(socket) = super::ssh_files::outside().agent else {
        return Ok(None);
    };
    lock(&socket).map(Some)
}

/// Locks the agent at `socket` with a fresh random password.
pub fn lock(socket: &Path) -> Result<Locked> {
    let password = password()?;
    match request(socket, SSH_AGENTC_LOCK, &password) {
        Ok(true) => Ok(Locked {
            socket: socket.to_path_buf(),
            password,
            done: false,
        }),
        Ok(false) => Err(Error::usage(
            format!(
                "the ssh-agent at {} (CARGO_SHIP_SSH_AUTH_SOCK) refused to lock for the build (already locked?)",
                socket.display()
            ),
            Some("give cargo-ship an agent of its own, unlocked".into()),
        )),
        Err(e) => Err(Error::io("lock the ssh-agent for the build", socket, e)),
    }
}
