//! Putting hosts back. One unhealthy host is rolled back to its previous release right after
//! its verify failed (and marked a ghost); after a failed batch, every other host this deploy
//! switched is rolled back (or kept with `--keep-switched`) and those not yet switched drop
//! their staged release; after a failed stage, every staged release is removed. Each leaves the
//! host unlocked.

use crate::fleet;
use crate::health;
use crate::remote::script::EXIT_REVERTED;
use crate::steps::{self, RevertInput};
use crate::systemd;
use crate::ui::{Tone, Ui};
use crate::{Error, Result};

use super::plan::Plan;
use super::switch::{finish_host, Switched};
use super::{parallel, DeployOptions, HostRun};

/// After a failed batch: stops the rollout. Hosts that failed were reverted already; the
/// others are put back in parallel (see [`stop_host`]). Returns the batch's errors.
pub(crate) async fn stop_all(
    plans: &[Plan<'_>],
    runs: &mut [HostRun],
    switched: Switched,
    opts: &DeployOptions,
) -> Result<()> {
    let total = runs.len();
    let Switched {
        ok: switched_ok,
        failed,
    } = switched;
    let reason = format!(
        "rollout stopped: {}",
        fleet::first_line(&failed[0].to_string())
    );
    let pending: Vec<usize> = (0..total).filter(|&i| runs[i].outcome.is_none()).collect();
    let outcomes = fleet::bounded(pending, parallel(plans), |i| {
        let (run, switched, reason) = (&runs[i], switched_ok.contains(&i), &reason);
        let plan = &plans[run.svc];
        async move {
            (
                i,
                stop_host(plan, run, switched, opts.keep_switched, reason, &plan.ui).await,
            )
        }
    })
    .await;
    for (i, outcome) in outcomes {
        runs[i].outcome = Some(outcome);
    }
    fleet::fail_if_any("deploy", total, failed)
}

/// Rolls one host back to `previous`; returns the journal lines captured from the failure.
pub(crate) async fn revert_host(
    plan: &Plan<'_>,
    run: &HostRun,
    previous: Option<&str>,
    reason: &str,
    ghost: bool,
    since: Option<&str>,
    ui: &Ui,
) -> Result<String> {
    let conn = &*run.conn;
    let art = &plan.artifacts[run.art];
    let config = plan.config.for_host(conn.host());
    let log = if ghost {
        plan.revision(art, "auto-rollback", "unhealthy")
    } else {
        plan.revision(art, "rollback", "reverted")
    };
    let input = RevertInput {
        failed: &plan.release,
        previous,
        ghost: ghost.then_some(art.sha256.as_str()),
        reason,
        log_line: &log,
        journal_lines: 30,
        since,
    };
    let script = steps::revert(config, &input);
    let out = conn.run(&script).await?;
    match out.status {
        0 => {}
        EXIT_REVERTED => {
            return Err(Error::Reverted {
                host: conn.host().to_string(),
                release: plan.release.clone(),
                detail: out.tail(1),
            })
        }
        _ => return Err(conn.remote_error(&script, &out)),
    }
    let (_, journal) = systemd::split_journal(&out.stdout);
    if let (Some(prev), Some(target)) = (previous, health::http_target(config)?) {
        if let Err(e) = health::wait_http(conn, &target, config.health.timeout).await {
            ui.step(
                Some(conn.host()),
                "warning",
                format!("rolled back to {prev}, but it is not answering either: {e}"),
                Tone::Warning,
            );
        }
    }
    ui.host(
        conn.host(),
        "Rolled back",
        format!("to {}", previous.unwrap_or("nothing (unit stopped)")),
    );
    Ok(journal.to_string())
}

/// After a failed batch: a switched host is rolled back (or kept with `--keep-switched`), a
/// host not yet switched drops its staged release; both are unlocked.
async fn stop_host(
    plan: &Plan<'_>,
    run: &HostRun,
    switched: bool,
    keep_switched: bool,
    reason: &str,
    ui: &Ui,
) -> (String, Option<String>) {
    let config = plan.config.for_host(run.conn.host());
    if !switched {
        let _ = run
            .conn
            .run(&steps::abort(config, &plan.holder, Some(&plan.release)))
            .await;
        return (
            "skipped".into(),
            Some("not switched: the rollout stopped".into()),
        );
    }
    if keep_switched {
        return match finish_host(plan, run, ui).await {
            Ok(()) => (
                "deployed".into(),
                Some("kept on the new release (--keep-switched)".into()),
            ),
            Err(e) => ("failed".into(), Some(e.to_string())),
        };
    }
    let previous = run.previous.as_deref();
    ui.host(
        run.conn.host(),
        "Reverting",
        format!("to {} ({reason})", previous.unwrap_or("nothing")),
    );
    match revert_host(plan, run, previous, reason, false, None, ui).await {
        Ok(_) => (
            "rolled back".into(),
            Some("the rollout stopped on another host".into()),
        ),
        Err(e) => ("failed".into(), Some(e.to_string())),
    }
}

/// Removes the staged release and releases the lock of every service on every host (after a
/// failed stage, before any switch), over the open connections.
pub(crate) async fn abort_all(plans: &[Plan<'_>], runs: &[HostRun]) {
    let parallel = parallel(plans);
    fleet::bounded(runs.iter().collect(), parallel, |run| async move {
        let plan = &plans[run.svc];
        let config = plan.config.for_host(run.conn.host());
        let script = steps::abort(config, &plan.holder, Some(&plan.release));
        let _ = run.conn.run(&script).await;
    })
    .await;
}

/// After Ctrl-C or SIGTERM: every host of every service is checked and put back as it was
/// (over fresh connections: the open ones may be mid-command). Returns the error to report.
pub(crate) async fn put_back_all(plans: &[Plan<'_>], runs: &mut [HostRun], ui: &Ui) -> Error {
    ui.step(
        None,
        "Interrupted",
        "putting every host back as it was",
        Tone::Warning,
    );
    let mut n = 0;
    for plan in plans {
        let script = steps::abort(plan.config, &plan.holder, Some(&plan.release));
        n += fleet::put_back(plan.config, &plan.hosts, &script, &plan.ui).await;
    }
    for r in runs.iter_mut() {
        r.outcome = Some(("interrupted".into(), Some("put back as it was".into())));
    }
    let total: usize = plans.iter().map(|p| p.hosts.len()).sum();
    Error::Interrupted {
        detail: format!(
            ": {n} of {total} {} checked and put back as they were",
            if plans.iter().any(|p| p.package.is_some()) {
                "service host(s)"
            } else {
                "host(s)"
            }
        ),
    }
}
