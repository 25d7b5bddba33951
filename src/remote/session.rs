//! One OpenSSH master connection per host (ControlMaster via the `openssh` crate's native mux),
//! shared by every command (artifacts travel on a command's stdin) and the health probe's port
//! forward.
//!
//! Scripts run on worker shells (issue #18, `worker.rs`): the first script on a connection
//! opens one channel running [`WORKER`], and the scripts after it reuse that channel, one round
//! trip each instead of a channel open, an exec and a close. Scripts that run at the same time
//! on the same host get a worker each, at most [`MAX_WORKERS`]. `spawn` (output read while the
//! script runs) and `hold` (a script that lives as long as the connection) keep a channel of
//! their own.
//!
//! Host keys are checked strictly (known_hosts or the environment's ssh_config): an unknown or
//! changed key is an error, never silently accepted. ~/.ssh/config, `-F <ssh_config>` and
//! ssh-agent behave as with plain ssh, because the system `ssh` makes the connection;
//! `--ssh-config`/`--known-hosts` replace ~/.ssh/config with a generated `-F` file
//! (`ssh_files.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openssh::{
    ChildStderr, ChildStdin, ChildStdout, ControlPersist, ForwardType, KnownHosts, Session,
    SessionBuilder, Socket, Stdio,
};

use super::script::{Script, BOOTSTRAP, WORKER};
use super::worker::{Lost, Worker};
use crate::config::{Environment, HostSpec};
use crate::ui::{Event, Ui, Verbosity};
use crate::{Error, Result};

/// Counters for one host, reported in the summary and by the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    /// Remote commands run: scripts (each about one round trip on a worker shell), the
    /// channels of `spawn` and `hold`, port forwards.
    pub commands: AtomicU32,
    /// SSH channels opened (worker shells, `spawn`, `hold`): each costs a round trip or two.
    pub channels: AtomicU32,
    /// SSH connections opened (the goal is exactly one per host).
    pub connections: AtomicU32,
    /// Artifact bytes sent.
    pub bytes_sent: AtomicU64,
}

impl Stats {
    /// Remote commands run so far.
    pub fn commands(&self) -> u32 {
        self.commands.load(Ordering::Relaxed)
    }
    /// SSH channels opened so far.
    pub fn channels(&self) -> u32 {
        self.channels.load(Ordering::Relaxed)
    }
    /// Artifact bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }
}

/// What a remote script printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (-1 when killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// The last `n` lines of stderr (or stdout when stderr is empty).
    pub fn tail(&self, n: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Worker shells open at once on one connection: scripts that run at the same time on a host
/// (several services, the deploys of a workspace) each get one. sshd refuses channels past
/// `MaxSessions` (10 by default), and `hold`, `spawn` and the port forward need theirs.
pub const MAX_WORKERS: usize = 4;

/// One worker shell: its channel and its streams.
struct Channel {
    worker: Worker<ChildStdin, ChildStdout, ChildStderr>,
    child: openssh::Child<Arc<Session>>,
}

/// A master connection and the worker shells open on it; [`Connection::reconnect`] starts a
/// new one (with no worker).
struct Link {
    session: Arc<Session>,
    /// One permit per worker that may be open.
    slots: Arc<tokio::sync::Semaphore>,
    /// Workers open and free.
    idle: std::sync::Mutex<Vec<Channel>>,
}

impl Link {
    fn new(session: Session) -> Link {
        Link {
            session: Arc::new(session),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_WORKERS)),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// Scripts kept running while the connection lives ([`Connection::hold`]).
type Held = Arc<std::sync::Mutex<Vec<openssh::Child<Arc<Session>>>>>;

/// An open connection to one host.
pub struct Connection {
    host: String,
    spec: HostSpec,
    env: Environment,
    link: std::sync::Mutex<Arc<Link>>,
    stats: Arc<Stats>,
    ui: Ui,
    /// Scripts kept running while the connection lives ([`Connection::hold`]).
    held: Held,
    /// [`Connection::hold`]s whose channel is still opening: the next script waits for them.
    opening: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long ssh may take to connect before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl Connection {
    /// Opens the master connection to `spec` with strict host-key checking.
    pub async fn open(spec: &HostSpec, env: &Environment, ui: &Ui) -> Result<Connection> {
        let stats = Arc::new(Stats::default());
        let session = connect(spec, env, &stats).await?;
        Ok(Connection {
            host: spec.to_string(),
            spec: spec.clone(),
            env: env.clone(),
            link: std::sync::Mutex::new(Arc::new(Link::new(session))),
            stats,
            ui: ui.clone(),
            held: Held::default(),
            opening: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Replaces a master connection that died with a new one (and its workers with none).
    pub async fn reconnect(&self) -> Result<()> {
        let session = connect(&self.spec, &self.env, &self.stats).await?;
        *self.link.lock().expect("link lock") = Arc::new(Link::new(session));
        Ok(())
    }
}

async fn connect(spec: &HostSpec, env: &Environment, stats: &Stats) -> Result<Session> {
    {
        let host = spec.to_string();
        let mut b = SessionBuilder::default();
        b.known_hosts_check(KnownHosts::Strict)
            .connect_timeout(CONNECT_TIMEOUT)
            .server_alive_interval(Duration::from_secs(15))
            // A directory of this process's own, with a short path (ssh adds ~17 bytes to the
            // socket name): no other process, cargo-ship or not, cleans sockets out of it.
            .control_directory(control_dir())
            // Never "clean history": it deletes every `.ssh-connection*` dir in the control
            // directory, i.e. the live sockets of this process's other hosts.
            .clean_history_control_directory(false)
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(60).expect("nonzero"),
            ));
        if let Some(u) = &spec.user {
            b.user(u.clone());
        }
        if let Some(p) = spec.port {
            b.port(p);
        }
        // The environment's ssh_config, or one generated for --ssh-config/--known-hosts.
        if let Some(f) = super::ssh_files::config_for(env, &control_dir())? {
            b.config_file(f);
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        // At most `connect_parallel` handshakes in flight, however many hosts are worked on.
        let _permit = handshakes(env.connect_parallel).acquire_owned().await;
        b.connect_mux(&spec.host)
            .await
            .map_err(|e| connect_error(&host, env, e))
    }
}

/// The process's budget of SSH handshakes in flight (`connect_parallel`): sshd's default
/// `MaxStartups 10:30:100` (on the host, or on a jump host every connection passes) starts
/// refusing unauthenticated connections beyond 10. Shared by every connection the process
/// opens, whichever service's environment it is for; a different size (another environment
/// in the same process) starts a new budget.
fn handshakes(size: usize) -> Arc<tokio::sync::Semaphore> {
    static BUDGET: std::sync::Mutex<Option<(usize, Arc<tokio::sync::Semaphore>)>> =
        std::sync::Mutex::new(None);
    let mut b = BUDGET.lock().expect("handshake budget");
    match &*b {
        Some((n, s)) if *n == size => s.clone(),
        _ => {
            let s = Arc::new(tokio::sync::Semaphore::new(size.max(1)));
            *b = Some((size, s.clone()));
            s
        }
    }
}

impl Connection {
    /// The host as configured (`user@name:port`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// This host's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The shared session.
    pub(crate) fn session(&self) -> Arc<Session> {
        self.link().session.clone()
    }

    fn link(&self) -> Arc<Link> {
        self.link.lock().expect("link lock").clone()
    }

    /// Runs a script (on a worker shell: one round trip) and returns whatever it exits with.
    /// When the connection drops and the script is [`Script::idempotent`], reconnects once and
    /// runs it again.
    pub async fn run(&self, script: &Script) -> Result<Output> {
        self.run_with_payload(script, &[]).await
    }

    /// [`Connection::run`], with `payload` (an artifact) on the script's standard input: the
    /// bytes travel in the same round trip as the script that stores them.
    pub async fn run_with_payload(&self, script: &Script, payload: &[u8]) -> Result<Output> {
        if self.ui.verbosity() >= Verbosity::Verbose {
            self.ui.emit(Event::Script {
                host: self.host.clone(),
                purpose: script.purpose().to_string(),
                script: script.render_redacted()?,
            });
        }
        let out = match self.run_once(script, payload).await {
            Err(e) if script.is_idempotent() => {
                self.ui.warn(format!(
                    "{}: the connection dropped while trying to {} ({e}); reconnecting to run it again",
                    self.host,
                    script.purpose()
                ));
                match self.reconnect().await {
                    Ok(()) => self.run_once(script, payload).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        // A `hold` started before this script has its channel open once this returns.
        self.holds_open().await;
        out
    }

    /// Runs `script` on a free worker shell of the connection (opening one when none is free
    /// and fewer than [`MAX_WORKERS`] are open), with `payload` (an artifact, read by the
    /// script itself) on its standard input. A worker whose channel fails is dropped, and the
    /// script's outcome is the "connection failed" error.
    async fn run_once(&self, script: &Script, payload: &[u8]) -> Result<Output> {
        let purpose = script.purpose();
        let text = script.render()?;
        let link = self.link();
        let _slot = link
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the worker slots are never closed");
        let free = link.idle.lock().expect("idle workers").pop();
        let mut channel = match free {
            Some(c) => c,
            None => self.open_worker(&link, purpose).await?,
        };
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let ran = channel.worker.run(&text, payload).await;
        if !payload.is_empty() {
            self.stats
                .bytes_sent
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        match ran {
            Ok(ran) => {
                link.idle.lock().expect("idle workers").push(channel);
                Ok(Output {
                    status: ran.status,
                    stdout: String::from_utf8_lossy(&ran.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&ran.stderr).into_owned(),
                })
            }
            Err(lost) => Err(self.worker_lost(purpose, channel, lost).await),
        }
    }

    /// Opens a channel running [`WORKER`] (no value on its command line).
    async fn open_worker(&self, link: &Link, purpose: &str) -> Result<Channel> {
        self.stats.channels.fetch_add(1, Ordering::Relaxed);
        let mut child = Session::arc_command(link.session.clone(), "sh")
            .arg("-c")
            .arg(WORKER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.lost(purpose, e))?;
        match (
            child.stdin().take(),
            child.stdout().take(),
            child.stderr().take(),
        ) {
            (Some(i), Some(o), Some(e)) => Ok(Channel {
                worker: Worker::new(i, o, e),
                child,
            }),
            _ => Err(self.connection_failed(purpose, "the worker shell's streams are missing")),
        }
    }

    /// The error for a script whose worker was lost: openssh's own account of the channel
    /// when it has one (as for any remote command), else what the worker saw.
    async fn worker_lost(&self, purpose: &str, channel: Channel, lost: Lost) -> Error {
        let Channel { worker, child } = channel;
        drop(worker);
        match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Err(e)) => self.lost(purpose, e),
            Ok(Ok(status)) => self.connection_failed(
                purpose,
                &format!(
                    "{lost} (the remote shell exited {})",
                    status.code().unwrap_or(-1)
                ),
            ),
            Err(_) => self.connection_failed(purpose, &lost.to_string()),
        }
    }

    /// Waits until the channels of every [`Connection::hold`] started so far are open (or
    /// failed, which their task has said).
    async fn holds_open(&self) {
        let opening: Vec<_> = std::mem::take(&mut *self.opening.lock().expect("opening"));
        for task in opening {
            let _ = task.await;
        }
    }

    /// Starts [`BOOTSTRAP`] on the host with all three streams piped (one remote command on
    /// a channel of its own).
    async fn start(&self, purpose: &str) -> Result<openssh::Child<Arc<Session>>> {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        self.stats.channels.fetch_add(1, Ordering::Relaxed);
        start(self.session())
            .await
            .map_err(|e| self.lost(purpose, e))
    }

    /// Whether the master connection still answers.
    pub async fn alive(&self) -> bool {
        self.session().check().await.is_ok()
    }

    /// Starts a script whose output is read while it runs (`logs -f`, `exec`): the script on
    /// stdin (then end of input), stdout and stderr piped. Dropping the child closes its
    /// channel.
    pub async fn spawn(&self, script: &Script) -> Result<openssh::Child<Arc<Session>>> {
        use tokio::io::AsyncWriteExt;
        let framed = script.framed()?;
        if self.ui.verbosity() >= Verbosity::Verbose {
            self.ui.emit(Event::Script {
                host: self.host.clone(),
                purpose: script.purpose().to_string(),
                script: script.render_redacted()?,
            });
        }
        // Like every script: BOOTSTRAP on the command line, the script on standard input
        // (then end of input), so nothing it holds shows in the host's process list.
        let mut child = self.start(script.purpose()).await?;
        if let Some(mut stdin) = child.stdin().take() {
            let _ = stdin.write_all(&framed).await;
            let _ = stdin.shutdown().await;
        }
        Ok(child)
    }

    /// Starts a script that keeps running as long as this connection (its input stays open:
    /// it ends when the channel closes, however this process ends) on a channel of its own,
    /// without waiting for it: the channel opens beside whatever runs next on the connection
    /// ([`crate::lock::lease`]), and that next script returns only once it is open (or has
    /// failed to open: then a warning names the script and ends with `if_not`, what its
    /// absence means).
    pub fn hold(&self, script: &Script, if_not: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let framed = script.framed()?;
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        self.stats.channels.fetch_add(1, Ordering::Relaxed);
        let session = self.session();
        let held = self.held.clone();
        let ui = self.ui.clone();
        let warning = format!("{}: could not {}", self.host, script.purpose());
        let if_not = if_not.to_string();
        let task = tokio::spawn(async move {
            let opened = async {
                let mut child = start(session).await.map_err(|e| describe(&e))?;
                if let Some(stdin) = child.stdin().as_mut() {
                    stdin.write_all(&framed).await.map_err(|e| e.to_string())?;
                    let _ = stdin.flush().await;
                }
                Ok::<_, String>(child)
            };
            match opened.await {
                Ok(child) => held.lock().expect("held").push(child),
                Err(e) => ui.warn(format!("{warning} ({e}); {if_not}")),
            }
        });
        self.opening.lock().expect("opening").push(task);
        Ok(())
    }

    /// Runs a script and returns its stdout, or [`Error::Remote`] when it exits non-zero.
    pub async fn run_ok(&self, script: &Script) -> Result<String> {
        let out = self.run(script).await?;
        if out.status != 0 {
            return Err(self.remote_error(script, &out));
        }
        Ok(out.stdout)
    }

    /// The typed error for a script that exited non-zero.
    pub fn remote_error(&self, script: &Script, out: &Output) -> Error {
        Error::Remote {
            host: self.host.clone(),
            purpose: script.purpose().to_string(),
            status: out.status,
            stderr_tail: out.tail(10),
        }
    }

    fn lost(&self, purpose: &str, e: openssh::Error) -> Error {
        self.connection_failed(purpose, &describe(&e))
    }

    /// The error of a remote command whose connection (or channel) failed: its outcome is
    /// unknown (status -1).
    fn connection_failed(&self, purpose: &str, detail: &str) -> Error {
        Error::Remote {
            host: self.host.clone(),
            purpose: purpose.to_string(),
            status: -1,
            stderr_tail: format!("the ssh connection failed: {detail}"),
        }
    }

    /// Forwards a free local port to `remote_host:remote_port` as seen from the host, through
    /// this connection. Returns the local address to connect to.
    ///
    /// The local port is picked free and then bound by ssh, so another process can take it in
    /// between; a forward that fails is asked again on a new port, once after reconnecting
    /// when the master connection died.
    pub async fn forward(&self, remote_host: &str, remote_port: u16) -> Result<PortForward> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.forward_once(remote_host, remote_port).await {
                Ok(f) => return Ok(f),
                Err(e) if attempt < 3 => {
                    if !self.alive().await {
                        self.ui.warn(format!(
                            "{}: the connection dropped while forwarding a port ({e}); reconnecting",
                            self.host
                        ));
                        self.reconnect().await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn forward_once(&self, remote_host: &str, remote_port: u16) -> Result<PortForward> {
        let local = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| {
                Error::io("reserve a local port for the health probe", "127.0.0.1", e)
            })?;
            l.local_addr()
                .map_err(|e| Error::io("reserve a local port", "127.0.0.1", e))?
        };
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        self.session()
            .request_port_forward(
                ForwardType::Local,
                local,
                Socket::new(remote_host, remote_port),
            )
            .await
            .map_err(|e| self.lost(&format!("forward a port to {remote_host}:{remote_port}"), e))?;
        Ok(PortForward {
            local,
            remote: (remote_host.to_string(), remote_port),
        })
    }

    /// Closes a port forward opened by [`Connection::forward`].
    pub async fn close_forward(&self, f: PortForward) {
        let _ = self
            .session()
            .close_port_forward(
                ForwardType::Local,
                f.local,
                Socket::new(&f.remote.0, f.remote.1),
            )
            .await;
    }

    /// Closes the master connection (waits for ssh to exit).
    pub async fn close(self) {
        self.holds_open().await;
        // The held scripts and the workers end with their channels (a worker at the end of
        // its input), and give their session back.
        self.held.lock().expect("held").clear();
        let link = self.link.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Ok(link) = Arc::try_unwrap(link) {
            let Link { session, idle, .. } = link;
            drop(idle);
            if let Ok(session) = Arc::try_unwrap(session) {
                let _ = session.close().await;
            }
        }
    }
}

/// Starts [`BOOTSTRAP`] on `session` with all three streams piped.
async fn start(
    session: Arc<Session>,
) -> std::result::Result<openssh::Child<Arc<Session>>, openssh::Error> {
    Session::arc_command(session, "sh")
        .arg("-c")
        .arg(BOOTSTRAP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await
}

/// An openssh error with every source named: its messages hide their cause (a refused forward
/// reads "failed to connect to the ssh multiplex server").
fn describe(e: &openssh::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    detail
}

/// A local port forwarded to an address on a host.
#[derive(Debug, Clone)]
pub struct PortForward {
    /// The local address to connect to.
    pub local: SocketAddr,
    remote: (String, u16),
}

/// This process's own control directory: a short path under the temp dir (control socket
/// paths must stay under ~100 bytes), created on first use and removed by
/// [`remove_control_dir`].
pub(crate) fn control_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let base = if tmp.as_os_str().len() <= 24 {
            tmp
        } else {
            "/tmp".into()
        };
        tempfile::Builder::new()
            .prefix("cship-")
            .tempdir_in(&base)
            .map(|d| d.keep())
            .unwrap_or(base)
    })
    .clone()
}

/// Removes this process's control directory once every connection is closed (called by the
/// binary on exit; a no-op when it is not empty or was never created).
pub fn remove_control_dir() {
    super::ssh_files::remove_generated();
    let dir = control_dir();
    if dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("cship-"))
    {
        let _ = std::fs::remove_dir(dir);
    }
}

fn connect_error(host: &str, env: &Environment, e: openssh::Error) -> Error {
    let detail = e.to_string();
    let source = std::error::Error::source(&e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    let all = format!("{detail}{source}");
    let cfg = super::ssh_files::hint_args(env);
    let outside_kh = super::ssh_files::outside().known_hosts.is_some();
    let help = if (all.contains("Host key verification failed")
        || all.contains("REMOTE HOST IDENTIFICATION"))
        && outside_kh
    {
        format!(
            "the host key of {host} is not in the known_hosts given with --known-hosts / \
             CARGO_SHIP_KNOWN_HOSTS (the GitHub Action's `known-hosts` input), and cargo-ship never \
             accepts keys silently. Compare `ssh-keyscan -t ed25519 <address> | ssh-keygen -lf -` \
             with the server's own `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` (console or a \
             trusted channel), then put the scanned line into that known_hosts"
        )
    } else if all.contains("Host key verification failed")
        || all.contains("REMOTE HOST IDENTIFICATION")
    {
        format!(
            "the host key of {host} is unknown or has changed, and cargo-ship never accepts keys \
             silently. Compare `ssh-keyscan -t ed25519 <address> | ssh-keygen -lf -` with the \
             server's own `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` (console or a trusted \
             channel), then add the scanned line to the known_hosts file your ssh config uses \
             (`ssh{cfg} -G {host} | grep -i knownhostsfile` shows which)"
        )
    } else if all.contains("Permission denied") {
        format!("ssh could not log in to {host}: check the user, that your key is loaded (`ssh-add -l`), and try `ssh{cfg} {host} true`")
    } else {
        format!("check that `ssh{cfg} {host} true` works from this machine")
    };
    Error::Connect {
        host: host.to_string(),
        detail: all.trim().to_string(),
        help: Some(help),
    }
}

#[cfg(test)]
mod tests {
    use super::handshakes;

    /// #18 item 1: one budget of `connect_parallel` handshakes per process, shared by every
    /// connection of the same size; another size starts its own.
    #[tokio::test]
    async fn issue_18_handshake_budget_is_shared_and_bounded() {
        let a = handshakes(3);
        let b = handshakes(3);
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let held: Vec<_> =
            futures_util::future::join_all((0..3).map(|_| a.clone().acquire_owned())).await;
        assert_eq!(b.available_permits(), 0);
        let fourth = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            b.clone().acquire_owned(),
        )
        .await;
        assert!(fourth.is_err(), "a 4th handshake must wait");
        drop(held);
        assert_eq!(a.available_permits(), 3);
        assert_eq!(handshakes(5).available_permits(), 5);
    }
}
