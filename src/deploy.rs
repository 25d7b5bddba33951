//! `cargo ship deploy <env>`: connect, preflight + lock, stage everywhere, switch in batches
//! (restart + verify each host; roll an unhealthy host back at once), then finish (log, prune,
//! unlock) — or, when a batch fails, put the other hosts back too (unless `--keep-switched`).
//!
//! Per host that is one SSH connection and seven remote commands: preflight, upload (skipped
//! when the host has the artifact), stage, switch, the probe's port forward, verify, finish.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::arch;
use crate::config::{Config, Environment, HostSpec, RestartStrategy};
use crate::fingerprint;
use crate::fleet;
use crate::health;
use crate::hooks::HookEnv;
use crate::journal::{self, HostState, Revision};
use crate::layout::{self, Layout};
use crate::lock;
use crate::package::{self, Artifact};
use crate::preflight::{Facts, Requirements, EXIT_PREFLIGHT};
use crate::remote::script::{parse_kv, parse_kv_all, Script, EXIT_LOCKED, EXIT_REVERTED};
use crate::remote::session::Connection;
use crate::remote::transfer::{Encoding, Payload};
use crate::secrets::{self, Secrets};
use crate::steps::{self, RevertInput, StageInput};
use crate::systemd::{self, guard};
use crate::target::Target;
use crate::ui::{Event, HostRow, Tone, Ui};
use crate::{Error, Result};

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
}

/// Everything decided about one service before the first host is touched. A deploy of one
/// package has one plan; a workspace deploy one per service, in switch order, sharing the
/// release id (which names the deploy on every host) and the lock holder.
struct Plan<'a> {
    config: &'a Config,
    /// The hosts of this service (its environment's, narrowed by `--host`).
    hosts: Vec<HostSpec>,
    /// One artifact per configured target (`targets = [...]`), or the one given/built.
    artifacts: Vec<Artifact>,
    release: String,
    holder: String,
    lock_wait: Duration,
    /// What each artifact needs from a host, in the order of `artifacts`.
    requirements: Vec<Requirements>,
    env_name: String,
    /// Payloads prepared so far, by artifact index and encoding.
    payloads: Mutex<HashMap<(usize, &'static str), Payload>>,
    secrets: Secrets,
    /// Reports about this service (tagged with its package in a workspace deploy).
    ui: Ui,
    /// The package name, in a workspace deploy (summary rows name it).
    package: Option<String>,
}

impl Plan<'_> {
    /// The revisions.log line for this deploy's release of `art` on a host.
    fn revision(&self, art: &Artifact, action: &str, result: &str) -> String {
        Revision {
            action,
            release: &self.release,
            version: Some(&art.manifest.version),
            artifact: Some(&art.sha256),
            git: art.manifest.git_commit.as_deref(),
            result,
        }
        .line(chrono::Utc::now(), &journal::who())
    }

    /// What `art` deployed on `host` runs with (see [`fingerprint`]).
    fn fingerprint(&self, host: &str, art: &Artifact) -> String {
        fingerprint::of(self.config.for_host(host), &art.sha256, &self.secrets)
    }
}

/// One service on one host during a deploy.
struct HostRun {
    /// Index of its service in the plans.
    svc: usize,
    conn: Arc<Connection>,
    started: Instant,
    state: HostState,
    facts: Facts,
    /// Index in `Plan::artifacts` of the artifact for this host's architecture.
    art: usize,
    cached: Vec<String>,
    /// `current` before the switch (None on a first deploy).
    previous: Option<String>,
    outcome: Option<(String, Option<String>)>,
}

/// Deploys each package's artifact to its environment: one package, or every service of a
/// workspace in one rollout (built first, every host locked and staged before any switch,
/// services switched in order, all put back when one fails).
pub async fn deploy(configs: &[Config], opts: &DeployOptions, ui: &Ui) -> Result<()> {
    let several = configs.len() > 1;
    if several && opts.artifact.is_some() {
        return Err(Error::usage(
            "--artifact ships one package, and this deploy selects several",
            Some("pass `-p <package>` with `--artifact`".into()),
        ));
    }
    let env_name = configs[0].env()?.name.clone();
    let release = layout::new_release_id(chrono::Utc::now());
    let holder = lock::holder(&format!("cargo ship deploy {env_name}"));
    // Every service's hosts and secrets are known before anything is built or connected.
    let mut selected = Vec::new();
    for config in configs {
        let env = config.env()?;
        let hosts = match (several, fleet::select_hosts(env, &opts.hosts)) {
            (_, Ok(h)) => h,
            // `--host` in a workspace deploy: the services that run there.
            (true, Err(_)) => Vec::new(),
            (false, Err(e)) => return Err(e),
        };
        if hosts.is_empty() {
            continue;
        }
        selected.push((config, hosts, secrets::resolve(config, ui)?));
    }
    if selected.is_empty() {
        return Err(Error::usage(
            format!(
                "no service of this deploy runs on {} in environment `{env_name}`",
                opts.hosts.join(", ")
            ),
            Some("run `cargo ship status <env>` to see which hosts each service has".into()),
        ));
    }
    // Two services on one host need their own directory and unit.
    for (i, (a, ah, _)) in selected.iter().enumerate() {
        for (b, bh, _) in &selected[i + 1..] {
            let Some(shared) = ah
                .iter()
                .find(|h| bh.iter().any(|o| o.to_string() == h.to_string()))
            else {
                continue;
            };
            let (a, b) = (
                a.for_host(&shared.to_string()),
                b.for_host(&shared.to_string()),
            );
            let clash = if a.deploy_to == b.deploy_to {
                Some(format!("deploy_to {}", a.deploy_to))
            } else if a.systemd.unit == b.systemd.unit {
                Some(format!("unit {}", a.systemd.unit))
            } else {
                None
            };
            if let Some(what) = clash {
                return Err(Error::usage(
                    format!(
                        "packages `{}` and `{}` both run on {shared} with the same {what}",
                        a.package, b.package
                    ),
                    Some(format!(
                        "give each service its own `deploy_to` and `systemd.unit` (the defaults are /opt/<bin> and <bin>) in {}",
                        b.manifest_path.display()
                    )),
                ));
            }
        }
    }
    // 0. Build every artifact first (services that compile alike in one builder run).
    let uis: Vec<Ui> = selected
        .iter()
        .map(|(config, _, _)| match several {
            true => ui.for_package(&config.package),
            false => ui.clone(),
        })
        .collect();
    let configs: Vec<&Config> = selected.iter().map(|(c, _, _)| *c).collect();
    let mut built = obtain_artifacts(&configs, opts, ui, &uis)?.into_iter();
    let mut plans = Vec::new();
    for ((config, hosts, secrets), pui) in selected.into_iter().zip(uis) {
        let artifacts = built.next().unwrap_or_default();
        plans.push(Plan {
            secrets,
            config,
            hosts,
            release: release.clone(),
            holder: holder.clone(),
            lock_wait: opts.lock_wait.unwrap_or_default(),
            requirements: artifacts
                .iter()
                .map(|a| requirements(a, opts.force))
                .collect::<Result<_>>()?,
            env_name: env_name.clone(),
            artifacts,
            payloads: Mutex::new(HashMap::new()),
            ui: pui,
            package: several.then(|| config.package.clone()),
        });
    }
    if opts.dry_run {
        for plan in &plans {
            dry_run(plan, &plan.hosts, &plan.ui)?;
        }
        return Ok(());
    }
    let all_hosts = distinct_hosts(&plans);
    for plan in &plans {
        let first = &plan.artifacts[0];
        plan.ui.status(
            "Deploying",
            format!(
                "{} v{} ({}) to {} ({} host{}) as release {}",
                first.manifest.bin,
                first.manifest.version,
                plan.artifacts
                    .iter()
                    .map(|a| match plan.artifacts.len() {
                        1 => a.short_sha().to_string(),
                        _ => format!("{} {}", a.manifest.target, a.short_sha()),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                env_name,
                plan.hosts.len(),
                if plan.hosts.len() == 1 { "" } else { "s" },
                plan.release
            ),
        );
    }

    // 1. Connect and 2. preflight + lock everywhere, before changing anything; then 3.-5.
    // stage, switch, verify, finish. Ctrl-C (or SIGTERM) at any point puts every host back.
    let mut runs: Vec<HostRun> = Vec::new();
    let mut left_alone: Vec<HostRun> = Vec::new();
    let finished = {
        let work = async {
            runs = open_and_lock(&plans, &all_hosts, ui).await?;
            if several {
                (runs, left_alone) = leave_unchanged_alone(&plans, std::mem::take(&mut runs)).await;
                if runs.is_empty() {
                    ui.status(
                        "Finished",
                        "every service is unchanged on every host: nothing was restarted",
                    );
                    return Ok(());
                }
            }
            rollout(&plans, &mut runs, opts, ui).await
        };
        tokio::select! {
            r = work => Some(r),
            _ = fleet::interrupted() => None,
        }
    };
    let result = match finished {
        Some(r) => r,
        None => {
            ui.step(
                None,
                "Interrupted",
                "putting every host back as it was",
                Tone::Warning,
            );
            let mut n = 0;
            for plan in &plans {
                let script = steps::abort(plan.config, &plan.holder, Some(&plan.release));
                n += fleet::put_back(plan.config, &plan.hosts, &script, &plan.ui).await;
            }
            for r in runs.iter_mut() {
                r.outcome = Some(("interrupted".into(), Some("put back as it was".into())));
            }
            let total: usize = plans.iter().map(|p| p.hosts.len()).sum();
            Err(Error::Interrupted {
                detail: format!(
                    ": {n} of {total} {} checked and put back as they were",
                    if several {
                        "service host(s)"
                    } else {
                        "host(s)"
                    }
                ),
            })
        }
    };
    runs.extend(left_alone);
    sort_for_rollout(&plans, &mut runs);
    let rows = runs.iter().map(|r| r.row(&plans[r.svc])).collect();
    ui.emit(Event::Summary {
        operation: "deploy".into(),
        hosts: rows,
    });
    close_all(runs).await;
    result
}

/// Every host of the deploy once (a host shared by several services is one connection), with
/// the environment it is reached through (the first service's that lists it).
fn distinct_hosts<'a>(plans: &'a [Plan<'a>]) -> Vec<(HostSpec, &'a Environment)> {
    let mut out: Vec<(HostSpec, &Environment)> = Vec::new();
    for plan in plans {
        let Ok(env) = plan.config.env() else { continue };
        for h in &plan.hosts {
            if !out.iter().any(|(o, _)| o.to_string() == h.to_string()) {
                out.push((h.clone(), env));
            }
        }
    }
    out
}

/// Services in switch order, each service's hosts as configured.
fn sort_for_rollout(plans: &[Plan<'_>], runs: &mut [HostRun]) {
    runs.sort_by_key(|r| (r.svc, position(&plans[r.svc].hosts, r.conn.host())));
}

/// How many hosts are worked on at once: the first service's environment's `parallel` (all
/// services of a deploy are in the same environment).
fn parallel(plans: &[Plan<'_>]) -> usize {
    plans[0].config.env().map(|e| e.parallel).unwrap_or(10)
}

fn position(hosts: &[HostSpec], host: &str) -> usize {
    hosts
        .iter()
        .position(|h| h.to_string() == host)
        .unwrap_or(usize::MAX)
}

/// A workspace deploy leaves a service alone on a host where its current release already runs
/// this artifact with these units and secrets, and its unit is active: its lock is released
/// and it is not restarted. (A service that is down is deployed again, which restarts it.)
async fn leave_unchanged_alone(
    plans: &[Plan<'_>],
    runs: Vec<HostRun>,
) -> (Vec<HostRun>, Vec<HostRun>) {
    let (mut changed, mut same) = (Vec::new(), Vec::new());
    for run in runs {
        let plan = &plans[run.svc];
        let art = &plan.artifacts[run.art];
        let fp = plan.fingerprint(run.conn.host(), art);
        if run.state.current_fingerprint.as_deref() == Some(fp.as_str()) {
            same.push(run);
        } else {
            changed.push(run);
        }
    }
    let parallel = parallel(plans);
    let checked = fleet::bounded(same, parallel, |mut run| async move {
        let plan = &plans[run.svc];
        let config = plan.config.for_host(run.conn.host());
        let mut s = Script::new("leave an unchanged, running service alone");
        systemd::strategy::serving(&mut s, config);
        s.lines("if systemctl is-active -q \"$_svc\"; then");
        lock::release(&mut s, &Layout::new(&config.deploy_to));
        s.lines("  echo unchanged=1");
        s.lines("fi");
        let out = run.conn.run_ok(&s).await;
        let left = match &out {
            Ok(o) => parse_kv(o).get("unchanged").is_some_and(|v| v == "1"),
            Err(_) => false,
        };
        if left {
            plan.ui.host(
                run.conn.host(),
                "Unchanged",
                format!(
                    "release {} already runs this artifact, unit and secrets: left alone",
                    run.state.current.as_deref().unwrap_or("?")
                ),
            );
            run.outcome = Some(("unchanged".into(), None));
        }
        (left, run)
    })
    .await;
    let mut released = Vec::new();
    for (left, run) in checked {
        if left {
            released.push(run);
        } else {
            changed.push(run);
        }
    }
    sort_for_rollout(plans, &mut changed);
    (changed, released)
}

/// The artifact given with `--artifact`, or one built per configured target (`targets`
/// lists one per host architecture; each host gets the one for its `uname -m`), for each
/// service. Builds that can share a builder invocation (same target, profile, features...)
/// run as one.
fn obtain_artifacts(
    configs: &[&Config],
    opts: &DeployOptions,
    ui: &Ui,
    uis: &[Ui],
) -> Result<Vec<Vec<Artifact>>> {
    if let (Some(path), [config]) = (&opts.artifact, configs) {
        let artifact = package::open_artifact(path)?;
        package::unpack::check_is_this_package(config, &artifact)?;
        return Ok(vec![vec![artifact]]);
    }
    tokio::task::block_in_place(|| package::build_each_target(configs, ui, uis))
}

fn requirements(artifact: &Artifact, force: bool) -> Result<Requirements> {
    let m = &artifact.manifest;
    let target = Target::parse(&m.target).map_err(|e| {
        Error::usage(
            format!("the artifact's manifest names an invalid target: expected {e}"),
            None,
        )
    })?;
    let unpacked: u64 = m.files.values().map(|f| f.size).sum();
    Ok(Requirements {
        machine: target.uname_machine().to_string(),
        glibc: m.glibc_required.clone(),
        target: m.target.clone(),
        disk_kib: (artifact.size + unpacked) * 12 / 10 / 1024 + 1024,
        artifact_sha: Some(artifact.sha256.clone()),
        force,
    })
}

/// Connects to every host (once, however many services it runs), then takes the locks in one
/// fixed order, by host name and then service: first the first of that order alone, and only
/// then all the others in parallel. Two deploys started together both go for that lock first,
/// so exactly one proceeds; the other is refused there (or waits with `--lock-wait`) before it
/// holds any other lock.
async fn open_and_lock(
    plans: &[Plan<'_>],
    hosts: &[(HostSpec, &Environment)],
    ui: &Ui,
) -> Result<Vec<HostRun>> {
    let parallel = parallel(plans);
    let scripts: Vec<Script> = plans
        .iter()
        .map(|p| steps::preflight(p.config, Some(&p.requirements), &p.holder, p.lock_wait))
        .collect();
    let total: usize = plans.iter().map(|p| p.hosts.len()).sum();
    let opened = fleet::bounded(hosts.to_vec(), parallel, |(spec, env)| async move {
        let started = Instant::now();
        Connection::open(&spec, env, ui)
            .await
            .map(|c| (Arc::new(c), started))
    })
    .await;
    let mut conns = Vec::new();
    let mut errors = Vec::new();
    for r in opened {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        close_conns(conns.into_iter().map(|(c, _)| c)).await;
        return fleet::fail_if_any("preflight", total, errors).map(|_| Vec::new());
    }
    // Every (service, host) pair, in the lock order.
    let mut pairs: Vec<(usize, Arc<Connection>, Instant)> = Vec::new();
    for (svc, plan) in plans.iter().enumerate() {
        for h in &plan.hosts {
            let host = h.to_string();
            if let Some((c, started)) = conns.iter().find(|(c, _)| c.host() == host) {
                pairs.push((svc, c.clone(), *started));
            }
        }
    }
    pairs.sort_by(|a, b| (a.1.host(), a.0).cmp(&(b.1.host(), b.0)));
    let preflight = |(svc, conn, started): (usize, Arc<Connection>, Instant)| {
        let (plan, script) = (&plans[svc], &scripts[svc]);
        async move { preflight_host(script, plan, svc, conn, started, &plan.ui).await }
    };
    let mut rest = pairs.into_iter();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    if let Some(first) = rest.next() {
        let r = preflight(first).await;
        let refused = r.is_err();
        results.push(r);
        if refused {
            // Nothing is locked anywhere: the others are not even asked.
            skipped.extend(rest.by_ref().map(|(_, c, _)| c));
        }
    }
    let others = fleet::bounded(rest.collect(), parallel, preflight).await;
    results.extend(others);
    drop(conns);

    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    let mut refused_conns = Vec::new();
    for r in results {
        match r {
            Ok(run) => ok.push(run),
            Err((conn, e)) => {
                refused_conns.push(conn);
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        // Back to the switch order: services in order, each service's hosts as configured.
        sort_for_rollout(plans, &mut ok);
        return Ok(ok);
    }
    // Nothing has changed anywhere: release the locks we took and report every problem.
    fleet::bounded(ok.iter().collect(), parallel, |run| async move {
        let config = plans[run.svc].config.for_host(run.conn.host());
        let mut s = Script::new("release the deploy lock");
        lock::release(&mut s, &Layout::new(&config.deploy_to));
        let _ = run.conn.run(&s).await;
    })
    .await;
    close_all(ok).await;
    refused_conns.extend(skipped);
    close_conns(refused_conns).await;
    fleet::fail_if_any("preflight", total, errors).map(|_| Vec::new())
}

/// Closes connections once nothing else holds them.
async fn close_conns(conns: impl IntoIterator<Item = Arc<Connection>>) {
    for c in conns {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
}

/// Stage everywhere, then switch service by service (in order), each in its batches; finish
/// everywhere, or put back every host this deploy switched.
async fn rollout(
    plans: &[Plan<'_>],
    runs: &mut [HostRun],
    opts: &DeployOptions,
    ui: &Ui,
) -> Result<()> {
    let parallel = parallel(plans);
    let total = runs.len();

    // 3. Stage every service on every host before switching any.
    let staged = fleet::bounded(runs.iter().collect(), parallel, |run| {
        let plan = &plans[run.svc];
        stage_host(plan, run, &plan.ui)
    })
    .await;
    let errors: Vec<Error> = staged.into_iter().filter_map(|r| r.err()).collect();
    if !errors.is_empty() {
        for r in runs.iter_mut() {
            r.outcome = Some((
                "aborted".into(),
                Some("staging failed on a host; nothing was switched".into()),
            ));
        }
        abort_all(plans, runs).await;
        return fleet::fail_if_any("stage", total, errors);
    }

    // 3b. Hooks that must run once per deploy (migrations), per service: now that every host
    // has staged, before any switch; on `hooks.once_on` (default: the service's first host).
    for (svc, plan) in plans.iter().enumerate() {
        let mine: Vec<usize> = (0..total).filter(|&i| runs[i].svc == svc).collect();
        let Some(&first) = mine.first() else { continue };
        let once = match &plan.config.hooks.once_on {
            Some(h) => match mine.iter().find(|&&i| runs[i].conn.host() == h) {
                Some(&i) => i,
                None => {
                    plan.ui.warn(format!("hooks.once_on names {h}, which this deploy does not include; running before_switch_once on {}", runs[first].conn.host()));
                    first
                }
            },
            None => first,
        };
        if let Err(e) = run_once_hooks(plan, &runs[once], &plan.ui).await {
            for r in runs.iter_mut() {
                r.outcome = Some((
                    "aborted".into(),
                    Some("before_switch_once failed; nothing was switched".into()),
                ));
            }
            abort_all(plans, runs).await;
            return Err(e);
        }
    }

    // 4. Switch service by service, each in its batches.
    let mut failed: Vec<Error> = Vec::new();
    let mut switched_ok: Vec<usize> = Vec::new();
    'services: for (svc, plan) in plans.iter().enumerate() {
        let env = plan.config.env()?;
        let mine: Vec<usize> = (0..total).filter(|&i| runs[i].svc == svc).collect();
        if mine.is_empty() {
            continue;
        }
        let size = env.batch.size(mine.len());
        for (b, batch) in mine.chunks(size).enumerate() {
            if !switched_ok.is_empty() {
                // Hosts switched earlier wait for this batch: their dead-man's switches get
                // the full confirm_timeout again (in parallel with this batch).
                extend_guards(plans, runs, &switched_ok).await;
            }
            if size < mine.len() {
                plan.ui.status(
                    "Batch",
                    format!(
                        "{} of {}: {} host(s)",
                        b + 1,
                        mine.len().div_ceil(size),
                        batch.len()
                    ),
                );
            }
            let results = fleet::bounded(batch.to_vec(), env.parallel, |i| {
                let run = &runs[i];
                async move { (i, switch_host(plan, run, total == 1, &plan.ui).await) }
            })
            .await;
            for (i, r) in results {
                match r {
                    Ok(prev) => {
                        runs[i].previous = prev;
                        switched_ok.push(i);
                    }
                    Err((prev, outcome, e)) => {
                        runs[i].previous = prev;
                        runs[i].outcome = Some(outcome);
                        failed.push(e);
                    }
                }
            }
            if !failed.is_empty() {
                break 'services;
            }
        }
    }

    if failed.is_empty() {
        // 5. Finish: confirm, revisions.log, prune, unlock (done by the verify script already
        // when there is one host).
        let results = if total == 1 {
            vec![Ok(())]
        } else {
            fleet::bounded(runs.iter().collect(), parallel, |run| {
                let plan = &plans[run.svc];
                finish_host(plan, run, &plan.ui)
            })
            .await
        };
        for (run, r) in runs.iter_mut().zip(results) {
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
        if failed.is_empty() {
            let services = plans.len();
            ui.status(
                "Finished",
                match services {
                    1 => format!("release {} is live on {} host(s)", plans[0].release, total),
                    _ => format!(
                        "release {} is live: {total} service host(s), {} service(s)",
                        plans[0].release,
                        runs.iter()
                            .map(|r| r.svc)
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                    ),
                },
            );
        }
        return fleet::fail_if_any("deploy", total, failed);
    }

    // A batch failed: stop the rollout.
    let reason = format!(
        "rollout stopped: {}",
        fleet::first_line(&failed[0].to_string())
    );
    // Hosts that failed were reverted by themselves; the others are put back in parallel.
    let pending: Vec<usize> = (0..total).filter(|&i| runs[i].outcome.is_none()).collect();
    let outcomes = fleet::bounded(pending, parallel, |i| {
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

/// Gives every host switched so far the full confirm_timeout again.
async fn extend_guards(plans: &[Plan<'_>], runs: &[HostRun], switched: &[usize]) {
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

/// Runs the preflight + lock script on one connected host.
async fn preflight_host(
    script: &Script,
    plan: &Plan<'_>,
    svc: usize,
    conn: Arc<Connection>,
    started: Instant,
    ui: &Ui,
) -> std::result::Result<HostRun, (Arc<Connection>, Error)> {
    ui.host(
        conn.host(),
        "Connected",
        "checking the host and taking the deploy lock",
    );
    let out = match conn.run(script).await {
        Ok(o) => o,
        Err(e) => return Err((conn, e)),
    };
    let host = conn.host().to_string();
    let reqs = &plan.requirements[..];
    let error = match out.status {
        0 => None,
        EXIT_LOCKED => {
            let holder = parse_kv(&out.stdout)
                .get("holder")
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            Some(Error::Locked { host, holder })
        }
        EXIT_PREFLIGHT => {
            let facts = Facts::parse(&out.stdout);
            let help = if let ([one], false) = (
                reqs,
                facts.arch.is_empty() || reqs.iter().any(|r| r.machine == facts.arch),
            ) {
                arch::mismatch_help(&facts.arch, &one.target)
            } else if !facts.arch.is_empty() && !reqs.iter().any(|r| r.machine == facts.arch) {
                arch::uncovered_help(&facts.arch)
            } else {
                "nothing was changed on this host".into()
            };
            Some(Error::Preflight {
                host,
                problem: facts.problems.join("; "),
                help: Some(help),
            })
        }
        _ => Some(conn.remote_error(script, &out)),
    };
    if let Some(e) = error {
        return Err((conn, e));
    }
    let state = HostState::parse(&out.stdout);
    let facts = Facts::parse(&out.stdout);
    let Some(art) = reqs.iter().position(|r| r.machine == facts.arch) else {
        // The script refuses such a host; this is only reached if it printed something else.
        let mut s = Script::new("release the deploy lock");
        lock::release(&mut s, &Layout::new(&plan.config.deploy_to));
        let _ = conn.run(&s).await;
        let e = Error::Preflight {
            host: conn.host().to_string(),
            problem: format!("the host reported architecture {:?}, which no artifact of this deploy is built for", facts.arch),
            help: Some(arch::uncovered_help(&facts.arch)),
        };
        return Err((conn, e));
    };
    crate::host::warn_unverified_switch(conn.host(), &state, ui);
    for id in parse_kv_all(&out.stdout, "cleared") {
        ui.host(
            conn.host(),
            "Cleared",
            format!("unfinished release {id} left by an interrupted deploy"),
        );
    }
    Ok(HostRun {
        svc,
        started,
        state,
        facts,
        art,
        cached: parse_kv_all(&out.stdout, "cached"),
        previous: None,
        outcome: None,
        conn,
    })
}

async fn run_once_hooks(plan: &Plan<'_>, run: &HostRun, ui: &Ui) -> Result<()> {
    let config = plan.config.for_host(run.conn.host());
    if config.hooks.before_switch_once.is_empty() {
        return Ok(());
    }
    let host = run.conn.host().to_string();
    let rel_dir = Layout::new(&config.deploy_to).release(&plan.release);
    let previous = run.state.current.clone().unwrap_or_default();
    ui.host(
        &host,
        "Running",
        "before_switch_once hooks (this host only)",
    );
    let art = &plan.artifacts[run.art];
    let script = steps::once_hooks(config, &hook_env(plan, art, &host, &rel_dir, &previous));
    run.conn.run_ok(&script).await.map(|_| ())
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

async fn stage_host(plan: &Plan<'_>, run: &HostRun, ui: &Ui) -> Result<()> {
    let config = plan.config.for_host(run.conn.host());
    let layout = Layout::new(&config.deploy_to);
    let encoding = Encoding::for_host(run.facts.has_zstd, run.facts.has_gzip);
    let art = &plan.artifacts[run.art];
    let payload = payload(plan, run.art, encoding)?;
    let cached = run.cached.iter().any(|c| c == encoding.ext());
    let host = run.conn.host().to_string();
    if cached {
        ui.host(
            &host,
            "Cached",
            format!(
                "artifact {} is already on the host, nothing to upload",
                art.short_sha()
            ),
        );
    } else if encoding != Encoding::Zstd {
        ui.host(
            &host,
            "Recoding",
            format!("the host has no zstd: sending a {} instead", encoding.ext()),
        );
    }
    let prev = run.state.current.clone().unwrap_or_default();
    let rel_dir = layout.release(&plan.release);
    let input = StageInput {
        release: &plan.release,
        artifact_sha: &art.sha256,
        encoding,
        sent_sha: &payload.sha256,
        receive: (!cached).then_some(payload.bytes.len() as u64),
        manifest: &art.manifest,
        hook_env: hook_env(plan, art, &host, &rel_dir, &prev),
        fingerprint: &plan.fingerprint(&host, art),
    };
    let script = steps::stage(config, &input);
    // The artifact, when the host lacks it, travels on the stage script's standard input.
    let bytes: &[u8] = if cached { &[] } else { &payload.bytes };
    let out = run.conn.run_with_payload(&script, bytes).await?;
    if out.status != 0 {
        return Err(run.conn.remote_error(&script, &out));
    }
    if !cached {
        ui.host(
            &host,
            "Uploaded",
            match plan.artifacts.len() {
                1 => format!("{} ({} bytes)", encoding.ext(), payload.bytes.len()),
                _ => format!(
                    "{} ({} bytes) built for {} (this host is {})",
                    encoding.ext(),
                    payload.bytes.len(),
                    art.manifest.target,
                    run.facts.arch
                ),
            },
        );
    }
    ui.host(&host, "Staged", format!("release {}", plan.release));
    Ok(())
}

fn hook_env<'a>(
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

/// The payload of artifact `art` for an encoding, prepared once per deploy.
fn payload(plan: &Plan<'_>, art: usize, encoding: Encoding) -> Result<Payload> {
    let mut cache = plan.payloads.lock().expect("payload cache");
    if let Some(p) = cache.get(&(art, encoding.ext())) {
        return Ok(p.clone());
    }
    let path = &plan.artifacts[art].path;
    let p = tokio::task::block_in_place(|| Payload::prepare(path, encoding))?;
    cache.insert((art, encoding.ext()), p.clone());
    Ok(p)
}

type SwitchFailure = (Option<String>, (String, Option<String>), Error);

/// Switch, probe, verify (and, when `alone`, finish in the same script). On failure the host
/// is rolled back here and then.
async fn switch_host(
    plan: &Plan<'_>,
    run: &HostRun,
    alone: bool,
    ui: &Ui,
) -> std::result::Result<Option<String>, SwitchFailure> {
    let config = plan.config.for_host(run.conn.host());
    let host = run.conn.host().to_string();
    let script = steps::switch(config, &plan.release, &plan.holder, Some(&plan.secrets));
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
    // A deploy to one host has nobody else to wait for: its verify script also confirms,
    // records and unlocks (one round trip less).
    let (log, prune) = finish_parts(plan, run);
    let finish = alone.then_some(steps::Finish {
        log: &log,
        prune: &prune,
    });
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

/// Rolls one host back to `previous`; returns the journal lines captured from the failure.
async fn revert_host(
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

/// The revisions.log line of a finished deploy and the releases to prune on this host.
fn finish_parts(plan: &Plan<'_>, run: &HostRun) -> (String, Vec<String>) {
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

async fn finish_host(plan: &Plan<'_>, run: &HostRun, _ui: &Ui) -> Result<()> {
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

/// Removes the staged release and releases the lock of every service on every host (after a
/// failed stage, before any switch), over the open connections.
async fn abort_all(plans: &[Plan<'_>], runs: &[HostRun]) {
    let parallel = parallel(plans);
    fleet::bounded(runs.iter().collect(), parallel, |run| async move {
        let plan = &plans[run.svc];
        let config = plan.config.for_host(run.conn.host());
        let script = steps::abort(config, &plan.holder, Some(&plan.release));
        let _ = run.conn.run(&script).await;
    })
    .await;
}

impl HostRun {
    fn row(&self, plan: &Plan<'_>) -> HostRow {
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

async fn close_all(runs: Vec<HostRun>) {
    for r in runs {
        if let Ok(c) = Arc::try_unwrap(r.conn) {
            c.close().await;
        }
    }
}

/// `--dry-run`: every script and transfer a deploy would run on each host, touching nothing.
fn dry_run(plan: &Plan<'_>, hosts: &[HostSpec], ui: &Ui) -> Result<()> {
    let layout = Layout::new(&plan.config.deploy_to);
    let release_dir = layout.release(&plan.release);
    ui.status(
        "Dry run",
        format!(
            "deploy of release {} to {} host(s); nothing will be changed",
            plan.release,
            hosts.len()
        ),
    );
    // The scripts of the first target's artifact; with `targets`, each host gets the one for
    // its architecture, which only preflight learns.
    let art = &plan.artifacts[0];
    let stage_in = StageInput {
        release: &plan.release,
        artifact_sha: &art.sha256,
        encoding: Encoding::Zstd,
        sent_sha: &art.sha256,
        // Shown with the receiving lines; a host that has the artifact skips them.
        receive: Some(art.size),
        manifest: &art.manifest,
        hook_env: hook_env(plan, art, "<host>", &release_dir, "<previous>"),
        fingerprint: &plan.fingerprint("<host>", art),
    };
    let finish_log = plan.revision(art, "deploy", "ok");
    let scripts = [
        steps::preflight(
            plan.config,
            Some(&plan.requirements),
            &plan.holder,
            plan.lock_wait,
        ),
        steps::stage(plan.config, &stage_in),
        steps::switch(
            plan.config,
            &plan.release,
            &plan.holder,
            Some(&plan.secrets),
        ),
        steps::verify(
            plan.config,
            &plan.release,
            &steps::Started {
                unit: "<unit started by the switch>",
                invocation: "<invocation id from the switch>",
                retire: "<blue-green: the instance of the old release>",
            },
            &stage_in.hook_env,
            None,
        ),
        steps::finish(
            plan.config,
            &plan.release,
            &finish_log,
            &["<releases beyond keep_releases>".to_string()][..0],
        ),
    ];
    let once = steps::once_hooks(plan.config, &stage_in.hook_env);
    for (n, h) in hosts.iter().enumerate() {
        if n == 0 && !plan.config.hooks.before_switch_once.is_empty() {
            ui.emit(Event::Script {
                host: h.to_string(),
                purpose: format!("{} (after every host has staged)", once.purpose()),
                script: once.render_redacted()?,
            });
        }
        for s in &scripts {
            ui.emit(Event::Script {
                host: h.to_string(),
                purpose: match &plan.package {
                    Some(p) => format!("{p}: {}", s.purpose()),
                    None => s.purpose().to_string(),
                },
                script: s.render_redacted()?,
            });
        }
        if let Some(url) = &plan.config.health.http {
            ui.emit(Event::Script {
                host: h.to_string(),
                purpose: format!("probe {url} through the ssh connection until 2xx"),
                script: String::new(),
            });
        }
    }
    Ok(())
}
