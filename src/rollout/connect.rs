//! Phases 1 and 2 of a deploy: connect to every host, then preflight + lock each service on
//! each host, in one fixed order so that of two deploys started together exactly one proceeds.
//! Nothing on any host changes here; when one host is refused, every lock taken is released.

use std::sync::Arc;
use std::time::Instant;

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

/// Connects to every host (once, however many services it runs), then takes the locks in one
/// fixed order, by host name and then service: first the first of that order alone, and only
/// then all the others in parallel. Two deploys started together both go for that lock first,
/// so exactly one proceeds; the other is refused there (or waits with `--lock-wait`) before it
/// holds any other lock.
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
    // Handshakes are bounded by `connect_parallel` inside `Connection::open`; hosts (connect
    // included) by `parallel` when it is set.
    let opened = fleet::bounded(hosts.to_vec(), parallel, |(spec, env)| async move {
        let started = Instant::now();
        let r = Connection::open(&spec, env, ui)
            .await
            .map(|c| (Arc::new(c), started));
        (spec, r)
    })
    .await;
    let mut conns = Vec::new();
    let mut errors = Vec::new();
    let mut deferred = Vec::new();
    for (spec, r) in opened {
        match r {
            Ok(c) => conns.push(c),
            Err(e) if defer => deferred.extend(defer_host(plans, &spec.to_string(), e, ui)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() || deferred.len() > allowed {
        close_conns(conns.into_iter().map(|(c, _)| c)).await;
        errors.extend(deferred.into_iter().filter_map(|d| d.error));
        return fleet::fail_if_any("preflight", total, errors).map(|_| (Vec::new(), Vec::new()));
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
    let deferrable = |e: &Error| defer && !matches!(e, Error::Locked { .. });
    let mut rest = pairs.into_iter();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    // The first of the lock order alone; a deferred host hands that role to the next one.
    for first in rest.by_ref() {
        let svc = first.0;
        let r = preflight(first).await;
        match r {
            Ok(run) => {
                results.push(Ok(run));
                break;
            }
            Err((conn, e)) if deferrable(&e) => results.push(Err((svc, conn, e))),
            Err((conn, e)) => {
                results.push(Err((svc, conn, e)));
                // Nothing is locked anywhere: the others are not even asked.
                skipped.extend(rest.by_ref().map(|(_, c, _)| c));
                break;
            }
        }
    }
    let others = fleet::bounded(rest.collect(), parallel, |pair| {
        let svc = pair.0;
        let f = preflight(pair);
        async move { f.await.map_err(|(c, e)| (svc, c, e)) }
    })
    .await;
    results.extend(others);
    drop(conns);

    let (mut ok, mut errors) = (Vec::new(), Vec::new());
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
        close_conns(refused_conns).await;
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
    refused_conns.extend(skipped);
    close_conns(refused_conns).await;
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
