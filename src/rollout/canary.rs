//! Phase 4a of a deploy, before a service's batches: the canary (issue #20).
//!
//! The first `canary.hosts` hosts of the service switch first, with the same strategy, probe
//! and dead-man's switch as any batch. Then, for `canary.window`, the service's own counters
//! are read on every host of the service (the canary hosts and the baseline, the hosts still on
//! the old release) through each host's SSH connection ([`metrics::scrape`]): at the start of
//! the window, at the end, and every [`interval`] between, so that a counter reset by a restart
//! is counted right ([`metrics::Tally`]). Each time, the dead-man's switch of every host
//! switched so far gets its full `confirm_timeout` again, so a deployer that dies during the
//! window leaves no host on the canary release.
//!
//! The verdict ([`metrics::judge`]): promote, and the service's other hosts roll out in their
//! batches; worse, or inconclusive (unless `--promote-inconclusive`): the canary hosts are put
//! back on their previous release (verified by the health probe, as any rollback), the other
//! hosts never switch, and the deploy stops with exit 12 or 13. A canary far past the limit
//! ([`metrics::early_failure`]) is judged worse before the window ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::CanaryConfig;
use crate::fleet;
use crate::health::HttpTarget;
use crate::metrics::{self, Counts, Judgement, Policy, Selector, Side, Tally, Verdict};
use crate::systemd::guard;
use crate::ui::{Event, Tone};
use crate::{Error, Result};

use super::plan::Plan;
use super::revert::revert_host;
use super::switch::{extend_guards, finish_host, switch_batch};
use super::{parallel, DeployOptions, HostRun};

/// How the canary phase of one service ended.
pub(crate) enum Phase {
    /// No canary for this service (not configured, `--no-canary`, or a single batch with
    /// nothing to compare... see [`run`]): every host goes through the batches.
    Skipped,
    /// The canary hosts (indexes into the runs) switched and were promoted; the rest follow.
    Promoted(Vec<usize>),
    /// A canary host failed its switch (unhealthy, rolled back there and then): the canary
    /// hosts that did switch, and the errors, handled as a failed batch.
    SwitchFailed(Vec<usize>, Vec<Error>),
    /// Judged worse or inconclusive: the canary hosts were put back; the deploy stops.
    Stopped(Error),
}

/// The sampling interval inside a window: a sixth of it, between 1s and 15s, and short enough
/// that the dead-man's switch (extended at each sample) never comes close to firing.
pub(crate) fn interval(window: Duration, confirm_timeout: Duration) -> Duration {
    let mut i = (window / 6).clamp(Duration::from_secs(1), Duration::from_secs(15));
    if !confirm_timeout.is_zero() {
        i = i.min(confirm_timeout / 3);
    }
    i.max(Duration::from_secs(1))
}

/// How many of a service's `hosts` are its canary: none without a canary table or with
/// `--no-canary`.
pub(crate) fn count(plan: &Plan<'_>, opts: &DeployOptions, hosts: usize) -> usize {
    match &plan.config.canary {
        Some(c) if !opts.no_canary => c.hosts.count(hosts),
        _ => 0,
    }
}

/// The canary phase of service `svc`, whose hosts in rollout order are `mine`; `switched`
/// are the hosts switched before it (earlier services), whose guards are kept alive too.
pub(crate) async fn run(
    plans: &[Plan<'_>],
    svc: usize,
    runs: &mut [HostRun],
    mine: &[usize],
    switched: &[usize],
    opts: &DeployOptions,
) -> Phase {
    let plan = &plans[svc];
    let Some(canary) = plan.config.canary.as_ref() else {
        return Phase::Skipped;
    };
    if opts.no_canary {
        plan.ui.status(
            "Canary",
            "skipped (--no-canary): every host rolls out as configured",
        );
        return Phase::Skipped;
    }
    let ui = &plan.ui;
    let (canaries, baseline) = mine.split_at(count(plan, opts, mine.len()));
    let names = |ix: &[usize]| -> Vec<String> {
        ix.iter()
            .map(|&i| runs[i].conn.host().to_string())
            .collect()
    };
    let (canary_names, baseline_names) = (names(canaries), names(baseline));
    ui.status(
        "Canary",
        format!(
            "{} first, judged for {} on its metrics against {}",
            canary_names.join(", "),
            humantime::format_duration(canary.window),
            match baseline_names.len() {
                0 => "max_error_ratio alone (no baseline: every host is a canary)".to_string(),
                n => format!("the {n} host(s) still on the old release"),
            }
        ),
    );
    if !guard::enabled(plan.config) {
        ui.warn(
            "the dead-man's switch is off (health.confirm_timeout = \"0s\"): if this deploy dies during the canary window, the canary hosts stay on the new release",
        );
    }
    // Checked when the configuration was loaded; an error here stops the rollout as a failed
    // batch would (the staged hosts are put back and unlocked), never half-way.
    let parsed = (|| -> Result<(HttpTarget, Selector, Selector)> {
        let at = |key: &str, problem: String| Error::Config {
            location: plan.config.manifest_path.display().to_string(),
            key: format!("package.metadata.ship.canary.{key}"),
            problem,
            help: None,
        };
        let target = HttpTarget::parse(&canary.metrics).ok_or_else(|| {
            at(
                "metrics",
                format!(
                    "expected an http:// URL with a host, found `{}`",
                    canary.metrics
                ),
            )
        })?;
        let requests = Selector::parse(&canary.requests).map_err(|why| at("requests", why))?;
        let errors = Selector::parse(&canary.errors).map_err(|why| at("errors", why))?;
        Ok((target, requests, errors))
    })();
    let (target, requests, errors) = match parsed {
        Ok(p) => p,
        Err(e) => return Phase::Stopped(e),
    };

    // Switch the canary hosts as one batch (never "alone": the single host of a one-host deploy
    // confirms only once promoted).
    let (ok, failed) = switch_batch(plan, runs, canaries, parallel(plans), false).await;
    if !failed.is_empty() {
        // The failed ones were rolled back; the healthy ones are put back with the rest.
        return Phase::SwitchFailed(ok, failed);
    }
    let mut keep_alive: Vec<usize> = switched.to_vec();
    keep_alive.extend(canaries);

    let judgement = watch(
        plans,
        runs,
        canary,
        &target,
        (&requests, &errors),
        (canaries, baseline),
        &keep_alive,
    )
    .await;
    report(plan, canary, &judgement, &canary_names, &baseline_names);

    let promote = match judgement.verdict {
        Verdict::Promote => true,
        Verdict::Inconclusive if opts.promote_inconclusive => {
            ui.warn(format!(
                "canary inconclusive ({}), promoted anyway (--promote-inconclusive)",
                judgement.reason
            ));
            true
        }
        _ => false,
    };
    if promote && runs.len() == 1 {
        // A one-host deploy: its verify did not finish (confirm, record, unlock) as it
        // otherwise does, so that the window was covered by the dead-man's switch; finish now.
        let i = canaries[0];
        if let Err(e) = finish_host(plan, &runs[i], ui).await {
            runs[i].outcome = Some(("failed".into(), Some(e.to_string())));
            return Phase::SwitchFailed(Vec::new(), vec![e]);
        }
    }
    if promote {
        ui.status(
            "Promoted",
            format!(
                "the canary; rolling out to the other {} host(s)",
                baseline.len()
            ),
        );
        return Phase::Promoted(canaries.to_vec());
    }

    // Put the canary hosts back, verified as any rollback. A canary judged worse is marked
    // failed like an unhealthy release (its artifact a ghost on those hosts: not deployed there
    // again without --force); an inconclusive one is not: it was never judged bad.
    let worse = judgement.verdict == Verdict::Worse;
    let reason = format!("canary {}: {}", judgement.verdict, judgement.reason);
    let reverted = fleet::bounded(canaries.to_vec(), parallel(plans), |i| {
        let (run, reason) = (&runs[i], &reason);
        async move {
            ui.host(
                run.conn.host(),
                "Reverting",
                format!(
                    "to {} ({reason})",
                    run.previous.as_deref().unwrap_or("nothing")
                ),
            );
            let r = revert_host(plan, run, run.previous.as_deref(), reason, worse, None, ui).await;
            (i, r)
        }
    })
    .await;
    let mut failures = Vec::new();
    for (i, r) in reverted {
        runs[i].outcome = Some(match r {
            Ok(_) => ("reverted".into(), Some(reason.clone())),
            Err(e @ Error::Reverted { .. }) => ("reverted".into(), Some(e.to_string())),
            Err(e) => {
                let detail = format!("{reason}; putting it back failed: {e}");
                failures.push(e);
                ("failed".into(), Some(detail))
            }
        });
    }
    let outcome = match failures.len() {
        0 => format!(
            "the canary host(s) were put back on the previous release and {} other host(s) were not switched",
            baseline.len()
        ),
        n => format!(
            "{n} canary host(s) could not be put back (see above); {} other host(s) were not switched",
            baseline.len()
        ),
    };
    Phase::Stopped(Error::Canary {
        verdict: judgement.verdict,
        hosts: canary_names.join(", "),
        reason: judgement.reason,
        outcome,
    })
}

/// Samples every host of the service across the window and judges. Returns early when the
/// canary fails far past the limit.
async fn watch(
    plans: &[Plan<'_>],
    runs: &[HostRun],
    canary: &CanaryConfig,
    target: &HttpTarget,
    (requests, errors): (&Selector, &Selector),
    (canaries, baseline): (&[usize], &[usize]),
    keep_alive: &[usize],
) -> Judgement {
    let plan = &plans[runs[canaries[0]].svc];
    let policy = Policy {
        max_error_ratio: canary.max_error_ratio,
        min_requests: canary.min_requests,
    };
    let every = interval(canary.window, plan.config.health.confirm_timeout);
    let hosts: Vec<usize> = canaries.iter().chain(baseline).copied().collect();
    let mut tallies: BTreeMap<usize, Tally> =
        hosts.iter().map(|&i| (i, Tally::default())).collect();
    let started = Instant::now();
    let end = started + canary.window;
    let mut last = false;
    loop {
        // One sample of every host, in parallel; the guards of the switched hosts are pushed
        // back at the same time.
        let scraped = fleet::bounded(hosts.clone(), parallel(plans), |i| async move {
            (i, metrics::scrape(&runs[i].conn, target).await)
        });
        let (scraped, ()) = tokio::join!(scraped, extend_guards(plans, runs, keep_alive));
        for (i, page) in scraped {
            let tally = tallies.get_mut(&i).expect("tally");
            let parsed = page.and_then(|text| metrics::parse(&text));
            match parsed {
                Ok(exp) => {
                    // Said once per host; the tally keeps the last reason for the verdict.
                    if let Err(e) = tally.observe(&exp, &[requests, errors]) {
                        if tally.failures == 1 {
                            plan.ui.warn(format!("{}: {e}", runs[i].conn.host()));
                        }
                    }
                }
                Err(e) => {
                    if tally.failures == 0 {
                        plan.ui.warn(format!(
                            "{}: cannot read the metrics: {e}",
                            runs[i].conn.host()
                        ));
                    }
                    tally.fail(e);
                }
            }
        }
        let (c, b) = sides(
            &|i| runs[i].conn.host(),
            &tallies,
            canaries,
            baseline,
            requests,
            errors,
        );
        if last {
            return metrics::judge(&policy, &c, b.as_ref());
        }
        if let Some(j) = metrics::early_failure(&policy, &c, b.as_ref()) {
            return j;
        }
        let elapsed = started.elapsed();
        if let Side::Counted { counts, .. } = &c {
            plan.ui.detail(
                "Canary",
                format!(
                    "{}s of {}: {} request(s), {} error(s) ({})",
                    elapsed.as_secs(),
                    humantime::format_duration(canary.window),
                    counts.requests,
                    counts.errors,
                    metrics::pct(counts.ratio())
                ),
            );
        }
        let now = Instant::now();
        let next = (now + every).min(end);
        last = next >= end;
        tokio::time::sleep_until(next.into()).await;
    }
}

/// The canary's and the baseline's numbers from the tallies so far. A canary host without two
/// good scrapes makes the canary unreadable; a baseline host without them is left out of the
/// baseline (all of them: the baseline is unreadable).
fn sides<'h>(
    host_of: &dyn Fn(usize) -> &'h str,
    tallies: &BTreeMap<usize, Tally>,
    canaries: &[usize],
    baseline: &[usize],
    requests: &Selector,
    errors: &Selector,
) -> (Side, Option<Side>) {
    let counted = |i: usize| -> std::result::Result<Counts, String> {
        let t = &tallies[&i];
        let host = host_of(i);
        match t.counts(requests, errors) {
            Some(_) if !t.saw(requests) => {
                Err(format!("metrics on {host} have no series `{requests}`"))
            }
            Some(c) => Ok(c),
            None => Err(format!(
                "metrics on {host} could not be read: {}",
                t.last_error.as_deref().unwrap_or("fewer than two samples")
            )),
        }
    };
    let mut canary = Counts::default();
    for &i in canaries {
        match counted(i) {
            Ok(c) => canary = canary + c,
            Err(why) => return (Side::Unreadable(why), baseline_side(baseline, &counted)),
        }
    }
    (
        Side::Counted {
            hosts: canaries.len(),
            counts: canary,
        },
        baseline_side(baseline, &counted),
    )
}

fn baseline_side(
    baseline: &[usize],
    counted: &dyn Fn(usize) -> std::result::Result<Counts, String>,
) -> Option<Side> {
    if baseline.is_empty() {
        return None;
    }
    let mut sum = Counts::default();
    let (mut hosts, mut last_error) = (0, None);
    for &i in baseline {
        match counted(i) {
            Ok(c) => {
                sum = sum + c;
                hosts += 1;
            }
            Err(e) => last_error = Some(e),
        }
    }
    Some(match (hosts, last_error) {
        (0, Some(e)) => Side::Unreadable(e),
        _ => Side::Counted { hosts, counts: sum },
    })
}

/// The verdict with its numbers: one status line, and an `output` event of kind `canary`
/// whose data the JSON mode and the GitHub job summary carry.
fn report(
    plan: &Plan<'_>,
    canary: &CanaryConfig,
    j: &Judgement,
    canary_hosts: &[String],
    baseline_hosts: &[String],
) {
    let numbers = |c: Option<Counts>| match c {
        Some(c) => format!(
            "{} request(s), {} error(s) ({})",
            c.requests,
            c.errors,
            metrics::pct(c.ratio())
        ),
        None => "not read".into(),
    };
    let json = |c: Option<Counts>, hosts: &[String]| match c {
        Some(c) => serde_json::json!({
            "hosts": hosts, "requests": c.requests, "errors": c.errors, "ratio": c.ratio(),
        }),
        None => {
            serde_json::json!({ "hosts": hosts, "requests": null, "errors": null, "ratio": null })
        }
    };
    let mut text = format!(
        "             canary   ({}): {}\n",
        canary_hosts.join(", "),
        numbers(j.canary),
    );
    if !baseline_hosts.is_empty() {
        text.push_str(&format!(
            "             baseline ({}): {}\n",
            baseline_hosts.join(", "),
            numbers(j.baseline)
        ));
    }
    plan.ui.step(
        None,
        "Canary",
        format!("{}: {}", j.verdict, j.reason),
        match j.verdict {
            Verdict::Promote => Tone::Progress,
            Verdict::Worse => Tone::Error,
            Verdict::Inconclusive => Tone::Warning,
        },
    );
    plan.ui.emit(Event::Output {
        kind: "canary".into(),
        text: text.trim_end().to_string(),
        data: serde_json::json!({
            "verdict": j.verdict,
            "reason": j.reason,
            "early": j.early,
            "window": humantime::format_duration(canary.window).to_string(),
            "max_error_ratio": canary.max_error_ratio,
            "min_requests": canary.min_requests,
            "canary": json(j.canary, canary_hosts),
            "baseline": if baseline_hosts.is_empty() { serde_json::Value::Null } else { json(j.baseline, baseline_hosts) },
        }),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(reqs: u64, errs: u64) -> metrics::Exposition {
        metrics::parse(&format!(
            "http_requests_total{{code=\"200\"}} {}\nhttp_requests_total{{code=\"500\"}} {errs}\n",
            reqs - errs
        ))
        .unwrap()
    }

    /// Hosts 0 (canary), 1 and 2 (baseline), each given its two scrapes (or failures).
    fn judge_hosts(samples: [Option<(u64, u64, u64, u64)>; 3]) -> (Side, Option<Side>) {
        let r = Selector::parse("http_requests_total").unwrap();
        let e = Selector::parse(r#"http_requests_total{code=~"5.."}"#).unwrap();
        let mut tallies = BTreeMap::new();
        for (i, s) in samples.into_iter().enumerate() {
            let mut t = Tally::default();
            match s {
                Some((r0, e0, r1, e1)) => {
                    t.observe(&page(r0, e0), &[&r, &e]).unwrap();
                    t.observe(&page(r1, e1), &[&r, &e]).unwrap();
                }
                None => t.fail("metrics GET /metrics: no answer: refused".into()),
            }
            tallies.insert(i, t);
        }
        let names = ["host0", "host1", "host2"];
        sides(&|i| names[i], &tallies, &[0], &[1, 2], &r, &e)
    }

    #[test]
    fn sides_sum_hosts_and_say_which_one_is_unreadable() {
        let counted = |requests, errors, hosts| Side::Counted {
            hosts,
            counts: Counts { requests, errors },
        };
        assert_eq!(
            judge_hosts([
                Some((100, 0, 300, 10)),
                Some((50, 1, 150, 2)),
                Some((0, 0, 40, 0))
            ]),
            (counted(200, 10, 1), Some(counted(140, 1, 2)))
        );
        // One baseline host unreadable: left out of the baseline.
        assert_eq!(
            judge_hosts([Some((0, 0, 100, 0)), None, Some((0, 0, 40, 0))]),
            (counted(100, 0, 1), Some(counted(40, 0, 1)))
        );
        // Every baseline host unreadable: the baseline is.
        assert_eq!(
            judge_hosts([Some((0, 0, 100, 0)), None, None]),
            (
                counted(100, 0, 1),
                Some(Side::Unreadable(
                    "metrics on host2 could not be read: metrics GET /metrics: no answer: refused"
                        .into()
                ))
            )
        );
        // The canary unreadable.
        assert_eq!(
            judge_hosts([None, Some((0, 0, 1, 0)), Some((0, 0, 1, 0))]).0,
            Side::Unreadable(
                "metrics on host0 could not be read: metrics GET /metrics: no answer: refused"
                    .into()
            )
        );
    }

    #[test]
    fn a_page_without_the_requests_series_is_unreadable() {
        let r = Selector::parse("http_requests_total").unwrap();
        let e = Selector::parse("http_errors_total").unwrap();
        let mut t = Tally::default();
        for _ in 0..2 {
            t.observe(&metrics::parse("other_total 5\n").unwrap(), &[&r, &e])
                .unwrap();
        }
        let tallies = BTreeMap::from([(0, t)]);
        assert_eq!(
            sides(&|_| "host0", &tallies, &[0], &[], &r, &e),
            (
                Side::Unreadable("metrics on host0 have no series `http_requests_total`".into()),
                None
            )
        );
    }

    #[test]
    fn sampling_interval() {
        let s = Duration::from_secs;
        assert_eq!(interval(s(120), s(90)), s(15));
        assert_eq!(interval(s(12), s(90)), s(2));
        assert_eq!(interval(s(3), s(90)), s(1));
        // A short dead-man's switch is extended well before it fires.
        assert_eq!(interval(s(600), s(21)), s(7));
        assert_eq!(interval(s(600), s(0)), s(15));
    }
}
