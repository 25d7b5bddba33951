//! Phases 1 and 2 of a deploy: connect to every host, then preflight + lock each service on
//! each host, in one fixed order so that of two deploys started together exactly one proceeds.
//! Nothing on any host changes here; when one host is refused, every lock taken is released.

use std::sync::Arc;
use std::time::Instant;

use crate::arch;
use crate::config::{Environment, HostSpec};
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
use super::{close_all, close_conns, parallel, sort_for_rollout, HostRun};

/// Connects to every host (once, however many services it runs), then takes the locks in one
/// fixed order, by host name and then service: first the first of that order alone, and only
/// then all the others in parallel. Two deploys started together both go for that lock first,
/// so exactly one proceeds; the other is refused there (or waits with `--lock-wait`) before it
/// holds any other lock.
pub(crate) async fn open_and_lock(
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
    // #17: the lock's lease, held while this process runs: once it is gone (crashed, killed),
    // `rollback` and `unlock` can tell, and put its unconfirmed switch back at once.
    let layout = Layout::new(&plan.config.for_host(conn.host()).deploy_to);
    if let Err(e) = conn.hold(&lock::lease(&layout, &plan.holder)).await {
        ui.warn(format!("{}: could not hold the deploy lock's lease ({e}); if this deploy crashes, `cargo ship unlock` is needed before `cargo ship rollback`", conn.host()));
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
