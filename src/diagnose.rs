//! Slow or odd hosts, explained: the probes `doctor` runs and the deploy's preflight shares
//! (issue #22). How long one privileged call takes (the setup helper or `sudo -n true`) and,
//! when it is slow, whether the host's own name resolves (sudo looks it up on every call: a
//! host missing from its own /etc/hosts with a resolver that does not answer makes every sudo
//! wait for the resolver's timeouts); and the host's wall clock against this machine's (the
//! dead-man's switch waits for a wall-clock deadline on the host).
//!
//! The probes are script lines (read-only); [`findings`] turns what they printed into
//! [`Finding`]s, each with its cause and its fix.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::config::Config;
use crate::remote::script::Script;

/// One privileged call slower than this is reported (a deploy makes several).
pub const SLOW_SUDO: Duration = Duration::from_secs(2);

/// A clock at least this far from this machine's is reported.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// How long the name lookup of the diagnosis may take (it would otherwise wait as long as
/// sudo did).
const LOOKUP_CAP_SECS: u32 = 5;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Checked and fine.
    Ok,
    /// Worth fixing; deploys still work.
    Warning,
    /// Will make a deploy fail, hang or be reverted.
    Problem,
}

impl Level {
    /// `ok`, `warning`, `problem`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "problem",
        }
    }
}

/// One thing checked on a host: what was found and, unless it is fine, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check (`ssh`, `sudo`, `clock`, `systemd`, `tools`, `disk`, `port`, `lock`...).
    pub check: &'static str,
    /// How bad it is.
    pub level: Level,
    /// What was found, with its cause.
    pub message: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Finding {
    /// A finding that is fine.
    pub fn ok(check: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    /// A warning or problem with its fix.
    pub fn bad(
        check: &'static str,
        level: Level,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            level,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// As JSON: `{check, level, message, fix}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "check": self.check,
            "level": self.level.as_str(),
            "message": self.message,
            "fix": self.fix,
        })
    }
}

/// First lines of a script: the host's wall clock (`host_now=`, unix seconds) and a mark on
/// its monotonic clock, so that [`clock_end`] can say how long the script ran after it.
pub fn clock_start(s: &mut Script) {
    s.lines("_wall=$(date +%s); echo host_now=$_wall; read -r _ck _ < /proc/uptime");
}

/// Prints `after_clock_cs=`: centiseconds since [`clock_start`] (by /proc/uptime).
pub fn clock_end(s: &mut Script) {
    s.lines("read -r _ce _ < /proc/uptime; echo after_clock_cs=$(( ${_ce%.*}${_ce#*.} - ${_ck%.*}${_ck#*.} ))");
}

/// The privileged call a deploy makes, timed: the setup helper's `check` when it is installed
/// and the user is not root, else `sudo -n true`. A failure calls `problem` (which the script
/// defines) with the fix. Prints `sudo_cs=` (centiseconds) and `sudo_via=`; then, when the
/// call took longer than [`SLOW_SUDO`], the diagnosis of the host's own name (`host_name=`,
/// `name_in_hosts=`, `name_lookup_rc=`, `name_lookup_cs=`).
pub fn sudo_timed(s: &mut Script, config: &Config) {
    let helper = crate::systemd::privilege::helper_path(config);
    s.lines("read -r _s0 _ < /proc/uptime");
    s.line(
        "if [ \"${{_uid:-$(id -u)}}\" != 0 ] && [ -x {} ]; then echo sudo_via=helper; sudo -n {} check >/dev/null 2>&1 || problem \"$(id -un) may not run \"{}\" through sudo: run cargo ship setup for this environment again\"",
        &[&helper, &helper, &helper],
    );
    s.lines("else echo sudo_via=sudo; sudo -n true 2>/dev/null || problem \"sudo = true but 'sudo -n true' fails for $(id -un): run cargo ship setup for this environment (or allow passwordless sudo)\"; fi");
    s.lines("read -r _s1 _ < /proc/uptime; _sudo_cs=$(( ${_s1%.*}${_s1#*.} - ${_s0%.*}${_s0#*.} )); echo sudo_cs=$_sudo_cs");
    s.line(
        "if [ \"$_sudo_cs\" -gt {} ]; then",
        &[&(SLOW_SUDO.as_millis() / 10).to_string()],
    );
    s.lines("  _hn=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname); echo host_name=$_hn; _inh=0");
    s.lines("  while read -r _a _b; do case $_a in '#'*|'') continue ;; esac; for _n in $_b; do [ \"$_n\" != \"$_hn\" ] || _inh=1; done; done < /etc/hosts; echo name_in_hosts=$_inh");
    s.line(
        "  read -r _n0 _ < /proc/uptime; _rc=0; timeout {} getent hosts \"$_hn\" >/dev/null 2>&1 || _rc=$?",
        &[&LOOKUP_CAP_SECS.to_string()],
    );
    s.lines("  read -r _n1 _ < /proc/uptime; echo name_lookup_rc=$_rc; echo name_lookup_cs=$(( ${_n1%.*}${_n1#*.} - ${_n0%.*}${_n0#*.} ))");
    s.lines("fi");
}

fn secs(cs: u64) -> String {
    format!("{:.1} s", cs as f64 / 100.0)
}

/// What the sudo probe found: `None` when no sudo call was made (logged in as root without
/// `sudo = true`).
pub fn sudo_finding(kv: &BTreeMap<String, String>, config: &Config) -> Option<Finding> {
    let cs: u64 = kv.get("sudo_cs")?.parse().ok()?;
    let call = match kv.get("sudo_via").map(String::as_str) {
        Some("helper") => "the setup helper's check through sudo",
        _ => "`sudo -n true`",
    };
    if Duration::from_millis(cs * 10) <= SLOW_SUDO {
        return Some(Finding::ok(
            "sudo",
            format!("one privileged call ({call}) took {}", secs(cs)),
        ));
    }
    let name = kv.get("host_name").cloned().unwrap_or_default();
    let in_hosts = kv.get("name_in_hosts").map(String::as_str) == Some("1");
    let rc: i32 = kv
        .get("name_lookup_rc")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let lookup_cs: u64 = kv
        .get("name_lookup_cs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let lookup = match rc {
        124 => format!("did not resolve within {LOOKUP_CAP_SECS} s (the resolver does not answer)"),
        0 => format!("resolved through DNS in {}", secs(lookup_cs)),
        _ => format!(
            "does not resolve (the lookup failed after {})",
            secs(lookup_cs)
        ),
    };
    let consequence = format!(
        "a deploy makes several such calls (switch, verify, finish), each as slow, and the host's dead-man's switch reverts a switch the deploy does not confirm within health.confirm_timeout ({})",
        humantime::format_duration(config.health.confirm_timeout)
    );
    let slow_lookup = rc != 0 || Duration::from_millis(lookup_cs * 10) > Duration::from_secs(1);
    let (message, fix) = if !in_hosts && slow_lookup {
        (
            format!(
                "one privileged call ({call}) took {}: this host's own name `{name}` is not in its /etc/hosts and {lookup}; sudo looks the host's name up on every call; {consequence}",
                secs(cs)
            ),
            format!("add the name to /etc/hosts on the host (e.g. the line `127.0.1.1 {name}`), or fix its resolver in /etc/resolv.conf"),
        )
    } else {
        (
            format!(
                "one privileged call ({call}) took {}; the host's own name `{name}` {}, so the time goes elsewhere; {consequence}",
                secs(cs),
                if in_hosts { "is in /etc/hosts".to_string() } else { lookup }
            ),
            "time `sudo -n true` on the host; look at the other lookups sudo makes (nsswitch.conf: LDAP, sssd; `Defaults fqdn` in /etc/sudoers) and at PAM".to_string(),
        )
    };
    Some(Finding::bad("sudo", Level::Problem, message, fix))
}

/// Unix time as seconds.
fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host's clock against this machine's, from `host_now=` (whole seconds, read right after
/// the script started) and `after_clock_cs=`: the script ran between `sent` and `received`, so
/// the host read its clock no earlier than `sent` and no later than `received` minus the time
/// the script ran after that. Only a difference outside that window (and the second's
/// truncation) counts. `None` when the script printed no clock.
pub fn clock_finding(
    kv: &BTreeMap<String, String>,
    sent: SystemTime,
    received: SystemTime,
    config: &Config,
) -> Option<Finding> {
    let host: f64 = kv.get("host_now")?.parse().ok()?;
    let after: f64 = kv
        .get("after_clock_cs")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 100.0;
    let (early, late) = (unix(sent), (unix(received) - after).max(unix(sent)));
    // host - local lies in [host - late, host + 1 - early].
    let ahead = host - late;
    let behind = early - (host + 1.0);
    let skew = if ahead > 0.0 {
        ahead
    } else if behind > 0.0 {
        -behind
    } else {
        0.0
    };
    if skew.abs() < CLOCK_SKEW.as_secs_f64() {
        return Some(Finding::ok(
            "clock",
            format!("within {} s of this machine's", CLOCK_SKEW.as_secs()),
        ));
    }
    let by = skew.abs().round() as u64;
    let dir = if skew > 0.0 { "ahead of" } else { "behind" };
    let confirm = config.health.confirm_timeout;
    let fix = "turn on time synchronisation on the host (`timedatectl set-ntp true` with systemd-timesyncd, or chrony), and check this machine's clock too";
    if confirm.is_zero() {
        return Some(Finding::bad(
            "clock",
            Level::Warning,
            format!("the host's clock is {by} s {dir} this machine's: the times in revisions.log, lock ages and `status` are off by as much"),
            fix,
        ));
    }
    // What a deploy leaves of confirm_timeout after its own probe and settle.
    let slack = confirm.saturating_sub(config.health.timeout + config.health.settle);
    let level = if Duration::from_secs(by) >= slack {
        Level::Problem
    } else {
        Level::Warning
    };
    Some(Finding::bad(
        "clock",
        level,
        format!(
            "the host's clock is {by} s {dir} this machine's: the dead-man's switch waits health.confirm_timeout ({}) on the host's wall clock, so a correction of that clock during a deploy (an NTP step) makes the host revert up to {by} s early (a deploy has {} to spare) or wait as much longer; revisions.log and `status` times are off by as much",
            humantime::format_duration(confirm),
            humantime::format_duration(slack)
        ),
        fix,
    ))
}

/// The findings of the slow-host probes, for the warnings of a deploy's preflight: those that
/// are not fine.
pub fn slow_host(
    kv: &BTreeMap<String, String>,
    sent: SystemTime,
    received: SystemTime,
    config: &Config,
) -> Vec<Finding> {
    [
        sudo_finding(kv, config),
        clock_finding(kv, sent, received, config),
    ]
    .into_iter()
    .flatten()
    .filter(|f| f.level != Level::Ok)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> BTreeMap<String, String> {
        crate::remote::script::parse_kv(text)
    }

    fn at(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    }

    #[test]
    fn sudo_slow_because_the_name_does_not_resolve() {
        let config = crate::config::tests_support::config_with("");
        let f = sudo_finding(
            &kv("sudo_via=sudo\nsudo_cs=1243\nhost_name=web1\nname_in_hosts=0\nname_lookup_rc=124\nname_lookup_cs=500\n"),
            &config,
        )
        .unwrap();
        assert_eq!(f.level, Level::Problem);
        assert!(
            f.message.starts_with("one privileged call (`sudo -n true`) took 12.4 s: this host's own name `web1` is not in its /etc/hosts and did not resolve within 5 s (the resolver does not answer); sudo looks the host's name up on every call"),
            "{}",
            f.message
        );
        assert_eq!(
            f.fix.as_deref(),
            Some("add the name to /etc/hosts on the host (e.g. the line `127.0.1.1 web1`), or fix its resolver in /etc/resolv.conf")
        );
        let fast = sudo_finding(&kv("sudo_via=helper\nsudo_cs=12\n"), &config).unwrap();
        assert_eq!(fast.level, Level::Ok);
        assert!(sudo_finding(&kv(""), &config).is_none());
    }

    #[test]
    fn clock_skew_counts_only_outside_the_round_trip() {
        let config = crate::config::tests_support::config_with("");
        // Sent at 1000.0, received at 1003.0, the script ran 2.5 s after reading the clock: the
        // host read it between 1000.0 and 1000.5.
        let f = |host: &str| {
            clock_finding(
                &kv(&format!("host_now={host}\nafter_clock_cs=250\n")),
                at(1000.0),
                at(1003.0),
                &config,
            )
            .unwrap()
        };
        assert_eq!(f("1000").level, Level::Ok);
        assert_eq!(f("999").level, Level::Ok);
        let ahead = f("1300");
        assert_eq!(ahead.level, Level::Problem, "{ahead:?}");
        assert!(
            ahead
                .message
                .starts_with("the host's clock is 300 s ahead of this machine's"),
            "{}",
            ahead.message
        );
        let behind = f("990");
        assert_eq!(behind.level, Level::Warning, "{behind:?}");
        assert!(behind
            .message
            .starts_with("the host's clock is 9 s behind this machine's"));
    }

    /// The probe lines run under the real /bin/sh: a fast `sudo` stand-in is timed, a slow
    /// one triggers the name diagnosis.
    #[test]
    fn sudo_probe_in_sh() {
        let config = crate::config::tests_support::config_with("");
        let run = |delay: &str| {
            let mut s = Script::new("t");
            s.lines("problem() { printf 'problem=%s\\n' \"$*\"; }");
            s.line("sudo() {{ sleep {}; }}; id() {{ echo 1000; }}", &[delay]);
            clock_start(&mut s);
            sudo_timed(&mut s, &config);
            clock_end(&mut s);
            let out = s.run_local();
            kv(&String::from_utf8_lossy(&out.stdout))
        };
        let fast = run("0");
        assert!(fast["sudo_cs"].parse::<u64>().unwrap() < 100, "{fast:?}");
        assert!(!fast.contains_key("host_name"));
        assert!(fast.contains_key("after_clock_cs"));
        let slow = run("2.2");
        assert!(slow["sudo_cs"].parse::<u64>().unwrap() >= 200, "{slow:?}");
        assert!(slow.contains_key("name_in_hosts"), "{slow:?}");
        assert!(slow.contains_key("name_lookup_cs"), "{slow:?}");
    }
}
