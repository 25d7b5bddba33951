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
    script.line(
        "[ -d {} ] || mkdir -p -- {}",
        &[&layout.state(), &layout.state()],
    );
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

/// The lease of a lock holder that is still running: a remote process started right after the
/// lock was taken ([`crate::remote::session::Connection::hold`]) holds `flock .ship/lease`
/// while its ssh channel is open, and marks the lock (`lock/leased`) once it does. The channel
/// closes when the holder's process ends in any way (exit, Ctrl-C, SIGKILL, a crashed CI
/// runner; its control master closes the sessions of a client that is gone), and the flock
/// goes with it. So on any machine: a lock marked `leased` whose lease nobody holds has a
/// holder that is gone, while a deploy still running elsewhere (or frozen: its connection
/// stays open) keeps its lease and is never taken over.
///
/// Prints `leased=1` once held (then waits for its input to end), `leased=0` when the lock is
/// not `holder`'s any more or the lease stayed busy. The deploy does not wait for it (it runs
/// beside the stage, long before the switch); a lock it never marked is simply not taken over
/// (`unlock` then does it).
pub fn lease(layout: &Layout, holder: &str) -> Script {
    let mut s = Script::new(format!(
        "hold the lease of the deploy lock in {}",
        layout.root()
    ));
    s.line("exec 8>>{}", &[&layout.lease()]);
    s.lines("if ! flock -w 10 8; then echo leased=0; exit 0; fi");
    s.line(
        "_h=; [ ! -f {} ] || IFS= read -r _h < {} || true",
        &[&layout.lock_holder(), &layout.lock_holder()],
    );
    s.line(
        "if [ \"$_h\" != {} ]; then echo leased=0; exit 0; fi",
        &[holder],
    );
    s.line(": > {}", &[&layout.lock_leased()]);
    s.lines("echo leased=1");
    s.lines("exec cat > /dev/null");
    s
}

/// Lines that set `$_gone=1` when the holder of this host's lock and unconfirmed switch is
/// gone, and keep the lease (fd 7) for the rest of the script so no holder comes back in
/// between: nobody holds the lease, and either the lock is marked `leased` (its holder took
/// the lease, and let it go by ending), or there is no lock (someone removed it), or
/// `operator_says_gone` (`cargo ship unlock`: the operator says the holder is gone, and only a
/// held lease proves otherwise). Also prints `alive=1` when the lease is held.
pub fn gone(s: &mut Script, layout: &Layout, operator_says_gone: bool) {
    s.line("mkdir -p {}", &[&layout.state()]);
    s.line("_gone=0; exec 7>>{}", &[&layout.lease()]);
    s.lines("if flock -n 7; then");
    if operator_says_gone {
        s.lines("  _gone=1");
    } else {
        s.line(
            "  if [ -f {} ] || ! [ -d {} ]; then _gone=1; fi",
            &[&layout.lock_leased(), &layout.lock()],
        );
    }
    s.lines("else echo alive=1; fi");
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
            // #17: an unconfirmed switch of a deploy that is gone is put back first (now, as
            // its dead-man's switch would at the deadline); a holder still running is left be.
            let rec = crate::recover::on_host(config.for_host(conn.host()), &conn, true, false).await?;
            if rec.alive {
                if let Some(holder) = rec.holder.clone() {
                    return Err(crate::Error::HolderRunning { host: conn.host().to_string(), holder });
                }
            }
            let recovered = crate::recover::describe(&rec);
            let mut s = Script::new(format!("remove the deploy lock in {}", layout.root()));
            s.line("if [ -d {} ]; then printf 'holder=%s\\n' \"$(cat {} 2>/dev/null || echo unknown)\"; fi", &[&layout.lock(), &layout.lock_holder()]);
            s.line("if [ -f {} ]; then printf 'switching=%s\\n' \"$(cat {})\"; fi", &[&journal::switching(&layout), &journal::switching(&layout)]);
            release(&mut s, &layout);
            let out = conn.run_ok(&s).await?;
            let kv = crate::remote::script::parse_kv(&out);
            // The holder seen before the recovery: its revert may have released the lock.
            let mut detail = match rec.holder.as_ref().or(kv.get("holder")) {
                Some(h) => format!("removed the lock of {h}"),
                None => "was not locked".to_string(),
            };
            if let Some(r) = &recovered {
                detail = format!("{detail}; {r}");
            } else if let (Some((rel, _)), true) = (&rec.pending, rec.alive) {
                detail = format!("{detail}; left the unconfirmed switch to {rel} alone: its deploy is still running");
            }
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
