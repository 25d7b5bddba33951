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
            let state = if opts.dry_run {
                read_only_state(&conn, &layout, ui).await?
            } else {
                lock_and_read(config, &conn, &holder, std::time::Duration::ZERO, ui).await?
            };
            let doomed = state.prune_candidates(keep);
            let mut s = Script::new(format!(
                "remove {} old release(s) in {}",
                doomed.len(),
                layout.root()
            ));
            crate::steps::prune_lines(&mut s, &layout, &doomed, keep);
            lock::release(&mut s, &layout);
            if opts.dry_run {
                // The script a real prune would run; nothing runs on the host.
                ui.emit(Event::Script {
                    host: conn.host().into(),
                    purpose: s.purpose().into(),
                    script: s.render_redacted()?,
                });
            }
            let removed = if opts.dry_run {
                0
            } else {
                let out = conn.run_ok(&s).await?;
                out.lines().filter(|l| l.starts_with("pruned=")).count()
            };
            let detail = if opts.dry_run {
                dry_run_detail(&doomed, &state)
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

/// `--dry-run`: reads the releases, marks and lock holder without taking the lock or changing
/// anything (a real prune's first script creates directories, clears unfinished releases and
/// the switch record: none of that may happen in a dry run).
async fn read_only_state(
    conn: &crate::remote::session::Connection,
    layout: &Layout,
    ui: &Ui,
) -> Result<crate::journal::HostState> {
    let mut s = Script::new(format!("read the releases in {}", layout.root()));
    crate::journal::state_lines(&mut s, layout);
    s.line(
        "if [ -f {} ]; then printf 'lock=%s\\n' \"$(cat {})\"; fi",
        &[&layout.lock_holder(), &layout.lock_holder()],
    );
    let out = conn.run_ok(&s).await?;
    let state = crate::journal::HostState::parse(&out);
    crate::host::warn_unverified_switch(conn.host(), &state, ui);
    Ok(state)
}

/// What a dry run reports for one host.
fn dry_run_detail(doomed: &[String], state: &crate::journal::HostState) -> String {
    let mut d = format!(
        "would remove {}",
        if doomed.is_empty() {
            "nothing".into()
        } else {
            doomed.join(", ")
        }
    );
    if !state.unfinished.is_empty() {
        d.push_str(&format!(
            " (and unfinished release(s) {} left by an interrupted deploy)",
            state.unfinished.join(", ")
        ));
    }
    if let Some(h) = &state.lock_holder {
        d.push_str(&format!("; the deploy lock is held by {h}"));
    }
    d
}
