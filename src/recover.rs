//! Recovery right after a crashed deploy (#17): a deploy killed after its switch leaves, on
//! each host, its lock and an unconfirmed switch (`.ship/pending`) that the dead-man's switch
//! puts back at its deadline. `cargo ship rollback` and `cargo ship unlock` do that now, on
//! every host, when the switch's deploy is gone ([`crate::lock::gone`]: nobody holds its
//! lease), and never while it still runs (on this machine or another).
//!
//! Shared by the `rollback` and `unlock` flows (siblings: neither imports the other).

use crate::config::Config;
use crate::layout::Layout;
use crate::lock;
use crate::remote::script::{parse_kv, Script};
use crate::remote::session::Connection;
use crate::systemd::{self, guard};
use crate::Result;

/// What recovery found and did on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The release `current` points to afterwards.
    pub current: Option<String>,
    /// An unconfirmed switch was found: (its release, the release it replaced).
    pub pending: Option<(String, String)>,
    /// That switch was put back (its deploy is gone).
    pub reverted: bool,
    /// The lock of a deploy that is gone was released: its holder.
    pub released: Option<String>,
    /// The lock's holder still runs (it holds the lease): nothing was touched.
    pub alive: bool,
    /// Who holds the lock now, if anyone.
    pub holder: Option<String>,
}

impl Recovery {
    /// Whether anything was put back or released.
    pub fn acted(&self) -> bool {
        self.reverted || self.released.is_some()
    }

    fn parse(stdout: &str) -> Recovery {
        let kv = parse_kv(stdout);
        let get = |k: &str| kv.get(k).cloned().filter(|v| !v.is_empty());
        Recovery {
            current: get("current"),
            pending: get("pending_release")
                .map(|r| (r, get("pending_previous").unwrap_or_default())),
            reverted: kv.get("reverted").is_some_and(|v| v == "1"),
            released: get("released"),
            alive: kv.contains_key("alive") || kv.contains_key("pending_alive"),
            holder: get("holder"),
        }
    }
}

/// The recovery script for one host. With `release_lock`, the lock of a holder that is gone
/// (marked `leased`, lease free) is released too (`rollback`; `unlock` releases locks itself).
/// `operator_says_gone`: see [`lock::gone`].
pub fn script(config: &Config, operator_says_gone: bool, release_lock: bool) -> Script {
    let layout = Layout::new(&config.deploy_to);
    let mut s = Script::new(format!(
        "put back a switch left unconfirmed by a deploy that is gone, in {}",
        layout.root()
    ));
    // Nothing was ever deployed here: nothing to recover, and nothing to create.
    s.line("[ -d {} ] || exit 0", &[&layout.state()]);
    systemd::sudo_prelude(&mut s, config);
    lock::gone(&mut s, &layout, operator_says_gone);
    // Who held the lock before anything is done (the revert releases its holder's lock).
    s.line(
        "_h=; if [ -d {} ]; then _h=$(cat {} 2>/dev/null || echo unknown); printf 'holder=%s\\n' \"$_h\"; fi",
        &[&layout.lock(), &layout.lock_holder()],
    );
    guard::revert_now(&mut s, config);
    if release_lock {
        s.line(
            "if [ \"$_gone\" = 1 ] && [ -f {} ]; then printf 'released=%s\\n' \"$_h\"; rm -rf -- {}; fi",
            &[&layout.lock_leased(), &layout.lock()],
        );
    }
    s.line(
        "_c=$(readlink {} 2>/dev/null || true); printf 'current=%s\\n' \"${{_c##*/}}\"",
        &[&layout.current()],
    );
    s
}

/// Runs [`script`] on one host.
pub async fn on_host(
    config: &Config,
    conn: &Connection,
    operator_says_gone: bool,
    release_lock: bool,
) -> Result<Recovery> {
    let s = script(config, operator_says_gone, release_lock);
    let out = conn.run_ok(&s).await?;
    Ok(Recovery::parse(&out))
}

/// Words for what was done on a host, e.g. `put release 20260101000000 back: the switch to
/// 20260102000000 was never confirmed and its deploy is gone (done now, as the dead-man's
/// switch would have at its deadline)`.
pub fn describe(r: &Recovery) -> Option<String> {
    let mut parts = Vec::new();
    if let (true, Some((rel, prev))) = (r.reverted, &r.pending) {
        parts.push(format!(
            "put release {} back: the switch to {rel} was never confirmed and its deploy is gone (done now, as the dead-man's switch would have at its deadline)",
            if prev.is_empty() { "(none)" } else { prev }
        ));
    }
    if let Some(h) = &r.released {
        parts.push(format!("released the lock of {h}, which is gone"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests_support::config_from;

    #[test]
    fn parses_what_was_done() {
        let r = Recovery::parse(
            "pending_release=20260102000000\npending_previous=20260101000000\nreverted=1\nholder=me pid 1\nreleased=me pid 1\ncurrent=20260101000000\n",
        );
        assert!(r.acted() && !r.alive);
        assert_eq!(r.current.as_deref(), Some("20260101000000"));
        assert_eq!(
            describe(&r).unwrap(),
            "put release 20260101000000 back: the switch to 20260102000000 was never confirmed and its deploy is gone (done now, as the dead-man's switch would have at its deadline); released the lock of me pid 1, which is gone"
        );
        let alive = Recovery::parse("alive=1\npending_release=2\npending_previous=1\npending_alive=1\nholder=x\ncurrent=2\n");
        assert!(alive.alive && !alive.acted());
        assert_eq!(describe(&alive), None);
    }

    #[test]
    fn script_takes_the_lease_before_acting() {
        let c = config_from("", "confirm_timeout = \"60s\"\n");
        let text = script(&c, false, true).render().unwrap();
        let lease = text.find("exec 7>>/opt/hello/.ship/lease").unwrap();
        let revert = text.find("deadline=0").unwrap();
        let release = text.find("released=").unwrap();
        assert!(lease < revert && revert < release, "{text}");
        assert!(text.contains("if [ -f /opt/hello/.ship/lock/leased ] || ! [ -d /opt/hello/.ship/lock ]; then _gone=1; fi"), "{text}");
        let unlock = script(&c, true, false).render().unwrap();
        assert!(!unlock.contains("released="), "{unlock}");
        assert!(
            unlock.contains("if flock -n 7; then\n  _gone=1\n"),
            "{unlock}"
        );
    }
}
