//! `cargo ship doctor <env>`: connects to every host and says what will make a deploy there
//! fail, hang or be reverted, each finding with its fix (issue #22): ssh and the host key, sudo
//! or the setup helper and how long one call takes (and why, see `diagnose`), the systemd
//! version and what it means for the restart strategies, zstd/gzip, GNU find/mktemp/tar, disk
//! space under deploy_to, the clock against this machine's, ports in `listen` taken by another
//! process, and leftover locks or pending switches.
//!
//! Read-only: one script per host that only reads (no lock, no directory, no unit). A sibling
//! of `status` over the same lower layers (`remote`, `fleet`, `diagnose`); exit codes like
//! `status`: 0 nothing to fix, 10 problems, 5 a host unreachable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::config::{Config, RestartStrategy};
use crate::diagnose::{self, Finding, Level};
use crate::fleet;
use crate::journal;
use crate::layout::Layout;
use crate::remote::script::{parse_kv, parse_kv_all, Script};
use crate::remote::session::Connection;
use crate::systemd::unit;
use crate::ui::{Event, Ui};
use crate::{Error, Result};

/// The oldest systemd that knows `Type=exec`, which every strategy's service uses.
const SYSTEMD_TYPE_EXEC: u32 = 240;
/// The oldest systemd with `InvocationID`, by which a deploy proves a new process started.
const SYSTEMD_INVOCATION_ID: u32 = 232;
/// The oldest systemd that knows every hardening directive cargo-ship writes
/// (`RestrictSUIDSGID=`).
const SYSTEMD_HARDENING: u32 = 242;
/// Free space below which deploy_to is a problem even for a small release.
const MIN_FREE_KIB: u64 = 100 * 1024;

/// A `listen` entry's TCP port, or `None` for a unix socket path.
fn listen_port(entry: &str) -> Option<u16> {
    if entry.starts_with('/') {
        return None;
    }
    let port = entry.rsplit_once(':').map(|(_, p)| p).unwrap_or(entry);
    port.trim().parse().ok()
}

/// The read-only script: prints `key=value` facts for [`findings`].
pub fn script(config: &Config) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!("check the host for {}", layout.root()));
    s.idempotent();
    s.lines("problem() { printf 'problem=%s\\n' \"$*\"; }");
    diagnose::clock_start(&mut s);
    s.lines("echo user=$(id -un); echo uid=$(id -u)");
    if config.sudo {
        diagnose::sudo_timed(&mut s, config);
    }
    s.lines("_sv=$(systemctl --version 2>/dev/null || true); _sv=${_sv#systemd }; echo systemd_version=${_sv%%[!0-9]*}");
    s.lines("for _t in sh tar sha256sum systemctl mkdir ln mv readlink df find mktemp; do command -v $_t >/dev/null 2>&1 || echo missing=$_t; done");
    s.lines("for _t in zstd gzip; do command -v $_t >/dev/null 2>&1 && echo has_$_t=1 || echo has_$_t=0; done");
    s.lines("for _t in find mktemp tar; do _v=$($_t --version 2>/dev/null | head -n 1 || true); echo version_$_t=$_v; done");
    // The nearest existing ancestor of deploy_to: writable, and its free space.
    s.line(
        "_p={}; while [ ! -e \"$_p\" ]; do _p=${{_p%/*}}; [ -n \"$_p\" ] || _p=/; done; echo disk_path=$_p",
        &[layout.root()],
    );
    s.lines("[ -w \"$_p\" ] && echo disk_writable=1 || echo disk_writable=0");
    s.lines("_df=$(df -Pk \"$_p\" 2>/dev/null || true); _avail=");
    s.lines("{ read -r _l || true; read -r _l _l _l _avail _l || true; } <<SHIP_EOF");
    s.lines("$_df");
    s.lines("SHIP_EOF");
    s.lines("echo disk_avail_kib=$_avail");
    s.line(
        "if [ -d {} ]; then _rk=$(du -sk {} 2>/dev/null || true); echo release_kib=${{_rk%%[!0-9]*}}; fi",
        &[&format!("{}/", layout.current()), &format!("{}/", layout.current())],
    );
    // Ports in `listen`: listening (from /proc/net/tcp*), whose, and whether ours.
    let ports: Vec<u16> = config
        .systemd
        .listen
        .iter()
        .filter_map(|l| listen_port(l))
        .collect();
    if !ports.is_empty() {
        let units = [
            unit::socket(config),
            unit::service(config),
            unit::instance(config, "blue"),
            unit::instance(config, "green"),
        ];
        s.line(
            "for _u in {} {} {} {}; do printf 'active_unit=%s %s\\n' \"$_u\" \"$(systemctl is-active \"$_u\" 2>/dev/null || true)\"; done",
            &[&units[0], &units[1], &units[2], &units[3]],
        );
    }
    for port in ports {
        let hex = format!(":{port:04X}");
        s.line(
            "_ino=$(awk -v p={} 'FNR > 1 && $4 == \"0A\" && substr($2, length($2) - 4) == p {{ print $10; exit }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)",
            &[&hex],
        );
        s.line("_port={}", &[&port.to_string()]);
        s.lines("if [ -n \"$_ino\" ]; then _pid=$(find /proc/[0-9]*/fd -lname \"socket:\\[$_ino\\]\" 2>/dev/null | head -n 1 || true); _pid=${_pid#/proc/}; _pid=${_pid%%/*}");
        s.lines("  _comm=; _cg=; if [ -n \"$_pid\" ]; then _comm=$(cat /proc/$_pid/comm 2>/dev/null || true); _cg=$(cat /proc/$_pid/cgroup 2>/dev/null || true); _cg=${_cg##*/}; fi");
        s.lines("  printf 'port=%s listening %s %s %s\\n' \"$_port\" \"${_pid:--}\" \"${_cg:--}\" \"${_comm:--}\"");
        s.lines("else printf 'port=%s free\\n' \"$_port\"; fi");
    }
    // Leftovers: a lock, a switch waiting for confirmation, a switch never verified.
    s.line(
        "if [ -d {} ]; then printf 'lock=%s\\n' \"$(cat {} 2>/dev/null || echo 'unknown (no holder file)')\"; printf 'lock_age=%s\\n' \"$(( $(date +%s) - $(stat -c %Y {}) ))\"; fi",
        &[&layout.lock(), &layout.lock_holder(), &layout.lock()],
    );
    s.line(
        "if [ -f {} ]; then sed -n 's/^\\(release\\|previous\\|deadline\\)=/pending_\\1=/p' {}; fi",
        &[&layout.pending(), &layout.pending()],
    );
    s.line(
        "if [ -e {} ]; then echo switching=1; fi",
        &[&journal::switching(&layout)],
    );
    diagnose::clock_end(&mut s);
    s
}

fn kib(k: u64) -> String {
    let b = k as f64 * 1024.0;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    }
}

/// What one host's script output means, check by check.
pub fn findings(
    config: &Config,
    env_name: &str,
    connect: Duration,
    stdout: &str,
    sent: SystemTime,
    received: SystemTime,
) -> Vec<Finding> {
    let kv = parse_kv(stdout);
    let get = |k: &str| kv.get(k).map(String::as_str).unwrap_or("");
    let mut out = vec![Finding::ok(
        "ssh",
        format!(
            "connected in {:.1} s as {} (host key verified)",
            connect.as_secs_f64(),
            get("user")
        ),
    )];
    out.extend(sudo(config, &kv, stdout));
    out.extend(diagnose::clock_finding(&kv, sent, received, config));
    out.push(systemd(config, get("systemd_version")));
    out.extend(tools(&kv, stdout));
    out.extend(disk(config, &kv));
    out.extend(ports(config, stdout));
    out.extend(leftovers(env_name, &kv));
    out
}

fn sudo(config: &Config, kv: &BTreeMap<String, String>, stdout: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in parse_kv_all(stdout, "problem") {
        let (message, fix) = p.split_once(": ").unwrap_or((&p, ""));
        out.push(Finding::bad("sudo", Level::Problem, message, fix));
    }
    let root = kv.get("uid").map(String::as_str) == Some("0");
    if !config.sudo {
        out.push(if root {
            Finding::ok("sudo", "logged in as root: no sudo needed")
        } else {
            Finding::bad(
                "sudo",
                Level::Problem,
                format!(
                    "logged in as {}, not root, and sudo is not enabled: a deploy cannot install units or restart the service",
                    kv.get("user").map(String::as_str).unwrap_or("?")
                ),
                "set sudo = true in [package.metadata.ship] (and run `cargo ship setup` for this environment), or deploy as root",
            )
        });
        return out;
    }
    if let Some(f) = diagnose::sudo_finding(kv, config) {
        let helper = kv.get("sudo_via").map(String::as_str) == Some("helper");
        if !helper && !root && f.level == Level::Ok && out.is_empty() {
            out.push(Finding::ok(
                "sudo",
                format!("{}; the setup helper is not installed: plain `sudo` is used (`cargo ship setup` limits the deploy user to this unit)", f.message),
            ));
        } else {
            out.push(f);
        }
    }
    out
}

fn systemd(config: &Config, version: &str) -> Finding {
    let Ok(v) = version.parse::<u32>() else {
        return Finding::bad(
            "systemd",
            Level::Problem,
            "`systemctl --version` gave no version: this host does not run systemd",
            "cargo-ship installs a systemd service; deploy to a host that runs systemd",
        );
    };
    if v < SYSTEMD_INVOCATION_ID {
        return Finding::bad(
            "systemd",
            Level::Problem,
            format!("systemd {v} has no InvocationID (232+): a deploy cannot prove the new process started, under any strategy"),
            "upgrade the host's OS (systemd 240 or newer: Debian 10+, Ubuntu 20.04+, RHEL 9+)",
        );
    }
    if v < SYSTEMD_TYPE_EXEC {
        return Finding::bad(
            "systemd",
            Level::Problem,
            format!("systemd {v} does not know Type=exec (240+), which the service unit of every strategy uses: it falls back to Type=simple, so a binary that cannot start counts as started until it exits"),
            "upgrade the host's OS (systemd 240 or newer: Debian 10+, Ubuntu 20.04+, RHEL 9+)",
        );
    }
    if v < SYSTEMD_HARDENING && config.systemd.hardening {
        return Finding::bad(
            "systemd",
            Level::Warning,
            format!("systemd {v} ignores RestrictSUIDSGID= (242+) of `hardening = true`, with a warning in the journal; the rest of the hardening and every strategy work"),
            "upgrade the host's OS to systemd 242 or newer for the whole hardening",
        );
    }
    let strategy = match config.systemd.restart {
        RestartStrategy::Restart => {
            "restart = \"restart\" (socket and blue-green would work too, for zero downtime)"
        }
        RestartStrategy::Socket => "restart = \"socket\"",
        RestartStrategy::BlueGreen => "restart = \"blue-green\"",
    };
    Finding::ok(
        "systemd",
        format!("systemd {v}: {strategy}, notify and the dead-man's switch work as documented"),
    )
}

fn tools(kv: &BTreeMap<String, String>, stdout: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in parse_kv_all(stdout, "missing") {
        out.push(Finding::bad(
            "tools",
            Level::Problem,
            format!("missing command: {t} (a deploy needs it)"),
            format!("install the package that provides `{t}` on the host"),
        ));
    }
    for (tool, package, gnu) in [
        ("find", "findutils", "GNU findutils"),
        ("mktemp", "coreutils", "GNU coreutils"),
        ("tar", "tar", "GNU tar"),
    ] {
        let v = kv
            .get(&format!("version_{tool}"))
            .cloned()
            .unwrap_or_default();
        if v.is_empty() || v.contains(gnu) {
            continue;
        }
        out.push(Finding::bad(
            "tools",
            Level::Problem,
            format!("`{tool}` is not {gnu} (`{tool} --version`: {v}): the deploy's scripts use its GNU options"),
            format!("install GNU {package} on the host"),
        ));
    }
    let zstd = kv.get("has_zstd").map(String::as_str) == Some("1");
    let gzip = kv.get("has_gzip").map(String::as_str) == Some("1");
    out.push(match (zstd, gzip) {
        (true, _) => Finding::ok("tools", "zstd present: artifacts travel as .tar.zst"),
        (false, true) => Finding::bad(
            "tools",
            Level::Warning,
            "no zstd: artifacts travel as .tar.gz (larger, slower to unpack)",
            "install zstd on the host",
        ),
        (false, false) => Finding::bad(
            "tools",
            Level::Warning,
            "neither zstd nor gzip: artifacts travel as plain .tar (several times larger)",
            "install zstd on the host",
        ),
    });
    out
}

fn disk(config: &Config, kv: &BTreeMap<String, String>) -> Vec<Finding> {
    let path = kv.get("disk_path").cloned().unwrap_or_default();
    let mut out = Vec::new();
    if kv.get("disk_writable").map(String::as_str) == Some("0") {
        out.push(Finding::bad(
            "disk",
            Level::Problem,
            format!(
                "{path} is not writable by {}: a deploy cannot create {}",
                kv.get("user").map(String::as_str).unwrap_or("?"),
                config.deploy_to
            ),
            format!(
                "run `cargo ship setup` for this environment, or create {} owned by the deploy user",
                config.deploy_to
            ),
        ));
    }
    let Some(avail) = kv.get("disk_avail_kib").and_then(|v| v.parse::<u64>().ok()) else {
        return out;
    };
    let release = kv
        .get("release_kib")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Room for the next release and its artifact, twice over.
    let need = (release * 2).max(MIN_FREE_KIB);
    out.push(if avail < need {
        Finding::bad(
            "disk",
            Level::Problem,
            format!(
                "only {} free under {path}; a deploy needs about {} (the current release takes {})",
                kib(avail),
                kib(need),
                kib(release)
            ),
            format!("free space under {path}, or lower keep_releases and run `cargo ship prune`"),
        )
    } else {
        Finding::ok("disk", format!("{} free under {path}", kib(avail)))
    });
    out
}

fn ports(config: &Config, stdout: &str) -> Vec<Finding> {
    let active: Vec<String> = parse_kv_all(stdout, "active_unit")
        .into_iter()
        .filter_map(|l| {
            let (u, state) = l.split_once(' ')?;
            (state == "active").then(|| u.to_string())
        })
        .collect();
    let ours = |cgroup: &str| {
        cgroup == unit::service(config)
            || cgroup == unit::socket(config)
            || cgroup.starts_with(&format!("{}@", config.systemd.unit))
    };
    let mut out = Vec::new();
    for line in parse_kv_all(stdout, "port") {
        let f: Vec<&str> = line.split(' ').collect();
        let (port, state) = (f.first().copied().unwrap_or("?"), f.get(1).copied());
        if state != Some("listening") {
            out.push(Finding::ok("port", format!("port {port} is free")));
            continue;
        }
        let (pid, cgroup, comm) = (
            f.get(2).copied().unwrap_or("-"),
            f.get(3).copied().unwrap_or("-"),
            f.get(4..).map(|c| c.join(" ")).unwrap_or_default(),
        );
        let socket = unit::socket(config);
        if pid == "1" && active.contains(&socket) || (pid == "-" && active.contains(&socket)) {
            out.push(Finding::ok(
                "port",
                format!("port {port} is held by {socket} (this service's)"),
            ));
            continue;
        }
        if pid != "-" && ours(cgroup) {
            out.push(Finding::ok(
                "port",
                format!("port {port} is held by this service ({cgroup})"),
            ));
            continue;
        }
        if pid == "-" && !active.is_empty() {
            out.push(Finding::bad(
                "port",
                Level::Warning,
                format!("port {port} is in use, probably by this service ({}); not logged in as root, so the process cannot be named", active.join(", ")),
                "run `cargo ship doctor` as root to see which process holds it",
            ));
            continue;
        }
        let who = if pid == "-" {
            "another process (log in as root to see which)".to_string()
        } else {
            format!(
                "another process: {comm} (pid {pid}{})",
                if cgroup == "-" || cgroup.is_empty() {
                    String::new()
                } else {
                    format!(", {cgroup}")
                }
            )
        };
        out.push(Finding::bad(
            "port",
            Level::Problem,
            format!("port {port} in `listen` is taken by {who}: systemd cannot hold it for {socket}, so the deploy fails at the switch"),
            "stop that process (or move it to another port), or choose another port in `listen`",
        ));
    }
    out
}

fn leftovers(env_name: &str, kv: &BTreeMap<String, String>) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(holder) = kv.get("lock") {
        let age = kv
            .get("lock_age")
            .and_then(|a| a.parse::<u64>().ok())
            .map(|s| {
                format!(
                    " (for {})",
                    humantime::format_duration(Duration::from_secs(s))
                )
            })
            .unwrap_or_default();
        let fix = if holder.contains(": cargo ship lock ") {
            format!("it was taken on purpose with `cargo ship lock`, for the reason above; once that is over, `cargo ship unlock {env_name}`")
        } else if holder_is_gone(holder) {
            format!("its holder was a process on this machine that is no longer running: `cargo ship unlock {env_name}`")
        } else {
            format!("if that deploy is still running, wait for it; if its holder is gone, `cargo ship unlock {env_name}`")
        };
        out.push(Finding::bad(
            "lock",
            Level::Problem,
            format!("the deploy lock is held by {holder}{age}: deploys, rollbacks and prunes are refused"),
            fix,
        ));
    }
    if let Some(release) = kv.get("pending_release") {
        let at = kv
            .get("pending_deadline")
            .and_then(|d| d.parse::<i64>().ok())
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "?".into());
        out.push(Finding::bad(
            "lock",
            Level::Problem,
            format!("release {release} was switched but never confirmed: the host puts release {} back by itself at {at} (host clock)", kv.get("pending_previous").map(String::as_str).filter(|p| !p.is_empty()).unwrap_or("(none)")),
            format!("wait for it, then `cargo ship status {env_name}`; deploys are refused until then"),
        ));
    }
    if kv.contains_key("switching") {
        out.push(Finding::bad(
            "lock",
            Level::Problem,
            "a deploy was killed while switching: `current` points to a release nobody verified",
            format!("`cargo ship deploy {env_name}` again, or `cargo ship rollback {env_name}`"),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "lock",
            "no lock, no pending or unverified switch",
        ));
    }
    out
}

/// A lock holder (`user@machine pid N since ...`) that is a process of this machine which no
/// longer runs.
fn holder_is_gone(holder: &str) -> bool {
    let mut words = holder.split(' ');
    let (Some(who), Some("pid"), Some(pid)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let here = journal::who();
    let machine = |w: &str| w.rsplit_once('@').map(|(_, m)| m.to_string());
    pid.parse::<u32>().is_ok()
        && machine(who).is_some()
        && machine(who) == machine(&here)
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// One host's report.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// The host as configured.
    pub host: String,
    /// What was checked, or why the host could not be reached.
    pub findings: Vec<Finding>,
}

impl HostReport {
    /// The host's block: one line per finding, the fix under it.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.host);
        for f in &self.findings {
            let level = match f.level {
                Level::Ok => "ok",
                Level::Warning => "warning",
                Level::Problem => "PROBLEM",
            };
            out.push_str(&format!("  {level:<8} {:<8} {}\n", f.check, f.message));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("  {:<8} {:<8} fix: {fix}\n", "", ""));
            }
        }
        out
    }

    /// As JSON: `{host, ok, findings: [{check, level, message, fix}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "host": self.host,
            "ok": !self.findings.iter().any(|f| f.level == Level::Problem),
            "findings": self.findings.iter().map(Finding::to_json).collect::<Vec<_>>(),
        })
    }
}

/// `cargo ship doctor <env>`.
pub async fn doctor(config: &Config, hosts: &[String], ui: &Ui) -> Result<()> {
    let env = config.env()?;
    let specs = fleet::select_hosts(env, hosts)?;
    let total = specs.len();
    let results = fleet::bounded(specs, env.at_once(), |spec| async move {
        let name = spec.to_string();
        let started = Instant::now();
        let conn = match Connection::open(&spec, env, ui).await {
            Ok(c) => c,
            Err(e) => return (name, Err(e)),
        };
        let connect = started.elapsed();
        let cfg = config.for_host(&name);
        let script = script(cfg);
        let sent = SystemTime::now();
        let out = conn.run(&script).await;
        let received = SystemTime::now();
        let report = out.map(|out| {
            let mut f = findings(cfg, &env.name, connect, &out.stdout, sent, received);
            if out.status != 0 {
                f.push(Finding::bad(
                    "script",
                    Level::Problem,
                    format!(
                        "the checks stopped early (exit {}): {}",
                        out.status,
                        out.tail(3).replace('\n', " ")
                    ),
                    "run `cargo ship doctor -v` to see the script, and report it",
                ));
            }
            f
        });
        conn.close().await;
        (name, report)
    })
    .await;

    let (mut problems, mut warnings, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (host, r) in results {
        let report = match r {
            Ok(findings) => HostReport { host, findings },
            Err(e) => {
                let finding = Finding {
                    check: "ssh",
                    level: Level::Problem,
                    message: format!("unreachable: {}", fleet::first_line(&e.to_string())),
                    fix: e.help(),
                };
                errors.push(e);
                HostReport {
                    host,
                    findings: vec![finding],
                }
            }
        };
        for f in &report.findings {
            let line = format!("{}: {}: {}", report.host, f.check, f.message);
            match f.level {
                Level::Problem => problems.push(line),
                Level::Warning => warnings.push(line),
                Level::Ok => {}
            }
        }
        ui.emit(Event::Output {
            kind: "doctor".into(),
            text: report.render(),
            data: report.to_json(),
        });
    }
    let ok = problems.is_empty();
    let exit = if !errors.is_empty() {
        crate::error::exit::CONNECT
    } else if ok {
        0
    } else {
        crate::error::exit::NOT_HEALTHY
    };
    let text = if ok {
        format!(
            "verdict: ok, {total} host(s) ready to deploy{}\n",
            match warnings.len() {
                0 => String::new(),
                n => format!(" ({n} warning(s))"),
            }
        )
    } else {
        format!(
            "verdict: NOT OK, {} problem(s), {} warning(s)\n",
            problems.len(),
            warnings.len()
        )
    };
    ui.emit(Event::Output {
        kind: "verdict".into(),
        text,
        data: json!({
            "ok": ok,
            "problems": problems,
            "warnings": warnings,
            "exit_code": exit,
        }),
    });
    if !errors.is_empty() {
        return fleet::fail_if_any("doctor", total, errors);
    }
    if !ok {
        return Err(Error::DoctorProblems {
            env: env.name.clone(),
            problems,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_whose_holder_is_gone() {
        let here = journal::who();
        let alive = std::process::id();
        assert!(!holder_is_gone(&format!(
            "{here} pid {alive} since x: cargo ship deploy t"
        )));
        assert!(holder_is_gone(&format!(
            "{here} pid 4000000 since x: cargo ship deploy t"
        )));
        assert!(!holder_is_gone(
            "alice@elsewhere pid 4000000 since x: cargo ship deploy t"
        ));
        assert!(!holder_is_gone("unknown (no holder file)"));
    }

    #[test]
    fn listen_ports() {
        assert_eq!(listen_port("0.0.0.0:8080"), Some(8080));
        assert_eq!(listen_port("[::]:443"), Some(443));
        assert_eq!(listen_port("9000"), Some(9000));
        assert_eq!(listen_port("/run/app.sock"), None);
    }

    /// The script only reads: no command that writes appears in it.
    #[test]
    fn the_script_writes_nothing() {
        let config = crate::config::tests_support::config_from(
            "restart = \"socket\"\nlisten = [\"0.0.0.0:8080\"]\n",
            "",
        );
        let mut c = config.clone();
        c.sudo = true;
        let text = script(&c).render().unwrap();
        // (The tool list names mkdir, ln and mv to check they exist; none runs.)
        for word in [
            "mkdir -",
            "rm -",
            "mv -",
            "ln -",
            "touch ",
            "chmod ",
            "chown ",
            ">>",
            "sed -i",
            "tee ",
            "systemctl start",
            "systemctl stop",
            "systemctl restart",
            "systemctl enable",
            "systemctl disable",
            "daemon-reload",
        ] {
            assert!(!text.contains(word), "`{word}` in\n{text}");
        }
        // Every redirection goes to /dev/null or another descriptor (`FNR > 1` is awk's).
        let rest = text
            .replace(">/dev/null", "")
            .replace("2>&1", "")
            .replace("FNR > 1", "");
        assert!(!rest.contains('>'), "a redirection to a file in\n{text}");
    }

    #[test]
    fn a_taken_port_names_the_process() {
        let config = crate::config::tests_support::config_from(
            "restart = \"socket\"\nlisten = [\"0.0.0.0:8080\"]\n",
            "",
        );
        let f = ports(
            &config,
            "active_unit=hello.socket inactive\nport=8080 listening 321 squatter.service perl\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Problem);
        assert_eq!(
            f[0].message,
            "port 8080 in `listen` is taken by another process: perl (pid 321, squatter.service): systemd cannot hold it for hello.socket, so the deploy fails at the switch"
        );
        let f = ports(
            &config,
            "active_unit=hello.socket active\nport=8080 listening 1 init.scope systemd\n",
        );
        assert_eq!(f[0].level, Level::Ok, "{f:?}");
    }
}
