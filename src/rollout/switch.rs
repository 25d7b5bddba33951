//! Phases 4 and 5 of a deploy: switch, then finish. Service by service (in order), each in its
//! batches, a host switches `current` to the new release, restarts, is probed and verified; an
//! unhealthy host is rolled back at once (see [`super::revert`]) and the rollout stops. When
//! every batch is healthy, every host finishes: confirm (disarming the dead-man's switch),
//! record, prune, unlock.

use crate::config::RestartStrategy;
use crate::fleet;
use crate::layout::Layout;
use crate::remote::script::{parse_kv, EXIT_REVERTED};
use crate::steps;
use crate::systemd::{self, guard};
use crate::ui::{Event, Tone, Ui};
use crate::{Error, Result};

use super::canary::{self, Phase};
use super::plan::Plan;
use super::revert::revert_host;
use super::{hook_env, parallel, pause, DeployOptions, HostRun};

/// Where the switch phase stopped: the hosts switched and healthy (indexes into the runs), the
/// errors of the hosts that failed, and whether they were more than `max_fail` allows (then
/// the rollout stopped and the fleet is put back; within it, the failed hosts are back on
/// their old release and the others go on).
pub(crate) struct Switched {
    pub(crate) ok: Vec<usize>,
    pub(crate) failed: Vec<Error>,
    pub(crate) stopped: bool,
}

/// Switches service by service, each in its batches (`batch`: a size, or a ramp of sizes),
/// watching the switched hosts for `pause` between two batches (and, with
/// `--pause-for-approval`, waiting after the first batch for `cargo ship promote`). A host that
/// fails (its switch, its verify, or the watch) is put back on its old release at once; the
/// rollout goes on while the failed hosts plus the `deferred` ones are within `max_fail`, and
/// stops at the first batch past it. Hosts switched earlier get their dead-man's switch
/// extended while they wait.
pub(crate) async fn switch_all(
    plans: &[Plan<'_>],
    runs: &mut [HostRun],
    deferred: usize,
    opts: &DeployOptions,
) -> Result<Switched> {
    let approval = opts.pause_for_approval;
    let total = runs.len();
    let env = plans[0].config.env()?;
    let allowed = env.max_fail.allowed(total + deferred);
    let mut failed: Vec<Error> = Vec::new();
    let mut switched_ok: Vec<usize> = Vec::new();
    let over = |failed: &[Error]| failed.len() + deferred > allowed;
    let stop = |ok: Vec<usize>, failed: Vec<Error>| Switched {
        ok,
        failed,
        stopped: true,
    };
    // Batches switched so far, over every service (the first one is the approval's).
    let mut done = 0;
    for (svc, plan) in plans.iter().enumerate() {
        let env = plan.config.env()?;
        let mut mine: Vec<usize> = (0..total).filter(|&i| runs[i].svc == svc).collect();
        if mine.is_empty() {
            continue;
        }
        // 4a. The canary (#20): the service's first hosts switch and are judged on its metrics
        // before its batches; a canary that fails or is judged worse stops the rollout.
        match canary::run(plans, svc, runs, &mine, &switched_ok, opts).await {
            Phase::Skipped => {}
            Phase::Promoted(canaries) => {
                mine.retain(|i| !canaries.contains(i));
                switched_ok.extend(canaries);
            }
            Phase::SwitchFailed(ok, errors) => {
                switched_ok.extend(ok);
                failed.extend(errors);
                return Ok(stop(switched_ok, failed));
            }
            Phase::Stopped(e) => {
                failed.push(e);
                return Ok(stop(switched_ok, failed));
            }
        }
        let mut batches = Vec::new();
        let mut rest = &mine[..];
        for size in env.batch_sizes(mine.len()) {
            let (batch, more) = rest.split_at(size);
            batches.push(batch.to_vec());
            rest = more;
        }
        let count = batches.len();
        if approval && done == 0 && count == 1 && svc + 1 == plans.len() {
            plan.ui.warn(
                "--pause-for-approval: `batch` puts every host in one batch, so there is no second batch to wait for; give a ramp such as `batch = [1, \"100%\"]`",
            );
        }
        let later = (0..total).any(|i| runs[i].svc > svc);
        for (b, batch) in batches.iter().enumerate() {
            if !switched_ok.is_empty() {
                // Hosts switched earlier wait for this batch: their dead-man's switches get the
                // full confirm_timeout again (in parallel with this batch).
                extend_guards(plans, runs, &switched_ok).await;
            }
            let started = chrono::Utc::now();
            if count > 1 {
                plan.ui.status(
                    "Batch",
                    format!("{} of {count}: {} host(s)", b + 1, batch.len()),
                );
            }
            let (ok, errors) = switch_batch(plan, runs, batch, env.at_once(), total == 1).await;
            switched_ok.extend(ok);
            failed.extend(errors);
            pause::record_batch(plan, b, count, batch, runs, started);
            done += 1;
            if over(&failed) {
                return Ok(stop(switched_ok, failed));
            }
            if b + 1 == count && !later {
                break;
            }
            // Between two batches: watch the hosts switched so far.
            let wait = pause::Wait {
                pause: env.pause,
                approval: approval && done == 1,
                budget_left: allowed.saturating_sub(failed.len() + deferred),
            };
            if wait.pause.is_zero() && !wait.approval {
                continue;
            }
            let outcome = pause::between_batches(plans, runs, &switched_ok, &wait).await;
            for (i, e) in outcome.failed {
                switched_ok.retain(|&x| x != i);
                failed.push(e);
            }
            if outcome.aborted {
                failed.push(Error::Cancelled {
                    what: "the rollout (`cargo ship abort` while it waited for approval: every switched host is put back)".into(),
                });
            }
            if outcome.aborted || over(&failed) {
                return Ok(stop(switched_ok, failed));
            }
        }
    }
    Ok(Switched {
        ok: switched_ok,
        failed,
        stopped: false,
    })
}

/// Switches one batch of one service's hosts (`batch`: indexes into `runs`), at most
/// `parallel` at once; `alone` when the deploy has a single host (its verify also finishes).
/// Records each host's previous release, and the outcome of each host that failed (rolled back
/// already). Returns the hosts switched and healthy, and the errors of those that failed.
pub(crate) async fn switch_batch(
    plan: &Plan<'_>,
    runs: &mut [HostRun],
    batch: &[usize],
    parallel: usize,
    alone: bool,
) -> (Vec<usize>, Vec<Error>) {
    let one_by_one = tokio::sync::Mutex::new(());
    let one_by_one = &one_by_one;
    let results = fleet::bounded(batch.to_vec(), parallel, |i| {
        let run = &runs[i];
        async move { (i, switch_host(plan, run, alone, one_by_one, &plan.ui).await) }
    })
    .await;
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (i, r) in results {
        match r {
            Ok(prev) => {
                runs[i].previous = prev;
                ok.push(i);
            }
            Err((prev, outcome, e)) => {
                runs[i].previous = prev;
                runs[i].outcome = Some(outcome);
                failed.push(e);
            }
        }
    }
    (ok, failed)
}

/// Finishes every host: confirm, revisions.log, prune, unlock (done by the verify script
/// already when there is one host).
/// Hosts that failed within `max_fail` keep the outcome they have (back on their old release).
pub(crate) async fn finish_all(plans: &[Plan<'_>], runs: &mut [HostRun], ui: &Ui) -> Result<()> {
    let total = runs.len();
    let mut failed = Vec::new();
    let pending: Vec<&HostRun> = runs.iter().filter(|r| r.outcome.is_none()).collect();
    let results = if total == 1 {
        pending.iter().map(|_| Ok(())).collect()
    } else {
        fleet::bounded(pending, parallel(plans), |run| {
            let plan = &plans[run.svc];
            finish_host(plan, run, &plan.ui)
        })
        .await
    };
    let pending = runs.iter_mut().filter(|r| r.outcome.is_none());
    for (run, r) in pending.zip(results) {
        run.outcome = Some(match r {
            Ok(()) => ("deployed".into(), None),
            Err(e @ Error::Reverted { .. }) => {
                let detail = e.to_string();
                failed.push(e);
                ("reverted".into(), Some(detail))
            }
            Err(e) => {
                failed.push(e);
                (
                    "failed".into(),
                    Some("deployed, but recording it failed".into()),
                )
            }
        });
    }
    let live = runs
        .iter()
        .filter(|r| r.outcome.as_ref().is_some_and(|o| o.0 == "deployed"))
        .count();
    if failed.is_empty() && live > 0 {
        let services = plans.len();
        ui.status(
            "Finished",
            match services {
                1 => format!("release {} is live on {live} host(s)", plans[0].release),
                _ => format!(
                    "release {} is live: {live} service host(s), {} service(s)",
                    plans[0].release,
                    runs.iter()
                        .map(|r| r.svc)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                ),
            },
        );
    }
    fleet::fail_if_any("deploy", total, failed)
}

type SwitchFailure = (Option<String>, (String, Option<String>), Error);

/// Switch, probe, verify (and, when `alone`, finish in the same script). On failure the host
/// is rolled back here and then.
///
/// `one_by_one` is held while a host is put back, so the failed hosts of a batch go back one
/// at a time, each verified before the next (#19).
async fn switch_host(
    plan: &Plan<'_>,
    run: &HostRun,
    alone: bool,
    one_by_one: &tokio::sync::Mutex<()>,
    ui: &Ui,
) -> std::result::Result<Option<String>, SwitchFailure> {
    let config = plan.config.for_host(run.conn.host());
    let host = run.conn.host().to_string();
    // A deploy to one host has nobody else to wait for: its verify also confirms, records and
    // unlocks (one round trip less). With no settle period and no after_switch hooks the
    // switch script itself verifies (and so finishes, alone): one round trip less again.
    let (log, prune) = finish_parts(plan, run);
    let finish = alone.then_some(steps::Finish {
        log: &log,
        prune: &prune,
    });
    let script = steps::switch_verified(
        config,
        run.conn.host(),
        &plan.release,
        &plan.holder,
        Some(&plan.secrets),
        finish,
    );
    let out = match run.conn.run(&script).await {
        Ok(out) => out,
        Err(e) => {
            // The connection dropped mid-switch: `current` may already point at the new
            // release. The abort is idempotent (it reconnects) and restores the recorded one.
            let abort = steps::abort(config, &plan.holder, Some(&plan.release));
            let detail = match run.conn.run(&abort).await {
                Ok(o) if o.status == 0 => format!("{e}; the host was put back as it was"),
                Ok(o) => format!("{e}; putting it back failed too: {}", o.tail(3)),
                Err(e2) => format!("{e}; putting it back failed too: {e2}"),
            };
            return Err((
                run.state.current.clone(),
                ("failed".into(), Some(detail)),
                e,
            ));
        }
    };
    let kv = parse_kv(&out.stdout);
    // A switch script that failed before it printed `previous=` (while arming the dead-man's
    // switch, before `current` flipped) must not be taken for a first deploy: the revert would
    // stop the service and remove `current`. Fall back to what preflight read.
    let previous = match kv.get("previous") {
        Some(p) => Some(p.clone()).filter(|p| !p.is_empty()),
        None => run.state.current.clone(),
    };
    if let Some(why) = kv.get("outage") {
        ui.warn(format!(
            "{host}: {}: the listening sockets were closed for a moment, so connections were refused until the new units started (a one-time cost of this deploy)",
            match why.as_str() {
                "strategy" => format!(
                    "the restart strategy changed to `{}`",
                    config.systemd.restart.as_str()
                ),
                _ => "`systemd.listen` changed".to_string(),
            }
        ));
    }
    ui.host(
        &host,
        "Switched",
        format!(
            "current -> {} (was {}){}",
            plan.release,
            previous.as_deref().unwrap_or("nothing"),
            match kv.get("new_unit") {
                Some(u) if config.systemd.restart == RestartStrategy::BlueGreen =>
                    format!(", started {u} beside the running instance"),
                _ => String::new(),
            }
        ),
    );
    let rel_dir = Layout::new(&config.deploy_to).release(&plan.release);
    let art = &plan.artifacts[run.art];
    let env = hook_env(
        plan,
        art,
        &host,
        &rel_dir,
        previous.as_deref().unwrap_or(""),
    );
    let verdict =
        crate::host::judge_switch(config, &run.conn, &plan.release, &out, &env, finish, ui).await;
    match verdict {
        Ok(()) => {
            ui.host(
                &host,
                "Healthy",
                format!("release {} (v{})", plan.release, art.manifest.version),
            );
            Ok(previous)
        }
        Err(reason) => {
            ui.step(
                Some(&host),
                "Unhealthy",
                format!("release {}: {reason}", plan.release),
                Tone::Error,
            );
            let _turn = one_by_one.lock().await;
            match revert_host(
                plan,
                run,
                previous.as_deref(),
                &reason,
                true,
                kv.get("switched_at").map(String::as_str),
                ui,
            )
            .await
            {
                Ok(journal) => {
                    let restored = previous
                        .clone()
                        .unwrap_or_else(|| "nothing (first deploy: the unit was stopped)".into());
                    let e = Error::Unhealthy {
                        host: host.clone(),
                        release: plan.release.clone(),
                        reason: reason.clone(),
                        restored: restored.clone(),
                        journal: journal.clone(),
                    };
                    if !journal.trim().is_empty() {
                        ui.emit(Event::Output {
                            kind: "journal".into(),
                            text: format!("--- last journal lines of {} on {host} ---\n{}", systemd::unit_name(config), journal.trim_end()),
                            data: serde_json::json!({ "host": host, "unit": systemd::unit_name(config), "lines": journal.lines().collect::<Vec<_>>() }),
                        });
                    }
                    Err((previous, ("rolled back".into(), Some(reason)), e))
                }
                Err(e @ Error::Reverted { .. }) => {
                    Err((previous, ("reverted".into(), Some(e.to_string())), e))
                }
                Err(e) => Err((
                    previous,
                    (
                        "failed".into(),
                        Some(format!("{reason}; the rollback failed too: {e}")),
                    ),
                    e,
                )),
            }
        }
    }
}

/// Gives every host switched so far the full confirm_timeout again.
pub(crate) async fn extend_guards(plans: &[Plan<'_>], runs: &[HostRun], switched: &[usize]) {
    let parallel = parallel(plans);
    let waiting: Vec<&HostRun> = switched
        .iter()
        .map(|&i| &runs[i])
        .filter(|r| guard::enabled(plans[r.svc].config))
        .collect();
    fleet::bounded(waiting, parallel, |run| async move {
        let plan = &plans[run.svc];
        let extend = steps::extend_guard(plan.config.for_host(run.conn.host()), &plan.release);
        if let Err(e) = run.conn.run_ok(&extend).await {
            plan.ui.warn(format!(
                "{}: could not give the switched release more time before the host reverts it: {e}",
                run.conn.host()
            ));
        }
    })
    .await;
}

/// The revisions.log line of a finished deploy and the releases to prune on this host.
pub(crate) fn finish_parts(plan: &Plan<'_>, run: &HostRun) -> (String, Vec<String>) {
    let mut state = run.state.clone();
    if !state.releases.contains(&plan.release) {
        state.releases.push(plan.release.clone());
        state.releases.sort();
    }
    state.current = Some(plan.release.clone());
    (
        plan.revision(&plan.artifacts[run.art], "deploy", "ok"),
        state.prune_candidates(plan.config.for_host(run.conn.host()).keep_releases),
    )
}

pub(crate) async fn finish_host(plan: &Plan<'_>, run: &HostRun, _ui: &Ui) -> Result<()> {
    let config = plan.config.for_host(run.conn.host());
    let (log, prune) = finish_parts(plan, run);
    let script = steps::finish(config, &plan.release, &log, &prune);
    let out = run.conn.run(&script).await?;
    match out.status {
        0 => Ok(()),
        EXIT_REVERTED => Err(Error::Reverted {
            host: run.conn.host().to_string(),
            release: plan.release.clone(),
            detail: out.tail(1),
        }),
        _ => Err(run.conn.remote_error(&script, &out)),
    }
}
