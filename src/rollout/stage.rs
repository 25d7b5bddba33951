//! Phase 3 of a deploy: stage. Every service's release is unpacked on every host (the artifact
//! travels on the stage script's standard input when the host lacks it) before any host
//! switches; then the hooks that run once per deploy (migrations), on one host per service.
//! A failure here changes nothing that runs: the staged releases are removed and the locks
//! released.

use crate::fleet;
use crate::layout::Layout;
use crate::remote::transfer::{self, Delta, Encoding, Payload};
use crate::steps::{self, StageInput};
use crate::ui::Ui;
use crate::{Error, Result};

use super::plan::Plan;
use super::revert::abort_all;
use super::{hook_env, parallel, HostRun};

/// Stages every service on every host; when one host fails, removes every staged release and
/// releases every lock (nothing was switched).
pub(crate) async fn stage_all(plans: &[Plan<'_>], runs: &mut [HostRun]) -> Result<()> {
    let total = runs.len();
    let staged = fleet::bounded(runs.iter().collect(), parallel(plans), |run| {
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
    Ok(())
}

/// Hooks that must run once per deploy (migrations), per service: now that every host has
/// staged, before any switch; on `hooks.once_on` (default: the service's first host).
pub(crate) async fn once_hooks(plans: &[Plan<'_>], runs: &mut [HostRun]) -> Result<()> {
    let total = runs.len();
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
    Ok(())
}

/// Starts, before connecting, what the stage will likely need and takes CPU rather than the
/// network: each artifact's delta against the one deployed last from here
/// ([`transfer::Deltas::prepare_ahead`]), on threads of their own while the handshakes run.
pub(crate) fn prepare_ahead(plans: &[Plan<'_>]) {
    for plan in plans {
        let store = crate::package::store::store_dir(&plan.config.target_dir);
        for art in &plan.artifacts {
            plan.deltas.prepare_ahead(&store, art);
        }
    }
}

async fn stage_host(plan: &Plan<'_>, run: &HostRun, ui: &Ui) -> Result<()> {
    let config = plan.config.for_host(run.conn.host());
    let layout = Layout::new(&config.deploy_to);
    let (encoding, cached) =
        transfer::encoding_for(&run.cached, run.facts.has_zstd, run.facts.has_gzip);
    let art = &plan.artifacts[run.art];
    let payload = payload(plan, run.art, encoding)?;
    let host = run.conn.host().to_string();
    // A host with zstd and an earlier artifact that is also here gets a delta.
    if !cached && run.facts.has_zstd {
        let store = crate::package::store::store_dir(&plan.config.target_dir);
        let full = payload.bytes.len() as u64;
        if let Some(d) = plan.deltas.for_host(&store, art, &run.haves, full) {
            if send_delta(plan, run, &d, full, ui).await? {
                return Ok(());
            }
        }
    }
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
        delta_base: None,
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

/// Stages the release from a delta ([`transfer::Delta`]); false when the host's zstd could
/// not apply it (the whole artifact is to be sent then).
async fn send_delta(plan: &Plan<'_>, run: &HostRun, d: &Delta, full: u64, ui: &Ui) -> Result<bool> {
    let config = plan.config.for_host(run.conn.host());
    let art = &plan.artifacts[run.art];
    let host = run.conn.host().to_string();
    let prev = run.state.current.clone().unwrap_or_default();
    let rel_dir = Layout::new(&config.deploy_to).release(&plan.release);
    let input = StageInput {
        release: &plan.release,
        artifact_sha: &art.sha256,
        encoding: Encoding::Tar,
        sent_sha: &d.tar_sha256,
        receive: Some(d.tar_size),
        delta_base: Some(&d.base_file),
        manifest: &art.manifest,
        hook_env: hook_env(plan, art, &host, &rel_dir, &prev),
        fingerprint: &plan.fingerprint(&host, art),
    };
    let script = steps::stage(config, &input);
    let out = run.conn.run_with_payload(&script, &d.bytes).await?;
    match out.status {
        0 => {
            ui.host(
                &host,
                "Uploaded",
                format!(
                    "delta against {} ({} bytes, {}% of the {full}-byte artifact)",
                    &d.base_file[..12],
                    d.bytes.len(),
                    d.bytes.len() as u64 * 100 / full.max(1),
                ),
            );
            ui.host(&host, "Staged", format!("release {}", plan.release));
            Ok(true)
        }
        transfer::EXIT_DELTA => {
            ui.warn(format!(
                "{host}: {}; sending the whole artifact",
                out.tail(1)
            ));
            Ok(false)
        }
        _ => Err(run.conn.remote_error(&script, &out)),
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
