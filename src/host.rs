//! The per-host steps every flow shares, below the flows: connect, take the deploy lock and
//! read the host's state (one winner across hosts), release the lock, the warning about an
//! interrupted switch, and judging a switch (probe, settle, verify) for deploy and rollback.
//! `health` only probes and `steps` only builds scripts; neither reaches up into a flow.
//!
//! `deploy`, `rollback`, `prune`, `status`, `logs`, `exec` and `lock` are siblings above this
//! module; none of them reaches into another for these steps.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, HostSpec};
use crate::fleet;
use crate::journal::HostState;
use crate::layout::Layout;
use crate::lock;
use crate::remote::script::{parse_kv, Script, EXIT_LOCKED};
use crate::remote::session::Connection;
use crate::steps;
use crate::ui::Ui;
use crate::{Error, Result};

/// Warns when a deploy killed mid-switch left `current` on a release nobody verified.
pub fn warn_unverified_switch(host: &str, state: &HostState, ui: &Ui) {
    if let Some(prev) = &state.switching {
        ui.warn(format!(
            "{host}: an earlier deploy was killed while switching from release {} to {}, which was never verified; this run replaces it",
            if prev.is_empty() { "(none)" } else { prev },
            state.current.as_deref().unwrap_or("(none)")
        ));
    }
}

/// The typed error for a lock script that exited [`EXIT_LOCKED`].
pub fn locked_error(host: &str, stdout: &str) -> Error {
    Error::Locked {
        host: host.to_string(),
        holder: parse_kv(stdout)
            .get("holder")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
    }
}

/// Takes the lock and reads the host's state; maps a held lock to [`Error::Locked`].
pub async fn lock_and_read(
    config: &Config,
    conn: &Connection,
    holder: &str,
    wait: Duration,
    ui: &Ui,
) -> Result<HostState> {
    let script = steps::preflight(config, None, holder, wait);
    let out = conn.run(&script).await?;
    match out.status {
        0 => {
            let state = HostState::parse(&out.stdout);
            warn_unverified_switch(conn.host(), &state, ui);
            Ok(state)
        }
        EXIT_LOCKED => Err(locked_error(conn.host(), &out.stdout)),
        crate::preflight::EXIT_PREFLIGHT => Err(Error::Preflight {
            host: conn.host().to_string(),
            problem: crate::preflight::Facts::parse(&out.stdout)
                .problems
                .join("; "),
            help: Some("nothing was changed on this host".into()),
        }),
        _ => Err(conn.remote_error(&script, &out)),
    }
}

/// Releases the lock (used when a flow stops early on a host).
pub async fn unlock_quietly(config: &Config, conn: &Connection) {
    let mut s = Script::new("release the deploy lock");
    lock::release(&mut s, &Layout::new(&config.deploy_to));
    let _ = conn.run(&s).await;
}

/// Closes a connection once nobody else holds it.
pub async fn close(conn: Arc<Connection>) {
    if let Ok(c) = Arc::try_unwrap(conn) {
        c.close().await;
    }
}

/// Connects to every host of `hosts` (at most `parallel` at once), in the given order. On any
/// failure the opened connections are closed and every error is returned.
pub async fn connect_all(
    config: &Config,
    hosts: &[HostSpec],
    ui: &Ui,
) -> Result<Vec<Arc<Connection>>> {
    let env = config.env()?;
    let opened = fleet::bounded(hosts.to_vec(), env.at_once(), |spec| async move {
        Connection::open(&spec, env, ui).await.map(Arc::new)
    })
    .await;
    let (mut conns, mut errors) = (Vec::new(), Vec::new());
    for r in opened {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        return Ok(conns);
    }
    for c in conns {
        close(c).await;
    }
    fleet::fail_if_any("connect", hosts.len(), errors).map(|_| Vec::new())
}

/// The one-winner rule of every flow that locks several hosts: the lock of the host that comes
/// first by name is taken first, and only then the others in parallel. Two flows started
/// together both go for that host first, so exactly one proceeds; the other is refused there
/// (or waits `wait`) before it holds any other lock. When any host refuses, the locks taken
/// are released again and every error is returned. On success, each connection with the state
/// read under the lock, in `conns`' order.
pub async fn lock_all(
    config: &Config,
    conns: &[Arc<Connection>],
    holder: &str,
    wait: Duration,
    ui: &Ui,
) -> Result<Vec<(Arc<Connection>, HostState)>> {
    let env = config.env()?;
    let mut order: Vec<Arc<Connection>> = conns.to_vec();
    order.sort_by(|a, b| a.host().cmp(b.host()));
    let mut rest = order.into_iter();
    let mut results: Vec<(Arc<Connection>, Result<HostState>)> = Vec::new();
    if let Some(first) = rest.next() {
        let r = lock_and_read(config, &first, holder, wait, ui).await;
        let refused = r.is_err();
        results.push((first, r));
        if refused {
            // Nothing is locked anywhere: the others are not even asked.
            let errors = results.into_iter().filter_map(|(_, r)| r.err()).collect();
            return fleet::fail_if_any("lock", conns.len(), errors).map(|_| Vec::new());
        }
    }
    let others = fleet::bounded(rest.collect(), env.at_once(), |conn| async move {
        let r = lock_and_read(config, &conn, holder, wait, ui).await;
        (conn, r)
    })
    .await;
    results.extend(others);
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    for (conn, r) in results {
        match r {
            Ok(state) => ok.push((conn, state)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        ok.sort_by_key(|(c, _)| {
            conns
                .iter()
                .position(|o| o.host() == c.host())
                .unwrap_or(usize::MAX)
        });
        return Ok(ok);
    }
    fleet::bounded(ok, env.at_once(), |(conn, _)| async move {
        unlock_quietly(config, &conn).await;
    })
    .await;
    fleet::fail_if_any("lock", conns.len(), errors).map(|_| Vec::new())
}

/// Like [`fleet::on_each_host`], for flows whose per-host result is not a summary row
/// (`status`, `exec`): connects to each selected host (at most `parallel` at once), runs `f`,
/// closes the connection; results in configured order. An empty host name carries an error
/// about the selection itself.
pub async fn each<T, F, Fut>(
    config: &Config,
    filter: &[String],
    ui: &Ui,
    f: F,
) -> Vec<(String, Result<T>)>
where
    F: Fn(Arc<Connection>) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let env = match config.env() {
        Ok(e) => e,
        Err(e) => return vec![(String::new(), Err(e))],
    };
    let hosts = match fleet::select_hosts(env, filter) {
        Ok(h) => h,
        Err(e) => return vec![(String::new(), Err(e))],
    };
    let f = &f;
    fleet::bounded(hosts, env.at_once(), |spec| async move {
        let name = spec.to_string();
        let conn = match Connection::open(&spec, env, ui).await {
            Ok(c) => Arc::new(c),
            Err(e) => return (name, Err(e)),
        };
        let result = f(conn.clone()).await;
        close(conn).await;
        (name, result)
    })
    .await
}

/// Judges a release after [`crate::steps::switch`] ran: a failed switch script means the unit
/// never became active with a new process; otherwise [`verify_release`] decides (and, with
/// `finish`, records the release and unlocks in the same script).
pub async fn judge_switch(
    config: &crate::config::Config,
    conn: &Connection,
    release: &str,
    switch: &crate::remote::session::Output,
    hook_env: &crate::hooks::HookEnv<'_>,
    finish: Option<crate::steps::Finish<'_>>,
    ui: &crate::ui::Ui,
) -> std::result::Result<(), String> {
    let kv = crate::remote::script::parse_kv(&switch.stdout);
    if switch.status == crate::remote::script::EXIT_UNSTABLE && kv.contains_key("new_unit") {
        // The switch verified too (`steps::switch_verified`), and that check failed: said as
        // the verify script says it.
        return Err(switch.tail(3).replace('\n', " "));
    }
    if switch.status != 0 {
        return Err(format!(
            "the service did not start: {}",
            switch.tail(3).replace('\n', " ")
        ));
    }
    let get = |k: &str| kv.get(k).map(String::as_str).unwrap_or_default();
    let started = crate::steps::Started {
        unit: get("new_unit"),
        invocation: get("new_invocation"),
        retire: get("retire"),
    };
    // The switch script probed `health.http` on the host already (it has bash).
    if let Some(why) = kv.get("probe_failed") {
        return Err(why.clone());
    }
    let probed = kv.get("probed").and_then(|c| c.parse().ok());
    verify_release(
        config,
        conn,
        release,
        &started,
        hook_env,
        finish,
        probed,
        kv.contains_key("verified"),
        ui,
    )
    .await
}

/// After a switch: the HTTP check (if configured, and not `probed` by the switch script on the
/// host already) within `timeout`, answered by the process the switch started, then the settle period in which that process must stay active, then the
/// old blue-green instance is retired and the after_switch hooks run. Returns why the release
/// is not healthy. `verified`: the switch script did all that already (and `finish`, if any),
/// so only the probe's result is reported.
#[allow(clippy::too_many_arguments)]
pub async fn verify_release(
    config: &crate::config::Config,
    conn: &Connection,
    release: &str,
    started_unit: &crate::steps::Started<'_>,
    hook_env: &crate::hooks::HookEnv<'_>,
    finish: Option<crate::steps::Finish<'_>>,
    probed: Option<u16>,
    verified: bool,
    ui: &crate::ui::Ui,
) -> std::result::Result<(), String> {
    let started = std::time::Instant::now();
    if let Some(target) = crate::health::http_target(config).map_err(|e| e.to_string())? {
        let (code, where_) = match probed {
            Some(code) => (code, "on the host"),
            None => (
                crate::health::wait_http_from(
                    conn,
                    &target,
                    config.health.timeout,
                    Some(started_unit.invocation).filter(|i| !i.is_empty()),
                )
                .await?,
                "through the ssh connection",
            ),
        };
        ui.step(
            Some(conn.host()),
            "Probed",
            format!(
                "{} answered {code} {where_} after {:.1}s",
                target.path,
                started.elapsed().as_secs_f64()
            ),
            crate::ui::Tone::Detail,
        );
    }
    if verified {
        return Ok(());
    }
    let script = crate::steps::verify(config, release, started_unit, hook_env, finish);
    let out = conn.run(&script).await.map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(out.tail(3).replace('\n', " "));
    }
    Ok(())
}
