//! Real test hosts: Debian bookworm roots booted with systemd-nspawn (real systemd, real sshd),
//! each in its own network namespace. The one implementation of booting lives in
//! `scripts/testhosts`; this module drives it and gives tests an ssh/HTTP view of the hosts.
//!
//! Use it from a test binary with `#[path = "../support/host.rs"] mod host;`, then:
//!
//! ```ignore
//! let Some(hosts) = host::shared_or_skip() else { return };
//! let out = hosts.hosts[0].exec("systemctl is-system-running");
//! ```
//!
//! Without root, systemd-nspawn or debootstrap the tests print `skipping: <reason>` and return,
//! except under `CI=true`, where a skip is a failure: CI must never pass by skipping.
#![allow(dead_code, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why the host tests cannot run on this machine (not root, tools missing).
#[derive(Debug, Clone)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Options for [`TestHosts::boot`].
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Indexes of hosts without zstd (`/usr/bin/zstd` removed, so `tar --zstd` fails too).
    pub no_zstd: Vec<usize>,
    /// ssh alias prefix: `None` gives `host0..host{N-1}`; `Some("demo")` gives `demo1..demoN`.
    pub alias_prefix: Option<String>,
    /// How long to wait for sshd and `systemctl is-system-running --wait` (script default 90 s).
    pub timeout: Option<Duration>,
    /// Debian suite of the hosts' root (`bookworm` when `None`; `bullseye` has glibc 2.31).
    pub suite: Option<String>,
    /// Debian architecture of the hosts' root: this machine's when `None`; `arm64` boots
    /// aarch64 hosts under qemu-user (`uname -m` there says `aarch64`).
    pub arch: Option<String>,
}

/// A set of booted hosts. Dropping it takes them down; should the test process die first, a
/// watcher started by `scripts/testhosts up --owner-pid` does it.
pub struct TestHosts {
    /// The run's directory: ssh_config, known_hosts, id_ed25519, host*.console.log.
    pub dir: PathBuf,
    /// `ssh -F <ssh_config> host0` reaches host 0 as root; `host0-deploy` as user `deploy`.
    pub ssh_config: PathBuf,
    pub hosts: Vec<TestHost>,
    run_id: String,
    /// Shared hosts live for the whole process; the watcher takes them down at exit.
    tear_down_on_drop: bool,
}

/// One booted host.
#[derive(Debug, Clone)]
pub struct TestHost {
    /// The ssh alias in `ssh_config` (`host0`, or `demo1` with an alias prefix).
    pub name: String,
    pub ip: Ipv4Addr,
    /// The systemd-nspawn machine name (unique per run).
    pub machine: String,
    pub index: usize,
    pub has_zstd: bool,
    /// The run's ssh_config (with entries `<name>` for root and `<name>-deploy` for deploy).
    pub ssh_config: PathBuf,
    /// The host's console log (systemd's boot messages), for failure reports.
    pub console_log: PathBuf,
}

/// The script all booting goes through.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testhosts")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Turns a reason to skip into a [`Skip`], or a panic under `CI=true`.
pub fn skip_or_panic(reason: impl Into<String>) -> Skip {
    let reason = reason.into();
    if in_ci() {
        panic!("host tests cannot run, and CI=true forbids skipping them: {reason}");
    }
    eprintln!("skipping: {reason}");
    Skip(reason)
}

fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn have_command(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .any(|d| d.join(name).is_file())
}

/// `None` if this machine can boot test hosts; else the reason to skip (printed as
/// `skipping: <reason>`). Panics instead under `CI=true`.
pub fn require_root() -> Option<Skip> {
    missing_prerequisite().map(skip_or_panic)
}

/// Why this machine cannot boot test hosts, if it cannot (no policy applied).
fn missing_prerequisite() -> Option<String> {
    match euid() {
        Some(0) => {}
        Some(uid) => return Some(format!("host tests need root (running as uid {uid})")),
        None => return Some("host tests need root (cannot read /proc/self/status)".into()),
    }
    ["systemd-nspawn", "debootstrap", "ssh", "ssh-keygen", "ip"]
        .into_iter()
        .find(|tool| !have_command(tool))
        .map(|tool| format!("{tool} not found; run `sudo bash .ci/setup`"))
}

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}-{}-{:x}",
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::SeqCst),
        nanos
    )
}

impl TestHosts {
    /// Boots `count` hosts for this test alone (a few seconds once the root is cached; the
    /// first call on a machine also builds the root, about a minute). Prefer [`shared`].
    pub fn boot(count: usize, opts: BootOptions) -> Result<TestHosts, Skip> {
        Self::boot_inner(count, opts).map_err(skip_or_panic)
    }

    /// Boots, or gives the reason to skip; panics if booting fails.
    fn boot_inner(count: usize, opts: BootOptions) -> Result<TestHosts, String> {
        if let Some(reason) = missing_prerequisite() {
            return Err(reason);
        }
        let run_id = new_run_id();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/ship-testhosts/runs")
            .join(&run_id);
        let mut cmd = Command::new(script());
        cmd.arg("up")
            .args(["--run-id", &run_id, "--count", &count.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string()]);
        if !opts.no_zstd.is_empty() {
            let list: Vec<String> = opts.no_zstd.iter().map(|i| i.to_string()).collect();
            cmd.args(["--no-zstd", &list.join(",")]);
        }
        if let Some(prefix) = &opts.alias_prefix {
            cmd.args(["--alias-prefix", prefix]);
        }
        if let Some(suite) = &opts.suite {
            cmd.env("SHIP_TESTHOSTS_SUITE", suite);
        }
        if let Some(arch) = &opts.arch {
            cmd.env("SHIP_TESTHOSTS_ARCH", arch);
        }
        if let Some(t) = opts.timeout {
            cmd.args(["--timeout", &t.as_secs().max(1).to_string()]);
        }
        let started = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(77) => {
                let reason = stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("scripts/testhosts skipped");
                return Err(reason
                    .trim_start_matches("testhosts: skipped: ")
                    .to_string());
            }
            _ => panic!(
                "booting {count} test host(s) (run {run_id}) failed after {:.1?} ({}):\n{stderr}",
                started.elapsed(),
                out.status
            ),
        }
        let ssh_config = dir.join("ssh_config");
        let listing = std::fs::read_to_string(dir.join("hosts")).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/testhosts up succeeded without it)",
                dir.join("hosts").display()
            )
        });
        let hosts = listing
            .lines()
            .enumerate()
            .map(|(index, line)| {
                let mut f = line.split_whitespace();
                let (Some(name), Some(ip), Some(machine)) = (f.next(), f.next(), f.next()) else {
                    panic!("bad line {line:?} in {}", dir.join("hosts").display())
                };
                TestHost {
                    name: name.to_string(),
                    ip: ip
                        .parse()
                        .unwrap_or_else(|e| panic!("bad ip {ip:?} for {name}: {e}")),
                    machine: machine.to_string(),
                    index,
                    has_zstd: !opts.no_zstd.contains(&index),
                    ssh_config: ssh_config.clone(),
                    console_log: dir.join(format!("host{index}.console.log")),
                }
            })
            .collect::<Vec<_>>();
        assert_eq!(
            hosts.len(),
            count,
            "scripts/testhosts listed {} hosts, asked for {count}",
            hosts.len()
        );
        Ok(TestHosts {
            dir,
            ssh_config,
            hosts,
            run_id,
            tear_down_on_drop: true,
        })
    }

    /// The run id (names of the bridge, netns and machines derive from it).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &TestHost {
        &self.hosts[i]
    }

    /// Takes the hosts down now (also done on drop). Idempotent.
    pub fn down(&self) {
        let out = Command::new(script())
            .args(["down", "--run-id", &self.run_id])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: scripts/testhosts down --run-id {} failed ({}):\n{}",
                self.run_id,
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: cannot run scripts/testhosts down: {e}"),
        }
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        if self.tear_down_on_drop {
            self.down();
        }
    }
}

enum Shared {
    Up(TestHosts),
    Skipped(Skip),
    Failed(String),
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared_state() -> &'static Shared {
    SHARED.get_or_init(|| {
        let opts = BootOptions {
            no_zstd: vec![2],
            ..BootOptions::default()
        };
        match std::panic::catch_unwind(|| TestHosts::boot_inner(3, opts)) {
            Ok(Ok(mut hosts)) => {
                // Statics are never dropped: the watcher (--owner-pid) takes these down at exit.
                hosts.tear_down_on_drop = false;
                Shared::Up(hosts)
            }
            Ok(Err(reason)) => Shared::Skipped(Skip(reason)),
            Err(panic) => Shared::Failed(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "booting the shared test hosts panicked".into()),
            ),
        }
    })
}

/// Three hosts shared by all tests of this test binary, booted on first use: `host0`, `host1`
/// and `host2`, where host 2 has no zstd. Taken down when the test process exits. Panics if
/// they cannot boot or the tests would be skipped (use [`shared_or_skip`] in tests).
pub fn shared() -> &'static TestHosts {
    match shared_state() {
        Shared::Up(h) => h,
        Shared::Skipped(skip) => {
            panic!("shared test hosts unavailable: {skip}; use host::shared_or_skip()")
        }
        Shared::Failed(msg) => panic!("shared test hosts failed to boot: {msg}"),
    }
}

/// The shared hosts, or `None` (after printing `skipping: <reason>`) when this machine cannot
/// run host tests. Under `CI=true` it panics instead of skipping.
/// `let Some(hosts) = host::shared_or_skip() else { return };`
pub fn shared_or_skip() -> Option<&'static TestHosts> {
    match shared_state() {
        Shared::Up(h) => Some(h),
        Shared::Skipped(skip) => {
            // Re-applies the policy for every test, so each one reports (or fails in CI).
            skip_or_panic(skip.0.clone());
            None
        }
        Shared::Failed(msg) => panic!("shared test hosts failed to boot: {msg}"),
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl TestHost {
    /// The ssh alias to log in as root (`host0`).
    pub fn ssh_target(&self) -> String {
        self.name.clone()
    }

    /// The ssh alias to log in as `deploy`, who has passwordless sudo (`host0-deploy`).
    pub fn deploy_target(&self) -> String {
        format!("{}-deploy", self.name)
    }

    /// `ssh -F <ssh_config> <alias> -- <cmd>` as root; `cmd` is run by the remote shell.
    pub fn exec(&self, cmd: &str) -> Output {
        self.exec_via(&self.name, cmd)
    }

    /// Like [`exec`](Self::exec), as user `deploy`.
    pub fn exec_as_deploy(&self, cmd: &str) -> Output {
        self.exec_via(&self.deploy_target(), cmd)
    }

    fn exec_via(&self, alias: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .args([alias, "--", cmd])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh to {alias}: {e}"))
    }

    /// Runs `cmd` as root and returns its stdout; panics with stdout, stderr and status if it
    /// fails.
    pub fn exec_ok(&self, cmd: &str) -> String {
        let out = self.exec(cmd);
        assert!(
            out.status.success(),
            "on {} ({}): `{cmd}` failed\n{}",
            self.name,
            self.ip,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The target of `<deploy_to>/current` as stored (e.g. `releases/20261123-1`), or `None`
    /// if there is no such symlink.
    pub fn current_link(&self, deploy_to: &str) -> Option<String> {
        let out = self.exec(&format!(
            "readlink -- '{}/current'",
            deploy_to.replace('\'', r"'\''")
        ));
        let target = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !target.is_empty()).then_some(target)
    }

    /// The release id `<deploy_to>/current` points to (the last component of its target), or
    /// `None` if there is no `current` yet.
    pub fn current_release(&self, deploy_to: &str) -> Option<String> {
        let target = self.current_link(deploy_to)?;
        Some(
            target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(&target)
                .to_string(),
        )
    }

    /// `systemctl show -p <property> --value <unit>`.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.exec_ok(&format!(
            "systemctl show -p '{property}' --value -- '{unit}'"
        ))
        .trim()
        .to_string()
    }

    /// The last 50 journal lines of a unit (plus the error, if journalctl failed).
    pub fn journal(&self, unit: &str) -> String {
        let out = self.exec(&format!("journalctl -u '{unit}' -n 50 --no-pager"));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            text.push_str(&format!(
                "\n(journalctl failed: {}: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        text
    }

    /// `GET <path>` over HTTP/1.0 to the host's address: `(status, body)`, or `None` if no
    /// answer came (connection refused or timed out; retried 3 times, 200 ms apart).
    pub fn http_get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some(answer) = self.http_get_once(port, path) {
                return Some(answer);
            }
        }
        None
    }

    fn http_get_once(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let addr = SocketAddr::from((self.ip, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .ok()?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}:{port}\r\nConnection: close\r\n\r\n",
            self.ip
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        // A server that closes without reading the whole request may reset the connection
        // after its answer: keep what arrived.
        if let Err(e) = stream.take(16 << 20).read_to_end(&mut raw) {
            if raw.is_empty() || e.kind() != std::io::ErrorKind::ConnectionReset {
                return None;
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .or_else(|| text.split_once("\n\n"))?;
        let status = head
            .lines()
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((status, body.to_string()))
    }

    /// Waits until `GET <path>` answers 200 with a body containing `expect_body`; returns the
    /// body. Panics after `timeout` with the last answer and the journal of `unit`, if given
    /// through [`wait_http_unit`](Self::wait_http_unit).
    pub fn wait_http(&self, port: u16, path: &str, expect_body: &str, timeout: Duration) -> String {
        self.wait_http_unit(port, path, expect_body, timeout, None)
    }

    /// [`wait_http`](Self::wait_http) that shows the journal of `unit` on timeout.
    pub fn wait_http_unit(
        &self,
        port: u16,
        path: &str,
        expect_body: &str,
        timeout: Duration,
        unit: Option<&str>,
    ) -> String {
        match self.try_wait_http(port, path, expect_body, timeout) {
            Ok(body) => body,
            Err(last) => {
                let journal = unit
                    .map(|u| format!("\njournal of {u}:\n{}", self.journal(u)))
                    .unwrap_or_default();
                panic!(
                    "{} ({}): http://{}:{port}{path} did not answer 200 with {expect_body:?} within {timeout:?}; last answer: {last}{journal}",
                    self.name, self.machine, self.ip
                )
            }
        }
    }

    /// Polls until `GET <path>` answers 200 with `expect_body` in the body: `Ok(body)`, or
    /// `Err(description of the last answer)` after `timeout`.
    pub fn try_wait_http(
        &self,
        port: u16,
        path: &str,
        expect_body: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.http_get_once(port, path) {
                Some((200, body)) if body.contains(expect_body) => return Ok(body),
                Some((status, body)) => format!("status {status}, body {:?}", truncate(&body, 300)),
                None => "no answer (refused or timed out)".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the host's console log (boot messages).
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.console_log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
