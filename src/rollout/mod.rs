//! The phases of a deploy, one file each, in the order `deploy.rs` runs them:
//!
//! - [`plan`]: everything decided before the first host is touched (hosts, secrets, artifacts,
//!   release id, lock holder), the dry run, and which services are already in place;
//! - [`connect`]: one SSH connection per host, then preflight + lock in one fixed order;
//! - [`stage`]: the release unpacked on every host, then the once-per-deploy hooks;
//! - [`canary`]: before a service's batches, its first hosts switch and are judged on the
//!   service's own metrics against the others (#20);
//! - [`switch`]: the switch in batches (restart, probe, verify; an unhealthy host rolled back at
//!   once), then finish everywhere (confirm, record, prune, unlock);
//! - [`revert`]: putting hosts back: one unhealthy host, the fleet after a failed batch, the
//!   staged releases after a failed stage.
//!
//! This module holds what every phase shares: the options, one service on one host
//! ([`HostRun`]) and its summary row.

pub mod canary;
pub mod connect;
pub mod pause;
pub mod plan;
pub mod revert;
pub mod stage;
pub mod switch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::HostSpec;
use crate::fleet;
use crate::hooks::HookEnv;
use crate::journal::HostState;
use crate::package::Artifact;
use crate::preflight::Facts;
use crate::remote::session::Connection;
use crate::ui::HostRow;

use plan::Plan;

/// Options of `cargo ship deploy`.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Deploy this artifact instead of building.
    pub artifact: Option<PathBuf>,
    /// Print the plan; change nothing.
    pub dry_run: bool,
    /// Deploy even a ghost (an artifact that failed its health check before).
    pub force: bool,
    /// Wait this long for another deploy's lock.
    pub lock_wait: Option<Duration>,
    /// After a failed batch, leave earlier batches on the new release.
    pub keep_switched: bool,
    /// Skip the canary phase (#20).
    pub no_canary: bool,
    /// Promote an inconclusive canary instead of reverting it (#20).
    pub promote_inconclusive: bool,
    /// Only these hosts.
    pub hosts: Vec<String>,
    /// After the first batch, wait for `cargo ship promote <env>` (or `abort`) (#19).
    pub pause_for_approval: bool,
}

/// A service host left alone by `unreachable = "defer"` (#19): it could not be reached or
/// failed preflight, so it stays on its old release and counts against `max_fail`.
pub(crate) struct Deferred {
    pub(crate) svc: usize,
    pub(crate) host: String,
    /// Why, in one line.
    pub(crate) reason: String,
    /// The error (once per host), reported when the deferred hosts are past `max_fail`.
    pub(crate) error: Option<crate::Error>,
}

impl Deferred {
    /// Records a deferred host and says so.
    pub(crate) fn with_reason(
        svc: usize,
        host: &str,
        reason: &str,
        error: Option<crate::Error>,
        ui: &crate::ui::Ui,
    ) -> Deferred {
        let reason = fleet::first_line(reason);
        ui.step(
            Some(host),
            "Deferred",
            format!("left on its old release ({reason})"),
            crate::ui::Tone::Warning,
        );
        Deferred {
            svc,
            host: host.to_string(),
            reason,
            error,
        }
    }

    /// Its summary row: still on whatever it ran (unknown here).
    pub(crate) fn row(&self, plan: &Plan<'_>) -> HostRow {
        HostRow {
            host: self.host.clone(),
            package: plan.package.clone(),
            outcome: "deferred".into(),
            release: None,
            version: None,
            target: None,
            commands: 0,
            connections: 0,
            bytes_sent: 0,
            millis: 0,
            detail: Some(self.reason.clone()),
        }
    }
}

/// One service on one host during a deploy.
pub(crate) struct HostRun {
    /// Index of its service in the plans.
    pub(crate) svc: usize,
    pub(crate) conn: Arc<Connection>,
    pub(crate) started: Instant,
    pub(crate) state: HostState,
    pub(crate) facts: Facts,
    /// Index in `Plan::artifacts` of the artifact for this host's architecture.
    pub(crate) art: usize,
    pub(crate) cached: Vec<String>,
    /// Every artifact file the host keeps (a delta's base may be among them).
    pub(crate) haves: Vec<String>,
    /// `current` before the switch (None on a first deploy).
    pub(crate) previous: Option<String>,
    pub(crate) outcome: Option<(String, Option<String>)>,
}

impl HostRun {
    pub(crate) fn row(&self, plan: &Plan<'_>) -> HostRow {
        let (outcome, detail) = self
            .outcome
            .clone()
            .unwrap_or_else(|| ("unknown".into(), None));
        let (release, version) = match outcome.as_str() {
            "deployed" => (
                Some(plan.release.clone()),
                Some(plan.artifacts[self.art].manifest.version.clone()),
            ),
            // Every other outcome leaves (or puts back) the release that was current before.
            _ => (
                self.state.current.clone(),
                self.state.current_version.clone(),
            ),
        };
        let target = match outcome.as_str() {
            "deployed" => Some(plan.artifacts[self.art].manifest.target.clone()),
            _ => None,
        };
        HostRow {
            package: plan.package.clone(),
            outcome,
            release,
            version,
            target,
            millis: self.started.elapsed().as_millis() as u64,
            detail,
            ..fleet::row(&self.conn)
        }
    }
}

pub(crate) async fn close_all(runs: Vec<HostRun>) {
    for r in runs {
        if let Ok(c) = Arc::try_unwrap(r.conn) {
            c.close().await;
        }
    }
}

/// Services in switch order, each service's hosts as configured.
pub(crate) fn sort_for_rollout(plans: &[Plan<'_>], runs: &mut [HostRun]) {
    runs.sort_by_key(|r| (r.svc, position(&plans[r.svc].hosts, r.conn.host())));
}

/// How many connected hosts are worked on at once: the first service's environment's
/// `parallel`, by default all of them (all services of a deploy are in the same environment).
/// Handshakes are bounded apart from this, by `connect_parallel` (see
/// [`crate::remote::session`]).
pub(crate) fn parallel(plans: &[Plan<'_>]) -> usize {
    plans[0].config.env().map(|e| e.at_once()).unwrap_or(10)
}

pub(crate) fn position(hosts: &[HostSpec], host: &str) -> usize {
    hosts
        .iter()
        .position(|h| h.to_string() == host)
        .unwrap_or(usize::MAX)
}

/// Closes connections once nothing else holds them.
pub(crate) async fn close_conns(conns: impl IntoIterator<Item = Arc<Connection>>) {
    for c in conns {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
}

pub(crate) fn hook_env<'a>(
    plan: &'a Plan<'_>,
    art: &'a Artifact,
    host: &'a str,
    release_dir: &'a str,
    previous: &'a str,
) -> HookEnv<'a> {
    HookEnv {
        release: &plan.release,
        release_dir,
        deploy_to: &plan.config.deploy_to,
        previous,
        version: &art.manifest.version,
        environment: &plan.env_name,
        host,
    }
}
