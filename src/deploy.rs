//! `cargo ship deploy <env>`: the order of the phases, each in its own file under
//! [`crate::rollout`]: plan (build), connect, preflight + lock everywhere, stage everywhere,
//! switch in batches (restart + verify each host; roll an unhealthy host back at once), then
//! finish (log, prune, unlock) — or, when a batch fails, put the other hosts back too (unless
//! `--keep-switched`). Ctrl-C (or SIGTERM) at any point puts every host back.
//!
//! Per host that is one SSH connection and seven remote commands: preflight, upload (skipped
//! when the host has the artifact), stage, switch, the probe's port forward, verify, finish.

use crate::config::Config;
use crate::fleet;
use crate::rollout::{self, connect, plan, revert, stage, switch, Deferred, HostRun};
use crate::ui::{Event, Ui};
use crate::Result;

pub use crate::rollout::DeployOptions;

/// Deploys each package's artifact to its environment: one package, or every service of a
/// workspace in one rollout (built first, every host locked and staged before any switch,
/// services switched in order, all put back when one fails).
pub async fn deploy(configs: &[Config], opts: &DeployOptions, ui: &Ui) -> Result<()> {
    let several = configs.len() > 1;
    // 0. Plan: hosts, secrets, artifacts (built here), release id, lock holder.
    let plans = plan::plans(configs, opts, ui)?;
    if opts.dry_run {
        for plan in &plans {
            plan::dry_run(plan, &plan.hosts, &plan.ui)?;
        }
        return Ok(());
    }
    plan::announce(&plans);
    stage::prepare_ahead(&plans);
    let all_hosts = plan::distinct_hosts(&plans);

    let mut runs: Vec<HostRun> = Vec::new();
    let mut left_alone: Vec<HostRun> = Vec::new();
    let mut deferred: Vec<Deferred> = Vec::new();
    let finished = {
        let work = async {
            // 1. Connect and 2. preflight + lock everywhere, before changing anything (with
            // `unreachable = "defer"`, hosts that cannot be reached or fail preflight are left
            // on their old release).
            (runs, deferred) = connect::open_and_lock(&plans, &all_hosts, ui).await?;
            if several || plan::converges(&plans) {
                (runs, left_alone) =
                    plan::leave_unchanged_alone(&plans, std::mem::take(&mut runs)).await;
                if runs.is_empty() {
                    ui.status(
                        "Finished",
                        match deferred.is_empty() {
                            true => {
                                "every service is unchanged on every host: nothing was restarted"
                            }
                            false => "every host reached is unchanged: nothing was restarted",
                        },
                    );
                    // Deferred hosts are still behind (exit 11).
                    return plan::partial(&plans, &runs, left_alone.len(), &deferred);
                }
            }
            // 3. Stage every service on every host before switching any; then the hooks
            // that run once per deploy.
            stage::stage_all(&plans, &mut runs).await?;
            stage::once_hooks(&plans, &mut runs).await?;
            // 4. Switch service by service, each in its batches; 5. finish everywhere, or put
            // back every host this deploy switched.
            let switched = switch::switch_all(&plans, &mut runs, deferred.len(), opts).await?;
            if switched.stopped {
                revert::stop_all(&plans, &mut runs, switched, opts).await
            } else {
                switch::finish_all(&plans, &mut runs, ui).await?;
                // Within `max_fail`: deployed, with the failed and deferred hosts named.
                plan::partial(&plans, &runs, left_alone.len(), &deferred)
            }
        };
        tokio::select! {
            r = work => Some(r),
            _ = fleet::interrupted() => None,
        }
    };
    let result = match finished {
        Some(r) => r,
        None => Err(revert::put_back_all(&plans, &mut runs, ui).await),
    };
    runs.extend(left_alone);
    rollout::sort_for_rollout(&plans, &mut runs);
    let mut rows: Vec<_> = runs.iter().map(|r| r.row(&plans[r.svc])).collect();
    rows.extend(deferred.iter().map(|d| d.row(&plans[d.svc])));
    ui.emit(Event::Summary {
        operation: "deploy".into(),
        hosts: rows,
    });
    rollout::close_all(runs).await;
    result
}
