//! Between two switch batches (#19): the hosts switched so far are watched for `pause` (each
//! round re-probes `health.http` and checks that the unit is still active with the same process
//! and restart count), and with `--pause-for-approval` the deploy waits after its first batch
//! for `cargo ship promote <env>` or `cargo ship abort <env>`. A host that fails the watch is put
//! back on its old release at once and counts against `max_fail`.
//!
//! The dead-man's switch stays armed throughout: the waiting hosts get the full
//! `confirm_timeout` again well before it runs out, so a deploy killed while it waits leaves
//! every switched host to revert by itself.
//!
//! The approval travels through a marker in the deploy lock of the first switched host
//! (`<deploy_to>/.ship/lock/approval`): this deploy writes `waiting` there, `cargo ship promote`
//! or `abort` (another terminal, another CI job) rewrites it, and this deploy reads it each round
//! over the connection it already has open. It goes away with the lock.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::health;
use crate::layout::Layout;
use crate::remote::script::{parse_kv, Script};
use crate::systemd::{self, guard};
use crate::ui::{Event, Format, Tone};
use crate::Error;

use super::plan::Plan;
use super::revert::revert_host;
use super::switch::extend_guards;
use super::HostRun;

/// What to wait for between two batches.
pub(crate) struct Wait {
    /// Watch the switched hosts this long.
    pub(crate) pause: Duration,
    /// Then (or meanwhile) wait for `cargo ship promote` / `abort`.
    pub(crate) approval: bool,
    /// How many more hosts may fail within `max_fail`: one more ends the wait at once.
    pub(crate) budget_left: usize,
}

/// What happened while waiting.
pub(crate) struct Outcome {
    /// Hosts that failed the watch (put back already), with why.
    pub(crate) failed: Vec<(usize, Error)>,
    /// `cargo ship abort` was given.
    pub(crate) aborted: bool,
}

/// How often the switched hosts are looked at while waiting.
const ROUND: Duration = Duration::from_secs(2);

/// One JSON `rollout` event per batch with its hosts and when it started and ended (human
/// output has the `Batch` line already).
pub(crate) fn record_batch(
    plan: &Plan<'_>,
    b: usize,
    count: usize,
    batch: &[usize],
    runs: &[HostRun],
    started: chrono::DateTime<chrono::Utc>,
) {
    if plan.ui.format() != Format::Json {
        return;
    }
    let hosts: Vec<&str> = batch.iter().map(|&i| runs[i].conn.host()).collect();
    let failed: Vec<&str> = batch
        .iter()
        .filter(|&&i| runs[i].outcome.is_some())
        .map(|&i| runs[i].conn.host())
        .collect();
    plan.ui.emit(Event::Output {
        kind: "rollout".into(),
        text: format!("batch {} of {count}: {}", b + 1, hosts.join(", ")),
        data: serde_json::json!({
            "phase": "batch",
            "batch": b + 1,
            "of": count,
            "hosts": hosts,
            "failed": failed,
            "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "ended_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    });
}

/// Watches the `switched` hosts for `wait.pause` and, with `wait.approval`, until promoted or
/// aborted. Failed hosts are put back (their outcome set) and returned.
pub(crate) async fn between_batches(
    plans: &[Plan<'_>],
    runs: &mut [HostRun],
    switched: &[usize],
    wait: &Wait,
) -> Outcome {
    let ui = &plans[0].ui;
    let started = chrono::Utc::now();
    let env_name = &plans[0].env_name;
    let mut live: Vec<usize> = switched.to_vec();
    let mut outcome = Outcome {
        failed: Vec::new(),
        aborted: false,
    };
    // The marker goes on the first switched host (any host of the deploy, when none is left).
    let marker = live.first().copied().unwrap_or(0);
    if wait.approval {
        let config = plans[runs[marker].svc]
            .config
            .for_host(runs[marker].conn.host());
        let mut s = Script::new("wait for approval: mark the deploy as waiting");
        let file = Layout::new(&config.deploy_to).approval();
        s.line("printf 'waiting\\n' > {}.tmp", &[&file]);
        s.line("mv -f {}.tmp {}", &[&file, &file]);
        if let Err(e) = runs[marker].conn.run_ok(&s).await {
            ui.warn(format!(
                "{}: could not leave the approval marker ({e}); aborting the rollout",
                runs[marker].conn.host()
            ));
            outcome.aborted = true;
            return outcome;
        }
        ui.status(
            "Waiting",
            format!(
                "for approval: run `cargo ship promote {env_name}` to go on or `cargo ship abort {env_name}` to put every host back{}",
                match wait.pause.is_zero() {
                    true => String::new(),
                    false => format!(" (watching the switched hosts for at least {})", humantime::format_duration(wait.pause)),
                }
            ),
        );
    } else {
        ui.status(
            "Pausing",
            format!(
                "{}: watching {} switched host(s) before the next batch",
                humantime::format_duration(wait.pause),
                live.len()
            ),
        );
    }
    // The full confirm_timeout from now on (the switch armed it a while ago).
    extend_guards(plans, runs, &live).await;
    let mut extended = Instant::now();
    // What each host runs now: the same process must still run at the end.
    let mut baseline = Vec::new();
    for &i in &live {
        baseline.push((i, unit_state(plans, &runs[i]).await.ok()));
    }
    let deadline = Instant::now() + wait.pause;
    let mut approved = !wait.approval;
    loop {
        let now = Instant::now();
        // Done waiting; or past the budget (the rollout stops); or nothing left to watch.
        if (now >= deadline && approved)
            || outcome.failed.len() > wait.budget_left
            || (live.is_empty() && approved)
        {
            break;
        }
        let nap = match approved {
            true => ROUND.min(deadline - now),
            false => ROUND,
        };
        // One round: a nap, a look at every watched host, the approval marker. The dead-man's
        // switches are extended on their own clock meanwhile, so a round slowed down by a busy
        // host (a probe waits up to 5 s) never lets a healthy host's guard run out.
        let every = extend_every(plans, runs, &live);
        let look = async {
            tokio::time::sleep(nap).await;
            let checks = futures_util::future::join_all(live.iter().map(|&i| {
                let base = baseline
                    .iter()
                    .find(|(j, _)| *j == i)
                    .and_then(|(_, b)| b.clone());
                let run = &runs[i];
                async move { (i, check(plans, run, base.as_ref()).await) }
            }))
            .await;
            let word = match approved {
                true => None,
                false => decision(plans, &runs[marker]).await,
            };
            (checks, word)
        };
        let (checks, word) = armed(plans, runs, &live, every, &mut extended, look).await;
        for (i, r) in checks {
            let Err(reason) = r else { continue };
            live.retain(|&x| x != i);
            let e = put_back(plans, &mut runs[i], &reason).await;
            outcome.failed.push((i, e));
        }
        match word.as_deref() {
            Some("promote") => {
                approved = true;
                ui.status("Promoted", "the rollout goes on");
            }
            Some("abort") => {
                ui.step(
                    None,
                    "Aborted",
                    "putting every switched host back",
                    Tone::Warning,
                );
                outcome.aborted = true;
                break;
            }
            _ => {}
        }
    }
    if ui.format() == Format::Json {
        ui.emit(Event::Output {
            kind: "rollout".into(),
            text: "pause".into(),
            data: serde_json::json!({
                "phase": "pause",
                "pause_ms": wait.pause.as_millis() as u64,
                "approval": wait.approval,
                "watched": switched.iter().map(|&i| runs[i].conn.host()).collect::<Vec<_>>(),
                "failed": outcome.failed.iter().map(|(i, _)| runs[*i].conn.host()).collect::<Vec<_>>(),
                "aborted": outcome.aborted,
                "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "ended_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }),
        });
    }
    outcome
}

/// Runs `work` while the `live` hosts' dead-man's switches are kept armed: whenever `every` has
/// passed since the last extension (`extended`), they get the full `confirm_timeout` again,
/// however long `work` takes. Without a guard (`every` None) it is just `work`.
async fn armed<T>(
    plans: &[Plan<'_>],
    runs: &[HostRun],
    live: &[usize],
    every: Option<Duration>,
    extended: &mut Instant,
    work: impl std::future::Future<Output = T>,
) -> T {
    let Some(every) = every else {
        return work.await;
    };
    tokio::pin!(work);
    loop {
        let due = *extended + every;
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep_until(due.into()) => {
                extend_guards(plans, runs, live).await;
                *extended = Instant::now();
            }
        }
    }
}

/// How often the waiting hosts' dead-man's switches are extended: a third of the shortest
/// `confirm_timeout` among them (None when none has one).
fn extend_every(plans: &[Plan<'_>], runs: &[HostRun], live: &[usize]) -> Option<Duration> {
    live.iter()
        .map(|&i| plans[runs[i].svc].config.for_host(runs[i].conn.host()))
        .filter(|c| guard::enabled(c))
        .map(|c| c.health.confirm_timeout / 3)
        .min()
}

/// The serving unit's process and restart count.
#[derive(Clone, PartialEq, Debug)]
struct UnitState {
    active: String,
    invocation: String,
    restarts: String,
}

async fn unit_state(plans: &[Plan<'_>], run: &HostRun) -> Result<UnitState, String> {
    let config = plans[run.svc].config.for_host(run.conn.host());
    let mut s = Script::new("look at the switched release's unit");
    systemd::strategy::serving(&mut s, config);
    systemd::show_state(&mut s, Some("watch"));
    let out = run.conn.run_ok(&s).await.map_err(|e| e.to_string())?;
    let kv = parse_kv(&out);
    let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
    Ok(UnitState {
        active: get("watch_active"),
        invocation: get("watch_invocation"),
        restarts: get("watch_restarts"),
    })
}

/// One look at a switched host: its unit still active with the process it had when the pause
/// began, and `health.http` answering 2xx.
async fn check(plans: &[Plan<'_>], run: &HostRun, base: Option<&UnitState>) -> Result<(), String> {
    let config: &Config = plans[run.svc].config.for_host(run.conn.host());
    let now = unit_state(plans, run).await?;
    if now.active != "active" {
        return Err(format!(
            "during the pause the unit became {}",
            if now.active.is_empty() {
                "unknown"
            } else {
                &now.active
            }
        ));
    }
    if let Some(base) = base {
        if now.invocation != base.invocation || now.restarts != base.restarts {
            return Err(format!(
                "during the pause the unit restarted (restarts {} -> {})",
                base.restarts, now.restarts
            ));
        }
    }
    if let Some(target) = health::http_target(config).map_err(|e| e.to_string())? {
        let timeout = config.health.timeout.min(Duration::from_secs(5));
        health::wait_http(&run.conn, &target, timeout)
            .await
            .map_err(|e| format!("during the pause the health check failed: {e}"))?;
    }
    Ok(())
}

/// Puts a host that failed the watch back on its previous release (verified), recording its
/// outcome; returns the error that counts against `max_fail`.
async fn put_back(plans: &[Plan<'_>], run: &mut HostRun, reason: &str) -> Error {
    let plan = &plans[run.svc];
    let host = run.conn.host().to_string();
    plan.ui.step(
        Some(&host),
        "Unhealthy",
        format!("release {}: {reason}", plan.release),
        Tone::Error,
    );
    let previous = run.previous.clone();
    match revert_host(plan, run, previous.as_deref(), reason, true, None, &plan.ui).await {
        Ok(_) => {
            run.outcome = Some(("rolled back".into(), Some(reason.to_string())));
            Error::Unhealthy {
                host,
                release: plan.release.clone(),
                reason: reason.to_string(),
                restored: previous.unwrap_or_else(|| "nothing (the unit was stopped)".into()),
                journal: String::new(),
            }
        }
        Err(e) => {
            run.outcome = Some((
                "failed".into(),
                Some(format!("{reason}; the rollback failed too: {e}")),
            ));
            e
        }
    }
}

/// The approval marker's word on `run`'s host: `waiting`, `promote` or `abort`.
async fn decision(plans: &[Plan<'_>], run: &HostRun) -> Option<String> {
    let config = plans[run.svc].config.for_host(run.conn.host());
    let mut s = Script::new("read the approval marker");
    let file = Layout::new(&config.deploy_to).approval();
    s.line(
        "if [ -f {} ]; then printf 'approval=%s\\n' \"$(cat {})\"; fi",
        &[&file, &file],
    );
    let out = run.conn.run_ok(&s).await.ok()?;
    parse_kv(&out).get("approval").cloned()
}
