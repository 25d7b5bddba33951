//! `cargo ship rollback <env> [--to <release>]`: flip `current` back to the previous good
//! release (or a named one) on every host, restart and verify, with no build and no upload.
//! If the release rolled back to is not healthy either, the host is put back where it was and
//! the command fails, saying so.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::fleet;
use crate::hooks::HookEnv;
use crate::host::unlock_quietly;
use crate::journal::{self, HostState, Revision};
use crate::layout::Layout;
use crate::lock;
use crate::recover;
use crate::remote::script::parse_kv;
use crate::remote::session::Connection;
use crate::steps::{self, RevertInput};
use crate::ui::{Event, HostRow, Tone, Ui};
use crate::{Error, Result};

/// Options of `cargo ship rollback`.
#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// The release to return to (default: the newest good release older than `current`).
    pub to: Option<String>,
    /// Print what would run; change nothing.
    pub dry_run: bool,
    /// Wait this long for another deploy's lock.
    pub lock_wait: Option<Duration>,
    /// Only these hosts.
    pub hosts: Vec<String>,
    /// Show the plan and ask before acting (the command line sets it when stdin is a
    /// terminal and `--yes` was not given).
    pub confirm: bool,
}

/// Rolls every selected host back.
pub async fn rollback(config: &Config, opts: &RollbackOptions, ui: &Ui) -> Result<()> {
    let env = config.env()?;
    let holder = lock::holder(&format!("cargo ship rollback {}", env.name));
    let lock_wait = opts.lock_wait.unwrap_or_default();
    if opts.dry_run {
        for h in fleet::select_hosts(env, &opts.hosts)? {
            let target = opts
                .to
                .clone()
                .unwrap_or_else(|| "<the release before current>".into());
            let host = h.to_string();
            let release_dir = Layout::new(&config.deploy_to).release(&target);
            let hook_env = HookEnv {
                release: &target,
                release_dir: &release_dir,
                deploy_to: &config.deploy_to,
                previous: "<current>",
                version: "<its version>",
                environment: &env.name,
                host: &host,
            };
            let log = format!("<revisions.log line: rollback release={target} result=ok>");
            for s in [
                steps::preflight(config, None, &holder, lock_wait),
                steps::switch(config, &host, &target, &holder, None),
                steps::verify(
                    config,
                    &target,
                    &steps::Started {
                        unit: "<unit started by the switch>",
                        invocation: "<invocation id from the switch>",
                        retire: "<blue-green: the instance of the old release>",
                    },
                    &hook_env,
                    Some(steps::Finish {
                        log: &log,
                        prune: &[],
                    }),
                ),
            ] {
                ui.emit(Event::Script {
                    host: h.to_string(),
                    purpose: s.purpose().into(),
                    script: s.render_redacted()?,
                });
            }
        }
        return Ok(());
    }
    if opts.confirm && !confirm_plan(config, opts, ui).await? {
        return Err(Error::Cancelled {
            what: format!("rollback of {}", env.name),
        });
    }
    // Every host locked first, one winner (the host first by name before the others, as a
    // deploy does), then each rolled back.
    let work = async {
        let hosts = fleet::select_hosts(env, &opts.hosts)?;
        let started = std::time::Instant::now();
        let conns = crate::host::connect_all(config, &hosts, ui).await?;
        // #17: right after a deploy crashed past its switch, its lock and unconfirmed switch
        // are still there: put that switch back now, on every host, as its dead-man's switch
        // would at the deadline. That is the rollback.
        if let Some(done) = recover_crashed(config, &conns, started, ui).await {
            for c in conns {
                crate::host::close(c).await;
            }
            return done;
        }
        let locked = crate::host::lock_all(config, &conns, &holder, lock_wait, ui).await;
        let locked = match locked {
            Ok(l) => {
                drop(conns);
                l
            }
            Err(e) => {
                for c in conns {
                    crate::host::close(c).await;
                }
                return Err(e);
            }
        };
        let results = fleet::bounded(locked, env.parallel, |(conn, state)| {
            let holder = &holder;
            async move {
                let config = config.for_host(conn.host());
                let r = rollback_host(config, &conn, state, opts, holder, ui)
                    .await
                    .map(|mut row| {
                        row.commands = conn.stats().commands();
                        row.bytes_sent = conn.stats().bytes();
                        row.millis = started.elapsed().as_millis() as u64;
                        row
                    });
                let host = conn.host().to_string();
                crate::host::close(conn).await;
                (host, r)
            }
        })
        .await;
        fleet::summarize("rollback", results, ui)
    };
    tokio::select! {
        r = work => r,
        _ = fleet::interrupted() => {
            ui.step(None, "Interrupted", "putting every host back as it was", Tone::Warning);
            let hosts = fleet::select_hosts(env, &opts.hosts)?;
            let n = fleet::put_back(config, &hosts, &steps::abort(config, &holder, None), ui).await;
            Err(Error::Interrupted { detail: format!(": {n} of {} host(s) checked and put back as they were", hosts.len()) })
        }
    }
}

/// Puts back, on every host, the unconfirmed switch of a deploy that is gone, and releases its
/// locks ([`recover`]). `None` when there was nothing of the kind (a plain rollback follows);
/// otherwise the rollback's result: every host on the release before that deploy.
async fn recover_crashed(
    config: &Config,
    conns: &[Arc<Connection>],
    started: std::time::Instant,
    ui: &Ui,
) -> Option<Result<()>> {
    let env = config.env().ok()?;
    let found = fleet::bounded(conns.to_vec(), env.parallel, |conn| async move {
        let r = recover::on_host(config.for_host(conn.host()), &conn, false, true).await;
        (conn, r)
    })
    .await;
    if !found.iter().any(|(_, r)| matches!(r, Ok(x) if x.acted())) {
        return None;
    }
    let results = found
        .into_iter()
        .map(|(conn, r)| {
            let host = conn.host().to_string();
            let r = r.map(|rec| {
                let detail = recover::describe(&rec);
                if let Some(d) = &detail {
                    ui.host(conn.host(), "Recovered", d.clone());
                }
                HostRow {
                    outcome: if rec.reverted {
                        "rolled back"
                    } else {
                        "unchanged"
                    }
                    .into(),
                    release: rec.current.clone(),
                    detail: detail.or_else(|| Some("nothing to put back here".into())),
                    millis: started.elapsed().as_millis() as u64,
                    ..fleet::row(&conn)
                }
            });
            (host, r)
        })
        .collect();
    Some(fleet::summarize("rollback", results, ui))
}

/// `rollback` at a workspace root: puts back the set of releases that was live together
/// before the last deploy. A workspace deploy gives every service the same release id, so the
/// last deploy is the newest release current anywhere among these services; each service
/// whose current release on a host is that one rolls back there (to the release before it);
/// services and hosts that deploy did not change are left alone. With `--to`, every service
/// goes to that release. Services roll back in the reverse of their switch order.
pub async fn rollback_workspace(configs: &[Config], opts: &RollbackOptions, ui: &Ui) -> Result<()> {
    // What is current where, read without locking.
    let mut current: Vec<Vec<(String, Option<String>)>> = Vec::new();
    for config in configs {
        let states = read_states(config, &opts.hosts, ui).await?;
        current.push(states.into_iter().map(|(h, st)| (h, st.current)).collect());
    }
    let last = current
        .iter()
        .flatten()
        .filter_map(|(_, r)| r.clone())
        .max();
    // (service, hosts to roll back there)
    let mut work: Vec<(usize, Vec<String>)> = Vec::new();
    let mut text = String::from("Rollback plan:\n");
    let mut plan_json = Vec::new();
    for (svc, hosts) in current.iter().enumerate() {
        let package = &configs[svc].package;
        let mut mine = Vec::new();
        for (host, cur) in hosts {
            let acts = match (&opts.to, cur) {
                (Some(to), Some(c)) => c != to,
                (Some(_), None) => true,
                (None, c) => c.is_some() && *c == last,
            };
            let line = match (acts, &opts.to) {
                (true, Some(to)) => format!("{} -> {to}", cur.as_deref().unwrap_or("nothing")),
                (true, None) => format!(
                    "{} -> the release before it",
                    cur.as_deref().unwrap_or("nothing")
                ),
                (false, Some(_)) => format!(
                    "{} (already current: left alone)",
                    cur.as_deref().unwrap_or("nothing deployed")
                ),
                (false, None) => format!(
                    "{} (not changed by the last deploy: left alone)",
                    cur.as_deref().unwrap_or("nothing deployed")
                ),
            };
            text.push_str(&format!("  {host} ({package}): {line}\n"));
            plan_json.push(serde_json::json!({ "host": host, "package": package, "plan": line }));
            if acts {
                mine.push(host.clone());
            }
        }
        if !mine.is_empty() {
            work.push((svc, mine));
        }
    }
    if work.is_empty() {
        return Err(Error::usage(
            "nothing to roll back: no service has a release to go back from",
            Some("run `cargo ship releases <env>` to see the releases on each host".into()),
        ));
    }
    if opts.confirm {
        ui.emit(Event::Output {
            kind: "rollback-plan".into(),
            text,
            data: serde_json::json!({ "hosts": plan_json }),
        });
        if !ui.confirm("Roll back these services?") {
            let env = configs[0].env()?;
            return Err(Error::Cancelled {
                what: format!("rollback of {}", env.name),
            });
        }
    }
    // The last service switched goes back first; one summary table for all.
    let collect = ui.collecting_summaries();
    let mut first_error = None;
    for (svc, hosts) in work.into_iter().rev() {
        let config = &configs[svc];
        let one = RollbackOptions {
            hosts,
            confirm: false,
            ..opts.clone()
        };
        if let Err(e) = rollback(config, &one, &collect.for_package(&config.package)).await {
            match first_error {
                None => first_error = Some(e),
                Some(_) => ui.warn(format!("{}: {e}", config.package)),
            }
        }
    }
    ui.emit(Event::Summary {
        operation: "rollback".into(),
        hosts: collect.take_summaries(),
    });
    first_error.map_or(Ok(()), Err)
}

/// Every selected host's release state, read without locking (for a plan shown before acting);
/// fails when any host cannot be read.
async fn read_states(
    config: &Config,
    filter: &[String],
    ui: &Ui,
) -> Result<Vec<(String, HostState)>> {
    let script = crate::status::status_script(config);
    let results = crate::host::each(config, filter, ui, |conn| {
        let script = &script;
        async move {
            let out = conn.run_ok(script).await?;
            // Only the release state is used: it lives under deploy_to, the same on every host.
            Ok(crate::status::HostStatus::parse(&out).state)
        }
    })
    .await;
    let (mut states, mut errors) = (Vec::new(), Vec::new());
    for (host, r) in results {
        match r {
            Ok(st) => states.push((host, st)),
            Err(e) if host.is_empty() => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    let total = states.len() + errors.len();
    fleet::fail_if_any("rollback", total, errors)?;
    Ok(states)
}

/// Reads every host's state (without locking), shows `host: from -> to` for each, and asks.
async fn confirm_plan(config: &Config, opts: &RollbackOptions, ui: &Ui) -> Result<bool> {
    let mut text = String::from("Rollback plan:\n");
    let mut plan = Vec::new();
    for (host, st) in read_states(config, &opts.hosts, ui).await? {
        let line = match choose_target(&st, opts.to.as_deref()) {
            Ok(t) if st.current.as_deref() == Some(t.as_str()) => {
                format!("{t} (already current, unchanged)")
            }
            Ok(t) => format!("{} -> {t}", st.current.as_deref().unwrap_or("nothing")),
            Err(problem) => format!("cannot roll back: {problem}"),
        };
        text.push_str(&format!("  {host}: {line}\n"));
        plan.push(serde_json::json!({ "host": host, "plan": line }));
    }
    ui.emit(Event::Output {
        kind: "rollback-plan".into(),
        text,
        data: serde_json::json!({ "hosts": plan }),
    });
    Ok(ui.confirm("Roll back these hosts?"))
}

/// Rolls one host back; its lock is held and `state` was read under it.
async fn rollback_host(
    config: &Config,
    conn: &Arc<Connection>,
    state: HostState,
    opts: &RollbackOptions,
    holder: &str,
    ui: &Ui,
) -> Result<HostRow> {
    let host = conn.host().to_string();
    let target = match choose_target(&state, opts.to.as_deref()) {
        Ok(t) => t,
        Err(problem) => {
            unlock_quietly(config, conn).await;
            return Err(Error::Usage {
                message: format!("{host}: cannot roll back: {problem}"),
                help: Some(
                    "run `cargo ship releases <env>` to see the releases on each host".into(),
                ),
            });
        }
    };
    let from = state.current.clone();
    if from.as_deref() == Some(target.as_str()) {
        unlock_quietly(config, conn).await;
        ui.host(
            &host,
            "Unchanged",
            format!("release {target} is already current"),
        );
        return Ok(HostRow {
            outcome: "unchanged".into(),
            release: Some(target),
            ..fleet::row(conn)
        });
    }
    ui.host(
        &host,
        "Rolling back",
        format!("{} -> {target}", from.as_deref().unwrap_or("nothing")),
    );
    let out = conn
        .run(&steps::switch(config, conn.host(), &target, holder, None))
        .await?;
    let layout = Layout::new(&config.deploy_to);
    let rel_dir = layout.release(&target);
    let env_name = config.env()?.name.clone();
    let hook_env = HookEnv {
        release: &target,
        release_dir: &rel_dir,
        deploy_to: &config.deploy_to,
        previous: from.as_deref().unwrap_or(""),
        version: "",
        environment: &env_name,
        host: &host,
    };
    let kv = parse_kv(&out.stdout);
    let version = kv.get("version").cloned().filter(|v| !v.is_empty());
    let log = |result: &str| {
        Revision {
            action: "rollback",
            release: &target,
            version: version.as_deref(),
            artifact: None,
            git: None,
            result,
        }
        .line(chrono::Utc::now(), &journal::who())
    };
    // Healthy: the same script records the rollback and unlocks (one round trip less).
    let ok_log = log("ok");
    let finish = steps::Finish {
        log: &ok_log,
        prune: &[],
    };
    let verdict =
        crate::host::judge_switch(config, conn, &target, &out, &hook_env, Some(finish), ui).await;
    match verdict {
        Ok(()) => {
            ui.host(&host, "Rolled back", format!("to release {target}"));
            Ok(HostRow {
                outcome: "rolled back".into(),
                version: version.clone(),
                release: Some(target),
                ..fleet::row(conn)
            })
        }
        Err(reason) => {
            ui.step(
                Some(&host),
                "Unhealthy",
                format!("release {target}: {reason}"),
                Tone::Error,
            );
            let log = log("unhealthy");
            let input = RevertInput {
                failed: &target,
                previous: from.as_deref(),
                ghost: None,
                reason: &reason,
                log_line: &log,
                journal_lines: 30,
                since: kv.get("switched_at").map(String::as_str),
            };
            let out = conn.run_ok(&steps::revert(config, &input)).await?;
            let (_, journal) = crate::systemd::split_journal(&out);
            Err(Error::Unhealthy {
                host,
                release: target,
                reason,
                restored: from.unwrap_or_else(|| "nothing".into()),
                journal: journal.to_string(),
            })
        }
    }
}

/// The release to roll back to: `--to` (must be a finished, not failed release) or the newest
/// good release older than `current`.
pub fn choose_target(state: &HostState, to: Option<&str>) -> std::result::Result<String, String> {
    match to {
        Some(id) => {
            if !state.releases.iter().any(|r| r == id) {
                return Err(format!(
                    "there is no release {id} (releases: {})",
                    list(&state.releases)
                ));
            }
            if state.unfinished.iter().any(|r| r == id) {
                return Err(format!("release {id} was never fully staged"));
            }
            if state.failed.iter().any(|r| r == id) {
                return Err(format!("release {id} is marked failed"));
            }
            Ok(id.to_string())
        }
        None => state.rollback_target().ok_or_else(|| match &state.current {
            None => "nothing is deployed here yet".to_string(),
            Some(c) => {
                format!("no good release older than the current one ({c}) is left on the host")
            }
        }),
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_targets() {
        let s = HostState {
            current: Some("3".into()),
            releases: vec!["1".into(), "2".into(), "3".into()],
            failed: vec!["2".into()],
            ..Default::default()
        };
        assert_eq!(choose_target(&s, None).unwrap(), "1");
        assert_eq!(
            choose_target(&s, Some("2")).unwrap_err(),
            "release 2 is marked failed"
        );
        assert_eq!(
            choose_target(&s, Some("9")).unwrap_err(),
            "there is no release 9 (releases: 1, 2, 3)"
        );
        assert_eq!(
            choose_target(&HostState::default(), None).unwrap_err(),
            "nothing is deployed here yet"
        );
    }
}
