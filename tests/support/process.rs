//! cargo-ship run in the background the way CI and terminals run it, and stopped the way
//! they stop it: a signal to its process alone (a CI runner's cancel, `timeout`, `kill <pid>`)
//! or to its whole process group (a terminal's Ctrl-C reaches every process of the foreground
//! job, ssh children included).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `cargo ship ...` started in its own process group (so a signal to the group reaches it
/// and its ssh processes only), its stdout and stderr collected line by line.
pub struct Spawned {
    pub child: Child,
    /// The process group id (= the child's pid).
    pub pgid: u32,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// A private TMPDIR: the ssh control sockets of the run live under it, so
    /// [`Spawned::ssh_processes`] finds exactly this run's ssh processes.
    pub tmpdir: tempfile::TempDir,
    pub args: Vec<String>,
}

impl Spawned {
    /// Spawns `cargo-ship ship <args>` in `dir` with `envs`, in a new process group.
    pub fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Spawned {
        // Short: ssh's control socket paths must fit in 108 bytes.
        let tmpdir = tempfile::Builder::new()
            .prefix("sp")
            .tempdir_in("/tmp")
            .expect("tmpdir");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("cargo-ship"));
        cmd.arg("ship")
            .args(args)
            .current_dir(dir)
            .env("CARGO_TERM_COLOR", "never")
            .env("TMPDIR", tmpdir.path())
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cargo-ship");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        for (r, sink) in [
            (
                Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
                stdout.clone(),
            ),
            (
                Box::new(child.stderr.take().expect("stderr")),
                stderr.clone(),
            ),
        ] {
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    sink.lock().expect("lines").push(l);
                }
            });
        }
        Spawned {
            pgid: child.id(),
            child,
            stdout,
            stderr,
            tmpdir,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Everything printed so far, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "`cargo ship {}`\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.stdout.lock().expect("lines").join("\n"),
            self.stderr.lock().expect("lines").join("\n")
        )
    }

    /// Waits until `count` lines of stderr satisfy `pred` (panics after `timeout`, killing the
    /// group).
    pub fn wait_stderr(
        &mut self,
        what: &str,
        count: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self
                .stderr
                .lock()
                .expect("lines")
                .iter()
                .filter(|l| pred(l))
                .count();
            if n >= count {
                return;
            }
            if Instant::now() > deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                self.signal_group("KILL");
                let _ = self.child.wait();
                panic!("never saw {what}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `sig` (`INT`, `TERM`, `KILL`...) to the cargo-ship process alone, as a CI runner's
    /// cancel or `timeout` does: its ssh children get nothing.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -s {sig} {}", self.child.id());
    }

    /// Sends `sig` to the whole process group, as a terminal's Ctrl-C does.
    pub fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args(["-s", sig, "--", &format!("-{}", self.pgid)])
            .status();
    }

    /// Waits for the exit (at most `timeout`, then the group is killed and this panics).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                self.signal_group("KILL");
                let _ = self.child.wait();
                panic!("did not exit within {timeout:?}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// This run's ssh processes still alive (`pid args` lines): its control masters are
    /// found by the socket directory under its private TMPDIR.
    pub fn ssh_processes(&self) -> Vec<String> {
        let out = Command::new("pgrep")
            .args(["-af", &self.tmpdir.path().display().to_string()])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// SIGKILLs the cargo-ship process alone (a crashed deployer: its ssh masters may outlive
    /// it, as they would on a CI runner) and reaps it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Kills whatever of the run is left (ssh masters included).
    pub fn kill_leftovers(&self) {
        for l in self.ssh_processes() {
            if let Some(pid) = l.split_whitespace().next() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group("KILL");
            let _ = self.child.wait();
        }
        self.kill_leftovers();
    }
}
