//! Phases 1 and 2 of a deploy: connect to every host and preflight + lock each service on
//! each host, in one fixed order so that of two deploys started together exactly one proceeds.
//! Nothing on any host changes here; when one host is refused, every lock taken is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::{join_all, FutureExt};
use tokio::sync::Semaphore;

use crate::arch;
use crate::config::{Environment, HostSpec, Unreachable};
use crate::fleet;
use crate::journal::HostState;
use crate::layout::Layout;
use crate::lock;
use crate::preflight::{Facts, EXIT_PREFLIGHT};
use crate::remote::script::{parse_kv, parse_kv_all, Script, EXIT_LOCKED};
use crate::remote::session::Connection;
use crate::steps;
use crate::ui::Ui;
use crate::{Error, Result};

use super::plan::Plan;
use super::{close_all, close_conns, parallel, sort_for_rollout, Deferred, HostRun};

/// Connects to every host (once, however many services it runs) and takes the locks in one
/// fixed order, by host name and then service: first the first of that order alone, and only
/// then all the others in parallel, each as soon as its host is connected (no host waits for
/// the slowest handshake). Two deploys started together both go for that lock first, so
/// exactly one proceeds; the other is refused there (or waits with `--lock-wait`) before it
/// holds any other lock. When a host cannot be reached (and may not be deferred), no further
/// lock is taken and those taken are released: nothing changes anywhere.
///
/// With `unreachable = "defer"`, a host that cannot be reached or fails preflight is left
/// alone and returned as [`Deferred`] (its service hosts count against `max_fail`; past it, the
/// deploy stops here as with `"fail"`). A lock held by someone else always stops the deploy.
pub(crate) async fn open_and_lock(
    plans: &[Plan<'_>],
    hosts: &[(HostSpec, &Environment)],
    ui: &Ui,
) -> Result<(Vec<HostRun>, Vec<Deferred>)> {
    let parallel = parallel(plans);
    let env = plans[0].config.env()?;
    let defer = env.unreachable == Unreachable::Defer;
    let scripts: Vec<Script> = plans
        .iter()
        .map(|p| steps::preflight(p.config, Some(&p.requirements), &p.holder, p.lock_wait))
        .collect();
    let total: usize = plans.iter().map(|p| p.hosts.len()).sum();
    let allowed = env.max_fail.allowed(total);
    // Every host is connected to at once (handshakes bounded by `connect_parallel` inside
    // `Connection::open`, hosts by `parallel` when it is set), and each (service, host) pair
    // is preflighted as soon as its host is connected and the lock order allows it: the
    // first hosts lock while the last ones still shake hands.
    let failed: Mutex<Vec<(HostSpec, Error)>> = Mutex::new(Vec::new());
    let slots = Semaphore::new(parallel.min(hosts.len()).max(1));
    let mut opening = HashMap::new();
    for (spec, env) in hosts.iter().cloned() {
        let (failed, slots) = (&failed, &slots);
        let key = spec.to_string();
        let open = async move {
            let _slot = slots.acquire().await.ok()?;
            let started = Instant::now();
            match Connection::open(&spec, env, ui).await {
                Ok(c) => Some((Arc::new(c), started)),
                Err(e) => {
                    failed.lock().expect("failed hosts").push((spec, e));
                    None
                }
            }
        };
        opening.insert(key, open.boxed().shared());
    }
    // A failed connect stops the deploy unless it may be deferred (within `max_fail`): then
    // no further lock is taken.
    let give_up = || {
        let f = failed.lock().expect("failed hosts");
        !f.is_empty() && (!defer || f.len() > allowed)
    };
    // Every (service, host) pair, in the lock order.
    let mut pairs: Vec<(usize, String)> = Vec::new();
    for (svc, plan) in plans.iter().enumerate() {
        for h in &plan.hosts {
            let host = h.to_string();
            if opening.contains_key(&host) {
                pairs.push((svc, host));
            }
        }
    }
    pairs.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
    let connected = &opening;
    let preflight = |svc: usize, conn: Arc<Connection>, started: Instant| {
        let (plan, script) = (&plans[svc], &scripts[svc]);
        async move {
            preflight_host(script, plan, svc, conn, started, &plan.ui)
                .await
                .map_err(|(c, e)| (svc, c, e))
        }
    };
    let deferrable = |e: &Error| defer && !matches!(e, Error::Locked { .. });
    let lock_all = async {
        let mut rest = pairs.into_iter();
        let mut results = Vec::new();
        // The first of the lock order alone; a deferred host (or one that could not be
        // reached, with `unreachable = "defer"`) hands that role to the next one.
        for (svc, host) in rest.by_ref() {
            let Some((conn, started)) = connected[&host].clone().await else {
                match give_up() {
                    true => break,
                    false => continue,
                }
            };
            match preflight(svc, conn, started).await {
                Ok(run) => {
                    results.push(Ok(run));
                    break;
                }
                Err(e) if deferrable(&e.2) => results.push(Err(e)),
                Err(e) => {
                    // Nothing is locked anywhere: the others are not even asked.
                    results.push(Err(e));
                    return results;
                }
            }
        }
        let others = fleet::bounded(rest.collect(), parallel, |(svc, host)| async move {
            let (conn, started) = connected[&host].clone().await?;
            if give_up() {
                return None;
            }
            Some(preflight(svc, conn, started).await)
        })
        .await;
        results.extend(others.into_iter().flatten());
        results
    };
    let (opened, results) = tokio::join!(join_all(opening.values().cloned()), lock_all);
    let conns: Vec<Arc<Connection>> = opened.into_iter().flatten().map(|(c, _)| c).collect();
    // The shared futures keep a copy of each connection: gone, so connections can be closed.
    drop(opening);
    let mut errors = Vec::new();
    let mut deferred = Vec::new();
    for (spec, e) in failed.into_inner().expect("failed hosts") {
        match defer {
            true => deferred.extend(defer_host(plans, &spec.to_string(), e, ui)),
            false => errors.push(e),
        }
    }
    let mut ok = Vec::new();
    let mut refused_conns = Vec::new();
    for r in results {
        match r {
            Ok(run) => ok.push(run),
            Err((svc, conn, e)) if deferrable(&e) => {
                let host = conn.host().to_string();
                refused_conns.push(conn);
                let reason = e.to_string();
                deferred.push(Deferred::with_reason(
                    svc,
                    &host,
                    &reason,
                    Some(e),
                    &plans[svc].ui,
                ));
            }
            Err((_, conn, e)) => {
                refused_conns.push(conn);
                errors.push(e);
            }
        }
    }
    if errors.is_empty() && deferred.len() <= allowed && !ok.is_empty() {
        // Back to the switch order: services in order, each service's hosts as configured.
        sort_for_rollout(plans, &mut ok);
        drop(refused_conns);
        // The hosts left out (deferred, refused): closed unless a run still holds them.
        close_conns(conns).await;
        return Ok((ok, deferred));
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
    drop(refused_conns);
    close_conns(conns).await;
    errors.extend(deferred.into_iter().filter_map(|d| d.error));
    fleet::fail_if_any("preflight", total, errors).map(|_| (Vec::new(), Vec::new()))
}

/// The service hosts of an unreachable host, deferred.
fn defer_host(plans: &[Plan<'_>], host: &str, e: Error, ui: &Ui) -> Vec<Deferred> {
    let svcs: Vec<usize> = (0..plans.len())
        .filter(|&svc| plans[svc].hosts.iter().any(|h| h.to_string() == host))
        .collect();
    let mut e = Some(e);
    let reason = e.as_ref().map(|e| e.to_string()).unwrap_or_default();
    let mut out = Vec::new();
    for svc in svcs {
        out.push(Deferred::with_reason(
            svc,
            host,
            &reason,
            e.take(),
            &plans[svc].ui,
        ));
    }
    let _ = ui;
    out
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
    let sent = std::time::SystemTime::now();
    let out = match conn.run(script).await {
        Ok(o) => o,
        Err(e) => return Err((conn, e)),
    };
    // A slow sudo or a skewed clock, named with its cause before anything changes (#22).
    let kv = parse_kv(&out.stdout);
    let config = plan.config.for_host(conn.host());
    for f in crate::diagnose::slow_host(&kv, sent, std::time::SystemTime::now(), config) {
        let fix = f.fix.unwrap_or_default();
        ui.warn(format!("{}: {}; {fix}", conn.host(), f.message));
    }
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
    // #17: the lock's lease, held while this process runs: once it is gone (crashed, killed),
    // `rollback` and `unlock` can tell, and put its unconfirmed switch back at once.
    let layout = Layout::new(&plan.config.for_host(conn.host()).deploy_to);
    // Its channel opens beside the stage; the next script returns once it is open (#18).
    let if_not =
        "if this deploy crashes, `cargo ship unlock` is needed before `cargo ship rollback`";
    if let Err(e) = conn.hold(&lock::lease(&layout, &plan.holder), if_not) {
        ui.warn(format!(
            "{}: could not hold the deploy lock's lease ({e}); {if_not}",
            conn.host()
        ));
    }
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
        haves: parse_kv_all(&out.stdout, "have"),
        previous: None,
        outcome: None,
        conn,
    })
}
