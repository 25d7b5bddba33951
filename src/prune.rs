//! `cargo ship prune [env] [--keep N]`: remove old releases on each host of the environment
//! (never `current`, never the release a rollback would go to, never one being staged) and old
//! artifacts in the local store; without an environment, only the local store.

use crate::config::{Config, Environment};
use crate::fleet;
use crate::host::lock_and_read;
use crate::layout::Layout;
use crate::lock;
use crate::package::store;
use crate::remote::script::Script;
use crate::ui::{Event, HostRow, Ui};
use crate::Result;

/// Options of `cargo ship prune`.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Releases to keep per host (default: `keep_releases`).
    pub keep: Option<usize>,
    /// Show what would go; change nothing.
    pub dry_run: bool,
    /// Only these hosts.
    pub hosts: Vec<String>,
}

/// Prunes every selected host, then the local artifact store.
/// Prunes every selected host of the environment (if one was given), then the local store.
pub async fn prune(config: &Config, opts: &PruneOptions, ui: &Ui) -> Result<()> {
    let keep = opts.keep.unwrap_or(config.keep_releases).max(1);
    let hosts_result = match &config.environment {
        Some(env) => prune_hosts(config, env, keep, opts, ui).await,
        None => Ok(()),
    };
    if !opts.dry_run {
        let dir = store::store_dir(&config.target_dir);
        if dir.is_dir() {
            let removed = store::prune(&dir, &config.bin, keep)?;
            ui.status(
                "Pruned",
                format!("{} old artifact(s) from {}", removed.len(), dir.display()),
            );
        }
    }
    hosts_result
}

async fn prune_hosts(
    config: &Config,
    env: &Environment,
    keep: usize,
    opts: &PruneOptions,
    ui: &Ui,
) -> Result<()> {
    let holder = lock::holder(&format!("cargo ship prune {}", env.name));
    let layout = Layout::new(&config.deploy_to);
    let results = fleet::on_each_host(config, &opts.hosts, ui, |conn| {
        let (holder, layout) = (holder.clone(), layout.clone());
        async move {
            let state =
                lock_and_read(config, &conn, &holder, std::time::Duration::ZERO, ui).await?;
            let doomed = state.prune_candidates(keep);
            let mut s = Script::new(format!(
                "remove {} old release(s) in {}",
                doomed.len(),
                layout.root()
            ));
            if opts.dry_run {
                ui.emit(Event::Script {
                    host: conn.host().into(),
                    purpose: s.purpose().into(),
                    script: doomed.join("\n"),
                });
                lock::release(&mut s, &layout);
            } else {
                crate::steps::prune_lines(&mut s, &layout, &doomed, keep);
                lock::release(&mut s, &layout);
            }
            let out = conn.run_ok(&s).await?;
            let removed = out.lines().filter(|l| l.starts_with("pruned=")).count();
            let detail = if opts.dry_run {
                format!(
                    "would remove {}",
                    if doomed.is_empty() {
                        "nothing".into()
                    } else {
                        doomed.join(", ")
                    }
                )
            } else {
                format!(
                    "removed {removed} release(s), kept {}",
                    state.releases.len() - removed
                )
            };
            ui.host(conn.host(), "Pruned", detail.clone());
            Ok(HostRow {
                outcome: "pruned".into(),
                release: state.current.clone(),
                detail: Some(detail),
                ..fleet::row(&conn)
            })
        }
    })
    .await;
    fleet::summarize("prune", results, ui)
}
