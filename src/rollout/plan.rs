//! Phase 0 of a deploy: the plan. Everything decided about each service before the first host
//! is touched (its hosts, secrets and artifacts, the release id and the lock holder), the
//! `--dry-run` that prints it, and, once the hosts' state is read, the services already in
//! place that a workspace deploy leaves alone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Budget, Config, Environment, HostSpec, Unreachable};
use crate::fingerprint;
use crate::fleet;
use crate::journal::{self, Revision};
use crate::layout::{self, Layout};
use crate::lock;
use crate::package::{self, Artifact};
use crate::preflight::Requirements;
use crate::remote::script::{parse_kv, Script};
use crate::remote::transfer::{Encoding, Payload};
use crate::secrets::{self, Secrets};
use crate::steps::{self, StageInput};
use crate::systemd;
use crate::target::Target;
use crate::ui::{Event, Ui};
use crate::{Error, Result};

use super::{hook_env, parallel, sort_for_rollout, Deferred, DeployOptions, HostRun};

/// Everything decided about one service before the first host is touched. A deploy of one
/// package has one plan; a workspace deploy one per service, in switch order, sharing the
/// release id (which names the deploy on every host) and the lock holder.
pub(crate) struct Plan<'a> {
    pub(crate) config: &'a Config,
    /// The hosts of this service (its environment's, narrowed by `--host`).
    pub(crate) hosts: Vec<HostSpec>,
    /// One artifact per configured target (`targets = [...]`), or the one given/built.
    pub(crate) artifacts: Vec<Artifact>,
    pub(crate) release: String,
    pub(crate) holder: String,
    pub(crate) lock_wait: Duration,
    /// What each artifact needs from a host, in the order of `artifacts`.
    pub(crate) requirements: Vec<Requirements>,
    pub(crate) env_name: String,
    /// Payloads prepared so far, by artifact index and encoding.
    pub(crate) payloads: Mutex<HashMap<(usize, &'static str), Payload>>,
    /// Deltas prepared so far (hosts that have an earlier artifact).
    pub(crate) deltas: crate::remote::transfer::Deltas,
    pub(crate) secrets: Secrets,
    /// Reports about this service (tagged with its package in a workspace deploy).
    pub(crate) ui: Ui,
    /// The package name, in a workspace deploy (summary rows name it).
    pub(crate) package: Option<String>,
}

impl Plan<'_> {
    /// The revisions.log line for this deploy's release of `art` on a host.
    pub(crate) fn revision(&self, art: &Artifact, action: &str, result: &str) -> String {
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
    pub(crate) fn fingerprint(&self, host: &str, art: &Artifact) -> String {
        fingerprint::of(self.config.for_host(host), &art.manifest, &self.secrets)
    }
}

/// Decides every service's plan: its hosts (narrowed by `--host`), its secrets, its artifacts
/// (built here, services that compile alike in one builder run), one release id and one lock
/// holder for the whole deploy. Refuses two services that would share a directory or a unit.
pub(crate) fn plans<'a>(
    configs: &'a [Config],
    opts: &DeployOptions,
    ui: &Ui,
) -> Result<Vec<Plan<'a>>> {
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
            // Issue #16 added nested deploy_to, a unit that is another's guard and a shared
            // sudoers file to the same deploy_to or unit.
            if let Some(what) = crate::config::collision(a, b) {
                return Err(Error::usage(
                    format!(
                        "packages `{}` and `{}` both run on {shared} with {what}",
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
    // The deploy agent is locked while build scripts run (issue #16).
    let agent = crate::remote::agent::lock_for_build()?;
    let built = obtain_artifacts(&configs, opts, ui, &uis);
    if let Some(a) = agent {
        a.unlock()?;
    }
    let mut built = built?.into_iter();
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
            deltas: Default::default(),
            ui: pui,
            package: several.then(|| config.package.clone()),
        });
    }
    Ok(plans)
}

/// The first line of a deploy: what goes where, as which release.
pub(crate) fn announce(plans: &[Plan<'_>]) {
    for plan in plans {
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
                plan.env_name,
                plan.hosts.len(),
                if plan.hosts.len() == 1 { "" } else { "s" },
                plan.release
            ),
        );
    }
}

/// Every host of the deploy once (a host shared by several services is one connection), with
/// the environment it is reached through (the first service's that lists it).
pub(crate) fn distinct_hosts<'a>(plans: &'a [Plan<'a>]) -> Vec<(HostSpec, &'a Environment)> {
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

/// Whether a deploy of one package also leaves alone the hosts already running this artifact
/// (as a workspace deploy always does): when the environment lets a deploy end with some hosts
/// left behind (`max_fail` above 0, or `unreachable = "defer"`), running the same deploy again
/// converges only the hosts not yet on the release. `--force` deploys to every host.
pub(crate) fn converges(plans: &[Plan<'_>]) -> bool {
    plans.iter().all(|p| {
        p.config.env().is_ok_and(|e| {
            !p.requirements.iter().any(|r| r.force)
                && (e.unreachable == Unreachable::Defer || e.max_fail != Budget::Count(0))
        })
    })
}

/// After a rollout within `max_fail`: `Ok` when every host is on the release, else the
/// partial result naming the hosts that failed (and were put back) or were deferred.
/// `unchanged`: the hosts left alone, already running this artifact.
pub(crate) fn partial(
    plans: &[Plan<'_>],
    runs: &[HostRun],
    unchanged: usize,
    deferred: &[Deferred],
) -> Result<()> {
    let failed: Vec<(String, String)> = runs
        .iter()
        .filter_map(|r| match &r.outcome {
            Some((o, d)) if o != "deployed" && o != "unchanged" => Some((
                name(plans, r.svc, r.conn.host()),
                d.clone().unwrap_or_else(|| o.clone()),
            )),
            _ => None,
        })
        .collect();
    if failed.is_empty() && deferred.is_empty() {
        return Ok(());
    }
    let deployed = runs
        .iter()
        .filter(|r| r.outcome.as_ref().is_some_and(|o| o.0 == "deployed"))
        .count();
    Err(Error::Partial {
        release: plans[0].release.clone(),
        deployed: deployed + unchanged,
        total: runs.len() + unchanged + deferred.len(),
        failed,
        deferred: deferred
            .iter()
            .map(|d| (name(plans, d.svc, &d.host), d.reason.clone()))
            .collect(),
    })
}

/// A service host as messages name it: `web1`, or `web1 (api)` in a workspace deploy.
fn name(plans: &[Plan<'_>], svc: usize, host: &str) -> String {
    match &plans[svc].package {
        Some(p) => format!("{host} ({p})"),
        None => host.to_string(),
    }
}

/// A workspace deploy leaves a service alone on a host where its current release already runs
/// this artifact with these units and secrets, and its unit is active: its lock is released
/// and it is not restarted. (A service that is down is deployed again, which restarts it.)
pub(crate) async fn leave_unchanged_alone(
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

/// `--dry-run`: every script and transfer a deploy would run on each host, touching nothing.
pub(crate) fn dry_run(plan: &Plan<'_>, hosts: &[HostSpec], ui: &Ui) -> Result<()> {
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
        delta_base: None,
        manifest: &art.manifest,
        hook_env: hook_env(plan, art, "<host>", &release_dir, "<previous>"),
        fingerprint: &plan.fingerprint("<host>", art),
    };
    let finish_log = plan.revision(art, "deploy", "ok");
    let mut scripts = vec![
        steps::preflight(
            plan.config,
            Some(&plan.requirements),
            &plan.holder,
            plan.lock_wait,
        ),
        steps::stage(plan.config, &stage_in),
    ];
    // As a host of a fleet runs them (a deploy to one host also finishes in its last script).
    scripts.push(steps::switch_verified(
        plan.config,
        "<host>",
        &plan.release,
        &plan.holder,
        Some(&plan.secrets),
        None,
    ));
    if !steps::verifies_in_switch(plan.config) {
        scripts.push(steps::verify(
            plan.config,
            &plan.release,
            &steps::Started {
                unit: "<unit started by the switch>",
                invocation: "<invocation id from the switch>",
                retire: "<blue-green: the instance of the old release>",
            },
            &stage_in.hook_env,
            None,
        ));
    }
    scripts.push(steps::finish(
        plan.config,
        &plan.release,
        &finish_log,
        &["<releases beyond keep_releases>".to_string()][..0],
    ));
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
