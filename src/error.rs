//! The one error type of the library, its help text and its exit code.
//!
//! Every variant says what happened and where (file and key, or host); `help()` says what to do
//! next. The binary renders an error exactly once, through `Display` + `help()`, and exits with
//! `exit_code()` (the table is in the README under "Exit codes").

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, documented in the README. Keep the two in step.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Anything not listed below (I/O on this machine, an unexpected remote failure).
    pub const FAILURE: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// Invalid configuration in Cargo.toml or a file it names.
    pub const CONFIG: i32 = 3;
    /// The build or the packing of the artifact failed.
    pub const BUILD: i32 = 4;
    /// A host could not be reached, or its host key could not be verified.
    pub const CONNECT: i32 = 5;
    /// A host failed preflight (architecture, glibc, disk, missing tools); nothing was changed.
    pub const PREFLIGHT: i32 = 6;
    /// Another deploy holds the lock on a host.
    pub const LOCKED: i32 = 7;
    /// The new release was unhealthy and was rolled back; the previous release is running.
    pub const ROLLED_BACK: i32 = 8;
    /// A remote step failed (stage, hook, switch, rollback); see the message for the host state.
    pub const REMOTE: i32 = 9;
    /// `status`: the hosts do not all run the same healthy release (drift, a unit failed or
    /// restarting, an unconfirmed or unverified switch, nothing deployed).
    pub const NOT_HEALTHY: i32 = 10;
    /// `deploy`: deployed, with some hosts failed (put back on their old release) or deferred
    /// (unreachable or failing preflight), within `max_fail` (#19).
    pub const PARTIAL: i32 = 11;
    /// The canary was judged worse than the baseline on its metrics and reverted; no other
    /// host switched (#20).
    pub const CANARY_WORSE: i32 = 12;
    /// The canary could not be judged (too few requests, metrics unreadable) and was reverted;
    /// no other host switched (#20).
    pub const CANARY_INCONCLUSIVE: i32 = 13;
    /// Interrupted by Ctrl-C; hosts were put back as they were.
    pub const INTERRUPTED: i32 = 130;
}

/// Everything that can go wrong, with enough structure to render a useful message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key in the ship configuration is wrong.
    #[error("{location}: `{key}`: {problem}")]
    Config {
        /// `path/Cargo.toml:12:5`, or just the path when no position is known.
        location: String,
        /// Full key path, e.g. `package.metadata.ship.health.timeout`.
        key: String,
        /// What was found and what was expected.
        problem: String,
        /// What to do about it, when there is something specific to say.
        help: Option<String>,
    },
    /// Some other problem with the command line or the workspace (no such package, no binary...).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// What to do about it.
        help: Option<String>,
    },
    /// A local tool (cargo, rustup, zig, cross...) failed or is missing.
    #[error("failed to {purpose}: {detail}")]
    Build {
        /// What was being attempted, e.g. `compile hello for x86_64-unknown-linux-musl`.
        purpose: String,
        /// What went wrong (exit status, stderr tail).
        detail: String,
        /// What to do about it (install hint...).
        help: Option<String>,
    },
    /// Local I/O failed.
    #[error("failed to {purpose} `{path}`: {source}")]
    Io {
        /// What was being attempted.
        purpose: String,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Could not connect to a host (DNS, refused, auth, host key).
    #[error("{host}: cannot connect: {detail}")]
    Connect {
        /// The host as configured.
        host: String,
        /// What ssh said.
        detail: String,
        /// What to do about it.
        help: Option<String>,
    },
    /// A host cannot run this artifact, or lacks what the deploy needs. Nothing was changed.
    #[error("{host}: preflight failed: {problem}")]
    Preflight {
        /// The host as configured.
        host: String,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        help: Option<String>,
    },
    /// Another deploy holds the lock on a host.
    #[error("{host}: deploy locked by {holder}")]
    Locked {
        /// The host as configured.
        host: String,
        /// Who holds the lock: user@machine, pid, time, command.
        holder: String,
    },
    /// `unlock` found the lock's holder still running (it holds the lock's lease).
    #[error("{host}: the deploy lock is held by {holder}, which is still running (it holds the lock's lease)")]
    HolderRunning {
        /// The host as configured.
        host: String,
        /// Who holds the lock.
        holder: String,
    },
    /// A remote step failed.
    #[error("{host}: failed to {purpose} (exit {status}){tail}", tail = tail(stderr_tail))]
    Remote {
        /// The host as configured.
        host: String,
        /// What was being attempted.
        purpose: String,
        /// Remote exit status (-1 when killed or the connection dropped).
        status: i32,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// The new release did not become healthy; the host was rolled back.
    #[error("{host}: release {release} is unhealthy: {reason}; rolled back to {restored}")]
    Unhealthy {
        /// The host as configured.
        host: String,
        /// The release that failed.
        release: String,
        /// Why it is considered unhealthy.
        reason: String,
        /// The release running now.
        restored: String,
        /// Last lines of the unit's journal.
        journal: String,
    },
    /// The host's dead-man's switch put the previous release back before the deploy confirmed
    /// the new one.
    #[error("{host}: release {release} was reverted by the host's dead-man's switch before it was confirmed: {detail}")]
    Reverted {
        /// The host as configured.
        host: String,
        /// The release that was switched to and reverted.
        release: String,
        /// What the host said.
        detail: String,
    },
    /// The canary hosts were judged on their metrics and not promoted: reverted (#20).
    #[error("canary {verdict} on {hosts}: {reason}; {outcome}")]
    Canary {
        /// `worse` or `inconclusive`.
        verdict: crate::metrics::Verdict,
        /// The canary hosts, as configured, comma separated.
        hosts: String,
        /// Why, with the numbers.
        reason: String,
        /// What became of the canary hosts and the rest.
        outcome: String,
    },
    /// Several hosts failed; each error is kept.
    #[error("{summary}")]
    Fleet {
        /// One line saying how many hosts failed and what state the fleet is in.
        summary: String,
        /// The per-host errors.
        errors: Vec<Error>,
    },
    /// `status` found the environment not running one healthy release everywhere.
    #[error("environment `{env}` is not healthy: {}", problems.join("; "))]
    NotHealthy {
        /// The environment.
        env: String,
        /// One line per problem, each naming its host(s).
        problems: Vec<String>,
    },
    /// `doctor` found problems on reachable hosts (each line names its host and check).
    #[error("doctor found {} problem(s) in environment `{env}`: {}", problems.len(), doctor_summary(problems))]
    DoctorProblems {
        /// The environment.
        env: String,
        /// One line per problem: `host: check: what`.
        problems: Vec<String>,
    },
    /// `exec`: the command exited non-zero (or could not run) on some hosts.
    #[error("the command failed on {} of {total} host(s): {}", failed.len(), failed.iter().map(|(h, c)| format!("{h} (exit {c})")).collect::<Vec<_>>().join(", "))]
    CommandFailed {
        /// Each failed host with its exit code (-1: killed or the connection dropped).
        failed: Vec<(String, i32)>,
        /// How many hosts ran it.
        total: usize,
    },
    /// The user answered no to a confirmation.
    #[error("{what} cancelled: nothing was changed")]
    Cancelled {
        /// What was not done.
        what: String,
    },
    /// A deploy within its failure budget (`max_fail`): the release is live on the other
    /// hosts; these are on their old release (#19).
    #[error(
        "release {release} is live on {deployed} of {total} host(s); {}",
        partial_hosts(failed, deferred)
    )]
    Partial {
        /// The release deployed.
        release: String,
        /// Hosts on the new release.
        deployed: usize,
        /// Hosts of the deploy.
        total: usize,
        /// Hosts that failed (health, switch, the pause's watch) and were put back, with why.
        failed: Vec<(String, String)>,
        /// Hosts that could not be reached or failed preflight, left alone, with why.
        deferred: Vec<(String, String)>,
    },
    /// The user pressed Ctrl-C.
    #[error("interrupted{detail}")]
    Interrupted {
        /// What was done to leave hosts as they were.
        detail: String,
    },
}

fn partial_hosts(failed: &[(String, String)], deferred: &[(String, String)]) -> String {
    let list = |v: &[(String, String)]| {
        v.iter()
            .map(|(h, why)| format!("{h} ({})", why.lines().next().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !failed.is_empty() {
        parts.push(format!(
            "{} failed and put back on their old release: {}",
            failed.len(),
            list(failed)
        ));
    }
    if !deferred.is_empty() {
        parts.push(format!(
            "{} deferred (left on their old release): {}",
            deferred.len(),
            list(deferred)
        ));
    }
    parts.join("; ")
}

fn tail(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(":\n{s}")
    }
}

impl Error {
    /// What the user should do next, if there is something specific to say.
    pub fn help(&self) -> Option<String> {
        match self {
            Error::Config { help, .. }
            | Error::Usage { help, .. }
            | Error::Build { help, .. }
            | Error::Connect { help, .. }
            | Error::Preflight { help, .. } => help.clone(),
            Error::Io { .. } | Error::Cancelled { .. } => None,
            Error::NotHealthy { .. } => Some(
                "each line above names the host; `cargo ship logs <env> -f` follows the journals, \
                 `cargo ship rollback <env>` brings every host to one release (and puts back at once \
                 a switch left unconfirmed by a deploy that is gone), as does a new \
                 `cargo ship deploy <env>` once no deploy holds a lock"
                    .into(),
            ),
            Error::DoctorProblems { .. } => Some(
                "each problem above comes with its fix; nothing was changed on any host".into(),
            ),
            Error::CommandFailed { .. } => Some(
                "the output above is prefixed with each host; nothing else was changed by cargo-ship".into(),
            ),
            Error::Locked { holder, .. } if holder.contains(": cargo ship lock ") => Some(
                "the environment was locked on purpose, for the reason above; once that is \
                 over, `cargo ship unlock <env>` releases it"
                    .into(),
            ),
            Error::Locked { holder, .. } if holder.starts_with("an unconfirmed switch ") => Some(
                "`cargo ship rollback <env>` puts the previous release back now on every host \
                 (as does `cargo ship unlock <env>`, after which a deploy goes ahead); \
                 `--lock-wait <duration>` waits for the host to do it by itself"
                    .into(),
            ),
            Error::Locked { .. } => Some(
                "wait for that deploy to finish, pass `--lock-wait <duration>` to wait for it, \
                 or if its holder is gone, run `cargo ship unlock <env>` (it also puts back a \
                 switch that deploy left unconfirmed; `cargo ship rollback <env>` does too)"
                    .into(),
            ),
            Error::HolderRunning { .. } => Some(
                "its process is still connected to the host, on this \
                 machine or another: wait for it to finish, or stop it (Ctrl-C puts every host \
                 back); `cargo ship status <env>` shows each host's state"
                    .into(),
            ),
            Error::Remote { .. } => Some(
                "`current` was not switched on this host unless the message says so; \
                 run `cargo ship status <env>` to see each host's state"
                    .into(),
            ),
            Error::Unhealthy { .. } => Some(
                "the failed release is marked and will not be deployed again without `--force`; \
                 check the journal lines above, fix, bump the version and deploy again"
                    .into(),
            ),
            Error::Reverted { .. } => Some(
                "the checks took longer than `health.confirm_timeout`: raise it (or shorten \
                 health.timeout), then deploy again; `cargo ship status <env>` shows what runs now"
                    .into(),
            ),
            Error::Canary { verdict, .. } => Some(match verdict {
                crate::metrics::Verdict::Inconclusive => "an inconclusive canary never promotes: send it traffic (or lower `canary.min_requests`), check that `canary.metrics` answers on each host, or pass `--promote-inconclusive` to promote anyway".into(),
                _ => "the new release fails more requests than the old one: check the canary's journal (`cargo ship logs <env> --host <host>`), fix, and deploy again".into(),
            }),
            Error::Fleet { .. } => Some("see each host's error above".into()),
            Error::Partial { .. } => Some(
                "fix those hosts, then run the same deploy again: it converges only the hosts \
                 not yet on the release (`cargo ship status <env>` shows the drift)"
                    .into(),
            ),
            Error::Interrupted { .. } => None,
        }
    }

    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => exit::CONFIG,
            Error::Usage { .. } => exit::USAGE,
            Error::Build { .. } => exit::BUILD,
            Error::Io { .. } => exit::FAILURE,
            Error::Connect { .. } => exit::CONNECT,
            Error::Preflight { .. } => exit::PREFLIGHT,
            Error::Locked { .. } | Error::HolderRunning { .. } => exit::LOCKED,
            Error::Remote { .. } => exit::REMOTE,
            Error::Unhealthy { .. } | Error::Reverted { .. } => exit::ROLLED_BACK,
            Error::Interrupted { .. } => exit::INTERRUPTED,
            Error::Partial { .. } => exit::PARTIAL,
            Error::Canary { verdict, .. } => match verdict {
                crate::metrics::Verdict::Inconclusive => exit::CANARY_INCONCLUSIVE,
                _ => exit::CANARY_WORSE,
            },
            Error::NotHealthy { .. } | Error::DoctorProblems { .. } => exit::NOT_HEALTHY,
            Error::Cancelled { .. } => exit::FAILURE,
            Error::CommandFailed { .. } => exit::REMOTE,
            // The most serious code among the hosts decides.
            Error::Fleet { errors, .. } => errors
                .iter()
                .map(Error::exit_code)
                .max_by_key(|c| severity(*c))
                .unwrap_or(exit::FAILURE),
        }
    }

    /// Shorthand for a local I/O error with its purpose and path.
    pub fn io(
        purpose: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            purpose: purpose.into(),
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a usage error.
    pub fn usage(message: impl Into<String>, help: Option<String>) -> Self {
        Error::Usage {
            message: message.into(),
            help,
        }
    }
}

fn severity(code: i32) -> u8 {
    match code {
        exit::REMOTE => 8,
        exit::CANARY_WORSE => 7,
        exit::CANARY_INCONCLUSIVE => 6,
        exit::ROLLED_BACK => 5,
        exit::CONNECT => 4,
        exit::LOCKED => 3,
        exit::PREFLIGHT => 2,
        _ => 1,
    }
}

/// `host (check, check); host (check)` from `doctor`'s `host: check: what` lines.
fn doctor_summary(problems: &[String]) -> String {
    let mut hosts: Vec<(String, Vec<String>)> = Vec::new();
    for p in problems {
        let mut parts = p.splitn(3, ": ");
        let (host, check) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        match hosts.iter_mut().find(|(h, _)| h == host) {
            Some((_, checks)) if !checks.iter().any(|c| c == check) => checks.push(check.into()),
            Some(_) => {}
            None => hosts.push((host.into(), vec![check.into()])),
        }
    }
    hosts
        .iter()
        .map(|(h, c)| format!("{h} ({})", c.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}
