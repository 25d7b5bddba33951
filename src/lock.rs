//! The per-host deploy lock: `mkdir <deploy_to>/.ship/lock` is the atomic test-and-set, and
//! `lock/holder` says who holds it (user@machine, pid, time, command). A lock is released by
//! the last script of every flow, on error and on Ctrl-C too; `cargo ship unlock` clears one
//! whose holder is gone.

use crate::config::Config;
use crate::fleet;
use crate::journal;
use crate::layout::Layout;
use crate::remote::script::{Script, EXIT_LOCKED};
use crate::ui::{HostRow, Ui};
use crate::Result;

/// The holder text written into the lock: `alice@laptop pid 4242 since 2026-11-23T09:00:00Z: cargo ship deploy prod`.
pub fn holder(command: &str) -> String {
    format!(
        "{} pid {} since {}: {}",
        journal::who(),
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        command
    )
}

/// Lines that take the lock, waiting up to `wait_secs` for it. When it stays held the script
/// prints `holder=<text>` and exits [`EXIT_LOCKED`]. Once taken, a trap releases it if the
/// rest of the script fails; [`keep`] must end a script that succeeds and wants to keep it.
pub fn take(script: &mut Script, layout: &Layout, holder: &str, wait_secs: u64) {
    let lock = layout.lock();
    let file = layout.lock_holder();
    script.line("mkdir -p {}", &[&layout.state()]);
    script.lines("_w=0");
    script.line("while ! mkdir {} 2>/dev/null; do", &[&lock]);
    script.line("  if [ \"$_w\" -ge {} ]; then", &[&wait_secs.to_string()]);
    script.line("    printf 'holder=%s\\n' \"$(cat {} 2>/dev/null || echo 'unknown (the lock has no holder file)')\"", &[&file]);
    script.line("    exit {}", &[&EXIT_LOCKED.to_string()]);
    script.lines("  fi; _w=$((_w + 1)); sleep 1");
    script.lines("done");
    script.line("trap 'rm -rf -- {}' EXIT", &[&lock]);
    script.line("printf '%s\\n' {} > {}", &[holder, &file]);
}

/// Ends a script that took the lock and keeps it (cancels the release-on-failure trap).
pub fn keep(script: &mut Script) {
    script.lines("trap - EXIT");
}

/// Lines that release the lock.
pub fn release(script: &mut Script, layout: &Layout) {
    script.line("rm -rf -- {}", &[&layout.lock()]);
}

/// `cargo ship unlock <env>`: removes the lock on each host, saying whose it was, and warns
/// when an interrupted deploy left a switch unverified.
pub async fn unlock(config: &Config, hosts: &[String], ui: &Ui) -> Result<()> {
    let layout = Layout::new(&config.deploy_to);
    let rows = fleet::on_each_host(config, hosts, ui, |conn| {
        let layout = layout.clone();
        async move {
            let mut s = Script::new(format!("remove the deploy lock in {}", layout.root()));
            s.line("if [ -d {} ]; then printf 'holder=%s\\n' \"$(cat {} 2>/dev/null || echo unknown)\"; fi", &[&layout.lock(), &layout.lock_holder()]);
            s.line("if [ -f {} ]; then printf 'switching=%s\\n' \"$(cat {})\"; fi", &[&journal::switching(&layout), &journal::switching(&layout)]);
            release(&mut s, &layout);
            let out = conn.run_ok(&s).await?;
            let kv = crate::remote::script::parse_kv(&out);
            let detail = match kv.get("holder") {
                Some(h) => format!("removed the lock of {h}"),
                None => "was not locked".to_string(),
            };
            if let Some(prev) = kv.get("switching") {
                ui.warn(format!(
                    "{}: an interrupted deploy switched `current` without verifying it (previous release: {}); run `cargo ship status` and `cargo ship rollback` if the service is not healthy",
                    conn.host(),
                    if prev.is_empty() { "none" } else { prev }
                ));
            }
            ui.host(conn.host(), "Unlocked", detail.clone());
            Ok(HostRow { outcome: "unlocked".into(), detail: Some(detail), ..fleet::row(&conn) })
        }
    })
    .await;
    fleet::summarize("unlock", rows, ui)
}

/// Options of `cargo ship lock`.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Why (`-m`): shown to whoever tries to deploy, and by `status`.
    pub reason: String,
    /// Wait this long for a lock someone else holds.
    pub lock_wait: Option<std::time::Duration>,
    /// Only these hosts.
    pub hosts: Vec<String>,
}

/// The holder text of a lock taken on purpose: `alice@laptop since <time>: cargo ship lock
/// prod: <reason>` (no pid: the lock outlives the command).
pub fn held_holder(env: &str, reason: &str) -> String {
    format!(
        "{} since {}: cargo ship lock {env}: {}",
        journal::who(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        reason.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// `cargo ship lock <env> -m <reason>`: takes the deploy lock on every host and keeps it, with
/// the same one-winner rule as deploys (the first host by name first). Deploys, rollbacks and
/// prunes are then refused (exit 7) with the holder and the reason until `cargo ship unlock`.
pub async fn lock(config: &Config, opts: &LockOptions, ui: &Ui) -> Result<()> {
    let env = config.env()?;
    if opts.reason.trim().is_empty() {
        return Err(crate::Error::usage(
            "`cargo ship lock` needs a reason: `-m \"<why nobody may deploy>\"`",
            Some(
                "the reason is shown to whoever tries to deploy, and by `cargo ship status`".into(),
            ),
        ));
    }
    let hosts = fleet::select_hosts(env, &opts.hosts)?;
    let holder = held_holder(&env.name, &opts.reason);
    let conns = crate::host::connect_all(config, &hosts, ui).await?;
    let locked = crate::host::lock_all(
        config,
        &conns,
        &holder,
        opts.lock_wait.unwrap_or_default(),
        ui,
    )
    .await;
    let result = match locked {
        Ok(states) => {
            let rows = states
                .iter()
                .map(|(conn, state)| {
                    ui.host(conn.host(), "Locked", opts.reason.trim());
                    HostRow {
                        outcome: "locked".into(),
                        release: state.current.clone(),
                        version: state.current_version.clone(),
                        detail: Some(holder.clone()),
                        ..fleet::row(conn)
                    }
                })
                .collect();
            ui.emit(crate::ui::Event::Summary {
                operation: "lock".into(),
                hosts: rows,
            });
            Ok(())
        }
        Err(e) => Err(e),
    };
    for c in conns {
        crate::host::close(c).await;
    }
    result
}
